/* cli_store.c: `wisp store ls|put|get|rm|stat`, for operators to check access to a store.
 *
 *   wisp store ls   [URL] [PREFIX]        list objects (--json)
 *   wisp store put  [URL] KEY [FILE|-]    upload a file or stdin (--if-absent)
 *   wisp store get  [URL] KEY [FILE|-]    download to a file or stdout
 *   wisp store rm   [URL] KEY...          delete objects
 *   wisp store stat [URL] KEY             size, time, checksums (--json)
 *
 * URL is a store URL (file:///dir or s3://bucket/prefix?endpoint=...); without it, --store or
 * $WISP_STORE names the store. */
#include "cli.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct cli_store_options {
    char *store_url;
    char *credentials;
    char *profile;
    gboolean json;
    gboolean if_absent;
    int connect_timeout_ms;
    int request_timeout_ms;
    int attempts;
};

static void cli_store_format_time(time_t t, char *buf, size_t size)
{
    struct tm tm;

    if (t <= 0 || !gmtime_r(&t, &tm))
        snprintf(buf, size, "-");
    else
        strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Error messages end with what to do next where the errno tells us. */
static int cli_store_report(const char *what, int r)
{
    const char *detail = store_last_error();
    const char *hint = "";

    if (r == -EACCES)
        hint = " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or --credentials)";
    else if (r == -ETIMEDOUT || r == -EIO)
        hint = " (is the store reachable? see --connect-timeout and WISP_DEBUG=s3)";
    cli_error("%s: %s%s", what, *detail ? detail : g_strerror(-r), hint);
    return CLI_EXIT_ERROR;
}

static int cli_store_open(struct cli_store_options *o, struct store **st)
{
    struct store_options so;
    int r;

    store_options_init(&so);
    so.credentials_file = o->credentials;
    so.profile = o->profile;
    if (o->connect_timeout_ms > 0)
        so.connect_timeout_ms = o->connect_timeout_ms;
    if (o->request_timeout_ms > 0)
        so.request_timeout_ms = o->request_timeout_ms;
    if (o->attempts > 0)
        so.max_attempts = (unsigned)o->attempts;
    r = store_open(o->store_url, &so, st);
    return r < 0 ? cli_store_report("cannot open the store", r) : CLI_EXIT_OK;
}

struct cli_store_ls {
    JsonBuilder *json;
    unsigned long long count, bytes;
};

static int cli_store_ls_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct cli_store_ls *ls = opaque;
    char when[32];

    ls->count++;
    ls->bytes += size;
    if (ls->json) {
        json_builder_begin_object(ls->json);
        json_builder_set_member_name(ls->json, "key");
        json_builder_add_string_value(ls->json, key);
        json_builder_set_member_name(ls->json, "size");
        json_builder_add_int_value(ls->json, (gint64)size);
        json_builder_set_member_name(ls->json, "mtime");
        json_builder_add_int_value(ls->json, (gint64)mtime);
        json_builder_end_object(ls->json);
        return 0;
    }
    cli_store_format_time(mtime, when, sizeof when);
    if (printf("%12llu  %-20s  %s\n", (unsigned long long)size, when, key) < 0)
        return -EIO;
    return 0;
}

static void cli_store_print_json(JsonBuilder *b)
{
    JsonNode *root = json_builder_get_root(b);
    JsonGenerator *gen = json_generator_new();
    gchar *text;

    json_generator_set_root(gen, root);
    json_generator_set_pretty(gen, TRUE);
    text = json_generator_to_data(gen, NULL);
    printf("%s\n", text);
    g_free(text);
    g_object_unref(gen);
    json_node_unref(root);
}

static int cli_store_ls(struct store *st, struct cli_store_options *o, int argc, char **argv)
{
    struct cli_store_ls ls = {0};
    const char *prefix = argc > 0 ? argv[0] : "";
    int r;

    if (argc > 1) {
        cli_error("store ls takes at most one PREFIX");
        return CLI_EXIT_USAGE;
    }
    if (o->json) {
        ls.json = json_builder_new();
        json_builder_begin_array(ls.json);
    }
    r = store_list(st, prefix, cli_store_ls_one, &ls);
    if (ls.json) {
        json_builder_end_array(ls.json);
        if (r == 0)
            cli_store_print_json(ls.json);
        g_object_unref(ls.json);
    }
    if (r < 0)
        return cli_store_report("list", r);
    if (!o->json && isatty(STDOUT_FILENO))
        fprintf(stderr, "%llu objects, %llu bytes\n", ls.count, ls.bytes);
    return CLI_EXIT_OK;
}

