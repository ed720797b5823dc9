/* sleep_internal.h: the steps sleep.c shares with sleep_private.c (not for other callers). */
#ifndef WISP_SLEEP_INTERNAL_H
#define WISP_SLEEP_INTERNAL_H

#include "sleep.h"

#define SLEEP_MAX_BANDWIDTH_BS ((gint64)100 << 30) /* the default, 32 MiB/s, throttles */

/* A QMP command whose reply is not needed; args: JSON text or NULL.  The error names `what`. */
bool sleep_qmp_ok(qmp_client *c, int timeout_ms, GError **error, const char *what,
                  const char *command, const char *args);
/* Polls query-migrate until completed (true) or failed, cancelled or timed out (false). */
bool sleep_migrate_wait(qmp_client *c, int timeout_ms, const char *what, GError **error);
bool sleep_set_ignore_shared(qmp_client *c, int timeout_ms, const char *what, GError **error);
/* Agent exec `sync` in the guest. */
bool sleep_guest_sync(agent_client *agent, int timeout_ms, GError **error);
/* The manifest's JSON text (g_free it): format, sprite, key, mem_mib, created_us, ram, state. */
char *sleep_manifest_build(const char *sprite, const char *key, unsigned mem_mib,
                           const struct chunk_list *ram, const struct chunk_list *state);
/* DIR/ram and DIR/state as chunks in the store, then the manifest (local, then store). */
bool sleep_store_local_copy(const struct cold_sleep_opts *o, struct cold_sleep_result *out,
                            GError **error);

#endif
