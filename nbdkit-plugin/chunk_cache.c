/* chunk_cache.c: the clean-chunk cache (see chunk_cache.h).
 *
 * Entry states (all under cache->lock):
 *
 *   state      on lru?  file           meaning
 *   PRESENT    yes      complete       usable; verified says whether hashed since start-up
 *   FILLING    no       maybe          one thread verifies the file or fetches the chunk;
 *                                      others wait on cache->filled
 *
 * An entry with readers > 0 is being read through its file and is not evicted.  Cache files
 * are written to a temporary name and renamed, without fsync: a file damaged by a crash fails
 * verification on first use and is fetched again. */
#include "chunk_cache.h"

#include "hash.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum cache_entry_state {
    CACHE_ENTRY_PRESENT,
    CACHE_ENTRY_FILLING,
};

struct cache_entry {
    struct chunk_hash hash; /* the table's key points here */
    uint64_t size;
    enum cache_entry_state state;
    bool verified;
    unsigned readers;
    GList lru_link; /* in cache->lru while PRESENT; head = most recently used */
};

struct chunk_cache {
    char *dir;
    struct store *store;
    GThreadPool *prefetch_pool;
    double refresh_age; /* seconds: dedup hits older than this are stored again (GC) */

    pthread_mutex_t lock; /* protects everything below */
    pthread_cond_t filled;
    GHashTable *entries; /* struct chunk_hash * -> struct cache_entry * */
    GQueue lru;
    uint64_t clean_bytes, dirty_bytes, max_bytes;
    struct chunk_cache_stats stats; /* counters; byte totals are filled in by get_stats */
};

static guint cache_hash_hash(gconstpointer key)
{
    guint h;
    memcpy(&h, ((const struct chunk_hash *)key)->b, sizeof h); /* already uniform */
    return h;
}

static gboolean cache_hash_equal(gconstpointer a, gconstpointer b)
{
    return memcmp(a, b, CHUNK_HASH_LEN) == 0;
}

void chunk_cache_store_key(const struct chunk_hash *h, char key[80])
{
    char hex[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(h, hex);
    snprintf(key, 80, "chunks/%s", hex);
}

static void cache_path(const struct chunk_cache *c, const struct chunk_hash *h, char *out,
                       size_t size)
{
    char hex[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(h, hex);
    snprintf(out, size, "%s/chunks/%.2s/%s", c->dir, hex, hex);
}

/* ---- eviction -------------------------------------------------------------------------- */

static void cache_entry_remove_locked(struct chunk_cache *c, struct cache_entry *e)
{
    if (e->state == CACHE_ENTRY_PRESENT) {
        g_queue_unlink(&c->lru, &e->lru_link);
        c->clean_bytes -= e->size;
    }
    g_hash_table_remove(c->entries, &e->hash);
    g_free(e);
}

/* Evicts least recently used clean entries until clean + dirty fit.  Caller holds c->lock. */
static void cache_evict_locked(struct chunk_cache *c)
{
    GList *link = c->lru.tail;
    char path[PATH_MAX];

    while (link && c->clean_bytes + c->dirty_bytes > c->max_bytes) {
        struct cache_entry *e = link->data;
        link = link->prev;
        if (e->readers > 0)
            continue;
        cache_path(c, &e->hash, path, sizeof path);
        if (unlink(path) < 0 && errno != ENOENT)
            log_warn("cache", "unlink %s: %m", path);
        c->stats.evictions++;
        cache_entry_remove_locked(c, e);
    }
}

static void cache_lru_touch_locked(struct chunk_cache *c, struct cache_entry *e)
{
    g_queue_unlink(&c->lru, &e->lru_link);
    g_queue_push_head_link(&c->lru, &e->lru_link);
}

/* Makes a FILLING entry PRESENT and wakes waiters.  Caller holds c->lock. */
static void cache_entry_filled_locked(struct chunk_cache *c, struct cache_entry *e, uint64_t size)
{
    e->state = CACHE_ENTRY_PRESENT;
    e->verified = true;
    e->size = size;
    c->clean_bytes += size;
    g_queue_push_head_link(&c->lru, &e->lru_link);
    pthread_cond_broadcast(&c->filled);
    cache_evict_locked(c);
}

/* ---- filling: verify a file found at start-up, or fetch --------------------------------- */

static int cache_read_file(const char *path, void *buf, size_t len, size_t *got)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int r = 0;

    *got = 0;
    if (fd < 0)
        return -errno;
    while (*got < len) {
        ssize_t n = pread(fd, (char *)buf + *got, len - *got, (off_t)*got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            break;
        }
        if (n == 0)
            break;
        *got += (size_t)n;
    }
    close(fd);
    return r;
}

static int cache_write_file(struct chunk_cache *c, const struct chunk_hash *h, const void *data,
                            size_t len)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    const char *p = data;
    int fd;

    cache_path(c, h, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s/chunks/.tmp-XXXXXX", c->dir);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    __atomic_fetch_add(&c->stats.copy_bytes, len, __ATOMIC_RELAXED);
    for (size_t left = len; left > 0;) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = -errno;
            close(fd);
            unlink(tmp);
            return err;
        }
        p += n;
        left -= (size_t)n;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        int err = -errno;
        unlink(tmp);
        return err;
    }
    return 0;
}

