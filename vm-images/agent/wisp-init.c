/* wisp-init: PID 1 of every sprite.  Mounts the pseudo filesystems, loads the initramfs's
 * modules, opens the virtio-serial port wisp.ctl and serves the control protocol
 * (docs/protocol.md) from one poll loop: the channel, the exec sessions' pipes, the services'
 * output, SIGCHLD through a signalfd, and timers (host reconnect probes, service restarts).
 *
 * Executed as "container-init" it is instead PID 1 of the inner container (container.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "boot.h"
#include "log.h"
#include "service.h"
#include "session.h"

#define PORT_NAME    "wisp.ctl"
#define MODULES_DIR  "/lib/modules"
#define MAX_POLL_FDS (2 + 3 * SESSION_MAX + SERVICE_MAX)

uint64_t agent_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void agent_touch(struct agent *a)
{
    a->last_activity_ms = agent_now_ms();
}

static void on_frame(void *opaque, const struct wisp_frame *f)
{
    agent_handle_frame(opaque, f);
}

/* Open descriptors of wisp-init, logged at each disconnect: a leak shows as a climbing count. */
static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

static void on_link(void *opaque, bool connected)
{
    struct agent *a = opaque;
    if (connected) {
        agent_send_ready(a, 0);
        return;
    }
    sessions_disconnected(a);
    log_info("%u session(s), %u service(s), %d open descriptors", a->session_count,
             a->service_count, count_open_fds());
}

static size_t on_fill(void *opaque, uint8_t *buf, size_t cap)
{
    return sessions_fill(opaque, buf, cap);
}

static const struct channel_ops channel_ops = {
    .frame = on_frame,
    .link = on_link,
    .fill = on_fill,
};

static bool cmdline_has(const char *word)
{
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    for (char *tok = strtok(buf, " \n"); tok != NULL; tok = strtok(NULL, " \n"))
        if (strcmp(tok, word) == 0)
            return true;
    return false;
}

static void reap_children(struct agent *a)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        uint64_t now = agent_now_ms();
        if (!sessions_reaped(a, pid, status) && !services_reaped(a, pid, status, now))
            container_reaped(&a->ct, pid, status);
    }
}

static void power_off(struct agent *a)
{
    if (getpid() != 1) {
        /* wisp-init --serve-fd, in a test on some host: that host stays up. */
        log_info("shutdown: not PID 1, exiting instead of powering off");
        _exit(0);
    }
    log_info("powering off");
    services_shutdown(a);
    container_stop(&a->ct, 3000);
    sync();
    reboot(RB_POWER_OFF);
    log_error("reboot(RB_POWER_OFF): %m");
    for (;;)
        pause();
}

