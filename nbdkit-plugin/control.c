/* control.c: the control socket (protocol in control.h).  One thread accepts and serves one
 * client at a time: these are rare administrative requests. */
#include "control.h"

#include "chunk_gc.h"
#include "export_name.h"
#include "log.h"
#include "meta_json.h"
#include "replica.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CONTROL_LINE_MAX (64 * 1024)

static char *control_path;

static void control_error(JsonBuilder *b, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void control_error(JsonBuilder *b, int err, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    json_builder_set_member_name(b, "ok");
    json_builder_add_boolean_value(b, FALSE);
    json_builder_set_member_name(b, "errno");
    json_builder_add_int_value(b, err);
    json_builder_set_member_name(b, "error");
    json_builder_add_string_value(b, msg);
    g_free(msg);
}

static void control_ok(JsonBuilder *b)
{
    json_builder_set_member_name(b, "ok");
    json_builder_add_boolean_value(b, TRUE);
}

static void control_disk_create(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    gint64 size = json_object_get_int_member_with_default(req, "size", 100LL << 30);
    gint64 chunk =
        json_object_get_int_member_with_default(req, "chunk_size", s->config->chunk_size);
    struct meta_disk d;
    int r;

    if (!name) {
        control_error(b, EINVAL, "disk-create needs a name");
        return;
    }
    if (size <= 0 || chunk <= 0 || chunk > UINT32_MAX) {
        control_error(b, EINVAL, "size and chunk_size must be positive");
        return;
    }
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_create(s->meta, name, (uint64_t)size, (uint32_t)chunk, &d);
    pthread_mutex_unlock(&s->meta_lock);
    if (r == -EEXIST)
        control_error(b, EEXIST, "a disk named '%s' exists", name);
    else if (r == -EINVAL)
        control_error(b, EINVAL,
                      "invalid disk: names are 1-128 of [A-Za-z0-9._-]; sizes up to 1 PiB; "
                      "chunk sizes a power of two from 64K to 4M");
    else if (r < 0)
        control_error(b, -r, "create '%s': %s", name, strerror(-r));
    else {
        control_ok(b);
        json_builder_set_member_name(b, "disk");
        meta_json_add_disk(b, &d);
    }
}

struct control_list {
    struct plugin_state *s;
    JsonBuilder *b;
};

static int control_list_one(const struct meta_disk *d, void *opaque)
{
    meta_json_add_disk(((struct control_list *)opaque)->b, d);
    return 0;
}

static void control_disk_list(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    JsonBuilder *list = json_builder_new();
    struct control_list l = {s, list};
    int r;

    /* Built apart, so that a failure midway answers an error, never half a list: a caller
     * (wispd's reconcile) takes a disk missing from the list as a disk that does not exist. */
    json_builder_begin_array(list);
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_list(s->meta, control_list_one, &l);
    pthread_mutex_unlock(&s->meta_lock);
    json_builder_end_array(list);
    if (r == 0) {
        control_ok(b);
        json_builder_set_member_name(b, "disks");
        json_builder_add_value(b, json_builder_get_root(list));
    } else {
        control_error(b, -r, "disk-list: %s", strerror(-r));
    }
    g_object_unref(list);
}

static void control_disk_delete(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    unsigned connections;
    int r;

    if (!name) {
        control_error(b, EINVAL, "disk-delete needs a name");
        return;
    }
    connections = plugin_disk_connections(s, name);
    if (connections == 0 && plugin_disk_versions_open(s, name, NULL))
        connections = 1; /* a checkpoint export of it */
    if (connections > 0) {
        control_error(b, EBUSY, "disk '%s' has %u open connection%s: disconnect first", name,
                      connections, connections == 1 ? "" : "s");
        return;
    }
    r = plugin_disk_forget(s, name);
    if (r == 0) {
        pthread_mutex_lock(&s->meta_lock);
        r = meta_disk_delete(s->meta, name);
        pthread_mutex_unlock(&s->meta_lock);
    }
    if (r == -ENOENT)
        control_error(b, ENOENT, "no disk named '%s'", name);
    else if (r == -EBUSY)
        control_error(b, EBUSY, "disk '%s' is in use: try again", name);
    else if (r < 0)
        control_error(b, -r, "delete '%s': %s", name, strerror(-r));
    else
        control_ok(b);
}

static double control_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void control_add_ms(JsonBuilder *b, double start)
{
    json_builder_set_member_name(b, "ms");
    json_builder_add_double_value(b, control_now_ms() - start);
}

/* Reports a version operation's failure in words the user can act on. */
static void control_version_error(JsonBuilder *b, int r, const char *what, const char *name)
{
    if (r == -ENOENT)
        control_error(b, ENOENT, "%s: no such disk or checkpoint '%s'", what, name);
    else if (r == -EEXIST)
        control_error(b, EEXIST, "%s: '%s' exists", what, name);
    else if (r == -EINVAL)
        control_error(b, EINVAL, "%s: invalid name '%s' (1-128 of [A-Za-z0-9._-])", what, name);
    else
        control_error(b, -r, "%s '%s': %s", what, name, strerror(-r));
}

/* The root a new version copies from export name `source` ("DISK" or "DISK@CKPT"): for a
 * head, its committed root now, which holds at least every write the caller's
 * plugin_disk_commit_now committed.  Caller holds versions_lock and meta_lock. */
static int control_current_root(struct plugin_state *s, const char *source, struct chunk_hash *root)
{
    struct export_name parsed;
    struct meta_disk d;
    const char *why;
    int r;

    if (export_name_parse(source, &parsed, &why) < 0)
        return -EINVAL;
    if (parsed.checkpoint[0])
        return 0; /* a checkpoint's root never changes; requests run one at a time */
    r = meta_disk_get(s->meta, parsed.disk, &d);
    if (r == 0)
        *root = d.head_root;
    return r;
}

static void control_disk_clone(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *source = json_object_get_string_member_with_default(req, "source", NULL);
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    double start = control_now_ms();
    struct meta_disk src, made;
    struct chunk_hash root;
    int r;

    if (!source || !name) {
        control_error(b, EINVAL, "disk-clone needs a source (DISK or DISK@CHECKPOINT) and a name");
        return;
    }
    r = plugin_disk_version_root(s, source, &src, &root);
    if (r < 0) {
        control_version_error(b, r, "clone", source);
        return;
    }
    /* The new disk shares every map page and chunk with its source: nothing is copied.  A
     * head's root may have moved on since (and a GC may have read the references then): take
     * the current one, under versions_lock until the clone is committed (chunk_gc.h (b)). */
    pthread_mutex_lock(&s->versions_lock);
    pthread_mutex_lock(&s->meta_lock);
    r = control_current_root(s, source, &root);
    if (r == 0)
        r = meta_begin(s->meta);
    if (r == 0)
        r = meta_disk_create(s->meta, name, src.size, src.chunk_size, &made);
    if (r == 0)
        r = meta_head_set(s->meta, made.id, &root, 0);
    if (r == 0)
        r = meta_commit(s->meta);
    else
        meta_rollback(s->meta);
    if (r == 0)
        r = meta_disk_get(s->meta, name, &made);
    pthread_mutex_unlock(&s->meta_lock);
    pthread_mutex_unlock(&s->versions_lock);
    if (r < 0) {
        control_version_error(b, r, "clone", name);
        return;
    }
    control_ok(b);
    json_builder_set_member_name(b, "disk");
    meta_json_add_disk(b, &made);
    control_add_ms(b, start);
}

static void control_disk_checkpoint(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    const char *ckpt = json_object_get_string_member_with_default(req, "checkpoint", NULL);
    const char *comment = json_object_get_string_member_with_default(req, "comment", "");
    double start = control_now_ms();
    struct meta_checkpoint made;
    struct chunk_hash root;
    struct meta_disk d;
    const char *why;
    int r;

    if (strlen(comment) > META_COMMENT_MAX) {
        control_error(b, EINVAL, "the comment is longer than %d bytes", META_COMMENT_MAX);
        return;
    }
    if (!name || !ckpt || !meta_disk_name_valid(ckpt, &why) || strchr(name, '@')) {
        control_error(b, EINVAL,
                      "disk-checkpoint needs a disk name and a valid checkpoint name "
                      "(1-128 of [A-Za-z0-9._-])");
        return;
    }
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_get(s->meta, name, &d);
    if (r == 0 && meta_checkpoint_get(s->meta, d.id, ckpt, &made) == 0)
        r = -EEXIST;
    pthread_mutex_unlock(&s->meta_lock);
    /* Every acknowledged write goes into the checkpoint: flush and upload first. */
    if (r == 0)
        r = plugin_disk_commit_now(s, name, &root);
    if (r == 0) {
        /* As for a clone: the head's current root, under versions_lock (chunk_gc.h (b)). */
        pthread_mutex_lock(&s->versions_lock);
        pthread_mutex_lock(&s->meta_lock);
        r = control_current_root(s, name, &root);
        if (r == 0)
            r = meta_checkpoint_create(s->meta, d.id, ckpt, &root, comment);
        if (r == 0)
            r = meta_checkpoint_get(s->meta, d.id, ckpt, &made);
        pthread_mutex_unlock(&s->meta_lock);
        pthread_mutex_unlock(&s->versions_lock);
    }
    if (r < 0) {
        control_version_error(b, r, "checkpoint", r == -EEXIST ? ckpt : name);
        return;
    }
    control_ok(b);
    json_builder_set_member_name(b, "checkpoint");
    meta_json_add_checkpoint(b, &made);
    control_add_ms(b, start);
}

static int control_checkpoint_one(const struct meta_checkpoint *c, void *opaque)
{
    meta_json_add_checkpoint(opaque, c);
    return 0;
}

static void control_disk_checkpoints(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    JsonBuilder *list = json_builder_new();
    struct meta_disk d;
    int r;

    if (!name) {
        g_object_unref(list);
        control_error(b, EINVAL, "disk-checkpoints needs a disk name");
        return;
    }
    /* Build the list apart, so that a failure midway answers an error, not half a list. */
    json_builder_begin_array(list);
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_get(s->meta, name, &d);
    if (r == 0)
        r = meta_checkpoint_list(s->meta, d.id, control_checkpoint_one, list);
    pthread_mutex_unlock(&s->meta_lock);
    json_builder_end_array(list);
    if (r == 0) {
        control_ok(b);
        json_builder_set_member_name(b, "checkpoints");
        json_builder_add_value(b, json_builder_get_root(list));
    } else if (r == -ENOENT || r == -EINVAL) {
        control_error(b, -r, "no disk named '%s'", name);
    } else {
        control_error(b, -r, "checkpoints of '%s': %s", name, strerror(-r));
    }
    g_object_unref(list);
}

static void control_disk_restore(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    const char *ckpt = json_object_get_string_member_with_default(req, "checkpoint", NULL);
    bool force = json_object_get_boolean_member_with_default(req, "force", FALSE);
    double start = control_now_ms();
    struct meta_checkpoint c;
    struct meta_disk d;
    unsigned connections;
    int r;

    if (!name || !ckpt) {
        control_error(b, EINVAL, "disk-restore needs a disk name and a checkpoint");
        return;
    }
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_get(s->meta, name, &d);
    bool d_found = r == 0;
    if (r == 0)
        r = meta_checkpoint_get(s->meta, d.id, ckpt, &c);
    pthread_mutex_unlock(&s->meta_lock);
    if (r < 0) {
        control_version_error(b, r, "restore", r == -ENOENT && d_found ? ckpt : name);
        return;
    }
    connections = plugin_disk_connections(s, name);
    if (connections > 0 && !force) {
        control_error(b, EBUSY,
                      "disk '%s' has %u open connection%s: their data would change under them; "
                      "disconnect them, or restore with --force",
                      name, connections, connections == 1 ? "" : "s");
        return;
    }
    r = plugin_disk_restore(s, name, &c.root);
    if (r < 0) {
        control_version_error(b, r, "restore", name);
        return;
    }
    control_ok(b);
    json_builder_set_member_name(b, "checkpoint");
    meta_json_add_checkpoint(b, &c);
    control_add_ms(b, start);
}

static void control_checkpoint_delete(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    const char *ckpt = json_object_get_string_member_with_default(req, "checkpoint", NULL);
    struct meta_disk d;
    char *export_name;
    int r;

    if (!name || !ckpt) {
        control_error(b, EINVAL, "checkpoint-delete needs a disk name and a checkpoint");
        return;
    }
    export_name = g_strdup_printf("%s@%s", name, ckpt);
    r = plugin_disk_forget(s, export_name);
    g_free(export_name);
    if (r == -EBUSY) {
        control_error(b, EBUSY, "checkpoint '%s@%s' is exported to a client: disconnect first",
                      name, ckpt);
        return;
    }
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_get(s->meta, name, &d);
    bool d_found = r == 0;
    if (r == 0)
        r = meta_checkpoint_delete(s->meta, d.id, ckpt);
    pthread_mutex_unlock(&s->meta_lock);
    if (r < 0)
        control_version_error(b, r, "checkpoint-delete", r == -ENOENT && d_found ? ckpt : name);
    else
        control_ok(b);
}

static void control_add_u64(JsonBuilder *b, const char *name, uint64_t v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, (gint64)v);
}

