/* replica.c: shipping a metadata database to the object store (replica.h).
 *
 * State of a struct replica, under ship_lock (the counters the WAL hook updates are under
 * `lock`, a leaf lock):
 *
 *   have_gen      a generation has begun locally: the WAL was checkpointed (TRUNCATE) and the
 *                 database file read into snap at that instant
 *   gen_uploaded  its snapshot and manifest are in the store (snap is freed); until then no
 *                 segment of its WAL is formed
 *   shipped_off   bytes of the current WAL in the store; seg holds the next segment once it is
 *                 formed, and keeps it (same key, same bytes) until an upload succeeds: a
 *                 segment is never skipped or reformed
 *
 * The checkpoint is the only moment the WAL restarts, and only this module checkpoints while
 * it runs, so the bytes [0, end of the last commit) of the WAL are stable between two
 * checkpoints and can be read without any lock.  If the WAL is found restarted anyway (its
 * salt changed, or it shrank), a new generation begins.
 *
 * Compaction needs no store: when the WAL is big, a new generation begins locally (checkpoint
 * and snapshot) even if the store is down, so the WAL stays bounded; the newest snapshot
 * waits in memory for the store, replacing any older one still waiting. */
#include "replica.h"
#include "replica_internal.h"

#include "hash.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLICA_COMPACT_BYTES    (UINT64_C(4) << 20)
#define REPLICA_COMPACT_SEGMENTS 1024

struct replica_segment {
    void *data; /* NULL: none formed */
    size_t len;
    uint64_t seq, from, to, commits;
    char hash[17];
};

struct replica {
    pthread_mutex_t *meta_lock; /* the database's users' lock (the metadata's, or another) */
    sqlite3 *db;
    struct store *st;
    char name[META_DISK_NAME_MAX + 1];
    char prefix[REPLICA_KEY_MAX];
    char db_path[PATH_MAX], wal_path[PATH_MAX];
    uint32_t page_size;
    uint64_t compact_bytes;
    unsigned compact_segments;
    double interval;

    pthread_mutex_t lock; /* leaf: the fields below up to ship_lock */
    uint64_t commits;     /* seen by the WAL hook */
    uint64_t wal_frames;  /* frames in the WAL after the last commit */
    double unshipped_since;
    struct replica_stats stats;

    pthread_mutex_t ship_lock; /* serialises shipping; protects everything below */
    bool have_gen, gen_uploaded, gen_uploaded_once, listed, fenced, prune_due, failing;
    GArray *attempts; /* uint64_t: generations begun in the store since the last complete one */
    uint64_t gen, next_seq;
    void *snap;
    size_t snap_len, last_snap_len;
    uint64_t snap_commits;
    uint64_t shipped_off, shipped_commits;
    uint8_t salt[8];
    unsigned gen_segments;
    struct replica_segment seg;

    double captured_at; /* when seg_form last read the commit count */

    pthread_t thread;
    bool thread_started, started;
    pthread_mutex_t wake_lock;
    pthread_cond_t wake;
    bool stopping;
};

/* ---- the WAL hook: runs in the committing thread, inside its COMMIT ------------------------- */

static int replica_wal_hook(void *opaque, sqlite3 *db, const char *schema, int frames)
{
    struct replica *r = opaque;

    pthread_mutex_lock(&r->lock);
    r->commits++;
    r->wal_frames = frames > 0 ? (uint64_t)frames : 0;
    if (r->unshipped_since == 0)
        r->unshipped_since = replica_now();
    pthread_mutex_unlock(&r->lock);
    return SQLITE_OK;
}

static uint64_t replica_wal_end(const struct replica *r, uint64_t frames)
{
    return frames ? REPLICA_WAL_HEADER + frames * (uint64_t)(REPLICA_FRAME_HEADER + r->page_size)
                  : 0;
}

/* ---- small file helpers ------------------------------------------------------------------- */

static int replica_pread_all(int fd, void *buf, size_t len, uint64_t off, const char *path)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            log_error("replica", "read %s: %s", path, strerror(e));
            return -e;
        }
        if (n == 0) {
            log_error("replica", "read %s: %llu bytes at %llu: the file is shorter", path,
                      (unsigned long long)len, (unsigned long long)off);
            return -EIO;
        }
        done += (size_t)n;
    }
    return 0;
}

