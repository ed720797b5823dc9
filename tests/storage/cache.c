/* cache: the local chunk cache is bounded, verified, and survives a restart.
 *
 * Runs against radosgw when one is configured, else against a file store.
 *  (a) cache-size=16M with 64 MiB of data in 1 MiB chunks (durability=remote, so the data is
 *      clean after the flush): reads, sequential and at random, return the right data; the
 *      cache evicted (stats cache.evictions > 0) and stays within its bound, in its counters
 *      and in the files under CACHE/chunks.
 *  (b) one byte of one file under CACHE/chunks is changed while the server is stopped: after a
 *      restart the data read is right, cache.corrupt == 1, the chunk was fetched again (and
 *      only it), and the file in the cache is right again.
 *  (c) after a restart, reading everything again fetches nothing: cache.fetches == 0, and
 *      with radosgw the store saw no request at all while we read. */
#include "server.h"

#include "hash.h"

#include <dirent.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB   (UINT64_C(1) << 20)
#define CHUNK MiB

static enum ws_store_kind store_kind(void)
{
    return ws_have_s3() ? WS_STORE_S3 : WS_STORE_FILE;
}

/* Writes len random bytes at 0 in 4 MiB requests, mirrored in shadow, then flushes. */
static void fill(struct ws_server *s, const char *disk, uint8_t *shadow, uint64_t len)
{
    struct nbd_handle *h = ws_connect(s, disk);
    uint8_t *buf = g_malloc(4 * MiB);

    for (uint64_t off = 0; off < len; off += 4 * MiB) {
        ws_fill_random(buf, 4 * MiB, ws_rand());
        WS_NBD(nbd_pwrite(h, buf, 4 * MiB, off, 0));
        memcpy(shadow + off, buf, 4 * MiB);
    }
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);
    g_free(buf);
}

/* Reads n random ranges (1 byte to 3 MiB, any alignment) within [0, len) and compares. */
static void random_reads(struct ws_server *s, const char *disk, const uint8_t *shadow, uint64_t len,
                         int n)
{
    struct nbd_handle *h = ws_connect(s, disk);
    uint8_t *buf = g_malloc(3 * MiB);

    for (int i = 0; i < n; i++) {
        uint64_t count = 1 + ws_rand_below(3 * MiB);
        uint64_t off = ws_rand_below(len - count + 1);
        WS_NBD(nbd_pread(h, buf, count, off, 0));
        if (memcmp(buf, shadow + off, count) != 0)
            WS_FAIL("random read %d of %" PRIu64 " bytes at %" PRIu64 " differs", i, count, off);
    }
    ws_disconnect(h);
    g_free(buf);
    ws_log("%s: %d random reads match", disk, n);
}

struct cache_files {
    GPtrArray *paths;
    uint64_t bytes;
};

/* The chunk files under CACHE/chunks/<hh>/. */
static struct cache_files list_cache(struct ws_server *s)
{
    struct cache_files f = {g_ptr_array_new_with_free_func(g_free), 0};
    char *top = g_strdup_printf("%s/chunks", s->cache);
    DIR *d = opendir(top);
    struct dirent *de;

    WS_CHECK(d != NULL, "%s is missing", top);
    while ((de = readdir(d))) {
        if (strlen(de->d_name) != 2)
            continue;
        char *sub = g_strdup_printf("%s/%s", top, de->d_name);
        DIR *d2 = opendir(sub);
        struct dirent *e2;
        while (d2 && (e2 = readdir(d2))) {
            struct stat sb;
            char *p = g_strdup_printf("%s/%s", sub, e2->d_name);
            if (e2->d_name[0] != '.' && stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
                f.bytes += (uint64_t)sb.st_size;
                g_ptr_array_add(f.paths, p);
            } else {
                g_free(p);
            }
        }
        if (d2)
            closedir(d2);
        g_free(sub);
    }
    closedir(d);
    g_free(top);
    return f;
}

/* Whether a cache file's content hashes to its name. */
static bool cache_file_ok(const char *path)
{
    gchar *data;
    gsize len;
    char hex[HASH_SHA256_HEX_LEN + 1];
    const char *name = strrchr(path, '/') + 1;

    if (!g_file_get_contents(path, &data, &len, NULL))
        return false;
    hash_sha256_hex(data, len, hex);
    g_free(data);
    return strcmp(hex, name) == 0;
}

