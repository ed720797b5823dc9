/* chunk_map.c: the sparse chunk map in memory, and its Merkle pages (format in chunk_map.h).
 *
 * In memory
 * ---------
 * The index space is cut into leaves of CHUNK_MAP_FANOUT indices, exactly as the pages are, so a
 * leaf in memory is a leaf page.  The map holds a sorted array of the leaves that exist
 * (leaf number, pointer): chunk_map_get is two binary searches (leaf, then position) and
 * chunk_map_next jumps from one existing leaf to the next, whatever lies between.
 *
 * A leaf is one allocation: a small header, then `cap` u16 positions (sorted), then `cap` hashes
 * in the same order.  That is 34 bytes per entry plus growth slack plus the leaf's share of its
 * header (~46 bytes with malloc's) and of its slot in the array (16 bytes).  Leaves made by
 * chunk_map_decode and chunk_map_copy are sized exactly.  Measured (test_chunk_map): 35-49
 * bytes per entry for 10k-100k entries on a 100 GiB disk of 64 KiB chunks.
 *
 * Incremental encoding
 * --------------------
 *   leaf->dirty == false   leaf->page is the hash of the leaf's current encoding, and that page
 *                          was given to a sink (or came from a source).
 *   leaf->dirty == true    the leaf changed since; its number is in m->dirty (exactly once).
 *   leaf->count == 0       only while dirty: a leaf emptied since the last encode stays in the
 *                          array (skipped by readers) until chunk_map_encode frees it, so that
 *                          set/remove cycles never grow m->dirty.
 * Interior pages are kept per level (m->levels[k], k = 1..depth) as sorted (number, hash)
 * arrays of the non-empty ones; an interior page is current unless one of its descendant
 * leaves is dirty.  chunk_map_encode walks up from the dirty leaves only, so its cost is
 * proportional to the number of changed leaves, not to the map.
 *
 * Numbering: the level-k page containing index i has number i >> (10 * (k + 1)); it covers
 * [number << 10(k+1), (number + 1) << 10(k+1)) and its parent is number >> 10.  The root is at
 * the smallest level L with FANOUT^(L+1) >= n_chunks, so L <= 6 for 64-bit indices. */
#include "chunk_map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "log.h"

#define CM_SHIFT      10 /* log2(CHUNK_MAP_FANOUT) */
#define CM_MAX_LEVEL  6  /* 2^(10 * 7) > 2^64: seven levels cover any 64-bit index */
#define CM_HEADER_LEN 20 /* magic 4, kind 1, level 1, reserved 2, first 8, count 4 */
#define CM_ENTRY_LEN  (4 + CHUNK_HASH_LEN)
#define CM_PAGE_MAX   (CM_HEADER_LEN + CHUNK_MAP_FANOUT * CM_ENTRY_LEN)
#define CM_KIND_LEAF  0
#define CM_KIND_INNER 1

_Static_assert(CHUNK_MAP_FANOUT == 1u << CM_SHIFT, "CM_SHIFT must match CHUNK_MAP_FANOUT");
_Static_assert(CHUNK_MAP_FANOUT <= UINT16_MAX, "leaf counts and positions are u16");

static const uint8_t cm_magic[4] = {'W', 'M', 'P', '1'};

struct cm_leaf {
    struct chunk_hash page; /* valid while !dirty */
    uint16_t count;
    uint16_t cap;
    bool dirty;
    uint16_t pos[]; /* [cap], sorted; then struct chunk_hash hash[cap] in the same order */
};

struct cm_slot {
    uint64_t no; /* leaf number: first index >> CM_SHIFT */
    struct cm_leaf *leaf;
};

struct cm_node {
    uint64_t no;
    struct chunk_hash hash;
};

struct cm_level {
    struct cm_node *v;
    size_t n, cap;
};

struct chunk_map {
    uint64_t n_chunks;
    uint64_t count;
    unsigned depth; /* level of the root page */
    struct cm_slot *leaves;
    size_t n_leaves, cap_leaves;
    struct cm_level levels[CM_MAX_LEVEL + 1]; /* [1..depth]; [0] unused (leaves are above) */
    uint64_t *dirty;                          /* numbers of the dirty leaves, unordered */
    size_t n_dirty, cap_dirty;
};

/* ---- hashes --------------------------------------------------------------------------------- */

bool chunk_hash_is_zero(const struct chunk_hash *h)
{
    uint8_t acc = 0;

    for (size_t i = 0; i < CHUNK_HASH_LEN; i++)
        acc |= h->b[i];
    return acc == 0;
}

