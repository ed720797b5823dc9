/* vm_sleep_bench: medians of sleep and wake for one sprite (QEMU microvm, TCG here).
 *
 *   vm_sleep_bench [--runs N]     (default 20; or $WISP_BENCH_RUNS)
 *
 * One 256 MiB sprite, RAM in its own file, its disk served by nbdkit with the Wisp plugin, a
 * counter service running.  Each run: a cold sleep and a wake from the local copy, then a cold
 * sleep, the local copy deleted, and a wake from the store.  Before the runs, N warm sleeps and
 * wakes.  Printed: medians (and min/max) of warm wake (`cont`), cold wake from the local copy and
 * from the store (to `cont`, and to the first exec's output on a new agent connection), cold
 * sleep, and bytes stored by the first cold sleep and by the repeats.
 *
 * The store is radosgw when tests/s3/rgw-fixture's environment is set (WISP_TEST_S3_ENDPOINT...),
 * else a file:// directory.  The image, plugin and CLI are found as the VM tests find them
 * (WISP_IMAGE_DIR, WISP_TEST_PLUGIN, WISP_TEST_CLI, WISP_BUILD_IMAGE); when unset, the build tree
 * this program lives in is used.  It reuses the VM tests' fixture (tests/vm, tests/crash): every
 * process and file it starts is cleaned up at exit. */
#include "sleep_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024.0 * 1024.0)

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void print_stat(const char *name, const char *unit, double *v, int n, double scale)
{
    if (n == 0)
        return;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    printf("FIGURE %s_median_%s=%.2f (n=%d, min %.2f, max %.2f)\n", name, unit, med * scale, n,
           v[0] * scale, v[n - 1] * scale);
}

/* Defaults from the build tree (this program is BUILD/bench/vm_sleep_bench). */
static void default_env(void)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    if (!self)
        return;
    g_autofree char *bench_dir = g_path_get_dirname(self);
    g_autofree char *build = g_path_get_dirname(bench_dir);
    g_autofree char *plugin =
        g_build_filename(build, "nbdkit-plugin", "nbdkit-wisp-plugin.so", NULL);
    g_autofree char *cli = g_build_filename(build, "pool", "wisp", NULL);
    g_autofree char *image = g_build_filename(build, "vm-image", NULL);
    g_autofree char *init = g_build_filename(build, "vm-images", "agent", "wisp-init", NULL);
    setenv("WISP_TEST_PLUGIN", plugin, 0);
    setenv("WISP_TEST_CLI", cli, 0);
    setenv("WISP_IMAGE_DIR", image, 0);
    setenv("WISP_BUILD_IMAGE", WISP_SOURCE_ROOT "/vm-images/build-image", 0);
    if (access(init, X_OK) == 0)
        setenv("WISP_TEST_WISP_INIT", init, 0);
}

static void delete_local_copy(const char *dir)
{
    g_autofree char *ram = sleep_ram_path(dir), *state = sleep_state_path(dir),
                    *manifest = sleep_manifest_path(dir);
    FX_CHECK(unlink(ram) == 0 && unlink(state) == 0 && unlink(manifest) == 0,
             "delete the local copy in %s", dir);
}

