/* vm_gc.c: garbage collection of sleep manifests and RAM chunks (the protocol is in vm_gc.h).
 *
 * vm_gc_run is the steps of vm_gc.h in order: the store's clock, the manifests listed and
 * sorted into roots and old ones, the roots read into R, the old manifests deleted, the chunks
 * listed, and the candidates looked at again and deleted by VM_GC_PARALLEL_DEFAULT workers,
 * each taking the next candidate under gc->lock, which also guards the report's counters.  No
 * lock is held across a store request. */
#include "vm_gc.h"

#include "chunk_gc.h"
#include "log.h"
#include "ram_chunks.h"
#include "sleep.h"
#include "sprite_db.h"
#include "vm_config.h"

#include <errno.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <stdlib.h>
#include <string.h>

#define VM_GC_LOG "vm-gc"

G_STATIC_ASSERT(VM_GC_GRACE_DEFAULT >= RAM_CHUNK_GRACE_MIN_S);
#define HEX_LEN 64

void vm_gc_options_init(struct vm_gc_options *o)
{
    memset(o, 0, sizeof *o);
    o->keep = VM_GC_KEEP_DEFAULT;
    o->grace_s = VM_GC_GRACE_DEFAULT;
}

/* ---- keys ------------------------------------------------------------------------------------ */

