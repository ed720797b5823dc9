/* test_chunk_map: the sparse map against a simple model, and its Merkle pages: round trips,
 * incremental encoding, strict parsing and corrupt or missing pages.  Prints the cost of an
 * incremental encode and the memory per entry (measured, not asserted tightly). */
#include "chunk_map.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <glib.h>

#include "hash.h"
#include "log.h"
#include "meta_test.h"

/* Nothing on disk to remove. */
static void test_cleanup(void)
{
}

#define PAGE_HEADER_LEN 20
#define PAGE_ENTRY_LEN  36
#define DISK_100G       (UINT64_C(100) << 30 >> 16) /* 100 GiB in 64 KiB chunks: 1,638,400 */

static uint64_t test_rng_state = 0x9e3779b97f4a7c15u;

static uint64_t test_rand(void)
{
    uint64_t z = (test_rng_state += 0x9e3779b97f4a7c15u); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* A non-zero hash determined by (idx, version), so the model only keeps versions. */
static struct chunk_hash test_hash(uint64_t idx, uint32_t version)
{
    struct chunk_hash h;
    uint64_t s = idx * 0x100000001b3u ^ ((uint64_t)version << 40) ^ 0xcbf29ce484222325u;

    for (int i = 0; i < CHUNK_HASH_LEN; i += 8) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        memcpy(&h.b[i], &s, 8);
    }
    h.b[0] |= 1;
    return h;
}

static double test_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- a page store: hash -> bytes, counting what the sink receives ------------------------- */

struct page_store {
    GHashTable *pages; /* struct chunk_hash * -> GBytes */
    size_t emitted;    /* pages given to the sink since the last reset */
    size_t fail_after; /* the sink fails once this many pages were accepted (0: never) */
};

static guint test_hash_key_hash(gconstpointer k)
{
    guint v;

    memcpy(&v, k, sizeof v);
    return v;
}

static gboolean test_hash_key_equal(gconstpointer a, gconstpointer b)
{
    return memcmp(a, b, CHUNK_HASH_LEN) == 0;
}

static void store_init(struct page_store *s)
{
    memset(s, 0, sizeof *s);
    s->pages = g_hash_table_new_full(test_hash_key_hash, test_hash_key_equal, g_free,
                                     (GDestroyNotify)g_bytes_unref);
}

static void store_clear(struct page_store *s)
{
    g_hash_table_destroy(s->pages);
}

static int store_sink(const struct chunk_hash *page_hash, const void *page, size_t len,
                      void *opaque)
{
    struct page_store *s = opaque;
    struct chunk_hash check;

    if (s->fail_after && s->emitted >= s->fail_after)
        return -EIO;
    /* The sink's promise: page_hash names page. */
    CHECK(hash_sha256(page, len, check.b) == 0);
    CHECK(memcmp(check.b, page_hash->b, CHUNK_HASH_LEN) == 0);
    s->emitted++;
    if (!g_hash_table_contains(s->pages, page_hash))
        g_hash_table_insert(s->pages, g_memdup2(page_hash, sizeof *page_hash),
                            g_bytes_new(page, len));
    return 0;
}

static int store_source(const struct chunk_hash *page_hash, void **page, size_t *len, void *opaque)
{
    struct page_store *s = opaque;
    GBytes *b = g_hash_table_lookup(s->pages, page_hash);
    gsize n;
    const void *data;

    if (b == NULL)
        return -ENOENT;
    data = g_bytes_get_data(b, &n);
    *page = malloc(n ? n : 1);
    if (*page == NULL)
        return -ENOMEM;
    if (n > 0)
        memcpy(*page, data, n);
    *len = n;
    return 0;
}

static void store_put_raw(struct page_store *s, const void *page, size_t len,
                          struct chunk_hash *name)
{
    REQUIRE(hash_sha256(page, len, name->b) == 0);
    g_hash_table_replace(s->pages, g_memdup2(name, sizeof *name), g_bytes_new(page, len));
}

/* ---- a model: idx -> version, with everything the map answers computed naively ------------ */

struct model {
    uint64_t n_chunks;
    GHashTable *v; /* idx (boxed) -> version */
};

static void model_init(struct model *md, uint64_t n_chunks)
{
    md->n_chunks = n_chunks;
    md->v = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
}

static void model_set(struct model *md, struct chunk_map *m, uint64_t idx, uint32_t version)
{
    struct chunk_hash h = test_hash(idx, version);

    CHECK(chunk_map_set(m, idx, &h) == 0);
    g_hash_table_replace(md->v, g_memdup2(&idx, sizeof idx), GUINT_TO_POINTER(version));
}

static void model_remove(struct model *md, struct chunk_map *m, uint64_t idx)
{
    chunk_map_remove(m, idx);
    g_hash_table_remove(md->v, &idx);
}

