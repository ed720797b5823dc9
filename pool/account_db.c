/* account_db.c: one account's SQLite database (account_db.h). */
#include "account_db.h"

#include "log.h"
#include "replica.h"

#include <gio/gio.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define ADB_LOG "account"

/* Every call takes `lock` for its statements and never leaves a transaction open across it:
 * the replica (replica.h) checkpoints the WAL under the same lock, and nothing else does. */
struct account_db {
    sqlite3 *db;
    char *path;
    pthread_mutex_t lock;
    struct replica *replica; /* NULL: not replicated */
};

static const char account_db_schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS sprites ("
    "  name TEXT PRIMARY KEY, disk TEXT NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS checkpoints ("
    "  sprite TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, created INTEGER NOT NULL,"
    "  PRIMARY KEY (sprite, id));"
    "CREATE TABLE IF NOT EXISTS audit ("
    "  ts INTEGER NOT NULL, action TEXT NOT NULL, sprite TEXT, ok INTEGER NOT NULL,"
    "  detail TEXT);";

static bool account_db_cold_init(account_db *db, GError **error);

static void account_db_set_error(account_db *db, GError **error, const char *what)
{
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: %s: %s", db->path, what,
                sqlite3_errmsg(db->db));
}

account_db *account_db_open(const char *path, GError **error)
{
    account_db *db = g_new0(account_db, 1);
    char *msg = NULL;

    db->path = g_strdup(path);
    pthread_mutex_init(&db->lock, NULL);
    if (sqlite3_open_v2(path, &db->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        account_db_set_error(db, error, "open");
        account_db_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db->db, 5000);
    if (sqlite3_exec(db->db, account_db_schema, NULL, NULL, &msg) != SQLITE_OK) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: schema: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        account_db_close(db);
        return NULL;
    }
    if (!account_db_cold_init(db, error)) {
        account_db_close(db);
        return NULL;
    }
    return db;
}

void account_db_close(account_db *db)
{
    if (!db)
        return;
    replica_stop(db->replica); /* ships the last commits */
    sqlite3_close(db->db);
    pthread_mutex_destroy(&db->lock);
    g_free(db->path);
    g_free(db);
}

bool account_db_replicate(account_db *db, struct store *st, const char *prefix, const char *label,
                          double interval_s, GError **error)
{
    struct replica_options o = {.interval = interval_s};
    int err = replica_start_db(db->db, db->path, &db->lock, st, prefix, label, &o, &db->replica);

    if (err < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-err), "%s: replication to %s: %s",
                    db->path, prefix, g_strerror(-err));
        return false;
    }
    return true;
}

bool account_db_replica_lag(account_db *db, double *lag_s, uint64_t *unshipped)
{
    struct replica_stats rs;

    if (!db->replica)
        return false;
    replica_get_stats(db->replica, &rs);
    *lag_s = rs.lag_s;
    *unshipped = rs.commits - rs.shipped_commits;
    return true;
}

/* Holds db->lock until the end of the enclosing scope (every public call below). */
static pthread_mutex_t *account_db_lock(account_db *db)
{
    pthread_mutex_lock(&db->lock);
    return &db->lock;
}
static void account_db_unlock(pthread_mutex_t **held)
{
    pthread_mutex_unlock(*held);
}
#define ACCOUNT_DB_LOCK(db)                                                                        \
    pthread_mutex_t *account_db_held_ __attribute__((cleanup(account_db_unlock), unused)) =        \
        account_db_lock(db)

/* Prepares sql and binds the text arguments (NULL-terminated after sql). */
static sqlite3_stmt *account_db_prepare(account_db *db, GError **error, const char *sql, ...)
{
    sqlite3_stmt *st = NULL;
    va_list ap;
    const char *arg;
    int i = 1;

    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK) {
        account_db_set_error(db, error, "prepare");
        return NULL;
    }
    va_start(ap, sql);
    while ((arg = va_arg(ap, const char *)))
        sqlite3_bind_text(st, i++, arg, -1, SQLITE_TRANSIENT);
    va_end(ap);
    return st;
}

/* Steps a statement that returns no rows. */
static bool account_db_run(account_db *db, sqlite3_stmt *st, GError **error)
{
    if (!st)
        return false;
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r == SQLITE_DONE)
        return true;
    if (r == SQLITE_CONSTRAINT)
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS, "exists already");
    else
        account_db_set_error(db, error, "write");
    return false;
}

