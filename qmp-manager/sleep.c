/* sleep.c: warm and cold sleep, and wake (see sleep.h). */
#include "sleep.h"
#include "sleep_internal.h"

#include "log.h"
#include "sprite_db.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLEEP_LOG       "sleep"
#define SLEEP_FD_OUT    "wisp-sleep"
#define SLEEP_FD_IN     "wisp-wake"
#define MIGRATE_POLL_US (2 * 1000)

char *sleep_ram_path(const char *dir)
{
    return g_build_filename(dir, "ram", NULL);
}

char *sleep_state_path(const char *dir)
{
    return g_build_filename(dir, "state", NULL);
}

char *sleep_manifest_path(const char *dir)
{
    return g_build_filename(dir, "manifest.json", NULL);
}

/* The layout of sleep manifest keys (sleep.h) lives here, built and parsed (GC) in one place. */
char *sleep_manifest_key(const char *sprite, unsigned seq)
{
    if (!sprite_name_valid(sprite))
        return NULL;
    return g_strdup_printf("vm/sprites/%s/manifest-%06u.json", sprite, seq);
}

char *sleep_manifest_key_incarnation(const char *sprite, const char *incarnation, unsigned seq)
{
    if (!sprite_name_valid(sprite) || !sprite_incarnation_valid(incarnation))
        return NULL;
    return g_strdup_printf("vm/sprites/%s/%s/manifest-%06u.json", sprite, incarnation, seq);
}

/* "manifest-SEQ.json" with SEQ all digits: true and *seq. */
static bool manifest_file_parse(const char *s, unsigned long *seq)
{
    char *end;

    if (!g_str_has_prefix(s, "manifest-"))
        return false;
    s += strlen("manifest-");
    if (!g_ascii_isdigit(*s))
        return false;
    errno = 0;
    *seq = strtoul(s, &end, 10);
    return errno == 0 && *seq <= UINT_MAX && strcmp(end, ".json") == 0;
}

bool sleep_manifest_key_parse(const char *key, char **sprite, char **incarnation,
                              unsigned long *seq)
{
    const char *prefix = "vm/sprites/";

    if (!key || !g_str_has_prefix(key, prefix))
        return false;
    g_auto(GStrv) parts = g_strsplit(key + strlen(prefix), "/", 0);
    guint n = g_strv_length(parts);
    if ((n != 2 && n != 3) || !sprite_name_valid(parts[0]) ||
        (n == 3 && !sprite_incarnation_valid(parts[1])) || !manifest_file_parse(parts[n - 1], seq))
        return false;
    *sprite = g_strdup(parts[0]);
    *incarnation = g_strdup(n == 3 ? parts[1] : "");
    return true;
}

static double secs_since(gint64 t0)
{
    return (double)(g_get_monotonic_time() - t0) / 1e6;
}

bool sleep_qmp_ok(qmp_client *c, int timeout_ms, GError **error, const char *what,
                  const char *command, const char *args)
{
    JsonNode *ret = args ? qmp_client_executef(c, timeout_ms, error, command, "%s", args)
                         : qmp_client_execute(c, command, NULL, timeout_ms, error);
    if (!ret) {
        g_prefix_error(error, "%s: %s: ", what, command);
        return false;
    }
    json_node_unref(ret);
    return true;
}

bool sleep_warm(struct vm *vm, int timeout_ms, GError **error)
{
    return sleep_qmp_ok(vm->qmp, timeout_ms, error, "warm sleep", "stop", NULL);
}

bool wake_warm(struct vm *vm, int timeout_ms, GError **error)
{
    return sleep_qmp_ok(vm->qmp, timeout_ms, error, "warm wake", "cont", NULL);
}

