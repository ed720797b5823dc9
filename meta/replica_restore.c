/* replica_restore.c: rebuilding a metadata directory from its replica, and verifying it
 * (replica.h).
 *
 * Steps: list the replica; take the newest generation that has a manifest; fetch its snapshot
 * (checked against the manifest's size and SHA-256) and its segments in sequence order while
 * they are contiguous and intact; write them as wisp.db and wisp.db-wal in a temporary
 * directory inside the target; let SQLite replay the WAL, requiring that it replays every
 * frame shipped and that PRAGMA integrity_check says ok; checkpoint; drop pending rows whose
 * files are not in the cache; check the chunks every head and checkpoint names; and only then
 * move wisp.db into place.  A failure leaves the target as it was. */
#include "replica.h"
#include "replica_internal.h"

#include "hash.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLICA_SAMPLE_DEFAULT 16
#define REPLICA_VERIFY_THREADS 8

const char *replica_verify_to_string(enum replica_verify v)
{
    switch (v) {
    case REPLICA_VERIFY_NONE:
        return "none";
    case REPLICA_VERIFY_SAMPLE:
        return "sample";
    case REPLICA_VERIFY_FULL:
        return "full";
    }
    return "?";
}

/* ---- the listing -------------------------------------------------------------------------- */

struct replica_object {
    struct replica_key k;
    char key[REPLICA_KEY_MAX];
    uint64_t size;
    time_t mtime;
};

struct replica_scan {
    const char *prefix;
    GArray *objects; /* struct replica_object */
};

static int replica_scan_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct replica_scan *s = opaque;
    struct replica_object o = {.size = size, .mtime = mtime};

    if (!replica_key_parse(s->prefix, key, &o.k)) {
        log_debug("replica", "ignoring %s: not a replica object", key);
        return 0;
    }
    snprintf(o.key, sizeof o.key, "%s", key);
    g_array_append_val(s->objects, o);
    return 0;
}

static int replica_scan(struct store *st, const char *prefix, GArray **out)
{
    struct replica_scan s = {.prefix = prefix,
                             .objects = g_array_new(FALSE, FALSE, sizeof(struct replica_object))};
    int err = store_list(st, prefix, replica_scan_one, &s);

    if (err < 0) {
        log_error("replica", "list %s in %s: %s", prefix, store_describe(st), store_last_error());
        g_array_free(s.objects, TRUE);
        return err;
    }
    *out = s.objects;
    return 0;
}

/* The newest generation with a manifest, older than `below` (UINT64_MAX for any): true and
 * *gen set, or false. */
static bool replica_newest_complete(GArray *objects, uint64_t below, uint64_t *gen)
{
    bool found = false;

    for (guint i = 0; i < objects->len; i++) {
        const struct replica_object *o = &g_array_index(objects, struct replica_object, i);
        if (o->k.kind == REPLICA_KEY_MANIFEST && o->k.gen < below && (!found || o->k.gen > *gen)) {
            *gen = o->k.gen;
            found = true;
        }
    }
    return found;
}

int replica_exists(struct store *st, const char *name)
{
    char prefix[REPLICA_KEY_MAX];

    replica_prefix(name ? name : REPLICA_NAME_DEFAULT, prefix);
    return replica_exists_at(st, prefix);
}

int replica_exists_at(struct store *st, const char *prefix)
{
    GArray *objects;
    uint64_t gen = 0;
    int err;

    err = replica_scan(st, prefix, &objects);
    if (err < 0)
        return err;
    bool found = replica_newest_complete(objects, UINT64_MAX, &gen);
    g_array_free(objects, TRUE);
    return found ? 1 : 0;
}

struct replica_names {
    GTree *names; /* name (owned) -> NULL, sorted */
    int (*fn)(const char *name, void *opaque);
    void *opaque;
    int result;
};

static int replica_names_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct replica_names *l = opaque;
    const char *name = key + strlen(REPLICA_ROOT), *slash = strchr(name, '/');

    if (slash == NULL || slash == name) {
        log_debug("replica", "ignoring %s: not under a replica's prefix", key);
        return 0;
    }
    char *copy = g_strndup(name, (gsize)(slash - name));
    if (g_tree_lookup_extended(l->names, copy, NULL, NULL))
        g_free(copy);
    else
        g_tree_insert(l->names, copy, NULL);
    return 0;
}

