/* hostloss: a storage host is lost; a new one with empty directories, on the same store,
 * restores the metadata from its replica by itself and serves the disks.
 *
 *   hostloss remote file|s3   durability=remote: random writes and flushes (some as FUA
 *                             writes), checkpoints; kill -9 right after the last flush is
 *                             acknowledged; delete the cache and metadata directories; a new
 *                             server with empty ones on the same store must read back every
 *                             acknowledged byte and list every checkpoint made.  Also prints
 *                             the flush latency, which includes shipping the segment.
 *   hostloss shipped file|s3  durability=remote with small writes and no upload round
 *                             (upload-delay=3600): the flushes ship the write log through the
 *                             metadata instead of uploading chunks.  The stats must show that
 *                             (flushes shipped, no byte uploaded), and then every acknowledged
 *                             byte must read back after a restart on the same directories,
 *                             and again on a new host with empty ones.
 *   hostloss local file|s3    durability=local (upload-delay=1, replicate-interval=1): a
 *                             marker block is written and flushed every 20 ms, each in its own
 *                             chunk; kill -9 at a random moment; on the new host the markers
 *                             that survived must be exactly the first M (a committed state,
 *                             never a mix), and the loss window, from the acknowledgement of
 *                             marker M+1 to the kill, must be within upload-delay +
 *                             replicate-interval + 1.5 s of slack.  Three trials; the windows
 *                             are printed. */
#include "server.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

static enum ws_store_kind kind;

/* A server for the same store as `like` (or a store of its own when like is NULL). */
static struct ws_server *server(struct ws_server *like, const char *durability)
{
    struct ws_server *s = ws_server_new(kind);

    if (like) {
        g_free(s->store_url);
        s->store_url = g_strdup(like->store_url);
    }
    ws_server_set(s, "durability", durability);
    ws_server_set(s, "replicate-interval", "1");
    ws_server_set(s, "upload-delay", "1");
    ws_server_set(s, "replica", "host");
    ws_server_set(s, "stats-interval", "0");
    ws_server_set(s, "lease-ttl", "2");
    return s;
}

/* The new host may not write while the lost one's lease lives; once it expired, it takes the
 * disk over (storage invariant 11: a lost host is never assumed dead before its lease says so). */
static void take_over(struct ws_server *s)
{
    if (ws_sanitizer_build()) /* leases are off there (see ws_server_start) */
        return;
    char *why = ws_connect_must_fail(s, "d");
    free(why);
    double start = ws_now();
    for (;;) {
        char *err = NULL;
        int r = ws_cli(s, NULL, &err, "disk", "lease", "d", "--steal", NULL);
        g_free(err);
        if (r == 0)
            break;
        WS_CHECK(ws_now() - start < 30, "the lost host's lease (ttl 2 s) cannot be taken over");
        usleep(250 * 1000);
    }
    ws_log("took over the lost host's lease after %.1f s", ws_now() - start);
}

/* The host is gone: its process, its cache and its metadata. */
static void lose_host(struct ws_server *s)
{
    ws_server_kill9(s);
    ws_server_wipe_cache(s);
    if (ws_runl(NULL, NULL, 30, "rm", "-rf", s->meta, NULL) != 0)
        WS_FAIL("rm -rf %s", s->meta);
}

static void checkpoint(struct ws_server *s, const char *name)
{
    char *out = NULL, *err = NULL;
    int r = ws_cli(s, &out, &err, "disk", "checkpoint", "d", name, NULL);

    WS_CHECK(r == 0, "wisp disk checkpoint d %s: %s", name, err);
    g_free(out);
    g_free(err);
}

