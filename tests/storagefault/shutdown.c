/* shutdown: a server shutting down abandons a durability=local upload round instead of
 * waiting for it, and loses nothing (suite fault).
 *
 * nbdkit (durability=local, upload-delay=0, upload-parallel=1) uses radosgw through
 * wisp-faultproxy delaying every request by 300 ms.  40 chunks are written and flushed (a local
 * flush: acknowledged at once); the upload round that follows needs about 12 s.  Once it has
 * uploaded a chunk, SIGTERM: the server must exit within 4 s, saying that the round was
 * abandoned.  Restarted straight on radosgw, the disk reads back whole from its journal, the
 * round runs again and uploads everything; restarted once more with an empty cache, the disk
 * reads back whole from the store. */
#include "fixture.h"

#include <libnbd.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define DISK_NAME "slow"
#define CHUNK     (UINT64_C(64) << 10)
#define CHUNKS    40
#define REGION    (CHUNKS * CHUNK)

static struct nbd_handle *open_disk(const struct fx_server *s)
{
    struct nbd_handle *nbd = nbd_create();

    FX_CHECK(nbd != NULL, "nbd_create: %s", nbd_get_error());
    FX_CHECK(nbd_set_export_name(nbd, DISK_NAME) == 0, "nbd_set_export_name: %s", nbd_get_error());
    FX_CHECK(nbd_connect_unix(nbd, s->sock) == 0, "nbd_connect_unix: %s", nbd_get_error());
    return nbd;
}

static void compare(const struct fx_server *s, const unsigned char *shadow, const char *what)
{
    struct nbd_handle *nbd = open_disk(s);
    unsigned char *buf = malloc(REGION);

    FX_CHECK(buf != NULL, "out of memory");
    FX_CHECK(nbd_pread(nbd, buf, REGION, 0, 0) == 0, "%s: read: %s", what, nbd_get_error());
    FX_CHECK(memcmp(buf, shadow, REGION) == 0, "%s: the disk does not read back", what);
    nbd_close(nbd);
    free(buf);
    fx_log("%s: %llu bytes read back", what, (unsigned long long)REGION);
}

/* Waits until the disk's stats member reaches at least want (or fails after timeout s). */
static long long wait_stat(const struct fx_server *s, const char *member, long long want,
                           double timeout)
{
    double deadline = fx_now() + timeout;
    long long v;

    while ((v = fx_disk_stat(s, DISK_NAME, member)) < want) {
        FX_CHECK(fx_now() < deadline, "%s stayed at %lld (want %lld) for %.0f s", member, v, want,
                 timeout);
        fx_sleep(0.05);
    }
    return v;
}

int main(void)
{
    char prefix[128], proxy_url[128], url_proxy[1300], url_direct[1300], cache[600], meta[600];
    const char *slow[] = {"--delay-rate", "1", "--delay-ms", "300", NULL};
    const char *params[] = {"durability=local", "upload-delay=0",   "upload-parallel=1",
                            "store-timeout=10", "stats-interval=0", NULL};
    struct fx_proxy proxy;
    struct fx_server s;
    uint64_t rng = fx_seed();

    fx_need_env("WISP_TEST_PLUGIN");
    fx_need_env("WISP_TEST_CLI");
    fx_need_env("WISP_TEST_FAULTPROXY");
    if (!fx_s3_available())
        fx_skip("no radosgw: WISP_TEST_S3_ENDPOINT etc. are not set (tests/s3/rgw-fixture)");
    const char *dir = fx_setup("shutdown");
    fx_proxy_init(&proxy, dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    snprintf(meta, sizeof meta, "%s/meta", dir);
    snprintf(prefix, sizeof prefix, "test-shutdown-%d", (int)getpid());
    fx_s3_url(url_direct, sizeof url_direct, prefix, NULL);
    fx_store_cleanup_register(url_direct);
    fx_mkdir(cache);
    fx_mkdir(meta);
    fx_disk_create(meta, DISK_NAME, "16M", "64K");

    fx_proxy_start(&proxy, 0, 1, slow);
    snprintf(proxy_url, sizeof proxy_url, "http://127.0.0.1:%u", proxy.port);
    fx_s3_url(url_proxy, sizeof url_proxy, prefix, proxy_url);
    fx_server_start(&s, "nbdkit", url_proxy, cache, meta, params);

    unsigned char *shadow = malloc(REGION);
    FX_CHECK(shadow != NULL, "out of memory");
    for (uint64_t i = 0; i < REGION; i += 8) {
        uint64_t v = fx_rand_next(&rng);
        memcpy(shadow + i, &v, 8);
    }
    struct nbd_handle *nbd = open_disk(&s);
    FX_CHECK(nbd_pwrite(nbd, shadow, REGION, 0, 0) == 0, "write: %s", nbd_get_error());
    FX_CHECK(nbd_flush(nbd, 0) == 0, "flush: %s", nbd_get_error());
    nbd_close(nbd);

    /* The round is under way once a chunk is up; then shut down. */
    wait_stat(&s, "stats.uploads", 1, 30);
    double t = fx_now();
    int status = fx_reap(s.pid, SIGTERM, 30);
    double took = fx_now() - t;
    s.pid = 0;
    FX_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "nbdkit exited with status 0x%x",
             status);
    fx_log("shut down in %.2f s during an upload round of about %.0f s", took, CHUNKS * 0.3);
    FX_CHECK(took < 4, "shutting down took %.1f s: it waited for the upload round", took);
    FX_CHECK(fx_run((const char *[]){"grep", "-q", "upload of flush 1 abandoned", s.log, NULL}) ==
                 0,
             "the log does not say the round was abandoned (%s)", s.log);
    fx_proxy_stop(&proxy);

    /* Straight on radosgw: the journal brings the data back, and the round runs again. */
    fx_server_start(&s, "nbdkit", url_direct, cache, meta, params);
    compare(&s, shadow, "after the shutdown, from the journal");
    wait_stat(&s, "stats.committed_gen", 1, 60);
    fx_server_stop(&s);

    /* Everything is in the store. */
    fx_rm_rf(cache);
    fx_mkdir(cache);
    fx_server_start(&s, "nbdkit", url_direct, cache, meta, params);
    compare(&s, shadow, "empty cache, from radosgw");
    fx_server_stop(&s);
    free(shadow);
    fx_log("shutdown: all checks passed");
    return 0;
}