/* Reads a whole file into a malloc'd buffer. */
static int replica_read_file(const char *path, void **out, size_t *len)
{
    struct stat sb;
    void *buf;
    int fd, r;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        log_error("replica", "open %s: %s", path, strerror(e));
        return -e;
    }
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        log_error("replica", "stat %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    buf = malloc(sb.st_size > 0 ? (size_t)sb.st_size : 1);
    if (buf == NULL) {
        close(fd);
        return -ENOMEM;
    }
    r = replica_pread_all(fd, buf, (size_t)sb.st_size, 0, path);
    close(fd);
    if (r < 0) {
        free(buf);
        return r;
    }
    *out = buf;
    *len = (size_t)sb.st_size;
    return 0;
}

/* ---- generations -------------------------------------------------------------------------- */

static void replica_segment_free(struct replica_segment *s)
{
    free(s->data);
    memset(s, 0, sizeof *s);
}

/* Begins a generation locally: checkpoints the WAL away and reads the database file as it is
 * at that instant.  No store request. */
static int replica_gen_begin(struct replica *r)
{
    int log_frames = 0, ckpt_frames = 0, rc, err;
    uint64_t commits;
    struct stat sb;
    void *snap = NULL;
    size_t len = 0;

    pthread_mutex_lock(r->meta_lock);
    if (!sqlite3_get_autocommit(r->db)) {
        /* The meta lock's users never leave a transaction open across it. */
        pthread_mutex_unlock(r->meta_lock);
        log_error("replica", "checkpoint: a transaction is open on the connection");
        return -EBUSY;
    }
    rc = sqlite3_wal_checkpoint_v2(r->db, "main", SQLITE_CHECKPOINT_TRUNCATE, &log_frames,
                                   &ckpt_frames);
    if (rc != SQLITE_OK) {
        log_error("replica", "checkpoint of %s: %s (%s)", r->db_path, sqlite3_errmsg(r->db),
                  sqlite3_errstr(rc));
        pthread_mutex_unlock(r->meta_lock);
        return rc == SQLITE_BUSY ? -EBUSY : -EIO;
    }
    if (stat(r->wal_path, &sb) == 0 && sb.st_size != 0) {
        pthread_mutex_unlock(r->meta_lock);
        log_error("replica", "checkpoint of %s left %lld bytes in the WAL", r->db_path,
                  (long long)sb.st_size);
        return -EBUSY;
    }
    pthread_mutex_lock(&r->lock);
    commits = r->commits;
    r->wal_frames = 0;
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(r->meta_lock);

    /* Only a checkpoint writes the database file, and only we checkpoint: it holds exactly the
     * state the next WAL frames apply to, without the meta lock. */
    err = replica_read_file(r->db_path, &snap, &len);
    if (err < 0)
        return err;
    free(r->snap);
    replica_segment_free(&r->seg);
    r->snap = snap;
    r->snap_len = len;
    r->snap_commits = commits;
    r->have_gen = true;
    r->gen_uploaded = false;
    r->shipped_off = 0;
    r->gen_segments = 0;
    log_debug("replica", "%s: new generation begun locally (%zu-byte snapshot)", r->name, len);
    return 0;
}

struct replica_listing {
    struct replica *r;
    uint64_t max_seq;
    uint64_t foreign; /* a generation another server wrote, or 0 */
    bool any;
};

static int replica_list_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct replica_listing *l = opaque;
    struct replica_key k;

    if (!replica_key_parse(l->r->prefix, key, &k))
        return 0;
    uint64_t seq = k.kind == REPLICA_KEY_SEGMENT ? k.seq : k.gen;
    if (!l->any || seq > l->max_seq)
        l->max_seq = seq;
    l->any = true;
    /* A generation newer than ours that we did not attempt: another server's. */
    if (l->r->gen_uploaded_once && k.gen > l->r->gen && k.kind != REPLICA_KEY_SEGMENT) {
        bool ours = false;
        for (guint i = 0; i < l->r->attempts->len && !ours; i++)
            ours = g_array_index(l->r->attempts, uint64_t, i) == k.gen;
        if (!ours)
            l->foreign = k.gen;
    }
    return 0;
}

