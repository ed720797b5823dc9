/* exec_fast.c: `wisp exec` from the slim wisp executable (pool/wisp_main.c, libsoup's
 * WebSocket client), which returns as soon as wispd's exit message is there (pool/cli_exec.c),
 * against a real wispd, nbdkit and QEMU (TCG).
 *
 *   sleep after exec   20 times `wisp exec NAME true`, then at once (from this process) a
 *                      sleep: every one answers 200.  An open exec stream makes a sleep fail
 *                      with 409, so this guards the order the CLI relies on: wispd sends the
 *                      exit message only after the stream's hold is given back.  (It catches
 *                      a reversed order only when wispd's teardown is slower than this next
 *                      request; on an idle machine a reversed order passed it.)
 *   outputs            300 KiB on stdout (frames with 16- and 64-bit lengths) arrive byte for
 *                      byte; stdout and stderr stay apart; exit code 3 and a SIGTERM (143)
 *                      come back as the CLI's exit code
 *   stdin              the CLI's stdin (a file) reaches the process
 *   refused            an empty program name: wispd's 400 reaches the user with its status
 *                      and reason, pointing at --json ("wispd refused the exec: HTTP 400 Bad
 *                      Request (wisp exec --json shows wispd's message)"; libsoup does not
 *                      read a refused upgrade's body), and --json does show wispd's words
 *                      ("'argv' must name a program"); an unknown sprite is 404's message;
 *                      all exit 1
 *   stop               SIGTERM: wispd exits 0 */
#include "wispd_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Runs `wisp ARGS...` (NULL-terminated) with stdin from `input` (NULL: /dev/null); returns
 * its exit code (-1 when it did not exit) and its stdout and stderr (g_free them). */
static int ef_cli(const char *socket, const char *input, char **out, char **err, ...)
    __attribute__((sentinel));
static int ef_cli(const char *socket, const char *input, char **out, char **err, ...)
{
    GPtrArray *argv = g_ptr_array_new();
    va_list ap;
    const char *a;

    g_autofree char *in_path = g_strdup_printf("%s/ef-stdin", fx_tmpdir());
    FX_CHECK(g_file_set_contents(in_path, input ? input : "", -1, NULL), "write %s", in_path);
    g_autofree char *line = g_strdup_printf("exec \"$@\" < '%s'", input ? in_path : "/dev/null");
    g_ptr_array_add(argv, "/bin/sh");
    g_ptr_array_add(argv, "-c");
    g_ptr_array_add(argv, line);
    g_ptr_array_add(argv, "sh");
    g_ptr_array_add(argv, (char *)fx_need_env("WISP_TEST_CLI"));
    va_start(ap, err);
    while ((a = va_arg(ap, const char *)))
        g_ptr_array_add(argv, (char *)a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    g_auto(GStrv) env = g_get_environ();
    env = g_environ_setenv(env, "WISP_SOCKET", socket, TRUE);
    env = g_environ_setenv(env, "WISP_TOKEN", WFX_TOKEN_A, TRUE);
    int status = -1;
    GError *error = NULL;
    FX_CHECK(g_spawn_sync(NULL, (char **)argv->pdata, env, G_SPAWN_DEFAULT, NULL, NULL, out, err,
                          &status, &error),
             "spawn wisp: %s", error ? error->message : "?");
    g_ptr_array_free(argv, TRUE);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;
    char *out = NULL, *err = NULL;
    int code;

    fx_setup("wispd-exec-fast");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, "idle-warm = 0\nidle-cold = 0\n", NULL);
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"fast\"}");

    /* ---- sleep after exec ---- */
    for (int i = 0; i < 20; i++) {
        code = ef_cli(w.socket, NULL, &out, &err, "exec", "fast", "true", NULL);
        FX_CHECK(code == 0, "run %d: wisp exec fast true: %d '%s'", i, code, err);
        g_clear_pointer(&out, g_free);
        g_clear_pointer(&err, g_free);
        /* At once, from this process (no CLI start in between). */
        long status = wfx_try("POST", "/v1/sprites/fast/sleep", WFX_TOKEN_A, NULL);
        FX_CHECK(status == 200, "run %d: a sleep right after wisp exec answered %ld", i, status);
    }
    fx_log("20 sleeps right after an exec: all succeeded");

    /* ---- outputs and exit codes ---- */
    code = ef_cli(w.socket, NULL, &out, &err, "exec", "fast", "--", "sh", "-c",
                  "head -c 307200 /dev/zero | tr '\\0' x; echo to-err >&2; exit 3", NULL);
    FX_CHECK(code == 3, "exit 3 came back as %d", code);
    FX_CHECK(strlen(out) == 307200 && strspn(out, "x") == 307200,
             "stdout: %zu bytes, %zu of them x", strlen(out), strspn(out, "x"));
    FX_CHECK(strcmp(err, "to-err\n") == 0, "stderr: '%s'", err);
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);
    code =
        ef_cli(w.socket, NULL, &out, &err, "exec", "fast", "--", "sh", "-c", "kill -TERM $$", NULL);
    FX_CHECK(code == 143, "a process killed by SIGTERM: the CLI exited %d", code);
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);

    /* ---- stdin ---- */
    code = ef_cli(w.socket, "line one\nline two\n", &out, &err, "exec", "fast", "--", "wc", "-l",
                  NULL);
    FX_CHECK(code == 0 && atoi(out) == 2, "wc -l of two lines: %d '%s' '%s'", code, out, err);
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);

    /* ---- refused upgrades ---- */
    code = ef_cli(w.socket, NULL, &out, &err, "exec", "fast", "--", "", NULL);
    FX_CHECK(code == 1 && strstr(err, "wispd refused the exec: HTTP 400 Bad Request (wisp exec "
                                      "--json shows wispd's message)"),
             "an empty program name: %d '%s'", code, err);
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);
    code = ef_cli(w.socket, NULL, &out, &err, "exec", "--json", "fast", "--", "", NULL);
    FX_CHECK(code == 1 && (strstr(out, "'argv' must name a program") ||
                           strstr(err, "'argv' must name a program")),
             "an empty program name with --json: %d '%s' '%s'", code, out, err);
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);
    code = ef_cli(w.socket, NULL, &out, &err, "exec", "nosuch", "true", NULL);
    FX_CHECK(code == 1 && strstr(err, "no sprite named 'nosuch'"), "an unknown sprite: %d '%s'",
             code, err);
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);

    wfx_stop(&w, 120);
    fx_log("exec_fast: ok");
    return 0;
}