/* Waits for the port's device: the modules were just loaded and udev does not exist here. */
static void open_channel(struct agent *a)
{
    char path[64];
    for (unsigned attempt = 0;; attempt++) {
        if (channel_find_port(PORT_NAME, path, sizeof path) == 0 &&
            channel_open(&a->chan, path, &channel_ops, a) == 0)
            break;
        if (attempt % 250 == 0)
            log_error("waiting for the virtio-serial port %s", PORT_NAME);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    a->chan.retry_at_ms = 0; /* probe for a host at once */
    log_info("control channel %s open at %llu ms", path, (unsigned long long)agent_now_ms());
}

static int setup_signals(void)
{
    /* SIGCHLD arrives through the signalfd; the others would kill nothing (PID 1) but are
     * blocked so that they do not interrupt system calls. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -errno;
    signal(SIGPIPE, SIG_IGN); /* a closed stdin pipe is EPIPE, not death */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static int min_timeout(int a, int b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

static void serve(struct agent *a, int sigfd)
{
    static struct pollfd fds[MAX_POLL_FDS];
    for (;;) {
        uint64_t now = agent_now_ms();
        if (a->shutdown_at_ms && now >= a->shutdown_at_ms)
            power_off(a);
        int timeout = channel_tick(&a->chan, now);
        timeout = min_timeout(timeout, services_tick(a, now));
        timeout = min_timeout(timeout, sessions_tick(a, now));
        if (a->shutdown_at_ms)
            timeout = min_timeout(timeout, (int)(a->shutdown_at_ms - now));
        /* And when even that round left a session ready to end (the second pump emptied
         * another ring), poll only looks and the next round ends it. */
        if (sessions_exit_ready(a))
            timeout = 0;

        size_t n = 0;
        fds[n++] = (struct pollfd){.fd = sigfd, .events = POLLIN};
        short ev = channel_poll_events(&a->chan);
        fds[n++] = (struct pollfd){.fd = ev ? a->chan.fd : -1, .events = ev};
        size_t sessions_at = n;
        n += sessions_poll_fill(a, fds + n, MAX_POLL_FDS - n);
        size_t services_at = n;
        n += services_poll_fill(a, fds + n, MAX_POLL_FDS - n);

        int r = poll(fds, n, timeout);
        if (r < 0 && errno != EINTR) {
            log_error("poll: %m");
            continue;
        }
        now = agent_now_ms();
        if (r > 0 && fds[0].revents) {
            struct signalfd_siginfo si;
            while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si)
                ;
        }
        reap_children(a);
        if (r > 0 && fds[1].revents)
            channel_service(&a->chan, fds[1].revents, now);
        if (r > 0) {
            sessions_service(a, fds + sessions_at, services_at - sessions_at);
            services_service(a, fds + services_at, n - services_at);
        }
        sessions_progress(a);
        channel_pump(&a->chan, now);
        /* The pump may just have emptied the ring of a reaped session whose pipes are closed:
         * nothing would wake poll() again for it, and its EXIT would wait for the next
         * unrelated event (two execs ending together left the second one hanging).  One more
         * round sends that EXIT now. */
        sessions_progress(a);
        channel_pump(&a->chan, now);
    }
}

/* wisp-init --serve-fd FD: the protocol on an inherited descriptor, with no boot steps, no
 * /dev/kmsg and no power-off, so that tests on any host can drive the real dispatch (ATTACH
 * then fails: there is no disk, and no PID 1 power to set one up). */
static int serve_fd_main(struct agent *a, const char *fd_text)
{
    char *end;
    long fd = strtol(fd_text, &end, 10);
    if (*end != '\0' || fd < 0 || fd > 65535) {
        fprintf(stderr, "wisp-init: --serve-fd needs a descriptor number\n");
        return 2;
    }
    a->serve_fd_mode = true;
    log_open(getenv("WISP_INIT_DEBUG") != NULL, false);
    if (getrandom(&a->boot_id, sizeof a->boot_id, 0) != (ssize_t)sizeof a->boot_id)
        a->boot_id = agent_now_ms();
    container_init(&a->ct);
    int sigfd = setup_signals();
    if (sigfd < 0) {
        errno = -sigfd;
        log_error("signals: %m");
        return 1;
    }
    agent_touch(a);
    if (channel_open_fd(&a->chan, (int)fd, "test descriptor", &channel_ops, a) < 0)
        return 1;
    serve(a, sigfd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], CONTAINER_INIT_NAME) == 0)
        return container_init_main();

    static struct agent agent;
    struct agent *a = &agent;
    if (argc == 3 && strcmp(argv[1], "--serve-fd") == 0)
        return serve_fd_main(a, argv[2]);
    if (getpid() != 1) {
        fprintf(stderr,
                "wisp-init is the guest's PID 1 (pid %d here); for tests: "
                "wisp-init --serve-fd FD\n",
                (int)getpid());
        return 2;
    }
    log_open(0, true);
    boot_mount_basics();
    log_open(cmdline_has("wisp.debug"), true);
    boot_tune_kernel();
    log_info("%s starting at %llu ms", AGENT_NAME, (unsigned long long)agent_now_ms());
    int failed = boot_load_modules(MODULES_DIR);
    if (failed > 0)
        log_warn("%d module(s) failed to load", failed);
    if (getrandom(&a->boot_id, sizeof a->boot_id, 0) != (ssize_t)sizeof a->boot_id)
        a->boot_id = agent_now_ms() ^ ((uint64_t)getpid() << 32);
    if (container_init(&a->ct) < 0)
        log_error("the container can't be started without wisp-init's own binary");
    int sigfd = setup_signals();
    if (sigfd < 0) {
        errno = -sigfd;
        log_error("signals: %m");
    }
    agent_touch(a);
    open_channel(a);
    serve(a, sigfd);
    return 0;
}
