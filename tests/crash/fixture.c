/* fixture.c: see fixture.h. */
#include "fixture.h"

#include "store.h"

#include <libnbd.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FX_MAX_CHILDREN 64
#define FX_MAX_STORES   8

static char fx_dir[512];
static pid_t fx_children[FX_MAX_CHILDREN];
static char *fx_stores[FX_MAX_STORES];
static pid_t fx_main_pid;
static bool fx_cleaning;

/* ---- messages -------------------------------------------------------------------------------- */

static void fx_vlog(const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void fx_vlog(const char *prefix, const char *fmt, va_list ap)
{
    char line[2048];
    int n = snprintf(line, sizeof line, "%s", prefix);

    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    fprintf(stderr, "%s\n", line);
}

void fx_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fx_vlog("", fmt, ap);
    va_end(ap);
}

static void fx_cleanup(void);

void fx_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    char prefix[512];
    va_list ap;

    snprintf(prefix, sizeof prefix, "FAIL %s:%d: %s: ", file, line, cond);
    va_start(ap, fmt);
    fx_vlog(prefix, fmt, ap);
    va_end(ap);
    if (getpid() != fx_main_pid)
        _exit(1); /* a forked helper: the main process cleans up */
    exit(1);
}

void fx_skip(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fx_vlog("SKIP: ", fmt, ap);
    va_end(ap);
    exit(FX_SKIP);
}

double fx_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void fx_sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- directories and cleanup ----------------------------------------------------------------- */

static int fx_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (remove(path) < 0 && errno != ENOENT)
        fprintf(stderr, "warning: remove %s: %s\n", path, strerror(errno));
    return 0;
}

