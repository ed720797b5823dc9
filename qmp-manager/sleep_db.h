/* sleep_db.h: cold sleep and wake with every transition recorded in the sprite database, the
 * way the manager runs them.
 *
 *   sprite_sleep_cold: begin GOING_COLD (with the manifest key it will write, sleep_seq + 1),
 *     sleep_cold (sleep_cold_private if opts->private_ram_config), then end COLD_ASLEEP with the
 * key.  On failure: RUNNING if QEMU still runs (sleep_cold resumes it), else CRASHED with the
 * reason (QEMU is gone and no manifest was written; the RAM file and state stay in DIR).
 *   sprite_wake_cold: begin WAKING, wake_cold, then end RUNNING with QEMU's pid and run dir.  On
 *     failure: back to COLD_ASLEEP (the manifest in the store is untouched).
 * A manager that dies between a begin and its end leaves the row for sprite_db_recover. */
#ifndef WISP_SLEEP_DB_H
#define WISP_SLEEP_DB_H

#include "sleep.h"
#include "sprite_db.h"

/* opts->manifest_key and opts->known are filled in here: the key from the record's incarnation
 * and sleep count (sleep_manifest_key_incarnation),
 * the known set from the previous manifest (if the store still has it), or on a first sleep
 * from opts->template_manifest_key's (template_store.h) when it is set. */
bool sprite_sleep_cold(sprite_db *db, struct vm *vm, struct cold_sleep_opts *opts,
                       struct cold_sleep_result *out, GError **error);
/* opts->manifest_key is taken from the record. */
struct vm *sprite_wake_cold(sprite_db *db, const char *name, struct wake_opts *opts,
                            GMainContext *ctx, struct wake_result *out, GError **error);

#endif
