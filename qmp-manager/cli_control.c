/* cli_control.c: the small verbs of wisp-vm (attach, status, freeze, thaw, shutdown, kill,
 * probe-accel), each a request to wisp-init or to QEMU. */
#include "cli.h"

#include "proc.h"
#include "qmp.h"
#include "vm_config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Parses the common --run-dir/--timeout options plus `extra`. */
static const char *cli_common_options(int *argc, char ***argv, const char *what,
                                      GOptionEntry *extra, int *timeout_s)
{
    static char *run_dir;
    GOptionEntry entries[] = {
        {"run-dir", 0, 0, G_OPTION_ARG_FILENAME, &run_dir, "the VM's run directory", "DIR"},
        {"timeout", 0, 0, G_OPTION_ARG_INT, timeout_s, "seconds (default 30)", "S"},
        G_OPTION_ENTRY_NULL};
    g_autoptr(GOptionContext) ctx = g_option_context_new(what);

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (extra)
        g_option_context_add_main_entries(ctx, extra, NULL);
    if (!cli_parse(ctx, argc, argv))
        return NULL;
    return cli_run_dir(run_dir);
}

static pid_t cli_qemu_pid(const char *dir)
{
    g_autofree char *path = g_build_filename(dir, "qemu.pid", NULL);
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL))
        return 0;
    return (pid_t)atoi(text);
}

/* QEMU is not our child here (boot left it running): poll for it to be gone. */
static bool cli_wait_gone(pid_t pid, int timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    while (pid > 0 && kill(pid, 0) == 0) {
        if (g_get_monotonic_time() > deadline)
            return false;
        g_usleep(10 * 1000);
    }
    return true;
}

int cli_attach(int argc, char **argv)
{
    char *hostname = NULL, *device = NULL;
    int timeout_s = 60;
    GOptionEntry extra[] = {
        {"hostname", 0, 0, G_OPTION_ARG_STRING, &hostname, "the sprite's hostname", "NAME"},
        {"device", 0, 0, G_OPTION_ARG_STRING, &device, "block device (default /dev/vda)", "DEV"},
        G_OPTION_ENTRY_NULL};
    const char *dir = cli_common_options(&argc, &argv, "- attach the disk", extra, &timeout_s);
    GError *error = NULL;
    agent_client *c;
    bool ok;

    if (!dir)
        return CLI_EXIT_USAGE;
    if (!(c = cli_agent_connect(dir, timeout_s * 1000)))
        return CLI_EXIT_FAILURE;
    ok = agent_client_attach(c, device, hostname ? hostname : "sprite", NULL, timeout_s * 1000,
                             &error);
    agent_client_free(c);
    return ok ? 0 : cli_fail("attach", error);
}

static int cli_simple(int argc, char **argv, const char *verb,
                      bool (*fn)(agent_client *, int, GError **))
{
    int timeout_s = 30;
    const char *dir = cli_common_options(&argc, &argv, verb, NULL, &timeout_s);
    GError *error = NULL;
    agent_client *c;
    bool ok;

    if (!dir)
        return CLI_EXIT_USAGE;
    if (!(c = cli_agent_connect(dir, timeout_s * 1000)))
        return CLI_EXIT_FAILURE;
    ok = fn(c, timeout_s * 1000, &error);
    agent_client_free(c);
    return ok ? 0 : cli_fail(verb, error);
}

int cli_freeze(int argc, char **argv)
{
    return cli_simple(argc, argv, "freeze", agent_client_freeze);
}

int cli_thaw(int argc, char **argv)
{
    return cli_simple(argc, argv, "thaw", agent_client_thaw);
}

