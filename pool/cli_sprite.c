/* cli_sprite.c: the wisp verbs on wispd's API (docs/api.md): create, list, exec, console,
 * checkpoint, restore, sleep, wake, destroy.  Each is one request over the unix socket
 * (api_client.h), except exec and console, which stream over a WebSocket (cli_exec.c; exec
 * --json is the buffered request).
 *
 * Common options: --socket PATH ($WISP_SOCKET, else /var/lib/wisp/wispd.sock), --token TOKEN
 * ($WISP_TOKEN; none: the account "default"), --json (print wispd's answer as it is).
 * Exit codes: 0 ok, 1 error, 2 usage; exec exits with the remote command's code. */
#include "api_client.h"
#include "cli.h"
#include "cli_exec.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CLI_SPRITE_DEFAULT_SOCKET "/var/lib/wisp/wispd.sock"
#define CLI_SPRITE_STDIN_MAX      (960 * 1024) /* under the API's 1 MiB body with its JSON */

struct cli_sprite_opts {
    char *socket, *token;
    gboolean json, with_stdin, tty;
    gboolean cold;  /* wisp sleep --cold: the same as `wisp sleep NAME cold` */
    char *progress; /* "VERB NAME", shown while a call that changes something waits */
};

/* Parses `wisp VERB [options] ARGS...`; argv[0] is VERB.  Leaves the positional arguments in
 * *argc / *argv (argv[0] the first).  Returns CLI_EXIT_OK or CLI_EXIT_USAGE. */
static int cli_sprite_parse(const char *verb, const char *args, const char *summary, bool has_stdin,
                            struct cli_sprite_opts *o, int *argc, char ***argv)
{
    GOptionEntry entries[] = {
        {"socket", 0, 0, G_OPTION_ARG_FILENAME, &o->socket,
         "wispd's API socket (default $WISP_SOCKET, else " CLI_SPRITE_DEFAULT_SOCKET ")", "PATH"},
        {"token", 0, 0, G_OPTION_ARG_STRING, &o->token,
         "bearer token of your account (default $WISP_TOKEN)", "TOKEN"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &o->json, "print wispd's JSON answer", NULL},
        {has_stdin ? "stdin" : "unused-stdin", 'i', has_stdin ? 0 : G_OPTION_FLAG_HIDDEN,
         G_OPTION_ARG_NONE, &o->with_stdin,
         "send stdin even when it is a terminal (it is sent when it is not one)", NULL},
        {has_stdin ? "tty" : "unused-tty", 't', has_stdin ? 0 : G_OPTION_FLAG_HIDDEN,
         G_OPTION_ARG_NONE, &o->tty, "a pty in the sprite; this terminal in raw mode", NULL},
        /* Only `wisp sleep` shows --cold; the other verbs get a hidden entry that
         * cli_sprite_run ignores (as --stdin above). */
        {strcmp(verb, "sleep") == 0 ? "cold" : "unused-cold", 0,
         strcmp(verb, "sleep") == 0 ? 0 : G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &o->cold,
         "cold sleep: the same as NAME cold", NULL},
        G_OPTION_ENTRY_NULL,
    };
    g_autofree char *param = g_strdup_printf("%s - %s", args, summary);
    g_autoptr(GOptionContext) ctx = g_option_context_new(param);
    g_autofree char *prog = g_strdup_printf("wisp %s", verb);
    GError *error = NULL;
    char **args_in = *argv;
    int n = *argc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    args_in[0] = prog;
    if (!g_option_context_parse(ctx, &n, &args_in, &error)) {
        cli_error("%s (wisp %s --help)", error->message, verb);
        g_error_free(error);
        return CLI_EXIT_USAGE;
    }
    args_in[0] = (char *)verb;
    *argc = n - 1;
    *argv = args_in + 1;
    if (!o->socket)
        o->socket =
            g_strdup(g_getenv("WISP_SOCKET") ? g_getenv("WISP_SOCKET") : CLI_SPRITE_DEFAULT_SOCKET);
    if (!o->token && g_getenv("WISP_TOKEN"))
        o->token = g_strdup(g_getenv("WISP_TOKEN"));
    return CLI_EXIT_OK;
}

