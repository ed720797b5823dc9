/* s3_xml.c: strict decoding of the S3 XML bodies Wisp reads.
 *
 * Everything here treats the body as hostile: a wrong or truncated listing would make Wisp
 * believe objects do not exist, so anything that is not exactly a ListBucketResult (or an Error
 * document) is refused with -EBADMSG rather than partly used.
 *
 * The tree is walked by local element names.  An element matches when it is in no namespace or
 * in the S3 namespace; elements in any other namespace are ignored like unknown elements, which
 * S3 adds over time (ChecksumAlgorithm, Owner, ...).
 *
 * Known weakness: libxml2 allocates with its own allocator, which does not fail softly
 * everywhere; an allocation failure inside libxml2 is reported as -ENOMEM only when the parser
 * context records it. */
#include "s3_xml.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/globals.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#define S3_XML_NAMESPACE "http://s3.amazonaws.com/doc/2006-03-01/"

/* NONET: never fetch anything.  No NOENT and no DTDLOAD: entities are never substituted and no
 * external subset is read (and documents with a DTD are refused below anyway).  IGNORE_ENC with
 * "UTF-8" passed to the parser: S3 only writes UTF-8, and this keeps a declared encoding="EUC-JP"
 * from routing the body through iconv; the bytes are validated as UTF-8 whatever the
 * declaration says.  NOERROR and NOWARNING keep the parser's own reports off stderr; see
 * s3_xml_quiet for the rest. */
#define S3_XML_PARSE_OPTIONS                                                                       \
    (XML_PARSE_NONET | XML_PARSE_IGNORE_ENC | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |            \
     XML_PARSE_NOCDATA)

static pthread_once_t s3_xml_once = PTHREAD_ONCE_INIT;

/* libxml2 asks multithreaded programs to call xmlInitParser() once before any parse. */
static void s3_xml_init_once(void)
{
    xmlInitParser();
}

/* Some libxml2 reports bypass the parser context and go to the generic handler, which prints to
 * stderr (an encoding error prints "I/O error : encoder error").  The handlers are per thread
 * in libxml2, so they are swapped for no-ops around one parse and then put back, leaving those
 * of the host program (nbdkit) alone. */
struct s3_xml_saved_handlers {
    xmlGenericErrorFunc generic;
    void *generic_ctx;
    xmlStructuredErrorFunc structured;
    void *structured_ctx;
};

static void s3_xml_ignore_generic(void *ctx, const char *msg, ...)
{
}

static void s3_xml_ignore_structured(void *ctx, xmlErrorPtr error)
{
}

static void s3_xml_quiet(struct s3_xml_saved_handlers *saved)
{
    saved->generic = xmlGenericError;
    saved->generic_ctx = xmlGenericErrorContext;
    saved->structured = xmlStructuredError;
    saved->structured_ctx = xmlStructuredErrorContext;
    xmlSetGenericErrorFunc(NULL, s3_xml_ignore_generic);
    xmlSetStructuredErrorFunc(NULL, s3_xml_ignore_structured);
}

static void s3_xml_unquiet(const struct s3_xml_saved_handlers *saved)
{
    xmlSetGenericErrorFunc(saved->generic_ctx, saved->generic);
    xmlSetStructuredErrorFunc(saved->structured_ctx, saved->structured);
}

static int s3_xml_read(const char *body, size_t len, xmlDocPtr *doc, const char **why)
{
    struct s3_xml_saved_handlers saved;
    xmlParserCtxtPtr ctxt;
    int r = 0;

    *doc = NULL;
    if (len == 0) {
        *why = "empty body";
        return -EBADMSG;
    }
    if (len > INT_MAX) {
        *why = "body too large for the XML parser";
        return -EBADMSG;
    }
    /* XML cannot contain NUL; refusing it here also guarantees that no key we return can carry
     * an embedded NUL that would silently shorten it. */
    if (memchr(body, '\0', len) != NULL) {
        *why = "NUL byte in body";
        return -EBADMSG;
    }

    pthread_once(&s3_xml_once, s3_xml_init_once);
    s3_xml_quiet(&saved);
    ctxt = xmlNewParserCtxt();
    if (ctxt == NULL) {
        s3_xml_unquiet(&saved);
        *why = "out of memory";
        return -ENOMEM;
    }
    *doc = xmlCtxtReadMemory(ctxt, body, (int)len, NULL, "UTF-8", S3_XML_PARSE_OPTIONS);
    s3_xml_unquiet(&saved);
    if (*doc == NULL) {
        if (ctxt->errNo == XML_ERR_NO_MEMORY) {
            *why = "out of memory";
            r = -ENOMEM;
        } else {
            *why = "not well-formed XML";
            r = -EBADMSG;
        }
    } else if (!ctxt->nsWellFormed) {
        /* e.g. an unbound prefix: the element names would then carry the prefix. */
        *why = "XML namespace error";
        r = -EBADMSG;
    } else if ((*doc)->intSubset != NULL || (*doc)->extSubset != NULL) {
        /* S3 never sends a DTD; one here can only be an attempt at entity tricks. */
        *why = "document has a DTD";
        r = -EBADMSG;
    } else if (xmlDocGetRootElement(*doc) == NULL) {
        *why = "no root element";
        r = -EBADMSG;
    }
    if (r < 0 && *doc != NULL) {
        xmlFreeDoc(*doc);
        *doc = NULL;
    }
    xmlFreeParserCtxt(ctxt);
    return r;
}

