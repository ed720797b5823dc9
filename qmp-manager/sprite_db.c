/* sprite_db.c: the durable sprite state (see sprite_db.h). */
#include "sprite_db.h"

#include "proc.h"

#include "log.h"
#include "vm_config.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DB_LOG "sprite-db"

struct sprite_db {
    sqlite3 *db;
    char *path;
    bool read_only;
    bool has_incarnation; /* false only for an old database opened read-only (not migrated) */
};

bool sprite_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;

    /* One key component in the store (vm/sprites/NAME/...) and one file name: no '/', no
     * "." or "..", nothing a shell or a URL would change. */
    if (n == 0 || n > SPRITE_NAME_MAX || !g_ascii_isalnum(name[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!g_ascii_isalnum(name[i]) && name[i] != '-' && name[i] != '_' && name[i] != '.')
            return false;
    return true;
}

bool sprite_incarnation_valid(const char *incarnation)
{
    size_t n = incarnation ? strlen(incarnation) : 0;

    if (n != SPRITE_INCARNATION_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!g_ascii_isdigit(incarnation[i]) && !(incarnation[i] >= 'a' && incarnation[i] <= 'f'))
            return false;
    return true;
}

static const char *const state_names[] = {
    [SPRITE_CREATING] = "creating",       [SPRITE_RUNNING] = "running",
    [SPRITE_WARM_ASLEEP] = "warm-asleep", [SPRITE_GOING_COLD] = "going-cold",
    [SPRITE_COLD_ASLEEP] = "cold-asleep", [SPRITE_WAKING] = "waking",
    [SPRITE_CRASHED] = "crashed",         [SPRITE_DESTROYED] = "destroyed",
};

const char *sprite_state_to_string(enum sprite_state s)
{
    return (unsigned)s < G_N_ELEMENTS(state_names) ? state_names[s] : "?";
}

bool sprite_state_from_string(const char *s, enum sprite_state *out)
{
    for (unsigned i = 0; i < G_N_ELEMENTS(state_names); i++)
        if (s && strcmp(s, state_names[i]) == 0) {
            *out = (enum sprite_state)i;
            return true;
        }
    return false;
}

bool sprite_state_is_good(enum sprite_state s)
{
    return s == SPRITE_RUNNING || s == SPRITE_WARM_ASLEEP || s == SPRITE_COLD_ASLEEP ||
           s == SPRITE_CRASHED || s == SPRITE_DESTROYED;
}

static bool db_fail(sprite_db *db, GError **error, const char *what)
{
    g_set_error(error, VM_ERROR, VM_ERROR_IO, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->db));
    return false;
}

static bool db_exec(sprite_db *db, const char *sql, GError **error)
{
    char *msg = NULL;
    if (sqlite3_exec(db->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "%s: %s: %s", db->path, sql, msg ? msg : "?");
        sqlite3_free(msg);
        return false;
    }
    return true;
}

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS sprites ("
    " name TEXT PRIMARY KEY, state TEXT NOT NULL, good_state TEXT NOT NULL,"
    " pid INTEGER NOT NULL DEFAULT 0, run_dir TEXT, manifest_key TEXT, pending_manifest TEXT,"
    " sleep_seq INTEGER NOT NULL DEFAULT 0, detail TEXT, updated_us INTEGER NOT NULL,"
    " incarnation TEXT);"
    "CREATE TABLE IF NOT EXISTS transitions ("
    " id INTEGER PRIMARY KEY, name TEXT NOT NULL, phase TEXT NOT NULL, state TEXT NOT NULL,"
    " detail TEXT, at_us INTEGER NOT NULL);";

/* A new random id: 16 lower-case hex digits (SPRITE_INCARNATION_LEN). */
#define NEW_INCARNATION_SQL "lower(hex(randomblob(8)))"

static bool db_has_incarnation(sprite_db *db, bool *has, GError **error)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *has = false;
    if (sqlite3_prepare_v2(db->db, "SELECT name FROM pragma_table_info('sprites')", -1, &st,
                           NULL) != SQLITE_OK)
        return db_fail(db, error, "table_info");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (g_strcmp0((const char *)sqlite3_column_text(st, 0), "incarnation") == 0)
            *has = true;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || db_fail(db, error, "table_info");
}

