/* meta_refs.c: the chunks referenced by every version of every disk (meta_refs.h).
 *
 * The walk collects the roots first (every disk's head, then its checkpoints), then reads each
 * root's pages depth first.  Two hash sets: `pages`, the pages read so far, which is what lets
 * a shared subtree be walked once; and `chunks`, the result.  Both live only as long as the
 * struct meta_refs.
 *
 * hash_set: open addressing with linear probing, at most half full, grown by doubling.  A slot
 * holds a whole 32-byte hash; the all-zero hash marks an empty slot. */
#include "meta_refs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "hash.h"
#include "log.h"

/* ---- hash_set ------------------------------------------------------------------------------- */

struct hash_set {
    struct chunk_hash *slots;
    uint64_t key; /* mixed into every slot choice */
    unsigned bits;
    uint64_t count;
};

#define HASH_SET_MIN_BITS 10

static inline uint64_t hash_set_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* Every byte counts, so hashes that agree on a part (crafted or not) still spread. */
static uint64_t hash_set_slot(const struct hash_set *s, const struct chunk_hash *h)
{
    uint64_t x = s->key, w;

    for (size_t i = 0; i < CHUNK_HASH_LEN; i += sizeof w) {
        memcpy(&w, h->b + i, sizeof w);
        x = hash_set_mix(x ^ w);
    }
    return x >> (64 - s->bits);
}

struct hash_set *hash_set_new(void)
{
    struct hash_set *s = calloc(1, sizeof *s);

    if (s == NULL)
        return NULL;
    s->bits = HASH_SET_MIN_BITS;
    s->slots = calloc((size_t)1 << s->bits, sizeof *s->slots);
    if (s->slots == NULL) {
        free(s);
        return NULL;
    }
    /* The key only spreads crafted hashes; without getrandom a clock-based one will do. */
    if (getrandom(&s->key, sizeof s->key, GRND_NONBLOCK) != (ssize_t)sizeof s->key) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s->key = (uint64_t)ts.tv_nsec * UINT64_C(0x2545f4914f6cdd1d) ^ (uint64_t)(uintptr_t)s;
    }
    return s;
}

void hash_set_free(struct hash_set *s)
{
    if (s == NULL)
        return;
    free(s->slots);
    free(s);
}

/* Index of h's slot, or of the empty slot where it would go. */
static uint64_t hash_set_find(const struct hash_set *s, const struct chunk_hash *h)
{
    uint64_t mask = ((uint64_t)1 << s->bits) - 1;
    uint64_t i = hash_set_slot(s, h);

    while (!chunk_hash_is_zero(&s->slots[i]) && memcmp(&s->slots[i], h, sizeof *h) != 0)
        i = (i + 1) & mask;
    return i;
}

static int hash_set_grow(struct hash_set *s)
{
    uint64_t old_n = (uint64_t)1 << s->bits;
    struct chunk_hash *old = s->slots;

    if (s->bits >= 40)
        return -ENOMEM;
    s->slots = calloc((size_t)1 << (s->bits + 1), sizeof *s->slots);
    if (s->slots == NULL) {
        s->slots = old;
        return -ENOMEM;
    }
    s->bits++;
    for (uint64_t i = 0; i < old_n; i++)
        if (!chunk_hash_is_zero(&old[i]))
            s->slots[hash_set_find(s, &old[i])] = old[i];
    free(old);
    return 0;
}

int hash_set_add(struct hash_set *s, const struct chunk_hash *h)
{
    uint64_t i;
    int r;

    if (chunk_hash_is_zero(h))
        return -EINVAL;
    i = hash_set_find(s, h);
    if (!chunk_hash_is_zero(&s->slots[i]))
        return 0;
    /* At most half full, so probes stay short. */
    if ((s->count + 1) * 2 > (uint64_t)1 << s->bits) {
        r = hash_set_grow(s);
        if (r < 0)
            return r;
        i = hash_set_find(s, h);
    }
    s->slots[i] = *h;
    s->count++;
    return 1;
}

