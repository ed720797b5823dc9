/* agent_client.c: the control-channel client (see agent_client.h).
 *
 * Locking: c->lock guards the stream table and every stream's state; c->cond is broadcast on
 * any change (few waiters, so one condition is simpler than one per stream and cheap enough).
 * c->write_lock serialises whole frames on the socket and is never taken with c->lock held,
 * so a full socket cannot stop the reader thread from filing what the guest sends. */
#include "agent_client.h"

#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define AGENT_LOG              "agent"
#define AGENT_DEFAULT_WINDOW   (256u * 1024u)
#define AGENT_HELLO_PERIOD_MS  200
#define AGENT_DATA_MAX         (WISP_PROTO_MAX_PAYLOAD - 64u) /* room for the data's framing */
#define AGENT_CONNECT_RETRY_US 5000

G_DEFINE_QUARK(wisp - agent - error - quark, agent_error)

/* A reply kept for the caller that waits for it.  data: a copy of a data message's bytes,
 * since the decoded message only points into the reader's buffer. */
struct agent_reply {
    struct wisp_msg msg;
    GBytes *data;
};

struct agent_chunk {
    enum agent_stream_kind kind;
    GBytes *bytes;
    size_t off;
};

struct agent_stream {
    uint32_t id;
    GQueue replies; /* struct agent_reply */
    /* exec sessions only */
    bool is_exec;
    GQueue chunks; /* struct agent_chunk, oldest first */
    size_t buffered;
    uint64_t stdin_credit;
    bool exited;
    int exit_kind, exit_code;
};

struct agent_client {
    int fd;
    GThread *reader;
    GMutex lock;
    GCond cond;
    GMutex write_lock;
    GHashTable *streams; /* id -> struct agent_stream (not owned) */
    uint32_t next_stream;
    bool closed;
    char *close_reason;
    bool ready_seen;
    uint64_t hello_nonce; /* only the READY that answers our HELLO counts */
    struct agent_ready ready;
    uint64_t protocol_errors; /* frames from the guest that did not decode */
};

struct agent_exec {
    agent_client *c;
    struct agent_stream *s;
    uint32_t pid;
    uint32_t window;
    uint32_t consumed; /* output read since the last WINDOW we sent */
};

static void agent_reply_free(struct agent_reply *r)
{
    wisp_msg_free(&r->msg);
    if (r->data)
        g_bytes_unref(r->data);
    g_free(r);
}

static void agent_chunk_free(struct agent_chunk *ch)
{
    g_bytes_unref(ch->bytes);
    g_free(ch);
}

static gint64 agent_deadline(int timeout_ms)
{
    return g_get_monotonic_time() + (gint64)timeout_ms * 1000;
}

/* ---- sending ------------------------------------------------------------------------------- */

