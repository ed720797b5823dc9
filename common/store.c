/* store.c: the store front end: argument checks, dispatch to a backend, counters and the
 * per-thread last error. */
#include "store_impl.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static __thread char store_error_message[1024];

const char *store_last_error(void)
{
    return store_error_message;
}

int store_fail(struct store *st, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(store_error_message, sizeof store_error_message, fmt, ap);
    va_end(ap);
    /* "Not found" and "exists" are answers callers expect and handle, and a cancelled request
     * (store_set_thread_cancel) was given up on purpose; the rest are failures an operator
     * should see. */
    if (err == -ENOENT || err == -EEXIST || err == -ECANCELED)
        log_debug("store", "%s", store_error_message);
    else
        log_warn("store", "%s", store_error_message);
    if (st && err != -ECANCELED)
        store_count(&st->stats.failures, 1);
    return err;
}

void store_options_init(struct store_options *opts)
{
    *opts = (struct store_options){
        .connect_timeout_ms = 5000,
        .request_timeout_ms = 30000,
        .max_attempts = 6,
        .backoff_base_ms = 100,
        .backoff_max_ms = 5000,
        .max_connections = 16,
    };
}

void store_backoff_sleep(const struct store *st, unsigned attempt)
{
    uint64_t cap = st->opts.backoff_base_ms;
    uint32_t random;
    struct timespec ts;

    for (unsigned i = 1; i < attempt && cap < st->opts.backoff_max_ms; i++)
        cap *= 2;
    if (cap > st->opts.backoff_max_ms)
        cap = st->opts.backoff_max_ms;
    if (cap == 0)
        return;
    if (getrandom(&random, sizeof random, GRND_NONBLOCK) != sizeof random)
        random = (uint32_t)time(NULL) * 2654435761u;
    uint64_t ms = random % (cap + 1);
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

int store_open(const char *url, const struct store_options *opts, struct store **out)
{
    struct store_url parsed;
    const char *why;
    struct store *st;
    int r;

    *out = NULL;
    store_error_message[0] = '\0';
    r = store_url_parse(url, &parsed, &why);
    if (r < 0)
        return store_fail(NULL, r, "store URL '%s': %s", url, why);

    st = calloc(1, sizeof *st);
    if (!st) {
        store_url_free(&parsed);
        return store_fail(NULL, -ENOMEM, "store: out of memory");
    }
    if (opts)
        st->opts = *opts;
    else
        store_options_init(&st->opts);
    if (st->opts.max_attempts == 0)
        st->opts.max_attempts = 1;
    if (st->opts.max_connections == 0)
        st->opts.max_connections = 1;

    r = parsed.scheme == STORE_URL_FILE ? store_file_open(st, &parsed) : store_s3_open(st, &parsed);
    store_url_free(&parsed);
    if (r < 0) {
        free(st->description);
        free(st);
        return r;
    }
    *out = st;
    return 0;
}

void store_close(struct store *st)
{
    if (!st)
        return;
    st->ops->close(st);
    free(st->description);
    free(st);
}

const char *store_describe(const struct store *st)
{
    return st->description;
}

bool store_key_valid(const char *key, const char **why)
{
    size_t len = key ? strlen(key) : 0;
    const char *component = key;

    if (len == 0 || len > 1024) {
        *why = "a key must be 1 to 1024 bytes long";
        return false;
    }
    if (strncmp(key, ".tmp", 4) == 0) {
        *why = "keys starting with '.tmp' are reserved";
        return false;
    }
    for (const char *p = key;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t n = (size_t)(p - component);
            if (n == 0) {
                *why = "a key has no empty component (no leading, trailing or double '/')";
                return false;
            }
            if ((n == 1 && component[0] == '.') || (n == 2 && !strncmp(component, "..", 2))) {
                *why = "a key has no '.' or '..' component";
                return false;
            }
            if (*p == '\0')
                break;
            component = p + 1;
            continue;
        }
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-')) {
            *why = "a key holds only letters, digits, '.', '_', '-' and '/'";
            return false;
        }
    }
    return true;
}

static int store_check_key(struct store *st, const char *op, const char *key)
{
    const char *why;

    if (!store_key_valid(key, &why))
        return store_fail(st, -EINVAL, "%s '%.80s%s': invalid key: %s", op, key ? key : "(null)",
                          key && strlen(key) > 80 ? "..." : "", why);
    store_error_message[0] = '\0';
    return 0;
}