static int test_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The model's indices, sorted; *n receives the count. */
static uint64_t *model_sorted(const struct model *md, size_t *n)
{
    GHashTableIter it;
    gpointer k;
    uint64_t *v;
    size_t i = 0;

    *n = g_hash_table_size(md->v);
    v = g_new(uint64_t, *n + 1);
    g_hash_table_iter_init(&it, md->v);
    while (g_hash_table_iter_next(&it, &k, NULL))
        v[i++] = *(uint64_t *)k;
    qsort(v, *n, sizeof *v, test_cmp_u64);
    return v;
}

struct walk {
    const uint64_t *idx;
    const struct model *md;
    size_t i, n, stop_at;
    bool ok;
};

static int walk_fn(uint64_t idx, const struct chunk_hash *h, void *opaque)
{
    struct walk *w = opaque;

    if (w->i >= w->n || w->idx[w->i] != idx) {
        w->ok = false;
        return -1;
    }
    uint32_t version = GPOINTER_TO_UINT(g_hash_table_lookup(w->md->v, &idx));
    struct chunk_hash want = test_hash(idx, version);
    if (memcmp(&want, h, sizeof want) != 0)
        w->ok = false;
    w->i++;
    return w->stop_at && w->i == w->stop_at ? 42 : 0;
}

/* The map holds exactly the model: count, foreach, next from every entry and around it, get
 * at each entry and its neighbours. */
static bool model_matches(const struct model *md, const struct chunk_map *m)
{
    size_t n;
    uint64_t *idx = model_sorted(md, &n);
    struct walk w = {.idx = idx, .md = md, .n = n, .ok = true};
    bool ok = true;

    if (chunk_map_count(m) != n || chunk_map_n_chunks(m) != md->n_chunks)
        ok = false;
    if (chunk_map_foreach(m, walk_fn, &w) != 0 || w.i != n || !w.ok)
        ok = false;
    for (size_t i = 0; i < n && ok; i++) {
        uint64_t got;
        struct chunk_hash h;
        uint32_t version = GPOINTER_TO_UINT(g_hash_table_lookup(md->v, &idx[i]));
        struct chunk_hash want = test_hash(idx[i], version);

        if (!chunk_map_get(m, idx[i], &h) || memcmp(&h, &want, sizeof h) != 0)
            ok = false;
        if (idx[i] > 0 && (i == 0 || idx[i - 1] != idx[i] - 1) &&
            chunk_map_get(m, idx[i] - 1, NULL))
            ok = false;
        /* next from the entry itself, and from just after the previous one */
        if (!chunk_map_next(m, idx[i], &got, NULL) || got != idx[i])
            ok = false;
        uint64_t from = i == 0 ? 0 : idx[i - 1] + 1;
        if (!chunk_map_next(m, from, &got, &h) || got != idx[i] || memcmp(&h, &want, sizeof h))
            ok = false;
    }
    if (ok && n > 0) {
        uint64_t got;
        if (idx[n - 1] + 1 < md->n_chunks && chunk_map_next(m, idx[n - 1] + 1, &got, NULL))
            ok = false;
    }
    if (ok && n == 0) {
        uint64_t got;
        if (chunk_map_next(m, 0, &got, NULL))
            ok = false;
    }
    g_free(idx);
    return ok;
}

