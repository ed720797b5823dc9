/* pool.c: template, pool, claim, warm sleep and wake (issue 6), on one template and one pool.
 *
 *   template   built once (boot to READY, snapshot with RAM in a file), then found again
 *              by its key without a boot
 *   pool       two members restored in the background; refill time per member; waiting
 *              members' QEMU threads at nice 10, a claimed sprite's at 0
 *   claim      sprite A and sprite B, each step's latency, and A's first exec's output
 *   isolation  a file on A's disk, a file in A's tmpfs and a process in A are absent in B;
 *              boot_id and the first bytes of /dev/urandom differ (the claim's SEED)
 *   warm       A's counter service: stopped while A sleeps, running again after the wake
 *   failure    a claim of an export that does not exist fails at its "disk" step, and the
 *              member's QEMU is gone
 *   destroy    both sprites, the disk-delete callback called for the one asked
 *   CLI        `wisp-vm claim ... -- CMD` reuses the template, claims and runs CMD
 *   rebuild    a manifest naming another key (a changed image) makes ensure build again */
#include "vm_fixture.h"

#include "clone.h"
#include "pool.h"
#include "sprite.h"
#include "template.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *sprite_sh(struct sprite *s, const char *script)
{
    struct vmf_vm v = {.vm = s->vm, .agent = s->agent};
    return vmf_sh_ok(&v, script);
}

static int sprite_sh_status(struct sprite *s, const char *script)
{
    struct vmf_vm v = {.vm = s->vm, .agent = s->agent};
    return vmf_sh(&v, NULL, script);
}

static void log_claim(const char *who, const struct sprite_claim_times *t)
{
    fx_log("claim %s: %.1f ms = take %.2f + disk (blockdev-add, reopen, resize) %.1f + cont %.1f "
           "+ connect/READY %.1f + seed %.1f + attach %.1f",
           who, t->total_ms, t->take_ms, t->disk_ms, t->cont_ms, t->connect_ms, t->seed_ms,
           t->attach_ms);
}

static struct sprite *claim(vm_pool *pool, const struct vmf_disk *d, const char *export_name,
                            const char *hostname, struct sprite_claim_times *t)
{
    struct sprite_claim_request req = {
        .nbd_socket = d->server.sock,
        .export_name = export_name,
        .hostname = hostname,
        .take_timeout_ms = 60000,
    };
    GError *err = NULL;
    struct sprite *s = sprite_claim(pool, &req, t, &err);

    FX_CHECK(s, "claim %s: %s", export_name, err ? err->message : "?");
    return s;
}

/* Whether any process's command line mentions path (QEMU's carry their run directory). */
static bool process_mentions(const char *path)
{
    GDir *d = g_dir_open("/proc", 0, NULL);
    const char *name;
    bool found = false;

    FX_CHECK(d, "open /proc");
    while (!found && (name = g_dir_read_name(d))) {
        g_autofree char *file = g_strdup_printf("/proc/%s/cmdline", name);
        g_autofree char *text = NULL;
        gsize len = 0;
        if (!g_ascii_isdigit(name[0]) || !g_file_get_contents(file, &text, &len, NULL))
            continue;
        for (gsize i = 0; i < len; i++)
            if (text[i] == '\0')
                text[i] = ' ';
        found = strstr(text, path) != NULL;
    }
    g_dir_close(d);
    return found;
}

/* The claim without its seed step, by hand, to show what SEED prevents: restored clones that
 * are not re-seeded.  Returns 16 bytes of the clone's /dev/urandom in hex. */
