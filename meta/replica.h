/* replica.h: replication of a metadata database to the object store, and restore from it.
 *
 * Litestream-style physical WAL shipping.  The server's connection stops checkpointing by
 * itself (a WAL hook replaces SQLite's auto-checkpoint), so the WAL only grows between the
 * checkpoints this module makes, and its committed bytes never change under us.
 *
 * Store layout, under meta/<NAME>/ (NAME: the replica name, one per metadata directory):
 *
 *   gen-<G>/snapshot.db                    the database file right after a checkpoint that
 *                                          emptied the WAL (PRAGMA wal_checkpoint(TRUNCATE))
 *   gen-<G>/manifest                       written after the snapshot: the generation is
 *                                          complete; restore ignores a generation without it
 *   gen-<G>/seg-<S>-<FROM>-<TO>-<H>        bytes [FROM, TO) of that WAL, ending on a commit
 *                                          frame; H is the first 16 hex digits of their SHA-256
 *
 * G, S, FROM and TO are 16 lower-case hex digits.  One sequence counts snapshots and segments
 * together and only grows, across generations and server restarts (a new server lists the
 * prefix and goes on from the highest number it finds), so the listing order is the order of
 * application.  A generation is the life of one WAL: it begins with its snapshot, G being the
 * snapshot's sequence number, and its segments are numbered G+1, G+2, ... with no gap.
 *
 * Restore takes the newest complete generation, its snapshot, and its segments in order while
 * they are contiguous (sequence numbers and byte ranges) and intact (H): a missing or damaged
 * segment ends the log, and nothing after it is applied.  SQLite then replays the WAL (its frame
 * checksums and salts are a second check), the result must pass PRAGMA integrity_check, and
 * every frame shipped must have been replayed.  So a replica always restores to a state the
 * database had after one of its commits.
 *
 * A new generation starts at every replica_start and when the WAL passes a size (compaction);
 * older generations are deleted only after the new one's manifest is written.
 *
 * Thread safety: a struct replica is used from any thread.  Its shipping is serialised by an
 * internal lock; it takes the caller's meta lock only to checkpoint, never across a store
 * request. */
#ifndef WISP_REPLICA_H
#define WISP_REPLICA_H

#include "meta.h"
#include "store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define REPLICA_NAME_DEFAULT "default"

struct sqlite3;

/* Replica names obey meta_disk_name_valid (1 to 128 bytes of [A-Za-z0-9._-]). */
bool replica_name_valid(const char *name, const char **why);

struct replica_options {
    const char *name;          /* NULL: REPLICA_NAME_DEFAULT */
    double interval;           /* seconds between shipments by the replica's own thread; 0: no
                                * thread, the caller ships (replica_ship, replica_sync) */
    uint64_t compact_bytes;    /* a new generation once the WAL is this big and at least as big
                                * as the last snapshot; 0: 4 MiB */
    unsigned compact_segments; /* ... or has this many segments; 0: 1024 */
};

struct replica;

/* Starts replicating the database behind m, whose users serialise on *meta_lock, to st.  It
 * installs the WAL hook and, with options->interval > 0, starts the replica's thread.  Nothing
 * is sent yet: the first shipment begins a generation. */
int replica_start(struct meta *m, pthread_mutex_t *meta_lock, struct store *st,
                  const struct replica_options *options, struct replica **out);
/* The same for any SQLite database in WAL mode, not only the metadata (wispd's account
 * databases): db is its connection, whose users serialise on *db_lock and never hold a
 * transaction open across it; db_path its file (the WAL is db_path-wal); prefix the store
 * prefix its objects go under, ending in '/' (one writer per prefix; the layout below it is
 * the one above, with meta/<NAME>/ replaced by prefix).  label names it in the log. */
int replica_start_db(struct sqlite3 *db, const char *db_path, pthread_mutex_t *db_lock,
                     struct store *st, const char *prefix, const char *label,
                     const struct replica_options *options, struct replica **out);
/* Stops the thread, ships what is left (once, logging a failure), removes the hook and frees r.
 * The caller holds no lock; m stays open (closing it checkpoints the WAL). */
void replica_stop(struct replica *r);

/* Ships every commit made so far (beginning a generation if none is in the store, compacting
 * if due).  0 once they are all in the store; otherwise the store's error (the bytes are kept
 * and shipped, in order, next time). */
int replica_ship(struct replica *r);
/* What durability=remote waits for: returns 0 once every commit made before the call is in
 * the store, shipping it now (group commit: one shipment covers every waiter).  -EIO (or the
 * store's error) if that fails within the store's own retries; -ESTALE if another server took
 * over the replica name. */
int replica_sync(struct replica *r);

