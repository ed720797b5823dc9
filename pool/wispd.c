/* wispd: the Wisp daemon (docs/operations.md, docs/api.md).
 *
 * Start-up, in order: the config; the storage server (nbdkit with the Wisp plugin, supervised);
 * the base disk, imported from the image's rootfs.ext4 on the first start; the template (built
 * once per image); the warm pool; the accounts reconciled with the storage server (what a killed
 * wispd left half done, sprite_reconcile.h); the sprite service and its HTTP/JSON API on a unix
 * socket.
 * SIGTERM and SIGINT stop it in the reverse order: no new requests, the running ones finish,
 * the idle policy stops, every sprite with a VM goes to cold sleep (one that cannot has its VM
 * destroyed and its disk kept), the pool and nbdkit stop.  SIGHUP reads the
 * config file and the tokens file again (the pool size and the tokens take effect). */
#include "account_store.h"
#include "api_auth.h"
#include "api_server.h"
#include "idle_policy.h"
#include "log.h"
#include "pool.h"
#include "proc.h"
#include "runas.h"
#include "sprite_cold.h"
#include "sprite_db.h"
#include "sprite_reconcile.h"
#include "sprite_service.h"
#include "storage_server.h"
#include "store.h"
#include "template.h"
#include "template_store.h"
#include "wispd_config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define WISPD_LOG        "wispd"
#define WISPD_IMAGE_NAME "default"

struct wispd {
    struct wispd_config cfg;
    GMainLoop *loop;
    storage_server *storage;
    struct vm_template *tpl;
    vm_pool *pool;
    sprite_service *svc;
    api_server *api;
    idle_policy *idle;
    struct store *store; /* the account databases' replicas (account_store.h) */
    char *meta_dir, *run_dir;
    const char *qemu_user; /* cfg.qemu_user when QEMU can drop to it here, else NULL */
    int lock_fd;           /* STATE/wispd.lock, flocked for wispd's life; -1: none */
    char *template_key;    /* the template's RAM in the store (template_store.h), or NULL */
};

static void wispd_idle_config(const struct wispd_config *c, struct idle_policy_config *out)
{
    *out = (struct idle_policy_config){.warm_s = (unsigned)c->idle_warm_s,
                                       .cold_s = (unsigned)c->idle_cold_s,
                                       .memory_low_mib = (unsigned)c->memory_low_mib,
                                       .memory_psi = (unsigned)c->memory_psi};
}

/* Whether the storage server has the base disk. */
static int wispd_has_base(struct wispd *d, GError **error)
{
    JsonObject *answer =
        storage_control_call(storage_server_control_socket(d->storage), "disk-list", NULL, error);
    if (!answer)
        return -1;
    JsonArray *disks = json_object_get_array_member(answer, "disks");
    int found = 0;
    for (guint i = 0; disks && i < json_array_get_length(disks); i++) {
        JsonObject *o = json_array_get_object_element(disks, i);
        if (o && g_strcmp0(json_object_get_string_member_with_default(o, "name", ""), "base") == 0)
            found = 1;
    }
    json_object_unref(answer);
    return found;
}

/* wisp disk import base IMAGE/rootfs.ext4: the import runs its own nbdkit on the metadata,
 * which a running server holds, so it runs while ours is stopped. */
static bool wispd_import_base(struct wispd *d, GError **error)
{
    g_autofree char *rootfs = g_build_filename(d->cfg.image_dir, "rootfs.ext4", NULL);
    const char *argv[] = {d->cfg.wisp_cli,  "disk",           "import",      "base",      rootfs,
                          "--store",        d->cfg.store_url, "--meta",      d->meta_dir, "--cache",
                          d->cfg.cache_dir, "--plugin",       d->cfg.plugin, NULL};
    g_autofree char *out = NULL, *err_text = NULL;
    int status = 0;
    double t0 = g_get_monotonic_time() / 1e6;

    log_info(WISPD_LOG, "importing %s as the base disk", rootfs);
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err_text,
                      &status, error))
        return false;
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "wisp disk import base: %s%s",
                    out ? out : "", err_text ? err_text : "");
        return false;
    }
    log_info(WISPD_LOG, "base disk imported in %.1f s", g_get_monotonic_time() / 1e6 - t0);
    return true;
}

