/* versions: checkpoint, restore and clone through a running server (--control), checked byte
 * for byte against shadow copies of every disk and checkpoint.
 *
 * The server runs with durability=local and upload-delay=3600, so nothing is uploaded unless
 * a version operation makes it: every checkpoint and clone of a head must flush and upload the
 * writes acknowledged so far (flushed or not) itself.
 *
 *  - checkpoint a disk, clone its head (with writes flushed but not uploaded, and writes not
 *    even flushed) and its checkpoint; write to the clones and to the base: each disk and the
 *    checkpoint keep their own content;
 *  - checkpoint, write, checkpoint, write, restore: the disk is the first checkpoint's bytes
 *    exactly, over the whole disk; restore again to the second; write after a restore;
 *  - restore while a connection is open is refused with a message naming --force; with
 *    --force the open connection reads the restored data next, its unflushed writes gone;
 *  - DISK@CKPT is read-only: libnbd sees is_read_only, nbd_pwrite fails with EPERM (zero and
 *    trim, not advertised, fail with EINVAL in libnbd); with libnbd's strict mode off the
 *    server itself refuses all three with EPERM;
 *  - checkpoint names are validated (CLI and raw control requests); duplicates, unknown
 *    disks and checkpoints, and over-long comments are refused;
 *  - checkpoint-delete while the checkpoint export is connected, and disk delete while a
 *    checkpoint export of it is connected, are refused; then work;
 *  - deleting a disk deletes its checkpoints (a new disk of the same name has none, and no
 *    checkpoint row is left in the database), but not a clone made from one;
 *  - a checkpoint or clone taken while another connection writes block after block holds
 *    every write acknowledged before the command and is a prefix of the stream (nothing torn,
 *    nothing missing before a write it holds); a restore --force with the writer idle, then
 *    under the same stream, drops the writes acknowledged before it and keeps those after it;
 *  - after a restart everything still compares equal.
 *
 * With the argument "s3" the same runs on the radosgw of tests/s3/rgw-fixture (skipped without
 * it); otherwise on a file:// store.
 *
 * Known bugs, each checked alone with an argument (meson marks them should_fail):
 *   messages         refusals must say what is wrong: a too-long comment (said to be an
 *                    invalid disk name), `checkpoints` of an invalid name (an empty answer,
 *                    "failed"), restore and checkpoint-delete of a missing disk (the message
 *                    names the checkpoint);
 *   control-nul      a name with an escaped NUL in a control request must be refused (it is
 *                    cut at the NUL and accepted). */
#include "vt.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DISK_SIZE (32 * MiB)
#define REGION    (12 * MiB) /* most writes land here; a few near the end of the disk */
#define CHUNK     (64 * 1024)

static struct ws_server *srv;

static void compare(const char *name, const uint8_t *shadow)
{
    vt_compare(srv, name, shadow, DISK_SIZE, CHUNK);
}

static JsonNode *stats(const char *name)
{
    return ws_disk_stats(srv, name);
}

/* Some writes everywhere (a few at the end of the disk), then a flush. */
static void write_flushed(struct nbd_handle *h, uint8_t *shadow, int n)
{
    vt_write_random(h, shadow, REGION, n);
    ws_write_random(h, shadow, DISK_SIZE - 100000, 100000, ws_rand());
    WS_NBD(nbd_flush(h, 0));
}

static double checkpoint(const char *disk, const char *name, const char *comment)
{
    char *out =
        comment ? VT_CLI_OK(srv, "disk", "checkpoint", disk, name, "--comment", comment, "--json")
                : VT_CLI_OK(srv, "disk", "checkpoint", disk, name, "--json");
    JsonNode *a = vt_json(out);
    double ms = vt_json_ms(a);

    WS_CHECK(strcmp(vt_json_str(a, "checkpoint.name"), name) == 0, "%s", out);
    WS_CHECK(strlen(vt_json_str(a, "checkpoint.root")) == 64, "%s", out);
    ws_log("checkpoint %s@%s: %.2f ms", disk, name, ms);
    json_node_unref(a);
    g_free(out);
    return ms;
}

static void clone_disk(const char *src, const char *name)
{
    char *out = VT_CLI_OK(srv, "disk", "clone", src, name, "--json");
    JsonNode *a = vt_json(out);

    WS_CHECK(strcmp(vt_json_str(a, "disk.name"), name) == 0, "%s", out);
    ws_log("clone %s -> %s: %.2f ms", src, name, vt_json_ms(a));
    json_node_unref(a);
    g_free(out);
}