static bool s3_xml_is(const xmlNode *n, const char *name)
{
    if (n->type != XML_ELEMENT_NODE)
        return false;
    if (n->ns != NULL && n->ns->href != NULL &&
        strcmp((const char *)n->ns->href, S3_XML_NAMESPACE) != 0)
        return false;
    return strcmp((const char *)n->name, name) == 0;
}

/* Children of container elements are elements; text between them must be blank (indentation). */
static bool s3_xml_is_stray_text(const xmlNode *n)
{
    return (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) && !xmlIsBlankNode(n);
}

/* Copies the text of a leaf element into a malloc'd string.  S3 leaves hold only text; an element
 * or entity reference inside one is malformed.  Comments and processing instructions are
 * skipped, as an XML reader must. */
static int s3_xml_text(const xmlNode *elem, char **out, const char **why)
{
    const xmlNode *c;
    size_t total = 0;
    char *s;

    *out = NULL;
    for (c = elem->children; c != NULL; c = c->next) {
        if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
            /* Cannot overflow: the whole body is at most INT_MAX bytes. */
            total += c->content != NULL ? strlen((const char *)c->content) : 0;
        } else if (c->type != XML_COMMENT_NODE && c->type != XML_PI_NODE) {
            *why = "unexpected markup inside a text element";
            return -EBADMSG;
        }
    }
    s = malloc(total + 1);
    if (s == NULL) {
        *why = "out of memory";
        return -ENOMEM;
    }
    total = 0;
    for (c = elem->children; c != NULL; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
            size_t n = strlen((const char *)c->content);
            memcpy(s + total, c->content, n);
            total += n;
        }
    }
    s[total] = '\0';
    *out = s;
    return 0;
}

/* A decimal uint64: digits only (no sign, no blanks), no overflow. */
static bool s3_xml_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned d;

        if (*s < '0' || *s > '9')
            return false;
        d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static int s3_xml_parse_contents(const xmlNode *contents, struct s3_list_entry *e, const char **why)
{
    const xmlNode *c;
    bool have_size = false, have_mtime = false;
    char *text;
    int r;

    memset(e, 0, sizeof *e);
    for (c = contents->children; c != NULL; c = c->next) {
        if (s3_xml_is(c, "Key")) {
            if (e->key != NULL) {
                *why = "Contents with two Key elements";
                return -EBADMSG;
            }
            r = s3_xml_text(c, &e->key, why);
            if (r < 0)
                return r;
            if (e->key[0] == '\0') {
                *why = "Contents with an empty Key";
                return -EBADMSG;
            }
        } else if (s3_xml_is(c, "Size")) {
            if (have_size) {
                *why = "Contents with two Size elements";
                return -EBADMSG;
            }
            r = s3_xml_text(c, &text, why);
            if (r < 0)
                return r;
            have_size = s3_xml_parse_u64(text, &e->size);
            free(text);
            if (!have_size) {
                *why = "Size is not a decimal unsigned 64-bit integer";
                return -EBADMSG;
            }
        } else if (s3_xml_is(c, "LastModified")) {
            if (have_mtime) {
                *why = "Contents with two LastModified elements";
                return -EBADMSG;
            }
            r = s3_xml_text(c, &text, why);
            if (r < 0)
                return r;
            r = s3_parse_iso8601(text, &e->mtime);
            free(text);
            if (r < 0) {
                *why = "LastModified is not an ISO 8601 UTC time";
                return -EBADMSG;
            }
            have_mtime = true;
        } else if (s3_xml_is_stray_text(c)) {
            *why = "unexpected text inside Contents";
            return -EBADMSG;
        }
    }
    if (e->key == NULL) {
        *why = "Contents without Key";
        return -EBADMSG;
    }
    if (!have_size) {
        *why = "Contents without Size";
        return -EBADMSG;
    }
    return 0;
}