/* Decides QEMU's user (runas.h), as the KVM probe decides the accelerator: where the host
 * allows, QEMU drops root after start-up.  It then reaches nbdkit's socket through the group
 * of that user: the state and run directories become root:GROUP 0750 (the other directories in
 * the state directory stay 0700), and the socket itself is given to the group after every
 * nbdkit start (storage_server.h). */
/* The first directory above dir (exclusive) that uid/gid cannot search, or NULL (g_free it).
 * Permission bits only: an ACL that would allow it is not looked at. */
static char *wispd_unsearchable_parent(const char *dir, uid_t uid, gid_t gid)
{
    char *p = g_path_get_dirname(dir);
    for (;;) {
        struct stat st;
        if (stat(p, &st) < 0)
            return p;
        bool ok = st.st_uid == uid   ? (st.st_mode & S_IXUSR) != 0
                  : st.st_gid == gid ? (st.st_mode & S_IXGRP) != 0
                                     : (st.st_mode & S_IXOTH) != 0;
        if (!ok)
            return p;
        if (strcmp(p, "/") == 0 || strcmp(p, ".") == 0) {
            g_free(p);
            return NULL;
        }
        char *up = g_path_get_dirname(p);
        g_free(p);
        p = up;
    }
}

static bool wispd_choose_qemu_user(struct wispd *d, GError **error)
{
    uid_t uid;
    gid_t gid;
    const char *why = NULL;

    if (!vm_runas_resolve(d->cfg.qemu_user, &uid, &gid, &why)) {
        log_info(WISPD_LOG, "QEMU runs as uid %d, not as '%s': %s", (int)getuid(), d->cfg.qemu_user,
                 why);
        return true;
    }
    /* The state directory's own mode is set below; its parents are the host's business. */
    g_autofree char *closed = wispd_unsearchable_parent(d->cfg.state_dir, uid, gid);
    if (closed) {
        log_warn(WISPD_LOG,
                 "QEMU runs as uid %d, not as '%s': it could not reach the storage server's "
                 "socket, since it cannot search %s",
                 (int)getuid(), d->cfg.qemu_user, closed);
        return true;
    }
    const char *dirs[] = {d->cfg.state_dir, d->run_dir};
    for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++)
        if (chown(dirs[i], 0, gid) < 0 || chmod(dirs[i], 0750) < 0) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                        "give %s to QEMU's group %d: %s", dirs[i], (int)gid, g_strerror(errno));
            return false;
        }
    d->qemu_user = d->cfg.qemu_user;
    log_info(WISPD_LOG, "QEMU drops to user '%s' (uid %d) after start-up", d->qemu_user, (int)uid);
    return true;
}

static bool wispd_start_storage(struct wispd *d, GError **error)
{
    struct storage_server_config sc = {.plugin = d->cfg.plugin,
                                       .store_url = d->cfg.store_url,
                                       .cache_dir = d->cfg.cache_dir,
                                       .meta_dir = d->meta_dir,
                                       .run_dir = d->run_dir,
                                       .socket_user = d->qemu_user};
    d->storage = storage_server_start(&sc, error);
    if (!d->storage)
        return false;
    int has = wispd_has_base(d, error);
    if (has != 0)
        return has > 0;
    storage_server_stop(d->storage);
    d->storage = NULL;
    if (!wispd_import_base(d, error))
        return false;
    d->storage = storage_server_start(&sc, error);
    return d->storage != NULL;
}

