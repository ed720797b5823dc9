/* restore_cli: `wisp disk restore-meta` against a replica a real server made.
 *
 *   restore_cli file|s3
 *
 * A server (durability=remote, replica=cli) writes a disk, flushes, checkpoints and stops.
 * Then: restore-meta into the server's own (non-empty) directory is refused; into a fresh one
 * it restores the disk and its checkpoint with --verify full, every chunk hashed; with a chunk
 * object deleted, --verify full fails naming it and installs nothing; with a chunk object
 * corrupted, likewise; an unknown replica name fails clearly; and a server started on the
 * restored directory with an empty cache reads every byte back. */
#include "server.h"
#include "store.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KiB  (UINT64_C(1) << 10)
#define MiB  (UINT64_C(1) << 20)
#define SIZE (16 * MiB)

static int restore_meta(const char *url, const char *dir, const char *replica, const char *verify,
                        char **out, char **err)
{
    return ws_runl(out, err, 120, ws_cli_path(), "disk", "restore-meta", "--store", url, "--meta",
                   dir, "--replica", replica, "--verify", verify, "--json", NULL);
}

/* The store may hold chunks no version references: uploads ahead of the flush whose chunk was
 * written again before it.  Damaging one of those proves nothing, so the test damages a chunk
 * of the disk's current content, found by hashing the shadow copy. */
struct live_chunk {
    GHashTable *hashes; /* hex SHA-256 of each non-zero 64 KiB chunk of the shadow */
    char key[80];
};

static int first_live_chunk(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct live_chunk *lc = opaque;
    const char *slash = strrchr(key, '/');

    if (!g_hash_table_contains(lc->hashes, slash ? slash + 1 : key))
        return 0;
    snprintf(lc->key, sizeof lc->key, "%s", key);
    return 1;
}

static GHashTable *shadow_chunk_hashes(const uint8_t *shadow, uint64_t size, uint64_t chunk)
{
    GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    static const uint8_t zero[64 * KiB];

    g_assert(chunk == sizeof zero);
    for (uint64_t off = 0; off < size; off += chunk)
        if (memcmp(shadow + off, zero, chunk) != 0)
            g_hash_table_add(set,
                             g_compute_checksum_for_data(G_CHECKSUM_SHA256, shadow + off, chunk));
    return set;
}

static char *fresh_dir(const char *tag)
{
    static int n;
    return g_strdup_printf("%s/restored-%s-%d", ws_tmpdir(), tag, n++);
}

static void expect_failure(const char *url, const char *what, const char *key, const char *word)
{
    char *dir = fresh_dir(what), *out = NULL, *err = NULL;
    char *db = g_strdup_printf("%s/wisp.db", dir);
    int r = restore_meta(url, dir, "cli", "full", &out, &err);

    WS_CHECK(r == 1, "restore-meta --verify full with a %s chunk: status %d: %s%s", what, r, out,
             err);
    WS_CHECK(strstr(err, key) != NULL, "the error does not name %s: %s", key, err);
    WS_CHECK(strstr(err, word) != NULL, "the error does not say '%s': %s", word, err);
    WS_CHECK(access(db, F_OK) < 0, "%s was installed although verification failed", db);
    ws_log("%s chunk: refused: %s", what,
           strstr(err, "verification") ? strstr(err, "verification") : err);
    g_free(out);
    g_free(err);
    g_free(db);
    g_free(dir);
}

