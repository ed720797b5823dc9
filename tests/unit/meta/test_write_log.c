/* test_write_log: the write log of durability=local (nbdkit-plugin/write_log.h) on its own,
 * against a model of a small disk.
 *
 * Each case appends records, closes, damages the files the way a crash or the disk would, and
 * reopens: the replay must give exactly the state of the last intact FLUSH (L3), cut off what
 * follows (L4), never hand a damaged record's bytes to the caller, honour or void a RESET by the
 * head's generation (L5), ignore another log's records (L6), skip what the head holds already,
 * and keep working after segments are retired. */
#include "write_log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNKS 4
#define BLOCKS 16 /* per chunk: 64 KiB chunks */
#define BLK    WRITE_LOG_BLOCK

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* The disk as replayed, and the disk as written up to each flush. */
struct model {
    uint8_t b[CHUNKS][BLOCKS][BLK];
    unsigned applied;
};

static char dir[512];
static uint8_t log_id[META_WRITE_LOG_ID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t BAD_BYTE = 0xee; /* only ever in damaged records */

static int apply(const struct write_log_record *r, void *opaque)
{
    struct model *m = opaque;

    CHECK(r->idx < CHUNKS, "chunk %llu", (unsigned long long)r->idx);
    m->applied++;
    if (r->kind == WRITE_LOG_ZERO_CHUNK) {
        memset(m->b[r->idx], 0, sizeof m->b[r->idx]);
        return 0;
    }
    CHECK(r->first_block + r->n_blocks <= BLOCKS, "blocks %u+%u", r->first_block, r->n_blocks);
    for (uint32_t i = 0; i < r->n_blocks; i++) {
        if (r->kind == WRITE_LOG_DATA) {
            const uint8_t *src = (const uint8_t *)r->data + (size_t)i * BLK;
            for (size_t k = 0; k < BLK; k++)
                CHECK(src[k] != BAD_BYTE, "a damaged record's bytes were replayed");
            memcpy(m->b[r->idx][r->first_block + i], src, BLK);
        } else {
            memset(m->b[r->idx][r->first_block + i], 0, BLK);
        }
    }
    return 0;
}

/* Writes blocks [first, first + n) of chunk idx with byte v into the log and the model. */
static void put(struct write_log *l, struct model *w, uint64_t gen, uint64_t idx, uint32_t first,
                uint32_t n, int v)
{
    uint8_t *buf = g_malloc((size_t)n * BLK);
    struct write_log_record r = {.kind = v < 0 ? WRITE_LOG_HOLE : WRITE_LOG_DATA,
                                 .gen = gen,
                                 .idx = idx,
                                 .first_block = first,
                                 .n_blocks = n,
                                 .data = v < 0 ? NULL : buf};

    memset(buf, v < 0 ? 0 : v, (size_t)n * BLK);
    CHECK(write_log_append(l, &r) == 0, "append");
    for (uint32_t i = 0; i < n; i++)
        memset(w->b[idx][first + i], v < 0 ? 0 : v, BLK);
    g_free(buf);
}

static void flush(struct write_log *l, uint64_t gen)
{
    uint64_t pos;
    CHECK(write_log_mark(l, gen, &pos) == 0, "mark");
    CHECK(write_log_sync(l, pos) == 0, "sync");
}

static struct write_log *reopen(struct model *m, uint64_t head_gen, uint64_t seg_bytes,
                                uint64_t *last_gen)
{
    struct write_log *l = NULL;
    int r = write_log_open(dir, log_id, head_gen, seg_bytes, apply, m, last_gen, &l);
    CHECK(r == 0, "open: %s", strerror(-r));
    return l;
}

static void expect_same(const struct model *got, const struct model *want, const char *what)
{
    CHECK(memcmp(got->b, want->b, sizeof got->b) == 0, "%s: the replayed disk differs", what);
}

/* The newest segment's path. */
static void last_segment(char *out, size_t size)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name, *best = NULL;
    char keep[64] = "";

    while ((name = g_dir_read_name(d)))
        if (!best || strcmp(name, keep) > 0) {
            snprintf(keep, sizeof keep, "%s", name);
            best = keep;
        }
    g_dir_close(d);
    snprintf(out, size, "%s/%s", dir, keep);
}

static off_t file_size(const char *path)
{
    struct stat st;
    CHECK(stat(path, &st) == 0, "stat %s", path);
    return st.st_size;
}

static void wipe(void)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;
    while (d && (name = g_dir_read_name(d))) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        unlink(p);
    }
    if (d)
        g_dir_close(d);
}

