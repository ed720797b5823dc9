/* sleep.c (vm_sleep): cold sleep to the real radosgw and wake, under TCG.
 *
 *   1. A sprite (RAM in its own file, disk over NBD from the Wisp plugin) runs a counter service
 *      and writes a file of random bytes; then it is put to cold sleep into radosgw.
 *   2. The local copy is deleted; the sprite wakes from the store into another directory, as on
 *      another host.  The counter is the same
 *      process and counts on from where it was; the file reads back with the same checksum.
 *   3. Idle for a few seconds, then a second cold sleep: few new chunks (target: at most 16 MiB
 *      for an idle 256 MiB sprite); it wakes from the local copy this time.
 *   4. Warm sleep and wake (stop/cont): the counter goes on.
 *   5. A chunk of the third sleep overwritten in the store: the wake refuses it (the sprite stays
 *      cold-asleep); put right, the wake works.
 * Sleeps and wakes go through sleep_db.h, and the sprite database must say what happened.
 * FIGURE lines report bytes stored per sleep and the time of each step.
 * Skips (77) without WISP_TEST_S3_ENDPOINT (tests/s3/rgw-fixture). */
#include "sleep_db.h"
#include "sleep_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024.0 * 1024.0)

static void check_counter(struct sleepf_sprite *s, long pid_before, long n_before, const char *when)
{
    long pid = 0, n = 0, n2 = 0;

    sleepf_counter_read(s, &pid, &n);
    fx_sleep(0.5);
    sleepf_counter_read(s, &pid, &n2);
    fx_log("%s: counter pid %ld at %ld then %ld (before: pid %ld at %ld)", when, pid, n, n2,
           pid_before, n_before);
    FX_CHECK(pid == pid_before, "%s: the counter is another process (%ld, was %ld)", when, pid,
             pid_before);
    FX_CHECK(n >= n_before, "%s: the counter went back (%ld < %ld)", when, n, n_before);
    FX_CHECK(n2 > n, "%s: the counter does not count (%ld then %ld)", when, n, n2);
}

static void expect_record(sprite_db *db, const char *name, enum sprite_state state,
                          const char *manifest)
{
    GError *err = NULL;
    struct sprite_record *r = sprite_db_get(db, name, &err);
    FX_CHECK(r, "record of %s: %s", name, err ? err->message : "?");
    FX_CHECK(r->state == state && g_strcmp0(r->manifest_key, manifest) == 0,
             "%s is %s with manifest %s; expected %s with %s", name,
             sprite_state_to_string(r->state), r->manifest_key ? r->manifest_key : "none",
             sprite_state_to_string(state), manifest);
    sprite_record_free(r);
}

/* The store key of the manifest's first non-zero RAM chunk. */
static char *first_ram_chunk_key(struct store *st, const char *manifest_key)
{
    struct chunk_list ram = {0}, state = {0};
    void *text = NULL;
    size_t len = 0;
    GError *err = NULL;
    char *key = NULL;

    FX_CHECK(store_get(st, manifest_key, &text, &len) == 0, "GET %s", manifest_key);
    FX_CHECK(sleep_manifest_parse(text, len, &ram, &state, NULL, &err), "parse: %s",
             err ? err->message : "?");
    free(text);
    for (guint i = 0; i < ram.hashes->len && !key; i++) {
        const char *h = g_ptr_array_index(ram.hashes, i);
        if (*h)
            key = g_strdup_printf("%s%s", RAM_CHUNK_PREFIX, h);
    }
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
    FX_CHECK(key, "no non-zero chunk in %s", manifest_key);
    return key;
}

static void delete_local_copy(const char *dir)
{
    g_autofree char *ram = sleep_ram_path(dir), *state = sleep_state_path(dir),
                    *manifest = sleep_manifest_path(dir);
    FX_CHECK(unlink(ram) == 0 && unlink(state) == 0 && unlink(manifest) == 0,
             "delete the local copy in %s", dir);
}

static void print_sleep(const char *which, const struct cold_sleep_result *r)
{
    uint64_t up = r->ram.uploaded_bytes + r->state.uploaded_bytes;
    printf("FIGURE cold_sleep_%s_bytes_stored=%llu (%.2f MiB; RAM %llu chunks: %llu zero, %llu "
           "already stored, %llu new; state %llu bytes)\n",
           which, (unsigned long long)up, (double)up / MiB, (unsigned long long)r->ram.chunks,
           (unsigned long long)r->ram.zero_chunks, (unsigned long long)r->ram.known_chunks,
           (unsigned long long)r->ram.uploaded_chunks, (unsigned long long)r->state_bytes);
    printf("FIGURE cold_sleep_%s_ms=%.0f (sync %.0f, stop %.0f, migrate %.0f, quit %.0f, store "
           "%.0f)\n",
           which, r->total_s * 1e3, r->sync_s * 1e3, r->stop_s * 1e3, r->migrate_s * 1e3,
           r->quit_s * 1e3, r->store_s * 1e3);
}

