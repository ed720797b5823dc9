/* vm_gc.h: garbage collection of cold-sleep images: old sleep manifests, and RAM chunks that no
 * manifest names any more.
 *
 * What is in the store (sleep.h, template_store.h):
 *   vm/sprites/NAME/INC/manifest-SEQ.json one per cold sleep of sprite NAME's incarnation INC
 *                                       (SEQ counts up within INC; sleep.h)
 *   vm/sprites/NAME/manifest-SEQ.json   the same from before incarnations (a group of its own)
 *   vm/templates/KEY16/ID/manifest.json a template's RAM (the first sleep's known set)
 *   vm/chunks/SHA256                    64 KiB of RAM or migration state, named by its hash
 *
 * A run (vm_gc_run), after meta/chunk_gc.h's protocol for disk chunks:
 *   1. T0 := the store's clock (chunk_gc_store_clock); every age is in the store's clock.
 *   2. The roots: per sprite incarnation, the `keep` manifests with the highest SEQ, plus every
 *      other key under vm/sprites/ or vm/templates/ that is no manifest key GC knows (it may be a
 *      manifest of a layout or name it does not know: read as one; if it cannot be, the run
 *      fails before deleting anything), plus every manifest the
 *      caller pins (e.g. each sprite record's current one: a sprite that was woken from an older
 *      manifest than its newest, or a wake in progress from one), plus every template manifest.
 *      R := the chunks the roots name.  A root that cannot be read or parsed fails the run
 *      before anything is deleted.  The other manifests are old.
 *   3. The old manifests are deleted (they are never needed again: a sleep's known set is the
 *      sprite's newest manifest, a wake is from its current one).
 *   4. List vm/chunks/.  A chunk in R is kept.  An unreferenced chunk whose mtime >= T0 - grace
 *      is kept (young: a sleep in progress uploaded it and has not written its manifest yet).
 *      Each other one is looked at again (HEAD) just before its DELETE: an mtime that moved to
 *      >= T0 - grace (a sleep refreshed it, below) keeps it; one already gone is counted.
 *   With dry_run nothing is deleted (manifests nor chunks); the report counts what would be.
 *
 * The invariant every cold sleep keeps (ram_chunks.c, sleep.c), the same as the disk GC's:
 *
 *   ** A manifest names only chunks that were (a) uploaded, or refreshed (PUT again with the
 *   ** same bytes), less than `grace` before the manifest was written, or (b) named by a root
 *   ** without a break from before the sleep until after its manifest is written.
 *
 * (a) is a chunk the sleep uploads, and a chunk its HEAD finds in the store: when that object is
 *     older than RAM_CHUNK_REFRESH_AGE_S at the pass's start (store clock), the sleep PUTs it
 *     again (an orphan found by HEAD may be a candidate of a GC running now).  A sleep whose
 *     pass, up to its manifest's PUT, took longer than RAM_CHUNK_PASS_MAX_S stores its chunks
 *     again first (sleep.c; template publish the same, template_store.c).
 * (b) is the known set: the previous manifest's chunks (the sprite's newest manifest, a root
 *     while the sleep runs: only the new manifest can push it out of the newest `keep`), or
 *     the template's (a root while its manifest exists).  A caller that passes another known
 *     set must make sure its manifest is a root (pin it).
 * So a chunk that a manifest written after R's listing names is in R or young at step 4.
 *
 * Limits (docs/vm.md): a grace below RAM_CHUNK_GRACE_MIN_S (2 x the refresh age + a margin,
 * ram_chunks.h, where the rule is spelled out) is refused unless forced; a sleep whose pass
 * overran is stored again, so no upload is too long; every age is on the store's clock, so host
 * clocks do not matter.  A grace of 0 (forced) is only for when nothing sleeps.  A template
 * manifest is a root until it is deleted (vm_template_store_delete, an operator's decision).  The
 * race left is the disk GC's: a refresh that lands between step 4's HEAD and its DELETE of the same
 * object. */
