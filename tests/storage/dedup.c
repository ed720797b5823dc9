/* dedup: identical chunks are stored once, and writing content the store already has works.
 *
 * DESIGN, storage invariant 2: chunk keys come from a hash of the content, "so identical chunks
 * are stored once".  Real disks repeat content all the time (copies of a file, an image written
 * twice, a clone's blocks), so an upload must treat "the object is already there" as success.
 * On a file store, with 64 KiB chunks:
 *   1. durability=remote: one disk gets the same 64 KiB block at 8 chunk-aligned offsets and a
 *      second disk gets it too; each flush must succeed; the store holds the block once;
 *   2. the same bytes written again over an uploaded chunk, and flushed: must succeed;
 *   3. durability=local: the same, and the upload must complete within the upload delay;
 *   4. both disks read back right from an empty cache. */
#include "server.h"

#include <dirent.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KiB   (UINT64_C(1) << 10)
#define MiB   (UINT64_C(1) << 20)
#define CHUNK (64 * KiB)
#define SIZE  (16 * MiB)

/* Number of objects under STORE/chunks. */
static unsigned count_objects(struct ws_server *s)
{
    char *dir = g_strdup_printf("%s/chunks", s->store_dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    unsigned n = 0;

    while (d && (de = readdir(d)))
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    g_free(dir);
    return n;
}

static void write_copies(struct nbd_handle *h, uint8_t *shadow, const uint8_t *block,
                         const uint64_t *offsets, int n)
{
    for (int i = 0; i < n; i++) {
        WS_NBD(nbd_pwrite(h, block, CHUNK, offsets[i], 0));
        memcpy(shadow + offsets[i], block, CHUNK);
    }
}

static void flush_must_work(struct nbd_handle *h, const char *what)
{
    if (nbd_flush(h, 0) == -1)
        WS_FAIL("%s: the flush failed (%s); the plugin's upload treats an object that is "
                "already in the store as an error",
                what, nbd_get_error());
}

static void run(const char *durability)
{
    struct ws_server *s = ws_server_new(WS_STORE_FILE);
    uint8_t *a = ws_shadow_new(SIZE), *b = ws_shadow_new(SIZE);
    uint8_t block[CHUNK], other[CHUNK];
    const uint64_t offsets[] = {0,          CHUNK,      5 * CHUNK,   17 * CHUNK,
                                64 * CHUNK, 65 * CHUNK, 200 * CHUNK, SIZE - CHUNK};
    bool local = strcmp(durability, "local") == 0;

    ws_log("---- durability=%s", durability);
    ws_server_set(s, "durability", durability);
    ws_server_set(s, "upload-delay", "0.2");
    ws_disk_create(s, "a", "16M", "64K");
    ws_disk_create(s, "b", "16M", "64K");
    ws_server_start(s);
    ws_fill_random(block, sizeof block, ws_rand());
    ws_fill_random(other, sizeof other, ws_rand());

    /* 1. Eight copies in one disk, one flush. */
    struct nbd_handle *h = ws_connect(s, "a");
    write_copies(h, a, block, offsets, G_N_ELEMENTS(offsets));
    WS_NBD(nbd_pwrite(h, other, CHUNK, 3 * CHUNK, 0));
    memcpy(a + 3 * CHUNK, other, CHUNK);
    flush_must_work(h, "eight identical chunks in one flush");
    if (local)
        ws_wait_uploaded(s, "a", 10);
    /* The same block in another disk. */
    struct nbd_handle *hb = ws_connect(s, "b");
    write_copies(hb, b, block, offsets, 2);
    flush_must_work(hb, "a chunk that another disk already stored");
    if (local)
        ws_wait_uploaded(s, "b", 10);

    /* 2. The same bytes again over an uploaded chunk (an image copied twice). */
    write_copies(h, a, block, offsets, 1);
    WS_NBD(nbd_pwrite(h, other, CHUNK, 3 * CHUNK, 0));
    flush_must_work(h, "the same content written again");
    if (local)
        ws_wait_uploaded(s, "a", 10);
    ws_disconnect(h);
    ws_disconnect(hb);

    unsigned objects = count_objects(s);
    ws_log("%u objects in the store for 2 distinct chunks", objects);
    WS_CHECK(objects == 2, "the store has %u chunk objects; the disks hold 2 distinct chunks",
             objects);

    /* 4. Everything is in the store. */
    ws_server_stop(s);
    ws_server_wipe_cache(s);
    ws_server_start(s);
    ws_compare(s, "a", a, 0, SIZE, CHUNK, 2);
    ws_compare(s, "b", b, 0, SIZE, CHUNK, 2);
    ws_server_stop(s);
    ws_shadow_free(a, SIZE);
    ws_shadow_free(b, SIZE);
}

int main(void)
{
    ws_init("dedup");
    run("remote");
    run("local");
    ws_log("PASS");
    return 0;
}
