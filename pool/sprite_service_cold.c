/* sprite_service_cold.c: cold sleep and wake of the sprite service (sprite_service.h), and
 * their recovery at start.  Shares sprite_service_internal.h with sprite_service.c. */
#include "sprite_service.h"
#include "sprite_service_internal.h"

#include "log.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>

/* ---- cold sleep and wake -------------------------------------------------------------------
 *
 * A cold-asleep sprite has no VM: its memory and device state are in the store (and usually in
 * the local copy), its disk is as the guest left it, and the account DB's cold_sleep row names
 * the manifest (account_db.c has the states and what recovery makes of each).  Every change of
 * that row happens under the sprite's op lock, before and after the VM layer's step. */

/* The account's database, opened by an earlier svc_enter (it stays open until the end). */
static account_db *svc_account_db(sprite_service *svc, const char *account)
{
    g_mutex_lock(&svc->mu);
    account_db *db = g_hash_table_lookup(svc->accounts, account);
    g_mutex_unlock(&svc->mu);
    return db;
}

static void svc_cold_record(account_db *db, const char *key, const char *state)
{
    GError *err = NULL;
    if (!account_db_cold_set(db, strchr(key, '/') + 1, state, &err)) {
        log_error(SVC_LOG, "%s: recording '%s': %s", key, state, err->message);
        g_clear_error(&err);
    }
}

/* The sprite's memory no longer matters (deleted, restored, created again): the row and the
 * local copy go.  The manifests and chunks in the store stay for the store's GC. */
void svc_cold_forget(sprite_service *svc, account_db *db, struct live_sprite *l)
{
    GError *err = NULL;
    if (!account_db_cold_forget(db, l->name, &err)) {
        log_warn(SVC_LOG, "%s: %s", l->key, err->message);
        g_clear_error(&err);
    }
    if (svc->cold_store)
        sprite_cold_remove_local(&svc->cold, l->disk);
}

/* Cold-sleeps a sprite that has a VM (op held).  why: for the log and the audit. */
bool svc_cold_sleep_locked(sprite_service *svc, account_db *db, struct live_sprite *l,
                           const char *why, GError **error)
{
    struct account_cold row = {0};
    struct cold_sleep_result res = {0};
    GError *err = NULL;

    if (!svc->cold_store)
        return svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "cold sleep is not configured");
    if (!l->vm)
        return svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "sprite '%s' is %s", l->name,
                        l->state == LIVE_COLD ? "asleep (cold)" : "stopped");
    /* The guest syncs its filesystems first, through the agent: it must be running. */
    if (l->vm->state == SPRITE_VM_WARM_ASLEEP && !sprite_wake_warm(l->vm, NULL, &err)) {
        svc_wrap(error, err, "cold sleep: wake from warm");
        return false;
    }
    svc_set_state(svc, l, LIVE_RUNNING);
    if (account_db_cold_get(db, l->name, &row, &err) < 0) {
        svc_wrap(error, err, "account database");
        return false;
    }
    unsigned seq = row.seq + 1;
    g_autofree char *key = sleep_manifest_key(l->disk, seq);
    if (!account_db_cold_begin(db, l->name, seq, key, &err)) {
        svc_wrap(error, err, "account database");
        return false;
    }
    log_info(SVC_LOG, "%s: cold sleep (%s) to %s", l->key, why, key);
    struct sprite *resumed = NULL;
    bool ok = sprite_cold_sleep(&svc->cold, l->vm, l->woken, l->disk, key, row.manifest, &res,
                                &resumed, &err);
    if (ok) {
        svc_cold_record(db, l->key, "cold");
        sprite_destroy(l->vm, false, NULL, NULL, NULL); /* QEMU has exited: frees the rest */
        l->vm = NULL;
        l->woken = false;
        svc_set_state(svc, l, LIVE_COLD);
        g_autofree char *detail = g_strdup_printf(
            "cold (%s): %.2f s, %.1f MiB new in the store, %s", why, res.total_s,
            (double)(res.ram.uploaded_bytes + res.state.uploaded_bytes) / (1024.0 * 1024.0), key);
        log_info(SVC_LOG, "%s: asleep, %s", l->key, detail);
        account_db_audit(db, "sleep", l->name, true, detail);
        return true;
    }
    /* The manifest was not written: the sleep never happened. */
    svc_cold_record(db, l->key, "awake");
    if (resumed) {
        /* The store failed after QEMU exited: the sprite runs again from its local copy. */
        sprite_destroy(l->vm, false, NULL, NULL, NULL);
        l->vm = resumed;
        l->woken = true;
        svc_set_state(svc, l, LIVE_RUNNING);
        log_warn(SVC_LOG, "%s: cold sleep failed, resumed from the local copy: %s", l->key,
                 err->message);
    } else if (vm_is_running(l->vm->vm)) {
        svc_set_state(svc, l, LIVE_RUNNING);
        log_warn(SVC_LOG, "%s: cold sleep failed, still running: %s", l->key, err->message);
    } else {
        sprite_destroy(l->vm, false, NULL, NULL, NULL);
        l->vm = NULL;
        l->woken = false;
        svc_set_state(svc, l, LIVE_STOPPED);
        log_error(SVC_LOG, "%s: cold sleep failed and QEMU is gone (stopped, disk kept): %s",
                  l->key, err->message);
    }
    g_autofree char *what = g_strdup_printf("cold sleep (%s)", why);
    svc_wrap(error, err, what);
    account_db_audit(db, "sleep", l->name, false, (*error)->message);
    return false;
}

