/* template.c: boot once, snapshot with RAM in a file (see template.h). */
#include "template.h"

#include "agent_client.h"
#include "log.h"
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define TPL_LOG             "template"
#define TPL_MANIFEST_FORMAT 1

char *vm_template_image_key(const char *image_dir, GError **error)
{
    g_autofree char *path = g_build_filename(image_dir, "image.json", NULL);
    g_autoptr(JsonParser) parser = json_parser_new();
    JsonObject *o;
    const char *hash;

    if (!json_parser_load_from_file(parser, path, error)) {
        g_prefix_error(error, "%s: ", path);
        return NULL;
    }
    o = JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))
            ? json_node_get_object(json_parser_get_root(parser))
            : NULL;
    hash = o ? json_object_get_string_member_with_default(o, "input_hash", NULL) : NULL;
    if (!hash || !*hash || strchr(hash, '/') || hash[0] == '.') {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "%s: no usable input_hash", path);
        return NULL;
    }
    return g_strdup(hash);
}

/* Polls query-migrate until the migration completes (true) or fails (false, with QEMU's
 * reason).  Shared with clone.c through template.h. */
bool vm_template_migration_wait(struct vm *vm, int timeout_ms, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    for (;;) {
        JsonNode *ret = qmp_client_execute(vm->qmp, "query-migrate", NULL, 5000, error);
        g_autofree char *status = NULL, *why = NULL;
        if (!ret)
            return false;
        if (JSON_NODE_HOLDS_OBJECT(ret)) {
            JsonObject *o = json_node_get_object(ret);
            status = g_strdup(json_object_get_string_member_with_default(o, "status", ""));
            why = g_strdup(json_object_get_string_member_with_default(o, "error-desc", ""));
        }
        json_node_unref(ret);
        if (g_strcmp0(status, "completed") == 0)
            return true;
        if (g_strcmp0(status, "failed") == 0 || g_strcmp0(status, "cancelled") == 0) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "migration %s%s%s", status,
                        why && *why ? ": " : "", why ? why : "");
            return false;
        }
        if (g_get_monotonic_time() > deadline) {
            g_set_error(error, VM_ERROR, VM_ERROR_TIMEOUT, "migration still %s after %d ms",
                        status && *status ? status : "not started", timeout_ms);
            return false;
        }
        g_usleep(2000);
    }
}

bool vm_template_set_ignore_shared(struct vm *vm, GError **error)
{
    JsonNode *ret = qmp_client_executef(
        vm->qmp, 5000, error, "migrate-set-capabilities",
        "{\"capabilities\": [{\"capability\": \"x-ignore-shared\", \"state\": true}]}");
    if (!ret) {
        g_prefix_error(error, "migrate-set-capabilities x-ignore-shared: ");
        return false;
    }
    json_node_unref(ret);
    return true;
}

/* stop, then the device state to a file passed with getfd (FINDINGS.md: fd migration works
 * under -sandbox spawn=deny, unlike exec:), the RAM left in its shared file. */
static bool vm_template_snapshot(struct vm *vm, const char *state_path, GError **error)
{
    JsonNode *ret;
    bool sent;
    int fd;

    if (!vm_template_set_ignore_shared(vm, error))
        return false;
    /* The default cap is 32 MiB/s; the state is small, but nothing should throttle it. */
    ret = qmp_client_executef(vm->qmp, 5000, error, "migrate-set-parameters",
                              "{\"max-bandwidth\": %" G_GINT64_FORMAT "}", (gint64)100 << 30);
    if (!ret) {
        g_prefix_error(error, "migrate-set-parameters: ");
        return false;
    }
    json_node_unref(ret);
    ret = qmp_client_execute(vm->qmp, "stop", NULL, 5000, error);
    if (!ret) {
        g_prefix_error(error, "stop: ");
        return false;
    }
    json_node_unref(ret);
    fd = open(state_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "open %s: %s", state_path, g_strerror(errno));
        return false;
    }
    sent = qmp_client_send_fd(vm->qmp, fd, "wisp-template", 5000, error);
    close(fd); /* QEMU holds its own copy now */
    if (!sent) {
        g_prefix_error(error, "getfd: ");
        return false;
    }
    ret = qmp_client_executef(vm->qmp, 5000, error, "migrate", "{\"uri\": \"fd:wisp-template\"}");
    if (!ret) {
        g_prefix_error(error, "migrate: ");
        return false;
    }
    json_node_unref(ret);
    return vm_template_migration_wait(vm, 60000, error);
}

