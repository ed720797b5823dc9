/* storagefault.c: the Wisp storage server with a faulty object store (suite fault).
 *
 *   storagefault
 *
 * nbdkit with the Wisp plugin (durability=remote, store-timeout=2, cache-size=16M so that reads
 * keep going to the store) uses radosgw through wisp-faultproxy.  A shadow copy of the disk's
 * first 24 MiB is kept in memory; every read is compared with it.
 *
 *   A.  Light faults (10% of requests: errors, resets, truncations, bad lengths, corruption and
 *       delays longer than store-timeout; fixed seed): random unaligned writes, reads and
 *       flushes.  Reads never return wrong data; flushes succeed or fail with EIO.  At the end
 *       a flush succeeds and the whole region reads back correctly.
 *   B.  Heavy faults (50%, no delays): the same; flushes may fail, but one of 20 in a row must
 *       succeed (with 6 attempts per request, a request fails 1.6% of the time).
 *   B2. A flapping store, three times: writes; the proxy stops; whole-chunk writes, read back;
 *       a flush that must fail with EIO; the proxy comes back (10% faults); the next flush must
 *       succeed (one of 5) and the whole region must read back correctly.  Then the server is
 *       restarted with an empty cache, straight on radosgw, and the region reads back from the
 *       store.
 *   C.  The store is down, after a good flush (so that the store client has done its one-time
 *       probe of the store).  First the proxy is stopped (connections refused): a flush with 40
 *       chunks pending must fail with EIO within the bound, and reads of the data written since
 *       and of data read just before must still work.  Then the store hangs (a listener on the
 *       proxy's port that never answers, so every attempt waits for store-timeout): a flush
 *       with 8 more chunks (48 pending) must fail within the bound.  Then the server restarts
 *       while the store hangs (durability=remote: the unflushed data is gone, and the shadow
 *       goes back to the last good flush): a flush with 4 chunks must fail within the bound.
 *       The bound: the store's attempts (6) x store-timeout + its backoff (at most 3.1 s in
 *       all) + 5 s of slack.  A flush still running 10 s past the bound fails the check; the
 *       store is then brought back so that the flush finishes, and the test goes on.
 *   D.  The proxy comes back on the same port, without faults: the next flush succeeds, the
 *       region reads back (data lost in the restart must not come back), and so it does after
 *       a restart with an empty cache.
 *
 * A failed check in C does not stop the test: D still runs, and the test fails at the end.
 * WISP_TEST_FLUSH_WAIT=S waits S s (default 10) past the bound before bringing the store back,
 * to measure how long a stuck flush really takes.  The proxy's seed is fixed
 * (WISP_TEST_FAULT_SEED overrides it); the workload's seed is printed and WISP_TEST_SEED
 * repeats it. */
#include "fixture.h"

#include <libnbd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DISK_NAME         "faulty"
#define REGION            (UINT64_C(24) << 20)
#define CHUNK             (UINT64_C(64) << 10)
#define STORE_TIMEOUT     2.0
#define STORE_ATTEMPTS    6   /* common/store.c: max_attempts */
#define STORE_BACKOFF_ALL 3.1 /* 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s, the most it waits in all */
#define SLACK             5.0

static unsigned char *shadow;         /* what the disk holds now */
static unsigned char *shadow_durable; /* what the last successful flush made durable */
static uint64_t rng;
static struct fx_proxy proxy;
static unsigned soft_failures;

/* 10% of requests in all, delays longer than store-timeout included. */
static const char *const light_faults[] = {
    "--error-rate",
    "0.04",
    "--reset-rate",
    "0.02",
    "--truncate-rate",
    "0.01",
    "--bad-length-rate",
    "0.01",
    "--corrupt-rate",
    "0.01",
    "--delay-rate",
    "0.01",
    "--delay-ms",
    "3000",
    NULL,
};

struct counters {
    unsigned writes, write_retries, reads, read_eio, flushes_ok, flushes_eio, compares;
};

