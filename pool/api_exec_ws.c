/* api_exec_ws.c: the streaming exec over a WebSocket (api_exec_ws.h, docs/api.md).
 *
 * A stream's life, and which thread does what:
 *
 *   route      main loop   checks the query and the handshake, pauses the message
 *   open       worker      sprite_service_stream_open: wakes the sprite, starts the process
 *   upgrade    main loop   101, then the connection is stolen and made a WebSocket
 *   pump       own thread  reads output within the client's credit and posts it; on the
 *                          process's exit, or when the client went, or the sprite is being
 *                          deleted: kills what still runs, stops the input thread, closes the
 *                          service's stream, posts the last message, and is done
 *   input      own thread  stdin, resize and signals, in arrival order of each kind
 *   flush      main loop   sends what the threads posted; after `done`, closes
 *
 * Everything the threads and the main loop share is under st->mu.  The WebSocket itself is
 * touched only in the main loop.  A stream is freed in the main loop once its pump is joined,
 * its WebSocket closed and no flush is pending.
 *
 * Lock order: the service may call ws_on_end under its own lock (sprite_service.h), so this
 * file never calls the service while holding st->mu. */
#include "api_exec_ws.h"

#include "api_server.h"
#include "log.h"

#include <errno.h>
#include <gio/gio.h>
#include <signal.h>
#include <string.h>

#define WS_LOG "exec-ws"

/* Signals queued from the client before the input thread sends them; more is a protocol
 * error (a client that floods them would otherwise grow the queue). */
#define WS_SIGNALS_MAX 16

struct api_exec_ws {
    sprite_service *svc;
    GMainContext *ctx;
    GList *streams; /* main loop only */
    bool stopping;  /* api_exec_ws_free has begun: no new stream, and opens end at once */
};

/* How long api_exec_ws_free waits for opens under way (a claim waits up to 60 s for a VM). */
#define WS_OPEN_DRAIN_S 70
/* ... and then how long for their answers to be written. */
#define WS_ANSWER_DRAIN_MS 200

struct ws_stream {
    api_exec_ws *owner;
    char *account, *name, *label; /* label: ACCOUNT/NAME for logs */
    char **argv, **env;
    char *cwd;
    bool tty, with_stdin;
    guint16 rows, cols;

    /* main loop only */
    SoupServerMessage *msg; /* until the upgrade or the failure */
    SoupWebsocketConnection *conn;
    bool conn_gone;            /* no WebSocket (never made, or closed) */
    bool joined;               /* the pump thread is joined */
    bool in_eof;               /* the client sent the end of stdin */
    bool opening;              /* the open runs in a worker */
    bool client_gone;          /* the message finished before the upgrade */
    sprite_stream *ss_pending; /* from open, until the pump takes it */

    GThread *pump, *input;

    GMutex mu;
    GCond cond;
    /* under mu */
    sprite_stream *ss;
    gint64 out_credit;  /* stdout+stderr bytes the client still takes */
    gint64 in_unacked;  /* stdin bytes received and not acknowledged */
    bool cancelled;     /* the client went, or wispd stops */
    bool ended;         /* the service ends the stream (delete, restore) */
    GByteArray *in_buf; /* stdin received, for the input thread */
    bool in_eof_queued, input_stop;
    bool resize_pending;
    guint16 resize_rows, resize_cols;
    GArray *signals; /* int */
    GQueue outq;     /* GBytes: channel byte + payload, for the main loop */
    bool flush_pending;
    GSource *flush_src; /* referenced while pending */
    bool done;          /* the pump posted its last message */
    gushort close_code;
};

/* ---- small helpers ------------------------------------------------------------------------- */

/* A message for the client: channel byte, then payload. */
static GBytes *ws_frame(guint8 channel, const void *data, size_t len)
{
    guint8 *p = g_malloc(len + 1);
    p[0] = channel;
    if (len)
        memcpy(p + 1, data, len);
    return g_bytes_new_take(p, len + 1);
}

static GBytes *ws_json_frame(guint8 channel, JsonBuilder *b)
{
    g_autoptr(JsonNode) n = json_builder_get_root(b);
    g_autofree char *text = json_to_string(n, FALSE);
    return ws_frame(channel, text, strlen(text));
}

