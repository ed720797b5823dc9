/* lifecycle.c: four defects of the sprite service's life cycle, against a real wispd, nbdkit
 * and QEMU (TCG), a file:// store, the idle policy's warm sleep after 1 s (idle-warm = 1) and
 * cold-store-wait = 3 s.
 *
 *   dead QEMU    a sprite's QEMU killed (SIGKILL) while a stream holds it: once the stream
 *                ends, the idle policy finds it dead, once: one log line, no failed warm sleeps
 *                (each was a warning and an audit row, every second), GET says stopped, and
 *                `wisp exec NAME -- true` exits 0 on a new claim with a file written and synced
 *                before the kill intact; killed again and exec'd at once (the exec's own path,
 *                not the policy's), the exec claims again too; killed a third time, a wake is
 *                200 (a new claim), not 409 "awake"
 *   stdin        a buffered exec of `sleep 30` with 400 KiB of stdin (more than the guest's
 *                credit, so the stdin thread waits for credit) and timeout_s 1: the answer is a
 *                clean 500, and wispd still answers (the thread used the freed session: in the
 *                sanitizer build wispd died of it)
 *   cold busy    `wisp exec s2 -- sleep 1000` open: POST .../sleep {"mode":"cold"} is 409 "open
 *                exec stream(s)" and the CLI keeps running; once it is gone the sleep is 200
 *   restore      checkpoint, cold sleep, wake, restore ck1, cold sleep again: 200 (it took the
 *                woken VM's path, found no shared RAM file and failed after cold-store-wait)
 *   stop         SIGTERM: wispd exits 0 */
#include "sleep_helpers.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONF                                                                                       \
    "idle-warm = 1\nidle-cold = 0\nmemory-low-mib = 0\nmemory-psi = 0\ncold-store-wait = 3\n"

static struct wispd_fx *lc_wispd;

/* On a failed check: wispd stops its QEMUs and nbdkit before the fixture SIGKILLs it. */
static void lc_cleanup(void)
{
    if (lc_wispd && lc_wispd->pid > 0) {
        fx_reap(lc_wispd->pid, SIGTERM, 60);
        lc_wispd->pid = 0;
    }
}

/* Whether pid has died all the way, so that its parent's waitpid() takes it: gone, or a zombie
 * whose threads have all exited.  (QEMU has several threads: its main thread shows 'Z' while
 * the others are still exiting, and until they have, waitpid() answers "still running".) */
static bool lc_reapable(pid_t pid)
{
    if (wfx_pid_running(pid))
        return false;
    g_autofree char *tasks = g_strdup_printf("/proc/%d/task", (int)pid);
    GDir *dir = g_dir_open(tasks, 0, NULL);
    if (!dir)
        return true; /* gone (reaped) */
    unsigned n = 0;
    while (g_dir_read_name(dir))
        n++;
    g_dir_close(dir);
    return n <= 1;
}

/* The one QEMU of this wispd, waiting for the pool to be left with exactly one (its member,
 * which the next claim takes: the pool holds one). */
static pid_t lc_pool_member(const struct wispd_fx *w)
{
    double until = fx_now() + 120;
    for (;;) {
        GArray *a = wfx_processes("qemu-system", w->state);
        pid_t pid = a->len == 1 ? g_array_index(a, pid_t, 0) : 0;
        g_array_unref(a);
        if (pid)
            return pid;
        FX_CHECK(fx_now() < until, "the pool never settled at one QEMU");
        fx_sleep(0.2);
    }
}

/* Starts `wisp exec NAME -- sleep 1000` and waits until the process runs in the guest. */
static pid_t lc_stream_open(const struct wispd_fx *w, const char *name, const char *log)
{
    g_autofree char *sock = g_strdup_printf("WISP_SOCKET=%s", w->socket);
    const char *env[] = {sock, "WISP_TOKEN=" WFX_TOKEN_A, NULL};
    const char *argv[] = {fx_need_env("WISP_TEST_CLI"), "exec", name, "--", "sleep", "1000", NULL};
    pid_t pid = fx_spawn(argv, log, env);
    double until = fx_now() + 60;
    for (;;) {
        g_autofree char *n = wfx_sh(name, WFX_TOKEN_A, "ps | grep -c '[s]leep 1000' || true", 0);
        if (atoi(n) > 0)
            return pid;
        FX_CHECK(fx_now() < until, "sleep 1000 never started in %s (see %s)", name, log);
        fx_sleep(0.5);
    }
}

