/* config.c: the microvm command line built from a vm_config (no QEMU run): the options
 * FINDINGS.md requires, both disk modes, comma escaping, the optional parts, and refusals. */
#include "proc.h"
#include "runas.h"
#include "unit_check.h"
#include "vm_config.h"

#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value after option `opt` (the first occurrence after index `from`), or NULL. */
static const char *arg_after(char **argv, const char *opt, const char *contains)
{
    for (int i = 0; argv[i] && argv[i + 1]; i++)
        if (strcmp(argv[i], opt) == 0 && (!contains || strstr(argv[i + 1], contains)))
            return argv[i + 1];
    return NULL;
}

static bool has(char **argv, const char *arg)
{
    for (int i = 0; argv[i]; i++)
        if (strcmp(argv[i], arg) == 0)
            return true;
    return false;
}

/* When QEMU may change user (runas.h): root, and a user that exists and is not root; else the
 * reason.  Not root is tried in a child that dropped to nobody. */
static void test_runas(void)
{
    uid_t uid = 0;
    gid_t gid = 0;
    const char *why = NULL;

    CHECK(!vm_runas_resolve(NULL, &uid, &gid, &why) && strcmp(why, "not asked") == 0, "NULL");
    if (geteuid() != 0) {
        CHECK(!vm_runas_resolve("nobody", &uid, &gid, &why) && strstr(why, "not root"),
              "not root: %s", why);
        return;
    }
    CHECK(!vm_runas_resolve("no-such-user-wisp", &uid, &gid, &why) && strstr(why, "no user"),
          "missing user: %s", why);
    CHECK(!vm_runas_resolve("root", &uid, &gid, &why) && strstr(why, "root"), "root: %s", why);
    struct passwd *pw = getpwnam("nobody");
    if (!pw)
        return;
    CHECK(vm_runas_resolve("nobody", &uid, &gid, &why) && uid == pw->pw_uid && gid == pw->pw_gid,
          "nobody: %s", why);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
            _exit(2);
        _exit(!vm_runas_resolve("nobody", &uid, &gid, &why) && strstr(why, "not root") ? 0 : 1);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0,
          "as nobody, resolve did not say 'not root' (status %d)", status);
}

/* proc_cmdline_names_path on a real process: the path itself, under it, after '=' or ',', and
 * never a longer name that merely starts the same. */
static void check_cmdline_names_path(void)
{
    const char *argv[] = {"/bin/sh",
                          "-c",
                          "sleep 30",
                          "sh",
                          "/srv/wisp-staging/run/x.sock",
                          "cache=/srv/wisp2/cache",
                          "socket,id=ctl,path=/srv/wispy/ctl.sock,server=on",
                          NULL};
    pid_t pid = proc_spawn(argv, NULL, true);
    CHECK(pid > 0, "spawn sh");
    if (pid <= 0)
        return;
    g_usleep(100000); /* until exec: the command line is sh's */
    CHECK(!proc_cmdline_names_path(pid, "/srv/wisp"), "a longer name is not the path");
    CHECK(proc_cmdline_names_path(pid, "/srv/wisp-staging"), "an argument under the path");
    CHECK(proc_cmdline_names_path(pid, "/srv/wisp-staging/run/x.sock"), "the path itself");
    CHECK(proc_cmdline_names_path(pid, "/srv/wisp2"), "after '='");
    CHECK(proc_cmdline_names_path(pid, "/srv/wispy/ctl.sock"), "between ',' and ','");
    CHECK(!proc_cmdline_names_path(pid, "/srv/wispy/ctl"), "a prefix of a file name");
    CHECK(!proc_cmdline_names_path(pid, "wisp"), "a bare word");
    CHECK(!proc_cmdline_names_path(pid, ""), "an empty path");
    proc_kill_and_reap(pid);
    CHECK(!proc_cmdline_names_path(pid, "/srv/wisp2"), "a reaped process");
}

