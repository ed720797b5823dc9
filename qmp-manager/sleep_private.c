/* sleep_private.c: cold sleep of a sprite whose RAM is a private mapping (share=off), such as a
 * pool clone restored from the template's RAM file.
 *
 * x-ignore-shared leaves out only shared RAM, so such a sprite's RAM would go into the
 * migration stream, which is not page-aligned and dedups badly.  Instead the RAM is moved into a
 * file of the sprite's own: a helper QEMU with the same machine, its RAM in DIR/ram share=on,
 * paused and -incoming defer, receives the whole migration over a socketpair.  The sprite's QEMU
 * then quits, and the helper migrates out with x-ignore-shared into DIR/state, as sleep_cold
 * does; DIR/ram is then the page-aligned image, chunked the usual way.  The helper has a
 * null-co placeholder disk and never runs a vCPU.  A wake (wake_cold) makes the sprite a
 * share=on one, which sleeps with sleep_cold from then on. */
#include "sleep.h"
#include "sleep_internal.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SLEEP_LOG "sleep"

static double secs_since_private(gint64 t0)
{
    return (double)(g_get_monotonic_time() - t0) / 1e6;
}

static bool send_fd_named(qmp_client *c, int fd, const char *name, int timeout_ms, const char *what,
                          GError **error)
{
    bool sent = qmp_client_send_fd(c, fd, name, timeout_ms, error);
    close(fd); /* QEMU has its own copy now, or the call failed */
    if (!sent)
        g_prefix_error(error, "%s: getfd: ", what);
    return sent;
}

/* The helper's logs and run dir (vm_free removed its sockets). */
static void remove_helper_run(const char *run_dir)
{
    g_autofree char *qemu_log = g_build_filename(run_dir, "qemu.log", NULL);
    g_autofree char *serial = g_build_filename(run_dir, "serial.log", NULL);
    unlink(qemu_log);
    unlink(serial);
    if (rmdir(run_dir) < 0 && errno != ENOENT)
        log_warn(SLEEP_LOG, "rmdir %s: %s", run_dir, g_strerror(errno));
}

/* The whole RAM and state of vm into the paused helper, over a socketpair. */
static bool migrate_into_helper(struct vm *vm, struct vm *helper, int timeout, GError **error)
{
    g_autofree char *bw =
        g_strdup_printf("{\"max-bandwidth\": %" G_GINT64_FORMAT "}", SLEEP_MAX_BANDWIDTH_BS);
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "cold sleep: socketpair: %s", g_strerror(errno));
        return false;
    }
    if (!send_fd_named(helper->qmp, sv[1], "wisp-wake", timeout, "cold sleep (helper)", error)) {
        close(sv[0]);
        return false;
    }
    if (!sleep_qmp_ok(helper->qmp, timeout, error, "cold sleep (helper)", "migrate-incoming",
                      "{\"uri\": \"fd:wisp-wake\"}")) {
        close(sv[0]);
        return false;
    }
    if (!sleep_qmp_ok(vm->qmp, timeout, error, "cold sleep", "migrate-set-capabilities",
                      "{\"capabilities\": [{\"capability\": \"x-ignore-shared\","
                      " \"state\": false}]}") ||
        !sleep_qmp_ok(vm->qmp, timeout, error, "cold sleep", "migrate-set-parameters", bw)) {
        close(sv[0]);
        return false;
    }
    return send_fd_named(vm->qmp, sv[0], "wisp-sleep", timeout, "cold sleep", error) &&
           sleep_qmp_ok(vm->qmp, timeout, error, "cold sleep", "migrate",
                        "{\"uri\": \"fd:wisp-sleep\"}") &&
           sleep_migrate_wait(vm->qmp, timeout, "cold sleep (to the helper)", error) &&
           sleep_migrate_wait(helper->qmp, timeout, "cold sleep (helper incoming)", error);
}

/* The helper's device state into DIR/state, its RAM staying in DIR/ram (x-ignore-shared). */
static bool helper_save_state(struct vm *helper, const char *state_path, int timeout,
                              GError **error)
{
    g_autofree char *bw =
        g_strdup_printf("{\"max-bandwidth\": %" G_GINT64_FORMAT "}", SLEEP_MAX_BANDWIDTH_BS);
    int fd;

    if (!sleep_set_ignore_shared(helper->qmp, timeout, "cold sleep (helper)", error) ||
        !sleep_qmp_ok(helper->qmp, timeout, error, "cold sleep (helper)", "migrate-set-parameters",
                      bw))
        return false;
    fd = open(state_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "cold sleep: create %s: %s", state_path,
                    g_strerror(errno));
        return false;
    }
    return send_fd_named(helper->qmp, fd, "wisp-state", timeout, "cold sleep (helper)", error) &&
           sleep_qmp_ok(helper->qmp, timeout, error, "cold sleep (helper)", "migrate",
                        "{\"uri\": \"fd:wisp-state\"}") &&
           sleep_migrate_wait(helper->qmp, timeout, "cold sleep (helper out)", error) &&
           vm_quit(helper, timeout, error);
}

