/* sprite_reconcile.c: the account databases and the storage server made to agree at start-up
 * (sprite_reconcile.h).
 *
 * What each verb leaves when wispd dies between its two writes, and what this pass does:
 *
 *   create      row first, then the disk clone: a row without its disk is a create that never
 *               finished; the row goes (nothing was acknowledged).  A row with its disk is a
 *               sprite: it comes back stopped, and its first request claims a VM.
 *   delete      disk first, then the row: the same as an unfinished create; the row goes.
 *   checkpoint  storage checkpoint first, then the row: a checkpoint without a row gets its
 *               row, since the storage server kept it (no checkpoint is orphaned).
 *   restore     one storage operation (atomic in the plugin's metadata), no row changes.
 *
 * A disk "s_ACCOUNT_NAME" without a row cannot come from a crash (create writes the row
 * first); it comes from an account database older than the disk metadata, such as one restored
 * from the store.  It is adopted: its row is made, so that no disk is left that no account
 * sees.  Nothing is ever deleted from the storage server here: when in doubt, data is kept. */
#include "sprite_reconcile.h"

#include "account_db.h"
#include "log.h"
#include "sprite_service.h"
#include "storage_server.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <string.h>

#define RECONCILE_LOG "reconcile"

/* The storage server's disks: name -> TRUE (g_hash_table_unref it). */
static GHashTable *reconcile_disks(const char *control_socket, GError **error)
{
    JsonObject *answer = storage_control_call(control_socket, "disk-list", NULL, error);
    if (!answer)
        return NULL;
    JsonNode *member = json_object_get_member(answer, "disks");
    if (!member || !JSON_NODE_HOLDS_ARRAY(member)) {
        json_object_unref(answer);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "disk-list answered without a list of disks");
        return NULL;
    }
    GHashTable *disks = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    JsonArray *a = json_node_get_array(member);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        const char *name = o ? json_object_get_string_member_with_default(o, "name", NULL) : NULL;
        if (name)
            g_hash_table_add(disks, g_strdup(name));
    }
    json_object_unref(answer);
    return disks;
}

/* Splits "s_ACCOUNT_NAME" (neither part has a '_'); false for any other disk. */
static bool reconcile_parse_disk(const char *disk, char **account, char **name)
{
    if (!g_str_has_prefix(disk, "s_"))
        return false;
    const char *a = disk + 2, *sep = strchr(a, '_');
    if (!sep)
        return false;
    g_autofree char *acc = g_strndup(a, (gsize)(sep - a));
    if (!sprite_service_account_valid(acc) || !sprite_service_name_valid(sep + 1))
        return false;
    *account = g_steal_pointer(&acc);
    *name = g_strdup(sep + 1);
    return true;
}

/* Gives every storage checkpoint of the sprite's disk its row. */
static bool reconcile_checkpoints(account_db *db, const char *control_socket,
                                  const struct account_sprite *s, const char *account,
                                  struct sprite_reconcile_report *r, GError **error)
{
    JsonObject *req = json_object_new();
    json_object_set_string_member(req, "name", s->disk);
    JsonObject *answer = storage_control_call(control_socket, "disk-checkpoints", req, error);
    json_object_unref(req);
    if (!answer)
        return false;
    bool ok = true;
    JsonArray *a = json_object_get_array_member(answer, "checkpoints");
    for (guint i = 0; ok && a && i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        const char *id = o ? json_object_get_string_member_with_default(o, "name", NULL) : NULL;
        if (!id)
            continue;
        int found = account_db_checkpoint_exists(db, s->name, id, error);
        if (found < 0)
            ok = false;
        else if (found == 0 && (ok = account_db_checkpoint_add(db, s->name, id, error))) {
            log_warn(RECONCILE_LOG,
                     "%s/%s: checkpoint %s had no row (wispd stopped while making it); kept",
                     account, s->name, id);
            account_db_audit(db, "checkpoint", s->name, true, "recovered at start-up");
            r->checkpoints_adopted++;
        }
    }
    json_object_unref(answer);
    return ok;
}