static gboolean ws_flush(gpointer data);

/* Queues a message for the main loop (mu held). */
static void ws_post_locked(struct ws_stream *st, GBytes *frame)
{
    g_queue_push_tail(&st->outq, frame);
    if (!st->flush_pending) {
        /* Always through a source, never g_main_context_invoke: that runs the function right
         * here when no thread owns the context (at shutdown), and ws_flush belongs to the
         * main loop. */
        st->flush_pending = true;
        GSource *src = g_idle_source_new();
        g_source_set_callback(src, ws_flush, st, NULL);
        g_source_attach(src, st->owner->ctx);
        st->flush_src = src;
    }
}

static void ws_stream_free(struct ws_stream *st)
{
    g_free(st->account);
    g_free(st->name);
    g_free(st->label);
    g_strfreev(st->argv);
    g_strfreev(st->env);
    g_free(st->cwd);
    g_byte_array_unref(st->in_buf);
    g_array_unref(st->signals);
    g_queue_clear_full(&st->outq, (GDestroyNotify)g_bytes_unref);
    g_mutex_clear(&st->mu);
    g_cond_clear(&st->cond);
    g_free(st);
}

/* Frees the stream once nothing refers to it any more (main loop). */
static void ws_maybe_free(struct ws_stream *st)
{
    g_mutex_lock(&st->mu);
    bool busy = st->flush_pending || !st->done;
    g_mutex_unlock(&st->mu);
    if (busy || !st->joined || !st->conn_gone)
        return;
    st->owner->streams = g_list_remove(st->owner->streams, st);
    ws_stream_free(st);
}

/* ---- the service tells: the sprite is being deleted or restored ---------------------------- */

static void ws_on_end(void *opaque)
{
    struct ws_stream *st = opaque;

    g_mutex_lock(&st->mu);
    st->ended = true;
    g_cond_broadcast(&st->cond);
    g_mutex_unlock(&st->mu);
}

/* ---- input thread: stdin, resize, signals to the agent ------------------------------------- */

static gpointer ws_input_thread(gpointer data)
{
    struct ws_stream *st = data;
    agent_exec *e = sprite_stream_exec(st->ss);
    bool stdin_dead = false, eof_sent = false;
    GError *err = NULL;

    for (;;) {
        g_mutex_lock(&st->mu);
        while (!st->input_stop && !st->resize_pending && st->signals->len == 0 &&
               st->in_buf->len == 0 && !(st->in_eof_queued && !eof_sent))
            g_cond_wait(&st->cond, &st->mu);
        if (st->input_stop) {
            g_mutex_unlock(&st->mu);
            break;
        }
        bool resize = st->resize_pending;
        guint16 rows = st->resize_rows, cols = st->resize_cols;
        st->resize_pending = false;
        g_autoptr(GArray) sigs = st->signals;
        st->signals = g_array_new(FALSE, FALSE, sizeof(int));
        g_autoptr(GByteArray) in = st->in_buf;
        st->in_buf = g_byte_array_new();
        bool eof = st->in_eof_queued && !eof_sent;
        g_mutex_unlock(&st->mu);

        if (resize && !agent_exec_resize(e, rows, cols, &err)) {
            log_debug(WS_LOG, "%s: resize: %s", st->label, err->message);
            g_clear_error(&err);
        }
        for (guint i = 0; i < sigs->len; i++) {
            if (!agent_exec_signal(e, g_array_index(sigs, int, i), &err)) {
                log_debug(WS_LOG, "%s: signal: %s", st->label, err->message);
                g_clear_error(&err);
            }
        }
        if (in->len > 0) {
            /* A process that stopped reading or exited makes the rest go nowhere; the client
             * still gets its acks, so that it is never stuck on credit. */
            if (!stdin_dead && !agent_exec_write(e, in->data, in->len, G_MAXINT, &err)) {
                log_debug(WS_LOG, "%s: stdin: %s", st->label, err->message);
                g_clear_error(&err);
                stdin_dead = true;
            }
            g_autoptr(JsonBuilder) b = json_builder_new();
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "ack");
            json_builder_add_int_value(b, in->len);
            json_builder_end_object(b);
            g_mutex_lock(&st->mu);
            st->in_unacked -= in->len;
            ws_post_locked(st, ws_json_frame(API_EXEC_WS_CONTROL, b));
            g_mutex_unlock(&st->mu);
        }
        if (eof) {
            g_mutex_lock(&st->mu);
            bool more = st->in_buf->len > 0;
            g_mutex_unlock(&st->mu);
            if (!more) {
                eof_sent = true;
                if (!stdin_dead && !agent_exec_close_stdin(e, &err)) {
                    log_debug(WS_LOG, "%s: stdin close: %s", st->label, err->message);
                    g_clear_error(&err);
                }
            }
        }
    }
    return NULL;
}