struct replica_stats {
    uint64_t generation;      /* sequence number of the current generation (0: none yet) */
    uint64_t seq;             /* last sequence number used */
    uint64_t commits;         /* commits seen since replica_start */
    uint64_t shipped_commits; /* of which in the store */
    uint64_t segments, segment_bytes, snapshots, snapshot_bytes, failures;
    uint64_t wal_bytes; /* committed bytes of the current WAL */
    double lag_s;       /* age of the oldest commit not in the store; 0 if none */
    bool fenced;        /* another server writes this replica: shipping stopped */
};
void replica_get_stats(struct replica *r, struct replica_stats *out);

/* ---- restore (replica_restore.c) ---------------------------------------------------------- */

enum replica_verify {
    REPLICA_VERIFY_NONE,   /* no chunk check (the database's own checks still run) */
    REPLICA_VERIFY_SAMPLE, /* every chunk named exists; a random sample is hashed */
    REPLICA_VERIFY_FULL,   /* every chunk named exists and is hashed */
};
const char *replica_verify_to_string(enum replica_verify v);

struct replica_restore_options {
    const char *name; /* NULL: REPLICA_NAME_DEFAULT */
    enum replica_verify verify;
    unsigned sample;       /* chunks hashed by REPLICA_VERIFY_SAMPLE; 0: 16 */
    const char *cache_dir; /* the cache directory the restored metadata will be used with; a
                            * disk's pending rows (durability=local data flushed but never
                            * uploaded) are kept only if every file they name is there.  NULL:
                            * a fresh host, every pending row is dropped */
    bool keep_pending;     /* keep every pending row, whatever cache_dir holds: for a copy that
                            * is only read (a GC counts their bases as references), never for
                            * one a server will use */
};

struct replica_restore_info {
    uint64_t generation, seq;  /* the generation used, and the last sequence number applied */
    unsigned segments;         /* segments applied */
    unsigned segments_ignored; /* after a gap or a damaged segment (logged) */
    uint64_t snapshot_bytes, wal_bytes, db_bytes;
    time_t replicated_at; /* store time of the newest object applied */
    unsigned disks, checkpoints;
    unsigned pending_dropped; /* disks whose unuploaded data was dropped */
    uint64_t chunks;          /* distinct chunks named by heads and checkpoints */
    uint64_t chunks_hashed;
    uint64_t chunks_missing, chunks_corrupt;
    char first_bad_chunk[72]; /* "chunks/<hex>" of the first missing or corrupt chunk */
};

/* Whether the store holds a complete generation of the replica: 1, 0, or a negative errno
 * (the store could not be listed). */
int replica_exists(struct store *st, const char *name);

/* replica_exists for a replica_start_db prefix. */
int replica_exists_at(struct store *st, const char *prefix);

/* Calls fn(name, opaque) once for each replica name that has objects under meta/ in st, in
 * byte order, whether or not it has a complete generation yet.  Stops at fn's first non-zero
 * return and returns it; or 0, -ENOMEM, or the store's error (logged). */
int replica_list_names(struct store *st, int (*fn)(const char *name, void *opaque), void *opaque);

/* Rebuilds dir/wisp.db from the replica and verifies it.  dir may be missing or hold no
 * database (-EEXIST if it has wisp.db or wisp.db-wal).  The database is built in a temporary
 * directory inside dir and moved into place only once every check passed.  Errors: -ENOENT (no
 * complete generation), -EBADMSG (the replica fails a check: snapshot hash, integrity_check,
 * a log that does not replay in full), -EIO with chunks_missing or chunks_corrupt set in *info
 * (verification found damage; nothing is installed), or the store's error. */
int replica_restore(struct store *st, const char *dir, const struct replica_restore_options *o,
                    struct replica_restore_info *info);

/* Rebuilds the database at db_path, which must not exist (nor its WAL), from the replica under
 * a replica_start_db prefix: the newest complete generation, with the checks above that are
 * not the metadata's own (snapshot hash, segment hashes, a log that replays in full,
 * integrity_check).  Built in a temporary directory beside db_path, linked into place once
 * every check passed.  Errors: -EEXIST, -ENOENT (no complete generation), -EBADMSG, or the
 * store's.  info: the generation, segment and byte counts. */
int replica_restore_db(struct store *st, const char *prefix, const char *db_path,
                       struct replica_restore_info *info);

/* For a reader of another host's metadata (the GC): rebuilds the replica `name` in a
 * temporary directory under scratch_dir, with every pending row kept and no chunk check, opens
 * it and returns fn(m, opaque), then removes the copy.  -ENOENT if the replica has no complete
 * generation; the errors of replica_restore and meta_open. */
int replica_read_copy(struct store *st, const char *name, const char *scratch_dir,
                      int (*fn)(struct meta *m, void *opaque), void *opaque,
                      struct replica_restore_info *info);

#endif