bool hash_set_contains(const struct hash_set *s, const struct chunk_hash *h)
{
    if (chunk_hash_is_zero(h))
        return false;
    return !chunk_hash_is_zero(&s->slots[hash_set_find(s, h)]);
}

uint64_t hash_set_count(const struct hash_set *s)
{
    return s->count;
}

/* ---- the walk ------------------------------------------------------------------------------- */

struct meta_refs {
    struct hash_set *chunks;
    struct hash_set *pages;
    struct meta_refs_stats stats;
};

struct refs_roots {
    struct chunk_hash *v;
    size_t n, cap;
};

static int refs_root_add(struct refs_roots *roots, const struct chunk_hash *root)
{
    if (roots->n == roots->cap) {
        size_t ncap = roots->cap ? roots->cap * 2 : 64;
        struct chunk_hash *nv = realloc(roots->v, ncap * sizeof *nv);
        if (nv == NULL)
            return -ENOMEM;
        roots->v = nv;
        roots->cap = ncap;
    }
    roots->v[roots->n++] = *root;
    return 0;
}

struct refs_disk {
    int64_t id;
    char name[META_DISK_NAME_MAX + 1];
};

struct refs_list {
    struct refs_roots *roots;
    struct refs_disk *disks;
    size_t n_disks, cap_disks;
};

static int refs_collect_disk(const struct meta_disk *d, void *opaque)
{
    struct refs_list *l = opaque;

    if (l->n_disks == l->cap_disks) {
        size_t ncap = l->cap_disks ? l->cap_disks * 2 : 16;
        struct refs_disk *nd = realloc(l->disks, ncap * sizeof *nd);
        if (nd == NULL)
            return -ENOMEM;
        l->disks = nd;
        l->cap_disks = ncap;
    }
    l->disks[l->n_disks].id = d->id;
    memcpy(l->disks[l->n_disks].name, d->name, sizeof d->name);
    l->n_disks++;
    return refs_root_add(l->roots, &d->head_root);
}

static int refs_collect_checkpoint(const struct meta_checkpoint *c, void *opaque)
{
    return refs_root_add(opaque, &c->root);
}

/* A chunk flushed locally but not uploaded may hold only some blocks; the others are its base,
 * which the upload reads.  The head named the base when the file was made, but a later commit
 * may have moved the head on: the pending row still needs it. */
static int refs_collect_pending_base(const struct meta_pending *p, void *opaque)
{
    struct meta_refs *refs = opaque;

    int r = p->base ? hash_set_add(refs->chunks, p->base) : 0;
    return r < 0 ? r : 0; /* 1, "added", would stop the listing */
}

