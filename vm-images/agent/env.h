/* env.h: the environment of a process in the container: ATTACH's env, then the request's
 * (a later KEY= replaces an earlier one), then defaults for PATH, HOME and (with a pty) TERM. */
#ifndef WISP_AGENT_ENV_H
#define WISP_AGENT_ENV_H

#include <stdbool.h>
#include <stddef.h>

#include "protocol.h"

/* A new NULL-terminated array (free with env_free), or NULL when out of memory. */
char **env_compose(char *const *base, size_t base_count, const struct wisp_strv *request, bool tty);
void env_free(char **env);

#endif
