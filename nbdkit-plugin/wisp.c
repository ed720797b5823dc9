/* nbdkit-wisp-plugin: Wisp's disks over NBD.
 *
 *   nbdkit wisp store=URL cache=DIR meta=DIR [cache-size=SIZE] [chunk-size=SIZE]
 *               [durability=local|remote] [upload-delay=SECONDS] [control=SOCK] [readonly=true]
 *               [gc-interval=SECONDS] [gc-grace=DURATION]
 *               [replicate-interval=SECONDS] [replica=NAME]
 *
 * One process serves many disks: the export name picks the disk.  The data path is in disk.c,
 * the chunk cache in chunk_cache.c, the metadata in meta/, the control socket in control.c.
 * This file holds configuration, the registry of open disks and the NBD callbacks, each of
 * which translates errors to NBD once, here at the edge. */
#include "chunk_gc.h"
#include "control.h"
#include "disk.h"
#include "export_name.h"
#include "file_reaper.h"
#include "log.h"
#include "meta.h"
#include "plugin.h"
#include "replica.h"
#include "store.h"
#include "store_url.h"

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#include <sys/random.h>
#include <time.h>

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* ---- configuration ------------------------------------------------------------------------ */

static struct plugin_config cfg = {
    .cache_size = UINT64_C(10) << 30,
    .chunk_size = 1 << 20,
    .durability = DISK_DURABILITY_LOCAL,
    .upload_delay = 1.0,
    .ship_log = true,
    .upload_parallel = 16,
    .store_connections = 32,
    .readahead = 8 << 20,
    .stats_interval = 60,
    .store_timeout = 30,
    .gc_interval = 3600,
    .gc_grace = CHUNK_GC_GRACE_DEFAULT,
    .replicate_interval = 1.0,
    .lease_ttl = 30,
};

/* The running server: set up in after_fork, torn down in cleanup. */
static struct plugin_state state = {
    .meta_lock = PTHREAD_MUTEX_INITIALIZER,
    .registry_lock = PTHREAD_MUTEX_INITIALIZER,
    .lease_lock = PTHREAD_MUTEX_INITIALIZER,
    .versions_lock = PTHREAD_MUTEX_INITIALIZER,
    .gc_lock = PTHREAD_MUTEX_INITIALIZER,
    .gc_wait_lock = PTHREAD_MUTEX_INITIALIZER,
};

static void wisp_log_to_nbdkit(enum wisp_log_level level, const char *module, const char *msg)
{
    switch (level) {
    case WISP_LOG_ERROR:
    case WISP_LOG_WARN:
        nbdkit_error("%s: %s", module, msg);
        break;
    case WISP_LOG_INFO:
        fprintf(stderr, "nbdkit: wisp: %s: %s\n", module, msg);
        break;
    case WISP_LOG_DEBUG:
        nbdkit_debug("%s: %s", module, msg);
        break;
    }
}

static void wisp_load(void)
{
    wisp_log_set_sink(wisp_log_to_nbdkit);
    if (!getenv("WISP_LOG_LEVEL"))
        wisp_log_set_level(WISP_LOG_INFO);
}

static int wisp_parse_seconds(const char *key, const char *value, double *out)
{
    char *end;

    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end || v < 0 || v > 86400) {
        nbdkit_error("%s=%s: expected a number of seconds from 0 to 86400", key, value);
        return -1;
    }
    *out = v;
    return 0;
}

