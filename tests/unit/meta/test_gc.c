/* test_gc: garbage collection's pieces, without servers (a file:// store in a temporary
 * directory).
 *
 *  - durations: "3600", "90s", "30m", "1h", "2d" and "0" parse; "", "h", "-1", "1.5h", "1hh",
 *    " 1h", "1H", 21 digits and more than ten years do not; the formatter gives the shortest
 *    exact form;
 *  - chunk keys: only "chunks/" and 64 lower-case hex digits;
 *  - the hash set: 200,000 hashes in, each found once, others not, the zero hash refused;
 *  - the reference walk: three versions sharing pages (a head, a checkpoint of an older head,
 *    a clone of that checkpoint) read each distinct page once (pages == rows of map_pages,
 *    and the shared references are counted), and the set is exactly the union of the versions'
 *    maps as meta_map_load gives them; a damaged page fails the walk with -EBADMSG and a
 *    missing one with -ENOENT;
 *  - a run: with objects backdated (the file store's mtime is the file's), a dry run deletes
 *    nothing and counts what it would; a grace longer than the objects' age keeps them; a
 *    grace between their ages deletes only the older; grace 0 deletes exactly the unreferenced
 *    objects and leaves the referenced ones and the keys that are no chunk keys; after a
 *    checkpoint is deleted, the chunks only it referenced go and the ones the head shares stay;
 *    a referenced object removed by hand is reported missing; two runs at once on two
 *    connections both succeed and together delete each object once (the other sees it gone). */
#include "chunk_gc.h"
#include "meta.h"
#include "meta_refs.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
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

static void test_log_sink(enum wisp_log_level level, const char *module, const char *msg)
{
    if (getenv("WISP_TEST_VERBOSE"))
        fprintf(stderr, "log: %s: %s\n", module, msg);
}

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

/* The content of test chunk n (4 KiB) and its hash. */
static void chunk_content(uint32_t n, uint8_t *buf, size_t len, struct chunk_hash *h)
{
    uint64_t s = n * 0x9e3779b97f4a7c15u + 1;

    for (size_t i = 0; i < len; i += 8) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        memcpy(buf + i, &s, 8);
    }
    REQUIRE(hash_sha256(buf, len, h->b) == 0);
}

static struct chunk_hash chunk_n(uint32_t n)
{
    uint8_t buf[4096];
    struct chunk_hash h;

    chunk_content(n, buf, sizeof buf, &h);
    return h;
}

/* ---- durations and keys ---------------------------------------------------------------------- */

static void test_durations(void)
{
    static const struct {
        const char *text;
        uint64_t seconds;
    } good[] = {{"3600", 3600}, {"90s", 90},    {"30m", 1800},
                {"1h", 3600},   {"2d", 172800}, {"0", 0},
                {"0s", 0},      {"007", 7},     {"3650d", 3650 * UINT64_C(86400)}};
    static const char *const bad[] = {
        "",      "h",      "-1",  "1.5h", "1hh", " 1h",
        "1h ",   "1H",     "abc", "+5",   "1e3", "123456789012345678901",
        "3651d", "87601h", "1 h", "0x10", "1w"};
    char buf[32];
    uint64_t v;

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        v = 12345;
        CHECK(chunk_gc_parse_duration(good[i].text, &v) == 0);
        if (v != good[i].seconds)
            fprintf(stderr, "duration '%s': %" PRIu64 "\n", good[i].text, v);
        CHECK(v == good[i].seconds);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 12345;
        if (chunk_gc_parse_duration(bad[i], &v) != -EINVAL) {
            fprintf(stderr, "duration '%s' was accepted\n", bad[i]);
            check_failures++;
        }
        CHECK(v == 12345);
    }
    CHECK(chunk_gc_parse_duration(NULL, &v) == -EINVAL);

    static const struct {
        uint64_t seconds;
        const char *text;
    } fmt[] = {{0, "0s"},      {90, "90s"},   {1800, "30m"},   {3600, "1h"},
               {172800, "2d"}, {5400, "90m"}, {3601, "3601s"}, {90000, "25h"}};
    for (size_t i = 0; i < sizeof fmt / sizeof fmt[0]; i++) {
        chunk_gc_format_duration(fmt[i].seconds, buf, sizeof buf);
        if (strcmp(buf, fmt[i].text) != 0)
            fprintf(stderr, "format %" PRIu64 ": '%s', expected '%s'\n", fmt[i].seconds, buf,
                    fmt[i].text);
        CHECK(strcmp(buf, fmt[i].text) == 0);
        CHECK(chunk_gc_parse_duration(buf, &v) == 0 && v == fmt[i].seconds);
    }
}