static struct vm_template *vm_template_new(const struct vm_template_config *cfg, const char *dir)
{
    struct vm_template *t = g_new0(struct vm_template, 1);

    t->dir = g_strdup(dir);
    t->key = g_strdup(cfg->key);
    t->kernel = g_strdup(cfg->kernel);
    t->initrd = g_strdup(cfg->initrd);
    t->qemu = g_strdup(cfg->qemu);
    t->ram_path = g_build_filename(dir, "ram", NULL);
    t->state_path = g_build_filename(dir, "state", NULL);
    t->mem_mib = cfg->mem_mib ? cfg->mem_mib : 256;
    t->placeholder_bytes = cfg->placeholder_bytes ? cfg->placeholder_bytes : (uint64_t)1 << 30;
    t->sandbox = cfg->sandbox;
    t->run_as = g_strdup(cfg->run_as);
    return t;
}

void vm_template_free(struct vm_template *t)
{
    if (!t)
        return;
    g_free(t->dir);
    g_free(t->key);
    g_free(t->kernel);
    g_free(t->initrd);
    g_free(t->qemu);
    g_free(t->run_as);
    g_free(t->ram_path);
    g_free(t->state_path);
    g_free(t);
}

/* The manifest matches when it names the same key, memory, accelerator and placeholder, and
 * both files are there.  Anything else (missing, unreadable, other values) means rebuild. */
static bool vm_template_load(struct vm_template *t, enum vm_accel want_accel)
{
    g_autofree char *path = g_build_filename(t->dir, "manifest.json", NULL);
    g_autoptr(JsonParser) parser = json_parser_new();
    JsonObject *o;

    if (!json_parser_load_from_file(parser, path, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
        return false;
    o = json_node_get_object(json_parser_get_root(parser));
    if (json_object_get_int_member_with_default(o, "format", 0) != TPL_MANIFEST_FORMAT ||
        g_strcmp0(json_object_get_string_member_with_default(o, "key", ""), t->key) != 0 ||
        json_object_get_int_member_with_default(o, "mem_mib", 0) != t->mem_mib ||
        json_object_get_int_member_with_default(o, "placeholder_bytes", 0) !=
            (gint64)t->placeholder_bytes)
        return false;
    const char *accel = json_object_get_string_member_with_default(o, "accel", "");
    if (g_strcmp0(accel, vm_accel_to_string(VM_ACCEL_KVM)) == 0)
        t->accel = VM_ACCEL_KVM;
    else if (g_strcmp0(accel, vm_accel_to_string(VM_ACCEL_TCG)) == 0)
        t->accel = VM_ACCEL_TCG;
    else
        return false;
    /* A clone must run on the accelerator its template's state came from. */
    if (want_accel != VM_ACCEL_AUTO && want_accel != t->accel)
        return false;
    if (access(t->ram_path, R_OK) != 0 || access(t->state_path, R_OK) != 0)
        return false;
    t->boot_ms = json_object_get_double_member_with_default(o, "boot_ms", 0);
    t->snapshot_ms = json_object_get_double_member_with_default(o, "snapshot_ms", 0);
    return true;
}

static bool vm_template_write_manifest(const struct vm_template *t, const char *dir,
                                       const char *qemu_version, GError **error)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autofree char *path = g_build_filename(dir, "manifest.json", NULL);
    g_autofree char *text = NULL;
    g_autoptr(JsonNode) root = NULL;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "format");
    json_builder_add_int_value(b, TPL_MANIFEST_FORMAT);
    json_builder_set_member_name(b, "key");
    json_builder_add_string_value(b, t->key);
    json_builder_set_member_name(b, "mem_mib");
    json_builder_add_int_value(b, t->mem_mib);
    json_builder_set_member_name(b, "accel");
    json_builder_add_string_value(b, vm_accel_to_string(t->accel));
    json_builder_set_member_name(b, "placeholder_bytes");
    json_builder_add_int_value(b, (gint64)t->placeholder_bytes);
    json_builder_set_member_name(b, "qemu_version");
    json_builder_add_string_value(b, qemu_version ? qemu_version : "");
    json_builder_set_member_name(b, "boot_ms");
    json_builder_add_double_value(b, t->boot_ms);
    json_builder_set_member_name(b, "snapshot_ms");
    json_builder_add_double_value(b, t->snapshot_ms);
    json_builder_set_member_name(b, "created_unix");
    json_builder_add_int_value(b, g_get_real_time() / G_USEC_PER_SEC);
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    json_generator_set_pretty(gen, TRUE);
    text = json_generator_to_data(gen, NULL);
    if (!g_file_set_contents(path, text, -1, error)) {
        g_prefix_error(error, "template manifest: ");
        return false;
    }
    return true;
}

