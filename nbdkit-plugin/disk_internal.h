/* disk_internal.h: what disk.c (the data path) and disk_flush.c (freeze, journal, upload
 * rounds) share.  Not for other files: they use disk.h.
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
#ifndef WISP_DISK_INTERNAL_H
#define WISP_DISK_INTERNAL_H

#include "chunk_layout.h"
#include "disk.h"
#include "file_reaper.h"
#include "write_log.h"

#include <glib.h>

#define DISK_STRIPES 64

/* Invariant: a chunk file's content plus its layout is the chunk's content at one moment, so
 * the blocks it does not hold are those of layout.base (or zeros).  A live file's layout grows
 * (blocks marked written) only under its chunk's stripe and d->lock, after the data is in the
 * file; a round's commit may replace layout.base by an equal-content chunk under d->lock
 * (disk_round).  Readers copy the layout under d->lock. */
struct chunk_file {
    char name[96]; /* relative to the cache directory: dirty/<disk id>/<idx>.<nonce> */
    unsigned refs;
    struct chunk_layout layout;
    uint64_t seq; /* writes into the file so far, counted under its stripe and d->lock */
    /* Which file this one's content was copied from, for the spare's incremental refresh
     * (disk_file_make), under d->lock.  serial: unique in the disk, never 0, new whenever the
     * file is (re)made; made_from: the serial of the frozen file whose written blocks were
     * copied in when this one was made, 0 if none; own: the blocks written into this file
     * itself since then (a subset of layout.written).  So this file holds made_from's written
     * blocks, as they were, overlaid with own. */
    uint64_t serial, made_from;
    struct chunk_layout own;
    /* Upload ahead of the flush (disk_ahead.c), under d->lock. */
    bool ahead_queued, ahead_running, ahead_done, ahead_zero;
    uint64_t ahead_seq; /* the seq whose content ahead_hash names */
    int ahead_error;    /* the last early upload's failure (its own retries included), or 0 */
    struct chunk_hash ahead_hash;
    double ahead_time; /* when the object was stored (or found young) */
    bool pending_row;  /* named by a pending row of the SQLite journal (recovered at open) */
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
    /* With the write log: a superseded frozen file, kept (one reference, the slot's) to be the
     * chunk's next live file instead of creating one and unlinking this one, which dominated
     * the cost of small random writes.  An upload round or a reader may still hold it too (a
     * superseded file gains no new references): disk_file_make reuses it only once the spare's
     * is the last one.  Its blocks outside the next layout are stale but never read: every
     * reader goes through the layout (chunk_layout.h). */
    struct chunk_file *spare;
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
    pthread_mutex_t ship_lock; /* durability=remote: serialises shipping, guards shipped_pos */
    /* Every byte of the log before this position is in a shipped row or in the head; a flush
     * ships from here (disk_flush.c, disk_ship). */
    uint64_t shipped_pos;
    /* Log bytes in shipped rows since the last commit, under ship_lock: past a bound, a flush
     * runs an upload round instead, so that rows never pile up while rounds fail. */
    uint64_t shipped_uncommitted;
    pthread_rwlock_t barrier;
    pthread_mutex_t stripes[DISK_STRIPES];