static gint replica_name_compare(gconstpointer a, gconstpointer b, gpointer unused)
{
    return strcmp(a, b);
}

static gboolean replica_names_call(gpointer key, gpointer value, gpointer opaque)
{
    struct replica_names *l = opaque;
    const char *why;

    if (!replica_name_valid(key, &why)) {
        log_warn("replica", "%s%s/ in the store: not a replica name (%s); ignored", REPLICA_ROOT,
                 (const char *)key, why);
        return FALSE;
    }
    l->result = l->fn(key, l->opaque);
    return l->result != 0;
}

int replica_list_names(struct store *st, int (*fn)(const char *name, void *opaque), void *opaque)
{
    struct replica_names l = {.names = g_tree_new_full(replica_name_compare, NULL, g_free, NULL),
                              .fn = fn,
                              .opaque = opaque};
    int err = store_list(st, REPLICA_ROOT, replica_names_one, &l);

    if (err < 0)
        log_error("replica", "list %s in %s: %s", REPLICA_ROOT, store_describe(st),
                  store_last_error());
    else
        g_tree_foreach(l.names, replica_names_call, &l);
    g_tree_destroy(l.names);
    return err < 0 ? err : l.result;
}

static gint replica_segment_compare(gconstpointer a, gconstpointer b)
{
    const struct replica_object *x = a, *y = b;

    return x->k.seq < y->k.seq ? -1 : x->k.seq > y->k.seq ? 1 : 0;
}

/* dir/leaf into out (PATH_MAX bytes). */
static int replica_path(char *out, const char *dir, const char *leaf)
{
    if (snprintf(out, PATH_MAX, "%s/%s", dir, leaf) >= PATH_MAX) {
        log_error("replica", "%s/%s: path too long", dir, leaf);
        return -ENAMETOOLONG;
    }
    return 0;
}

/* ---- files -------------------------------------------------------------------------------- */

