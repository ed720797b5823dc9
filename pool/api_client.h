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
/* The same, showing "LABEL... N.N s" on stderr while it waits, when stderr is a terminal and
 * the call takes more than API_CLIENT_PROGRESS_AFTER_S (a claim, a cold wake, a checkpoint);
 * the line is cleared before it returns.  label NULL: none.  $WISP_PROGRESS_AFTER_S sets
 * another delay (tests: 0). */
#define API_CLIENT_PROGRESS_AFTER_S 0.3
long api_client_call_progress(const char *socket_path, const char *token, const char *method,
                              const char *path, const char *body, const char *label,
                              JsonNode **answer, char **why);

#endif
