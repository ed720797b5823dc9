/* account_db.c: one account's database (pool/account_db.h) on a real SQLite file, no wispd.
 *
 * Sprites: add, a taken name refused with G_IO_ERROR_EXISTS, get, list in name order, delete
 * taking the sprite's checkpoints with it.  Checkpoints: ids ck1, ck2, ... one past the highest
 * (a deleted last id is not the next one's problem: the highest decides), listed oldest first,
 * exists/delete answering 1 and 0.  Cold-sleep rows: begin, cold (pending becomes the
 * manifest), the list holding only sprites not awake, forget keeping seq.  And everything is
 * still there after a close and a reopen. */
#include "account_db.h"
#include "fixture.h"

#include <gio/gio.h>
#include <stdio.h>
#include <string.h>

static account_db *open_db(const char *path)
{
    GError *err = NULL;
    account_db *db = account_db_open(path, &err);
    FX_CHECK(db, "account_db_open %s: %s", path, err ? err->message : "?");
    return db;
}

static void add_sprite(account_db *db, const char *name)
{
    GError *err = NULL;
    g_autofree char *disk = g_strdup_printf("acct-%s", name);
    FX_CHECK(account_db_sprite_add(db, name, disk, &err), "add %s: %s", name,
             err ? err->message : "?");
}

static char *next_checkpoint(account_db *db, const char *sprite)
{
    GError *err = NULL;
    char *id = account_db_checkpoint_next_id(db, sprite, &err);
    FX_CHECK(id, "next id of %s: %s", sprite, err ? err->message : "?");
    FX_CHECK(account_db_checkpoint_add(db, sprite, id, &err), "add %s: %s", id,
             err ? err->message : "?");
    return id;
}

/* The ids of sprite's checkpoints, oldest first, joined by spaces. */
static char *checkpoint_ids(account_db *db, const char *sprite)
{
    GPtrArray *a = account_db_checkpoint_list(db, sprite, NULL);
    GString *s = g_string_new("");
    FX_CHECK(a, "checkpoint list of %s", sprite);
    for (guint i = 0; i < a->len; i++) {
        const struct account_checkpoint *c = g_ptr_array_index(a, i);
        FX_CHECK(c->created > 0, "checkpoint %s has no creation time", c->id);
        g_string_append_printf(s, "%s%s", i ? " " : "", c->id);
    }
    g_ptr_array_unref(a);
    return g_string_free(s, FALSE);
}

static char *sprite_names(account_db *db)
{
    GPtrArray *a = account_db_sprite_list(db, NULL);
    GString *s = g_string_new("");
    FX_CHECK(a, "sprite list");
    for (guint i = 0; i < a->len; i++) {
        const struct account_sprite *sp = g_ptr_array_index(a, i);
        g_string_append_printf(s, "%s%s=%s", i ? " " : "", sp->name, sp->disk);
    }
    g_ptr_array_unref(a);
    return g_string_free(s, FALSE);
}

static char *cold_rows(account_db *db)
{
    GPtrArray *a = account_db_cold_list(db, NULL);
    GString *s = g_string_new("");
    FX_CHECK(a, "cold list");
    for (guint i = 0; i < a->len; i++) {
        const struct account_cold *c = g_ptr_array_index(a, i);
        g_string_append_printf(s, "%s%s:%s:%s:%s:%u", i ? " " : "", c->sprite, c->state,
                               c->manifest, c->pending, c->seq);
    }
    g_ptr_array_unref(a);
    return g_string_free(s, FALSE);
}

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        g_autofree char *got_ = (got);                                                             \
        FX_CHECK(strcmp(got_, (want)) == 0, "%s: got '%s', want '%s'", #got, got_, (want));        \
    } while (0)

