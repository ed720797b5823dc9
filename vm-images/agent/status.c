/* status.c: see status.h. */
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
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

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* /proc/net/tcp prints each 32-bit word of the address in host (little-endian) order. */
static bool parse_addr(const char *hex, size_t len, uint8_t addr[16])
{
    memset(addr, 0, 16);
    if (len != 8 && len != 32)
        return false;
    for (size_t w = 0; w < len / 8; w++) {
        for (size_t b = 0; b < 4; b++) {
            int hi = hexval(hex[w * 8 + (3 - b) * 2]);
            int lo = hexval(hex[w * 8 + (3 - b) * 2 + 1]);
            if (hi < 0 || lo < 0)
                return false;
            addr[w * 4 + b] = (uint8_t)(hi << 4 | lo);
        }
    }
    return true;
}

unsigned status_parse_listeners(const char *text, int family, struct wisp_listener *out,
                                unsigned count, unsigned max)
{
    const char *line = strchr(text, '\n'); /* the header line */
    while (line != NULL && count < max) {
        line++;
        char local[64], state[8];
        /* "  0: 0100007F:0016 00000000:0000 0A ..." */
        if (sscanf(line, " %*[0-9]: %63[0-9A-Fa-f:] %*s %7s", local, state) == 2 &&
            strcmp(state, "0A") == 0) {
            char *colon = strchr(local, ':');
            if (colon != NULL) {
                struct wisp_listener *l = &out[count];
                l->family = (uint8_t)family;
                l->port = (uint16_t)strtoul(colon + 1, NULL, 16);
                if (parse_addr(local, (size_t)(colon - local), l->addr))
                    count++;
            }
        }
        line = strchr(line, '\n');
    }
    return count;
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
        n = status_parse_listeners(text, 4, ls, n, STATUS_MAX_LISTENERS);
    free(text);
    text = read_proc("/proc/net/tcp6");
    if (text != NULL)
        n = status_parse_listeners(text, 6, ls, n, STATUS_MAX_LISTENERS);
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
