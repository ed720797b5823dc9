/* races.c: verbs that race a create of the same sprite.
 *
 * A create writes the sprite's row, clones its disk and claims a VM; the sprite is visible
 * (GET answers 200) from the row on.  Another verb that comes in that window must wait for the
 * create to end, not act on a half-made sprite:
 *   - exec: a second thread polls GET and execs `true` the moment the sprite exists.  Both
 *     calls must succeed, and once every sprite is deleted no QEMU but the pool's may be left
 *     (before the fix the exec claimed a VM of its own and the create then claimed a second one
 *     on the same disk, which leaked).
 *   - delete: the second thread deletes it the moment it exists.  The create answers 201, the
 *     delete 200, and then the sprite is gone: GET is 404, the storage server has no disk for
 *     it, and after a restart of wispd it has not come back (before the fix the delete saw no
 *     disk yet, the create then failed and left its disk, which reconcile adopted at start).
 *   - create: two at once of one name; one answers 201, the other 409.
 * WISP_TEST_RACES sets the rounds of each (5 by default). */
#include "wispd_fixture.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct race {
    char name[64];
    bool delete; /* the second verb: DELETE, else exec `true` */
    long create_status, other_status;
    double create_s, other_s; /* when each answered, from the start of the round */
    double t0;
};

/* Waits until the sprite exists, then runs the second verb at once. */
static gpointer race_other(gpointer opaque)
{
    struct race *r = opaque;
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s", r->name);
    g_autofree char *exec_path = g_strdup_printf("/v1/sprites/%s/exec", r->name);

    for (;;) {
        long st = wfx_try("GET", path, WFX_TOKEN_A, NULL);
        if (st == 200)
            break;
        if (st != 404 || fx_now() - r->t0 > 180) {
            r->other_status = st == 404 ? -2 : st;
            return NULL;
        }
    }
    if (r->delete)
        r->other_status = wfx_try("DELETE", path, WFX_TOKEN_A, NULL);
    else
        r->other_status = wfx_try("POST", exec_path, WFX_TOKEN_A, "{\"argv\":[\"true\"]}");
    r->other_s = fx_now() - r->t0;
    return NULL;
}

/* The same create as race_round's, from another thread. */
static gpointer race_create(gpointer opaque)
{
    struct race *r = opaque;
    g_autofree char *body = g_strdup_printf("{\"name\":\"%s\"}", r->name);
    r->create_status = wfx_try("POST", "/v1/sprites", WFX_TOKEN_A, body);
    return NULL;
}

static void race_round(struct race *r)
{
    g_autofree char *body = g_strdup_printf("{\"name\":\"%s\"}", r->name);

    r->t0 = fx_now();
    GThread *t = g_thread_new("race-other", race_other, r);
    r->create_status = wfx_try("POST", "/v1/sprites", WFX_TOKEN_A, body);
    r->create_s = fx_now() - r->t0;
    g_thread_join(t);
    fx_log("%s: create %ld at %.2f s, %s %ld at %.2f s", r->name, r->create_status, r->create_s,
           r->delete ? "delete" : "exec", r->other_status, r->other_s);
}

/* Whether the storage server has a disk named s_alice_NAME. */
static bool race_disk_exists(const struct wispd_fx *w, const char *name)
{
    JsonNode *n = wfx_disk_json(w, "list", NULL);
    g_autofree char *text = json_to_string(n, FALSE);
    g_autofree char *quoted = g_strdup_printf("\"s_alice_%s\"", name);
    json_node_unref(n);
    return strstr(text, quoted) != NULL;
}

/* Waits for the QEMUs of this wispd to be at most `most` (a destroyed VM takes a moment to
 * exit); returns how many there are. */