static int replica_write_file(const char *path, const void *data, size_t len)
{
    size_t done = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0) {
        int e = errno;
        log_error("replica", "create %s: %s", path, strerror(e));
        return -e;
    }
    while (done < len) {
        ssize_t n = write(fd, (const char *)data + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            log_error("replica", "write %s: %s", path, strerror(e));
            close(fd);
            return -e;
        }
        done += (size_t)n;
    }
    if (fsync(fd) < 0) {
        int e = errno;
        log_error("replica", "fsync %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    if (close(fd) < 0) {
        int e = errno;
        log_error("replica", "close %s: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

static int replica_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

    if (fd < 0 || fsync(fd) < 0) {
        err = -errno;
        log_error("replica", "fsync %s: %s", dir, strerror(-err));
    }
    if (fd >= 0)
        close(fd);
    return err;
}

/* Removes the temporary directory and what restore left in it. */
static void replica_rm_tmp(const char *tmp)
{
    DIR *d = opendir(tmp);
    struct dirent *e;
    char path[PATH_MAX];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (replica_path(path, tmp, e->d_name) == 0 && unlink(path) < 0)
            log_warn("replica", "unlink %s: %s", path, strerror(errno));
    }
    closedir(d);
    if (rmdir(tmp) < 0)
        log_warn("replica", "rmdir %s: %s", tmp, strerror(errno));
}

/* ---- fetching the generation -------------------------------------------------------------- */

/* Fetches generation gen into tmp/wisp.db and tmp/wisp.db-wal.  *page_size and *frames
 * receive what SQLite must replay. */
static int replica_fetch(struct store *st, const char *prefix, GArray *objects, uint64_t gen,
                         const char *tmp, struct replica_restore_info *info, uint32_t *page_size,
                         uint64_t *frames)
{
    struct replica_key k = {.kind = REPLICA_KEY_MANIFEST, .gen = gen};
    struct replica_manifest mf;
    char key[REPLICA_KEY_MAX], path[PATH_MAX], hex[HASH_SHA256_HEX_LEN + 1];
    uint8_t sha[HASH_SHA256_LEN];
    GArray *segs = g_array_new(FALSE, FALSE, sizeof(struct replica_object));
    GByteArray *wal = g_byte_array_new();
    void *data = NULL;
    size_t len = 0;
    int err;

    replica_key_format(prefix, &k, key);
    err = store_get(st, key, &data, &len);
    if (err < 0) {
        log_error("replica", "get %s: %s", key, store_last_error());
        goto out;
    }
    err = replica_manifest_parse(data, len, &mf);
    free(data);
    data = NULL;
    if (err == 0 && mf.gen != gen) {
        log_error("replica", "%s names generation %016" PRIx64, key, mf.gen);
        err = -EBADMSG;
    }
    if (err < 0)
        goto out;

    k.kind = REPLICA_KEY_SNAPSHOT;
    replica_key_format(prefix, &k, key);
    err = store_get_hashed(st, key, &data, &len, sha);
    if (err < 0) {
        log_error("replica", "get %s: %s", key, store_last_error());
        goto out;
    }
    hash_to_hex(sha, sizeof sha, hex);
    if (len != mf.snapshot_bytes || strcmp(hex, mf.snapshot_sha256) != 0) {
        log_error("replica",
                  "%s: %zu bytes of SHA-256 %.16s..., the manifest says %llu bytes of %.16s...: "
                  "the snapshot is damaged",
                  key, len, hex, (unsigned long long)mf.snapshot_bytes, mf.snapshot_sha256);
        err = -EBADMSG;
        goto out;
    }
    err = replica_path(path, tmp, "wisp.db");
    if (err == 0)
        err = replica_write_file(path, data, len);
    if (err < 0)
        goto out;
    info->generation = gen;
    info->seq = gen;
    info->snapshot_bytes = len;
    free(data);
    data = NULL;
    for (guint i = 0; i < objects->len; i++) {
        const struct replica_object *o = &g_array_index(objects, struct replica_object, i);
        if (o->k.gen == gen && o->k.kind == REPLICA_KEY_MANIFEST)
            info->replicated_at = o->mtime;
    }

    /* The log: segments in sequence order, while contiguous and intact. */
    for (guint i = 0; i < objects->len; i++) {
        const struct replica_object *o = &g_array_index(objects, struct replica_object, i);
        if (o->k.gen == gen && o->k.kind == REPLICA_KEY_SEGMENT)
            g_array_append_val(segs, *o);
    }
    g_array_sort(segs, replica_segment_compare);
    uint64_t want_seq = gen + 1, want_from = 0;
    for (guint i = 0; i < segs->len; i++) {
        const struct replica_object *o = &g_array_index(segs, struct replica_object, i);
        if (o->k.seq != want_seq || o->k.from != want_from) {
            log_warn("replica",
                     "%s: segment %016" PRIx64 " (bytes from %llu) is missing; the %u "
                     "segments after it are ignored",
                     prefix, want_seq, (unsigned long long)want_from, segs->len - i);
            info->segments_ignored = segs->len - i;
            break;
        }
        err = store_get_hashed(st, o->key, &data, &len, sha);
        if (err == 0) {
            hash_to_hex(sha, sizeof sha, hex);
            if (len != o->k.to - o->k.from || strncmp(hex, o->k.hash, 16) != 0) {
                log_warn("replica",
                         "%s: %zu bytes of SHA-256 %.16s..., not what its name says: the "
                         "segment is damaged; it and the %u after it are ignored",
                         o->key, len, hex, segs->len - i - 1);
                info->segments_ignored = segs->len - i;
                free(data);
                data = NULL;
                break;
            }
        } else if (err == -ENOENT) {
            log_warn("replica", "%s is gone; it and the %u segments after it are ignored", o->key,
                     segs->len - i - 1);
            info->segments_ignored = segs->len - i;
            err = 0;
            break;
        } else {
            log_error("replica", "get %s: %s", o->key, store_last_error());
            goto out;
        }
        g_byte_array_append(wal, data, (guint)len);
        free(data);
        data = NULL;
        want_seq++;
        want_from = o->k.to;
        info->segments++;
        info->seq = o->k.seq;
        if (o->mtime > info->replicated_at)
            info->replicated_at = o->mtime;
    }
    *page_size = mf.page_size;
    *frames = 0;
    info->wal_bytes = wal->len;
    if (wal->len > 0) {
        uint64_t frame = REPLICA_FRAME_HEADER + (uint64_t)mf.page_size;
        if (wal->len < REPLICA_WAL_HEADER || (wal->len - REPLICA_WAL_HEADER) % frame != 0) {
            log_error("replica",
                      "%s: the log of generation %016" PRIx64 " is %u bytes, not a "
                      "whole number of %u-byte pages",
                      prefix, gen, wal->len, mf.page_size);
            err = -EBADMSG;
            goto out;
        }
        *frames = (wal->len - REPLICA_WAL_HEADER) / frame;
        err = replica_path(path, tmp, "wisp.db-wal");
        if (err == 0)
            err = replica_write_file(path, wal->data, wal->len);
    }
out:
    free(data);
    g_array_free(segs, TRUE);
    g_byte_array_free(wal, TRUE);
    return err;
}

/* ---- the database ------------------------------------------------------------------------- */

/* Opens tmp/wisp.db with SQLite, which replays the WAL; checks that every frame was replayed
 * and that the database is sound; checkpoints, so that wisp.db stands alone. */
static int replica_replay(const char *tmp, uint64_t frames, struct replica_restore_info *info)
{
    char path[PATH_MAX];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc, log_frames = -1, ckpt = -1, err = 0;
    struct stat sb;

    if ((err = replica_path(path, tmp, "wisp.db")) < 0)
        return err;
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc != SQLITE_OK) {
        log_error("replica", "open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        err = -EBADMSG;
        goto out;
    }
    rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW || sqlite3_column_text(st, 0) == NULL ||
        strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) {
        log_error("replica", "%s: integrity_check: %s", path,
                  rc == SQLITE_ROW && sqlite3_column_text(st, 0)
                      ? (const char *)sqlite3_column_text(st, 0)
                      : sqlite3_errmsg(db));
        err = -EBADMSG;
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    /* PASSIVE first: it reports how many frames the WAL holds once SQLite checked them. */
    rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &log_frames, &ckpt);
    if (rc != SQLITE_OK) {
        log_error("replica", "%s: checkpoint: %s", path, sqlite3_errmsg(db));
        err = -EIO;
        goto out;
    }
    if ((uint64_t)(log_frames < 0 ? 0 : log_frames) != frames) {
        log_error("replica",
                  "%s: SQLite replays %d of the %llu frames of the log: the replica's log is "
                  "damaged",
                  path, log_frames, (unsigned long long)frames);
        err = -EBADMSG;
        goto out;
    }
    rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK) {
        log_error("replica", "%s: checkpoint: %s", path, sqlite3_errmsg(db));
        err = -EIO;
        goto out;
    }
