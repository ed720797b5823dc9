/* store_bench.c: throughput of the object store client (common/store.h), for scripts/bench.
 *
 *   wisp-store-bench --store URL --op put|get|delete --size BYTES --count N --parallel P
 *                    [--prefix PREFIX]
 *
 * P threads share one struct store, opened with max_connections = P, and work through the keys
 * PREFIX/obj-000000 .. PREFIX/obj-(N-1), each thread taking the next key when it is done with
 * one.  Object contents are random but deterministic: they are a function of the key alone, so
 * `get` checks every byte against what `put` wrote without anything kept between the two runs.
 *
 *   put     generates all N objects before the clock starts, then writes them.
 *   get     reads them back (run put first); the bytes are compared after the clock stops.
 *   delete  removes them.
 *
 * Prints one line on stdout, for scripts to parse:
 *
 *   op=put size=65536 count=400 parallel=16 seconds=1.234 objects_per_s=324.1 mib_per_s=20.3
 *     requests=400 retries=0 connections=16
 *
 * (one line; the last three are the store's counters).  Exits 1 on any failed request or wrong
 * byte, naming the key, and 2 on a usage error. */
#include "store.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum bench_op {
    BENCH_PUT,
    BENCH_GET,
    BENCH_DELETE,
};

static const char *bench_op_to_string(enum bench_op op)
{
    switch (op) {
    case BENCH_PUT:
        return "put";
    case BENCH_GET:
        return "get";
    case BENCH_DELETE:
        return "delete";
    }
    return "?";
}

struct bench {
    struct store *st;
    enum bench_op op;
    size_t size;
    unsigned count;
    const char *prefix;

    void **data;  /* put: the contents to write; get: what came back */
    size_t *lens; /* get: the length of each answer */

    unsigned next; /* the next object to take, shared by the threads (atomic) */
    int failed;    /* set once any request failed (atomic) */
};

/* ---- deterministic content ---------------------------------------------------------------- */

static void bench_key(const struct bench *b, unsigned i, char *key, size_t key_size)
{
    snprintf(key, key_size, "%s/obj-%06u", b->prefix, i);
}

/* splitmix64: one step gives a well-mixed 64-bit value from a counter. */
static uint64_t bench_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Fills buf with len bytes that depend only on key: xorshift64 seeded from the key's FNV-1a
 * hash.  A few GB/s, and any misplaced or stale block shows up as a mismatch. */
