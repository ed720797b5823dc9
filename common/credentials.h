/* credentials.h: S3 credentials, never from argv.
 *
 * Order: an explicit credentials file; else, unless a profile is named, AWS_ACCESS_KEY_ID +
 * AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) from the environment; else
 * $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials.  Files are AWS-style ini (GKeyFile
 * underneath):
 *
 *   [default]
 *   aws_access_key_id = AKIA...
 *   aws_secret_access_key = ...
 *   aws_session_token = ...        (optional)
 */
#ifndef WISP_CREDENTIALS_H
#define WISP_CREDENTIALS_H

#include <stddef.h>

struct aws_credentials {
    char *access_key;
    char *secret_key;
    char *session_token; /* NULL when none */
};

/* Parses the text of a credentials file, taking the named profile ("default" if NULL).
 * Returns 0, or -EINVAL with a message naming the problem (and the profile) in err. */
int aws_credentials_parse(const char *data, size_t len, const char *profile,
                          struct aws_credentials *out, char *err, size_t err_size);

/* Loads credentials in the order above.  file may be NULL.  Returns 0, -ENOENT when none are
 * found anywhere, or -EINVAL / -errno with the reason in err. */
int aws_credentials_load(const char *file, const char *profile, struct aws_credentials *out,
                         char *err, size_t err_size);

void aws_credentials_free(struct aws_credentials *c);

#endif
