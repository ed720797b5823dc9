/* fuzz_store_url: store_url_parse on arbitrary NUL-terminated strings, checking the promises of
 * store_url.h on every result. */
#include "store_url.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fuzz_ends_with_slash(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && s[n - 1] == '/';
}

static void fuzz_check_result(const struct store_url *u)
{
    switch (u->scheme) {
    case STORE_URL_FILE:
        FUZZ_ASSERT(u->path != NULL && u->path[0] == '/');
        FUZZ_ASSERT(strcmp(u->path, "/") == 0 || !fuzz_ends_with_slash(u->path));
        break;
    case STORE_URL_S3:
        FUZZ_ASSERT(u->bucket != NULL && u->bucket[0] != '\0');
        FUZZ_ASSERT(u->prefix != NULL);
        FUZZ_ASSERT(u->prefix[0] == '\0' || fuzz_ends_with_slash(u->prefix));
        FUZZ_ASSERT(u->endpoint != NULL);
        FUZZ_ASSERT(strncmp(u->endpoint, "http://", 7) == 0 ||
                    strncmp(u->endpoint, "https://", 8) == 0);
        FUZZ_ASSERT(!fuzz_ends_with_slash(u->endpoint));
        FUZZ_ASSERT(u->region != NULL && u->region[0] != '\0');
        break;
    default:
        FUZZ_ASSERT(!"unknown scheme");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store_url u;
    const char *why = NULL;
    char *url;
    int r;

    url = malloc(size + 1);
    if (url == NULL)
        return 0;
    if (size > 0)
        memcpy(url, data, size);
    url[size] = '\0';

    r = store_url_parse(url, &u, &why);
    if (r < 0) {
        FUZZ_ASSERT(r == -EINVAL || r == -ENOMEM);
        FUZZ_ASSERT(why != NULL && why[0] != '\0');
    } else {
        fuzz_check_result(&u);
        store_url_free(&u);
    }
    free(url);
    return 0;
}
