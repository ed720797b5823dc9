/* test_replica.c: replication of a metadata database (meta/replica.h) on a file:// store,
 * without a server.
 *
 * A database goes through a random sequence of commits (disks created and deleted, heads
 * committed, checkpoints created and deleted, pending rows), shipped now and then, with a
 * small compaction threshold so that generations turn over.  At several points it is restored
 * into a fresh directory and its logical content (disks, heads, checkpoints, pending rows) must
 * equal the content at the last shipment exactly.  Then: a missing segment and a damaged one
 * end the log there (an earlier committed state, never a later one); pending rows whose files
 * are gone are dropped; a restart begins a new generation with higher numbers; verification
 * names a deleted and a corrupted chunk; a non-empty target is refused; a second server on the
 * same replica name fences the first. */
#include "hash.h"
#include "log.h"
#include "meta.h"
#include "meta_test.h"
#include "replica.h"
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glib.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char test_dir[PATH_MAX];
static struct store *st;
static pthread_mutex_t meta_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rng = 0x5eed;
static GPtrArray *chunk_hashes; /* struct chunk_hash * of chunks in the store */
static unsigned restores;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void test_cleanup(void)
{
    if (test_dir[0] && !getenv("WISP_TEST_KEEP"))
        nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t rnd(void)
{
    rng += 0x9e3779b97f4a7c15;
    uint64_t z = rng;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
}

/* A chunk object in the store with random content; its hash. */
static struct chunk_hash new_chunk(void)
{
    uint8_t data[256];
    struct chunk_hash h;
    char key[80], hex[65];

    for (size_t i = 0; i < sizeof data; i += 8) {
        uint64_t v = rnd();
        memcpy(data + i, &v, 8);
    }
    REQUIRE(hash_sha256(data, sizeof data, h.b) == 0);
    chunk_hash_to_hex(&h, hex);
    snprintf(key, sizeof key, "chunks/%s", hex);
    REQUIRE(store_put(st, key, data, sizeof data) == 0);
    g_ptr_array_add(chunk_hashes, g_memdup2(&h, sizeof h));
    return h;
}

/* ---- the logical content of a database ------------------------------------------------------ */

struct dump {
    struct meta *m;
    GString *s;
    bool pending;
};

static int dump_checkpoint(const struct meta_checkpoint *c, void *opaque)
{
    struct dump *d = opaque;
    char hex[65];

    chunk_hash_to_hex(&c->root, hex);
    g_string_append_printf(d->s, "  checkpoint %s %s '%s'\n", c->name, hex, c->comment);
    return 0;
}

static int dump_pending(const struct meta_pending *p, void *opaque)
{
    struct dump *d = opaque;

    g_string_append_printf(d->s, "  pending %" PRIu64 " gen %" PRIu64 " %s\n", p->idx, p->gen,
                           p->file);
    return 0;
}

static int dump_disk(const struct meta_disk *disk, void *opaque)
{
    struct dump *d = opaque;
    char hex[65];

    chunk_hash_to_hex(&disk->head_root, hex);
    g_string_append_printf(d->s, "disk %s %" PRIu64 " %u head %s gen %" PRIu64 "\n", disk->name,
                           disk->size, disk->chunk_size, hex, disk->flush_gen);
    REQUIRE(meta_checkpoint_list(d->m, disk->id, dump_checkpoint, d) == 0);
    if (d->pending)
        REQUIRE(meta_pending_list(d->m, disk->id, dump_pending, d) == 0);
    return 0;
}

static char *dump(struct meta *m, bool pending)
{
    struct dump d = {.m = m, .s = g_string_new(NULL), .pending = pending};

    REQUIRE(meta_disk_list(m, dump_disk, &d) == 0);
    return g_string_free(d.s, FALSE);
}

/* ---- the workload --------------------------------------------------------------------------- */

static char *cache_dir;
static unsigned n_disks_made;

/* One random committed change. */
static void random_commit(struct meta *m)
{
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    struct meta_disk d;
    unsigned op = (unsigned)(rnd() % 10);
    char name[64];

    pthread_mutex_lock(&meta_lock);
    /* Disk names in use. */
    for (unsigned i = 0; i < n_disks_made; i++) {
        snprintf(name, sizeof name, "disk%u", i);
        if (meta_disk_get(m, name, &d) == 0)
            g_ptr_array_add(names, g_strdup(name));
    }
    if (names->len == 0 || op == 0) {
        snprintf(name, sizeof name, "disk%u", n_disks_made++);
        REQUIRE(meta_disk_create(m, name, 64ULL << 30, 1 << 20, NULL) == 0);
    } else {
        const char *pick = g_ptr_array_index(names, rnd() % names->len);
        REQUIRE(meta_disk_get(m, pick, &d) == 0);
        if (op == 1 && names->len > 2) {
            REQUIRE(meta_disk_delete(m, pick) == 0);
        } else if (op <= 5) {
            struct chunk_map *map;
            REQUIRE(meta_map_load(m, &d, &map) == 0);
            for (int i = 0; i < 1 + (int)(rnd() % 40); i++) {
                struct chunk_hash h = new_chunk();
                REQUIRE(chunk_map_set(map, rnd() % (64 * 1024), &h) == 0);
            }
            REQUIRE(meta_head_commit(m, d.id, map, d.flush_gen + 1, NULL) == 0);
            chunk_map_free(map);
        } else if (op <= 7) {
            snprintf(name, sizeof name, "c%" PRIu64, rnd() % 1000000);
            int r = meta_checkpoint_create(m, d.id, name, &d.head_root, "a comment");
            REQUIRE(r == 0 || r == -EEXIST);
        } else if (op == 8) {
            /* A pending row whose file exists in the cache directory. */
            char file[96], path[PATH_MAX];
            snprintf(file, sizeof file, "dirty/%lld.%" PRIu64, (long long)d.id, rnd());
            snprintf(path, sizeof path, "%s/%s", cache_dir, file);
            FILE *f = fopen(path, "w");
            REQUIRE(f != NULL);
            fclose(f);
            struct meta_pending p = {.idx = rnd() % 1000, .gen = d.flush_gen + 1, .file = file};
            REQUIRE(meta_pending_put(m, d.id, &p, 1) == 0);
        } else {
            struct chunk_map *map;
            REQUIRE(meta_map_load(m, &d, &map) == 0);
            uint64_t idx;
            if (chunk_map_next(map, rnd() % (64 * 1024), &idx, NULL))
                chunk_map_remove(map, idx);
            REQUIRE(meta_head_commit(m, d.id, map, d.flush_gen + 1, NULL) == 0);
            chunk_map_free(map);
        }
    }
    pthread_mutex_unlock(&meta_lock);
    g_ptr_array_unref(names);
}

/* Restores into a fresh directory and returns its dump (pending rows included when
 * cache is given).  *info receives what restore said. */
static char *restore_dump(const char *name, const char *cache, enum replica_verify verify,
                          struct replica_restore_info *info, int *err)
{
    struct replica_restore_options o = {.name = name, .verify = verify, .cache_dir = cache};
    char dir[PATH_MAX + 32];
    struct meta *m;
    char *text;

    snprintf(dir, sizeof dir, "%s/restore%u", test_dir, restores++);
    *err = replica_restore(st, dir, &o, info);
    if (*err < 0)
        return NULL;
    REQUIRE(meta_open(dir, true, &m) == 0);
    text = dump(m, cache != NULL);
    meta_close(m);
    return text;
}

static void check_same(const char *what, const char *want, const char *got)
{
    if (strcmp(want, got) != 0) {
        fprintf(stderr, "%s: the restored content differs\n--- want\n%s--- got\n%s", what, want,
                got);
        check_failures++;
    }
}

/* ---- store helpers -------------------------------------------------------------------------- */

static int collect_key(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    g_ptr_array_add(opaque, g_strdup(key));
    return 0;
}

static GPtrArray *list_keys(const char *prefix)
{
    GPtrArray *keys = g_ptr_array_new_with_free_func(g_free);

    REQUIRE(store_list(st, prefix, collect_key, keys) == 0);
    return keys;
}

static unsigned count_with(GPtrArray *keys, const char *needle)
{
    unsigned n = 0;

    for (guint i = 0; i < keys->len; i++)
        if (strstr(g_ptr_array_index(keys, i), needle))
            n++;
    return n;
}

/* The key of the segment with sequence number seq, or NULL. */
static char *segment_key(const char *prefix, uint64_t seq)
{
    GPtrArray *keys = list_keys(prefix);
    char needle[32];
    char *found = NULL;

    snprintf(needle, sizeof needle, "/seg-%016" PRIx64 "-", seq);
    for (guint i = 0; i < keys->len && !found; i++)
        if (strstr(g_ptr_array_index(keys, i), needle))
            found = g_strdup(g_ptr_array_index(keys, i));
    g_ptr_array_unref(keys);
    return found;
}

/* ---- the test ------------------------------------------------------------------------------- */

int main(void)
{
    struct replica_options ro = {
        .name = "unit", .compact_bytes = 256 << 10, .compact_segments = 64};
    struct replica_restore_info info;
    struct replica_stats rs;
    struct replica *rep;
    struct meta *m;
    char src[PATH_MAX + 8], url[PATH_MAX + 16], store_dir[PATH_MAX + 8];
    char *want = NULL, *got;
    int err;

    wisp_log_init();
    snprintf(test_dir, sizeof test_dir, "%s/wisp-replica-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    REQUIRE(mkdtemp(test_dir) != NULL);
    snprintf(src, sizeof src, "%s/meta", test_dir);
    snprintf(store_dir, sizeof store_dir, "%s/store", test_dir);
    REQUIRE(mkdir(store_dir, 0700) == 0);
    cache_dir = g_strdup_printf("%s/cache", test_dir);
    REQUIRE(mkdir(cache_dir, 0700) == 0);
    char *dirty = g_strdup_printf("%s/dirty", cache_dir);
    REQUIRE(mkdir(dirty, 0700) == 0);
    g_free(dirty);
    snprintf(url, sizeof url, "file://%s", store_dir);
    REQUIRE(store_open(url, NULL, &st) == 0);
    chunk_hashes = g_ptr_array_new_with_free_func(g_free);

    /* No replica yet. */
    CHECK(replica_exists(st, "unit") == 0);
    err = 0;
    CHECK(restore_dump("unit", NULL, REPLICA_VERIFY_NONE, &info, &err) == NULL && err == -ENOENT);

    REQUIRE(meta_open(src, true, &m) == 0);
    REQUIRE(replica_start(m, &meta_lock, st, &ro, &rep) == 0);

    /* 1. Random commits, shipped every few; restore at several points. */
    for (int round = 0; round < 12; round++) {
        int n = 1 + (int)(rnd() % 12);
        for (int i = 0; i < n; i++)
            random_commit(m);
        REQUIRE(replica_ship(rep) == 0);
        pthread_mutex_lock(&meta_lock);
        g_free(want);
        want = dump(m, true);
        pthread_mutex_unlock(&meta_lock);
        /* More commits after the shipment: they must not show up. */
        random_commit(m);
        if (round % 3 == 2) {
            got = restore_dump("unit", cache_dir, REPLICA_VERIFY_FULL, &info, &err);
            REQUIRE(got != NULL);
            check_same("restore after a shipment", want, got);
            CHECK(info.chunks_missing == 0 && info.chunks_corrupt == 0);
            CHECK(info.chunks_hashed == info.chunks);
            CHECK(info.pending_dropped == 0);
            printf("round %d: generation %" PRIx64 ", %u segments, %u disks, %u checkpoints, "
                   "%" PRIu64 " chunks hashed\n",
                   round, info.generation, info.segments, info.disks, info.checkpoints,
                   info.chunks_hashed);
            g_free(got);
        }
        /* replica_sync ships exactly what was committed before it. */
        REQUIRE(replica_sync(rep) == 0);
        pthread_mutex_lock(&meta_lock);
        g_free(want);
        want = dump(m, true);
        pthread_mutex_unlock(&meta_lock);
    }
    replica_get_stats(rep, &rs);
    printf("%" PRIu64 " commits, %" PRIu64 " snapshots (%" PRIu64 " bytes), %" PRIu64
           " segments (%" PRIu64 " bytes)\n",
           rs.commits, rs.snapshots, rs.snapshot_bytes, rs.segments, rs.segment_bytes);
    CHECK(rs.snapshots >= 2); /* compaction happened */
    CHECK(rs.shipped_commits == rs.commits);
    CHECK(rs.lag_s == 0);
    GPtrArray *keys = list_keys("meta/unit/");
    CHECK(count_with(keys, "/manifest") == 1); /* older generations pruned */
    CHECK(count_with(keys, "/snapshot.db") == 1);
    g_ptr_array_unref(keys);

    /* 2. Pending rows whose files are gone: dropped, the rest intact. */
    got = restore_dump("unit", NULL, REPLICA_VERIFY_SAMPLE, &info, &err);
    REQUIRE(got != NULL);
    char *want_np;
    pthread_mutex_lock(&meta_lock);
    want_np = dump(m, false);
    pthread_mutex_unlock(&meta_lock);
    check_same("restore without the cache", want_np, got);
    CHECK(info.chunks_hashed == (info.chunks < 16 ? info.chunks : 16));
    printf("without the cache: %u disks had their pending rows dropped\n", info.pending_dropped);
    g_free(got);
    g_free(want_np);

    /* 3. One commit per segment; then a gap and a damaged segment. */
    char *states[6];
    uint64_t seqs[6];
    for (int i = 0; i < 6; i++) {
        random_commit(m);
        REQUIRE(replica_sync(rep) == 0);
        replica_get_stats(rep, &rs);
        seqs[i] = rs.seq;
        pthread_mutex_lock(&meta_lock);
        states[i] = dump(m, true);
        pthread_mutex_unlock(&meta_lock);
    }
    CHECK(seqs[5] == seqs[0] + 5); /* no compaction in replica_sync */
    char *damaged = segment_key("meta/unit/", seqs[4]);
    REQUIRE(damaged != NULL);
    void *data;
    size_t len;
    REQUIRE(store_get(st, damaged, &data, &len) == 0);
    ((uint8_t *)data)[len / 2] ^= 0x40;
    REQUIRE(store_put(st, damaged, data, len) == 0);
    free(data);
    got = restore_dump("unit", cache_dir, REPLICA_VERIFY_NONE, &info, &err);
    REQUIRE(got != NULL);
    check_same("a damaged segment ends the log", states[3], got);
    CHECK(info.segments_ignored == 2);
    g_free(got);
    char *gone = segment_key("meta/unit/", seqs[2]);
    REQUIRE(gone != NULL);
    REQUIRE(store_delete(st, gone) == 0);
    got = restore_dump("unit", cache_dir, REPLICA_VERIFY_NONE, &info, &err);
    REQUIRE(got != NULL);
    check_same("a missing segment ends the log", states[1], got);
    CHECK(info.segments_ignored == 3); /* seqs[3], the damaged seqs[4], seqs[5] */
    g_free(got);
    g_free(gone);
    g_free(damaged);
    for (int i = 0; i < 6; i++)
        g_free(states[i]);

    /* 4. A restart begins a new generation, numbered past everything before. */
    replica_get_stats(rep, &rs);
    uint64_t old_seq = rs.seq;
    replica_stop(rep);
    meta_close(m);
    REQUIRE(meta_open(src, true, &m) == 0);
    REQUIRE(replica_start(m, &meta_lock, st, &ro, &rep) == 0);
    random_commit(m);
    REQUIRE(replica_sync(rep) == 0);
    replica_get_stats(rep, &rs);
    CHECK(rs.generation > old_seq);
    pthread_mutex_lock(&meta_lock);
    g_free(want);
    want = dump(m, true);
    pthread_mutex_unlock(&meta_lock);
    got = restore_dump("unit", cache_dir, REPLICA_VERIFY_SAMPLE, &info, &err);
    REQUIRE(got != NULL);
    check_same("restore after a restart", want, got);
    CHECK(info.generation == rs.generation);
    g_free(got);

    /* 5. Verification: a deleted chunk and a corrupted one are named; nothing is installed. */
    struct chunk_hash *victim = NULL;
    {
        /* A chunk a head or checkpoint names: take the first of a full restore's... simpler:
         * every chunk we made is named unless its map entry was overwritten, so try until
         * deleting one makes verification fail. */
        char key[80], hex[65], dir[PATH_MAX + 32];
        for (guint i = 0; i < chunk_hashes->len && !victim; i++) {
            struct chunk_hash *h = g_ptr_array_index(chunk_hashes, i);
            chunk_hash_to_hex(h, hex);
            snprintf(key, sizeof key, "chunks/%s", hex);
            REQUIRE(store_get(st, key, &data, &len) == 0);
            REQUIRE(store_delete(st, key) == 0);
            struct replica_restore_options o = {
                .name = "unit", .verify = REPLICA_VERIFY_FULL, .cache_dir = cache_dir};
            snprintf(dir, sizeof dir, "%s/restore%u", test_dir, restores++);
            err = replica_restore(st, dir, &o, &info);
            if (err == -EIO) {
                victim = h;
                CHECK(info.chunks_missing == 1);
                CHECK(strcmp(info.first_bad_chunk, key) == 0);
                char db[PATH_MAX + 64];
                snprintf(db, sizeof db, "%s/wisp.db", dir);
                CHECK(access(db, F_OK) < 0);
                /* Corrupt instead of missing. */
                ((uint8_t *)data)[0] ^= 1;
                REQUIRE(store_put(st, key, data, len) == 0);
                snprintf(dir, sizeof dir, "%s/restore%u", test_dir, restores++);
                err = replica_restore(st, dir, &o, &info);
                CHECK(err == -EIO && info.chunks_corrupt == 1 && info.chunks_missing == 0);
                CHECK(strcmp(info.first_bad_chunk, key) == 0);
                ((uint8_t *)data)[0] ^= 1;
            } else {
                CHECK(err == 0);
            }
            REQUIRE(store_put(st, key, data, len) == 0);
            free(data);
        }
        CHECK(victim != NULL);
    }

    /* 6. A directory that has a database is refused. */
    {
        struct replica_restore_options o = {.name = "unit"};
        CHECK(replica_restore(st, src, &o, &info) == -EEXIST);
    }

    /* 7. A second server on the same replica name: the first is fenced at its next
     * generation. */
    {
        char src2[PATH_MAX + 8];
        struct replica *rep2;
        struct meta *m2;
        pthread_mutex_t lock2 = PTHREAD_MUTEX_INITIALIZER;
        snprintf(src2, sizeof src2, "%s/meta2", test_dir);
        REQUIRE(meta_open(src2, true, &m2) == 0);
        REQUIRE(replica_start(m2, &lock2, st, &ro, &rep2) == 0);
        REQUIRE(replica_ship(rep2) == 0);
        /* Force a generation on the first: a big WAL. */
        err = 0;
        for (int i = 0; i < 400 && err == 0; i++) {
            random_commit(m);
            err = replica_ship(rep);
        }
        CHECK(err == -ESTALE);
        replica_get_stats(rep, &rs);
        CHECK(rs.fenced);
        CHECK(replica_sync(rep) == -ESTALE);
        replica_stop(rep2);
        meta_close(m2);
    }

    replica_stop(rep);
    meta_close(m);
    store_close(st);
    g_free(want);
    g_free(cache_dir);
    g_ptr_array_unref(chunk_hashes);
    test_cleanup();
    if (check_failures)
        fprintf(stderr, "%d checks failed\n", check_failures);
    return check_failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