static int cli_store_put(struct store *st, struct cli_store_options *o, int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    const char *source = argc > 1 ? argv[1] : "-";
    gchar *data = NULL;
    gsize len = 0;
    int r;

    if (argc < 1 || argc > 2) {
        cli_error("usage: wisp store put [URL] KEY [FILE|-]");
        return CLI_EXIT_USAGE;
    }
    if (strcmp(source, "-") == 0) {
        GByteArray *buf = g_byte_array_new();
        guint8 chunk[65536];
        ssize_t n;
        while ((n = read(STDIN_FILENO, chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR))
            if (n > 0)
                g_byte_array_append(buf, chunk, (guint)n);
        if (n < 0) {
            cli_error("read standard input: %s", g_strerror(errno));
            g_byte_array_unref(buf);
            return CLI_EXIT_ERROR;
        }
        len = buf->len;
        data = (gchar *)g_byte_array_free(buf, FALSE);
    } else if (!g_file_get_contents(source, &data, &len, &error)) {
        cli_error("%s", error->message);
        return CLI_EXIT_ERROR;
    }
    r = o->if_absent ? store_put_if_absent(st, argv[0], data, len)
                     : store_put(st, argv[0], data, len);
    g_free(data);
    if (r < 0)
        return cli_store_report("put", r);
    return CLI_EXIT_OK;
}

static int cli_store_get(struct store *st, struct cli_store_options *o, int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    const char *dest = argc > 1 ? argv[1] : "-";
    void *data;
    size_t len;
    int r;

    if (argc < 1 || argc > 2) {
        cli_error("usage: wisp store get [URL] KEY [FILE|-]");
        return CLI_EXIT_USAGE;
    }
    r = store_get(st, argv[0], &data, &len);
    if (r < 0)
        return cli_store_report("get", r);
    if (strcmp(dest, "-") == 0) {
        bool ok = fwrite(data, 1, len, stdout) == len && fflush(stdout) == 0;
        free(data);
        if (!ok) {
            cli_error("write standard output: %s", g_strerror(errno));
            return CLI_EXIT_ERROR;
        }
        return CLI_EXIT_OK;
    }
    /* g_file_set_contents writes a temporary file and renames it: no half-written FILE. */
    bool ok = g_file_set_contents(dest, data, (gssize)len, &error);
    free(data);
    if (!ok) {
        cli_error("%s", error->message);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

static int cli_store_rm(struct store *st, struct cli_store_options *o, int argc, char **argv)
{
    int status = CLI_EXIT_OK;

    if (argc < 1) {
        cli_error("usage: wisp store rm [URL] KEY...");
        return CLI_EXIT_USAGE;
    }
    for (int i = 0; i < argc; i++) {
        int r = store_delete(st, argv[i]);
        if (r < 0)
            status = cli_store_report("rm", r);
    }
    return status;
}

static int cli_store_stat(struct store *st, struct cli_store_options *o, int argc, char **argv)
{
    struct store_stat sb;
    char when[32];
    int r;

    if (argc != 1) {
        cli_error("usage: wisp store stat [URL] KEY");
        return CLI_EXIT_USAGE;
    }
    r = store_head(st, argv[0], &sb);
    if (r < 0)
        return cli_store_report("stat", r);
    if (o->json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "key");
        json_builder_add_string_value(b, argv[0]);
        json_builder_set_member_name(b, "size");
        json_builder_add_int_value(b, (gint64)sb.size);
        json_builder_set_member_name(b, "mtime");
        json_builder_add_int_value(b, (gint64)sb.mtime);
        json_builder_set_member_name(b, "etag");
        json_builder_add_string_value(b, sb.etag);
        json_builder_set_member_name(b, "sha256");
        json_builder_add_string_value(b, sb.sha256);
        json_builder_end_object(b);
        cli_store_print_json(b);
        g_object_unref(b);
        return CLI_EXIT_OK;
    }
    cli_store_format_time(sb.mtime, when, sizeof when);
    printf("key:    %s\nsize:   %llu\nmtime:  %s\n", argv[0], (unsigned long long)sb.size, when);
    if (sb.etag[0])
        printf("etag:   %s\n", sb.etag);
    if (sb.sha256[0])
        printf("sha256: %s\n", sb.sha256);
    return CLI_EXIT_OK;
}

struct cli_store_verb {
    const char *name;
    int (*run)(struct store *st, struct cli_store_options *o, int argc, char **argv);
    const char *args;
    const char *summary;
};

static const struct cli_store_verb cli_store_verbs[] = {
    {"ls", cli_store_ls, "[URL] [PREFIX]", "list objects, in key order"},
    {"put", cli_store_put, "[URL] KEY [FILE|-]", "upload a file (or stdin)"},
    {"get", cli_store_get, "[URL] KEY [FILE|-]", "download an object to a file (or stdout)"},
    {"rm", cli_store_rm, "[URL] KEY...", "delete objects"},
    {"stat", cli_store_stat, "[URL] KEY", "show an object's size, time and checksums"},
};

static void cli_store_usage(FILE *out)
{
    fprintf(out, "Usage: wisp store VERB [OPTIONS] [URL] ARGS...\n\nVerbs:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(cli_store_verbs); i++)
        fprintf(out, "  %-5s %-20s %s\n", cli_store_verbs[i].name, cli_store_verbs[i].args,
                cli_store_verbs[i].summary);
    fprintf(out, "\nURL is file:///DIR or s3://BUCKET[/PREFIX]?endpoint=URL&region=R"
                 "[&style=path|virtual];\nwithout it, --store or $WISP_STORE is used.\n"
                 "Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY [AWS_SESSION_TOKEN], or "
                 "--credentials FILE.\nRun 'wisp store VERB --help' for the options.\n");
}

int cli_store_main(int argc, char **argv)
{
    struct cli_store_options o = {0};
    const struct cli_store_verb *verb = NULL;
    GOptionEntry entries[] = {
        {"store", 's', 0, G_OPTION_ARG_STRING, &o.store_url, "Store URL (default $WISP_STORE)",
         "URL"},
        {"credentials", 0, 0, G_OPTION_ARG_FILENAME, &o.credentials, "AWS-style credentials file",
         "FILE"},
        {"profile", 0, 0, G_OPTION_ARG_STRING, &o.profile, "Profile in the credentials file",
         "NAME"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &o.json, "Print JSON (ls, stat)", NULL},
        {"if-absent", 0, 0, G_OPTION_ARG_NONE, &o.if_absent,
         "put: create only if no object has the key", NULL},
        {"connect-timeout", 0, 0, G_OPTION_ARG_INT, &o.connect_timeout_ms,
         "Connect timeout per attempt (ms)", "MS"},
        {"timeout", 0, 0, G_OPTION_ARG_INT, &o.request_timeout_ms,
         "Request timeout per attempt (ms)", "MS"},
        {"attempts", 0, 0, G_OPTION_ARG_INT, &o.attempts, "Attempts per request", "N"},
        G_OPTION_ENTRY_NULL,
    };
    struct store *st;
    int status;

    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cli_store_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(cli_store_verbs); i++)
        if (!strcmp(argv[1], cli_store_verbs[i].name))
            verb = &cli_store_verbs[i];
    if (!verb) {
        cli_error("unknown store verb '%s'; run 'wisp store --help'", argv[1]);
        return CLI_EXIT_USAGE;
    }

    if (cli_parse_options("store", verb->name, verb->args, verb->summary, entries, &argc, &argv) !=
        CLI_EXIT_OK)
        return CLI_EXIT_USAGE;

    /* The first positional is the store when it looks like a URL. */
    if (argc > 0 && strstr(argv[0], "://")) {
        g_free(o.store_url);
        o.store_url = g_strdup(argv[0]);
        argc--;
        argv++;
    } else if (!o.store_url && getenv("WISP_STORE")) {
        o.store_url = g_strdup(getenv("WISP_STORE"));
    }
    if (!o.store_url) {
        cli_error("no store given: pass a URL (file:///DIR or s3://BUCKET?endpoint=...), "
                  "--store or set WISP_STORE");
        return CLI_EXIT_USAGE;
    }

    status = cli_store_open(&o, &st);
    if (status == CLI_EXIT_OK) {
        status = verb->run(st, &o, argc, argv);
        store_close(st);
    }
    g_free(o.store_url);
    g_free(o.credentials);
    g_free(o.profile);
    return status;
}
