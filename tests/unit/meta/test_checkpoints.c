/* test_checkpoints: the checkpoints of meta.h in a temporary directory.
 *
 *  - create, get, list (oldest first, seconds apart and within one second) and delete; a
 *    checkpoint keeps its version's map after the head moves on; the list callback's non-zero
 *    return stops it;
 *  - duplicate names on one disk give -EEXIST, the same name on two disks is fine;
 *  - invalid names give -EINVAL (empty, '@', '/', leading '.' or '-', 129 bytes, ...); a
 *    128-byte name is fine; comments up to META_COMMENT_MAX bytes, NULL meaning "";
 *  - unknown checkpoints give -ENOENT on get and delete, and so does a checkpoint of a disk id
 *    that does not exist;
 *  - a checkpoint created in a transaction that rolls back is gone;
 *  - deleting a disk deletes its checkpoints (none left in the table, none seen by a new disk
 *    of the same name, which SQLite gives the same id);
 *  - meta_pending_clear clears one disk's pending rows and no other's;
 *  - a version-1 database (disks, map_pages and pending, user_version 1, made by hand) is
 *    upgraded by meta_open to the version a new database gets: its disks and pending rows are
 *    kept and checkpoints work; reopening it changes nothing.
 *
 * Checked alone with an argument:
 *   v2-without-seq      a version-2 database, whose checkpoints lack the `seq` column, is
 *                       upgraded by meta_open: checkpoints list and create afterwards. */
#include "meta.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "meta_test.h"

static char test_dir[256];

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

/* The library logs every refusal; the lines are printed only with WISP_TEST_VERBOSE. */
static char test_last_log[1024];

static void test_log_sink(enum wisp_log_level level, const char *module, const char *msg)
{
    snprintf(test_last_log, sizeof test_last_log, "%s", msg);
    if (getenv("WISP_TEST_VERBOSE"))
        fprintf(stderr, "log: %s: %s\n", module, msg);
}

static void path_in(char *out, size_t size, const char *sub)
{
    snprintf(out, size, "%s/%s", test_dir, sub);
}

/* Runs SQL on DIR/wisp.db behind meta's back; returns the first column of the first row, or
 * -1 when there is none. */
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

static bool hash_eq(const struct chunk_hash *a, const struct chunk_hash *b)
{
    return memcmp(a->b, b->b, CHUNK_HASH_LEN) == 0;
}

/* ---- listing -------------------------------------------------------------------------------- */

struct listing {
    char names[64][META_DISK_NAME_MAX + 1];
    struct meta_checkpoint last;
    int n;
    int stop_after; /* return 7 after this many calls; 0: never */
};

static int list_one(const struct meta_checkpoint *c, void *opaque)
{
    struct listing *l = opaque;

    if (l->n < 64)
        snprintf(l->names[l->n], sizeof l->names[0], "%s", c->name);
    l->last = *c;
    l->n++;
    return l->stop_after && l->n >= l->stop_after ? 7 : 0;
}

