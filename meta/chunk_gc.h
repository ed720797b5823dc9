/* chunk_gc.h: garbage collection of chunk objects.
 *
 * A chunk object, "chunks/<64 lower-case hex digits>", is garbage when no version (head or
 * checkpoint) of any disk in the metadata references it.  A run deletes the garbage that is
 * older than the grace period:
 *
 *   1. T0 := the store's clock: put a marker object gc/clock-<random>, read its mtime, delete
 *      it.  Every age here is measured in the store's clock, never the host's.
 *   2. R := the chunks referenced by every version, in one metadata snapshot taken after T0
 *      (meta_refs.h).  A damaged or missing map page fails the run before anything is deleted.
 *      Then the same for every other metadata replica in the store (meta/NAME/, replica.h),
 *      each rebuilt after T0 in a scratch directory: the disks of the other hosts that share
 *      the store.  A replica that cannot be read fails the run; one with no complete
 *      generation yet (a server's first shipment in progress) is skipped, as its chunks are
 *      young.  The run's own replica is skipped only when the caller says that m holds all of
 *      it (own_replica).
 *   3. List "chunks/".  A key that does not parse as a chunk key is left alone and logged.  A
 *      chunk in R is kept.  An unreferenced chunk whose mtime >= T0 - grace is kept (young).
 *      The rest are candidates.
 *   4. Each candidate is looked at again (HEAD) just before it is deleted: gone already
 *      (another GC) counts as already_gone; an mtime that moved to >= T0 - grace (a writer
 *      refreshed it, below) keeps it.  Deleting an object that is gone succeeds, so two GCs
 *      working from the same metadata never fail each other.
 *   With dry_run, steps 1-3 run and step 4 only counts: nothing is deleted.
 *
 * The GC invariant, which every writer of references keeps:
 *
 *   ** A commit that adds a reference to a chunk names either
 *   **   (a) an object that was uploaded, or refreshed (re-uploaded with the same bytes, which
 *   **       is the same content under a content hash), less than `grace` before the commit;
 *   **   or
 *   **   (b) a chunk that some version references without a break from before the commit
 *   **       until after it.
 *
 * (a) is the upload round's (nbdkit-plugin/disk_flush.c): a chunk it uploads is young; a chunk
 *     it finds already in the store (a dedup hit) is re-uploaded by chunk_cache_put when its
 *     mtime is older than the refresh age (grace / 2 by default); and the round refuses to
 *     commit when more than grace - refresh age passed since it started uploading.
 * (b) is for clone, checkpoint and restore, which copy a root.  A checkpoint's root stays
 *     referenced by the checkpoint while they run (control requests run one at a time); a
 *     head's root can move on, so the server re-reads it and commits the new version under its
 *     versions lock, which the server's GC holds while it reads R.  Offline, the metadata's
 *     exclusive lock serialises everything.
 *
 * Why that is enough: a chunk committed before R's snapshot is in R.  One committed after it
 * under (a) was uploaded or refreshed at U > commit - grace > T0 - grace, so a listing or HEAD
 * made after U sees it young.  What remains is the one race no S3 store lets a client close
 * (it has no conditional delete): a refresh that lands between step 4's HEAD and its DELETE of
 * the same object.  Its window is one request, and only an old dedup hit refreshes.
 *
 * Limits, written down in docs/storage.md:
 *   - A GC sees another host's commits through that host's replica, which lags its database by
 *     up to replicate-interval while the store is reachable.  The proof above holds for them
 *     as long as a commit reaches the store within grace/2 of being made (so its chunks are
 *     still young when a GC could first miss it).  A host cut off from the store for longer
 *     than that with commits not yet shipped (made with durability=local in the last
 *     replicate-interval before the cut) can find their new chunks collected by another host's
 *     GC; durability=remote acknowledges a flush only once its segment is in the store.
 *   - A replica nobody ships any more (a host retired without deleting meta/NAME/) keeps its
 *     chunks alive: deleting the prefix is the operator's decision.
 *   - Writers compare an object's mtime (store clock) with their own clock: clock skew between
 *     host and store eats into the refresh margin.
 *   - A grace of 0 makes in-flight uploads deletable: only for when nothing writes. */
