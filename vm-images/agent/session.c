/* session.c: exec sessions (see session.h). */
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"
#include "env.h"
#include "log.h"

static struct session *session_find(struct agent *a, uint32_t stream)
{
    for (struct session *s = a->sessions; s != NULL; s = s->next)
        if (s->stream == stream)
            return s;
    return NULL;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void session_free(struct session *s)
{
    close_fd(&s->in_fd);
    close_fd(&s->out_fd);
    close_fd(&s->err_fd);
    ring_free(&s->out);
    ring_free(&s->err);
    ring_free(&s->in);
    free(s);
}

static void session_unlink(struct agent *a, struct session *s)
{
    for (struct session **p = &a->sessions; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            a->session_count--;
            return;
        }
    }
}

/* The session that the request names, or an error reply and NULL. */
static struct session *session_for(struct agent *a, const struct wisp_msg *m)
{
    struct session *s = session_find(a, m->stream);
    if (s == NULL)
        channel_send_error(&a->chan, m->stream, WISP_E_NOT_FOUND, 0, "no session %u", m->stream);
    return s;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/* The child's three descriptors and the session's ends of them. */
struct session_fds {
    int child_in, child_out, child_err;
};

static int session_open_fds(struct agent *a, struct session *s, const struct wisp_msg *m,
                            struct session_fds *cf)
{
    cf->child_in = cf->child_out = cf->child_err = -1;
    if (s->tty) {
        int master, slave;
        int r = container_open_pty(&a->ct, &master, &slave);
        if (r < 0)
            return r;
        if (m->u.exec.rows > 0 && m->u.exec.cols > 0) {
            struct winsize ws = {.ws_row = m->u.exec.rows, .ws_col = m->u.exec.cols};
            if (ioctl(master, TIOCSWINSZ, &ws) < 0)
                log_warn("TIOCSWINSZ: %m");
        }
        s->out_fd = master;
        s->in_fd = fcntl(master, F_DUPFD_CLOEXEC, 0);
        cf->child_in = cf->child_out = cf->child_err = slave;
        return s->in_fd < 0 ? -errno : 0;
    }
    int out[2], err[2], in[2] = {-1, -1};
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    s->out_fd = out[0];
    cf->child_out = out[1];
    if (pipe2(err, O_CLOEXEC) < 0)
        return -errno;
    s->err_fd = err[0];
    cf->child_err = err[1];
    if (m->u.exec.flags & WISP_EXEC_STDIN) {
        if (pipe2(in, O_CLOEXEC) < 0)
            return -errno;
        s->in_fd = in[1];
        cf->child_in = in[0];
        if (set_nonblock(s->in_fd) < 0)
            return -errno;
    } else {
        cf->child_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (cf->child_in < 0)
            return -errno;
    }
    if (set_nonblock(s->out_fd) < 0 || set_nonblock(s->err_fd) < 0)
        return -errno;
    return 0;
}

static void close_child_fds(struct session_fds *cf)
{
    /* With a pty, the three are the same slave. */
    if (cf->child_err >= 0 && cf->child_err != cf->child_out)
        close(cf->child_err);
    if (cf->child_in >= 0 && cf->child_in != cf->child_out)
        close(cf->child_in);
    if (cf->child_out >= 0)
        close(cf->child_out);
}

void session_exec(struct agent *a, const struct wisp_msg *m)
{
    if (!a->ct.attached) {
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0, "exec before attach");
        return;
    }
    if (session_find(a, m->stream) != NULL) {
        channel_send_error(&a->chan, m->stream, WISP_E_EXISTS, 0, "stream %u is a live session",
                           m->stream);
        return;
    }
    if (a->session_count >= SESSION_MAX) {
        channel_send_error(&a->chan, m->stream, WISP_E_BUSY, 0, "%d sessions", SESSION_MAX);
        return;
    }
    struct session *s = calloc(1, sizeof *s);
    if (s == NULL) {
        channel_send_error(&a->chan, m->stream, WISP_E_NOMEM, ENOMEM, "session");
        return;
    }
    s->stream = m->stream;
    s->tty = (m->u.exec.flags & WISP_EXEC_TTY) != 0;
    s->in_fd = s->out_fd = s->err_fd = -1;
    bool has_stdin = s->tty || (m->u.exec.flags & WISP_EXEC_STDIN);
    int r = ring_init(&s->out, SESSION_OUT_RING);
    if (r == 0 && !s->tty)
        r = ring_init(&s->err, SESSION_OUT_RING);
    if (r == 0 && has_stdin)
        r = ring_init(&s->in, SESSION_STDIN_WINDOW);
    if (r < 0) {
        channel_send_error(&a->chan, m->stream, WISP_E_NOMEM, ENOMEM, "session buffers");
        session_free(s);
        return;
    }

