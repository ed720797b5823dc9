/* faultproxy.c: wisp-faultproxy, an HTTP/1.1 reverse proxy that injects faults.
 *
 * It sits between a real client (the object store client, curl) and a real server (radosgw):
 *
 *   client ──keep-alive──▶ wisp-faultproxy ──one fresh connection per request──▶ upstream
 *
 * Each request from the client is read whole (request line, headers, body framed by
 * Content-Length or chunked), forwarded on a fresh upstream connection with its Connection
 * header replaced by "Connection: close" and every other header byte left as it was (Host and
 * the x-amz-* headers are signed by SigV4), and the upstream's whole response is read until
 * EOF.  The response is then delivered to the client, possibly faulted, with the upstream's
 * headers in their order and its framing: Content-Length where it was, or chunked (the body is
 * decoded so that faults hit the data, then sent again as one chunk).
 *
 * The fault of a request is decided when the request arrives, from a PRNG (splitmix64) keyed by
 * (--seed, request number), so a run is reproducible when its requests arrive in the same
 * order.  One uniform draw u in [0,1) picks the fault whose band holds it; the bands are laid
 * out in the order error, delay, reset, truncate, bad-length, corrupt, each as wide as its rate.
 * Further draws from the same stream pick the details (how many bytes, which byte):
 *
 *   error       500 and 503 alternately, with an S3-style XML body; half the time the request
 *               is not forwarded ("early"), half the time it is and the upstream's answer is
 *               dropped ("late": the work was done, the client sees an error)
 *   delay       sleep --delay-ms before forwarding (the request is dropped if the client has
 *               gone meanwhile) or after it, then answer normally
 *   reset       send part of the response (the head and half the body, or half the head when
 *               there is no body) then close with SO_LINGER {1, 0}: the client sees an RST
 *   truncate    send the head with the true Content-Length and only part of the body, then
 *               close normally; one time in four (and always when there is no body) the head
 *               itself is cut at a random byte instead
 *   bad-length  send the body with a wrong Content-Length (larger or smaller), or a chunked
 *               body with a wrong chunk size, then close; not applied to HEAD, 1xx, 204 and
 *               304 answers, which carry no body
 *   corrupt     flip one byte of the body, lengths unchanged; not applied to an empty body
 *
 * After any fault other than an early error the client connection is closed.  A fault that
 * does not apply to a response is logged as "none (bad-length n/a: ...)" and not
 * counted.
 *
 * Limitations: the whole request and the whole response are held in memory (up to --max-body
 * each); only http:// upstreams; one thread per client connection, at most --max-conns. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define ERROR_BODY_BYTES 512

enum fault {
    FAULT_NONE = 0,
    FAULT_ERROR,
    FAULT_DELAY,
    FAULT_RESET,
    FAULT_TRUNCATE,
    FAULT_BAD_LENGTH,
    FAULT_CORRUPT,
    FAULT__COUNT,
};

static const char *fault_to_string(enum fault f)
{
    static const char *const names[FAULT__COUNT] = {
        "none", "error", "delay", "reset", "truncate", "bad-length", "corrupt",
    };
    return (unsigned)f < FAULT__COUNT ? names[f] : "?";
}

/* Program configuration, set once by main() before any thread starts, then read-only. */
struct config {
    struct sockaddr_storage listen_addr;
    socklen_t listen_len;
    struct sockaddr_storage upstream_addr;
    socklen_t upstream_len;
    const char *port_file;
    const char *log_file;
    uint64_t seed;
    double rate[FAULT__COUNT];
    unsigned delay_ms;
    unsigned max_conns;
    size_t max_body;
    unsigned idle_timeout_ms;
    unsigned upstream_timeout_ms;
};

static struct config cfg = {
    .max_conns = 256,
    .max_body = 256u * 1024 * 1024,
    .delay_ms = 5000,
    .idle_timeout_ms = 120000,
    .upstream_timeout_ms = 60000,
};

/* Counters, printed at exit. */
static atomic_uint_fast64_t stat_requests;
static atomic_uint_fast64_t stat_connections;
static atomic_uint_fast64_t stat_refused;
static atomic_uint_fast64_t stat_forwarded;
static atomic_uint_fast64_t stat_upstream_errors;
static atomic_uint_fast64_t stat_bad_requests;
static atomic_uint_fast64_t stat_client_gone;
static atomic_uint_fast64_t stat_faults[FAULT__COUNT];
static atomic_uint_fast64_t error_faults_sent; /* picks 500 or 503 alternately */

