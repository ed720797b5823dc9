/* vm.h: one QEMU microvm process: launch, disk attach, quit, kill, cleanup.
 *
 * vm_launch() decides the accelerator (accel.h), builds the command line (vm_config.h), starts
 * QEMU in its own process group with its stderr in RUN/qemu.log and the guest's serial console
 * in RUN/serial.log, and connects QMP.  vm_free() always leaves nothing behind: QEMU's group is
 * killed and reaped if it is still running, and the sockets it created are removed.
 *
 * Disk attach at claim (FINDINGS.md: microvm has no hotplug): the VM starts with a null-co
 * placeholder under the raw node slot0; vm_attach_nbd() adds the NBD node with blockdev-add,
 * points slot0 at it with blockdev-reopen, tells the guest the new size with block_resize when
 * it differs from what the guest has, and deletes the node slot0 was on before (the placeholder,
 * or an earlier export: attaching again swaps disks).  The guest must then `blockdev --flushbufs`
 * before reading (wisp-init's attach does).  Each step that fails names itself in the error. */
#ifndef WISP_VM_H
#define WISP_VM_H

#include "qmp.h"
#include "vm_config.h"

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

struct vm {
    pid_t pid; /* QEMU, leader of its process group; 0 once reaped */
    int exit_status;
    enum vm_accel accel;
    char *accel_why; /* why this accelerator (owned) */
    char *run_dir, *qmp_path, *ctl_path, *serial_path, *log_path;
    char **argv;
    qmp_client *qmp;
    gint64 launched_us; /* monotonic time of the fork */
    unsigned nbd_nodes; /* NBD nodes added so far (their names are nbdN) */
    char *slot_file;    /* the node under slot0 now (ph0, disk0 or nbdN), or NULL: no disk */
    /* The disk size the guest was last told (virtio-blk capacity): the placeholder's at launch.
     * A reopen onto a node of another size does not tell the guest; block_resize does. */
    gint64 guest_disk_bytes;
    /* QEMU's user once the guest runs: the config's run_as when the host allowed it (runas.h),
     * else the caller's (run_as_why says why: "" when it was not asked). */
    uid_t run_as_uid;
    char *run_as_why;
};

/* Starts QEMU and connects QMP within timeout_ms.  On failure *error includes the end of
 * qemu.log when QEMU said why.  ctx: the GMainContext QMP runs on (NULL: a private one). */
struct vm *vm_launch(const struct vm_config *cfg, GMainContext *ctx, int timeout_ms,
                     GError **error);

/* Attach at claim: the placeholder in slot0 is replaced by the export (see above). */
bool vm_attach_nbd(struct vm *vm, const char *nbd_socket, const char *export_name, int timeout_ms,
                   GError **error);

/* Whether QEMU still runs (reaps it if it exited; *status then in vm->exit_status). */
bool vm_is_running(struct vm *vm);
/* Waits for QEMU to exit by itself (a guest poweroff with -no-reboot... or `quit`). */
bool vm_wait_exit(struct vm *vm, int timeout_ms, GError **error);
/* QMP quit, then waits for the exit; kills the group if it does not come. */
bool vm_quit(struct vm *vm, int timeout_ms, GError **error);
/* Lets go of a VM that must outlive this process (a CLI's `boot`): closes QMP and frees the
 * struct, QEMU goes on (launch it with keep_on_exit).  Returns its pid. */
pid_t vm_detach(struct vm *vm);
/* Kills (if running), reaps, removes the sockets, frees.  NULL is allowed. */
void vm_free(struct vm *vm);

/* The last `max_bytes` of the serial console (g_free it), for error messages and tests. */
char *vm_serial_tail(const struct vm *vm, size_t max_bytes);

#endif