out:
    sqlite3_finalize(st);
    if (db && sqlite3_close(db) != SQLITE_OK && err == 0) {
        log_error("replica", "close %s", path);
        err = -EIO;
    }
    if (err == 0 && stat(path, &sb) == 0)
        info->db_bytes = (uint64_t)sb.st_size;
    return err;
}

/* ---- what the metadata names -------------------------------------------------------------- */

struct replica_walk {
    struct meta *m;
    const char *cache_dir;
    bool keep_pending;
    struct replica_restore_info *info;
    GHashTable *chunks;     /* 32-byte hash -> itself (owned) */
    GPtrArray *disks;       /* struct meta_disk * (owned) */
    GPtrArray *checkpoints; /* of the current disk: struct meta_checkpoint * */
    bool missing;
};

static int replica_collect_disk(const struct meta_disk *d, void *opaque)
{
    struct replica_walk *w = opaque;

    g_ptr_array_add(w->disks, g_memdup2(d, sizeof *d));
    return 0;
}

static int replica_collect_checkpoint(const struct meta_checkpoint *c, void *opaque)
{
    struct replica_walk *w = opaque;

    g_ptr_array_add(w->checkpoints, g_memdup2(c, sizeof *c));
    return 0;
}

static void replica_add_chunk(struct replica_walk *w, const struct chunk_hash *h)
{
    if (!g_hash_table_contains(w->chunks, h->b)) {
        void *copy = g_memdup2(h->b, CHUNK_HASH_LEN);
        g_hash_table_add(w->chunks, copy);
    }
}

static int replica_collect_chunk(uint64_t idx, const struct chunk_hash *h, void *opaque)
{
    replica_add_chunk(opaque, h);
    return 0;
}

