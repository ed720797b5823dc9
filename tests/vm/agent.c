/* agent.c: the VM tests of issue 5 on one boot (and a second boot for persistence).
 *
 * Boot 1 (disk attached at launch): READY is measured; attach; the container's view (uname,
 * id -u, PID 1's cmdline, hostname, df); exit codes 0, 1 and 137; 64 MiB through sha256sum;
 * 200 MiB of stdout with the guest's memory watched while the host stops reading; five
 * concurrent execs; a pty's size after RESIZE; status; a service; freeze, a checkpoint of the
 * disk taken on the host, thaw, and e2fsck -n of the checkpoint; bad frames on the channel;
 * a session adopted after a reconnect.  Then a file is written and the VM shut down.
 * (Escapes from the container are in escapes.c.)
 * Boot 2 (placeholder disk, swapped over QMP once wisp-init is ready: the QMP manager's claim
 * path): the file is there. */
#include "vm_fixture.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MiB (1024 * 1024)

static struct vmf_disk disk;

static void check_container_view(struct vmf_vm *v)
{
    g_autofree char *uname = vmf_sh_ok(v, "uname -a");
    g_autofree char *uid = vmf_sh_ok(v, "id -u");
    g_autofree char *init = vmf_sh_ok(v, "tr '\\0' ' ' < /proc/1/cmdline");
    g_autofree char *host = vmf_sh_ok(v, "hostname");
    g_autofree char *df = vmf_sh_ok(v, "df -h / | tail -n 1");
    g_autofree char *kib = vmf_sh_ok(v, "df -k / | tail -n 1 | awk '{print $2}'");
    double gib = g_ascii_strtod(kib, NULL) / (1024.0 * 1024.0);

    fx_log("uname -a: %s", uname);
    FX_CHECK(strncmp(uname, "Linux ", 6) == 0, "uname: %s", uname);
    FX_CHECK(strcmp(uid, "0") == 0, "id -u: %s", uid);
    fx_log("PID 1 in the container: %s", init);
    FX_CHECK(*init && !strstr(init, "wisp-init"), "PID 1 is wisp-init: %s", init);
    FX_CHECK(strcmp(host, "sprite-test") == 0, "hostname: %s", host);
    fx_log("df -h /: %s", df);
    FX_CHECK(gib > 95 && gib <= 100.5, "/ is %.1f GiB, not about 100", gib);
}

static void check_exit_codes(struct vmf_vm *v)
{
    FX_CHECK(vmf_sh(v, NULL, "exit 0") == 0, "exit 0");
    FX_CHECK(vmf_sh(v, NULL, "exit 1") == 1, "exit 1");
    int st = vmf_sh(v, NULL, "kill -9 $$");
    FX_CHECK(st == 137, "kill -9: status %d", st);
    const char *argv[] = {"/no/such/program", NULL};
    GError *err = NULL;
    st = agent_exec_run(v->agent, argv, NULL, 0, NULL, NULL, NULL, 30000, &err);
    FX_CHECK(st == 127, "a missing program: %d (%s)", st, err ? err->message : "");

    /* stdout and stderr come apart. */
    const char *both[] = {"/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 5", NULL};
    g_autofree char *out = NULL, *errout = NULL;
    st = agent_exec_run(v->agent, both, NULL, 0, &out, NULL, &errout, 30000, &err);
    FX_CHECK(st == 5 && strcmp(out, "to-out\n") == 0 && strcmp(errout, "to-err\n") == 0,
             "status %d, stdout '%s', stderr '%s'", st, out, errout);

    /* SIGNAL: a TERM to a sleeping process ends it by that signal. */
    const char *sleeper[] = {"sleep", "600", NULL};
    struct agent_exec_opts opts = {.argv = sleeper};
    int kind = -1, code = -1;
    agent_exec *e = agent_exec_start(v->agent, &opts, 30000, &err);
    FX_CHECK(e, "exec sleep: %s", err ? err->message : "?");
    FX_CHECK(agent_exec_signal(e, SIGTERM, &err), "signal: %s", err ? err->message : "?");
    FX_CHECK(agent_exec_wait(e, 30000, &kind, &code, &err), "wait: %s", err ? err->message : "?");
    FX_CHECK(kind == WISP_EXIT_SIGNAL && code == SIGTERM, "after SIGTERM: kind %d code %d", kind,
             code);
    agent_exec_free(e);
    fx_log("exit codes 0, 1, 137 (kill -9), 127 (no program), SIGTERM by SIGNAL: right");
}

