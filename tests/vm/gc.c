/* gc.c (vm_gc): the template's RAM in the store, and garbage collection of sleep images, with
 * real VMs under TCG.  The store is radosgw when WISP_TEST_S3_ENDPOINT is set
 * (tests/s3/rgw-fixture), else a file:// directory.
 *
 *   1. A template is built and a pool of 2 clones filled.  Sprite A is claimed and put to its
 *      first cold sleep into store 1, where no template is: the figure "before".  The template is
 *      then published into store 2, sprite B claimed and put to its first cold sleep there with
 *      the template as its known set: the figure "after".  B must store less than A, and no more
 *      than half of it (an idle clone differs from its template in few pages), with fewer
 *      store requests than it has non-zero chunks (the template's are not even looked up).
 *   2. B wakes from the store (local copy deleted) twice more and sleeps after each (3 manifests,
 *      a counter service running all along).  After the grace period (4 s here), a chunk nobody
 *      names is put: a sleep in progress.
 *   3. `wisp-vm gc --dry-run` (the CLI, JSON report) counts manifest 1 and chunks to delete, and
 *      deletes nothing (the object count is unchanged).
 *   4. vm_gc_run, keep 2, pinning what the sprite database records: manifest 1 goes, every chunk
 *      the kept manifests and the template name stays, the young chunk stays, and some chunks go.
 *   5. B wakes from the store from its newest manifest (every chunk's hash checked on the way):
 *      the counter is the same process and counts on.
 *   6. B destroyed: vm_gc_delete_sprite, then a run deletes the chunks only B's manifests named. */
#include "clone.h"
#include "pool.h"
#include "sleep_db.h"
#include "sleep_fixture.h"
#include "sprite.h"
#include "template_store.h"
#include "vm_gc.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB   (1024.0 * 1024.0)
#define GRACE 4

static int count_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    (void)key;
    (void)size;
    (void)mtime;
    (*(uint64_t *)opaque)++;
    return 0;
}

static uint64_t count_objects(struct store *st, const char *prefix)
{
    uint64_t n = 0;
    FX_CHECK(store_list(st, prefix, count_one, &n) == 0, "list %s", prefix);
    return n;
}

/* wisp-vm gc with these arguments after --store URL: its exit status (stderr to the log). */
static int gc_cli_status(const char *url, const char *const *args)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autofree char *err_text = NULL;
    GError *err = NULL;
    int status = 0;

    g_ptr_array_add(argv, (gpointer)fx_need_env("WISP_VM_CLI"));
    g_ptr_array_add(argv, "gc");
    g_ptr_array_add(argv, "--store");
    g_ptr_array_add(argv, (gpointer)url);
    for (const char *const *a = args; *a; a++)
        g_ptr_array_add(argv, (gpointer)*a);
    g_ptr_array_add(argv, NULL);
    FX_CHECK(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                          NULL, &err_text, &status, &err),
             "spawn wisp-vm gc: %s", err ? err->message : "?");
    fx_log("wisp-vm gc %s...: status %d: %s", args[0], status, err_text ? err_text : "");
    return status;
}

static bool has(struct store *st, const char *key)
{
    struct store_stat sb;
    return store_head(st, key, &sb) == 0;
}

/* Every chunk the manifest names is in the store. */
static void check_chunks_of(struct store *st, const char *manifest_key)
{
    GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GError *err = NULL;
    FX_CHECK(sleep_known_from_manifest(st, manifest_key, set, &err), "read %s: %s", manifest_key,
             err ? err->message : "?");
    GHashTableIter it;
    gpointer hex;
    unsigned missing = 0;
    g_hash_table_iter_init(&it, set);
    while (g_hash_table_iter_next(&it, &hex, NULL)) {
        g_autofree char *key = g_strdup_printf("%s%s", RAM_CHUNK_PREFIX, (char *)hex);
        missing += !has(st, key);
    }
    FX_CHECK(missing == 0, "%u of the %u chunks %s names were deleted", missing,
             g_hash_table_size(set), manifest_key);
    g_hash_table_unref(set);
}

static void record_running(sprite_db *db, const char *name, struct vm *vm)
{
    GError *err = NULL;
    FX_CHECK(sprite_db_create(db, name, &err) && sprite_db_end(db, name, SPRITE_RUNNING, vm->pid,
                                                               vm->run_dir, NULL, "claimed", &err),
             "record %s: %s", name, err ? err->message : "?");
}

