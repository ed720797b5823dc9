/* import: `wisp disk import NAME FILE` writes a file's data through the real data path.
 *
 *   import file|s3
 *
 * A sparse file (65 MiB + a bit, 1 MiB chunks) gets random data at a few offsets, one of them
 * across a chunk boundary and one in the short last chunk, and a chunk of written zeros (data
 * to SEEK_DATA, zeros to the store).  Then:
 *   1. the import succeeds; its JSON counts the chunks with data as written and every other
 *      chunk as zero, and the store holds exactly one object per chunk with data;
 *   2. the disk is sized to the file, rounded up to a chunk, and a server started afterwards
 *      serves exactly the file's bytes (zeros beyond it), also from an empty cache (from the
 *      store);
 *   3. errors leave nothing behind: a missing file and an existing name fail before anything
 *      is made; an import whose nbdkit cannot start deletes the disk it created; and an
 *      import while a server holds the metadata is refused. */
#include "server.h"

#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB       (UINT64_C(1) << 20)
#define CHUNK     MiB
#define FILE_SIZE (65 * MiB + 12345)
#define DISK_SIZE (66 * MiB)

static int count_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    (*(unsigned *)opaque)++;
    return 0;
}

/* Objects under chunks/ in the server's store (file or S3). */
static unsigned count_chunks(struct ws_server *s)
{
    struct store *st;
    unsigned n = 0;

    WS_CHECK(store_open(s->store_url, NULL, &st) == 0, "store_open %s: %s", s->store_url,
             store_last_error());
    WS_CHECK(store_list(st, "chunks/", count_one, &n) == 0, "store_list: %s", store_last_error());
    store_close(st);
    return n;
}

/* Writes random bytes at off into the file and the shadow. */
static void put_random(int fd, uint8_t *shadow, uint64_t off, size_t len, uint64_t seed)
{
    ws_fill_random(shadow + off, len, seed);
    WS_CHECK(pwrite(fd, shadow + off, len, (off_t)off) == (ssize_t)len, "pwrite: %s",
             strerror(errno));
}

static int import(struct ws_server *s, const char *name, const char *file, char **out, char **err,
                  const char *extra)
{
    const char *argv[20];
    int n = 0;

    argv[n++] = ws_cli_path();
    argv[n++] = "disk";
    argv[n++] = "import";
    argv[n++] = name;
    argv[n++] = file;
    argv[n++] = "--store";
    argv[n++] = s->store_url;
    argv[n++] = "--meta";
    argv[n++] = s->meta;
    argv[n++] = "--cache";
    argv[n++] = s->cache;
    argv[n++] = "--json";
    if (extra)
        argv[n++] = extra;
    argv[n] = NULL;
    return ws_run(out, err, 120, argv);
}

static bool disk_listed(struct ws_server *s, const char *name)
{
    char *out;
    bool found;

    WS_CHECK(ws_cli(s, &out, NULL, "disk", "list", NULL) == 0, "disk list");
    found = strstr(out, name) != NULL;
    g_free(out);
    return found;
}