/* Polls query-migrate until completed (true) or failed/cancelled/timeout (false). */
bool sleep_migrate_wait(qmp_client *c, int timeout_ms, const char *what, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    for (;;) {
        JsonNode *ret = qmp_client_execute(c, "query-migrate", NULL, timeout_ms, error);
        if (!ret) {
            g_prefix_error(error, "%s: query-migrate: ", what);
            return false;
        }
        JsonObject *o = JSON_NODE_HOLDS_OBJECT(ret) ? json_node_get_object(ret) : NULL;
        g_autofree char *status =
            g_strdup(o ? json_object_get_string_member_with_default(o, "status", "") : "");
        g_autofree char *desc =
            g_strdup(o ? json_object_get_string_member_with_default(o, "error-desc", "") : "");
        json_node_unref(ret);
        if (strcmp(status, "completed") == 0)
            return true;
        if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "%s: migration %s%s%s", what, status,
                        *desc ? ": " : "", desc);
            return false;
        }
        if (g_get_monotonic_time() > deadline) {
            g_set_error(error, VM_ERROR, VM_ERROR_TIMEOUT, "%s: migration still %s after %d ms",
                        what, *status ? status : "(no status)", timeout_ms);
            return false;
        }
        g_usleep(MIGRATE_POLL_US);
    }
}

bool sleep_set_ignore_shared(qmp_client *c, int timeout_ms, const char *what, GError **error)
{
    return sleep_qmp_ok(
        c, timeout_ms, error, what, "migrate-set-capabilities",
        "{\"capabilities\": [{\"capability\": \"x-ignore-shared\", \"state\": true}]}");
}

bool sleep_guest_sync(agent_client *agent, int timeout_ms, GError **error)
{
    const char *argv[] = {"/bin/sync", NULL};
    g_autofree char *errout = NULL;
    int status = agent_exec_run(agent, argv, NULL, 0, NULL, NULL, &errout, timeout_ms, error);

    if (status < 0) {
        g_prefix_error(error, "cold sleep: guest sync: ");
        return false;
    }
    if (status != 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "cold sleep: guest sync exited %d: %s", status,
                    errout ? errout : "");
        return false;
    }
    return true;
}

static void json_add_chunks(JsonBuilder *b, const char *name, const struct chunk_list *cl)
{
    json_builder_set_member_name(b, name);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "bytes");
    json_builder_add_int_value(b, (gint64)cl->file_bytes);
    json_builder_set_member_name(b, "chunk_bytes");
    json_builder_add_int_value(b, cl->chunk_bytes);
    json_builder_set_member_name(b, "chunks");
    json_builder_begin_array(b);
    for (guint i = 0; i < cl->hashes->len; i++)
        json_builder_add_string_value(b, g_ptr_array_index(cl->hashes, i));
    json_builder_end_array(b);
    json_builder_end_object(b);
}

char *sleep_manifest_build(const char *sprite, const char *key, unsigned mem_mib,
                           const struct chunk_list *ram, const struct chunk_list *state)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "format");
    json_builder_add_string_value(b, SLEEP_MANIFEST_FORMAT);
    json_builder_set_member_name(b, "sprite");
    json_builder_add_string_value(b, sprite);
    json_builder_set_member_name(b, "key");
    json_builder_add_string_value(b, key);
    json_builder_set_member_name(b, "mem_mib");
    json_builder_add_int_value(b, mem_mib);
    json_builder_set_member_name(b, "created_us");
    json_builder_add_int_value(b, g_get_real_time());
    json_add_chunks(b, "ram", ram);
    json_add_chunks(b, "state", state);
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    return json_generator_to_data(gen, NULL);
}

