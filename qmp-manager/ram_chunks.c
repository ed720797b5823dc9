/* ram_chunks.c: a file as content-addressed chunks in the store (see ram_chunks.h). */
#include "ram_chunks.h"

#include "chunk_gc.h"
#include "hash.h"
#include "log.h"
#include "vm_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNKS_LOG "ram-chunks"

void chunk_list_init(struct chunk_list *cl, uint64_t file_bytes, uint32_t chunk_bytes)
{
    cl->file_bytes = file_bytes;
    cl->chunk_bytes = chunk_bytes;
    cl->hashes = g_ptr_array_new_with_free_func(g_free);
}

void chunk_list_clear(struct chunk_list *cl)
{
    if (cl->hashes)
        g_ptr_array_unref(cl->hashes);
    cl->hashes = NULL;
}

void chunk_list_add_to_set(const struct chunk_list *cl, GHashTable *set)
{
    for (guint i = 0; cl->hashes && i < cl->hashes->len; i++) {
        const char *h = g_ptr_array_index(cl->hashes, i);
        if (*h)
            g_hash_table_add(set, g_strdup(h));
    }
}

static bool chunk_is_zero(const uint8_t *p, size_t len)
{
    /* Word at a time; RAM images are mostly zero pages, so this loop is the common case. */
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w)
            return false;
    }
    for (; i < len; i++)
        if (p[i])
            return false;
    return true;
}

/* What the workers share.  next: the next chunk index to take. */
struct chunk_job {
    struct store *st;
    const struct chunk_list *cl;
    GHashTable *known;
    time_t refresh_before; /* store: a found object with an older mtime is PUT again */
    const uint8_t *map;    /* store: the file, mapped read-only */
    int fd;                /* restore: the file being written */
    guint *first;          /* restore: the index of each chunk's first occurrence of its hash */
    gint next;
    GMutex lock;
    char *error; /* the first failure */
    struct chunk_upload_stats stats;
    uint64_t fetched_bytes;
};

static void chunk_job_fail(struct chunk_job *job, char *msg)
{
    g_mutex_lock(&job->lock);
    if (!job->error)
        job->error = msg;
    else
        g_free(msg);
    g_mutex_unlock(&job->lock);
}

static bool chunk_job_failed(struct chunk_job *job)
{
    g_mutex_lock(&job->lock);
    bool failed = job->error != NULL;
    g_mutex_unlock(&job->lock);
    return failed;
}

static void chunk_job_count(struct chunk_job *job, uint64_t *counter)
{
    g_mutex_lock(&job->lock);
    (*counter)++;
    g_mutex_unlock(&job->lock);
}

static gpointer chunk_store_worker(gpointer opaque)
{
    struct chunk_job *job = opaque;
    const struct chunk_list *cl = job->cl;
    guint n = cl->hashes->len;

    for (;;) {
        guint i = (guint)g_atomic_int_add(&job->next, 1);
        if (i >= n || chunk_job_failed(job))
            break;
        uint64_t off = (uint64_t)i * cl->chunk_bytes;
        size_t len = (size_t)MIN((uint64_t)cl->chunk_bytes, cl->file_bytes - off);
        const uint8_t *p = job->map + off;
        if (chunk_is_zero(p, len)) {
            g_ptr_array_index(cl->hashes, i) = g_strdup("");
            chunk_job_count(job, &job->stats.zero_chunks);
            continue;
        }
        uint8_t sha[HASH_SHA256_LEN];
        char hex[HASH_SHA256_HEX_LEN + 1], key[128];
        int r = hash_sha256(p, len, sha);
        if (r < 0) {
            chunk_job_fail(job, g_strdup_printf("sha256 of chunk %u: %s", i, g_strerror(-r)));
            break;
        }
        hash_to_hex(sha, sizeof sha, hex);
        g_ptr_array_index(cl->hashes, i) = g_strdup(hex);
        if (job->known && g_hash_table_contains(job->known, hex)) {
            chunk_job_count(job, &job->stats.known_chunks);
            continue;
        }
        snprintf(key, sizeof key, "%s%s", RAM_CHUNK_PREFIX, hex);
        struct store_stat stat;
        r = store_head(job->st, key, &stat);
        /* Found, and young enough that no GC can delete it before the manifest names it
         * (vm_gc.h, (a)): nothing to do.  An older one may be a GC's candidate right now (an
         * orphan of a deleted sprite): PUT again, same bytes, and it is young. */
        bool refresh = r == 0 && stat.size == len && stat.mtime < job->refresh_before;
        if (r == 0 && stat.size == len && !refresh) {
            chunk_job_count(job, &job->stats.known_chunks);
            continue;
        }
        if (r < 0 && r != -ENOENT) {
            chunk_job_fail(job, g_strdup_printf("HEAD %s: %s", key, store_last_error()));
            break;
        }
        r = store_put_hashed(job->st, key, p, len, sha, false);
        if (r < 0) {
            chunk_job_fail(job, g_strdup_printf("PUT %s: %s", key, store_last_error()));
            break;
        }
        g_mutex_lock(&job->lock);
        if (refresh) {
            job->stats.known_chunks++;
            job->stats.refreshed_chunks++;
        } else {
            job->stats.uploaded_chunks++;
            job->stats.uploaded_bytes += len;
        }
        g_mutex_unlock(&job->lock);
    }
    return NULL;
}