/* Uploads the waiting snapshot as generation next_seq, then its manifest. */
static int replica_gen_upload(struct replica *r)
{
    struct replica_listing l = {.r = r};
    struct replica_manifest mf = {0};
    struct replica_key k = {0};
    char key[REPLICA_KEY_MAX];
    uint8_t sha[HASH_SHA256_LEN];
    char *text;
    int err;

    /* The highest number in the store: where a new server goes on from, and a fence against
     * a second server writing the same replica. */
    err = store_list(r->st, r->prefix, replica_list_one, &l);
    if (err < 0) {
        log_error("replica", "list %s: %s", r->prefix, store_last_error());
        return err;
    }
    if (l.foreign || (r->listed && l.any && l.max_seq >= r->next_seq)) {
        log_error("replica",
                  "%s: the store holds generation or sequence number %016" PRIx64
                  ", which this server did not write: another server writes replica '%s'; "
                  "replication stops (give each server its own replica= name)",
                  r->prefix, l.foreign ? l.foreign : l.max_seq, r->name);
        r->fenced = true;
        return -ESTALE;
    }
    if (l.any && l.max_seq >= r->next_seq)
        r->next_seq = l.max_seq + 1;
    r->listed = true;

    k.kind = REPLICA_KEY_SNAPSHOT;
    k.gen = r->next_seq++;
    g_array_append_val(r->attempts, k.gen);
    err = hash_sha256(r->snap, r->snap_len, sha);
    if (err < 0)
        return err;
    replica_key_format(r->prefix, &k, key);
    err = store_put_hashed(r->st, key, r->snap, r->snap_len, sha, false);
    if (err < 0) {
        log_error("replica", "put %s: %s", key, store_last_error());
        return err;
    }
    mf.gen = k.gen;
    mf.snapshot_bytes = r->snap_len;
    hash_to_hex(sha, sizeof sha, mf.snapshot_sha256);
    mf.page_size = r->page_size;
    mf.created = time(NULL);
    text = replica_manifest_format(&mf);
    if (text == NULL)
        return -ENOMEM;
    k.kind = REPLICA_KEY_MANIFEST;
    replica_key_format(r->prefix, &k, key);
    err = store_put(r->st, key, text, strlen(text));
    free(text);
    if (err < 0) {
        log_error("replica", "put %s: %s", key, store_last_error());
        return err;
    }
    r->gen = k.gen;
    r->gen_uploaded = true;
    r->gen_uploaded_once = true;
    g_array_set_size(r->attempts, 0);
    r->prune_due = true;
    r->last_snap_len = r->snap_len;
    if (r->snap_commits > r->shipped_commits)
        r->shipped_commits = r->snap_commits;
    pthread_mutex_lock(&r->lock);
    r->stats.generation = k.gen;
    r->stats.seq = k.gen;
    r->stats.snapshots++;
    r->stats.snapshot_bytes += r->snap_len;
    pthread_mutex_unlock(&r->lock);
    log_info("replica", "%sgen-%016" PRIx64 ": snapshot of %zu bytes in the store", r->prefix,
             k.gen, r->snap_len);
    free(r->snap);
    r->snap = NULL;
    r->snap_len = 0;
    return 0;
}

struct replica_prune {
    struct replica *r;
    GPtrArray *manifests, *others;
};

static int replica_prune_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct replica_prune *p = opaque;
    struct replica_key k;

    if (!replica_key_parse(p->r->prefix, key, &k) || k.gen >= p->r->gen)
        return 0;
    g_ptr_array_add(k.kind == REPLICA_KEY_MANIFEST ? p->manifests : p->others, g_strdup(key));
    return 0;
}

/* Deletes every generation older than the current one, manifests first, so that a generation
 * half deleted is never taken for a complete one. */
static int replica_prune(struct replica *r)
{
    struct replica_prune p = {.r = r,
                              .manifests = g_ptr_array_new_with_free_func(g_free),
                              .others = g_ptr_array_new_with_free_func(g_free)};
    int err = store_list(r->st, r->prefix, replica_prune_one, &p);

    for (guint i = 0; err == 0 && i < p.manifests->len; i++)
        err = store_delete(r->st, g_ptr_array_index(p.manifests, i));
    for (guint i = 0; err == 0 && i < p.others->len; i++)
        err = store_delete(r->st, g_ptr_array_index(p.others, i));
    if (err < 0)
        log_warn("replica", "%s: deleting older generations: %s (retried later)", r->prefix,
                 store_last_error());
    else
        r->prune_due = false;
    if (err == 0 && p.manifests->len + p.others->len > 0)
        log_debug("replica", "%s: deleted %u objects of older generations", r->prefix,
                  p.manifests->len + p.others->len);
    g_ptr_array_unref(p.manifests);
    g_ptr_array_unref(p.others);
    return err;
}

