/* data.c: random data and comparing a disk with its shadow copy (see server.h). */
#include "server.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- random ------------------------------------------------------------------------------- */

static uint64_t ws_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t ws_splitmix(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t ws_xoshiro(uint64_t s[4])
{
    uint64_t result = ws_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ws_rotl(s[3], 45);
    return result;
}

static uint64_t ws_rng[4];

void ws_rand_seed(uint64_t seed)
{
    uint64_t x = seed;

    for (int i = 0; i < 4; i++)
        ws_rng[i] = ws_splitmix(&x);
}

uint64_t ws_rand(void)
{
    return ws_xoshiro(ws_rng);
}

uint64_t ws_rand_below(uint64_t n)
{
    return n ? ws_rand() % n : 0;
}

void ws_fill_random(void *buf, size_t len, uint64_t seed)
{
    uint64_t s[4], x = seed;
    uint8_t *p = buf;

    for (int i = 0; i < 4; i++)
        s[i] = ws_splitmix(&x);
    while (len >= 8) {
        uint64_t v = ws_xoshiro(s);
        memcpy(p, &v, 8);
        p += 8;
        len -= 8;
    }
    if (len) {
        uint64_t v = ws_xoshiro(s);
        memcpy(p, &v, len);
    }
}

/* ---- shadow and compare ------------------------------------------------------------------ */

void *ws_shadow_new(uint64_t size)
{
    int fd = memfd_create("wisp-shadow", MFD_CLOEXEC);
    void *p;

    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        WS_FAIL("memfd of %" PRIu64 " bytes: %s", size, strerror(errno));
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        WS_FAIL("mmap of %" PRIu64 " bytes: %s", size, strerror(errno));
    close(fd);
    return p;
}

void ws_shadow_free(void *shadow, uint64_t size)
{
    munmap(shadow, size);
}

#define WS_PIECE (4u << 20)

struct ws_compare {
    struct ws_server *s;
    const char *export_name;
    const uint8_t *shadow;
    uint64_t start, end;
    uint64_t next; /* under lock */
    pthread_mutex_t lock;
    bool stop;
    /* The first difference found (lowest offset among the pieces that differ). */
    bool differs;
    uint64_t diff_offset, diff_piece, diff_count;
    uint8_t got, want;
    char error[512];
};

static void *ws_compare_worker(void *opaque)
{
    struct ws_compare *c = opaque;
    uint8_t *buf = g_malloc(WS_PIECE);
    struct nbd_handle *h = nbd_create();

    if (!h || nbd_set_export_name(h, c->export_name) == -1 ||
        nbd_connect_unix(h, c->s->sock) == -1) {
        pthread_mutex_lock(&c->lock);
        snprintf(c->error, sizeof c->error, "connect: %s", nbd_get_error());
        c->stop = true;
        pthread_mutex_unlock(&c->lock);
        goto out;
    }
    for (;;) {
        pthread_mutex_lock(&c->lock);
        uint64_t off = c->next;
        bool stop = c->stop || off >= c->end;
        c->next += WS_PIECE;
        pthread_mutex_unlock(&c->lock);
        if (stop)
            break;
        size_t n = c->end - off < WS_PIECE ? (size_t)(c->end - off) : WS_PIECE;
        if (nbd_pread(h, buf, n, off, 0) == -1) {
            pthread_mutex_lock(&c->lock);
            snprintf(c->error, sizeof c->error, "pread of %zu bytes at %" PRIu64 ": %s", n, off,
                     nbd_get_error());
            c->stop = true;
            pthread_mutex_unlock(&c->lock);
            break;
        }
        if (memcmp(buf, c->shadow + off, n) != 0) {
            uint64_t first = 0, count = 0;
            for (size_t i = 0; i < n; i++) {
                if (buf[i] != c->shadow[off + i]) {
                    if (count++ == 0)
                        first = i;
                }
            }
            pthread_mutex_lock(&c->lock);
            if (!c->differs || off + first < c->diff_offset) {
                c->differs = true;
                c->diff_offset = off + first;
                c->diff_piece = off;
                c->diff_count = count;
                c->got = buf[first];
                c->want = c->shadow[off + first];
            }
            pthread_mutex_unlock(&c->lock);
        }
    }
    nbd_shutdown(h, 0);
out:
    if (h)
        nbd_close(h);
    g_free(buf);
    return NULL;
}

void ws_compare(struct ws_server *s, const char *export_name, const uint8_t *shadow,
                uint64_t offset, uint64_t len, uint32_t chunk_size, int connections)
{
    struct ws_compare c = {
        .s = s,
        .export_name = export_name,
        .shadow = shadow,
        .start = offset,
        .end = offset + len,
        .next = offset,
    };
    pthread_t threads[16];
    double t = ws_now();

    if (connections < 1 || connections > 16)
        connections = 4;
    pthread_mutex_init(&c.lock, NULL);
    for (int i = 0; i < connections; i++)
        if (pthread_create(&threads[i], NULL, ws_compare_worker, &c) != 0)
            WS_FAIL("pthread_create");
    for (int i = 0; i < connections; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&c.lock);
    if (c.error[0])
        WS_FAIL("export %s: %s", export_name, c.error);
    if (c.differs)
        WS_FAIL("export %s differs from what was written: first at offset %" PRIu64
                " (chunk %" PRIu64 " + %" PRIu64 "): got 0x%02x, expected 0x%02x; %" PRIu64
                " bytes differ in the %u-byte piece at %" PRIu64,
                export_name, c.diff_offset, c.diff_offset / chunk_size, c.diff_offset % chunk_size,
                c.got, c.want, c.diff_count, WS_PIECE, c.diff_piece);
    double dt = ws_now() - t;
    ws_log("%s: %" PRIu64 " MiB at %" PRIu64 " match (%.2f s, %.0f MiB/s, %d connections)",
           export_name, len >> 20, offset, dt, (double)len / (1 << 20) / (dt > 0 ? dt : 1e-9),
           connections);
}

void ws_write_random(struct nbd_handle *h, uint8_t *shadow, uint64_t off, size_t len, uint64_t seed)
{
    uint8_t *buf = g_malloc(len);

    ws_fill_random(buf, len, seed);
    if (nbd_pwrite(h, buf, len, off, 0) == -1)
        WS_FAIL("write of %zu bytes at %" PRIu64 ": %s", len, off, nbd_get_error());
    memcpy(shadow + off, buf, len);
    g_free(buf);
}
