/* vm.c: the QEMU process of a microvm (see vm.h). */
#include "vm.h"

#include "log.h"
#include "proc.h"
#include "runas.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define VM_LOG "vm"

static char *vm_file_tail(const char *path, size_t max_bytes)
{
    g_autofree char *text = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &text, &len, NULL))
        return g_strdup("");
    if (len > max_bytes)
        return g_strdup(text + len - max_bytes);
    return g_steal_pointer(&text);
}

char *vm_serial_tail(const struct vm *vm, size_t max_bytes)
{
    return vm_file_tail(vm->serial_path, max_bytes);
}

static bool vm_path_fits(const char *path, GError **error)
{
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "socket path longer than a unix socket allows: %s", path);
        return false;
    }
    return true;
}

bool vm_is_running(struct vm *vm)
{
    int status, r;

    if (!vm->pid)
        return false;
    r = proc_wait(vm->pid, 0, &status);
    if (r == 1) {
        vm->exit_status = status;
        vm->pid = 0;
        return false;
    }
    return true;
}

struct vm *vm_launch(const struct vm_config *cfg, GMainContext *ctx, int timeout_ms, GError **error)
{
    struct vm *vm = g_new0(struct vm, 1);
    gint64 deadline;
    GError *err = NULL;
    pid_t pid;

    if (!cfg->run_dir) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "a run directory is required");
        g_free(vm);
        return NULL;
    }
    vm->run_dir = g_strdup(cfg->run_dir);
    vm->qmp_path = g_build_filename(cfg->run_dir, "qmp.sock", NULL);
    vm->ctl_path = g_build_filename(cfg->run_dir, "ctl.sock", NULL);
    vm->serial_path = g_build_filename(cfg->run_dir, "serial.log", NULL);
    vm->log_path = g_build_filename(cfg->run_dir, "qemu.log", NULL);
    if (!vm_path_fits(vm->qmp_path, error) || !vm_path_fits(vm->ctl_path, error))
        goto fail;
    if (g_mkdir_with_parents(cfg->run_dir, 0700) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "mkdir %s: %s", cfg->run_dir, g_strerror(errno));
        goto fail;
    }
    /* Stale sockets of an earlier run would be connected to before QEMU replaces them. */
    unlink(vm->qmp_path);
    unlink(vm->ctl_path);
    unlink(vm->serial_path);

    /* The probe (once per host boot) is not counted in the launch's timeout. */
    /* The reason is the probe's shared cache entry, which a later probe may replace: a copy. */
    const char *why = NULL;
    vm->accel = vm_accel_resolve(cfg->accel, cfg->qemu, cfg->kernel, &why);
    vm->accel_why = g_strdup(why ? why : "");
    /* -runas only where it can work; otherwise QEMU stays the caller's, and the log says why. */
    struct vm_config eff = *cfg;
    uid_t uid = geteuid();
    gid_t gid;
    const char *run_as_why = "";
    if (cfg->run_as && *cfg->run_as && !vm_runas_resolve(cfg->run_as, &uid, &gid, &run_as_why)) {
        eff.run_as = NULL;
        uid = geteuid();
        /* Once at info, as the KVM probe's answer: a pool would say it at every refill. */
        static gint said;
        enum wisp_log_level level =
            g_atomic_int_compare_and_exchange(&said, 0, 1) ? WISP_LOG_INFO : WISP_LOG_DEBUG;
        wisp_log(level, VM_LOG, "QEMU runs as uid %u, not as %s: %s", (unsigned)uid, cfg->run_as,
                 run_as_why);
    }
    vm->run_as_uid = uid;
    vm->run_as_why = g_strdup(run_as_why);
    cfg = &eff;
    deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    vm->argv = vm_config_build_argv(cfg, vm->accel, vm_host_cpu_khz(), vm->qmp_path, vm->ctl_path,
                                    vm->serial_path, error);
    if (!vm->argv)
        goto fail;
    if (wisp_log_enabled(WISP_LOG_DEBUG, VM_LOG)) {
        g_autofree char *line = g_strjoinv(" ", vm->argv);
        log_debug(VM_LOG, "%s", line);
    }
    if (cfg->disk != VM_DISK_NONE)
        vm->slot_file =
            g_strdup(cfg->disk == VM_DISK_PLACEHOLDER ? VM_NODE_PLACEHOLDER : VM_NODE_DIRECT_NBD);
    vm->guest_disk_bytes =
        cfg->disk == VM_DISK_PLACEHOLDER
            ? (gint64)(cfg->placeholder_bytes ? cfg->placeholder_bytes : (guint64)100 << 30)
            : -1;
    vm->launched_us = g_get_monotonic_time();
    pid = proc_spawn((const char *const *)vm->argv, vm->log_path, !cfg->keep_on_exit);
    if (pid < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_LAUNCH, "start %s: %s", vm->argv[0],
                    g_strerror(-pid));
        goto fail;
    }
    vm->pid = pid;

    int left_ms = (int)MAX((deadline - g_get_monotonic_time()) / 1000, 1);
    vm->qmp = qmp_client_connect(vm->qmp_path, ctx, left_ms, &err);
    if (!vm->qmp) {
        /* Most often QEMU refused the command line: its own message says why. */
        g_usleep(50 * 1000);
        bool running = vm_is_running(vm);
        g_autofree char *tail = vm_file_tail(vm->log_path, 2000);
        g_set_error(error, VM_ERROR, VM_ERROR_LAUNCH, "QEMU %s: %s%s%s",
                    running ? "is running but QMP failed" : proc_status_to_string(vm->exit_status),
                    err->message, *tail ? "; qemu.log: " : "", g_strstrip(tail));
        g_error_free(err);
        goto fail;
    }
    log_info(VM_LOG, "QEMU %d started (%s; %s; uid %u), QMP after %.1f ms", (int)pid,
             vm_accel_to_string(vm->accel), vm->accel_why, (unsigned)vm->run_as_uid,
             (double)(g_get_monotonic_time() - vm->launched_us) / 1000.0);
    return vm;

