/* roundtrip: random writes read back, before and after restarts.
 *
 *   roundtrip [--disk-size=SIZE] [--no-local-refetch] STORE BYTES [CHUNK-SIZES [DURABILITIES]]
 *     --disk-size   size of each disk (default 1G)
 *     --no-local-refetch  skip the empty-cache pass of durability=local (see below)
 *     STORE         file | s3 (s3 skips without a radosgw)
 *     BYTES         data written per disk, e.g. 256M
 *     CHUNK-SIZES   comma-separated, default 64K,1M,4M
 *     DURABILITIES  comma-separated, default remote,local
 *
 * For each durability, one server serves one 1 GiB disk per chunk size.  Each disk gets BYTES
 * of random data at random offsets and lengths (1 byte to 8 MiB; chunk-aligned, 4K-aligned and
 * unaligned), with a few zero and trim requests and FUA writes, half through one connection and
 * half through four connections in parallel (can_multi_conn), each in its own region of the
 * disk; the region borders fall inside chunks, so that two connections modify one chunk at
 * once.  A shadow copy in memory records what the disk must hold.  After one flush (on one
 * connection: multi-conn makes it cover the others), the disk is read back and compared.
 * Then 64 more writes are made and never flushed: from here on the disk must read as it was
 * at the flush.
 *
 * Then, durability=remote: stop, empty the cache directory, start, compare: the data comes
 * from the store.  durability=local (upload-delay=3600, so that everything is still pending):
 * SIGKILL (a flush is durable locally), start with upload-delay=0.2, compare while the
 * recovered data is uploaded; wait for the upload (the head commits the latest flush), then
 * unless --no-local-refetch: stop, empty the cache, start, compare. */
#include "server.h"

#include <glib.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The size of each disk: 1 GiB unless --disk-size says otherwise. */
static uint64_t disk_size = UINT64_C(1) << 30;
/* durability=local: also read everything back from an empty cache after the upload. */
static bool local_refetch = true;
#define MAX_WRITE (8u << 20)
#define PARALLEL  4

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

static double rng_unit(struct rng *r)
{
    return (double)(rng_next(r) >> 11) / (double)(UINT64_C(1) << 53);
}

struct writer_counts {
    uint64_t writes, bytes, zeroes, trims, fua, aligned, tiny, unaligned;
};

/* Picks one request inside [lo, hi): offset and length. */
static void pick_request(struct rng *r, uint32_t cs, uint64_t lo, uint64_t hi, uint64_t *off,
                         uint32_t *len, struct writer_counts *c)
{
    for (;;) {
        unsigned kind = (unsigned)rng_below(r, 100);
        uint64_t o, n;

        if (kind < 25) {
            /* Whole chunks. */
            uint64_t first = (lo + cs - 1) / cs * cs;
            if (first >= hi)
                continue;
            uint64_t max_chunks = MAX_WRITE / cs;
            n = (1 + rng_below(r, max_chunks < 4 ? max_chunks : 4)) * cs;
            o = first + rng_below(r, (hi - first) / cs) * cs;
            c->aligned++;
        } else if (kind < 45) {
            /* Tiny and unaligned. */
            n = 1 + rng_below(r, 4096);
            o = lo + rng_below(r, hi - lo);
            c->tiny++;
        } else if (kind < 55) {
            /* 4K-aligned, a 4K multiple. */
            n = 4096 * (1 + rng_below(r, 256));
            o = (lo + rng_below(r, hi - lo)) & ~UINT64_C(4095);
            if (o < lo)
                o += 4096;
            c->unaligned++;
        } else {
            /* Log-uniform length from 1 byte to 8 MiB, at any byte. */
            n = (uint64_t)exp(rng_unit(r) * log((double)MAX_WRITE));
            if (n < 1)
                n = 1;
            o = lo + rng_below(r, hi - lo);
            c->unaligned++;
        }
        if (o >= hi)
            continue;
        if (o + n > hi)
            n = hi - o;
        if (n > MAX_WRITE)
            n = MAX_WRITE;
        *off = o;
        *len = (uint32_t)n;
        return;
    }
}

/* Writes `bytes` of requests into [lo, hi) through h, mirroring them into shadow.  Near the
 * borders of the region it also makes small writes, to meet the neighbouring writer inside
 * the chunk they share. */