/* ---- pump thread: output, exit, the end ---------------------------------------------------- */

/* Kills what still runs of the process: a tty's shell gets SIGHUP (as when a terminal goes),
 * then SIGKILL if it is still there; anything else SIGKILL.  The signal goes to the process
 * group (wisp-init's setsid), so a pipeline's members go too. */
static void ws_kill(struct ws_stream *st, agent_exec *e)
{
    int kind, code;
    GError *err = NULL;

    if (st->tty) {
        if (agent_exec_signal(e, SIGHUP, NULL) && agent_exec_wait(e, 2000, &kind, &code, NULL))
            return;
    }
    if (!agent_exec_signal(e, SIGKILL, &err) || !agent_exec_wait(e, 10000, &kind, &code, &err)) {
        log_warn(WS_LOG, "%s: kill: %s", st->label, err ? err->message : "failed");
        g_clear_error(&err);
    }
}

static gpointer ws_pump_thread(gpointer data)
{
    struct ws_stream *st = data;
    agent_exec *e = sprite_stream_exec(st->ss);
    g_autofree guint8 *buf = g_malloc(API_EXEC_WS_CHUNK_MAX);
    g_autofree char *error_text = NULL;
    int exit_code = -1, exit_signal = 0;
    GError *err = NULL;

    for (;;) {
        g_mutex_lock(&st->mu);
        while (st->out_credit <= 0 && !st->cancelled && !st->ended)
            g_cond_wait(&st->cond, &st->mu);
        bool stop = st->cancelled || st->ended;
        size_t cap = (size_t)MIN(st->out_credit, API_EXEC_WS_CHUNK_MAX);
        g_mutex_unlock(&st->mu);
        if (stop)
            break;
        enum agent_stream_kind kind;
        /* A timeout is only the moment to look at the flags again. */
        ssize_t n = agent_exec_read(e, buf, cap, &kind, 500, &err);
        if (n < 0 && g_error_matches(err, AGENT_ERROR, AGENT_ERROR_TIMEOUT)) {
            g_clear_error(&err);
            continue;
        }
        if (n < 0) {
            error_text = g_strdup_printf("exec: %s", err->message);
            g_clear_error(&err);
            break;
        }
        if (n == 0) {
            int k, c;
            if (agent_exec_wait(e, 10000, &k, &c, &err)) {
                exit_code = agent_exec_status_code(k, c);
                exit_signal = k == WISP_EXIT_SIGNAL ? c : 0;
            } else {
                error_text = g_strdup_printf("exec: %s", err->message);
                g_clear_error(&err);
            }
            break;
        }
        g_mutex_lock(&st->mu);
        st->out_credit -= n;
        ws_post_locked(st, ws_frame(kind == AGENT_STDERR ? API_EXEC_WS_STDERR : API_EXEC_WS_STDOUT,
                                    buf, (size_t)n));
        g_mutex_unlock(&st->mu);
    }

    if (exit_code < 0)
        ws_kill(st, e);
    char *why = sprite_stream_ended(st->ss);
    if (why) {
        g_free(error_text);
        error_text = why;
        exit_code = -1;
    }
    g_mutex_lock(&st->mu);
    st->input_stop = true;
    g_cond_broadcast(&st->cond);
    g_mutex_unlock(&st->mu);
    if (st->input)
        g_thread_join(st->input);
    st->input = NULL;
    sprite_stream *ss = st->ss;
    g_mutex_lock(&st->mu);
    st->ss = NULL;
    g_mutex_unlock(&st->mu);
    sprite_service_stream_close(ss);

    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    if (exit_code >= 0) {
        json_builder_set_member_name(b, "exit_code");
        json_builder_add_int_value(b, exit_code);
        if (exit_signal) {
            json_builder_set_member_name(b, "signal");
            json_builder_add_int_value(b, exit_signal);
        }
    } else {
        json_builder_set_member_name(b, "error");
        json_builder_add_string_value(b, error_text ? error_text : "the client went away");
    }
    json_builder_end_object(b);
    g_mutex_lock(&st->mu);
    if (!st->cancelled)
        log_debug(WS_LOG, "%s: %s", st->label, error_text ? error_text : "exited");
    ws_post_locked(st, ws_json_frame(API_EXEC_WS_EXIT, b));
    st->close_code =
        exit_code >= 0 ? SOUP_WEBSOCKET_CLOSE_NORMAL : SOUP_WEBSOCKET_CLOSE_SERVER_ERROR;
    st->done = true;
    g_mutex_unlock(&st->mu);
    return NULL;
}

