/* ring.c: see ring.h. */
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ring_init(struct ring *r, size_t cap)
{
    r->buf = malloc(cap);
    if (r->buf == NULL)
        return -ENOMEM;
    r->cap = cap;
    r->head = 0;
    r->len = 0;
    return 0;
}

void ring_free(struct ring *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = r->head = r->len = 0;
}

/* The contiguous free region after the newest byte. */
static size_t ring_free_run(const struct ring *r, size_t *at)
{
    size_t tail = (r->head + r->len) % r->cap;
    *at = tail;
    if (r->len == r->cap)
        return 0;
    if (tail >= r->head)
        return r->cap - tail;
    return r->head - tail;
}

ssize_t ring_fill_from_fd(struct ring *r, int fd)
{
    size_t at;
    size_t n = ring_free_run(r, &at);
    if (n == 0) {
        errno = ENOBUFS;
        return -1;
    }
    ssize_t got = read(fd, r->buf + at, n);
    if (got > 0)
        r->len += (size_t)got;
    return got;
}

size_t ring_take(struct ring *r, uint8_t *dst, size_t n)
{
    size_t done = 0;
    while (done < n && r->len > 0) {
        size_t run = r->cap - r->head;
        if (run > r->len)
            run = r->len;
        if (run > n - done)
            run = n - done;
        memcpy(dst + done, r->buf + r->head, run);
        r->head = (r->head + run) % r->cap;
        r->len -= run;
        done += run;
    }
    if (r->len == 0)
        r->head = 0;
    return done;
}

size_t ring_put(struct ring *r, const uint8_t *src, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t at;
        size_t run = ring_free_run(r, &at);
        if (run == 0)
            break;
        if (run > n - done)
            run = n - done;
        memcpy(r->buf + at, src + done, run);
        r->len += run;
        done += run;
    }
    return done;
}

void ring_push_overwrite(struct ring *r, const uint8_t *src, size_t n)
{
    if (n >= r->cap) {
        src += n - r->cap;
        n = r->cap;
    }
    if (n > ring_space(r)) {
        size_t drop = n - ring_space(r);
        r->head = (r->head + drop) % r->cap;
        r->len -= drop;
    }
    ring_put(r, src, n);
}

size_t ring_copy_tail(const struct ring *r, uint8_t *dst, size_t n)
{
    if (n > r->len)
        n = r->len;
    size_t start = (r->head + r->len - n) % r->cap;
    for (size_t done = 0; done < n;) {
        size_t run = r->cap - start;
        if (run > n - done)
            run = n - done;
        memcpy(dst + done, r->buf + start, run);
        start = (start + run) % r->cap;
        done += run;
    }
    return n;
}

ssize_t ring_drain_to_fd(struct ring *r, int fd)
{
    if (r->len == 0)
        return 0;
    size_t run = r->cap - r->head;
    if (run > r->len)
        run = r->len;
    ssize_t put = write(fd, r->buf + r->head, run);
    if (put > 0) {
        r->head = (r->head + (size_t)put) % r->cap;
        r->len -= (size_t)put;
        if (r->len == 0)
            r->head = 0;
    }
    return put;
}
