/* container.c: the sprite's disk and the inner container (see container.h).
 *
 * Why not pivot_root: the kernel refuses it while the current root is the initramfs's rootfs
 * (EINVAL: rootfs has no parent mount).  The container init therefore does what switch_root
 * does, inside its own mount namespace: it detaches the platform's mounts, moves the disk's mount
 * onto "/" and chroots into it.  The rootfs underneath is unreachable by any path: ".." at the
 * top of the disk's mount leads to rootfs's "/", which is covered by the disk's mount again.
 * Without CAP_SYS_ADMIN nothing in the container can unmount that cover.
 *
 * Capabilities dropped from everything in the container (bounding set, and inheritable cleared,
 * so root keeps every other capability after execve):
 *   SYS_MODULE  loading kernel code;          SYS_RAWIO  /dev/mem, /proc/kcore, ioperm;
 *   SYS_ADMIN   mount (devtmpfs would expose the raw block devices and wisp.ctl), umount of the
 *               root cover, setns, sethostname;
 *   MKNOD       device nodes for the raw disk; SYS_BOOT   reboot, kexec;
 *   BPF, PERFMON  reading kernel memory through tracing;  MAC_ADMIN, MAC_OVERRIDE;
 *   SYS_PTRACE  between its fork and its exec, a process started in the container still holds a
 *               copy of wisp-init's memory; it is not dumpable then, and without this capability
 *               nothing in the container may trace or read it.  Tracing one's own (dumpable)
 *               processes, as gdb and strace do, needs no capability.
 * /proc/sys and /proc/sysrq-trigger are read-only (core_pattern and modprobe paths run
 * programs in the platform), /sys is read-only. */
#include "container.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* setns order: the mount namespace last, since joining it changes what /proc paths mean. */
static const char *const ns_names[CONTAINER_NS_COUNT] = {"cgroup", "ipc", "uts", "pid", "mnt"};

static const int dropped_caps[] = {
    CAP_SYS_MODULE, CAP_SYS_RAWIO,    CAP_SYS_ADMIN, CAP_MKNOD,        CAP_SYS_BOOT,
    39 /* BPF */,   38 /* PERFMON */, CAP_MAC_ADMIN, CAP_MAC_OVERRIDE, CAP_SYS_PTRACE,
};

int container_init(struct container *ct)
{
    memset(ct, 0, sizeof *ct);
    for (int i = 0; i < CONTAINER_NS_COUNT; i++)
        ct->ns_fds[i] = -1;
    ct->self_exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (ct->self_exe_fd < 0) {
        int e = -errno;
        log_error("open /proc/self/exe: %m");
        return e;
    }
    return 0;
}

/* ---- helpers shared by the container init and spawned processes ---- */

static int drop_capabilities(void)
{
    for (size_t i = 0; i < sizeof dropped_caps / sizeof dropped_caps[0]; i++)
        if (prctl(PR_CAPBSET_DROP, dropped_caps[i], 0, 0, 0) < 0 && errno != EINVAL)
            return -errno;
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return -errno;
    data[0].inheritable = data[1].inheritable = 0;
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -errno;
    return 0;
}

static void reset_signals(void)
{
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL); /* fails harmlessly for SIGKILL, SIGSTOP and the RT internals */
}

/* ---- running platform tools ---- */

int container_run_tool(const char *name, char *const argv[])
{
    static const char *const dirs[] = {"/sbin", "/usr/sbin", "/bin", "/usr/bin"};
    char path[256] = "";
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dirs[i], name);
        if (access(path, X_OK) == 0)
            break;
        path[0] = '\0';
    }
    if (path[0] == '\0') {
        log_error("%s: not found in the initramfs", name);
        return -ENOENT;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        log_error("fork for %s: %m", name);
        return e;
    }
    if (pid == 0) {
        reset_signals();
        execv(path, argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            int e = -errno;
            log_error("waitpid %s: %m", name);
            return e;
        }
    }
    if (WIFSIGNALED(status)) {
        log_error("%s killed by signal %d", name, WTERMSIG(status));
        return -EINTR;
    }
    return WEXITSTATUS(status);
}