/* A pending row's file: missing ones set w->missing; bases are chunks the disk names. */
static int replica_check_pending(const struct meta_pending *p, void *opaque)
{
    struct replica_walk *w = opaque;
    char path[PATH_MAX];

    if (p->file[0] == '\0')
        return 0;
    if (w->cache_dir == NULL || replica_path(path, w->cache_dir, p->file) < 0 ||
        access(path, R_OK) < 0)
        w->missing = true;
    return 0;
}

static int replica_collect_base(const struct meta_pending *p, void *opaque)
{
    if (p->base)
        replica_add_chunk(opaque, p->base);
    return 0;
}

static int replica_load_chunks(struct replica_walk *w, const struct meta_disk *d,
                               const struct chunk_hash *root, const char *what)
{
    struct meta_disk v = *d;
    struct chunk_map *map;
    int err;

    v.head_root = *root;
    err = meta_map_load(w->m, &v, &map);
    if (err < 0) {
        log_error("replica", "disk %s: the map of %s cannot be loaded: %s", d->name, what,
                  strerror(-err));
        return err;
    }
    err = chunk_map_foreach(map, replica_collect_chunk, w);
    chunk_map_free(map);
    return err;
}

/* Drops unuploaded data that did not come with the metadata, and collects every chunk a head,
 * a checkpoint or a kept pending row names. */
static int replica_walk_disks(struct replica_walk *w)
{
    int err = meta_disk_list(w->m, replica_collect_disk, w);

    for (guint i = 0; err == 0 && i < w->disks->len; i++) {
        const struct meta_disk *d = g_ptr_array_index(w->disks, i);
        w->info->disks++;
        w->missing = false;
        if (!w->keep_pending)
            err = meta_pending_list(w->m, d->id, replica_check_pending, w);
        if (err == 0 && w->missing) {
            /* A pending row names data flushed with durability=local and never uploaded; its
             * file was on the lost host.  Keeping some rows and not others would mix two
             * flushes: the disk goes back to its last committed head. */
            log_warn("replica",
                     "disk %s: dropping its pending journal: data flushed with "
                     "durability=local but not uploaded before the host was lost; the disk "
                     "is restored to its last committed head (flush %llu)",
                     d->name, (unsigned long long)d->flush_gen);
            err = meta_pending_clear(w->m, d->id);
            w->info->pending_dropped++;
        } else if (err == 0) {
            err = meta_pending_list(w->m, d->id, replica_collect_base, w);
        }
        if (err == 0)
            err = replica_load_chunks(w, d, &d->head_root, "its head");
        w->checkpoints = g_ptr_array_new_with_free_func(g_free);
        if (err == 0)
            err = meta_checkpoint_list(w->m, d->id, replica_collect_checkpoint, w);
        for (guint j = 0; err == 0 && j < w->checkpoints->len; j++) {
            const struct meta_checkpoint *c = g_ptr_array_index(w->checkpoints, j);
            char what[META_DISK_NAME_MAX + 32];
            snprintf(what, sizeof what, "checkpoint %s", c->name);
            w->info->checkpoints++;
            err = replica_load_chunks(w, d, &c->root, what);
        }
        g_ptr_array_unref(w->checkpoints);
        w->checkpoints = NULL;
    }
    w->info->chunks = g_hash_table_size(w->chunks);
    return err;
}

/* ---- chunk verification ------------------------------------------------------------------- */

struct replica_verify_job {
    struct store *st;
    GPtrArray *hashes; /* uint8_t[32], borrowed */
    guint next;
    pthread_mutex_t lock;
    struct replica_restore_info *info;
    int err; /* a store failure that is not about the chunk */
};

static void replica_bad_chunk(struct replica_verify_job *j, const char *hex, bool missing)
{
    pthread_mutex_lock(&j->lock);
    if (missing)
        j->info->chunks_missing++;
    else
        j->info->chunks_corrupt++;
    if (j->info->first_bad_chunk[0] == '\0')
        snprintf(j->info->first_bad_chunk, sizeof j->info->first_bad_chunk, "chunks/%s", hex);
    pthread_mutex_unlock(&j->lock);
}

