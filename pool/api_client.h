/* api_client.h: the wisp CLI's side of wispd's API (docs/api.md): one HTTP request over the
 * unix socket with libcurl, the answer parsed as JSON. */
#ifndef WISP_API_CLIENT_H
#define WISP_API_CLIENT_H

#include <json-glib/json-glib.h>

/* Sends method path with body (NULL: none) and the bearer token (NULL: none).  Returns the
 * HTTP status and *answer (the JSON object; json_node_unref it), or -1 with a sentence in *why
 * (g_free it) when wispd could not be reached or did not answer JSON. */
long api_client_call(const char *socket_path, const char *token, const char *method,
                     const char *path, const char *body, JsonNode **answer, char **why);

#endif