/* ---- main loop: the WebSocket --------------------------------------------------------------- */

static gboolean ws_flush(gpointer data)
{
    struct ws_stream *st = data;
    GQueue q = G_QUEUE_INIT;

    g_mutex_lock(&st->mu);
    q = st->outq;
    g_queue_init(&st->outq);
    st->flush_pending = false;
    g_clear_pointer(&st->flush_src, g_source_unref);
    bool done = st->done;
    gushort code = st->close_code;
    g_mutex_unlock(&st->mu);

    GBytes *frame;
    while ((frame = g_queue_pop_head(&q))) {
        if (st->conn && soup_websocket_connection_get_state(st->conn) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_send_message(st->conn, SOUP_WEBSOCKET_DATA_BINARY, frame);
        g_bytes_unref(frame);
    }
    if (done) {
        if (!st->joined) {
            g_thread_join(st->pump);
            st->pump = NULL;
            st->joined = true;
        }
        if (st->conn && soup_websocket_connection_get_state(st->conn) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_close(st->conn, code, NULL);
        ws_maybe_free(st);
    }
    return G_SOURCE_REMOVE;
}

/* Ends the stream from the client's side: the pump kills the process. */
static void ws_cancel(struct ws_stream *st)
{
    g_mutex_lock(&st->mu);
    st->cancelled = true;
    g_cond_broadcast(&st->cond);
    g_mutex_unlock(&st->mu);
}

static void ws_protocol_error(struct ws_stream *st, const char *why)
{
    log_info(WS_LOG, "%s: closing: %s", st->label, why);
    if (soup_websocket_connection_get_state(st->conn) == SOUP_WEBSOCKET_STATE_OPEN)
        soup_websocket_connection_close(st->conn, SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION, why);
    ws_cancel(st);
}

/* A control message from the client: one of {"ack":N}, {"resize":{...}}, {"signal":N}. */
static void ws_control(struct ws_stream *st, const char *text, size_t len)
{
    g_autoptr(JsonParser) p = json_parser_new();
    JsonNode *root;
    JsonObject *o;

    if (!json_parser_load_from_data(p, text, (gssize)len, NULL) ||
        !(root = json_parser_get_root(p)) || !JSON_NODE_HOLDS_OBJECT(root) ||
        json_object_get_size(o = json_node_get_object(root)) != 1) {
        ws_protocol_error(st, "a control message is one JSON object with one member");
        return;
    }
    JsonNode *v;
    if ((v = json_object_get_member(o, "ack"))) {
        gint64 n = JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_INT64
                       ? json_node_get_int(v)
                       : -1;
        if (n < 0 || n > API_EXEC_WS_WINDOW) {
            ws_protocol_error(st, "'ack' must be 0 to the window");
            return;
        }
        g_mutex_lock(&st->mu);
        st->out_credit = MIN(st->out_credit + n, API_EXEC_WS_WINDOW);
        g_cond_broadcast(&st->cond);
        g_mutex_unlock(&st->mu);
    } else if ((v = json_object_get_member(o, "resize"))) {
        JsonObject *r = JSON_NODE_HOLDS_OBJECT(v) ? json_node_get_object(v) : NULL;
        gint64 rows = r ? json_object_get_int_member_with_default(r, "rows", 0) : 0;
        gint64 cols = r ? json_object_get_int_member_with_default(r, "cols", 0) : 0;
        if (rows < 1 || rows > 65535 || cols < 1 || cols > 65535) {
            ws_protocol_error(st, "'resize' needs rows and cols of 1 to 65535");
            return;
        }
        g_mutex_lock(&st->mu);
        st->resize_pending = true;
        st->resize_rows = (guint16)rows;
        st->resize_cols = (guint16)cols;
        g_cond_broadcast(&st->cond);
        g_mutex_unlock(&st->mu);
    } else if ((v = json_object_get_member(o, "signal"))) {
        gint64 s = JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_INT64
                       ? json_node_get_int(v)
                       : 0;
        if (s < 1 || s > 64) {
            ws_protocol_error(st, "'signal' must be a signal number");
            return;
        }
        g_mutex_lock(&st->mu);
        bool full = st->signals->len >= WS_SIGNALS_MAX;
        if (!full) {
            int signo = (int)s;
            g_array_append_val(st->signals, signo);
            g_cond_broadcast(&st->cond);
        }
        g_mutex_unlock(&st->mu);
        if (full)
            ws_protocol_error(st, "too many signals queued");
    } else {
        ws_protocol_error(st, "unknown control message");
    }
}

static void ws_on_message(SoupWebsocketConnection *conn, gint type, GBytes *message, gpointer data)
{
    struct ws_stream *st = data;
    gsize len;
    const guint8 *p = g_bytes_get_data(message, &len);

    (void)conn;
    if (type != SOUP_WEBSOCKET_DATA_BINARY || len < 1) {
        ws_protocol_error(st, "messages are binary, a channel byte first");
        return;
    }
    switch (p[0]) {
    case API_EXEC_WS_STDIN:
        if (!st->with_stdin || st->in_eof) {
            ws_protocol_error(st, st->in_eof ? "stdin after its end" : "no stdin (stdin=1)");
            return;
        }
        if (len == 1) {
            st->in_eof = true;
            g_mutex_lock(&st->mu);
            st->in_eof_queued = true;
            g_cond_broadcast(&st->cond);
            g_mutex_unlock(&st->mu);
            return;
        }
        g_mutex_lock(&st->mu);
        bool over = st->in_unacked + (gint64)(len - 1) > API_EXEC_WS_WINDOW;
        if (!over) {
            st->in_unacked += (gint64)(len - 1);
            g_byte_array_append(st->in_buf, p + 1, (guint)(len - 1));
            g_cond_broadcast(&st->cond);
        }
        g_mutex_unlock(&st->mu);
        if (over)
            ws_protocol_error(st, "stdin beyond the window");
        return;
    case API_EXEC_WS_CONTROL:
        ws_control(st, (const char *)p + 1, len - 1);
        return;
    default:
        ws_protocol_error(st, "unknown channel");
    }
}

static void ws_on_closed(SoupWebsocketConnection *conn, gpointer data)
{
    struct ws_stream *st = data;

    g_signal_handlers_disconnect_by_data(conn, st);
    g_clear_object(&st->conn);
    st->conn_gone = true;
    ws_cancel(st); /* a no-op once the process has exited */
    ws_maybe_free(st);
}

/* Starts the threads; the stream's service half is in ss_pending. */
static void ws_start_threads(struct ws_stream *st)
{
    g_mutex_lock(&st->mu);
    st->ss = st->ss_pending;
    g_mutex_unlock(&st->mu);
    st->ss_pending = NULL;
    st->input = g_thread_new("wispd-exec-in", ws_input_thread, st);
    st->pump = g_thread_new("wispd-exec-out", ws_pump_thread, st);
}

/* The 101 went out: the connection becomes the WebSocket. */
static void ws_on_upgraded(SoupServerMessage *msg, gpointer data)
{
    struct ws_stream *st = data;

    g_signal_handlers_disconnect_by_data(msg, st);
    GIOStream *io = soup_server_message_steal_connection(msg);
    SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
    st->conn = soup_websocket_connection_new(io, soup_server_message_get_uri(msg),
                                             SOUP_WEBSOCKET_CONNECTION_SERVER,
                                             soup_message_headers_get_one(h, "Origin"), NULL, NULL);
    g_object_unref(io);
    soup_websocket_connection_set_max_incoming_payload_size(st->conn, API_EXEC_WS_CHUNK_MAX + 1);
    g_signal_connect(st->conn, "message", G_CALLBACK(ws_on_message), st);
    g_signal_connect(st->conn, "closed", G_CALLBACK(ws_on_closed), st);
    g_clear_object(&st->msg);
    ws_start_threads(st);
}

/* The message finished without an upgrade: the client went first, while the process was
 * being started (then ws_open_done sees client_gone) or before the 101 was written.  The
 * process goes. */
static void ws_on_finished(SoupServerMessage *msg, gpointer data)
{
    struct ws_stream *st = data;

    g_signal_handlers_disconnect_by_data(msg, st);
    g_clear_object(&st->msg);
    st->conn_gone = true;
    st->client_gone = true;
    st->cancelled = true; /* no thread runs yet */
    if (!st->opening)
        ws_start_threads(st);
}

/* ---- open: in a worker, the message paused -------------------------------------------------- */

static void ws_open_run(GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
    struct ws_stream *st = data;
    struct agent_exec_opts opts = {
        .argv = (const char *const *)st->argv,
        .env = (const char *const *)st->env,
        .cwd = st->cwd,
        .tty = st->tty,
        .with_stdin = st->with_stdin,
        .rows = st->rows,
        .cols = st->cols,
    };
    GError *err = NULL;

    (void)source;
    (void)cancel;
    sprite_stream *ss = sprite_service_stream_open(st->owner->svc, st->account, st->name, &opts,
                                                   ws_on_end, st, &err);
    if (ss)
        g_task_return_pointer(task, ss, NULL);
    else
        g_task_return_error(task, err);
}

static void ws_open_done(GObject *source, GAsyncResult *res, gpointer data)
{
    struct ws_stream *st = data;
    GError *err = NULL;
    SoupServerMessage *msg = st->msg;

    (void)source;
    st->opening = false;
    st->ss_pending = g_task_propagate_pointer(G_TASK(res), &err);
    if (!st->ss_pending) {
        guint status = api_status_of(err);
        if (status >= 500)
            log_warn(WS_LOG, "%s: %s", st->label, err->message);
        if (msg) {
            g_signal_handlers_disconnect_by_data(msg, st);
            api_error(msg, status, "%s", err->message);
            soup_server_message_unpause(msg);
            g_clear_object(&st->msg);
        }
        g_clear_error(&err);
        st->conn_gone = st->joined = true;
        st->done = true;
        ws_maybe_free(st);
        return;
    }
    if (st->owner->stopping && !st->client_gone) {
        /* wispd stops: the process goes at once, and the client hears why. */
        g_signal_handlers_disconnect_by_data(msg, st);
        api_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "wispd is shutting down");
        soup_server_message_unpause(msg);
        g_clear_object(&st->msg);
        st->conn_gone = st->client_gone = true;
        st->cancelled = true; /* no thread runs yet */
    }
    if (st->client_gone) {
        ws_start_threads(st); /* cancelled: the pump kills the process and closes */
        return;
    }
    /* Checked before the open, so it succeeds; if not, "finished" ends the stream. */
    if (soup_websocket_server_process_handshake(msg, NULL, NULL, NULL, NULL))
        g_signal_connect(msg, "wrote-informational", G_CALLBACK(ws_on_upgraded), st);
    soup_server_message_unpause(msg);
}

/* ---- the route ------------------------------------------------------------------------------ */

static bool ws_parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "1") || !strcmp(v, "true"))
        *out = true;
    else if (!strcmp(v, "0") || !strcmp(v, "false"))
        *out = false;
    else
        return false;
    return true;
}

