/* server.h: the fixture of the storage tests (tests/storage/): server.c starts and stops
 * servers and runs programs, cli.c drives the wisp CLI, data.c makes random data and compares
 * disks with shadow copies.
 *
 * A test calls ws_init() first.  It skips (exit 77) when the plugin or the CLI is not given
 * (WISP_PLUGIN, WISP_CLI: meson passes them) or nbdkit is missing, makes a fresh temporary
 * directory, and registers a cleanup that runs on every exit, failures included: it kills the
 * servers still running, deletes the objects the test put in an S3 store, and removes the
 * directory.  When the test failed it first prints the tail of every nbdkit log and keeps the
 * logs (in $WISP_TEST_LOGDIR, else next to the temporary directory).  On SIGTERM or SIGINT
 * (meson's timeout, ^C) it kills the servers, keeps the logs and removes the directory, but
 * leaves S3 objects behind (a signal handler cannot talk to the store).
 *
 * A struct ws_server is one nbdkit with the real plugin on a unix socket, with its own cache,
 * metadata and control socket.  Restarts keep the directories (and append to the same log).
 *
 * Checks: WS_CHECK(cond, fmt, ...) fails the test with the file, line and message.  Every
 * helper that cannot do its job fails the test itself, so tests read as a list of steps.
 *
 * Environment: WISP_TEST_SEED (random seed), WISP_TEST_KEEP=1 (keep the temporary directory),
 * WISP_NBDKIT_PRELOAD (a sanitizer runtime preloaded into nbdkit, set by meson in sanitizer
 * builds), WISP_TEST_S3_* and AWS_* (tests/s3/rgw-fixture). */
#ifndef WISP_TEST_SERVER_H
#define WISP_TEST_SERVER_H

#include <json-glib/json-glib.h>
#include <libnbd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdnoreturn.h>
#include <sys/types.h>

#define WS_SKIP 77

enum ws_store_kind {
    WS_STORE_FILE, /* file:///<tmp>/sN/store */
    WS_STORE_S3,   /* s3://$WISP_TEST_S3_BUCKET/<unique prefix>?endpoint=... */
};

struct ws_server {
    int id;
    char *dir;       /* <tmp>/sN */
    char *store_url; /* also: file store directory in store_dir (file only) */
    char *store_dir;
    char *cache, *meta, *control, *sock, *log;
    char *params[32]; /* extra key=value, owned */
    int n_params;
    pid_t pid; /* 0 when not running */
    int starts;
    unsigned nofile; /* if not 0, nbdkit's limit on open files (soft and hard) */
};

/* ---- the test -------------------------------------------------------------------------- */

/* Sets up the fixture for the test `name`; exits 77 if a requirement is missing. */
void ws_init(const char *name);
/* Skips the test (exit 77) with a reason. */
noreturn void ws_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void ws_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define WS_FAIL(...) ws_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define WS_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ws_fail_at(__FILE__, __LINE__, "check failed: " #cond ": " __VA_ARGS__);               \
    } while (0)
