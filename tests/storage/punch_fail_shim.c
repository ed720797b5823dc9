/* punch_fail_shim.c: an LD_PRELOAD library for tests/storage/failed_write.c.  While the file
 * named by $WISP_TEST_PUNCH_FAIL exists, fallocate() with FALLOC_FL_PUNCH_HOLE fails with EIO
 * (a zero request's middle blocks are punched, after its head block was written): a write that
 * fails part way, inside the real nbdkit and plugin.  Everything else goes to glibc. */
/* Both entry points are defined, each under its own name: the build's large-file mode would
 * rename fallocate to fallocate64. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int fallocate(int fd, int mode, off_t offset, off_t len);
int fallocate64(int fd, int mode, off64_t offset, off64_t len);

static int punch_fails(int mode)
{
    const char *flag = getenv("WISP_TEST_PUNCH_FAIL");
    return (mode & FALLOC_FL_PUNCH_HOLE) && flag && access(flag, F_OK) == 0;
}

int fallocate(int fd, int mode, off_t offset, off_t len)
{
    static int (*real)(int, int, off_t, off_t);

    if (punch_fails(mode)) {
        errno = EIO;
        return -1;
    }
    if (!real)
        real = (int (*)(int, int, off_t, off_t))dlsym(RTLD_NEXT, "fallocate");
    return real(fd, mode, offset, len);
}

int fallocate64(int fd, int mode, off64_t offset, off64_t len)
{
    static int (*real)(int, int, off64_t, off64_t);

    if (punch_fails(mode)) {
        errno = EIO;
        return -1;
    }
    if (!real)
        real = (int (*)(int, int, off64_t, off64_t))dlsym(RTLD_NEXT, "fallocate64");
    return real(fd, mode, offset, len);
}