static bool ws_parse_size(const char *v, guint16 *out)
{
    guint64 n;
    if (!g_ascii_string_to_unsigned(v, 10, 1, 65535, &n, NULL))
        return false;
    *out = (guint16)n;
    return true;
}

/* The query: argv (repeated, in order), env (repeated K=V), cwd, tty, stdin, rows, cols.
 * False after answering 400. */
static bool ws_parse_query(struct ws_stream *st, SoupServerMessage *msg)
{
    const char *query = g_uri_get_query(soup_server_message_get_uri(msg));
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) env = g_ptr_array_new_with_free_func(g_free);
    GUriParamsIter it;
    char *key = NULL, *value = NULL;
    GError *err = NULL;

    if (query) {
        g_uri_params_iter_init(&it, query, -1, "&", G_URI_PARAMS_NONE);
        while (g_uri_params_iter_next(&it, &key, &value, &err)) {
            g_autofree char *k = key, *v = value;
            bool ok = true;
            if (!strcmp(k, "argv")) {
                g_ptr_array_add(argv, g_steal_pointer(&v));
                ok = argv->len <= 4096;
            } else if (!strcmp(k, "env")) {
                const char *eq = strchr(v, '=');
                ok = eq && eq != v && env->len < 4096;
                g_ptr_array_add(env, g_steal_pointer(&v));
            } else if (!strcmp(k, "cwd")) {
                g_free(st->cwd);
                st->cwd = g_steal_pointer(&v);
            } else if (!strcmp(k, "tty")) {
                ok = ws_parse_bool(v, &st->tty);
            } else if (!strcmp(k, "stdin")) {
                ok = ws_parse_bool(v, &st->with_stdin);
            } else if (!strcmp(k, "rows")) {
                ok = ws_parse_size(v, &st->rows);
            } else if (!strcmp(k, "cols")) {
                ok = ws_parse_size(v, &st->cols);
            } else {
                api_error(msg, SOUP_STATUS_BAD_REQUEST, "unknown parameter '%s'", k);
                return false;
            }
            if (!ok) {
                api_error(msg, SOUP_STATUS_BAD_REQUEST, "bad value for '%s'", k);
                return false;
            }
        }
        if (err) {
            api_error(msg, SOUP_STATUS_BAD_REQUEST, "malformed query: %s", err->message);
            g_clear_error(&err);
            return false;
        }
    }
    if (argv->len == 0 || !*(char *)argv->pdata[0]) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST, "'argv' must name a program");
        return false;
    }
    g_ptr_array_add(argv, NULL);
    st->argv = (char **)g_ptr_array_steal(argv, NULL);
    if (env->len) {
        g_ptr_array_add(env, NULL);
        st->env = (char **)g_ptr_array_steal(env, NULL);
    }
    return true;
}

