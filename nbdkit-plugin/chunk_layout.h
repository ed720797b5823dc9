/* chunk_layout.h: which parts of a chunk a dirty chunk file holds.
 *
 * A write to a chunk that already has data does not copy the chunk: the new file is sparse and
 * holds only the 4 KiB blocks written since, and the other blocks are still the chunk's base
 * (the committed chunk it was made over, by hash), or zeros when there is none.  The upload
 * merges the two.  A block not written is a hole in the file, so it reads as zeros there.
 *
 * Bitmap bit i is byte i / 8, bit i % 8: the same bytes are the pending journal's `written`
 * column (meta.h), whatever the host's word order. */
#ifndef WISP_CHUNK_LAYOUT_H
#define WISP_CHUNK_LAYOUT_H

#include "chunk_map.h"
#include "meta.h"

#include <stdbool.h>
#include <stdint.h>

#define CHUNK_BLOCK_SIZE    4096u
#define CHUNK_LAYOUT_BYTES  META_PENDING_WRITTEN_MAX /* 4 MiB / 4 KiB blocks, one bit each */
#define CHUNK_LAYOUT_BLOCKS (CHUNK_LAYOUT_BYTES * 8u)

struct chunk_layout {
    bool has_base;          /* blocks not written are base's; else zeros */
    struct chunk_hash base; /* a committed chunk, in the store */
    uint8_t written[CHUNK_LAYOUT_BYTES];
};

static inline bool chunk_layout_written(const struct chunk_layout *l, uint32_t block)
{
    return (l->written[block / 8] >> (block % 8)) & 1;
}

/* Marks blocks [first, end) as written. */
void chunk_layout_mark(struct chunk_layout *l, uint32_t first, uint32_t end);

/* Whether all n_blocks blocks are written: the file is the whole chunk. */
bool chunk_layout_whole(const struct chunk_layout *l, uint32_t n_blocks);

/* The first block after `block`, up to n_blocks, whose written state differs from block's. */
uint32_t chunk_layout_run_end(const struct chunk_layout *l, uint32_t block, uint32_t n_blocks);

#endif