static void check_stdin_sha256(struct vmf_vm *v)
{
    size_t len = 64 * MiB;
    uint8_t *data = g_malloc(len);
    uint64_t seed = 0x5eed;
    g_autofree char *out = NULL;
    GError *err = NULL;

    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = fx_rand_next(&seed);
        memcpy(data + i, &r, 8);
    }
    g_autofree char *want = g_compute_checksum_for_data(G_CHECKSUM_SHA256, data, len);
    const char *argv[] = {"sha256sum", NULL};
    double t0 = fx_now();
    int st = agent_exec_run(v->agent, argv, data, len, &out, NULL, NULL, 300000, &err);
    double s = fx_now() - t0;
    FX_CHECK(st == 0, "sha256sum: %d %s", st, err ? err->message : "");
    FX_CHECK(strncmp(out, want, 64) == 0, "sha256 of 64 MiB: guest %.64s, host %s", out, want);
    fx_log("64 MiB stdin through sha256sum: correct, %.1f s (%.1f MiB/s)", s, 64 / s);
    g_free(data);
}

static uint64_t mem_available_kib(struct vmf_vm *v)
{
    GError *err = NULL;
    struct wisp_msg *st = agent_client_status(v->agent, 30000, &err);
    uint64_t kib;

    FX_CHECK(st, "status: %s", err ? err->message : "?");
    kib = st->u.status.mem_available_kib;
    wisp_msg_free(st);
    g_free(st);
    return kib;
}

static void check_stdout_200m(struct vmf_vm *v)
{
    const char *argv[] = {"dd", "if=/dev/zero", "bs=1M", "count=200", NULL};
    struct agent_exec_opts opts = {.argv = argv};
    uint64_t before = mem_available_kib(v), during, total = 0;
    char *buf = g_malloc(65536);
    GError *err = NULL;
    int kind, code;

    agent_exec *e = agent_exec_start(v->agent, &opts, 30000, &err);
    FX_CHECK(e, "exec dd: %s", err ? err->message : "?");
    /* Read 16 MiB, then stop reading for a while: the guest must hold back, not buffer. */
    double t0 = fx_now();
    while (total < 16 * MiB) {
        enum agent_stream_kind k;
        ssize_t n = agent_exec_read(e, buf, 65536, &k, 60000, &err);
        FX_CHECK(n > 0, "read: %s", err ? err->message : "EOF early");
        if (k == AGENT_STDOUT)
            total += (uint64_t)n;
    }
    fx_sleep(2);
    during = mem_available_kib(v);
    fx_log("guest MemAvailable: %llu KiB before, %llu KiB with dd blocked on credit",
           (unsigned long long)before, (unsigned long long)during);
    FX_CHECK(during + 16 * 1024 > before, "the guest buffers output: %llu -> %llu KiB",
             (unsigned long long)before, (unsigned long long)during);
    for (;;) {
        enum agent_stream_kind k;
        ssize_t n = agent_exec_read(e, buf, 65536, &k, 60000, &err);
        FX_CHECK(n >= 0, "read: %s", err ? err->message : "?");
        if (n == 0)
            break;
        if (k == AGENT_STDOUT)
            total += (uint64_t)n;
    }
    double s = fx_now() - t0 - 2;
    FX_CHECK(agent_exec_wait(e, 10000, &kind, &code, &err) && kind == WISP_EXIT_CODE && code == 0,
             "dd exit %d/%d %s", kind, code, err ? err->message : "");
    FX_CHECK(total == 200ull * MiB, "got %llu bytes of 200 MiB", (unsigned long long)total);
    fx_log("200 MiB of stdout: %.1f s, %.1f MiB/s", s, 200 / s);
    agent_exec_free(e);
    g_free(buf);
}

