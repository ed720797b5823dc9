/* channel.c: see channel.h. */
#include "channel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

struct out_frame {
    struct out_frame *next;
    size_t len;
    uint8_t data[];
};

int channel_find_port(const char *name, char *path, size_t cap)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    if (d == NULL)
        return -errno;
    int r = -ENOENT;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p[512], got[128];
        snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
        FILE *f = fopen(p, "re");
        if (f == NULL)
            continue;
        bool ok = fgets(got, sizeof got, f) != NULL;
        fclose(f);
        if (!ok)
            continue;
        got[strcspn(got, "\n")] = '\0';
        if (strcmp(got, name) == 0) {
            if (snprintf(path, cap, "/dev/%s", e->d_name) >= (int)cap)
                r = -ENAMETOOLONG;
            else
                r = 0;
            break;
        }
    }
    closedir(d);
    return r;
}

int channel_open_fd(struct channel *c, int fd, const char *label, const struct channel_ops *ops,
                    void *opaque)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->ops = ops;
    c->opaque = opaque;
    snprintf(c->path, sizeof c->path, "%s", label);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        int e = -errno;
        log_error("fcntl %s: %m", label);
        return e;
    }
    int r = wisp_reader_init(&c->reader, WISP_PROTO_MAX_PAYLOAD);
    if (r < 0)
        return -ENOMEM;
    c->data_buf = malloc(WISP_PROTO_MAX_FRAME);
    c->enc_buf = malloc(WISP_PROTO_MAX_FRAME);
    c->in_buf = malloc(WISP_PROTO_MAX_FRAME);
    if (c->data_buf == NULL || c->enc_buf == NULL || c->in_buf == NULL) {
        free(c->data_buf);
        free(c->enc_buf);
        free(c->in_buf);
        c->data_buf = c->enc_buf = c->in_buf = NULL;
        wisp_reader_free(&c->reader);
        return -ENOMEM;
    }
    c->fd = fd;
    return 0;
}

int channel_open(struct channel *c, const char *path, const struct channel_ops *ops, void *opaque)
{
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = -errno;
        log_error("open %s: %m", path);
        return e;
    }
    int r = channel_open_fd(c, fd, path, ops, opaque);
    if (r < 0)
        close(fd);
    return r;
}

static void channel_drop_output(struct channel *c)
{
    free(c->cur_frame);
    c->cur_frame = NULL;
    c->cur = NULL;
    c->cur_len = c->cur_off = 0;
    while (c->head != NULL) {
        struct out_frame *f = c->head;
        c->head = f->next;
        free(f);
    }
    c->tail = NULL;
    c->queued_bytes = 0;
}

void channel_close(struct channel *c)
{
    channel_drop_output(c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->data_buf);
    free(c->enc_buf);
    free(c->in_buf);
    c->data_buf = c->enc_buf = c->in_buf = NULL;
    wisp_reader_free(&c->reader);
}

static void channel_set_connected(struct channel *c, bool connected, uint64_t now_ms)
{
    if (c->connected == connected)
        return;
    c->connected = connected;
    if (!connected) {
        /* What was half-read or queued belongs to the host that left. */
        wisp_reader_reset(&c->reader);
        channel_drop_output(c);
        c->disconnects++;
        c->retry_at_ms = now_ms + CHANNEL_RETRY_MS;
        log_info("host disconnected from %s (%llu frames in, %llu bad, %llu out)", c->path,
                 (unsigned long long)c->frames_in, (unsigned long long)c->bad_frames_in,
                 (unsigned long long)c->frames_out);
    } else {
        log_info("host connected on %s", c->path);
    }
    c->ops->link(c->opaque, connected);
}

int channel_send(struct channel *c, const struct wisp_msg *m)
{
    if (!c->connected)
        return -ENOTCONN;
    int n = wisp_msg_encode(m, c->enc_buf, WISP_PROTO_MAX_FRAME);
    if (n < 0) {
        log_error("encode %s: %s", wisp_msg_type_to_string(m->type), wisp_err_to_string(n));
        return -EINVAL;
    }
    struct out_frame *f = malloc(sizeof *f + (size_t)n);
    if (f == NULL) {
        log_error("queue %s: out of memory", wisp_msg_type_to_string(m->type));
        return -ENOMEM;
    }
    f->next = NULL;
    f->len = (size_t)n;
    memcpy(f->data, c->enc_buf, (size_t)n);
    if (c->tail)
        c->tail->next = f;
    else
        c->head = f;
    c->tail = f;
    c->queued_bytes += f->len;
    return 0;
}

void channel_send_ok(struct channel *c, uint32_t stream)
{
    struct wisp_msg m = {.type = WISP_MSG_OK, .stream = stream};
    channel_send(c, &m);
}

