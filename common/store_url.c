/* store_url.c: parsing of file:// and s3:// store URLs (grammar in store_url.h). */
#include "store_url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int store_url_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s+len) into a new string.  NULL on a bad escape, an encoded NUL, or out
 * of memory (*why says which). */
static char *store_url_decode(const char *s, size_t len, const char **why)
{
    char *out = malloc(len + 1);
    size_t n = 0;

    if (!out) {
        *why = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[n++] = s[i];
            continue;
        }
        int hi = i + 1 < len ? store_url_hex_value(s[i + 1]) : -1;
        int lo = i + 2 < len ? store_url_hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            *why = "bad percent-escape in the URL";
            return NULL;
        }
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[n] = '\0';
    return out;
}

/* Bucket names as S3 allows them: 3 to 63 of [a-z0-9.-], starting and ending alphanumeric. */
static bool store_url_bucket_valid(const char *b)
{
    size_t n = strlen(b);

    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '.' && c != '-')
            return false;
        if ((i == 0 || i == n - 1) && !alnum)
            return false;
    }
    return true;
}

/* A prefix obeys the key rules of store.h, component by component. */
static bool store_url_prefix_valid(const char *p)
{
    const char *component = p;

    for (const char *c = p;; c++) {
        if (*c == '/' || *c == '\0') {
            size_t n = (size_t)(c - component);
            if (n == 0 && *c == '\0' && c != p)
                return true; /* the trailing '/' */
            if (n == 0 || (n == 1 && component[0] == '.') ||
                (n == 2 && component[0] == '.' && component[1] == '.'))
                return false;
            if (*c == '\0')
                return true;
            component = c + 1;
            continue;
        }
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return false;
    }
}

static bool store_url_endpoint_valid(const char *e)
{
    const char *host;

    if (strncmp(e, "http://", 7) == 0)
        host = e + 7;
    else if (strncmp(e, "https://", 8) == 0)
        host = e + 8;
    else
        return false;
    if (*host == '\0' || *host == ':' || *host == '/')
        return false;
    for (const char *c = host; *c; c++) {
        if (*c == '/')
            return false; /* no path in an endpoint */
        if ((unsigned char)*c <= ' ' || *c == '?' || *c == '#' || *c == '@')
            return false;
    }
    return true;
}

static int store_url_parse_file(const char *rest, struct store_url *out, const char **why)
{
    size_t len;

    if (rest[0] != '/') {
        *why = "file:// URLs take an absolute path, as in file:///var/lib/wisp/store";
        return -EINVAL;
    }
    if (strchr(rest, '?') || strchr(rest, '#')) {
        *why = "file:// URLs take no query or fragment";
        return -EINVAL;
    }
    out->path = store_url_decode(rest, strlen(rest), why);
    if (!out->path)
        return -EINVAL;
    len = strlen(out->path);
    while (len > 1 && out->path[len - 1] == '/')
        out->path[--len] = '\0';
    for (const char *c = out->path; *c; c++) {
        if ((unsigned char)*c < ' ') {
            *why = "the path holds a control character";
            return -EINVAL;
        }
    }
    return 0;
}

/* Parses one key=value pair of the s3:// query into out. */
static int store_url_s3_param(const char *pair, size_t len, struct store_url *out,
                              bool *style_given, const char **why)
{
    const char *eq = memchr(pair, '=', len);
    char **slot;
    char *value;

    if (!eq) {
        *why = "each query parameter needs a value (key=value)";
        return -EINVAL;
    }
    size_t key_len = (size_t)(eq - pair);
    if (key_len == 8 && !memcmp(pair, "endpoint", 8))
        slot = &out->endpoint;
    else if (key_len == 6 && !memcmp(pair, "region", 6))
        slot = &out->region;
    else if (key_len == 5 && !memcmp(pair, "style", 5))
        slot = NULL;
    else {
        *why = "unknown query parameter (known: endpoint, region, style)";
        return -EINVAL;
    }
    value = store_url_decode(eq + 1, len - key_len - 1, why);
    if (!value)
        return -EINVAL;
    if (!slot) {
        if (*style_given) {
            free(value);
            *why = "a query parameter is given twice";
            return -EINVAL;
        }
        *style_given = true;
        bool known = !strcmp(value, "path") || !strcmp(value, "virtual");
        out->virtual_style = !strcmp(value, "virtual");
        free(value);
        if (!known) {
            *why = "style= is 'path' or 'virtual'";
            return -EINVAL;
        }
        return 0;
    }
    if (*slot) {
        free(value);
        *why = "a query parameter is given twice";
        return -EINVAL;
    }
    *slot = value;
    return 0;
}

