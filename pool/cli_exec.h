/* cli_exec.h: `wisp exec` and `wisp console` streaming over wispd's WebSocket (cli_exec.c). */
#ifndef WISP_CLI_EXEC_H
#define WISP_CLI_EXEC_H

#include <stdbool.h>

/* Runs cmd (NULL-terminated) in sprite name and streams its stdin, stdout and stderr.  tty:
 * a pty in the guest and this terminal in raw mode.  force_stdin: send stdin even when it is
 * a terminal (it is always sent when it is not one, and with tty).  Returns the remote
 * command's exit code, or CLI_EXIT_ERROR after printing what went wrong. */
int cli_exec_stream(const char *socket_path, const char *token, const char *name, char **cmd,
                    bool tty, bool force_stdin);

#endif
