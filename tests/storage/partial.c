/* partial: a small write to a chunk that has data copies nothing.
 *
 * DESIGN, storage invariant 4, and issue 3: "read-modify-write only for partial chunks".  A
 * 4 KiB write into a 1 MiB chunk makes a sparse dirty file that holds the blocks written; the
 * rest of the chunk stays the committed chunk (its base) until the upload merges the two.  On a
 * file store, with 1 MiB chunks, for each durability mode:
 *   1. four chunks are written whole and uploaded, then the cache is emptied (a restart);
 *   2. an aligned 4 KiB write fetches nothing and its file takes a few KiB on disk, not 1 MiB;
 *      unaligned writes (across a block boundary, at the start, a zero range) read back right;
 *   3. a second write to a chunk whose first one is flushed but not uploaded (durability=local:
 *      a long upload delay) builds on it;
 *   4. durability=local: kill -9 after the flush, restart: the journal's block bitmaps and bases
 *      bring back every flushed byte;
 *   5. after the upload, a restart with an empty cache reads the merged chunks from the store;
 *   6. durability=local: small writes to one chunk, each followed by a flush, reuse the chunk's
 *      superseded file (its spare, nbdkit-plugin/disk_internal.h) rather than making a new file
 *      each flush and unlinking the old one: the dirty directory shows at most two names;
 *   7. durability=local, no upload meanwhile: a new block of one chunk written before each of
 *      many flushes copies only each flush's own blocks into the reused file (stats.copy_bytes),
 *      not every block written to the chunk so far, and the data still reads back right, also
 *      after kill -9;
 *   8. durability=local: a file superseded while an upload round still reads it is reused
 *      once the round lets go of it, not unlinked and replaced by a new one. */
#include "server.h"

#include <dirent.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KiB   (UINT64_C(1) << 10)
#define MiB   (UINT64_C(1) << 20)
#define CHUNK MiB
#define SIZE  (8 * MiB)

/* Bytes allocated by the files in the cache's dirty directories. */
static uint64_t dirty_allocated(struct ws_server *s)
{
    char *top = g_strdup_printf("%s/dirty", s->cache);
    GDir *disks = g_dir_open(top, 0, NULL);
    const char *disk, *name;
    uint64_t total = 0;

    while (disks && (disk = g_dir_read_name(disks))) {
        char *dir = g_build_filename(top, disk, NULL);
        GDir *files = g_dir_open(dir, 0, NULL);
        while (files && (name = g_dir_read_name(files))) {
            char *path = g_build_filename(dir, name, NULL);
            struct stat st;
            if (stat(path, &st) == 0)
                total += (uint64_t)st.st_blocks * 512;
            g_free(path);
        }
        if (files)
            g_dir_close(files);
        g_free(dir);
    }
    if (disks)
        g_dir_close(disks);
    g_free(top);
    return total;
}

/* Adds the names of the files in the cache's dirty directories to names. */
static void dirty_names(struct ws_server *s, GHashTable *names)
{
    char *top = g_strdup_printf("%s/dirty", s->cache);
    GDir *disks = g_dir_open(top, 0, NULL);
    const char *disk, *name;

    while (disks && (disk = g_dir_read_name(disks))) {
        char *dir = g_build_filename(top, disk, NULL);
        GDir *files = g_dir_open(dir, 0, NULL);
        while (files && (name = g_dir_read_name(files)))
            g_hash_table_add(names, g_strdup(name));
        if (files)
            g_dir_close(files);
        g_free(dir);
    }
    if (disks)
        g_dir_close(disks);
    g_free(top);
}

static int64_t stat_of(struct ws_server *s, const char *path);

static int64_t copy_bytes(struct ws_server *s)
{
    return stat_of(s, "stats.copy_bytes");
}

static int64_t stat_of(struct ws_server *s, const char *path)
{
    JsonNode *st = ws_disk_stats(s, "p");
    int64_t n = ws_json_int(st, path);
    json_node_unref(st);
    return n;
}

static int64_t fetches(struct ws_server *s)
{
    JsonNode *st = ws_disk_stats(s, "p");
    int64_t n = ws_json_int(st, "cache.fetches");
    json_node_unref(st);
    return n;
}