static void model_clear(struct model *md)
{
    g_hash_table_destroy(md->v);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_hex(void)
{
    struct chunk_hash h = test_hash(7, 1), back, zero = {{0}};
    char hex[2 * CHUNK_HASH_LEN + 1], bad[2 * CHUNK_HASH_LEN + 2];

    chunk_hash_to_hex(&h, hex);
    CHECK(strlen(hex) == 64);
    CHECK(chunk_hash_from_hex(hex, &back) == 0 && memcmp(&h, &back, sizeof h) == 0);
    for (size_t i = 0; i < 64; i++)
        hex[i] = (char)g_ascii_toupper(hex[i]);
    CHECK(chunk_hash_from_hex(hex, &back) == 0 && memcmp(&h, &back, sizeof h) == 0);
    CHECK(chunk_hash_from_hex("", &back) == -EINVAL);
    CHECK(chunk_hash_from_hex("abc", &back) == -EINVAL);
    memcpy(bad, hex, 64);
    bad[64] = '0';
    bad[65] = '\0';
    CHECK(chunk_hash_from_hex(bad, &back) == -EINVAL); /* 65 digits */
    bad[63] = '\0';
    CHECK(chunk_hash_from_hex(bad, &back) == -EINVAL); /* 63 digits */
    memcpy(bad, hex, 65);
    bad[10] = 'g';
    CHECK(chunk_hash_from_hex(bad, &back) == -EINVAL);
    CHECK(chunk_hash_is_zero(&zero));
    CHECK(!chunk_hash_is_zero(&h));
    zero.b[31] = 1;
    CHECK(!chunk_hash_is_zero(&zero));
}

static void test_basic(void)
{
    struct chunk_map *m = chunk_map_new(1);
    struct chunk_hash h = test_hash(0, 1), zero = {{0}}, got;
    uint64_t idx;

    REQUIRE(m != NULL);
    CHECK(chunk_map_n_chunks(m) == 1 && chunk_map_count(m) == 0);
    CHECK(!chunk_map_get(m, 0, &got));
    CHECK(!chunk_map_next(m, 0, &idx, NULL));
    CHECK(chunk_map_set(m, 1, &h) == -ERANGE);
    CHECK(chunk_map_set(m, UINT64_MAX, &h) == -ERANGE);
    CHECK(chunk_map_set(m, 0, &h) == 0);
    CHECK(chunk_map_get(m, 0, &got) && memcmp(&got, &h, sizeof h) == 0);
    CHECK(chunk_map_get(m, 0, NULL));
    CHECK(!chunk_map_get(m, 1, NULL));
    CHECK(chunk_map_count(m) == 1);
    CHECK(chunk_map_next(m, 0, &idx, NULL) && idx == 0);
    CHECK(!chunk_map_next(m, 1, &idx, NULL));
    /* A zero hash removes. */
    CHECK(chunk_map_set(m, 0, &zero) == 0);
    CHECK(!chunk_map_get(m, 0, NULL) && chunk_map_count(m) == 0);
    chunk_map_remove(m, 0); /* removing what is absent, or out of range, is a no-op */
    chunk_map_remove(m, 5);
    CHECK(chunk_map_count(m) == 0);
    chunk_map_free(m);
    chunk_map_free(NULL);

    /* A disk of no chunks. */
    m = chunk_map_new(0);
    REQUIRE(m != NULL);
    CHECK(chunk_map_set(m, 0, &h) == -ERANGE);
    CHECK(!chunk_map_next(m, 0, &idx, NULL));
    chunk_map_free(m);
}

static int stop_fn(uint64_t idx, const struct chunk_hash *h, void *opaque)
{
    int *n = opaque;

    return ++*n == 3 ? 7 : 0;
}

/* Dense and sparse patterns on a 5000-chunk map, with replacement, removal and a copy. */
static void test_patterns(void)
{
    const uint64_t n = 5000;
    struct chunk_map *m = chunk_map_new(n), *c;
    struct model md;
    int calls = 0;

    REQUIRE(m != NULL);
    model_init(&md, n);
    for (uint64_t i = 0; i < n; i++) /* dense, in order */
        model_set(&md, m, i, 1);
    CHECK(model_matches(&md, m));
    for (uint64_t i = 0; i < n; i += 3) /* replace a third */
        model_set(&md, m, i, 2);
    for (uint64_t i = 1; i < n; i += 2) /* remove every odd one */
        model_remove(&md, m, i);
    CHECK(model_matches(&md, m));
    for (int i = 0; i < 20000; i++) { /* random churn */
        uint64_t idx = test_rand() % n;
        if (test_rand() % 3 == 0)
            model_remove(&md, m, idx);
        else
            model_set(&md, m, idx, (uint32_t)test_rand());
    }
    CHECK(model_matches(&md, m));
    CHECK(chunk_map_foreach(m, stop_fn, &calls) == 7 && calls == 3);

    c = chunk_map_copy(m);
    REQUIRE(c != NULL);
    CHECK(model_matches(&md, c));
    for (uint64_t i = 0; i < n; i++) /* empty it through the model: the copy is untouched */
        model_remove(&md, m, i);
    CHECK(model_matches(&md, m));
    CHECK(chunk_map_count(c) > 0);
    chunk_map_free(c);

    /* Sparse: one entry per few leaves, and next() jumping across empty leaves. */
    for (uint64_t i = 17; i < n; i += 1500)
        model_set(&md, m, i, 3);
    CHECK(model_matches(&md, m));
    chunk_map_free(m);
    model_clear(&md);
}

/* Indices near the end of the largest disks: 1 PiB in 64 KiB chunks, and the whole u64 range
 * (where the tree's level shifts reach 64 and beyond). */
static void test_large_indices(void)
{
    static const uint64_t sizes[] = {UINT64_C(1) << 34, UINT64_MAX, (UINT64_C(1) << 40) + 1};

    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        uint64_t n = sizes[s], idx;
        struct chunk_map *m = chunk_map_new(n), *d = NULL;
        struct chunk_hash h = test_hash(1, 1), root;
        struct page_store st;
        struct model md;

        REQUIRE(m != NULL);
        model_init(&md, n);
        store_init(&st);
        model_set(&md, m, n - 1, 1);
        model_set(&md, m, n - 1024, 1);
        model_set(&md, m, n / 2, 1);
        model_set(&md, m, 0, 1);
        model_set(&md, m, 1023, 1);
        model_set(&md, m, 1024, 1);
        CHECK(chunk_map_set(m, n, &h) == -ERANGE);
        CHECK(model_matches(&md, m));
        CHECK(chunk_map_next(m, 1025, &idx, NULL) && idx == n / 2);
        CHECK(chunk_map_next(m, n / 2 + 1, &idx, NULL) && idx == n - 1024);
        CHECK(chunk_map_next(m, n - 1, &idx, NULL) && idx == n - 1);
        CHECK(!chunk_map_next(m, n, &idx, NULL));
        CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
        CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == 0);
        if (d) {
            CHECK(model_matches(&md, d));
            chunk_map_free(d);
        }
        chunk_map_free(m);
        store_clear(&st);
        model_clear(&md);
    }
}