void chunk_hash_to_hex(const struct chunk_hash *h, char out[2 * CHUNK_HASH_LEN + 1])
{
    hash_to_hex(h->b, CHUNK_HASH_LEN, out);
}

static int chunk_hash_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int chunk_hash_from_hex(const char *hex, struct chunk_hash *out)
{
    struct chunk_hash h;

    for (size_t i = 0; i < CHUNK_HASH_LEN; i++) {
        /* hex[2i] is checked before hex[2i+1] is read, so a short string stops at its NUL. */
        int hi = chunk_hash_hex_digit(hex[2 * i]);
        if (hi < 0)
            return -EINVAL;
        int lo = chunk_hash_hex_digit(hex[2 * i + 1]);
        if (lo < 0)
            return -EINVAL;
        h.b[i] = (uint8_t)(hi << 4 | lo);
    }
    if (hex[2 * CHUNK_HASH_LEN] != '\0')
        return -EINVAL;
    *out = h;
    return 0;
}

/* ---- small helpers -------------------------------------------------------------------------- */

/* Shifts by 64 or more are undefined in C; in this tree they mean "everything is page 0". */
static inline uint64_t chunk_map_shr(uint64_t v, unsigned s)
{
    return s >= 64 ? 0 : v >> s;
}

static inline uint64_t chunk_map_shl(uint64_t v, unsigned s)
{
    return s >= 64 ? 0 : v << s;
}

static unsigned chunk_map_depth_for(uint64_t n_chunks)
{
    unsigned level = 0;

    /* Smallest L with FANOUT^(L+1) >= n_chunks, i.e. 2^(10(L+1)) >= n_chunks. */
    while (CM_SHIFT * (level + 1) < 64 && (UINT64_C(1) << (CM_SHIFT * (level + 1))) < n_chunks)
        level++;
    return level;
}

static inline void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---- leaves --------------------------------------------------------------------------------- */

static inline uint16_t *leaf_pos(struct cm_leaf *l)
{
    return l->pos;
}

static inline const uint16_t *leaf_pos_c(const struct cm_leaf *l)
{
    return l->pos;
}

/* struct chunk_hash is bytes only (alignment 1), so it may follow the u16 array directly. */
static inline struct chunk_hash *leaf_hash_at(struct cm_leaf *l, unsigned cap)
{
    return (struct chunk_hash *)(void *)(l->pos + cap);
}

static inline struct chunk_hash *leaf_hash(struct cm_leaf *l)
{
    return leaf_hash_at(l, l->cap);
}

static inline const struct chunk_hash *leaf_hash_c(const struct cm_leaf *l)
{
    return (const struct chunk_hash *)(const void *)(l->pos + l->cap);
}

static size_t leaf_size(size_t cap)
{
    return sizeof(struct cm_leaf) + cap * (sizeof(uint16_t) + sizeof(struct chunk_hash));
}

static struct cm_leaf *leaf_new(uint16_t cap)
{
    struct cm_leaf *l = malloc(leaf_size(cap));

    if (l == NULL)
        return NULL;
    memset(l, 0, sizeof *l);
    l->cap = cap;
    return l;
}

/* Changes the capacity (>= count), moving the hashes to their new offset. */
static struct cm_leaf *leaf_resize(struct cm_leaf *l, uint16_t cap)
{
    uint16_t old_cap = l->cap;
    struct cm_leaf *n;

    if (cap < old_cap) /* shrinking: move the hashes down before the tail goes */
        memmove(leaf_hash_at(l, cap), leaf_hash_at(l, old_cap), l->count * CHUNK_HASH_LEN);
    n = realloc(l, leaf_size(cap));
    if (n == NULL) {
        if (cap < old_cap) /* still the old block: put the hashes back where l->cap says */
            memmove(leaf_hash_at(l, old_cap), leaf_hash_at(l, cap), l->count * CHUNK_HASH_LEN);
        return NULL;
    }
    n->cap = cap;
    if (cap > old_cap)
        memmove(leaf_hash_at(n, cap), leaf_hash_at(n, old_cap), n->count * CHUNK_HASH_LEN);
    return n;
}

