/* vm_config.c: the QEMU command line of a microvm (see vm_config.h). */
#include "vm_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK(wisp - vm - error - quark, vm_error)

unsigned vm_host_cpu_khz(void)
{
    g_autofree char *text = NULL;
    unsigned khz = 0;

    if (g_file_get_contents("/proc/cpuinfo", &text, NULL, NULL)) {
        for (char *line = text; line && *line;) {
            char *next = strchr(line, '\n');
            double mhz;
            if (next)
                *next++ = '\0';
            if (strncmp(line, "cpu MHz", 7) == 0) {
                const char *colon = strchr(line, ':');
                /* g_ascii_strtod: the decimal point is '.', whatever the locale. */
                if (colon && (mhz = g_ascii_strtod(colon + 1, NULL)) > 0)
                    return (unsigned)(mhz * 1000.0 + 0.5);
            }
            line = next;
        }
    }
    g_free(text);
    text = NULL;
    if (g_file_get_contents("/sys/devices/system/cpu/cpu0/cpufreq/base_frequency", &text, NULL,
                            NULL) ||
        g_file_get_contents("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", &text, NULL,
                            NULL))
        khz = (unsigned)strtoul(text, NULL, 10);
    return khz;
}

char *vm_config_kernel_cmdline(const struct vm_config *cfg, unsigned tsc_khz)
{
    GString *s = g_string_new("console=ttyS0 panic=-1 quiet");

    if (tsc_khz)
        g_string_append_printf(s, " tsc_early_khz=%u", tsc_khz);
    if (cfg->cmdline_extra && *cfg->cmdline_extra)
        g_string_append_printf(s, " %s", cfg->cmdline_extra);
    return g_string_free(s, FALSE);
}

static void argv_add(GPtrArray *a, const char *arg)
{
    g_ptr_array_add(a, g_strdup(arg));
}