/* {"op": "disk-commit", "name": NAME, "open_only": false}: uploads every acknowledged write of the
 * disk now and commits it, then waits until the metadata replica holds that commit.  For a client
 * that stops using a disk and wants it whole in the store at once (wispd at shut-down: a fresh host
 * restores from the store, and the cache's pending data does not travel). */
static void control_disk_commit(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    double start = control_now_ms();
    struct chunk_hash root;
    int r;

    if (!name || strchr(name, '@')) {
        control_error(b, EINVAL, "disk-commit needs a disk name");
        return;
    }
    /* "open_only": a disk this server has not opened has nothing waiting to go up; opening it
     * (and taking its lease) only to find that out would make a shut-down slow. */
    if (json_object_get_boolean_member_with_default(req, "open_only", FALSE)) {
        pthread_mutex_lock(&s->registry_lock);
        bool open = g_hash_table_contains(s->disks, name);
        pthread_mutex_unlock(&s->registry_lock);
        if (!open) {
            control_ok(b);
            json_builder_set_member_name(b, "committed");
            json_builder_add_boolean_value(b, FALSE);
            return;
        }
    }
    r = plugin_disk_commit_now(s, name, &root);
    if (r < 0) {
        control_version_error(b, r, "commit", name);
        return;
    }
    bool replicated = !s->replica || replica_sync(s->replica) == 0;
    control_ok(b);
    json_builder_set_member_name(b, "committed");
    json_builder_add_boolean_value(b, TRUE);
    json_builder_set_member_name(b, "replicated");
    json_builder_add_boolean_value(b, replicated);
    control_add_ms(b, start);
}

