/* disk.c: one open disk (see disk.h for the model).
 *
 * Locks, in the order they are taken:
 *   round_lock    serialises upload rounds
 *   journal_lock  serialises durability=local journaling (fsync + pending rows)
 *   barrier       rwlock: writers hold it shared for a whole request, a flush takes it
 *                 exclusive only to freeze, which is a few pointer moves per dirty chunk
 *   stripes[]     serialise writers of the same chunk (read-modify-write)
 *   lock          the chunk tables and file references; never held across I/O
 *
 * Chunk files (struct chunk_file) are reference-counted under `lock`.  A file is unlinked when
 * its last reference goes.  References are held by the chunk's live or frozen slot, by
 * requests reading or writing it, by the journal list and by an upload round.  A frozen file
 * superseded by a later flush is kept until that flush is journaled, so that the pending
 * journal never names a file that is gone. */
#include "disk.h"

#include "hash.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define DISK_STRIPES 64

struct chunk_file {
    char name[96]; /* relative to the cache directory: dirty/<disk id>/<idx>.<nonce> */
    int fd;
    unsigned refs;
};

enum slot_kind {
    SLOT_NONE, /* nothing at this level: look further down */
    SLOT_FILE,
    SLOT_ZERO, /* the chunk is zeros (trimmed) */
};

struct dirty_chunk {
    uint64_t idx;
    enum slot_kind live_kind;
    struct chunk_file *live;
    enum slot_kind frozen_kind;
    struct chunk_file *frozen;
    uint64_t frozen_gen;
};

/* A frozen chunk waiting for its fsync and journal row (durability=local). */
struct journal_item {
    uint64_t idx, gen;
    enum slot_kind kind;
    struct chunk_file *file;       /* ref held; NULL for zero */
    struct chunk_file *superseded; /* the frozen file this replaced; ref held until journaled */
};

struct disk {
    struct disk_env *env;
    struct meta_disk meta;
    uint64_t n_chunks;
    char dirty_dir[PATH_MAX]; /* absolute */

    pthread_mutex_t journal_lock;
    pthread_mutex_t round_lock;
    pthread_rwlock_t barrier;
    pthread_mutex_t stripes[DISK_STRIPES];

    pthread_mutex_t lock; /* protects everything below */
    pthread_cond_t progress;
    struct chunk_map *head; /* committed */
    GTree *dirty;           /* idx -> struct dirty_chunk */
    GArray *journal;        /* struct journal_item, in gen order */
    uint64_t flush_gen;     /* the latest freeze */
    uint64_t journal_gen;   /* durability=local: journaled up to here */
    uint64_t committed_gen; /* the head is this flush's state */
    double first_unuploaded; /* monotonic time of the oldest flush not yet uploaded; 0 if none */
    bool failed;            /* metadata commit failed: refuse further flushes */
    uint64_t next_read;     /* end of the last read, for sequential read-ahead */
    uint64_t prefetched_to; /* chunk index read-ahead has reached */
    struct disk_stats stats;
};

static double disk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *disk_durability_to_string(enum disk_durability d)
{
    return d == DISK_DURABILITY_REMOTE ? "remote" : "local";
}

const char *disk_name(const struct disk *d)
{
    return d->meta.name;
}

int64_t disk_id(const struct disk *d)
{
    return d->meta.id;
}

uint64_t disk_size(const struct disk *d)
{
    return d->meta.size;
}

uint32_t disk_chunk_size(const struct disk *d)
{
    return d->meta.chunk_size;
}

static gint disk_idx_compare(gconstpointer a, gconstpointer b, gpointer unused)
{
    uint64_t x = (uint64_t)(uintptr_t)a, y = (uint64_t)(uintptr_t)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* ---- chunk files --------------------------------------------------------------------------- */

static void chunk_file_unref_locked(struct disk *d, struct chunk_file *f)
{
    char path[PATH_MAX];

    if (!f || --f->refs > 0)
        return;
    close(f->fd);
    snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, f->name);
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("disk", "unlink %s: %m", path);
    d->stats.dirty_bytes -= d->meta.chunk_size;
    chunk_cache_add_dirty(d->env->cache, -(int64_t)d->meta.chunk_size);
    g_free(f);
}

static void chunk_file_unref(struct disk *d, struct chunk_file *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&d->lock);
    chunk_file_unref_locked(d, f);
    pthread_mutex_unlock(&d->lock);
}

/* Creates an empty (sparse, all-zero) chunk file for idx, with one reference. */
static int chunk_file_create(struct disk *d, uint64_t idx, struct chunk_file **out)
{
    struct chunk_file *f = g_new0(struct chunk_file, 1);
    char path[PATH_MAX];
    uint64_t nonce;

    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
        nonce = (uint64_t)disk_now() ^ (uint64_t)(uintptr_t)f;
    snprintf(f->name, sizeof f->name, "dirty/%lld/%llu.%016llx", (long long)d->meta.id,
             (unsigned long long)idx, (unsigned long long)nonce);
    snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, f->name);
    f->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (f->fd < 0 || ftruncate(f->fd, d->meta.chunk_size) < 0) {
        int err = -errno;
        log_error("disk", "%s: create %s: %s", d->meta.name, path, strerror(-err));
        if (f->fd >= 0) {
            close(f->fd);
            unlink(path);
        }
        g_free(f);
        return err;
    }
    f->refs = 1;
    pthread_mutex_lock(&d->lock);
    d->stats.dirty_bytes += d->meta.chunk_size;
    pthread_mutex_unlock(&d->lock);
    chunk_cache_add_dirty(d->env->cache, d->meta.chunk_size);
    *out = f;
    return 0;
}

