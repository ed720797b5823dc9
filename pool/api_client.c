/* api_client.c: one request to wispd's API over its unix socket (api_client.h). */
#include "api_client.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static size_t api_client_collect(char *data, size_t size, size_t n, void *opaque)
{
    g_string_append_len(opaque, data, (gssize)(size * n));
    return size * n;
}

/* The progress line of a call that waits (api_client_call_progress). */
struct api_client_progress {
    const char *label;
    gint64 start_us, last_us;
    bool shown;
    double after_s;
};

static int api_client_show_progress(void *opaque, curl_off_t dltotal, curl_off_t dlnow,
                                    curl_off_t ultotal, curl_off_t ulnow)
{
    struct api_client_progress *p = opaque;
    gint64 now = g_get_monotonic_time();
    double waited = (double)(now - p->start_us) / 1e6;

    /* curl calls this about once a second, and more often while bytes move. */
    if (waited >= p->after_s && now - p->last_us >= 100000) {
        fprintf(stderr, "\r\033[K%s... %.1f s", p->label, waited);
        fflush(stderr);
        p->last_us = now;
        p->shown = true;
    }
    return 0;
}

long api_client_call(const char *socket_path, const char *token, const char *method,
                     const char *path, const char *body, JsonNode **answer, char **why)
{
    return api_client_call_progress(socket_path, token, method, path, body, NULL, answer, why);
}

long api_client_call_progress(const char *socket_path, const char *token, const char *method,
                              const char *path, const char *body, const char *label,
                              JsonNode **answer, char **why)
{
    struct api_client_progress progress = {label, g_get_monotonic_time(), 0, false,
                                           API_CLIENT_PROGRESS_AFTER_S};
    const char *after = g_getenv("WISP_PROGRESS_AFTER_S"); /* tests: show it at once */
    if (after && *after)
        progress.after_s = g_ascii_strtod(after, NULL);
    g_autofree char *url = g_strdup_printf("http://wispd%s", path);
    g_autofree char *auth = token ? g_strdup_printf("Authorization: Bearer %s", token) : NULL;
    GString *text = g_string_new(NULL);
    struct curl_slist *headers = NULL;
    g_autoptr(JsonParser) parser = NULL;
    long status = -1;
    CURL *c = curl_easy_init();

    *answer = NULL;
    if (!c) {
        *why = g_strdup("curl_easy_init failed");
        goto out;
    }
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    if (auth)
        headers = curl_slist_append(headers, auth);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, api_client_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, text);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    if (label && isatty(STDERR_FILENO)) {
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, api_client_show_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, &progress);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    }
    CURLcode r = curl_easy_perform(c);
    if (progress.shown) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
    if (r != CURLE_OK) {
        *why = g_strdup_printf("cannot reach wispd at %s: %s (is wispd running? pass --socket "
                               "or set WISP_SOCKET)",
                               socket_path, curl_easy_strerror(r));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    parser = json_parser_new();
    if (!json_parser_load_from_data(parser, text->str, (gssize)text->len, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
        *why = g_strdup_printf("wispd answered %ld without JSON", status);
        status = -1;
        goto out;
    }
    *answer = json_node_copy(json_parser_get_root(parser));
out:
    curl_slist_free_all(headers);
    if (c)
        curl_easy_cleanup(c);
    g_string_free(text, TRUE);
    return status;
}
