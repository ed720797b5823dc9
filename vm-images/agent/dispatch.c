/* dispatch.c: one frame from the host to the function that handles its message type.  Each
 * handler answers on the request's stream; a frame that does not decode is answered here. */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "service.h"
#include "session.h"
#include "status.h"

void agent_send_ready(struct agent *a, uint64_t nonce)
{
    struct wisp_msg m = {.type = WISP_MSG_READY, .stream = 0};
    m.u.ready.version = WISP_PROTO_VERSION;
    m.u.ready.max_payload = WISP_PROTO_MAX_PAYLOAD;
    m.u.ready.nonce = nonce;
    m.u.ready.boot_id = a->boot_id;
    m.u.ready.uptime_ms = agent_now_ms();
    m.u.ready.attached = a->ct.attached;
    m.u.ready.agent = AGENT_NAME;
    channel_send(&a->chan, &m);
}

static void handle_hello(struct agent *a, const struct wisp_msg *m)
{
    if (m->u.hello.max_version < WISP_PROTO_MIN_VERSION ||
        m->u.hello.min_version > WISP_PROTO_VERSION) {
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_VERSION, 0,
                           "host speaks %u..%u, guest %u..%u", m->u.hello.min_version,
                           m->u.hello.max_version, WISP_PROTO_MIN_VERSION, WISP_PROTO_VERSION);
        return;
    }
    log_info("hello from %s", m->u.hello.client);
    agent_send_ready(a, m->u.hello.nonce);
}

static void handle_attach(struct agent *a, const struct wisp_msg *m)
{
    if (a->ct.attached) {
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0, "already attached");
        return;
    }
    if (a->serve_fd_mode) {
        /* A test on a host, whose own disks are not ours to fsck or mount. */
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0,
                           "no attach in --serve-fd mode");
        return;
    }
    char msg[256] = "";
    uint64_t t0 = agent_now_ms();
    int r = container_attach(&a->ct, m->u.attach.device, m->u.attach.hostname, &m->u.attach.env,
                             msg, sizeof msg);
    if (r < 0) {
        log_error("attach: %s", msg);
        channel_send_error(&a->chan, m->stream, WISP_E_SYSTEM, -r, "%s", msg);
        return;
    }
    log_info("attached %s in %llu ms", a->ct.device, (unsigned long long)(agent_now_ms() - t0));
    agent_touch(a);
    channel_send_ok(&a->chan, m->stream);
    services_restore(a);
}

/* Clones restored from one template snapshot start with the template's CRNG state: without
 * this, every sprite of a pool would draw the same "random" numbers.  The host's bytes are
 * mixed in and credited (RNDADDENTROPY), then the CRNG is rekeyed at once (RNDRESEEDCRNG)
 * rather than at its next scheduled reseed, so the very next getrandom() differs per clone. */
static int seed_kernel_rng(const uint8_t *bytes, uint32_t len, const char **step)
{
    struct rand_pool_info *info = calloc(1, sizeof *info + len);
    int fd, r = 0;

    *step = "allocate";
    if (info == NULL)
        return -ENOMEM;
    info->entropy_count = (int)(len * 8);
    info->buf_size = (int)len;
    memcpy(info->buf, bytes, len);
    *step = "open /dev/urandom";
    fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    *step = "RNDADDENTROPY";
    if (ioctl(fd, RNDADDENTROPY, info) < 0) {
        r = -errno;
        goto out;
    }
    *step = "RNDRESEEDCRNG";
    if (ioctl(fd, RNDRESEEDCRNG) < 0)
        r = -errno;
out:
    if (fd >= 0)
        close(fd);
    explicit_bzero(info->buf, len);
    free(info);
    return r;
}

static void handle_seed(struct agent *a, const struct wisp_msg *m)
{
    const char *step = "";
    if (a->serve_fd_mode) {
        /* A test on a host, whose kernel RNG is not ours to feed. */
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0, "no seed in --serve-fd mode");
        return;
    }
    int r = seed_kernel_rng(m->u.data.data, m->u.data.len, &step);
    if (r < 0) {
        errno = -r;
        log_error("seed: %s: %m", step);
        channel_send_error(&a->chan, m->stream, WISP_E_SYSTEM, -r, "seed: %s: %m", step);
        return;
    }
    log_info("kernel RNG re-seeded with %u host bytes", m->u.data.len);
    channel_send_ok(&a->chan, m->stream);
}

