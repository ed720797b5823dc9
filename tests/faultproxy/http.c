/* http.c: HTTP/1.1 framing and socket I/O for wisp-faultproxy (contracts in http.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "http.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define HTTP_MAX_CHUNK_LINE 1024

/* ---- growable buffers ---- */

int buf_reserve(struct buf *b, size_t extra)
{
    size_t want, cap;
    char *p;

    if (extra > SIZE_MAX - b->len - 1) {
        errno = ENOMEM;
        return -1;
    }
    want = b->len + extra + 1; /* room for a NUL, for parsing */
    if (want <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 4096;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        errno = EOVERFLOW;
        return -1;
    }
    return buf_append(b, tmp, (size_t)n);
}

/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- socket helpers ---- */

void sock_set_timeouts(int fd, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    int one = 1;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Sends every byte of iov[0..n), never raising SIGPIPE.  Returns 0, or -1 with errno. */
int sock_send_iov(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t r = sendmsg(fd, &msg, MSG_NOSIGNAL);
        size_t done;

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done = (size_t)r;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

int sock_send_all(int fd, const void *p, size_t len)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = len};

    return len ? sock_send_iov(fd, &iov, 1) : 0;
}

/* Reads what is available (at least one byte) into b.  Returns the count, 0 at EOF, -1 on error
 * (EAGAIN when the socket timeout expired). */
ssize_t sock_recv_some(int fd, struct buf *b, size_t limit)
{
    size_t room = 256 * 1024;
    ssize_t r;

    if (b->len >= limit) {
        errno = EFBIG;
        return -1;
    }
    if (room > limit - b->len)
        room = limit - b->len;
    if (buf_reserve(b, room) < 0)
        return -1;
    do {
        r = recv(fd, b->data + b->len, room, 0);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
        b->len += (size_t)r;
        b->data[b->len] = '\0';
    }
    return r;
}

/* True when the peer has closed (or reset) its side: a readable socket that yields no data. */
bool sock_peer_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char c;

    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLERR | POLLHUP))
        return true;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

/* Closes fd so that the peer sees a reset (RST) rather than an orderly end. */
void sock_close_with_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ---- HTTP parsing ---- */

/* Finds the next "\r\n" in p[0..len); returns its offset or -1. */
static ssize_t http_find_crlf(const char *p, size_t len)
{
    const char *e = memmem(p, len, "\r\n", 2);

    return e ? e - p : -1;
}

/* True when the header line p[0..len) has the given name (case-insensitive); *value and *vlen
 * are then set to the value without surrounding blanks. */
static bool http_header_is(const char *p, size_t len, const char *name, const char **value,
                           size_t *vlen)
{
    size_t n = strlen(name);
    const char *v, *e;

    if (len <= n || p[n] != ':' || strncasecmp(p, name, n) != 0)
        return false;
    v = p + n + 1;
    e = p + len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *value = v;
    *vlen = (size_t)(e - v);
    return true;
}