static void run_remote(void)
{
    const uint64_t size = 64 * MiB;
    struct ws_server *s1 = server(NULL, "remote"), *s2;
    uint8_t *shadow = ws_shadow_new(size), *buf = g_malloc(512 * KiB);
    struct nbd_handle *h;
    double flush_time = 0;
    int flushes = 0;

    ws_server_start(s1);
    ws_disk_create(s1, "d", "64M", "64K");
    h = ws_connect(s1, "d");
    for (int round = 0; round < 40; round++) {
        int writes = 1 + (int)ws_rand_below(6);
        for (int i = 0; i < writes; i++) {
            uint64_t len = 1 + ws_rand_below(512 * KiB);
            uint64_t off = ws_rand_below(size - len);
            ws_fill_random(buf, len, ws_rand());
            bool fua = i == writes - 1 && round % 4 == 3;
            double t = ws_now();
            WS_NBD(nbd_pwrite(h, buf, len, off, fua ? LIBNBD_CMD_FLAG_FUA : 0));
            memcpy(shadow + off, buf, len);
            if (fua) {
                flush_time += ws_now() - t;
                flushes++;
            }
        }
        if (round % 4 != 3) {
            double t = ws_now();
            WS_NBD(nbd_flush(h, 0));
            flush_time += ws_now() - t;
            flushes++;
        }
        if (round % 10 == 9) {
            char name[16];
            snprintf(name, sizeof name, "c%d", round / 10);
            checkpoint(s1, name);
        }
    }
    ws_log("%d flushes with durability=remote and replication: %.1f ms on average", flushes,
           flush_time / flushes * 1000);
    /* The last flush was acknowledged: lose the host at once. */
    lose_host(s1);
    ws_disconnect(h);

    s2 = server(s1, "remote");
    ws_server_start(s2);
    WS_CHECK(ws_server_log_count(s2, "restoring it from replica 'host'") == 1,
             "the new server did not restore the metadata (see %s)", s2->log);
    take_over(s2);
    ws_compare(s2, "d", shadow, 0, size, 64 * KiB, 4);
    ws_log("every acknowledged byte reads back on the new host");
    char *out = NULL;
    WS_CHECK(ws_cli(s2, &out, NULL, "disk", "checkpoints", "d", NULL) == 0, "checkpoints");
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        WS_CHECK(strstr(out, name) != NULL, "checkpoint %s is missing: %s", name, out);
    }
    g_free(out);
    /* A checkpoint export of the restored metadata serves too. */
    struct nbd_handle *hc = ws_connect(s2, "d@c3");
    ws_disconnect(hc);
    ws_server_stop(s2);
    ws_shadow_free(shadow, size);
    g_free(buf);
}

/* Small writes at random 4 KiB blocks, a flush (or a FUA write) after every few. */
static void write_small(struct nbd_handle *h, uint8_t *shadow, uint64_t size, int flushes)
{
    uint8_t buf[4 * KiB];

    for (int round = 0; round < flushes; round++) {
        int writes = 1 + (int)ws_rand_below(8);
        for (int i = 0; i < writes; i++) {
            uint64_t off = ws_rand_below(size / sizeof buf) * sizeof buf;
            bool fua = i == writes - 1 && round % 4 == 3;
            ws_fill_random(buf, sizeof buf, ws_rand());
            WS_NBD(nbd_pwrite(h, buf, sizeof buf, off, fua ? LIBNBD_CMD_FLAG_FUA : 0));
            memcpy(shadow + off, buf, sizeof buf);
        }
        if (round % 4 != 3)
            WS_NBD(nbd_flush(h, 0));
    }
}

/* Flushes of small writes never ship where key=value says not to: they upload. */
static void check_not_shipped(const char *key, const char *value)
{
    const uint64_t size = 16 * MiB;
    struct ws_server *s = server(NULL, "remote");
    uint8_t *shadow = ws_shadow_new(size);

    ws_server_set(s, "upload-delay", "3600");
    ws_server_set(s, key, value);
    ws_server_start(s);
    ws_disk_create(s, "d", "16M", "1M");
    struct nbd_handle *h = ws_connect(s, "d");
    write_small(h, shadow, size, 8);
    ws_disconnect(h);
    JsonNode *st = ws_disk_stats(s, "d");
    int64_t ships = ws_json_int(st, "stats.log_ships");
    int64_t uploaded = ws_json_int(st, "stats.upload_bytes");
    json_node_unref(st);
    WS_CHECK(ships == 0 && uploaded > 0,
             "%s=%s: %" PRId64 " flushes shipped, %" PRId64 " bytes uploaded", key, value, ships,
             uploaded);
    ws_log("%s=%s: flushes upload their chunks (%" PRId64 " bytes), none ships", key, value,
           uploaded);
    ws_server_stop(s);
    ws_shadow_free(shadow, size);
}