static void bench_fill(const char *key, void *buf, size_t len)
{
    uint64_t x = 0xcbf29ce484222325ULL;
    unsigned char *p = buf;
    size_t i;

    for (const char *c = key; *c; c++)
        x = (x ^ (unsigned char)*c) * 0x100000001b3ULL;
    x = bench_mix(x);
    if (x == 0)
        x = 1;
    for (i = 0; i + 8 <= len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(p + i, &x, len - i); /* the tail, 0 to 7 bytes */
}

/* ---- the timed part ------------------------------------------------------------------------ */

static void *bench_worker(void *opaque)
{
    struct bench *b = opaque;
    char key[1100];

    for (;;) {
        if (__atomic_load_n(&b->failed, __ATOMIC_RELAXED))
            break;
        unsigned i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->count)
            break;
        bench_key(b, i, key, sizeof key);

        int r;
        switch (b->op) {
        case BENCH_PUT:
            r = store_put(b->st, key, b->data[i], b->size);
            break;
        case BENCH_GET:
            r = store_get(b->st, key, &b->data[i], &b->lens[i]);
            break;
        case BENCH_DELETE:
        default:
            r = store_delete(b->st, key);
            break;
        }
        if (r < 0) {
            /* store_last_error() belongs to this thread: print it here. */
            fprintf(stderr, "wisp-store-bench: %s %s: %s: %s\n", bench_op_to_string(b->op), key,
                    strerror(-r), store_last_error());
            __atomic_store_n(&b->failed, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    return NULL;
}

static double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the workers; returns the elapsed seconds, or a negative value if a thread could not
 * start. */
static double bench_run(struct bench *b, unsigned parallel)
{
    pthread_t *threads = calloc(parallel, sizeof *threads);
    unsigned started = 0;
    double t0, t1;

    if (!threads) {
        fprintf(stderr, "wisp-store-bench: out of memory\n");
        return -1;
    }
    t0 = bench_now();
    for (; started < parallel; started++) {
        int e = pthread_create(&threads[started], NULL, bench_worker, b);
        if (e) {
            fprintf(stderr, "wisp-store-bench: pthread_create: %s\n", strerror(e));
            __atomic_store_n(&b->failed, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    t1 = bench_now();
    free(threads);
    return started == parallel ? t1 - t0 : -1;
}

/* get: compares every answer with the content put wrote.  Returns the number of bad objects. */
static unsigned bench_verify(struct bench *b)
{
    unsigned char *want = malloc(b->size ? b->size : 1);
    unsigned bad = 0;
    char key[1100];

    if (!want) {
        fprintf(stderr, "wisp-store-bench: out of memory\n");
        return b->count;
    }
    for (unsigned i = 0; i < b->count; i++) {
        bench_key(b, i, key, sizeof key);
        if (b->lens[i] != b->size) {
            fprintf(stderr, "wisp-store-bench: get %s: %zu bytes, expected %zu\n", key, b->lens[i],
                    b->size);
            bad++;
            continue;
        }
        bench_fill(key, want, b->size);
        if (memcmp(b->data[i], want, b->size) != 0) {
            fprintf(stderr,
                    "wisp-store-bench: get %s: the content differs from what put "
                    "wrote\n",
                    key);
            bad++;
        }
    }
    free(want);
    return bad;
}

/* ---- command line -------------------------------------------------------------------------- */

static void bench_usage(FILE *f)
{
    fprintf(
        f, "Usage: wisp-store-bench --store URL --op put|get|delete --size BYTES --count N\n"
           "                        --parallel P [--prefix PREFIX]\n"
           "\n"
           "Measures object store client throughput: P threads share one store (opened with\n"
           "max_connections = P) and put, get or delete the N objects PREFIX/obj-%%06d of BYTES\n"
           "bytes each.  Contents are deterministic per key, so get verifies every byte that\n"
           "put wrote.  Run put before get.\n"
           "\n"
           "  --store URL      file:///dir or s3://bucket[/prefix]?endpoint=URL&region=R\n"
           "  --op OP          put, get or delete\n"
           "  --size BYTES     object size (put and get); a K, M or G suffix multiplies by 1024^n\n"
           "  --count N        number of objects\n"
           "  --parallel P     threads and connections (default 1)\n"
           "  --prefix PREFIX  key prefix (default \"bench\")\n"
           "\n"
           "Prints: op=OP size=BYTES count=N parallel=P seconds=S objects_per_s=X mib_per_s=Y\n"
           "        requests=R retries=T connections=C\n"
           "Exits 0 on success, 1 on a failed request or wrong content, 2 on a usage error.\n");
}

static int bench_parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -1;
    switch (*end) {
    case 'G':
    case 'g':
        v *= 1024;
        /* fall through */
    case 'M':
    case 'm':
        v *= 1024;
        /* fall through */
    case 'K':
    case 'k':
        v *= 1024;
        end++;
        break;
    }
    if (*end || v > SIZE_MAX / 2)
        return -1;
    *out = (size_t)v;
    return 0;
}

static int bench_parse_uint(const char *s, unsigned *out, unsigned min)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < min || v > 1000000000UL)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"store", required_argument, NULL, 's'},    {"op", required_argument, NULL, 'o'},
        {"size", required_argument, NULL, 'z'},     {"count", required_argument, NULL, 'n'},
        {"parallel", required_argument, NULL, 'p'}, {"prefix", required_argument, NULL, 'x'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    struct bench b = {.prefix = "bench"};
    const char *url = NULL, *op = NULL;
    unsigned parallel = 1;
    bool have_size = false, have_count = false;
    int c, status = 1;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            url = optarg;
            break;
        case 'o':
            op = optarg;
            break;
        case 'z':
            if (bench_parse_size(optarg, &b.size) < 0) {
                fprintf(stderr, "wisp-store-bench: --size: not a size: %s\n", optarg);
                return 2;
            }
            have_size = true;
            break;
        case 'n':
            if (bench_parse_uint(optarg, &b.count, 1) < 0) {
                fprintf(stderr, "wisp-store-bench: --count: not a positive number: %s\n", optarg);
                return 2;
            }
            have_count = true;
            break;
        case 'p':
            if (bench_parse_uint(optarg, &parallel, 1) < 0 || parallel > 1024) {
                fprintf(stderr, "wisp-store-bench: --parallel: 1 to 1024, not %s\n", optarg);
                return 2;
            }
            break;
        case 'x':
            b.prefix = optarg;
            break;
        case 'h':
            bench_usage(stdout);
            return 0;
        default:
            bench_usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !url || !op || !have_count) {
        fprintf(stderr, "wisp-store-bench: --store, --op and --count are required\n");
        bench_usage(stderr);
        return 2;
    }
    if (strcmp(op, "put") == 0)
        b.op = BENCH_PUT;
    else if (strcmp(op, "get") == 0)
        b.op = BENCH_GET;
    else if (strcmp(op, "delete") == 0)
        b.op = BENCH_DELETE;
    else {
        fprintf(stderr, "wisp-store-bench: --op must be put, get or delete, not %s\n", op);
        return 2;
    }
    if (b.op != BENCH_DELETE && !have_size) {
        fprintf(stderr, "wisp-store-bench: --size is required for %s\n", op);
        return 2;
    }
    if (parallel > b.count)
        parallel = b.count;

    /* Check one key now, so a bad prefix is a usage error rather than N failed requests. */
    char key[1100];
    const char *why;
    bench_key(&b, b.count - 1, key, sizeof key);
    if (!store_key_valid(key, &why)) {
        fprintf(stderr, "wisp-store-bench: --prefix gives invalid keys (%s): %s\n", key, why);
        return 2;
    }

    struct store_options opts;
    store_options_init(&opts);
    opts.max_connections = parallel;
    int r = store_open(url, &opts, &b.st);
    if (r < 0) {
        fprintf(stderr, "wisp-store-bench: %s: %s\n", url, store_last_error());
        return 1;
    }

    if (b.op != BENCH_DELETE) {
        b.data = calloc(b.count, sizeof *b.data);
        b.lens = calloc(b.count, sizeof *b.lens);
        if (!b.data || !b.lens) {
            fprintf(stderr, "wisp-store-bench: out of memory\n");
            goto out;
        }
    }
    if (b.op == BENCH_PUT) {
        for (unsigned i = 0; i < b.count; i++) {
            b.data[i] = malloc(b.size ? b.size : 1);
            if (!b.data[i]) {
                fprintf(stderr, "wisp-store-bench: out of memory for %u objects of %zu bytes\n",
                        b.count, b.size);
                goto out;
            }
            bench_key(&b, i, key, sizeof key);
            bench_fill(key, b.data[i], b.size);
        }
    }

    double seconds = bench_run(&b, parallel);
    if (seconds < 0 || b.failed)
        goto out;
    if (b.op == BENCH_GET) {
        unsigned bad = bench_verify(&b);
        if (bad) {
            fprintf(stderr, "wisp-store-bench: %u of %u objects came back wrong\n", bad, b.count);
            goto out;
        }
    }

    struct store_stats stats;
    store_get_stats(b.st, &stats);
    double bytes = b.op == BENCH_DELETE ? 0 : (double)b.size * b.count;
    printf("op=%s size=%zu count=%u parallel=%u seconds=%.3f objects_per_s=%.1f mib_per_s=%.1f "
           "requests=%" PRIu64 " retries=%" PRIu64 " connections=%" PRIu64 "\n",
           bench_op_to_string(b.op), b.op == BENCH_DELETE ? 0 : b.size, b.count, parallel, seconds,
           b.count / seconds, bytes / seconds / (1024.0 * 1024.0), stats.requests, stats.retries,
           stats.connections);
    status = fflush(stdout) == 0 ? 0 : 1;

out:
    if (b.data) {
        for (unsigned i = 0; i < b.count; i++)
            free(b.data[i]);
    }
    free(b.data);
    free(b.lens);
    store_close(b.st);
    return status;
}
