/* boot.c: pseudo filesystems and kernel modules, for PID 1 in the initramfs. */
#include "boot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

struct basic_mount {
    const char *source, *target, *type;
    unsigned long flags;
    const char *data;
};

static const struct basic_mount basic_mounts[] = {
    {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666"},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
};

int boot_mount_basics(void)
{
    int first_err = 0;
    for (size_t i = 0; i < sizeof basic_mounts / sizeof basic_mounts[0]; i++) {
        const struct basic_mount *m = &basic_mounts[i];
        if (mkdir(m->target, 0755) < 0 && errno != EEXIST) {
            log_error("mkdir %s: %m", m->target);
            if (!first_err)
                first_err = -errno;
            continue;
        }
        if (mount(m->source, m->target, m->type, m->flags, m->data) < 0 && errno != EBUSY) {
            log_error("mount %s on %s: %m", m->type, m->target);
            if (!first_err)
                first_err = -errno;
        }
    }
    return first_err;
}

static int load_module(const char *dir, const char *name)
{
    char path[512];
    const char *suffix = strstr(name, ".ko") ? "" : ".ko";
    if (snprintf(path, sizeof path, "%s/%s%s", dir, name, suffix) >= (int)sizeof path)
        return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = -errno;
        log_error("open %s: %m", path);
        return e;
    }
    int r = (int)syscall(SYS_finit_module, fd, "", 0);
    int e = r < 0 ? errno : 0;
    close(fd);
    if (r < 0 && e != EEXIST) {
        errno = e;
        /* ENODEV is expected for hardware-specific variants (crc32c-intel without SSE4.2). */
        log_msg(e == ENODEV ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR, "finit_module %s: %m", path);
        return -e;
    }
    return 0;
}

void boot_tune_kernel(void)
{
    /* The kernel rate-limits writers of /dev/kmsg (10 lines in 5 s): wisp-init is the only one
     * and its lines are the platform's log. */
    int fd = open("/proc/sys/kernel/printk_devkmsg", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "on\n", 3) != 3)
        log_warn("printk_devkmsg: %m (wisp-init's log lines may be dropped)");
    if (fd >= 0)
        close(fd);
}

int boot_load_modules(const char *dir)
{
    char order_path[512];
    if (snprintf(order_path, sizeof order_path, "%s/order", dir) >= (int)sizeof order_path)
        return -ENAMETOOLONG;
    FILE *f = fopen(order_path, "re");
    if (f == NULL) {
        int e = -errno;
        log_warn("open %s: %m (no modules loaded)", order_path);
        return e;
    }
    char line[256];
    int failed = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, " \t\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        /* The order file names modules by basename; a path is reduced to one. */
        const char *name = strrchr(line, '/') ? strrchr(line, '/') + 1 : line;
        if (load_module(dir, name) < 0)
            failed++;
    }
    fclose(f);
    return failed;
}