/* Boots in tmp_dir, waits for READY, snapshots into tmp_dir/state.  The VM is gone after. */
static bool vm_template_build(struct vm_template *t, const struct vm_template_config *cfg,
                              const char *tmp_dir, GError **error)
{
    g_autofree char *run_dir = g_build_filename(tmp_dir, "run", NULL);
    g_autofree char *ram = g_build_filename(tmp_dir, "ram", NULL);
    g_autofree char *state = g_build_filename(tmp_dir, "state", NULL);
    g_autofree char *qemu_version = NULL;
    struct vm_config vc = {
        .qemu = cfg->qemu,
        .kernel = t->kernel,
        .initrd = t->initrd,
        .mem_mib = t->mem_mib,
        .accel = cfg->accel,
        .run_dir = run_dir,
        .disk = VM_DISK_PLACEHOLDER,
        .placeholder_bytes = t->placeholder_bytes,
        .mem_path = ram,
        .mem_share = true,
        .sandbox = cfg->sandbox,
        .run_as = cfg->run_as,
    };
    int boot_timeout = cfg->boot_timeout_ms > 0 ? cfg->boot_timeout_ms : 120000;
    agent_client *agent = NULL;
    struct vm *vm;
    bool ok = false;
    gint64 t0;

    vm = vm_launch(&vc, NULL, 30000, error);
    if (!vm) {
        g_prefix_error(error, "template: launch: ");
        return false;
    }
    t->accel = vm->accel;
    qemu_version = g_strdup(qmp_client_qemu_version(vm->qmp));
    agent = agent_client_connect(vm->ctl_path, 10000, error);
    if (!agent || !agent_client_wait_ready(agent, boot_timeout, NULL, error)) {
        g_autofree char *tail = vm_serial_tail(vm, 1500);
        g_prefix_error(error, "template: wisp-init READY: ");
        log_error(TPL_LOG, "serial console:\n%s", tail);
        goto out;
    }
    t->boot_ms = (double)(g_get_monotonic_time() - vm->launched_us) / 1000.0;
    /* Closed before the snapshot, so clones start with no host attached and take the
     * connection their claimer makes. */
    agent_client_free(agent);
    agent = NULL;

    t0 = g_get_monotonic_time();
    if (!vm_template_snapshot(vm, state, error)) {
        g_prefix_error(error, "template: snapshot: ");
        goto out;
    }
    t->snapshot_ms = (double)(g_get_monotonic_time() - t0) / 1000.0;
    if (!vm_quit(vm, 10000, error)) {
        g_prefix_error(error, "template: quit: ");
        goto out;
    }
    ok = vm_template_write_manifest(t, tmp_dir, qemu_version, error);
out:
    agent_client_free(agent);
    vm_free(vm);
    return ok;
}

static void vm_template_remove_dir(const char *dir)
{
    const char *names[] = {
        "ram",          "state",          "manifest.json", "store-manifest", /* template_store.c */
        "run/qemu.log", "run/serial.log", "run/qmp.sock",  "run/ctl.sock",   "run", NULL};

    for (int i = 0; names[i]; i++) {
        g_autofree char *p = g_build_filename(dir, names[i], NULL);
        if (g_remove(p) < 0 && errno != ENOENT)
            log_warn(TPL_LOG, "remove %s: %s", p, g_strerror(errno));
    }
    if (g_rmdir(dir) < 0 && errno != ENOENT)
        log_warn(TPL_LOG, "rmdir %s: %s", dir, g_strerror(errno));
}

