/* pool_bench.c: vm-pool-bench, the figures of `scripts/bench vm` (not a test).
 *
 *   vm-pool-bench [CLAIMS]   (default 20)
 *
 * One template (built, as on a host's first start), a pool of 2, then CLAIMS rounds of: wait
 * until the pool is full again (every claim finds a warm member, as the headline figure
 * assumes), claim a fresh disk clone, run `echo` in it, warm sleep, warm wake, `echo` again,
 * destroy.  Prints one line per figure, "BENCH key=value ...", for scripts/bench to take the
 * median and p99 of:
 *   BENCH template boot_ms= snapshot_ms=
 *   BENCH refill restore_ms=       per member restored (launch to migration completed)
 *   BENCH claim total_ms= first_exec_ms= take_ms= disk_ms= cont_ms= connect_ms= seed_ms= attach_ms=
 *   BENCH warm sleep_ms= wake_ms= wake_exec_ms=
 * The image and servers come from the VM tests' fixture (environment as in tests/vm). */
#include "vm_fixture.h"

#include "pool.h"
#include "sprite.h"
#include "template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double exec_echo_ms(struct sprite *s)
{
    struct vmf_vm v = {.vm = s->vm, .agent = s->agent};
    double t0 = fx_now();
    g_autofree char *out = vmf_sh_ok(&v, "echo ok");

    FX_CHECK(strcmp(out, "ok") == 0, "echo said '%s'", out);
    return (fx_now() - t0) * 1000;
}

int main(int argc, char **argv)
{
    int claims = argc > 1 ? atoi(argv[1]) : 20;
    struct vmf_image img;
    struct vmf_disk disk;
    GError *err = NULL;

    FX_CHECK(claims > 0 && claims <= 1000, "CLAIMS: 1 to 1000");
    fx_setup("vm-pool-bench");
    vmf_image_get(&img, true);
    vmf_disk_new(&disk, &img, "bench-0");

    g_autofree char *image_dir = g_path_get_dirname(img.kernel);
    g_autofree char *key = vm_template_image_key(image_dir, &err);
    FX_CHECK(key, "image key: %s", err ? err->message : "?");
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    struct vm_template_config tc = {
        .state_dir = state, .key = key, .kernel = img.kernel, .initrd = img.initrd};
    struct vm_template *tpl = vm_template_ensure(&tc, &err);
    FX_CHECK(tpl, "template: %s", err ? err->message : "?");
    printf("BENCH template boot_ms=%.1f snapshot_ms=%.1f accel=%s\n", tpl->boot_ms,
           tpl->snapshot_ms, vm_accel_to_string(tpl->accel));

    g_autofree char *runs = g_strdup_printf("%s/runs", fx_tmpdir());
    struct vm_pool_config pc = {.tpl = tpl, .size = 2, .run_root = runs};
    vm_pool *pool = vm_pool_new(&pc, &err);
    FX_CHECK(pool, "pool: %s", err ? err->message : "?");
    guint64 seen = 0;
    double seen_total = 0;

    for (int i = 1; i <= claims; i++) {
        char name[32];
        snprintf(name, sizeof name, "bench-%d", i);
        const char *clone[] = {
            fx_need_env("WISP_TEST_CLI"), "disk", "clone", "base", name, "--control",
            disk.server.control,          NULL};
        FX_CHECK(fx_run(clone) == 0, "wisp disk clone base %s", name);
        FX_CHECK(vm_pool_wait_full(pool, 60000), "the pool did not refill in 60 s");
        /* Restores finished since the last look, each as its own sample (the mean of the new
         * ones: the stats keep totals). */
        struct vm_pool_stats st;
        vm_pool_get_stats(pool, &st);
        FX_CHECK(st.failed == 0, "refill failed: %s", st.last_error);
        if (st.restored > seen) {
            double mean = (st.total_restore_ms - seen_total) / (double)(st.restored - seen);
            for (guint64 k = seen; k < st.restored; k++)
                printf("BENCH refill restore_ms=%.1f\n", mean);
            seen = st.restored;
            seen_total = st.total_restore_ms;
        }

        struct sprite_claim_request req = {.nbd_socket = disk.server.sock,
                                           .export_name = name,
                                           .hostname = name,
                                           .take_timeout_ms = 60000};
        struct sprite_claim_times t;
        double t0 = fx_now();
        struct sprite *s = sprite_claim(pool, &req, &t, &err);
        FX_CHECK(s, "claim %s: %s", name, err ? err->message : "?");
        exec_echo_ms(s);
        double first_exec_ms = (fx_now() - t0) * 1000;
        printf("BENCH claim total_ms=%.1f first_exec_ms=%.1f take_ms=%.2f disk_ms=%.1f "
               "cont_ms=%.2f connect_ms=%.1f seed_ms=%.1f attach_ms=%.1f\n",
               t.total_ms, first_exec_ms, t.take_ms, t.disk_ms, t.cont_ms, t.connect_ms, t.seed_ms,
               t.attach_ms);

        double sleep_ms, wake_ms;
        FX_CHECK(sprite_sleep_warm(s, &sleep_ms, &err), "sleep: %s", err ? err->message : "?");
        FX_CHECK(sprite_wake_warm(s, &wake_ms, &err), "wake: %s", err ? err->message : "?");
        double wake_exec_ms = exec_echo_ms(s);
        printf("BENCH warm sleep_ms=%.2f wake_ms=%.2f wake_exec_ms=%.1f\n", sleep_ms, wake_ms,
               wake_ms + wake_exec_ms);
        fflush(stdout);
        FX_CHECK(sprite_destroy(s, false, NULL, NULL, &err), "destroy: %s",
                 err ? err->message : "?");
    }
    vm_pool_free(pool);
    vm_template_free(tpl);
    fx_server_stop(&disk.server);
    return 0;
}
