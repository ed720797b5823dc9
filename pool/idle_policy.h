/* idle_policy.h: wispd's idle policy: idle sprites go to warm sleep, then to cold sleep, and
 * the least recently used warm-asleep ones go cold first when the host runs short of memory
 * (docs/operations.md).
 *
 * Idle: no call acted on the sprite (create, exec, checkpoint, restore, sleep, wake; reads such
 * as GET do not count) and no exec stream is open on it (live_sprite.holds > 0) for the time.
 *
 * A GLib timeout on the main loop looks every second (never blocking: it only takes a snapshot
 * of the sprites, sprite_service_idle_snapshot); the sleeps themselves run one after another on
 * a worker thread, and a tick is skipped while the worker still runs.  Each sleep goes through
 * sprite_service_idle_sleep, which takes the sprite's op lock only if it is free and checks
 * again that the sprite is still idle, so the policy never waits for, nor races, a verb. */
#ifndef WISP_IDLE_POLICY_H
#define WISP_IDLE_POLICY_H

#include "sprite_service.h"

#include <glib.h>
#include <stdbool.h>

struct idle_policy_config {
    unsigned warm_s;         /* idle this long: warm sleep; 0: never */
    unsigned cold_s;         /* idle this long: cold sleep; 0: never */
    unsigned memory_low_mib; /* MemAvailable below this: memory pressure; 0: not checked */
    unsigned memory_psi;     /* /proc/pressure/memory "some avg10" at or above this (percent):
                                memory pressure; 0: not checked */
    unsigned interval_ms;    /* between two looks; 0: 1000 */
};

typedef struct idle_policy idle_policy;

/* Adds the timeout to the thread-default main context. */
idle_policy *idle_policy_start(sprite_service *svc, const struct idle_policy_config *cfg);
/* New settings (SIGHUP), from the next look on. */
void idle_policy_set_config(idle_policy *p, const struct idle_policy_config *cfg);
/* Removes the timeout and waits for the worker's current sleep.  NULL is allowed. */
void idle_policy_free(idle_policy *p);

#endif
