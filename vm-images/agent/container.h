/* container.h: the sprite's disk and the inner container that runs the user's processes.
 *
 * ATTACH mounts the disk at CONTAINER_ROOT in wisp-init's own mount namespace (where FREEZE and
 * the services' log files reach it) and starts a container init: PID 1 of new mount, pid, uts,
 * ipc and cgroup namespaces, with the disk as its root and /proc, /dev, /sys and /run of its own.
 * It is wisp-init's binary, executed afresh as "container-init" so that none of wisp-init's
 * memory or descriptors is in the container; it only reaps orphans.
 *
 * Processes are started in the container by joining the container init's namespaces (setns) from
 * a short-lived helper, which forks the process with CLONE_PARENT: wisp-init is its parent, gets
 * its exit status directly, and no relay process stays around.  Everything in the container runs
 * as root without the capabilities that would reach the platform (see container.c). */
#ifndef WISP_AGENT_CONTAINER_H
#define WISP_AGENT_CONTAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "protocol.h"

#define CONTAINER_ROOT      "/sprite"
#define CONTAINER_INIT_NAME "container-init"
#define CONTAINER_NS_COUNT  5

struct container {
    bool attached;
    bool frozen;
    char device[128];
    pid_t init_pid;
    int ns_fds[CONTAINER_NS_COUNT]; /* the container init's namespaces, in setns order */
    int self_exe_fd;                /* wisp-init's binary, to execute the container init */
    char **env;                     /* ATTACH's env, NULL-terminated, owned */
    size_t env_count;
};

/* Before anything else: remembers wisp-init's binary (the container init is executed from it). */
int container_init(struct container *ct);

/* The ATTACH steps.  0, or a negative errno with msg naming the step that failed. */
int container_attach(struct container *ct, const char *device, const char *hostname,
                     const struct wisp_strv *env, char *msg, size_t msg_cap);

struct spawn_spec {
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int stdin_fd, stdout_fd, stderr_fd;
    bool controlling_tty; /* stdin_fd is a pty slave to make the controlling terminal */
};

/* Starts a process in the container, in a new session.  Returns its pid in wisp-init's pid
 * namespace (wisp-init is its parent), or a negative errno. */
pid_t container_spawn(struct container *ct, const struct spawn_spec *spec);

/* A new pty from the container's own devpts: O_CLOEXEC master and slave. */
int container_open_pty(struct container *ct, int *master, int *slave);

/* FIFREEZE (freeze) or FITHAW of the sprite's filesystem; 0 or a negative errno. */
int container_freeze(struct container *ct, bool freeze);

/* For SHUTDOWN: SIGTERM to everything in the container, SIGKILL after grace_ms, the container
 * init reaped, then sync and unmount (or remount read-only when still busy). */
void container_stop(struct container *ct, int grace_ms);

/* wisp-init reaped pid: true when it was the container init (the container is gone). */
bool container_reaped(struct container *ct, pid_t pid, int status);

/* Runs a platform program (e2fsck, resize2fs) found in /sbin, /usr/sbin, /bin or /usr/bin and
 * waits; returns its exit status (>= 0) or a negative errno. */
int container_run_tool(const char *name, char *const argv[]);

/* main() of the container init (argv[0] == CONTAINER_INIT_NAME). */
int container_init_main(void);

#endif
