/* qmp.c: the QMP client against a real QEMU (microvm, paused, no guest needed).
 *
 * Checked: capabilities negotiation and the greeting's version; a command's return; QEMU's
 * errors with their class; events queued before anyone waits (STOP, RESUME); asynchronous
 * commands answered in order and matched by id; a file descriptor passed with getfd; a
 * timeout while QEMU is stopped (SIGSTOP), after which the late reply is dropped and the next
 * command gets its own answer; a QEMU killed under the client fails the command with CLOSED
 * and runs the close handler. */
#include "qmp.h"
#include "fixture.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int closes;
static bool nested_ok;

/* On RESUME, a synchronous command from inside the event callback. */
static void on_event(qmp_client *c, const char *event, JsonNode *data, gint64 ts_us, void *opaque)
{
    GError *err = NULL;
    JsonNode *r;

    if (strcmp(event, "RESUME") != 0)
        return;
    r = qmp_client_execute(c, "query-status", NULL, 3000, &err);
    nested_ok = r && json_object_get_boolean_member(json_node_get_object(r), "running");
    if (r)
        json_node_unref(r);
    g_clear_error(&err);
}

static void on_close(qmp_client *c, const GError *why, void *opaque)
{
    closes++;
    fx_log("close handler: %s", why->message);
}

struct async_result {
    int order[3];
    int n;
};

static void on_reply(qmp_client *c, JsonNode *ret, const GError *error, void *opaque)
{
    struct async_result *r = opaque;

    FX_CHECK(ret != NULL, "async reply: %s", error ? error->message : "?");
    r->order[r->n++] = JSON_NODE_HOLDS_OBJECT(ret) ? 1 : 2;
}

