/* demo_rgw.c: scripts/demo's steps as a test, through the wisp CLI, on a wispd whose store is
 * the radosgw of tests/s3/rgw-fixture (issue 7, the Tests list's first bullet).
 *
 *   start      wispd with --store s3://BUCKET/PREFIX?endpoint=RADOSGW (keys in the environment)
 *   demo       wisp create; wisp exec `uname -a; df -h /`; a file written; wisp checkpoint
 *              create; the file deleted; wisp restore: the file is back.  The store holds
 *              objects under the test's prefix (the data went to radosgw)
 *   warm       wisp sleep: "asleep"; an exec wakes it (same boot, the file there)
 *   cold       wisp sleep --cold: "asleep", mode "cold"; wisp wake; an exec shows the same boot
 *              (memory and processes came back, not a reboot) and the file
 *   stop       SIGTERM: wispd exits 0
 *
 * Skips (77) without WISP_TEST_S3_ENDPOINT.  The cold part runs unless WISP_TEST_DEMO_COLD=0:
 * on a wispd without cold sleep it fails, which is the point (see the COLD block). */
#include "wispd_fixture.h"

#include "store.h"

#include <curl/curl.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SPRITE "demo"

static int count_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    (void)key, (void)size, (void)mtime;
    (*(unsigned *)opaque)++;
    return 0;
}

/* Objects under the store URL's prefix. */
static unsigned store_objects(const char *url)
{
    struct store *st;
    unsigned n = 0;

    FX_CHECK(store_open(url, NULL, &st) == 0, "open %s: %s", url, store_last_error());
    FX_CHECK(store_list(st, "", count_one, &n) == 0, "list %s: %s", url, store_last_error());
    store_close(st);
    return n;
}

/* `wisp exec demo -- sh -c SCRIPT`, which must exit 0; its stdout (g_free it). */
static char *demo_sh(const char *script)
{
    return wfx_cli("exec", SPRITE, WFX_TOKEN_A, 0, "--", "sh", "-c", script, NULL);
}

/* The guest's boot id: the same after a wake means the same kernel, memory kept. */
static char *boot_id(void)
{
    return demo_sh("cat /proc/sys/kernel/random/boot_id");
}

static void expect_state(const char *want, const char *want_mode)
{
    JsonObject *o = wfx_expect(200, "GET", "/v1/sprites/" SPRITE, WFX_TOKEN_A, NULL);
    const char *state = json_object_get_string_member_with_default(o, "state", "");
    const char *mode = json_object_get_string_member_with_default(o, "mode", "");
    FX_CHECK(strcmp(state, want) == 0, "sprite state '%s', expected '%s'", state, want);
    FX_CHECK(!want_mode || strcmp(mode, want_mode) == 0, "sprite mode '%s', expected '%s'", mode,
             want_mode);
    json_object_unref(o);
}

/* The wispd of this test, for stop_on_exit. */
static struct wispd_fx *running;
static pid_t main_pid;

/* On a failed check: SIGTERM first, so that wispd stops its pool's QEMUs (fx_cleanup, which runs
 * after this handler, would SIGKILL wispd and leave them behind). */
