/* meta.h: the metadata of a storage server, in one SQLite database (DIR/wisp.db, WAL mode).
 *
 * Tables (schema versioned with PRAGMA user_version):
 *   disks      (id, name UNIQUE, size, chunk_size, head_root, flush_gen, created)
 *   map_pages  (hash PRIMARY KEY, data)       pages of every version's chunk map (chunk_map.h)
 *   pending    (disk_id, idx, gen, file)      chunks flushed locally but not yet uploaded
 *                                             (durability=local), one row per (disk_id, idx)
 *
 * Invariants kept here:
 *   - a disk's head_root names a map whose pages are all in map_pages, and whose chunks were all
 *     uploaded before the transaction that set head_root committed;
 *   - pending rows name files in the cache directory that were fsynced before their row was
 *     committed; the head as seen after a restart is head_root's map overlaid with pending rows.
 *
 * A struct meta is one connection; use it from one thread at a time (the owner locks).
 * All functions return 0 or a negative errno, with the SQLite message logged under "meta". */
#ifndef WISP_META_H
#define WISP_META_H

#include "chunk_map.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define META_DISK_NAME_MAX  128
#define META_CHUNK_SIZE_MIN (64 * 1024)
#define META_CHUNK_SIZE_MAX (4 * 1024 * 1024)

struct meta;

struct meta_disk {
    int64_t id;
    char name[META_DISK_NAME_MAX + 1];
    uint64_t size;       /* bytes, a multiple of chunk_size */
    uint32_t chunk_size; /* power of two, 64 KiB to 4 MiB */
    struct chunk_hash head_root;
    uint64_t flush_gen;
    time_t created;
};

/* Opens (creating if needed) DIR/wisp.db.  With exclusive, also takes an exclusive flock on
 * DIR/lock (non-blocking): -EBUSY if another process holds it (a running server). */
int meta_open(const char *dir, bool exclusive, struct meta **out);
void meta_close(struct meta *m);

/* Groups calls into one transaction (BEGIN IMMEDIATE ... COMMIT, fsynced: synchronous=FULL). */
int meta_begin(struct meta *m);
int meta_commit(struct meta *m);
void meta_rollback(struct meta *m);

/* Disk names: 1 to 128 bytes of [A-Za-z0-9._-], not starting with '.' or '-'; '@' is
 * reserved for checkpoint exports.  Returns true, or false with *why set. */
bool meta_disk_name_valid(const char *name, const char **why);

/* size rounded up to whole chunks.  -EEXIST, -EINVAL (with the reason logged). */
int meta_disk_create(struct meta *m, const char *name, uint64_t size, uint32_t chunk_size,
                     struct meta_disk *out);
int meta_disk_get(struct meta *m, const char *name, struct meta_disk *out); /* -ENOENT */
int meta_disk_delete(struct meta *m, const char *name);                     /* -ENOENT */
/* In name order; fn's non-zero return stops and is returned. */
int meta_disk_list(struct meta *m, int (*fn)(const struct meta_disk *d, void *opaque),
                   void *opaque);

/* Loads a disk's head map (head_root's pages, without pending rows). */
int meta_map_load(struct meta *m, const struct meta_disk *d, struct chunk_map **out);
/* Stores the map's new pages and sets the disk's head_root and flush_gen to gen, deleting the
 * disk's pending rows with gen <= that gen.  Call inside meta_begin/meta_commit (without one,
 * it runs in a transaction of its own).  Only pages changed since the map's last encode are
 * stored, so if the caller's transaction does not commit after this returned 0, the caller must
 * call chunk_map_forget_pages(map) (on failure here, this function does it itself). */
int meta_head_commit(struct meta *m, int64_t disk_id, struct chunk_map *map, uint64_t gen,
                     struct chunk_hash *root_out);

/* Bitmap of 4 KiB blocks, enough for the largest chunk (4 MiB). */
#define META_PENDING_WRITTEN_MAX 128

/* A chunk flushed locally, waiting for its upload.  The file may hold only some of the chunk's
 * 4 KiB blocks: then written is their bitmap (bit i is byte i / 8, bit i % 8), and the other
 * blocks are the chunk base, or zeros when base is NULL.  written NULL: the file is the
 * whole chunk. */
struct meta_pending {
    uint64_t idx;
    uint64_t gen;
    const char *file; /* relative to the cache directory; "" for a zero chunk */
    const struct chunk_hash *base;
    const uint8_t *written;
    size_t written_len;
};
/* Upserts rows (one per idx, replacing an older row for the same idx). */
int meta_pending_put(struct meta *m, int64_t disk_id, const struct meta_pending *rows, size_t n);
int meta_pending_list(struct meta *m, int64_t disk_id,
                      int (*fn)(const struct meta_pending *p, void *opaque), void *opaque);

/* ---- the commit of an upload round, in pieces the data path can call without holding its
 * locks across SQLite (encode pages under the lock, then store them). ---- */

