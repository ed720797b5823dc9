/* sprite.c: claim, warm sleep and wake, destroy (see sprite.h). */
#include "sprite.h"

#include "log.h"

#include <errno.h>
#include <sys/random.h>

#define SPRITE_LOG "sprite"

const char *sprite_vm_state_to_string(enum sprite_vm_state s)
{
    switch (s) {
    case SPRITE_VM_RUNNING:
        return "running";
    case SPRITE_VM_WARM_ASLEEP:
        return "warm-asleep";
    case SPRITE_VM_DESTROYED:
        return "destroyed";
    }
    return "?";
}

static double sprite_ms_since(gint64 *t)
{
    gint64 now = g_get_monotonic_time();
    double ms = (double)(now - *t) / 1000.0;

    *t = now;
    return ms;
}

static bool sprite_qmp_simple(struct vm *vm, const char *command, GError **error)
{
    JsonNode *ret = qmp_client_execute(vm->qmp, command, NULL, 5000, error);

    if (!ret)
        return false;
    json_node_unref(ret);
    return true;
}

/* All of len from the kernel's CSPRNG (getrandom may return less for large requests). */
static bool sprite_random_bytes(uint8_t *buf, size_t len, GError **error)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            g_set_error(error, VM_ERROR, VM_ERROR_IO, "getrandom: %s", g_strerror(errno));
            return false;
        }
        got += (size_t)n;
    }
    return true;
}

/* The steps after take, on a member the caller owns.  *step names the one that failed. */
static bool sprite_claim_steps(struct sprite *s, const struct sprite_claim_request *req,
                               struct sprite_claim_times *t, const char **step, GError **error)
{
    int attach_timeout = req->attach_timeout_ms > 0 ? req->attach_timeout_ms : 120000;
    uint8_t seed[SPRITE_SEED_BYTES];
    gint64 t0 = g_get_monotonic_time();
    bool ok;

    *step = "disk";
    if (!vm_attach_nbd(s->vm, req->nbd_socket, req->export_name, 10000, error))
        return false;
    t->disk_ms = sprite_ms_since(&t0);

    *step = "cont";
    if (!sprite_qmp_simple(s->vm, "cont", error))
        return false;
    t->cont_ms = sprite_ms_since(&t0);

    *step = "connect";
    s->agent = agent_client_connect(s->vm->ctl_path, 5000, error);
    if (!s->agent || !agent_client_wait_ready(s->agent, 10000, NULL, error))
        return false;
    t->connect_ms = sprite_ms_since(&t0);

    *step = "seed";
    if (!sprite_random_bytes(seed, sizeof seed, error))
        return false;
    ok = agent_client_seed(s->agent, seed, sizeof seed, 5000, error);
    explicit_bzero(seed, sizeof seed);
    if (!ok)
        return false;
    t->seed_ms = sprite_ms_since(&t0);

    *step = "attach";
    if (!agent_client_attach(s->agent, NULL, s->hostname, req->env, attach_timeout, error))
        return false;
    t->attach_ms = sprite_ms_since(&t0);
    return true;
}

struct sprite *sprite_claim(vm_pool *pool, const struct sprite_claim_request *req,
                            struct sprite_claim_times *times, GError **error)
{
    struct sprite_claim_times local = {0};
    struct sprite_claim_times *t = times ? times : &local;
    gint64 start = g_get_monotonic_time(), t0 = start;
    const char *step = "take";
    GError *err = NULL;
    struct sprite *s;
    struct vm *vm;

    *t = (struct sprite_claim_times){0};
    if (!req->nbd_socket || !req->export_name || !*req->export_name) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "claim: an NBD socket and export are needed");
        return NULL;
    }
    vm = vm_pool_take(pool, req->take_timeout_ms, &err);
    if (vm && !vm_pool_unnice(vm, &err)) {
        vm_free(vm); /* never handed out half prepared */
        vm = NULL;
    }
    if (!vm) {
        g_propagate_prefixed_error(error, err, "claim: take: ");
        return NULL;
    }
    t->take_ms = sprite_ms_since(&t0);
    s = g_new0(struct sprite, 1);
    s->vm = vm;
    s->export_name = g_strdup(req->export_name);
    s->hostname = g_strdup(req->hostname ? req->hostname : "sprite");
    if (!sprite_claim_steps(s, req, t, &step, &err)) {
        g_autofree char *tail = vm_serial_tail(vm, 1200);
        log_warn(SPRITE_LOG, "claim of %s failed at %s; member destroyed; serial: %s",
                 s->export_name, step, tail);
        g_propagate_prefixed_error(error, err, "claim: %s: ", step);
        sprite_destroy(s, false, NULL, NULL, NULL);
        return NULL;
    }
    t->total_ms = (double)(g_get_monotonic_time() - start) / 1000.0;
    s->state = SPRITE_VM_RUNNING;
    log_info(SPRITE_LOG,
             "claimed %s as %s in %.1f ms (take %.1f, disk %.1f, cont %.1f, connect %.1f, "
             "seed %.1f, attach %.1f)",
             s->export_name, s->hostname, t->total_ms, t->take_ms, t->disk_ms, t->cont_ms,
             t->connect_ms, t->seed_ms, t->attach_ms);
    return s;
}

bool sprite_sleep_warm(struct sprite *s, double *ms, GError **error)
{
    gint64 t0 = g_get_monotonic_time();

    if (s->state != SPRITE_VM_RUNNING) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "warm sleep: not allowed while %s",
                    sprite_vm_state_to_string(s->state));
        return false;
    }
    if (!sprite_qmp_simple(s->vm, "stop", error)) {
        g_prefix_error(error, "warm sleep: stop: ");
        return false;
    }
    s->state = SPRITE_VM_WARM_ASLEEP;
    if (ms)
        *ms = sprite_ms_since(&t0);
    return true;
}

bool sprite_wake_warm(struct sprite *s, double *ms, GError **error)
{
    gint64 t0 = g_get_monotonic_time();

    if (s->state != SPRITE_VM_WARM_ASLEEP) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "warm wake: not allowed while %s",
                    sprite_vm_state_to_string(s->state));
        return false;
    }
    if (!sprite_qmp_simple(s->vm, "cont", error)) {
        g_prefix_error(error, "warm wake: cont: ");
        return false;
    }
    s->state = SPRITE_VM_RUNNING;
    if (ms)
        *ms = sprite_ms_since(&t0);
    return true;
}

bool sprite_destroy(struct sprite *s, bool delete_disk, sprite_disk_delete_fn delete_fn,
                    void *opaque, GError **error)
{
    g_autofree char *run_dir = NULL;
    bool ok = true;

    if (!s)
        return true;
    /* The agent first: its reader thread must not be reading a socket QEMU is closing. */
    agent_client_free(s->agent);
    if (s->vm) {
        run_dir = g_strdup(s->vm->run_dir);
        vm_free(s->vm); /* SIGKILL to QEMU's group, reaped, sockets removed */
    }
    vm_pool_remove_run_dir(run_dir);
    s->state = SPRITE_VM_DESTROYED;
    if (delete_disk && delete_fn && !delete_fn(s->export_name, opaque, error)) {
        g_prefix_error(error, "destroy: delete disk %s: ", s->export_name);
        ok = false;
    }
    g_free(s->export_name);
    g_free(s->hostname);
    g_free(s);
    return ok;
}
