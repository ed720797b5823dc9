/* test_s3_xml: ListObjectsV2 pages, S3 error documents and ISO 8601 times, good and bad. */
#include "s3_xml.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <libxml/globals.h>
#include <libxml/xmlerror.h>

#include "check.h"

#define XML_DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
#define S3_NS    "http://s3.amazonaws.com/doc/2006-03-01/"

/* A page as radosgw answers GET /bucket?list-type=2&prefix=vol1/ (one line, default namespace). */
static const char rgw_page[] =
    XML_DECL "<ListBucketResult xmlns=\"" S3_NS "\">"
             "<Name>wisp-test</Name><Prefix>vol1/</Prefix><MaxKeys>1000</MaxKeys>"
             "<IsTruncated>false</IsTruncated>"
             "<Contents><Key>vol1/chunk/0000000000000000</Key>"
             "<LastModified>2026-11-28T13:00:00.000Z</LastModified>"
             "<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>4194304</Size>"
             "<StorageClass>STANDARD</StorageClass>"
             "<Owner><ID>wisp</ID><DisplayName>Wisp test user</DisplayName></Owner>"
             "<Type>Normal</Type></Contents>"
             "<Contents><Key>vol1/a&amp;b &lt;c&gt; \xC3\xA9t\xC3\xA9</Key>"
             "<LastModified>2024-02-29T23:59:59Z</LastModified>"
             "<ETag>&quot;x&quot;</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass>"
             "<Type>Normal</Type></Contents>"
             "<Contents><Key>vol1/max</Key><Size>18446744073709551615</Size></Contents>"
             "<KeyCount>3</KeyCount>"
             "<CommonPrefixes><Prefix>vol1/sub/</Prefix></CommonPrefixes>"
             "</ListBucketResult>";

/* A truncated page, pretty-printed, as AWS writes it for the second request of a listing. */
static const char truncated_page[] = XML_DECL
    "\n"
    "<ListBucketResult xmlns=\"" S3_NS "\">\n"
    "  <Name>wisp-test</Name>\n"
    "  <Prefix></Prefix>\n"
    "  <KeyCount>2</KeyCount>\n"
    "  <MaxKeys>2</MaxKeys>\n"
    "  <ContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</ContinuationToken>\n"
    "  <NextContinuationToken>1ZOO1FzXQ+2nEiQVp/Rw==</NextContinuationToken>\n"
    "  <IsTruncated>true</IsTruncated>\n"
    "  <Contents>\n"
    "    <Key>k1</Key>\n"
    "    <!-- comments are allowed anywhere -->\n"
    "    <Size>1</Size>\n"
    "  </Contents>\n"
    "  <Contents>\n"
    "    <Key>k2</Key>\n"
    "    <Size>2</Size>\n"
    "  </Contents>\n"
    "</ListBucketResult>\n";

static const char empty_page[] = XML_DECL "<ListBucketResult xmlns=\"" S3_NS "\">"
                                          "<Name>wisp-test</Name><Prefix>nothing/</Prefix>"
                                          "<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>"
                                          "<IsTruncated>false</IsTruncated></ListBucketResult>";

static bool page_is_zero(const struct s3_list_page *p)
{
    return p->entries == NULL && p->n_entries == 0 && !p->truncated && p->next_token == NULL;
}

/* Runs fn with stderr sent to a scratch file and returns how many bytes it wrote there: libxml2
 * must stay silent whatever the input. */
