/* disk.c: one open disk's data path: read, write with copy-on-write, zero, extents, open and
 * close.  The model is in disk.h; locks and references in disk_internal.h; flush and upload
 * in disk_flush.c. */
#include "disk_internal.h"

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

double disk_now(void)
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
    return d->version ? d->version_name : d->meta.name;
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

gint disk_idx_compare(gconstpointer a, gconstpointer b, gpointer unused)
{
    uint64_t x = (uint64_t)(uintptr_t)a, y = (uint64_t)(uintptr_t)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* ---- chunk files --------------------------------------------------------------------------- */

void chunk_file_unref_locked(struct disk *d, struct chunk_file *f)
{
    char path[PATH_MAX];

    if (!f || --f->refs > 0)
        return;
    snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, f->name);
    file_reaper_unlink(d->env->reaper, path); /* never a slow unlink under d->lock */
    d->stats.dirty_bytes -= d->meta.chunk_size;
    chunk_cache_add_dirty(d->env->cache, -(int64_t)d->meta.chunk_size);
    g_free(f);
}

void chunk_file_unref(struct disk *d, struct chunk_file *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&d->lock);
    chunk_file_unref_locked(d, f);
    pthread_mutex_unlock(&d->lock);
}

/* Opens a chunk file for one operation.  Files are not kept open: a disk may hold more dirty
 * chunks than a process may have descriptors.  Returns the fd or a negative errno. */
int chunk_file_open(struct disk *d, const struct chunk_file *f, int flags)
{
    char path[PATH_MAX];
    int fd;

    snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, f->name);
    fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) {
        fd = -errno;
        log_error("disk", "%s: open %s: %s", d->meta.name, path, strerror(-fd));
    }
    return fd;
}

uint32_t disk_chunk_blocks(const struct disk *d)
{
    return d->meta.chunk_size / CHUNK_BLOCK_SIZE;
}

/* Creates an empty (sparse, all-zero) chunk file for idx, with one reference and an empty
 * layout, and returns it open for writing in *fd_out. */
static int chunk_file_create(struct disk *d, uint64_t idx, struct chunk_file **out, int *fd_out)
{
    struct chunk_file *f = g_new0(struct chunk_file, 1);
    char path[PATH_MAX];
    uint64_t nonce;

    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
        nonce = (uint64_t)disk_now() ^ (uint64_t)(uintptr_t)f;
    snprintf(f->name, sizeof f->name, "dirty/%lld/%llu.%016llx", (long long)d->meta.id,
             (unsigned long long)idx, (unsigned long long)nonce);
    snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, f->name);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, d->meta.chunk_size) < 0) {
        int err = -errno;
        log_error("disk", "%s: create %s: %s", d->meta.name, path, strerror(-err));
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        g_free(f);
        return err;
    }
    f->refs = 1;
    *fd_out = fd;
    pthread_mutex_lock(&d->lock);
    d->stats.dirty_bytes += d->meta.chunk_size;
    pthread_mutex_unlock(&d->lock);
    chunk_cache_add_dirty(d->env->cache, d->meta.chunk_size);
    *out = f;
    return 0;
}

int disk_pread_all(int fd, void *buf, size_t count, uint64_t offset)
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

