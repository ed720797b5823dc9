/* qmp.c: the QMP client (see qmp.h).
 *
 * Data flow: commands are serialised into an output queue (one message per command, with the
 * file descriptor that rides along for getfd); an fd source writes the queue out as the socket
 * accepts it.  Another fd source reads into a line buffer; each complete line is one JSON
 * object: the greeting, an event, or a reply carrying the "id" we gave the command. */
#include "qmp.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define QMP_LOG               "qmp"
#define QMP_MAX_LINE          (16u << 20) /* a longer line is not QMP: drop the connection */
#define QMP_MAX_QUEUED_EVENTS 256
#define QMP_CONNECT_RETRY_US  5000

G_DEFINE_QUARK(wisp - qmp - error - quark, qmp_error)

struct qmp_out {
    char *data;
    size_t len, off;
    int fd; /* -1, or sent with the first byte of data (SCM_RIGHTS) */
};

struct qmp_pending {
    qmp_client *c;
    gint64 id;
    char *command;
    qmp_reply_cb cb;
    void *opaque;
    GSource *timeout;
};

struct qmp_event {
    char *name;
    JsonNode *data;
    gint64 ts_us;
};

struct qmp_client {
    GMainContext *ctx;
    int fd;
    GSource *in_source, *out_source;
    GString *in;
    GQueue out;          /* struct qmp_out */
    GHashTable *pending; /* id -> struct qmp_pending */
    gint64 next_id;
    GQueue events; /* struct qmp_event, oldest first */
    qmp_event_cb event_cb;
    void *event_opaque;
    qmp_close_cb close_cb;
    void *close_opaque;
    bool greeted, closed;
    char *close_reason; /* why the connection ended, for later errors */
    char *version;
    char *last_error_class;
};

static void qmp_out_free(struct qmp_out *o)
{
    if (o->fd >= 0)
        close(o->fd);
    g_free(o->data);
    g_free(o);
}

static void qmp_event_free(struct qmp_event *e)
{
    g_free(e->name);
    if (e->data)
        json_node_unref(e->data);
    g_free(e);
}

static void qmp_pending_free(struct qmp_pending *p)
{
    if (p->timeout) {
        g_source_destroy(p->timeout);
        g_source_unref(p->timeout);
    }
    g_free(p->command);
    g_free(p);
}

/* Removes the command from the table and runs its callback once. */
static void qmp_pending_complete(qmp_client *c, gint64 id, JsonNode *ret, const GError *error)
{
    struct qmp_pending *p = g_hash_table_lookup(c->pending, &id);

    if (!p)
        return;
    g_hash_table_steal(c->pending, &id);
    p->cb(c, ret, error, p->opaque);
    qmp_pending_free(p);
}