static void check_concurrent(struct vmf_vm *v)
{
    agent_exec *e[5];
    GError *err = NULL;
    double t0 = fx_now();

    for (int i = 0; i < 5; i++) {
        g_autofree char *script = g_strdup_printf("sleep 2; echo session-%d", i);
        const char *argv[] = {"/bin/sh", "-c", script, NULL};
        struct agent_exec_opts opts = {.argv = argv};
        e[i] = agent_exec_start(v->agent, &opts, 30000, &err);
        FX_CHECK(e[i], "exec %d: %s", i, err ? err->message : "?");
    }
    for (int i = 0; i < 5; i++) {
        char buf[256];
        size_t got = 0;
        enum agent_stream_kind k;
        ssize_t n;
        int kind, code;
        while ((n = agent_exec_read(e[i], buf + got, sizeof buf - 1 - got, &k, 30000, &err)) > 0)
            got += (size_t)n;
        FX_CHECK(n == 0, "read %d: %s", i, err ? err->message : "?");
        buf[got] = '\0';
        g_autofree char *want = g_strdup_printf("session-%d\n", i);
        FX_CHECK(strcmp(buf, want) == 0, "session %d said '%s'", i, buf);
        FX_CHECK(agent_exec_wait(e[i], 10000, &kind, &code, &err) && code == 0, "exit %d", i);
        agent_exec_free(e[i]);
    }
    double s = fx_now() - t0;
    fx_log("five concurrent 2 s execs took %.1f s", s);
    FX_CHECK(s < 8, "five 2 s sleeps took %.1f s: not concurrent", s);
}

/* Reads a pty session's output until `want` shows up. */
static void pty_expect(agent_exec *e, GString *acc, const char *want)
{
    GError *err = NULL;
    char buf[512];

    while (!strstr(acc->str, want)) {
        enum agent_stream_kind k;
        ssize_t n = agent_exec_read(e, buf, sizeof buf, &k, 30000, &err);
        FX_CHECK(n > 0, "pty: waiting for '%s', have '%s': %s", want, acc->str,
                 err ? err->message : "EOF");
        g_string_append_len(acc, buf, n);
    }
}

static void check_pty(struct vmf_vm *v)
{
    const char *argv[] = {"/bin/sh", "-c", "stty size; read x; stty size", NULL};
    struct agent_exec_opts opts = {
        .argv = argv, .tty = true, .with_stdin = true, .rows = 24, .cols = 80};
    g_autoptr(GString) acc = g_string_new(NULL);
    GError *err = NULL;
    int kind, code;

    agent_exec *e = agent_exec_start(v->agent, &opts, 30000, &err);
    FX_CHECK(e, "exec pty: %s", err ? err->message : "?");
    pty_expect(e, acc, "24 80");
    FX_CHECK(agent_exec_resize(e, 50, 132, &err), "resize: %s", err ? err->message : "?");
    FX_CHECK(agent_exec_write(e, "\n", 1, 10000, &err), "stdin: %s", err ? err->message : "?");
    pty_expect(e, acc, "50 132");
    FX_CHECK(agent_exec_wait(e, 30000, &kind, &code, &err) && code == 0, "pty exit");
    agent_exec_free(e);
    fx_log("pty: stty size 24 80, then 50 132 after RESIZE");
}

