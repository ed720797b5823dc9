/* write_log.c: a disk's local write log.  The format and the invariants L1-L6 are in
 * write_log.h. */
#include "write_log.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define WRITE_LOG_MAGIC      0x31474c57u /* "WLG1" */
#define WRITE_LOG_MAX_BLOCKS 1024u       /* a 4 MiB chunk */
#define WRITE_LOG_CHECK_LEN  16u

struct segment {
    uint64_t seq;
    int fd;
    uint64_t size;    /* bytes appended (reserved) */
    uint64_t synced;  /* bytes known durable */
    uint64_t max_gen; /* the largest gen of its records */
    /* Where its first byte is in the positions of this open (write_log_read); a segment
     * recovered at open precedes them all, and has none. */
    bool positioned;
    uint64_t start_pos;
};

struct write_log {
    char dir[4096];
    uint8_t id[META_WRITE_LOG_ID_LEN];
    uint64_t segment_bytes;
    pthread_mutex_t sync_lock; /* serialises syncs, retirement and resets: fds stay open */
    pthread_mutex_t lock;      /* protects everything below; never held across I/O */
    GPtrArray *segs;           /* struct segment *, oldest first; the last is current */
    uint64_t next_seq;
    uint64_t pos;     /* bytes appended since open, all segments: positions for sync */
    uint64_t durable; /* every position up to here is durable */
    int failed;       /* an append failed: 0 or its negative errno; every later flush fails */
};

/* ---- tests: kill -9 at a chosen point (WISP_TEST_LOG_KILL=POINT:N) ------------------------ */

void write_log_test_kill(const char *point)
{
    static unsigned counts[3];
    const char *spec = getenv("WISP_TEST_LOG_KILL");
    size_t len = strlen(point);
    unsigned which = strcmp(point, "append") == 0 ? 0 : strcmp(point, "sync") == 0 ? 1 : 2;

    if (!spec || strncmp(spec, point, len) != 0 || spec[len] != ':')
        return;
    if (__atomic_add_fetch(&counts[which], 1, __ATOMIC_RELAXED) == (unsigned)atoi(spec + len + 1))
        raise(SIGKILL);
}

/* ---- records ------------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Header layout: 0 magic, 4 kind (16 bits) and 16 zero bits, 8 first block, 12 block count,
 * 16 gen, 24 chunk index, 32 log id (16 bytes), 48 check (16 bytes). */
static int write_log_check(const uint8_t hdr[WRITE_LOG_HEADER_SIZE], const void *payload,
                           size_t payload_len, uint8_t out[WRITE_LOG_CHECK_LEN])
{
    uint8_t h[WRITE_LOG_HEADER_SIZE], md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;

    if (!ctx)
        return -ENOMEM;
    memcpy(h, hdr, sizeof h);
    memset(h + 48, 0, WRITE_LOG_CHECK_LEN);
    ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && EVP_DigestUpdate(ctx, h, sizeof h) &&
         (payload_len == 0 || EVP_DigestUpdate(ctx, payload, payload_len)) &&
         EVP_DigestFinal_ex(ctx, md, &md_len);
    EVP_MD_CTX_free(ctx);
    if (!ok || md_len < WRITE_LOG_CHECK_LEN)
        return -EIO;
    memcpy(out, md, WRITE_LOG_CHECK_LEN);
    return 0;
}

void write_log_encode_header(const struct write_log_record *r,
                             const uint8_t id[META_WRITE_LOG_ID_LEN],
                             uint8_t out[WRITE_LOG_HEADER_SIZE])
{
    memset(out, 0, WRITE_LOG_HEADER_SIZE);
    put32(out, WRITE_LOG_MAGIC);
    put32(out + 4, (uint32_t)r->kind);
    put32(out + 8, r->first_block);
    put32(out + 12, r->n_blocks);
    put64(out + 16, r->gen);
    put64(out + 24, r->idx);
    memcpy(out + 32, id, META_WRITE_LOG_ID_LEN);
}

