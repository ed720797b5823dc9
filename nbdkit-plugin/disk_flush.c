/* disk_flush.c: flush and upload for one disk.
 *
 * A flush freezes every live chunk at once (disk_freeze).  durability=local then makes the frozen
 * files durable and journals them (disk_journal); an upload round (disk_round) takes the frozen
 * set of the latest flush, uploads it and commits it as the disk's head in one SQLite
 * transaction.  durability=remote runs the round inside the flush.
 *
 * durability=local with the write log (write_log.h, the default path): the freeze appends a
 * FLUSH record and the flush is one fdatasync of the log; the frozen files are not synced and
 * no pending rows are written.  The SQLite journal (disk_journal) is then used only for pending
 * rows recovered from a server that predates the log. */
#include "disk_internal.h"

#include "hash.h"
#include "lease.h"
#include "log.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct freeze_ctx {
    struct disk *d;
    uint64_t gen;
};

static gboolean disk_freeze_one(gpointer key, gpointer value, gpointer opaque)
{
    struct freeze_ctx *fz = opaque;
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
    if (d->wlog_append && item.superseded && item.superseded->pending_row) {
        /* A pending row (from before the log) names the superseded file until a commit
         * deletes the row: keep the file until then (disk_round). */
        item.kind = SLOT_NONE;
        g_array_append_val(d->journal, item);
    } else if (d->wlog_append) {
        /* The log holds this flush's state; a superseded file becomes the spare, even while
         * an upload round or a reader still holds it (disk_file_make reuses it only once the
         * spare's is the last reference: a superseded file gains no new ones).  Never a whole
         * one: an upload may have hard-linked it into the chunk cache, whose files must never
         * change. */
        if (item.superseded && !dc->spare &&
            !chunk_layout_whole(&item.superseded->layout, disk_chunk_blocks(d)))
            dc->spare = item.superseded;
        else
            chunk_file_unref_locked(d, item.superseded);
    } else if (d->env->durability == DISK_DURABILITY_LOCAL) {
        item.file = dc->frozen;
        if (item.file)
            item.file->refs++;
        g_array_append_val(d->journal, item);
    } else {
        chunk_file_unref_locked(d, item.superseded);
    }
    return FALSE;
}

int disk_freeze(struct disk *d, uint64_t *gen_out)
{
    struct freeze_ctx fz = {.d = d};
    bool any = false;
    int r = 0;

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
    /* The FLUSH record, still with every writer excluded (write_log.h, L1), but not under
     * d->lock, which is never held across I/O. */
    if (any && d->wlog_append) {
        uint64_t pos;
        r = write_log_mark(d->wlog, fz.gen, &pos);
        pthread_mutex_lock(&d->lock);
        if (r == 0) {
            d->wlog_last_pos = pos;
            d->wlog_last_gen = fz.gen;
        }
        pthread_mutex_unlock(&d->lock);
    }
    pthread_rwlock_unlock(&d->barrier);
    if (gen_out)
        *gen_out = fz.gen;
    return r;
}

/* A batch of descriptors to fdatasync, shared by the threads that do it. */
struct sync_batch {
    int *fds;
    unsigned n;
    unsigned next; /* atomic: the next descriptor to take */
    int result;    /* atomic: the first error, or 0 */
};

