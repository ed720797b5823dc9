/* offline: the version commands with the server stopped (`wisp disk ... --meta DIR`).
 *
 *  - checkpoint, checkpoints, clone from DISK@CKPT and from DISK, restore, checkpoint-delete and
 *    delete all work on the metadata directly, and a server started afterwards serves exactly
 *    what they made;
 *  - while the server holds the metadata, --meta is refused with a message naming --control;
 *  - an offline checkpoint (or clone of the head) is refused while data flushed with
 *    durability=local is not uploaded yet: the server is killed (SIGKILL) right after a flush,
 *    with upload-delay=3600; then it is started with a short upload-delay, waited for, stopped,
 *    and the offline checkpoint works and holds the flushed data;
 *  - after such a crash, an offline restore discards the data that was not uploaded, and it
 *    does not come back after later writes, crashes and restarts;
 *  - after such a crash a server restarted with upload-delay=3600 uploads the recovered data
 *    for a clone of the head through --control: the clone holds it. */
#include "vt.h"

#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define DISK_SIZE (16 * MiB)
#define REGION    (8 * MiB)
#define CHUNK     (64 * 1024)

static struct ws_server *srv;

static void compare(const char *name, const uint8_t *shadow)
{
    vt_compare(srv, name, shadow, DISK_SIZE, CHUNK);
}

static void write_flushed(const char *disk, uint8_t *shadow, int n)
{
    struct nbd_handle *h = ws_connect(srv, disk);
    vt_write_random(h, shadow, REGION, n);
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);
}

static char *names_of(const char *disk)
{
    char *out = VT_CLI_OK(srv, "disk", "checkpoints", disk, "--json");
    JsonNode *list = vt_json(out);
    GString *names = g_string_new(NULL);
    JsonArray *a = json_node_get_array(list);

    for (guint i = 0; i < json_array_get_length(a); i++)
        g_string_append_printf(
            names, "%s%s", i ? "," : "",
            json_object_get_string_member(json_array_get_object_element(a, i), "name"));
    json_node_unref(list);
    g_free(out);
    return g_string_free(names, FALSE);
}

