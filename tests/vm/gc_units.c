/* gc_units.c (vm_gc_units, unit suite): garbage collection of sleep manifests and RAM chunks
 * (vm_gc.h) on a real file:// store, without QEMU.  Files of random 4 KiB chunks stand for RAM
 * images; each is stored as a sleep stores it (chunk_list_store) under a manifest in the sleep
 * format.  Ages are made by setting the objects' mtime back (the file store's clock is the
 * file's mtime, as an S3 store's is its Last-Modified).
 *
 *   sprite s: manifest 1 {a b c}, 2 {a b d}, 3 {a b g};  sprite ss: 1 {h}  (a name that starts
 *   like s);  the template: {a f};  orphans: o (old), y (young), and a key that is no chunk.
 *
 *   - dry run (keep 1): counts what a run would delete, and deletes nothing;
 *   - keep 2: s's manifest 1 goes, c and o go, y stays (young: a sleep in progress), f stays
 *     (the template is a root), the foreign key stays; s's manifest 2 restores byte for byte;
 *   - keep 1 with s's manifest 2 pinned (from a sprite database whose record names it): nothing
 *     more goes; then unpinned: manifest 2 and d go;
 *   - a sleep that finds an old orphan by HEAD refreshes it (PUT again): the next run keeps it;
 *   - an unreadable root fails the run before anything is deleted;
 *   - vm_gc_delete_sprite deletes s's manifests and not ss's; a name with '/' is refused. */
#include "hash.h"
#include "ram_chunks.h"
#include "sleep.h"
#include "sleep_internal.h"
#include "sprite_db.h"
#include "template_store.h"
#include "unit_check.h"
#include "vm_gc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK 4096u
#define OLD_S (2 * 3600)

static char *store_dir;
static struct store *st;

/* One 4 KiB chunk of content named by a letter (the same letter, the same bytes). */
static void fill_chunk(uint8_t *p, char letter)
{
    GRand *r = g_rand_new_with_seed((guint32)letter * 7919u);
    for (size_t i = 0; i < CHUNK; i++)
        p[i] = (uint8_t)g_rand_int(r);
    g_rand_free(r);
}

static char *chunk_hex(char letter)
{
    uint8_t buf[CHUNK];
    uint8_t sha[32];
    char hex[65];
    fill_chunk(buf, letter);
    hash_sha256(buf, CHUNK, sha);
    hash_to_hex(sha, sizeof sha, hex);
    return g_strdup(hex);
}

static char *chunk_key(char letter)
{
    g_autofree char *hex = chunk_hex(letter);
    return g_strdup_printf("%s%s", RAM_CHUNK_PREFIX, hex);
}

static bool has(const char *key)
{
    struct store_stat sb;
    return store_head(st, key, &sb) == 0;
}

static bool has_chunk(char letter)
{
    g_autofree char *key = chunk_key(letter);
    return has(key);
}

static void set_age(const char *key, time_t age_s)
{
    g_autofree char *path = g_build_filename(store_dir, key, NULL);
    struct timespec ts[2] = {{time(NULL) - age_s, 0}, {time(NULL) - age_s, 0}};
    CHECK(utimensat(AT_FDCWD, path, ts, 0) == 0, "utimensat %s: %s", path, g_strerror(errno));
}

static void age_all_chunks(const char *letters)
{
    for (const char *l = letters; *l; l++) {
        g_autofree char *key = chunk_key(*l);
        set_age(key, OLD_S);
    }
}

/* A "RAM file" of the letters' chunks, stored as a sleep stores it, with its manifest at key.
 * Returns the file's path. */
static char *sleep_file(const char *dir, const char *sprite, const char *key, const char *letters,
                        struct chunk_upload_stats *stats)
{
    g_autofree char *name = g_strdup_printf("%s-%s", sprite, letters);
    g_strdelimit(name, "/", '_');
    char *path = g_build_filename(dir, name, NULL);
    size_t n = strlen(letters);
    uint8_t *data = g_malloc0(n * CHUNK);
    struct chunk_list ram = {0}, state = {0};
    GError *err = NULL;

