/* proc.c: spawning and reaping (see proc.h). */
#include "proc.h"

#include <glib.h>

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROC_LOG "proc"

pid_t proc_spawn(const char *const *argv, const char *log_path, bool die_with_parent)
{
    pid_t parent = getpid();
    int out, null_in;
    pid_t pid;

    /* Everything the child needs is opened before fork: between fork and exec only
     * async-signal-safe calls are allowed in a threaded program. */
    null_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_in < 0)
        return -errno;
    out = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        log_error(PROC_LOG, "open %s: %s", log_path, strerror(e));
        close(null_in);
        return -e;
    }
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(null_in);
        close(out);
        return -e;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        if (die_with_parent) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(127);
        }
        if (dup2(null_in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(127);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    /* Also from the parent, so that a kill of the group right after spawn finds it. */
    setpgid(pid, pid);
    close(null_in);
    close(out);
    return pid;
}

int proc_wait(pid_t pid, int timeout_ms, int *status)
{
    struct timespec start, now;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pid_t r = waitpid(pid, status, timeout_ms < 0 ? 0 : WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR)
            return -errno;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed_ms =
            (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (timeout_ms >= 0 && elapsed_ms >= timeout_ms)
            return 0;
        /* No SIGCHLD handler to wake us (the library must not own signals): poll briefly. */
        struct timespec nap = {0, 5 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

int proc_kill_and_reap(pid_t pid)
{
    int status = 0, r;

    if (kill(-pid, SIGKILL) < 0 && errno != ESRCH)
        log_warn(PROC_LOG, "kill process group %d: %s", (int)pid, strerror(errno));
    kill(pid, SIGKILL); /* in case it left its group */
    r = proc_wait(pid, 10000, &status);
    if (r < 0)
        return r;
    if (r == 0) {
        log_error(PROC_LOG, "process %d survived SIGKILL for 10 s", (int)pid);
        return -ETIMEDOUT;
    }
    return status;
}

const char *proc_status_to_string(int status)
{
    static __thread char buf[64];

    if (WIFEXITED(status))
        snprintf(buf, sizeof buf, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, sizeof buf, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, sizeof buf, "wait status 0x%x", status);
    return buf;
}

/* Whether arg names path (proc_cmdline_names_path's rule). */
static bool proc_arg_names_path(const char *arg, const char *path)
{
    size_t n = strlen(path);
    for (const char *p = strstr(arg, path); p; p = strstr(p + 1, path)) {
        bool starts = p == arg || p[-1] == '=' || p[-1] == ',';
        bool ends = p[n] == '\0' || p[n] == '/' || p[n] == ',';
        if (starts && ends)
            return true;
    }
    return false;
}

bool proc_cmdline_names_path(pid_t pid, const char *path)
{
    char file[64];
    char *text = NULL;
    gsize len = 0;
    bool found = false;

    if (!path || !*path)
        return false;
    snprintf(file, sizeof file, "/proc/%d/cmdline", (int)pid);
    if (!g_file_get_contents(file, &text, &len, NULL))
        return false;
    /* The arguments are NUL-terminated, one after the other. */
    for (gsize at = 0; !found && at < len; at += strlen(text + at) + 1)
        found = proc_arg_names_path(text + at, path);
    g_free(text);
    return found;
}
