/* restore.c: a fresh host brings back every account's sprites from the store (issue 7).
 *
 *   host 1     wispd on state directory S1 and a store: accounts alice and bob each create a
 *              sprite and write a file in it; alice checkpoints hers, then writes a second file
 *              after the checkpoint; SIGTERM
 *   host 2     a new wispd on an EMPTY state directory S2 and the same store: the storage
 *              server restores the disk metadata (its replica) and wispd every account database
 *              (account_store.h).  Each account lists its own sprite and only it (the other's
 *              is 404), an exec claims a VM on the restored disk and shows the file, alice's
 *              checkpoint is listed and restores (the file written after it is gone)
 *   kill -9    host 2 creates a sprite for bob, waits for the replication lag to pass (the
 *              account database: replicate interval 1 s; the disk: upload-delay 1 s and the
 *              metadata's replicate-interval 1 s; we wait 6 s), and is killed with SIGKILL
 *              with its nbdkit and QEMUs (a lost host).  Host 3, on another empty state directory:
 * bob's two sprites are listed; an exec is a 409 while host 2's writer leases live (up to
 * lease-ttl, 30 s), then works (wispd takes the expired lease over), and alice's file is there
 *
 * Usage: restore file|s3.  s3 runs against the radosgw of tests/s3/rgw-fixture and skips
 * without it. */
#include "wispd_fixture.h"

#include <curl/curl.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* GPtrArray's compare gets pointers to its elements. */
static gint rs_compare(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(const char *const *)a, *(const char *const *)b);
}

/* The names of token's sprites, sorted, space-separated (g_free it). */
static char *rs_names(const char *token)
{
    JsonObject *o = wfx_expect(200, "GET", "/v1/sprites", token, NULL);
    JsonArray *a = json_object_get_array_member(o, "sprites");
    GPtrArray *names = g_ptr_array_new();
    for (guint i = 0; a && i < json_array_get_length(a); i++)
        g_ptr_array_add(names, (char *)json_object_get_string_member(
                                   json_array_get_object_element(a, i), "name"));
    g_ptr_array_sort(names, rs_compare);
    g_ptr_array_add(names, NULL);
    char *text = g_strjoinv(" ", (char **)names->pdata);
    g_ptr_array_free(names, TRUE);
    json_object_unref(o);
    return text;
}

static void rs_expect_names(const char *token, const char *want)
{
    g_autofree char *got = rs_names(token);
    FX_CHECK(strcmp(got, want) == 0, "the account lists '%s', expected '%s'", got, want);
}

/* Runs `true` in the sprite until it is not a 409 (another host's writer lease, alive for up
 * to lease-ttl after that host was lost); it must then be a 200. */
static void rs_exec_when_free(const char *sprite, const char *token)
{
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s/exec", sprite);
    const char *body = "{\"argv\":[\"true\"]}";
    double t0 = fx_now();

    for (;;) {
        long st = 0;
        JsonObject *o = wfx_http("POST", path, token, body, strlen(body), &st);
        if (st != 200)
            fx_log("exec on %s: %ld: %s", sprite, st,
                   json_object_get_string_member_with_default(o, "error", ""));
        json_object_unref(o);
        if (st == 200)
            return;
        FX_CHECK(st == 409, "exec on %s after the host loss: %ld, not 409 or 200", sprite, st);
        FX_CHECK(fx_now() - t0 < 120, "%s still not usable after %.0f s", sprite, fx_now() - t0);
        fx_sleep(2);
    }
}

