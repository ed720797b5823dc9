/* wispd_fixture.c: a real wispd and its API for the tests in tests/wispd/ (wispd_fixture.h). */
#include "wispd_fixture.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The socket of the wispd started last: the one the HTTP helpers talk to. */
static char wfx_socket[700];

/* At exit, after the test's own children (wispd) are gone or not: QEMUs outlive a wispd that
 * was killed (template.c), so any process that names this test's directory goes too, before
 * the directory is removed under it.  Registered after fx_setup's handler, so it runs first. */
static void wfx_kill_leftovers(void)
{
    for (int round = 0; round < 3; round++) {
        GArray *pids = wfx_processes("", fx_tmpdir());
        for (guint i = 0; i < pids->len; i++)
            kill(g_array_index(pids, pid_t, i), SIGKILL);
        guint n = pids->len;
        g_array_unref(pids);
        if (n == 0)
            return;
        fx_sleep(0.2);
    }
}

void wfx_init(struct vmf_image *img)
{
    atexit(wfx_kill_leftovers);
    vmf_image_get(img, true);
    FX_CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == 0, "curl_global_init");
}

void wfx_start(struct wispd_fx *w, const struct vmf_image *img, const char *state,
               const char *conf_extra, const char *const *extra_args)
{
    g_autofree char *image_dir = g_path_get_dirname(img->kernel);

    memset(w, 0, sizeof *w);
    /* As /var/lib is: QEMU, which wispd runs as wisp-qemu, reaches nbdkit's socket through the
     * state directory (wispd gives that one to its group) and the directories above it. */
    FX_CHECK(chmod(fx_tmpdir(), 0711) == 0, "chmod %s", fx_tmpdir());
    g_strlcpy(w->state, state, sizeof w->state);
    g_strlcpy(w->image_dir, image_dir, sizeof w->image_dir);
    snprintf(w->socket, sizeof w->socket, "%s/api.sock", fx_tmpdir());
    snprintf(w->tokens, sizeof w->tokens, "%s/tokens", fx_tmpdir());
    snprintf(w->conf, sizeof w->conf, "%s/wispd.conf", fx_tmpdir());
    /* One log per start, so that a restart does not hide the first run's story. */
    for (int i = 0;; i++) {
        snprintf(w->log, sizeof w->log, "%s/wispd-%d.log", fx_tmpdir(), i);
        if (!g_file_test(w->log, G_FILE_TEST_EXISTS))
            break;
    }
    g_strlcpy(wfx_socket, w->socket, sizeof wfx_socket);

    FX_CHECK(g_file_set_contents(w->tokens,
                                 "# account token\nalice " WFX_TOKEN_A "\nbob " WFX_TOKEN_B "\n",
                                 -1, NULL) &&
                 chmod(w->tokens, 0600) == 0,
             "write %s", w->tokens);
    g_autofree char *conf = g_strdup_printf("[wispd]\npool-size = 1\nmemory-mib = 256\n%s\n",
                                            conf_extra ? conf_extra : "");
    FX_CHECK(g_file_set_contents(w->conf, conf, -1, NULL), "write %s", w->conf);

    GPtrArray *argv = g_ptr_array_new();
    const char *fixed[] = {fx_need_env("WISP_TEST_WISPD"),
                           "--config",
                           w->conf,
                           "--state-dir",
                           w->state,
                           "--image-dir",
                           w->image_dir,
                           "--tokens",
                           w->tokens,
                           "--listen",
                           w->socket,
                           "--plugin",
                           fx_need_env("WISP_TEST_PLUGIN"),
                           "--wisp-cli",
                           fx_need_env("WISP_TEST_CLI")};
    for (size_t i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(argv, (char *)fixed[i]);
    for (size_t i = 0; extra_args && extra_args[i]; i++)
        g_ptr_array_add(argv, (char *)extra_args[i]);
    g_ptr_array_add(argv, NULL);
    const char *env[] = {"WISP_LOG_LEVEL=info", NULL};

    /* A wispd killed with SIGKILL leaves its socket; wispd makes a new one once it serves. */
    unlink(w->socket);
    double t0 = fx_now();
    w->pid = fx_spawn((const char *const *)argv->pdata, w->log, env);
    g_ptr_array_free(argv, TRUE);
    for (;;) {
        int st;
        FX_CHECK(!fx_exited(w->pid, &st), "wispd exited (status 0x%x) while starting; see %s", st,
                 w->log);
        FX_CHECK(fx_now() - t0 < 120, "wispd did not answer within 120 s; see %s", w->log);
        if (g_file_test(w->socket, G_FILE_TEST_EXISTS))
            break;
        fx_sleep(0.1);
    }
    w->started_s = fx_now() - t0;
    fx_log("wispd %d up in %.2f s (state %s, log %s)", (int)w->pid, w->started_s, w->state, w->log);
}

double wfx_stop(struct wispd_fx *w, double timeout_s)
{
    double t0 = fx_now();
    int st = fx_reap(w->pid, SIGTERM, timeout_s);
    double took = fx_now() - t0;
    fx_log("SIGTERM: wispd exited in %.2f s, status 0x%x", took, st);
    FX_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wispd did not exit cleanly: 0x%x (see %s)", st,
             w->log);
    w->pid = 0;
    return took;
}

