/* env.c: see env.h. */
#include "env.h"

#include <stdlib.h>
#include <string.h>

static const char default_path[] =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/* Length of the KEY= part, or the whole length for an entry without '='. */
static size_t key_len(const char *entry)
{
    const char *eq = strchr(entry, '=');
    return eq ? (size_t)(eq - entry) + 1 : strlen(entry);
}

static bool env_has(char **env, size_t n, const char *key_eq)
{
    size_t k = strlen(key_eq);
    for (size_t i = 0; i < n; i++)
        if (strncmp(env[i], key_eq, k) == 0)
            return true;
    return false;
}

/* Adds a copy of entry, replacing an entry with the same key. */
static bool env_put(char **env, size_t *n, const char *entry)
{
    char *copy = strdup(entry);
    if (copy == NULL)
        return false;
    size_t k = key_len(entry);
    for (size_t i = 0; i < *n; i++) {
        if (key_len(env[i]) == k && strncmp(env[i], entry, k) == 0) {
            free(env[i]);
            env[i] = copy;
            return true;
        }
    }
    env[(*n)++] = copy;
    return true;
}

char **env_compose(char *const *base, size_t base_count, const struct wisp_strv *request, bool tty)
{
    size_t req_count = request ? request->count : 0;
    char **env = calloc(base_count + req_count + 4, sizeof(char *));
    if (env == NULL)
        return NULL;
    size_t n = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < base_count; i++)
        ok = env_put(env, &n, base[i]);
    for (size_t i = 0; ok && i < req_count; i++)
        ok = env_put(env, &n, request->v[i]);
    if (ok && !env_has(env, n, "PATH="))
        ok = env_put(env, &n, default_path);
    if (ok && !env_has(env, n, "HOME="))
        ok = env_put(env, &n, "HOME=/root");
    if (ok && tty && !env_has(env, n, "TERM="))
        ok = env_put(env, &n, "TERM=xterm-256color");
    env[n] = NULL;
    if (!ok) {
        env_free(env);
        return NULL;
    }
    return env;
}

void env_free(char **env)
{
    if (env == NULL)
        return;
    for (size_t i = 0; env[i] != NULL; i++)
        free(env[i]);
    free(env);
}