static void control_disk_stats(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    struct chunk_cache_stats cs;
    struct disk_stats ds = {0};
    struct store_stats ss;
    struct meta_disk md;
    int r;

    if (!name) {
        control_error(b, EINVAL, "disk-stats needs a name");
        return;
    }
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_get(s->meta, name, &md);
    pthread_mutex_unlock(&s->meta_lock);
    if (r < 0) {
        control_error(b, -r, r == -ENOENT ? "no disk named '%s'" : "disk '%s': error", name);
        return;
    }
    bool open = plugin_disk_stats(s, name, &ds) == 0;
    chunk_cache_get_stats(s->cache, &cs);
    store_get_stats(s->store, &ss);
    control_ok(b);
    json_builder_set_member_name(b, "disk");
    meta_json_add_disk(b, &md);
    json_builder_set_member_name(b, "open");
    json_builder_add_boolean_value(b, open);
    json_builder_set_member_name(b, "connections");
    json_builder_add_int_value(b, plugin_disk_connections(s, name));
    json_builder_set_member_name(b, "stats");
    json_builder_begin_object(b);
    control_add_u64(b, "reads", ds.reads);
    control_add_u64(b, "read_bytes", ds.read_bytes);
    control_add_u64(b, "writes", ds.writes);
    control_add_u64(b, "write_bytes", ds.write_bytes);
    control_add_u64(b, "zeroes", ds.zeroes);
    control_add_u64(b, "flushes", ds.flushes);
    control_add_u64(b, "uploads", ds.uploads);
    control_add_u64(b, "upload_bytes", ds.upload_bytes);
    control_add_u64(b, "upload_rounds", ds.rounds);
    control_add_u64(b, "upload_failures", ds.upload_failures);
    control_add_u64(b, "uploads_ahead", ds.uploads_ahead);
    control_add_u64(b, "copy_bytes", ds.copy_bytes);
    control_add_u64(b, "log_ships", ds.log_ships);
    control_add_u64(b, "log_ship_bytes", ds.log_ship_bytes);
    control_add_u64(b, "dirty_bytes", ds.dirty_bytes);
    control_add_u64(b, "pending_bytes", ds.pending_bytes);
    control_add_u64(b, "chunks", ds.chunks);
    control_add_u64(b, "flush_gen", ds.flush_gen);
    control_add_u64(b, "committed_gen", ds.committed_gen);
    json_builder_end_object(b);
    /* The cache and store are shared by every disk of this server. */
    json_builder_set_member_name(b, "cache");
    json_builder_begin_object(b);
    control_add_u64(b, "hits", cs.hits);
    control_add_u64(b, "misses", cs.misses);
    control_add_u64(b, "fetches", cs.fetches);
    control_add_u64(b, "fetch_bytes", cs.fetch_bytes);
    control_add_u64(b, "corrupt", cs.corrupt);
    control_add_u64(b, "refreshes", cs.refreshes);
    control_add_u64(b, "copy_bytes", cs.copy_bytes);
    control_add_u64(b, "evictions", cs.evictions);
    control_add_u64(b, "clean_bytes", cs.clean_bytes);
    control_add_u64(b, "dirty_bytes", cs.dirty_bytes);
    control_add_u64(b, "max_bytes", cs.max_bytes);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "store");
    json_builder_begin_object(b);
    control_add_u64(b, "requests", ss.requests);
    control_add_u64(b, "retries", ss.retries);
    control_add_u64(b, "failures", ss.failures);
    control_add_u64(b, "bytes_sent", ss.bytes_sent);
    control_add_u64(b, "bytes_received", ss.bytes_received);
    json_builder_end_object(b);
}

