/* sprite_service.c: the sprite verbs behind wispd's API (sprite_service.h).
 *
 * Locking: svc->mu guards the tables (accounts, live sprites), the busy count and each live
 * sprite's state and refs; it is held only for lookups, never across a claim, a QMP call, a
 * control-socket call or an exec.  A live sprite's op lock serialises the verbs on it (the VM
 * layer wants one thread at a time per sprite) and is held across them.  Create and delete
 * write the sprite's row with it held (create takes it before the row exists), and a verb reads
 * the row again once it holds it: a verb acts only on a whole sprite (svc_lock_live_row). */
#include "sprite_service.h"
#include "sprite_service_internal.h"

#include "account_db.h"
#include "account_store.h"
#include "log.h"
#include "sprite.h"
#include "sprite_cold.h"
#include "storage_server.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/wait.h>

G_DEFINE_QUARK(sprite - service - error - quark, sprite_service_error)

static const char *live_state_to_string(enum live_state s)
{
    switch (s) {
    case LIVE_STOPPED:
        return "stopped";
    case LIVE_RUNNING:
        return "running";
    case LIVE_ASLEEP:
    case LIVE_COLD:
        return "asleep";
    }
    return "?";
}

bool svc_fail(GError **error, enum sprite_service_error_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, SPRITE_SERVICE_ERROR, code, msg);
    return false;
}

/* Wraps a lower layer's error as FAILED with a prefix. */
void svc_wrap(GError **error, GError *cause, const char *what)
{
    g_set_error(error, SPRITE_SERVICE_ERROR, SPRITE_SERVICE_ERROR_FAILED, "%s: %s", what,
                cause ? cause->message : "failed");
    g_clear_error(&cause);
}

static bool svc_label_valid(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max || !(g_ascii_islower(s[0]) || g_ascii_isdigit(s[0])))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(g_ascii_islower(s[i]) || g_ascii_isdigit(s[i]) || s[i] == '-'))
            return false;
    return true;
}

bool sprite_service_name_valid(const char *name)
{
    return svc_label_valid(name, 63);
}
bool sprite_service_account_valid(const char *account)
{
    return svc_label_valid(account, 32);
}

sprite_service *sprite_service_new(const struct sprite_service_config *cfg, GError **error)
{
    sprite_service *svc = g_new0(sprite_service, 1);

    svc->accounts_dir = g_build_filename(cfg->state_dir, "accounts", NULL);
    if (g_mkdir_with_parents(svc->accounts_dir, 0700) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "mkdir %s: %s",
                    svc->accounts_dir, g_strerror(errno));
        g_free(svc->accounts_dir);
        g_free(svc);
        return NULL;
    }
    svc->nbd_socket = g_strdup(cfg->nbd_socket);
    svc->control_socket = g_strdup(cfg->control_socket);
    svc->base_disk = g_strdup(cfg->base_disk ? cfg->base_disk : "base");
    svc->pool = cfg->pool;
    svc->store = cfg->store;
    svc->replicate_interval_s = cfg->replicate_interval_s > 0 ? cfg->replicate_interval_s : 1.0;
    g_mutex_init(&svc->mu);
    g_cond_init(&svc->idle);
    svc->accounts =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)account_db_close);
    svc->live = g_hash_table_new(g_str_hash, g_str_equal);
    if (cfg->tpl && cfg->store_url) {
        if (store_open(cfg->store_url, NULL, &svc->cold_store) != 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "open %s: %s", cfg->store_url,
                        store_last_error());
            svc->cold_store = NULL;
            sprite_service_free(svc);
            return NULL;
        }
        svc->sleep_root = g_build_filename(cfg->state_dir, "sleep", NULL);
        svc->template_manifest_key = g_strdup(cfg->template_manifest_key);
        svc->run_root = g_strdup(cfg->run_dir ? cfg->run_dir : cfg->state_dir);
        svc->cold =
            (struct sprite_cold_config){.store = svc->cold_store,
                                        .tpl = cfg->tpl,
                                        .nbd_socket = svc->nbd_socket,
                                        .sleep_root = svc->sleep_root,
                                        .run_root = svc->run_root,
                                        .store_wait_s = cfg->cold_store_wait_s,
                                        .template_manifest_key = svc->template_manifest_key};
        svc_cold_recover_all(svc);
    }
    return svc;
}

static void live_sprite_free(struct live_sprite *l)
{
    g_mutex_clear(&l->op);
    g_free(l->key);
    g_free(l->name);
    g_free(l->disk);
    g_free(l->account);
    g_free(l);
}

void svc_stop_calls_locked(sprite_service *svc)
{
    svc->stopping = true;
    gint64 until = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    while (svc->busy > 0 && g_cond_wait_until(&svc->idle, &svc->mu, until))
        ;
}

void sprite_service_free(sprite_service *svc)
{
    if (!svc)
        return;
    g_mutex_lock(&svc->mu);
    svc_stop_calls_locked(svc);
    if (svc->busy > 0)
        log_error(SVC_LOG, "%u calls still running after 60 s; destroying their VMs anyway",
                  svc->busy);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, svc->live);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        struct live_sprite *l = value;
        GError *err = NULL;
        /* A call still running holds the op lock and uses the VM: leave that one to the pool's
         * end (its QEMU dies with the refill thread, PR_SET_PDEATHSIG). */
        if (!g_mutex_trylock(&l->op)) {
            log_warn(SVC_LOG, "%s: still busy; its VM goes with the pool", l->key);
            continue;
        }
        g_mutex_unlock(&l->op);
        if (l->vm && !sprite_destroy(l->vm, false, NULL, NULL, &err)) {
            log_warn(SVC_LOG, "%s: %s", l->key, err->message);
            g_clear_error(&err);
        }
        if (l->vm)
            log_info(SVC_LOG, "%s: VM destroyed, disk %s kept", l->key, l->disk);
        l->vm = NULL;
        if (svc->busy == 0)
            live_sprite_free(l);
    }
    g_hash_table_destroy(svc->live);
    g_hash_table_destroy(svc->accounts);
    g_mutex_unlock(&svc->mu);
    if (svc->busy == 0) {
        g_mutex_clear(&svc->mu);
        g_cond_clear(&svc->idle);
    }
    g_free(svc->accounts_dir);
    g_free(svc->nbd_socket);
    g_free(svc->control_socket);
    g_free(svc->base_disk);
    store_close(svc->cold_store);
    g_free(svc->sleep_root);
    g_free(svc->template_manifest_key);
    g_free(svc->run_root);
    if (svc->busy == 0)
        g_free(svc); /* else leaked on purpose: a stuck call still holds it */
}