static int disk_pread_all(int fd, void *buf, size_t count, uint64_t offset)
{
    size_t done = 0;

    while (done < count) {
        ssize_t n = pread(fd, (char *)buf + done, count - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            memset((char *)buf + done, 0, count - done); /* sparse tail */
            return 0;
        }
        done += (size_t)n;
    }
    return 0;
}

static int disk_pwrite_all(int fd, const void *buf, size_t count, uint64_t offset)
{
    size_t done = 0;

    while (done < count) {
        ssize_t n = pwrite(fd, (const char *)buf + done, count - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        done += (size_t)n;
    }
    return 0;
}

static struct dirty_chunk *disk_dirty_get_locked(struct disk *d, uint64_t idx)
{
    return g_tree_lookup(d->dirty, (gpointer)(uintptr_t)idx);
}

static struct dirty_chunk *disk_dirty_get_or_add_locked(struct disk *d, uint64_t idx)
{
    struct dirty_chunk *dc = disk_dirty_get_locked(d, idx);

    if (!dc) {
        dc = g_new0(struct dirty_chunk, 1);
        dc->idx = idx;
        g_tree_insert(d->dirty, (gpointer)(uintptr_t)idx, dc);
    }
    return dc;
}

static void disk_dirty_drop_if_empty_locked(struct disk *d, struct dirty_chunk *dc)
{
    if (dc->live_kind == SLOT_NONE && dc->frozen_kind == SLOT_NONE)
        g_tree_remove(d->dirty, (gpointer)(uintptr_t)dc->idx); /* frees dc */
}

/* ---- what a chunk holds now --------------------------------------------------------------- */

enum chunk_source {
    SOURCE_ZERO,
    SOURCE_FILE,
    SOURCE_HEAD,
};

/* Finds where chunk idx's current content is.  For SOURCE_FILE a reference is taken.  Caller
 * holds d->lock. */
static enum chunk_source disk_chunk_source_locked(struct disk *d, uint64_t idx,
                                                  struct chunk_file **file, struct chunk_hash *h)
{
    struct dirty_chunk *dc = disk_dirty_get_locked(d, idx);
    enum slot_kind kind = SLOT_NONE;
    struct chunk_file *f = NULL;

    if (dc && dc->live_kind != SLOT_NONE) {
        kind = dc->live_kind;
        f = dc->live;
    } else if (dc && dc->frozen_kind != SLOT_NONE) {
        kind = dc->frozen_kind;
        f = dc->frozen;
    }
    if (kind == SLOT_ZERO)
        return SOURCE_ZERO;
    if (kind == SLOT_FILE) {
        f->refs++;
        *file = f;
        return SOURCE_FILE;
    }
    return chunk_map_get(d->head, idx, h) ? SOURCE_HEAD : SOURCE_ZERO;
}

/* ---- read ---------------------------------------------------------------------------------- */

static void disk_readahead(struct disk *d, uint64_t next_idx)
{
    uint64_t ahead = d->env->readahead_bytes / d->meta.chunk_size;
    struct chunk_hash hashes[64];
    unsigned n = 0;

    if (ahead < 1)
        ahead = 1;
    if (ahead > 64)
        ahead = 64;
    pthread_mutex_lock(&d->lock);
    uint64_t from = next_idx > d->prefetched_to ? next_idx : d->prefetched_to;
    uint64_t to = next_idx + ahead < d->n_chunks ? next_idx + ahead : d->n_chunks;
    for (uint64_t i = from; i < to; i++) {
        struct chunk_file *f = NULL;
        if (disk_chunk_source_locked(d, i, &f, &hashes[n]) == SOURCE_HEAD)
            n++;
        else if (f)
            chunk_file_unref_locked(d, f);
    }
    if (to > d->prefetched_to)
        d->prefetched_to = to;
    pthread_mutex_unlock(&d->lock);
    for (unsigned i = 0; i < n; i++)
        chunk_cache_prefetch(d->env->cache, &hashes[i], d->meta.chunk_size);
}

int disk_read(struct disk *d, void *buf, uint32_t count, uint64_t offset)
{
    const uint64_t cs = d->meta.chunk_size;
    char *p = buf;
    int r = 0;

    bool sequential;
    pthread_mutex_lock(&d->lock);
    sequential = offset == d->next_read && offset > 0;
    d->next_read = offset + count;
    d->stats.reads++;
    d->stats.read_bytes += count;
    pthread_mutex_unlock(&d->lock);
    if (sequential && d->env->readahead_bytes > 0)
        disk_readahead(d, (offset + count + cs - 1) / cs);

    while (count > 0 && r == 0) {
        uint64_t idx = offset / cs, in = offset % cs;
        uint32_t n = (uint32_t)(cs - in < count ? cs - in : count);
        struct chunk_file *f = NULL;
        struct chunk_hash h;

        pthread_mutex_lock(&d->lock);
        enum chunk_source src = disk_chunk_source_locked(d, idx, &f, &h);
        pthread_mutex_unlock(&d->lock);
        switch (src) {
        case SOURCE_ZERO:
            memset(p, 0, n);
            break;
        case SOURCE_FILE:
            r = disk_pread_all(f->fd, p, n, in);
            if (r < 0)
                log_error("disk", "%s: read %s: %s", d->meta.name, f->name, strerror(-r));
            chunk_file_unref(d, f);
            break;
        case SOURCE_HEAD:
            r = chunk_cache_read(d->env->cache, &h, cs, p, n, in);
            break;
        }
        p += n;
        offset += n;
        count -= n;
    }
    return r;
}

/* ---- write --------------------------------------------------------------------------------- */

static bool disk_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;

    if (len == 0)
        return true;
    return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

/* Sets chunk idx's live slot to zeros, dropping a live file.  Caller holds the chunk's stripe
 * and the barrier (shared). */
static void disk_set_live_zero(struct disk *d, uint64_t idx)
{
    pthread_mutex_lock(&d->lock);
    struct dirty_chunk *dc = disk_dirty_get_or_add_locked(d, idx);
    struct chunk_file *old = dc->live_kind == SLOT_FILE ? dc->live : NULL;
    dc->live_kind = SLOT_ZERO;
    dc->live = NULL;
    chunk_file_unref_locked(d, old);
    pthread_mutex_unlock(&d->lock);
}

/* Writes n bytes at in within chunk idx.  data NULL means zeros.  Caller holds the chunk's
 * stripe and the barrier (shared). */
static int disk_write_chunk(struct disk *d, uint64_t idx, uint64_t in, const void *data,
                            uint32_t n)
{
    const uint32_t cs = d->meta.chunk_size;
    struct chunk_file *live = NULL, *base_file = NULL;
    struct chunk_hash base_hash;
    enum chunk_source base;
    int r;

    if (n == cs && (!data || disk_is_zero(data, n))) {
        disk_set_live_zero(d, idx);
        return 0;
    }

    pthread_mutex_lock(&d->lock);
    struct dirty_chunk *dc = disk_dirty_get_locked(d, idx);
    if (dc && dc->live_kind == SLOT_FILE) {
        live = dc->live;
        live->refs++;
    }
    base = live ? SOURCE_FILE : disk_chunk_source_locked(d, idx, &base_file, &base_hash);
    pthread_mutex_unlock(&d->lock);

    if (!live) {
        /* Copy-on-write: a new live file, holding the old content when the write is partial.
         * Frozen and cached files are never written. */
        r = chunk_file_create(d, idx, &live);
        if (r == 0 && n < cs) {
            if (base == SOURCE_FILE) {
                loff_t src_off = 0, dst_off = 0;
                size_t done = 0;
                while (done < cs && r == 0) {
                    ssize_t k = copy_file_range(base_file->fd, &src_off, live->fd, &dst_off,
                                                cs - done, 0);
                    if (k < 0 && errno != EINTR)
                        r = -errno;
                    else if (k == 0)
                        break;
                    else if (k > 0)
                        done += (size_t)k;
                }
            } else if (base == SOURCE_HEAD) {
                r = chunk_cache_copy_to_fd(d->env->cache, &base_hash, cs, live->fd);
            }
            if (r < 0)
                log_error("disk", "%s: chunk %llu: cannot load it for a partial write: %s",
                          d->meta.name, (unsigned long long)idx, strerror(-r));
        }
        chunk_file_unref(d, base_file);
        if (r < 0) {
            chunk_file_unref(d, live);
            return r;
        }
        pthread_mutex_lock(&d->lock);
        dc = disk_dirty_get_or_add_locked(d, idx);
        dc->live_kind = SLOT_FILE;
        dc->live = live; /* the creation reference becomes the slot's */
        live->refs++;    /* and ours, for the write below */
        pthread_mutex_unlock(&d->lock);
    }

    if (data) {
        r = disk_pwrite_all(live->fd, data, n, in);
    } else {
        r = fallocate(live->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)in, n) < 0
                ? -errno
                : 0;
        if (r == -EOPNOTSUPP) {
            void *zeros = g_malloc0(n);
            r = disk_pwrite_all(live->fd, zeros, n, in);
            g_free(zeros);
        }
    }
    if (r < 0)
        log_error("disk", "%s: write %s: %s", d->meta.name, live->name, strerror(-r));
    chunk_file_unref(d, live);
    return r;
}

