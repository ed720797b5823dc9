/* timing: checkpoint, restore and clone are metadata operations, whatever the disk's size.
 *
 * A 100 GiB disk of 1 MiB chunks with 100,000 chunks written would take long to fill through
 * NBD, so its metadata is made directly (meta_disk_create, chunk_map_set of 100,000 distinct
 * fake hashes, meta_head_commit) with the server stopped.  Those chunks are not in the store,
 * so the disk's old content is never read.  A few whole chunks are then written through NBD
 * (whole-chunk writes do not read), so that two versions differ.
 *
 * Then, through the control socket, each several times: checkpoint, restore (alternating
 * between two checkpoints), clone of a checkpoint and clone of the head.  The server's own
 * figure (the answer's "ms") must stay under a threshold (median and each run), and the
 * medians are printed next to those of an empty disk of the same size, with the first
 * checkpoint and restore after a start (which open the disk and load its map).  After restoring
 * the version with the written chunks they read back correctly.
 *
 * Environment: WISP_TEST_VERSION_MS (default 500), the bar for a median; a single run may
 * take up to four times that.
 *
 * `timing N` uses N chunks instead of 100,000 and also times `wisp disk restore-meta` of the
 * server's replica into an empty directory (without chunk verification: the chunks are
 * fake); scripts/bench versions runs it for several N and reads its last line, "BENCH ...". */
#include "vt.h"

#include "meta.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (1 * MiB)
#define RUNS  7

static uint64_t N_CHUNKS = 100000;

static struct ws_server *srv;

/* Makes `name`, 100 GiB of 1 MiB chunks, with N_CHUNKS chunks spread over the disk. */
static void make_big_disk(const char *name)
{
    struct meta_disk d;
    struct meta *m;
    int r;

    r = meta_open(srv->meta, true, &m);
    WS_CHECK(r == 0, "meta_open %s: %d", srv->meta, r);
    r = meta_disk_create(m, name, UINT64_C(100) << 30, CHUNK, &d);
    WS_CHECK(r == 0, "meta_disk_create: %d", r);
    uint64_t n_chunks = d.size / d.chunk_size;
    struct chunk_map *map = chunk_map_new(n_chunks);
    WS_CHECK(map, "chunk_map_new");
    for (uint64_t i = 0; i < N_CHUNKS; i++) {
        struct chunk_hash h;
        uint64_t x = i * 0x9e3779b97f4a7c15u + 1;
        for (int k = 0; k < CHUNK_HASH_LEN; k += 8) {
            x ^= x >> 31;
            x *= 0xbf58476d1ce4e5b9u;
            memcpy(&h.b[k], &x, 8);
        }
        memcpy(h.b, &i, sizeof i); /* distinct, whatever the mixing does */
        h.b[31] |= 1;              /* never the all-zero hash */
        /* 100,000 of 102,400 indices: most leaves full, a few gaps. */
        r = chunk_map_set(map, i * n_chunks / N_CHUNKS, &h);
        WS_CHECK(r == 0, "chunk_map_set: %d", r);
    }
    WS_CHECK(chunk_map_count(map) == N_CHUNKS, "%" PRIu64 " chunks", chunk_map_count(map));
    struct chunk_hash root;
    r = meta_begin(m);
    WS_CHECK(r == 0, "meta_begin: %d", r);
    r = meta_head_commit(m, d.id, map, 1, &root);
    WS_CHECK(r == 0, "meta_head_commit: %d", r);
    r = meta_commit(m);
    WS_CHECK(r == 0, "meta_commit: %d", r);
    chunk_map_free(map);
    meta_close(m);
}

static double run_ms(const char *const *args, double *wall_ms)
{
    double t = ws_now();
    char *out = vt_cli_ok_at(__FILE__, __LINE__, srv, args);
    double ms;

    if (wall_ms)
        *wall_ms = (ws_now() - t) * 1e3;
    JsonNode *a = vt_json(out);
    ms = vt_json_ms(a);
    json_node_unref(a);
    g_free(out);
    return ms;
}