static bool is_hex_lower(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

/* "vm/chunks/" and 64 lower-case hex digits: the hash, else NULL. */
static const char *gc_chunk_hash(const char *key)
{
    size_t plen = strlen(RAM_CHUNK_PREFIX);

    if (strncmp(key, RAM_CHUNK_PREFIX, plen) != 0 || strlen(key) != plen + HEX_LEN ||
        !is_hex_lower(key + plen, HEX_LEN))
        return NULL;
    return key + plen;
}

/* A sleep manifest key (sleep_manifest_key_parse): the group GC ranks it in, "NAME/INCARNATION"
 * ("NAME" for the old layout; g_free it), and SEQ, else NULL.  SEQ only orders manifests of one
 * incarnation: a re-created name counts from 0 again under a new one. */
static char *gc_manifest_parse(const char *key, unsigned long *seq)
{
    g_autofree char *name = NULL, *incarnation = NULL;

    if (!sleep_manifest_key_parse(key, &name, &incarnation, seq))
        return NULL;
    return *incarnation ? g_strdup_printf("%s/%s", name, incarnation) : g_steal_pointer(&name);
}

/* ---- the run's state ------------------------------------------------------------------------- */

struct gc_manifest {
    char *key;
    unsigned long seq;
};

struct gc_candidate {
    char *key;
    uint64_t size;
};

struct vm_gc {
    struct store *st;
    const struct vm_gc_options *o;
    struct vm_gc_report *report;
    int64_t cutoff;       /* T0 - grace: unreferenced chunks older than this are garbage */
    GHashTable *sprites;  /* name -> GPtrArray of struct gc_manifest * */
    GPtrArray *templates; /* template manifest keys */
    GPtrArray *foreign;   /* other keys under vm/sprites/ and vm/templates/: roots too */
    GHashTable *pins;     /* pinned keys (not owned) -> seen (GINT_TO_POINTER) */
    GHashTable *refs;     /* R: hex hashes the roots name */
    GPtrArray *roots;     /* manifest keys to read (not owned) */
    GPtrArray *old;       /* manifest keys to delete (not owned) */
    GArray *cand;         /* struct gc_candidate */
    uint64_t referenced_listed;

    GMutex lock; /* next, error and the report's counters during the deletes */
    guint next;
    char *error;
};

static void gc_manifest_free(gpointer p)
{
    struct gc_manifest *m = p;
    g_free(m->key);
    g_free(m);
}

static void gc_fail_locked(struct vm_gc *g, char *msg)
{
    g->report->failed++;
    if (!g->error)
        g->error = msg;
    else
        g_free(msg);
}

/* ---- 2. manifests ---------------------------------------------------------------------------- */

static int gc_list_manifest(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct vm_gc *g = opaque;
    unsigned long seq;
    char *name = gc_manifest_parse(key, &seq);

    (void)size;
    (void)mtime;
    if (!name) {
        /* Not ours to judge: it may be a manifest under a name or layout this build does not
         * know.  A root (its chunks kept), or, if it is no manifest, the run fails (step 2). */
        g_ptr_array_add(g->foreign, g_strdup(key));
        g->report->foreign_roots++;
        return 0;
    }
    GPtrArray *list = g_hash_table_lookup(g->sprites, name);
    if (!list) {
        list = g_ptr_array_new_with_free_func(gc_manifest_free);
        g_hash_table_insert(g->sprites, name, list);
    } else {
        g_free(name);
    }
    struct gc_manifest *m = g_new0(struct gc_manifest, 1);
    m->key = g_strdup(key);
    m->seq = seq;
    g_ptr_array_add(list, m);
    g->report->manifests++;
    return 0;
}

static int gc_list_template(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct vm_gc *g = opaque;

    (void)size;
    (void)mtime;
    if (g_str_has_suffix(key, "/manifest.json")) {
        g_ptr_array_add(g->templates, g_strdup(key));
        g->report->templates++;
    } else {
        g_ptr_array_add(g->foreign, g_strdup(key)); /* as in gc_list_manifest */
        g->report->foreign_roots++;
    }
    return 0;
}

static gint gc_by_seq_desc(gconstpointer a, gconstpointer b)
{
    const struct gc_manifest *x = *(struct gc_manifest *const *)a;
    const struct gc_manifest *y = *(struct gc_manifest *const *)b;
    return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0;
}

/* Sorts each sprite's manifests into roots (newest `keep`, or pinned) and old ones. */
static void gc_sort_manifests(struct vm_gc *g)
{
    unsigned keep = g->o->keep ? g->o->keep : VM_GC_KEEP_DEFAULT;
    GHashTableIter it;
    gpointer name, value;

    g_hash_table_iter_init(&it, g->sprites);
    while (g_hash_table_iter_next(&it, &name, &value)) {
        GPtrArray *list = value;
        g->report->sprites++;
        g_ptr_array_sort(list, gc_by_seq_desc);
        for (guint i = 0; i < list->len; i++) {
            struct gc_manifest *m = g_ptr_array_index(list, i);
            bool pinned = g_hash_table_contains(g->pins, m->key);
            if (pinned)
                g_hash_table_insert(g->pins, (gpointer)m->key, GINT_TO_POINTER(1));
            if (i < keep || pinned) {
                g_ptr_array_add(g->roots, m->key);
                g->report->manifests_kept++;
                if (i >= keep)
                    g->report->manifests_pinned++;
            } else {
                g_ptr_array_add(g->old, m->key);
            }
        }
    }
    for (guint i = 0; i < g->templates->len; i++)
        g_ptr_array_add(g->roots, g_ptr_array_index(g->templates, i));
    for (guint i = 0; i < g->foreign->len; i++)
        g_ptr_array_add(g->roots, g_ptr_array_index(g->foreign, i));
    g_hash_table_iter_init(&it, g->pins);
    while (g_hash_table_iter_next(&it, &name, &value))
        if (!value) {
            g->report->pins_missing++;
            log_warn(VM_GC_LOG, "pinned manifest %s is not in the store", (const char *)name);
        }
}

static bool gc_manifest_is_foreign(struct vm_gc *g, const char *key)
{
    for (guint i = 0; i < g->foreign->len; i++)
        if (g_ptr_array_index(g->foreign, i) == key)
            return true;
    return false;
}

static bool gc_read_roots(struct vm_gc *g, GError **error)
{
    for (guint i = 0; i < g->roots->len; i++) {
        const char *key = g_ptr_array_index(g->roots, i);
        if (!sleep_known_from_manifest(g->st, key, g->refs, error)) {
            g_prefix_error(error, "gc: root %s%s: ", key,
                           gc_manifest_is_foreign(g, key)
                               ? " (an unknown key: its chunks may be in use; nothing deleted)"
                               : "");
            return false;
        }
    }
    return true;
}

static bool gc_delete_old_manifests(struct vm_gc *g, GError **error)
{
    for (guint i = 0; i < g->old->len; i++) {
        const char *key = g_ptr_array_index(g->old, i);
        if (!g->o->dry_run) {
            if (store_delete(g->st, key) < 0) {
                g->report->failed++;
                g_set_error(error, VM_ERROR, VM_ERROR_IO, "gc: delete %s: %s", key,
                            store_last_error());
                return false;
            }
            log_debug(VM_GC_LOG, "deleted old manifest %s", key);
        }
        g->report->manifests_deleted++;
    }
    return true;
}

/* ---- 4. chunks ------------------------------------------------------------------------------- */

static int gc_list_chunk(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct vm_gc *g = opaque;
    struct vm_gc_report *rep = g->report;
    const char *hex = gc_chunk_hash(key);

    if (!hex) {
        if (rep->foreign++ < 10)
            log_warn(VM_GC_LOG, "%s is not a chunk key: left alone", key);
        return 0;
    }
    rep->objects++;
    rep->object_bytes += size;
    if (g_hash_table_contains(g->refs, hex)) {
        g->referenced_listed++;
        return 0;
    }
    rep->unreferenced++;
    if ((int64_t)mtime >= g->cutoff) {
        rep->kept_young++;
        rep->kept_young_bytes += size;
        return 0;
    }
    struct gc_candidate c = {.key = g_strdup(key), .size = size};
    g_array_append_val(g->cand, c);
    return 0;
}

static void gc_delete_chunk(struct vm_gc *g, const struct gc_candidate *c)
{
    struct store_stat sb;
    int r = store_head(g->st, c->key, &sb);

    if (r == -ENOENT) {
        g_mutex_lock(&g->lock);
        g->report->already_gone++;
        g_mutex_unlock(&g->lock);
        return;
    }
    if (r == 0 && (int64_t)sb.mtime >= g->cutoff) {
        /* Refreshed by a sleep since the listing: a manifest is about to name it. */
        log_debug(VM_GC_LOG, "%s was refreshed since the listing: kept", c->key);
        g_mutex_lock(&g->lock);
        g->report->kept_young++;
        g->report->kept_young_bytes += sb.size;
        g_mutex_unlock(&g->lock);
        return;
    }
    char *msg = NULL;
    if (r < 0)
        msg = g_strdup_printf("HEAD %s: %s", c->key, store_last_error());
    else if ((r = store_delete(g->st, c->key)) < 0)
        msg = g_strdup_printf("DELETE %s: %s", c->key, store_last_error());
    g_mutex_lock(&g->lock);
    if (msg) {
        log_error(VM_GC_LOG, "%s", msg);
        gc_fail_locked(g, msg);
    } else {
        g->report->deleted++;
        g->report->deleted_bytes += sb.size;
    }
    g_mutex_unlock(&g->lock);
}

static gpointer gc_delete_worker(gpointer opaque)
{
    struct vm_gc *g = opaque;

    for (;;) {
        g_mutex_lock(&g->lock);
        guint i = g->next < g->cand->len ? g->next++ : g->cand->len;
        g_mutex_unlock(&g->lock);
        if (i == g->cand->len)
            return NULL;
        gc_delete_chunk(g, &g_array_index(g->cand, struct gc_candidate, i));
    }
}

static void gc_delete_chunks(struct vm_gc *g)
{
    unsigned n = g->o->parallel ? g->o->parallel : VM_GC_PARALLEL_DEFAULT;
    GThread **threads;

    if (n > g->cand->len)
        n = MAX(g->cand->len, 1u);
    threads = g_new0(GThread *, n);
    for (unsigned i = 1; i < n; i++)
        threads[i] = g_thread_new("vm-gc", gc_delete_worker, g);
    gc_delete_worker(g);
    for (unsigned i = 1; i < n; i++)
        g_thread_join(threads[i]);
    g_free(threads);
}

/* ---- the run --------------------------------------------------------------------------------- */

static bool gc_list(struct vm_gc *g, const char *prefix, store_list_fn fn, GError **error)
{
    int r = store_list(g->st, prefix, fn, g);
    if (r < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "gc: list %s: %s; nothing more deleted", prefix,
                    store_last_error());
        return false;
    }
    return true;
}