/* Additive migration of a database from before incarnations: the column, and an id for each
 * row.  Such a row's manifests keep their old keys (vm/sprites/NAME/manifest-SEQ.json, still
 * named by manifest_key); its next sleep writes under the incarnation. */
static bool db_migrate(sprite_db *db, GError **error)
{
    bool has;

    if (!db_has_incarnation(db, &has, error))
        return false;
    if (!has && !db_exec(db, "ALTER TABLE sprites ADD COLUMN incarnation TEXT", error))
        return false;
    db->has_incarnation = true;
    return db_exec(
        db, "UPDATE sprites SET incarnation = " NEW_INCARNATION_SQL " WHERE incarnation IS NULL",
        error);
}

sprite_db *sprite_db_open_readonly(const char *dir, GError **error)
{
    sprite_db *db = g_new0(sprite_db, 1);
    struct stat sb;

    db->read_only = true;
    db->path = g_build_filename(dir, "sprites.db", NULL);
    /* Never created here: a mistyped --state must not look like a database without sprites. */
    int r = stat(db->path, &sb);
    if (r < 0 || !S_ISREG(sb.st_mode)) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "%s: no sprite database (%s)", db->path,
                    r < 0 ? g_strerror(errno) : "not a file");
        sprite_db_close(db);
        return NULL;
    }
    if (sqlite3_open_v2(db->path, &db->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(db->db, 5000) != SQLITE_OK ||
        !db_has_incarnation(db, &db->has_incarnation, error)) {
        if (error && !*error) {
            if (db->db)
                db_fail(db, error, "open");
            else
                g_set_error(error, VM_ERROR, VM_ERROR_IO, "%s: open: out of memory", db->path);
        }
        sprite_db_close(db);
        return NULL;
    }
    return db;
}

sprite_db *sprite_db_open(const char *dir, GError **error)
{
    sprite_db *db = g_new0(sprite_db, 1);

    if (g_mkdir_with_parents(dir, 0700) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "mkdir %s: %s", dir, g_strerror(errno));
        g_free(db);
        return NULL;
    }
    db->path = g_build_filename(dir, "sprites.db", NULL);
    if (sqlite3_open_v2(db->path, &db->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        if (db->db)
            db_fail(db, error, "open");
        else
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "%s: open: out of memory", db->path);
        sprite_db_close(db);
        return NULL;
    }
    /* WAL + synchronous=FULL: a committed transition survives a power cut, and a reader (a
     * second manager process checking) does not block the writer. */
    if (sqlite3_busy_timeout(db->db, 5000) != SQLITE_OK ||
        !db_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL", error) ||
        !db_exec(db, schema, error) || !db_migrate(db, error)) {
        if (error && !*error)
            db_fail(db, error, "busy_timeout");
        sprite_db_close(db);
        return NULL;
    }
    return db;
}

void sprite_db_close(sprite_db *db)
{
    if (!db)
        return;
    if (db->db && sqlite3_close(db->db) != SQLITE_OK)
        log_warn(DB_LOG, "close %s: %s", db->path, sqlite3_errmsg(db->db));
    g_free(db->path);
    g_free(db);
}

/* Runs one statement with text/int parameters: fmt is a string of 's' (const char *, may be
 * NULL) and 'i' (gint64) giving each parameter's type.  Returns the number of rows changed, or
 * -1 with error. */
static int db_run(sprite_db *db, GError **error, const char *sql, const char *fmt, ...)
{
    sqlite3_stmt *st = NULL;
    va_list ap;
    int rc;

    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(db, error, sql);
        return -1;
    }
    va_start(ap, fmt);
    for (int i = 0; fmt[i]; i++) {
        if (fmt[i] == 's') {
            const char *v = va_arg(ap, const char *);
            rc = v ? sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT)
                   : sqlite3_bind_null(st, i + 1);
        } else {
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, gint64));
        }
        if (rc != SQLITE_OK) {
            va_end(ap);
            db_fail(db, error, "bind");
            sqlite3_finalize(st);
            return -1;
        }
    }
    va_end(ap);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        db_fail(db, error, sql);
        return -1;
    }
    return sqlite3_changes(db->db);
}

