/* memory_pressure.c: is the host short of memory (memory_pressure.h). */
#include "memory_pressure.h"

#include <glib.h>
#include <stdio.h>
#include <string.h>

bool memory_pressure_check(const struct memory_pressure_limits *lim, const char *meminfo,
                           const char *psi, char *why, size_t why_len)
{
    g_autofree char *text = NULL;

    if (lim->low_mib &&
        g_file_get_contents(meminfo ? meminfo : "/proc/meminfo", &text, NULL, NULL)) {
        const char *p = strstr(text, "MemAvailable:");
        unsigned long long kib = 0;
        if (p && sscanf(p, "MemAvailable: %llu kB", &kib) == 1 &&
            kib < (unsigned long long)lim->low_mib * 1024) {
            if (why)
                snprintf(why, why_len, "MemAvailable %llu MiB < %u MiB", kib / 1024, lim->low_mib);
            return true;
        }
    }
    g_clear_pointer(&text, g_free);
    /* PSI: the share of the last 10 s in which some task waited for memory. */
    if (lim->psi_percent &&
        g_file_get_contents(psi ? psi : "/proc/pressure/memory", &text, NULL, NULL)) {
        double avg10 = 0;
        if (sscanf(text, "some avg10=%lf", &avg10) == 1 && avg10 >= lim->psi_percent) {
            if (why)
                snprintf(why, why_len, "memory pressure some avg10=%.2f >= %u", avg10,
                         lim->psi_percent);
            return true;
        }
    }
    return false;
}
