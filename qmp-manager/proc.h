/* proc.h: child processes of the driver (QEMU, probe runs), each in its own process group so
 * that teardown kills QEMU and anything it started, and reaped with a deadline. */
#ifndef WISP_PROC_H
#define WISP_PROC_H

#include <stdbool.h>
#include <sys/types.h>

/* Starts argv[0] (looked up on PATH) in a new process group, stdin from /dev/null, stdout and
 * stderr appended to log_path (NULL: /dev/null).  die_with_parent: the child gets SIGKILL if
 * the caller dies, so a crashed test leaves no QEMU behind.  Returns the pid, or -errno. */
pid_t proc_spawn(const char *const *argv, const char *log_path, bool die_with_parent);
/* Waits up to timeout_ms (negative: forever) for the child.  Returns 1 and *status when it
 * exited, 0 on timeout, -errno on error. */
int proc_wait(pid_t pid, int timeout_ms, int *status);
/* SIGKILL to the child's process group, then reaps the child (it cannot survive SIGKILL, so
 * this does not block for long).  Returns its wait status, or -errno. */
int proc_kill_and_reap(pid_t pid);
/* Whether one of pid's command-line arguments names path or a file under it: the argument is
 * path, or has it right after its start, an '=' or a ',' (QEMU's "key=value,key=value"), and
 * followed by its end, a '/' or a ','.  So "/srv/wisp" is not found in "/srv/wisp-staging/x"
 * nor in "/srv/wisp2".  Never true for a zombie (no command line) or another user's process
 * that cannot be read. */
bool proc_cmdline_names_path(pid_t pid, const char *path);
/* "exit status N" or "killed by signal S" for a wait status (static buffer per thread). */
const char *proc_status_to_string(int status);

#endif
