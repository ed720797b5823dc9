/* cli_common.c: helpers of the wisp-vm verbs (see cli.h). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

const char *cli_run_dir(const char *given)
{
    const char *env = getenv("WISP_VM_RUN_DIR");

    if (given && *given)
        return given;
    if (env && *env)
        return env;
    fprintf(stderr, "wisp-vm: --run-dir (or WISP_VM_RUN_DIR) is required\n");
    return NULL;
}

int cli_fail(const char *verb, GError *error)
{
    fprintf(stderr, "wisp-vm: %s: %s\n", verb, error ? error->message : "failed");
    g_clear_error(&error);
    return CLI_EXIT_FAILURE;
}

bool cli_parse(GOptionContext *ctx, int *argc, char ***argv)
{
    GError *error = NULL;

    if (!g_option_context_parse(ctx, argc, argv, &error)) {
        fprintf(stderr, "wisp-vm: %s\n", error->message);
        g_error_free(error);
        return false;
    }
    return true;
}

agent_client *cli_agent_connect(const char *run_dir, int timeout_ms)
{
    g_autofree char *path = g_build_filename(run_dir, "ctl.sock", NULL);
    GError *error = NULL;
    agent_client *c = agent_client_connect(path, timeout_ms, &error);

    if (!c) {
        cli_fail("connect", error);
        return NULL;
    }
    if (!agent_client_wait_ready(c, timeout_ms, NULL, &error)) {
        cli_fail("ready", error);
        agent_client_free(c);
        return NULL;
    }
    return c;
}