    for (size_t i = 0; i < n; i++)
        fill_chunk(data + i * CHUNK, letters[i]);
    CHECK(g_file_set_contents(path, (char *)data, (gssize)(n * CHUNK), &err), "write %s", path);
    g_free(data);
    CHECK(chunk_list_store(st, path, CHUNK, NULL, &ram, stats, &err), "store: %s",
          err ? err->message : "");
    g_clear_error(&err);
    chunk_list_init(&state, 0, CHUNK);
    g_autofree char *text = sleep_manifest_build(sprite, key, 1, &ram, &state);
    CHECK(store_put(st, key, text, strlen(text)) == 0, "PUT %s", key);
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
    return path;
}

static bool run_gc(unsigned keep, bool dry_run, const char *const *pins, struct vm_gc_report *r,
                   GError **err)
{
    struct vm_gc_options o;
    vm_gc_options_init(&o);
    o.keep = keep;
    o.dry_run = dry_run;
    o.pins = pins;
    bool ok = vm_gc_run(st, &o, r, err);
    g_autofree char *json = vm_gc_report_to_json(r);
    fprintf(stderr, "gc keep=%u%s: %s\n", keep, dry_run ? " (dry run)" : "", json);
    return ok;
}

static const char *const no_pins[] = {NULL};

static bool run_gc_pins_of(sprite_db *db, unsigned keep, struct vm_gc_report *r, GError **err)
{
    g_autoptr(GPtrArray) pins = g_ptr_array_new_with_free_func(g_free);
    CHECK(sprite_db_manifest_pins(db, pins, err), "pins: %s", *err ? (*err)->message : "");
    g_ptr_array_add(pins, NULL);
    return run_gc(keep, false, (const char *const *)pins->pdata, r, err);
}

/* Names that are not one safe key component are refused where keys and records are made. */
static void check_names(sprite_db *db)
{
    const char *bad[] = {"a/b", "..", ".", "", ".x", "-x", "a b", "a\nb", "x/../y"};
    GError *err = NULL;

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        CHECK(!sprite_db_create(db, bad[i], &err), "sprite_db_create accepted '%s'", bad[i]);
        g_clear_error(&err);
        char *key = sleep_manifest_key(bad[i], 1);
        CHECK(!key, "sleep_manifest_key accepted '%s': %s", bad[i], key);
        g_free(key);
    }
    char *key = sleep_manifest_key_incarnation("ok", "../../x", 1);
    CHECK(!key, "a bad incarnation made key %s", key);
    g_free(key);
}

/* The key the next cold sleep of name writes (as sprite_sleep_cold makes it), and that sleep
 * recorded. */
static char *sleep_recorded(const char *dir, sprite_db *db, const char *name, const char *letters)
{
    GError *err = NULL;
    struct sprite_record *rec = sprite_db_get(db, name, &err);
    CHECK(rec, "get %s: %s", name, err ? err->message : "");
    char *key = sleep_manifest_key_incarnation(name, rec->incarnation, rec->sleep_seq + 1);
    CHECK(key, "no key for %s (incarnation %s)", name, rec->incarnation);
    sprite_record_free(rec);
    g_free(sleep_file(dir, name, key, letters, NULL));
    CHECK(sprite_db_end(db, name, SPRITE_COLD_ASLEEP, 0, NULL, key, "slept", &err), "end: %s",
          err ? err->message : "");
    return key;
}

/* A destroyed name used again: its new incarnation counts from 1 again, and neither GC's
 * ranking nor --delete-sprite may take the live sprite's manifest for a dead one's. */
