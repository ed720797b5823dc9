/* lease.c: disk leases in the object store (lease.h). */
#include "lease.h"

#include "log.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lease {
    struct store *store;
    char disk[160];
    uint64_t generation;
    double ttl;
    double renewed_at; /* monotonic */
};

static char lease_holder[160] = "unknown";
static char lease_instance[40] = "0";
static char lease_owner[40] = "0";

void lease_set_identity(const char *holder, const char *instance, const char *owner)
{
    snprintf(lease_holder, sizeof lease_holder, "%s", holder);
    snprintf(lease_instance, sizeof lease_instance, "%s", instance);
    snprintf(lease_owner, sizeof lease_owner, "%s", owner);
}

static double lease_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void lease_key(const char *disk, uint64_t gen, char *out, size_t size)
{
    snprintf(out, size, "leases/%s/%016" PRIx64, disk, gen);
}

/* The lease object is our own small text, written by lease_format:
 *
 *   [lease]
 *   generation=7
 *   holder=host pid 1234
 *   ...
 *
 * It is parsed here rather than by GKeyFile: GKeyFile's error paths translate their messages
 * (gettext) from whichever thread reads a lease, and under a preloaded ASan runtime that left
 * glibc's setlocale lock with a negative reader count, so nbdkit hung at exit in p11-kit's
 * destructor (seen with a hardware watchpoint on the lock).  Lines are "key=value"; unknown
 * keys are skipped (a newer writer may add some), a repeated known key is an error. */
enum lease_field {
    LEASE_GENERATION,
    LEASE_HOLDER,
    LEASE_INSTANCE,
    LEASE_OWNER,
    LEASE_TTL_MS,
    LEASE_STATE,
    LEASE_FIELDS,
};

static const char *const lease_field_names[LEASE_FIELDS] = {
    "generation", "holder", "instance", "owner", "ttl_ms", "state",
};

/* Splits text into the known fields (pointers into a copy the caller frees).  false if it is
 * not a lease object. */
static bool lease_split(char *text, const char *field[LEASE_FIELDS])
{
    char *line = text, *next;
    bool header = false;

    for (; line != NULL; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] == '\r')
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        if (!header) {
            if (strcmp(line, "[lease]") != 0)
                return false;
            header = true;
            continue;
        }
        char *eq = strchr(line, '=');
        if (eq == NULL || eq == line)
            return false;
        *eq = '\0';
        for (int f = 0; f < LEASE_FIELDS; f++) {
            if (strcmp(line, lease_field_names[f]) != 0)
                continue;
            if (field[f] != NULL)
                return false;
            field[f] = eq + 1;
        }
    }
    return header;
}

static bool lease_parse_u64(const char *text, uint64_t *out)
{
    char *end = NULL;

    if (text == NULL || text[0] < '0' || text[0] > '9')
        return false;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return errno == 0 && *end == '\0';
}

int lease_parse(const void *data, size_t len, struct lease_info *out)
{
    const char *field[LEASE_FIELDS] = {0};
    uint64_t generation, ttl_ms;
    char *text;
    int r = -EBADMSG;

    memset(out, 0, sizeof *out);
    if (len > LEASE_OBJECT_MAX || memchr(data, '\0', len) != NULL)
        return -EBADMSG;
    text = malloc(len + 1);
    if (text == NULL)
        return -ENOMEM;
    memcpy(text, data, len);
    text[len] = '\0';
    if (!lease_split(text, field))
        goto out;
    for (int f = 0; f < LEASE_FIELDS; f++)
        if (field[f] == NULL)
            goto out;
    const char *state = field[LEASE_STATE];
    if (strcmp(state, "held") != 0 && strcmp(state, "released") != 0)
        goto out;
    if (!lease_parse_u64(field[LEASE_GENERATION], &generation) || generation == 0)
        goto out;
    /* Milliseconds as an integer: no locale-dependent number parsing. */
    if (!lease_parse_u64(field[LEASE_TTL_MS], &ttl_ms) || ttl_ms == 0 || ttl_ms >= 1000000000)
        goto out;
    out->found = true;
    out->generation = generation;
    snprintf(out->holder, sizeof out->holder, "%s", field[LEASE_HOLDER]);
    snprintf(out->instance, sizeof out->instance, "%s", field[LEASE_INSTANCE]);
    snprintf(out->owner, sizeof out->owner, "%s", field[LEASE_OWNER]);
    out->ttl = (double)ttl_ms / 1000;
    out->released = strcmp(state, "released") == 0;
    r = 0;
out:
    free(text);
    return r;
}