int disk_layout_read(struct disk *d, const struct chunk_layout *l, int fd, void *buf,
                     uint64_t count, uint64_t offset)
{
    const uint32_t n_blocks = disk_chunk_blocks(d);
    uint64_t pos = offset, end = offset + count;
    int r = 0;

    while (pos < end && r == 0) {
        uint32_t block = (uint32_t)(pos / CHUNK_BLOCK_SIZE);
        uint64_t run_end = (uint64_t)chunk_layout_run_end(l, block, n_blocks) * CHUNK_BLOCK_SIZE;
        char *p = (char *)buf + (pos - offset);

        if (run_end > end)
            run_end = end;
        if (chunk_layout_written(l, block))
            r = disk_pread_all(fd, p, run_end - pos, pos);
        else if (l->has_base)
            r = chunk_cache_read(d->env->cache, &l->base, d->meta.chunk_size, p, run_end - pos,
                                 pos);
        else
            memset(p, 0, run_end - pos);
        pos = run_end;
    }
    return r;
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

struct dirty_chunk *disk_dirty_get_locked(struct disk *d, uint64_t idx)
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

void disk_dirty_drop_if_empty_locked(struct disk *d, struct dirty_chunk *dc)
{
    if (dc->live_kind == SLOT_NONE && dc->frozen_kind == SLOT_NONE) {
        chunk_file_unref_locked(d, dc->spare);
        g_tree_remove(d->dirty, (gpointer)(uintptr_t)dc->idx); /* frees dc */
    }
}

/* ---- what a chunk holds now --------------------------------------------------------------- */

enum chunk_source {
    SOURCE_ZERO,
    SOURCE_FILE,
    SOURCE_HEAD,
};

/* Finds where chunk idx's current content is.  For SOURCE_FILE a reference is taken and, if
 * layout is not NULL, the file's layout copied.  Caller holds d->lock. */
static enum chunk_source disk_chunk_source_locked(struct disk *d, uint64_t idx,
                                                  struct chunk_file **file, struct chunk_hash *h,
                                                  struct chunk_layout *layout)
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
        if (layout)
            *layout = f->layout;
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
        if (disk_chunk_source_locked(d, i, &f, &hashes[n], NULL) == SOURCE_HEAD)
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
        struct chunk_layout layout;
        struct chunk_hash h;

        pthread_mutex_lock(&d->lock);
        enum chunk_source src = disk_chunk_source_locked(d, idx, &f, &h, &layout);
        pthread_mutex_unlock(&d->lock);
        switch (src) {
        case SOURCE_ZERO:
            memset(p, 0, n);
            break;
        case SOURCE_FILE: {
            int fd = chunk_file_open(d, f, O_RDONLY);
            r = fd < 0 ? fd : disk_layout_read(d, &layout, fd, p, n, in);
            if (fd >= 0)
                close(fd);
            if (r < 0)
                log_error("disk", "%s: read %s: %s", d->meta.name, f->name, strerror(-r));
            chunk_file_unref(d, f);
            break;
        }
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

bool disk_is_zero(const void *buf, size_t len)
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

/* Copies the blocks of file `from` that l marks written into fd, leaving the rest alone. */
static int disk_copy_written(struct disk *d, const struct chunk_file *from,
                             const struct chunk_layout *l, int fd)
{
    const uint32_t n_blocks = disk_chunk_blocks(d);
    int src = chunk_file_open(d, from, O_RDONLY);
    int r = src < 0 ? src : 0;
    uint64_t copied = 0;

    for (uint32_t b = 0; b < n_blocks && r == 0;) {
        uint32_t e = chunk_layout_run_end(l, b, n_blocks);
        if (chunk_layout_written(l, b)) {
            loff_t in = (loff_t)b * CHUNK_BLOCK_SIZE, out = in;
            size_t left = (size_t)(e - b) * CHUNK_BLOCK_SIZE;
            while (left > 0 && r == 0) {
                ssize_t k = copy_file_range(src, &in, fd, &out, left, 0);
                if (k < 0 && errno != EINTR)
                    r = -errno;
                else if (k == 0)
                    break; /* a sparse tail: the rest reads as zeros in both */
                else if (k > 0) {
                    left -= (size_t)k;
                    copied += (uint64_t)k;
                }
            }
        }
        b = e;
    }
    if (src >= 0)
        close(src);
    pthread_mutex_lock(&d->lock);
    d->stats.copy_bytes += copied;
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* Makes a new file for chunk idx, holding what the chunk holds now without copying it: over a
 * committed chunk it is empty with that chunk as its base; over a frozen file (flushed, not yet
 * uploaded) it gets that file's written blocks and base.  A write of the whole chunk needs
 * none of that (whole).  Returns the file, one reference, and an fd open for writing.
 *
 * The spare's incremental refresh: a chunk written flush after flush alternates between two
 * files, the frozen one and the spare (its predecessor).  When the frozen file was made from
 * the spare (below->made_from is the spare's serial), the spare already holds every block the
 * frozen file got from it, unchanged since (a frozen file, and then a spare, is never written),
 * so only the blocks written into the frozen file itself (below->own) are copied.  Without
 * that, each flush copied every block written to the chunk since its last upload: with uploads
 * far apart, the copies grew with the square of the writes. */
static int disk_file_make(struct disk *d, uint64_t idx, bool whole, struct chunk_file **out,
                          int *fd_out)
{
    struct chunk_file *below = NULL, *f = NULL;
    struct chunk_layout below_layout, below_own;
    struct chunk_hash h;
    enum chunk_source src = SOURCE_ZERO;
    uint64_t below_from = 0, spare_serial = 0;
    int fd = -1, r;

    if (!whole) {
        pthread_mutex_lock(&d->lock);
        src = disk_chunk_source_locked(d, idx, &below, &h, &below_layout);
        if (src == SOURCE_FILE) {
            below_own = below->own;
            below_from = below->made_from;
        }
        pthread_mutex_unlock(&d->lock);
    }
    /* The chunk's spare (disk_internal.h), if any, instead of a new file. */
    pthread_mutex_lock(&d->lock);
    struct dirty_chunk *dc = disk_dirty_get_locked(d, idx);
    f = dc ? dc->spare : NULL;
    if (dc)
        dc->spare = NULL;
    if (f && f->refs > 1) {
        chunk_file_unref_locked(d, f); /* still read by someone: not ours to write */
        f = NULL;
    }
    if (f)
        spare_serial = f->serial;
    pthread_mutex_unlock(&d->lock);
    if (f) {
        fd = chunk_file_open(d, f, O_RDWR);
        r = fd < 0 ? fd : 0;
        if (r == 0) {
            memset(&f->layout, 0, sizeof f->layout);
            f->seq = 0;
            f->ahead_queued = f->ahead_running = f->ahead_done = f->ahead_zero = false;
            f->pending_row = false;
        } else {
            chunk_file_unref(d, f);
            f = NULL;
        }
    }
    if (!f) {
        spare_serial = 0;
        r = chunk_file_create(d, idx, &f, &fd);
    }
    if (r == 0) {
        pthread_mutex_lock(&d->lock);
        f->serial = ++d->next_serial;
        f->made_from = src == SOURCE_FILE ? below->serial : 0;
        memset(&f->own, 0, sizeof f->own);
        pthread_mutex_unlock(&d->lock);
    }
    if (r == 0 && src == SOURCE_HEAD) {
        f->layout.has_base = true;
        f->layout.base = h;
    } else if (r == 0 && src == SOURCE_FILE) {
        bool incremental = spare_serial != 0 && below_from == spare_serial;
        r = disk_copy_written(d, below, incremental ? &below_own : &below_layout, fd);
        f->layout = below_layout;
        if (r < 0)
            log_error("disk", "%s: chunk %llu: cannot copy %s: %s", d->meta.name,
                      (unsigned long long)idx, below->name, strerror(-r));
    }
    chunk_file_unref(d, below);
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        chunk_file_unref(d, f);
        return r;
    }
    *out = f;
    *fd_out = fd;
    return 0;
}

/* Whether a write of n bytes into one chunk goes into the write log.  durability=local: always,
 * the log is what survives a crash.  durability=remote: the log is what a flush ships
 * (disk_flush.c), worth it for small writes only; a write of a quarter chunk or more is not
 * logged, which spares a sequential writer the log's copy and hash, and makes the flushes up
 * to its generation upload chunks (unlogged_gen), which for such writes costs about what
 * shipping would.  Except while the log holds a durability=local run's flushes (marked): a
 * recovery then replays this log, which must hold every write.  Caller holds the barrier
 * (shared), so flush_gen is stable. */
static bool disk_log_this(struct disk *d, uint32_t n)
{
    if (!d->wlog_append)
        return false;
    if (d->env->durability == DISK_DURABILITY_LOCAL)
        return true;
    pthread_mutex_lock(&d->lock);
    bool logged = d->wlog_marked || (d->env->ship_log && n < d->meta.chunk_size / 4);
    if (!logged && d->unlogged_gen < d->flush_gen + 1)
        d->unlogged_gen = d->flush_gen + 1;
    pthread_mutex_unlock(&d->lock);
    return logged;
}

/* Appends blocks [first, first + n) of chunk idx, as the chunk file now holds them (data, or a
 * hole if NULL), to the write log when writes go through it.  Caller holds the chunk's stripe
 * and the barrier (shared), so the record lands in the log in the order the file changed and
 * before any FLUSH that covers it (write_log.h, L1). */
static int disk_log_blocks(struct disk *d, bool logged, uint64_t idx, uint32_t first, uint32_t n,
                           const void *data)
{
    if (!logged)
        return 0;
    struct write_log_record rec = {
        .kind = data ? WRITE_LOG_DATA : WRITE_LOG_HOLE,
        .gen = d->flush_gen + 1, /* changes only under the barrier's write side */
        .idx = idx,
        .first_block = first,
        .n_blocks = n,
        .data = data,
    };
    return write_log_append(d->wlog, &rec);
}

/* Writes len bytes (data, or zeros if NULL) at off within one block of a chunk file, keeping
 * the rest of the block: the block is written whole, so it can be marked written. */
static int disk_block_update(struct disk *d, bool logged, uint64_t idx,
                             const struct chunk_layout *l, int fd, uint32_t block, uint32_t off,
                             const void *data, uint32_t len)
{
    uint64_t at = (uint64_t)block * CHUNK_BLOCK_SIZE;
    char buf[CHUNK_BLOCK_SIZE];
    int r = disk_layout_read(d, l, fd, buf, CHUNK_BLOCK_SIZE, at);

    if (r < 0)
        return r;
    if (data)
        memcpy(buf + off, data, len);
    else
        memset(buf + off, 0, len);
    r = disk_pwrite_all(fd, buf, CHUNK_BLOCK_SIZE, at);
    return r < 0 ? r : disk_log_blocks(d, logged, idx, block, 1, buf);
}

/* Writes whole blocks: data, or zeros as a hole. */
static int disk_blocks_write(int fd, const void *data, uint64_t len, uint64_t at)
{
    int r;

    if (data)
        return disk_pwrite_all(fd, data, len, at);
    r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)at, (off_t)len) < 0
            ? -errno
            : 0;
    if (r == -EOPNOTSUPP) {
        void *zeros = g_malloc0(len);
        r = disk_pwrite_all(fd, zeros, len, at);
        g_free(zeros);
    }
    return r;
}

/* Writes n bytes at in within a chunk file whose layout is l, a block at a time at the edges
 * (read-modify-write of 4 KiB, never of the chunk), and returns the blocks it covered in
 * [*first, *end). */
static int disk_file_write(struct disk *d, bool logged, uint64_t idx, const struct chunk_layout *l,
                           int fd, uint64_t in, const void *data, uint32_t n, uint32_t *first,
                           uint32_t *end)
{
    const uint32_t B = CHUNK_BLOCK_SIZE;
    const char *p = data;
    uint64_t stop = in + n;
    uint32_t head = (uint32_t)(in % B), tail = (uint32_t)(stop % B);
    uint32_t fb = (uint32_t)(in / B), lb = (uint32_t)((stop - 1) / B); /* first, last block */
    uint32_t mid_first = head ? fb + 1 : fb, mid_end = tail ? lb : lb + 1;
    int r = 0;

    *first = fb;
    *end = lb + 1;
    if (head) {
        uint32_t len = fb == lb ? n : B - head;
        r = disk_block_update(d, logged, idx, l, fd, fb, head, p, len);
    }
    if (r == 0 && tail && (lb != fb || !head))
        r = disk_block_update(d, logged, idx, l, fd, lb, 0, p ? p + ((uint64_t)lb * B - in) : NULL,
                              tail);
    if (r == 0 && mid_first < mid_end) {
        uint64_t at = (uint64_t)mid_first * B;
        const char *src = p ? p + (at - in) : NULL;
        r = disk_blocks_write(fd, src, (uint64_t)(mid_end - mid_first) * B, at);
        if (r == 0)
            r = disk_log_blocks(d, logged, idx, mid_first, mid_end - mid_first, src);
    }
    return r;
}

/* Writes n bytes at in within chunk idx.  data NULL means zeros.  Caller holds the chunk's
 * stripe and the barrier (shared).  A chunk without a live file gets a new one (copy on write:
 * frozen and cached files are never written); the write goes into the file and only then are
 * its blocks marked written, so a reader sees either the old blocks or the new. */
static int disk_write_chunk(struct disk *d, uint64_t idx, uint64_t in, const void *data, uint32_t n)
{
    const uint32_t cs = d->meta.chunk_size;
    struct chunk_file *live = NULL;
    struct chunk_layout layout;
    uint32_t first = 0, end = 0;
    int fd = -1, r;
    bool logged = disk_log_this(d, n);

    if (n == cs && (!data || disk_is_zero(data, n))) {
        if (logged) {
            struct write_log_record rec = {
                .kind = WRITE_LOG_ZERO_CHUNK, .gen = d->flush_gen + 1, .idx = idx};
            r = write_log_append(d->wlog, &rec);
            if (r < 0)
                return r;
        }
        disk_set_live_zero(d, idx);
        return 0;
    }

    pthread_mutex_lock(&d->lock);
    struct dirty_chunk *dc = disk_dirty_get_locked(d, idx);
    if (dc && dc->live_kind == SLOT_FILE) {
        live = dc->live;
        live->refs++;
        layout = live->layout;
    }
    pthread_mutex_unlock(&d->lock);

    bool made = false;
    if (live) {
        r = fd = chunk_file_open(d, live, O_RDWR);
    } else {
        r = disk_file_make(d, idx, n == cs, &live, &fd);
        if (r == 0)
            layout = live->layout; /* not shared yet */
        made = r == 0;
    }
    if (r >= 0)
        r = disk_file_write(d, logged, idx, &layout, fd, in, data, n, &first, &end);
    if (fd >= 0)
        close(fd);
    if (r < 0) {
        log_error("disk", "%s: write chunk %llu: %s", d->meta.name, (unsigned long long)idx,
                  strerror(-r));
        /* A write that failed part way may have changed blocks of the live file already (the
         * head block, say, before the tail failed).  They count as its own, so that the file
         * made from it after the next flush copies them (disk_file_make copies only `own`
         * over its predecessor): else that file would hold the old bytes where this one has
         * the new, and a read would change with no write.  Too many blocks in `own` only copy
         * more. */
        if (!made && live) {
            pthread_mutex_lock(&d->lock);
            chunk_layout_mark(&live->own, first, end);
            pthread_mutex_unlock(&d->lock);
        }
        chunk_file_unref(d, live);
        return r;
    }

    pthread_mutex_lock(&d->lock);
    chunk_layout_mark(&live->layout, first, end);
    chunk_layout_mark(&live->own, first, end);
    live->seq++;
    if (chunk_layout_whole(&live->layout, disk_chunk_blocks(d)))
        disk_ahead_queue_locked(d, idx, live);
    if (made) {
        dc = disk_dirty_get_or_add_locked(d, idx);
        struct chunk_file *old = dc->live_kind == SLOT_FILE ? dc->live : NULL;
        dc->live_kind = SLOT_FILE;
        dc->live = live;                 /* our reference becomes the slot's */
        chunk_file_unref_locked(d, old); /* none: we hold the stripe */
    } else {
        chunk_file_unref_locked(d, live);
    }
    pthread_mutex_unlock(&d->lock);
    return 0;
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
    if (d->version)
        return -EPERM;
    pthread_mutex_lock(&d->lock);
    d->stats.writes++;
    d->stats.write_bytes += count;
    pthread_mutex_unlock(&d->lock);
    return disk_modify(d, buf, count, offset);
}

int disk_zero(struct disk *d, uint32_t count, uint64_t offset)
{
    if (d->version)
        return -EPERM;
    pthread_mutex_lock(&d->lock);
    d->stats.zeroes++;
    pthread_mutex_unlock(&d->lock);
    return disk_modify(d, NULL, count, offset);
}

/* Replays one record of the write log at open (write_log_open's apply): the same change to the
 * chunk files as when it was first made, without logging it again.  Records are whole blocks,
 * so nothing is read from the store. */
static int disk_log_apply(const struct write_log_record *rec, void *opaque)
{
    struct disk *d = opaque;
    const uint32_t n_blocks = disk_chunk_blocks(d);

    if (rec->idx >= d->n_chunks ||
        (rec->kind != WRITE_LOG_ZERO_CHUNK && rec->first_block + rec->n_blocks > n_blocks)) {
        log_error("disk",
                  "%s: the write log names chunk %llu blocks %u+%u, outside a disk of %llu "
                  "chunks of %u blocks: not replaying it",
                  d->meta.name, (unsigned long long)rec->idx, rec->first_block, rec->n_blocks,
                  (unsigned long long)d->n_chunks, n_blocks);
        return -EBADMSG;
    }
    d->stats.log_replayed++;
    if (rec->kind == WRITE_LOG_ZERO_CHUNK) {
        disk_set_live_zero(d, rec->idx);
        return 0;
    }
    return disk_write_chunk(d, rec->idx, (uint64_t)rec->first_block * CHUNK_BLOCK_SIZE,
                            rec->kind == WRITE_LOG_DATA ? rec->data : NULL,
                            rec->n_blocks * CHUNK_BLOCK_SIZE);
}

struct shipped_install {
    int fd;
    uint64_t at, rows;
};

static int disk_log_install_row(const void *bytes, size_t len, uint64_t max_gen, void *opaque)
{
    struct shipped_install *in = opaque;
    int r = disk_pwrite_all(in->fd, bytes, len, in->at);

    if (r < 0)
        return r;
    in->at += len;
    in->rows++;
    return 0;
}

/* Rebuilds the log from the rows durability=remote shipped (meta.h) where they are the truth:
 * - not where the log here is marked (a durability=local run sets the mark before it
 *   acknowledges a flush the head lacks): that log holds every row's records and more;
 * - where the log is missing (a new host, a lost cache), or unmarked: beyond the head and the
 *   rows, it holds only flushes never acknowledged;
 * - and with durability=remote, with no rows too: an unmarked log then holds nothing beyond
 *   the head that was acknowledged, and what it holds may be a fenced writer's (a flush whose
 *   lease check failed after its FLUSH record was written), which must never be committed.
 * Caller holds env->meta_lock.  *installed: the log was replaced. */
static int disk_log_install_shipped(struct disk *d, const char *dir, bool *installed)
{
    struct shipped_install in = {.fd = -1};
    int any, marked, r;

    *installed = false;
    any = meta_write_log_shipped_any(d->env->meta, d->meta.id);
    if (any < 0)
        return any;
    marked = meta_write_log_unuploaded(d->env->meta, d->meta.id);
    if (marked < 0)
        return marked;
    bool present = write_log_present(dir);
    if (marked && present)
        return 0;
    if (!any && !(d->env->durability == DISK_DURABILITY_REMOTE && present))
        return 0;
    r = write_log_install_begin(dir, &in.fd);
    if (r == 0)
        r = meta_write_log_shipped_each(d->env->meta, d->meta.id, disk_log_install_row, &in);
    if (r < 0) {
        if (in.fd >= 0)
            close(in.fd);
        return r;
    }
    r = write_log_install_commit(dir, in.fd);
    if (r == 0) {
        *installed = true;
        if (in.rows > 0)
            log_info("disk", "%s: rebuilt its write log from %llu shipped rows (%llu bytes)",
                     d->meta.name, (unsigned long long)in.rows, (unsigned long long)in.at);
    }
    return r;
}

/* Opens the disk's write log and replays it over the head and pending chunks (write_log.h,
 * L3): the replayed writes become live chunks, frozen at once as a flush of their own, which
 * the next upload round commits.  Until then they stay in the log. */
static int disk_log_recover(struct disk *d)
{
    struct disk_env *env = d->env;
    uint8_t id[META_WRITE_LOG_ID_LEN];
    char dir[PATH_MAX];
    uint64_t last_gen = 0;
    bool installed = false;
    int r;

    if (snprintf(dir, sizeof dir, "%s/log/%lld", env->cache_dir, (long long)d->meta.id) >=
        (int)sizeof dir)
        return -ENAMETOOLONG;
    pthread_mutex_lock(env->meta_lock);
    r = meta_write_log_id(env->meta, d->meta.id, id);
    if (r == 0)
        r = disk_log_install_shipped(d, dir, &installed);
    pthread_mutex_unlock(env->meta_lock);
    if (r == 0)
        r = write_log_open(dir, id, d->meta.flush_gen, DISK_LOG_SEGMENT_BYTES, disk_log_apply, d,
                           &last_gen, &d->wlog);
    if (r < 0) {
        log_error("disk", "%s: cannot open its write log in %s: %s", d->meta.name, dir,
                  strerror(-r));
        return r;
    }
    d->wlog_append = true;
    /* The log on this host is the truth about flushes the head lacks (a replica restored here
     * may carry another host's mark).  A log rebuilt from the rows holds nothing they lack: no
     * mark, which would make the next open prefer this log to rows shipped after it. */
    bool replayed = d->stats.log_replayed > 0;
    pthread_mutex_lock(env->meta_lock);
    r = meta_write_log_set_unuploaded(env->meta, d->meta.id, replayed && !installed);
    pthread_mutex_unlock(env->meta_lock);
    if (r < 0)
        return r;
    /* Replayed from this host's log, the state may hold flushes never shipped: while the mark
     * stands, flushes upload rather than ship (disk_flush.c), and with durability=remote the
     * first round that commits clears it. */
    d->wlog_marked = replayed && !installed;
    if (replayed) {
        if (last_gen > d->flush_gen)
            d->flush_gen = last_gen;
        r = disk_freeze(d, NULL);
        if (r < 0)
            return r;
        d->journal_gen = d->flush_gen;
        d->shipped_gen = d->flush_gen; /* acknowledged once: uploaded in the background */
        log_info("disk", "%s: replayed %llu records of the write log, up to flush %llu",
                 d->meta.name, (unsigned long long)d->stats.log_replayed,
                 (unsigned long long)last_gen);
    }
    return 0;
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
        enum chunk_source src = disk_chunk_source_locked(d, i, &f, &h, NULL);
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

int disk_extents(struct disk *d, uint64_t count, uint64_t offset, disk_extent_fn fn, void *opaque)
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
        if (access(path, R_OK) < 0) {
            int err = -errno;
            log_error("disk",
                      "%s: pending chunk %llu: open %s: %s (the local journal names a "
                      "file that is gone)",
                      d->meta.name, (unsigned long long)p->idx, path, strerror(-err));
            g_free(f);
            return err;
        }
        uint32_t n_blocks = disk_chunk_blocks(d);
        if (p->written && p->written_len != (n_blocks + 7) / 8) {
            log_error("disk",
                      "%s: pending chunk %llu: a %zu-byte block bitmap for %u blocks (the "
                      "local journal is damaged)",
                      d->meta.name, (unsigned long long)p->idx, p->written_len, n_blocks);
            g_free(f);
            return -EBADMSG;
        }
        if (p->written)
            memcpy(f->layout.written, p->written, p->written_len);
        else
            chunk_layout_mark(&f->layout, 0, n_blocks);
        if (p->base) {
            f->layout.has_base = true;
            f->layout.base = *p->base;
        }
        f->refs = 1;
        f->pending_row = true;
        f->serial = ++d->next_serial;
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

int disk_open(struct disk_env *env, const struct meta_disk *m,
              const struct meta_checkpoint *version, struct disk **out)
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
    pthread_mutex_init(&d->ship_lock, NULL);
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
    if (version) {
        /* A checkpoint, read-only: its map, and none of the head's local state. */
        d->version = true;
        d->meta.head_root = version->root;
        snprintf(d->version_name, sizeof d->version_name, "%s@%s", m->name, version->name);
        pthread_mutex_lock(env->meta_lock);
        r = meta_map_load(env->meta, &d->meta, &d->head);
        pthread_mutex_unlock(env->meta_lock);
        if (r < 0) {
            log_error("disk", "%s: cannot load its chunk map: %s", d->version_name, strerror(-r));
            goto fail;
        }
        *out = d;
        return 0;
    }

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
        log_info("disk", "%s: recovered %llu bytes flushed locally but not yet uploaded", m->name,
                 (unsigned long long)d->stats.pending_bytes);
    }
    disk_remove_orphans(d);
    r = disk_log_recover(d);
    if (r < 0)
        goto fail;
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
    if (dc->spare)
        g_hash_table_add(files, dc->spare);
    return FALSE;
}

