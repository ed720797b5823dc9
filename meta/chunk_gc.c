/* chunk_gc.c: garbage collection of chunk objects (the protocol and its invariant are in
 * chunk_gc.h).
 *
 * A run is four steps in one function, chunk_gc_run: read the store's clock, collect the
 * references, list and sort the objects, then look again at each candidate and delete it.  The
 * last step runs `parallel` workers (this thread included), each taking the next candidate
 * under gc->lock, which also guards the report's counters.  No lock is held across a store
 * request. */
#include "chunk_gc.h"

#include "log.h"
#include "meta_refs.h"
#include "replica.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define CHUNK_GC_KEY_PREFIX     "chunks/"
#define CHUNK_GC_FOREIGN_LOGGED 10 /* foreign keys logged one by one; the rest are counted */

struct gc_candidate {
    struct chunk_hash hash;
    uint64_t size;
};

struct gc_run {
    struct store *st;
    const struct chunk_gc_options *o;
    struct chunk_gc_report *report;
    struct meta_refs *refs;
    int64_t cutoff; /* T0 - grace: unreferenced objects older than this are garbage */
    uint64_t referenced_listed;

    struct gc_candidate *cand;
    size_t n_cand, cap_cand;

    pthread_mutex_t lock; /* protects next, first_error and the report during deletes */
    size_t next;
    int first_error;
};

static double gc_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool gc_stopped(const struct chunk_gc_options *o)
{
    return o->stop && __atomic_load_n(o->stop, __ATOMIC_ACQUIRE);
}

/* ---- keys, durations and the report's words ------------------------------------------------ */

bool chunk_gc_key_parse(const char *key, struct chunk_hash *out)
{
    const char *hex = key + strlen(CHUNK_GC_KEY_PREFIX);

    if (strncmp(key, CHUNK_GC_KEY_PREFIX, strlen(CHUNK_GC_KEY_PREFIX)) != 0)
        return false;
    /* Writers name chunks in lower case only: anything else is not theirs. */
    for (size_t i = 0; i < 2 * CHUNK_HASH_LEN; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return false;
    return chunk_hash_from_hex(hex, out) == 0;
}

int chunk_gc_parse_duration(const char *text, uint64_t *seconds)
{
    uint64_t v = 0, unit = 1;
    const char *p = text;

    if (text == NULL || *p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (CHUNK_GC_DURATION_MAX - (uint64_t)(*p - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    switch (*p) {
    case '\0':
        break;
    case 's':
        p++;
        break;
    case 'm':
        unit = 60;
        p++;
        break;
    case 'h':
        unit = 3600;
        p++;
        break;
    case 'd':
        unit = 86400;
        p++;
        break;
    default:
        return -EINVAL;
    }
    if (*p != '\0' || v > CHUNK_GC_DURATION_MAX / unit)
        return -EINVAL;
    *seconds = v * unit;
    return 0;
}

void chunk_gc_format_duration(uint64_t seconds, char *buf, size_t size)
{
    static const struct {
        uint64_t len;
        char unit;
    } units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}};

    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (seconds > 0 && seconds % units[i].len == 0) {
            snprintf(buf, size, "%" PRIu64 "%c", seconds / units[i].len, units[i].unit);
            return;
        }
    }
    snprintf(buf, size, "%" PRIu64 "s", seconds);
}

static void gc_format_bytes(uint64_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    size_t u = 0;

    if (bytes < 1024) {
        snprintf(buf, size, "%" PRIu64 " bytes", bytes);
        return;
    }
    v /= 1024;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, "%.1f %s", v, units[u]);
}

