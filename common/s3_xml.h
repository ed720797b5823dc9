/* s3_xml.h: decoding of the S3 XML bodies Wisp reads (libxml2 underneath). */
#ifndef WISP_S3_XML_H
#define WISP_S3_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct s3_list_entry {
    char *key;
    uint64_t size;
    time_t mtime; /* from LastModified; 0 if absent */
};

/* One page of a ListObjectsV2 answer (<ListBucketResult>). */
struct s3_list_page {
    struct s3_list_entry *entries;
    size_t n_entries;
    bool truncated;   /* <IsTruncated>true</IsTruncated> */
    char *next_token; /* <NextContinuationToken>; NULL if absent */
};

/* Returns 0, -ENOMEM, or -EBADMSG with *why set to a static explanation when the body is not a
 * well-formed ListBucketResult (including: truncated without a continuation token, a Contents
 * without Key, a Size that is not a non-negative integer). */
int s3_xml_parse_list(const char *body, size_t len, struct s3_list_page *out, const char **why);
void s3_list_page_free(struct s3_list_page *page);

/* Extracts <Error><Code> and <Message> from an S3 error body into the buffers (NUL-terminated,
 * truncated to fit).  Returns 0, or -EBADMSG (buffers set to "") if the body is not an error
 * document. */
int s3_xml_parse_error(const char *body, size_t len, char *code, size_t code_size, char *message,
                       size_t message_size);

/* Parses an ISO 8601 UTC time as S3 writes it ("2026-11-28T13:00:00.000Z").  Returns 0 or
 * -EINVAL. */
int s3_parse_iso8601(const char *s, time_t *out);

#endif
