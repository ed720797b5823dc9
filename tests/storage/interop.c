/* interop: the plugin with the usual NBD tools and the wisp CLI.
 *
 *  - `nbdkit PLUGIN --help` and `--dump-plugin` list every parameter, and nbdkit accepts each;
 *    bad parameters (chunk-size=3K, durability=maybe, no store=, ...) stop nbdkit at start-up
 *    with a message naming the parameter;
 *  - `wisp disk create` of an existing name fails, with --meta and with --control;
 *  - `nbdinfo --list` lists the disks; `qemu-img info` reads the size;
 *  - qemu-img convert raw file -> export, export -> qcow2, qcow2 -> export, and nbdcopy (with
 *    --flush) both ways, each checked with `qemu-img compare` or a byte comparison;
 *    `nbdinfo --map` shows exactly the written ranges as data;
 *  - an unknown export fails with an error naming the disk (client and server log); invalid
 *    export names (`../x`, control characters, 300 bytes, ...) are refused and the server
 *    goes on serving;
 *  - `wisp disk delete` of a disk with a connection is refused with a clear message, and works
 *    once the client is gone;
 *  - `wisp disk list --json` through the control socket and through --meta (server stopped)
 *    agree; after a restart every copy still compares equal. */
#include "server.h"

#include <glib.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB       (UINT64_C(1) << 20)
#define DISK_SIZE (64 * MiB)

/* Every parameter wisp.c's config callback accepts, with a valid value for a start-up test
 * (NULL: set elsewhere). */
static const struct {
    const char *name, *value;
} params[] = {
    {"store", NULL},          {"cache", NULL},          {"meta", NULL},
    {"control", NULL},        {"cache-size", "32M"},    {"chunk-size", "64K"},
    {"durability", "remote"}, {"upload-delay", "2"},    {"readonly", "true"},
    {"credentials", "CREDS"}, {"upload-parallel", "4"}, {"store-connections", "4"},
    {"store-timeout", "10"},  {"readahead", "1M"},      {"stats-interval", "0"},
    {"ship-log", "false"},
};

static bool contains(const char *haystack, const char *needle)
{
    return haystack && strstr(haystack, needle) != NULL;
}

/* ---- parameters ----------------------------------------------------------------------- */

static void check_help_and_dump(void)
{
    char *out, *err;
    int r;

    r = ws_nbdkit_run(&out, &err, 30, ws_plugin_path(), "--help", NULL);
    WS_CHECK(r == 0, "nbdkit PLUGIN --help: status %d: %s", r, err);
    /* Parameters are the words before '=' that start a line of the help. */
    GHashTable *in_help = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    gchar **lines = g_strsplit(out, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        const char *eq = strchr(lines[i], '=');
        const char *sp = strchr(lines[i], ' ');
        if (eq && eq > lines[i] && (!sp || eq < sp) && lines[i][0] != ' ')
            g_hash_table_add(in_help, g_strndup(lines[i], (gsize)(eq - lines[i])));
    }
    g_strfreev(lines);
    for (size_t i = 0; i < G_N_ELEMENTS(params); i++)
        WS_CHECK(g_hash_table_contains(in_help, params[i].name),
                 "--help does not list %s=; it says:\n%s", params[i].name, out);
    g_free(out);
    g_free(err);

    r = ws_nbdkit_run(&out, &err, 30, ws_plugin_path(), "--dump-plugin", NULL);
    WS_CHECK(r == 0, "nbdkit PLUGIN --dump-plugin: status %d: %s", r, err);
    const char *line = strstr(out, "\nwisp_params=");
    WS_CHECK(line, "--dump-plugin has no wisp_params= line:\n%s", out);
    char *list = g_strndup(line + 13, strcspn(line + 13, "\n"));
    gchar **dumped = g_strsplit(list, ",", -1);
    GHashTable *in_dump = g_hash_table_new(g_str_hash, g_str_equal);
    for (int i = 0; dumped[i]; i++)
        g_hash_table_add(in_dump, dumped[i]);
    for (size_t i = 0; i < G_N_ELEMENTS(params); i++)
        WS_CHECK(g_hash_table_contains(in_dump, params[i].name),
                 "--dump-plugin's wisp_params does not list %s: %s", params[i].name, list);
    /* And the two lists are the same. */
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, in_help);
    while (g_hash_table_iter_next(&it, &key, NULL))
        WS_CHECK(g_hash_table_contains(in_dump, key), "--help lists %s= but --dump-plugin does not",
                 (char *)key);
    WS_CHECK(g_hash_table_size(in_help) == g_hash_table_size(in_dump),
             "--help lists %u parameters, --dump-plugin %u: %s", g_hash_table_size(in_help),
             g_hash_table_size(in_dump), list);
    ws_log("--help and --dump-plugin list the %u parameters", g_hash_table_size(in_dump));
    g_hash_table_destroy(in_dump);
    g_hash_table_destroy(in_help);
    g_strfreev(dumped);
    g_free(list);
    g_free(out);
    g_free(err);
}