#ifndef WISP_VM_GC_H
#define WISP_VM_GC_H

#include "sprite_db.h"
#include "store.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define VM_GC_KEEP_DEFAULT     2
#define VM_GC_GRACE_DEFAULT    3600 /* seconds; >= RAM_CHUNK_GRACE_MIN_S (ram_chunks.h) */
#define VM_GC_PARALLEL_DEFAULT 8
#define VM_SPRITE_PREFIX       "vm/sprites/"
#define VM_TEMPLATE_PREFIX     "vm/templates/"

struct vm_gc_options {
    unsigned keep;    /* newest manifests kept per sprite (>= 1); 0: VM_GC_KEEP_DEFAULT */
    uint64_t grace_s; /* see above; vm_gc_options_init sets VM_GC_GRACE_DEFAULT */
    bool dry_run;     /* count only */
    /* NULL-terminated manifest keys kept whatever their age (sprite_db_manifest_pins of every
     * sprite database).  Required unless dry_run: NULL fails the run; an empty list is a
     * caller's statement that no sprite needs any. */
    const char *const *pins;
    unsigned parallel; /* HEAD+DELETE pairs at once; 0: VM_GC_PARALLEL_DEFAULT */
    /* Accept a grace below RAM_CHUNK_GRACE_MIN_S (ram_chunks.h): only when nothing sleeps or
     * publishes meanwhile, since a sleep's chunks may then be older than the grace when its
     * manifest lands. */
    bool force;
};

struct vm_gc_report {
    bool dry_run;
    unsigned keep;
    uint64_t grace_s;
    time_t store_time;                     /* T0 */
    uint64_t sprites;                      /* sprites with at least one manifest */
    uint64_t manifests;                    /* sleep manifests listed */
    uint64_t manifests_kept;               /* roots: newest `keep` or pinned */
    uint64_t manifests_pinned;             /* kept only because a pin names them */
    uint64_t pins_missing;                 /* pins naming no manifest (logged) */
    uint64_t manifests_deleted;            /* with dry_run: would be deleted */
    uint64_t templates;                    /* template manifests (roots) */
    uint64_t referenced;                   /* distinct chunks the roots name */
    uint64_t objects, object_bytes;        /* chunk objects listed */
    uint64_t missing;                      /* referenced chunks with no object (damage, logged) */
    uint64_t unreferenced;                 /* listed and named by no root */
    uint64_t deleted, deleted_bytes;       /* with dry_run: would be deleted */
    uint64_t kept_young, kept_young_bytes; /* unreferenced but younger than the grace */
    uint64_t already_gone;                 /* deleted by someone else meanwhile */
    uint64_t failed;                       /* deletes that failed */
    uint64_t foreign;                      /* keys under vm/chunks/ that name no chunk (kept) */
    uint64_t foreign_roots; /* unknown keys under vm/sprites/, vm/templates/: roots */
    double seconds;
};

void vm_gc_options_init(struct vm_gc_options *o);

/* One run (see above).  false with error when the roots cannot be read (nothing deleted) or a
 * listing or delete failed; *out still counts what was done. */
bool vm_gc_run(struct store *st, const struct vm_gc_options *o, struct vm_gc_report *out,
               GError **error);

/* Deletes the sleep manifests of the destroyed incarnations of the name sprite (their chunks go
 * at the next run): every one under vm/sprites/NAME/ except the live incarnation's (db says the
 * name is in use, not DESTROYED), those db pins, and keys that are no sleep manifest.  db is
 * required (sprite_db_open_readonly will do).  *deleted (may be NULL): how many. */
bool vm_gc_delete_sprite(struct store *st, sprite_db *db, const char *sprite, unsigned *deleted,
                         GError **error);

/* The report as a JSON object (g_free it), for `wisp-vm gc` and wispd. */
char *vm_gc_report_to_json(const struct vm_gc_report *r);

#endif