static void argv_addf(GPtrArray *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void argv_addf(GPtrArray *a, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_ptr_array_add(a, g_strdup_vprintf(fmt, ap));
    va_end(ap);
}

/* QEMU's option syntax uses ',' as separator: a literal comma in a value is doubled. */
static char *qemu_opt_escape(const char *value)
{
    GString *s = g_string_new(NULL);

    for (const char *p = value; *p; p++) {
        if (*p == ',')
            g_string_append_c(s, ',');
        g_string_append_c(s, *p);
    }
    return g_string_free(s, FALSE);
}

char **vm_config_build_argv(const struct vm_config *cfg, enum vm_accel accel, unsigned tsc_khz,
                            const char *qmp_path, const char *ctl_path, const char *serial_path,
                            GError **error)
{
    const char *qemu = cfg->qemu ? cfg->qemu : getenv("WISP_QEMU");
    unsigned mem = cfg->mem_mib ? cfg->mem_mib : 256;
    GPtrArray *a;
    char *cmdline;

    if (!cfg->kernel || !cfg->initrd) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "a kernel and an initramfs are required");
        return NULL;
    }
    if (accel != VM_ACCEL_KVM && accel != VM_ACCEL_TCG) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "the accelerator must be decided");
        return NULL;
    }
    if (cfg->disk == VM_DISK_NBD && !cfg->nbd_socket) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "an NBD disk needs its socket");
        return NULL;
    }
    a = g_ptr_array_new();
    argv_add(a, qemu && *qemu ? qemu : "qemu-system-x86_64");
    argv_add(a, "-M");
    argv_add(a, "microvm");
    argv_add(a, "-accel");
    argv_add(a, vm_accel_to_string(accel));
    if (accel == VM_ACCEL_KVM) {
        argv_add(a, "-cpu");
        argv_add(a, "host");
    }
    argv_add(a, "-nodefaults");
    argv_add(a, "-no-user-config");
    argv_add(a, "-nographic");
    argv_add(a, "-m");
    argv_addf(a, "%u", mem);
    if (cfg->vcpus > 1) {
        argv_add(a, "-smp");
        argv_addf(a, "%u", cfg->vcpus);
    }
    argv_add(a, "-kernel");
    argv_add(a, cfg->kernel);
    argv_add(a, "-initrd");
    argv_add(a, cfg->initrd);
    cmdline = vm_config_kernel_cmdline(cfg, tsc_khz);
    argv_add(a, "-append");
    argv_add(a, cmdline);
    g_free(cmdline);

    if (cfg->mem_path) {
        g_autofree char *p = qemu_opt_escape(cfg->mem_path);
        argv_add(a, "-object");
        argv_addf(a, "memory-backend-file,id=mem,size=%uM,mem-path=%s,share=%s", mem, p,
                  cfg->mem_share ? "on" : "off");
        argv_add(a, "-machine");
        argv_add(a, "memory-backend=mem");
    }

    switch (cfg->disk) {
    case VM_DISK_NONE:
        break;
    case VM_DISK_NBD: {
        g_autofree char *sock = qemu_opt_escape(cfg->nbd_socket);
        g_autofree char *exp = qemu_opt_escape(cfg->nbd_export ? cfg->nbd_export : "");
        argv_add(a, "-blockdev");
        argv_addf(a,
                  "driver=nbd,node-name=%s,server.type=unix,server.path=%s,reconnect-delay=%d%s%s",
                  VM_NODE_DIRECT_NBD, sock, VM_NBD_RECONNECT_DELAY_S, *exp ? ",export=" : "", exp);
        argv_add(a, "-blockdev");
        argv_addf(a, "driver=raw,node-name=%s,file=%s", VM_NODE_SLOT, VM_NODE_DIRECT_NBD);
        break;
    }
    case VM_DISK_PLACEHOLDER:
        argv_add(a, "-blockdev");
        argv_addf(a, "driver=null-co,node-name=%s,size=%" G_GUINT64_FORMAT ",read-zeroes=on",
                  VM_NODE_PLACEHOLDER,
                  cfg->placeholder_bytes ? cfg->placeholder_bytes : (guint64)100 << 30);
        argv_add(a, "-blockdev");
        argv_addf(a, "driver=raw,node-name=%s,file=%s", VM_NODE_SLOT, VM_NODE_PLACEHOLDER);
        break;
    }
    if (cfg->disk != VM_DISK_NONE) {
        argv_add(a, "-device");
        argv_addf(a, "virtio-blk-device,drive=%s,id=vblk0", VM_NODE_SLOT);
    }

    g_autofree char *ctl = qemu_opt_escape(ctl_path);
    g_autofree char *qmp = qemu_opt_escape(qmp_path);
    g_autofree char *serial = qemu_opt_escape(serial_path);
    argv_add(a, "-device");
    argv_add(a, "virtio-serial-device,id=vser0");
    argv_add(a, "-chardev");
    argv_addf(a, "socket,id=ctl,path=%s,server=on,wait=off", ctl);
    argv_add(a, "-device");
    argv_addf(a, "virtserialport,chardev=ctl,name=%s", VM_CONTROL_PORT_NAME);
    argv_add(a, "-serial");
    argv_addf(a, "file:%s", serial);
    argv_add(a, "-qmp");
    argv_addf(a, "unix:%s,server=on,wait=off", qmp);
    if (cfg->paused)
        argv_add(a, "-S");
    if (cfg->incoming_defer) {
        argv_add(a, "-incoming");
        argv_add(a, "defer");
    }
    bool run_as = cfg->run_as && *cfg->run_as;
    if (cfg->sandbox) {
        /* With -runas, set*id must be allowed: QEMU 7.2 installs the filter before its setuid
         * (runas.h).  Once QEMU is the user, set*id cannot give root back. */
        argv_add(a, "-sandbox");
        argv_addf(a, "on,obsolete=deny,elevateprivileges=%s,spawn=deny,resourcecontrol=deny",
                  run_as ? "allow" : "deny");
    }
    if (run_as) {
        argv_add(a, "-runas");
        argv_add(a, cfg->run_as);
    }
    g_ptr_array_add(a, NULL);
    return (char **)g_ptr_array_free(a, FALSE);
}