/* A check that does not stop the test: the rest still runs, the test fails at the end. */
#define SOFT_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fx_log("FAIL (continuing) %s:%d: %s", __FILE__, __LINE__, #cond);                      \
            fx_log(__VA_ARGS__);                                                                   \
            soft_failures++;                                                                       \
        }                                                                                          \
    } while (0)

/* ---- the proxy ------------------------------------------------------------------------------- */

/* ---- the server and its disk ----------------------------------------------------------------- */

static void server_start(struct fx_server *s, const char *url, const char *cache, const char *meta)
{
    const char *params[] = {"durability=remote", "store-timeout=2", "cache-size=16M", NULL};

    fx_server_start(s, "nbdkit", url, cache, meta, params);
}

static struct nbd_handle *nbd_open_disk(const struct fx_server *s)
{
    struct nbd_handle *nbd = nbd_create();

    FX_CHECK(nbd != NULL, "nbd_create: %s", nbd_get_error());
    FX_CHECK(nbd_set_export_name(nbd, DISK_NAME) == 0, "nbd_set_export_name: %s", nbd_get_error());
    FX_CHECK(nbd_connect_unix(nbd, s->sock) == 0, "nbd_connect_unix: %s", nbd_get_error());
    return nbd;
}

/* ---- I/O against the shadow ------------------------------------------------------------------ */

static void fill_random(unsigned char *p, size_t len)
{
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t v = fx_rand_next(&rng);
        memcpy(p + i, &v, 8);
    }
    for (; i < len; i++)
        p[i] = (unsigned char)fx_rand_next(&rng);
}

/* Writes (retrying on EIO: a partial write may need a chunk from the store) and updates the
 * shadow.  A write that never succeeds fails the test: its range would be undefined. */
static void do_write(struct nbd_handle *nbd, uint64_t off, size_t len, struct counters *c)
{
    unsigned char *buf = malloc(len);

    FX_CHECK(buf != NULL, "out of memory");
    fill_random(buf, len);
    for (int attempt = 0;; attempt++) {
        if (nbd_pwrite(nbd, buf, len, off, 0) == 0)
            break;
        int err = nbd_get_errno();
        FX_CHECK(err == EIO, "write %zu at %" PRIu64 ": %s (errno %d, expected EIO)", len, off,
                 nbd_get_error(), err);
        FX_CHECK(attempt < 10, "write %zu at %" PRIu64 " failed 10 times: %s", len, off,
                 nbd_get_error());
        c->write_retries++;
    }
    memcpy(shadow + off, buf, len);
    c->writes++;
    free(buf);
}

/* Reads and compares with the shadow.  EIO is allowed (counted, retried); wrong data never.
 * Returns false if the read kept failing (only when allow_fail). */
static bool do_read(struct nbd_handle *nbd, uint64_t off, size_t len, struct counters *c,
                    bool allow_fail, const char *what)
{
    unsigned char *buf = malloc(len);

    FX_CHECK(buf != NULL, "out of memory");
    for (int attempt = 0;; attempt++) {
        if (nbd_pread(nbd, buf, len, off, 0) == 0)
            break;
        int err = nbd_get_errno();
        FX_CHECK(err == EIO, "%s: read %zu at %" PRIu64 ": %s (errno %d, expected EIO)", what, len,
                 off, nbd_get_error(), err);
        c->read_eio++;
        if (allow_fail && attempt >= 2) {
            free(buf);
            return false;
        }
        FX_CHECK(attempt < 10, "%s: read %zu at %" PRIu64 " failed 10 times: %s", what, len, off,
                 nbd_get_error());
    }
    c->reads++;
    if (memcmp(buf, shadow + off, len) != 0) {
        size_t i = 0;
        while (buf[i] == shadow[off + i])
            i++;
        FX_CHECK(false,
                 "%s: WRONG DATA: read %zu at %" PRIu64 ": first difference at byte %" PRIu64
                 " (chunk %" PRIu64 "): got 0x%02x, expected 0x%02x",
                 what, len, off, off + i, (off + i) / CHUNK, buf[i], shadow[off + i]);
    }
    free(buf);
    return true;
}

