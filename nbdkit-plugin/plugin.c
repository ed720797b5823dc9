/* plugin.c: the registry of open disks.
 *
 * A disk stays open after its last connection closes, so that data flushed with
 * durability=local is still uploaded; it is closed at shut-down or when deleted.  `users`
 * counts the threads using a registry entry outside registry_lock (the upload thread, stats),
 * so that delete never frees a disk under them. */
#include "plugin.h"

#include "export_name.h"
#include "log.h"
#include "write_log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct plugin_disk {
    struct disk *disk;
    struct lease *lease; /* a head opened for writing: this process is its one writer */
    bool lease_wanted;   /* opened while the store was unreachable: asked for again */
    double lease_asked;  /* monotonic time of the last try */
    unsigned connections;
    unsigned users;
};

static void plugin_disk_free(struct plugin_disk *pd)
{
    disk_close(pd->disk);
    lease_release(pd->lease); /* after the close: nothing commits any more */
    g_free(pd);
}

/* Finds or opens the disk or checkpoint named by an export name; a head is opened only with
 * its writer's lease (steal: even one that expired).  Caller holds registry_lock. */
static int plugin_disk_open_locked(struct plugin_state *s, const char *name, bool steal,
                                   struct plugin_disk **out)
{
    struct plugin_disk *pd = g_hash_table_lookup(s->disks, name);
    struct meta_checkpoint ckpt;
    struct export_name parsed;
    struct meta_disk md;
    const char *why;
    int r;

    if (pd) {
        *out = pd;
        return 0;
    }
    if (export_name_parse(name, &parsed, &why) < 0)
        return -EINVAL;
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_get(s->meta, parsed.disk, &md);
    if (r == 0 && parsed.checkpoint[0])
        r = meta_checkpoint_get(s->meta, md.id, parsed.checkpoint, &ckpt);
    pthread_mutex_unlock(&s->meta_lock);
    if (r < 0)
        return r;
    pd = g_new0(struct plugin_disk, 1);
    if (!parsed.checkpoint[0] && !s->config->readonly && s->config->lease_ttl > 0) {
        struct lease_info who;
        r = lease_acquire(s->store, parsed.disk, s->config->lease_ttl, steal, &pd->lease, &who);
        if (r == -EBUSY || (r < 0 && steal)) {
            g_free(pd);
            return r;
        }
        if (r < 0) {
            /* The store is unreachable: serve reads and take writes, but commit nothing until
             * the lease is ours (the background thread asks again). */
            log_warn("plugin",
                     "disk %s: cannot take its writer lease (%s): serving it without "
                     "committing anything until the store answers",
                     parsed.disk, store_last_error());
            pd->lease_wanted = true;
        }
    }
    r = disk_open(&s->env, &md, parsed.checkpoint[0] ? &ckpt : NULL, &pd->disk);
    if (r < 0) {
        lease_release(pd->lease);
        g_free(pd);
        return r;
    }
    disk_set_lease(pd->disk, pd->lease);
    if (pd->lease_wanted)
        disk_require_lease(pd->disk);
    g_hash_table_insert(s->disks, (gpointer)disk_name(pd->disk), pd);
    *out = pd;
    return 0;
}

int plugin_disk_acquire(struct plugin_state *s, const char *name, struct disk **out)
{
    struct plugin_disk *pd;
    int r;

    pthread_mutex_lock(&s->registry_lock);
    r = plugin_disk_open_locked(s, name, false, &pd);
    if (r == 0) {
        pd->connections++;
        *out = pd->disk;
    }
    pthread_mutex_unlock(&s->registry_lock);
    return r;
}

void plugin_disk_release(struct plugin_state *s, struct disk *d)
{
    pthread_mutex_lock(&s->registry_lock);
    struct plugin_disk *pd = g_hash_table_lookup(s->disks, disk_name(d));
    if (pd && pd->connections > 0)
        pd->connections--;
    pthread_mutex_unlock(&s->registry_lock);
}

unsigned plugin_disk_connections(struct plugin_state *s, const char *name)
{
    pthread_mutex_lock(&s->registry_lock);
    struct plugin_disk *pd = g_hash_table_lookup(s->disks, name);
    unsigned n = pd ? pd->connections : 0;
    pthread_mutex_unlock(&s->registry_lock);
    return n;
}