static FILE *log_fp;
static atomic_bool stopping;

/* The registry of live connections, so that shutdown can wake every thread blocked in I/O.
 * reg_lock protects slots[] and active.  A thread sets and clears its own slot's fds under
 * reg_lock and closes an fd only after clearing it, so shutdown never touches a reused fd. */
struct slot {
    bool used;
    int client_fd;
    int upstream_fd;
};
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cond = PTHREAD_COND_INITIALIZER; /* active dropped, or stopping */
static struct slot *slots;
static unsigned active;

static int signal_pipe[2] = {-1, -1};

/* ---- logging ---- */

static void proxy_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void proxy_log(const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(log_fp ? log_fp : stderr, "%s\n", line); /* one call: stdio locks the stream */
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("wisp-faultproxy: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ---- the PRNG: splitmix64, one stream per request ---- */

struct rng {
    uint64_t state;
};

static uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The stream of request number reqno: the same (seed, reqno) always gives the same draws. */
static void rng_init(struct rng *r, uint64_t seed, uint64_t reqno)
{
    struct rng mix = {seed};

    r->state = rng_next(&mix) ^ (reqno * 0xd1b54a32d192ed03ULL);
    (void)rng_next(r);
}

/* A uniform double in [0, 1). */
static double rng_uniform(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* A uniform integer in [0, n); 0 when n is 0. */
static uint64_t rng_below(struct rng *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

static enum fault fault_pick(struct rng *r)
{
    double u = rng_uniform(r), edge = 0;

    for (int f = FAULT_ERROR; f < FAULT__COUNT; f++) {
        edge += cfg.rate[f];
        if (u < edge)
            return (enum fault)f;
    }
    return FAULT_NONE;
}

/* Sleeps ms milliseconds, or less if the proxy is stopping. */
static void sleep_ms(unsigned ms)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&reg_lock);
    while (!atomic_load(&stopping)) {
        if (pthread_cond_timedwait(&reg_cond, &reg_lock, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&reg_lock);
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* ---- connections ---- */

struct conn {
    int fd;
    unsigned slot;
    uint64_t id;
    struct buf in; /* bytes from the client not yet consumed */
};

/* Sends a small answer of the proxy's own (400, 413, 501, 502).  HEAD answers carry no body. */
static void send_simple(struct conn *c, int status, const char *reason, const char *code,
                        const char *message, bool is_head, bool close_after, uint64_t reqno)
{
    char body[ERROR_BODY_BYTES], head[512];
    int blen, hlen;
    struct iovec iov[2];

    blen = snprintf(body, sizeof body,
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<Error><Code>%s</Code><Message>%s</Message>"
                    "<RequestId>faultproxy-%" PRIu64 "</RequestId></Error>\n",
                    code, message, reqno);
    hlen = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\n"
                    "Content-Type: application/xml\r\n"
                    "x-amz-request-id: faultproxy-%" PRIu64 "\r\n"
                    "Content-Length: %d\r\n"
                    "%s\r\n",
                    status, reason, reqno, blen, close_after ? "Connection: close\r\n" : "");
    iov[0] = (struct iovec){head, (size_t)hlen};
    iov[1] = (struct iovec){body, (size_t)blen};
    (void)sock_send_iov(c->fd, iov, is_head ? 1 : 2);
}

static void slot_set_upstream(unsigned slot, int fd)
{
    pthread_mutex_lock(&reg_lock);
    slots[slot].upstream_fd = fd;
    pthread_mutex_unlock(&reg_lock);
}

/* Opens a connection to the upstream, with a connect timeout.  Returns the fd or -1. */
static int upstream_connect(void)
{
    int fd, flags, err = 0;
    socklen_t elen = sizeof err;
    struct pollfd p;

    fd = socket(cfg.upstream_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&cfg.upstream_addr, cfg.upstream_len) < 0) {
        if (errno != EINPROGRESS)
            goto fail;
        p = (struct pollfd){.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 5000) <= 0) {
            errno = ETIMEDOUT;
            goto fail;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
            goto fail;
        if (err) {
            errno = err;
            goto fail;
        }
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        goto fail;
    sock_set_timeouts(fd, cfg.upstream_timeout_ms);
    return fd;

fail:
    err = errno;
    close(fd);
    errno = err;
    return -1;
}

/* Sends the request upstream and reads the whole answer.  Returns 0, or -1 after logging. */
static int forward(struct conn *c, struct http_request *req, struct http_response *resp,
                   uint64_t reqno)
{
    int fd = upstream_connect();
    ssize_t r;

    if (fd < 0) {
        proxy_log("req=%" PRIu64 " upstream connect: %s", reqno, strerror(errno));
        return -1;
    }
    slot_set_upstream(c->slot, fd);
    if (sock_send_all(fd, req->upstream.data, req->upstream.len) < 0)
        /* The upstream may have answered early and closed: read what it said. */
        proxy_log("req=%" PRIu64 " upstream send: %s", reqno, strerror(errno));
    while ((r = sock_recv_some(fd, &resp->raw, cfg.max_body + HTTP_MAX_HEAD_BYTES)) > 0)
        ;
    slot_set_upstream(c->slot, -1);
    close(fd);
    if (r < 0) {
        proxy_log("req=%" PRIu64 " upstream recv: %s", reqno, strerror(errno));
        return -1;
    }
    if (http_parse_response(resp, req->is_head, cfg.max_body) < 0) {
        proxy_log("req=%" PRIu64 " upstream sent a malformed response (%zu bytes)", reqno,
                  resp->raw.len);
        return -1;
    }
    atomic_fetch_add(&stat_forwarded, 1);
    return 0;
}

/* Delivers resp to the client with the given fault (reset, truncate, bad-length, corrupt or
 * none).  *fault is set to FAULT_NONE when the fault does not apply to this response.  note
 * receives, for the log, what was done or why nothing was.  Returns true when the client fd has
 * been closed here (after a reset). */
static bool deliver(struct conn *c, struct http_response *resp, enum fault *fault, struct rng *rng,
                    bool close_after, char *note, size_t note_size)
{
    struct buf head = {0}, wire = {0}; /* wire: a chunked body as it goes out */
    const char *body = resp->body;
    size_t body_len = resp->has_body ? resp->body_len : 0;
    char length_value[32], *length_override = NULL;
    struct iovec iov[2];
    size_t cut;
    bool ok = false;

    note[0] = '\0';
    if (*fault == FAULT_BAD_LENGTH && !resp->has_body) {
        snprintf(note, note_size, " (bad-length n/a: no body)");
        *fault = FAULT_NONE;
    }
    if (*fault == FAULT_CORRUPT && body_len == 0) {
        snprintf(note, note_size, " (corrupt n/a: empty body)");
        *fault = FAULT_NONE;
    }
    if (*fault == FAULT_CORRUPT) {
        size_t at = (size_t)rng_below(rng, body_len);

        resp->body[at] ^= (char)(1 + rng_below(rng, 255));
        snprintf(note, note_size, " (byte %zu of %zu)", at, body_len);
    }
    if (*fault == FAULT_BAD_LENGTH) {
        /* Larger or smaller than the body, never equal: in Content-Length, or in the size of
         * the one chunk when the answer is chunked. */
        uint64_t wrong;

        if (body_len > 0 && rng_below(rng, 2) == 0)
            wrong = rng_below(rng, body_len);
        else
            wrong = body_len + 1 + rng_below(rng, body_len > 16 ? body_len : 16);
        if (resp->chunked) {
            if (http_chunk_encode(&wire, body, body_len, wrong) < 0)
                goto out;
            snprintf(note, note_size, " (chunk size %" PRIu64 " for %zu)", wrong, body_len);
        } else {
            snprintf(length_value, sizeof length_value, "%" PRIu64, wrong);
            length_override = length_value;
            snprintf(note, note_size, " (Content-Length %" PRIu64 " for %zu)", wrong, body_len);
        }
    } else if (resp->chunked && http_chunk_encode(&wire, body, body_len, body_len) < 0) {
        goto out;
    }
    if (resp->chunked) {
        body = wire.data;
        body_len = wire.len;
    }
    if (http_response_head(resp, &head, length_override, close_after) < 0)
        goto out;

    switch (*fault) {
    case FAULT_RESET:
    case FAULT_TRUNCATE:
        /* A truncate cuts the head itself one time in four, as a connection lost at any
         * point would: the client then sees a status line and only some of the headers. */
        if (body_len > 0 && (*fault == FAULT_RESET || rng_below(rng, 4) != 0)) {
            cut = *fault == FAULT_RESET ? body_len / 2 : (size_t)rng_below(rng, body_len);
            iov[0] = (struct iovec){head.data, head.len};
            iov[1] = (struct iovec){(void *)body, cut};
            (void)sock_send_iov(c->fd, iov, 2);
            snprintf(note, note_size, " (body cut at %zu of %zu%s)", cut, body_len,
                     resp->chunked ? ", chunked" : "");
        } else {
            cut = *fault == FAULT_RESET ? head.len / 2 : 1 + (size_t)rng_below(rng, head.len - 2);
            (void)sock_send_all(c->fd, head.data, cut);
            snprintf(note, note_size, " (head cut at %zu of %zu)", cut, head.len);
        }
        break;
    default:
        iov[0] = (struct iovec){head.data, head.len};
        iov[1] = (struct iovec){(void *)body, body_len};
        (void)sock_send_iov(c->fd, iov, body_len ? 2 : 1);
        break;
    }
    ok = true;
out:
    if (!ok)
        snprintf(note, note_size, " (out of memory)");
    buf_free(&head);
    buf_free(&wire);
    if (*fault == FAULT_RESET || !ok) {
        pthread_mutex_lock(&reg_lock);
        slots[c->slot].client_fd = -1;
        pthread_mutex_unlock(&reg_lock);
        sock_close_with_reset(c->fd);
        c->fd = -1;
        return true;
    }
    return false;
}

/* Sends the injected error answer, 500 and 503 alternately. */
static void send_error_fault(struct conn *c, struct http_request *req, bool close_after,
                             uint64_t reqno, int *status)
{
    if (atomic_fetch_add(&error_faults_sent, 1) % 2 == 0) {
        *status = 500;
        send_simple(c, 500, "Internal Server Error", "InternalError",
                    "We encountered an internal error. Please try again.", req->is_head,
                    close_after, reqno);
    } else {
        *status = 503;
        send_simple(c, 503, "Service Unavailable", "SlowDown", "Please reduce your request rate.",
                    req->is_head, close_after, reqno);
    }
}

/* Serves the client's requests until it closes, an error, or a fault that closes. */
static void conn_serve(struct conn *c)
{
    for (;;) {
        struct http_request req = {0};
        struct http_response resp = {0};
        struct timespec t0;
        struct rng rng;
        enum fault fault;
        enum http_read_result rr;
        uint64_t reqno = 0;
        const char *variant = "", *note = "";
        char detail[96] = "";
        bool close_after, closed = false, delay_after = false;
        int status = 0, up_status = 0;
        char upstream_note[32] = "";

        rr = http_read_request(c->fd, &c->in, &req, cfg.max_body);
        if (req.have_head)
            reqno = atomic_fetch_add(&stat_requests, 1) + 1;
        if (rr == HTTP_READ_BAD) {
            atomic_fetch_add(&stat_bad_requests, 1);
            send_simple(c, req.bad_status, req.bad_reason, req.bad_code, req.bad_message, false,
                        true, reqno);
            proxy_log("req=%" PRIu64 " conn=%" PRIu64 " %s %s -> %d bad request: %s", reqno, c->id,
                      req.method, req.target, req.bad_status, req.bad_message);
        } else if (rr == HTTP_READ_FAILED && req.have_head) {
            proxy_log("req=%" PRIu64 " conn=%" PRIu64 " %s %s: the client went away mid-request",
                      reqno, c->id, req.method, req.target);
        }
        if (rr != HTTP_READ_OK) {
            http_request_free(&req);
            return;
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rng_init(&rng, cfg.seed, reqno);
        fault = fault_pick(&rng);
        close_after = req.close_after || fault != FAULT_NONE;

        if (fault == FAULT_ERROR && rng_below(&rng, 2) == 0) {
            /* Early error: not forwarded; the connection stays usable. */
            variant = " (early)";
            send_error_fault(c, &req, req.close_after, reqno, &status);
            close_after = req.close_after;
            goto done;
        }
        if (fault == FAULT_ERROR)
            variant = " (late)";
        if (fault == FAULT_DELAY && rng_below(&rng, 2) == 0) {
            variant = " (before)";
            sleep_ms(cfg.delay_ms);
            if (sock_peer_gone(c->fd)) {
                /* Do not run a stale request after the client gave up on it. */
                atomic_fetch_add(&stat_client_gone, 1);
                note = " (client gone, not forwarded)";
                close_after = true;
                goto done;
            }
        } else if (fault == FAULT_DELAY) {
            variant = " (after)";
            delay_after = true;
        }

        if (forward(c, &req, &resp, reqno) < 0) {
            atomic_fetch_add(&stat_upstream_errors, 1);
            status = 502;
            if (fault == FAULT_ERROR) {
                send_error_fault(c, &req, close_after, reqno, &status);
            } else {
                note = " (upstream failed)";
                fault = FAULT_NONE;
                close_after = req.close_after;
                send_simple(c, 502, "Bad Gateway", "BadGateway", "The upstream failed.",
                            req.is_head, close_after, reqno);
            }
            goto done;
        }
        status = resp.status;
        up_status = resp.status;
        if (resp.upstream_short)
            close_after = true;
        if (fault == FAULT_ERROR) {
            send_error_fault(c, &req, close_after, reqno, &status);
            goto done;
        }
        if (delay_after)
            sleep_ms(cfg.delay_ms);
        /* A fault that turns out not to apply still closes: the head says so already. */
        closed = deliver(c, &resp, &fault, &rng, close_after, detail, sizeof detail);
        note = detail;

    done:
        if (fault != FAULT_NONE)
            atomic_fetch_add(&stat_faults[fault], 1);
        if (up_status && up_status != status)
            snprintf(upstream_note, sizeof upstream_note, " (upstream %d)", up_status);
        proxy_log("req=%" PRIu64 " conn=%" PRIu64 " %s %s -> %d%s fault=%s%s%s in=%zu out=%zu "
                  "%ldms",
                  reqno, c->id, req.method, req.target, status, upstream_note,
                  fault_to_string(fault), variant, note, req.body_len, resp.body_len,
                  elapsed_ms(&t0));
        http_request_free(&req);
        http_response_free(&resp);
        if (closed || close_after || atomic_load(&stopping))
            return;
    }
}

static void *conn_thread(void *arg)
{
    struct conn *c = arg;

    conn_serve(c);
    pthread_mutex_lock(&reg_lock);
    slots[c->slot].used = false;
    slots[c->slot].client_fd = -1;
    active--;
    pthread_cond_broadcast(&reg_cond);
    pthread_mutex_unlock(&reg_lock);
    if (c->fd >= 0)
        close(c->fd);
    buf_free(&c->in);
    free(c);
    return NULL;
}

/* ---- setup ---- */

static void parse_hostport(const char *s, const char *what, struct sockaddr_storage *ss,
                           socklen_t *len)
{
    char host[256], port[16];
    const char *colon, *h = s, *end;
    size_t hl, pl;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai;
    int e;

    if (strncmp(s, "http://", 7) == 0)
        h = s + 7;
    end = h + strcspn(h, "/"); /* "http://host:port/" works too */
    colon = memrchr(h, ':', (size_t)(end - h));
    pl = colon ? (size_t)(end - colon - 1) : 0;
    if (!colon || colon == h || pl == 0 || pl >= sizeof port)
        die("%s: expected HOST:PORT, got '%s'", what, s);
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    hl = (size_t)(colon - h);
    if (h[0] == '[' && colon[-1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= sizeof host)
        die("%s: host too long", what);
    memcpy(host, h, hl);
    host[hl] = '\0';
    e = getaddrinfo(host, port, &hints, &ai);
    if (e)
        die("%s: %s: %s", what, s, gai_strerror(e));
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
}

static double parse_rate(const char *s, const char *opt)
{
    char *end;
    double r;

    errno = 0;
    r = strtod(s, &end);
    if (errno || end == s || *end || !(r >= 0 && r <= 1))
        die("%s: expected a probability from 0 to 1, got '%s'", opt, s);
    return r;
}

static uint64_t parse_u64(const char *s, const char *opt, uint64_t max)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-' || v > max)
        die("%s: bad number '%s'", opt, s);
    return v;
}

static void write_port_file(const char *path, unsigned port)
{
    char tmp[4096];
    FILE *f;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        die("--port-file: path too long");
    f = fopen(tmp, "w");
    if (!f)
        die("open: %s: %s", tmp, strerror(errno));
    fprintf(f, "%u\n", port);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0)
        die("write: %s: %s", tmp, strerror(errno));
    if (rename(tmp, path) < 0)
        die("rename: %s -> %s: %s", tmp, path, strerror(errno));
}

static void on_signal(int sig)
{
    int saved = errno;
    char c = (char)sig;

    if (write(signal_pipe[1], &c, 1) < 0) {
        /* nothing to do: the pipe is full, a stop is already pending */
    }
    errno = saved;
}

static void usage(FILE *f)
{
    fputs("Usage: wisp-faultproxy --upstream HOST:PORT [options]\n"
          "An HTTP/1.1 reverse proxy that injects faults, for testing S3 clients.\n"
          "\n"
          "  --listen HOST:PORT      where to listen (default 127.0.0.1:0, any free port)\n"
          "  --upstream HOST:PORT    the real server (http only)\n"
          "  --port-file FILE        write the listening port here (atomically)\n"
          "  --seed N                seed of the fault PRNG (default 0)\n"
          "  --error-rate R          answer 500/503, before or after forwarding\n"
          "  --delay-rate R          sleep --delay-ms before or after forwarding\n"
          "  --delay-ms MS           length of a delay (default 5000)\n"
          "  --reset-rate R          send part of the response, then RST\n"
          "  --truncate-rate R       send part of the body (or of the head), then close\n"
          "  --bad-length-rate R     send a wrong Content-Length or chunk size, then close\n"
          "  --corrupt-rate R        flip one byte of a non-empty body\n"
          "  --log FILE              one line per request (default stderr)\n"
          "  --max-conns N           client connections at once (default 256)\n"
          "  --max-body BYTES        largest request or response body (default 256 MiB)\n"
          "  --help                  this text\n"
          "\n"
          "Rates are probabilities from 0 to 1 per request; at most one fault hits a request.\n"
          "Faults are drawn from splitmix64 over (seed, request number), so a run repeats\n"
          "when its requests arrive in the same order.  SIGTERM or SIGINT stops the proxy,\n"
          "which then prints its counters.\n",
          f);
}

static void parse_args(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_UPSTREAM,
        OPT_PORT_FILE,
        OPT_SEED,
        OPT_ERROR,
        OPT_DELAY,
        OPT_DELAY_MS,
        OPT_RESET,
        OPT_TRUNCATE,
        OPT_BAD_LENGTH,
        OPT_CORRUPT,
        OPT_LOG,
        OPT_MAX_CONNS,
        OPT_MAX_BODY,
        OPT_HELP,
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"upstream", required_argument, NULL, OPT_UPSTREAM},
        {"port-file", required_argument, NULL, OPT_PORT_FILE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"error-rate", required_argument, NULL, OPT_ERROR},
        {"delay-rate", required_argument, NULL, OPT_DELAY},
        {"delay-ms", required_argument, NULL, OPT_DELAY_MS},
        {"reset-rate", required_argument, NULL, OPT_RESET},
        {"truncate-rate", required_argument, NULL, OPT_TRUNCATE},
        {"bad-length-rate", required_argument, NULL, OPT_BAD_LENGTH},
        {"corrupt-rate", required_argument, NULL, OPT_CORRUPT},
        {"log", required_argument, NULL, OPT_LOG},
        {"max-conns", required_argument, NULL, OPT_MAX_CONNS},
        {"max-body", required_argument, NULL, OPT_MAX_BODY},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *listen = "127.0.0.1:0", *upstream = NULL;
    double sum = 0;
    int o;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case OPT_LISTEN:
            listen = optarg;
            break;
        case OPT_UPSTREAM:
            upstream = optarg;
            break;
        case OPT_PORT_FILE:
            cfg.port_file = optarg;
            break;
        case OPT_SEED:
            cfg.seed = parse_u64(optarg, "--seed", UINT64_MAX);
            break;
        case OPT_ERROR:
            cfg.rate[FAULT_ERROR] = parse_rate(optarg, "--error-rate");
            break;
        case OPT_DELAY:
            cfg.rate[FAULT_DELAY] = parse_rate(optarg, "--delay-rate");
            break;
        case OPT_DELAY_MS:
            cfg.delay_ms = (unsigned)parse_u64(optarg, "--delay-ms", 3600 * 1000);
            break;
        case OPT_RESET:
            cfg.rate[FAULT_RESET] = parse_rate(optarg, "--reset-rate");
            break;
        case OPT_TRUNCATE:
            cfg.rate[FAULT_TRUNCATE] = parse_rate(optarg, "--truncate-rate");
            break;
        case OPT_BAD_LENGTH:
            cfg.rate[FAULT_BAD_LENGTH] = parse_rate(optarg, "--bad-length-rate");
            break;
        case OPT_CORRUPT:
            cfg.rate[FAULT_CORRUPT] = parse_rate(optarg, "--corrupt-rate");
            break;
        case OPT_LOG:
            cfg.log_file = optarg;
            break;
        case OPT_MAX_CONNS:
            cfg.max_conns = (unsigned)parse_u64(optarg, "--max-conns", 65536);
            if (cfg.max_conns == 0)
                die("--max-conns: must be at least 1");
            break;
        case OPT_MAX_BODY:
            cfg.max_body = (size_t)parse_u64(optarg, "--max-body", (uint64_t)1 << 34);
            break;
        case OPT_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc)
        die("unexpected argument '%s'", argv[optind]);
    if (!upstream)
        die("--upstream HOST:PORT is required (see --help)");
    for (int f = FAULT_ERROR; f < FAULT__COUNT; f++)
        sum += cfg.rate[f];
    if (sum > 1.0 + 1e-9)
        die("the fault rates add up to %.3f, more than 1", sum);
    parse_hostport(listen, "--listen", &cfg.listen_addr, &cfg.listen_len);
    parse_hostport(upstream, "--upstream", &cfg.upstream_addr, &cfg.upstream_len);
}

/* Listens on --listen.  Returns the fd; *port and host[] say where it listens. */
static int listen_socket(unsigned *port, char *host, size_t host_size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd, one = 1;

    fd = socket(cfg.listen_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&cfg.listen_addr, cfg.listen_len) < 0)
        die("bind: %s", strerror(errno));
    if (listen(fd, 128) < 0)
        die("listen: %s", strerror(errno));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        die("getsockname: %s", strerror(errno));
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    if (getnameinfo((struct sockaddr *)&ss, len, host, (socklen_t)host_size, NULL, 0,
                    NI_NUMERICHOST) != 0)
        snprintf(host, host_size, "?");
    return fd;
}

/* Starts a thread for a new client connection, or refuses it past --max-conns. */
static void accept_one(int lfd, uint64_t id)
{
    pthread_attr_t attr;
    pthread_t th;
    sigset_t all, old;
    struct conn *c;
    unsigned slot;
    int fd, e;

    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            proxy_log("accept: %s", strerror(errno));
        if (errno == EMFILE || errno == ENFILE)
            usleep(100000);
        return;
    }
    atomic_fetch_add(&stat_connections, 1);
    sock_set_timeouts(fd, cfg.idle_timeout_ms);
    pthread_mutex_lock(&reg_lock);
    if (active >= cfg.max_conns) {
        pthread_mutex_unlock(&reg_lock);
        atomic_fetch_add(&stat_refused, 1);
        proxy_log("conn=%" PRIu64 " refused: %u connections already", id, cfg.max_conns);
        close(fd);
        return;
    }
    for (slot = 0; slots[slot].used; slot++)
        ;
    slots[slot] = (struct slot){.used = true, .client_fd = fd, .upstream_fd = -1};
    active++;
    pthread_mutex_unlock(&reg_lock);

    c = calloc(1, sizeof *c);
    if (!c)
        goto fail;
    c->fd = fd;
    c->slot = slot;
    c->id = id;
    /* Only the main thread takes SIGTERM and SIGINT. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    e = pthread_create(&th, &attr, conn_thread, c);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e == 0)
        return;
    proxy_log("pthread_create: %s", strerror(e));
    free(c);
fail:
    pthread_mutex_lock(&reg_lock);
    slots[slot].used = false;
    active--;
    pthread_mutex_unlock(&reg_lock);
    close(fd);
}

/* Wakes every connection thread (shutdown of their sockets) and waits a while for them. */
static void stop_connections(void)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&reg_lock);
    atomic_store(&stopping, true);
    for (unsigned i = 0; i < cfg.max_conns; i++) {
        if (!slots[i].used)
            continue;
        if (slots[i].client_fd >= 0)
            shutdown(slots[i].client_fd, SHUT_RDWR);
        if (slots[i].upstream_fd >= 0)
            shutdown(slots[i].upstream_fd, SHUT_RDWR);
    }
    pthread_cond_broadcast(&reg_cond);
    while (active > 0) {
        if (pthread_cond_timedwait(&reg_cond, &reg_lock, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&reg_lock);
}

static void print_counters(FILE *f)
{
    fprintf(f,
            "wisp-faultproxy: requests=%" PRIuFAST64 " connections=%" PRIuFAST64
            " refused=%" PRIuFAST64 " forwarded=%" PRIuFAST64 " upstream_errors=%" PRIuFAST64
            " bad_requests=%" PRIuFAST64 " client_gone=%" PRIuFAST64,
            atomic_load(&stat_requests), atomic_load(&stat_connections), atomic_load(&stat_refused),
            atomic_load(&stat_forwarded), atomic_load(&stat_upstream_errors),
            atomic_load(&stat_bad_requests), atomic_load(&stat_client_gone));
    for (int i = FAULT_ERROR; i < FAULT__COUNT; i++)
        fprintf(f, " %s=%" PRIuFAST64, fault_to_string((enum fault)i),
                atomic_load(&stat_faults[i]));
    fputc('\n', f);
    fflush(f);
}

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_signal};
    struct pollfd pfd[2];
    uint64_t next_id = 1;
    char host[64];
    unsigned port;
    int lfd;

    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (cfg.log_file) {
        log_fp = fopen(cfg.log_file, "a");
        if (!log_fp)
            die("open: %s: %s", cfg.log_file, strerror(errno));
        setvbuf(log_fp, NULL, _IOLBF, 0);
    }
    slots = calloc(cfg.max_conns, sizeof *slots);
    if (!slots)
        die("out of memory");
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        die("pipe2: %s", strerror(errno));
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    lfd = listen_socket(&port, host, sizeof host);
    if (cfg.port_file)
        write_port_file(cfg.port_file, port);
    if (strchr(host, ':'))
        printf("listening on [%s]:%u\n", host, port);
    else
        printf("listening on %s:%u\n", host, port);
    fflush(stdout);
    proxy_log("listening on port %u, seed %" PRIu64 ", rates error=%g delay=%g (%u ms) reset=%g "
              "truncate=%g bad-length=%g corrupt=%g",
              port, cfg.seed, cfg.rate[FAULT_ERROR], cfg.rate[FAULT_DELAY], cfg.delay_ms,
              cfg.rate[FAULT_RESET], cfg.rate[FAULT_TRUNCATE], cfg.rate[FAULT_BAD_LENGTH],
              cfg.rate[FAULT_CORRUPT]);

    pfd[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    pfd[1] = (struct pollfd){.fd = signal_pipe[0], .events = POLLIN};
    for (;;) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll: %s", strerror(errno));
        }
        if (pfd[1].revents)
            break;
        if (pfd[0].revents & POLLIN)
            accept_one(lfd, next_id++);
    }

    close(lfd);
    stop_connections();
    proxy_log("stopping");
    print_counters(stderr);
    if (log_fp)
        print_counters(log_fp);
    pthread_mutex_lock(&reg_lock);
    if (active == 0) { /* else threads still use them; exit() reclaims everything */
        free(slots);
        if (log_fp)
            fclose(log_fp);
    }
    pthread_mutex_unlock(&reg_lock);
    return 0;
}