/* nbdkit starts with every parameter given a valid value (and --run exits at once). */
static void check_every_parameter_accepted(void)
{
    char *dir = g_strdup_printf("%s/params", ws_tmpdir());
    char *store = g_strdup_printf("store=file://%s/store", dir);
    char *cache = g_strdup_printf("cache=%s/cache", dir);
    char *meta = g_strdup_printf("meta=%s/meta", dir);
    char *control = g_strdup_printf("control=%s/ctl", dir);
    char *creds = g_strdup_printf("%s/credentials", dir);
    char *store_dir = g_strdup_printf("%s/store", dir);
    g_mkdir_with_parents(store_dir, 0700);
    g_file_set_contents(creds, "[default]\naws_access_key_id = x\naws_secret_access_key = y\n", -1,
                        NULL);
    const char *argv[32];
    int n = 0;
    argv[n++] = store;
    argv[n++] = cache;
    argv[n++] = meta;
    argv[n++] = control;
    char *owned[G_N_ELEMENTS(params)] = {0};
    for (size_t i = 0; i < G_N_ELEMENTS(params); i++) {
        if (!params[i].value)
            continue;
        owned[i] = g_strdup_printf("%s=%s", params[i].name,
                                   strcmp(params[i].value, "CREDS") == 0 ? creds : params[i].value);
        argv[n++] = owned[i];
    }
    argv[n++] = "--run";
    argv[n++] = "true";
    argv[n] = NULL;
    char *err;
    /* --run: start serving, run `true`, exit with its status. */
    int r = ws_nbdkit_tryv(&err, 60, argv);
    WS_CHECK(r == 0,
             "nbdkit with every parameter set did not start and exit cleanly "
             "(status %d): %s",
             r, err);
    g_free(err);
    ws_log("nbdkit accepts all %zu parameters at once", G_N_ELEMENTS(params));
    for (size_t i = 0; i < G_N_ELEMENTS(params); i++)
        g_free(owned[i]);
    g_free(dir);
    g_free(store);
    g_free(cache);
    g_free(meta);
    g_free(control);
    g_free(creds);
    g_free(store_dir);
}