/* The account's database goes to the store under its own prefix (account_store.h). */
static bool svc_replicate(sprite_service *svc, account_db *db, const char *account, GError **error)
{
    g_autofree char *prefix = account_store_prefix(account);
    g_autofree char *label = g_strdup_printf("account-%s", account);
    return account_db_replicate(db, svc->store, prefix, label, svc->replicate_interval_s, error);
}

/* Enters a call: refused while stopping.  Returns the account's database (opened on first use). */
account_db *svc_enter(sprite_service *svc, const char *account, GError **error)
{
    account_db *db = NULL;

    if (!sprite_service_account_valid(account)) {
        svc_fail(error, SPRITE_SERVICE_ERROR_INVALID, "invalid account name");
        return NULL;
    }
    g_mutex_lock(&svc->mu);
    if (svc->stopping) {
        g_mutex_unlock(&svc->mu);
        svc_fail(error, SPRITE_SERVICE_ERROR_SHUTDOWN, "wispd is shutting down");
        return NULL;
    }
    db = g_hash_table_lookup(svc->accounts, account);
    if (!db) {
        g_autofree char *dir = g_build_filename(svc->accounts_dir, account, NULL);
        g_autofree char *path = g_build_filename(dir, "account.db", NULL);
        GError *err = NULL;
        if (g_mkdir_with_parents(dir, 0700) < 0)
            g_set_error(&err, G_IO_ERROR, g_io_error_from_errno(errno), "mkdir %s: %s", dir,
                        g_strerror(errno));
        else
            db = account_db_open(path, &err);
        if (db && svc->store && !svc_replicate(svc, db, account, &err)) {
            account_db_close(db);
            db = NULL;
        }
        if (!db) {
            g_mutex_unlock(&svc->mu);
            svc_wrap(error, err, "account database");
            return NULL;
        }
        g_hash_table_insert(svc->accounts, g_strdup(account), db);
    }
    svc->busy++;
    g_mutex_unlock(&svc->mu);
    return db;
}

void svc_leave(sprite_service *svc)
{
    g_mutex_lock(&svc->mu);
    svc->busy--;
    g_cond_broadcast(&svc->idle);
    g_mutex_unlock(&svc->mu);
}

static char *svc_disk_name(const char *account, const char *name)
{
    return g_strdup_printf("s_%s_%s", account, name);
}

/* Whether the account DB says the sprite is cold asleep (an account opened, or restored, after
 * start-up recovery has no live record for it yet). */
static bool svc_cold_row_is_cold(account_db *db, const char *name)
{
    struct account_cold row;
    GError *err = NULL;
    int found = account_db_cold_get(db, name, &row, &err);
    if (found < 0) {
        log_warn(SVC_LOG, "%s: %s", name, err->message);
        g_clear_error(&err);
    }
    return found > 0 && strcmp(row.state, "cold") == 0;
}

/* The live record of a sprite that exists in db, referenced; NULL with NOT_FOUND. */
struct live_sprite *svc_get_live(sprite_service *svc, account_db *db, const char *account,
                                 const char *name, GError **error)
{
    struct account_sprite rec;
    GError *err = NULL;

    if (!sprite_service_name_valid(name)) {
        svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "no sprite named '%s'", name);
        return NULL;
    }
    int found = account_db_sprite_get(db, name, &rec, &err);
    if (found < 0) {
        svc_wrap(error, err, "account database");
        return NULL;
    }
    if (found == 0) {
        svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "no sprite named '%s'", name);
        return NULL;
    }
    g_autofree char *key = g_strdup_printf("%s/%s", account, name);
    bool cold = svc_cold_row_is_cold(db, name); /* read before svc->mu: no SQLite under it */
    g_mutex_lock(&svc->mu);
    struct live_sprite *l = g_hash_table_lookup(svc->live, key);
    if (!l) {
        l = g_new0(struct live_sprite, 1);
        g_mutex_init(&l->op);
        l->key = g_steal_pointer(&key);
        l->name = g_strdup(name);
        l->disk = g_strdup(rec.disk);
        l->account = g_strdup(account);
        l->last_active_us = g_get_monotonic_time();
        l->state = cold ? LIVE_COLD : LIVE_STOPPED;
        g_hash_table_insert(svc->live, l->key, l);
    }
    l->refs++;
    g_mutex_unlock(&svc->mu);
    return l;
}

/* Locks a live sprite for a verb; NOT_FOUND if it was deleted meanwhile (then unreferenced). */
static bool svc_lock_live(sprite_service *svc, struct live_sprite *l, GError **error);

static bool svc_lock_live(sprite_service *svc, struct live_sprite *l, GError **error)
{
    g_mutex_lock(&l->op);
    g_mutex_lock(&svc->mu);
    bool gone = l->gone;
    g_mutex_unlock(&svc->mu);
    if (!gone)
        return true;
    g_mutex_unlock(&l->op);
    svc_put_live(svc, l);
    return svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "no sprite named '%s'", l->name);
}

void svc_set_state(sprite_service *svc, struct live_sprite *l, enum live_state s)
{
    g_mutex_lock(&svc->mu);
    l->state = s;
    g_mutex_unlock(&svc->mu);
}

/* Unlocks (the caller held op) and unreferences; frees a deleted record no one holds. */
static void svc_unlock_put(sprite_service *svc, struct live_sprite *l)
{
    g_mutex_unlock(&l->op);
    svc_put_live(svc, l);
}

void svc_put_live(sprite_service *svc, struct live_sprite *l)
{
    g_mutex_lock(&svc->mu);
    bool free_it = --l->refs == 0 && l->gone;
    g_mutex_unlock(&svc->mu);
    if (free_it)
        live_sprite_free(l);
}

/* Records activity on the sprite, for the idle policy. */
static void svc_touch(sprite_service *svc, struct live_sprite *l)
{
    g_mutex_lock(&svc->mu);
    l->last_active_us = g_get_monotonic_time();
    g_mutex_unlock(&svc->mu);
}

/* Drops a live record from the table: later lookups make a new one, and those who hold it see
 * it gone (svc_lock_live).  Only the record in the table under its key goes. */
static void svc_forget_live(sprite_service *svc, struct live_sprite *l)
{
    g_mutex_lock(&svc->mu);
    l->gone = true;
    if (g_hash_table_lookup(svc->live, l->key) == l)
        g_hash_table_remove(svc->live, l->key);
    g_mutex_unlock(&svc->mu);
}

/* svc_lock_live, then the row read again under the op lock: svc_get_live read it before, and
 * a delete that finished in between (it holds op) leaves a record it never saw.  Such a record
 * is dropped, so that the deleted sprite is NOT_FOUND and nothing of it stays in svc->live.
 * Invariant kept here: a verb runs only on a sprite whose row exists while it holds op (create
 * and delete write the row under op). */
