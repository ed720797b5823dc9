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
    struct chunk_hash h = {{0}};
    uint64_t seq = 0;
    bool live, zero = false;
    int r = 0;

    void *buf = malloc(cs);
    pthread_mutex_lock(stripe);
    pthread_mutex_lock(&d->lock);
    struct dirty_chunk *dc = disk_dirty_get_locked(d, t->idx);
    live = !d->ahead_stopping && dc && dc->live_kind == SLOT_FILE && dc->live == f &&
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

    /* Frozen, dropped or changed since: the upload round does it (if it still must).  Not
     * cached here: later writes may still change the live file, and a copy would cost a
     * second write of every chunk; the round links the frozen file into the cache instead. */
    if (live && buf && r == 0)
        r = disk_put_chunk(d, buf, &h, &zero);
    if (r < 0)
        log_debug("disk", "%s: chunk %llu: upload ahead failed (%s); the flush will upload it",
                  d->meta.name, (unsigned long long)t->idx, strerror(-r));
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
    }
    chunk_file_unref_locked(d, f);
    d->ahead_pending--; /* d may be closed and freed once this is 0 and the lock dropped */
    pthread_cond_broadcast(&d->progress);
    pthread_mutex_unlock(&d->lock);
    free(buf);
    g_free(t);
}

GThreadPool *disk_ahead_pool_new(unsigned threads)
{
    GError *err = NULL;
    /* Exclusive threads, joined when the pool is freed: no thread of ours outlives the plugin. */
    GThreadPool *pool =
        g_thread_pool_new(disk_ahead_run, NULL, (gint)(threads > 0 ? threads : 1), TRUE, &err);

    if (!pool) {
        log_error("disk", "cannot start the threads that upload ahead of flushes: %s",
                  err->message);
        g_error_free(err);
    }
    return pool;
}

void disk_ahead_pool_free(GThreadPool *pool)
{
    if (pool)
        g_thread_pool_free(pool, FALSE, TRUE); /* disks are closed: their tasks are done */
}

void disk_ahead_stop(struct disk *d)
{
    pthread_mutex_lock(&d->lock);
    d->ahead_stopping = true; /* queued tasks of this disk now only drop their reference */
    while (d->ahead_pending > 0)
        pthread_cond_wait(&d->progress, &d->lock);
    pthread_mutex_unlock(&d->lock);
}

void disk_ahead_queue_locked(struct disk *d, uint64_t idx, struct chunk_file *f)
{
    if (!d->env->ahead_pool || d->env->durability != DISK_DURABILITY_REMOTE || d->version ||
        d->ahead_stopping || f->ahead_queued)
        return;
    struct ahead_task *t = g_new(struct ahead_task, 1);
    t->d = d;
    t->idx = idx;
    t->f = f;
    f->refs++;
    f->ahead_queued = true;
    d->ahead_pending++;
    g_thread_pool_push(d->env->ahead_pool, t, NULL);
}