/* Steps st once: 1 and the row through fill (when out is not NULL), 0 for no row, -1 with
 * error.  Finalizes st. */
typedef void (*account_db_row_fn)(sqlite3_stmt *st, void *out);
static int account_db_get_one(account_db *db, sqlite3_stmt *st, account_db_row_fn fill, void *out,
                              GError **error)
{
    int r = sqlite3_step(st), found = 0;
    if (r == SQLITE_ROW) {
        if (out)
            fill(st, out);
        found = 1;
    } else if (r != SQLITE_DONE) {
        account_db_set_error(db, error, "read");
        found = -1;
    }
    sqlite3_finalize(st);
    return found;
}

/* Steps st to the end: every row, in a g_new0'ed struct of `size` bytes filled by fill, goes
 * into the array (freed with g_free: rows own no pointers).  NULL with error on a read error.
 * Finalizes st. */
static GPtrArray *account_db_get_all(account_db *db, sqlite3_stmt *st, size_t size,
                                     account_db_row_fn fill, GError **error)
{
    GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        void *row = g_malloc0(size);
        fill(st, row);
        g_ptr_array_add(a, row);
    }
    sqlite3_finalize(st);
    if (r != SQLITE_DONE) {
        account_db_set_error(db, error, "read");
        g_ptr_array_unref(a);
        return NULL;
    }
    return a;
}

bool account_db_sprite_add(account_db *db, const char *name, const char *disk, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, g_get_real_time() / G_USEC_PER_SEC);
    return account_db_run(
        db,
        account_db_prepare(db, error, "INSERT INTO sprites (name, disk, created) VALUES (?, ?, ?)",
                           name, disk, now, NULL),
        error);
}

static void account_db_row_to_sprite(sqlite3_stmt *st, void *row)
{
    struct account_sprite *out = row;
    g_strlcpy(out->name, (const char *)sqlite3_column_text(st, 0), sizeof out->name);
    g_strlcpy(out->disk, (const char *)sqlite3_column_text(st, 1), sizeof out->disk);
    out->created = sqlite3_column_int64(st, 2);
}

int account_db_sprite_get(account_db *db, const char *name, struct account_sprite *out,
                          GError **error)
{
    ACCOUNT_DB_LOCK(db);
    sqlite3_stmt *st = account_db_prepare(
        db, error, "SELECT name, disk, created FROM sprites WHERE name = ?", name, NULL);
    if (!st)
        return -1;
    return account_db_get_one(db, st, account_db_row_to_sprite, out, error);
}

GPtrArray *account_db_sprite_list(account_db *db, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    sqlite3_stmt *st = account_db_prepare(
        db, error, "SELECT name, disk, created FROM sprites ORDER BY name", NULL);
    if (!st)
        return NULL;
    return account_db_get_all(db, st, sizeof(struct account_sprite), account_db_row_to_sprite,
                              error);
}

bool account_db_sprite_delete(account_db *db, const char *name, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    return account_db_run(db,
                          account_db_prepare(db, error, "DELETE FROM checkpoints WHERE sprite = ?",
                                             name, NULL),
                          error) &&
           account_db_run(
               db, account_db_prepare(db, error, "DELETE FROM sprites WHERE name = ?", name, NULL),
               error);
}

char *account_db_checkpoint_next_id(account_db *db, const char *sprite, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    sqlite3_stmt *st = account_db_prepare(
        db, error, "SELECT COALESCE(MAX(seq), 0) FROM checkpoints WHERE sprite = ?", sprite, NULL);
    if (!st)
        return NULL;
    if (sqlite3_step(st) != SQLITE_ROW) {
        account_db_set_error(db, error, "read");
        sqlite3_finalize(st);
        return NULL;
    }
    char *id = g_strdup_printf("ck%" G_GINT64_FORMAT, (gint64)sqlite3_column_int64(st, 0) + 1);
    sqlite3_finalize(st);
    return id;
}