static int s3_xml_append_entry(struct s3_list_page *page, size_t *capacity, const xmlNode *contents,
                               const char **why)
{
    int r;

    if (page->n_entries == *capacity) {
        size_t cap = *capacity ? *capacity * 2 : 16;
        struct s3_list_entry *grown;

        if (cap > SIZE_MAX / sizeof *grown) {
            *why = "out of memory";
            return -ENOMEM;
        }
        grown = realloc(page->entries, cap * sizeof *grown);
        if (grown == NULL) {
            *why = "out of memory";
            return -ENOMEM;
        }
        page->entries = grown;
        *capacity = cap;
    }
    r = s3_xml_parse_contents(contents, &page->entries[page->n_entries], why);
    if (r < 0) {
        free(page->entries[page->n_entries].key);
        return r;
    }
    page->n_entries++;
    return 0;
}

static int s3_xml_parse_truncated(const xmlNode *n, bool *truncated, const char **why)
{
    char *text;
    int r;

    r = s3_xml_text(n, &text, why);
    if (r < 0)
        return r;
    /* S3 writes exactly "true" or "false"; anything else must not be guessed at. */
    if (strcmp(text, "true") == 0) {
        *truncated = true;
    } else if (strcmp(text, "false") == 0) {
        *truncated = false;
    } else {
        *why = "IsTruncated is neither true nor false";
        r = -EBADMSG;
    }
    free(text);
    return r;
}

static int s3_xml_parse_list_root(const xmlNode *root, struct s3_list_page *out, const char **why)
{
    const xmlNode *c;
    size_t capacity = 0;
    bool have_truncated = false, have_token = false;
    int r;

    if (!s3_xml_is(root, "ListBucketResult")) {
        *why = "root element is not ListBucketResult";
        return -EBADMSG;
    }
    for (c = root->children; c != NULL; c = c->next) {
        if (s3_xml_is(c, "Contents")) {
            r = s3_xml_append_entry(out, &capacity, c, why);
            if (r < 0)
                return r;
        } else if (s3_xml_is(c, "IsTruncated")) {
            if (have_truncated) {
                *why = "two IsTruncated elements";
                return -EBADMSG;
            }
            r = s3_xml_parse_truncated(c, &out->truncated, why);
            if (r < 0)
                return r;
            have_truncated = true;
        } else if (s3_xml_is(c, "NextContinuationToken")) {
            if (have_token) {
                *why = "two NextContinuationToken elements";
                return -EBADMSG;
            }
            r = s3_xml_text(c, &out->next_token, why);
            if (r < 0)
                return r;
            have_token = true;
            if (out->next_token[0] == '\0') {
                free(out->next_token);
                out->next_token = NULL;
            }
        } else if (s3_xml_is_stray_text(c)) {
            *why = "unexpected text inside ListBucketResult";
            return -EBADMSG;
        }
    }
    /* Every S3 implementation sends IsTruncated; guessing "false" would silently drop keys. */
    if (!have_truncated) {
        *why = "ListBucketResult without IsTruncated";
        return -EBADMSG;
    }
    if (out->truncated && out->next_token == NULL) {
        *why = "truncated listing without NextContinuationToken";
        return -EBADMSG;
    }
    return 0;
}

int s3_xml_parse_list(const char *body, size_t len, struct s3_list_page *out, const char **why)
{
    const char *ignored;
    xmlDocPtr doc;
    int r;

    if (why == NULL)
        why = &ignored;
    memset(out, 0, sizeof *out);
    r = s3_xml_read(body, len, &doc, why);
    if (r < 0)
        return r;
    r = s3_xml_parse_list_root(xmlDocGetRootElement(doc), out, why);
    xmlFreeDoc(doc);
    if (r < 0)
        s3_list_page_free(out);
    return r;
}

void s3_list_page_free(struct s3_list_page *page)
{
    if (page == NULL)
        return;
    for (size_t i = 0; i < page->n_entries; i++)
        free(page->entries[i].key);
    free(page->entries);
    free(page->next_token);
    memset(page, 0, sizeof *page);
}

/* Copies src into dst, truncating to fit without splitting a UTF-8 sequence.  Control characters
 * become spaces: these strings come from the server and end up in log lines. */