static void check_reused_name(const char *dir, sprite_db *db)
{
    struct vm_gc_report r;
    GError *err = NULL;
    unsigned n = 0;
    char *dead[5];

    CHECK(sprite_db_create(db, "r", &err), "create r: %s", err ? err->message : "");
    for (int i = 0; i < 5; i++)
        dead[i] = sleep_recorded(dir, db, "r", "p");
    CHECK(sprite_db_end(db, "r", SPRITE_DESTROYED, 0, NULL, NULL, "destroyed", &err) &&
              sprite_db_create(db, "r", &err),
          "re-create r: %s", err ? err->message : "");
    g_autofree char *live = sleep_recorded(dir, db, "r", "q");
    CHECK(strcmp(live, dead[0]) != 0, "the new r's first manifest has the dead one's key %s", live);
    age_all_chunks("pq");

    /* Keep 1, no pins: the ranking alone must keep the live manifest (its SEQ is 1, the dead
     * incarnation's go up to 5). */
    CHECK(run_gc(1, false, no_pins, &r, &err), "gc: %s", err ? err->message : "");
    CHECK(has(live) && has_chunk('q'), "GC deleted the live r's manifest or its chunk");
    CHECK(has(dead[4]) && !has(dead[0]), "GC's ranking of the dead r's manifests");

    /* --delete-sprite r while r lives again: only the dead incarnation's. */
    CHECK(vm_gc_delete_sprite(st, db, "r", &n, &err) && n == 1, "delete r (live): %u %s", n,
          err ? err->message : "");
    CHECK(has(live) && !has(dead[4]), "delete-sprite on a re-used name");
    CHECK(run_gc_pins_of(db, 1, &r, &err), "gc: %s", err ? err->message : "");
    CHECK(has_chunk('q') && !has_chunk('p'), "after the dead r's manifests went");

    /* Now the live one is destroyed too. */
    CHECK(sprite_db_end(db, "r", SPRITE_DESTROYED, 0, NULL, NULL, "destroyed", &err), "destroy");
    CHECK(vm_gc_delete_sprite(st, db, "r", &n, &err) && n == 1 && !has(live), "delete r: %u", n);
    for (int i = 0; i < 5; i++)
        g_free(dead[i]);
}

/* A manager that died in a re-created sprite's first sleep: the dead incarnation's complete
 * manifest of the same SEQ is not this sleep's. */
static void check_recover_reused(const char *dir, sprite_db *db)
{
    GError *err = NULL;

    CHECK(sprite_db_create(db, "d", &err), "create d: %s", err ? err->message : "");
    g_autofree char *dead = sleep_recorded(dir, db, "d", "w");
    CHECK(sprite_db_end(db, "d", SPRITE_DESTROYED, 0, NULL, NULL, "destroyed", &err) &&
              sprite_db_create(db, "d", &err) &&
              sprite_db_end(db, "d", SPRITE_RUNNING, 0, NULL, NULL, "booted", &err),
          "re-create d: %s", err ? err->message : "");
    struct sprite_record *rec = sprite_db_get(db, "d", &err);
    g_autofree char *pending = sleep_manifest_key_incarnation("d", rec->incarnation, 1);
    sprite_record_free(rec);
    CHECK(sprite_db_begin(db, "d", SPRITE_GOING_COLD, pending, &err), "begin: %s",
          err ? err->message : "");
    g_autoptr(GPtrArray) list = sprite_db_recover(db, st, &err);
    CHECK(list, "recover: %s", err ? err->message : "");
    rec = sprite_db_get(db, "d", &err);
    CHECK(rec && rec->state == SPRITE_CRASHED && !rec->manifest_key,
          "recover took the dead d's manifest: %s %s",
          rec ? sprite_state_to_string(rec->state) : "",
          rec && rec->manifest_key ? rec->manifest_key : "");
    sprite_record_free(rec);
    CHECK(sprite_db_end(db, "d", SPRITE_DESTROYED, 0, NULL, NULL, "destroyed", &err), "destroy d");
    CHECK(vm_gc_delete_sprite(st, db, "d", NULL, &err) && !has(dead), "delete d");
}

/* Keys under vm/sprites/ and vm/templates/ that GC does not know are roots: read as manifests,
 * and a run fails before deleting anything when one is not a manifest. */