static bool agent_write_all(agent_client *c, const uint8_t *buf, size_t len, GError **error)
{
    while (len > 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            g_set_error(error, AGENT_ERROR, errno == EPIPE ? AGENT_ERROR_CLOSED : AGENT_ERROR_IO,
                        "write control socket: %s", g_strerror(errno));
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

static bool agent_send(agent_client *c, const struct wisp_msg *m, GError **error)
{
    uint8_t *buf = g_malloc(WISP_PROTO_MAX_FRAME);
    int len = wisp_msg_encode(m, buf, WISP_PROTO_MAX_FRAME);
    bool ok;

    if (len < 0) {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_PROTOCOL, "encode %s: %s",
                    wisp_msg_type_to_string(m->type), wisp_err_to_string(len));
        g_free(buf);
        return false;
    }
    g_mutex_lock(&c->write_lock);
    ok = agent_write_all(c, buf, (size_t)len, error);
    g_mutex_unlock(&c->write_lock);
    g_free(buf);
    return ok;
}

/* A string array of the protocol from a NULL-terminated one (borrowed pointers). */
static struct wisp_strv agent_strv(const char *const *v)
{
    struct wisp_strv s = {0, (char **)v};
    static char *empty[] = {NULL};

    if (!v) {
        s.v = empty;
        return s;
    }
    while (v[s.count])
        s.count++;
    return s;
}

/* ---- receiving ----------------------------------------------------------------------------- */

/* Files one decoded message; called with c->lock held.  Takes ownership of m's arena. */
static void agent_dispatch(agent_client *c, struct wisp_msg *m)
{
    struct agent_stream *s;

    if (m->stream == 0) {
        if (m->type == WISP_MSG_READY && c->hello_nonce && m->u.ready.nonce == c->hello_nonce) {
            c->ready.version = m->u.ready.version;
            c->ready.max_payload = m->u.ready.max_payload;
            c->ready.boot_id = m->u.ready.boot_id;
            c->ready.uptime_ms = m->u.ready.uptime_ms;
            c->ready.attached = m->u.ready.attached;
            g_strlcpy(c->ready.agent, m->u.ready.agent ? m->u.ready.agent : "",
                      sizeof c->ready.agent);
            c->ready_seen = true;
        } else if (m->type == WISP_MSG_READY) {
            /* READY unasked (nonce 0) or to an earlier host's HELLO: ours is coming. */
        } else if (m->type == WISP_MSG_ERROR) {
            log_warn(AGENT_LOG, "wisp-init reports a connection error: %s: %s",
                     wisp_err_to_string((int)m->u.error.code),
                     m->u.error.message ? m->u.error.message : "");
        } else {
            log_warn(AGENT_LOG, "unexpected %s on stream 0", wisp_msg_type_to_string(m->type));
        }
        wisp_msg_free(m);
        return;
    }
    s = g_hash_table_lookup(c->streams, GUINT_TO_POINTER(m->stream));
    if (!s) {
        log_debug(AGENT_LOG, "%s for stream %u nobody waits for: dropped",
                  wisp_msg_type_to_string(m->type), m->stream);
        wisp_msg_free(m);
        return;
    }
    switch (m->type) {
    case WISP_MSG_STDOUT:
    case WISP_MSG_STDERR: {
        struct agent_chunk *ch = g_new0(struct agent_chunk, 1);
        ch->kind = m->type == WISP_MSG_STDOUT ? AGENT_STDOUT : AGENT_STDERR;
        ch->bytes = g_bytes_new(m->u.data.data, m->u.data.len);
        s->buffered += m->u.data.len;
        g_queue_push_tail(&s->chunks, ch);
        wisp_msg_free(m);
        return;
    }
    case WISP_MSG_WINDOW:
        s->stdin_credit += m->u.window.increment;
        wisp_msg_free(m);
        return;
    case WISP_MSG_EXIT:
        s->exited = true;
        s->exit_kind = m->u.exit.kind;
        s->exit_code = (int)m->u.exit.code;
        wisp_msg_free(m);
        return;
    default: {
        struct agent_reply *r = g_new0(struct agent_reply, 1);
        r->msg = *m;
        if (m->type == WISP_MSG_SERVICE_LOGS_REPLY) {
            r->data = g_bytes_new(m->u.data.data, m->u.data.len);
            r->msg.u.data.data = NULL;
        }
        g_queue_push_tail(&s->replies, r);
        return;
    }
    }
}

static void agent_mark_closed(agent_client *c, const char *why)
{
    g_mutex_lock(&c->lock);
    if (!c->closed) {
        c->closed = true;
        c->close_reason = g_strdup(why);
        log_debug(AGENT_LOG, "control connection closed: %s", why);
    }
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
}

static void *agent_reader_thread(void *opaque)
{
    agent_client *c = opaque;
    struct wisp_reader reader;
    uint8_t *buf = g_malloc(65536);
    char why[256] = "wisp-init closed the connection";

    if (wisp_reader_init(&reader, WISP_PROTO_MAX_PAYLOAD) < 0) {
        agent_mark_closed(c, "out of memory for the frame reader");
        g_free(buf);
        return NULL;
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, 65536, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, sizeof why, "read control socket: %s", g_strerror(errno));
            break;
        }
        if (n == 0)
            break;
        size_t off = 0;
        while (off < (size_t)n) {
            struct wisp_frame frame;
            struct wisp_header bad;
            struct wisp_msg m;
            size_t used = 0;
            int r = wisp_reader_feed(&reader, buf + off, (size_t)n - off, &used, &frame, &bad);
            off += used;
            if (r < 0) {
                log_warn(AGENT_LOG, "bad frame from wisp-init: %s", wisp_err_to_string(r));
                g_mutex_lock(&c->lock);
                c->protocol_errors++;
                g_mutex_unlock(&c->lock);
                continue;
            }
            if (r == 0)
                break;
            memset(&m, 0, sizeof m);
            r = wisp_msg_decode(&frame.h, frame.payload, &m);
            g_mutex_lock(&c->lock);
            if (r < 0) {
                c->protocol_errors++;
                log_warn(AGENT_LOG, "undecodable %s from wisp-init: %s",
                         wisp_msg_type_to_string(frame.h.type) ?: "frame", wisp_err_to_string(r));
            } else {
                agent_dispatch(c, &m);
            }
            g_cond_broadcast(&c->cond);
            g_mutex_unlock(&c->lock);
        }
    }
    wisp_reader_free(&reader);
    g_free(buf);
    agent_mark_closed(c, why);
    return NULL;
}

