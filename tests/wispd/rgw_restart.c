/* rgw_restart.c: a real radosgw restart during a cold sleep and during a wake from cold
 * (issue 7's fault test "a radosgw restart during cold sleep").
 *
 * The radosgw process itself stops and starts again (tests/s3/rgw-fixture stop-rgw and
 * start-rgw; the mon and the OSD, so the objects, stay), not a proxy in front of it.  The
 * fixture that scripts/check starts is shared by the S3 tests running beside this one, so this
 * test starts its own, private fixture in its directory (memstore: its daemons peak at about
 * 0.75 GiB here) and stops it on every exit.  It skips (77) when radosgw is not available: no
 * WISP_TEST_S3_ENDPOINT (as every S3 test: the runner has no radosgw for us) or no radosgw
 * program.
 *
 *   sleep      wispd on the private radosgw; sprite r with a counter process, a file written
 *              and synced, and 32 MiB of random data in /dev/shm (guest RAM only, and enough
 *              new memory that storing it takes seconds).  A cold sleep begins; once its first
 *              chunk PUT shows in radosgw's log (it logs every request), radosgw is stopped,
 *              kept down 3 s, and started again.  The sleep must complete
 *              (asleep/cold, 200): its store step failed while radosgw was away, and a later
 *              attempt stored it (the log says so), within cold-store-wait.  wispd answers
 *              GET /v1/sprites throughout; r's QEMU is gone.  An exec wakes r: the same counter
 *              process, the file and the RAM data unchanged.
 *   wake       r sleeps again, its local copy is removed (the wake must read the store), and
 *              radosgw is stopped.  An exec fails at once with a 500 naming the store request,
 *              r stays asleep/cold with no QEMU, wispd answers.  radosgw starts; an exec begins
 *              to wake r, and radosgw is stopped once the wake's first chunk GET shows in its
 *              log: the exec answers 500 naming the GET, r stays asleep/cold with no QEMU, and
 *              what the wake fetched has no manifest (it is never taken for a local copy).
 *              radosgw starts again 2 s later; an exec wakes r from the store with its
 *              processes, file and RAM data.
 *   end        SIGTERM: wispd cold-sleeps r into radosgw and exits 0, and no process of its
 *              state directory is left. */
#include "sleep_helpers.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define IDLE_OFF "idle-warm = 0\nidle-cold = 0\nmemory-low-mib = 0\nmemory-psi = 0\n"

/* ---- the private radosgw ------------------------------------------------------------------ */

static const char *rr_script; /* tests/s3/rgw-fixture */
static char rr_dir[700];      /* its directory while it may run, else "" */
static pid_t rr_main_pid;     /* the test, not a forked child */

/* rgw-fixture VERB DIR; its output goes to the test directory's commands.log. */
static int rr_fixture(const char *verb)
{
    const char *argv[] = {rr_script, verb, rr_dir, NULL};
    return fx_run(argv);
}

/* Registered after fx_setup's and wfx_init's handlers, so it runs before them: the daemons
 * stop before the directory they run in is removed. */
static void rr_fixture_stop_at_exit(void)
{
    if (rr_dir[0] && getpid() == rr_main_pid) {
        const char *argv[] = {rr_script, "stop", rr_dir, NULL};
        /* Not fx_run: it may be a failure's exit, so no FX_CHECK here. */
        pid_t pid = fork();
        if (pid == 0) {
            execvp(argv[0], (char *const *)argv);
            _exit(127);
        }
        if (pid > 0)
            waitpid(pid, NULL, 0);
        rr_dir[0] = '\0';
    }
}

/* SIGKILL to the daemons named by the fixture's pid files; async-signal-safe.  Memstore keeps
 * nothing worth a clean stop. */
static void rr_kill_daemons(void)
{
    static const char *const names[] = {"/rgw.pid", "/osd.pid", "/mon.pid"};
    char path[sizeof rr_dir + 16], buf[32];

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t dl = strlen(rr_dir), nl = strlen(names[i]);
        memcpy(path, rr_dir, dl);
        memcpy(path + dl, names[i], nl + 1);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf);
        close(fd);
        pid_t pid = 0;
        for (ssize_t j = 0; j < n && buf[j] >= '0' && buf[j] <= '9'; j++)
            pid = pid * 10 + (buf[j] - '0');
        if (pid > 1)
            kill(pid, SIGKILL);
    }
}

