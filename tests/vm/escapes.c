/* escapes.c: from inside the sprite's container, the platform is out of reach: no process of
 * the platform (so none of wisp-init's memory) is visible, the container's PID 1 inherited no
 * environment, /proc/PID/root of every visible process is the container's own root, the raw
 * disk and the control port cannot be reached through mknod, and neither a new proc mount nor
 * mounting the disk again shows the platform.
 *
 * Then what wisp-init itself does on the sprite's disk, as PID 1 with full root outside the
 * container: a service's log file that the container made a symlink to
 * /proc/sys/kernel/core_pattern must not be written through (that would run a program of the
 * container's choosing as the platform's root at the next crash), a log that is a FIFO must
 * not block wisp-init, and a service printing while the filesystem is frozen must not wedge it
 * (a write to a frozen filesystem blocks until a thaw that PID 1 could then never read). */
#include "vm_fixture.h"

#include <stdio.h>
#include <string.h>

/* Each script exits 0 only if the escape works.  All are tried, and every open one named. */
static const struct {
    const char *what;
    const char *script;
} escapes[] = {
    /* The pattern does not match itself (grep's own cmdline is in /proc too). */
    {"a wisp-init process is visible in the container",
     "grep -l 'wisp-ini[t]' /proc/[0-9]*/cmdline 2>/dev/null"},
    /* The container's PID 1 is a fresh exec of the wisp-init binary (execveat), so its memory
     * holds none of wisp-init's state; what it inherited must be nothing either. */
    {"the container's PID 1 carries an environment from the platform",
     "[ -s /proc/1/environ ] || [ \"$(tr -d '\\0' < /proc/1/environ | wc -c)\" != 0 ]"},
    /* Every visible process has the container's root: none shows the platform's devices. */
    {"a process's /proc/PID/root shows the platform's devices",
     "ls /proc/[0-9]*/root/dev/vport* /proc/[0-9]*/root/dev/vda 2>/dev/null | grep -q ."},
    {"platform devices in the container's /dev", "ls /dev/vport* /dev/vda /dev/hvc* 2>/dev/null"},
    {"the raw disk can be read through mknod",
     "maj=$(awk '$2==\"virtblk\"{print $1}' /proc/devices); [ -n \"$maj\" ] || maj=254; "
     "mknod /tmp/rawdisk b $maj 0 2>/dev/null && "
     "dd if=/tmp/rawdisk of=/dev/null bs=512 count=1 2>/dev/null"},
    {"the control port can be opened through mknod",
     "maj=$(awk '$2==\"virtio-portsdev\"{print $1}' /proc/devices); "
     "[ -n \"$maj\" ] && mknod /tmp/port c $maj 1 2>/dev/null && echo x > /tmp/port 2>/dev/null"},
    /* A fresh proc mount shows the container's pid namespace only. */
    {"a new proc mount shows wisp-init",
     "mkdir -p /tmp/p && mount -t proc proc /tmp/p 2>/dev/null && "
     "grep -l 'wisp-ini[t]' /tmp/p/[0-9]*/cmdline 2>/dev/null; r=$?; umount /tmp/p 2>/dev/null; "
     "exit $r"},
    {"the platform's disk can be mounted again from inside",
     "mkdir -p /tmp/m && mount -t ext4 /tmp/rawdisk /tmp/m 2>/dev/null"},
};

static void check_escapes(struct vmf_vm *v)
{
    g_autofree char *pid1 = vmf_sh_ok(v, "readlink /proc/1/exe; ls /proc | grep -c '^[0-9]'");
    int open = 0;

    fx_log("container: /proc/1/exe and the number of processes visible: %s", pid1);
    for (size_t i = 0; i < G_N_ELEMENTS(escapes); i++) {
        bool works = vmf_sh(v, NULL, escapes[i].script) == 0;
        fx_log("%s: %s", works ? "OPEN" : "closed", escapes[i].what);
        open += works;
    }
    FX_CHECK(open == 0, "%d escape(s) from the container work (OPEN above)", open);
}

static void start_service(struct vmf_vm *v, const char *name, const char *script)
{
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    GError *err = NULL;

    FX_CHECK(agent_client_service_start(v->agent, name, argv, NULL, "/", WISP_RESTART_NEVER, 0,
                                        10000, &err),
             "service %s: %s", name, err ? err->message : "?");
}

static void check_platform_files(struct vmf_vm *v)
{
    g_autofree char *before = vmf_sh_ok(v, "cat /proc/sys/kernel/core_pattern");

    /* A symlink to core_pattern where the log of service "evil" goes. */
    g_free(vmf_sh_ok(v, "mkdir -p /var/log/wisp && "
                        "ln -sf /proc/sys/kernel/core_pattern /var/log/wisp/evil.log && "
                        "mkfifo /var/log/wisp/fifo.log"));
    start_service(v, "evil", "echo '|/tmp/evil %p'; sleep 1");
    start_service(v, "fifo", "echo into the fifo; sleep 1");
    /* wisp-init still serves (it did not block on the FIFO), and core_pattern is unchanged. */
    g_autofree char *after = vmf_sh_ok(v, "sleep 1.5; cat /proc/sys/kernel/core_pattern");
    FX_CHECK(strcmp(before, after) == 0, "core_pattern changed from '%s' to '%s'", before, after);
    FX_CHECK(strstr(after, "evil") == NULL, "core_pattern names the container's program: %s",
             after);
    fx_log("closed: service logs through a symlink or a FIFO (core_pattern stays '%s')",
           g_strchomp(after));

    /* A service that prints all along, then a freeze: wisp-init must go on serving. */
    start_service(v, "chatty", "while true; do echo tick; sleep 0.05; done");
    GError *err = NULL;
    FX_CHECK(agent_client_freeze(v->agent, 10000, &err), "freeze: %s", err ? err->message : "?");
    g_autofree char *during = vmf_sh_ok(v, "sleep 1; echo still serving");
    FX_CHECK(strstr(during, "still serving") != NULL, "exec while frozen: %s", during);
    FX_CHECK(!agent_client_service_stop(v->agent, "chatty", 10000, &err),
             "stopping a service while frozen must be refused (its files are on the disk)");
    g_clear_error(&err);
    FX_CHECK(agent_client_thaw(v->agent, 10000, &err), "thaw: %s", err ? err->message : "?");
    FX_CHECK(agent_client_service_stop(v->agent, "chatty", 10000, &err), "stop chatty: %s",
             err ? err->message : "?");
    fx_log("closed: a service printing while frozen does not wedge wisp-init");
}

int main(void)
{
    struct vmf_image img;
    struct vmf_disk disk;
    struct vmf_vm v;

    fx_setup("vm-escapes");
    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "sprite");
    vmf_boot(&v, &img, &disk, "vm", false, "escapes");
    check_escapes(&v);
    check_platform_files(&v);
    vmf_shutdown(&v);
    fx_server_stop(&disk.server);
    fx_log("ok");
    return 0;
}