    struct session_fds cf;
    r = session_open_fds(a, s, m, &cf);
    char **envp = NULL;
    if (r == 0) {
        envp = env_compose(a->ct.env, a->ct.env_count, &m->u.exec.env, s->tty);
        if (envp == NULL)
            r = -ENOMEM;
    }
    if (r == 0) {
        struct spawn_spec spec = {
            .argv = m->u.exec.argv.v,
            .envp = envp,
            .cwd = m->u.exec.cwd,
            .stdin_fd = cf.child_in,
            .stdout_fd = cf.child_out,
            .stderr_fd = cf.child_err,
            .controlling_tty = s->tty,
        };
        pid_t pid = container_spawn(&a->ct, &spec);
        if (pid < 0)
            r = pid;
        else
            s->pid = pid;
    }
    env_free(envp);
    close_child_fds(&cf);
    if (r < 0) {
        errno = -r;
        channel_send_error(&a->chan, m->stream, WISP_E_SYSTEM, -r, "exec %s: %m",
                           m->u.exec.argv.v[0]);
        session_free(s);
        return;
    }

    s->credit = m->u.exec.window ? m->u.exec.window : SESSION_DEFAULT_WINDOW;
    s->stdin_credit = has_stdin ? SESSION_STDIN_WINDOW : 0;
    s->adopted = true;
    s->next = a->sessions;
    a->sessions = s;
    a->session_count++;
    agent_touch(a);
    log_debug("session %u: pid %d %s", s->stream, (int)s->pid, m->u.exec.argv.v[0]);

    struct wisp_msg started = {.type = WISP_MSG_STARTED, .stream = s->stream};
    started.u.started.pid = (uint32_t)s->pid;
    started.u.started.stdin_window = (uint32_t)s->stdin_credit;
    channel_send(&a->chan, &started);
}

void session_stdin(struct agent *a, const struct wisp_msg *m)
{
    struct session *s = session_for(a, m);
    if (s == NULL)
        return;
    uint32_t len = m->u.data.len;
    if (len > s->stdin_credit) {
        channel_send_error(&a->chan, m->stream, WISP_E_NO_CREDIT, 0,
                           "%u stdin bytes with %llu of credit", len,
                           (unsigned long long)s->stdin_credit);
        return;
    }
    s->stdin_credit -= len;
    agent_touch(a);
    if (s->in_fd < 0 || s->stdin_dead || s->stdin_close_pending) {
        /* Nobody reads it any more: credited back at once, so the host is never stuck. */
        s->stdin_unacked += len;
        return;
    }
    size_t put = ring_put(&s->in, m->u.data.data, len);
    if (put != len) /* can't happen: the ring holds the whole window */
        log_error("session %u: stdin ring overflow", s->stream);
}

void session_stdin_close(struct agent *a, const struct wisp_msg *m)
{
    struct session *s = session_for(a, m);
    if (s != NULL)
        s->stdin_close_pending = true;
}

void session_window(struct agent *a, const struct wisp_msg *m)
{
    struct session *s = session_for(a, m);
    if (s == NULL)
        return;
    if (!s->adopted) {
        /* A new connection takes the session over: fresh credits both ways. */
        s->adopted = true;
        s->orphaned_at_ms = 0;
        s->credit = m->u.window.increment;
        s->stdin_unacked = 0;
        s->stdin_credit = 0;
        if (s->in.buf != NULL && s->in_fd >= 0 && !s->stdin_close_pending)
            s->stdin_unacked = ring_space(&s->in); /* sent as WINDOW by sessions_progress */
        log_info("session %u adopted by the new connection", s->stream);
        return;
    }
    s->credit += m->u.window.increment;
}

void session_signal(struct agent *a, const struct wisp_msg *m)
{
    struct session *s = session_for(a, m);
    if (s == NULL)
        return;
    if (s->reaped) {
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0, "the process has exited");
        return;
    }
    /* The process leads its own process group (setsid): the group gets the signal, so that a
     * pipeline or a shell's children go too. */
    int signo = (int)m->u.signal.signo;
    if (kill(-s->pid, signo) < 0 && kill(s->pid, signo) < 0) {
        channel_send_error(&a->chan, m->stream, WISP_E_SYSTEM, errno, "kill %d: %m", (int)s->pid);
        return;
    }
    channel_send_ok(&a->chan, m->stream);
}

void session_resize(struct agent *a, const struct wisp_msg *m)
{
    struct session *s = session_for(a, m);
    if (s == NULL)
        return;
    if (!s->tty || s->out_fd < 0) {
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0, "no pty");
        return;
    }
    struct winsize ws = {.ws_row = m->u.resize.rows, .ws_col = m->u.resize.cols};
    if (ioctl(s->out_fd, TIOCSWINSZ, &ws) < 0) {
        channel_send_error(&a->chan, m->stream, WISP_E_SYSTEM, errno, "TIOCSWINSZ: %m");
        return;
    }
    channel_send_ok(&a->chan, m->stream);
}

