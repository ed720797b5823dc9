/* test_credentials: AWS credentials files and the environment, and the order between them. */
#include "credentials.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "check.h"

/* Secret values are all spelled with "SECRET" so that a leak into a message is easy to spot. */
static const char several_profiles[] = "# AWS credentials for the Wisp tests\n"
                                       "[default]\n"
                                       "aws_access_key_id = AKIADEFAULT\n"
                                       "aws_secret_access_key = SECRETdefault/+abc\n"
                                       "\n"
                                       "; a comment in the style the AWS CLI also accepts\n"
                                       "[prod]\n"
                                       "aws_access_key_id=AKIAPROD\n"
                                       "aws_secret_access_key=SECRETprod\n"
                                       "  # indented comment\n"
                                       "[spaces]\n"
                                       "   aws_access_key_id   =    AKIASPACES   \n"
                                       "aws_secret_access_key\t=\tSECRETspaces\t\n"
                                       "[temporary]\n"
                                       "aws_access_key_id = ASIATEMP\n"
                                       "aws_secret_access_key = SECRETtemp\n"
                                       "aws_session_token = SECRETtoken/with+slashes==\n"
                                       "[empty-token]\n"
                                       "aws_access_key_id = AKIAET\n"
                                       "aws_secret_access_key = SECRETet\n"
                                       "aws_session_token =\n"
                                       "[no-secret]\n"
                                       "aws_access_key_id = AKIANOSECRET\n"
                                       "[no-id]\n"
                                       "aws_secret_access_key = SECRETnoid\n"
                                       "[empty-id]\n"
                                       "aws_access_key_id =   \n"
                                       "aws_secret_access_key = SECRETemptyid\n"
                                       "[other-keys]\n"
                                       "region = eu-west-1\n"
                                       "aws_access_key_id = AKIAOTHER\n"
                                       "output = json\n"
                                       "aws_secret_access_key = SECRETother\n";

static bool creds_are(const struct aws_credentials *c, const char *id, const char *secret,
                      const char *token)
{
    if (c->access_key == NULL || strcmp(c->access_key, id) != 0)
        return false;
    if (c->secret_key == NULL || strcmp(c->secret_key, secret) != 0)
        return false;
    if (token == NULL)
        return c->session_token == NULL;
    return c->session_token != NULL && strcmp(c->session_token, token) == 0;
}

static bool creds_are_empty(const struct aws_credentials *c)
{
    return c->access_key == NULL && c->secret_key == NULL && c->session_token == NULL;
}

static int parse(const char *text, const char *profile, struct aws_credentials *c, char *err,
                 size_t err_size)
{
    return aws_credentials_parse(text, strlen(text), profile, c, err, err_size);
}

