/* sleep_helpers.c: see sleep_helpers.h. */
#include "sleep_helpers.h"

#include <stdio.h>
#include <string.h>

void sh_counter_start(const char *sprite, const char *token)
{
    g_free(wfx_sh(sprite, token,
                  "setsid sh -c 'i=0; while :; do i=$((i+1)); echo \"$$ $i\" > /tmp/counter.new;"
                  " mv /tmp/counter.new /tmp/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1 &"
                  " for t in 1 2 3 4 5 6 7 8 9 10; do test -s /tmp/counter && exit 0; sleep 0.5;"
                  " done; exit 1",
                  0));
}

static void sh_counter_read(const char *sprite, const char *token, long *pid, long *n)
{
    g_autofree char *out = wfx_sh(sprite, token, "cat /tmp/counter", 0);
    FX_CHECK(sscanf(out, "%ld %ld", pid, n) == 2, "%s: the counter says '%s'", sprite, out);
}

long sh_counter_alive(const char *sprite, const char *token, long pid0)
{
    long pid, n, pid2, n2;
    sh_counter_read(sprite, token, &pid, &n);
    FX_CHECK(pid0 == 0 || pid == pid0, "%s: the counter is process %ld, was %ld", sprite, pid,
             pid0);
    for (int i = 0; i < 10; i++) {
        fx_sleep(0.5);
        sh_counter_read(sprite, token, &pid2, &n2);
        if (n2 > n)
            break;
    }
    FX_CHECK(pid2 == pid && n2 > n, "%s: the counter %ld stopped at %ld (now %ld %ld)", sprite, pid,
             n, pid2, n2);
    fx_log("%s: counter process %ld still counting (%ld -> %ld)", sprite, pid, n, n2);
    return pid;
}

char *sh_file_write(const char *sprite, const char *token, const char *file)
{
    g_autofree char *script = g_strdup_printf("head -c 262144 /dev/urandom > /root/%s && sync &&"
                                              " md5sum /root/%s | cut -d' ' -f1",
                                              file, file);
    return wfx_sh(sprite, token, script, 0);
}

char *sh_file_md5(const char *sprite, const char *token, const char *file)
{
    g_autofree char *script = g_strdup_printf("md5sum /root/%s | cut -d' ' -f1", file);
    return wfx_sh(sprite, token, script, 0);
}

char *sh_state(const char *sprite, const char *token)
{
    g_autofree char *path = g_strdup_printf("/v1/sprites/%s", sprite);
    long status = 0;
    JsonObject *o = wfx_http("GET", path, token, NULL, 0, &status);
    FX_CHECK(status == 200, "GET %s: %ld", path, status);
    char *s = g_strdup_printf("%s/%s", json_object_get_string_member_with_default(o, "state", ""),
                              json_object_get_string_member_with_default(o, "mode", ""));
    json_object_unref(o);
    return s;
}

double sh_wait_state(const char *sprite, const char *token, const char *want, double timeout_s)
{
    double t0 = fx_now();
    for (;;) {
        g_autofree char *s = sh_state(sprite, token);
        if (strcmp(s, want) == 0) {
            fx_log("%s: %s after %.1f s", sprite, want, fx_now() - t0);
            return fx_now() - t0;
        }
        FX_CHECK(fx_now() - t0 < timeout_s, "%s: still %s after %.0f s, expected %s", sprite, s,
                 timeout_s, want);
        fx_sleep(0.5);
    }
}

bool sh_exists(const char *path)
{
    return g_file_test(path, G_FILE_TEST_EXISTS);
}