int64_t write_log_payload_len(const uint8_t hdr[WRITE_LOG_HEADER_SIZE])
{
    uint32_t kind = get32(hdr + 4), first = get32(hdr + 8), n = get32(hdr + 12);

    if (get32(hdr) != WRITE_LOG_MAGIC || kind < WRITE_LOG_DATA || kind > WRITE_LOG_RESET)
        return -EBADMSG;
    if (kind == WRITE_LOG_DATA || kind == WRITE_LOG_HOLE) {
        if (n == 0 || n > WRITE_LOG_MAX_BLOCKS || first >= WRITE_LOG_MAX_BLOCKS ||
            first + n > WRITE_LOG_MAX_BLOCKS)
            return -EBADMSG;
        return kind == WRITE_LOG_DATA ? (int64_t)n * WRITE_LOG_BLOCK : 0;
    }
    return first == 0 && n == 0 ? 0 : -EBADMSG;
}

int write_log_decode(const uint8_t hdr[WRITE_LOG_HEADER_SIZE], const void *payload,
                     size_t payload_len, const uint8_t id[META_WRITE_LOG_ID_LEN],
                     struct write_log_record *out)
{
    uint8_t check[WRITE_LOG_CHECK_LEN];
    int64_t want = write_log_payload_len(hdr);

    if (want < 0 || (size_t)want != payload_len || memcmp(hdr + 32, id, META_WRITE_LOG_ID_LEN))
        return -EBADMSG;
    if (write_log_check(hdr, payload, payload_len, check) < 0 ||
        memcmp(check, hdr + 48, sizeof check) != 0)
        return -EBADMSG;
    *out = (struct write_log_record){
        .kind = (enum write_log_kind)get32(hdr + 4),
        .first_block = get32(hdr + 8),
        .n_blocks = get32(hdr + 12),
        .gen = get64(hdr + 16),
        .idx = get64(hdr + 24),
        .data = payload_len ? payload : NULL,
    };
    return 0;
}

/* ---- files --------------------------------------------------------------------------------- */

static int write_log_sync_dir(const struct write_log *l)
{
    int fd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

    if (fd < 0 || fsync(fd) < 0)
        r = -errno;
    if (fd >= 0)
        close(fd);
    if (r < 0)
        log_error("write-log", "fsync %s: %s", l->dir, strerror(-r));
    return r;
}

static void segment_path(const struct write_log *l, uint64_t seq, char *out, size_t size)
{
    snprintf(out, size, "%s/%016llx", l->dir, (unsigned long long)seq);
}

/* Creates segment seq, empty, with its directory entry durable. */
static int segment_create(struct write_log *l, uint64_t seq, struct segment **out)
{
    char path[4200];
    struct segment *s;
    int fd;

    segment_path(l, seq, path, sizeof path);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = -errno;
        log_error("write-log", "create %s: %s", path, strerror(-err));
        return err;
    }
    int r = write_log_sync_dir(l);
    if (r < 0) {
        close(fd);
        unlink(path);
        return r;
    }
    s = g_new0(struct segment, 1);
    s->seq = seq;
    s->fd = fd;
    *out = s;
    return 0;
}

/* Unlinks a segment and syncs the directory, so that deletions are durable in order (L3). */
static int segment_delete(struct write_log *l, struct segment *s)
{
    char path[4200];
    int r = 0;

    segment_path(l, s->seq, path, sizeof path);
    if (s->fd >= 0)
        close(s->fd);
    if (unlink(path) < 0 && errno != ENOENT)
        r = -errno;
    g_free(s);
    if (r == 0)
        r = write_log_sync_dir(l);
    if (r < 0)
        log_error("write-log", "delete %s: %s", path, strerror(-r));
    return r;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return 1; /* short: the end of the file */
        done += (size_t)n;
    }
    return 0;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        done += (size_t)n;
    }
    return 0;
}

/* ---- recovery ------------------------------------------------------------------------------ */

