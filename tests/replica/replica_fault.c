/* replica_fault: metadata replication through a faulty object store (suite fault).
 *
 *   replica_fault
 *
 * nbdkit with the Wisp plugin (durability=local, upload-delay=0.2, replicate-interval=0.2,
 * store-timeout=2) uses radosgw through wisp-faultproxy.  Metadata commits are made in a known
 * order: checkpoints c000, c001, ... (each needs an upload round first, so some fail under
 * faults and are then not made) and, while the store is down, disks x0, x1, ...
 *
 *   A.  10% faults (errors, resets, truncations, bad lengths, corruption; fixed seed): write,
 *       flush, checkpoint, 24 times.  Every few steps the replica is restored straight from
 *       radosgw (no proxy) with `wisp disk restore-meta`: its checkpoints must be a prefix of
 *       those made so far, in order (a state the database had, never one it did not).
 *   B.  The proxy stops (the store is down): disks x0..x4 are created through the control
 *       socket, which needs no store; shipping fails and must keep its bytes.  Restores from
 *       radosgw still give a prefix.
 *   C.  The proxy comes back, without faults: within 20 s a restore shows every checkpoint and
 *       every disk made, and the server's log shows that shipping failed and caught up.
 *
 * The proxy's seed is fixed (WISP_TEST_FAULT_SEED overrides it). */
#include "fixture.h"

#include <libnbd.h>

#include <glib.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define REPLICA "fault"

static struct fx_proxy proxy;
static char url_proxy[1024], url_direct[1024];
static struct fx_server server;
static GPtrArray *made; /* names of checkpoints and disks made, in commit order */
static unsigned restores;

static const char *const faults[] = {
    "--error-rate",
    "0.04",
    "--reset-rate",
    "0.03",
    "--truncate-rate",
    "0.01",
    "--bad-length-rate",
    "0.01",
    "--corrupt-rate",
    "0.01",
    NULL,
};

