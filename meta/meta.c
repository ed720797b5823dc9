/* meta.c: the metadata database (meta.h) on SQLite.
 *
 * One struct meta is one connection, opened in WAL mode with synchronous=FULL, so a COMMIT
 * returns only after the WAL is fsynced.  Statements are prepared once per connection
 * (meta_stmt) and reset after each use; the list functions copy their rows out before calling
 * back, so a callback may use the same connection freely.
 *
 * Schema, version 4 (PRAGMA user_version).  Older versions are upgraded in place: version 1
 * lacked checkpoints, version 2 their seq column, version 3 the pending base and written.
 *   disks      one row per disk; head_root is a 32-byte BLOB (all zero for the empty map)
 *   map_pages  content-addressed chunk map pages: a row is never changed once written, so
 *              inserting is INSERT OR IGNORE and two versions share their common pages
 *   pending    (disk_id, idx) -> (gen, file, base, written); deleted with the disk (explicitly,
 *              and by the foreign key as a second line).  written NULL: the file holds the
 *              whole chunk; else a bitmap of the 4 KiB blocks it holds, the others being the
 *              chunk base (a 32-byte hash), or zeros when base is NULL
 *   checkpoints (disk_id, name) -> (root, created, comment): a named version of a disk is just
 *              the root of its map, so creating, restoring and cloning copy 32 bytes */
#include "meta.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define META_SCHEMA_VERSION 4
#define META_DISK_SIZE_MAX  (UINT64_C(1) << 50) /* 1 PiB */

enum meta_stmt_id {
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_DISK_INSERT,
    STMT_DISK_GET,
    STMT_DISK_LIST,
    STMT_DISK_DELETE,
    STMT_DISK_SET_HEAD,
    STMT_PAGE_PUT,
    STMT_PAGE_GET,
    STMT_PENDING_PUT,
    STMT_PENDING_LIST,
    STMT_PENDING_DELETE_DISK,
    STMT_PENDING_DELETE_UPTO,
    STMT_PENDING_PUT_AFTER_HEAD,
    STMT_CHECKPOINT_INSERT,
    STMT_CHECKPOINT_GET,
    STMT_CHECKPOINT_LIST,
    STMT_CHECKPOINT_DELETE,
    STMT_COUNT
};

static const char *const meta_sql[STMT_COUNT] = {
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_DISK_INSERT] = "INSERT INTO disks (name, size, chunk_size, head_root, flush_gen, created)"
                         " VALUES (?1, ?2, ?3, ?4, 0, ?5)",
    [STMT_DISK_GET] = "SELECT id, name, size, chunk_size, head_root, flush_gen, created"
                      " FROM disks WHERE name = ?1",
    [STMT_DISK_LIST] = "SELECT id, name, size, chunk_size, head_root, flush_gen, created"
                       " FROM disks ORDER BY name",
    [STMT_DISK_DELETE] = "DELETE FROM disks WHERE id = ?1",
    [STMT_DISK_SET_HEAD] = "UPDATE disks SET head_root = ?2, flush_gen = ?3 WHERE id = ?1",
    [STMT_PAGE_PUT] = "INSERT OR IGNORE INTO map_pages (hash, data) VALUES (?1, ?2)",
    [STMT_PAGE_GET] = "SELECT data FROM map_pages WHERE hash = ?1",
    [STMT_PENDING_PUT] = "INSERT OR REPLACE INTO pending (disk_id, idx, gen, file, base, written)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [STMT_PENDING_LIST] = "SELECT idx, gen, file, base, written FROM pending WHERE disk_id = ?1"
                          " ORDER BY idx",
    [STMT_PENDING_DELETE_DISK] = "DELETE FROM pending WHERE disk_id = ?1",
    [STMT_PENDING_DELETE_UPTO] = "DELETE FROM pending WHERE disk_id = ?1 AND gen <= ?2",
    /* A row at or below the head's generation describes data a round already committed. */
    [STMT_PENDING_PUT_AFTER_HEAD] = "INSERT OR REPLACE INTO pending"
                                    " (disk_id, idx, gen, file, base, written)"
                                    " SELECT ?1, ?2, ?3, ?4, ?5, ?6"
                                    " WHERE ?3 > (SELECT flush_gen FROM disks WHERE id = ?1)",
    [STMT_CHECKPOINT_INSERT] =
        "INSERT INTO checkpoints (disk_id, name, root, created, comment, seq)"
        " VALUES (?1, ?2, ?3, ?4, ?5,"
        " (SELECT coalesce(max(seq), 0) + 1 FROM checkpoints WHERE disk_id = ?1))",
    [STMT_CHECKPOINT_GET] = "SELECT name, root, created, comment FROM checkpoints"
                            " WHERE disk_id = ?1 AND name = ?2",
    [STMT_CHECKPOINT_LIST] = "SELECT name, root, created, comment FROM checkpoints"
                             " WHERE disk_id = ?1 ORDER BY seq, created, name",
    [STMT_CHECKPOINT_DELETE] = "DELETE FROM checkpoints WHERE disk_id = ?1 AND name = ?2",
};

static const char meta_schema[] =
    "CREATE TABLE IF NOT EXISTS disks ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  size INTEGER NOT NULL,"
    "  chunk_size INTEGER NOT NULL,"
    "  head_root BLOB NOT NULL,"
    "  flush_gen INTEGER NOT NULL DEFAULT 0,"
    "  created INTEGER NOT NULL);"
    /* A rowid table on purpose: pages are up to 36 KiB, too big for a WITHOUT ROWID b-tree. */
    "CREATE TABLE IF NOT EXISTS map_pages ("
    "  hash BLOB PRIMARY KEY,"
    "  data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS pending ("
    "  disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL,"
    "  gen INTEGER NOT NULL,"
    "  file TEXT NOT NULL,"
    "  base BLOB,"
    "  written BLOB,"
    "  PRIMARY KEY (disk_id, idx)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS checkpoints ("
    "  disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  root BLOB NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  comment TEXT NOT NULL DEFAULT '',"
    "  seq INTEGER NOT NULL DEFAULT 0," /* creation order, even within one second */
    "  PRIMARY KEY (disk_id, name)) WITHOUT ROWID;"
    "PRAGMA user_version = 4;";