static void restore(const char *disk, const char *ckpt, bool force)
{
    char *out = force ? VT_CLI_OK(srv, "disk", "restore", disk, ckpt, "--force", "--json")
                      : VT_CLI_OK(srv, "disk", "restore", disk, ckpt, "--json");
    JsonNode *a = vt_json(out);

    ws_log("restore %s to %s%s: %.2f ms", disk, ckpt, force ? " (--force)" : "", vt_json_ms(a));
    json_node_unref(a);
    g_free(out);
}

/* The names of a disk's checkpoints, oldest first, as `checkpoints --json` lists them. */
static char *checkpoint_names(const char *disk)
{
    char *out = VT_CLI_OK(srv, "disk", "checkpoints", disk, "--json");
    JsonNode *list = vt_json(out);
    GString *names = g_string_new(NULL);

    WS_CHECK(JSON_NODE_HOLDS_ARRAY(list), "%s", out);
    JsonArray *a = json_node_get_array(list);
    for (guint i = 0; i < json_array_get_length(a); i++)
        g_string_append_printf(
            names, "%s%s", i ? "," : "",
            json_object_get_string_member(json_array_get_object_element(a, i), "name"));
    json_node_unref(list);
    g_free(out);
    return g_string_free(names, FALSE);
}

/* ---- the parts ---------------------------------------------------------------------------- */

static uint8_t *base, *v1, *head1, *fromv1;

static void check_checkpoint_and_clones(void)
{
    ws_disk_create(srv, "base", "32M", "64K");
    base = ws_shadow_new(DISK_SIZE);
    struct nbd_handle *h = ws_connect(srv, "base");
    write_flushed(h, base, 40);

    /* The premise: with upload-delay=3600 the flushed data waits, pending upload. */
    JsonNode *st = stats("base");
    WS_CHECK(ws_json_int(st, "stats.pending_bytes") > 0, "nothing pending before the checkpoint");
    WS_CHECK(ws_json_int(st, "stats.committed_gen") < ws_json_int(st, "stats.flush_gen"),
             "already committed");
    json_node_unref(st);

    checkpoint("base", "v1", "first");
    v1 = vt_shadow_copy(base, DISK_SIZE);
    st = stats("base");
    WS_CHECK(ws_json_int(st, "stats.pending_bytes") == 0 &&
                 ws_json_int(st, "stats.committed_gen") == ws_json_int(st, "stats.flush_gen"),
             "the checkpoint did not upload what was flushed");
    json_node_unref(st);
    compare("base@v1", v1);

    /* Writes acknowledged since: some flushed (pending upload), some not even flushed. */
    write_flushed(h, base, 20);
    vt_write_random(h, base, REGION, 10);
    ws_write_random(h, base, 5 * CHUNK + 1000, 3000,
                    ws_rand()); /* surely unflushed, partial chunk */
    st = stats("base");
    int64_t pending = ws_json_int(st, "stats.pending_bytes");
    int64_t dirty = ws_json_int(st, "stats.dirty_bytes");
    json_node_unref(st);
    WS_CHECK(pending > 0 && dirty > pending,
             "expected flushed-not-uploaded and unflushed data: %" PRId64 " pending, %" PRId64
             " dirty",
             pending, dirty);
    ws_log("base: %" PRId64 " bytes pending upload, %" PRId64 " dirty, before the clone", pending,
           dirty);

    /* The clone of the head holds every acknowledged write. */
    clone_disk("base", "head1");
    head1 = vt_shadow_copy(base, DISK_SIZE);
    compare("head1", head1);
    clone_disk("base@v1", "fromv1");
    fromv1 = vt_shadow_copy(v1, DISK_SIZE);
    compare("fromv1", fromv1);
    compare("base", base);
    compare("base@v1", v1);

    /* Writes to a clone leave the base, its checkpoint and the other clone alone; writes to
     * the base leave the clones alone. */
    struct nbd_handle *hc = ws_connect(srv, "fromv1");
    write_flushed(hc, fromv1, 30);
    vt_write_random(hc, fromv1, REGION, 10); /* unflushed */
    compare("fromv1", fromv1);
    compare("base", base);
    compare("base@v1", v1);
    compare("head1", head1);
    write_flushed(h, base, 20);
    compare("base", base);
    compare("fromv1", fromv1);
    compare("head1", head1);
    compare("base@v1", v1);
    WS_NBD(nbd_flush(hc, 0));
    ws_disconnect(hc);
    ws_disconnect(h);
    ws_log("clones and checkpoint keep their own content");
}

