/* ram_chunks.h: a file (a sprite's RAM image, or its migration state) as content-addressed chunks
 * in the object store.
 *
 * The file is cut at a fixed chunk size.  A chunk that is all zeroes is not stored (its entry in
 * the list is ""); any other chunk is stored once under RAM_CHUNK_PREFIX + its hex SHA-256, so a
 * page range equal to the template's, or to an earlier sleep's, costs nothing the second time.
 * Before uploading, a chunk is looked up in `known` (hashes the caller knows to be in the store,
 * e.g. from the sprite's previous manifest), then with a HEAD; only missing chunks are PUT, and
 * found ones older than RAM_CHUNK_REFRESH_AGE_S, which are PUT again (refreshed) so that a
 * garbage collection running now keeps them (vm_gc.h).  `known` must therefore come from a
 * manifest that GC keeps (a root: the sprite's newest, a pinned one, a template's).
 *
 * Restore writes a sparse file of the recorded size: zero chunks stay holes, every other distinct
 * chunk is fetched once and its SHA-256 compared to its name (repeats are copied from the first
 * occurrence); a chunk that does not match is never written,
 * and the restore fails naming it.
 *
 * Both directions run RAM_CHUNK_WORKERS threads against the store (store.h is thread-safe). */
#ifndef WISP_RAM_CHUNKS_H
#define WISP_RAM_CHUNKS_H

#include "store.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define RAM_CHUNK_PREFIX        "vm/chunks/"
#define RAM_CHUNK_BYTES_DEFAULT (64u * 1024u)
#define RAM_CHUNK_WORKERS       8
/* GC's rule (vm_gc.h, (a)), in numbers, all ages on the store's clock:
 *
 *   ** A chunk a pass found by HEAD is PUT again (refreshed) when it is older than R at the
 *   ** pass's start; the manifest is PUT at most P after the pass's start, else the pass is
 *   ** done again.  GC refuses a grace below G (unless forced).  With P = G - R - M:
 *   **   a chunk not refreshed is at most R + P = G - M old when the manifest lands;
 *   **   a chunk uploaded or refreshed in the pass is at most P old;
 *   ** so every chunk the manifest names is younger than any accepted grace, with M (the PUT
 *   ** itself, the clock's reading) to spare.
 *
 * R = RAM_CHUNK_REFRESH_AGE_S, M = RAM_CHUNK_MARGIN_S, G = RAM_CHUNK_GRACE_MIN_S,
 * P = RAM_CHUNK_PASS_MAX_S.  G = 2R + M, so P = R.  VM_GC_GRACE_DEFAULT (1 h) >= G. */
#define RAM_CHUNK_REFRESH_AGE_S 1500
#define RAM_CHUNK_MARGIN_S      300
#define RAM_CHUNK_GRACE_MIN_S   (2 * RAM_CHUNK_REFRESH_AGE_S + RAM_CHUNK_MARGIN_S)
#define RAM_CHUNK_PASS_MAX_S    (RAM_CHUNK_GRACE_MIN_S - RAM_CHUNK_REFRESH_AGE_S - RAM_CHUNK_MARGIN_S)
/* A sleep or publish whose pass overran RAM_CHUNK_PASS_MAX_S this many times fails. */
#define RAM_CHUNK_PASSES_MAX 3

/* One pass of storing chunks for a manifest: when it started (monotonic) and the store's clock
 * then (chunk_gc_store_clock: the ages of the objects HEAD finds are measured on it, never on
 * this host's clock). */
struct chunk_pass {
    gint64 start_us;
    time_t store_now;
};

/* A file as chunk hashes. */
struct chunk_list {
    uint64_t file_bytes;
    uint32_t chunk_bytes;
    GPtrArray *hashes; /* char *: 64 hex digits, or "" for an all-zero chunk */
};

struct chunk_upload_stats {
    uint64_t chunks, zero_chunks, known_chunks, uploaded_chunks;
    uint64_t uploaded_bytes;
    uint64_t refreshed_chunks; /* found by HEAD but old, PUT again (counted in known_chunks) */
};

void chunk_list_init(struct chunk_list *cl, uint64_t file_bytes, uint32_t chunk_bytes);
void chunk_list_clear(struct chunk_list *cl);

/* Starts a pass: reads the store's clock (one PUT and DELETE of a marker). */
bool chunk_pass_begin(struct store *st, struct chunk_pass *pass, GError **error);
/* Whether the manifest of the pass may still be PUT now (see above); *elapsed_s (may be NULL):
 * seconds since the pass began. */
bool chunk_pass_fresh(const struct chunk_pass *pass, double *elapsed_s);

/* Cuts the file at path into chunks and uploads those the store lacks, refreshing old ones as of
 * the pass's store clock.  known: NULL, or a set of hex hashes already in the store (not
 * modified).  stats (may be NULL) is filled in. */
bool chunk_list_store_in_pass(struct store *st, const struct chunk_pass *pass, const char *path,
                              uint32_t chunk_bytes, GHashTable *known, struct chunk_list *out,
                              struct chunk_upload_stats *stats, GError **error);
/* The same in a pass of its own (a caller that writes no manifest, or one file). */
bool chunk_list_store(struct store *st, const char *path, uint32_t chunk_bytes, GHashTable *known,
                      struct chunk_list *out, struct chunk_upload_stats *stats, GError **error);

/* Writes the file at path (replacing it, through a temporary name) from the store.  *fetched_bytes
 * (may be NULL): bytes read from the store. */
bool chunk_list_restore(struct store *st, const struct chunk_list *cl, const char *path,
                        uint64_t *fetched_bytes, GError **error);

/* Adds the list's non-zero hashes to a set (g_str_hash / g_str_equal, keys g_free'd). */
void chunk_list_add_to_set(const struct chunk_list *cl, GHashTable *set);

#endif
