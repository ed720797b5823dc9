/* cli_gc.c: `wisp-vm gc`, garbage collection of sleep manifests and RAM chunks (vm_gc.h).
 *
 *   wisp-vm gc --store URL --state DIR [--keep K] [--grace DURATION] [--force] [--dry-run]
 *              [--pin KEY]... [--delete-sprite NAME]
 *
 * Prints the run's report as JSON on stdout.  --state pins every manifest the sprite database
 * there records (each sprite's current one and a sleep's pending one), as wispd does; it is
 * required unless --dry-run, and is opened read-only, never created (a mistyped path is an
 * error, not a database without sprites).  --delete-sprite deletes first the manifests of the
 * name's incarnations that the database says are destroyed (never the live one's).  A grace
 * below the safe minimum (ram_chunks.h) is refused unless --force. */
#include "cli.h"

#include "chunk_gc.h"
#include "sprite_db.h"
#include "vm_gc.h"

#include <stdio.h>

int cli_gc(int argc, char **argv)
{
    static char *store_url, *grace_text, *state_dir, *delete_sprite;
    static char **pin_args;
    static gint keep = VM_GC_KEEP_DEFAULT;
    static gboolean dry_run, force;
    GOptionEntry entries[] = {
        {"store", 0, 0, G_OPTION_ARG_STRING, &store_url, "the object store", "URL"},
        {"keep", 0, 0, G_OPTION_ARG_INT, &keep, "newest manifests kept per sprite (default 2)",
         "K"},
        {"grace", 0, 0, G_OPTION_ARG_STRING, &grace_text,
         "unreferenced chunks younger than this are kept (default 1h)", "DURATION"},
        {"dry-run", 0, 0, G_OPTION_ARG_NONE, &dry_run, "count, delete nothing", NULL},
        {"force", 0, 0, G_OPTION_ARG_NONE, &force,
         "accept a grace below the safe minimum (only when nothing sleeps)", NULL},
        {"pin", 0, 0, G_OPTION_ARG_STRING_ARRAY, &pin_args, "keep this manifest too (repeat)",
         "KEY"},
        {"state", 0, 0, G_OPTION_ARG_FILENAME, &state_dir,
         "pin every manifest this sprite database records", "DIR"},
        {"delete-sprite", 0, 0, G_OPTION_ARG_STRING, &delete_sprite,
         "first delete every manifest of this (destroyed) sprite", "NAME"},
        G_OPTION_ENTRY_NULL};
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- delete old sleep manifests and unreferenced RAM chunks");
    struct vm_gc_options o;
    struct vm_gc_report rep;
    struct store *st = NULL;
    GError *err = NULL;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!cli_parse(ctx, &argc, &argv))
        return CLI_EXIT_USAGE;
    vm_gc_options_init(&o);
    if (!store_url) {
        fprintf(stderr, "wisp-vm: gc: --store is required\n");
        return CLI_EXIT_USAGE;
    }
    if (keep < 1) {
        fprintf(stderr, "wisp-vm: gc: --keep must be at least 1\n");
        return CLI_EXIT_USAGE;
    }
    if (grace_text && chunk_gc_parse_duration(grace_text, &o.grace_s) < 0) {
        fprintf(stderr, "wisp-vm: gc: --grace: '%s' is not a duration (3600, 90s, 30m, 1h, 2d)\n",
                grace_text);
        return CLI_EXIT_USAGE;
    }
    o.keep = (unsigned)keep;
    o.dry_run = dry_run;
    o.force = force;

    if (!state_dir && (!dry_run || delete_sprite)) {
        fprintf(stderr, "wisp-vm: gc: --state DIR (the sprite database) is required to delete: "
                        "without its pins a sprite's current manifest could go\n");
        return CLI_EXIT_USAGE;
    }

    g_autoptr(GPtrArray) pins = g_ptr_array_new_with_free_func(g_free);
    sprite_db *db = NULL;
    for (char **p = pin_args; p && *p; p++)
        g_ptr_array_add(pins, g_strdup(*p));
    if (state_dir) {
        db = sprite_db_open_readonly(state_dir, &err);
        if (!db || !sprite_db_manifest_pins(db, pins, &err)) {
            sprite_db_close(db);
            return cli_fail("gc", err);
        }
    }
    g_ptr_array_add(pins, NULL);
    o.pins = (const char *const *)pins->pdata;

    if (store_open(store_url, NULL, &st) != 0) {
        fprintf(stderr, "wisp-vm: gc: open %s: %s\n", store_url, store_last_error());
        sprite_db_close(db);
        return CLI_EXIT_FAILURE;
    }
    if (delete_sprite && !dry_run && !vm_gc_delete_sprite(st, db, delete_sprite, NULL, &err)) {
        store_close(st);
        sprite_db_close(db);
        return cli_fail("gc", err);
    }
    sprite_db_close(db);
    bool ok = vm_gc_run(st, &o, &rep, &err);
    g_autofree char *json = vm_gc_report_to_json(&rep);
    printf("%s\n", json);
    store_close(st);
    return ok ? 0 : cli_fail("gc", err);
}
