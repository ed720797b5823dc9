/* cli_pool.c: `wisp pool status [--json]` and `wisp pool resize IMAGE N`, on wispd's
 * /v1/pools (docs/api.md).  Any account may read the pools; resizing is the operator's, which
 * wispd allows only over its unix socket. */
#include "api_client.h"
#include "cli.h"

#include <glib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLI_POOL_DEFAULT_SOCKET "/var/lib/wisp/wispd.sock"

struct cli_pool_opts {
    char *socket, *token;
    gboolean json;
};

/* One request; prints wispd's error and returns NULL unless the status is `want`. */
static JsonNode *cli_pool_call(const struct cli_pool_opts *o, const char *method, const char *path,
                               const char *body, long want)
{
    JsonNode *answer = NULL;
    g_autofree char *why = NULL;
    long status = api_client_call(o->socket, o->token, method, path, body, &answer, &why);

    if (status < 0) {
        cli_error("%s", why);
        return NULL;
    }
    if (status == want)
        return answer;
    const char *msg =
        json_object_get_string_member_with_default(json_node_get_object(answer), "error", "failed");
    cli_error("%s%s", msg,
              status == 404   ? " ('wisp pool status' lists the images)"
              : status == 401 ? " (check --token or WISP_TOKEN)"
                              : "");
    json_node_unref(answer);
    return NULL;
}

static void cli_pool_print(JsonNode *a, bool json)
{
    if (json) {
        g_autofree char *text = json_to_string(a, TRUE);
        printf("%s\n", text);
        return;
    }
    JsonArray *pools = json_object_get_array_member(json_node_get_object(a), "pools");
    printf("%-12s %5s %5s %9s %7s\n", "IMAGE", "SIZE", "WARM", "REFILLING", "CLAIMS");
    for (guint i = 0; pools && i < json_array_get_length(pools); i++) {
        JsonObject *p = json_array_get_object_element(pools, i);
        printf("%-12s %5lld %5lld %9lld %7lld\n",
               json_object_get_string_member_with_default(p, "image", "?"),
               (long long)json_object_get_int_member_with_default(p, "size", 0),
               (long long)json_object_get_int_member_with_default(p, "warm", 0),
               (long long)json_object_get_int_member_with_default(p, "refilling", 0),
               (long long)json_object_get_int_member_with_default(p, "claims", 0));
    }
}

static int cli_pool_status(const struct cli_pool_opts *o, int argc, char **argv)
{
    (void)argv;
    if (argc != 0) {
        cli_error("usage: wisp pool status [--json]");
        return CLI_EXIT_USAGE;
    }
    JsonNode *a = cli_pool_call(o, "GET", "/v1/pools", NULL, 200);
    if (!a)
        return CLI_EXIT_ERROR;
    cli_pool_print(a, o->json);
    json_node_unref(a);
    return CLI_EXIT_OK;
}

static int cli_pool_resize(const struct cli_pool_opts *o, int argc, char **argv)
{
    char *end = NULL;
    long size = argc == 2 ? strtol(argv[1], &end, 10) : 0;

    if (argc != 2 || !end || *end || end == argv[1] || size < 1 || size > 64) {
        cli_error("usage: wisp pool resize IMAGE N (N: 1 to 64 warm VMs)");
        return CLI_EXIT_USAGE;
    }
    g_autofree char *path = g_strdup_printf("/v1/pools/%s", argv[0]);
    g_autofree char *body = g_strdup_printf("{\"size\":%ld}", size);
    JsonNode *a = cli_pool_call(o, "PUT", path, body, 200);
    if (!a)
        return CLI_EXIT_ERROR;
    if (o->json)
        cli_pool_print(a, true);
    else
        printf("%s: %ld warm VMs wanted (%lld stopped now)\n", argv[0], size,
               (long long)json_object_get_int_member_with_default(json_node_get_object(a),
                                                                  "stopped", 0));
    json_node_unref(a);
    return CLI_EXIT_OK;
}

int cli_pool_main(int argc, char **argv)
{
    struct cli_pool_opts o = {0};
    GOptionEntry entries[] = {
        {"socket", 0, 0, G_OPTION_ARG_FILENAME, &o.socket,
         "wispd's API socket (default $WISP_SOCKET, else " CLI_POOL_DEFAULT_SOCKET ")", "PATH"},
        {"token", 0, 0, G_OPTION_ARG_STRING, &o.token,
         "bearer token of your account (default $WISP_TOKEN)", "TOKEN"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &o.json, "print wispd's JSON answer", NULL},
        G_OPTION_ENTRY_NULL,
    };
    const char *verb = argc > 1 ? argv[1] : "";
    bool status = strcmp(verb, "status") == 0, resize = strcmp(verb, "resize") == 0;
    int rc;

    if (!status && !resize) {
        cli_error("usage: wisp pool status [--json] | wisp pool resize IMAGE N");
        return CLI_EXIT_USAGE;
    }
    rc = cli_parse_options("pool", verb, status ? "" : "IMAGE N",
                           status ? "the warm pools: size, warm members, refills, claims"
                                  : "keep N warm VMs of IMAGE (operator: the unix socket)",
                           entries, &argc, &argv);
    if (rc == CLI_EXIT_OK) {
        if (!o.socket)
            o.socket = g_strdup(g_getenv("WISP_SOCKET") ? g_getenv("WISP_SOCKET")
                                                        : CLI_POOL_DEFAULT_SOCKET);
        if (!o.token && g_getenv("WISP_TOKEN"))
            o.token = g_strdup(g_getenv("WISP_TOKEN"));
        rc = status ? cli_pool_status(&o, argc, argv) : cli_pool_resize(&o, argc, argv);
    }
    g_free(o.socket);
    g_free(o.token);
    return rc;
}