struct meta {
    sqlite3 *db;
    int lock_fd; /* DIR/lock with an exclusive flock, or -1 */
    char *dir;
    sqlite3_stmt *stmt[STMT_COUNT];
};

/* ---- errors and statements ------------------------------------------------------------------ */

static int meta_errno(int rc)
{
    switch (rc & 0xff) { /* the primary code of an extended one */
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CONSTRAINT:
        /* A missing parent row is "no such thing"; any other constraint is a duplicate. */
        return rc == SQLITE_CONSTRAINT_FOREIGNKEY ? -ENOENT : -EEXIST;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_CANTOPEN:
        return -ENOENT;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -EBADMSG;
    case SQLITE_TOOBIG:
        return -E2BIG;
    case SQLITE_MISUSE:
    case SQLITE_RANGE:
        return -EINVAL;
    default:
        return -EIO;
    }
}

/* Logs the connection's last error with what was being done, and returns it as -errno. */
static int meta_fail(struct meta *m, int rc, const char *what)
{
    log_error("meta", "%s: %s (%s)", what, sqlite3_errmsg(m->db), sqlite3_errstr(rc));
    return meta_errno(rc);
}

/* The cached statement, ready to bind (it was reset after its last use). */
static sqlite3_stmt *meta_stmt(struct meta *m, enum meta_stmt_id id, int *err)
{
    int rc;

    if (m->stmt[id] == NULL) {
        rc = sqlite3_prepare_v3(m->db, meta_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &m->stmt[id],
                                NULL);
        if (rc != SQLITE_OK) {
            *err = meta_fail(m, rc, meta_sql[id]);
            return NULL;
        }
    }
    return m->stmt[id];
}

static void meta_stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows. */
static int meta_exec_stmt(struct meta *m, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_DONE ? 0 : meta_fail(m, rc, what);

    meta_stmt_done(st);
    return r;
}

static int meta_exec_sql(struct meta *m, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(m->db, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK) {
        log_error("meta", "%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return meta_errno(rc);
    }
    return 0;
}

/* ---- transactions --------------------------------------------------------------------------- */

int meta_begin(struct meta *m)
{
    int r = 0;
    sqlite3_stmt *st;

    if (!sqlite3_get_autocommit(m->db)) {
        log_error("meta", "begin: a transaction is already open on this connection");
        return -EINVAL;
    }
    st = meta_stmt(m, STMT_BEGIN, &r);
    return st ? meta_exec_stmt(m, st, "begin") : r;
}

void meta_rollback(struct meta *m)
{
    int r = 0;
    sqlite3_stmt *st;

    /* SQLite may already have rolled back by itself (after SQLITE_FULL, SQLITE_IOERR, ...). */
    if (sqlite3_get_autocommit(m->db))
        return;
    st = meta_stmt(m, STMT_ROLLBACK, &r);
    if (st)
        meta_exec_stmt(m, st, "rollback");
}

int meta_commit(struct meta *m)
{
    int r = 0;
    sqlite3_stmt *st;

    if (sqlite3_get_autocommit(m->db)) {
        log_error("meta", "commit: no transaction is open");
        return -EINVAL;
    }
    st = meta_stmt(m, STMT_COMMIT, &r);
    if (st)
        r = meta_exec_stmt(m, st, "commit");
    /* A failed COMMIT may leave the transaction open; never leave the connection stuck in it. */
    if (r < 0)
        meta_rollback(m);
    return r;
}

/* For functions that change several rows: their own transaction when the caller has none,
 * otherwise the caller's.  *owned says which, for meta_auto_end. */
static int meta_auto_begin(struct meta *m, bool *owned)
{
    *owned = sqlite3_get_autocommit(m->db) != 0;
    return *owned ? meta_begin(m) : 0;
}

static int meta_auto_end(struct meta *m, bool owned, int r)
{
    if (!owned)
        return r;
    if (r < 0) {
        meta_rollback(m);
        return r;
    }
    return meta_commit(m);
}

/* ---- open and close ------------------------------------------------------------------------- */

static int meta_lock(struct meta *m)
{
    char path[PATH_MAX];
    int fd;

    if (snprintf(path, sizeof path, "%s/lock", m->dir) >= (int)sizeof path)
        return -ENAMETOOLONG;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        log_error("meta", "open: %s: %s", path, strerror(e));
        return -e;
    }
    /* flock belongs to this open file description: a second meta_open, even in the same
     * process, conflicts; a forked child shares it (but O_CLOEXEC drops it on exec). */
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK) {
            log_error("meta",
                      "%s is locked: another process (a running server?) holds the "
                      "metadata in %s",
                      path, m->dir);
            return -EBUSY;
        }
        log_error("meta", "flock: %s: %s", path, strerror(e));
        return -e;
    }
    m->lock_fd = fd;
    return 0;
}

static int meta_pragma_int(struct meta *m, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(m->db, sql, -1, &st, NULL), r;

    if (rc != SQLITE_OK)
        return meta_fail(m, rc, sql);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        r = 0;
    } else {
        r = meta_fail(m, rc, sql);
    }
    sqlite3_finalize(st);
    return r;
}

static int meta_check_version(struct meta *m, int64_t version)
{
    if (version > META_SCHEMA_VERSION) {
        log_error("meta",
                  "%s/wisp.db has schema version %lld, newer than this build's %d: it was "
                  "written by a newer Wisp; refusing to open it",
                  m->dir, (long long)version, META_SCHEMA_VERSION);
        return -EPROTONOSUPPORT;
    }
    if (version < 0) {
        log_error("meta", "%s/wisp.db has an invalid schema version %lld", m->dir,
                  (long long)version);
        return -EBADMSG;
    }
    return 0;
}

