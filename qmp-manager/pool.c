/* pool.c: paused clones kept ready by one rate-limited refill thread (see pool.h). */
#include "pool.h"

#include "clone.h"
#include "log.h"
#include "proc.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define POOL_LOG "pool"

/* mu guards everything below it; cond signals both "a member is ready" (to takers) and "room
 * or stop" (to the refill thread).  The lock is never held while a clone is restored. */
struct vm_pool {
    struct vm_pool_config cfg;
    char *run_root;
    GThread *thread;
    GMutex mu;
    GCond cond;
    GQueue ready; /* struct vm *, oldest first */
    bool stop;
    bool refilling; /* the refill thread is restoring a clone (outside mu) */
    guint64 next_id;
    struct vm_pool_stats stats;
};

void vm_pool_remove_run_dir(const char *run_dir)
{
    const char *names[] = {"qemu.log", "serial.log", "qmp.sock", "ctl.sock", NULL};

    if (!run_dir)
        return;
    for (int i = 0; names[i]; i++) {
        g_autofree char *p = g_build_filename(run_dir, names[i], NULL);
        if (g_remove(p) < 0 && errno != ENOENT)
            log_warn(POOL_LOG, "remove %s: %s", p, g_strerror(errno));
    }
    if (g_rmdir(run_dir) < 0 && errno != ENOENT)
        log_warn(POOL_LOG, "rmdir %s: %s", run_dir, g_strerror(errno));
}

static void vm_pool_discard(struct vm *vm)
{
    g_autofree char *run_dir = g_strdup(vm->run_dir);

    vm_free(vm);
    vm_pool_remove_run_dir(run_dir);
}

bool vm_pool_unnice(struct vm *vm, GError **error)
{
    /* PRIO_PGRP reaches every thread of every process in QEMU's group (it leads it). */
    if (vm->pid && setpriority(PRIO_PGRP, (id_t)vm->pid, 0) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "setpriority %d: %s", (int)vm->pid,
                    g_strerror(errno));
        return false;
    }
    return true;
}

static gpointer vm_pool_refill_thread(gpointer opaque)
{
    vm_pool *p = opaque;
    int pause_ms = p->cfg.refill_pause_ms == 0 ? 100 : p->cfg.refill_pause_ms;
    int nice = p->cfg.refill_nice == 0 ? 10 : p->cfg.refill_nice;

    /* This thread only: the QEMUs it forks inherit the value, the caller keeps its own. */
    if (nice > 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) < 0)
        log_warn(POOL_LOG, "setpriority %d: %s (refills at normal priority)", nice,
                 g_strerror(errno));
    g_mutex_lock(&p->mu);
    while (!p->stop) {
        if (g_queue_get_length(&p->ready) >= p->cfg.size) {
            g_cond_wait(&p->cond, &p->mu);
            continue;
        }
        guint64 id = p->next_id++;
        p->refilling = true;
        g_mutex_unlock(&p->mu);

        g_autofree char *run_dir = g_strdup_printf("%s/m%" G_GUINT64_FORMAT, p->run_root, id);
        GError *err = NULL;
        double ms = 0;
        struct vm *vm = vm_clone_restore(p->cfg.tpl, run_dir, NULL, &ms, &err);

        g_mutex_lock(&p->mu);
        p->refilling = false;
        if (vm) {
            g_queue_push_tail(&p->ready, vm);
            p->stats.restored++;
            p->stats.last_restore_ms = ms;
            p->stats.total_restore_ms += ms;
            log_debug(POOL_LOG, "member m%" G_GUINT64_FORMAT " ready in %.1f ms", id, ms);
            g_cond_broadcast(&p->cond);
        } else {
            p->stats.failed++;
            g_strlcpy(p->stats.last_error, err->message, sizeof p->stats.last_error);
            log_error(POOL_LOG, "refill: %s", err->message);
            g_error_free(err);
            vm_pool_remove_run_dir(run_dir);
            /* A template that cannot be restored fails every time: back off harder. */
            pause_ms = MAX(pause_ms, 1000);
        }
        if (pause_ms > 0 && !p->stop) {
            gint64 until = g_get_monotonic_time() + (gint64)pause_ms * 1000;
            while (!p->stop && g_cond_wait_until(&p->cond, &p->mu, until))
                ;
        }
        pause_ms = p->cfg.refill_pause_ms == 0 ? 100 : p->cfg.refill_pause_ms;
    }
    g_mutex_unlock(&p->mu);
    return NULL;
}

