/* clone.c: restore a paused clone from the template (see clone.h). */
#include "clone.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define CLONE_LOG "clone"

static bool vm_clone_migrate_in(struct vm *vm, const char *state_path, GError **error)
{
    JsonNode *ret;
    bool sent;
    int fd;

    if (!vm_template_set_ignore_shared(vm, error))
        return false;
    fd = open(state_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "open %s: %s", state_path, g_strerror(errno));
        return false;
    }
    sent = qmp_client_send_fd(vm->qmp, fd, "wisp-template", 5000, error);
    close(fd);
    if (!sent) {
        g_prefix_error(error, "getfd: ");
        return false;
    }
    ret = qmp_client_executef(vm->qmp, 5000, error, "migrate-incoming",
                              "{\"uri\": \"fd:wisp-template\"}");
    if (!ret) {
        g_prefix_error(error, "migrate-incoming: ");
        return false;
    }
    json_node_unref(ret);
    return vm_template_migration_wait(vm, 30000, error);
}

struct vm *vm_clone_restore(const struct vm_template *t, const char *run_dir, GMainContext *ctx,
                            double *restore_ms, GError **error)
{
    struct vm_config cfg;
    struct vm *vm;

    vm_template_clone_config(t, run_dir, &cfg);
    vm = vm_launch(&cfg, ctx, 30000, error);
    if (!vm) {
        g_prefix_error(error, "clone: launch: ");
        return NULL;
    }
    if (!vm_clone_migrate_in(vm, t->state_path, error)) {
        g_autofree char *tail = NULL;
        gsize len = 0;
        g_file_get_contents(vm->log_path, &tail, &len, NULL);
        g_prefix_error(error, "clone: restore: ");
        if (tail && len)
            log_warn(CLONE_LOG, "qemu.log of the failed clone: %s",
                     len > 1000 ? tail + len - 1000 : tail);
        vm_free(vm);
        return NULL;
    }
    /* The guest was told the placeholder's size at the template's boot. */
    vm->guest_disk_bytes = (gint64)t->placeholder_bytes;
    if (restore_ms)
        *restore_ms = (double)(g_get_monotonic_time() - vm->launched_us) / 1000.0;
    return vm;
}