/* Flushed state comes back; a write after the last FLUSH does not, and stays gone. */
static void test_replay_and_cut(void)
{
    struct model w = {0}, at2, got = {0};
    uint64_t last = 0;
    struct write_log *l = reopen(&got, 0, 1 << 20, &last);

    CHECK(got.applied == 0 && last == 0, "an empty log replays nothing");
    put(l, &w, 1, 0, 0, 3, 0x11);
    put(l, &w, 1, 1, 5, 1, 0x12);
    flush(l, 1);
    put(l, &w, 2, 0, 1, 1, 0x21);
    put(l, &w, 2, 1, 5, 1, -1);
    flush(l, 2);
    at2 = w;
    put(l, &w, 3, 2, 0, 16, 0x31); /* never flushed */
    write_log_close(l);

    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    CHECK(last == 2, "last flush %llu, not 2", (unsigned long long)last);
    expect_same(&got, &at2, "after the last flush");
    CHECK(got.applied == 4, "%u records applied, not 4", got.applied);
    /* A new write and flush after the restart: the cut-off write must not come back behind it. */
    struct model w2 = at2;
    put(l, &w2, 4, 3, 0, 1, 0x41);
    flush(l, 4);
    write_log_close(l);
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    expect_same(&got, &w2, "after a restart and a new flush");
    CHECK(got.b[2][0][0] == 0, "the write cut off at the first restart came back");
    write_log_close(l);
    wipe();
}

/* Reopens the log over head (at head_gen): the replay must give want, up to flush want_last,
 * in want_applied records. */
static void replay_over(const struct model *head, uint64_t head_gen, const struct model *want,
                        uint64_t want_last, unsigned want_applied, const char *what)
{
    struct model got = *head;
    uint64_t last;

    got.applied = 0;
    struct write_log *l = reopen(&got, head_gen, 1, &last);
    CHECK(last == want_last, "%s: last flush %llu", what, (unsigned long long)last);
    expect_same(&got, want, what);
    CHECK(got.applied == want_applied, "%s: %u records replayed", what, got.applied);
    write_log_close(l);
}

/* A torn last record: the FLUSH it would have ended is not there, the one before is. */
static void test_torn_tail(void)
{
    struct model w = {0}, at1, got = {0};
    uint64_t last;
    char seg[700];
    struct write_log *l = reopen(&got, 0, 1 << 20, &last);

    put(l, &w, 1, 0, 0, 2, 0x51);
    flush(l, 1);
    at1 = w;
    put(l, &w, 2, 0, 0, 2, 0x52);
    flush(l, 2);
    write_log_close(l);
    last_segment(seg, sizeof seg);
    /* Cut the FLUSH 2 record in half. */
    CHECK(truncate(seg, file_size(seg) - WRITE_LOG_HEADER_SIZE / 2) == 0, "truncate");
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    CHECK(last == 1, "last flush %llu, not 1", (unsigned long long)last);
    expect_same(&got, &at1, "a torn FLUSH");
    write_log_close(l);

    /* Cut a DATA record short (its FLUSH missing too). */
    wipe();
    memset(&w, 0, sizeof w);
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    put(l, &w, 1, 1, 0, 1, 0x61);
    flush(l, 1);
    at1 = w;
    put(l, &w, 2, 1, 0, 4, 0x62);
    write_log_close(l);
    last_segment(seg, sizeof seg);
    CHECK(truncate(seg, file_size(seg) - 100) == 0, "truncate");
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    expect_same(&got, &at1, "a torn DATA record");
    write_log_close(l);
    wipe();
}

/* A damaged byte in a record's payload: the record and everything after it are not replayed, and
 * the damaged bytes never reach the caller. */
