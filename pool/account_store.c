/* account_store.c: the account databases' replicas in the store (account_store.h). */
#include "account_store.h"

#include "log.h"
#include "replica.h"
#include "sprite_service.h"
#include "store.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>

#define ACCOUNT_STORE_LOG "account"

char *account_store_prefix(const char *account)
{
    return g_strdup_printf(ACCOUNT_STORE_ROOT "%s/db/", account);
}

/* Collects ACCOUNT from every key "accounts/ACCOUNT/db/..." whose ACCOUNT is a valid name. */
static int account_store_list_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    GHashTable *names = opaque;
    const char *rest = key + strlen(ACCOUNT_STORE_ROOT);
    const char *slash = strchr(rest, '/');

    (void)size;
    (void)mtime;
    if (!slash || !g_str_has_prefix(slash, "/db/"))
        return 0;
    g_autofree char *name = g_strndup(rest, (gsize)(slash - rest));
    if (sprite_service_account_valid(name) && !g_hash_table_contains(names, name))
        g_hash_table_add(names, g_steal_pointer(&name));
    return 0;
}

bool account_store_restore_all(struct store *st, const char *accounts_dir,
                               struct account_store_restored *out, GError **error)
{
    g_autoptr(GHashTable) names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    double t0 = (double)g_get_monotonic_time() / G_USEC_PER_SEC;
    int err;

    memset(out, 0, sizeof *out);
    err = store_list(st, ACCOUNT_STORE_ROOT, account_store_list_one, names);
    if (err < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-err), "list %s in %s: %s",
                    ACCOUNT_STORE_ROOT, store_describe(st), store_last_error());
        return false;
    }
    g_autofree char **list = (char **)g_hash_table_get_keys_as_array(names, NULL);
    for (guint i = 0; list[i]; i++) {
        const char *account = list[i];
        g_autofree char *dir = g_build_filename(accounts_dir, account, NULL);
        g_autofree char *path = g_build_filename(dir, "account.db", NULL);
        g_autofree char *prefix = account_store_prefix(account);
        struct replica_restore_info info;

        if (g_file_test(path, G_FILE_TEST_EXISTS)) {
            out->present++;
            continue;
        }
        err = replica_exists_at(st, prefix);
        if (err == 0) {
            /* A host lost before the account's first snapshot was complete: its few seconds
             * of history are lost with it (the replication lag, docs/operations.md). */
            log_warn(ACCOUNT_STORE_LOG, "%s: no complete generation in the store; skipped", prefix);
            out->incomplete++;
            continue;
        }
        if (err > 0 && g_mkdir_with_parents(dir, 0700) < 0)
            err = -errno;
        if (err > 0)
            err = replica_restore_db(st, prefix, path, &info);
        if (err < 0) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-err),
                        "restoring account '%s' from %s%s: %s", account, store_describe(st), prefix,
                        g_strerror(-err));
            return false;
        }
        log_info(ACCOUNT_STORE_LOG,
                 "account %s restored from the store (%llu-byte snapshot, %u segments)", account,
                 (unsigned long long)info.snapshot_bytes, info.segments);
        out->accounts++;
    }
    out->seconds = (double)g_get_monotonic_time() / G_USEC_PER_SEC - t0;
    return true;
}