/* A place in the log: segment index (in l->segs) and offset. */
struct log_at {
    guint seg;
    uint64_t off;
};

/* Reads the record at `at` into hdr and *payload (g_malloc'd, or NULL).  Returns 0 for a valid
 * record of this log, 1 for the end (short, zeros, damage or another log's record: L2). */
static int record_read(struct write_log *l, struct segment *s, uint64_t off,
                       uint8_t hdr[WRITE_LOG_HEADER_SIZE], void **payload,
                       struct write_log_record *rec)
{
    int64_t plen;
    int r;

    *payload = NULL;
    r = pread_full(s->fd, hdr, WRITE_LOG_HEADER_SIZE, off);
    if (r != 0)
        return r < 0 ? r : 1;
    plen = write_log_payload_len(hdr);
    if (plen < 0)
        return 1;
    if (plen > 0) {
        *payload = g_try_malloc((size_t)plen);
        if (!*payload)
            return -ENOMEM;
        r = pread_full(s->fd, *payload, (size_t)plen, off + WRITE_LOG_HEADER_SIZE);
        if (r != 0) {
            g_free(*payload);
            *payload = NULL;
            return r < 0 ? r : 1;
        }
    }
    if (write_log_decode(hdr, *payload, (size_t)plen, l->id, rec) < 0) {
        g_free(*payload);
        *payload = NULL;
        return 1;
    }
    return 0;
}

static gint segment_compare(gconstpointer a, gconstpointer b)
{
    const struct segment *x = *(struct segment *const *)a, *y = *(struct segment *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : 0;
}

/* Lists the segments, oldest first, open for reading and writing. */
static int write_log_list(struct write_log *l)
{
    GDir *dir = g_dir_open(l->dir, 0, NULL);
    const char *name;
    int r = 0;

    if (!dir)
        return -errno ? -errno : -EIO;
    while ((name = g_dir_read_name(dir)) && r == 0) {
        char *end = NULL;
        if (strlen(name) != 16 || !g_ascii_isxdigit(name[0]))
            continue;
        uint64_t seq = g_ascii_strtoull(name, &end, 16);
        if (!end || *end != '\0')
            continue;
        char path[4200];
        segment_path(l, seq, path, sizeof path);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            r = -errno;
            log_error("write-log", "open %s: %s", path, strerror(-r));
            break;
        }
        struct segment *s = g_new0(struct segment, 1);
        s->seq = seq;
        s->fd = fd;
        g_ptr_array_add(l->segs, s);
        if (seq + 1 > l->next_seq)
            l->next_seq = seq + 1;
    }
    g_dir_close(dir);
    g_ptr_array_sort(l->segs, segment_compare);
    /* Deletions go oldest first and are synced one by one, so the segments are consecutive; a
     * gap means someone else deleted files, and replaying across it could bring back old data. */
    for (guint i = 1; i < l->segs->len && r == 0; i++) {
        const struct segment *a = g_ptr_array_index(l->segs, i - 1);
        const struct segment *b = g_ptr_array_index(l->segs, i);
        if (b->seq != a->seq + 1) {
            log_error("write-log",
                      "%s: segments %016llx and %016llx are not consecutive: the log is "
                      "damaged; not replaying it",
                      l->dir, (unsigned long long)a->seq, (unsigned long long)b->seq);
            r = -EBADMSG;
        }
    }
    return r;
}

/* Pass 1: where replay starts (after the last honoured RESET) and ends (after the last FLUSH,
 * or honoured RESET, before the scan stops). */