/* Parses a decimal Content-Length.  Returns 0 or -1. */
static int http_parse_length(const char *v, size_t vlen, uint64_t *out)
{
    uint64_t x = 0;

    if (vlen == 0 || vlen > 19)
        return -1;
    for (size_t i = 0; i < vlen; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/* True when the comma-separated token list v[0..vlen) holds token (case-insensitive). */
static bool http_has_token(const char *v, size_t vlen, const char *token)
{
    size_t tl = strlen(token);
    const char *p = v, *e = v + vlen;

    while (p < e) {
        const char *q = memchr(p, ',', (size_t)(e - p));
        const char *te = q ? q : e;

        while (p < te && (*p == ' ' || *p == '\t'))
            p++;
        while (te > p && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = q ? q + 1 : e;
    }
    return false;
}

/* Parses a chunked body in data[*pos..len), from the start of a chunk-size line.  Decoded bytes
 * are appended to out when it is not NULL.  Returns 1 when the body is complete (*pos is then
 * just past it), 0 when more bytes are needed (*pos is past the complete chunks), and -1 when
 * the framing is malformed or the body exceeds max. */
static int http_chunked_parse(const char *data, size_t len, size_t *pos, uint64_t *total,
                              struct buf *out, size_t max)
{
    for (;;) {
        size_t p = *pos;
        ssize_t eol = http_find_crlf(data + p, len - p);
        uint64_t size = 0;
        size_t i, digits = 0;

        if (eol < 0)
            return len - p > HTTP_MAX_CHUNK_LINE ? -1 : 0;
        for (i = p; i < p + (size_t)eol; i++) {
            char c = data[i];
            int d;

            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                d = c - 'A' + 10;
            else
                break;
            if (++digits > 15)
                return -1;
            size = size * 16 + (uint64_t)d;
        }
        if (digits == 0 || (i < p + (size_t)eol && data[i] != ';' && data[i] != ' '))
            return -1;
        p += (size_t)eol + 2;
        if (size == 0) { /* the last chunk, then trailers up to an empty line */
            const char *end;

            if (len - p >= 2 && data[p] == '\r' && data[p + 1] == '\n') {
                *pos = p + 2;
                return 1;
            }
            end = memmem(data + p, len - p, "\r\n\r\n", 4);
            if (!end)
                return len - p > HTTP_MAX_HEAD_BYTES ? -1 : 0;
            *pos = (size_t)(end - data) + 4;
            return 1;
        }
        if (*total + size > max)
            return -1;
        if (len - p < size + 2)
            return 0;
        if (data[p + size] != '\r' || data[p + size + 1] != '\n')
            return -1;
        if (out && buf_append(out, data + p, size) < 0)
            return -1;
        *total += size;
        *pos = p + size + 2;
    }
}

/* ---- requests ---- */

/* Sets the answer for a protocol error and returns HTTP_READ_BAD. */
static enum http_read_result http_bad(struct http_request *req, int status, const char *reason,
                                      const char *code, const char *message)
{
    req->bad_status = status;
    req->bad_reason = reason;
    req->bad_code = code;
    req->bad_message = message;
    return HTTP_READ_BAD;
}

/* Parses "METHOD SP TARGET SP HTTP/1.x" in p[0..len).  Returns 0 or -1. */
static int http_parse_request_line(struct http_request *req, const char *p, size_t len)
{
    const char *end = p + len;
    const char *sp1 = memchr(p, ' ', len);
    const char *sp2 = sp1 ? memrchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
    size_t mlen, tlen;

    if (!sp1 || !sp2 || sp2 == sp1 + 1 || end - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
        sp2[8] < '0' || sp2[8] > '9')
        return -1;
    mlen = (size_t)(sp1 - p);
    if (mlen >= sizeof req->method)
        mlen = sizeof req->method - 1;
    memcpy(req->method, p, mlen);
    req->method[mlen] = '\0';
    tlen = (size_t)(sp2 - sp1 - 1);
    if (tlen >= sizeof req->target)
        tlen = sizeof req->target - 1;
    memcpy(req->target, sp1 + 1, tlen);
    req->target[tlen] = '\0';
    req->is_head = strcmp(req->method, "HEAD") == 0;
    req->close_after = sp2[8] == '0'; /* HTTP/1.0 */
    return 0;
}

enum http_read_result http_read_request(int fd, struct buf *in, struct http_request *req,
                                        size_t max_body)
{
    const char *end, *p, *line_end, *head_end;
    size_t head_len, pos;
    bool have_length = false, chunked = false, expect = false, conn_header_done = false;
    uint64_t length = 0;
    ssize_t r;

    /* The head: up to the empty line. */
    for (;;) {
        /* Tolerate empty lines before a request line (RFC 9112 2.2). */
        while (in->len >= 2 && in->data[0] == '\r' && in->data[1] == '\n')
            buf_consume(in, 2);
        end = in->len ? memmem(in->data, in->len, "\r\n\r\n", 4) : NULL;
        if (end)
            break;
        if (in->len > HTTP_MAX_HEAD_BYTES) {
            req->have_head = true;
            return http_bad(req, 431, "Request Header Fields Too Large",
                            "RequestHeaderSectionTooLarge", "The request head is too large.");
        }
        r = sock_recv_some(fd, in, HTTP_MAX_HEAD_BYTES + 4);
        if (r == 0 && in->len == 0)
            return HTTP_READ_EOF;
        if (r <= 0)
            return HTTP_READ_FAILED;
    }
    req->have_head = true;
    head_len = (size_t)(end - in->data) + 4;
    head_end = in->data + head_len - 2; /* at the final CRLF */

    p = in->data;
    line_end = p + http_find_crlf(p, head_len);
    if (http_parse_request_line(req, p, (size_t)(line_end - p)) < 0)
        return http_bad(req, 400, "Bad Request", "BadRequest", "Malformed request line.");
    if (buf_append(&req->upstream, p, (size_t)(line_end - p) + 2) < 0)
        return HTTP_READ_FAILED;

    /* The headers: copied byte for byte, except that Connection becomes "Connection: close". */
    for (p = line_end + 2; p < head_end; p = line_end + 2) {
        const char *v;
        size_t vlen;

        line_end = p + http_find_crlf(p, (size_t)(head_end + 2 - p));
        if (http_header_is(p, (size_t)(line_end - p), "Connection", &v, &vlen)) {
            if (http_has_token(v, vlen, "close"))
                req->close_after = true;
            else if (http_has_token(v, vlen, "keep-alive"))
                req->close_after = false;
            if (!conn_header_done && buf_append(&req->upstream, "Connection: close\r\n", 19) < 0)
                return HTTP_READ_FAILED;
            conn_header_done = true;
            continue;
        }
        if (http_header_is(p, (size_t)(line_end - p), "Content-Length", &v, &vlen)) {
            uint64_t x;

            if (http_parse_length(v, vlen, &x) < 0 || (have_length && x != length))
                return http_bad(req, 400, "Bad Request", "BadRequest", "Bad Content-Length.");
            have_length = true;
            length = x;
        } else if (http_header_is(p, (size_t)(line_end - p), "Transfer-Encoding", &v, &vlen)) {
            if (!http_has_token(v, vlen, "chunked"))
                return http_bad(req, 501, "Not Implemented", "NotImplemented",
                                "Only the chunked transfer coding is supported.");
            chunked = true;
        } else if (http_header_is(p, (size_t)(line_end - p), "Expect", &v, &vlen)) {
            expect = http_has_token(v, vlen, "100-continue");
        }
        if (buf_append(&req->upstream, p, (size_t)(line_end - p) + 2) < 0)
            return HTTP_READ_FAILED;
    }
    if (!conn_header_done && buf_append(&req->upstream, "Connection: close\r\n", 19) < 0)
        return HTTP_READ_FAILED;
    if (buf_append(&req->upstream, "\r\n", 2) < 0)
        return HTTP_READ_FAILED;
    if (chunked && have_length)
        return http_bad(req, 400, "Bad Request", "BadRequest",
                        "Both Content-Length and Transfer-Encoding.");
    if (have_length && length > max_body)
        return http_bad(req, 413, "Payload Too Large", "EntityTooLarge", "The body is too large.");
    buf_consume(in, head_len);

    /* Answer "Expect: 100-continue" here; the upstream's own 100 is dropped with the answer. */
    if (expect && (chunked || length > 0) && in->len == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

        if (sock_send_all(fd, cont, sizeof cont - 1) < 0)
            return HTTP_READ_FAILED;
    }

    /* The body, forwarded as it came (a chunked body keeps its framing). */
    if (have_length) {
        while (in->len < length) {
            if (sock_recv_some(fd, in, (size_t)length) <= 0)
                return HTTP_READ_FAILED;
        }
        if (buf_append(&req->upstream, in->data, (size_t)length) < 0)
            return HTTP_READ_FAILED;
        req->body_len = (size_t)length;
        buf_consume(in, (size_t)length);
    } else if (chunked) {
        uint64_t total = 0;
        int done;

        pos = 0;
        while ((done = http_chunked_parse(in->data ? in->data : "", in->len, &pos, &total, NULL,
                                          max_body)) == 0) {
            if (sock_recv_some(fd, in, max_body + HTTP_MAX_HEAD_BYTES) <= 0)
                return HTTP_READ_FAILED;
        }
        if (done < 0)
            return http_bad(req, 400, "Bad Request", "BadRequest", "Malformed chunked body.");
        if (buf_append(&req->upstream, in->data, pos) < 0)
            return HTTP_READ_FAILED;
        req->body_len = (size_t)total;
        buf_consume(in, pos);
    }
    return HTTP_READ_OK;
}

void http_request_free(struct http_request *req)
{
    buf_free(&req->upstream);
}

/* ---- responses ---- */

int http_parse_response(struct http_response *resp, bool is_head, size_t max_body)
{
    const char *data = resp->raw.data, *end, *p, *line_end, *head_end;
    size_t len = resp->raw.len, off = 0, head_len;
    bool have_length = false;
    uint64_t length = 0;

    resp->length_at = -1;
    for (;;) {
        if (len - off < 12 || memcmp(data + off, "HTTP/1.", 7) != 0)
            return -1;
        end = memmem(data + off, len - off, "\r\n\r\n", 4);
        if (!end)
            return -1;
        resp->status = atoi(data + off + 9);
        head_len = (size_t)(end - (data + off)) + 4;
        if (resp->status >= 200 || resp->status < 100)
            break;
        off += head_len; /* 100 Continue and friends */
    }
    if (resp->status < 100 || resp->status > 999)
        return -1;
    p = data + off;
    head_end = p + head_len - 2;
    line_end = p + http_find_crlf(p, head_len);
    if (buf_append(&resp->head, p, (size_t)(line_end - p) + 2) < 0)
        return -1;
    /* The headers, in the upstream's order and case, minus the hop-by-hop ones. */
    for (p = line_end + 2; p < head_end; p = line_end + 2) {
        const char *v;
        size_t vlen;

        line_end = p + http_find_crlf(p, (size_t)(head_end + 2 - p));
        if (http_header_is(p, (size_t)(line_end - p), "Connection", &v, &vlen) ||
            http_header_is(p, (size_t)(line_end - p), "Keep-Alive", &v, &vlen))
            continue;
        if (http_header_is(p, (size_t)(line_end - p), "Content-Length", &v, &vlen)) {
            if (have_length || http_parse_length(v, vlen, &length) < 0)
                return -1;
            have_length = true;
            resp->length_at = (ssize_t)(resp->head.len + (size_t)(v - p));
            resp->length_len = vlen;
        } else if (http_header_is(p, (size_t)(line_end - p), "Transfer-Encoding", &v, &vlen)) {
            if (!http_has_token(v, vlen, "chunked"))
                return -1; /* no other coding is expected from S3 */
            resp->chunked = true;
        }
        if (buf_append(&resp->head, p, (size_t)(line_end - p) + 2) < 0)
            return -1;
    }
    if (resp->chunked && have_length)
        return -1;
    off += head_len;

    resp->body = resp->raw.data + off;
    resp->has_body = !is_head && resp->status != 204 && resp->status != 304;
    if (!resp->has_body) {
        resp->chunked = false;
        resp->body_len = 0;
    } else if (resp->chunked) {
        size_t pos = off;
        uint64_t total = 0;

        if (http_chunked_parse(data, len, &pos, &total, &resp->decoded, max_body) != 1)
            return -1;
        resp->body = resp->decoded.data ? resp->decoded.data : resp->raw.data + len;
        resp->body_len = resp->decoded.len;
    } else if (have_length) {
        resp->body_len = len - off < length ? len - off : (size_t)length;
        resp->upstream_short = resp->body_len < length;
    } else {
        /* Delimited by the end of the connection: give it a length, since ours stays open. */
        resp->body_len = len - off;
        if (buf_append(&resp->head, "Content-Length: ", 16) < 0)
            return -1;
        resp->length_at = (ssize_t)resp->head.len;
        if (buf_printf(&resp->head, "%zu", resp->body_len) < 0)
            return -1;
        resp->length_len = resp->head.len - (size_t)resp->length_at;
        if (buf_append(&resp->head, "\r\n", 2) < 0)
            return -1;
    }
    return 0;
}

int http_response_head(const struct http_response *resp, struct buf *out, const char *length_value,
                       bool close_after)
{
    if (length_value && resp->length_at >= 0) {
        size_t at = (size_t)resp->length_at, rest = at + resp->length_len;

        if (buf_append(out, resp->head.data, at) < 0 ||
            buf_append(out, length_value, strlen(length_value)) < 0 ||
            buf_append(out, resp->head.data + rest, resp->head.len - rest) < 0)
            return -1;
    } else if (buf_append(out, resp->head.data, resp->head.len) < 0) {
        return -1;
    }
    if (close_after && buf_append(out, "Connection: close\r\n", 19) < 0)
        return -1;
    return buf_append(out, "\r\n", 2);
}

int http_chunk_encode(struct buf *out, const char *data, size_t len, uint64_t size_field)
{
    if (size_field == 0 && len == 0)
        return buf_append(out, "0\r\n\r\n", 5);
    if (buf_printf(out, "%" PRIx64 "\r\n", size_field) < 0 || buf_append(out, data, len) < 0)
        return -1;
    return buf_append(out, "\r\n0\r\n\r\n", 7);
}

void http_response_free(struct http_response *resp)
{
    buf_free(&resp->head);
    buf_free(&resp->raw);
    buf_free(&resp->decoded);
}
