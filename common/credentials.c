/* credentials.c: S3 credentials from an AWS-style credentials file or the environment.
 *
 * The file is parsed by GLib's GKeyFile.  Two things are done to the text before GKeyFile sees
 * it, both because the AWS tools accept them and GKeyFile does not: a UTF-8 byte order mark is
 * dropped, and full-line comments starting with ';' become '#' comments.  Values are read raw
 * (g_key_file_get_value, no backslash escapes, which secret keys never use) and trimmed.
 *
 * Error messages name the profile, the key and the file, never a value: GKeyFile's own messages
 * quote the offending line, which may hold a secret, so they are never passed on.
 *
 * Known weakness: GKeyFile keeps its own copies of the values and frees them without wiping
 * them, so secrets may linger in freed heap memory.  Our own copies are wiped. */
#include "credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

/* Credentials files are a few hundred bytes; the cap keeps a mistaken path (a device, a huge
 * log) from being read into memory. */
#define CREDENTIALS_MAX_FILE_SIZE (1024 * 1024)

#define CREDENTIALS_KEY_ID     "aws_access_key_id"
#define CREDENTIALS_KEY_SECRET "aws_secret_access_key"
#define CREDENTIALS_KEY_TOKEN  "aws_session_token"

static void credentials_set_error(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void credentials_set_error(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

/* Frees a string that may hold a secret, wiping it first. */
static void credentials_wipe_free(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static void credentials_wipe_gfree(gchar *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    g_free(s);
}

/* Keys and tokens are printable ASCII.  A control character would corrupt the HTTP headers and
 * signatures they go into; a non-ASCII one is almost always a pasted no-break space or quote. */
static bool credentials_has_bad_char(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch < 0x20 || ch >= 0x7F)
            return true;
    }
    return false;
}

/* Profile names end up in a "[...]" group lookup and in messages. */
static bool credentials_profile_valid(const char *profile)
{
    return profile[0] != '\0' && strpbrk(profile, "[]") == NULL &&
           !credentials_has_bad_char(profile);
}

/* Returns a malloc'd, NUL-terminated copy of data without a leading BOM and with ';' comment
 * lines turned into '#' comment lines, or NULL when out of memory.  *text_len gets its length. */
static char *credentials_normalise(const char *data, size_t len, size_t *text_len)
{
    static const char bom[] = "\xEF\xBB\xBF";
    bool line_start = true;
    char *text;

    if (len >= 3 && memcmp(data, bom, 3) == 0) {
        data += 3;
        len -= 3;
    }
    text = malloc(len + 1);
    if (text == NULL)
        return NULL;
    memcpy(text, data, len);
    text[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n') {
            line_start = true;
        } else if (line_start && text[i] == ';') {
            text[i] = '#';
            line_start = false;
        } else if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r') {
            line_start = false;
        }
    }
    *text_len = len;
    return text;
}

/* Why GKeyFile refused the text, without quoting it (its own message quotes the line). */
static const char *credentials_load_reason(const GError *gerr)
{
    if (gerr->domain != G_KEY_FILE_ERROR)
        return "cannot be parsed";
    switch (gerr->code) {
    case G_KEY_FILE_ERROR_UNKNOWN_ENCODING:
        return "not valid UTF-8";
    case G_KEY_FILE_ERROR_PARSE:
        return "a line is not \"[profile]\", \"key = value\" or a comment";
    case G_KEY_FILE_ERROR_GROUP_NOT_FOUND:
        return "a \"key = value\" line comes before the first [profile]";
    default:
        return "cannot be parsed";
    }
}

/* Reads one key of the profile into a malloc'd, trimmed string.  An optional key that is absent
 * or empty gives 0 and NULL (an empty "aws_session_token =" means no token, as for the AWS
 * tools).  Returns 0, -EINVAL when a required key is absent or empty or a value is unusable,
 * -ENOMEM. */