static bool parse_chunks(JsonObject *root, const char *name, struct chunk_list *cl, GError **error)
{
    JsonObject *o = json_object_get_object_member(root, name);
    JsonArray *a = o ? json_object_get_array_member(o, "chunks") : NULL;

    if (!o || !a) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "manifest: no %s.chunks", name);
        return false;
    }
    gint64 bytes = json_object_get_int_member_with_default(o, "bytes", -1);
    gint64 chunk = json_object_get_int_member_with_default(o, "chunk_bytes", 0);
    guint n = json_array_get_length(a);
    if (bytes < 0 || chunk <= 0 || chunk > (1 << 30) ||
        (guint64)n != ((guint64)bytes + (guint64)chunk - 1) / (guint64)chunk) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO,
                    "manifest: %s: %u chunks do not cover %" G_GINT64_FORMAT
                    " bytes in chunks of %" G_GINT64_FORMAT,
                    name, n, bytes, chunk);
        return false;
    }
    chunk_list_init(cl, (uint64_t)bytes, (uint32_t)chunk);
    for (guint i = 0; i < n; i++) {
        JsonNode *e = json_array_get_element(a, i);
        const char *h = JSON_NODE_HOLDS_VALUE(e) ? json_node_get_string(e) : NULL;
        /* A name that is not 64 hex digits could address any key: refuse it. */
        bool ok = h && (*h == '\0' || strlen(h) == 64);
        for (const char *p = h; ok && *p; p++)
            ok = g_ascii_isxdigit(*p) && !g_ascii_isupper(*p);
        if (!ok) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "manifest: %s chunk %u is not a hash", name,
                        i);
            chunk_list_clear(cl);
            return false;
        }
        g_ptr_array_add(cl->hashes, g_strdup(h));
    }
    return true;
}

bool sleep_manifest_parse(const char *text, size_t len, struct chunk_list *ram,
                          struct chunk_list *state, unsigned *mem_mib, GError **error)
{
    g_autoptr(JsonParser) p = json_parser_new();
    JsonObject *root;

    if (!json_parser_load_from_data(p, text, (gssize)len, error)) {
        g_prefix_error(error, "manifest: ");
        return false;
    }
    root = JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))
               ? json_node_get_object(json_parser_get_root(p))
               : NULL;
    if (!root || g_strcmp0(json_object_get_string_member_with_default(root, "format", ""),
                           SLEEP_MANIFEST_FORMAT) != 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "manifest: not a %s object",
                    SLEEP_MANIFEST_FORMAT);
        return false;
    }
    if (mem_mib)
        *mem_mib = (unsigned)json_object_get_int_member_with_default(root, "mem_mib", 0);
    if (!parse_chunks(root, "ram", ram, error))
        return false;
    if (!parse_chunks(root, "state", state, error)) {
        chunk_list_clear(ram);
        return false;
    }
    return true;
}

bool sleep_known_from_manifest(struct store *st, const char *key, GHashTable *set, GError **error)
{
    struct chunk_list ram = {0}, state = {0};
    void *text = NULL;
    size_t len = 0;
    int r = store_get(st, key, &text, &len);

    if (r < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "GET %s: %s", key, store_last_error());
        return false;
    }
    bool ok = sleep_manifest_parse(text, len, &ram, &state, NULL, error);
    free(text);
    if (!ok)
        return false;
    chunk_list_add_to_set(&ram, set);
    chunk_list_add_to_set(&state, set);
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
    return true;
}

static bool write_file_durably(const char *path, const char *data, size_t len, GError **error)
{
    g_autofree char *tmp = g_strdup_printf("%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t done = 0;

    if (fd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "create %s: %s", tmp, g_strerror(errno));
        return false;
    }
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "write %s: %s", tmp,
                        w < 0 ? g_strerror(errno) : "short write");
            close(fd);
            unlink(tmp);
            return false;
        }
        done += (size_t)w;
    }
    if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "write %s: %s", path, g_strerror(errno));
        unlink(tmp);
        return false;
    }
    return true;
}