/* Kills the QEMU of the one sprite this wispd runs (SIGKILL), once the pool refilled after its
 * claim, and waits until wispd can reap it (dead, with all its threads). */
static void lc_kill_claimed(const struct wispd_fx *w)
{
    pid_t qemu = 0;
    double until = fx_now() + 120;
    while (!qemu) {
        /* The sprite's QEMU was the pool member before the claim: the refill is newer. */
        GArray *a = wfx_processes("qemu-system", w->state);
        if (a->len == 2)
            qemu = MIN(g_array_index(a, pid_t, 0), g_array_index(a, pid_t, 1));
        g_array_unref(a);
        FX_CHECK(qemu || fx_now() < until, "the pool never refilled");
        if (!qemu)
            fx_sleep(0.2);
    }
    FX_CHECK(kill(qemu, SIGKILL) == 0, "kill %d", (int)qemu);
    while (!lc_reapable(qemu))
        fx_sleep(0.01);
}

static void lc_check_dead_qemu(const struct wispd_fx *w)
{
    pid_t qemu = lc_pool_member(w);
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"d1\"}");
    FX_CHECK(wfx_pid_running(qemu), "the pool member %d is gone after the claim", (int)qemu);
    g_autofree char *md5 = sh_file_write("d1", WFX_TOKEN_A, "d1.bin");

    /* The stream holds the sprite awake, so it is running (not warm-asleep) when QEMU dies. */
    g_autofree char *cli_log = g_strdup_printf("%s/d1-stream.log", fx_tmpdir());
    pid_t cli = lc_stream_open(w, "d1", cli_log);
    FX_CHECK(kill(qemu, SIGKILL) == 0, "kill %d", (int)qemu);
    fx_reap(cli, 0, 60); /* its connection to the guest closed: it ends by itself */
    double t0 = fx_now();
    sh_wait_state("d1", WFX_TOKEN_A, "stopped/", 30);
    fx_log("dead QEMU: stopped %.1f s after the stream ended", fx_now() - t0);
    fx_sleep(4); /* four more ticks of the idle policy */
    unsigned noticed = wfx_log_count(w->log, "alice/d1: QEMU exited unasked");
    unsigned failed = wfx_log_count(w->log, "alice/d1: warm sleep");
    fx_log("dead QEMU: noticed %u time(s), %u failed warm sleep(s)", noticed, failed);
    FX_CHECK(noticed == 1 && failed == 0,
             "a dead QEMU: noticed %u time(s) and %u failed warm sleeps (see %s)", noticed, failed,
             w->log);
    g_free(wfx_cli("exec", "d1", WFX_TOKEN_A, 0, "--", "true", NULL));
    g_autofree char *md5_after = sh_file_md5("d1", WFX_TOKEN_A, "d1.bin");
    FX_CHECK(strcmp(md5, md5_after) == 0, "d1.bin changed over the QEMU's death");

    /* Killed again and exec'd at once: the exec finds it dead before the idle policy does. */
    lc_kill_claimed(w);
    g_free(wfx_cli("exec", "d1", WFX_TOKEN_A, 0, "--", "true", NULL));
    FX_CHECK(wfx_log_count(w->log, "alice/d1: QEMU exited unasked") == 2,
             "the second death was not noticed (see %s)", w->log);
    /* And a wake: a dead QEMU is not awake (it was 409 "awake", or 500 from warm-asleep). */
    lc_kill_claimed(w);
    wfx_expect_free(200, "POST", "/v1/sprites/d1/wake", WFX_TOKEN_A, NULL);
    FX_CHECK(wfx_log_count(w->log, "alice/d1: QEMU exited unasked") == 3,
             "the third death was not noticed (see %s)", w->log);
    g_autofree char *md5_again = sh_file_md5("d1", WFX_TOKEN_A, "d1.bin");
    FX_CHECK(strcmp(md5, md5_again) == 0, "d1.bin changed over the second and third deaths");
    wfx_expect_free(200, "DELETE", "/v1/sprites/d1", WFX_TOKEN_A, NULL);
}

