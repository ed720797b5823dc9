/* wispd.c: the daemon end to end (issue 7's core), against a real wispd, nbdkit and QEMU.
 *
 *   start      wispd on a fresh state directory (file:// store, pool of 1); the API socket
 *              answers and has mode 0600; every QEMU runs as wisp-qemu under seccomp
 *   demo       create a sprite, exec `uname -a` and `df -h /`, write a file, checkpoint,
 *              delete the file, restore: the file is back
 *   accounts   with bearer tokens, account B gets 404 (never 403) for A's sprite on GET, exec,
 *              checkpoint, checkpoints, restore and DELETE, and B's list is empty; an unknown
 *              token is 401
 *   bad input  malformed JSON, an unknown field, names with '/' or "..", a body over the limit:
 *              each a 4xx with a JSON error, and wispd still answers afterwards
 *   sleep      warm sleep, a second sleep refused (409), an exec wakes it
 *   CLI        `wisp exec` (stdin, the remote exit code passed through), `wisp list` per
 *              account, a 404 through the CLI
 *   nbdkit     killed with SIGKILL: wispd starts it again, and a new sprite is created
 *   stop       SIGTERM: wispd exits 0 within 60 s, and no QEMU or nbdkit of it is left
 *
 * wispd_fixture.h starts wispd and speaks HTTP to it (libcurl on the unix socket). */
#include "wispd_fixture.h"

