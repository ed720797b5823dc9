/* api_auth.h: bearer tokens, one or more per account, from the tokens file.
 *
 * The file has one "ACCOUNT TOKEN" pair per line; blank lines and lines starting with '#' are
 * skipped.  It must not be readable by group or others (wispd refuses it otherwise).  A missing
 * file means no tokens: every request on the unix socket is the account "default", and none
 * on TCP is allowed. */
#ifndef WISP_API_AUTH_H
#define WISP_API_AUTH_H

#include <glib.h>
#include <stdbool.h>

/* Token -> account (both g_free'd by the table), or NULL with error. */
GHashTable *api_auth_load(const char *path, GError **error);

/* The account of an Authorization header value: "default" when there is none, NULL when the
 * token is unknown or the header is not "Bearer TOKEN".  Tokens are compared in constant time. */
const char *api_auth_account(GHashTable *tokens, const char *authorization);
/* The same, except that with `required` (a request over TCP) no header is NULL too: only the
 * unix socket, which only wispd's user can open, has the implicit account "default". */
const char *api_auth_account_on(GHashTable *tokens, const char *authorization, bool required);

#endif