static int disk_modify(struct disk *d, const void *buf, uint32_t count, uint64_t offset)
{
    const uint64_t cs = d->meta.chunk_size;
    const char *p = buf;
    int r = 0;

    pthread_rwlock_rdlock(&d->barrier);
    while (count > 0 && r == 0) {
        uint64_t idx = offset / cs, in = offset % cs;
        uint32_t n = (uint32_t)(cs - in < count ? cs - in : count);
        pthread_mutex_t *stripe = &d->stripes[idx % DISK_STRIPES];

        pthread_mutex_lock(stripe);
        r = disk_write_chunk(d, idx, in, p, n);
        pthread_mutex_unlock(stripe);
        if (p)
            p += n;
        offset += n;
        count -= n;
    }
    pthread_rwlock_unlock(&d->barrier);
    return r;
}

int disk_write(struct disk *d, const void *buf, uint32_t count, uint64_t offset)
{
    pthread_mutex_lock(&d->lock);
    d->stats.writes++;
    d->stats.write_bytes += count;
    pthread_mutex_unlock(&d->lock);
    return disk_modify(d, buf, count, offset);
}

int disk_zero(struct disk *d, uint32_t count, uint64_t offset)
{
    pthread_mutex_lock(&d->lock);
    d->stats.zeroes++;
    pthread_mutex_unlock(&d->lock);
    return disk_modify(d, NULL, count, offset);
}

