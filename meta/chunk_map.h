/* chunk_map.h: a disk version's map from chunk index to chunk hash, and its Merkle encoding.
 *
 * In memory a chunk_map is sparse: only indices that hold data have an entry; every other index
 * reads as zeros (all-zero chunks are never stored, so they never appear here either).
 *
 * Persistent form (the "map pages"): the index space is cut into leaves of CHUNK_MAP_FANOUT
 * consecutive indices.  A leaf page lists its non-empty entries; an interior page lists its
 * non-empty children by position and page hash; each page is named by the SHA-256 of its
 * encoding.  A version is one root hash, so checkpoint, restore and clone copy 32 bytes, and
 * two versions share every page they have in common.  An empty map has the all-zero root.
 *
 * Encoding of a page (all integers little-endian):
 *   magic "WMP1" (4 bytes) | kind u8 (0 leaf, 1 interior) | level u8 (0 for leaves) |
 *   reserved u16 = 0 | first u64 (first index the page covers) | count u32 |
 *   count × { position u32 (< CHUNK_MAP_FANOUT, strictly increasing) | hash 32 bytes }
 * A leaf at level 0 covers [first, first + FANOUT); an interior page at level L covers
 * [first, first + FANOUT^(L+1)) and its children are at level L-1.  Decoders check every field.
 *
 * Thread safety: none; the owner locks. */
#ifndef WISP_CHUNK_MAP_H
#define WISP_CHUNK_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHUNK_HASH_LEN   32
#define CHUNK_MAP_FANOUT 1024

struct chunk_hash {
    uint8_t b[CHUNK_HASH_LEN];
};

/* The all-zero hash names the empty map (and is never a chunk's hash in a map). */
bool chunk_hash_is_zero(const struct chunk_hash *h);
/* 64 lower-case hex digits and a NUL. */
void chunk_hash_to_hex(const struct chunk_hash *h, char out[2 * CHUNK_HASH_LEN + 1]);
/* Returns 0, or -EINVAL if hex is not exactly 64 hex digits. */
int chunk_hash_from_hex(const char *hex, struct chunk_hash *out);

struct chunk_map;

/* n_chunks: the disk's size in chunks; indices are < n_chunks. */
struct chunk_map *chunk_map_new(uint64_t n_chunks);
void chunk_map_free(struct chunk_map *m);
struct chunk_map *chunk_map_copy(const struct chunk_map *m);
uint64_t chunk_map_n_chunks(const struct chunk_map *m);
/* Number of non-empty entries. */
uint64_t chunk_map_count(const struct chunk_map *m);

/* True and *out set when idx has data. */
bool chunk_map_get(const struct chunk_map *m, uint64_t idx, struct chunk_hash *out);
/* Sets idx; a zero hash removes it.  Returns 0 or -ENOMEM / -ERANGE. */
int chunk_map_set(struct chunk_map *m, uint64_t idx, const struct chunk_hash *h);
void chunk_map_remove(struct chunk_map *m, uint64_t idx);
/* The first index >= from that has data: true and *idx (and *h if not NULL) set, or false. */
bool chunk_map_next(const struct chunk_map *m, uint64_t from, uint64_t *idx, struct chunk_hash *h);
/* Calls fn for each entry in index order; stops and returns fn's non-zero result. */
int chunk_map_foreach(const struct chunk_map *m,
                      int (*fn)(uint64_t idx, const struct chunk_hash *h, void *opaque),
                      void *opaque);

/* ---- Merkle pages ------------------------------------------------------------------------- */

/* Receives each page of a map as it is encoded, children before parents.  Returns 0 or a
 * negative errno, which stops the encoding. */
typedef int (*chunk_map_page_sink)(const struct chunk_hash *page_hash, const void *page, size_t len,
                                   void *opaque);
/* Fetches a page by hash into a malloc'd buffer.  Returns 0, -ENOENT or another -errno. */
typedef int (*chunk_map_page_source)(const struct chunk_hash *page_hash, void **page, size_t *len,
                                     void *opaque);

/* Encodes m as pages, giving each to sink, and sets *root.  Pages whose leaves did not change
 * since the map was loaded or last encoded are not re-encoded (the map remembers page hashes
 * and which leaves changed), so encoding after a few writes costs a few pages, not the map. */
int chunk_map_encode(struct chunk_map *m, chunk_map_page_sink sink, void *opaque,
                     struct chunk_hash *root);
/* Forgets which pages were already given to a sink, so the next chunk_map_encode emits every
 * page of the map.  Call it when pages a sink accepted were not kept after all (the transaction
 * that stored them rolled back); otherwise the next encode would name pages that do not exist.
 * A failed chunk_map_encode needs no such call: it keeps the map's changes for the next one. */
void chunk_map_forget_pages(struct chunk_map *m);

/* Builds the map of n_chunks whose root is root, reading pages through source, and verifying
 * that each page's SHA-256 is its name.  -EBADMSG names a corrupt page. */
int chunk_map_decode(const struct chunk_hash *root, uint64_t n_chunks, chunk_map_page_source source,
                     void *opaque, struct chunk_map **out);

/* Decodes one page's header and entries (for fuzzing and for GC walks).  Returns 0 or
 * -EBADMSG.  On success the entries are in entries[0..*count), which the caller frees. */
struct chunk_map_page_entry {
    uint32_t position;
    struct chunk_hash hash;
};
struct chunk_map_page_info {
    uint8_t kind; /* 0 leaf, 1 interior */
    uint8_t level;
    uint64_t first;
    uint32_t count;
    struct chunk_map_page_entry *entries;
};
int chunk_map_page_parse(const void *page, size_t len, struct chunk_map_page_info *out);

#endif