static guint race_qemus_settle(const struct wispd_fx *w, guint most)
{
    guint n = 0;
    for (double t0 = fx_now(); fx_now() - t0 < 90; fx_sleep(0.5)) {
        GArray *pids = wfx_processes("qemu-system", w->state);
        n = pids->len;
        g_array_unref(pids);
        if (n <= most)
            break;
    }
    return n;
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;
    const char *env_rounds = getenv("WISP_TEST_RACES");
    int rounds = env_rounds ? atoi(env_rounds) : 5;

    fx_setup("wispd_races");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, NULL, NULL);

    /* Exec racing create. */
    for (int i = 0; i < rounds; i++) {
        struct race r = {.delete = false};
        snprintf(r.name, sizeof r.name, "x%d", i);
        race_round(&r);
        FX_CHECK(r.create_status == 201, "%s: create answered %ld", r.name, r.create_status);
        FX_CHECK(r.other_status == 200, "%s: the exec racing the create answered %ld", r.name,
                 r.other_status);
    }
    for (int i = 0; i < rounds; i++) {
        g_autofree char *path = g_strdup_printf("/v1/sprites/x%d", i);
        wfx_expect_free(200, "DELETE", path, WFX_TOKEN_A, NULL);
    }
    /* The pool has one member (wfx_start's config); any other QEMU is a VM that no sprite
     * holds: a second VM that was claimed on a sprite's disk. */
    guint left = race_qemus_settle(&w, 1);
    FX_CHECK(left <= 1, "%u QEMUs left after deleting every sprite: a leaked second VM", left);

    /* Delete racing create. */
    for (int i = 0; i < rounds; i++) {
        struct race r = {.delete = true};
        snprintf(r.name, sizeof r.name, "d%d", i);
        race_round(&r);
        FX_CHECK(r.create_status == 201, "%s: create answered %ld", r.name, r.create_status);
        FX_CHECK(r.other_status == 200, "%s: the delete racing the create answered %ld", r.name,
                 r.other_status);
        g_autofree char *path = g_strdup_printf("/v1/sprites/%s", r.name);
        wfx_expect_free(404, "GET", path, WFX_TOKEN_A, NULL);
        FX_CHECK(!race_disk_exists(&w, r.name), "%s: deleted, but its disk is still there", r.name);
    }
    /* Two creates of one name: the second waits for the first's lock or sees its row, and is
     * 409 either way (the path where it waited is the new one). */
    for (int i = 0; i < rounds; i++) {
        struct race r = {.delete = false};
        snprintf(r.name, sizeof r.name, "c%d", i);
        r.t0 = fx_now();
        GThread *t = g_thread_new("race-create", race_create, &r);
        g_autofree char *body = g_strdup_printf("{\"name\":\"%s\"}", r.name);
        long mine = wfx_try("POST", "/v1/sprites", WFX_TOKEN_A, body);
        g_thread_join(t);
        fx_log("%s: creates answered %ld and %ld", r.name, mine, r.create_status);
        FX_CHECK((mine == 201 && r.create_status == 409) || (mine == 409 && r.create_status == 201),
                 "%s: two creates answered %ld and %ld", r.name, mine, r.create_status);
        g_autofree char *path = g_strdup_printf("/v1/sprites/%s", r.name);
        wfx_expect_free(200, "DELETE", path, WFX_TOKEN_A, NULL);
    }
    left = race_qemus_settle(&w, 1);
    FX_CHECK(left <= 1, "%u QEMUs left after the double creates", left);

    /* A restart's reconcile adopts any disk without a row: none may bring a sprite back. */
    wfx_stop(&w, 120);
    wfx_start(&w, &img, state, NULL, NULL);
    for (int i = 0; i < rounds; i++) {
        g_autofree char *path = g_strdup_printf("/v1/sprites/d%d", i);
        wfx_expect_free(404, "GET", path, WFX_TOKEN_A, NULL);
    }
    JsonObject *list = wfx_expect(200, "GET", "/v1/sprites", WFX_TOKEN_A, NULL);
    JsonArray *a = json_object_get_array_member(list, "sprites");
    FX_CHECK(a && json_array_get_length(a) == 0, "after the restart alice has %u sprites",
             a ? json_array_get_length(a) : 0);
    json_object_unref(list);

    wfx_stop(&w, 120);
    return 0;
}
