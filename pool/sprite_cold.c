/* sprite_cold.c: cold sleep and wake of a wispd sprite's VM (sprite_cold.h). */
#include "sprite_cold.h"

#include "log.h"
#include "sleep_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COLD_LOG "wispd"

static int sprite_cold_timeout(const struct sprite_cold_config *c)
{
    return c->timeout_ms > 0 ? c->timeout_ms : 120000;
}

char *sprite_cold_dir(const struct sprite_cold_config *c, const char *disk)
{
    return g_build_filename(c->sleep_root, disk, NULL);
}

/* RUN_ROOT/w-HASH: a disk name may be 100 bytes long, a socket path no more than 108. */
static char *sprite_cold_run_dir(const struct sprite_cold_config *c, const char *disk)
{
    g_autofree char *hash = g_compute_checksum_for_string(G_CHECKSUM_SHA256, disk, -1);
    g_autofree char *leaf = g_strdup_printf("w-%.16s", hash);
    return g_build_filename(c->run_root, leaf, NULL);
}

static bool sprite_cold_mkdir(const char *dir, GError **error)
{
    if (g_mkdir_with_parents(dir, 0700) == 0)
        return true;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "mkdir %s: %s", dir,
                g_strerror(errno));
    return false;
}

/* Whether a failed sleep got as far as a complete local copy, so that only the store step
 * failed.  The VM layer sets these times only once the step is done: sleep_cold's quit_s after
 * the migration completed and QEMU quit; sleep_cold_private's migrate_s after the helper saved
 * the state (the sprite's QEMU has quit by then). */
static bool sprite_cold_local_copy_complete(bool woken, const struct cold_sleep_result *r)
{
    return woken ? r->quit_s > 0 : r->migrate_s > 0;
}

/* QEMU has exited and DIR/ram and DIR/state are the sprite: the store must get them, or its
 * memory is lost.  A store that is away for a while (a radosgw restart takes 16-19 s) is
 * waited for, up to store_wait_s. */
static bool sprite_cold_store_again(const struct sprite_cold_config *c, const char *disk,
                                    const struct cold_sleep_opts *opts,
                                    struct cold_sleep_result *out, GError **err)
{
    int wait_s = c->store_wait_s > 0 ? c->store_wait_s : SPRITE_COLD_STORE_WAIT_S;
    gint64 until = g_get_monotonic_time() + (gint64)wait_s * G_USEC_PER_SEC;
    gint64 t0 = g_get_monotonic_time();
    unsigned wait_ms = 500;

    while (g_get_monotonic_time() < until) {
        log_warn(COLD_LOG,
                 "%s: QEMU is gone and the store step failed (%s): trying again in "
                 "%u ms",
                 disk, (*err)->message, wait_ms);
        g_usleep((gulong)wait_ms * 1000);
        wait_ms = MIN(wait_ms * 2, 8000);
        g_clear_error(err);
        if (sleep_store_local_copy(opts, out, err)) {
            out->total_s += (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
            log_info(COLD_LOG, "%s: stored on a later attempt, %.1f s after the first failed", disk,
                     (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC);
            return true;
        }
    }
    g_prefix_error(err, "the store failed for %d s: ", wait_s);
    return false;
}

static struct sprite *sprite_cold_adopt(struct vm *vm, const char *disk, const char *hostname,
                                        int timeout, GError **error);
static void sprite_cold_wake_config(const struct sprite_cold_config *c, const char *disk,
                                    const char *run_dir, struct vm_config *cfg);

/* The sprite again from DIR/ram and DIR/state, which a failed store step left complete: what
 * wake_cold does with a local copy, minus the manifest that was never written. */
static struct sprite *sprite_cold_resume_local(const struct sprite_cold_config *c, const char *disk,
                                               const char *hostname, GError **error)
{
    g_autofree char *dir = sprite_cold_dir(c, disk);
    g_autofree char *run_dir = sprite_cold_run_dir(c, disk);
    g_autofree char *ram_path = sleep_ram_path(dir);
    g_autofree char *state_path = sleep_state_path(dir);
    int timeout = sprite_cold_timeout(c);
    struct vm_config cfg;

    if (!sprite_cold_mkdir(run_dir, error))
        return NULL;
    sprite_cold_wake_config(c, disk, run_dir, &cfg);
    cfg.mem_path = ram_path;
    cfg.mem_share = true;
    cfg.paused = true;
    cfg.incoming_defer = true;
    struct vm *vm = vm_launch(&cfg, NULL, timeout, error);
    if (!vm)
        return NULL;
    int fd = open(state_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "open %s: %s", state_path,
                    g_strerror(errno));
        vm_free(vm);
        return NULL;
    }
    bool ok = sleep_set_ignore_shared(vm->qmp, timeout, "resume", error) &&
              qmp_client_send_fd(vm->qmp, fd, "wisp-resume", timeout, error) &&
              sleep_qmp_ok(vm->qmp, timeout, error, "resume", "migrate-incoming",
                           "{\"uri\": \"fd:wisp-resume\"}") &&
              sleep_migrate_wait(vm->qmp, timeout, "resume", error) &&
              sleep_qmp_ok(vm->qmp, timeout, error, "resume", "cont", NULL);
    close(fd);
    if (!ok) {
        vm_free(vm);
        return NULL;
    }
    return sprite_cold_adopt(vm, disk, hostname, timeout, error);
}

bool sprite_cold_sleep(const struct sprite_cold_config *c, struct sprite *s, bool woken,
                       const char *disk, const char *manifest_key, const char *known_manifest,
                       struct cold_sleep_result *out, struct sprite **resumed, GError **error)
{
    g_autofree char *dir = sprite_cold_dir(c, disk);
    GHashTable *known = NULL;
    GError *ignored = NULL;
    struct vm_config clone_cfg;