/* ---- flush: freeze, journal, upload ---------------------------------------------------------- */

struct disk_freeze {
    struct disk *d;
    uint64_t gen;
};

static gboolean disk_freeze_one(gpointer key, gpointer value, gpointer opaque)
{
    struct disk_freeze *fz = opaque;
    struct disk *d = fz->d;
    struct dirty_chunk *dc = value;
    struct journal_item item = {.idx = dc->idx, .gen = fz->gen, .kind = dc->live_kind};

    if (dc->live_kind == SLOT_NONE)
        return FALSE;
    if (dc->frozen_kind != SLOT_NONE)
        d->stats.pending_bytes -= d->meta.chunk_size;
    d->stats.pending_bytes += d->meta.chunk_size;
    item.superseded = dc->frozen_kind == SLOT_FILE ? dc->frozen : NULL;
    dc->frozen_kind = dc->live_kind;
    dc->frozen = dc->live;
    dc->frozen_gen = fz->gen;
    dc->live_kind = SLOT_NONE;
    dc->live = NULL;
    if (d->env->durability == DISK_DURABILITY_LOCAL) {
        item.file = dc->frozen;
        if (item.file)
            item.file->refs++;
        g_array_append_val(d->journal, item);
    } else {
        chunk_file_unref_locked(d, item.superseded);
    }
    return FALSE;
}

/* Freezes every live chunk as the state of a new flush and returns the flush's generation
 * (or the latest one, if nothing was written since). */
static uint64_t disk_freeze(struct disk *d)
{
    struct disk_freeze fz = {.d = d};
    bool any = false;

    pthread_rwlock_wrlock(&d->barrier);
    pthread_mutex_lock(&d->lock);
    /* Only a new generation if something is live. */
    GTreeNode *node = g_tree_node_first(d->dirty);
    for (; node && !any; node = g_tree_node_next(node))
        any = ((struct dirty_chunk *)g_tree_node_value(node))->live_kind != SLOT_NONE;
    if (any) {
        fz.gen = ++d->flush_gen;
        g_tree_foreach(d->dirty, disk_freeze_one, &fz);
        if (d->first_unuploaded == 0)
            d->first_unuploaded = disk_now();
    }
    fz.gen = d->flush_gen;
    d->stats.flushes++;
    pthread_mutex_unlock(&d->lock);
    pthread_rwlock_unlock(&d->barrier);
    return fz.gen;
}

/* durability=local: fsyncs the frozen files of every flush up to gen and records them in the
 * pending journal. */
static int disk_journal(struct disk *d, uint64_t gen)
{
    GArray *items;
    int r = 0;

    pthread_mutex_lock(&d->journal_lock);
    pthread_mutex_lock(&d->lock);
    if (d->journal_gen >= gen) {
        pthread_mutex_unlock(&d->lock);
        pthread_mutex_unlock(&d->journal_lock);
        return 0;
    }
    items = d->journal;
    d->journal = g_array_new(FALSE, FALSE, sizeof(struct journal_item));
    pthread_mutex_unlock(&d->lock);

    /* Make the frozen files and their directory entries durable.  Past a few files, one
     * syncfs of the cache's file system beats an fsync per file. */
    if (items->len > 0) {
        int dfd = open(d->dirty_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            r = -errno;
        for (guint i = 0; r == 0 && items->len <= 16 && i < items->len; i++) {
            struct journal_item *it = &g_array_index(items, struct journal_item, i);
            if (it->file && fdatasync(it->file->fd) < 0)
                r = -errno;
        }
        if (r == 0 && (items->len > 16 ? syncfs(dfd) : fsync(dfd)) < 0)
            r = -errno;
        if (dfd >= 0)
            close(dfd);
        if (r < 0)
            log_error("disk", "%s: cannot make flushed data durable in %s: %s", d->meta.name,
                      d->dirty_dir, strerror(-r));
    }
    if (r == 0 && items->len > 0) {
        struct meta_pending *rows = g_new(struct meta_pending, items->len);
        for (guint i = 0; i < items->len; i++) {
            struct journal_item *it = &g_array_index(items, struct journal_item, i);
            rows[i] = (struct meta_pending){it->idx, it->gen, it->file ? it->file->name : ""};
        }
        pthread_mutex_lock(d->env->meta_lock);
        r = meta_begin(d->env->meta);
        if (r == 0)
            r = meta_pending_put_after_head(d->env->meta, d->meta.id, rows, items->len);
        if (r == 0)
            r = meta_commit(d->env->meta);
        else
            meta_rollback(d->env->meta);
        pthread_mutex_unlock(d->env->meta_lock);
        g_free(rows);
    }

    pthread_mutex_lock(&d->lock);
    for (guint i = 0; i < items->len; i++) {
        struct journal_item *it = &g_array_index(items, struct journal_item, i);
        if (r < 0) {
            /* Keep the items so that a later flush retries them. */
            g_array_append_val(d->journal, *it);
            continue;
        }
        chunk_file_unref_locked(d, it->file);
        chunk_file_unref_locked(d, it->superseded);
    }
    if (r < 0) {
        /* Keep gen order: the retried items go before any added meanwhile. */
        GArray *merged = g_array_new(FALSE, FALSE, sizeof(struct journal_item));
        g_array_append_vals(merged, d->journal->data, d->journal->len);
        g_array_free(d->journal, TRUE);
        d->journal = merged;
    } else if (gen > d->journal_gen) {
        d->journal_gen = gen;
    }
    pthread_mutex_unlock(&d->lock);
    g_array_free(items, TRUE);
    pthread_mutex_unlock(&d->journal_lock);
    return r;
}

/* One chunk of an upload round. */
struct round_item {
    uint64_t idx;
    enum slot_kind kind;
    struct chunk_file *file; /* ref held */
    struct chunk_hash hash;
    bool zero;
    int result;
};

struct round {
    struct disk *d;
    struct round_item *items;
    size_t n;
    size_t next; /* next item to take; under d->lock */
    pthread_mutex_t lock;
    pthread_cond_t done;
    unsigned running;
};

static int round_upload_item(struct disk *d, struct round_item *it, void *buf)
{
    const uint32_t cs = d->meta.chunk_size;
    char path[PATH_MAX];
    int r;

    if (it->kind == SLOT_ZERO) {
        it->zero = true;
        return 0;
    }
    r = disk_pread_all(it->file->fd, buf, cs, 0);
    if (r < 0)
        return r;
    if (disk_is_zero(buf, cs)) {
        it->zero = true; /* all-zero chunks are never stored */
        return 0;
    }
    r = hash_sha256(buf, cs, it->hash.b);
    if (r < 0)
        return r;
    snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, it->file->name);
    r = chunk_cache_upload(d->env->cache, &it->hash, buf, cs, path);
    if (r == 0) {
        pthread_mutex_lock(&d->lock);
        d->stats.uploads++;
        d->stats.upload_bytes += cs;
        pthread_mutex_unlock(&d->lock);
    }
    return r;
}