int plugin_disk_forget(struct plugin_state *s, const char *name)
{
    size_t n = strlen(name);
    GHashTableIter it;
    gpointer key, value;
    GPtrArray *gone = g_ptr_array_new();
    int r = 0;

    /* The disk's head and its checkpoint exports ("name@..."), all or none. */
    pthread_mutex_lock(&s->registry_lock);
    g_hash_table_iter_init(&it, s->disks);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        const char *k = key;
        struct plugin_disk *pd = value;
        if (strncmp(k, name, n) != 0 || (k[n] != '\0' && (k[n] != '@' || strchr(name, '@'))))
            continue;
        if (pd->connections > 0 || pd->users > 0)
            r = -EBUSY;
        g_ptr_array_add(gone, pd);
    }
    for (guint i = 0; r == 0 && i < gone->len; i++) {
        struct plugin_disk *pd = g_ptr_array_index(gone, i);
        g_hash_table_remove(s->disks, disk_name(pd->disk));
        plugin_disk_free(pd);
    }
    pthread_mutex_unlock(&s->registry_lock);
    g_ptr_array_unref(gone);
    return r;
}

int plugin_disk_stats(struct plugin_state *s, const char *name, struct disk_stats *out)
{
    int r = -ENOENT;

    pthread_mutex_lock(&s->registry_lock);
    struct plugin_disk *pd = g_hash_table_lookup(s->disks, name);
    if (pd) {
        disk_get_stats(pd->disk, out);
        r = 0;
    }
    pthread_mutex_unlock(&s->registry_lock);
    return r;
}

/* Opens a disk's head (if needed) and holds it as a user while fn runs. */
static int plugin_with_disk(struct plugin_state *s, const char *name,
                            int (*fn)(struct disk *d, void *opaque), void *opaque)
{
    struct plugin_disk *pd;
    int r;

    pthread_mutex_lock(&s->registry_lock);
    r = plugin_disk_open_locked(s, name, false, &pd);
    if (r == 0)
        pd->users++;
    pthread_mutex_unlock(&s->registry_lock);
    if (r < 0)
        return r;
    r = fn(pd->disk, opaque);
    pthread_mutex_lock(&s->registry_lock);
    pd->users--;
    pthread_mutex_unlock(&s->registry_lock);
    return r;
}

static int plugin_commit_now(struct disk *d, void *opaque)
{
    return disk_commit_now(d, opaque);
}

int plugin_disk_commit_now(struct plugin_state *s, const char *name, struct chunk_hash *root)
{
    return plugin_with_disk(s, name, plugin_commit_now, root);
}

int plugin_disk_version_root(struct plugin_state *s, const char *export_name,
                             struct meta_disk *disk, struct chunk_hash *root)
{
    struct export_name parsed;
    struct meta_checkpoint ckpt;
    const char *why;
    int r;

    if (export_name_parse(export_name, &parsed, &why) < 0)
        return -EINVAL;
    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_get(s->meta, parsed.disk, disk);
    if (r == 0 && parsed.checkpoint[0])
        r = meta_checkpoint_get(s->meta, disk->id, parsed.checkpoint, &ckpt);
    pthread_mutex_unlock(&s->meta_lock);
    if (r < 0)
        return r;
    if (parsed.checkpoint[0]) {
        *root = ckpt.root;
        return 0;
    }
    /* The head, with every acknowledged write in it. */
    return plugin_disk_commit_now(s, parsed.disk, root);
}

static int plugin_restore(struct disk *d, void *opaque)
{
    return disk_restore(d, opaque);
}

int plugin_disk_restore(struct plugin_state *s, const char *name, const struct chunk_hash *root)
{
    return plugin_with_disk(s, name, plugin_restore, (void *)root);
}

bool plugin_disk_versions_open(struct plugin_state *s, const char *name, const char *checkpoint)
{
    GHashTableIter it;
    gpointer key, value;
    size_t n = strlen(name);
    bool open = false;

    pthread_mutex_lock(&s->registry_lock);
    g_hash_table_iter_init(&it, s->disks);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        const char *k = key;
        struct plugin_disk *pd = value;
        if (strncmp(k, name, n) == 0 && k[n] == '@' &&
            (!checkpoint || strcmp(k + n + 1, checkpoint) == 0) && pd->connections > 0)
            open = true;
    }
    pthread_mutex_unlock(&s->registry_lock);
    return open;
}

static int plugin_has_pending_row(const struct meta_pending *p, void *opaque)
{
    return 1;
}

static int plugin_collect_disk(const struct meta_disk *d, void *opaque)
{
    g_ptr_array_add(opaque, g_strdup(d->name));
    return 0;
}