static char *lease_format(uint64_t gen, double ttl, bool released, size_t *len)
{
    char *text =
        g_strdup_printf("[lease]\ngeneration=%" PRIu64 "\nholder=%s\ninstance=%s\nowner=%s\n"
                        "ttl_ms=%llu\nstate=%s\n",
                        gen, lease_holder, lease_instance, lease_owner,
                        (unsigned long long)(ttl * 1000), released ? "released" : "held");
    *len = strlen(text);
    return text;
}

struct lease_scan {
    uint64_t max;
    bool bad_key;
};

static int lease_scan_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct lease_scan *sc = opaque;
    const char *slash = strrchr(key, '/');
    char *end = NULL;

    errno = 0;
    uint64_t gen = slash ? strtoull(slash + 1, &end, 16) : 0;
    if (!slash || errno || !end || *end || strlen(slash + 1) != 16) {
        sc->bad_key = true;
        return 0;
    }
    if (gen > sc->max)
        sc->max = gen;
    return 0;
}

/* The highest generation under leases/<disk>/ (0 if none). */
static int lease_latest(struct store *st, const char *disk, uint64_t *gen)
{
    char prefix[200];
    struct lease_scan sc = {0};
    int r;

    snprintf(prefix, sizeof prefix, "leases/%s/", disk);
    r = store_list(st, prefix, lease_scan_one, &sc);
    if (r < 0)
        return r;
    if (sc.bad_key)
        log_warn("lease", "%s: keys under %s that are not lease generations: ignored", disk,
                 prefix);
    *gen = sc.max;
    return 0;
}

static int lease_read(struct store *st, const char *disk, uint64_t gen, struct lease_info *out)
{
    char key[200];
    struct store_stat sb;
    void *data = NULL;
    size_t len = 0;
    int r;

    lease_key(disk, gen, key, sizeof key);
    r = store_get(st, key, &data, &len);
    if (r == 0)
        r = store_head(st, key, &sb);
    if (r == 0) {
        r = lease_parse(data, len, out);
        if (r < 0)
            log_error("lease", "%s in %s is not a lease object", key, store_describe(st));
    }
    free(data);
    if (r == 0) {
        out->generation = gen; /* the key is what counts */
        out->age = difftime(time(NULL), sb.mtime);
    }
    return r;
}

int lease_inspect(struct store *st, const char *disk, struct lease_info *out)
{
    uint64_t gen;
    int r = lease_latest(st, disk, &gen);

    memset(out, 0, sizeof *out);
    if (r < 0 || gen == 0)
        return r;
    return lease_read(st, disk, gen, out);
}

/* Creates generation gen: 0, -EEXIST if someone else made it first. */
static int lease_create(struct store *st, const char *disk, uint64_t gen, double ttl)
{
    static bool warned;
    char key[200];
    size_t len;
    char *text = lease_format(gen, ttl, false, &len);
    int r;

    lease_key(disk, gen, key, sizeof key);
    r = store_put_if_absent(st, key, text, len);
    if (r == -ENOTSUP) {
        if (!__atomic_exchange_n(&warned, true, __ATOMIC_RELAXED))
            log_warn("lease",
                     "%s has no conditional create: leases are best effort, and two hosts "
                     "opening one disk at the same moment could both write to it",
                     store_describe(st));
        struct store_stat sb;
        r = store_head(st, key, &sb);
        r = r == 0 ? -EEXIST : r == -ENOENT ? store_put(st, key, text, len) : r;
    }
    g_free(text);
    return r;
}