static void check_bad_parameters(void)
{
    char *store = g_strdup_printf("store=file://%s/bad-store", ws_tmpdir());
    char *cache = g_strdup_printf("cache=%s/bad-cache", ws_tmpdir());
    char *meta = g_strdup_printf("meta=%s/bad-meta", ws_tmpdir());
    struct {
        const char *what, *name, *p1, *p2, *p3, *p4;
    } cases[] = {
        {"chunk-size=3K", "chunk-size", store, cache, meta, "chunk-size=3K"},
        {"chunk-size=8M", "chunk-size", store, cache, meta, "chunk-size=8M"},
        {"durability=maybe", "durability", store, cache, meta, "durability=maybe"},
        {"no store=", "store", cache, meta, NULL, NULL},
        {"no cache=", "cache", store, meta, NULL, NULL},
        {"store=ftp://x", "store", "store=ftp://x", cache, meta, NULL},
        {"cache-size=1M", "cache-size", store, cache, meta, "cache-size=1M"},
        {"upload-delay=-1", "upload-delay", store, cache, meta, "upload-delay=-1"},
        {"readonly=perhaps", "readonly", store, cache, meta, "readonly=perhaps"},
        {"ship-log=2", "ship-log", store, cache, meta, "ship-log=2"},
        {"an unknown parameter", "frobnicate", store, cache, meta, "frobnicate=1"},
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *err;
        int r = ws_nbdkit_try(&err, 10, cases[i].p1, cases[i].p2, cases[i].p3, cases[i].p4, NULL);
        WS_CHECK(r != 0, "nbdkit started with %s%s", cases[i].what,
                 r < 0 ? " (it served until killed)" : "");
        WS_CHECK(contains(err, cases[i].name), "with %s, nbdkit's message does not name '%s': %s",
                 cases[i].what, cases[i].name, err);
        gchar *first = g_strndup(err, strcspn(err, "\n"));
        ws_log("%-22s -> status %d: %s", cases[i].what, r, first);
        g_free(first);
        g_free(err);
    }
    g_free(store);
    g_free(cache);
    g_free(meta);
}

/* ---- data through the tools -------------------------------------------------------------- */

static void tool(const char *what, const char *arg0, ...) __attribute__((sentinel));

/* Runs a tool that must succeed. */
static void tool(const char *what, const char *arg0, ...)
{
    const char *argv[32];
    int n = 0;
    va_list ap;
    char *out, *err;
    double t = ws_now();

    va_start(ap, arg0);
    for (const char *a = arg0; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int r = ws_run(&out, &err, 120, argv);
    if (r != 0)
        WS_FAIL("%s: %s exited with %d:\n%s%s", what, arg0, r, out, err);
    ws_log("%s (%.2f s)", what, ws_now() - t);
    g_free(out);
    g_free(err);
}

static void make_raw(const char *path)
{
    uint8_t *data = g_malloc0(DISK_SIZE);

    ws_fill_random(data, 10 * MiB, ws_rand());
    ws_fill_random(data + 40 * MiB, MiB, ws_rand());
    /* A few isolated bytes inside a zero area would make a chunk data: keep the map exact. */
    if (!g_file_set_contents(path, (const char *)data, DISK_SIZE, NULL))
        WS_FAIL("write %s", path);
    g_free(data);
}

static void check_map(struct ws_server *s, const char *disk)
{
    char *uri = ws_uri(s, disk), *out, *err;
    int r = ws_runl(&out, &err, 30, "nbdinfo", "--map", uri, NULL);
    struct {
        uint64_t off, len;
        bool hole;
    } want[] = {
        {0, 10 * MiB, false},
        {10 * MiB, 30 * MiB, true},
        {40 * MiB, MiB, false},
        {41 * MiB, 23 * MiB, true},
    };
    int n = 0;

    WS_CHECK(r == 0, "nbdinfo --map %s: %s", uri, err);
    gchar **lines = g_strsplit(out, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        uint64_t off, len;
        unsigned type;
        if (sscanf(lines[i], "%" SCNu64 " %" SCNu64 " %u", &off, &len, &type) != 3)
            continue;
        WS_CHECK(n < 4, "nbdinfo --map shows more than 4 extents:\n%s", out);
        WS_CHECK(off == want[n].off && len == want[n].len && ((type & 1) != 0) == want[n].hole,
                 "nbdinfo --map line %d: %" PRIu64 " %" PRIu64 " %u, expected %" PRIu64 " %" PRIu64
                 " %s:\n%s",
                 n, off, len, type, want[n].off, want[n].len, want[n].hole ? "hole" : "data", out);
        n++;
    }
    WS_CHECK(n == 4, "nbdinfo --map shows %d extents:\n%s", n, out);
    ws_log("nbdinfo --map %s: data exactly where the file has data", disk);
    g_strfreev(lines);
    g_free(out);
    g_free(err);
    g_free(uri);
}

static void compare_files(const char *a, const char *b)
{
    gchar *x, *y;
    gsize lx, ly;

    WS_CHECK(g_file_get_contents(a, &x, &lx, NULL), "read %s", a);
    WS_CHECK(g_file_get_contents(b, &y, &ly, NULL), "read %s", b);
    WS_CHECK(lx == ly && memcmp(x, y, lx) == 0, "%s and %s differ (%zu and %zu bytes)", a, b,
             (size_t)lx, (size_t)ly);
    g_free(x);
    g_free(y);
}

static void compare_export(struct ws_server *s, const char *disk, const char *raw)
{
    char *uri = ws_uri(s, disk);
    char *what = g_strdup_printf("qemu-img compare %s with the raw file", disk);
    tool(what, "qemu-img", "compare", "-f", "raw", "-F", "raw", raw, uri, NULL);
    g_free(what);
    g_free(uri);
}

/* ---- the CLI ------------------------------------------------------------------------------- */

static JsonNode *disk_list(struct ws_server *s)
{
    char *out, *err;
    int r = ws_cli(s, &out, &err, "disk", "list", "--json", NULL);
    JsonParser *p = json_parser_new();

    WS_CHECK(r == 0, "wisp disk list --json (%s): status %d: %s",
             s->pid > 0 ? "--control" : "--meta", r, err);
    WS_CHECK(json_parser_load_from_data(p, out, -1, NULL), "not JSON: %s", out);
    JsonNode *node = json_node_copy(json_parser_get_root(p));
    WS_CHECK(JSON_NODE_HOLDS_ARRAY(node), "wisp disk list --json: not an array: %s", out);
    g_object_unref(p);
    g_free(out);
    g_free(err);
    return node;
}

static bool list_has(JsonNode *list, const char *name)
{
    JsonArray *a = json_node_get_array(list);

    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        if (strcmp(json_object_get_string_member_with_default(o, "name", ""), name) == 0)
            return true;
    }
    return false;
}

