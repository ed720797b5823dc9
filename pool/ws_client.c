/* ws_client.c: a WebSocket client over a unix socket (ws_client.h). */
#include "ws_client.h"

#include <errno.h>
#include <gio/gio.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define WS_GUID        "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_HEADERS_MAX (16 * 1024) /* an upgrade answer longer than this is not wispd's */
#define WS_READ_SIZE   (128 * 1024)
#define WS_MAX_PAYLOAD (1 << 20)
#define WS_CONTROL_MAX 125

/* ---- frames ---------------------------------------------------------------------------------- */

gssize ws_frame_parse(uint8_t *buf, size_t len, size_t max_payload, struct ws_frame *f,
                      const char **why)
{
    if (len < 2)
        return 0;
    uint8_t op = buf[0] & 0x0f;
    bool masked = buf[1] & 0x80;
    uint64_t plen = buf[1] & 0x7f;
    size_t head = 2;

    if (buf[0] & 0x70) {
        *why = "reserved bits set (no extension was agreed)";
        return -1;
    }
    if (op != WS_OP_CONTINUATION && op != WS_OP_TEXT && op != WS_OP_BINARY && op != WS_OP_CLOSE &&
        op != WS_OP_PING && op != WS_OP_PONG) {
        *why = "unknown opcode";
        return -1;
    }
    if (plen == 126) {
        if (len < 4)
            return 0;
        plen = (uint64_t)buf[2] << 8 | buf[3];
        head = 4;
    } else if (plen == 127) {
        if (len < 10)
            return 0;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | buf[2 + i];
        head = 10;
    }
    if (op >= WS_OP_CLOSE && (!(buf[0] & 0x80) || plen > WS_CONTROL_MAX)) {
        *why = "a control frame must be final and at most 125 bytes";
        return -1;
    }
    if (plen > max_payload) {
        *why = "a frame larger than the largest message taken";
        return -1;
    }
    size_t mask_at = head;
    if (masked)
        head += 4;
    if (len < head || len - head < plen)
        return 0;
    f->fin = buf[0] & 0x80;
    f->opcode = op;
    f->payload = buf + head;
    f->len = (size_t)plen;
    if (masked)
        for (size_t i = 0; i < f->len; i++)
            f->payload[i] ^= buf[mask_at + (i & 3)];
    return (gssize)(head + plen);
}

void ws_frame_encode(GByteArray *out, uint8_t opcode, const void *payload, size_t len,
                     const uint8_t mask[4])
{
    uint8_t head[14];
    size_t n = 0;

    head[n++] = 0x80 | (opcode & 0x0f);
    if (len < 126) {
        head[n++] = 0x80 | (uint8_t)len;
    } else if (len <= 0xffff) {
        head[n++] = 0x80 | 126;
        head[n++] = (uint8_t)(len >> 8);
        head[n++] = (uint8_t)len;
    } else {
        head[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            head[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(head + n, mask, 4);
    n += 4;
    g_byte_array_append(out, head, (guint)n);
    guint at = out->len;
    g_byte_array_set_size(out, at + (guint)len);
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++)
        out->data[at + i] = p[i] ^ mask[i & 3];
}

char *ws_accept_key(const char *key)
{
    g_autoptr(GChecksum) sha = g_checksum_new(G_CHECKSUM_SHA1);
    guint8 digest[20];
    gsize dlen = sizeof digest;

    g_checksum_update(sha, (const guchar *)key, -1);
    g_checksum_update(sha, (const guchar *)WS_GUID, -1);
    g_checksum_get_digest(sha, digest, &dlen);
    return g_base64_encode(digest, dlen);
}

/* ---- the connection ------------------------------------------------------------------------ */

enum ws_state { WS_HANDSHAKE, WS_OPEN, WS_DONE };

struct ws_client {
    int fd;
    enum ws_state state;
    bool close_sent;
    char *key;           /* Sec-WebSocket-Key sent */
    GByteArray *in;      /* bytes read and not handled yet */
    GByteArray *message; /* a fragmented message being put together */
    uint8_t message_op;
    size_t max_payload;
    guint http_status;
    char *http_body;
};

static void ws_random_mask(uint8_t mask[4])
{
    guint32 r = g_random_int();
    memcpy(mask, &r, 4);
}

static bool ws_write_all(int fd, const uint8_t *p, size_t len, GError **error)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "write to wispd: %s",
                        g_strerror(errno));
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

ws_client *ws_client_connect(const char *socket_path, const char *target, const char *token,
                             GError **error)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    uint8_t raw[16];

    if (strlen(socket_path) >= sizeof sa.sun_path) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "socket path too long: %s",
                    socket_path);
        return NULL;
    }
    strcpy(sa.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "socket: %s",
                    g_strerror(errno));
        return NULL;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "connect to %s: %s",
                    socket_path, g_strerror(errno));
        close(fd);
        return NULL;
    }
    ws_client *c = g_new0(ws_client, 1);
    c->fd = fd;
    c->in = g_byte_array_new();
    c->message = g_byte_array_new();
    c->max_payload = WS_MAX_PAYLOAD;
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)g_random_int_range(0, 256);
    c->key = g_base64_encode(raw, sizeof raw);

    GString *req = g_string_new(NULL);
    g_string_append_printf(req,
                           "GET %s HTTP/1.1\r\nHost: wispd\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n",
                           target, c->key);
    if (token)
        g_string_append_printf(req, "Authorization: Bearer %s\r\n", token);
    g_string_append(req, "\r\n");
    bool ok = ws_write_all(fd, (const uint8_t *)req->str, req->len, error);
    g_string_free(req, TRUE);
    if (!ok) {
        ws_client_free(c);
        return NULL;
    }
    return c;
}

