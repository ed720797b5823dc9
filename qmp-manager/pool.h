/* pool.h: N paused clones of one template, kept ready and refilled in the background.
 *
 * One refill thread per pool restores clones one at a time (clone.h), with a pause between
 * two, until the pool holds `size` members; vm_pool_take() hands the oldest one out and wakes
 * the thread.  Refills must never starve running sprites of CPU, so:
 *   - at most one clone is being restored at any moment, and the thread sleeps `refill_pause_ms`
 *     after each one;
 *   - the thread runs at nice `refill_nice` (default 10), and the QEMU it forks inherits it
 *     (fork copies the calling thread's nice value).  A claim sets the member's whole process
 *     group back to nice 0 (vm_pool_unnice), so a claimed sprite competes as an equal.
 *
 * A member that died while waiting (killed, OOM) is dropped at take and replaced.
 *
 * Lifetime: QEMU is spawned with PR_SET_PDEATHSIG, which the kernel ties to the thread that
 * forked it, here the refill thread.  So every VM taken from a pool must be destroyed before
 * vm_pool_free(), which ends that thread.  (wispd keeps its pools for its whole life.) */
#ifndef WISP_POOL_H
#define WISP_POOL_H

#include "template.h"
#include "vm.h"

#include <glib.h>
#include <stdbool.h>

struct vm_pool_config {
    const struct vm_template *tpl; /* kept alive by the caller for the pool's life */
    unsigned size;                 /* members to keep ready; 0: 2 */
    const char *run_root;          /* member N's sockets in RUN_ROOT/mN */
    int refill_pause_ms;           /* after each clone; 0: 100, negative: none */
    int refill_nice;               /* 0: 10; negative: none (the caller's priority) */
};

struct vm_pool_stats {
    unsigned ready;       /* members waiting now */
    guint64 restored;     /* clones made since the start */
    guint64 failed;       /* clones that failed to restore */
    guint64 taken;        /* members handed out */
    guint64 dead_dropped; /* members found dead at take */
    double last_restore_ms, total_restore_ms;
    char last_error[256];
    unsigned size;      /* members wanted */
    unsigned refilling; /* clones being restored now (0 or 1: one refill thread) */
};

typedef struct vm_pool vm_pool;

/* Starts the refill thread; the pool fills in the background. */
vm_pool *vm_pool_new(const struct vm_pool_config *cfg, GError **error);
/* Ends the refill thread, kills and removes the members still waiting.  NULL is allowed. */
void vm_pool_free(vm_pool *p);

/* The oldest ready member (its ownership passes to the caller), waiting up to timeout_ms for
 * one (0: do not wait).  Its run directory is vm->run_dir. */
struct vm *vm_pool_take(vm_pool *p, int timeout_ms, GError **error);
/* Waits until `size` members are ready (true) or the timeout. */
bool vm_pool_wait_full(vm_pool *p, int timeout_ms);
void vm_pool_get_stats(vm_pool *p, struct vm_pool_stats *out);
/* Changes the number of members to keep ready (0: 2).  A larger size refills at once; with a
 * smaller one, the members already waiting stay until they are taken. */
void vm_pool_set_size(vm_pool *p, unsigned size);
/* The same, and a smaller size also stops the waiting members beyond it (the newest first)
 * rather than leaving them until taken: resizing at run time frees their memory at once.
 * Returns how many were stopped. */
unsigned vm_pool_resize(vm_pool *p, unsigned size);

/* Back to nice 0 for every thread of the member's QEMU (at claim). */
bool vm_pool_unnice(struct vm *vm, GError **error);
/* Removes a member's run directory (logs; vm_free already removed its sockets). */
void vm_pool_remove_run_dir(const char *run_dir);

#endif
