/* test_meta: the metadata database in a temporary directory: disks, head commits and map
 * reloads, pending rows, transactions, reopening, the exclusive lock and the schema version. */
#include "meta.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "meta_test.h"

static char test_dir[256];
static char test_meta_dir[512]; /* the database of the main tests, test_dir/meta */

static void test_cleanup(void)
{
    char cmd[512];

    if (test_dir[0] == '\0')
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", test_dir);
    test_dir[0] = '\0';
}

/* The library logs every refusal; tests provoke many, so the lines are counted, and printed
 * only with WISP_TEST_VERBOSE. */
static unsigned test_log_lines;
static char test_last_log[1024];

static void test_log_sink(enum wisp_log_level level, const char *module, const char *msg)
{
    test_log_lines++;
    snprintf(test_last_log, sizeof test_last_log, "%s", msg);
    if (getenv("WISP_TEST_VERBOSE"))
        fprintf(stderr, "log: %s: %s\n", module, msg);
}

static struct chunk_hash test_hash(uint64_t idx, uint32_t version)
{
    struct chunk_hash h;
    uint64_t s = idx * 0x100000001b3u ^ ((uint64_t)version << 40) ^ 0xcbf29ce484222325u;

    for (int i = 0; i < CHUNK_HASH_LEN; i += 8) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        memcpy(&h.b[i], &s, 8);
    }
    h.b[0] |= 1;
    return h;
}

static uint64_t test_rng = 12345;

static uint64_t test_rand(void)
{
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return test_rng;
}

static void path_in(char *out, size_t size, const char *sub)
{
    snprintf(out, size, "%s/%s", test_dir, sub);
}

