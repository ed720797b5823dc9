/* cli_pool.c: wisp-vm template build, pool run and claim: operators' views of the pool
 * library (template.h, pool.h, sprite.h), in the foreground.
 *
 *   wisp-vm template build --image-dir D --state-dir S [--mem M] [--accel A]
 *   wisp-vm pool run --image-dir D --state-dir S --run-root R [--size N]
 *                    [--claim SOCK:EXPORT [--hostname H] [-- CMD ARGS...]]
 *   wisp-vm claim --image-dir D --state-dir S --run-root R --nbd SOCK:EXPORT [--hostname H]
 *                 [-- CMD ARGS...]
 *
 * A pool lives as long as the process: `pool run` fills it, prints its figures and waits for
 * SIGINT or SIGTERM (or, with a command, claims a member, runs the command in it and exits with
 * its status).  `claim` is `pool run --size 1 --claim`. */
#include "cli.h"

#include "pool.h"
#include "sprite.h"
#include "template.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct cli_pool_opts {
    char *image_dir, *state_dir, *run_root, *accel, *claim, *hostname, *run_as;
    int mem, size, fill_timeout_s;
    gboolean json, sandbox;
};

static GOptionEntry *cli_pool_entries(struct cli_pool_opts *o, bool with_pool, bool nbd_name)
{
    GOptionEntry common[] = {
        {"image-dir", 0, 0, G_OPTION_ARG_FILENAME, &o->image_dir,
         "the image (vmlinux, initramfs.cpio.gz, image.json)", "DIR"},
        {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &o->state_dir,
         "where templates are kept (STATE/templates/KEY)", "DIR"},
        {"mem", 0, 0, G_OPTION_ARG_INT, &o->mem, "guest memory (default 256)", "MiB"},
        {"accel", 0, 0, G_OPTION_ARG_STRING, &o->accel, "kvm, tcg or auto (default: probe)", "A"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &o->json, "figures as one JSON object per line", NULL},
        {"sandbox", 0, 0, G_OPTION_ARG_NONE, &o->sandbox,
         "QEMU under its seccomp sandbox (-sandbox on, spawn and privileges denied)", NULL},
        {"run-as", 0, 0, G_OPTION_ARG_STRING, &o->run_as,
         "QEMU drops to this user where the host allows (root, the user exists)", "USER"},
        G_OPTION_ENTRY_NULL};
    GOptionEntry pool[] = {
        {"run-root", 0, 0, G_OPTION_ARG_FILENAME, &o->run_root, "members' run directories (RUN/mN)",
         "DIR"},
        {"size", 0, 0, G_OPTION_ARG_INT, &o->size, "members kept ready (default 2)", "N"},
        {nbd_name ? "nbd" : "claim", 0, 0, G_OPTION_ARG_STRING, &o->claim,
         "claim a member for this NBD export", "SOCK:EXPORT"},
        {"hostname", 0, 0, G_OPTION_ARG_STRING, &o->hostname, "the sprite's hostname", "NAME"},
        {"fill-timeout", 0, 0, G_OPTION_ARG_INT, &o->fill_timeout_s,
         "seconds for the pool to fill (default 120)", "S"},
        G_OPTION_ENTRY_NULL};
    GArray *a = g_array_new(FALSE, FALSE, sizeof(GOptionEntry));

    g_array_append_vals(a, common, G_N_ELEMENTS(common) - 1);
    if (with_pool)
        g_array_append_vals(a, pool, G_N_ELEMENTS(pool) - 1);
    g_array_append_vals(a, &common[G_N_ELEMENTS(common) - 1], 1);
    return (GOptionEntry *)g_array_free(a, FALSE);
}

static void cli_pool_opts_clear(struct cli_pool_opts *o)
{
    g_free(o->image_dir);
    g_free(o->state_dir);
    g_free(o->run_root);
    g_free(o->accel);
    g_free(o->claim);
    g_free(o->hostname);
}

static struct vm_template *cli_template_ensure(const struct cli_pool_opts *o, GError **error)
{
    g_autofree char *key = NULL, *kernel = NULL, *initrd = NULL;
    struct vm_template_config tc = {0};

    if (!(key = vm_template_image_key(o->image_dir, error)))
        return NULL;
    kernel = g_build_filename(o->image_dir, "vmlinux", NULL);
    initrd = g_build_filename(o->image_dir, "initramfs.cpio.gz", NULL);
    tc.state_dir = o->state_dir;
    tc.key = key;
    tc.kernel = kernel;
    tc.initrd = initrd;
    tc.mem_mib = o->mem > 0 ? (unsigned)o->mem : 0;
    tc.sandbox = o->sandbox;
    tc.run_as = o->run_as;
    if (o->accel && !vm_accel_from_string(o->accel, &tc.accel)) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "--accel %s: kvm, tcg or auto", o->accel);
        return NULL;
    }
    return vm_template_ensure(&tc, error);
}