static void s3_xml_copy_display(char *dst, size_t dst_size, const char *src)
{
    size_t n;

    if (dst_size == 0)
        return;
    n = strlen(src);
    if (n >= dst_size) {
        n = dst_size - 1;
        /* Back up over continuation bytes (10xxxxxx) to the start of the cut sequence. */
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch == 0x7F) ? ' ' : (char)ch;
    }
    dst[n] = '\0';
}

static int s3_xml_parse_error_root(const xmlNode *root, char **code, char **message)
{
    const char *why;
    const xmlNode *c;
    int r;

    if (!s3_xml_is(root, "Error"))
        return -EBADMSG;
    for (c = root->children; c != NULL; c = c->next) {
        if (s3_xml_is(c, "Code")) {
            if (*code != NULL)
                return -EBADMSG;
            r = s3_xml_text(c, code, &why);
            if (r < 0)
                return r;
        } else if (s3_xml_is(c, "Message")) {
            if (*message != NULL)
                return -EBADMSG;
            r = s3_xml_text(c, message, &why);
            if (r < 0)
                return r;
        } else if (s3_xml_is_stray_text(c)) {
            return -EBADMSG;
        }
    }
    /* Without a Code the caller cannot map the error, so this is not an error document. */
    if (*code == NULL || (*code)[0] == '\0')
        return -EBADMSG;
    return 0;
}

int s3_xml_parse_error(const char *body, size_t len, char *code, size_t code_size, char *message,
                       size_t message_size)
{
    const char *why;
    char *c = NULL, *m = NULL;
    xmlDocPtr doc;
    int r;

    if (code_size > 0)
        code[0] = '\0';
    if (message_size > 0)
        message[0] = '\0';
    r = s3_xml_read(body, len, &doc, &why);
    if (r < 0)
        return r;
    r = s3_xml_parse_error_root(xmlDocGetRootElement(doc), &c, &m);
    xmlFreeDoc(doc);
    if (r == 0) {
        s3_xml_copy_display(code, code_size, c);
        s3_xml_copy_display(message, message_size, m != NULL ? m : "");
    }
    free(c);
    free(m);
    return r;
}

/* Reads exactly n decimal digits. */
static bool s3_iso_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];

        if (ch < '0' || ch > '9')
            return false;
        v = v * 10 + (ch - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Consumes ch if it is next; never steps over the terminating NUL. */
static bool s3_iso_expect(const char **p, char ch)
{
    if (**p != ch)
        return false;
    (*p)++;
    return true;
}

static bool s3_iso_leap(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

int s3_parse_iso8601(const char *s, time_t *out)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year, mon, day, hour, min, sec, fraction_digits = 0;
    const char *p = s;
    struct tm tm;
    time_t t;

    if (s == NULL)
        return -EINVAL;
    if (!s3_iso_digits(&p, 4, &year) || !s3_iso_expect(&p, '-') || !s3_iso_digits(&p, 2, &mon) ||
        !s3_iso_expect(&p, '-') || !s3_iso_digits(&p, 2, &day) || !s3_iso_expect(&p, 'T') ||
        !s3_iso_digits(&p, 2, &hour) || !s3_iso_expect(&p, ':') || !s3_iso_digits(&p, 2, &min) ||
        !s3_iso_expect(&p, ':') || !s3_iso_digits(&p, 2, &sec))
        return -EINVAL;
    if (s3_iso_expect(&p, '.')) {
        while (*p >= '0' && *p <= '9') {
            p++;
            fraction_digits++;
        }
        if (fraction_digits < 1 || fraction_digits > 9)
            return -EINVAL;
    }
    if (!s3_iso_expect(&p, 'Z') || *p != '\0')
        return -EINVAL;

    /* timegm() would quietly normalise 2026-02-30 into March; ranges are checked first.  Years
     * before 1970 cannot come from S3, and mtime 0 already means "absent". */
    if (year < 1970 || mon < 1 || mon > 12 || hour > 23 || min > 59 || sec > 59 || day < 1)
        return -EINVAL;
    if (day > mdays[mon - 1] + (mon == 2 && s3_iso_leap(year) ? 1 : 0))
        return -EINVAL;

    memset(&tm, 0, sizeof tm);
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    t = timegm(&tm);
    /* -1 cannot be a valid answer for years >= 1970; it means time_t overflowed. */
    if (t == (time_t)-1)
        return -EINVAL;
    *out = t;
    return 0;
}