int plugin_open_pending_disks(struct plugin_state *s)
{
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    int r;

    pthread_mutex_lock(&s->meta_lock);
    r = meta_disk_list(s->meta, plugin_collect_disk, names);
    pthread_mutex_unlock(&s->meta_lock);
    for (guint i = 0; r == 0 && i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        struct meta_disk md;
        struct plugin_disk *pd;
        pthread_mutex_lock(&s->meta_lock);
        /* Flushes made through the write log have no pending rows: the log's mark says so
         * (set before such a flush returns, meta.h), if the log is here.  A database restored
         * from another host's replica carries that host's mark, not its log. */
        int has = meta_disk_get(s->meta, name, &md) == 0 &&
                  meta_pending_list(s->meta, md.id, plugin_has_pending_row, NULL) == 1;
        bool marked = !has && meta_write_log_unuploaded(s->meta, md.id) == 1;
        /* Shipped rows (durability=remote) are flushes the head lacks, wherever the log is. */
        bool shipped = !has && meta_write_log_shipped_any(s->meta, md.id) == 1;
        pthread_mutex_unlock(&s->meta_lock);
        if (marked) {
            char log_dir[PATH_MAX];
            snprintf(log_dir, sizeof log_dir, "%s/log/%lld", s->config->cache_dir,
                     (long long)md.id);
            has = write_log_present(log_dir);
        }
        if (!has && !shipped)
            continue;
        pthread_mutex_lock(&s->registry_lock);
        r = plugin_disk_open_locked(s, name, false, &pd);
        pthread_mutex_unlock(&s->registry_lock);
        if (r == -EBUSY && !has) {
            /* Rows restored from a replica, say on a new host while the lost one's lease
             * lives: they are uploaded when a client opens the disk here. */
            log_info("plugin", "disk %s: its shipped flushes wait for its lease (held elsewhere)",
                     name);
            r = 0;
        } else if (r < 0) {
            log_error("plugin", "disk %s: cannot recover its pending data: %s", name, strerror(-r));
        }
    }
    g_ptr_array_unref(names);
    return r;
}

/* Takes a `users` reference on every open disk. */
static GPtrArray *plugin_use_all(struct plugin_state *s)
{
    GPtrArray *list = g_ptr_array_new();
    GHashTableIter it;
    gpointer value;

    pthread_mutex_lock(&s->registry_lock);
    g_hash_table_iter_init(&it, s->disks);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        struct plugin_disk *pd = value;
        pd->users++;
        g_ptr_array_add(list, pd);
    }
    pthread_mutex_unlock(&s->registry_lock);
    return list;
}

static void plugin_unuse_all(struct plugin_state *s, GPtrArray *list)
{
    pthread_mutex_lock(&s->registry_lock);
    for (guint i = 0; i < list->len; i++)
        ((struct plugin_disk *)g_ptr_array_index(list, i))->users--;
    pthread_mutex_unlock(&s->registry_lock);
    g_ptr_array_unref(list);
}

void plugin_upload_due(struct plugin_state *s, double delay_s)
{
    GPtrArray *list = plugin_use_all(s);

    for (guint i = 0; i < list->len && !__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE); i++) {
        struct plugin_disk *pd = g_ptr_array_index(list, i);
        int r = disk_upload_due(pd->disk, delay_s);
        if (r < 0 && r != -ECANCELED) /* shutting down: logged by the disk */
            log_warn("plugin", "disk %s: upload failed (%s); retrying after upload-delay",
                     disk_name(pd->disk), strerror(-r));
    }
    plugin_unuse_all(s, list);
}

void plugin_log_stats(struct plugin_state *s)
{
    GPtrArray *list = plugin_use_all(s);
    struct chunk_cache_stats cs;
    struct store_stats ss;

    for (guint i = 0; i < list->len; i++) {
        struct plugin_disk *pd = g_ptr_array_index(list, i);
        struct disk_stats ds;
        disk_get_stats(pd->disk, &ds);
        log_info("stats",
                 "disk %s: %llu reads (%llu bytes), %llu writes (%llu bytes), %llu zeroes, "
                 "%llu flushes, %llu uploads (%llu bytes), %llu bytes dirty, %llu bytes "
                 "pending upload, %u connections",
                 disk_name(pd->disk), (unsigned long long)ds.reads,
                 (unsigned long long)ds.read_bytes, (unsigned long long)ds.writes,
                 (unsigned long long)ds.write_bytes, (unsigned long long)ds.zeroes,
                 (unsigned long long)ds.flushes, (unsigned long long)ds.uploads,
                 (unsigned long long)ds.upload_bytes, (unsigned long long)ds.dirty_bytes,
                 (unsigned long long)ds.pending_bytes, pd->connections);
    }
    plugin_unuse_all(s, list);
    chunk_cache_get_stats(s->cache, &cs);
    store_get_stats(s->store, &ss);
    log_info("stats",
             "cache: %llu hits, %llu misses, %llu fetches (%llu bytes), %llu corrupt, %llu "
             "evictions, %llu refreshes, %llu/%llu bytes used; store: %llu requests, %llu "
             "retries, %llu failures",
             (unsigned long long)cs.hits, (unsigned long long)cs.misses,
             (unsigned long long)cs.fetches, (unsigned long long)cs.fetch_bytes,
             (unsigned long long)cs.corrupt, (unsigned long long)cs.evictions,
             (unsigned long long)cs.refreshes,
             (unsigned long long)(cs.clean_bytes + cs.dirty_bytes),
             (unsigned long long)cs.max_bytes, (unsigned long long)ss.requests,
             (unsigned long long)ss.retries, (unsigned long long)ss.failures);
}

