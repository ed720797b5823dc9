/* qmp.h: a QMP client (QEMU Machine Protocol) over a unix socket, on GLib and json-glib.
 *
 * The client lives on one GMainContext (the caller's, or a private one) and never blocks it:
 * reads and writes are driven by fd sources, each command has its own timeout source, and
 * replies are matched to commands by QMP's "id" member, so a late reply after a timeout is
 * dropped instead of being taken for the next command's answer.
 *
 *   - qmp_client_connect() connects (retrying while QEMU has not created the socket yet), reads
 *     the greeting and negotiates capabilities.  It iterates the context until done.
 *   - qmp_client_execute_async() sends a command; the callback runs on the context exactly
 *     once, with the "return" member or an error.
 *   - qmp_client_execute() is the synchronous form: it iterates the context until the reply,
 *     the timeout or the end of the connection.  The caller must be able to acquire the
 *     context (it owns it, or it is the thread running it).
 *   - Events go to the handler if one is set, and are also kept in a bounded queue that
 *     qmp_client_wait_event() searches, so that an event that arrives before anyone waits for
 *     it is not lost.
 *   - When QEMU closes the socket or dies, every pending command fails with QMP_ERROR_CLOSED
 *     and the close handler runs once.
 *
 * Errors: a GError in the QMP_ERROR domain.  For QMP_ERROR_COMMAND the message is
 * "CLASS: DESC" as QEMU sent them, and qmp_client_last_error_class() gives the class alone.
 *
 * Callbacks may run synchronous commands (the client's read source is recursive), but must not
 * free the client.  Not thread-safe: use one client from the thread that runs its context. */
#ifndef WISP_QMP_H
#define WISP_QMP_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>

#define QMP_ERROR (qmp_error_quark())
GQuark qmp_error_quark(void);

enum qmp_error_code {
    QMP_ERROR_CONNECT,  /* the socket could not be reached in time */
    QMP_ERROR_PROTOCOL, /* QEMU sent something that is not QMP (bad JSON, no greeting...) */
    QMP_ERROR_COMMAND,  /* QEMU answered with an error: "CLASS: DESC" */
    QMP_ERROR_TIMEOUT,  /* no reply within the command's timeout */
    QMP_ERROR_CLOSED,   /* the connection ended (QEMU exited or closed it) */
    QMP_ERROR_IO,       /* a read or write failed */
};

typedef struct qmp_client qmp_client;

/* Reply of an asynchronous command: exactly one of ret (the "return" member, borrowed for the
 * call) and error is set. */
typedef void (*qmp_reply_cb)(qmp_client *c, JsonNode *ret, const GError *error, void *opaque);
/* An event: name, its "data" (may be NULL) and QEMU's timestamp in microseconds. */
typedef void (*qmp_event_cb)(qmp_client *c, const char *event, JsonNode *data, gint64 ts_us,
                             void *opaque);
typedef void (*qmp_close_cb)(qmp_client *c, const GError *why, void *opaque);

/* Connects to the socket at path, retrying for up to timeout_ms while it does not exist or
 * refuses connections, then reads the greeting and sends qmp_capabilities.  ctx: the context
 * the client runs on (NULL: a private one, iterated by the synchronous calls). */
qmp_client *qmp_client_connect(const char *path, GMainContext *ctx, int timeout_ms, GError **error);
/* Closes the connection (pending commands fail with QMP_ERROR_CLOSED; their callbacks run
 * before this returns) and frees the client. */
void qmp_client_free(qmp_client *c);

/* Sends a command; args: NULL or a JSON object (the client takes a reference).  timeout_ms:
 * after it, cb gets QMP_ERROR_TIMEOUT. */
void qmp_client_execute_async(qmp_client *c, const char *command, JsonNode *args, int timeout_ms,
                              qmp_reply_cb cb, void *opaque);
/* Synchronous: the "return" member (a new reference; json_node_unref it), or NULL with error. */
JsonNode *qmp_client_execute(qmp_client *c, const char *command, JsonNode *args, int timeout_ms,
                             GError **error);
/* Builds the arguments from a JSON text such as "{\"node-name\": \"ph0\"}" (printf-style), then
 * executes.  A convenience for fixed-shape commands. */
JsonNode *qmp_client_executef(qmp_client *c, int timeout_ms, GError **error, const char *command,
                              const char *args_fmt, ...) __attribute__((format(printf, 5, 6)));
/* Passes an open file descriptor to QEMU (SCM_RIGHTS with "getfd", fdname=name), for
 * migrate uri=fd:NAME and the like. */
bool qmp_client_send_fd(qmp_client *c, int fd, const char *name, int timeout_ms, GError **error);

void qmp_client_set_event_handler(qmp_client *c, qmp_event_cb cb, void *opaque);
void qmp_client_set_close_handler(qmp_client *c, qmp_close_cb cb, void *opaque);
/* Waits for an event named `event` (taking the oldest queued one first), iterating the
 * context.  Returns its "data" (a new reference, or a JSON null node when it had none), or
 * NULL with error on timeout or close. */
JsonNode *qmp_client_wait_event(qmp_client *c, const char *event, int timeout_ms, GError **error);

bool qmp_client_is_closed(const qmp_client *c);
/* The error class of the last QMP_ERROR_COMMAND ("GenericError", "DeviceNotFound"...), or
 * NULL.  Valid until the next command completes. */
const char *qmp_client_last_error_class(const qmp_client *c);
/* QEMU's version from the greeting, e.g. "7.2.19". */
const char *qmp_client_qemu_version(const qmp_client *c);

#endif
