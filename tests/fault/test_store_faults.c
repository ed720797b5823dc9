/* test_store_faults.c: the object store client (store.h) through wisp-faultproxy, in front of
 * the real radosgw of tests/s3/rgw-fixture.
 *
 * Scenarios, each with a fixed seed and a proxy of its own:
 *   none         no faults: the baseline (a failure here is a client bug, not a fault)
 *   error, delay, reset, truncate, bad-length, corrupt
 *                one fault kind alone, at 20-30% of requests
 *   mixed        all six kinds at 10% each
 *   down         the store is a closed port: every call fails in time with a clear message;
 *                then a proxy starts on that port and the same handle works
 *   cancel       a store that accepts connections and never answers: a GET whose thread's
 *                cancel flag (store_set_thread_cancel) is raised 300 ms in returns -ECANCELED
 *                within 2 s, not after its attempts; with the flag up before, a PUT makes no
 *                request; with it down, the handle works against radosgw
 *
 * Each scenario runs, object by object (0, 1, 4 KiB and 1 MiB), PUT, whole GET, ranged GETs,
 * HEAD, LIST, conditional create (fresh key, then again with other bytes), DELETE, and GET of
 * the deleted object.  Every call must either succeed with exactly the right answer (compared
 * with what was written and, through a direct handle that bypasses the proxy, with what the
 * store holds) or fail with a negative errno of the store.h contract within
 *   requests × max_attempts × (request timeout + backoff max) + slack.
 * Wrong bytes are always a failure.  Giving up (a negative errno) is a failure in a scenario
 * with a single fault kind too: at 30% of requests eight attempts all fail about once in 15,000
 * calls, so a call that gives up there met a fault the client does not retry.  In "mixed" (60%
 * of requests faulted) up to 5% of calls may give up.
 *
 * Corrupted bodies are only detectable where the client has a checksum: whole-object GETs.  So
 * where corrupt is on, ranged GETs and LIST are run for their errors and timing but their
 * content is not checked (the chunk layer verifies content hashes above the store).
 *
 * Environment: WISP_TEST_S3_ENDPOINT (unset: skip, exit 77), WISP_TEST_S3_BUCKET,
 * WISP_TEST_S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; WISP_FAULTPROXY, the proxy
 * binary (or argv[1]); WISP_FAULT_LOGDIR, where the proxy logs go (kept on failure);
 * WISP_FAULT_SCENARIOS=a,b to run only some scenarios.
 *
 * Every object lives under fault-<pid>-<random>/, deleted through the direct handle at the end,
 * pass or fail; the proxy is stopped on every path out, signals included. */
#include "hash.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 1000
#define REQUEST_TIMEOUT_MS 2000
#define MAX_ATTEMPTS       8
#define BACKOFF_BASE_MS    20
#define BACKOFF_MAX_MS     200
#define SLACK_MS           3000
#define DELAY_MS           2600 /* past REQUEST_TIMEOUT_MS */
#define MAX_OBJECTS        16

/* ---- the run's state, for cleanup from any exit path ---- */

static const char *test_proxy_bin;
static char test_upstream[256]; /* host:port of radosgw */
static char test_bucket[64];
static char test_region[64];
static char test_prefix[96];       /* fault-<pid>-<rand> */
static char test_logdir[PATH_MAX]; /* proxy logs, kept on failure */
static struct store *test_direct;  /* straight to radosgw, for checks and cleanup */
static volatile pid_t test_proxy_pid;
static unsigned test_failures; /* wrong answers, bounds exceeded, too many give-ups */

static void test_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void test_say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* A failed assertion: counted, reported with the store's last error, and the run goes on. */
static void test_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void test_fail(const char *fmt, ...)
{
    va_list ap;

    test_failures++;
    printf("FAIL ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static long test_ms_since(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

static void test_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the proxy ---- */

struct proxy {
    pid_t pid;
    unsigned port;
    char name[64];
    char port_file[PATH_MAX + 16];
    char log_file[PATH_MAX + 16];
    char out_file[PATH_MAX + 16]; /* its stdout and stderr: the counters at exit */
};

/* Stops the proxy (SIGTERM, then SIGKILL after 10 s).  Returns its exit status or -1. */
static int proxy_stop(struct proxy *p)
{
    int status = 0;

    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid || (r < 0 && errno != EINTR))
            break;
        if (i == 999) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
        }
        test_sleep_ms(10);
    }
    p->pid = 0;
    test_proxy_pid = 0;
    return status;
}

/* Starts a proxy in front of radosgw.  listen is "127.0.0.1:0" or a fixed port; args are the
 * fault options, NULL-terminated.  Returns 0, or -1 after saying why. */
