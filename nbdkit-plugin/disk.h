/* disk.h: one open disk: its chunk states, the data path, flush and upload.
 *
 * A chunk's content is the first of these that exists:
 *   live    written since the last flush: a local file (or "zero" after a whole-chunk trim);
 *   frozen  written before a flush and not yet committed to the store: an immutable local file;
 *   head    the committed map (chunk hash, content in the chunk cache and the store);
 *   zeros.
 * A flush freezes every live chunk at once, under the write side of the disk's flush barrier,
 * so the frozen set is always exactly the disk at some flush.  An upload round takes the frozen
 * set of the latest flush, uploads it, and commits the new head in one SQLite transaction: so
 * the store's state of a disk is always some flush's state, never a mix.
 *
 * durability=local: a flush fsyncs its frozen files and records them in the metadata's
 * pending journal; a round follows within upload-delay.  durability=remote: a flush runs the
 * round itself and returns once the head is committed. */
#ifndef WISP_DISK_H
#define WISP_DISK_H

#include "chunk_cache.h"
#include "meta.h"

#include <glib.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

enum disk_durability {
    DISK_DURABILITY_LOCAL,
    DISK_DURABILITY_REMOTE,
};

const char *disk_durability_to_string(enum disk_durability d);

struct disk;

/* What every open disk shares, owned by the plugin. */
struct disk_env {
    const char *cache_dir;
    struct chunk_cache *cache;
    struct meta *meta;
    pthread_mutex_t *meta_lock; /* the meta connection is used by one thread at a time */
    enum disk_durability durability;
    /* durability=remote: a flush of small writes may ship the write log through the metadata
     * instead of uploading chunks (disk_flush.c).  Only where the metadata is replicated: the
     * rows must be in the store when the flush returns. */
    bool ship_log;
    unsigned upload_parallel;   /* chunks uploaded at once in a round */
    uint64_t readahead_bytes;   /* prefetched ahead of a sequential reader */
    struct file_reaper *reaper; /* unlinks dropped chunk files; NULL: unlink in place */
    /* Asks for the lease of a disk that needs one (disk_require_lease) now, before a commit;
     * 0 once disk_set_lease was called. */
    int (*lease_now)(struct disk *d, void *opaque);
    void *lease_opaque;
    /* durability=remote: the threads that upload whole chunks before their flush
     * (disk_ahead_pool_new); NULL: none. */
    GThreadPool *ahead_pool;
    /* GC (meta/chunk_gc.h, invariant (a)): a round commits only if at most this many seconds
     * passed since it started uploading (gc-grace minus the refresh age); 0: no limit. */
    double commit_window;
    /* If not NULL, read atomically: once true (the server shuts down), a durability=local
     * round takes no more chunks and ends with -ECANCELED without committing.  Its flush stays
     * journaled and is uploaded at the next start, so shutting down never waits for a long
     * upload. */
    const bool *stopping;
};

struct disk_stats {
    uint64_t reads, read_bytes, writes, write_bytes, zeroes, flushes;
    uint64_t uploads, upload_bytes, rounds, upload_failures;
    uint64_t uploads_ahead; /* whole chunks uploaded before their flush (durability=remote) */
    uint64_t dirty_bytes;   /* live and frozen chunk files */
    uint64_t pending_bytes; /* frozen: flushed, waiting for upload */
    uint64_t chunks;        /* chunks with data in the committed head */
    uint64_t flush_gen, committed_gen;
    uint64_t log_replayed; /* write log records replayed at open */
    uint64_t copy_bytes;   /* copied from a frozen file into the chunk's next live file */
    uint64_t log_ships, log_ship_bytes; /* durability=remote: flushes shipped as log bytes */
};

/* The pool of disk_env.ahead_pool, and its end (after every disk is closed). */
GThreadPool *disk_ahead_pool_new(unsigned threads);
void disk_ahead_pool_free(GThreadPool *pool);

/* Opens disk m: loads its head map and recovers its pending journal.  With version, opens that
 * checkpoint of m instead, read-only (writes give -EPERM), leaving the head's state alone. */
int disk_open(struct disk_env *env, const struct meta_disk *m,
              const struct meta_checkpoint *version, struct disk **out);
/* Frees d without uploading anything (pending data stays journaled). */
void disk_close(struct disk *d);

/* The writer's lease (lease.h) the disk was opened with, owned by the caller: every upload
 * round checks it before its commit, and a disk whose lease another host took is fenced. */
struct lease;
void disk_set_lease(struct disk *d, struct lease *l);
/* The disk needs a lease it does not have yet (the store could not be reached when it was
 * opened): until disk_set_lease, it serves reads and takes writes but commits nothing. */
void disk_require_lease(struct disk *d);
/* Fences d: it refuses every later flush and commit (EIO), for good, and says why. */
void disk_fence(struct disk *d);
bool disk_fenced(struct disk *d);

const char *disk_name(const struct disk *d);
int64_t disk_id(const struct disk *d);
uint64_t disk_size(const struct disk *d);
uint32_t disk_chunk_size(const struct disk *d);

int disk_read(struct disk *d, void *buf, uint32_t count, uint64_t offset);
int disk_write(struct disk *d, const void *buf, uint32_t count, uint64_t offset);
/* Zero and trim are the same here: whole chunks are dropped, partial ones written with zeros. */
int disk_zero(struct disk *d, uint32_t count, uint64_t offset);
int disk_flush(struct disk *d);
/* Prefetches [offset, offset + count) into the chunk cache. */
void disk_prefetch(struct disk *d, uint32_t count, uint64_t offset);

/* Calls fn for runs of data and of holes covering [offset, offset + count), neighbours merged.
 * fn returns 0 to continue. */
typedef int (*disk_extent_fn)(uint64_t offset, uint64_t length, bool hole, void *opaque);
int disk_extents(struct disk *d, uint64_t count, uint64_t offset, disk_extent_fn fn, void *opaque);

/* Makes every write acknowledged so far part of the store's state, whatever the durability:
 * freezes and runs an upload round now.  *root receives the committed head (for checkpoint and
 * clone). */
int disk_commit_now(struct disk *d, struct chunk_hash *root);

/* Makes version root the disk's head, discarding data written since (live, frozen and
 * journaled).  Requests after it see the new content. */
int disk_restore(struct disk *d, const struct chunk_hash *root);

/* Uploads the latest flush (durability=local, or shipped as log by durability=remote) if it has
 * waited at least delay_s.  Returns 0 if nothing was due, 1 after a successful round, or a
 * negative errno. */
int disk_upload_due(struct disk *d, double delay_s);

void disk_get_stats(struct disk *d, struct disk_stats *out);

#endif
