/* sprite_files.c: see sprite_files.h. */
#include "sprite_files.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "container.h"

#define SPRITE_RESOLVE                                                                             \
    (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

/* glibc 2.36 has no openat2 wrapper. */
static int sprite_openat2(int dir, const char *name, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (unsigned long long)(flags | O_NOFOLLOW | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = SPRITE_RESOLVE,
    };
    long fd = syscall(SYS_openat2, dir, name, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

int sprite_dir_open(const char *rel, bool create)
{
    int dir = open(CONTAINER_ROOT, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir < 0)
        return -errno;
    const char *p = rel;
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        char comp[256];
        if (len == 0 || len >= sizeof comp || (len <= 2 && strncmp(p, "..", len) == 0)) {
            close(dir);
            return -EINVAL;
        }
        memcpy(comp, p, len);
        comp[len] = '\0';
        if (create && mkdirat(dir, comp, 0755) < 0 && errno != EEXIST) {
            int e = -errno;
            close(dir);
            return e;
        }
        int next = sprite_openat2(dir, comp, O_RDONLY | O_DIRECTORY, 0);
        close(dir);
        if (next < 0)
            return next;
        dir = next;
        p += len;
        if (*p == '/')
            p++;
    }
    return dir;
}

int sprite_file_open(int dir, const char *name, int flags, mode_t mode)
{
    if (name[0] == '\0' || strchr(name, '/') != NULL)
        return -EINVAL;
    /* O_NONBLOCK: a FIFO must not block PID 1 in open (nor in a read or write afterwards). */
    int fd = sprite_openat2(dir, name, flags | O_NONBLOCK, mode);
    if (fd < 0)
        return fd;
    struct stat st;
    int e = fstat(fd, &st) < 0 ? -errno : S_ISREG(st.st_mode) ? 0 : -EINVAL;
    if (e < 0) {
        close(fd);
        return e;
    }
    /* A regular file: blocking I/O is what the callers expect. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        e = -errno;
        close(fd);
        return e;
    }
    return fd;
}
