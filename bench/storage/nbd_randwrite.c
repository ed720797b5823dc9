/* nbd_randwrite: random writes through libnbd with exactly one flush per N writes.
 *
 *   nbd_randwrite URI REGION_BYTES SECONDS [BLOCK [DEPTH [FLUSH_EVERY]]]
 *
 * Keeps DEPTH requests in flight (default 32): BLOCK-byte writes (default 4096) at random
 * aligned offsets in [0, REGION_BYTES), with a flush issued after every FLUSH_EVERY writes
 * (default 32) while the other requests carry on.  This is what fio's `fsync=32` means; fio
 * 3.33 with an asynchronous engine such as `nbd` issues many more flushes (fixed upstream in
 * fio 3.37, axboe/fio#1754), so scripts/bench storage runs this next to fio.  Prints one line:
 *
 *   writes=W flushes=F seconds=S iops=I flush_ms=M
 *
 * Build: cc -O2 -o nbd_randwrite nbd_randwrite.c $(pkg-config --cflags --libs libnbd) */
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct state {
    uint64_t writes_done, flushes_done, flushes_issued, in_flight, issued_writes;
    double flush_time; /* summed flush latency, seconds */
    int error;
};

/* One write buffer; busy from the write's issue to its completion. */
struct slot {
    struct state *st;
    char *buf;
    int busy;
};

struct flush_ctx {
    struct state *st;
    double t0;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_done(void *opaque, int *error)
{
    struct slot *sl = opaque;
    if (*error)
        sl->st->error = *error;
    sl->st->writes_done++;
    sl->st->in_flight--;
    sl->busy = 0;
    return 1; /* retire the command */
}

static int flush_done(void *opaque, int *error)
{
    struct flush_ctx *fc = opaque;
    if (*error)
        fc->st->error = *error;
    fc->st->flushes_done++;
    fc->st->flush_time += now() - fc->t0;
    fc->st->in_flight--;
    free(fc);
    return 1;
}

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s URI REGION_BYTES SECONDS [BLOCK [DEPTH [FLUSH_EVERY]]]\n",
                argv[0]);
        return 2;
    }
    const char *uri = argv[1];
    uint64_t region = strtoull(argv[2], NULL, 10);
    double seconds = strtod(argv[3], NULL);
    uint32_t block = argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : 4096;
    unsigned depth = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 10) : 32;
    unsigned every = argc > 6 ? (unsigned)strtoul(argv[6], NULL, 10) : 32;
    uint64_t blocks = region / block, seed = (uint64_t)time(NULL) * 2654435761ULL | 1;
    struct state st = {0};

    if (blocks == 0 || depth == 0 || every == 0) {
        fprintf(stderr, "%s: bad arguments\n", argv[0]);
        return 2;
    }
    struct nbd_handle *h = nbd_create();
    if (!h || nbd_connect_uri(h, uri) == -1) {
        fprintf(stderr, "%s: %s\n", argv[0], nbd_get_error());
        return 1;
    }
    /* One buffer per request in flight, its first bytes refilled before each write (no two
     * writes alike). */
    char *bufs = malloc((size_t)block * depth);
    struct slot *slots = calloc(depth, sizeof *slots);
    if (!bufs || !slots)
        return 1;
    for (size_t i = 0; i < (size_t)block * depth / 8; i++)
        ((uint64_t *)bufs)[i] = rnd(&seed);
    for (unsigned i = 0; i < depth; i++)
        slots[i] = (struct slot){.st = &st, .buf = bufs + (size_t)block * i};

    double t0 = now(), end = t0 + seconds;
    while (!st.error) {
        double t = now();
        while (t < end && st.in_flight < depth) {
            if (st.issued_writes / every > st.flushes_issued) {
                /* A flush is due: one after every `every` writes issued. */
                struct flush_ctx *fc = malloc(sizeof *fc);
                if (!fc)
                    return 1;
                fc->st = &st;
                fc->t0 = t;
                if (nbd_aio_flush(
                        h, (nbd_completion_callback){.callback = flush_done, .user_data = fc}, 0) ==
                    -1) {
                    fprintf(stderr, "%s: flush: %s\n", argv[0], nbd_get_error());
                    return 1;
                }
                st.flushes_issued++;
                st.in_flight++;
                continue;
            }
            struct slot *sl = NULL;
            for (unsigned i = 0; i < depth && !sl; i++)
                if (!slots[i].busy)
                    sl = &slots[i];
            if (!sl)
                break; /* every buffer in flight: wait for a completion */
            sl->busy = 1;
            ((uint64_t *)sl->buf)[0] = rnd(&seed);
            ((uint64_t *)sl->buf)[1] = rnd(&seed);
            uint64_t off = (rnd(&seed) % blocks) * block;
            if (nbd_aio_pwrite(h, sl->buf, block, off,
                               (nbd_completion_callback){.callback = write_done, .user_data = sl},
                               0) == -1) {
                fprintf(stderr, "%s: write: %s\n", argv[0], nbd_get_error());
                return 1;
            }
            st.issued_writes++;
            st.in_flight++;
        }
        if (t >= end && st.in_flight == 0)
            break;
        if (nbd_poll(h, -1) == -1) {
            fprintf(stderr, "%s: poll: %s\n", argv[0], nbd_get_error());
            return 1;
        }
    }
    double elapsed = now() - t0;
    if (st.error) {
        fprintf(stderr, "%s: a request failed: %s\n", argv[0], strerror(st.error));
        return 1;
    }
    nbd_shutdown(h, 0);
    nbd_close(h);
    printf("writes=%" PRIu64 " flushes=%" PRIu64 " seconds=%.3f iops=%.1f flush_ms=%.2f\n",
           st.writes_done, st.flushes_done, elapsed, (double)st.writes_done / elapsed,
           st.flushes_done ? st.flush_time * 1000 / (double)st.flushes_done : 0.0);
    free(bufs);
    free(slots);
    return 0;
}
