/* vt.c: helpers of the versions tests (see vt.h). */
#include "vt.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int vt_cli(struct ws_server *s, char **out, char **err, const char *const *args)
{
    const char *argv[64];
    int n = 0;

    argv[n++] = ws_cli_path();
    for (int i = 0; args[i]; i++) {
        if (n == 60)
            WS_FAIL("vt_cli: too many arguments");
        argv[n++] = args[i];
    }
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

static char *vt_join(const char *const *args)
{
    GString *g = g_string_new("wisp");

    for (int i = 0; args[i]; i++)
        g_string_append_printf(g, " %.80s", args[i]);
    return g_string_free(g, FALSE);
}

char *vt_cli_ok_at(const char *file, int line, struct ws_server *s, const char *const *args)
{
    char *out, *err;
    int r = vt_cli(s, &out, &err, args);

    if (r != 0) {
        char *cmd = vt_join(args);
        ws_fail_at(file, line, "%s (%s): status %d, expected 0: %s", cmd,
                   s->pid > 0 ? "--control" : "--meta", r, err);
    }
    g_free(err);
    return out;
}

char *vt_cli_fail_at(const char *file, int line, struct ws_server *s, const char *const *args,
                     const char *const *needles)
{
    char *out, *err;
    int r = vt_cli(s, &out, &err, args);
    char *cmd = vt_join(args);

    if (r == 0)
        ws_fail_at(file, line, "%s (%s) succeeded; it must be refused. Its output: %s", cmd,
                   s->pid > 0 ? "--control" : "--meta", out);
    for (int i = 0; needles && needles[i]; i++)
        if (!strstr(err, needles[i]))
            ws_fail_at(file, line, "%s (%s) was refused (status %d) but its message lacks '%s': %s",
                       cmd, s->pid > 0 ? "--control" : "--meta", r, needles[i], err);
    g_free(cmd);
    g_free(out);
    return err;
}

JsonNode *vt_json(const char *text)
{
    JsonParser *p = json_parser_new();
    GError *error = NULL;
    JsonNode *node;

    if (!json_parser_load_from_data(p, text, -1, &error))
        WS_FAIL("not JSON (%s): %s", error->message, text);
    node = json_node_copy(json_parser_get_root(p));
    g_object_unref(p);
    return node;
}

static JsonNode *vt_json_path(JsonNode *node, const char *path)
{
    gchar **parts = g_strsplit(path, ".", -1);
    JsonNode *n = node;

    for (int i = 0; parts[i]; i++) {
        if (!n || !JSON_NODE_HOLDS_OBJECT(n) ||
            !json_object_has_member(json_node_get_object(n), parts[i]))
            WS_FAIL("no '%s' in the answer", path);
        n = json_object_get_member(json_node_get_object(n), parts[i]);
    }
    g_strfreev(parts);
    return n;
}

double vt_json_ms(JsonNode *answer)
{
    JsonNode *n = vt_json_path(answer, "ms");

    if (!JSON_NODE_HOLDS_VALUE(n) || (json_node_get_value_type(n) != G_TYPE_DOUBLE &&
                                      json_node_get_value_type(n) != G_TYPE_INT64))
        WS_FAIL("'ms' in the answer is not a number");
    double ms = json_node_get_double(n);
    WS_CHECK(ms >= 0 && ms < 600000, "ms = %f", ms);
    return ms;
}

const char *vt_json_str(JsonNode *node, const char *path)
{
    JsonNode *n = vt_json_path(node, path);

    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
        WS_FAIL("'%s' in the answer is not a string", path);
    return json_node_get_string(n);
}

void vt_write_random(struct nbd_handle *h, uint8_t *shadow, uint64_t region, int n)
{
    for (int i = 0; i < n; i++) {
        size_t len = 1 + (size_t)ws_rand_below(300 * 1024);
        if (len > region)
            len = (size_t)region;
        uint64_t off = ws_rand_below(region - len + 1);
        if (i % 4 == 3) {
            if (nbd_zero(h, len, off, 0) == -1)
                WS_FAIL("zero of %zu bytes at %" PRIu64 ": %s", len, off, nbd_get_error());
            memset(shadow + off, 0, len);
        } else {
            ws_write_random(h, shadow, off, len, ws_rand());
        }
    }
}

void vt_compare_handle(struct nbd_handle *h, const uint8_t *shadow, uint64_t size, const char *what)
{
    const size_t piece = 4 * MiB;
    uint8_t *buf = g_malloc(piece);

    for (uint64_t off = 0; off < size; off += piece) {
        size_t n = size - off < piece ? (size_t)(size - off) : piece;
        if (nbd_pread(h, buf, n, off, 0) == -1)
            WS_FAIL("%s: read of %zu bytes at %" PRIu64 ": %s", what, n, off, nbd_get_error());
        if (memcmp(buf, shadow + off, n) != 0) {
            size_t i = 0, count = 0, first = 0;
            for (i = 0; i < n; i++)
                if (buf[i] != shadow[off + i] && count++ == 0)
                    first = i;
            WS_FAIL("%s: differs at offset %" PRIu64 ": got 0x%02x, expected 0x%02x (%zu bytes "
                    "differ in the %zu at %" PRIu64 ")",
                    what, off + first, buf[first], shadow[off + first], count, n, off);
        }
    }
    g_free(buf);
}

void vt_compare(struct ws_server *s, const char *name, const uint8_t *shadow, uint64_t size,
                uint32_t chunk_size)
{
    ws_compare(s, name, shadow, 0, size, chunk_size, 4);
}

uint8_t *vt_shadow_copy(const uint8_t *shadow, uint64_t size)
{
    uint8_t *copy = ws_shadow_new(size);

    memcpy(copy, shadow, size);
    return copy;
}

static int vt_double_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double vt_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, vt_double_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

JsonNode *vt_control(struct ws_server *s, const char *request)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    GString *answer = g_string_new(NULL);
    char buf[4096];
    int fd;

    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", s->control);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        WS_FAIL("connect to %s: %s", s->control, strerror(errno));
    size_t len = strlen(request);
    if (write(fd, request, len) != (ssize_t)len || write(fd, "\n", 1) != 1)
        WS_FAIL("write to %s: %s", s->control, strerror(errno));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        g_string_append_len(answer, buf, n);
        if (memchr(buf, '\n', (size_t)n))
            break;
    }
    close(fd);
    JsonNode *node = vt_json(answer->str);
    WS_CHECK(JSON_NODE_HOLDS_OBJECT(node), "the answer to %s is not an object: %s", request,
             answer->str);
    g_string_free(answer, TRUE);
    return node;
}

bool vt_answer_ok(JsonNode *answer, int *errno_out)
{
    JsonObject *o = json_node_get_object(answer);
    bool ok = json_object_get_boolean_member_with_default(o, "ok", FALSE);

    if (errno_out)
        *errno_out = ok ? 0 : (int)json_object_get_int_member_with_default(o, "errno", -1);
    return ok;
}