/* The names of a disk's checkpoints in list order, comma-separated, in a static buffer. */
static const char *list_names(struct meta *m, int64_t disk_id)
{
    static char out[4096];
    struct listing l = {0};
    size_t len = 0;

    REQUIRE(meta_checkpoint_list(m, disk_id, list_one, &l) == 0);
    out[0] = '\0';
    for (int i = 0; i < l.n && i < 64; i++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%s%s", i ? "," : "", l.names[i]);
    return out;
}

/* Waits until time(NULL) changes, so that the next checkpoint is created a second later. */
static void next_second(void)
{
    time_t t = time(NULL);
    while (time(NULL) == t)
        usleep(10000);
}

/* ---- the tests ------------------------------------------------------------------------------ */

static void test_create_get_list_delete(struct meta *m)
{
    struct meta_disk d, e;
    struct meta_checkpoint c;
    struct chunk_hash root_a, root_b;

    REQUIRE(meta_disk_create(m, "d", 16 * GiB, 1 << 20, &d) == 0);
    REQUIRE(meta_disk_create(m, "e", 4 * GiB, 1 << 20, &e) == 0);
    CHECK(strcmp(list_names(m, d.id), "") == 0);

    /* Version a: 3000 chunks; a checkpoint of it; then the head moves on to version b. */
    struct chunk_map *map = chunk_map_new(d.size / d.chunk_size);
    REQUIRE(map != NULL);
    for (uint64_t i = 0; i < 3000; i++) {
        struct chunk_hash h = test_hash(i, 1);
        REQUIRE(chunk_map_set(map, i * 3, &h) == 0);
    }
    REQUIRE(meta_head_commit(m, d.id, map, 1, &root_a) == 0);
    time_t before = time(NULL);
    CHECK(meta_checkpoint_create(m, d.id, "a", &root_a, "version a") == 0);
    time_t after = time(NULL);
    for (uint64_t i = 0; i < 100; i++) {
        struct chunk_hash h = test_hash(i, 2);
        REQUIRE(chunk_map_set(map, i * 3, &h) == 0);
    }
    chunk_map_remove(map, 2999 * 3);
    REQUIRE(meta_head_commit(m, d.id, map, 2, &root_b) == 0);
    CHECK(!hash_eq(&root_a, &root_b));

    memset(&c, 0xaa, sizeof c);
    CHECK(meta_checkpoint_get(m, d.id, "a", &c) == 0);
    CHECK(strcmp(c.name, "a") == 0);
    CHECK(hash_eq(&c.root, &root_a));
    CHECK(c.created >= before && c.created <= after);
    CHECK(strcmp(c.comment, "version a") == 0);

    /* The checkpoint still names version a's map, whole. */
    struct meta_disk as_a = d;
    struct chunk_map *loaded = NULL;
    as_a.head_root = c.root;
    CHECK(meta_map_load(m, &as_a, &loaded) == 0);
    if (loaded) {
        CHECK(chunk_map_count(loaded) == 3000);
        struct chunk_hash h, want = test_hash(5, 1);
        CHECK(chunk_map_get(loaded, 15, &h) && hash_eq(&h, &want));
        want = test_hash(2999, 1);
        CHECK(chunk_map_get(loaded, 2999 * 3, &h) && hash_eq(&h, &want));
        chunk_map_free(loaded);
    }
    chunk_map_free(map);

    /* The empty version (all-zero root) can be named too; NULL comment is "". */
    struct chunk_hash zero = {{0}};
    next_second();
    CHECK(meta_checkpoint_create(m, d.id, "b-empty", &zero, NULL) == 0);
    CHECK(meta_checkpoint_get(m, d.id, "b-empty", &c) == 0);
    CHECK(chunk_hash_is_zero(&c.root) && strcmp(c.comment, "") == 0);
    /* Oldest first: "Z" sorts before "a" by name, but comes last. */
    next_second();
    CHECK(meta_checkpoint_create(m, d.id, "Z", &root_b, "") == 0);
    CHECK(strcmp(list_names(m, d.id), "a,b-empty,Z") == 0);

    /* Within one second too: creation order, not name order. */
    struct meta_disk o;
    REQUIRE(meta_disk_create(m, "order", GiB, 1 << 20, &o) == 0);
    next_second();
    CHECK(meta_checkpoint_create(m, o.id, "zz-first", &root_a, NULL) == 0);
    CHECK(meta_checkpoint_create(m, o.id, "mm-second", &root_a, NULL) == 0);
    CHECK(meta_checkpoint_create(m, o.id, "aa-third", &root_a, NULL) == 0);
    CHECK(strcmp(list_names(m, o.id), "zz-first,mm-second,aa-third") == 0);
    /* A name deleted and made again is the newest. */
    CHECK(meta_checkpoint_delete(m, o.id, "zz-first") == 0);
    CHECK(meta_checkpoint_create(m, o.id, "zz-first", &root_a, NULL) == 0);
    CHECK(strcmp(list_names(m, o.id), "mm-second,aa-third,zz-first") == 0);

    /* Another disk's checkpoints are its own, names included. */
    CHECK(meta_checkpoint_create(m, e.id, "a", &root_b, "e's a") == 0);
    CHECK(meta_checkpoint_get(m, e.id, "a", &c) == 0 && hash_eq(&c.root, &root_b));
    CHECK(meta_checkpoint_get(m, d.id, "a", &c) == 0 && hash_eq(&c.root, &root_a));
    CHECK(strcmp(list_names(m, e.id), "a") == 0);
    CHECK(meta_checkpoint_get(m, e.id, "Z", &c) == -ENOENT);

    /* Duplicates. */
    CHECK(meta_checkpoint_create(m, d.id, "a", &root_b, "again") == -EEXIST);
    CHECK(meta_checkpoint_get(m, d.id, "a", &c) == 0 && hash_eq(&c.root, &root_a) &&
          strcmp(c.comment, "version a") == 0);

    /* The callback's non-zero return stops the walk and is returned. */
    struct listing l = {.stop_after = 2};
    CHECK(meta_checkpoint_list(m, d.id, list_one, &l) == 7 && l.n == 2);

    /* Unknown names, and deletes. */
    CHECK(meta_checkpoint_get(m, d.id, "nope", &c) == -ENOENT);
    CHECK(meta_checkpoint_delete(m, d.id, "nope") == -ENOENT);
    CHECK(meta_checkpoint_delete(m, d.id, "b-empty") == 0);
    CHECK(meta_checkpoint_delete(m, d.id, "b-empty") == -ENOENT);
    CHECK(meta_checkpoint_get(m, d.id, "b-empty", &c) == -ENOENT);
    CHECK(strcmp(list_names(m, d.id), "a,Z") == 0);
    CHECK(strcmp(list_names(m, e.id), "a") == 0);
    /* A deleted name can be used again. */
    CHECK(meta_checkpoint_create(m, d.id, "b-empty", &root_a, NULL) == 0);
    CHECK(meta_checkpoint_get(m, d.id, "b-empty", &c) == 0 && hash_eq(&c.root, &root_a));

    /* In a transaction that rolls back, a checkpoint is not made. */
    REQUIRE(meta_begin(m) == 0);
    CHECK(meta_checkpoint_create(m, d.id, "rolled-back", &root_a, NULL) == 0);
    CHECK(meta_checkpoint_get(m, d.id, "rolled-back", &c) == 0);
    meta_rollback(m);
    CHECK(meta_checkpoint_get(m, d.id, "rolled-back", &c) == -ENOENT);
    /* And one that commits, is. */
    REQUIRE(meta_begin(m) == 0);
    CHECK(meta_checkpoint_create(m, d.id, "committed", &root_a, NULL) == 0);
    CHECK(meta_commit(m) == 0);
    CHECK(meta_checkpoint_get(m, d.id, "committed", &c) == 0);
}

static void test_names_and_comments(struct meta *m)
{
    struct meta_disk d;
    struct meta_checkpoint c;
    struct chunk_hash root = test_hash(1, 1);
    char name129[130], name128[129];

    REQUIRE(meta_disk_create(m, "names", GiB, 1 << 20, &d) == 0);
    memset(name129, 'x', 129);
    name129[129] = '\0';
    memset(name128, 'y', 128);
    name128[128] = '\0';
    const char *bad[] = {"",    "@",   "a@b",       "d@",   ".x",  "-x", "a/b",
                         "a b", "a\n", "\xc3\xa9t", "a\\b", "a:b", "a*", name129};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        test_last_log[0] = '\0';
        int r = meta_checkpoint_create(m, d.id, bad[i], &root, NULL);
        if (r != -EINVAL)
            fprintf(stderr, "name '%s': %d, expected -EINVAL\n", bad[i], r);
        CHECK(r == -EINVAL);
        CHECK(test_last_log[0] != '\0'); /* the reason is logged */
    }
    CHECK(strcmp(list_names(m, d.id), "") == 0);
    /* A disk id that does not exist. */
    CHECK(meta_checkpoint_create(m, 424242, "x", &root, NULL) == -ENOENT);
    const char *good[] = {"a", "A.b_c-9", "x.", "0", "a..b", name128};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CHECK(meta_checkpoint_create(m, d.id, good[i], &root, NULL) == 0);
        CHECK(meta_checkpoint_get(m, d.id, good[i], &c) == 0 && strcmp(c.name, good[i]) == 0);
    }

    /* Comments: up to META_COMMENT_MAX bytes, kept exactly. */
    char comment[META_COMMENT_MAX + 2];
    memset(comment, 'c', META_COMMENT_MAX);
    comment[0] = 'C';
    comment[META_COMMENT_MAX - 1] = 'E';
    comment[META_COMMENT_MAX] = '\0';
    CHECK(meta_checkpoint_create(m, d.id, "max-comment", &root, comment) == 0);
    CHECK(meta_checkpoint_get(m, d.id, "max-comment", &c) == 0);
    CHECK(strlen(c.comment) == META_COMMENT_MAX && strcmp(c.comment, comment) == 0);
    comment[META_COMMENT_MAX] = 'x';
    comment[META_COMMENT_MAX + 1] = '\0';
    test_last_log[0] = '\0';
    CHECK(meta_checkpoint_create(m, d.id, "long-comment", &root, comment) == -EINVAL);
    CHECK(strstr(test_last_log, "comment") != NULL);
    CHECK(meta_checkpoint_get(m, d.id, "long-comment", &c) == -ENOENT);
    /* Any bytes but NUL: quotes, newlines, UTF-8. */
    const char *odd = "it's \"quoted\"\nline two\t\xc3\xa9t\xc3\xa9; DROP TABLE checkpoints;--";
    CHECK(meta_checkpoint_create(m, d.id, "odd-comment", &root, odd) == 0);
    CHECK(meta_checkpoint_get(m, d.id, "odd-comment", &c) == 0 && strcmp(c.comment, odd) == 0);
}

