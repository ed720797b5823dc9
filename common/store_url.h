/* store_url.h: parsing of store URLs.
 *
 *   file:///absolute/dir
 *   s3://bucket[/prefix]?endpoint=URL&region=R[&style=path|virtual]
 *
 * Query values may be percent-encoded.  Unknown query keys are errors, so a typo never silently
 * falls back to a default. */
#ifndef WISP_STORE_URL_H
#define WISP_STORE_URL_H

#include <stdbool.h>

enum store_url_scheme {
    STORE_URL_FILE,
    STORE_URL_S3,
};

struct store_url {
    enum store_url_scheme scheme;
    char *path;         /* file: the directory, absolute, without trailing '/' (except "/") */
    char *bucket;       /* s3: bucket name */
    char *prefix;       /* s3: "" or a key prefix ending in '/' */
    char *endpoint;     /* s3: "http[s]://host[:port]" without trailing '/' */
    char *region;       /* s3: default "us-east-1" */
    bool virtual_style; /* s3: bucket in the host name rather than the path */
};

/* Returns 0, -ENOMEM, or -EINVAL with *why pointing to a static explanation. */
int store_url_parse(const char *url, struct store_url *out, const char **why);
void store_url_free(struct store_url *u);

#endif