static bool wispd_start_vms(struct wispd *d, GError **error)
{
    g_autofree char *key = vm_template_image_key(d->cfg.image_dir, error);
    g_autofree char *kernel = g_build_filename(d->cfg.image_dir, "vmlinux", NULL);
    g_autofree char *initrd = g_build_filename(d->cfg.image_dir, "initramfs.cpio.gz", NULL);
    g_autofree char *runs = g_build_filename(d->run_dir, "vms", NULL);

    if (!key)
        return false;
    struct vm_template_config tc = {.state_dir = d->cfg.state_dir,
                                    .key = key,
                                    .kernel = kernel,
                                    .initrd = initrd,
                                    .mem_mib = d->cfg.mem_mib,
                                    .sandbox = d->cfg.sandbox,
                                    .run_as = d->qemu_user};
    d->tpl = vm_template_ensure(&tc, error);
    if (!d->tpl)
        return false;
    log_info(WISPD_LOG, "template %.12s %s", key, d->tpl->built_now ? "built" : "reused");
    /* Members of an earlier wispd's pool were killed at start (wispd_kill_leftovers); their
     * directories are stale. */
    GError *ignored = NULL;
    if (g_file_test(runs, G_FILE_TEST_IS_DIR)) {
        g_autofree char *old = g_strdup_printf("%s.old.%d", runs, (int)getpid());
        if (rename(runs, old) == 0) {
            const char *rm[] = {"rm", "-rf", old, NULL};
            g_spawn_sync(NULL, (char **)rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                         &ignored);
            g_clear_error(&ignored);
        }
    }
    /* The template's RAM in the store, once per build, so that first cold sleeps store only
     * what a sprite changed (about 15 MiB of 66 for an idle 256 MiB one; docs/vm.md).  Only
     * an optimisation: without it a first sleep stores the whole RAM. */
    GError *perr = NULL;
    struct chunk_upload_stats ps = {0};
    double tp = g_get_monotonic_time() / 1e6;
    d->template_key = vm_template_store_publish(d->store, d->tpl, &ps, &perr);
    if (d->template_key)
        log_info(WISPD_LOG, "template in the store as %s (%.2f s)", d->template_key,
                 g_get_monotonic_time() / 1e6 - tp);
    else {
        log_warn(WISPD_LOG, "template not in the store (first cold sleeps store all): %s",
                 perr->message);
        g_clear_error(&perr);
    }
    struct vm_pool_config pc = {.tpl = d->tpl, .size = d->cfg.pool_size, .run_root = runs};
    d->pool = vm_pool_new(&pc, error);
    return d->pool != NULL;
}

static gboolean wispd_on_term(gpointer opaque)
{
    struct wispd *d = opaque;
    log_info(WISPD_LOG, "stopping");
    g_main_loop_quit(d->loop);
    return G_SOURCE_CONTINUE;
}

static gboolean wispd_on_hup(gpointer opaque)
{
    struct wispd *d = opaque;
    struct wispd_config fresh;
    GError *err = NULL;
    bool ok = true;

    if (!wispd_config_reload(&d->cfg, &fresh, &err)) {
        log_error(WISPD_LOG, "reload: %s (the old config stays)", err->message);
        g_clear_error(&err);
        ok = false;
    } else {
        if (fresh.pool_size && fresh.pool_size != d->cfg.pool_size) {
            log_info(WISPD_LOG, "pool size %u -> %u", d->cfg.pool_size, fresh.pool_size);
            d->cfg.pool_size = fresh.pool_size;
            vm_pool_set_size(d->pool, fresh.pool_size);
        }
        d->cfg.idle_warm_s = fresh.idle_warm_s;
        d->cfg.idle_cold_s = fresh.idle_cold_s;
        d->cfg.memory_low_mib = fresh.memory_low_mib;
        d->cfg.memory_psi = fresh.memory_psi;
        struct idle_policy_config ic;
        wispd_idle_config(&d->cfg, &ic);
        idle_policy_set_config(d->idle, &ic);
        wispd_config_clear(&fresh);
    }
    GHashTable *tokens = api_auth_load(d->cfg.tokens_file, &err);
    if (!tokens) {
        log_error(WISPD_LOG, "reload: %s (the old tokens stay)", err->message);
        g_clear_error(&err);
        ok = false;
    } else {
        api_server_set_tokens(d->api, tokens);
    }
    if (ok)
        log_info(WISPD_LOG, "config and tokens reloaded");
    return G_SOURCE_CONTINUE;
}

