/* account_store.h: where the account databases live in the object store, and bringing them
 * back on a fresh host.
 *
 * Each account's database (account_db.h) is replicated like the disk metadata
 * (meta/replica.h) under its own prefix, accounts/ACCOUNT/db/.  A host whose state directory
 * lacks an account's database restores it from there at start-up, before any request; a
 * database already on disk is never replaced (it is at least as new as its replica).  The
 * sprites' disks come back with the storage server's metadata (its own replica, restored by
 * the plugin when meta= is empty). */
#ifndef WISP_ACCOUNT_STORE_H
#define WISP_ACCOUNT_STORE_H

#include <glib.h>
#include <stdbool.h>

struct store;

#define ACCOUNT_STORE_ROOT "accounts/"

/* "accounts/ACCOUNT/db/" (g_free it). */
char *account_store_prefix(const char *account);

struct account_store_restored {
    unsigned accounts;   /* databases restored */
    unsigned present;    /* accounts in the store whose database was already here */
    unsigned incomplete; /* accounts in the store without a complete generation (skipped) */
    double seconds;
};

/* For every account with a replica in st and no database under accounts_dir
 * (ACCOUNTS_DIR/ACCOUNT/account.db): restores it.  false with error if the store cannot be
 * listed or a replica fails its checks (wispd must not start with an account missing). */
bool account_store_restore_all(struct store *st, const char *accounts_dir,
                               struct account_store_restored *out, GError **error);

#endif