static bool svc_lock_live_row(sprite_service *svc, account_db *db, struct live_sprite *l,
                              GError **error)
{
    GError *err = NULL;

    if (!svc_lock_live(svc, l, error))
        return false;
    int found = account_db_sprite_get(db, l->name, NULL, &err);
    if (found > 0)
        return true;
    if (found < 0) {
        svc_wrap(error, err, "account database");
    } else {
        if (!l->vm) /* a record with a VM is never stale: delete drops it with the VM */
            svc_forget_live(svc, l);
        svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "no sprite named '%s'", l->name);
    }
    svc_unlock_put(svc, l);
    return false;
}

/* A verb on one sprite, called inside svc_enter with the sprite's op lock held. */

/* Enters, finds and locks the sprite, runs the verb, and undoes all that in reverse. */
JsonNode *svc_on_sprite(sprite_service *svc, const char *account, const char *name,
                        svc_verb_fn verb, const void *arg, GError **error)
{
    account_db *db = svc_enter(svc, account, error);
    JsonNode *result = NULL;

    if (!db)
        return NULL;
    struct live_sprite *l = svc_get_live(svc, db, account, name, error);
    if (l && svc_lock_live_row(svc, db, l, error)) {
        svc_touch(svc, l);
        result = verb(svc, db, l, arg, error);
        svc_touch(svc, l); /* a long exec was activity until its end */
        svc_unlock_put(svc, l);
    }
    svc_leave(svc);
    return result;
}

/* After a failed claim: if the disk's writer lease is held by another storage server whose
 * lease expired (a host lost with kill -9 or a crash, whose disks this host restored from the
 * store), takes it over and returns true (claim again).  A live holder is never taken over
 * (the storage server refuses); then *err gets its words instead, which say who holds the
 * disk and for how long.  docs/storage.md, "Writer leases". */
static bool svc_take_expired_lease(sprite_service *svc, struct live_sprite *l, GError **err)
{
    GError *lease_err = NULL;
    JsonObject *req = json_object_new();

    json_object_set_string_member(req, "name", l->disk);
    json_object_set_boolean_member(req, "steal", TRUE);
    JsonObject *answer = storage_control_call(svc->control_socket, "disk-lease", req, &lease_err);
    json_object_unref(req);
    if (!answer) {
        if (g_error_matches(lease_err, G_IO_ERROR, G_IO_ERROR_BUSY)) {
            g_clear_error(err);
            g_propagate_error(err, lease_err);
        } else {
            g_clear_error(&lease_err); /* not a lease problem: the claim's own error stays */
        }
        return false;
    }
    JsonObject *lease = json_object_get_object_member(answer, "lease");
    bool ours = lease && json_object_get_boolean_member_with_default(lease, "ours", FALSE);
    json_object_unref(answer);
    if (ours) {
        log_info(SVC_LOG, "%s: took over the expired writer lease of disk %s; claiming again",
                 l->key, l->disk);
        g_clear_error(err);
    }
    return ours;
}

/* Claims a pool member for the sprite's disk (op held). */
static bool svc_claim(sprite_service *svc, struct live_sprite *l, double *ms, GError **error)
{
    struct sprite_claim_request req = {
        .nbd_socket = svc->nbd_socket,
        .export_name = l->disk,
        .hostname = l->name,
        .take_timeout_ms = 60000,
    };
    struct sprite_claim_times t = {0};
    GError *err = NULL;

    /* One VM per disk: a second would mount the same ext4 read-write beside the first. */
    if (l->vm) {
        log_error(SVC_LOG, "%s: claim while it has a VM (a bug); refused", l->key);
        return svc_fail(error, SPRITE_SERVICE_ERROR_FAILED, "claim: '%s' already has a VM",
                        l->name);
    }
    l->vm = sprite_claim(svc->pool, &req, &t, &err);
    if (!l->vm && svc_take_expired_lease(svc, l, &err))
        l->vm = sprite_claim(svc->pool, &req, &t, &err);
    if (!l->vm && g_error_matches(err, G_IO_ERROR, G_IO_ERROR_BUSY)) {
        /* Another host's live lease: not this request's fault, and it passes. */
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "claim: %s; try again then", err->message);
        g_clear_error(&err);
        return false;
    }
    if (!l->vm) {
        svc_wrap(error, err, "claim");
        return false;
    }
    if (ms)
        *ms = t.total_ms;
    l->woken = false; /* a pool member's RAM is private: its cold sleep is sleep_cold_private */
    log_info(SVC_LOG, "%s: claimed in %.1f ms (attach %.1f)", l->key, t.total_ms, t.attach_ms);
    svc_set_state(svc, l, LIVE_RUNNING);
    return true;
}

/* A control call that retries while the disk is busy: a VM just killed may still hold its
 * NBD connection for a moment, until nbdkit notices the close. */
static JsonObject *svc_control(sprite_service *svc, const char *op, JsonObject *req, GError **error)
{
    for (int attempt = 0;; attempt++) {
        GError *err = NULL;
        JsonObject *answer = storage_control_call(svc->control_socket, op, req, &err);
        if (answer || attempt >= 50 || !g_error_matches(err, G_IO_ERROR, G_IO_ERROR_BUSY)) {
            if (!answer)
                g_propagate_error(error, err);
            return answer;
        }
        g_clear_error(&err);
        g_usleep(100 * 1000);
    }
}

static bool svc_disk_op(sprite_service *svc, const char *op, const char *disk, const char *member,
                        const char *value, GError **error)
{
    JsonObject *req = json_object_new();
    json_object_set_string_member(req, "name", disk);
    if (member)
        json_object_set_string_member(req, member, value);
    JsonObject *answer = svc_control(svc, op, req, error);
    json_object_unref(req);
    if (answer)
        json_object_unref(answer);
    return answer != NULL;
}

/* A QEMU that exited without being asked (OOM kill, guest poweroff, crash) leaves a VM record
 * that answers nothing: its open streams end, the record goes and the sprite is stopped, which
 * it is (its disk is durable in the storage server); the next verb claims again.  Returns
 * false only when a stream would not end (op held). */