bool svc_cold_wake_locked(sprite_service *svc, struct live_sprite *l, GError **error)
{
    account_db *db = svc_account_db(svc, l->account);
    struct account_cold row = {0};
    struct wake_result res = {0};
    GError *err = NULL;

    if (!db || !svc->cold_store)
        return svc_fail(error, SPRITE_SERVICE_ERROR_FAILED, "wake: no account database or store");
    int found = account_db_cold_get(db, l->name, &row, &err);
    if (found < 0) {
        svc_wrap(error, err, "account database");
        return false;
    }
    if (found == 0 || strcmp(row.state, "cold") != 0 || !row.manifest[0])
        return svc_fail(error, SPRITE_SERVICE_ERROR_FAILED, "wake: sprite '%s' has no cold sleep",
                        l->name);
    svc_cold_record(db, l->key, "waking");
    log_info(SVC_LOG, "%s: waking from %s", l->key, row.manifest);
    struct sprite *s = sprite_cold_wake(&svc->cold, l->disk, l->name, row.manifest, &res, &err);
    if (!s) {
        svc_cold_record(db, l->key, "cold"); /* the manifest is untouched: try again later */
        svc_wrap(error, err, "wake (cold)");
        account_db_audit(db, "wake", l->name, false, (*error)->message);
        return false;
    }
    svc_cold_record(db, l->key, "awake");
    l->vm = s;
    l->woken = true;
    svc_set_state(svc, l, LIVE_RUNNING);
    g_autofree char *detail =
        g_strdup_printf("cold: %.2f s, from %s (%.1f MiB fetched)", res.total_s,
                        res.from_store ? "the store" : "the local copy",
                        (double)res.fetched_bytes / (1024.0 * 1024.0));
    log_info(SVC_LOG, "%s: awake, %s", l->key, detail);
    account_db_audit(db, "wake", l->name, true, detail);
    return true;
}

static JsonNode *svc_sleep_cold_verb(sprite_service *svc, account_db *db, struct live_sprite *l,
                                     const void *unused, GError **error)
{
    (void)unused;
    /* As warm sleep: an open stream holds the sprite awake (SIGTERM's sleep ends them first). */
    g_mutex_lock(&svc->mu);
    unsigned holds = l->holds;
    g_mutex_unlock(&svc->mu);
    if (holds > 0) {
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT,
                 "sprite '%s' has %u open exec stream(s); it sleeps once they end", l->name, holds);
        return NULL;
    }
    if (!svc_cold_sleep_locked(svc, db, l, "asked", error))
        return NULL;
    JsonNode *n = svc_ok_node(l->name, "asleep");
    json_object_set_string_member(json_node_get_object(n), "mode", "cold");
    return n;
}

JsonNode *sprite_service_sleep_mode(sprite_service *svc, const char *account, const char *name,
                                    bool cold, GError **error)
{
    if (!cold)
        return sprite_service_sleep(svc, account, name, error);
    return svc_on_sprite(svc, account, name, svc_sleep_cold_verb, NULL, error);
}