static void print_first_sleep(const char *which, const struct cold_sleep_result *r)
{
    uint64_t up = r->ram.uploaded_bytes + r->state.uploaded_bytes;
    printf("FIGURE clone_first_cold_sleep_%s_bytes_stored=%llu (%.2f MiB; RAM %llu chunks: %llu "
           "zero, %llu known or found, %llu new)\n",
           which, (unsigned long long)up, (double)up / MiB, (unsigned long long)r->ram.chunks,
           (unsigned long long)r->ram.zero_chunks, (unsigned long long)r->ram.known_chunks,
           (unsigned long long)r->ram.uploaded_chunks);
}

/* A claimed clone as the sleep fixture's sprite (counter, adopt after a wake). */
static void as_sleepf(struct sleepf_sprite *s, struct sprite *sp, const char *name)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->dir, sizeof s->dir, "%s/sprite-%s", fx_tmpdir(), name);
    snprintf(s->run_dir, sizeof s->run_dir, "%s", sp->vm->run_dir);
    fx_mkdir(s->dir);
    s->v.vm = sp->vm;
    s->v.agent = sp->agent;
}

/* Sprite's first cold sleep: its RAM is the pool's private mapping of the template's. */
static void first_sleep(sprite_db *db, struct store *st, struct sleepf_sprite *s,
                        const struct vm_template *tpl, const char *template_key,
                        struct cold_sleep_result *out)
{
    GError *err = NULL;
    struct vm_config clone_cfg;
    vm_template_clone_config(tpl, s->run_dir, &clone_cfg);
    struct cold_sleep_opts so = {
        .store = st,
        .sprite = s->name,
        .dir = s->dir,
        .mem_mib = tpl->mem_mib,
        .agent = s->v.agent,
        .private_ram_config = &clone_cfg,
        .timeout_ms = 60000,
        .template_manifest_key = template_key,
    };
    FX_CHECK(sprite_sleep_cold(db, s->v.vm, &so, out, &err), "first cold sleep of %s: %s", s->name,
             err ? err->message : "?");
}

static void delete_local_copy(const char *dir)
{
    g_autofree char *ram = sleep_ram_path(dir), *state = sleep_state_path(dir),
                    *manifest = sleep_manifest_path(dir);
    unlink(ram);
    unlink(state);
    unlink(manifest);
}

static void wake_from_store(sprite_db *db, struct store *st, struct sleepf_sprite *s,
                            const struct vm_config *cfg)
{
    GError *err = NULL;
    struct wake_result wr;
    delete_local_copy(s->dir);
    struct wake_opts wo = {.store = st, .dir = s->dir, .config = cfg, .timeout_ms = 60000};
    struct vm *vm = sprite_wake_cold(db, s->name, &wo, NULL, &wr, &err);
    FX_CHECK(vm, "wake %s from the store: %s", s->name, err ? err->message : "?");
    FX_CHECK(wr.from_store, "the wake did not use the store");
    sleepf_adopt(s, vm);
}

static void check_counter(struct sleepf_sprite *s, long pid_before, long n_before, const char *when)
{
    long pid = 0, n = 0, n2 = 0;
    sleepf_counter_read(s, &pid, &n);
    fx_sleep(0.5);
    sleepf_counter_read(s, &pid, &n2);
    FX_CHECK(pid == pid_before && n >= n_before && n2 > n,
             "%s: counter pid %ld at %ld then %ld (before: pid %ld at %ld)", when, pid, n, n2,
             pid_before, n_before);
}

static gint64 json_int(JsonObject *o, const char *name)
{
    return json_object_get_int_member_with_default(o, name, -1);
}