static void test_keys(void)
{
    struct chunk_hash h = chunk_n(1), got;
    char hex[2 * CHUNK_HASH_LEN + 1], key[128];

    chunk_hash_to_hex(&h, hex);
    snprintf(key, sizeof key, "chunks/%s", hex);
    CHECK(chunk_gc_key_parse(key, &got) && memcmp(&got, &h, sizeof h) == 0);
    snprintf(key, sizeof key, "chunks/%s0", hex); /* 65 digits */
    CHECK(!chunk_gc_key_parse(key, &got));
    snprintf(key, sizeof key, "chunks/%.63s", hex);
    CHECK(!chunk_gc_key_parse(key, &got));
    snprintf(key, sizeof key, "chunks/%s/x", hex);
    CHECK(!chunk_gc_key_parse(key, &got));
    snprintf(key, sizeof key, "chunkz/%s", hex);
    CHECK(!chunk_gc_key_parse(key, &got));
    snprintf(key, sizeof key, "chunks/%s", hex);
    key[7] = 'A'; /* upper case: not a name writers make */
    CHECK(!chunk_gc_key_parse(key, &got));
    key[7] = 'g';
    CHECK(!chunk_gc_key_parse(key, &got));
    CHECK(!chunk_gc_key_parse("chunks/", &got));
    CHECK(!chunk_gc_key_parse("", &got));
}

static void test_hash_set(void)
{
    const uint32_t n = 200000;
    struct hash_set *s = hash_set_new();
    struct chunk_hash zero = {{0}}, h;

    REQUIRE(s != NULL);
    for (uint32_t i = 0; i < n; i++) {
        memset(&h, 0, sizeof h);
        memcpy(h.b + 24, &i, sizeof i); /* low bits of the first 8 bytes all zero */
        h.b[31] = 1;
        REQUIRE(hash_set_add(s, &h) == 1);
    }
    CHECK(hash_set_count(s) == n);
    for (uint32_t i = 0; i < n; i++) {
        memset(&h, 0, sizeof h);
        memcpy(h.b + 24, &i, sizeof i);
        h.b[31] = 1;
        CHECK(hash_set_contains(s, &h));
        CHECK(hash_set_add(s, &h) == 0);
        h.b[31] = 2;
        CHECK(!hash_set_contains(s, &h));
    }
    CHECK(hash_set_count(s) == n);
    CHECK(hash_set_add(s, &zero) == -EINVAL);
    CHECK(!hash_set_contains(s, &zero));
    hash_set_free(s);
}

/* ---- the reference walk --------------------------------------------------------------------- */

struct union_ctx {
    struct hash_set *all;
};

static int union_add(uint64_t idx, const struct chunk_hash *h, void *opaque)
{
    return hash_set_add(((struct union_ctx *)opaque)->all, h) < 0 ? -ENOMEM : 0;
}

static int union_check(uint64_t idx, const struct chunk_hash *h, void *opaque)
{
    CHECK(meta_refs_contains(opaque, h));
    return 0;
}

/* Every chunk of the version root of d is in refs, and counted in all. */
static void check_version(struct meta *m, const struct meta_disk *d, const struct chunk_hash *root,
                          struct meta_refs *refs, struct hash_set *all)
{
    struct meta_disk v = *d;
    struct chunk_map *map;
    struct union_ctx u = {all};

    v.head_root = *root;
    REQUIRE(meta_map_load(m, &v, &map) == 0);
    REQUIRE(chunk_map_foreach(map, union_add, &u) == 0);
    REQUIRE(chunk_map_foreach(map, union_check, refs) == 0);
    chunk_map_free(map);
}