/* ---- connection ---------------------------------------------------------------------------- */

agent_client *agent_client_connect(const char *ctl_path, int timeout_ms, GError **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    gint64 deadline = agent_deadline(timeout_ms);
    agent_client *c;
    int fd, saved;

    if (strlen(ctl_path) >= sizeof addr.sun_path) {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_CONNECT, "path too long: %s", ctl_path);
        return NULL;
    }
    strcpy(addr.sun_path, ctl_path);
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            g_set_error(error, AGENT_ERROR, AGENT_ERROR_CONNECT, "socket: %s", g_strerror(errno));
            return NULL;
        }
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            break;
        saved = errno;
        close(fd);
        if ((saved != ENOENT && saved != ECONNREFUSED) || g_get_monotonic_time() > deadline) {
            g_set_error(error, AGENT_ERROR, AGENT_ERROR_CONNECT, "connect %s: %s", ctl_path,
                        g_strerror(saved));
            return NULL;
        }
        g_usleep(AGENT_CONNECT_RETRY_US);
    }
    c = g_new0(agent_client, 1);
    c->fd = fd;
    g_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    g_mutex_init(&c->write_lock);
    c->streams = g_hash_table_new(NULL, NULL);
    /* A session of an earlier connection may still be alive in the guest (sessions survive
     * their host): start at a random id so that a new client does not collide with it. */
    c->next_stream = (uint32_t)g_random_int_range(1, 1 << 30);
    c->reader = g_thread_new("wisp-agent-rd", agent_reader_thread, c);
    return c;
}

void agent_client_free(agent_client *c)
{
    if (!c)
        return;
    /* Wakes the reader out of recv(); it then marks the client closed. */
    shutdown(c->fd, SHUT_RDWR);
    g_thread_join(c->reader);
    close(c->fd);
    if (g_hash_table_size(c->streams))
        log_warn(AGENT_LOG, "%u streams still open at close", g_hash_table_size(c->streams));
    g_hash_table_destroy(c->streams);
    g_mutex_clear(&c->lock);
    g_cond_clear(&c->cond);
    g_mutex_clear(&c->write_lock);
    g_free(c->close_reason);
    g_free(c);
}

static void agent_set_closed_error(agent_client *c, GError **error)
{
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_CLOSED, "control connection closed: %s",
                c->close_reason ? c->close_reason : "?");
}

bool agent_client_wait_ready(agent_client *c, int timeout_ms, struct agent_ready *out,
                             GError **error)
{
    gint64 deadline = agent_deadline(timeout_ms);
    struct wisp_msg hello = {.type = WISP_MSG_HELLO, .stream = 0};
    bool ok = false;

    hello.u.hello.min_version = WISP_PROTO_MIN_VERSION;
    hello.u.hello.max_version = WISP_PROTO_VERSION;
    hello.u.hello.client = (char *)"wisp-vm";
    g_mutex_lock(&c->lock);
    if (!c->hello_nonce)
        c->hello_nonce = ((uint64_t)g_random_int() << 32) | g_random_int() | 1;
    hello.u.hello.nonce = c->hello_nonce;
    while (!c->ready_seen && !c->closed && g_get_monotonic_time() < deadline) {
        g_mutex_unlock(&c->lock);
        /* Until wisp-init opens its port, QEMU drops what we write: say it again. */
        if (!agent_send(c, &hello, error))
            return false;
        g_mutex_lock(&c->lock);
        gint64 next = MIN(deadline, agent_deadline(AGENT_HELLO_PERIOD_MS));
        while (!c->ready_seen && !c->closed && g_get_monotonic_time() < next)
            g_cond_wait_until(&c->cond, &c->lock, next);
    }
    if (c->ready_seen) {
        if (out)
            *out = c->ready;
        ok = true;
    } else if (c->closed) {
        agent_set_closed_error(c, error);
    } else {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_TIMEOUT, "no READY from wisp-init in %d ms",
                    timeout_ms);
    }
    g_mutex_unlock(&c->lock);
    return ok;
}