/* Start-up: what each cold_sleep row that is not "awake" really is now (account_db.c). */
static void svc_cold_recover_row(sprite_service *svc, account_db *db, const char *account,
                                 const struct account_cold *c)
{
    g_autofree char *key = g_strdup_printf("%s/%s", account, c->sprite);
    GError *err = NULL;
    const char *now = "cold";

    if (strcmp(c->state, "going-cold") == 0) {
        int there = c->pending[0] ? sprite_cold_manifest_exists(&svc->cold, c->pending, &err) : 0;
        if (there == 1) {
            log_info(SVC_LOG, "%s: the cold sleep to %s completed before wispd stopped", key,
                     c->pending);
        } else {
            /* Its QEMU is gone (killed with strays); the disk has every flush. */
            log_warn(SVC_LOG, "%s: a cold sleep did not complete (%s): stopped, disk kept", key,
                     err ? err->message : "no manifest");
            now = "awake";
        }
    } else if (strcmp(c->state, "waking") == 0 || strcmp(c->state, "cold") == 0) {
        int there = sprite_cold_manifest_exists(&svc->cold, c->manifest, &err);
        if (there == 0) {
            log_error(SVC_LOG, "%s: its manifest %s is not in the store: stopped, disk kept", key,
                      c->manifest);
            now = "awake";
        } else if (there < 0) {
            /* The store did not answer: the row stays cold, and a wake tries again. */
            log_warn(SVC_LOG, "%s: %s", key, err->message);
        }
        if (strcmp(c->state, "waking") == 0)
            log_info(SVC_LOG, "%s: a wake did not complete: asleep again", key);
    }
    g_clear_error(&err);
    if (strcmp(now, c->state) != 0) {
        svc_cold_record(db, key, now);
        account_db_audit(db, "recover", c->sprite, true, now);
    }
    if (strcmp(now, "cold") != 0)
        return;
    struct live_sprite *l = svc_get_live(svc, db, account, c->sprite, &err);
    if (!l) {
        log_warn(SVC_LOG, "%s: %s", key, err->message);
        g_clear_error(&err);
        return;
    }
    svc_set_state(svc, l, LIVE_COLD);
    svc_put_live(svc, l);
}

void svc_cold_recover_all(sprite_service *svc)
{
    g_autoptr(GDir) dir = g_dir_open(svc->accounts_dir, 0, NULL);
    const char *account;

    while (dir && (account = g_dir_read_name(dir))) {
        GError *err = NULL;
        if (!sprite_service_account_valid(account))
            continue;
        /* svc_enter opens (and keeps) the account's database. */
        account_db *db = svc_enter(svc, account, &err);
        if (!db) {
            log_warn(SVC_LOG, "account %s: %s", account, err->message);
            g_clear_error(&err);
            continue;
        }
        GPtrArray *rows = account_db_cold_list(db, &err);
        for (guint i = 0; rows && i < rows->len; i++)
            svc_cold_recover_row(svc, db, account, rows->pdata[i]);
        if (!rows) {
            log_warn(SVC_LOG, "account %s: %s", account, err->message);
            g_clear_error(&err);
        } else {
            g_ptr_array_unref(rows);
        }
        svc_leave(svc);
    }
}

/* Holds a reference on every live sprite that has a VM (svc->mu held). */
static GPtrArray *svc_live_with_vm(sprite_service *svc)
{
    GPtrArray *a = g_ptr_array_new();
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, svc->live);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        struct live_sprite *l = value;
        if (l->state == LIVE_RUNNING || l->state == LIVE_ASLEEP) {
            l->refs++;
            g_ptr_array_add(a, l);
        }
    }
    return a;
}

void sprite_service_refuse_calls(sprite_service *svc)
{
    if (!svc)
        return;
    g_mutex_lock(&svc->mu);
    svc->stopping = true;
    g_mutex_unlock(&svc->mu);
}

void sprite_service_sleep_all_cold(sprite_service *svc)
{
    if (!svc)
        return;
    g_mutex_lock(&svc->mu);
    svc_stop_calls_locked(svc);
    GPtrArray *todo = svc_live_with_vm(svc);
    g_mutex_unlock(&svc->mu);
    for (guint i = 0; i < todo->len; i++) {
        struct live_sprite *l = todo->pdata[i];
        account_db *db = svc_account_db(svc, l->account);
        GError *err = NULL;
        /* A call still running keeps its VM (sprite_service_free leaves it to the pool). */
        if (g_mutex_trylock(&l->op)) {
            if (db && l->vm && !svc_cold_sleep_locked(svc, db, l, "shutdown", &err)) {
                log_error(SVC_LOG, "%s: %s; its VM is destroyed, the disk kept", l->key,
                          err->message);
                g_clear_error(&err);
            }
            g_mutex_unlock(&l->op);
        }
        svc_put_live(svc, l);
    }
    g_ptr_array_free(todo, TRUE);
}
