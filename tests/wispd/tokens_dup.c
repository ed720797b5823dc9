/* tokens_dup.c: a token listed twice in the tokens file is refused (docs/operations.md).
 *
 * A token listed for two accounts used to open the account of the last line, so a copy-paste
 * slip in the tokens file granted one account's sprites to another's token.  Now:
 *   - wispd refuses to start with such a file: it exits non-zero, and its log names the file,
 *     the line and both accounts;
 *   - a reload (SIGHUP) of such a file fails the same way and the old tokens stay: alice's
 *     token still opens alice's sprite, and is not bob's. */
#include "wispd_fixture.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* alice's token again, for bob, on line 4. */
#define TD_DUP_TOKENS                                                                              \
    "# account token\nalice " WFX_TOKEN_A "\nbob " WFX_TOKEN_B "\nbob " WFX_TOKEN_A "\n"
#define TD_MESSAGE                                                                                 \
    ":4: this token (of account 'bob') is already listed, for account 'alice': each token must "   \
    "be listed once"

static void td_write(const char *path, const char *text)
{
    FX_CHECK(g_file_set_contents(path, text, -1, NULL) && chmod(path, 0600) == 0, "write %s", path);
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd_tokens_dup");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    g_autofree char *tokens = g_strdup_printf("%s/dup-tokens", fx_tmpdir());
    g_autofree char *conf = g_strdup_printf("%s/dup.conf", fx_tmpdir());
    g_autofree char *sock = g_strdup_printf("%s/dup.sock", fx_tmpdir());
    g_autofree char *log = g_strdup_printf("%s/dup-start.log", fx_tmpdir());
    g_autofree char *image_dir = g_path_get_dirname(img.kernel);
    td_write(tokens, TD_DUP_TOKENS);
    td_write(conf, "[wispd]\npool-size = 1\nmemory-mib = 256\n");

    /* Start: refused. */
    const char *argv[] = {fx_need_env("WISP_TEST_WISPD"),
                          "--config",
                          conf,
                          "--state-dir",
                          state,
                          "--image-dir",
                          image_dir,
                          "--tokens",
                          tokens,
                          "--listen",
                          sock,
                          "--plugin",
                          fx_need_env("WISP_TEST_PLUGIN"),
                          "--wisp-cli",
                          fx_need_env("WISP_TEST_CLI"),
                          NULL};
    pid_t pid = fx_spawn(argv, log, NULL);
    int st = 0;
    double t0 = fx_now();
    while (!fx_exited(pid, &st)) {
        if (fx_now() - t0 > 60 || g_file_test(sock, G_FILE_TEST_EXISTS)) {
            fx_reap(pid, SIGTERM, 60);
            FX_CHECK(false, "wispd started with a token listed twice; see %s", log);
        }
        fx_sleep(0.1);
    }
    FX_CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0, "wispd exited 0x%x with a token listed twice",
             st);
    g_autofree char *want = g_strdup_printf("%s%s", tokens, TD_MESSAGE);
    FX_CHECK(wfx_log_has(log, want), "wispd's log does not say '%s'; see %s", want, log);
    fx_log("start refused: %s", want);

    /* Reload: refused, the old tokens stay. */
    wfx_start(&w, &img, state, NULL, NULL);
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"mine\"}");
    td_write(w.tokens, TD_DUP_TOKENS);
    FX_CHECK(kill(w.pid, SIGHUP) == 0, "SIGHUP");
    g_autofree char *want_reload = g_strdup_printf("%s%s", w.tokens, TD_MESSAGE);
    for (t0 = fx_now(); !wfx_log_has(w.log, want_reload); fx_sleep(0.1))
        FX_CHECK(fx_now() - t0 < 30, "no reload error in %s", w.log);
    FX_CHECK(wfx_log_has(w.log, "(the old tokens stay)"), "the reload error does not say so");
    wfx_expect_free(200, "GET", "/v1/sprites/mine", WFX_TOKEN_A, NULL);
    wfx_expect_free(404, "GET", "/v1/sprites/mine", WFX_TOKEN_B, NULL);

    wfx_stop(&w, 120);
    return 0;
}