static void test_disk_delete_cascades(struct meta *m, const char *dir)
{
    struct meta_disk d, again, other;
    struct meta_checkpoint c;
    struct chunk_hash root = test_hash(7, 7);

    REQUIRE(meta_disk_create(m, "doomed", GiB, 1 << 20, &d) == 0);
    REQUIRE(meta_disk_create(m, "bystander", GiB, 1 << 20, &other) == 0);
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        CHECK(meta_checkpoint_create(m, d.id, name, &root, "doomed") == 0);
    }
    CHECK(meta_checkpoint_create(m, other.id, "keep", &root, NULL) == 0);
    struct meta_pending p = {.idx = 1, .gen = 1, .file = "dirty/x/1.1"};
    CHECK(meta_pending_put(m, d.id, &p, 1) == 0);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM checkpoints WHERE disk_id = %lld",
             (long long)d.id);
    CHECK(raw_sql(dir, sql) == 5);

    CHECK(meta_disk_delete(m, "doomed") == 0);
    CHECK(raw_sql(dir, sql) == 0);
    CHECK(raw_sql(dir, "SELECT count(*) FROM checkpoints WHERE disk_id NOT IN "
                       "(SELECT id FROM disks)") == 0);
    CHECK(meta_checkpoint_get(m, d.id, "c0", &c) == -ENOENT);
    CHECK(strcmp(list_names(m, d.id), "") == 0);
    CHECK(meta_checkpoint_get(m, other.id, "keep", &c) == 0);

    /* A new disk of the same name starts without checkpoints, whatever id it gets. */
    REQUIRE(meta_disk_create(m, "doomed", GiB, 1 << 20, &again) == 0);
    CHECK(strcmp(list_names(m, again.id), "") == 0);
    CHECK(meta_checkpoint_get(m, again.id, "c0", &c) == -ENOENT);
    CHECK(meta_checkpoint_create(m, again.id, "c0", &root, NULL) == 0);

    /* A delete that rolls back keeps them. */
    REQUIRE(meta_begin(m) == 0);
    CHECK(meta_disk_delete(m, "bystander") == 0);
    meta_rollback(m);
    CHECK(meta_checkpoint_get(m, other.id, "keep", &c) == 0);
}