/* Fills entry e (FILLING, not locked by the caller): verifies the file left from an earlier run
 * if had_file, else or if that fails fetches from the store.  On success, *data holds the
 * chunk (malloc'd) unless the verified file can serve it (*data NULL). */
static int cache_fill(struct chunk_cache *c, struct cache_entry *e, size_t chunk_len, bool had_file,
                      void **data)
{
    struct chunk_hash got_hash;
    char key[80], path[PATH_MAX];
    size_t len;
    void *buf = NULL;
    int r;

    *data = NULL;
    cache_path(c, &e->hash, path, sizeof path);
    if (had_file) {
        buf = malloc(chunk_len ? chunk_len : 1);
        if (!buf)
            return -ENOMEM;
        r = cache_read_file(path, buf, chunk_len, &len);
        if (r == 0 && len == chunk_len && hash_sha256(buf, len, got_hash.b) == 0 &&
            memcmp(got_hash.b, e->hash.b, CHUNK_HASH_LEN) == 0) {
            *data = buf;
            __atomic_fetch_add(&c->stats.hits, 1, __ATOMIC_RELAXED);
            return 0;
        }
        log_warn("cache", "%s does not match its hash: dropped, fetching again", path);
        __atomic_fetch_add(&c->stats.corrupt, 1, __ATOMIC_RELAXED);
        unlink(path);
        free(buf);
        buf = NULL;
    }

    chunk_cache_store_key(&e->hash, key);
    __atomic_fetch_add(&c->stats.misses, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->stats.fetches, 1, __ATOMIC_RELAXED);
    /* The store client hashes the body to check it anyway: one SHA-256 serves both. */
    r = store_get_hashed(c->store, key, &buf, &len, got_hash.b);
    if (r < 0) {
        log_error("cache", "fetch %s: %s", key, store_last_error());
        return r;
    }
    __atomic_fetch_add(&c->stats.fetch_bytes, len, __ATOMIC_RELAXED);
    if (memcmp(got_hash.b, e->hash.b, CHUNK_HASH_LEN) != 0 || len != chunk_len) {
        __atomic_fetch_add(&c->stats.corrupt, 1, __ATOMIC_RELAXED);
        free(buf);
        log_error("cache", "%s: the store returned %zu bytes that do not match the chunk's hash",
                  key, len);
        return -EIO;
    }
    r = cache_write_file(c, &e->hash, buf, len);
    if (r < 0)
        log_warn("cache", "cannot keep %s in the cache: %s", key, strerror(-r));
    *data = buf;
    return 0;
}

/* Gets chunk h ready to read.  Returns 0 with either *data set (a malloc'd copy the caller
 * frees) or *data NULL and e->readers raised (the caller reads the file, then calls
 * cache_release). */
static int cache_acquire(struct chunk_cache *c, const struct chunk_hash *h, size_t chunk_len,
                         struct cache_entry **entry, void **data)
{
    struct cache_entry *e;
    bool had_file;
    int r;