int main(int argc, char **argv)
{
    bool s3 = argc > 1 && strcmp(argv[1], "s3") == 0;
    char *out, *err;
    int r;

    ws_init(s3 ? "import_s3" : "import_file");
    struct ws_server *s = ws_server_new(s3 ? WS_STORE_S3 : WS_STORE_FILE);
    uint8_t *shadow = ws_shadow_new(DISK_SIZE);
    char *file = g_strdup_printf("%s/image.raw", ws_tmpdir());
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    WS_CHECK(fd >= 0, "open %s: %s", file, strerror(errno));
    WS_CHECK(ftruncate(fd, FILE_SIZE) == 0, "ftruncate: %s", strerror(errno));

    put_random(fd, shadow, 0, 4096, 1);                    /* chunk 0 */
    put_random(fd, shadow, 5 * MiB - 1000, 300 * 1024, 2); /* chunks 4 and 5 */
    put_random(fd, shadow, 40 * MiB + 12345, 10, 3);       /* chunk 40: 10 bytes */
    put_random(fd, shadow, FILE_SIZE - 1000, 1000, 4);     /* chunk 65, the short last one */
    uint8_t *zeros = g_malloc0(CHUNK);                     /* chunk 20: written zeros */
    WS_CHECK(pwrite(fd, zeros, CHUNK, 20 * MiB) == (ssize_t)CHUNK, "pwrite: %s", strerror(errno));
    g_free(zeros);
    WS_CHECK(fsync(fd) == 0, "fsync");
    close(fd);
    const unsigned with_data = 5, chunks = 66;

    /* 1. The import. */
    r = import(s, "img", file, &out, &err, NULL);
    WS_CHECK(r == 0, "import: status %d: %s", r, err);
    ws_log("import: %s", out);
    JsonParser *p = json_parser_new();
    WS_CHECK(json_parser_load_from_data(p, out, -1, NULL), "not JSON: %s", out);
    JsonNode *j = json_parser_get_root(p);
    WS_CHECK(ws_json_int(j, "size") == (int64_t)DISK_SIZE, "size");
    WS_CHECK(ws_json_int(j, "bytes") == (int64_t)FILE_SIZE, "bytes");
    WS_CHECK(ws_json_int(j, "chunks") == chunks, "chunks");
    WS_CHECK(ws_json_int(j, "chunks_written") == with_data, "chunks_written %" PRId64,
             ws_json_int(j, "chunks_written"));
    WS_CHECK(ws_json_int(j, "chunks_zero") == chunks - with_data, "chunks_zero %" PRId64,
             ws_json_int(j, "chunks_zero"));
    g_object_unref(p);
    g_free(out);
    g_free(err);
    unsigned stored = count_chunks(s);
    WS_CHECK(stored == with_data, "%u objects under chunks/, expected %u (no zero chunk)", stored,
             with_data);

    /* 2. What a server serves afterwards. */
    ws_server_start(s);
    struct nbd_handle *h = ws_connect(s, "img");
    WS_CHECK(nbd_get_size(h) == (int64_t)DISK_SIZE, "export size %" PRId64, nbd_get_size(h));
    ws_disconnect(h);
    ws_compare(s, "img", shadow, 0, DISK_SIZE, CHUNK, 2);
    ws_log("the disk reads back as the file");

    /* 3. Errors. */
    r = import(s, "other", file, NULL, &err, NULL);
    WS_CHECK(r == 1 && strstr(err, "held by a running server"), "import while served: %d: %s", r,
             err);
    g_free(err);
    ws_server_stop(s);

    char *missing = g_strdup_printf("%s/no-such-file", ws_tmpdir());
    r = import(s, "other", missing, NULL, &err, NULL);
    WS_CHECK(r == 1 && strstr(err, "No such file"), "missing file: %d: %s", r, err);
    WS_CHECK(!disk_listed(s, "other"), "a failed import left the disk 'other'");
    g_free(err);
    g_free(missing);

    r = import(s, "img", file, NULL, &err, NULL);
    WS_CHECK(r == 1 && strstr(err, "exists"), "existing disk: %d: %s", r, err);
    g_free(err);

    /* In a sanitizer build nbdkit hangs on its way out of a failed start (p11-kit's
     * destructor on glibc's setlocale lock, tests/storagefault/meson.build): the import
     * would only wait for its start-up timeout. */
    if (!ws_sanitizer_build()) {
        r = import(s, "broken", file, NULL, &err, "--plugin=/nonexistent/nbdkit-wisp-plugin.so");
        WS_CHECK(r == 1 && strstr(err, "failed") && strstr(err, "deleted"),
                 "import without a plugin: %d: %s", r, err);
        WS_CHECK(!disk_listed(s, "broken"), "the failed import left the disk 'broken'");
        g_free(err);
    }

    /* The first disk is untouched by all that, and its data is in the store: read it back
     * with an empty cache. */
    ws_server_wipe_cache(s);
    ws_server_start(s);
    ws_compare(s, "img", shadow, 0, DISK_SIZE, CHUNK, 1);
    ws_server_stop(s);
    ws_shadow_free(shadow, DISK_SIZE);
    g_free(file);
    ws_log("ok");
    return 0;
}
