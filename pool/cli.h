/* cli.h: what the wisp CLI's verb groups share. */
#ifndef WISP_CLI_H
#define WISP_CLI_H

/* Exit codes of every wisp command. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_ERROR = 1,
    CLI_EXIT_USAGE = 2,
};

/* `wisp store ...`: argv[0] is "store". */
int cli_store_main(int argc, char **argv);

/* `wisp disk ...`: argv[0] is "disk". */
int cli_disk_main(int argc, char **argv);

/* Prints "wisp: <message>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