void wfx_kill(struct wispd_fx *w)
{
    int st = fx_reap(w->pid, SIGKILL, 10);
    fx_log("wispd %d killed (status 0x%x)", (int)w->pid, st);
    w->pid = 0;
}

static size_t wfx_collect(char *data, size_t size, size_t n, void *opaque)
{
    g_string_append_len(opaque, data, (gssize)(size * n));
    return size * n;
}

/* One request: to base (a URL without the path), or over the unix socket of the current wispd
 * when base is NULL.  The answer goes to `answer`; *status is the HTTP status, left alone when
 * there was none (the returned code says why). */
static CURLcode wfx_perform(const char *base, const char *method, const char *path,
                            const char *token, const char *body, size_t body_len, GString *answer,
                            long *status)
{
    CURL *c = curl_easy_init();
    struct curl_slist *headers = NULL;
    g_autofree char *url = g_strdup_printf("%s%s", base ? base : "http://wispd", path);

    FX_CHECK(c, "curl_easy_init");
    if (!base)
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, wfx_socket);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, wfx_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 180L);
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
    if (r == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    return r;
}

JsonObject *wfx_http_at(const char *base, const char *method, const char *path, const char *token,
                        const char *body, size_t body_len, long *status)
{
    GString *answer = g_string_new(NULL);
    CURLcode r = wfx_perform(base, method, path, token, body, body_len, answer, status);
    FX_CHECK(r == CURLE_OK, "%s %s%s: %s", method, base ? base : "", path, curl_easy_strerror(r));

    JsonParser *p = json_parser_new();
    FX_CHECK(json_parser_load_from_data(p, answer->str, (gssize)answer->len, NULL) &&
                 JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)),
             "%s %s%s (%ld): not a JSON object: '%s'", method, base ? base : "", path, *status,
             answer->str);
    JsonObject *o = json_object_ref(json_node_get_object(json_parser_get_root(p)));
    g_object_unref(p);
    g_string_free(answer, TRUE);
    return o;
}

JsonObject *wfx_http(const char *method, const char *path, const char *token, const char *body,
                     size_t body_len, long *status)
{
    return wfx_http_at(NULL, method, path, token, body, body_len, status);
}

long wfx_try(const char *method, const char *path, const char *token, const char *body)
{
    GString *answer = g_string_new(NULL);
    long status = -1; /* stays so when wispd did not answer */
    wfx_perform(NULL, method, path, token, body, body ? strlen(body) : 0, answer, &status);
    g_string_free(answer, TRUE);
    return status;
}

pid_t wfx_post_async(const char *token, const char *path, const char *body, const char *log)
{
    g_autofree char *auth = g_strdup_printf("Authorization: Bearer %s", token);
    g_autofree char *url = g_strdup_printf("http://wispd%s", path);
    /* The body to stderr and the status after it, so that both are in log. */
    const char *argv[] = {"curl",
                          "-sS",
                          "-o",
                          "/dev/stderr",
                          "-w",
                          "\nHTTP %{http_code}\\n",
                          "--unix-socket",
                          wfx_socket,
                          "-X",
                          "POST",
                          "-H",
                          auth,
                          "-d",
                          body,
                          url,
                          NULL};
    return fx_spawn(argv, log, NULL);
}

long wfx_post_wait(pid_t pid, const char *log, char **answer)
{
    int st = fx_reap(pid, 0, 600);
    FX_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "curl failed: see %s", log);
    FX_CHECK(g_file_get_contents(log, answer, NULL, NULL), "read %s", log);
    /* The last such line: curl's, after the body (which may say "HTTP " itself). */
    const char *h = g_strrstr(*answer, "\nHTTP ");
    FX_CHECK(h, "no status in %s", log);
    return strtol(h + 6, NULL, 10);
}

JsonNode *wfx_disk_json(const struct wispd_fx *w, const char *verb, const char *arg)
{
    g_autofree char *control = g_strdup_printf("%s/run/storage.ctl", w->state);
    const char *argv[] = {
        fx_need_env("WISP_TEST_CLI"), "disk", verb, "--control", control, "--json", arg, NULL};
    char *out = NULL, *err = NULL;
    int status = -1;
    GError *error = NULL;

    FX_CHECK(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                          &status, &error),
             "spawn wisp disk %s: %s", verb, error ? error->message : "?");
    FX_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "wisp disk %s %s: 0x%x: %s", verb,
             arg ? arg : "", status, err);
    JsonParser *p = json_parser_new();
    FX_CHECK(json_parser_load_from_data(p, out, -1, NULL), "wisp disk %s: not JSON: %s", verb, out);
    JsonNode *n = json_node_copy(json_parser_get_root(p));
    g_object_unref(p);
    g_free(out);
    g_free(err);
    return n;
}