static int meta_schema_init(struct meta *m)
{
    int64_t version;
    int r;

    r = meta_pragma_int(m, "PRAGMA user_version", &version);
    if (r == 0)
        r = meta_check_version(m, version);
    if (r < 0 || version == META_SCHEMA_VERSION)
        return r;
    /* A new database (version 0) or an older one.  Check again under the write lock, since
     * another process may be creating or upgrading it at the same time. */
    r = meta_begin(m);
    if (r < 0)
        return r;
    r = meta_pragma_int(m, "PRAGMA user_version", &version);
    if (r == 0)
        r = meta_check_version(m, version);
    /* Version 2 made checkpoints without seq; CREATE TABLE IF NOT EXISTS will not add it. */
    if (r == 0 && version == 2)
        r = meta_exec_sql(m, "ALTER TABLE checkpoints ADD COLUMN seq INTEGER NOT NULL DEFAULT 0");
    /* Versions 1 to 3 made pending rows for whole-chunk files only: NULL written says so. */
    if (r == 0 && version >= 1 && version <= 3)
        r = meta_exec_sql(m, "ALTER TABLE pending ADD COLUMN base BLOB;"
                             "ALTER TABLE pending ADD COLUMN written BLOB");
    /* Every other statement of the schema is idempotent, so it upgrades versions 1 to 3. */
    if (r == 0 && version < META_SCHEMA_VERSION)
        r = meta_exec_sql(m, meta_schema);
    if (r < 0) {
        meta_rollback(m);
        return r;
    }
    return meta_commit(m);
}

static int meta_configure(struct meta *m)
{
    char *mode = NULL;
    sqlite3_stmt *st;
    int rc, r = 0;

    /* First, so that the statements below wait for a writer rather than fail. */
    rc = sqlite3_busy_timeout(m->db, 5000);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "busy_timeout");
    rc = sqlite3_prepare_v2(m->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "PRAGMA journal_mode = WAL");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
        mode = strdup((const char *)sqlite3_column_text(st, 0));
    else
        r = meta_fail(m, rc, "PRAGMA journal_mode = WAL");
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return r;
    /* SQLite answers with the mode it actually uses; WAL is what the replication reads. */
    if (mode == NULL || strcmp(mode, "wal") != 0) {
        log_error("meta", "%s/wisp.db: journal_mode is %s, not wal", m->dir, mode ? mode : "?");
        free(mode);
        return -EIO;
    }
    free(mode);
    r = meta_exec_sql(m, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON");
    if (r < 0)
        return r;
    return meta_schema_init(m);
}

int meta_open(const char *dir, bool exclusive, struct meta **out)
{
    char path[PATH_MAX];
    struct meta *m;
    int rc, r;

    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        log_error("meta", "mkdir: %s: %s", dir, strerror(e));
        return -e;
    }
    if (snprintf(path, sizeof path, "%s/wisp.db", dir) >= (int)sizeof path) {
        log_error("meta", "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    m = calloc(1, sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    m->lock_fd = -1;
    m->dir = strdup(dir);
    if (m->dir == NULL) {
        r = -ENOMEM;
        goto fail;
    }
    if (exclusive) {
        r = meta_lock(m);
        if (r < 0)
            goto fail;
    }
    /* NOMUTEX: the owner serialises use of a connection (meta.h), SQLite need not. */
    rc = sqlite3_open_v2(path, &m->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                             SQLITE_OPEN_EXRESCODE,
                         NULL);
    if (rc != SQLITE_OK) {
        log_error("meta", "open: %s: %s", path, m->db ? sqlite3_errmsg(m->db) : sqlite3_errstr(rc));
        r = meta_errno(rc);
        goto fail;
    }
    r = meta_configure(m);
    if (r < 0)
        goto fail;
    *out = m;
    return 0;

fail:
    meta_close(m);
    return r;
}

void meta_close(struct meta *m)
{
    if (m == NULL)
        return;
    if (m->db && !sqlite3_get_autocommit(m->db)) {
        log_warn("meta", "close: rolling back an open transaction");
        meta_rollback(m);
    }
    for (int i = 0; i < STMT_COUNT; i++)
        sqlite3_finalize(m->stmt[i]);
    if (m->db) {
        int rc = sqlite3_close(m->db);
        if (rc != SQLITE_OK)
            log_error("meta", "close: %s", sqlite3_errstr(rc));
    }
    /* Closing the descriptor releases the flock, after the database is closed. */
    if (m->lock_fd >= 0)
        close(m->lock_fd);
    free(m->dir);
    free(m);
}

struct sqlite3 *meta_sqlite(struct meta *m)
{
    return m->db;
}

const char *meta_dir(const struct meta *m)
{
    return m->dir;
}

/* ---- disks ---------------------------------------------------------------------------------- */

bool meta_disk_name_valid(const char *name, const char **why)
{
    size_t n = strlen(name);
    const char *dummy;

    if (why == NULL)
        why = &dummy;
    if (n == 0) {
        *why = "a disk name cannot be empty";
        return false;
    }
    if (n > META_DISK_NAME_MAX) {
        *why = "a disk name is at most 128 bytes";
        return false;
    }
    if (name[0] == '.' || name[0] == '-') {
        *why = "a disk name cannot start with '.' or '-'";
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '_' || c == '-')
            continue;
        *why = c == '@' ? "'@' in a name is reserved for checkpoint exports (disk@checkpoint)"
                        : "a disk name is made of A-Z, a-z, 0-9, '.', '_' and '-'";
        return false;
    }
    return true;
}

static int meta_check_name(const char *op, const char *name)
{
    const char *why;

    if (name == NULL || !meta_disk_name_valid(name, &why)) {
        log_error("meta", "%s: invalid disk name: %s", op, name ? why : "none given");
        return -EINVAL;
    }
    return 0;
}

/* Fills d from a row of (id, name, size, chunk_size, head_root, flush_gen, created), checking
 * what the rest of Wisp relies on, since the database is input too. */