static bool svc_reap_dead_vm(sprite_service *svc, struct live_sprite *l, GError **error)
{
    if (!l->vm || vm_is_running(l->vm->vm))
        return true;
    if (!svc_streams_end(svc, l, "the sprite's VM exited", error))
        return false;
    int status = l->vm->vm->exit_status;
    log_warn(SVC_LOG, "%s: QEMU exited unasked (%s %d): stopped, disk kept", l->key,
             WIFSIGNALED(status) ? "signal" : "status",
             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    sprite_destroy(l->vm, false, NULL, NULL, NULL); /* QEMU is reaped: frees the rest */
    l->vm = NULL;
    l->woken = false;
    svc_set_state(svc, l, LIVE_STOPPED);
    return true;
}

/* Makes the VM run: claims one when stopped (or when its QEMU died), wakes it when asleep (op
 * held). */
bool svc_ensure_running(sprite_service *svc, struct live_sprite *l, GError **error)
{
    GError *err = NULL;

    if (!svc_reap_dead_vm(svc, l, error))
        return false;
    if (!l->vm && l->state == LIVE_COLD)
        return svc_cold_wake_locked(svc, l, error);
    if (!l->vm)
        return svc_claim(svc, l, NULL, error);
    if (l->vm->state == SPRITE_VM_WARM_ASLEEP) {
        if (!sprite_wake_warm(l->vm, NULL, &err)) {
            svc_wrap(error, err, "wake");
            return false;
        }
        svc_set_state(svc, l, LIVE_RUNNING);
    }
    return true;
}

static JsonNode *svc_sprite_json(const char *name, const char *disk, int64_t created,
                                 enum live_state state)
{
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", name);
    json_object_set_string_member(o, "state", live_state_to_string(state));
    if (state == LIVE_ASLEEP || state == LIVE_COLD)
        json_object_set_string_member(o, "mode", state == LIVE_COLD ? "cold" : "warm");
    json_object_set_string_member(o, "disk", disk);
    json_object_set_int_member(o, "created", created);
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    return n;
}

/* The state of a sprite not held: stopped unless a live record says otherwise. */
static enum live_state svc_peek_state(sprite_service *svc, const char *account, const char *name)
{
    g_autofree char *key = g_strdup_printf("%s/%s", account, name);
    g_mutex_lock(&svc->mu);
    struct live_sprite *l = g_hash_table_lookup(svc->live, key);
    enum live_state s = l ? l->state : LIVE_STOPPED;
    account_db *db = l ? NULL : g_hash_table_lookup(svc->accounts, account);
    g_mutex_unlock(&svc->mu);
    if (db && svc_cold_row_is_cold(db, name))
        s = LIVE_COLD;
    return s;
}

/* The live record of a sprite about to be created, made if missing, referenced and locked
 * (op held).  Create takes it before it writes the row, so that every other verb, which finds
 * the sprite through its row, waits for the create to end (svc_lock_live) instead of claiming a
 * VM for a disk still being cloned, or deleting it halfway. */
static struct live_sprite *svc_lock_new_live(sprite_service *svc, const char *account,
                                             const char *name, const char *disk, GError **error)
{
    g_autofree char *key = g_strdup_printf("%s/%s", account, name);

    for (;;) {
        g_mutex_lock(&svc->mu);
        struct live_sprite *l = g_hash_table_lookup(svc->live, key);
        if (!l) {
            l = g_new0(struct live_sprite, 1);
            g_mutex_init(&l->op);
            l->key = g_strdup(key);
            l->name = g_strdup(name);
            l->disk = g_strdup(disk);
            l->account = g_strdup(account);
            l->last_active_us = g_get_monotonic_time();
            l->state = LIVE_STOPPED;
            g_hash_table_insert(svc->live, l->key, l);
        }
        l->refs++;
        g_mutex_unlock(&svc->mu);
        GError *err = NULL;
        if (svc_lock_live(svc, l, &err))
            return l;
        /* Dropped while we waited (a create that failed, a delete): take a fresh one. */
        if (!g_error_matches(err, SPRITE_SERVICE_ERROR, SPRITE_SERVICE_ERROR_NOT_FOUND)) {
            g_propagate_error(error, err);
            return NULL;
        }
        g_clear_error(&err);
    }
}

JsonNode *sprite_service_create(sprite_service *svc, const char *account, const char *name,
                                GError **error)
{
    account_db *db = svc_enter(svc, account, error);
    JsonNode *result = NULL;
    GError *err = NULL;
    g_autofree char *disk = NULL;
    struct live_sprite *l = NULL;
    double t0 = (double)g_get_monotonic_time() / 1000, claim_ms = 0;

    if (!db)
        return NULL;
    if (!sprite_service_name_valid(name)) {
        svc_fail(error, SPRITE_SERVICE_ERROR_INVALID,
                 "invalid sprite name: 1-63 of a-z, 0-9 and '-', starting with a letter or digit");
        goto out;
    }
    disk = svc_disk_name(account, name);
    /* A sprite that exists fails here, at once, without waiting for its lock. */
    int found = account_db_sprite_get(db, name, NULL, &err);
    if (found != 0) {
        if (found > 0)
            svc_fail(error, SPRITE_SERVICE_ERROR_EXISTS, "a sprite named '%s' exists", name);
        else
            svc_wrap(error, g_steal_pointer(&err), "account database");
        goto out;
    }
    /* From here to the end the sprite's op lock is held: the row, the clone and the claim are
     * one step for every other verb (svc_lock_new_live). */
    l = svc_lock_new_live(svc, account, name, disk, error);
    if (!l)
        goto out;
    /* The row reserves the name: a create that waited for ours fails here. */
    if (!account_db_sprite_add(db, name, disk, &err)) {
        if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_EXISTS))
            svc_fail(error, SPRITE_SERVICE_ERROR_EXISTS, "a sprite named '%s' exists", name);
        else
            svc_wrap(error, g_steal_pointer(&err), "account database");
        g_clear_error(&err);
        /* The record stays only if it is that sprite's (it has a VM or a row). */
        if (!l->vm && account_db_sprite_get(db, name, NULL, NULL) == 0)
            svc_forget_live(svc, l);
        goto unlock;
    }
    JsonObject *req = json_object_new();
    json_object_set_string_member(req, "source", svc->base_disk);
    json_object_set_string_member(req, "name", disk);
    JsonObject *answer = svc_control(svc, "disk-clone", req, &err);
    if (!answer && g_error_matches(err, G_IO_ERROR, G_IO_ERROR_EXISTS)) {
        /* Left by a create or delete that wispd did not finish: no record names it. */
        log_warn(SVC_LOG, "%s/%s: disk %s existed without a record; replacing it", account, name,
                 disk);
        g_clear_error(&err);
        if (svc_disk_op(svc, "disk-delete", disk, NULL, NULL, &err))
            answer = svc_control(svc, "disk-clone", req, &err);
    }
    json_object_unref(req);
    bool claimed = false;
    if (!answer) {
        svc_wrap(error, err, "disk clone");
    } else {
        json_object_unref(answer);
        svc_cold_forget(svc, db, l); /* left by an earlier sprite of this name, if any */
        claimed = svc_claim(svc, l, &claim_ms, error);
        if (!claimed) {
            /* No half-made sprite: the disk and the record go. */
            GError *e2 = NULL;
            if (!svc_disk_op(svc, "disk-delete", disk, NULL, NULL, &e2)) {
                log_warn(SVC_LOG, "%s: %s", l->key, e2->message);
                g_clear_error(&e2);
            }
        }
    }
    if (!claimed) {
        GError *e2 = NULL;
        if (!account_db_sprite_delete(db, name, &e2))
            g_clear_error(&e2);
        svc_forget_live(svc, l);
        account_db_audit(db, "create", name, false, (*error)->message);
    } else {
        result = svc_sprite_json(name, disk, g_get_real_time() / G_USEC_PER_SEC, LIVE_RUNNING);
        JsonObject *o = json_node_get_object(result);
        json_object_set_double_member(o, "claim_ms", claim_ms);
        json_object_set_double_member(o, "create_ms", (double)g_get_monotonic_time() / 1000 - t0);
        account_db_audit(db, "create", name, true, NULL);
    }