/* Reads the whole region and compares. */
static void compare_all(struct nbd_handle *nbd, struct counters *c, const char *what)
{
    for (uint64_t off = 0; off < REGION; off += 1 << 20)
        do_read(nbd, off, 1 << 20, c, false, what);
    c->compares++;
}

/* Flush: 0 or EIO, nothing else.  Returns the result and the time it took. */
static int do_flush(struct nbd_handle *nbd, struct counters *c, double *seconds)
{
    double t0 = fx_now();
    int r = nbd_flush(nbd, 0);

    if (seconds)
        *seconds = fx_now() - t0;
    if (r == 0) {
        c->flushes_ok++;
        memcpy(shadow_durable, shadow, REGION);
        return 0;
    }
    int err = nbd_get_errno();
    FX_CHECK(err == EIO, "flush: %s (errno %d): a flush must succeed or fail with EIO",
             nbd_get_error(), err);
    c->flushes_eio++;
    return -EIO;
}

/* Random writes, reads and flushes.  After a failed flush, the next successful one is followed
 * by a full compare.  Ends with a successful flush (up to `tries` attempts). */
static void workload(struct nbd_handle *nbd, unsigned ops, struct counters *c, int tries,
                     const char *phase)
{
    bool failed_since = false;

    for (unsigned i = 0; i < ops; i++) {
        unsigned draw = (unsigned)(fx_rand_next(&rng) % 100);
        if (draw < 45) {
            size_t len = (size_t)fx_rand_range(&rng, 1, 256 << 10);
            uint64_t off = fx_rand_range(&rng, 0, REGION - len);
            do_write(nbd, off, len, c);
        } else if (draw < 90) {
            size_t len = (size_t)fx_rand_range(&rng, 1, 512 << 10);
            uint64_t off = fx_rand_range(&rng, 0, REGION - len);
            do_read(nbd, off, len, c, false, phase);
        } else if (do_flush(nbd, c, NULL) < 0) {
            failed_since = true;
        } else if (failed_since) {
            compare_all(nbd, c, phase);
            failed_since = false;
        }
    }
    for (int t = 0;; t++) {
        if (do_flush(nbd, c, NULL) == 0)
            break;
        FX_CHECK(t + 1 < tries, "%s: %d flushes in a row failed", phase, tries);
    }
    compare_all(nbd, c, phase);
}

static void report(const char *phase, const struct counters *c, double seconds)
{
    fx_log("%s: %.1f s: %u writes (%u retried), %u reads (%u EIO, retried), %u flushes ok, "
           "%u flushes EIO, %u full compares",
           phase, seconds, c->writes, c->write_retries, c->reads, c->read_eio, c->flushes_ok,
           c->flushes_eio, c->compares);
}

/* A listener that never accepts: connections complete in the kernel's backlog and requests
 * get no answer, like a hung store. */
static int hang_fd = -1;

static void hang_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)proxy.port)};
    int one = 1;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    hang_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FX_CHECK(hang_fd >= 0, "socket: %s", strerror(errno));
    setsockopt(hang_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    FX_CHECK(bind(hang_fd, (struct sockaddr *)&a, sizeof a) == 0, "bind port %u: %s", proxy.port,
             strerror(errno));
    FX_CHECK(listen(hang_fd, 1024) == 0, "listen: %s", strerror(errno));
}

/* The store comes back: the hung listener goes (its queued connections are reset) and the
 * proxy starts again on the same port, without faults. */
static void store_back(uint64_t seed)
{
    if (hang_fd >= 0) {
        close(hang_fd);
        hang_fd = -1;
    }
    if (proxy.pid <= 0)
        fx_proxy_start(&proxy, proxy.port, seed, NULL);
}