bool vm_gc_run(struct store *st, const struct vm_gc_options *o, struct vm_gc_report *out,
               GError **error)
{
    struct vm_gc g = {.st = st, .o = o, .report = out};
    gint64 start = g_get_monotonic_time();
    time_t t0 = 0;
    bool ok = false;

    memset(out, 0, sizeof *out);
    out->dry_run = o->dry_run;
    out->keep = o->keep ? o->keep : VM_GC_KEEP_DEFAULT;
    out->grace_s = o->grace_s;
    /* Deleting needs every sprite database's pins: without them the manifest a sprite was
     * woken from (older than its newest `keep`) or a sleep's pending one could go. */
    if (!o->dry_run && !o->pins) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "gc: a run that deletes needs the sprite database's pins "
                    "(sprite_db_manifest_pins; wisp-vm gc --state DIR)");
        return false;
    }
    /* ram_chunks.h: a sleep's chunks are younger than RAM_CHUNK_GRACE_MIN_S when its manifest
     * lands, not younger than any grace. */
    if (!o->dry_run && o->grace_s < RAM_CHUNK_GRACE_MIN_S && !o->force) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "gc: a grace of %" PRIu64 " s is below %d s (2 x the refresh age %d s + %d s):"
                    " a sleep's chunks could go before its manifest lands (force only when"
                    " nothing sleeps)",
                    o->grace_s, RAM_CHUNK_GRACE_MIN_S, RAM_CHUNK_REFRESH_AGE_S, RAM_CHUNK_MARGIN_S);
        return false;
    }
    if (o->grace_s > CHUNK_GC_DURATION_MAX) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "gc: a grace of %" PRIu64 " s is out of range", o->grace_s);
        return false;
    }
    g.sprites =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_ptr_array_unref);
    g.templates = g_ptr_array_new_with_free_func(g_free);
    g.foreign = g_ptr_array_new_with_free_func(g_free);
    g.pins = g_hash_table_new(g_str_hash, g_str_equal);
    g.refs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g.roots = g_ptr_array_new();
    g.old = g_ptr_array_new();
    g.cand = g_array_new(FALSE, FALSE, sizeof(struct gc_candidate));
    g_mutex_init(&g.lock);
    for (const char *const *p = o->pins; p && *p; p++)
        g_hash_table_insert(g.pins, (gpointer)*p, NULL);

    /* 1. T0 first: a manifest written from here on names chunks in R, young or refreshed. */
    int r = chunk_gc_store_clock(st, &t0);
    if (r < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "gc: cannot read the store's clock: %s",
                    store_last_error());
        goto done;
    }
    out->store_time = t0;
    g.cutoff = (int64_t)t0 - (int64_t)o->grace_s;

    /* 2. The roots, read in full before anything is deleted. */
    if (!gc_list(&g, VM_SPRITE_PREFIX, gc_list_manifest, error) ||
        !gc_list(&g, VM_TEMPLATE_PREFIX, gc_list_template, error))
        goto done;
    gc_sort_manifests(&g);
    if (!gc_read_roots(&g, error))
        goto done;
    out->referenced = g_hash_table_size(g.refs);

    /* 3. Old manifests. */
    if (!gc_delete_old_manifests(&g, error))
        goto done;

    /* 4. Chunks. */
    if (!gc_list(&g, RAM_CHUNK_PREFIX, gc_list_chunk, error))
        goto done;
    if (out->referenced > g.referenced_listed) {
        out->missing = out->referenced - g.referenced_listed;
        log_error(VM_GC_LOG, "%" PRIu64 " chunks named by a kept manifest are missing from %s",
                  out->missing, store_describe(st));
    }
    if (o->dry_run) {
        out->deleted = g.cand->len;
        for (guint i = 0; i < g.cand->len; i++)
            out->deleted_bytes += g_array_index(g.cand, struct gc_candidate, i).size;
        ok = true;
    } else {
        gc_delete_chunks(&g);
        ok = g.error == NULL;
        if (!ok)
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "gc: %" PRIu64 " deletes failed; first: %s",
                        out->failed, g.error);
    }

