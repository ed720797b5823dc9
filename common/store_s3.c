/* store_s3.c: the S3 backend, on libcurl with CURLOPT_AWS_SIGV4.
 *
 * Connections: a pool of at most max_connections curl easy handles.  Each handle keeps one
 * connection open (CURLOPT_MAXCONNECTS 1) and goes back to the pool after its request, so the
 * connection is reused by the next caller.  A caller that finds every handle busy waits.
 *
 * Signing (libcurl 7.88, see FINDINGS.md): curl signs every header we pass, but does not add
 * x-amz-content-sha256, so each request carries the real SHA-256 of its body; query strings are
 * built already canonical (keys sorted, values percent-encoded), since curl signs them as written.
 *
 * Integrity: a PUT records the body's SHA-256 as x-amz-meta-wisp-sha256.  A whole-object GET is
 * checked against that (or against an MD5 ETag from other writers) and against Content-Length; a
 * ranged GET is checked against Content-Range.  A body that fails a check is retried and never
 * returned.
 *
 * Retries: one loop, s3_perform, retries 5xx, 408, 429, timeouts, connection failures and bad
 * bodies with full-jitter exponential backoff; other answers are final. */
#include "credentials.h"
#include "hash.h"
#include "log.h"
#include "s3_xml.h"
#include "store_impl.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define S3_ERROR_BODY_MAX (64 * 1024)
#define S3_EMPTY_SHA256   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_store {
    struct store_url url;
    struct aws_credentials creds;
    char sigv4[96]; /* "aws:amz:REGION:s3" */
    CURLSH *share;  /* DNS cache shared by all handles */
    pthread_mutex_t share_lock;

    pthread_mutex_t pool_lock; /* protects idle, n_idle, n_handles */
    pthread_cond_t pool_cond;
    CURL **idle;
    size_t n_idle, n_handles;

    /* Conditional create support, probed once: 0 unknown, 1 honoured, -1 not. */
    int conditional_support;
    pthread_mutex_t probe_lock;
    /* A probe that failed (store unreachable) is not repeated for the callers that were
     * already waiting for it: they get its error at once instead of each waiting out their own
     * timeouts.  A caller arriving after the failure probes again. */
    int probe_error;
    struct timespec probe_failed_at;
};

/* A growable byte buffer for bodies of unknown length. */
struct s3_buffer {
    char *data;
    size_t len, cap;
};

static int s3_buffer_reserve(struct s3_buffer *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* One request and what came back. */
struct s3_request {
    const char *method; /* GET, PUT, HEAD, DELETE */
    const char *key;    /* full key, store prefix included; NULL for the bucket itself */
    const char *query;  /* canonical query string, or NULL */
    const char *what;   /* for messages: "GET s3://bucket/key" */

    const void *body; /* PUT */
    size_t body_len;
    const char *body_sha256; /* hex */
    bool if_none_match;

    uint8_t *body_sha256_out; /* a whole GET: receives the checked body's SHA-256 */

    bool ranged; /* GET of [range_offset, range_offset + range_len) into range_buf */
    uint64_t range_offset;
    size_t range_len;
    char *range_buf;

    /* Response, reset before each attempt. */
    long status;
    size_t upload_pos;
    int64_t content_length; /* -1 when absent */
    bool has_content_range;
    uint64_t cr_first, cr_last, cr_total;
    char etag[72];
    char meta_sha256[72];
    struct s3_buffer body_out; /* whole GET, list, and error bodies */
    size_t range_got;
    uint64_t body_seen;             /* bytes of a 2xx body delivered so far */
    bool chunked;                   /* Transfer-Encoding: chunked (curl checks its framing) */
    bool head_complete;             /* the blank line ending the headers arrived */
    struct s3_list_page *list_page; /* a listing: parsed as part of checking the body */
    time_t last_modified;
    bool body_overflow;
    char curl_error[CURL_ERROR_SIZE]; /* curl's detail for a transport failure */
};

static struct s3_store *s3_store_of(struct store *st)
{
    return st->backend;
}

/* ---- curl handle pool ------------------------------------------------------------------ */

static void s3_share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *ctx)
{
    struct s3_store *s3 = ctx;
    pthread_mutex_lock(&s3->share_lock);
}

static void s3_share_unlock(CURL *handle, curl_lock_data data, void *ctx)
{
    struct s3_store *s3 = ctx;
    pthread_mutex_unlock(&s3->share_lock);
}

/* Takes an idle handle, makes a new one while under the bound, or waits for one.  NULL only if
 * curl cannot allocate a handle. */
static CURL *s3_handle_acquire(struct store *st)
{
    struct s3_store *s3 = s3_store_of(st);
    CURL *h = NULL;

    pthread_mutex_lock(&s3->pool_lock);
    while (s3->n_idle == 0 && s3->n_handles >= st->opts.max_connections)
        pthread_cond_wait(&s3->pool_cond, &s3->pool_lock);
    if (s3->n_idle > 0) {
        h = s3->idle[--s3->n_idle];
    } else {
        s3->n_handles++;
        pthread_mutex_unlock(&s3->pool_lock);
        h = curl_easy_init();
        if (h)
            return h;
        pthread_mutex_lock(&s3->pool_lock);
        s3->n_handles--;
        pthread_cond_signal(&s3->pool_cond);
    }
    pthread_mutex_unlock(&s3->pool_lock);
    return h;
}