static int wisp_parse_count(const char *key, const char *value, unsigned max, unsigned *out)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(value, &end, 10);
    if (errno || end == value || *end || v < 1 || v > max) {
        nbdkit_error("%s=%s: expected a whole number from 1 to %u", key, value, max);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* Whole seconds, or a number with a unit: 90s, 30m, 1h, 2d. */
static int wisp_parse_duration(const char *key, const char *value, uint64_t *out)
{
    if (chunk_gc_parse_duration(value, out) < 0) {
        nbdkit_error("%s=%s: expected a duration such as 3600, 90s, 30m, 1h or 2d", key, value);
        return -1;
    }
    return 0;
}

static int wisp_config(const char *key, const char *value)
{
    int64_t size;

    if (strcmp(key, "store") == 0) {
        free(cfg.store_url);
        cfg.store_url = strdup(value);
    } else if (strcmp(key, "cache") == 0) {
        free(cfg.cache_dir);
        cfg.cache_dir = nbdkit_absolute_path(value);
        if (!cfg.cache_dir)
            return -1;
    } else if (strcmp(key, "meta") == 0) {
        free(cfg.meta_dir);
        cfg.meta_dir = nbdkit_absolute_path(value);
        if (!cfg.meta_dir)
            return -1;
    } else if (strcmp(key, "control") == 0) {
        free(cfg.control_path);
        cfg.control_path = nbdkit_absolute_path(value);
        if (!cfg.control_path)
            return -1;
    } else if (strcmp(key, "credentials") == 0) {
        free(cfg.credentials_file);
        cfg.credentials_file = nbdkit_absolute_path(value);
        if (!cfg.credentials_file)
            return -1;
    } else if (strcmp(key, "cache-size") == 0) {
        size = nbdkit_parse_size(value);
        if (size < 0)
            return -1;
        if (size < (16 << 20)) {
            nbdkit_error("cache-size=%s: must be at least 16M", value);
            return -1;
        }
        cfg.cache_size = (uint64_t)size;
    } else if (strcmp(key, "chunk-size") == 0) {
        size = nbdkit_parse_size(value);
        if (size < 0)
            return -1;
        if (size < META_CHUNK_SIZE_MIN || size > META_CHUNK_SIZE_MAX || (size & (size - 1))) {
            nbdkit_error("chunk-size=%s: must be a power of two from 64K to 4M", value);
            return -1;
        }
        cfg.chunk_size = (uint32_t)size;
    } else if (strcmp(key, "durability") == 0) {
        if (strcmp(value, "local") == 0)
            cfg.durability = DISK_DURABILITY_LOCAL;
        else if (strcmp(value, "remote") == 0)
            cfg.durability = DISK_DURABILITY_REMOTE;
        else {
            nbdkit_error("durability=%s: expected 'local' or 'remote'", value);
            return -1;
        }
    } else if (strcmp(key, "upload-delay") == 0) {
        return wisp_parse_seconds(key, value, &cfg.upload_delay);
    } else if (strcmp(key, "stats-interval") == 0) {
        return wisp_parse_seconds(key, value, &cfg.stats_interval);
    } else if (strcmp(key, "lease-ttl") == 0) {
        if (wisp_parse_seconds(key, value, &cfg.lease_ttl) < 0)
            return -1;
        if (cfg.lease_ttl > 0 && cfg.lease_ttl < 1) {
            nbdkit_error("lease-ttl=%s: at least 1 second (or 0 for no leases)", value);
            return -1;
        }
        return 0;
    } else if (strcmp(key, "store-timeout") == 0) {
        return wisp_parse_seconds(key, value, &cfg.store_timeout);
    } else if (strcmp(key, "gc-interval") == 0) {
        return wisp_parse_duration(key, value, &cfg.gc_interval);
    } else if (strcmp(key, "gc-grace") == 0) {
        return wisp_parse_duration(key, value, &cfg.gc_grace);
    } else if (strcmp(key, "upload-parallel") == 0) {
        return wisp_parse_count(key, value, 256, &cfg.upload_parallel);
    } else if (strcmp(key, "store-connections") == 0) {
        return wisp_parse_count(key, value, 1024, &cfg.store_connections);
    } else if (strcmp(key, "readahead") == 0) {
        size = nbdkit_parse_size(value);
        if (size < 0 || size > (256 << 20)) {
            nbdkit_error("readahead=%s: must be from 0 to 256M", value);
            return -1;
        }
        cfg.readahead = (uint64_t)size;
    } else if (strcmp(key, "replicate-interval") == 0) {
        return wisp_parse_seconds(key, value, &cfg.replicate_interval);
    } else if (strcmp(key, "replica") == 0) {
        const char *why;
        if (!replica_name_valid(value, &why)) {
            nbdkit_error("replica=%s: %s", value, why);
            return -1;
        }
        free(cfg.replica_name);
        cfg.replica_name = strdup(value);
        if (!cfg.replica_name)
            return -1;
    } else if (strcmp(key, "readonly") == 0 || strcmp(key, "ship-log") == 0) {
        int b = nbdkit_parse_bool(value);
        if (b < 0) { /* nbdkit's own message does not name the parameter */
            nbdkit_error("%s=%s: expected true or false", key, value);
            return -1;
        }
        if (strcmp(key, "readonly") == 0)
            cfg.readonly = b;
        else
            cfg.ship_log = b;
    } else {
        nbdkit_error("unknown parameter '%s' (see nbdkit wisp --help)", key);
        return -1;
    }
    return 0;
}

static int wisp_config_complete(void)
{
    const char *missing = !cfg.store_url   ? "store"
                          : !cfg.cache_dir ? "cache"
                          : !cfg.meta_dir  ? "meta"
                                           : NULL;
    struct store_url parsed;
    const char *why;

    if (missing) {
        nbdkit_error("the parameter %s= is required (see nbdkit wisp --help)", missing);
        return -1;
    }
    if (store_url_parse(cfg.store_url, &parsed, &why) < 0) {
        nbdkit_error("store=%s: %s", cfg.store_url, why);
        return -1;
    }
    store_url_free(&parsed);
    if (strcmp(cfg.cache_dir, cfg.meta_dir) == 0) {
        nbdkit_error("cache= and meta= must be different directories");
        return -1;
    }
    /* The refresh age of dedup hits and the commit window of upload rounds follow from the
     * grace (meta/chunk_gc.h, invariant (a)): half each.  WISP_TEST_GC_REFRESH_AGE (seconds)
     * is for tests that need "old" to mean a second. */
    cfg.gc_refresh_age = (double)cfg.gc_grace / 2;
    const char *test_age = getenv("WISP_TEST_GC_REFRESH_AGE");
    if (test_age) {
        char *end;
        errno = 0;
        double v = strtod(test_age, &end);
        if (errno || end == test_age || *end || v < 0 || v > (double)cfg.gc_grace) {
            nbdkit_error("WISP_TEST_GC_REFRESH_AGE=%s: expected seconds from 0 to gc-grace",
                         test_age);
            return -1;
        }
        cfg.gc_refresh_age = v;
    }
    if (cfg.gc_grace == 0)
        log_warn("gc", "gc-grace=0: a garbage collection may delete the chunks of uploads in "
                       "flight; use it only where nothing writes (tests)");
    return 0;
}

#define wisp_config_help                                                                           \
    "store=URL            (required) file:///DIR or s3://BUCKET[/PREFIX]?endpoint=URL&region=R\n"  \
    "cache=DIR            (required) local chunk cache and unuploaded data\n"                      \
    "meta=DIR             (required) metadata (SQLite) directory\n"                                \
    "cache-size=SIZE      bound on the cache, dirty data included (default 10G)\n"                 \
    "chunk-size=SIZE      default chunk size of disks created here (default 1M)\n"                 \
    "durability=local|remote  when a flush returns (default local)\n"                              \
    "upload-delay=SECONDS upload flushed data within this delay (default 1)\n"                     \
    "ship-log=BOOL        durability=remote: a flush of small writes ships them through the\n"     \
    "                     replicated metadata, uploaded later (default true)\n"                    \
    "control=SOCK         unix socket for 'wisp disk' commands\n"                                  \
    "readonly=true        serve every export read-only\n"                                          \
    "credentials=FILE     AWS-style credentials file (default: AWS_* environment)\n"               \
    "upload-parallel=N    chunks uploaded at once (default 16)\n"                                  \
    "store-connections=N  connections to the store (default 32)\n"                                 \
    "store-timeout=SECONDS  per-request timeout (default 30)\n"                                    \
    "readahead=SIZE       sequential read-ahead (default 8M)\n"                                    \
    "replicate-interval=SECONDS  metadata shipped to the store within this, 0 for never (default " \
    "1)\n"                                                                                         \
    "replica=NAME         the metadata's replica in the store, meta/NAME/ (default 'default')\n"   \
    "stats-interval=SECONDS  statistics log line period, 0 for none (default 60)\n"                \
    "lease-ttl=SECONDS    a disk's writer lease lasts this long unrenewed; 0: no leases (one\n"    \
    "                     server per store only) (default 30)\n"                                   \
    "gc-interval=SECONDS  garbage collection of chunks this often, 0 for none (default 3600)\n"    \
    "gc-grace=DURATION    GC keeps unreferenced chunks younger than this: 90s, 30m, 1h, 2d\n"      \
    "                     (default 1h); uploads are committed within half of it"

static void wisp_dump_plugin(void)
{
    printf("wisp_durability_modes=local,remote\n");
    printf("wisp_params=store,cache,meta,cache-size,chunk-size,durability,upload-delay,control,"
           "readonly,credentials,upload-parallel,store-connections,store-timeout,readahead,"
           "stats-interval,lease-ttl,gc-interval,gc-grace,replicate-interval,replica,ship-log\n");
    printf("wisp_default_chunk_size=%u\n", cfg.chunk_size);
    printf("wisp_gc_interval=%llu\n", (unsigned long long)cfg.gc_interval);
    printf("wisp_gc_grace=%llu\n", (unsigned long long)cfg.gc_grace);
}

/* ---- start-up and shut-down --------------------------------------------------------------- */

static void wisp_store_options(struct store_options *so)
{
    store_options_init(so);
    so->max_connections = cfg.store_connections;
    so->request_timeout_ms = (long)(cfg.store_timeout * 1000);
    so->credentials_file = cfg.credentials_file;
}

static int wisp_get_ready(void)
{
    struct store_options so;
    struct meta *m;
    int r;

    /* An empty meta= with a replica in the store: restore it first. */
    wisp_store_options(&so);
    if (plugin_replica_restore_if_needed(&cfg, &so) < 0)
        return -1;

    /* Fail before forking if the metadata cannot be opened or another server holds it. */
    r = meta_open(cfg.meta_dir, true, &m);
    if (r < 0) {
        nbdkit_error("meta=%s: %s", cfg.meta_dir,
                     r == -EBUSY ? "another process (a running server?) holds this metadata"
                                 : strerror(-r));
        return -1;
    }
    meta_close(m);
    return 0;
}

static void *wisp_background(void *opaque)
{
    double next_stats = cfg.stats_interval;
    double elapsed = 0;

    while (!__atomic_load_n(&state.stopping, __ATOMIC_ACQUIRE)) {
        usleep(100 * 1000);
        elapsed += 0.1;
        plugin_upload_due(&state, cfg.upload_delay); /* remote: what flushes shipped */
        if (cfg.stats_interval > 0 && elapsed >= next_stats) {
            next_stats += cfg.stats_interval;
            plugin_log_stats(&state);
            if (state.replica)
                plugin_replica_log_stats(state.replica);
        }
    }
    return NULL;
}

static void *wisp_lease_keeper(void *opaque)
{
    while (!__atomic_load_n(&state.stopping, __ATOMIC_ACQUIRE)) {
        usleep(100 * 1000);
        plugin_leases_renew(&state);
    }
    return NULL;
}

static uint64_t wisp_random64(void)
{
    uint64_t nonce;

    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
        nonce = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)clock();
    return nonce;
}

