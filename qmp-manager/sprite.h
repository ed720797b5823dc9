/* sprite.h: a claimed VM: claim from a pool, warm sleep and wake, destroy (docs/vm.md).
 *
 * Claim, in order; each step is timed, and the first that fails names itself in the error
 * ("claim: seed: ..."), after which the member is destroyed, never reused half attached:
 *   take      a warm member from the pool (vm_pool_take), back to nice 0
 *   disk      blockdev-add the sprite's NBD export, blockdev-reopen slot0 onto it,
 *             block_resize when its size differs, blockdev-del the placeholder (vm_attach_nbd)
 *   cont      the vCPUs run
 *   connect   the control channel, and wisp-init's READY
 *   seed      SEED: 64 bytes from the host's getrandom(), which wisp-init feeds to the kernel
 *             (RNDADDENTROPY, RNDRESEEDCRNG) before anything else: every clone starts with the
 *             template's RNG state, and must not keep it
 *   attach    ATTACH: flush the placeholder's buffers, mount the disk, start the container with
 *             the hostname and env
 *
 * Warm sleep is QMP `stop` (memory and device state stay in QEMU); wake is `cont`.  Cold sleep
 * (state to the object store) is sleep.h's.
 *
 * Destroy stops QEMU (kill: the disk's data is the storage server's, and it has every flush the
 * guest acknowledged), removes the run directory, and then, when asked, deletes the disk through
 * the caller's callback: the disk belongs to the storage server (wispd deletes it over the
 * storage control socket), not to the VM layer.
 *
 * Threads: a sprite is used by one thread at a time (its QMP client's synchronous calls acquire
 * the client's private GMainContext; its agent_client may be shared, see agent_client.h). */
#ifndef WISP_SPRITE_H
#define WISP_SPRITE_H

#include "agent_client.h"
#include "pool.h"
#include "vm.h"

#include <glib.h>
#include <stdbool.h>

/* The VM's state as this layer sees it.  The durable record of a sprite's state (with cold
 * sleep, crashes and transitions) is sprite_db.h's enum sprite_state; wispd maps one onto the
 * other. */
enum sprite_vm_state {
    SPRITE_VM_RUNNING,
    SPRITE_VM_WARM_ASLEEP, /* QMP stop; memory kept in QEMU */
    SPRITE_VM_DESTROYED,
};
const char *sprite_vm_state_to_string(enum sprite_vm_state s);

#define SPRITE_SEED_BYTES 64

struct sprite_claim_request {
    const char *nbd_socket;
    const char *export_name; /* the sprite's disk: the Wisp plugin's export name */
    const char *hostname;    /* NULL: "sprite" */
    const char *const *env;  /* NULL-terminated "K=V", or NULL */
    int take_timeout_ms;     /* waiting for a warm member; 0: do not wait */
    int attach_timeout_ms;   /* 0: 120 s (e2fsck and resize2fs may run inside) */
};

/* Milliseconds per step; total is take to attach answered. */
struct sprite_claim_times {
    double take_ms, disk_ms, cont_ms, connect_ms, seed_ms, attach_ms, total_ms;
};

struct sprite {
    struct vm *vm;
    agent_client *agent;
    enum sprite_vm_state state;
    char *export_name, *hostname;
};

/* Claims a warm member of pool for the request.  times may be NULL. */
struct sprite *sprite_claim(vm_pool *pool, const struct sprite_claim_request *req,
                            struct sprite_claim_times *times, GError **error);

/* Warm sleep and wake.  *ms (may be NULL) gets the QMP round trip. */
bool sprite_sleep_warm(struct sprite *s, double *ms, GError **error);
bool sprite_wake_warm(struct sprite *s, double *ms, GError **error);

/* Called by sprite_destroy after QEMU is gone, when delete_disk was asked. */
typedef bool (*sprite_disk_delete_fn)(const char *export_name, void *opaque, GError **error);

/* Stops QEMU, frees the sprite.  delete_disk: then calls delete_fn (if not NULL) for the export;
 * its failure is returned (the VM is gone either way).  NULL s is allowed. */
bool sprite_destroy(struct sprite *s, bool delete_disk, sprite_disk_delete_fn delete_fn,
                    void *opaque, GError **error);

#endif