/* One wispd per state directory: a second would kill the first one's VMs as leftovers
 * (wispd_kill_leftovers) and share its disks.  The lock dies with the process, however it
 * ends; its file descriptor is close-on-exec, so QEMU and nbdkit never hold it. */
static bool wispd_lock_state(struct wispd *d, GError **error)
{
    g_autofree char *path = g_build_filename(d->cfg.state_dir, "wispd.lock", NULL);
    d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "open %s: %s", path,
                    g_strerror(errno));
        return false;
    }
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "%s: %s", path,
                    e == EWOULDBLOCK ? "another wispd runs on this state directory; stop it first"
                                     : g_strerror(e));
        return false;
    }
    return true;
}

/* Whether pid is a QEMU or an nbdkit whose command line names a path in state_dir. */
static bool wispd_is_leftover(pid_t pid, const char *state_dir)
{
    if (sprite_pid_is_our_qemu(pid, state_dir))
        return true;
    g_autofree char *path = g_strdup_printf("/proc/%d/cmdline", (int)pid);
    g_autofree char *cmd = NULL;
    return g_file_get_contents(path, &cmd, NULL, NULL) && strcmp(cmd, "nbdkit") == 0 &&
           proc_cmdline_names_path(pid, state_dir);
}

/* Kills every QEMU and nbdkit of this state directory that an earlier wispd left.  Pool
 * members and sprites outlive a wispd killed with SIGKILL (template.c: no parent-death
 * signal), and one left running would reconnect to the new nbdkit (reconnect-delay) and write
 * to a disk that a new VM of the same sprite also writes.  nbdkit has a parent-death signal,
 * yet one was seen to outlive a SIGKILL of wispd (tests/wispd/crash.c), and it would hold the
 * metadata.  So this runs before the storage server starts. */
static void wispd_kill_leftovers(const char *state_dir)
{
    GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
    GDir *proc = g_dir_open("/proc", 0, NULL);
    const char *name;

    while (proc && (name = g_dir_read_name(proc))) {
        pid_t pid = (pid_t)atoi(name);
        if (pid > 0 && wispd_is_leftover(pid, state_dir) && kill(pid, SIGKILL) == 0) {
            log_warn(WISPD_LOG, "killed %d, a QEMU or nbdkit left by an earlier wispd", (int)pid);
            g_array_append_val(pids, pid);
        }
    }
    if (proc)
        g_dir_close(proc);
    /* Gone once reaped by init, or a zombie: then its command line is empty, and its files,
     * the metadata lock among them, are closed.  A process in uninterruptible I/O (nbdkit in
     * an fsync on a busy disk) dies only when that returns: wait for it, up to a minute. */
    for (guint i = 0; i < pids->len; i++) {
        pid_t pid = g_array_index(pids, pid_t, i);
        int tries = 0;
        while (tries < 1200 && wispd_is_leftover(pid, state_dir)) {
            g_usleep(50000);
            if (++tries == 100)
                log_warn(WISPD_LOG, "%d is still dying after 5 s; waiting", (int)pid);
        }
        if (tries == 1200)
            log_error(WISPD_LOG, "%d survived SIGKILL for a minute; starting anyway", (int)pid);
    }
    g_array_free(pids, TRUE);
}

/* Every API connection is a file: raise the soft limit to the hard one, so that a burst of
 * clients (1,000 at once in tests/wispd/load.c) is not refused with EMFILE. */
static void wispd_raise_file_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn(WISPD_LOG, "open files limit stays %llu: %s", (unsigned long long)was,
                     g_strerror(errno));
    }
}

/* The store the account databases replicate to, and every account this state directory lacks
 * brought back from it (a fresh host on the same store); the storage server restores the disk
 * metadata by itself when its meta directory is empty. */
