/* service.c: see service.h. */
#include "service.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "env.h"
#include "log.h"
#include "ring.h"
#include "sprite_files.h"

struct service {
    struct service *next;
    char *name;
    char **argv; /* NULL-terminated, owned */
    char **env;  /* the request's env, NULL-terminated, owned */
    uint32_t env_count;
    char *cwd;
    uint32_t restart, delay_ms;
    uint8_t state; /* enum wisp_service_state */
    pid_t pid;
    uint32_t restarts;
    uint8_t last_kind;
    uint32_t last_code;
    bool stopping;
    uint64_t restart_at_ms, kill_at_ms;
    int out_fd;
    struct ring log;
    int log_fd;
    off_t log_size;
};

static struct service *service_find(struct agent *a, const char *name)
{
    for (struct service *s = a->services; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void strv_free(char **v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

static char **strv_copy(const struct wisp_strv *src)
{
    char **v = calloc((size_t)src->count + 1, sizeof(char *));
    if (v == NULL)
        return NULL;
    for (uint32_t i = 0; i < src->count; i++) {
        v[i] = strdup(src->v[i]);
        if (v[i] == NULL) {
            strv_free(v);
            return NULL;
        }
    }
    return v;
}

static void service_clear_definition(struct service *s)
{
    strv_free(s->argv);
    strv_free(s->env);
    free(s->cwd);
    s->argv = s->env = NULL;
    s->cwd = NULL;
}

#define SERVICE_LOG_DIR  "var/log/wisp"          /* under the sprite's root */
#define SERVICE_DECL_DIR "var/lib/wisp/services" /* under the sprite's root */

/* Opens (or rotates and reopens) the log file on the sprite's disk, through sprite_files.h:
 * the container may have put a symlink or a FIFO there. */
static void service_open_log(struct service *s)
{
    char name[300];
    snprintf(name, sizeof name, "%s.log", s->name);
    if (s->log_fd >= 0)
        close(s->log_fd);
    s->log_fd = -1;
    int dir = sprite_dir_open(SERVICE_LOG_DIR, true);
    int fd = dir < 0 ? dir : sprite_file_open(dir, name, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (dir >= 0)
        close(dir);
    if (fd < 0) {
        log_warn("service %s: open " SERVICE_LOG_DIR "/%s: %s (the ring buffer still keeps its "
                 "output)",
                 s->name, name, strerror(-fd));
        return;
    }
    s->log_fd = fd;
    struct stat st;
    s->log_size = fstat(s->log_fd, &st) == 0 ? st.st_size : 0;
}

static void service_rotate_log(struct service *s)
{
    char name[300], old[310];
    snprintf(name, sizeof name, "%s.log", s->name);
    snprintf(old, sizeof old, "%s.1", name);
    int dir = sprite_dir_open(SERVICE_LOG_DIR, false);
    if (dir < 0 || renameat(dir, name, dir, old) < 0)
        log_warn("service %s: rotate " SERVICE_LOG_DIR "/%s: %s", s->name, name,
                 strerror(dir < 0 ? -dir : errno));
    if (dir >= 0)
        close(dir);
    service_open_log(s);
}

static int service_spawn(struct agent *a, struct service *s)
{
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) {
        int e = -errno;
        close(out[0]);
        close(out[1]);
        return e;
    }
    struct wisp_strv req = {s->env_count, s->env};
    char **envp = env_compose(a->ct.env, a->ct.env_count, &req, false);
    pid_t pid = -ENOMEM;
    if (envp != NULL) {
        struct spawn_spec spec = {
            .argv = s->argv,
            .envp = envp,
            .cwd = s->cwd,
            .stdin_fd = null_fd,
            .stdout_fd = out[1],
            .stderr_fd = out[1],
        };
        pid = container_spawn(&a->ct, &spec);
    }
    env_free(envp);
    close(null_fd);
    close(out[1]);
    if (pid < 0) {
        close(out[0]);
        return pid;
    }
    if (fcntl(out[0], F_SETFL, O_NONBLOCK) < 0)
        log_warn("service %s: O_NONBLOCK: %m", s->name);
    if (s->out_fd >= 0)
        close(s->out_fd); /* a previous run's descendants lose their output */
    s->out_fd = out[0];
    s->pid = pid;
    s->state = WISP_SERVICE_RUNNING;
    s->stopping = false;
    log_info("service %s: started, pid %d", s->name, (int)pid);
    return 0;
}

/* Declares (or redeclares) and starts a service.  0, or a negative enum wisp_err with *sys_errno
 * and msg saying why. */
static int service_declare(struct agent *a, const struct wisp_msg *m, int *sys_errno, char *msg,
                           size_t msg_cap)
{
    const char *name = m->u.service_start.name;
    *sys_errno = 0;
    if (!a->ct.attached) {
        snprintf(msg, msg_cap, "service before attach");
        return -WISP_E_BAD_STATE;
    }
    struct service *s = service_find(a, name);
    if (s != NULL && (s->state == WISP_SERVICE_RUNNING || s->pid > 0)) {
        snprintf(msg, msg_cap, "service %s is running", name);
        return -WISP_E_EXISTS;
    }
    bool fresh = s == NULL;
    if (fresh) {
        if (a->service_count >= SERVICE_MAX) {
            snprintf(msg, msg_cap, "%d services", SERVICE_MAX);
            return -WISP_E_BUSY;
        }
        s = calloc(1, sizeof *s);
        if (s == NULL || (s->name = strdup(name)) == NULL || ring_init(&s->log, SERVICE_RING) < 0) {
            if (s != NULL)
                free(s->name);
            free(s);
            *sys_errno = ENOMEM;
            snprintf(msg, msg_cap, "service %s: out of memory", name);
            return -WISP_E_NOMEM;
        }
        s->out_fd = s->log_fd = -1;
        s->next = a->services;
        a->services = s;
        a->service_count++;
    }
    service_clear_definition(s);
    s->argv = strv_copy(&m->u.service_start.argv);
    s->env = strv_copy(&m->u.service_start.env);
    s->env_count = m->u.service_start.env.count;
    s->cwd = strdup(m->u.service_start.cwd ? m->u.service_start.cwd : "");
    s->restart = m->u.service_start.restart;
    s->delay_ms = m->u.service_start.restart_delay_ms ? m->u.service_start.restart_delay_ms : 1000;
    s->restarts = 0;
    if (s->argv == NULL || s->env == NULL || s->cwd == NULL) {
        s->state = WISP_SERVICE_FAILED;
        *sys_errno = ENOMEM;
        snprintf(msg, msg_cap, "service %s: out of memory", name);
        return -WISP_E_NOMEM;
    }
    if (s->log_fd < 0)
        service_open_log(s);
    int r = service_spawn(a, s);
    if (r < 0) {
        s->state = WISP_SERVICE_FAILED;
        *sys_errno = -r;
        snprintf(msg, msg_cap, "start %s: %s", name, strerror(-r));
        return -WISP_E_SYSTEM;
    }
    return 0;
}

/* Declarations live on the sprite's disk, as the SERVICE_START frame that made them, so that
 * the next ATTACH (after a reboot or a wake) starts them again. */
static void service_decl_name(const char *name, char *out, size_t cap, const char *suffix)
{
    snprintf(out, cap, "%s.svc%s", name, suffix);
}

static int service_persist(const struct wisp_msg *m)
{
    static uint8_t frame[WISP_PROTO_MAX_FRAME];
    int n = wisp_msg_encode(m, frame, sizeof frame);
    if (n < 0)
        return -EINVAL;
    int dir = sprite_dir_open(SERVICE_DECL_DIR, true);
    if (dir < 0)
        return dir;
    char tmp[300], name[300];
    service_decl_name(m->u.service_start.name, tmp, sizeof tmp, ".tmp");
    service_decl_name(m->u.service_start.name, name, sizeof name, "");
    int fd = sprite_file_open(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int r = fd < 0 ? fd : 0;
    if (fd >= 0) {
        if (write(fd, frame, (size_t)n) != n || fsync(fd) < 0)
            r = errno ? -errno : -EIO;
        close(fd);
        if (r == 0 && renameat(dir, tmp, dir, name) < 0)
            r = -errno;
        if (r < 0)
            unlinkat(dir, tmp, 0);
    }
    close(dir);
    return r;
}

void service_start(struct agent *a, const struct wisp_msg *m)
{
    char msg[256];
    int sys_errno;
    if (a->ct.frozen) {
        /* Its log and its declaration are files on the frozen filesystem. */
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0,
                           "the sprite's filesystem is frozen: thaw it first");
        return;
    }
    int r = service_declare(a, m, &sys_errno, msg, sizeof msg);
    if (r < 0) {
        channel_send_error(&a->chan, m->stream, r, sys_errno, "%s", msg);
        return;
    }
    r = service_persist(m);
    if (r < 0) {
        errno = -r;
        log_warn("service %s: declaration not saved (%m): it will not start at the next attach",
                 m->u.service_start.name);
    }
    channel_send_ok(&a->chan, m->stream);
}

void services_restore(struct agent *a)
{
    int dir = sprite_dir_open(SERVICE_DECL_DIR, false);
    DIR *d = dir < 0 ? NULL : fdopendir(dir);
    if (d == NULL) {
        if (dir >= 0)
            close(dir);
        return;
    }
    static uint8_t frame[WISP_PROTO_MAX_FRAME + 1];
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".svc") != 0)
            continue;
        /* The files are on the user's disk: read them like anything from outside. */
        int fd = sprite_file_open(dirfd(d), e->d_name, O_RDONLY, 0);
        if (fd < 0) {
            log_warn("service declaration %s: %s (skipped)", e->d_name, strerror(-fd));
            continue;
        }
        ssize_t n = read(fd, frame, sizeof frame);
        close(fd);
        struct wisp_header h;
        struct wisp_msg m;
        int r = -WISP_E_TRUNCATED;
        if (n >= WISP_PROTO_HEADER_SIZE &&
            (r = wisp_header_decode(frame, WISP_PROTO_MAX_PAYLOAD, &h)) == 0) {
            if (h.type != WISP_MSG_SERVICE_START ||
                h.length != (uint64_t)n - WISP_PROTO_HEADER_SIZE)
                r = -WISP_E_BAD_FIELD;
            else
                r = wisp_msg_decode(&h, frame + WISP_PROTO_HEADER_SIZE, &m);
        }
        if (r < 0) {
            log_warn("service declaration %s: %s (skipped)", e->d_name, wisp_err_to_string(r));
            continue;
        }
        char msg[256];
        int sys_errno;
        r = service_declare(a, &m, &sys_errno, msg, sizeof msg);
        if (r < 0)
            log_warn("service declaration %s: %s", e->d_name, msg);
        wisp_msg_free(&m);
    }
    closedir(d);
}