/* Phase C, one way of being down: writes `chunks` fresh chunks and flushes, which must fail
 * with EIO within the bound.  A flush still running at the bound plus WISP_TEST_FLUSH_WAIT
 * (10 s) is a failure; the store is then brought back so that it can finish, and the test goes
 * on.  Then reads back
 * what it wrote, and (cached_len > 0) a range read while the store was up. */
static void store_down_flush(struct nbd_handle *nbd, uint64_t write_off, unsigned chunks,
                             uint64_t cached_off, size_t cached_len, const char *how, uint64_t seed,
                             double *seconds)
{
    struct counters c = {0};
    const double bound = STORE_ATTEMPTS * STORE_TIMEOUT + STORE_BACKOFF_ALL + SLACK;
    const char *wait_env = getenv("WISP_TEST_FLUSH_WAIT");
    const double extra_wait = wait_env ? atof(wait_env) : 10;
    double t0, give_up;
    bool brought_back = false;
    int r;

    do_write(nbd, write_off, chunks * CHUNK, &c);
    t0 = fx_now();
    give_up = t0 + bound + extra_wait;
    int64_t cookie = nbd_aio_flush(nbd, NBD_NULL_COMPLETION, 0);
    FX_CHECK(cookie > 0, "nbd_aio_flush: %s", nbd_get_error());
    for (;;) {
        r = nbd_aio_command_completed(nbd, (uint64_t)cookie);
        if (r != 0)
            break;
        if (!brought_back && fx_now() > give_up) {
            *seconds = fx_now() - t0;
            SOFT_CHECK(false,
                       "store %s: the flush was still running after %.1f s (bound %.1f s); "
                       "bringing the store back so that it can finish",
                       how, *seconds, bound);
            store_back(seed);
            brought_back = true;
        }
        FX_CHECK(fx_now() < give_up + 300, "store %s: the flush never finished", how);
        FX_CHECK(nbd_poll(nbd, 100) >= 0, "nbd_poll: %s", nbd_get_error());
    }
    double took = fx_now() - t0;
    if (!brought_back)
        *seconds = took;
    int err = r < 0 ? nbd_get_errno() : 0;
    fx_log("C. store %s: a flush with %u new chunks pending: %s after %.1f s%s (bound %.1f s = "
           "%d attempts x %.0f s store-timeout + %.1f s backoff + %.0f s slack)",
           how, chunks,
           r > 0        ? "succeeded"
           : err == EIO ? "EIO"
                        : nbd_get_error(),
           took, brought_back ? ", once the store was back" : "", bound, STORE_ATTEMPTS,
           STORE_TIMEOUT, STORE_BACKOFF_ALL, SLACK);
    FX_CHECK(r > 0 || err == EIO, "store %s: the flush failed with errno %d, not EIO", how, err);
    if (r > 0)
        memcpy(shadow_durable, shadow, REGION);
    if (!brought_back) {
        FX_CHECK(r < 0, "store %s: the flush succeeded", how);
        SOFT_CHECK(took < bound, "store %s: the flush took %.1f s to fail, more than %.1f s", how,
                   took, bound);
    }
    /* Data written since the last good flush, and data read just before, are local. */
    do_read(nbd, write_off, chunks * CHUNK, &c, false, "store down: pending data");
    if (cached_len > 0)
        SOFT_CHECK(do_read(nbd, cached_off, cached_len, &c, true, "store down: cached data"),
                   "store %s: a read of data read just before the store went down failed", how);
}

/* A restart in durability=remote keeps exactly the last successful flush. */
static void server_restart(struct fx_server *s, struct nbd_handle **nbd, const char *url,
                           const char *cache, const char *meta, bool empty_cache)
{
    nbd_shutdown(*nbd, 0);
    nbd_close(*nbd);
    fx_server_stop(s);
    if (empty_cache) {
        fx_rm_rf(cache);
        fx_mkdir(cache);
    }
    memcpy(shadow, shadow_durable, REGION);
    server_start(s, url, cache, meta);
    *nbd = nbd_open_disk(s);
}