unlock:
    svc_unlock_put(svc, l);
out:
    svc_leave(svc);
    return result;
}

JsonNode *sprite_service_list(sprite_service *svc, const char *account, GError **error)
{
    account_db *db = svc_enter(svc, account, error);
    GError *err = NULL;

    if (!db)
        return NULL;
    GPtrArray *rows = account_db_sprite_list(db, &err);
    JsonNode *result = NULL;
    if (!rows) {
        svc_wrap(error, err, "account database");
    } else {
        JsonArray *a = json_array_new();
        for (guint i = 0; i < rows->len; i++) {
            const struct account_sprite *s = rows->pdata[i];
            json_array_add_element(a, svc_sprite_json(s->name, s->disk, s->created,
                                                      svc_peek_state(svc, account, s->name)));
        }
        JsonObject *o = json_object_new();
        json_object_set_array_member(o, "sprites", a);
        result = json_node_new(JSON_NODE_OBJECT);
        json_node_take_object(result, o);
        g_ptr_array_unref(rows);
    }
    svc_leave(svc);
    return result;
}

JsonNode *sprite_service_get(sprite_service *svc, const char *account, const char *name,
                             GError **error)
{
    account_db *db = svc_enter(svc, account, error);
    struct account_sprite rec;
    GError *err = NULL;
    JsonNode *result = NULL;

    if (!db)
        return NULL;
    int found = sprite_service_name_valid(name) ? account_db_sprite_get(db, name, &rec, &err) : 0;
    if (found < 0)
        svc_wrap(error, err, "account database");
    else if (found == 0)
        svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "no sprite named '%s'", name);
    else
        result =
            svc_sprite_json(rec.name, rec.disk, rec.created, svc_peek_state(svc, account, name));
    svc_leave(svc);
    return result;
}

static bool svc_delete_disk_cb(const char *export_name, void *opaque, GError **error)
{
    return svc_disk_op(opaque, "disk-delete", export_name, NULL, NULL, error);
}

JsonNode *svc_ok_node(const char *name, const char *state)
{
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", name);
    if (state)
        json_object_set_string_member(o, "state", state);
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    return n;
}

agent_exec *svc_exec_start(struct live_sprite *l, const struct agent_exec_opts *opts,
                           int timeout_ms, GError **error)
{
    GError *err = NULL;
    agent_exec *e = agent_exec_start(l->vm->agent, opts, timeout_ms, &err);

    if (!e) {
        /* wisp-init's own refusal is the caller's fault (no such program is exit 127, not
         * this); anything else is ours. */
        g_set_error(error, SPRITE_SERVICE_ERROR,
                    g_error_matches(err, AGENT_ERROR, AGENT_ERROR_REMOTE)
                        ? SPRITE_SERVICE_ERROR_INVALID
                        : SPRITE_SERVICE_ERROR_FAILED,
                    "exec: %s", err->message);
        g_clear_error(&err);
    }
    return e;
}

static JsonNode *svc_delete_locked(sprite_service *svc, account_db *db, struct live_sprite *l,
                                   const void *unused, GError **error)
{
    const char *name = l->name;
    JsonNode *result = NULL;
    GError *err = NULL;
    bool ok;

    (void)unused;
    if (!svc_streams_end(svc, l, "the sprite was deleted", error))
        return NULL;
    if (l->vm)
        ok = sprite_destroy(l->vm, true, svc_delete_disk_cb, svc, &err);
    else
        ok = svc_delete_disk_cb(l->disk, svc, &err);
    l->vm = NULL;
    svc_set_state(svc, l, LIVE_STOPPED);
    if (!ok && !g_error_matches(err, G_IO_ERROR, G_IO_ERROR_NOT_FOUND)) {
        /* The VM is gone; the record stays, so that a second DELETE tries the disk again. */
        svc_wrap(error, err, "disk delete");
        account_db_audit(db, "delete", name, false, (*error)->message);
    } else {
        g_clear_error(&err);
        if (!account_db_sprite_delete(db, name, &err)) {
            svc_wrap(error, err, "account database");
        } else {
            svc_cold_forget(svc, db, l);
            g_mutex_lock(&svc->mu);
            l->gone = true;
            g_hash_table_remove(svc->live, l->key);
            g_mutex_unlock(&svc->mu);
            account_db_audit(db, "delete", name, true, NULL);
            result = svc_ok_node(name, "deleted");
        }
    }
    return result;
}

JsonNode *sprite_service_delete(sprite_service *svc, const char *account, const char *name,
                                GError **error)
{
    return svc_on_sprite(svc, account, name, svc_delete_locked, NULL, error);
}

/* Appends to a stream's buffer up to the cap. */
static void svc_exec_keep(GByteArray *buf, const uint8_t *data, size_t n, bool *truncated)
{
    size_t room = SPRITE_EXEC_OUTPUT_MAX - MIN(buf->len, SPRITE_EXEC_OUTPUT_MAX);
    if (n > room)
        *truncated = true;
    g_byte_array_append(buf, data, (guint)MIN(n, room));
}

struct svc_feeder {
    agent_exec *e;
    const char *data;
    size_t len;
    int timeout_ms;
};

static gpointer svc_feed_stdin(gpointer opaque)
{
    struct svc_feeder *f = opaque;
    GError *err = NULL;

    /* A process may exit without reading its input: not an error of the exec. */
    if (!agent_exec_write(f->e, f->data, f->len, f->timeout_ms, &err) ||
        !agent_exec_close_stdin(f->e, &err)) {
        log_debug(SVC_LOG, "stdin: %s", err->message);
        g_clear_error(&err);
    }
    return NULL;
}

