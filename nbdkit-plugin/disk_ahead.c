/* disk_ahead.c: uploads whole chunks ahead of the flush (durability=remote).
 *
 * With durability=remote a flush returns only once its chunks are in the store, so a sequential
 * writer that flushes at the end would wait for every upload then, with the store idle while
 * it wrote.  Instead, a live chunk that has just become whole (every block written, so no
 * base to merge) is uploaded at once by a small pool.  Chunk objects are immutable and named
 * by their content, so an early upload names nothing: it only saves the upload round the work,
 * if the file is still the same when the round takes it.
 *
 * Invariant: f->ahead holds the hash of f's content at write count f->ahead_seq.  The round
 * trusts it only if f->seq is still ahead_seq (the file is frozen by then, so its content is
 * final), and only if the upload is recent enough for the GC's commit window (disk_round).
 * The task reads the file under the chunk's stripe, which every writer of the chunk holds while
 * it writes and counts the write, so what it hashes is exactly the content at the seq it
 * records. */
#include "disk_internal.h"

#include "hash.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdlib.h>
#include <unistd.h>

struct ahead_task {
    struct disk *d;
    uint64_t idx;
    struct chunk_file *f; /* ref held */
};

static void disk_ahead_run(gpointer data, gpointer unused)
{
    struct ahead_task *t = data;
    struct disk *d = t->d;
    struct chunk_file *f = t->f;
    const uint32_t cs = d->meta.chunk_size;
    pthread_mutex_t *stripe = &d->stripes[t->idx % DISK_STRIPES];
    struct chunk_hash h;
    uint64_t seq = 0;
    bool live, zero = false;
    int r = 0;

    void *buf = malloc(cs);
    pthread_mutex_lock(stripe);
    pthread_mutex_lock(&d->lock);
    struct dirty_chunk *dc = disk_dirty_get_locked(d, t->idx);
    live = dc && dc->live_kind == SLOT_FILE && dc->live == f &&
           chunk_layout_whole(&f->layout, disk_chunk_blocks(d));
    seq = f->seq;
    if (live)
        f->ahead_running = true;
    pthread_mutex_unlock(&d->lock);
    if (live && buf) {
        int fd = chunk_file_open(d, f, O_RDONLY);
        r = fd < 0 ? fd : disk_pread_all(fd, buf, cs, 0);
        if (fd >= 0)
            close(fd);
    }
    pthread_mutex_unlock(stripe);

    /* Frozen, dropped or changed since: the upload round does it (if it still must). */
    if (live && buf && r == 0) {
        zero = disk_is_zero(buf, cs);
        if (!zero) {
            r = hash_sha256(buf, cs, h.b);
            if (r == 0)
                r = chunk_cache_upload(d->env->cache, &h, buf, cs, NULL);
        }
    }
    pthread_mutex_lock(&d->lock);
    if (live) {
        f->ahead_running = false;
        f->ahead_error = !buf ? -ENOMEM : r;
        if (buf && r == 0) {
            f->ahead_done = true;
            f->ahead_seq = seq;
            f->ahead_zero = zero;
            f->ahead_hash = h;
            f->ahead_time = disk_now();
            d->stats.uploads_ahead++;
        }
        pthread_cond_broadcast(&d->progress);
    }
    chunk_file_unref_locked(d, f);
    pthread_mutex_unlock(&d->lock);
    if (r < 0)
        log_debug("disk", "%s: chunk %llu: upload ahead failed (%s); the flush will upload it",
                  d->meta.name, (unsigned long long)t->idx, strerror(-r));
    free(buf);
    g_free(t);
}

static void disk_ahead_drop(gpointer data)
{
    struct ahead_task *t = data;

    chunk_file_unref(t->d, t->f);
    g_free(t);
}

int disk_ahead_start(struct disk *d)
{
    GError *err = NULL;
    unsigned n = d->env->upload_parallel > 0 ? d->env->upload_parallel : 1;

    d->ahead = g_thread_pool_new_full(disk_ahead_run, NULL, disk_ahead_drop, (gint)n, FALSE, &err);
    if (!d->ahead) {
        log_error("disk", "%s: cannot start uploads ahead of flushes: %s", d->meta.name,
                  err->message);
        g_error_free(err);
        return -ENOMEM;
    }
    return 0;
}

void disk_ahead_stop(struct disk *d)
{
    if (d->ahead)
        g_thread_pool_free(d->ahead, TRUE, TRUE); /* queued ones are dropped, running joined */
    d->ahead = NULL;
}

void disk_ahead_queue_locked(struct disk *d, uint64_t idx, struct chunk_file *f)
{
    if (!d->ahead || f->ahead_queued)
        return;
    struct ahead_task *t = g_new(struct ahead_task, 1);
    t->d = d;
    t->idx = idx;
    t->f = f;
    f->refs++;
    f->ahead_queued = true;
    g_thread_pool_push(d->ahead, t, NULL);
}