static void qmp_close(qmp_client *c, GError *why)
{
    GList *ids;

    if (c->closed) {
        g_error_free(why);
        return;
    }
    c->closed = true;
    c->close_reason = g_strdup(why->message);
    log_debug(QMP_LOG, "connection closed: %s", why->message);
    if (c->in_source) {
        g_source_destroy(c->in_source);
        g_source_unref(c->in_source);
        c->in_source = NULL;
    }
    if (c->out_source) {
        g_source_destroy(c->out_source);
        g_source_unref(c->out_source);
        c->out_source = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    g_queue_clear_full(&c->out, (GDestroyNotify)qmp_out_free);
    ids = g_hash_table_get_keys(c->pending);
    for (GList *l = ids; l; l = l->next) {
        gint64 id = *(gint64 *)l->data;
        qmp_pending_complete(c, id, NULL, why);
    }
    g_list_free(ids);
    if (c->close_cb)
        c->close_cb(c, why, c->close_opaque);
    g_error_free(why);
}

/* ---- reading ------------------------------------------------------------------------------- */

static void qmp_handle_reply(qmp_client *c, JsonObject *obj)
{
    JsonNode *idn = json_object_get_member(obj, "id");
    GError *err = NULL;
    gint64 id;

    if (!idn || json_node_get_value_type(idn) != G_TYPE_INT64) {
        /* Without our id it cannot be matched; QEMU sends none only for a command we did
         * not send (or a parse error of ours, which would be a bug). */
        log_warn(QMP_LOG, "reply without a usable id dropped");
        return;
    }
    id = json_node_get_int(idn);
    if (!g_hash_table_contains(c->pending, &id)) {
        log_debug(QMP_LOG, "late reply to command %" G_GINT64_FORMAT " dropped", id);
        return;
    }
    if (json_object_has_member(obj, "return")) {
        qmp_pending_complete(c, id, json_object_get_member(obj, "return"), NULL);
        return;
    }
    JsonObject *e = json_object_get_object_member(obj, "error");
    const char *cls = e && json_object_has_member(e, "class")
                          ? json_object_get_string_member(e, "class")
                          : "GenericError";
    const char *desc = e && json_object_has_member(e, "desc")
                           ? json_object_get_string_member(e, "desc")
                           : "(no description)";
    g_free(c->last_error_class);
    c->last_error_class = g_strdup(cls ? cls : "GenericError");
    struct qmp_pending *p = g_hash_table_lookup(c->pending, &id);
    err = g_error_new(QMP_ERROR, QMP_ERROR_COMMAND, "%s: %s: %s", p->command, c->last_error_class,
                      desc ? desc : "");
    qmp_pending_complete(c, id, NULL, err);
    g_error_free(err);
}

static void qmp_handle_event(qmp_client *c, JsonObject *obj)
{
    struct qmp_event *e = g_new0(struct qmp_event, 1);
    JsonObject *ts = json_object_has_member(obj, "timestamp")
                         ? json_object_get_object_member(obj, "timestamp")
                         : NULL;

    e->name = g_strdup(json_object_get_string_member(obj, "event"));
    if (!e->name) {
        qmp_event_free(e);
        log_warn(QMP_LOG, "event without a name dropped");
        return;
    }
    if (json_object_has_member(obj, "data"))
        e->data = json_node_copy(json_object_get_member(obj, "data"));
    if (ts)
        e->ts_us = json_object_get_int_member_with_default(ts, "seconds", 0) * G_USEC_PER_SEC +
                   json_object_get_int_member_with_default(ts, "microseconds", 0);
    log_debug(QMP_LOG, "event %s", e->name);
    if (c->event_cb)
        c->event_cb(c, e->name, e->data, e->ts_us, c->event_opaque);
    g_queue_push_tail(&c->events, e);
    while (g_queue_get_length(&c->events) > QMP_MAX_QUEUED_EVENTS)
        qmp_event_free(g_queue_pop_head(&c->events));
}

/* One line of input.  Returns false if the connection must be dropped. */
static bool qmp_handle_line(qmp_client *c, const char *line, size_t len)
{
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    GError *err = NULL;
    JsonNode *root;
    JsonObject *obj;

    if (!json_parser_load_from_data(parser, line, (gssize)len, &err)) {
        qmp_close(
            c, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL, "QEMU sent bad JSON: %s", err->message));
        g_error_free(err);
        return false;
    }
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        qmp_close(c, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                 "QEMU sent a JSON value that is not an object"));
        return false;
    }
    obj = json_node_get_object(root);
    if (json_object_has_member(obj, "QMP")) {
        JsonObject *q = json_object_get_object_member(obj, "QMP");
        JsonObject *v = q && json_object_has_member(q, "version")
                            ? json_object_get_object_member(q, "version")
                            : NULL;
        JsonObject *qv = v && json_object_has_member(v, "qemu")
                             ? json_object_get_object_member(v, "qemu")
                             : NULL;
        if (qv)
            c->version =
                g_strdup_printf("%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT,
                                json_object_get_int_member_with_default(qv, "major", 0),
                                json_object_get_int_member_with_default(qv, "minor", 0),
                                json_object_get_int_member_with_default(qv, "micro", 0));
        c->greeted = true;
    } else if (json_object_has_member(obj, "event")) {
        qmp_handle_event(c, obj);
    } else if (json_object_has_member(obj, "return") || json_object_has_member(obj, "error")) {
        qmp_handle_reply(c, obj);
    } else {
        log_warn(QMP_LOG, "unexpected QMP message dropped: %.*s", (int)MIN(len, 200), line);
    }
    return true;
}

