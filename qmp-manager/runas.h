/* runas.h: QEMU as an unprivileged user, where the host allows it.
 *
 * QEMU 7.2 takes `-runas USER`: it opens everything on its command line as the caller (the
 * kernel, initramfs, RAM file, serial log, /dev/kvm, the QMP and control sockets, an NBD export
 * given at launch), then, just before the guest starts, calls setgid/initgroups/setuid to USER.
 * What QEMU opens later does need USER's permissions; in Wisp that is one thing: the NBD unix
 * socket of the storage server, which a claim attaches with blockdev-add.  nbdkit runs as root,
 * so its socket must be given to a group QEMU's user is in (vm_runas_grant_socket: the user's
 * primary group, mode 0660), and its directory must be searchable by that group.  Never
 * world-writable: any local user could then write every sprite's disk.
 *
 * The sandbox stays on, but with elevateprivileges=allow: QEMU 7.2 installs its seccomp filter
 * before -runas's setuid, and with elevateprivileges=deny that setuid kills QEMU (SIGSYS).
 * Allowing set*id is harmless once QEMU runs as USER: a process without root cannot setuid back
 * to root, and setuid from root to USER drops every capability.
 *
 * vm_runas_resolve decides, as the KVM probe does, and says why when it falls back to the
 * caller's user: not root (only root can change user), no such user, or a user that is root. */
#ifndef WISP_RUNAS_H
#define WISP_RUNAS_H

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

/* The recommended user (docs/vm.md): `useradd --system --user-group --no-create-home
 * --shell /usr/sbin/nologin wisp-qemu`. */
#define VM_RUNAS_DEFAULT_USER "wisp-qemu"

/* true and *uid, *gid when QEMU can run as user here; false and *why (static text, or a string
 * kept for the process) when it cannot.  user NULL or "": false, why "not asked". */
bool vm_runas_resolve(const char *user, uid_t *uid, gid_t *gid, const char **why);

/* Gives the unix socket at path to user's primary group, mode 0660 (the NBD socket of nbdkit,
 * run as root, for QEMU running as user).  Needs root.  Refuses a symbolic link, anything but
 * a socket, and a socket not owned by root; changes the inode it checked (an O_PATH fd). */
bool vm_runas_grant_socket(const char *path, const char *user, GError **error);

#endif
