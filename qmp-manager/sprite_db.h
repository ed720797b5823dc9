/* sprite_db.h: the durable record of every sprite's state (SQLite, one file per state dir).
 *
 * Every transition is written before it starts and after it ends (sprite_db_begin, then
 * sprite_db_end or sprite_db_fail), each in its own committed transaction with synchronous=FULL,
 * so a manager that dies mid-transition leaves a row saying what it was doing and what the last
 * good state was.  The table `transitions` keeps the history (one row per begin/end/fail).
 *
 * Stable states are the "good" ones: RUNNING, WARM_ASLEEP, COLD_ASLEEP, CRASHED, DESTROYED.
 * The others (CREATING, GOING_COLD, WAKING) only say a step was under way.
 *
 * sprite_db_recover() decides, for each sprite, what is true now (a new manager's start-up):
 *   - its QEMU pid is alive and really QEMU with the sprite's run dir on its command line:
 *     RUNNING (or WARM_ASLEEP if that was the good state: a paused QEMU is still there);
 *   - otherwise, a complete manifest (the cold sleep's last write) in the store: COLD_ASLEEP;
 *   - otherwise the good state if it needs no process (CRASHED, DESTROYED), else CRASHED.
 * Each decision that changes the row is logged and recorded as a transition. */
#ifndef WISP_SPRITE_DB_H
#define WISP_SPRITE_DB_H

#include "store.h"

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

enum sprite_state {
    SPRITE_CREATING,
    SPRITE_RUNNING,
    SPRITE_WARM_ASLEEP,
    SPRITE_GOING_COLD, /* a cold sleep under way; pending_manifest is where it will land */
    SPRITE_COLD_ASLEEP,
    SPRITE_WAKING,
    SPRITE_CRASHED,
    SPRITE_DESTROYED,
};

struct sprite_record {
    char *name;
    enum sprite_state state, good_state;
    pid_t pid;              /* QEMU, 0 if none */
    char *run_dir;          /* QEMU's run dir (its sockets), or NULL */
    char *manifest_key;     /* the last complete cold sleep's manifest, or NULL */
    char *pending_manifest; /* GOING_COLD: the manifest being written, or NULL */
    unsigned sleep_seq;     /* cold sleeps so far (names the next manifest) */
    char *detail;           /* why the last transition ended as it did */
    /* This use of the name (sprite_db_create draws it; a destroyed name used again gets a new
     * one): SPRITE_INCARNATION_LEN hex digits, the key component of its manifests
     * (sleep_manifest_key_incarnation).  NULL only from an old database opened read-only. */
    char *incarnation;
};

#define SPRITE_NAME_MAX        63
#define SPRITE_INCARNATION_LEN 16

/* A name sprite_db_create and the store's keys accept: 1 to SPRITE_NAME_MAX characters of
 * A-Z a-z 0-9 . _ -, the first a letter or digit (so never '/', "." or ".."). */
bool sprite_name_valid(const char *name);
bool sprite_incarnation_valid(const char *incarnation);

typedef struct sprite_db sprite_db;

const char *sprite_state_to_string(enum sprite_state s);
bool sprite_state_from_string(const char *s, enum sprite_state *out);
bool sprite_state_is_good(enum sprite_state s);

/* Opens (creating) DIR/sprites.db; migrates an older one (adds incarnations). */
sprite_db *sprite_db_open(const char *dir, GError **error);
/* Opens DIR/sprites.db to read only (`wisp-vm gc --state`): an error if it does not exist,
 * never created nor migrated.  Only sprite_db_get/list/manifest_pins on it. */
sprite_db *sprite_db_open_readonly(const char *dir, GError **error);
void sprite_db_close(sprite_db *db);

/* A new sprite, in CREATING, with a new incarnation.  Fails if the name exists (and is not
 * DESTROYED) or is not sprite_name_valid. */
bool sprite_db_create(sprite_db *db, const char *name, GError **error);
/* Enters a transitional state (CREATING, GOING_COLD, WAKING) or a good one directly.
 * pending_manifest: GOING_COLD's target, else NULL. */
bool sprite_db_begin(sprite_db *db, const char *name, enum sprite_state to,
                     const char *pending_manifest, GError **error);
/* Ends the transition in a good state.  pid/run_dir: the QEMU now serving the sprite (0/NULL for
 * none).  manifest_key: COLD_ASLEEP's manifest (NULL keeps the recorded one). */
bool sprite_db_end(sprite_db *db, const char *name, enum sprite_state good, pid_t pid,
                   const char *run_dir, const char *manifest_key, const char *detail,
                   GError **error);
/* The transition failed: back to `fallback` (a good state), with the reason. */
bool sprite_db_fail(sprite_db *db, const char *name, enum sprite_state fallback, const char *why,
                    GError **error);

/* NULL with error if there is no such sprite (a DESTROYED one is returned).  sprite_record_free
 * it. */
struct sprite_record *sprite_db_get(sprite_db *db, const char *name, GError **error);
/* All sprites not DESTROYED (struct sprite_record *, freed with the array). */
GPtrArray *sprite_db_list(sprite_db *db, GError **error);
void sprite_record_free(struct sprite_record *r);

/* Appends (g_strdup) the manifest keys the database needs kept, each sprite's current one and a
 * sleep's pending one (sprites not DESTROYED): the pins of a GC run (vm_gc.h). */
bool sprite_db_manifest_pins(sprite_db *db, GPtrArray *keys, GError **error);

/* Whether pid is alive, is a qemu-system binary, and has run_dir on its command line. */
bool sprite_pid_is_our_qemu(pid_t pid, const char *run_dir);

/* See above.  st: the store manifests live in (NULL: only the manifest key's presence in the
 * record counts).  Returns the records as decided (as sprite_db_list). */
GPtrArray *sprite_db_recover(sprite_db *db, struct store *st, GError **error);

#endif
