/* many_dirty: more dirty chunks than the server may have files open.
 *
 * What a disk may hold unflushed (or flushed and not yet uploaded) is bounded by the disk and
 * the cache (DESIGN, storage invariant 6), not by the number of files the process may open.
 * nbdkit runs here with RLIMIT_NOFILE 1024 (soft and hard; many hosts and containers use such
 * limits, and 64 KiB chunks reach any limit quickly).  For durability=remote and local, 512
 * bytes go into each of 3000 distinct 64 KiB chunks of a 256 MiB disk (190 MiB of chunks)
 * with no flush between: every write must succeed; then one flush, and the disk must read
 * back right, also after a restart with an empty cache (remote) or after the upload (local). */
#include "server.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define KiB            (UINT64_C(1) << 10)
#define MiB            (UINT64_C(1) << 20)
#define CHUNK          (64 * KiB)
#define SIZE           (256 * MiB)
#define CHUNKS_WRITTEN 3000
#define NOFILE         1024

static void run(const char *durability)
{
    struct ws_server *s = ws_server_new(WS_STORE_FILE);
    uint8_t *shadow = ws_shadow_new(SIZE);
    uint8_t buf[512];
    uint64_t stride = SIZE / CHUNK / CHUNKS_WRITTEN; /* in chunks */
    double t;

    ws_log("---- durability=%s, RLIMIT_NOFILE %d", durability, NOFILE);
    s->nofile = NOFILE;
    ws_server_set(s, "durability", durability);
    ws_disk_create(s, "many", "256M", "64K");
    ws_server_start(s);
    struct nbd_handle *h = ws_connect(s, "many");
    t = ws_now();
    for (uint64_t i = 0; i < CHUNKS_WRITTEN; i++) {
        uint64_t off = i * stride * CHUNK + ws_rand_below(CHUNK - sizeof buf);
        ws_fill_random(buf, sizeof buf, ws_rand());
        if (nbd_pwrite(h, buf, sizeof buf, off, 0) == -1)
            WS_FAIL("write %" PRIu64 " of %d (a new dirty chunk, %" PRIu64 " dirty so far) "
                    "failed: %s",
                    i + 1, CHUNKS_WRITTEN, i, nbd_get_error());
        memcpy(shadow + off, buf, sizeof buf);
    }
    ws_log("%d chunks made dirty in %.2f s", CHUNKS_WRITTEN, ws_now() - t);
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);
    ws_compare(s, "many", shadow, 0, SIZE, CHUNK, 4);
    if (strcmp(durability, "local") == 0)
        ws_wait_uploaded(s, "many", 60);
    ws_server_stop(s);
    ws_server_wipe_cache(s);
    ws_server_start(s);
    ws_compare(s, "many", shadow, 0, SIZE, CHUNK, 4);
    ws_server_stop(s);
    ws_shadow_free(shadow, SIZE);
}

int main(void)
{
    ws_init("many_dirty");
    run("remote");
    run("local");
    ws_log("PASS");
    return 0;
}