static int count_pending(const struct meta_pending *p, void *opaque)
{
    (*(int *)opaque)++;
    return 0;
}

static int pending_of(struct meta *m, int64_t disk_id)
{
    int n = 0;
    REQUIRE(meta_pending_list(m, disk_id, count_pending, &n) == 0);
    return n;
}

static void test_pending_clear(struct meta *m)
{
    struct meta_disk a, b, d;
    struct meta_pending rows[3] = {
        {.idx = 0, .gen = 3, .file = "dirty/a/0.1"},
        {.idx = 7, .gen = 3, .file = "dirty/a/7.1"},
        {.idx = 9, .gen = 4, .file = "dirty/a/9.2"},
    };

    REQUIRE(meta_disk_create(m, "pa", GiB, 1 << 20, &a) == 0);
    REQUIRE(meta_disk_create(m, "pb", GiB, 1 << 20, &b) == 0);
    CHECK(meta_pending_put(m, a.id, rows, 3) == 0);
    CHECK(meta_pending_put(m, b.id, rows, 2) == 0);
    CHECK(pending_of(m, a.id) == 3 && pending_of(m, b.id) == 2);
    CHECK(meta_pending_clear(m, a.id) == 0);
    CHECK(pending_of(m, a.id) == 0);
    CHECK(pending_of(m, b.id) == 2);
    /* Nothing to clear is not an error. */
    CHECK(meta_pending_clear(m, a.id) == 0);
    CHECK(meta_pending_clear(m, 999999) == 0);
    /* The disk itself, its head and its flush generation are untouched. */
    CHECK(meta_disk_get(m, "pa", &d) == 0 && d.flush_gen == a.flush_gen);
    /* Inside a transaction that rolls back, nothing is cleared. */
    REQUIRE(meta_begin(m) == 0);
    CHECK(meta_pending_clear(m, b.id) == 0);
    CHECK(pending_of(m, b.id) == 0);
    meta_rollback(m);
    CHECK(pending_of(m, b.id) == 2);
    /* The restore pattern: clear and set the head in one transaction. */
    struct chunk_hash root = test_hash(3, 3);
    REQUIRE(meta_begin(m) == 0);
    CHECK(meta_pending_clear(m, b.id) == 0);
    CHECK(meta_head_set(m, b.id, &root, 0) == 0);
    CHECK(meta_commit(m) == 0);
    CHECK(pending_of(m, b.id) == 0);
    CHECK(meta_disk_get(m, "pb", &d) == 0 && hash_eq(&d.head_root, &root));
}

