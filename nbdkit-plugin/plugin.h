/* plugin.h: the running server's state, shared by the NBD callbacks (wisp.c), the control
 * socket (control.c) and the registry of open disks (plugin.c). */
#ifndef WISP_PLUGIN_H
#define WISP_PLUGIN_H

#include "chunk_cache.h"
#include "chunk_gc.h"
#include "disk.h"
#include "lease.h"
#include "meta.h"
#include "store.h"

#include <glib.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct replica;

struct plugin_config {
    char *store_url, *cache_dir, *meta_dir, *control_path, *credentials_file;
    uint64_t cache_size;
    uint32_t chunk_size; /* default for disks created through the control socket */
    enum disk_durability durability;
    double upload_delay, stats_interval, store_timeout;
    unsigned upload_parallel, store_connections;
    uint64_t readahead;
    bool readonly;
    bool ship_log;        /* durability=remote: ship small flushes as log (disk_env.ship_log) */
    uint64_t gc_interval; /* seconds between periodic GCs; 0: none */
    uint64_t gc_grace;    /* seconds: the GC grace period, which uploads rely on */
    double gc_refresh_age;

    double lease_ttl;          /* seconds a writer's lease lasts unrenewed; 0: no leases */
    double replicate_interval; /* 0: no replication of the metadata */
    char *replica_name;        /* NULL: REPLICA_NAME_DEFAULT */
};

struct plugin_state {
    const struct plugin_config *config;
    struct store *store;
    struct meta *meta;
    pthread_mutex_t meta_lock; /* one thread at a time on the meta connection */
    struct chunk_cache *cache;
    struct file_reaper *reaper;
    struct disk_env env;

    pthread_mutex_t registry_lock; /* protects disks */
    pthread_mutex_t lease_lock;    /* one server thread asking for a missing lease at a time */
    GHashTable *disks;             /* name -> struct plugin_disk */

    struct replica *replica; /* NULL when replicate-interval=0 */

    pthread_t background; /* uploads (durability=local) and statistics */
    bool background_started;
    /* Lease renewals have a thread of their own: an upload round can take longer than a
     * lease's ttl, and a lease must not lapse behind one. */
    pthread_t lease_keeper;
    bool lease_keeper_started;
    bool stopping;

    /* Garbage collection (plugin_gc.c).  versions_lock is held by a GC while it reads the
     * references, and by clone and checkpoint of a head from reading the head's root until
     * the new version is committed (meta/chunk_gc.h, invariant (b)); never across a store
     * request.  gc_lock makes runs one at a time. */
    pthread_mutex_t versions_lock;
    pthread_mutex_t gc_lock;
    pthread_mutex_t gc_wait_lock; /* with gc_wake: the periodic thread's sleep */
    pthread_cond_t gc_wake;
    pthread_t gc_thread;
    bool gc_started;

    int control_fd;
    pthread_t control_thread;
    bool control_started;
};

/* Opens disk `name` (or finds it open) and counts a connection on it.  -ENOENT if no such
 * disk; -EBUSY if another host holds its writer's lease (lease.h). */
int plugin_disk_acquire(struct plugin_state *s, const char *name, struct disk **out);
void plugin_disk_release(struct plugin_state *s, struct disk *d);
/* Number of connections on an open disk, 0 if not open. */
unsigned plugin_disk_connections(struct plugin_state *s, const char *name);
/* Closes the disk (or checkpoint export "DISK@CKPT") if it is open without connections, so it
 * can be deleted; a disk's checkpoint exports go with it.  -EBUSY if any has connections. */
int plugin_disk_forget(struct plugin_state *s, const char *name);
/* Renews the leases of open disks that are due; a disk whose lease another host took is
 * fenced (disk_fence).  Called by the lease thread (wisp.c), every 100 ms. */
void plugin_leases_renew(struct plugin_state *s);
/* disk_env.lease_now (opaque: the plugin_state). */
int plugin_disk_lease_now(struct disk *d, void *opaque);
/* Describes disk `name`'s lease; with steal, takes it over first (if it expired or was
 * released) by opening the disk here.  *ours tells whether this server holds it. */
int plugin_disk_lease(struct plugin_state *s, const char *name, bool steal, struct lease_info *out,
                      bool *ours);

/* Stats of an open disk: -ENOENT if it is not open. */
int plugin_disk_stats(struct plugin_state *s, const char *name, struct disk_stats *out);

/* Runs an upload round on disk `name` now, whatever the durability, and gives its committed
 * head: every write acknowledged before the call is in it. */
int plugin_disk_commit_now(struct plugin_state *s, const char *name, struct chunk_hash *root);
/* The version an export name stands for: a checkpoint's root, or the committed head after
 * plugin_disk_commit_now.  *disk receives the disk's record. */
int plugin_disk_version_root(struct plugin_state *s, const char *export_name,
                             struct meta_disk *disk, struct chunk_hash *root);
/* disk_restore on disk `name`, opening it if needed. */
int plugin_disk_restore(struct plugin_state *s, const char *name, const struct chunk_hash *root);
/* Whether a checkpoint export of the disk (any, or the one named) has connections. */
bool plugin_disk_versions_open(struct plugin_state *s, const char *name, const char *checkpoint);

/* Opens every disk with a pending journal, so its data is uploaded without waiting for a
 * client. */
int plugin_open_pending_disks(struct plugin_state *s);
/* Runs due upload rounds (durability=local). */
void plugin_upload_due(struct plugin_state *s, double delay_s);
/* Logs one statistics line per open disk and one for the cache. */
void plugin_log_stats(struct plugin_state *s);
void plugin_close_all_disks(struct plugin_state *s);

/* One garbage collection of the store against this server's metadata (meta/chunk_gc.h), on a
 * connection of its own.  -EBUSY if one is running already. */
int plugin_gc_run(struct plugin_state *s, uint64_t grace_s, bool dry_run,
                  struct chunk_gc_report *out);
/* Starts the thread that runs plugin_gc_run every gc_interval seconds (nothing if 0), and
 * stops it (call after setting s->stopping). */
int plugin_gc_start(struct plugin_state *s);
void plugin_gc_stop(struct plugin_state *s);

/* plugin_replica.c: with replication on and no database in meta=, restores it from the
 * store's replica if there is one (-1 after nbdkit_error if that fails or the store cannot be
 * listed).  Runs before meta= is opened. */
int plugin_replica_restore_if_needed(const struct plugin_config *cfg,
                                     const struct store_options *so);
void plugin_replica_log_stats(struct replica *r);

#endif