static account_db *reconcile_open(const char *accounts_dir, const char *account, GError **error)
{
    g_autofree char *dir = g_build_filename(accounts_dir, account, NULL);
    g_autofree char *path = g_build_filename(dir, "account.db", NULL);
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "mkdir %s: %s", dir,
                    g_strerror(errno));
        return NULL;
    }
    return account_db_open(path, error);
}

/* One account's rows against the disks; the disks it has rows for are taken out of `disks`. */
static bool reconcile_account(const char *accounts_dir, const char *account,
                              const char *control_socket, GHashTable *disks,
                              struct sprite_reconcile_report *r, GError **error)
{
    account_db *db = reconcile_open(accounts_dir, account, error);
    if (!db)
        return false;
    GPtrArray *rows = account_db_sprite_list(db, error);
    bool ok = rows != NULL;
    for (guint i = 0; ok && i < rows->len; i++) {
        const struct account_sprite *s = rows->pdata[i];
        if (!g_hash_table_remove(disks, s->disk)) {
            log_warn(RECONCILE_LOG,
                     "%s/%s: disk %s does not exist (a create or delete that did not finish); the "
                     "row goes",
                     account, s->name, s->disk);
            ok = account_db_sprite_delete(db, s->name, error);
            if (ok)
                account_db_audit(db, "create", s->name, false, "unfinished at start-up: removed");
            r->rows_dropped++;
            continue;
        }
        r->sprites++;
        ok = reconcile_checkpoints(db, control_socket, s, account, r, error);
    }
    if (rows)
        g_ptr_array_unref(rows);
    account_db_close(db);
    r->accounts++;
    return ok;
}

/* A disk of the sprite naming scheme that no row claims: its row is made. */
static bool reconcile_adopt(const char *accounts_dir, const char *control_socket, const char *disk,
                            struct sprite_reconcile_report *r, GError **error)
{
    g_autofree char *account = NULL, *name = NULL;
    if (!reconcile_parse_disk(disk, &account, &name))
        return true; /* not a sprite's disk (base, a disk made with `wisp disk create`) */
    account_db *db = reconcile_open(accounts_dir, account, error);
    if (!db)
        return false;
    struct account_sprite s = {0};
    bool ok = account_db_sprite_add(db, name, disk, error);
    if (ok) {
        log_warn(RECONCILE_LOG,
                 "%s/%s: disk %s had no row (an account database older than the disks); adopted",
                 account, name, disk);
        account_db_audit(db, "create", name, true, "adopted at start-up");
        g_strlcpy(s.name, name, sizeof s.name);
        g_strlcpy(s.disk, disk, sizeof s.disk);
        r->disks_adopted++;
        r->sprites++;
        ok = reconcile_checkpoints(db, control_socket, &s, account, r, error);
    }
    account_db_close(db);
    return ok;
}

bool sprite_reconcile(const char *state_dir, const char *control_socket,
                      struct sprite_reconcile_report *out, GError **error)
{
    struct sprite_reconcile_report r = {0};
    g_autofree char *accounts_dir = g_build_filename(state_dir, "accounts", NULL);
    GHashTable *disks = reconcile_disks(control_socket, error);
    bool ok = disks != NULL;

    if (ok && g_file_test(accounts_dir, G_FILE_TEST_IS_DIR)) {
        GDir *dir = g_dir_open(accounts_dir, 0, error);
        const char *account;
        ok = dir != NULL;
        while (ok && (account = g_dir_read_name(dir)))
            if (sprite_service_account_valid(account))
                ok = reconcile_account(accounts_dir, account, control_socket, disks, &r, error);
        if (dir)
            g_dir_close(dir);
    }
    if (ok) {
        GHashTableIter it;
        gpointer disk;
        g_hash_table_iter_init(&it, disks);
        while (ok && g_hash_table_iter_next(&it, &disk, NULL))
            ok = reconcile_adopt(accounts_dir, control_socket, disk, &r, error);
    }
    if (disks)
        g_hash_table_unref(disks);
    if (ok)
        log_info(RECONCILE_LOG,
                 "%u accounts, %u sprites; %u unfinished rows dropped, %u disks and %u checkpoints "
                 "adopted",
                 r.accounts, r.sprites, r.rows_dropped, r.disks_adopted, r.checkpoints_adopted);
    if (out)
        *out = r;
    return ok;
}