/* Disk "a" (3000 chunks of 64 KiB: three leaves and a root) with chunks 0..29 spread over the
 * leaves, checkpoint "c1", then entries 0-2 of the first leaf rewritten (chunks 100..102);
 * disk "b" a clone of a@c1; disk "e" empty. */
static void make_versions(struct meta *m, struct meta_disk *a, struct meta_disk *b,
                          struct chunk_hash *root1, struct chunk_hash *root2)
{
    struct meta_disk e;
    struct chunk_map *map;

    REQUIRE(meta_disk_create(m, "a", 3000 * 65536ull, 65536, a) == 0);
    REQUIRE(meta_disk_create(m, "e", 100 * 65536ull, 65536, &e) == 0);
    map = chunk_map_new(3000);
    REQUIRE(map != NULL);
    for (uint32_t i = 0; i < 30; i++) {
        struct chunk_hash h = chunk_n(i);
        REQUIRE(chunk_map_set(map, (uint64_t)i * 97, &h) == 0); /* 0 .. 2813: every leaf */
    }
    REQUIRE(meta_head_commit(m, a->id, map, 1, root1) == 0);
    REQUIRE(meta_checkpoint_create(m, a->id, "c1", root1, "") == 0);
    for (uint32_t i = 0; i < 3; i++) {
        struct chunk_hash h = chunk_n(100 + i);
        REQUIRE(chunk_map_set(map, (uint64_t)i * 97, &h) == 0); /* leaf 0 only */
    }
    REQUIRE(meta_head_commit(m, a->id, map, 2, root2) == 0);
    chunk_map_free(map);
    REQUIRE(meta_disk_get(m, "a", a) == 0);
    REQUIRE(meta_disk_create(m, "b", a->size, a->chunk_size, b) == 0);
    REQUIRE(meta_head_set(m, b->id, root1, 0) == 0);
    REQUIRE(meta_disk_get(m, "b", b) == 0);
}