int main(void)
{
    struct vmf_image img;
    struct vmf_disk disk;
    struct store *st1 = NULL, *st2 = NULL;
    GError *err = NULL;
    char url1[1200], url2[1200];
    bool s3 = fx_s3_available();

    if (s3) {
        char p1[128], p2[128];
        snprintf(p1, sizeof p1, "vm-gc-%d-%lld-a", (int)getpid(), (long long)g_get_real_time());
        snprintf(p2, sizeof p2, "vm-gc-%d-%lld-b", (int)getpid(), (long long)g_get_real_time());
        fx_s3_url(url1, sizeof url1, p1, NULL);
        fx_s3_url(url2, sizeof url2, p2, NULL);
        /* Opened before fx_setup registers its exit cleanup (see sleep.c). */
        FX_CHECK(store_open(url1, NULL, &st1) == 0 && store_open(url2, NULL, &st2) == 0,
                 "open the stores: %s", store_last_error());
        fx_setup("vm-gc");
        fx_store_cleanup_register(url1);
        fx_store_cleanup_register(url2);
    } else {
        fx_setup("vm-gc");
        snprintf(url1, sizeof url1, "file://%s/store1", fx_tmpdir());
        snprintf(url2, sizeof url2, "file://%s/store2", fx_tmpdir());
        fx_mkdir(url1 + 7);
        fx_mkdir(url2 + 7);
        FX_CHECK(store_open(url1, NULL, &st1) == 0 && store_open(url2, NULL, &st2) == 0,
                 "open the stores: %s", store_last_error());
    }
    fx_log("stores: %s and %s", store_describe(st1), store_describe(st2));

    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "sprite-a");
    const char *clone_b[] = {
        fx_need_env("WISP_TEST_CLI"), "disk", "clone", "base", "sprite-b", "--control",
        disk.server.control,          NULL};
    FX_CHECK(fx_run(clone_b) == 0, "wisp disk clone base sprite-b");

    /* ---- 1. template, pool, first sleeps before and after the template is in the store ---- */
    g_autofree char *image_dir = g_path_get_dirname(img.kernel);
    g_autofree char *key = vm_template_image_key(image_dir, &err);
    FX_CHECK(key, "image key: %s", err ? err->message : "?");
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    struct vm_template_config tc = {
        .state_dir = state, .key = key, .kernel = img.kernel, .initrd = img.initrd};
    struct vm_template *tpl = vm_template_ensure(&tc, &err);
    FX_CHECK(tpl, "template: %s", err ? err->message : "?");
    g_autofree char *runs = g_strdup_printf("%s/runs", fx_tmpdir());
    struct vm_pool_config pc = {.tpl = tpl, .size = 2, .run_root = runs};
    vm_pool *pool = vm_pool_new(&pc, &err);
    FX_CHECK(pool, "pool: %s", err ? err->message : "?");
    FX_CHECK(vm_pool_wait_full(pool, 120000), "the pool did not fill");
    sprite_db *db = sprite_db_open(state, &err);
    FX_CHECK(db, "sprite db: %s", err ? err->message : "?");

    struct sprite_claim_request ra = {.nbd_socket = disk.server.sock,
                                      .export_name = "sprite-a",
                                      .hostname = "sprite-a",
                                      .take_timeout_ms = 60000};
    struct sprite *spa = sprite_claim(pool, &ra, NULL, &err);
    FX_CHECK(spa, "claim A: %s", err ? err->message : "?");
    struct sprite_claim_request rb = ra;
    rb.export_name = rb.hostname = "sprite-b";
    struct sprite *spb = sprite_claim(pool, &rb, NULL, &err);
    FX_CHECK(spb, "claim B: %s", err ? err->message : "?");
    struct sleepf_sprite a, b;
    as_sleepf(&a, spa, "sprite-a");
    as_sleepf(&b, spb, "sprite-b");
    record_running(db, a.name, a.v.vm);
    record_running(db, b.name, b.v.vm);
    sleepf_counter_start(&b);
    fx_sleep(3); /* both idle a little, as a sprite that goes to sleep is */

    struct cold_sleep_result before, after;
    first_sleep(db, st1, &a, tpl, NULL, &before);
    print_first_sleep("without_template", &before);
    struct chunk_upload_stats ts;
    double t0 = fx_now();
    g_autofree char *tkey = vm_template_store_publish(st2, tpl, &ts, &err);
    FX_CHECK(tkey, "publish the template: %s", err ? err->message : "?");
    printf("FIGURE template_publish_ms=%.0f (%.2f MiB in %llu new chunks of %llu; %s)\n",
           (fx_now() - t0) * 1e3, (double)ts.uploaded_bytes / MiB,
           (unsigned long long)ts.uploaded_chunks, (unsigned long long)ts.chunks, tkey);
    g_autofree char *tkey_again = vm_template_store_publish(st2, tpl, &ts, &err);
    FX_CHECK(tkey_again && strcmp(tkey, tkey_again) == 0 && ts.uploaded_chunks == 0,
             "a second publish did not find the first: %s", err ? err->message : tkey_again);
    long pid0, n0;
    sleepf_counter_read(&b, &pid0, &n0);
    struct store_stats req0, req1;
    store_get_stats(st2, &req0);
    first_sleep(db, st2, &b, tpl, tkey, &after);
    store_get_stats(st2, &req1);
    print_first_sleep("with_template", &after);
    /* The template's chunks were the known set: only the others were even looked up (a HEAD
     * each, and a PUT for the new ones), not every non-zero chunk. */
    uint64_t nonzero = after.ram.chunks - after.ram.zero_chunks;
    fx_log("store requests of B's first sleep: %llu for %llu non-zero RAM chunks",
           (unsigned long long)(req1.requests - req0.requests), (unsigned long long)nonzero);
    FX_CHECK(req1.requests - req0.requests < nonzero,
             "B's first sleep made %llu store requests for %llu non-zero chunks: the template's "
             "chunks were looked up",
             (unsigned long long)(req1.requests - req0.requests), (unsigned long long)nonzero);
    uint64_t bytes_before = before.ram.uploaded_bytes + before.state.uploaded_bytes;
    uint64_t bytes_after = after.ram.uploaded_bytes + after.state.uploaded_bytes;
    FX_CHECK(after.ram.known_chunks > 0, "the template's chunks were not the known set");
    FX_CHECK(bytes_after * 2 <= bytes_before,
             "the first sleep with the template stored %.2f MiB, without %.2f MiB (not under half)",
             bytes_after / MiB, bytes_before / MiB);
    /* Both QEMUs have exited (cold sleep); the sprites' structs and run dirs go.  B wakes with
     * a run dir of its own, not a pool member's. */
    a.v.vm = b.v.vm = NULL;
    a.v.agent = b.v.agent = NULL;
    sprite_destroy(spa, false, NULL, NULL, NULL);
    sprite_destroy(spb, false, NULL, NULL, NULL);
    snprintf(b.run_dir, sizeof b.run_dir, "%s/run-b", fx_tmpdir());

    /* ---- 2. two more sleeps of B, through wakes from the store ---- */
    struct vm_config wake_cfg = {.kernel = img.kernel,
                                 .initrd = img.initrd,
                                 .mem_mib = tpl->mem_mib,
                                 .accel = tpl->accel,
                                 .run_dir = b.run_dir,
                                 .disk = VM_DISK_NBD,
                                 .nbd_socket = disk.server.sock,
                                 .nbd_export = "sprite-b"};
    for (int i = 2; i <= 3; i++) {
        vmf_destroy(&b.v);
        wake_from_store(db, st2, &b, &wake_cfg);
        check_counter(&b, pid0, n0, "after a wake");
        sleepf_counter_read(&b, &pid0, &n0);
        struct cold_sleep_opts so = {.store = st2,
                                     .sprite = b.name,
                                     .dir = b.dir,
                                     .mem_mib = tpl->mem_mib,
                                     .agent = b.v.agent,
                                     .timeout_ms = 60000,
                                     .template_manifest_key = tkey};
        struct cold_sleep_result r;
        FX_CHECK(sprite_sleep_cold(db, b.v.vm, &so, &r, &err), "sleep %d: %s", i,
                 err ? err->message : "?");
    }
    struct sprite_record *brec = sprite_db_get(db, b.name, &err);
    FX_CHECK(brec && brec->incarnation, "B's record: %s", err ? err->message : "no incarnation");
    g_autofree char *m1 = sleep_manifest_key_incarnation(b.name, brec->incarnation, 1),
                    *m2 = sleep_manifest_key_incarnation(b.name, brec->incarnation, 2),
                    *m3 = sleep_manifest_key_incarnation(b.name, brec->incarnation, 3);
    sprite_record_free(brec);
    fx_sleep(GRACE + 1.5);
    /* A sleep in progress: its chunk is in the store, its manifest not yet. */
    const char *young =
        RAM_CHUNK_PREFIX "00000000000000000000000000000000000000000000000000000000000000aa";
    FX_CHECK(store_put(st2, young, "young", 5) == 0, "put the young chunk");

    /* ---- 3. the CLI's dry run ---- */
    uint64_t objects = count_objects(st2, "vm/");
    char grace[16];
    snprintf(grace, sizeof grace, "%ds", GRACE);
    const char *gc_argv[] = {fx_need_env("WISP_VM_CLI"),
                             "gc",
                             "--store",
                             url2,
                             "--keep",
                             "2",
                             "--grace",
                             grace,
                             "--dry-run",
                             "--state",
                             state,
                             NULL};
    g_autofree char *out = NULL;
    int status = 0;
    FX_CHECK(g_spawn_sync(NULL, (char **)gc_argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL,
                          &out, NULL, &status, &err) &&
                 g_spawn_check_wait_status(status, NULL),
             "wisp-vm gc --dry-run failed: %s", out ? out : "");
    fx_log("wisp-vm gc --dry-run: %s", out);
    g_autoptr(JsonParser) p = json_parser_new();
    FX_CHECK(json_parser_load_from_data(p, out, -1, NULL) &&
                 JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)),
             "the report is not a JSON object");
    JsonObject *rep = json_node_get_object(json_parser_get_root(p));
    FX_CHECK(json_object_get_boolean_member(rep, "dry_run") &&
                 json_int(rep, "manifests_deleted") == 1 && json_int(rep, "deleted") > 0 &&
                 json_int(rep, "kept_young") >= 1 && json_int(rep, "templates") == 1 &&
                 json_int(rep, "missing") == 0,
             "the dry run's report: %s", out);
    FX_CHECK(count_objects(st2, "vm/") == objects && has(st2, m1), "the dry run deleted something");

    /* Refused, with nothing deleted: a deleting run without the database, a --state with no
     * database (not created), a grace below the safe minimum. */
    g_autofree char *typo = g_strdup_printf("%s/no-such-state", fx_tmpdir());
    const char *no_state[] = {"--grace", grace, "--force", NULL};
    const char *bad_state[] = {"--state", typo, "--grace", grace, "--force", NULL};
    const char *short_grace[] = {"--state", state, "--grace", "10m", NULL};
    FX_CHECK(gc_cli_status(url2, no_state) != 0, "wisp-vm gc without --state deleted");
    FX_CHECK(gc_cli_status(url2, bad_state) != 0, "wisp-vm gc with a mistyped --state ran");
    FX_CHECK(!g_file_test(typo, G_FILE_TEST_EXISTS), "wisp-vm gc created %s", typo);
    FX_CHECK(gc_cli_status(url2, short_grace) != 0, "wisp-vm gc --grace 10m was accepted");
    FX_CHECK(count_objects(st2, "vm/") == objects && has(st2, m1),
             "a refused run deleted something");

    /* ---- 4. GC ---- */
    struct sprite_record *rec = sprite_db_get(db, b.name, &err);
    FX_CHECK(rec && g_strcmp0(rec->manifest_key, m3) == 0, "B's record names %s",
             rec && rec->manifest_key ? rec->manifest_key : "nothing");
    const char *pins[] = {rec->manifest_key, NULL};
    struct vm_gc_options o;
    vm_gc_options_init(&o);
    o.grace_s = GRACE;
    o.force = true; /* a grace of seconds: nothing sleeps meanwhile */
    o.pins = pins;
    struct vm_gc_report r;
    FX_CHECK(vm_gc_run(st2, &o, &r, &err), "gc: %s", err ? err->message : "?");
    g_autofree char *json = vm_gc_report_to_json(&r);
    fx_log("gc: %s", json);
    printf("FIGURE vm_gc_deleted=%llu chunks (%.2f MiB) and %llu manifest in %.2f s; %llu "
           "referenced, %llu kept young\n",
           (unsigned long long)r.deleted, (double)r.deleted_bytes / MiB,
           (unsigned long long)r.manifests_deleted, r.seconds, (unsigned long long)r.referenced,
           (unsigned long long)r.kept_young);
    sprite_record_free(rec);
    FX_CHECK(!has(st2, m1) && has(st2, m2) && has(st2, m3) && has(st2, tkey),
             "manifests after gc (keep 2)");
    FX_CHECK(has(st2, young), "the young chunk (a sleep in progress) was deleted");
    FX_CHECK(r.deleted > 0, "nothing was deleted (manifest 1's own chunks are garbage)");
    check_chunks_of(st2, m2);
    check_chunks_of(st2, m3);
    check_chunks_of(st2, tkey);

    /* ---- 5. wake from the newest manifest ---- */
    vmf_destroy(&b.v);
    wake_from_store(db, st2, &b, &wake_cfg);
    check_counter(&b, pid0, n0, "after gc, a wake from the store");

    /* ---- 6. B destroyed ---- */
    vmf_destroy(&b.v);
    unsigned n = 0;
    FX_CHECK(sprite_db_end(db, b.name, SPRITE_DESTROYED, 0, NULL, NULL, "destroyed", &err),
             "destroy B: %s", err ? err->message : "");
    FX_CHECK(vm_gc_delete_sprite(st2, db, b.name, &n, &err) && n == 2,
             "delete B's manifests: %u %s", n, err ? err->message : "");
    const char *const no_pins[] = {NULL};
    o.pins = no_pins;
    FX_CHECK(vm_gc_run(st2, &o, &r, &err), "gc after destroy: %s", err ? err->message : "?");
    FX_CHECK(r.deleted > 0 && r.manifests == 0, "gc after destroy: %llu deleted, %llu manifests",
             (unsigned long long)r.deleted, (unsigned long long)r.manifests);
    check_chunks_of(st2, tkey);
    fx_log("after B was destroyed: %llu chunks deleted, %llu left (the template's and young)",
           (unsigned long long)r.deleted, (unsigned long long)(r.objects - r.deleted));

    vm_pool_free(pool);
    vm_template_free(tpl);
    sprite_db_close(db);
    fx_server_stop(&disk.server);
    store_close(st1);
    store_close(st2);
    return 0;
}
