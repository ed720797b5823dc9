/* sprite_service.h: what wispd does to sprites, for the API (one function per verb).
 *
 * A sprite belongs to one account; its record lives in the account's database (account_db.h)
 * and its root disk, "s_ACCOUNT_NAME" (no name has a '_'), in the storage server (cloned
 * from "base").  Its VM, when it has one, is a member claimed from the pool (sprite.h).
 * States:
 *
 *   running   the VM runs
 *   asleep    warm sleep: the VM is paused, its memory kept (QMP stop)
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

#include "pool.h"

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
    struct store *store;   /* NULL: account databases not replicated (account_store.h) */
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

#endif
