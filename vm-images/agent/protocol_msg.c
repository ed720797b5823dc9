/* protocol_msg.c: encoding and decoding of Wisp control message payloads.
 *
 * Payload fields are little-endian integers, strings as a u32 length then the bytes (no NUL on
 * the wire, none allowed inside), string arrays as a u32 count then that many strings, and
 * record arrays as a u32 count then the records.  Every read is checked against the bytes left,
 * and every count against what the remaining bytes could possibly hold, before anything is
 * allocated.  docs/protocol.md has the layout of every message.
 */
#include "protocol.h"

#include <stdlib.h>
#include <string.h>

#include "protocol_le.h"

/* ---- decoding ---- */

/* A bump allocator over one block sized from the payload length before decoding starts.  The
 * bound in arena_size_for covers the worst case, so running out means a bug, reported as
 * -WISP_E_NOMEM rather than an overflow. */
struct arena {
    uint8_t *base;
    size_t size, used;
};

/* Every string costs at least 4 payload bytes and at most its length plus a NUL here; every
 * array entry costs at least 4 payload bytes (9 for a record) and at most one pointer (40 bytes
 * for a record) here; plus alignment.  4 * length + 256 is above all of that. */
static size_t arena_size_for(uint32_t length)
{
    return 4 * (size_t)length + 256;
}

static void *arena_alloc(struct arena *a, size_t n, size_t align)
{
    size_t start = (a->used + align - 1) & ~(align - 1);
    if (start > a->size || n > a->size - start)
        return NULL;
    a->used = start + n;
    return a->base + start;
}

struct cursor {
    const uint8_t *p;
    size_t len, off;
    int err; /* first error, sticky: later reads return zeros */
    struct arena *arena;
};

static bool cur_need(struct cursor *c, size_t n)
{
    if (c->err)
        return false;
    if (n > c->len - c->off) {
        c->err = -WISP_E_TRUNCATED;
        return false;
    }
    return true;
}

static uint64_t cur_int(struct cursor *c, int n)
{
    if (!cur_need(c, (size_t)n))
        return 0;
    uint64_t v = get_le(c->p + c->off, n);
    c->off += (size_t)n;
    return v;
}

static uint8_t cur_u8(struct cursor *c)
{
    return (uint8_t)cur_int(c, 1);
}

static uint16_t cur_u16(struct cursor *c)
{
    return (uint16_t)cur_int(c, 2);
}

static uint32_t cur_u32(struct cursor *c)
{
    return (uint32_t)cur_int(c, 4);
}

static uint64_t cur_u64(struct cursor *c)
{
    return cur_int(c, 8);
}

static void cur_fail(struct cursor *c, int err)
{
    if (!c->err)
        c->err = err;
}

static char *cur_str(struct cursor *c)
{
    uint32_t n = cur_u32(c);
    if (!cur_need(c, n))
        return NULL;
    const uint8_t *src = c->p + c->off;
    if (memchr(src, '\0', n) != NULL) {
        cur_fail(c, -WISP_E_BAD_FIELD);
        return NULL;
    }
    char *s = arena_alloc(c->arena, (size_t)n + 1, 1);
    if (s == NULL) {
        cur_fail(c, -WISP_E_NOMEM);
        return NULL;
    }
    memcpy(s, src, n);
    s[n] = '\0';
    c->off += n;
    return s;
}

/* Reads a record count and checks it against the bytes left (each record takes at least
 * min_size) and WISP_PROTO_MAX_ITEMS before anything is allocated for it. */
static uint32_t cur_count(struct cursor *c, size_t min_size)
{
    uint32_t n = cur_u32(c);
    if (c->err)
        return 0;
    if (n > WISP_PROTO_MAX_ITEMS) {
        cur_fail(c, -WISP_E_BAD_FIELD);
        return 0;
    }
    if ((size_t)n * min_size > c->len - c->off) {
        cur_fail(c, -WISP_E_TRUNCATED);
        return 0;
    }
    return n;
}

static void cur_strv(struct cursor *c, struct wisp_strv *out)
{
    out->count = cur_count(c, 4);
    out->v = NULL;
    if (c->err)
        return;
    out->v = arena_alloc(c->arena, ((size_t)out->count + 1) * sizeof(char *), sizeof(char *));
    if (out->v == NULL) {
        cur_fail(c, -WISP_E_NOMEM);
        return;
    }
    for (uint32_t i = 0; i < out->count; i++)
        out->v[i] = cur_str(c);
    out->v[out->count] = NULL;
}