static void cli_sprite_opts_clear(struct cli_sprite_opts *o)
{
    g_free(o->socket);
    g_free(o->token);
    g_free(o->progress);
}

static void cli_sprite_print_json(JsonNode *n)
{
    g_autofree char *text = json_to_string(n, TRUE);
    printf("%s\n", text);
}

/* One request; on an error status prints wispd's message with a hint and returns NULL. */
static JsonNode *cli_sprite_call(const struct cli_sprite_opts *o, const char *method,
                                 const char *path, const char *body, long want)
{
    JsonNode *answer = NULL;
    g_autofree char *why = NULL;
    /* Reads answer at once; a create, checkpoint, restore, sleep or wake may take seconds. */
    const char *label = strcmp(method, "GET") != 0 ? o->progress : NULL;
    long status =
        api_client_call_progress(o->socket, o->token, method, path, body, label, &answer, &why);

    if (status < 0) {
        cli_error("%s", why);
        return NULL;
    }
    if (status == want)
        return answer;
    const char *msg =
        json_object_get_string_member_with_default(json_node_get_object(answer), "error", "failed");
    const char *hint = status == 404   ? " ('wisp list' shows your sprites)"
                       : status == 401 ? " (check --token or WISP_TOKEN)"
                       : status == 503 ? " (wispd is stopping; try again once it runs)"
                                       : "";
    cli_error("%s%s", msg, hint);
    json_node_unref(answer);
    return NULL;
}

/* A JSON body of one object built by the caller. */
static char *cli_sprite_body(JsonObject *o)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    char *text = json_to_string(n, FALSE);
    json_node_unref(n);
    return text;
}

static int cli_sprite_simple(const struct cli_sprite_opts *o, const char *method, const char *path,
                             const char *body, long want, const char *done, const char *name)
{
    JsonNode *a = cli_sprite_call(o, method, path, body, want);
    if (!a)
        return CLI_EXIT_ERROR;
    if (o->json)
        cli_sprite_print_json(a);
    else
        printf("%s: %s\n", name, done);
    json_node_unref(a);
    return CLI_EXIT_OK;
}

static int cli_sprite_list(const struct cli_sprite_opts *o)
{
    JsonNode *a = cli_sprite_call(o, "GET", "/v1/sprites", NULL, 200);
    if (!a)
        return CLI_EXIT_ERROR;
    if (o->json) {
        cli_sprite_print_json(a);
    } else {
        JsonArray *s = json_object_get_array_member(json_node_get_object(a), "sprites");
        for (guint i = 0; s && i < json_array_get_length(s); i++) {
            JsonObject *e = json_array_get_object_element(s, i);
            const char *mode = json_object_get_string_member_with_default(e, "mode", NULL);
            printf("%-24s %s%s%s%s\n", json_object_get_string_member_with_default(e, "name", "?"),
                   json_object_get_string_member_with_default(e, "state", "?"), mode ? " (" : "",
                   mode ? mode : "", mode ? ")" : "");
        }
    }
    json_node_unref(a);
    return CLI_EXIT_OK;
}