int main(int argc, char **argv)
{
    struct vmf_image img;
    struct vmf_disk disk;
    struct sleepf_sprite s;
    struct store *st = NULL;
    GError *err = NULL;
    char url[1200];
    int runs = getenv("WISP_BENCH_RUNS") ? atoi(getenv("WISP_BENCH_RUNS")) : 20;
    unsigned seq = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--runs N]\n", argv[0]);
            return 2;
        }
    }
    if (runs < 1)
        runs = 1;
    default_env();
    bool s3 = fx_s3_available();
    if (s3) {
        char prefix[128];
        snprintf(prefix, sizeof prefix, "vm-sleep-bench-%d-%lld", (int)getpid(),
                 (long long)g_get_real_time());
        fx_s3_url(url, sizeof url, prefix, NULL);
        /* Before fx_setup: its exit cleanup must run before OpenSSL's (see tests/vm/sleep.c). */
        if (store_open(url, NULL, &st) != 0) {
            fprintf(stderr, "open %s: %s\n", url, store_last_error());
            return 1;
        }
        fx_setup("vm-sleep-bench");
        fx_store_cleanup_register(url);
    } else {
        fx_setup("vm-sleep-bench");
        snprintf(url, sizeof url, "file://%s/sleep-store", fx_tmpdir());
        g_autofree char *dir = g_strdup_printf("%s/sleep-store", fx_tmpdir());
        fx_mkdir(dir);
        FX_CHECK(store_open(url, NULL, &st) == 0, "open %s: %s", url, store_last_error());
    }

    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "bench");
    sleepf_boot(&s, &img, &disk, "bench");
    sleepf_counter_start(&s);
    printf("FIGURE accel=%s\nFIGURE store=%s\nFIGURE runs=%d\n", vm_accel_to_string(s.v.vm->accel),
           s3 ? "radosgw (tests/s3/rgw-fixture)" : "file://", runs);

    double *warm = g_new0(double, runs), *local = g_new0(double, runs);
    double *local_ready = g_new0(double, runs), *remote_ready = g_new0(double, runs);
    double *remote = g_new0(double, runs), *sleep_s = g_new0(double, 2 * runs);
    double *repeat_bytes = g_new0(double, 2 * runs);
    double first_bytes = 0;
    int n_sleep = 0, n_repeat = 0;

    for (int i = 0; i < runs; i++) {
        FX_CHECK(sleep_warm(s.v.vm, 10000, &err), "warm sleep: %s", err ? err->message : "?");
        double t0 = fx_now();
        FX_CHECK(wake_warm(s.v.vm, 10000, &err), "warm wake: %s", err ? err->message : "?");
        warm[i] = fx_now() - t0;
    }

    for (int i = 0; i < runs; i++) {
        for (int from_store = 0; from_store < 2; from_store++) {
            g_autofree char *key = sleep_manifest_key(s.name, ++seq);
            struct cold_sleep_opts so = {.store = st,
                                         .sprite = s.name,
                                         .dir = s.dir,
                                         .manifest_key = key,
                                         .mem_mib = 256,
                                         .agent = s.v.agent,
                                         .timeout_ms = 60000};
            /* As the manager would: the last manifest's chunks are known to be stored. */
            GHashTable *known = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
            if (seq > 1) {
                g_autofree char *prev = sleep_manifest_key(s.name, seq - 1);
                FX_CHECK(sleep_known_from_manifest(st, prev, known, &err), "known: %s",
                         err ? err->message : "?");
            }
            so.known = known;
            struct cold_sleep_result sr;
            FX_CHECK(sleep_cold(s.v.vm, &so, &sr, &err), "cold sleep: %s",
                     err ? err->message : "?");
            vmf_destroy(&s.v);
            g_hash_table_unref(known);
            double bytes = (double)(sr.ram.uploaded_bytes + sr.state.uploaded_bytes);
            if (seq == 1)
                first_bytes = bytes;
            else
                repeat_bytes[n_repeat++] = bytes;
            sleep_s[n_sleep++] = sr.total_s;
            if (from_store)
                delete_local_copy(s.dir);
            struct wake_opts wo = {.store = st,
                                   .dir = s.dir,
                                   .manifest_key = key,
                                   .config = &s.cfg,
                                   .timeout_ms = 60000};
            struct wake_result wr;
            double wake_t0 = fx_now();
            struct vm *vm = wake_cold(&wo, NULL, &wr, &err);
            FX_CHECK(vm, "wake: %s", err ? err->message : "?");
            FX_CHECK(wr.from_store == (bool)from_store, "woke from the wrong copy");
            (from_store ? remote : local)[i] = wr.total_s;
            fprintf(stderr,
                    "  sleep %.0f ms (%.2f MiB new); wake from %s %.0f ms: fetch %.0f, launch %.0f,"
                    " migrate %.0f, cont %.1f\n",
                    sr.total_s * 1e3, bytes / MiB, from_store ? "store" : "local copy",
                    wr.total_s * 1e3, wr.fetch_s * 1e3, wr.launch_s * 1e3, wr.migrate_s * 1e3,
                    wr.cont_s * 1e3);
            sleepf_adopt(&s, vm);
            /* Until the guest answers: the agent's READY on a new connection, then an exec. */
            g_autofree char *out = vmf_sh_ok(&s.v, "echo awake");
            FX_CHECK(strstr(out, "awake") != NULL, "after the wake: %s", out);
            (from_store ? remote_ready : local_ready)[i] = fx_now() - wake_t0;
        }
        fprintf(stderr, "run %d/%d: wake local %.0f ms, store %.0f ms\n", i + 1, runs,
                local[i] * 1e3, remote[i] * 1e3);
    }
    long pid, n;
    sleepf_counter_read(&s, &pid, &n);
    FX_CHECK(pid > 0 && n > 0, "the counter stopped");

    print_stat("warm_wake", "ms", warm, runs, 1e3);
    print_stat("cold_wake_local", "ms", local, runs, 1e3);
    print_stat("cold_wake_store", "ms", remote, runs, 1e3);
    print_stat("cold_wake_local_to_exec", "ms", local_ready, runs, 1e3);
    print_stat("cold_wake_store_to_exec", "ms", remote_ready, runs, 1e3);
    print_stat("cold_sleep", "ms", sleep_s, n_sleep, 1e3);
    printf("FIGURE cold_sleep_first_stored_mib=%.2f\n", first_bytes / MiB);
    print_stat("cold_sleep_repeat_stored", "mib", repeat_bytes, n_repeat, 1.0 / MiB);

    vmf_shutdown(&s.v);
    fx_server_stop(&disk.server);
    store_close(st);
    g_free(warm);
    g_free(local);
    g_free(remote);
    g_free(local_ready);
    g_free(remote_ready);
    g_free(sleep_s);
    g_free(repeat_bytes);
    return 0;
}