static void write_region(struct nbd_handle *h, uint8_t *shadow, uint32_t cs, uint64_t lo,
                         uint64_t hi, uint64_t bytes, uint64_t seed, bool borders,
                         struct writer_counts *c)
{
    struct rng r = {seed};
    uint8_t *buf = g_malloc(MAX_WRITE);
    uint64_t done = 0;

    while (done < bytes) {
        uint64_t off;
        uint32_t len;
        unsigned what = (unsigned)rng_below(&r, 100);

        if (borders && what < 10) {
            /* A small write within a chunk of one border. */
            bool at_lo = rng_below(&r, 2) == 0;
            uint64_t from = at_lo ? lo : (hi - lo > cs ? hi - cs : lo);
            uint64_t to = at_lo ? (hi - lo > cs ? lo + cs : hi) : hi;
            len = (uint32_t)(1 + rng_below(&r, 512));
            off = from + rng_below(&r, to - from);
            if (off + len > hi)
                len = (uint32_t)(hi - off);
        } else {
            pick_request(&r, cs, lo, hi, &off, &len, c);
        }

        if (what >= 97) {
            /* Zero or trim (the plugin's trim zeroes too). */
            int rc = what == 99 ? nbd_trim(h, len, off, 0)
                                : nbd_zero(h, len, off, what == 98 ? LIBNBD_CMD_FLAG_FAST_ZERO : 0);
            if (rc == -1)
                WS_FAIL("%s of %u bytes at %" PRIu64 ": %s", what == 99 ? "trim" : "zero", len, off,
                        nbd_get_error());
            memset(shadow + off, 0, len);
            if (what == 99)
                c->trims++;
            else
                c->zeroes++;
            continue;
        }
        uint32_t flags = what == 96 ? LIBNBD_CMD_FLAG_FUA : 0;
        ws_fill_random(buf, len, rng_next(&r));
        if (nbd_pwrite(h, buf, len, off, flags) == -1)
            WS_FAIL("write of %u bytes at %" PRIu64 " (chunk %" PRIu64 " + %" PRIu64 "): %s", len,
                    off, off / cs, off % cs, nbd_get_error());
        memcpy(shadow + off, buf, len);
        c->writes++;
        c->bytes += len;
        if (flags)
            c->fua++;
        done += len;
    }
    g_free(buf);
}

struct parallel_writer {
    struct ws_server *s;
    const char *disk;
    uint8_t *shadow;
    uint32_t cs;
    uint64_t lo, hi, bytes, seed;
    struct writer_counts counts;
};

static void *parallel_writer_run(void *opaque)
{
    struct parallel_writer *w = opaque;
    struct nbd_handle *h = ws_connect(w->s, w->disk);

    write_region(h, w->shadow, w->cs, w->lo, w->hi, w->bytes, w->seed, true, &w->counts);
    ws_disconnect(h);
    return NULL;
}

/* The border between the regions of writers i - 1 and i: inside a chunk (12345 + 777 i bytes
 * past a multiple of every chunk size), except at the ends of the disk. */
static uint64_t region_border(int i)
{
    if (i == 0)
        return 0;
    if (i == PARALLEL)
        return disk_size;
    return (uint64_t)i * (disk_size / PARALLEL) + 12345 + 777 * (uint64_t)i;
}

struct disk_case {
    char name[32];
    uint32_t chunk_size;
    uint8_t *shadow;
};

