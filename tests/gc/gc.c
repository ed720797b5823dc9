/* gc: garbage collection of chunk objects (`wisp disk gc`, the server's periodic GC), with a
 * real nbdkit and a real store, checked by counting the store's objects and reading disks back
 * byte for byte after restarts with an empty cache (so that every chunk comes from the store).
 *
 * The server runs with durability=remote (a flush uploads and commits) and gc-grace=1m.  Disks
 * are written in whole chunks of random data, so the chunks each version holds are known.
 *
 *  - a clone c of disk base gets 10 chunks of its own, checkpoint k1, 5 more, checkpoint k2,
 *    and 3 of the first 10 rewritten.  Deleting k1 frees nothing (k2 holds all it held);
 *    deleting k2 frees exactly the 3 rewritten chunks, and c's head, which shares the rest,
 *    reads back whole after a restart with an empty cache.  After c is deleted: --dry-run
 *    counts its 15 chunks and deletes none, a grace of 1h keeps them all (young), and grace 0
 *    deletes exactly those 15 (count and bytes); base reads back whole from the store;
 *  - a GC that runs while a writer's round is paused between its uploads and its commit
 *    (WISP_TEST_COMMIT_DELAY_MS=3000) with a grace longer than the pause sees the writer's new
 *    chunks unreferenced but young and deletes none; after a restart with an empty cache the
 *    disk reads them back.  With grace 0 (--force) the same GC deletes them: the grace is
 *    what protects uploads in flight, and the next GC reports them missing;
 *  - a dedup hit on an object younger than the refresh age (30 s here) leaves its mtime alone;
 *    with WISP_TEST_GC_REFRESH_AGE=0 a dedup hit stores the object again: its mtime moves
 *    forward and the cache counts a refresh;
 *  - two servers on one store, each with its own metadata and replica name: a GC on the
 *    second deletes nothing the first's disks reference (it reads the first's replica), and
 *    frees a disk's chunks once the first deleted the disk;
 *  - the periodic GC (gc-interval=1, gc-grace=4s) frees a deleted disk's chunks on its own;
 *  - offline, `wisp disk gc --meta DIR --store URL` works, and refuses to run without --store.
 *
 * Checked on file:// only (they do not depend on the store):
 *  - messages: --grace 5x, a grace below gc-grace without --force (names --force), and bad
 *    gc-grace= / gc-interval= values at start-up (named).
 *
 * With the argument "s3", on the radosgw of tests/s3/rgw-fixture (skipped without it). */
#include "vt.h"

#include "chunk_map.h"
#include "hash.h"
#include "store.h"

#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DISK_SIZE (16 * MiB)
#define CHUNK     (64 * 1024)

static struct ws_server *srv;
static struct store *st; /* the server's store, opened by the test to count and stat objects */

/* ---- the store, seen from the test ----------------------------------------------------------- */

static int count_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    (*(int64_t *)opaque)++;
    return 0;
}

static int64_t count_chunks(void)
{
    int64_t n = 0;

    if (store_list(st, "chunks/", count_one, &n) < 0)
        WS_FAIL("list chunks/: %s", store_last_error());
    return n;
}