    if (!sprite_cold_mkdir(dir, error))
        return false;
    /* The last sleep's chunks, or on a first sleep the template's. */
    const char *known_from =
        known_manifest && *known_manifest ? known_manifest : c->template_manifest_key;
    if (known_from) {
        known = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        /* Only an optimisation: without it every chunk is looked up in the store. */
        if (!sleep_known_from_manifest(c->store, known_from, known, &ignored)) {
            log_info(COLD_LOG, "%s: no known set from %s: %s", disk, known_from, ignored->message);
            g_clear_error(&ignored);
        }
    }
    if (!woken)
        vm_template_clone_config(c->tpl, s->vm->run_dir, &clone_cfg);
    struct cold_sleep_opts opts = {
        .store = c->store,
        .sprite = disk,
        .dir = dir,
        .manifest_key = manifest_key,
        .mem_mib = c->tpl->mem_mib,
        .known = known,
        .agent = s->agent,
        .private_ram_config = woken ? NULL : &clone_cfg,
        .timeout_ms = sprite_cold_timeout(c),
    };
    GError *err = NULL;
    bool ok = woken ? sleep_cold(s->vm, &opts, out, &err)
                    : sleep_cold_private(s->vm, &clone_cfg, &opts, out, &err);
    *resumed = NULL;
    if (!ok && sprite_cold_local_copy_complete(woken, out)) {
        ok = sprite_cold_store_again(c, disk, &opts, out, &err);
        if (!ok) {
            GError *why = NULL;
            *resumed = sprite_cold_resume_local(c, disk, s->hostname, &why);
            if (*resumed) {
                log_warn(COLD_LOG, "%s: resumed from its local copy: it runs again", disk);
            } else {
                log_error(COLD_LOG, "%s: resuming from the local copy failed too: %s", disk,
                          why->message);
                g_clear_error(&why);
            }
        }
    }
    if (!ok)
        g_propagate_error(error, err);
    if (known)
        g_hash_table_unref(known);
    return ok;
}

struct sprite *sprite_cold_wake(const struct sprite_cold_config *c, const char *disk,
                                const char *hostname, const char *manifest_key,
                                struct wake_result *out, GError **error)
{
    g_autofree char *dir = sprite_cold_dir(c, disk);
    g_autofree char *run_dir = sprite_cold_run_dir(c, disk);
    int timeout = sprite_cold_timeout(c);

    if (!sprite_cold_mkdir(dir, error) || !sprite_cold_mkdir(run_dir, error))
        return NULL;
    struct vm_config cfg;
    sprite_cold_wake_config(c, disk, run_dir, &cfg);
    struct wake_opts wo = {
        .store = c->store,
        .dir = dir,
        .manifest_key = manifest_key,
        .config = &cfg,
        .timeout_ms = timeout,
    };
    struct vm *vm = wake_cold(&wo, NULL, out, error);
    if (!vm)
        return NULL;
    return sprite_cold_adopt(vm, disk, hostname, timeout, error);
}

/* The machine a woken sprite runs: the template's, the disk's export in slot0. */
static void sprite_cold_wake_config(const struct sprite_cold_config *c, const char *disk,
                                    const char *run_dir, struct vm_config *cfg)
{
    const struct vm_template *t = c->tpl;
    *cfg = (struct vm_config){
        .qemu = t->qemu,
        .kernel = t->kernel,
        .initrd = t->initrd,
        .mem_mib = t->mem_mib,
        .accel = t->accel,
        .run_dir = run_dir,
        .disk = VM_DISK_NBD,
        .nbd_socket = c->nbd_socket,
        .nbd_export = disk,
        .sandbox = t->sandbox,
        .run_as = t->run_as,
        .keep_on_exit = true, /* see sprite_cold.h */
    };
}

/* A running VM restored from a sleep, as a sprite: once wisp-init answers READY. */
static struct sprite *sprite_cold_adopt(struct vm *vm, const char *disk, const char *hostname,
                                        int timeout, GError **error)
{
    GError *err = NULL;
    agent_client *agent = agent_client_connect(vm->ctl_path, 10000, &err);
    if (!agent || !agent_client_wait_ready(agent, timeout, NULL, &err)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "wake: the guest did not answer: %s",
                    err ? err->message : "?");
        g_clear_error(&err);
        agent_client_free(agent);
        vm_free(vm);
        return NULL;
    }
    struct sprite *s = g_new0(struct sprite, 1);
    s->vm = vm;
    s->agent = agent;
    s->state = SPRITE_VM_RUNNING;
    s->export_name = g_strdup(disk);
    s->hostname = g_strdup(hostname);
    return s;
}

int sprite_cold_manifest_exists(const struct sprite_cold_config *c, const char *key, GError **error)
{
    struct store_stat st;
    int r = store_head(c->store, key, &st);
    if (r == 0)
        return 1;
    if (r == -ENOENT)
        return 0;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-r), "HEAD %s: %s", key,
                store_last_error());
    return -1;
}

void sprite_cold_remove_local(const struct sprite_cold_config *c, const char *disk)
{
    g_autofree char *dir = sprite_cold_dir(c, disk);
    const char *leaves[] = {"manifest.json", "state", "ram"};

    /* The manifest first: without it the other two are never taken for a local copy. */
    for (size_t i = 0; i < G_N_ELEMENTS(leaves); i++) {
        g_autofree char *p = g_build_filename(dir, leaves[i], NULL);
        if (unlink(p) < 0 && errno != ENOENT)
            log_warn(COLD_LOG, "unlink %s: %s", p, g_strerror(errno));
    }
    if (rmdir(dir) < 0 && errno != ENOENT)
        log_info(COLD_LOG, "rmdir %s: %s", dir, g_strerror(errno));
}