static void run_shipped(void)
{
    const uint64_t size = 64 * MiB;
    struct ws_server *s1 = server(NULL, "remote"), *s2;
    uint8_t *shadow = ws_shadow_new(size);
    struct nbd_handle *h;

    ws_server_set(s1, "upload-delay", "3600");
    ws_server_start(s1);
    ws_disk_create(s1, "d", "64M", "1M");
    h = ws_connect(s1, "d");
    write_small(h, shadow, size, 40);
    JsonNode *st = ws_disk_stats(s1, "d");
    int64_t ships = ws_json_int(st, "stats.log_ships");
    int64_t shipped = ws_json_int(st, "stats.log_ship_bytes");
    int64_t uploaded = ws_json_int(st, "stats.upload_bytes");
    json_node_unref(st);
    ws_log("40 flushes of small writes: %" PRId64 " shipped as log (%" PRId64 " bytes), %" PRId64
           " bytes uploaded",
           ships, shipped, uploaded);
    WS_CHECK(ships == 40 && uploaded == 0,
             "expected every flush shipped and nothing uploaded: %" PRId64 " shipped, %" PRId64
             " bytes uploaded",
             ships, uploaded);

    /* The same host: the rows replace what its own log holds beyond them. */
    ws_server_kill9(s1);
    ws_disconnect(h);
    ws_server_start(s1);
    WS_CHECK(ws_server_log_count(s1, "rebuilt its write log from") == 1,
             "the restarted server did not rebuild the log from the shipped rows (see %s)",
             s1->log);
    ws_compare(s1, "d", shadow, 0, size, 64 * KiB, 4);
    ws_log("every acknowledged byte reads back after kill -9 and a restart");
    h = ws_connect(s1, "d");
    write_small(h, shadow, size, 20);

    /* A big write is not logged (disk.c, disk_log_this): the flush after it must upload
     * chunks, never ship a log that lacks it; later flushes ship again. */
    st = ws_disk_stats(s1, "d");
    ships = ws_json_int(st, "stats.log_ships");
    uploaded = ws_json_int(st, "stats.upload_bytes");
    json_node_unref(st);
    uint8_t *big = g_malloc(512 * KiB);
    ws_fill_random(big, 512 * KiB, ws_rand());
    WS_NBD(nbd_pwrite(h, big, 512 * KiB, 5 * MiB, 0));
    memcpy(shadow + 5 * MiB, big, 512 * KiB);
    g_free(big);
    write_small(h, shadow, size, 1);
    st = ws_disk_stats(s1, "d");
    WS_CHECK(ws_json_int(st, "stats.log_ships") == ships &&
                 ws_json_int(st, "stats.upload_bytes") > uploaded,
             "the flush after a write that was not logged shipped the log");
    json_node_unref(st);
    write_small(h, shadow, size, 10);
    st = ws_disk_stats(s1, "d");
    WS_CHECK(ws_json_int(st, "stats.log_ships") > ships, "flushes no longer ship after a round");
    json_node_unref(st);
    ws_log("a flush after a big write uploaded; the flushes after it shipped again");

    /* Another host, from the store alone. */
    lose_host(s1);
    ws_disconnect(h);
    s2 = server(s1, "remote");
    ws_server_set(s2, "upload-delay", "3600");
    ws_server_start(s2);
    WS_CHECK(ws_server_log_count(s2, "restoring it from replica 'host'") == 1,
             "the new server did not restore the metadata (see %s)", s2->log);
    /* It started although the lost host's lease still held the disk with rows to upload. */
    WS_CHECK(ws_sanitizer_build() ||
                 ws_server_log_count(s2, "shipped flushes wait for its lease") == 1,
             "the new server did not wait for the lease of the disk with shipped rows (see %s)",
             s2->log);
    take_over(s2);
    WS_CHECK(ws_server_log_count(s2, "rebuilt its write log from") == 1,
             "the new host did not rebuild the log from the shipped rows (see %s)", s2->log);
    ws_compare(s2, "d", shadow, 0, size, 64 * KiB, 4);
    ws_log("every acknowledged byte reads back on the new host");
    ws_server_stop(s2);
    ws_shadow_free(shadow, size);

    /* Rows are only durable in the store through the metadata's replica. */
    check_not_shipped("replicate-interval", "0");
    check_not_shipped("ship-log", "false");
}

