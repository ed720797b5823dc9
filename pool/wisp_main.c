/* wisp_main.c: the wisp executable's entry point.
 *
 * `wisp exec` and `wisp console` run here, in a process that loads GLib, json-glib and libsoup
 * (exec's WebSocket client) only.  Every other verb, and exec's less common forms (--json,
 * --help, a usage error), runs in the verbs module wisp-cli-verbs.so (wisp.c and the cli_*.c
 * files: libcurl, libnbd, OpenSSL, the wisp meta and store code), which is loaded with
 * dlopen(3) only then.  Why: the dynamic loading of those libraries was most of
 * `wisp exec NAME true` on an awake sprite, the figure issue 7 asks to keep under 20 ms
 * (docs/benchmarks.md, "exec round trip"); libsoup alone costs a few ms of it.
 *
 * The module is found through this executable's RUNPATH: the build directory in a build,
 * LIBDIR/wisp once installed (pool/meson.build). */
#include "cli.h"
#include "cli_exec.h"

#include <dlfcn.h>
#include <glib.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define WISP_VERBS_MODULE   "wisp-cli-verbs.so"
#define WISP_DEFAULT_SOCKET "/var/lib/wisp/wispd.sock" /* as cli_sprite.c */

/* Runs argv in the verbs module (wisp.c's wisp_cli_main). */
static int wisp_run_module(int argc, char **argv)
{
    void *mod = dlopen(WISP_VERBS_MODULE, RTLD_NOW | RTLD_LOCAL);
    if (!mod) {
        cli_error("cannot load the CLI's verbs (%s): %s", WISP_VERBS_MODULE, dlerror());
        return CLI_EXIT_ERROR;
    }
    int (*run)(int, char **);
    *(void **)&run = dlsym(mod, "wisp_cli_main");
    if (!run) {
        cli_error("%s has no wisp_cli_main: %s", WISP_VERBS_MODULE, dlerror());
        return CLI_EXIT_ERROR;
    }
    return run(argc, argv); /* the module stays loaded until exit */
}

/* True for an argument that asks GOption for help (which prints and exits). */
static bool wisp_is_help(const char *a)
{
    return !strcmp(a, "-h") || !strcmp(a, "-?") || g_str_has_prefix(a, "--help");
}

/* `wisp exec|console ...` on the common path: the same options as cli_sprite.c parses for
 * them.  Returns -1 to leave it to the module (which then prints the help, the usage error,
 * or runs --json), else the exit code.  argv is not changed (GOption works on a copy). */
static int wisp_fast_exec(int argc, char **argv)
{
    bool exec = !strcmp(argv[0], "exec");
    gboolean json = FALSE, with_stdin = FALSE, tty = FALSE, cold = FALSE;
    char *socket = NULL, *token = NULL;
    GOptionEntry entries[] = {
        {"socket", 0, 0, G_OPTION_ARG_FILENAME, &socket, NULL, NULL},
        {"token", 0, 0, G_OPTION_ARG_STRING, &token, NULL, NULL},
        {"json", 0, 0, G_OPTION_ARG_NONE, &json, NULL, NULL},
        {exec ? "stdin" : "unused-stdin", 'i', exec ? 0 : G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE,
         &with_stdin, NULL, NULL},
        {exec ? "tty" : "unused-tty", 't', exec ? 0 : G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &tty,
         NULL, NULL},
        {"unused-cold", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &cold, NULL, NULL},
        G_OPTION_ENTRY_NULL,
    };
    int status = -1;

    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (wisp_is_help(argv[i]))
            return -1;
    g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
    g_option_context_set_help_enabled(ctx, FALSE);
    g_option_context_add_main_entries(ctx, entries, NULL);
    char **copy = g_new0(char *, argc + 1);
    memcpy(copy, argv, sizeof(char *) * (size_t)argc);
    char **args = copy;
    int n = argc;
    bool parsed = g_option_context_parse(ctx, &n, &args, NULL);
    /* Positional arguments after the parse: args[1] is NAME; exec's command follows, after a
     * "--" that GOption keeps when option-like words follow it. */
    int first = exec && n > 2 && !strcmp(args[2], "--") ? 3 : 2;
    if (parsed && !json && n >= 2 && (exec ? first < n : n == 2)) {
        if (!socket)
            socket =
                g_strdup(g_getenv("WISP_SOCKET") ? g_getenv("WISP_SOCKET") : WISP_DEFAULT_SOCKET);
        if (!token && g_getenv("WISP_TOKEN"))
            token = g_strdup(g_getenv("WISP_TOKEN"));
        if (exec) {
            status = cli_exec_stream(socket, token, args[1], args + first, tty, with_stdin);
        } else {
            char *shell[] = {"/bin/sh", "-l", NULL};
            status = cli_exec_stream(socket, token, args[1], shell, true, true);
        }
    }
    g_free(copy);
    g_free(socket);
    g_free(token);
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "exec") || !strcmp(argv[1], "console"))) {
        int status = wisp_fast_exec(argc - 1, argv + 1);
        if (status >= 0)
            return status;
    }
    return wisp_run_module(argc, argv);
}