static void test_corrupt_record(void)
{
    struct model w = {0}, at1, got = {0};
    uint64_t last;
    char seg[700];
    struct write_log *l = reopen(&got, 0, 1 << 20, &last);

    put(l, &w, 1, 2, 0, 1, 0x71);
    flush(l, 1);
    at1 = w;
    off_t damaged_at = WRITE_LOG_HEADER_SIZE + BLK + WRITE_LOG_HEADER_SIZE; /* the next payload */
    put(l, &w, 2, 2, 1, 2, 0x72);
    flush(l, 2);
    write_log_close(l);
    last_segment(seg, sizeof seg);
    int fd = open(seg, O_RDWR);
    CHECK(fd >= 0, "open %s", seg);
    /* Every byte of the payload becomes BAD_BYTE: apply() fails the test if it sees one. */
    uint8_t bad[2 * BLK];
    memset(bad, BAD_BYTE, sizeof bad);
    CHECK(pwrite(fd, bad, sizeof bad, damaged_at + WRITE_LOG_HEADER_SIZE) == (ssize_t)sizeof bad,
          "pwrite");
    close(fd);
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    CHECK(last == 1, "last flush %llu, not 1", (unsigned long long)last);
    expect_same(&got, &at1, "a damaged record");
    write_log_close(l);

    /* A damaged header (its chunk index) is caught the same way. */
    wipe();
    memset(&w, 0, sizeof w);
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    put(l, &w, 1, 0, 0, 1, 0x73);
    flush(l, 1);
    at1 = w;
    put(l, &w, 2, 1, 0, 1, 0x74);
    flush(l, 2);
    write_log_close(l);
    last_segment(seg, sizeof seg);
    fd = open(seg, O_RDWR);
    uint8_t idx = 3;
    CHECK(pwrite(fd, &idx, 1, 2 * WRITE_LOG_HEADER_SIZE + BLK + 24) == 1, "pwrite");
    close(fd);
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    expect_same(&got, &at1, "a damaged header");
    CHECK(got.b[3][0][0] == 0, "a record with a damaged chunk index was replayed");
    write_log_close(l);
    wipe();
}

/* Another log's records (a deleted disk whose id was reused) are never replayed. */
static void test_other_log(void)
{
    struct model w = {0}, got = {0}, zero = {0};
    uint64_t last;
    struct write_log *l = reopen(&got, 0, 1 << 20, &last);

    put(l, &w, 1, 0, 0, 1, 0x81);
    flush(l, 1);
    write_log_close(l);
    log_id[0] ^= 0xff;
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    expect_same(&got, &zero, "another log's records");
    CHECK(got.applied == 0 && last == 0, "another log's records were replayed");
    write_log_close(l);
    log_id[0] ^= 0xff;
    wipe();
}

/* RESET: honoured once the head reached its gen, void before. */
static void test_reset(void)
{
    struct model w = {0}, got = {0}, before, after = {0};
    uint64_t last;
    struct write_log *l = reopen(&got, 0, 1 << 20, &last);

    put(l, &w, 1, 0, 0, 2, 0x91);
    flush(l, 1);
    before = w;
    CHECK(write_log_reset(l, 2) == 0, "reset");
    write_log_close(l);
    /* The restore's commit did not happen (the head still at gen 0, before RESET 2): the RESET
     * is void and flush 1 is replayed. */
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    expect_same(&got, &before, "a RESET that never committed");
    CHECK(last == 1, "last %llu", (unsigned long long)last);
    CHECK(write_log_reset(l, 2) == 0, "reset");
    /* The commit happened (head gen 2), writes followed. */
    CHECK(write_log_reset_done(l) == 0, "reset done");
    put(l, &after, 3, 1, 0, 1, 0x92);
    flush(l, 3);
    write_log_close(l);
    memset(&got, 0, sizeof got);
    l = reopen(&got, 2, 1 << 20, &last);
    expect_same(&got, &after, "after a committed RESET");
    write_log_close(l);
    wipe();
}

/* Small segments: each flush begins a new one; retiring the committed ones keeps the rest
 * replayable, and a retired log replays to the same state. */
static void test_retire(void)
{
    struct model w = {0}, got = {0};
    uint64_t last;
    struct write_log *l = reopen(&got, 0, 1, &last);

    for (uint64_t g = 1; g <= 6; g++) {
        put(l, &w, g, g % CHUNKS, (uint32_t)g, 2, (int)(0xa0 + g));
        flush(l, g);
    }
    uint64_t before = write_log_bytes(l);
    CHECK(write_log_retire(l, 4) == 0, "retire");
    CHECK(write_log_bytes(l) < before, "nothing was retired");
    write_log_close(l);
    /* The head holds flush 4: replaying the rest over it gives flush 6.  Model the head. */
    struct model head = {0};
    for (uint64_t g = 1; g <= 4; g++)
        for (uint32_t i = 0; i < 2; i++)
            memset(head.b[g % CHUNKS][g + i], (int)(0xa0 + g), BLK);
    replay_over(&head, 4, &w, 6, 2, "after retiring segments up to flush 4");
    /* Once the head holds flush 6, nothing is left to replay. */
    got = w;
    got.applied = 0;
    l = reopen(&got, 6, 1, &last);
    CHECK(got.applied == 0, "%u records replayed over a head that holds them", got.applied);
    expect_same(&got, &w, "over a head at the last flush");
    write_log_close(l);
    wipe();
}