/* ---- requests ------------------------------------------------------------------------------ */

/* A new stream: the next free id, or `id` if it is not 0 (NULL if that one is in use). */
static struct agent_stream *agent_stream_open_id(agent_client *c, bool is_exec, uint32_t id)
{
    struct agent_stream *s = g_new0(struct agent_stream, 1);

    s->is_exec = is_exec;
    g_mutex_lock(&c->lock);
    if (id) {
        if (g_hash_table_contains(c->streams, GUINT_TO_POINTER(id))) {
            g_mutex_unlock(&c->lock);
            g_free(s);
            return NULL;
        }
        s->id = id;
    } else {
        do {
            s->id = c->next_stream++;
        } while (s->id == 0 || g_hash_table_contains(c->streams, GUINT_TO_POINTER(s->id)));
    }
    g_hash_table_insert(c->streams, GUINT_TO_POINTER(s->id), s);
    g_mutex_unlock(&c->lock);
    return s;
}

static struct agent_stream *agent_stream_open(agent_client *c, bool is_exec)
{
    return agent_stream_open_id(c, is_exec, 0);
}

static void agent_stream_close(agent_client *c, struct agent_stream *s)
{
    g_mutex_lock(&c->lock);
    g_hash_table_remove(c->streams, GUINT_TO_POINTER(s->id));
    g_mutex_unlock(&c->lock);
    g_queue_clear_full(&s->replies, (GDestroyNotify)agent_reply_free);
    g_queue_clear_full(&s->chunks, (GDestroyNotify)agent_chunk_free);
    g_free(s);
}

/* Waits for the next reply on s.  An ERROR reply becomes AGENT_ERROR_REMOTE. */
static struct agent_reply *agent_wait_reply(agent_client *c, struct agent_stream *s,
                                            const char *what, gint64 deadline, GError **error)
{
    struct agent_reply *r = NULL;

    g_mutex_lock(&c->lock);
    while (!(r = g_queue_pop_head(&s->replies)) && !c->closed && g_get_monotonic_time() < deadline)
        g_cond_wait_until(&c->cond, &c->lock, deadline);
    if (!r) {
        if (c->closed)
            agent_set_closed_error(c, error);
        else
            g_set_error(error, AGENT_ERROR, AGENT_ERROR_TIMEOUT, "%s: no reply from wisp-init",
                        what);
    }
    g_mutex_unlock(&c->lock);
    if (r && r->msg.type == WISP_MSG_ERROR) {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_REMOTE, "%s: %s%s%s%s%s", what,
                    wisp_err_to_string((int)r->msg.u.error.code),
                    r->msg.u.error.message && *r->msg.u.error.message ? ": " : "",
                    r->msg.u.error.message ? r->msg.u.error.message : "",
                    r->msg.u.error.sys_errno ? ": " : "",
                    r->msg.u.error.sys_errno ? g_strerror(r->msg.u.error.sys_errno) : "");
        agent_reply_free(r);
        return NULL;
    }
    return r;
}

/* Sends m on a new stream and waits for its reply of type `expect`. */
static struct agent_reply *agent_request(agent_client *c, struct wisp_msg *m, uint8_t expect,
                                         int timeout_ms, GError **error)
{
    struct agent_stream *s = agent_stream_open(c, false);
    const char *what = wisp_msg_type_to_string(m->type);
    struct agent_reply *r = NULL;

    m->stream = s->id;
    if (agent_send(c, m, error))
        r = agent_wait_reply(c, s, what, agent_deadline(timeout_ms), error);
    agent_stream_close(c, s);
    if (r && r->msg.type != expect) {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_PROTOCOL, "%s: wisp-init answered %s", what,
                    wisp_msg_type_to_string(r->msg.type) ?: "?");
        agent_reply_free(r);
        return NULL;
    }
    return r;
}