/* Level of the root page for a map whose root is root. */
static int root_level(struct page_store *st, const struct chunk_hash *root)
{
    GBytes *b = g_hash_table_lookup(st->pages, root);
    struct chunk_map_page_info info;
    gsize len;
    const void *p;
    int level;

    if (b == NULL)
        return -1;
    p = g_bytes_get_data(b, &len);
    if (chunk_map_page_parse(p, len, &info) != 0)
        return -2;
    level = info.level;
    free(info.entries);
    return level;
}

/* Random maps of several sizes: encode, decode, compare; a fresh full encode of the decoded
 * map gives the same root (the encoding is canonical). */
static void test_round_trip(void)
{
    static const struct {
        uint64_t n_chunks, entries;
        int level;
    } cases[] = {
        {1, 1, 0},       {1024, 1, 0},          {1024, 1024, 0},       {1025, 1, 1},
        {1025, 2, 1},    {1025, 1025, 1},       {DISK_100G, 10000, 2}, {DISK_100G, 1, 2},
        {1 << 20, 3, 1}, {(1 << 20) + 1, 3, 2},
    };

    for (size_t c = 0; c < G_N_ELEMENTS(cases); c++) {
        uint64_t n = cases[c].n_chunks;
        struct chunk_map *m = chunk_map_new(n), *d = NULL, *again;
        struct chunk_hash root, root2, zero = {{0}};
        struct page_store st;
        struct model md;

        REQUIRE(m != NULL);
        model_init(&md, n);
        store_init(&st);
        /* An empty map is the zero root, with no pages. */
        CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
        CHECK(memcmp(&root, &zero, sizeof root) == 0 && st.emitted == 0);
        CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == 0);
        if (d) {
            CHECK(chunk_map_count(d) == 0);
            chunk_map_free(d);
            d = NULL;
        }

        if (cases[c].entries == n) {
            for (uint64_t i = 0; i < n; i++)
                model_set(&md, m, i, 1);
        } else {
            model_set(&md, m, n - 1, 1); /* always the last index */
            while (g_hash_table_size(md.v) < cases[c].entries)
                model_set(&md, m, test_rand() % n, 1);
        }
        CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
        CHECK(!chunk_hash_is_zero(&root));
        CHECK(root_level(&st, &root) == cases[c].level);
        CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == 0);
        REQUIRE(d != NULL);
        CHECK(model_matches(&md, d));

        /* The decoded map remembers its pages: encoding it again emits nothing. */
        st.emitted = 0;
        CHECK(chunk_map_encode(d, store_sink, &st, &root2) == 0);
        CHECK(st.emitted == 0 && memcmp(&root, &root2, sizeof root) == 0);
        /* Forgetting them re-emits the whole tree, to the same root. */
        again = chunk_map_copy(d);
        REQUIRE(again != NULL);
        chunk_map_forget_pages(again);
        st.emitted = 0;
        CHECK(chunk_map_encode(again, store_sink, &st, &root2) == 0);
        CHECK(memcmp(&root, &root2, sizeof root) == 0);
        CHECK(st.emitted == g_hash_table_size(st.pages));
        /* The wrong n_chunks: another tree depth, or entries beyond the end. */
        if (cases[c].level > 0) {
            struct chunk_map *bad = NULL;
            CHECK(chunk_map_decode(&root, 1024, store_source, &st, &bad) == -EBADMSG);
            CHECK(bad == NULL);
        }
        if (n > 1) {
            struct chunk_map *bad = NULL;
            CHECK(chunk_map_decode(&root, n - 1, store_source, &st, &bad) == -EBADMSG);
        }
        chunk_map_free(again);
        chunk_map_free(d);
        chunk_map_free(m);
        store_clear(&st);
        model_clear(&md);
    }
}

/* Re-encodes m from scratch (a fresh map with the same entries) and returns that root. */
static struct chunk_hash fresh_root(const struct chunk_map *m)
{
    struct chunk_map *f = chunk_map_new(chunk_map_n_chunks(m));
    struct chunk_hash root;
    struct page_store st;
    uint64_t idx = 0;
    struct chunk_hash h;

    REQUIRE(f != NULL);
    store_init(&st);
    while (idx < chunk_map_n_chunks(m) && chunk_map_next(m, idx, &idx, &h)) {
        CHECK(chunk_map_set(f, idx, &h) == 0);
        idx++;
    }
    CHECK(chunk_map_encode(f, store_sink, &st, &root) == 0);
    chunk_map_free(f);
    store_clear(&st);
    return root;
}

