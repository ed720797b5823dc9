/* cli_boot.c: wisp-vm boot, which starts the VM, waits for wisp-init's READY and leaves QEMU
 * running (its pid in RUN/qemu.pid). */
#include "cli.h"

#include "vm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* "SOCK[:EXPORT]" */
static void cli_split_nbd(const char *spec, char **sock, char **export_name)
{
    const char *colon = strrchr(spec, ':');

    *sock = colon ? g_strndup(spec, (gsize)(colon - spec)) : g_strdup(spec);
    *export_name = g_strdup(colon ? colon + 1 : "");
}

int cli_boot(int argc, char **argv)
{
    g_autofree char *kernel = NULL, *initrd = NULL, *nbd = NULL, *claim = NULL, *accel = NULL;
    g_autofree char *run_dir = NULL, *append = NULL, *hostname = NULL;
    g_autofree char *nbd_sock = NULL, *nbd_export = NULL;
    int mem = 256, cpus = 1, timeout_s = 120;
    gboolean sandbox = FALSE;
    GOptionEntry entries[] = {
        {"kernel", 0, 0, G_OPTION_ARG_FILENAME, &kernel, "PVH vmlinux", "FILE"},
        {"initrd", 0, 0, G_OPTION_ARG_FILENAME, &initrd, "initramfs with wisp-init", "FILE"},
        {"nbd", 0, 0, G_OPTION_ARG_STRING, &nbd, "disk attached at launch", "SOCK[:EXPORT]"},
        {"claim-nbd", 0, 0, G_OPTION_ARG_STRING, &claim,
         "boot with a placeholder disk, then attach this one over QMP", "SOCK[:EXPORT]"},
        {"mem", 0, 0, G_OPTION_ARG_INT, &mem, "guest memory (default 256)", "MiB"},
        {"cpus", 0, 0, G_OPTION_ARG_INT, &cpus, "vCPUs (default 1)", "N"},
        {"accel", 0, 0, G_OPTION_ARG_STRING, &accel, "kvm, tcg or auto (default: probe)", "A"},
        {"run-dir", 0, 0, G_OPTION_ARG_FILENAME, &run_dir, "sockets and logs", "DIR"},
        {"append", 0, 0, G_OPTION_ARG_STRING, &append, "more kernel command line", "TEXT"},
        {"hostname", 0, 0, G_OPTION_ARG_STRING, &hostname,
         "after READY, attach the disk with this hostname", "NAME"},
        {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout_s, "seconds to READY (default 120)", "S"},
        {"sandbox", 0, 0, G_OPTION_ARG_NONE, &sandbox,
         "QEMU under its seccomp sandbox (-sandbox on, spawn and privileges denied)", NULL},
        G_OPTION_ENTRY_NULL};
    g_autoptr(GOptionContext) ctx = g_option_context_new("- start a microvm");
    struct vm_config cfg = {0};
    struct agent_ready ready;
    GError *error = NULL;
    agent_client *agent;
    struct vm *vm;
    const char *dir;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!cli_parse(ctx, &argc, &argv))
        return CLI_EXIT_USAGE;
    if (!(dir = cli_run_dir(run_dir)))
        return CLI_EXIT_USAGE;
    if (!kernel || !initrd || (nbd && claim) || mem <= 0 || cpus <= 0 || timeout_s <= 0) {
        fprintf(stderr, "wisp-vm: boot needs --kernel and --initrd, and at most one of --nbd "
                        "and --claim-nbd\n");
        return CLI_EXIT_USAGE;
    }
    cfg.kernel = kernel;
    cfg.initrd = initrd;
    cfg.mem_mib = (unsigned)mem;
    cfg.vcpus = (unsigned)cpus;
    cfg.run_dir = dir;
    cfg.cmdline_extra = append;
    cfg.keep_on_exit = true;
    cfg.sandbox = sandbox;
    if (accel && !vm_accel_from_string(accel, &cfg.accel)) {
        fprintf(stderr, "wisp-vm: --accel takes kvm, tcg or auto\n");
        return CLI_EXIT_USAGE;
    }
    if (nbd || claim) {
        cli_split_nbd(nbd ? nbd : claim, &nbd_sock, &nbd_export);
        cfg.disk = nbd ? VM_DISK_NBD : VM_DISK_PLACEHOLDER;
        cfg.nbd_socket = nbd_sock;
        cfg.nbd_export = nbd_export;
    }

    gint64 t0 = g_get_monotonic_time();
    vm = vm_launch(&cfg, NULL, timeout_s * 1000, &error);
    if (!vm)
        return cli_fail("boot", error);
    g_autofree char *pidfile = g_build_filename(dir, "qemu.pid", NULL);
    g_autofree char *pidtext = g_strdup_printf("%d\n", (int)vm->pid);
    if (!g_file_set_contents(pidfile, pidtext, -1, &error)) {
        vm_free(vm);
        return cli_fail("boot", error);
    }
    agent = agent_client_connect(vm->ctl_path, timeout_s * 1000, &error);
    if (!agent || !agent_client_wait_ready(agent, timeout_s * 1000, &ready, &error)) {
        g_autofree char *tail = vm_serial_tail(vm, 1500);
        fprintf(stderr, "wisp-vm: serial console ends with:\n%s\n", tail);
        agent_client_free(agent);
        vm_free(vm);
        return cli_fail("boot", error);
    }
    gint64 t_ready = g_get_monotonic_time();
    printf("ready in %.0f ms (pid %d, %s: %s; agent %s, guest uptime %" G_GUINT64_FORMAT " ms)\n",
           (double)(t_ready - t0) / 1000.0, (int)vm->pid, vm_accel_to_string(vm->accel),
           vm->accel_why, ready.agent, ready.uptime_ms);
    if (claim && !vm_attach_nbd(vm, nbd_sock, nbd_export, 10000, &error)) {
        agent_client_free(agent);
        vm_free(vm);
        return cli_fail("boot: claim", error);
    }
    if (hostname) {
        if (!agent_client_attach(agent, NULL, hostname, NULL, timeout_s * 1000, &error)) {
            agent_client_free(agent);
            vm_free(vm);
            return cli_fail("boot: attach", error);
        }
        printf("attached in %.0f ms\n", (double)(g_get_monotonic_time() - t_ready) / 1000.0);
    }
    agent_client_free(agent);
    vm_detach(vm);
    return 0;
}