static bool agent_simple(agent_client *c, uint8_t type, int timeout_ms, GError **error)
{
    struct wisp_msg m = {.type = type};
    struct agent_reply *r = agent_request(c, &m, WISP_MSG_OK, timeout_ms, error);

    if (!r)
        return false;
    agent_reply_free(r);
    return true;
}

bool agent_client_attach(agent_client *c, const char *device, const char *hostname,
                         const char *const *env, int timeout_ms, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_ATTACH};
    struct agent_reply *r;

    m.u.attach.device = (char *)(device ? device : "");
    m.u.attach.hostname = (char *)(hostname ? hostname : "");
    m.u.attach.env = agent_strv(env);
    r = agent_request(c, &m, WISP_MSG_OK, timeout_ms, error);
    if (!r)
        return false;
    agent_reply_free(r);
    return true;
}

bool agent_client_seed(agent_client *c, const void *bytes, size_t len, int timeout_ms,
                       GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_SEED};
    struct agent_reply *r;

    if (len < WISP_SEED_MIN_BYTES || len > WISP_SEED_MAX_BYTES) {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_PROTOCOL, "seed: %zu bytes (%d to %d)", len,
                    WISP_SEED_MIN_BYTES, WISP_SEED_MAX_BYTES);
        return false;
    }
    m.u.data.data = bytes;
    m.u.data.len = (uint32_t)len;
    r = agent_request(c, &m, WISP_MSG_OK, timeout_ms, error);
    if (!r)
        return false;
    agent_reply_free(r);
    return true;
}

bool agent_client_freeze(agent_client *c, int timeout_ms, GError **error)
{
    return agent_simple(c, WISP_MSG_FREEZE, timeout_ms, error);
}

bool agent_client_thaw(agent_client *c, int timeout_ms, GError **error)
{
    return agent_simple(c, WISP_MSG_THAW, timeout_ms, error);
}

bool agent_client_shutdown(agent_client *c, int timeout_ms, GError **error)
{
    return agent_simple(c, WISP_MSG_SHUTDOWN, timeout_ms, error);
}

static struct wisp_msg *agent_take_msg(struct agent_reply *r)
{
    struct wisp_msg *m = g_new(struct wisp_msg, 1);

    *m = r->msg;
    if (r->data)
        g_bytes_unref(r->data);
    g_free(r);
    return m;
}

struct wisp_msg *agent_client_status(agent_client *c, int timeout_ms, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_STATUS};
    struct agent_reply *r = agent_request(c, &m, WISP_MSG_STATUS_REPLY, timeout_ms, error);

    return r ? agent_take_msg(r) : NULL;
}

bool agent_client_service_start(agent_client *c, const char *name, const char *const *argv,
                                const char *const *env, const char *cwd, enum wisp_restart restart,
                                uint32_t restart_delay_ms, int timeout_ms, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_SERVICE_START};
    struct agent_reply *r;

    m.u.service_start.name = (char *)name;
    m.u.service_start.argv = agent_strv(argv);
    m.u.service_start.env = agent_strv(env);
    m.u.service_start.cwd = (char *)(cwd ? cwd : "");
    m.u.service_start.restart = restart;
    m.u.service_start.restart_delay_ms = restart_delay_ms;
    r = agent_request(c, &m, WISP_MSG_OK, timeout_ms, error);
    if (!r)
        return false;
    agent_reply_free(r);
    return true;
}

bool agent_client_service_stop(agent_client *c, const char *name, int timeout_ms, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_SERVICE_STOP};
    struct agent_reply *r;

    m.u.service_ref.name = (char *)name;
    r = agent_request(c, &m, WISP_MSG_OK, timeout_ms, error);
    if (!r)
        return false;
    agent_reply_free(r);
    return true;
}

struct wisp_msg *agent_client_service_list(agent_client *c, int timeout_ms, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_SERVICE_LIST};
    struct agent_reply *r = agent_request(c, &m, WISP_MSG_SERVICE_LIST_REPLY, timeout_ms, error);

    return r ? agent_take_msg(r) : NULL;
}

