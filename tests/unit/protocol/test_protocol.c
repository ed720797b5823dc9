/* test_protocol: the control protocol's encoder, decoder and incremental reader
 * (vm-images/agent/protocol.h): every message round-trips, every malformed input gets its
 * named error, and the reader finds frames in any split of the byte stream and after garbage. */
#include "protocol.h"

#include <stdlib.h>
#include <string.h>

#include "../parsers/check.h"

static uint8_t buf[WISP_PROTO_MAX_FRAME];

static char *argv_sh[] = {"/bin/sh", "-c", "echo hi", NULL};
static char *env_two[] = {"A=1", "PATH=/usr/bin:/bin", NULL};

/* Encodes m, decodes it back into out (caller frees) and returns the frame length. */
static int round_trip(const struct wisp_msg *m, struct wisp_msg *out)
{
    int n = wisp_msg_encode(m, buf, sizeof buf);
    CHECK(n >= WISP_PROTO_HEADER_SIZE);
    if (n < WISP_PROTO_HEADER_SIZE)
        return n;
    struct wisp_header h;
    CHECK(wisp_header_decode(buf, WISP_PROTO_MAX_PAYLOAD, &h) == 0);
    CHECK(h.type == m->type && h.stream == m->stream);
    CHECK(h.length == (uint32_t)n - WISP_PROTO_HEADER_SIZE);
    int r = wisp_msg_decode(&h, buf + WISP_PROTO_HEADER_SIZE, out);
    CHECK(r == 0);
    return r == 0 ? n : r;
}