/* Output as a JSON string: invalid UTF-8 is replaced (binary output waits for streaming). */
static void svc_set_output(JsonObject *o, const char *member, GByteArray *buf)
{
    g_autofree char *text =
        buf->len ? g_utf8_make_valid((const char *)buf->data, buf->len) : g_strdup("");
    json_object_set_string_member(o, member, text);
}

static JsonNode *svc_exec_locked(struct live_sprite *l, const struct sprite_exec_request *r,
                                 GError **error)
{
    struct agent_exec_opts opts = {
        .argv = r->argv, .env = r->env, .cwd = r->cwd, .with_stdin = r->stdin_data != NULL};
    int timeout = r->timeout_ms > 0 ? r->timeout_ms : 60000;
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout * 1000;
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autoptr(GByteArray) err_buf = g_byte_array_new();
    bool truncated = false;
    struct svc_feeder feeder = {0};
    GThread *feeder_thread = NULL;
    JsonNode *result = NULL;
    GError *err = NULL;
    int kind = 0, code = 0;
    g_autofree uint8_t *buf = g_malloc(65536);
    double t0 = (double)g_get_monotonic_time() / 1000;

    agent_exec *e = svc_exec_start(l, &opts, timeout, error);
    if (!e)
        return NULL;
    if (r->stdin_data) {
        feeder = (struct svc_feeder){e, r->stdin_data, r->stdin_len, timeout};
        feeder_thread = g_thread_new("wispd-stdin", svc_feed_stdin, &feeder);
    }
    for (;;) {
        enum agent_stream_kind k;
        int left = (int)MAX((deadline - g_get_monotonic_time()) / 1000, 1);
        ssize_t n = agent_exec_read(e, buf, 65536, &k, left, &err);
        if (n < 0)
            break;
        if (n == 0)
            break;
        svc_exec_keep(k == AGENT_STDERR ? err_buf : out, buf, (size_t)n, &truncated);
    }
    if (!err)
        agent_exec_wait(e, 5000, &kind, &code, &err); /* err says if it failed */
    if (err && g_error_matches(err, AGENT_ERROR, AGENT_ERROR_TIMEOUT))
        agent_exec_signal(e, 9, NULL); /* the command outlived its timeout: it goes */
    /* The feeder uses the session until it returns, so it is joined before the free.  It may
     * wait for stdin credit: the exit (the kill above, or the end the read saw), a closed
     * agent or its own deadline (the exec's timeout) wakes it. */
    if (feeder_thread)
        g_thread_join(feeder_thread);
    agent_exec_free(e);
    if (err) {
        svc_wrap(error, err, "exec");
        return NULL;
    }
    JsonObject *o = json_object_new();
    json_object_set_int_member(o, "exit_code", agent_exec_status_code(kind, code));
    svc_set_output(o, "stdout", out);
    svc_set_output(o, "stderr", err_buf);
    json_object_set_boolean_member(o, "truncated", truncated);
    json_object_set_double_member(o, "ms", (double)g_get_monotonic_time() / 1000 - t0);
    result = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(result, o);
    return result;
}

static JsonNode *svc_exec_verb(sprite_service *svc, account_db *db, struct live_sprite *l,
                               const void *req, GError **error)
{
    (void)db;
    return svc_ensure_running(svc, l, error) ? svc_exec_locked(l, req, error) : NULL;
}

JsonNode *sprite_service_exec(sprite_service *svc, const char *account, const char *name,
                              const struct sprite_exec_request *req, GError **error)
{
    return svc_on_sprite(svc, account, name, svc_exec_verb, req, error);
}

/* Thaws the guest's filesystem after a checkpoint (op held); NULL, or why it stays frozen.  A
 * guest that cannot be thawed is useless (every write would block), so its VM is stopped: the
 * disk has every write (the freeze flushed them), and the next call claims a fresh VM. */
static char *svc_thaw(sprite_service *svc, struct live_sprite *l)
{
    GError *err = NULL;

    for (int attempt = 0; attempt < 3; attempt++) {
        g_clear_error(&err);
        if (agent_client_thaw(l->vm->agent, 60000, &err))
            return NULL;
        log_warn(SVC_LOG, "%s: thaw (attempt %d): %s", l->key, attempt + 1, err->message);
    }
    char *why = g_strdup_printf("thaw: %s; the sprite was stopped (its disk has every write)",
                                err->message);
    g_clear_error(&err);
    if (!svc_streams_end(svc, l, "the sprite's filesystem could not be thawed", &err)) {
        log_warn(SVC_LOG, "%s: %s", l->key, err->message);
        g_clear_error(&err);
    }
    if (!sprite_destroy(l->vm, false, NULL, NULL, &err)) {
        log_warn(SVC_LOG, "%s: %s", l->key, err->message);
        g_clear_error(&err);
    }
    l->vm = NULL;
    svc_set_state(svc, l, LIVE_STOPPED);
    log_error(SVC_LOG, "%s: %s", l->key, why);
    return why;
}

/* Makes storage checkpoint *id of the sprite's disk.  An id the storage server already has is a
 * checkpoint whose row a failed call never wrote (its thaw or its row failed, or wispd died):
 * it is adopted (given its row, as sprite_reconcile.c does at start-up) and the next id is
 * tried, so that one such checkpoint does not fail every later one. */
static bool svc_checkpoint_make(sprite_service *svc, account_db *db, struct live_sprite *l,
                                char **id, GError **error)
{
    for (int attempt = 0;; attempt++) {
        GError *err = NULL;
        if (svc_disk_op(svc, "disk-checkpoint", l->disk, "checkpoint", *id, &err))
            return true;
        if (attempt >= 16 || !g_error_matches(err, G_IO_ERROR, G_IO_ERROR_EXISTS)) {
            g_propagate_error(error, err);
            return false;
        }
        g_clear_error(&err);
        int recorded = account_db_checkpoint_exists(db, l->name, *id, &err);
        if (recorded == 0 && account_db_checkpoint_add(db, l->name, *id, &err)) {
            log_warn(SVC_LOG, "%s: checkpoint %s existed without a row; kept", l->key, *id);
            account_db_audit(db, "checkpoint", l->name, true, "adopted: it had no row");
        }
        char *next = err ? NULL : account_db_checkpoint_next_id(db, l->name, &err);
        if (!next || strcmp(next, *id) == 0) {
            g_free(next);
            if (!err)
                g_set_error(&err, G_IO_ERROR, G_IO_ERROR_EXISTS, "checkpoint %s exists", *id);
            g_propagate_error(error, err);
            return false;
        }
        g_free(*id);
        *id = next;
    }
}

