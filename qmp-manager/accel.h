/* accel.h: which accelerator QEMU can really use here, KVM or TCG.
 *
 * /dev/kvm existing proves nothing: on a PVM host it opens, then QEMU aborts ("failed to set
 * MSR 0x10a") or crawls.  So the probe runs two real tests, each in a child process with a
 * deadline so that a hang cannot take the caller with it:
 *   1. the ioctls: KVM_CREATE_VM, one memory slot, KVM_CREATE_VCPU, then KVM_RUN of a 5-byte
 *      real-mode guest that writes a byte to an I/O port and halts; both exits must be seen;
 *   2. QEMU itself: `-M microvm -accel kvm` boots the guest kernel with no root filesystem and
 *      `panic=-1 -no-reboot`, so a working KVM reaches the kernel's panic and QEMU exits 0 in
 *      well under the deadline.  Skipped when no kernel is given.
 * The answer is cached in the process, and in a file keyed by the host's boot id, the QEMU
 * binary and the kernel, so that a fleet of launches pays for one probe per boot.
 *
 * WISP_ACCEL=kvm|tcg forces the answer (the probe is not run); "auto" or unset probes. */
#ifndef WISP_ACCEL_H
#define WISP_ACCEL_H

#include <stdbool.h>

enum vm_accel {
    VM_ACCEL_AUTO = 0, /* probe */
    VM_ACCEL_KVM,
    VM_ACCEL_TCG,
};

const char *vm_accel_to_string(enum vm_accel accel);
/* "kvm", "tcg" or "auto"; returns false for anything else. */
bool vm_accel_from_string(const char *s, enum vm_accel *out);

/* Resolves `wanted` (AUTO: $WISP_ACCEL, then the cached or fresh probe).  qemu: the binary
 * (NULL: qemu-system-x86_64); kernel: a PVH vmlinux for the probe boot, or NULL.  *why (may be
 * NULL) gets a static or g_malloc'd-then-cached sentence saying why; do not free it. */
enum vm_accel vm_accel_resolve(enum vm_accel wanted, const char *qemu, const char *kernel,
                               const char **why);

/* Only the ioctl test (1 above).  Returns true if the tiny guest ran; *detail says what
 * failed (static string). */
bool vm_accel_kvm_ioctl_probe(const char **detail);

#endif