done:
    out->seconds = (double)(g_get_monotonic_time() - start) / 1e6;
    for (guint i = 0; i < g.cand->len; i++)
        g_free(g_array_index(g.cand, struct gc_candidate, i).key);
    g_array_unref(g.cand);
    g_ptr_array_unref(g.roots);
    g_ptr_array_unref(g.old);
    g_hash_table_unref(g.refs);
    g_hash_table_unref(g.pins);
    g_ptr_array_unref(g.templates);
    g_ptr_array_unref(g.foreign);
    g_hash_table_unref(g.sprites);
    g_mutex_clear(&g.lock);
    g_free(g.error);
    if (ok)
        log_info(VM_GC_LOG,
                 "%s%" PRIu64 " manifests, %" PRIu64 " old %s; %" PRIu64 " chunk objects "
                 "unreferenced, %" PRIu64 " %s (%" PRIu64 " bytes), %" PRIu64
                 " kept young; %" PRIu64 " referenced",
                 o->dry_run ? "dry run: " : "", out->manifests, out->manifests_deleted,
                 o->dry_run ? "would be deleted" : "deleted", out->unreferenced, out->deleted,
                 o->dry_run ? "would be deleted" : "deleted", out->deleted_bytes, out->kept_young,
                 out->referenced);
    return ok;
}

/* ---- a destroyed sprite ---------------------------------------------------------------------- */

struct gc_sprite_keys {
    GPtrArray *keys;
};

static int gc_collect_key(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct gc_sprite_keys *k = opaque;
    (void)size;
    (void)mtime;
    g_ptr_array_add(k->keys, g_strdup(key));
    return 0;
}

