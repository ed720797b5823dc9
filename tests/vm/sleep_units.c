/* sleep_units.c (vm_sleep_units, unit suite): the parts of cold sleep that need no QEMU, on a
 * file:// store in a temporary directory.
 *   - ram_chunks: a file with zero, repeated and random chunks and a short tail is stored, stored
 *     again (nothing new), and restored byte for byte; a chunk object whose content does not
 *     match its name makes the restore fail, and the corrupt data is never written to the file.
 *   - the manifest parser refuses chunk names that are not hashes.
 *   - sprite_db: transitions, reopening, and recovery of each case (a live pid that is not QEMU,
 *     a finished and an unfinished cold sleep, an interrupted wake, a missing manifest). */
#include "ram_chunks.h"
#include "sleep.h"
#include "sprite_db.h"
#include "unit_check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK 4096u

static void test_chunks(const char *dir, struct store *st)
{
    g_autofree char *src = g_build_filename(dir, "ram", NULL);
    g_autofree char *dst = g_build_filename(dir, "ram.back", NULL);
    size_t len = 16 * CHUNK + 100;
    uint8_t *data = g_malloc0(len);
    GError *err = NULL;
    struct chunk_list cl = {0}, again = {0};
    struct chunk_upload_stats s1, s2;

    /* chunks 0-3 zero, 4 and 9 equal, 5-8 and the tail random, 10-15 zero */
    for (size_t i = 4 * CHUNK; i < 9 * CHUNK; i++)
        data[i] = (uint8_t)g_random_int();
    memcpy(data + 9 * CHUNK, data + 4 * CHUNK, CHUNK);
    for (size_t i = 16 * CHUNK; i < len; i++)
        data[i] = (uint8_t)(i * 7 + 1);
    CHECK(g_file_set_contents(src, (char *)data, (gssize)len, &err), "write: %s",
          err ? err->message : "");

    CHECK(chunk_list_store(st, src, CHUNK, NULL, &cl, &s1, &err), "store: %s",
          err ? err->message : "");
    g_clear_error(&err);
    CHECK(s1.chunks == 17 && s1.zero_chunks == 10, "chunks %llu zero %llu",
          (unsigned long long)s1.chunks, (unsigned long long)s1.zero_chunks);
    CHECK(s1.uploaded_chunks + s1.known_chunks == 7 && s1.uploaded_chunks >= 6,
          "uploaded %llu known %llu", (unsigned long long)s1.uploaded_chunks,
          (unsigned long long)s1.known_chunks);

    /* Again, with the first list as the known set: nothing is uploaded. */
    GHashTable *known = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    chunk_list_add_to_set(&cl, known);
    CHECK(chunk_list_store(st, src, CHUNK, known, &again, &s2, &err), "store again: %s",
          err ? err->message : "");
    g_clear_error(&err);
    CHECK(s2.uploaded_chunks == 0 && s2.uploaded_bytes == 0, "uploaded %llu again",
          (unsigned long long)s2.uploaded_chunks);
    g_hash_table_unref(known);
    chunk_list_clear(&again);

    /* Restore byte for byte. */
    uint64_t fetched = 0;
    CHECK(chunk_list_restore(st, &cl, dst, &fetched, &err), "restore: %s", err ? err->message : "");
    g_clear_error(&err);
    g_autofree char *back = NULL;
    gsize back_len = 0;
    CHECK(g_file_get_contents(dst, &back, &back_len, NULL) && back_len == len &&
              memcmp(back, data, len) == 0,
          "the restored file differs (%zu bytes)", (size_t)back_len);
    /* Chunk 9 repeats chunk 4: fetched once. */
    CHECK(fetched == 5 * CHUNK + 100, "fetched %llu", (unsigned long long)fetched);

    /* A chunk object with the wrong content: refused, and nothing written. */
    unlink(dst);
    const char *victim = g_ptr_array_index(cl.hashes, 5);
    g_autofree char *key = g_strdup_printf("%s%s", RAM_CHUNK_PREFIX, victim);
    uint8_t *bad = g_malloc(CHUNK);
    memcpy(bad, data + 5 * CHUNK, CHUNK);
    bad[100] ^= 1;
    CHECK(store_put(st, key, bad, CHUNK) == 0, "overwrite %s", key);
    CHECK(!chunk_list_restore(st, &cl, dst, NULL, &err), "a corrupt chunk was accepted");
    fprintf(stderr, "corrupt chunk: %s\n", err ? err->message : "");
    CHECK(err && strstr(err->message, "refused"), "error: %s", err ? err->message : "");
    g_clear_error(&err);
    CHECK(access(dst, F_OK) != 0, "the file exists after a failed restore");
    g_autofree char *tmp = g_strdup_printf("%s.restoring", dst);
    CHECK(access(tmp, F_OK) != 0, "the temporary file was left behind");
    g_free(bad);
    chunk_list_clear(&cl);
    g_free(data);
}