static int proxy_start(struct proxy *p, const char *name, const char *listen, uint64_t seed,
                       const char *const *args)
{
    char seed_str[32], delay_str[32];
    const char *argv[40];
    int n = 0;
    FILE *f;

    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->port_file, sizeof p->port_file, "%s/%s.port", test_logdir, name);
    snprintf(p->log_file, sizeof p->log_file, "%s/%s.log", test_logdir, name);
    snprintf(p->out_file, sizeof p->out_file, "%s/%s.out", test_logdir, name);
    snprintf(seed_str, sizeof seed_str, "%" PRIu64, seed);
    snprintf(delay_str, sizeof delay_str, "%d", DELAY_MS);
    unlink(p->port_file);
    unlink(p->log_file);

    argv[n++] = test_proxy_bin;
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--upstream";
    argv[n++] = test_upstream;
    argv[n++] = "--port-file";
    argv[n++] = p->port_file;
    argv[n++] = "--log";
    argv[n++] = p->log_file;
    argv[n++] = "--seed";
    argv[n++] = seed_str;
    argv[n++] = "--delay-ms";
    argv[n++] = delay_str;
    for (int i = 0; args && args[i] && n < 38; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    p->pid = fork();
    if (p->pid < 0) {
        test_fail("fork: %s", strerror(errno));
        return -1;
    }
    if (p->pid == 0) {
        int fd = open(p->out_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(test_proxy_bin, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", test_proxy_bin, strerror(errno));
        _exit(127);
    }
    test_proxy_pid = p->pid;

    /* Wait for the port file (written atomically: temp file, then rename). */
    for (int i = 0; i < 1000; i++) {
        int status;

        f = fopen(p->port_file, "r");
        if (f) {
            int ok = fscanf(f, "%u", &p->port) == 1;
            fclose(f);
            if (ok && p->port > 0)
                return 0;
        }
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = 0;
            test_proxy_pid = 0;
            test_fail("proxy %s exited before listening (status %d); see %s", name, status,
                      p->out_file);
            return -1;
        }
        test_sleep_ms(10);
    }
    test_fail("proxy %s wrote no port file in 10 s; see %s", name, p->out_file);
    proxy_stop(p);
    return -1;
}

/* Reads "NAME=N" from the counters line the proxy printed at exit; -1 if absent. */
static long proxy_counter(const struct proxy *p, const char *name)
{
    char line[1024], want[64];
    long value = -1;
    FILE *f = fopen(p->out_file, "r");

    if (!f)
        return -1;
    snprintf(want, sizeof want, " %s=", name);
    while (fgets(line, sizeof line, f)) {
        const char *at = strstr(line, want);
        if (strncmp(line, "wisp-faultproxy: requests=", 26) == 0 && at)
            value = strtol(at + strlen(want), NULL, 10);
    }
    fclose(f);
    return value;
}

/* ---- cleanup, on every path out ---- */

static int test_delete_listed(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    store_delete(test_direct, key);
    return 0;
}

static void test_cleanup(void)
{
    pid_t pid = test_proxy_pid;

    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        test_proxy_pid = 0;
    }
    if (test_direct) {
        if (store_list(test_direct, "", test_delete_listed, NULL) < 0)
            printf("warning: cleanup of s3://%s/%s/ failed: %s\n", test_bucket, test_prefix,
                   store_last_error());
        store_close(test_direct);
        test_direct = NULL;
    }
}

