/* cli_sprites.c: `wisp-vm sprites`, the sprite database as a table, for operators.
 *
 *   wisp-vm sprites --state DIR [--recover [--store URL]]
 *
 * Without --recover it only reads.  With it, it does what a manager does at start-up
 * (sprite_db_recover): each sprite's state decided from its QEMU and its manifest in the store,
 * and every change recorded. */
#include "cli.h"

#include "sprite_db.h"

#include <stdio.h>

int cli_sprites(int argc, char **argv)
{
    static char *state_dir, *store_url;
    static gboolean recover;
    GOptionEntry entries[] = {
        {"state", 0, 0, G_OPTION_ARG_FILENAME, &state_dir, "the manager's state directory", "DIR"},
        {"recover", 0, 0, G_OPTION_ARG_NONE, &recover, "recover as a restarted manager would",
         NULL},
        {"store", 0, 0, G_OPTION_ARG_STRING, &store_url, "the store manifests are in", "URL"},
        G_OPTION_ENTRY_NULL};
    g_autoptr(GOptionContext) ctx = g_option_context_new("- list sprites and their states");
    GError *err = NULL;
    struct store *st = NULL;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!cli_parse(ctx, &argc, &argv))
        return CLI_EXIT_USAGE;
    if (!state_dir) {
        fprintf(stderr, "wisp-vm: sprites: --state is required\n");
        return CLI_EXIT_USAGE;
    }
    if (store_url && store_open(store_url, NULL, &st) != 0) {
        fprintf(stderr, "wisp-vm: sprites: open %s: %s\n", store_url, store_last_error());
        return CLI_EXIT_FAILURE;
    }
    sprite_db *db = sprite_db_open(state_dir, &err);
    if (!db) {
        store_close(st);
        return cli_fail("sprites", err);
    }
    GPtrArray *list = recover ? sprite_db_recover(db, st, &err) : sprite_db_list(db, &err);
    if (!list) {
        sprite_db_close(db);
        store_close(st);
        return cli_fail("sprites", err);
    }
    printf("%-20s %-12s %-8s %s\n", "NAME", "STATE", "PID", "MANIFEST");
    for (guint i = 0; i < list->len; i++) {
        struct sprite_record *r = g_ptr_array_index(list, i);
        printf("%-20s %-12s %-8d %s\n", r->name, sprite_state_to_string(r->state), (int)r->pid,
               r->manifest_key ? r->manifest_key : "-");
    }
    g_ptr_array_unref(list);
    sprite_db_close(db);
    store_close(st);
    return 0;
}