bool sleep_cold_private(struct vm *vm, const struct vm_config *cfg, const struct cold_sleep_opts *o,
                        struct cold_sleep_result *out, GError **error)
{
    g_autofree char *ram_path = sleep_ram_path(o->dir);
    g_autofree char *state_path = sleep_state_path(o->dir);
    g_autofree char *manifest_path = sleep_manifest_path(o->dir);
    g_autofree char *helper_run = g_strdup_printf("%s.h", cfg->run_dir);
    gint64 t0 = g_get_monotonic_time(), t;
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    struct vm *helper = NULL;

    memset(out, 0, sizeof *out);
    if (!vm->pid || !vm->qmp) {
        g_set_error(error, VM_ERROR, VM_ERROR_EXITED, "cold sleep: QEMU is not running");
        return false;
    }
    if (g_mkdir_with_parents(o->dir, 0700) < 0 || (unlink(manifest_path) < 0 && errno != ENOENT) ||
        (unlink(ram_path) < 0 && errno != ENOENT)) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "cold sleep: prepare %s: %s", o->dir,
                    g_strerror(errno));
        return false;
    }
    t = g_get_monotonic_time();
    if (o->agent && !sleep_guest_sync(o->agent, timeout, error))
        return false;
    out->sync_s = secs_since_private(t);
    t = g_get_monotonic_time();
    if (!sleep_qmp_ok(vm->qmp, timeout, error, "cold sleep", "stop", NULL))
        return false;
    out->stop_s = secs_since_private(t);

    t = g_get_monotonic_time();
    struct vm_config hcfg = *cfg;
    hcfg.run_dir = helper_run;
    hcfg.mem_path = ram_path;
    hcfg.mem_share = true;
    hcfg.paused = true;
    hcfg.incoming_defer = true;
    hcfg.disk = VM_DISK_PLACEHOLDER;
    hcfg.nbd_socket = NULL;
    hcfg.nbd_export = NULL;
    hcfg.placeholder_bytes = 0;
    hcfg.keep_on_exit = false;
    helper = vm_launch(&hcfg, NULL, timeout, error);
    if (!helper) {
        g_prefix_error(error, "cold sleep: the RAM helper: ");
        goto resume;
    }
    if (!migrate_into_helper(vm, helper, timeout, error))
        goto resume;
    /* The helper holds the sprite now; the sprite's own QEMU can go. */
    if (!vm_quit(vm, timeout, error)) {
        g_prefix_error(error, "cold sleep: ");
        goto fail;
    }
    if (!helper_save_state(helper, state_path, timeout, error))
        goto fail;
    out->migrate_s = secs_since_private(t);
    vm_free(helper);
    helper = NULL;
    remove_helper_run(helper_run);

    if (!sleep_store_local_copy(o, out, error))
        return false;
    out->total_s = secs_since_private(t0);
    log_info(SLEEP_LOG,
             "sprite %s (private RAM) asleep as %s: %.0f ms (through the helper %.0f, store"
             " %.0f); %" G_GUINT64_FORMAT " bytes uploaded",
             o->sprite, o->manifest_key, out->total_s * 1e3, out->migrate_s * 1e3,
             out->store_s * 1e3, out->ram.uploaded_bytes + out->state.uploaded_bytes);
    return true;

resume:
    vm_free(helper);
    remove_helper_run(helper_run);
    unlink(ram_path);
    {
        GError *ignored = NULL;
        if (!sleep_qmp_ok(vm->qmp, timeout, &ignored, "cold sleep (undo)", "cont", NULL)) {
            log_warn(SLEEP_LOG, "%s", ignored->message);
            g_error_free(ignored);
        }
    }
    return false;

fail:
    /* The sprite's QEMU is gone or going, and its state did not reach a file: nothing to keep. */
    vm_free(helper);
    remove_helper_run(helper_run);
    unlink(ram_path);
    return false;
}