fail:
    vm_free(vm);
    return NULL;
}

static JsonNode *vm_blockdev_args_nbd(const char *node, const char *sock, const char *export_name)
{
    JsonObject *o = json_object_new(), *server = json_object_new();
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_object_set_string_member(o, "driver", "nbd");
    json_object_set_string_member(o, "node-name", node);
    json_object_set_string_member(server, "type", "unix");
    json_object_set_string_member(server, "path", sock);
    json_object_set_object_member(o, "server", server);
    json_object_set_int_member(o, "reconnect-delay", VM_NBD_RECONNECT_DELAY_S);
    if (export_name && *export_name)
        json_object_set_string_member(o, "export", export_name);
    json_node_take_object(n, o);
    return n;
}

static gint64 vm_node_size(struct vm *vm, const char *node, int timeout_ms, GError **error)
{
    JsonNode *ret = qmp_client_execute(vm->qmp, "query-named-block-nodes", NULL, timeout_ms, error);
    gint64 size = -1;

    if (!ret)
        return -1;
    if (JSON_NODE_HOLDS_ARRAY(ret)) {
        JsonArray *a = json_node_get_array(ret);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonObject *o = json_array_get_object_element(a, i);
            if (!o || g_strcmp0(json_object_get_string_member_with_default(o, "node-name", ""),
                                node) != 0)
                continue;
            JsonObject *img = json_object_get_object_member(o, "image");
            if (img)
                size = json_object_get_int_member_with_default(img, "virtual-size", -1);
        }
    }
    json_node_unref(ret);
    if (size < 0)
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "no size for node %s", node);
    return size;
}

