/* wisp: the operator and user CLI.  One table maps each verb group to its entry point; each
 * group lives in its own cli_<group>.c file.  This is the verbs module's entry point
 * (wisp-cli-verbs.so), which the wisp executable (wisp_main.c) loads for every verb but the
 * common forms of exec and console. */
#include "cli.h"
#include "log.h"

#include <glib.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct cli_command cli_commands[] = {
    {"create", cli_sprite_main, "create a sprite (through wispd)"},
    {"list", cli_sprite_main, "list your sprites"},
    {"exec", cli_sprite_main, "run a command in a sprite: wisp exec NAME [-t] [-i] -- CMD..."},
    {"console", cli_sprite_main, "an interactive shell in a sprite: wisp console NAME"},
    {"checkpoint", cli_sprite_main, "checkpoint create|list NAME, checkpoint delete NAME CKPT"},
    {"restore", cli_sprite_main, "restore NAME CHECKPOINT"},
    {"sleep", cli_sprite_main, "put a sprite to (warm) sleep"},
    {"wake", cli_sprite_main, "wake a sprite"},
    {"destroy", cli_sprite_main, "destroy a sprite and its disk"},
    {"pool", cli_pool_main, "pool status [--json], pool resize IMAGE N (the warm VMs)"},
    {"disk", cli_disk_main, "create, list, delete disks and show their statistics"},
    {"store", cli_store_main, "check and use an object store: ls, put, get, rm, stat"},
};

int cli_parse_options(const char *group, const char *verb, const char *args, const char *summary,
                      const GOptionEntry *entries, int *argc, char ***argv)
{
    char *param = g_strdup_printf("%s - %s", args, summary);
    GOptionContext *ctx = g_option_context_new(param);
    GError *error = NULL;
    char *prog = g_strdup_printf("wisp %s %s", group, verb);
    char **args_in = *argv + 1;
    int n = *argc - 1;
    bool parsed;

    g_free(param);
    g_option_context_add_main_entries(ctx, entries, NULL);
    /* GOption takes the first argument as the program name: make it "wisp GROUP VERB". */
    args_in[0] = prog;
    parsed = g_option_context_parse(ctx, &n, &args_in, &error);
    g_option_context_free(ctx);
    g_free(prog);
    if (!parsed) {
        cli_error("%s", error->message);
        g_error_free(error);
        return CLI_EXIT_USAGE;
    }
    *argc = n - 1;
    *argv = args_in + 1;
    return CLI_EXIT_OK;
}

static void cli_usage(FILE *out)
{
    fprintf(out, "Usage: wisp COMMAND [ARGS...]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++)
        fprintf(out, "  %-10s %s\n", cli_commands[i].name, cli_commands[i].summary);
    fprintf(out, "\nRun 'wisp COMMAND --help' for a command's options.\n"
                 "Environment: WISP_SOCKET, WISP_TOKEN (wispd's socket and your token),\n"
                 "WISP_STORE, WISP_META, WISP_CONTROL (defaults for --store, --meta, --control),\n"
                 "WISP_LOG_LEVEL, WISP_DEBUG.\n");
}

/* Library messages carry detail the CLI already reports in its own words, so they are shown
 * only when asked for, with WISP_LOG_LEVEL or WISP_DEBUG. */
static bool cli_show_library_logs;

static void cli_log_sink(enum wisp_log_level level, const char *module, const char *msg)
{
    if (cli_show_library_logs)
        fprintf(stderr, "wisp: %s: %s: %s\n", wisp_log_level_to_string(level), module, msg);
}

/* The whole CLI, as main() was before the split; wisp_main.c calls it through dlsym. */
int wisp_cli_main(int argc, char **argv);
int wisp_cli_main(int argc, char **argv)
{
    cli_show_library_logs = getenv("WISP_LOG_LEVEL") || getenv("WISP_DEBUG");
    wisp_log_set_sink(cli_log_sink);
    if (argc < 2) {
        cli_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        cli_usage(stdout);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++)
        if (!strcmp(argv[1], cli_commands[i].name))
            return cli_commands[i].run(argc - 1, argv + 1);
    cli_error("unknown command '%s'; run 'wisp --help' for the list", argv[1]);
    return CLI_EXIT_USAGE;
}