/* {"op": "gc", "dry_run": false, "grace": "1h" or seconds, "force": false}.  The grace defaults
 * to this server's gc-grace; a shorter one is refused without force, because this server's
 * uploads are committed within gc-grace of their start, not within the shorter one. */
static void control_gc(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    bool dry_run = json_object_get_boolean_member_with_default(req, "dry_run", FALSE);
    bool force = json_object_get_boolean_member_with_default(req, "force", FALSE);
    JsonNode *g = json_object_get_member(req, "grace");
    uint64_t grace = s->config->gc_grace;
    struct chunk_gc_report report;
    char text[32], mine[32];
    int r;

    if (g && JSON_NODE_HOLDS_VALUE(g) && json_node_get_value_type(g) == G_TYPE_STRING) {
        if (chunk_gc_parse_duration(json_node_get_string(g), &grace) < 0) {
            control_error(b, EINVAL,
                          "grace '%s': expected a duration such as 3600, 90s, 30m, 1h "
                          "or 2d",
                          json_node_get_string(g));
            return;
        }
    } else if (g && JSON_NODE_HOLDS_VALUE(g) && json_node_get_value_type(g) == G_TYPE_INT64) {
        gint64 v = json_node_get_int(g);
        if (v < 0 || (uint64_t)v > CHUNK_GC_DURATION_MAX) {
            control_error(b, EINVAL, "grace %lld: out of range", (long long)v);
            return;
        }
        grace = (uint64_t)v;
    } else if (g && !JSON_NODE_HOLDS_NULL(g)) {
        control_error(b, EINVAL, "grace: expected a duration string or a number of seconds");
        return;
    }
    chunk_gc_format_duration(grace, text, sizeof text);
    chunk_gc_format_duration(s->config->gc_grace, mine, sizeof mine);
    if (grace < s->config->gc_grace && !force && !dry_run) {
        control_error(b, EINVAL,
                      "grace %s is shorter than this server's gc-grace=%s, which its uploads "
                      "rely on: a chunk uploaded but not yet committed could be deleted; pass "
                      "--force to collect anyway (safe only while nothing writes)",
                      text, mine);
        return;
    }
    r = plugin_gc_run(s, grace, dry_run, &report);
    if (r == -EBUSY) {
        control_error(b, EBUSY, "a garbage collection is running already: try again later");
        return;
    }
    if (r < 0)
        control_error(b, -r, "garbage collection failed: %s (the server log says more)",
                      strerror(-r));
    else
        control_ok(b);
    json_builder_set_member_name(b, "gc");
    meta_json_add_gc_report(b, &report);
}

