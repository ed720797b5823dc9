/* api_auth.c: bearer tokens per account (api_auth.h). */
#include "api_auth.h"

#include "sprite_service.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/stat.h>

GHashTable *api_auth_load(const char *path, GError **error)
{
    GHashTable *tokens = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    struct stat st;

    if (stat(path, &st) < 0) {
        if (errno == ENOENT)
            return tokens;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "stat %s: %s", path,
                    g_strerror(errno));
        goto fail;
    }
    if (st.st_mode & 077) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                    "%s is readable by group or others: chmod 600 it", path);
        goto fail;
    }
    if (!g_file_get_contents(path, &text, NULL, error))
        goto fail;
    lines = g_strsplit(text, "\n", -1);
    for (guint i = 0; lines[i]; i++) {
        g_strstrip(lines[i]);
        if (!*lines[i] || lines[i][0] == '#')
            continue;
        g_auto(GStrv) f = g_strsplit_set(lines[i], " \t", -1);
        GPtrArray *words = g_ptr_array_new();
        for (guint j = 0; f[j]; j++)
            if (*f[j])
                g_ptr_array_add(words, f[j]);
        bool ok = words->len == 2 && sprite_service_account_valid(words->pdata[0]) &&
                  strlen(words->pdata[1]) >= 16;
        /* A token names one account: listed twice, it would open the account of whichever
         * line came last, so a copy-paste slip would grant another account's sprites. */
        const char *first = ok ? g_hash_table_lookup(tokens, words->pdata[1]) : NULL;
        if (first) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s:%u: this token (of account '%s') is already listed, for account '%s': "
                        "each token must be listed once",
                        path, i + 1, (const char *)words->pdata[0], first);
            g_ptr_array_free(words, TRUE);
            goto fail;
        }
        if (ok)
            g_hash_table_insert(tokens, g_strdup(words->pdata[1]), g_strdup(words->pdata[0]));
        g_ptr_array_free(words, TRUE);
        if (!ok) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s:%u: expected ACCOUNT TOKEN (account: a-z, 0-9, '-'; token: 16 or "
                        "more characters)",
                        path, i + 1);
            goto fail;
        }
    }
    return tokens;
fail:
    g_hash_table_unref(tokens);
    return NULL;
}

/* SHA-256 of a token: comparing digests compares equal lengths, whatever the tokens' are. */
static void api_auth_digest(const char *token, guint8 out[32])
{
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    gsize len = 32;

    g_checksum_update(c, (const guchar *)token, (gssize)strlen(token));
    g_checksum_get_digest(c, out, &len);
    g_checksum_free(c);
}

const char *api_auth_account_on(GHashTable *tokens, const char *authorization, bool required)
{
    if (!authorization)
        return required ? NULL : "default";
    if (g_ascii_strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    /* Constant time: every known token is compared, each over its whole digest, so neither
     * the time to a mismatching byte nor which entry matched shows in the answer's timing. */
    guint8 given[32], known[32];
    const char *account = NULL;
    GHashTableIter it;
    gpointer key, value;
    api_auth_digest(token, given);
    g_hash_table_iter_init(&it, tokens);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        guint8 diff = 0;
        api_auth_digest(key, known);
        for (size_t i = 0; i < sizeof given; i++)
            diff |= (guint8)(given[i] ^ known[i]);
        if (diff == 0)
            account = value;
    }
    return account;
}

const char *api_auth_account(GHashTable *tokens, const char *authorization)
{
    return api_auth_account_on(tokens, authorization, false);
}