static void fill_disk(struct ws_server *s, struct disk_case *dc, uint64_t bytes)
{
    struct writer_counts c = {0};
    struct parallel_writer w[PARALLEL];
    pthread_t threads[PARALLEL];
    double t = ws_now();
    struct nbd_handle *h = ws_connect(s, dc->name);

    WS_CHECK(nbd_can_multi_conn(h) == 1, "the plugin should allow multi-conn");
    WS_CHECK(nbd_get_size(h) == (int64_t)disk_size, "size %" PRId64, nbd_get_size(h));

    /* Half through one connection, anywhere on the disk. */
    write_region(h, dc->shadow, dc->chunk_size, 0, disk_size, bytes / 2, ws_rand(), false, &c);

    /* Half through four connections at once, each in its region; the borders are not chunk
     * boundaries, so neighbours share a chunk. */
    for (int i = 0; i < PARALLEL; i++) {
        w[i] = (struct parallel_writer){
            .s = s,
            .disk = dc->name,
            .shadow = dc->shadow,
            .cs = dc->chunk_size,
            .lo = region_border(i),
            .hi = region_border(i + 1),
            .bytes = bytes / 2 / PARALLEL,
            .seed = ws_rand(),
        };
        if (pthread_create(&threads[i], NULL, parallel_writer_run, &w[i]) != 0)
            WS_FAIL("pthread_create");
    }
    for (int i = 0; i < PARALLEL; i++) {
        pthread_join(threads[i], NULL);
        c.writes += w[i].counts.writes;
        c.bytes += w[i].counts.bytes;
        c.zeroes += w[i].counts.zeroes;
        c.trims += w[i].counts.trims;
        c.fua += w[i].counts.fua;
        c.aligned += w[i].counts.aligned;
        c.tiny += w[i].counts.tiny;
        c.unaligned += w[i].counts.unaligned;
    }
    double tw = ws_now() - t;

    /* One flush, on the first connection, covers the writes of all of them. */
    t = ws_now();
    WS_NBD(nbd_flush(h, 0));
    double tf = ws_now() - t;
    ws_disconnect(h);
    ws_log("%s: %" PRIu64 " writes (%" PRIu64 " MiB; %" PRIu64 " chunk-aligned, %" PRIu64
           " tiny, %" PRIu64 " other; %" PRIu64 " FUA), %" PRIu64 " zeroes, %" PRIu64
           " trims in %.2f s; flush %.2f s",
           dc->name, c.writes, c.bytes >> 20, c.aligned, c.tiny, c.unaligned, c.fua, c.zeroes,
           c.trims, tw, tf);
}

/* Writes that are never flushed: after a crash or a restart the disk must be exactly its
 * state at the last flush (disk.h: unflushed files are dropped at start-up; the store holds
 * some flush's state, never a mix).  The shadow is not updated. */
static void scribble(struct ws_server *s, struct disk_case *dc)
{
    struct nbd_handle *h = ws_connect(s, dc->name);
    uint8_t *buf = g_malloc(256 << 10);

    for (int i = 0; i < 64; i++) {
        uint32_t len = (uint32_t)(1 + ws_rand_below(256 << 10));
        uint64_t off = ws_rand_below(disk_size - len);
        ws_fill_random(buf, len, ws_rand());
        WS_NBD(nbd_pwrite(h, buf, len, off, 0));
    }
    ws_disconnect(h); /* no flush */
    g_free(buf);
}

static void compare_all(struct ws_server *s, struct disk_case *cases, int n)
{
    for (int i = 0; i < n; i++)
        ws_compare(s, cases[i].name, cases[i].shadow, 0, disk_size, cases[i].chunk_size, 4);
}

static uint64_t parse_size(const char *text)
{
    char *end;
    uint64_t v = strtoull(text, &end, 10);

    switch (*end) {
    case 'K':
    case 'k':
        v <<= 10;
        break;
    case 'M':
    case 'm':
        v <<= 20;
        break;
    case 'G':
    case 'g':
        v <<= 30;
        break;
    case '\0':
        break;
    default:
        WS_FAIL("bad size '%s'", text);
    }
    return v;
}

