/* vm_config.h: the typed description of one microvm, and the QEMU command line built from it.
 *
 * The command line (FINDINGS.md, "QEMU microvm"):
 *   qemu-system-x86_64 -M microvm -accel tcg|kvm -nodefaults -no-user-config -nographic
 *     -m MEM [-smp N] -kernel VMLINUX -initrd INITRAMFS
 *     -append "console=ttyS0 panic=-1 quiet tsc_early_khz=KHZ EXTRA"
 *     [-object memory-backend-file,...,mem-path=P,share=on|off -machine memory-backend=mem]
 *     disk, direct:      -blockdev nbd (disk0) -blockdev raw slot0 on disk0
 *     disk, placeholder: -blockdev null-co (ph0) -blockdev raw slot0 on ph0
 *     -device virtio-blk-device,drive=slot0
 *     -device virtio-serial-device -chardev socket,id=ctl,path=RUN/ctl.sock,server=on,wait=off
 *     -device virtserialport,chardev=ctl,name=wisp.ctl
 *     -serial file:RUN/serial.log -qmp unix:RUN/qmp.sock,server=on,wait=off
 *     [-S] [-incoming defer] [-sandbox on,...]
 * Microvm's ACPI stays on (with acpi=off the kernel finds no virtio-mmio devices), and the
 * kernel is the uncompressed PVH vmlinux (about 4 s faster than a bzImage under TCG).
 * tsc_early_khz: without it, 2 of 3 TCG boots hung calibrating the TSC. */
#ifndef WISP_VM_CONFIG_H
#define WISP_VM_CONFIG_H

#include "accel.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

enum vm_disk_mode {
    VM_DISK_NONE,        /* no virtio-blk device */
    VM_DISK_NBD,         /* the NBD export attached on the command line */
    VM_DISK_PLACEHOLDER, /* a null-co placeholder in slot0, swapped later (vm_attach_nbd) */
};

/* Errors of the VM layer (launch, attach, teardown); QMP's own errors keep QMP_ERROR. */
#define VM_ERROR (vm_error_quark())
GQuark vm_error_quark(void);
enum vm_error_code {
    VM_ERROR_CONFIG, /* the config is incomplete or inconsistent */
    VM_ERROR_LAUNCH, /* QEMU could not be started, or exited during start-up */
    VM_ERROR_EXITED, /* QEMU is gone */
    VM_ERROR_TIMEOUT,
    VM_ERROR_IO,
};

/* Node names of the disk slot, fixed so that the QMP manager can address them. */
#define VM_NODE_SLOT        "slot0"
#define VM_NODE_PLACEHOLDER "ph0"
#define VM_NODE_DIRECT_NBD  "disk0"

/* QEMU's NBD client: on a lost connection (the storage server killed or restarted), requests
 * wait and the client reconnects for this long before failing them.  wispd starts a dead
 * nbdkit again after about a second, so the guest sees a pause, not I/O errors. */
#define VM_NBD_RECONNECT_DELAY_S 60
/* The control port's name, which wisp-init looks for in /sys/class/virtio-ports. */
#define VM_CONTROL_PORT_NAME "wisp.ctl"

struct vm_config {
    const char *qemu;   /* NULL: $WISP_QEMU, else qemu-system-x86_64 */
    const char *kernel; /* PVH vmlinux */
    const char *initrd;
    const char *cmdline_extra; /* appended to the kernel command line, or NULL */
    unsigned mem_mib;          /* 0: 256 */
    unsigned vcpus;            /* 0: 1 */
    enum vm_accel accel;       /* AUTO: probe (accel.h) */
    const char *run_dir;       /* sockets and logs (qmp.sock, ctl.sock, serial.log, qemu.log) */

    enum vm_disk_mode disk;
    const char *nbd_socket;     /* VM_DISK_NBD */
    const char *nbd_export;     /* NULL or "": the server's default export */
    uint64_t placeholder_bytes; /* VM_DISK_PLACEHOLDER; 0: 100 GiB */

    const char *mem_path; /* RAM in this file (memory-backend-file), or NULL: anonymous */
    bool mem_share;       /* share=on (a template) or off (a private copy-on-write clone) */
    bool paused;          /* -S: the vCPUs wait for `cont` */
    bool incoming_defer;  /* -incoming defer, for migrate-incoming */
    bool sandbox;         /* -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny */
    bool keep_on_exit;    /* QEMU survives the caller's death (default: killed with it) */
    /* QEMU drops to this user (-runas) where the host allows it (runas.h: root, and the user
     * exists); vm_launch falls back to the caller's user otherwise and says why.  NULL: none. */
    const char *run_as;
};

/* The host CPU's frequency in kHz for tsc_early_khz, from /proc/cpuinfo ("cpu MHz"), else
 * from /sys cpufreq; 0 if neither says. */
unsigned vm_host_cpu_khz(void);

/* The kernel command line for the config. */
char *vm_config_kernel_cmdline(const struct vm_config *cfg, unsigned tsc_khz);

/* The QEMU argv (NULL-terminated, g_strfreev it) for cfg with the accelerator decided and the
 * sockets at the given paths.  NULL with error if the config is incomplete. */
char **vm_config_build_argv(const struct vm_config *cfg, enum vm_accel accel, unsigned tsc_khz,
                            const char *qmp_path, const char *ctl_path, const char *serial_path,
                            GError **error);

#endif
