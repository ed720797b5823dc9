/* crash.c (vm_crash): a QEMU killed with kill -9, and a manager restart, under TCG.
 *
 *   1. Sprite "victim" runs with its disk; sprite "sleeper" (no disk, its RAM a private mapping
 *      as a pool clone's) is put to cold sleep into a file:// store (sleep_cold_private); sprite
 * "interrupted" has a cold sleep recorded as begun but no manifest (a manager that died mid-sleep,
 * its QEMU gone).  Every transition goes through sprite_db.
 *   2. A new process (this program, --recover) opens the same state dir and recovers: victim
 *      running (its QEMU is alive and ours), sleeper cold-asleep (its manifest is complete),
 *      interrupted crashed.
 *   3. The victim writes a file and syncs (the guest's flush is acknowledged), then its QEMU gets
 *      SIGKILL: the pidfd watch must see it within 1 s and the database say crashed.
 *   4. A new VM on the same disk export reads the file back: the acknowledged flush survived.
 * The sleeper is woken too (sprite_wake_cold) and must answer READY. */
#include "crash_watch.h"
#include "sleep_db.h"
#include "sleep_fixture.h"
#include "sprite_db.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int recover_child(const char *state_dir, const char *store_url)
{
    GError *err = NULL;
    struct store *st = NULL;
    int bad = 0;

    if (store_open(store_url, NULL, &st) != 0) {
        printf("open %s: %s\n", store_url, store_last_error());
        return 1;
    }
    sprite_db *db = sprite_db_open(state_dir, &err);
    if (!db) {
        printf("open the sprite db: %s\n", err->message);
        store_close(st);
        return 1;
    }
    g_autoptr(GPtrArray) list = sprite_db_recover(db, st, &err);
    if (!list) {
        printf("recover: %s\n", err->message);
        bad = 1;
    }
    const char *want_names[] = {"interrupted", "sleeper", "victim"};
    enum sprite_state want[] = {SPRITE_CRASHED, SPRITE_COLD_ASLEEP, SPRITE_RUNNING};
    for (guint i = 0; list && i < G_N_ELEMENTS(want); i++) {
        struct sprite_record *r = i < list->len ? g_ptr_array_index(list, i) : NULL;
        printf("recovered %s: %s (pid %d, manifest %s): %s\n", r ? r->name : "(none)",
               r ? sprite_state_to_string(r->state) : "-", r ? (int)r->pid : 0,
               r && r->manifest_key ? r->manifest_key : "-", r && r->detail ? r->detail : "");
        if (!r || strcmp(r->name, want_names[i]) != 0 || r->state != want[i]) {
            printf("expected %s %s\n", want_names[i], sprite_state_to_string(want[i]));
            bad = 1;
        }
    }
    sprite_db_close(db);
    store_close(st);
    return bad;
}

static void db_ok(bool ok, GError *err, const char *what)
{
    FX_CHECK(ok, "%s: %s", what, err ? err->message : "?");
}

