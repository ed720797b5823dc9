/* template_store.h: a template's RAM in the object store, so that a clone's first cold sleep
 * stores only what differs from the template.
 *
 * A clone starts from the template's RAM image, so its RAM file at its first cold sleep equals
 * the template's at the same offsets wherever the clone did not write.  Publishing cuts the
 * template's RAM file and state into the same 64 KiB chunks as a sleep (ram_chunks.h, under
 * vm/chunks/) and writes a manifest in the sleep manifest's format (sleep.h), sprite
 * "template/KEY16":
 *
 *   vm/templates/KEY16/ID/manifest.json
 *
 * KEY16 is the template's key (the image's input hash) cut to 16 digits, ID the first 16 hex
 * digits of the SHA-256 of its chunk hashes: two hosts that boot the same image get different
 * RAM (timing, randomness), so each build is its own template in the store.  The key is also
 * written to the template's directory (store-manifest), so that a second publish of the same
 * build only checks that the manifest is still in the store.
 *
 * cold_sleep_opts.template_manifest_key names it; sprite_sleep_cold then takes its chunks as the
 * known set of a sprite's first sleep.  GC (vm_gc.h) keeps every template manifest's chunks;
 * vm_template_store_delete removes a template that no sprite will sleep from again (the chunks
 * then go at the next GC run, unless a sleep manifest names them). */
#ifndef WISP_TEMPLATE_STORE_H
#define WISP_TEMPLATE_STORE_H

#include "ram_chunks.h"
#include "store.h"
#include "template.h"

#include <glib.h>
#include <stdbool.h>

/* Publishes t into st (see above), or finds it published.  Returns the manifest key (g_free it),
 * or NULL with error.  stats (may be NULL): the RAM's chunks (zero when it was published
 * already). */
char *vm_template_store_publish(struct store *st, const struct vm_template *t,
                                struct chunk_upload_stats *stats, GError **error);

/* Deletes a template manifest (its chunks go at the next GC).  Only once no sprite will take it
 * as its first sleep's known set (its pool is gone): a sleep relies on its chunks staying. */
bool vm_template_store_delete(struct store *st, const char *manifest_key, GError **error);

#endif