static bool decodes_to(struct page_store *st, const struct chunk_hash *root, const struct model *md)
{
    struct chunk_map *d = NULL;
    bool ok;

    if (chunk_map_decode(root, md->n_chunks, store_source, st, &d) != 0)
        return false;
    ok = model_matches(md, d);
    chunk_map_free(d);
    return ok;
}

static void test_incremental(void)
{
    const uint64_t n = DISK_100G;
    struct chunk_map *m = chunk_map_new(n);
    struct chunk_hash root, want;
    struct page_store st;
    struct model md;
    size_t n_idx;
    uint64_t *idx;

    REQUIRE(m != NULL);
    model_init(&md, n);
    store_init(&st);
    while (g_hash_table_size(md.v) < 10000)
        model_set(&md, m, test_rand() % n, 1);
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);

    /* No change: no page, same root. */
    st.emitted = 0;
    CHECK(chunk_map_encode(m, store_sink, &st, &want) == 0);
    CHECK(st.emitted == 0 && memcmp(&root, &want, sizeof root) == 0);
    /* Rewriting an entry with its own hash is no change either. */
    idx = model_sorted(&md, &n_idx);
    model_set(&md, m, idx[0], 1);
    CHECK(chunk_map_encode(m, store_sink, &st, &want) == 0);
    CHECK(st.emitted == 0 && memcmp(&root, &want, sizeof root) == 0);

    /* Five changes in five leaves: at most 5 leaves + their level-1 pages + the root. */
    model_set(&md, m, idx[10], 2);          /* replace */
    model_remove(&md, m, idx[20]);          /* remove */
    model_set(&md, m, (idx[30] | 1023), 2); /* add (maybe a replace) */
    model_set(&md, m, 5, 2);
    model_set(&md, m, n - 2, 2);
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    printf("incremental: 5 changes re-emitted %zu pages\n", st.emitted);
    CHECK(st.emitted >= 3 && st.emitted <= 5 + 2 + 1);
    want = fresh_root(m);
    CHECK(memcmp(&root, &want, sizeof root) == 0);
    CHECK(decodes_to(&st, &root, &md));

    /* Emptying a leaf removes its page from its parent; emptying a level-1 subtree removes it
     * from the root. */
    for (uint64_t i = 0; i < 1024; i++)
        model_remove(&md, m, i);
    for (uint64_t i = 1 << 20; i < n; i++)
        model_remove(&md, m, i);
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    want = fresh_root(m);
    CHECK(memcmp(&root, &want, sizeof root) == 0);
    CHECK(decodes_to(&st, &root, &md));
    /* Empty and refill the same leaf many times between two encodes. */
    for (int round = 0; round < 100; round++) {
        model_set(&md, m, 2048, (uint32_t)round + 10);
        model_remove(&md, m, 2048);
    }
    model_set(&md, m, 2048, 7);
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    want = fresh_root(m);
    CHECK(memcmp(&root, &want, sizeof root) == 0);

    /* A sink that fails part way: the map keeps its changes, and the next encode (with a good
     * sink) writes everything the new root needs. */
    for (size_t fail_after = 1; fail_after <= 4; fail_after++) {
        struct page_store st2;
        store_init(&st2);
        model_set(&md, m, 3 * 1024 + fail_after, 9);
        model_set(&md, m, 700 * 1024, (uint32_t)fail_after);
        model_set(&md, m, 1500 * 1024 + 3, (uint32_t)fail_after);
        st2.fail_after = fail_after;
        CHECK(chunk_map_encode(m, store_sink, &st2, &root) == -EIO);
        /* The failed attempt's pages are lost (a rolled-back transaction). */
        store_clear(&st2);
        CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
        want = fresh_root(m);
        CHECK(memcmp(&root, &want, sizeof root) == 0);
        CHECK(decodes_to(&st, &root, &md));
    }

    /* Remove everything: the zero root. */
    g_free(idx);
    idx = model_sorted(&md, &n_idx);
    for (size_t i = 0; i < n_idx; i++)
        model_remove(&md, m, idx[i]);
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    CHECK(chunk_hash_is_zero(&root));
    CHECK(chunk_map_count(m) == 0);
    /* And it can grow again from there. */
    model_set(&md, m, 99, 1);
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    CHECK(decodes_to(&st, &root, &md));
    g_free(idx);
    chunk_map_free(m);
    store_clear(&st);
    model_clear(&md);
}