static void *cur_records(struct cursor *c, uint32_t *count, size_t wire_size, size_t mem_size)
{
    *count = cur_count(c, wire_size);
    if (c->err || *count == 0)
        return NULL;
    void *r = arena_alloc(c->arena, (size_t)*count * mem_size, 8);
    if (r == NULL)
        cur_fail(c, -WISP_E_NOMEM);
    else
        memset(r, 0, (size_t)*count * mem_size);
    return r;
}

/* Rules on values that the layout alone does not enforce; shared by encode and decode so that
 * whatever encodes also decodes. */
static int msg_validate(const struct wisp_msg *m)
{
    switch (m->type) {
    case WISP_MSG_HELLO:
        if (m->u.hello.min_version > m->u.hello.max_version)
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_EXEC:
        if (m->u.exec.flags & ~(WISP_EXEC_TTY | WISP_EXEC_STDIN))
            return -WISP_E_BAD_FIELD;
        if (m->u.exec.argv.count < 1)
            return -WISP_E_BAD_FIELD;
        if (m->stream == 0)
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_SEED:
        if (m->u.data.len < WISP_SEED_MIN_BYTES || m->u.data.len > WISP_SEED_MAX_BYTES)
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_SIGNAL:
        if (m->u.signal.signo < 1 || m->u.signal.signo > 64)
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_EXIT:
        if (m->u.exit.kind > WISP_EXIT_SIGNAL || m->u.exit.core_dumped > 1)
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_SERVICE_START:
        if (m->u.service_start.name[0] == '\0' || strchr(m->u.service_start.name, '/') != NULL)
            return -WISP_E_BAD_FIELD;
        if (m->u.service_start.argv.count < 1 || m->u.service_start.restart > WISP_RESTART_ALWAYS)
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_SERVICE_STOP:
    case WISP_MSG_SERVICE_LOGS:
        if (m->u.service_ref.name[0] == '\0')
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_STATUS_REPLY:
        for (uint32_t i = 0; i < m->u.status.listener_count; i++)
            if (m->u.status.listeners[i].family != 4 && m->u.status.listeners[i].family != 6)
                return -WISP_E_BAD_FIELD;
        break;
    default:
        break;
    }
    return 0;
}