static int cli_sprite_exec(const struct cli_sprite_opts *o, int argc, char **argv)
{
    JsonObject *req = json_object_new();
    JsonArray *cmd = json_array_new();
    /* GOption keeps a "--" that has option-like words after it. */
    int first = argc > 1 && strcmp(argv[1], "--") == 0 ? 2 : 1;
    if (first >= argc) {
        json_array_unref(cmd);
        json_object_unref(req);
        cli_error("usage: wisp exec NAME -- COMMAND [ARGS...]");
        return CLI_EXIT_USAGE;
    }
    /* Streaming, unless --json asks for the buffered JSON answer (POST .../exec). */
    if (!o->json) {
        json_array_unref(cmd);
        json_object_unref(req);
        return cli_exec_stream(o->socket, o->token, argv[0], argv + first, o->tty, o->with_stdin);
    }
    for (int i = first; i < argc; i++)
        json_array_add_string_element(cmd, argv[i]);
    json_object_set_array_member(req, "argv", cmd);
    if (o->with_stdin) {
        GString *in = g_string_new(NULL);
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0 && in->len <= CLI_SPRITE_STDIN_MAX)
            g_string_append_len(in, buf, (gssize)n);
        if (in->len > CLI_SPRITE_STDIN_MAX || !g_utf8_validate(in->str, (gssize)in->len, NULL)) {
            cli_error("stdin must be UTF-8 text of at most 960 KiB (streaming exec will lift "
                      "this)");
            g_string_free(in, TRUE);
            json_object_unref(req);
            return CLI_EXIT_ERROR;
        }
        json_object_set_string_member(req, "stdin", in->str);
        g_string_free(in, TRUE);
    }
    g_autofree char *body = cli_sprite_body(req);
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s/exec", argv[0]);
    JsonNode *a = cli_sprite_call(o, "POST", path, body, 200);
    if (!a)
        return CLI_EXIT_ERROR;
    JsonObject *r = json_node_get_object(a);
    int code = (int)json_object_get_int_member_with_default(r, "exit_code", 1);
    if (o->json) {
        cli_sprite_print_json(a);
    } else {
        fputs(json_object_get_string_member_with_default(r, "stdout", ""), stdout);
        fputs(json_object_get_string_member_with_default(r, "stderr", ""), stderr);
        if (json_object_get_boolean_member_with_default(r, "truncated", FALSE))
            cli_error("output truncated at 1 MiB per stream");
    }
    json_node_unref(a);
    return code;
}

static int cli_sprite_checkpoint(const struct cli_sprite_opts *o, int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[0], "delete") == 0) {
        g_autofree char *dp = g_strdup_printf("/v1/sprites/%s/checkpoints/%s", argv[1], argv[2]);
        g_autofree char *done = g_strdup_printf("checkpoint %s deleted", argv[2]);
        return cli_sprite_simple(o, "DELETE", dp, NULL, 200, done, argv[1]);
    }
    if (argc != 2 || (strcmp(argv[0], "create") != 0 && strcmp(argv[0], "list") != 0)) {
        cli_error("usage: wisp checkpoint create|list NAME, or wisp checkpoint delete NAME CKPT");
        return CLI_EXIT_USAGE;
    }
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s/checkpoints", argv[1]);
    bool create = strcmp(argv[0], "create") == 0;
    JsonNode *a = cli_sprite_call(o, create ? "POST" : "GET", path, NULL, create ? 201 : 200);
    if (!a)
        return CLI_EXIT_ERROR;
    JsonObject *r = json_node_get_object(a);
    if (o->json) {
        cli_sprite_print_json(a);
    } else if (create) {
        printf("%s\n", json_object_get_string_member_with_default(r, "id", "?"));
    } else {
        JsonArray *c = json_object_get_array_member(r, "checkpoints");
        for (guint i = 0; c && i < json_array_get_length(c); i++) {
            JsonObject *e = json_array_get_object_element(c, i);
            g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(
                json_object_get_int_member_with_default(e, "created", 0));
            g_autofree char *when = t ? g_date_time_format_iso8601(t) : g_strdup("?");
            printf("%-10s %s\n", json_object_get_string_member_with_default(e, "id", "?"), when);
        }
    }
    json_node_unref(a);
    return CLI_EXIT_OK;
}

struct cli_sprite_verb {
    const char *name, *args, *summary;
    int min_args, max_args; /* positional; -1: any */
};

static const struct cli_sprite_verb cli_sprite_verbs[] = {
    {"create", "NAME", "create a sprite and start it", 1, 1},
    {"list", "", "list your sprites and their states", 0, 0},
    {"exec", "NAME -- COMMAND [ARGS...]",
     "run a command in a sprite, streaming; exits with its code.  stdin is sent when it is not "
     "a terminal (or with -i); -t gives the command a pty.  --json: buffered, JSON answer",
     2, -1},
    {"console", "NAME", "an interactive shell in a sprite (wisp exec -t NAME -- /bin/sh -l)", 1, 1},
    {"checkpoint", "create|list NAME | delete NAME CKPT",
     "checkpoint a sprite's disk, list its checkpoints, or delete one", 2, 3},
    {"restore", "NAME CHECKPOINT", "restore a sprite's disk to a checkpoint (restarts the VM)", 2,
     2},
    {"sleep", "NAME [warm|cold]",
     "sleep: warm (default) pauses the sprite; cold saves it to the store and frees its memory", 1,
     2},
    {"wake", "NAME", "wake a sleeping sprite", 1, 1},
    {"destroy", "NAME", "destroy a sprite and delete its disk", 1, 1},
};