/* Runs SQL on DIR/wisp.db behind meta's back (to corrupt it, or to read what meta hides). */
static int64_t raw_sql(const char *dir, const char *sql)
{
    char path[512];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;

    snprintf(path, sizeof path, "%s/wisp.db", dir);
    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
    REQUIRE(st != NULL);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        REQUIRE(rc == SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The head test's final map, which a reopened database must give back. */
static struct chunk_map *test_head_map;

static bool maps_equal(const struct chunk_map *a, const struct chunk_map *b)
{
    uint64_t ia = 0, ib = 0;
    struct chunk_hash ha, hb;

    if (chunk_map_count(a) != chunk_map_count(b) || chunk_map_n_chunks(a) != chunk_map_n_chunks(b))
        return false;
    for (;;) {
        bool na = chunk_map_next(a, ia, &ia, &ha);
        bool nb = chunk_map_next(b, ib, &ib, &hb);
        if (na != nb)
            return false;
        if (!na)
            return true;
        if (ia != ib || memcmp(&ha, &hb, sizeof ha) != 0)
            return false;
        ia++;
        ib++;
    }
}

/* ---- disks ---------------------------------------------------------------------------------- */

static void test_names(void)
{
    char name[200];
    const char *why = NULL;

    CHECK(meta_disk_name_valid("root", &why));
    CHECK(meta_disk_name_valid("a", &why));
    CHECK(meta_disk_name_valid("Sprite_01.disk-b", &why));
    CHECK(meta_disk_name_valid("0abc", NULL));
    CHECK(!meta_disk_name_valid("", &why) && why != NULL);
    CHECK(!meta_disk_name_valid(".hidden", &why));
    CHECK(!meta_disk_name_valid("-opt", &why));
    CHECK(!meta_disk_name_valid("disk@ck", &why) && strstr(why, "@") != NULL);
    CHECK(!meta_disk_name_valid("a/b", &why));
    CHECK(!meta_disk_name_valid("a b", &why));
    CHECK(!meta_disk_name_valid("caf\xc3\xa9", &why));
    memset(name, 'x', 128);
    name[128] = '\0';
    CHECK(meta_disk_name_valid(name, &why));
    name[128] = 'x';
    name[129] = '\0';
    CHECK(!meta_disk_name_valid(name, &why));
}

struct list_acc {
    char names[8][META_DISK_NAME_MAX + 1];
    int n;
    int stop_after;
};

static int list_fn(const struct meta_disk *d, void *opaque)
{
    struct list_acc *acc = opaque;

    if (acc->n < 8)
        snprintf(acc->names[acc->n], sizeof acc->names[0], "%s", d->name);
    acc->n++;
    return acc->stop_after && acc->n == acc->stop_after ? 99 : 0;
}

static void test_disks(struct meta *m)
{
    struct meta_disk d, g;
    struct list_acc acc = {0};
    char long_name[130];
    time_t now = time(NULL);

    CHECK(meta_disk_create(m, "root", 100 * GiB, 64 * 1024, &d) == 0);
    CHECK(d.id > 0 && strcmp(d.name, "root") == 0 && d.size == 100 * GiB &&
          d.chunk_size == 64 * 1024 && d.flush_gen == 0 && chunk_hash_is_zero(&d.head_root));
    CHECK(d.created >= now - 5 && d.created <= now + 5);
    CHECK(meta_disk_get(m, "root", &g) == 0);
    CHECK(g.id == d.id && g.size == d.size && g.chunk_size == d.chunk_size &&
          g.created == d.created && chunk_hash_is_zero(&g.head_root) && g.flush_gen == 0);

    /* Rounded up to whole chunks; the limits. */
    CHECK(meta_disk_create(m, "tiny", 1, 4 << 20, &d) == 0 && d.size == 4 << 20);
    CHECK(meta_disk_create(m, "odd", 64 * 1024 + 1, 64 * 1024, &d) == 0 && d.size == 128 * 1024);
    CHECK(meta_disk_create(m, "huge", UINT64_C(1) << 50, 1 << 20, &d) == 0);
    CHECK(meta_disk_get(m, "huge", &g) == 0 && g.size == UINT64_C(1) << 50);
    CHECK(meta_disk_create(m, "toohuge", (UINT64_C(1) << 50) + 1, 1 << 20, NULL) == -EINVAL);
    CHECK(meta_disk_create(m, "zero", 0, 64 * 1024, NULL) == -EINVAL);
    CHECK(meta_disk_create(m, "max64", UINT64_MAX, 64 * 1024, NULL) == -EINVAL);
    CHECK(meta_disk_create(m, "small", GiB, 32 * 1024, NULL) == -EINVAL);
    CHECK(meta_disk_create(m, "big", GiB, 8 << 20, NULL) == -EINVAL);
    CHECK(meta_disk_create(m, "npot", GiB, 96 * 1024, NULL) == -EINVAL);
    CHECK(meta_disk_create(m, "zerochunk", GiB, 0, NULL) == -EINVAL);
    CHECK(meta_disk_get(m, "zero", &g) == -ENOENT);

    /* Names. */
    CHECK(meta_disk_create(m, "root", GiB, 64 * 1024, NULL) == -EEXIST);
    CHECK(meta_disk_create(m, "a@b", GiB, 64 * 1024, NULL) == -EINVAL);
    CHECK(meta_disk_create(m, "", GiB, 64 * 1024, NULL) == -EINVAL);
    CHECK(meta_disk_create(m, ".x", GiB, 64 * 1024, NULL) == -EINVAL);
    memset(long_name, 'n', 129);
    long_name[129] = '\0';
    CHECK(meta_disk_create(m, long_name, GiB, 64 * 1024, NULL) == -EINVAL);
    long_name[128] = '\0';
    CHECK(meta_disk_create(m, long_name, GiB, 64 * 1024, &d) == 0);
    CHECK(strcmp(d.name, long_name) == 0);
    CHECK(meta_disk_get(m, long_name, &g) == 0 && strcmp(g.name, long_name) == 0);
    CHECK(meta_disk_delete(m, long_name) == 0);
    CHECK(meta_disk_get(m, "a@b", &g) == -EINVAL);
    CHECK(meta_disk_get(m, "nosuch", &g) == -ENOENT);
    CHECK(meta_disk_delete(m, "a/b") == -EINVAL);
    CHECK(meta_disk_delete(m, "nosuch") == -ENOENT);

    /* Listed in name order; a non-zero return stops and comes back. */
    CHECK(meta_disk_list(m, list_fn, &acc) == 0);
    CHECK(acc.n == 4);
    CHECK(strcmp(acc.names[0], "huge") == 0 && strcmp(acc.names[1], "odd") == 0 &&
          strcmp(acc.names[2], "root") == 0 && strcmp(acc.names[3], "tiny") == 0);
    memset(&acc, 0, sizeof acc);
    acc.stop_after = 2;
    CHECK(meta_disk_list(m, list_fn, &acc) == 99 && acc.n == 2);
}

/* ---- maps ----------------------------------------------------------------------------------- */

static struct chunk_map *random_map(uint64_t n_chunks, unsigned entries, uint32_t version)
{
    struct chunk_map *map = chunk_map_new(n_chunks);

    REQUIRE(map != NULL);
    while (chunk_map_count(map) < entries) {
        uint64_t idx = test_rand() % n_chunks;
        struct chunk_hash h = test_hash(idx, version);
        REQUIRE(chunk_map_set(map, idx, &h) == 0);
    }
    return map;
}

static bool reloads_as(struct meta *m, const char *name, const struct chunk_map *want)
{
    struct meta_disk d;
    struct chunk_map *got = NULL;
    bool ok;

    if (meta_disk_get(m, name, &d) != 0 || meta_map_load(m, &d, &got) != 0)
        return false;
    ok = maps_equal(got, want);
    chunk_map_free(got);
    return ok;
}

static void test_head(struct meta *m)
{
    struct meta_disk d;
    struct chunk_map *map, *loaded = NULL;
    struct chunk_hash root, root2;
    int64_t pages;

    REQUIRE(meta_disk_get(m, "root", &d) == 0);
    /* An empty head loads as an empty map of the disk's size. */
    CHECK(meta_map_load(m, &d, &loaded) == 0);
    REQUIRE(loaded != NULL);
    CHECK(chunk_map_count(loaded) == 0 && chunk_map_n_chunks(loaded) == d.size / d.chunk_size);
    chunk_map_free(loaded);

    map = random_map(d.size / d.chunk_size, 10000, 1);
    CHECK(meta_begin(m) == 0);
    CHECK(meta_head_commit(m, d.id, map, 5, &root) == 0);
    CHECK(meta_commit(m) == 0);
    CHECK(meta_disk_get(m, "root", &d) == 0);
    CHECK(memcmp(&d.head_root, &root, sizeof root) == 0 && d.flush_gen == 5);
    CHECK(reloads_as(m, "root", map));
    pages = raw_sql(test_meta_dir, "SELECT count(*) FROM map_pages");
    CHECK(pages > 1000); /* ~1600 leaves over the 100 GiB disk */

    /* A few changes: a few pages more, and the reload still matches. */
    for (int i = 0; i < 5; i++) {
        struct chunk_hash h = test_hash((uint64_t)i * 100000, 2);
        CHECK(chunk_map_set(map, (uint64_t)i * 100000, &h) == 0);
    }
    CHECK(meta_begin(m) == 0);
    CHECK(meta_head_commit(m, d.id, map, 6, &root2) == 0);
    CHECK(meta_commit(m) == 0);
    CHECK(memcmp(&root, &root2, sizeof root) != 0);
    CHECK(raw_sql(test_meta_dir, "SELECT count(*) FROM map_pages") - pages <= 5 + 2 + 1);
    CHECK(reloads_as(m, "root", map));

    /* A commit rolled back by the caller: the head does not move, and after
     * chunk_map_forget_pages the next commit stores every page the new root needs. */
    {
        struct chunk_hash h = test_hash(77, 3);
        CHECK(chunk_map_set(map, 77, &h) == 0);
    }
    CHECK(meta_begin(m) == 0);
    CHECK(meta_head_commit(m, d.id, map, 7, &root) == 0);
    meta_rollback(m);
    chunk_map_forget_pages(map);
    CHECK(meta_disk_get(m, "root", &d) == 0 && d.flush_gen == 6 &&
          memcmp(&d.head_root, &root2, sizeof root2) == 0);
    CHECK(meta_head_commit(m, d.id, map, 7, &root) == 0); /* its own transaction */
    CHECK(reloads_as(m, "root", map));

    /* A head commit to a disk that does not exist fails, and leaves the map ready to store
     * everything again (pages from the failed transaction are gone). */
    {
        struct chunk_hash h = test_hash(78, 3);
        CHECK(chunk_map_set(map, 78, &h) == 0);
    }
    CHECK(meta_head_commit(m, 999999, map, 8, NULL) == -ENOENT);
    CHECK(meta_head_commit(m, d.id, map, 8, &root) == 0);
    CHECK(reloads_as(m, "root", map));

    /* An emptied map commits the zero root. */
    {
        struct chunk_map *empty = chunk_map_new(d.size / d.chunk_size);
        REQUIRE(empty != NULL);
        CHECK(meta_head_commit(m, d.id, empty, 9, &root) == 0);
        CHECK(chunk_hash_is_zero(&root));
        CHECK(meta_disk_get(m, "root", &d) == 0 && chunk_hash_is_zero(&d.head_root));
        CHECK(reloads_as(m, "root", empty));
        chunk_map_free(empty);
    }
    /* Back to the full map for the reopen test. */
    chunk_map_forget_pages(map);
    CHECK(meta_head_commit(m, d.id, map, 10, &root) == 0);
    CHECK(reloads_as(m, "root", map));
    test_head_map = map;
}

/* ---- pending -------------------------------------------------------------------------------- */

struct pending_acc {
    uint64_t idx[16], gen[16];
    char file[16][32];
    bool has_base[16];
    struct chunk_hash base[16];
    size_t written_len[16];
    uint8_t written[16][META_PENDING_WRITTEN_MAX];
    int n;
};

static int pending_fn(const struct meta_pending *p, void *opaque)
{
    struct pending_acc *acc = opaque;

    if (acc->n < 16) {
        acc->idx[acc->n] = p->idx;
        acc->gen[acc->n] = p->gen;
        snprintf(acc->file[acc->n], sizeof acc->file[0], "%s", p->file);
        acc->has_base[acc->n] = p->base != NULL;
        if (p->base)
            acc->base[acc->n] = *p->base;
        acc->written_len[acc->n] = p->written ? p->written_len : 0;
        if (p->written)
            memcpy(acc->written[acc->n], p->written, p->written_len);
    }
    acc->n++;
    return 0;
}

static void test_pending(struct meta *m)
{
    struct meta_disk d;
    struct pending_acc acc;
    struct chunk_map *map;
    const struct meta_pending rows[] = {
        {.idx = 30, .gen = 12, .file = "c/30"},
        {.idx = 10, .gen = 11, .file = "c/10"},
        {.idx = 20, .gen = 11, .file = "c/20"},
    };
    const struct meta_pending again[] = {
        {.idx = 10, .gen = 14, .file = "c/10b"}, /* replaces the row for 10 */
    };

    REQUIRE(meta_disk_get(m, "tiny", &d) == 0);
    CHECK(meta_pending_put(m, d.id, rows, 3) == 0);
    CHECK(meta_pending_put(m, d.id, again, 1) == 0);
    CHECK(meta_pending_put(m, d.id, rows, 0) == 0);
    memset(&acc, 0, sizeof acc);
    CHECK(meta_pending_list(m, d.id, pending_fn, &acc) == 0);
    CHECK(acc.n == 3);
    CHECK(acc.idx[0] == 10 && acc.gen[0] == 14 && strcmp(acc.file[0], "c/10b") == 0);
    CHECK(acc.idx[1] == 20 && acc.gen[1] == 11 && strcmp(acc.file[1], "c/20") == 0);
    CHECK(acc.idx[2] == 30 && acc.gen[2] == 12 && strcmp(acc.file[2], "c/30") == 0);
    CHECK(!acc.has_base[0] && acc.written_len[0] == 0); /* whole-chunk files */

    /* A partial file: its base and block bitmap come back as written; bad ones are refused. */
    struct chunk_hash base;
    memset(base.b, 0xab, sizeof base.b);
    const uint8_t bitmap[2] = {0x81, 0x02};
    const struct meta_pending partial = {
        .idx = 40, .gen = 12, .file = "c/40", .base = &base, .written = bitmap, .written_len = 2};
    CHECK(meta_pending_put(m, d.id, &partial, 1) == 0);
    const struct meta_pending too_long = {
        .idx = 41, .gen = 12, .file = "c/41", .written = bitmap, .written_len = 129};
    CHECK(meta_pending_put(m, d.id, &too_long, 1) == -EINVAL);
    memset(&acc, 0, sizeof acc);
    CHECK(meta_pending_list(m, d.id, pending_fn, &acc) == 0);
    CHECK(acc.n == 4 && acc.idx[3] == 40 && acc.has_base[3] &&
          memcmp(acc.base[3].b, base.b, sizeof base.b) == 0 && acc.written_len[3] == 2 &&
          memcmp(acc.written[3], bitmap, 2) == 0);

    /* A head commit at gen 12 drops rows with gen <= 12, keeps the later one. */
    map = chunk_map_new(d.size / d.chunk_size);
    REQUIRE(map != NULL);
    CHECK(meta_begin(m) == 0);
    CHECK(meta_head_commit(m, d.id, map, 12, NULL) == 0);
    CHECK(meta_commit(m) == 0);
    memset(&acc, 0, sizeof acc);
    CHECK(meta_pending_list(m, d.id, pending_fn, &acc) == 0);
    CHECK(acc.n == 1 && acc.idx[0] == 10 && acc.gen[0] == 14);
    chunk_map_free(map);

    /* Rows of an unknown disk are refused (the foreign key). */
    CHECK(meta_pending_put(m, 999999, rows, 1) < 0);
    /* Another disk's rows are separate. */
    REQUIRE(meta_disk_get(m, "odd", &d) == 0);
    memset(&acc, 0, sizeof acc);
    CHECK(meta_pending_list(m, d.id, pending_fn, &acc) == 0 && acc.n == 0);
    CHECK(meta_pending_put(m, d.id, rows, 1) == 0);
}

struct shipped_acc {
    int n;
    char bytes[4][8];
    uint64_t gen[4];
};

static int shipped_fn(const void *bytes, size_t len, uint64_t max_gen, void *opaque)
{
    struct shipped_acc *a = opaque;
    if (a->n >= 4 || len >= sizeof a->bytes[0])
        return -E2BIG;
    memcpy(a->bytes[a->n], bytes, len);
    a->bytes[a->n][len] = '\0';
    a->gen[a->n++] = max_gen;
    return 0;
}

static int shipped_stop_fn(const void *bytes, size_t len, uint64_t max_gen, void *opaque)
{
    (void)bytes, (void)len, (void)max_gen, (void)opaque;
    return -ECANCELED;
}

/* durability=remote's shipped log rows: kept in order, dropped by commits and by forget. */
static void test_shipped_log(struct meta *m)
{
    struct meta_disk tiny, odd;
    struct shipped_acc acc = {0};

    REQUIRE(meta_disk_get(m, "tiny", &tiny) == 0);
    REQUIRE(meta_disk_get(m, "odd", &odd) == 0);
    /* Before the table exists: nothing, and no error. */
    CHECK(meta_write_log_shipped_any(m, tiny.id) == 0);
    CHECK(meta_write_log_shipped_each(m, tiny.id, shipped_fn, &acc) == 0 && acc.n == 0);
    CHECK(meta_write_log_shipped_drop(m, tiny.id, 100) == 0);

    CHECK(meta_write_log_ship(m, tiny.id, 5, "aaa", 3) == 0);
    CHECK(meta_write_log_ship(m, odd.id, 6, "odd", 3) == 0);
    CHECK(meta_write_log_ship(m, tiny.id, 7, "bb", 2) == 0);
    CHECK(meta_write_log_ship(m, tiny.id, 9, "c", 1) == 0);
    CHECK(meta_write_log_ship(m, 999999, 1, "x", 1) < 0); /* the foreign key */
    CHECK(meta_write_log_shipped_any(m, tiny.id) == 1);
    CHECK(meta_write_log_shipped_each(m, tiny.id, shipped_fn, &acc) == 0);
    CHECK(acc.n == 3 && strcmp(acc.bytes[0], "aaa") == 0 && acc.gen[0] == 5 &&
          strcmp(acc.bytes[1], "bb") == 0 && acc.gen[1] == 7 && strcmp(acc.bytes[2], "c") == 0 &&
          acc.gen[2] == 9);
    CHECK(meta_write_log_shipped_each(m, tiny.id, shipped_stop_fn, NULL) == -ECANCELED);

    /* A commit at gen 7 holds the first two. */
    CHECK(meta_write_log_shipped_drop(m, tiny.id, 7) == 0);
    memset(&acc, 0, sizeof acc);
    CHECK(meta_write_log_shipped_each(m, tiny.id, shipped_fn, &acc) == 0);
    CHECK(acc.n == 1 && strcmp(acc.bytes[0], "c") == 0 && acc.gen[0] == 9);
    /* Forgetting the log drops the rest; the other disk's row stays. */
    CHECK(meta_write_log_forget(m, tiny.id) == 0);
    CHECK(meta_write_log_shipped_any(m, tiny.id) == 0);
    CHECK(meta_write_log_shipped_any(m, odd.id) == 1);
    /* tiny gets one again, which its deletion (test_transactions) must take with it. */
    CHECK(meta_write_log_ship(m, tiny.id, 11, "dd", 2) == 0);
}

static void test_transactions(struct meta *m)
{
    struct meta_disk d;

    CHECK(meta_commit(m) == -EINVAL); /* none open */
    meta_rollback(m);                 /* harmless */
    CHECK(meta_begin(m) == 0);
    CHECK(meta_begin(m) == -EINVAL); /* no nesting */
    CHECK(meta_disk_create(m, "temp", GiB, 64 * 1024, NULL) == 0);
    meta_rollback(m);
    CHECK(meta_disk_get(m, "temp", &d) == -ENOENT);
    CHECK(meta_begin(m) == 0);
    CHECK(meta_disk_create(m, "temp", GiB, 64 * 1024, NULL) == 0);
    CHECK(meta_disk_delete(m, "tiny") == 0); /* inside the caller's transaction */
    CHECK(meta_commit(m) == 0);
    CHECK(meta_disk_get(m, "temp", &d) == 0);
    CHECK(meta_disk_get(m, "tiny", &d) == -ENOENT);
}

/* ---- the directory -------------------------------------------------------------------------- */

static void test_reopen_and_delete(const char *dir)
{
    struct meta *m = NULL;
    struct meta_disk d;
    struct chunk_map *map = NULL;

    /* tiny was deleted with a pending row of its own: none of its rows are left. */
    CHECK(raw_sql(dir, "SELECT count(*) FROM pending") == 1); /* odd's */
    REQUIRE(meta_open(dir, true, &m) == 0);
    CHECK(meta_disk_get(m, "root", &d) == 0 && d.flush_gen == 10);
    CHECK(meta_map_load(m, &d, &map) == 0);
    CHECK(map != NULL && test_head_map != NULL && maps_equal(map, test_head_map));
    chunk_map_free(map);
    chunk_map_free(test_head_map);
    test_head_map = NULL;
    CHECK(meta_disk_get(m, "odd", &d) == 0);
    CHECK(raw_sql(dir, "SELECT count(*) FROM write_log_shipped") == 1); /* odd's */
    CHECK(meta_disk_delete(m, "odd") == 0);
    CHECK(raw_sql(dir, "SELECT count(*) FROM pending") == 0);
    CHECK(raw_sql(dir, "SELECT count(*) FROM write_log_shipped") == 0);
    CHECK(meta_disk_get(m, "odd", &d) == -ENOENT);
    CHECK(meta_disk_delete(m, "odd") == -ENOENT);
    /* Corrupt a stored page: loading says so. */
    CHECK(meta_disk_get(m, "root", &d) == 0);
    raw_sql(dir, "UPDATE map_pages SET data = substr(data, 1, length(data) - 1) || x'00'"
                 " WHERE rowid = (SELECT max(rowid) FROM map_pages)");
    map = NULL;
    CHECK(meta_map_load(m, &d, &map) == -EBADMSG && map == NULL);
    raw_sql(dir, "DELETE FROM map_pages WHERE rowid = (SELECT max(rowid) FROM map_pages)");
    CHECK(meta_map_load(m, &d, &map) == -ENOENT && map == NULL);
    meta_close(m);
}

static void test_lock(const char *dir)
{
    struct meta *a = NULL, *b = NULL, *c = NULL;
    pid_t pid;
    int status;

    REQUIRE(meta_open(dir, true, &a) == 0);
    test_last_log[0] = '\0';
    CHECK(meta_open(dir, true, &b) == -EBUSY && b == NULL);
    CHECK(strstr(test_last_log, "another process") != NULL);
    /* Without exclusive, a reader may open alongside. */
    CHECK(meta_open(dir, false, &c) == 0);
    meta_close(c);

    /* Another process sees the lock too. */
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        struct meta *x = NULL;
        /* The child inherits a's descriptor (and its lock); only a fresh open is tested. */
        _exit(meta_open(dir, true, &x) == -EBUSY ? 0 : 1);
    }
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    meta_close(a);
    CHECK(meta_open(dir, true, &b) == 0);
    meta_close(b);
}

static void test_schema_version(void)
{
    char dir[512];
    struct meta *m = NULL;

    path_in(dir, sizeof dir, "newer");
    REQUIRE(meta_open(dir, false, &m) == 0);
    meta_close(m);
    CHECK(raw_sql(dir, "PRAGMA user_version") == 4);
    CHECK(raw_sql(dir, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'") == 1);
    raw_sql(dir, "PRAGMA user_version = 5");
    m = NULL;
    test_last_log[0] = '\0';
    CHECK(meta_open(dir, true, &m) == -EPROTONOSUPPORT && m == NULL);
    CHECK(strstr(test_last_log, "newer") != NULL);
    /* The refused open released its lock. */
    raw_sql(dir, "PRAGMA user_version = 4");
    CHECK(meta_open(dir, true, &m) == 0);
    meta_close(m);

    /* A file that is not a database. */
    path_in(dir, sizeof dir, "garbage");
    CHECK(mkdir(dir, 0700) == 0);
    {
        char path[600];
        snprintf(path, sizeof path, "%s/wisp.db", dir);
        FILE *f = fopen(path, "w");
        REQUIRE(f != NULL);
        for (int i = 0; i < 200; i++)
            fputs("this is not an SQLite database\n", f);
        fclose(f);
    }
    m = NULL;
    CHECK(meta_open(dir, false, &m) < 0 && m == NULL);
}

int main(void)
{
    char dir[512];
    struct meta *m = NULL;
    struct stat stt;

    wisp_log_set_sink(test_log_sink);
    snprintf(test_dir, sizeof test_dir, "%s/wisp-test-meta.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    REQUIRE(mkdtemp(test_dir) != NULL);

    test_names();
    /* meta_open makes the directory, private. */
    path_in(dir, sizeof dir, "meta");
    snprintf(test_meta_dir, sizeof test_meta_dir, "%s", dir);
    REQUIRE(meta_open(dir, true, &m) == 0);
    CHECK(stat(dir, &stt) == 0 && (stt.st_mode & 0777) == 0700);
    CHECK(raw_sql(dir, "PRAGMA user_version") == 4);
    test_disks(m);
    test_head(m);
    test_pending(m);
    test_shipped_log(m);
    test_transactions(m);
    meta_close(m);
    test_reopen_and_delete(dir);
    test_lock(dir);
    test_schema_version();

    test_cleanup();
    if (check_failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", check_failures);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