static void key_of(const struct chunk_hash *h, char key[80])
{
    char hex[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(h, hex);
    snprintf(key, 80, "chunks/%s", hex);
}

/* The object's mtime, or -1 if it does not exist. */
static time_t chunk_mtime(const struct chunk_hash *h)
{
    struct store_stat sb;
    char key[80];
    int r;

    key_of(h, key);
    r = store_head(st, key, &sb);
    if (r == -ENOENT)
        return -1;
    if (r < 0)
        WS_FAIL("head %s: %s", key, store_last_error());
    return sb.mtime;
}

/* Store mtimes have whole seconds: wait until a new second starts, so that everything written
 * before is strictly older than a GC's T0 from now on. */
static void next_second(void)
{
    time_t t = time(NULL);

    while (time(NULL) <= t)
        usleep(20000);
}

/* ---- writing whole chunks -------------------------------------------------------------------- */

/* Writes n whole chunks of random data (seeds seed, seed+1, ...) at chunk first.., mirrors
 * them into shadow, records their hashes in hashes (if not NULL), and flushes. */
static void write_chunks(const char *disk, uint8_t *shadow, uint64_t first, int n, uint64_t seed,
                         struct chunk_hash *hashes)
{
    struct nbd_handle *h = ws_connect(srv, disk);
    uint8_t *buf = g_malloc(CHUNK);

    for (int i = 0; i < n; i++) {
        uint64_t off = (first + (uint64_t)i) * CHUNK;
        ws_fill_random(buf, CHUNK, seed + (uint64_t)i);
        WS_NBD(nbd_pwrite(h, buf, CHUNK, off, 0));
        if (shadow)
            memcpy(shadow + off, buf, CHUNK);
        if (hashes && hash_sha256(buf, CHUNK, hashes[i].b) < 0)
            WS_FAIL("sha256");
    }
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);
    g_free(buf);
}

struct writer {
    const char *disk;
    uint8_t *shadow;
    uint64_t first;
    int n;
    uint64_t seed;
};

static void *writer_run(void *opaque)
{
    struct writer *w = opaque;

    write_chunks(w->disk, w->shadow, w->first, w->n, w->seed, NULL);
    return NULL;
}

static void chunk_hashes(int n, uint64_t seed, struct chunk_hash *out)
{
    uint8_t *buf = g_malloc(CHUNK);

    for (int i = 0; i < n; i++) {
        ws_fill_random(buf, CHUNK, seed + (uint64_t)i);
        if (hash_sha256(buf, CHUNK, out[i].b) < 0)
            WS_FAIL("sha256");
    }
    g_free(buf);
}

/* Waits until every one of the n chunks is in the store. */
static void wait_uploaded(const struct chunk_hash *h, int n)
{
    double t = ws_now();

    for (int i = 0; i < n; i++) {
        while (chunk_mtime(&h[i]) < 0) {
            if (ws_now() - t > 30)
                WS_FAIL("chunk %d of the writer is not in the store after 30 s", i);
            usleep(20000);
        }
    }
}

/* ---- the GC through the CLI -------------------------------------------------------------------
 */

/* `wisp disk gc --json ARGS...`, which must succeed; returns the report. */
#define GC(...)            gc_at(__LINE__, srv, VT_ARGS("disk", "gc", "--json", __VA_ARGS__))
#define GC_ON(server, ...) gc_at(__LINE__, (server), VT_ARGS("disk", "gc", "--json", __VA_ARGS__))

static JsonNode *gc_at(int line, struct ws_server *server, const char *const *args)
{
    char *out = vt_cli_ok_at(__FILE__, line, server, args);
    JsonNode *report = vt_json(out);

    g_free(out);
    return report;
}

static int64_t num(JsonNode *report, const char *name)
{
    return ws_json_int(report, name);
}

static void log_report(const char *what, JsonNode *r)
{
    ws_log("%s: %" PRId64 " unreferenced, %" PRId64 " deleted (%" PRId64 " bytes), %" PRId64
           " kept young, %" PRId64 " referenced, %" PRId64 " missing; %" PRId64
           " versions, %" PRId64 " pages (%" PRId64 " shared)",
           what, num(r, "unreferenced"), num(r, "deleted"), num(r, "deleted_bytes"),
           num(r, "kept_young"), num(r, "referenced"), num(r, "missing"), num(r, "versions"),
           num(r, "pages"), num(r, "pages_shared"));
}

static void restart_empty_cache(void)
{
    ws_server_stop(srv);
    ws_server_wipe_cache(srv);
    ws_server_start(srv);
}

/* ---- the parts ------------------------------------------------------------------------------- */

static uint8_t *base;