static gboolean qmp_on_readable(int fd, GIOCondition cond, void *opaque)
{
    qmp_client *c = opaque;
    char buf[65536];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            /* A reset is how a killed QEMU's socket usually ends: that is a close. */
            qmp_close(c,
                      g_error_new(QMP_ERROR, errno == ECONNRESET ? QMP_ERROR_CLOSED : QMP_ERROR_IO,
                                  "read QMP socket: %s", g_strerror(errno)));
            return G_SOURCE_REMOVE;
        }
        if (n == 0) {
            qmp_close(c, g_error_new(QMP_ERROR, QMP_ERROR_CLOSED, "QEMU closed the QMP socket"));
            return G_SOURCE_REMOVE;
        }
        g_string_append_len(c->in, buf, n);
        char *nl;
        while (!c->closed && (nl = memchr(c->in->str, '\n', c->in->len))) {
            /* The line leaves the buffer before it is handled: a callback may run a
             * synchronous command, which reads (recursively) into the same buffer. */
            size_t len = (size_t)(nl - c->in->str);
            char *line = g_strndup(c->in->str, len);
            g_string_erase(c->in, 0, (gssize)len + 1);
            bool ok = strspn(line, " \t\r") >= len || qmp_handle_line(c, line, len);
            g_free(line);
            if (!ok)
                return G_SOURCE_REMOVE;
        }
        if (c->closed)
            return G_SOURCE_REMOVE;
        if (c->in->len > QMP_MAX_LINE) {
            qmp_close(c, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL, "QMP line longer than %u bytes",
                                     QMP_MAX_LINE));
            return G_SOURCE_REMOVE;
        }
    }
    return G_SOURCE_CONTINUE;
}

/* ---- writing ------------------------------------------------------------------------------- */

static gboolean qmp_on_writable(int fd, GIOCondition cond, void *opaque);

/* Writes what the socket takes.  Returns false after closing the connection on an error. */
static bool qmp_flush(qmp_client *c)
{
    struct qmp_out *o;

    while ((o = g_queue_peek_head(&c->out))) {
        struct iovec iov = {.iov_base = o->data + o->off, .iov_len = o->len - o->off};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        char control[CMSG_SPACE(sizeof(int))] = {0};
        ssize_t n;

        if (o->fd >= 0 && o->off == 0) {
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &o->fd, sizeof(int));
        }
        n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            bool gone = errno == EPIPE || errno == ECONNRESET;
            qmp_close(c, g_error_new(QMP_ERROR, gone ? QMP_ERROR_CLOSED : QMP_ERROR_IO,
                                     "write QMP socket: %s", g_strerror(errno)));
            return false;
        }
        if (o->fd >= 0) {
            close(o->fd); /* QEMU holds its own copy now */
            o->fd = -1;
        }
        o->off += (size_t)n;
        if (o->off == o->len)
            qmp_out_free(g_queue_pop_head(&c->out));
    }
    if (!g_queue_is_empty(&c->out) && !c->out_source) {
        c->out_source = g_unix_fd_source_new(c->fd, G_IO_OUT);
        g_source_set_callback(c->out_source, G_SOURCE_FUNC(qmp_on_writable), c, NULL);
        g_source_attach(c->out_source, c->ctx);
    }
    return true;
}

static gboolean qmp_on_writable(int fd, GIOCondition cond, void *opaque)
{
    qmp_client *c = opaque;

    g_source_unref(c->out_source);
    c->out_source = NULL; /* qmp_flush adds a new one if the queue is still not empty */
    qmp_flush(c);
    return G_SOURCE_REMOVE;
}

/* ---- commands ------------------------------------------------------------------------------ */

static gboolean qmp_on_timeout(void *opaque)
{
    struct qmp_pending *p = opaque;
    qmp_client *c = p->c;
    GError *err =
        g_error_new(QMP_ERROR, QMP_ERROR_TIMEOUT, "%s: no reply from QEMU in time", p->command);

    g_source_unref(p->timeout);
    p->timeout = NULL; /* it is being dispatched: qmp_pending_free must not destroy it */
    qmp_pending_complete(c, p->id, NULL, err);
    g_error_free(err);
    return G_SOURCE_REMOVE;
}