static void check_status_and_services(struct vmf_vm *v)
{
    const char *argv[] = {"/bin/sh", "-c", "while true; do echo tick; sleep 0.2; done", NULL};
    GError *err = NULL;
    struct wisp_msg *st = agent_client_status(v->agent, 30000, &err);

    FX_CHECK(st, "status: %s", err ? err->message : "?");
    fx_log("status: uptime %llu ms, memory %llu/%llu KiB available, attached %u, sessions %u",
           (unsigned long long)st->u.status.uptime_ms,
           (unsigned long long)st->u.status.mem_available_kib,
           (unsigned long long)st->u.status.mem_total_kib, st->u.status.attached,
           st->u.status.session_count);
    FX_CHECK(st->u.status.attached == 1 && st->u.status.uptime_ms > 0, "status");
    wisp_msg_free(st);
    g_free(st);

    FX_CHECK(agent_client_service_start(v->agent, "ticker", argv, NULL, NULL, WISP_RESTART_ALWAYS,
                                        0, 30000, &err),
             "service start: %s", err ? err->message : "?");
    fx_sleep(1.5);
    struct wisp_msg *list = agent_client_service_list(v->agent, 30000, &err);
    FX_CHECK(list, "service list: %s", err ? err->message : "?");
    bool running = false;
    for (uint32_t i = 0; i < list->u.service_list.count; i++)
        if (strcmp(list->u.service_list.services[i].name, "ticker") == 0)
            running = list->u.service_list.services[i].state == WISP_SERVICE_RUNNING;
    wisp_msg_free(list);
    g_free(list);
    FX_CHECK(running, "the service is not running");
    g_autofree char *logs = agent_client_service_logs(v->agent, "ticker", 4096, NULL, 30000, &err);
    FX_CHECK(logs && strstr(logs, "tick"), "service logs: %s", err ? err->message : logs);
    FX_CHECK(agent_client_service_stop(v->agent, "ticker", 30000, &err), "service stop: %s",
             err ? err->message : "?");
    fx_log("service: started, running, logged, stopped");
}

static void check_freeze_snapshot(struct vmf_vm *v)
{
    GError *err = NULL;
    char uri[900], img[700];

    g_free(vmf_sh_ok(v, "echo before-freeze > /root/freeze.txt && sync"));
    FX_CHECK(agent_client_freeze(v->agent, 30000, &err), "freeze: %s", err ? err->message : "?");
    const char *ckpt[] = {
        fx_need_env("WISP_TEST_CLI"), "disk", "checkpoint", disk.name, "frozen", "--control",
        disk.server.control,          NULL};
    int rc = fx_run(ckpt);
    FX_CHECK(agent_client_thaw(v->agent, 30000, &err), "thaw: %s", err ? err->message : "?");
    FX_CHECK(rc == 0, "wisp disk checkpoint exited %d (see commands.log)", rc);
    g_free(vmf_sh_ok(v, "echo after-thaw >> /root/freeze.txt"));

    snprintf(uri, sizeof uri, "nbd+unix:///%s@frozen?socket=%s", disk.name, disk.server.sock);
    snprintf(img, sizeof img, "%s/frozen.img", fx_tmpdir());
    const char *copy[] = {"nbdcopy", uri, img, NULL};
    FX_CHECK(fx_run(copy) == 0, "nbdcopy of the checkpoint");
    const char *fsck[] = {"e2fsck", "-fn", img, NULL};
    rc = fx_run(fsck);
    FX_CHECK(rc == 0, "e2fsck -fn of the frozen checkpoint exited %d (see commands.log)", rc);
    unlink(img);
    fx_log("freeze, host checkpoint, thaw: e2fsck -fn finds the checkpoint clean");
}

/* Reads frames until one of `type` (with `nonce` for READY) arrives.  Returns 1 with *m
 * decoded (wisp_msg_free it), 0 if the connection closed, -1 on timeout. */
static int raw_wait(int fd, struct wisp_reader *r, uint8_t type, uint64_t nonce, struct wisp_msg *m)
{
    uint8_t buf[4096];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0)
            return -1; /* SO_RCVTIMEO */
        size_t off = 0;
        while (off < (size_t)n) {
            struct wisp_frame f;
            struct wisp_header bad;
            size_t used = 0;
            int rc = wisp_reader_feed(r, buf + off, (size_t)n - off, &used, &f, &bad);
            off += used;
            if (rc != 1 || f.h.type != type)
                continue;
            FX_CHECK(wisp_msg_decode(&f.h, f.payload, m) == 0, "decode %s",
                     wisp_msg_type_to_string(type));
            if (type != WISP_MSG_READY || m->u.ready.nonce == nonce)
                return 1; /* (the rest of buf is not needed) */
            wisp_msg_free(m);
        }
    }
}