int main(int argc, char **argv)
{
    enum ws_store_kind kind;
    struct ws_server *s1, *s2;
    struct nbd_handle *h;
    uint8_t *shadow, *buf;
    char *out = NULL, *err = NULL, *dir;
    int r;

    if (argc != 2 || (strcmp(argv[1], "file") && strcmp(argv[1], "s3"))) {
        fprintf(stderr, "usage: restore_cli file|s3\n");
        return 2;
    }
    kind = strcmp(argv[1], "s3") == 0 ? WS_STORE_S3 : WS_STORE_FILE;
    char *name = g_strdup_printf("restore_cli_%s", argv[1]);
    ws_init(name);
    g_free(name);

    s1 = ws_server_new(kind);
    ws_server_set(s1, "durability", "remote");
    ws_server_set(s1, "replica", "cli");
    ws_server_start(s1);
    ws_disk_create(s1, "d", "16M", "64K");
    shadow = ws_shadow_new(SIZE);
    buf = g_malloc(256 * KiB);
    h = ws_connect(s1, "d");
    for (int i = 0; i < 12; i++) {
        uint64_t len = 1 + ws_rand_below(256 * KiB), off = ws_rand_below(SIZE - len);
        ws_fill_random(buf, len, ws_rand());
        WS_NBD(nbd_pwrite(h, buf, len, off, 0));
        memcpy(shadow + off, buf, len);
    }
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);
    WS_CHECK(ws_cli(s1, NULL, &err, "disk", "checkpoint", "d", "first", NULL) == 0, "%s", err);
    g_free(err);
    ws_server_stop(s1);

    /* A directory in use is refused. */
    r = restore_meta(s1->store_url, s1->meta, "cli", "sample", &out, &err);
    WS_CHECK(r == 1 && strstr(err, "not empty"), "restore-meta into %s: status %d: %s", s1->meta, r,
             err);
    ws_log("non-empty directory: refused: %s", err);
    g_free(out);
    g_free(err);

    /* An unknown replica. */
    dir = fresh_dir("unknown");
    r = restore_meta(s1->store_url, dir, "nope", "sample", &out, &err);
    WS_CHECK(r == 1 && strstr(err, "no replica 'nope'"), "unknown replica: status %d: %s", r, err);
    g_free(out);
    g_free(err);
    g_free(dir);

    /* A good restore, fully verified. */
    char *good = fresh_dir("good");
    r = restore_meta(s1->store_url, good, "cli", "full", &out, &err);
    WS_CHECK(r == 0, "restore-meta --verify full: status %d: %s", r, err);
    JsonParser *p = json_parser_new();
    WS_CHECK(json_parser_load_from_data(p, out, -1, NULL), "not JSON: %s", out);
    JsonNode *root = json_parser_get_root(p);
    int64_t chunks = ws_json_int(root, "chunks"), hashed = ws_json_int(root, "chunks_hashed");
    WS_CHECK(ws_json_int(root, "disks") == 1 && ws_json_int(root, "checkpoints") == 1,
             "restored: %s", out);
    WS_CHECK(chunks > 0 && hashed == chunks, "verify full hashed %" PRId64 " of %" PRId64, hashed,
             chunks);
    ws_log("restored: %s", out);
    g_object_unref(p);
    g_free(out);
    g_free(err);

    /* Damage one chunk object, then another kind of damage. */
    struct store *st;
    struct live_chunk lc = {.hashes = shadow_chunk_hashes(shadow, SIZE, 64 * KiB)};
    const char *key = lc.key;
    void *data;
    size_t len;
    WS_CHECK(store_open(s1->store_url, NULL, &st) == 0, "store_open: %s", store_last_error());
    WS_CHECK(store_list(st, "chunks/", first_live_chunk, &lc) >= 0 && key[0],
             "no chunk of the disk's content in the store");
    WS_CHECK(store_get(st, key, &data, &len) == 0, "get %s", key);
    WS_CHECK(store_delete(st, key) == 0, "delete %s", key);
    expect_failure(s1->store_url, "missing", key, "missing");
    ((uint8_t *)data)[len / 3] ^= 0x10;
    WS_CHECK(store_put(st, key, data, len) == 0, "put %s", key);
    expect_failure(s1->store_url, "corrupt", key, "corrupt");
    ((uint8_t *)data)[len / 3] ^= 0x10;
    WS_CHECK(store_put(st, key, data, len) == 0, "put %s", key);
    free(data);
    store_close(st);
    g_hash_table_destroy(lc.hashes);

    /* A server on the restored metadata, with an empty cache, serves the disk. */
    s2 = ws_server_new(kind);
    g_free(s2->store_url);
    s2->store_url = g_strdup(s1->store_url);
    WS_CHECK(ws_runl(NULL, NULL, 30, "rm", "-rf", s2->meta, NULL) == 0, "rm");
    WS_CHECK(ws_runl(NULL, NULL, 30, "cp", "-a", good, s2->meta, NULL) == 0, "cp");
    ws_server_set(s2, "replica", "cli");
    ws_server_start(s2);
    ws_compare(s2, "d", shadow, 0, SIZE, 64 * KiB, 2);
    ws_compare(s2, "d@first", shadow, 0, SIZE, 64 * KiB, 2);
    ws_log("a server on the restored metadata reads every byte back");
    ws_server_stop(s2);
    g_free(good);
    g_free(buf);
    ws_shadow_free(shadow, SIZE);
    return 0;
}
