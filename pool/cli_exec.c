/* cli_exec.c: `wisp exec` and `wisp console`, streaming, on wispd's WebSocket exec
 * (api_exec_ws.h, docs/api.md "Streaming exec"), with libsoup 3's client over the unix
 * socket.
 *
 * stdin goes to the process when it is not a terminal (a pipe or a file: `echo x | wisp exec
 * NAME -- cat`), or with -i, or with -t; otherwise the process reads /dev/null, as a command
 * run from a terminal without -t usually wants.  stdout and stderr come back to this
 * process's stdout and stderr (with -t they are one stream, the pty's).  The exit code is the
 * remote command's; 1 when wisp itself fails.
 *
 * -t: the process gets a pty in the guest, sized like this terminal (and resized with it,
 * SIGWINCH); this terminal is put in raw mode, and put back on every way out: the exit frame,
 * a closed connection, a failed write, SIGTERM, SIGHUP, or an error.  SIGINT, SIGTERM and
 * SIGHUP are passed on to the remote process (a second SIGINT gives up at once).
 *
 * The exit message is the stream's last: once it is here, this process closes its end and
 * returns the code at once, without waiting for wispd's close (a round trip, and wispd's own
 * teardown of the stream, that the caller has no use for).  wispd sends it only once its
 * hold on the sprite is given back (docs/api.md), so a request right after finds it free. */
#include "cli_exec.h"
#include "cli.h"

#include <errno.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

/* As api_exec_ws.h: payload in flight per direction, and the largest payload. */
#define CLI_EXEC_WINDOW (1 << 20)
#define CLI_EXEC_CHUNK  (64 * 1024)

enum { CH_STDIN = 0, CH_STDOUT = 1, CH_STDERR = 2, CH_CONTROL = 3, CH_EXIT = 4 };

struct cli_exec {
    GMainLoop *loop;
    SoupSession *session;
    SoupMessage *msg;
    SoupWebsocketConnection *conn; /* NULL until the 101 */
    const char *name;
    bool tty, send_stdin;
    gint64 in_credit; /* stdin bytes wispd still takes */
    guint stdin_watch;
    bool stdin_done;
    int sigints;
    int exit_code; /* -1 until the exit frame */
    char *error;   /* wisp's own failure, for the user */
    bool output_broken;
};

/* ---- the terminal: raw mode, always restored ----------------------------------------------- */

static struct termios cli_exec_saved_termios;
static volatile sig_atomic_t cli_exec_raw;

static void cli_exec_restore_tty(void)
{
    if (cli_exec_raw) {
        tcsetattr(STDIN_FILENO, TCSADRAIN, &cli_exec_saved_termios);
        cli_exec_raw = 0;
    }
}

static bool cli_exec_make_raw(void)
{
    struct termios raw;

    if (tcgetattr(STDIN_FILENO, &cli_exec_saved_termios) < 0)
        return false;
    raw = cli_exec_saved_termios;
    cfmakeraw(&raw);
    if (tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) < 0)
        return false;
    cli_exec_raw = 1;
    atexit(cli_exec_restore_tty);
    return true;
}

/* The local terminal's size, from whichever of stdin and stdout is one; false if neither. */
static bool cli_exec_winsize(guint16 *rows, guint16 *cols)
{
    struct winsize ws;
    if ((ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) &&
        ws.ws_row > 0 && ws.ws_col > 0) {
        *rows = ws.ws_row;
        *cols = ws.ws_col;
        return true;
    }
    return false;
}

/* ---- sending ------------------------------------------------------------------------------- */

static void cli_exec_send(struct cli_exec *x, guint8 channel, const void *data, size_t len)
{
    if (!x->conn || soup_websocket_connection_get_state(x->conn) != SOUP_WEBSOCKET_STATE_OPEN)
        return;
    guint8 *p = g_malloc(len + 1);
    p[0] = channel;
    if (len)
        memcpy(p + 1, data, len);
    /* A failed write is a connection gone: libsoup then emits "closed", which ends the loop. */
    GBytes *b = g_bytes_new_take(p, len + 1);
    soup_websocket_connection_send_message(x->conn, SOUP_WEBSOCKET_DATA_BINARY, b);
    g_bytes_unref(b);
}