static void lc_check_stdin_timeout(void)
{
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"feed\"}");
    GString *body = g_string_new("{\"argv\":[\"sleep\",\"30\"],\"timeout_s\":1,\"stdin\":\"");
    for (int i = 0; i < 400 * 1024; i++)
        g_string_append_c(body, 'a');
    g_string_append(body, "\"}");
    double t0 = fx_now();
    JsonObject *o = wfx_expect(500, "POST", "/v1/sprites/feed/exec", WFX_TOKEN_A, body->str);
    fx_log("stdin: answered in %.1f s: %s", fx_now() - t0,
           json_object_get_string_member_with_default(o, "error", "?"));
    json_object_unref(o);
    g_string_free(body, TRUE);
    wfx_expect_free(200, "GET", "/v1/sprites", WFX_TOKEN_A, NULL);
    g_autofree char *out = wfx_sh("feed", WFX_TOKEN_A, "echo alive", 0);
    FX_CHECK(strcmp(out, "alive\n") == 0, "an exec after the timeout printed '%s'", out);
}

static void lc_check_cold_busy(const struct wispd_fx *w)
{
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"s2\"}");
    g_autofree char *cli_log = g_strdup_printf("%s/s2-stream.log", fx_tmpdir());
    pid_t cli = lc_stream_open(w, "s2", cli_log);
    JsonObject *o =
        wfx_expect(409, "POST", "/v1/sprites/s2/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    const char *msg = json_object_get_string_member_with_default(o, "error", "");
    FX_CHECK(strstr(msg, "open exec stream"), "the cold sleep's 409 says '%s'", msg);
    json_object_unref(o);
    FX_CHECK(!fx_exited(cli, NULL), "the CLI exited over a refused cold sleep (see %s)", cli_log);
    g_autofree char *n = wfx_sh("s2", WFX_TOKEN_A, "ps | grep -c '[s]leep 1000' || true", 0);
    FX_CHECK(atoi(n) == 1, "sleep 1000 is not running after the refused sleep");
    fx_reap(cli, SIGKILL, 10);
    /* The stream ends once wispd notices the disconnect: then the sprite may sleep. */
    double until = fx_now() + 60;
    while (wfx_try("POST", "/v1/sprites/s2/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}") != 200) {
        FX_CHECK(fx_now() < until, "no cold sleep of s2 within 60 s of its stream's end");
        fx_sleep(0.5);
    }
    g_autofree char *st = sh_state("s2", WFX_TOKEN_A);
    FX_CHECK(strcmp(st, "asleep/cold") == 0, "s2 is %s after its cold sleep", st);
}

static void lc_check_restore_then_cold(void)
{
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"r1\"}");
    g_autofree char *md5 = sh_file_write("r1", WFX_TOKEN_A, "r1.bin");
    JsonObject *ck = wfx_expect(201, "POST", "/v1/sprites/r1/checkpoints", WFX_TOKEN_A, NULL);
    g_autofree char *id = g_strdup(json_object_get_string_member_with_default(ck, "id", ""));
    json_object_unref(ck);
    FX_CHECK(strcmp(id, "ck1") == 0, "the first checkpoint is '%s'", id);
    wfx_expect_free(200, "POST", "/v1/sprites/r1/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    g_free(wfx_sh("r1", WFX_TOKEN_A, "true", 0)); /* a cold wake: the VM's RAM is shared */
    wfx_expect_free(200, "POST", "/v1/sprites/r1/checkpoints/ck1/restore", WFX_TOKEN_A, NULL);
    double t0 = fx_now();
    wfx_expect_free(200, "POST", "/v1/sprites/r1/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    fx_log("restore: the cold sleep after it took %.1f s", fx_now() - t0);
    g_autofree char *md5_after = sh_file_md5("r1", WFX_TOKEN_A, "r1.bin");
    FX_CHECK(strcmp(md5, md5_after) == 0, "r1.bin changed over restore and cold sleep");
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd-lifecycle");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, CONF, NULL);
    lc_wispd = &w;
    atexit(lc_cleanup);

    lc_check_dead_qemu(&w);
    lc_check_stdin_timeout();
    lc_check_cold_busy(&w);
    lc_check_restore_then_cold();

    double took = wfx_stop(&w, 240);
    fx_log("stop: wispd exited 0 in %.1f s", took);
    lc_wispd = NULL;
    return 0;
}
