/* lease: one writer per disk, fenced through the object store (DESIGN, storage invariant 11).
 *
 * Two servers, each with its own cache and metadata, share one store (file://, or radosgw with
 * the argument "s3"), with lease-ttl=2 and durability=remote:
 *   1. A opens disk d and writes; B's read-write open of d is refused, naming A as the holder;
 *      B's read-only open of a checkpoint d@ck is allowed;
 *   2. `wisp disk lease d` tells each who holds it; B's --steal is refused while A renews;
 *   3. A stops renewing (SIGSTOP for longer than the ttl); B takes the lease over with --steal
 *      (generation 2), and writes;
 *   4. A resumes: its next flush fails and it logs that it is fenced, so its write is never
 *      committed: its head in its metadata is still its last flush before the takeover;
 *   5. restarted, A cannot open d while B holds it; when B stops (releasing it), A can;
 *   6. A's lease stays renewed while its upload round (durability=local) pauses longer than the
 *      ttl between uploads and commit: renewals have their own thread. */
#include "server.h"
#include "vt.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static JsonNode *lease_of(struct ws_server *s)
{
    char *out = VT_CLI_OK(s, "disk", "lease", "d", "--json");
    JsonNode *n = vt_json(out);
    free(out);
    return n;
}

int main(int argc, char **argv)
{
    bool s3 = argc > 1 && strcmp(argv[1], "s3") == 0;
    ws_init(s3 ? "lease_s3" : "lease");
    if (ws_sanitizer_build()) /* see ws_server_start */
        ws_skip("leases are off in the sanitizer build (an exit hang under preloaded ASan)");
    struct ws_server *a = ws_server_new(s3 ? WS_STORE_S3 : WS_STORE_FILE);
    struct ws_server *b = ws_server_new(s3 ? WS_STORE_S3 : WS_STORE_FILE);
    uint8_t *shadow = ws_shadow_new(16 * MiB);
    char needle[64];

    ws_server_share_store(b, a);
    for (int i = 0; i < 2; i++) {
        struct ws_server *s = i ? b : a;
        ws_server_set(s, "lease-ttl", "2");
        ws_server_set(s, "durability", "remote");
        ws_server_set(s, "replica", i ? "b" : "a"); /* one replica per server */
        ws_disk_create(s, "d", "16M", "64K");
    }
    free(VT_CLI_OK(b, "disk", "checkpoint", "d", "ck"));
    ws_server_start(a);
    ws_server_start(b);

    /* 1. A writes; B may not, but may read a checkpoint. */
    struct nbd_handle *ha = ws_connect(a, "d");
    ws_write_random(ha, shadow, 0, 1 * MiB, 1);
    WS_NBD(nbd_flush(ha, 0));
    char *why = ws_connect_must_fail(b, "d");
    free(why);
    snprintf(needle, sizeof needle, "pid %d", (int)a->pid);
    WS_CHECK(ws_server_log_count(b, "is held by") >= 1 && ws_server_log_count(b, needle) >= 1,
             "B's log does not say that A (%s) holds the disk", needle);
    struct nbd_handle *hck = ws_connect(b, "d@ck");
    WS_CHECK(nbd_is_read_only(hck) == 1, "a checkpoint export must be read-only");
    ws_disconnect(hck);
    ws_log("B's open of d refused (A holds it), d@ck opened read-only");

    /* 2. Who holds it, as each server sees it; no steal while A renews. */
    JsonNode *la = lease_of(a), *lb = lease_of(b);
    WS_CHECK(ws_json_int(la, "lease.generation") == 1 && ws_json_int(lb, "lease.generation") == 1,
             "generation 1 expected");
    WS_CHECK(json_object_get_boolean_member(
                 json_object_get_object_member(json_node_get_object(la), "lease"), "ours"),
             "A does not see the lease as its own");
    WS_CHECK(!json_object_get_boolean_member(
                 json_object_get_object_member(json_node_get_object(lb), "lease"), "ours"),
             "B sees A's lease as its own");
    json_node_unref(la);
    json_node_unref(lb);
    sleep(3); /* longer than the ttl: only renewal keeps it */
    free(VT_CLI_FAIL(b, VT_NEEDLES("alive"), "disk", "lease", "d", "--steal"));

    /* 3. A stops renewing; B takes over. */
    WS_CHECK(kill(a->pid, SIGSTOP) == 0, "SIGSTOP");
    sleep(4);
    char *out = VT_CLI_OK(b, "disk", "lease", "d", "--steal", "--json");
    JsonNode *stolen = vt_json(out);
    free(out);
    WS_CHECK(ws_json_int(stolen, "lease.generation") == 2, "the takeover is not generation 2");
    json_node_unref(stolen);
    struct nbd_handle *hb = ws_connect(b, "d");
    uint8_t *scratch = ws_shadow_new(16 * MiB);
    ws_write_random(hb, scratch, 4 * MiB, 64 * 1024, 2);
    WS_NBD(nbd_flush(hb, 0));
    ws_log("B took the lease over (generation 2) and flushed a write");

    /* 4. A is fenced: its write after the takeover is never committed. */
    WS_CHECK(kill(a->pid, SIGCONT) == 0, "SIGCONT");
    ws_write_random(ha, scratch, 8 * MiB, 64 * 1024, 3);
    WS_CHECK(nbd_flush(ha, 0) == -1, "A's flush after the takeover succeeded: not fenced");
    WS_CHECK(ws_server_log_count(a, "fenced") >= 1, "A's log does not say it is fenced");
    ws_log("A's flush after the takeover failed: %s", nbd_get_error());
    ws_disconnect(ha);
    ws_disconnect(hb);

    /* 5. Restarted, A waits for B to let go. */
    ws_server_stop(a);
    ws_server_start(a);
    why = ws_connect_must_fail(a, "d");
    free(why);
    ws_server_stop(b); /* releases its lease */
    ha = ws_connect(a, "d");
    la = lease_of(a);
    WS_CHECK(ws_json_int(la, "lease.generation") == 3, "A's new lease is not generation 3");
    json_node_unref(la);
    /* A's data: its flush before the takeover, and not its fenced write. */
    vt_compare_handle(ha, shadow, 16 * MiB, "A's head after the takeover");
    ws_disconnect(ha);
    ws_server_stop(a);

    /* 6. Renewals do not wait behind uploads: with durability=local, A's upload round pauses
     *    5 s between its uploads and its commit (longer than the ttl); B's steal is refused
     *    all along, since A's lease thread keeps renewing. */
    ws_server_set(a, "durability", "local");
    ws_server_set(a, "upload-delay", "0");
    setenv("WISP_TEST_COMMIT_DELAY_MS", "5000", 1);
    ws_server_start(a);
    unsetenv("WISP_TEST_COMMIT_DELAY_MS");
    ws_server_start(b);
    ha = ws_connect(a, "d");
    ws_write_random(ha, shadow, 2 * MiB, 64 * 1024, 4);
    WS_NBD(nbd_flush(ha, 0));
    double t0 = ws_now();
    while (ws_server_log_count(a, "WISP_TEST_COMMIT_DELAY_MS") == 0 && ws_now() - t0 < 10)
        usleep(50 * 1000);
    WS_CHECK(ws_server_log_count(a, "WISP_TEST_COMMIT_DELAY_MS") >= 1,
             "A's upload round did not reach its pause");
    t0 = ws_now();
    int refused = 0;
    while (ws_now() - t0 < 4) {
        free(VT_CLI_FAIL(b, VT_NEEDLES("alive"), "disk", "lease", "d", "--steal"));
        refused++;
        usleep(400 * 1000);
    }
    ws_log("B's steal refused %d times while A's upload round paused 5 s (ttl 2 s)", refused);
    vt_compare_handle(ha, shadow, 16 * MiB, "A's disk after the paused round");
    ws_disconnect(ha);
    ws_server_stop(b);
    ws_server_stop(a);
    ws_shadow_free(shadow, 16 * MiB);
    ws_shadow_free(scratch, 16 * MiB);
    ws_log("PASS");
    return 0;
}