void fx_rm_rf(const char *path)
{
    nftw(path, fx_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void fx_mkdir(const char *path)
{
    FX_CHECK(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", path, strerror(errno));
}

static int fx_store_delete_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    store_delete(opaque, key);
    return 0;
}

static void fx_cleanup(void)
{
    if (fx_cleaning || getpid() != fx_main_pid)
        return;
    fx_cleaning = true;
    for (int i = 0; i < FX_MAX_CHILDREN; i++)
        if (fx_children[i] > 0) {
            kill(fx_children[i], SIGKILL);
            waitpid(fx_children[i], NULL, 0);
            fx_children[i] = 0;
        }
    for (int i = 0; i < FX_MAX_STORES; i++) {
        struct store *st;
        if (!fx_stores[i])
            continue;
        if (store_open(fx_stores[i], NULL, &st) == 0) {
            if (store_list(st, "", fx_store_delete_one, st) < 0)
                fprintf(stderr, "warning: cannot clean %s: %s\n", fx_stores[i], store_last_error());
            store_close(st);
        }
        free(fx_stores[i]);
        fx_stores[i] = NULL;
    }
    if (fx_dir[0]) {
        const char *keep = getenv("WISP_TEST_KEEP");
        if (keep && strcmp(keep, "1") == 0)
            fprintf(stderr, "kept %s (WISP_TEST_KEEP=1)\n", fx_dir);
        else
            fx_rm_rf(fx_dir);
        fx_dir[0] = '\0';
    }
}

static void fx_on_signal(int sig)
{
    fx_cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

const char *fx_setup(const char *name)
{
    const char *tmp = getenv("TMPDIR");

    fx_main_pid = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(fx_dir, sizeof fx_dir, "%s/wisp-%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
    FX_CHECK(mkdtemp(fx_dir) != NULL, "mkdtemp %s: %s", fx_dir, strerror(errno));
    atexit(fx_cleanup);
    signal(SIGINT, fx_on_signal);
    signal(SIGTERM, fx_on_signal);
    signal(SIGPIPE, SIG_IGN);
    return fx_dir;
}

const char *fx_tmpdir(void)
{
    return fx_dir;
}

const char *fx_need_env(const char *name)
{
    const char *v = getenv(name);

    if (!v || !*v)
        fx_skip("%s is not set (run through meson test, or set it by hand)", name);
    return v;
}

/* ---- child processes ------------------------------------------------------------------------- */

static void fx_child_add(pid_t pid)
{
    for (int i = 0; i < FX_MAX_CHILDREN; i++)
        if (fx_children[i] == 0) {
            fx_children[i] = pid;
            return;
        }
    FX_CHECK(false, "more than %d children", FX_MAX_CHILDREN);
}

static void fx_child_forget(pid_t pid)
{
    for (int i = 0; i < FX_MAX_CHILDREN; i++)
        if (fx_children[i] == pid)
            fx_children[i] = 0;
}

pid_t fx_spawn(const char *const *argv, const char *log_path, const char *const *extra_env)
{
    pid_t pid = fork();

    FX_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        for (int i = 0; extra_env && extra_env[i]; i++)
            putenv((char *)extra_env[i]);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    fx_child_add(pid);
    return pid;
}

bool fx_exited(pid_t pid, int *status)
{
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);

    if (r == pid) {
        fx_child_forget(pid);
        if (status)
            *status = st;
        return true;
    }
    return false;
}

int fx_reap(pid_t pid, int sig, double timeout)
{
    int st = 0;
    double deadline = fx_now() + timeout;

    if (pid <= 0)
        return 0;
    if (fx_exited(pid, &st))
        return st;
    kill(pid, sig);
    while (fx_now() < deadline) {
        if (fx_exited(pid, &st))
            return st;
        fx_sleep(0.01);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fx_child_forget(pid);
    return st;
}

int fx_run(const char *const *argv)
{
    char log_path[600];
    int st;

    snprintf(log_path, sizeof log_path, "%s/commands.log", fx_dir);
    pid_t pid = fx_spawn(argv, log_path, NULL);
    FX_CHECK(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
    fx_child_forget(pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- nbdkit ---------------------------------------------------------------------------------- */

/* Whether an NBD server answers on path: a full handshake that ends with NBD_OPT_ABORT, so
 * the server logs nothing. */
static bool fx_socket_accepts(const char *path)
{
    struct nbd_handle *nbd = nbd_create();
    bool ok;

    if (!nbd)
        return false;
    ok = nbd_set_opt_mode(nbd, true) == 0 && nbd_connect_unix(nbd, path) == 0;
    if (ok)
        nbd_opt_abort(nbd);
    nbd_close(nbd);
    return ok;
}

void fx_server_log_tail(const struct fx_server *s, int lines)
{
    char cmd[700];

    fprintf(stderr, "---- last lines of %s\n", s->log);
    snprintf(cmd, sizeof cmd, "tail -n %d '%s' >&2", lines, s->log);
    if (system(cmd) != 0)
        fprintf(stderr, "(cannot show it)\n");
    fprintf(stderr, "----\n");
}

void fx_server_start(struct fx_server *s, const char *name, const char *store_url,
                     const char *cache, const char *meta, const char *const *params)
{
    const char *plugin = fx_need_env("WISP_TEST_PLUGIN");
    const char *preload = getenv("WISP_TEST_NBDKIT_PRELOAD");
    static char preload_env[600], asan_env[600];
    const char *env[3] = {NULL, NULL, NULL};
    char store_arg[1300], cache_arg[700], meta_arg[700], control_arg[700];
    const char *argv[40];
    int n = 0;

    snprintf(s->sock, sizeof s->sock, "%s/%s.sock", fx_dir, name);
    snprintf(s->control, sizeof s->control, "%s/%s.ctl", fx_dir, name);
    snprintf(s->log, sizeof s->log, "%s/%s.log", fx_dir, name);
    unlink(s->sock); /* left behind by a killed server */
    unlink(s->control);
    snprintf(store_arg, sizeof store_arg, "store=%s", store_url);
    snprintf(cache_arg, sizeof cache_arg, "cache=%s", cache);
    snprintf(meta_arg, sizeof meta_arg, "meta=%s", meta);
    snprintf(control_arg, sizeof control_arg, "control=%s", s->control);
    argv[n++] = "nbdkit";
    argv[n++] = "-f";
    argv[n++] = "--exit-with-parent";
    argv[n++] = "-U";
    argv[n++] = s->sock;
    argv[n++] = plugin;
    argv[n++] = store_arg;
    argv[n++] = cache_arg;
    argv[n++] = meta_arg;
    argv[n++] = control_arg;
    argv[n++] = "stats-interval=0";
    /* Sanitizer build: leases off, as in tests/storage/server.c (ws_server_start). */
    if (preload && *preload)
        argv[n++] = "lease-ttl=0";
    for (int i = 0; params && params[i] && n < 38; i++)
        argv[n++] = params[i];
    argv[n] = NULL;

    if (preload && *preload) {
        /* nbdkit itself is not instrumented: its leaks are not ours to find. */
        const char *opts = getenv("ASAN_OPTIONS");
        snprintf(preload_env, sizeof preload_env, "LD_PRELOAD=%s", preload);
        snprintf(asan_env, sizeof asan_env, "ASAN_OPTIONS=%s%sdetect_leaks=0", opts ? opts : "",
                 opts && *opts ? ":" : "");
        env[0] = preload_env;
        env[1] = asan_env;
    }
    {
        FILE *f = fopen(s->log, "a");
        if (f) {
            fprintf(f, "==== start:");
            for (int i = 0; argv[i]; i++)
                fprintf(f, " %s", argv[i]);
            fprintf(f, "\n");
            fclose(f);
        }
    }
    s->pid = fx_spawn(argv, s->log, env);

    double deadline = fx_now() + 30;
    for (;;) {
        int st;
        if (fx_exited(s->pid, &st)) {
            s->pid = 0;
            fx_server_log_tail(s, 30);
            FX_CHECK(false, "nbdkit exited at start-up (status 0x%x); see %s", st, s->log);
        }
        if (fx_socket_accepts(s->sock))
            break;
        FX_CHECK(fx_now() < deadline, "nbdkit did not accept connections within 30 s");
        fx_sleep(0.01);
    }
}

void fx_server_kill(struct fx_server *s)
{
    if (s->pid > 0)
        fx_reap(s->pid, SIGKILL, 10);
    s->pid = 0;
}

/* Appends every thread's stack of a hung server to its log, when gdb is there, and says so. */
static void fx_server_backtrace(const struct fx_server *s)
{
    char pid[32];
    const char *argv[] = {"timeout", "60", "gdb", "-batch", "-p", pid, "-ex", "thread apply all bt",
                          NULL};

    snprintf(pid, sizeof pid, "%d", (int)s->pid);
    pid_t p = fx_spawn(argv, s->log, NULL);
    int st;
    if (waitpid(p, &st, 0) == p)
        fx_child_forget(p);
    fprintf(stderr, "the stacks of nbdkit's threads (if gdb could get them) are in %s\n", s->log);
}

void fx_server_stop(struct fx_server *s)
{
    int st;

    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    double deadline = fx_now() + 30;
    while (!fx_exited(s->pid, &st)) {
        if (fx_now() > deadline) {
            fx_server_log_tail(s, 30);
            fx_server_backtrace(s);
            fx_reap(s->pid, SIGKILL, 5);
            s->pid = 0;
            FX_CHECK(false, "nbdkit did not stop within 30 s of SIGTERM");
        }
        fx_sleep(0.01);
    }
    s->pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fx_server_log_tail(s, 30);
        FX_CHECK(false, "nbdkit did not exit cleanly on SIGTERM (status 0x%x)", st);
    }
}

/* ---- wisp CLI -------------------------------------------------------------------------------- */

void fx_disk_create(const char *meta, const char *name, const char *size, const char *chunk)
{
    const char *argv[] = {fx_need_env("WISP_TEST_CLI"),
                          "disk",
                          "create",
                          name,
                          "--size",
                          size,
                          "--chunk-size",
                          chunk,
                          "--meta",
                          meta,
                          NULL};
    int rc = fx_run(argv);

    FX_CHECK(rc == 0, "wisp disk create %s exited %d (see %s/commands.log)", name, rc, fx_dir);
}

long long fx_disk_stat(const struct fx_server *s, const char *disk, const char *member)
{
    char out_path[600], key[128], buf[16384];
    const char *argv[] = {fx_need_env("WISP_TEST_CLI"),
                          "disk",
                          "stats",
                          disk,
                          "--json",
                          "--control",
                          s->control,
                          NULL};
    long long v = -1;
    int st;

    snprintf(out_path, sizeof out_path, "%s/stats.out", fx_dir);
    unlink(out_path);
    pid_t pid = fx_spawn(argv, out_path, NULL);
    FX_CHECK(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
    fx_child_forget(pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return -1;
    FILE *f = fopen(out_path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "section.member": the member found after the section's name (json-glib prints members
     * in the order the server built them, and the stats section's names are unique in it). */
    char *p = buf;
    const char *dot = strchr(member, '.');
    if (dot) {
        snprintf(key, sizeof key, "\"%.*s\"", (int)(dot - member), member);
        p = strstr(p, key);
        member = dot + 1;
    }
    snprintf(key, sizeof key, "\"%s\"", member);
    p = p ? strstr(p, key) : NULL;
    if (p) {
        p += strlen(key);
        while (*p == ' ' || *p == ':')
            p++;
        v = strtoll(p, NULL, 10);
    }
    return v;
}

/* ---- radosgw --------------------------------------------------------------------------------- */

bool fx_s3_available(void)
{
    const char *need[] = {"WISP_TEST_S3_ENDPOINT", "WISP_TEST_S3_BUCKET", "AWS_ACCESS_KEY_ID",
                          "AWS_SECRET_ACCESS_KEY"};

    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        const char *v = getenv(need[i]);
        if (!v || !*v)
            return false;
    }
    return true;
}

void fx_s3_url(char *out, size_t size, const char *prefix, const char *endpoint_override)
{
    const char *region = getenv("WISP_TEST_S3_REGION");

    snprintf(out, size, "s3://%s/%s?endpoint=%s&region=%s", getenv("WISP_TEST_S3_BUCKET"), prefix,
             endpoint_override ? endpoint_override : getenv("WISP_TEST_S3_ENDPOINT"),
             region && *region ? region : "us-east-1");
}

void fx_store_cleanup_register(const char *url)
{
    for (int i = 0; i < FX_MAX_STORES; i++)
        if (!fx_stores[i]) {
            fx_stores[i] = strdup(url);
            return;
        }
}

/* ---- randomness ------------------------------------------------------------------------------ */

uint64_t fx_seed(void)
{
    const char *s = getenv("WISP_TEST_SEED");
    struct timespec ts;

    if (s && *s)
        return strtoull(s, NULL, 0);
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32;
}

uint64_t fx_rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t fx_rand_range(uint64_t *state, uint64_t lo, uint64_t hi)
{
    return lo + fx_rand_next(state) % (hi - lo + 1);
}

/* ---- wisp-faultproxy ---------------------------------------------------------------------- */

void fx_proxy_init(struct fx_proxy *p, const char *dir)
{
    memset(p, 0, sizeof *p);
    snprintf(p->port_file, sizeof p->port_file, "%s/proxy.port", dir);
    snprintf(p->log, sizeof p->log, "%s/proxy.log", dir);
}

void fx_proxy_start(struct fx_proxy *p, unsigned port, uint64_t seed, const char *const *faults)
{
    const char *endpoint = getenv("WISP_TEST_S3_ENDPOINT");
    char upstream[256], listen_arg[64], seed_arg[32];
    const char *argv[40];
    int n = 0;

    /* http://HOST:PORT[/] -> HOST:PORT */
    const char *hp = strstr(endpoint, "://");
    hp = hp ? hp + 3 : endpoint;
    snprintf(upstream, sizeof upstream, "%s", hp);
    char *slash = strchr(upstream, '/');
    if (slash)
        *slash = '\0';
    snprintf(listen_arg, sizeof listen_arg, "127.0.0.1:%u", port);
    snprintf(seed_arg, sizeof seed_arg, "%" PRIu64, seed);
    argv[n++] = fx_need_env("WISP_TEST_FAULTPROXY");
    argv[n++] = "--upstream";
    argv[n++] = upstream;
    argv[n++] = "--listen";
    argv[n++] = listen_arg;
    argv[n++] = "--port-file";
    argv[n++] = p->port_file;
    argv[n++] = "--seed";
    argv[n++] = seed_arg;
    argv[n++] = "--log";
    argv[n++] = p->log;
    for (int i = 0; faults && faults[i] && n < 38; i++)
        argv[n++] = faults[i];
    argv[n] = NULL;

    unlink(p->port_file);
    p->pid = fx_spawn(argv, p->log, NULL);
    double deadline = fx_now() + 10;
    for (;;) {
        FILE *f = fopen(p->port_file, "r");
        unsigned listening = 0;
        if (f) {
            int ok = fscanf(f, "%u", &listening);
            fclose(f);
            if (ok == 1 && listening > 0) {
                p->port = listening;
                break;
            }
        }
        FX_CHECK(!fx_exited(p->pid, NULL), "wisp-faultproxy exited at start (see %s)", p->log);
        FX_CHECK(fx_now() < deadline, "wisp-faultproxy did not write its port file");
        fx_sleep(0.01);
    }
    FX_CHECK(port == 0 || p->port == port, "proxy on port %u, wanted %u", p->port, port);
}

void fx_proxy_stop(struct fx_proxy *p)
{
    fx_reap(p->pid, SIGTERM, 5);
    p->pid = 0;
}