static void test_refs(void)
{
    struct chunk_hash root1, root2;
    struct meta_refs_stats st;
    struct meta_disk a, b;
    struct meta_refs *refs;
    struct meta *m;
    char dir[300];

    snprintf(dir, sizeof dir, "%s/refs", test_dir);
    REQUIRE(meta_open(dir, true, &m) == 0);
    make_versions(m, &a, &b, &root1, &root2);
    REQUIRE(meta_refs_collect(m, &refs) == 0);
    meta_refs_get_stats(refs, &st);
    fprintf(stderr,
            "walk: %" PRIu64 " disks, %" PRIu64 " versions, %" PRIu64 " pages, %" PRIu64
            " shared, %" PRIu64 " chunks\n",
            st.disks, st.versions, st.pages, st.pages_shared, st.chunks);
    /* Versions: a's head, a@c1, b's head, e's (empty) head. */
    CHECK(st.disks == 3);
    CHECK(st.versions == 4);
    /* Pages: root1 + 3 leaves, then root2 + a new first leaf: each read once. */
    CHECK(st.pages == 6);
    CHECK((int64_t)st.pages == raw_sql(dir, "SELECT count(*) FROM map_pages"));
    /* Shared: the second version reaches 2 old leaves from its new root; the third is a
     * root already read. */
    CHECK(st.pages_shared == 3);
    CHECK(st.chunks == 33);

    struct hash_set *all = hash_set_new();
    REQUIRE(all != NULL);
    check_version(m, &a, &root2, refs, all);
    check_version(m, &a, &root1, refs, all);
    check_version(m, &b, &root1, refs, all);
    CHECK(hash_set_count(all) == st.chunks);
    for (uint32_t i = 0; i < 200; i++) {
        struct chunk_hash h = chunk_n(i);
        CHECK(meta_refs_contains(refs, &h) == (i < 30 || (i >= 100 && i < 103)));
    }
    hash_set_free(all);
    meta_refs_free(refs);

    /* Deleting the checkpoint leaves b, which holds root1: the same set. */
    REQUIRE(meta_checkpoint_delete(m, a.id, "c1") == 0);
    REQUIRE(meta_refs_collect(m, &refs) == 0);
    meta_refs_get_stats(refs, &st);
    CHECK(st.chunks == 33 && st.versions == 3 && st.pages == 6 && st.pages_shared == 2);
    meta_refs_free(refs);
    /* Deleting b too: root1's first leaf is gone from every version, and with it chunks 0-2. */
    REQUIRE(meta_disk_delete(m, "b") == 0);
    REQUIRE(meta_refs_collect(m, &refs) == 0);
    meta_refs_get_stats(refs, &st);
    CHECK(st.chunks == 30 && st.versions == 2 && st.pages == 4 && st.pages_shared == 0);
    for (uint32_t i = 0; i < 3; i++) {
        struct chunk_hash h = chunk_n(i);
        CHECK(!meta_refs_contains(refs, &h));
    }
    meta_refs_free(refs);

    /* A partial file flushed locally names its base in the pending journal: that chunk is
     * referenced until the upload, even when no version names it any more. */
    struct chunk_hash base = chunk_n(1);
    const struct meta_pending partial = {.idx = 0,
                                         .gen = a.flush_gen + 100,
                                         .file = "dirty/1/0.1",
                                         .base = &base,
                                         .written = (const uint8_t *)"\x01\x00",
                                         .written_len = 2};
    REQUIRE(meta_pending_put(m, a.id, &partial, 1) == 0);
    REQUIRE(meta_refs_collect(m, &refs) == 0);
    meta_refs_get_stats(refs, &st);
    CHECK(meta_refs_contains(refs, &base) && st.chunks == 31);
    meta_refs_free(refs);
    REQUIRE(meta_pending_clear(m, a.id) == 0);
    meta_close(m);

    /* A damaged page (one byte changed) fails the walk, and so does a missing one. */
    CHECK(raw_sql(dir, "UPDATE map_pages SET data = CAST(data AS BLOB) || x'00'") == -1);
    REQUIRE(meta_open(dir, true, &m) == 0);
    refs = NULL;
    CHECK(meta_refs_collect(m, &refs) == -EBADMSG);
    CHECK(refs == NULL);
    meta_close(m);
    CHECK(raw_sql(dir, "DELETE FROM map_pages") == -1);
    REQUIRE(meta_open(dir, true, &m) == 0);
    CHECK(meta_refs_collect(m, &refs) == -ENOENT);
    /* A transaction open on the connection is refused, not joined. */
    REQUIRE(meta_begin(m) == 0);
    CHECK(meta_refs_collect(m, &refs) == -EINVAL);
    meta_rollback(m);
    meta_close(m);
}

/* ---- runs against a file:// store ------------------------------------------------------------ */

static struct store *gc_store;
static char gc_store_dir[300];

static void put_chunk(uint32_t n, time_t mtime)
{
    uint8_t buf[4096];
    struct chunk_hash h;
    char hex[2 * CHUNK_HASH_LEN + 1], key[80], path[512];

    chunk_content(n, buf, sizeof buf, &h);
    chunk_hash_to_hex(&h, hex);
    snprintf(key, sizeof key, "chunks/%s", hex);
    REQUIRE(store_put(gc_store, key, buf, sizeof buf) == 0);
    /* The file store's mtime is the file's: backdate it, as S3 cannot. */
    snprintf(path, sizeof path, "%s/%s", gc_store_dir, key);
    struct timespec times[2] = {{.tv_sec = mtime}, {.tv_sec = mtime}};
    REQUIRE(utimensat(AT_FDCWD, path, times, 0) == 0);
}

static bool has_chunk(uint32_t n)
{
    struct chunk_hash h = chunk_n(n);
    char hex[2 * CHUNK_HASH_LEN + 1], key[80];
    struct store_stat sb;

    chunk_hash_to_hex(&h, hex);
    snprintf(key, sizeof key, "chunks/%s", hex);
    return store_head(gc_store, key, &sb) == 0;
}

static int count_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    (*(uint64_t *)opaque)++;
    return 0;
}

static uint64_t count_objects(const char *prefix)
{
    uint64_t n = 0;

    REQUIRE(store_list(gc_store, prefix, count_one, &n) == 0);
    return n;
}

