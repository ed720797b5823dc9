/* chunk_cache.h: clean chunks on local disk, in front of the object store.
 *
 * The cache holds immutable chunks by content hash, as files CACHE/chunks/<hh>/<hex>, and
 * fetches what it lacks from the store (key "chunks/<hex>").  It is bounded: clean entries are
 * evicted least recently used first once clean plus dirty bytes pass max_bytes.  Dirty bytes are
 * the disks' unuploaded data (nbdkit-plugin/disk.c); they are pinned, only counted here.
 *
 * Verification: a chunk fetched from the store is hashed before it is used or cached.  A cache
 * file found at start-up is hashed on its first use; if it does not match its name it is
 * deleted and fetched again.  Wrong data is never returned.
 *
 * Thread safety: every function may be called from any thread. */
#ifndef WISP_CHUNK_CACHE_H
#define WISP_CHUNK_CACHE_H

#include "chunk_map.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct chunk_cache;

struct chunk_cache_stats {
    uint64_t hits, misses; /* reads served from a cache file / needing a fetch */
    uint64_t fetches;      /* GETs of chunks from the store */
    uint64_t fetch_bytes;
    uint64_t corrupt;    /* cache files or fetched bodies that failed verification */
    uint64_t refreshes;  /* dedup hits re-stored because they were old (GC, see upload) */
    uint64_t copy_bytes; /* written into cache files: fetched chunks, and chunks kept from
                          * memory because no file of theirs could be hard-linked */
    uint64_t evictions;
    uint64_t clean_bytes, dirty_bytes, max_bytes;
    uint64_t entries;
};

/* Opens the cache in dir (creating dir/chunks), indexing the files already there. */
int chunk_cache_open(const char *dir, uint64_t max_bytes, struct store *store,
                     struct chunk_cache **out);
void chunk_cache_close(struct chunk_cache *c);

/* Store key of a chunk: "chunks/<hex>". */
void chunk_cache_store_key(const struct chunk_hash *h, char key[80]);

/* Reads count bytes at offset within the chunk h, whose full length is chunk_len, fetching and
 * verifying the chunk if needed. */
int chunk_cache_read(struct chunk_cache *c, const struct chunk_hash *h, size_t chunk_len, void *buf,
                     size_t count, uint64_t offset);

/* Starts fetching h in the background if it is not cached (read-ahead, NBD_CMD_CACHE). */
void chunk_cache_prefetch(struct chunk_cache *c, const struct chunk_hash *h, size_t chunk_len);

/* Uploads a chunk to the store unless it is already there (content addressing makes an
 * existing object with that key the same bytes).  data is the content, already hashed to h.
 * An object already there whose mtime is older than the refresh age is stored again, the same
 * bytes, so that it is young when a commit names it: a GC may be deleting it otherwise
 * (meta/chunk_gc.h, invariant (a)). */
int chunk_cache_put(struct chunk_cache *c, const struct chunk_hash *h, const void *data,
                    size_t len);

/* Adds chunk h, of len bytes, to the cache unless it is there: by hard-linking path, a file of
 * exactly that content that nobody writes again, or else (path NULL) by writing data.  A
 * failure only costs the cache a copy, so it is logged, not returned. */
void chunk_cache_keep(struct chunk_cache *c, const struct chunk_hash *h, const void *data,
                      size_t len, const char *path);

/* Sets the refresh age of chunk_cache_put in seconds (default 1800); with 0, every dedup
 * hit on an object from an earlier second (store mtimes have whole seconds) is stored again. */
void chunk_cache_set_refresh_age(struct chunk_cache *c, double seconds);

/* Dirty bytes accounting (positive or negative delta). */
void chunk_cache_add_dirty(struct chunk_cache *c, int64_t delta);

void chunk_cache_get_stats(struct chunk_cache *c, struct chunk_cache_stats *out);

#endif