static void print_wake(const char *which, const struct wake_result *r)
{
    printf("FIGURE cold_wake_%s_ms=%.0f (fetch %.0f ms, %.2f MiB; launch %.0f, migrate %.0f, "
           "cont %.1f)\n",
           which, r->total_s * 1e3, r->fetch_s * 1e3, (double)r->fetched_bytes / MiB,
           r->launch_s * 1e3, r->migrate_s * 1e3, r->cont_s * 1e3);
}

int main(void)
{
    struct vmf_image img;
    struct vmf_disk disk;
    struct sleepf_sprite s;
    struct store *st = NULL;
    GError *err = NULL;
    char url[1200], prefix[128];
    long pid0, n0;

    if (!fx_s3_available())
        fx_skip("WISP_TEST_S3_ENDPOINT is not set (start tests/s3/rgw-fixture)");
    snprintf(prefix, sizeof prefix, "vm-sleep-%d-%lld", (int)getpid(),
             (long long)g_get_real_time());
    fx_s3_url(url, sizeof url, prefix, NULL);
    /* Opened before fx_setup registers its exit cleanup, so that the cleanup (which deletes the
     * prefix) runs before OpenSSL's own exit handler tears the library down. */
    if (store_open(url, NULL, &st) != 0) {
        fprintf(stderr, "open %s: %s\n", url, store_last_error());
        return 1;
    }
    fx_setup("vm-sleep");
    fx_store_cleanup_register(url);

    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "sleeper");
    sleepf_boot(&s, &img, &disk, "sleeper");
    sleepf_counter_start(&s);
    g_autofree char *sum = vmf_sh_ok(&s.v, "head -c 4194304 /dev/urandom > /root/before-sleep &&"
                                           " md5sum /root/before-sleep | cut -d' ' -f1");

    /* Every transition through the sprite database, as the manager runs them (sleep_db.h). */
    g_autofree char *state_dir = g_strdup_printf("%s/state", fx_tmpdir());
    sprite_db *db = sprite_db_open(state_dir, &err);
    FX_CHECK(db, "sprite db: %s", err ? err->message : "?");
    FX_CHECK(
        sprite_db_create(db, s.name, &err) &&
            sprite_db_end(db, s.name, SPRITE_RUNNING, s.v.vm->pid, s.run_dir, NULL, "booted", &err),
        "record the sprite: %s", err ? err->message : "?");

    /* 1. Cold sleep to radosgw. */
    /* The keys sprite_sleep_cold writes: under the record's incarnation (sleep.h). */
    struct sprite_record *srec = sprite_db_get(db, s.name, &err);
    FX_CHECK(srec && srec->incarnation, "the record: %s", err ? err->message : "no incarnation");
    g_autofree char *incarnation = g_strdup(srec->incarnation);
    sprite_record_free(srec);
    g_autofree char *key1 = sleep_manifest_key_incarnation(s.name, incarnation, 1);
    g_autofree char *key2 = sleep_manifest_key_incarnation(s.name, incarnation, 2);
    struct cold_sleep_opts so = {
        .store = st,
        .sprite = s.name,
        .dir = s.dir,
        .mem_mib = 256,
        .agent = s.v.agent,
        .timeout_ms = 60000,
    };
    struct cold_sleep_result first, repeat;
    sleepf_counter_read(&s, &pid0, &n0);
    FX_CHECK(sprite_sleep_cold(db, s.v.vm, &so, &first, &err), "cold sleep: %s",
             err ? err->message : "?");
    FX_CHECK(s.v.vm->pid == 0, "QEMU still runs after the cold sleep");
    vmf_destroy(&s.v);
    print_sleep("first", &first);
    expect_record(db, s.name, SPRITE_COLD_ASLEEP, key1);

    /* 2. The local copy deleted, wake from the store, as another host would: into a new
     * directory, through a store connection of its own (the manifest and chunks are all). */
    delete_local_copy(s.dir);
    FX_CHECK(rmdir(s.dir) == 0, "rmdir %s", s.dir);
    snprintf(s.dir, sizeof s.dir, "%s/other-host/sprite-%s", fx_tmpdir(), s.name);
    struct store *st2 = NULL;
    FX_CHECK(store_open(url, NULL, &st2) == 0, "open %s again: %s", url, store_last_error());
    struct wake_opts wo = {.store = st2, .dir = s.dir, .config = &s.cfg, .timeout_ms = 60000};
    struct wake_result w1;
    struct vm *vm = sprite_wake_cold(db, s.name, &wo, NULL, &w1, &err);
    store_close(st2);
    wo.store = st;
    FX_CHECK(vm, "wake from the store: %s", err ? err->message : "?");
    FX_CHECK(w1.from_store, "the wake did not use the store");
    print_wake("from_store", &w1);
    expect_record(db, s.name, SPRITE_RUNNING, key1);
    sleepf_adopt(&s, vm);
    check_counter(&s, pid0, n0, "after the wake from the store");
    g_autofree char *sum_after = vmf_sh_ok(&s.v, "md5sum /root/before-sleep | cut -d' ' -f1");
    FX_CHECK(strcmp(sum, sum_after) == 0, "the file changed over sleep: %s then %s", sum,
             sum_after);
    /* A running sprite cannot be woken. */
    FX_CHECK(!sprite_wake_cold(db, s.name, &wo, NULL, &w1, &err), "a running sprite was woken");
    g_clear_error(&err);

    /* 3. Idle, then a repeat sleep: the pages that did not change are stored already (the first
     * manifest's chunks are the known set, so only changed chunks are even looked up). */
    fx_sleep(3);
    so.agent = s.v.agent;
    sleepf_counter_read(&s, &pid0, &n0);
    FX_CHECK(sprite_sleep_cold(db, s.v.vm, &so, &repeat, &err), "repeat cold sleep: %s",
             err ? err->message : "?");
    vmf_destroy(&s.v);
    print_sleep("repeat", &repeat);
    expect_record(db, s.name, SPRITE_COLD_ASLEEP, key2);
    FX_CHECK(repeat.ram.known_chunks > 0, "the known set was not used");
    uint64_t repeat_bytes = repeat.ram.uploaded_bytes + repeat.state.uploaded_bytes;
    uint64_t first_bytes = first.ram.uploaded_bytes + first.state.uploaded_bytes;
    FX_CHECK(repeat_bytes < first_bytes, "the repeat sleep stored as much as the first");
    FX_CHECK(repeat_bytes <= 16ull << 20,
             "the repeat sleep of an idle sprite stored %.2f MiB"
             " (target: at most 16 MiB)",
             (double)repeat_bytes / MiB);

    struct wake_result w2;
    vm = sprite_wake_cold(db, s.name, &wo, NULL, &w2, &err);
    FX_CHECK(vm, "wake from the local copy: %s", err ? err->message : "?");
    FX_CHECK(!w2.from_store, "the wake fetched from the store with a local copy there");
    print_wake("from_local", &w2);
    expect_record(db, s.name, SPRITE_RUNNING, key2);
    sleepf_adopt(&s, vm);
    check_counter(&s, pid0, n0, "after the wake from the local copy");

    /* 4. Warm sleep and wake. */
    sleepf_counter_read(&s, &pid0, &n0);
    double t0 = fx_now();
    FX_CHECK(sleep_warm(s.v.vm, 10000, &err), "warm sleep: %s", err ? err->message : "?");
    fx_sleep(0.5);
    double t1 = fx_now();
    FX_CHECK(wake_warm(s.v.vm, 10000, &err), "warm wake: %s", err ? err->message : "?");
    printf("FIGURE warm_wake_ms=%.2f (stop %.2f ms)\n", (fx_now() - t1) * 1e3,
           (t1 - 0.5 - t0) * 1e3);
    check_counter(&s, pid0, n0, "after the warm wake");

    /* 5. A corrupt chunk in the store: the wake refuses it and the sprite stays asleep; with
     * the chunk put right, it wakes. */
    struct cold_sleep_result third;
    so.agent = s.v.agent;
    sleepf_counter_read(&s, &pid0, &n0);
    FX_CHECK(sprite_sleep_cold(db, s.v.vm, &so, &third, &err), "third cold sleep: %s",
             err ? err->message : "?");
    vmf_destroy(&s.v);
    delete_local_copy(s.dir);
    g_autofree char *key3 = sleep_manifest_key_incarnation(s.name, incarnation, 3);
    g_autofree char *chunk_key = first_ram_chunk_key(st, key3);
    void *good = NULL;
    size_t good_len = 0;
    FX_CHECK(store_get(st, chunk_key, &good, &good_len) == 0, "GET %s", chunk_key);
    char *bad = g_memdup2(good, good_len);
    bad[good_len / 2] ^= 0x55;
    FX_CHECK(store_put(st, chunk_key, bad, good_len) == 0, "overwrite %s", chunk_key);
    g_free(bad);
    struct wake_result w3;
    vm = sprite_wake_cold(db, s.name, &wo, NULL, &w3, &err);
    FX_CHECK(!vm, "the wake used a corrupt chunk");
    fx_log("wake with a corrupt chunk: %s", err ? err->message : "?");
    FX_CHECK(err && strstr(err->message, "refused"), "unexpected error: %s",
             err ? err->message : "none");
    g_clear_error(&err);
    expect_record(db, s.name, SPRITE_COLD_ASLEEP, key3);
    FX_CHECK(store_put(st, chunk_key, good, good_len) == 0, "put %s back", chunk_key);
    free(good);
    vm = sprite_wake_cold(db, s.name, &wo, NULL, &w3, &err);
    FX_CHECK(vm, "wake with the chunk put right: %s", err ? err->message : "?");
    sleepf_adopt(&s, vm);
    check_counter(&s, pid0, n0, "after the wake with the chunk put right");

    vmf_shutdown(&s.v);
    fx_server_stop(&disk.server);
    sprite_db_close(db);
    store_close(st);
    return 0;
}