/* Builds a page by hand. */
static size_t make_page(uint8_t *buf, uint8_t kind, uint8_t level, uint64_t first, uint32_t count,
                        const uint32_t *positions, const struct chunk_hash *hashes)
{
    memcpy(buf, "WMP1", 4);
    buf[4] = kind;
    buf[5] = level;
    buf[6] = buf[7] = 0;
    for (int i = 0; i < 8; i++)
        buf[8 + i] = (uint8_t)(first >> (8 * i));
    for (int i = 0; i < 4; i++)
        buf[16 + i] = (uint8_t)(count >> (8 * i));
    for (uint32_t e = 0; e < count; e++) {
        uint8_t *p = buf + PAGE_HEADER_LEN + e * PAGE_ENTRY_LEN;
        for (int i = 0; i < 4; i++)
            p[i] = (uint8_t)(positions[e] >> (8 * i));
        memcpy(p + 4, hashes[e].b, CHUNK_HASH_LEN);
    }
    return PAGE_HEADER_LEN + (size_t)count * PAGE_ENTRY_LEN;
}

static int parse_rc(const uint8_t *p, size_t len)
{
    struct chunk_map_page_info info;
    int r = chunk_map_page_parse(p, len, &info);

    if (r == 0)
        free(info.entries);
    return r;
}

static void test_parse(void)
{
    static uint8_t buf[PAGE_HEADER_LEN + 1100 * PAGE_ENTRY_LEN], mut[sizeof buf];
    uint32_t pos[1100];
    struct chunk_hash hashes[1100];
    struct chunk_map_page_info info;
    size_t len;

    for (uint32_t i = 0; i < 1100; i++) {
        pos[i] = i;
        hashes[i] = test_hash(i, 0);
    }
    len = make_page(buf, 0, 0, 4096, 3, (uint32_t[]){0, 5, 1023}, hashes);
    CHECK(chunk_map_page_parse(buf, len, &info) == 0);
    CHECK(info.kind == 0 && info.level == 0 && info.first == 4096 && info.count == 3);
    CHECK(info.entries[2].position == 1023 &&
          memcmp(&info.entries[2].hash, &hashes[2], CHUNK_HASH_LEN) == 0);
    free(info.entries);

#define MUTATE(off, val)                                                                           \
    do {                                                                                           \
        memcpy(mut, buf, len);                                                                     \
        mut[off] = (uint8_t)(val);                                                                 \
        CHECK(parse_rc(mut, len) == -EBADMSG);                                                     \
    } while (0)
    MUTATE(0, 'X');                                      /* magic */
    MUTATE(3, '2');                                      /* magic version */
    MUTATE(4, 2);                                        /* kind */
    MUTATE(4, 1);                                        /* an interior page at level 0 */
    MUTATE(5, 1);                                        /* a leaf at level 1 */
    MUTATE(6, 1);                                        /* reserved */
    MUTATE(7, 0x80);                                     /* reserved */
    MUTATE(8, 1);                                        /* first not aligned to a leaf */
    MUTATE(16, 2);                                       /* count too small for the length */
    MUTATE(16, 4);                                       /* count too large for the length */
    MUTATE(19, 1);                                       /* count huge */
    MUTATE(PAGE_HEADER_LEN + PAGE_ENTRY_LEN, 0);         /* positions 0, 0: not increasing */
    MUTATE(PAGE_HEADER_LEN + 2 * PAGE_ENTRY_LEN + 1, 4); /* position 1024 + ... */
    MUTATE(PAGE_HEADER_LEN + 2 * PAGE_ENTRY_LEN + 3, 1); /* position >= 2^24 */
#undef MUTATE
    CHECK(parse_rc(buf, len - 1) == -EBADMSG);
    CHECK(parse_rc(buf, len + 1) == -EBADMSG);
    CHECK(parse_rc(buf, 0) == -EBADMSG);
    CHECK(parse_rc(buf, 19) == -EBADMSG);
    /* A zero hash, in a leaf and in an interior page. */
    memcpy(mut, buf, len);
    memset(mut + PAGE_HEADER_LEN + 4, 0, CHUNK_HASH_LEN);
    CHECK(parse_rc(mut, len) == -EBADMSG);
    len = make_page(buf, 1, 1, 0, 2, (uint32_t[]){1, 2}, hashes);
    CHECK(parse_rc(buf, len) == 0);
    memcpy(mut, buf, len);
    memset(mut + PAGE_HEADER_LEN + PAGE_ENTRY_LEN + 4, 0, CHUNK_HASH_LEN);
    CHECK(parse_rc(mut, len) == -EBADMSG);
    /* Interior first must be aligned to its level's span; levels beyond 6 do not exist. */
    len = make_page(buf, 1, 1, 1024, 1, pos, hashes);
    CHECK(parse_rc(buf, len) == -EBADMSG);
    len = make_page(buf, 1, 1, 1 << 20, 1, pos, hashes);
    CHECK(parse_rc(buf, len) == 0);
    len = make_page(buf, 1, 6, 0, 1, pos, hashes);
    CHECK(parse_rc(buf, len) == 0);
    len = make_page(buf, 1, 6, 1 << 20, 1, pos, hashes);
    CHECK(parse_rc(buf, len) == -EBADMSG);
    len = make_page(buf, 1, 7, 0, 1, pos, hashes);
    CHECK(parse_rc(buf, len) == -EBADMSG);
    /* Counts: 0 is never written; 1024 is the most; 1025 is too many. */
    len = make_page(buf, 0, 0, 0, 0, pos, hashes);
    CHECK(parse_rc(buf, len) == -EBADMSG);
    len = make_page(buf, 0, 0, 0, 1024, pos, hashes);
    CHECK(parse_rc(buf, len) == 0);
    len = make_page(buf, 0, 0, 0, 1025, pos, hashes);
    CHECK(parse_rc(buf, len) == -EBADMSG);
}

