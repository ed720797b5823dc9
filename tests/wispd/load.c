/* load.c: wispd under many requests at once, and clients that go away (issue 7's bad-request
 * tests).
 *
 *   1,000 concurrent connections, each one request, a mix of: list (200), get (200), an
 *   unknown sprite (404), another account's sprite (404), malformed JSON (400), an unknown
 *   token (401).  Every one must get its own status and a JSON body; none may fail to connect.
 *   100 concurrent execs on one sprite, each printing its own number back.
 *   Clients that disconnect: during an exec, and half-way through sending a body.
 *   Then wispd still answers, and its open files are back to what they were (no leak). */
#include "wispd_fixture.h"

#include <curl/curl.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CONCURRENT 1000
#define EXECS      100

struct load_request {
    CURL *c;
    struct curl_slist *headers;
    GString *body_in;
    char *body_out;
    long want;
    const char *expect_text; /* must appear in the answer, or NULL */
};

static size_t load_collect(char *data, size_t size, size_t n, void *opaque)
{
    g_string_append_len(opaque, data, (gssize)(size * n));
    return size * n;
}

static void load_request_init(struct load_request *r, const char *socket, const char *method,
                              const char *path, const char *token, const char *body, long want)
{
    g_autofree char *url = g_strdup_printf("http://wispd%s", path);
    r->c = curl_easy_init();
    FX_CHECK(r->c, "curl_easy_init");
    r->body_in = g_string_new(NULL);
    r->want = want;
    curl_easy_setopt(r->c, CURLOPT_UNIX_SOCKET_PATH, socket);
    curl_easy_setopt(r->c, CURLOPT_URL, url);
    curl_easy_setopt(r->c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(r->c, CURLOPT_WRITEFUNCTION, load_collect);
    curl_easy_setopt(r->c, CURLOPT_WRITEDATA, r->body_in);
    curl_easy_setopt(r->c, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(r->c, CURLOPT_FORBID_REUSE, 1L); /* one connection per request */
    r->headers = curl_slist_append(NULL, "Expect:");
    if (token) {
        g_autofree char *auth = g_strdup_printf("Authorization: Bearer %s", token);
        r->headers = curl_slist_append(r->headers, auth);
    }
    curl_easy_setopt(r->c, CURLOPT_HTTPHEADER, r->headers);
    if (body) {
        r->body_out = g_strdup(body);
        curl_easy_setopt(r->c, CURLOPT_POSTFIELDS, r->body_out);
    }
}

/* Runs all n at once (curl multi, no connection limit) and checks each answer. */
static void load_run(struct load_request *rs, size_t n, const char *what)
{
    CURLM *m = curl_multi_init();
    int running = 0;
    double t0 = fx_now();

    FX_CHECK(m, "curl_multi_init");
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    for (size_t i = 0; i < n; i++)
        curl_multi_add_handle(m, rs[i].c);
    do {
        FX_CHECK(curl_multi_perform(m, &running) == CURLM_OK, "curl_multi_perform");
        if (running)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    } while (running);
    size_t failed = 0;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE && msg->data.result != CURLE_OK) {
            if (failed++ < 5)
                fx_log("%s: a request failed: %s", what, curl_easy_strerror(msg->data.result));
        }
    FX_CHECK(failed == 0, "%s: %zu of %zu requests got no answer", what, failed, n);
    for (size_t i = 0; i < n; i++) {
        long status = 0;
        curl_easy_getinfo(rs[i].c, CURLINFO_RESPONSE_CODE, &status);
        FX_CHECK(status == rs[i].want, "%s: request %zu answered %ld, not %ld: %s", what, i, status,
                 rs[i].want, rs[i].body_in->str);
        FX_CHECK(rs[i].body_in->len && rs[i].body_in->str[0] == '{',
                 "%s: request %zu: not JSON: %s", what, i, rs[i].body_in->str);
        FX_CHECK(!rs[i].expect_text || strstr(rs[i].body_in->str, rs[i].expect_text),
                 "%s: request %zu: '%s' not in %s", what, i, rs[i].expect_text, rs[i].body_in->str);
        curl_multi_remove_handle(m, rs[i].c);
        curl_easy_cleanup(rs[i].c);
        curl_slist_free_all(rs[i].headers);
        g_string_free(rs[i].body_in, TRUE);
        g_free(rs[i].body_out);
    }
    curl_multi_cleanup(m);
    fx_log("%s: %zu requests at once, every answer right, in %.2f s", what, n, fx_now() - t0);
}

static unsigned open_fds(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    unsigned n = 0;
    FX_CHECK(d, "opendir %s", path);
    while (readdir(d))
        n++;
    closedir(d);
    return n - 2;
}

/* Connects, sends the head of a request whose body never comes, and closes. */
static void send_half_and_close(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    FX_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "connect %s",
             path);
    const char *head = "POST /v1/sprites HTTP/1.1\r\nHost: wispd\r\nContent-Type: "
                       "application/json\r\nContent-Length: 1000\r\n\r\n{\"name\":";
    FX_CHECK(write(fd, head, strlen(head)) == (ssize_t)strlen(head), "write");
    close(fd);
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd_load");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, NULL, NULL);
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"s\"}");
    g_free(wfx_sh("s", WFX_TOKEN_A, "true", 0));
    /* The baseline once the pool has refilled the member the create took: the same count
     * four times in a row. */
    unsigned fds_before = open_fds(w.pid);
    for (int same = 0, tries = 0; same < 4 && tries < 120; fx_sleep(0.5), tries++) {
        unsigned now = open_fds(w.pid);
        same = now == fds_before ? same + 1 : 0;
        fds_before = now;
    }
    /* This test holds a connection per request, 1,000 at once. */
    struct rlimit rl;
    FX_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
    rl.rlim_cur = rl.rlim_max;
    FX_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > CONCURRENT + 100,
             "open files limit %llu is too low for %d connections", (unsigned long long)rl.rlim_cur,
             CONCURRENT);

    /* ---- 1,000 at once ---- */
    struct load_request *rs = g_new0(struct load_request, CONCURRENT);
    for (size_t i = 0; i < CONCURRENT; i++) {
        struct load_request *r = &rs[i];
        switch (i % 6) {
        case 0:
            load_request_init(r, w.socket, "GET", "/v1/sprites", WFX_TOKEN_A, NULL, 200);
            r->expect_text = "\"s\"";
            break;
        case 1:
            load_request_init(r, w.socket, "GET", "/v1/sprites/s", WFX_TOKEN_A, NULL, 200);
            break;
        case 2:
            load_request_init(r, w.socket, "GET", "/v1/sprites/nope", WFX_TOKEN_A, NULL, 404);
            break;
        case 3:
            load_request_init(r, w.socket, "GET", "/v1/sprites/s", WFX_TOKEN_B, NULL, 404);
            break;
        case 4:
            load_request_init(r, w.socket, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":", 400);
            break;
        default:
            load_request_init(r, w.socket, "GET", "/v1/sprites", "no-such-token-0123456789", NULL,
                              401);
            break;
        }
    }
    load_run(rs, CONCURRENT, "mixed");
    g_free(rs);

    /* ---- execs at once on one sprite ---- */
    rs = g_new0(struct load_request, EXECS);
    char **want = g_new0(char *, EXECS);
    for (size_t i = 0; i < EXECS; i++) {
        g_autofree char *body = g_strdup_printf("{\"argv\":[\"sh\",\"-c\",\"echo exec-%zu\"]}", i);
        load_request_init(&rs[i], w.socket, "POST", "/v1/sprites/s/exec", WFX_TOKEN_A, body, 200);
        want[i] = g_strdup_printf("\"stdout\":\"exec-%zu\\n\"", i);
        rs[i].expect_text = want[i];
    }
    load_run(rs, EXECS, "exec");
    g_strfreev(want);
    g_free(rs);

    /* ---- clients that go away ---- */
    long st = 0;
    for (int i = 0; i < 20; i++)
        send_half_and_close(w.socket);
    {
        /* An exec whose client gives up after 0.5 s. */
        struct load_request r = {0};
        load_request_init(&r, w.socket, "POST", "/v1/sprites/s/exec", WFX_TOKEN_A,
                          "{\"argv\":[\"sleep\",\"3\"]}", 0);
        curl_easy_setopt(r.c, CURLOPT_TIMEOUT_MS, 500L);
        CURLcode rc = curl_easy_perform(r.c);
        FX_CHECK(rc == CURLE_OPERATION_TIMEDOUT, "the exec was not cut short: %s",
                 curl_easy_strerror(rc));
        curl_easy_cleanup(r.c);
        curl_slist_free_all(r.headers);
        g_string_free(r.body_in, TRUE);
        g_free(r.body_out);
    }
    JsonObject *o = wfx_http("GET", "/v1/sprites/s", WFX_TOKEN_A, NULL, 0, &st);
    FX_CHECK(st == 200, "wispd after the clients that went away: %ld", st);
    json_object_unref(o);
    g_autofree char *after = wfx_sh("s", WFX_TOKEN_A, "echo still-here", 0);
    FX_CHECK(strcmp(after, "still-here\n") == 0, "exec after the load: '%s'", after);

    /* Connections are closed and their memory freed: the open files come back down (the exec
     * cut short holds its connection until its command ends). */
    unsigned fds_after = 0;
    double t0 = fx_now();
    while ((fds_after = open_fds(w.pid)) > fds_before + 4) {
        FX_CHECK(fx_now() - t0 < 30, "wispd holds %u files, %u before the load", fds_after,
                 fds_before);
        fx_sleep(0.5);
    }
    fx_log("wispd's open files: %u before the load, %u after", fds_before, fds_after);
    wfx_stop(&w, 60);
    return 0;
}