struct control_op {
    const char *name;
    void (*run)(struct plugin_state *s, JsonObject *req, JsonBuilder *b);
};

/* {"op": "disk-lease", "name": NAME, "steal": false}: who holds the disk's writer lease; with
 * steal, this server takes it over first (refused while the holder renews it). */
static void control_disk_lease(struct plugin_state *s, JsonObject *req, JsonBuilder *b)
{
    const char *name = json_object_get_string_member_with_default(req, "name", NULL);
    bool steal = json_object_get_boolean_member_with_default(req, "steal", FALSE);
    struct lease_info info;
    bool ours;
    int r;

    if (!name) {
        control_error(b, EINVAL, "disk-lease needs a disk name");
        return;
    }
    if (s->config->lease_ttl <= 0) {
        control_error(b, ENOTSUP, "this server runs without leases (lease-ttl=0)");
        return;
    }
    r = plugin_disk_lease(s, name, steal, &info, &ours);
    if (r == -EBUSY && lease_inspect(s->store, name, &info) == 0 && info.found) {
        control_error(b, EBUSY,
                      "disk '%s' is held by %s (generation %llu, renewed %.0f s ago, ttl %.0f "
                      "s)%s",
                      name, info.holder, (unsigned long long)info.generation, info.age, info.ttl,
                      info.age > info.ttl ? ""
                                          : ": it is alive; it can be taken over only once "
                                            "its lease expires");
        return;
    }
    if (r < 0) {
        control_version_error(b, r, steal ? "take over" : "look up the lease of", name);
        return;
    }
    control_ok(b);
    json_builder_set_member_name(b, "lease");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "disk");
    json_builder_add_string_value(b, name);
    json_builder_set_member_name(b, "held");
    json_builder_add_boolean_value(b, info.found && !info.released);
    json_builder_set_member_name(b, "ours");
    json_builder_add_boolean_value(b, ours);
    if (info.found) {
        json_builder_set_member_name(b, "generation");
        json_builder_add_int_value(b, (gint64)info.generation);
        json_builder_set_member_name(b, "holder");
        json_builder_add_string_value(b, info.holder);
        json_builder_set_member_name(b, "age");
        json_builder_add_double_value(b, info.age);
        json_builder_set_member_name(b, "ttl");
        json_builder_add_double_value(b, info.ttl);
        json_builder_set_member_name(b, "expired");
        json_builder_add_boolean_value(b, info.age > info.ttl);
    }
    json_builder_end_object(b);
}

