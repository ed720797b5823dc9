/* cold.c: cold sleep through wispd, SIGTERM, and kill -9 during a sleep (issue 7, items 1, 4).
 *
 *   explicit   a sprite with a counter process and a file: POST .../sleep {"mode":"cold"} gives
 *              asleep/cold, its manifest is in the store (vm/sprites/s_alice_one/), a bad mode
 *              and an unknown member are 400, a second cold sleep is 409; the local copy is
 *              deleted, and an exec wakes it from the store: same counter process, still
 *              counting, the file's md5 unchanged
 *   SIGTERM    two running sprites (one woken from cold, one a pool clone): wispd exits 0,
 *              both have a manifest in the store and no QEMU of this wispd is left; restarted,
 *              both are listed asleep/cold, and an exec wakes each with its files and the counter
 *   kill -9    during the cold sleep of a third sprite; restarted, it is asleep/cold (the sleep
 *              completed) or stopped (it did not), no QEMU of the killed wispd is left, and an
 *              exec finds its file; a sprite that was running is stopped, its file intact;
 *              `wisp sleep three cold` puts it to cold sleep again (a bad mode is exit 2)
 *
 * A file:// store (the default, STATE/store); the idle policy is off (idle-warm = idle-cold = 0).
 */
#include "sleep_helpers.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define IDLE_OFF "idle-warm = 0\nidle-cold = 0\nmemory-low-mib = 0\nmemory-psi = 0\n"

