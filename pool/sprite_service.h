/* sprite_service.h: what wispd does to sprites, for the API (one function per verb).
 *
 * A sprite belongs to one account; its record lives in the account's database (account_db.h)
 * and its root disk, "s_ACCOUNT_NAME" (no name has a '_'), in the storage server (cloned
 * from "base").  Its VM, when it has one, is a member claimed from the pool (sprite.h).
 * States:
 *
 *   running   the VM runs
 *   asleep    "mode":"warm": the VM is paused, its memory kept (QMP stop); "mode":"cold": no
 *             VM, its memory and device state in the store (sprite_cold.h), the wake's manifest
 *             in the account DB; both wake on the next call that needs the VM
 *   stopped   no VM (after a wispd restart, or a failed claim): the disk is kept, and the next
 *             exec or wake claims a VM for it
 *
 * Each call blocks (a claim, an exec, a checkpoint), so the API calls them from worker threads.
 * Calls on one sprite are serialised by its own lock; calls on different sprites run at once.
 * Every result is a JSON object (or array) node to send back; every error is a GError in
 * SPRITE_SERVICE_ERROR, whose code the API maps onto an HTTP status.
 *
 * Accounts never see each other's sprites: each call names its account, and a sprite of
 * another account is simply not found. */
#ifndef WISP_SPRITE_SERVICE_H
#define WISP_SPRITE_SERVICE_H

#include "agent_client.h"
#include "pool.h"
#include "template.h"

struct store;

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>

#define SPRITE_SERVICE_ERROR (sprite_service_error_quark())
GQuark sprite_service_error_quark(void);
enum sprite_service_error_code {
    SPRITE_SERVICE_ERROR_INVALID,   /* 400 */
    SPRITE_SERVICE_ERROR_NOT_FOUND, /* 404 */
    SPRITE_SERVICE_ERROR_EXISTS,    /* 409 */
    SPRITE_SERVICE_ERROR_CONFLICT,  /* 409: not allowed in the sprite's state */
    SPRITE_SERVICE_ERROR_SHUTDOWN,  /* 503 */
    SPRITE_SERVICE_ERROR_FAILED,    /* 500 */
};

struct sprite_service_config {
    const char *state_dir; /* accounts in STATE/accounts/ACCOUNT/account.db */
    const char *nbd_socket, *control_socket;
    vm_pool *pool;
    const char *base_disk; /* NULL: "base" */
    /* Cold sleep: all three, or tpl NULL for none (cold sleep refused). */
    const struct vm_template *tpl;     /* the pool's: the machine a woken sprite runs */
    const char *store_url;             /* where sleeps go (vm/chunks/, vm/sprites/DISK/) */
    const char *run_dir;               /* woken VMs' run dirs go under it */
    int cold_store_wait_s;             /* sprite_cold_config.store_wait_s (0: its default) */
    const char *template_manifest_key; /* sprite_cold_config's, or NULL */
    struct store *store;         /* NULL: account databases not replicated (account_store.h) */
    double replicate_interval_s; /* 0: 1 s */
};

/* Output kept per stream of an exec; the rest is dropped and "truncated" set. */
#define SPRITE_EXEC_OUTPUT_MAX (1 << 20)

struct sprite_exec_request {
    const char *const *argv;
    const char *const *env; /* "K=V", NULL-terminated, or NULL */
    const char *cwd;        /* NULL: / */
    const char *stdin_data; /* NULL: no stdin */
    size_t stdin_len;
    int timeout_ms;
};

typedef struct sprite_service sprite_service;

sprite_service *sprite_service_new(const struct sprite_service_config *cfg, GError **error);
/* Refuses new calls, waits (up to 60 s) for the running ones, destroys every VM and keeps
 * every disk.  NULL is allowed. */
void sprite_service_free(sprite_service *svc);

/* Sprite names: 1-63 of [a-z0-9-], starting with a letter or digit (a hostname label); so
 * never '/', '.' or "..".  Account names: 1-32 of [a-z0-9-], starting likewise. */
bool sprite_service_name_valid(const char *name);
bool sprite_service_account_valid(const char *account);

JsonNode *sprite_service_create(sprite_service *svc, const char *account, const char *name,
                                GError **error);
JsonNode *sprite_service_list(sprite_service *svc, const char *account, GError **error);
JsonNode *sprite_service_get(sprite_service *svc, const char *account, const char *name,
                             GError **error);
JsonNode *sprite_service_delete(sprite_service *svc, const char *account, const char *name,
                                GError **error);