bool vm_gc_delete_sprite(struct store *st, sprite_db *db, const char *sprite, unsigned *deleted,
                         GError **error)
{
    g_autoptr(GPtrArray) pins = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *live = NULL;
    unsigned n = 0;
    bool ok = true;

    if (deleted)
        *deleted = 0;
    /* The name is one key component: anything else could reach another sprite's manifests. */
    if (!sprite_name_valid(sprite)) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "gc: bad sprite name '%s'",
                    sprite ? sprite : "");
        return false;
    }
    if (!db) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "gc: deleting sprite %s's manifests needs its sprite database", sprite);
        return false;
    }
    /* The live incarnation of the name, if any: the database is the only judge of what is
     * destroyed.  A name used again must keep the new sprite's manifests. */
    GError *lookup = NULL;
    struct sprite_record *r = sprite_db_get(db, sprite, &lookup);
    if (r) {
        if (r->state != SPRITE_DESTROYED)
            live = g_strdup(r->incarnation ? r->incarnation : "");
        sprite_record_free(r);
    } else if (!g_error_matches(lookup, VM_ERROR, VM_ERROR_CONFIG)) {
        g_propagate_error(error, lookup);
        return false;
    }
    g_clear_error(&lookup);
    if (!sprite_db_manifest_pins(db, pins, error))
        return false;

    g_autofree char *prefix = g_strdup_printf("%s%s/", VM_SPRITE_PREFIX, sprite);
    struct gc_sprite_keys k = {.keys = g_ptr_array_new_with_free_func(g_free)};
    if (store_list(st, prefix, gc_collect_key, &k) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "gc: list %s: %s", prefix, store_last_error());
        ok = false;
    }
    for (guint i = 0; ok && i < k.keys->len; i++) {
        const char *key = g_ptr_array_index(k.keys, i);
        g_autofree char *name = NULL, *incarnation = NULL;
        unsigned long seq;
        bool pinned = false;

        for (guint p = 0; p < pins->len; p++)
            pinned = pinned || strcmp(g_ptr_array_index(pins, p), key) == 0;
        /* Only a dead incarnation's manifests: not the live one's, not a pinned one, and not a
         * key that is no sleep manifest (a root of every GC run). */
        if (!sleep_manifest_key_parse(key, &name, &incarnation, &seq) ||
            strcmp(name, sprite) != 0 || pinned || (live && strcmp(incarnation, live) == 0)) {
            log_debug(VM_GC_LOG, "sprite %s: %s kept", sprite, key);
            continue;
        }
        if (store_delete(st, key) < 0) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "gc: delete %s: %s", key, store_last_error());
            ok = false;
        } else {
            n++;
        }
    }
    g_ptr_array_unref(k.keys);
    if (deleted)
        *deleted = n;
    log_info(VM_GC_LOG, "sprite %s: %u manifests of destroyed incarnations deleted%s", sprite, n,
             live ? " (the name is in use: its manifests kept)" : "");
    return ok;
}

/* ---- the report ------------------------------------------------------------------------------ */

char *vm_gc_report_to_json(const struct vm_gc_report *r)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    const struct {
        const char *name;
        uint64_t v;
    } counts[] = {
        {"keep", r->keep},
        {"grace_s", r->grace_s},
        {"store_time", (uint64_t)r->store_time},
        {"sprites", r->sprites},
        {"manifests", r->manifests},
        {"manifests_kept", r->manifests_kept},
        {"manifests_pinned", r->manifests_pinned},
        {"pins_missing", r->pins_missing},
        {"manifests_deleted", r->manifests_deleted},
        {"templates", r->templates},
        {"referenced", r->referenced},
        {"objects", r->objects},
        {"object_bytes", r->object_bytes},
        {"missing", r->missing},
        {"unreferenced", r->unreferenced},
        {"deleted", r->deleted},
        {"deleted_bytes", r->deleted_bytes},
        {"kept_young", r->kept_young},
        {"kept_young_bytes", r->kept_young_bytes},
        {"already_gone", r->already_gone},
        {"failed", r->failed},
        {"foreign", r->foreign},
        {"foreign_roots", r->foreign_roots},
    };

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "dry_run");
    json_builder_add_boolean_value(b, r->dry_run);
    for (size_t i = 0; i < G_N_ELEMENTS(counts); i++) {
        json_builder_set_member_name(b, counts[i].name);
        json_builder_add_int_value(b, (gint64)counts[i].v);
    }
    json_builder_set_member_name(b, "seconds");
    json_builder_add_double_value(b, r->seconds);
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    json_generator_set_pretty(gen, TRUE);
    return json_generator_to_data(gen, NULL);
}
