/* sprite_service_internal.h: what the sprite service's files share (sprite_service.c, the
 * verbs and their locking; sprite_service_cold.c, cold sleep, wake and their recovery;
 * sprite_service_stream.c, exec streams).  Not for anyone else: the API is sprite_service.h.
 *
 * Locking (sprite_service.c has the whole story): svc->mu guards the tables, the busy count
 * and each live sprite's state, refs, holds and streams; a live sprite's op lock is held
 * across a verb on it.  Functions named *_locked expect op held. */
#ifndef WISP_SPRITE_SERVICE_INTERNAL_H
#define WISP_SPRITE_SERVICE_INTERNAL_H

#include "sprite_service.h"

#include "account_db.h"
#include "sprite.h"
#include "sprite_cold.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>

#define SVC_LOG "wispd"

enum live_state {
    LIVE_STOPPED,
    LIVE_RUNNING,
    LIVE_ASLEEP,
    LIVE_COLD, /* cold sleep: no VM; the account DB's cold_sleep row says what to wake from */
};

/* A sprite someone has touched since wispd started. */
struct live_sprite {
    GMutex op; /* held across a verb */
    char *key; /* ACCOUNT/NAME */
    char *name, *disk;
    struct sprite *vm;     /* NULL: stopped; under op */
    enum live_state state; /* under svc->mu (a copy for readers without op) */
    unsigned refs;         /* under svc->mu */
    bool gone;             /* deleted; under svc->mu */
    /* The idle policy's view (idle_policy.h), under svc->mu: */
    char *account;
    gint64 last_active_us; /* monotonic time of the last call that acted on it */
    bool woken;            /* vm came from a cold wake (share=on RAM), not the pool; under op */
    /* Open exec streams (sprite_service_stream_open): each holds the sprite awake (holds > 0
     * counts as activity), so nothing may sleep, restore or delete its VM while holds > 0
     * without ending them first (svc_streams_end).  Both under svc->mu. */
    unsigned holds;
    GSList *streams; /* struct sprite_stream * */
};

struct sprite_service {
    char *accounts_dir, *nbd_socket, *control_socket, *base_disk;
    vm_pool *pool;
    struct store *store; /* replicas of the account databases; NULL: none */
    double replicate_interval_s;
    GMutex mu;
    GCond idle;
    GHashTable *accounts; /* name -> account_db * */
    GHashTable *live;     /* ACCOUNT/NAME -> struct live_sprite * */
    unsigned busy;
    bool stopping;
    /* Cold sleep (sprite_cold.h); cold_store NULL: none configured, cold sleep refused. */
    struct store *cold_store;
    struct sprite_cold_config cold;
    char *sleep_root, *run_root;
    char *template_manifest_key; /* cold.template_manifest_key's copy */
};

/* A verb on one sprite, called by svc_on_sprite inside svc_enter with the sprite's op lock
 * held. */
typedef JsonNode *(*svc_verb_fn)(sprite_service *svc, account_db *db, struct live_sprite *l,
                                 const void *arg, GError **error);

/* ---- sprite_service.c ---- */

/* Sets error (SPRITE_SERVICE_ERROR, code) and returns false. */
bool svc_fail(GError **error, enum sprite_service_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets error from cause ("what: cause"), keeping cause's kind; frees cause. */
void svc_wrap(GError **error, GError *cause, const char *what);
/* Enters a call (busy++), refused while stopping; the account's database.  svc_leave ends it. */
account_db *svc_enter(sprite_service *svc, const char *account, GError **error);
void svc_leave(sprite_service *svc);
/* The live record of ACCOUNT/NAME, with a reference (svc_put_live gives it back). */
struct live_sprite *svc_get_live(sprite_service *svc, account_db *db, const char *account,
                                 const char *name, GError **error);
void svc_put_live(sprite_service *svc, struct live_sprite *l);
void svc_set_state(sprite_service *svc, struct live_sprite *l, enum live_state s);
/* Runs verb on a whole sprite: entered, its record referenced and op held, its row read again
 * under op. */
JsonNode *svc_on_sprite(sprite_service *svc, const char *account, const char *name,
                        svc_verb_fn verb, const void *arg, GError **error);
/* op held: a VM that runs (claims, wakes, or finds a dead QEMU and claims again). */
bool svc_ensure_running(sprite_service *svc, struct live_sprite *l, GError **error);
/* {"name": name, "state": state} */
JsonNode *svc_ok_node(const char *name, const char *state);
/* op held, the VM running: starts an exec in the guest; wisp-init's refusal is INVALID. */
agent_exec *svc_exec_start(struct live_sprite *l, const struct agent_exec_opts *opts,
                           int timeout_ms, GError **error);
/* svc->mu held: refuses new calls, then waits up to 60 s for those running to leave. */
void svc_stop_calls_locked(sprite_service *svc);

/* ---- sprite_service_cold.c ---- */

/* The sprite's memory no longer matters (deleted, restored, created again). */
void svc_cold_forget(sprite_service *svc, account_db *db, struct live_sprite *l);
/* At start: every account's cold-sleep rows brought to a state a wake can use. */
void svc_cold_recover_all(sprite_service *svc);
/* op held, a VM: to cold sleep.  why: for the log and the audit. */
bool svc_cold_sleep_locked(sprite_service *svc, account_db *db, struct live_sprite *l,
                           const char *why, GError **error);
/* op held, no VM: wakes it from its cold sleep's manifest. */
bool svc_cold_wake_locked(sprite_service *svc, struct live_sprite *l, GError **error);

/* ---- sprite_service_stream.c ---- */

/* op held: ends the sprite's open exec streams (their processes killed, their clients told
 * why), and waits until they are closed. */
bool svc_streams_end(sprite_service *svc, struct live_sprite *l, const char *why, GError **error);

#endif
