/* qmp_garbage.c: the QMP client against a peer that misbehaves (what QEMU itself never sends,
 * so a real QEMU cannot test it).  Each case is one connection to a socket served by a thread
 * here: a reply with an unknown id and an event before the real reply; bad JSON; a JSON value
 * that is not an object; no greeting; a greeting but no answer to qmp_capabilities; the peer
 * closing in the middle of a line; two replies in the reverse order of their commands, with odd
 * events (data not an object, no timestamp, a MIGRATION "completed" before the migrate reply)
 * in between; a reply sent a few bytes at a time; an event cut short by a newline (truncated
 * JSON) while a command waits.  Every case must end in a clean error, with no crash and
 * no hang. */
#include "qmp.h"
#include "unit_check.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define GREETING                                                                                   \
    "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 9, \"minor\": 8, \"micro\": 7}}, "             \
    "\"capabilities\": []}}\n"

enum peer_case {
    PEER_UNKNOWN_ID_AND_EVENT,
    PEER_BAD_JSON,
    PEER_NOT_OBJECT,
    PEER_NO_GREETING,
    PEER_SILENT,
    PEER_CLOSE_MID_LINE,
    PEER_OUT_OF_ORDER,
    PEER_FRAGMENTED,
    PEER_TRUNCATED_EVENT,
};

struct peer {
    int listen_fd;
    enum peer_case what;
};

static void send_text(int fd, const char *text)
{
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        fprintf(stderr, "peer: write: %s\n", strerror(errno));
}

/* Reads one command line and returns its "id" (or -1). */
static long read_command(int fd)
{
    char line[4096];
    size_t n = 0;

    while (n < sizeof line - 1) {
        ssize_t r = read(fd, line + n, 1);
        if (r <= 0)
            return -1;
        if (line[n++] == '\n')
            break;
    }
    line[n] = '\0';
    const char *id = strstr(line, "\"id\"");
    return id ? strtol(strchr(id, ':') + 1, NULL, 10) : -1;
}

static void *peer_thread(void *opaque)
{
    struct peer *p = opaque;
    int fd = accept(p->listen_fd, NULL, NULL);
    char buf[512];
    long id;

    if (fd < 0)
        return NULL;
    if (p->what == PEER_NO_GREETING) {
        send_text(fd, "hello, I am not QEMU\n");
        goto out;
    }
    send_text(fd, GREETING);
    id = read_command(fd); /* qmp_capabilities */
    if (p->what == PEER_SILENT) {
        sleep(2);
        goto out;
    }
    snprintf(buf, sizeof buf, "{\"return\": {}, \"id\": %ld}\n", id);
    send_text(fd, buf);
    id = read_command(fd);
    switch (p->what) {
    case PEER_UNKNOWN_ID_AND_EVENT:
        send_text(fd,
                  "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n");
        send_text(fd, "{\"return\": {\"wrong\": true}, \"id\": 99999}\n");
        send_text(fd, "{\"something\": \"else\"}\n\n");
        snprintf(buf, sizeof buf, "{\"return\": {\"right\": true}, \"id\": %ld}\n", id);
        send_text(fd, buf);
        read_command(fd); /* until the client closes */
        break;
    case PEER_BAD_JSON:
        snprintf(buf, sizeof buf, "{\"return\": {}, \"id\": %ld\n", id);
        send_text(fd, buf);
        read_command(fd);
        break;
    case PEER_NOT_OBJECT:
        send_text(fd, "[1, 2, 3]\n");
        read_command(fd);
        break;
    case PEER_CLOSE_MID_LINE:
        send_text(fd, "{\"return\": {\"tru");
        break;
    case PEER_OUT_OF_ORDER: {
        long second = read_command(fd);
        send_text(fd, "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"completed\"},"
                      " \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n");
        send_text(fd, "{\"event\": \"ODD\", \"data\": 42}\n");
        snprintf(buf, sizeof buf, "{\"return\": {\"n\": %ld}, \"id\": %ld}\n", second, second);
        send_text(fd, buf);
        send_text(fd, "{\"event\": \"RESUME\"}\n");
        snprintf(buf, sizeof buf, "{\"return\": {\"n\": %ld}, \"id\": %ld}\n", id, id);
        send_text(fd, buf);
        read_command(fd);
        break;
    }
    case PEER_FRAGMENTED:
        snprintf(buf, sizeof buf, "{\"return\": {\"status\": \"running\"}, \"id\": %ld}\n", id);
        for (size_t i = 0; buf[i]; i += 3) {
            char piece[4] = {0};
            memcpy(piece, buf + i, strnlen(buf + i, 3));
            send_text(fd, piece);
            usleep(2000);
        }
        read_command(fd);
        break;
    case PEER_TRUNCATED_EVENT:
        send_text(fd, "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1\n");
        read_command(fd);
        break;
    default:
        break;
    }
out:
    close(fd);
    return NULL;
}

