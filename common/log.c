/* log.c: levels, per-module debug switches and a replaceable sink. */
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static enum wisp_log_level log_threshold = WISP_LOG_WARN;
static char log_debug_modules[256]; /* ",store,s3," or ",all," */
static wisp_log_sink log_sink;

static void log_stderr_sink(enum wisp_log_level level, const char *module, const char *msg)
{
    fprintf(stderr, "wisp: %s: %s: %s\n", wisp_log_level_to_string(level), module, msg);
}

static void log_read_environment(void)
{
    const char *level = getenv("WISP_LOG_LEVEL");
    const char *debug = getenv("WISP_DEBUG");

    if (level) {
        for (int l = WISP_LOG_ERROR; l <= WISP_LOG_DEBUG; l++)
            if (strcasecmp(level, wisp_log_level_to_string(l)) == 0)
                log_threshold = l;
    }
    if (debug && *debug)
        snprintf(log_debug_modules, sizeof log_debug_modules, ",%s,", debug);
    else
        log_debug_modules[0] = '\0';
    if (!log_sink)
        log_sink = log_stderr_sink;
}

void wisp_log_init(void)
{
    pthread_once(&log_once, log_read_environment);
    log_read_environment();
}

void wisp_log_set_sink(wisp_log_sink sink)
{
    pthread_once(&log_once, log_read_environment);
    log_sink = sink ? sink : log_stderr_sink;
}

void wisp_log_set_level(enum wisp_log_level level)
{
    pthread_once(&log_once, log_read_environment);
    log_threshold = level;
}

const char *wisp_log_level_to_string(enum wisp_log_level level)
{
    switch (level) {
    case WISP_LOG_ERROR:
        return "error";
    case WISP_LOG_WARN:
        return "warn";
    case WISP_LOG_INFO:
        return "info";
    case WISP_LOG_DEBUG:
        return "debug";
    }
    return "?";
}

static bool log_module_debug_enabled(const char *module)
{
    char needle[64];

    if (!log_debug_modules[0])
        return false;
    if (strstr(log_debug_modules, ",all,"))
        return true;
    snprintf(needle, sizeof needle, ",%s,", module);
    return strstr(log_debug_modules, needle) != NULL;
}

bool wisp_log_enabled(enum wisp_log_level level, const char *module)
{
    pthread_once(&log_once, log_read_environment);
    if (level == WISP_LOG_DEBUG)
        return log_threshold >= WISP_LOG_DEBUG || log_module_debug_enabled(module);
    return level <= log_threshold;
}

void wisp_vlog(enum wisp_log_level level, const char *module, const char *fmt, va_list ap)
{
    char msg[2048];

    if (!wisp_log_enabled(level, module))
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    log_sink(level, module, msg);
}

void wisp_log(enum wisp_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    wisp_vlog(level, module, fmt, ap);
    va_end(ap);
}