/* ---- attach ---- */

struct ext4_facts {
    bool unclean;
    uint64_t bytes;
};

/* Reads what attach needs from the ext4 superblock (1024 bytes at offset 1024). */
static int read_ext4_facts(int fd, struct ext4_facts *out)
{
    uint8_t sb[1024];
    ssize_t n = pread(fd, sb, sizeof sb, 1024);
    if (n != (ssize_t)sizeof sb)
        return n < 0 ? -errno : -EIO;
#define LE16(o) ((uint32_t)sb[o] | (uint32_t)sb[(o) + 1] << 8)
#define LE32(o) (LE16(o) | LE16((o) + 2) << 16)
    if (LE16(0x38) != 0xEF53)
        return -EINVAL;
    uint32_t state = LE16(0x3A);
    uint32_t incompat = LE32(0x60);
    uint64_t blocks = LE32(0x04);
    if (incompat & 0x80) /* 64bit */
        blocks |= (uint64_t)LE32(0x150) << 32;
    uint32_t log_block = LE32(0x18);
#undef LE16
#undef LE32
    if (log_block > 6)
        return -EINVAL;
    /* Not cleanly unmounted, errors recorded, or a journal that needs replaying. */
    out->unclean = !(state & 1) || (state & 2) || (incompat & 0x4);
    out->bytes = blocks << (10 + log_block);
    return 0;
}

/* Sets up the container's root in the container init, after clone: the steps in order, each
 * failure naming itself in step. */
