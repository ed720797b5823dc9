/* wisp-vm: boot a Wisp microvm and talk to its wisp-init, for people and tests.
 *
 *   wisp-vm boot --kernel K --initrd I [--nbd SOCK[:EXPORT] | --placeholder] --run-dir D ...
 *   wisp-vm template build --image-dir D --state-dir S
 *   wisp-vm pool run --image-dir D --state-dir S --run-root R [--size N] [--claim SOCK:EXPORT]
 *   wisp-vm claim --image-dir D --state-dir S --run-root R --nbd SOCK:EXPORT [-- CMD...]
 *   wisp-vm exec --run-dir D [--tty] [--stdin] -- CMD ARGS...
 *   wisp-vm attach|status|freeze|thaw|shutdown|kill --run-dir D
 *   wisp-vm probe-accel [--kernel K]
 *   wisp-vm sprites --state DIR [--recover [--store URL]]
 *   wisp-vm gc --store URL [--keep K] [--grace S] [--dry-run] [--pin KEY]... [--state DIR]
 *
 * The VM outlives `boot`; the other verbs find it through its run directory (the sockets, the
 * serial log, qemu.log and qemu.pid). */
#include "cli.h"

#include "log.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} cli_verbs[] = {
    {"boot", cli_boot, "start QEMU and wait for wisp-init's READY (the VM keeps running)"},
    {"template", cli_template, "build: boot the image once and snapshot it (once per image)"},
    {"pool", cli_pool, "run: keep N paused clones ready, in the foreground"},
    {"claim", cli_claim, "restore a clone, attach a disk, seed, attach; times per step"},
    {"exec", cli_exec, "run a command in the sprite's container, streaming its I/O"},
    {"attach", cli_attach, "mount the disk and start the container"},
    {"status", cli_status, "uptime, memory, load, listeners, sessions"},
    {"freeze", cli_freeze, "FIFREEZE the sprite's filesystem"},
    {"thaw", cli_thaw, "FITHAW the sprite's filesystem"},
    {"shutdown", cli_shutdown, "clean unmount and poweroff; waits for QEMU to exit"},
    {"kill", cli_kill, "stop QEMU at once"},
    {"probe-accel", cli_probe_accel, "say whether KVM really works here, and why"},
    {"sprites", cli_sprites,
     "the sprite database's sprites and states (--recover: as at start-up)"},
    {"gc", cli_gc, "delete old sleep manifests and RAM chunks no manifest names (JSON report)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: wisp-vm VERB [OPTIONS]   (wisp-vm VERB --help for its options)\n\n");
    for (size_t i = 0; i < G_N_ELEMENTS(cli_verbs); i++)
        fprintf(f, "  %-12s %s\n", cli_verbs[i].name, cli_verbs[i].help);
}

int main(int argc, char **argv)
{
    wisp_log_init();
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(cli_verbs); i++)
        if (strcmp(argv[1], cli_verbs[i].name) == 0)
            return cli_verbs[i].run(argc - 1, argv + 1);
    fprintf(stderr, "wisp-vm: unknown verb '%s'\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