static void *sync_batch_worker(void *opaque)
{
    struct sync_batch *b = opaque;
    unsigned i;

    while ((i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED)) < b->n) {
        if (fdatasync(b->fds[i]) < 0) {
            int expected = 0, err = -errno;
            __atomic_compare_exchange_n(&b->result, &expected, err, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

/* fdatasyncs the files of journal items.  Writeback of all of them is started first, then
 * they are synced from several threads at once: each fdatasync ends in a cache flush of the
 * device, and concurrent ones are merged by the block layer and the file system's journal,
 * where one after the other they cost a device flush each.  (syncfs would be one call, but it
 * also waits for every other writer of the file system.) */
static int disk_journal_sync_files(struct disk *d, GArray *items)
{
    enum { BATCH = 64, THREADS = 8 }; /* descriptors open at once; syncing threads */
    int fds[BATCH], r = 0;

    for (guint from = 0; from < items->len && r == 0; from += BATCH) {
        struct sync_batch b = {.fds = fds};
        for (guint i = from; i < items->len && i < from + BATCH && r == 0; i++) {
            struct journal_item *it = &g_array_index(items, struct journal_item, i);
            if (!it->file)
                continue;
            int fd = chunk_file_open(d, it->file, O_RDONLY);
            if (fd < 0) {
                r = fd;
                break;
            }
            fds[b.n++] = fd;
            if (sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0 && errno != ENOSYS)
                r = -errno;
        }
        if (r == 0) {
            pthread_t threads[THREADS];
            unsigned started = 0;
            for (unsigned t = 1; t < THREADS && t < b.n; t++) {
                if (pthread_create(&threads[started], NULL, sync_batch_worker, &b) != 0)
                    break; /* fewer threads: the work still gets done */
                started++;
            }
            sync_batch_worker(&b);
            for (unsigned t = 0; t < started; t++)
                pthread_join(threads[t], NULL);
            r = b.result;
        }
        for (unsigned i = 0; i < b.n; i++)
            close(fds[i]);
    }
    return r;
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

    /* Make the frozen files and their directory entries durable. */
    if (items->len > 0) {
        r = disk_journal_sync_files(d, items);
        int dfd = open(d->dirty_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (r == 0 && (dfd < 0 || fsync(dfd) < 0))
            r = -errno;
        if (dfd >= 0)
            close(dfd);
        if (r < 0)
            log_error("disk", "%s: cannot make flushed data durable in %s: %s", d->meta.name,
                      d->dirty_dir, strerror(-r));
    }
    if (r == 0 && items->len > 0) {
        struct meta_pending *rows = g_new0(struct meta_pending, items->len);
        struct chunk_layout *layouts = g_new(struct chunk_layout, items->len);
        const uint32_t n_blocks = disk_chunk_blocks(d);
        pthread_mutex_lock(&d->lock); /* for the layouts */
        for (guint i = 0; i < items->len; i++) {
            struct journal_item *it = &g_array_index(items, struct journal_item, i);
            rows[i].idx = it->idx;
            rows[i].gen = it->gen;
            rows[i].file = it->file ? it->file->name : "";
            if (!it->file)
                continue;
            layouts[i] = it->file->layout;
            if (layouts[i].has_base)
                rows[i].base = &layouts[i].base;
            if (!chunk_layout_whole(&layouts[i], n_blocks)) {
                rows[i].written = layouts[i].written;
                rows[i].written_len = (n_blocks + 7) / 8;
            }
        }
        pthread_mutex_unlock(&d->lock);
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
        g_free(layouts);
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
    struct chunk_file *file;    /* ref held */
    struct chunk_layout layout; /* the file's, when the round began */
    struct chunk_hash hash;
    bool zero;
    double uploaded_at; /* uploaded ahead of the round (disk_ahead.c) at this time; 0: not */
    int result;
};

struct round {
    struct disk *d;
    struct round_item *items;
    size_t n;
    pthread_mutex_t lock; /* protects next and failed */
    size_t next;          /* the next item to take */
    bool failed;          /* an item failed: the round fails, so take no more */
    bool abandoned;       /* the server shuts down (disk_env.stopping): take no more */
    bool background;      /* after upload-delay: nobody waits for it */
};

/* A round nobody waits for stops at shutdown: what it would commit stays in the log (and in
 * shipped rows), uploaded at the next start.  So does a durability=local flush's.  A background
 * round also gives way to a round a flush waits for, which takes everything it would have
 * taken: with the store hanging, the flush would otherwise wait for both. */
static bool round_abandoning(const struct round *rd)
{
    struct disk *d = rd->d;
    if (rd->background && __atomic_load_n(&d->round_waiters, __ATOMIC_ACQUIRE) > 0)
        return true;
    return (rd->background || d->env->durability == DISK_DURABILITY_LOCAL) && d->env->stopping &&
           __atomic_load_n(d->env->stopping, __ATOMIC_ACQUIRE);
}

/* round_lock for a round someone waits for: a background round in progress stops early. */
static void disk_round_lock_foreground(struct disk *d)
{
    __atomic_add_fetch(&d->round_waiters, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_lock(&d->round_lock);
    __atomic_sub_fetch(&d->round_waiters, 1, __ATOMIC_ACQ_REL);
}

int disk_put_chunk(struct disk *d, const void *buf, struct chunk_hash *h, bool *zero)
{
    const uint32_t cs = d->meta.chunk_size;
    int r;

    *zero = disk_is_zero(buf, cs);
    if (*zero)
        return 0; /* all-zero chunks are never stored */
    r = hash_sha256(buf, cs, h->b);
    return r < 0 ? r : chunk_cache_put(d->env->cache, h, buf, cs);
}

int disk_store_chunk(struct disk *d, const void *buf, const char *path, struct chunk_hash *h,
                     bool *zero)
{
    int r = disk_put_chunk(d, buf, h, zero);

    if (r == 0 && !*zero)
        chunk_cache_keep(d->env->cache, h, buf, d->meta.chunk_size, path);
    return r;
}

static int round_upload_item(struct disk *d, struct round_item *it, void *buf)
{
    const uint32_t cs = d->meta.chunk_size;
    char path[PATH_MAX];
    int r;

    if (it->kind == SLOT_ZERO) {
        it->zero = true;
        return 0;
    }
    /* Uploaded ahead of the flush, and still that content (disk_ahead.c)?  Not if so long ago
     * that the GC's commit window (below, in disk_round) could not be kept. */
    pthread_mutex_lock(&d->lock);
    struct chunk_file *f = it->file;
    bool waited = false;
    while (f->ahead_running) {
        pthread_cond_wait(&d->progress, &d->lock);
        waited = true;
    }
    /* An early upload of this very content failed while we waited: the store client's retries
     * are spent, and trying again now would make a flush wait twice as long for its EIO. */
    if (waited && !f->ahead_done && f->ahead_error < 0) {
        int err = f->ahead_error;
        pthread_mutex_unlock(&d->lock);
        return err;
    }
    bool ahead =
        f->ahead_done && f->ahead_seq == f->seq &&
        (d->env->commit_window <= 0 || disk_now() - f->ahead_time < d->env->commit_window / 2);
    if (ahead) {
        it->zero = f->ahead_zero;
        it->hash = f->ahead_hash;
        it->uploaded_at = f->ahead_time;
        if (!it->zero) {
            d->stats.uploads++;
            d->stats.upload_bytes += cs;
        }
    }
    pthread_mutex_unlock(&d->lock);
    if (ahead) {
        /* The early upload left the cache alone: the file was live then.  Frozen now, at the
         * content it hashed (f->seq is ahead_seq), and whole, it can be linked in as is. */
        if (!it->zero && chunk_layout_whole(&it->layout, disk_chunk_blocks(d))) {
            snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, f->name);
            chunk_cache_keep(d->env->cache, &it->hash, NULL, cs, path);
        }
        return 0;
    }

    /* Merge the written blocks with the base: what the chunk holds. */
    int fd = chunk_file_open(d, it->file, O_RDONLY);
    if (fd < 0)
        return fd;
    r = disk_layout_read(d, &it->layout, fd, buf, cs, 0);
    close(fd);
    if (r < 0)
        return r;
    /* The cache can take the file itself only when it is the whole chunk. */
    snprintf(path, sizeof path, "%s/%s", d->env->cache_dir, it->file->name);
    bool whole = chunk_layout_whole(&it->layout, disk_chunk_blocks(d));
    r = disk_store_chunk(d, buf, whole ? path : NULL, &it->hash, &it->zero);
    if (r == 0 && !it->zero) {
        pthread_mutex_lock(&d->lock);
        d->stats.uploads++;
        d->stats.upload_bytes += cs;
        pthread_mutex_unlock(&d->lock);
    }
    return r;
}

static void *round_worker(void *opaque);

/* Lower priority for the threads of a background round: requests come first.  A round that
 * takes longer because of it also covers more writes per chunk, so it uploads less per write.
 * Only helper threads are lowered (they end with the round): taking the priority back would
 * need CAP_SYS_NICE. */
enum { ROUND_BACKGROUND_NICE = 10 };

static void *round_helper(void *opaque)
{
    struct round *rd = opaque;
    void *ret;

    if (rd->background) {
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), ROUND_BACKGROUND_NICE);
        /* A store request in progress gives way too, not only the chunks not yet begun: with
         * the store hanging, one lasts all its attempts (round_abandoning). */
        store_set_thread_cancel(&rd->d->round_waiters);
    }
    ret = round_worker(rd);
    store_set_thread_cancel(NULL);
    return ret;
}

static void *round_worker(void *opaque)
{
    struct round *rd = opaque;
    struct disk *d = rd->d;
    void *buf = g_try_malloc(d->meta.chunk_size);

    for (;;) {
        bool abandon = round_abandoning(rd);
        pthread_mutex_lock(&rd->lock);
        if (abandon)
            rd->abandoned = true;
        size_t i = rd->next < rd->n && !rd->failed && !rd->abandoned ? rd->next++ : rd->n;
        pthread_mutex_unlock(&rd->lock);
        if (i == rd->n)
            break;
        rd->items[i].result = buf ? round_upload_item(d, &rd->items[i], buf) : -ENOMEM;
        if (rd->items[i].result == -ECANCELED && rd->background && round_abandoning(rd)) {
            pthread_mutex_lock(&rd->lock); /* given way: the round commits nothing */
            rd->abandoned = true;
            pthread_mutex_unlock(&rd->lock);
            rd->items[i].result = 0;
            continue;
        }
        if (rd->items[i].result < 0) {
            /* One failure fails the flush: with the store down, the rest would only make the
             * caller wait for their timeouts too. */
            pthread_mutex_lock(&rd->lock);
            rd->failed = true;
            pthread_mutex_unlock(&rd->lock);
        }
    }
    g_free(buf);
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

/* After a commit: a newer file of a committed chunk was made over the committed file (it copied
 * that file's written blocks and took its base), so its unwritten blocks are the committed
 * chunk's too.  Point its base there: same content, and the old base, which nothing may
 * reference any more, is not needed again.  Caller holds d->lock. */
static void disk_rebase_locked(struct disk *d, const struct round *rd)
{
    for (size_t i = 0; i < rd->n; i++) {
        const struct round_item *it = &rd->items[i];
        struct dirty_chunk *dc = disk_dirty_get_locked(d, it->idx);
        struct chunk_file *newer[2] = {NULL, NULL};

        if (!dc || !it->file || !it->layout.has_base)
            continue;
        if (dc->live_kind == SLOT_FILE)
            newer[0] = dc->live;
        if (dc->frozen_kind == SLOT_FILE && dc->frozen != it->file)
            newer[1] = dc->frozen;
        for (int k = 0; k < 2; k++) {
            struct chunk_layout *l = newer[k] ? &newer[k]->layout : NULL;
            if (!l || !l->has_base || memcmp(l->base.b, it->layout.base.b, CHUNK_HASH_LEN) != 0)
                continue;
            l->has_base = !it->zero;
            if (!it->zero)
                l->base = it->hash;
        }
    }
}

/* Uploads the frozen set of the latest flush and commits it as the head.  Caller holds
 * round_lock.  background: nobody waits for this round (round_helper). */
/* Fencing (storage invariant 11): commit flush gen only while our lease is the latest
 * generation.  A host that took the disk over restored the head as of its takeover; whatever we
 * would commit now must never be merged with its writes. */
static int disk_lease_check(struct disk *d, uint64_t gen)
{
    int r = 0;

    pthread_mutex_lock(&d->lock);
    struct lease *lease = d->lease;
    bool lease_required = d->lease_required;
    pthread_mutex_unlock(&d->lock);
    if (lease_required && !lease && d->env->lease_now &&
        d->env->lease_now(d, d->env->lease_opaque) == 0) {
        pthread_mutex_lock(&d->lock);
        lease = d->lease;
        pthread_mutex_unlock(&d->lock);
    }
    if (lease_required && !lease) {
        log_error("disk",
                  "%s: not committing flush %llu: this server has not got the disk's "
                  "lease yet (the store was unreachable when it opened the disk)",
                  d->meta.name, (unsigned long long)gen);
        return -EIO;
    }
    if (lease && (r = lease_check(lease)) == -ESTALE)
        disk_fence(d);
    return r;
}

static int disk_round(struct disk *d, bool background)
{
    struct round rd = {.d = d, .background = background};
    struct meta_page_list pages = {0};
    struct chunk_hash root;
    uint64_t gen;
    int r = 0;

    if (d->env->durability == DISK_DURABILITY_LOCAL && !d->wlog_append) {
        /* Journal first, so that what we commit was recoverable locally all along (with the
         * write log it was, from the flush on). */
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
    /* Where flush gen ends in the log, if its FLUSH is there yet: shipping goes on from there
     * once this round commits (else from where it was: more bytes, the same state). */
    uint64_t gen_pos = d->wlog_last_gen == gen ? d->wlog_last_pos : 0;
    rd.items = g_new0(struct round_item, g_tree_nnodes(d->dirty));
    for (GTreeNode *node = g_tree_node_first(d->dirty); node; node = g_tree_node_next(node)) {
        struct dirty_chunk *dc = g_tree_node_value(node);
        if (dc->frozen_kind == SLOT_NONE)
            continue;
        struct round_item *it = &rd.items[rd.n++];
        it->idx = dc->idx;
        it->kind = dc->frozen_kind;
        it->file = dc->frozen;
        if (it->file) {
            it->file->refs++;
            it->layout = it->file->layout;
        }
    }
    pthread_mutex_unlock(&d->lock);

    /* Upload in parallel: helpers plus this thread, all joined before the round goes on, so no
     * worker outlives the round (or the plugin). */
    double upload_start = disk_now(); /* GC: see the commit window below */
    pthread_mutex_init(&rd.lock, NULL);
    unsigned workers = d->env->upload_parallel < rd.n ? d->env->upload_parallel : (unsigned)rd.n;
    pthread_t *threads = g_new0(pthread_t, workers > 0 ? workers : 1);
    unsigned started = 0;
    /* In the background every worker is a helper, so that all of them run at low priority. */
    for (unsigned i = background ? 0 : 1; i < workers; i++) {
        if (pthread_create(&threads[started], NULL, round_helper, &rd) != 0)
            break; /* fewer helpers: the work still gets done */
        started++;
    }
    if (!background || started == 0)
        round_worker(&rd);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    g_free(threads);
    pthread_mutex_destroy(&rd.lock);

    for (size_t i = 0; i < rd.n && r == 0; i++)
        if (rd.items[i].result < 0)
            r = rd.items[i].result;
    if (r == 0 && rd.abandoned && !(d->env->stopping && *d->env->stopping)) {
        log_info("disk", "%s: upload of flush %llu left to a flush after %zu of %zu chunks",
                 d->meta.name, (unsigned long long)gen, rd.next, rd.n);
        pthread_mutex_lock(&d->lock);
        r = -ECANCELED;
        goto out_unref_locked;
    }
    if (r == 0 && rd.abandoned) {
        log_info("disk",
                 "%s: shutting down: upload of flush %llu abandoned after %zu of %zu chunks; "
                 "it stays journaled and is uploaded at the next start",
                 d->meta.name, (unsigned long long)gen, rd.next, rd.n);
        pthread_mutex_lock(&d->lock);
        r = -ECANCELED;
        goto out_unref_locked;
    }
    /* ---- GC (added for garbage collection; keep these lines together) ----
     * WISP_TEST_COMMIT_DELAY_MS (tests only) pauses here, between the uploads and the commit,
     * where a GC may run.  Then the GC invariant (meta/chunk_gc.h, (a)): every chunk this round
     * names was uploaded, or found younger than the refresh age, after upload_start; so if the
     * commit comes within commit_window (gc-grace minus the refresh age) of it, none of them
     * is older than gc-grace, and a GC keeps them.  Later, fail the round: the next one
     * uploads again and refreshes what has grown old. */
    const char *test_delay = getenv("WISP_TEST_COMMIT_DELAY_MS");
    if (r == 0 && test_delay && atoi(test_delay) > 0) {
        log_info("disk", "%s: pausing %d ms before the commit (WISP_TEST_COMMIT_DELAY_MS)",
                 d->meta.name, atoi(test_delay));
        usleep((useconds_t)atoi(test_delay) * 1000);
    }
    for (size_t i = 0; i < rd.n; i++) /* chunks uploaded ahead count from their upload */
        if (rd.items[i].uploaded_at > 0 && rd.items[i].uploaded_at < upload_start)
            upload_start = rd.items[i].uploaded_at;
    if (r == 0 && d->env->commit_window > 0 && disk_now() - upload_start > d->env->commit_window) {
        log_error("disk",
                  "%s: flush %llu took %.0f s to upload, more than gc-grace allows (%.0f s): "
                  "not committed, retrying (raise gc-grace if this repeats)",
                  d->meta.name, (unsigned long long)gen, disk_now() - upload_start,
                  d->env->commit_window);
        r = -ETIMEDOUT;
    }
    /* ---- end of GC ---- */
    if (r == 0)
        write_log_test_kill("fold");
    if (r == 0)
        r = disk_lease_check(d, gen);
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
        if (dc && dc->frozen_gen <= gen && dc->frozen == it->file && dc->frozen_kind == it->kind) {
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
        if (r == 0) /* the head holds them now */
            r = meta_write_log_shipped_drop(d->env->meta, d->meta.id, gen);
        /* Nothing flushed after this round: the log holds no flush the head lacks.  Decided
         * under meta_lock, which a flush's mark takes too (disk_log_mark_unuploaded).  With
         * durability=remote the log never holds an acknowledged flush beyond the head and the
         * rows: the mark (from a durability=local run's log replayed at open) goes with the
         * round that commits what was replayed. */
        bool clear_mark = false;
        if (r == 0 && d->wlog) {
            pthread_mutex_lock(&d->lock);
            clear_mark = d->wlog_marked &&
                         (d->flush_gen == gen || d->env->durability == DISK_DURABILITY_REMOTE);
            pthread_mutex_unlock(&d->lock);
            if (clear_mark)
                r = meta_write_log_set_unuploaded(d->env->meta, d->meta.id, false);
        }
        if (r == 0)
            r = meta_commit(d->env->meta);
        else
            meta_rollback(d->env->meta);
        if (r == 0 && clear_mark) {
            pthread_mutex_lock(&d->lock);
            d->wlog_marked = false;
            pthread_mutex_unlock(&d->lock);
        }
        pthread_mutex_unlock(d->env->meta_lock);
    }

    pthread_mutex_lock(&d->lock);
    if (r < 0) {
        /* The in-memory head is ahead of the database now; the pending journal still holds
         * everything, so a restart recovers.  Until then, refuse to acknowledge flushes. */
        d->failed = true;
        chunk_map_forget_pages(d->head); /* the pages went with the rolled-back transaction */
        log_error("disk",
                  "%s: cannot commit flush %llu to the metadata: %s; the disk is "
                  "read-only until a restart",
                  d->meta.name, (unsigned long long)gen, strerror(-r));
    } else {
        disk_rebase_locked(d, &rd);
        d->committed_gen = gen;
        /* The commit deleted the pending rows up to gen: their superseded files can go. */
        for (guint i = 0; i < d->journal->len && d->wlog_append;) {
            struct journal_item *ji = &g_array_index(d->journal, struct journal_item, i);
            if (ji->gen <= gen && ji->kind == SLOT_NONE && !ji->file) {
                chunk_file_unref_locked(d, ji->superseded);
                g_array_remove_index(d->journal, i);
            } else {
                i++;
            }
        }
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
    if (r == 0 && d->wlog) {
        pthread_mutex_lock(&d->ship_lock);
        if (gen_pos > d->shipped_pos)
            d->shipped_pos = gen_pos;
        d->shipped_uncommitted = 0;
        pthread_mutex_unlock(&d->ship_lock);
        /* The log's segments up to this flush are in the store now (write_log.h, L3), and
         * shipping never reads before gen_pos again.  A failure to delete one only keeps it:
         * replaying it again is harmless. */
        write_log_retire(d->wlog, gen);
    }
    return r;
}

/* Before the first flush after a commit returns: tell offline tools that the head is not the
 * disk's state (write_logs.unuploaded).  Once per upload round, not per flush. */
static int disk_log_mark_unuploaded(struct disk *d)
{
    int r = 0;

    pthread_mutex_lock(&d->lock);
    bool marked = d->wlog_marked;
    pthread_mutex_unlock(&d->lock);
    if (marked)
        return 0;
    pthread_mutex_lock(d->env->meta_lock);
    pthread_mutex_lock(&d->lock);
    marked = d->wlog_marked;
    pthread_mutex_unlock(&d->lock);
    if (!marked)
        r = meta_write_log_set_unuploaded(d->env->meta, d->meta.id, true);
    if (r == 0) {
        pthread_mutex_lock(&d->lock);
        d->wlog_marked = true;
        pthread_mutex_unlock(&d->lock);
    }
    pthread_mutex_unlock(d->env->meta_lock);
    return r;
}

/* ---- durability=remote: shipping the log ----------------------------------------------------
 *
 * A flush of a few small writes would upload a whole chunk for each chunk they touched: 256
 * times the bytes written, for 4 KiB writes into 1 MiB chunks.  Instead, it may ship the log's
 * bytes since the last shipment (its writes, as whole 4 KiB blocks) as one row of the metadata
 * (meta_write_log_ship), which the flush's replication then puts in the store; upload rounds
 * follow within upload-delay, as with durability=local, and drop the rows they cover.
 *
 * Invariant (the recovery argument, with write_log.h's L3): a disk's rows, in order, are the
 * log's bytes without a gap from a record boundary at or before the end of the head's flush up
 * to shipped_pos, and each row ends with a FLUSH record.  shipped_pos only grows: to a row's end
 * when the row is committed, to a round's FLUSH when the round commits (dropping, in its
 * transaction, the rows whose flushes it holds).  Records of flushes the head holds replay as
 * no-ops (L3).  So the head plus the rows, replayed (disk.c, disk_log_install_shipped), is the
 * state of the last flush shipped or committed: every acknowledged flush, on any host that
 * restores the metadata.  A log replayed at open from this host's files may hold flushes never
 * shipped; while its mark stands (wlog_marked), every flush uploads instead of shipping, and the
 * first round that commits clears the mark. */

#define DISK_SHIP_MAX_BYTES       (8u << 20)   /* a bigger flush uploads its chunks instead */
#define DISK_SHIP_MAX_UNCOMMITTED (256u << 20) /* rows since the last commit, at most */

/* Ships the log up to the FLUSH of gen ending at pos, if that is cheaper than uploading the
 * chunks.  1: shipped (or a concurrent flush shipped past pos), 0: not shipped, the caller
 * runs a round; or -errno. */
static int disk_ship(struct disk *d, uint64_t gen, uint64_t pos)
{
    void *buf = NULL;
    int r;

    pthread_mutex_lock(&d->ship_lock);
    uint64_t from = d->shipped_pos;
    uint64_t len = pos > from ? pos - from : 0;
    pthread_mutex_lock(&d->lock);
    uint64_t pending = d->stats.pending_bytes;
    pthread_mutex_unlock(&d->lock);
    if (len == 0) {
        r = 1;
        goto out;
    }
    /* Worth it when the rows are a fraction of what a round would upload now. */
    if (len > DISK_SHIP_MAX_BYTES || len * 4 > pending ||
        d->shipped_uncommitted + len > DISK_SHIP_MAX_UNCOMMITTED) {
        r = 0;
        goto out;
    }
    buf = g_try_malloc(len);
    if (!buf) {
        r = 0;
        goto out;
    }
    r = write_log_read(d->wlog, from, pos, buf);
    if (r < 0) { /* -ENOENT: a round retired those bytes and has not moved shipped_pos yet */
        if (r != -ENOENT)
            log_warn("disk", "%s: cannot read the log to ship flush %llu (%s): uploading instead",
                     d->meta.name, (unsigned long long)gen, strerror(-r));
        r = 0;
        goto out;
    }
    if (r == 0)
        r = disk_lease_check(d, gen);
    if (r == 0) {
        pthread_mutex_lock(d->env->meta_lock);
        r = meta_write_log_ship(d->env->meta, d->meta.id, gen, buf, len);
        pthread_mutex_unlock(d->env->meta_lock);
    }
    if (r < 0) {
        log_error("disk", "%s: cannot ship flush %llu: %s", d->meta.name, (unsigned long long)gen,
                  strerror(-r));
        goto out;
    }
    d->shipped_pos = pos;
    d->shipped_uncommitted += len;
    pthread_mutex_lock(&d->lock);
    d->stats.log_ships++;
    d->stats.log_ship_bytes += len;
    if (gen > d->shipped_gen)
        d->shipped_gen = gen;
    pthread_mutex_unlock(&d->lock);
    r = 1;
out:
    pthread_mutex_unlock(&d->ship_lock);
    g_free(buf);
    return r;
}

int disk_flush(struct disk *d)
{
    uint64_t gen;
    int r = disk_freeze(d, &gen);

    pthread_mutex_lock(&d->lock);
    bool failed = d->failed;
    uint64_t pos = d->wlog_last_pos, pos_gen = d->wlog_last_gen;
    bool done = d->committed_gen >= gen;
    bool round_first = d->wlog_marked || d->unlogged_gen > d->committed_gen;
    pthread_mutex_unlock(&d->lock);
    if (failed || r < 0)
        return -EIO;

    if (d->env->durability == DISK_DURABILITY_LOCAL) {
        /* One fdatasync covers this flush and every earlier one (the latest FLUSH record,
         * which may be another flush's if nothing was written since: that one must be durable
         * too). */
        if (d->wlog_append) {
            r = write_log_sync(d->wlog, pos);
            return r < 0 ? r : disk_log_mark_unuploaded(d);
        }
        return disk_journal(d, gen);
    }

    /* durability=remote.  pos ends the FLUSH of pos_gen, the latest, which covers ours. */
    if (done)
        return 0;
    if (d->env->ship_log && d->wlog_append && !round_first && pos_gen >= gen) {
        /* Synced too: a log this host replays (marked by a durability=local run) must hold
         * every flush shipped since. */
        r = write_log_sync(d->wlog, pos);
        if (r == 0)
            r = disk_ship(d, pos_gen, pos);
        if (r != 0)
            return r < 0 ? r : 0;
    }

    disk_round_lock_foreground(d);
    pthread_mutex_lock(&d->lock);
    done = d->committed_gen >= gen;
    pthread_mutex_unlock(&d->lock);
    r = done ? 0 : disk_round(d, false);
    pthread_mutex_unlock(&d->round_lock);
    return r;
}

int disk_commit_now(struct disk *d, struct chunk_hash *root)
{
    int r;

    if (d->version) {
        *root = d->meta.head_root;
        return 0;
    }
    r = disk_freeze(d, NULL);
    pthread_mutex_lock(&d->lock);
    bool failed = d->failed || r < 0;
    pthread_mutex_unlock(&d->lock);
    if (failed)
        return -EIO;
    disk_round_lock_foreground(d);
    r = disk_round(d, false);
    pthread_mutex_lock(&d->lock);
    if (r == 0 && d->committed_gen < d->flush_gen)
        r = -EAGAIN; /* cannot happen: the round took the latest flush under round_lock */
    *root = d->meta.head_root;
    pthread_mutex_unlock(&d->lock);
    pthread_mutex_unlock(&d->round_lock);
    return r;
}

static gboolean disk_restore_collect(gpointer key, gpointer value, gpointer opaque)
{
    struct dirty_chunk *dc = value;
    GPtrArray *files = opaque;

    if (dc->live)
        g_ptr_array_add(files, dc->live);
    if (dc->frozen)
        g_ptr_array_add(files, dc->frozen);
    if (dc->spare)
        g_ptr_array_add(files, dc->spare);
    return FALSE;
}

int disk_restore(struct disk *d, const struct chunk_hash *root)
{
    struct meta_disk version = d->meta;
    struct chunk_map *map;
    int r;

    if (d->version)
        return -EPERM;
    version.head_root = *root;
    pthread_mutex_lock(&d->round_lock);
    pthread_mutex_lock(&d->journal_lock);
    pthread_rwlock_wrlock(&d->barrier);

    /* The restore is a flush generation of its own, so that the write log can tell whether it
     * committed (write_log.h, L5). */
    uint64_t gen = d->flush_gen + 1;
    bool reset = false;
    pthread_mutex_lock(d->env->meta_lock);
    r = meta_map_load(d->env->meta, &version, &map);
    if (r == 0 && d->wlog) {
        r = write_log_reset(d->wlog, gen);
        if (r < 0)
            chunk_map_free(map);
        reset = r == 0;
    }
    if (r == 0) {
        r = meta_begin(d->env->meta);
        if (r == 0)
            r = meta_pending_clear(d->env->meta, d->meta.id);
        if (r == 0)
            r = meta_head_set(d->env->meta, d->meta.id, root, gen);
        if (r == 0 && d->wlog)
            r = meta_write_log_set_unuploaded(d->env->meta, d->meta.id, false);
        if (r == 0) /* every row is of a flush before the restore's gen */
            r = meta_write_log_shipped_drop(d->env->meta, d->meta.id, gen);
        if (r == 0)
            r = meta_commit(d->env->meta);
        else
            meta_rollback(d->env->meta);
        if (r < 0)
            chunk_map_free(map);
    }
    pthread_mutex_unlock(d->env->meta_lock);
    if (reset && r < 0 && write_log_reset_undo(d->wlog) < 0) {
        pthread_mutex_lock(&d->lock);
        d->failed = true; /* the log cannot take more writes safely: flushes fail */
        pthread_mutex_unlock(&d->lock);
    }
    if (reset && r == 0) {
        write_log_reset_done(d->wlog); /* failing, it keeps segments the RESET voids */
        /* Writers are excluded: everything in the log so far is voided or in the head. */
        pthread_mutex_lock(&d->ship_lock);
        d->shipped_pos = write_log_position(d->wlog);
        d->shipped_uncommitted = 0;
        pthread_mutex_unlock(&d->ship_lock);
    }

    if (r == 0) {
        GPtrArray *files = g_ptr_array_new();
        pthread_mutex_lock(&d->lock);
        /* Everything written since the version is dropped: slots, journal and their files. */
        g_tree_foreach(d->dirty, disk_restore_collect, files);
        for (guint i = 0; i < d->journal->len; i++) {
            struct journal_item *it = &g_array_index(d->journal, struct journal_item, i);
            g_ptr_array_add(files, it->file);
            g_ptr_array_add(files, it->superseded);
        }
        g_array_set_size(d->journal, 0);
        g_tree_destroy(d->dirty);
        d->dirty = g_tree_new_full(disk_idx_compare, NULL, NULL, g_free);
        for (guint i = 0; i < files->len; i++)
            chunk_file_unref_locked(d, g_ptr_array_index(files, i));
        chunk_map_free(d->head);
        d->head = map;
        d->meta.head_root = *root;
        d->flush_gen = d->journal_gen = d->committed_gen = gen;
        d->wlog_marked = false;
        d->stats.pending_bytes = 0;
        d->first_unuploaded = 0;
        d->prefetched_to = 0;
        pthread_mutex_unlock(&d->lock);
        g_ptr_array_unref(files);
    }
    pthread_rwlock_unlock(&d->barrier);
    pthread_mutex_unlock(&d->journal_lock);
    pthread_mutex_unlock(&d->round_lock);
    if (r < 0)
        log_error("disk", "%s: restore failed: %s", d->meta.name, strerror(-r));
    return r;
}

int disk_upload_due(struct disk *d, double delay_s)
{
    int r;

    pthread_mutex_lock(&d->lock);
    bool due = d->first_unuploaded > 0 && disk_now() - d->first_unuploaded >= delay_s &&
               d->committed_gen < d->flush_gen && !d->failed &&
               (d->env->durability == DISK_DURABILITY_LOCAL || d->shipped_gen > d->committed_gen);
    pthread_mutex_unlock(&d->lock);
    if (!due)
        return 0;
    pthread_mutex_lock(&d->round_lock);
    r = disk_round(d, true);
    pthread_mutex_unlock(&d->round_lock);
    if (r == -ECANCELED)
        return 0; /* given way to a flush's round, or shutting down: not a failure */
    if (r < 0) {
        /* Try again after another delay rather than in a tight loop. */
        pthread_mutex_lock(&d->lock);
        d->first_unuploaded = disk_now();
        pthread_mutex_unlock(&d->lock);
        return r;
    }
    return 1;
}
