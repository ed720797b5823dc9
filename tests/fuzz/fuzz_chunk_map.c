/* fuzz_chunk_map: chunk map pages from untrusted bytes (a corrupt database or object store).
 *
 * Every input is given to chunk_map_page_parse whole.  Inputs of 8 bytes or more are also a
 * tree for chunk_map_decode:
 *
 *   n_chunks u64 LE | page 0 | page 1 | ...     each page: len u16 LE | len bytes (the last
 *                                               one may be cut short: it takes what is left)
 *
 * Page 0 is the root.  A fuzzer cannot compute SHA-256, so before decoding the harness names
 * the children itself: in an interior page, an entry whose hash starts with byte t (not 0xff)
 * is pointed at page i + 1 + t % (pages after i), by writing that page's hash into the entry
 * (last page first, so the hashes are final).  0xff keeps the bytes as they are: a missing
 * page.  The structure is then fully the fuzzer's: levels, firsts, positions, counts.
 *
 * On a successful decode the harness checks the map's promises, then applies edits taken from
 * the root page's bytes and checks that an incremental encode gives the root of a fresh encode
 * of the same entries, and that this root decodes back to the same map. */
#include "../../meta/chunk_map.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "hash.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_PAGES 64

struct fuzz_page {
    struct chunk_hash name;
    uint8_t *data;
    size_t len;
};

struct fuzz_store {
    struct fuzz_page *pages;
    size_t n, cap;
};

static void fuzz_quiet(enum wisp_log_level level, const char *module, const char *msg)
{
}

static void fuzz_store_free(struct fuzz_store *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->pages[i].data);
    free(s->pages);
}

static const struct fuzz_page *fuzz_store_find(const struct fuzz_store *s,
                                               const struct chunk_hash *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(&s->pages[i].name, name, sizeof *name) == 0)
            return &s->pages[i];
    return NULL;
}

static int fuzz_sink(const struct chunk_hash *name, const void *page, size_t len, void *opaque)
{
    struct fuzz_store *s = opaque;
    struct chunk_hash check;

    FUZZ_ASSERT(hash_sha256(page, len, check.b) == 0);
    FUZZ_ASSERT(memcmp(&check, name, sizeof check) == 0);
    if (fuzz_store_find(s, name))
        return 0;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? 2 * s->cap : 16;
        struct fuzz_page *np = realloc(s->pages, ncap * sizeof *np);
        if (np == NULL)
            return -ENOMEM;
        s->pages = np;
        s->cap = ncap;
    }
    s->pages[s->n].data = malloc(len ? len : 1);
    if (s->pages[s->n].data == NULL)
        return -ENOMEM;
    memcpy(s->pages[s->n].data, page, len);
    s->pages[s->n].len = len;
    s->pages[s->n].name = *name;
    s->n++;
    return 0;
}

static int fuzz_source(const struct chunk_hash *name, void **page, size_t *len, void *opaque)
{
    const struct fuzz_page *p = fuzz_store_find(opaque, name);

    if (p == NULL)
        return -ENOENT;
    *page = malloc(p->len ? p->len : 1);
    if (*page == NULL)
        return -ENOMEM;
    memcpy(*page, p->data, p->len);
    *len = p->len;
    return 0;
}

static uint64_t fuzz_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Every page of a successful parse is well formed as the header promises. */
static void fuzz_parse(const uint8_t *p, size_t len)
{
    struct chunk_map_page_info info;
    int r = chunk_map_page_parse(p, len, &info);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -ENOMEM);
        return;
    }
    FUZZ_ASSERT(info.kind <= 1);
    FUZZ_ASSERT((info.kind == 0) == (info.level == 0));
    FUZZ_ASSERT(info.count >= 1 && info.count <= CHUNK_MAP_FANOUT);
    FUZZ_ASSERT(len == 20 + (size_t)info.count * 36);
    for (uint32_t i = 0; i < info.count; i++) {
        FUZZ_ASSERT(info.entries[i].position < CHUNK_MAP_FANOUT);
        FUZZ_ASSERT(i == 0 || info.entries[i].position > info.entries[i - 1].position);
        FUZZ_ASSERT(!chunk_hash_is_zero(&info.entries[i].hash));
    }
    free(info.entries);
}

/* Splits the input into pages and names the children (see the top of the file). */
static bool fuzz_build(const uint8_t *data, size_t size, struct fuzz_store *s)
{
    size_t off = 8;

    s->cap = FUZZ_MAX_PAGES;
    s->pages = calloc(s->cap, sizeof *s->pages);
    if (s->pages == NULL)
        return false;
    while (off < size && s->n < FUZZ_MAX_PAGES) {
        size_t len = off + 2 <= size ? (size_t)(data[off] | data[off + 1] << 8) : 0;
        off += 2;
        if (off > size)
            off = size;
        if (len > size - off)
            len = size - off;
        s->pages[s->n].data = malloc(len ? len : 1);
        if (s->pages[s->n].data == NULL)
            return false;
        memcpy(s->pages[s->n].data, data + off, len);
        s->pages[s->n].len = len;
        s->n++;
        off += len;
    }
    for (size_t i = s->n; i-- > 0;) {
        struct fuzz_page *p = &s->pages[i];
        size_t after = s->n - i - 1;
        if (p->len >= 20 && p->data[4] == 1 && after > 0) {
            for (size_t e = 20; e + 36 <= p->len; e += 36) {
                uint8_t t = p->data[e + 4];
                if (t != 0xff)
                    memcpy(p->data + e + 4, &s->pages[i + 1 + t % after].name, CHUNK_HASH_LEN);
            }
        }
        if (hash_sha256(p->data, p->len, p->name.b) < 0)
            return false;
    }
    return s->n > 0;
}

