/* wispd.c: the daemon end to end (issue 7's core), against a real wispd, nbdkit and QEMU.
 *
 *   start      wispd on a fresh state directory (file:// store, pool of 1); the API socket
 *              answers and has mode 0600
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
 * HTTP goes through libcurl on the unix socket; every answer must be a JSON object. */
#include "vm_fixture.h"

#include <curl/curl.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define TOKEN_A "alice-token-0123456789abcdef"
#define TOKEN_B "bob-token-0123456789abcdef"

static char api_socket[700];

static size_t collect(char *data, size_t size, size_t n, void *opaque)
{
    g_string_append_len(opaque, data, (gssize)(size * n));
    return size * n;
}

/* One request; returns the answer's JSON object (the test fails if it is not one). */
static JsonObject *http(const char *method, const char *path, const char *token, const char *body,
                        size_t body_len, long *status)
{
    CURL *c = curl_easy_init();
    GString *answer = g_string_new(NULL);
    struct curl_slist *headers = NULL;
    g_autofree char *url = g_strdup_printf("http://wispd%s", path);

    FX_CHECK(c, "curl_easy_init");
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, api_socket);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    if (token) {
        g_autofree char *auth = g_strdup_printf("Authorization: Bearer %s", token);
        headers = curl_slist_append(headers, auth);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    CURLcode r = curl_easy_perform(c);
    FX_CHECK(r == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(r));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);

    JsonParser *p = json_parser_new();
    FX_CHECK(json_parser_load_from_data(p, answer->str, (gssize)answer->len, NULL) &&
                 JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)),
             "%s %s (%ld): not a JSON object: '%s'", method, path, *status, answer->str);
    JsonObject *o = json_object_ref(json_node_get_object(json_parser_get_root(p)));
    g_object_unref(p);
    g_string_free(answer, TRUE);
    return o;
}

/* A request that must answer `want`; returns the answer (json_object_unref it). */
static JsonObject *expect(long want, const char *method, const char *path, const char *token,
                          const char *body)
{
    long status = 0;
    double t0 = fx_now();
    JsonObject *o = http(method, path, token, body, body ? strlen(body) : 0, &status);
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(n, o);
    g_autofree char *text = json_to_string(n, FALSE);
    json_node_unref(n);
    fx_log("%s %s%s -> %ld in %.0f ms: %.300s", method, path, token ? " (token)" : "", status,
           (fx_now() - t0) * 1000, text);
    FX_CHECK(status == want, "%s %s: %ld, expected %ld: %s", method, path, status, want, text);
    if (want >= 400)
        FX_CHECK(json_object_has_member(o, "error"), "%s %s: an error without 'error'", method,
                 path);
    return o;
}

static void expect_free(long want, const char *method, const char *path, const char *token,
                        const char *body)
{
    json_object_unref(expect(want, method, path, token, body));
}

/* Runs sh -c script in the sprite as token's account; returns stdout (g_free it). */
static char *sh(const char *sprite, const char *token, const char *script, int want_exit)
{
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s/exec", sprite);
    JsonObject *req = json_object_new();
    JsonArray *argv = json_array_new();
    json_array_add_string_element(argv, "sh");
    json_array_add_string_element(argv, "-c");
    json_array_add_string_element(argv, script);
    json_object_set_array_member(req, "argv", argv);
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, req);
    g_autofree char *body = json_to_string(n, FALSE);
    json_node_unref(n);
    JsonObject *o = expect(200, "POST", path, token, body);
    gint64 code = json_object_get_int_member_with_default(o, "exit_code", -1);
    char *out = g_strdup(json_object_get_string_member_with_default(o, "stdout", ""));
    FX_CHECK(code == want_exit, "'%s' exited %lld, not %d (stderr: %s)", script, (long long)code,
             want_exit, json_object_get_string_member_with_default(o, "stderr", ""));
    json_object_unref(o);
    return out;
}