JsonObject *wfx_expect_at(const char *base, long want, const char *method, const char *path,
                          const char *token, const char *body)
{
    long status = 0;
    double t0 = fx_now();
    JsonObject *o = wfx_http_at(base, method, path, token, body, body ? strlen(body) : 0, &status);
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(n, o);
    g_autofree char *text = json_to_string(n, FALSE);
    json_node_unref(n);
    fx_log("%s %s%s%s -> %ld in %.0f ms: %.300s", method, base ? base : "", path,
           token ? " (token)" : "", status, (fx_now() - t0) * 1000, text);
    FX_CHECK(status == want, "%s %s%s: %ld, expected %ld: %s", method, base ? base : "", path,
             status, want, text);
    if (want >= 400)
        FX_CHECK(json_object_has_member(o, "error"), "%s %s%s: an error without 'error'", method,
                 base ? base : "", path);
    return o;
}

JsonObject *wfx_expect(long want, const char *method, const char *path, const char *token,
                       const char *body)
{
    return wfx_expect_at(NULL, want, method, path, token, body);
}

void wfx_expect_free(long want, const char *method, const char *path, const char *token,
                     const char *body)
{
    json_object_unref(wfx_expect(want, method, path, token, body));
}

char *wfx_sh(const char *sprite, const char *token, const char *script, int want_exit)
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
    JsonObject *o = wfx_expect(200, "POST", path, token, body);
    gint64 code = json_object_get_int_member_with_default(o, "exit_code", -1);
    char *out = g_strdup(json_object_get_string_member_with_default(o, "stdout", ""));
    FX_CHECK(code == want_exit, "'%s' exited %lld, not %d (stderr: %s)", script, (long long)code,
             want_exit, json_object_get_string_member_with_default(o, "stderr", ""));
    json_object_unref(o);
    return out;
}

char *wfx_checkpoint_ids(const char *sprite, const char *token)
{
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s/checkpoints", sprite);
    JsonObject *o = wfx_expect(200, "GET", path, token, NULL);
    JsonArray *a = json_object_get_array_member(o, "checkpoints");
    GString *s = g_string_new(NULL);
    for (guint i = 0; a && i < json_array_get_length(a); i++)
        g_string_append_printf(
            s, "%s%s", i ? " " : "",
            json_object_get_string_member(json_array_get_object_element(a, i), "id"));
    json_object_unref(o);
    return g_string_free(s, FALSE);
}

char *wfx_state(const char *sprite, const char *token)
{
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s", sprite);
    JsonObject *o = wfx_expect(200, "GET", path, token, NULL);
    char *state = g_strdup(json_object_get_string_member_with_default(o, "state", ""));
    json_object_unref(o);
    return state;
}

char *wfx_cli(const char *verb, const char *name, const char *token, int want, ...)
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
    env = g_environ_setenv(env, "WISP_SOCKET", wfx_socket, TRUE);
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

GArray *wfx_processes(const char *prefix, const char *text)
{
    GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
    GDir *d = g_dir_open("/proc", 0, NULL);
    const char *name;

    FX_CHECK(d, "open /proc");
    while ((name = g_dir_read_name(d))) {
        g_autofree char *file = g_strdup_printf("/proc/%s/cmdline", name);
        g_autofree char *cmd = NULL;
        gsize len = 0;
        if (!g_ascii_isdigit(name[0]) || atoi(name) == (int)getpid() ||
            !g_file_get_contents(file, &cmd, &len, NULL))
            continue;
        for (gsize i = 0; i < len; i++)
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        if (g_str_has_prefix(cmd, prefix) && strstr(cmd, text)) {
            fx_log("found pid %s: %.200s", name, cmd);
            pid_t pid = (pid_t)atoi(name);
            g_array_append_val(pids, pid);
        }
    }
    g_dir_close(d);
    return pids;
}

pid_t wfx_find_process(const char *prefix, const char *text)
{
    GArray *pids = wfx_processes(prefix, text);
    pid_t pid = pids->len ? g_array_index(pids, pid_t, 0) : 0;
    g_array_unref(pids);
    return pid;
}

bool wfx_pid_running(pid_t pid)
{
    g_autofree char *file = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *stat = NULL;
    if (!g_file_get_contents(file, &stat, NULL, NULL))
        return false;
    /* The state follows the command's name in parentheses, which may itself hold ") ". */
    const char *close = strrchr(stat, ')');
    return close && close[1] == ' ' && close[2] != 'Z' && close[2] != 'X';
}

bool wfx_log_has(const char *log, const char *text)
{
    g_autofree char *s = NULL;
    return g_file_get_contents(log, &s, NULL, NULL) && strstr(s, text);
}

unsigned wfx_log_count(const char *log, const char *text)
{
    g_autofree char *s = NULL;
    g_auto(GStrv) parts = g_strsplit(text, "%*s ", 2);
    unsigned n = 0;
    FX_CHECK(g_file_get_contents(log, &s, NULL, NULL), "read %s", log);
    g_auto(GStrv) lines = g_strsplit(s, "\n", -1);
    for (char **l = lines; *l; l++) {
        const char *hit = strstr(*l, parts[0]);
        if (hit && (!parts[1] || strstr(hit, parts[1])))
            n++;
    }
    return n;
}
