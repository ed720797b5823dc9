/* sleep.h: warm and cold sleep of a sprite, and wake.
 *
 * Warm sleep is QMP `stop` (memory stays in QEMU); wake is `cont`.
 *
 * Cold sleep needs the sprite's RAM in a file of its own, mapped share=on
 * (vm_config.mem_path = sleep_ram_path(DIR), mem_share = true): with the migration capability
 * x-ignore-shared, the migration stream then holds the device state only (~60 KB), and the RAM
 * file itself, which is page-aligned, is what gets chunked, so equal pages at equal offsets
 * (the template's, an earlier sleep's) are stored once.  A stream with the RAM inside it is not
 * page-aligned and would dedup badly; that is why share=off clones cannot cold-sleep as they are.
 *
 * DIR, the sprite's local copy:  DIR/ram  (the RAM file QEMU runs on)
 *                                DIR/state  (the migration stream of the last sleep)
 *                                DIR/manifest.json  (present only while DIR/ram and DIR/state are
 *                                                    exactly what that manifest describes)
 * In the store:  vm/chunks/SHA256  (ram_chunks.h)
 *                vm/sprites/NAME/INCARNATION/manifest-SEQ.json  (written last: its presence
 *                means complete; sleep_manifest_key_incarnation)
 *
 * sleep_cold():
 *   1. guest sync (agent exec `sync`), if an agent is given;
 *   2. `stop`, which drains and flushes every block device (the guest's flushed writes are
 *      on the NBD server: nbdkit acknowledges a flush only once the data is durable);
 *   3. x-ignore-shared and max-bandwidth set; the state file's fd passed with getfd;
 *      `migrate uri=fd:wisp-sleep`, polled to `completed`;
 *   4. `quit`; QEMU exits and the RAM file is final;
 *   5. RAM file and state chunked into the store; the manifest written (local then store).
 *
 * wake_cold(): from DIR if DIR/manifest.json names the manifest asked for, else DIR is rebuilt
 * from the store (every chunk's hash checked).  DIR/manifest.json is removed before QEMU starts,
 * because the running sprite changes DIR/ram.  QEMU starts with the config given plus the RAM
 * file, -incoming defer and -S, and the disk export attached directly in slot0; then
 * x-ignore-shared, getfd of DIR/state, migrate-incoming uri=fd:wisp-wake, polled to completed,
 * and `cont`. */
#ifndef WISP_SLEEP_H
#define WISP_SLEEP_H

#include "agent_client.h"
#include "ram_chunks.h"
#include "store.h"
#include "vm.h"

#include <glib.h>
#include <stdbool.h>

#define SLEEP_MANIFEST_FORMAT "wisp-sleep-1"

/* DIR/ram, DIR/state, DIR/manifest.json (g_free them). */
char *sleep_ram_path(const char *dir);
char *sleep_state_path(const char *dir);
char *sleep_manifest_path(const char *dir);
/* vm/sprites/NAME/manifest-SEQ.json (g_free it), or NULL when NAME is not sprite_name_valid
 * (sprite_db.h).  The layout of a sleep without a sprite database; such keys are not unique
 * across re-uses of a name, so a sprite with a record uses the next one (sprite_sleep_cold). */
char *sleep_manifest_key(const char *sprite, unsigned seq);
/* vm/sprites/NAME/INCARNATION/manifest-SEQ.json (g_free it): the record's incarnation
 * (sprite_db.h) makes the key unique to this use of the name, so a re-created sprite (sleep_seq
 * from 0 again) never meets, and GC never ranks it against, a dead one's manifests.  NULL when
 * NAME or INCARNATION is not valid. */
char *sleep_manifest_key_incarnation(const char *sprite, const char *incarnation, unsigned seq);
/* A key of either layout: true with *sprite, *incarnation ("" for the old layout; g_free both)
 * and *seq; false for anything else. */
bool sleep_manifest_key_parse(const char *key, char **sprite, char **incarnation,
                              unsigned long *seq);

bool sleep_warm(struct vm *vm, int timeout_ms, GError **error);
bool wake_warm(struct vm *vm, int timeout_ms, GError **error);

struct cold_sleep_opts {
    struct store *store;
    const char *sprite;
    const char *dir;          /* the local copy (see above); QEMU's RAM file is DIR/ram */
    const char *manifest_key; /* where the manifest goes (sleep_manifest_key) */
    unsigned mem_mib;         /* as launched, recorded in the manifest */
    uint32_t chunk_bytes;     /* 0: RAM_CHUNK_BYTES_DEFAULT */
    GHashTable *known;        /* hashes known to be stored (e.g. the last manifest's), or NULL */
    agent_client *agent;      /* NULL: no guest sync (a sprite not attached yet) */
    /* sprite_sleep_cold only: non-NULL when the sprite's RAM is a private mapping (a pool clone):
     * its config as launched, and the sleep goes through sleep_cold_private. */
    const struct vm_config *private_ram_config;
    int timeout_ms; /* per step */
    /* sprite_sleep_cold only: the sprite's template in the store (vm_template_store_publish), or
     * NULL.  A sprite's first cold sleep takes its chunks as the known set, so the pages a
     * clone did not change since the template are neither looked up nor stored again. */
    const char *template_manifest_key;
};

struct cold_sleep_result {
    struct chunk_upload_stats ram, state;
    uint64_t ram_bytes, state_bytes;
    double sync_s, stop_s, migrate_s, quit_s, store_s, total_s;
};

/* On success QEMU has exited (vm->pid == 0) and the manifest is in the store. */
bool sleep_cold(struct vm *vm, const struct cold_sleep_opts *opts, struct cold_sleep_result *out,
                GError **error);

/* The same for a sprite whose RAM is a private (share=off) mapping, e.g. a pool clone: the RAM
 * goes through a helper QEMU into DIR/ram first (sleep_private.c).  cfg: the sprite's config as
 * launched (the helper copies its machine).  The woken sprite runs share=on on DIR/ram. */
bool sleep_cold_private(struct vm *vm, const struct vm_config *cfg,
                        const struct cold_sleep_opts *opts, struct cold_sleep_result *out,
                        GError **error);

struct wake_opts {
    struct store *store;
    const char *dir;
    const char *manifest_key;
    /* kernel, initrd, mem_mib, vcpus, accel, run_dir, nbd_socket, nbd_export, sandbox...; the
     * RAM file, -incoming and -S are set here.  disk: VM_DISK_NBD (the sprite's export) or
     * VM_DISK_PLACEHOLDER for a sprite that had none. */
    const struct vm_config *config;
    int timeout_ms;
};

struct wake_result {
    bool from_store;
    uint64_t fetched_bytes;
    double fetch_s, launch_s, migrate_s, cont_s, total_s;
};

/* The manifest's chunk lists (from JSON text).  mem_mib: what it records. */
bool sleep_manifest_parse(const char *text, size_t len, struct chunk_list *ram,
                          struct chunk_list *state, unsigned *mem_mib, GError **error);

/* Adds the RAM and state chunk hashes of the manifest at key to set (for cold_sleep_opts.known:
 * a repeat sleep then HEADs only chunks that changed). */
bool sleep_known_from_manifest(struct store *st, const char *key, GHashTable *set, GError **error);

/* Returns the running sprite, or NULL with error (nothing left running). */
struct vm *wake_cold(const struct wake_opts *opts, GMainContext *ctx, struct wake_result *out,
                     GError **error);

#endif