static bool db_log_transition(sprite_db *db, const char *name, const char *phase,
                              enum sprite_state s, const char *detail, GError **error)
{
    return db_run(db, error,
                  "INSERT INTO transitions (name, phase, state, detail, at_us) VALUES (?,?,?,?,?)",
                  "ssssi", name, phase, sprite_state_to_string(s), detail,
                  (gint64)g_get_real_time()) >= 0;
}

/* After the row's UPDATE (changes: its result), the history line, in the same transaction. */
static bool db_transition(sprite_db *db, const char *name, const char *phase, enum sprite_state s,
                          const char *detail, int changes, GError **error)
{
    if (changes < 0)
        return false;
    if (changes == 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "sprite %s: no such sprite", name);
        return false;
    }
    return db_log_transition(db, name, phase, s, detail, error);
}

static bool db_commit(sprite_db *db, bool ok, GError **error)
{
    if (!ok) {
        GError *ignored = NULL;
        db_exec(db, "ROLLBACK", &ignored);
        g_clear_error(&ignored);
        return false;
    }
    return db_exec(db, "COMMIT", error);
}

bool sprite_db_create(sprite_db *db, const char *name, GError **error)
{
    if (!sprite_name_valid(name)) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "bad sprite name '%s': 1 to %d of A-Z a-z 0-9 . _ -, starting with a letter "
                    "or digit",
                    name ? name : "", SPRITE_NAME_MAX);
        return false;
    }
    if (!db_exec(db, "BEGIN IMMEDIATE", error))
        return false;
    /* A destroyed sprite's name may be used again; its history stays.  Each use is a new
     * incarnation: its manifests go under their own key prefix (sleep_manifest_key_incarnation),
     * so the counting again from sleep_seq 0 never meets a dead incarnation's manifests. */
    int n = db_run(db, error,
                   "INSERT INTO sprites (name, state, good_state, updated_us, incarnation)"
                   " VALUES (?,?,?,?," NEW_INCARNATION_SQL ")"
                   " ON CONFLICT(name) DO UPDATE SET state = excluded.state,"
                   " good_state = excluded.good_state, pid = 0, run_dir = NULL,"
                   " manifest_key = NULL, pending_manifest = NULL, sleep_seq = 0, detail = NULL,"
                   " updated_us = excluded.updated_us, incarnation = excluded.incarnation"
                   " WHERE sprites.state = 'destroyed'",
                   "sssi", name, "creating", "destroyed", (gint64)g_get_real_time());
    bool ok = n >= 0;
    if (n == 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "sprite %s exists", name);
        ok = false;
    }
    ok = ok && db_log_transition(db, name, "begin", SPRITE_CREATING, NULL, error);
    return db_commit(db, ok, error);
}

bool sprite_db_begin(sprite_db *db, const char *name, enum sprite_state to,
                     const char *pending_manifest, GError **error)
{
    if (!db_exec(db, "BEGIN IMMEDIATE", error))
        return false;
    int n = db_run(db, error,
                   "UPDATE sprites SET state = ?, pending_manifest = ?, updated_us = ?"
                   " WHERE name = ?",
                   "ssis", sprite_state_to_string(to), pending_manifest, (gint64)g_get_real_time(),
                   name);
    bool ok = db_transition(db, name, "begin", to, pending_manifest, n, error);
    return db_commit(db, ok, error);
}

