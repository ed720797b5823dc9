/* idle_policy.c: the idle policy (idle_policy.h). */
#include "idle_policy.h"

#include "log.h"
#include "memory_pressure.h"

#include <string.h>

#define IDLE_LOG "idle"

/* One sleep for the worker to do. */
struct idle_job {
    char account[40], name[64];
    bool cold;
    gint64 min_idle_us; /* still idle at least this long when the worker gets to it */
    const char *why;
};

struct idle_policy {
    sprite_service *svc;
    GMutex mu;
    struct idle_policy_config cfg; /* under mu */
    guint source;
    GThread *worker;    /* main loop only */
    gint worker_done;   /* atomic: the worker has finished its batch */
    GArray *jobs;       /* the worker's batch (struct idle_job), owned by it while it runs */
    bool pressure_seen; /* main loop only: for logging the change */
};

static gpointer idle_policy_work(gpointer opaque)
{
    idle_policy *p = opaque;

    for (guint i = 0; i < p->jobs->len; i++) {
        const struct idle_job *j = &g_array_index(p->jobs, struct idle_job, i);
        GError *err = NULL;
        if (!sprite_service_idle_sleep(p->svc, j->account, j->name, j->cold, j->min_idle_us, j->why,
                                       &err)) {
            /* Busy or active again is the normal case of a race lost: not worth a warning. */
            if (g_error_matches(err, SPRITE_SERVICE_ERROR, SPRITE_SERVICE_ERROR_CONFLICT) ||
                g_error_matches(err, SPRITE_SERVICE_ERROR, SPRITE_SERVICE_ERROR_NOT_FOUND))
                log_debug(IDLE_LOG, "%s/%s: %s", j->account, j->name, err->message);
            else
                log_warn(IDLE_LOG, "%s/%s: %s sleep (%s): %s", j->account, j->name,
                         j->cold ? "cold" : "warm", j->why, err ? err->message : "?");
            g_clear_error(&err);
        }
    }
    g_atomic_int_set(&p->worker_done, 1);
    return NULL;
}

static gint idle_policy_by_age(gconstpointer a, gconstpointer b)
{
    const struct sprite_service_idle_entry *x = a, *y = b;
    return x->last_active_us < y->last_active_us ? -1 : x->last_active_us > y->last_active_us;
}

static void idle_policy_add(GArray *jobs, const struct sprite_service_idle_entry *e, bool cold,
                            gint64 min_idle_us, const char *why)
{
    struct idle_job j = {.cold = cold, .min_idle_us = min_idle_us, .why = why};
    g_strlcpy(j.account, e->account, sizeof j.account);
    g_strlcpy(j.name, e->name, sizeof j.name);
    g_array_append_val(jobs, j);
}

/* The batch for this look, oldest activity first: under memory pressure, the least recently
 * used warm-asleep sprite goes cold (one per look: the next look measures again); then every
 * sprite idle for cold_s goes cold, and every running one idle for warm_s goes warm. */
static GArray *idle_policy_plan(idle_policy *p, const struct idle_policy_config *cfg)
{
    GArray *snap = sprite_service_idle_snapshot(p->svc);
    GArray *jobs = g_array_new(FALSE, TRUE, sizeof(struct idle_job));
    char why[128] = "";
    gint64 warm_us = (gint64)cfg->warm_s * G_USEC_PER_SEC;
    gint64 cold_us = (gint64)cfg->cold_s * G_USEC_PER_SEC;

    g_array_sort(snap, idle_policy_by_age);
    struct memory_pressure_limits lim = {cfg->memory_low_mib, cfg->memory_psi};
    bool pressure = memory_pressure_check(&lim, NULL, NULL, why, sizeof why);
    if (pressure != p->pressure_seen)
        log_info(IDLE_LOG, "%s", pressure ? why : "memory pressure over");
    p->pressure_seen = pressure;
    bool pressure_job = false;
    for (guint i = 0; i < snap->len; i++) {
        const struct sprite_service_idle_entry *e =
            &g_array_index(snap, struct sprite_service_idle_entry, i);
        if (cold_us && e->idle_us >= cold_us)
            idle_policy_add(jobs, e, true, cold_us, "idle");
        else if (pressure && e->asleep && !pressure_job) {
            /* Still idle since the look: its idle time can only have grown. */
            idle_policy_add(jobs, e, true, e->idle_us, "memory pressure");
            pressure_job = true;
        } else if (warm_us && !e->asleep && e->idle_us >= warm_us)
            idle_policy_add(jobs, e, false, warm_us, "idle");
    }
    g_array_unref(snap);
    return jobs;
}

static gboolean idle_policy_tick(gpointer opaque)
{
    idle_policy *p = opaque;
    struct idle_policy_config cfg;

    if (p->worker) {
        if (!g_atomic_int_get(&p->worker_done))
            return G_SOURCE_CONTINUE; /* the last batch still runs */
        g_thread_join(p->worker);
        p->worker = NULL;
        g_clear_pointer(&p->jobs, g_array_unref);
    }
    g_mutex_lock(&p->mu);
    cfg = p->cfg;
    g_mutex_unlock(&p->mu);
    GArray *jobs = idle_policy_plan(p, &cfg);
    if (jobs->len == 0) {
        g_array_unref(jobs);
        return G_SOURCE_CONTINUE;
    }
    p->jobs = jobs;
    g_atomic_int_set(&p->worker_done, 0);
    p->worker = g_thread_new("wispd-idle", idle_policy_work, p);
    return G_SOURCE_CONTINUE;
}

idle_policy *idle_policy_start(sprite_service *svc, const struct idle_policy_config *cfg)
{
    idle_policy *p = g_new0(idle_policy, 1);
    p->svc = svc;
    g_mutex_init(&p->mu);
    p->cfg = *cfg;
    p->source = g_timeout_add(cfg->interval_ms ? cfg->interval_ms : 1000, idle_policy_tick, p);
    log_info(IDLE_LOG, "idle-warm %u s, idle-cold %u s, memory-low %u MiB, memory-psi %u",
             cfg->warm_s, cfg->cold_s, cfg->memory_low_mib, cfg->memory_psi);
    return p;
}

void idle_policy_set_config(idle_policy *p, const struct idle_policy_config *cfg)
{
    g_mutex_lock(&p->mu);
    unsigned interval = p->cfg.interval_ms;
    p->cfg = *cfg;
    p->cfg.interval_ms = interval; /* the timeout keeps its period */
    g_mutex_unlock(&p->mu);
    log_info(IDLE_LOG, "idle-warm %u s, idle-cold %u s, memory-low %u MiB, memory-psi %u",
             cfg->warm_s, cfg->cold_s, cfg->memory_low_mib, cfg->memory_psi);
}

void idle_policy_free(idle_policy *p)
{
    if (!p)
        return;
    g_source_remove(p->source);
    if (p->worker)
        g_thread_join(p->worker);
    if (p->jobs)
        g_array_unref(p->jobs);
    g_mutex_clear(&p->mu);
    g_free(p);
}