static void test_round_trips(void)
{
    struct wisp_msg m, d;

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_HELLO;
    m.u.hello.min_version = 1;
    m.u.hello.max_version = 3;
    m.u.hello.nonce = 0x1122334455667788ull;
    m.u.hello.client = "test-client";
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.hello.min_version == 1 && d.u.hello.max_version == 3);
        CHECK(d.u.hello.nonce == 0x1122334455667788ull);
        CHECK(strcmp(d.u.hello.client, "test-client") == 0);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_READY;
    m.u.ready.version = 1;
    m.u.ready.max_payload = WISP_PROTO_MAX_PAYLOAD;
    m.u.ready.nonce = 42;
    m.u.ready.boot_id = 0xdeadbeefcafef00dull;
    m.u.ready.uptime_ms = 1234;
    m.u.ready.attached = 1;
    m.u.ready.agent = "wisp-init 0.1.0";
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.ready.version == 1 && d.u.ready.max_payload == WISP_PROTO_MAX_PAYLOAD);
        CHECK(d.u.ready.nonce == 42 && d.u.ready.boot_id == 0xdeadbeefcafef00dull);
        CHECK(d.u.ready.uptime_ms == 1234 && d.u.ready.attached == 1);
        CHECK(strcmp(d.u.ready.agent, "wisp-init 0.1.0") == 0);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_ERROR;
    m.stream = 9;
    m.u.error.code = WISP_E_SYSTEM;
    m.u.error.sys_errno = -5;
    m.u.error.message = NULL; /* encodes as "" */
    if (round_trip(&m, &d) > 0) {
        CHECK(d.stream == 9 && d.u.error.code == WISP_E_SYSTEM && d.u.error.sys_errno == -5);
        CHECK(strcmp(d.u.error.message, "") == 0);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_ATTACH;
    m.stream = 3;
    m.u.attach.device = "/dev/vdb";
    m.u.attach.hostname = "sprite-1";
    m.u.attach.env = (struct wisp_strv){2, env_two};
    if (round_trip(&m, &d) > 0) {
        CHECK(strcmp(d.u.attach.device, "/dev/vdb") == 0);
        CHECK(strcmp(d.u.attach.hostname, "sprite-1") == 0);
        CHECK(d.u.attach.env.count == 2 && strcmp(d.u.attach.env.v[1], env_two[1]) == 0);
        CHECK(d.u.attach.env.v[2] == NULL);
        wisp_msg_free(&d);
    }

    /* SEED: the bytes come back as they went, and only 32 to 512 of them are accepted. */
    uint8_t seed[WISP_SEED_MAX_BYTES + 1];
    for (size_t i = 0; i < sizeof seed; i++)
        seed[i] = (uint8_t)(i * 7 + 1);
    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_SEED;
    m.stream = 4;
    m.u.data.data = seed;
    m.u.data.len = WISP_SEED_MIN_BYTES;
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.data.len == WISP_SEED_MIN_BYTES);
        CHECK(memcmp(d.u.data.data, seed, WISP_SEED_MIN_BYTES) == 0);
        wisp_msg_free(&d);
    }
    m.u.data.len = WISP_SEED_MAX_BYTES;
    if (round_trip(&m, &d) > 0)
        wisp_msg_free(&d);
    m.u.data.len = WISP_SEED_MIN_BYTES - 1;
    CHECK(wisp_msg_encode(&m, buf, sizeof buf) == -WISP_E_BAD_FIELD);
    m.u.data.len = WISP_SEED_MAX_BYTES + 1;
    CHECK(wisp_msg_encode(&m, buf, sizeof buf) == -WISP_E_BAD_FIELD);

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_EXEC;
    m.stream = 77;
    m.u.exec.flags = WISP_EXEC_TTY | WISP_EXEC_STDIN;
    m.u.exec.rows = 24;
    m.u.exec.cols = 80;
    m.u.exec.window = 1 << 20;
    m.u.exec.cwd = "/root";
    m.u.exec.argv = (struct wisp_strv){3, argv_sh};
    m.u.exec.env = (struct wisp_strv){0, NULL};
    if (round_trip(&m, &d) > 0) {
        CHECK(d.stream == 77 && d.u.exec.flags == 3 && d.u.exec.rows == 24);
        CHECK(d.u.exec.cols == 80 && d.u.exec.window == 1 << 20);
        CHECK(strcmp(d.u.exec.cwd, "/root") == 0);
        CHECK(d.u.exec.argv.count == 3 && strcmp(d.u.exec.argv.v[2], "echo hi") == 0);
        CHECK(d.u.exec.argv.v[3] == NULL);
        CHECK(d.u.exec.env.count == 0 && d.u.exec.env.v != NULL && d.u.exec.env.v[0] == NULL);
        wisp_msg_free(&d);
    }

    static const uint8_t bytes[] = {0, 1, 2, 'W', 'I', 'S', 'P', 0xff};
    uint8_t data_types[] = {WISP_MSG_STDIN, WISP_MSG_STDOUT, WISP_MSG_STDERR,
                            WISP_MSG_SERVICE_LOGS_REPLY};
    for (size_t i = 0; i < sizeof data_types; i++) {
        memset(&m, 0, sizeof m);
        m.type = data_types[i];
        m.stream = 5;
        m.u.data.data = bytes;
        m.u.data.len = sizeof bytes;
        if (round_trip(&m, &d) > 0) {
            CHECK(d.u.data.len == sizeof bytes && memcmp(d.u.data.data, bytes, sizeof bytes) == 0);
            CHECK(d.arena == NULL);
            wisp_msg_free(&d);
        }
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_STARTED;
    m.stream = 5;
    m.u.started.pid = 4242;
    m.u.started.stdin_window = 65536;
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.started.pid == 4242 && d.u.started.stdin_window == 65536);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_WINDOW;
    m.stream = 5;
    m.u.window.increment = 0x80000000u;
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.window.increment == 0x80000000u);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_SIGNAL;
    m.stream = 5;
    m.u.signal.signo = 9;
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.signal.signo == 9);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_RESIZE;
    m.stream = 5;
    m.u.resize.rows = 50;
    m.u.resize.cols = 132;
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.resize.rows == 50 && d.u.resize.cols == 132);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_EXIT;
    m.stream = 5;
    m.u.exit.kind = WISP_EXIT_SIGNAL;
    m.u.exit.core_dumped = 1;
    m.u.exit.code = 11;
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.exit.kind == WISP_EXIT_SIGNAL && d.u.exit.core_dumped == 1);
        CHECK(d.u.exit.code == 11);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_SERVICE_START;
    m.stream = 8;
    m.u.service_start.name = "web";
    m.u.service_start.argv = (struct wisp_strv){3, argv_sh};
    m.u.service_start.env = (struct wisp_strv){2, env_two};
    m.u.service_start.cwd = "/srv";
    m.u.service_start.restart = WISP_RESTART_ALWAYS;
    m.u.service_start.restart_delay_ms = 500;
    if (round_trip(&m, &d) > 0) {
        CHECK(strcmp(d.u.service_start.name, "web") == 0);
        CHECK(d.u.service_start.argv.count == 3 && d.u.service_start.env.count == 2);
        CHECK(strcmp(d.u.service_start.cwd, "/srv") == 0);
        CHECK(d.u.service_start.restart == WISP_RESTART_ALWAYS);
        CHECK(d.u.service_start.restart_delay_ms == 500);
        wisp_msg_free(&d);
    }

    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_SERVICE_LOGS;
    m.stream = 8;
    m.u.service_ref.name = "web";
    m.u.service_ref.max_bytes = 4096;
    if (round_trip(&m, &d) > 0) {
        CHECK(strcmp(d.u.service_ref.name, "web") == 0 && d.u.service_ref.max_bytes == 4096);
        wisp_msg_free(&d);
    }

    struct wisp_service_info svcs[2] = {
        {.name = "web", .state = WISP_SERVICE_RUNNING, .pid = 100, .restarts = 2},
        {.name = "db", .state = WISP_SERVICE_FAILED, .last_kind = WISP_EXIT_CODE, .last_code = 3},
    };
    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_SERVICE_LIST_REPLY;
    m.stream = 8;
    m.u.service_list.count = 2;
    m.u.service_list.services = svcs;
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.service_list.count == 2);
        CHECK(strcmp(d.u.service_list.services[0].name, "web") == 0);
        CHECK(d.u.service_list.services[0].pid == 100 &&
              d.u.service_list.services[0].restarts == 2);
        CHECK(strcmp(d.u.service_list.services[1].name, "db") == 0);
        CHECK(d.u.service_list.services[1].state == WISP_SERVICE_FAILED);
        CHECK(d.u.service_list.services[1].last_code == 3);
        wisp_msg_free(&d);
    }

    struct wisp_listener ls[2] = {{.family = 4, .port = 22, .addr = {127, 0, 0, 1}},
                                  {.family = 6, .port = 8080, .addr = {[15] = 1}}};
    struct wisp_session_info ss[1] = {{.stream = 77, .pid = 300, .state = 1}};
    memset(&m, 0, sizeof m);
    m.type = WISP_MSG_STATUS_REPLY;
    m.stream = 10;
    m.u.status.uptime_ms = 99999;
    m.u.status.mem_total_kib = 262144;
    m.u.status.mem_available_kib = 200000;
    m.u.status.load_milli[0] = 10;
    m.u.status.load_milli[2] = 30;
    m.u.status.idle_ms = 5000;
    m.u.status.attached = 1;
    m.u.status.frozen = 0;
    m.u.status.listener_count = 2;
    m.u.status.listeners = ls;
    m.u.status.session_count = 1;
    m.u.status.sessions = ss;
    if (round_trip(&m, &d) > 0) {
        CHECK(d.u.status.uptime_ms == 99999 && d.u.status.mem_total_kib == 262144);
        CHECK(d.u.status.mem_available_kib == 200000 && d.u.status.load_milli[2] == 30);
        CHECK(d.u.status.idle_ms == 5000 && d.u.status.attached == 1);
        CHECK(d.u.status.listener_count == 2 && d.u.status.listeners[1].port == 8080);
        CHECK(d.u.status.listeners[0].addr[0] == 127 && d.u.status.listeners[1].addr[15] == 1);
        CHECK(d.u.status.session_count == 1 && d.u.status.sessions[0].pid == 300);
        wisp_msg_free(&d);
    }

    uint8_t empty_types[] = {WISP_MSG_OK,      WISP_MSG_STDIN_CLOSE,  WISP_MSG_FREEZE,
                             WISP_MSG_THAW,    WISP_MSG_SERVICE_LIST, WISP_MSG_STATUS,
                             WISP_MSG_SHUTDOWN};
    for (size_t i = 0; i < sizeof empty_types; i++) {
        memset(&m, 0, sizeof m);
        m.type = empty_types[i];
        m.stream = 1;
        CHECK(round_trip(&m, &d) == WISP_PROTO_HEADER_SIZE);
        wisp_msg_free(&d);
    }
}