/* A database as a version-1 build made it: meta.c's schema without the checkpoints table. */
static const char schema_v1[] =
    "PRAGMA journal_mode = WAL;"
    "CREATE TABLE disks ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  size INTEGER NOT NULL,"
    "  chunk_size INTEGER NOT NULL,"
    "  head_root BLOB NOT NULL,"
    "  flush_gen INTEGER NOT NULL DEFAULT 0,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE map_pages ("
    "  hash BLOB PRIMARY KEY,"
    "  data BLOB NOT NULL);"
    "CREATE TABLE pending ("
    "  disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL,"
    "  gen INTEGER NOT NULL,"
    "  file TEXT NOT NULL,"
    "  PRIMARY KEY (disk_id, idx)) WITHOUT ROWID;"
    "INSERT INTO disks (name, size, chunk_size, head_root, flush_gen, created)"
    "  VALUES ('old', 1073741824, 1048576, zeroblob(32), 5, 1700000000);"
    "INSERT INTO pending (disk_id, idx, gen, file) VALUES (1, 3, 6, 'dirty/1/3.6');"
    "PRAGMA user_version = 1;";

static void test_upgrade_from_v1(int64_t current_version)
{
    char dir[512], path[600];
    sqlite3 *db = NULL;
    char *msg = NULL;
    struct meta *m = NULL;
    struct meta_disk d;
    struct meta_checkpoint c;

    path_in(dir, sizeof dir, "v1");
    REQUIRE(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/wisp.db", dir);
    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    if (sqlite3_exec(db, schema_v1, NULL, NULL, &msg) != SQLITE_OK)
        fprintf(stderr, "schema v1: %s\n", msg);
    REQUIRE(msg == NULL);
    sqlite3_close(db);
    CHECK(raw_sql(dir, "PRAGMA user_version") == 1);
    CHECK(raw_sql(dir, "SELECT count(*) FROM sqlite_master WHERE name = 'checkpoints'") == 0);

    REQUIRE(meta_open(dir, true, &m) == 0);
    CHECK(meta_disk_get(m, "old", &d) == 0);
    CHECK(d.flush_gen == 5 && d.size == GiB && chunk_hash_is_zero(&d.head_root));
    CHECK(pending_of(m, d.id) == 1);
    struct chunk_hash root = test_hash(1, 2);
    CHECK(meta_checkpoint_create(m, d.id, "first", &root, "after the upgrade") == 0);
    CHECK(meta_checkpoint_get(m, d.id, "first", &c) == 0 && hash_eq(&c.root, &root));
    CHECK(strcmp(list_names(m, d.id), "first") == 0);
    CHECK(meta_checkpoint_create(m, d.id, "first", &root, NULL) == -EEXIST);
    meta_close(m);
    CHECK(raw_sql(dir, "PRAGMA user_version") == current_version);
    CHECK(raw_sql(dir, "SELECT count(*) FROM sqlite_master WHERE name = 'checkpoints'") == 1);
    /* The old row was a whole-chunk file: it reads back as one (no base, no block bitmap). */
    CHECK(raw_sql(dir, "SELECT count(*) FROM pending WHERE base IS NULL AND written IS NULL") == 1);

    /* Reopening the upgraded database keeps everything; deletes cascade to the new table. */
    m = NULL;
    REQUIRE(meta_open(dir, true, &m) == 0);
    CHECK(meta_checkpoint_get(m, d.id, "first", &c) == 0 &&
          strcmp(c.comment, "after the upgrade") == 0);
    CHECK(pending_of(m, d.id) == 1);
    CHECK(meta_disk_delete(m, "old") == 0);
    meta_close(m);
    CHECK(raw_sql(dir, "SELECT count(*) FROM checkpoints") == 0);
    CHECK(raw_sql(dir, "SELECT count(*) FROM pending") == 0);
    CHECK(raw_sql(dir, "PRAGMA user_version") == current_version);
}

/* A version-2 database as the first build with checkpoints (cc395af) wrote it: checkpoints
 * without the seq column, one checkpoint in it. */
static const char schema_v2_without_seq[] =
    "PRAGMA journal_mode = WAL;"
    "CREATE TABLE disks ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  size INTEGER NOT NULL,"
    "  chunk_size INTEGER NOT NULL,"
    "  head_root BLOB NOT NULL,"
    "  flush_gen INTEGER NOT NULL DEFAULT 0,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE map_pages ("
    "  hash BLOB PRIMARY KEY,"
    "  data BLOB NOT NULL);"
    "CREATE TABLE pending ("
    "  disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL,"
    "  gen INTEGER NOT NULL,"
    "  file TEXT NOT NULL,"
    "  PRIMARY KEY (disk_id, idx)) WITHOUT ROWID;"
    "CREATE TABLE checkpoints ("
    "  disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  root BLOB NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  comment TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (disk_id, name)) WITHOUT ROWID;"
    "INSERT INTO disks (name, size, chunk_size, head_root, flush_gen, created)"
    "  VALUES ('old', 1073741824, 1048576, zeroblob(32), 0, 1700000000);"
    "INSERT INTO checkpoints (disk_id, name, root, created, comment)"
    "  VALUES (1, 'before', zeroblob(32), 1700000000, 'made by cc395af');"
    "PRAGMA user_version = 2;";

static void test_v2_without_seq(void)
{
    char dir[512], path[600];
    sqlite3 *db = NULL;
    char *msg = NULL;
    struct meta *m = NULL;
    struct meta_disk d;
    struct meta_checkpoint c;

    path_in(dir, sizeof dir, "v2");
    REQUIRE(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/wisp.db", dir);
    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    if (sqlite3_exec(db, schema_v2_without_seq, NULL, NULL, &msg) != SQLITE_OK)
        fprintf(stderr, "schema v2: %s\n", msg);
    REQUIRE(msg == NULL);
    sqlite3_close(db);

    REQUIRE(meta_open(dir, true, &m) == 0);
    REQUIRE(meta_disk_get(m, "old", &d) == 0);
    test_last_log[0] = '\0';
    CHECK(meta_checkpoint_get(m, d.id, "before", &c) == 0);
    struct listing l = {0};
    int r = meta_checkpoint_list(m, d.id, list_one, &l);
    if (r != 0)
        fprintf(stderr, "list: %d: %s\n", r, test_last_log);
    CHECK(r == 0 && l.n == 1);
    struct chunk_hash root = test_hash(2, 2);
    r = meta_checkpoint_create(m, d.id, "after", &root, NULL);
    if (r != 0)
        fprintf(stderr, "create: %d: %s\n", r, test_last_log);
    CHECK(r == 0);
    if (r == 0)
        CHECK(strcmp(list_names(m, d.id), "before,after") == 0);
    meta_close(m);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "all";
    char dir[512];
    struct meta *m = NULL;

    wisp_log_set_sink(test_log_sink);
    snprintf(test_dir, sizeof test_dir, "%s/wisp-test-ckpt.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    REQUIRE(mkdtemp(test_dir) != NULL);
    path_in(dir, sizeof dir, "meta");
    REQUIRE(meta_open(dir, true, &m) == 0);

    if (strcmp(mode, "v2-without-seq") == 0) {
        test_v2_without_seq();
    } else if (strcmp(mode, "all") == 0) {
        int64_t version = raw_sql(dir, "PRAGMA user_version");
        CHECK(version >= 2);
        test_create_get_list_delete(m);
        test_names_and_comments(m);
        test_disk_delete_cascades(m, dir);
        test_pending_clear(m);
        meta_close(m);
        m = NULL;
        test_upgrade_from_v1(version);
    } else {
        fprintf(stderr, "usage: test_checkpoints [v2-without-seq]\n");
        check_failures++;
    }
    meta_close(m);

    test_cleanup();
    if (check_failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", check_failures);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