void ws_client_free(ws_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    g_free(c->key);
    g_byte_array_unref(c->in);
    g_byte_array_unref(c->message);
    g_free(c->http_body);
    g_free(c);
}

int ws_client_fd(const ws_client *c)
{
    return c->fd;
}

bool ws_client_is_open(const ws_client *c)
{
    return c->state == WS_OPEN && !c->close_sent;
}

guint ws_client_http_status(const ws_client *c)
{
    return c->http_status;
}

const char *ws_client_http_body(const ws_client *c)
{
    return c->http_body ? c->http_body : "";
}

void ws_client_set_max_payload(ws_client *c, size_t max)
{
    c->max_payload = max;
}

static bool ws_send_frame(ws_client *c, uint8_t opcode, const void *data, size_t len,
                          GError **error)
{
    uint8_t mask[4];
    g_autoptr(GByteArray) out = g_byte_array_sized_new((guint)len + 14);

    ws_random_mask(mask);
    ws_frame_encode(out, opcode, data, len, mask);
    return ws_write_all(c->fd, out->data, out->len, error);
}

bool ws_client_send(ws_client *c, const void *data, size_t len, GError **error)
{
    if (!ws_client_is_open(c)) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED,
                            "the WebSocket is not open");
        return false;
    }
    return ws_send_frame(c, WS_OP_BINARY, data, len, error);
}

void ws_client_close(ws_client *c, uint16_t code)
{
    if (c->state == WS_OPEN && !c->close_sent) {
        uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        ws_send_frame(c, WS_OP_CLOSE, p, sizeof p, NULL);
    }
    c->close_sent = true;
}

/* The value of header name in the header block (lines after the status line), or NULL. */
static char *ws_header(const char *headers, const char *name)
{
    size_t nlen = strlen(name);
    const char *line = strstr(headers, "\r\n");

    while (line && line[2] != '\r' && line[2]) {
        line += 2;
        const char *end = strstr(line, "\r\n");
        if (!end)
            break;
        if ((size_t)(end - line) > nlen && line[nlen] == ':' &&
            g_ascii_strncasecmp(line, name, nlen) == 0)
            return g_strstrip(g_strndup(line + nlen + 1, (gsize)(end - line - nlen - 1)));
        line = end;
    }
    return NULL;
}

/* The upgrade's answer, once its header block is complete: AGAIN (not complete yet, or
 * upgraded: frames follow), REFUSED (with the body, when complete) or ERROR. */
static enum ws_client_event ws_handshake(ws_client *c, bool eof, GError **error)
{
    const char *start = (const char *)c->in->data;
    const char *end = g_strstr_len(start, c->in->len, "\r\n\r\n");

