/* cli_disk.c: `wisp disk create|list|delete|stats|clone|checkpoint|...|gc`.
 *
 * With --control SOCK (or $WISP_CONTROL) the request goes to a running storage server's control
 * socket.  Without it, the CLI opens the metadata itself (--meta DIR or $WISP_META) under an
 * exclusive lock, which fails while a server holds it.  Both paths print the same JSON, built
 * by meta_json.c. */
#include "chunk_gc.h"
#include "cli.h"
#include "export_name.h"
#include "meta.h"
#include "meta_json.h"
#include "store.h"

#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct cli_disk_options {
    char *control;
    char *meta_dir;
    char *store_url;
    char *size;
    char *chunk_size;
    char *comment;
    char *grace;
    gboolean json;
    gboolean force;
    gboolean steal;
    gboolean dry_run;
};

/* ---- the two ways to reach the metadata ------------------------------------------------------ */

/* Sends one request to the control socket and returns the parsed answer object (ok or not),
 * or NULL after printing why the server could not be reached. */
static JsonNode *cli_disk_control_call(const char *path, JsonBuilder *request)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    JsonNode *req = json_builder_get_root(request);
    char *text = json_to_string(req, FALSE);
    GString *answer = g_string_new(NULL);
    JsonNode *result = NULL;
    char buf[4096];
    int fd = -1;

    json_node_unref(req);
    if (strlen(path) >= sizeof addr.sun_path) {
        cli_error("control socket path too long: %s", path);
        goto out;
    }
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        cli_error("cannot reach the storage server at %s: %s (is nbdkit running with "
                  "control=%s?)",
                  path, g_strerror(errno), path);
        goto out;
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        cli_error("write to %s: %s", path, g_strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        g_string_append_len(answer, buf, n);
        if (memchr(buf, '\n', (size_t)n))
            break;
    }
    JsonParser *parser = json_parser_new();
    if (answer->len > 0 && json_parser_load_from_data(parser, answer->str, -1, NULL) &&
        JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
        result = json_node_copy(json_parser_get_root(parser));
    else
        cli_error("the storage server at %s sent no valid answer", path);
    g_object_unref(parser);
out:
    if (fd >= 0)
        close(fd);
    g_free(text);
    g_string_free(answer, TRUE);
    return result;
}

/* Starts a request object {"op": op, "name": name (if not NULL)}; the caller may add members,
 * then sends it with cli_disk_control_send. */
static JsonBuilder *cli_disk_request(const char *op, const char *name)
{
    JsonBuilder *b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "op");
    json_builder_add_string_value(b, op);
    if (name) {
        json_builder_set_member_name(b, "name");
        json_builder_add_string_value(b, name);
    }
    return b;
}

/* Ends and sends the request, and frees the builder.  The answer, or NULL (reported). */
static JsonNode *cli_disk_control_send(const char *path, JsonBuilder *b)
{
    json_builder_end_object(b);
    JsonNode *answer = cli_disk_control_call(path, b);
    g_object_unref(b);
    return answer;
}

/* Checks an answer; prints its error and returns the exit code if it is not ok. */
static int cli_disk_control_status(JsonNode *answer)
{
    JsonObject *o = json_node_get_object(answer);

    if (json_object_get_boolean_member_with_default(o, "ok", FALSE))
        return CLI_EXIT_OK;
    cli_error("%s", json_object_get_string_member_with_default(o, "error", "failed"));
    return CLI_EXIT_ERROR;
}