static int meta_disk_from_row(sqlite3_stmt *st, struct meta_disk *d)
{
    const unsigned char *name = sqlite3_column_text(st, 1);
    int name_len = sqlite3_column_bytes(st, 1);
    const void *root = sqlite3_column_blob(st, 4);
    int root_len = sqlite3_column_bytes(st, 4);
    int64_t size = sqlite3_column_int64(st, 2), chunk_size = sqlite3_column_int64(st, 3);

    memset(d, 0, sizeof *d);
    d->id = sqlite3_column_int64(st, 0);
    if (name == NULL || name_len <= 0 || name_len > META_DISK_NAME_MAX ||
        root_len != CHUNK_HASH_LEN || chunk_size < META_CHUNK_SIZE_MIN ||
        chunk_size > META_CHUNK_SIZE_MAX || (chunk_size & (chunk_size - 1)) != 0 || size <= 0 ||
        (uint64_t)size > META_DISK_SIZE_MAX || size % chunk_size != 0) {
        log_error("meta", "disk row %lld is malformed", (long long)d->id);
        return -EBADMSG;
    }
    memcpy(d->name, name, (size_t)name_len);
    d->name[name_len] = '\0';
    d->size = (uint64_t)size;
    d->chunk_size = (uint32_t)chunk_size;
    memcpy(d->head_root.b, root, CHUNK_HASH_LEN);
    d->flush_gen = (uint64_t)sqlite3_column_int64(st, 5);
    d->created = (time_t)sqlite3_column_int64(st, 6);
    return 0;
}

int meta_disk_create(struct meta *m, const char *name, uint64_t size, uint32_t chunk_size,
                     struct meta_disk *out)
{
    static const struct chunk_hash zero;
    sqlite3_stmt *st;
    time_t now = time(NULL);
    int r = 0, rc;

    r = meta_check_name("create", name);
    if (r < 0)
        return r;
    if (chunk_size < META_CHUNK_SIZE_MIN || chunk_size > META_CHUNK_SIZE_MAX ||
        (chunk_size & (chunk_size - 1)) != 0) {
        log_error("meta", "create %s: chunk size %u is not a power of two from 64 KiB to 4 MiB",
                  name, chunk_size);
        return -EINVAL;
    }
    if (size == 0 || size > META_DISK_SIZE_MAX) {
        log_error("meta", "create %s: size %llu is not between 1 byte and 1 PiB", name,
                  (unsigned long long)size);
        return -EINVAL;
    }
    /* 1 PiB is a multiple of every chunk size, so rounding up stays within it. */
    size = (size + chunk_size - 1) / chunk_size * chunk_size;

    st = meta_stmt(m, STMT_DISK_INSERT, &r);
    if (st == NULL)
        return r;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
    sqlite3_bind_int64(st, 3, chunk_size);
    sqlite3_bind_blob(st, 4, zero.b, CHUNK_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)now);
    rc = sqlite3_step(st);
    meta_stmt_done(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        log_error("meta", "create %s: a disk of that name exists", name);
        return -EEXIST;
    }
    if (rc != SQLITE_DONE)
        return meta_fail(m, rc, "create disk");
    if (out) {
        memset(out, 0, sizeof *out);
        out->id = sqlite3_last_insert_rowid(m->db);
        strcpy(out->name, name); /* length checked by meta_disk_name_valid */
        out->size = size;
        out->chunk_size = chunk_size;
        out->flush_gen = 0;
        out->created = now;
    }
    return 0;
}

int meta_disk_get(struct meta *m, const char *name, struct meta_disk *out)
{
    sqlite3_stmt *st;
    int r = 0, rc;

    r = meta_check_name("get", name);
    if (r < 0)
        return r;
    st = meta_stmt(m, STMT_DISK_GET, &r);
    if (st == NULL)
        return r;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        r = meta_disk_from_row(st, out);
    else if (rc == SQLITE_DONE)
        r = -ENOENT; /* not an error worth a log line: callers probe */
    else
        r = meta_fail(m, rc, "get disk");
    meta_stmt_done(st);
    return r;
}

int meta_disk_delete(struct meta *m, const char *name)
{
    struct meta_disk d;
    sqlite3_stmt *st;
    bool owned;
    int r;

    r = meta_check_name("delete", name);
    if (r < 0)
        return r;
    r = meta_auto_begin(m, &owned);
    if (r < 0)
        return r;
    r = meta_disk_get(m, name, &d);
    if (r == -EBADMSG)
        r = 0; /* a malformed row can still be deleted; d.id is set */
    if (r == 0 && (st = meta_stmt(m, STMT_PENDING_DELETE_DISK, &r)) != NULL) {
        sqlite3_bind_int64(st, 1, d.id);
        r = meta_exec_stmt(m, st, "delete pending rows");
    }
    if (r == 0 && (st = meta_stmt(m, STMT_DISK_DELETE, &r)) != NULL) {
        sqlite3_bind_int64(st, 1, d.id);
        r = meta_exec_stmt(m, st, "delete disk");
    }
    return meta_auto_end(m, owned, r);
}

int meta_disk_list(struct meta *m, int (*fn)(const struct meta_disk *d, void *opaque), void *opaque)
{
    struct meta_disk *disks = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *st;
    int r = 0, rc;

    st = meta_stmt(m, STMT_DISK_LIST, &r);
    if (st == NULL)
        return r;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct meta_disk *nd = realloc(disks, ncap * sizeof *nd);
            if (nd == NULL) {
                r = -ENOMEM;
                break;
            }
            disks = nd;
            cap = ncap;
        }
        r = meta_disk_from_row(st, &disks[n]);
        if (r < 0)
            break;
        n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = meta_fail(m, rc, "list disks");
    meta_stmt_done(st);
    for (size_t i = 0; i < n && r == 0; i++)
        r = fn(&disks[i], opaque);
    free(disks);
    return r;
}

/* ---- chunk maps ----------------------------------------------------------------------------- */

static int meta_page_sink(const struct chunk_hash *page_hash, const void *page, size_t len,
                          void *opaque)
{
    struct meta *m = opaque;
    sqlite3_stmt *st;
    int r = 0;

    st = meta_stmt(m, STMT_PAGE_PUT, &r);
    if (st == NULL)
        return r;
    sqlite3_bind_blob(st, 1, page_hash->b, CHUNK_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, page, (int)len, SQLITE_STATIC);
    return meta_exec_stmt(m, st, "store map page");
}