/* ---- moving bytes ---- */

size_t sessions_poll_fill(struct agent *a, struct pollfd *fds, size_t max)
{
    size_t n = 0;
    for (struct session *s = a->sessions; s != NULL && n + 3 <= max; s = s->next) {
        if (s->out_fd >= 0 && ring_space(&s->out) > 0)
            fds[n++] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
        if (s->err_fd >= 0 && ring_space(&s->err) > 0)
            fds[n++] = (struct pollfd){.fd = s->err_fd, .events = POLLIN};
        if (s->in_fd >= 0 && s->in.len > 0)
            fds[n++] = (struct pollfd){.fd = s->in_fd, .events = POLLOUT};
    }
    return n;
}

/* One read from a child's output into its ring.  EOF, a pty's EIO (no slave left), or an empty
 * pipe once the process has exited all close the descriptor. */
static void session_read(struct agent *a, struct session *s, int *fd, struct ring *r)
{
    ssize_t n = ring_fill_from_fd(r, *fd);
    if (n > 0) {
        agent_touch(a);
        return;
    }
    if (n < 0 && errno == ENOBUFS)
        return;
    if (n < 0 && (errno == EAGAIN || errno == EINTR) && !s->reaped)
        return;
    if (n < 0 && errno != EAGAIN && errno != EIO)
        log_warn("session %u: read: %m", s->stream);
    if (s->tty && fd == &s->out_fd)
        close_fd(&s->in_fd); /* the pty is gone both ways */
    close_fd(fd);
}

static void session_write_stdin(struct session *s)
{
    ssize_t n = ring_drain_to_fd(&s->in, s->in_fd);
    if (n > 0) {
        s->stdin_unacked += (uint64_t)n;
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    /* EPIPE: the child closed its stdin.  What is buffered will never be read. */
    s->stdin_unacked += s->in.len;
    s->in.len = 0;
    s->in.head = 0;
    s->stdin_dead = true;
    if (!s->tty)
        close_fd(&s->in_fd);
}

void sessions_service(struct agent *a, const struct pollfd *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i].revents == 0)
            continue;
        for (struct session *s = a->sessions; s != NULL; s = s->next) {
            if (fds[i].fd == s->out_fd && s->out_fd >= 0) {
                session_read(a, s, &s->out_fd, &s->out);
                break;
            }
            if (fds[i].fd == s->err_fd && s->err_fd >= 0) {
                session_read(a, s, &s->err_fd, &s->err);
                break;
            }
            if (fds[i].fd == s->in_fd && s->in_fd >= 0) {
                session_write_stdin(s);
                break;
            }
        }
    }
}

static void session_send_exit(struct agent *a, struct session *s)
{
    struct wisp_msg m = {.type = WISP_MSG_EXIT, .stream = s->stream};
    if (WIFSIGNALED(s->wstatus)) {
        m.u.exit.kind = WISP_EXIT_SIGNAL;
        m.u.exit.code = (uint32_t)WTERMSIG(s->wstatus);
        m.u.exit.core_dumped = WCOREDUMP(s->wstatus) ? 1 : 0;
    } else {
        m.u.exit.kind = WISP_EXIT_CODE;
        m.u.exit.code = (uint32_t)WEXITSTATUS(s->wstatus);
    }
    if (channel_send(&a->chan, &m) == 0) {
        log_debug("session %u: exit %s %u", s->stream, m.u.exit.kind ? "signal" : "code",
                  m.u.exit.code);
        session_unlink(a, s);
        session_free(s);
    }
}

/* Everything of the session was sent: only its EXIT is left. */
static bool session_done(const struct agent *a, const struct session *s)
{
    return s->reaped && s->out_fd < 0 && s->err_fd < 0 && s->out.len == 0 && s->err.len == 0 &&
           s->adopted && a->chan.connected;
}

int sessions_tick(const struct agent *a, uint64_t now)
{
    int timeout = -1;
    for (const struct session *s = a->sessions; s != NULL; s = s->next) {
        if (!s->reaped || s->adopted || s->orphaned_at_ms == 0)
            continue;
        uint64_t since = s->reaped_at_ms > s->orphaned_at_ms ? s->reaped_at_ms : s->orphaned_at_ms;
        uint64_t due = since + SESSION_ORPHAN_KEEP_MS;
        int left = due > now ? (int)(due - now) : 0;
        if (timeout < 0 || left < timeout)
            timeout = left;
    }
    return timeout;
}