static JsonNode *svc_checkpoint_locked(sprite_service *svc, account_db *db, struct live_sprite *l,
                                       const void *unused, GError **error)
{
    const char *name = l->name;
    GError *err = NULL;
    double t0 = (double)g_get_monotonic_time() / 1000;

    (void)unused;
    g_autofree char *id = account_db_checkpoint_next_id(db, name, &err);
    if (!id) {
        svc_wrap(error, err, "account database");
        return NULL;
    }
    /* A running guest's filesystem is frozen, so that the checkpoint is consistent; a sleeping
     * one is woken for that.  A stopped sprite has no guest: its disk is as it was left. */
    bool frozen = false;
    if (l->vm) {
        if (!svc_ensure_running(svc, l, error))
            return NULL;
        if (!agent_client_freeze(l->vm->agent, 60000, &err)) {
            svc_wrap(error, err, "freeze");
            return NULL;
        }
        frozen = true;
    }
    bool ok = svc_checkpoint_make(svc, db, l, &id, &err);
    /* Whatever the checkpoint did, the guest is thawed (or stopped) before anything else. */
    g_autofree char *thaw_error = frozen ? svc_thaw(svc, l) : NULL;
    if (!ok) {
        svc_wrap(error, err, "checkpoint");
        account_db_audit(db, "checkpoint", name, false, (*error)->message);
        return NULL;
    }
    /* The storage checkpoint exists: its row is written even when the thaw failed (it was made
     * frozen, so it is consistent).  Should the row fail, the next checkpoint adopts it. */
    if (!account_db_checkpoint_add(db, name, id, &err)) {
        svc_wrap(error, err, "account database");
        return NULL;
    }
    account_db_audit(db, "checkpoint", name, true, id);
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "id", id);
    json_object_set_int_member(o, "created", g_get_real_time() / G_USEC_PER_SEC);
    json_object_set_double_member(o, "ms", (double)g_get_monotonic_time() / 1000 - t0);
    if (thaw_error)
        json_object_set_string_member(o, "thaw_error", thaw_error);
    JsonNode *result = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(result, o);
    return result;
}

JsonNode *sprite_service_checkpoint(sprite_service *svc, const char *account, const char *name,
                                    GError **error)
{
    return svc_on_sprite(svc, account, name, svc_checkpoint_locked, NULL, error);
}

JsonNode *sprite_service_checkpoints(sprite_service *svc, const char *account, const char *name,
                                     GError **error)
{
    account_db *db = svc_enter(svc, account, error);
    JsonNode *result = NULL;
    GError *err = NULL;

    if (!db)
        return NULL;
    int found = sprite_service_name_valid(name) ? account_db_sprite_get(db, name, NULL, &err) : 0;
    if (found <= 0) {
        if (found < 0)
            svc_wrap(error, err, "account database");
        else
            svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "no sprite named '%s'", name);
        goto out;
    }
    GPtrArray *rows = account_db_checkpoint_list(db, name, &err);
    if (!rows) {
        svc_wrap(error, err, "account database");
        goto out;
    }
    JsonArray *a = json_array_new();
    for (guint i = 0; i < rows->len; i++) {
        const struct account_checkpoint *c = rows->pdata[i];
        JsonObject *co = json_object_new();
        json_object_set_string_member(co, "id", c->id);
        json_object_set_int_member(co, "created", c->created);
        json_array_add_object_element(a, co);
    }
    g_ptr_array_unref(rows);
    JsonObject *o = json_object_new();
    json_object_set_array_member(o, "checkpoints", a);
    result = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(result, o);
out:
    svc_leave(svc);
    return result;
}

static JsonNode *svc_restore_locked(sprite_service *svc, account_db *db, struct live_sprite *l,
                                    const void *checkpoint_id, GError **error)
{
    const char *name = l->name, *checkpoint = checkpoint_id;
    JsonNode *result = NULL;
    GError *err = NULL;
    double t0 = (double)g_get_monotonic_time() / 1000;

    int found = account_db_checkpoint_exists(db, name, checkpoint, &err);
    if (found <= 0) {
        if (found < 0)
            svc_wrap(error, err, "account database");
        else
            svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "sprite '%s' has no checkpoint '%s'",
                     name, checkpoint);
        return NULL;
    }
    /* The VM goes first: its guest's view of the disk would be wrong after the restore. */
    if (!svc_streams_end(svc, l, "the sprite was restored to a checkpoint", error))
        return NULL;
    if (l->vm && !sprite_destroy(l->vm, false, NULL, NULL, &err)) {
        log_warn(SVC_LOG, "%s: destroy before restore: %s", l->key, err->message);
        g_clear_error(&err);
    }
    l->vm = NULL;
    svc_set_state(svc, l, LIVE_STOPPED);
    svc_cold_forget(svc, db, l); /* a sleep's memory does not match the restored disk */
    if (!svc_disk_op(svc, "disk-restore", l->disk, "checkpoint", checkpoint, &err)) {
        svc_wrap(error, err, "restore");
        account_db_audit(db, "restore", name, false, (*error)->message);
        return NULL;
    }
    double claim_ms = 0;
    if (!svc_claim(svc, l, &claim_ms, error)) {
        account_db_audit(db, "restore", name, false, (*error)->message);
        return NULL;
    }
    account_db_audit(db, "restore", name, true, checkpoint);
    result = svc_ok_node(name, "running");
    json_object_set_string_member(json_node_get_object(result), "checkpoint", checkpoint);
    json_object_set_double_member(json_node_get_object(result), "ms",
                                  (double)g_get_monotonic_time() / 1000 - t0);
    return result;
}

JsonNode *sprite_service_restore(sprite_service *svc, const char *account, const char *name,
                                 const char *checkpoint, GError **error)
{
    return svc_on_sprite(svc, account, name, svc_restore_locked, checkpoint, error);
}

/* ---- checkpoint delete ----------------------------------------------------------------------- */

/* The storage server's checkpoint goes first, then the record: a failure in between leaves a
 * record whose checkpoint is gone, which a second delete clears (ENOENT there is success),
 * never a checkpoint nobody can name. */