static bool wispd_open_accounts_store(struct wispd *d, GError **error)
{
    g_autofree char *accounts = g_build_filename(d->cfg.state_dir, "accounts", NULL);
    struct account_store_restored r;
    int err = store_open(d->cfg.store_url, NULL, &d->store);

    if (err < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-err), "store %s: %s",
                    d->cfg.store_url, store_last_error());
        return false;
    }
    if (!account_store_restore_all(d->store, accounts, &r, error))
        return false;
    if (r.accounts || r.incomplete)
        log_info(WISPD_LOG,
                 "%u account databases restored from the store in %.2f s (%u already here, %u "
                 "without a complete replica)",
                 r.accounts, r.seconds, r.present, r.incomplete);
    return true;
}

static bool wispd_start(struct wispd *d, GError **error)
{
    wispd_raise_file_limit();
    d->meta_dir = g_build_filename(d->cfg.state_dir, "meta", NULL);
    d->run_dir = g_build_filename(d->cfg.state_dir, "run", NULL);
    if (g_mkdir_with_parents(d->cfg.state_dir, 0700) < 0 ||
        g_mkdir_with_parents(d->run_dir, 0700) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "mkdir %s: %s",
                    d->cfg.state_dir, g_strerror(errno));
        return false;
    }
    if (g_str_has_prefix(d->cfg.store_url, "file://") &&
        g_mkdir_with_parents(d->cfg.store_url + strlen("file://"), 0700) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "mkdir %s: %s",
                    d->cfg.store_url, g_strerror(errno));
        return false;
    }
    if (!wispd_lock_state(d, error))
        return false;
    GHashTable *tokens = api_auth_load(d->cfg.tokens_file, error);
    if (!tokens)
        return false;
    wispd_kill_leftovers(d->cfg.state_dir);
    if (!wispd_choose_qemu_user(d, error) || !wispd_open_accounts_store(d, error) ||
        !wispd_start_storage(d, error) || !wispd_start_vms(d, error)) {
        g_hash_table_unref(tokens);
        return false;
    }
    /* Before the API serves: what a killed wispd left half done is finished first. */
    if (!sprite_reconcile(d->cfg.state_dir, storage_server_control_socket(d->storage), NULL,
                          error)) {
        g_prefix_error(error, "reconcile the accounts with the storage server: ");
        g_hash_table_unref(tokens);
        return false;
    }
    struct sprite_service_config sc = {
        .state_dir = d->cfg.state_dir,
        .nbd_socket = storage_server_nbd_socket(d->storage),
        .control_socket = storage_server_control_socket(d->storage),
        .pool = d->pool,
        .tpl = d->tpl,
        .store_url = d->cfg.store_url,
        .run_dir = d->run_dir,
        .cold_store_wait_s = d->cfg.cold_store_wait_s,
        .template_manifest_key = d->template_key,
        .store = d->store,
    };
    d->svc = sprite_service_new(&sc, error);
    if (!d->svc) {
        g_hash_table_unref(tokens);
        return false;
    }
    d->api = api_server_start(d->cfg.listen, d->svc, tokens, error);
    if (!d->api) {
        g_hash_table_unref(tokens);
        return false;
    }
    struct idle_policy_config ic;
    wispd_idle_config(&d->cfg, &ic);
    d->idle = idle_policy_start(d->svc, &ic);
    /* One image today, so one pool, named "default" in /v1/pools. */
    api_server_set_pool(d->api, d->pool, WISPD_IMAGE_NAME);
    return !d->cfg.listen_tcp || api_server_listen_tcp(d->api, d->cfg.listen_tcp, error);
}

/* After the VMs are gone: every sprite disk the storage server has open is uploaded and
 * committed, and its metadata replica shipped, before the server stops.  With
 * durability=local the last writes otherwise wait in this host's cache (kept for a restart
 * here, dropped by a fresh host), so a stop would lose up to upload-delay of them for a
 * fresh host on the same store. */