static int write_log_scan(struct write_log *l, uint64_t head_gen, struct log_at *start,
                          struct log_at *end, uint64_t *last_gen)
{
    *start = *end = (struct log_at){0, 0};
    *last_gen = 0;
    for (guint i = 0; i < l->segs->len; i++) {
        struct segment *s = g_ptr_array_index(l->segs, i);
        uint64_t off = 0;
        for (;;) {
            uint8_t hdr[WRITE_LOG_HEADER_SIZE];
            struct write_log_record rec;
            void *payload;
            int r = record_read(l, s, off, hdr, &payload, &rec);
            if (r < 0)
                return r;
            g_free(payload);
            if (r == 1) {
                struct stat st;
                if (fstat(s->fd, &st) < 0)
                    return -errno;
                if ((uint64_t)st.st_size == off)
                    break; /* the segment's clean end: on to the next one */
                log_info("write-log",
                         "%s: segment %016llx ends at %llu with %llu bytes that are not a "
                         "whole record (a write in progress at a crash, or damage): the "
                         "scan stops there",
                         l->dir, (unsigned long long)s->seq, (unsigned long long)off,
                         (unsigned long long)((uint64_t)st.st_size - off));
                return 0; /* L2: nothing after a bad record counts */
            }
            uint64_t next = off + WRITE_LOG_HEADER_SIZE + (rec.data ? rec.n_blocks * 4096ull : 0);
            if (rec.kind == WRITE_LOG_RESET) {
                if (head_gen < rec.gen) /* L5: the restore never committed */
                    return 0;
                *start = *end = (struct log_at){i, next};
                *last_gen = rec.gen;
            } else if (rec.kind == WRITE_LOG_FLUSH) {
                *end = (struct log_at){i, next};
                *last_gen = rec.gen;
            }
            off = next;
        }
    }
    return 0;
}

static bool at_before(struct log_at a, struct log_at b)
{
    return a.seg < b.seg || (a.seg == b.seg && a.off < b.off);
}

/* Pass 2: applies [start, end) and records each segment's max gen.  Records of flushes up to
 * head_gen are in the head already: skipping them gives the same state as replaying them (L3)
 * and spares a fully committed log any work. */
static int write_log_replay(struct write_log *l, struct log_at start, struct log_at end,
                            uint64_t head_gen, write_log_apply_fn apply, void *opaque)
{
    struct log_at at = start;
    int r = 0;

    while (r == 0 && at_before(at, end)) {
        struct segment *s = g_ptr_array_index(l->segs, at.seg);
        uint8_t hdr[WRITE_LOG_HEADER_SIZE];
        struct write_log_record rec;
        void *payload;
        struct stat st;
        if (fstat(s->fd, &st) < 0)
            return -errno;
        if (at.seg < end.seg && at.off >= (uint64_t)st.st_size) {
            at = (struct log_at){at.seg + 1, 0}; /* this segment is done (or empty) */
            continue;
        }
        r = record_read(l, s, at.off, hdr, &payload, &rec);
        if (r == 1) {
            /* It was valid in pass 1: the file changed under us. */
            log_error("write-log", "%s: segment %016llx changed during recovery", l->dir,
                      (unsigned long long)s->seq);
            r = -EIO;
        }
        if (r < 0)
            break;
        if (rec.gen > s->max_gen)
            s->max_gen = rec.gen;
        if (rec.kind != WRITE_LOG_FLUSH && rec.kind != WRITE_LOG_RESET && rec.gen > head_gen)
            r = apply(&rec, opaque);
        g_free(payload);
        at.off += WRITE_LOG_HEADER_SIZE + (rec.data ? rec.n_blocks * 4096ull : 0);
    }
    return r;
}