int main(void)
{
    ws_init("interop");
    ws_require_tools("qemu-img", "nbdinfo", "nbdcopy", NULL);

    check_help_and_dump();
    check_every_parameter_accepted();
    check_bad_parameters();

    struct ws_server *s = ws_server_new(WS_STORE_FILE);
    ws_server_set(s, "upload-delay", "0.2");
    ws_server_set(s, "chunk-size", "256K");
    char *err, *out;
    int r;

    /* Disks, made with the server stopped (--meta). */
    ws_disk_create(s, "d1", "64M", "64K");
    ws_disk_create(s, "d2", "64M", "1M");
    ws_disk_create(s, "d3", "64M", "4M");
    r = ws_cli(s, NULL, &err, "disk", "create", "d1", "--size", "64M", NULL);
    WS_CHECK(r != 0, "wisp disk create of an existing disk (--meta) succeeded");
    WS_CHECK(contains(err, "exists") && contains(err, "d1"), "unclear message: %s", err);
    ws_log("create of an existing disk, --meta: %s", g_strchomp(err));
    g_free(err);

    r = ws_cli(s, NULL, &err, "disk", "create", "a\x01b", "--size", "1M", NULL);
    WS_CHECK(r != 0, "wisp disk create of a name with a control character succeeded (--meta)");
    g_free(err);

    ws_server_start(s);
    r = ws_cli(s, NULL, &err, "disk", "create", "d1", "--size", "64M", NULL);
    WS_CHECK(r != 0, "wisp disk create of an existing disk (--control) succeeded");
    WS_CHECK(contains(err, "exists") && contains(err, "d1"), "unclear message: %s", err);
    ws_log("create of an existing disk, --control: %s", g_strchomp(err));
    g_free(err);
    /* Through the control socket, a disk gets the server's chunk-size= unless told. */
    r = ws_cli(s, &out, &err, "disk", "create", "d4", "--size", "64M", "--json", NULL);
    WS_CHECK(r == 0, "wisp disk create d4 --control: status %d: %s", r, err);
    WS_CHECK(contains(out, "\"chunk_size\" : 262144"),
             "d4 should have the server's chunk-size=256K: %s", out);
    g_free(out);
    g_free(err);
    /* Invalid names are refused by both paths. */
    r = ws_cli(s, NULL, &err, "disk", "create", "../x", "--size", "1M", NULL);
    WS_CHECK(r != 0, "wisp disk create ../x succeeded");
    WS_CHECK(contains(err, "name"), "the refusal of '../x' does not say why: %s", err);
    ws_log("create ../x, --control: %s", g_strchomp(err));
    g_free(err);

    /* nbdinfo --list and qemu-img info. */
    char *list_uri = g_strdup_printf("nbd+unix:///?socket=%s", s->sock);
    r = ws_runl(&out, &err, 30, "nbdinfo", "--list", list_uri, NULL);
    WS_CHECK(r == 0, "nbdinfo --list: %s", err);
    for (int i = 1; i <= 4; i++) {
        char want[32];
        snprintf(want, sizeof want, "export=\"d%d\"", i);
        WS_CHECK(contains(out, want), "nbdinfo --list does not show %s:\n%s", want, out);
    }
    ws_log("nbdinfo --list shows d1..d4");
    g_free(out);
    g_free(err);
    char *uri1 = ws_uri(s, "d1"), *uri2 = ws_uri(s, "d2"), *uri3 = ws_uri(s, "d3");
    r = ws_runl(&out, &err, 30, "qemu-img", "info", uri1, NULL);
    WS_CHECK(r == 0 && contains(out, "67108864"), "qemu-img info %s: %s%s", uri1, out, err);
    ws_log("qemu-img info reads the size (64 MiB)");
    g_free(out);
    g_free(err);

    /* Data through qemu-img and nbdcopy. */
    char *raw = g_strdup_printf("%s/data.raw", ws_tmpdir());
    char *qcow2 = g_strdup_printf("%s/data.qcow2", ws_tmpdir());
    char *back = g_strdup_printf("%s/back.raw", ws_tmpdir());
    make_raw(raw);
    tool("qemu-img convert raw file -> d1", "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw",
         raw, uri1, NULL);
    compare_export(s, "d1", raw);
    check_map(s, "d1");
    tool("qemu-img convert d1 -> qcow2", "qemu-img", "convert", "-f", "raw", "-O", "qcow2", uri1,
         qcow2, NULL);
    tool("qemu-img compare qcow2 with the raw file", "qemu-img", "compare", "-f", "qcow2", "-F",
         "raw", qcow2, raw, NULL);
    tool("qemu-img convert qcow2 -> d2", "qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw",
         qcow2, uri2, NULL);
    compare_export(s, "d2", raw);
    tool("nbdcopy --flush raw file -> d3", "nbdcopy", "--flush", raw, uri3, NULL);
    tool("nbdcopy --flush d3 -> raw file", "nbdcopy", "--flush", uri3, back, NULL);
    compare_files(raw, back);
    ws_log("nbdcopy both ways: the copy back is the same bytes");

    /* Unknown exports and invalid names. */
    char *uri_nosuch = ws_uri(s, "nosuch");
    r = ws_runl(&out, &err, 30, "nbdinfo", uri_nosuch, NULL);
    WS_CHECK(r != 0, "nbdinfo of an unknown export succeeded");
    WS_CHECK(contains(err, "nosuch"), "the client's error does not name the disk: %s", err);
    WS_CHECK(ws_server_log_count(s, "no disk named 'nosuch'") > 0,
             "the server log does not say \"no disk named 'nosuch'\"");
    ws_log("unknown export: %s", g_strchomp(err));
    g_free(out);
    g_free(err);

    char long_name[301];
    memset(long_name, 'a', 300);
    long_name[300] = '\0';
    const char *invalid[] = {"../x",    "x/y", "..",  "a\001b", "a\nb", "tab\there",
                             long_name, "d1@", "@d1", "d1@a@b", " d1",  "d1 "};
    int logged_before = ws_server_log_count(s, "export name '");
    for (size_t i = 0; i < G_N_ELEMENTS(invalid); i++) {
        char *msg = ws_connect_must_fail(s, invalid[i]);
        g_free(msg);
    }
    int logged = ws_server_log_count(s, "export name '") - logged_before;
    WS_CHECK(logged >= (int)G_N_ELEMENTS(invalid),
             "%d of %zu invalid export names were logged as such", logged, G_N_ELEMENTS(invalid));
    WS_CHECK(ws_server_log_count(s, "export name '../x'") > 0, "'../x' is not named in the log");
    WS_CHECK(ws_server_log_count(s, "longer than") > 0, "the 300-byte name: no reason logged");
    struct nbd_handle *h = ws_connect(s, "d1");
    char byte;
    WS_NBD(nbd_pread(h, &byte, 1, 0, 0));
    ws_disconnect(h);
    ws_log("%zu invalid export names refused; the server still serves", G_N_ELEMENTS(invalid));

    /* Delete while connected, then after the client is gone. */
    h = ws_connect(s, "d4");
    r = ws_cli(s, NULL, &err, "disk", "delete", "d4", NULL);
    WS_CHECK(r != 0, "wisp disk delete of a disk with a connection succeeded");
    WS_CHECK(contains(err, "d4") && contains(err, "connection"), "the refusal does not say why: %s",
             err);
    ws_log("delete while connected: %s", g_strchomp(err));
    g_free(err);
    ws_disconnect(h);
    double t = ws_now();
    for (;;) {
        r = ws_cli(s, NULL, &err, "disk", "delete", "d4", NULL);
        if (r != 0)
            WS_CHECK(ws_now() - t < 5, "wisp disk delete d4 after the client left: %s", err);
        g_free(err);
        if (r == 0)
            break;
        usleep(50000);
    }
    ws_log("delete after the client left: ok (%.2f s after the disconnect)", ws_now() - t);
    char *gone = ws_connect_must_fail(s, "d4");
    ws_log("connecting to the deleted disk: %s", gone);
    g_free(gone);
    r = ws_cli(s, NULL, &err, "disk", "delete", "d4", NULL);
    WS_CHECK(r != 0 && contains(err, "d4"), "a second delete of d4: status %d: %s", r, err);
    g_free(err);

    /* The list through the server and from the metadata agree. */
    for (int i = 1; i <= 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "d%d", i);
        ws_wait_uploaded(s, name, 60);
    }
    JsonNode *via_control = disk_list(s);
    ws_server_stop(s);
    JsonNode *via_meta = disk_list(s);
    char *a = json_to_string(via_control, FALSE), *b = json_to_string(via_meta, FALSE);
    WS_CHECK(json_node_equal(via_control, via_meta),
             "wisp disk list --json differs:\n--control: %s\n--meta:    %s", a, b);
    WS_CHECK(list_has(via_meta, "d1") && list_has(via_meta, "d2") && list_has(via_meta, "d3") &&
                 !list_has(via_meta, "d4"),
             "the list should be d1, d2, d3: %s", b);
    ws_log("wisp disk list --json: --control and --meta agree");
    g_free(a);
    g_free(b);
    json_node_unref(via_control);
    json_node_unref(via_meta);

    /* What the tools wrote survives a restart; readonly=true serves it read-only. */
    ws_server_set(s, "readonly", "true");
    ws_server_start(s);
    compare_export(s, "d1", raw);
    compare_export(s, "d2", raw);
    compare_export(s, "d3", raw);
    h = ws_connect(s, "d1");
    WS_CHECK(nbd_is_read_only(h) == 1, "readonly=true: the export is writable");
    WS_CHECK(nbd_pwrite(h, "x", 1, 0, 0) == -1, "readonly=true: a write succeeded");
    ws_disconnect(h);
    ws_log("readonly=true: read-only exports, writes refused");
    ws_server_stop(s);

    g_free(list_uri);
    g_free(uri1);
    g_free(uri2);
    g_free(uri3);
    g_free(uri_nosuch);
    g_free(raw);
    g_free(qcow2);
    g_free(back);
    ws_log("PASS");
    return 0;
}