/* A fresh connection that first does what the protocol asks of a new host (HELLO until the
 * READY with its nonce: bytes sent before the guest has seen the reconnect may be lost with
 * the old connection), then sends raw bytes and expects ERROR (any code) or a dropped
 * connection within 10 s. */
static void bad_frame(const char *ctl, const char *what, const void *bytes, size_t len)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct wisp_msg hello = {.type = WISP_MSG_HELLO}, m;
    struct wisp_reader r;
    uint8_t frame[256];
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const char *how = NULL;
    int rc = -1;

    FX_CHECK(fd >= 0, "socket");
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", ctl);
    FX_CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "connect: %s",
             strerror(errno));
    wisp_reader_init(&r, WISP_PROTO_MAX_PAYLOAD);
    hello.u.hello.min_version = hello.u.hello.max_version = WISP_PROTO_VERSION;
    hello.u.hello.nonce = 0x6261646672616d65ull;
    hello.u.hello.client = (char *)"bad-frame-test";
    int hlen = wisp_msg_encode(&hello, frame, sizeof frame);
    FX_CHECK(hlen > 0, "encode HELLO");
    struct timeval tv = {.tv_usec = 200 * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 50 && rc != 1; i++) {
        FX_CHECK(write(fd, frame, (size_t)hlen) == hlen, "write HELLO");
        rc = raw_wait(fd, &r, WISP_MSG_READY, hello.u.hello.nonce, &m);
        FX_CHECK(rc != 0, "%s: the connection closed before READY", what);
    }
    FX_CHECK(rc == 1, "%s: no READY to our HELLO in 10 s", what);
    wisp_msg_free(&m);

    FX_CHECK(write(fd, bytes, len) == (ssize_t)len, "write");
    tv = (struct timeval){.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    rc = raw_wait(fd, &r, WISP_MSG_ERROR, 0, &m);
    FX_CHECK(rc >= 0, "%s: neither an error nor a closed connection in 10 s", what);
    if (rc == 1) {
        how = wisp_err_to_string((int)m.u.error.code);
        wisp_msg_free(&m);
    } else {
        how = "connection dropped";
    }
    wisp_reader_free(&r);
    close(fd);
    fx_log("bad frame, %s: %s", what, how);
}

/* A broken host connection does not end the user's process: a session started on one
 * connection is adopted by the next, and its output and exit come there. */
static void check_reconnect_adopt(struct vmf_vm *v)
{
    const char *argv[] = {"/bin/sh", "-c", "sleep 3; echo survived", NULL};
    struct agent_exec_opts opts = {.argv = argv};
    GError *err = NULL;
    char buf[256];
    size_t got = 0;
    ssize_t n;
    int kind = -1, code = -1;

    agent_exec *e = agent_exec_start(v->agent, &opts, 30000, &err);
    FX_CHECK(e, "exec: %s", err ? err->message : "?");
    uint32_t stream = agent_exec_stream(e);
    agent_exec_free(e);
    agent_client_free(v->agent);
    v->agent = agent_client_connect(v->vm->ctl_path, 10000, &err);
    FX_CHECK(v->agent, "reconnect: %s", err ? err->message : "?");
    FX_CHECK(agent_client_wait_ready(v->agent, 30000, NULL, &err), "READY: %s",
             err ? err->message : "?");
    struct wisp_msg *st = agent_client_status(v->agent, 30000, &err);
    FX_CHECK(st, "status: %s", err ? err->message : "?");
    bool listed = false;
    for (uint32_t i = 0; i < st->u.status.session_count; i++)
        listed |= st->u.status.sessions[i].stream == stream;
    wisp_msg_free(st);
    g_free(st);
    FX_CHECK(listed, "STATUS does not list session %u after the reconnect", stream);
    e = agent_exec_adopt(v->agent, stream, 0, &err);
    FX_CHECK(e, "adopt: %s", err ? err->message : "?");
    enum agent_stream_kind k;
    while ((n = agent_exec_read(e, buf + got, sizeof buf - 1 - got, &k, 30000, &err)) > 0)
        got += (size_t)n;
    FX_CHECK(n == 0, "read after adopting: %s", err ? err->message : "?");
    buf[got] = '\0';
    FX_CHECK(strcmp(buf, "survived\n") == 0, "adopted session said '%s'", buf);
    FX_CHECK(agent_exec_wait(e, 10000, &kind, &code, &err) && kind == WISP_EXIT_CODE && code == 0,
             "exit after adopting: %d/%d", kind, code);
    agent_exec_free(e);
    fx_log("reconnect: a session of the old connection ran on, was adopted, and exited 0");
}

