/* fixture.h: the small harness shared by tests/crash and tests/storagefault.
 *
 * It starts the real programs the way an operator would: nbdkit with the Wisp plugin on a unix
 * socket, `wisp disk create` on a stopped server's metadata, wisp-faultproxy in front of
 * radosgw.  Every child is registered, and fx_cleanup() (run at exit, also after a failed
 * check or on SIGINT/SIGTERM) kills what is still running, deletes the objects the test wrote
 * under its store prefixes, and removes the test's temporary directory unless WISP_TEST_KEEP=1.
 * A server that does not stop on SIGTERM gets its threads' stacks (gdb) appended to its log.
 *
 * Binaries come from the environment that meson sets (see tests/crash/meson.build):
 *   WISP_TEST_PLUGIN      nbdkit-wisp-plugin.so
 *   WISP_TEST_CLI         the wisp CLI
 *   WISP_TEST_FAULTPROXY  wisp-faultproxy
 *   WISP_TEST_NBDKIT_PRELOAD  (sanitizer builds) the ASan runtime nbdkit must preload to load an
 *                             instrumented plugin
 * radosgw comes from tests/s3/rgw-fixture: WISP_TEST_S3_ENDPOINT, WISP_TEST_S3_BUCKET and the
 * AWS_* credentials. */
#ifndef WISP_TEST_FIXTURE_H
#define WISP_TEST_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define FX_SKIP 77

/* Fails the test: prints where and why, cleans up, exits 1. */
#define FX_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fx_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                       \
    } while (0)

void fx_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
/* Skips the test (exit 77) with a reason. */
void fx_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fx_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Seconds on the monotonic clock. */
double fx_now(void);
void fx_sleep(double seconds);

/* Creates the test's temporary directory (under $TMPDIR) and registers the cleanup. */
const char *fx_setup(const char *name);
const char *fx_tmpdir(void);
/* An environment variable that must be set, or the test is skipped. */
const char *fx_need_env(const char *name);
/* Removes a directory tree (ignores a missing one). */
void fx_rm_rf(const char *path);
void fx_mkdir(const char *path);

/* Runs argv to completion, its output appended to the test directory's commands.log.  Returns
 * its exit status (or -1). */
int fx_run(const char *const *argv);

/* Starts a child process with stdout and stderr appended to log_path and registers it for
 * cleanup.  extra_env: NULL or a NAME=VALUE list ended by NULL, set in the child only. */
pid_t fx_spawn(const char *const *argv, const char *log_path, const char *const *extra_env);
/* Sends sig (if the child is alive) and waits for it, up to timeout seconds, then SIGKILL.
 * Returns the wait status. */
int fx_reap(pid_t pid, int sig, double timeout);
/* Whether the child has exited (reaped then). */
bool fx_exited(pid_t pid, int *status);

/* nbdkit with the Wisp plugin. */
struct fx_server {
    pid_t pid;
    char sock[600];    /* NBD socket */
    char control[600]; /* control socket */
    char log[600];
};
/* Starts nbdkit -f -U SOCK PLUGIN store=.. cache=.. meta=.. control=.. params... and waits until
 * it accepts connections (fails the test after 30 s or if it exits).  params: "key=value"
 * strings ended by NULL. */
void fx_server_start(struct fx_server *s, const char *name, const char *store_url,
                     const char *cache, const char *meta, const char *const *params);
/* Kills with SIGKILL at once. */
void fx_server_kill(struct fx_server *s);
/* Stops cleanly (SIGTERM) and waits; fails the test unless it exits with status 0 within 30 s. */
void fx_server_stop(struct fx_server *s);
/* Prints the last lines of the server's log to stderr. */
void fx_server_log_tail(const struct fx_server *s, int lines);

/* `wisp disk create NAME --size SIZE --chunk-size CHUNK --meta META` (server stopped). */
void fx_disk_create(const char *meta, const char *name, const char *size, const char *chunk);
/* `wisp disk stats NAME --json --control CTL`: the value of an integer member ("stats.flush_gen"
 * for a member of a section), or -1. */
long long fx_disk_stat(const struct fx_server *s, const char *disk, const char *member);

/* radosgw: true and the store URL of a fresh prefix when the fixture's environment is set.
 * endpoint_override: NULL, or another endpoint (the fault proxy) for the same bucket. */
bool fx_s3_available(void);
void fx_s3_url(char *out, size_t size, const char *prefix, const char *endpoint_override);
/* Registers the store at url for cleanup: every object under it is deleted at exit. */
void fx_store_cleanup_register(const char *url);

/* A seed: $WISP_TEST_SEED if set, otherwise from the clock.  Printed by the caller. */
uint64_t fx_seed(void);
/* splitmix64. */
uint64_t fx_rand_next(uint64_t *state);
/* Uniform in [lo, hi]. */
uint64_t fx_rand_range(uint64_t *state, uint64_t lo, uint64_t hi);

/* wisp-faultproxy (WISP_TEST_FAULTPROXY) in front of the radosgw at WISP_TEST_S3_ENDPOINT. */
struct fx_proxy {
    char port_file[600], log[600]; /* under the directory given to fx_proxy_init */
    pid_t pid;                     /* 0 when stopped */
    unsigned port;                 /* where it listens, once started */
};
void fx_proxy_init(struct fx_proxy *p, const char *dir);
/* Starts it on port (0: any free port) with a seed and fault options (NULL-terminated, may be
 * NULL); fails the test if it does not come up within 10 s. */
void fx_proxy_start(struct fx_proxy *p, unsigned port, uint64_t seed, const char *const *faults);
void fx_proxy_stop(struct fx_proxy *p);

#endif