static void check_clone_and_checkpoints(void)
{
    uint8_t *c = ws_shadow_new(DISK_SIZE);
    JsonNode *r;

    ws_disk_create(srv, "base", "16M", "64K");
    write_chunks("base", base, 0, 32, 1000, NULL);
    g_free(VT_CLI_OK(srv, "disk", "clone", "base", "c"));
    memcpy(c, base, DISK_SIZE);
    write_chunks("c", c, 32, 10, 2000, NULL);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "c", "k1"));
    write_chunks("c", c, 42, 5, 3000, NULL);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "c", "k2"));
    write_chunks("c", c, 32, 3, 4000, NULL); /* rewrites 3 of k1's (and k2's) */
    int64_t all = count_chunks();
    WS_CHECK(all == 32 + 10 + 5 + 3, "%" PRId64 " chunk objects", all);
    next_second();

    r = GC("--grace", "0", "--force");
    log_report("everything referenced", r);
    WS_CHECK(num(r, "unreferenced") == 0 && num(r, "deleted") == 0 && num(r, "referenced") == all,
             "a GC with nothing deleted found garbage");
    WS_CHECK(num(r, "versions") == 4, "base, c, c@k1, c@k2: %" PRId64, num(r, "versions"));
    json_node_unref(r);

    /* k1 alone: k2 holds every chunk k1 held. */
    g_free(VT_CLI_OK(srv, "disk", "checkpoint-delete", "c", "k1"));
    r = GC("--grace", "0", "--force");
    WS_CHECK(num(r, "deleted") == 0 && num(r, "unreferenced") == 0, "k1 freed something");
    json_node_unref(r);
    WS_CHECK(count_chunks() == all, "objects went");

    /* k2: the 3 chunks rewritten in the head were only k2's. */
    g_free(VT_CLI_OK(srv, "disk", "checkpoint-delete", "c", "k2"));
    r = GC("--grace", "0", "--force");
    log_report("after deleting k2", r);
    WS_CHECK(num(r, "deleted") == 3 && num(r, "deleted_bytes") == 3 * CHUNK, "k2 freed %" PRId64,
             num(r, "deleted"));
    json_node_unref(r);
    WS_CHECK(count_chunks() == all - 3, "%" PRId64 " objects", count_chunks());
    restart_empty_cache();
    vt_compare(srv, "c", c, DISK_SIZE, CHUNK);
    vt_compare(srv, "base", base, DISK_SIZE, CHUNK);
    ws_log("deleting a checkpoint frees what only it referenced; the head keeps the rest");

    /* The clone itself: its 15 remaining chunks of its own. */
    g_free(VT_CLI_OK(srv, "disk", "delete", "c"));
    next_second();
    r = GC("--dry-run", "--grace", "0", "--force");
    log_report("dry run", r);
    WS_CHECK(num(r, "unreferenced") == 15 && num(r, "deleted") == 15, "dry run counts");
    WS_CHECK(json_object_get_boolean_member(json_node_get_object(r), "dry_run"), "dry_run");
    json_node_unref(r);
    WS_CHECK(count_chunks() == all - 3, "the dry run deleted objects");
    r = GC("--grace", "1h");
    WS_CHECK(num(r, "unreferenced") == 15 && num(r, "kept_young") == 15 && num(r, "deleted") == 0,
             "a grace of 1h deleted young chunks");
    json_node_unref(r);
    WS_CHECK(count_chunks() == all - 3, "grace 1h deleted objects");
    /* The human form. */
    char *out = VT_CLI_OK(srv, "disk", "gc", "--dry-run", "--grace", "0", "--force");
    ws_log("%s", g_strchomp(out));
    WS_CHECK(strstr(out, "gc (dry run): 15 chunk objects unreferenced, 15 would be deleted (960.0 "
                         "KiB), 0 kept (younger than the grace period 0s); 32 referenced") == out,
             "%s", out);
    g_free(out);
    r = GC("--grace", "0", "--force");
    log_report("after deleting c", r);
    WS_CHECK(num(r, "deleted") == 15 && num(r, "deleted_bytes") == 15 * CHUNK, "c freed %" PRId64,
             num(r, "deleted"));
    WS_CHECK(num(r, "referenced") == 32, "%" PRId64 " referenced", num(r, "referenced"));
    json_node_unref(r);
    WS_CHECK(count_chunks() == 32, "%" PRId64 " objects left", count_chunks());
    restart_empty_cache();
    vt_compare(srv, "base", base, DISK_SIZE, CHUNK);
    ws_log("deleting the clone freed exactly its 18 chunks; base reads back whole");
    ws_shadow_free(c, DISK_SIZE);
}