void chunk_gc_format_report(const struct chunk_gc_report *r, char *buf, size_t size)
{
    char grace[32], deleted[32];
    size_t n;

    chunk_gc_format_duration(r->grace_s, grace, sizeof grace);
    gc_format_bytes(r->deleted_bytes, deleted, sizeof deleted);
    n = (size_t)snprintf(buf, size,
                         "%" PRIu64 " chunk objects unreferenced, %" PRIu64 " %s (%s), %" PRIu64
                         " kept (younger than the grace period %s); %" PRIu64 " referenced",
                         r->unreferenced, r->deleted, r->dry_run ? "would be deleted" : "deleted",
                         deleted, r->kept_young, grace, r->referenced);
#define GC_MORE(count, fmt)                                                                        \
    do {                                                                                           \
        if ((count) > 0 && n < size)                                                               \
            n += (size_t)snprintf(buf + n, size - n, fmt, (count));                                \
    } while (0)
    GC_MORE(r->replicas, "; %" PRIu64 " other metadata replicas read");
    GC_MORE(r->replicas_incomplete, "; %" PRIu64 " replicas skipped (no complete generation yet)");
    GC_MORE(r->already_gone, "; %" PRIu64 " already deleted by another GC");
    GC_MORE(r->failed, "; %" PRIu64 " deletes failed");
    GC_MORE(r->foreign, "; %" PRIu64 " keys under chunks/ that name no chunk, left alone");
    GC_MORE(r->missing, "; %" PRIu64 " referenced chunks missing from the store");
#undef GC_MORE
}

/* ---- 1. the store's clock ------------------------------------------------------------------- */

int chunk_gc_store_clock(struct store *st, time_t *t0)
{
    static const char body[] = "wisp gc clock\n";
    char key[64], hex[17];
    struct store_stat sb;
    uint8_t rnd[8];
    int r;

    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        int e = errno;
        log_error("gc", "getrandom: %s", strerror(e));
        return -e;
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    snprintf(key, sizeof key, "%s%s", CHUNK_GC_CLOCK_KEY_PREFIX, hex);
    r = store_put(st, key, body, sizeof body - 1);
    if (r < 0) {
        log_error("gc", "cannot read the store's clock: put %s: %s", key, store_last_error());
        return r;
    }
    r = store_head(st, key, &sb);
    if (r < 0)
        log_error("gc", "cannot read the store's clock: head %s: %s", key, store_last_error());
    else
        *t0 = sb.mtime;
    /* A marker left behind is harmless (not under chunks/), but say so. */
    if (store_delete(st, key) < 0)
        log_warn("gc", "delete %s: %s (a leftover marker, safe to delete)", key,
                 store_last_error());
    return r;
}

/* ---- 3. listing ------------------------------------------------------------------------------ */

static int gc_candidate_add(struct gc_run *g, const struct chunk_hash *h, uint64_t size)
{
    if (g->n_cand == g->cap_cand) {
        size_t ncap = g->cap_cand ? g->cap_cand * 2 : 256;
        struct gc_candidate *nc = realloc(g->cand, ncap * sizeof *nc);
        if (nc == NULL) {
            log_error("gc", "out of memory listing candidates");
            return -ENOMEM;
        }
        g->cand = nc;
        g->cap_cand = ncap;
    }
    g->cand[g->n_cand].hash = *h;
    g->cand[g->n_cand].size = size;
    g->n_cand++;
    return 0;
}

static int gc_list_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct gc_run *g = opaque;
    struct chunk_gc_report *rep = g->report;
    struct chunk_hash h;

    if (gc_stopped(g->o))
        return -ECANCELED;
    if (!chunk_gc_key_parse(key, &h)) {
        if (rep->foreign++ < CHUNK_GC_FOREIGN_LOGGED)
            log_warn("gc", "%s is not a chunk key: left alone", key);
        return 0;
    }
    rep->objects++;
    rep->object_bytes += size;
    if (meta_refs_contains(g->refs, &h)) {
        g->referenced_listed++;
        return 0;
    }
    rep->unreferenced++;
    if ((int64_t)mtime >= g->cutoff) {
        rep->kept_young++;
        rep->kept_young_bytes += size;
        return 0;
    }
    return gc_candidate_add(g, &h, size);
}

/* ---- 4. look again, delete ------------------------------------------------------------------- */