vm_pool *vm_pool_new(const struct vm_pool_config *cfg, GError **error)
{
    vm_pool *p;

    if (!cfg->tpl || !cfg->run_root) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "pool: a template and a run root are needed");
        return NULL;
    }
    if (g_mkdir_with_parents(cfg->run_root, 0700) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "mkdir %s: %s", cfg->run_root, g_strerror(errno));
        return NULL;
    }
    p = g_new0(vm_pool, 1);
    p->cfg = *cfg;
    if (!p->cfg.size)
        p->cfg.size = 2;
    p->run_root = g_strdup(cfg->run_root);
    p->cfg.run_root = p->run_root;
    g_mutex_init(&p->mu);
    g_cond_init(&p->cond);
    g_queue_init(&p->ready);
    p->thread = g_thread_try_new("wisp-pool", vm_pool_refill_thread, p, error);
    if (!p->thread) {
        g_prefix_error(error, "pool: refill thread: ");
        g_mutex_clear(&p->mu);
        g_cond_clear(&p->cond);
        g_free(p->run_root);
        g_free(p);
        return NULL;
    }
    return p;
}

void vm_pool_free(vm_pool *p)
{
    struct vm *vm;

    if (!p)
        return;
    g_mutex_lock(&p->mu);
    p->stop = true;
    g_cond_broadcast(&p->cond);
    g_mutex_unlock(&p->mu);
    g_thread_join(p->thread);
    while ((vm = g_queue_pop_head(&p->ready)))
        vm_pool_discard(vm);
    g_mutex_clear(&p->mu);
    g_cond_clear(&p->cond);
    g_free(p->run_root);
    g_free(p);
}

struct vm *vm_pool_take(vm_pool *p, int timeout_ms, GError **error)
{
    gint64 until = g_get_monotonic_time() + (gint64)MAX(timeout_ms, 0) * 1000;
    struct vm *vm = NULL;

    g_mutex_lock(&p->mu);
    for (;;) {
        while ((vm = g_queue_pop_head(&p->ready))) {
            if (vm_is_running(vm))
                break;
            p->stats.dead_dropped++;
            log_warn(POOL_LOG, "member %s died while waiting (%s); dropped", vm->run_dir,
                     proc_status_to_string(vm->exit_status));
            g_mutex_unlock(&p->mu);
            vm_pool_discard(vm);
            g_mutex_lock(&p->mu);
        }
        if (vm || p->stop || !g_cond_wait_until(&p->cond, &p->mu, until))
            break;
    }
    if (vm) {
        p->stats.taken++;
        g_cond_broadcast(&p->cond); /* room: the refill thread may go on */
    } else {
        g_set_error(error, VM_ERROR, VM_ERROR_TIMEOUT,
                    "no warm member within %d ms (pool of %u; last refill error: %s)", timeout_ms,
                    p->cfg.size, p->stats.last_error[0] ? p->stats.last_error : "none");
    }
    g_mutex_unlock(&p->mu);
    return vm;
}

bool vm_pool_wait_full(vm_pool *p, int timeout_ms)
{
    gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    bool full;

    g_mutex_lock(&p->mu);
    while (!(full = g_queue_get_length(&p->ready) >= p->cfg.size) &&
           g_cond_wait_until(&p->cond, &p->mu, until))
        ;
    g_mutex_unlock(&p->mu);
    return full;
}

void vm_pool_set_size(vm_pool *p, unsigned size)
{
    g_mutex_lock(&p->mu);
    p->cfg.size = size ? size : 2;
    g_cond_broadcast(&p->cond); /* a larger size: the refill thread goes on */
    g_mutex_unlock(&p->mu);
}

void vm_pool_get_stats(vm_pool *p, struct vm_pool_stats *out)
{
    g_mutex_lock(&p->mu);
    *out = p->stats;
    out->ready = g_queue_get_length(&p->ready);
    out->size = p->cfg.size;
    out->refilling = p->refilling ? 1 : 0;
    g_mutex_unlock(&p->mu);
}

unsigned vm_pool_resize(vm_pool *p, unsigned size)
{
    GQueue extra = G_QUEUE_INIT;
    struct vm *vm;

    g_mutex_lock(&p->mu);
    p->cfg.size = size ? size : 2;
    /* The newest go: the oldest have waited longest and are the next to be taken. */
    while (g_queue_get_length(&p->ready) > p->cfg.size)
        g_queue_push_tail(&extra, g_queue_pop_tail(&p->ready));
    g_cond_broadcast(&p->cond);
    g_mutex_unlock(&p->mu);
    unsigned n = g_queue_get_length(&extra);
    while ((vm = g_queue_pop_head(&extra)))
        vm_pool_discard(vm); /* outside mu: it waits for QEMU to die */
    if (n)
        log_info(POOL_LOG, "resized to %u: %u waiting members stopped", size ? size : 2, n);
    return n;
}