struct vm_template *vm_template_ensure(const struct vm_template_config *cfg, GError **error)
{
    g_autofree char *root = NULL, *dir = NULL, *tmp = NULL, *lock_path = NULL;
    struct vm_template *t;
    int lock_fd = -1;

    if (!cfg->state_dir || !cfg->key || !cfg->kernel || !cfg->initrd) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "template: a state directory, a key, a kernel and an initramfs are needed");
        return NULL;
    }
    root = g_build_filename(cfg->state_dir, "templates", NULL);
    /* 16 hex digits name the directory (a socket path must fit 108 bytes while it is built);
     * the manifest holds the whole key and is what is compared. */
    g_autofree char *short_key = g_strndup(cfg->key, 16);
    dir = g_build_filename(root, short_key, NULL);
    tmp = g_strconcat(dir, ".tmp", NULL);
    lock_path = g_strconcat(dir, ".lock", NULL);
    t = vm_template_new(cfg, dir);
    if (g_mkdir_with_parents(root, 0700) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "mkdir %s: %s", root, g_strerror(errno));
        goto fail;
    }
    /* Two managers (wispd and an operator's wisp-vm) must not build into one KEY16.tmp: the
     * second waits for the first's build, then reuses it. */
    lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "lock %s: %s", lock_path, g_strerror(errno));
        goto fail;
    }
    if (vm_template_load(t, cfg->accel)) {
        log_info(TPL_LOG, "template %s reused (%s)", t->key, vm_accel_to_string(t->accel));
        close(lock_fd); /* releases the lock */
        return t;
    }
    vm_template_remove_dir(tmp);
    if (g_mkdir(tmp, 0700) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "mkdir %s: %s", tmp, g_strerror(errno));
        goto fail;
    }
    if (!vm_template_build(t, cfg, tmp, error)) {
        vm_template_remove_dir(tmp);
        goto fail;
    }
    {
        g_autofree char *run = g_build_filename(tmp, "run", NULL);
        g_autofree char *qlog = g_build_filename(run, "qemu.log", NULL);
        g_autofree char *slog = g_build_filename(run, "serial.log", NULL);
        g_remove(qlog);
        g_remove(slog);
        g_rmdir(run);
    }
    vm_template_remove_dir(dir); /* a stale template of the same key (other memory size...) */
    if (g_rename(tmp, dir) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "rename %s: %s", tmp, g_strerror(errno));
        vm_template_remove_dir(tmp);
        goto fail;
    }
    t->built_now = true;
    close(lock_fd);
    log_info(TPL_LOG, "template %s built: READY after %.0f ms, snapshot %.1f ms (%s)", t->key,
             t->boot_ms, t->snapshot_ms, vm_accel_to_string(t->accel));
    return t;
fail:
    if (lock_fd >= 0)
        close(lock_fd);
    vm_template_free(t);
    return NULL;
}

void vm_template_clone_config(const struct vm_template *t, const char *run_dir,
                              struct vm_config *out)
{
    *out = (struct vm_config){
        .qemu = t->qemu,
        .kernel = t->kernel,
        .initrd = t->initrd,
        .mem_mib = t->mem_mib,
        .accel = t->accel,
        .run_dir = run_dir,
        .disk = VM_DISK_PLACEHOLDER,
        .placeholder_bytes = t->placeholder_bytes,
        .mem_path = t->ram_path,
        .mem_share = false, /* a private copy-on-write mapping: the template's file stays as is */
        .paused = true,
        .incoming_defer = true,
        .sandbox = t->sandbox,
        .run_as = t->run_as,
        /* No parent-death signal: the kernel ties it to the thread that forked, here the
         * pool's refill thread, so stopping a pool would kill the sprites claimed from it; and
         * a manager that restarts must find its sprites running.  Members are killed
         * explicitly (vm_pool_free, destroy); a manager that crashes leaves its unclaimed
         * members behind, in its run directory. */
        .keep_on_exit = true,
    };
}
