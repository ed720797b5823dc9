/* boot.h: what PID 1 does before anything else: the pseudo filesystems and the kernel modules
 * the initramfs carries. */
#ifndef WISP_AGENT_BOOT_H
#define WISP_AGENT_BOOT_H

/* Mounts /proc, /sys, /dev (devtmpfs), /dev/pts and /run; 0 or a negative errno (the first
 * failure; the others are still tried). */
int boot_mount_basics(void);
/* Kernel settings wisp-init relies on (its log lines not rate-limited). */
void boot_tune_kernel(void);
/* Loads dir/NAME.ko for each NAME listed in dir/order, in order, with finit_module.  A module
 * already loaded is fine; a failing one is logged and skipped.  Returns how many failed, or a
 * negative errno when the order file can't be read. */
int boot_load_modules(const char *dir);

#endif
