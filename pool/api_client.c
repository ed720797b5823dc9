/* api_client.c: one request to wispd's API over its unix socket (api_client.h). */
#include "api_client.h"

#include <curl/curl.h>
#include <string.h>

static size_t api_client_collect(char *data, size_t size, size_t n, void *opaque)
{
    g_string_append_len(opaque, data, (gssize)(size * n));
    return size * n;
}

long api_client_call(const char *socket_path, const char *token, const char *method,
                     const char *path, const char *body, JsonNode **answer, char **why)
{
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
    CURLcode r = curl_easy_perform(c);
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