static void chunk_job_run(struct chunk_job *job, GThreadFunc fn)
{
    GThread *threads[RAM_CHUNK_WORKERS];

    for (int t = 0; t < RAM_CHUNK_WORKERS; t++)
        threads[t] = g_thread_new("chunks", fn, job);
    for (int t = 0; t < RAM_CHUNK_WORKERS; t++)
        g_thread_join(threads[t]);
}

bool chunk_pass_begin(struct store *st, struct chunk_pass *pass, GError **error)
{
    pass->start_us = g_get_monotonic_time();
    int r = chunk_gc_store_clock(st, &pass->store_now);
    if (r < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "the clock of %s: %s", store_describe(st),
                    store_last_error());
        return false;
    }
    return true;
}

bool chunk_pass_fresh(const struct chunk_pass *pass, double *elapsed_s)
{
    double s = (double)(g_get_monotonic_time() - pass->start_us) / 1e6;
    if (elapsed_s)
        *elapsed_s = s;
    return s < RAM_CHUNK_PASS_MAX_S;
}

bool chunk_list_store(struct store *st, const char *path, uint32_t chunk_bytes, GHashTable *known,
                      struct chunk_list *out, struct chunk_upload_stats *stats, GError **error)
{
    struct chunk_pass pass;
    return chunk_pass_begin(st, &pass, error) &&
           chunk_list_store_in_pass(st, &pass, path, chunk_bytes, known, out, stats, error);
}

bool chunk_list_store_in_pass(struct store *st, const struct chunk_pass *pass, const char *path,
                              uint32_t chunk_bytes, GHashTable *known, struct chunk_list *out,
                              struct chunk_upload_stats *stats, GError **error)
{
    struct chunk_job job = {.st = st,
                            .known = known,
                            .cl = out,
                            .fd = -1,
                            .refresh_before = pass->store_now - RAM_CHUNK_REFRESH_AGE_S};
    struct stat sb;
    void *map = NULL;
    int fd;

    if (chunk_bytes == 0)
        chunk_bytes = RAM_CHUNK_BYTES_DEFAULT;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "open %s: %s", path, g_strerror(errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    chunk_list_init(out, (uint64_t)sb.st_size, chunk_bytes);
    guint n = (guint)((out->file_bytes + chunk_bytes - 1) / chunk_bytes);
    g_ptr_array_set_size(out->hashes, n);
    if (sb.st_size > 0) {
        map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "mmap %s: %s", path, g_strerror(errno));
            close(fd);
            chunk_list_clear(out);
            return false;
        }
    }
    close(fd);
    job.map = map;
    job.stats.chunks = n;
    g_mutex_init(&job.lock);
    chunk_job_run(&job, chunk_store_worker);
    g_mutex_clear(&job.lock);
    if (map && munmap(map, (size_t)sb.st_size) < 0)
        log_warn(CHUNKS_LOG, "munmap %s: %s", path, g_strerror(errno));
    if (job.error) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "store %s in %s: %s", path, store_describe(st),
                    job.error);
        g_free(job.error);
        chunk_list_clear(out);
        return false;
    }
    if (stats)
        *stats = job.stats;
    log_info(CHUNKS_LOG,
             "%s: %u chunks, %" G_GUINT64_FORMAT " zero, %" G_GUINT64_FORMAT
             " already stored (%" G_GUINT64_FORMAT " refreshed), %" G_GUINT64_FORMAT
             " uploaded (%" G_GUINT64_FORMAT " bytes)",
             path, n, job.stats.zero_chunks, job.stats.known_chunks, job.stats.refreshed_chunks,
             job.stats.uploaded_chunks, job.stats.uploaded_bytes);
    return true;
}