/* ---- segments ----------------------------------------------------------------------------- */

static int replica_seg_upload(struct replica *r)
{
    struct replica_key k = {.kind = REPLICA_KEY_SEGMENT,
                            .gen = r->gen,
                            .seq = r->seg.seq,
                            .from = r->seg.from,
                            .to = r->seg.to};
    char key[REPLICA_KEY_MAX];
    int err;

    memcpy(k.hash, r->seg.hash, sizeof k.hash);
    replica_key_format(r->prefix, &k, key);
    err = store_put(r->st, key, r->seg.data, r->seg.len);
    if (err < 0) {
        log_error("replica", "put %s: %s", key, store_last_error());
        return err;
    }
    r->shipped_off = r->seg.to;
    if (r->seg.commits > r->shipped_commits)
        r->shipped_commits = r->seg.commits;
    r->gen_segments++;
    pthread_mutex_lock(&r->lock);
    r->stats.seq = r->seg.seq;
    r->stats.segments++;
    r->stats.segment_bytes += r->seg.len;
    pthread_mutex_unlock(&r->lock);
    replica_segment_free(&r->seg);
    return 0;
}

/* Forms the next segment from the WAL's committed bytes past shipped_off.  1 if one was
 * formed, 0 if there is nothing new, -EAGAIN if the WAL restarted behind our back (a new
 * generation must begin). */
static int replica_seg_form(struct replica *r)
{
    uint8_t header[REPLICA_WAL_HEADER], sha[HASH_SHA256_LEN];
    char hex[HASH_SHA256_HEX_LEN + 1];
    uint64_t frames, commits, end;
    int fd, err;

    pthread_mutex_lock(&r->lock);
    frames = r->wal_frames;
    commits = r->commits;
    r->captured_at = replica_now();
    pthread_mutex_unlock(&r->lock);
    end = replica_wal_end(r, frames);
    if (end == r->shipped_off) {
        /* Every commit counted is in bytes already shipped. */
        if (commits > r->shipped_commits)
            r->shipped_commits = commits;
        return 0;
    }
    if (end < r->shipped_off) {
        log_warn("replica", "%s: the WAL shrank to %llu bytes (shipped %llu): a new generation",
                 r->wal_path, (unsigned long long)end, (unsigned long long)r->shipped_off);
        return -EAGAIN;
    }
    fd = open(r->wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        log_error("replica", "open %s: %s", r->wal_path, strerror(e));
        return -e;
    }
    err = replica_pread_all(fd, header, sizeof header, 0, r->wal_path);
    if (err == 0) {
        uint32_t magic = (uint32_t)header[0] << 24 | header[1] << 16 | header[2] << 8 | header[3];
        uint32_t psize = (uint32_t)header[8] << 24 | header[9] << 16 | header[10] << 8 | header[11];
        if ((magic & ~1u) != 0x377f0682 || psize != r->page_size) {
            log_error("replica", "%s: not a WAL of %u-byte pages", r->wal_path, r->page_size);
            err = -EBADMSG;
        } else if (r->shipped_off == 0) {
            memcpy(r->salt, header + 16, sizeof r->salt);
        } else if (memcmp(r->salt, header + 16, sizeof r->salt) != 0) {
            log_warn("replica", "%s: the WAL restarted (new salt): a new generation", r->wal_path);
            err = -EAGAIN;
        }
    }
    if (err == 0) {
        size_t len = (size_t)(end - r->shipped_off);
        r->seg.data = malloc(len);
        if (r->seg.data == NULL)
            err = -ENOMEM;
        else
            err = replica_pread_all(fd, r->seg.data, len, r->shipped_off, r->wal_path);
        if (err == 0)
            err = hash_sha256(r->seg.data, len, sha);
        if (err < 0) {
            replica_segment_free(&r->seg);
        } else {
            hash_to_hex(sha, sizeof sha, hex);
            memcpy(r->seg.hash, hex, 16);
            r->seg.hash[16] = '\0';
            r->seg.len = len;
            r->seg.from = r->shipped_off;
            r->seg.to = end;
            r->seg.commits = commits;
            r->seg.seq = r->next_seq++;
        }
    }
    close(fd);
    return err < 0 ? err : 1;
}

/* ---- shipping ----------------------------------------------------------------------------- */

