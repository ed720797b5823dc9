/* ahead: with durability=remote, whole chunks are uploaded before the flush asks for them.
 *
 * A sequential writer that flushes at the end should find its chunks in the store already
 * (nbdkit-plugin/disk_ahead.c).  On a file store, 1 MiB chunks:
 *   1. eight whole chunks written, no flush: they are uploaded within a few seconds anyway
 *      (stats.uploads_ahead), and nothing is committed yet;
 *   2. one of them is then changed by a partial write, another rewritten whole with other
 *      bytes, another zeroed: the flush must upload the new content, not the early upload;
 *   3. the flush put the early uploads in the cache by linking their files, not by copies
 *      (cache.copy_bytes), and a restart on that cache reads them with no fetch;
 *   4. after a restart with an empty cache, the store gives back exactly what was flushed. */
#include "server.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB   (UINT64_C(1) << 20)
#define CHUNK MiB
#define SIZE  (16 * MiB)

static int64_t stat_of(struct ws_server *s, const char *path)
{
    JsonNode *st = ws_disk_stats(s, "a");
    int64_t v = ws_json_int(st, path);
    json_node_unref(st);
    return v;
}

int main(void)
{
    ws_init("ahead");
    struct ws_server *s = ws_server_new(WS_STORE_FILE);
    uint8_t *shadow = ws_shadow_new(SIZE);

    ws_server_set(s, "durability", "remote");
    ws_disk_create(s, "a", "16M", "1M");
    ws_server_start(s);
    struct nbd_handle *h = ws_connect(s, "a");

    /* 1. Whole chunks, no flush. */
    ws_write_random(h, shadow, 0, 8 * CHUNK, ws_rand());
    double start = ws_now();
    while (stat_of(s, "stats.uploads_ahead") < 8) {
        WS_CHECK(ws_now() - start < 30, "8 whole chunks written, only %lld uploaded ahead",
                 (long long)stat_of(s, "stats.uploads_ahead"));
        usleep(50 * 1000);
    }
    ws_log("8 whole chunks uploaded ahead of the flush in %.2f s", ws_now() - start);
    WS_CHECK(stat_of(s, "stats.committed_gen") == 0, "something was committed without a flush");

    /* 2. Changed after their early upload. */
    ws_write_random(h, shadow, 2 * CHUNK + 5000, 300, ws_rand());
    ws_write_random(h, shadow, 5 * CHUNK, CHUNK, ws_rand());
    WS_NBD(nbd_zero(h, CHUNK, 7 * CHUNK, 0));
    memset(shadow + 7 * CHUNK, 0, CHUNK);
    WS_NBD(nbd_flush(h, 0));
    ws_compare(s, "a", shadow, 0, SIZE, CHUNK, 2);
    ws_disconnect(h);

    /* 3. Every chunk came from a whole file: the cache got links, and no byte was copied. */
    int64_t copied = stat_of(s, "cache.copy_bytes");
    WS_CHECK(copied == 0, "%lld bytes were copied into the cache for chunks it could link",
             (long long)copied);
    ws_server_stop(s);
    ws_server_start(s);
    ws_compare(s, "a", shadow, 0, SIZE, CHUNK, 2);
    WS_CHECK(stat_of(s, "cache.fetches") == 0,
             "%lld chunks were fetched after a restart on the cache the flush filled",
             (long long)stat_of(s, "cache.fetches"));

    /* 4. The store alone. */
    ws_server_stop(s);
    ws_server_wipe_cache(s);
    ws_server_start(s);
    ws_compare(s, "a", shadow, 0, SIZE, CHUNK, 2);
    ws_server_stop(s);
    ws_shadow_free(shadow, SIZE);
    ws_log("PASS");
    return 0;
}