bool sessions_exit_ready(const struct agent *a)
{
    for (const struct session *s = a->sessions; s != NULL; s = s->next)
        if (session_done(a, s))
            return true;
    return false;
}

void sessions_progress(struct agent *a)
{
    struct session *next;
    for (struct session *s = a->sessions; s != NULL; s = next) {
        next = s->next;
        if (s->reaped) {
            /* Drain what the process left in its pipes; an empty pipe now means done. */
            if (s->out_fd >= 0 && ring_space(&s->out) > 0)
                session_read(a, s, &s->out_fd, &s->out);
            if (s->err_fd >= 0 && ring_space(&s->err) > 0)
                session_read(a, s, &s->err_fd, &s->err);
            if (s->in_fd >= 0 && !s->tty) {
                s->stdin_unacked += s->in.len;
                s->in.len = 0;
                close_fd(&s->in_fd);
            }
        }
        if (s->stdin_close_pending && s->in.len == 0 && s->in_fd >= 0) {
            if (s->tty) {
                /* A pty has no half-close: ^D is end-of-file to a reader in canonical mode. */
                if (write(s->in_fd, "\x04", 1) < 0 && errno != EAGAIN)
                    log_warn("session %u: write ^D: %m", s->stream);
            } else {
                close_fd(&s->in_fd);
            }
            s->stdin_close_pending = false;
            s->stdin_dead = true;
        }
        if (s->adopted && a->chan.connected && s->stdin_unacked > 0 &&
            (s->stdin_unacked >= SESSION_WINDOW_BATCH || s->in.len == 0)) {
            struct wisp_msg w = {.type = WISP_MSG_WINDOW, .stream = s->stream};
            w.u.window.increment = (uint32_t)s->stdin_unacked;
            if (channel_send(&a->chan, &w) == 0) {
                s->stdin_credit += s->stdin_unacked;
                s->stdin_unacked = 0;
            }
        }
        if (session_done(a, s)) {
            session_send_exit(a, s);
        } else if (s->reaped && !s->adopted && s->orphaned_at_ms > 0) {
            uint64_t since =
                s->reaped_at_ms > s->orphaned_at_ms ? s->reaped_at_ms : s->orphaned_at_ms;
            if (agent_now_ms() - since >= SESSION_ORPHAN_KEEP_MS) {
                log_info("session %u: finished with no host to adopt it for %d s: freed", s->stream,
                         SESSION_ORPHAN_KEEP_MS / 1000);
                session_unlink(a, s);
                session_free(s);
            }
        }
    }
}

size_t sessions_fill(struct agent *a, uint8_t *buf, size_t cap)
{
    if (a->session_count == 0 || cap <= WISP_PROTO_HEADER_SIZE)
        return 0;
    /* Round robin: start after the session served last time. */
    unsigned count = a->session_count;
    for (unsigned i = 0; i < count; i++) {
        unsigned idx = (a->fill_cursor + 1 + i) % count;
        struct session *s = a->sessions;
        for (unsigned k = 0; k < idx && s != NULL; k++)
            s = s->next;
        if (s == NULL || !s->adopted || s->credit == 0)
            continue;
        struct ring *r = s->out.len > 0 ? &s->out : &s->err;
        if (r->buf == NULL || r->len == 0)
            continue;
        size_t n = r->len;
        if (n > s->credit)
            n = (size_t)s->credit;
        if (n > cap - WISP_PROTO_HEADER_SIZE)
            n = cap - WISP_PROTO_HEADER_SIZE;
        if (n > WISP_PROTO_MAX_PAYLOAD)
            n = WISP_PROTO_MAX_PAYLOAD;
        n = ring_take(r, buf + WISP_PROTO_HEADER_SIZE, n);
        wisp_header_encode(buf, r == &s->out ? WISP_MSG_STDOUT : WISP_MSG_STDERR, s->stream,
                           (uint32_t)n);
        s->credit -= n;
        a->fill_cursor = idx;
        return WISP_PROTO_HEADER_SIZE + n;
    }
    return 0;
}

bool sessions_reaped(struct agent *a, pid_t pid, int status)
{
    for (struct session *s = a->sessions; s != NULL; s = s->next) {
        if (s->pid == pid && !s->reaped) {
            s->reaped = true;
            s->reaped_at_ms = agent_now_ms();
            s->wstatus = status;
            return true;
        }
    }
    return false;
}

void sessions_disconnected(struct agent *a)
{
    uint64_t now = agent_now_ms();
    for (struct session *s = a->sessions; s != NULL; s = s->next) {
        if (s->adopted)
            s->orphaned_at_ms = now;
        s->adopted = false;
        s->credit = 0;
        s->stdin_credit = 0;
        s->stdin_unacked = 0;
    }
}
