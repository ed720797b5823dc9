/* memory_pressure.h: whether the host is short of memory, for the idle policy (idle_policy.h).
 *
 * Two measures, each off when its limit is 0:
 *   - MemAvailable in /proc/meminfo below low_mib;
 *   - PSI: "some avg10" in /proc/pressure/memory (the share of the last 10 s in which some task
 *     waited for memory) at or above psi_percent.  A kernel without PSI has no such file: the
 *     measure is then silently off. */
#ifndef WISP_MEMORY_PRESSURE_H
#define WISP_MEMORY_PRESSURE_H

#include <stdbool.h>
#include <stddef.h>

struct memory_pressure_limits {
    unsigned low_mib;     /* MemAvailable below this; 0: not checked */
    unsigned psi_percent; /* some avg10 at or above this; 0: not checked */
};

/* why (may be NULL) says which measure and its value.  meminfo/psi: the files to read (NULL:
 * /proc/meminfo, /proc/pressure/memory; tests pass their own). */
bool memory_pressure_check(const struct memory_pressure_limits *lim, const char *meminfo,
                           const char *psi, char *why, size_t why_len);

#endif