bool sprite_db_end(sprite_db *db, const char *name, enum sprite_state good, pid_t pid,
                   const char *run_dir, const char *manifest_key, const char *detail,
                   GError **error)
{
    if (!sprite_state_is_good(good)) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "sprite %s: %s is not a state to end in",
                    name, sprite_state_to_string(good));
        return false;
    }
    if (!db_exec(db, "BEGIN IMMEDIATE", error))
        return false;
    int n = db_run(db, error,
                   "UPDATE sprites SET state = ?1, good_state = ?1, pid = ?2, run_dir = ?3,"
                   " manifest_key = COALESCE(?4, manifest_key), pending_manifest = NULL,"
                   " sleep_seq = sleep_seq + (?4 IS NOT NULL), detail = ?5, updated_us = ?6"
                   " WHERE name = ?7",
                   "sisssis", sprite_state_to_string(good), (gint64)pid, run_dir, manifest_key,
                   detail, (gint64)g_get_real_time(), name);
    bool ok = db_transition(db, name, "end", good, detail, n, error);
    return db_commit(db, ok, error);
}

bool sprite_db_fail(sprite_db *db, const char *name, enum sprite_state fallback, const char *why,
                    GError **error)
{
    if (!db_exec(db, "BEGIN IMMEDIATE", error))
        return false;
    int n = db_run(db, error,
                   "UPDATE sprites SET state = ?1, good_state = ?1, pending_manifest = NULL,"
                   " pid = CASE WHEN ?1 IN ('running', 'warm-asleep') THEN pid ELSE 0 END,"
                   " detail = ?2, updated_us = ?3 WHERE name = ?4",
                   "ssis", sprite_state_to_string(fallback), why, (gint64)g_get_real_time(), name);
    bool ok = db_transition(db, name, "fail", fallback, why, n, error);
    return db_commit(db, ok, error);
}

void sprite_record_free(struct sprite_record *r)
{
    if (!r)
        return;
    g_free(r->name);
    g_free(r->run_dir);
    g_free(r->manifest_key);
    g_free(r->pending_manifest);
    g_free(r->detail);
    g_free(r->incarnation);
    g_free(r);
}

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? g_strdup((const char *)t) : NULL;
}

/* name: that sprite (even DESTROYED), else every sprite not DESTROYED. */
static GPtrArray *db_select(sprite_db *db, const char *name, GError **error)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)sprite_record_free);
    sqlite3_stmt *st = NULL;
    g_autofree char *sql = g_strdup_printf(
        "SELECT name, state, good_state, pid, run_dir, manifest_key, pending_manifest,"
        " sleep_seq, detail, %s FROM sprites %s",
        db->has_incarnation ? "incarnation" : "NULL",
        name ? "WHERE name = ?" : "WHERE state != 'destroyed' ORDER BY name");
    int rc;

    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK ||
        (name && sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT) != SQLITE_OK)) {
        db_fail(db, error, "select");
        sqlite3_finalize(st);
        g_ptr_array_unref(out);
        return NULL;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct sprite_record *r = g_new0(struct sprite_record, 1);
        g_autofree char *state = col_text(st, 1), *good = col_text(st, 2);
        r->name = col_text(st, 0);
        if (!sprite_state_from_string(state, &r->state))
            r->state = SPRITE_CRASHED;
        if (!sprite_state_from_string(good, &r->good_state))
            r->good_state = SPRITE_CRASHED;
        r->pid = (pid_t)sqlite3_column_int64(st, 3);
        r->run_dir = col_text(st, 4);
        r->manifest_key = col_text(st, 5);
        r->pending_manifest = col_text(st, 6);
        r->sleep_seq = (unsigned)sqlite3_column_int64(st, 7);
        r->detail = col_text(st, 8);
        r->incarnation = col_text(st, 9);
        g_ptr_array_add(out, r);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        db_fail(db, error, "select");
        g_ptr_array_unref(out);
        return NULL;
    }
    return out;
}

struct sprite_record *sprite_db_get(sprite_db *db, const char *name, GError **error)
{
    GPtrArray *a = db_select(db, name, error);
    struct sprite_record *r = NULL;

    if (!a)
        return NULL;
    if (a->len == 0)
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "sprite %s: no such sprite", name);
    else
        r = g_ptr_array_steal_index(a, 0);
    g_ptr_array_unref(a);
    return r;
}

GPtrArray *sprite_db_list(sprite_db *db, GError **error)
{
    return db_select(db, NULL, error);
}

