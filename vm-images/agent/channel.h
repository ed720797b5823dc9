/* channel.h: the control channel in the guest: the virtio-serial port named wisp.ctl, framed by
 * protocol.h.
 *
 * The port opens once and stays open.  While no host is connected a read returns EOF, so the
 * channel is then "disconnected": it is left out of poll (which would report POLLHUP without end)
 * and probed by a read every CHANNEL_RETRY_MS.  A read that no longer returns EOF means a host is
 * there.  Outgoing frames are control frames, queued whole (replies, STARTED, EXIT...), and data
 * frames, which the owner builds on demand through fill() only when the channel can take them, so
 * stream data waits in the sessions' bounded buffers rather than here. */
#ifndef WISP_AGENT_CHANNEL_H
#define WISP_AGENT_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

#define CHANNEL_RETRY_MS 50
/* Past this many queued control bytes, requests are not read until the host reads replies. */
#define CHANNEL_QUEUE_MAX (1024 * 1024)

struct channel_ops {
    /* One whole frame arrived. */
    void (*frame)(void *opaque, const struct wisp_frame *f);
    /* A host connected (true) or went away (false). */
    void (*link)(void *opaque, bool connected);
    /* Writes one data frame (header included) into buf, returns its length or 0 for none. */
    size_t (*fill)(void *opaque, uint8_t *buf, size_t cap);
};

struct out_frame;

struct channel {
    int fd;
    char path[64];
    bool connected;
    uint64_t retry_at_ms;
    struct wisp_reader reader;
    struct out_frame *head, *tail;
    size_t queued_bytes;
    struct out_frame *cur_frame; /* the control frame being written, owned */
    const uint8_t *cur;          /* the frame being written: cur_frame's or data_buf */
    size_t cur_len, cur_off;
    uint8_t *data_buf; /* data frames built by fill() */
    uint8_t *enc_buf;  /* scratch for encoding control frames */
    uint8_t *in_buf;   /* bytes read from the port */
    const struct channel_ops *ops;
    void *opaque;
    /* counters, reported in the log */
    uint64_t frames_in, bad_frames_in, frames_out, disconnects;
};

/* Finds /dev/vportNpM for the port called name through /sys/class/virtio-ports/<dev>/name.
 * 0 with path filled, or -ENOENT. */
int channel_find_port(const char *name, char *path, size_t cap);
int channel_open(struct channel *c, const char *path, const struct channel_ops *ops, void *opaque);
/* The same over a descriptor the caller opened (wisp-init --serve-fd, for tests): it is made
 * non-blocking and close-on-exec, and owned by the channel from then on. */
int channel_open_fd(struct channel *c, int fd, const char *label, const struct channel_ops *ops,
                    void *opaque);
void channel_close(struct channel *c);
/* Queues a control frame; -ENOTCONN (dropped) while no host is connected. */
int channel_send(struct channel *c, const struct wisp_msg *m);
void channel_send_ok(struct channel *c, uint32_t stream);
void channel_send_error(struct channel *c, uint32_t stream, int err, int sys_errno, const char *fmt,
                        ...) __attribute__((format(printf, 5, 6)));
/* poll() events to wait for, or 0 while disconnected. */
short channel_poll_events(const struct channel *c);
/* After poll: reads and writes what it can. */
void channel_service(struct channel *c, short revents, uint64_t now_ms);
/* Without poll events: probes for a host when it is time; returns ms until the next probe,
 * or -1 when connected. */
int channel_tick(struct channel *c, uint64_t now_ms);
/* Writes queued and fillable frames until the port would block. */
void channel_pump(struct channel *c, uint64_t now_ms);

#endif