int cli_status(int argc, char **argv)
{
    int timeout_s = 30;
    const char *dir = cli_common_options(&argc, &argv, "- the VM's status", NULL, &timeout_s);
    GError *error = NULL;
    struct wisp_msg *st;
    agent_client *c;

    if (!dir)
        return CLI_EXIT_USAGE;
    if (!(c = cli_agent_connect(dir, timeout_s * 1000)))
        return CLI_EXIT_FAILURE;
    st = agent_client_status(c, timeout_s * 1000, &error);
    agent_client_free(c);
    if (!st)
        return cli_fail("status", error);
    printf("uptime_ms %" G_GUINT64_FORMAT "\nmem_total_kib %" G_GUINT64_FORMAT
           "\nmem_available_kib %" G_GUINT64_FORMAT
           "\nload %.2f %.2f %.2f\nidle_ms %" G_GUINT64_FORMAT
           "\nattached %u\nfrozen %u\nsessions %u\nlisteners",
           st->u.status.uptime_ms, st->u.status.mem_total_kib, st->u.status.mem_available_kib,
           st->u.status.load_milli[0] / 1000.0, st->u.status.load_milli[1] / 1000.0,
           st->u.status.load_milli[2] / 1000.0, st->u.status.idle_ms, st->u.status.attached,
           st->u.status.frozen, st->u.status.session_count);
    for (uint32_t i = 0; i < st->u.status.listener_count; i++)
        printf(" %u", st->u.status.listeners[i].port);
    printf("\n");
    wisp_msg_free(st);
    g_free(st);
    return 0;
}

int cli_shutdown(int argc, char **argv)
{
    int timeout_s = 60;
    const char *dir = cli_common_options(&argc, &argv, "- clean poweroff", NULL, &timeout_s);
    GError *error = NULL;
    agent_client *c;
    pid_t pid;

    if (!dir)
        return CLI_EXIT_USAGE;
    pid = cli_qemu_pid(dir);
    if (!(c = cli_agent_connect(dir, timeout_s * 1000)))
        return CLI_EXIT_FAILURE;
    if (!agent_client_shutdown(c, timeout_s * 1000, &error)) {
        agent_client_free(c);
        return cli_fail("shutdown", error);
    }
    agent_client_free(c);
    if (!cli_wait_gone(pid, timeout_s * 1000)) {
        fprintf(stderr, "wisp-vm: shutdown: QEMU %d still runs after %d s\n", (int)pid, timeout_s);
        return CLI_EXIT_FAILURE;
    }
    return 0;
}

int cli_kill(int argc, char **argv)
{
    int timeout_s = 10;
    const char *dir = cli_common_options(&argc, &argv, "- stop QEMU", NULL, &timeout_s);
    g_autofree char *qmp_path = NULL;
    GError *error = NULL;
    qmp_client *q;
    pid_t pid;

    if (!dir)
        return CLI_EXIT_USAGE;
    pid = cli_qemu_pid(dir);
    qmp_path = g_build_filename(dir, "qmp.sock", NULL);
    q = qmp_client_connect(qmp_path, NULL, 2000, &error);
    if (q) {
        JsonNode *r = qmp_client_execute(q, "quit", NULL, 2000, NULL);
        if (r)
            json_node_unref(r);
        qmp_client_free(q);
    }
    g_clear_error(&error);
    if (pid > 0 && !cli_wait_gone(pid, timeout_s * 1000)) {
        if (kill(-pid, SIGKILL) < 0 && errno != ESRCH)
            fprintf(stderr, "wisp-vm: kill: %s\n", g_strerror(errno));
        cli_wait_gone(pid, 5000);
    }
    g_autofree char *ctl = g_build_filename(dir, "ctl.sock", NULL);
    unlink(qmp_path);
    unlink(ctl);
    return 0;
}

int cli_probe_accel(int argc, char **argv)
{
    g_autofree char *kernel = NULL, *qemu = NULL;
    GOptionEntry entries[] = {
        {"kernel", 0, 0, G_OPTION_ARG_FILENAME, &kernel, "a PVH vmlinux for the probe boot",
         "FILE"},
        {"qemu", 0, 0, G_OPTION_ARG_FILENAME, &qemu, "the QEMU binary", "FILE"},
        G_OPTION_ENTRY_NULL};
    g_autoptr(GOptionContext) ctx = g_option_context_new("- KVM or TCG?");
    const char *why = NULL;
    enum vm_accel a;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!cli_parse(ctx, &argc, &argv))
        return CLI_EXIT_USAGE;
    a = vm_accel_resolve(VM_ACCEL_AUTO, qemu, kernel, &why);
    printf("%s: %s\n", vm_accel_to_string(a), why ? why : "");
    return 0;
}