/* Runs a parsed verb with its positional arguments. */
static int cli_sprite_run(const struct cli_sprite_verb *v, const struct cli_sprite_opts *o,
                          int argc, char **argv)
{
    const char *name = argc > 0 ? argv[0] : NULL;
    g_autofree char *path = name ? g_strdup_printf("/v1/sprites/%s", name) : NULL;

    if (strcmp(v->name, "create") == 0) {
        JsonObject *req = json_object_new();
        json_object_set_string_member(req, "name", name);
        g_autofree char *body = cli_sprite_body(req);
        return cli_sprite_simple(o, "POST", "/v1/sprites", body, 201, "created", name);
    }
    if (strcmp(v->name, "list") == 0)
        return cli_sprite_list(o);
    if (strcmp(v->name, "exec") == 0)
        return cli_sprite_exec(o, argc, argv);
    if (strcmp(v->name, "console") == 0) {
        char *shell[] = {"/bin/sh", "-l", NULL};
        return cli_exec_stream(o->socket, o->token, name, shell, true, true);
    }
    if (strcmp(v->name, "checkpoint") == 0)
        return cli_sprite_checkpoint(o, argc, argv);
    if (strcmp(v->name, "restore") == 0) {
        g_autofree char *rp =
            g_strdup_printf("/v1/sprites/%s/checkpoints/%s/restore", name, argv[1]);
        return cli_sprite_simple(o, "POST", rp, NULL, 200, "restored", name);
    }
    if (strcmp(v->name, "destroy") == 0)
        return cli_sprite_simple(o, "DELETE", path, NULL, 200, "destroyed", name);
    g_autofree char *sp = g_strdup_printf("%s/%s", path, v->name);
    g_autofree char *body = NULL;
    if (argc == 2) {
        if (strcmp(argv[1], "warm") != 0 && strcmp(argv[1], "cold") != 0) {
            cli_error("usage: wisp sleep NAME [warm|cold]");
            return CLI_EXIT_USAGE;
        }
        JsonObject *req = json_object_new();
        json_object_set_string_member(req, "mode", argv[1]);
        body = cli_sprite_body(req);
    }
    return cli_sprite_simple(o, "POST", sp, body, 200,
                             strcmp(v->name, "sleep") == 0 ? "asleep" : "awake", name);
}

int cli_sprite_main(int argc, char **argv)
{
    const struct cli_sprite_verb *v = NULL;
    struct cli_sprite_opts o = {0};
    int status;

    for (size_t i = 0; i < G_N_ELEMENTS(cli_sprite_verbs); i++)
        if (strcmp(argv[0], cli_sprite_verbs[i].name) == 0)
            v = &cli_sprite_verbs[i];
    if (!v)
        return CLI_EXIT_USAGE;
    status = cli_sprite_parse(v->name, v->args, v->summary, strcmp(v->name, "exec") == 0, &o, &argc,
                              &argv);
    /* wisp sleep --cold NAME is wisp sleep NAME cold. */
    char *cold_args[] = {argc > 0 ? argv[0] : NULL, (char *)"cold", NULL};
    if (status == CLI_EXIT_OK && o.cold && strcmp(v->name, "sleep") == 0) {
        if (argc == 1) {
            argv = cold_args;
            argc = 2;
        } else {
            cli_error("usage: wisp sleep --cold NAME (no mode after NAME)");
            status = CLI_EXIT_USAGE;
        }
    }
    if (status == CLI_EXIT_OK) {
        g_autofree char *args = g_strjoinv(" ", argv); /* argv is NULL-terminated */
        o.progress = g_strdup_printf("%s %.60s", v->name, args);
    }
    if (status == CLI_EXIT_OK) {
        if (argc < v->min_args || (v->max_args >= 0 && argc > v->max_args)) {
            cli_error("usage: wisp %s %s", v->name, v->args);
            status = CLI_EXIT_USAGE;
        } else {
            status = cli_sprite_run(v, &o, argc, argv);
        }
    }
    cli_sprite_opts_clear(&o);
    return status;
}