static int meta_page_source(const struct chunk_hash *page_hash, void **page, size_t *len,
                            void *opaque)
{
    struct meta *m = opaque;
    sqlite3_stmt *st;
    int r = 0, rc;

    st = meta_stmt(m, STMT_PAGE_GET, &r);
    if (st == NULL)
        return r;
    sqlite3_bind_blob(st, 1, page_hash->b, CHUNK_HASH_LEN, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int n = sqlite3_column_bytes(st, 0);
        const void *data = sqlite3_column_blob(st, 0);
        /* malloc(n ? n : 1): an empty blob is returned as a 1-byte buffer of length 0, which
         * chunk_map_decode then rejects as a malformed page. */
        *page = malloc(n > 0 ? (size_t)n : 1);
        if (*page == NULL) {
            r = -ENOMEM;
        } else {
            if (n > 0)
                memcpy(*page, data, (size_t)n);
            *len = (size_t)n;
        }
    } else if (rc == SQLITE_DONE) {
        r = -ENOENT; /* chunk_map_decode logs which page */
    } else {
        r = meta_fail(m, rc, "read map page");
    }
    meta_stmt_done(st);
    return r;
}

int meta_map_load(struct meta *m, const struct meta_disk *d, struct chunk_map **out)
{
    int r;

    if (d->chunk_size == 0) {
        log_error("meta", "load map of %s: chunk size 0", d->name);
        return -EINVAL;
    }
    r = chunk_map_decode(&d->head_root, d->size / d->chunk_size, meta_page_source, m, out);
    if (r < 0)
        log_error("meta", "load map of %s: %s", d->name, strerror(-r));
    return r;
}

int meta_head_commit(struct meta *m, int64_t disk_id, struct chunk_map *map, uint64_t gen,
                     struct chunk_hash *root_out)
{
    struct chunk_hash root;
    sqlite3_stmt *st;
    bool owned;
    int r;

    if (gen > INT64_MAX) {
        log_error("meta", "head commit: generation %llu out of range", (unsigned long long)gen);
        return -ERANGE;
    }
    r = meta_auto_begin(m, &owned);
    if (r < 0)
        return r;
    r = chunk_map_encode(map, meta_page_sink, m, &root);
    if (r < 0) {
        /* The map kept its changes (chunk_map_encode is all or nothing). */
        log_error("meta", "head commit of disk %lld: encoding the map: %s", (long long)disk_id,
                  strerror(-r));
        return meta_auto_end(m, owned, r);
    }
    if ((st = meta_stmt(m, STMT_DISK_SET_HEAD, &r)) != NULL) {
        sqlite3_bind_int64(st, 1, disk_id);
        sqlite3_bind_blob(st, 2, root.b, CHUNK_HASH_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)gen);
        r = meta_exec_stmt(m, st, "set head");
        if (r == 0 && sqlite3_changes(m->db) == 0) {
            log_error("meta", "head commit: no disk with id %lld", (long long)disk_id);
            r = -ENOENT;
        }
    }
    if (r == 0 && (st = meta_stmt(m, STMT_PENDING_DELETE_UPTO, &r)) != NULL) {
        sqlite3_bind_int64(st, 1, disk_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)gen);
        r = meta_exec_stmt(m, st, "delete committed pending rows");
    }
    r = meta_auto_end(m, owned, r);
    if (r < 0) {
        /* The map believes its pages are stored, but they go with the rolled-back (or, if the
         * caller owns the transaction, soon rolled-back) transaction. */
        chunk_map_forget_pages(map);
        return r;
    }
    if (root_out)
        *root_out = root;
    return 0;
}

/* ---- pending rows --------------------------------------------------------------------------- */

static bool meta_pending_valid(const struct meta_pending *p)
{
    return p->idx <= INT64_MAX && p->gen <= INT64_MAX && p->file != NULL &&
           p->written_len <= META_PENDING_WRITTEN_MAX &&
           (p->written != NULL || p->written_len == 0);
}

static void meta_pending_bind(sqlite3_stmt *st, int64_t disk_id, const struct meta_pending *p)
{
    sqlite3_bind_int64(st, 1, disk_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)p->idx);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)p->gen);
    sqlite3_bind_text(st, 4, p->file, -1, SQLITE_STATIC);
    if (p->base)
        sqlite3_bind_blob(st, 5, p->base->b, CHUNK_HASH_LEN, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 5);
    if (p->written)
        sqlite3_bind_blob(st, 6, p->written, (int)p->written_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
}

int meta_pending_put(struct meta *m, int64_t disk_id, const struct meta_pending *rows, size_t n)
{
    sqlite3_stmt *st;
    bool owned;
    int r;

    r = meta_auto_begin(m, &owned);
    if (r < 0)
        return r;
    st = meta_stmt(m, STMT_PENDING_PUT, &r);
    for (size_t i = 0; i < n && st != NULL && r == 0; i++) {
        if (!meta_pending_valid(&rows[i])) {
            log_error("meta", "pending row for index %llu is out of range",
                      (unsigned long long)rows[i].idx);
            r = -EINVAL;
            break;
        }
        meta_pending_bind(st, disk_id, &rows[i]);
        r = meta_exec_stmt(m, st, "put pending row");
        /* The foreign key turns a wrong disk_id into a constraint error. */
        if (r == -EEXIST)
            r = -ENOENT;
    }
    return meta_auto_end(m, owned, r);
}

struct meta_pending_row {
    uint64_t idx;
    uint64_t gen;
    char *file;
    bool has_base;
    struct chunk_hash base;
    bool has_written;
    uint8_t written[META_PENDING_WRITTEN_MAX];
    size_t written_len;
};

