/* cold_rgw.c: cold sleep through wispd into a real radosgw, which restarts during the sleep
 * (issue 7's fault test "a radosgw restart during cold sleep").  Skips (77) without radosgw
 * (tests/s3/rgw-fixture).
 *
 * wispd's store (its nbdkit's and the sleeps') is radosgw behind wisp-faultproxy, which this
 * test stops and starts again on the same port: to wispd, radosgw goes away for 3 s in the
 * middle of a cold sleep and comes back.  The sleep must either complete (asleep/cold) or fail
 * cleanly with the sprite still running; either way an exec then finds the same counter
 * process still counting and the file's md5 unchanged.  Then radosgw stays away for longer
 * than the sleep waits for it (cold-store-wait = 4 s): the sleep answers 500 and the sprite
 * runs again from its local copy, the counter and the file as they were.  Last, the sprite
 * sleeps again undisturbed, its local copy is deleted, and it wakes from radosgw (every
 * chunk's hash checked on the way). */
#include "sleep_helpers.h"
#include "store.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;
    struct fx_proxy proxy;
    char url[1200], proxy_url[64], prefix[128];

    if (!fx_s3_available())
        fx_skip("WISP_TEST_S3_ENDPOINT is not set (start tests/s3/rgw-fixture)");
    snprintf(prefix, sizeof prefix, "wispd-cold-%d-%lld", (int)getpid(),
             (long long)g_get_real_time());
    char direct[1200];
    fx_s3_url(direct, sizeof direct, prefix, NULL);
    /* Opened before fx_setup registers its exit cleanup, so that the cleanup (which deletes the
     * prefix) runs before OpenSSL's own exit handler tears the library down (as vm/sleep.c). */
    struct store *st = NULL;
    if (store_open(direct, NULL, &st) != 0) {
        fprintf(stderr, "open %s: %s\n", direct, store_last_error());
        return 1;
    }
    fx_setup("wispd-cold-rgw");
    fx_store_cleanup_register(direct);
    wfx_init(&img);
    fx_proxy_init(&proxy, fx_tmpdir());
    fx_proxy_start(&proxy, 0, 1, NULL);
    snprintf(proxy_url, sizeof proxy_url, "http://127.0.0.1:%u", proxy.port);
    fx_s3_url(url, sizeof url, prefix, proxy_url);

    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    const char *args[] = {"--store", url, NULL};
    wfx_start(&w, &img, state,
              "idle-warm = 0\nidle-cold = 0\nmemory-low-mib = 0\nmemory-psi = 0\n"
              "cold-store-wait = 4\n",
              args);

    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"r\"}");
    sh_counter_start("r", WFX_TOKEN_A);
    long pid = sh_counter_alive("r", WFX_TOKEN_A, 0);
    g_autofree char *md5 = sh_file_write("r", WFX_TOKEN_A, "r.bin");

    /* The sleep, with radosgw away for 3 s in its middle. */
    g_autofree char *curl_log = g_strdup_printf("%s/curl-sleep.log", fx_tmpdir());
    double t0 = fx_now();
    pid_t curl_pid =
        wfx_post_async(WFX_TOKEN_A, "/v1/sprites/r/sleep", "{\"mode\":\"cold\"}", curl_log);
    while (!wfx_log_has(w.log, "alice/r: cold sleep (asked)")) {
        FX_CHECK(fx_now() - t0 < 60, "the cold sleep never began (see %s)", w.log);
        fx_sleep(0.05);
    }
    fx_sleep(0.5);
    fx_proxy_stop(&proxy);
    fx_log("radosgw away (proxy stopped) %.1f s into the sleep", fx_now() - t0);
    fx_sleep(3);
    fx_proxy_start(&proxy, proxy.port, 1, NULL);
    fx_log("radosgw back");
    g_autofree char *answer = NULL;
    long status = wfx_post_wait(curl_pid, curl_log, &answer);
    fx_log("the sleep answered after %.1f s: %s", fx_now() - t0, answer);
    g_autofree char *s1 = sh_state("r", WFX_TOKEN_A);
    if (status == 200)
        FX_CHECK(strcmp(s1, "asleep/cold") == 0, "the sleep answered 200 but r is %s", s1);
    else
        FX_CHECK(status == 500 && strcmp(s1, "running/") == 0,
                 "a failed sleep left r %s (running expected): %s", s1, answer);
    sh_counter_alive("r", WFX_TOKEN_A, pid);
    g_autofree char *md5_1 = sh_file_md5("r", WFX_TOKEN_A, "r.bin");
    FX_CHECK(strcmp(md5, md5_1) == 0, "r.bin changed over the sleep");

    /* radosgw away for longer than the sleep waits (cold-store-wait = 4 s): the sleep fails,
     * and the sprite runs again from its local copy, its processes and files as they were. */
    fx_proxy_stop(&proxy);
    t0 = fx_now();
    JsonObject *failed =
        wfx_expect(500, "POST", "/v1/sprites/r/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    fx_log("with radosgw away the sleep failed after %.1f s", fx_now() - t0);
    json_object_unref(failed);
    g_autofree char *s2 = sh_state("r", WFX_TOKEN_A);
    FX_CHECK(strcmp(s2, "running/") == 0, "a sleep that failed left r %s", s2);
    FX_CHECK(wfx_log_has(w.log, "resumed from its local copy"), "r was not resumed (see %s)",
             w.log);
    sh_counter_alive("r", WFX_TOKEN_A, pid);
    g_autofree char *md5_r = sh_file_md5("r", WFX_TOKEN_A, "r.bin");
    FX_CHECK(strcmp(md5, md5_r) == 0, "r.bin changed over the failed sleep");
    fx_proxy_start(&proxy, proxy.port, 1, NULL);

    /* Again, undisturbed, and woken from radosgw alone. */
    wfx_expect_free(200, "POST", "/v1/sprites/r/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    g_autofree char *local = g_strdup_printf("%s/sleep/s_alice_r", state);
    fx_rm_rf(local);
    t0 = fx_now();
    wfx_expect_free(200, "POST", "/v1/sprites/r/wake", WFX_TOKEN_A, NULL);
    fx_log("FIGURE wispd_cold_wake_rgw_ms=%.0f", (fx_now() - t0) * 1000);
    FX_CHECK(wfx_log_has(w.log, "from the store"), "the wake did not come from the store");
    sh_counter_alive("r", WFX_TOKEN_A, pid);
    g_autofree char *md5_2 = sh_file_md5("r", WFX_TOKEN_A, "r.bin");
    FX_CHECK(strcmp(md5, md5_2) == 0, "r.bin changed over the wake from radosgw");

    wfx_stop(&w, 240);
    fx_proxy_stop(&proxy);
    store_close(st);
    return 0;
}