static void run(const char *durability)
{
    struct ws_server *s = ws_server_new(WS_STORE_FILE);
    uint8_t *shadow = ws_shadow_new(SIZE);
    bool local = strcmp(durability, "local") == 0;

    ws_log("---- durability=%s", durability);
    ws_server_set(s, "durability", durability);
    /* Long enough that nothing is uploaded before step 4 asks for it. */
    ws_server_set(s, "upload-delay", local ? "600" : "1");
    ws_disk_create(s, "p", "8M", "1M");
    ws_server_start(s);

    /* 1. Four whole chunks, uploaded; then an empty cache. */
    struct nbd_handle *h = ws_connect(s, "p");
    ws_write_random(h, shadow, 0, 4 * CHUNK, ws_rand());
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);
    ws_server_stop(s);
    if (local) {
        ws_server_set(s, "upload-delay", "0");
        ws_server_start(s);
        ws_wait_uploaded(s, "p", 30);
        ws_server_stop(s);
        ws_server_set(s, "upload-delay", "600");
    }
    ws_server_wipe_cache(s);
    ws_server_start(s);
    h = ws_connect(s, "p");

    /* 2. An aligned 4 KiB write: nothing fetched, nothing copied. */
    int64_t before = fetches(s);
    ws_write_random(h, shadow, 0 * CHUNK + 12 * 4 * KiB, 4 * KiB, ws_rand());
    int64_t fetched = fetches(s) - before;
    uint64_t allocated = dirty_allocated(s);
    ws_log("an aligned 4 KiB write into a stored 1 MiB chunk: %lld fetches, %llu bytes "
           "allocated in dirty files",
           (long long)fetched, (unsigned long long)allocated);
    WS_CHECK(fetched == 0, "the write fetched %lld chunks: it loaded the chunk it changes",
             (long long)fetched);
    WS_CHECK(allocated <= 64 * KiB,
             "the dirty file takes %llu bytes: the write copied its 1 MiB chunk",
             (unsigned long long)allocated);
    /* Unaligned: across a block boundary, a chunk's first bytes, a zeroed range. */
    ws_write_random(h, shadow, 1 * CHUNK + 3 * 4 * KiB - 50, 100, ws_rand());
    ws_write_random(h, shadow, 2 * CHUNK, 512, ws_rand());
    WS_NBD(nbd_zero(h, 10000, 3 * CHUNK + 777, 0));
    memset(shadow + 3 * CHUNK + 777, 0, 10000);
    /* A write that starts in one chunk and ends in the next. */
    ws_write_random(h, shadow, 2 * CHUNK - 6000, 9000, ws_rand());
    ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
    WS_NBD(nbd_flush(h, 0));

    /* 3. Over a chunk flushed but not uploaded yet (local), or uploaded (remote). */
    ws_write_random(h, shadow, 0 * CHUNK + 200 * 4 * KiB + 1, 4 * KiB, ws_rand());
    ws_write_random(h, shadow, 1 * CHUNK + 3 * 4 * KiB - 10, 20, ws_rand());
    ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);

    /* 4. A crash after the flush: the journal has it. */
    if (local) {
        ws_server_kill9(s);
        ws_server_start(s);
        ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
        ws_server_stop(s);
        ws_server_set(s, "upload-delay", "0");
        ws_server_start(s);
        ws_wait_uploaded(s, "p", 30);
    }

    /* 6. Flush after flush into one chunk: two files take turns (local: no upload meanwhile). */
    if (local) {
        ws_server_stop(s);
        ws_server_set(s, "upload-delay", "600");
        ws_server_start(s);
        h = ws_connect(s, "p");
        GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        for (int i = 0; i < 8; i++) {
            ws_write_random(h, shadow, 6 * CHUNK + (uint64_t)(i % 4) * 4 * KiB, 4 * KiB, ws_rand());
            WS_NBD(nbd_flush(h, 0));
            if (i >= 2)
                dirty_names(s, names);
        }
        ws_log("8 flushes of one chunk: %u file names in the dirty directory after the second",
               g_hash_table_size(names));
        WS_CHECK(g_hash_table_size(names) <= 2,
                 "%u files were made for one chunk over 6 flushes: superseded files are not "
                 "reused",
                 g_hash_table_size(names));
        g_hash_table_destroy(names);
        ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
        ws_disconnect(h);
        ws_server_kill9(s);
        ws_server_start(s);
        ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
        ws_server_stop(s);
        ws_server_set(s, "upload-delay", "0");
        ws_server_start(s);
        ws_wait_uploaded(s, "p", 30);
    }

    /* 7. Many flushes of one chunk, a new block each: copies grow with the blocks written. */
    if (local) {
        enum { FLUSHES = 48 };
        ws_server_stop(s);
        ws_server_set(s, "upload-delay", "600");
        ws_server_start(s);
        h = ws_connect(s, "p");
        int64_t copies_before = copy_bytes(s);
        for (int i = 0; i < FLUSHES; i++) {
            ws_write_random(h, shadow, 7 * CHUNK + (uint64_t)i * 4 * KiB, 4 * KiB, ws_rand());
            /* and one block written again, so the refreshed file must take the newer bytes */
            ws_write_random(h, shadow, 7 * CHUNK + 100 * 4 * KiB, 4 * KiB, ws_rand());
            WS_NBD(nbd_flush(h, 0));
        }
        int64_t copied = copy_bytes(s) - copies_before;
        /* Each flush's own two blocks, copied once: 2 × FLUSHES blocks at most.  Copying the
         * whole written set each time gives about FLUSHES² / 2 blocks. */
        ws_log("%d flushes of one new block each into one chunk: %lld bytes copied between "
               "chunk files",
               FLUSHES, (long long)copied);
        WS_CHECK(copied <= (int64_t)(2 * FLUSHES * 4 * KiB),
                 "%lld bytes copied for %d flushes of two 4 KiB blocks: every flush copies all "
                 "the blocks written to the chunk so far",
                 (long long)copied, FLUSHES);
        ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
        ws_disconnect(h);
        ws_server_kill9(s);
        ws_server_start(s);
        ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
        ws_server_stop(s);
        ws_server_set(s, "upload-delay", "0");
        ws_server_start(s);
        ws_wait_uploaded(s, "p", 30);
    }

    /* 8. A superseded file still read by a round (paused before its commit) becomes the spare
     * all the same. */
    if (local) {
        ws_server_stop(s);
        ws_server_set(s, "upload-delay", "0");
        setenv("WISP_TEST_COMMIT_DELAY_MS", "2000", 1);
        ws_server_start(s);
        unsetenv("WISP_TEST_COMMIT_DELAY_MS");
        h = ws_connect(s, "p");
        GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        ws_write_random(h, shadow, 4 * CHUNK, 4 * KiB, ws_rand());
        WS_NBD(nbd_flush(h, 0));
        int64_t first = stat_of(s, "stats.flush_gen");
        double t0 = ws_now();
        while (ws_server_log_count(s, "WISP_TEST_COMMIT_DELAY_MS") < 1) {
            WS_CHECK(ws_now() - t0 < 60, "no upload round paused before its commit");
            usleep(20000);
        }
        dirty_names(s, names);
        /* The round holds the flushed file: this write makes a new one, and the flush
         * supersedes the held one. */
        ws_write_random(h, shadow, 4 * CHUNK + 4 * KiB, 4 * KiB, ws_rand());
        WS_NBD(nbd_flush(h, 0));
        dirty_names(s, names);
        while (stat_of(s, "stats.committed_gen") < first) {
            WS_CHECK(ws_now() - t0 < 60, "flush %lld not committed after 60 s", (long long)first);
            usleep(50000);
        }
        /* The round let go of it: the next file of the chunk is that one again. */
        ws_write_random(h, shadow, 4 * CHUNK + 2 * 4 * KiB, 4 * KiB, ws_rand());
        dirty_names(s, names);
        ws_log("a chunk written over 3 flushes, the first file held by a round: %u file names",
               g_hash_table_size(names));
        WS_CHECK(g_hash_table_size(names) <= 2,
                 "%u files were made for one chunk: a file superseded while a round held it was "
                 "not reused",
                 g_hash_table_size(names));
        g_hash_table_destroy(names);
        ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
        WS_NBD(nbd_flush(h, 0));
        ws_disconnect(h);
        ws_server_kill9(s);
        ws_server_start(s);
        ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
        ws_wait_uploaded(s, "p", 30);
    }

    /* 5. The store alone. */
    ws_server_stop(s);
    ws_server_wipe_cache(s);
    ws_server_start(s);
    ws_compare(s, "p", shadow, 0, SIZE, CHUNK, 2);
    ws_server_stop(s);
    ws_shadow_free(shadow, SIZE);
}

int main(void)
{
    ws_init("partial");
    run("remote");
    run("local");
    ws_log("PASS");
    return 0;
}
