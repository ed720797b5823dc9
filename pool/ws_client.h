/* ws_client.h: the client end of a WebSocket (RFC 6455) over a unix socket, for `wisp exec`
 * (cli_exec.c) on wispd's streaming exec (api_exec_ws.h).
 *
 * Why not libsoup: `wisp exec NAME true` is mostly process start, and libsoup (with what it
 * pulls in: libpsl, nghttp2, brotli, gssapi...) roughly doubles the start of a CLI that
 * otherwise needs only GLib (docs/benchmarks.md, "exec round trip").  What wispd's exec
 * needs is small: one upgrade request, unfragmented binary messages both ways, close and
 * ping.  No extensions, no subprotocols, no TLS.
 *
 * The frame codec (ws_frame_*) is separate from the connection so that it can be tested on
 * its own.  The connection is driven by its caller's main loop: the caller watches
 * ws_client_fd() and calls ws_client_read() when it is readable; sends block (they are small,
 * and wispd reads every stream's messages in its main loop, so they cannot wait for long). */
#ifndef WISP_WS_CLIENT_H
#define WISP_WS_CLIENT_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum ws_opcode {
    WS_OP_CONTINUATION = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Close codes used here (RFC 6455 7.4.1). */
#define WS_CLOSE_NORMAL     1000
#define WS_CLOSE_GOING_AWAY 1001

/* ---- frames ---------------------------------------------------------------------------------- */

struct ws_frame {
    bool fin;
    uint8_t opcode;
    uint8_t *payload; /* inside the parsed buffer, unmasked in place */
    size_t len;
};

/* Parses one frame at the start of buf[0..len).  Returns the frame's whole size when it is
 * complete (f then points into buf, whose payload bytes were unmasked in place), 0 when more
 * bytes are needed, -1 when the bytes are not a frame this client takes (*why says what):
 * reserved bits set, an unknown opcode, a control frame that is fragmented or longer than 125
 * bytes, a payload over max_payload. */
gssize ws_frame_parse(uint8_t *buf, size_t len, size_t max_payload, struct ws_frame *f,
                      const char **why);

/* Appends one final frame (FIN set) of opcode with payload, masked with mask (a client's
 * frames are always masked). */
void ws_frame_encode(GByteArray *out, uint8_t opcode, const void *payload, size_t len,
                     const uint8_t mask[4]);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (g_free it). */
char *ws_accept_key(const char *key);

/* ---- the connection ------------------------------------------------------------------------ */

typedef struct ws_client ws_client;

/* Connects to the unix socket and sends the upgrade request for target ("/v1/...?..."), with
 * "Authorization: Bearer TOKEN" when token is not NULL.  The answer comes through
 * ws_client_read.  NULL with *error when the socket cannot be reached or written. */
ws_client *ws_client_connect(const char *socket_path, const char *target, const char *token,
                             GError **error);
void ws_client_free(ws_client *c);
int ws_client_fd(const ws_client *c);

enum ws_client_event {
    WS_CLIENT_AGAIN,   /* nothing complete yet: read again when the socket is readable */
    WS_CLIENT_REFUSED, /* the server answered the upgrade with another status: see below */
    WS_CLIENT_CLOSED,  /* the server closed (a close frame, or the end of the stream) */
    WS_CLIENT_ERROR,   /* a read error or bytes that break the protocol; *error says */
};

/* Called for each complete data message (binary or text) in arrival order; the bytes are the
 * client's until the call returns. */
typedef void (*ws_client_message_fn)(void *opaque, uint8_t opcode, const uint8_t *data, size_t len);

/* Reads what the socket holds (one read(2)) and handles it: the upgrade's answer first, then
 * frames (pings are answered, messages go to on_message).  Returns AGAIN while the connection
 * goes on.  After REFUSED, ws_client_http_status and ws_client_http_body tell the answer.
 * on_message may call ws_client_close, after which no further message is delivered. */
enum ws_client_event ws_client_read(ws_client *c, ws_client_message_fn on_message, void *opaque,
                                    GError **error);

/* True once the server's 101 arrived (messages can be sent). */
bool ws_client_is_open(const ws_client *c);
guint ws_client_http_status(const ws_client *c);
/* The refused upgrade's answer body, NUL-terminated ("" when none). */
const char *ws_client_http_body(const ws_client *c);
/* Largest message payload taken from the server (default 1 MiB). */
void ws_client_set_max_payload(ws_client *c, size_t max);

/* Sends one binary message; false with *error if the connection is not open or the write
 * failed. */
bool ws_client_send(ws_client *c, const void *data, size_t len, GError **error);
/* Sends a close frame with code (best effort) and stops sending.  The caller need not wait
 * for the server's close: wispd takes a closed socket as the same end. */
void ws_client_close(ws_client *c, uint16_t code);

#endif