void service_stop(struct agent *a, const struct wisp_msg *m)
{
    struct service *s = service_find(a, m->u.service_ref.name);
    if (s == NULL) {
        channel_send_error(&a->chan, m->stream, WISP_E_NOT_FOUND, 0, "no service %s",
                           m->u.service_ref.name);
        return;
    }
    if (a->ct.frozen) {
        /* The declaration's file is on the frozen filesystem: unlinking it would block. */
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0,
                           "the sprite's filesystem is frozen: thaw it first");
        return;
    }
    s->restart_at_ms = 0;
    char name[300];
    service_decl_name(s->name, name, sizeof name, "");
    int dir = sprite_dir_open(SERVICE_DECL_DIR, false);
    if (dir >= 0 && unlinkat(dir, name, 0) < 0 && errno != ENOENT)
        log_warn("service %s: unlink " SERVICE_DECL_DIR "/%s: %m", s->name, name);
    if (dir >= 0)
        close(dir);
    if (s->pid > 0) {
        kill(-s->pid, SIGTERM);
        kill(-s->pid, SIGCONT);
        s->stopping = true;
        s->kill_at_ms = agent_now_ms() + SERVICE_STOP_GRACE_MS;
    } else {
        s->state = WISP_SERVICE_STOPPED;
    }
    channel_send_ok(&a->chan, m->stream);
}