#include <json-glib/json-glib.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* Every QEMU of this wispd (the sprite's and the pool's) runs as wisp-qemu, which scripts/deps
 * makes, under seccomp (-sandbox on, wispd's default). */
static void check_qemu_user(const char *state)
{
    struct passwd *pw = getpwnam("wisp-qemu");
    FX_CHECK(pw, "no user wisp-qemu: scripts/deps makes it");
    GArray *pids = wfx_processes("qemu-system", state);
    FX_CHECK(pids->len >= 2, "%u QEMUs, expected the sprite's and a pool member", pids->len);
    g_autofree char *uids =
        g_strdup_printf("\nUid:\t%u\t%u\t%u\t%u\n", pw->pw_uid, pw->pw_uid, pw->pw_uid, pw->pw_uid);
    g_autofree char *gids =
        g_strdup_printf("\nGid:\t%u\t%u\t%u\t%u\n", pw->pw_gid, pw->pw_gid, pw->pw_gid, pw->pw_gid);
    for (guint i = 0; i < pids->len; i++) {
        g_autofree char *path = g_strdup_printf("/proc/%d/status", g_array_index(pids, pid_t, i));
        g_autofree char *status = NULL;
        /* QEMU drops root once its set-up is done: a pool member just spawned may not be there. */
        for (double t0 = fx_now();; fx_sleep(0.2)) {
            g_free(status);
            status = NULL;
            FX_CHECK(g_file_get_contents(path, &status, NULL, NULL), "read %s", path);
            if ((strstr(status, uids) && strstr(status, gids)) || fx_now() - t0 > 30)
                break;
        }
        FX_CHECK(strstr(status, uids) && strstr(status, gids),
                 "QEMU %d does not run as wisp-qemu (%u:%u): %s", g_array_index(pids, pid_t, i),
                 pw->pw_uid, pw->pw_gid, status);
        FX_CHECK(strstr(status, "\nSeccomp:\t2\n"), "QEMU %d is not under seccomp",
                 g_array_index(pids, pid_t, i));
    }
    fx_log("%u QEMUs, all as wisp-qemu (uid %u) under seccomp", pids->len, pw->pw_uid);
    g_array_unref(pids);
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    double t_start = fx_now();

    /* ---- start ---- */
    wfx_start(&w, &img, state, NULL, NULL);
    fx_log("wispd up in %.2f s (template and base disk on a fresh state directory)", w.started_s);
    struct stat sst;
    FX_CHECK(stat(w.socket, &sst) == 0 && S_ISSOCK(sst.st_mode), "stat %s", w.socket);
    FX_CHECK((sst.st_mode & 0777) == 0600, "the API socket has mode %o, not 600",
             sst.st_mode & 0777);
    wfx_expect_free(200, "GET", "/v1/sprites", NULL, NULL);

    /* ---- the demo's steps ---- */
    double t0 = fx_now();
    JsonObject *made = wfx_expect(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"demo\"}");
    FX_CHECK(strcmp(json_object_get_string_member(made, "state"), "running") == 0,
             "a new sprite is not running");
    json_object_unref(made);
    fx_log("create: %.0f ms", (fx_now() - t0) * 1000);
    check_qemu_user(state);
    wfx_expect_free(409, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"demo\"}");
    g_autofree char *uname = wfx_sh("demo", WFX_TOKEN_A, "uname -a", 0);
    FX_CHECK(g_str_has_prefix(uname, "Linux demo "), "uname -a: %s", uname);
    g_autofree char *df = wfx_sh("demo", WFX_TOKEN_A, "df -h /", 0);
    FX_CHECK(strstr(df, "/dev/vda"), "df -h /: %s", df);
    fx_log("uname -a: %sdf -h /:\n%s", uname, df);
    g_free(wfx_sh("demo", WFX_TOKEN_A, "echo kept-by-checkpoint > /root/file && sync", 0));
    t0 = fx_now();
    JsonObject *ck = wfx_expect(201, "POST", "/v1/sprites/demo/checkpoints", WFX_TOKEN_A, NULL);
    g_autofree char *ck_id = g_strdup(json_object_get_string_member(ck, "id"));
    json_object_unref(ck);
    fx_log("checkpoint %s: %.0f ms", ck_id, (fx_now() - t0) * 1000);
    JsonObject *list = wfx_expect(200, "GET", "/v1/sprites/demo/checkpoints", WFX_TOKEN_A, NULL);
    FX_CHECK(json_array_get_length(json_object_get_array_member(list, "checkpoints")) == 1,
             "one checkpoint expected");
    json_object_unref(list);
    g_free(wfx_sh("demo", WFX_TOKEN_A, "rm /root/file && sync", 0));
    g_free(wfx_sh("demo", WFX_TOKEN_A, "test -e /root/file", 1));
    g_autofree char *restore = g_strdup_printf("/v1/sprites/demo/checkpoints/%s/restore", ck_id);
    t0 = fx_now();
    wfx_expect_free(200, "POST", restore, WFX_TOKEN_A, NULL);
    fx_log("restore: %.0f ms", (fx_now() - t0) * 1000);
    g_autofree char *back = wfx_sh("demo", WFX_TOKEN_A, "cat /root/file", 0);
    FX_CHECK(strcmp(back, "kept-by-checkpoint\n") == 0, "after the restore the file says '%s'",
             back);
    wfx_expect_free(404, "POST", "/v1/sprites/demo/checkpoints/ck99/restore", WFX_TOKEN_A, NULL);

    /* ---- accounts ---- */
    wfx_expect_free(404, "GET", "/v1/sprites/demo", WFX_TOKEN_B, NULL);
    wfx_expect_free(404, "POST", "/v1/sprites/demo/exec", WFX_TOKEN_B, "{\"argv\":[\"true\"]}");
    wfx_expect_free(404, "POST", "/v1/sprites/demo/checkpoints", WFX_TOKEN_B, NULL);
    wfx_expect_free(404, "GET", "/v1/sprites/demo/checkpoints", WFX_TOKEN_B, NULL);
    wfx_expect_free(404, "POST", restore, WFX_TOKEN_B, NULL);
    wfx_expect_free(404, "POST", "/v1/sprites/demo/sleep", WFX_TOKEN_B, NULL);
    wfx_expect_free(404, "DELETE", "/v1/sprites/demo", WFX_TOKEN_B, NULL);
    wfx_expect_free(404, "GET", "/v1/sprites/demo", NULL, NULL); /* "default" is an account too */
    JsonObject *bl = wfx_expect(200, "GET", "/v1/sprites", WFX_TOKEN_B, NULL);
    FX_CHECK(json_array_get_length(json_object_get_array_member(bl, "sprites")) == 0,
             "B sees sprites");
    json_object_unref(bl);
    wfx_expect_free(401, "GET", "/v1/sprites", "not-a-known-token-at-all", NULL);
    JsonObject *al = wfx_expect(200, "GET", "/v1/sprites", WFX_TOKEN_A, NULL);
    FX_CHECK(json_array_get_length(json_object_get_array_member(al, "sprites")) == 1,
             "A does not see exactly its one sprite");
    json_object_unref(al);

    /* ---- bad requests ---- */
    wfx_expect_free(400, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\": \"x\"");
    wfx_expect_free(400, "POST", "/v1/sprites", WFX_TOKEN_A, "[1, 2]");
    wfx_expect_free(400, "POST", "/v1/sprites", WFX_TOKEN_A,
                    "{\"name\":\"x\",\"image\":\"other\"}");
    wfx_expect_free(400, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"a/b\"}");
    wfx_expect_free(400, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"..\"}");
    wfx_expect_free(400, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"../etc\"}");
    wfx_expect_free(400, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":7}");
    wfx_expect_free(400, "POST", "/v1/sprites/demo/exec", WFX_TOKEN_A, "{\"argv\":\"uname\"}");
    wfx_expect_free(400, "POST", "/v1/sprites/demo/exec", WFX_TOKEN_A,
                    "{\"argv\":[\"true\"],\"shell\":true}");
    wfx_expect_free(400, "GET", "/v1/sprites/x..y", WFX_TOKEN_A, NULL);
    wfx_expect_free(404, "GET", "/v1/sprites/a/b", WFX_TOKEN_A, NULL);
    wfx_expect_free(405, "PUT", "/v1/sprites", WFX_TOKEN_A, "{}");
    wfx_expect_free(405, "PUT", "/v1/sprites/demo", WFX_TOKEN_A, "{}");
    wfx_expect_free(405, "GET", "/v1/sprites/demo/wake", WFX_TOKEN_A, NULL);
    wfx_expect_free(405, "GET", "/v1/sprites/demo/checkpoints/ck1/restore", WFX_TOKEN_A, NULL);
    wfx_expect_free(404, "GET", "/v1/sprites/demo/nope", WFX_TOKEN_A, NULL);
    wfx_expect_free(400, "GET", "/v1/sprites/demo/exec", WFX_TOKEN_A, NULL); /* no handshake */
    {
        size_t big = 2u << 20;
        char *body = g_malloc(big);
        memset(body, ' ', big);
        body[0] = '{';
        body[big - 1] = '}';
        long st = 0;
        JsonObject *o = wfx_http("POST", "/v1/sprites", WFX_TOKEN_A, body, big, &st);
        fx_log("a 2 MiB body -> %ld", st);
        FX_CHECK(st == 413 && json_object_has_member(o, "error"), "a 2 MiB body: %ld", st);
        json_object_unref(o);
        g_free(body);
    }
    wfx_expect_free(200, "GET", "/v1/sprites", WFX_TOKEN_A, NULL);
    g_free(wfx_sh("demo", WFX_TOKEN_A, "true", 0));

    /* ---- warm sleep and wake ---- */
    wfx_expect_free(200, "POST", "/v1/sprites/demo/sleep", WFX_TOKEN_A, NULL);
    JsonObject *g = wfx_expect(200, "GET", "/v1/sprites/demo", WFX_TOKEN_A, NULL);
    FX_CHECK(strcmp(json_object_get_string_member(g, "state"), "asleep") == 0, "not asleep");
    json_object_unref(g);
    wfx_expect_free(409, "POST", "/v1/sprites/demo/sleep", WFX_TOKEN_A, NULL);
    g_autofree char *after = wfx_sh("demo", WFX_TOKEN_A, "cat /root/file", 0); /* wakes it */
    FX_CHECK(strcmp(after, "kept-by-checkpoint\n") == 0, "after the wake: '%s'", after);
    wfx_expect_free(409, "POST", "/v1/sprites/demo/wake", WFX_TOKEN_A, NULL);

    /* ---- delete, and a sprite left running for the stop ---- */
    wfx_expect_free(200, "DELETE", "/v1/sprites/demo", WFX_TOKEN_A, NULL);
    wfx_expect_free(404, "GET", "/v1/sprites/demo", WFX_TOKEN_A, NULL);
    wfx_expect_free(404, "DELETE", "/v1/sprites/demo", WFX_TOKEN_A, NULL);
    wfx_expect_free(201, "POST", "/v1/sprites", NULL, "{\"name\":\"left-running\"}");

    /* ---- the wisp CLI on the API ---- */
    g_autofree char *cli_out = wfx_cli("exec", "left-running", NULL, 3, "-i", "--", "sh", "-c",
                                       "read x; echo got $x; exit 3", NULL);
    FX_CHECK(strcmp(cli_out, "got from-stdin\n") == 0, "wisp exec printed '%s'", cli_out);
    /* On a terminal, a call that waits shows its progress on stderr (script(1) gives it one). */
    {
        g_autofree char *cmd = g_strdup_printf(
            "WISP_SOCKET='%s' WISP_PROGRESS_AFTER_S=0 '%s' checkpoint create left-running",
            w.socket, fx_need_env("WISP_TEST_CLI"));
        const char *argv[] = {"script", "-qec", cmd, "/dev/null", NULL};
        g_autofree char *out = NULL;
        int st = -1;
        FX_CHECK(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                              NULL, &st, NULL) &&
                     WIFEXITED(st) && WEXITSTATUS(st) == 0,
                 "wisp checkpoint create on a terminal: 0x%x: %s", st, out ? out : "");
        FX_CHECK(strstr(out, "checkpoint create left-running... ") && strstr(out, " s\r\033[K"),
                 "no progress line on the terminal: '%s'", out);
        g_autofree char *shown = g_strescape(out, NULL);
        fx_log("progress on a terminal: %s", shown);
    }
    g_autofree char *cli_list = wfx_cli("list", NULL, WFX_TOKEN_B, 0, NULL);
    FX_CHECK(strcmp(cli_list, "") == 0, "wisp list as B printed '%s'", cli_list);
    g_autofree char *cli_list_a = wfx_cli("list", NULL, NULL, 0, NULL);
    FX_CHECK(g_str_has_prefix(cli_list_a, "left-running ") && strstr(cli_list_a, "running\n"),
             "wisp list printed '%s'", cli_list_a);
    g_free(wfx_cli("exec", "left-running", WFX_TOKEN_B, 1, "--", "true", NULL)); /* 404: not B's */

    /* ---- nbdkit killed: wispd starts it again ---- */
    g_autofree char *nbd_sock = g_strdup_printf("%s/run/nbd.sock", state);
    pid_t nbdkit = wfx_find_process("nbdkit ", nbd_sock);
    FX_CHECK(nbdkit > 0, "no nbdkit serving %s", nbd_sock);
    FX_CHECK(kill(nbdkit, SIGKILL) == 0, "kill nbdkit %d", (int)nbdkit);
    t0 = fx_now();
    pid_t again = 0;
    while ((again = wfx_find_process("nbdkit ", nbd_sock)) == 0 || again == nbdkit) {
        FX_CHECK(fx_now() - t0 < 30, "nbdkit was not started again within 30 s");
        fx_sleep(0.1);
    }
    /* Serving again: a new sprite's disk is cloned and attached through it. */
    for (;;) {
        long st = 0;
        JsonObject *o = wfx_http("POST", "/v1/sprites", NULL, "{\"name\":\"after-restart\"}",
                                 strlen("{\"name\":\"after-restart\"}"), &st);
        json_object_unref(o);
        if (st == 201)
            break;
        FX_CHECK(fx_now() - t0 < 30, "no sprite could be created after the nbdkit restart: %ld",
                 st);
        fx_sleep(0.5);
    }
    fx_log("nbdkit %d killed: pid %d serving again, and a sprite created, %.2f s later",
           (int)nbdkit, (int)again, fx_now() - t0);
    g_free(wfx_sh("after-restart", NULL, "true", 0));

    /* ---- SIGTERM ---- */
    wfx_stop(&w, 60);
    fx_sleep(0.3); /* QEMU and nbdkit are reaped by wispd; let /proc catch up */
    FX_CHECK(!wfx_find_process("", state), "a process of wispd's state directory is still running");
    FX_CHECK(!g_file_test(w.socket, G_FILE_TEST_EXISTS), "the API socket is left behind");
    fx_log("whole test: %.1f s", fx_now() - t_start);
    return 0;
}