    *data = NULL;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        e = g_hash_table_lookup(c->entries, h);
        if (e && e->state == CACHE_ENTRY_FILLING) {
            pthread_cond_wait(&c->filled, &c->lock);
            continue;
        }
        if (e && e->verified) {
            e->readers++;
            cache_lru_touch_locked(c, e);
            __atomic_fetch_add(&c->stats.hits, 1, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&c->lock);
            *entry = e;
            return 0;
        }
        break;
    }
    if (e) {
        /* Found at start-up, not yet verified: take it out of the LRU while we check it. */
        had_file = true;
        g_queue_unlink(&c->lru, &e->lru_link);
        c->clean_bytes -= e->size;
        e->state = CACHE_ENTRY_FILLING;
    } else {
        had_file = false;
        e = g_new0(struct cache_entry, 1);
        e->hash = *h;
        e->lru_link.data = e;
        e->state = CACHE_ENTRY_FILLING;
        g_hash_table_insert(c->entries, &e->hash, e);
    }
    pthread_mutex_unlock(&c->lock);

    r = cache_fill(c, e, chunk_len, had_file, data);

    pthread_mutex_lock(&c->lock);
    if (r < 0) {
        g_hash_table_remove(c->entries, &e->hash);
        g_free(e);
        pthread_cond_broadcast(&c->filled);
    } else {
        cache_entry_filled_locked(c, e, chunk_len);
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

static void cache_release(struct chunk_cache *c, struct cache_entry *e)
{
    pthread_mutex_lock(&c->lock);
    e->readers--;
    pthread_mutex_unlock(&c->lock);
}

/* A verified file vanished (removed by hand): forget it so the next acquire fetches. */
static void cache_forget(struct chunk_cache *c, struct cache_entry *e)
{
    pthread_mutex_lock(&c->lock);
    e->readers--;
    if (e->readers == 0 && e->state == CACHE_ENTRY_PRESENT)
        cache_entry_remove_locked(c, e);
    pthread_mutex_unlock(&c->lock);
}

int chunk_cache_read(struct chunk_cache *c, const struct chunk_hash *h, size_t chunk_len, void *buf,
                     size_t count, uint64_t offset)
{
    char path[PATH_MAX];
    struct cache_entry *e;
    void *data;
    size_t got;
    int r;

    for (int attempt = 0; attempt < 3; attempt++) {
        r = cache_acquire(c, h, chunk_len, &e, &data);
        if (r < 0)
            return r;
        if (data) {
            memcpy(buf, (char *)data + offset, count);
            free(data);
            return 0;
        }
        cache_path(c, h, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            cache_forget(c, e);
            continue;
        }
        got = 0;
        while (got < count) {
            ssize_t n = pread(fd, (char *)buf + got, count - got, (off_t)(offset + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        close(fd);
        if (got == count) {
            cache_release(c, e);
            return 0;
        }
        cache_forget(c, e); /* truncated behind our back: fetch again */
    }
    return -EIO;
}

/* ---- prefetch ----------------------------------------------------------------------------- */

struct cache_prefetch {
    struct chunk_hash hash;
    size_t chunk_len;
};

static void cache_prefetch_run(gpointer task, gpointer user_data)
{
    struct chunk_cache *c = user_data;
    struct cache_prefetch *p = task;
    struct cache_entry *e;
    void *data;

    if (cache_acquire(c, &p->hash, p->chunk_len, &e, &data) == 0) {
        if (data)
            free(data);
        else
            cache_release(c, e);
    }
    g_free(p);
}

void chunk_cache_prefetch(struct chunk_cache *c, const struct chunk_hash *h, size_t chunk_len)
{
    struct cache_prefetch *p;
    bool cached;

    pthread_mutex_lock(&c->lock);
    cached = g_hash_table_contains(c->entries, h);
    pthread_mutex_unlock(&c->lock);
    if (cached)
        return;
    p = g_new(struct cache_prefetch, 1);
    p->hash = *h;
    p->chunk_len = chunk_len;
    g_thread_pool_push(c->prefetch_pool, p, NULL);
}

/* ---- upload ------------------------------------------------------------------------------- */

int chunk_cache_put(struct chunk_cache *c, const struct chunk_hash *h, const void *data, size_t len)
{
    char key[80];
    struct store_stat sb;
    int r;

    chunk_cache_store_key(h, key);
    /* Objects are immutable: create only.  An existing object under a content hash is these
     * very bytes (the client checks that through the SHA-256 it recorded). */
    r = store_put_hashed(c->store, key, data, len, h->b, true);
    if (r == 0 && store_put_found_existing(NULL))
        r = -EEXIST; /* S3 answers success for the same bytes already there: a dedup hit (GC) */
    if (r == -ENOTSUP) {
        r = store_head(c->store, key, &sb);
        if (r == -ENOENT)
            r = store_put_hashed(c->store, key, data, len, h->b, false);
        else if (r == 0)
            r = -EEXIST;
    }
    if (r == -EEXIST) {
        /* Another writer stored this content first.  Check what is there rather than trust
         * the name: a damaged object must be reported, never silently kept. */
        char hex[2 * CHUNK_HASH_LEN + 1];
        chunk_hash_to_hex(h, hex);
        r = store_head(c->store, key, &sb);
        if (r == 0 && (sb.size != len || (sb.sha256[0] && strcmp(sb.sha256, hex) != 0))) {
            log_error("cache",
                      "%s exists in the store with other content (%llu bytes): the "
                      "object is damaged",
                      key, (unsigned long long)sb.size);
            r = -EIO;
        }
        /* GC (meta/chunk_gc.h, invariant (a)): the caller is about to commit a reference to
         * this object.  If no version references it yet and it is old, a GC may delete it
         * before that commit, so make it young: store the same bytes again (same key, same
         * content, so the object does not change, only its mtime).  The age is the store's
         * mtime against this host's clock: clock skew eats into the margin. */
        if (r == 0 && (double)(time(NULL) - sb.mtime) > c->refresh_age) {
            r = store_put(c->store, key, data, len);
            if (r < 0)
                log_error("cache", "refresh of %s: %s", key, store_last_error());
            else
                __atomic_fetch_add(&c->stats.refreshes, 1, __ATOMIC_RELAXED);
        }
    }
    return r;
}

void chunk_cache_keep(struct chunk_cache *c, const struct chunk_hash *h, const void *data,
                      size_t len, const char *path)
{
    char dest[PATH_MAX];
    struct cache_entry *e;
    int r;

    cache_path(c, h, dest, sizeof dest);
    pthread_mutex_lock(&c->lock);
    bool cached = g_hash_table_contains(c->entries, h);
    pthread_mutex_unlock(&c->lock);
    if (cached)
        return;
    /* Link or write the file outside the lock: readers must not wait for a 1 MiB write.  A
     * fetch of the same chunk meanwhile writes the same bytes, so either file will do. */
    r = path ? (link(path, dest) == 0 || errno == EEXIST ? 0 : -errno)
             : cache_write_file(c, h, data, len);
    if (r < 0) {
        log_warn("cache", "cannot add %s to the cache: %s", dest, strerror(-r));
        return; /* the store has the chunk; the cache is only a copy */
    }
    pthread_mutex_lock(&c->lock);
    if (!g_hash_table_contains(c->entries, h)) {
        e = g_new0(struct cache_entry, 1);
        e->hash = *h;
        e->lru_link.data = e;
        g_hash_table_insert(c->entries, &e->hash, e);
        cache_entry_filled_locked(c, e, len);
    }
    pthread_mutex_unlock(&c->lock);
}

void chunk_cache_set_refresh_age(struct chunk_cache *c, double seconds)
{
    c->refresh_age = seconds; /* set before the disks open; read by the upload rounds */
}

void chunk_cache_add_dirty(struct chunk_cache *c, int64_t delta)
{
    pthread_mutex_lock(&c->lock);
    c->dirty_bytes = (uint64_t)((int64_t)c->dirty_bytes + delta);
    if (delta > 0)
        cache_evict_locked(c);
    pthread_mutex_unlock(&c->lock);
}

void chunk_cache_get_stats(struct chunk_cache *c, struct chunk_cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    out->clean_bytes = c->clean_bytes;
    out->dirty_bytes = c->dirty_bytes;
    out->max_bytes = c->max_bytes;
    out->entries = g_hash_table_size(c->entries);
    pthread_mutex_unlock(&c->lock);
    out->hits = __atomic_load_n(&c->stats.hits, __ATOMIC_RELAXED);
    out->misses = __atomic_load_n(&c->stats.misses, __ATOMIC_RELAXED);
    out->fetches = __atomic_load_n(&c->stats.fetches, __ATOMIC_RELAXED);
    out->fetch_bytes = __atomic_load_n(&c->stats.fetch_bytes, __ATOMIC_RELAXED);
    out->corrupt = __atomic_load_n(&c->stats.corrupt, __ATOMIC_RELAXED);
    out->refreshes = __atomic_load_n(&c->stats.refreshes, __ATOMIC_RELAXED);
    out->copy_bytes = __atomic_load_n(&c->stats.copy_bytes, __ATOMIC_RELAXED);
}

/* ---- open / close --------------------------------------------------------------------------- */

struct cache_scan_file {
    struct chunk_hash hash;
    uint64_t size;
    time_t atime;
};

static gint cache_scan_compare(gconstpointer a, gconstpointer b)
{
    const struct cache_scan_file *x = a, *y = b;
    return x->atime < y->atime ? 1 : x->atime > y->atime ? -1 : 0; /* newest first */
}

/* Indexes the files a previous run left, most recently used first. */
static int cache_scan(struct chunk_cache *c)
{
    char path[PATH_MAX];
    GArray *files = g_array_new(FALSE, FALSE, sizeof(struct cache_scan_file));

    for (int i = 0; i < 256; i++) {
        snprintf(path, sizeof path, "%s/chunks/%02x", c->dir, i);
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            int err = -errno;
            g_array_free(files, TRUE);
            return err;
        }
        GDir *dir = g_dir_open(path, 0, NULL);
        const char *name;
        while (dir && (name = g_dir_read_name(dir))) {
            struct cache_scan_file f;
            struct stat sb;
            char full[PATH_MAX];
            if (snprintf(full, sizeof full, "%s/%s", path, name) >= (int)sizeof full)
                continue;
            if (chunk_hash_from_hex(name, &f.hash) < 0 || stat(full, &sb) < 0 ||
                !S_ISREG(sb.st_mode)) {
                unlink(full); /* leftovers of an interrupted write */
                continue;
            }
            f.size = (uint64_t)sb.st_size;
            f.atime = sb.st_atime > sb.st_mtime ? sb.st_atime : sb.st_mtime;
            g_array_append_val(files, f);
        }
        if (dir)
            g_dir_close(dir);
    }
    g_array_sort(files, cache_scan_compare);
    for (guint i = 0; i < files->len; i++) {
        struct cache_scan_file *f = &g_array_index(files, struct cache_scan_file, i);
        struct cache_entry *e = g_new0(struct cache_entry, 1);
        e->hash = f->hash;
        e->size = f->size;
        e->state = CACHE_ENTRY_PRESENT;
        e->verified = false;
        e->lru_link.data = e;
        g_hash_table_insert(c->entries, &e->hash, e);
        g_queue_push_tail_link(&c->lru, &e->lru_link);
        c->clean_bytes += f->size;
    }
    g_array_free(files, TRUE);

    /* Temporary files of writes a crash interrupted. */
    snprintf(path, sizeof path, "%s/chunks", c->dir);
    GDir *dir = g_dir_open(path, 0, NULL);
    const char *name;
    while (dir && (name = g_dir_read_name(dir))) {
        if (strncmp(name, ".tmp-", 5) == 0) {
            char full[PATH_MAX];
            if (snprintf(full, sizeof full, "%s/%s", path, name) < (int)sizeof full)
                unlink(full);
        }
    }
    if (dir)
        g_dir_close(dir);
    return 0;
}

int chunk_cache_open(const char *dir, uint64_t max_bytes, struct store *store,
                     struct chunk_cache **out)
{
    struct chunk_cache *c = g_new0(struct chunk_cache, 1);
    char path[PATH_MAX];
    int r;

    c->dir = g_strdup(dir);
    c->store = store;
    c->max_bytes = max_bytes;
    c->refresh_age = 1800; /* half the default GC grace (meta/chunk_gc.h) */
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->filled, NULL);
    c->entries = g_hash_table_new(cache_hash_hash, cache_hash_equal);
    g_queue_init(&c->lru);

    snprintf(path, sizeof path, "%s/chunks", dir);
    if ((mkdir(dir, 0700) < 0 && errno != EEXIST) || (mkdir(path, 0700) < 0 && errno != EEXIST)) {
        r = -errno;
        log_error("cache", "mkdir %s: %s", path, strerror(-r));
        chunk_cache_close(c);
        return r;
    }
    r = cache_scan(c);
    if (r < 0) {
        log_error("cache", "scan %s: %s", path, strerror(-r));
        chunk_cache_close(c);
        return r;
    }
    pthread_mutex_lock(&c->lock);
    cache_evict_locked(c);
    pthread_mutex_unlock(&c->lock);
    c->prefetch_pool = g_thread_pool_new(cache_prefetch_run, c, 8, FALSE, NULL);
    *out = c;
    return 0;
}

void chunk_cache_close(struct chunk_cache *c)
{
    GHashTableIter it;
    gpointer value;

    if (!c)
        return;
    if (c->prefetch_pool)
        g_thread_pool_free(c->prefetch_pool, TRUE, TRUE);
    g_hash_table_iter_init(&it, c->entries);
    while (g_hash_table_iter_next(&it, NULL, &value))
        g_free(value);
    g_hash_table_destroy(c->entries);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->filled);
    g_free(c->dir);
    g_free(c);
}
