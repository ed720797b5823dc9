/* sprite_cold.h: cold sleep and wake of a wispd sprite's VM (docs/api.md, docs/vm.md).
 *
 * The VM layer does the work (sleep.h): guest sync, stop (every block device flushed), the
 * state and RAM into the store as content-addressed chunks, the manifest last, QEMU exits.
 * This module supplies what wispd knows about its VMs:
 *   - which sleep path: a pool clone's RAM is a private mapping of the template's file, so it
 *     sleeps through sleep_cold_private with the clone's config (vm_template_clone_config); a
 *     sprite woken from cold runs share=on on its local copy's RAM file and sleeps with
 *     sleep_cold;
 *   - where things live: the local copy in SLEEP_ROOT/DISK (DISK: "s_ACCOUNT_NAME", unique per
 *     account and sprite), the manifests at vm/sprites/DISK/manifest-SEQ.json, a woken VM's
 *     sockets in RUN_ROOT/w-HASH (short: unix socket paths are limited to 108 bytes);
 *   - the wake's config: the template's machine, the sprite's NBD export attached in slot0
 *     directly, and keep_on_exit as for pool members (the parent-death signal is tied to the
 *     forking thread, a short-lived worker here).  A wispd killed with -9 thus leaves QEMUs
 *     behind (and an nbdkit, when its parent-death signal did not fire);
 *     wispd kills them at its next start (wispd_kill_leftovers);
 *   - what to do when the store fails after QEMU has exited: wait for it, then resume the
 *     sprite from the local copy (sprite_cold_sleep).  That step uses the VM layer's
 *     sleep_internal.h (sleep_store_local_copy, the QMP helpers), which sleep.h does not
 *     export yet.
 *
 * The durable record of the sleep (what to wake from) is the caller's (account_db.h). */
#ifndef WISP_SPRITE_COLD_H
#define WISP_SPRITE_COLD_H

#include "sleep.h"
#include "sprite.h"
#include "store.h"
#include "template.h"

#include <glib.h>
#include <stdbool.h>

struct sprite_cold_config {
    struct store *store;
    const struct vm_template *tpl; /* the machine every sprite runs */
    const char *nbd_socket;
    const char *sleep_root; /* local copies */
    const char *run_root;   /* woken VMs' run dirs */
    int timeout_ms;         /* per step; 0: 120 s */
    int store_wait_s;       /* a sleep whose QEMU has exited waits this long for the store;
                               0: SPRITE_COLD_STORE_WAIT_S */
    /* The template's RAM in the store (template_store.h), or NULL: a sprite's first sleep takes
     * its chunks as known, so pages the clone never changed are not stored again. */
    const char *template_manifest_key;
};

/* SLEEP_ROOT/DISK (g_free it). */
char *sprite_cold_dir(const struct sprite_cold_config *c, const char *disk);

/* How long a sleep whose QEMU has exited waits for the store by default (sprite_cold_sleep). */
#define SPRITE_COLD_STORE_WAIT_S 120

/* Cold-sleeps s into manifest_key.  woken: s came from sprite_cold_wake (share=on RAM), else it
 * is a pool clone.  known_manifest: the sprite's previous manifest (its chunks are not looked up
 * again), or NULL.  On success QEMU has exited; the caller frees s (sprite_destroy).  On
 * failure the VM still runs (resumed) if vm_is_running(s->vm), else it is gone.
 * A failure of the store once QEMU has exited (the local copy complete) is retried with
 * backoff for up to store_wait_s: a store that comes back in that time completes the sleep.
 * Past it, the sprite is resumed from its local copy as a new VM (*resumed, running share=on
 * on DIR/ram like a woken one; the caller frees s and adopts it), so that the sleep fails
 * with the sprite running.  *resumed stays NULL when that too failed (the memory is then
 * lost; the disk has every flushed write). */
bool sprite_cold_sleep(const struct sprite_cold_config *c, struct sprite *s, bool woken,
                       const char *disk, const char *manifest_key, const char *known_manifest,
                       struct cold_sleep_result *out, struct sprite **resumed, GError **error);

/* Wakes DISK from manifest_key (the local copy if it is that manifest's, else the store), and
 * waits for wisp-init's READY.  Returns the running sprite (state RUNNING). */
struct sprite *sprite_cold_wake(const struct sprite_cold_config *c, const char *disk,
                                const char *hostname, const char *manifest_key,
                                struct wake_result *out, GError **error);

/* 1 the manifest is in the store, 0 it is not, -1 the store did not say (error set). */
int sprite_cold_manifest_exists(const struct sprite_cold_config *c, const char *key,
                                GError **error);

/* Removes DISK's local copy (after a delete or a restore: it can never be woken again). */
void sprite_cold_remove_local(const struct sprite_cold_config *c, const char *disk);

#endif