static int store_url_parse_s3(const char *rest, struct store_url *out, const char **why)
{
    const char *query = strchr(rest, '?');
    const char *path_end = query ? query : rest + strlen(rest);
    const char *slash = memchr(rest, '/', (size_t)(path_end - rest));
    const char *bucket_end = slash ? slash : path_end;
    bool style_given = false;
    int r;

    if (strchr(rest, '#')) {
        *why = "s3:// URLs take no fragment";
        return -EINVAL;
    }
    out->bucket = strndup(rest, (size_t)(bucket_end - rest));
    if (!out->bucket) {
        *why = "out of memory";
        return -ENOMEM;
    }
    if (!store_url_bucket_valid(out->bucket)) {
        *why = "the bucket name must be 3-63 characters of a-z, 0-9, '.' and '-'";
        return -EINVAL;
    }

    /* The prefix is everything after the bucket, normalised to "" or "dir/". */
    const char *p = slash ? slash + 1 : path_end;
    size_t plen = (size_t)(path_end - p);
    out->prefix = malloc(plen + 2);
    if (!out->prefix) {
        *why = "out of memory";
        return -ENOMEM;
    }
    memcpy(out->prefix, p, plen);
    out->prefix[plen] = '\0';
    if (plen > 0 && out->prefix[plen - 1] != '/')
        strcat(out->prefix, "/");
    if (plen > 0 && !store_url_prefix_valid(out->prefix)) {
        *why = "the prefix holds only letters, digits, '.', '_', '-' and non-empty '/' parts";
        return -EINVAL;
    }
    if (strlen(out->prefix) > 512) {
        *why = "the prefix is longer than 512 bytes";
        return -EINVAL;
    }

    for (const char *q = query ? query + 1 : NULL; q && *q;) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        r = store_url_s3_param(q, n, out, &style_given, why);
        if (r < 0)
            return r;
        q = amp ? amp + 1 : NULL;
    }

    if (!out->endpoint) {
        /* AWS itself: virtual-host style is the norm there. */
        const char *region = out->region ? out->region : "us-east-1";
        size_t n = strlen(region) + 32;
        out->endpoint = malloc(n);
        if (!out->endpoint) {
            *why = "out of memory";
            return -ENOMEM;
        }
        snprintf(out->endpoint, n, "https://s3.%s.amazonaws.com", region);
        if (!style_given)
            out->virtual_style = true;
    } else {
        size_t n = strlen(out->endpoint);
        while (n > 0 && out->endpoint[n - 1] == '/')
            out->endpoint[--n] = '\0';
        if (!store_url_endpoint_valid(out->endpoint)) {
            *why = "endpoint= is http[s]://host[:port], with no path, user or query";
            return -EINVAL;
        }
    }
    if (!out->region) {
        out->region = strdup("us-east-1");
        if (!out->region) {
            *why = "out of memory";
            return -ENOMEM;
        }
    }
    for (const char *c = out->region; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-')) {
            *why = "region= holds only a-z, 0-9 and '-'";
            return -EINVAL;
        }
    }
    if (!*out->region) {
        *why = "region= is empty";
        return -EINVAL;
    }
    return 0;
}

int store_url_parse(const char *url, struct store_url *out, const char **why)
{
    int r;

    memset(out, 0, sizeof *out);
    if (!url || !*url) {
        *why = "the store URL is empty";
        return -EINVAL;
    }
    if (strlen(url) > 4096) {
        *why = "the store URL is longer than 4096 bytes";
        return -EINVAL;
    }
    if (strncmp(url, "file://", 7) == 0) {
        out->scheme = STORE_URL_FILE;
        r = store_url_parse_file(url + 7, out, why);
    } else if (strncmp(url, "s3://", 5) == 0) {
        out->scheme = STORE_URL_S3;
        r = store_url_parse_s3(url + 5, out, why);
    } else {
        *why = "a store URL starts with file:// or s3://";
        r = -EINVAL;
    }
    if (r < 0) {
        store_url_free(out);
        return r == -ENOMEM ? -ENOMEM : -EINVAL;
    }
    return 0;
}

void store_url_free(struct store_url *u)
{
    free(u->path);
    free(u->bucket);
    free(u->prefix);
    free(u->endpoint);
    free(u->region);
    memset(u, 0, sizeof *u);
}