static void test_on_signal(int sig)
{
    pid_t pid = test_proxy_pid;

    if (pid > 0)
        kill(pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- objects ---- */

/* Deterministic bytes for (seed, object, variant): xorshift, enough to catch misplaced bytes. */
static unsigned char *test_bytes(size_t len, uint64_t seed, unsigned obj, unsigned variant)
{
    unsigned char *p = malloc(len ? len : 1);
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + obj * 0xbf58476d1ce4e5b9ULL + variant + 1;

    if (!p) {
        printf("out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)(x >> 24);
    }
    return p;
}

/* Where two buffers first differ, for messages. */
static size_t test_first_diff(const unsigned char *a, const unsigned char *b, size_t len)
{
    size_t i = 0;

    while (i < len && a[i] == b[i])
        i++;
    return i;
}

/* ---- one scenario ---- */

enum op {
    OP_PUT,
    OP_GET,
    OP_RANGE,
    OP_HEAD,
    OP_LIST,
    OP_CREATE,
    OP_DELETE,
    OP__COUNT,
};

static const char *op_to_string(enum op op)
{
    static const char *const names[OP__COUNT] = {
        "put", "get", "get_range", "head", "list", "put_if_absent", "delete",
    };
    return names[op];
}

struct scenario {
    const char *name;
    uint64_t seed;
    const char *args[16]; /* proxy fault options */
    const char *fault;    /* the proxy counter that must be non-zero, or NULL */
    unsigned objects;
    bool corrupt;       /* ranged GET and LIST content cannot be checked */
    double max_give_up; /* fraction of calls that may give up */
};

#define MIXED_ARGS                                                                                 \
    "--error-rate", "0.1", "--delay-rate", "0.1", "--reset-rate", "0.1", "--truncate-rate", "0.1", \
        "--bad-length-rate", "0.1", "--corrupt-rate", "0.1"

static const struct scenario scenarios[] = {
    {"none", 1, {NULL}, NULL, 4, false, 0},
    {"error", 11, {"--error-rate", "0.3", NULL}, "error", 8, false, 0},
    {"delay", 12, {"--delay-rate", "0.2", NULL}, "delay", 4, false, 0},
    {"reset", 13, {"--reset-rate", "0.3", NULL}, "reset", 8, false, 0},
    {"truncate", 14, {"--truncate-rate", "0.3", NULL}, "truncate", 8, false, 0},
    {"bad-length", 15, {"--bad-length-rate", "0.3", NULL}, "bad-length", 8, false, 0},
    {"corrupt", 16, {"--corrupt-rate", "0.3", NULL}, "corrupt", 8, true, 0},
    {"mixed", 17, {MIXED_ARGS, NULL}, NULL, 8, true, 0.05},
};

static const size_t test_sizes[] = {0, 1, 4096, 1024 * 1024};

struct run {
    const struct scenario *sc;
    struct store *ps;   /* through the proxy */
    char sub[128];      /* the scenario's prefix under test_prefix, for direct keys */
    bool create_probed; /* the client probes conditional support on its first create */
    unsigned calls[OP__COUNT], ok[OP__COUNT], gave_up[OP__COUNT], expected_err[OP__COUNT];
    unsigned total_calls, total_gave_up;
    struct {
        bool exists;
        size_t size;
    } objs[MAX_OBJECTS];
};

/* The time one call may take when it makes `requests` requests, each retried. */
static long test_bound_ms(unsigned requests)
{
    return (long)requests * MAX_ATTEMPTS * (REQUEST_TIMEOUT_MS + BACKOFF_MAX_MS) + SLACK_MS;
}

static bool test_errno_known(int rc)
{
    switch (-rc) {
    case ENOENT:
    case EACCES:
    case EEXIST:
    case ENOTSUP:
    case EINVAL:
    case ETIMEDOUT:
    case EBADMSG:
    case EIO:
    case ENOMEM:
        return true;
    default:
        return false;
    }
}

/* Judges the outcome of one call: the bound, the sign, and the errno.  expect is 0 when the
 * call should succeed, or the negative errno it should give (ENOENT after a delete, EEXIST for
 * a second create).  Returns true when rc is what a fault-free run would give. */
static bool test_outcome(struct run *run, enum op op, const char *key, size_t size, int rc,
                         int expect, long ms, long bound)
{
    run->calls[op]++;
    run->total_calls++;
    if (ms > bound)
        test_fail("[%s] %s %s (%zu B): took %ld ms, more than the bound of %ld ms (rc %d: %s)",
                  run->sc->name, op_to_string(op), key, size, ms, bound, rc,
                  rc < 0 ? store_last_error() : "");
    if (rc > 0) {
        test_fail("[%s] %s %s: returned %d, neither 0 nor a negative errno", run->sc->name,
                  op_to_string(op), key, rc);
        return false;
    }
    if (rc == expect) {
        if (rc == 0)
            run->ok[op]++;
        else
            run->expected_err[op]++;
        return true;
    }
    if (rc == 0) {
        test_fail("[%s] %s %s (%zu B): succeeded where it should give %s", run->sc->name,
                  op_to_string(op), key, size, strerror(-expect));
        return false;
    }
    if (!test_errno_known(rc))
        test_fail("[%s] %s %s: errno %d (%s) is not one of the store.h contract", run->sc->name,
                  op_to_string(op), key, -rc, strerror(-rc));
    if ((rc == -ENOENT || rc == -EEXIST || rc == -EACCES || rc == -EINVAL) && rc != expect)
        test_fail("[%s] %s %s (%zu B): wrong answer %s (%d) after %ld ms: %s", run->sc->name,
                  op_to_string(op), key, size, strerror(-rc), rc, ms, store_last_error());
    run->gave_up[op]++;
    run->total_gave_up++;
    printf("  [%s] gave up: %s %s (%zu B): %s after %ld ms: %s\n", run->sc->name, op_to_string(op),
           key, size, strerror(-rc), ms, store_last_error());
    return false;
}

/* Runs expr timed, judges it, and leaves its result in rc_var. */
#define TEST_CALL(run, op, key, size, expect, requests, rc_var, expr)                              \
    do {                                                                                           \
        struct timespec t0_;                                                                       \
        clock_gettime(CLOCK_MONOTONIC, &t0_);                                                      \
        rc_var = (expr);                                                                           \
        test_outcome(run, op, key, size, rc_var, expect, test_ms_since(&t0_),                      \
                     test_bound_ms(requests));                                                     \
    } while (0)

/* The direct view of key (a key of the scenario): 0 with the bytes, or a negative errno. */
static int test_direct_get(struct run *run, const char *key, void **data, size_t *len)
{
    char full[256];

    snprintf(full, sizeof full, "%s/%s", run->sub, key);
    return store_get(test_direct, full, data, len);
}

/* Puts key directly, when a faulted call left its state unknown.  Fatal if it fails. */
static void test_direct_put(struct run *run, const char *key, const void *data, size_t len)
{
    char full[256];
    int rc;

    snprintf(full, sizeof full, "%s/%s", run->sub, key);
    rc = store_put(test_direct, full, data, len);
    if (rc < 0) {
        test_fail("direct put %s: %s: %s", full, strerror(-rc), store_last_error());
        test_cleanup();
        exit(1);
    }
}

static void test_direct_delete(struct run *run, const char *key)
{
    char full[256];

    snprintf(full, sizeof full, "%s/%s", run->sub, key);
    if (store_delete(test_direct, full) < 0) {
        test_fail("direct delete %s: %s", full, store_last_error());
        test_cleanup();
        exit(1);
    }
}

/* Checks that the store holds exactly data under key (or nothing when data is NULL). */
static void test_check_stored(struct run *run, const char *what, const char *key,
                              const unsigned char *data, size_t len)
{
    void *got = NULL;
    size_t glen = 0;
    int rc = test_direct_get(run, key, &got, &glen);

    if (!data) {
        if (rc != -ENOENT)
            test_fail("[%s] after %s: direct get %s gave %d (%zu B), expected no object",
                      run->sc->name, what, key, rc, glen);
    } else if (rc < 0) {
        test_fail("[%s] after %s: direct get %s failed: %s", run->sc->name, what, key,
                  store_last_error());
    } else if (glen != len || memcmp(got, data, len) != 0) {
        test_fail("[%s] after %s: the store holds %zu B under %s, expected %zu B (first "
                  "difference at %zu)",
                  run->sc->name, what, glen, key, len,
                  test_first_diff(got, data, glen < len ? glen : len));
    }
    free(got);
}

struct listing {
    unsigned n;
    char keys[MAX_OBJECTS][32];
    uint64_t sizes[MAX_OBJECTS];
    bool overflow;
};

static int test_collect(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct listing *l = opaque;

    if (l->n == MAX_OBJECTS || strlen(key) >= sizeof l->keys[0]) {
        l->overflow = true;
        return 0;
    }
    snprintf(l->keys[l->n], sizeof l->keys[0], "%s", key);
    l->sizes[l->n++] = size;
    return 0;
}

static void test_list(struct run *run)
{
    struct listing l = {0};
    unsigned n = 0;
    int rc;

    TEST_CALL(run, OP_LIST, "obj-*", (size_t)0, 0, 1, rc,
              store_list(run->ps, "obj-", test_collect, &l));
    if (rc < 0 || run->sc->corrupt)
        return;
    for (unsigned i = 0; i < MAX_OBJECTS; i++) {
        char key[32];

        if (!run->objs[i].exists)
            continue;
        snprintf(key, sizeof key, "obj-%03u", i);
        if (n >= l.n || strcmp(l.keys[n], key) != 0 || l.sizes[n] != run->objs[i].size) {
            test_fail("[%s] list obj-: entry %u is %s (%" PRIu64 " B), expected %s (%zu B)",
                      run->sc->name, n, n < l.n ? l.keys[n] : "(none)", n < l.n ? l.sizes[n] : 0,
                      key, run->objs[i].size);
            return;
        }
        n++;
    }
    if (n != l.n || l.overflow)
        test_fail("[%s] list obj-: %u entries, expected %u", run->sc->name, l.n, n);
}

static void test_ranges(struct run *run, const char *key, const unsigned char *data, size_t len)
{
    struct {
        uint64_t offset;
        size_t len;
    } cases[] = {
        {0, len ? len : 8},
        {len / 3, len / 2 + 1},
        {len ? len - 1 : 0, 16},
        {len, 8},
    };
    unsigned char *buf = malloc(len + 64);

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint64_t off = cases[c].offset;
        size_t want = off >= len ? 0 : (len - off < cases[c].len ? len - off : cases[c].len);
        size_t got = 0;
        int rc;

        memset(buf, 0xA5, len + 64);
        TEST_CALL(run, OP_RANGE, key, len, 0, 1, rc,
                  store_get_range(run->ps, key, off, buf, cases[c].len, &got));
        if (rc < 0 || run->sc->corrupt)
            continue;
        if (got != want)
            test_fail("[%s] get_range %s (%zu B) at %" PRIu64 "+%zu: got %zu bytes, expected %zu",
                      run->sc->name, key, len, off, cases[c].len, got, want);
        else if (memcmp(buf, data + off, got) != 0)
            test_fail("[%s] get_range %s (%zu B) at %" PRIu64 "+%zu: WRONG BYTES (first "
                      "difference at %zu)",
                      run->sc->name, key, len, off, cases[c].len,
                      test_first_diff(buf, data + off, got));
        else if (got < cases[c].len && buf[got] != 0xA5)
            test_fail("[%s] get_range %s at %" PRIu64 "+%zu: wrote past the %zu bytes it read",
                      run->sc->name, key, off, cases[c].len, got);
    }
    free(buf);
}

/* One object through every operation. */
static void test_object(struct run *run, unsigned i)
{
    size_t len = test_sizes[i % (sizeof test_sizes / sizeof test_sizes[0])];
    unsigned char *data = test_bytes(len, run->sc->seed, i, 0);
    unsigned char *d1 = test_bytes(len, run->sc->seed, i, 1);
    unsigned char *d2 = test_bytes(len + 1, run->sc->seed, i, 2);
    char key[32], nkey[32], sha[65];
    struct store_stat sb;
    void *got = NULL;
    size_t glen = 0;
    int rc;

    snprintf(key, sizeof key, "obj-%03u", i);
    snprintf(nkey, sizeof nkey, "new-%03u", i);
    if (hash_sha256_hex(data, len, sha) < 0) {
        printf("out of memory\n");
        exit(1);
    }

    /* PUT: on success the store holds exactly the bytes; on failure, put them directly. */
    TEST_CALL(run, OP_PUT, key, len, 0, 1, rc, store_put(run->ps, key, data, len));
    if (rc == 0)
        test_check_stored(run, "put", key, data, len);
    else
        test_direct_put(run, key, data, len);
    run->objs[i].exists = true;
    run->objs[i].size = len;

    /* Whole GET: the client checks length and checksum, so wrong bytes are never allowed. */
    TEST_CALL(run, OP_GET, key, len, 0, 1, rc, store_get(run->ps, key, &got, &glen));
    if (rc == 0 && (glen != len || memcmp(got, data, len) != 0))
        test_fail("[%s] get %s: WRONG BYTES: %zu B, expected %zu B, first difference at %zu",
                  run->sc->name, key, glen, len,
                  test_first_diff(got, data, glen < len ? glen : len));
    free(got);
    got = NULL;

    test_ranges(run, key, data, len);

    TEST_CALL(run, OP_HEAD, key, len, 0, 1, rc, store_head(run->ps, key, &sb));
    if (rc == 0 && sb.size != len)
        test_fail("[%s] head %s: WRONG SIZE %" PRIu64 ", expected %zu", run->sc->name, key, sb.size,
                  len);
    else if (rc == 0 && strcmp(sb.sha256, sha) != 0)
        test_fail("[%s] head %s: sha256 '%s', expected the recorded %s", run->sc->name, key,
                  sb.sha256, sha);

    test_list(run);

    /* Conditional create of a fresh key: success, and a retry of our own lost answer must not
     * turn into EEXIST.  The first create of a handle also probes (up to 3 more requests). */
    TEST_CALL(run, OP_CREATE, nkey, len, 0, run->create_probed ? 2 : 5, rc,
              store_put_if_absent(run->ps, nkey, d1, len));
    run->create_probed = true;
    if (rc == 0) {
        test_check_stored(run, "put_if_absent", nkey, d1, len);
    } else {
        void *cur = NULL;
        size_t clen = 0;

        if (test_direct_get(run, nkey, &cur, &clen) == -ENOENT)
            test_direct_put(run, nkey, d1, len);
        else if (rc == -EEXIST && clen == len && memcmp(cur, d1, len) == 0)
            printf("  [%s] put_if_absent %s: EEXIST came from our own earlier attempt\n",
                   run->sc->name, nkey);
        free(cur);
    }
    /* Again with other bytes: must be refused, and the object left as it was. */
    TEST_CALL(run, OP_CREATE, nkey, len + 1, -EEXIST, 2, rc,
              store_put_if_absent(run->ps, nkey, d2, len + 1));
    test_check_stored(run, "second put_if_absent", nkey, d1, len);

    TEST_CALL(run, OP_DELETE, nkey, len, 0, 1, rc, store_delete(run->ps, nkey));
    if (rc == 0)
        test_check_stored(run, "delete", nkey, NULL, 0);
    else
        test_direct_delete(run, nkey);

    /* Every other object is deleted, then read (ENOENT) and deleted again (still success). */
    if (i % 2 == 1) {
        TEST_CALL(run, OP_DELETE, key, len, 0, 1, rc, store_delete(run->ps, key));
        if (rc == 0)
            test_check_stored(run, "delete", key, NULL, 0);
        else
            test_direct_delete(run, key);
        run->objs[i].exists = false;
        TEST_CALL(run, OP_GET, key, len, -ENOENT, 1, rc, store_get(run->ps, key, &got, &glen));
        free(got);
        got = NULL;
        TEST_CALL(run, OP_DELETE, key, len, 0, 1, rc, store_delete(run->ps, key));
    }
    free(data);
    free(d1);
    free(d2);
}

static struct store *test_open_proxied(const char *sub, unsigned port)
{
    struct store_options opts;
    struct store *st;
    char url[1024];
    int rc;

    store_options_init(&opts);
    opts.connect_timeout_ms = CONNECT_TIMEOUT_MS;
    opts.request_timeout_ms = REQUEST_TIMEOUT_MS;
    opts.max_attempts = MAX_ATTEMPTS;
    opts.backoff_base_ms = BACKOFF_BASE_MS;
    opts.backoff_max_ms = BACKOFF_MAX_MS;
    snprintf(url, sizeof url, "s3://%s/%s/%s/?endpoint=http://127.0.0.1:%u&region=%s", test_bucket,
             test_prefix, sub, port, test_region);
    rc = store_open(url, &opts, &st);
    if (rc < 0) {
        test_fail("store_open %s: %s", url, store_last_error());
        return NULL;
    }
    return st;
}

static void test_print_tally(const struct run *run)
{
    for (int op = 0; op < OP__COUNT; op++)
        if (run->calls[op])
            printf("  [%s] %-13s calls %3u  ok %3u  expected-errno %3u  gave-up %u\n",
                   run->sc->name, op_to_string((enum op)op), run->calls[op], run->ok[op],
                   run->expected_err[op], run->gave_up[op]);
}

static void test_scenario(const struct scenario *sc)
{
    struct run run = {.sc = sc};
    struct store_stats stats = {0};
    struct proxy px;
    struct timespec t0;
    unsigned before = test_failures;
    long injected = 0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    snprintf(run.sub, sizeof run.sub, "%s", sc->name);
    test_say("--- scenario %s (seed %" PRIu64 ")", sc->name, sc->seed);
    if (proxy_start(&px, sc->name, "127.0.0.1:0", sc->seed, sc->args) < 0)
        return;
    run.ps = test_open_proxied(sc->name, px.port);
    if (run.ps) {
        for (unsigned i = 0; i < sc->objects && i < MAX_OBJECTS; i++)
            test_object(&run, i);
        store_get_stats(run.ps, &stats);
        store_close(run.ps);
    }
    proxy_stop(&px);

    test_print_tally(&run);
    if (run.ps)
        printf("  [%s] client: %" PRIu64 " requests, %" PRIu64 " retries, %" PRIu64
               " failures, %" PRIu64 " connections\n",
               sc->name, stats.requests, stats.retries, stats.failures, stats.connections);
    if (sc->fault) {
        injected = proxy_counter(&px, sc->fault);
        if (injected <= 0)
            test_fail("[%s] the proxy injected no %s fault (counter %ld); see %s", sc->name,
                      sc->fault, injected, px.out_file);
    }
    if (run.total_gave_up > sc->max_give_up * run.total_calls)
        test_fail("[%s] %u of %u calls gave up (at most %.0f%% allowed): the client does not "
                  "retry some faults",
                  sc->name, run.total_gave_up, run.total_calls, sc->max_give_up * 100);
    test_say("%s scenario %s: %u calls, %u gave up, %u failures, %ld ms; proxy log %s",
             test_failures == before ? "ok" : "FAILED", sc->name, run.total_calls,
             run.total_gave_up, test_failures - before, test_ms_since(&t0), px.log_file);
}

/* ---- the store is down, then comes back ---- */

static unsigned test_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unsigned port = 0;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Runs every operation once; down: each must fail in time, naming the endpoint. */
static void test_all_ops(struct run *run, bool down, const char *endpoint)
{
    static const unsigned char data[] = "the store is back";
    size_t len = sizeof data - 1, got = 0, glen = 0;
    unsigned char buf[64];
    struct store_stat sb;
    struct listing l = {0};
    void *back = NULL;
    int rc, expect = 0;
    const char *key = "obj-000";

    for (int op = 0; op < OP__COUNT; op++) {
        struct timespec t0;
        long ms;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        switch ((enum op)op) {
        case OP_PUT:
            rc = store_put(run->ps, key, data, len);
            break;
        case OP_GET:
            rc = store_get(run->ps, key, &back, &glen);
            if (rc == 0 && (glen != len || memcmp(back, data, len) != 0))
                test_fail("[%s] get %s: WRONG BYTES", run->sc->name, key);
            free(back);
            back = NULL;
            break;
        case OP_RANGE:
            rc = store_get_range(run->ps, key, 4, buf, 5, &got);
            if (rc == 0 && (got != 5 || memcmp(buf, data + 4, 5) != 0))
                test_fail("[%s] get_range %s: WRONG BYTES", run->sc->name, key);
            break;
        case OP_HEAD:
            rc = store_head(run->ps, key, &sb);
            if (rc == 0 && sb.size != len)
                test_fail("[%s] head %s: WRONG SIZE", run->sc->name, key);
            break;
        case OP_LIST:
            rc = store_list(run->ps, "", test_collect, &l);
            if (rc == 0 && (l.n < 1 || strcmp(l.keys[0], key) != 0))
                test_fail("[%s] list: %u entries, first %s", run->sc->name, l.n,
                          l.n ? l.keys[0] : "(none)");
            break;
        case OP_CREATE:
            rc = store_put_if_absent(run->ps, "new-000", data, len);
            break;
        case OP_DELETE:
        default:
            rc = store_delete(run->ps, "new-000");
            break;
        }
        ms = test_ms_since(&t0);
        if (!down) {
            test_outcome(run, (enum op)op, key, len, rc, expect, ms, test_bound_ms(5));
            continue;
        }
        run->calls[op]++;
        run->total_calls++;
        if (rc == 0) {
            test_fail("[down] %s succeeded against a closed port", op_to_string((enum op)op));
            continue;
        }
        if (ms > test_bound_ms(op == OP_CREATE ? 5 : 1))
            test_fail("[down] %s took %ld ms, more than the bound of %ld ms",
                      op_to_string((enum op)op), ms, test_bound_ms(op == OP_CREATE ? 5 : 1));
        if (rc != -EIO && rc != -ETIMEDOUT)
            test_fail("[down] %s gave %s (%d), expected EIO or ETIMEDOUT",
                      op_to_string((enum op)op), strerror(-rc), rc);
        if (!strstr(store_last_error(), endpoint))
            test_fail("[down] %s: the message does not name the endpoint %s: '%s'",
                      op_to_string((enum op)op), endpoint, store_last_error());
        run->expected_err[op]++;
        printf("  [down] %s: %s after %ld ms: %s\n", op_to_string((enum op)op), strerror(-rc), ms,
               store_last_error());
    }
}

static void test_store_down(void)
{
    static const struct scenario down = {"down", 2, {NULL}, NULL, 0, false, 0};
    static const struct scenario back = {"back", 3, {NULL}, NULL, 0, false, 0};
    struct run run_down = {.sc = &down}, run_back = {.sc = &back};
    unsigned port = test_free_port(), before = test_failures;
    char endpoint[64], listen[64];
    struct proxy px;
    struct store *st;

    test_say("--- scenario down (a closed port, then a proxy on it)");
    if (port == 0) {
        test_fail("no free port");
        return;
    }
    snprintf(endpoint, sizeof endpoint, "127.0.0.1:%u", port);
    st = test_open_proxied("down", port);
    if (!st)
        return;
    run_down.ps = st;
    test_all_ops(&run_down, true, endpoint);

    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    if (proxy_start(&px, "back", listen, 3, NULL) == 0) {
        run_back.ps = st;
        test_all_ops(&run_back, false, endpoint);
        test_print_tally(&run_back);
        proxy_stop(&px);
    }
    store_close(st);
    test_say("%s scenario down: %u failures", test_failures == before ? "ok" : "FAILED",
             test_failures - before);
}

/* ---- a request given up through its thread's cancel flag ---- */

static unsigned test_cancel_flag;

static void *test_cancel_raise(void *unused)
{
    (void)unused;
    test_sleep_ms(300);
    __atomic_store_n(&test_cancel_flag, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_cancel(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    unsigned before = test_failures;
    struct store_stats st0, st1;
    struct timespec t0;
    pthread_t raiser;
    void *data = NULL;
    size_t len = 0;

    test_say("--- scenario cancel (a store that never answers)");
    /* Listening, never accepting: connections complete (the backlog), requests never end. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
        test_fail("cancel: listening socket: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    struct store *st = test_open_proxied("cancel", ntohs(a.sin_port));
    if (!st) {
        close(fd);
        return;
    }
    store_set_thread_cancel(&test_cancel_flag);
    if (pthread_create(&raiser, NULL, test_cancel_raise, NULL) != 0) {
        test_fail("cancel: pthread_create");
    } else {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = store_get(st, "hangs", &data, &len);
        long ms = test_ms_since(&t0);
        pthread_join(raiser, NULL);
        printf("  [cancel] GET on a hanging store: %s after %ld ms (each attempt may wait %d ms)\n",
               strerror(-rc), ms, REQUEST_TIMEOUT_MS);
        if (rc != -ECANCELED || ms > 2000)
            test_fail("cancel: the GET returned %d after %ld ms, not -ECANCELED within 2 s", rc,
                      ms);
        free(data);
    }
    /* Raised before: no request at all. */
    store_get_stats(st, &st0);
    int rc = store_put(st, "never", "x", 1);
    store_get_stats(st, &st1);
    if (rc != -ECANCELED || st1.requests != st0.requests)
        test_fail("cancel: a PUT with the flag up returned %d after %" PRIu64 " requests", rc,
                  st1.requests - st0.requests);
    store_close(st);
    close(fd);
    /* Down again: requests work (radosgw, directly). */
    __atomic_store_n(&test_cancel_flag, 0, __ATOMIC_RELEASE);
    rc = store_put(test_direct, "cancel-after", "y", 1);
    if (rc < 0)
        test_fail("cancel: a PUT with the flag down failed: %s", store_last_error());
    store_set_thread_cancel(NULL);
    if (rc == 0 && store_delete(test_direct, "cancel-after") < 0)
        test_fail("cancel: delete: %s", store_last_error());
    test_say("%s scenario cancel: %u failures", test_failures == before ? "ok" : "FAILED",
             test_failures - before);
}

/* ---- main ---- */

static bool test_selected(const char *name)
{
    const char *list = getenv("WISP_FAULT_SCENARIOS");
    size_t n = strlen(name);

    if (!list || !*list)
        return true;
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return true;
    return false;
}

static void test_remove_logs(void)
{
    char path[PATH_MAX + 64];
    const char *exts[] = {"port", "log", "out"};

    for (size_t s = 0; s < sizeof scenarios / sizeof scenarios[0] + 1; s++) {
        const char *name = s < sizeof scenarios / sizeof scenarios[0] ? scenarios[s].name : "back";
        for (size_t e = 0; e < 3; e++) {
            snprintf(path, sizeof path, "%s/%s.%s", test_logdir, name, exts[e]);
            unlink(path);
        }
    }
    rmdir(test_logdir);
}

int main(int argc, char **argv)
{
    const char *endpoint = getenv("WISP_TEST_S3_ENDPOINT");
    const char *bucket = getenv("WISP_TEST_S3_BUCKET");
    const char *region = getenv("WISP_TEST_S3_REGION");
    const char *logroot = getenv("WISP_FAULT_LOGDIR");
    struct sigaction sa = {.sa_handler = test_on_signal};
    struct store_options opts;
    char url[1024];
    uint32_t nonce = 0;
    const char *host;
    size_t hl;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Each failure is printed below with its message: the store's own warnings would repeat it. */
    setenv("WISP_LOG_LEVEL", "error", 0);
    if (!endpoint || !*endpoint) {
        printf("SKIP: WISP_TEST_S3_ENDPOINT is not set (start tests/s3/rgw-fixture)\n");
        return 77;
    }
    test_proxy_bin = argc > 1 ? argv[1] : getenv("WISP_FAULTPROXY");
    if (!test_proxy_bin || access(test_proxy_bin, X_OK) != 0) {
        printf("FAIL: no wisp-faultproxy (WISP_FAULTPROXY or argv[1]): %s\n",
               test_proxy_bin ? test_proxy_bin : "(unset)");
        return 1;
    }
    host = strstr(endpoint, "://") ? strstr(endpoint, "://") + 3 : endpoint;
    hl = strcspn(host, "/");
    if (strncmp(endpoint, "http://", 7) != 0 || hl == 0 || hl >= sizeof test_upstream) {
        printf("FAIL: WISP_TEST_S3_ENDPOINT '%s' is not http://HOST:PORT\n", endpoint);
        return 1;
    }
    memcpy(test_upstream, host, hl);
    snprintf(test_bucket, sizeof test_bucket, "%s", bucket && *bucket ? bucket : "wisp-test");
    snprintf(test_region, sizeof test_region, "%s", region && *region ? region : "us-east-1");
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
        nonce = (uint32_t)time(NULL);
    snprintf(test_prefix, sizeof test_prefix, "fault-%ld-%08x", (long)getpid(), nonce);
    snprintf(test_logdir, sizeof test_logdir, "%s/store_faults-%ld",
             logroot && *logroot ? logroot : ".", (long)getpid());
    if (mkdir(test_logdir, 0755) < 0 && errno != EEXIST) {
        printf("FAIL: mkdir %s: %s\n", test_logdir, strerror(errno));
        return 1;
    }

    /* The proxy dies with us, whatever way we go. */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    atexit(test_cleanup);

    store_options_init(&opts);
    opts.connect_timeout_ms = 5000;
    opts.request_timeout_ms = 60000;
    snprintf(url, sizeof url, "s3://%s/%s/?endpoint=%s&region=%s", test_bucket, test_prefix,
             endpoint, test_region);
    rc = store_open(url, &opts, &test_direct);
    if (rc < 0) {
        printf("FAIL: store_open %s: %s\n", url, store_last_error());
        return 1;
    }
    test_say("store_faults: %s through %s, logs in %s", url, test_proxy_bin, test_logdir);

    for (size_t s = 0; s < sizeof scenarios / sizeof scenarios[0]; s++)
        if (test_selected(scenarios[s].name))
            test_scenario(&scenarios[s]);
    if (test_selected("down"))
        test_store_down();
    if (test_selected("cancel"))
        test_cancel();

    test_cleanup();
    if (test_failures) {
        printf("%u failures; proxy logs kept in %s\n", test_failures, test_logdir);
        return 1;
    }
    test_remove_logs();
    printf("all scenarios passed\n");
    return 0;
}