int store_put(struct store *st, const char *key, const void *data, size_t len)
{
    int r = store_check_key(st, "put", key);

    return r < 0 ? r : st->ops->put(st, key, data, len, NULL, false);
}

static __thread const unsigned *store_cancel_flag;

void store_set_thread_cancel(const unsigned *flag)
{
    store_cancel_flag = flag;
}

bool store_thread_cancellable(void)
{
    return store_cancel_flag != NULL;
}

bool store_thread_cancelled(void)
{
    return store_cancel_flag && __atomic_load_n(store_cancel_flag, __ATOMIC_ACQUIRE) != 0;
}

/* Set by a backend's conditional put that found the same object already there. */
static __thread bool store_put_existed;
static __thread struct store_stat store_put_existing;

void store_note_existing(const struct store_stat *sb)
{
    store_put_existed = true;
    store_put_existing = *sb;
}

bool store_put_found_existing(struct store_stat *out)
{
    if (store_put_existed && out)
        *out = store_put_existing;
    return store_put_existed;
}

int store_put_if_absent(struct store *st, const char *key, const void *data, size_t len)
{
    int r = store_check_key(st, "put", key);

    store_put_existed = false;
    return r < 0 ? r : st->ops->put(st, key, data, len, NULL, true);
}

int store_put_hashed(struct store *st, const char *key, const void *data, size_t len,
                     const uint8_t sha256[32], bool if_absent)
{
    int r = store_check_key(st, "put", key);

    store_put_existed = false;
    return r < 0 ? r : st->ops->put(st, key, data, len, sha256, if_absent);
}

int store_get(struct store *st, const char *key, void **data, size_t *len)
{
    int r = store_check_key(st, "get", key);

    *data = NULL;
    *len = 0;
    return r < 0 ? r : st->ops->get(st, key, data, len, NULL);
}

int store_get_hashed(struct store *st, const char *key, void **data, size_t *len,
                     uint8_t sha256[32])
{
    int r = store_check_key(st, "get", key);

    *data = NULL;
    *len = 0;
    return r < 0 ? r : st->ops->get(st, key, data, len, sha256);
}

int store_get_range(struct store *st, const char *key, uint64_t offset, void *buf, size_t len,
                    size_t *got)
{
    int r = store_check_key(st, "get", key);

    *got = 0;
    if (r < 0)
        return r;
    if (len == 0)
        return 0;
    return st->ops->get_range(st, key, offset, buf, len, got);
}

int store_head(struct store *st, const char *key, struct store_stat *out)
{
    int r = store_check_key(st, "stat", key);

    memset(out, 0, sizeof *out);
    return r < 0 ? r : st->ops->head(st, key, out);
}

int store_delete(struct store *st, const char *key)
{
    int r = store_check_key(st, "delete", key);

    return r < 0 ? r : st->ops->delete (st, key);
}

int store_list(struct store *st, const char *prefix, store_list_fn fn, void *opaque)
{
    const char *why;

    store_error_message[0] = '\0';
    if (!prefix)
        prefix = "";
    /* A prefix may end in '/' or in a partial component, so check the characters only. */
    for (const char *p = prefix; *p; p++) {
        char probe[2] = {*p == '/' ? 'a' : *p, '\0'};
        if (!store_key_valid(probe, &why))
            return store_fail(st, -EINVAL, "list '%s': invalid prefix: %s", prefix, why);
    }
    return st->ops->list(st, prefix, fn, opaque);
}

void store_get_stats(struct store *st, struct store_stats *out)
{
    out->requests = __atomic_load_n(&st->stats.requests, __ATOMIC_RELAXED);
    out->retries = __atomic_load_n(&st->stats.retries, __ATOMIC_RELAXED);
    out->failures = __atomic_load_n(&st->stats.failures, __ATOMIC_RELAXED);
    out->bytes_sent = __atomic_load_n(&st->stats.bytes_sent, __ATOMIC_RELAXED);
    out->bytes_received = __atomic_load_n(&st->stats.bytes_received, __ATOMIC_RELAXED);
    out->connections = __atomic_load_n(&st->stats.connections, __ATOMIC_RELAXED);
}