bool sleep_store_local_copy(const struct cold_sleep_opts *o, struct cold_sleep_result *out,
                            GError **error)
{
    g_autofree char *ram_path = sleep_ram_path(o->dir);
    g_autofree char *state_path = sleep_state_path(o->dir);
    g_autofree char *manifest_path = sleep_manifest_path(o->dir);
    g_autofree char *manifest = NULL;
    struct chunk_list ram = {0}, state = {0};
    gint64 t = g_get_monotonic_time();
    bool ok = false;

    /* GC (vm_gc.h, (a); the numbers in ram_chunks.h): every chunk the manifest names must be
     * younger than GC's grace when the manifest lands.  A pass refreshes what is older than
     * RAM_CHUNK_REFRESH_AGE_S at its start (store clock); its manifest is PUT only while the
     * pass is fresh (RAM_CHUNK_PASS_MAX_S since it began), else the pass is done again, which
     * mostly HEADs and refreshes. */
    for (int pass_no = 1;; pass_no++) {
        struct chunk_pass pass;
        double elapsed;

        chunk_list_clear(&ram);
        chunk_list_clear(&state);
        g_clear_pointer(&manifest, g_free);
        if (!chunk_pass_begin(o->store, &pass, error) ||
            !chunk_list_store_in_pass(o->store, &pass, ram_path, o->chunk_bytes, o->known, &ram,
                                      pass_no == 1 ? &out->ram : NULL, error) ||
            !chunk_list_store_in_pass(o->store, &pass, state_path, o->chunk_bytes, o->known, &state,
                                      pass_no == 1 ? &out->state : NULL, error)) {
            g_prefix_error(error, "cold sleep: ");
            goto done;
        }
        manifest = sleep_manifest_build(o->sprite, o->manifest_key, o->mem_mib, &ram, &state);
        if (!write_file_durably(manifest_path, manifest, strlen(manifest), error))
            goto done;
        if (chunk_pass_fresh(&pass, &elapsed)) {
            /* The store's copy is the durable one and is written last: its presence means
             * complete. */
            int r = store_put(o->store, o->manifest_key, manifest, strlen(manifest));
            if (r < 0) {
                g_set_error(error, VM_ERROR, VM_ERROR_IO, "cold sleep: PUT %s: %s", o->manifest_key,
                            store_last_error());
                unlink(manifest_path);
                goto done;
            }
            break;
        }
        unlink(manifest_path);
        if (pass_no == RAM_CHUNK_PASSES_MAX) {
            g_set_error(error, VM_ERROR, VM_ERROR_TIMEOUT,
                        "cold sleep: storing the chunks took longer than %d s %d times",
                        RAM_CHUNK_PASS_MAX_S, RAM_CHUNK_PASSES_MAX);
            goto done;
        }
        log_warn(SLEEP_LOG, "sprite %s: storing the chunks took %.0f s: again, for GC's grace",
                 o->sprite, elapsed);
    }
    out->ram_bytes = ram.file_bytes;
    out->state_bytes = state.file_bytes;
    out->store_s = secs_since(t);
    ok = true;
done:
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
    return ok;
}