/* Installs bytes as the whole log (what a disk does with durability=remote's shipped rows). */
static void install(const void *bytes, size_t len)
{
    int fd = -1;
    CHECK(write_log_install_begin(dir, &fd) == 0 && fd >= 0, "install begin");
    CHECK(pwrite(fd, bytes, len, 0) == (ssize_t)len, "install write");
    CHECK(write_log_install_commit(dir, fd) == 0, "install commit");
}

/* durability=remote: the bytes between two flushes' positions, read back and installed where
 * the log is gone, replay to the same state, across segments; retired bytes are refused. */
static void test_ship(void)
{
    struct model w = {0}, got = {0}, head = {0};
    uint64_t last, pos[7] = {0};
    struct write_log *l = reopen(&got, 0, 1, &last); /* one segment per flush */

    CHECK(write_log_position(l) == 0, "a new log starts at position 0");
    for (uint64_t g = 1; g <= 6; g++) {
        put(l, &w, g, g % CHUNKS, (uint32_t)g, 2, (int)(0xb0 + g));
        flush(l, g);
        pos[g] = write_log_position(l);
        if (g == 4)
            head = w;
    }
    uint8_t *all = g_malloc(pos[6]);
    CHECK(write_log_read(l, 0, pos[6], all) == 0, "read every flush");
    /* The same bytes, piece by piece (each piece in a segment of its own). */
    uint8_t *piece = g_malloc(pos[6]);
    for (int g = 1; g <= 6; g++) {
        CHECK(write_log_read(l, pos[g - 1], pos[g], piece) == 0, "read flush %d", g);
        CHECK(memcmp(piece, all + pos[g - 1], pos[g] - pos[g - 1]) == 0, "flush %d differs", g);
    }
    CHECK(write_log_retire(l, 4) == 0, "retire");
    CHECK(write_log_read(l, pos[1], pos[2], piece) == -ENOENT, "a retired segment was read");
    CHECK(write_log_read(l, pos[4], pos[6], piece) == 0, "read after retiring");
    CHECK(memcmp(piece, all + pos[4], pos[6] - pos[4]) == 0, "the bytes after flush 4 changed");
    write_log_close(l);

    /* A new host: only the rows after the head's flush 4.  A stray segment must go. */
    wipe();
    char stray[600];
    snprintf(stray, sizeof stray, "%s/00000000000000a0", dir);
    CHECK(g_file_set_contents(stray, "junk", 4, NULL), "stray segment");
    install(all + pos[4], pos[6] - pos[4]);
    replay_over(&head, 4, &w, 6, 2, "rows after flush 4 over a head at flush 4");
    /* Every row, over an empty head. */
    install(all, pos[6]);
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1, &last);
    expect_same(&got, &w, "every row over an empty head");
    write_log_close(l);
    g_free(all);
    g_free(piece);
    wipe();
}

/* A restore whose commit failed leaves the positions as if the RESET had never been: bytes
 * read across it are the log's records. */
static void test_reset_undo_positions(void)
{
    struct model w = {0}, got = {0};
    uint64_t last;
    struct write_log *l = reopen(&got, 0, 1 << 20, &last);

    put(l, &w, 1, 0, 0, 1, 0x51);
    flush(l, 1);
    uint64_t from = write_log_position(l);
    CHECK(write_log_reset(l, 2) == 0, "reset");
    CHECK(write_log_reset_undo(l) == 0, "undo");
    CHECK(write_log_position(l) == from, "the undone RESET still counts in the positions");
    put(l, &w, 2, 1, 0, 1, 0x52);
    flush(l, 2);
    uint64_t to = write_log_position(l);
    uint8_t *bytes = g_malloc(to);
    CHECK(write_log_read(l, 0, to, bytes) == 0, "read");
    write_log_close(l);
    install(bytes, to);
    memset(&got, 0, sizeof got);
    l = reopen(&got, 0, 1 << 20, &last);
    CHECK(last == 2, "last %llu", (unsigned long long)last);
    expect_same(&got, &w, "the log read across an undone restore");
    write_log_close(l);
    g_free(bytes);
    wipe();
}

int main(void)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *base = g_strdup_printf("%s/wisp-test-write-log.XXXXXX", tmp);

    CHECK(g_mkdtemp(base) != NULL, "mkdtemp");
    snprintf(dir, sizeof dir, "%s/log", base);
    test_replay_and_cut();
    test_torn_tail();
    test_corrupt_record();
    test_other_log();
    test_reset();
    test_retire();
    test_ship();
    test_reset_undo_positions();
    rmdir(dir);
    rmdir(base);
    g_free(base);
    printf("PASS\n");
    return 0;
}