static void check_restore(void)
{
    checkpoint("fromv1", "k1", NULL);
    uint8_t *k1 = vt_shadow_copy(fromv1, DISK_SIZE);
    struct nbd_handle *h = ws_connect(srv, "fromv1");
    write_flushed(h, fromv1, 30);
    vt_write_random(h, fromv1, REGION, 10);
    ws_disconnect(h);
    checkpoint("fromv1", "k2", NULL);
    uint8_t *k2 = vt_shadow_copy(fromv1, DISK_SIZE);
    h = ws_connect(srv, "fromv1");
    write_flushed(h, fromv1, 30);
    vt_write_random(h, fromv1, REGION, 10); /* unflushed */
    ws_disconnect(h);

    /* k1: data of k2 was uploaded, data since only flushed (or not): all of it goes. */
    restore("fromv1", "k1", false);
    compare("fromv1", k1);
    compare("fromv1@k2", k2);
    JsonNode *st = stats("fromv1");
    WS_CHECK(ws_json_int(st, "stats.pending_bytes") == 0 &&
                 ws_json_int(st, "stats.dirty_bytes") == 0,
             "data written since the checkpoint is still pending after the restore");
    json_node_unref(st);
    restore("fromv1", "k2", false);
    compare("fromv1", k2);

    /* Writing after a restore, then restoring again. */
    memcpy(fromv1, k2, DISK_SIZE);
    h = ws_connect(srv, "fromv1");
    write_flushed(h, fromv1, 20);
    ws_disconnect(h);
    compare("fromv1", fromv1);
    restore("fromv1", "k1", false);
    compare("fromv1", k1);
    memcpy(fromv1, k1, DISK_SIZE);
    compare("fromv1@k1", k1);
    compare("base@v1", v1);
    compare("head1", head1);

    /* An open connection: refused without --force. */
    h = ws_connect(srv, "fromv1");
    vt_compare_handle(h, fromv1, DISK_SIZE, "fromv1 before the refused restore");
    char *err = VT_CLI_FAIL(srv, VT_NEEDLES("open connection", "--force"), "disk", "restore",
                            "fromv1", "k2");
    ws_log("restore with a connection open is refused: %s", g_strchomp(err));
    g_free(err);
    vt_compare_handle(h, fromv1, DISK_SIZE, "fromv1 after the refused restore");

    /* With --force the open connection reads the checkpoint next. */
    restore("fromv1", "k2", true);
    vt_compare_handle(h, k2, DISK_SIZE, "the open connection after restore --force");
    memcpy(fromv1, k2, DISK_SIZE);
    /* Its unflushed writes are gone too, and it can go on writing. */
    vt_write_random(h, fromv1, REGION, 10);
    restore("fromv1", "k1", true);
    vt_compare_handle(h, k1, DISK_SIZE, "the open connection after a second restore --force");
    memcpy(fromv1, k1, DISK_SIZE);
    write_flushed(h, fromv1, 10);
    vt_compare_handle(h, fromv1, DISK_SIZE, "the open connection writing after the restore");
    ws_disconnect(h);
    compare("fromv1", fromv1);
    ws_shadow_free(k1, DISK_SIZE);
    ws_shadow_free(k2, DISK_SIZE);
    ws_log("restore gives back the checkpoint's bytes");
}

static void check_read_only(void)
{
    struct nbd_handle *h = ws_connect(srv, "base@v1");
    uint8_t buf[4096] = {1};

    WS_CHECK(nbd_is_read_only(h) == 1, "base@v1 is not advertised read-only");
    WS_CHECK(nbd_pwrite(h, buf, sizeof buf, 0, 0) == -1, "a write to base@v1 succeeded");
    WS_CHECK(nbd_get_errno() == EPERM, "write to base@v1: errno %d (%s), expected EPERM",
             nbd_get_errno(), nbd_get_error());
    /* The export advertises neither zero nor trim: libnbd (1.14) refuses them with EINVAL. */
    WS_CHECK(nbd_zero(h, 4096, 0, 0) == -1, "a zero request to base@v1 succeeded");
    WS_CHECK(nbd_get_errno() == EINVAL || nbd_get_errno() == EPERM, "zero: %s", nbd_get_error());
    WS_CHECK(nbd_trim(h, 4096, 0, 0) == -1, "a trim request to base@v1 succeeded");
    WS_CHECK(nbd_get_errno() == EINVAL || nbd_get_errno() == EPERM, "trim: %s", nbd_get_error());
    WS_CHECK(nbd_can_zero(h) == 0 && nbd_can_trim(h) == 0, "base@v1 advertises zero or trim");
    /* Past libnbd's own check: the server refuses. */
    WS_NBD(nbd_set_strict_mode(h, 0));
    WS_CHECK(nbd_pwrite(h, buf, sizeof buf, 0, 0) == -1, "base@v1 accepted a write");
    WS_CHECK(nbd_get_errno() == EPERM, "server's answer to a write: errno %d (%s), not EPERM",
             nbd_get_errno(), nbd_get_error());
    WS_CHECK(nbd_zero(h, 4096, 0, 0) == -1 && nbd_get_errno() == EPERM,
             "server's answer to a zero: %s", nbd_get_error());
    WS_CHECK(nbd_trim(h, 4096, 0, 0) == -1 && nbd_get_errno() == EPERM,
             "server's answer to a trim: %s", nbd_get_error());
    WS_NBD(nbd_flush(h, 0));
    vt_compare_handle(h, v1, DISK_SIZE, "base@v1 after refused writes");
    ws_disconnect(h);

    char *msg = ws_connect_must_fail(srv, "base@nope");
    ws_log("base@nope refused: %s", msg);
    g_free(msg);
    WS_CHECK(ws_server_log_count(srv, "no checkpoint 'nope' of disk 'base'") >= 1,
             "the server log does not name the missing checkpoint");
    ws_log("checkpoint exports are read-only (EPERM)");
}

