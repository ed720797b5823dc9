/* tcp_pools.c: the API on TCP with bearer tokens, and the pools API (issue 7).
 *
 *   tcp     wispd with listen-tcp on 127.0.0.1: without a token 401 (no implicit account on
 *           TCP), an unknown token 401, alice's token reaches alice's sprites (create, list,
 *           exec), bob's token gets 404 for alice's sprite; the unix socket keeps its implicit
 *           account "default"; a chunked body of 64 MiB is refused (401 without a token,
 *           411 with one, 400 from libsoup for a request line with an https:// URI) before
 *           wispd has read half of it
 *   pools   GET /v1/pools has one pool per image with size, warm, refilling and claims (a
 *           create counts as a claim); PUT /v1/pools/default {"size":2} over the unix socket
 *           grows the warm members to 2 and {"size":1} shrinks them back to 1 (polled); bad
 *           sizes and unknown members are 400, an unknown image 404; on TCP a PUT is 403 with
 *           an ordinary token and 401 without one; `wisp pool status --json` and
 *           `wisp pool resize` through the CLI */
#include "wispd_fixture.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <json-glib/json-glib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char tp_base[64]; /* http://127.0.0.1:PORT */

/* A port nobody listens on now (the kernel's choice). */
static unsigned tp_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    FX_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                 getsockname(fd, (struct sockaddr *)&a, &len) == 0,
             "a free port");
    close(fd);
    return ntohs(a.sin_port);
}

/* One request over TCP that must answer `want` with a JSON object (json_object_unref it). */
static JsonObject *tp_tcp(long want, const char *method, const char *path, const char *token,
                          const char *body)
{
    return wfx_expect_at(tp_base, want, method, path, token, body);
}

static void tp_tcp_free(long want, const char *method, const char *path, const char *token,
                        const char *body)
{
    json_object_unref(tp_tcp(want, method, path, token, body));
}

/* A chunked POST whose body would be 64 MiB: wispd must answer `want` from the headers alone,
 * so the client is stopped long before it has sent the body (without that, libsoup would read
 * all of it into memory, token or not). */
#define TP_CHUNKED_BODY (64u << 20)

static size_t tp_chunked_source(char *buf, size_t size, size_t n, void *opaque)
{
    size_t *sent = opaque, len = MIN(size * n, (size_t)TP_CHUNKED_BODY - *sent);
    memset(buf, '{', len);
    *sent += len;
    return len;
}

static size_t tp_collect(char *data, size_t size, size_t n, void *opaque)
{
    g_string_append_len(opaque, data, (gssize)(size * n));
    return size * n;
}

/* target: the request line's target, or NULL for the path (an absolute URI of another scheme
 * is refused by libsoup itself, before wispd's handlers: its body must not be kept either). */
static void tp_chunked_refused(long want, const char *token, const char *target)
{
    CURL *c = curl_easy_init();
    GString *answer = g_string_new(NULL);
    struct curl_slist *headers = NULL;
    g_autofree char *url = g_strdup_printf("%s/v1/sprites", tp_base);
    size_t sent = 0;
    long status = 0;

    FX_CHECK(c, "curl_easy_init");
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (target)
        curl_easy_setopt(c, CURLOPT_REQUEST_TARGET, target);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, tp_chunked_source);
    curl_easy_setopt(c, CURLOPT_READDATA, &sent);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tp_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 180L);
    /* No "Expect: 100-continue": the body follows the headers at once, as a hostile client's
     * would. */
    headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
    headers = curl_slist_append(headers, "Expect:");
    if (token) {
        g_autofree char *auth = g_strdup_printf("Authorization: Bearer %s", token);
        headers = curl_slist_append(headers, auth);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    CURLcode r = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    fx_log("chunked POST%s: %s, status %ld after %zu of %u bytes: %.200s", token ? " (token)" : "",
           curl_easy_strerror(r), status, sent, TP_CHUNKED_BODY, answer->str);
    /* curl may see the answer, or only the connection wispd closed behind it. */
    FX_CHECK(status == want || (status == 0 && r != CURLE_OK),
             "chunked POST%s: status %ld (%s), expected %ld", token ? " (token)" : "", status,
             curl_easy_strerror(r), want);
    FX_CHECK(sent < TP_CHUNKED_BODY / 2,
             "wispd read %zu bytes of a chunked body before refusing it", sent);
    g_string_free(answer, TRUE);
}

/* The one pool's member `member` (GET /v1/pools on the unix socket), checking the shape. */
static gint64 tp_pool(const char *member)
{
    JsonObject *o = wfx_expect(200, "GET", "/v1/pools", NULL, NULL);
    JsonArray *a = json_object_get_array_member(o, "pools");
    FX_CHECK(a && json_array_get_length(a) == 1, "GET /v1/pools: not one pool");
    JsonObject *p = json_array_get_object_element(a, 0);
    FX_CHECK(strcmp(json_object_get_string_member_with_default(p, "image", ""), "default") == 0,
             "the pool's image is not 'default'");
    const char *ints[] = {"size", "warm", "refilling", "claims"};
    for (size_t i = 0; i < G_N_ELEMENTS(ints); i++) {
        JsonNode *n = json_object_get_member(p, ints[i]);
        FX_CHECK(n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64 &&
                     json_node_get_int(n) >= 0,
                 "pool member '%s' is not a count", ints[i]);
    }
    gint64 v = json_object_get_int_member(p, member);
    json_object_unref(o);
    return v;
}