static const struct control_op control_ops[] = {
    {"disk-create", control_disk_create},
    {"disk-list", control_disk_list},
    {"disk-delete", control_disk_delete},
    {"disk-stats", control_disk_stats},
    {"disk-commit", control_disk_commit},
    {"disk-clone", control_disk_clone},
    {"disk-checkpoint", control_disk_checkpoint},
    {"disk-checkpoints", control_disk_checkpoints},
    {"disk-restore", control_disk_restore},
    {"checkpoint-delete", control_checkpoint_delete},
    {"gc", control_gc},
    {"disk-lease", control_disk_lease},
};

/* Answers one request line. */
static char *control_answer(struct plugin_state *s, const char *line)
{
    JsonParser *parser = json_parser_new();
    JsonBuilder *b = json_builder_new();
    GError *error = NULL;
    JsonNode *root;
    char *out;

    json_builder_begin_object(b);
    /* Names are C strings: an escaped NUL would silently cut one short. */
    if (strstr(line, "\\u0000")) {
        control_error(b, EINVAL, "a request may not hold a NUL character (\\u0000)");
    } else if (!json_parser_load_from_data(parser, line, -1, &error)) {
        control_error(b, EINVAL, "not JSON: %s", error->message);
        g_error_free(error);
    } else if (!(root = json_parser_get_root(parser)) || !JSON_NODE_HOLDS_OBJECT(root)) {
        control_error(b, EINVAL, "a request is a JSON object");
    } else {
        JsonObject *req = json_node_get_object(root);
        const char *op = json_object_get_string_member_with_default(req, "op", "");
        size_t i;
        for (i = 0; i < G_N_ELEMENTS(control_ops); i++) {
            if (strcmp(op, control_ops[i].name) == 0) {
                control_ops[i].run(s, req, b);
                /* durability=remote: what the op committed is replicated before the answer. */
                if (s->replica && s->config->durability == DISK_DURABILITY_REMOTE &&
                    replica_sync(s->replica) < 0) {
                    json_builder_set_member_name(b, "replicated");
                    json_builder_add_boolean_value(b, FALSE);
                }
                break;
            }
        }
        if (i == G_N_ELEMENTS(control_ops))
            control_error(b, EINVAL, "unknown op '%s'", op);
    }
    json_builder_end_object(b);
    JsonNode *answer = json_builder_get_root(b);
    out = json_to_string(answer, FALSE);
    json_node_unref(answer);
    g_object_unref(b);
    g_object_unref(parser);
    return out;
}