static void check_names(void)
{
    char long_name[130], max_name[129];
    memset(long_name, 'n', 129);
    long_name[129] = '\0';
    memset(max_name, 'm', 128);
    max_name[128] = '\0';
    const char *bad[] = {"bad@x", ".hidden", "a/b", "", "with space", "ü", "a:b", long_name};

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
        g_free(VT_CLI_FAIL(srv, VT_NEEDLES("1-128"), "disk", "checkpoint", "base", bad[i]));
    /* Names the CLI's option parser would take for options, straight to the socket. */
    const char *raw[] = {"-dash", "--x", "bad@x", ".", "a\\nb", "a\\u00e9"};
    for (size_t i = 0; i < G_N_ELEMENTS(raw); i++) {
        char *req = g_strdup_printf(
            "{\"op\":\"disk-checkpoint\",\"name\":\"base\",\"checkpoint\":\"%s\"}", raw[i]);
        JsonNode *a = vt_control(srv, req);
        int e;
        WS_CHECK(!vt_answer_ok(a, &e) && e == EINVAL, "%s: errno %d, expected EINVAL", req, e);
        json_node_unref(a);
        g_free(req);
    }
    char *names = checkpoint_names("base");
    WS_CHECK(strcmp(names, "v1") == 0, "invalid names were created: %s", names);
    g_free(names);

    /* The longest name works, as a checkpoint and in an export name. */
    checkpoint("base", max_name, NULL);
    char *export_name = g_strdup_printf("base@%s", max_name);
    compare(export_name, base);
    g_free(export_name);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint-delete", "base", max_name));

    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("exists"), "disk", "checkpoint", "base", "v1"));
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("nodisk"), "disk", "checkpoint", "nodisk", "c"));
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("exists"), "disk", "clone", "base@v1", "head1"));
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("nope"), "disk", "clone", "base@nope", "x1"));
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("nodisk"), "disk", "clone", "nodisk", "x1"));
    g_free(VT_CLI_FAIL(srv, NULL, "disk", "clone", "base@v1", "bad@name"));
    g_free(VT_CLI_FAIL(srv, NULL, "disk", "clone", "base@v1", ".x"));
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("nope"), "disk", "restore", "base", "nope"));
    /* (The message names the checkpoint, not the missing disk: "no such disk or checkpoint
     * 'v1'".) */
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("no such disk"), "disk", "restore", "nodisk", "v1"));
    g_free(
        VT_CLI_FAIL(srv, VT_NEEDLES("no such disk"), "disk", "checkpoint-delete", "nodisk", "v1"));
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("nope"), "disk", "checkpoint-delete", "base", "nope"));
    g_free(VT_CLI_FAIL(srv, NULL, "disk", "checkpoints", "nodisk"));

    /* Comments: up to 1024 bytes. */
    char *comment = g_strnfill(1024, 'c');
    checkpoint("base", "long-comment", comment);
    char *out = VT_CLI_OK(srv, "disk", "checkpoints", "base", "--json");
    WS_CHECK(strstr(out, comment) != NULL, "the 1024-byte comment is not listed");
    g_free(out);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint-delete", "base", "long-comment"));
    g_free(comment);
    comment = g_strnfill(1025, 'c');
    g_free(VT_CLI_FAIL(srv, NULL, "disk", "checkpoint", "base", "too-long", "--comment", comment));
    g_free(comment);
    names = checkpoint_names("base");
    WS_CHECK(strcmp(names, "v1") == 0, "checkpoints of base: %s", names);
    g_free(names);

    /* No clone was made by the refused requests. */
    out = VT_CLI_OK(srv, "disk", "list", "--json");
    WS_CHECK(!strstr(out, "\"x1\""), "a refused clone exists: %s", out);
    g_free(out);

    /* The listing: name, root, time and comment. */
    out = VT_CLI_OK(srv, "disk", "checkpoints", "base", "--json");
    JsonNode *list = vt_json(out);
    JsonObject *c = json_array_get_object_element(json_node_get_array(list), 0);
    WS_CHECK(strcmp(json_object_get_string_member(c, "comment"), "first") == 0, "%s", out);
    WS_CHECK(json_object_get_int_member(c, "created") > 1600000000, "%s", out);
    json_node_unref(list);
    g_free(out);
    out = VT_CLI_OK(srv, "disk", "checkpoints", "base");
    WS_CHECK(strstr(out, "v1") && strstr(out, "first"), "human listing: %s", out);
    g_free(out);
    ws_log("checkpoint names and comments are validated");
}

