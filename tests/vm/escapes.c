/* escapes.c: from inside the sprite's container, the platform is out of reach: no process of
 * the platform (so none of wisp-init's memory) is visible, the container's PID 1 inherited no
 * environment, /proc/PID/root of every visible process is the container's own root, the raw
 * disk and the control port cannot be reached through mknod, and neither a new proc mount nor
 * mounting the disk again shows the platform. */
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
    vmf_shutdown(&v);
    fx_server_stop(&disk.server);
    fx_log("ok");
    return 0;
}