static void s3_handle_release(struct store *st, CURL *h)
{
    struct s3_store *s3 = s3_store_of(st);

    pthread_mutex_lock(&s3->pool_lock);
    s3->idle[s3->n_idle++] = h;
    pthread_cond_signal(&s3->pool_cond);
    pthread_mutex_unlock(&s3->pool_lock);
}

/* ---- URLs ------------------------------------------------------------------------------- */

/* Percent-encodes s as SigV4 wants query values: everything but A-Za-z0-9-_.~ */
static char *s3_uri_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1), *o = out;

    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* Keys obey store_key_valid (unreserved characters and '/'), so they need no encoding. */
static char *s3_build_url(const struct s3_store *s3, const char *key, const char *query)
{
    const struct store_url *u = &s3->url;
    const char *host = strstr(u->endpoint, "://") + 3;
    size_t scheme_len = (size_t)(host - u->endpoint);
    char *url;
    int n;

    if (u->virtual_style)
        n = asprintf(&url, "%.*s%s.%s/%s%s%s", (int)scheme_len, u->endpoint, u->bucket, host,
                     key ? key : "", query ? "?" : "", query ? query : "");
    else
        n = asprintf(&url, "%s/%s/%s%s%s", u->endpoint, u->bucket, key ? key : "", query ? "?" : "",
                     query ? query : "");
    return n < 0 ? NULL : url;
}

/* ---- curl callbacks --------------------------------------------------------------------- */

static size_t s3_read_body(char *dest, size_t size, size_t nmemb, void *opaque)
{
    struct s3_request *rq = opaque;
    size_t n = size * nmemb, left = rq->body_len - rq->upload_pos;

    if (n > left)
        n = left;
    memcpy(dest, (const char *)rq->body + rq->upload_pos, n);
    rq->upload_pos += n;
    return n;
}

static int s3_seek_body(void *opaque, curl_off_t offset, int origin)
{
    struct s3_request *rq = opaque;

    if (origin != SEEK_SET || offset < 0 || (size_t)offset > rq->body_len)
        return CURL_SEEKFUNC_FAIL;
    rq->upload_pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t s3_write_body(char *src, size_t size, size_t nmemb, void *opaque)
{
    struct s3_request *rq = opaque;
    size_t n = size * nmemb;

    if (rq->status < 200 || rq->status >= 300 || !rq->ranged) {
        /* Error bodies are only read for their message: keep them small. */
        if (rq->status >= 300 && rq->body_out.len + n > S3_ERROR_BODY_MAX)
            return n;
        if (s3_buffer_reserve(&rq->body_out, n) < 0)
            return 0;
        memcpy(rq->body_out.data + rq->body_out.len, src, n);
        rq->body_out.len += n;
        return n;
    }

    /* A ranged GET answered 200 sends the whole object: keep only the range. */
    uint64_t pos = rq->body_seen;
    rq->body_seen += n;
    if (rq->status == 200) {
        uint64_t lo = pos > rq->range_offset ? pos : rq->range_offset;
        uint64_t hi = rq->range_offset + rq->range_len;
        if (pos + n < hi)
            hi = pos + n;
        if (lo < hi) {
            memcpy(rq->range_buf + (lo - rq->range_offset), src + (lo - pos), hi - lo);
            rq->range_got = (size_t)(hi - rq->range_offset);
        }
        return n;
    }
    if (rq->range_got + n > rq->range_len) {
        rq->body_overflow = true;
        return 0; /* more than we asked for: abort, the attempt is retried */
    }
    memcpy(rq->range_buf + rq->range_got, src, n);
    rq->range_got += n;
    return n;
}

static void s3_copy_header_value(char *dest, size_t dest_size, const char *value, size_t len)
{
    while (len > 0 && (value[len - 1] == '\r' || value[len - 1] == '\n' || value[len - 1] == ' '))
        len--;
    while (len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        len--;
    }
    if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
        value++;
        len -= 2;
    }
    if (len >= dest_size)
        len = dest_size - 1;
    memcpy(dest, value, len);
    dest[len] = '\0';
}

static bool s3_header_is(const char *line, size_t len, const char *name, const char **value,
                         size_t *value_len)
{
    size_t n = strlen(name);

    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
        return false;
    *value = line + n + 1;
    *value_len = len - n - 1;
    return true;
}