static char *unseeded_urandom(vm_pool *pool, const struct vmf_disk *d, const char *export_name)
{
    GError *err = NULL;
    struct vm *vm = vm_pool_take(pool, 60000, &err);
    FX_CHECK(vm, "take: %s", err ? err->message : "?");
    FX_CHECK(vm_attach_nbd(vm, d->server.sock, export_name, 10000, &err), "attach: %s",
             err ? err->message : "?");
    JsonNode *ret = qmp_client_execute(vm->qmp, "cont", NULL, 5000, &err);
    FX_CHECK(ret, "cont: %s", err ? err->message : "?");
    json_node_unref(ret);
    struct vmf_vm v = {.vm = vm};
    v.agent = agent_client_connect(vm->ctl_path, 5000, &err);
    FX_CHECK(v.agent && agent_client_wait_ready(v.agent, 10000, NULL, &err), "READY: %s",
             err ? err->message : "?");
    FX_CHECK(agent_client_attach(v.agent, NULL, export_name, NULL, 60000, &err), "attach: %s",
             err ? err->message : "?");
    char *hex = vmf_sh_ok(&v, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'");
    vmf_destroy(&v);
    return hex;
}

/* The pid of the process whose command line mentions path, or 0. */
static pid_t process_with(const char *path)
{
    GDir *d = g_dir_open("/proc", 0, NULL);
    const char *name;
    pid_t pid = 0;

    FX_CHECK(d, "open /proc");
    while (!pid && (name = g_dir_read_name(d))) {
        g_autofree char *file = g_strdup_printf("/proc/%s/cmdline", name);
        g_autofree char *text = NULL;
        gsize len = 0;
        if (!g_ascii_isdigit(name[0]) || !g_file_get_contents(file, &text, &len, NULL))
            continue;
        for (gsize i = 0; i < len; i++)
            if (text[i] == '\0')
                text[i] = ' ';
        if (strstr(text, path))
            pid = (pid_t)atoi(name);
    }
    g_dir_close(d);
    return pid;
}

/* The nice values of all of pid's threads: *lo and *hi. */
static void thread_nice_range(pid_t pid, int *lo, int *hi)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/task", (int)pid);
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *tid;

    FX_CHECK(d, "open %s", dir);
    *lo = 100;
    *hi = -100;
    while ((tid = g_dir_read_name(d))) {
        g_autofree char *file = g_strdup_printf("%s/%s/stat", dir, tid);
        g_autofree char *text = NULL;
        if (!g_file_get_contents(file, &text, NULL, NULL))
            continue;
        /* After the command's ")": state is field 3, nice field 19. */
        const char *p = strrchr(text, ')');
        FX_CHECK(p, "%s: %s", file, text);
        g_auto(GStrv) f = g_strsplit(p + 2, " ", 0);
        FX_CHECK(g_strv_length(f) > 17, "%s: %s", file, text);
        int nice = atoi(f[16]);
        *lo = MIN(*lo, nice);
        *hi = MAX(*hi, nice);
    }
    g_dir_close(d);
}

static unsigned deleted_calls;
static bool record_delete(const char *export_name, void *opaque, GError **error)
{
    FX_CHECK(strcmp(export_name, (const char *)opaque) == 0, "delete of %s", export_name);
    deleted_calls++;
    return true;
}

static long counter(struct sprite *s)
{
    g_autofree char *v = sprite_sh(s, "cat /tmp/counter");
    return strtol(v, NULL, 10);
}

/* The running service's pid in the guest (0: not running). */
static uint32_t service_pid(struct sprite *s, const char *name)
{
    GError *err = NULL;
    struct wisp_msg *m = agent_client_service_list(s->agent, 30000, &err);
    uint32_t pid = 0;

    FX_CHECK(m, "service list: %s", err ? err->message : "?");
    for (uint32_t i = 0; i < m->u.service_list.count; i++)
        if (strcmp(m->u.service_list.services[i].name, name) == 0 &&
            m->u.service_list.services[i].state == WISP_SERVICE_RUNNING)
            pid = m->u.service_list.services[i].pid;
    wisp_msg_free(m);
    g_free(m);
    return pid;
}

