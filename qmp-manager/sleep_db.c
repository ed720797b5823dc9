/* sleep_db.c: sleep and wake recorded in the sprite database (see sleep_db.h). */
#include "sleep_db.h"

#include "log.h"

#define SLEEP_DB_LOG "sleep"

/* Records the failure; the original error stays the one returned. */
static void record_failure(sprite_db *db, const char *name, enum sprite_state fallback,
                           const GError *why)
{
    GError *err = NULL;
    if (!sprite_db_fail(db, name, fallback, why ? why->message : "?", &err)) {
        log_error(SLEEP_DB_LOG, "sprite %s: recording the failure: %s", name, err->message);
        g_error_free(err);
    }
}

bool sprite_sleep_cold(sprite_db *db, struct vm *vm, struct cold_sleep_opts *opts,
                       struct cold_sleep_result *out, GError **error)
{
    struct sprite_record *r = sprite_db_get(db, opts->sprite, error);
    GHashTable *known = NULL;
    GError *ignored = NULL;

    if (!r)
        return false;
    if (r->state != SPRITE_RUNNING && r->state != SPRITE_WARM_ASLEEP) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "sprite %s is %s, not running", opts->sprite,
                    sprite_state_to_string(r->state));
        sprite_record_free(r);
        return false;
    }
    /* Under the record's incarnation: unique to this use of the name (sleep.h). */
    g_autofree char *key =
        sleep_manifest_key_incarnation(opts->sprite, r->incarnation, r->sleep_seq + 1);
    if (!key) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "sprite %s: no manifest key (bad name or incarnation '%s')", opts->sprite,
                    r->incarnation ? r->incarnation : "");
        sprite_record_free(r);
        return false;
    }
    /* The previous manifest, else (a first sleep) the template's: both are GC roots while this
     * sleep runs (vm_gc.h, (b)), so their chunks need no HEAD. */
    const char *known_from = r->manifest_key ? r->manifest_key : opts->template_manifest_key;
    if (known_from) {
        known = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        /* Only an optimisation: without it every chunk is looked up in the store. */
        if (!sleep_known_from_manifest(opts->store, known_from, known, &ignored)) {
            log_warn(SLEEP_DB_LOG, "sprite %s: no known set: %s", opts->sprite, ignored->message);
            g_clear_error(&ignored);
            g_hash_table_remove_all(known);
        }
    }
    sprite_record_free(r);
    opts->manifest_key = key;
    opts->known = known;
    bool ok = sprite_db_begin(db, opts->sprite, SPRITE_GOING_COLD, key, error);
    if (ok) {
        ok = opts->private_ram_config
                 ? sleep_cold_private(vm, opts->private_ram_config, opts, out, error)
                 : sleep_cold(vm, opts, out, error);
        if (ok)
            ok = sprite_db_end(db, opts->sprite, SPRITE_COLD_ASLEEP, 0, NULL, key, "cold sleep",
                               error);
        else
            record_failure(db, opts->sprite, vm_is_running(vm) ? SPRITE_RUNNING : SPRITE_CRASHED,
                           error ? *error : NULL);
    }
    opts->manifest_key = NULL;
    opts->known = NULL;
    if (known)
        g_hash_table_unref(known);
    return ok;
}

struct vm *sprite_wake_cold(sprite_db *db, const char *name, struct wake_opts *opts,
                            GMainContext *ctx, struct wake_result *out, GError **error)
{
    struct sprite_record *r = sprite_db_get(db, name, error);
    struct vm *vm = NULL;

    if (!r)
        return NULL;
    if (r->state != SPRITE_COLD_ASLEEP || !r->manifest_key) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "sprite %s is %s, not cold-asleep", name,
                    sprite_state_to_string(r->state));
        sprite_record_free(r);
        return NULL;
    }
    opts->manifest_key = r->manifest_key;
    if (sprite_db_begin(db, name, SPRITE_WAKING, NULL, error)) {
        vm = wake_cold(opts, ctx, out, error);
        if (!vm)
            record_failure(db, name, SPRITE_COLD_ASLEEP, error ? *error : NULL);
        else if (!sprite_db_end(db, name, SPRITE_RUNNING, vm->pid, vm->run_dir, NULL, "woke",
                                error)) {
            /* Unrecorded, it would be a QEMU nobody knows about: it goes. */
            vm_free(vm);
            vm = NULL;
        }
    }
    opts->manifest_key = NULL;
    sprite_record_free(r);
    return vm;
}