char *agent_client_service_logs(agent_client *c, const char *name, uint32_t max_bytes, size_t *len,
                                int timeout_ms, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_SERVICE_LOGS};
    struct agent_reply *r;
    gsize size = 0;
    char *text;

    m.u.service_ref.name = (char *)name;
    m.u.service_ref.max_bytes = max_bytes;
    r = agent_request(c, &m, WISP_MSG_SERVICE_LOGS_REPLY, timeout_ms, error);
    if (!r)
        return NULL;
    const void *data = r->data ? g_bytes_get_data(r->data, &size) : NULL;
    text = g_malloc(size + 1);
    if (size)
        memcpy(text, data, size);
    text[size] = '\0';
    if (len)
        *len = size;
    agent_reply_free(r);
    return text;
}

/* ---- exec ---------------------------------------------------------------------------------- */

agent_exec *agent_exec_start(agent_client *c, const struct agent_exec_opts *opts, int timeout_ms,
                             GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_EXEC};
    agent_exec *e = g_new0(agent_exec, 1);
    struct agent_reply *r = NULL;

    e->c = c;
    e->window = opts->window ? opts->window : AGENT_DEFAULT_WINDOW;
    e->s = agent_stream_open(c, true);
    m.stream = e->s->id;
    m.u.exec.flags = (opts->tty ? WISP_EXEC_TTY : 0) | (opts->with_stdin ? WISP_EXEC_STDIN : 0);
    m.u.exec.rows = opts->rows ? opts->rows : 24;
    m.u.exec.cols = opts->cols ? opts->cols : 80;
    m.u.exec.window = e->window;
    m.u.exec.cwd = (char *)(opts->cwd ? opts->cwd : "");
    m.u.exec.argv = agent_strv(opts->argv);
    m.u.exec.env = agent_strv(opts->env);
    if (agent_send(c, &m, error))
        r = agent_wait_reply(c, e->s, "exec", agent_deadline(timeout_ms), error);
    if (r && r->msg.type != WISP_MSG_STARTED) {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_PROTOCOL, "exec: wisp-init answered %s",
                    wisp_msg_type_to_string(r->msg.type) ?: "?");
        agent_reply_free(r);
        r = NULL;
    }
    if (!r) {
        g_prefix_error(error, "%s: ", opts->argv[0]);
        agent_exec_free(e);
        return NULL;
    }
    e->pid = r->msg.u.started.pid;
    g_mutex_lock(&c->lock);
    e->s->stdin_credit += r->msg.u.started.stdin_window;
    g_mutex_unlock(&c->lock);
    agent_reply_free(r);
    return e;
}

void agent_exec_free(agent_exec *e)
{
    if (!e)
        return;
    /* The process goes on in the guest if it still runs: a host that lets go of a session
     * never kills the user's process. */
    agent_stream_close(e->c, e->s);
    g_free(e);
}

uint32_t agent_exec_pid(const agent_exec *e)
{
    return e->pid;
}

uint32_t agent_exec_stream(const agent_exec *e)
{
    return e->s->id;
}

agent_exec *agent_exec_adopt(agent_client *c, uint32_t stream, uint32_t window, GError **error)
{
    agent_exec *e = g_new0(agent_exec, 1);
    struct wisp_msg m = {.type = WISP_MSG_WINDOW, .stream = stream};

    e->c = c;
    e->window = window ? window : AGENT_DEFAULT_WINDOW;
    e->s = stream ? agent_stream_open_id(c, true, stream) : NULL;
    if (!e->s) {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_PROTOCOL, "adopt: stream %u is %s", stream,
                    stream ? "in use here" : "not a session");
        g_free(e);
        return NULL;
    }
    /* The increment becomes the session's credit; the guest answers with stdin credit. */
    m.u.window.increment = e->window;
    if (!agent_send(c, &m, error)) {
        agent_exec_free(e);
        return NULL;
    }
    return e;
}

static bool agent_exec_send_simple(agent_exec *e, struct wisp_msg *m, GError **error)
{
    m->stream = e->s->id;
    return agent_send(e->c, m, error);
}