static void qmp_execute_with_fd(qmp_client *c, const char *command, JsonNode *args, int fd,
                                int timeout_ms, qmp_reply_cb cb, void *opaque)
{
    struct qmp_pending *p = g_new0(struct qmp_pending, 1);
    g_autoptr(JsonBuilder) b = json_builder_new();
    struct qmp_out *o;

    p->c = c;
    p->id = c->next_id++;
    p->command = g_strdup(command);
    p->cb = cb;
    p->opaque = opaque;
    if (c->closed) {
        GError *err =
            g_error_new(QMP_ERROR, QMP_ERROR_CLOSED, "%s: the QMP connection is closed (%s)",
                        command, c->close_reason ? c->close_reason : "?");
        if (fd >= 0)
            close(fd);
        cb(c, NULL, err, opaque);
        g_error_free(err);
        qmp_pending_free(p);
        return;
    }
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "execute");
    json_builder_add_string_value(b, command);
    if (args) {
        json_builder_set_member_name(b, "arguments");
        json_builder_add_value(b, json_node_ref(args));
    }
    json_builder_set_member_name(b, "id");
    json_builder_add_int_value(b, p->id);
    json_builder_end_object(b);
    JsonNode *root = json_builder_get_root(b);
    o = g_new0(struct qmp_out, 1);
    char *text = json_to_string(root, FALSE);
    json_node_unref(root);
    o->data = g_strconcat(text, "\n", NULL);
    g_free(text);
    o->len = strlen(o->data);
    o->fd = fd;
    log_debug(QMP_LOG, "-> %.*s", (int)MIN(o->len - 1, 300), o->data);

    p->timeout = g_timeout_source_new((guint)MAX(timeout_ms, 1));
    g_source_set_callback(p->timeout, qmp_on_timeout, p, NULL);
    g_source_attach(p->timeout, c->ctx);
    g_hash_table_insert(c->pending, &p->id, p);
    g_queue_push_tail(&c->out, o);
    if (!c->out_source)
        qmp_flush(c);
}

void qmp_client_execute_async(qmp_client *c, const char *command, JsonNode *args, int timeout_ms,
                              qmp_reply_cb cb, void *opaque)
{
    qmp_execute_with_fd(c, command, args, -1, timeout_ms, cb, opaque);
}

struct qmp_sync {
    bool done;
    JsonNode *ret;
    GError *error;
};

static void qmp_sync_reply(qmp_client *c, JsonNode *ret, const GError *error, void *opaque)
{
    struct qmp_sync *s = opaque;

    s->done = true;
    if (ret)
        s->ret = json_node_ref(ret);
    else
        s->error = g_error_copy(error);
}

/* Iterates the context until *done. */
static bool qmp_iterate_until(qmp_client *c, const bool *done, GError **error)
{
    if (!g_main_context_acquire(c->ctx)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_IO,
                    "a synchronous QMP call from a thread that does not own the context");
        return false;
    }
    while (!*done)
        g_main_context_iteration(c->ctx, TRUE);
    g_main_context_release(c->ctx);
    return true;
}

static JsonNode *qmp_execute_sync(qmp_client *c, const char *command, JsonNode *args, int fd,
                                  int timeout_ms, GError **error)
{
    struct qmp_sync s = {0};

    qmp_execute_with_fd(c, command, args, fd, timeout_ms, qmp_sync_reply, &s);
    if (!qmp_iterate_until(c, &s.done, error))
        return NULL; /* cannot happen for a private context; s stays pending and leaks */
    if (s.error) {
        g_propagate_error(error, s.error);
        return NULL;
    }
    return s.ret;
}

JsonNode *qmp_client_execute(qmp_client *c, const char *command, JsonNode *args, int timeout_ms,
                             GError **error)
{
    return qmp_execute_sync(c, command, args, -1, timeout_ms, error);
}