int write_log_open(const char *dir, const uint8_t id[META_WRITE_LOG_ID_LEN], uint64_t head_gen,
                   uint64_t segment_bytes, write_log_apply_fn apply, void *opaque,
                   uint64_t *last_gen, struct write_log **out)
{
    struct write_log *l = g_new0(struct write_log, 1);
    struct log_at start = {0, 0}, end = {0, 0};
    struct segment *cur = NULL;
    int r;

    if (snprintf(l->dir, sizeof l->dir, "%s", dir) >= (int)sizeof l->dir) {
        g_free(l);
        return -ENAMETOOLONG;
    }
    memcpy(l->id, id, META_WRITE_LOG_ID_LEN);
    l->segment_bytes = segment_bytes;
    l->segs = g_ptr_array_new();
    l->next_seq = 1;
    pthread_mutex_init(&l->lock, NULL);
    pthread_mutex_init(&l->sync_lock, NULL);
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        r = -errno;
        log_error("write-log", "mkdir %s: %s", dir, strerror(-r));
        goto fail;
    }
    r = write_log_list(l);
    if (r == 0)
        r = write_log_scan(l, head_gen, &start, &end, last_gen);
    if (r == 0)
        r = write_log_replay(l, start, end, head_gen, apply, opaque);
    if (r < 0)
        goto fail;

    /* L4: cut off what follows the end, durably, before anything is appended. */
    if (l->segs->len > 0) {
        struct segment *s = g_ptr_array_index(l->segs, end.seg);
        if (ftruncate(s->fd, (off_t)end.off) < 0 || fsync(s->fd) < 0) {
            r = -errno;
            log_error("write-log", "%s: cannot cut off segment %016llx after its last flush: %s",
                      dir, (unsigned long long)s->seq, strerror(-r));
            goto fail;
        }
        /* Newest first: a crash in between leaves a shorter log, still consecutive. */
        while (r == 0 && l->segs->len > end.seg + 1)
            r = segment_delete(l, g_ptr_array_remove_index(l->segs, l->segs->len - 1));
        /* The new segment follows the last one kept: the segments stay consecutive (the
         * deletions above are durable, so a number used again names a new file). */
        if (l->segs->len > 0)
            l->next_seq = ((struct segment *)g_ptr_array_index(l->segs, l->segs->len - 1))->seq + 1;
        /* L5: before an honoured RESET, oldest first. */
        for (guint i = 0; i < start.seg && r == 0; i++)
            r = segment_delete(l, g_ptr_array_remove_index(l->segs, 0));
        if (r < 0)
            goto fail;
        for (guint i = 0; i < l->segs->len; i++) {
            struct segment *x = g_ptr_array_index(l->segs, i);
            struct stat st;
            if (fstat(x->fd, &st) < 0) {
                r = -errno;
                goto fail;
            }
            x->size = x->synced = (uint64_t)st.st_size;
        }
    }
    r = segment_create(l, l->next_seq++, &cur);
    if (r < 0)
        goto fail;
    cur->positioned = true; /* at position 0 */
    g_ptr_array_add(l->segs, cur);
    *out = l;
    return 0;

fail:
    write_log_close(l);
    return r;
}

void write_log_close(struct write_log *l)
{
    if (!l)
        return;
    for (guint i = 0; i < l->segs->len; i++) {
        struct segment *s = g_ptr_array_index(l->segs, i);
        if (s->fd >= 0)
            close(s->fd);
        g_free(s);
    }
    g_ptr_array_free(l->segs, TRUE);
    pthread_mutex_destroy(&l->lock);
    pthread_mutex_destroy(&l->sync_lock);
    g_free(l);
}

/* ---- appending ----------------------------------------------------------------------------- */

