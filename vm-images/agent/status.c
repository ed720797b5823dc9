/* status.c: see status.h. */
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "proc_net.h"
#include "session.h"

#define STATUS_MAX_LISTENERS 1024

/* Reads a small /proc file whole into a new NUL-terminated buffer. */
static char *read_proc(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (len + 1 == cap) {
            if (cap >= (4u << 20))
                break; /* enough for any sane listener table */
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL)
                break;
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

void status_reply(struct agent *a, const struct wisp_msg *m)
{
    struct wisp_msg r = {.type = WISP_MSG_STATUS_REPLY, .stream = m->stream};
    char *text = read_proc("/proc/uptime");
    if (text != NULL)
        r.u.status.uptime_ms = (uint64_t)(strtod(text, NULL) * 1000.0);
    free(text);
    text = read_proc("/proc/meminfo");
    if (text != NULL) {
        const char *p = strstr(text, "MemTotal:");
        if (p)
            r.u.status.mem_total_kib = strtoull(p + 9, NULL, 10);
        p = strstr(text, "MemAvailable:");
        if (p)
            r.u.status.mem_available_kib = strtoull(p + 13, NULL, 10);
    }
    free(text);
    text = read_proc("/proc/loadavg");
    if (text != NULL) {
        double l[3] = {0, 0, 0};
        if (sscanf(text, "%lf %lf %lf", &l[0], &l[1], &l[2]) == 3)
            for (int i = 0; i < 3; i++)
                r.u.status.load_milli[i] = (uint32_t)(l[i] * 1000.0);
    }
    free(text);
    r.u.status.idle_ms = agent_now_ms() - a->last_activity_ms;
    r.u.status.attached = a->ct.attached;
    r.u.status.frozen = a->ct.frozen;

    /* The container shares the VM's network namespace, so these are its listeners too. */
    struct wisp_listener *ls = calloc(STATUS_MAX_LISTENERS, sizeof *ls);
    struct wisp_session_info *ss = calloc(a->session_count + 1, sizeof *ss);
    if (ls == NULL || ss == NULL) {
        free(ls);
        free(ss);
        channel_send_error(&a->chan, m->stream, WISP_E_NOMEM, ENOMEM, "status");
        return;
    }
    unsigned n = 0;
    text = read_proc("/proc/net/tcp");
    if (text != NULL)
        n = proc_net_listeners(text, 4, ls, n, STATUS_MAX_LISTENERS);
    free(text);
    text = read_proc("/proc/net/tcp6");
    if (text != NULL)
        n = proc_net_listeners(text, 6, ls, n, STATUS_MAX_LISTENERS);
    free(text);
    r.u.status.listener_count = n;
    r.u.status.listeners = ls;
    unsigned k = 0;
    for (struct session *s = a->sessions; s != NULL; s = s->next, k++) {
        ss[k].stream = s->stream;
        ss[k].pid = (uint32_t)s->pid;
        ss[k].state = s->reaped ? 1 : 0;
    }
    r.u.status.session_count = k;
    r.u.status.sessions = ss;
    if (channel_send(&a->chan, &r) == -EINVAL)
        channel_send_error(&a->chan, m->stream, WISP_E_TOO_LARGE, 0, "status too large");
    free(ls);
    free(ss);
}
