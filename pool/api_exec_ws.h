/* api_exec_ws.h: the streaming exec, GET /v1/sprites/NAME/exec upgraded to a WebSocket
 * (docs/api.md, "Streaming exec").
 *
 * The request's query names the process (argv, env, cwd, tty, rows, cols, stdin).  The
 * process is started before the upgrade, so a sprite that is not the account's is a 404 and
 * a bad request a 400, each a plain JSON answer, with no WebSocket made.  After the upgrade
 * every message is binary, its first byte a channel:
 *
 *   0 stdin    client -> wispd   data; an empty payload is the end of input
 *   1 stdout   wispd -> client
 *   2 stderr   wispd -> client
 *   3 control  both ways, JSON:  client: {"ack":N} {"resize":{"rows":R,"cols":C}} {"signal":S}
 *                                wispd:  {"ack":N} (N bytes of stdin went to the process)
 *   4 exit     wispd -> client, JSON, the last message: {"exit_code":N} or {"error":"..."}
 *
 * Flow control, both ways, API_EXEC_WS_WINDOW bytes of payload: wispd sends stdout and stderr
 * only while the client has acknowledged all but a window of them, and reads the guest no
 * faster (the guest's own credit does the rest); the client sends stdin only while wispd has
 * acknowledged all but a window of it.  So wispd holds at most a window each way per stream,
 * however fast either end is.
 *
 * Threads: the WebSocket lives in the main loop; each stream has a pump thread (output, the
 * exit, and the kill when the client goes) and an input thread (stdin, resize, signals), the
 * only ones that call the agent, whose calls block. */
#ifndef WISP_API_EXEC_WS_H
#define WISP_API_EXEC_WS_H

#include "sprite_service.h"

#include <libsoup/soup.h>
#include <stdbool.h>

/* Payload bytes in flight per direction, and the largest message (plus its channel byte). */
#define API_EXEC_WS_WINDOW    (1 << 20)
#define API_EXEC_WS_CHUNK_MAX (64 * 1024)

enum api_exec_ws_channel {
    API_EXEC_WS_STDIN = 0,
    API_EXEC_WS_STDOUT = 1,
    API_EXEC_WS_STDERR = 2,
    API_EXEC_WS_CONTROL = 3,
    API_EXEC_WS_EXIT = 4,
};

typedef struct api_exec_ws api_exec_ws;

api_exec_ws *api_exec_ws_new(sprite_service *svc);
/* Ends every open stream (their processes are killed) and waits for their threads; then
 * frees.  NULL is allowed. */
void api_exec_ws_free(api_exec_ws *ws);

/* True if msg asks for a WebSocket upgrade (the streaming exec rather than the JSON one). */
bool api_exec_ws_wanted(SoupServerMessage *msg);
/* Handles GET /v1/sprites/NAME/exec with an upgrade, for account (authenticated already). */
void api_exec_ws_route(api_exec_ws *ws, SoupServerMessage *msg, const char *account,
                       const char *name);

#endif
