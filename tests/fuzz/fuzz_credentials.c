/* fuzz_credentials: aws_credentials_parse on arbitrary bytes, for the default profile and a named
 * one, checking the promises of credentials.h on every result. */
#include "credentials.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fuzz_value_ok(const char *v)
{
    size_t n;

    if (v == NULL || v[0] == '\0')
        return false;
    n = strlen(v);
    /* Trimmed, and printable ASCII only. */
    if (v[0] == ' ' || v[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] >= 0x7F)
            return false;
    }
    return true;
}

static void fuzz_profile(const char *text, size_t len, const char *profile)
{
    struct aws_credentials c;
    char err[128];
    int r;

    err[0] = '\0';
    r = aws_credentials_parse(text, len, profile, &c, err, sizeof err);
    if (r < 0) {
        FUZZ_ASSERT(r == -EINVAL || r == -ENOMEM);
        FUZZ_ASSERT(err[0] != '\0');
        FUZZ_ASSERT(c.access_key == NULL && c.secret_key == NULL && c.session_token == NULL);
        return;
    }
    FUZZ_ASSERT(fuzz_value_ok(c.access_key));
    FUZZ_ASSERT(fuzz_value_ok(c.secret_key));
    FUZZ_ASSERT(c.session_token == NULL || fuzz_value_ok(c.session_token));
    aws_credentials_free(&c);
    FUZZ_ASSERT(c.access_key == NULL && c.secret_key == NULL && c.session_token == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_profile((const char *)data, size, NULL);
    fuzz_profile((const char *)data, size, "prod");
    return 0;
}