    pthread_mutex_t lock; /* protects everything below */
    pthread_cond_t progress;
    struct chunk_map *head;  /* committed */
    GTree *dirty;            /* idx -> struct dirty_chunk */
    GArray *journal;         /* struct journal_item, in gen order */
    uint64_t flush_gen;      /* the latest freeze */
    uint64_t journal_gen;    /* durability=local: journaled up to here */
    uint64_t committed_gen;  /* the head is this flush's state */
    double first_unuploaded; /* monotonic time of the oldest flush not yet uploaded; 0 if none */
    bool failed;             /* metadata commit failed, or fenced: refuse further flushes */
    bool fenced;             /* another host holds the writer's lease now */
    struct lease *lease;     /* NULL: no lease (read-only, or leases off) */
    bool lease_required;     /* commit only with a lease */
    bool version;            /* a read-only checkpoint, "NAME@CHECKPOINT" */
    char version_name[2 * META_DISK_NAME_MAX + 2];
    unsigned ahead_pending; /* tasks of this disk in env->ahead_pool */
    bool ahead_stopping;    /* closing: its queued tasks do nothing */
    uint64_t next_read;     /* end of the last read, for sequential read-ahead */
    uint64_t prefetched_to; /* chunk index read-ahead has reached */
    uint64_t next_serial;   /* the last chunk_file.serial given, under d->lock */
    struct disk_stats stats;
    /* The write log (write_log.h), NULL for a checkpoint.  Every write is appended to it and a
     * flush syncs it; durability=remote then ships its new bytes or runs an upload round. */
    struct write_log *wlog;
    bool wlog_append; /* writes and flushes go through the log (not for a checkpoint) */
    /* durability=remote: the latest generation holding a write not logged (disk.c,
     * disk_log_this), under d->lock.  A flush ships only once a commit holds it. */
    uint64_t unlogged_gen;
    /* durability=remote: the latest generation acknowledged without a commit (shipped, or
     * replayed at open), under d->lock.  Only then is a round due in the background: a flush
     * that failed leaves nothing acknowledged to upload. */
    uint64_t shipped_gen;
    /* Threads waiting for round_lock to run a round someone waits for (a flush, a checkpoint),
     * atomic: a background round gives way to them (disk_flush.c, round_abandoning). */
    unsigned round_waiters;
    uint64_t wlog_last_pos; /* the end of the latest FLUSH record, under d->lock */
    uint64_t wlog_last_gen; /* ... and its gen: set together, so that they always match */
    /* Mirrors write_logs.unuploaded in SQLite (meta.h), under d->lock; changed only with
     * env->meta_lock held too, so that a flush's mark and a commit's clearing are ordered. */
    bool wlog_marked;
};

double disk_now(void);
/* Orders the dirty tree by chunk index. */
gint disk_idx_compare(gconstpointer a, gconstpointer b, gpointer unused);
/* Drops a reference; the last one closes and unlinks the file.  Caller holds d->lock. */
void chunk_file_unref_locked(struct disk *d, struct chunk_file *f);
void chunk_file_unref(struct disk *d, struct chunk_file *f);
/* Opens a chunk file for one operation (files are not kept open).  The fd, or -errno. */
int chunk_file_open(struct disk *d, const struct chunk_file *f, int flags);
/* Reads count bytes at offset; a sparse tail reads as zeros. */
int disk_pread_all(int fd, void *buf, size_t count, uint64_t offset);
/* Reads count bytes at offset within a chunk whose file is fd and layout l: written blocks from
 * the file, the others from the base chunk (through the cache) or zeros. */
int disk_layout_read(struct disk *d, const struct chunk_layout *l, int fd, void *buf,
                     uint64_t count, uint64_t offset);
/* Blocks per chunk. */
uint32_t disk_chunk_blocks(const struct disk *d);
bool disk_is_zero(const void *buf, size_t len);
/* Uploads one chunk's content (disk_flush.c): nothing if it is all zeros (*zero), else hashed
 * into *h and put in the store, not in the cache. */
int disk_put_chunk(struct disk *d, const void *buf, struct chunk_hash *h, bool *zero);
/* disk_put_chunk, then adds the chunk to the cache: from path when path names a file of exactly
 * this content that nobody writes again, else by writing a copy of buf. */
int disk_store_chunk(struct disk *d, const void *buf, const char *path, struct chunk_hash *h,
                     bool *zero);
/* A write log segment is closed at the first flush past this size. */
#define DISK_LOG_SEGMENT_BYTES (UINT64_C(64) << 20)

/* Freezes every live chunk as the state of a new flush (disk_flush.c) and gives its generation
 * (or the latest one, if nothing was written since) in *gen if not NULL; with the write log,
 * also appends the flush's FLUSH record.  0 or -errno (the FLUSH could not be appended). */
int disk_freeze(struct disk *d, uint64_t *gen);

/* Caller holds d->lock. */
struct dirty_chunk *disk_dirty_get_locked(struct disk *d, uint64_t idx);

/* disk_ahead.c: waits for the disk's tasks to end (at close); queues a live file that became
 * whole (caller holds d->lock and the chunk's stripe). */
void disk_ahead_stop(struct disk *d);
void disk_ahead_queue_locked(struct disk *d, uint64_t idx, struct chunk_file *f);
void disk_dirty_drop_if_empty_locked(struct disk *d, struct dirty_chunk *dc);

#endif
