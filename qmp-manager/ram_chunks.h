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

#define RAM_CHUNK_PREFIX        "vm/chunks/"
#define RAM_CHUNK_BYTES_DEFAULT (64u * 1024u)
#define RAM_CHUNK_WORKERS       8
/* Half of VM_GC_GRACE_DEFAULT (vm_gc.h): a chunk found by HEAD and older than this is PUT again. */
#define RAM_CHUNK_REFRESH_AGE_S 1800

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

/* Cuts the file at path into chunks and uploads those the store lacks.  known: NULL, or a set of
 * hex hashes already in the store (not modified).  stats (may be NULL) is filled in. */
bool chunk_list_store(struct store *st, const char *path, uint32_t chunk_bytes, GHashTable *known,
                      struct chunk_list *out, struct chunk_upload_stats *stats, GError **error);

/* Writes the file at path (replacing it, through a temporary name) from the store.  *fetched_bytes
 * (may be NULL): bytes read from the store. */
bool chunk_list_restore(struct store *st, const struct chunk_list *cl, const char *path,
                        uint64_t *fetched_bytes, GError **error);

/* Adds the list's non-zero hashes to a set (g_str_hash / g_str_equal, keys g_free'd). */
void chunk_list_add_to_set(const struct chunk_list *cl, GHashTable *set);

#endif
