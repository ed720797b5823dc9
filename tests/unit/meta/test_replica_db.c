/* test_replica_db.c: replica_start_db and replica_restore_db (meta/replica.h), the replication
 * of any WAL database under its own store prefix (wispd's account databases use it), on a
 * file:// store, without a server.
 *
 * A plain SQLite database (not the metadata) takes commits, shipped now and then; restored
 * into a new path, its rows equal those at the last shipment (never later ones); every object
 * is under the prefix, none under meta/; a restart goes on with higher sequence numbers and
 * restores; an existing target is -EEXIST, an empty prefix -ENOENT, a prefix without a
 * trailing '/' -EINVAL; a damaged snapshot is -EBADMSG with nothing installed. */
#include "log.h"
#include "meta_test.h"
#include "replica.h"
#include "store.h"

#include <errno.h>
#include <ftw.h>
#include <glib.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PREFIX "accounts/unit/db/"

static char test_dir[PATH_MAX];
static struct store *st;
static pthread_mutex_t db_lock = PTHREAD_MUTEX_INITIALIZER;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void test_cleanup(void)
{
    if (test_dir[0] && !getenv("WISP_TEST_KEEP"))
        nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static sqlite3 *open_db(const char *path)
{
    sqlite3 *db = NULL;
    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY "
                         "KEY, v TEXT NOT NULL);",
                         NULL, NULL, NULL) == SQLITE_OK);
    return db;
}

/* One committed row, under the lock the replica checkpoints under. */
static void insert(sqlite3 *db, int k)
{
    char *sql = g_strdup_printf("INSERT INTO t (k, v) VALUES (%d, 'row-%d')", k, k);
    pthread_mutex_lock(&db_lock);
    REQUIRE(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    pthread_mutex_unlock(&db_lock);
    g_free(sql);
}

/* "k:v," for every row, in order (g_free it). */
static char *rows(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    GString *out = g_string_new(NULL);
    REQUIRE(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    REQUIRE(sqlite3_prepare_v2(db, "SELECT k, v FROM t ORDER BY k", -1, &s, NULL) == SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW)
        g_string_append_printf(out, "%d:%s,", sqlite3_column_int(s, 0),
                               (const char *)sqlite3_column_text(s, 1));
    sqlite3_finalize(s);
    sqlite3_close(db);
    return g_string_free(out, FALSE);
}

static int count_key(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    (*(unsigned *)opaque)++;
    return 0;
}

static unsigned count_under(const char *prefix)
{
    unsigned n = 0;
    REQUIRE(store_list(st, prefix, count_key, &n) == 0);
    return n;
}

int main(void)
{
    struct replica_options ro = {.compact_bytes = 1 << 20};
    struct replica_restore_info info;
    struct replica_stats rs;
    struct replica *rep;
    char src[PATH_MAX + 16], url[PATH_MAX + 16], store_dir[PATH_MAX + 8], dst[PATH_MAX + 16];
    unsigned restores = 0;

    wisp_log_init();
    snprintf(test_dir, sizeof test_dir, "%s/wisp-replica-db-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    REQUIRE(mkdtemp(test_dir) != NULL);
    snprintf(store_dir, sizeof store_dir, "%s/store", test_dir);
    REQUIRE(mkdir(store_dir, 0700) == 0);
    snprintf(url, sizeof url, "file://%s", store_dir);
    REQUIRE(store_open(url, NULL, &st) == 0);
    snprintf(src, sizeof src, "%s/account.db", test_dir);

    /* Nothing in the store yet; a prefix must end in '/'. */
    CHECK(replica_exists_at(st, PREFIX) == 0);
    snprintf(dst, sizeof dst, "%s/r%u.db", test_dir, restores++);
    CHECK(replica_restore_db(st, PREFIX, dst, &info) == -ENOENT);
    CHECK(access(dst, F_OK) < 0);
    sqlite3 *db = open_db(src);
    CHECK(replica_start_db(db, src, &db_lock, st, "accounts/unit", "unit", &ro, &rep) == -EINVAL);
    REQUIRE(replica_start_db(db, src, &db_lock, st, PREFIX, "unit", &ro, &rep) == 0);

    /* Commits, shipped every few rows; a restore shows exactly the last shipment. */
    char *want = NULL;
    int k = 0;
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < 1 + round * 20; i++)
            insert(db, ++k);
        REQUIRE(replica_ship(rep) == 0);
        g_free(want);
        want = rows(src);
        insert(db, ++k); /* after the shipment: must not show up */
        snprintf(dst, sizeof dst, "%s/r%u.db", test_dir, restores++);
        REQUIRE(replica_restore_db(st, PREFIX, dst, &info) == 0);
        char *got = rows(dst);
        CHECK(strcmp(want, got) == 0);
        g_free(got);
    }
    replica_get_stats(rep, &rs);
    printf("%llu commits, %llu snapshots, %llu segments\n", (unsigned long long)rs.commits,
           (unsigned long long)rs.snapshots, (unsigned long long)rs.segments);
    CHECK(rs.snapshots >= 2); /* compaction at 1 MiB turned generations over */
    CHECK(rs.segments >= 4);  /* and between them, segments */
    CHECK(replica_exists_at(st, PREFIX) == 1);
    CHECK(count_under(PREFIX) > 0);
    CHECK(count_under("meta/") == 0);

    /* A restart: stop ships the rest; the new start goes on past every number. */
    uint64_t old_seq = rs.seq;
    replica_stop(rep);
    g_free(want);
    want = rows(src);
    REQUIRE(replica_start_db(db, src, &db_lock, st, PREFIX, "unit", &ro, &rep) == 0);
    insert(db, ++k);
    REQUIRE(replica_sync(rep) == 0);
    replica_get_stats(rep, &rs);
    CHECK(rs.generation > old_seq);
    g_free(want);
    want = rows(src);
    snprintf(dst, sizeof dst, "%s/r%u.db", test_dir, restores++);
    REQUIRE(replica_restore_db(st, PREFIX, dst, &info) == 0);
    char *got = rows(dst);
    CHECK(strcmp(want, got) == 0);
    CHECK(info.generation == rs.generation);
    g_free(got);

    /* An existing target is refused and left alone. */
    CHECK(replica_restore_db(st, PREFIX, src, &info) == -EEXIST);

    /* A damaged snapshot: -EBADMSG, nothing installed. */
    char key[512];
    snprintf(key, sizeof key, PREFIX "gen-%016llx/snapshot.db", (unsigned long long)rs.generation);
    void *data;
    size_t len;
    REQUIRE(store_get(st, key, &data, &len) == 0);
    ((unsigned char *)data)[len / 2] ^= 1;
    REQUIRE(store_put(st, key, data, len) == 0);
    free(data);
    snprintf(dst, sizeof dst, "%s/r%u.db", test_dir, restores++);
    CHECK(replica_restore_db(st, PREFIX, dst, &info) == -EBADMSG);
    CHECK(access(dst, F_OK) < 0);

    replica_stop(rep);
    sqlite3_close(db);
    store_close(st);
    g_free(want);
    test_cleanup();
    if (check_failures)
        fprintf(stderr, "%d checks failed\n", check_failures);
    return check_failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