int main(int argc, char **argv)
{
    struct vmf_image img;
    struct vmf_disk disk;
    struct sleepf_sprite victim, sleeper;
    struct vmf_vm check;
    GError *err = NULL;
    struct store *st = NULL;
    char state_dir[700], store_dir[700], store_url[800];

    if (argc == 4 && strcmp(argv[1], "--recover") == 0)
        return recover_child(argv[2], argv[3]);

    fx_setup("vm-crash");
    vmf_image_get(&img, false);
    snprintf(state_dir, sizeof state_dir, "%s/state", fx_tmpdir());
    snprintf(store_dir, sizeof store_dir, "%s/sleep-store", fx_tmpdir());
    snprintf(store_url, sizeof store_url, "file://%s", store_dir);
    fx_mkdir(store_dir);
    FX_CHECK(store_open(store_url, NULL, &st) == 0, "open %s: %s", store_url, store_last_error());
    sprite_db *db = sprite_db_open(state_dir, &err);
    db_ok(db != NULL, err, "open the sprite db");
    vmf_disk_new(&disk, &img, "victim");

    /* 1. The victim, running. */
    db_ok(sprite_db_create(db, "victim", &err), err, "create victim");
    sleepf_boot(&victim, &img, &disk, "victim");
    db_ok(sprite_db_end(db, "victim", SPRITE_RUNNING, victim.v.vm->pid, victim.run_dir, NULL,
                        "booted", &err),
          err, "victim running");
    crash_watch *watch = crash_watch_sprite(NULL, db, "victim", victim.v.vm, &err);
    db_ok(watch != NULL, err, "watch the victim");

    /* The sleeper, cold asleep. */
    db_ok(sprite_db_create(db, "sleeper", &err), err, "create sleeper");
    /* Its RAM a private mapping, as a pool clone's: it sleeps through the RAM helper. */
    sleepf_boot_private(&sleeper, &img, NULL, "sleeper");
    db_ok(sprite_db_end(db, "sleeper", SPRITE_RUNNING, sleeper.v.vm->pid, sleeper.run_dir, NULL,
                        "booted", &err),
          err, "sleeper running");
    struct sprite_record *srec = sprite_db_get(db, "sleeper", &err);
    FX_CHECK(srec && srec->incarnation, "sleeper's record");
    g_autofree char *key = sleep_manifest_key_incarnation("sleeper", srec->incarnation, 1);
    sprite_record_free(srec);
    struct cold_sleep_opts so = {.store = st,
                                 .sprite = "sleeper",
                                 .dir = sleeper.dir,
                                 .mem_mib = 256,
                                 .private_ram_config = &sleeper.cfg,
                                 .timeout_ms = 60000};
    struct cold_sleep_result sr;
    FX_CHECK(sprite_sleep_cold(db, sleeper.v.vm, &so, &sr, &err), "cold sleep: %s",
             err ? err->message : "?");
    struct sprite_record *slept = sprite_db_get(db, "sleeper", &err);
    FX_CHECK(slept && slept->state == SPRITE_COLD_ASLEEP &&
                 g_strcmp0(slept->manifest_key, key) == 0,
             "the sleeper's record after the sleep: %s",
             slept ? sprite_state_to_string(slept->state) : err->message);
    sprite_record_free(slept);
    printf("FIGURE private_ram_cold_sleep_ms=%.0f (through the helper %.0f, store %.0f; %.2f MiB"
           " stored)\n",
           sr.total_s * 1e3, sr.migrate_s * 1e3, sr.store_s * 1e3,
           (double)(sr.ram.uploaded_bytes + sr.state.uploaded_bytes) / (1024.0 * 1024.0));
    FX_CHECK(sr.state_bytes < 1024 * 1024, "the state holds the RAM (%llu bytes)",
             (unsigned long long)sr.state_bytes);
    vmf_destroy(&sleeper.v);

    /* Interrupted mid-sleep: begun, no manifest, no QEMU. */
    db_ok(sprite_db_create(db, "interrupted", &err), err, "create interrupted");
    struct sprite_record *irec = sprite_db_get(db, "interrupted", &err);
    FX_CHECK(irec && irec->incarnation, "interrupted's record");
    g_autofree char *lost_key = sleep_manifest_key_incarnation("interrupted", irec->incarnation, 1);
    sprite_record_free(irec);
    db_ok(sprite_db_end(db, "interrupted", SPRITE_RUNNING, 0, NULL, NULL, "pretend", &err), err,
          "interrupted running");
    db_ok(sprite_db_begin(db, "interrupted", SPRITE_GOING_COLD, lost_key, &err), err,
          "interrupted going cold");

    /* 2. A manager restart: a new process on the same state dir. */
    {
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
        const char *child[] = {self, "--recover", state_dir, store_url, NULL};
        g_autofree char *out = NULL;
        int status = -1;
        FX_CHECK(self && g_spawn_sync(NULL, (char **)child, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL,
                                      NULL, &out, NULL, &status, &err),
                 "run the recovery: %s", err ? err->message : "?");
        fprintf(stderr, "%s", out ? out : "");
        FX_CHECK(g_spawn_check_wait_status(status, NULL),
                 "the restarted manager did not find the sprites as they are (above)");
    }

    /* 3. The victim syncs a file, then its QEMU is killed. */
    g_autofree char *written =
        vmf_sh_ok(&victim.v, "echo flushed-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n') >"
                             " /root/flushed && sync && cat /root/flushed");
    pid_t qemu = victim.v.vm->pid;
    double t0 = fx_now();
    FX_CHECK(kill(qemu, SIGKILL) == 0, "kill -9 %d", (int)qemu);
    while (!crash_watch_fired(watch) && fx_now() - t0 < 5) {
        if (!g_main_context_iteration(NULL, FALSE))
            fx_sleep(0.001);
    }
    double seen = fx_now() - t0;
    printf("FIGURE crash_noticed_ms=%.1f\n", seen * 1e3);
    FX_CHECK(crash_watch_fired(watch), "the kill was not noticed in 5 s");
    FX_CHECK(seen <= 1.0, "the kill was noticed after %.2f s (at most 1 s)", seen);
    struct sprite_record *r = sprite_db_get(db, "victim", &err);
    FX_CHECK(r && r->state == SPRITE_CRASHED, "victim is %s after the kill",
             r ? sprite_state_to_string(r->state) : err->message);
    fx_log("victim: %s (%s)", sprite_state_to_string(r->state), r->detail ? r->detail : "");
    sprite_record_free(r);
    crash_watch_free(watch);
    vmf_destroy(&victim.v);

    /* The operator's view: wisp-vm sprites reads the same database. */
    {
        const char *cli = fx_need_env("WISP_VM_CLI");
        const char *args[] = {cli, "sprites", "--state", state_dir, NULL};
        g_autofree char *out = NULL;
        int status = -1;
        FX_CHECK(g_spawn_sync(NULL, (char **)args, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL,
                              &out, NULL, &status, &err) &&
                     g_spawn_check_wait_status(status, NULL),
                 "wisp-vm sprites failed");
        fprintf(stderr, "%s", out);
        g_autoptr(GRegex) victim_re = g_regex_new("^victim +crashed ", G_REGEX_MULTILINE, 0, NULL);
        g_autoptr(GRegex) sleeper_re =
            g_regex_new("^sleeper +cold-asleep .*manifest-000001", G_REGEX_MULTILINE, 0, NULL);
        FX_CHECK(g_regex_match(victim_re, out, 0, NULL) && g_regex_match(sleeper_re, out, 0, NULL),
                 "wisp-vm sprites does not show the victim crashed and the sleeper asleep");
    }

    /* The sleeper (slept from private RAM) wakes from its local copy and answers. */
    {
        struct wake_opts wo = {
            .store = st, .dir = sleeper.dir, .config = &sleeper.cfg, .timeout_ms = 60000};
        struct wake_result wr;
        struct vm *vm = sprite_wake_cold(db, "sleeper", &wo, NULL, &wr, &err);
        FX_CHECK(vm, "wake the sleeper: %s", err ? err->message : "?");
        sleepf_adopt(&sleeper, vm);
        fx_log("sleeper woke in %.0f ms (%s), READY again", wr.total_s * 1e3,
               wr.from_store ? "from the store" : "from the local copy");
        vmf_destroy(&sleeper.v);
    }

    /* 4. The flushed file, read through the same export by a new VM. */
    vmf_boot(&check, &img, &disk, "check", false, "check");
    g_autofree char *read_back = vmf_sh_ok(&check, "cat /root/flushed");
    FX_CHECK(strcmp(written, read_back) == 0, "the flushed file reads '%s', was '%s'", read_back,
             written);
    vmf_shutdown(&check);
    fx_server_stop(&disk.server);
    sprite_db_close(db);
    store_close(st);
    return 0;
}
