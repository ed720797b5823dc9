/* http.h: the HTTP/1.1 framing and socket I/O of wisp-faultproxy.
 *
 * Only what a reverse proxy that buffers whole messages needs: read one request from a client
 * connection (head and body, framed by Content-Length or chunked), rewriting nothing but its
 * Connection header; parse an upstream response read until EOF; write a response head back.
 * No function here keeps state between calls, and none locks: each connection thread owns its
 * buffers. */
#ifndef WISP_FAULTPROXY_HTTP_H
#define WISP_FAULTPROXY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define HTTP_MAX_HEAD_BYTES (64 * 1024)

/* ---- growable buffers: data is always NUL-terminated, for parsing ---- */

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n); /* drops the first n bytes */
void buf_free(struct buf *b);

/* ---- sockets: every send uses MSG_NOSIGNAL, every call retries EINTR ---- */

/* Sets SO_RCVTIMEO and SO_SNDTIMEO to ms, and TCP_NODELAY. */
void sock_set_timeouts(int fd, unsigned ms);
/* Sends every byte of iov[0..n) (iov is consumed).  Returns 0, or -1 with errno. */
int sock_send_iov(int fd, struct iovec *iov, int n);
int sock_send_all(int fd, const void *p, size_t len);
/* Reads what is available into b, never growing b past limit bytes.  Returns the count, 0 at
 * EOF, or -1 with errno (EAGAIN: the socket timeout expired; EFBIG: b is at limit). */
ssize_t sock_recv_some(int fd, struct buf *b, size_t limit);
/* True when the peer has closed or reset its side (checked without blocking). */
bool sock_peer_gone(int fd);
/* Closes fd with SO_LINGER {1, 0}, so that the peer sees a reset (RST). */
void sock_close_with_reset(int fd);

/* ---- requests ---- */

struct http_request {
    struct buf upstream; /* what goes upstream: the head with "Connection: close", the body */
    char method[16];
    char target[512]; /* for the log; cut if longer */
    bool have_head;   /* a whole head was read (so the request gets a number) */
    bool is_head;     /* method HEAD: the answer has no body */
    bool close_after; /* HTTP/1.0, or the client asked for Connection: close */
    size_t body_len;  /* decoded body length */

    /* On HTTP_READ_BAD: the answer to give before closing. */
    int bad_status;
    const char *bad_reason, *bad_code, *bad_message;
};

enum http_read_result {
    HTTP_READ_OK,
    HTTP_READ_EOF,    /* the client closed between requests */
    HTTP_READ_FAILED, /* I/O error or the client went away mid-request: just close */
    HTTP_READ_BAD,    /* a protocol error: answer req->bad_* and close */
};

/* Reads one request from fd.  in holds bytes already read from this connection and keeps any
 * that follow the request (pipelining).  The head goes upstream byte for byte (Host and x-amz-*
 * are signed by SigV4) except that every Connection header is replaced by one
 * "Connection: close"; the body goes as it came, chunked framing included.  An
 * "Expect: 100-continue" is answered here with a 100, before the body is read.  Bodies larger
 * than max_body are refused (413). */
enum http_read_result http_read_request(int fd, struct buf *in, struct http_request *req,
                                        size_t max_body);
void http_request_free(struct http_request *req);

/* ---- responses ---- */

struct http_response {
    int status;
    struct buf head;   /* status line and headers in the upstream's order and case, minus
                          Connection and Keep-Alive, without the final empty line */
    ssize_t length_at; /* offset in head of the Content-Length value, or -1 */
    size_t length_len; /* the length of that value */
    bool chunked;      /* the body goes out chunked (Transfer-Encoding stays in head) */
    bool has_body;     /* not an answer to HEAD, nor 1xx, 204 or 304 */
    char *body;        /* the body, decoded (writable: faults may flip a byte) */
    size_t body_len;
    bool upstream_short; /* the upstream sent less than its Content-Length */
    struct buf raw;      /* everything the upstream sent */
    struct buf decoded;  /* the body, when the upstream sent it chunked */
};

/* Parses resp->raw, a whole upstream answer to a request (is_head: to a HEAD), skipping any 1xx
 * interim answers.  The head keeps the upstream's framing: Content-Length where it was, or
 * Transfer-Encoding: chunked with the body decoded here (and encoded again to send it).  A body
 * delimited by the end of the connection gets a Content-Length, since the client's connection
 * stays open.  Returns 0, or -1 when raw is not a valid HTTP/1.x response or its body is larger
 * than max_body. */
int http_parse_response(struct http_response *resp, bool is_head, size_t max_body);
/* Appends to out the head to send: the head with its Content-Length value replaced by
 * length_value (unless NULL), "Connection: close" when close_after, and the empty line.
 * Returns 0 or -1. */
int http_response_head(const struct http_response *resp, struct buf *out, const char *length_value,
                       bool close_after);
/* Appends data[0..len) to out as one chunk announced as size_field bytes (len, unless a fault
 * lies), then the last chunk.  Returns 0 or -1. */
int http_chunk_encode(struct buf *out, const char *data, size_t len, uint64_t size_field);
void http_response_free(struct http_response *resp);

#endif
