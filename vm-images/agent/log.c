/* log.c: lines to /dev/kmsg with a syslog level prefix, or to stderr. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int kmsg_fd = -1;
static int debug_enabled;

void log_open(int debug, bool kmsg)
{
    debug_enabled = debug;
    if (kmsg_fd >= 0 || !kmsg)
        return;
    kmsg_fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NONBLOCK);
}

void log_msg(int level, const char *fmt, ...)
{
    if (level >= LOG_LEVEL_DEBUG && !debug_enabled)
        return;
    int saved = errno; /* callers pass %m after the failing call */
    char line[1024];
    int n = snprintf(line, sizeof line, "<%d>wisp-init: ", level);
    va_list ap;
    va_start(ap, fmt);
    errno = saved;
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    if (kmsg_fd >= 0) {
        /* kmsg takes one record per write; a full ring just drops it (O_NONBLOCK). */
        if (write(kmsg_fd, line, len) >= 0) {
            errno = saved;
            return;
        }
    }
    /* Before /dev: skip the "<N>" prefix, which only the kernel understands. */
    const char *text = strchr(line, '>') + 1;
    if (write(STDERR_FILENO, text, len - (size_t)(text - line)) < 0) {
        /* nowhere left to report it */
    }
    errno = saved;
}