static void gc_error_locked(struct gc_run *g, int r)
{
    g->report->failed++;
    if (g->first_error == 0)
        g->first_error = r;
}

static void gc_delete_one(struct gc_run *g, const struct gc_candidate *c)
{
    char hex[2 * CHUNK_HASH_LEN + 1], key[80];
    struct store_stat sb;
    int r;

    chunk_hash_to_hex(&c->hash, hex);
    snprintf(key, sizeof key, CHUNK_GC_KEY_PREFIX "%s", hex);
    r = store_head(g->st, key, &sb);
    if (r == -ENOENT) {
        pthread_mutex_lock(&g->lock);
        g->report->already_gone++;
        pthread_mutex_unlock(&g->lock);
        return;
    }
    if (r < 0) {
        log_error("gc", "head %s: %s", key, store_last_error());
        pthread_mutex_lock(&g->lock);
        gc_error_locked(g, r);
        pthread_mutex_unlock(&g->lock);
        return;
    }
    if ((int64_t)sb.mtime >= g->cutoff) {
        /* Refreshed by a writer since the listing: it is about to be referenced. */
        log_debug("gc", "%s was refreshed since the listing: kept", key);
        pthread_mutex_lock(&g->lock);
        g->report->kept_young++;
        g->report->kept_young_bytes += sb.size;
        pthread_mutex_unlock(&g->lock);
        return;
    }
    r = store_delete(g->st, key); /* a missing object's delete succeeds */
    if (r < 0)
        log_error("gc", "delete %s: %s", key, store_last_error());
    else
        log_debug("gc", "deleted %s (%" PRIu64 " bytes)", key, sb.size);
    pthread_mutex_lock(&g->lock);
    if (r < 0) {
        gc_error_locked(g, r);
    } else {
        g->report->deleted++;
        g->report->deleted_bytes += sb.size;
    }
    pthread_mutex_unlock(&g->lock);
}

static void *gc_delete_worker(void *opaque)
{
    struct gc_run *g = opaque;

    for (;;) {
        pthread_mutex_lock(&g->lock);
        size_t i = g->next < g->n_cand && !gc_stopped(g->o) ? g->next++ : g->n_cand;
        pthread_mutex_unlock(&g->lock);
        if (i == g->n_cand)
            break;
        gc_delete_one(g, &g->cand[i]);
    }
    return NULL;
}

static void gc_delete_all(struct gc_run *g)
{
    unsigned workers = g->o->parallel ? g->o->parallel : CHUNK_GC_PARALLEL_DEFAULT;
    pthread_t *threads;
    unsigned started = 0;

    if (workers > g->n_cand)
        workers = g->n_cand > 0 ? (unsigned)g->n_cand : 1;
    threads = calloc(workers, sizeof *threads);
    for (unsigned i = 1; threads && i < workers; i++) {
        int e = pthread_create(&threads[started], NULL, gc_delete_worker, g);
        if (e != 0) {
            log_warn("gc", "pthread_create: %s: deleting with fewer workers", strerror(e));
            break;
        }
        started++;
    }
    gc_delete_worker(g);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
}

/* ---- 2b. the other hosts' references -------------------------------------------------------- */

struct gc_replicas {
    struct store *st;
    const struct chunk_gc_options *o;
    struct meta_refs *refs;
    struct chunk_gc_report *report;
};

static int gc_replica_add_refs(struct meta *m, void *opaque)
{
    return meta_refs_add(opaque, m);
}

static int gc_replica_one(const char *name, void *opaque)
{
    struct gc_replicas *g = opaque;
    struct replica_restore_info info;
    const char *scratch = g->o->scratch_dir ? g->o->scratch_dir : g_get_tmp_dir();
    int r;

    if (g->o->own_replica && strcmp(name, g->o->own_replica) == 0)
        return 0;
    if (gc_stopped(g->o))
        return -ECANCELED;
    r = replica_read_copy(g->st, name, scratch, gc_replica_add_refs, g->refs, &info);
    if (r == -ENOENT && info.snapshot_bytes == 0) {
        log_info("gc", "replica %s has no complete generation yet: skipped", name);
        g->report->replicas_incomplete++;
        return 0;
    }
    if (r < 0) {
        log_error("gc", "cannot read the references of replica %s: %s", name, strerror(-r));
        return r;
    }
    g->report->replicas++;
    return 0;
}

