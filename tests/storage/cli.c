/* cli.c: the wisp CLI from the storage tests: disks, stats, waiting for uploads (see
 * server.h). */
#include "server.h"

#include <glib.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

int ws_cli(struct ws_server *s, char **out, char **err, const char *arg, ...)
{
    const char *argv[64];
    int n = 0;
    va_list ap;

    argv[n++] = ws_cli_path();
    va_start(ap, arg);
    for (const char *a = arg; a && n < 60; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    if (s->pid > 0) {
        argv[n++] = "--control";
        argv[n++] = s->control;
    } else {
        argv[n++] = "--meta";
        argv[n++] = s->meta;
    }
    argv[n] = NULL;
    return ws_run(out, err, 60, argv);
}

void ws_disk_create(struct ws_server *s, const char *name, const char *size, const char *chunk)
{
    char *err;
    int r =
        ws_cli(s, NULL, &err, "disk", "create", name, "--size", size, "--chunk-size", chunk, NULL);

    if (r != 0)
        WS_FAIL("wisp disk create %s --size %s --chunk-size %s: status %d: %s", name, size, chunk,
                r, err);
    g_free(err);
}

JsonNode *ws_disk_stats(struct ws_server *s, const char *name)
{
    char *out, *err;
    JsonParser *p;
    JsonNode *node;
    GError *error = NULL;
    int r;

    if (s->pid <= 0)
        WS_FAIL("disk stats need a running server");
    r = ws_cli(s, &out, &err, "disk", "stats", "--json", name, NULL);
    if (r != 0)
        WS_FAIL("wisp disk stats --json %s: status %d: %s", name, r, err);
    p = json_parser_new();
    if (!json_parser_load_from_data(p, out, -1, &error))
        WS_FAIL("wisp disk stats --json %s: not JSON (%s): %s", name, error->message, out);
    node = json_node_copy(json_parser_get_root(p));
    g_object_unref(p);
    g_free(out);
    g_free(err);
    return node;
}

int64_t ws_json_int(JsonNode *node, const char *path)
{
    gchar **parts = g_strsplit(path, ".", -1);
    JsonNode *n = node;

    for (int i = 0; parts[i]; i++) {
        if (!n || !JSON_NODE_HOLDS_OBJECT(n) ||
            !json_object_has_member(json_node_get_object(n), parts[i]))
            WS_FAIL("no '%s' in the stats answer", path);
        n = json_object_get_member(json_node_get_object(n), parts[i]);
    }
    g_strfreev(parts);
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
        WS_FAIL("'%s' in the stats answer is not an integer", path);
    return json_node_get_int(n);
}

double ws_wait_uploaded(struct ws_server *s, const char *name, double timeout_s)
{
    double t = ws_now();

    for (;;) {
        JsonNode *st = ws_disk_stats(s, name);
        int64_t dirty = ws_json_int(st, "stats.dirty_bytes");
        int64_t pending = ws_json_int(st, "stats.pending_bytes");
        int64_t flush = ws_json_int(st, "stats.flush_gen");
        int64_t committed = ws_json_int(st, "stats.committed_gen");
        json_node_unref(st);
        if (dirty == 0 && pending == 0 && committed == flush)
            return ws_now() - t;
        if (ws_now() - t > timeout_s)
            WS_FAIL("disk %s: not uploaded after %.0f s: %" PRId64 " bytes dirty, %" PRId64
                    " pending, flush %" PRId64 ", committed %" PRId64,
                    name, timeout_s, dirty, pending, flush, committed);
        usleep(100000);
    }
}