bool agent_exec_write(agent_exec *e, const void *buf, size_t len, int timeout_ms, GError **error)
{
    agent_client *c = e->c;
    gint64 deadline = agent_deadline(timeout_ms);
    const uint8_t *p = buf;

    while (len > 0) {
        size_t n;
        g_mutex_lock(&c->lock);
        while (e->s->stdin_credit == 0 && !e->s->exited && !c->closed &&
               g_get_monotonic_time() < deadline)
            g_cond_wait_until(&c->cond, &c->lock, deadline);
        if (e->s->stdin_credit == 0) {
            if (c->closed)
                agent_set_closed_error(c, error);
            else if (e->s->exited)
                g_set_error(error, AGENT_ERROR, AGENT_ERROR_CLOSED,
                            "stdin: the process has exited");
            else
                g_set_error(error, AGENT_ERROR, AGENT_ERROR_TIMEOUT,
                            "stdin: no credit from wisp-init in time");
            g_mutex_unlock(&c->lock);
            return false;
        }
        n = MIN(len, MIN(e->s->stdin_credit, AGENT_DATA_MAX));
        e->s->stdin_credit -= n;
        g_mutex_unlock(&c->lock);

        struct wisp_msg m = {.type = WISP_MSG_STDIN};
        m.u.data.data = p;
        m.u.data.len = (uint32_t)n;
        if (!agent_exec_send_simple(e, &m, error))
            return false;
        p += n;
        len -= n;
    }
    return true;
}

bool agent_exec_close_stdin(agent_exec *e, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_STDIN_CLOSE};

    return agent_exec_send_simple(e, &m, error);
}

bool agent_exec_signal(agent_exec *e, int signo, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_SIGNAL};

    m.u.signal.signo = (uint32_t)signo;
    return agent_exec_send_simple(e, &m, error);
}

bool agent_exec_resize(agent_exec *e, uint16_t rows, uint16_t cols, GError **error)
{
    struct wisp_msg m = {.type = WISP_MSG_RESIZE};

    m.u.resize.rows = rows;
    m.u.resize.cols = cols;
    return agent_exec_send_simple(e, &m, error);
}

/* Gives credit back once a quarter of the window was consumed: fewer WINDOW frames, and the
 * guest never stalls for long. */
static bool agent_exec_grant(agent_exec *e, size_t consumed, GError **error)
{
    e->consumed += (uint32_t)consumed;
    if (e->consumed < e->window / 4)
        return true;
    struct wisp_msg m = {.type = WISP_MSG_WINDOW};
    m.u.window.increment = e->consumed;
    e->consumed = 0;
    return agent_exec_send_simple(e, &m, error);
}

ssize_t agent_exec_read(agent_exec *e, void *buf, size_t cap, enum agent_stream_kind *kind,
                        int timeout_ms, GError **error)
{
    agent_client *c = e->c;
    gint64 deadline = agent_deadline(timeout_ms);
    struct agent_chunk *ch;
    size_t n = 0;

    g_mutex_lock(&c->lock);
    while (!(ch = g_queue_peek_head(&e->s->chunks)) && !e->s->exited && !c->closed &&
           g_get_monotonic_time() < deadline)
        g_cond_wait_until(&c->cond, &c->lock, deadline);
    if (ch) {
        gsize size;
        const uint8_t *data = g_bytes_get_data(ch->bytes, &size);
        n = MIN(cap, size - ch->off);
        memcpy(buf, data + ch->off, n);
        ch->off += n;
        *kind = ch->kind;
        e->s->buffered -= n;
        if (ch->off == size)
            agent_chunk_free(g_queue_pop_head(&e->s->chunks));
    } else if (!e->s->exited) {
        if (c->closed)
            agent_set_closed_error(c, error);
        else
            g_set_error(error, AGENT_ERROR, AGENT_ERROR_TIMEOUT, "no output in %d ms", timeout_ms);
        g_mutex_unlock(&c->lock);
        return -1;
    }
    g_mutex_unlock(&c->lock);
    if (n && !agent_exec_grant(e, n, error))
        return -1;
    return (ssize_t)n;
}