static size_t s3_read_header(char *line, size_t size, size_t nmemb, void *opaque)
{
    struct s3_request *rq = opaque;
    size_t len = size * nmemb;
    const char *v;
    size_t vlen;
    char tmp[128];

    if (len > 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* A new status line (after 100 Continue, say) starts the headers afresh. */
        const char *sp = memchr(line, ' ', len);
        rq->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        rq->content_length = -1;
        rq->chunked = false;
        rq->head_complete = false;
        rq->has_content_range = false;
        rq->etag[0] = rq->meta_sha256[0] = '\0';
    } else if ((len == 2 && line[0] == '\r' && line[1] == '\n') || (len == 1 && line[0] == '\n')) {
        rq->head_complete = true;
    } else if (s3_header_is(line, len, "content-length", &v, &vlen)) {
        s3_copy_header_value(tmp, sizeof tmp, v, vlen);
        char *end;
        errno = 0;
        long long cl = strtoll(tmp, &end, 10);
        rq->content_length = (errno || *end || cl < 0 || end == tmp) ? -2 : cl;
        /* Size a whole-object body's buffer once, rather than doubling into twice its size. */
        if (rq->status >= 200 && rq->status < 300 && !rq->ranged && rq->content_length > 0 &&
            rq->content_length <= (64LL << 20) && rq->body_out.cap == 0) {
            rq->body_out.data = malloc((size_t)rq->content_length + 1);
            if (rq->body_out.data)
                rq->body_out.cap = (size_t)rq->content_length + 1;
        }
    } else if (s3_header_is(line, len, "content-range", &v, &vlen)) {
        unsigned long long a, b, t;
        s3_copy_header_value(tmp, sizeof tmp, v, vlen);
        if (sscanf(tmp, "bytes %llu-%llu/%llu", &a, &b, &t) == 3) {
            rq->has_content_range = true;
            rq->cr_first = a;
            rq->cr_last = b;
            rq->cr_total = t;
        }
    } else if (s3_header_is(line, len, "transfer-encoding", &v, &vlen)) {
        s3_copy_header_value(tmp, sizeof tmp, v, vlen);
        rq->chunked = strcasestr(tmp, "chunked") != NULL;
    } else if (s3_header_is(line, len, "last-modified", &v, &vlen)) {
        s3_copy_header_value(tmp, sizeof tmp, v, vlen);
        time_t t = curl_getdate(tmp, NULL);
        rq->last_modified = t > 0 ? t : 0;
    } else if (s3_header_is(line, len, "etag", &v, &vlen)) {
        s3_copy_header_value(rq->etag, sizeof rq->etag, v, vlen);
    } else if (s3_header_is(line, len, "x-amz-meta-wisp-sha256", &v, &vlen)) {
        s3_copy_header_value(rq->meta_sha256, sizeof rq->meta_sha256, v, vlen);
    }
    return len;
}

/* ---- one attempt, and the retry loop ---------------------------------------------------- */

enum s3_outcome {
    S3_DONE,  /* an answer to act on: see rq->status */
    S3_RETRY, /* transient: try again */
    S3_FAIL,  /* final failure, *err set */
};

static void s3_request_reset(struct s3_request *rq)
{
    rq->status = 0;
    rq->upload_pos = 0;
    rq->content_length = -1;
    rq->chunked = false;
    rq->head_complete = false;
    rq->has_content_range = false;
    rq->etag[0] = rq->meta_sha256[0] = '\0';
    rq->body_out.len = 0;
    rq->range_got = 0;
    rq->body_seen = 0;
    rq->last_modified = 0;
    rq->body_overflow = false;
}

static bool s3_is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

/* Checks a 2xx body against the length and checksum the store announced.  Returns NULL when it
 * is sound, or what is wrong with it. */