static void run_durability(enum ws_store_kind store, const char *durability, gchar **chunks,
                           uint64_t bytes)
{
    struct disk_case cases[8];
    int n = 0;
    struct ws_server *s = ws_server_new(store);
    bool remote = strcmp(durability, "remote") == 0;

    ws_log("---- durability=%s, store %s", durability, s->store_url);
    ws_server_set(s, "durability", durability);
    if (!remote) /* nothing is uploaded before the crash below: all of it stays pending */
        ws_server_set(s, "upload-delay", "3600");
    for (int i = 0; chunks[i] && n < 8; i++, n++) {
        uint64_t cs = parse_size(chunks[i]);
        snprintf(cases[n].name, sizeof cases[n].name, "rt-%s-%s", chunks[i], durability);
        cases[n].chunk_size = (uint32_t)cs;
        cases[n].shadow = ws_shadow_new(disk_size);
        char size[32];
        snprintf(size, sizeof size, "%" PRIu64, disk_size);
        ws_disk_create(s, cases[n].name, size, chunks[i]);
    }
    ws_server_start(s);
    for (int i = 0; i < n; i++) {
        fill_disk(s, &cases[i], bytes);
        ws_compare(s, cases[i].name, cases[i].shadow, 0, disk_size, cases[i].chunk_size, 4);
        scribble(s, &cases[i]);
    }

    if (remote) {
        /* The flush returned after the upload: the store alone must hold the data. */
        ws_server_stop(s);
        ws_server_wipe_cache(s);
        ws_server_start(s);
        compare_all(s, cases, n);
        JsonNode *st = ws_disk_stats(s, cases[0].name);
        int64_t fetches = ws_json_int(st, "cache.fetches");
        json_node_unref(st);
        WS_CHECK(fetches > 0, "an empty cache was read back without fetching from the store");
        ws_log("read back from an empty cache: %" PRId64 " chunks fetched", fetches);
        ws_server_stop(s);
    } else {
        /* A flush is durable locally: a crash before the upload loses nothing. */
        for (int i = 0; i < n; i++) {
            JsonNode *st = ws_disk_stats(s, cases[i].name);
            int64_t pending = ws_json_int(st, "stats.pending_bytes");
            int64_t committed = ws_json_int(st, "stats.committed_gen");
            json_node_unref(st);
            WS_CHECK(pending > 0 && committed == 0,
                     "%s: with upload-delay=3600 the flushed data should still be pending "
                     "(pending %" PRId64 " bytes, committed flush %" PRId64 ")",
                     cases[i].name, pending, committed);
        }
        ws_server_kill9(s);
        ws_server_set(s, "upload-delay", "0.2");
        ws_server_start(s);
        compare_all(s, cases, n);
        for (int i = 0; i < n; i++) {
            double waited = ws_wait_uploaded(s, cases[i].name, 120);
            ws_log("%s: uploaded (waited %.2f s)", cases[i].name, waited);
        }
        ws_server_stop(s);
        if (local_refetch) {
            ws_server_wipe_cache(s);
            ws_server_start(s);
            compare_all(s, cases, n);
            ws_server_stop(s);
        }
    }
    for (int i = 0; i < n; i++)
        ws_shadow_free(cases[i].shadow, disk_size);
}

int main(int argc, char **argv)
{
    while (argc > 1 && strncmp(argv[1], "--", 2) == 0) {
        if (strncmp(argv[1], "--disk-size=", 12) == 0)
            disk_size = parse_size(argv[1] + 12);
        else if (strcmp(argv[1], "--no-local-refetch") == 0)
            local_refetch = false;
        else {
            fprintf(stderr, "roundtrip: unknown option %s\n", argv[1]);
            return 2;
        }
        argc--;
        argv++;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: roundtrip [--disk-size=SIZE] [--no-local-refetch] file|s3 BYTES "
                        "[CHUNK-SIZES [DURABILITIES]]\n");
        return 2;
    }
    enum ws_store_kind store = strcmp(argv[1], "s3") == 0 ? WS_STORE_S3 : WS_STORE_FILE;
    char name[32];
    snprintf(name, sizeof name, "roundtrip-%s", argv[1]);
    ws_init(name);
    if (store == WS_STORE_S3 && !ws_have_s3())
        ws_skip("no radosgw: WISP_TEST_S3_ENDPOINT is not set (tests/s3/rgw-fixture)");

    uint64_t bytes = parse_size(argv[2]);
    gchar **chunks = g_strsplit(argc > 3 ? argv[3] : "64K,1M,4M", ",", -1);
    gchar **durabilities = g_strsplit(argc > 4 ? argv[4] : "remote,local", ",", -1);

    ws_log("disks of %" PRIu64 " MiB, %" PRIu64 " MiB written to each", disk_size >> 20,
           bytes >> 20);
    for (int i = 0; durabilities[i]; i++)
        run_durability(store, durabilities[i], chunks, bytes);
    g_strfreev(chunks);
    g_strfreev(durabilities);
    ws_log("PASS");
    return 0;
}
