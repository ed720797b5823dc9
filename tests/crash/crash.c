/* crash.c: crash consistency of the Wisp storage server under kill -9.
 *
 *   crash local|remote file|s3 [ROUNDS]
 *
 * One disk (1 GiB, 64 KiB chunks) is served by nbdkit with the Wisp plugin.  Each round:
 *
 *   1. start nbdkit (durability=MODE; for local a random upload-delay of 0, 0.1, 0.3 or 1 s, so
 *      that kills also land inside upload rounds and their metadata commits);
 *   2. a writer process opens 2 to 4 NBD connections (libnbd) and runs, one thread per
 *      connection, random writes of 4 KiB to 2 MiB at random 4 KiB-aligned offsets over the
 *      first 256 MiB, some of them write-zeroes and some FUA, with a flush every 2 to 6
 *      requests per thread;
 *   3. 10 to 500 ms after the writer started, nbdkit gets SIGKILL;
 *   4. durability=remote only: the cache directory is deleted (see below);
 *   5. nbdkit is started again on the same directories and every 4 KiB block of the region is
 *      read back and checked against the model.
 *
 * The model.  Every request has an id, assigned in issue order, and every block of a write
 * holds a pattern derived from (id, block number), so a block read back names the write it
 * came from and any damage or misplacement shows.  Requests whose ranges overlap are never in
 * flight at the same time (a range lock in the writer), so for every block the ids of the
 * requests that covered it increase in both issue and completion order.  The writer keeps,
 * per block, the id of the last request completed; before each flush it snapshots that map;
 * when the flush succeeds it merges the snapshot into the durable model (per block, the larger
 * id) and writes the model to a file with fsync and an atomic rename.  A FUA write that
 * succeeds does the same for its own blocks.  Every request is also appended to a log before
 * it is issued.  A request the server answers with an error on a live connection (rather than
 * the connection dying in the kill) fails the test.
 *
 * The check, for each block b with durable id D[b]: the block must hold D[b]'s content (zeros
 * for a write-zeroes or a block never written), or the content of a request of this round with
 * an id above D[b] that covered b (a newer write that was in flight or not yet flushed).  It must
 * never hold garbage, an older version than D[b], or a write of an earlier round that was lost
 * in that round's crash (a lost write must stay lost).  What was read becomes the next round's
 * starting model.
 *
 * durability=local: the restart uses the same cache and metadata directories: data flushed but
 * not yet uploaded is recovered from the pending journal.
 *
 * durability=remote: after the kill the cache directory is deleted, so every block must come
 * from the object store through the committed head.  The metadata directory is kept: metadata
 * replication to the store does not exist yet (a later issue), and with an empty metadata
 * directory the disk cannot be found.  What this proves now: every acknowledged flush's data
 * is in the store and committed in the metadata.  When replication lands, this test should
 * delete the metadata directory too.
 *
 * After the last round (durability=local): write, flush, wait upload-delay + 2 s; the disk's
 * pending bytes must be 0; stop the server, delete the cache directory (not the metadata: data
 * flushed but not yet uploaded lives only in the cache's dirty/ files, so this works only if
 * everything was uploaded), start again and check the whole disk exactly, zeros past the
 * region included.  durability=remote: the whole disk is checked exactly after a last write,
 * flush and restart with an empty cache.
 *
 * `crash local file ROUNDS log-points`: the kills land at chosen points of the write log
 * (nbdkit-plugin/write_log.h) rather than at random times: the server runs with
 * WISP_TEST_LOG_KILL=POINT:N and kills itself the Nth time it reaches POINT, in turn "append"
 * (a record written, not yet synced: between a log append and its fdatasync), "sync" (a
 * flush's fdatasync done, before the flush returns: between the fdatasync and the fold) and
 * "fold" (an upload round's chunks stored, before its commit: during the fold of the log into
 * the store).  A server that does not reach its point within 5 s is killed as usual.
 *
 * The seed is printed; WISP_TEST_SEED=N repeats a run's choices (not its timing).
 * WISP_TEST_CRASH_ROUNDS overrides the number of rounds. */
#include "fixture.h"

#include <libnbd.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DISK_NAME      "crash"
#define DISK_SIZE      (UINT64_C(1) << 30)
#define BLOCK          4096u
#define REGION_BYTES   (UINT64_C(256) << 20)
#define REGION_BLOCKS  ((uint32_t)(REGION_BYTES / BLOCK))
#define DISK_BLOCKS    ((uint32_t)(DISK_SIZE / BLOCK))
#define MAX_REQ_BLOCKS 512u                         /* 2 MiB */
#define PATTERN_MAGIC  UINT64_C(0x5749535043524153) /* "WISPCRAS" */