/* Pages that are well formed and correctly named, but wrong for their place, and pages that
 * are corrupt or missing. */
static void test_decode_errors(void)
{
    const uint64_t n = 5000;
    struct chunk_map *m = chunk_map_new(n), *d = NULL;
    struct chunk_hash root, name, leaf0, leaf1, h = test_hash(1, 1);
    struct chunk_map_page_info info;
    static uint8_t buf[PAGE_HEADER_LEN + 1024 * PAGE_ENTRY_LEN];
    struct page_store st;
    size_t len;
    GBytes *b;

    REQUIRE(m != NULL);
    store_init(&st);
    CHECK(chunk_map_set(m, 3, &h) == 0);
    CHECK(chunk_map_set(m, 1024 + 9, &h) == 0);
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == 0);
    chunk_map_free(d);
    d = NULL;
    /* The root lists the two leaves; keep their names. */
    b = g_hash_table_lookup(st.pages, &root);
    REQUIRE(b != NULL);
    {
        gsize blen;
        const void *p = g_bytes_get_data(b, &blen);
        REQUIRE(chunk_map_page_parse(p, blen, &info) == 0);
        REQUIRE(info.count == 2 && info.kind == 1 && info.level == 1);
        leaf0 = info.entries[0].hash;
        leaf1 = info.entries[1].hash;
        free(info.entries);
    }

    /* Swapped children: the right pages at the wrong place. */
    len = make_page(buf, 1, 1, 0, 2, (uint32_t[]){0, 1}, (struct chunk_hash[]){leaf1, leaf0});
    store_put_raw(&st, buf, len, &name);
    CHECK(chunk_map_decode(&name, n, store_source, &st, &d) == -EBADMSG && d == NULL);
    /* A leaf as the root of a two-level tree, and an interior page where a leaf belongs. */
    CHECK(chunk_map_decode(&leaf0, n, store_source, &st, &d) == -EBADMSG);
    len = make_page(buf, 1, 1, 0, 1, (uint32_t[]){0}, &root);
    store_put_raw(&st, buf, len, &name);
    CHECK(chunk_map_decode(&name, n, store_source, &st, &d) == -EBADMSG);
    /* A child beyond the end of the disk (5000 chunks: leaves 0..4). */
    len = make_page(buf, 1, 1, 0, 2, (uint32_t[]){0, 5}, (struct chunk_hash[]){leaf0, leaf1});
    store_put_raw(&st, buf, len, &name);
    CHECK(chunk_map_decode(&name, n, store_source, &st, &d) == -EBADMSG);
    /* An entry beyond the end, inside the last leaf. */
    {
        struct chunk_hash leaf4;
        len = make_page(buf, 0, 0, 4096, 1, (uint32_t[]){5000 - 4096}, &h);
        store_put_raw(&st, buf, len, &leaf4);
        len = make_page(buf, 1, 1, 0, 1, (uint32_t[]){4}, &leaf4);
        store_put_raw(&st, buf, len, &name);
        CHECK(chunk_map_decode(&name, n, store_source, &st, &d) == -EBADMSG);
        CHECK(chunk_map_decode(&name, n + 1, store_source, &st, &d) == 0);
        chunk_map_free(d);
        d = NULL;
    }
    /* A non-empty root for a disk of no chunks. */
    CHECK(chunk_map_decode(&root, 0, store_source, &st, &d) == -EBADMSG);

    /* Corrupt: a leaf's bytes no longer match its name. */
    b = g_hash_table_lookup(st.pages, &leaf1);
    {
        gsize blen;
        const void *data = g_bytes_get_data(b, &blen);
        uint8_t *copy = g_memdup2(data, blen);
        copy[blen - 1] ^= 1;
        g_hash_table_replace(st.pages, g_memdup2(&leaf1, sizeof leaf1), g_bytes_new(copy, blen));
        CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == -EBADMSG && d == NULL);
        copy[blen - 1] ^= 1;
        g_hash_table_replace(st.pages, g_memdup2(&leaf1, sizeof leaf1), g_bytes_new(copy, blen));
        /* Truncated, and empty. */
        g_hash_table_replace(st.pages, g_memdup2(&leaf1, sizeof leaf1),
                             g_bytes_new(copy, blen - 1));
        CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == -EBADMSG);
        g_hash_table_replace(st.pages, g_memdup2(&leaf1, sizeof leaf1), g_bytes_new(copy, 0));
        CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == -EBADMSG);
        g_free(copy);
    }
    /* Missing: the source's error comes back. */
    g_hash_table_remove(st.pages, &leaf1);
    CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == -ENOENT && d == NULL);
    g_hash_table_remove(st.pages, &root);
    CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == -ENOENT && d == NULL);

    chunk_map_free(m);
    store_clear(&st);
}

