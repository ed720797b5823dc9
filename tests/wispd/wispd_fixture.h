/* wispd_fixture.h: a real wispd for the tests in tests/wispd/, and its API over the unix socket.
 *
 * wfx_start() writes a tokens file (accounts alice and bob, WFX_TOKEN_A and WFX_TOKEN_B) and a
 * config file (pool of 1, 256 MiB sprites, plus the caller's lines), starts wispd on the test's
 * directory with the image, the plugin and the CLI of this build, and waits for its socket.
 * The HTTP helpers talk to the wispd started last, over its unix socket (the _at ones to a base
 * URL instead); every answer must be a JSON object, and a request that is not answered fails
 * the test. */
#ifndef WISP_TEST_WISPD_FIXTURE_H
#define WISP_TEST_WISPD_FIXTURE_H

#include "vm_fixture.h"

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <sys/types.h>

#define WFX_TOKEN_A "alice-token-0123456789abcdef"
#define WFX_TOKEN_B "bob-token-0123456789abcdef"

struct wispd_fx {
    char state[600];  /* --state-dir */
    char socket[700]; /* --listen */
    char log[700];    /* wispd's stdout and stderr */
    char conf[700], tokens[700];
    char image_dir[600];
    pid_t pid;
    double started_s; /* spawn to socket */
};

/* Builds (or finds) the image; call once, before the first wfx_start. */
void wfx_init(struct vmf_image *img);
/* Starts wispd with state directory `state` (made if missing; kept across restarts, so a
 * second wfx_start on the same directory is a restart).  conf_extra: more "key = value" lines
 * for group [wispd] (may be NULL).  extra_args: more flags, NULL-terminated (may be NULL). */
void wfx_start(struct wispd_fx *w, const struct vmf_image *img, const char *state,
               const char *conf_extra, const char *const *extra_args);
/* SIGTERM; wispd must exit 0 within timeout_s.  Returns the seconds it took. */
double wfx_stop(struct wispd_fx *w, double timeout_s);
/* SIGKILL, and reaps it. */
void wfx_kill(struct wispd_fx *w);

/* One request to the current wispd; returns the answer (json_object_unref it). */
JsonObject *wfx_http(const char *method, const char *path, const char *token, const char *body,
                     size_t body_len, long *status);
/* The same to base ("http://127.0.0.1:PORT": a wispd on TCP); NULL is the unix socket. */
JsonObject *wfx_http_at(const char *base, const char *method, const char *path, const char *token,
                        const char *body, size_t body_len, long *status);
/* A request that may fail: the HTTP status, or -1 when wispd did not answer (it was killed).
 * For requests racing a kill from another thread. */
long wfx_try(const char *method, const char *path, const char *token, const char *body);
/* POST path (body) to the current wispd in the background, with curl: for a request that takes
 * long (a cold sleep) while the test does something else.  Its answer and then a line
 * "HTTP CODE" go to log.  Returns curl's pid, for wfx_post_wait (or fx_reap). */
pid_t wfx_post_async(const char *token, const char *path, const char *body, const char *log);
/* Waits (600 s at most) for wfx_post_async's curl, which must succeed; returns the HTTP status,
 * and log's text in *answer (g_free it). */
long wfx_post_wait(pid_t pid, const char *log, char **answer);
/* `wisp disk VERB ARGS... --json` on the storage server of the current wispd (its control
 * socket in STATE/run/); returns the JSON answer (json_node_unref it). */
JsonNode *wfx_disk_json(const struct wispd_fx *w, const char *verb, const char *arg);
/* A request that must answer `want` (an error answer must have "error"). */
JsonObject *wfx_expect(long want, const char *method, const char *path, const char *token,
                       const char *body);
void wfx_expect_free(long want, const char *method, const char *path, const char *token,
                     const char *body);
/* wfx_expect to base, as wfx_http_at. */
JsonObject *wfx_expect_at(const char *base, long want, const char *method, const char *path,
                          const char *token, const char *body);
/* Runs `sh -c script` in the sprite as token's account through POST .../exec; checks its exit
 * code and returns its stdout (g_free it). */
char *wfx_sh(const char *sprite, const char *token, const char *script, int want_exit);
/* A sprite's "state" member (g_free it). */
char *wfx_state(const char *sprite, const char *token);
/* A sprite's checkpoint ids, oldest first, space-separated (g_free it). */
char *wfx_checkpoint_ids(const char *sprite, const char *token);

/* Runs `wisp VERB [NAME] ARGS...` against the current wispd with stdin "from-stdin\n"; checks
 * its exit code and returns its stdout (g_free it).  token: WISP_TOKEN, or NULL for none. */
char *wfx_cli(const char *verb, const char *name, const char *token, int want, ...)
    __attribute__((sentinel));

/* The pid of a process whose command line starts with prefix and contains text, or 0.  This
 * test's own process never counts. */
pid_t wfx_find_process(const char *prefix, const char *text);
/* All of them (g_array_unref it). */
GArray *wfx_processes(const char *prefix, const char *text);
/* Whether pid is alive and not a zombie (a QEMU that wispd has not reaped yet is one). */
bool wfx_pid_running(pid_t pid);

/* Whether the file (wispd's log, a CLI's output) holds text; false when it cannot be read. */
bool wfx_log_has(const char *log, const char *text);
/* How many lines of the log have text.  A "%*s " in text splits it in two: a line counts when
 * it has the first part and, further on, the second.  The log must be readable. */
unsigned wfx_log_count(const char *log, const char *text);

#endif