static void check_uploads_in_flight(void)
{
    struct chunk_hash fresh[8], doomed[4];
    struct writer w = {"base", base, 64, 8, 5000};
    uint8_t *victim = ws_shadow_new(DISK_SIZE);
    pthread_t t;
    JsonNode *r;

    ws_server_stop(srv);
    setenv("WISP_TEST_COMMIT_DELAY_MS", "3000", 1);
    ws_server_start(srv);
    unsetenv("WISP_TEST_COMMIT_DELAY_MS");

    chunk_hashes(8, 5000, fresh);
    if (pthread_create(&t, NULL, writer_run, &w) != 0)
        WS_FAIL("pthread_create");
    wait_uploaded(fresh, 8);
    next_second(); /* so that grace 0 would see them as old enough */
    r = GC("--grace", "60");
    log_report("while the writer waits to commit", r);
    WS_CHECK(num(r, "unreferenced") >= 8 && num(r, "kept_young") >= 8 && num(r, "deleted") == 0,
             "the GC deleted a chunk in flight");
    json_node_unref(r);
    for (int i = 0; i < 8; i++)
        WS_CHECK(chunk_mtime(&fresh[i]) >= 0, "chunk %d of the writer is gone", i);
    pthread_join(t, NULL);

    /* The same with grace 0: the chunks in flight are deletable by definition. */
    ws_disk_create(srv, "victim", "16M", "64K");
    struct writer v = {"victim", victim, 0, 4, 6000};
    chunk_hashes(4, 6000, doomed);
    if (pthread_create(&t, NULL, writer_run, &v) != 0)
        WS_FAIL("pthread_create");
    wait_uploaded(doomed, 4);
    next_second();
    r = GC("--grace", "0", "--force");
    log_report("grace 0 while the writer waits", r);
    WS_CHECK(num(r, "deleted") == 4, "grace 0 deleted %" PRId64 " of 4", num(r, "deleted"));
    json_node_unref(r);
    pthread_join(t, NULL);
    r = GC("--dry-run");
    WS_CHECK(num(r, "missing") == 4, "%" PRId64 " missing", num(r, "missing"));
    json_node_unref(r);
    g_free(VT_CLI_OK(srv, "disk", "delete", "victim"));
    ws_log("grace 0 deletes the chunks of a round in flight, which the next GC reports missing");

    restart_empty_cache();
    vt_compare(srv, "base", base, DISK_SIZE, CHUNK);
    ws_log("with a grace longer than the upload-to-commit time, the writer's chunks survive");
    ws_shadow_free(victim, DISK_SIZE);
}

static void check_dedup_refresh(void)
{
    struct chunk_hash x;
    JsonNode *s;

    write_chunks("base", base, 80, 1, 7000, &x);
    time_t m1 = chunk_mtime(&x);
    WS_CHECK(m1 > 0, "not uploaded");
    next_second();
    /* The same content elsewhere: a dedup hit on a young object is left alone. */
    write_chunks("base", base, 81, 1, 7000, NULL);
    WS_CHECK(chunk_mtime(&x) == m1, "a young dedup hit was stored again");
    s = ws_disk_stats(srv, "base");
    WS_CHECK(ws_json_int(s, "cache.refreshes") == 0, "refreshes");
    json_node_unref(s);

    ws_server_stop(srv);
    setenv("WISP_TEST_GC_REFRESH_AGE", "0", 1);
    ws_server_start(srv);
    unsetenv("WISP_TEST_GC_REFRESH_AGE");
    next_second();
    write_chunks("base", base, 82, 1, 7000, NULL);
    time_t m2 = chunk_mtime(&x);
    ws_log("dedup hit with refresh age 0: mtime %lld -> %lld", (long long)m1, (long long)m2);
    WS_CHECK(m2 > m1, "the dedup hit did not refresh the object (mtime %lld, was %lld)",
             (long long)m2, (long long)m1);
    s = ws_disk_stats(srv, "base");
    WS_CHECK(ws_json_int(s, "cache.refreshes") == 1, "refreshes %" PRId64,
             ws_json_int(s, "cache.refreshes"));
    json_node_unref(s);
    vt_compare(srv, "base", base, DISK_SIZE, CHUNK);
}

