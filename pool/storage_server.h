/* storage_server.h: the storage server wispd runs and supervises, and its control socket.
 *
 * nbdkit -f -U STATE/run/nbd.sock PLUGIN store=URL cache=DIR meta=STATE/meta
 *        control=STATE/run/storage.ctl
 * in its own process, its output appended to STATE/run/nbdkit.log, killed with wispd
 * (PR_SET_PDEATHSIG).  When it exits while wispd runs, it is started again after a second.
 *
 * The control socket speaks one JSON object per line each way (docs/operations.md); each call
 * is a fresh connection, so any thread may call. */
#ifndef WISP_STORAGE_SERVER_H
#define WISP_STORAGE_SERVER_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>

struct storage_server_config {
    const char *plugin, *store_url, *cache_dir, *meta_dir, *run_dir;
    /* QEMU's user (runas.h), or NULL: after every start, the NBD socket is given to its group
     * (mode 0660), since QEMU attaches and reconnects to it after dropping root. */
    const char *socket_user;
};

typedef struct storage_server storage_server;

/* Starts nbdkit and waits (up to 30 s) until both sockets accept.  Supervision runs in the
 * thread-default main context of the caller. */
storage_server *storage_server_start(const struct storage_server_config *cfg, GError **error);
/* SIGTERM, then SIGKILL after 10 s; no restart afterwards.  NULL is allowed. */
void storage_server_stop(storage_server *s);
const char *storage_server_nbd_socket(const storage_server *s);
const char *storage_server_control_socket(const storage_server *s);
/* How many times nbdkit was started again after it died. */
unsigned storage_server_restarts(const storage_server *s);
int storage_server_pid(const storage_server *s);

/* Sends {"op": op, members...} (request: an object node, or NULL for no other members; op is
 * added) and returns the answer object when it says ok.  Otherwise false with the server's
 * error in error (code: the errno it names when it does, else EIO). */
JsonObject *storage_control_call(const char *control_socket, const char *op, JsonObject *request,
                                 GError **error);

#endif