bool vm_attach_nbd(struct vm *vm, const char *nbd_socket, const char *export_name, int timeout_ms,
                   GError **error)
{
    g_autofree char *node = g_strdup_printf("nbd%u", ++vm->nbd_nodes);
    JsonNode *args, *ret;
    gint64 nbd_size;

    args = vm_blockdev_args_nbd(node, nbd_socket, export_name);
    ret = qmp_client_execute(vm->qmp, "blockdev-add", args, timeout_ms, error);
    json_node_unref(args);
    if (!ret) {
        g_prefix_error(error, "attach: blockdev-add %s: ", nbd_socket);
        return false;
    }
    json_node_unref(ret);
    ret = qmp_client_executef(vm->qmp, timeout_ms, error, "blockdev-reopen",
                              "{\"options\": [{\"driver\": \"raw\", \"node-name\": \"%s\","
                              " \"file\": \"%s\"}]}",
                              VM_NODE_SLOT, node);
    if (!ret) {
        g_prefix_error(error, "attach: blockdev-reopen %s: ", VM_NODE_SLOT);
        return false;
    }
    json_node_unref(ret);
    nbd_size = vm_node_size(vm, node, timeout_ms, error);
    if (nbd_size < 0) {
        g_prefix_error(error, "attach: query-named-block-nodes: ");
        return false;
    }
    /* slot0 takes the new node's size at the reopen, but the guest still has the old capacity
     * until a resize notifies the device: block_resize to the size slot0 already has. */
    if (nbd_size != vm->guest_disk_bytes) {
        ret = qmp_client_executef(vm->qmp, timeout_ms, error, "block_resize",
                                  "{\"node-name\": \"%s\", \"size\": %" G_GINT64_FORMAT "}",
                                  VM_NODE_SLOT, nbd_size);
        if (!ret) {
            g_prefix_error(error, "attach: block_resize %s: ", VM_NODE_SLOT);
            return false;
        }
        json_node_unref(ret);
        vm->guest_disk_bytes = nbd_size;
    }
    /* The node slot0 sat on before (the placeholder, or an earlier export) is unused now. */
    if (vm->slot_file) {
        ret = qmp_client_executef(vm->qmp, timeout_ms, error, "blockdev-del",
                                  "{\"node-name\": \"%s\"}", vm->slot_file);
        if (!ret) {
            g_prefix_error(error, "attach: blockdev-del %s: ", vm->slot_file);
            return false;
        }
        json_node_unref(ret);
    }
    g_free(vm->slot_file);
    vm->slot_file = g_strdup(node);
    return true;
}

bool vm_wait_exit(struct vm *vm, int timeout_ms, GError **error)
{
    int status = 0, r;

    if (!vm->pid)
        return true;
    r = proc_wait(vm->pid, timeout_ms, &status);
    if (r == 1) {
        vm->exit_status = status;
        vm->pid = 0;
        return true;
    }
    g_set_error(error, VM_ERROR, r == 0 ? VM_ERROR_TIMEOUT : VM_ERROR_IO,
                "QEMU %d did not exit: %s", (int)vm->pid, r == 0 ? "timed out" : g_strerror(-r));
    return false;
}

bool vm_quit(struct vm *vm, int timeout_ms, GError **error)
{
    GError *err = NULL;
    JsonNode *ret;

    if (!vm->pid)
        return true;
    ret = vm->qmp ? qmp_client_execute(vm->qmp, "quit", NULL, timeout_ms, &err) : NULL;
    if (ret)
        json_node_unref(ret);
    else if (err && !g_error_matches(err, QMP_ERROR, QMP_ERROR_CLOSED))
        log_warn(VM_LOG, "quit: %s", err->message); /* QEMU may close before it answers */
    g_clear_error(&err);
    if (vm_wait_exit(vm, timeout_ms, error))
        return true;
    int status = proc_kill_and_reap(vm->pid);
    vm->pid = 0;
    vm->exit_status = status;
    g_prefix_error(error, "quit: ");
    return false;
}

pid_t vm_detach(struct vm *vm)
{
    pid_t pid = vm->pid;

    vm->pid = 0;
    g_clear_pointer(&vm->qmp_path, g_free); /* QEMU still serves them */
    g_clear_pointer(&vm->ctl_path, g_free);
    vm_free(vm);
    return pid;
}

void vm_free(struct vm *vm)
{
    if (!vm)
        return;
    qmp_client_free(vm->qmp);
    if (vm->pid) {
        int status = proc_kill_and_reap(vm->pid);
        if (status >= 0)
            vm->exit_status = status;
        vm->pid = 0;
    }
    if (vm->qmp_path)
        unlink(vm->qmp_path);
    if (vm->ctl_path)
        unlink(vm->ctl_path);
    g_free(vm->accel_why);
    g_free(vm->run_as_why);
    g_free(vm->run_dir);
    g_free(vm->qmp_path);
    g_free(vm->ctl_path);
    g_free(vm->serial_path);
    g_free(vm->log_path);
    g_strfreev(vm->argv);
    g_free(vm->slot_file);
    g_free(vm);
}