static const char *s3_body_problem(struct s3_request *rq, char *why, size_t why_size)
{
    /* libcurl takes a connection closed inside the headers for their end: then any header may
     * be missing, so nothing they say can be trusted. */
    if (!rq->head_complete)
        return "the answer's headers were cut short";
    /* A HEAD is only worth its headers: without the size, ask again. */
    if (strcmp(rq->method, "HEAD") == 0)
        return rq->content_length < 0 ? "no Content-Length in the answer" : NULL;
    if (strcmp(rq->method, "GET") != 0)
        return NULL;
    if (rq->body_overflow)
        return "the store sent more bytes than the range asked for";
    if (rq->ranged) {
        if (rq->status == 206) {
            if (!rq->has_content_range)
                return "a 206 answer without Content-Range";
            if (rq->cr_first != rq->range_offset || rq->cr_last < rq->cr_first ||
                rq->cr_last - rq->cr_first >= rq->range_len)
                return "Content-Range does not match the range asked for";
            if (rq->range_got != rq->cr_last - rq->cr_first + 1) {
                snprintf(why, why_size, "short body: %zu of %llu bytes", rq->range_got,
                         (unsigned long long)(rq->cr_last - rq->cr_first + 1));
                return why;
            }
        } else {
            /* 200: the whole object came, of which we kept the slice in range. */
            if (rq->content_length >= 0 && (uint64_t)rq->content_length != rq->body_seen)
                return "short body";
        }
        return NULL;
    }
    if (rq->content_length == -2)
        return "a malformed Content-Length";
    /* S3 always sends the length of an object or listing.  Without it the body ends where the
     * connection did, which may be anywhere. */
    if (rq->content_length < 0 && !rq->chunked)
        return "no Content-Length in the answer";
    if (rq->content_length >= 0 && (uint64_t)rq->content_length != rq->body_out.len) {
        snprintf(why, why_size, "body of %zu bytes where Content-Length said %lld",
                 rq->body_out.len, (long long)rq->content_length);
        return why;
    }
    if (rq->list_page) {
        /* A listing has no checksum: a body that does not parse is the sign of damage. */
        const char *bad;
        s3_list_page_free(rq->list_page);
        if (s3_xml_parse_list(rq->body_out.data, rq->body_out.len, rq->list_page, &bad) < 0) {
            memset(rq->list_page, 0, sizeof *rq->list_page);
            snprintf(why, why_size, "a listing that does not parse: %s", bad);
            return why;
        }
        return NULL;
    }
    if (!rq->key)
        return NULL;
    /* The SHA-256 is computed at most once, for the check and for a caller that wants it. */
    uint8_t sha[HASH_SHA256_LEN];
    bool have_sha = false;
    if (s3_is_hex(rq->meta_sha256, 64) || rq->body_sha256_out) {
        if (hash_sha256(rq->body_out.data, rq->body_out.len, sha) < 0)
            return "out of memory while hashing";
        have_sha = true;
    }
    if (s3_is_hex(rq->meta_sha256, 64)) {
        char got[HASH_SHA256_HEX_LEN + 1];
        hash_to_hex(sha, sizeof sha, got);
        if (strcasecmp(got, rq->meta_sha256) != 0)
            return "the body does not match its recorded SHA-256";
    } else if (s3_is_hex(rq->etag, 32)) {
        /* An ETag of 32 hex digits is the MD5 of a single-part upload. */
        char got[33];
        if (hash_md5_hex(rq->body_out.data, rq->body_out.len, got) < 0)
            return "out of memory while hashing";
        if (strcasecmp(got, rq->etag) != 0)
            return "the body does not match its ETag (MD5)";
    } else if (!rq->etag[0]) {
        return "no ETag or checksum in the answer"; /* S3 always sends an ETag */
    }
    if (have_sha && rq->body_sha256_out)
        memcpy(rq->body_sha256_out, sha, sizeof sha);
    return NULL;
}

static bool s3_curl_error_transient(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_WRITE_ERROR: /* our callback refused an oversized body */
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_AGAIN:
        return true;
    default:
        return false;
    }
}

static bool s3_status_transient(long status)
{
    return status >= 500 || status == 408 || status == 429;
}

/* A transfer of a thread whose work must give way stops (store_set_thread_cancel). */
static int s3_progress(void *opaque, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)opaque, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return store_thread_cancelled() ? 1 : 0;
}