    if (!end) {
        if (c->in->len > WS_HEADERS_MAX || eof) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        eof ? "wispd closed the connection before answering"
                            : "wispd's answer has no end of headers");
            return WS_CLIENT_ERROR;
        }
        return WS_CLIENT_AGAIN;
    }
    size_t head_len = (size_t)(end - start) + 4;
    g_autofree char *head = g_strndup(start, head_len);
    guint status = 0;
    if (sscanf(head, "HTTP/1.%*d %u", &status) != 1 || status < 100 || status > 599) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "wispd's answer is not HTTP/1.1");
        return WS_CLIENT_ERROR;
    }
    c->http_status = status;
    if (status != 101) {
        /* An error answer: wait for its body (Content-Length), or the end of the stream. */
        g_autofree char *cl = ws_header(head, "Content-Length");
        guint64 want = 0;
        bool sized = cl && g_ascii_string_to_unsigned(cl, 10, 0, WS_HEADERS_MAX, &want, NULL);
        size_t have = c->in->len - head_len;
        if (!eof && (!sized || have < want) && have <= WS_HEADERS_MAX)
            return WS_CLIENT_AGAIN;
        size_t take = sized ? MIN(have, (size_t)want) : have;
        c->http_body = g_strndup(start + head_len, take);
        c->state = WS_DONE;
        return WS_CLIENT_REFUSED;
    }
    g_autofree char *accept = ws_header(head, "Sec-WebSocket-Accept");
    g_autofree char *upgrade = ws_header(head, "Upgrade");
    g_autofree char *expect = ws_accept_key(c->key);
    if (!accept || strcmp(accept, expect) != 0 || !upgrade ||
        g_ascii_strcasecmp(upgrade, "websocket") != 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "wispd's 101 is not a WebSocket upgrade (Upgrade or Sec-WebSocket-Accept)");
        return WS_CLIENT_ERROR;
    }
    g_byte_array_remove_range(c->in, 0, (guint)head_len);
    c->state = WS_OPEN;
    return WS_CLIENT_AGAIN;
}

/* Handles the complete frames in c->in. */
static enum ws_client_event ws_frames(ws_client *c, ws_client_message_fn on_message, void *opaque,
                                      GError **error)
{
    size_t at = 0;
    enum ws_client_event ev = WS_CLIENT_AGAIN;

    while (ev == WS_CLIENT_AGAIN && !c->close_sent) {
        struct ws_frame f;
        const char *why = NULL;
        gssize n = ws_frame_parse(c->in->data + at, c->in->len - at, c->max_payload, &f, &why);
        if (n == 0)
            break;
        if (n < 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "wispd's WebSocket: %s", why);
            return WS_CLIENT_ERROR;
        }
        at += (size_t)n;
        switch (f.opcode) {
        case WS_OP_PING:
            if (!ws_send_frame(c, WS_OP_PONG, f.payload, f.len, error))
                ev = WS_CLIENT_ERROR;
            break;
        case WS_OP_PONG:
            break;
        case WS_OP_CLOSE:
            ev = WS_CLIENT_CLOSED;
            break;
        case WS_OP_CONTINUATION:
            if (!c->message_op || c->message->len + f.len > c->max_payload) {
                g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                    "wispd's WebSocket: a stray or oversized continuation");
                return WS_CLIENT_ERROR;
            }
            g_byte_array_append(c->message, f.payload, (guint)f.len);
            if (f.fin) {
                uint8_t op = c->message_op;
                c->message_op = 0;
                on_message(opaque, op, c->message->data, c->message->len);
                g_byte_array_set_size(c->message, 0);
            }
            break;
        default: /* text, binary */
            if (c->message_op) {
                g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                    "wispd's WebSocket: a message inside a fragmented one");
                return WS_CLIENT_ERROR;
            }
            if (f.fin) {
                on_message(opaque, f.opcode, f.payload, f.len);
            } else {
                c->message_op = f.opcode;
                g_byte_array_append(c->message, f.payload, (guint)f.len);
            }
            break;
        }
    }
    g_byte_array_remove_range(c->in, 0, (guint)at);
    return ev;
}

enum ws_client_event ws_client_read(ws_client *c, ws_client_message_fn on_message, void *opaque,
                                    GError **error)
{
    if (c->state == WS_DONE)
        return WS_CLIENT_CLOSED;
    guint at = c->in->len;
    g_byte_array_set_size(c->in, at + WS_READ_SIZE);
    ssize_t n;
    do
        n = read(c->fd, c->in->data + at, WS_READ_SIZE);
    while (n < 0 && errno == EINTR);
    g_byte_array_set_size(c->in, at + (guint)MAX(n, 0));
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return WS_CLIENT_AGAIN;
    if (n < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "read from wispd: %s",
                    g_strerror(errno));
        return WS_CLIENT_ERROR;
    }
    enum ws_client_event ev = WS_CLIENT_AGAIN;
    if (c->state == WS_HANDSHAKE) {
        ev = ws_handshake(c, n == 0, error);
        if (ev != WS_CLIENT_AGAIN || c->state != WS_OPEN)
            return ev;
    }
    ev = ws_frames(c, on_message, opaque, error);
    if (ev == WS_CLIENT_AGAIN && n == 0)
        ev = WS_CLIENT_CLOSED;
    if (ev != WS_CLIENT_AGAIN)
        c->state = WS_DONE;
    return ev;
}