bool sprite_pid_is_our_qemu(pid_t pid, const char *run_dir)
{
    g_autofree char *exe_link = NULL, *exe = NULL;

    if (pid <= 0 || !run_dir || (kill(pid, 0) < 0 && errno == ESRCH))
        return false;
    /* A pid can be reused: the binary and our run dir on its command line must both match
     * (a zombie, exited and not reaped by its dead parent's successor yet, has neither). */
    exe_link = g_strdup_printf("/proc/%d/exe", (int)pid);
    exe = g_file_read_link(exe_link, NULL);
    if (!exe || !strstr(exe, "qemu-system"))
        return false;
    return proc_cmdline_names_path(pid, run_dir);
}

static bool manifest_present(struct store *st, const char *key)
{
    struct store_stat stat;
    if (!key)
        return false;
    if (!st)
        return true;
    return store_head(st, key, &stat) == 0;
}

GPtrArray *sprite_db_recover(sprite_db *db, struct store *st, GError **error)
{
    g_autoptr(GPtrArray) list = sprite_db_list(db, error);

    if (!list)
        return NULL;
    for (guint i = 0; i < list->len; i++) {
        struct sprite_record *r = g_ptr_array_index(list, i);
        enum sprite_state now;
        const char *why;
        const char *manifest = NULL;
        bool alive = sprite_pid_is_our_qemu(r->pid, r->run_dir);

        if (alive) {
            now = r->good_state == SPRITE_WARM_ASLEEP ? SPRITE_WARM_ASLEEP : SPRITE_RUNNING;
            why = r->state == SPRITE_GOING_COLD
                      ? "QEMU still runs: the cold sleep did not finish (its vCPUs may be stopped)"
                      : "QEMU still runs";
        } else if (r->state == SPRITE_GOING_COLD && manifest_present(st, r->pending_manifest)) {
            /* The manifest is the sleep's last write: it being there means the sleep is whole. */
            now = SPRITE_COLD_ASLEEP;
            manifest = r->pending_manifest;
            why = "the cold sleep's manifest is complete";
        } else if (manifest_present(st, r->manifest_key) &&
                   (r->good_state == SPRITE_COLD_ASLEEP || r->state == SPRITE_WAKING)) {
            now = SPRITE_COLD_ASLEEP;
            why = "asleep: its manifest is in the store";
        } else if (r->good_state == SPRITE_CRASHED) {
            now = SPRITE_CRASHED;
            why = r->detail ? r->detail : "crashed";
        } else {
            now = SPRITE_CRASHED;
            why = "QEMU is gone and no complete manifest";
        }
        bool changed = now != r->state || (now == SPRITE_COLD_ASLEEP && manifest);
        if (changed || now != r->good_state) {
            log_info(DB_LOG, "recover %s: %s (good %s) -> %s: %s", r->name,
                     sprite_state_to_string(r->state), sprite_state_to_string(r->good_state),
                     sprite_state_to_string(now), why);
            bool keep_pid = now == SPRITE_RUNNING || now == SPRITE_WARM_ASLEEP;
            if (!sprite_db_end(db, r->name, now, keep_pid ? r->pid : 0,
                               keep_pid ? r->run_dir : NULL, manifest, why, error))
                return NULL;
        } else {
            log_info(DB_LOG, "recover %s: %s (%s)", r->name, sprite_state_to_string(now), why);
        }
    }
    return sprite_db_list(db, error);
}

bool sprite_db_manifest_pins(sprite_db *db, GPtrArray *keys, GError **error)
{
    GPtrArray *list = sprite_db_list(db, error);

    if (!list)
        return false;
    for (guint i = 0; i < list->len; i++) {
        struct sprite_record *r = g_ptr_array_index(list, i);
        if (r->manifest_key)
            g_ptr_array_add(keys, g_strdup(r->manifest_key));
        if (r->pending_manifest)
            g_ptr_array_add(keys, g_strdup(r->pending_manifest));
    }
    g_ptr_array_unref(list);
    return true;
}