void service_list(struct agent *a, const struct wisp_msg *m)
{
    struct wisp_service_info *info = calloc(a->service_count ? a->service_count : 1, sizeof *info);
    if (info == NULL) {
        channel_send_error(&a->chan, m->stream, WISP_E_NOMEM, ENOMEM, "service list");
        return;
    }
    uint32_t n = 0;
    for (struct service *s = a->services; s != NULL; s = s->next, n++) {
        info[n].name = s->name;
        info[n].state = s->state;
        info[n].pid = s->pid > 0 ? (uint32_t)s->pid : 0;
        info[n].restarts = s->restarts;
        info[n].last_kind = s->last_kind;
        info[n].last_code = s->last_code;
    }
    struct wisp_msg r = {.type = WISP_MSG_SERVICE_LIST_REPLY, .stream = m->stream};
    r.u.service_list.count = n;
    r.u.service_list.services = info;
    if (channel_send(&a->chan, &r) == -EINVAL)
        channel_send_error(&a->chan, m->stream, WISP_E_TOO_LARGE, 0, "service list too long");
    free(info);
}

void service_logs(struct agent *a, const struct wisp_msg *m)
{
    struct service *s = service_find(a, m->u.service_ref.name);
    if (s == NULL) {
        channel_send_error(&a->chan, m->stream, WISP_E_NOT_FOUND, 0, "no service %s",
                           m->u.service_ref.name);
        return;
    }
    size_t want = m->u.service_ref.max_bytes;
    if (want == 0 || want > WISP_PROTO_MAX_PAYLOAD)
        want = WISP_PROTO_MAX_PAYLOAD;
    uint8_t *buf = malloc(want);
    if (buf == NULL) {
        channel_send_error(&a->chan, m->stream, WISP_E_NOMEM, ENOMEM, "service logs");
        return;
    }
    struct wisp_msg r = {.type = WISP_MSG_SERVICE_LOGS_REPLY, .stream = m->stream};
    r.u.data.data = buf;
    r.u.data.len = (uint32_t)ring_copy_tail(&s->log, buf, want);
    channel_send(&a->chan, &r);
    free(buf);
}