int main(int argc, char **argv)
{
    struct vmf_image img;
    struct wispd_fx w;
    char store[1024];

    if (argc != 2 || (strcmp(argv[1], "file") && strcmp(argv[1], "s3"))) {
        fprintf(stderr, "usage: restore file|s3\n");
        return 2;
    }
    bool s3 = strcmp(argv[1], "s3") == 0;
    g_autofree char *test_name = g_strdup_printf("wispd_restore_%s", argv[1]);
    /* TLS and curl first: OpenSSL tears itself down in an atexit handler, and the fixture's
     * (which deletes the test's objects from radosgw through curl) must run before it, so it
     * must be registered after it. */
    FX_CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == 0, "curl_global_init");
    fx_setup(test_name);
    if (s3 && !fx_s3_available())
        fx_skip("no radosgw: WISP_TEST_S3_ENDPOINT is not set (tests/s3/rgw-fixture)");
    wfx_init(&img);
    if (s3) {
        g_autofree char *prefix =
            g_strdup_printf("wispd-restore-%d-%lld", (int)getpid(), (long long)g_get_real_time());
        fx_s3_url(store, sizeof store, prefix, NULL);
        fx_store_cleanup_register(store);
    } else {
        snprintf(store, sizeof store, "file://%s/store", fx_tmpdir());
    }
    const char *args[] = {"--store", store, NULL};
    g_autofree char *s1 = g_strdup_printf("%s/s1", fx_tmpdir());
    g_autofree char *s2 = g_strdup_printf("%s/s2", fx_tmpdir());
    g_autofree char *s3dir = g_strdup_printf("%s/s3", fx_tmpdir());

    /* ---- host 1 ---- */
    wfx_start(&w, &img, s1, NULL, args);
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"a1\"}");
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_B, "{\"name\":\"b1\"}");
    g_free(wfx_sh("a1", WFX_TOKEN_A, "echo alice-data > /root/a && sync", 0));
    g_free(wfx_sh("b1", WFX_TOKEN_B, "echo bob-data > /root/b && sync", 0));
    JsonObject *ck = wfx_expect(201, "POST", "/v1/sprites/a1/checkpoints", WFX_TOKEN_A, NULL);
    g_autofree char *ckpt = g_strdup(json_object_get_string_member(ck, "id"));
    json_object_unref(ck);
    g_free(wfx_sh("a1", WFX_TOKEN_A, "echo after > /root/after && sync", 0));
    /* A process that must still run on the next host: SIGTERM puts the sprite to cold sleep,
     * memory and all, into the store. */
    g_autofree char *bg =
        wfx_sh("a1", WFX_TOKEN_A, "sleep 100000 </dev/null >/dev/null 2>&1 & echo $!", 0);
    g_strstrip(bg);
    wfx_stop(&w, 120);

    /* ---- host 2: empty state directory, same store ---- */
    FX_CHECK(!g_file_test(s2, G_FILE_TEST_EXISTS), "%s exists", s2);
    wfx_start(&w, &img, s2, NULL, args);
    fx_log("fresh host (%s store): wispd up in %.2f s, restores included", argv[1], w.started_s);
    rs_expect_names(WFX_TOKEN_A, "a1");
    rs_expect_names(WFX_TOKEN_B, "b1");
    wfx_expect_free(404, "GET", "/v1/sprites/b1", WFX_TOKEN_A, NULL);
    wfx_expect_free(404, "GET", "/v1/sprites/a1", WFX_TOKEN_B, NULL);
    JsonObject *got = wfx_expect(200, "GET", "/v1/sprites/a1", WFX_TOKEN_A, NULL);
    const char *state = json_object_get_string_member_with_default(got, "state", "");
    const char *mode = json_object_get_string_member_with_default(got, "mode", "");
    FX_CHECK(strcmp(state, "asleep") == 0 && strcmp(mode, "cold") == 0,
             "a restored sprite is '%s' (%s), not asleep in cold sleep", state, mode);
    json_object_unref(got);
    double t0 = fx_now();
    g_autofree char *a = wfx_sh("a1", WFX_TOKEN_A, "cat /root/a /root/after", 0);
    fx_log("first exec on a restored sprite (claim included): %.2f s", fx_now() - t0);
    FX_CHECK(strcmp(a, "alice-data\nafter\n") == 0, "alice's files read '%s'", a);
    g_autofree char *alive = g_strdup_printf("kill -0 %s", bg);
    g_free(wfx_sh("a1", WFX_TOKEN_A, alive, 0)); /* woken from the store with its memory */
    fx_log("process %s started on the first host runs on the fresh one", bg);
    g_autofree char *b = wfx_sh("b1", WFX_TOKEN_B, "cat /root/b", 0);
    FX_CHECK(strcmp(b, "bob-data\n") == 0, "bob's file reads '%s'", b);
    JsonObject *list = wfx_expect(200, "GET", "/v1/sprites/a1/checkpoints", WFX_TOKEN_A, NULL);
    JsonArray *cks = json_object_get_array_member(list, "checkpoints");
    FX_CHECK(cks && json_array_get_length(cks) == 1 &&
                 strcmp(json_object_get_string_member(json_array_get_object_element(cks, 0), "id"),
                        ckpt) == 0,
             "alice's checkpoint %s is not listed alone", ckpt);
    json_object_unref(list);
    g_autofree char *rp = g_strdup_printf("/v1/sprites/a1/checkpoints/%s/restore", ckpt);
    wfx_expect_free(404, "POST", rp, WFX_TOKEN_B, NULL);
    wfx_expect_free(200, "POST", rp, WFX_TOKEN_A, NULL);
    g_autofree char *after = wfx_sh("a1", WFX_TOKEN_A, "cat /root/a; test -e /root/after", 1);
    FX_CHECK(strcmp(after, "alice-data\n") == 0, "after the restore, /root/a reads '%s'", after);

    /* ---- kill -9 of host 2, after the replication lag ---- */
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_B, "{\"name\":\"b2\"}");
    fx_sleep(6);
    /* A lost host: nbdkit first (so that nothing of host 2 ships or renews after this
     * instant), then wispd, then whatever of host 2 is left (its QEMUs).  Killing wispd alone
     * was seen to leave its nbdkit and QEMUs running (reparented to init), renewing host 2's
     * leases: not a lost host. */
    pid_t nbdkit = wfx_find_process("nbdkit ", s2);
    FX_CHECK(nbdkit > 0, "no nbdkit of host 2");
    FX_CHECK(kill(nbdkit, SIGKILL) == 0, "kill nbdkit");
    wfx_kill(&w);
    for (pid_t left; (left = wfx_find_process("", s2)) > 0;) {
        kill(left, SIGKILL);
        fx_sleep(0.2);
    }
    unlink(w.socket); /* left by the killed wispd; wfx_start waits for it to appear */
    wfx_start(&w, &img, s3dir, NULL, args);
    fx_log("fresh host after kill -9: wispd up in %.2f s", w.started_s);
    rs_expect_names(WFX_TOKEN_A, "a1");
    rs_expect_names(WFX_TOKEN_B, "b1 b2");
    /* Host 2's writer leases on a1 and b2 outlive it by up to lease-ttl (30 s): until then an
     * exec is a 409 naming the holder, then wispd takes the expired lease over. */
    t0 = fx_now();
    rs_exec_when_free("b2", WFX_TOKEN_B);
    fx_log("b2 usable %.1f s after host 3 was up (host 2's lease expired)", fx_now() - t0);
    rs_exec_when_free("a1", WFX_TOKEN_A);
    g_autofree char *a3 = wfx_sh("a1", WFX_TOKEN_A, "cat /root/a", 0);
    FX_CHECK(strcmp(a3, "alice-data\n") == 0, "on host 3, alice's file reads '%s'", a3);
    wfx_stop(&w, 120);
    return 0;
}