enum op_kind {
    OP_WRITE = 1,
    OP_ZERO = 2,
};

/* One request, as logged by the writer before it is issued. */
struct op_record {
    uint32_t id;
    uint32_t kind;
    uint32_t first; /* first block */
    uint32_t count; /* blocks */
};

/* Every request of the test, indexed by id (id 0: "never written", zeros). */
static struct op_record *ops;
static uint32_t ops_len, ops_cap;

static const char *mode, *store_kind;
static bool log_points;     /* kill at write log points (above) */
static unsigned self_kills; /* rounds whose server reached its point */
static char store_url[1200], cache_dir[600], meta_dir[600], model_path[600], log_path[600];

/* ---- block content --------------------------------------------------------------------------- */

static void pattern_fill(void *buf, uint32_t id, uint32_t blk)
{
    uint64_t *w = buf;
    uint64_t s = ((uint64_t)id << 32) ^ blk ^ UINT64_C(0xc2b2ae3d27d4eb4f);

    w[0] = PATTERN_MAGIC;
    w[1] = id;
    w[2] = blk;
    for (unsigned i = 3; i < BLOCK / 8; i++)
        w[i] = fx_rand_next(&s);
}

/* What a block read back holds: 0 for zeros, the id of the write whose pattern it is, or -1 for
 * anything else. */
static int64_t pattern_identify(const void *buf, uint32_t blk)
{
    const uint64_t *w = buf;
    uint64_t expect[BLOCK / 8];
    bool zero = true;

    for (unsigned i = 0; i < BLOCK / 8 && zero; i++)
        zero = w[i] == 0;
    if (zero)
        return 0;
    if (w[0] != PATTERN_MAGIC || w[2] != blk || w[1] == 0 || w[1] > UINT32_MAX)
        return -1;
    pattern_fill(expect, (uint32_t)w[1], blk);
    return memcmp(expect, buf, BLOCK) == 0 ? (int64_t)w[1] : -1;
}

static bool op_is_zero(uint32_t id)
{
    return id == 0 || ops[id].kind == OP_ZERO;
}

static bool op_covers(uint32_t id, uint32_t blk)
{
    return id > 0 && id < ops_len && blk >= ops[id].first && blk < ops[id].first + ops[id].count;
}

/* ---- the writer (a child process) ------------------------------------------------------------ */

struct inflight {
    uint32_t first, count;
    bool used;
};

struct writer {
    const char *sock;
    unsigned nconn;
    unsigned flush_every_max;
    uint64_t seed;
    int log_fd;

    pthread_mutex_t lock; /* protects everything below */
    pthread_cond_t changed;
    struct inflight inflight[8];
    uint32_t next_id;
    uint32_t *completed; /* per block: id of the last request completed */
    bool stop;

    pthread_mutex_t model_lock; /* protects durable and the model file */
    uint32_t *durable;

    /* counters, under lock */
    unsigned writes, zeroes, fuas, flushes_ok, flushes_failed, model_saves;
    /* the first error the server answered while still connected (not the kill), or "" */
    char unexpected[512];
};

/* After a failed request: the kill closes the connection; an error answered on a live
 * connection is the server refusing a request, which must not happen here.  id is the
 * request's, or for a flush the last request issued before it.  Caller holds w->lock. */
static void writer_note_failure_locked(struct writer *w, struct nbd_handle *nbd, const char *what,
                                       uint32_t id)
{
    int err = nbd_get_errno();
    const char *msg = nbd_get_error();

    if (nbd_aio_is_dead(nbd) || nbd_aio_is_closed(nbd))
        return;
    if (!w->unexpected[0])
        snprintf(w->unexpected, sizeof w->unexpected,
                 "%s %u failed on a live connection: %s (errno %d)", what, id, msg ? msg : "?",
                 err);
}