struct marker {
    uint64_t magic, index, seed;
};
#define MARKER_MAGIC UINT64_C(0x4d41524b45523031)

static double run_local_trial(int trial, uint64_t seed)
{
    struct ws_server *s1 = server(NULL, "local"), *s2;
    uint8_t block[4096];
    double acked[1000];
    struct nbd_handle *h;
    int n = 0;

    ws_server_start(s1);
    ws_disk_create(s1, "d", "64M", "64K");
    usleep(1500 * 1000); /* the disk itself is replicated */
    h = ws_connect(s1, "d");
    double stop_at = ws_now() + 3 + (double)ws_rand_below(2000) / 1000;
    while (ws_now() < stop_at && n < 1000) {
        struct marker m = {MARKER_MAGIC, (uint64_t)n, seed};
        memset(block, 0xa5, sizeof block);
        memcpy(block, &m, sizeof m);
        WS_NBD(nbd_pwrite(h, block, sizeof block, (uint64_t)n * 64 * KiB, 0));
        WS_NBD(nbd_flush(h, 0));
        acked[n++] = ws_now();
        usleep(20 * 1000);
    }
    double killed = ws_now();
    lose_host(s1);
    ws_disconnect(h);

    s2 = server(s1, "local");
    ws_server_start(s2);
    take_over(s2);
    h = ws_connect(s2, "d");
    int survived = 0;
    for (int i = 0; i < n; i++) {
        struct marker m;
        WS_NBD(nbd_pread(h, block, sizeof block, (uint64_t)i * 64 * KiB, 0));
        memcpy(&m, block, sizeof m);
        bool present = m.magic == MARKER_MAGIC && m.index == (uint64_t)i && m.seed == seed;
        if (present) {
            WS_CHECK(survived == i, "marker %d survived but marker %d did not: a mix of flushes", i,
                     survived);
            survived = i + 1;
        } else {
            for (size_t j = 0; j < sizeof block; j++)
                WS_CHECK(block[j] == 0, "marker %d: neither the marker nor zeros", i);
        }
    }
    ws_disconnect(h);
    ws_server_stop(s2);
    double window = survived == n ? 0 : killed - acked[survived];
    ws_log("trial %d: %d flushes acknowledged, %d survived the host; loss window %.2f s", trial, n,
           survived, window);
    WS_CHECK(window <= 1 + 1 + 1.5,
             "lost %.2f s of acknowledged flushes, more than upload-delay "
             "+ replicate-interval + 1.5 s",
             window);
    return window;
}

static void run_local(void)
{
    double w[3], max = 0, sum = 0;

    for (int i = 0; i < 3; i++) {
        w[i] = run_local_trial(i, ws_rand());
        sum += w[i];
        if (w[i] > max)
            max = w[i];
    }
    ws_log("durability=local, upload-delay=1, replicate-interval=1: loss window %.2f, %.2f, "
           "%.2f s (mean %.2f, max %.2f)",
           w[0], w[1], w[2], sum / 3, max);
}

int main(int argc, char **argv)
{
    if (argc != 3 ||
        (strcmp(argv[1], "remote") && strcmp(argv[1], "local") && strcmp(argv[1], "shipped")) ||
        (strcmp(argv[2], "file") && strcmp(argv[2], "s3"))) {
        fprintf(stderr, "usage: hostloss remote|shipped|local file|s3\n");
        return 2;
    }
    kind = strcmp(argv[2], "s3") == 0 ? WS_STORE_S3 : WS_STORE_FILE;
    char *name = g_strdup_printf("hostloss_%s_%s", argv[1], argv[2]);
    ws_init(name);
    if (kind == WS_STORE_S3 && !ws_have_s3())
        ws_skip("no radosgw: WISP_TEST_S3_ENDPOINT is not set (tests/s3/rgw-fixture)");
    if (strcmp(argv[1], "remote") == 0)
        run_remote();
    else if (strcmp(argv[1], "shipped") == 0)
        run_shipped();
    else
        run_local();
    g_free(name);
    return 0;
}
