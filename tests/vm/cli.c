/* cli.c: wisp-vm as an operator uses it, one process per verb: boot under QEMU's seccomp
 * sandbox through the claim path (placeholder disk swapped over QMP) with an attach, exec (status,
 * stdout, stdin from a file), status, freeze and thaw, shutdown (QEMU gone afterwards), and kill of
 * a second boot. */
#include "vm_fixture.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char run_dir[700];

/* QEMU outlives `wisp-vm boot` by design: a failing test must not leave it running. */
static void kill_left_qemu(void)
{
    char path[800];
    g_autofree char *text = NULL;

    snprintf(path, sizeof path, "%s/qemu.pid", run_dir);
    if (run_dir[0] && g_file_get_contents(path, &text, NULL, NULL) && atoi(text) > 0)
        kill(-atoi(text), SIGKILL);
}

/* Runs `sh -c script` (for redirections), returns the exit status; *out gets the output. */
static int sh(char **out, double timeout, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sh(char **out, double timeout, const char *fmt, ...)
{
    static int n;
    char log[800];
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *script = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    snprintf(log, sizeof log, "%s/cli-%d.out", fx_tmpdir(), n++);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    int st = fx_reap(fx_spawn(argv, log, NULL), 0, timeout);
    if (out)
        g_file_get_contents(log, out, NULL, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(void)
{
    const char *cli = fx_need_env("WISP_VM_CLI");
    struct vmf_image img;
    struct vmf_disk disk;
    char *out = NULL;
    int rc;

    fx_setup("vm-cli");
    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "sprite");
    snprintf(run_dir, sizeof run_dir, "%s/vm", fx_tmpdir());
    atexit(kill_left_qemu);

    rc = sh(&out, 180,
            "%s boot --sandbox --kernel %s --initrd %s --claim-nbd %s:%s --run-dir %s "
            "--hostname cli-test",
            cli, img.kernel, img.initrd, disk.server.sock, disk.name, run_dir);
    FX_CHECK(rc == 0 && strstr(out, "ready in") && strstr(out, "attached in"), "boot: %d: %s", rc,
             out);
    fx_log("wisp-vm boot: %s", g_strchomp(out));
    g_clear_pointer(&out, g_free);

    rc = sh(&out, 60, "%s exec --run-dir %s -- sh -c 'hostname; exit 3' 2>&1", cli, run_dir);
    FX_CHECK(rc == 3 && strcmp(out, "cli-test\n") == 0, "exec: %d: %s", rc, out);
    g_clear_pointer(&out, g_free);

    rc = sh(&out, 120,
            "head -c 3000000 /dev/urandom > %s/in.bin && "
            "%s exec --run-dir %s -i -- sha256sum < %s/in.bin | cut -c1-64 > %s/guest.sum && "
            "sha256sum < %s/in.bin | cut -c1-64 | cmp - %s/guest.sum",
            fx_tmpdir(), cli, run_dir, fx_tmpdir(), fx_tmpdir(), fx_tmpdir(), fx_tmpdir());
    FX_CHECK(rc == 0, "exec -i with stdin from a file: %d: %s", rc, out);
    g_clear_pointer(&out, g_free);

    rc = sh(&out, 60, "%s status --run-dir %s", cli, run_dir);
    FX_CHECK(rc == 0 && strstr(out, "attached 1"), "status: %d: %s", rc, out);
    g_clear_pointer(&out, g_free);

    rc = sh(&out, 60, "%s freeze --run-dir %s && %s status --run-dir %s && %s thaw --run-dir %s",
            cli, run_dir, cli, run_dir, cli, run_dir);
    FX_CHECK(rc == 0 && strstr(out, "frozen 1"), "freeze, status, thaw: %d: %s", rc, out);
    g_clear_pointer(&out, g_free);

    rc = sh(&out, 90, "%s shutdown --run-dir %s", cli, run_dir);
    FX_CHECK(rc == 0, "shutdown: %d: %s", rc, out);
    g_clear_pointer(&out, g_free);
    rc = sh(&out, 10, "kill -0 $(cat %s/qemu.pid) 2>/dev/null", run_dir);
    FX_CHECK(rc != 0, "QEMU still runs after wisp-vm shutdown");
    g_clear_pointer(&out, g_free);

    /* kill: a VM that is not shut down cleanly is stopped and its sockets go. */
    rc = sh(&out, 180, "%s boot --kernel %s --initrd %s --nbd %s:%s --run-dir %s", cli, img.kernel,
            img.initrd, disk.server.sock, disk.name, run_dir);
    FX_CHECK(rc == 0, "second boot: %d: %s", rc, out);
    g_clear_pointer(&out, g_free);
    rc = sh(&out, 30,
            "%s kill --run-dir %s && ! kill -0 $(cat %s/qemu.pid) 2>/dev/null && "
            "! test -e %s/qmp.sock && ! test -e %s/ctl.sock",
            cli, run_dir, run_dir, run_dir, run_dir);
    FX_CHECK(rc == 0, "kill: %d: %s", rc, out);
    g_clear_pointer(&out, g_free);
    fx_server_stop(&disk.server);
    fx_log("ok");
    return 0;
}