int main(int argc, char **argv)
{
    char prefix[128], proxy_url[128], url_proxy[1300], url_direct[1300], cache[600], meta[600];
    double t_start = fx_now();
    uint64_t seed, fault_seed = 20240611;
    struct fx_server s;
    struct counters c;
    double t;

    fx_need_env("WISP_TEST_PLUGIN");
    fx_need_env("WISP_TEST_CLI");
    fx_need_env("WISP_TEST_FAULTPROXY");
    if (!fx_s3_available())
        fx_skip("no radosgw: WISP_TEST_S3_ENDPOINT etc. are not set (tests/s3/rgw-fixture)");
    const char *dir = fx_setup("storagefault");
    seed = fx_seed();
    if (getenv("WISP_TEST_FAULT_SEED"))
        fault_seed = strtoull(getenv("WISP_TEST_FAULT_SEED"), NULL, 0);
    rng = seed;
    fx_log("storagefault: workload seed %" PRIu64 " (WISP_TEST_SEED), proxy seed %" PRIu64
           " (WISP_TEST_FAULT_SEED)",
           seed, fault_seed);

    shadow = calloc(1, REGION);
    shadow_durable = calloc(1, REGION);
    FX_CHECK(shadow && shadow_durable, "out of memory");
    fx_proxy_init(&proxy, dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    snprintf(meta, sizeof meta, "%s/meta", dir);
    snprintf(prefix, sizeof prefix, "test-storagefault-%d-%" PRIx64, (int)getpid(),
             seed & 0xffffff);
    fx_s3_url(url_direct, sizeof url_direct, prefix, NULL);
    fx_store_cleanup_register(url_direct);
    fx_mkdir(cache);
    fx_mkdir(meta);
    fx_disk_create(meta, DISK_NAME, "256M", "64K");

    /* A. light faults: 10% of requests in all. */
    fx_proxy_start(&proxy, 0, fault_seed, light_faults);
    snprintf(proxy_url, sizeof proxy_url, "http://127.0.0.1:%u", proxy.port);
    fx_s3_url(url_proxy, sizeof url_proxy, prefix, proxy_url);
    server_start(&s, url_proxy, cache, meta);
    struct nbd_handle *nbd = nbd_open_disk(&s);
    memset(&c, 0, sizeof c);
    t = fx_now();
    workload(nbd, 200, &c, 5, "A. 10% faults");
    report("A. 10% faults", &c, fx_now() - t);

    /* B. heavy faults: 50%, so that some flushes fail. */
    fx_proxy_stop(&proxy);
    {
        const char *faults[] = {"--error-rate",
                                "0.20",
                                "--reset-rate",
                                "0.15",
                                "--truncate-rate",
                                "0.05",
                                "--bad-length-rate",
                                "0.05",
                                "--corrupt-rate",
                                "0.05",
                                NULL};
        fx_proxy_start(&proxy, proxy.port, fault_seed + 1, faults);
    }
    memset(&c, 0, sizeof c);
    t = fx_now();
    workload(nbd, 60, &c, 20, "B. 50% faults");
    report("B. 50% faults", &c, fx_now() - t);

    /* B2. a flapping store: some flushes meet it down (and must fail with EIO), the next one
     * after it is back (with 10% faults) must succeed and leave everything correct. */
    memset(&c, 0, sizeof c);
    t = fx_now();
    for (unsigned cycle = 0; cycle < 3; cycle++) {
        for (int k = 0; k < 4; k++) {
            size_t len = (size_t)fx_rand_range(&rng, 1, 256 << 10);
            do_write(nbd, fx_rand_range(&rng, 0, REGION - len), len, &c);
        }
        fx_proxy_stop(&proxy);
        for (int k = 0; k < 3; k++) {
            /* Whole chunks: a partial write of a chunk that is not cached would need the
             * store. */
            size_t len = (size_t)fx_rand_range(&rng, 1, 4) * CHUNK;
            uint64_t off = fx_rand_range(&rng, 0, (REGION - len) / CHUNK) * CHUNK;
            do_write(nbd, off, len, &c);
            do_read(nbd, off, len, &c, false, "B2. store down: data just written");
        }
        FX_CHECK(do_flush(nbd, &c, NULL) == -EIO, "B2: a flush succeeded with the store down");
        fx_proxy_start(&proxy, proxy.port, fault_seed + 10 + cycle, light_faults);
        int k = 0;
        while (do_flush(nbd, &c, NULL) < 0)
            FX_CHECK(++k < 5, "B2: 5 flushes failed after the store came back");
        compare_all(nbd, &c, "B2. after the store came back");
    }
    report("B2. flapping store", &c, fx_now() - t);

    /* Everything acknowledged is in the store: read it back with an empty cache, straight from
     * radosgw. */
    server_restart(&s, &nbd, url_direct, cache, meta, true);
    memset(&c, 0, sizeof c);
    t = fx_now();
    compare_all(nbd, &c, "B. empty cache, from radosgw");
    report("B. restart with an empty cache, from radosgw", &c, fx_now() - t);

    /* C. store down.  First a good flush through the proxy, so that the store client knows
     * the store (its one-time conditional-create probe is done). */
    server_restart(&s, &nbd, url_proxy, cache, meta, false);
    memset(&c, 0, sizeof c);
    do_write(nbd, 0, 4096, &c);
    for (int k = 0; do_flush(nbd, &c, NULL) < 0; k++)
        FX_CHECK(k < 20, "C: no flush succeeded at 50%% faults in 20 tries");
    const uint64_t cached_off = 2 << 20;
    const size_t cached_len = 1 << 20;
    do_read(nbd, cached_off, cached_len, &c, false, "C. before the store goes down");
    fx_proxy_stop(&proxy);
    double t_refused, t_hung, t_hung_fresh;
    store_down_flush(nbd, 8 << 20, 40, cached_off, cached_len, "refusing connections",
                     fault_seed + 2, &t_refused);
    if (proxy.pid > 0)
        fx_proxy_stop(&proxy); /* brought back after a failed check above */
    hang_start();
    store_down_flush(nbd, 12 << 20, 8, cached_off, cached_len, "hanging (never answers)",
                     fault_seed + 2, &t_hung);
    /* The server starts while the store hangs: unflushed data is gone (durability=remote),
     * and the store client has not probed the store yet. */
    if (proxy.pid > 0)
        fx_proxy_stop(&proxy);
    if (hang_fd < 0)
        hang_start();
    server_restart(&s, &nbd, url_proxy, cache, meta, false);
    store_down_flush(nbd, 16 << 20, 4, 0, 0, "hanging, since the server started", fault_seed + 2,
                     &t_hung_fresh);

    /* D. the store is back, on the same port, without faults. */
    store_back(fault_seed + 2);
    memset(&c, 0, sizeof c);
    do_write(nbd, 20 << 20, 3 * CHUNK + 1234, &c);
    double t_back;
    int r = do_flush(nbd, &c, &t_back);
    fx_log("D. store back: the next flush %s in %.1f s", r == 0 ? "succeeded" : "failed (EIO)",
           t_back);
    FX_CHECK(r == 0, "the first flush after the store came back failed");
    compare_all(nbd, &c, "D. store back");
    server_restart(&s, &nbd, url_proxy, cache, meta, true);
    t = fx_now();
    compare_all(nbd, &c, "D. empty cache");
    fx_log("D. restart with an empty cache: the region reads back from the store (%.1f s)",
           fx_now() - t);
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    fx_server_stop(&s);
    fx_proxy_stop(&proxy);

    fx_log("figures (store-timeout=2): a flush with the store refusing connections failed after "
           "%.1f s; with the store hanging, after %.1f s; hanging since the server started, "
           "after %.1f s",
           t_refused, t_hung, t_hung_fresh);
    FX_CHECK(soft_failures == 0, "%u checks failed (see FAIL above)", soft_failures);
    fx_log("PASS: storagefault in %.1f s", fx_now() - t_start);
    free(shadow);
    free(shadow_durable);
    return 0;
}
