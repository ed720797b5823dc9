/* account_db.h: one account's SQLite database: its sprites, their checkpoints, an audit log.
 *
 * STATE/accounts/ACCOUNT/account.db, one per account, so that one account's data never sits in
 * a query of another's.  Every call holds the database's own lock: any thread may call.  The
 * database may be replicated to the object store (account_db_replicate), and restored from it
 * on a fresh host (account_store.h). */
#ifndef WISP_ACCOUNT_DB_H
#define WISP_ACCOUNT_DB_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct account_db account_db;

struct account_checkpoint {
    char id[64];
    int64_t created; /* Unix seconds */
};

struct account_sprite {
    char name[64];
    char disk[160];
    int64_t created;
};

struct store;

/* Opens (creating) the database at path. */
account_db *account_db_open(const char *path, GError **error);
/* Ships what the replica has not yet (if any), then closes. */
void account_db_close(account_db *db);

/* Replicates the database to st under prefix (meta/replica.h, replica_start_db): each commit
 * reaches the store within interval_s (a thread ships the commits of that interval together),
 * and account_db_close ships the rest.  st outlives db. */
bool account_db_replicate(account_db *db, struct store *st, const char *prefix, const char *label,
                          double interval_s, GError **error);
/* The replica's lag: age of the oldest commit not in the store, and how many commits are not;
 * false when the database is not replicated. */
bool account_db_replica_lag(account_db *db, double *lag_s, uint64_t *unshipped);

/* Adds a sprite; G_IO_ERROR_EXISTS if the name is taken. */
bool account_db_sprite_add(account_db *db, const char *name, const char *disk, GError **error);
/* 1 found, 0 not, -1 error. */
int account_db_sprite_get(account_db *db, const char *name, struct account_sprite *out,
                          GError **error);
/* The account's sprites (struct account_sprite *, g_free'd by the array). */
GPtrArray *account_db_sprite_list(account_db *db, GError **error);
/* Removes the sprite and its checkpoints. */
bool account_db_sprite_delete(account_db *db, const char *name, GError **error);

/* The next checkpoint id of a sprite: "ckN", N one past the highest (g_free it). */
char *account_db_checkpoint_next_id(account_db *db, const char *sprite, GError **error);
bool account_db_checkpoint_add(account_db *db, const char *sprite, const char *id, GError **error);
/* 1 found, 0 not, -1 error. */
int account_db_checkpoint_exists(account_db *db, const char *sprite, const char *id,
                                 GError **error);
/* Removes one checkpoint's record: 1 removed, 0 there was none, -1 error. */
int account_db_checkpoint_delete(account_db *db, const char *sprite, const char *id,
                                 GError **error);
/* Oldest first (struct account_checkpoint *, g_free'd by the array). */
GPtrArray *account_db_checkpoint_list(account_db *db, const char *sprite, GError **error);

/* Appends to the audit log; failures are logged, not returned (the action happened). */
void account_db_audit(account_db *db, const char *action, const char *sprite, bool ok,
                      const char *detail);

/* ---- cold sleep (see the state table in account_db.c) ---- */
struct account_cold {
    char sprite[64];
    char state[16];     /* "awake", "going-cold", "cold", "waking" */
    char manifest[256]; /* the last complete sleep's manifest key, or "" */
    char pending[256];  /* going-cold: the manifest being written, or "" */
    unsigned seq;       /* cold sleeps begun so far */
};

/* 1 found, 0 not (never slept cold), -1 error. */
int account_db_cold_get(account_db *db, const char *sprite, struct account_cold *out,
                        GError **error);
/* The rows of existing sprites not "awake" (struct account_cold *, g_free'd by the array). */
GPtrArray *account_db_cold_list(account_db *db, GError **error);
/* going-cold, writing `pending` as sleep number seq. */
bool account_db_cold_begin(account_db *db, const char *sprite, unsigned seq, const char *pending,
                           GError **error);
/* To "cold" (pending becomes the manifest), "waking" or "awake". */
bool account_db_cold_set(account_db *db, const char *sprite, const char *state, GError **error);
/* The sleep no longer matters (restore, delete, a new sprite of the name): "awake", no
 * manifest; seq is kept, so that manifest keys are never reused. */
bool account_db_cold_forget(account_db *db, const char *sprite, GError **error);

#endif