int lease_acquire(struct store *st, const char *disk, double ttl, bool steal, struct lease **out,
                  struct lease_info *who)
{
    struct lease_info cur;
    uint64_t gen;
    int r;

    memset(who, 0, sizeof *who);
    for (int attempt = 0; attempt < 3; attempt++) {
        r = lease_latest(st, disk, &gen);
        if (r < 0)
            return r;
        memset(&cur, 0, sizeof cur);
        if (gen > 0 && (r = lease_read(st, disk, gen, &cur)) < 0)
            return r;
        bool restarted = gen > 0 && strcmp(cur.owner, lease_owner) == 0 &&
                         strcmp(cur.instance, lease_instance) != 0;
        if (restarted)
            log_info("lease", "%s: taking back the lease of this server's previous run (%s)", disk,
                     cur.holder);
        if (gen > 0 && !cur.released && !restarted && strcmp(cur.instance, lease_instance) != 0) {
            bool expired = cur.age > cur.ttl;
            if (!expired || !steal) {
                *who = cur;
                log_error("lease",
                          "%s is held by %s (generation %" PRIu64 ", renewed %.0f s ago, "
                          "ttl %.0f s)%s",
                          disk, cur.holder, cur.generation, cur.age, cur.ttl,
                          expired ? ": it has expired; take it over with --steal"
                                  : ": refusing a second writer");
                return -EBUSY;
            }
            log_warn("lease", "%s: taking over the expired lease of %s (generation %" PRIu64 ")",
                     disk, cur.holder, cur.generation);
        }
        r = lease_create(st, disk, gen + 1, ttl);
        if (r == -EEXIST)
            continue; /* another host made that generation first: look again */
        if (r < 0)
            return r;
        struct lease *l = g_new0(struct lease, 1);
        l->store = st;
        snprintf(l->disk, sizeof l->disk, "%s", disk);
        l->generation = gen + 1;
        l->ttl = ttl;
        l->renewed_at = lease_now();
        *out = l;
        return 0;
    }
    r = lease_inspect(st, disk, who);
    log_error("lease", "%s: another host keeps taking the lease (now %s)", disk,
              r == 0 ? who->holder : "unknown");
    return -EBUSY;
}

int lease_check(struct lease *l)
{
    uint64_t gen;
    int r = lease_latest(l->store, l->disk, &gen);

    if (r < 0)
        return r;
    if (gen > l->generation) {
        log_error("lease",
                  "%s: fenced: another host took the disk (lease generation %" PRIu64
                  " after ours, %" PRIu64 "); refusing to commit",
                  l->disk, gen, l->generation);
        return -ESTALE;
    }
    return 0;
}

int lease_renew(struct lease *l)
{
    char key[200];
    size_t len;
    int r = lease_check(l);

    if (r < 0)
        return r;
    char *text = lease_format(l->generation, l->ttl, false, &len);
    lease_key(l->disk, l->generation, key, sizeof key);
    r = store_put(l->store, key, text, len);
    g_free(text);
    if (r == 0)
        l->renewed_at = lease_now();
    return r;
}

bool lease_renew_due(const struct lease *l)
{
    return lease_now() - l->renewed_at >= l->ttl / 3;
}

uint64_t lease_generation(const struct lease *l)
{
    return l->generation;
}

void lease_release(struct lease *l)
{
    char key[200];
    size_t len;

    if (!l)
        return;
    if (lease_check(l) == 0) {
        char *text = lease_format(l->generation, l->ttl, true, &len);
        lease_key(l->disk, l->generation, key, sizeof key);
        if (store_put(l->store, key, text, len) < 0)
            log_warn("lease", "%s: cannot mark the lease released: %s", l->disk,
                     store_last_error());
        g_free(text);
    }
    g_free(l);
}
