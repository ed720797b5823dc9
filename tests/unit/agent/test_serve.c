/* test_serve: the real wisp-init, run as `wisp-init --serve-fd 3` on one end of a socketpair,
 * answers every request and every kind of bad frame, and keeps serving after each: garbage, an
 * oversized length, bad flags, an unknown type, a truncated payload, a frame sent byte by byte,
 * requests that need a disk (refused by name), and SHUTDOWN (which ends it, not the host). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../parsers/check.h"
#include "protocol.h"

static int sock = -1;
static struct wisp_reader reader;
static uint8_t buf[WISP_PROTO_MAX_FRAME];

static void send_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(sock, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        CHECK(w > 0);
        if (w <= 0)
            return;
        b += w;
        n -= (size_t)w;
    }
}

static void send_msg(const struct wisp_msg *m)
{
    int n = wisp_msg_encode(m, buf, sizeof buf);
    CHECK(n > 0);
    if (n > 0)
        send_bytes(buf, (size_t)n);
}

static void send_simple(uint8_t type, uint32_t stream)
{
    struct wisp_msg m = {.type = type, .stream = stream};
    send_msg(&m);
}

/* The next frame from wisp-init, decoded into *m (free with wisp_msg_free); false on a timeout,
 * EOF or a frame that does not decode. */
static bool next_msg(struct wisp_msg *m)
{
    static uint8_t in[65536];
    static size_t in_len, in_off;
    for (;;) {
        while (in_off < in_len) {
            size_t used;
            struct wisp_frame f;
            int r = wisp_reader_feed(&reader, in + in_off, in_len - in_off, &used, &f, NULL);
            in_off += used;
            if (r == 1) {
                int d = wisp_msg_decode(&f.h, f.payload, m);
                CHECK(d == 0);
                return d == 0;
            }
            CHECK(r == 0);
        }
        struct pollfd p = {.fd = sock, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0) {
            fprintf(stderr, "no frame from wisp-init within 10 s\n");
            return false;
        }
        ssize_t n = read(sock, in, sizeof in);
        if (n <= 0)
            return false;
        in_len = (size_t)n;
        in_off = 0;
    }
}

/* Expects an ERROR with this code on this stream as the next frame. */
static void expect_error(uint32_t stream, int code, const char *what)
{
    struct wisp_msg m;
    if (!next_msg(&m)) {
        CHECK(!"a reply");
        return;
    }
    if (m.type != WISP_MSG_ERROR || m.stream != stream || m.u.error.code != (uint32_t)code)
        fprintf(stderr, "%s: got %s on stream %u (code %u), want error %d on %u\n", what,
                wisp_msg_type_to_string(m.type), m.stream,
                m.type == WISP_MSG_ERROR ? m.u.error.code : 0, code, stream);
    CHECK(m.type == WISP_MSG_ERROR && m.stream == stream && m.u.error.code == (uint32_t)code);
    wisp_msg_free(&m);
}

static void expect_type(uint8_t type, uint32_t stream, struct wisp_msg *out)
{
    struct wisp_msg m;
    if (!next_msg(&m)) {
        CHECK(!"a reply");
        memset(out, 0, sizeof *out);
        return;
    }
    if (m.type != type || m.stream != stream)
        fprintf(stderr, "got %s on stream %u, want %s on %u\n", wisp_msg_type_to_string(m.type),
                m.stream, wisp_msg_type_to_string(type), stream);
    CHECK(m.type == type && m.stream == stream);
    *out = m;
}

