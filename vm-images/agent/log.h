/* log.h: wisp-init's one logging path.  Lines go to the kernel log (/dev/kmsg, so they reach the
 * serial console by the kernel's loglevel and `dmesg`), or to stderr before /dev exists. */
#ifndef WISP_AGENT_LOG_H
#define WISP_AGENT_LOG_H

#include <stdbool.h>

#define LOG_LEVEL_ERROR 3
#define LOG_LEVEL_WARN  4
#define LOG_LEVEL_INFO  6
#define LOG_LEVEL_DEBUG 7

/* Opens /dev/kmsg when kmsg is true (PID 1; harmless to call again once /dev is mounted), else
 * logs to stderr (tests).  debug enables debug lines. */
void log_open(int debug, bool kmsg);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