static void stop_on_exit(void)
{
    if (getpid() == main_pid && running && running->pid > 0) {
        fx_reap(running->pid, SIGTERM, 120);
        running->pid = 0;
    }
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w = {0};
    char url[1024];

    /* libcurl's OpenSSL registers an exit handler when it starts; handlers run in reverse, so
     * starting it before fx_setup (whose handler empties the store over S3) keeps it alive for
     * that cleanup. */
    FX_CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == 0, "curl_global_init");
    fx_setup("wispd_demo_rgw");
    main_pid = getpid();
    running = &w;
    atexit(stop_on_exit);
    if (!fx_s3_available())
        fx_skip("WISP_TEST_S3_ENDPOINT is not set (start tests/s3/rgw-fixture)");
    wfx_init(&img);
    g_autofree char *prefix = g_strdup_printf("wispd-demo-%d-%ld", (int)getpid(), (long)time(NULL));
    fx_s3_url(url, sizeof url, prefix, NULL);
    fx_store_cleanup_register(url);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    const char *store_args[] = {"--store", url, NULL};

    /* ---- start ---- */
    wfx_start(&w, &img, state, NULL, store_args);
    fx_log("wispd up in %.2f s on %s", w.started_s, url);

    /* ---- the demo's steps ---- */
    double t0 = fx_now();
    g_free(wfx_cli("create", SPRITE, WFX_TOKEN_A, 0, NULL));
    fx_log("create: %.0f ms", (fx_now() - t0) * 1000);
    g_autofree char *shown = demo_sh("uname -a; df -h /");
    FX_CHECK(g_str_has_prefix(shown, "Linux " SPRITE " "), "uname -a: %s", shown);
    FX_CHECK(strstr(shown, "/dev/vda") && strstr(shown, "Filesystem"), "df -h /: %s", shown);
    g_free(demo_sh("echo kept-by-checkpoint > /root/note && sync"));
    g_autofree char *ck = wfx_cli("checkpoint", "create", WFX_TOKEN_A, 0, SPRITE, NULL);
    g_strstrip(ck);
    FX_CHECK(g_str_has_prefix(ck, "ck"), "wisp checkpoint create printed '%s'", ck);
    g_free(demo_sh("rm /root/note && sync"));
    g_free(wfx_cli("exec", SPRITE, WFX_TOKEN_A, 1, "--", "test", "-e", "/root/note", NULL));
    g_free(wfx_cli("restore", SPRITE, WFX_TOKEN_A, 0, ck, NULL));
    g_autofree char *back = demo_sh("cat /root/note");
    FX_CHECK(strcmp(back, "kept-by-checkpoint\n") == 0, "after the restore: '%s'", back);
    /* The disk's chunks and metadata replica are in radosgw, not only on this host. */
    unsigned objects = store_objects(url);
    fx_log("%u objects under %s", objects, prefix);
    FX_CHECK(objects > 0, "nothing in the store under %s", prefix);

    /* ---- warm sleep, and an exec wakes it ---- */
    g_autofree char *boot = boot_id();
    g_free(wfx_cli("sleep", SPRITE, WFX_TOKEN_A, 0, NULL));
    expect_state("asleep", NULL);
    g_autofree char *boot_warm = boot_id(); /* wakes it */
    FX_CHECK(strcmp(boot, boot_warm) == 0, "a warm wake rebooted the guest: %s then %s", boot,
             boot_warm);
    expect_state("running", NULL);
    g_autofree char *after_warm = demo_sh("cat /root/note");
    FX_CHECK(strcmp(after_warm, "kept-by-checkpoint\n") == 0, "after a warm wake: '%s'",
             after_warm);

    /* COLD: enable at merge.  Cold sleep (POST .../sleep {"mode":"cold"}) comes from another
     * branch; this block is on unless WISP_TEST_DEMO_COLD=0, so that a wispd without it fails
     * here loudly rather than passing without the demo's step 6. */
    const char *cold_switch = getenv("WISP_TEST_DEMO_COLD");
    if (!cold_switch || strcmp(cold_switch, "0") != 0) {
        t0 = fx_now();
        g_free(wfx_cli("sleep", SPRITE, WFX_TOKEN_A, 0, "--cold", NULL));
        fx_log("cold sleep: %.0f ms", (fx_now() - t0) * 1000);
        expect_state("asleep", "cold");
        t0 = fx_now();
        g_free(wfx_cli("wake", SPRITE, WFX_TOKEN_A, 0, NULL));
        fx_log("cold wake: %.0f ms", (fx_now() - t0) * 1000);
        expect_state("running", NULL);
        g_autofree char *boot_cold = boot_id();
        FX_CHECK(strcmp(boot, boot_cold) == 0,
                 "a cold wake rebooted the guest (memory not restored): %s then %s", boot,
                 boot_cold);
        g_autofree char *after_cold = demo_sh("cat /root/note");
        FX_CHECK(strcmp(after_cold, "kept-by-checkpoint\n") == 0, "after a cold wake: '%s'",
                 after_cold);
    } else {
        fx_log("cold sleep and wake NOT tested (WISP_TEST_DEMO_COLD=0)");
    }

    /* ---- stop ---- */
    wfx_stop(&w, 300);
    fx_log("ok");
    return 0;
}