void channel_send_error(struct channel *c, uint32_t stream, int err, int sys_errno, const char *fmt,
                        ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (err < 0)
        err = -err;
    log_info("error reply on stream %u: %s: %s", stream, wisp_err_to_string(err), text);
    struct wisp_msg m = {.type = WISP_MSG_ERROR, .stream = stream};
    m.u.error.code = (uint32_t)err;
    m.u.error.sys_errno = sys_errno;
    m.u.error.message = text;
    channel_send(c, &m);
}

short channel_poll_events(const struct channel *c)
{
    if (!c->connected)
        return 0;
    short ev = 0;
    /* Requests wait in the kernel while the host leaves its replies unread. */
    if (c->queued_bytes < CHANNEL_QUEUE_MAX)
        ev |= POLLIN;
    if (c->cur != NULL || c->head != NULL)
        ev |= POLLOUT;
    return ev;
}

/* Feeds bytes to the reader and hands out frames; framing errors are answered here, since
 * the reader already recovered from them. */
static void channel_consume(struct channel *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len && c->connected) {
        size_t used;
        struct wisp_frame f;
        struct wisp_header eh;
        int r = wisp_reader_feed(&c->reader, buf + off, len - off, &used, &f, &eh);
        off += used;
        if (r == 1) {
            c->frames_in++;
            c->ops->frame(c->opaque, &f);
        } else if (r < 0) {
            c->bad_frames_in++;
            uint32_t stream = r == -WISP_E_BAD_MAGIC ? 0 : eh.stream;
            channel_send_error(c, stream, r, 0, "bad frame: %s", wisp_err_to_string(r));
        }
    }
}

static void channel_read(struct channel *c, uint64_t now_ms)
{
    /* A few reads per wakeup, so a host that streams stdin does not starve the rest. */
    for (int i = 0; i < 4 && c->connected && c->queued_bytes < CHANNEL_QUEUE_MAX; i++) {
        ssize_t n = read(c->fd, c->in_buf, WISP_PROTO_MAX_FRAME);
        if (n > 0) {
            channel_consume(c, c->in_buf, (size_t)n);
            continue;
        }
        if (n == 0) {
            channel_set_connected(c, false, now_ms);
            return;
        }
        if (errno != EAGAIN && errno != EINTR) {
            log_error("read %s: %m", c->path);
            channel_set_connected(c, false, now_ms);
        }
        return;
    }
}

void channel_pump(struct channel *c, uint64_t now_ms)
{
    while (c->connected) {
        if (c->cur == NULL) {
            if (c->head != NULL) {
                c->cur_frame = c->head;
                c->head = c->head->next;
                if (c->head == NULL)
                    c->tail = NULL;
                c->queued_bytes -= c->cur_frame->len;
                c->cur = c->cur_frame->data;
                c->cur_len = c->cur_frame->len;
            } else {
                size_t n = c->ops->fill(c->opaque, c->data_buf, WISP_PROTO_MAX_FRAME);
                if (n == 0)
                    return;
                c->cur = c->data_buf;
                c->cur_len = n;
            }
            c->cur_off = 0;
        }
        ssize_t n = write(c->fd, c->cur + c->cur_off, c->cur_len - c->cur_off);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            log_error("write %s: %m", c->path);
            channel_set_connected(c, false, now_ms);
            return;
        }
        c->cur_off += (size_t)n;
        if (c->cur_off == c->cur_len) {
            c->frames_out++;
            free(c->cur_frame);
            c->cur_frame = NULL;
            c->cur = NULL;
        }
    }
}

void channel_service(struct channel *c, short revents, uint64_t now_ms)
{
    if (!c->connected)
        return;
    if (revents & (POLLIN | POLLHUP | POLLERR))
        channel_read(c, now_ms);
    channel_pump(c, now_ms);
}

int channel_tick(struct channel *c, uint64_t now_ms)
{
    if (c->connected)
        return -1;
    if (now_ms < c->retry_at_ms)
        return (int)(c->retry_at_ms - now_ms);
    c->retry_at_ms = now_ms + CHANNEL_RETRY_MS;
    ssize_t n = read(c->fd, c->in_buf, WISP_PROTO_MAX_FRAME);
    if (n == 0)
        return CHANNEL_RETRY_MS;
    if (n < 0 && errno != EAGAIN) {
        log_error("read %s: %m", c->path);
        return CHANNEL_RETRY_MS;
    }
    channel_set_connected(c, true, now_ms);
    if (n > 0)
        channel_consume(c, c->in_buf, (size_t)n);
    channel_pump(c, now_ms);
    return c->connected ? -1 : CHANNEL_RETRY_MS;
}