/* Starts the peer on path and connects to it; on ctx (NULL: the client's own), which the caller
 * iterates. */
static qmp_client *run_case_on(const char *path, enum peer_case what, pthread_t *t, struct peer *p,
                               GMainContext *ctx, GError **err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};

    unlink(path);
    p->what = what;
    p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(p->listen_fd, 1) < 0) {
        fprintf(stderr, "listen %s: %s\n", path, strerror(errno));
        exit(1);
    }
    pthread_create(t, NULL, peer_thread, p);
    return qmp_client_connect(path, ctx, 1000, err);
}

struct async_reply {
    bool done;
    gint64 n; /* the "n" member of the return, -1 if none */
    char *error;
};

static void async_done(qmp_client *c, JsonNode *ret, const GError *error, void *opaque)
{
    struct async_reply *a = opaque;

    (void)c;
    a->done = true;
    a->n = -1;
    if (ret && JSON_NODE_HOLDS_OBJECT(ret))
        a->n = json_object_get_int_member_with_default(json_node_get_object(ret), "n", -1);
    if (error)
        a->error = g_strdup(error->message);
}

static void end_case(pthread_t t, struct peer *p, qmp_client *q)
{
    qmp_client_free(q);
    pthread_join(t, NULL);
    close(p->listen_fd);
}