/* The lease owner id of this metadata directory, made on first use: a local file, not part of
 * the database, so that a replica restored on another host is another owner (lease.h). */
static int wisp_lease_owner(char out[20])
{
    char *path = g_build_filename(cfg.meta_dir, "lease-owner", NULL);
    gchar *text = NULL;
    int r = 0;

    if (g_file_get_contents(path, &text, NULL, NULL) && strlen(text) == 16 &&
        strspn(text, "0123456789abcdef") == 16) {
        memcpy(out, text, 17);
    } else {
        snprintf(out, 20, "%016llx", (unsigned long long)wisp_random64());
        GError *err = NULL;
        if (!g_file_set_contents(path, out, -1, &err)) { /* written whole, then renamed */
            nbdkit_error("meta=%s: cannot keep this server's lease owner id in %s: %s",
                         cfg.meta_dir, path, err->message);
            g_error_free(err);
            r = -1;
        }
    }
    g_free(text);
    g_free(path);
    return r;
}

/* Who this server is in the leases it takes: host and pid for people, a random instance so
 * that a restarted server on the same host and pid is a new holder, and the owner id of its
 * metadata directory. */
static int wisp_lease_identity(void)
{
    char host[128] = "unknown", holder[192], instance[20], owner[20];

    if (wisp_lease_owner(owner) < 0)
        return -1;
    if (gethostname(host, sizeof host - 1) < 0)
        snprintf(host, sizeof host, "unknown");
    snprintf(holder, sizeof holder, "%s pid %d", host, (int)getpid());
    snprintf(instance, sizeof instance, "%016llx", (unsigned long long)wisp_random64());
    lease_set_identity(holder, instance, owner);
    return 0;
}