static long with_stderr_captured(void (*fn)(void *), void *arg)
{
    FILE *scratch = tmpfile();
    struct stat st;
    int saved;

    if (scratch == NULL)
        return -1;
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    dup2(fileno(scratch), STDERR_FILENO);
    fn(arg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    fstat(fileno(scratch), &st);
    fclose(scratch);
    return (long)st.st_size;
}

struct bad_list_call {
    const char *body;
    size_t len;
    struct s3_list_page page;
    const char *why;
    int r;
};

static void bad_list_run(void *arg)
{
    struct bad_list_call *c = arg;

    c->r = s3_xml_parse_list(c->body, c->len, &c->page, &c->why);
}

static void expect_bad_list_len(const char *body, size_t len)
{
    struct bad_list_call c = {.body = body, .len = len};
    int before = check_failures;
    long printed;

    memset(&c.page, 0x5A, sizeof c.page); /* must be reset even on failure */
    printed = with_stderr_captured(bad_list_run, &c);
    CHECK(c.r == -EBADMSG);
    CHECK(c.why != NULL && c.why[0] != '\0');
    CHECK(page_is_zero(&c.page));
    CHECK(printed == 0);
    if (check_failures != before)
        fprintf(stderr, "  ... for body: %.*s\n  why: %s\n", (int)len, body,
                c.why ? c.why : "(null)");
    if (c.r == 0)
        s3_list_page_free(&c.page);
}

static void expect_bad_list(const char *body)
{
    expect_bad_list_len(body, strlen(body));
}

/* A one-Contents page around the given Contents children / root children. */
#define PAGE(root_children)                                                                        \
    XML_DECL "<ListBucketResult xmlns=\"" S3_NS "\">" root_children "</ListBucketResult>"
#define ONE(contents_children)                                                                     \
    PAGE("<IsTruncated>false</IsTruncated><Contents>" contents_children "</Contents>")

static void test_list_rgw_page(void)
{
    struct s3_list_page p;
    const char *why = NULL;

    CHECK(s3_xml_parse_list(rgw_page, strlen(rgw_page), &p, &why) == 0);
    CHECK(p.n_entries == 3);
    CHECK(!p.truncated);
    CHECK(p.next_token == NULL);
    if (p.n_entries == 3) {
        CHECK(strcmp(p.entries[0].key, "vol1/chunk/0000000000000000") == 0);
        CHECK(p.entries[0].size == 4194304);
        CHECK(p.entries[0].mtime == 1795870800);
        CHECK(strcmp(p.entries[1].key, "vol1/a&b <c> \xC3\xA9t\xC3\xA9") == 0);
        CHECK(p.entries[1].size == 0);
        CHECK(p.entries[1].mtime == 1709251199);
        CHECK(strcmp(p.entries[2].key, "vol1/max") == 0);
        CHECK(p.entries[2].size == UINT64_MAX);
        CHECK(p.entries[2].mtime == 0);
    }
    s3_list_page_free(&p);
    CHECK(page_is_zero(&p));
    s3_list_page_free(&p); /* freeing twice is harmless */
    s3_list_page_free(NULL);
}

static void test_list_truncated(void)
{
    struct s3_list_page p;

    CHECK(s3_xml_parse_list(truncated_page, strlen(truncated_page), &p, NULL) == 0);
    CHECK(p.truncated);
    CHECK(p.next_token != NULL && strcmp(p.next_token, "1ZOO1FzXQ+2nEiQVp/Rw==") == 0);
    CHECK(p.n_entries == 2);
    if (p.n_entries == 2) {
        CHECK(strcmp(p.entries[0].key, "k1") == 0 && p.entries[0].size == 1);
        CHECK(strcmp(p.entries[1].key, "k2") == 0 && p.entries[1].size == 2);
    }
    s3_list_page_free(&p);
}

static void test_list_empty(void)
{
    struct s3_list_page p;

    CHECK(s3_xml_parse_list(empty_page, strlen(empty_page), &p, NULL) == 0);
    CHECK(p.n_entries == 0 && !p.truncated && p.next_token == NULL);
    s3_list_page_free(&p);
}

static void test_list_many(void)
{
    /* Enough entries to grow the array several times. */
    GString *xml = g_string_new(XML_DECL "<ListBucketResult><IsTruncated>false</IsTruncated>");
    struct s3_list_page p;

    for (int i = 0; i < 1000; i++)
        g_string_append_printf(xml, "<Contents><Key>k%04d</Key><Size>%d</Size></Contents>", i, i);
    g_string_append(xml, "</ListBucketResult>");
    CHECK(s3_xml_parse_list(xml->str, xml->len, &p, NULL) == 0);
    CHECK(p.n_entries == 1000);
    if (p.n_entries == 1000)
        CHECK(strcmp(p.entries[999].key, "k0999") == 0 && p.entries[999].size == 999);
    s3_list_page_free(&p);
    g_string_free(xml, TRUE);
}

static void test_list_namespaces(void)
{
    static const char no_ns[] = XML_DECL "<ListBucketResult><IsTruncated>false</IsTruncated>"
                                         "<Contents><Key>k</Key><Size>1</Size></Contents>"
                                         "</ListBucketResult>";
    static const char prefixed[] = XML_DECL
        "<s3:ListBucketResult xmlns:s3=\"" S3_NS "\"><s3:IsTruncated>false</s3:IsTruncated>"
        "<s3:Contents><s3:Key>k</s3:Key><s3:Size>1</s3:Size></s3:Contents>"
        "</s3:ListBucketResult>";
    /* An element of another vocabulary that happens to be called Key is not the key. */
    static const char foreign_key[] =
        XML_DECL "<ListBucketResult xmlns=\"" S3_NS "\" xmlns:x=\"urn:x\">"
                 "<IsTruncated>false</IsTruncated>"
                 "<Contents><x:Key>fake</x:Key><Key>real</Key><Size>1</Size></Contents>"
                 "</ListBucketResult>";
    struct s3_list_page p;

    CHECK(s3_xml_parse_list(no_ns, strlen(no_ns), &p, NULL) == 0);
    CHECK(p.n_entries == 1);
    s3_list_page_free(&p);
    CHECK(s3_xml_parse_list(prefixed, strlen(prefixed), &p, NULL) == 0);
    CHECK(p.n_entries == 1 && strcmp(p.entries[0].key, "k") == 0);
    s3_list_page_free(&p);
    CHECK(s3_xml_parse_list(foreign_key, strlen(foreign_key), &p, NULL) == 0);
    CHECK(p.n_entries == 1 && strcmp(p.entries[0].key, "real") == 0);
    s3_list_page_free(&p);

    expect_bad_list(XML_DECL "<ListBucketResult xmlns=\"urn:other\">"
                             "<IsTruncated>false</IsTruncated></ListBucketResult>");
    expect_bad_list(XML_DECL "<ListBucketResult xmlns=\"" S3_NS "\" xmlns:x=\"urn:x\">"
                             "<IsTruncated>false</IsTruncated>"
                             "<Contents><x:Key>fake</x:Key><Size>1</Size></Contents>"
                             "</ListBucketResult>");
    /* Unbound prefix. */
    expect_bad_list(XML_DECL "<s3:ListBucketResult><s3:IsTruncated>false</s3:IsTruncated>"
                             "</s3:ListBucketResult>");
}

static void test_list_malformed(void)
{
    static const char with_nul[] = PAGE("<IsTruncated>false</IsTruncated>"
                                        "<Contents><Key>a\0b</Key><Size>1</Size></Contents>");

    /* Not XML at all, or cut short. */
    expect_bad_list("");
    expect_bad_list("not xml");
    expect_bad_list("<html><body>502 Bad Gateway</body></html>");
    expect_bad_list_len(rgw_page, strlen(rgw_page) / 2);
    expect_bad_list(XML_DECL);
    expect_bad_list(PAGE("<IsTruncated>false</IsTruncated>") "<Trailing/>");
    expect_bad_list(PAGE("<IsTruncated>false</IsTruncated><Contents><Key>k</Key>"));
    expect_bad_list_len(with_nul, sizeof with_nul - 1);

    /* Wrong root. */
    expect_bad_list(XML_DECL "<Error><Code>AccessDenied</Code><Message>no</Message></Error>");
    expect_bad_list(XML_DECL "<ListAllMyBucketsResult><IsTruncated>false</IsTruncated>"
                             "</ListAllMyBucketsResult>");
    expect_bad_list(XML_DECL "<Wrapper><ListBucketResult><IsTruncated>false</IsTruncated>"
                             "</ListBucketResult></Wrapper>");

    /* Size. */
    expect_bad_list(ONE("<Key>k</Key>"));
    expect_bad_list(ONE("<Key>k</Key><Size></Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>-1</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>+1</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size> 1</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>1 </Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>12a</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>0x10</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>1.5</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>1e3</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>18446744073709551616</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>99999999999999999999</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size>1</Size><Size>1</Size>"));
    expect_bad_list(ONE("<Key>k</Key><Size><b>1</b></Size>"));

    /* Key. */
    expect_bad_list(ONE("<Size>1</Size>"));
    expect_bad_list(ONE("<Key></Key><Size>1</Size>"));
    expect_bad_list(ONE("<Key/><Size>1</Size>"));
    expect_bad_list(ONE("<Key>a</Key><Key>b</Key><Size>1</Size>"));
    expect_bad_list(ONE("<Key>a<i>b</i></Key><Size>1</Size>"));
    expect_bad_list(ONE("<Key>a&#0;b</Key><Size>1</Size>"));
    expect_bad_list(ONE("<Key>a&undefined;b</Key><Size>1</Size>"));

    /* LastModified. */
    expect_bad_list(ONE("<Key>k</Key><Size>1</Size><LastModified>yesterday</LastModified>"));
    expect_bad_list(ONE("<Key>k</Key><Size>1</Size><LastModified></LastModified>"));
    expect_bad_list(ONE("<Key>k</Key><Size>1</Size>"
                        "<LastModified>2026-02-30T00:00:00.000Z</LastModified>"));
    expect_bad_list(ONE("<Key>k</Key><Size>1</Size>"
                        "<LastModified>2026-11-28T13:00:00.000Z</LastModified>"
                        "<LastModified>2026-11-28T13:00:00.000Z</LastModified>"));

    /* IsTruncated and the continuation token. */
    expect_bad_list(PAGE(""));
    expect_bad_list(PAGE("<Contents><Key>k</Key><Size>1</Size></Contents>"));
    expect_bad_list(PAGE("<IsTruncated>true</IsTruncated>"));
    expect_bad_list(PAGE("<IsTruncated>true</IsTruncated>"
                         "<NextContinuationToken></NextContinuationToken>"));
    expect_bad_list(PAGE("<IsTruncated>true</IsTruncated>"
                         "<ContinuationToken>only-the-old-one</ContinuationToken>"));
    expect_bad_list(PAGE("<IsTruncated>TRUE</IsTruncated><NextContinuationToken>t"
                         "</NextContinuationToken>"));
    expect_bad_list(PAGE("<IsTruncated>1</IsTruncated>"));
    expect_bad_list(PAGE("<IsTruncated> false</IsTruncated>"));
    expect_bad_list(PAGE("<IsTruncated></IsTruncated>"));
    expect_bad_list(PAGE("<IsTruncated>false</IsTruncated><IsTruncated>false</IsTruncated>"));
    expect_bad_list(PAGE("<IsTruncated>true</IsTruncated>"
                         "<NextContinuationToken>a</NextContinuationToken>"
                         "<NextContinuationToken>b</NextContinuationToken>"));

    /* Stray text. */
    expect_bad_list(PAGE("<IsTruncated>false</IsTruncated>junk"));
    expect_bad_list(ONE("<Key>k</Key>junk<Size>1</Size>"));

    /* DTDs: entity expansion and external entities are refused outright. */
    expect_bad_list(XML_DECL "<!DOCTYPE ListBucketResult [<!ENTITY e \"entity\">]>"
                             "<ListBucketResult><IsTruncated>false</IsTruncated>"
                             "<Contents><Key>&e;</Key><Size>1</Size></Contents>"
                             "</ListBucketResult>");
    expect_bad_list(XML_DECL "<!DOCTYPE ListBucketResult [<!ENTITY e SYSTEM "
                             "\"file:///etc/passwd\">]>"
                             "<ListBucketResult><IsTruncated>false</IsTruncated>"
                             "<Contents><Key>&e;</Key><Size>1</Size></Contents>"
                             "</ListBucketResult>");
    expect_bad_list(XML_DECL "<!DOCTYPE ListBucketResult SYSTEM \"http://127.0.0.1:1/x.dtd\">"
                             "<ListBucketResult><IsTruncated>false</IsTruncated>"
                             "</ListBucketResult>");
    expect_bad_list(XML_DECL "<!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;"
                             "&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]>"
                             "<ListBucketResult><IsTruncated>false</IsTruncated><Contents>"
                             "<Key>&c;</Key><Size>1</Size></Contents></ListBucketResult>");
}

/* S3 writes UTF-8 only.  A declared encoding is ignored (never handed to iconv), so bytes that are
 * not UTF-8 are refused, silently, whatever the declaration says. */
static void test_list_encodings(void)
{
    static const char euc_jp_ok[] = "<?xml version=\"1.0\" encoding=\"EUC-JP\"?>"
                                    "<ListBucketResult><IsTruncated>false</IsTruncated>"
                                    "<Contents><Key>\xC3\xA9</Key><Size>1</Size></Contents>"
                                    "</ListBucketResult>";
    static const char utf16le[] = "\xFF\xFE<\0L\0/\0>\0";
    struct s3_list_page p;

    CHECK(s3_xml_parse_list(euc_jp_ok, strlen(euc_jp_ok), &p, NULL) == 0);
    CHECK(p.n_entries == 1 && strcmp(p.entries[0].key, "\xC3\xA9") == 0);
    s3_list_page_free(&p);

    expect_bad_list("<?xml version=\"1.0\" encoding=\"EUC-JP\"?><ListBucketResult>"
                    "\xFF\xFF\xFF\x74</ListBucketResult>");
    expect_bad_list(PAGE("<IsTruncated>false</IsTruncated>"
                         "<Contents><Key>\xC3</Key><Size>1</Size></Contents>"));
    expect_bad_list_len(utf16le, sizeof utf16le - 1);
}

static void test_handler_saved(void *ctx, const char *msg, ...)
{
}

/* The no-op libxml2 error handlers are installed for one parse only; the program's come back. */
static void test_list_restores_handlers(void)
{
    static const char bad[] = "<?xml version=\"1.0\" encoding=\"EUC-JP\"?><x>\xFF</x>";
    struct s3_list_page p;
    int marker;

    xmlSetGenericErrorFunc(&marker, test_handler_saved);
    CHECK(s3_xml_parse_list(bad, strlen(bad), &p, NULL) == -EBADMSG);
    CHECK(xmlGenericError == test_handler_saved && xmlGenericErrorContext == &marker);
    CHECK(xmlStructuredError == NULL);
    xmlSetGenericErrorFunc(NULL, NULL);
}

struct error_call {
    const char *body;
    char code[32];
    char message[64];
    int r;
};

static void error_run(void *arg)
{
    struct error_call *c = arg;

    c->r = s3_xml_parse_error(c->body, strlen(c->body), c->code, sizeof c->code, c->message,
                              sizeof c->message);
}

static void expect_bad_error(const char *body)
{
    struct error_call c = {.body = body};
    int before = check_failures;

    memset(c.code, 'x', sizeof c.code);
    memset(c.message, 'x', sizeof c.message);
    CHECK(with_stderr_captured(error_run, &c) == 0);
    CHECK(c.r == -EBADMSG);
    CHECK(c.code[0] == '\0' && c.message[0] == '\0');
    if (check_failures != before)
        fprintf(stderr, "  ... for body: %s\n", body);
}

static void test_error_documents(void)
{
    /* radosgw, with its empty Message. */
    static const char rgw[] = XML_DECL
        "<Error><Code>NoSuchKey</Code><Message></Message><BucketName>wisp-test</BucketName>"
        "<RequestId>tx000001d3c8a1e1e0c-0065a1b2c3-1234-default</RequestId>"
        "<HostId>1234-default-default</HostId></Error>";
    static const char aws[] = XML_DECL "\n<Error>\n  <Code>SlowDown</Code>\n"
                                       "  <Message>Please reduce your request rate.</Message>\n"
                                       "  <RequestId>4442587FB7D0A2F9</RequestId>\n</Error>\n";
    static const char no_message[] = "<Error><Code>InternalError</Code></Error>";
    static const char long_message[] =
        "<Error><Code>AVeryLongErrorCodeThatDoesNotFitInTheBuffer</Code><Message>"
        "01234567890123456789012345678901234567890123456789012345678901\xC3\xA9\xC3\xA9"
        "</Message></Error>";
    static const char control[] = "<Error><Code>X</Code><Message>line1\nline2\t&#13;&#127;end"
                                  "</Message></Error>";
    char code[32], message[64], tiny[4];

    CHECK(s3_xml_parse_error(rgw, strlen(rgw), code, sizeof code, message, sizeof message) == 0);
    CHECK(strcmp(code, "NoSuchKey") == 0 && strcmp(message, "") == 0);

    CHECK(s3_xml_parse_error(aws, strlen(aws), code, sizeof code, message, sizeof message) == 0);
    CHECK(strcmp(code, "SlowDown") == 0);
    CHECK(strcmp(message, "Please reduce your request rate.") == 0);

    CHECK(s3_xml_parse_error(no_message, strlen(no_message), code, sizeof code, message,
                             sizeof message) == 0);
    CHECK(strcmp(code, "InternalError") == 0 && message[0] == '\0');

    /* Truncation keeps the NUL and never splits a UTF-8 sequence (62 digits, then two
     * 2-byte characters: the first fits only partly into 63 bytes and is dropped whole). */
    CHECK(s3_xml_parse_error(long_message, strlen(long_message), code, sizeof code, message,
                             sizeof message) == 0);
    CHECK(strlen(code) == sizeof code - 1);
    CHECK(strncmp(code, "AVeryLongErrorCode", 18) == 0);
    CHECK(strlen(message) == 62);
    CHECK(s3_xml_parse_error(no_message, strlen(no_message), tiny, sizeof tiny, NULL, 0) == 0);
    CHECK(strcmp(tiny, "Int") == 0);

    /* Server text goes into logs: no control characters come out. */
    CHECK(s3_xml_parse_error(control, strlen(control), code, sizeof code, message,
                             sizeof message) == 0);
    CHECK(strcmp(message, "line1 line2   end") == 0);

    expect_bad_error("");
    expect_bad_error("Internal Server Error");
    expect_bad_error("<Error><Code>NoSuchKey</Code>");
    expect_bad_error("<Error><Message>no code</Message></Error>");
    expect_bad_error("<Error><Code></Code><Message>empty code</Message></Error>");
    expect_bad_error("<Error><Code>A</Code><Code>B</Code></Error>");
    expect_bad_error("<Error><Code>A<b/></Code></Error>");
    expect_bad_error("<Error xmlns=\"urn:other\"><Code>A</Code></Error>");
    expect_bad_error(empty_page);
}

static void test_iso8601(void)
{
    static const char *const bad[] = {
        "",
        "2026",
        "2026-11-28",
        "2026-11-28T13:00:00",     /* no zone */
        "2026-11-28T13:00:00.000", /* no zone */
        "2026-11-28T13:00:00+00:00",
        "2026-11-28T13:00:00.000z",
        "2026-11-28 13:00:00.000Z",
        "2026-11-28T13:00:00.Z",
        "2026-11-28T13:00:00.0000000000Z", /* 10 fraction digits */
        "2026-11-28T13:00:00.000Zjunk",
        " 2026-11-28T13:00:00Z",
        "2026-11-28T13:00Z",
        "26-11-28T13:00:00Z",
        "+2026-11-28T13:00:00Z",
        "2026-1-28T13:00:00Z",
        "2026-11-28T13:00:0Z",
        "2026-00-28T13:00:00Z",
        "2026-13-28T13:00:00Z",
        "2026-11-00T13:00:00Z",
        "2026-11-31T13:00:00Z",
        "2026-02-29T13:00:00Z", /* not a leap year */
        "2100-02-29T13:00:00Z", /* nor is 2100 */
        "2026-11-28T24:00:00Z",
        "2026-11-28T13:60:00Z",
        "2026-11-28T13:00:60Z", /* S3 never writes leap seconds */
        "1969-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "2026-11-28T1a:00:00Z",
        "2026\357\274\21511-28T13:00:00Z", /* U+FF0D, a fullwidth hyphen */
    };
    time_t t = 42;

    CHECK(s3_parse_iso8601("2026-11-28T13:00:00.000Z", &t) == 0 && t == 1795870800);
    CHECK(s3_parse_iso8601("2026-11-28T13:00:00Z", &t) == 0 && t == 1795870800);
    CHECK(s3_parse_iso8601("2026-11-28T13:00:00.9Z", &t) == 0 && t == 1795870800);
    CHECK(s3_parse_iso8601("2026-11-28T13:00:00.123456789Z", &t) == 0 && t == 1795870800);
    CHECK(s3_parse_iso8601("1970-01-01T00:00:00Z", &t) == 0 && t == 0);
    CHECK(s3_parse_iso8601("2024-02-29T23:59:59Z", &t) == 0 && t == 1709251199);
    CHECK(s3_parse_iso8601("2000-02-29T00:00:00Z", &t) == 0);
    if (sizeof(time_t) >= 8) {
        CHECK(s3_parse_iso8601("2038-01-19T03:14:08Z", &t) == 0 && t == 2147483648LL);
        CHECK(s3_parse_iso8601("9999-12-31T23:59:59.999Z", &t) == 0 && t == 253402300799LL);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r;

        t = 42;
        r = s3_parse_iso8601(bad[i], &t);
        if (r != -EINVAL || t != 42)
            fprintf(stderr, "accepted bad time \"%s\"\n", bad[i]);
        CHECK(r == -EINVAL && t == 42);
    }
    CHECK(s3_parse_iso8601(NULL, &t) == -EINVAL);
}

int main(void)
{
    test_list_rgw_page();
    test_list_truncated();
    test_list_empty();
    test_list_many();
    test_list_namespaces();
    test_list_malformed();
    test_list_encodings();
    test_list_restores_handlers();
    test_error_documents();
    test_iso8601();
    return check_exit_code();
}