static int refs_bad_page(const struct chunk_hash *name, const char *why, int err)
{
    char hex[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(name, hex);
    log_error("meta", "reference walk: map page %s: %s", hex, why);
    return err;
}

/* Reads page `name`, expected at `level` (or any level when level < 0, for a root) starting at
 * index `first`, and everything below it that was not read before. */
static int refs_visit(struct meta *m, struct meta_refs *refs, const struct chunk_hash *name,
                      int level, uint64_t first)
{
    struct chunk_map_page_info info = {0};
    struct chunk_hash actual;
    void *page = NULL;
    size_t len = 0;
    int r;

    r = hash_set_add(refs->pages, name);
    if (r == 0) {
        refs->stats.pages_shared++;
        return 0;
    }
    if (r < 0)
        return r == -EINVAL ? refs_bad_page(name, "the zero hash names no page", -EBADMSG) : r;
    refs->stats.pages++;

    r = meta_page_get(m, name, &page, &len);
    if (r == -ENOENT)
        return refs_bad_page(name, "missing from the metadata", r);
    if (r < 0)
        return refs_bad_page(name, strerror(-r), r);
    r = hash_sha256(page, len, actual.b);
    if (r < 0)
        goto out;
    if (memcmp(actual.b, name->b, CHUNK_HASH_LEN) != 0) {
        r = refs_bad_page(name, "content does not match its hash", -EBADMSG);
        goto out;
    }
    r = chunk_map_page_parse(page, len, &info);
    if (r < 0) {
        if (r == -EBADMSG)
            r = refs_bad_page(name, "malformed page", r);
        goto out;
    }
    if ((level >= 0 && info.level != (unsigned)level) || info.first != first) {
        r = refs_bad_page(name, "page is not at its place in the tree", -EBADMSG);
        goto out;
    }
    for (uint32_t i = 0; i < info.count && r == 0; i++) {
        if (info.kind == 0) {
            r = hash_set_add(refs->chunks, &info.entries[i].hash);
            r = r < 0 ? r : 0;
            continue;
        }
        /* A child covers 2^(10 * level) indices; its first must not overflow. */
        unsigned shift = 10u * info.level;
        uint64_t pos = info.entries[i].position;
        if (pos > (UINT64_MAX - first) >> shift) {
            r = refs_bad_page(name, "child beyond the index space", -EBADMSG);
            break;
        }
        r = refs_visit(m, refs, &info.entries[i].hash, info.level - 1, first + (pos << shift));
    }
out:
    free(info.entries);
    free(page);
    return r;
}

static int refs_walk_all(struct meta *m, struct meta_refs *refs)
{
    struct refs_roots roots = {0};
    struct refs_list l = {.roots = &roots};
    int r;

    r = meta_disk_list(m, refs_collect_disk, &l);
    for (size_t i = 0; i < l.n_disks && r == 0; i++) {
        r = meta_checkpoint_list(m, l.disks[i].id, refs_collect_checkpoint, &roots);
        if (r == 0)
            r = meta_pending_list(m, l.disks[i].id, refs_collect_pending_base, refs);
        if (r < 0)
            log_error("meta", "reference walk: checkpoints and pending chunks of %s: %s",
                      l.disks[i].name, strerror(-r));
    }
    refs->stats.disks += l.n_disks;
    refs->stats.versions += roots.n;
    for (size_t i = 0; i < roots.n && r == 0; i++)
        if (!chunk_hash_is_zero(&roots.v[i]))
            r = refs_visit(m, refs, &roots.v[i], -1, 0);
    free(l.disks);
    free(roots.v);
    return r;
}

struct meta_refs *meta_refs_new(void)
{
    struct meta_refs *refs = calloc(1, sizeof *refs);

    if (refs == NULL)
        return NULL;
    refs->chunks = hash_set_new();
    refs->pages = hash_set_new();
    if (refs->chunks == NULL || refs->pages == NULL) {
        meta_refs_free(refs);
        return NULL;
    }
    return refs;
}

int meta_refs_add(struct meta_refs *refs, struct meta *m)
{
    struct meta_refs_stats before = refs->stats;
    int r;

    r = meta_snapshot_begin(m);
    if (r < 0)
        return r;
    r = refs_walk_all(m, refs);
    meta_snapshot_end(m);
    if (r == -ENOMEM)
        log_error("meta", "reference walk: out of memory");
    if (r < 0) {
        refs->stats = before; /* the set may hold part of m's references: the caller drops it */
        return r;
    }
    refs->stats.chunks = hash_set_count(refs->chunks);
    return 0;
}

int meta_refs_collect(struct meta *m, struct meta_refs **out)
{
    struct meta_refs *refs = meta_refs_new();
    int r;

    if (refs == NULL)
        return -ENOMEM;
    r = meta_refs_add(refs, m);
    if (r < 0) {
        meta_refs_free(refs);
        return r;
    }
    *out = refs;
    return 0;
}

bool meta_refs_contains(const struct meta_refs *refs, const struct chunk_hash *h)
{
    return hash_set_contains(refs->chunks, h);
}

void meta_refs_get_stats(const struct meta_refs *refs, struct meta_refs_stats *out)
{
    *out = refs->stats;
}

void meta_refs_free(struct meta_refs *refs)
{
    if (refs == NULL)
        return;
    hash_set_free(refs->chunks);
    hash_set_free(refs->pages);
    free(refs);
}