bool api_exec_ws_wanted(SoupServerMessage *msg)
{
    SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
    return soup_message_headers_header_contains(h, "Upgrade", "websocket");
}

void api_exec_ws_route(api_exec_ws *ws, SoupServerMessage *msg, const char *account,
                       const char *name)
{
    GError *err = NULL;

    if (ws->stopping) {
        api_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "wispd is shutting down");
        return;
    }
    if (!soup_websocket_server_check_handshake(msg, NULL, NULL, NULL, &err)) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST, "WebSocket handshake: %s", err->message);
        g_clear_error(&err);
        return;
    }
    struct ws_stream *st = g_new0(struct ws_stream, 1);
    st->owner = ws;
    g_mutex_init(&st->mu);
    g_cond_init(&st->cond);
    st->in_buf = g_byte_array_new();
    st->signals = g_array_new(FALSE, FALSE, sizeof(int));
    g_queue_init(&st->outq);
    st->out_credit = API_EXEC_WS_WINDOW;
    if (!ws_parse_query(st, msg)) {
        ws_stream_free(st);
        return;
    }
    st->account = g_strdup(account);
    st->name = g_strdup(name);
    st->label = g_strdup_printf("%s/%s", account, name);
    st->msg = g_object_ref(msg);
    ws->streams = g_list_prepend(ws->streams, st);
    /* From now on: a client that goes away before the upgrade ends the stream. */
    g_signal_connect(msg, "finished", G_CALLBACK(ws_on_finished), st);
    st->opening = true;
    soup_server_message_pause(msg);
    GTask *task = g_task_new(NULL, NULL, ws_open_done, st);
    g_task_set_task_data(task, st, NULL);
    g_task_run_in_thread(task, ws_open_run);
    g_object_unref(task);
}