static void control_serve(struct plugin_state *s, int fd)
{
    GString *buf = g_string_new(NULL);
    char chunk[4096];

    for (;;) {
        char *nl;
        while (!(nl = memchr(buf->str, '\n', buf->len))) {
            ssize_t n = read(fd, chunk, sizeof chunk);
            if (n <= 0 || buf->len + (size_t)n > CONTROL_LINE_MAX)
                goto out;
            g_string_append_len(buf, chunk, n);
        }
        *nl = '\0';
        char *answer = control_answer(s, buf->str);
        g_string_erase(buf, 0, (gssize)(nl - buf->str) + 1);
        size_t len = strlen(answer);
        answer[len] = '\0';
        bool ok = write(fd, answer, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
        g_free(answer);
        if (!ok)
            break;
    }
out:
    g_string_free(buf, TRUE);
}

static void *control_thread(void *opaque)
{
    struct plugin_state *s = opaque;

    while (!__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE)) {
        struct pollfd p = {.fd = s->control_fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int fd = accept4(s->control_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        /* A client that stalls must not wedge the socket for everyone. */
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        control_serve(s, fd);
        close(fd);
    }
    return NULL;
}

int control_start(struct plugin_state *s, const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    mode_t old_mask;

    if (strlen(path) >= sizeof addr.sun_path) {
        log_error("control", "control=%s: the path is too long for a unix socket", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    s->control_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->control_fd < 0) {
        log_error("control", "socket: %m");
        return -1;
    }
    unlink(path);           /* a socket left by a server that died */
    old_mask = umask(0177); /* the socket is created 0600 */
    int r = bind(s->control_fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old_mask);
    if (r < 0 || listen(s->control_fd, 16) < 0) {
        log_error("control", "control=%s: %m", path);
        close(s->control_fd);
        return -1;
    }
    control_path = g_strdup(path);
    if (pthread_create(&s->control_thread, NULL, control_thread, s) != 0) {
        log_error("control", "cannot start the control thread");
        return -1;
    }
    s->control_started = true;
    return 0;
}

void control_stop(struct plugin_state *s)
{
    if (!s->control_started)
        return;
    pthread_join(s->control_thread, NULL);
    close(s->control_fd);
    if (control_path)
        unlink(control_path);
    g_free(control_path);
    control_path = NULL;
    s->control_started = false;
}
