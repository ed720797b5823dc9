/* store_impl.h: what a store backend implements, and the helpers store.c gives backends.
 * Not for users of the store: they include store.h. */
#ifndef WISP_STORE_IMPL_H
#define WISP_STORE_IMPL_H

#include "store.h"
#include "store_url.h"

#include <stdarg.h>

/* Each member has the contract of the store.h function of the same name, with the key already
 * validated.  put with if_absent set is store_put_if_absent; its sha256 is the body's (NULL:
 * the backend hashes it if it needs to).  get fills sha256 when it is not NULL. */
struct store_backend_ops {
    const char *name;
    int (*put)(struct store *st, const char *key, const void *data, size_t len,
               const uint8_t *sha256, bool if_absent);
    int (*get)(struct store *st, const char *key, void **data, size_t *len, uint8_t *sha256);
    int (*get_range)(struct store *st, const char *key, uint64_t offset, void *buf, size_t len,
                     size_t *got);
    int (*head)(struct store *st, const char *key, struct store_stat *out);
    int (*delete)(struct store *st, const char *key);
    int (*list)(struct store *st, const char *prefix, store_list_fn fn, void *opaque);
    void (*close)(struct store *st);
};

struct store {
    const struct store_backend_ops *ops;
    struct store_options opts;
    char *description;
    void *backend; /* owned by the backend, freed by ops->close */

    /* Counters, updated with __atomic builtins from any thread. */
    struct store_stats stats;
};

int store_file_open(struct store *st, const struct store_url *url);
int store_s3_open(struct store *st, const struct store_url *url);

/* Records the failure for store_last_error(), logs it, and returns err (a negative errno), so a
 * backend can write `return store_fail(st, -EIO, "GET %s: ...", key);`. */
int store_fail(struct store *st, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A conditional put (if_absent) that answers 0 because an object with the same content was
 * there already says so through this, for store_put_found_existing(). */
void store_note_existing(const struct store_stat *sb);

/* Sleeps before retry number `attempt` (1 for the first retry): a random time up to
 * min(backoff_max, backoff_base * 2^(attempt-1)), "full jitter", so that many clients retrying
 * at once spread out. */
void store_backoff_sleep(const struct store *st, unsigned attempt);

/* Whether this thread's requests may be cancelled (store_set_thread_cancel): a backend then
 * watches store_thread_cancelled() within its transfers. */
bool store_thread_cancellable(void);

static inline void store_count(uint64_t *counter, uint64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

#endif