int meta_pending_list(struct meta *m, int64_t disk_id,
                      int (*fn)(const struct meta_pending *p, void *opaque), void *opaque)
{
    struct meta_pending_row *rows = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *st;
    int r = 0, rc;

    st = meta_stmt(m, STMT_PENDING_LIST, &r);
    if (st == NULL)
        return r;
    sqlite3_bind_int64(st, 1, disk_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *file = sqlite3_column_text(st, 2);
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct meta_pending_row *nr = realloc(rows, ncap * sizeof *nr);
            if (nr == NULL) {
                r = -ENOMEM;
                break;
            }
            rows = nr;
            cap = ncap;
        }
        struct meta_pending_row *row = &rows[n];
        memset(row, 0, sizeof *row);
        row->idx = (uint64_t)sqlite3_column_int64(st, 0);
        row->gen = (uint64_t)sqlite3_column_int64(st, 1);
        int base_len = sqlite3_column_bytes(st, 3), written_len = sqlite3_column_bytes(st, 4);
        row->has_base = sqlite3_column_type(st, 3) != SQLITE_NULL;
        row->has_written = sqlite3_column_type(st, 4) != SQLITE_NULL;
        if ((row->has_base && base_len != CHUNK_HASH_LEN) ||
            (row->has_written && (written_len < 1 || written_len > META_PENDING_WRITTEN_MAX))) {
            log_error("meta",
                      "%s/wisp.db: the pending row for chunk %llu is damaged (a %d-byte base, "
                      "a %d-byte bitmap)",
                      m->dir, (unsigned long long)row->idx, base_len, written_len);
            r = -EBADMSG;
            break;
        }
        if (row->has_base)
            memcpy(row->base.b, sqlite3_column_blob(st, 3), CHUNK_HASH_LEN);
        if (row->has_written) {
            memcpy(row->written, sqlite3_column_blob(st, 4), (size_t)written_len);
            row->written_len = (size_t)written_len;
        }
        row->file = strdup(file ? (const char *)file : "");
        if (row->file == NULL) {
            r = -ENOMEM;
            break;
        }
        n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = meta_fail(m, rc, "list pending rows");
    meta_stmt_done(st);
    for (size_t i = 0; i < n && r == 0; i++) {
        struct meta_pending p = {.idx = rows[i].idx,
                                 .gen = rows[i].gen,
                                 .file = rows[i].file,
                                 .base = rows[i].has_base ? &rows[i].base : NULL,
                                 .written = rows[i].has_written ? rows[i].written : NULL,
                                 .written_len = rows[i].written_len};
        r = fn(&p, opaque);
    }
    for (size_t i = 0; i < n; i++)
        free(rows[i].file);
    free(rows);
    return r;
}

/* ---- the pieces of an upload round's commit (meta.h) ---------------------------------------- */

int meta_pages_put(struct meta *m, const struct meta_page *pages, size_t n)
{
    int r = 0;

    for (size_t i = 0; i < n && r == 0; i++)
        r = meta_page_sink(&pages[i].hash, pages[i].data, pages[i].len, m);
    return r;
}

int meta_head_set(struct meta *m, int64_t disk_id, const struct chunk_hash *root, uint64_t gen)
{
    sqlite3_stmt *st;
    int r = 0;

    if (gen > INT64_MAX)
        return -ERANGE;
    if ((st = meta_stmt(m, STMT_DISK_SET_HEAD, &r)) == NULL)
        return r;
    sqlite3_bind_int64(st, 1, disk_id);
    sqlite3_bind_blob(st, 2, root->b, CHUNK_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)gen);
    r = meta_exec_stmt(m, st, "set head");
    if (r == 0 && sqlite3_changes(m->db) == 0) {
        log_error("meta", "set head: no disk with id %lld", (long long)disk_id);
        r = -ENOENT;
    }
    if (r == 0 && (st = meta_stmt(m, STMT_PENDING_DELETE_UPTO, &r)) != NULL) {
        sqlite3_bind_int64(st, 1, disk_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)gen);
        r = meta_exec_stmt(m, st, "delete committed pending rows");
    }
    return r;
}

int meta_pending_put_after_head(struct meta *m, int64_t disk_id, const struct meta_pending *rows,
                                size_t n)
{
    sqlite3_stmt *st;
    int r = 0;

    st = meta_stmt(m, STMT_PENDING_PUT_AFTER_HEAD, &r);
    for (size_t i = 0; i < n && st != NULL && r == 0; i++) {
        if (!meta_pending_valid(&rows[i]))
            return -EINVAL;
        meta_pending_bind(st, disk_id, &rows[i]);
        r = meta_exec_stmt(m, st, "put pending row");
    }
    return r;
}

/* ---- checkpoints (meta.h) ---------------------------------------------------------------- */

static int meta_checkpoint_from_row(sqlite3_stmt *st, struct meta_checkpoint *c)
{
    const unsigned char *name = sqlite3_column_text(st, 0);
    const unsigned char *comment = sqlite3_column_text(st, 3);

    memset(c, 0, sizeof *c);
    if (!name || sqlite3_column_bytes(st, 1) != CHUNK_HASH_LEN)
        return -EBADMSG;
    snprintf(c->name, sizeof c->name, "%s", name);
    memcpy(c->root.b, sqlite3_column_blob(st, 1), CHUNK_HASH_LEN);
    c->created = (time_t)sqlite3_column_int64(st, 2);
    snprintf(c->comment, sizeof c->comment, "%s", comment ? (const char *)comment : "");
    return 0;
}