static void check_foreign_roots(const char *dir)
{
    struct vm_gc_report r;
    GError *err = NULL;
    const char *odd = "vm/sprites/x/y/z/manifest-000001.json";
    const char *odd_tpl = VM_TEMPLATE_PREFIX "odd.json";

    g_free(sleep_file(dir, "x", odd, "u", NULL));
    g_free(sleep_file(dir, "t", odd_tpl, "v", NULL));
    age_all_chunks("uv");
    CHECK(run_gc(1, false, no_pins, &r, &err), "gc: %s", err ? err->message : "");
    CHECK(has_chunk('u') && has_chunk('v') && has(odd) && has(odd_tpl) && r.foreign_roots == 2,
          "chunks of unknown keys deleted (foreign roots %llu)",
          (unsigned long long)r.foreign_roots);

    CHECK(store_put(st, "vm/sprites/junk", "junk", 4) == 0, "put junk");
    CHECK(store_delete(st, odd) == 0, "delete odd");
    CHECK(!run_gc(1, false, no_pins, &r, &err), "a run with a key that is no manifest succeeded");
    fprintf(stderr, "unknown key: %s\n", err ? err->message : "?");
    g_clear_error(&err);
    CHECK(has_chunk('u'), "a run that failed on an unknown key deleted a chunk");
    CHECK(store_delete(st, "vm/sprites/junk") == 0 && store_delete(st, odd_tpl) == 0, "cleanup");
    CHECK(run_gc(1, false, no_pins, &r, &err) && !has_chunk('u') && !has_chunk('v'),
          "once the unknown keys are gone, their chunks go: %s", err ? err->message : "");
}

/* A chunk found by HEAD with an age past RAM_CHUNK_REFRESH_AGE_S (here 1 s past, well below
 * the old 1800 s) is refreshed. */
static void check_refresh_margin(const char *dir)
{
    struct chunk_upload_stats stats;
    GError *err = NULL;
    g_autofree char *key = chunk_key('e');

    g_free(sleep_file(dir, "e1", "vm/sprites/e1/manifest-000001.json", "e", NULL));
    CHECK(store_delete(st, "vm/sprites/e1/manifest-000001.json") == 0, "delete e1");
    set_age(key, RAM_CHUNK_REFRESH_AGE_S + 60);
    g_free(sleep_file(dir, "e2", "vm/sprites/e2/manifest-000001.json", "e", &stats));
    CHECK(stats.refreshed_chunks == 1, "a chunk %d s old was not refreshed (refreshed %llu)",
          RAM_CHUNK_REFRESH_AGE_S + 60, (unsigned long long)stats.refreshed_chunks);
    struct store_stat sb;
    time_t now = time(NULL);
    CHECK(store_head(st, key, &sb) == 0 && sb.mtime >= now - 60,
          "the refreshed chunk is %lld s old", (long long)(now - sb.mtime));
    CHECK(store_delete(st, "vm/sprites/e2/manifest-000001.json") == 0, "delete e2");
    (void)err;
}

/* A grace below the safe minimum is refused unless forced (a dry run deletes nothing). */
static void check_grace_minimum(void)
{
    struct vm_gc_options o;
    struct vm_gc_report r;
    GError *err = NULL;

    vm_gc_options_init(&o);
    o.pins = no_pins;
    o.grace_s = 600;
    CHECK(!vm_gc_run(st, &o, &r, &err), "a grace of 600 s was accepted");
    fprintf(stderr, "grace 600: %s\n", err ? err->message : "?");
    g_clear_error(&err);
    o.grace_s = RAM_CHUNK_GRACE_MIN_S - 1;
    CHECK(!vm_gc_run(st, &o, &r, &err), "a grace just below the minimum was accepted");
    g_clear_error(&err);
    o.dry_run = true;
    CHECK(vm_gc_run(st, &o, &r, &err), "a dry run with grace 600: %s", err ? err->message : "");
    o.dry_run = false;
    o.force = true;
    CHECK(vm_gc_run(st, &o, &r, &err), "a forced run: %s", err ? err->message : "");
    o.force = false;
    o.grace_s = RAM_CHUNK_GRACE_MIN_S;
    CHECK(vm_gc_run(st, &o, &r, &err), "the minimum grace: %s", err ? err->message : "");
}