static void test_parse_profiles(void)
{
    struct aws_credentials c;
    char err[256];

    CHECK(parse(several_profiles, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIADEFAULT", "SECRETdefault/+abc", NULL));
    aws_credentials_free(&c);
    CHECK(creds_are_empty(&c));

    CHECK(parse(several_profiles, "default", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIADEFAULT", "SECRETdefault/+abc", NULL));
    aws_credentials_free(&c);

    CHECK(parse(several_profiles, "prod", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAPROD", "SECRETprod", NULL));
    aws_credentials_free(&c);

    CHECK(parse(several_profiles, "spaces", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIASPACES", "SECRETspaces", NULL));
    aws_credentials_free(&c);

    CHECK(parse(several_profiles, "temporary", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "ASIATEMP", "SECRETtemp", "SECRETtoken/with+slashes=="));
    aws_credentials_free(&c);

    CHECK(parse(several_profiles, "empty-token", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAET", "SECRETet", NULL));
    aws_credentials_free(&c);

    CHECK(parse(several_profiles, "other-keys", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAOTHER", "SECRETother", NULL));
    aws_credentials_free(&c);

    aws_credentials_free(&c); /* twice is harmless */
    aws_credentials_free(NULL);
}

static void test_parse_line_endings(void)
{
    static const char crlf[] = "[default]\r\naws_access_key_id = AKIACRLF\r\n"
                               "aws_secret_access_key = SECRETcrlf\r\n";
    static const char bom[] = "\xEF\xBB\xBF[default]\naws_access_key_id = AKIABOM\n"
                              "aws_secret_access_key = SECRETbom";
    struct aws_credentials c;
    char err[256];

    CHECK(parse(crlf, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIACRLF", "SECRETcrlf", NULL));
    aws_credentials_free(&c);
    CHECK(parse(bom, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIABOM", "SECRETbom", NULL));
    aws_credentials_free(&c);
}

/* A failure: -EINVAL, nothing returned, every needle in the message, no secret in it. */
static void expect_parse_error(const char *text, size_t len, const char *profile,
                               const char *needle1, const char *needle2)
{
    struct aws_credentials c;
    char err[256] = "";
    int before = check_failures;

    memset(&c, 0x5A, sizeof c);
    CHECK(aws_credentials_parse(text, len, profile, &c, err, sizeof err) == -EINVAL);
    CHECK(creds_are_empty(&c));
    CHECK(err[0] != '\0');
    CHECK(strstr(err, "SECRET") == NULL);
    CHECK(needle1 == NULL || strstr(err, needle1) != NULL);
    CHECK(needle2 == NULL || strstr(err, needle2) != NULL);
    if (check_failures != before)
        fprintf(stderr, "  ... profile %s, message \"%s\"\n", profile ? profile : "(null)", err);
}

static void expect_parse_error_str(const char *text, const char *profile, const char *needle1,
                                   const char *needle2)
{
    expect_parse_error(text, strlen(text), profile, needle1, needle2);
}

static void test_parse_errors(void)
{
    static const char with_nul[] = "[default]\naws_access_key_id = AKIA\0X\n"
                                   "aws_secret_access_key = SECRETnul\n";
    struct aws_credentials c;

    expect_parse_error_str(several_profiles, "staging", "[staging]", "not found");
    expect_parse_error_str(several_profiles, "no-secret", "[no-secret]", "aws_secret_access_key");
    expect_parse_error_str(several_profiles, "no-id", "[no-id]", "aws_access_key_id");
    expect_parse_error_str(several_profiles, "empty-id", "[empty-id]", "aws_access_key_id");
    expect_parse_error_str("", NULL, "[default]", NULL);
    expect_parse_error("", 0, "x", "[x]", NULL);
    expect_parse_error(NULL, 0, NULL, "[default]", NULL);
    expect_parse_error_str("[prod]\naws_access_key_id = A\naws_secret_access_key = SECRETp\n", NULL,
                           "[default]", "not found");

    /* Syntax errors: GKeyFile would quote the line, and with it the secret. */
    expect_parse_error_str("[default]\naws_access_key_id = AKIA\n"
                           "aws_secret_access_key: SECRETcolon\n",
                           NULL, NULL, NULL);
    expect_parse_error_str("[default]\naws_access_key_id = AKIA\nSECRETbareline\n", NULL,
                           "syntax error", NULL);
    expect_parse_error_str("aws_access_key_id = AKIA\naws_secret_access_key = SECRETnogroup\n"
                           "[default]\n",
                           NULL, "before the first", NULL);
    expect_parse_error_str("[default\naws_access_key_id = AKIA\n"
                           "aws_secret_access_key = SECRETbadgroup\n",
                           NULL, NULL, NULL);
    expect_parse_error(with_nul, sizeof with_nul - 1, NULL, "NUL", NULL);

    /* Control characters would end up in HTTP headers; non-ASCII is a pasted no-break space. */
    expect_parse_error_str("[default]\naws_access_key_id = AKIA\n"
                           "aws_secret_access_key = SECRET\x1b[0mx\n",
                           NULL, "aws_secret_access_key", "control");
    expect_parse_error_str("[default]\naws_access_key_id = AKIA\xC2\xA0\n"
                           "aws_secret_access_key = SECRETnbsp\n",
                           NULL, "aws_access_key_id", "non-ASCII");
    expect_parse_error_str("[default]\naws_access_key_id = AKIA\n"
                           "aws_secret_access_key = SECRET\xff\xfe\n",
                           NULL, "aws_secret_access_key", NULL);
    expect_parse_error_str("[default]\naws_access_key_id = AKIA\naws_secret_access_key = S\n"
                           "aws_session_token = SECRET\rinjected\n",
                           NULL, "aws_session_token", NULL);

    /* Profile names that cannot be a [group]. */
    expect_parse_error_str(several_profiles, "", "profile", NULL);
    expect_parse_error_str(several_profiles, "a]b", "profile", NULL);

    /* err may be NULL. */
    CHECK(aws_credentials_parse("", 0, NULL, &c, NULL, 0) == -EINVAL);
}

/* --- aws_credentials_load: a scratch HOME and a clean environment per test --- */

static char *scratch_dir;

static void env_clear(void)
{
    static const char *const vars[] = {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",       "AWS_SESSION_TOKEN",
        "AWS_PROFILE",       "AWS_SHARED_CREDENTIALS_FILE", "HOME",
    };

    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

static char *scratch_write(const char *relpath, const char *text)
{
    char *path = g_build_filename(scratch_dir, relpath, NULL);
    char *dir = g_path_get_dirname(path);

    CHECK(g_mkdir_with_parents(dir, 0700) == 0);
    CHECK(g_file_set_contents(path, text, -1, NULL));
    g_free(dir);
    return path;
}

static void scratch_remove(const char *relpath)
{
    char *path = g_build_filename(scratch_dir, relpath, NULL);

    g_unlink(path);
    g_free(path);
}

static void test_load_explicit_file(void)
{
    char *path = scratch_write("explicit.ini", several_profiles);
    char *missing = g_build_filename(scratch_dir, "missing.ini", NULL);
    struct aws_credentials c;
    char err[512];

    env_clear();
    CHECK(aws_credentials_load(path, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIADEFAULT", "SECRETdefault/+abc", NULL));
    aws_credentials_free(&c);

    CHECK(aws_credentials_load(path, "temporary", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "ASIATEMP", "SECRETtemp", "SECRETtoken/with+slashes=="));
    aws_credentials_free(&c);

    /* AWS_PROFILE picks the profile when the caller does not. */
    setenv("AWS_PROFILE", "prod", 1);
    CHECK(aws_credentials_load(path, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAPROD", "SECRETprod", NULL));
    aws_credentials_free(&c);
    CHECK(aws_credentials_load(path, "spaces", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIASPACES", "SECRETspaces", NULL));
    aws_credentials_free(&c);
    unsetenv("AWS_PROFILE");

    /* An explicit file beats the environment. */
    setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SECRETenv", 1);
    CHECK(aws_credentials_load(path, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIADEFAULT", "SECRETdefault/+abc", NULL));
    aws_credentials_free(&c);

    /* ...and its errors are not papered over by the environment. */
    CHECK(aws_credentials_load(missing, NULL, &c, err, sizeof err) == -ENOENT);
    CHECK(creds_are_empty(&c));
    CHECK(strstr(err, "missing.ini") != NULL);
    CHECK(aws_credentials_load(path, "nope", &c, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "explicit.ini") != NULL && strstr(err, "[nope]") != NULL);
    CHECK(aws_credentials_load(scratch_dir, NULL, &c, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "regular file") != NULL);
    CHECK(aws_credentials_load(path, "no-secret", &c, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "aws_secret_access_key") != NULL && strstr(err, "SECRET") == NULL);

    env_clear();
    scratch_remove("explicit.ini");
    g_free(missing);
    g_free(path);
}

static void test_load_env(void)
{
    char *home_file;
    struct aws_credentials c;
    char err[512];

    env_clear();
    setenv("HOME", scratch_dir, 1);
    home_file = scratch_write(".aws/credentials", several_profiles);

    /* The environment beats ~/.aws/credentials, AWS_PROFILE or not. */
    setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SECRETenv", 1);
    setenv("AWS_PROFILE", "prod", 1);
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAENV", "SECRETenv", NULL));
    aws_credentials_free(&c);

    setenv("AWS_SESSION_TOKEN", "SECRETenvtoken", 1);
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAENV", "SECRETenv", "SECRETenvtoken"));
    aws_credentials_free(&c);

    /* An empty token variable is no token. */
    setenv("AWS_SESSION_TOKEN", "", 1);
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAENV", "SECRETenv", NULL));
    aws_credentials_free(&c);

    /* Half a pair is an error naming the missing half, not a fall-through to the file. */
    unsetenv("AWS_SECRET_ACCESS_KEY");
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == -EINVAL);
    CHECK(creds_are_empty(&c));
    CHECK(strstr(err, "AWS_SECRET_ACCESS_KEY is not set") != NULL);
    unsetenv("AWS_ACCESS_KEY_ID");
    setenv("AWS_SECRET_ACCESS_KEY", "SECRETenv", 1);
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "AWS_ACCESS_KEY_ID is not set") != NULL);
    CHECK(strstr(err, "SECRETenv") == NULL);

    /* Garbage in the environment is refused without echoing it. */
    setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SECRETenv\r\nX-Injected: 1", 1);
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == -EINVAL);
    CHECK(creds_are_empty(&c));
    CHECK(strstr(err, "SECRETenv") == NULL && strstr(err, "Injected") == NULL);

    /* Set but empty counts as unset: on to the file, with AWS_PROFILE. */
    setenv("AWS_ACCESS_KEY_ID", "", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "", 1);
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAPROD", "SECRETprod", NULL));
    aws_credentials_free(&c);

    env_clear();
    scratch_remove(".aws/credentials");
    g_free(home_file);
}

static void test_load_shared_files(void)
{
    char *home_file, *shared_file;
    struct aws_credentials c;
    char err[512];

    env_clear();
    setenv("HOME", scratch_dir, 1);
    home_file = scratch_write(".aws/credentials", "[default]\naws_access_key_id = AKIAHOME\n"
                                                  "aws_secret_access_key = SECREThome\n");
    shared_file = scratch_write("shared.ini", "[default]\naws_access_key_id = AKIASHARED\n"
                                              "aws_secret_access_key = SECRETshared\n"
                                              "[other]\naws_access_key_id = AKIASHOTHER\n"
                                              "aws_secret_access_key = SECRETshother\n"
                                              "aws_session_token = SECRETshtoken\n");

    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIAHOME", "SECREThome", NULL));
    aws_credentials_free(&c);

    /* AWS_SHARED_CREDENTIALS_FILE replaces ~/.aws/credentials. */
    setenv("AWS_SHARED_CREDENTIALS_FILE", shared_file, 1);
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIASHARED", "SECRETshared", NULL));
    aws_credentials_free(&c);
    CHECK(aws_credentials_load(NULL, "other", &c, err, sizeof err) == 0);
    CHECK(creds_are(&c, "AKIASHOTHER", "SECRETshother", "SECRETshtoken"));
    aws_credentials_free(&c);

    /* A profile missing from the file is an error naming both. */
    CHECK(aws_credentials_load(NULL, "absent", &c, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "[absent]") != NULL && strstr(err, "shared.ini") != NULL);

    /* Nothing anywhere: -ENOENT, saying where we looked. */
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/wisp/credentials", 1);
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == -ENOENT);
    CHECK(creds_are_empty(&c));
    CHECK(strstr(err, "/nonexistent/wisp/credentials") != NULL);
    CHECK(strstr(err, "AWS_ACCESS_KEY_ID") != NULL);
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    scratch_remove(".aws/credentials");
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == -ENOENT);
    CHECK(strstr(err, ".aws/credentials") != NULL);
    unsetenv("HOME");
    CHECK(aws_credentials_load(NULL, NULL, &c, err, sizeof err) == -ENOENT);
    CHECK(strstr(err, "HOME") != NULL);
    CHECK(aws_credentials_load(NULL, NULL, &c, NULL, 0) == -ENOENT);

    env_clear();
    scratch_remove("shared.ini");
    g_free(home_file);
    g_free(shared_file);
}

int main(void)
{
    char *aws_dir;

    test_parse_profiles();
    test_parse_line_endings();
    test_parse_errors();

    scratch_dir = g_dir_make_tmp("wisp-test-credentials-XXXXXX", NULL);
    if (scratch_dir == NULL) {
        fprintf(stderr, "cannot create a scratch directory\n");
        return EXIT_FAILURE;
    }
    test_load_explicit_file();
    test_load_env();
    test_load_shared_files();

    aws_dir = g_build_filename(scratch_dir, ".aws", NULL);
    g_rmdir(aws_dir);
    g_free(aws_dir);
    CHECK(g_rmdir(scratch_dir) == 0);
    g_free(scratch_dir);
    return check_exit_code();
}
