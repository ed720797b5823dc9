/* write_log.h: a disk's local write log (durability=local; durability=remote ships it).
 *
 * Every write is appended to the log as records of whole 4 KiB blocks of one chunk (the blocks
 * exactly as the chunk file holds them after the write, edges merged), besides going into the
 * chunk's sparse file.  A flush appends a FLUSH record and makes the log durable with one
 * fdatasync, instead of syncing one file per dirty chunk and committing SQLite.  The chunk files
 * themselves are never synced: after a crash they are orphans, and the state is rebuilt from
 * the committed head plus the log.  An upload round commits a flush to the store later, and the
 * log's segments that hold only records up to that flush are then deleted.
 *
 * Files: CACHE/log/<disk id>/<seq, 16 hex digits>, the segments, oldest first.  A segment is
 * closed (a new one begun) at a flush once it has grown past the segment size.
 *
 * Record: a 64-byte header (little-endian: magic, kind, first block, block count, gen, chunk
 * index, the log's id, and the first 16 bytes of the SHA-256 of the header, check zeroed,
 * followed by the payload), then the payload: block count × 4 KiB for DATA, nothing otherwise.
 *
 * Invariants (the recovery argument, write_log.c):
 *   L1 Records are appended in the order their effects reach the chunk files: a chunk's writers
 *      append under its stripe, and a FLUSH record is appended with every writer excluded (the
 *      disk's barrier), after every write acknowledged before the flush.
 *   L2 A flush returns only after an fdatasync that covers its FLUSH record, so every record
 *      before an acknowledged flush is durable.  Segment files only grow (except at recovery,
 *      which truncates and syncs before anything is appended), so bytes never written read as
 *      zeros and fail the check: the scan stops at the first bad record, never after it.
 *   L3 Recovery = the committed head, then every record from the start of the oldest segment
 *      (or after an honoured RESET) up to the last FLUSH before the scan stopped.  The oldest
 *      segment starts at or before the committed flush's FLUSH record (segments are deleted
 *      oldest first, each deletion synced, and only once every record in them is at or before
 *      a committed flush), and replaying writes already in the head is a no-op, so the result
 *      is exactly the state at that last FLUSH: some flush's state, and at least the last
 *      acknowledged one.
 *   L4 Records after the last FLUSH (writes never flushed) are cut off at recovery, durably,
 *      before anything new is appended: they can never resurface behind a later FLUSH.
 *   L5 A restore (RESET, gen R) voids everything before it.  It is written as the first record
 *      of a new segment and synced before the restore's commit (head gen R); the older
 *      segments are deleted after that commit.  A RESET is honoured iff the head's gen is at
 *      least R (the restore committed); otherwise it and everything after it are void.
 *   L6 Records carry the log's id (meta_write_log_id): a log left by a deleted disk whose id
 *      was reused fails the check and is never replayed. */
#ifndef WISP_WRITE_LOG_H
#define WISP_WRITE_LOG_H

#include "meta.h"

#include <stdbool.h>
#include <stdint.h>

#define WRITE_LOG_BLOCK       4096u
#define WRITE_LOG_HEADER_SIZE 64u

enum write_log_kind {
    WRITE_LOG_DATA = 1,       /* blocks [first, first + n) of chunk idx hold the payload */
    WRITE_LOG_HOLE = 2,       /* blocks [first, first + n) of chunk idx are zeros */
    WRITE_LOG_ZERO_CHUNK = 3, /* chunk idx is zeros (trim, zero, or a write of zeros) */
    WRITE_LOG_FLUSH = 4,      /* flush gen: every record before it is part of its state */
    WRITE_LOG_RESET = 5,      /* a restore to a version committed with gen: see L5 */
};

struct write_log_record {
    enum write_log_kind kind;
    uint64_t gen; /* the flush this record belongs to (writes: the next flush's gen) */
    uint64_t idx;
    uint32_t first_block, n_blocks;
    const void *data; /* DATA: n_blocks × 4 KiB */
};

struct write_log;

/* Called for each record to replay, in log order.  Returns 0 or a negative errno (which stops
 * the recovery and fails the open). */
typedef int (*write_log_apply_fn)(const struct write_log_record *r, void *opaque);