/* Frees d.  Its files are closed, not unlinked: journaled ones must survive for the next start,
 * and the others are removed as orphans then. */
void disk_close(struct disk *d)
{
    GHashTableIter it;
    gpointer f;

    if (!d)
        return;
    GHashTable *files = g_hash_table_new(NULL, NULL);
    disk_ahead_stop(d); /* its tasks hold file references */
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
        g_free(f);
        chunk_cache_add_dirty(d->env->cache, -(int64_t)d->meta.chunk_size);
    }
    g_hash_table_destroy(files);
    if (d->dirty)
        g_tree_destroy(d->dirty);
    if (d->journal)
        g_array_free(d->journal, TRUE);
    chunk_map_free(d->head);
    write_log_close(d->wlog);
    pthread_mutex_destroy(&d->journal_lock);
    pthread_mutex_destroy(&d->round_lock);
    pthread_mutex_destroy(&d->ship_lock);
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

/* ---- the writer's lease ------------------------------------------------------------------ */

void disk_set_lease(struct disk *d, struct lease *l)
{
    pthread_mutex_lock(&d->lock);
    d->lease = l;
    pthread_mutex_unlock(&d->lock);
}

void disk_require_lease(struct disk *d)
{
    pthread_mutex_lock(&d->lock);
    d->lease_required = true;
    pthread_mutex_unlock(&d->lock);
}

void disk_fence(struct disk *d)
{
    pthread_mutex_lock(&d->lock);
    bool was = d->fenced;
    d->fenced = d->failed = true;
    pthread_mutex_unlock(&d->lock);
    if (!was)
        log_error("disk",
                  "%s: fenced: another host took this disk's lease; every later flush fails "
                  "and nothing more is committed (restart to reopen it, which asks for the "
                  "lease again)",
                  d->meta.name);
}

bool disk_fenced(struct disk *d)
{
    pthread_mutex_lock(&d->lock);
    bool fenced = d->fenced;
    pthread_mutex_unlock(&d->lock);
    return fenced;
}