/* A libnbd call that must succeed. */
#define WS_NBD(call)                                                                               \
    do {                                                                                           \
        if ((call) == -1)                                                                          \
            ws_fail_at(__FILE__, __LINE__, "%s: %s", #call, nbd_get_error());                      \
    } while (0)

/* Prints a progress line with the time since ws_init. */
void ws_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double ws_now(void); /* monotonic seconds */
const char *ws_tmpdir(void);
const char *ws_cli_path(void);
const char *ws_plugin_path(void);

/* true in the sanitizer build (nbdkit runs with a preloaded sanitizer runtime). */
bool ws_sanitizer_build(void);

/* true if a radosgw is configured (WISP_TEST_S3_ENDPOINT and friends). */
bool ws_have_s3(void);
/* true if `tool` is an executable on PATH. */
bool ws_have_tool(const char *tool);
/* Skips the test unless every tool (NULL-terminated) is on PATH. */
void ws_require_tools(const char *tool, ...) __attribute__((sentinel));

/* ---- random data ------------------------------------------------------------------------ */

/* The test's PRNG (xoshiro256**), seeded from WISP_TEST_SEED or the clock; the seed is
 * printed by ws_init.  ws_rand_below(n) is uniform in [0, n). */
uint64_t ws_rand(void);
void ws_rand_seed(uint64_t seed); /* ws_init calls it */
uint64_t ws_rand_below(uint64_t n);
/* Fills buf with random bytes from a generator seeded with seed (independent of ws_rand). */
void ws_fill_random(void *buf, size_t len, uint64_t seed);
/* Writes len random bytes (seeded with seed) at off through h, and into shadow. */
void ws_write_random(struct nbd_handle *h, uint8_t *shadow, uint64_t off, size_t len,
                     uint64_t seed);

/* ---- servers ----------------------------------------------------------------------------- */

/* A new server (not started) with its own directories and store. */
struct ws_server *ws_server_new(enum ws_store_kind store);
/* Makes b (not started) use a's store, as a second host on the same store would. */
void ws_server_share_store(struct ws_server *b, const struct ws_server *a);
/* Adds or replaces a parameter, such as ("durability", "remote"). */
void ws_server_set(struct ws_server *s, const char *key, const char *value);
/* Starts nbdkit and waits until the NBD and control sockets answer; fails the test if it
 * exits or does not come up within 60 s. */
void ws_server_start(struct ws_server *s);
/* SIGTERM, then waits (up to 60 s) for a clean exit (status 0). */
void ws_server_stop(struct ws_server *s);
/* SIGKILL and reap: a crash.  Leaves the sockets behind, as a crash does. */
void ws_server_kill9(struct ws_server *s);
/* Removes everything in the cache directory (the server must be stopped). */
void ws_server_wipe_cache(struct ws_server *s);
/* Number of times a line of the server's log contains `needle`. */
int ws_server_log_count(struct ws_server *s, const char *needle);
/* "nbd+unix:///EXPORT?socket=SOCK" (malloc'd). */
char *ws_uri(struct ws_server *s, const char *export_name);

/* Runs nbdkit with the plugin and these parameters (NULL-terminated, "key=value"), expecting it
 * to fail at start-up.  Returns its exit status (or 128+signal; -1 if it had to be killed
 * after `timeout_s` because it started serving); *err gets its stderr (malloc'd). */
int ws_nbdkit_try(char **err, double timeout_s, const char *param, ...) __attribute__((sentinel));
/* The same with a NULL-terminated array (it may hold nbdkit options such as --run CMD). */
int ws_nbdkit_tryv(char **err, double timeout_s, const char *const *params);
/* Runs `nbdkit ARG...` (NULL-terminated) as ws_run does, with the environment the fixture
 * gives nbdkit (a sanitizer runtime in sanitizer builds). */
int ws_nbdkit_run(char **out, char **err, double timeout_s, const char *arg, ...)
    __attribute__((sentinel));

/* A connected libnbd handle on the export, with base:allocation requested. */
struct nbd_handle *ws_connect(struct ws_server *s, const char *export_name);
/* Connects to an export that must be refused; returns libnbd's error message (malloc'd). */
char *ws_connect_must_fail(struct ws_server *s, const char *export_name);
void ws_disconnect(struct nbd_handle *h);

/* ---- the wisp CLI ------------------------------------------------------------------------ */

/* Runs the CLI with the arguments (NULL-terminated) plus --control (server running) or --meta
 * (stopped).  Returns the exit status; *out and *err (may be NULL) get stdout and stderr. */
int ws_cli(struct ws_server *s, char **out, char **err, const char *arg, ...)
    __attribute__((sentinel));
/* `wisp disk create NAME --size SIZE --chunk-size CHUNK`, which must succeed. */
void ws_disk_create(struct ws_server *s, const char *name, const char *size, const char *chunk);
/* `wisp disk stats --json NAME` (server running), parsed.  Free with json_node_unref. */
JsonNode *ws_disk_stats(struct ws_server *s, const char *name);
/* A number in a stats answer by dotted path ("cache.fetches"); fails if absent. */
int64_t ws_json_int(JsonNode *node, const char *path);
/* Waits (up to timeout_s) until the disk has nothing dirty or pending and its committed
 * generation is its latest flush: its data is in the store.  Returns the seconds waited. */
double ws_wait_uploaded(struct ws_server *s, const char *name, double timeout_s);

/* ---- processes ---------------------------------------------------------------------------- */

/* Runs argv (argv[0] looked up on PATH) with stdin from /dev/null.  Returns the exit status or
 * 128+signal; *out and *err (either may be NULL) get the output (malloc'd, NUL-terminated).
 * Fails the test if the program does not finish within timeout_s. */
int ws_run(char **out, char **err, double timeout_s, const char *const *argv);
int ws_runl(char **out, char **err, double timeout_s, const char *arg0, ...)
    __attribute__((sentinel));

/* ---- comparing a disk with its shadow ------------------------------------------------------ */

/* An anonymous, sparse, zero-filled mapping of size bytes (memfd), the expected disk content. */
void *ws_shadow_new(uint64_t size);
void ws_shadow_free(void *shadow, uint64_t size);
/* Reads [offset, offset + len) of the export with `connections` libnbd connections in parallel
 * and compares it with shadow (which describes the whole disk).  Fails the test at the first
 * difference, naming the offset, the chunk and how many bytes differ there. */
void ws_compare(struct ws_server *s, const char *export_name, const uint8_t *shadow,
                uint64_t offset, uint64_t len, uint32_t chunk_size, int connections);

#endif