/* gc --state opens the database read-only and never creates one. */
static void check_readonly_open(const char *dir, const char *db_dir)
{
    GError *err = NULL;
    g_autofree char *typo = g_build_filename(dir, "no-such-state", NULL);
    g_autofree char *typo_db = g_build_filename(typo, "sprites.db", NULL);

    sprite_db *ro = sprite_db_open_readonly(typo, &err);
    CHECK(!ro && err, "a missing database opened");
    fprintf(stderr, "missing database: %s\n", err ? err->message : "?");
    g_clear_error(&err);
    CHECK(!g_file_test(typo, G_FILE_TEST_EXISTS) && !g_file_test(typo_db, G_FILE_TEST_EXISTS),
          "opening a missing database created something");
    ro = sprite_db_open_readonly(db_dir, &err);
    CHECK(ro, "read-only open: %s", err ? err->message : "");
    g_autoptr(GPtrArray) pins = g_ptr_array_new_with_free_func(g_free);
    CHECK(sprite_db_manifest_pins(ro, pins, &err), "pins read-only: %s", err ? err->message : "");
    CHECK(!sprite_db_create(ro, "w", &err), "a read-only database was written");
    g_clear_error(&err);
    sprite_db_close(ro);
}

static void check_restore(const char *dir, const char *key, const char *original)
{
    struct chunk_list ram = {0}, state = {0};
    void *text = NULL;
    size_t len = 0;
    GError *err = NULL;
    g_autofree char *back = g_build_filename(dir, "restored", NULL);

    CHECK(store_get(st, key, &text, &len) == 0, "GET %s", key);
    CHECK(sleep_manifest_parse(text, len, &ram, &state, NULL, &err), "parse %s", key);
    free(text);
    CHECK(chunk_list_restore(st, &ram, back, NULL, &err), "restore %s after gc: %s", key,
          err ? err->message : "");
    g_clear_error(&err);
    g_autofree char *a = NULL, *b = NULL;
    gsize la = 0, lb = 0;
    CHECK(g_file_get_contents(original, &a, &la, NULL) && g_file_get_contents(back, &b, &lb, NULL),
          "read back");
    CHECK(la == lb && a && b && memcmp(a, b, la) == 0, "%s restores other bytes", key);
    unlink(back);
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
}