bool account_db_checkpoint_add(account_db *db, const char *sprite, const char *id, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, g_get_real_time() / G_USEC_PER_SEC);
    const char *seq = g_str_has_prefix(id, "ck") ? id + 2 : "0";
    return account_db_run(db,
                          account_db_prepare(db, error,
                                             "INSERT INTO checkpoints (sprite, id, seq, created) "
                                             "VALUES (?, ?, CAST(? AS INTEGER), ?)",
                                             sprite, id, seq, now, NULL),
                          error);
}

int account_db_checkpoint_exists(account_db *db, const char *sprite, const char *id, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    sqlite3_stmt *st = account_db_prepare(
        db, error, "SELECT 1 FROM checkpoints WHERE sprite = ? AND id = ?", sprite, id, NULL);
    if (!st)
        return -1;
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r == SQLITE_ROW)
        return 1;
    if (r == SQLITE_DONE)
        return 0;
    account_db_set_error(db, error, "read");
    return -1;
}

int account_db_checkpoint_delete(account_db *db, const char *sprite, const char *id, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    if (!account_db_run(db,
                        account_db_prepare(db, error,
                                           "DELETE FROM checkpoints WHERE sprite = ? AND id = ?",
                                           sprite, id, NULL),
                        error))
        return -1;
    return sqlite3_changes(db->db) > 0 ? 1 : 0;
}

static void account_db_row_to_checkpoint(sqlite3_stmt *st, void *row)
{
    struct account_checkpoint *c = row;
    g_strlcpy(c->id, (const char *)sqlite3_column_text(st, 0), sizeof c->id);
    c->created = sqlite3_column_int64(st, 1);
}

GPtrArray *account_db_checkpoint_list(account_db *db, const char *sprite, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    sqlite3_stmt *st = account_db_prepare(
        db, error, "SELECT id, created FROM checkpoints WHERE sprite = ? ORDER BY seq", sprite,
        NULL);
    if (!st)
        return NULL;
    return account_db_get_all(db, st, sizeof(struct account_checkpoint),
                              account_db_row_to_checkpoint, error);
}

void account_db_audit(account_db *db, const char *action, const char *sprite, bool ok,
                      const char *detail)
{
    ACCOUNT_DB_LOCK(db);
    GError *err = NULL;
    g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, g_get_real_time() / G_USEC_PER_SEC);

    if (!account_db_run(db,
                        account_db_prepare(db, &err,
                                           "INSERT INTO audit (ts, action, sprite, ok, detail) "
                                           "VALUES (?, ?, ?, ?, ?)",
                                           now, action, sprite ? sprite : "", ok ? "1" : "0",
                                           detail ? detail : "", NULL),
                        &err)) {
        log_warn(ADB_LOG, "audit %s %s: %s", action, sprite ? sprite : "", err->message);
        g_clear_error(&err);
    }
}

/* ---- cold sleep: what a wake needs, per sprite ---------------------------------------------
 *
 * One row per sprite that has ever begun a cold sleep.  The states, and what each promises:
 *
 *   awake       no claim on the store: the sprite runs, is warm-asleep or stopped.  `manifest`
 *               may still name the last sleep's manifest, only as the known set of chunks for
 *               the next sleep (never to wake from: the disk has moved on since).
 *   going-cold  a cold sleep is under way and will write `pending`.  Recovery: `pending` in the
 *               store means the sleep completed (-> cold); else the guest's memory is lost and
 *               the sprite is stopped with its disk (-> awake).
 *   cold        `manifest` is complete in the store, and the disk is exactly as that guest left
 *               it (guest sync, then stop flushed every write): waking from it loses nothing.
 *   waking      a wake from `manifest` is under way.  Recovery: back to cold (the manifest is
 *               untouched; the local copy is rebuilt from the store if it was half used).
 *
 * `seq` counts the sleeps begun, so that no two sleeps ever write the same manifest key (the
 * key is the caller's: vm/sprites/DISK/manifest-SEQ.json).  Each change is one statement, so
 * one committed transaction (synchronous=FULL): a wispd killed at any point leaves one of the
 * states above.  The table lives in account.db, so it travels with the account's replica. */

static const char account_db_cold_schema[] =
    "CREATE TABLE IF NOT EXISTS cold_sleep ("
    "  sprite TEXT PRIMARY KEY, state TEXT NOT NULL, manifest TEXT, pending TEXT,"
    "  seq INTEGER NOT NULL, updated INTEGER NOT NULL);";