static void check_still_serving(uint32_t stream)
{
    struct wisp_msg m;
    send_simple(WISP_MSG_STATUS, stream);
    expect_type(WISP_MSG_STATUS_REPLY, stream, &m);
    CHECK(m.u.status.uptime_ms > 0 && m.u.status.mem_total_kib > 0 && m.u.status.attached == 0);
    wisp_msg_free(&m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_serve PATH-TO-WISP-INIT\n");
        return 2;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        wisp_reader_init(&reader, WISP_PROTO_MAX_PAYLOAD) < 0) {
        perror("socketpair");
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (dup2(sv[1], 3) < 0)
            _exit(126);
        execl(argv[1], "wisp-init", "--serve-fd", "3", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    sock = sv[0];

    struct wisp_msg m;
    /* A host "connected" from the start: READY comes unasked, with nonce 0. */
    expect_type(WISP_MSG_READY, 0, &m);
    CHECK(m.u.ready.nonce == 0 && m.u.ready.version == WISP_PROTO_VERSION);
    wisp_msg_free(&m);

    struct wisp_msg hello = {.type = WISP_MSG_HELLO};
    hello.u.hello.min_version = 1;
    hello.u.hello.max_version = 3;
    hello.u.hello.nonce = 0xfeedf00d;
    hello.u.hello.client = "test_serve";
    send_msg(&hello);
    expect_type(WISP_MSG_READY, 0, &m);
    CHECK(m.u.ready.nonce == 0xfeedf00d && m.u.ready.attached == 0);
    CHECK(m.u.ready.max_payload == WISP_PROTO_MAX_PAYLOAD);
    CHECK(m.u.ready.agent != NULL && strncmp(m.u.ready.agent, "wisp-init", 9) == 0);
    wisp_msg_free(&m);
    hello.u.hello.min_version = 2;
    hello.u.hello.max_version = 5;
    send_msg(&hello);
    expect_error(0, WISP_E_BAD_VERSION, "hello 2..5");

    check_still_serving(5);

    /* Garbage: one error on stream 0 for the whole run of it. */
    const char garbage[] = "this is not a frame, WIS, nor this";
    send_bytes(garbage, sizeof garbage - 1);
    expect_error(0, WISP_E_BAD_MAGIC, "garbage");
    check_still_serving(6);

    /* An oversized length: refused without waiting for 4 GiB. */
    uint8_t hdr[WISP_PROTO_HEADER_SIZE];
    wisp_header_encode(hdr, WISP_MSG_STDIN, 7, 0xfffffff0u);
    send_bytes(hdr, sizeof hdr);
    expect_error(7, WISP_E_TOO_LARGE, "oversized");
    check_still_serving(8);

    /* Bad flags with a sane length: the payload is skipped, the next frame read normally. */
    uint8_t flagged[WISP_PROTO_HEADER_SIZE + 4] = {0};
    wisp_header_encode(flagged, WISP_MSG_STATUS, 9, 4);
    flagged[6] = 1;
    memcpy(flagged + WISP_PROTO_HEADER_SIZE, "WISP", 4);
    send_bytes(flagged, sizeof flagged);
    expect_error(9, WISP_E_BAD_FLAGS, "flags");
    check_still_serving(10);

    /* An unknown type, a truncated payload, trailing bytes. */
    wisp_header_encode(hdr, 0x7e, 11, 0);
    send_bytes(hdr, sizeof hdr);
    expect_error(11, WISP_E_UNKNOWN_TYPE, "unknown type");
    uint8_t trunc[WISP_PROTO_HEADER_SIZE + 5] = {0};
    wisp_header_encode(trunc, WISP_MSG_EXEC, 12, 5);
    send_bytes(trunc, sizeof trunc);
    expect_error(12, WISP_E_TRUNCATED, "truncated exec");
    uint8_t trailing[WISP_PROTO_HEADER_SIZE + 1] = {0};
    wisp_header_encode(trailing, WISP_MSG_STATUS, 13, 1);
    send_bytes(trailing, sizeof trailing);
    expect_error(13, WISP_E_TRAILING, "trailing");
    check_still_serving(14);

    /* A frame written one byte at a time. */
    struct wisp_msg status_req = {.type = WISP_MSG_STATUS, .stream = 15};
    int n = wisp_msg_encode(&status_req, buf, sizeof buf);
    for (int i = 0; i < n; i++) {
        send_bytes(buf + i, 1);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    expect_type(WISP_MSG_STATUS_REPLY, 15, &m);
    wisp_msg_free(&m);

    /* Requests that need a disk, and messages the host may not send. */
    char *argv_true[] = {"true", NULL};
    struct wisp_msg exec = {.type = WISP_MSG_EXEC, .stream = 16};
    exec.u.exec.argv = (struct wisp_strv){1, argv_true};
    send_msg(&exec);
    expect_error(16, WISP_E_BAD_STATE, "exec before attach");
    struct wisp_msg attach = {.type = WISP_MSG_ATTACH, .stream = 17};
    send_msg(&attach);
    expect_error(17, WISP_E_BAD_STATE, "attach in --serve-fd mode");
    send_simple(WISP_MSG_FREEZE, 18);
    expect_error(18, WISP_E_BAD_STATE, "freeze");
    send_simple(WISP_MSG_STDOUT, 19);
    expect_error(19, WISP_E_BAD_STATE, "stdout from the host");
    struct wisp_msg window = {.type = WISP_MSG_WINDOW, .stream = 20};
    window.u.window.increment = 100;
    send_msg(&window);
    expect_error(20, WISP_E_NOT_FOUND, "window of no session");
    struct wisp_msg stop = {.type = WISP_MSG_SERVICE_STOP, .stream = 21};
    stop.u.service_ref.name = "nope";
    send_msg(&stop);
    expect_error(21, WISP_E_NOT_FOUND, "stop of no service");
    send_simple(WISP_MSG_SERVICE_LIST, 22);
    expect_type(WISP_MSG_SERVICE_LIST_REPLY, 22, &m);
    CHECK(m.u.service_list.count == 0);
    wisp_msg_free(&m);
    check_still_serving(23);

    /* SEED: too few bytes is a bad field; a good one is refused in --serve-fd mode (the host's
     * kernel RNG is not wisp-init's to feed). */
    uint8_t short_seed[WISP_PROTO_HEADER_SIZE + WISP_SEED_MIN_BYTES - 1] = {0};
    wisp_header_encode(short_seed, WISP_MSG_SEED, 30, WISP_SEED_MIN_BYTES - 1);
    send_bytes(short_seed, sizeof short_seed);
    expect_error(30, WISP_E_BAD_FIELD, "seed of 31 bytes");
    static const uint8_t seed_bytes[WISP_SEED_MIN_BYTES] = {1, 2, 3};
    struct wisp_msg seed = {.type = WISP_MSG_SEED, .stream = 31};
    seed.u.data.data = seed_bytes;
    seed.u.data.len = sizeof seed_bytes;
    send_msg(&seed);
    expect_error(31, WISP_E_BAD_STATE, "seed in --serve-fd mode");
    check_still_serving(32);

    /* SHUTDOWN: OK, then wisp-init exits (not being PID 1, it powers nothing off). */
    send_simple(WISP_MSG_SHUTDOWN, 24);
    expect_type(WISP_MSG_OK, 24, &m);
    wisp_msg_free(&m);
    int status = -1;
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
        status = -1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    close(sock);
    wisp_reader_free(&reader);
    return check_exit_code();
}