JsonNode *qmp_client_executef(qmp_client *c, int timeout_ms, GError **error, const char *command,
                              const char *args_fmt, ...)
{
    va_list ap;
    char *text;
    JsonNode *args = NULL, *ret;

    if (args_fmt) {
        va_start(ap, args_fmt);
        text = g_strdup_vprintf(args_fmt, ap);
        va_end(ap);
        args = json_from_string(text, error);
        if (!args) {
            g_prefix_error(error, "%s: arguments %s: ", command, text);
            g_free(text);
            return NULL;
        }
        g_free(text);
    }
    ret = qmp_client_execute(c, command, args, timeout_ms, error);
    if (args)
        json_node_unref(args);
    return ret;
}

bool qmp_client_send_fd(qmp_client *c, int fd, const char *name, int timeout_ms, GError **error)
{
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    JsonNode *args, *ret;

    if (copy < 0) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_IO, "dup fd for getfd: %s", g_strerror(errno));
        return false;
    }
    args = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(args, json_object_new());
    json_object_set_string_member(json_node_get_object(args), "fdname", name);
    ret = qmp_execute_sync(c, "getfd", args, copy, timeout_ms, error);
    json_node_unref(args);
    if (!ret)
        return false;
    json_node_unref(ret);
    return true;
}

/* ---- events -------------------------------------------------------------------------------- */

void qmp_client_set_event_handler(qmp_client *c, qmp_event_cb cb, void *opaque)
{
    c->event_cb = cb;
    c->event_opaque = opaque;
}

void qmp_client_set_close_handler(qmp_client *c, qmp_close_cb cb, void *opaque)
{
    c->close_cb = cb;
    c->close_opaque = opaque;
}

static JsonNode *qmp_take_event(qmp_client *c, const char *event)
{
    for (GList *l = c->events.head; l; l = l->next) {
        struct qmp_event *e = l->data;
        if (strcmp(e->name, event) == 0) {
            JsonNode *data = e->data ? json_node_ref(e->data) : json_node_new(JSON_NODE_NULL);
            g_queue_delete_link(&c->events, l);
            qmp_event_free(e);
            return data;
        }
    }
    return NULL;
}

static gboolean qmp_set_flag(void *opaque)
{
    *(bool *)opaque = true;
    return G_SOURCE_REMOVE;
}

JsonNode *qmp_client_wait_event(qmp_client *c, const char *event, int timeout_ms, GError **error)
{
    bool expired = false;
    GSource *timer;
    JsonNode *data;

    if ((data = qmp_take_event(c, event)))
        return data;
    if (!g_main_context_acquire(c->ctx)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_IO,
                    "waiting for a QMP event from a thread that does not own the context");
        return NULL;
    }
    timer = g_timeout_source_new((guint)MAX(timeout_ms, 1));
    g_source_set_callback(timer, qmp_set_flag, &expired, NULL);
    g_source_attach(timer, c->ctx);
    while (!(data = qmp_take_event(c, event)) && !expired && !c->closed)
        g_main_context_iteration(c->ctx, TRUE);
    g_source_destroy(timer);
    g_source_unref(timer);
    g_main_context_release(c->ctx);
    if (!data)
        g_set_error(error, QMP_ERROR, c->closed ? QMP_ERROR_CLOSED : QMP_ERROR_TIMEOUT,
                    "no %s event from QEMU%s", event,
                    c->closed ? ": the QMP connection closed" : " in time");
    return data;
}

/* ---- connection ---------------------------------------------------------------------------- */

