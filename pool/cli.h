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

/* `wisp create|list|exec|checkpoint|restore|sleep|wake|destroy ...` on wispd's API
 * (cli_sprite.c): argv[0] is the verb. */
int cli_sprite_main(int argc, char **argv);

/* `wisp pool status|resize ...` on wispd's /v1/pools (cli_pool.c): argv[0] is "pool". */
int cli_pool_main(int argc, char **argv);

/* `wisp disk ...`: argv[0] is "disk". */
int cli_disk_main(int argc, char **argv);

/* `wisp disk restore-meta ...` (cli_restore_meta.c): argv[0] is "disk", argv[1] the verb. */
int cli_restore_meta_main(int argc, char **argv);

/* `wisp disk import ...` (cli_import.c): argv[0] is "disk", argv[1] the verb. */
int cli_import_main(int argc, char **argv);

/* Parses the options of `wisp GROUP VERB ...` (argv[0] is GROUP, argv[1] is VERB).  On success
 * *argc and *argv are left holding the positional arguments after the verb (argv[0] is the
 * first of them) and CLI_EXIT_OK is returned; otherwise the message is printed and
 * CLI_EXIT_USAGE returned.  --help prints the options and exits the program (GOption's way). */
struct _GOptionEntry;
int cli_parse_options(const char *group, const char *verb, const char *args, const char *summary,
                      const struct _GOptionEntry *entries, int *argc, char ***argv);

/* Prints "wisp: <message>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