int main(void)
{
    g_autofree char *dir = g_dir_make_tmp("wisp-vm-gc-XXXXXX", NULL);
    g_autofree char *url = NULL;
    struct vm_gc_report r;
    GError *err = NULL;

    store_dir = g_build_filename(dir, "store", NULL);
    g_mkdir_with_parents(store_dir, 0700);
    url = g_strdup_printf("file://%s", store_dir);
    if (store_open(url, NULL, &st) != 0) {
        fprintf(stderr, "open %s: %s\n", url, store_last_error());
        return 1;
    }

    g_autofree char *s1 = sleep_manifest_key("s", 1), *s2 = sleep_manifest_key("s", 2),
                    *s3 = sleep_manifest_key("s", 3), *ss1 = sleep_manifest_key("ss", 1);
    const char *tpl = VM_TEMPLATE_PREFIX "0123456789abcdef/fedcba9876543210/manifest.json";
    g_free(sleep_file(dir, "s", s1, "abc", NULL));
    g_autofree char *f2 = sleep_file(dir, "s", s2, "abd", NULL);
    g_autofree char *f3 = sleep_file(dir, "s", s3, "abg", NULL);
    g_free(sleep_file(dir, "ss", ss1, "h", NULL));
    g_free(sleep_file(dir, "template/0123456789abcdef", tpl, "af", NULL));
    g_free(sleep_file(dir, "orphan", "vm/sprites/orphan/manifest-000001.json", "o", NULL));
    CHECK(store_delete(st, "vm/sprites/orphan/manifest-000001.json") == 0, "delete orphan");
    age_all_chunks("abcdfgho");
    g_free(sleep_file(dir, "young", "vm/sprites/young/manifest-000001.json", "y", NULL));
    CHECK(store_delete(st, "vm/sprites/young/manifest-000001.json") == 0, "delete young");
    CHECK(store_put(st, RAM_CHUNK_PREFIX "not-a-chunk", "x", 1) == 0, "put foreign");
    set_age(RAM_CHUNK_PREFIX "not-a-chunk", OLD_S);

    /* Dry run, keep 1: s1 and s2 would go, with c, d and o. */
    CHECK(run_gc(1, true, NULL, &r, &err), "dry run: %s", err ? err->message : "");
    CHECK(r.dry_run && r.manifests == 4 && r.manifests_deleted == 2 && r.templates == 1 &&
              r.deleted == 3 && r.kept_young == 1 && r.foreign == 1,
          "dry run counts: manifests %llu deleted %llu templates %llu chunks deleted %llu young "
          "%llu foreign %llu",
          (unsigned long long)r.manifests, (unsigned long long)r.manifests_deleted,
          (unsigned long long)r.templates, (unsigned long long)r.deleted,
          (unsigned long long)r.kept_young, (unsigned long long)r.foreign);
    CHECK(has(s1) && has(s2) && has_chunk('c') && has_chunk('d') && has_chunk('o'),
          "the dry run deleted something");

    /* A run that deletes needs pins (a sprite database's): none given is an error. */
    CHECK(!run_gc(2, false, NULL, &r, &err), "a deleting run without pins was accepted");
    g_clear_error(&err);
    CHECK(has(s1) && has_chunk('o'), "a run without pins deleted something");

    /* Keep 2. */
    CHECK(run_gc(2, false, no_pins, &r, &err), "gc: %s", err ? err->message : "");
    CHECK(!has(s1) && has(s2) && has(s3) && has(ss1) && has(tpl), "manifests after keep 2");
    CHECK(!has_chunk('c') && !has_chunk('o'), "c or o (unreferenced, old) kept");
    CHECK(has_chunk('a') && has_chunk('b') && has_chunk('d') && has_chunk('g') && has_chunk('h'),
          "a chunk a kept manifest names was deleted");
    CHECK(has_chunk('f'), "the template's chunk was deleted (templates are roots)");
    CHECK(has_chunk('y'), "a young chunk (a sleep in progress) was deleted");
    CHECK(has(RAM_CHUNK_PREFIX "not-a-chunk"), "a foreign key was deleted");
    CHECK(r.deleted == 2 && r.manifests_deleted == 1 && r.missing == 0, "deleted %llu, %llu",
          (unsigned long long)r.deleted, (unsigned long long)r.manifests_deleted);
    check_restore(dir, s2, f2);
    check_restore(dir, s3, f3);

    /* Keep 1 with s2 pinned (a sprite woken from it, so its record names it: the pins come
     * from the sprite database, as wispd's do), then unpinned. */
    g_autofree char *db_dir = g_build_filename(dir, "db", NULL);
    sprite_db *db = sprite_db_open(db_dir, &err);
    CHECK(db && sprite_db_create(db, "s", &err) &&
              sprite_db_end(db, "s", SPRITE_COLD_ASLEEP, 0, NULL, s2, "slept", &err),
          "sprite db: %s", err ? err->message : "");
    g_autoptr(GPtrArray) db_pins = g_ptr_array_new_with_free_func(g_free);
    CHECK(sprite_db_manifest_pins(db, db_pins, &err) && db_pins->len == 1 &&
              strcmp(g_ptr_array_index(db_pins, 0), s2) == 0,
          "pins from the database: %u", db_pins->len);
    sprite_db_close(db);
    g_ptr_array_add(db_pins, g_strdup("vm/sprites/nobody/manifest-000009.json"));
    g_ptr_array_add(db_pins, NULL);
    const char *const *pins = (const char *const *)db_pins->pdata;
    CHECK(run_gc(1, false, pins, &r, &err), "gc pinned: %s", err ? err->message : "");
    CHECK(has(s2) && has_chunk('d') && r.manifests_pinned == 1 && r.pins_missing == 1,
          "a pinned manifest or its chunk was deleted (pinned %llu, missing %llu)",
          (unsigned long long)r.manifests_pinned, (unsigned long long)r.pins_missing);
    CHECK(run_gc(1, false, no_pins, &r, &err), "gc keep 1: %s", err ? err->message : "");
    CHECK(!has(s2) && !has_chunk('d') && has(s3) && has_chunk('g'), "keep 1 without the pin");
    check_restore(dir, s3, f3);

    /* A sleep that finds an old orphan by HEAD refreshes it, so a GC now keeps it. */
    g_free(sleep_file(dir, "orphan2", "vm/sprites/orphan2/manifest-000001.json", "k", NULL));
    CHECK(store_delete(st, "vm/sprites/orphan2/manifest-000001.json") == 0, "delete orphan2");
    age_all_chunks("k");
    struct chunk_upload_stats stats;
    g_free(sleep_file(dir, "s", "vm/sprites/s/manifest-000004.json", "abk", &stats));
    CHECK(stats.refreshed_chunks == 3 && stats.uploaded_chunks == 0,
          "refreshed %llu uploaded %llu (a, b and k are old and found by HEAD)",
          (unsigned long long)stats.refreshed_chunks, (unsigned long long)stats.uploaded_chunks);
    CHECK(store_delete(st, "vm/sprites/s/manifest-000004.json") == 0, "delete manifest 4");
    CHECK(run_gc(1, false, no_pins, &r, &err), "gc after refresh: %s", err ? err->message : "");
    CHECK(has_chunk('k'), "a refreshed chunk (a sleep in progress) was deleted");

    /* An unreadable root: the run fails and deletes nothing. */
    CHECK(store_put(st, "vm/sprites/s/manifest-000005.json", "{\"format\":", 10) == 0, "put bad");
    g_free(sleep_file(dir, "orphan3", "vm/sprites/orphan3/manifest-000001.json", "z", NULL));
    CHECK(store_delete(st, "vm/sprites/orphan3/manifest-000001.json") == 0, "delete orphan3");
    age_all_chunks("z");
    CHECK(!run_gc(1, false, no_pins, &r, &err), "a run with a bad root succeeded");
    fprintf(stderr, "bad root: %s\n", err ? err->message : "?");
    g_clear_error(&err);
    CHECK(has_chunk('z') && has(s3), "a failed run deleted something");

    /* A destroyed sprite: only with its database, which says s is destroyed. */
    unsigned n = 0;
    db = sprite_db_open(db_dir, &err);
    CHECK(db && sprite_db_end(db, "s", SPRITE_DESTROYED, 0, NULL, NULL, "destroyed", &err),
          "destroy s: %s", err ? err->message : "");
    CHECK(vm_gc_delete_sprite(st, db, "s", &n, &err) && n == 2, "delete s: %u, %s", n,
          err ? err->message : "");
    CHECK(!has(s3) && has(ss1), "delete s took ss's manifest or left s's");
    CHECK(!vm_gc_delete_sprite(st, db, "../vm", NULL, &err), "a name with '/' was accepted");
    g_clear_error(&err);
    CHECK(!vm_gc_delete_sprite(st, NULL, "ss", NULL, &err), "a delete without a database");
    g_clear_error(&err);

    check_names(db);
    check_reused_name(dir, db);
    check_recover_reused(dir, db);
    check_foreign_roots(dir);
    check_refresh_margin(dir);
    check_grace_minimum();
    check_readonly_open(dir, db_dir);
    sprite_db_close(db);

    store_close(st);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "rm -rf %s failed\n", dir);
    g_free(store_dir);
    return unit_check_result();
}