int main(void)
{
    struct vmf_image img;
    struct vmf_disk disk;
    GError *err = NULL;

    fx_setup("vm-pool");
    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "sprite-a");
    const char *clone_b[] = {
        fx_need_env("WISP_TEST_CLI"), "disk", "clone", "base", "sprite-b", "--control",
        disk.server.control,          NULL};
    FX_CHECK(fx_run(clone_b) == 0, "wisp disk clone base sprite-b");

    /* ---- template ---- */
    g_autofree char *image_dir = g_path_get_dirname(img.kernel);
    g_autofree char *key = vm_template_image_key(image_dir, &err);
    FX_CHECK(key, "image key: %s", err ? err->message : "?");
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    struct vm_template_config tc = {.state_dir = state,
                                    .key = key,
                                    .kernel = img.kernel,
                                    .initrd = img.initrd,
                                    .sandbox = true};
    double t0 = fx_now();
    struct vm_template *tpl = vm_template_ensure(&tc, &err);
    FX_CHECK(tpl, "template: %s", err ? err->message : "?");
    FX_CHECK(tpl->built_now, "a fresh state directory had a template");
    fx_log("template %.12s: built in %.2f s (READY %.0f ms after launch, snapshot %.1f ms, %s)",
           key, fx_now() - t0, tpl->boot_ms, tpl->snapshot_ms, vm_accel_to_string(tpl->accel));
    vm_template_free(tpl);
    t0 = fx_now();
    tpl = vm_template_ensure(&tc, &err);
    FX_CHECK(tpl && !tpl->built_now, "template not reused: %s", err ? err->message : "rebuilt");
    fx_log("template found again by its key in %.1f ms (no boot)", (fx_now() - t0) * 1000);

    /* ---- pool ---- */
    g_autofree char *runs = g_strdup_printf("%s/runs", fx_tmpdir());
    struct vm_pool_config pc = {.tpl = tpl, .size = 2, .run_root = runs};
    vm_pool *pool = vm_pool_new(&pc, &err);
    FX_CHECK(pool, "pool: %s", err ? err->message : "?");
    t0 = fx_now();
    FX_CHECK(vm_pool_wait_full(pool, 60000), "the pool did not fill in 60 s");
    struct vm_pool_stats st;
    vm_pool_get_stats(pool, &st);
    fx_log("pool of 2 full in %.2f s; restore per member %.1f ms (mean of %llu), failures %llu",
           fx_now() - t0, st.total_restore_ms / (double)st.restored,
           (unsigned long long)st.restored, (unsigned long long)st.failed);
    FX_CHECK(st.failed == 0, "refill failures: %s", st.last_error);

    /* ---- claim: A, first exec ---- */
    struct sprite_claim_times ta, tb;
    t0 = fx_now();
    struct sprite *a = claim(pool, &disk, "sprite-a", "sprite-a", &ta);
    g_autofree char *hello = sprite_sh(a, "echo hello from $(hostname)");
    double first_exec_ms = (fx_now() - t0) * 1000;
    log_claim("A", &ta);
    fx_log("claim to first exec output: %.1f ms ('%s')", first_exec_ms, hello);
    FX_CHECK(strcmp(hello, "hello from sprite-a") == 0, "first exec said '%s'", hello);
    struct sprite *b = claim(pool, &disk, "sprite-b", "sprite-b", &tb);
    log_claim("B", &tb);

    /* ---- refills run niced, claimed sprites do not ---- */
    FX_CHECK(vm_pool_wait_full(pool, 60000), "the pool did not refill in 60 s");
    g_autofree char *m2 = g_strdup_printf("%s/m2/", runs);
    pid_t waiting = process_with(m2);
    int lo, hi, alo, ahi;
    FX_CHECK(waiting > 0, "no QEMU for the waiting member %s", m2);
    thread_nice_range(waiting, &lo, &hi);
    thread_nice_range(a->vm->pid, &alo, &ahi);
    fx_log("nice: a waiting member's QEMU threads %d..%d, claimed A's %d..%d", lo, hi, alo, ahi);
    FX_CHECK(lo == 10 && hi == 10, "a waiting member runs at nice %d..%d, not 10", lo, hi);
    FX_CHECK(alo == 0 && ahi == 0, "claimed A runs at nice %d..%d, not 0", alo, ahi);

    /* ---- independence ---- */
    g_free(sprite_sh(a, "echo only-a > /root/only-a && echo mem-a > /dev/shm/only-a && sync"));
    GError *serr = NULL;
    const char *sleeper[] = {"sleep", "4242", NULL};
    FX_CHECK(agent_client_service_start(a->agent, "sleeper", sleeper, NULL, NULL,
                                        WISP_RESTART_NEVER, 0, 30000, &serr),
             "service: %s", serr ? serr->message : "?");
    const char *count_procs =
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
        " | grep -c '^sleep 424[2]' || true";
    g_autofree char *in_a = sprite_sh(a, count_procs);
    g_autofree char *in_b = sprite_sh(b, count_procs);
    FX_CHECK(strcmp(in_a, "1") == 0 && strcmp(in_b, "0") == 0, "sleep 4242: A %s, B %s", in_a,
             in_b);
    FX_CHECK(sprite_sh_status(b, "test ! -e /root/only-a") == 0, "A's disk file is in B");
    FX_CHECK(sprite_sh_status(b, "test ! -e /dev/shm/only-a") == 0, "A's tmpfs file is in B");
    g_autofree char *boot_a = sprite_sh(a, "cat /proc/sys/kernel/random/boot_id");
    g_autofree char *boot_b = sprite_sh(b, "cat /proc/sys/kernel/random/boot_id");
    g_autofree char *rnd_a = sprite_sh(a, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'");
    g_autofree char *rnd_b = sprite_sh(b, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'");
    fx_log("boot_id A %s, B %s; urandom A %s, B %s", boot_a, boot_b, rnd_a, rnd_b);
    FX_CHECK(strlen(boot_a) == 36 && strcmp(boot_a, boot_b) != 0, "boot_id: %s / %s", boot_a,
             boot_b);
    FX_CHECK(strcmp(rnd_a, rnd_b) != 0, "the same random bytes in two clones");
    g_autofree char *host_b = sprite_sh(b, "hostname");
    FX_CHECK(strcmp(host_b, "sprite-b") == 0, "B's hostname: %s", host_b);
    fx_log("A and B: disks, tmpfs, processes, boot_id and RNG independent");

    /* ---- warm sleep and wake ---- */
    const char *count_argv[] = {
        "/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done",
        NULL};
    FX_CHECK(agent_client_service_start(a->agent, "counter", count_argv, NULL, NULL,
                                        WISP_RESTART_NEVER, 0, 30000, &serr),
             "counter: %s", serr ? serr->message : "?");
    fx_sleep(1.0);
    uint32_t pid1 = service_pid(a, "counter");
    long c1 = counter(a);
    double sleep_ms, wake_ms;
    FX_CHECK(sprite_sleep_warm(a, &sleep_ms, &err), "warm sleep: %s", err ? err->message : "?");
    FX_CHECK(!sprite_sleep_warm(a, NULL, &err), "a second warm sleep was allowed");
    fx_log("refused as it should be: %s", err->message);
    g_clear_error(&err);
    fx_sleep(1.5);
    FX_CHECK(sprite_wake_warm(a, &wake_ms, &err), "warm wake: %s", err ? err->message : "?");
    long c2 = counter(a);
    fx_sleep(0.8);
    long c3 = counter(a);
    uint32_t pid2 = service_pid(a, "counter");
    fx_log("warm sleep %.2f ms, wake %.2f ms; counter %ld before sleep, %ld right after the "
           "1.5 s sleep, %ld 0.8 s later; counter pid %u then %u",
           sleep_ms, wake_ms, c1, c2, c3, pid1, pid2);
    FX_CHECK(c1 > 0 && c2 - c1 <= 5, "the counter ran while asleep: %ld -> %ld", c1, c2);
    FX_CHECK(c3 > c2, "the counter did not run after the wake: %ld -> %ld", c2, c3);
    FX_CHECK(pid1 && pid1 == pid2, "the counter process changed: %u -> %u", pid1, pid2);

    /* ---- a failed claim destroys its member ---- */
    struct sprite_claim_request bad = {
        .nbd_socket = disk.server.sock, .export_name = "no-such-disk", .take_timeout_ms = 60000};
    struct sprite_claim_times tf;
    FX_CHECK(!sprite_claim(pool, &bad, &tf, &err), "a claim of a missing export succeeded");
    fx_log("failed claim: %s", err->message);
    FX_CHECK(g_str_has_prefix(err->message, "claim: disk: "), "the error does not name the step");
    g_clear_error(&err);
    /* Members leave the pool in order: m0 (A), m1 (B), m2 (the failed claim). */
    g_autofree char *failed_run = g_strdup_printf("%s/m2/", runs);
    FX_CHECK(!process_mentions(failed_run), "the failed claim's QEMU (%s) still runs", failed_run);
    FX_CHECK(!g_file_test(failed_run, G_FILE_TEST_EXISTS), "%s is still there", failed_run);

    /* ---- the control: what SEED prevents ---- */
    const char *clone_u1[] = {
        fx_need_env("WISP_TEST_CLI"), "disk", "clone", "base", "unseeded-1", "--control",
        disk.server.control,          NULL};
    const char *clone_u2[] = {
        fx_need_env("WISP_TEST_CLI"), "disk", "clone", "base", "unseeded-2", "--control",
        disk.server.control,          NULL};
    FX_CHECK(fx_run(clone_u1) == 0 && fx_run(clone_u2) == 0, "wisp disk clone unseeded-N");
    g_autofree char *u1 = unseeded_urandom(pool, &disk, "unseeded-1");
    g_autofree char *u2 = unseeded_urandom(pool, &disk, "unseeded-2");
    fx_log("without SEED, two clones' first /dev/urandom bytes: %s and %s (%s)", u1, u2,
           strcmp(u1, u2) == 0 ? "identical: the bug SEED fixes" : "different");

    /* ---- the pool stops; the sprites claimed from it go on ---- */
    vm_pool_get_stats(pool, &st);
    fx_log("pool: %llu restored, %llu taken, %llu failed, %u ready",
           (unsigned long long)st.restored, (unsigned long long)st.taken,
           (unsigned long long)st.failed, st.ready);
    /* Its refill thread forked A and B: a parent-death signal would kill them with it. */
    vm_pool_free(pool);
    g_usleep(200 * 1000);
    FX_CHECK(vm_is_running(a->vm) && vm_is_running(b->vm),
             "stopping the pool killed sprites claimed from it");
    g_autofree char *alive = sprite_sh(a, "echo alive");
    FX_CHECK(strstr(alive, "alive") != NULL, "A after the pool stopped: %s", alive);
    fx_log("the pool stopped; A and B still run");

    /* ---- destroy ---- */
    FX_CHECK(sprite_destroy(a, true, record_delete, "sprite-a", &err), "destroy A: %s",
             err ? err->message : "?");
    FX_CHECK(sprite_destroy(b, false, record_delete, "sprite-b", &err), "destroy B: %s",
             err ? err->message : "?");
    FX_CHECK(deleted_calls == 1, "disk delete called %u times", deleted_calls);
    vm_template_free(tpl);

    /* ---- the CLI, on the same template ---- */
    const char *clone_c[] = {
        fx_need_env("WISP_TEST_CLI"), "disk", "clone", "base", "sprite-c", "--control",
        disk.server.control,          NULL};
    FX_CHECK(fx_run(clone_c) == 0, "wisp disk clone base sprite-c");
    g_autofree char *nbd = g_strdup_printf("%s:sprite-c", disk.server.sock);
    g_autofree char *cli_runs = g_strdup_printf("%s/cli-runs", fx_tmpdir());
    const char *cli[] = {fx_need_env("WISP_VM_CLI"),
                         "claim",
                         "--image-dir",
                         image_dir,
                         "--state-dir",
                         state,
                         "--run-root",
                         cli_runs,
                         "--nbd",
                         nbd,
                         "--hostname",
                         "sprite-c",
                         "--",
                         "hostname",
                         NULL};
    g_autofree char *cli_out = NULL, *cli_err = NULL;
    int cli_status = -1;
    t0 = fx_now();
    FX_CHECK(g_spawn_sync(NULL, (char **)cli, NULL, G_SPAWN_DEFAULT, NULL, NULL, &cli_out, &cli_err,
                          &cli_status, &err),
             "spawn wisp-vm: %s", err ? err->message : "?");
    fx_log("wisp-vm claim (%.2f s): %s%s", fx_now() - t0, cli_out, cli_err);
    FX_CHECK(g_spawn_check_wait_status(cli_status, NULL), "wisp-vm claim failed: %s", cli_err);
    FX_CHECK(strstr(cli_out, ": reused (") && strstr(cli_out, "claimed sprite-c") &&
                 g_str_has_suffix(cli_out, "\nsprite-c\n"),
             "wisp-vm claim printed: %s", cli_out);

    /* ---- a changed image: a manifest naming another key is not reused ---- */
    g_autofree char *manifest = g_strdup_printf("%s/templates/%.16s/manifest.json", state, key);
    g_autofree char *text = NULL;
    FX_CHECK(g_file_get_contents(manifest, &text, NULL, NULL), "read %s", manifest);
    g_autofree char *needle = g_strdup_printf("\"%s\"", key);
    char *at = strstr(text, needle);
    FX_CHECK(at, "%s does not name the key: %s", manifest, text);
    at[1] = at[1] == '0' ? '1' : '0'; /* another image's hash, same directory */
    FX_CHECK(g_file_set_contents(manifest, text, -1, NULL), "write %s", manifest);
    t0 = fx_now();
    struct vm_template *again = vm_template_ensure(&tc, &err);
    FX_CHECK(again, "template rebuild: %s", err ? err->message : "?");
    FX_CHECK(again->built_now, "a template whose manifest names another key was reused");
    fx_log("a manifest with another key: template rebuilt in %.2f s", fx_now() - t0);
    vm_template_free(again);

    fx_server_stop(&disk.server);
    return 0;
}