static void *replica_verify_worker(void *opaque)
{
    struct replica_verify_job *j = opaque;
    char key[80], hex[HASH_SHA256_HEX_LEN + 1];
    uint8_t sha[HASH_SHA256_LEN];

    for (;;) {
        pthread_mutex_lock(&j->lock);
        guint i = j->next++;
        bool stop = j->err < 0;
        pthread_mutex_unlock(&j->lock);
        if (stop || i >= j->hashes->len)
            break;
        const uint8_t *h = g_ptr_array_index(j->hashes, i);
        void *data = NULL;
        size_t len;
        hash_to_hex(h, CHUNK_HASH_LEN, hex);
        snprintf(key, sizeof key, "chunks/%s", hex);
        int err = store_get_hashed(j->st, key, &data, &len, sha);
        free(data);
        if (err == 0 && memcmp(sha, h, CHUNK_HASH_LEN) != 0) {
            log_error("replica", "%s: its content does not hash to its name: the chunk is corrupt",
                      key);
            replica_bad_chunk(j, hex, false);
        } else if (err == -ENOENT) {
            log_error("replica", "%s: missing from the store", key);
            replica_bad_chunk(j, hex, true);
        } else if (err == -EBADMSG) {
            log_error("replica", "%s: the store's checksum fails: the chunk is corrupt", key);
            replica_bad_chunk(j, hex, false);
        } else if (err < 0) {
            log_error("replica", "get %s: %s", key, store_last_error());
            pthread_mutex_lock(&j->lock);
            j->err = err;
            pthread_mutex_unlock(&j->lock);
        } else {
            pthread_mutex_lock(&j->lock);
            j->info->chunks_hashed++;
            pthread_mutex_unlock(&j->lock);
        }
    }
    return NULL;
}

static int replica_list_chunk(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct chunk_hash h;

    if (strncmp(key, "chunks/", 7) == 0 && chunk_hash_from_hex(key + 7, &h) == 0)
        g_hash_table_add(opaque, g_memdup2(h.b, CHUNK_HASH_LEN));
    return 0;
}

static guint replica_hash_hash(gconstpointer p)
{
    guint v;

    memcpy(&v, p, sizeof v); /* a SHA-256 is uniform enough */
    return v;
}

static gboolean replica_hash_equal(gconstpointer a, gconstpointer b)
{
    return memcmp(a, b, CHUNK_HASH_LEN) == 0;
}

static int replica_verify_chunks(struct store *st, GHashTable *chunks,
                                 const struct replica_restore_options *o,
                                 struct replica_restore_info *info)
{
    GHashTable *stored = g_hash_table_new_full(replica_hash_hash, replica_hash_equal, g_free, NULL);
    GPtrArray *present = g_ptr_array_new();
    GHashTableIter it;
    gpointer key;
    char hex[HASH_SHA256_HEX_LEN + 1];
    int err;

    /* Existence: one listing of chunks/, not one request per chunk. */
    err = store_list(st, "chunks/", replica_list_chunk, stored);
    if (err < 0) {
        log_error("replica", "list chunks/ in %s: %s", store_describe(st), store_last_error());
        goto out;
    }
    g_hash_table_iter_init(&it, chunks);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (g_hash_table_contains(stored, key)) {
            g_ptr_array_add(present, key);
            continue;
        }
        hash_to_hex(key, CHUNK_HASH_LEN, hex);
        log_error("replica", "chunks/%s: named by the metadata, missing from the store", hex);
        info->chunks_missing++;
        if (info->first_bad_chunk[0] == '\0')
            snprintf(info->first_bad_chunk, sizeof info->first_bad_chunk, "chunks/%s", hex);
    }
    /* Content: all of them, or a random sample. */
    unsigned want = o->verify == REPLICA_VERIFY_FULL ? present->len
                    : o->sample                      ? o->sample
                                                     : REPLICA_SAMPLE_DEFAULT;
    if (want < present->len) {
        for (guint i = 0; i < want; i++) { /* a partial Fisher-Yates shuffle */
            guint k = i + (guint)g_random_int_range(0, (gint32)(present->len - i));
            gpointer t = present->pdata[i];
            present->pdata[i] = present->pdata[k];
            present->pdata[k] = t;
        }
        g_ptr_array_set_size(present, want);
    }
    struct replica_verify_job job = {.st = st, .hashes = present, .info = info};
    pthread_t threads[REPLICA_VERIFY_THREADS];
    unsigned started = 0;
    pthread_mutex_init(&job.lock, NULL);
    for (unsigned i = 1; i < REPLICA_VERIFY_THREADS && i < present->len; i++) {
        if (pthread_create(&threads[started], NULL, replica_verify_worker, &job) != 0)
            break;
        started++;
    }
    replica_verify_worker(&job);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&job.lock);
    err = job.err;
    if (err == 0 && (info->chunks_missing || info->chunks_corrupt))
        err = -EIO;