static bool account_db_cold_init(account_db *db, GError **error)
{
    char *msg = NULL;
    if (sqlite3_exec(db->db, account_db_cold_schema, NULL, NULL, &msg) != SQLITE_OK) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: schema (cold_sleep): %s", db->path,
                    msg ? msg : "?");
        sqlite3_free(msg);
        return false;
    }
    return true;
}

static void account_db_row_to_cold(sqlite3_stmt *st, void *row)
{
    struct account_cold *out = row;
    const char *manifest = (const char *)sqlite3_column_text(st, 2);
    const char *pending = (const char *)sqlite3_column_text(st, 3);
    memset(out, 0, sizeof *out);
    g_strlcpy(out->sprite, (const char *)sqlite3_column_text(st, 0), sizeof out->sprite);
    g_strlcpy(out->state, (const char *)sqlite3_column_text(st, 1), sizeof out->state);
    g_strlcpy(out->manifest, manifest ? manifest : "", sizeof out->manifest);
    g_strlcpy(out->pending, pending ? pending : "", sizeof out->pending);
    out->seq = (unsigned)sqlite3_column_int64(st, 4);
}

int account_db_cold_get(account_db *db, const char *sprite, struct account_cold *out,
                        GError **error)
{
    ACCOUNT_DB_LOCK(db);
    sqlite3_stmt *st = account_db_prepare(
        db, error, "SELECT sprite, state, manifest, pending, seq FROM cold_sleep WHERE sprite = ?",
        sprite, NULL);
    if (!st)
        return -1;
    return account_db_get_one(db, st, account_db_row_to_cold, out, error);
}

GPtrArray *account_db_cold_list(account_db *db, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    sqlite3_stmt *st = account_db_prepare(
        db, error,
        "SELECT c.sprite, c.state, c.manifest, c.pending, c.seq FROM cold_sleep c"
        " JOIN sprites s ON s.name = c.sprite WHERE c.state != 'awake' ORDER BY c.sprite",
        NULL);
    if (!st)
        return NULL;
    return account_db_get_all(db, st, sizeof(struct account_cold), account_db_row_to_cold, error);
}

bool account_db_cold_begin(account_db *db, const char *sprite, unsigned seq, const char *pending,
                           GError **error)
{
    ACCOUNT_DB_LOCK(db);
    g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, g_get_real_time() / G_USEC_PER_SEC);
    g_autofree char *seq_text = g_strdup_printf("%u", seq);
    return account_db_run(
        db,
        account_db_prepare(db, error,
                           "INSERT INTO cold_sleep (sprite, state, pending, seq, updated)"
                           " VALUES (?1, 'going-cold', ?2, CAST(?3 AS INTEGER), ?4)"
                           " ON CONFLICT (sprite) DO UPDATE SET state = 'going-cold',"
                           " pending = ?2, seq = CAST(?3 AS INTEGER), updated = ?4",
                           sprite, pending, seq_text, now, NULL),
        error);
}

/* Sets the state; "cold" also makes `pending` the manifest (when pending is set). */
bool account_db_cold_set(account_db *db, const char *sprite, const char *state, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, g_get_real_time() / G_USEC_PER_SEC);
    const char *sql =
        strcmp(state, "cold") == 0
            ? "UPDATE cold_sleep SET state = ?1, manifest = COALESCE(pending, manifest),"
              " pending = NULL, updated = ?2 WHERE sprite = ?3"
            : "UPDATE cold_sleep SET state = ?1, pending = NULL, updated = ?2 WHERE sprite = ?3";
    return account_db_run(db, account_db_prepare(db, error, sql, state, now, sprite, NULL), error);
}

/* The row stays, with its seq: a later sleep of this name never reuses a manifest key. */
bool account_db_cold_forget(account_db *db, const char *sprite, GError **error)
{
    ACCOUNT_DB_LOCK(db);
    g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, g_get_real_time() / G_USEC_PER_SEC);
    return account_db_run(
        db,
        account_db_prepare(db, error,
                           "UPDATE cold_sleep SET state = 'awake', manifest = NULL,"
                           " pending = NULL, updated = ?1 WHERE sprite = ?2",
                           now, sprite, NULL),
        error);
}