/* Index of the first position >= pos in the leaf (count if none). */
static inline unsigned leaf_lower_bound(const struct cm_leaf *l, unsigned pos)
{
    const uint16_t *p = leaf_pos_c(l);
    unsigned lo = 0, hi = l->count;

    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (p[mid] < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Index of the first slot whose leaf number is >= no (n_leaves if none). */
static inline size_t chunk_map_slot_lower_bound(const struct chunk_map *m, uint64_t no)
{
    size_t lo = 0, hi = m->n_leaves;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->leaves[mid].no < no)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static inline struct cm_leaf *chunk_map_find_leaf(const struct chunk_map *m, uint64_t no)
{
    size_t i = chunk_map_slot_lower_bound(m, no);

    return i < m->n_leaves && m->leaves[i].no == no ? m->leaves[i].leaf : NULL;
}

static int chunk_map_grow(void **v, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *nv;

    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap + *cap / 2 : 8;
    if (ncap < need)
        ncap = need;
    nv = realloc(*v, ncap * elem);
    if (nv == NULL)
        return -ENOMEM;
    *v = nv;
    *cap = ncap;
    return 0;
}

/* Records that leaf (number no) changed.  Invariants: a leaf is dirty <=> its number is in
 * m->dirty, once; and m->cap_dirty >= m->n_leaves (kept wherever a leaf is added), so marking
 * never allocates and chunk_map_remove cannot fail. */
static void chunk_map_mark_dirty(struct chunk_map *m, struct cm_leaf *l, uint64_t no)
{
    if (l->dirty)
        return;
    m->dirty[m->n_dirty++] = no;
    l->dirty = true;
}

static int chunk_map_reserve_dirty(struct chunk_map *m, size_t n_leaves)
{
    return chunk_map_grow((void **)&m->dirty, &m->cap_dirty, n_leaves, sizeof *m->dirty);
}

/* ---- the map -------------------------------------------------------------------------------- */

struct chunk_map *chunk_map_new(uint64_t n_chunks)
{
    struct chunk_map *m = calloc(1, sizeof *m);

    if (m == NULL)
        return NULL;
    m->n_chunks = n_chunks;
    m->depth = chunk_map_depth_for(n_chunks);
    return m;
}

void chunk_map_free(struct chunk_map *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_leaves; i++)
        free(m->leaves[i].leaf);
    free(m->leaves);
    for (unsigned k = 0; k <= CM_MAX_LEVEL; k++)
        free(m->levels[k].v);
    free(m->dirty);
    free(m);
}

struct chunk_map *chunk_map_copy(const struct chunk_map *m)
{
    struct chunk_map *c = chunk_map_new(m->n_chunks);

    if (c == NULL)
        return NULL;
    if (m->n_leaves > 0) {
        c->leaves = malloc(m->n_leaves * sizeof *c->leaves);
        if (c->leaves == NULL)
            goto fail;
        c->cap_leaves = m->n_leaves;
    }
    for (size_t i = 0; i < m->n_leaves; i++) {
        const struct cm_leaf *src = m->leaves[i].leaf;
        /* Sized exactly (at least 1 so an emptied dirty leaf still has a block). */
        struct cm_leaf *dst = leaf_new(src->count ? src->count : 1);

        if (dst == NULL)
            goto fail;
        dst->page = src->page;
        dst->count = src->count;
        dst->dirty = src->dirty;
        memcpy(leaf_pos(dst), leaf_pos_c(src), src->count * sizeof(uint16_t));
        memcpy(leaf_hash(dst), leaf_hash_c(src), src->count * sizeof(struct chunk_hash));
        c->leaves[i].no = m->leaves[i].no;
        c->leaves[i].leaf = dst;
        c->n_leaves = i + 1;
    }
    for (unsigned k = 1; k <= m->depth; k++) {
        const struct cm_level *src = &m->levels[k];
        if (src->n == 0)
            continue;
        c->levels[k].v = malloc(src->n * sizeof *src->v);
        if (c->levels[k].v == NULL)
            goto fail;
        memcpy(c->levels[k].v, src->v, src->n * sizeof *src->v);
        c->levels[k].n = c->levels[k].cap = src->n;
    }
    if (chunk_map_reserve_dirty(c, m->n_leaves) < 0)
        goto fail;
    if (m->n_dirty > 0)
        memcpy(c->dirty, m->dirty, m->n_dirty * sizeof *c->dirty);
    c->n_dirty = m->n_dirty;
    c->count = m->count;
    return c;

fail:
    chunk_map_free(c);
    return NULL;
}

uint64_t chunk_map_n_chunks(const struct chunk_map *m)
{
    return m->n_chunks;
}

uint64_t chunk_map_count(const struct chunk_map *m)
{
    return m->count;
}

bool chunk_map_get(const struct chunk_map *m, uint64_t idx, struct chunk_hash *out)
{
    const struct cm_leaf *l;
    unsigned pos = idx & (CHUNK_MAP_FANOUT - 1), i;

    if (idx >= m->n_chunks)
        return false;
    l = chunk_map_find_leaf(m, idx >> CM_SHIFT);
    if (l == NULL)
        return false;
    i = leaf_lower_bound(l, pos);
    if (i == l->count || leaf_pos_c(l)[i] != pos)
        return false;
    if (out)
        *out = leaf_hash_c(l)[i];
    return true;
}

/* Inserts a new empty leaf for number no at slot i (the lower bound of no). */
static struct cm_leaf *chunk_map_insert_leaf(struct chunk_map *m, size_t i, uint64_t no)
{
    struct cm_leaf *l;

    if (chunk_map_grow((void **)&m->leaves, &m->cap_leaves, m->n_leaves + 1, sizeof *m->leaves) <
            0 ||
        chunk_map_reserve_dirty(m, m->n_leaves + 1) < 0)
        return NULL;
    l = leaf_new(1);
    if (l == NULL)
        return NULL;
    chunk_map_mark_dirty(m, l, no);
    memmove(&m->leaves[i + 1], &m->leaves[i], (m->n_leaves - i) * sizeof *m->leaves);
    m->leaves[i].no = no;
    m->leaves[i].leaf = l;
    m->n_leaves++;
    return l;
}

int chunk_map_set(struct chunk_map *m, uint64_t idx, const struct chunk_hash *h)
{
    uint64_t no = idx >> CM_SHIFT;
    unsigned pos = idx & (CHUNK_MAP_FANOUT - 1), i;
    struct cm_leaf *l;
    size_t s;

    if (idx >= m->n_chunks)
        return -ERANGE;
    if (chunk_hash_is_zero(h)) {
        chunk_map_remove(m, idx);
        return 0;
    }
    s = chunk_map_slot_lower_bound(m, no);
    if (s < m->n_leaves && m->leaves[s].no == no) {
        l = m->leaves[s].leaf;
    } else {
        l = chunk_map_insert_leaf(m, s, no);
        if (l == NULL)
            return -ENOMEM;
    }
    i = leaf_lower_bound(l, pos);
    if (i < l->count && leaf_pos(l)[i] == pos) {
        /* Rewriting the same content changes nothing, so it must not cost a page. */
        if (memcmp(&leaf_hash(l)[i], h, sizeof *h) == 0)
            return 0;
        chunk_map_mark_dirty(m, l, no);
        leaf_hash(l)[i] = *h;
        return 0;
    }
    if (l->count == l->cap) {
        /* One at a time while small (sparse leaves are the common case and slack there is
         * most of their memory), then by a quarter. */
        unsigned cap = l->cap < 8 ? l->cap + 1u : l->cap + l->cap / 4u;
        if (cap > CHUNK_MAP_FANOUT)
            cap = CHUNK_MAP_FANOUT;
        struct cm_leaf *n = leaf_resize(l, (uint16_t)cap);
        if (n == NULL)
            return -ENOMEM; /* a new leaf stays, empty and dirty: harmless */
        m->leaves[s].leaf = l = n;
    }
    chunk_map_mark_dirty(m, l, no);
    memmove(&leaf_pos(l)[i + 1], &leaf_pos(l)[i], (l->count - i) * sizeof(uint16_t));
    memmove(&leaf_hash(l)[i + 1], &leaf_hash(l)[i], (l->count - i) * sizeof(struct chunk_hash));
    leaf_pos(l)[i] = (uint16_t)pos;
    leaf_hash(l)[i] = *h;
    l->count++;
    m->count++;
    return 0;
}

void chunk_map_remove(struct chunk_map *m, uint64_t idx)
{
    uint64_t no = idx >> CM_SHIFT;
    unsigned pos = idx & (CHUNK_MAP_FANOUT - 1), i;
    struct cm_leaf *l;
    size_t s;

    if (idx >= m->n_chunks)
        return;
    s = chunk_map_slot_lower_bound(m, no);
    if (s == m->n_leaves || m->leaves[s].no != no)
        return;
    l = m->leaves[s].leaf;
    i = leaf_lower_bound(l, pos);
    if (i == l->count || leaf_pos(l)[i] != pos)
        return;
    chunk_map_mark_dirty(m, l, no);
    memmove(&leaf_pos(l)[i], &leaf_pos(l)[i + 1], (l->count - i - 1) * sizeof(uint16_t));
    memmove(&leaf_hash(l)[i], &leaf_hash(l)[i + 1], (l->count - i - 1) * sizeof(struct chunk_hash));
    l->count--;
    m->count--;
    /* Give memory back when a leaf shrinks a lot; failure to shrink is harmless. */
    if (l->cap > 8 && l->count <= l->cap / 4) {
        struct cm_leaf *n = leaf_resize(l, (uint16_t)(l->count > 1 ? l->count * 2 : 2));
        if (n)
            m->leaves[s].leaf = n;
    }
}

bool chunk_map_next(const struct chunk_map *m, uint64_t from, uint64_t *idx, struct chunk_hash *h)
{
    size_t s;

    if (from >= m->n_chunks)
        return false;
    s = chunk_map_slot_lower_bound(m, from >> CM_SHIFT);
    for (; s < m->n_leaves; s++) {
        const struct cm_leaf *l = m->leaves[s].leaf;
        unsigned i = 0;

        if (m->leaves[s].no == from >> CM_SHIFT)
            i = leaf_lower_bound(l, from & (CHUNK_MAP_FANOUT - 1));
        if (i < l->count) { /* an emptied (dirty) leaf has count 0 and is skipped */
            *idx = m->leaves[s].no << CM_SHIFT | leaf_pos_c(l)[i];
            if (h)
                *h = leaf_hash_c(l)[i];
            return true;
        }
    }
    return false;
}

int chunk_map_foreach(const struct chunk_map *m,
                      int (*fn)(uint64_t idx, const struct chunk_hash *h, void *opaque),
                      void *opaque)
{
    for (size_t s = 0; s < m->n_leaves; s++) {
        const struct cm_leaf *l = m->leaves[s].leaf;
        uint64_t base = m->leaves[s].no << CM_SHIFT;

        for (unsigned i = 0; i < l->count; i++) {
            int r = fn(base | leaf_pos_c(l)[i], &leaf_hash_c(l)[i], opaque);
            if (r != 0)
                return r;
        }
    }
    return 0;
}

void chunk_map_forget_pages(struct chunk_map *m)
{
    for (size_t s = 0; s < m->n_leaves; s++)
        chunk_map_mark_dirty(m, m->leaves[s].leaf, m->leaves[s].no);
}

/* ---- page encoding -------------------------------------------------------------------------- */

static size_t chunk_map_page_header(uint8_t *buf, uint8_t kind, uint8_t level, uint64_t first,
                                    uint32_t count)
{
    memcpy(buf, cm_magic, 4);
    buf[4] = kind;
    buf[5] = level;
    put_le16(buf + 6, 0);
    put_le64(buf + 8, first);
    put_le32(buf + 16, count);
    return CM_HEADER_LEN;
}

static inline void chunk_map_page_entry(uint8_t *p, uint32_t position, const struct chunk_hash *h)
{
    put_le32(p, position);
    memcpy(p + 4, h->b, CHUNK_HASH_LEN);
}

static int chunk_map_emit(const uint8_t *page, size_t len, chunk_map_page_sink sink, void *opaque,
                          struct chunk_hash *out)
{
    int r = hash_sha256(page, len, out->b);

    if (r < 0)
        return r;
    return sink(out, page, len, opaque);
}

static int chunk_map_encode_leaf(struct cm_leaf *l, uint64_t no, uint8_t *buf,
                                 chunk_map_page_sink sink, void *opaque, struct chunk_hash *out)
{
    uint8_t *p = buf + chunk_map_page_header(buf, CM_KIND_LEAF, 0, no << CM_SHIFT, l->count);

    for (unsigned i = 0; i < l->count; i++, p += CM_ENTRY_LEN)
        chunk_map_page_entry(p, leaf_pos(l)[i], &leaf_hash(l)[i]);
    return chunk_map_emit(buf, (size_t)(p - buf), sink, opaque, out);
}

static size_t chunk_map_level_lower_bound(const struct cm_level *lv, uint64_t no)
{
    size_t lo = 0, hi = lv->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lv->v[mid].no < no)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Sets or (hash NULL) removes interior page no at level lv. */
static int chunk_map_level_put(struct cm_level *lv, uint64_t no, const struct chunk_hash *hash)
{
    size_t i = chunk_map_level_lower_bound(lv, no);
    bool found = i < lv->n && lv->v[i].no == no;

    if (hash == NULL) {
        if (found) {
            memmove(&lv->v[i], &lv->v[i + 1], (lv->n - i - 1) * sizeof *lv->v);
            lv->n--;
        }
        return 0;
    }
    if (!found) {
        if (chunk_map_grow((void **)&lv->v, &lv->cap, lv->n + 1, sizeof *lv->v) < 0)
            return -ENOMEM;
        memmove(&lv->v[i + 1], &lv->v[i], (lv->n - i) * sizeof *lv->v);
        lv->v[i].no = no;
        lv->n++;
    }
    lv->v[i].hash = *hash;
    return 0;
}

/* Encodes interior page `no` at level k >= 1 from its current children at level k-1.  *present
 * is false (and nothing emitted) when every child is empty: empty subtrees are absent. */
static int chunk_map_encode_interior(struct chunk_map *m, unsigned k, uint64_t no, uint8_t *buf,
                                     chunk_map_page_sink sink, void *opaque, struct chunk_hash *out,
                                     bool *present)
{
    uint64_t child_first = no << CM_SHIFT; /* children's numbers at level k-1 */
    uint8_t *p = buf + CM_HEADER_LEN;
    uint32_t count = 0;

    if (k == 1) {
        for (size_t s = chunk_map_slot_lower_bound(m, child_first);
             s < m->n_leaves && m->leaves[s].no >> CM_SHIFT == no; s++) {
            if (m->leaves[s].leaf->count == 0)
                continue;
            chunk_map_page_entry(p, (uint32_t)(m->leaves[s].no - child_first),
                                 &m->leaves[s].leaf->page);
            p += CM_ENTRY_LEN;
            count++;
        }
    } else {
        const struct cm_level *lv = &m->levels[k - 1];
        for (size_t i = chunk_map_level_lower_bound(lv, child_first);
             i < lv->n && lv->v[i].no >> CM_SHIFT == no; i++) {
            chunk_map_page_entry(p, (uint32_t)(lv->v[i].no - child_first), &lv->v[i].hash);
            p += CM_ENTRY_LEN;
            count++;
        }
    }
    *present = count > 0;
    if (count == 0)
        return 0;
    chunk_map_page_header(buf, CM_KIND_INNER, (uint8_t)k, chunk_map_shl(no, CM_SHIFT * (k + 1)),
                          count);
    return chunk_map_emit(buf, (size_t)(p - buf), sink, opaque, out);
}

static int chunk_map_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Frees the leaves emptied since the last encode, once their parents no longer name them. */
static void chunk_map_drop_empty_leaves(struct chunk_map *m)
{
    size_t w = 0;

    for (size_t s = 0; s < m->n_leaves; s++) {
        if (m->leaves[s].leaf->count == 0)
            free(m->leaves[s].leaf);
        else
            m->leaves[w++] = m->leaves[s];
    }
    m->n_leaves = w;
}

/* Failure leaves the map as it was for the next attempt: dirty marks are cleared only after
 * every page went to the sink, and the hashes written meanwhile are recomputed from the dirty
 * leaves up next time.  This matters because the sink's pages may be rolled back with the
 * caller's transaction. */
int chunk_map_encode(struct chunk_map *m, chunk_map_page_sink sink, void *opaque,
                     struct chunk_hash *root)
{
    uint64_t *nos = m->dirty;
    size_t n = m->n_dirty;
    bool emptied = false;
    uint8_t *buf;
    int r = 0;

    if (n > 0) {
        buf = malloc(CM_PAGE_MAX);
        if (buf == NULL)
            return -ENOMEM;
        qsort(nos, n, sizeof *nos, chunk_map_cmp_u64);
    } else {
        buf = NULL;
    }

    for (size_t i = 0; i < n; i++) {
        struct cm_leaf *l = chunk_map_find_leaf(m, nos[i]);
        if (l->count == 0) {
            emptied = true;
            continue;
        }
        r = chunk_map_encode_leaf(l, nos[i], buf, sink, opaque, &l->page);
        if (r < 0)
            goto out;
    }

    /* Level by level, the pages above the dirty leaves.  cur holds the numbers of the pages to
     * redo at level k (sorted, deduplicated); while level k is done, their parents at level
     * k+1 are written over its front. */
    if (m->depth > 0 && n > 0) {
        uint64_t *cur = malloc(n * sizeof *cur);
        size_t nc = 0;

        if (cur == NULL) {
            r = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t p = nos[i] >> CM_SHIFT;
            if (nc == 0 || cur[nc - 1] != p)
                cur[nc++] = p;
        }
        for (unsigned k = 1; k <= m->depth && r == 0; k++) {
            size_t np = 0;
            for (size_t i = 0; i < nc; i++) {
                struct chunk_hash h;
                bool present;
                r = chunk_map_encode_interior(m, k, cur[i], buf, sink, opaque, &h, &present);
                if (r == 0)
                    r = chunk_map_level_put(&m->levels[k], cur[i], present ? &h : NULL);
                if (r < 0)
                    break;
                uint64_t p = cur[i] >> CM_SHIFT;
                if (np == 0 || cur[np - 1] != p)
                    cur[np++] = p; /* np <= i, so this never overwrites an unread entry */
            }
            nc = np;
        }
        free(cur);
        if (r < 0)
            goto out;
    }

    if (m->depth == 0) {
        const struct cm_leaf *l = chunk_map_find_leaf(m, 0);
        if (l && l->count > 0)
            *root = l->page;
        else
            memset(root, 0, sizeof *root);
    } else if (m->levels[m->depth].n > 0) {
        *root = m->levels[m->depth].v[0].hash; /* the root level holds page 0 only */
    } else {
        memset(root, 0, sizeof *root);
    }

    for (size_t i = 0; i < n; i++) {
        struct cm_leaf *l = chunk_map_find_leaf(m, nos[i]);
        l->dirty = false;
    }
    m->n_dirty = 0;
    if (emptied)
        chunk_map_drop_empty_leaves(m);
out:
    free(buf);
    return r;
}

/* ---- page decoding -------------------------------------------------------------------------- */

/* Checks a page completely; entries are then read from the raw bytes at page + CM_HEADER_LEN. */
static int chunk_map_page_check(const uint8_t *p, size_t len, struct chunk_map_page_info *out)
{
    uint32_t count, prev = 0;
    uint8_t kind, level;
    uint64_t first;

    if (len < CM_HEADER_LEN || memcmp(p, cm_magic, 4) != 0)
        return -EBADMSG;
    kind = p[4];
    level = p[5];
    first = get_le64(p + 8);
    count = get_le32(p + 16);
    if (get_le16(p + 6) != 0)
        return -EBADMSG;
    if (kind == CM_KIND_LEAF ? level != 0
                             : (kind != CM_KIND_INNER || level < 1 || level > CM_MAX_LEVEL))
        return -EBADMSG;
    /* A page starts where its level's pages start. */
    if (chunk_map_shl(chunk_map_shr(first, CM_SHIFT * (level + 1u)), CM_SHIFT * (level + 1u)) !=
        first)
        return -EBADMSG;
    /* Empty pages are never written: an empty subtree is absent from its parent. */
    if (count == 0 || count > CHUNK_MAP_FANOUT)
        return -EBADMSG;
    if (len != CM_HEADER_LEN + (size_t)count * CM_ENTRY_LEN)
        return -EBADMSG;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = p + CM_HEADER_LEN + (size_t)i * CM_ENTRY_LEN;
        uint32_t pos = get_le32(e);
        if (pos >= CHUNK_MAP_FANOUT || (i > 0 && pos <= prev))
            return -EBADMSG;
        /* Neither a chunk nor a page is ever named by the zero hash. */
        if (chunk_hash_is_zero((const struct chunk_hash *)(const void *)(e + 4)))
            return -EBADMSG;
        prev = pos;
    }
    out->kind = kind;
    out->level = level;
    out->first = first;
    out->count = count;
    out->entries = NULL;
    return 0;
}

