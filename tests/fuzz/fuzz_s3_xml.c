/* fuzz_s3_xml: s3_xml_parse_list, s3_xml_parse_error and s3_parse_iso8601 on arbitrary bytes,
 * checking the promises of s3_xml.h on every result. */
#include "s3_xml.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/globals.h>
#include <libxml/xmlerror.h>

#include "fuzz_check.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_marker;

/* Stands for the host program's libxml2 error handler, which every parse must put back. */
static void fuzz_host_handler(void *ctx, const char *msg, ...)
{
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xmlSetGenericErrorFunc(&fuzz_marker, fuzz_host_handler);
    return 0;
}

static void fuzz_check_handlers(void)
{
    FUZZ_ASSERT(xmlGenericError == fuzz_host_handler);
    FUZZ_ASSERT(xmlGenericErrorContext == &fuzz_marker);
    FUZZ_ASSERT(xmlStructuredError == NULL);
}

static void fuzz_list(const char *body, size_t len)
{
    struct s3_list_page page;
    const char *why = NULL;
    int r;

    r = s3_xml_parse_list(body, len, &page, &why);
    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -ENOMEM);
        FUZZ_ASSERT(why != NULL && why[0] != '\0');
        FUZZ_ASSERT(page.entries == NULL && page.n_entries == 0 && page.next_token == NULL);
        return;
    }
    FUZZ_ASSERT(!page.truncated || (page.next_token != NULL && page.next_token[0] != '\0'));
    FUZZ_ASSERT(page.n_entries == 0 || page.entries != NULL);
    for (size_t i = 0; i < page.n_entries; i++) {
        FUZZ_ASSERT(page.entries[i].key != NULL && page.entries[i].key[0] != '\0');
        FUZZ_ASSERT(page.entries[i].mtime >= 0);
    }
    s3_list_page_free(&page);
}

static void fuzz_error(const char *body, size_t len)
{
    /* Small buffers, so that truncation is exercised too. */
    char code[8], message[24];
    int r;

    memset(code, 'x', sizeof code);
    memset(message, 'x', sizeof message);
    r = s3_xml_parse_error(body, len, code, sizeof code, message, sizeof message);
    FUZZ_ASSERT(memchr(code, '\0', sizeof code) != NULL);
    FUZZ_ASSERT(memchr(message, '\0', sizeof message) != NULL);
    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -ENOMEM);
        FUZZ_ASSERT(code[0] == '\0' && message[0] == '\0');
        return;
    }
    FUZZ_ASSERT(code[0] != '\0');
    for (const char *p = message; *p != '\0'; p++)
        FUZZ_ASSERT((unsigned char)*p >= 0x20 && *p != 0x7F);
}

/* A time that parses must print back to the same calendar fields: this catches any range check
 * that lets timegm() normalise (Feb 30 into March). */
static void fuzz_iso8601(const char *s)
{
    time_t t = 0;
    struct tm tm;
    char back[32];

    if (s3_parse_iso8601(s, &t) < 0)
        return;
    FUZZ_ASSERT(t >= 0);
    FUZZ_ASSERT(gmtime_r(&t, &tm) != NULL);
    FUZZ_ASSERT(strftime(back, sizeof back, "%Y-%m-%dT%H:%M:%S", &tm) == 19);
    FUZZ_ASSERT(strncmp(s, back, 19) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy;

    fuzz_list((const char *)data, size);
    fuzz_check_handlers();
    fuzz_error((const char *)data, size);
    fuzz_check_handlers();

    copy = malloc(size + 1);
    if (copy == NULL)
        return 0;
    if (size > 0)
        memcpy(copy, data, size);
    copy[size] = '\0';
    fuzz_iso8601(copy);
    free(copy);
    return 0;
}
