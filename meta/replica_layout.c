/* replica_layout.c: keys and manifest of a replica in the store (replica_internal.h). */
#include "replica.h"
#include "replica_internal.h"

#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool replica_name_valid(const char *name, const char **why)
{
    return name != NULL && meta_disk_name_valid(name, why);
}

double replica_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void replica_prefix(const char *name, char out[REPLICA_KEY_MAX])
{
    snprintf(out, REPLICA_KEY_MAX, REPLICA_ROOT "%s/", name);
}

void replica_key_format(const char *prefix, const struct replica_key *k, char out[REPLICA_KEY_MAX])
{
    switch (k->kind) {
    case REPLICA_KEY_SNAPSHOT:
        snprintf(out, REPLICA_KEY_MAX, "%sgen-%016" PRIx64 "/snapshot.db", prefix, k->gen);
        break;
    case REPLICA_KEY_MANIFEST:
        snprintf(out, REPLICA_KEY_MAX, "%sgen-%016" PRIx64 "/manifest", prefix, k->gen);
        break;
    case REPLICA_KEY_SEGMENT:
        snprintf(out, REPLICA_KEY_MAX,
                 "%sgen-%016" PRIx64 "/seg-%016" PRIx64 "-%016" PRIx64 "-%016" PRIx64 "-%.16s",
                 prefix, k->gen, k->seq, k->from, k->to, k->hash);
        break;
    }
}

/* Reads exactly 16 lower-case hex digits. */
static bool replica_hex16(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    for (int i = 0; i < 16; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

bool replica_key_parse(const char *prefix, const char *key, struct replica_key *out)
{
    size_t n = strlen(prefix);
    const char *p;

    memset(out, 0, sizeof *out);
    if (strncmp(key, prefix, n) != 0)
        return false;
    p = key + n;
    if (strncmp(p, "gen-", 4) != 0 || !replica_hex16(p + 4, &out->gen) || p[20] != '/')
        return false;
    p += 21;
    if (strcmp(p, "snapshot.db") == 0) {
        out->kind = REPLICA_KEY_SNAPSHOT;
        return true;
    }
    if (strcmp(p, "manifest") == 0) {
        out->kind = REPLICA_KEY_MANIFEST;
        return true;
    }
    /* seg-<16>-<16>-<16>-<16> */
    if (strlen(p) != 4 + 4 * 17 - 1 || strncmp(p, "seg-", 4) != 0)
        return false;
    p += 4;
    if (!replica_hex16(p, &out->seq) || p[16] != '-' || !replica_hex16(p + 17, &out->from) ||
        p[33] != '-' || !replica_hex16(p + 34, &out->to) || p[50] != '-')
        return false;
    uint64_t dummy;
    if (!replica_hex16(p + 51, &dummy))
        return false;
    memcpy(out->hash, p + 51, 16);
    out->hash[16] = '\0';
    if (out->to <= out->from)
        return false;
    out->kind = REPLICA_KEY_SEGMENT;
    return true;
}

char *replica_manifest_format(const struct replica_manifest *m)
{
    char *text = NULL;

    if (asprintf(&text,
                 "%s\ngeneration %016" PRIx64 "\nsnapshot-bytes %" PRIu64
                 "\nsnapshot-sha256 %s\npage-size %" PRIu32 "\ncreated %lld\n",
                 REPLICA_MANIFEST_MAGIC, m->gen, m->snapshot_bytes, m->snapshot_sha256,
                 m->page_size, (long long)m->created) < 0)
        return NULL;
    return text;
}

int replica_manifest_parse(const char *text, size_t len, struct replica_manifest *out)
{
    char *copy = malloc(len + 1), *save = NULL, *line;
    unsigned seen = 0;
    int r = 0;

    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, text, len); /* the object's bytes: not NUL-terminated */
    copy[len] = '\0';
    memset(out, 0, sizeof *out);
    line = strtok_r(copy, "\n", &save);
    if (line == NULL || strcmp(line, REPLICA_MANIFEST_MAGIC) != 0) {
        log_error("replica", "manifest: not a Wisp replica manifest (first line '%.40s')",
                  line ? line : "");
        free(copy);
        return -EBADMSG;
    }
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        char name[32], value[80];
        unsigned long long v;
        if (sscanf(line, "%31s %79s", name, value) != 2) {
            r = -EBADMSG;
            break;
        }
        if (strcmp(name, "generation") == 0 && strlen(value) == 16 &&
            replica_hex16(value, &out->gen)) {
            seen |= 1;
        } else if (strcmp(name, "snapshot-bytes") == 0 && sscanf(value, "%llu", &v) == 1) {
            out->snapshot_bytes = v;
            seen |= 2;
        } else if (strcmp(name, "snapshot-sha256") == 0 && strlen(value) == 64) {
            memcpy(out->snapshot_sha256, value, 65);
            seen |= 4;
        } else if (strcmp(name, "page-size") == 0 && sscanf(value, "%llu", &v) == 1 && v >= 512 &&
                   v <= 65536 && (v & (v - 1)) == 0) {
            out->page_size = (uint32_t)v;
            seen |= 8;
        } else if (strcmp(name, "created") == 0 && sscanf(value, "%llu", &v) == 1) {
            out->created = (time_t)v;
        } /* other names: written by a newer Wisp, ignored */
    }
    free(copy);
    if (r == 0 && seen != 15)
        r = -EBADMSG;
    if (r < 0)
        log_error("replica", "manifest: a line is malformed or a field is missing");
    return r;
}