/* Reserves room for a record in the current segment and writes it there. */
static int write_log_put(struct write_log *l, const struct write_log_record *r, uint64_t *pos)
{
    uint8_t hdr[WRITE_LOG_HEADER_SIZE];
    size_t plen = r->kind == WRITE_LOG_DATA ? (size_t)r->n_blocks * WRITE_LOG_BLOCK : 0;
    int err;

    write_log_encode_header(r, l->id, hdr);
    err = write_log_check(hdr, r->data, plen, hdr + 48);
    if (err < 0)
        return err;

    pthread_mutex_lock(&l->lock);
    if (l->failed) {
        err = l->failed;
        pthread_mutex_unlock(&l->lock);
        return err;
    }
    struct segment *s = g_ptr_array_index(l->segs, l->segs->len - 1);
    uint64_t off = s->size, len = WRITE_LOG_HEADER_SIZE + plen;
    s->size += len;
    l->pos += len;
    if (pos)
        *pos = l->pos;
    if (r->gen > s->max_gen)
        s->max_gen = r->gen;
    int fd = s->fd; /* open until retired, which never takes the current segment */
    pthread_mutex_unlock(&l->lock);

    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)r->data, plen}};
    ssize_t k;
    do
        k = pwritev(fd, iov, plen ? 2 : 1, (off_t)off);
    while (k < 0 && errno == EINTR);
    err = k < 0 ? -errno : 0;
    if (err == 0 && (size_t)k < len) { /* rare: finish piece by piece */
        size_t done = (size_t)k;
        if (done < sizeof hdr) {
            err = pwrite_full(fd, hdr + done, sizeof hdr - done, off + done);
            done = sizeof hdr;
        }
        if (err == 0 && done < len)
            err = pwrite_full(fd, (const char *)r->data + (done - sizeof hdr), len - done,
                              off + done);
    }
    if (err < 0) {
        log_error("write-log", "%s: append: %s; every later flush fails", l->dir, strerror(-err));
        pthread_mutex_lock(&l->lock);
        if (!l->failed)
            l->failed = err;
        pthread_mutex_unlock(&l->lock);
        return err;
    }
    write_log_test_kill("append");
    return 0;
}

int write_log_append(struct write_log *l, const struct write_log_record *r)
{
    return write_log_put(l, r, NULL);
}

int write_log_mark(struct write_log *l, uint64_t gen, uint64_t *pos)
{
    struct write_log_record rec = {.kind = WRITE_LOG_FLUSH, .gen = gen};
    int r = write_log_put(l, &rec, pos);

    if (r < 0)
        return r;
    /* A full segment: begin the next.  The caller excludes writers, so nothing is appended
     * meanwhile, and the closed segment's records all belong to flushes up to gen. */
    pthread_mutex_lock(&l->lock);
    struct segment *s = g_ptr_array_index(l->segs, l->segs->len - 1);
    bool full = s->size >= l->segment_bytes;
    uint64_t seq = l->next_seq;
    pthread_mutex_unlock(&l->lock);
    if (!full)
        return 0;
    struct segment *next;
    r = segment_create(l, seq, &next);
    if (r < 0)
        return 0; /* keep appending to the full one; try again at the next flush */
    pthread_mutex_lock(&l->lock);
    l->next_seq = seq + 1;
    next->positioned = true;
    next->start_pos = l->pos;
    g_ptr_array_add(l->segs, next);
    pthread_mutex_unlock(&l->lock);
    return 0;
}

int write_log_sync(struct write_log *l, uint64_t pos)
{
    int r = 0;

    pthread_mutex_lock(&l->sync_lock);
    pthread_mutex_lock(&l->lock);
    if (l->failed)
        r = l->failed;
    bool done = l->durable >= pos;
    /* Every record up to pos is written (L1: the FLUSH at pos was appended after them, and the
     * caller's own append returned), so syncing every segment's bytes makes pos durable;
     * flushes whose FLUSH came earlier are covered too (group commit). */
    guint n = l->segs->len;
    int *fds = g_new(int, n);
    uint64_t *sizes = g_new(uint64_t, n);
    for (guint i = 0; i < n; i++) {
        struct segment *s = g_ptr_array_index(l->segs, i);
        fds[i] = s->synced < s->size ? s->fd : -1;
        sizes[i] = s->size;
    }
    pthread_mutex_unlock(&l->lock);
    for (guint i = 0; i < n && r == 0 && !done; i++)
        if (fds[i] >= 0 && fdatasync(fds[i]) < 0) {
            r = -errno;
            log_error("write-log", "%s: fdatasync: %s", l->dir, strerror(-r));
        }
    if (r == 0 && !done) {
        pthread_mutex_lock(&l->lock);
        for (guint i = 0; i < n; i++) {
            struct segment *s = g_ptr_array_index(l->segs, i);
            if (fds[i] >= 0 && s->synced < sizes[i])
                s->synced = sizes[i];
        }
        if (pos > l->durable)
            l->durable = pos;
        pthread_mutex_unlock(&l->lock);
        write_log_test_kill("sync");
    }
    g_free(fds);
    g_free(sizes);
    pthread_mutex_unlock(&l->sync_lock);
    return r;
}