static JsonNode *svc_checkpoint_delete_locked(sprite_service *svc, account_db *db,
                                              struct live_sprite *l, const void *checkpoint_id,
                                              GError **error)
{
    const char *name = l->name, *checkpoint = checkpoint_id;
    GError *err = NULL;

    int found = account_db_checkpoint_exists(db, name, checkpoint, &err);
    if (found <= 0) {
        if (found < 0)
            svc_wrap(error, err, "account database");
        else
            svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "sprite '%s' has no checkpoint '%s'",
                     name, checkpoint);
        return NULL;
    }
    if (!svc_disk_op(svc, "checkpoint-delete", l->disk, "checkpoint", checkpoint, &err)) {
        if (!g_error_matches(err, G_IO_ERROR, G_IO_ERROR_NOT_FOUND)) {
            svc_wrap(error, err, "checkpoint delete");
            account_db_audit(db, "checkpoint-delete", name, false, (*error)->message);
            return NULL;
        }
        log_warn(SVC_LOG, "%s: checkpoint %s was already gone from the storage server", l->key,
                 checkpoint);
        g_clear_error(&err);
    }
    if (account_db_checkpoint_delete(db, name, checkpoint, &err) < 0) {
        svc_wrap(error, err, "account database");
        return NULL;
    }
    account_db_audit(db, "checkpoint-delete", name, true, checkpoint);
    JsonNode *result = svc_ok_node(name, NULL);
    json_object_set_string_member(json_node_get_object(result), "checkpoint", checkpoint);
    json_object_set_boolean_member(json_node_get_object(result), "deleted", TRUE);
    return result;
}

JsonNode *sprite_service_checkpoint_delete(sprite_service *svc, const char *account,
                                           const char *name, const char *checkpoint, GError **error)
{
    return svc_on_sprite(svc, account, name, svc_checkpoint_delete_locked, checkpoint, error);
}

static JsonNode *svc_sleep_locked(sprite_service *svc, account_db *db, struct live_sprite *l,
                                  const void *unused, GError **error)
{
    const char *name = l->name;
    JsonNode *result = NULL;
    GError *err = NULL;

    (void)unused;
    g_mutex_lock(&svc->mu);
    unsigned holds = l->holds;
    g_mutex_unlock(&svc->mu);
    if (!l->vm || l->vm->state != SPRITE_VM_RUNNING) {
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "sprite '%s' is not running (%s)", name,
                 l->vm ? "asleep" : "stopped");
    } else if (holds > 0) {
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT,
                 "sprite '%s' has %u open exec stream(s); it sleeps once they end", name, holds);
    } else if (!sprite_sleep_warm(l->vm, NULL, &err)) {
        svc_wrap(error, err, "sleep");
    } else {
        svc_set_state(svc, l, LIVE_ASLEEP);
        account_db_audit(db, "sleep", name, true, "warm");
        result = svc_ok_node(name, "asleep");
    }
    return result;
}

JsonNode *sprite_service_sleep(sprite_service *svc, const char *account, const char *name,
                               GError **error)
{
    return svc_on_sprite(svc, account, name, svc_sleep_locked, NULL, error);
}

static JsonNode *svc_wake_locked(sprite_service *svc, account_db *db, struct live_sprite *l,
                                 const void *unused, GError **error)
{
    const char *name = l->name;
    JsonNode *result = NULL;

    (void)unused;
    if (!svc_reap_dead_vm(svc, l, error)) /* a dead QEMU is not awake: it is claimed again */
        return NULL;
    if (l->vm && l->vm->state == SPRITE_VM_RUNNING) {
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "sprite '%s' is awake", name);
    } else if (svc_ensure_running(svc, l, error)) {
        account_db_audit(db, "wake", name, true, NULL);
        result = svc_ok_node(name, "running");
    }
    return result;
}

JsonNode *sprite_service_wake(sprite_service *svc, const char *account, const char *name,
                              GError **error)
{
    return svc_on_sprite(svc, account, name, svc_wake_locked, NULL, error);
}

/* ---- the idle policy's API (idle_policy.h) --------------------------------------------------- */

GArray *sprite_service_idle_snapshot(sprite_service *svc)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(struct sprite_service_idle_entry));
    gint64 now = g_get_monotonic_time();
    GHashTableIter it;
    gpointer value;

    g_mutex_lock(&svc->mu);
    g_hash_table_iter_init(&it, svc->live);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        struct live_sprite *l = value;
        if (l->gone || (l->state != LIVE_RUNNING && l->state != LIVE_ASLEEP))
            continue;
        /* An open stream is activity until it closes; the idle time counts from then. */
        if (l->holds > 0)
            l->last_active_us = now;
        struct sprite_service_idle_entry e = {
            .cold = false,
            .asleep = l->state == LIVE_ASLEEP,
            .idle_us = now - l->last_active_us,
            .last_active_us = l->last_active_us,
        };
        g_strlcpy(e.account, l->account, sizeof e.account);
        g_strlcpy(e.name, l->name, sizeof e.name);
        g_array_append_val(a, e);
    }
    g_mutex_unlock(&svc->mu);
    return a;
}

bool sprite_service_idle_sleep(sprite_service *svc, const char *account, const char *name,
                               bool cold, gint64 min_idle_us, const char *why, GError **error)
{
    account_db *db = svc_enter(svc, account, error);
    g_autofree char *key = g_strdup_printf("%s/%s", account, name);
    bool ok = false;

    if (!db)
        return false;
    g_mutex_lock(&svc->mu);
    struct live_sprite *l = g_hash_table_lookup(svc->live, key);
    if (l)
        l->refs++;
    g_mutex_unlock(&svc->mu);
    if (!l) {
        svc_fail(error, SPRITE_SERVICE_ERROR_NOT_FOUND, "no sprite named '%s'", name);
        goto out;
    }
    /* Never wait for, nor race, a verb: a busy sprite is not idle. */
    if (!g_mutex_trylock(&l->op)) {
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "sprite '%s' is busy", name);
        svc_put_live(svc, l);
        goto out;
    }
    g_mutex_lock(&svc->mu);
    bool idle =
        !l->gone && l->holds == 0 && g_get_monotonic_time() - l->last_active_us >= min_idle_us;
    g_mutex_unlock(&svc->mu);
    GError *err = NULL;
    if (!idle) {
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "sprite '%s' is active again", name);
    } else if (!svc_reap_dead_vm(svc, l, error)) {
        /* a stream did not end (none is open when idle) */
    } else if (!l->vm) {
        /* Its QEMU died: stopped now, so the policy lets it be (one log line, no audit row). */
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "sprite '%s' is stopped", name);
    } else if (cold) {
        ok = svc_cold_sleep_locked(svc, db, l, why, error);
    } else if (!l->vm || l->vm->state != SPRITE_VM_RUNNING) {
        svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT, "sprite '%s' is not running", name);
    } else if (!sprite_sleep_warm(l->vm, NULL, &err)) {
        svc_wrap(error, err, "warm sleep");
        account_db_audit(db, "sleep", name, false, (*error)->message);
    } else {
        svc_set_state(svc, l, LIVE_ASLEEP);
        g_autofree char *detail = g_strdup_printf("warm (%s)", why);
        log_info(SVC_LOG, "%s: asleep, %s", key, detail);
        account_db_audit(db, "sleep", name, true, detail);
        ok = true;
    }
    svc_unlock_put(svc, l);
out:
    svc_leave(svc);
    return ok;
}