struct figures {
    double checkpoint, restore, clone_ckpt, clone_head, wall;
};

static double check_runs(const char *what, const char *disk, double *v, int n, double bar)
{
    double max = 0;

    for (int i = 0; i < n; i++)
        if (v[i] > max)
            max = v[i];
    double med = vt_median(v, n);
    ws_log("%s of %s: median %.2f ms, max %.2f ms over %d runs", what, disk, med, max, n);
    WS_CHECK(med < bar, "%s of %s: median %.2f ms, over the %.0f ms bar", what, disk, med, bar);
    WS_CHECK(max < 4 * bar, "%s of %s: a run took %.2f ms, over 4 x %.0f ms", what, disk, max, bar);
    return med;
}

/* Times each version operation RUNS times on disk. */
static struct figures time_disk(const char *disk, double bar)
{
    double ck[RUNS], rs[RUNS], cc[RUNS], ch[RUNS], wall[RUNS];
    struct figures f;
    char name[64], target[160], src[160];

    for (int i = 0; i < RUNS; i++) {
        snprintf(name, sizeof name, "t%d", i);
        ck[i] = run_ms(VT_ARGS("disk", "checkpoint", disk, name, "--json"), &wall[i]);
    }
    for (int i = 0; i < RUNS; i++) {
        snprintf(name, sizeof name, "t%d", i % 2 ? 0 : RUNS - 1);
        rs[i] = run_ms(VT_ARGS("disk", "restore", disk, name, "--json"), NULL);
    }
    for (int i = 0; i < RUNS; i++) {
        snprintf(src, sizeof src, "%s@t%d", disk, i);
        snprintf(target, sizeof target, "%s-cc%d", disk, i);
        cc[i] = run_ms(VT_ARGS("disk", "clone", src, target, "--json"), NULL);
        snprintf(target, sizeof target, "%s-ch%d", disk, i);
        ch[i] = run_ms(VT_ARGS("disk", "clone", disk, target, "--json"), NULL);
    }
    f.checkpoint = check_runs("checkpoint", disk, ck, RUNS, bar);
    f.restore = check_runs("restore", disk, rs, RUNS, bar);
    f.clone_ckpt = check_runs("clone of a checkpoint", disk, cc, RUNS, bar);
    f.clone_head = check_runs("clone of the head", disk, ch, RUNS, bar);
    f.wall = vt_median(wall, RUNS);
    return f;
}