api_exec_ws *api_exec_ws_new(sprite_service *svc)
{
    api_exec_ws *ws = g_new0(api_exec_ws, 1);
    ws->svc = svc;
    ws->ctx = g_main_context_ref_thread_default();
    return ws;
}

static bool ws_any_opening(api_exec_ws *ws)
{
    for (GList *i = ws->streams; i; i = i->next)
        if (((struct ws_stream *)i->data)->opening)
            return true;
    return false;
}

static gboolean ws_drain_tick(gpointer data)
{
    (void)data;
    return G_SOURCE_CONTINUE; /* only wakes the iteration below, to look at the clock */
}

/* The main loop has stopped, but an open under way ends in ws_open_done, in this context:
 * run it until every open has ended (bounded), so that each such stream is cancelled and
 * closed like the others, rather than holding the service (its busy count) to the end. */
static void ws_drain_opening(api_exec_ws *ws)
{
    if (!ws_any_opening(ws))
        return;
    gint64 until = g_get_monotonic_time() + WS_OPEN_DRAIN_S * G_USEC_PER_SEC;
    GSource *tick = g_timeout_source_new_seconds(1);
    g_source_set_callback(tick, ws_drain_tick, NULL, NULL);
    g_source_attach(tick, ws->ctx);
    log_info(WS_LOG, "waiting for the streams being opened to end");
    while (ws_any_opening(ws) && g_get_monotonic_time() < until)
        g_main_context_iteration(ws->ctx, TRUE);
    g_source_destroy(tick);
    g_source_unref(tick);
    /* The answers just given (503) go out from sources of their own (an unpause is an idle
     * source, a write may wait for the socket): dispatch what is ready for a little longer. */
    until = g_get_monotonic_time() + WS_ANSWER_DRAIN_MS * 1000;
    while (g_get_monotonic_time() < until)
        if (!g_main_context_iteration(ws->ctx, FALSE))
            g_usleep(1000);
}

