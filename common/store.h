/* store.h: the object store client, one interface over two backends.
 *
 *   file:///dir                                   the embedded default (a local directory)
 *   s3://bucket[/prefix]?endpoint=URL&region=R[&style=path|virtual]
 *
 * A struct store is safe to use from many threads at once: each call blocks its caller, and the
 * S3 backend bounds the number of connections (options.max_connections) and reuses them.
 *
 * Every call returns 0 (or a count) on success and a negative errno on failure:
 *   -ENOENT    no such object (or bucket)          -EACCES    the store refused the credentials
 *   -EEXIST    conditional create found an object  -ENOTSUP   the store cannot do conditional
 * create -EINVAL    bad key or argument                 -ETIMEDOUT every attempt timed out -EBADMSG
 * a body failed its length or checksum check on every attempt -EIO       any other failure, after
 * retries The message that explains a failure (what, where, HTTP status) is logged through log.h
 * and kept for the calling thread in store_last_error(). */
#ifndef WISP_STORE_H
#define WISP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct store;

struct store_options {
    long connect_timeout_ms;      /* TCP+TLS connect, per attempt; default 5000 */
    long request_timeout_ms;      /* whole request, per attempt; default 30000 */
    unsigned max_attempts;        /* first try included; default 6 */
    unsigned backoff_base_ms;     /* first retry waits up to this; doubles each time; default 100 */
    unsigned backoff_max_ms;      /* cap on one wait; default 5000 */
    unsigned max_connections;     /* connections kept open and reused; default 16 */
    const char *credentials_file; /* AWS-style ini file; NULL: environment, then ~/.aws */
    const char *profile; /* section in the credentials file; NULL: $AWS_PROFILE or default */
};

/* Fills *opts with the defaults above. */
void store_options_init(struct store_options *opts);

/* Opens the store named by url.  opts may be NULL for the defaults. */
int store_open(const char *url, const struct store_options *opts, struct store **out);
void store_close(struct store *st);

/* A short human description, "s3://bucket/prefix at http://127.0.0.1:7480", for messages. */
const char *store_describe(const struct store *st);

/* Keys: 1 to 1024 bytes of [A-Za-z0-9._-/], no leading or trailing '/', no empty, "." or ".."
 * component, and not starting with ".tmp" (the file backend's staging area).  Returns
 * true when valid; otherwise false with *why set to a static explanation. */
bool store_key_valid(const char *key, const char **why);

/* Writes the whole object, replacing any previous one. */
int store_put(struct store *st, const char *key, const void *data, size_t len);

/* Creates the object only if no object has that key: -EEXIST if one does, -ENOTSUP if the store
 * answers 501 or is seen to ignore the condition. */
int store_put_if_absent(struct store *st, const char *key, const void *data, size_t len);

/* Reads the whole object into a malloc'd buffer (free() it).  The body is checked against its
 * length and, when the store gives one, its checksum. */
int store_get(struct store *st, const char *key, void **data, size_t *len);

/* The same two for callers that hash the content anyway (chunks are named by their SHA-256):
 * the hash is computed once, not once by the caller and again by the client.
 * store_put_hashed takes the body's SHA-256 (32 bytes), which must be right: the S3 backend
 * signs the request with it and the server checks it.  store_get_hashed also returns the
 * SHA-256 of the body it checked. */
int store_put_hashed(struct store *st, const char *key, const void *data, size_t len,
                     const uint8_t sha256[32], bool if_absent);
int store_get_hashed(struct store *st, const char *key, void **data, size_t *len,
                     uint8_t sha256[32]);

/* Reads up to len bytes from offset into buf; *got is the number read, short only at the end of
 * the object (0 when offset is at or past the end). */
int store_get_range(struct store *st, const char *key, uint64_t offset, void *buf, size_t len,
                    size_t *got);

struct store_stat {
    uint64_t size;
    time_t mtime;
    char etag[72];   /* as the store gives it, without quotes; may be empty */
    char sha256[65]; /* hex SHA-256 of the content when the writer recorded it; may be empty */
};
int store_head(struct store *st, const char *key, struct store_stat *out);

/* After this thread's last store_put_if_absent returned 0: true, with the object's stat, if the
 * object was there already with the same content.  The S3 backend answers success then (a
 * retry meeting its own first attempt looks the same); garbage collection needs to know, and
 * the object's age (nbdkit-plugin/chunk_cache.c, meta/chunk_gc.h). */
bool store_put_found_existing(struct store_stat *out);

/* Work nobody waits for, which must give way (a background upload round): once *flag is
 * nonzero (read atomically), this thread's requests stop early with -ECANCELED, before an
 * attempt or a retry and, with S3, within a transfer.  NULL: none (the default). */
void store_set_thread_cancel(const unsigned *flag);
bool store_thread_cancelled(void);

/* Deletes the object.  Deleting a missing object succeeds, as in S3. */
int store_delete(struct store *st, const char *key);

/* Calls fn for each object whose key starts with prefix ("" for all), in byte order of key.
 * Pagination is hidden.  fn returns 0 to go on or non-zero to stop, which store_list returns. */
typedef int (*store_list_fn)(const char *key, uint64_t size, time_t mtime, void *opaque);
int store_list(struct store *st, const char *prefix, store_list_fn fn, void *opaque);

/* Counters since store_open, for logs and `wisp disk stats`. */
struct store_stats {
    uint64_t requests; /* HTTP requests or file operations attempted */
    uint64_t retries;  /* attempts after the first */
    uint64_t failures; /* calls that returned an error */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t connections; /* connections opened (S3); reuse keeps this low */
};
void store_get_stats(struct store *st, struct store_stats *out);

/* The message explaining this thread's last failed store call, or "" if there was none. */
const char *store_last_error(void);

#endif
