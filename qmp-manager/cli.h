/* cli.h: what the verbs of wisp-vm share.  Each verb is one function in its own file, listed in
 * the table of wisp_vm.c; it gets argv without the verb and returns the process's exit code. */
#ifndef WISP_VM_CLI_H
#define WISP_VM_CLI_H

#include "agent_client.h"

#include <glib.h>

#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE   2

int cli_boot(int argc, char **argv);
int cli_template(int argc, char **argv);
int cli_pool(int argc, char **argv);
int cli_claim(int argc, char **argv);
int cli_exec(int argc, char **argv);
int cli_attach(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_freeze(int argc, char **argv);
int cli_thaw(int argc, char **argv);
int cli_shutdown(int argc, char **argv);
int cli_kill(int argc, char **argv);
int cli_probe_accel(int argc, char **argv);
int cli_sprites(int argc, char **argv);
int cli_gc(int argc, char **argv);

/* The run directory of a booted VM: --run-dir, else $WISP_VM_RUN_DIR. */
const char *cli_run_dir(const char *given);
/* Connects to the VM's control socket and waits for READY; prints the error and returns NULL on
 * failure. */
agent_client *cli_agent_connect(const char *run_dir, int timeout_ms);
/* Parses options; prints the error and returns false on a usage error. */
bool cli_parse(GOptionContext *ctx, int *argc, char ***argv);
/* Prints "wisp-vm: VERB: message" and frees the error; returns CLI_EXIT_FAILURE. */
int cli_fail(const char *verb, GError *error);

#endif