static void handle_freeze(struct agent *a, const struct wisp_msg *m)
{
    bool freeze = m->type == WISP_MSG_FREEZE;
    if (!a->ct.attached) {
        channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0, "no disk attached");
        return;
    }
    int r = container_freeze(&a->ct, freeze);
    if (r < 0) {
        errno = -r;
        channel_send_error(&a->chan, m->stream, WISP_E_SYSTEM, -r, "%s: %m",
                           freeze ? "FIFREEZE" : "FITHAW");
        return;
    }
    channel_send_ok(&a->chan, m->stream);
}

static void handle_shutdown(struct agent *a, const struct wisp_msg *m)
{
    log_info("shutdown requested");
    channel_send_ok(&a->chan, m->stream);
    /* A moment for the OK to leave before the container is stopped. */
    a->shutdown_at_ms = agent_now_ms() + 100;
}

static void handle_not_a_request(struct agent *a, const struct wisp_msg *m)
{
    channel_send_error(&a->chan, m->stream, WISP_E_BAD_STATE, 0, "%s is not a request",
                       wisp_msg_type_to_string(m->type));
}

typedef void (*handler_fn)(struct agent *a, const struct wisp_msg *m);

static handler_fn handler_for(uint8_t type)
{
    switch ((enum wisp_msg_type)type) {
    case WISP_MSG_HELLO:
        return handle_hello;
    case WISP_MSG_ATTACH:
        return handle_attach;
    case WISP_MSG_SEED:
        return handle_seed;
    case WISP_MSG_EXEC:
        return session_exec;
    case WISP_MSG_STDIN:
        return session_stdin;
    case WISP_MSG_STDIN_CLOSE:
        return session_stdin_close;
    case WISP_MSG_WINDOW:
        return session_window;
    case WISP_MSG_SIGNAL:
        return session_signal;
    case WISP_MSG_RESIZE:
        return session_resize;
    case WISP_MSG_FREEZE:
    case WISP_MSG_THAW:
        return handle_freeze;
    case WISP_MSG_SERVICE_START:
        return service_start;
    case WISP_MSG_SERVICE_STOP:
        return service_stop;
    case WISP_MSG_SERVICE_LIST:
        return service_list;
    case WISP_MSG_SERVICE_LOGS:
        return service_logs;
    case WISP_MSG_STATUS:
        return status_reply;
    case WISP_MSG_SHUTDOWN:
        return handle_shutdown;
    case WISP_MSG_READY:
    case WISP_MSG_OK:
    case WISP_MSG_ERROR:
    case WISP_MSG_STARTED:
    case WISP_MSG_STDOUT:
    case WISP_MSG_STDERR:
    case WISP_MSG_EXIT:
    case WISP_MSG_SERVICE_LIST_REPLY:
    case WISP_MSG_SERVICE_LOGS_REPLY:
    case WISP_MSG_STATUS_REPLY:
        return handle_not_a_request;
    }
    return NULL;
}

void agent_handle_frame(struct agent *a, const struct wisp_frame *f)
{
    struct wisp_msg m;
    int r = wisp_msg_decode(&f->h, f->payload, &m);
    if (r < 0) {
        const char *name = wisp_msg_type_to_string(f->h.type);
        channel_send_error(&a->chan, f->h.stream, r, 0, "%s frame (type 0x%02x): %s",
                           name ? name : "unknown", f->h.type, wisp_err_to_string(r));
        return;
    }
    log_debug("frame %s on stream %u (%u bytes)", wisp_msg_type_to_string(m.type), m.stream,
              f->h.length);
    handler_fn fn = handler_for(m.type);
    if (a->shutdown_at_ms && m.type != WISP_MSG_HELLO)
        channel_send_error(&a->chan, m.stream, WISP_E_BAD_STATE, 0, "shutting down");
    else if (fn != NULL)
        fn(a, &m);
    wisp_msg_free(&m);
}