int meta_checkpoint_create(struct meta *m, int64_t disk_id, const char *name,
                           const struct chunk_hash *root, const char *comment)
{
    const char *why;
    sqlite3_stmt *st;
    int r = 0;

    if (!meta_disk_name_valid(name, &why)) {
        log_error("meta", "checkpoint '%s': %s", name, why);
        return -EINVAL;
    }
    if (comment && strlen(comment) > META_COMMENT_MAX) {
        log_error("meta", "checkpoint '%s': the comment is longer than %d bytes", name,
                  META_COMMENT_MAX);
        return -EINVAL;
    }
    if ((st = meta_stmt(m, STMT_CHECKPOINT_INSERT, &r)) == NULL)
        return r;
    sqlite3_bind_int64(st, 1, disk_id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, root->b, CHUNK_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
    sqlite3_bind_text(st, 5, comment ? comment : "", -1, SQLITE_STATIC);
    return meta_exec_stmt(m, st, "create checkpoint"); /* a duplicate gives -EEXIST */
}

int meta_checkpoint_get(struct meta *m, int64_t disk_id, const char *name,
                        struct meta_checkpoint *out)
{
    sqlite3_stmt *st;
    int r = 0, rc;

    if ((st = meta_stmt(m, STMT_CHECKPOINT_GET, &r)) == NULL)
        return r;
    sqlite3_bind_int64(st, 1, disk_id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        r = meta_checkpoint_from_row(st, out);
    else if (rc == SQLITE_DONE)
        r = -ENOENT;
    else
        r = meta_fail(m, rc, "get checkpoint");
    meta_stmt_done(st);
    return r;
}

int meta_checkpoint_list(struct meta *m, int64_t disk_id,
                         int (*fn)(const struct meta_checkpoint *c, void *opaque), void *opaque)
{
    struct meta_checkpoint *rows = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *st;
    int r = 0, rc;

    if ((st = meta_stmt(m, STMT_CHECKPOINT_LIST, &r)) == NULL)
        return r;
    sqlite3_bind_int64(st, 1, disk_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct meta_checkpoint *nr = realloc(rows, ncap * sizeof *nr);
            if (!nr) {
                r = -ENOMEM;
                break;
            }
            rows = nr;
            cap = ncap;
        }
        r = meta_checkpoint_from_row(st, &rows[n]);
        if (r < 0)
            break;
        n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = meta_fail(m, rc, "list checkpoints");
    meta_stmt_done(st);
    for (size_t i = 0; i < n && r == 0; i++)
        r = fn(&rows[i], opaque);
    free(rows);
    return r;
}

int meta_checkpoint_delete(struct meta *m, int64_t disk_id, const char *name)
{
    sqlite3_stmt *st;
    int r = 0;

    if ((st = meta_stmt(m, STMT_CHECKPOINT_DELETE, &r)) == NULL)
        return r;
    sqlite3_bind_int64(st, 1, disk_id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    r = meta_exec_stmt(m, st, "delete checkpoint");
    if (r == 0 && sqlite3_changes(m->db) == 0)
        r = -ENOENT;
    return r;
}

int meta_pending_clear(struct meta *m, int64_t disk_id)
{
    sqlite3_stmt *st;
    int r = 0;

    if ((st = meta_stmt(m, STMT_PENDING_DELETE_DISK, &r)) == NULL)
        return r;
    sqlite3_bind_int64(st, 1, disk_id);
    return meta_exec_stmt(m, st, "clear pending rows");
}

/* The table is made on first use (not in meta_schema, so the schema version and the replicas'
 * readers stay as they are); CREATE TABLE IF NOT EXISTS is a no-op once it exists.
 *   write_logs (disk_id, log_id, unuploaded)
 * unuploaded: the log may hold a flush the head does not have (set before such a flush is
 * acknowledged, cleared by the commit that leaves nothing behind).  Offline tools read it. */
static int meta_write_logs_table(struct meta *m)
{
    return meta_exec_sql(m, "CREATE TABLE IF NOT EXISTS write_logs ("
                            "  disk_id INTEGER PRIMARY KEY REFERENCES disks(id) ON DELETE CASCADE,"
                            "  log_id BLOB NOT NULL,"
                            "  unuploaded INTEGER NOT NULL DEFAULT 0)");
}

/* 1 if the table made on first use exists, 0 if not. */
static int meta_table_exists(struct meta *m, const char *table)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        m->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "look for a table");
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : meta_fail(m, rc, "look for a table");
}

static int meta_write_logs_exist(struct meta *m)
{
    return meta_table_exists(m, "write_logs");
}

/* Runs sql with ?1 = disk_id (and ?2 = value); no rows. */
static int meta_write_logs_exec(struct meta *m, const char *sql, int64_t disk_id, int64_t value)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(m->db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return meta_fail(m, rc, sql);
    sqlite3_bind_int64(st, 1, disk_id);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, value);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : meta_fail(m, rc, sql);
}

int meta_write_log_id(struct meta *m, int64_t disk_id, uint8_t out[META_WRITE_LOG_ID_LEN])
{
    sqlite3_stmt *st = NULL;
    uint8_t fresh[META_WRITE_LOG_ID_LEN];
    int rc, r;

    r = meta_write_logs_table(m);
    if (r < 0)
        return r;
    if (getrandom(fresh, sizeof fresh, 0) != (ssize_t)sizeof fresh)
        return -EIO;
    /* Insert a fresh id unless there is one, then read whichever is there. */
    rc = sqlite3_prepare_v2(
        m->db, "INSERT OR IGNORE INTO write_logs (disk_id, log_id) VALUES (?1, ?2)", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "prepare write log id insert");
    sqlite3_bind_int64(st, 1, disk_id);
    sqlite3_bind_blob(st, 2, fresh, sizeof fresh, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return meta_fail(m, rc, "insert write log id");
    rc = sqlite3_prepare_v2(m->db, "SELECT log_id FROM write_logs WHERE disk_id = ?1", -1, &st,
                            NULL);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "prepare write log id select");
    sqlite3_bind_int64(st, 1, disk_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == META_WRITE_LOG_ID_LEN) {
        memcpy(out, sqlite3_column_blob(st, 0), META_WRITE_LOG_ID_LEN);
        r = 0;
    } else {
        r = rc == SQLITE_ROW || rc == SQLITE_DONE ? -EBADMSG
                                                  : meta_fail(m, rc, "read write log id");
    }
    sqlite3_finalize(st);
    return r;
}

int meta_write_log_set_unuploaded(struct meta *m, int64_t disk_id, bool unuploaded)
{
    int r = meta_write_logs_table(m);
    return r < 0
               ? r
               : meta_write_logs_exec(m, "UPDATE write_logs SET unuploaded = ?2 WHERE disk_id = ?1",
                                      disk_id, unuploaded ? 1 : 0);
}