size_t services_poll_fill(struct agent *a, struct pollfd *fds, size_t max)
{
    size_t n = 0;
    for (struct service *s = a->services; s != NULL && n < max; s = s->next)
        if (s->out_fd >= 0)
            fds[n++] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
    return n;
}

static void service_read(struct agent *a, struct service *s)
{
    uint8_t buf[16384];
    ssize_t n = read(s->out_fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close(s->out_fd);
        s->out_fd = -1;
        return;
    }
    agent_touch(a);
    ring_push_overwrite(&s->log, buf, (size_t)n);
    /* While the filesystem is frozen a write to it would block PID 1 until a THAW that it
     * could then never read: the ring alone keeps the output meanwhile. */
    if (s->log_fd >= 0 && !a->ct.frozen) {
        if (write(s->log_fd, buf, (size_t)n) != n)
            log_warn("service %s: write log: %m", s->name);
        s->log_size += n;
        if (s->log_size > SERVICE_LOG_MAX)
            service_rotate_log(s);
    }
}

void services_service(struct agent *a, const struct pollfd *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i].revents == 0)
            continue;
        for (struct service *s = a->services; s != NULL; s = s->next) {
            if (s->out_fd == fds[i].fd && s->out_fd >= 0) {
                service_read(a, s);
                break;
            }
        }
    }
}

int services_tick(struct agent *a, uint64_t now_ms)
{
    int64_t next = -1;
    for (struct service *s = a->services; s != NULL; s = s->next) {
        if (s->stopping && s->pid > 0 && s->kill_at_ms) {
            if (now_ms >= s->kill_at_ms) {
                log_warn("service %s: still running %d ms after SIGTERM: SIGKILL", s->name,
                         SERVICE_STOP_GRACE_MS);
                kill(-s->pid, SIGKILL);
                s->kill_at_ms = 0;
            } else if (next < 0 || (int64_t)(s->kill_at_ms - now_ms) < next) {
                next = (int64_t)(s->kill_at_ms - now_ms);
            }
        }
        if (s->state == WISP_SERVICE_BACKOFF && s->restart_at_ms) {
            if (now_ms >= s->restart_at_ms) {
                s->restart_at_ms = 0;
                s->restarts++;
                int r = service_spawn(a, s);
                if (r < 0) {
                    errno = -r;
                    log_error("service %s: restart: %m", s->name);
                    s->state = WISP_SERVICE_FAILED;
                }
            } else if (next < 0 || (int64_t)(s->restart_at_ms - now_ms) < next) {
                next = (int64_t)(s->restart_at_ms - now_ms);
            }
        }
    }
    return next > INT32_MAX ? INT32_MAX : (int)next;
}

bool services_reaped(struct agent *a, pid_t pid, int status, uint64_t now_ms)
{
    for (struct service *s = a->services; s != NULL; s = s->next) {
        if (s->pid != pid)
            continue;
        s->pid = 0;
        bool failed;
        if (WIFSIGNALED(status)) {
            s->last_kind = WISP_EXIT_SIGNAL;
            s->last_code = (uint32_t)WTERMSIG(status);
            failed = true;
        } else {
            s->last_kind = WISP_EXIT_CODE;
            s->last_code = (uint32_t)WEXITSTATUS(status);
            failed = s->last_code != 0;
        }
        log_info("service %s: pid %d ended (%s %u)", s->name, (int)pid,
                 s->last_kind ? "signal" : "code", s->last_code);
        if (s->stopping) {
            s->state = WISP_SERVICE_STOPPED;
            s->stopping = false;
        } else if (s->restart == WISP_RESTART_ALWAYS ||
                   (s->restart == WISP_RESTART_ON_FAILURE && failed)) {
            s->state = WISP_SERVICE_BACKOFF;
            s->restart_at_ms = now_ms + s->delay_ms;
        } else {
            s->state = failed ? WISP_SERVICE_FAILED : WISP_SERVICE_STOPPED;
        }
        return true;
    }
    return false;
}

void services_shutdown(struct agent *a)
{
    for (struct service *s = a->services; s != NULL; s = s->next) {
        s->restart_at_ms = 0;
        s->stopping = true;
        if (s->state == WISP_SERVICE_BACKOFF)
            s->state = WISP_SERVICE_STOPPED;
        if (s->log_fd >= 0)
            close(s->log_fd);
        s->log_fd = -1;
    }
}