void api_exec_ws_free(api_exec_ws *ws)
{
    if (!ws)
        return;
    ws->stopping = true;
    ws_drain_opening(ws);
    /* Ends every stream whose threads run, and waits for them: their service streams must be
     * closed before the service goes.  A stream still opening after the drain (a worker stuck
     * in the service) cannot be reached: then this object is left behind on purpose, as the
     * service does. */
    bool opening = false;
    for (GList *i = ws->streams; i; i = i->next) {
        struct ws_stream *st = i->data;
        if (st->pump)
            ws_cancel(st);
        else if (!st->joined)
            opening = true;
    }
    for (GList *i = ws->streams; i; i = i->next) {
        struct ws_stream *st = i->data;
        if (st->pump) {
            g_thread_join(st->pump);
            st->pump = NULL;
            st->joined = true;
        }
        if (st->conn) {
            g_signal_handlers_disconnect_by_data(st->conn, st);
            g_clear_object(&st->conn);
        }
    }
    if (opening) {
        log_warn(WS_LOG, "streams still opening at shutdown; their state is left behind");
        return;
    }
    /* The main loop has stopped: flushes still pending never run, and go with their
     * streams. */
    for (GList *i = ws->streams; i; i = i->next) {
        struct ws_stream *st = i->data;
        if (st->flush_src) {
            g_source_destroy(st->flush_src);
            g_clear_pointer(&st->flush_src, g_source_unref);
        }
        ws_stream_free(st);
    }
    g_list_free(ws->streams);
    g_main_context_unref(ws->ctx);
    g_free(ws);
}