int meta_write_log_unuploaded(struct meta *m, int64_t disk_id)
{
    sqlite3_stmt *st = NULL;
    int r = meta_write_logs_exist(m), rc;

    if (r <= 0)
        return r;
    rc = sqlite3_prepare_v2(m->db, "SELECT unuploaded FROM write_logs WHERE disk_id = ?1", -1, &st,
                            NULL);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "prepare write log state");
    sqlite3_bind_int64(st, 1, disk_id);
    rc = sqlite3_step(st);
    r = rc == SQLITE_ROW    ? sqlite3_column_int64(st, 0) != 0
        : rc == SQLITE_DONE ? 0
                            : meta_fail(m, rc, "read write log state");
    sqlite3_finalize(st);
    return r;
}

int meta_write_log_forget(struct meta *m, int64_t disk_id)
{
    int r = meta_write_logs_exist(m);
    if (r > 0)
        r = meta_write_logs_exec(m, "DELETE FROM write_logs WHERE disk_id = ?1", disk_id, 0);
    if (r >= 0)
        r = meta_write_log_shipped_drop(m, disk_id, UINT64_MAX);
    return r;
}

/* Made on first use, like write_logs:
 *   write_log_shipped (seq, disk_id, max_gen, bytes)
 * seq orders a disk's rows (they are its log's bytes in order, with no gap or overlap: the
 * server ships from where the last row or commit ended); max_gen is the gen of the FLUSH that
 * ends bytes.  Stored as a signed integer: gens stay far below 2^63. */
static int meta_write_log_shipped_table(struct meta *m)
{
    return meta_exec_sql(
        m, "CREATE TABLE IF NOT EXISTS write_log_shipped ("
           "  seq INTEGER PRIMARY KEY,"
           "  disk_id INTEGER NOT NULL REFERENCES disks(id) ON DELETE CASCADE,"
           "  max_gen INTEGER NOT NULL,"
           "  bytes BLOB NOT NULL);"
           "CREATE INDEX IF NOT EXISTS write_log_shipped_disk ON write_log_shipped (disk_id, seq)");
}

int meta_write_log_ship(struct meta *m, int64_t disk_id, uint64_t max_gen, const void *bytes,
                        size_t len)
{
    sqlite3_stmt *st = NULL;
    int rc, r = meta_write_log_shipped_table(m);

    if (r < 0)
        return r;
    if (len > INT_MAX || max_gen > INT64_MAX)
        return -EINVAL;
    rc = sqlite3_prepare_v2(m->db,
                            "INSERT INTO write_log_shipped (disk_id, max_gen, bytes) "
                            "VALUES (?1, ?2, ?3)",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "prepare shipped log insert");
    sqlite3_bind_int64(st, 1, disk_id);
    sqlite3_bind_int64(st, 2, (int64_t)max_gen);
    sqlite3_bind_blob(st, 3, bytes, (int)len, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : meta_fail(m, rc, "insert shipped log");
}

static int meta_write_log_shipped_exist(struct meta *m)
{
    return meta_table_exists(m, "write_log_shipped");
}

int meta_write_log_shipped_drop(struct meta *m, int64_t disk_id, uint64_t committed_gen)
{
    int r = meta_write_log_shipped_exist(m);
    if (r <= 0)
        return r;
    return meta_write_logs_exec(
        m, "DELETE FROM write_log_shipped WHERE disk_id = ?1 AND max_gen <= ?2", disk_id,
        committed_gen > INT64_MAX ? INT64_MAX : (int64_t)committed_gen);
}

int meta_write_log_shipped_any(struct meta *m, int64_t disk_id)
{
    sqlite3_stmt *st = NULL;
    int rc, r = meta_write_log_shipped_exist(m);

    if (r <= 0)
        return r;
    rc = sqlite3_prepare_v2(m->db, "SELECT 1 FROM write_log_shipped WHERE disk_id = ?1 LIMIT 1", -1,
                            &st, NULL);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "prepare shipped log lookup");
    sqlite3_bind_int64(st, 1, disk_id);
    rc = sqlite3_step(st);
    r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : meta_fail(m, rc, "look up shipped log");
    sqlite3_finalize(st);
    return r;
}

int meta_write_log_shipped_each(struct meta *m, int64_t disk_id,
                                int (*fn)(const void *bytes, size_t len, uint64_t max_gen,
                                          void *opaque),
                                void *opaque)
{
    sqlite3_stmt *st = NULL;
    int rc, r = meta_write_log_shipped_exist(m);

    if (r <= 0)
        return r;
    r = 0;
    rc = sqlite3_prepare_v2(m->db,
                            "SELECT bytes, max_gen FROM write_log_shipped WHERE disk_id = ?1 "
                            "ORDER BY seq",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return meta_fail(m, rc, "prepare shipped log select");
    sqlite3_bind_int64(st, 1, disk_id);
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        r = fn(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
               (uint64_t)sqlite3_column_int64(st, 1), opaque);
    if (r == 0 && rc != SQLITE_DONE)
        r = meta_fail(m, rc, "read shipped log");
    sqlite3_finalize(st);
    return r;
}

/* ---- read snapshots and raw pages, for walks over every version (meta_refs.c) -------------- */

int meta_snapshot_begin(struct meta *m)
{
    int r;

    if (!sqlite3_get_autocommit(m->db)) {
        log_error("meta", "snapshot: a transaction is already open on this connection");
        return -EINVAL;
    }
    /* A deferred transaction takes its WAL snapshot at its first read: read now, so that
     * every later statement sees the database as of this call. */
    r = meta_exec_sql(m, "BEGIN DEFERRED; SELECT count(*) FROM disks");
    if (r < 0)
        meta_rollback(m);
    return r;
}

void meta_snapshot_end(struct meta *m)
{
    /* A read transaction has nothing to commit: ending it only releases the snapshot. */
    meta_rollback(m);
}

int meta_page_get(struct meta *m, const struct chunk_hash *hash, void **page, size_t *len)
{
    return meta_page_source(hash, page, len, m);
}