int main(int argc, char **argv)
{
    const char *bar_env = getenv("WISP_TEST_VERSION_MS");
    double bar = bar_env && *bar_env ? strtod(bar_env, NULL) : 500;
    bool bench = argc > 1;

    if (bench) {
        N_CHUNKS = strtoull(argv[1], NULL, 10);
        if (N_CHUNKS < 100 || N_CHUNKS > 102400) {
            fprintf(stderr, "usage: timing [N], N from 100 to 102400 chunks\n");
            return 2;
        }
    }
    ws_init("timing");
    srv = ws_server_new(WS_STORE_FILE);
    ws_server_set(srv, "stats-interval", "0");
    ws_server_set(srv, "upload-delay", "3600");

    double t = ws_now();
    make_big_disk("big");
    ws_log("metadata of a 100 GiB disk with %" PRIu64 " chunks made in %.2f s", N_CHUNKS,
           ws_now() - t);
    ws_server_start(srv);
    ws_disk_create(srv, "empty", "100G", "1M");
    g_free(VT_CLI_OK(srv, "disk", "stats", "big")); /* the map loads */

    /* Two versions that differ: "a" as made, "b" with four chunks written whole. */
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "big", "a"));
    struct nbd_handle *h = ws_connect(srv, "big");
    uint8_t *buf = g_malloc(CHUNK);
    for (int i = 0; i < 4; i++) {
        ws_fill_random(buf, CHUNK, 1000 + i);
        WS_NBD(nbd_pwrite(h, buf, CHUNK, (uint64_t)(i * 25000 + 7) * CHUNK, 0));
    }
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "big", "b"));

    struct figures big = time_disk("big", bar);
    struct figures empty = time_disk("empty", bar);

    /* Restore between the two versions, then read the written chunks of "b" back. */
    double ab[RUNS];
    for (int i = 0; i < RUNS; i++)
        ab[i] = run_ms(VT_ARGS("disk", "restore", "big", i % 2 ? "a" : "b", "--json"), NULL);
    double ab_med = check_runs("restore a<->b", "big", ab, RUNS, bar);
    /* RUNS is odd: the last restore was to "b". */
    h = ws_connect(srv, "big");
    uint8_t *want = g_malloc(CHUNK);
    for (int i = 0; i < 4; i++) {
        ws_fill_random(want, CHUNK, 1000 + i);
        WS_NBD(nbd_pread(h, buf, CHUNK, (uint64_t)(i * 25000 + 7) * CHUNK, 0));
        WS_CHECK(memcmp(buf, want, CHUNK) == 0, "chunk %d of version b differs after restore",
                 i * 25000 + 7);
    }
    ws_disconnect(h);
    g_free(want);
    g_free(buf);

    /* Cold: the first checkpoint after a start opens the disk and loads its 100,000-entry map;
     * the first restore after a start does too. */
    ws_server_stop(srv);
    ws_server_start(srv);
    double cold_ck = run_ms(VT_ARGS("disk", "checkpoint", "big", "cold", "--json"), NULL);
    ws_server_stop(srv);
    ws_server_start(srv);
    double cold_rs = run_ms(VT_ARGS("disk", "restore", "big", "a", "--json"), NULL);
    ws_log("after a start: checkpoint %.2f ms, restore %.2f ms (the disk opens first)", cold_ck,
           cold_rs);
    WS_CHECK(cold_ck < 4 * bar, "the first checkpoint after a start took %.2f ms", cold_ck);
    WS_CHECK(cold_rs < 4 * bar, "the first restore after a start took %.2f ms", cold_rs);

    printf("\nmedians (ms, the server's figure)  %8" PRIu64 " %8s\n", N_CHUNKS, "empty");
    printf("  checkpoint                        %8.2f %8.2f\n", big.checkpoint, empty.checkpoint);
    printf("  restore                           %8.2f %8.2f\n", big.restore, empty.restore);
    printf("  clone of a checkpoint             %8.2f %8.2f\n", big.clone_ckpt, empty.clone_ckpt);
    printf("  clone of the head                 %8.2f %8.2f\n", big.clone_head, empty.clone_head);
    printf("  restore between two versions      %8.2f\n", ab_med);
    printf("  first checkpoint after a start    %8.2f\n", cold_ck);
    printf("  first restore after a start       %8.2f\n", cold_rs);
    printf("  wisp disk checkpoint, wall clock  %8.2f %8.2f\n\n", big.wall, empty.wall);
    ws_server_stop(srv);

    double restore_meta_s = 0;
    if (bench) {
        /* The metadata of a new host, from the replica alone. */
        char *dir = g_strdup_printf("%s/restored-meta", ws_tmpdir());
        char *out = NULL, *err = NULL;
        double t0 = ws_now();
        int st = ws_runl(&out, &err, 300, ws_cli_path(), "disk", "restore-meta", "--store",
                         srv->store_url, "--meta", dir, "--verify", "none", NULL);
        restore_meta_s = ws_now() - t0;
        WS_CHECK(st == 0, "restore-meta failed: %s", err ? err : "");
        g_free(out);
        g_free(err);
        g_free(dir);
        printf("BENCH n=%" PRIu64 " checkpoint=%.3f restore=%.3f clone_ckpt=%.3f clone_head=%.3f "
               "cold_checkpoint=%.3f cold_restore=%.3f restore_meta_s=%.3f\n",
               N_CHUNKS, big.checkpoint, big.restore, big.clone_ckpt, big.clone_head, cold_ck,
               cold_rs, restore_meta_s);
    }
    ws_log("timing: all checks passed");
    return 0;
}
