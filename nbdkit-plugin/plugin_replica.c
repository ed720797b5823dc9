/* plugin_replica.c: the plugin's side of metadata replication (meta/replica.h): restoring an
 * empty meta= directory at start-up, and the statistics line.  The replica itself is started
 * in wisp.c's after_fork, waited for by durability=remote flushes there, and stopped (with a
 * last shipment) at cleanup. */
#include "log.h"
#include "plugin.h"
#include "replica.h"

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int plugin_replica_restore_if_needed(const struct plugin_config *cfg,
                                     const struct store_options *so)
{
    const char *name = cfg->replica_name ? cfg->replica_name : REPLICA_NAME_DEFAULT;
    struct replica_restore_options o = {
        .name = name, .verify = REPLICA_VERIFY_SAMPLE, .cache_dir = cfg->cache_dir};
    struct replica_restore_info info;
    struct store *st;
    char path[PATH_MAX];
    int r;

    if (cfg->replicate_interval <= 0)
        return 0;
    if (snprintf(path, sizeof path, "%s/wisp.db", cfg->meta_dir) >= (int)sizeof path) {
        nbdkit_error("meta=%s: path too long", cfg->meta_dir);
        return -1;
    }
    if (access(path, F_OK) == 0)
        return 0;
    if (errno != ENOENT) {
        nbdkit_error("access: %s: %m", path);
        return -1;
    }
    r = store_open(cfg->store_url, so, &st);
    if (r < 0) {
        nbdkit_error("store=%s: %s", cfg->store_url, store_last_error());
        return -1;
    }
    r = replica_exists(st, name);
    if (r < 0) {
        nbdkit_error("meta=%s holds no database and the store cannot be listed to look for its "
                     "replica '%s' (%s): not starting, since empty metadata would replace it",
                     cfg->meta_dir, name, strerror(-r));
    } else if (r == 0) {
        log_info("replica",
                 "meta=%s holds no database and the store has no replica '%s': starting with "
                 "empty metadata",
                 cfg->meta_dir, name);
    } else {
        log_info("replica", "meta=%s holds no database: restoring it from replica '%s'",
                 cfg->meta_dir, name);
        r = replica_restore(st, cfg->meta_dir, &o, &info);
        if (r < 0)
            nbdkit_error("meta=%s: restoring replica '%s' failed: %s%s%s", cfg->meta_dir, name,
                         strerror(-r), info.first_bad_chunk[0] ? "; first bad chunk: " : "",
                         info.first_bad_chunk);
        else
            log_info("replica",
                     "meta=%s restored from replica '%s': %u disks, %u checkpoints, generation "
                     "%016" PRIx64 " up to sequence %016" PRIx64 ", replicated %lld s ago",
                     cfg->meta_dir, name, info.disks, info.checkpoints, info.generation, info.seq,
                     (long long)(time(NULL) - info.replicated_at));
    }
    store_close(st);
    return r < 0 ? -1 : 0;
}

void plugin_replica_log_stats(struct replica *r)
{
    struct replica_stats rs;

    replica_get_stats(r, &rs);
    log_info("stats",
             "replica: generation %016" PRIx64 ", sequence %016" PRIx64 ", %" PRIu64 "/%" PRIu64
             " commits shipped, lag %.1f s, %" PRIu64 " segments (%" PRIu64 " bytes), %" PRIu64
             " snapshots (%" PRIu64 " bytes), %" PRIu64 " failures%s",
             rs.generation, rs.seq, rs.shipped_commits, rs.commits, rs.lag_s, rs.segments,
             rs.segment_bytes, rs.snapshots, rs.snapshot_bytes, rs.failures,
             rs.fenced ? ", stopped: another server writes it" : "");
}
