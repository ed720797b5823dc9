/* chunk_layout.c: the block bitmap of a dirty chunk file (chunk_layout.h). */
#include "chunk_layout.h"

void chunk_layout_mark(struct chunk_layout *l, uint32_t first, uint32_t end)
{
    for (uint32_t b = first; b < end && b < CHUNK_LAYOUT_BLOCKS; b++)
        l->written[b / 8] |= (uint8_t)(1u << (b % 8));
}

bool chunk_layout_whole(const struct chunk_layout *l, uint32_t n_blocks)
{
    return chunk_layout_run_end(l, 0, n_blocks) == n_blocks && chunk_layout_written(l, 0);
}

uint32_t chunk_layout_run_end(const struct chunk_layout *l, uint32_t block, uint32_t n_blocks)
{
    bool state = chunk_layout_written(l, block);
    uint32_t b = block + 1;

    if (n_blocks > CHUNK_LAYOUT_BLOCKS)
        n_blocks = CHUNK_LAYOUT_BLOCKS;
    while (b < n_blocks) {
        /* Skip whole bytes of the same state at once. */
        if (b % 8 == 0 && b + 8 <= n_blocks && l->written[b / 8] == (state ? 0xff : 0x00)) {
            b += 8;
            continue;
        }
        if (chunk_layout_written(l, b) != state)
            break;
        b++;
    }
    return b;
}
