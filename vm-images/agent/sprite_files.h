/* sprite_files.h: files on the sprite's disk, opened by wisp-init (PID 1, full root in the
 * platform's namespaces) without following anything the container controls.
 *
 * Whatever runs in the container can make any path on its disk a symlink (to
 * /proc/sys/kernel/core_pattern, say), a FIFO or a device node.  Opening such a path with a
 * plain open() from PID 1 would write where the container chose, or block PID 1 for ever.  So
 * every directory is entered one component at a time with openat2(RESOLVE_NO_SYMLINKS |
 * RESOLVE_BENEATH | RESOLVE_NO_XDEV) and O_NOFOLLOW, every file is opened with O_NONBLOCK and
 * must then be a regular file (fstat), and renames and unlinks name entries of a directory fd
 * (renameat and unlinkat never follow the last component). */
#ifndef WISP_AGENT_SPRITE_FILES_H
#define WISP_AGENT_SPRITE_FILES_H

#include <stdbool.h>
#include <sys/types.h>

/* Opens the directory rel ("var/log/wisp": relative, components separated by '/') under the
 * sprite's root (CONTAINER_ROOT), creating missing components (mode 0755) if create.  Returns an
 * O_RDONLY|O_DIRECTORY descriptor, or -errno (-ELOOP, -ENOTDIR, -EXDEV for anything but a plain
 * directory on the sprite's filesystem). */
int sprite_dir_open(const char *rel, bool create);

/* Opens name (one component) in dir with flags (O_RDONLY, O_WRONLY|O_CREAT|O_APPEND, ...; the
 * function adds O_NOFOLLOW, O_NONBLOCK and O_CLOEXEC, then clears O_NONBLOCK again).  Returns
 * the descriptor, or -errno: -EINVAL when name is not a regular file. */
int sprite_file_open(int dir, const char *name, int flags, mode_t mode);

#endif