static int wisp_after_fork(void)
{
    struct store_options so;
    int r;

    wisp_store_options(&so);
    r = store_open(cfg.store_url, &so, &state.store);
    if (r < 0) {
        nbdkit_error("store=%s: %s", cfg.store_url, store_last_error());
        return -1;
    }
    r = meta_open(cfg.meta_dir, true, &state.meta);
    if (r < 0) {
        nbdkit_error("meta=%s: %s", cfg.meta_dir, strerror(-r));
        return -1;
    }
    if (cfg.replicate_interval > 0) {
        struct replica_options ro = {.name = cfg.replica_name, .interval = cfg.replicate_interval};
        r = replica_start(state.meta, &state.meta_lock, state.store, &ro, &state.replica);
        if (r < 0) {
            nbdkit_error("meta=%s: cannot replicate it: %s", cfg.meta_dir, strerror(-r));
            return -1;
        }
    }
    r = chunk_cache_open(cfg.cache_dir, cfg.cache_size, state.store, &state.cache);
    if (r < 0) {
        nbdkit_error("cache=%s: %s", cfg.cache_dir, strerror(-r));
        return -1;
    }
    state.reaper = file_reaper_new();
    if (!state.reaper) {
        nbdkit_error("cannot start the thread that removes dropped chunk files");
        return -1;
    }
    chunk_cache_set_refresh_age(state.cache, cfg.gc_refresh_age);
    state.env = (struct disk_env){
        .cache_dir = cfg.cache_dir,
        .cache = state.cache,
        .meta = state.meta,
        .meta_lock = &state.meta_lock,
        .durability = cfg.durability,
        .ship_log = cfg.ship_log && cfg.replicate_interval > 0,
        .upload_parallel = cfg.upload_parallel,
        .readahead_bytes = cfg.readahead,
        .reaper = state.reaper,
        .lease_now = plugin_disk_lease_now,
        .lease_opaque = &state,
        .ahead_pool = cfg.durability == DISK_DURABILITY_REMOTE
                          ? disk_ahead_pool_new(cfg.upload_parallel)
                          : NULL,
        .commit_window = (double)cfg.gc_grace - cfg.gc_refresh_age,
        .stopping = &state.stopping,
    };
    state.config = &cfg;
    state.disks = g_hash_table_new(g_str_hash, g_str_equal);
    if (wisp_lease_identity() < 0)
        return -1;

    /* durability=local: data flushed before a restart is uploaded now, not on first open. */
    r = plugin_open_pending_disks(&state);
    if (r < 0)
        return -1;

    if (pthread_create(&state.background, NULL, wisp_background, NULL) != 0) {
        nbdkit_error("cannot start the upload thread: %m");
        return -1;
    }
    state.background_started = true;
    if (cfg.lease_ttl > 0) {
        if (pthread_create(&state.lease_keeper, NULL, wisp_lease_keeper, NULL) != 0) {
            nbdkit_error("cannot start the lease thread: %m");
            return -1;
        }
        state.lease_keeper_started = true;
    }
    if (plugin_gc_start(&state) < 0)
        return -1;
    if (cfg.control_path && control_start(&state, cfg.control_path) < 0)
        return -1;
    return 0;
}

