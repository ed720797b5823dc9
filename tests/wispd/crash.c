/* crash.c: wispd killed with SIGKILL in the middle of create, checkpoint and restore, then
 * started again on the same state directory (issue 7's fault tests).
 *
 * After every restart, the sprites of the account and the storage server's disks must agree
 * (sprite_reconcile.h): every listed sprite has its disk and runs a command; no sprite disk is
 * left that no sprite names; every checkpoint the storage server has is listed, and the other
 * way round; the sprite "keep" still has its file, and its checkpoint still restores it.
 * Its QEMUs outlive it (and sometimes its nbdkit, despite PR_SET_PDEATHSIG); the next wispd kills
 * them before it serves: none of them may write to a disk again.
 *
 * The kills come at a few delays into each request, so that some land in the clone, some in
 * the claim, and some after; which step a kill hits is logged, not assumed. */
#include "wispd_fixture.h"

#include <pthread.h>
#include <string.h>

struct racing_request {
    const char *method, *path, *body;
    long status;
};

static void *racing_request_run(void *opaque)
{
    struct racing_request *r = opaque;
    r->status = wfx_try(r->method, r->path, NULL, r->body);
    return NULL;
}

/* Sends the request, kills wispd `delay` seconds into it, restarts wispd. */
static void kill_during(struct wispd_fx *w, const struct vmf_image *img, const char *method,
                        const char *path, const char *body, double delay)
{
    struct racing_request r = {method, path, body, 0};
    pthread_t t;

    FX_CHECK(pthread_create(&t, NULL, racing_request_run, &r) == 0, "pthread_create");
    fx_sleep(delay);
    wfx_kill(w);
    pthread_join(t, NULL);
    fx_log("%s %s killed %.2f s in: the request got %ld", method, path, delay, r.status);
    /* Its QEMUs outlive it (template.c), and so may its nbdkit; the next wispd must kill them
     * before its own nbdkit serves, or they would write to the disks again. */
    GArray *left = wfx_processes("qemu-system", w->state);
    FX_CHECK(left->len > 0, "no QEMU of the killed wispd to look for (a pool member at least)");
    GArray *left_nbdkit = wfx_processes("nbdkit ", w->state);
    g_array_append_vals(left, left_nbdkit->data, left_nbdkit->len);
    g_array_unref(left_nbdkit);
    g_autofree char *state = g_strdup(w->state);
    wfx_start(w, img, state, NULL, NULL);
    for (guint i = 0; i < left->len; i++) {
        pid_t pid = g_array_index(left, pid_t, i);
        g_autofree char *cmdline = g_strdup_printf("/proc/%d/cmdline", (int)pid);
        g_autofree char *cmd = NULL;
        gsize len = 0;
        FX_CHECK(!g_file_get_contents(cmdline, &cmd, &len, NULL) || len == 0,
                 "process %d of the killed wispd still runs after the restart", (int)pid);
    }
    fx_log("%u QEMUs and nbdkits of the killed wispd, none left after the restart", left->len);
    g_array_unref(left);
}

/* The names of a JSON array's objects' member `key`. */
static GHashTable *names_of(JsonArray *a, const char *key)
{
    GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (guint i = 0; a && i < json_array_get_length(a); i++)
        g_hash_table_add(set, g_strdup(json_object_get_string_member_with_default(
                                  json_array_get_object_element(a, i), key, "")));
    return set;
}

static bool same_sets(GHashTable *a, GHashTable *b)
{
    GHashTableIter it;
    gpointer k;
    if (g_hash_table_size(a) != g_hash_table_size(b))
        return false;
    g_hash_table_iter_init(&it, a);
    while (g_hash_table_iter_next(&it, &k, NULL))
        if (!g_hash_table_contains(b, k))
            return false;
    return true;
}