/* Whether a process other than this test mentions path in its command line. */
static bool process_mentions(const char *path)
{
    GDir *d = g_dir_open("/proc", 0, NULL);
    const char *name;
    bool found = false;

    FX_CHECK(d, "open /proc");
    while (!found && (name = g_dir_read_name(d))) {
        g_autofree char *file = g_strdup_printf("/proc/%s/cmdline", name);
        g_autofree char *text = NULL;
        gsize len = 0;
        if (!g_ascii_isdigit(name[0]) || atoi(name) == (int)getpid() ||
            !g_file_get_contents(file, &text, &len, NULL))
            continue;
        for (gsize i = 0; i < len; i++)
            if (text[i] == '\0')
                text[i] = ' ';
        if (strstr(text, path)) {
            fx_log("still running: pid %s: %s", name, text);
            found = true;
        }
    }
    g_dir_close(d);
    return found;
}

/* Runs `wisp VERB [NAME] ARGS...` against wispd (stdin "from-stdin"); checks its exit code and
 * returns its stdout (g_free it).  token: WISP_TOKEN, or NULL for none. */
static char *cli(const char *verb, const char *name, const char *token, int want, ...)
    __attribute__((sentinel));
static char *cli(const char *verb, const char *name, const char *token, int want, ...)
{
    GPtrArray *argv = g_ptr_array_new();
    va_list ap;
    const char *a;

    g_ptr_array_add(argv, (char *)fx_need_env("WISP_TEST_CLI"));
    g_ptr_array_add(argv, (char *)verb);
    if (name)
        g_ptr_array_add(argv, (char *)name);
    va_start(ap, want);
    while ((a = va_arg(ap, const char *)))
        g_ptr_array_add(argv, (char *)a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    g_auto(GStrv) env = g_get_environ();
    env = g_environ_setenv(env, "WISP_SOCKET", api_socket, TRUE);
    env = token ? g_environ_setenv(env, "WISP_TOKEN", token, TRUE)
                : g_environ_unsetenv(env, "WISP_TOKEN");
    g_autofree char *in_path = g_strdup_printf("%s/cli-stdin", fx_tmpdir());
    FX_CHECK(g_file_set_contents(in_path, "from-stdin\n", -1, NULL), "write %s", in_path);
    g_autofree char *cmd = g_strjoinv(" ", (char **)argv->pdata);
    char *out = NULL, *err = NULL;
    int status = -1;
    GError *error = NULL;
    /* stdin from the file: g_spawn_sync gives no stdin pipe, so run it under sh. */
    g_autofree char *line = g_strdup_printf("exec \"$@\" < '%s'", in_path);
    GPtrArray *sh_argv = g_ptr_array_new();
    g_ptr_array_add(sh_argv, "/bin/sh");
    g_ptr_array_add(sh_argv, "-c");
    g_ptr_array_add(sh_argv, line);
    g_ptr_array_add(sh_argv, "sh");
    for (guint i = 0; i + 1 < argv->len; i++)
        g_ptr_array_add(sh_argv, argv->pdata[i]);
    g_ptr_array_add(sh_argv, NULL);
    FX_CHECK(g_spawn_sync(NULL, (char **)sh_argv->pdata, env, G_SPAWN_DEFAULT, NULL, NULL, &out,
                          &err, &status, &error),
             "spawn %s: %s", cmd, error ? error->message : "?");
    fx_log("%s -> exit %d: %s%s", cmd, WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, err);
    FX_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == want, "%s: exit 0x%x, expected %d: %s",
             cmd, status, want, err);
    g_free(err);
    g_ptr_array_free(sh_argv, TRUE);
    g_ptr_array_free(argv, TRUE);
    return out;
}

/* The pid of the nbdkit whose command line mentions text, or 0. */
static pid_t nbdkit_serving(const char *text)
{
    GDir *d = g_dir_open("/proc", 0, NULL);
    const char *name;
    pid_t pid = 0;

    FX_CHECK(d, "open /proc");
    while (!pid && (name = g_dir_read_name(d))) {
        g_autofree char *file = g_strdup_printf("/proc/%s/cmdline", name);
        g_autofree char *cmd = NULL;
        gsize len = 0;
        if (!g_ascii_isdigit(name[0]) || !g_file_get_contents(file, &cmd, &len, NULL))
            continue;
        for (gsize i = 0; i < len; i++)
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        if (g_str_has_prefix(cmd, "nbdkit ") && strstr(cmd, text))
            pid = (pid_t)atoi(name);
    }
    g_dir_close(d);
    return pid;
}