int main(void)
{
    GError *err = NULL;
    struct account_sprite sp;
    struct account_cold cold;

    fx_setup("account-db");
    g_autofree char *path = g_strdup_printf("%s/account.db", fx_tmpdir());
    account_db *db = open_db(path);

    /* Sprites. */
    CHECK_STR(sprite_names(db), "");
    add_sprite(db, "web");
    add_sprite(db, "api");
    add_sprite(db, "db");
    FX_CHECK(!account_db_sprite_add(db, "web", "other", &err) &&
                 g_error_matches(err, G_IO_ERROR, G_IO_ERROR_EXISTS),
             "a taken name: %s", err ? err->message : "accepted");
    g_clear_error(&err);
    CHECK_STR(sprite_names(db), "api=acct-api db=acct-db web=acct-web");
    FX_CHECK(account_db_sprite_get(db, "web", &sp, NULL) == 1 && strcmp(sp.disk, "acct-web") == 0 &&
                 sp.created > 0,
             "get web");
    FX_CHECK(account_db_sprite_get(db, "nope", &sp, NULL) == 0, "get of a missing sprite");

    /* Checkpoints: ck1.. per sprite; the highest decides the next. */
    g_free(next_checkpoint(db, "web"));
    g_free(next_checkpoint(db, "web"));
    g_free(next_checkpoint(db, "api"));
    g_autofree char *third = next_checkpoint(db, "web");
    FX_CHECK(strcmp(third, "ck3") == 0, "third checkpoint of web is %s", third);
    CHECK_STR(checkpoint_ids(db, "web"), "ck1 ck2 ck3");
    CHECK_STR(checkpoint_ids(db, "api"), "ck1");
    FX_CHECK(account_db_checkpoint_exists(db, "web", "ck2", NULL) == 1, "ck2 exists");
    FX_CHECK(account_db_checkpoint_exists(db, "api", "ck2", NULL) == 0, "api has no ck2");
    FX_CHECK(account_db_checkpoint_delete(db, "web", "ck2", NULL) == 1, "delete ck2");
    FX_CHECK(account_db_checkpoint_delete(db, "web", "ck2", NULL) == 0, "delete ck2 twice");
    CHECK_STR(checkpoint_ids(db, "web"), "ck1 ck3");
    g_autofree char *fourth = next_checkpoint(db, "web");
    FX_CHECK(strcmp(fourth, "ck4") == 0, "after deleting ck2 the next is %s", fourth);

    /* Cold-sleep rows. */
    CHECK_STR(cold_rows(db), "");
    FX_CHECK(account_db_cold_begin(db, "web", 1, "vm/m-1", NULL), "begin web");
    FX_CHECK(account_db_cold_begin(db, "db", 1, "vm/d-1", NULL), "begin db");
    CHECK_STR(cold_rows(db), "db:going-cold::vm/d-1:1 web:going-cold::vm/m-1:1");
    FX_CHECK(account_db_cold_set(db, "web", "cold", NULL), "web cold");
    FX_CHECK(account_db_cold_set(db, "db", "awake", NULL), "db awake (its sleep failed)");
    CHECK_STR(cold_rows(db), "web:cold:vm/m-1::1");
    FX_CHECK(account_db_cold_get(db, "db", &cold, NULL) == 1 && strcmp(cold.state, "awake") == 0,
             "db's row stays, awake");
    FX_CHECK(account_db_cold_get(db, "api", &cold, NULL) == 0, "api never slept");
    account_db_audit(db, "sleep", "web", true, "cold");

    /* Close and reopen: all of it is in the file. */
    account_db_close(db);
    db = open_db(path);
    CHECK_STR(sprite_names(db), "api=acct-api db=acct-db web=acct-web");
    CHECK_STR(checkpoint_ids(db, "web"), "ck1 ck3 ck4");
    CHECK_STR(cold_rows(db), "web:cold:vm/m-1::1");

    /* Forget keeps seq; deleting a sprite takes its checkpoints. */
    FX_CHECK(account_db_cold_forget(db, "web", NULL), "forget web");
    FX_CHECK(account_db_cold_get(db, "web", &cold, NULL) == 1 && cold.seq == 1 &&
                 strcmp(cold.state, "awake") == 0 && cold.manifest[0] == 0,
             "forgotten: %s seq %u manifest '%s'", cold.state, cold.seq, cold.manifest);
    CHECK_STR(cold_rows(db), "");
    FX_CHECK(account_db_sprite_delete(db, "web", NULL), "delete web");
    CHECK_STR(sprite_names(db), "api=acct-api db=acct-db");
    CHECK_STR(checkpoint_ids(db, "web"), "");
    add_sprite(db, "web");
    g_autofree char *fresh = next_checkpoint(db, "web");
    FX_CHECK(strcmp(fresh, "ck1") == 0, "a new sprite of an old name starts at %s", fresh);

    account_db_close(db);
    fx_log("account db: sprites, checkpoints, cold rows and a reopen as expected");
    return 0;
}