static void decode_fields(struct cursor *c, struct wisp_msg *m)
{
    switch (m->type) {
    case WISP_MSG_OK:
    case WISP_MSG_STDIN_CLOSE:
    case WISP_MSG_FREEZE:
    case WISP_MSG_THAW:
    case WISP_MSG_SERVICE_LIST:
    case WISP_MSG_STATUS:
    case WISP_MSG_SHUTDOWN:
        break;
    case WISP_MSG_HELLO:
        m->u.hello.min_version = cur_u16(c);
        m->u.hello.max_version = cur_u16(c);
        m->u.hello.nonce = cur_u64(c);
        m->u.hello.client = cur_str(c);
        break;
    case WISP_MSG_READY:
        m->u.ready.version = cur_u16(c);
        m->u.ready.max_payload = cur_u32(c);
        m->u.ready.nonce = cur_u64(c);
        m->u.ready.boot_id = cur_u64(c);
        m->u.ready.uptime_ms = cur_u64(c);
        m->u.ready.attached = cur_u8(c);
        m->u.ready.agent = cur_str(c);
        break;
    case WISP_MSG_ERROR:
        m->u.error.code = cur_u32(c);
        m->u.error.sys_errno = (int32_t)cur_u32(c);
        m->u.error.message = cur_str(c);
        break;
    case WISP_MSG_ATTACH:
        m->u.attach.device = cur_str(c);
        m->u.attach.hostname = cur_str(c);
        cur_strv(c, &m->u.attach.env);
        break;
    case WISP_MSG_EXEC:
        m->u.exec.flags = cur_u32(c);
        m->u.exec.rows = cur_u16(c);
        m->u.exec.cols = cur_u16(c);
        m->u.exec.window = cur_u32(c);
        m->u.exec.cwd = cur_str(c);
        cur_strv(c, &m->u.exec.argv);
        cur_strv(c, &m->u.exec.env);
        break;
    case WISP_MSG_STARTED:
        m->u.started.pid = cur_u32(c);
        m->u.started.stdin_window = cur_u32(c);
        break;
    case WISP_MSG_STDIN:
    case WISP_MSG_STDOUT:
    case WISP_MSG_STDERR:
    case WISP_MSG_SERVICE_LOGS_REPLY:
    case WISP_MSG_SEED:
        m->u.data.data = c->p;
        m->u.data.len = (uint32_t)c->len;
        c->off = c->len;
        break;
    case WISP_MSG_WINDOW:
        m->u.window.increment = cur_u32(c);
        break;
    case WISP_MSG_SIGNAL:
        m->u.signal.signo = cur_u32(c);
        break;
    case WISP_MSG_RESIZE:
        m->u.resize.rows = cur_u16(c);
        m->u.resize.cols = cur_u16(c);
        break;
    case WISP_MSG_EXIT:
        m->u.exit.kind = cur_u8(c);
        m->u.exit.core_dumped = cur_u8(c);
        m->u.exit.code = cur_u32(c);
        break;
    case WISP_MSG_SERVICE_START:
        m->u.service_start.name = cur_str(c);
        cur_strv(c, &m->u.service_start.argv);
        cur_strv(c, &m->u.service_start.env);
        m->u.service_start.cwd = cur_str(c);
        m->u.service_start.restart = cur_u32(c);
        m->u.service_start.restart_delay_ms = cur_u32(c);
        break;
    case WISP_MSG_SERVICE_STOP:
    case WISP_MSG_SERVICE_LOGS:
        m->u.service_ref.name = cur_str(c);
        m->u.service_ref.max_bytes = cur_u32(c);
        break;
    case WISP_MSG_SERVICE_LIST_REPLY: {
        struct wisp_service_info *s =
            cur_records(c, &m->u.service_list.count, 4 + 1 + 4 + 4 + 1 + 4, sizeof *s);
        m->u.service_list.services = s;
        for (uint32_t i = 0; s != NULL && i < m->u.service_list.count; i++) {
            s[i].name = cur_str(c);
            s[i].state = cur_u8(c);
            s[i].pid = cur_u32(c);
            s[i].restarts = cur_u32(c);
            s[i].last_kind = cur_u8(c);
            s[i].last_code = cur_u32(c);
        }
        break;
    }
    case WISP_MSG_STATUS_REPLY: {
        m->u.status.uptime_ms = cur_u64(c);
        m->u.status.mem_total_kib = cur_u64(c);
        m->u.status.mem_available_kib = cur_u64(c);
        for (int i = 0; i < 3; i++)
            m->u.status.load_milli[i] = cur_u32(c);
        m->u.status.idle_ms = cur_u64(c);
        m->u.status.attached = cur_u8(c);
        m->u.status.frozen = cur_u8(c);
        struct wisp_listener *l =
            cur_records(c, &m->u.status.listener_count, 1 + 2 + 16, sizeof *l);
        m->u.status.listeners = l;
        for (uint32_t i = 0; l != NULL && i < m->u.status.listener_count; i++) {
            l[i].family = cur_u8(c);
            l[i].port = cur_u16(c);
            if (cur_need(c, 16)) {
                memcpy(l[i].addr, c->p + c->off, 16);
                c->off += 16;
            }
        }
        struct wisp_session_info *s =
            cur_records(c, &m->u.status.session_count, 4 + 4 + 1, sizeof *s);
        m->u.status.sessions = s;
        for (uint32_t i = 0; s != NULL && i < m->u.status.session_count; i++) {
            s[i].stream = cur_u32(c);
            s[i].pid = cur_u32(c);
            s[i].state = cur_u8(c);
        }
        break;
    }
    default:
        cur_fail(c, -WISP_E_UNKNOWN_TYPE);
        break;
    }
}

static bool type_carries_data(uint8_t type)
{
    return type == WISP_MSG_STDIN || type == WISP_MSG_STDOUT || type == WISP_MSG_STDERR ||
           type == WISP_MSG_SERVICE_LOGS_REPLY || type == WISP_MSG_SEED;
}

int wisp_msg_decode(const struct wisp_header *h, const uint8_t *payload, struct wisp_msg *out)
{
    memset(out, 0, sizeof *out);
    out->type = h->type;
    out->stream = h->stream;
    if (!wisp_msg_type_known(h->type))
        return -WISP_E_UNKNOWN_TYPE;
    if (h->length > WISP_PROTO_MAX_PAYLOAD)
        return -WISP_E_TOO_LARGE;

    struct arena arena = {0};
    if (!type_carries_data(h->type) && h->length > 0) {
        arena.size = arena_size_for(h->length);
        arena.base = malloc(arena.size);
        if (arena.base == NULL)
            return -WISP_E_NOMEM;
    }
    struct cursor c = {.p = payload, .len = h->length, .arena = &arena};
    decode_fields(&c, out);
    int r = c.err;
    if (r == 0 && c.off != c.len)
        r = -WISP_E_TRAILING;
    if (r == 0)
        r = msg_validate(out);
    if (r < 0) {
        free(arena.base);
        uint8_t type = out->type;
        uint32_t stream = out->stream;
        memset(out, 0, sizeof *out);
        out->type = type;
        out->stream = stream;
        return r;
    }
    out->arena = arena.base;
    return 0;
}

