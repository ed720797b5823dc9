/* idle.c: wispd's idle policy (issue 7 item 4), against a real wispd, nbdkit and QEMU.
 *
 *   timeouts   idle-warm = 2 s and idle-cold = 6 s in the config: a sprite with a counter
 *              process and a file goes asleep/warm, then asleep/cold (GET, which does not count
 *              as activity, polled); the log and the account's audit log have both transitions,
 *              and its cold_sleep row names the manifest; an exec wakes it: the same counter
 *              process still counts and the file's md5 is unchanged.
 *   activity   a sprite kept busy by an exec every second never sleeps in 5 s
 *   pressure   SIGHUP with idle-cold = 600 and memory-low-mib far above the host's memory: a
 *              sprite goes warm after 2 s, and then cold at once (memory pressure), not after
 *              600 s; the log names the pressure
 *
 * A file:// store (STATE/store). */
#include "sleep_helpers.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

/* The rows of one query on the account's database, as "col|col\n" lines (g_free it). */
static char *db_rows(const char *state, const char *sql)
{
    g_autofree char *path = g_strdup_printf("%s/accounts/alice/account.db", state);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    GString *out = g_string_new(NULL);

    FX_CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
                 sqlite3_busy_timeout(db, 5000) == SQLITE_OK &&
                 sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK,
             "%s: %s", path, sqlite3_errmsg(db));
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++)
            g_string_append_printf(out, "%s%s", i ? "|" : "",
                                   (const char *)sqlite3_column_text(st, i));
        g_string_append_c(out, '\n');
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return g_string_free(out, FALSE);
}

int main(void)
{
    struct vmf_image img;
    struct wispd_fx w;

    fx_setup("wispd-idle");
    wfx_init(&img);
    g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
    wfx_start(&w, &img, state, "idle-warm = 2\nidle-cold = 6\nmemory-low-mib = 0\nmemory-psi = 0\n",
              NULL);

    /* ---- warm, then cold, then an exec ---- */
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"idler\"}");
    sh_counter_start("idler", WFX_TOKEN_A);
    long pid = sh_counter_alive("idler", WFX_TOKEN_A, 0);
    g_autofree char *md5 = sh_file_write("idler", WFX_TOKEN_A, "idler.bin");
    sh_wait_state("idler", WFX_TOKEN_A, "asleep/warm", 60);
    sh_wait_state("idler", WFX_TOKEN_A, "asleep/cold", 180);
    FX_CHECK(wfx_log_has(w.log, "alice/idler: asleep, warm (idle)") &&
                 wfx_log_has(w.log, "alice/idler: asleep, cold (idle)"),
             "the log lacks the idle transitions (see %s)", w.log);
    /* The account's database: both transitions audited, and what a wake needs recorded. */
    g_autofree char *audit = db_rows(
        state, "SELECT detail FROM audit WHERE action = 'sleep' AND sprite = 'idler' AND ok = 1");
    fx_log("audit:\n%s", audit);
    FX_CHECK(strstr(audit, "warm (idle)") && strstr(audit, "cold (idle)"),
             "the audit log lacks the idle transitions: %s", audit);
    g_autofree char *cold = db_rows(state, "SELECT state, manifest, seq FROM cold_sleep"
                                           " WHERE sprite = 'idler'");
    FX_CHECK(strcmp(cold, "cold|vm/sprites/s_alice_idler/manifest-000001.json|1\n") == 0,
             "the cold_sleep row is '%s'", cold);
    double t0 = fx_now();
    sh_counter_alive("idler", WFX_TOKEN_A, pid);
    fx_log("FIGURE wispd_idle_cold_wake_exec_ms=%.0f (wake, exec and the counter's checks)",
           (fx_now() - t0) * 1000);
    g_autofree char *md5_after = sh_file_md5("idler", WFX_TOKEN_A, "idler.bin");
    FX_CHECK(strcmp(md5, md5_after) == 0, "idler.bin changed over the sleeps");

    /* ---- activity keeps it awake ---- */
    wfx_expect_free(201, "POST", "/v1/sprites", WFX_TOKEN_A, "{\"name\":\"busy\"}");
    for (int i = 0; i < 5; i++) {
        g_free(wfx_sh("busy", WFX_TOKEN_A, "true", 0));
        g_autofree char *s = sh_state("busy", WFX_TOKEN_A);
        FX_CHECK(strcmp(s, "running/") == 0, "a busy sprite is %s", s);
        fx_sleep(1);
    }

    /* ---- memory pressure, after a SIGHUP ---- */
    wfx_expect_free(200, "POST", "/v1/sprites/busy/sleep", WFX_TOKEN_A, "{\"mode\":\"cold\"}");
    FX_CHECK(g_file_set_contents(w.conf,
                                 "[wispd]\npool-size = 1\nmemory-mib = 256\nidle-warm = 2\n"
                                 "idle-cold = 600\nmemory-low-mib = 16000000\nmemory-psi = 0\n",
                                 -1, NULL),
             "write %s", w.conf);
    FX_CHECK(kill(w.pid, SIGHUP) == 0, "SIGHUP");
    t0 = fx_now();
    while (!wfx_log_has(w.log, "idle-cold 600 s")) {
        FX_CHECK(fx_now() - t0 < 30, "the SIGHUP did not reload the idle settings (see %s)", w.log);
        fx_sleep(0.1);
    }
    /* Awake under the new settings: only the pressure can make it cold now. */
    g_free(wfx_sh("idler", WFX_TOKEN_A, "true", 0));
    sh_wait_state("idler", WFX_TOKEN_A, "asleep/cold", 180);
    FX_CHECK(wfx_log_has(w.log, "MemAvailable") && wfx_log_has(w.log, "cold (memory pressure)"),
             "the log does not name the memory pressure (see %s)", w.log);
    sh_counter_alive("idler", WFX_TOKEN_A, pid);

    wfx_stop(&w, 240);
    return 0;
}
