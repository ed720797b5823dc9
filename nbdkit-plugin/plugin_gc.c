/* plugin_gc.c: garbage collection in the running server: the `gc` control request and a
 * thread that runs one every gc-interval seconds.
 *
 * Each run opens a metadata connection of its own (meta_open without the exclusive lock, which
 * this server holds): the reference walk then reads a WAL snapshot and never waits on, or
 * holds up, meta_lock and the data path's commits.  The run holds versions_lock only while it
 * reads the references (chunk_gc.h, invariant (b)), and gc_lock, which nothing but another GC
 * takes, for its whole length.
 *
 * Shut-down: wisp_cleanup sets s->stopping before plugin_gc_stop; a run in progress sees it
 * (chunk_gc_options.stop) and ends after the store requests in flight. */
#include "plugin.h"

#include "log.h"
#include "replica.h"

#include <errno.h>
#include <string.h>
#include <time.h>

int plugin_gc_run(struct plugin_state *s, uint64_t grace_s, bool dry_run,
                  struct chunk_gc_report *out)
{
    struct chunk_gc_options o = {
        .grace_s = grace_s,
        .dry_run = dry_run,
        .snapshot_lock = &s->versions_lock,
        .stop = &s->stopping,
        .scratch_dir = s->config->meta_dir,
    };
    char line[CHUNK_GC_REPORT_MAX];
    struct meta *m;
    int r;

    memset(out, 0, sizeof *out);
    if (pthread_mutex_trylock(&s->gc_lock) != 0)
        return -EBUSY;
    r = meta_open(s->config->meta_dir, false, &m);
    if (r < 0) {
        log_error("gc", "cannot open the metadata in %s: %s", s->config->meta_dir, strerror(-r));
        pthread_mutex_unlock(&s->gc_lock);
        return r;
    }
    /* This server's own replica adds nothing to m once everything is shipped, and reading it
     * would keep what was just deleted until the next run.  If shipping fails (or another
     * server took the name over: -ESTALE), it is read like every other. */
    const char *own = s->config->replica_name ? s->config->replica_name : REPLICA_NAME_DEFAULT;
    if (s->replica && replica_sync(s->replica) == 0)
        o.own_replica = own;
    r = chunk_gc_run(s->store, m, &o, out);
    meta_close(m);
    pthread_mutex_unlock(&s->gc_lock);
    chunk_gc_format_report(out, line, sizeof line);
    if (r == 0)
        log_info("gc", "%s%s (%.1f s)", dry_run ? "dry run: " : "", line, out->seconds);
    else if (r != -ECANCELED)
        log_error("gc", "failed (%s) after: %s", strerror(-r), line);
    return r;
}

static void *plugin_gc_thread(void *opaque)
{
    struct plugin_state *s = opaque;
    struct chunk_gc_report report;
    struct timespec due;

    pthread_mutex_lock(&s->gc_wait_lock);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &due);
        due.tv_sec += (time_t)s->config->gc_interval;
        while (!__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE) &&
               pthread_cond_timedwait(&s->gc_wake, &s->gc_wait_lock, &due) != ETIMEDOUT)
            ;
        if (__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE))
            break;
        pthread_mutex_unlock(&s->gc_wait_lock);
        int r = plugin_gc_run(s, s->config->gc_grace, false, &report);
        if (r == -EBUSY)
            log_info("gc", "skipped: a collection requested through the control socket runs");
        pthread_mutex_lock(&s->gc_wait_lock);
    }
    pthread_mutex_unlock(&s->gc_wait_lock);
    return NULL;
}

int plugin_gc_start(struct plugin_state *s)
{
    pthread_condattr_t attr;
    int e;

    if (s->config->gc_interval == 0)
        return 0;
    e = pthread_condattr_init(&attr);
    if (e == 0) {
        e = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        if (e == 0)
            e = pthread_cond_init(&s->gc_wake, &attr);
        pthread_condattr_destroy(&attr);
    }
    if (e != 0) {
        log_error("gc", "cannot set up the GC thread's timer: %s", strerror(e));
        return -e;
    }
    e = pthread_create(&s->gc_thread, NULL, plugin_gc_thread, s);
    if (e != 0) {
        log_error("gc", "cannot start the GC thread: %s", strerror(e));
        pthread_cond_destroy(&s->gc_wake);
        return -e;
    }
    s->gc_started = true;
    return 0;
}

void plugin_gc_stop(struct plugin_state *s)
{
    if (!s->gc_started)
        return;
    /* stopping is set; waking under the lock means the thread cannot miss it. */
    pthread_mutex_lock(&s->gc_wait_lock);
    pthread_cond_broadcast(&s->gc_wake);
    pthread_mutex_unlock(&s->gc_wait_lock);
    pthread_join(s->gc_thread, NULL);
    pthread_cond_destroy(&s->gc_wake);
    s->gc_started = false;
}