struct meta_page {
    struct chunk_hash hash;
    void *data;
    size_t len;
};
/* Stores pages (INSERT OR IGNORE: pages are content-addressed).  Inside meta_begin/commit. */
int meta_pages_put(struct meta *m, const struct meta_page *pages, size_t n);
/* Sets a disk's head_root and flush_gen, and deletes its pending rows with gen <= gen.  Inside
 * meta_begin/commit. */
int meta_head_set(struct meta *m, int64_t disk_id, const struct chunk_hash *root, uint64_t gen);
/* meta_pending_put, skipping rows whose gen is not above the disk's flush_gen (a round already
 * committed them).  Inside meta_begin/commit. */
int meta_pending_put_after_head(struct meta *m, int64_t disk_id, const struct meta_pending *rows,
                                size_t n);

/* ---- checkpoints: named versions of a disk ---- */

#define META_COMMENT_MAX 1024

struct meta_checkpoint {
    char name[META_DISK_NAME_MAX + 1];
    struct chunk_hash root;
    time_t created;
    char comment[META_COMMENT_MAX + 1];
};

/* Names obey meta_disk_name_valid.  -EEXIST if the disk has one of that name. */
int meta_checkpoint_create(struct meta *m, int64_t disk_id, const char *name,
                           const struct chunk_hash *root, const char *comment);
int meta_checkpoint_get(struct meta *m, int64_t disk_id, const char *name,
                        struct meta_checkpoint *out); /* -ENOENT */
/* Oldest first. */
int meta_checkpoint_list(struct meta *m, int64_t disk_id,
                         int (*fn)(const struct meta_checkpoint *c, void *opaque), void *opaque);
int meta_checkpoint_delete(struct meta *m, int64_t disk_id, const char *name); /* -ENOENT */
/* Deletes every pending row of a disk (restore discards unuploaded data). */
int meta_pending_clear(struct meta *m, int64_t disk_id);

/* The identity of a disk's local write log (nbdkit-plugin/write_log.h): 16 random bytes, made
 * on first use and deleted with the disk (its row cascades).  A log on disk whose segments carry
 * another id belongs to a deleted disk whose id was reused, and must never be replayed. */
#define META_WRITE_LOG_ID_LEN 16
int meta_write_log_id(struct meta *m, int64_t disk_id, uint8_t out[META_WRITE_LOG_ID_LEN]);
/* Whether the disk's write log may hold flushes its head does not (set by the server before it
 * acknowledges such a flush, cleared by a commit that leaves none): 1, 0, or -errno.  Offline
 * tools must not take the head for the disk's state while it is set. */
int meta_write_log_set_unuploaded(struct meta *m, int64_t disk_id, bool unuploaded);
int meta_write_log_unuploaded(struct meta *m, int64_t disk_id);
/* Forgets the disk's log id and its shipped rows, which voids every record of its log (an
 * offline restore: the log holds writes made after the version restored).  Inside a transaction
 * with the head change. */
int meta_write_log_forget(struct meta *m, int64_t disk_id);

/* durability=remote ships the write log through the metadata: each shipping flush stores the
 * log's bytes since the last one (whole records, ending with its FLUSH) as one row, committed
 * and replicated before the flush returns, so the replica holds every acknowledged flush the
 * head lacks.  A commit of head gen G drops the rows whose flushes are all at or before G (in
 * its transaction).  Rows are read back in order, to rebuild the log where it is missing
 * (nbdkit-plugin/disk.c, disk_log_recover).  Deleted with the disk, and by
 * meta_write_log_forget. */
int meta_write_log_ship(struct meta *m, int64_t disk_id, uint64_t max_gen, const void *bytes,
                        size_t len);
int meta_write_log_shipped_drop(struct meta *m, int64_t disk_id, uint64_t committed_gen);
/* 1 if the disk has shipped rows (flushes its head lacks: offline tools must not take the head
 * for its state), 0 if not, or -errno. */
int meta_write_log_shipped_any(struct meta *m, int64_t disk_id);
/* Calls fn for each row of the disk, oldest first; fn's negative return stops and is returned.
 * 0 if there are none. */
int meta_write_log_shipped_each(struct meta *m, int64_t disk_id,
                                int (*fn)(const void *bytes, size_t len, uint64_t max_gen,
                                          void *opaque),
                                void *opaque);

/* ---- read snapshots and raw pages (for walks over every version: meta_refs.h) ---- */

/* Starts a read transaction: until meta_snapshot_end, every read on this connection sees the
 * database as it was at this call, whatever other connections commit meanwhile (WAL).  Writers
 * are not blocked.  -EINVAL if a transaction is open on the connection. */
int meta_snapshot_begin(struct meta *m);
void meta_snapshot_end(struct meta *m);
/* Reads the map page named hash into a malloc'd buffer, unverified.  -ENOENT if absent. */
int meta_page_get(struct meta *m, const struct chunk_hash *hash, void **page, size_t *len);

/* ---- for meta/replica.c only: the connection's SQLite handle and its directory.  Whoever uses
 * the handle holds the owner's lock, as for every other call. ---- */
struct sqlite3;
struct sqlite3 *meta_sqlite(struct meta *m);
const char *meta_dir(const struct meta *m);

#endif