void wisp_msg_free(struct wisp_msg *m)
{
    if (m == NULL)
        return;
    free(m->arena);
    m->arena = NULL;
}

/* ---- encoding ---- */

struct writer {
    uint8_t *p;
    size_t cap, len;
    bool overflow;
};

static void w_bytes(struct writer *w, const void *src, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return;
    }
    if (n > 0)
        memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void w_int(struct writer *w, uint64_t v, int n)
{
    uint8_t b[8];
    put_le(b, v, n);
    w_bytes(w, b, (size_t)n);
}

static void w_str(struct writer *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > UINT32_MAX) {
        w->overflow = true;
        return;
    }
    w_int(w, n, 4);
    w_bytes(w, s, n);
}

static void w_strv(struct writer *w, const struct wisp_strv *v)
{
    if (v->count > WISP_PROTO_MAX_ITEMS) {
        w->overflow = true;
        return;
    }
    w_int(w, v->count, 4);
    for (uint32_t i = 0; i < v->count; i++)
        w_str(w, v->v[i]);
}

static void encode_fields(struct writer *w, const struct wisp_msg *m)
{
    switch (m->type) {
    case WISP_MSG_HELLO:
        w_int(w, m->u.hello.min_version, 2);
        w_int(w, m->u.hello.max_version, 2);
        w_int(w, m->u.hello.nonce, 8);
        w_str(w, m->u.hello.client);
        break;
    case WISP_MSG_READY:
        w_int(w, m->u.ready.version, 2);
        w_int(w, m->u.ready.max_payload, 4);
        w_int(w, m->u.ready.nonce, 8);
        w_int(w, m->u.ready.boot_id, 8);
        w_int(w, m->u.ready.uptime_ms, 8);
        w_int(w, m->u.ready.attached, 1);
        w_str(w, m->u.ready.agent);
        break;
    case WISP_MSG_ERROR:
        w_int(w, m->u.error.code, 4);
        w_int(w, (uint32_t)m->u.error.sys_errno, 4);
        w_str(w, m->u.error.message);
        break;
    case WISP_MSG_ATTACH:
        w_str(w, m->u.attach.device);
        w_str(w, m->u.attach.hostname);
        w_strv(w, &m->u.attach.env);
        break;
    case WISP_MSG_EXEC:
        w_int(w, m->u.exec.flags, 4);
        w_int(w, m->u.exec.rows, 2);
        w_int(w, m->u.exec.cols, 2);
        w_int(w, m->u.exec.window, 4);
        w_str(w, m->u.exec.cwd);
        w_strv(w, &m->u.exec.argv);
        w_strv(w, &m->u.exec.env);
        break;
    case WISP_MSG_STARTED:
        w_int(w, m->u.started.pid, 4);
        w_int(w, m->u.started.stdin_window, 4);
        break;
    case WISP_MSG_STDIN:
    case WISP_MSG_STDOUT:
    case WISP_MSG_STDERR:
    case WISP_MSG_SERVICE_LOGS_REPLY:
    case WISP_MSG_SEED:
        w_bytes(w, m->u.data.data, m->u.data.len);
        break;
    case WISP_MSG_WINDOW:
        w_int(w, m->u.window.increment, 4);
        break;
    case WISP_MSG_SIGNAL:
        w_int(w, m->u.signal.signo, 4);
        break;
    case WISP_MSG_RESIZE:
        w_int(w, m->u.resize.rows, 2);
        w_int(w, m->u.resize.cols, 2);
        break;
    case WISP_MSG_EXIT:
        w_int(w, m->u.exit.kind, 1);
        w_int(w, m->u.exit.core_dumped, 1);
        w_int(w, m->u.exit.code, 4);
        break;
    case WISP_MSG_SERVICE_START:
        w_str(w, m->u.service_start.name);
        w_strv(w, &m->u.service_start.argv);
        w_strv(w, &m->u.service_start.env);
        w_str(w, m->u.service_start.cwd);
        w_int(w, m->u.service_start.restart, 4);
        w_int(w, m->u.service_start.restart_delay_ms, 4);
        break;
    case WISP_MSG_SERVICE_STOP:
    case WISP_MSG_SERVICE_LOGS:
        w_str(w, m->u.service_ref.name);
        w_int(w, m->u.service_ref.max_bytes, 4);
        break;
    case WISP_MSG_SERVICE_LIST_REPLY:
        if (m->u.service_list.count > WISP_PROTO_MAX_ITEMS)
            w->overflow = true;
        w_int(w, m->u.service_list.count, 4);
        for (uint32_t i = 0; i < m->u.service_list.count && !w->overflow; i++) {
            const struct wisp_service_info *s = &m->u.service_list.services[i];
            w_str(w, s->name);
            w_int(w, s->state, 1);
            w_int(w, s->pid, 4);
            w_int(w, s->restarts, 4);
            w_int(w, s->last_kind, 1);
            w_int(w, s->last_code, 4);
        }
        break;
    case WISP_MSG_STATUS_REPLY:
        w_int(w, m->u.status.uptime_ms, 8);
        w_int(w, m->u.status.mem_total_kib, 8);
        w_int(w, m->u.status.mem_available_kib, 8);
        for (int i = 0; i < 3; i++)
            w_int(w, m->u.status.load_milli[i], 4);
        w_int(w, m->u.status.idle_ms, 8);
        w_int(w, m->u.status.attached, 1);
        w_int(w, m->u.status.frozen, 1);
        if (m->u.status.listener_count > WISP_PROTO_MAX_ITEMS ||
            m->u.status.session_count > WISP_PROTO_MAX_ITEMS)
            w->overflow = true;
        w_int(w, m->u.status.listener_count, 4);
        for (uint32_t i = 0; i < m->u.status.listener_count && !w->overflow; i++) {
            w_int(w, m->u.status.listeners[i].family, 1);
            w_int(w, m->u.status.listeners[i].port, 2);
            w_bytes(w, m->u.status.listeners[i].addr, 16);
        }
        w_int(w, m->u.status.session_count, 4);
        for (uint32_t i = 0; i < m->u.status.session_count && !w->overflow; i++) {
            w_int(w, m->u.status.sessions[i].stream, 4);
            w_int(w, m->u.status.sessions[i].pid, 4);
            w_int(w, m->u.status.sessions[i].state, 1);
        }
        break;
    default:
        break;
    }
}

