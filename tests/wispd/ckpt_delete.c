/* ckpt_delete.c: DELETE /v1/sprites/NAME/checkpoints/ID and `wisp checkpoint delete` (issue 7).
 *
 * alice's sprite gets checkpoints ck1 and ck2.  bob deleting ck1 is a 404 (another account's
 * sprite is not found, never 403); alice's delete answers 200, ck1 is gone from the list and
 * from the storage server (`wisp disk checkpoints`), a restore of it and a second delete are
 * 404, and ck2 still restores.  Through the CLI: `wisp checkpoint create|list|delete`, and a
 * second delete exits 1. */
#include "wispd_fixture.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd_ckpt_delete");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    g_autofree char *ctl = g_strdup_printf("%s/run/storage.ctl", state);
    wfx_start(&w, &img, state, NULL, NULL);

    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"ck\"}");
    g_free(wfx_sh("ck", WFX_TOKEN_A, "echo one > /root/v && sync", 0));
    wfx_expect_free(201, "POST", "/v1/sprites/ck/checkpoints", WFX_TOKEN_A, NULL);
    g_free(wfx_sh("ck", WFX_TOKEN_A, "echo two > /root/v && sync", 0));
    g_autofree char *made = wfx_cli("checkpoint", "create", WFX_TOKEN_A, 0, "ck", NULL);
    FX_CHECK(strcmp(made, "ck2\n") == 0, "wisp checkpoint create printed '%s'", made);
    g_autofree char *before = wfx_checkpoint_ids("ck", WFX_TOKEN_A);
    FX_CHECK(strcmp(before, "ck1 ck2") == 0, "checkpoints before: '%s'", before);

    /* Another account: not found, and nothing deleted. */
    wfx_expect_free(404, "DELETE", "/v1/sprites/ck/checkpoints/ck1", WFX_TOKEN_B, NULL);
    g_free(wfx_cli("checkpoint", "delete", WFX_TOKEN_B, 1, "ck", "ck1", NULL));
    g_autofree char *still = wfx_checkpoint_ids("ck", WFX_TOKEN_A);
    FX_CHECK(strcmp(still, "ck1 ck2") == 0, "bob's delete changed the list: '%s'", still);
    wfx_expect_free(400, "DELETE", "/v1/sprites/ck/checkpoints/a..b", WFX_TOKEN_A, NULL);

    /* alice deletes ck1. */
    JsonObject *del =
        wfx_expect(200, "DELETE", "/v1/sprites/ck/checkpoints/ck1", WFX_TOKEN_A, NULL);
    FX_CHECK(json_object_get_boolean_member_with_default(del, "deleted", FALSE),
             "the answer does not say deleted");
    json_object_unref(del);
    g_autofree char *after = wfx_checkpoint_ids("ck", WFX_TOKEN_A);
    FX_CHECK(strcmp(after, "ck2") == 0, "checkpoints after the delete: '%s'", after);
    g_autofree char *disk_ckpts =
        wfx_cli("disk", "checkpoints", NULL, 0, "s_alice_ck", "--control", ctl, NULL);
    FX_CHECK(!strstr(disk_ckpts, "ck1") && strstr(disk_ckpts, "ck2"),
             "the storage server still lists: '%s'", disk_ckpts);
    wfx_expect_free(404, "POST", "/v1/sprites/ck/checkpoints/ck1/restore", WFX_TOKEN_A, NULL);
    wfx_expect_free(404, "DELETE", "/v1/sprites/ck/checkpoints/ck1", WFX_TOKEN_A, NULL);
    wfx_expect_free(200, "POST", "/v1/sprites/ck/checkpoints/ck2/restore", WFX_TOKEN_A, NULL);
    g_autofree char *v = wfx_sh("ck", WFX_TOKEN_A, "cat /root/v", 0);
    FX_CHECK(strcmp(v, "two\n") == 0, "after restoring ck2, /root/v reads '%s'", v);

    /* Through the CLI. */
    g_autofree char *out = wfx_cli("checkpoint", "delete", WFX_TOKEN_A, 0, "ck", "ck2", NULL);
    FX_CHECK(strstr(out, "ck2 deleted"), "wisp checkpoint delete printed '%s'", out);
    g_autofree char *listed = wfx_cli("checkpoint", "list", WFX_TOKEN_A, 0, "ck", NULL);
    FX_CHECK(strcmp(listed, "") == 0, "wisp checkpoint list printed '%s'", listed);
    g_free(wfx_cli("checkpoint", "delete", WFX_TOKEN_A, 1, "ck", "ck2", NULL));
    g_free(wfx_cli("checkpoint", "delete", WFX_TOKEN_A, 2, "ck", NULL)); /* usage */

    wfx_stop(&w, 120);
    return 0;
}