void plugin_close_all_disks(struct plugin_state *s)
{
    GHashTableIter it;
    gpointer value;

    pthread_mutex_lock(&s->registry_lock);
    g_hash_table_iter_init(&it, s->disks);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        plugin_disk_free(value);
    }
    g_hash_table_remove_all(s->disks);
    pthread_mutex_unlock(&s->registry_lock);
}

/* ---- writer leases ----------------------------------------------------------------------- */

/* A disk opened while the store was unreachable asks for its lease again: every third of the
 * ttl from the background thread, and before a commit (now).  If another server took the disk
 * meanwhile, it is fenced.  Returns 0 once the lease is ours. */
static int plugin_lease_ask_again(struct plugin_state *s, struct plugin_disk *pd, bool now_)
{
    struct lease_info who;
    struct lease *l = NULL;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;

    pthread_mutex_lock(&s->lease_lock); /* one asker at a time */
    if (!pd->lease_wanted || (!now_ && now - pd->lease_asked < s->config->lease_ttl / 3)) {
        int r = pd->lease ? 0 : -EAGAIN;
        pthread_mutex_unlock(&s->lease_lock);
        return r;
    }
    pd->lease_asked = now;
    int r = lease_acquire(s->store, disk_name(pd->disk), s->config->lease_ttl, false, &l, &who);
    if (r == -EBUSY) {
        pd->lease_wanted = false;
        disk_fence(pd->disk);
    } else if (r == 0) {
        pthread_mutex_lock(&s->registry_lock);
        pd->lease = l;
        pd->lease_wanted = false;
        pthread_mutex_unlock(&s->registry_lock);
        disk_set_lease(pd->disk, l);
        log_info("plugin", "disk %s: writer lease taken (generation %llu); committing again",
                 disk_name(pd->disk), (unsigned long long)lease_generation(l));
    }
    pthread_mutex_unlock(&s->lease_lock);
    return r;
}

int plugin_disk_lease_now(struct disk *d, void *opaque)
{
    struct plugin_state *s = opaque;

    pthread_mutex_lock(&s->registry_lock);
    struct plugin_disk *pd = g_hash_table_lookup(s->disks, disk_name(d));
    if (pd)
        pd->users++;
    pthread_mutex_unlock(&s->registry_lock);
    if (!pd)
        return -ENOENT;
    int r = plugin_lease_ask_again(s, pd, true);
    pthread_mutex_lock(&s->registry_lock);
    pd->users--;
    pthread_mutex_unlock(&s->registry_lock);
    return r;
}

void plugin_leases_renew(struct plugin_state *s)
{
    GPtrArray *list = plugin_use_all(s);

    for (guint i = 0; i < list->len; i++) {
        struct plugin_disk *pd = g_ptr_array_index(list, i);
        if (pd->lease_wanted && !disk_fenced(pd->disk))
            plugin_lease_ask_again(s, pd, false);
        if (!pd->lease || !lease_renew_due(pd->lease) || disk_fenced(pd->disk))
            continue;
        int r = lease_renew(pd->lease);
        if (r == -ESTALE)
            disk_fence(pd->disk);
        else if (r < 0)
            log_warn("plugin", "disk %s: cannot renew its lease: %s; retrying", disk_name(pd->disk),
                     store_last_error());
    }
    plugin_unuse_all(s, list);
}

int plugin_disk_lease(struct plugin_state *s, const char *name, bool steal, struct lease_info *out,
                      bool *ours)
{
    struct plugin_disk *pd = NULL;
    int r = 0;

    *ours = false;
    if (steal) {
        pthread_mutex_lock(&s->registry_lock);
        r = plugin_disk_open_locked(s, name, true, &pd);
        pthread_mutex_unlock(&s->registry_lock);
        if (r < 0)
            return r;
    }
    r = lease_inspect(s->store, name, out);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->registry_lock);
    pd = g_hash_table_lookup(s->disks, name);
    *ours =
        pd && pd->lease && !disk_fenced(pd->disk) && lease_generation(pd->lease) == out->generation;
    pthread_mutex_unlock(&s->registry_lock);
    return 0;
}