/* Strings given to the encoder must decode again: NULL stands for "", but a string array
 * entry must be a real string. */
static bool strv_ok(const struct wisp_strv *v)
{
    if (v->count > 0 && v->v == NULL)
        return false;
    for (uint32_t i = 0; i < v->count; i++)
        if (v->v[i] == NULL)
            return false;
    return true;
}

int wisp_msg_encode(const struct wisp_msg *m, uint8_t *buf, size_t cap)
{
    if (!wisp_msg_type_known(m->type))
        return -WISP_E_UNKNOWN_TYPE;
    if (cap < WISP_PROTO_HEADER_SIZE)
        return -WISP_E_TOO_LARGE;
    /* msg_validate reads names; the encoder accepts NULL for an empty string, so check those
     * it would dereference. */
    switch (m->type) {
    case WISP_MSG_EXEC:
        if (!strv_ok(&m->u.exec.argv) || !strv_ok(&m->u.exec.env))
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_ATTACH:
        if (!strv_ok(&m->u.attach.env))
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_SERVICE_START:
        if (m->u.service_start.name == NULL || !strv_ok(&m->u.service_start.argv) ||
            !strv_ok(&m->u.service_start.env))
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_SERVICE_STOP:
    case WISP_MSG_SERVICE_LOGS:
        if (m->u.service_ref.name == NULL)
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_SERVICE_LIST_REPLY:
        if (m->u.service_list.count > 0 && m->u.service_list.services == NULL)
            return -WISP_E_BAD_FIELD;
        break;
    case WISP_MSG_STATUS_REPLY:
        if ((m->u.status.listener_count > 0 && m->u.status.listeners == NULL) ||
            (m->u.status.session_count > 0 && m->u.status.sessions == NULL))
            return -WISP_E_BAD_FIELD;
        break;
    default:
        break;
    }
    int r = msg_validate(m);
    if (r < 0)
        return r;

    size_t room = cap - WISP_PROTO_HEADER_SIZE;
    if (room > WISP_PROTO_MAX_PAYLOAD)
        room = WISP_PROTO_MAX_PAYLOAD;
    struct writer w = {.p = buf + WISP_PROTO_HEADER_SIZE, .cap = room};
    encode_fields(&w, m);
    if (w.overflow)
        return -WISP_E_TOO_LARGE;
    wisp_header_encode(buf, m->type, m->stream, (uint32_t)w.len);
    return (int)(WISP_PROTO_HEADER_SIZE + w.len);
}