bool agent_exec_wait(agent_exec *e, int timeout_ms, int *kind, int *code, GError **error)
{
    agent_client *c = e->c;
    gint64 deadline = agent_deadline(timeout_ms);
    bool ok;

    g_mutex_lock(&c->lock);
    for (;;) {
        size_t dropped = e->s->buffered;
        /* Output nobody reads is dropped, and its credit given back, so the process is never
         * blocked writing while we wait for it to end. */
        g_queue_clear_full(&e->s->chunks, (GDestroyNotify)agent_chunk_free);
        e->s->buffered = 0;
        if (dropped) {
            g_mutex_unlock(&c->lock);
            e->consumed += (uint32_t)dropped;
            struct wisp_msg m = {.type = WISP_MSG_WINDOW};
            m.u.window.increment = e->consumed;
            e->consumed = 0;
            if (!agent_exec_send_simple(e, &m, error))
                return false;
            g_mutex_lock(&c->lock);
            continue;
        }
        if (e->s->exited || c->closed || g_get_monotonic_time() >= deadline)
            break;
        g_cond_wait_until(&c->cond, &c->lock, deadline);
    }
    ok = e->s->exited;
    if (ok) {
        *kind = e->s->exit_kind;
        *code = e->s->exit_code;
    } else if (c->closed) {
        agent_set_closed_error(c, error);
    } else {
        g_set_error(error, AGENT_ERROR, AGENT_ERROR_TIMEOUT, "the process did not exit in %d ms",
                    timeout_ms);
    }
    g_mutex_unlock(&c->lock);
    return ok;
}

int agent_exec_status_code(int kind, int code)
{
    return kind == WISP_EXIT_SIGNAL ? 128 + code : code;
}

struct agent_feeder {
    agent_exec *e;
    const uint8_t *data;
    size_t len;
    int timeout_ms;
    GError *error;
};

/* Feeds stdin from its own thread, so that a command that writes before it has read all its
 * input (as most filters do) cannot deadlock against us. */
static void *agent_feed_stdin(void *opaque)
{
    struct agent_feeder *f = opaque;

    if (agent_exec_write(f->e, f->data, f->len, f->timeout_ms, &f->error))
        agent_exec_close_stdin(f->e, &f->error);
    return NULL;
}

int agent_exec_run(agent_client *c, const char *const *argv, const void *stdin_data,
                   size_t stdin_len, char **out, size_t *out_len, char **err, int timeout_ms,
                   GError **error)
{
    struct agent_exec_opts opts = {.argv = argv, .with_stdin = stdin_data != NULL};
    gint64 deadline = agent_deadline(timeout_ms);
    GByteArray *o = g_byte_array_new(), *e2 = g_byte_array_new();
    struct agent_feeder feeder = {0};
    GThread *feeder_thread = NULL;
    uint8_t *buf = g_malloc(65536);
    int kind = 0, code = 0, status = -1;
    agent_exec *e;

    e = agent_exec_start(c, &opts, timeout_ms, error);
    if (!e)
        goto out;
    if (stdin_data) {
        feeder = (struct agent_feeder){e, stdin_data, stdin_len, timeout_ms, NULL};
        feeder_thread = g_thread_new("wisp-agent-stdin", agent_feed_stdin, &feeder);
    }
    for (;;) {
        enum agent_stream_kind k;
        int left = (int)MAX((deadline - g_get_monotonic_time()) / 1000, 1);
        ssize_t n = agent_exec_read(e, buf, 65536, &k, left, error);
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        g_byte_array_append(k == AGENT_STDERR ? e2 : o, buf, (guint)n);
    }
    if (feeder_thread) {
        g_thread_join(feeder_thread);
        feeder_thread = NULL;
        /* A process may exit without reading all its input: that is its business. */
        if (feeder.error)
            log_debug(AGENT_LOG, "stdin: %s", feeder.error->message);
        g_clear_error(&feeder.error);
    }
    if (!agent_exec_wait(e, 1000, &kind, &code, error))
        goto out;
    status = agent_exec_status_code(kind, code);
out:
    if (feeder_thread) {
        /* The feeder ends once the session fails (closed) or times out. */
        g_thread_join(feeder_thread);
        g_clear_error(&feeder.error);
    }
    agent_exec_free(e);
    if (out_len)
        *out_len = o->len;
    g_byte_array_append(o, (const guint8 *)"", 1);
    g_byte_array_append(e2, (const guint8 *)"", 1);
    if (out)
        *out = (char *)g_byte_array_free(o, FALSE);
    else
        g_byte_array_free(o, TRUE);
    if (err)
        *err = (char *)g_byte_array_free(e2, FALSE);
    else
        g_byte_array_free(e2, TRUE);
    g_free(buf);
    return status;
}