bool sleep_cold(struct vm *vm, const struct cold_sleep_opts *o, struct cold_sleep_result *out,
                GError **error)
{
    g_autofree char *state_path = sleep_state_path(o->dir);
    g_autofree char *manifest_path = sleep_manifest_path(o->dir);
    g_autofree char *bw = NULL;
    gint64 t0 = g_get_monotonic_time(), t;
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    int fd;

    memset(out, 0, sizeof *out);
    if (!vm->pid || !vm->qmp) {
        g_set_error(error, VM_ERROR, VM_ERROR_EXITED, "cold sleep: QEMU is not running");
        return false;
    }
    /* The local copy is about to change: it describes no manifest until the new one is written. */
    if (unlink(manifest_path) < 0 && errno != ENOENT) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "unlink %s: %s", manifest_path,
                    g_strerror(errno));
        return false;
    }
    t = g_get_monotonic_time();
    if (o->agent && !sleep_guest_sync(o->agent, timeout, error))
        return false;
    out->sync_s = secs_since(t);

    t = g_get_monotonic_time();
    if (!sleep_qmp_ok(vm->qmp, timeout, error, "cold sleep", "stop", NULL))
        return false;
    out->stop_s = secs_since(t);

    t = g_get_monotonic_time();
    bw = g_strdup_printf("{\"max-bandwidth\": %" G_GINT64_FORMAT "}", SLEEP_MAX_BANDWIDTH_BS);
    if (!sleep_set_ignore_shared(vm->qmp, timeout, "cold sleep", error) ||
        !sleep_qmp_ok(vm->qmp, timeout, error, "cold sleep", "migrate-set-parameters", bw))
        goto resume;
    fd = open(state_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "cold sleep: create %s: %s", state_path,
                    g_strerror(errno));
        goto resume;
    }
    bool sent = qmp_client_send_fd(vm->qmp, fd, SLEEP_FD_OUT, timeout, error);
    close(fd); /* QEMU has its own copy now */
    if (!sent) {
        g_prefix_error(error, "cold sleep: getfd: ");
        goto resume;
    }
    if (!sleep_qmp_ok(vm->qmp, timeout, error, "cold sleep", "migrate",
                      "{\"uri\": \"fd:" SLEEP_FD_OUT "\"}") ||
        !sleep_migrate_wait(vm->qmp, timeout, "cold sleep", error))
        goto resume;
    out->migrate_s = secs_since(t);

    t = g_get_monotonic_time();
    if (!vm_quit(vm, timeout, error)) {
        g_prefix_error(error, "cold sleep: ");
        return false;
    }
    out->quit_s = secs_since(t);

    if (!sleep_store_local_copy(o, out, error))
        return false;
    out->total_s = secs_since(t0);
    log_info(SLEEP_LOG,
             "sprite %s asleep as %s: %.0f ms (sync %.0f, stop %.0f, migrate %.0f, quit %.0f,"
             " store %.0f); %" G_GUINT64_FORMAT " bytes uploaded",
             o->sprite, o->manifest_key, out->total_s * 1e3, out->sync_s * 1e3, out->stop_s * 1e3,
             out->migrate_s * 1e3, out->quit_s * 1e3, out->store_s * 1e3,
             out->ram.uploaded_bytes + out->state.uploaded_bytes);
    return true;

resume:
    /* The migration did not happen: the sprite goes on running rather than stay stopped. */
    {
        GError *ignored = NULL;
        if (!sleep_qmp_ok(vm->qmp, timeout, &ignored, "cold sleep (undo)", "cont", NULL)) {
            log_warn(SLEEP_LOG, "%s", ignored->message);
            g_error_free(ignored);
        }
    }
    return false;
}

/* Whether DIR holds the local copy of exactly this manifest. */
static bool local_copy_matches(const char *dir, const char *manifest_key, struct chunk_list *ram,
                               struct chunk_list *state)
{
    g_autofree char *mpath = sleep_manifest_path(dir), *text = NULL;
    g_autofree char *ram_path = sleep_ram_path(dir), *state_path = sleep_state_path(dir);
    g_autoptr(JsonParser) p = json_parser_new();
    struct stat rs, ss;
    gsize len = 0;