static void *round_worker(void *opaque)
{
    struct round *rd = opaque;
    struct disk *d = rd->d;
    void *buf = g_try_malloc(d->meta.chunk_size);

    for (;;) {
        pthread_mutex_lock(&rd->lock);
        size_t i = rd->next < rd->n ? rd->next++ : rd->n;
        pthread_mutex_unlock(&rd->lock);
        if (i == rd->n)
            break;
        rd->items[i].result = buf ? round_upload_item(d, &rd->items[i], buf) : -ENOMEM;
    }
    g_free(buf);
    pthread_mutex_lock(&rd->lock);
    rd->running--;
    pthread_cond_signal(&rd->done);
    pthread_mutex_unlock(&rd->lock);
    return NULL;
}

struct meta_page_list {
    GArray *pages; /* struct meta_page */
};

static int disk_collect_page(const struct chunk_hash *hash, const void *page, size_t len,
                             void *opaque)
{
    struct meta_page_list *l = opaque;
    struct meta_page p = {.hash = *hash, .data = g_memdup2(page, len), .len = len};

    g_array_append_val(l->pages, p);
    return 0;
}

/* Uploads the frozen set of the latest flush and commits it as the head.  Caller holds
 * round_lock. */
static int disk_round(struct disk *d)
{
    struct round rd = {.d = d};
    struct meta_page_list pages = {0};
    struct chunk_hash root;
    uint64_t gen;
    int r = 0;

    if (d->env->durability == DISK_DURABILITY_LOCAL) {
        /* Journal first, so that what we commit was recoverable locally all along. */
        pthread_mutex_lock(&d->lock);
        gen = d->flush_gen;
        pthread_mutex_unlock(&d->lock);
        r = disk_journal(d, gen);
        if (r < 0)
            return r;
    }

    pthread_mutex_lock(&d->lock);
    gen = d->flush_gen;
    if (d->committed_gen >= gen) {
        pthread_mutex_unlock(&d->lock);
        return 0;
    }
    rd.items = g_new0(struct round_item, g_tree_nnodes(d->dirty));
    for (GTreeNode *node = g_tree_node_first(d->dirty); node; node = g_tree_node_next(node)) {
        struct dirty_chunk *dc = g_tree_node_value(node);
        if (dc->frozen_kind == SLOT_NONE)
            continue;
        struct round_item *it = &rd.items[rd.n++];
        it->idx = dc->idx;
        it->kind = dc->frozen_kind;
        it->file = dc->frozen;
        if (it->file)
            it->file->refs++;
    }
    pthread_mutex_unlock(&d->lock);

    /* Upload in parallel. */
    pthread_mutex_init(&rd.lock, NULL);
    pthread_cond_init(&rd.done, NULL);
    unsigned workers = d->env->upload_parallel < rd.n ? d->env->upload_parallel : (unsigned)rd.n;
    for (unsigned i = 0; i < workers; i++) {
        pthread_t t;
        pthread_mutex_lock(&rd.lock);
        rd.running++;
        pthread_mutex_unlock(&rd.lock);
        if (pthread_create(&t, NULL, round_worker, &rd) != 0) {
            pthread_mutex_lock(&rd.lock);
            rd.running--;
            pthread_mutex_unlock(&rd.lock);
            break;
        }
        pthread_detach(t);
    }
    pthread_mutex_lock(&rd.lock);
    if (rd.running == 0 && rd.next < rd.n) {
        /* No thread could start: do it here. */
        rd.running++;
        pthread_mutex_unlock(&rd.lock);
        round_worker(&rd);
        pthread_mutex_lock(&rd.lock);
    }
    while (rd.running > 0)
        pthread_cond_wait(&rd.done, &rd.lock);
    pthread_mutex_unlock(&rd.lock);
    pthread_mutex_destroy(&rd.lock);
    pthread_cond_destroy(&rd.done);

    for (size_t i = 0; i < rd.n && r == 0; i++)
        if (rd.items[i].result < 0)
            r = rd.items[i].result;
    if (r < 0) {
        log_error("disk", "%s: upload of flush %llu failed: %s", d->meta.name,
                  (unsigned long long)gen, strerror(-r));
        pthread_mutex_lock(&d->lock);
        d->stats.upload_failures++;
        goto out_unref_locked;
    }

    /* Commit: the head becomes the frozen state of flush `gen`. */
    pages.pages = g_array_new(FALSE, FALSE, sizeof(struct meta_page));
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < rd.n; i++) {
        struct round_item *it = &rd.items[i];
        struct dirty_chunk *dc = disk_dirty_get_locked(d, it->idx);
        if (it->zero)
            chunk_map_remove(d->head, it->idx);
        else if ((r = chunk_map_set(d->head, it->idx, &it->hash)) < 0)
            break;
        if (dc && dc->frozen_gen <= gen && dc->frozen == it->file &&
            dc->frozen_kind == it->kind) {
            chunk_file_unref_locked(d, dc->frozen);
            dc->frozen = NULL;
            dc->frozen_kind = SLOT_NONE;
            d->stats.pending_bytes -= d->meta.chunk_size;
            disk_dirty_drop_if_empty_locked(d, dc);
        }
    }
    if (r == 0)
        r = chunk_map_encode(d->head, disk_collect_page, &pages, &root);
    pthread_mutex_unlock(&d->lock);

    if (r == 0) {
        pthread_mutex_lock(d->env->meta_lock);
        r = meta_begin(d->env->meta);
        if (r == 0)
            r = meta_pages_put(d->env->meta, (struct meta_page *)pages.pages->data,
                               pages.pages->len);
        if (r == 0)
            r = meta_head_set(d->env->meta, d->meta.id, &root, gen);
        if (r == 0)
            r = meta_commit(d->env->meta);
        else
            meta_rollback(d->env->meta);
        pthread_mutex_unlock(d->env->meta_lock);
    }

    pthread_mutex_lock(&d->lock);
    if (r < 0) {
        /* The in-memory head is ahead of the database now; the pending journal still holds
         * everything, so a restart recovers.  Until then, refuse to acknowledge flushes. */
        d->failed = true;
        chunk_map_forget_pages(d->head); /* the pages went with the rolled-back transaction */
        log_error("disk", "%s: cannot commit flush %llu to the metadata: %s; the disk is "
                          "read-only until a restart",
                  d->meta.name, (unsigned long long)gen, strerror(-r));
    } else {
        d->committed_gen = gen;
        d->meta.head_root = root;
        d->stats.rounds++;
        d->first_unuploaded = d->committed_gen >= d->flush_gen ? 0 : disk_now();
        pthread_cond_broadcast(&d->progress);
    }