/* ---- the run ----------------------------------------------------------------------------------
 */

int chunk_gc_run(struct store *st, struct meta *m, const struct chunk_gc_options *o,
                 struct chunk_gc_report *out)
{
    struct gc_run g = {.st = st, .o = o, .report = out};
    struct meta_refs_stats rs;
    double start = gc_now();
    time_t t0 = 0;
    int r;

    memset(out, 0, sizeof *out);
    out->dry_run = o->dry_run;
    out->grace_s = o->grace_s;
    if (o->grace_s > CHUNK_GC_DURATION_MAX) {
        log_error("gc", "grace of %" PRIu64 " s is out of range", o->grace_s);
        return -EINVAL;
    }

    /* 1. T0 first: everything committed from here on is either in R or young. */
    r = chunk_gc_store_clock(st, &t0);
    if (r < 0)
        return r;
    out->store_time = t0;
    g.cutoff = (int64_t)t0 - (int64_t)o->grace_s;

    /* 2. R, in one snapshot, under the versions lock if the caller has one. */
    if (o->snapshot_lock)
        pthread_mutex_lock(o->snapshot_lock);
    r = meta_refs_collect(m, &g.refs);
    if (o->snapshot_lock)
        pthread_mutex_unlock(o->snapshot_lock);
    if (r < 0) {
        log_error("gc", "cannot collect the references: %s; nothing deleted", strerror(-r));
        return r;
    }
    struct gc_replicas gr = {.st = st, .o = o, .refs = g.refs, .report = out};
    r = replica_list_names(st, gc_replica_one, &gr);
    if (r < 0) {
        if (r != -ECANCELED)
            log_error("gc", "the other hosts' references are incomplete; nothing deleted");
        meta_refs_free(g.refs);
        return r;
    }
    meta_refs_get_stats(g.refs, &rs);
    out->disks = rs.disks;
    out->versions = rs.versions;
    out->pages = rs.pages;
    out->pages_shared = rs.pages_shared;
    out->referenced = rs.chunks;

    /* 3. List and sort. */
    r = store_list(st, CHUNK_GC_KEY_PREFIX, gc_list_one, &g);
    if (r < 0 && r != -ECANCELED)
        log_error("gc", "list %s: %s; nothing deleted", CHUNK_GC_KEY_PREFIX,
                  r == -ENOMEM ? "out of memory" : store_last_error());
    if (out->foreign > CHUNK_GC_FOREIGN_LOGGED)
        log_warn("gc", "%" PRIu64 " keys under %s are not chunk keys: left alone", out->foreign,
                 CHUNK_GC_KEY_PREFIX);
    if (r == 0 && out->referenced > g.referenced_listed) {
        out->missing = out->referenced - g.referenced_listed;
        log_error("gc",
                  "%" PRIu64 " chunks referenced by some version are missing from %s: "
                  "their data is lost",
                  out->missing, store_describe(st));
    }

    /* 4. Look again and delete; with dry_run only count. */
    if (r == 0 && o->dry_run) {
        out->deleted = g.n_cand;
        for (size_t i = 0; i < g.n_cand; i++)
            out->deleted_bytes += g.cand[i].size;
    } else if (r == 0) {
        pthread_mutex_init(&g.lock, NULL);
        gc_delete_all(&g);
        pthread_mutex_destroy(&g.lock);
        r = g.next < g.n_cand ? -ECANCELED : g.first_error; /* not all taken: stopped */
    }
    meta_refs_free(g.refs);
    free(g.cand);
    out->seconds = gc_now() - start;
    if (r == -ECANCELED)
        log_info("gc", "stopped early (shutting down)");
    return r;
}