/* ---- measurements --------------------------------------------------------------------------- */

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

static void measure_memory(const char *what, uint64_t n_chunks, uint64_t entries, bool clustered)
{
    size_t before, after, before_decode, decoded;
    struct chunk_map *m, *d = NULL;
    struct chunk_hash root;
    struct page_store st;
    uint64_t added = 0;

    store_init(&st);
    before = heap_in_use();
    m = chunk_map_new(n_chunks);
    REQUIRE(m != NULL);
    while (added < entries) {
        uint64_t idx = clustered ? (added * 7919 % (n_chunks / 64)) * 64 + test_rand() % 64
                                 : test_rand() % n_chunks;
        if (!chunk_map_get(m, idx, NULL))
            added++;
        struct chunk_hash h = test_hash(idx, 1);
        REQUIRE(chunk_map_set(m, idx, &h) == 0);
    }
    after = heap_in_use();
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    chunk_map_free(m);
    before_decode = heap_in_use();
    CHECK(chunk_map_decode(&root, n_chunks, store_source, &st, &d) == 0);
    decoded = heap_in_use();
    if (after <= before) { /* a replaced malloc (ASan, valgrind) keeps no mallinfo */
        printf("memory %s: not measurable under this malloc\n", what);
        chunk_map_free(d);
        store_clear(&st);
        return;
    }
    /* Each difference is the map's heap only: the page store grows outside both windows. */
    printf("memory %s: %" PRIu64 " entries, %.1f bytes/entry built by set, "
           "%.1f bytes/entry decoded\n",
           what, entries, (double)(after - before) / (double)entries,
           (double)(decoded - before_decode) / (double)entries);
    chunk_map_free(d);
    store_clear(&st);
}

static void measure_encode(void)
{
    const uint64_t n = DISK_100G;
    struct chunk_map *m = chunk_map_new(n), *d = NULL;
    struct chunk_hash root;
    struct page_store st;
    double t0, t_full, t_inc, t_dec, t_get;
    uint64_t sum = 0;

    REQUIRE(m != NULL);
    store_init(&st);
    while (chunk_map_count(m) < 100000) {
        uint64_t idx = test_rand() % n;
        struct chunk_hash h = test_hash(idx, 1);
        REQUIRE(chunk_map_set(m, idx, &h) == 0);
    }
    t0 = test_now();
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    t_full = test_now() - t0;
    size_t full_pages = st.emitted;

    for (int i = 0; i < 32; i++) {
        uint64_t idx = test_rand() % n;
        struct chunk_hash h = test_hash(idx, 2);
        REQUIRE(chunk_map_set(m, idx, &h) == 0);
    }
    st.emitted = 0;
    t0 = test_now();
    CHECK(chunk_map_encode(m, store_sink, &st, &root) == 0);
    t_inc = test_now() - t0;
    size_t inc_pages = st.emitted;

    t0 = test_now();
    CHECK(chunk_map_decode(&root, n, store_source, &st, &d) == 0);
    t_dec = test_now() - t0;

    t0 = test_now();
    for (int i = 0; i < 1000000; i++) {
        struct chunk_hash h;
        if (chunk_map_get(m, test_rand() % n, &h))
            sum += h.b[1];
    }
    t_get = test_now() - t0;

    printf("encode, 100000 entries on a 100 GiB/64 KiB disk: full %.2f ms (%zu pages), "
           "after 32 changes %.3f ms (%zu pages); decode %.2f ms; get %.0f ns (sum %" PRIu64 ")\n",
           t_full * 1e3, full_pages, t_inc * 1e3, inc_pages, t_dec * 1e3, t_get * 1e3, sum);
    chunk_map_free(d);
    chunk_map_free(m);
    store_clear(&st);
}

/* The decode tests make the library log each rejected page on purpose: count, don't print. */
static unsigned test_log_lines;

static void test_log_sink(enum wisp_log_level level, const char *module, const char *msg)
{
    test_log_lines++;
    if (getenv("WISP_TEST_VERBOSE"))
        fprintf(stderr, "log: %s: %s\n", module, msg);
}

int main(void)
{
    wisp_log_set_sink(test_log_sink);

    test_hex();
    test_basic();
    test_patterns();
    test_large_indices();
    test_round_trip();
    test_incremental();
    test_parse();
    test_decode_errors();
    measure_memory("random, 10k on 100 GiB", DISK_100G, 10000, false);
    measure_memory("random, 100k on 100 GiB", DISK_100G, 100000, false);
    measure_memory("clustered, 100k on 100 GiB", DISK_100G, 100000, true);
    measure_encode();

    if (check_failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", check_failures);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