/* Opens the log in dir (created if needed) with the disk's log id, and recovers: calls apply for
 * every record of the state of the last flush in the log on top of a head committed with
 * head_gen (L3, L5) that the head does not hold already (gen above head_gen), cuts off the rest
 * (L4), and begins a new segment.  *last_gen receives the gen of the last FLUSH or RESET replayed
 * (0 if none).  segment_bytes: when to begin a new segment. */
int write_log_open(const char *dir, const uint8_t id[META_WRITE_LOG_ID_LEN], uint64_t head_gen,
                   uint64_t segment_bytes, write_log_apply_fn apply, void *opaque,
                   uint64_t *last_gen, struct write_log **out);
void write_log_close(struct write_log *l);

/* Appends a DATA, HOLE or ZERO_CHUNK record (L1: the caller holds the chunk's stripe).  Not
 * durable until a later write_log_flush.  After a failed append every later flush fails: the
 * log has a gap that recovery would stop at. */
int write_log_append(struct write_log *l, const struct write_log_record *r);

/* Appends FLUSH gen (the caller excludes every writer, L1) and, if the segment is full, begins
 * a new one.  *pos receives the position to pass to write_log_sync. */
int write_log_mark(struct write_log *l, uint64_t gen, uint64_t *pos);
/* Makes the log durable up to pos (L2).  Concurrent callers share fdatasyncs. */
int write_log_sync(struct write_log *l, uint64_t pos);

/* Deletes the segments (oldest first, never the current one) whose every record belongs to a
 * flush at or before committed_gen. */
int write_log_retire(struct write_log *l, uint64_t committed_gen);

/* Restore (L5), with every writer excluded: begins a new segment holding RESET gen, durably
 * (failing, it removes that segment again).  Then, after the restore's commit,
 * write_log_reset_done deletes the older segments; if the commit failed, write_log_reset_undo
 * removes the new one, and positions (write_log_position) go back to before it. */
int write_log_reset(struct write_log *l, uint64_t gen);
int write_log_reset_done(struct write_log *l);
int write_log_reset_undo(struct write_log *l);

/* Tests only: kills the process with SIGKILL the Nth time it reaches point ("append": a record
 * written, not synced; "sync": a flush's fdatasync done, before it returns; "fold": an upload
 * round's chunks stored, before its commit), when WISP_TEST_LOG_KILL=POINT:N is set. */
void write_log_test_kill(const char *point);

/* Whether dir holds a segment with bytes in it: a log that may have flushes to replay. */
bool write_log_present(const char *dir);

/* durability=remote ships the log through the metadata (meta_write_log_ship).  Positions
 * count the bytes appended since the log was opened (write_log_mark gives a FLUSH's);
 * write_log_read copies [from, to), which must be appended and durable, and not yet in a
 * retired segment (-ENOENT). */
int write_log_read(struct write_log *l, uint64_t from, uint64_t to, void *buf);
uint64_t write_log_position(struct write_log *l);
/* Replaces whatever log dir holds by the bytes the caller writes to *fd_out (at offsets from
 * 0), made durable and installed as the log's only segment by write_log_install_commit (which
 * closes fd).  For a log rebuilt from shipped rows before write_log_open. */
int write_log_install_begin(const char *dir, int *fd_out);
int write_log_install_commit(const char *dir, int fd);

/* Bytes in the log's segments now. */
uint64_t write_log_bytes(struct write_log *l);

/* Encodes a record's header (for tests and the fuzzer: write_log.c's own format). */
void write_log_encode_header(const struct write_log_record *r,
                             const uint8_t id[META_WRITE_LOG_ID_LEN],
                             uint8_t out[WRITE_LOG_HEADER_SIZE]);
/* Decodes and checks a header; for DATA the payload is checked too, given its bytes.  Returns
 * 0, or -EBADMSG for anything that is not a whole valid record of this log. */
int write_log_decode(const uint8_t hdr[WRITE_LOG_HEADER_SIZE], const void *payload,
                     size_t payload_len, const uint8_t id[META_WRITE_LOG_ID_LEN],
                     struct write_log_record *out);
/* The payload length a valid header announces, or -EBADMSG. */
int64_t write_log_payload_len(const uint8_t hdr[WRITE_LOG_HEADER_SIZE]);

#endif
