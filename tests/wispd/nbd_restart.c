/* nbd_restart.c: the storage server killed under running sprites (issue 7's fault tests).
 *
 * wispd supervises nbdkit and starts it again after a SIGKILL; QEMU's NBD client reconnects
 * (reconnect-delay, VM_NBD_RECONNECT_DELAY_S), so the guest sees a pause, never an I/O error:
 *
 *   1. a sprite writes a file and syncs it; a loop in the guest keeps writing with fsync;
 *   2. nbdkit gets SIGKILL; a new write with fsync is started at once, so it waits on the
 *      reconnect;
 *   3. that write succeeds; the file synced before the kill reads back equal through O_DIRECT
 *      (from the disk, not the page cache); the filesystem is still writable; the loop goes on;
 *   4. a second kill, while the loop writes, and the same checks: the first was not luck. */
#include "wispd_fixture.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

/* The number of lines in the guest's /root/loops (one per fsynced loop iteration). */
static long guest_loops(void)
{
    g_autofree char *n = wfx_sh("io", NULL, "wc -l < /root/loops", 0);
    return strtol(n, NULL, 10);
}

static void kill_nbdkit_and_check(const char *nbd_sock, const char *sum_before, int round)
{
    pid_t nbdkit = wfx_find_process("nbdkit ", nbd_sock);
    FX_CHECK(nbdkit > 0, "no nbdkit serving %s", nbd_sock);
    long loops_before = guest_loops();
    double t0 = fx_now();
    FX_CHECK(kill(nbdkit, SIGKILL) == 0, "kill nbdkit %d", (int)nbdkit);

    /* Written after the kill: it waits for the reconnect, then succeeds. */
    g_autofree char *script = g_strdup_printf(
        "dd if=/dev/urandom of=/root/after-%d bs=1M count=4 conv=fsync 2>/dev/null && "
        "dd if=/root/after-%d bs=1M iflag=direct 2>/dev/null | sha256sum && "
        "sha256sum < /root/after-%d",
        round, round, round);
    g_autofree char *sums = wfx_sh("io", NULL, script, 0);
    fx_log("round %d: a write with fsync after the kill returned in %.2f s", round, fx_now() - t0);
    g_auto(GStrv) lines = g_strsplit(sums, "\n", -1);
    FX_CHECK(g_strv_length(lines) >= 2 && strcmp(lines[0], lines[1]) == 0,
             "round %d: the new file reads back different from the disk: %s", round, sums);
    pid_t again = wfx_find_process("nbdkit ", nbd_sock);
    FX_CHECK(again > 0 && again != nbdkit, "round %d: nbdkit was not started again", round);

    /* The data synced before the kill, read from the disk. */
    g_autofree char *sum_after =
        wfx_sh("io", NULL, "dd if=/root/before bs=1M iflag=direct 2>/dev/null | sha256sum", 0);
    FX_CHECK(strcmp(sum_before, sum_after) == 0, "round %d: /root/before changed: %s -> %s", round,
             sum_before, sum_after);
    g_free(wfx_sh("io", NULL, "touch /root/still-writable && rm /root/still-writable", 0));

    /* The guest's own writer kept going. */
    long loops_after = 0;
    double t1 = fx_now();
    while ((loops_after = guest_loops()) <= loops_before + 2) {
        FX_CHECK(fx_now() - t1 < 60, "round %d: the guest's write loop stopped at %ld", round,
                 loops_after);
        fx_sleep(0.5);
    }
    fx_log("round %d: nbdkit %d -> %d; the guest loop went on (%ld -> %ld)", round, (int)nbdkit,
           (int)again, loops_before, loops_after);
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd_nbd_restart");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, NULL, NULL);
    g_autofree char *nbd_sock = g_strdup_printf("%s/run/nbd.sock", state);

    wfx_expect_free(201, "POST", "/v1/sprites", NULL, "{\"name\":\"io\"}");
    g_free(wfx_sh("io", NULL,
                  "dd if=/dev/urandom of=/root/before bs=1M count=8 conv=fsync 2>/dev/null", 0));
    g_autofree char *sum_before =
        wfx_sh("io", NULL, "dd if=/root/before bs=1M iflag=direct 2>/dev/null | sha256sum", 0);
    g_free(wfx_sh("io", NULL,
                  "touch /root/loops; sh -c 'while :; do dd if=/dev/urandom "
                  "of=/root/loop bs=64k count=16 conv=fsync 2>/dev/null && echo x >> /root/loops; "
                  "done' </dev/null >/dev/null 2>&1 &",
                  0));

    kill_nbdkit_and_check(nbd_sock, sum_before, 1);
    kill_nbdkit_and_check(nbd_sock, sum_before, 2);

    wfx_stop(&w, 60);
    return 0;
}