JsonNode *sprite_service_exec(sprite_service *svc, const char *account, const char *name,
                              const struct sprite_exec_request *req, GError **error);
JsonNode *sprite_service_checkpoint(sprite_service *svc, const char *account, const char *name,
                                    GError **error);
JsonNode *sprite_service_checkpoints(sprite_service *svc, const char *account, const char *name,
                                     GError **error);
/* Deletes one checkpoint of the sprite (its record and the storage server's checkpoint). */
JsonNode *sprite_service_checkpoint_delete(sprite_service *svc, const char *account,
                                           const char *name, const char *checkpoint,
                                           GError **error);
JsonNode *sprite_service_restore(sprite_service *svc, const char *account, const char *name,
                                 const char *checkpoint, GError **error);
JsonNode *sprite_service_sleep(sprite_service *svc, const char *account, const char *name,
                               GError **error);
JsonNode *sprite_service_wake(sprite_service *svc, const char *account, const char *name,
                              GError **error);

/* POST .../sleep with "mode": cold=false is sprite_service_sleep.  A cold sleep of a warm-asleep
 * sprite resumes it for the guest's sync first. */
JsonNode *sprite_service_sleep_mode(sprite_service *svc, const char *account, const char *name,
                                    bool cold, GError **error);

/* SIGTERM: refuses new calls, waits (up to 60 s) for the running ones, then cold-sleeps every
 * sprite that has a VM, one by one.  One that fails is left to sprite_service_free (its VM is
 * destroyed, its disk kept: "stopped" at the next start).  Call before sprite_service_free. */
void sprite_service_sleep_all_cold(sprite_service *svc);
/* From now on every new call is refused (SPRITE_SERVICE_ERROR_SHUTDOWN); calls and streams
 * already in go on.  The first step of a shutdown, before the API's last requests drain. */
void sprite_service_refuse_calls(sprite_service *svc);

/* ---- for the idle policy (idle_policy.h) ---- */
struct sprite_service_idle_entry {
    char account[40], name[64];
    bool asleep, cold;     /* asleep: warm asleep (cold ones are not listed) */
    gint64 idle_us;        /* since the last call that acted on it, or its last open stream */
    gint64 last_active_us; /* monotonic */
};
/* Every sprite that has a VM (running or warm-asleep): struct sprite_service_idle_entry. */
GArray *sprite_service_idle_snapshot(sprite_service *svc);
/* Puts the sprite to warm (cold=false) or cold sleep if it is still idle for min_idle_us and no
 * verb holds it; CONFLICT if it is busy or active again (never waits for a verb).  why: for
 * the log and the audit ("idle", "memory pressure").  Blocks: call from a worker thread. */
bool sprite_service_idle_sleep(sprite_service *svc, const char *account, const char *name,
                               bool cold, gint64 min_idle_us, const char *why, GError **error);
/* ---- exec streams (api_exec_ws.c) ----
 *
 * An exec whose output and input flow while the call that started it has long returned.  Open
 * wakes the sprite like any verb (a claim when stopped, a wake when asleep), starts the
 * process, and returns with the sprite's op lock released, so that other verbs go on while
 * the stream is open.  Until it is closed the stream holds the sprite: the sprite counts as
 * busy (no sleep verb, and no idle policy may sleep it), and wispd's shutdown waits for it.
 * Deleting or restoring the sprite ends its streams first: on_end(opaque) is called (from the
 * deleting thread, under the service's lock: it must only flag the stream and wake its
 * user), sprite_stream_ended() then says why, and the user must kill the process and close
 * the stream; the delete or restore waits for that (60 s at most, then fails with CONFLICT).
 *
 * The agent_exec is the caller's to read, write, signal and wait on (agent_client.h; from any
 * one thread at a time per direction), never to free. */
typedef struct sprite_stream sprite_stream;

sprite_stream *sprite_service_stream_open(sprite_service *svc, const char *account,
                                          const char *name, const struct agent_exec_opts *opts,
                                          void (*on_end)(void *opaque), void *opaque,
                                          GError **error);
agent_exec *sprite_stream_exec(sprite_stream *s);
/* Why the service ended the stream (g_free it), or NULL while it has not. */
char *sprite_stream_ended(sprite_stream *s);
/* Frees the session (the guest's process goes on if it still runs: kill it first) and lets
 * go of the sprite.  NULL is allowed. */
void sprite_service_stream_close(sprite_stream *s);

#endif