static bool replica_compact_due(struct replica *r)
{
    uint64_t frames, limit = r->compact_bytes;

    if (!r->have_gen)
        return false;
    pthread_mutex_lock(&r->lock);
    frames = r->wal_frames;
    pthread_mutex_unlock(&r->lock);
    if (r->last_snap_len > limit)
        limit = r->last_snap_len;
    return replica_wal_end(r, frames) >= limit || r->gen_segments >= r->compact_segments;
}

/* Caller holds ship_lock. */
static int replica_ship_locked(struct replica *r, bool compact)
{
    int err = 0;

    for (int attempt = 0; attempt < 3; attempt++) {
        if (r->fenced)
            return -ESTALE;
        if (!r->have_gen || (compact && replica_compact_due(r))) {
            err = replica_gen_begin(r);
            if (err < 0)
                return err;
        }
        if (!r->gen_uploaded && (err = replica_gen_upload(r)) < 0)
            return err;
        if (r->seg.data && (err = replica_seg_upload(r)) < 0)
            return err;
        err = replica_seg_form(r);
        if (err == -EAGAIN) {
            r->have_gen = false;
            continue;
        }
        if (err == 1)
            err = replica_seg_upload(r);
        if (err == 0 && r->prune_due)
            replica_prune(r); /* best effort: retried after the next shipment */
        return err;
    }
    return err < 0 ? err : -EIO;
}

/* Records the outcome for the stats and logs changes (not every failed retry). */
static void replica_note(struct replica *r, int err)
{
    pthread_mutex_lock(&r->lock);
    r->stats.shipped_commits = r->shipped_commits;
    r->stats.fenced = r->fenced;
    if (err < 0)
        r->stats.failures++;
    if (r->shipped_commits >= r->commits)
        r->unshipped_since = 0;
    else if (err == 0 && r->captured_at > r->unshipped_since)
        r->unshipped_since = r->captured_at; /* what was committed before it is shipped */
    pthread_mutex_unlock(&r->lock);
    if (err < 0 && !r->failing && err != -ESTALE) /* a fence was logged where it was found */
        log_warn("replica",
                 "%s: shipping failed (%s); the bytes are kept and shipped in order "
                 "when the store answers",
                 r->prefix, strerror(-err));
    else if (err == 0 && r->failing)
        log_info("replica", "%s: caught up", r->prefix);
    r->failing = err < 0;
}

int replica_ship(struct replica *r)
{
    int err;

    pthread_mutex_lock(&r->ship_lock);
    err = replica_ship_locked(r, true);
    replica_note(r, err);
    pthread_mutex_unlock(&r->ship_lock);
    return err;
}

int replica_sync(struct replica *r)
{
    uint64_t target;
    int err = 0;
    bool done;

    pthread_mutex_lock(&r->lock);
    target = r->commits;
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_lock(&r->ship_lock);
    if (r->shipped_commits < target) {
        err = replica_ship_locked(r, false);
        replica_note(r, err);
    }
    done = r->shipped_commits >= target;
    pthread_mutex_unlock(&r->ship_lock);
    if (done)
        return 0;
    return err == -ESTALE ? -ESTALE : -EIO;
}

static void *replica_thread(void *opaque)
{
    struct replica *r = opaque;

    pthread_mutex_lock(&r->wake_lock);
    while (!r->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + r->interval;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&r->wake, &r->wake_lock, &ts);
        if (r->stopping)
            break;
        pthread_mutex_unlock(&r->wake_lock);
        replica_ship(r);
        pthread_mutex_lock(&r->wake_lock);
    }
    pthread_mutex_unlock(&r->wake_lock);
    return NULL;
}

/* ---- start and stop ----------------------------------------------------------------------- */

int replica_start(struct meta *m, pthread_mutex_t *meta_lock, struct store *st,
                  const struct replica_options *o, struct replica **out)
{
    const char *name = o && o->name ? o->name : REPLICA_NAME_DEFAULT, *why;
    char prefix[REPLICA_KEY_MAX], db_path[PATH_MAX];

    if (!replica_name_valid(name, &why)) {
        log_error("replica", "replica name '%s': %s", name, why);
        return -EINVAL;
    }
    replica_prefix(name, prefix);
    if (snprintf(db_path, sizeof db_path, "%s/wisp.db", meta_dir(m)) >= (int)sizeof db_path)
        return -ENAMETOOLONG;
    return replica_start_db(meta_sqlite(m), db_path, meta_lock, st, prefix, name, o, out);
}