/* meson's timeout: SIGTERM to the process group, SIGKILL 0.5 s later, too soon for
 * rgw-fixture stop.  The daemons (not our children: they would outlive the test) are killed
 * at once; then exit runs the other handlers (wfx_kill_leftovers kills wispd's processes). */
static void rr_on_signal(int sig)
{
    if (rr_dir[0] && getpid() == rr_main_pid) {
        rr_kill_daemons();
        rr_dir[0] = '\0';
    }
    exit(128 + sig);
}

/* Starts the private fixture and points this process's S3 variables (which wispd inherits)
 * at it. */
static void rr_fixture_start(void)
{
    snprintf(rr_dir, sizeof rr_dir, "%s/rgw", fx_tmpdir());
    rr_main_pid = getpid();
    atexit(rr_fixture_stop_at_exit);
    signal(SIGTERM, rr_on_signal);
    signal(SIGINT, rr_on_signal);
    double t0 = fx_now();
    g_autofree char *log = g_strdup_printf("%s/commands.log", fx_tmpdir());
    if (rr_fixture("start") != 0) {
        g_autofree char *text = NULL;
        g_file_get_contents(log, &text, NULL, NULL);
        FX_CHECK(false, "rgw-fixture start %s failed:\n%s", rr_dir, text ? text : "");
    }
    fx_log("FIGURE rgw_fixture_start_s=%.1f", fx_now() - t0);
    g_autofree char *env_path = g_strdup_printf("%s/env", rr_dir);
    g_autofree char *env = NULL;
    FX_CHECK(g_file_get_contents(env_path, &env, NULL, NULL), "read %s", env_path);
    g_auto(GStrv) lines = g_strsplit(env, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (!g_str_has_prefix(*l, "export "))
            continue;
        char *eq = strchr(*l, '=');
        FX_CHECK(eq, "%s: '%s'", env_path, *l);
        *eq = '\0';
        /* rgw-fixture quotes with %q; none of its values needs quoting (ports, hex, paths). */
        FX_CHECK(!strchr(eq + 1, '\\') && !strchr(eq + 1, '\''), "%s: quoted value '%s'", env_path,
                 eq + 1);
        FX_CHECK(setenv(*l + strlen("export "), eq + 1, 1) == 0, "setenv");
    }
    FX_CHECK(fx_s3_available(), "%s does not name an S3 endpoint", env_path);
}

static void rr_rgw_stop(void)
{
    double t0 = fx_now();
    FX_CHECK(rr_fixture("stop-rgw") == 0, "rgw-fixture stop-rgw failed (see commands.log)");
    fx_log("radosgw stopped (%.1f s)", fx_now() - t0);
}

static void rr_rgw_start(void)
{
    double t0 = fx_now();
    FX_CHECK(rr_fixture("start-rgw") == 0, "rgw-fixture start-rgw failed (see commands.log)");
    fx_log("radosgw answers again (%.1f s)", fx_now() - t0);
}

/* ---- wispd ---------------------------------------------------------------------------------- */

/* wispd still serves: GET /v1/sprites answers 200 and lists r. */
static void rr_healthy(void)
{
    double t0 = fx_now();
    JsonObject *o = wfx_expect(200, "GET", "/v1/sprites", WFX_TOKEN_A, NULL);
    JsonArray *a = json_object_get_array_member(o, "sprites");
    FX_CHECK(a && json_array_get_length(a) == 1, "GET /v1/sprites does not list r alone");
    json_object_unref(o);
    fx_log("GET /v1/sprites answered in %.0f ms", (fx_now() - t0) * 1000);
}

/* QEMUs of this wispd: the pool's (pool-size 1) and r's when it runs. */
static guint rr_qemus(const char *state)
{
    GArray *pids = wfx_processes("qemu-system", state);
    guint n = pids->len;
    g_array_unref(pids);
    return n;
}

/* r asleep (cold), and no QEMU of it: none names its disk (a woken one has it on its command
 * line), and there is at most the pool's member. */
static void rr_expect_cold(const char *state)
{
    g_autofree char *s = sh_state("r", WFX_TOKEN_A);
    FX_CHECK(strcmp(s, "asleep/cold") == 0, "r is %s, not asleep/cold", s);
    FX_CHECK(!wfx_find_process("qemu-system", "s_alice_r"), "a QEMU of r runs while r is asleep");
    guint n = rr_qemus(state);
    FX_CHECK(n <= 1, "%u QEMUs with r asleep (the pool has one member)", n);
}

/* radosgw's log (it logs every request) from offset on has a request "METHOD PREFIX/what..."
 * of this test. */