/* Runs the CLI; its exit status, and its stdout in *out (g_free) when out is not NULL. */
static int cli(char **out, const char *arg, ...)
{
    const char *argv[32];
    char *err = NULL, *text = NULL;
    int n = 0, status = -1;
    va_list ap;

    argv[n++] = fx_need_env("WISP_TEST_CLI");
    va_start(ap, arg);
    for (const char *a = arg; a && n < 30; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &text, &err, &status,
                      NULL))
        fx_fail(__FILE__, __LINE__, "spawn", "cannot run the wisp CLI");
    if (status != 0 && err && *err)
        fx_log("  (wisp %s: %s)", argv[2], g_strstrip(err));
    g_free(err);
    if (out)
        *out = text;
    else
        g_free(text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Restores the replica straight from radosgw and checks that what it holds is a prefix of
 * `made`.  Returns the length of that prefix. */
static unsigned restore_prefix(const char *when)
{
    char *dir = g_strdup_printf("%s/restore%u", fx_tmpdir(), restores++);
    char *ckpts = NULL, *disks = NULL;
    GPtrArray *got = g_ptr_array_new_with_free_func(g_free);
    int r;

    r = cli(NULL, "disk", "restore-meta", "--store", url_direct, "--meta", dir, "--replica",
            REPLICA, "--verify", "sample", NULL);
    FX_CHECK(r == 0, "%s: restore-meta from radosgw failed (status %d)", when, r);
    r = cli(&ckpts, "disk", "checkpoints", "d", "--meta", dir, NULL);
    FX_CHECK(r == 0, "%s: checkpoints of the restored disk", when);
    r = cli(&disks, "disk", "list", "--meta", dir, NULL);
    FX_CHECK(r == 0, "%s: disks of the restored metadata", when);
    /* Checkpoints first (oldest first), then the disks x*: the order they were made in. */
    for (char *line = strtok(ckpts, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64];
        if (sscanf(line, "%63s", name) == 1 && name[0] == 'c')
            g_ptr_array_add(got, g_strdup(name));
    }
    for (char *line = strtok(disks, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64];
        if (sscanf(line, "%63s", name) == 1 && name[0] == 'x')
            g_ptr_array_add(got, g_strdup(name));
    }
    FX_CHECK(got->len <= made->len, "%s: the replica holds %u names, only %u were made", when,
             got->len, made->len);
    for (guint i = 0; i < got->len; i++)
        FX_CHECK(strcmp(g_ptr_array_index(got, i), g_ptr_array_index(made, i)) == 0,
                 "%s: the replica's name %u is %s, but %s was made then: a state that never "
                 "existed",
                 when, i, (char *)g_ptr_array_index(got, i), (char *)g_ptr_array_index(made, i));
    unsigned n = got->len;
    fx_log("%s: the replica holds %u of the %u names made, a prefix", when, n, made->len);
    g_ptr_array_unref(got);
    g_free(ckpts);
    g_free(disks);
    fx_rm_rf(dir);
    g_free(dir);
    return n;
}

static int log_count(const char *needle)
{
    gchar *text = NULL;
    int n = 0;

    if (!g_file_get_contents(server.log, &text, NULL, NULL))
        return 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    g_free(text);
    return n;
}

int main(void)
{
    char prefix[256], meta[700], cache[700], endpoint[64];
    uint64_t seed =
        getenv("WISP_TEST_FAULT_SEED") ? strtoull(getenv("WISP_TEST_FAULT_SEED"), NULL, 0) : 4242;
    uint64_t rng = fx_seed();
    unsigned char block[65536];
    struct nbd_handle *nbd;

    fx_setup("replica_fault");
    if (!fx_s3_available())
        fx_skip("no radosgw: WISP_TEST_S3_ENDPOINT is not set (tests/s3/rgw-fixture)");
    fx_need_env("WISP_TEST_FAULTPROXY");
    fx_log("workload seed %" PRIu64 ", proxy seed %" PRIu64, rng, seed);
    fx_proxy_init(&proxy, fx_tmpdir());
    snprintf(prefix, sizeof prefix, "wisp-ft/replica-fault-%d-%08x", (int)getpid(),
             (unsigned)(rng & 0xffffffff));
    snprintf(meta, sizeof meta, "%s/meta", fx_tmpdir());
    snprintf(cache, sizeof cache, "%s/cache", fx_tmpdir());
    made = g_ptr_array_new_with_free_func(g_free);

    fx_proxy_start(&proxy, 0, seed, faults);
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%u", proxy.port);
    fx_s3_url(url_proxy, sizeof url_proxy, prefix, endpoint);
    fx_s3_url(url_direct, sizeof url_direct, prefix, NULL);
    fx_store_cleanup_register(url_direct);
    fx_disk_create(meta, "d", "64M", "64K");
    const char *params[] = {"durability=local", "upload-delay=0.2", "replicate-interval=0.2",
                            "store-timeout=2",  "replica=" REPLICA, NULL};
    fx_server_start(&server, "nbdkit", url_proxy, cache, meta, params);
    nbd = nbd_create();
    FX_CHECK(nbd && nbd_set_export_name(nbd, "d") == 0 && nbd_connect_unix(nbd, server.sock) == 0,
             "connect: %s", nbd_get_error());

    /* The server's first generation must be in the store before any restore can find one:
     * with the write log, the loop below flushes faster than that takes through the faults. */
    for (double t0 = fx_now();; fx_sleep(0.2)) {
        g_autofree char *probe = g_strdup_printf("%s/first-replica", fx_tmpdir());
        if (cli(NULL, "disk", "restore-meta", "--store", url_direct, "--meta", probe, "--replica",
                REPLICA, "--verify", "sample", NULL) == 0)
            break;
        FX_CHECK(fx_now() - t0 < 60, "no first replica generation in the store after 60 s");
        const char *rm[] = {"rm", "-rf", probe, NULL};
        g_spawn_sync(NULL, (char **)rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                     NULL);
    }

    /* A: light faults. */
    for (int i = 0; i < 24; i++) {
        char name[16];
        for (size_t j = 0; j < sizeof block; j += 8) {
            uint64_t v = fx_rand_next(&rng);
            memcpy(block + j, &v, 8);
        }
        FX_CHECK(nbd_pwrite(nbd, block, sizeof block, (uint64_t)i * sizeof block, 0) == 0,
                 "write: %s", nbd_get_error());
        FX_CHECK(nbd_flush(nbd, 0) == 0, "flush (durability=local): %s", nbd_get_error());
        snprintf(name, sizeof name, "c%03d", i);
        if (cli(NULL, "disk", "checkpoint", "d", name, "--control", server.control, NULL) == 0)
            g_ptr_array_add(made, g_strdup(name));
        if (i % 6 == 5)
            restore_prefix("with 10% faults");
    }
    fx_log("A: %u of 24 checkpoints made through the faults", made->len);
    FX_CHECK(made->len > 0, "no checkpoint could be made through 10%% faults");

    /* B: the store is down; metadata commits go on. */
    unsigned port = proxy.port;
    fx_proxy_stop(&proxy);
    unsigned before = made->len;
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        FX_CHECK(cli(NULL, "disk", "create", name, "--size", "16M", "--chunk-size", "64K",
                     "--control", server.control, NULL) == 0,
                 "disk create %s with the store down", name);
        g_ptr_array_add(made, g_strdup(name));
        fx_sleep(0.3);
    }
    fx_sleep(1);
    unsigned n = restore_prefix("store down");
    FX_CHECK(n <= before, "the replica has commits made while the store was down");

    /* C: the store comes back, clean; replication catches up. */
    fx_proxy_start(&proxy, port, seed, NULL);
    double t0 = fx_now();
    for (;;) {
        fx_sleep(0.5);
        n = restore_prefix("store back");
        if (n == made->len)
            break;
        FX_CHECK(fx_now() - t0 < 20, "replication did not catch up within 20 s (%u of %u)", n,
                 made->len);
    }
    fx_log("C: caught up %.1f s after the store came back", fx_now() - t0);
    FX_CHECK(log_count("shipping failed") >= 1, "the log does not show a failed shipment");
    FX_CHECK(log_count("caught up") >= 1, "the log does not show the catch-up");
    nbd_close(nbd);
    fx_server_stop(&server);
    fx_proxy_stop(&proxy);
    g_ptr_array_unref(made);
    return 0;
}