/* Builds a frame by hand: header then the given payload. */
static size_t raw_frame(uint8_t *out, uint8_t type, uint32_t stream, const void *payload,
                        uint32_t len)
{
    wisp_header_encode(out, type, stream, len);
    memcpy(out + WISP_PROTO_HEADER_SIZE, payload, len);
    return WISP_PROTO_HEADER_SIZE + len;
}

static int decode_raw(uint8_t type, const void *payload, uint32_t len)
{
    struct wisp_header h = {
        .magic = WISP_PROTO_MAGIC, .version = 1, .type = type, .length = len, .stream = 1};
    struct wisp_msg d;
    int r = wisp_msg_decode(&h, payload, &d);
    if (r == 0)
        wisp_msg_free(&d);
    return r;
}

static void test_malformed(void)
{
    uint8_t hdr[WISP_PROTO_HEADER_SIZE];
    struct wisp_header h;

    wisp_header_encode(hdr, WISP_MSG_OK, 1, 0);
    CHECK(wisp_header_decode(hdr, WISP_PROTO_MAX_PAYLOAD, &h) == 0);
    hdr[0] = 'X';
    CHECK(wisp_header_decode(hdr, WISP_PROTO_MAX_PAYLOAD, &h) == -WISP_E_BAD_MAGIC);
    wisp_header_encode(hdr, WISP_MSG_OK, 1, 0);
    hdr[4] = 2;
    CHECK(wisp_header_decode(hdr, WISP_PROTO_MAX_PAYLOAD, &h) == -WISP_E_BAD_VERSION);
    hdr[4] = 0;
    CHECK(wisp_header_decode(hdr, WISP_PROTO_MAX_PAYLOAD, &h) == -WISP_E_BAD_VERSION);
    wisp_header_encode(hdr, WISP_MSG_OK, 1, 0);
    hdr[7] = 1;
    CHECK(wisp_header_decode(hdr, WISP_PROTO_MAX_PAYLOAD, &h) == -WISP_E_BAD_FLAGS);
    CHECK(h.stream == 1);
    wisp_header_encode(hdr, WISP_MSG_STDIN, 1, WISP_PROTO_MAX_PAYLOAD + 1);
    CHECK(wisp_header_decode(hdr, WISP_PROTO_MAX_PAYLOAD, &h) == -WISP_E_TOO_LARGE);
    wisp_header_encode(hdr, WISP_MSG_STDIN, 1, 0xffffffffu);
    CHECK(wisp_header_decode(hdr, WISP_PROTO_MAX_PAYLOAD, &h) == -WISP_E_TOO_LARGE);
    wisp_header_encode(hdr, WISP_MSG_STDIN, 1, 1000);
    CHECK(wisp_header_decode(hdr, 999, &h) == -WISP_E_TOO_LARGE);

    CHECK(decode_raw(0x7f, "", 0) == -WISP_E_UNKNOWN_TYPE);
    CHECK(decode_raw(0x00, "", 0) == -WISP_E_UNKNOWN_TYPE);
    CHECK(decode_raw(WISP_MSG_OK, "x", 1) == -WISP_E_TRAILING);
    CHECK(decode_raw(WISP_MSG_WINDOW, "\1\0\0", 3) == -WISP_E_TRUNCATED);
    CHECK(decode_raw(WISP_MSG_WINDOW, "\1\0\0\0\0", 5) == -WISP_E_TRAILING);
    CHECK(decode_raw(WISP_MSG_SIGNAL, "\0\0\0\0", 4) == -WISP_E_BAD_FIELD);
    static const uint8_t seed[WISP_SEED_MAX_BYTES + 1];
    CHECK(decode_raw(WISP_MSG_SEED, seed, WISP_SEED_MIN_BYTES - 1) == -WISP_E_BAD_FIELD);
    CHECK(decode_raw(WISP_MSG_SEED, seed, 0) == -WISP_E_BAD_FIELD);
    CHECK(decode_raw(WISP_MSG_SEED, seed, WISP_SEED_MAX_BYTES + 1) == -WISP_E_BAD_FIELD);
    CHECK(decode_raw(WISP_MSG_SEED, seed, WISP_SEED_MIN_BYTES) == 0);
    CHECK(decode_raw(WISP_MSG_SIGNAL, "\x41\0\0\0", 4) == -WISP_E_BAD_FIELD);
    /* A string of length 2 holding a NUL. */
    CHECK(decode_raw(WISP_MSG_SERVICE_STOP, "\2\0\0\0a\0\0\0\0\0", 10) == -WISP_E_BAD_FIELD);
    /* A string whose length runs past the payload. */
    CHECK(decode_raw(WISP_MSG_SERVICE_STOP,
                     "\xff\xff\xff\x7f"
                     "abc",
                     7) == -WISP_E_TRUNCATED);
    /* An argv count of 2^32-1 is refused before anything is allocated for it. */
    uint8_t exec[] = {0, 0, 0, 0, 24, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    CHECK(decode_raw(WISP_MSG_EXEC, exec, sizeof exec) == -WISP_E_BAD_FIELD);
    /* A count within the item limit but more than the bytes left can hold. */
    exec[16] = 100;
    exec[17] = exec[18] = exec[19] = 0;
    CHECK(decode_raw(WISP_MSG_EXEC, exec, sizeof exec) == -WISP_E_TRUNCATED);
    /* An empty argv. */
    uint8_t exec0[24] = {[4] = 24, [6] = 80};
    CHECK(decode_raw(WISP_MSG_EXEC, exec0, sizeof exec0) == -WISP_E_BAD_FIELD);

    /* Every strict prefix of a structured message fails, whatever the cut. */
    struct wisp_msg m = {.type = WISP_MSG_EXEC, .stream = 2};
    m.u.exec.cwd = "/";
    m.u.exec.argv = (struct wisp_strv){3, argv_sh};
    m.u.exec.env = (struct wisp_strv){2, env_two};
    int n = wisp_msg_encode(&m, buf, sizeof buf);
    CHECK(n > WISP_PROTO_HEADER_SIZE);
    for (int cut = 0; cut < n - WISP_PROTO_HEADER_SIZE; cut++) {
        int r = decode_raw(WISP_MSG_EXEC, buf + WISP_PROTO_HEADER_SIZE, (uint32_t)cut);
        CHECK(r == -WISP_E_TRUNCATED || r == -WISP_E_BAD_FIELD);
    }

    /* The encoder refuses what would not decode, and what does not fit. */
    m.u.exec.argv = (struct wisp_strv){0, NULL};
    CHECK(wisp_msg_encode(&m, buf, sizeof buf) == -WISP_E_BAD_FIELD);
    static char big[WISP_PROTO_MAX_PAYLOAD];
    memset(big, 'a', sizeof big - 1);
    char *bigv[] = {big, NULL};
    m.u.exec.argv = (struct wisp_strv){1, bigv};
    CHECK(wisp_msg_encode(&m, buf, sizeof buf) == -WISP_E_TOO_LARGE);
    m.u.exec.argv = (struct wisp_strv){3, argv_sh};
    CHECK(wisp_msg_encode(&m, buf, 40) == -WISP_E_TOO_LARGE);
    m.type = 0x99;
    CHECK(wisp_msg_encode(&m, buf, sizeof buf) == -WISP_E_UNKNOWN_TYPE);
}

/* Reads a whole byte stream through a reader in pieces of `step` bytes (0: growing pieces),
 * recording frame types and error codes in order into events; returns the count. */
static int read_all(const uint8_t *data, size_t len, size_t step, int *events, int max)
{
    struct wisp_reader r;
    int count = 0;
    if (wisp_reader_init(&r, WISP_PROTO_MAX_PAYLOAD) != 0)
        return -1;
    size_t off = 0, piece = 1;
    while (off < len) {
        size_t n = step ? step : piece++;
        if (n > len - off)
            n = len - off;
        size_t pos = 0;
        while (pos < n) {
            size_t used;
            struct wisp_frame f;
            struct wisp_header eh;
            int rc = wisp_reader_feed(&r, data + off + pos, n - pos, &used, &f, &eh);
            CHECK(used <= n - pos);
            pos += used;
            if (rc != 0 && count < max)
                events[count++] = rc == 1 ? (int)f.h.type : rc;
            if (rc == 0)
                CHECK(pos == n);
        }
        off += n;
    }
    wisp_reader_free(&r);
    return count;
}

static void test_reader(void)
{
    static uint8_t stream[4 * WISP_PROTO_MAX_FRAME];
    size_t len = 0;
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)i;

    /* Garbage, including a false start of a magic, then a frame. */
    memcpy(stream + len, "garbageWISgarbage", 17);
    len += 17;
    len += raw_frame(stream + len, WISP_MSG_STDOUT, 1, payload, sizeof payload);
    /* An empty frame. */
    len += raw_frame(stream + len, WISP_MSG_STATUS, 2, "", 0);
    /* An oversized length: dropped without reading 4 GiB. */
    wisp_header_encode(stream + len, WISP_MSG_STDIN, 3, 0xfffffff0u);
    len += WISP_PROTO_HEADER_SIZE;
    len += raw_frame(stream + len, WISP_MSG_OK, 4, "", 0);
    /* A bad version with a sane length: its payload is skipped, then the stream is in sync. */
    size_t at = len;
    len += raw_frame(stream + len, WISP_MSG_OK, 5, "WISPWISPWISPWISP", 16);
    stream[at + 4] = 9;
    /* A frame of the maximum size. */
    static uint8_t maxp[WISP_PROTO_MAX_PAYLOAD];
    memset(maxp, 'W', sizeof maxp);
    len += raw_frame(stream + len, WISP_MSG_STDERR, 6, maxp, sizeof maxp);
    /* An unknown type is a whole frame; deciding about it is the decoder's job. */
    len += raw_frame(stream + len, 0x7e, 7, "zz", 2);
    /* Garbage that ends with the start of a real header. */
    memcpy(stream + len, "xxWI", 4);
    len += 4;
    len += raw_frame(stream + len, WISP_MSG_THAW, 8, "", 0);

    /* The oversized header starts a run of garbage, so the bytes after it are not reported
     * again. */
    int expect[] = {-WISP_E_BAD_MAGIC, WISP_MSG_STDOUT,     WISP_MSG_STATUS, -WISP_E_TOO_LARGE,
                    WISP_MSG_OK,       -WISP_E_BAD_VERSION, WISP_MSG_STDERR, 0x7e,
                    -WISP_E_BAD_MAGIC, WISP_MSG_THAW};
    int nexpect = (int)(sizeof expect / sizeof expect[0]);
    size_t steps[] = {1, 3, 16, 17, 4096, 0, sizeof stream};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        int events[32];
        int n = read_all(stream, len, steps[s], events, 32);
        CHECK(n == nexpect);
        for (int i = 0; i < n && i < nexpect; i++) {
            if (events[i] != expect[i])
                fprintf(stderr, "step %zu event %d: got %d want %d\n", steps[s], i, events[i],
                        expect[i]);
            CHECK(events[i] == expect[i]);
        }
    }

    /* Reset forgets a partial frame: the next bytes are read as a new frame. */
    struct wisp_reader r;
    CHECK(wisp_reader_init(&r, 1024) == 0);
    uint8_t f1[64];
    size_t n1 = raw_frame(f1, WISP_MSG_STDIN, 1, "abcdef", 6);
    size_t used;
    struct wisp_frame fr;
    CHECK(wisp_reader_feed(&r, f1, n1 - 3, &used, &fr, NULL) == 0 && used == n1 - 3);
    wisp_reader_reset(&r);
    CHECK(wisp_reader_feed(&r, f1, n1, &used, &fr, NULL) == 1 && used == n1);
    CHECK(fr.h.length == 6 && memcmp(fr.payload, "abcdef", 6) == 0);
    /* The reader's own limit applies too. */
    uint8_t hdr[WISP_PROTO_HEADER_SIZE];
    wisp_header_encode(hdr, WISP_MSG_STDIN, 1, 1025);
    struct wisp_header eh;
    CHECK(wisp_reader_feed(&r, hdr, sizeof hdr, &used, &fr, &eh) == -WISP_E_TOO_LARGE);
    CHECK(eh.stream == 1);
    CHECK(r.errors == 1 && r.frames == 1);
    wisp_reader_free(&r);
}

static void test_strings(void)
{
    CHECK(strcmp(wisp_err_to_string(-WISP_E_TOO_LARGE), "payload too large") == 0);
    CHECK(strcmp(wisp_err_to_string(WISP_E_TOO_LARGE), "payload too large") == 0);
    CHECK(strcmp(wisp_msg_type_to_string(WISP_MSG_EXEC), "exec") == 0);
    CHECK(wisp_msg_type_to_string(0x99) == NULL);
    int known = 0;
    for (int t = 0; t < 256; t++)
        known += wisp_msg_type_known((uint8_t)t);
    CHECK(known == 27);
}

int main(void)
{
    test_round_trips();
    test_malformed();
    test_reader();
    test_strings();
    return check_exit_code();
}