/* Whether every chunk of hashes is in the store (all), or none is (!all). */
static bool chunks_present(const struct chunk_hash *hashes, int n, bool all)
{
    for (int i = 0; i < n; i++)
        if ((chunk_mtime(&hashes[i]) >= 0) != all)
            return false;
    return true;
}

/* A second host (b: its own metadata and cache, replica "hostb") on the store of the first
 * (srv, replica "default").  b's GC reads srv's replica: with a grace of 0 it deletes nothing
 * srv's disks reference; once srv deleted a disk (and shipped that), b's GC frees its chunks.
 * Without the replicas, b's GC would see no disk at all and delete every chunk. */
static void check_two_hosts(enum ws_store_kind kind)
{
    struct ws_server *b = ws_server_new(kind);
    struct chunk_hash only_a[6];
    JsonNode *r;

    ws_server_share_store(b, srv);
    ws_server_set(b, "durability", "remote");
    ws_server_set(b, "stats-interval", "0");
    ws_server_set(b, "gc-interval", "0");
    ws_server_set(b, "gc-grace", "1m");
    ws_server_set(b, "replica", "hostb");
    ws_disk_create(srv, "only-a", "16M", "64K");
    uint8_t *shadow = ws_shadow_new(DISK_SIZE);
    write_chunks("only-a", shadow, 0, 6, 9000, only_a); /* durability=remote: replica shipped */
    ws_server_start(b);

    /* b has no disk of its own: every reference it keeps comes from srv's replica. */
    r = GC_ON(b, "--grace", "0", "--force");
    log_report("b's gc with srv's disks in its replica", r);
    WS_CHECK(num(r, "replicas") == 1, "b read %" PRId64 " replicas, not srv's one",
             num(r, "replicas"));
    WS_CHECK(num(r, "missing") == 0 && num(r, "referenced") >= 6,
             "b's gc: referenced %" PRId64 ", missing %" PRId64, num(r, "referenced"),
             num(r, "missing"));
    json_node_unref(r);
    WS_CHECK(chunks_present(only_a, 6, true), "b's gc deleted chunks of srv's disk only-a");
    r = GC("--dry-run", "--grace", "0", "--force");
    WS_CHECK(num(r, "missing") == 0, "srv misses %" PRId64 " chunks after b's gc",
             num(r, "missing"));
    json_node_unref(r);
    restart_empty_cache();
    vt_compare(srv, "only-a", shadow, DISK_SIZE, CHUNK);

    /* srv deletes only-a and ships that within replicate-interval: b's GC then frees it. */
    g_free(VT_CLI_OK(srv, "disk", "delete", "only-a"));
    double t = ws_now();
    for (;;) {
        r = GC_ON(b, "--grace", "0", "--force");
        bool freed = num(r, "deleted") >= 6;
        json_node_unref(r);
        if (freed || ws_now() - t > 20)
            break;
        usleep(200000);
    }
    WS_CHECK(chunks_present(only_a, 6, false), "b's gc did not free the deleted only-a");
    ws_log("b's gc freed srv's deleted disk %.1f s after the delete", ws_now() - t);
    r = GC("--dry-run", "--grace", "0", "--force");
    WS_CHECK(num(r, "missing") == 0, "srv misses %" PRId64 " chunks", num(r, "missing"));
    json_node_unref(r);
    vt_compare(srv, "base", base, DISK_SIZE, CHUNK);
    ws_server_stop(b);
    ws_shadow_free(shadow, DISK_SIZE);
}