static gpointer chunk_restore_worker(gpointer opaque)
{
    struct chunk_job *job = opaque;
    const struct chunk_list *cl = job->cl;
    guint n = cl->hashes->len;

    for (;;) {
        guint i = (guint)g_atomic_int_add(&job->next, 1);
        if (i >= n || chunk_job_failed(job))
            break;
        const char *hex = g_ptr_array_index(cl->hashes, i);
        if (!*hex)
            continue; /* a hole reads as zeroes */
        if (job->first[i] != i)
            continue; /* a repeat: copied from its first occurrence afterwards */
        uint64_t off = (uint64_t)i * cl->chunk_bytes;
        size_t want = (size_t)MIN((uint64_t)cl->chunk_bytes, cl->file_bytes - off);
        char key[128], got_hex[HASH_SHA256_HEX_LEN + 1];
        uint8_t sha[HASH_SHA256_LEN];
        void *data = NULL;
        size_t len = 0;
        snprintf(key, sizeof key, "%s%s", RAM_CHUNK_PREFIX, hex);
        int r = store_get_hashed(job->st, key, &data, &len, sha);
        if (r < 0) {
            chunk_job_fail(job, g_strdup_printf("GET %s: %s", key, store_last_error()));
            break;
        }
        hash_to_hex(sha, sizeof sha, got_hex);
        /* A chunk whose content does not match its name is never used as data. */
        if (strcmp(got_hex, hex) != 0 || len != want) {
            chunk_job_fail(job, g_strdup_printf("chunk %u (%s): content hashes to %s, %zu bytes"
                                                " (expected %zu): refused",
                                                i, key, got_hex, len, want));
            free(data);
            break;
        }
        size_t done = 0;
        while (done < len) {
            ssize_t w = pwrite(job->fd, (uint8_t *)data + done, len - done, (off_t)(off + done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                chunk_job_fail(job, g_strdup_printf("write chunk %u: %s", i,
                                                    w < 0 ? g_strerror(errno) : "short write"));
                break;
            }
            done += (size_t)w;
        }
        free(data);
        g_mutex_lock(&job->lock);
        job->fetched_bytes += len;
        g_mutex_unlock(&job->lock);
    }
    return NULL;
}

/* Fills job->first: each hash is fetched once, however many times the file repeats it. */
static void chunk_restore_plan(struct chunk_job *job)
{
    const struct chunk_list *cl = job->cl;
    GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);

    job->first = g_new(guint, MAX(cl->hashes->len, 1));
    for (guint i = 0; i < cl->hashes->len; i++) {
        const char *hex = g_ptr_array_index(cl->hashes, i);
        gpointer at;
        if (*hex && g_hash_table_lookup_extended(seen, hex, NULL, &at)) {
            job->first[i] = GPOINTER_TO_UINT(at);
        } else {
            job->first[i] = i;
            if (*hex)
                g_hash_table_insert(seen, (gpointer)hex, GUINT_TO_POINTER(i));
        }
    }
    g_hash_table_unref(seen);
}

/* Copies each repeated chunk from its first occurrence, which was fetched and verified. */
static bool chunk_restore_repeats(struct chunk_job *job, GError **error)
{
    const struct chunk_list *cl = job->cl;
    g_autofree uint8_t *buf = g_malloc(cl->chunk_bytes);

    for (guint i = 0; i < cl->hashes->len; i++) {
        if (job->first[i] == i)
            continue;
        uint64_t off = (uint64_t)i * cl->chunk_bytes;
        uint64_t from = (uint64_t)job->first[i] * cl->chunk_bytes;
        size_t len = (size_t)MIN((uint64_t)cl->chunk_bytes, cl->file_bytes - off);
        /* Equal hashes mean equal content, so equal lengths: a short tail has its own hash. */
        ssize_t r = pread(job->fd, buf, len, (off_t)from);
        if (r == (ssize_t)len)
            r = pwrite(job->fd, buf, len, (off_t)off);
        if (r != (ssize_t)len) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "copy chunk %u from chunk %u: %s", i,
                        job->first[i], r < 0 ? g_strerror(errno) : "short read or write");
            return false;
        }
    }
    return true;
}

bool chunk_list_restore(struct store *st, const struct chunk_list *cl, const char *path,
                        uint64_t *fetched_bytes, GError **error)
{
    g_autofree char *tmp = g_strdup_printf("%s.restoring", path);
    struct chunk_job job = {.st = st, .cl = cl, .fd = -1};
    int fd;

    unlink(tmp);
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "create %s: %s", tmp, g_strerror(errno));
        return false;
    }
    if (ftruncate(fd, (off_t)cl->file_bytes) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "truncate %s: %s", tmp, g_strerror(errno));
        goto fail;
    }
    job.fd = fd;
    chunk_restore_plan(&job);
    g_mutex_init(&job.lock);
    chunk_job_run(&job, chunk_restore_worker);
    g_mutex_clear(&job.lock);
    if (job.error) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "restore %s from %s: %s", path,
                    store_describe(st), job.error);
        g_free(job.error);
        goto fail;
    }
    if (!chunk_restore_repeats(&job, error))
        goto fail;
    if (fsync(fd) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "fsync %s: %s", tmp, g_strerror(errno));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "close %s: %s", tmp, g_strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "rename %s: %s", tmp, g_strerror(errno));
        goto fail;
    }
    if (fetched_bytes)
        *fetched_bytes = job.fetched_bytes;
    g_free(job.first);
    return true;

fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    g_free(job.first);
    return false;
}