static void wisp_cleanup(void)
{
    __atomic_store_n(&state.stopping, true, __ATOMIC_RELEASE);
    control_stop(&state);
    plugin_gc_stop(&state);
    if (state.background_started)
        pthread_join(state.background, NULL);
    if (state.lease_keeper_started)
        pthread_join(state.lease_keeper, NULL);
    if (state.disks) {
        plugin_close_all_disks(&state);
        g_hash_table_destroy(state.disks);
    }
    replica_stop(state.replica);                /* ships the last commits */
    disk_ahead_pool_free(state.env.ahead_pool); /* after the disks, which wait for their tasks */
    file_reaper_free(state.reaper);             /* after the disks: closing them may drop files */
    chunk_cache_close(state.cache);
    meta_close(state.meta);
    store_close(state.store);
}

static void wisp_unload(void)
{
    free(cfg.store_url);
    free(cfg.cache_dir);
    free(cfg.meta_dir);
    free(cfg.control_path);
    free(cfg.credentials_file);
    free(cfg.replica_name);
}

/* ---- exports ------------------------------------------------------------------------------ */

static int wisp_list_export(const struct meta_disk *d, void *opaque)
{
    struct nbdkit_exports *exports = opaque;
    char description[96];

    snprintf(description, sizeof description, "%" PRIu64 " bytes, %u-byte chunks", d->size,
             d->chunk_size);
    return nbdkit_add_export(exports, d->name, description);
}