static void tp_wait_warm(gint64 want, double timeout_s)
{
    double t0 = fx_now();
    gint64 warm;
    while ((warm = tp_pool("warm")) != want) {
        FX_CHECK(fx_now() - t0 < timeout_s, "%lld warm members after %.0f s, expected %lld",
                 (long long)warm, timeout_s, (long long)want);
        fx_sleep(0.5);
    }
    fx_log("%lld warm members after %.1f s", (long long)want, fx_now() - t0);
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd_tcp_pools");
    wfx_init(&img);
    unsigned port = tp_free_port();
    snprintf(tp_base, sizeof tp_base, "http://127.0.0.1:%u", port);
    g_autofree char *listen = g_strdup_printf("127.0.0.1:%u", port);
    const char *args[] = {"--listen-tcp", listen, NULL};
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, NULL, args);

    /* ---- tcp ---- */
    tp_tcp_free(401, "GET", "/v1/sprites", NULL, NULL);
    tp_tcp_free(401, "GET", "/v1/sprites", "not-a-token-of-anybody-here", NULL);
    tp_tcp_free(401, "POST", "/v1/sprites", NULL, "{\"name\":\"nope\"}");
    tp_chunked_refused(401, NULL, NULL);
    tp_chunked_refused(411, WFX_TOKEN_A, NULL);
    tp_chunked_refused(400, NULL, "https://localhost/v1/sprites");
    tp_tcp_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"over-tcp\"}");
    JsonObject *list = tp_tcp(200, "GET", "/v1/sprites", WFX_TOKEN_A, NULL);
    JsonArray *sprites = json_object_get_array_member(list, "sprites");
    FX_CHECK(sprites && json_array_get_length(sprites) == 1, "alice does not list one sprite");
    json_object_unref(list);
    JsonObject *ex =
        tp_tcp(200, "POST", "/v1/sprites/over-tcp/exec", WFX_TOKEN_A, "{\"argv\":[\"hostname\"]}");
    FX_CHECK(
        strcmp(json_object_get_string_member_with_default(ex, "stdout", ""), "over-tcp\n") == 0,
        "hostname over TCP: '%s'", json_object_get_string_member_with_default(ex, "stdout", ""));
    json_object_unref(ex);
    tp_tcp_free(404, "GET", "/v1/sprites/over-tcp", WFX_TOKEN_B, NULL);
    tp_tcp_free(404, "POST", "/v1/sprites/over-tcp/exec", WFX_TOKEN_B, "{\"argv\":[\"true\"]}");
    /* The unix socket keeps its implicit account: "default" has no sprite, alice has hers. */
    JsonObject *dl = wfx_expect(200, "GET", "/v1/sprites", NULL, NULL);
    FX_CHECK(json_array_get_length(json_object_get_array_member(dl, "sprites")) == 0,
             "the default account sees sprites");
    json_object_unref(dl);
    wfx_expect_free(200, "GET", "/v1/sprites/over-tcp", WFX_TOKEN_A, NULL);

    /* ---- pools: shape, claims ---- */
    tp_wait_warm(1, 300);
    FX_CHECK(tp_pool("size") == 1, "the pool's size is not the configured 1");
    gint64 claims = tp_pool("claims");
    FX_CHECK(claims >= 1, "the create above is not counted as a claim");
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_B, "{\"name\":\"claimer\"}");
    FX_CHECK(tp_pool("claims") == claims + 1, "a create did not add one claim");

    /* ---- pools: who may resize, and what ---- */
    tp_tcp_free(200, "GET", "/v1/pools", WFX_TOKEN_A, NULL);
    tp_tcp_free(401, "GET", "/v1/pools", NULL, NULL);
    tp_tcp_free(403, "PUT", "/v1/pools/default", WFX_TOKEN_A, "{\"size\":2}");
    tp_tcp_free(401, "PUT", "/v1/pools/default", NULL, "{\"size\":2}");
    const char *bad[] = {"{\"size\":0}",         "{\"size\":-1}",  "{\"size\":65}",
                         "{\"size\":\"2\"}",     "{\"size\":2.5}", "{}",
                         "{\"size\":2,\"x\":1}", "not json",       "{\"size\":null}"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
        wfx_expect_free(400, "PUT", "/v1/pools/default", NULL, bad[i]);
    wfx_expect_free(404, "PUT", "/v1/pools/no-such-image", NULL, "{\"size\":2}");
    wfx_expect_free(405, "DELETE", "/v1/pools/default", NULL, NULL);
    FX_CHECK(tp_pool("size") == 1, "a refused resize changed the size");

    /* ---- pools: resize up, then down ---- */
    JsonObject *up = wfx_expect(200, "PUT", "/v1/pools/default", NULL, "{\"size\":2}");
    json_object_unref(up);
    FX_CHECK(tp_pool("size") == 2, "the size is not 2 after the resize");
    tp_wait_warm(2, 300);
    g_autofree char *resized = wfx_cli("pool", "resize", NULL, 0, "default", "1", NULL);
    FX_CHECK(strstr(resized, "1 stopped now"), "wisp pool resize printed '%s'", resized);
    FX_CHECK(tp_pool("warm") == 1 && tp_pool("size") == 1, "resize down left %lld warm",
             (long long)tp_pool("warm"));
    g_free(wfx_cli("pool", "resize", NULL, 2, "default", "zero", NULL)); /* usage */
    g_autofree char *status = wfx_cli("pool", "status", NULL, 0, "--json", NULL);
    JsonParser *p = json_parser_new();
    FX_CHECK(json_parser_load_from_data(p, status, -1, NULL) &&
                 JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)) &&
                 json_object_has_member(json_node_get_object(json_parser_get_root(p)), "pools"),
             "wisp pool status --json printed '%s'", status);
    g_object_unref(p);
    g_autofree char *table = wfx_cli("pool", "status", NULL, 0, NULL);
    FX_CHECK(g_str_has_prefix(table, "IMAGE") && strstr(table, "\ndefault "),
             "wisp pool status printed '%s'", table);

    wfx_stop(&w, 120);
    return 0;
}