static void wispd_commit_disks(struct wispd *d)
{
    const char *ctl = storage_server_control_socket(d->storage);
    GError *err = NULL;
    unsigned committed = 0, failed = 0;
    double t0 = g_get_monotonic_time() / 1e6;

    JsonObject *answer = storage_control_call(ctl, "disk-list", NULL, &err);
    if (!answer) {
        log_warn(WISPD_LOG, "disks not committed at stop: %s", err->message);
        g_clear_error(&err);
        return;
    }
    JsonArray *disks = json_object_get_array_member(answer, "disks");
    for (guint i = 0; disks && i < json_array_get_length(disks); i++) {
        JsonObject *o = json_array_get_object_element(disks, i);
        const char *name = o ? json_object_get_string_member_with_default(o, "name", "") : "";
        if (!g_str_has_prefix(name, "s_"))
            continue;
        JsonObject *req = json_object_new();
        json_object_set_string_member(req, "name", name);
        json_object_set_boolean_member(req, "open_only", TRUE);
        JsonObject *r = storage_control_call(ctl, "disk-commit", req, &err);
        json_object_unref(req);
        if (!r) {
            log_warn(WISPD_LOG, "commit %s at stop: %s", name, err->message);
            g_clear_error(&err);
            failed++;
            continue;
        }
        committed += json_object_get_boolean_member_with_default(r, "committed", FALSE);
        json_object_unref(r);
    }
    json_object_unref(answer);
    log_info(WISPD_LOG, "%u sprite disks committed to the store in %.2f s (%u failed)", committed,
             g_get_monotonic_time() / 1e6 - t0, failed);
}

static void wispd_stop(struct wispd *d)
{
    /* First no new call, so that what drains in api_server_stop (streams being opened) is all
     * there is; then the API goes. */
    sprite_service_refuse_calls(d->svc);
    api_server_stop(d->api);
    idle_policy_free(d->idle);
    /* Nothing lost: every sprite with a VM goes to cold sleep (docs/operations.md). */
    sprite_service_sleep_all_cold(d->svc);
    sprite_service_free(d->svc);
    if (d->storage)
        wispd_commit_disks(d);
    vm_pool_free(d->pool);
    vm_template_free(d->tpl);
    storage_server_stop(d->storage);
    if (d->store)
        store_close(d->store); /* after the service: closing its databases ships them */
    g_free(d->meta_dir);
    g_free(d->run_dir);
    g_free(d->template_key);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
}

int main(int argc, char **argv)
{
    struct wispd d = {.lock_fd = -1};
    GError *err = NULL;

    if (!wispd_config_load(&d.cfg, &argc, &argv, &err)) {
        fprintf(stderr, "wispd: %s\n", err->message);
        g_clear_error(&err);
        wispd_config_clear(&d.cfg);
        return 2;
    }
    wisp_log_init();
    d.loop = g_main_loop_new(NULL, FALSE);
    guint term = g_unix_signal_add(SIGTERM, wispd_on_term, &d);
    guint intr = g_unix_signal_add(SIGINT, wispd_on_term, &d);
    guint hup = g_unix_signal_add(SIGHUP, wispd_on_hup, &d);
    int status = 0;
    double t0 = g_get_monotonic_time() / 1e6;
    if (!wispd_start(&d, &err)) {
        fprintf(stderr, "wispd: %s\n", err->message);
        g_clear_error(&err);
        status = 1;
    } else {
        /* One line on stderr whatever the log level: scripts wait for it. */
        fprintf(stderr, "wispd: ready on %s in %.1f s (pool %u, nbdkit %d)\n", d.cfg.listen,
                g_get_monotonic_time() / 1e6 - t0, d.cfg.pool_size, storage_server_pid(d.storage));
        g_main_loop_run(d.loop);
    }
    g_source_remove(term);
    g_source_remove(intr);
    g_source_remove(hup);
    wispd_stop(&d);
    g_main_loop_unref(d.loop);
    if (!status)
        fprintf(stderr, "wispd: stopped\n");
    wispd_config_clear(&d.cfg);
    return status;
}