static void check_deletes(void)
{
    /* checkpoint-delete while its export is connected. */
    checkpoint("base", "tmp", NULL);
    struct nbd_handle *h = ws_connect(srv, "base@tmp");
    char *err = VT_CLI_FAIL(srv, VT_NEEDLES("base@tmp", "disconnect"), "disk", "checkpoint-delete",
                            "base", "tmp");
    ws_log("checkpoint-delete while connected is refused: %s", g_strchomp(err));
    g_free(err);
    vt_compare_handle(h, base, DISK_SIZE, "base@tmp after the refused delete");
    /* Deleting the disk while a checkpoint export of it is connected. */
    err = VT_CLI_FAIL(srv, VT_NEEDLES("open connection"), "disk", "delete", "base");
    g_free(err);
    ws_disconnect(h);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint-delete", "base", "tmp"));
    char *names = checkpoint_names("base");
    WS_CHECK(strcmp(names, "v1") == 0, "checkpoints of base after the delete: %s", names);
    g_free(names);
    g_free(ws_connect_must_fail(srv, "base@tmp"));
    /* A new checkpoint of the same name is the new version, not a stale cached one. */
    struct nbd_handle *hb = ws_connect(srv, "base");
    write_flushed(hb, base, 5);
    ws_disconnect(hb);
    checkpoint("base", "tmp", NULL);
    compare("base@tmp", base);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint-delete", "base", "tmp"));

    /* Deleting a disk deletes its checkpoints. */
    ws_disk_create(srv, "gone", "32M", "64K");
    uint8_t *gone = ws_shadow_new(DISK_SIZE);
    h = ws_connect(srv, "gone");
    write_flushed(h, gone, 10);
    ws_disconnect(h);
    checkpoint("gone", "g1", NULL);
    checkpoint("gone", "g2", NULL);
    compare("gone@g1", gone);
    /* A clone of a checkpoint outlives the disk (docs/forensics.md relies on it). */
    clone_disk("gone@g1", "kept");
    g_free(VT_CLI_OK(srv, "disk", "delete", "gone"));
    g_free(ws_connect_must_fail(srv, "gone@g1"));
    compare("kept", gone);
    ws_disk_create(srv, "gone", "32M", "64K");
    names = checkpoint_names("gone");
    WS_CHECK(strcmp(names, "") == 0, "a new disk 'gone' has the old one's checkpoints: %s", names);
    g_free(names);
    g_free(ws_connect_must_fail(srv, "gone@g1"));
    memset(gone, 0, DISK_SIZE);
    compare("gone", gone);
    g_free(VT_CLI_OK(srv, "disk", "delete", "gone"));
    g_free(VT_CLI_OK(srv, "disk", "delete", "kept"));
    ws_shadow_free(gone, DISK_SIZE);
    ws_log("deletes are refused while connected; a disk's delete takes its checkpoints");
}

/* ---- versions of a disk that is being written ----------------------------------------------- */

#define BUSY_SIZE  (128 * MiB)
#define BUSY_BLOCK (16 * 1024) /* a quarter chunk: every write is a read-modify-write */
#define BUSY_ROUND 1500        /* blocks the writer may write per round */

struct writer {
    pthread_t thread;
    struct nbd_handle *h;
    uint64_t next;  /* blocks written and acknowledged: [0, next) (atomic) */
    uint64_t limit; /* the writer waits before block `limit` (atomic) */
    bool stop;      /* (atomic) */
    char error[256];
};

