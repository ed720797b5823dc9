/* qemu_user.c: QEMU drops to wisp-qemu only where it can reach nbdkit's socket.
 *
 * The state directory here sits in a directory of mode 0700 (as a `mktemp -d` would make), which
 * wisp-qemu cannot search: wispd must see that at start, say so in its log, and keep QEMU as
 * root, so that sprites still get their disks (tests/wispd/wispd.c covers the case where QEMU
 * does drop to wisp-qemu). */
#include "wispd_fixture.h"

#include <string.h>
#include <sys/stat.h>

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd_qemu_user");
    wfx_init(&img);
    g_autofree char *closed = g_strdup_printf("%s/closed", fx_tmpdir());
    FX_CHECK(mkdir(closed, 0700) == 0, "mkdir %s", closed);
    g_autofree char *state = g_strdup_printf("%s/state", closed);
    wfx_start(&w, &img, state, NULL, NULL);

    wfx_expect_free(201, "POST", "/v1/sprites", NULL, "{\"name\":\"q\"}");
    g_autofree char *out = wfx_sh("q", NULL, "echo reached", 0);
    FX_CHECK(strcmp(out, "reached\n") == 0, "exec: '%s'", out);
    g_autofree char *log = NULL;
    FX_CHECK(g_file_get_contents(w.log, &log, NULL, NULL), "read %s", w.log);
    g_autofree char *line = g_strdup_printf("since it cannot search %s", closed);
    FX_CHECK(strstr(log, "not as 'wisp-qemu'") && strstr(log, line),
             "wispd's log does not say why QEMU stays root (%s)", line);
    GArray *pids = wfx_processes("qemu-system", state);
    FX_CHECK(pids->len > 0, "no QEMU of this wispd");
    for (guint i = 0; i < pids->len; i++) {
        g_autofree char *path = g_strdup_printf("/proc/%d/status", g_array_index(pids, pid_t, i));
        g_autofree char *status = NULL;
        FX_CHECK(g_file_get_contents(path, &status, NULL, NULL) &&
                     strstr(status, "\nUid:\t0\t0\t0\t0\n"),
                 "QEMU %d does not run as root", g_array_index(pids, pid_t, i));
    }
    fx_log("%u QEMUs stay root, as the log says: QEMU runs as uid 0, not as 'wisp-qemu'",
           pids->len);
    g_array_unref(pids);
    wfx_stop(&w, 60);
    return 0;
}