static int container_setup_root(const char *hostname, const char **step)
{
    *step = "make mounts private";
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return -errno;
    /* The platform's pseudo filesystems go away from this namespace before the disk covers
     * "/": nothing of them stays reachable or pinned. */
    static const char *const platform_mounts[] = {"/dev/pts", "/dev", "/proc", "/sys", "/run"};
    for (size_t i = 0; i < sizeof platform_mounts / sizeof platform_mounts[0]; i++)
        umount2(platform_mounts[i], MNT_DETACH);
    *step = "chdir to the disk";
    if (chdir(CONTAINER_ROOT) < 0)
        return -errno;
    *step = "move the disk onto /";
    if (mount(CONTAINER_ROOT, "/", NULL, MS_MOVE, NULL) < 0)
        return -errno;
    *step = "chroot";
    if (chroot(".") < 0 || chdir("/") < 0)
        return -errno;

    static const char *const dirs[] = {"/proc", "/dev", "/sys", "/run", "/tmp"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        mkdir(dirs[i], i == 4 ? 01777 : 0755); /* exists on any sane disk */

    *step = "mount /proc";
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        return -errno;
    static const char *const ro_proc[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq",
                                          "/proc/bus"};
    *step = "make /proc/sys read-only";
    for (size_t i = 0; i < sizeof ro_proc / sizeof ro_proc[0]; i++) {
        if (mount(ro_proc[i], ro_proc[i], NULL, MS_BIND | MS_REC, NULL) < 0) {
            if (errno == ENOENT)
                continue;
            return -errno;
        }
        if (mount(NULL, ro_proc[i], NULL,
                  MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            return -errno;
    }

    *step = "mount /dev";
    if (mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1024k") < 0)
        return -errno;
    static const struct {
        const char *path;
        unsigned major, minor;
    } nodes[] = {{"/dev/null", 1, 3},   {"/dev/zero", 1, 5},    {"/dev/full", 1, 7},
                 {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
    *step = "mknod in /dev";
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        if (mknod(nodes[i].path, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) < 0)
            return -errno;
        if (chmod(nodes[i].path, 0666) < 0) /* past the umask */
            return -errno;
    }
    *step = "mount /dev/pts";
    if (mkdir("/dev/pts", 0755) < 0 || mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                                             "newinstance,ptmxmode=0666,mode=0620,gid=5") < 0)
        return -errno;
    *step = "mount /dev/shm";
    if (mkdir("/dev/shm", 01777) < 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
        return -errno;
    *step = "links in /dev";
    if (symlink("pts/ptmx", "/dev/ptmx") < 0 || symlink("/proc/self/fd", "/dev/fd") < 0 ||
        symlink("/proc/self/fd/0", "/dev/stdin") < 0 ||
        symlink("/proc/self/fd/1", "/dev/stdout") < 0 ||
        symlink("/proc/self/fd/2", "/dev/stderr") < 0)
        return -errno;

    *step = "mount /sys";
    if (mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        return -errno;
    *step = "mount /run";
    if (mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
        return -errno;
    *step = "sethostname";
    if (sethostname(hostname, strlen(hostname)) < 0)
        return -errno;
    *step = "drop capabilities";
    return drop_capabilities();
}

/* The child side of the clone that makes the container init.  Reports to status_fd: an int
 * (0, or a negative errno) and the failing step's name; then executes the container init. */
static void container_init_child(struct container *ct, const char *hostname, int status_fd)
{
    const char *step = "";
    int r = container_setup_root(hostname, &step);
    if (r == 0) {
        step = "execute the container init";
        char *argv[] = {CONTAINER_INIT_NAME, NULL};
        char *envp[] = {NULL};
        /* The status pipe is O_CLOEXEC: its EOF without a report means the exec worked. */
        syscall(SYS_execveat, ct->self_exe_fd, "", argv, envp, AT_EMPTY_PATH);
        r = -errno;
    }
    char report[128];
    memcpy(report, &r, sizeof r);
    snprintf(report + sizeof r, sizeof report - sizeof r, "%s", step);
    if (write(status_fd, report, sizeof report) < 0) {
        /* the parent sees EOF and reports an unknown failure */
    }
    _exit(1);
}

static int start_container_init(struct container *ct, const char *hostname, char *msg,
                                size_t msg_cap)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        snprintf(msg, msg_cap, "pipe: %s", strerror(errno));
        return -errno;
    }
    long pid = syscall(SYS_clone,
                       CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP |
                           SIGCHLD,
                       0, NULL, NULL, 0);
    if (pid < 0) {
        int e = -errno;
        snprintf(msg, msg_cap, "clone the container init: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return e;
    }
    if (pid == 0) {
        close(pfd[0]);
        container_init_child(ct, hostname, pfd[1]);
    }
    close(pfd[1]);
    char report[128];
    ssize_t n;
    do
        n = read(pfd[0], report, sizeof report);
    while (n < 0 && errno == EINTR);
    close(pfd[0]);
    if (n != 0) {
        int r = -EIO;
        if (n == (ssize_t)sizeof report) {
            memcpy(&r, report, sizeof r);
            report[sizeof report - 1] = '\0';
            snprintf(msg, msg_cap, "container: %s: %s", report + sizeof r, strerror(-r));
        } else {
            snprintf(msg, msg_cap, "container: setup failed");
        }
        waitpid((pid_t)pid, NULL, 0);
        return r < 0 ? r : -EIO;
    }
    ct->init_pid = (pid_t)pid;
    for (int i = 0; i < CONTAINER_NS_COUNT; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%ld/ns/%s", pid, ns_names[i]);
        ct->ns_fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (ct->ns_fds[i] < 0) {
            int e = -errno;
            snprintf(msg, msg_cap, "open %s: %s", path, strerror(errno));
            /* Leave nothing that a later ATTACH would build on. */
            for (int j = 0; j < i; j++) {
                close(ct->ns_fds[j]);
                ct->ns_fds[j] = -1;
            }
            kill((pid_t)pid, SIGKILL);
            waitpid((pid_t)pid, NULL, 0);
            ct->init_pid = 0;
            return e;
        }
    }
    log_info("container init is pid %ld", pid);
    return 0;
}

static void free_env(struct container *ct)
{
    for (uint32_t i = 0; ct->env != NULL && ct->env[i] != NULL; i++)
        free(ct->env[i]);
    free(ct->env);
    ct->env = NULL;
    ct->env_count = 0;
}

/* Replaces ct->env (an ATTACH after a failed one must not leak the first one's). */
static int copy_env(struct container *ct, const struct wisp_strv *env)
{
    free_env(ct);
    ct->env = calloc((size_t)env->count + 1, sizeof(char *));
    if (ct->env == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < env->count; i++) {
        ct->env[i] = strdup(env->v[i]);
        if (ct->env[i] == NULL) {
            free_env(ct); /* the NULL just stored ends the list */
            return -ENOMEM;
        }
    }
    ct->env_count = env->count;
    return 0;
}

int container_attach(struct container *ct, const char *device, const char *hostname,
                     const struct wisp_strv *env, char *msg, size_t msg_cap)
{
    if (device == NULL || device[0] == '\0')
        device = "/dev/vda";
    if (hostname == NULL || hostname[0] == '\0')
        hostname = "sprite";
    if (strlen(hostname) > 64) {
        snprintf(msg, msg_cap, "hostname longer than 64 bytes");
        return -EINVAL;
    }
    snprintf(ct->device, sizeof ct->device, "%s", device);

    /* The slot was a placeholder until the host swapped the disk in: cached blocks of the
     * placeholder (zeros) must go before anything reads the superblock. */
    int fd = open(device, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = -errno;
        snprintf(msg, msg_cap, "open %s: %s", device, strerror(errno));
        return e;
    }
    uint64_t dev_bytes = 0;
    struct ext4_facts fs;
    int r = 0;
    if (ioctl(fd, BLKFLSBUF, 0) < 0) {
        r = -errno;
        snprintf(msg, msg_cap, "BLKFLSBUF %s: %s", device, strerror(errno));
    } else if (ioctl(fd, BLKGETSIZE64, &dev_bytes) < 0) {
        r = -errno;
        snprintf(msg, msg_cap, "BLKGETSIZE64 %s: %s", device, strerror(errno));
    } else if ((r = read_ext4_facts(fd, &fs)) < 0) {
        snprintf(msg, msg_cap, "%s: no ext4 superblock (%s)", device, strerror(-r));
    }
    close(fd);
    if (r < 0)
        return r;

    if (fs.unclean) {
        log_info("%s was not cleanly unmounted: e2fsck -p", device);
        char *argv[] = {"e2fsck", "-p", (char *)device, NULL};
        int st = container_run_tool("e2fsck", argv);
        /* 0: clean, 1: fixed, 2: fixed, reboot advised (for a mounted root; ours is not). */
        if (st < 0 || st > 2) {
            snprintf(msg, msg_cap, "e2fsck -p %s: exit status %d", device, st);
            return -EUCLEAN;
        }
    }

    if (mkdir(CONTAINER_ROOT, 0755) < 0 && errno != EEXIST) {
        int e = -errno;
        snprintf(msg, msg_cap, "mkdir %s: %s", CONTAINER_ROOT, strerror(errno));
        return e;
    }
    /* nodev: device nodes already on the disk (an imported image, a disk edited elsewhere)
     * would open the raw devices underneath; the container's /dev is a tmpfs of its own. */
    if (mount(device, CONTAINER_ROOT, "ext4", MS_NOATIME | MS_NODEV, "") < 0) {
        int e = -errno;
        snprintf(msg, msg_cap, "mount %s on %s: %s", device, CONTAINER_ROOT, strerror(errno));
        return e;
    }

    /* Grown online, at the first boot of a disk cloned from the small base image. */
    if (dev_bytes > fs.bytes + (1 << 20)) {
        log_info("growing %s from %llu to %llu bytes", device, (unsigned long long)fs.bytes,
                 (unsigned long long)dev_bytes);
        char *argv[] = {"resize2fs", (char *)device, NULL};
        int st = container_run_tool("resize2fs", argv);
        if (st != 0)
            log_error("resize2fs %s: exit status %d (the filesystem keeps its size)", device, st);
    }

    r = copy_env(ct, env);
    if (r < 0) {
        snprintf(msg, msg_cap, "out of memory");
        umount2(CONTAINER_ROOT, MNT_DETACH);
        return r;
    }
    r = start_container_init(ct, hostname, msg, msg_cap);
    if (r < 0) {
        umount2(CONTAINER_ROOT, MNT_DETACH);
        return r;
    }
    ct->attached = true;
    return 0;
}

/* ---- spawning in the container ---- */

/* The process itself, in the container's namespaces: never returns. */
static void spawn_exec(const struct spawn_spec *sp)
{
    /* Until execve replaces it, this is a copy of wisp-init (see dropped_caps). */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    reset_signals();
    if (setsid() < 0)
        _exit(126);
    if (sp->controlling_tty && ioctl(sp->stdin_fd, TIOCSCTTY, 0) < 0)
        _exit(126);
    if (dup2(sp->stdin_fd, 0) < 0 || dup2(sp->stdout_fd, 1) < 0 || dup2(sp->stderr_fd, 2) < 0)
        _exit(126);
    /* Nothing of wisp-init's survives the exec. */
    if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    const char *cwd = sp->cwd && sp->cwd[0] ? sp->cwd : "/";
    if (chdir(cwd) < 0) {
        dprintf(2, "wisp-init: chdir %s: %m\n", cwd);
        _exit(126);
    }
    if (drop_capabilities() < 0) {
        dprintf(2, "wisp-init: dropping capabilities: %m\n");
        _exit(126);
    }
    /* execvp looks PATH up in environ: the process's own environment. */
    environ = (char **)sp->envp;
    execvp(sp->argv[0], sp->argv);
    int e = errno;
    dprintf(2, "wisp-init: exec %s: %m\n", sp->argv[0]);
    _exit(e == ENOENT ? 127 : 126);
}

/* The helper's work: joins the container's namespaces, then forks the process as
 * wisp-init's child (CLONE_PARENT), which execs.  It runs in wisp-init's memory (CLONE_VM,
 * below), so it writes its result straight into h and touches nothing else of wisp-init's:
 * setns changes only the calling task's namespaces, and the process it forks gets a copy of
 * the memory as a fork would. */
struct spawn_helper {
    const struct container *ct;
    const struct spawn_spec *sp;
    int32_t result; /* the process's pid, or -errno */
};

static int spawn_helper_run(void *opaque)
{
    struct spawn_helper *h = opaque;
    int32_t result = 0;

    for (int i = 0; i < CONTAINER_NS_COUNT && result == 0; i++)
        if (setns(h->ct->ns_fds[i], 0) < 0)
            result = -errno;
    if (result == 0) {
        long pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, NULL, NULL, 0);
        if (pid == 0)
            spawn_exec(h->sp);
        result = pid < 0 ? -errno : (int32_t)pid;
    }
    h->result = result;
    return 0;
}

/* The helper's stack: wisp-init spawns one process at a time (one thread, and CLONE_VFORK
 * suspends it until the helper is gone), so one stack serves every spawn.  The forked process
 * runs spawn_exec on its own copy of it. */
static uint8_t spawn_helper_stack[64 * 1024] __attribute__((aligned(16)));

pid_t container_spawn(struct container *ct, const struct spawn_spec *sp)
{
    if (!ct->attached)
        return -ENODEV;
    if (ct->init_pid <= 0)
        return -ESRCH; /* the container init died, and its namespaces with it */
    /* A helper process, because setns(CLONE_NEWPID) changes only where the caller's children
     * go and wisp-init's own namespaces must stay.  Made with CLONE_VM | CLONE_VFORK rather than
     * a fork: it shares wisp-init's memory (no copy of its page tables) and wisp-init waits
     * until it has exited.  Under TCG a fork costs about 2 ms, a fifth of an exec's round trip
     * (docs/benchmarks.md, "exec round trip"). */
    struct spawn_helper h = {.ct = ct, .sp = sp, .result = -EIO};
    pid_t helper = clone(spawn_helper_run, spawn_helper_stack + sizeof spawn_helper_stack,
                         CLONE_VM | CLONE_VFORK | SIGCHLD, &h);
    if (helper < 0)
        return -errno;
    while (waitpid(helper, NULL, 0) < 0 && errno == EINTR)
        ;
    return h.result;
}

int container_open_pty(struct container *ct, int *master, int *slave)
{
    if (!ct->attached)
        return -ENODEV;
    /* Through the container init's root: the pty belongs to the container's devpts, so that
     * ttyname() and /dev/pts/N make sense inside. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/root/dev/pts/ptmx", (int)ct->init_pid);
    int m = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (m < 0)
        return -errno;
    int unlock = 0;
    if (ioctl(m, TIOCSPTLCK, &unlock) < 0) {
        int e = -errno;
        close(m);
        return e;
    }
    int s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) {
        int e = -errno;
        close(m);
        return e;
    }
    *master = m;
    *slave = s;
    return 0;
}

/* ---- freeze, stop ---- */

int container_freeze(struct container *ct, bool freeze)
{
    if (!ct->attached)
        return -ENODEV;
    if (ct->frozen == freeze)
        return 0;
    int fd = open(CONTAINER_ROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = ioctl(fd, freeze ? FIFREEZE : FITHAW, 0);
    int e = errno;
    close(fd);
    if (r < 0)
        return -e;
    ct->frozen = freeze;
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void container_stop(struct container *ct, int grace_ms)
{
    if (!ct->attached)
        return;
    if (ct->frozen)
        container_freeze(ct, false); /* a frozen filesystem would block the unmount's sync */
    if (ct->init_pid > 0) {
        /* The container init passes SIGTERM to everything in its namespace. */
        kill(ct->init_pid, SIGTERM);
        for (int waited = 0; waited < grace_ms && ct->init_pid > 0; waited += 50) {
            /* Processes in the container are wisp-init's children: reaped here so that the
             * container init sees them gone, not as zombies. */
            pid_t p;
            while ((p = waitpid(-1, NULL, WNOHANG)) > 0)
                if (p == ct->init_pid)
                    ct->init_pid = 0;
            if (ct->init_pid > 0)
                sleep_ms(50);
        }
        if (ct->init_pid > 0) {
            /* SIGKILL of a pid namespace's init kills the whole namespace. */
            kill(ct->init_pid, SIGKILL);
            waitpid(ct->init_pid, NULL, 0);
            ct->init_pid = 0;
        }
    }
    for (int i = 0; i < CONTAINER_NS_COUNT; i++) {
        if (ct->ns_fds[i] >= 0)
            close(ct->ns_fds[i]);
        ct->ns_fds[i] = -1;
    }
    sync();
    /* The namespace's copy of the mount goes when its last process is reaped, which the kernel
     * finishes asynchronously: retry a little before settling for read-only. */
    for (int i = 0; i < 40; i++) {
        if (umount2(CONTAINER_ROOT, 0) == 0) {
            log_info("%s unmounted", CONTAINER_ROOT);
            ct->attached = false;
            return;
        }
        if (errno != EBUSY)
            break;
        sleep_ms(50);
    }
    log_error("umount %s: %m; remounting read-only", CONTAINER_ROOT);
    if (mount(NULL, CONTAINER_ROOT, NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
        log_error("remount %s read-only: %m", CONTAINER_ROOT);
    ct->attached = false;
}

bool container_reaped(struct container *ct, pid_t pid, int status)
{
    if (pid != ct->init_pid || pid <= 0)
        return false;
    log_error("container init (pid %d) ended with status 0x%x: the container is gone", (int)pid,
              status);
    ct->init_pid = 0;
    return true;
}

/* ---- the container init itself ---- */

int container_init_main(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&set, &info);
        if (sig < 0)
            continue;
        if (sig == SIGTERM) {
            /* From PID 1 of the namespace, -1 reaches every other process in it. */
            kill(-1, SIGTERM);
            kill(-1, SIGCONT);
        }
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (sig == SIGTERM) {
            /* Most processes here are wisp-init's children (they were forked with
             * CLONE_PARENT), so waitpid can't tell when they are gone: kill(-1, 0) can.
             * Returning then ends the namespace. */
            for (;;) {
                if (kill(-1, 0) < 0 && errno == ESRCH)
                    return 0;
                struct timespec ts = {0, 50 * 1000000L};
                nanosleep(&ts, NULL);
                while (waitpid(-1, NULL, WNOHANG) > 0)
                    ;
            }
        }
    }
}