int replica_start_db(sqlite3 *db, const char *db_path, pthread_mutex_t *db_lock, struct store *st,
                     const char *prefix, const char *label, const struct replica_options *o,
                     struct replica **out)
{
    struct replica *r;
    sqlite3_stmt *stmt = NULL;
    int rc, err = 0;

    if (strlen(prefix) + 128 >= REPLICA_KEY_MAX || prefix[0] == '\0' ||
        prefix[strlen(prefix) - 1] != '/') {
        log_error("replica", "replica prefix '%s': must end in '/' and leave room for keys",
                  prefix);
        return -EINVAL;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    r->meta_lock = db_lock;
    r->db = db;
    r->st = st;
    snprintf(r->name, sizeof r->name, "%s", label);
    snprintf(r->prefix, sizeof r->prefix, "%s", prefix);
    if (snprintf(r->db_path, sizeof r->db_path, "%s", db_path) >= (int)sizeof r->db_path ||
        snprintf(r->wal_path, sizeof r->wal_path, "%s-wal", db_path) >= (int)sizeof r->wal_path) {
        free(r);
        return -ENAMETOOLONG;
    }
    r->compact_bytes = o && o->compact_bytes ? o->compact_bytes : REPLICA_COMPACT_BYTES;
    r->compact_segments = o && o->compact_segments ? o->compact_segments : REPLICA_COMPACT_SEGMENTS;
    r->interval = o ? o->interval : 0;
    r->next_seq = 1;
    r->attempts = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->ship_lock, NULL);
    pthread_mutex_init(&r->wake_lock, NULL);
    pthread_cond_init(&r->wake, NULL);

    pthread_mutex_lock(db_lock);
    rc = sqlite3_prepare_v2(r->db, "PRAGMA page_size", -1, &stmt, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW)
        r->page_size = (uint32_t)sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    if (r->page_size < 512 || r->page_size > 65536) {
        log_error("replica", "%s: page size: %s", r->db_path, sqlite3_errmsg(r->db));
        err = -EIO;
    }
    /* Checkpoints are ours from now on: no auto-checkpoint, and the hook counts commits. */
    if (err == 0 && sqlite3_wal_autocheckpoint(r->db, 0) != SQLITE_OK)
        err = -EIO;
    if (err == 0)
        sqlite3_wal_hook(r->db, replica_wal_hook, r);
    pthread_mutex_unlock(db_lock);
    if (err == 0 && r->interval > 0) {
        if (pthread_create(&r->thread, NULL, replica_thread, r) != 0) {
            log_error("replica", "cannot start the replication thread");
            err = -EAGAIN;
        } else {
            r->thread_started = true;
        }
    }
    if (err < 0) {
        replica_stop(r);
        return err;
    }
    r->started = true;
    log_info("replica", "replicating %s to %s (every %.3g s)", r->db_path, r->prefix, r->interval);
    *out = r;
    return 0;
}

void replica_stop(struct replica *r)
{
    int err;

    if (r == NULL)
        return;
    if (r->thread_started) {
        pthread_mutex_lock(&r->wake_lock);
        r->stopping = true;
        pthread_cond_signal(&r->wake);
        pthread_mutex_unlock(&r->wake_lock);
        pthread_join(r->thread, NULL);
    }
    if (r->started) {
        err = replica_ship(r);
        if (err < 0 && err != -ESTALE)
            log_warn("replica",
                     "%s: the last commits could not be shipped at shut-down (%s); "
                     "the next start ships a new snapshot",
                     r->prefix, strerror(-err));
    }
    pthread_mutex_lock(r->meta_lock);
    sqlite3_wal_hook(r->db, NULL, NULL);
    pthread_mutex_unlock(r->meta_lock);
    free(r->snap);
    replica_segment_free(&r->seg);
    g_array_free(r->attempts, TRUE);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->wake_lock);
    pthread_mutex_destroy(&r->ship_lock);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void replica_get_stats(struct replica *r, struct replica_stats *out)
{
    pthread_mutex_lock(&r->lock);
    *out = r->stats;
    out->commits = r->commits;
    out->wal_bytes = replica_wal_end(r, r->wal_frames);
    out->lag_s = r->unshipped_since > 0 ? replica_now() - r->unshipped_since : 0;
    pthread_mutex_unlock(&r->lock);
}