/* Runs one attempt on handle h. */
static CURLcode s3_attempt(struct store *st, CURL *h, struct s3_request *rq, const char *url,
                           struct curl_slist *headers)
{
    struct s3_store *s3 = s3_store_of(st);

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_SHARE, s3->share);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_MAXCONNECTS, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, st->opts.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, st->opts.request_timeout_ms);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s3->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, s3->creds.access_key);
    curl_easy_setopt(h, CURLOPT_PASSWORD, s3->creds.secret_key);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, s3_read_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, rq);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s3_write_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, rq);
    /* curl's 16 KiB default makes a 4 MiB GET cost hundreds of recv calls. */
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, rq->curl_error);
    rq->curl_error[0] = '\0';
    if (store_thread_cancellable()) { /* the callback costs a call per transfer step */
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, s3_progress);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    if (strcmp(rq->method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)rq->body_len);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, s3_read_body);
        curl_easy_setopt(h, CURLOPT_READDATA, rq);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, s3_seek_body);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, rq);
    } else if (strcmp(rq->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(rq->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    s3_request_reset(rq);
    store_count(&st->stats.requests, 1);
    CURLcode c = curl_easy_perform(h);
    long new_connections = 0;
    if (curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &new_connections) == CURLE_OK)
        store_count(&st->stats.connections, (uint64_t)new_connections);
    return c;
}

static struct curl_slist *s3_build_headers(struct store *st, const struct s3_request *rq)
{
    struct s3_store *s3 = s3_store_of(st);
    struct curl_slist *list = NULL, *next;
    char line[256];

#define S3_APPEND(...)                                                                             \
    do {                                                                                           \
        snprintf(line, sizeof line, __VA_ARGS__);                                                  \
        next = curl_slist_append(list, line);                                                      \
        if (!next)                                                                                 \
            goto fail;                                                                             \
        list = next;                                                                               \
    } while (0)

    S3_APPEND("x-amz-content-sha256: %s", rq->body_sha256 ? rq->body_sha256 : S3_EMPTY_SHA256);
    if (rq->body_sha256 && rq->key)
        S3_APPEND("x-amz-meta-wisp-sha256: %s", rq->body_sha256);
    if (rq->if_none_match)
        S3_APPEND("If-None-Match: *");
    if (rq->ranged)
        S3_APPEND("Range: bytes=%llu-%llu", (unsigned long long)rq->range_offset,
                  (unsigned long long)(rq->range_offset + rq->range_len - 1));
    if (s3->creds.session_token) {
        /* Tokens are long: build this line separately. */
        char *token_line;
        if (asprintf(&token_line, "x-amz-security-token: %s", s3->creds.session_token) < 0)
            goto fail;
        next = curl_slist_append(list, token_line);
        free(token_line);
        if (!next)
            goto fail;
        list = next;
    }
    return list;
#undef S3_APPEND
fail:
    curl_slist_free_all(list);
    return NULL;
}

/* Turns a final non-2xx answer into an errno and a message naming what and where. */
static int s3_status_error(struct store *st, struct s3_request *rq)
{
    char code[64], message[256];
    int err;

    if (s3_xml_parse_error(rq->body_out.data, rq->body_out.len, code, sizeof code, message,
                           sizeof message) < 0) {
        code[0] = '\0';
        message[0] = '\0';
    }
    switch (rq->status) {
    case 404:
        err = -ENOENT;
        break;
    case 403:
    case 401:
        err = -EACCES;
        break;
    case 412:
        err = -EEXIST;
        break;
    case 501:
        err = -ENOTSUP;
        break;
    case 400:
        err = -EINVAL;
        break;
    default:
        err = rq->status == 408 || rq->status == 504 ? -ETIMEDOUT : -EIO;
        break;
    }
    if (rq->status == 403 || rq->status == 401)
        return store_fail(st, err,
                          "%s at %s: HTTP %ld %s%s%s: check the access key and secret "
                          "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the credentials file) and "
                          "the bucket's permissions",
                          rq->what, s3_store_of(st)->url.endpoint, rq->status, code,
                          *message ? ": " : "", message);
    return store_fail(st, err, "%s at %s: HTTP %ld %s%s%s%s", rq->what,
                      s3_store_of(st)->url.endpoint, rq->status, code, *message ? ": " : "",
                      message, s3_status_transient(rq->status) ? " (after every retry)" : "");
}

/* Performs rq with retries.  Returns 0 with rq->status set to the final HTTP status (which may
 * be any non-transient code, or a transient one if attempts ran out: callers check), or a
 * negative errno for transport failures that outlasted every attempt. */
static int s3_perform(struct store *st, struct s3_request *rq)
{
    struct s3_store *s3 = s3_store_of(st);
    struct curl_slist *headers = s3_build_headers(st, rq);
    char *url = s3_build_url(s3, rq->key, rq->query);
    char why_buf[128];
    const char *problem = NULL;
    CURLcode c = CURLE_OK;
    unsigned attempt;
    CURL *h;
    int r = 0;

    if (!headers || !url || !(h = s3_handle_acquire(st))) {
        curl_slist_free_all(headers);
        free(url);
        return store_fail(st, -ENOMEM, "%s: out of memory", rq->what);
    }
    bool cancelled = false;
    for (attempt = 1; attempt <= st->opts.max_attempts; attempt++) {
        if (attempt > 1) {
            store_count(&st->stats.retries, 1);
            store_backoff_sleep(st, attempt - 1);
        }
        if ((cancelled = store_thread_cancelled()))
            break;
        c = s3_attempt(st, h, rq, url, headers);
        if (c == CURLE_ABORTED_BY_CALLBACK && (cancelled = store_thread_cancelled()))
            break;
        problem = NULL;
        if (c == CURLE_OK) {
            if (rq->body)
                store_count(&st->stats.bytes_sent, rq->body_len);
            store_count(&st->stats.bytes_received, rq->body_out.len + rq->range_got);
            if (s3_status_transient(rq->status)) {
                log_debug("s3", "%s: HTTP %ld, attempt %u of %u", rq->what, rq->status, attempt,
                          st->opts.max_attempts);
                continue;
            }
            if (rq->status >= 200 && rq->status < 300 &&
                (problem = s3_body_problem(rq, why_buf, sizeof why_buf))) {
                log_info("s3", "%s: %s, attempt %u of %u", rq->what, problem, attempt,
                         st->opts.max_attempts);
                continue;
            }
            break;
        }
        if (rq->body_overflow)
            problem = "the store sent more bytes than the range asked for";
        log_debug("s3", "%s: %s, attempt %u of %u", rq->what, curl_easy_strerror(c), attempt,
                  st->opts.max_attempts);
        if (!s3_curl_error_transient(c))
            break;
    }
    if (attempt > st->opts.max_attempts)
        attempt = st->opts.max_attempts;

    if (cancelled) {
        r = store_fail(st, -ECANCELED, "%s: given up for a request someone waits for", rq->what);
    } else if (c != CURLE_OK) {
        int err = c == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : problem ? -EBADMSG : -EIO;
        r = store_fail(st, err, "%s at %s: %s%s%s (%u attempt%s)", rq->what, s3->url.endpoint,
                       rq->curl_error[0] ? rq->curl_error : curl_easy_strerror(c),
                       problem ? ": " : "", problem ? problem : "", attempt,
                       attempt == 1 ? "" : "s");
    } else if (problem) {
        r = store_fail(st, -EBADMSG, "%s at %s: %s (%u attempts)", rq->what, s3->url.endpoint,
                       problem, attempt);
    }
    s3_handle_release(st, h);
    curl_slist_free_all(headers);
    free(url);
    return r;
}

/* ---- operations ------------------------------------------------------------------------- */

static char *s3_full_key(const struct s3_store *s3, const char *key)
{
    char *full;

    return asprintf(&full, "%s%s", s3->url.prefix, key) < 0 ? NULL : full;
}

/* Sets up rq for an operation on key; frees with s3_request_done. */
static int s3_request_init(struct store *st, struct s3_request *rq, const char *method,
                           const char *key, char **full_key, char **what)
{
    struct s3_store *s3 = s3_store_of(st);

    memset(rq, 0, sizeof *rq);
    *full_key = s3_full_key(s3, key);
    if (!*full_key || asprintf(what, "%s s3://%s/%s", method, s3->url.bucket, *full_key) < 0) {
        free(*full_key);
        return store_fail(st, -ENOMEM, "%s %s: out of memory", method, key);
    }
    rq->method = method;
    rq->key = *full_key;
    rq->what = *what;
    return 0;
}

static void s3_request_done(struct s3_request *rq, char *full_key, char *what)
{
    free(rq->body_out.data);
    free(full_key);
    free(what);
}

static int s3_put_once(struct store *st, const char *key, const void *data, size_t len,
                       const char *sha256, bool if_absent)
{
    struct s3_request rq;
    char *full_key, *what;
    int r = s3_request_init(st, &rq, "PUT", key, &full_key, &what);

    if (r < 0)
        return r;
    rq.body = data;
    rq.body_len = len;
    rq.body_sha256 = sha256;
    rq.if_none_match = if_absent;
    r = s3_perform(st, &rq);
    if (r == 0 && (rq.status < 200 || rq.status >= 300)) {
        if (rq.status == 412 && if_absent)
            r = store_fail(st, -EEXIST, "%s: the object exists", what);
        else if (rq.status == 501 && if_absent)
            r = store_fail(st, -ENOTSUP,
                           "%s at %s: the store does not support conditional create "
                           "(If-None-Match answered 501)",
                           what, s3_store_of(st)->url.endpoint);
        else
            r = s3_status_error(st, &rq);
    }
    s3_request_done(&rq, full_key, what);
    return r;
}

static int s3_head(struct store *st, const char *key, struct store_stat *out);

/* Whether the store honours If-None-Match: *, found once by trying it: create a probe object,
 * then create it again, which must be refused. */
static int s3_probe_conditional(struct store *st)
{
    struct s3_store *s3 = s3_store_of(st);
    char key[96], sha[HASH_SHA256_HEX_LEN + 1];
    uint64_t nonce = 0;
    int r;

    struct timespec arrived;
    clock_gettime(CLOCK_MONOTONIC, &arrived);
    pthread_mutex_lock(&s3->probe_lock);
    if (s3->conditional_support != 0) {
        r = s3->conditional_support;
        pthread_mutex_unlock(&s3->probe_lock);
        return r;
    }
    if (s3->probe_error < 0) {
        bool failed_while_waiting = s3->probe_failed_at.tv_sec > arrived.tv_sec ||
                                    (s3->probe_failed_at.tv_sec == arrived.tv_sec &&
                                     s3->probe_failed_at.tv_nsec >= arrived.tv_nsec);
        if (failed_while_waiting) {
            r = s3->probe_error;
            pthread_mutex_unlock(&s3->probe_lock);
            return store_fail(st, r,
                              "PUT on %s: the store did not answer the probe this request "
                              "waited for",
                              st->description);
        }
    }
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
        nonce = (uint64_t)time(NULL);
    snprintf(key, sizeof key, "wisp-probe/conditional-%016llx", (unsigned long long)nonce);
    r = hash_sha256_hex(key, strlen(key), sha);
    if (r == 0)
        r = s3_put_once(st, key, key, strlen(key), sha, true);
    /* The key is ours alone, so "exists" means a retry met our own first attempt. */
    if (r == -EEXIST)
        r = 0;
    if (r == 0) {
        r = s3_put_once(st, key, key, strlen(key), sha, true);
        if (r == -EEXIST) {
            s3->conditional_support = 1;
        } else if (r == 0) {
            s3->conditional_support = -1;
            log_warn("s3", "%s ignores If-None-Match: conditional create is not available",
                     st->description);
        }
        if (r == 0 || r == -EEXIST) {
            r = s3->conditional_support;
            struct s3_request rq;
            char *full_key, *what;
            if (s3_request_init(st, &rq, "DELETE", key, &full_key, &what) == 0) {
                s3_perform(st, &rq);
                s3_request_done(&rq, full_key, what);
            }
        }
    } else if (r == -ENOTSUP) {
        s3->conditional_support = -1;
        r = -1;
    }
    s3->probe_error = r < -1 ? r : 0;
    if (r < -1)
        clock_gettime(CLOCK_MONOTONIC, &s3->probe_failed_at);
    pthread_mutex_unlock(&s3->probe_lock);
    return r;
}

static int s3_put(struct store *st, const char *key, const void *data, size_t len,
                  const uint8_t *sha256, bool if_absent)
{
    char sha[HASH_SHA256_HEX_LEN + 1];
    int r;

    if (sha256)
        hash_to_hex(sha256, HASH_SHA256_LEN, sha);
    else if (hash_sha256_hex(data, len, sha) < 0)
        return store_fail(st, -ENOMEM, "PUT %s: out of memory while hashing", key);
    if (!if_absent)
        return s3_put_once(st, key, data, len, sha, false);

    r = s3_probe_conditional(st);
    if (r < 0 && r != -1)
        return r;
    if (r == -1)
        return store_fail(st, -ENOTSUP,
                          "PUT %s on %s: the store does not honour conditional create "
                          "(If-None-Match: *), so it cannot be used where Wisp needs it",
                          key, st->description);

    r = s3_put_once(st, key, data, len, sha, true);
    if (r == -EEXIST) {
        /* A retry of our own PUT whose first answer was lost meets the object it created:
         * that is success, recognised by the content hash recorded with it. */
        struct store_stat sb;
        if (s3_head(st, key, &sb) == 0 && sb.size == len && strcmp(sb.sha256, sha) == 0) {
            store_note_existing(&sb); /* maybe another writer's, maybe old: GC needs to know */
            return 0;
        }
        return store_fail(st, -EEXIST, "PUT %s on %s: the object exists", key, st->description);
    }
    return r;
}

static int s3_get(struct store *st, const char *key, void **data, size_t *len, uint8_t *sha256)
{
    struct s3_request rq;
    char *full_key, *what;
    int r = s3_request_init(st, &rq, "GET", key, &full_key, &what);

    if (r < 0)
        return r;
    rq.body_sha256_out = sha256;
    r = s3_perform(st, &rq);
    if (r == 0 && rq.status != 200)
        r = s3_status_error(st, &rq);
    if (r == 0) {
        if (s3_buffer_reserve(&rq.body_out, 0) < 0) {
            r = store_fail(st, -ENOMEM, "%s: out of memory", what);
        } else {
            *data = rq.body_out.data;
            *len = rq.body_out.len;
            rq.body_out.data = NULL;
        }
    }
    s3_request_done(&rq, full_key, what);
    return r;
}

static int s3_get_range(struct store *st, const char *key, uint64_t offset, void *buf, size_t len,
                        size_t *got)
{
    struct s3_request rq;
    char *full_key, *what;
    int r = s3_request_init(st, &rq, "GET", key, &full_key, &what);

    if (r < 0)
        return r;
    rq.ranged = true;
    rq.range_offset = offset;
    rq.range_len = len;
    rq.range_buf = buf;
    r = s3_perform(st, &rq);
    if (r == 0) {
        if (rq.status == 206 || rq.status == 200)
            *got = rq.range_got;
        else if (rq.status == 416)
            *got = 0; /* the range starts at or past the end */
        else
            r = s3_status_error(st, &rq);
    }
    s3_request_done(&rq, full_key, what);
    return r;
}

static int s3_head(struct store *st, const char *key, struct store_stat *out)
{
    struct s3_request rq;
    char *full_key, *what;
    int r = s3_request_init(st, &rq, "HEAD", key, &full_key, &what);

    if (r < 0)
        return r;
    r = s3_perform(st, &rq);
    if (r == 0 && rq.status != 200)
        r = s3_status_error(st, &rq);
    if (r == 0) {
        if (rq.content_length < 0) {
            r = store_fail(st, -EBADMSG, "%s: no Content-Length in the answer", what);
        } else {
            out->size = (uint64_t)rq.content_length;
            snprintf(out->etag, sizeof out->etag, "%s", rq.etag);
            if (s3_is_hex(rq.meta_sha256, 64))
                memcpy(out->sha256, rq.meta_sha256, 65);
            out->mtime = rq.last_modified;
        }
    }
    s3_request_done(&rq, full_key, what);
    return r;
}

static int s3_delete(struct store *st, const char *key)
{
    struct s3_request rq;
    char *full_key, *what;
    int r = s3_request_init(st, &rq, "DELETE", key, &full_key, &what);

    if (r < 0)
        return r;
    r = s3_perform(st, &rq);
    if (r == 0 && rq.status != 204 && rq.status != 200 && rq.status != 404)
        r = s3_status_error(st, &rq);
    s3_request_done(&rq, full_key, what);
    return r;
}

static int s3_list(struct store *st, const char *prefix, store_list_fn fn, void *opaque)
{
    struct s3_store *s3 = s3_store_of(st);
    size_t strip = strlen(s3->url.prefix);
    char *token = NULL, *full_prefix = NULL, *enc_prefix = NULL, *what = NULL;
    int r = 0;

    full_prefix = s3_full_key(s3, prefix);
    enc_prefix = full_prefix ? s3_uri_encode(full_prefix) : NULL;
    if (!enc_prefix || asprintf(&what, "LIST s3://%s/%s", s3->url.bucket, full_prefix) < 0) {
        what = NULL;
        r = store_fail(st, -ENOMEM, "list: out of memory");
        goto out;
    }
    do {
        struct s3_request rq = {.method = "GET", .what = what};
        struct s3_list_page page;
        char *enc_token = token ? s3_uri_encode(token) : NULL;
        char *query;

        /* Canonical order: continuation-token, list-type, prefix. */
        if ((token && !enc_token) ||
            asprintf(&query, "%s%s%slist-type=2&prefix=%s", token ? "continuation-token=" : "",
                     token ? enc_token : "", token ? "&" : "", enc_prefix) < 0) {
            free(enc_token);
            r = store_fail(st, -ENOMEM, "list: out of memory");
            break;
        }
        free(enc_token);
        rq.query = query;
        rq.list_page = &page;
        memset(&page, 0, sizeof page);
        r = s3_perform(st, &rq);
        if (r == 0 && rq.status != 200)
            r = s3_status_error(st, &rq);
        free(rq.body_out.data);
        free(query);
        if (r < 0) {
            s3_list_page_free(&page);
            break;
        }
        for (size_t i = 0; i < page.n_entries && r == 0; i++) {
            const char *k = page.entries[i].key;
            if (strncmp(k, s3->url.prefix, strip) != 0)
                continue; /* not ours: cannot happen with a correct store */
            r = fn(k + strip, page.entries[i].size, page.entries[i].mtime, opaque);
        }
        free(token);
        token = NULL;
        if (r == 0 && page.truncated) {
            token = strdup(page.next_token);
            if (!token)
                r = store_fail(st, -ENOMEM, "list: out of memory");
        }
        s3_list_page_free(&page);
    } while (r == 0 && token);
out:
    free(token);
    free(full_prefix);
    free(enc_prefix);
    free(what);
    return r;
}

static void s3_close(struct store *st)
{
    struct s3_store *s3 = s3_store_of(st);

    if (!s3)
        return;
    for (size_t i = 0; i < s3->n_idle; i++)
        curl_easy_cleanup(s3->idle[i]);
    free(s3->idle);
    if (s3->share)
        curl_share_cleanup(s3->share);
    pthread_mutex_destroy(&s3->share_lock);
    pthread_mutex_destroy(&s3->pool_lock);
    pthread_mutex_destroy(&s3->probe_lock);
    pthread_cond_destroy(&s3->pool_cond);
    aws_credentials_free(&s3->creds);
    store_url_free(&s3->url);
    free(s3);
    st->backend = NULL;
}

static const struct store_backend_ops s3_store_ops = {
    .name = "s3",
    .put = s3_put,
    .get = s3_get,
    .get_range = s3_get_range,
    .head = s3_head,
    .delete = s3_delete,
    .list = s3_list,
    .close = s3_close,
};

static pthread_once_t s3_curl_once = PTHREAD_ONCE_INIT;
static CURLcode s3_curl_init_result;

static void s3_curl_global_init(void)
{
    s3_curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int store_s3_open(struct store *st, const struct store_url *url)
{
    struct s3_store *s3;
    char err[256];
    int r;

    pthread_once(&s3_curl_once, s3_curl_global_init);
    if (s3_curl_init_result != CURLE_OK)
        return store_fail(NULL, -EIO, "libcurl: %s", curl_easy_strerror(s3_curl_init_result));

    s3 = calloc(1, sizeof *s3);
    if (!s3)
        return store_fail(NULL, -ENOMEM, "s3 store: out of memory");
    pthread_mutex_init(&s3->share_lock, NULL);
    pthread_mutex_init(&s3->pool_lock, NULL);
    pthread_mutex_init(&s3->probe_lock, NULL);
    pthread_cond_init(&s3->pool_cond, NULL);
    st->ops = &s3_store_ops;
    st->backend = s3;

    s3->url.scheme = STORE_URL_S3;
    s3->url.bucket = strdup(url->bucket);
    s3->url.prefix = strdup(url->prefix);
    s3->url.endpoint = strdup(url->endpoint);
    s3->url.region = strdup(url->region);
    s3->url.virtual_style = url->virtual_style;
    s3->idle = calloc(st->opts.max_connections, sizeof *s3->idle);
    s3->share = curl_share_init();
    if (!s3->url.bucket || !s3->url.prefix || !s3->url.endpoint || !s3->url.region || !s3->idle ||
        !s3->share ||
        asprintf(&st->description, "s3://%s/%s at %s", url->bucket, url->prefix, url->endpoint) <
            0) {
        st->description = NULL;
        s3_close(st);
        return store_fail(NULL, -ENOMEM, "s3 store: out of memory");
    }
    curl_share_setopt(s3->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(s3->share, CURLSHOPT_LOCKFUNC, s3_share_lock);
    curl_share_setopt(s3->share, CURLSHOPT_UNLOCKFUNC, s3_share_unlock);
    curl_share_setopt(s3->share, CURLSHOPT_USERDATA, s3);
    snprintf(s3->sigv4, sizeof s3->sigv4, "aws:amz:%s:s3", url->region);

    r = aws_credentials_load(st->opts.credentials_file, st->opts.profile, &s3->creds, err,
                             sizeof err);
    if (r < 0) {
        s3_close(st);
        return store_fail(NULL, r, "s3://%s: credentials: %s", url->bucket, err);
    }
    return 0;
}