int main(void)
{
    g_autofree char *dir = g_dir_make_tmp("wisp-qmp-garbage-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "qmp.sock", NULL);
    struct peer p;
    pthread_t t;
    GError *err = NULL;
    qmp_client *q;
    JsonNode *r;

    /* An event and a reply to nobody, then the reply: the command gets its own answer. */
    q = run_case_on(path, PEER_UNKNOWN_ID_AND_EVENT, &t, &p, NULL, &err);
    CHECK(q, "connect: %s", err ? err->message : "");
    CHECK(q && strcmp(qmp_client_qemu_version(q), "9.8.7") == 0, "version");
    r = q ? qmp_client_execute(q, "query-status", NULL, 2000, &err) : NULL;
    CHECK(r && json_object_has_member(json_node_get_object(r), "right"), "the right reply: %s",
          err ? err->message : "");
    if (r)
        json_node_unref(r);
    g_clear_error(&err);
    r = q ? qmp_client_wait_event(q, "STOP", 100, &err) : NULL;
    CHECK(r, "the event was queued: %s", err ? err->message : "");
    if (r)
        json_node_unref(r);
    g_clear_error(&err);
    end_case(t, &p, q);

    /* Bad JSON, and a value that is not an object: the command fails, the client closes. */
    enum peer_case bad[] = {PEER_BAD_JSON, PEER_NOT_OBJECT};
    for (int i = 0; i < 2; i++) {
        q = run_case_on(path, bad[i], &t, &p, NULL, &err);
        CHECK(q, "connect: %s", err ? err->message : "");
        r = q ? qmp_client_execute(q, "query-status", NULL, 2000, &err) : NULL;
        CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_PROTOCOL), "case %d: %s", i,
              err ? err->message : "a reply");
        CHECK(q && qmp_client_is_closed(q), "closed after garbage");
        g_clear_error(&err);
        r = q ? qmp_client_execute(q, "query-status", NULL, 2000, &err) : NULL;
        CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_CLOSED), "after close: %s",
              err ? err->message : "");
        g_clear_error(&err);
        end_case(t, &p, q);
    }

    /* Not QEMU at all: connect fails. */
    q = run_case_on(path, PEER_NO_GREETING, &t, &p, NULL, &err);
    CHECK(!q && err, "no greeting: connected");
    fprintf(stderr, "no greeting: %s\n", err ? err->message : "");
    g_clear_error(&err);
    end_case(t, &p, q);

    /* Greeting, then silence: connect times out (1 s). */
    gint64 t0 = g_get_monotonic_time();
    q = run_case_on(path, PEER_SILENT, &t, &p, NULL, &err);
    CHECK(!q && g_error_matches(err, QMP_ERROR, QMP_ERROR_TIMEOUT), "silent: %s",
          err ? err->message : "connected");
    CHECK(g_get_monotonic_time() - t0 < 1900 * 1000, "the timeout took too long");
    g_clear_error(&err);
    end_case(t, &p, q);

    /* The peer closes in the middle of a line: CLOSED. */
    q = run_case_on(path, PEER_CLOSE_MID_LINE, &t, &p, NULL, &err);
    CHECK(q, "connect: %s", err ? err->message : "");
    r = q ? qmp_client_execute(q, "query-status", NULL, 2000, &err) : NULL;
    CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_CLOSED), "mid-line: %s",
          err ? err->message : "a reply");
    g_clear_error(&err);
    end_case(t, &p, q);

    /* Two commands answered in reverse order, odd events in between: each callback gets the
     * reply to its own command (the peer echoes the id as "n"), the events are queued. */
    {
        GMainContext *ctx = g_main_context_new();
        struct async_reply a1 = {0}, a2 = {0};
        q = run_case_on(path, PEER_OUT_OF_ORDER, &t, &p, ctx, &err);
        CHECK(q, "connect: %s", err ? err->message : "");
        g_clear_error(&err);
        if (q) {
            qmp_client_execute_async(q, "query-status", NULL, 2000, async_done, &a1);
            qmp_client_execute_async(q, "query-migrate", NULL, 2000, async_done, &a2);
            gint64 deadline = g_get_monotonic_time() + 3 * G_USEC_PER_SEC;
            while ((!a1.done || !a2.done) && g_get_monotonic_time() < deadline)
                if (!g_main_context_iteration(ctx, FALSE))
                    g_usleep(1000);
            CHECK(a1.done && a2.done, "out of order: a reply never came");
            CHECK(!a1.error && !a2.error, "out of order: %s %s", a1.error ? a1.error : "",
                  a2.error ? a2.error : "");
            CHECK(a1.n >= 0 && a2.n >= 0 && a1.n != a2.n,
                  "out of order: the replies were crossed (%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                  ")",
                  a1.n, a2.n);
            r = qmp_client_wait_event(q, "MIGRATION", 100, &err);
            CHECK(r, "the early MIGRATION event was queued: %s", err ? err->message : "");
            if (r)
                json_node_unref(r);
            g_clear_error(&err);
            r = qmp_client_wait_event(q, "RESUME", 100, &err);
            CHECK(r, "an event without timestamp was queued: %s", err ? err->message : "");
            if (r)
                json_node_unref(r);
            g_clear_error(&err);
        }
        g_free(a1.error);
        g_free(a2.error);
        end_case(t, &p, q);
        g_main_context_unref(ctx);
    }

    /* A reply that arrives three bytes at a time is one reply. */
    q = run_case_on(path, PEER_FRAGMENTED, &t, &p, NULL, &err);
    CHECK(q, "connect: %s", err ? err->message : "");
    r = q ? qmp_client_execute(q, "query-status", NULL, 3000, &err) : NULL;
    CHECK(r && json_object_has_member(json_node_get_object(r), "status"), "fragmented: %s",
          err ? err->message : "no status");
    if (r)
        json_node_unref(r);
    g_clear_error(&err);
    end_case(t, &p, q);

    /* An event cut short by a newline while a command waits: a protocol error, not a hang. */
    t0 = g_get_monotonic_time();
    q = run_case_on(path, PEER_TRUNCATED_EVENT, &t, &p, NULL, &err);
    CHECK(q, "connect: %s", err ? err->message : "");
    r = q ? qmp_client_execute(q, "query-status", NULL, 2000, &err) : NULL;
    CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_PROTOCOL), "truncated event: %s",
          err ? err->message : "a reply");
    CHECK(g_get_monotonic_time() - t0 < 1900 * 1000, "the truncated event was waited on");
    g_clear_error(&err);
    end_case(t, &p, q);

    unlink(path);
    rmdir(dir);
    return unit_check_result();
}