int main(void)
{
    ws_init("offline");
    srv = ws_server_new(WS_STORE_FILE);
    ws_server_set(srv, "durability", "remote");
    ws_server_set(srv, "stats-interval", "0");
    ws_server_start(srv);
    ws_disk_create(srv, "d", "16M", "64K");
    uint8_t *d = ws_shadow_new(DISK_SIZE);
    write_flushed("d", d, 30);

    /* The metadata is the server's while it runs. */
    char *err = NULL;
    const char *args[] = {"disk", "checkpoint", "d", "x", "--meta", srv->meta, NULL};
    const char *argv[16] = {ws_cli_path()};
    for (int i = 0; args[i]; i++)
        argv[i + 1] = args[i];
    int r = ws_run(NULL, &err, 60, argv);
    WS_CHECK(r != 0 && strstr(err, "--control"), "--meta while the server runs: status %d: %s", r,
             err);
    g_free(err);
    ws_server_stop(srv);

    /* ---- every verb offline ---- */
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "d", "o1", "--comment", "offline"));
    uint8_t *o1 = vt_shadow_copy(d, DISK_SIZE);
    char *names = names_of("d");
    WS_CHECK(strcmp(names, "o1") == 0, "offline checkpoints: %s", names);
    g_free(names);
    char *out = VT_CLI_OK(srv, "disk", "checkpoints", "d");
    WS_CHECK(strstr(out, "o1") && strstr(out, "offline"), "%s", out);
    g_free(out);
    g_free(VT_CLI_OK(srv, "disk", "clone", "d@o1", "c1"));
    g_free(VT_CLI_OK(srv, "disk", "clone", "d", "c2"));
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("exists"), "disk", "checkpoint", "d", "o1"));
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("1-128"), "disk", "checkpoint", "d", "bad@name"));
    g_free(VT_CLI_FAIL(srv, NULL, "disk", "clone", "d@nope", "c3"));
    g_free(VT_CLI_FAIL(srv, NULL, "disk", "clone", "d@o1", "c1"));
    g_free(VT_CLI_FAIL(srv, NULL, "disk", "restore", "d", "nope"));
    g_free(VT_CLI_FAIL(srv, NULL, "disk", "checkpoint-delete", "d", "nope"));

    ws_server_start(srv);
    compare("d@o1", o1);
    compare("c1", o1);
    compare("c2", o1);
    write_flushed("d", d, 30);
    uint8_t *c1 = vt_shadow_copy(o1, DISK_SIZE);
    write_flushed("c1", c1, 30);
    ws_server_stop(srv);

    /* Offline restore, then the server serves the checkpoint. */
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "d", "o2"));
    uint8_t *o2 = vt_shadow_copy(d, DISK_SIZE);
    g_free(VT_CLI_OK(srv, "disk", "restore", "d", "o1"));
    ws_server_start(srv);
    compare("d", o1);
    compare("d@o2", o2);
    compare("c1", c1);
    compare("c2", o1);
    ws_server_stop(srv);
    g_free(VT_CLI_OK(srv, "disk", "restore", "d", "o2"));
    g_free(VT_CLI_OK(srv, "disk", "checkpoint-delete", "d", "o1"));
    names = names_of("d");
    WS_CHECK(strcmp(names, "o2") == 0, "after the offline checkpoint-delete: %s", names);
    g_free(names);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "c1", "k"));
    g_free(VT_CLI_OK(srv, "disk", "delete", "c1"));
    g_free(VT_CLI_OK(srv, "disk", "create", "c1", "--size", "16M", "--chunk-size", "64K"));
    names = names_of("c1");
    WS_CHECK(strcmp(names, "") == 0, "a new c1 has the deleted c1's checkpoints: %s", names);
    g_free(names);
    ws_server_start(srv);
    compare("d", o2);
    g_free(ws_connect_must_fail(srv, "d@o1"));
    g_free(ws_connect_must_fail(srv, "c1@k"));
    ws_log("every version command works offline");

    /* ---- flushed, not uploaded: offline checkpoint refused ---- */
    ws_server_stop(srv);
    ws_server_set(srv, "durability", "local");
    ws_server_set(srv, "upload-delay", "3600");
    ws_server_start(srv);
    memcpy(d, o2, DISK_SIZE);
    write_flushed("d", d, 30);
    ws_server_kill9(srv);
    err = VT_CLI_FAIL(srv, VT_NEEDLES("not yet uploaded"), "disk", "checkpoint", "d", "after");
    ws_log("offline checkpoint with data pending upload is refused: %s", g_strchomp(err));
    g_free(err);
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("not yet uploaded"), "disk", "clone", "d", "c4"));
    /* A checkpoint is uploaded data: cloning it offline is fine. */
    g_free(VT_CLI_OK(srv, "disk", "clone", "d@o2", "c5"));
    names = names_of("d");
    WS_CHECK(strcmp(names, "o2") == 0, "a refused checkpoint was created: %s", names);
    g_free(names);

    ws_server_set(srv, "upload-delay", "0.2");
    ws_server_start(srv);
    double waited = ws_wait_uploaded(srv, "d", 60);
    ws_log("the restarted server uploaded the recovered data in %.1f s", waited);
    ws_server_stop(srv);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "d", "after"));
    g_free(VT_CLI_OK(srv, "disk", "clone", "d", "c4"));
    ws_server_start(srv);
    compare("d@after", d);
    compare("c4", d);
    compare("c5", o2);

    /* ---- the same crash, then an offline restore: it discards the unuploaded data ---- */
    ws_server_stop(srv);
    ws_server_set(srv, "upload-delay", "3600");
    ws_server_start(srv);
    uint8_t *lost = vt_shadow_copy(d, DISK_SIZE);
    write_flushed("d", lost, 30);
    ws_server_kill9(srv);
    g_free(VT_CLI_FAIL(srv, VT_NEEDLES("not yet uploaded"), "disk", "checkpoint", "d", "x"));
    g_free(VT_CLI_OK(srv, "disk", "restore", "d", "after"));
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "d", "restored")); /* nothing pending now */
    ws_server_start(srv);
    compare("d", d);
    compare("d@restored", d);
    /* The orphaned files of the discarded data do not come back, after writes and restarts. */
    write_flushed("d", d, 30);
    ws_server_kill9(srv);
    ws_server_start(srv);
    compare("d", d);
    ws_server_stop(srv);
    ws_server_start(srv);
    compare("d", d);
    ws_shadow_free(lost, DISK_SIZE);
    ws_log("an offline restore after a crash discards what was not uploaded");

    /* ---- the same crash, then a clone of the head through --control ---- */
    ws_server_stop(srv);
    ws_server_set(srv, "upload-delay", "3600");
    ws_server_start(srv);
    write_flushed("d", d, 30);
    ws_server_kill9(srv);
    ws_server_start(srv);
    JsonNode *st = ws_disk_stats(srv, "d");
    WS_CHECK(ws_json_int(st, "stats.pending_bytes") > 0,
             "the restarted server recovered nothing pending");
    json_node_unref(st);
    g_free(VT_CLI_OK(srv, "disk", "clone", "d", "c6"));
    compare("c6", d);
    compare("d", d);
    ws_server_stop(srv);
    g_free(VT_CLI_OK(srv, "disk", "checkpoint", "d", "final"));
    ws_server_start(srv);
    compare("d@final", d);
    ws_server_stop(srv);
    ws_log("offline: all checks passed");
    return 0;
}