/* ---- deleting -------------------------------------------------------------------------------- */

int write_log_retire(struct write_log *l, uint64_t committed_gen)
{
    int r = 0;

    pthread_mutex_lock(&l->sync_lock);
    for (;;) {
        pthread_mutex_lock(&l->lock);
        struct segment *s = l->segs->len > 1 ? g_ptr_array_index(l->segs, 0) : NULL;
        if (s && s->max_gen <= committed_gen)
            g_ptr_array_remove_index(l->segs, 0);
        else
            s = NULL;
        pthread_mutex_unlock(&l->lock);
        if (!s)
            break;
        r = segment_delete(l, s); /* oldest first, each synced (L3) */
        if (r < 0)
            break;
    }
    pthread_mutex_unlock(&l->sync_lock);
    return r;
}

int write_log_reset(struct write_log *l, uint64_t gen)
{
    struct write_log_record rec = {.kind = WRITE_LOG_RESET, .gen = gen};
    struct segment *s;
    uint64_t pos;
    int r;

    pthread_mutex_lock(&l->sync_lock);
    pthread_mutex_lock(&l->lock);
    uint64_t seq = l->next_seq;
    r = l->failed;
    pthread_mutex_unlock(&l->lock);
    if (r == 0)
        r = segment_create(l, seq, &s);
    if (r == 0) {
        pthread_mutex_lock(&l->lock);
        l->next_seq = seq + 1;
        s->positioned = true;
        s->start_pos = l->pos;
        g_ptr_array_add(l->segs, s);
        pthread_mutex_unlock(&l->lock);
    }
    pthread_mutex_unlock(&l->sync_lock);
    if (r < 0)
        return r;
    r = write_log_put(l, &rec, &pos);
    if (r == 0)
        r = write_log_sync(l, pos);
    /* A RESET left behind unsynced would void every later flush at a recovery (L5: the
     * restore did not commit): take the segment away again. */
    if (r < 0)
        write_log_reset_undo(l);
    return r;
}

int write_log_reset_done(struct write_log *l)
{
    int r = 0;

    pthread_mutex_lock(&l->sync_lock);
    while (r == 0) {
        pthread_mutex_lock(&l->lock);
        struct segment *s = l->segs->len > 1 ? g_ptr_array_remove_index(l->segs, 0) : NULL;
        pthread_mutex_unlock(&l->lock);
        if (!s)
            break;
        r = segment_delete(l, s);
    }
    pthread_mutex_unlock(&l->sync_lock);
    return r;
}

int write_log_reset_undo(struct write_log *l)
{
    int r;

    pthread_mutex_lock(&l->sync_lock);
    pthread_mutex_lock(&l->lock);
    struct segment *s = g_ptr_array_remove_index(l->segs, l->segs->len - 1);
    /* Positions go back to where the segment began (writers are excluded), so that those of
     * the segment before still match its file (write_log_read). */
    l->pos -= s->size;
    if (l->durable > l->pos)
        l->durable = l->pos;
    pthread_mutex_unlock(&l->lock);
    r = segment_delete(l, s);
    if (r < 0) {
        /* The RESET may still be there: a crash would honour it iff the head moved to its gen,
         * which it did not; but appending after it would make later writes void.  Stop. */
        pthread_mutex_lock(&l->lock);
        l->failed = r;
        pthread_mutex_unlock(&l->lock);
    }
    pthread_mutex_unlock(&l->sync_lock);
    return r;
}

/* ---- shipping (durability=remote) ----------------------------------------------------------- */

