/* figures.c: the figures of docs/benchmarks.md for the VM driver, measured on real boots.
 *
 *   boot-to-ready: launch of QEMU to wisp-init's READY on the control channel, median of 5
 *   exec round trip: EXEC of `true` to its EXIT, median of 100, on an attached sprite
 *   stdout streaming: 256 MiB from dd in the guest to the host, MiB/s
 * It fails only if something does not work; the numbers are printed, not judged. */
#include "vm_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024 * 1024)

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(void)
{
    struct vmf_image img;
    struct vmf_disk disk;
    struct vmf_vm v;
    double boots[5], rtt[100];
    GError *err = NULL;
    char run[32];

    fx_setup("vm-figures");
    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "bench");

    for (int i = 0; i < 5; i++) {
        snprintf(run, sizeof run, "boot%d", i);
        vmf_boot(&v, &img, &disk, run, false, i == 4 ? "bench" : NULL);
        boots[i] = v.launch_to_ready_s;
        if (i < 4)
            vmf_destroy(&v);
    }

    const char *t[] = {"true", NULL};
    for (int i = 0; i < 100; i++) {
        double t0 = fx_now();
        int st = agent_exec_run(v.agent, t, NULL, 0, NULL, NULL, NULL, 30000, &err);
        rtt[i] = fx_now() - t0;
        FX_CHECK(st == 0, "true: %d %s", st, err ? err->message : "");
    }

    const char *dd[] = {"dd", "if=/dev/zero", "bs=1M", "count=256", NULL};
    struct agent_exec_opts opts = {.argv = dd};
    char *buf = g_malloc(65536);
    uint64_t total = 0;
    double t0 = fx_now();
    agent_exec *e = agent_exec_start(v.agent, &opts, 30000, &err);
    FX_CHECK(e, "dd: %s", err ? err->message : "?");
    for (;;) {
        enum agent_stream_kind k;
        ssize_t n = agent_exec_read(e, buf, 65536, &k, 60000, &err);
        FX_CHECK(n >= 0, "read: %s", err ? err->message : "?");
        if (n == 0)
            break;
        if (k == AGENT_STDOUT)
            total += (uint64_t)n;
    }
    double stream_s = fx_now() - t0;
    agent_exec_free(e);
    g_free(buf);
    FX_CHECK(total == 256ull * MiB, "streamed %llu bytes", (unsigned long long)total);

    const char *accel = vm_accel_to_string(v.vm->accel);
    double b0 = boots[0], b4 = boots[4];
    double boot_median = median(boots, 5), rtt_median = median(rtt, 100);
    printf("FIGURE accel=%s\n", accel);
    printf("FIGURE boot_to_ready_median_ms=%.0f (5 boots, first %.0f, last %.0f)\n",
           boot_median * 1000, b0 * 1000, b4 * 1000);
    printf("FIGURE exec_true_round_trip_median_ms=%.2f (100 execs, p90 %.2f)\n", rtt_median * 1000,
           rtt[89] * 1000);
    printf("FIGURE stdout_stream_mib_per_s=%.1f (256 MiB in %.2f s)\n", 256 / stream_s, stream_s);
    vmf_shutdown(&v);
    fx_server_stop(&disk.server);
    return 0;
}