out:
    g_ptr_array_unref(present);
    g_hash_table_destroy(stored);
    return err;
}

/* ---- restore ------------------------------------------------------------------------------ */

static int replica_check_target(const char *dir)
{
    char path[PATH_MAX];

    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        log_error("replica", "mkdir %s: %s", dir, strerror(e));
        return -e;
    }
    for (int i = 0; i < 2; i++) {
        int err = replica_path(path, dir, i ? "wisp.db-wal" : "wisp.db");
        if (err < 0)
            return err;
        if (access(path, F_OK) == 0) {
            log_error("replica", "%s exists: restore builds metadata only where there is none",
                      path);
            return -EEXIST;
        }
    }
    return 0;
}

/* Restores generation gen into tmp and checks it (o == NULL: a database that is not the
 * metadata, which gets SQLite's checks only).  0, -ENOENT if the generation went away
 * meanwhile (a newer one replaced it), or an error. */
static int replica_restore_gen(struct store *st, const char *prefix, GArray *objects, uint64_t gen,
                               const char *tmp, const struct replica_restore_options *o,
                               struct replica_restore_info *info)
{
    struct replica_walk w = {.info = info};
    uint32_t page_size;
    uint64_t frames;
    int err;

    err = replica_fetch(st, prefix, objects, gen, tmp, info, &page_size, &frames);
    if (err == 0)
        err = replica_replay(tmp, frames, info);
    if (err < 0 || o == NULL)
        return err; /* any database: SQLite's own checks are all there is */
    w.cache_dir = o->cache_dir;
    w.keep_pending = o->keep_pending;
    err = meta_open(tmp, true, &w.m);
    if (err < 0)
        return err;
    w.chunks = g_hash_table_new_full(replica_hash_hash, replica_hash_equal, g_free, NULL);
    w.disks = g_ptr_array_new_with_free_func(g_free);
    err = replica_walk_disks(&w);
    meta_close(w.m);
    if (err == 0 && o->verify != REPLICA_VERIFY_NONE)
        err = replica_verify_chunks(st, w.chunks, o, info);
    g_hash_table_destroy(w.chunks);
    g_ptr_array_unref(w.disks);
    return err;
}

/* The newest complete generation under prefix into dst (dir/wisp.db for the metadata), built
 * in a temporary directory inside dir; o as for replica_restore_gen. */
static int replica_restore_to(struct store *st, const char *prefix, const char *dir,
                              const char *dst, const struct replica_restore_options *o,
                              struct replica_restore_info *info)
{
    char tmp[PATH_MAX], src[PATH_MAX];
    GArray *objects = NULL;
    int err, attempts = 0;
    uint64_t gen = 0;

    err = replica_scan(st, prefix, &objects);
    if (err < 0)
        return err;
    /* A generation may be deleted under us when the server compacts: then the next newest. */
    for (;;) {
        if (!replica_newest_complete(objects, UINT64_MAX, &gen)) {
            log_error("replica", "%s in %s: no complete generation to restore", prefix,
                      store_describe(st));
            err = -ENOENT;
            break;
        }
        if (snprintf(tmp, sizeof tmp, "%s/.restore-XXXXXX", dir) >= (int)sizeof tmp) {
            err = -ENAMETOOLONG;
            break;
        }
        if (mkdtemp(tmp) == NULL) {
            err = -errno;
            log_error("replica", "mkdtemp %s: %s", tmp, strerror(-err));
            break;
        }
        memset(info, 0, sizeof *info);
        err = replica_restore_gen(st, prefix, objects, gen, tmp, o, info);
        if (err == 0) {
            err = replica_path(src, tmp, "wisp.db");
            /* link, not rename: never replaces a database that appeared meanwhile. */
            if (err < 0) {
                /* logged */
            } else if (link(src, dst) < 0) {
                err = -errno;
                log_error("replica", "link %s to %s: %s", src, dst, strerror(-err));
            } else {
                err = replica_fsync_dir(dir);
            }
        }
        replica_rm_tmp(tmp);
        if (err != -ENOENT || info->snapshot_bytes > 0 || ++attempts == 3)
            break;
        /* The generation went away before its snapshot was read: list again. */
        g_array_free(objects, TRUE);
        objects = NULL;
        err = replica_scan(st, prefix, &objects);
        if (err < 0)
            break;
    }
    if (objects)
        g_array_free(objects, TRUE);
    return err;
}