static bool rr_rgw_saw_request(goffset offset, const char *method, const char *what)
{
    g_autofree char *path = g_strdup_printf("%s/log/client.rgw.a.log", rr_dir);
    g_autofree char *needle = g_strdup_printf("\"%s /wisp-test/wispd-rgw-restart/%s", method, what);
    char line[4096];
    bool seen = false;
    FILE *f = fopen(path, "r");
    FX_CHECK(f, "open %s", path);
    FX_CHECK(fseeko(f, offset, SEEK_SET) == 0, "seek %s", path);
    while (!seen && fgets(line, sizeof line, f))
        seen = strstr(line, needle) != NULL;
    fclose(f);
    return seen;
}

static goffset rr_rgw_log_size(void)
{
    g_autofree char *path = g_strdup_printf("%s/log/client.rgw.a.log", rr_dir);
    struct stat st;
    FX_CHECK(stat(path, &st) == 0, "stat %s", path);
    return st.st_size;
}

/* The first line of wispd's log that has text (g_free it), or NULL. */
static char *rr_log_line(const char *log, const char *text)
{
    g_autofree char *s = NULL;
    if (!g_file_get_contents(log, &s, NULL, NULL))
        return NULL;
    const char *hit = strstr(s, text);
    if (!hit)
        return NULL;
    const char *end = strchr(hit, '\n');
    return g_strndup(hit, end ? (gsize)(end - hit) : strlen(hit));
}