static void run_gc(struct meta *m, uint64_t grace, bool dry_run, struct chunk_gc_report *rep)
{
    struct chunk_gc_options o = {.grace_s = grace, .dry_run = dry_run};
    char line[CHUNK_GC_REPORT_MAX];

    REQUIRE(chunk_gc_run(gc_store, m, &o, rep) == 0);
    chunk_gc_format_report(rep, line, sizeof line);
    fprintf(stderr, "gc: %s\n", line);
}

struct concurrent {
    char *dir;
    struct chunk_gc_report rep;
    int r;
};

static void *concurrent_gc(void *opaque)
{
    struct concurrent *c = opaque;
    struct chunk_gc_options o = {.grace_s = 0, .parallel = 4};
    struct meta *m;

    c->r = meta_open(c->dir, false, &m); /* a second connection, as another host's would be */
    if (c->r == 0) {
        c->r = chunk_gc_run(gc_store, m, &o, &c->rep);
        meta_close(m);
    }
    return NULL;
}

static void test_run(void)
{
    struct chunk_hash root1, root2;
    struct chunk_gc_report rep;
    struct meta_disk a, b;
    struct meta *m;
    char dir[300], url[400], line[CHUNK_GC_REPORT_MAX];
    time_t now = time(NULL);
    const time_t old = now - 7200, mid = now - 600;

    snprintf(dir, sizeof dir, "%s/run-meta", test_dir);
    snprintf(gc_store_dir, sizeof gc_store_dir, "%s/store", test_dir);
    REQUIRE(mkdir(gc_store_dir, 0700) == 0);
    snprintf(url, sizeof url, "file://%s", gc_store_dir);
    REQUIRE(store_open(url, NULL, &gc_store) == 0);
    REQUIRE(meta_open(dir, true, &m) == 0);
    make_versions(m, &a, &b, &root1, &root2);

    /* Referenced: 0-29 and 100-102, all old.  Unreferenced: 200-204 old, 300-302 mid-aged. */
    for (uint32_t i = 0; i < 30; i++)
        put_chunk(i, old);
    for (uint32_t i = 100; i < 103; i++)
        put_chunk(i, old);
    for (uint32_t i = 200; i < 205; i++)
        put_chunk(i, old);
    for (uint32_t i = 300; i < 303; i++)
        put_chunk(i, mid);
    /* Not chunk keys: left alone whatever their age. */
    REQUIRE(store_put(gc_store, "chunks/README", "x", 1) == 0);
    REQUIRE(store_put(gc_store,
                      "chunks/0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
                      "x", 1) == 0);
    REQUIRE(store_put(gc_store, "other/keep", "x", 1) == 0);
    CHECK(count_objects("chunks/") == 43);

    run_gc(m, 0, true, &rep);
    CHECK(rep.dry_run && rep.referenced == 33 && rep.objects == 41 && rep.unreferenced == 8);
    CHECK(rep.deleted == 8 && rep.deleted_bytes == 8 * 4096 && rep.kept_young == 0);
    CHECK(rep.foreign == 2 && rep.missing == 0 && rep.failed == 0);
    CHECK(rep.versions == 4 && rep.pages == 6 && rep.pages_shared == 3);
    CHECK(rep.store_time >= now - 5 && rep.store_time <= time(NULL) + 5);
    CHECK(count_objects("chunks/") == 43);
    CHECK(count_objects("gc/") == 0); /* the clock marker is gone */
    chunk_gc_format_report(&rep, line, sizeof line);
    CHECK(strstr(line, "8 chunk objects unreferenced, 8 would be deleted (32.0 KiB), "
                       "0 kept (younger than the grace period 0s); 33 referenced") == line);

    run_gc(m, 3 * 3600, false, &rep); /* longer than every object's age */
    CHECK(rep.unreferenced == 8 && rep.deleted == 0 && rep.kept_young == 8);
    CHECK(rep.kept_young_bytes == 8 * 4096);
    CHECK(count_objects("chunks/") == 43);

    run_gc(m, 3600, false, &rep); /* the old ones go, the mid-aged stay */
    CHECK(rep.unreferenced == 8 && rep.deleted == 5 && rep.kept_young == 3);
    CHECK(count_objects("chunks/") == 38);
    for (uint32_t i = 200; i < 205; i++)
        CHECK(!has_chunk(i));
    for (uint32_t i = 300; i < 303; i++)
        CHECK(has_chunk(i));
    chunk_gc_format_report(&rep, line, sizeof line);
    CHECK(strstr(line, "8 chunk objects unreferenced, 5 deleted (20.0 KiB), 3 kept (younger "
                       "than the grace period 1h); 33 referenced") == line);

    run_gc(m, 0, false, &rep);
    CHECK(rep.deleted == 3 && rep.kept_young == 0 && rep.foreign == 2);
    CHECK(count_objects("chunks/") == 35 && count_objects("other/") == 1);
    for (uint32_t i = 0; i < 30; i++)
        CHECK(has_chunk(i));

    /* The checkpoint alone: b still holds root1, so nothing goes. */
    REQUIRE(meta_checkpoint_delete(m, a.id, "c1") == 0);
    run_gc(m, 0, false, &rep);
    CHECK(rep.deleted == 0 && rep.referenced == 33);
    /* Then b: chunks 0-2, which only root1's first leaf named, go; a's head keeps the rest. */
    REQUIRE(meta_disk_delete(m, "b") == 0);
    run_gc(m, 0, false, &rep);
    CHECK(rep.deleted == 3 && rep.referenced == 30 && rep.missing == 0);
    for (uint32_t i = 0; i < 30; i++)
        CHECK(has_chunk(i) == (i >= 3));
    for (uint32_t i = 100; i < 103; i++)
        CHECK(has_chunk(i));

    /* A referenced object removed behind the GC's back is reported. */
    {
        struct chunk_hash h = chunk_n(10);
        char hex[2 * CHUNK_HASH_LEN + 1], key[80];
        chunk_hash_to_hex(&h, hex);
        snprintf(key, sizeof key, "chunks/%s", hex);
        REQUIRE(store_delete(gc_store, key) == 0);
    }
    run_gc(m, 0, false, &rep);
    CHECK(rep.missing == 1 && rep.deleted == 0);
    chunk_gc_format_report(&rep, line, sizeof line);
    CHECK(strstr(line, "1 referenced chunks missing from the store") != NULL);

    /* Two GCs at once, as on two hosts sharing this metadata: both succeed, each object is
     * deleted once and the other run finds it gone (or deletes a missing object: fine). */
    for (uint32_t i = 400; i < 464; i++)
        put_chunk(i, old);
    meta_close(m);
    struct concurrent c[2] = {{.dir = dir}, {.dir = dir}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&t[i], NULL, concurrent_gc, &c[i]) == 0);
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_join(t[i], NULL) == 0);
    CHECK(c[0].r == 0 && c[1].r == 0);
    fprintf(stderr, "concurrent: deleted %" PRIu64 "+%" PRIu64 ", gone %" PRIu64 "+%" PRIu64 "\n",
            c[0].rep.deleted, c[1].rep.deleted, c[0].rep.already_gone, c[1].rep.already_gone);
    for (int i = 0; i < 2; i++) {
        /* Each saw the 64 (unless the other had already deleted some before its listing). */
        CHECK(c[i].rep.deleted + c[i].rep.already_gone == c[i].rep.unreferenced);
        CHECK(c[i].rep.failed == 0);
    }
    CHECK(c[0].rep.deleted + c[1].rep.deleted >= 64);
    for (uint32_t i = 400; i < 464; i++)
        CHECK(!has_chunk(i));
    CHECK(count_objects("chunks/") == 26 + 3 + 2); /* 3-29 but 10, 100-102, foreign */
    store_close(gc_store);
}

int main(int argc, char **argv)
{
    wisp_log_set_sink(test_log_sink);
    snprintf(test_dir, sizeof test_dir, "%s/wisp-test-gc-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(test_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_durations();
    test_keys();
    test_hash_set();
    test_refs();
    test_run();
    test_cleanup();
    if (check_failures) {
        fprintf(stderr, "%d checks failed\n", check_failures);
        return 1;
    }
    fprintf(stderr, "all checks passed\n");
    return 0;
}