out_unref_locked:
    for (size_t i = 0; i < rd.n; i++)
        chunk_file_unref_locked(d, rd.items[i].file);
    pthread_mutex_unlock(&d->lock);
    if (pages.pages) {
        for (guint i = 0; i < pages.pages->len; i++)
            g_free(g_array_index(pages.pages, struct meta_page, i).data);
        g_array_free(pages.pages, TRUE);
    }
    g_free(rd.items);
    return r;
}

int disk_flush(struct disk *d)
{
    uint64_t gen = disk_freeze(d);
    int r;

    pthread_mutex_lock(&d->lock);
    bool failed = d->failed;
    pthread_mutex_unlock(&d->lock);
    if (failed)
        return -EIO;

    if (d->env->durability == DISK_DURABILITY_LOCAL)
        return disk_journal(d, gen);

    pthread_mutex_lock(&d->round_lock);
    pthread_mutex_lock(&d->lock);
    bool done = d->committed_gen >= gen;
    pthread_mutex_unlock(&d->lock);
    r = done ? 0 : disk_round(d);
    pthread_mutex_unlock(&d->round_lock);
    return r;
}

int disk_upload_due(struct disk *d, double delay_s)
{
    int r;

    pthread_mutex_lock(&d->lock);
    bool due = d->first_unuploaded > 0 && disk_now() - d->first_unuploaded >= delay_s &&
               d->committed_gen < d->flush_gen && !d->failed;
    pthread_mutex_unlock(&d->lock);
    if (!due)
        return 0;
    pthread_mutex_lock(&d->round_lock);
    r = disk_round(d);
    pthread_mutex_unlock(&d->round_lock);
    if (r < 0) {
        /* Try again after another delay rather than in a tight loop. */
        pthread_mutex_lock(&d->lock);
        d->first_unuploaded = disk_now();
        pthread_mutex_unlock(&d->lock);
        return r;
    }
    return 1;
}