int main(void)
{
    check_cmdline_names_path();
    struct vm_config cfg = {
        .kernel = "/img/vmlinux",
        .initrd = "/img/initramfs.cpio.gz",
        .disk = VM_DISK_NBD,
        .nbd_socket = "/run/nbd,1.sock",
        .nbd_export = "sprite",
    };
    GError *err = NULL;
    char **argv;
    const char *a;

    argv = vm_config_build_argv(&cfg, VM_ACCEL_TCG, 2299998, "/r/qmp.sock", "/r/ctl.sock",
                                "/r/serial.log", &err);
    CHECK(argv, "%s", err ? err->message : "");
    CHECK(strcmp(arg_after(argv, "-M", NULL), "microvm") == 0, "machine");
    CHECK(strcmp(arg_after(argv, "-accel", NULL), "tcg") == 0, "accel");
    CHECK(has(argv, "-nodefaults") && has(argv, "-no-user-config") && has(argv, "-nographic"),
          "defaults off");
    CHECK(strcmp(arg_after(argv, "-m", NULL), "256") == 0, "default memory");
    a = arg_after(argv, "-append", NULL);
    CHECK(a && strstr(a, "console=ttyS0") && strstr(a, "panic=-1") && strstr(a, "quiet") &&
              strstr(a, "tsc_early_khz=2299998") && !strstr(a, "acpi=off"),
          "cmdline %s", a);
    a = arg_after(argv, "-blockdev", "driver=nbd");
    CHECK(a && strstr(a, "server.path=/run/nbd,,1.sock") && strstr(a, "export=sprite") &&
              strstr(a, "reconnect-delay=60") && strstr(a, "node-name=disk0"),
          "nbd blockdev %s", a);
    CHECK(arg_after(argv, "-blockdev", "node-name=slot0,file=disk0"), "slot0 on the export");
    CHECK(arg_after(argv, "-device", "virtserialport,chardev=ctl,name=wisp.ctl"), "port");
    CHECK(arg_after(argv, "-chardev", "path=/r/ctl.sock,server=on,wait=off"), "chardev");
    CHECK(strcmp(arg_after(argv, "-serial", NULL), "file:/r/serial.log") == 0, "serial");
    CHECK(strcmp(arg_after(argv, "-qmp", NULL), "unix:/r/qmp.sock,server=on,wait=off") == 0, "qmp");
    CHECK(!has(argv, "-S") && !has(argv, "-incoming") && !has(argv, "-sandbox"), "extras off");
    g_strfreev(argv);

    /* The pool's shape: placeholder, RAM in a file, paused, incoming, sandbox, KVM. */
    cfg.disk = VM_DISK_PLACEHOLDER;
    cfg.placeholder_bytes = 1 << 30;
    cfg.mem_path = "/dev/shm/tpl";
    cfg.mem_mib = 512;
    cfg.vcpus = 2;
    cfg.paused = cfg.incoming_defer = cfg.sandbox = true;
    cfg.cmdline_extra = "wisp.debug=1";
    argv = vm_config_build_argv(&cfg, VM_ACCEL_KVM, 0, "/r/q", "/r/c", "/r/s", &err);
    CHECK(argv, "%s", err ? err->message : "");
    CHECK(strcmp(arg_after(argv, "-accel", NULL), "kvm") == 0 &&
              strcmp(arg_after(argv, "-cpu", NULL), "host") == 0,
          "kvm");
    CHECK(arg_after(argv, "-blockdev", "driver=null-co,node-name=ph0,size=1073741824"),
          "placeholder");
    CHECK(arg_after(argv, "-blockdev", "node-name=slot0,file=ph0"), "slot0 on the placeholder");
    CHECK(!arg_after(argv, "-blockdev", "driver=nbd"), "no nbd");
    CHECK(arg_after(argv, "-object", "mem-path=/dev/shm/tpl,share=off") &&
              arg_after(argv, "-object", "size=512M"),
          "memory backend");
    CHECK(strcmp(arg_after(argv, "-smp", NULL), "2") == 0, "smp");
    CHECK(has(argv, "-S") && strcmp(arg_after(argv, "-incoming", NULL), "defer") == 0, "paused");
    CHECK(arg_after(argv, "-sandbox", "spawn=deny"), "sandbox");
    a = arg_after(argv, "-append", NULL);
    CHECK(a && !strstr(a, "tsc_early_khz") && strstr(a, " wisp.debug=1"), "cmdline %s", a);

    /* -runas: the sandbox must then allow set*id (QEMU 7.2 filters before its setuid). */
    CHECK(arg_after(argv, "-sandbox", "elevateprivileges=deny") && !has(argv, "-runas"),
          "no runas: set*id denied");
    g_strfreev(argv);
    cfg.run_as = "wisp-qemu";
    argv = vm_config_build_argv(&cfg, VM_ACCEL_KVM, 0, "/r/q", "/r/c", "/r/s", &err);
    CHECK(argv && strcmp(arg_after(argv, "-runas", NULL), "wisp-qemu") == 0 &&
              arg_after(argv, "-sandbox", "elevateprivileges=allow,spawn=deny"),
          "runas with the sandbox");
    g_strfreev(argv);
    argv = NULL;
    cfg.run_as = NULL;
    test_runas();

    /* Refusals. */
    cfg.kernel = NULL;
    CHECK(!vm_config_build_argv(&cfg, VM_ACCEL_TCG, 1, "q", "c", "s", &err) &&
              g_error_matches(err, VM_ERROR, VM_ERROR_CONFIG),
          "no kernel");
    g_clear_error(&err);
    cfg.kernel = "k";
    CHECK(!vm_config_build_argv(&cfg, VM_ACCEL_AUTO, 1, "q", "c", "s", &err), "accel undecided");
    g_clear_error(&err);
    cfg.disk = VM_DISK_NBD;
    cfg.nbd_socket = NULL;
    CHECK(!vm_config_build_argv(&cfg, VM_ACCEL_TCG, 1, "q", "c", "s", &err), "nbd, no socket");
    g_clear_error(&err);

    enum vm_accel acc;
    CHECK(vm_accel_from_string("KVM", &acc) && acc == VM_ACCEL_KVM, "kvm");
    CHECK(vm_accel_from_string("tcg", &acc) && acc == VM_ACCEL_TCG, "tcg");
    CHECK(!vm_accel_from_string("hvf", &acc), "hvf");
    unsigned khz = vm_host_cpu_khz();
    CHECK(khz > 100000 && khz < 10000000, "host cpu %u kHz", khz);

    /* WISP_ACCEL forces the answer without a probe. */
    setenv("WISP_ACCEL", "tcg", 1);
    const char *why = NULL;
    CHECK(vm_accel_resolve(VM_ACCEL_AUTO, NULL, NULL, &why) == VM_ACCEL_TCG && why, "forced");
    CHECK(vm_accel_resolve(VM_ACCEL_KVM, NULL, NULL, &why) == VM_ACCEL_KVM, "caller wins");

    return unit_check_result();
}
