/* replica_internal.h: the store layout of a replica (replica.h), shared by the shipping side
 * (replica.c) and restore (replica_restore.c).  Not for other files. */
#ifndef WISP_REPLICA_INTERNAL_H
#define WISP_REPLICA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define REPLICA_ROOT           "meta/" /* every replica lives below, under its name */
#define REPLICA_KEY_MAX        512
#define REPLICA_WAL_HEADER     32
#define REPLICA_FRAME_HEADER   24
#define REPLICA_MANIFEST_MAGIC "wisp-meta-replica 1"

enum replica_key_kind {
    REPLICA_KEY_SNAPSHOT,
    REPLICA_KEY_MANIFEST,
    REPLICA_KEY_SEGMENT,
};

struct replica_key {
    enum replica_key_kind kind;
    uint64_t gen;
    uint64_t seq, from, to; /* segments */
    char hash[17];          /* segments: first 16 hex digits of the SHA-256 of the bytes */
};

/* "meta/<name>/" into out. */
void replica_prefix(const char *name, char out[REPLICA_KEY_MAX]);
/* The key of a generation's snapshot or manifest, or of a segment (k->kind says which). */
void replica_key_format(const char *prefix, const struct replica_key *k, char out[REPLICA_KEY_MAX]);
/* Parses a key found under prefix (the prefix included).  false for any other shape. */
bool replica_key_parse(const char *prefix, const char *key, struct replica_key *out);

/* The manifest: a few "name value" lines after the magic line. */
struct replica_manifest {
    uint64_t gen;
    uint64_t snapshot_bytes;
    char snapshot_sha256[65];
    uint32_t page_size;
    time_t created;
};
/* A malloc'd text (free()), or NULL. */
char *replica_manifest_format(const struct replica_manifest *m);
/* 0, or -EBADMSG (logged) when the text is not a valid manifest. */
int replica_manifest_parse(const char *text, size_t len, struct replica_manifest *out);

double replica_now(void);

#endif