int write_log_read(struct write_log *l, uint64_t from, uint64_t to, void *buf)
{
    int r = 0;

    /* sync_lock: no segment is retired (closed and unlinked) while we read it. */
    pthread_mutex_lock(&l->sync_lock);
    for (uint64_t at = from; r == 0 && at < to;) {
        int fd = -1;
        uint64_t off = 0, n = 0;
        pthread_mutex_lock(&l->lock);
        for (guint i = 0; i < l->segs->len; i++) {
            struct segment *s = g_ptr_array_index(l->segs, i);
            if (s->positioned && s->start_pos <= at && at < s->start_pos + s->size) {
                fd = s->fd;
                off = at - s->start_pos;
                n = MIN(to - at, s->size - off);
                break;
            }
        }
        pthread_mutex_unlock(&l->lock);
        if (fd < 0) {
            log_error("write-log", "%s: positions %llu to %llu are no longer in the log", l->dir,
                      (unsigned long long)at, (unsigned long long)to);
            r = -ENOENT;
            break;
        }
        r = pread_full(fd, (char *)buf + (at - from), n, off);
        if (r > 0)
            r = -EIO; /* shorter than appended: cannot be */
        at += n;
    }
    pthread_mutex_unlock(&l->sync_lock);
    return r;
}

uint64_t write_log_position(struct write_log *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t pos = l->pos;
    pthread_mutex_unlock(&l->lock);
    return pos;
}

int write_log_install_begin(const char *dir, int *fd_out)
{
    char path[4200];
    GDir *d;
    const char *name;
    int r = 0;

    if (g_mkdir_with_parents(dir, 0700) < 0)
        return -errno;
    /* Whatever is there goes: the caller knows the log it installs is the whole truth. */
    d = g_dir_open(dir, 0, NULL);
    while (d && r == 0 && (name = g_dir_read_name(d))) {
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (unlink(path) < 0 && errno != ENOENT)
            r = -errno;
    }
    if (d)
        g_dir_close(d);
    if (r == 0) { /* durably gone before the new one is named: never both after a crash */
        struct write_log l = {0};
        snprintf(l.dir, sizeof l.dir, "%s", dir);
        r = write_log_sync_dir(&l);
    }
    snprintf(path, sizeof path, "%s/.install", dir);
    if (r == 0 && (*fd_out = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        r = -errno;
    if (r < 0)
        log_error("write-log", "%s: cannot install a log: %s", dir, strerror(-r));
    return r;
}

int write_log_install_commit(const char *dir, int fd)
{
    struct write_log l = {0};
    char tmp[4200], path[4200];
    int r = 0;

    snprintf(l.dir, sizeof l.dir, "%s", dir);
    snprintf(tmp, sizeof tmp, "%s/.install", dir);
    segment_path(&l, 1, path, sizeof path);
    if (fsync(fd) < 0 || rename(tmp, path) < 0)
        r = -errno;
    close(fd);
    if (r == 0)
        r = write_log_sync_dir(&l);
    if (r < 0) {
        log_error("write-log", "%s: cannot install a log: %s", dir, strerror(-r));
        unlink(tmp);
    }
    return r;
}

uint64_t write_log_bytes(struct write_log *l)
{
    uint64_t n = 0;

    pthread_mutex_lock(&l->lock);
    for (guint i = 0; i < l->segs->len; i++)
        n += ((struct segment *)g_ptr_array_index(l->segs, i))->size;
    pthread_mutex_unlock(&l->lock);
    return n;
}

bool write_log_present(const char *dir)
{
    /* opendir, not g_dir_open: GLib formats a translated message for a missing directory even
     * with no GError to put it in, and gettext from a request thread upsets glibc's locale
     * lock under a preloaded ASan runtime (docs/storage.md).  A new disk has no log yet. */
    DIR *d = opendir(dir);
    struct dirent *e;
    bool found = false;

    while (d && !found && (e = readdir(d))) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        found = strlen(e->d_name) == 16 && stat(path, &st) == 0 && st.st_size > 0;
    }
    if (d)
        closedir(d);
    return found;
}
