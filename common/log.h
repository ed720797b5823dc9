/* log.h: the one logging path of Wisp.
 *
 * Every module logs through wisp_log(), naming itself ("store", "s3", ...).  Messages at
 * WISP_LOG_DEBUG are printed only for modules switched on by WISP_DEBUG=mod1,mod2 (or "all").
 * The threshold for the other levels comes from WISP_LOG_LEVEL (error, warn, info, debug);
 * the default is "warn".  A program that has its own logger (nbdkit) installs a sink. */
#ifndef WISP_LOG_H
#define WISP_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum wisp_log_level {
    WISP_LOG_ERROR = 0,
    WISP_LOG_WARN = 1,
    WISP_LOG_INFO = 2,
    WISP_LOG_DEBUG = 3,
};

typedef void (*wisp_log_sink)(enum wisp_log_level level, const char *module, const char *msg);

/* Reads WISP_LOG_LEVEL and WISP_DEBUG.  Called lazily by the first wisp_log(); call it again
 * after changing the environment. */
void wisp_log_init(void);
void wisp_log_set_sink(wisp_log_sink sink);
void wisp_log_set_level(enum wisp_log_level level);
bool wisp_log_enabled(enum wisp_log_level level, const char *module);
const char *wisp_log_level_to_string(enum wisp_log_level level);

void wisp_log(enum wisp_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void wisp_vlog(enum wisp_log_level level, const char *module, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define log_error(mod, ...) wisp_log(WISP_LOG_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...)  wisp_log(WISP_LOG_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...)  wisp_log(WISP_LOG_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...)                                                                        \
    do {                                                                                           \
        if (wisp_log_enabled(WISP_LOG_DEBUG, mod))                                                 \
            wisp_log(WISP_LOG_DEBUG, mod, __VA_ARGS__);                                            \
    } while (0)

#endif