static void test_manifest_parse(void)
{
    struct chunk_list ram = {0}, state = {0};
    GError *err = NULL;
    const char *evil =
        "{\"format\": \"wisp-sleep-1\", \"mem_mib\": 1,"
        " \"ram\": {\"bytes\": 4096, \"chunk_bytes\": 4096, \"chunks\": [\"../../x\"]},"
        " \"state\": {\"bytes\": 0, \"chunk_bytes\": 4096, \"chunks\": []}}";
    const char *short_list =
        "{\"format\": \"wisp-sleep-1\","
        " \"ram\": {\"bytes\": 8192, \"chunk_bytes\": 4096, \"chunks\": [\"\"]},"
        " \"state\": {\"bytes\": 0, \"chunk_bytes\": 4096, \"chunks\": []}}";
    const char *good =
        "{\"format\": \"wisp-sleep-1\", \"mem_mib\": 7,"
        " \"ram\": {\"bytes\": 8192, \"chunk_bytes\": 4096, \"chunks\": [\"\", \"\"]},"
        " \"state\": {\"bytes\": 0, \"chunk_bytes\": 4096, \"chunks\": []}}";
    unsigned mem = 0;

    CHECK(!sleep_manifest_parse(evil, strlen(evil), &ram, &state, NULL, &err), "evil accepted");
    g_clear_error(&err);
    CHECK(!sleep_manifest_parse(short_list, strlen(short_list), &ram, &state, NULL, &err),
          "a list that does not cover the file was accepted");
    g_clear_error(&err);
    CHECK(!sleep_manifest_parse("{\"ram\": ", 8, &ram, &state, NULL, &err), "truncated accepted");
    g_clear_error(&err);
    CHECK(sleep_manifest_parse(good, strlen(good), &ram, &state, &mem, &err), "good: %s",
          err ? err->message : "");
    g_clear_error(&err);
    CHECK(mem == 7 && ram.hashes && ram.hashes->len == 2, "mem %u", mem);
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
}

static enum sprite_state state_of(GPtrArray *list, const char *name)
{
    for (guint i = 0; list && i < list->len; i++) {
        struct sprite_record *r = g_ptr_array_index(list, i);
        if (strcmp(r->name, name) == 0)
            return r->state;
    }
    return (enum sprite_state) - 1;
}