/* ---- prefetch and extents -------------------------------------------------------------- */

void disk_prefetch(struct disk *d, uint32_t count, uint64_t offset)
{
    const uint64_t cs = d->meta.chunk_size;
    uint64_t first = offset / cs, last = (offset + count - 1) / cs;

    for (uint64_t i = first; count > 0 && i <= last; i++) {
        struct chunk_file *f = NULL;
        struct chunk_hash h;
        pthread_mutex_lock(&d->lock);
        enum chunk_source src = disk_chunk_source_locked(d, i, &f, &h);
        if (f)
            chunk_file_unref_locked(d, f);
        pthread_mutex_unlock(&d->lock);
        if (src == SOURCE_HEAD)
            chunk_cache_prefetch(d->env->cache, &h, cs);
    }
}

/* Whether chunk idx holds data, and the next index after idx where that may change.  Caller
 * holds d->lock. */
static bool disk_chunk_has_data_locked(struct disk *d, uint64_t idx, uint64_t *next_change)
{
    struct dirty_chunk *dc = disk_dirty_get_locked(d, idx);
    struct chunk_hash h;

    *next_change = idx + 1;
    if (dc && dc->live_kind != SLOT_NONE)
        return dc->live_kind == SLOT_FILE;
    if (dc && dc->frozen_kind != SLOT_NONE)
        return dc->frozen_kind == SLOT_FILE;
    if (chunk_map_get(d->head, idx, &h))
        return true;

    /* A hole: it lasts until the next head entry or dirty chunk. */
    uint64_t next = d->n_chunks, head_next;
    if (chunk_map_next(d->head, idx + 1, &head_next, NULL) && head_next < next)
        next = head_next;
    GTreeNode *node = g_tree_upper_bound(d->dirty, (gpointer)(uintptr_t)idx);
    if (node) {
        uint64_t dirty_next = (uint64_t)(uintptr_t)g_tree_node_key(node);
        if (dirty_next < next)
            next = dirty_next;
    }
    *next_change = next;
    return false;
}

int disk_extents(struct disk *d, uint64_t count, uint64_t offset, disk_extent_fn fn,
                 void *opaque)
{
    const uint64_t cs = d->meta.chunk_size;
    uint64_t end = offset + count, pos = offset;
    int r = 0;

    while (pos < end && r == 0) {
        uint64_t idx = pos / cs, next_change, run_end;
        pthread_mutex_lock(&d->lock);
        bool data = disk_chunk_has_data_locked(d, idx, &next_change);
        /* Extend the run across neighbours of the same kind. */
        while (next_change * cs < end && next_change < d->n_chunks) {
            uint64_t after;
            if (disk_chunk_has_data_locked(d, next_change, &after) != data)
                break;
            next_change = after;
        }
        pthread_mutex_unlock(&d->lock);
        run_end = next_change * cs < end ? next_change * cs : end;
        r = fn(pos, run_end - pos, !data, opaque);
        pos = run_end;
    }
    return r;
}

/* ---- open / close / stats ---------------------------------------------------------------- */

static int disk_recover_pending(const struct meta_pending *p, void *opaque)
{
    struct disk *d = opaque;
    struct dirty_chunk *dc;
    char path[PATH_MAX];

    if (p->idx >= d->n_chunks) {
        log_error("disk", "%s: pending chunk %llu is past the end of the disk", d->meta.name,
                  (unsigned long long)p->idx);
        return -EBADMSG;
    }
    dc = disk_dirty_get_or_add_locked(d, p->idx);
    dc->frozen_gen = p->gen;
    if (p->file[0] == '\0') {
        dc->frozen_kind = SLOT_ZERO;
    } else {
        struct chunk_file *f = g_new0(struct chunk_file, 1);
        snprintf(f->name, sizeof f->name, "%s", p->file);
        snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, p->file);
        f->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (f->fd < 0) {
            int err = -errno;
            log_error("disk", "%s: pending chunk %llu: open %s: %s (the local journal names a "
                              "file that is gone)",
                      d->meta.name, (unsigned long long)p->idx, path, strerror(-err));
            g_free(f);
            return err;
        }
        f->refs = 1;
        dc->frozen_kind = SLOT_FILE;
        dc->frozen = f;
        d->stats.dirty_bytes += d->meta.chunk_size;
        chunk_cache_add_dirty(d->env->cache, d->meta.chunk_size);
    }
    d->stats.pending_bytes += d->meta.chunk_size;
    if (p->gen > d->flush_gen)
        d->flush_gen = p->gen;
    return 0;
}

/* Deletes files in the dirty directory that the journal does not name: live data of a
 * previous run that was never flushed. */
static void disk_remove_orphans(struct disk *d)
{
    GHashTable *keep = g_hash_table_new(g_str_hash, g_str_equal);
    GDir *dir = g_dir_open(d->dirty_dir, 0, NULL);
    const char *name;

    for (GTreeNode *node = g_tree_node_first(d->dirty); node; node = g_tree_node_next(node)) {
        struct dirty_chunk *dc = g_tree_node_value(node);
        if (dc->frozen)
            g_hash_table_add(keep, strrchr(dc->frozen->name, '/') + 1);
    }
    while (dir && (name = g_dir_read_name(dir))) {
        if (g_hash_table_contains(keep, name))
            continue;
        char *path = g_build_filename(d->dirty_dir, name, NULL);
        unlink(path);
        g_free(path);
    }
    if (dir)
        g_dir_close(dir);
    g_hash_table_destroy(keep);
}

