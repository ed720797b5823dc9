/* test_agent_parts: the parts of wisp-init that run the same on the host: the byte ring behind
 * the sessions' back-pressure and the services' logs, the environment composition, and the
 * parser of /proc/net/tcp listeners. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../parsers/check.h"
#include "env.h"
#include "proc_net.h"
#include "ring.h"

static void test_ring_fifo(void)
{
    struct ring r;
    CHECK(ring_init(&r, 8) == 0);
    uint8_t out[16];
    CHECK(ring_put(&r, (const uint8_t *)"abcdef", 6) == 6);
    CHECK(ring_take(&r, out, 4) == 4 && memcmp(out, "abcd", 4) == 0);
    /* Wraps around the end. */
    CHECK(ring_put(&r, (const uint8_t *)"ghijklmn", 8) == 6);
    CHECK(ring_space(&r) == 0);
    CHECK(ring_take(&r, out, 16) == 8 && memcmp(out, "efghijkl", 8) == 0);
    CHECK(r.len == 0);

    /* A full ring reads nothing from the descriptor: that is the back-pressure. */
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], "0123456789", 10) == 10);
    CHECK(ring_fill_from_fd(&r, p[0]) == 8);
    errno = 0;
    CHECK(ring_fill_from_fd(&r, p[0]) == -1 && errno == ENOBUFS);
    CHECK(ring_take(&r, out, 3) == 3 && memcmp(out, "012", 3) == 0);
    /* The free run after a wrap is filled in one read at most; a second read continues. */
    ssize_t got = ring_fill_from_fd(&r, p[0]);
    CHECK(got >= 1 && got <= 2);
    CHECK(r.len == 5 + (size_t)got);
    /* Draining to a descriptor drops what was written. */
    int q[2];
    CHECK(pipe(q) == 0);
    size_t before = r.len;
    ssize_t put = ring_drain_to_fd(&r, q[1]);
    CHECK(put > 0 && r.len == before - (size_t)put);
    char buf[16] = "";
    CHECK(read(q[0], buf, sizeof buf) == put && memcmp(buf, "34567", put < 5 ? put : 5) == 0);
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
    ring_free(&r);
}

static void test_ring_overwrite(void)
{
    struct ring r;
    CHECK(ring_init(&r, 8) == 0);
    ring_push_overwrite(&r, (const uint8_t *)"abcde", 5);
    ring_push_overwrite(&r, (const uint8_t *)"fghij", 5);
    uint8_t out[16];
    CHECK(ring_copy_tail(&r, out, 16) == 8 && memcmp(out, "cdefghij", 8) == 0);
    CHECK(ring_copy_tail(&r, out, 3) == 3 && memcmp(out, "hij", 3) == 0);
    /* More than the ring holds at once: only the newest bytes stay. */
    ring_push_overwrite(&r, (const uint8_t *)"0123456789ABCDEF", 16);
    CHECK(r.len == 8 && ring_copy_tail(&r, out, 8) == 8 && memcmp(out, "89ABCDEF", 8) == 0);
    ring_free(&r);
}

static const char *env_get(char **env, const char *key_eq)
{
    for (size_t i = 0; env[i] != NULL; i++)
        if (strncmp(env[i], key_eq, strlen(key_eq)) == 0)
            return env[i] + strlen(key_eq);
    return NULL;
}

static void test_env(void)
{
    char *base[] = {"A=base", "PATH=/custom", "B=keep"};
    char *req_v[] = {"A=request", "C=new", NULL};
    struct wisp_strv req = {2, req_v};
    char **env = env_compose(base, 3, &req, true);
    CHECK(env != NULL);
    if (env == NULL)
        return;
    CHECK(strcmp(env_get(env, "A="), "request") == 0);
    CHECK(strcmp(env_get(env, "B="), "keep") == 0);
    CHECK(strcmp(env_get(env, "C="), "new") == 0);
    CHECK(strcmp(env_get(env, "PATH="), "/custom") == 0);
    CHECK(strcmp(env_get(env, "HOME="), "/root") == 0);
    CHECK(env_get(env, "TERM=") != NULL);
    size_t n = 0;
    while (env[n] != NULL)
        n++;
    CHECK(n == 6);
    env_free(env);

    env = env_compose(NULL, 0, NULL, false);
    CHECK(env != NULL && env_get(env, "PATH=") != NULL && env_get(env, "TERM=") == NULL);
    env_free(env);
}

static void test_listeners(void)
{
    const char *tcp =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "   2: 0100007F:0016 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0\n"
        "garbage line\n";
    const char *tcp6 =
        "  sl  local_address                         remote_address                        st\n"
        "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A\n"
        "   1: 0000000000000000FFFF00000100007F:1389 00000000000000000000000000000000:0000 0A\n";
    struct wisp_listener ls[8];
    unsigned n = proc_net_listeners(tcp, 4, ls, 0, 8);
    CHECK(n == 2);
    CHECK(ls[0].family == 4 && ls[0].port == 22);
    CHECK(ls[0].addr[0] == 127 && ls[0].addr[1] == 0 && ls[0].addr[3] == 1);
    CHECK(ls[1].port == 8080 && ls[1].addr[0] == 0);
    n = proc_net_listeners(tcp6, 6, ls, n, 8);
    CHECK(n == 4);
    CHECK(ls[2].family == 6 && ls[2].port == 80 && ls[2].addr[15] == 1 && ls[2].addr[0] == 0);
    /* ::ffff:127.0.0.1 */
    CHECK(ls[3].port == 5001 && ls[3].addr[10] == 0xff && ls[3].addr[11] == 0xff);
    CHECK(ls[3].addr[12] == 127 && ls[3].addr[15] == 1);
    /* The bound is kept. */
    CHECK(proc_net_listeners(tcp, 4, ls, 0, 1) == 1);
    CHECK(proc_net_listeners("", 4, ls, 0, 8) == 0);
}

int main(void)
{
    test_ring_fifo();
    test_ring_overwrite();
    test_env();
    test_listeners();
    return check_exit_code();
}
