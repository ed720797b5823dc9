/* api_server.h: wispd's HTTP/JSON API (docs/api.md) on a unix socket, with libsoup 3.
 *
 * Requests are parsed and checked in the main loop (strictly: unknown members, wrong types,
 * bad names and bodies over API_BODY_MAX are 4xx with a JSON error); the work itself (claims,
 * execs, checkpoints) runs in worker threads while libsoup holds the message paused, so one
 * slow request never stalls the others. */
#ifndef WISP_API_SERVER_H
#define WISP_API_SERVER_H

#include "sprite_service.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>

/* Pending connections the API socket queues before it refuses more. */
#define API_LISTEN_BACKLOG 4096

/* The largest request body: an exec's stdin is at most this, minus its JSON. */
#define API_BODY_MAX (1 << 20)

typedef struct api_server api_server;

/* Listens on socket_path (mode 0600; a stale socket there is replaced).  tokens: token ->
 * account (api_auth.h), taken. */
api_server *api_server_start(const char *socket_path, sprite_service *svc, GHashTable *tokens,
                             GError **error);
/* Listens on TCP too, at "ADDR:PORT" (an IP address; [::1]:PORT for IPv6).  A request there
 * must carry a known bearer token (401 otherwise) and may not resize pools (403).  No TLS:
 * put a TLS-terminating proxy in front of anything but a loopback address. */
bool api_server_listen_tcp(api_server *api, const char *addr_port, GError **error);
/* The warm pool served at /v1/pools, under the image name `image`. */
void api_server_set_pool(api_server *api, vm_pool *pool, const char *image);
/* Replaces the tokens (SIGHUP). */
void api_server_set_tokens(api_server *api, GHashTable *tokens);
/* Stops listening and closes connections; the socket file is removed.  NULL is allowed. */
void api_server_stop(api_server *api);

/* Answers shared by the routes here and the streaming exec's (api_exec_ws.c). */
struct _SoupServerMessage;
/* status with body as JSON, and Connection: close (see api_respond in api_server.c). */
void api_respond(struct _SoupServerMessage *msg, guint status, JsonNode *body);
/* status with {"error": the message, "status": status}. */
void api_error(struct _SoupServerMessage *msg, guint status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The HTTP status of a sprite service error (SPRITE_SERVICE_ERROR codes; else 500). */
guint api_status_of(const GError *err);

#endif