int replica_restore(struct store *st, const char *dir, const struct replica_restore_options *o,
                    struct replica_restore_info *info)
{
    const char *name = o->name ? o->name : REPLICA_NAME_DEFAULT, *why;
    char prefix[REPLICA_KEY_MAX], dst[PATH_MAX];
    int err;

    memset(info, 0, sizeof *info);
    if (!replica_name_valid(name, &why)) {
        log_error("replica", "replica name '%s': %s", name, why);
        return -EINVAL;
    }
    replica_prefix(name, prefix);
    err = replica_check_target(dir);
    if (err == 0)
        err = replica_path(dst, dir, "wisp.db");
    if (err == 0)
        err = replica_restore_to(st, prefix, dir, dst, o, info);
    if (err == 0)
        log_info("replica",
                 "restored %s from %sgen-%016" PRIx64 ": snapshot of %llu bytes and %u "
                 "segments (to sequence %016" PRIx64 "), %u disks, %u checkpoints, %llu chunks "
                 "named, %llu hashed (verify=%s)",
                 dir, prefix, info->generation, (unsigned long long)info->snapshot_bytes,
                 info->segments, info->seq, info->disks, info->checkpoints,
                 (unsigned long long)info->chunks, (unsigned long long)info->chunks_hashed,
                 replica_verify_to_string(o->verify));
    return err;
}

int replica_restore_db(struct store *st, const char *prefix, const char *db_path,
                       struct replica_restore_info *info)
{
    char wal[PATH_MAX];
    int err;

    memset(info, 0, sizeof *info);
    if (snprintf(wal, sizeof wal, "%s-wal", db_path) >= (int)sizeof wal)
        return -ENAMETOOLONG;
    if (access(db_path, F_OK) == 0 || access(wal, F_OK) == 0) {
        log_error("replica", "%s exists: restore builds a database only where there is none",
                  db_path);
        return -EEXIST;
    }
    g_autofree char *dir = g_path_get_dirname(db_path);
    err = replica_restore_to(st, prefix, dir, db_path, NULL, info);
    if (err == 0)
        log_info("replica",
                 "restored %s from %sgen-%016" PRIx64 ": snapshot of %llu bytes and %u "
                 "segments (to sequence %016" PRIx64 ")",
                 db_path, prefix, info->generation, (unsigned long long)info->snapshot_bytes,
                 info->segments, info->seq);
    return err;
}

int replica_read_copy(struct store *st, const char *name, const char *scratch_dir,
                      int (*fn)(struct meta *m, void *opaque), void *opaque,
                      struct replica_restore_info *info)
{
    struct replica_restore_options o = {
        .name = name,
        .verify = REPLICA_VERIFY_NONE,
        .keep_pending = true,
    };
    char dir[PATH_MAX];
    struct meta *m;
    int err;

    memset(info, 0, sizeof *info);
    err = replica_exists(st, name); /* quietly: restore would log a missing one as an error */
    if (err <= 0)
        return err < 0 ? err : -ENOENT;
    if (snprintf(dir, sizeof dir, "%s/.replica-copy-XXXXXX", scratch_dir) >= (int)sizeof dir)
        return -ENAMETOOLONG;
    if (mkdtemp(dir) == NULL) {
        err = -errno;
        log_error("replica", "mkdtemp %s: %s", dir, strerror(-err));
        return err;
    }
    err = replica_restore(st, dir, &o, info);
    if (err == 0) {
        err = meta_open(dir, true, &m);
        if (err < 0)
            log_error("replica", "open the copy of %s in %s: %s", name, dir, strerror(-err));
    }
    if (err == 0) {
        err = fn(m, opaque);
        meta_close(m);
    }
    replica_rm_tmp(dir);
    return err;
}