int chunk_map_page_parse(const void *page, size_t len, struct chunk_map_page_info *out)
{
    struct chunk_map_page_info info;
    const uint8_t *p = page;
    int r;

    r = chunk_map_page_check(p, len, &info);
    if (r < 0)
        return r;
    info.entries = malloc(info.count * sizeof *info.entries);
    if (info.entries == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < info.count; i++) {
        const uint8_t *e = p + CM_HEADER_LEN + (size_t)i * CM_ENTRY_LEN;
        info.entries[i].position = get_le32(e);
        memcpy(info.entries[i].hash.b, e + 4, CHUNK_HASH_LEN);
    }
    *out = info;
    return 0;
}

struct cm_decode {
    struct chunk_map *m;
    chunk_map_page_source source;
    void *opaque;
};

static int chunk_map_decode_bad(const struct chunk_hash *name, const char *why)
{
    char hex[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(name, hex);
    log_error("meta", "chunk map page %s: %s", hex, why);
    return -EBADMSG;
}

static int chunk_map_push_leaf(struct chunk_map *m, uint64_t no, const struct chunk_hash *name,
                               const uint8_t *page, uint32_t count)
{
    struct cm_leaf *l;

    if (chunk_map_grow((void **)&m->leaves, &m->cap_leaves, m->n_leaves + 1, sizeof *m->leaves) < 0)
        return -ENOMEM;
    l = leaf_new((uint16_t)count);
    if (l == NULL)
        return -ENOMEM;
    l->page = *name;
    l->count = (uint16_t)count;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = page + CM_HEADER_LEN + (size_t)i * CM_ENTRY_LEN;
        leaf_pos(l)[i] = (uint16_t)get_le32(e);
        memcpy(leaf_hash(l)[i].b, e + 4, CHUNK_HASH_LEN);
    }
    m->leaves[m->n_leaves].no = no;
    m->leaves[m->n_leaves].leaf = l;
    m->n_leaves++;
    m->count += count;
    return 0;
}