/* r runs with everything it had: the counter process, the file, the data in RAM. */
static void rr_expect_intact(long pid, const char *md5_file, const char *md5_shm)
{
    sh_counter_alive("r", WFX_TOKEN_A, pid);
    g_autofree char *f = sh_file_md5("r", WFX_TOKEN_A, "r.bin");
    FX_CHECK(strcmp(f, md5_file) == 0, "/root/r.bin changed");
    g_autofree char *m = wfx_sh("r", WFX_TOKEN_A, "md5sum /dev/shm/ballast | cut -d' ' -f1", 0);
    FX_CHECK(strcmp(m, md5_shm) == 0, "/dev/shm/ballast (RAM only) changed");
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;
    char store[1200];

    if (!fx_s3_available())
        fx_skip("no radosgw: WISP_TEST_S3_ENDPOINT is not set (tests/s3/rgw-fixture)");
    rr_script = fx_need_env("WISP_TEST_RGW_FIXTURE");
    g_autofree char *radosgw = g_find_program_in_path("radosgw");
    if (!radosgw)
        fx_skip("no radosgw program for a private fixture");
    fx_setup("wispd-rgw-restart");
    wfx_init(&img);
    rr_fixture_start();
    fx_s3_url(store, sizeof store, "wispd-rgw-restart", NULL);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    const char *args[] = {"--store", store, NULL};
    wfx_start(&w, &img, state, IDLE_OFF "cold-store-wait = 60\n", args);

    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"r\"}");
    sh_counter_start("r", WFX_TOKEN_A);
    long pid = sh_counter_alive("r", WFX_TOKEN_A, 0);
    g_autofree char *md5_file = sh_file_write("r", WFX_TOKEN_A, "r.bin");
    g_autofree char *md5_shm = wfx_sh("r", WFX_TOKEN_A,
                                      "head -c 33554432 /dev/urandom > /dev/shm/ballast && md5sum "
                                      "/dev/shm/ballast | cut -d' ' -f1",
                                      0);

    /* ---- sleep: radosgw restarts while the sleep uploads ---- */
    g_autofree char *sleep_log = g_strdup_printf("%s/curl-sleep.log", fx_tmpdir());
    goffset rgw_log_at = rr_rgw_log_size();
    double t0 = fx_now();
    pid_t curl =
        wfx_post_async(WFX_TOKEN_A, "/v1/sprites/r/sleep", "{\"mode\":\"cold\"}", sleep_log);
    /* The sleep's first chunk PUT: the RAM is being stored (about 47 MiB new, 2-5 s here). */
    while (!wfx_log_has(w.log, "alice/r: cold sleep (asked)") ||
           !rr_rgw_saw_request(rgw_log_at, "PUT", "vm/chunks/")) {
        FX_CHECK(fx_now() - t0 < 60, "the cold sleep never began to upload (see %s)", w.log);
        fx_sleep(0.05);
    }
    fx_log("the sleep uploads %.1f s after it began: stopping radosgw", fx_now() - t0);
    rr_rgw_stop();
    fx_log("radosgw down %.1f s into the sleep", fx_now() - t0);
    for (int i = 0; i < 3; i++) {
        rr_healthy();
        fx_sleep(1);
    }
    rr_rgw_start();
    g_autofree char *answer = NULL;
    long status = wfx_post_wait(curl, sleep_log, &answer);
    fx_log("FIGURE wispd_cold_sleep_over_rgw_restart_s=%.1f (%ld)", fx_now() - t0, status);
    FX_CHECK(status == 200, "the sleep over a radosgw restart answered %ld: %s", status, answer);
    g_autofree char *first_failure = rr_log_line(w.log, "QEMU is gone and the store step failed");
    FX_CHECK(first_failure && wfx_log_has(w.log, "stored on a later attempt"),
             "the restart did not meet the sleep's store step (see %s)", w.log);
    fx_log("wispd: %s", first_failure);
    rr_expect_cold(state);
    rr_healthy();
    t0 = fx_now();
    rr_expect_intact(pid, md5_file, md5_shm); /* the exec wakes it */
    fx_log("woken by exec and checked in %.1f s", fx_now() - t0);

    /* ---- wake: radosgw away when the wake needs it, then away in the middle of it ---- */
    wfx_expect_free(200, "POST", "/v1/sprites/r/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    g_autofree char *local = g_strdup_printf("%s/sleep/s_alice_r", state);
    fx_rm_rf(local);
    rr_rgw_stop();
    const char *exec_true = "{\"argv\":[\"true\"]}";
    t0 = fx_now();
    JsonObject *failed = wfx_expect(500, "POST", "/v1/sprites/r/exec", WFX_TOKEN_A, exec_true);
    const char *why = json_object_get_string_member_with_default(failed, "error", "");
    fx_log("an exec with radosgw down failed after %.1f s: %s", fx_now() - t0, why);
    FX_CHECK(strstr(why, "wake") && strstr(why, "GET "),
             "the error does not say the wake's store request failed: %s", why);
    json_object_unref(failed);
    rr_expect_cold(state);
    rr_healthy();

    rr_rgw_start();

    /* radosgw restarts while the wake fetches the RAM from it (about 100 MiB, 1.5-5 s here). */
    g_autofree char *wake_log = g_strdup_printf("%s/curl-wake.log", fx_tmpdir());
    rgw_log_at = rr_rgw_log_size();
    t0 = fx_now();
    curl = wfx_post_async(WFX_TOKEN_A, "/v1/sprites/r/exec", exec_true, wake_log);
    while (!rr_rgw_saw_request(rgw_log_at, "GET", "vm/chunks/")) {
        FX_CHECK(fx_now() - t0 < 60, "the wake never began to fetch (see %s)", w.log);
        fx_sleep(0.05);
    }
    fx_log("the wake fetches %.1f s after it began: stopping radosgw", fx_now() - t0);
    rr_rgw_stop();
    g_autofree char *cut = NULL;
    status = wfx_post_wait(curl, wake_log, &cut);
    fx_log("an exec whose wake lost radosgw answered %ld after %.1f s", status, fx_now() - t0);
    FX_CHECK(status == 500 && strstr(cut, "wake") && strstr(cut, "GET "),
             "the exec whose wake lost radosgw answered %ld: %s", status, cut);
    rr_expect_cold(state);
    /* What the wake fetched is no local copy: without its manifest it is never woken from. */
    g_autofree char *local_manifest = g_strdup_printf("%s/manifest.json", local);
    FX_CHECK(!sh_exists(local_manifest), "a cut wake left %s", local_manifest);
    rr_healthy();
    fx_sleep(2);
    rr_rgw_start();

    /* radosgw is back: an exec wakes r, from the store, with everything it had. */
    rr_expect_intact(pid, md5_file, md5_shm);
    /* Two wakes in all: the first from the local copy, this one from the store. */
    guint wakes = wfx_log_count(w.log, "alice/r: awake, cold: ");
    guint from_store = wfx_log_count(w.log, "alice/r: awake, cold: %*s from the store (");
    FX_CHECK(wakes == 2 && from_store == 1, "%u wakes, %u from the store (see %s)", wakes,
             from_store, w.log);
    rr_healthy();

    /* ---- end: SIGTERM sleeps r into radosgw; nothing of wispd is left ---- */
    wfx_stop(&w, 240);
    FX_CHECK(!wfx_find_process("", state), "a process of wispd's state directory still runs");
    FX_CHECK(rr_fixture("stop") == 0, "rgw-fixture stop failed");
    rr_dir[0] = '\0';
    return 0;
}