int main(void)
{
    const char *dir = fx_setup("vm-qmp");
    g_autofree char *sock = g_build_filename(dir, "qmp.sock", NULL);
    g_autofree char *log = g_build_filename(dir, "qemu.log", NULL);
    g_autofree char *qmp_arg = g_strdup_printf("unix:%s,server=on,wait=off", sock);
    const char *argv[] = {"qemu-system-x86_64",
                          "-M",
                          "microvm",
                          "-accel",
                          "tcg",
                          "-nodefaults",
                          "-no-user-config",
                          "-display",
                          "none",
                          "-S",
                          "-qmp",
                          qmp_arg,
                          NULL};
    GError *err = NULL;
    JsonNode *r;
    pid_t pid;

    g_autofree char *qemu = g_find_program_in_path("qemu-system-x86_64");
    if (!qemu)
        fx_skip("qemu-system-x86_64 is not installed (scripts/deps installs qemu-system-x86)");
    pid = proc_spawn(argv, log, true);
    FX_CHECK(pid > 0, "spawn QEMU: %s", g_strerror(-pid));

    double t0 = fx_now();
    qmp_client *q = qmp_client_connect(sock, NULL, 10000, &err);
    FX_CHECK(q, "connect: %s", err ? err->message : "?");
    fx_log("QMP ready %.0f ms after launch, QEMU %s", (fx_now() - t0) * 1000,
           qmp_client_qemu_version(q));
    FX_CHECK(qmp_client_qemu_version(q) && *qmp_client_qemu_version(q) != '0', "version");
    qmp_client_set_close_handler(q, on_close, NULL);
    qmp_client_set_event_handler(q, on_event, NULL);

    r = qmp_client_execute(q, "query-status", NULL, 5000, &err);
    FX_CHECK(r && JSON_NODE_HOLDS_OBJECT(r), "query-status: %s", err ? err->message : "?");
    JsonObject *o = json_node_get_object(r);
    FX_CHECK(!json_object_get_boolean_member(o, "running"), "-S: not running");
    FX_CHECK(strcmp(json_object_get_string_member(o, "status"), "prelaunch") == 0 ||
                 strcmp(json_object_get_string_member(o, "status"), "paused") == 0,
             "status %s", json_object_get_string_member(o, "status"));
    json_node_unref(r);

    r = qmp_client_execute(q, "no-such-command", NULL, 5000, &err);
    FX_CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_COMMAND), "unknown command");
    FX_CHECK(strcmp(qmp_client_last_error_class(q), "CommandNotFound") == 0, "class %s",
             qmp_client_last_error_class(q));
    fx_log("error: %s", err->message);
    g_clear_error(&err);
    r = qmp_client_executef(q, 5000, &err, "blockdev-del", "{\"node-name\": \"%s\"}", "nope");
    FX_CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_COMMAND), "blockdev-del nope");
    FX_CHECK(strstr(err->message, "GenericError"), "%s", err->message);
    g_clear_error(&err);

    /* Events: RESUME and STOP arrive before we wait for them, and are not lost. */
    r = qmp_client_execute(q, "cont", NULL, 5000, &err);
    FX_CHECK(r, "cont: %s", err ? err->message : "?");
    json_node_unref(r);
    r = qmp_client_execute(q, "stop", NULL, 5000, &err);
    FX_CHECK(r, "stop: %s", err ? err->message : "?");
    json_node_unref(r);
    r = qmp_client_wait_event(q, "RESUME", 5000, &err);
    FX_CHECK(r, "RESUME: %s", err ? err->message : "?");
    json_node_unref(r);
    FX_CHECK(nested_ok, "a synchronous command from the RESUME callback");
    r = qmp_client_wait_event(q, "STOP", 5000, &err);
    FX_CHECK(r, "STOP: %s", err ? err->message : "?");
    json_node_unref(r);
    r = qmp_client_wait_event(q, "STOP", 200, &err);
    FX_CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_TIMEOUT), "a second STOP");
    g_clear_error(&err);

    /* Asynchronous commands, answered in order: an object, then an array. */
    struct async_result ar = {0};
    qmp_client_execute_async(q, "query-status", NULL, 5000, on_reply, &ar);
    qmp_client_execute_async(q, "query-named-block-nodes", NULL, 5000, on_reply, &ar);
    r = qmp_client_execute(q, "query-version", NULL, 5000, &err); /* drives the loop */
    FX_CHECK(r, "query-version: %s", err ? err->message : "?");
    json_node_unref(r);
    FX_CHECK(ar.n == 2 && ar.order[0] == 1 && ar.order[1] == 2, "async replies %d", ar.n);

    /* getfd: QEMU gets a descriptor over SCM_RIGHTS, and closefd finds it by name. */
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    FX_CHECK(fd >= 0, "open /dev/null");
    FX_CHECK(qmp_client_send_fd(q, fd, "probe-fd", 5000, &err), "getfd: %s",
             err ? err->message : "?");
    close(fd);
    r = qmp_client_executef(q, 5000, &err, "closefd", "{\"fdname\": \"probe-fd\"}");
    FX_CHECK(r, "closefd: %s", err ? err->message : "?");
    json_node_unref(r);

    /* A hung QEMU: the command times out; the late reply is dropped on resume. */
    FX_CHECK(kill(pid, SIGSTOP) == 0, "SIGSTOP");
    t0 = fx_now();
    r = qmp_client_execute(q, "query-status", NULL, 300, &err);
    FX_CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_TIMEOUT), "timeout expected");
    FX_CHECK(fx_now() - t0 < 2.0, "the timeout took %.2f s", fx_now() - t0);
    g_clear_error(&err);
    FX_CHECK(kill(pid, SIGCONT) == 0, "SIGCONT");
    r = qmp_client_execute(q, "query-version", NULL, 5000, &err);
    FX_CHECK(r && JSON_NODE_HOLDS_OBJECT(r) &&
                 json_object_has_member(json_node_get_object(r), "qemu"),
             "the reply after a timeout is the right one: %s", err ? err->message : "?");
    json_node_unref(r);

    /* QEMU dies: the command fails with CLOSED at once, the close handler runs. */
    FX_CHECK(kill(pid, SIGKILL) == 0, "SIGKILL");
    t0 = fx_now();
    r = qmp_client_execute(q, "query-status", NULL, 10000, &err);
    FX_CHECK(!r && g_error_matches(err, QMP_ERROR, QMP_ERROR_CLOSED), "closed: %s",
             err ? err->message : "a reply");
    FX_CHECK(fx_now() - t0 < 2.0, "noticed after %.2f s", fx_now() - t0);
    g_clear_error(&err);
    FX_CHECK(closes == 1, "close handler ran %d times", closes);
    FX_CHECK(qmp_client_is_closed(q), "closed");
    qmp_client_free(q);
    proc_wait(pid, 5000, NULL);
    fx_log("ok");
    return 0;
}
