/* server.c: the fixture of the storage tests (see server.h). */
#include "server.h"

#include "hash.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WS_MAX_SERVERS 16

static struct {
    char *name;
    char *tmp;
    char *logdir;
    const char *plugin, *cli;
    double t0;
    bool initialised, failed, in_cleanup;
    pid_t main_pid;
    struct ws_server *servers[WS_MAX_SERVERS];
    int n_servers;
    unsigned run_seq;
    char signal_cmd[4096]; /* prepared for the signal handler, which must not allocate */
} ws;

/* ---- small helpers ------------------------------------------------------------------------ */

double ws_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *ws_tmpdir(void)
{
    return ws.tmp;
}

const char *ws_cli_path(void)
{
    return ws.cli;
}

const char *ws_plugin_path(void)
{
    return ws.plugin;
}

void ws_log(const char *fmt, ...)
{
    va_list ap;

    printf("[%7.2fs] ", ws_now() - ws.t0);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

noreturn void ws_skip(const char *fmt, ...)
{
    va_list ap;

    printf("SKIP: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    exit(WS_SKIP);
}

noreturn void ws_fail_at(const char *file, int line, const char *fmt, ...)
{
    static int failing;
    va_list ap;

    /* Several threads may fail at once (their server is gone): the first one reports and
     * exits, the others wait for the end. */
    if (__atomic_exchange_n(&failing, 1, __ATOMIC_ACQ_REL))
        for (;;)
            pause();
    fflush(stdout);
    fprintf(stderr, "FAIL: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    ws.failed = true;
    exit(1);
}

static char *ws_read_file(const char *path, size_t *len_out)
{
    gchar *data = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &data, &len, NULL))
        return NULL;
    if (len_out)
        *len_out = len;
    return data;
}

bool ws_have_tool(const char *tool)
{
    const char *path = getenv("PATH");
    bool found = false;

    if (strchr(tool, '/'))
        return access(tool, X_OK) == 0;
    if (!path)
        path = "/usr/bin:/bin";
    gchar **dirs = g_strsplit(path, ":", -1);
    for (int i = 0; dirs[i] && !found; i++) {
        gchar *p = g_build_filename(*dirs[i] ? dirs[i] : ".", tool, NULL);
        found = access(p, X_OK) == 0;
        g_free(p);
    }
    g_strfreev(dirs);
    return found;
}

void ws_require_tools(const char *tool, ...)
{
    va_list ap;

    va_start(ap, tool);
    for (const char *t = tool; t; t = va_arg(ap, const char *))
        if (!ws_have_tool(t))
            ws_skip("%s is not installed (it is in scripts/deps)", t);
    va_end(ap);
}

bool ws_have_s3(void)
{
    const char *e = getenv("WISP_TEST_S3_ENDPOINT");
    return e && *e && getenv("WISP_TEST_S3_BUCKET") && getenv("AWS_ACCESS_KEY_ID") &&
           getenv("AWS_SECRET_ACCESS_KEY");
}

/* ---- cleanup ------------------------------------------------------------------------------ */

struct ws_s3_delete {
    struct store *st;
    GPtrArray *keys;
    guint next;
    pthread_mutex_t lock;
    unsigned failures;
};

static int ws_s3_collect(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    g_ptr_array_add(opaque, g_strdup(key));
    return 0;
}

static void *ws_s3_delete_worker(void *opaque)
{
    struct ws_s3_delete *d = opaque;

    for (;;) {
        pthread_mutex_lock(&d->lock);
        guint i = d->next++;
        pthread_mutex_unlock(&d->lock);
        if (i >= d->keys->len)
            break;
        if (store_delete(d->st, g_ptr_array_index(d->keys, i)) < 0) {
            pthread_mutex_lock(&d->lock);
            d->failures++;
            pthread_mutex_unlock(&d->lock);
        }
    }
    return NULL;
}

/* Deletes every object under an S3 server's prefix, so that tests do not fill the radosgw. */
static void ws_s3_cleanup(const char *url)
{
    struct ws_s3_delete d = {.keys = g_ptr_array_new_with_free_func(g_free)};
    pthread_t threads[16];
    int r;

    struct store_options so;
    store_options_init(&so);
    so.max_connections = 16;
    r = store_open(url, &so, &d.st);
    if (r < 0) {
        fprintf(stderr, "ws: cannot open %s to clean it up: %s\n", url, store_last_error());
        g_ptr_array_unref(d.keys);
        return;
    }
    r = store_list(d.st, "", ws_s3_collect, d.keys);
    if (r < 0)
        fprintf(stderr, "ws: cannot list %s to clean it up: %s\n", url, store_last_error());
    pthread_mutex_init(&d.lock, NULL);
    for (int i = 0; i < 16; i++)
        pthread_create(&threads[i], NULL, ws_s3_delete_worker, &d);
    for (int i = 0; i < 16; i++)
        pthread_join(threads[i], NULL);
    if (d.failures)
        fprintf(stderr, "ws: %u of %u objects under %s could not be deleted\n", d.failures,
                d.keys->len, url);
    else
        ws_log("deleted the %u objects the test left under %s", d.keys->len, url);
    pthread_mutex_destroy(&d.lock);
    store_close(d.st);
    g_ptr_array_unref(d.keys);
}

static void ws_print_tail(const char *path, int lines)
{
    size_t len;
    char *data = ws_read_file(path, &len);
    const char *p;
    int n = 0;

    if (!data) {
        fprintf(stderr, "(no log at %s)\n", path);
        return;
    }
    p = data + len;
    while (p > data && n <= lines) {
        p--;
        if (*p == '\n' && p != data + len - 1)
            n++;
    }
    if (n > lines)
        p++;
    fprintf(stderr, "---- last %d lines of %s ----\n%s", lines, path, p);
    if (len && data[len - 1] != '\n')
        fputc('\n', stderr);
    fprintf(stderr, "---- end of %s ----\n", path);
    g_free(data);
}

static int ws_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (remove(path) < 0 && errno != ENOENT)
        fprintf(stderr, "ws: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void ws_rm_rf(const char *path)
{
    nftw(path, ws_rm_entry, 64, FTW_DEPTH | FTW_PHYS);
}

static void ws_cleanup(void)
{
    if (!ws.initialised || ws.in_cleanup || getpid() != ws.main_pid)
        return;
    ws.in_cleanup = true;
    fflush(stdout);

    for (int i = 0; i < ws.n_servers; i++) {
        struct ws_server *s = ws.servers[i];
        if (s->pid > 0) {
            /* After a failure, don't wait for a server that may be wedged. */
            kill(s->pid, ws.failed ? SIGKILL : SIGTERM);
            for (int t = 0; t < 3000; t++) {
                if (waitpid(s->pid, NULL, WNOHANG) != 0)
                    break;
                if (t == 2999) {
                    kill(s->pid, SIGKILL);
                    waitpid(s->pid, NULL, 0);
                }
                usleep(10000);
            }
            s->pid = 0;
        }
    }
    if (ws.failed) {
        for (int i = 0; i < ws.n_servers; i++) {
            struct ws_server *s = ws.servers[i];
            char *kept = g_strdup_printf("%s/%s-s%d-nbdkit.log", ws.logdir, ws.name, s->id);
            ws_print_tail(s->log, 40);
            gchar *data;
            gsize len;
            if (g_file_get_contents(s->log, &data, &len, NULL)) {
                if (g_file_set_contents(kept, data, (gssize)len, NULL))
                    fprintf(stderr, "ws: the whole log is kept in %s\n", kept);
                g_free(data);
            }
            g_free(kept);
        }
    }
    for (int i = 0; i < ws.n_servers; i++)
        if (ws.servers[i]->store_url && g_str_has_prefix(ws.servers[i]->store_url, "s3://"))
            ws_s3_cleanup(ws.servers[i]->store_url);
    if (getenv("WISP_TEST_KEEP") && strcmp(getenv("WISP_TEST_KEEP"), "1") == 0)
        fprintf(stderr, "ws: WISP_TEST_KEEP=1: kept %s\n", ws.tmp);
    else
        ws_rm_rf(ws.tmp);
}

/* SIGTERM (meson's timeout) or SIGINT: kill the servers and remove the directory without
 * allocating, then die.  S3 objects are left behind in that case. */
static void ws_on_signal(int sig)
{
    static const char msg[] = "ws: killed by a signal: stopping the servers, removing files\n";
    pid_t pid;

    if (getpid() != ws.main_pid)
        _exit(128 + sig);
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing to do */
    }
    for (int i = 0; i < ws.n_servers; i++)
        if (ws.servers[i]->pid > 0)
            kill(ws.servers[i]->pid, SIGKILL);
    for (int i = 0; i < ws.n_servers; i++)
        if (ws.servers[i]->pid > 0)
            waitpid(ws.servers[i]->pid, NULL, 0);
    pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", ws.signal_cmd, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
    _exit(128 + sig);
}

void ws_init(const char *name)
{
    const char *base = getenv("TMPDIR");
    const char *seed_env = getenv("WISP_TEST_SEED");
    uint64_t seed;
    struct sigaction sa = {.sa_handler = ws_on_signal};

    setvbuf(stdout, NULL, _IOLBF, 0);
    ws.t0 = ws_now();
    ws.name = g_strdup(name);
    ws.main_pid = getpid();
    ws.plugin = getenv("WISP_PLUGIN");
    ws.cli = getenv("WISP_CLI");
    if (!ws.plugin || !*ws.plugin || !ws.cli || !*ws.cli)
        ws_skip("WISP_PLUGIN and WISP_CLI are not set (run it with meson test)");
    if (access(ws.plugin, R_OK) < 0 || access(ws.cli, X_OK) < 0)
        ws_skip("the plugin %s or the CLI %s is not built", ws.plugin, ws.cli);
    ws_require_tools("nbdkit", NULL);

    if (!base || !*base)
        base = "/tmp";
    /* Short: unix socket paths are limited to 107 bytes. */
    ws.tmp = g_strdup_printf("%s/wft-%.12s-XXXXXX", base, name);
    if (!mkdtemp(ws.tmp))
        WS_FAIL("mkdtemp %s: %s", ws.tmp, strerror(errno));
    ws.logdir = getenv("WISP_TEST_LOGDIR") ? g_strdup(getenv("WISP_TEST_LOGDIR")) : g_strdup(base);
    snprintf(ws.signal_cmd, sizeof ws.signal_cmd,
             "for f in '%s'/s*/nbdkit.log; do [ -f \"$f\" ] || continue; "
             "n=${f%%/nbdkit.log}; n=${n##*/}; echo \"---- last 40 lines of $f ----\" >&2; "
             "tail -n 40 \"$f\" >&2; cp \"$f\" '%s/%s-'\"$n\"'-nbdkit.log' 2>/dev/null; done; "
             "rm -rf '%s'",
             ws.tmp, ws.logdir, name, ws.tmp);
    ws.initialised = true;
    /* OpenSSL registers its own exit handler on first use; ours must run before it, as it
     * talks to the store, so initialise OpenSSL first (handlers run in reverse order). */
    uint8_t digest[HASH_SHA256_LEN];
    hash_sha256("", 0, digest);
    atexit(ws_cleanup);
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (seed_env && *seed_env)
        seed = strtoull(seed_env, NULL, 0);
    else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
    }
    ws_rand_seed(seed);
    ws_log("%s: seed %" PRIu64 " (WISP_TEST_SEED=%" PRIu64 " repeats it), files in %s", name, seed,
           seed, ws.tmp);
}

