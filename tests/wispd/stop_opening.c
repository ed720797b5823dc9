/* stop_opening.c: SIGTERM while a streaming exec is being opened.
 *
 * The open of a WebSocket exec runs in a worker (a claim or a cold wake, up to seconds).  At
 * SIGTERM the main loop stops, and that open's end (which runs in the main loop) used never to
 * come: its call held the service until two 60 s waits ran out, so wispd took over 120 s to
 * stop (systemd's TimeoutStopSec is 90: SIGKILL, before the disks were committed).
 *
 * Here sprite r sleeps cold and its local copy is removed, so that a wake reads the store;
 * `wisp exec r -- sleep 1000` starts that wake, and SIGTERM comes as soon as wispd's log says
 * it is waking, and a pool resize right after it is refused (503).  wispd must exit 0 within
 * 60 s, having waited for the open ("waiting for the streams being opened to end"), the CLI
 * must end non-zero saying that wispd stops, and after a restart r is there and an exec finds
 * its file. */
#include "sleep_helpers.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd_stop_opening");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, NULL, NULL);

    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"r\"}");
    g_autofree char *md5 = sh_file_write("r", WFX_TOKEN_A, "kept");
    wfx_expect_free(200, "POST", "/v1/sprites/r/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    g_autofree char *local = g_strdup_printf("%s/sleep/s_alice_r", state);
    fx_rm_rf(local);

    g_autofree char *sock = g_strdup_printf("WISP_SOCKET=%s", w.socket);
    const char *env[] = {sock, "WISP_TOKEN=" WFX_TOKEN_A, NULL};
    const char *argv[] = {fx_need_env("WISP_TEST_CLI"), "exec", "r", "--", "sleep", "1000", NULL};
    g_autofree char *cli_log = g_strdup_printf("%s/cli.log", fx_tmpdir());
    pid_t cli = fx_spawn(argv, cli_log, env);
    double until = fx_now() + 60;
    while (!wfx_log_has(w.log, "alice/r: waking from")) {
        FX_CHECK(fx_now() < until, "no wake of r began (see %s and %s)", w.log, cli_log);
        fx_sleep(0.005);
    }
    /* While wispd drains that open, it still listens: a new request is 503 (or finds the
     * socket gone), never served. */
    double t0 = fx_now();
    FX_CHECK(kill(w.pid, SIGTERM) == 0, "SIGTERM wispd");
    until = fx_now() + 30;
    while (!wfx_log_has(w.log, "wispd: stopping")) {
        FX_CHECK(fx_now() < until, "wispd did not begin to stop (see %s)", w.log);
        fx_sleep(0.005);
    }
    long resize = wfx_try("PUT", "/v1/pools/default", NULL, "{\"size\":3}");
    FX_CHECK(resize == 503 || resize == -1, "a pool resize after SIGTERM: %ld", resize);
    /* One SIGTERM only: a second, once the loop has stopped, is the default action. */
    int st = fx_reap(w.pid, 0, 60);
    w.pid = 0;
    FX_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "wispd did not exit 0 within 60 s: 0x%x (see %s)", st, w.log);
    fx_log("SIGTERM during the open: wispd stopped in %.1f s (a resize then: %ld)", fx_now() - t0,
           resize);
    FX_CHECK(wfx_log_has(w.log, "waiting for the streams being opened to end"),
             "wispd did not wait for the open under way (see %s)", w.log);
    int status = fx_reap(cli, 0, 30);
    FX_CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0,
             "the CLI ended with status 0x%x over a refused exec (see %s)", status, cli_log);
    FX_CHECK(wfx_log_has(cli_log, "wispd is stopping"),
             "the CLI was not told that wispd stops (see %s)", cli_log);

    wfx_start(&w, &img, state, NULL, NULL);
    g_autofree char *again = sh_file_md5("r", WFX_TOKEN_A, "kept");
    FX_CHECK(strcmp(md5, again) == 0, "kept changed: %s, then %s", md5, again);
    wfx_stop(&w, 120);
    return 0;
}