#ifndef WISP_CHUNK_GC_H
#define WISP_CHUNK_GC_H

#include "chunk_map.h"
#include "meta.h"
#include "store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CHUNK_GC_GRACE_DEFAULT    3600 /* seconds */
#define CHUNK_GC_DURATION_MAX     (3650 * UINT64_C(86400))
#define CHUNK_GC_PARALLEL_DEFAULT 8
#define CHUNK_GC_CLOCK_KEY_PREFIX "gc/clock-"
#define CHUNK_GC_REPORT_MAX       512

struct chunk_gc_options {
    uint64_t grace_s;
    bool dry_run;
    unsigned parallel; /* HEAD+DELETE pairs at once; 0 for CHUNK_GC_PARALLEL_DEFAULT */
    /* If not NULL, held while R is read (the server's versions lock, see (b) above). */
    pthread_mutex_t *snapshot_lock;
    /* If not NULL, read atomically: once true, the run stops early with -ECANCELED. */
    const bool *stop;
    /* Where the other replicas are rebuilt (a temporary directory each, removed after);
     * NULL: g_get_tmp_dir().  Their size is that of the metadata databases. */
    const char *scratch_dir;
    /* The replica that m is shipped to, when every commit of m has just been shipped and no
     * other server writes it (not fenced): it adds nothing to m and is not read.  NULL: every
     * replica is read, which is always safe. */
    const char *own_replica;
};

struct chunk_gc_report {
    bool dry_run;
    uint64_t grace_s;
    time_t store_time; /* T0 */
    uint64_t disks, versions, pages, pages_shared;
    uint64_t replicas;                     /* other replicas whose references were read */
    uint64_t replicas_incomplete;          /* skipped: no complete generation yet */
    uint64_t referenced;                   /* distinct chunks referenced by some version */
    uint64_t objects, object_bytes;        /* chunk objects listed */
    uint64_t missing;                      /* referenced chunks with no object: damage, logged */
    uint64_t unreferenced;                 /* objects listed that no version references */
    uint64_t deleted, deleted_bytes;       /* with dry_run: would be deleted */
    uint64_t kept_young, kept_young_bytes; /* unreferenced but younger than the grace */
    uint64_t already_gone;                 /* deleted by someone else meanwhile */
    uint64_t failed;                       /* deletes that failed */
    uint64_t foreign;                      /* keys under chunks/ that are no chunk key */
    double seconds;
};

/* One run over store st and metadata m (see above).  m must have no transaction open.  Returns
 * 0; or -ECANCELED when stopped; or the first error (logged), in which case *out still counts
 * what was done (deletes that failed are in `failed`). */
int chunk_gc_run(struct store *st, struct meta *m, const struct chunk_gc_options *o,
                 struct chunk_gc_report *out);

/* Step 1 on its own, for other collectors of the same store (qmp-manager/vm_gc.c): *t0 := the
 * mtime the store gives a marker object gc/clock-<random> written now (the marker is deleted
 * again).  Returns 0 or a negative errno (logged). */
int chunk_gc_store_clock(struct store *st, time_t *t0);
/* Parses a duration: whole seconds ("3600") or a number with one unit, s, m, h or d ("90s",
 * "30m", "1h", "2d"), up to CHUNK_GC_DURATION_MAX.  Returns 0 or -EINVAL (nothing logged: the
 * caller names the option). */
int chunk_gc_parse_duration(const char *text, uint64_t *seconds);
/* The shortest exact form: "0s", "90s", "30m", "1h", "2d". */
void chunk_gc_format_duration(uint64_t seconds, char *buf, size_t size);
/* "12 chunk objects unreferenced, 10 deleted (10.0 MiB), 2 kept (younger than the grace period
 * 1h); 340 referenced" ("would be deleted" for a dry run) and, when not zero, the other counts.
 * Callers put "gc: " or "gc (dry run): " in front. */
void chunk_gc_format_report(const struct chunk_gc_report *r, char *buf, size_t size);
/* True and *out set if key is "chunks/" and 64 lower-case hex digits, exactly. */
bool chunk_gc_key_parse(const char *key, struct chunk_hash *out);

#endif