/* Writes block after block, each with its own pattern, in order, up to the limit. */
static void *writer_run(void *opaque)
{
    struct writer *w = opaque;
    uint8_t buf[BUSY_BLOCK];

    for (uint64_t i = 0; i < BUSY_SIZE / BUSY_BLOCK;) {
        if (__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
            break;
        if (i >= __atomic_load_n(&w->limit, __ATOMIC_ACQUIRE)) {
            usleep(500);
            continue;
        }
        ws_fill_random(buf, sizeof buf, 7000 + i);
        if (nbd_pwrite(w->h, buf, sizeof buf, i * BUSY_BLOCK, 0) == -1) {
            snprintf(w->error, sizeof w->error, "write of block %" PRIu64 ": %s", i,
                     nbd_get_error());
            break;
        }
        __atomic_store_n(&w->next, ++i, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* The blocks the export holds: [0, k) with their patterns, zeros after; returns k.  Fails the
 * test if the export is not such a prefix (a write missing before a later one, or torn). */
static uint64_t busy_prefix(const char *export_name)
{
    struct nbd_handle *h = ws_connect(srv, export_name);
    const uint64_t piece = 4 * MiB, per_piece = piece / BUSY_BLOCK;
    uint8_t *buf = g_malloc(piece), want[BUSY_BLOCK], zero[BUSY_BLOCK] = {0};
    uint64_t k = 0;
    bool in_prefix = true;

    for (uint64_t off = 0; off < BUSY_SIZE; off += piece) {
        WS_NBD(nbd_pread(h, buf, piece, off, 0));
        for (uint64_t j = 0; j < per_piece; j++) {
            uint64_t i = off / BUSY_BLOCK + j;
            const uint8_t *got = buf + j * BUSY_BLOCK;
            if (in_prefix) {
                ws_fill_random(want, sizeof want, 7000 + i);
                if (memcmp(got, want, BUSY_BLOCK) == 0) {
                    k++;
                    continue;
                }
                in_prefix = false;
            }
            WS_CHECK(memcmp(got, zero, BUSY_BLOCK) == 0,
                     "%s: block %" PRIu64 " is neither its pattern nor zeros, or holds data "
                     "while block %" PRIu64 ", written before it, does not",
                     export_name, i, k);
        }
    }
    ws_disconnect(h);
    g_free(buf);
    return k;
}

/* restore --force of busy to w0; the server's time for it (ms). */
static double busy_restore_w0(void)
{
    char *out = VT_CLI_OK(srv, "disk", "restore", "busy", "w0", "--force", "--json");
    JsonNode *a = vt_json(out);
    double ms = vt_json_ms(a);

    json_node_unref(a);
    g_free(out);
    return ms;
}

/* Blocks [0, end) of busy after a restore to w0, whose blocks are [0, k0): w0's blocks, then
 * zeros, then the writer's blocks from the cut on, each with its pattern.  Returns the cut
 * (UINT64_MAX: zeros up to end); fails the test if the blocks are not so. */
static uint64_t busy_cut(uint64_t k0, uint64_t end)
{
    struct nbd_handle *h = ws_connect(srv, "busy");
    uint8_t want[BUSY_BLOCK], got[BUSY_BLOCK], zero[BUSY_BLOCK] = {0};
    uint64_t cut = UINT64_MAX;

    for (uint64_t i = 0; i < end; i++) {
        WS_NBD(nbd_pread(h, got, sizeof got, i * BUSY_BLOCK, 0));
        ws_fill_random(want, sizeof want, 7000 + i);
        bool is_data = memcmp(got, want, sizeof got) == 0;
        bool is_zero = memcmp(got, zero, sizeof got) == 0;
        WS_CHECK(is_data || is_zero, "busy: block %" PRIu64 " is torn", i);
        if (i < k0)
            WS_CHECK(is_data, "busy: block %" PRIu64 " of w0 is gone after the restore", i);
        else if (cut == UINT64_MAX && is_data)
            cut = i;
        else if (cut != UINT64_MAX)
            WS_CHECK(is_data, "busy: block %" PRIu64 " after the cut at %" PRIu64 " is zeros", i,
                     cut);
    }
    ws_disconnect(h);
    return cut;
}

/* A checkpoint or clone of a disk under a stream of writes holds every write acknowledged
 * before the command was sent, and is exactly the disk at one moment: a prefix of the
 * stream, nothing torn. */
static void check_versions_under_writes(void)
{
    struct writer w = {0};

    ws_disk_create(srv, "busy", "128M", "64K");
    w.h = ws_connect(srv, "busy");
    WS_CHECK(pthread_create(&w.thread, NULL, writer_run, &w) == 0, "pthread_create");
    for (int round = 0; round < 4; round++) {
        char name[32], export_name[64];
        /* Let the writer run a little into this round's budget, then take the version while
         * it goes on writing. */
        __atomic_store_n(&w.limit, (uint64_t)(round + 1) * BUSY_ROUND, __ATOMIC_RELEASE);
        while (__atomic_load_n(&w.next, __ATOMIC_ACQUIRE) < (uint64_t)round * BUSY_ROUND + 200 &&
               !w.error[0])
            usleep(200);
        WS_CHECK(!w.error[0], "%s", w.error);
        uint64_t before = __atomic_load_n(&w.next, __ATOMIC_ACQUIRE);
        if (round % 2 == 0) {
            snprintf(name, sizeof name, "w%d", round);
            g_free(VT_CLI_OK(srv, "disk", "checkpoint", "busy", name));
            snprintf(export_name, sizeof export_name, "busy@%s", name);
        } else {
            snprintf(name, sizeof name, "busy-clone%d", round);
            g_free(VT_CLI_OK(srv, "disk", "clone", "busy", name));
            snprintf(export_name, sizeof export_name, "%s", name);
        }
        uint64_t after = __atomic_load_n(&w.next, __ATOMIC_ACQUIRE);
        uint64_t k = busy_prefix(export_name);
        ws_log("%s: %" PRIu64 " blocks (%" PRIu64 " acknowledged before the command, %" PRIu64
               " when it returned)",
               export_name, k, before, after);
        WS_CHECK(k >= before,
                 "%s misses blocks acknowledged before it was made: %" PRIu64 " of %" PRIu64,
                 export_name, k, before);
        WS_CHECK(k <= after + 1,
                 "%s holds %" PRIu64 " blocks, more than were written (%" PRIu64 ")", export_name,
                 k, after + 1);
    }

    /* restore --force with the writer's connection open.  k0: w0's blocks. */
    uint64_t k0 = busy_prefix("busy@w0");

    /* First with the writer idle at its limit, its writes acknowledged but not flushed: the
     * restore drops every one of them, and the writes after it are kept from the first on.
     * This is where the run below ends up whenever the command outlasts the writer's budget. */
    uint64_t idle = __atomic_load_n(&w.limit, __ATOMIC_ACQUIRE);
    while (__atomic_load_n(&w.next, __ATOMIC_ACQUIRE) < idle && !w.error[0])
        usleep(200);
    WS_CHECK(!w.error[0], "%s", w.error);
    double idle_ms = busy_restore_w0();
    __atomic_store_n(&w.limit, idle + 200, __ATOMIC_RELEASE);
    while (__atomic_load_n(&w.next, __ATOMIC_ACQUIRE) < idle + 200 && !w.error[0])
        usleep(200);
    WS_CHECK(!w.error[0], "%s", w.error);
    uint64_t cut = busy_cut(k0, idle + 200);
    ws_log("restore --force with the writer idle after %" PRIu64 " blocks (%.2f ms): w0's %" PRIu64
           " blocks, then zeros, then the writes from block %" PRIu64,
           idle, idle_ms, k0, cut);
    WS_CHECK(cut == idle, "busy: the cut is at block %" PRIu64 ", not at %" PRIu64, cut, idle);

    /* Then while the writer goes on: the writes acknowledged before the command are gone, those
     * acknowledged after it returned are there, and in between there is one cut: w0's blocks,
     * zeros, then the writes that came after the restore.  The writer's budget is raised once
     * the command has returned, so that some writes always come after it: on a loaded machine
     * the command (a CLI process, then a control request) may outlast the whole budget, and then
     * every write of the budget was acknowledged before it returned, and may rightly be gone. */
    uint64_t start = __atomic_load_n(&w.next, __ATOMIC_ACQUIRE);
    __atomic_store_n(&w.limit, start + BUSY_ROUND, __ATOMIC_RELEASE);
    while (__atomic_load_n(&w.next, __ATOMIC_ACQUIRE) < start + 200 && !w.error[0])
        usleep(200);
    uint64_t before = __atomic_load_n(&w.next, __ATOMIC_ACQUIRE);
    double t0 = ws_now();
    double busy_ms = busy_restore_w0();
    double cli_ms = (ws_now() - t0) * 1000;
    uint64_t after = __atomic_load_n(&w.next, __ATOMIC_ACQUIRE);
    uint64_t last = after + 200 > start + BUSY_ROUND ? after + 200 : start + BUSY_ROUND;
    __atomic_store_n(&w.limit, last, __ATOMIC_RELEASE);
    while (__atomic_load_n(&w.next, __ATOMIC_ACQUIRE) < last && !w.error[0])
        usleep(200);
    __atomic_store_n(&w.stop, true, __ATOMIC_RELEASE);
    pthread_join(w.thread, NULL);
    WS_CHECK(!w.error[0], "%s", w.error);
    uint64_t end = w.next;
    WS_NBD(nbd_flush(w.h, 0));
    ws_disconnect(w.h);
    cut = busy_cut(k0, end);
    ws_log("restore --force under writes (%.2f ms in the server, %.2f ms for the command): w0's "
           "%" PRIu64 " blocks, then zeros, then the writes from block %" PRIu64 " (%" PRIu64
           " acknowledged before the command, %" PRIu64 " when it returned, %" PRIu64 " in all)",
           busy_ms, cli_ms, k0, cut, before, after, end);
    /* Block `after` may have been written before the restore and its answer not yet counted
     * when `after` was read; block after + 1 was sent only once the command had returned. */
    WS_CHECK(cut >= before && cut <= after + 1,
             "busy: the cut is at block %" PRIu64 ", not between %" PRIu64 " and %" PRIu64, cut,
             before, after + 1);
    ws_log("versions taken under writes are a prefix of the writes, none missing");
}

/* With the server stopped: no checkpoint row names a disk that does not exist. */
static void check_no_orphan_checkpoints(void)
{
    char *path = g_strdup_printf("%s/wisp.db", srv->meta);
    sqlite3 *db;
    sqlite3_stmt *st;

    WS_CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open %s", path);
    WS_CHECK(sqlite3_prepare_v2(db,
                                "SELECT count(*) FROM checkpoints WHERE disk_id NOT IN "
                                "(SELECT id FROM disks)",
                                -1, &st, NULL) == SQLITE_OK,
             "%s", sqlite3_errmsg(db));
    WS_CHECK(sqlite3_step(st) == SQLITE_ROW, "%s", sqlite3_errmsg(db));
    int orphans = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    WS_CHECK(orphans == 0, "%d checkpoint rows name deleted disks", orphans);
    g_free(path);
}

/* Known bugs in messages: each refusal must say what is wrong.
 *   - a comment over 1024 bytes is refused as "invalid name 'DISK'" (control.c, cli_disk.c);
 *   - `wisp disk checkpoints` of an invalid disk name gets an empty answer and prints "failed";
 *   - restore and checkpoint-delete of a missing disk name the checkpoint, not the disk. */
static void check_messages(void)
{
    ws_disk_create(srv, "c", "1M", "64K");
    char *comment = g_strnfill(1025, 'c');
    bool offline = false;
    for (;;) {
        g_free(VT_CLI_FAIL(srv, VT_NEEDLES("comment"), "disk", "checkpoint", "c", "x", "--comment",
                           comment));
        g_free(VT_CLI_FAIL(srv, VT_NEEDLES("@"), "disk", "checkpoints", "bad@name"));
        g_free(VT_CLI_FAIL(srv, VT_NEEDLES("nodisk"), "disk", "restore", "nodisk", "v1"));
        g_free(VT_CLI_FAIL(srv, VT_NEEDLES("nodisk"), "disk", "checkpoint-delete", "nodisk", "v1"));
        if (offline)
            break;
        ws_server_stop(srv);
        offline = true;
    }
    g_free(comment);
}

/* Known bug: a name with a NUL escape (\u0000) in a control request is cut at the NUL and
 * accepted: "x\u0000y" makes a checkpoint named "x". */
static void check_control_nul(void)
{
    ws_disk_create(srv, "n", "1M", "64K");
    JsonNode *a =
        vt_control(srv, "{\"op\":\"disk-checkpoint\",\"name\":\"n\",\"checkpoint\":\"x\\u0000y\"}");
    int e;
    bool ok = vt_answer_ok(a, &e);
    json_node_unref(a);
    char *names = checkpoint_names("n");
    ws_log("checkpoint \"x\\u0000y\": ok %d, errno %d; the disk's checkpoints: '%s'", ok, e, names);
    WS_CHECK(!ok && e == EINVAL, "a checkpoint name with a NUL was accepted (errno %d)", e);
    WS_CHECK(strcmp(names, "") == 0, "checkpoints made: %s", names);
    g_free(names);
    a = vt_control(srv, "{\"op\":\"disk-create\",\"name\":\"d\\u0000e\",\"size\":1048576}");
    ok = vt_answer_ok(a, &e);
    json_node_unref(a);
    WS_CHECK(!ok && e == EINVAL, "a disk name with a NUL was accepted (errno %d)", e);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "all";
    bool messages_only = strcmp(mode, "messages") == 0;
    bool nul_only = strcmp(mode, "control-nul") == 0;
    bool s3 = strcmp(mode, "s3") == 0;

    ws_init(messages_only ? "versions-messages"
            : nul_only    ? "versions-nul"
            : s3          ? "versions-s3"
                          : "versions");
    ws_require_tools("nbdkit", NULL);
    srv = ws_server_new(s3 ? WS_STORE_S3 : WS_STORE_FILE);
    ws_server_set(srv, "durability", "local");
    ws_server_set(srv, "upload-delay", "3600");
    ws_server_set(srv, "stats-interval", "0");
    ws_server_start(srv);
    if (messages_only || nul_only) {
        if (messages_only)
            check_messages();
        else
            check_control_nul();
        return 0;
    }

    check_checkpoint_and_clones();
    check_restore();
    check_read_only();
    check_names();
    check_deletes();
    check_versions_under_writes();

    /* After a restart (pending data journaled, not uploaded) everything is still there. */
    ws_server_stop(srv);
    check_no_orphan_checkpoints();
    ws_server_start(srv);
    compare("base", base);
    compare("base@v1", v1);
    compare("head1", head1);
    compare("fromv1", fromv1);
    ws_server_stop(srv);
    ws_log("versions: all checks passed");
    return 0;
}