static int wisp_list_exports(int readonly, int is_tls, struct nbdkit_exports *exports)
{
    int r;

    pthread_mutex_lock(&state.meta_lock);
    r = meta_disk_list(state.meta, wisp_list_export, exports);
    pthread_mutex_unlock(&state.meta_lock);
    return r < 0 ? -1 : 0;
}

static const char *wisp_default_export(int readonly, int is_tls)
{
    return "";
}

struct wisp_handle {
    struct disk *disk;
    bool readonly;
};

static void *wisp_open(int readonly)
{
    const char *name = nbdkit_export_name();
    struct export_name parsed;
    struct wisp_handle *h;
    const char *why;
    int r;

    if (!name || !*name) {
        nbdkit_error("no export name: connect to a disk by name (nbdinfo --list shows them)");
        errno = ENOENT;
        return NULL;
    }
    if (export_name_parse(name, &parsed, &why) < 0) {
        nbdkit_error("export name '%.64s': %s", name, why);
        errno = EINVAL;
        return NULL;
    }
    h = calloc(1, sizeof *h);
    if (!h) {
        nbdkit_error("calloc: %m");
        return NULL;
    }
    /* A checkpoint is immutable: its export is read-only, and writes fail with EPERM. */
    h->readonly = readonly || cfg.readonly || parsed.checkpoint[0];
    r = plugin_disk_acquire(&state, name, &h->disk);
    if (r < 0) {
        if (r == -ENOENT && parsed.checkpoint[0])
            nbdkit_error("no checkpoint '%s' of disk '%s' (wisp disk checkpoints %s lists them)",
                         parsed.checkpoint, parsed.disk, parsed.disk);
        else if (r == -ENOENT)
            nbdkit_error("no disk named '%s' (create it with 'wisp disk create %s')", name, name);
        else if (r == -EBUSY)
            nbdkit_error("disk '%s' has a writer on another server (its lease is held; see "
                         "'wisp disk lease %s'): open its checkpoints read-only, or take it "
                         "over with 'wisp disk lease %s --steal' once the lease expires",
                         name, name, name);
        else
            nbdkit_error("disk '%s': %s", name, strerror(-r));
        free(h);
        errno = -r;
        return NULL;
    }
    return h;
}

static void wisp_close(void *handle)
{
    struct wisp_handle *h = handle;

    plugin_disk_release(&state, h->disk);
    free(h);
}

static const char *wisp_export_description(void *handle)
{
    struct wisp_handle *h = handle;
    return disk_name(h->disk);
}

/* ---- NBD callbacks -------------------------------------------------------------------------- */

static int64_t wisp_get_size(void *handle)
{
    struct wisp_handle *h = handle;
    return (int64_t)disk_size(h->disk);
}

static int wisp_block_size(void *handle, uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
    *minimum = 1;
    *preferred = 4096;
    *maximum = 32 << 20;
    return 0;
}

static int wisp_can_write(void *handle)
{
    struct wisp_handle *h = handle;
    return !h->readonly;
}

static int wisp_can_true(void *handle)
{
    return 1;
}

static int wisp_is_rotational(void *handle)
{
    return 0;
}

static int wisp_can_fua(void *handle)
{
    return NBDKIT_FUA_NATIVE;
}

static int wisp_can_cache(void *handle)
{
    return NBDKIT_CACHE_NATIVE;
}

/* durability=remote: a flush returns once its commit is in the metadata's replica too. */
static int wisp_replicated(int r)
{
    if (r == 0 && cfg.durability == DISK_DURABILITY_REMOTE && state.replica)
        r = replica_sync(state.replica);
    return r;
}