int main(void)
{
    struct vmf_image img;
    double t_start;

    fx_setup("wispd");
    const char *wispd = fx_need_env("WISP_TEST_WISPD");
    vmf_image_get(&img, true);
    FX_CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == 0, "curl_global_init");
    g_autofree char *image_dir = g_path_get_dirname(img.kernel);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    g_autofree char *tokens = g_strdup_printf("%s/tokens", fx_tmpdir());
    g_autofree char *conf = g_strdup_printf("%s/wispd.conf", fx_tmpdir());
    g_autofree char *log = g_strdup_printf("%s/wispd.log", fx_tmpdir());
    snprintf(api_socket, sizeof api_socket, "%s/api.sock", fx_tmpdir());

    FX_CHECK(g_file_set_contents(tokens, "# account token\nalice " TOKEN_A "\nbob " TOKEN_B "\n",
                                 -1, NULL) &&
                 chmod(tokens, 0600) == 0,
             "write %s", tokens);
    /* The pool size comes from the file, the rest from flags (flags win where both say). */
    FX_CHECK(g_file_set_contents(conf, "[wispd]\npool-size = 1\nmemory-mib = 256\n", -1, NULL),
             "write %s", conf);
    const char *argv[] = {wispd,
                          "--config",
                          conf,
                          "--state-dir",
                          state,
                          "--image-dir",
                          image_dir,
                          "--tokens",
                          tokens,
                          "--listen",
                          api_socket,
                          "--plugin",
                          fx_need_env("WISP_TEST_PLUGIN"),
                          "--wisp-cli",
                          fx_need_env("WISP_TEST_CLI"),
                          NULL};
    const char *env[] = {"WISP_LOG_LEVEL=info", NULL};

    /* ---- start ---- */
    t_start = fx_now();
    pid_t pid = fx_spawn(argv, log, env);
    for (;;) {
        int st;
        FX_CHECK(!fx_exited(pid, &st), "wispd exited (status 0x%x) while starting; see %s", st,
                 log);
        FX_CHECK(fx_now() - t_start < 90, "wispd did not answer within 90 s; see %s", log);
        if (g_file_test(api_socket, G_FILE_TEST_EXISTS))
            break;
        fx_sleep(0.1);
    }
    fx_log("wispd up in %.2f s (template and base disk on a fresh state directory)",
           fx_now() - t_start);
    struct stat sst;
    FX_CHECK(stat(api_socket, &sst) == 0 && S_ISSOCK(sst.st_mode), "stat %s", api_socket);
    FX_CHECK((sst.st_mode & 0777) == 0600, "the API socket has mode %o, not 600",
             sst.st_mode & 0777);
    expect_free(200, "GET", "/v1/sprites", NULL, NULL);

    /* ---- the demo's steps ---- */
    double t0 = fx_now();
    JsonObject *made = expect(201, "POST", "/v1/sprites", TOKEN_A, "{\"name\":\"demo\"}");
    FX_CHECK(strcmp(json_object_get_string_member(made, "state"), "running") == 0,
             "a new sprite is not running");
    json_object_unref(made);
    fx_log("create: %.0f ms", (fx_now() - t0) * 1000);
    expect_free(409, "POST", "/v1/sprites", TOKEN_A, "{\"name\":\"demo\"}");
    g_autofree char *uname = sh("demo", TOKEN_A, "uname -a", 0);
    FX_CHECK(g_str_has_prefix(uname, "Linux demo "), "uname -a: %s", uname);
    g_autofree char *df = sh("demo", TOKEN_A, "df -h /", 0);
    FX_CHECK(strstr(df, "/dev/vda"), "df -h /: %s", df);
    fx_log("uname -a: %sdf -h /:\n%s", uname, df);
    g_free(sh("demo", TOKEN_A, "echo kept-by-checkpoint > /root/file && sync", 0));
    t0 = fx_now();
    JsonObject *ck = expect(201, "POST", "/v1/sprites/demo/checkpoints", TOKEN_A, NULL);
    g_autofree char *ck_id = g_strdup(json_object_get_string_member(ck, "id"));
    json_object_unref(ck);
    fx_log("checkpoint %s: %.0f ms", ck_id, (fx_now() - t0) * 1000);
    JsonObject *list = expect(200, "GET", "/v1/sprites/demo/checkpoints", TOKEN_A, NULL);
    FX_CHECK(json_array_get_length(json_object_get_array_member(list, "checkpoints")) == 1,
             "one checkpoint expected");
    json_object_unref(list);
    g_free(sh("demo", TOKEN_A, "rm /root/file && sync", 0));
    g_free(sh("demo", TOKEN_A, "test -e /root/file", 1));
    g_autofree char *restore = g_strdup_printf("/v1/sprites/demo/checkpoints/%s/restore", ck_id);
    t0 = fx_now();
    expect_free(200, "POST", restore, TOKEN_A, NULL);
    fx_log("restore: %.0f ms", (fx_now() - t0) * 1000);
    g_autofree char *back = sh("demo", TOKEN_A, "cat /root/file", 0);
    FX_CHECK(strcmp(back, "kept-by-checkpoint\n") == 0, "after the restore the file says '%s'",
             back);
    expect_free(404, "POST", "/v1/sprites/demo/checkpoints/ck99/restore", TOKEN_A, NULL);

    /* ---- accounts ---- */
    expect_free(404, "GET", "/v1/sprites/demo", TOKEN_B, NULL);
    expect_free(404, "POST", "/v1/sprites/demo/exec", TOKEN_B, "{\"argv\":[\"true\"]}");
    expect_free(404, "POST", "/v1/sprites/demo/checkpoints", TOKEN_B, NULL);
    expect_free(404, "GET", "/v1/sprites/demo/checkpoints", TOKEN_B, NULL);
    expect_free(404, "POST", restore, TOKEN_B, NULL);
    expect_free(404, "POST", "/v1/sprites/demo/sleep", TOKEN_B, NULL);
    expect_free(404, "DELETE", "/v1/sprites/demo", TOKEN_B, NULL);
    expect_free(404, "GET", "/v1/sprites/demo", NULL, NULL); /* "default" is an account too */
    JsonObject *bl = expect(200, "GET", "/v1/sprites", TOKEN_B, NULL);
    FX_CHECK(json_array_get_length(json_object_get_array_member(bl, "sprites")) == 0,
             "B sees sprites");
    json_object_unref(bl);
    expect_free(401, "GET", "/v1/sprites", "not-a-known-token-at-all", NULL);
    JsonObject *al = expect(200, "GET", "/v1/sprites", TOKEN_A, NULL);
    FX_CHECK(json_array_get_length(json_object_get_array_member(al, "sprites")) == 1,
             "A does not see exactly its one sprite");
    json_object_unref(al);

    /* ---- bad requests ---- */
    expect_free(400, "POST", "/v1/sprites", TOKEN_A, "{\"name\": \"x\"");
    expect_free(400, "POST", "/v1/sprites", TOKEN_A, "[1, 2]");
    expect_free(400, "POST", "/v1/sprites", TOKEN_A, "{\"name\":\"x\",\"image\":\"other\"}");
    expect_free(400, "POST", "/v1/sprites", TOKEN_A, "{\"name\":\"a/b\"}");
    expect_free(400, "POST", "/v1/sprites", TOKEN_A, "{\"name\":\"..\"}");
    expect_free(400, "POST", "/v1/sprites", TOKEN_A, "{\"name\":\"../etc\"}");
    expect_free(400, "POST", "/v1/sprites", TOKEN_A, "{\"name\":7}");
    expect_free(400, "POST", "/v1/sprites/demo/exec", TOKEN_A, "{\"argv\":\"uname\"}");
    expect_free(400, "POST", "/v1/sprites/demo/exec", TOKEN_A,
                "{\"argv\":[\"true\"],\"shell\":true}");
    expect_free(400, "GET", "/v1/sprites/x..y", TOKEN_A, NULL);
    expect_free(404, "GET", "/v1/sprites/a/b", TOKEN_A, NULL);
    expect_free(405, "PUT", "/v1/sprites", TOKEN_A, "{}");
    {
        size_t big = 2u << 20;
        char *body = g_malloc(big);
        memset(body, ' ', big);
        body[0] = '{';
        body[big - 1] = '}';
        long st = 0;
        JsonObject *o = http("POST", "/v1/sprites", TOKEN_A, body, big, &st);
        fx_log("a 2 MiB body -> %ld", st);
        FX_CHECK(st == 413 && json_object_has_member(o, "error"), "a 2 MiB body: %ld", st);
        json_object_unref(o);
        g_free(body);
    }
    expect_free(200, "GET", "/v1/sprites", TOKEN_A, NULL);
    g_free(sh("demo", TOKEN_A, "true", 0));

    /* ---- warm sleep and wake ---- */
    expect_free(200, "POST", "/v1/sprites/demo/sleep", TOKEN_A, NULL);
    JsonObject *g = expect(200, "GET", "/v1/sprites/demo", TOKEN_A, NULL);
    FX_CHECK(strcmp(json_object_get_string_member(g, "state"), "asleep") == 0, "not asleep");
    json_object_unref(g);
    expect_free(409, "POST", "/v1/sprites/demo/sleep", TOKEN_A, NULL);
    g_autofree char *after = sh("demo", TOKEN_A, "cat /root/file", 0); /* wakes it */
    FX_CHECK(strcmp(after, "kept-by-checkpoint\n") == 0, "after the wake: '%s'", after);
    expect_free(409, "POST", "/v1/sprites/demo/wake", TOKEN_A, NULL);

    /* ---- delete, and a sprite left running for the stop ---- */
    expect_free(200, "DELETE", "/v1/sprites/demo", TOKEN_A, NULL);
    expect_free(404, "GET", "/v1/sprites/demo", TOKEN_A, NULL);
    expect_free(404, "DELETE", "/v1/sprites/demo", TOKEN_A, NULL);
    expect_free(201, "POST", "/v1/sprites", NULL, "{\"name\":\"left-running\"}");

    /* ---- the wisp CLI on the API ---- */
    g_autofree char *cli_out = cli("exec", "left-running", NULL, 3, "-i", "--", "sh", "-c",
                                   "read x; echo got $x; exit 3", NULL);
    FX_CHECK(strcmp(cli_out, "got from-stdin\n") == 0, "wisp exec printed '%s'", cli_out);
    g_autofree char *cli_list = cli("list", NULL, TOKEN_B, 0, NULL);
    FX_CHECK(strcmp(cli_list, "") == 0, "wisp list as B printed '%s'", cli_list);
    g_autofree char *cli_list_a = cli("list", NULL, NULL, 0, NULL);
    FX_CHECK(g_str_has_prefix(cli_list_a, "left-running ") && strstr(cli_list_a, "running\n"),
             "wisp list printed '%s'", cli_list_a);
    g_free(cli("exec", "left-running", TOKEN_B, 1, "--", "true", NULL)); /* 404: not B's */

    /* ---- nbdkit killed: wispd starts it again ---- */
    g_autofree char *nbd_sock = g_strdup_printf("%s/run/nbd.sock", state);
    pid_t nbdkit = nbdkit_serving(nbd_sock);
    FX_CHECK(nbdkit > 0, "no nbdkit serving %s", nbd_sock);
    FX_CHECK(kill(nbdkit, SIGKILL) == 0, "kill nbdkit %d", (int)nbdkit);
    t0 = fx_now();
    pid_t again = 0;
    while ((again = nbdkit_serving(nbd_sock)) == 0 || again == nbdkit) {
        FX_CHECK(fx_now() - t0 < 30, "nbdkit was not started again within 30 s");
        fx_sleep(0.1);
    }
    /* Serving again: a new sprite's disk is cloned and attached through it. */
    for (;;) {
        long st = 0;
        JsonObject *o = http("POST", "/v1/sprites", NULL, "{\"name\":\"after-restart\"}",
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
    g_free(sh("after-restart", NULL, "true", 0));

    /* ---- SIGTERM ---- */
    t0 = fx_now();
    int st = fx_reap(pid, SIGTERM, 60);
    fx_log("SIGTERM: wispd exited in %.2f s, status 0x%x", fx_now() - t0, st);
    FX_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wispd did not exit cleanly: 0x%x (see %s)", st,
             log);
    fx_sleep(0.3); /* QEMU and nbdkit are reaped by wispd; let /proc catch up */
    FX_CHECK(!process_mentions(state), "a process of wispd's state directory is still running");
    FX_CHECK(!g_file_test(api_socket, G_FILE_TEST_EXISTS), "the API socket is left behind");
    fx_log("whole test: %.1f s", fx_now() - t_start);
    curl_global_cleanup();
    return 0;
}