static void part_a(void)
{
    const uint64_t len = 64 * MiB;
    const char *disk = "small-cache";
    struct ws_server *s = ws_server_new(store_kind());
    uint8_t *shadow = ws_shadow_new(len);

    ws_log("---- (a) cache-size=16M, 64 MiB of data, store %s", s->store_url);
    ws_server_set(s, "durability", "remote");
    ws_server_set(s, "cache-size", "16M");
    ws_disk_create(s, disk, "1G", "1M");
    ws_server_start(s);
    fill(s, disk, shadow, len);

    JsonNode *st = ws_disk_stats(s, disk);
    int64_t max = ws_json_int(st, "cache.max_bytes");
    int64_t used = ws_json_int(st, "cache.clean_bytes") + ws_json_int(st, "cache.dirty_bytes");
    WS_CHECK(max == 16 * (int64_t)MiB, "max_bytes %" PRId64, max);
    WS_CHECK(used <= max, "after the flush the cache holds %" PRId64 " bytes, over its bound",
             used);
    json_node_unref(st);

    ws_compare(s, disk, shadow, 0, len, CHUNK, 1);
    random_reads(s, disk, shadow, len, 200);
    ws_compare(s, disk, shadow, 0, len, CHUNK, 4);

    st = ws_disk_stats(s, disk);
    int64_t evictions = ws_json_int(st, "cache.evictions");
    int64_t fetches = ws_json_int(st, "cache.fetches");
    used = ws_json_int(st, "cache.clean_bytes") + ws_json_int(st, "cache.dirty_bytes");
    json_node_unref(st);
    ws_log("(a) %" PRId64 " evictions, %" PRId64 " fetches, %" PRId64 " bytes cached", evictions,
           fetches, used);
    WS_CHECK(evictions > 0, "64 MiB read through a 16 MiB cache without evicting");
    WS_CHECK(fetches >= 64, "64 MiB read through a 16 MiB cache: only %" PRId64 " fetches",
             fetches);
    WS_CHECK(used <= max, "the cache holds %" PRId64 " bytes, over its bound %" PRId64, used, max);
    ws_server_stop(s);
    struct cache_files f = list_cache(s);
    ws_log("(a) %u files, %" PRIu64 " bytes under %s/chunks", f.paths->len, f.bytes, s->cache);
    WS_CHECK(f.bytes <= (uint64_t)max, "%" PRIu64 " bytes of files in the cache, over its bound",
             f.bytes);
    g_ptr_array_unref(f.paths);
    ws_shadow_free(shadow, len);
}

static void parts_b_c(void)
{
    const uint64_t len = 32 * MiB;
    const char *disk = "warm";
    struct ws_server *s = ws_server_new(store_kind());
    uint8_t *shadow = ws_shadow_new(len);

    ws_log("---- (b) a corrupt cache file, (c) a warm restart, store %s", s->store_url);
    ws_server_set(s, "durability", "remote");
    /* (c) counts store requests while reading: the disk's lease is taken when it opens (below,
     * before counting), and not renewed during the reads. */
    ws_server_set(s, "lease-ttl", "600");
    ws_disk_create(s, disk, "1G", "1M");
    ws_server_start(s);
    fill(s, disk, shadow, len);
    ws_compare(s, disk, shadow, 0, len, CHUNK, 2);
    ws_server_stop(s);

    /* (b) Change one byte of one cached chunk. */
    struct cache_files f = list_cache(s);
    WS_CHECK(f.paths->len == len / CHUNK, "%u chunk files in the cache, expected %" PRIu64,
             f.paths->len, len / CHUNK);
    const char *victim = g_ptr_array_index(f.paths, ws_rand_below(f.paths->len));
    int fd = open(victim, O_RDWR);
    uint8_t byte;
    off_t where = (off_t)ws_rand_below(CHUNK);
    WS_CHECK(fd >= 0 && pread(fd, &byte, 1, where) == 1, "open %s", victim);
    byte ^= 0x01;
    WS_CHECK(pwrite(fd, &byte, 1, where) == 1, "pwrite %s", victim);
    close(fd);
    WS_CHECK(!cache_file_ok(victim), "the change did not stick");
    ws_log("(b) changed byte %lld of %s", (long long)where, victim);

    ws_server_start(s);
    ws_compare(s, disk, shadow, 0, len, CHUNK, 2);
    JsonNode *st = ws_disk_stats(s, disk);
    int64_t corrupt = ws_json_int(st, "cache.corrupt");
    int64_t fetches = ws_json_int(st, "cache.fetches");
    json_node_unref(st);
    ws_log("(b) corrupt %" PRId64 ", fetches %" PRId64, corrupt, fetches);
    WS_CHECK(corrupt == 1, "one corrupt cache file, stats say %" PRId64, corrupt);
    WS_CHECK(fetches == 1, "only the corrupt chunk should be fetched again, not %" PRId64, fetches);
    ws_server_stop(s);
    WS_CHECK(cache_file_ok(victim), "%s is still wrong after it was fetched again", victim);
    g_ptr_array_unref(f.paths);

    /* (c) Everything was read once: a restart keeps the cache warm. */
    ws_server_start(s);
    ws_disconnect(ws_connect(s, disk)); /* opens the disk, with its lease */
    st = ws_disk_stats(s, disk);
    int64_t requests_before = ws_json_int(st, "store.requests");
    json_node_unref(st);
    ws_compare(s, disk, shadow, 0, len, CHUNK, 2);
    random_reads(s, disk, shadow, len, 50);
    st = ws_disk_stats(s, disk);
    fetches = ws_json_int(st, "cache.fetches");
    int64_t hits = ws_json_int(st, "cache.hits");
    int64_t requests = ws_json_int(st, "store.requests") - requests_before;
    corrupt = ws_json_int(st, "cache.corrupt");
    json_node_unref(st);
    ws_log("(c) after a restart: %" PRId64 " fetches, %" PRId64 " hits, %" PRId64
           " store requests while reading",
           fetches, hits, requests);
    WS_CHECK(fetches == 0, "a warm cache fetched %" PRId64 " chunks after a restart", fetches);
    WS_CHECK(corrupt == 0, "%" PRId64 " corrupt files after a clean restart", corrupt);
    WS_CHECK(hits >= (int64_t)(len / CHUNK), "%" PRId64 " hits", hits);
    if (ws_have_s3())
        WS_CHECK(requests == 0, "the store saw %" PRId64 " requests while a warm cache was read",
                 requests);
    ws_server_stop(s);
    ws_shadow_free(shadow, len);
}

int main(void)
{
    ws_init("cache");
    part_a();
    parts_b_c();
    ws_log("PASS");
    return 0;
}