static int cli_disk_open_meta(struct cli_disk_options *o, struct meta **m)
{
    int r;

    if (!o->meta_dir) {
        cli_error("no storage server or metadata given: pass --control SOCK (or set "
                  "WISP_CONTROL) for a running server, or --meta DIR (WISP_META)");
        return CLI_EXIT_USAGE;
    }
    r = meta_open(o->meta_dir, true, m);
    if (r == -EBUSY) {
        cli_error("the metadata in %s is held by a running server: use --control SOCK",
                  o->meta_dir);
        return CLI_EXIT_ERROR;
    }
    if (r < 0) {
        cli_error("cannot open the metadata in %s: %s", o->meta_dir, g_strerror(-r));
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

static void cli_disk_print_json(JsonNode *node)
{
    char *text = json_to_string(node, TRUE);
    printf("%s\n", text);
    g_free(text);
}

static void cli_disk_print_human(JsonObject *disk)
{
    printf("%-32s %10.1f GiB  %5lld KiB chunks  flush %lld\n",
           json_object_get_string_member(disk, "name"),
           (double)json_object_get_int_member(disk, "size") / (1 << 30),
           (long long)json_object_get_int_member(disk, "chunk_size") / 1024,
           (long long)json_object_get_int_member(disk, "flush_gen"));
}

/* ---- verbs ------------------------------------------------------------------------------------
 */

static int cli_disk_parse_size(const char *what, const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = g_ascii_strtod(text, &end);
    uint64_t mult = 1;

    if (errno || end == text || v <= 0)
        goto bad;
    switch (*end) {
    case 'k':
    case 'K':
        mult = 1ULL << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1ULL << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1ULL << 30;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1ULL << 40;
        end++;
        break;
    case '\0':
        break;
    default:
        goto bad;
    }
    if (*end == 'i' && end[1] == 'B')
        end += 2;
    else if (*end == 'B')
        end++;
    if (*end || v * (double)mult > (double)(1ULL << 50))
        goto bad;
    *out = (uint64_t)(v * (double)mult);
    return 0;
bad:
    cli_error("%s '%s': expected a size such as 100G, 1M or 65536", what, text);
    return -EINVAL;
}

static int cli_disk_create(struct cli_disk_options *o, int argc, char **argv)
{
    uint64_t size = 100ULL << 30, chunk = 0;
    struct meta_disk d;
    struct meta *m;
    int status;

    if (argc != 1) {
        cli_error("usage: wisp disk create NAME [--size 100G] [--chunk-size 1M]");
        return CLI_EXIT_USAGE;
    }
    if ((o->size && cli_disk_parse_size("--size", o->size, &size) < 0) ||
        (o->chunk_size && cli_disk_parse_size("--chunk-size", o->chunk_size, &chunk) < 0))
        return CLI_EXIT_USAGE;

    if (o->control) {
        JsonBuilder *b = cli_disk_request("disk-create", argv[0]);
        json_builder_set_member_name(b, "size");
        json_builder_add_int_value(b, (gint64)size);
        if (chunk) {
            json_builder_set_member_name(b, "chunk_size");
            json_builder_add_int_value(b, (gint64)chunk);
        }
        JsonNode *answer = cli_disk_control_send(o->control, b);
        if (!answer)
            return CLI_EXIT_ERROR;
        status = cli_disk_control_status(answer);
        if (status == CLI_EXIT_OK) {
            JsonNode *disk = json_object_get_member(json_node_get_object(answer), "disk");
            if (o->json)
                cli_disk_print_json(disk);
            else
                cli_disk_print_human(json_node_get_object(disk));
        }
        json_node_unref(answer);
        return status;
    }

    status = cli_disk_open_meta(o, &m);
    if (status != CLI_EXIT_OK)
        return status;
    int r = meta_disk_create(m, argv[0], size, chunk ? (uint32_t)chunk : 1 << 20, &d);
    meta_close(m);
    if (r == -EEXIST) {
        cli_error("a disk named '%s' exists", argv[0]);
        return CLI_EXIT_ERROR;
    }
    if (r < 0) {
        cli_error("cannot create '%s': %s (names are 1-128 of [A-Za-z0-9._-]; chunk sizes a "
                  "power of two from 64K to 4M)",
                  argv[0], g_strerror(-r));
        return CLI_EXIT_ERROR;
    }
    JsonBuilder *b = json_builder_new();
    meta_json_add_disk(b, &d);
    JsonNode *node = json_builder_get_root(b);
    if (o->json)
        cli_disk_print_json(node);
    else
        cli_disk_print_human(json_node_get_object(node));
    json_node_unref(node);
    g_object_unref(b);
    return CLI_EXIT_OK;
}

static int cli_disk_list_one(const struct meta_disk *d, void *opaque)
{
    meta_json_add_disk(opaque, d);
    return 0;
}

static int cli_disk_list(struct cli_disk_options *o, int argc, char **argv)
{
    JsonNode *disks = NULL, *answer = NULL;
    int status = CLI_EXIT_OK;

    if (argc != 0) {
        cli_error("usage: wisp disk list [--json]");
        return CLI_EXIT_USAGE;
    }
    if (o->control) {
        answer = cli_disk_control_send(o->control, cli_disk_request("disk-list", NULL));
        if (!answer)
            return CLI_EXIT_ERROR;
        status = cli_disk_control_status(answer);
        if (status == CLI_EXIT_OK)
            disks = json_node_copy(json_object_get_member(json_node_get_object(answer), "disks"));
        json_node_unref(answer);
    } else {
        struct meta *m;
        status = cli_disk_open_meta(o, &m);
        if (status != CLI_EXIT_OK)
            return status;
        JsonBuilder *b = json_builder_new();
        json_builder_begin_array(b);
        int r = meta_disk_list(m, cli_disk_list_one, b);
        json_builder_end_array(b);
        meta_close(m);
        disks = json_builder_get_root(b);
        g_object_unref(b);
        if (r < 0) {
            cli_error("cannot list disks: %s", g_strerror(-r));
            status = CLI_EXIT_ERROR;
        }
    }
    if (status == CLI_EXIT_OK) {
        if (o->json) {
            cli_disk_print_json(disks);
        } else {
            JsonArray *a = json_node_get_array(disks);
            for (guint i = 0; i < json_array_get_length(a); i++)
                cli_disk_print_human(json_array_get_object_element(a, i));
        }
    }
    if (disks)
        json_node_unref(disks);
    return status;
}

static int cli_disk_delete(struct cli_disk_options *o, int argc, char **argv)
{
    if (argc != 1) {
        cli_error("usage: wisp disk delete NAME");
        return CLI_EXIT_USAGE;
    }
    if (o->control) {
        JsonNode *answer =
            cli_disk_control_send(o->control, cli_disk_request("disk-delete", argv[0]));
        if (!answer)
            return CLI_EXIT_ERROR;
        int status = cli_disk_control_status(answer);
        json_node_unref(answer);
        return status;
    }
    struct meta *m;
    int status = cli_disk_open_meta(o, &m);
    if (status != CLI_EXIT_OK)
        return status;
    int r = meta_disk_delete(m, argv[0]);
    meta_close(m);
    if (r == -ENOENT) {
        cli_error("no disk named '%s' (wisp disk list shows them)", argv[0]);
        return CLI_EXIT_ERROR;
    }
    if (r < 0) {
        cli_error("cannot delete '%s': %s", argv[0], g_strerror(-r));
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

static void cli_disk_print_members(JsonObject *o, const char *title)
{
    GList *names = json_object_get_members(o);

    printf("%s:\n", title);
    for (GList *l = names; l; l = l->next) {
        JsonNode *v = json_object_get_member(o, l->data);
        if (JSON_NODE_TYPE(v) == JSON_NODE_VALUE && json_node_get_value_type(v) == G_TYPE_INT64)
            printf("  %-16s %lld\n", (const char *)l->data, (long long)json_node_get_int(v));
    }
    g_list_free(names);
}

static int cli_disk_stats(struct cli_disk_options *o, int argc, char **argv)
{
    if (argc != 1) {
        cli_error("usage: wisp disk stats NAME [--json]");
        return CLI_EXIT_USAGE;
    }
    if (!o->control) {
        cli_error("disk stats come from a running server: pass --control SOCK (or set "
                  "WISP_CONTROL)");
        return CLI_EXIT_USAGE;
    }
    JsonNode *answer = cli_disk_control_send(o->control, cli_disk_request("disk-stats", argv[0]));
    if (!answer)
        return CLI_EXIT_ERROR;
    int status = cli_disk_control_status(answer);
    if (status == CLI_EXIT_OK) {
        JsonObject *a = json_node_get_object(answer);
        if (o->json) {
            json_object_remove_member(a, "ok");
            cli_disk_print_json(answer);
        } else {
            cli_disk_print_human(json_object_get_object_member(a, "disk"));
            printf("open: %s, %lld connections\n",
                   json_object_get_boolean_member(a, "open") ? "yes" : "no",
                   (long long)json_object_get_int_member(a, "connections"));
            cli_disk_print_members(json_object_get_object_member(a, "stats"), "disk");
            cli_disk_print_members(json_object_get_object_member(a, "cache"), "cache (shared)");
            cli_disk_print_members(json_object_get_object_member(a, "store"), "store (shared)");
        }
    }
    json_node_unref(answer);
    return status;
}

/* `wisp disk lease NAME [--steal]`: who holds a disk's writer lease, through the server that
 * would take it over (leases live in the store, the server knows the store and its name). */
static int cli_disk_lease(struct cli_disk_options *o, int argc, char **argv)
{
    if (argc != 1) {
        cli_error("usage: wisp disk lease NAME [--steal] [--json]");
        return CLI_EXIT_USAGE;
    }
    if (!o->control) {
        cli_error("disk leases are asked through a running server: pass --control SOCK (or set "
                  "WISP_CONTROL)");
        return CLI_EXIT_USAGE;
    }
    JsonBuilder *b = cli_disk_request("disk-lease", argv[0]);
    json_builder_set_member_name(b, "steal");
    json_builder_add_boolean_value(b, o->steal);
    JsonNode *answer = cli_disk_control_send(o->control, b);
    if (!answer)
        return CLI_EXIT_ERROR;
    int status = cli_disk_control_status(answer);
    if (status == CLI_EXIT_OK) {
        JsonObject *a = json_node_get_object(answer);
        JsonObject *l = json_object_get_object_member(a, "lease");
        if (o->json) {
            json_object_remove_member(a, "ok");
            cli_disk_print_json(answer);
        } else if (!json_object_get_boolean_member(l, "held")) {
            printf("%s: no writer holds it%s\n", argv[0],
                   json_object_has_member(l, "generation") ? " (released)" : "");
        } else {
            printf("%s: held by %s%s, generation %lld, renewed %.0f s ago, ttl %.0f s%s\n", argv[0],
                   json_object_get_string_member(l, "holder"),
                   json_object_get_boolean_member(l, "ours") ? " (this server)" : "",
                   (long long)json_object_get_int_member(l, "generation"),
                   json_object_get_double_member(l, "age"), json_object_get_double_member(l, "ttl"),
                   json_object_get_boolean_member(l, "expired") ? ", expired" : "");
        }
    }
    json_node_unref(answer);
    return status;
}

/* ---- versions: clone, checkpoint, restore ------------------------------------------------------
 */

static int cli_disk_has_pending(const struct meta_pending *p, void *opaque)
{
    return 1;
}

/* Offline, the head is only a version if everything flushed was uploaded. */
static int cli_disk_offline_head(struct meta *m, const char *name, struct meta_disk *d)
{
    int r = meta_disk_get(m, name, d);

    if (r == -ENOENT) {
        cli_error("no disk named '%s' (wisp disk list shows them)", name);
        return CLI_EXIT_ERROR;
    }
    if (r < 0) {
        cli_error("disk '%s': %s", name, g_strerror(-r));
        return CLI_EXIT_ERROR;
    }
    /* Pending rows, the write log's mark or shipped rows (meta.h): flushes the head does not
     * have yet. */
    if (meta_pending_list(m, d->id, cli_disk_has_pending, NULL) == 1 ||
        meta_write_log_unuploaded(m, d->id) == 1 || meta_write_log_shipped_any(m, d->id) == 1) {
        cli_error("disk '%s' has data flushed but not yet uploaded: start the storage server "
                  "(it uploads within upload-delay) and use --control",
                  name);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

/* Prints a control answer's member (a disk or checkpoint) and its time. */
static int cli_disk_print_answer(struct cli_disk_options *o, JsonNode *answer, const char *member)
{
    int status = cli_disk_control_status(answer);

    if (status == CLI_EXIT_OK) {
        JsonObject *a = json_node_get_object(answer);
        JsonNode *node = json_object_get_member(a, member);
        if (o->json) {
            json_object_remove_member(a, "ok");
            cli_disk_print_json(answer);
        } else if (node && strcmp(member, "disk") == 0) {
            cli_disk_print_human(json_node_get_object(node));
        } else if (node) {
            printf("%s  %s  (%.1f ms)\n",
                   json_object_get_string_member(json_node_get_object(node), "name"),
                   json_object_get_string_member(json_node_get_object(node), "root"),
                   json_object_get_double_member_with_default(a, "ms", 0));
        }
    }
    json_node_unref(answer);
    return status;
}

static int cli_disk_clone(struct cli_disk_options *o, int argc, char **argv)
{
    struct export_name src;
    struct meta_checkpoint c;
    struct meta_disk d, made;
    struct meta *m;
    const char *why;
    int status, r;

    if (argc != 2) {
        cli_error("usage: wisp disk clone SRC[@CHECKPOINT] NEW");
        return CLI_EXIT_USAGE;
    }
    if (export_name_parse(argv[0], &src, &why) < 0) {
        cli_error("'%s': %s", argv[0], why);
        return CLI_EXIT_USAGE;
    }
    if (o->control) {
        JsonBuilder *b = cli_disk_request("disk-clone", argv[1]);
        json_builder_set_member_name(b, "source");
        json_builder_add_string_value(b, argv[0]);
        JsonNode *answer = cli_disk_control_send(o->control, b);
        return answer ? cli_disk_print_answer(o, answer, "disk") : CLI_EXIT_ERROR;
    }
    status = cli_disk_open_meta(o, &m);
    if (status != CLI_EXIT_OK)
        return status;
    status = src.checkpoint[0] ? CLI_EXIT_OK : cli_disk_offline_head(m, src.disk, &d);
    r = 0;
    if (status == CLI_EXIT_OK && src.checkpoint[0]) {
        r = meta_disk_get(m, src.disk, &d);
        if (r == 0)
            r = meta_checkpoint_get(m, d.id, src.checkpoint, &c);
        if (r == 0)
            d.head_root = c.root;
    }
    if (status == CLI_EXIT_OK && r == 0) {
        r = meta_begin(m);
        if (r == 0)
            r = meta_disk_create(m, argv[1], d.size, d.chunk_size, &made);
        if (r == 0)
            r = meta_head_set(m, made.id, &d.head_root, 0);
        if (r == 0)
            r = meta_commit(m);
        else
            meta_rollback(m);
    }
    if (status == CLI_EXIT_OK && r < 0) {
        cli_error("clone %s to %s: %s", argv[0], argv[1],
                  r == -ENOENT   ? "no such disk or checkpoint"
                  : r == -EEXIST ? "a disk of that name exists"
                                 : g_strerror(-r));
        status = CLI_EXIT_ERROR;
    }
    meta_close(m);
    return status;
}

static int cli_disk_checkpoint(struct cli_disk_options *o, int argc, char **argv)
{
    struct meta_disk d;
    struct meta *m;
    int status, r;

    if (argc != 2) {
        cli_error("usage: wisp disk checkpoint NAME CHECKPOINT [--comment TEXT]");
        return CLI_EXIT_USAGE;
    }
    if (o->control) {
        JsonBuilder *b = cli_disk_request("disk-checkpoint", argv[0]);
        json_builder_set_member_name(b, "checkpoint");
        json_builder_add_string_value(b, argv[1]);
        json_builder_set_member_name(b, "comment");
        json_builder_add_string_value(b, o->comment ? o->comment : "");
        JsonNode *answer = cli_disk_control_send(o->control, b);
        return answer ? cli_disk_print_answer(o, answer, "checkpoint") : CLI_EXIT_ERROR;
    }
    if (o->comment && strlen(o->comment) > META_COMMENT_MAX) {
        cli_error("the comment is longer than %d bytes", META_COMMENT_MAX);
        return CLI_EXIT_USAGE;
    }
    status = cli_disk_open_meta(o, &m);
    if (status != CLI_EXIT_OK)
        return status;
    status = cli_disk_offline_head(m, argv[0], &d);
    if (status == CLI_EXIT_OK) {
        r = meta_checkpoint_create(m, d.id, argv[1], &d.head_root, o->comment);
        if (r < 0) {
            cli_error("checkpoint %s of %s: %s", argv[1], argv[0],
                      r == -EEXIST   ? "a checkpoint of that name exists"
                      : r == -EINVAL ? "invalid name (1-128 of [A-Za-z0-9._-])"
                                     : g_strerror(-r));
            status = CLI_EXIT_ERROR;
        }
    }
    meta_close(m);
    return status;
}

static int cli_disk_checkpoint_one(const struct meta_checkpoint *c, void *opaque)
{
    meta_json_add_checkpoint(opaque, c);
    return 0;
}

static int cli_disk_checkpoints(struct cli_disk_options *o, int argc, char **argv)
{
    JsonNode *list = NULL;
    int status = CLI_EXIT_OK;

    if (argc != 1) {
        cli_error("usage: wisp disk checkpoints NAME [--json]");
        return CLI_EXIT_USAGE;
    }
    if (o->control) {
        JsonNode *answer =
            cli_disk_control_send(o->control, cli_disk_request("disk-checkpoints", argv[0]));
        if (!answer)
            return CLI_EXIT_ERROR;
        status = cli_disk_control_status(answer);
        if (status == CLI_EXIT_OK)
            list =
                json_node_copy(json_object_get_member(json_node_get_object(answer), "checkpoints"));
        json_node_unref(answer);
    } else {
        struct meta_disk d;
        struct meta *m;
        status = cli_disk_open_meta(o, &m);
        if (status != CLI_EXIT_OK)
            return status;
        int r = meta_disk_get(m, argv[0], &d);
        JsonBuilder *b = json_builder_new();
        json_builder_begin_array(b);
        if (r == 0)
            r = meta_checkpoint_list(m, d.id, cli_disk_checkpoint_one, b);
        json_builder_end_array(b);
        list = json_builder_get_root(b);
        g_object_unref(b);
        meta_close(m);
        if (r < 0) {
            cli_error("checkpoints of %s: %s", argv[0],
                      r == -ENOENT ? "no such disk" : g_strerror(-r));
            status = CLI_EXIT_ERROR;
        }
    }
    if (status == CLI_EXIT_OK && o->json) {
        cli_disk_print_json(list);
    } else if (status == CLI_EXIT_OK) {
        JsonArray *a = json_node_get_array(list);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonObject *c = json_array_get_object_element(a, i);
            time_t t = (time_t)json_object_get_int_member(c, "created");
            char when[32];
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
            printf("%-24s %s  %s\n", json_object_get_string_member(c, "name"), when,
                   json_object_get_string_member(c, "comment"));
        }
    }
    if (list)
        json_node_unref(list);
    return status;
}

static int cli_disk_restore(struct cli_disk_options *o, int argc, char **argv)
{
    struct meta_checkpoint c;
    struct meta_disk d;
    struct meta *m;
    int status, r;

    if (argc != 2) {
        cli_error("usage: wisp disk restore NAME CHECKPOINT [--force]");
        return CLI_EXIT_USAGE;
    }
    if (o->control) {
        JsonBuilder *b = cli_disk_request("disk-restore", argv[0]);
        json_builder_set_member_name(b, "checkpoint");
        json_builder_add_string_value(b, argv[1]);
        json_builder_set_member_name(b, "force");
        json_builder_add_boolean_value(b, o->force);
        JsonNode *answer = cli_disk_control_send(o->control, b);
        return answer ? cli_disk_print_answer(o, answer, "checkpoint") : CLI_EXIT_ERROR;
    }
    status = cli_disk_open_meta(o, &m);
    if (status != CLI_EXIT_OK)
        return status;
    r = meta_disk_get(m, argv[0], &d);
    if (r == 0)
        r = meta_checkpoint_get(m, d.id, argv[1], &c);
    /* Offline, unuploaded data is discarded with the rest of what came after the checkpoint;
     * its files are removed as orphans when the server next opens the disk. */
    if (r == 0)
        r = meta_begin(m);
    if (r == 0) {
        r = meta_pending_clear(m, d.id);
        if (r == 0)
            r = meta_write_log_forget(m, d.id); /* the write log's records are void with it */
        if (r == 0)
            r = meta_head_set(m, d.id, &c.root, d.flush_gen);
        if (r == 0)
            r = meta_commit(m);
        else
            meta_rollback(m);
    }
    if (r < 0) {
        cli_error("restore %s to %s: %s", argv[0], argv[1],
                  r == -ENOENT ? "no such disk or checkpoint" : g_strerror(-r));
        status = CLI_EXIT_ERROR;
    }
    meta_close(m);
    return status;
}

static int cli_disk_checkpoint_delete(struct cli_disk_options *o, int argc, char **argv)
{
    struct meta_disk d;
    struct meta *m;
    int status, r;

    if (argc != 2) {
        cli_error("usage: wisp disk checkpoint-delete NAME CHECKPOINT");
        return CLI_EXIT_USAGE;
    }
    if (o->control) {
        JsonBuilder *b = cli_disk_request("checkpoint-delete", argv[0]);
        json_builder_set_member_name(b, "checkpoint");
        json_builder_add_string_value(b, argv[1]);
        JsonNode *answer = cli_disk_control_send(o->control, b);
        if (!answer)
            return CLI_EXIT_ERROR;
        status = cli_disk_control_status(answer);
        json_node_unref(answer);
        return status;
    }
    status = cli_disk_open_meta(o, &m);
    if (status != CLI_EXIT_OK)
        return status;
    r = meta_disk_get(m, argv[0], &d);
    if (r == 0)
        r = meta_checkpoint_delete(m, d.id, argv[1]);
    if (r < 0) {
        cli_error("delete checkpoint %s of %s: %s", argv[1], argv[0],
                  r == -ENOENT ? "no such disk or checkpoint" : g_strerror(-r));
        status = CLI_EXIT_ERROR;
    }
    meta_close(m);
    return status;
}

/* ---- garbage collection -------------------------------------------------------------------------
 */

static void cli_disk_print_gc(struct cli_disk_options *o, const struct chunk_gc_report *r)
{
    char line[CHUNK_GC_REPORT_MAX];

    if (o->json) {
        JsonBuilder *b = json_builder_new();
        meta_json_add_gc_report(b, r);
        JsonNode *node = json_builder_get_root(b);
        cli_disk_print_json(node);
        json_node_unref(node);
        g_object_unref(b);
        return;
    }
    chunk_gc_format_report(r, line, sizeof line);
    printf("gc%s: %s\n", r->dry_run ? " (dry run)" : "", line);
}

/* Offline: the metadata under its exclusive lock (no server writes meanwhile) and the store. */
static int cli_disk_gc_offline(struct cli_disk_options *o, uint64_t grace)
{
    /* Every replica is read, this metadata's own included: offline, nothing says that it
     * holds all of its replica (a server elsewhere may have taken the name over). */
    struct chunk_gc_options opts = {
        .grace_s = grace, .dry_run = o->dry_run, .scratch_dir = o->meta_dir};
    struct chunk_gc_report report;
    struct store *st;
    struct meta *m;
    int status, r;

    if (o->meta_dir && !o->store_url) {
        cli_error("gc without a server needs the store too: --store URL (or WISP_STORE)");
        return CLI_EXIT_USAGE;
    }
    status = cli_disk_open_meta(o, &m);
    if (status != CLI_EXIT_OK)
        return status;
    r = store_open(o->store_url, NULL, &st);
    if (r < 0) {
        cli_error("cannot open the store %s: %s", o->store_url,
                  *store_last_error() ? store_last_error() : g_strerror(-r));
        meta_close(m);
        return CLI_EXIT_ERROR;
    }
    r = chunk_gc_run(st, m, &opts, &report);
    store_close(st);
    meta_close(m);
    if (r < 0) {
        cli_error("garbage collection failed: %s (WISP_LOG_LEVEL=info shows why)", g_strerror(-r));
        if (report.store_time)
            cli_disk_print_gc(o, &report);
        return CLI_EXIT_ERROR;
    }
    cli_disk_print_gc(o, &report);
    return CLI_EXIT_OK;
}

static int cli_disk_gc(struct cli_disk_options *o, int argc, char **argv)
{
    uint64_t grace = CHUNK_GC_GRACE_DEFAULT;
    struct chunk_gc_report report;

    if (argc != 0) {
        cli_error("usage: wisp disk gc [--dry-run] [--grace 1h] [--json]");
        return CLI_EXIT_USAGE;
    }
    if (o->grace && chunk_gc_parse_duration(o->grace, &grace) < 0) {
        cli_error("--grace '%s': expected a duration such as 3600, 90s, 30m, 1h or 2d", o->grace);
        return CLI_EXIT_USAGE;
    }
    if (!o->control)
        return cli_disk_gc_offline(o, grace);

    JsonBuilder *b = cli_disk_request("gc", NULL);
    json_builder_set_member_name(b, "dry_run");
    json_builder_add_boolean_value(b, o->dry_run);
    json_builder_set_member_name(b, "force");
    json_builder_add_boolean_value(b, o->force);
    if (o->grace) { /* otherwise the server's gc-grace */
        json_builder_set_member_name(b, "grace");
        json_builder_add_int_value(b, (gint64)grace);
    }
    JsonNode *answer = cli_disk_control_send(o->control, b);
    if (!answer)
        return CLI_EXIT_ERROR;
    int status = cli_disk_control_status(answer);
    JsonObject *a = json_node_get_object(answer);
    if (status == CLI_EXIT_OK && json_object_has_member(a, "gc") &&
        JSON_NODE_HOLDS_OBJECT(json_object_get_member(a, "gc"))) {
        meta_json_get_gc_report(json_object_get_object_member(a, "gc"), &report);
        cli_disk_print_gc(o, &report);
    }
    json_node_unref(answer);
    return status;
}

struct cli_disk_verb {
    const char *name;
    int (*run)(struct cli_disk_options *o, int argc, char **argv);
    const char *args;
    const char *summary;
};

static const struct cli_disk_verb cli_disk_verbs[] = {
    {"create", cli_disk_create, "NAME [--size 100G] [--chunk-size 1M]", "create an empty disk"},
    {"list", cli_disk_list, "[--json]", "list disks"},
    {"delete", cli_disk_delete, "NAME", "delete a disk"},
    {"stats", cli_disk_stats, "NAME [--json]", "a served disk's I/O, cache and upload counters"},
    {"clone", cli_disk_clone, "SRC[@CKPT] NEW", "a new disk from a disk or checkpoint, no copy"},
    {"checkpoint", cli_disk_checkpoint, "NAME CKPT [--comment TEXT]", "name the current version"},
    {"checkpoints", cli_disk_checkpoints, "NAME [--json]", "list a disk's checkpoints"},
    {"restore", cli_disk_restore, "NAME CKPT [--force]", "make a checkpoint the disk's content"},
    {"checkpoint-delete", cli_disk_checkpoint_delete, "NAME CKPT", "delete a checkpoint"},
    {"lease", cli_disk_lease, "NAME [--steal] [--json]",
     "who writes the disk; --steal takes an expired lease over"},
    {"gc", cli_disk_gc, "[--dry-run] [--grace 1h]",
     "delete chunks no version references (offline: --meta and --store)"},
};

static void cli_disk_usage(FILE *out)
{
    fprintf(out, "Usage: wisp disk VERB [OPTIONS] ARGS...\n\nVerbs:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(cli_disk_verbs); i++)
        fprintf(out, "  %-18s %-30s %s\n", cli_disk_verbs[i].name, cli_disk_verbs[i].args,
                cli_disk_verbs[i].summary);
    fprintf(out, "  %-18s %-30s %s\n", "restore-meta", "--store URL --meta DIR",
            "rebuild metadata from its replica");
    fprintf(out, "  %-18s %-30s %s\n", "import", "NAME FILE --store URL --meta DIR",
            "a new disk from a file's data, zero chunks skipped");
    fprintf(out, "\nA running server is reached with --control SOCK ($WISP_CONTROL); otherwise "
                 "--meta DIR ($WISP_META)\nopens the metadata directly.  Run 'wisp disk VERB "
                 "--help' for the options.\n");
}

int cli_disk_main(int argc, char **argv)
{
    struct cli_disk_options o = {0};
    const struct cli_disk_verb *verb = NULL;
    GOptionEntry entries[] = {
        {"control", 'c', 0, G_OPTION_ARG_FILENAME, &o.control,
         "Control socket of a running server (default $WISP_CONTROL)", "SOCK"},
        {"meta", 'm', 0, G_OPTION_ARG_FILENAME, &o.meta_dir,
         "Metadata directory, when no server runs (default $WISP_META)", "DIR"},
        {"store", 's', 0, G_OPTION_ARG_STRING, &o.store_url, "Store URL (default $WISP_STORE)",
         "URL"},
        {"size", 0, 0, G_OPTION_ARG_STRING, &o.size, "create: disk size (default 100G)", "SIZE"},
        {"chunk-size", 0, 0, G_OPTION_ARG_STRING, &o.chunk_size,
         "create: chunk size, a power of two from 64K to 4M (default 1M)", "SIZE"},
        {"comment", 0, 0, G_OPTION_ARG_STRING, &o.comment, "checkpoint: a comment", "TEXT"},
        {"force", 0, 0, G_OPTION_ARG_NONE, &o.force,
         "restore: even while clients are connected (they see the checkpoint next); gc: a "
         "grace shorter than the server's gc-grace",
         NULL},
        {"steal", 0, 0, G_OPTION_ARG_NONE, &o.steal,
         "lease: take the disk's writer lease over, once it has expired", NULL},
        {"dry-run", 0, 0, G_OPTION_ARG_NONE, &o.dry_run,
         "gc: delete nothing, report what would be deleted", NULL},
        {"grace", 0, 0, G_OPTION_ARG_STRING, &o.grace,
         "gc: keep unreferenced chunks younger than this (default: the server's gc-grace, or 1h "
         "offline)",
         "DURATION"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &o.json, "Print JSON", NULL},
        G_OPTION_ENTRY_NULL,
    };
    int status;

    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cli_disk_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "restore-meta")) /* cli_restore_meta.c: options of its own */
        return cli_restore_meta_main(argc, argv);
    if (!strcmp(argv[1], "import")) /* cli_import.c: options of its own */
        return cli_import_main(argc, argv);
    for (size_t i = 0; i < G_N_ELEMENTS(cli_disk_verbs); i++)
        if (!strcmp(argv[1], cli_disk_verbs[i].name))
            verb = &cli_disk_verbs[i];
    if (!verb) {
        cli_error("unknown disk verb '%s'; run 'wisp disk --help'", argv[1]);
        return CLI_EXIT_USAGE;
    }
    if (cli_parse_options("disk", verb->name, verb->args, verb->summary, entries, &argc, &argv) !=
        CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    if (!o.control && getenv("WISP_CONTROL") && !o.meta_dir)
        o.control = g_strdup(getenv("WISP_CONTROL"));
    if (!o.meta_dir && getenv("WISP_META"))
        o.meta_dir = g_strdup(getenv("WISP_META"));
    if (!o.store_url && getenv("WISP_STORE"))
        o.store_url = g_strdup(getenv("WISP_STORE"));

    status = verb->run(&o, argc, argv);
    g_free(o.control);
    g_free(o.meta_dir);
    g_free(o.store_url);
    g_free(o.size);
    g_free(o.chunk_size);
    g_free(o.comment);
    g_free(o.grace);
    return status;
}