/* Translates a negative errno to NBD, once, here. */
static int wisp_result(int r)
{
    if (r >= 0)
        return 0;
    nbdkit_set_error(r == -ENOSPC || r == -EROFS || r == -EPERM || r == -EINVAL ? -r : EIO);
    return -1;
}

static int wisp_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    struct wisp_handle *h = handle;
    return wisp_result(disk_read(h->disk, buf, count, offset));
}

static int wisp_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset,
                       uint32_t flags)
{
    struct wisp_handle *h = handle;
    int r = disk_write(h->disk, buf, count, offset);

    if (r == 0 && (flags & NBDKIT_FLAG_FUA))
        r = wisp_replicated(disk_flush(h->disk));
    return wisp_result(r);
}

static int wisp_flush(void *handle, uint32_t flags)
{
    struct wisp_handle *h = handle;
    return wisp_result(wisp_replicated(disk_flush(h->disk)));
}

static int wisp_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
    struct wisp_handle *h = handle;
    int r = disk_zero(h->disk, count, offset);

    if (r == 0 && (flags & NBDKIT_FLAG_FUA))
        r = wisp_replicated(disk_flush(h->disk));
    return wisp_result(r);
}

static int wisp_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
    return wisp_zero(handle, count, offset, flags);
}

struct wisp_extents {
    struct nbdkit_extents *extents;
    bool req_one;
};

static int wisp_add_extent(uint64_t offset, uint64_t length, bool hole, void *opaque)
{
    struct wisp_extents *x = opaque;

    if (nbdkit_add_extent(x->extents, offset, length,
                          hole ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0) < 0)
        return -EIO;
    return x->req_one ? 1 : 0; /* one extent is enough when the client asked for one */
}

static int wisp_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                        struct nbdkit_extents *extents)
{
    struct wisp_handle *h = handle;
    struct wisp_extents x = {extents, (flags & NBDKIT_FLAG_REQ_ONE) != 0};
    uint64_t size = disk_size(h->disk);
    /* Describe beyond the request, so a client asking for a little learns a lot (qemu asks
     * one extent at a time), but bounded: data runs are walked chunk by chunk. */
    uint64_t span = count > (UINT64_C(1) << 30) ? count : UINT64_C(1) << 30;
    if (span > size - offset)
        span = size - offset;
    int r = disk_extents(h->disk, span, offset, wisp_add_extent, &x);

    return r < 0 ? wisp_result(r) : 0;
}

static int wisp_cache(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
    struct wisp_handle *h = handle;

    disk_prefetch(h->disk, count, offset);
    return 0;
}

static struct nbdkit_plugin plugin = {
    .name = "wisp",
    .longname = "Wisp disks: chunks in an object store, cached locally",
    .version = "0.1.0",
    .description = "Serves Wisp disks, whose data lives as immutable chunks in an object store.",
    .load = wisp_load,
    .unload = wisp_unload,
    .config = wisp_config,
    .config_complete = wisp_config_complete,
    .config_help = wisp_config_help,
    .magic_config_key = NULL,
    .dump_plugin = wisp_dump_plugin,
    .get_ready = wisp_get_ready,
    .after_fork = wisp_after_fork,
    .cleanup = wisp_cleanup,
    .list_exports = wisp_list_exports,
    .default_export = wisp_default_export,
    .export_description = wisp_export_description,
    .open = wisp_open,
    .close = wisp_close,
    .get_size = wisp_get_size,
    .block_size = wisp_block_size,
    .can_write = wisp_can_write,
    .can_flush = wisp_can_true,
    .is_rotational = wisp_is_rotational,
    .can_trim = wisp_can_true,
    .can_zero = wisp_can_true,
    .can_fast_zero = wisp_can_true,
    .can_fua = wisp_can_fua,
    .can_multi_conn = wisp_can_true,
    .can_extents = wisp_can_true,
    .can_cache = wisp_can_cache,
    .pread = wisp_pread,
    .pwrite = wisp_pwrite,
    .flush = wisp_flush,
    .trim = wisp_trim,
    .zero = wisp_zero,
    .extents = wisp_extents,
    .cache = wisp_cache,
    .errno_is_preserved = 0,
};

/* NBDKIT_REGISTER_PLUGIN defines plugin_init; declaring it keeps -Wmissing-prototypes quiet. */
struct nbdkit_plugin *plugin_init(void);
NBDKIT_REGISTER_PLUGIN(plugin)