static void test_db(const char *dir, struct store *st)
{
    g_autofree char *sdir = g_build_filename(dir, "state", NULL);
    GError *err = NULL;
    sprite_db *db = sprite_db_open(sdir, &err);

    CHECK(db, "open: %s", err ? err->message : "");
    if (!db)
        return;
    CHECK(sprite_db_create(db, "a", &err), "create: %s", err ? err->message : "");
    g_clear_error(&err);
    CHECK(!sprite_db_create(db, "a", &err), "created twice");
    g_clear_error(&err);
    CHECK(!sprite_db_begin(db, "nobody", SPRITE_WAKING, NULL, &err), "a missing sprite began");
    g_clear_error(&err);
    CHECK(!sprite_db_end(db, "a", SPRITE_WAKING, 0, NULL, NULL, NULL, &err),
          "ended in a transitional state");
    g_clear_error(&err);

    /* a: a finished cold sleep whose manifest is in the store. */
    g_autofree char *ka = sleep_manifest_key("a", 1);
    CHECK(sprite_db_end(db, "a", SPRITE_RUNNING, 0, "/run/a", NULL, NULL, &err) &&
              sprite_db_begin(db, "a", SPRITE_GOING_COLD, ka, &err) &&
              sprite_db_end(db, "a", SPRITE_COLD_ASLEEP, 0, NULL, ka, "slept", &err),
          "a: %s", err ? err->message : "");
    g_clear_error(&err);
    CHECK(store_put(st, ka, "{}", 2) == 0, "put %s", ka);
    /* b: "running" with a live pid that is not QEMU (this test). */
    CHECK(sprite_db_create(db, "b", &err) &&
              sprite_db_end(db, "b", SPRITE_RUNNING, getpid(), "/run/b", NULL, NULL, &err),
          "b: %s", err ? err->message : "");
    g_clear_error(&err);
    /* c: the manager died after the manifest was written, before recording it. */
    g_autofree char *kc = sleep_manifest_key("c", 1);
    CHECK(sprite_db_create(db, "c", &err) &&
              sprite_db_end(db, "c", SPRITE_RUNNING, 0, NULL, NULL, NULL, &err) &&
              sprite_db_begin(db, "c", SPRITE_GOING_COLD, kc, &err),
          "c: %s", err ? err->message : "");
    g_clear_error(&err);
    CHECK(store_put(st, kc, "{}", 2) == 0, "put %s", kc);
    /* d: died mid-wake; its manifest is still there. */
    g_autofree char *kd = sleep_manifest_key("d", 1);
    CHECK(sprite_db_create(db, "d", &err) &&
              sprite_db_end(db, "d", SPRITE_COLD_ASLEEP, 0, NULL, kd, NULL, &err) &&
              sprite_db_begin(db, "d", SPRITE_WAKING, NULL, &err),
          "d: %s", err ? err->message : "");
    g_clear_error(&err);
    CHECK(store_put(st, kd, "{}", 2) == 0, "put %s", kd);
    /* e: asleep, but its manifest is gone from the store. */
    g_autofree char *ke = sleep_manifest_key("e", 1);
    CHECK(sprite_db_create(db, "e", &err) &&
              sprite_db_end(db, "e", SPRITE_COLD_ASLEEP, 0, NULL, ke, NULL, &err),
          "e: %s", err ? err->message : "");
    g_clear_error(&err);
    /* f: destroyed, not listed. */
    CHECK(sprite_db_create(db, "f", &err) &&
              sprite_db_end(db, "f", SPRITE_DESTROYED, 0, NULL, NULL, NULL, &err),
          "f: %s", err ? err->message : "");
    g_clear_error(&err);

    /* Reopened, as a new manager would. */
    sprite_db_close(db);
    db = sprite_db_open(sdir, &err);
    CHECK(db, "reopen: %s", err ? err->message : "");
    if (!db)
        return;
    GPtrArray *list = sprite_db_recover(db, st, &err);
    CHECK(list, "recover: %s", err ? err->message : "");
    g_clear_error(&err);
    CHECK(list && list->len == 5, "%u sprites listed", list ? list->len : 0);
    CHECK(state_of(list, "a") == SPRITE_COLD_ASLEEP, "a");
    CHECK(state_of(list, "b") == SPRITE_CRASHED, "b: a pid that is not QEMU counted as running");
    CHECK(state_of(list, "c") == SPRITE_COLD_ASLEEP, "c");
    CHECK(state_of(list, "d") == SPRITE_COLD_ASLEEP, "d");
    CHECK(state_of(list, "e") == SPRITE_CRASHED, "e: asleep without a manifest");
    if (list)
        g_ptr_array_unref(list);
    struct sprite_record *c = sprite_db_get(db, "c", &err);
    CHECK(c && g_strcmp0(c->manifest_key, kc) == 0 && c->sleep_seq == 1,
          "c's manifest was not taken (%s)", c && c->manifest_key ? c->manifest_key : "none");
    sprite_record_free(c);
    /* A destroyed name can be created again. */
    CHECK(sprite_db_create(db, "f", &err), "recreate f: %s", err ? err->message : "");
    g_clear_error(&err);
    sprite_db_close(db);
}

int main(void)
{
    g_autofree char *dir = g_dir_make_tmp("wisp-sleep-units-XXXXXX", NULL);
    g_autofree char *store_dir = g_build_filename(dir, "store", NULL);
    g_autofree char *url = g_strdup_printf("file://%s", store_dir);
    struct store *st = NULL;

    if (!dir || g_mkdir_with_parents(store_dir, 0700) < 0 || store_open(url, NULL, &st) != 0) {
        fprintf(stderr, "setup: %s\n", store_last_error());
        return 1;
    }
    test_chunks(dir, st);
    test_manifest_parse();
    test_db(dir, st);
    store_close(st);
    g_autofree char *rm = g_strdup_printf("rm -rf '%s'", dir);
    if (system(rm) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return unit_check_result();
}
