/* ring.h: a fixed-size byte ring.  Used two ways: as a bounded FIFO between a child's pipe and the
 * channel (ring_fill_from_fd / ring_take: nothing is ever overwritten, a full ring just stops
 * reading, which is the back-pressure), and as a log tail (ring_push_overwrite: the oldest bytes
 * make room). */
#ifndef WISP_AGENT_RING_H
#define WISP_AGENT_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ring {
    uint8_t *buf;
    size_t cap;
    size_t head; /* index of the oldest byte */
    size_t len;  /* bytes held */
};

int ring_init(struct ring *r, size_t cap); /* 0 or -ENOMEM */
void ring_free(struct ring *r);
static inline size_t ring_space(const struct ring *r)
{
    return r->cap - r->len;
}
/* One read(2) into the free space: returns what read returned (0 at EOF, -1 with errno). */
ssize_t ring_fill_from_fd(struct ring *r, int fd);
/* Copies up to n of the oldest bytes to dst and drops them; returns the count. */
size_t ring_take(struct ring *r, uint8_t *dst, size_t n);
/* Appends, dropping the oldest bytes when full. */
void ring_push_overwrite(struct ring *r, const uint8_t *src, size_t n);
/* Copies the newest min(n, len) bytes, in order, without dropping them; returns the count. */
size_t ring_copy_tail(const struct ring *r, uint8_t *dst, size_t n);
/* One write(2) of the oldest bytes to fd, dropping what was written; returns write's result. */
ssize_t ring_drain_to_fd(struct ring *r, int fd);
/* Appends as much of src as fits; returns the count. */
size_t ring_put(struct ring *r, const uint8_t *src, size_t n);

#endif