/* Reads page `name`, which must be the level-`level` page starting at `first`.  Pages are
 * visited depth first in index order, so leaves and interior pages are appended already sorted;
 * since a page's level and first are fixed by its position, no page can appear twice and the
 * walk is bounded by the index space. */
static int chunk_map_decode_page(struct cm_decode *d, const struct chunk_hash *name, unsigned level,
                                 uint64_t first)
{
    struct chunk_map *m = d->m;
    struct chunk_map_page_info info;
    struct chunk_hash actual;
    void *page = NULL;
    size_t len = 0;
    int r;

    r = d->source(name, &page, &len, d->opaque);
    if (r < 0) {
        char hex[2 * CHUNK_HASH_LEN + 1];
        chunk_hash_to_hex(name, hex);
        log_error("meta", "chunk map page %s: %s", hex, strerror(-r));
        free(page);
        return r;
    }
    if (page == NULL && len > 0) {
        r = chunk_map_decode_bad(name, "source returned no data");
        goto out;
    }
    r = hash_sha256(page, len, actual.b);
    if (r < 0)
        goto out;
    if (memcmp(actual.b, name->b, CHUNK_HASH_LEN) != 0) {
        r = chunk_map_decode_bad(name, "content does not match its hash");
        goto out;
    }
    if (chunk_map_page_check(page, len, &info) < 0) {
        r = chunk_map_decode_bad(name, "malformed page");
        goto out;
    }
    if (info.level != level || info.kind != (level == 0 ? CM_KIND_LEAF : CM_KIND_INNER) ||
        info.first != first) {
        r = chunk_map_decode_bad(name, "page is not at its place in the tree");
        goto out;
    }

    const uint8_t *p = page;
    if (level == 0) {
        /* Positions are strictly increasing, so the last one bounds them all. */
        uint32_t last = get_le32(p + CM_HEADER_LEN + (size_t)(info.count - 1) * CM_ENTRY_LEN);
        if (first + last >= m->n_chunks) {
            r = chunk_map_decode_bad(name, "entry beyond the end of the disk");
            goto out;
        }
        r = chunk_map_push_leaf(m, first >> CM_SHIFT, name, p, info.count);
        goto out;
    }

    unsigned child_shift = CM_SHIFT * level; /* a child covers 2^child_shift indices */
    for (uint32_t i = 0; i < info.count && r == 0; i++) {
        const uint8_t *e = p + CM_HEADER_LEN + (size_t)i * CM_ENTRY_LEN;
        uint64_t pos = get_le32(e);
        struct chunk_hash child;

        /* child first = first + pos << child_shift, and must be < n_chunks (without overflow:
         * an empty child is absent, so a present one has an entry at or after its first). */
        if (chunk_map_shr(m->n_chunks - 1 - first, child_shift) < pos) {
            r = chunk_map_decode_bad(name, "child beyond the end of the disk");
            break;
        }
        memcpy(child.b, e + 4, CHUNK_HASH_LEN);
        r = chunk_map_decode_page(d, &child, level - 1, first + (pos << child_shift));
    }
    if (r == 0)
        r = chunk_map_level_put(&m->levels[level], chunk_map_shr(first, CM_SHIFT * (level + 1)),
                                name);
out:
    free(page);
    return r;
}

int chunk_map_decode(const struct chunk_hash *root, uint64_t n_chunks, chunk_map_page_source source,
                     void *opaque, struct chunk_map **out)
{
    struct cm_decode d = {.source = source, .opaque = opaque};
    int r;

    d.m = chunk_map_new(n_chunks);
    if (d.m == NULL)
        return -ENOMEM;
    if (!chunk_hash_is_zero(root)) {
        if (n_chunks == 0) {
            r = chunk_map_decode_bad(root, "a disk of no chunks has an empty map");
            goto fail;
        }
        r = chunk_map_decode_page(&d, root, d.m->depth, 0);
        if (r == 0)
            r = chunk_map_reserve_dirty(d.m, d.m->n_leaves);
        if (r < 0)
            goto fail;
    }
    *out = d.m;
    return 0;

fail:
    chunk_map_free(d.m);
    return r;
}