static void cli_print_template(const struct cli_pool_opts *o, const struct vm_template *t)
{
    if (o->json)
        printf("{\"template\": \"%s\", \"key\": \"%s\", \"built\": %s, \"accel\": \"%s\", "
               "\"boot_ms\": %.1f, \"snapshot_ms\": %.1f}\n",
               t->dir, t->key, t->built_now ? "true" : "false", vm_accel_to_string(t->accel),
               t->boot_ms, t->snapshot_ms);
    else
        printf("template %s: %s (%s); boot to READY %.0f ms, snapshot %.1f ms\n", t->dir,
               t->built_now ? "built" : "reused", vm_accel_to_string(t->accel), t->boot_ms,
               t->snapshot_ms);
}

int cli_template(int argc, char **argv)
{
    struct cli_pool_opts o = {0};
    g_autofree GOptionEntry *entries = cli_pool_entries(&o, false, false);
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("build - boot the image once and snapshot it (once per image)");
    GError *error = NULL;
    struct vm_template *t;
    int rc = 0;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!cli_parse(ctx, &argc, &argv))
        return CLI_EXIT_USAGE;
    if (argc != 2 || strcmp(argv[1], "build") != 0 || !o.image_dir || !o.state_dir) {
        fprintf(stderr, "wisp-vm: usage: template build --image-dir D --state-dir S\n");
        cli_pool_opts_clear(&o);
        return CLI_EXIT_USAGE;
    }
    t = cli_template_ensure(&o, &error);
    if (t)
        cli_print_template(&o, t);
    else
        rc = cli_fail("template build", error);
    vm_template_free(t);
    cli_pool_opts_clear(&o);
    return rc;
}

static void cli_print_claim(const struct cli_pool_opts *o, const struct sprite *s,
                            const struct sprite_claim_times *t)
{
    if (o->json)
        printf("{\"claimed\": \"%s\", \"run_dir\": \"%s\", \"total_ms\": %.1f, \"take_ms\": %.2f, "
               "\"disk_ms\": %.1f, \"cont_ms\": %.2f, \"connect_ms\": %.1f, \"seed_ms\": %.1f, "
               "\"attach_ms\": %.1f}\n",
               s->export_name, s->vm->run_dir, t->total_ms, t->take_ms, t->disk_ms, t->cont_ms,
               t->connect_ms, t->seed_ms, t->attach_ms);
    else
        printf("claimed %s (run dir %s) in %.1f ms: take %.2f, disk %.1f, cont %.2f, "
               "connect %.1f, seed %.1f, attach %.1f\n",
               s->export_name, s->vm->run_dir, t->total_ms, t->take_ms, t->disk_ms, t->cont_ms,
               t->connect_ms, t->seed_ms, t->attach_ms);
    fflush(stdout);
}

/* Runs argv in the sprite, its output to ours; the shell-style status, or -1. */
static int cli_run_in(struct sprite *s, char **argv, GError **error)
{
    g_autofree char *out = NULL, *err = NULL;
    size_t out_len = 0;
    int status = agent_exec_run(s->agent, (const char *const *)argv, NULL, 0, &out, &out_len, &err,
                                600000, error);

    if (out && fwrite(out, 1, out_len, stdout) != out_len)
        perror("wisp-vm: stdout");
    if (err)
        fputs(err, stderr);
    return status;
}