static void check_periodic(void)
{
    ws_server_stop(srv);
    ws_server_set(srv, "gc-interval", "1");
    ws_server_set(srv, "gc-grace", "4s"); /* uploads commit within 2 s: room on a busy machine */
    ws_server_start(srv);
    int64_t before = count_chunks();
    ws_disk_create(srv, "tmp", "16M", "64K");
    write_chunks("tmp", NULL, 0, 4, 8000, NULL);
    WS_CHECK(count_chunks() == before + 4, "tmp's chunks");
    g_free(VT_CLI_OK(srv, "disk", "delete", "tmp"));
    double t = ws_now();
    while (count_chunks() > before) {
        if (ws_now() - t > 20)
            WS_FAIL("the periodic GC did not free tmp's chunks in 20 s");
        usleep(100000);
    }
    WS_CHECK(ws_server_log_count(srv, "gc: ") > 0, "no GC line in the log");
    ws_log("the periodic GC freed a deleted disk's chunks in %.1f s", ws_now() - t);
    ws_server_stop(srv);
    ws_server_set(srv, "gc-interval", "0");
    ws_server_set(srv, "gc-grace", "1m");
}

static void check_offline(void)
{
    /* The server is stopped: vt_cli passes --meta. */
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("--store"), "disk", "gc"));
    char *out = VT_CLI_OK(srv, "disk", "gc", "--json", "--grace", "0", "--store", srv->store_url);
    JsonNode *r = vt_json(out);
    WS_CHECK(num(r, "deleted") == 0 && num(r, "referenced") == 32 + 8 + 1, "offline: %s", out);
    json_node_unref(r);
    g_free(out);
    ws_log("offline gc works");
}

static void check_messages(void)
{
    char *err = NULL;

    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("--grace '5x'"), "disk", "gc", "--grace", "5x"));
    err = VT_CLI_FAIL(srv, VT_NEEDLES("--force", "gc-grace=1m"), "disk", "gc", "--grace", "0");
    ws_log("grace below gc-grace: %s", g_strchomp(err));
    g_free(err);
    char *store = g_strdup_printf("store=%s", srv->store_url);
    char *cache = g_strdup_printf("cache=%s/x-cache", ws_tmpdir());
    char *meta = g_strdup_printf("meta=%s/x-meta", ws_tmpdir());
    int r = ws_nbdkit_try(&err, 30, store, cache, meta, "gc-grace=abc", NULL);
    WS_CHECK(r != 0 && r != -1 && strstr(err, "gc-grace=abc"), "gc-grace=abc: %d: %s", r, err);
    g_free(err);
    r = ws_nbdkit_try(&err, 30, store, cache, meta, "gc-interval=-1", NULL);
    WS_CHECK(r != 0 && r != -1 && strstr(err, "gc-interval=-1"), "gc-interval=-1: %d: %s", r, err);
    g_free(err);
    g_free(store);
    g_free(cache);
    g_free(meta);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "file";
    bool s3 = strcmp(mode, "s3") == 0;

    ws_init(s3 ? "gc-s3" : "gc");
    srv = ws_server_new(s3 ? WS_STORE_S3 : WS_STORE_FILE);
    ws_server_set(srv, "durability", "remote");
    ws_server_set(srv, "stats-interval", "0");
    ws_server_set(srv, "gc-interval", "0");
    ws_server_set(srv, "gc-grace", "1m");
    if (store_open(srv->store_url, NULL, &st) < 0)
        WS_FAIL("open %s: %s", srv->store_url, store_last_error());
    ws_server_start(srv);
    base = ws_shadow_new(DISK_SIZE);

    check_clone_and_checkpoints();
    check_uploads_in_flight();
    check_dedup_refresh();
    check_two_hosts(s3 ? WS_STORE_S3 : WS_STORE_FILE);
    if (!s3)
        check_messages();
    check_periodic();
    check_offline();

    store_close(st);
    ws_shadow_free(base, DISK_SIZE);
    ws_log("gc: all checks passed");
    return 0;
}