struct fuzz_walk {
    uint64_t n_chunks, count, last;
    bool any;
};

static int fuzz_walk_fn(uint64_t idx, const struct chunk_hash *h, void *opaque)
{
    struct fuzz_walk *w = opaque;

    FUZZ_ASSERT(idx < w->n_chunks);
    FUZZ_ASSERT(!w->any || idx > w->last);
    FUZZ_ASSERT(!chunk_hash_is_zero(h));
    w->any = true;
    w->last = idx;
    w->count++;
    return 0;
}

static bool fuzz_maps_equal(const struct chunk_map *a, const struct chunk_map *b)
{
    uint64_t ia = 0, ib = 0;
    struct chunk_hash ha, hb;

    if (chunk_map_count(a) != chunk_map_count(b))
        return false;
    for (;;) {
        bool na = ia < chunk_map_n_chunks(a) && chunk_map_next(a, ia, &ia, &ha);
        bool nb = ib < chunk_map_n_chunks(b) && chunk_map_next(b, ib, &ib, &hb);
        if (na != nb)
            return false;
        if (!na)
            return true;
        if (ia != ib || memcmp(&ha, &hb, sizeof ha) != 0)
            return false;
        ia++;
        ib++;
    }
}

/* A full encode of a fresh map holding m's entries. */
static int fuzz_fresh_root(const struct chunk_map *m, struct chunk_hash *root)
{
    struct chunk_map *f = chunk_map_new(chunk_map_n_chunks(m));
    struct fuzz_store scratch = {0};
    struct chunk_hash h;
    uint64_t idx = 0;
    int r = 0;

    if (f == NULL)
        return -ENOMEM;
    while (r == 0 && idx < chunk_map_n_chunks(m) && chunk_map_next(m, idx, &idx, &h)) {
        r = chunk_map_set(f, idx, &h);
        idx++;
    }
    if (r == 0)
        r = chunk_map_encode(f, fuzz_sink, &scratch, root);
    chunk_map_free(f);
    fuzz_store_free(&scratch);
    return r;
}

static void fuzz_check_map(struct chunk_map *m, uint64_t n_chunks, const struct chunk_hash *root,
                           struct fuzz_store *s, const uint8_t *ops, size_t n_ops)
{
    struct fuzz_walk w = {.n_chunks = n_chunks};
    struct chunk_hash again, fresh;
    struct chunk_map *d = NULL;
    size_t before = s->n;

    FUZZ_ASSERT(chunk_map_n_chunks(m) == n_chunks);
    FUZZ_ASSERT(chunk_map_foreach(m, fuzz_walk_fn, &w) == 0);
    FUZZ_ASSERT(w.count == chunk_map_count(m));
    /* A decoded map remembers its pages: encoding it again emits nothing. */
    FUZZ_ASSERT(chunk_map_encode(m, fuzz_sink, s, &again) == 0);
    FUZZ_ASSERT(s->n == before && memcmp(&again, root, sizeof again) == 0);
    /* Canonical: whatever decodes is exactly what the encoder writes. */
    if (fuzz_fresh_root(m, &fresh) == 0)
        FUZZ_ASSERT(memcmp(&fresh, root, sizeof fresh) == 0);

    /* Edits: 9 bytes each, an index (modulo the disk) and a hash byte (0 removes). */
    for (size_t i = 0; i + 9 <= n_ops && i < 9 * 32; i += 9) {
        uint64_t idx = n_chunks ? fuzz_le64(ops + i) % n_chunks : 0;
        struct chunk_hash h;
        memset(&h, ops[i + 8], sizeof h);
        int r = chunk_map_set(m, idx, &h);
        FUZZ_ASSERT(r == 0 || (n_chunks == 0 && r == -ERANGE) || r == -ENOMEM);
        if (r == 0)
            FUZZ_ASSERT(chunk_map_get(m, idx, NULL) == (ops[i + 8] != 0));
    }
    if (chunk_map_encode(m, fuzz_sink, s, &again) != 0 || fuzz_fresh_root(m, &fresh) != 0)
        return; /* out of memory only */
    FUZZ_ASSERT(memcmp(&fresh, &again, sizeof fresh) == 0);
    if (chunk_map_decode(&again, n_chunks, fuzz_source, s, &d) == 0) {
        FUZZ_ASSERT(fuzz_maps_equal(m, d));
        chunk_map_free(d);
    } else {
        FUZZ_ASSERT(!"the incremental encode's pages do not decode");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_store s = {0};
    struct chunk_map *m = NULL;
    uint64_t n_chunks;
    int r;

    wisp_log_set_sink(fuzz_quiet);
    fuzz_parse(data, size);
    if (size < 8)
        return 0;
    n_chunks = fuzz_le64(data);
    if (fuzz_build(data, size, &s)) {
        for (size_t i = 0; i < s.n; i++)
            fuzz_parse(s.pages[i].data, s.pages[i].len);
        struct chunk_hash root = s.pages[0].name;
        r = chunk_map_decode(&root, n_chunks, fuzz_source, &s, &m);
        if (r == 0) {
            FUZZ_ASSERT(m != NULL);
            fuzz_check_map(m, n_chunks, &root, &s, s.pages[0].data, s.pages[0].len);
            chunk_map_free(m);
        } else {
            FUZZ_ASSERT(r == -EBADMSG || r == -ENOENT || r == -ENOMEM);
        }
    }
    fuzz_store_free(&s);
    return 0;
}