static void cli_exec_control(struct cli_exec *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void cli_exec_control(struct cli_exec *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    cli_exec_send(x, CH_CONTROL, text, strlen(text));
}

static gboolean cli_exec_on_stdin(gint fd, GIOCondition cond, gpointer data);

/* Reads stdin while wispd has room for it. */
static void cli_exec_watch_stdin(struct cli_exec *x)
{
    if (x->send_stdin && !x->stdin_done && !x->stdin_watch && x->in_credit > 0)
        x->stdin_watch =
            g_unix_fd_add(STDIN_FILENO, G_IO_IN | G_IO_HUP | G_IO_ERR, cli_exec_on_stdin, x);
}

static gboolean cli_exec_on_stdin(gint fd, GIOCondition cond, gpointer data)
{
    struct cli_exec *x = data;
    char buf[CLI_EXEC_CHUNK];
    size_t cap = (size_t)MIN(x->in_credit, (gint64)sizeof buf);
    ssize_t n;

    (void)cond;
    do
        n = read(fd, buf, cap);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return G_SOURCE_CONTINUE;
    if (n <= 0) {
        /* The end of input (or a read error, which ends it as well). */
        cli_exec_send(x, CH_STDIN, NULL, 0);
        x->stdin_done = true;
        x->stdin_watch = 0;
        return G_SOURCE_REMOVE;
    }
    cli_exec_send(x, CH_STDIN, buf, (size_t)n);
    x->in_credit -= n;
    if (x->in_credit > 0)
        return G_SOURCE_CONTINUE;
    x->stdin_watch = 0; /* until wispd acknowledges */
    return G_SOURCE_REMOVE;
}

/* ---- receiving ----------------------------------------------------------------------------- */

static bool cli_exec_write_all(int fd, const guint8 *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static void cli_exec_on_exit_frame(struct cli_exec *x, const char *text, size_t len)
{
    g_autoptr(JsonParser) p = json_parser_new();
    JsonNode *root;

    if (!json_parser_load_from_data(p, text, (gssize)len, NULL) ||
        !(root = json_parser_get_root(p)) || !JSON_NODE_HOLDS_OBJECT(root)) {
        x->error = g_strdup("wispd sent a malformed exit message");
        return;
    }
    JsonObject *o = json_node_get_object(root);
    if (json_object_has_member(o, "exit_code"))
        x->exit_code = (int)json_object_get_int_member(o, "exit_code");
    else
        x->error = g_strdup(json_object_get_string_member_with_default(o, "error", "failed"));
}

static void cli_exec_on_message(SoupWebsocketConnection *conn, gint type, GBytes *message,
                                gpointer data)
{
    struct cli_exec *x = data;
    gsize len;
    const guint8 *p = g_bytes_get_data(message, &len);

    if (type != SOUP_WEBSOCKET_DATA_BINARY || len < 1)
        return;
    switch (p[0]) {
    case CH_STDOUT:
    case CH_STDERR:
        if (!x->output_broken &&
            !cli_exec_write_all(p[0] == CH_STDOUT ? STDOUT_FILENO : STDERR_FILENO, p + 1,
                                len - 1)) {
            /* Nobody reads us any more (a closed pipe): the remote process goes too. */
            x->output_broken = true;
            soup_websocket_connection_close(conn, SOUP_WEBSOCKET_CLOSE_NORMAL, "output closed");
            g_main_loop_quit(x->loop);
            return;
        }
        cli_exec_control(x, "{\"ack\":%" G_GSIZE_FORMAT "}", len - 1);
        break;
    case CH_CONTROL: {
        g_autoptr(JsonParser) jp = json_parser_new();
        JsonNode *root;
        if (json_parser_load_from_data(jp, (const char *)p + 1, (gssize)len - 1, NULL) &&
            (root = json_parser_get_root(jp)) && JSON_NODE_HOLDS_OBJECT(root)) {
            gint64 n =
                json_object_get_int_member_with_default(json_node_get_object(root), "ack", 0);
            x->in_credit = MIN(x->in_credit + MAX(n, 0), CLI_EXEC_WINDOW);
            cli_exec_watch_stdin(x);
        }
        break;
    }
    case CH_EXIT:
        /* The last message: done, whatever wispd still does to close. */
        cli_exec_on_exit_frame(x, (const char *)p + 1, len - 1);
        soup_websocket_connection_close(conn, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
        g_main_loop_quit(x->loop);
        break;
    default:
        break;
    }
}

/* wispd's close, or the connection lost, before the exit message. */
static void cli_exec_on_closed(SoupWebsocketConnection *conn, gpointer data)
{
    struct cli_exec *x = data;

    (void)conn;
    g_main_loop_quit(x->loop);
}

/* ---- signals ------------------------------------------------------------------------------- */

static gboolean cli_exec_on_winch(gpointer data)
{
    struct cli_exec *x = data;
    guint16 rows, cols;

    if (cli_exec_winsize(&rows, &cols))
        cli_exec_control(x, "{\"resize\":{\"rows\":%u,\"cols\":%u}}", rows, cols);
    return G_SOURCE_CONTINUE;
}

static void cli_exec_forward_signal(struct cli_exec *x, int signo)
{
    if (signo == SIGINT && ++x->sigints > 1) {
        /* A second ^C: give up at once (closing makes wispd kill the process). */
        x->error = g_strdup("interrupted");
        x->exit_code = -1;
        if (x->conn)
            soup_websocket_connection_close(x->conn, SOUP_WEBSOCKET_CLOSE_GOING_AWAY, NULL);
        g_main_loop_quit(x->loop);
        return;
    }
    cli_exec_control(x, "{\"signal\":%d}", signo);
}

static gboolean cli_exec_on_sigint(gpointer data)
{
    cli_exec_forward_signal(data, SIGINT);
    return G_SOURCE_CONTINUE;
}
static gboolean cli_exec_on_sigterm(gpointer data)
{
    cli_exec_forward_signal(data, SIGTERM);
    return G_SOURCE_CONTINUE;
}
static gboolean cli_exec_on_sighup(gpointer data)
{
    cli_exec_forward_signal(data, SIGHUP);
    return G_SOURCE_CONTINUE;
}

/* ---- connecting ---------------------------------------------------------------------------- */

/* wispd answered the upgrade with an error: ours for the usual ones, else the status.
 * libsoup does not read the body of a refused upgrade (where wispd's message is), so the
 * text points at --json, whose plain request shows it. */
static void cli_exec_refused(struct cli_exec *x, guint status)
{
    if (status == SOUP_STATUS_NOT_FOUND)
        x->error =
            g_strdup_printf("no sprite named '%s' ('wisp list' shows your sprites)", x->name);
    else if (status == SOUP_STATUS_UNAUTHORIZED)
        x->error = g_strdup("unknown bearer token (check --token or WISP_TOKEN)");
    else if (status == SOUP_STATUS_SERVICE_UNAVAILABLE)
        x->error = g_strdup("wispd is stopping; try again once it runs");
    else
        x->error = g_strdup_printf("wispd refused the exec: HTTP %u %s (wisp exec --json shows "
                                   "wispd's message)",
                                   status, soup_message_get_reason_phrase(x->msg));
}

static void cli_exec_on_connected(GObject *source, GAsyncResult *res, gpointer data)
{
    struct cli_exec *x = data;
    GError *err = NULL;

    x->conn = soup_session_websocket_connect_finish(SOUP_SESSION(source), res, &err);
    if (!x->conn) {
        guint status = soup_message_get_status(x->msg);
        if (status >= 400)
            cli_exec_refused(x, status);
        else if (status > 0)
            x->error = g_strdup_printf("wispd did not open the exec stream: HTTP %u %s: %s", status,
                                       soup_message_get_reason_phrase(x->msg), err->message);
        else
            x->error = g_strdup_printf("cannot reach wispd: %s (is it running? see --socket)",
                                       err->message);
        g_clear_error(&err);
        g_main_loop_quit(x->loop);
        return;
    }
    soup_websocket_connection_set_max_incoming_payload_size(x->conn, CLI_EXEC_CHUNK + 1);
    g_signal_connect(x->conn, "message", G_CALLBACK(cli_exec_on_message), x);
    g_signal_connect(x->conn, "closed", G_CALLBACK(cli_exec_on_closed), x);
    if (x->tty && isatty(STDIN_FILENO) && !cli_exec_make_raw())
        cli_error("cannot put the terminal in raw mode: %s", g_strerror(errno));
    cli_exec_watch_stdin(x);
}

/* The request's URL: /v1/sprites/NAME/exec?argv=...&... (every value escaped). */
static char *cli_exec_url(const char *name, char **cmd, bool tty, bool with_stdin)
{
    GString *u = g_string_new("http://wispd/v1/sprites/");
    g_autofree char *n = g_uri_escape_string(name, NULL, FALSE);
    guint16 rows, cols;

    g_string_append_printf(u, "%s/exec?tty=%d&stdin=%d", n, tty, with_stdin);
    for (char **a = cmd; *a; a++) {
        g_autofree char *e = g_uri_escape_string(*a, NULL, FALSE);
        g_string_append_printf(u, "&argv=%s", e);
    }
    if (tty) {
        const char *term = g_getenv("TERM");
        if (term && *term) {
            g_autofree char *kv = g_strdup_printf("TERM=%s", term);
            g_autofree char *e = g_uri_escape_string(kv, NULL, FALSE);
            g_string_append_printf(u, "&env=%s", e);
        }
        if (cli_exec_winsize(&rows, &cols))
            g_string_append_printf(u, "&rows=%u&cols=%u", rows, cols);
    }
    return g_string_free(u, FALSE);
}

int cli_exec_stream(const char *socket_path, const char *token, const char *name, char **cmd,
                    bool tty, bool force_stdin)
{
    struct cli_exec x = {.name = name, .tty = tty, .exit_code = -1, .in_credit = CLI_EXEC_WINDOW};
    int status;

    x.send_stdin = force_stdin || tty || !isatty(STDIN_FILENO);
    g_autofree char *url = cli_exec_url(name, cmd, tty, x.send_stdin);
    GSocketAddress *addr = g_unix_socket_address_new(socket_path);
    x.session = soup_session_new_with_options("remote-connectable", addr, NULL);
    g_object_unref(addr);
    x.msg = soup_message_new("GET", url);
    if (!x.msg) {
        cli_error("cannot make a request for sprite '%s'", name);
        g_object_unref(x.session);
        return CLI_EXIT_USAGE;
    }
    if (token) {
        g_autofree char *auth = g_strdup_printf("Bearer %s", token);
        soup_message_headers_replace(soup_message_get_request_headers(x.msg), "Authorization",
                                     auth);
    }
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is a failed write, handled */
    x.loop = g_main_loop_new(NULL, FALSE);
    guint sources[4] = {
        g_unix_signal_add(SIGINT, cli_exec_on_sigint, &x),
        g_unix_signal_add(SIGTERM, cli_exec_on_sigterm, &x),
        g_unix_signal_add(SIGHUP, cli_exec_on_sighup, &x),
        tty ? g_unix_signal_add(SIGWINCH, cli_exec_on_winch, &x) : 0,
    };
    soup_session_websocket_connect_async(x.session, x.msg, NULL, NULL, G_PRIORITY_DEFAULT, NULL,
                                         cli_exec_on_connected, &x);
    g_main_loop_run(x.loop);
    cli_exec_restore_tty();

    if (x.output_broken)
        status = 128 + SIGPIPE;
    else if (x.exit_code >= 0)
        status = x.exit_code;
    else {
        cli_error("%s", x.error ? x.error : "wispd closed the stream before the exit");
        status = CLI_EXIT_ERROR;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(sources); i++)
        if (sources[i])
            g_source_remove(sources[i]);
    if (x.stdin_watch)
        g_source_remove(x.stdin_watch);
    /* After the exit message the close frame is queued, and may still be unsent: dropping
     * the connection ends it either way, which wispd takes as the same end (docs/api.md). */
    if (x.conn) {
        g_signal_handlers_disconnect_by_data(x.conn, &x);
        g_object_unref(x.conn);
    }
    g_object_unref(x.msg);
    g_object_unref(x.session);
    g_main_loop_unref(x.loop);
    g_free(x.error);
    return status;
}
