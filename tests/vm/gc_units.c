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
    CHECK(vm_gc_delete_sprite(st, "orphan", NULL, &err), "delete orphan: %s",
          err ? err->message : "");
    age_all_chunks("abcdfgho");
    g_free(sleep_file(dir, "young", "vm/sprites/young/manifest-000001.json", "y", NULL));
    CHECK(vm_gc_delete_sprite(st, "young", NULL, &err), "delete young");
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

    /* Keep 2. */
    CHECK(run_gc(2, false, NULL, &r, &err), "gc: %s", err ? err->message : "");
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
    CHECK(run_gc(1, false, NULL, &r, &err), "gc keep 1: %s", err ? err->message : "");
    CHECK(!has(s2) && !has_chunk('d') && has(s3) && has_chunk('g'), "keep 1 without the pin");
    check_restore(dir, s3, f3);

    /* A sleep that finds an old orphan by HEAD refreshes it, so a GC now keeps it. */
    g_free(sleep_file(dir, "orphan2", "vm/sprites/orphan2/manifest-000001.json", "k", NULL));
    CHECK(vm_gc_delete_sprite(st, "orphan2", NULL, &err), "delete orphan2");
    age_all_chunks("k");
    struct chunk_upload_stats stats;
    g_free(sleep_file(dir, "s", "vm/sprites/s/manifest-000004.json", "abk", &stats));
    CHECK(stats.refreshed_chunks == 3 && stats.uploaded_chunks == 0,
          "refreshed %llu uploaded %llu (a, b and k are old and found by HEAD)",
          (unsigned long long)stats.refreshed_chunks, (unsigned long long)stats.uploaded_chunks);
    CHECK(store_delete(st, "vm/sprites/s/manifest-000004.json") == 0, "delete manifest 4");
    CHECK(run_gc(1, false, NULL, &r, &err), "gc after refresh: %s", err ? err->message : "");
    CHECK(has_chunk('k'), "a refreshed chunk (a sleep in progress) was deleted");

    /* An unreadable root: the run fails and deletes nothing. */
    CHECK(store_put(st, "vm/sprites/s/manifest-000005.json", "{\"format\":", 10) == 0, "put bad");
    g_free(sleep_file(dir, "orphan3", "vm/sprites/orphan3/manifest-000001.json", "z", NULL));
    CHECK(vm_gc_delete_sprite(st, "orphan3", NULL, &err), "delete orphan3");
    age_all_chunks("z");
    CHECK(!run_gc(1, false, NULL, &r, &err), "a run with a bad root succeeded");
    fprintf(stderr, "bad root: %s\n", err ? err->message : "?");
    g_clear_error(&err);
    CHECK(has_chunk('z') && has(s3), "a failed run deleted something");

    /* A destroyed sprite. */
    unsigned n = 0;
    CHECK(vm_gc_delete_sprite(st, "s", &n, &err) && n == 2, "delete s: %u, %s", n,
          err ? err->message : "");
    CHECK(!has(s3) && has(ss1), "delete s took ss's manifest or left s's");
    CHECK(!vm_gc_delete_sprite(st, "../vm", NULL, &err), "a name with '/' was accepted");
    g_clear_error(&err);

    store_close(st);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "rm -rf %s failed\n", dir);
    g_free(store_dir);
    return unit_check_result();
}