/* ---- processes ------------------------------------------------------------------------------ */

/* Waits for pid up to timeout_s; returns the status as ws_run does, or -1 on timeout (pid is
 * killed and reaped then). */
static int ws_wait_pid(pid_t pid, double timeout_s)
{
    double end = ws_now() + timeout_s;
    useconds_t nap = 1000;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            WS_FAIL("waitpid %d: %s", (int)pid, strerror(errno));
        if (ws_now() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
        usleep(nap);
        if (nap < 20000)
            nap *= 2;
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

/* Forks argv with stdin /dev/null and stdout, stderr to the files given (NULL: /dev/null).
 * extra_env: NULL-terminated "K=V" set in the child; nofile: if not 0, the child's limit on
 * open files (soft and hard). */
static pid_t ws_spawn(const char *const *argv, const char *out_path, const char *err_path,
                      const char *const *extra_env, unsigned nofile)
{
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        WS_FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        int err = open(err_path ? err_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || out < 0 || err < 0)
            _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        for (int i = 0; extra_env && extra_env[i]; i++)
            putenv((char *)extra_env[i]);
        if (nofile > 0) {
            struct rlimit rl = {nofile, nofile};
            if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                _exit(125);
        }
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static int ws_run_env(char **out, char **err, double timeout_s, const char *const *argv,
                      const char *const *env)
{
    unsigned seq = ++ws.run_seq;
    char *out_path = g_strdup_printf("%s/run%u.out", ws.tmp, seq);
    char *err_path = g_strdup_printf("%s/run%u.err", ws.tmp, seq);
    pid_t pid = ws_spawn(argv, out_path, err_path, env, 0);
    int status = ws_wait_pid(pid, timeout_s);

    if (status < 0) {
        char *e = ws_read_file(err_path, NULL);
        WS_FAIL("%s did not finish within %.0f s; its stderr: %s", argv[0], timeout_s, e ? e : "");
    }
    if (out) {
        *out = ws_read_file(out_path, NULL);
        if (!*out)
            *out = g_strdup("");
    }
    if (err) {
        *err = ws_read_file(err_path, NULL);
        if (!*err)
            *err = g_strdup("");
    }
    unlink(out_path);
    unlink(err_path);
    g_free(out_path);
    g_free(err_path);
    return status;
}

int ws_run(char **out, char **err, double timeout_s, const char *const *argv)
{
    return ws_run_env(out, err, timeout_s, argv, NULL);
}

int ws_runl(char **out, char **err, double timeout_s, const char *arg0, ...)
{
    const char *argv[64];
    int n = 0;
    va_list ap;

    va_start(ap, arg0);
    for (const char *a = arg0; a; a = va_arg(ap, const char *)) {
        if (n == 62)
            WS_FAIL("ws_runl: too many arguments");
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    return ws_run(out, err, timeout_s, argv);
}

/* ---- servers ---------------------------------------------------------------------------- */

struct ws_server *ws_server_new(enum ws_store_kind store)
{
    struct ws_server *s = g_new0(struct ws_server, 1);

    if (ws.n_servers == WS_MAX_SERVERS)
        WS_FAIL("too many servers in one test");
    s->id = ws.n_servers;
    s->dir = g_strdup_printf("%s/s%d", ws.tmp, s->id);
    if (mkdir(s->dir, 0700) < 0)
        WS_FAIL("mkdir %s: %s", s->dir, strerror(errno));
    s->cache = g_strdup_printf("%s/cache", s->dir);
    s->meta = g_strdup_printf("%s/meta", s->dir);
    s->control = g_strdup_printf("%s/ctl", s->dir);
    s->sock = g_strdup_printf("%s/nbd.sock", s->dir);
    s->log = g_strdup_printf("%s/nbdkit.log", s->dir);
    if (store == WS_STORE_FILE) {
        s->store_dir = g_strdup_printf("%s/store", s->dir);
        if (mkdir(s->store_dir, 0700) < 0)
            WS_FAIL("mkdir %s: %s", s->store_dir, strerror(errno));
        s->store_url = g_strdup_printf("file://%s", s->store_dir);
    } else {
        if (!ws_have_s3())
            ws_skip("no radosgw: WISP_TEST_S3_ENDPOINT is not set (tests/s3/rgw-fixture)");
        /* A prefix of its own, so that tests never see each other's objects. */
        s->store_url = g_strdup_printf(
            "s3://%s/wisp-ft/%s-%d-%08" PRIx64 "-s%d?endpoint=%s%s%s",
            getenv("WISP_TEST_S3_BUCKET"), ws.name, (int)getpid(), ws_rand() & 0xffffffffu, s->id,
            getenv("WISP_TEST_S3_ENDPOINT"), getenv("WISP_TEST_S3_REGION") ? "&region=" : "",
            getenv("WISP_TEST_S3_REGION") ? getenv("WISP_TEST_S3_REGION") : "");
    }
    ws.servers[ws.n_servers++] = s;
    return s;
}

void ws_server_set(struct ws_server *s, const char *key, const char *value)
{
    size_t klen = strlen(key);

    for (int i = 0; i < s->n_params; i++) {
        if (strncmp(s->params[i], key, klen) == 0 && s->params[i][klen] == '=') {
            g_free(s->params[i]);
            s->params[i] = g_strdup_printf("%s=%s", key, value);
            return;
        }
    }
    if (s->n_params == (int)G_N_ELEMENTS(s->params))
        WS_FAIL("too many parameters");
    s->params[s->n_params++] = g_strdup_printf("%s=%s", key, value);
}

bool ws_sanitizer_build(void)
{
    const char *preload = getenv("WISP_NBDKIT_PRELOAD");
    return preload && *preload;
}

/* The environment nbdkit runs with: a sanitizer runtime when the plugin was built with one
 * (nbdkit itself is not instrumented). */
static void ws_nbdkit_env(const char *env[4], char **asan_opts)
{
    const char *preload = getenv("WISP_NBDKIT_PRELOAD");
    int n = 0;

    *asan_opts = NULL;
    if (preload && *preload) {
        static char ld[4096];
        snprintf(ld, sizeof ld, "LD_PRELOAD=%s", preload);
        env[n++] = ld;
        /* nbdkit's own allocations are not ours to judge. */
        *asan_opts = g_strdup_printf("ASAN_OPTIONS=%s%sdetect_leaks=0",
                                     getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
                                     getenv("ASAN_OPTIONS") ? ":" : "");
        env[n++] = *asan_opts;
    }
    env[n] = NULL;
}

static bool ws_socket_answers(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

void ws_server_start(struct ws_server *s)
{
    const char *argv[64];
    const char *env[4];
    char *asan_opts, *store = g_strdup_printf("store=%s", s->store_url);
    char *cache = g_strdup_printf("cache=%s", s->cache);
    char *meta = g_strdup_printf("meta=%s", s->meta);
    char *control = g_strdup_printf("control=%s", s->control);
    int n = 0;
    double t = ws_now();

    if (s->pid > 0)
        WS_FAIL("server %d is already running", s->id);
    /* Sanitizer build: with the ASan runtime preloaded, nbdkit can hang at exit after a
     * worker thread formatted an error (strerror: glibc's setlocale lock left unbalanced, see
     * tests/storagefault/meson.build); a lease being fenced or refused does that reliably.
     * Leases are off there and tested in the normal build (tests/lease). */
    if (ws_sanitizer_build())
        ws_server_set(s, "lease-ttl", "0");
    /* A crash leaves its sockets: remove them, or we would wait on stale ones. */
    unlink(s->sock);
    unlink(s->control);
    argv[n++] = "nbdkit";
    argv[n++] = "-f";
    argv[n++] = "-U";
    argv[n++] = s->sock;
    argv[n++] = ws.plugin;
    argv[n++] = store;
    argv[n++] = cache;
    argv[n++] = meta;
    argv[n++] = control;
    for (int i = 0; i < s->n_params; i++)
        argv[n++] = s->params[i];
    argv[n] = NULL;

    FILE *log = fopen(s->log, "a");
    if (log) {
        fprintf(log, "==== ws: start %d of server %d:", ++s->starts, s->id);
        for (int i = 0; argv[i]; i++)
            fprintf(log, " %s", argv[i]);
        fprintf(log, "\n");
        fclose(log);
    }
    ws_nbdkit_env(env, &asan_opts);
    s->pid = ws_spawn(argv, s->log, s->log, env, s->nofile);

    for (;;) {
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            ws_print_tail(s->log, 20);
            WS_FAIL("nbdkit exited at start-up (status %d); see the log above",
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
        if (access(s->sock, F_OK) == 0 && ws_socket_answers(s->control))
            break;
        if (ws_now() - t > 60)
            WS_FAIL("nbdkit did not open %s and %s within 60 s", s->sock, s->control);
        usleep(5000);
    }
    ws_log("server %d started (pid %d) in %.2f s", s->id, (int)s->pid, ws_now() - t);
    g_free(asan_opts);
    g_free(store);
    g_free(cache);
    g_free(meta);
    g_free(control);
}

void ws_server_stop(struct ws_server *s)
{
    double t = ws_now();
    int status;

    if (s->pid <= 0)
        WS_FAIL("server %d is not running", s->id);
    kill(s->pid, SIGTERM);
    status = ws_wait_pid(s->pid, 60);
    s->pid = 0;
    if (status < 0)
        WS_FAIL("server %d did not stop within 60 s of SIGTERM (killed)", s->id);
    if (status != 0)
        WS_FAIL("server %d exited with status %d after SIGTERM (expected 0)", s->id, status);
    ws_log("server %d stopped in %.2f s", s->id, ws_now() - t);
}

void ws_server_kill9(struct ws_server *s)
{
    if (s->pid <= 0)
        WS_FAIL("server %d is not running", s->id);
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    ws_log("server %d killed with SIGKILL", s->id);
}

void ws_server_share_store(struct ws_server *b, const struct ws_server *a)
{
    g_free(b->store_url);
    b->store_url = g_strdup(a->store_url);
    if (a->store_dir) {
        g_free(b->store_dir);
        b->store_dir = g_strdup(a->store_dir);
    }
}

void ws_server_wipe_cache(struct ws_server *s)
{
    if (s->pid > 0)
        WS_FAIL("wipe the cache of a running server?");
    ws_rm_rf(s->cache);
    if (access(s->cache, F_OK) == 0)
        WS_FAIL("could not remove %s", s->cache);
}

int ws_server_log_count(struct ws_server *s, const char *needle)
{
    char *data = ws_read_file(s->log, NULL);
    int n = 0;

    if (!data)
        return 0;
    for (const char *p = data; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    g_free(data);
    return n;
}

char *ws_uri(struct ws_server *s, const char *export_name)
{
    return g_strdup_printf("nbd+unix:///%s?socket=%s", export_name, s->sock);
}

int ws_nbdkit_tryv(char **err, double timeout_s, const char *const *params)
{
    const char *argv[64];
    const char *env[4];
    char *asan_opts, *sock = g_strdup_printf("%s/try.sock", ws.tmp);
    char *err_path = g_strdup_printf("%s/try.err", ws.tmp);
    int n = 0, status;

    argv[n++] = "nbdkit";
    argv[n++] = "-f";
    argv[n++] = "-U";
    argv[n++] = sock;
    argv[n++] = ws.plugin;
    for (int i = 0; params[i]; i++) {
        if (n == 63)
            WS_FAIL("ws_nbdkit_tryv: too many parameters");
        argv[n++] = params[i];
    }
    argv[n] = NULL;
    unlink(err_path);
    ws_nbdkit_env(env, &asan_opts);
    pid_t pid = ws_spawn(argv, err_path, err_path, env, 0);
    status = ws_wait_pid(pid, timeout_s);
    *err = ws_read_file(err_path, NULL);
    if (!*err)
        *err = g_strdup("");
    unlink(sock);
    g_free(asan_opts);
    g_free(sock);
    g_free(err_path);
    return status;
}

int ws_nbdkit_try(char **err, double timeout_s, const char *param, ...)
{
    const char *params[64];
    int n = 0;
    va_list ap;

    va_start(ap, param);
    for (const char *p = param; p; p = va_arg(ap, const char *)) {
        if (n == 63)
            WS_FAIL("ws_nbdkit_try: too many parameters");
        params[n++] = p;
    }
    va_end(ap);
    params[n] = NULL;
    return ws_nbdkit_tryv(err, timeout_s, params);
}

int ws_nbdkit_run(char **out, char **err, double timeout_s, const char *arg, ...)
{
    const char *argv[64];
    const char *env[4];
    char *asan_opts;
    int n = 0, status;
    va_list ap;

    argv[n++] = "nbdkit";
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        if (n == 63)
            WS_FAIL("ws_nbdkit_run: too many arguments");
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    ws_nbdkit_env(env, &asan_opts);
    status = ws_run_env(out, err, timeout_s, argv, env);
    g_free(asan_opts);
    return status;
}

struct nbd_handle *ws_connect(struct ws_server *s, const char *export_name)
{
    struct nbd_handle *h = nbd_create();

    if (!h)
        WS_FAIL("nbd_create: %s", nbd_get_error());
    WS_NBD(nbd_set_export_name(h, export_name));
    WS_NBD(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION));
    if (nbd_connect_unix(h, s->sock) == -1)
        WS_FAIL("connect to export '%s' on %s: %s", export_name, s->sock, nbd_get_error());
    return h;
}

char *ws_connect_must_fail(struct ws_server *s, const char *export_name)
{
    struct nbd_handle *h = nbd_create();
    char *msg;

    if (!h)
        WS_FAIL("nbd_create: %s", nbd_get_error());
    WS_NBD(nbd_set_export_name(h, export_name));
    if (nbd_connect_unix(h, s->sock) == 0) {
        nbd_close(h);
        WS_FAIL("export '%.60s' (%zu bytes) was opened; it must be refused", export_name,
                strlen(export_name));
    }
    msg = g_strdup(nbd_get_error() ? nbd_get_error() : "");
    nbd_close(h);
    return msg;
}

void ws_disconnect(struct nbd_handle *h)
{
    if (!h)
        return;
    if (nbd_shutdown(h, 0) == -1)
        WS_FAIL("nbd_shutdown: %s", nbd_get_error());
    nbd_close(h);
}