int disk_open(struct disk_env *env, const struct meta_disk *m, struct disk **out)
{
    struct disk *d = g_new0(struct disk, 1);
    pthread_rwlockattr_t attr;
    char parent[PATH_MAX];
    int r;

    d->env = env;
    d->meta = *m;
    d->n_chunks = m->size / m->chunk_size;
    pthread_mutex_init(&d->journal_lock, NULL);
    pthread_mutex_init(&d->round_lock, NULL);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->progress, NULL);
    /* Writer preference, so that a flush is not starved by a stream of writes. */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&d->barrier, &attr);
    pthread_rwlockattr_destroy(&attr);
    for (int i = 0; i < DISK_STRIPES; i++)
        pthread_mutex_init(&d->stripes[i], NULL);
    d->dirty = g_tree_new_full(disk_idx_compare, NULL, NULL, g_free);
    d->journal = g_array_new(FALSE, FALSE, sizeof(struct journal_item));
    d->flush_gen = d->journal_gen = d->committed_gen = m->flush_gen;

    if (snprintf(parent, sizeof parent, "%s/dirty", env->cache_dir) >= (int)sizeof parent - 24) {
        log_error("disk", "%s: the cache path is too long", m->name);
        r = -ENAMETOOLONG;
        goto fail;
    }
    if (snprintf(d->dirty_dir, sizeof d->dirty_dir, "%s/%lld", parent, (long long)m->id) >=
        (int)sizeof d->dirty_dir) {
        r = -ENAMETOOLONG;
        goto fail;
    }
    if ((mkdir(parent, 0700) < 0 && errno != EEXIST) ||
        (mkdir(d->dirty_dir, 0700) < 0 && errno != EEXIST)) {
        r = -errno;
        log_error("disk", "%s: mkdir %s: %s", m->name, d->dirty_dir, strerror(-r));
        goto fail;
    }

    pthread_mutex_lock(env->meta_lock);
    r = meta_map_load(env->meta, m, &d->head);
    pthread_mutex_unlock(env->meta_lock);
    if (r < 0) {
        log_error("disk", "%s: cannot load its chunk map: %s", m->name, strerror(-r));
        goto fail;
    }
    pthread_mutex_lock(env->meta_lock);
    pthread_mutex_lock(&d->lock);
    r = meta_pending_list(env->meta, m->id, disk_recover_pending, d);
    pthread_mutex_unlock(&d->lock);
    pthread_mutex_unlock(env->meta_lock);
    if (r < 0)
        goto fail;
    d->journal_gen = d->flush_gen;
    if (d->flush_gen > d->committed_gen) {
        d->first_unuploaded = disk_now();
        log_info("disk", "%s: recovered %llu bytes flushed locally but not yet uploaded",
                 m->name, (unsigned long long)d->stats.pending_bytes);
    }
    disk_remove_orphans(d);
    *out = d;
    return 0;

fail:
    disk_close(d);
    return r;
}

/* Collects every chunk file still referenced, once each. */
static gboolean disk_close_collect(gpointer key, gpointer value, gpointer opaque)
{
    GHashTable *files = opaque;
    struct dirty_chunk *dc = value;

    if (dc->live)
        g_hash_table_add(files, dc->live);
    if (dc->frozen)
        g_hash_table_add(files, dc->frozen);
    return FALSE;
}

/* Frees d.  Its files are closed, not unlinked: journaled ones must survive for the next start,
 * and the others are removed as orphans then. */
void disk_close(struct disk *d)
{
    GHashTable *files = g_hash_table_new(NULL, NULL);
    GHashTableIter it;
    gpointer f;

    if (!d)
        return;
    if (d->dirty)
        g_tree_foreach(d->dirty, disk_close_collect, files);
    for (guint i = 0; d->journal && i < d->journal->len; i++) {
        struct journal_item *item = &g_array_index(d->journal, struct journal_item, i);
        if (item->file)
            g_hash_table_add(files, item->file);
        if (item->superseded)
            g_hash_table_add(files, item->superseded);
    }
    g_hash_table_iter_init(&it, files);
    while (g_hash_table_iter_next(&it, &f, NULL)) {
        close(((struct chunk_file *)f)->fd);
        g_free(f);
        chunk_cache_add_dirty(d->env->cache, -(int64_t)d->meta.chunk_size);
    }
    g_hash_table_destroy(files);
    if (d->dirty)
        g_tree_destroy(d->dirty);
    if (d->journal)
        g_array_free(d->journal, TRUE);
    chunk_map_free(d->head);
    pthread_mutex_destroy(&d->journal_lock);
    pthread_mutex_destroy(&d->round_lock);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->progress);
    pthread_rwlock_destroy(&d->barrier);
    for (int i = 0; i < DISK_STRIPES; i++)
        pthread_mutex_destroy(&d->stripes[i]);
    g_free(d);
}

void disk_get_stats(struct disk *d, struct disk_stats *out)
{
    pthread_mutex_lock(&d->lock);
    *out = d->stats;
    out->chunks = chunk_map_count(d->head);
    out->flush_gen = d->flush_gen;
    out->committed_gen = d->committed_gen;
    pthread_mutex_unlock(&d->lock);
}
