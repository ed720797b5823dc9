/* storage_server.c: nbdkit with the Wisp plugin, supervised; its control socket (see the .h). */
#include "storage_server.h"

#include "runas.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define SS_LOG "storage"

struct storage_server {
    char *plugin, *store_url, *cache_dir, *meta_dir, *run_dir, *socket_user;
    char *nbd_sock, *ctl_sock, *log_path;
    GPid pid; /* 0: not running */
    guint watch, restart_timer;
    bool stopping;
    unsigned restarts;
};

static void storage_server_child_setup(gpointer unused)
{
    /* Dies with wispd (the main thread forks it, and lives as long as wispd). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0);
}

static bool storage_server_socket_accepts(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0)
        return false;
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    ok = connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    close(fd);
    return ok;
}

static void storage_server_exited(GPid pid, gint status, gpointer opaque);

static bool storage_server_spawn(storage_server *s, GError **error)
{
    g_autofree char *store = g_strdup_printf("store=%s", s->store_url);
    g_autofree char *cache = g_strdup_printf("cache=%s", s->cache_dir);
    g_autofree char *meta = g_strdup_printf("meta=%s", s->meta_dir);
    g_autofree char *control = g_strdup_printf("control=%s", s->ctl_sock);
    const char *argv[] = {"nbdkit", "-f",  "-U", s->nbd_sock, s->plugin,
                          store,    cache, meta, control,     NULL};
    g_auto(GStrv) env = g_get_environ();
    /* A sanitizer build's plugin needs its runtime in the uninstrumented nbdkit. */
    const char *preload = g_getenv("WISP_NBDKIT_PRELOAD");
    if (preload && *preload) {
        env = g_environ_setenv(env, "LD_PRELOAD", preload, TRUE);
        env = g_environ_setenv(env, "ASAN_OPTIONS", "detect_leaks=0", TRUE);
    }
    int log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "open %s: %s", s->log_path,
                    g_strerror(errno));
        return false;
    }
    unlink(s->nbd_sock);
    unlink(s->ctl_sock);
    bool ok = g_spawn_async_with_fds(
        NULL, (char **)argv, env, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD,
        storage_server_child_setup, NULL, &s->pid, -1, log_fd, log_fd, error);
    close(log_fd);
    if (!ok)
        return false;
    s->watch = g_child_watch_add(s->pid, storage_server_exited, s);
    for (int i = 0; i < 300; i++) {
        if (storage_server_socket_accepts(s->nbd_sock) &&
            storage_server_socket_accepts(s->ctl_sock)) {
            log_info(SS_LOG, "nbdkit %d serving %s (control %s)", (int)s->pid, s->nbd_sock,
                     s->ctl_sock);
            if (!s->socket_user || vm_runas_grant_socket(s->nbd_sock, s->socket_user, error))
                return true;
            /* A server QEMU cannot reach is no server: stop it, so that a restart tries again. */
            g_source_remove(s->watch);
            s->watch = 0;
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            g_spawn_close_pid(s->pid);
            s->pid = 0;
            return false;
        }
        if (waitpid(s->pid, NULL, WNOHANG) != 0)
            break;
        g_usleep(100 * 1000);
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "nbdkit did not start serving %s within 30 s (see %s)", s->nbd_sock, s->log_path);
    return false;
}

static gboolean storage_server_restart(gpointer opaque)
{
    storage_server *s = opaque;
    GError *err = NULL;

    s->restart_timer = 0;
    if (s->stopping)
        return G_SOURCE_REMOVE;
    s->restarts++;
    if (!storage_server_spawn(s, &err)) {
        log_error(SS_LOG, "restart of nbdkit failed: %s; trying again in 1 s", err->message);
        g_clear_error(&err);
        if (s->pid == 0)
            s->restart_timer = g_timeout_add_seconds(1, storage_server_restart, s);
    }
    return G_SOURCE_REMOVE;
}

static void storage_server_exited(GPid pid, gint status, gpointer opaque)
{
    storage_server *s = opaque;

    g_spawn_close_pid(pid);
    s->watch = 0;
    s->pid = 0;
    if (s->stopping)
        return;
    log_error(SS_LOG, "nbdkit %d exited (status 0x%x); starting it again in 1 s (log: %s)",
              (int)pid, status, s->log_path);
    s->restart_timer = g_timeout_add_seconds(1, storage_server_restart, s);
}

