/* ckpt_orphan.c: a storage checkpoint that has no row does not block later checkpoints.
 *
 * A checkpoint call whose thaw or row write fails after the storage checkpoint was made leaves
 * that checkpoint on the storage server without a row, under the id the next call picks (the
 * largest recorded one plus one).  This test makes such a checkpoint behind wispd's back with
 * `wisp disk checkpoint` on the storage server's control socket: alice's sprite has ck1, the
 * storage server gets ck2.  The next POST .../checkpoints must answer 201 (it answered 500,
 * then and every time after, until a restart): ck2 is adopted and the new one is ck3.  Both
 * restore: ck2 holds what the guest had synced before it, ck3 what it had after. */
#include "wispd_fixture.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd_ckpt_orphan");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    g_autofree char *ctl = g_strdup_printf("%s/run/storage.ctl", state);
    wfx_start(&w, &img, state, NULL, NULL);

    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"web\"}");
    g_free(wfx_sh("web", WFX_TOKEN_A, "echo one > /root/v && sync", 0));
    JsonObject *c1 = wfx_expect(201, "POST", "/v1/sprites/web/checkpoints", WFX_TOKEN_A, NULL);
    FX_CHECK(strcmp(json_object_get_string_member(c1, "id"), "ck1") == 0, "first id %s",
             json_object_get_string_member(c1, "id"));
    json_object_unref(c1);

    /* ck2 on the storage server only, as a failed thaw or row write leaves it.  It is taken
     * without a freeze, but after a sync: the disk has "two", all that this test reads. */
    g_free(wfx_sh("web", WFX_TOKEN_A, "echo two > /root/v && sync", 0));
    g_free(wfx_cli("disk", "checkpoint", NULL, 0, "s_alice_web", "ck2", "--control", ctl, NULL));
    g_free(wfx_sh("web", WFX_TOKEN_A, "echo three > /root/v && sync", 0));

    JsonObject *c3 = wfx_expect(201, "POST", "/v1/sprites/web/checkpoints", WFX_TOKEN_A, NULL);
    FX_CHECK(strcmp(json_object_get_string_member(c3, "id"), "ck3") == 0,
             "the checkpoint after the orphan is %s, not ck3",
             json_object_get_string_member(c3, "id"));
    FX_CHECK(!json_object_has_member(c3, "thaw_error"), "thaw_error: %s",
             json_object_get_string_member(c3, "thaw_error"));
    json_object_unref(c3);
    g_autofree char *ids = wfx_checkpoint_ids("web", WFX_TOKEN_A);
    FX_CHECK(strcmp(ids, "ck1 ck2 ck3") == 0, "checkpoints: '%s'", ids);
    /* And the one after that is an ordinary one. */
    JsonObject *c4 = wfx_expect(201, "POST", "/v1/sprites/web/checkpoints", WFX_TOKEN_A, NULL);
    FX_CHECK(strcmp(json_object_get_string_member(c4, "id"), "ck4") == 0, "then %s",
             json_object_get_string_member(c4, "id"));
    json_object_unref(c4);

    /* The adopted checkpoint is a real one: each restores its own content. */
    wfx_expect_free(200, "POST", "/v1/sprites/web/checkpoints/ck2/restore", WFX_TOKEN_A, NULL);
    g_autofree char *v2 = wfx_sh("web", WFX_TOKEN_A, "cat /root/v", 0);
    FX_CHECK(strcmp(v2, "two\n") == 0, "after restoring ck2, /root/v reads '%s'", v2);
    wfx_expect_free(200, "POST", "/v1/sprites/web/checkpoints/ck3/restore", WFX_TOKEN_A, NULL);
    g_autofree char *v3 = wfx_sh("web", WFX_TOKEN_A, "cat /root/v", 0);
    FX_CHECK(strcmp(v3, "three\n") == 0, "after restoring ck3, /root/v reads '%s'", v3);

    wfx_stop(&w, 120);
    return 0;
}