static void sleep_cold(const char *sprite)
{
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s/sleep", sprite);
    JsonObject *o = wfx_expect(200, "POST", path, WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    FX_CHECK(strcmp(json_object_get_string_member_with_default(o, "mode", ""), "cold") == 0,
             "the answer to a cold sleep has no \"mode\":\"cold\"");
    json_object_unref(o);
}

static void check_manifest(const char *state, const char *disk, unsigned seq)
{
    g_autofree char *p =
        g_strdup_printf("%s/store/vm/sprites/%s/manifest-%06u.json", state, disk, seq);
    FX_CHECK(sh_exists(p), "no manifest %s", p);
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd-cold");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, IDLE_OFF, NULL);

    /* ---- explicit cold sleep, wake from the store ---- */
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"one\"}");
    sh_counter_start("one", WFX_TOKEN_A);
    long pid_one = sh_counter_alive("one", WFX_TOKEN_A, 0);
    g_autofree char *md5_one = sh_file_write("one", WFX_TOKEN_A, "one.bin");
    wfx_expect_free(400, "POST", "/v1/sprites/one/sleep", WFX_TOKEN_A, "{\"mode\":\"frozen\"}");
    wfx_expect_free(400, "POST", "/v1/sprites/one/sleep", WFX_TOKEN_A, "{\"mode\":1}");
    wfx_expect_free(400, "POST", "/v1/sprites/one/sleep", WFX_TOKEN_A,
                    "{\"mode\":\"cold\",\"x\":1}");
    double t0 = fx_now();
    sleep_cold("one");
    fx_log("FIGURE wispd_cold_sleep_clone_ms=%.0f", (fx_now() - t0) * 1000);
    g_autofree char *st1 = sh_state("one", WFX_TOKEN_A);
    FX_CHECK(strcmp(st1, "asleep/cold") == 0, "after a cold sleep GET says %s", st1);
    check_manifest(state, "s_alice_one", 1);
    wfx_expect_free(409, "POST", "/v1/sprites/one/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    wfx_expect_free(409, "POST", "/v1/sprites/one/sleep", WFX_TOKEN_A, NULL);
    g_autofree char *local = g_strdup_printf("%s/sleep/s_alice_one", state);
    FX_CHECK(sh_exists(local), "no local copy at %s", local);
    fx_rm_rf(local);
    t0 = fx_now();
    g_free(wfx_sh("one", WFX_TOKEN_A, "true", 0)); /* wakes it */
    fx_log("FIGURE wispd_cold_wake_store_ms=%.0f (exec true included)", (fx_now() - t0) * 1000);
    FX_CHECK(wfx_log_has(w.log, "alice/one: awake, cold") && wfx_log_has(w.log, "from the store"),
             "the wake did not come from the store (see %s)", w.log);
    sh_counter_alive("one", WFX_TOKEN_A, pid_one);
    g_autofree char *md5_one_after = sh_file_md5("one", WFX_TOKEN_A, "one.bin");
    FX_CHECK(strcmp(md5_one, md5_one_after) == 0, "one.bin changed over the sleep");

    /* A second cold sleep and a wake from the local copy (the woken VM's own path). */
    t0 = fx_now();
    sleep_cold("one");
    fx_log("FIGURE wispd_cold_sleep_woken_ms=%.0f", (fx_now() - t0) * 1000);
    check_manifest(state, "s_alice_one", 2);
    t0 = fx_now();
    wfx_expect_free(200, "POST", "/v1/sprites/one/wake", WFX_TOKEN_A, NULL);
    fx_log("FIGURE wispd_cold_wake_local_ms=%.0f", (fx_now() - t0) * 1000);
    sh_counter_alive("one", WFX_TOKEN_A, pid_one);

    /* ---- SIGTERM with two running sprites ---- */
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"two\"}");
    g_autofree char *md5_two = sh_file_write("two", WFX_TOKEN_A, "two.bin");
    sh_counter_start("two", WFX_TOKEN_A);
    long pid_two = sh_counter_alive("two", WFX_TOKEN_A, 0);
    double took = wfx_stop(&w, 240);
    fx_log("FIGURE wispd_sigterm_two_sprites_s=%.1f", took);
    check_manifest(state, "s_alice_one", 3);
    check_manifest(state, "s_alice_two", 1);
    GArray *left = wfx_processes("qemu-system", state);
    guint nleft = left->len;
    g_array_unref(left);
    FX_CHECK(nleft == 0, "%u QEMU processes of the stopped wispd are still running", nleft);

    wfx_start(&w, &img, state, IDLE_OFF, NULL);
    JsonObject *list = wfx_expect(200, "GET", "/v1/sprites", WFX_TOKEN_A, NULL);
    JsonArray *sprites = json_object_get_array_member(list, "sprites");
    FX_CHECK(json_array_get_length(sprites) == 2, "two sprites expected after the restart");
    for (guint i = 0; i < 2; i++) {
        JsonObject *s = json_array_get_object_element(sprites, i);
        FX_CHECK(strcmp(json_object_get_string_member(s, "state"), "asleep") == 0 &&
                     strcmp(json_object_get_string_member_with_default(s, "mode", ""), "cold") == 0,
                 "%s is not asleep/cold after the restart",
                 json_object_get_string_member(s, "name"));
    }
    json_object_unref(list);
    sh_counter_alive("one", WFX_TOKEN_A, pid_one);
    sh_counter_alive("two", WFX_TOKEN_A, pid_two);
    g_autofree char *md5_one_2 = sh_file_md5("one", WFX_TOKEN_A, "one.bin");
    g_autofree char *md5_two_2 = sh_file_md5("two", WFX_TOKEN_A, "two.bin");
    FX_CHECK(strcmp(md5_one, md5_one_2) == 0 && strcmp(md5_two, md5_two_2) == 0,
             "a file changed over SIGTERM and the restart");

    /* ---- kill -9 during a cold sleep ---- */
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"three\"}");
    g_autofree char *md5_three = sh_file_write("three", WFX_TOKEN_A, "three.bin");
    g_autofree char *curl_log = g_strdup_printf("%s/curl-sleep.log", fx_tmpdir());
    pid_t curl_pid =
        wfx_post_async(WFX_TOKEN_A, "/v1/sprites/three/sleep", "{\"mode\":\"cold\"}", curl_log);
    t0 = fx_now();
    while (!wfx_log_has(w.log, "alice/three: cold sleep (asked)")) {
        FX_CHECK(fx_now() - t0 < 60, "the cold sleep of three never began (see %s)", w.log);
        fx_sleep(0.05);
    }
    fx_sleep(0.3); /* into the migration to the RAM helper (1 s or more under TCG) */
    GArray *before = wfx_processes("qemu-system", state);
    wfx_kill(&w);
    fx_reap(curl_pid, SIGKILL, 10);
    bool completed = wfx_log_has(w.log, "alice/three: asleep, cold");
    fx_log("killed %s the sleep completed (%u QEMU processes of it were running)",
           completed ? "after" : "before", before->len);

    unlink(w.socket); /* the killed wispd's: the fixture waits for the new one's */
    wfx_start(&w, &img, state, IDLE_OFF, NULL);
    for (guint i = 0; i < before->len; i++) {
        pid_t p = g_array_index(before, pid_t, i);
        for (int t = 0; t < 50 && wfx_pid_running(p); t++)
            fx_sleep(0.1);
        FX_CHECK(!wfx_pid_running(p), "QEMU %d of the killed wispd still runs", (int)p);
    }
    g_array_unref(before);
    g_autofree char *st3 = sh_state("three", WFX_TOKEN_A);
    fx_log("three after the restart: %s", st3);
    FX_CHECK(strcmp(st3, "asleep/cold") == 0 || strcmp(st3, "stopped/") == 0,
             "three is %s after kill -9 mid-sleep (asleep/cold or stopped expected)", st3);
    g_autofree char *md5_three_2 = sh_file_md5("three", WFX_TOKEN_A, "three.bin");
    FX_CHECK(strcmp(md5_three, md5_three_2) == 0, "three.bin changed over the kill");
    /* And it sleeps and wakes again (the CLI's way). */
    g_free(wfx_cli("sleep", "three", WFX_TOKEN_A, 2, "frozen", NULL));
    g_free(wfx_cli("sleep", "three", WFX_TOKEN_A, 0, "cold", NULL));
    g_autofree char *st3b = sh_state("three", WFX_TOKEN_A);
    FX_CHECK(strcmp(st3b, "asleep/cold") == 0, "wisp sleep three cold left it %s", st3b);
    g_free(wfx_sh("three", WFX_TOKEN_A, "true", 0));
    /* two was running (woken) when wispd was killed: stopped now, its disk as it was. */
    g_autofree char *st_two = sh_state("two", WFX_TOKEN_A);
    FX_CHECK(strcmp(st_two, "stopped/") == 0, "two is %s", st_two);
    g_autofree char *md5_two_3 = sh_file_md5("two", WFX_TOKEN_A, "two.bin");
    FX_CHECK(strcmp(md5_two, md5_two_3) == 0, "two.bin changed over the kill");

    wfx_stop(&w, 240);
    return 0;
}