/* Connects, retrying while QEMU has not created or is not yet listening on the socket. */
static int qmp_connect_socket(const char *path, int timeout_ms, GError **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    int fd, saved;

    if (strlen(path) >= sizeof addr.sun_path) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_CONNECT, "QMP socket path too long: %s", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_CONNECT, "socket: %s", g_strerror(errno));
            return -1;
        }
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            break;
        saved = errno;
        close(fd);
        if ((saved != ENOENT && saved != ECONNREFUSED) || g_get_monotonic_time() > deadline) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_CONNECT, "connect %s: %s", path,
                        g_strerror(saved));
            return -1;
        }
        g_usleep(QMP_CONNECT_RETRY_US);
    }
    if (!g_unix_set_fd_nonblocking(fd, TRUE, NULL)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_CONNECT, "O_NONBLOCK: %s", g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static bool qmp_wait_greeting(qmp_client *c, int timeout_ms, GError **error)
{
    bool expired = false;
    GSource *timer = g_timeout_source_new((guint)MAX(timeout_ms, 1));

    if (!g_main_context_acquire(c->ctx)) {
        g_source_unref(timer);
        g_set_error(error, QMP_ERROR, QMP_ERROR_IO, "QMP connect outside the context's thread");
        return false;
    }
    g_source_set_callback(timer, qmp_set_flag, &expired, NULL);
    g_source_attach(timer, c->ctx);
    while (!c->greeted && !c->closed && !expired)
        g_main_context_iteration(c->ctx, TRUE);
    g_source_destroy(timer);
    g_source_unref(timer);
    g_main_context_release(c->ctx);
    if (!c->greeted) {
        g_set_error(error, QMP_ERROR, c->closed ? QMP_ERROR_CLOSED : QMP_ERROR_TIMEOUT,
                    "no QMP greeting from QEMU%s%s", c->closed ? ": " : " in time",
                    c->closed ? c->close_reason : "");
        return false;
    }
    return true;
}

qmp_client *qmp_client_connect(const char *path, GMainContext *ctx, int timeout_ms, GError **error)
{
    gint64 start = g_get_monotonic_time();
    int fd = qmp_connect_socket(path, timeout_ms, error);
    qmp_client *c;
    JsonNode *ret;

    if (fd < 0)
        return NULL;
    c = g_new0(qmp_client, 1);
    c->ctx = ctx ? g_main_context_ref(ctx) : g_main_context_new();
    c->fd = fd;
    c->in = g_string_new(NULL);
    g_queue_init(&c->out);
    g_queue_init(&c->events);
    c->pending = g_hash_table_new(g_int64_hash, g_int64_equal);
    c->next_id = 1;
    c->in_source = g_unix_fd_source_new(fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
    /* Replies and event callbacks may run synchronous commands, which need this source
     * dispatched again while it is still in its callback. */
    g_source_set_can_recurse(c->in_source, TRUE);
    g_source_set_callback(c->in_source, G_SOURCE_FUNC(qmp_on_readable), c, NULL);
    g_source_attach(c->in_source, c->ctx);

    int left_ms = timeout_ms - (int)((g_get_monotonic_time() - start) / 1000);
    if (!qmp_wait_greeting(c, MAX(left_ms, 1), error))
        goto fail;
    left_ms = timeout_ms - (int)((g_get_monotonic_time() - start) / 1000);
    ret = qmp_client_execute(c, "qmp_capabilities", NULL, MAX(left_ms, 1), error);
    if (!ret)
        goto fail;
    json_node_unref(ret);
    log_debug(QMP_LOG, "connected to %s (QEMU %s) in %.1f ms", path, c->version ? c->version : "?",
              (double)(g_get_monotonic_time() - start) / 1000.0);
    return c;

fail:
    g_prefix_error(error, "QMP %s: ", path);
    qmp_client_free(c);
    return NULL;
}

void qmp_client_free(qmp_client *c)
{
    if (!c)
        return;
    qmp_close(c, g_error_new(QMP_ERROR, QMP_ERROR_CLOSED, "the QMP client was closed"));
    g_hash_table_destroy(c->pending);
    g_queue_clear_full(&c->events, (GDestroyNotify)qmp_event_free);
    g_string_free(c->in, TRUE);
    g_main_context_unref(c->ctx);
    g_free(c->version);
    g_free(c->close_reason);
    g_free(c->last_error_class);
    g_free(c);
}

bool qmp_client_is_closed(const qmp_client *c)
{
    return c->closed;
}

const char *qmp_client_last_error_class(const qmp_client *c)
{
    return c->last_error_class;
}

const char *qmp_client_qemu_version(const qmp_client *c)
{
    return c->version;
}
