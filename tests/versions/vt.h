/* vt.h: helpers of the versions tests (tests/versions/), on top of the storage fixture
 * (tests/storage/server.h): the wisp CLI with an argument list, its JSON answers, writes that
 * keep a shadow copy, and whole-disk comparisons through an open connection.
 *
 * Every helper fails the test itself (WS_FAIL) when it cannot do its job. */
#ifndef WISP_TEST_VT_H
#define WISP_TEST_VT_H

#include "server.h"

#include <stdbool.h>
#include <stdint.h>

#define MiB (UINT64_C(1) << 20)

/* Runs `wisp ARGS...` (a NULL-terminated array) plus --control (server running) or --meta
 * (stopped).  Returns the status; *out and *err (may be NULL) get stdout and stderr. */
int vt_cli(struct ws_server *s, char **out, char **err, const char *const *args);
/* The same, failing the test unless the status is 0; returns stdout (free it). */
char *vt_cli_ok_at(const char *file, int line, struct ws_server *s, const char *const *args);
/* The same, failing the test unless the status is not 0 and stderr contains every `needle`
 * (a NULL-terminated list); returns stderr (free it). */
char *vt_cli_fail_at(const char *file, int line, struct ws_server *s, const char *const *args,
                     const char *const *needles);
#define VT_ARGS(...)      ((const char *const[]){__VA_ARGS__, NULL})
#define VT_CLI_OK(s, ...) vt_cli_ok_at(__FILE__, __LINE__, (s), VT_ARGS(__VA_ARGS__))
#define VT_CLI_FAIL(s, needles, ...)                                                               \
    vt_cli_fail_at(__FILE__, __LINE__, (s), VT_ARGS(__VA_ARGS__), (needles))
#define VT_NEEDLES(...) VT_ARGS(__VA_ARGS__)

/* Sends one request line (JSON) to the control socket of a running server and returns the
 * parsed answer object. */
JsonNode *vt_control(struct ws_server *s, const char *request);
/* The answer's "ok" member; with errno_out, its "errno" member (0 when ok). */
bool vt_answer_ok(JsonNode *answer, int *errno_out);

/* Parses JSON text (the CLI's --json output); fails the test if it is not JSON. */
JsonNode *vt_json(const char *text);
/* The "ms" member of a version operation's --json answer. */
double vt_json_ms(JsonNode *answer);
/* A string member by dotted path ("checkpoint.root"). */
const char *vt_json_str(JsonNode *node, const char *path);

/* `n` writes of random lengths (1 byte to 300 KiB) at random places in [0, region), each
 * mirrored into shadow; every fourth one is a zero request instead. */
void vt_write_random(struct nbd_handle *h, uint8_t *shadow, uint64_t region, int n);
/* Reads the whole export through h and compares it with shadow; fails at the first
 * difference, naming the offset. */
void vt_compare_handle(struct nbd_handle *h, const uint8_t *shadow, uint64_t size,
                       const char *what);
/* The whole export `name` of s (new connections) against shadow. */
void vt_compare(struct ws_server *s, const char *name, const uint8_t *shadow, uint64_t size,
                uint32_t chunk_size);
/* A copy of a shadow (free with ws_shadow_free). */
uint8_t *vt_shadow_copy(const uint8_t *shadow, uint64_t size);

/* Median of n values (sorts them). */
double vt_median(double *v, int n);

#endif