storage_server *storage_server_start(const struct storage_server_config *cfg, GError **error)
{
    storage_server *s = g_new0(storage_server, 1);

    s->plugin = g_strdup(cfg->plugin);
    s->store_url = g_strdup(cfg->store_url);
    s->cache_dir = g_strdup(cfg->cache_dir);
    s->meta_dir = g_strdup(cfg->meta_dir);
    s->run_dir = g_strdup(cfg->run_dir);
    s->socket_user = g_strdup(cfg->socket_user);
    s->nbd_sock = g_build_filename(cfg->run_dir, "nbd.sock", NULL);
    s->ctl_sock = g_build_filename(cfg->run_dir, "storage.ctl", NULL);
    s->log_path = g_build_filename(cfg->run_dir, "nbdkit.log", NULL);
    const char *dirs[] = {s->cache_dir, s->meta_dir, s->run_dir};
    for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++)
        if (g_mkdir_with_parents(dirs[i], 0700) < 0) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "mkdir %s: %s", dirs[i],
                        g_strerror(errno));
            storage_server_stop(s);
            return NULL;
        }
    if (!storage_server_spawn(s, error)) {
        storage_server_stop(s);
        return NULL;
    }
    return s;
}

void storage_server_stop(storage_server *s)
{
    if (!s)
        return;
    s->stopping = true;
    if (s->restart_timer)
        g_source_remove(s->restart_timer);
    if (s->watch)
        g_source_remove(s->watch);
    if (s->pid > 0) {
        int status;
        kill(s->pid, SIGTERM);
        for (int i = 0; i < 100 && waitpid(s->pid, &status, WNOHANG) == 0; i++)
            g_usleep(100 * 1000);
        if (waitpid(s->pid, &status, WNOHANG) == 0) {
            log_warn(SS_LOG, "nbdkit %d did not stop on SIGTERM in 10 s: SIGKILL", (int)s->pid);
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
        }
        g_spawn_close_pid(s->pid);
    }
    if (s->nbd_sock)
        unlink(s->nbd_sock);
    if (s->ctl_sock)
        unlink(s->ctl_sock);
    g_free(s->plugin);
    g_free(s->store_url);
    g_free(s->cache_dir);
    g_free(s->meta_dir);
    g_free(s->run_dir);
    g_free(s->socket_user);
    g_free(s->nbd_sock);
    g_free(s->ctl_sock);
    g_free(s->log_path);
    g_free(s);
}

const char *storage_server_nbd_socket(const storage_server *s)
{
    return s->nbd_sock;
}
const char *storage_server_control_socket(const storage_server *s)
{
    return s->ctl_sock;
}
unsigned storage_server_restarts(const storage_server *s)
{
    return s->restarts;
}
int storage_server_pid(const storage_server *s)
{
    return (int)s->pid;
}

/* One request line out, one answer line back, on a fresh connection with a 120 s timeout. */
static char *storage_control_exchange(const char *path, const char *line, GError **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = 120};
    GString *answer = g_string_new(NULL);
    char buf[4096];
    int fd;

    if (strlen(path) >= sizeof addr.sun_path) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FILENAME_TOO_LONG, "path too long: %s", path);
        goto fail;
    }
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "socket: %s",
                    g_strerror(errno));
        goto fail;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "the storage server's control socket %s: %s", path, g_strerror(errno));
        close(fd);
        goto fail;
    }
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "write %s: %s", path,
                    g_strerror(errno));
        close(fd);
        goto fail;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        g_string_append_len(answer, buf, n);
        if (memchr(buf, '\n', (size_t)n))
            break;
    }
    close(fd);
    return g_string_free(answer, FALSE);
fail:
    g_string_free(answer, TRUE);
    return NULL;
}

JsonObject *storage_control_call(const char *control_socket, const char *op, JsonObject *request,
                                 GError **error)
{
    JsonObject *req = request ? json_object_ref(request) : json_object_new();
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);
    JsonObject *result = NULL;

    json_object_set_string_member(req, "op", op);
    json_node_take_object(node, req);
    g_autofree char *line = json_to_string(node, FALSE);
    json_node_unref(node);
    g_autofree char *answer = storage_control_exchange(control_socket, line, error);
    if (!answer)
        return NULL;
    g_autoptr(JsonParser) parser = json_parser_new();
    if (!*answer || !json_parser_load_from_data(parser, answer, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "%s: the storage server sent no valid answer", op);
        return NULL;
    }
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    if (!json_object_get_boolean_member_with_default(o, "ok", FALSE)) {
        gint64 code = json_object_get_int_member_with_default(o, "errno", EIO);
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno((int)code), "%s: %s", op,
                    json_object_get_string_member_with_default(o, "error", "failed"));
        return NULL;
    }
    result = json_object_ref(o);
    return result;
}