    if (!g_file_get_contents(mpath, &text, &len, NULL) ||
        !json_parser_load_from_data(p, text, (gssize)len, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        return false;
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    if (g_strcmp0(json_object_get_string_member_with_default(root, "key", ""), manifest_key) != 0)
        return false;
    if (!sleep_manifest_parse(text, len, ram, state, NULL, NULL))
        return false;
    if (stat(ram_path, &rs) == 0 && stat(state_path, &ss) == 0 &&
        (uint64_t)rs.st_size == ram->file_bytes && (uint64_t)ss.st_size == state->file_bytes)
        return true;
    chunk_list_clear(ram);
    chunk_list_clear(state);
    return false;
}

struct vm *wake_cold(const struct wake_opts *o, GMainContext *ctx, struct wake_result *out,
                     GError **error)
{
    g_autofree char *ram_path = sleep_ram_path(o->dir);
    g_autofree char *state_path = sleep_state_path(o->dir);
    g_autofree char *manifest_path = sleep_manifest_path(o->dir);
    struct chunk_list ram = {0}, state = {0};
    gint64 t0 = g_get_monotonic_time(), t;
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    struct vm *vm = NULL;
    unsigned mem_mib = 0;
    int fd;

    memset(out, 0, sizeof *out);
    if (g_mkdir_with_parents(o->dir, 0700) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "wake: mkdir %s: %s", o->dir, g_strerror(errno));
        return NULL;
    }
    t = g_get_monotonic_time();
    if (!local_copy_matches(o->dir, o->manifest_key, &ram, &state)) {
        void *text = NULL;
        size_t len = 0;
        int r = store_get(o->store, o->manifest_key, &text, &len);
        if (r < 0) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "wake: GET %s: %s", o->manifest_key,
                        store_last_error());
            return NULL;
        }
        bool parsed = sleep_manifest_parse(text, len, &ram, &state, &mem_mib, error);
        free(text);
        if (!parsed)
            return NULL;
        uint64_t ram_fetched = 0, state_fetched = 0;
        if (!chunk_list_restore(o->store, &ram, ram_path, &ram_fetched, error) ||
            !chunk_list_restore(o->store, &state, state_path, &state_fetched, error)) {
            g_prefix_error(error, "wake: ");
            goto fail;
        }
        out->from_store = true;
        out->fetched_bytes = ram_fetched + state_fetched;
    }
    out->fetch_s = secs_since(t);
    if (ram.file_bytes != (uint64_t)(o->config->mem_mib ? o->config->mem_mib : 256) << 20) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "wake: the RAM image has %" G_GUINT64_FORMAT " bytes, the config %u MiB",
                    ram.file_bytes, o->config->mem_mib);
        goto fail;
    }
    /* The running sprite writes DIR/ram: from here DIR is no longer that manifest's copy. */
    if (unlink(manifest_path) < 0 && errno != ENOENT) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "wake: unlink %s: %s", manifest_path,
                    g_strerror(errno));
        goto fail;
    }

    t = g_get_monotonic_time();
    struct vm_config cfg = *o->config;
    cfg.mem_path = ram_path;
    cfg.mem_share = true;
    cfg.paused = true;
    cfg.incoming_defer = true;
    vm = vm_launch(&cfg, ctx, timeout, error);
    if (!vm) {
        g_prefix_error(error, "wake: ");
        goto fail;
    }
    out->launch_s = secs_since(t);

    t = g_get_monotonic_time();
    if (!sleep_set_ignore_shared(vm->qmp, timeout, "wake", error))
        goto fail;
    fd = open(state_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "wake: open %s: %s", state_path,
                    g_strerror(errno));
        goto fail;
    }
    bool sent = qmp_client_send_fd(vm->qmp, fd, SLEEP_FD_IN, timeout, error);
    close(fd);
    if (!sent) {
        g_prefix_error(error, "wake: getfd: ");
        goto fail;
    }
    if (!sleep_qmp_ok(vm->qmp, timeout, error, "wake", "migrate-incoming",
                      "{\"uri\": \"fd:" SLEEP_FD_IN "\"}") ||
        !sleep_migrate_wait(vm->qmp, timeout, "wake", error))
        goto fail;
    out->migrate_s = secs_since(t);

    t = g_get_monotonic_time();
    if (!sleep_qmp_ok(vm->qmp, timeout, error, "wake", "cont", NULL))
        goto fail;
    out->cont_s = secs_since(t);
    out->total_s = secs_since(t0);
    log_info(SLEEP_LOG, "woke from %s (%s): %.0f ms (fetch %.0f, launch %.0f, migrate %.0f)",
             o->manifest_key, out->from_store ? "store" : "local copy", out->total_s * 1e3,
             out->fetch_s * 1e3, out->launch_s * 1e3, out->migrate_s * 1e3);
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
    return vm;

fail:
    vm_free(vm);
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
    return NULL;
}
