/* api_auth.h: bearer tokens, one or more per account, from the tokens file.
 *
 * The file has one "ACCOUNT TOKEN" pair per line; blank lines and lines starting with '#' are
 * skipped.  It must not be readable by group or others (wispd refuses it otherwise).  A missing
 * file means no tokens: every request on the unix socket is the account "default". */
#ifndef WISP_API_AUTH_H
#define WISP_API_AUTH_H

#include <glib.h>

/* Token -> account (both g_free'd by the table), or NULL with error. */
GHashTable *api_auth_load(const char *path, GError **error);

/* The account of an Authorization header value: "default" when there is none, NULL when the
 * token is unknown or the header is not "Bearer TOKEN". */
const char *api_auth_account(GHashTable *tokens, const char *authorization);

#endif