static int cli_pool_main(struct cli_pool_opts *o, int argc, char **argv, const char *verb)
{
    g_autofree char *sock = NULL, *export_name = NULL;
    struct sprite_claim_times times;
    struct vm_template *t = NULL;
    struct sprite *s = NULL;
    vm_pool *pool = NULL;
    GError *error = NULL;
    sigset_t stop_signals;
    int rc = 0, sig;

    if (argc > 1 && strcmp(argv[1], "--") == 0) {
        argc--;
        argv++;
    }
    if (!o->image_dir || !o->state_dir || !o->run_root || o->size < 0 || (argc > 1 && !o->claim)) {
        fprintf(stderr,
                "wisp-vm: %s needs --image-dir, --state-dir and --run-root; a command "
                "needs a claim\n",
                verb);
        return CLI_EXIT_USAGE;
    }
    if (o->claim) {
        const char *colon = strrchr(o->claim, ':');
        if (!colon || colon == o->claim || !colon[1]) {
            fprintf(stderr, "wisp-vm: %s: the disk is SOCK:EXPORT\n", verb);
            return CLI_EXIT_USAGE;
        }
        sock = g_strndup(o->claim, (gsize)(colon - o->claim));
        export_name = g_strdup(colon + 1);
    }
    /* Blocked before the refill thread starts, so that it inherits the mask and only sigwait
     * below takes them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    if (!(t = cli_template_ensure(o, &error))) {
        rc = cli_fail(verb, error);
        goto out;
    }
    cli_print_template(o, t);
    struct vm_pool_config pc = {.tpl = t, .size = (unsigned)o->size, .run_root = o->run_root};
    if (!(pool = vm_pool_new(&pc, &error))) {
        rc = cli_fail(verb, error);
        goto out;
    }
    gint64 t0 = g_get_monotonic_time();
    if (!vm_pool_wait_full(pool, (o->fill_timeout_s > 0 ? o->fill_timeout_s : 120) * 1000)) {
        struct vm_pool_stats st;
        vm_pool_get_stats(pool, &st);
        fprintf(stderr, "wisp-vm: %s: the pool did not fill (%u ready; last error: %s)\n", verb,
                st.ready, st.last_error[0] ? st.last_error : "none");
        rc = CLI_EXIT_FAILURE;
        goto out;
    }
    struct vm_pool_stats st;
    vm_pool_get_stats(pool, &st);
    if (o->json)
        printf("{\"pool\": %u, \"fill_ms\": %.1f, \"restore_ms_mean\": %.1f}\n", st.ready,
               (double)(g_get_monotonic_time() - t0) / 1000.0,
               st.total_restore_ms / (double)MAX(st.restored, 1));
    else
        printf("pool of %u ready in %.0f ms; restore per member %.1f ms (mean of %llu)\n", st.ready,
               (double)(g_get_monotonic_time() - t0) / 1000.0,
               st.total_restore_ms / (double)MAX(st.restored, 1), (unsigned long long)st.restored);
    fflush(stdout);
    if (o->claim) {
        struct sprite_claim_request req = {.nbd_socket = sock,
                                           .export_name = export_name,
                                           .hostname = o->hostname,
                                           .take_timeout_ms = 60000};
        if (!(s = sprite_claim(pool, &req, &times, &error))) {
            rc = cli_fail(verb, error);
            goto out;
        }
        cli_print_claim(o, s, &times);
        if (argc > 1) {
            rc = cli_run_in(s, argv + 1, &error);
            if (rc < 0)
                rc = cli_fail("exec", error);
            goto out;
        }
    }
    /* Until asked to stop: the VMs die with this process (and the refill thread). */
    sigwait(&stop_signals, &sig);
out:
    sprite_destroy(s, false, NULL, NULL, NULL);
    vm_pool_free(pool);
    vm_template_free(t);
    return rc;
}

int cli_pool(int argc, char **argv)
{
    struct cli_pool_opts o = {.size = 2};
    g_autofree GOptionEntry *entries = cli_pool_entries(&o, true, false);
    g_autoptr(GOptionContext) ctx = g_option_context_new(
        "run [-- CMD ARGS...] - keep a pool of paused clones in the foreground");
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!cli_parse(ctx, &argc, &argv))
        return CLI_EXIT_USAGE;
    if (argc < 2 || strcmp(argv[1], "run") != 0) {
        fprintf(stderr, "wisp-vm: usage: pool run --image-dir D --state-dir S --run-root R ...\n");
        cli_pool_opts_clear(&o);
        return CLI_EXIT_USAGE;
    }
    rc = cli_pool_main(&o, argc - 1, argv + 1, "pool run");
    cli_pool_opts_clear(&o);
    return rc;
}

int cli_claim(int argc, char **argv)
{
    struct cli_pool_opts o = {.size = 1};
    g_autofree GOptionEntry *entries = cli_pool_entries(&o, true, true);
    g_autoptr(GOptionContext) ctx = g_option_context_new(
        "[-- CMD ARGS...] - restore one clone and claim it for a disk (timings per step)");
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!cli_parse(ctx, &argc, &argv))
        return CLI_EXIT_USAGE;
    if (!o.claim) {
        fprintf(stderr, "wisp-vm: claim needs --nbd SOCK:EXPORT\n");
        cli_pool_opts_clear(&o);
        return CLI_EXIT_USAGE;
    }
    rc = cli_pool_main(&o, argc, argv, "claim");
    cli_pool_opts_clear(&o);
    return rc;
}