static void check_consistent(const struct wispd_fx *w, const char *when)
{
    JsonObject *list = wfx_expect(200, "GET", "/v1/sprites", NULL, NULL);
    JsonArray *sprites = json_object_get_array_member(list, "sprites");
    JsonNode *disks_node = wfx_disk_json(w, "list", NULL);
    GHashTable *disks = names_of(json_node_get_array(disks_node), "name");
    guint sprite_disks = 0;

    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, disks);
    while (g_hash_table_iter_next(&it, &k, NULL))
        if (g_str_has_prefix(k, "s_"))
            sprite_disks++;
    FX_CHECK(sprite_disks == json_array_get_length(sprites),
             "%s: %u sprite disks but %u sprites listed", when, sprite_disks,
             json_array_get_length(sprites));
    for (guint i = 0; i < json_array_get_length(sprites); i++) {
        JsonObject *s = json_array_get_object_element(sprites, i);
        const char *name = json_object_get_string_member(s, "name");
        const char *disk = json_object_get_string_member(s, "disk");
        FX_CHECK(g_hash_table_contains(disks, disk), "%s: sprite %s has no disk %s", when, name,
                 disk);
        g_free(wfx_sh(name, NULL, "true", 0));
        g_autofree char *path = g_strdup_printf("/v1/sprites/%s/checkpoints", name);
        JsonObject *cks = wfx_expect(200, "GET", path, NULL, NULL);
        GHashTable *listed = names_of(json_object_get_array_member(cks, "checkpoints"), "id");
        JsonNode *stored_node = wfx_disk_json(w, "checkpoints", disk);
        GHashTable *stored = names_of(json_node_get_array(stored_node), "name");
        FX_CHECK(same_sets(listed, stored), "%s: sprite %s lists %u checkpoints, its disk has %u",
                 when, name, g_hash_table_size(listed), g_hash_table_size(stored));
        g_hash_table_unref(listed);
        g_hash_table_unref(stored);
        json_node_unref(stored_node);
        json_object_unref(cks);
    }
    fx_log("%s: consistent: %u sprites, each with its disk and checkpoints", when,
           json_array_get_length(sprites));
    g_hash_table_unref(disks);
    json_node_unref(disks_node);
    json_object_unref(list);
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;
    const double delays[] = {0.03, 0.25, 0.8};

    fx_setup("wispd_crash");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, NULL, NULL);

    wfx_expect_free(201, "POST", "/v1/sprites", NULL, "{\"name\":\"keep\"}");
    g_free(wfx_sh("keep", NULL, "echo first > /root/file && sync", 0));
    JsonObject *ck = wfx_expect(201, "POST", "/v1/sprites/keep/checkpoints", NULL, NULL);
    g_autofree char *ck_id = g_strdup(json_object_get_string_member(ck, "id"));
    json_object_unref(ck);
    g_free(wfx_sh("keep", NULL, "echo second > /root/file && sync", 0));
    g_autofree char *restore = g_strdup_printf("/v1/sprites/keep/checkpoints/%s/restore", ck_id);

    for (size_t i = 0; i < G_N_ELEMENTS(delays); i++) {
        g_autofree char *body = g_strdup_printf("{\"name\":\"mid%zu\"}", i);
        kill_during(&w, &img, "POST", "/v1/sprites", body, delays[i]);
        g_autofree char *when = g_strdup_printf("create killed at %.2f s", delays[i]);
        check_consistent(&w, when);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(delays); i++) {
        kill_during(&w, &img, "POST", "/v1/sprites/keep/checkpoints", NULL, delays[i] / 4);
        g_autofree char *when = g_strdup_printf("checkpoint killed at %.2f s", delays[i] / 4);
        check_consistent(&w, when);
        /* The next checkpoint gets a fresh id whatever the kill left. */
        wfx_expect_free(201, "POST", "/v1/sprites/keep/checkpoints", NULL, NULL);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(delays); i++) {
        kill_during(&w, &img, "POST", restore, NULL, delays[i]);
        g_autofree char *when = g_strdup_printf("restore killed at %.2f s", delays[i]);
        check_consistent(&w, when);
        g_autofree char *file = wfx_sh("keep", NULL, "cat /root/file", 0);
        FX_CHECK(strcmp(file, "first\n") == 0 || strcmp(file, "second\n") == 0,
                 "%s: /root/file says '%s'", when, file);
    }
    /* The checkpoint still restores. */
    wfx_expect_free(200, "POST", restore, NULL, NULL);
    g_autofree char *file = wfx_sh("keep", NULL, "cat /root/file", 0);
    FX_CHECK(strcmp(file, "first\n") == 0, "after a last restore /root/file says '%s'", file);

    wfx_stop(&w, 60);
    return 0;
}