static void writer_save_model_locked(struct writer *w)
{
    char tmp[700];
    size_t len = (size_t)REGION_BLOCKS * sizeof(uint32_t), done = 0;

    snprintf(tmp, sizeof tmp, "%s.tmp", model_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FX_CHECK(fd >= 0, "open %s: %s", tmp, strerror(errno));
    while (done < len) {
        ssize_t n = write(fd, (char *)w->durable + done, len - done);
        FX_CHECK(n > 0, "write %s: %s", tmp, strerror(errno));
        done += (size_t)n;
    }
    FX_CHECK(fsync(fd) == 0, "fsync %s: %s", tmp, strerror(errno));
    close(fd);
    FX_CHECK(rename(tmp, model_path) == 0, "rename %s: %s", tmp, strerror(errno));
    int dfd = open(fx_tmpdir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

struct writer_thread {
    struct writer *w;
    struct nbd_handle *nbd;
    unsigned index;
};

static bool range_overlaps(uint32_t a, uint32_t an, uint32_t b, uint32_t bn)
{
    return a < b + bn && b < a + an;
}

static void *writer_thread_main(void *opaque)
{
    struct writer_thread *t = opaque;
    struct writer *w = t->w;
    uint64_t rng = w->seed ^ ((uint64_t)t->index << 48) ^ 0x1234567;
    void *buf = malloc((size_t)MAX_REQ_BLOCKS * BLOCK);
    uint32_t *snap = malloc((size_t)REGION_BLOCKS * sizeof(uint32_t));
    unsigned until_flush = (unsigned)fx_rand_range(&rng, 2, w->flush_every_max);

    FX_CHECK(buf && snap, "out of memory");
    for (;;) {
        /* Sizes: mostly small, some large, up to 2 MiB. */
        uint32_t count = fx_rand_next(&rng) % 4 == 0
                             ? (uint32_t)fx_rand_range(&rng, 64, MAX_REQ_BLOCKS)
                             : (uint32_t)fx_rand_range(&rng, 1, 32);
        uint32_t first = (uint32_t)fx_rand_range(&rng, 0, REGION_BLOCKS - count);
        unsigned kind_draw = (unsigned)(fx_rand_next(&rng) % 100);
        uint32_t kind = kind_draw < 10 ? OP_ZERO : OP_WRITE;
        bool fua = kind == OP_WRITE && kind_draw >= 95;
        int slot = -1, r;
        uint32_t id;

        /* Wait until no request in flight overlaps, then take an id and a slot. */
        pthread_mutex_lock(&w->lock);
        for (;;) {
            bool busy = false;
            if (w->stop)
                break;
            for (int i = 0; i < 8; i++)
                if (w->inflight[i].used &&
                    range_overlaps(first, count, w->inflight[i].first, w->inflight[i].count))
                    busy = true;
            if (!busy)
                break;
            pthread_cond_wait(&w->changed, &w->lock);
        }
        if (w->stop) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        for (int i = 0; i < 8 && slot < 0; i++)
            if (!w->inflight[i].used)
                slot = i;
        FX_CHECK(slot >= 0, "no free in-flight slot");
        w->inflight[slot] = (struct inflight){first, count, true};
        id = w->next_id++;
        struct op_record rec = {id, kind, first, count};
        FX_CHECK(write(w->log_fd, &rec, sizeof rec) == sizeof rec, "write log: %s",
                 strerror(errno));
        pthread_mutex_unlock(&w->lock);

        if (kind == OP_WRITE) {
            for (uint32_t i = 0; i < count; i++)
                pattern_fill((char *)buf + (size_t)i * BLOCK, id, first + i);
            r = nbd_pwrite(t->nbd, buf, (size_t)count * BLOCK, (uint64_t)first * BLOCK,
                           fua ? LIBNBD_CMD_FLAG_FUA : 0);
        } else {
            r = nbd_zero(t->nbd, (uint64_t)count * BLOCK, (uint64_t)first * BLOCK, 0);
        }

        pthread_mutex_lock(&w->lock);
        w->inflight[slot].used = false;
        if (r == 0) {
            for (uint32_t i = 0; i < count; i++)
                w->completed[first + i] = id;
            if (kind == OP_ZERO)
                w->zeroes++;
            else
                w->writes++;
            if (fua)
                w->fuas++;
        } else {
            w->stop = true; /* the server is gone */
            writer_note_failure_locked(w, t->nbd, kind == OP_WRITE ? "write" : "write-zeroes", id);
        }
        pthread_cond_broadcast(&w->changed);
        pthread_mutex_unlock(&w->lock);
        if (r < 0)
            break;
        if (fua) {
            /* FUA: this write is durable (the writes before it are not promised). */
            pthread_mutex_lock(&w->model_lock);
            for (uint32_t i = 0; i < count; i++)
                if (w->durable[first + i] < id)
                    w->durable[first + i] = id;
            writer_save_model_locked(w);
            pthread_mutex_unlock(&w->model_lock);
        }

        if (--until_flush == 0) {
            until_flush = (unsigned)fx_rand_range(&rng, 2, w->flush_every_max);
            /* Every request completed before the flush is issued is covered by it (the server
             * advertises multi-conn, so this holds across connections). */
            pthread_mutex_lock(&w->lock);
            memcpy(snap, w->completed, (size_t)REGION_BLOCKS * sizeof(uint32_t));
            pthread_mutex_unlock(&w->lock);
            r = nbd_flush(t->nbd, 0);
            pthread_mutex_lock(&w->lock);
            if (r == 0)
                w->flushes_ok++;
            else {
                writer_note_failure_locked(w, t->nbd, "flush issued after request", w->next_id - 1);
                w->flushes_failed++;
                w->stop = true;
                pthread_cond_broadcast(&w->changed);
            }
            pthread_mutex_unlock(&w->lock);
            if (r < 0)
                break;
            pthread_mutex_lock(&w->model_lock);
            for (uint32_t i = 0; i < REGION_BLOCKS; i++)
                if (w->durable[i] < snap[i])
                    w->durable[i] = snap[i];
            writer_save_model_locked(w);
            pthread_mutex_lock(&w->lock);
            w->model_saves++;
            pthread_mutex_unlock(&w->lock);
            pthread_mutex_unlock(&w->model_lock);
        }
    }
    free(buf);
    free(snap);
    return NULL;
}

static struct nbd_handle *nbd_open_disk(const char *sock)
{
    struct nbd_handle *nbd = nbd_create();

    FX_CHECK(nbd != NULL, "nbd_create: %s", nbd_get_error());
    FX_CHECK(nbd_set_export_name(nbd, DISK_NAME) == 0, "nbd_set_export_name: %s", nbd_get_error());
    FX_CHECK(nbd_connect_unix(nbd, sock) == 0, "nbd_connect_unix %s: %s", sock, nbd_get_error());
    return nbd;
}

/* The writer process: connects, tells the harness (ready_fd), writes until the server dies. */
static void writer_run(const char *sock, unsigned nconn, unsigned flush_every_max, uint64_t seed,
                       uint32_t first_id, const uint32_t *start_model, int ready_fd)
{
    struct writer w = {
        .sock = sock,
        .nconn = nconn,
        .flush_every_max = flush_every_max,
        .seed = seed,
        .next_id = first_id,
    };
    struct writer_thread threads[4];
    pthread_t tids[4];

    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.changed, NULL);
    pthread_mutex_init(&w.model_lock, NULL);
    w.completed = malloc((size_t)REGION_BLOCKS * sizeof(uint32_t));
    w.durable = malloc((size_t)REGION_BLOCKS * sizeof(uint32_t));
    FX_CHECK(w.completed && w.durable, "out of memory");
    memcpy(w.completed, start_model, (size_t)REGION_BLOCKS * sizeof(uint32_t));
    memcpy(w.durable, start_model, (size_t)REGION_BLOCKS * sizeof(uint32_t));
    w.log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    FX_CHECK(w.log_fd >= 0, "open %s: %s", log_path, strerror(errno));

    for (unsigned i = 0; i < nconn; i++)
        threads[i] = (struct writer_thread){&w, nbd_open_disk(sock), i};
    FX_CHECK(write(ready_fd, "r", 1) == 1, "write ready: %s", strerror(errno));
    for (unsigned i = 0; i < nconn; i++)
        FX_CHECK(pthread_create(&tids[i], NULL, writer_thread_main, &threads[i]) == 0,
                 "pthread_create");
    for (unsigned i = 0; i < nconn; i++) {
        pthread_join(tids[i], NULL);
        nbd_close(threads[i].nbd);
    }
    fsync(w.log_fd);
    close(w.log_fd);
    fprintf(stderr,
            "  writer: %u writes (%u FUA), %u write-zeroes, %u flushes acknowledged, "
            "%u failed (the kill), ids %" PRIu32 "..%" PRIu32 "\n",
            w.writes, w.fuas, w.zeroes, w.flushes_ok, w.flushes_failed, first_id, w.next_id - 1);
    FX_CHECK(!w.unexpected[0], "before the kill: %s", w.unexpected);
}

/* ---- the harness ----------------------------------------------------------------------------- */

static void ops_append(const struct op_record *r)
{
    if (ops_len == ops_cap) {
        ops_cap = ops_cap ? ops_cap * 2 : 4096;
        ops = realloc(ops, ops_cap * sizeof *ops);
        FX_CHECK(ops != NULL, "out of memory");
    }
    ops[ops_len++] = *r;
}

static void read_file_all(const char *path, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t done = 0;

    FX_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    while (done < len) {
        ssize_t n = read(fd, (char *)buf + done, len - done);
        FX_CHECK(n > 0, "read %s: %s (%zu of %zu bytes)", path, n < 0 ? strerror(errno) : "EOF",
                 done, len);
        done += (size_t)n;
    }
    close(fd);
}

static void write_file_all(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t done = 0;

    FX_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        FX_CHECK(n > 0, "write %s: %s", path, strerror(errno));
        done += (size_t)n;
    }
    FX_CHECK(fsync(fd) == 0, "fsync %s", path);
    close(fd);
}

/* Reads the round's request log; returns the number of requests.  Ids must follow on. */
static uint32_t load_round_log(uint32_t first_id)
{
    int fd = open(log_path, O_RDONLY | O_CLOEXEC);
    struct op_record rec;
    uint32_t n = 0;

    FX_CHECK(fd >= 0, "open %s: %s", log_path, strerror(errno));
    /* Records are appended in id order (under the writer's lock). */
    while (read(fd, &rec, sizeof rec) == sizeof rec) {
        FX_CHECK(rec.id == first_id + n, "log record %u has id %u", first_id + n, rec.id);
        FX_CHECK(rec.count >= 1 && rec.first + rec.count <= REGION_BLOCKS, "bad record %u", rec.id);
        ops_append(&rec);
        n++;
    }
    close(fd);
    return n;
}

struct check_stats {
    uint64_t blocks, zero, durable, newer;
};

/* Reads the region and checks every block against the durable model and the round's requests
 * (ids >= round_first).  Fills observed[] with what each block holds now. */
static void check_region(const struct fx_server *s, const uint32_t *model, uint32_t round_first,
                         uint32_t *observed, struct check_stats *st, const char *what)
{
    const size_t step = 2u << 20;
    struct nbd_handle *nbd = nbd_open_disk(s->sock);
    char *buf = malloc(step);
    unsigned failures = 0;

    FX_CHECK(buf != NULL, "out of memory");
    memset(st, 0, sizeof *st);
    FX_CHECK(nbd_get_size(nbd) == (int64_t)DISK_SIZE, "disk size %" PRId64, nbd_get_size(nbd));
    for (uint64_t off = 0; off < REGION_BYTES; off += step) {
        if (nbd_pread(nbd, buf, step, off, 0) < 0) {
            fx_server_log_tail(s, 30);
            FX_CHECK(false, "%s: read at %" PRIu64 ": %s", what, off, nbd_get_error());
        }
        for (uint32_t i = 0; i < step / BLOCK; i++) {
            uint32_t b = (uint32_t)(off / BLOCK) + i, d = model[b];
            int64_t got = pattern_identify(buf + (size_t)i * BLOCK, b);
            const char *why = NULL;

            st->blocks++;
            if (got < 0) {
                why = "garbage (neither zeros nor any write's pattern for this block)";
            } else if (got == 0) {
                /* Zeros: the durable state, or a newer write-zeroes of this round. */
                uint32_t src = op_is_zero(d) ? d : UINT32_MAX;
                for (uint32_t id = ops_len; src == UINT32_MAX && id-- > round_first && id > d;)
                    if (ops[id].kind == OP_ZERO && op_covers(id, b))
                        src = id;
                if (src == UINT32_MAX)
                    why = "zeros, but neither the durable model nor any newer request of this "
                          "round zeroed it";
                else {
                    observed[b] = src;
                    st->zero++;
                }
            } else if ((uint32_t)got == d) {
                observed[b] = d;
                st->durable++;
            } else if ((uint32_t)got < d) {
                why = "an OLDER write than the last acknowledged flush (lost flushed data)";
            } else if ((uint32_t)got < round_first) {
                why = "a write of an earlier round that was lost in that round's crash came back";
            } else if (!op_covers((uint32_t)got, b) || ops[got].kind != OP_WRITE) {
                why = "a write that did not cover this block";
            } else {
                observed[b] = (uint32_t)got;
                st->newer++;
            }
            if (why) {
                if (failures < 12)
                    fx_log("  BAD block %u (offset %" PRIu64 ", chunk %" PRIu64
                           "): holds %s%" PRId64 ", durable model says %u (%s): %s",
                           b, (uint64_t)b * BLOCK, (uint64_t)b * BLOCK / (64 * 1024),
                           got < 0 ? "garbage " : "id ", got, d, op_is_zero(d) ? "zeros" : "data",
                           why);
                failures++;
            }
        }
    }
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    free(buf);
    if (failures > 0) {
        fx_server_log_tail(s, 40);
        FX_CHECK(failures == 0, "%s: %u of %u blocks wrong", what, failures, REGION_BLOCKS);
    }
}

/* Checks exactly: every block of the region holds expect[]'s content and the rest of the disk
 * reads as zeros. */
static void check_exact(const struct fx_server *s, const uint32_t *expect, const char *what)
{
    const size_t step = 4u << 20;
    struct nbd_handle *nbd = nbd_open_disk(s->sock);
    char *buf = malloc(step);
    unsigned failures = 0;

    FX_CHECK(buf != NULL, "out of memory");
    for (uint64_t off = 0; off < DISK_SIZE; off += step) {
        if (nbd_pread(nbd, buf, step, off, 0) < 0) {
            fx_server_log_tail(s, 30);
            FX_CHECK(false, "%s: read at %" PRIu64 ": %s", what, off, nbd_get_error());
        }
        for (uint32_t i = 0; i < step / BLOCK; i++) {
            uint32_t b = (uint32_t)(off / BLOCK) + i;
            uint32_t want = b < REGION_BLOCKS ? expect[b] : 0;
            int64_t got = pattern_identify(buf + (size_t)i * BLOCK, b);
            bool ok = op_is_zero(want) ? got == 0 : got == (int64_t)want;
            if (!ok) {
                if (failures < 12)
                    fx_log("  BAD block %u (offset %" PRIu64 "): holds %s%" PRId64
                           ", expected %s %u",
                           b, (uint64_t)b * BLOCK, got < 0 ? "garbage " : "id ", got,
                           op_is_zero(want) ? "zeros from" : "write", want);
                failures++;
            }
        }
    }
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    free(buf);
    if (failures > 0) {
        fx_server_log_tail(s, 40);
        FX_CHECK(failures == 0, "%s: %u blocks wrong", what, failures);
    }
}

static void server_start(struct fx_server *s, const char *upload_delay)
{
    char delay_arg[64], durability_arg[64];
    const char *params[] = {durability_arg, delay_arg, NULL};

    snprintf(durability_arg, sizeof durability_arg, "durability=%s", mode);
    snprintf(delay_arg, sizeof delay_arg, "upload-delay=%s", upload_delay);
    fx_server_start(s, "nbdkit", store_url, cache_dir, meta_dir, params);
}

/* Writes and flushes a few requests from the harness itself (no crash), updating expect[]. */
static void final_writes(const struct fx_server *s, uint64_t *rng, uint32_t *next_id,
                         uint32_t *expect)
{
    struct nbd_handle *nbd = nbd_open_disk(s->sock);
    char *buf = malloc((size_t)MAX_REQ_BLOCKS * BLOCK);

    FX_CHECK(buf != NULL, "out of memory");
    for (int k = 0; k < 40; k++) {
        uint32_t count = (uint32_t)fx_rand_range(rng, 1, k % 5 == 0 ? MAX_REQ_BLOCKS : 32);
        uint32_t first = (uint32_t)fx_rand_range(rng, 0, REGION_BLOCKS - count);
        struct op_record rec = {*next_id, k % 7 == 3 ? OP_ZERO : OP_WRITE, first, count};
        int r;

        ops_append(&rec);
        (*next_id)++;
        if (rec.kind == OP_WRITE) {
            for (uint32_t i = 0; i < count; i++)
                pattern_fill(buf + (size_t)i * BLOCK, rec.id, first + i);
            r = nbd_pwrite(nbd, buf, (size_t)count * BLOCK, (uint64_t)first * BLOCK, 0);
        } else {
            r = nbd_zero(nbd, (uint64_t)count * BLOCK, (uint64_t)first * BLOCK, 0);
        }
        FX_CHECK(r == 0, "final write %u: %s", rec.id, nbd_get_error());
        for (uint32_t i = 0; i < count; i++)
            expect[first + i] = rec.id;
    }
    FX_CHECK(nbd_flush(nbd, 0) == 0, "final flush: %s", nbd_get_error());
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    free(buf);
}

int main(int argc, char **argv)
{
    static const char *const delays[] = {"0", "0.1", "0.3", "1"};
    unsigned rounds;
    uint64_t seed, rng;
    char prefix[128];
    double t_start = fx_now();

    if (argc < 3 || (strcmp(argv[1], "local") && strcmp(argv[1], "remote")) ||
        (strcmp(argv[2], "file") && strcmp(argv[2], "s3"))) {
        fprintf(stderr, "usage: crash local|remote file|s3 [ROUNDS]\n");
        return 2;
    }
    mode = argv[1];
    store_kind = argv[2];
    rounds = argc > 3 ? (unsigned)atoi(argv[3]) : 20;
    log_points = argc > 4 && strcmp(argv[4], "log-points") == 0;
    if (log_points && strcmp(mode, "local") != 0) {
        fprintf(stderr, "log-points needs durability=local\n");
        return 2;
    }
    if (getenv("WISP_TEST_CRASH_ROUNDS"))
        rounds = (unsigned)atoi(getenv("WISP_TEST_CRASH_ROUNDS"));
    fx_need_env("WISP_TEST_PLUGIN");
    fx_need_env("WISP_TEST_CLI");
    if (strcmp(store_kind, "s3") == 0 && !fx_s3_available())
        fx_skip("no radosgw: WISP_TEST_S3_ENDPOINT etc. are not set (tests/s3/rgw-fixture)");

    const char *dir = fx_setup("crash");
    seed = fx_seed();
    fx_log("crash %s %s: %u rounds, seed %" PRIu64 " (WISP_TEST_SEED=%" PRIu64
           " repeats the choices)",
           mode, store_kind, rounds, seed, seed);

    snprintf(cache_dir, sizeof cache_dir, "%s/cache", dir);
    snprintf(meta_dir, sizeof meta_dir, "%s/meta", dir);
    snprintf(model_path, sizeof model_path, "%s/durable.model", dir);
    snprintf(log_path, sizeof log_path, "%s/requests.log", dir);
    if (strcmp(store_kind, "file") == 0) {
        char store_dir[600];
        snprintf(store_dir, sizeof store_dir, "%s/store", dir);
        fx_mkdir(store_dir);
        snprintf(store_url, sizeof store_url, "file://%s", store_dir);
    } else {
        snprintf(prefix, sizeof prefix, "test-crash-%s-%d-%" PRIx64, mode, (int)getpid(),
                 seed & 0xffffff);
        fx_s3_url(store_url, sizeof store_url, prefix, NULL);
        fx_store_cleanup_register(store_url);
    }
    fx_mkdir(cache_dir);
    fx_mkdir(meta_dir);
    fx_disk_create(meta_dir, DISK_NAME, "1G", "64K");

    uint32_t *model = calloc(REGION_BLOCKS, sizeof(uint32_t));
    uint32_t *observed = calloc(REGION_BLOCKS, sizeof(uint32_t));
    FX_CHECK(model && observed, "out of memory");
    struct op_record none = {0, OP_ZERO, 0, 0};
    ops_append(&none); /* id 0 */
    uint32_t next_id = 1;
    /* observed[] is the state at the start of a round: all zeros at first. */

    for (unsigned round = 1; round <= rounds; round++) {
        struct fx_server s;
        int ready[2];
        char c;
        rng = seed ^ ((uint64_t)round * UINT64_C(0x9e3779b97f4a7c15));
        (void)fx_rand_next(&rng);
        unsigned nconn = (unsigned)fx_rand_range(&rng, 2, 4);
        unsigned flush_every = (unsigned)fx_rand_range(&rng, 2, 6);
        const char *delay = strcmp(mode, "local") == 0 ? delays[fx_rand_next(&rng) % 4] : "1";
        unsigned kill_ms = (unsigned)fx_rand_range(&rng, 10, 500);
        uint64_t writer_seed = fx_rand_next(&rng);
        double t_round = fx_now();
        static const char *const points[] = {"append", "sync", "fold"};
        static const unsigned point_max[] = {400, 25, 3};
        const char *point = points[round % 3];
        char kill_spec[64] = "";

        if (log_points) {
            if (strcmp(point, "fold") == 0)
                delay = "0"; /* rounds follow the flushes at once */
            snprintf(kill_spec, sizeof kill_spec, "%s:%u", point,
                     (unsigned)fx_rand_range(&rng, 1, point_max[round % 3]));
            setenv("WISP_TEST_LOG_KILL", kill_spec, 1);
            fx_log("round %u: %u connections, a flush every 2..%u requests per connection, "
                   "upload-delay=%s, the server kills itself at %s",
                   round, nconn, flush_every, delay, kill_spec);
        } else {
            fx_log("round %u: %u connections, a flush every 2..%u requests per connection, "
                   "upload-delay=%s, kill -9 after %u ms",
                   round, nconn, flush_every, delay, kill_ms);
        }
        server_start(&s, delay);
        unsetenv("WISP_TEST_LOG_KILL"); /* the restart below runs without it */
        /* The durable model at the start of the round: what the last check read back. */
        write_file_all(model_path, observed, (size_t)REGION_BLOCKS * sizeof(uint32_t));

        FX_CHECK(pipe(ready) == 0, "pipe: %s", strerror(errno));
        fflush(NULL);
        pid_t writer = fork();
        FX_CHECK(writer >= 0, "fork: %s", strerror(errno));
        if (writer == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(ready[0]);
            writer_run(s.sock, nconn, flush_every, writer_seed, next_id, observed, ready[1]);
            fflush(NULL);
            _exit(0);
        }
        close(ready[1]);
        struct pollfd pfd = {ready[0], POLLIN, 0};
        FX_CHECK(poll(&pfd, 1, 30000) == 1 && read(ready[0], &c, 1) == 1,
                 "the writer did not connect");
        close(ready[0]);
        if (log_points) {
            int st = 0;
            double until = fx_now() + 5;
            bool died = false;
            while (!(died = fx_exited(s.pid, &st)) && fx_now() < until)
                fx_sleep(0.005);
            if (died) {
                FX_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                         "the server ended with status 0x%x, not by its own SIGKILL", st);
                s.pid = 0;
                self_kills++;
                fx_log("  the server killed itself at %s", kill_spec);
            } else {
                fx_log("  %s not reached in 5 s: killed from outside", kill_spec);
                fx_server_kill(&s);
            }
        } else {
            fx_sleep(kill_ms / 1000.0);
            fx_server_kill(&s);
        }

        int wst;
        double deadline = fx_now() + 30;
        while (waitpid(writer, &wst, WNOHANG) != writer) {
            FX_CHECK(fx_now() < deadline, "the writer did not stop after the kill");
            fx_sleep(0.01);
        }
        FX_CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "the writer failed (status 0x%x)", wst);

        uint32_t round_first = next_id;
        uint32_t n = load_round_log(round_first);
        next_id += n;
        read_file_all(model_path, model, (size_t)REGION_BLOCKS * sizeof(uint32_t));
        for (uint32_t b = 0; b < REGION_BLOCKS; b++)
            FX_CHECK(model[b] == observed[b] || (model[b] >= round_first && model[b] < next_id),
                     "the model file is inconsistent at block %u", b);

        if (strcmp(mode, "remote") == 0) {
            /* Everything acknowledged must be in the store: start with no cache at all. */
            fx_rm_rf(cache_dir);
            fx_mkdir(cache_dir);
        }
        server_start(&s, delay);
        struct check_stats cs;
        char what[64];
        snprintf(what, sizeof what, "round %u", round);
        check_region(&s, model, round_first, observed, &cs, what);
        fx_server_stop(&s);
        fx_log("  round %u ok in %.1f s: %u requests; of %" PRIu64 " blocks %" PRIu64
               " hold the durable write, %" PRIu64 " a newer one, %" PRIu64 " zeros",
               round, fx_now() - t_round, n, cs.blocks, cs.durable, cs.newer, cs.zero);
    }

    /* Most points are reached (the rest had fewer flushes or records than N): the rounds did
     * test what they were meant to. */
    if (log_points)
        FX_CHECK(self_kills * 2 >= rounds, "only %u of %u rounds reached their kill point",
                 self_kills, rounds);

    /* The last check: everything flushed is in the store within upload-delay (local), or at
     * once (remote); with an empty cache the disk reads back exactly. */
    {
        struct fx_server s;
        const double upload_delay = 1.0;
        uint32_t *expect = malloc((size_t)REGION_BLOCKS * sizeof(uint32_t));
        double t0 = fx_now();

        FX_CHECK(expect != NULL, "out of memory");
        memcpy(expect, observed, (size_t)REGION_BLOCKS * sizeof(uint32_t));
        rng = seed ^ UINT64_C(0xfeedface);
        server_start(&s, "1");
        final_writes(&s, &rng, &next_id, expect);
        if (strcmp(mode, "local") == 0) {
            /* The upload follows the flush after upload-delay; how long it then takes depends
             * on the machine's load, so wait for it (generously) and report the time. */
            const double limit = 60, flushed_at = fx_now();
            long long pending, flush_gen, committed;
            double waited;
            for (;;) {
                fx_sleep(0.2);
                pending = fx_disk_stat(&s, DISK_NAME, "stats.pending_bytes");
                flush_gen = fx_disk_stat(&s, DISK_NAME, "stats.flush_gen");
                committed = fx_disk_stat(&s, DISK_NAME, "stats.committed_gen");
                waited = fx_now() - flushed_at;
                if ((pending == 0 && committed == flush_gen) || waited > limit)
                    break;
            }
            fx_log("final: uploaded %.1f s after the flush (upload-delay=%.0f): pending_bytes "
                   "%lld, flush_gen %lld, committed_gen %lld",
                   waited, upload_delay, pending, flush_gen, committed);
            if (pending != 0 || committed != flush_gen)
                fx_server_log_tail(&s, 30);
            FX_CHECK(pending == 0, "data flushed %.0f s ago (upload-delay=1) is not uploaded",
                     waited);
            FX_CHECK(committed == flush_gen, "the head is not the latest flush");
        }
        fx_server_stop(&s);
        fx_rm_rf(cache_dir);
        fx_mkdir(cache_dir);
        server_start(&s, "1");
        check_exact(&s, expect, "final check with an empty cache");
        fx_server_stop(&s);
        fx_log("final: the whole disk reads back exactly from the store with an empty cache "
               "(%.1f s)",
               fx_now() - t0);
        free(expect);
    }

    fx_log("PASS: crash %s %s, %u rounds, %u requests, seed %" PRIu64 ", %.1f s", mode, store_kind,
           rounds, next_id - 1, seed, fx_now() - t_start);
    free(model);
    free(observed);
    free(ops);
    return 0;
}