static int credentials_get(GKeyFile *kf, const char *profile, const char *key, bool optional,
                           char **out, char *err, size_t err_size)
{
    gchar *raw;

    *out = NULL;
    raw = g_key_file_get_value(kf, profile, key, NULL);
    if (raw == NULL && optional)
        return 0;
    if (raw == NULL) {
        credentials_set_error(err, err_size, "profile [%s] has no %s", profile, key);
        return -EINVAL;
    }
    g_strstrip(raw);
    if (raw[0] == '\0') {
        credentials_wipe_gfree(raw);
        if (optional)
            return 0;
        credentials_set_error(err, err_size, "profile [%s]: %s is empty", profile, key);
        return -EINVAL;
    }
    if (credentials_has_bad_char(raw)) {
        credentials_set_error(err, err_size,
                              "profile [%s]: %s contains control or non-ASCII characters", profile,
                              key);
        credentials_wipe_gfree(raw);
        return -EINVAL;
    }
    *out = strdup(raw);
    credentials_wipe_gfree(raw);
    if (*out == NULL) {
        credentials_set_error(err, err_size, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

static int credentials_from_keyfile(GKeyFile *kf, const char *profile, struct aws_credentials *out,
                                    char *err, size_t err_size)
{
    int r;

    if (!g_key_file_has_group(kf, profile)) {
        credentials_set_error(err, err_size, "profile [%s] not found", profile);
        return -EINVAL;
    }
    r = credentials_get(kf, profile, CREDENTIALS_KEY_ID, false, &out->access_key, err, err_size);
    if (r == 0)
        r = credentials_get(kf, profile, CREDENTIALS_KEY_SECRET, false, &out->secret_key, err,
                            err_size);
    if (r == 0)
        r = credentials_get(kf, profile, CREDENTIALS_KEY_TOKEN, true, &out->session_token, err,
                            err_size);
    return r;
}

int aws_credentials_parse(const char *data, size_t len, const char *profile,
                          struct aws_credentials *out, char *err, size_t err_size)
{
    GError *gerr = NULL;
    GKeyFile *kf;
    size_t text_len;
    char *text;
    int r;

    memset(out, 0, sizeof *out);
    if (profile == NULL)
        profile = "default";
    if (!credentials_profile_valid(profile)) {
        /* Not echoed: it may hold the very control characters that make it invalid. */
        credentials_set_error(err, err_size,
                              "invalid profile name (empty, or holding '[', ']', "
                              "a control or a non-ASCII character)");
        return -EINVAL;
    }
    if (data == NULL && len > 0) {
        credentials_set_error(err, err_size, "no credentials data");
        return -EINVAL;
    }
    /* GKeyFile would cut a line at a NUL and carry on with the rest. */
    if (len > 0 && memchr(data, '\0', len) != NULL) {
        credentials_set_error(err, err_size, "credentials contain a NUL byte");
        return -EINVAL;
    }
    text = credentials_normalise(len > 0 ? data : "", len, &text_len);
    if (text == NULL) {
        credentials_set_error(err, err_size, "out of memory");
        return -ENOMEM;
    }

    kf = g_key_file_new();
    if (!g_key_file_load_from_data(kf, text, text_len, G_KEY_FILE_NONE, &gerr)) {
        credentials_set_error(err, err_size, "syntax error: %s", credentials_load_reason(gerr));
        g_error_free(gerr);
        r = -EINVAL;
    } else {
        r = credentials_from_keyfile(kf, profile, out, err, err_size);
    }
    g_key_file_free(kf);
    explicit_bzero(text, text_len);
    free(text);
    if (r < 0)
        aws_credentials_free(out);
    return r;
}

/* Reads a whole regular file of at most CREDENTIALS_MAX_FILE_SIZE bytes.  The caller wipes and
 * frees *data. */
static int credentials_read_file(const char *path, char **data, size_t *len, char *err,
                                 size_t err_size)
{
    struct stat st;
    size_t got = 0;
    char *buf;
    int fd, r;

    *data = NULL;
    *len = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        credentials_set_error(err, err_size, "open: %s: %s", path, strerror(-r));
        return r;
    }
    if (fstat(fd, &st) < 0) {
        r = -errno;
        credentials_set_error(err, err_size, "fstat: %s: %s", path, strerror(-r));
        close(fd);
        return r;
    }
    if (!S_ISREG(st.st_mode)) {
        credentials_set_error(err, err_size, "%s: not a regular file", path);
        close(fd);
        return -EINVAL;
    }
    if (st.st_size > CREDENTIALS_MAX_FILE_SIZE) {
        credentials_set_error(err, err_size, "%s: larger than %d bytes", path,
                              CREDENTIALS_MAX_FILE_SIZE);
        close(fd);
        return -EFBIG;
    }
    /* One byte more than the limit, so that a file growing under us is noticed. */
    buf = malloc(CREDENTIALS_MAX_FILE_SIZE + 1);
    if (buf == NULL) {
        credentials_set_error(err, err_size, "out of memory");
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t n = read(fd, buf + got, CREDENTIALS_MAX_FILE_SIZE + 1 - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            credentials_set_error(err, err_size, "read: %s: %s", path, strerror(-r));
            goto fail;
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (got > CREDENTIALS_MAX_FILE_SIZE) {
            credentials_set_error(err, err_size, "%s: larger than %d bytes", path,
                                  CREDENTIALS_MAX_FILE_SIZE);
            r = -EFBIG;
            goto fail;
        }
    }
    close(fd);
    *data = buf;
    *len = got;
    return 0;

fail:
    explicit_bzero(buf, got);
    free(buf);
    close(fd);
    return r;
}

static int credentials_load_file(const char *path, const char *profile, struct aws_credentials *out,
                                 char *err, size_t err_size)
{
    char why[256];
    char *data;
    size_t len;
    int r;

    r = credentials_read_file(path, &data, &len, err, err_size);
    if (r < 0)
        return r;
    why[0] = '\0';
    r = aws_credentials_parse(data, len, profile, out, why, sizeof why);
    explicit_bzero(data, len);
    free(data);
    if (r < 0)
        credentials_set_error(err, err_size, "%s: %s", path, why);
    return r;
}

/* Environment values that are set but empty count as unset, as for the AWS tools. */
static const char *credentials_getenv(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Returns 1 with out filled when the environment holds credentials, 0 when it holds none,
 * or a negative errno. */
static int credentials_from_env(struct aws_credentials *out, char *err, size_t err_size)
{
    const char *id = credentials_getenv("AWS_ACCESS_KEY_ID");
    const char *secret = credentials_getenv("AWS_SECRET_ACCESS_KEY");
    const char *token = credentials_getenv("AWS_SESSION_TOKEN");

    if (id == NULL && secret == NULL)
        return 0;
    if (id == NULL || secret == NULL) {
        credentials_set_error(err, err_size, "%s is set but %s is not set",
                              id != NULL ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                              id != NULL ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        return -EINVAL;
    }
    if (credentials_has_bad_char(id) || credentials_has_bad_char(secret) ||
        (token != NULL && credentials_has_bad_char(token))) {
        credentials_set_error(err, err_size,
                              "AWS credentials in the environment contain "
                              "control or non-ASCII characters");
        return -EINVAL;
    }
    out->access_key = strdup(id);
    out->secret_key = strdup(secret);
    out->session_token = token != NULL ? strdup(token) : NULL;
    if (out->access_key == NULL || out->secret_key == NULL ||
        (token != NULL && out->session_token == NULL)) {
        aws_credentials_free(out);
        credentials_set_error(err, err_size, "out of memory");
        return -ENOMEM;
    }
    return 1;
}

int aws_credentials_load(const char *file, const char *profile, struct aws_credentials *out,
                         char *err, size_t err_size)
{
    const char *shared, *home;
    char *path = NULL;
    int r;

    memset(out, 0, sizeof *out);
    /* A profile asked for by name wins over the environment's keys, as with aws --profile. */
    bool named_profile = profile != NULL;
    if (profile == NULL)
        profile = credentials_getenv("AWS_PROFILE");
    if (profile == NULL)
        profile = "default";

    if (file != NULL)
        return credentials_load_file(file, profile, out, err, err_size);

    r = named_profile ? 0 : credentials_from_env(out, err, err_size);
    if (r != 0)
        return r < 0 ? r : 0;

    shared = credentials_getenv("AWS_SHARED_CREDENTIALS_FILE");
    home = credentials_getenv("HOME");
    if (shared == NULL && home == NULL) {
        credentials_set_error(err, err_size,
                              "no S3 credentials: AWS_ACCESS_KEY_ID is not set, and neither "
                              "AWS_SHARED_CREDENTIALS_FILE nor HOME is set");
        return -ENOENT;
    }
    if (shared == NULL) {
        if (asprintf(&path, "%s/.aws/credentials", home) < 0) {
            credentials_set_error(err, err_size, "out of memory");
            return -ENOMEM;
        }
    }
    r = credentials_load_file(shared != NULL ? shared : path, profile, out, err, err_size);
    if (r == -ENOENT)
        credentials_set_error(err, err_size,
                              "no S3 credentials: AWS_ACCESS_KEY_ID is not set and %s does not "
                              "exist",
                              shared != NULL ? shared : path);
    free(path);
    return r;
}

void aws_credentials_free(struct aws_credentials *c)
{
    if (c == NULL)
        return;
    credentials_wipe_free(c->access_key);
    credentials_wipe_free(c->secret_key);
    credentials_wipe_free(c->session_token);
    memset(c, 0, sizeof *c);
}