static void check_bad_frames(struct vmf_vm *v)
{
    uint8_t hdr[WISP_PROTO_HEADER_SIZE + 3];
    GError *err = NULL;
    const char *ctl = v->vm->ctl_path;

    /* The one host connection is ours: let go of it for the raw ones. */
    agent_client_free(v->agent);
    v->agent = NULL;
    bad_frame(ctl, "garbage", "this is not a frame at all, just bytes\n", 39);
    wisp_header_encode(hdr, WISP_MSG_EXEC, 7, 0x7fffffffu);
    bad_frame(ctl, "oversized length", hdr, WISP_PROTO_HEADER_SIZE);
    wisp_header_encode(hdr, 0x7e, 8, 0);
    bad_frame(ctl, "unknown type", hdr, WISP_PROTO_HEADER_SIZE);
    wisp_header_encode(hdr, WISP_MSG_EXEC, 9, 3);
    memcpy(hdr + WISP_PROTO_HEADER_SIZE, "\1\0\0", 3);
    bad_frame(ctl, "truncated message", hdr, sizeof hdr);

    v->agent = agent_client_connect(ctl, 10000, &err);
    FX_CHECK(v->agent, "reconnect: %s", err ? err->message : "?");
    FX_CHECK(agent_client_wait_ready(v->agent, 30000, NULL, &err), "READY again: %s",
             err ? err->message : "?");
    g_autofree char *alive = vmf_sh_ok(v, "echo still-serving");
    FX_CHECK(strcmp(alive, "still-serving") == 0, "after bad frames: %s", alive);
}

int main(void)
{
    struct vmf_image img;
    struct vmf_vm v;
    char token[64];
    uint64_t seed = fx_seed();

    fx_setup("vm-agent");
    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "sprite");

    vmf_boot(&v, &img, &disk, "boot1", false, "sprite-test");
    check_container_view(&v);
    check_exit_codes(&v);
    check_pty(&v);
    check_stdin_sha256(&v);
    check_stdout_200m(&v);
    check_status_and_services(&v);
    check_freeze_snapshot(&v);
    check_bad_frames(&v);
    check_reconnect_adopt(&v);
    check_concurrent(&v);
    snprintf(token, sizeof token, "persist-%016llx", (unsigned long long)fx_rand_next(&seed));
    g_autofree char *script = g_strdup_printf("echo %s > /root/persist.txt && sync", token);
    g_free(vmf_sh_ok(&v, script));
    vmf_shutdown(&v);

    vmf_boot(&v, &img, &disk, "boot2", true, "sprite-test");
    g_autofree char *back = vmf_sh_ok(&v, "cat /root/persist.txt");
    FX_CHECK(strcmp(back, token) == 0, "after a reboot: '%s', wrote '%s'", back, token);
    g_autofree char *frozen = vmf_sh_ok(&v, "cat /root/freeze.txt");
    FX_CHECK(strcmp(frozen, "before-freeze\nafter-thaw") == 0, "freeze.txt: %s", frozen);
    fx_log("boot 2 (claim path): the files of boot 1 are there");
    vmf_shutdown(&v);
    fx_server_stop(&disk.server);
    fx_log("ok");
    return 0;
}
