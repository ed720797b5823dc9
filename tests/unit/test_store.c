/* test_store.c: the object store client suite, run against one backend.
 *
 *   test_store file            a fresh file:// store in a temporary directory
 *   test_store s3              radosgw from tests/s3/rgw-fixture (WISP_TEST_S3_*), path style
 *   test_store s3-virtual      the same through virtual-host style (BUCKET.localhost)
 *
 * Exits 77 (skip) when the s3 variants have no fixture.  Every object is written under a
 * prefix of its own, removed at the end, pass or fail. */
#include "hash.h"
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static struct store *test_st;
static char test_url[1024];
static char test_tmpdir[256];
static const char *test_backend;

static void test_cleanup(void);

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n  last store error: %s\n", store_last_error());                     \
            test_cleanup();                                                                        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int check_r_ = (expr);                                                                     \
        CHECK(check_r_ == 0, "%s returned %d (%s)", #expr, check_r_, strerror(-check_r_));         \
    } while (0)

static void *test_random_bytes(size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    uint64_t x;

    CHECK(p != NULL, "out of memory");
    CHECK(getrandom(&x, sizeof x, 0) == sizeof x, "getrandom");
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13; /* xorshift: fast and good enough to catch misplaced bytes */
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
    return p;
}

static int test_delete_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct store *st = opaque;
    store_delete(st, key);
    return 0;
}

static void test_cleanup(void)
{
    if (test_st) {
        store_list(test_st, "", test_delete_one, test_st);
        store_close(test_st);
        test_st = NULL;
    }
    if (test_tmpdir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: could not remove %s\n", test_tmpdir);
        test_tmpdir[0] = '\0';
    }
}

static void test_put_get(size_t len)
{
    char key[64], sha[65];
    void *data = test_random_bytes(len), *back;
    size_t back_len;
    struct store_stat sb;

    snprintf(key, sizeof key, "sizes/object-%zu", len);
    CHECK_OK(store_put(test_st, key, data, len));
    CHECK_OK(store_get(test_st, key, &back, &back_len));
    CHECK(back_len == len, "%s: read %zu bytes, wrote %zu", key, back_len, len);
    CHECK(memcmp(back, data, len) == 0, "%s: bytes differ", key);
    CHECK_OK(store_head(test_st, key, &sb));
    CHECK(sb.size == len, "%s: head says %llu bytes", key, (unsigned long long)sb.size);
    CHECK(sb.mtime > 0, "%s: no mtime", key);
    if (strcmp(test_backend, "file") != 0) {
        CHECK_OK(hash_sha256_hex(data, len, sha));
        CHECK(strcmp(sb.sha256, sha) == 0, "%s: recorded sha256 %s, expected %s", key, sb.sha256,
              sha);
    }
    free(back);
    free(data);
    printf("ok put/get/head %zu bytes\n", len);
}

static void test_ranges(void)
{
    const size_t len = 1000;
    unsigned char *data = test_random_bytes(len), buf[2048];
    struct {
        uint64_t offset;
        size_t len, expect;
    } cases[] = {
        {0, 1, 1},       {999, 1, 1},     {999, 10, 1},    {1000, 10, 0}, {5000, 1, 0},
        {0, 1000, 1000}, {0, 2048, 1000}, {500, 250, 250}, {1, 998, 998},
    };
    size_t got;

    CHECK_OK(store_put(test_st, "ranges/obj", data, len));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(buf, 0xAA, sizeof buf);
        CHECK_OK(store_get_range(test_st, "ranges/obj", cases[i].offset, buf, cases[i].len, &got));
        CHECK(got == cases[i].expect, "range %llu+%zu: got %zu, expected %zu",
              (unsigned long long)cases[i].offset, cases[i].len, got, cases[i].expect);
        CHECK(got == 0 || memcmp(buf, data + cases[i].offset, got) == 0,
              "range %llu+%zu: bytes differ", (unsigned long long)cases[i].offset, cases[i].len);
        CHECK(got == sizeof buf || buf[got] == 0xAA, "range %llu+%zu: wrote past what it read",
              (unsigned long long)cases[i].offset, cases[i].len);
    }
    CHECK_OK(store_put(test_st, "ranges/empty", "", 0));
    CHECK_OK(store_get_range(test_st, "ranges/empty", 0, buf, 10, &got));
    CHECK(got == 0, "empty object: range read %zu bytes", got);
    CHECK(store_get_range(test_st, "ranges/missing", 0, buf, 10, &got) == -ENOENT,
          "missing object: range read did not give ENOENT");
    free(data);
    printf("ok ranged reads at the edges\n");
}

/* ---- many keys, many threads ---------------------------------------------------------- */

struct test_worker {
    int first, count;
    size_t size;
    const char *prefix;
    bool verify;
    int result;
};

static void *test_worker_run(void *opaque)
{
    struct test_worker *w = opaque;
    char key[128];

    for (int i = w->first; i < w->first + w->count && w->result == 0; i++) {
        unsigned char *data = test_random_bytes(w->size), *back = NULL;
        size_t back_len = 0;
        snprintf(key, sizeof key, "%s/key-%05d", w->prefix, i);
        w->result = store_put(test_st, key, data, w->size);
        if (w->result == 0 && w->verify) {
            w->result = store_get(test_st, key, (void **)&back, &back_len);
            if (w->result == 0 && (back_len != w->size || memcmp(back, data, w->size) != 0))
                w->result = -EBADMSG;
        }
        free(back);
        free(data);
    }
    return NULL;
}

static void test_run_workers(int n_threads, int n_keys, size_t size, const char *prefix,
                             bool verify)
{
    pthread_t threads[64];
    struct test_worker workers[64];
    int per = (n_keys + n_threads - 1) / n_threads;

    for (int t = 0; t < n_threads; t++) {
        int first = t * per, count = first + per > n_keys ? n_keys - first : per;
        workers[t] = (struct test_worker){first, count > 0 ? count : 0, size, prefix, verify, 0};
        CHECK(pthread_create(&threads[t], NULL, test_worker_run, &workers[t]) == 0, "thread");
    }
    for (int t = 0; t < n_threads; t++) {
        pthread_join(threads[t], NULL);
        CHECK(workers[t].result == 0, "worker %d: %s", t, strerror(-workers[t].result));
    }
}

struct test_listing {
    int count;
    char last[256];
    bool ordered;
    uint64_t bytes;
};

static int test_list_one(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    struct test_listing *l = opaque;

    if (l->count > 0 && strcmp(l->last, key) >= 0)
        l->ordered = false;
    snprintf(l->last, sizeof l->last, "%s", key);
    l->count++;
    l->bytes += size;
    return 0;
}

static int test_list_stop(const char *key, uint64_t size, time_t mtime, void *opaque)
{
    return ++*(int *)opaque == 10 ? 42 : 0;
}

static void test_many_keys(void)
{
    struct test_listing l = {.ordered = true};
    int seen = 0;

    test_run_workers(16, 1500, 10, "many", false);
    CHECK_OK(store_list(test_st, "many/", test_list_one, &l));
    CHECK(l.count == 1500, "listed %d keys, wrote 1500", l.count);
    CHECK(l.ordered, "keys not in byte order");
    CHECK(l.bytes == 15000, "listed sizes sum to %llu", (unsigned long long)l.bytes);
    CHECK(strcmp(l.last, "many/key-01499") == 0, "last key %s", l.last);

    l = (struct test_listing){.ordered = true};
    CHECK_OK(store_list(test_st, "many/key-012", test_list_one, &l));
    CHECK(l.count == 100, "prefix many/key-012 listed %d keys", l.count);
    l = (struct test_listing){.ordered = true};
    CHECK_OK(store_list(test_st, "many/nothing", test_list_one, &l));
    CHECK(l.count == 0, "prefix many/nothing listed %d keys", l.count);
    CHECK(store_list(test_st, "many/", test_list_stop, &seen) == 42,
          "a callback's non-zero return must stop the listing and be returned");
    CHECK(seen == 10, "listing went on after the stop (%d)", seen);
    printf("ok 1500 keys listed in order, with pagination\n");
}

static void test_concurrent(void)
{
    struct store_stats before, after;

    store_get_stats(test_st, &before);
    test_run_workers(32, 32 * 4, 256 * 1024, "concurrent", true);
    store_get_stats(test_st, &after);
    if (strcmp(test_backend, "file") != 0)
        CHECK(after.connections - before.connections <= 16,
              "%llu connections opened for 256 requests with max_connections 16",
              (unsigned long long)(after.connections - before.connections));
    printf("ok 32 concurrent transfers (%llu new connections)\n",
           (unsigned long long)(after.connections - before.connections));
}

static void test_conditional(void)
{
    void *back;
    size_t len;

    CHECK_OK(store_put_if_absent(test_st, "cond/one", "first", 5));
    CHECK(!store_put_found_existing(NULL), "a fresh conditional create found an object");
    /* The same bytes again: EEXIST (file), or success that says it found them (S3). */
    struct store_stat sb = {0};
    int r = store_put_if_absent(test_st, "cond/one", "first", 5);
    CHECK(r == -EEXIST || (r == 0 && store_put_found_existing(&sb) && sb.size == 5),
          "conditional create of the same bytes: %d, found %d", r, store_put_found_existing(NULL));
    CHECK(store_put_if_absent(test_st, "cond/one", "second", 6) == -EEXIST,
          "second conditional create must give EEXIST");
    CHECK_OK(store_get(test_st, "cond/one", &back, &len));
    CHECK(len == 5 && memcmp(back, "first", 5) == 0, "conditional create overwrote");
    free(back);
    printf("ok conditional create\n");
}

/* The hashed variants: a caller's SHA-256 is used, not recomputed (so a wrong one must be
 * refused by the server, never stored), and a GET hands back the hash it checked. */
static void test_hashed(void)
{
    const size_t len = 1 << 20;
    uint8_t sha[32], wrong[32], got[32];
    void *data = test_random_bytes(len), *back;
    size_t back_len;

    CHECK_OK(hash_sha256(data, len, sha));
    CHECK_OK(store_put_hashed(test_st, "hashed/right", data, len, sha, true));
    memset(got, 0, sizeof got);
    CHECK_OK(store_get_hashed(test_st, "hashed/right", &back, &back_len, got));
    CHECK(back_len == len && memcmp(back, data, len) == 0, "hashed put/get: bytes differ");
    CHECK(memcmp(got, sha, sizeof sha) == 0, "store_get_hashed returned a wrong SHA-256");
    free(back);
    if (strcmp(test_backend, "file") != 0) {
        struct store_stat sb;
        memcpy(wrong, sha, sizeof wrong);
        wrong[0] ^= 1;
        CHECK(store_put_hashed(test_st, "hashed/wrong", data, len, wrong, false) < 0,
              "a PUT signed with a wrong SHA-256 was accepted");
        CHECK(store_head(test_st, "hashed/wrong", &sb) == -ENOENT,
              "a PUT signed with a wrong SHA-256 left an object");
    }
    free(data);
    printf("ok hashed put/get\n");
}

static void test_delete_and_missing(void)
{
    struct store_stat sb;
    void *back;
    size_t len;

    CHECK_OK(store_put(test_st, "del/x", "abc", 3));
    CHECK_OK(store_put(test_st, "del/x", "abcd", 4)); /* overwrite */
    CHECK_OK(store_head(test_st, "del/x", &sb));
    CHECK(sb.size == 4, "overwrite: size %llu", (unsigned long long)sb.size);
    CHECK_OK(store_delete(test_st, "del/x"));
    CHECK(store_head(test_st, "del/x", &sb) == -ENOENT, "head after delete");
    CHECK(store_get(test_st, "del/x", &back, &len) == -ENOENT, "get after delete");
    CHECK(strstr(store_last_error(), "del/x") != NULL, "the error must name the key: %s",
          store_last_error());
    CHECK_OK(store_delete(test_st, "del/x")); /* deleting a missing object succeeds */
    printf("ok delete, missing objects\n");
}

static void test_bad_keys(void)
{
    const char *bad[] = {"",  "/x",  "x/",   "a//b", "a/../b", "..",
                         ".", "a b", "a\nb", "%2F",  ".tmp/x", "caf\xc3\xa9"};
    char long_key[1100];
    void *back;
    size_t len;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(store_put(test_st, bad[i], "x", 1) == -EINVAL, "key '%s' must be refused", bad[i]);
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    CHECK(store_get(test_st, long_key, &back, &len) == -EINVAL, "a 1099-byte key");
    CHECK(strstr(store_last_error(), "invalid key") != NULL, "message: %s", store_last_error());
    printf("ok invalid keys refused\n");
}

/* ---- S3 only -------------------------------------------------------------------------- */

static void test_wrong_credentials(const char *endpoint, const char *bucket)
{
    char path[] = "/tmp/wisp-creds-XXXXXX", url[512];
    struct store_options o;
    struct store *bad;
    void *back;
    size_t len;
    int fd = mkstemp(path);

    CHECK(fd >= 0, "mkstemp");
    dprintf(fd, "[default]\naws_access_key_id = WRONGKEY\naws_secret_access_key = WRONGSECRET\n");
    close(fd);
    store_options_init(&o);
    o.credentials_file = path;
    snprintf(url, sizeof url, "s3://%s/?endpoint=%s", bucket, endpoint);
    CHECK_OK(store_open(url, &o, &bad));
    int r = store_get(bad, "sizes/object-1", &back, &len);
    unlink(path);
    CHECK(r == -EACCES, "wrong credentials gave %d, not EACCES", r);
    CHECK(strstr(store_last_error(), "403") && strstr(store_last_error(), "sizes/object-1"),
          "the message must give the status and the object: %s", store_last_error());
    printf("ok wrong credentials: %s\n", store_last_error());
    store_close(bad);
}

static void test_missing_bucket(const char *endpoint)
{
    char url[512];
    struct store *st;
    void *back;
    size_t len;

    snprintf(url, sizeof url, "s3://no-such-bucket-wisp?endpoint=%s", endpoint);
    CHECK_OK(store_open(url, NULL, &st));
    CHECK(store_get(st, "x", &back, &len) == -ENOENT, "missing bucket must give ENOENT");
    CHECK(strstr(store_last_error(), "NoSuchBucket"), "message: %s", store_last_error());
    store_close(st);
    printf("ok missing bucket: %s\n", store_last_error());
}

int main(int argc, char **argv)
{
    const char *endpoint = getenv("WISP_TEST_S3_ENDPOINT");
    const char *bucket = getenv("WISP_TEST_S3_BUCKET");
    struct store_options o;
    uint32_t nonce;

    if (argc != 2) {
        fprintf(stderr, "usage: %s file|s3|s3-virtual\n", argv[0]);
        return 2;
    }
    test_backend = argv[1];
    CHECK(getrandom(&nonce, sizeof nonce, 0) == sizeof nonce, "getrandom");
    if (strcmp(test_backend, "file") == 0) {
        snprintf(test_tmpdir, sizeof test_tmpdir, "/tmp/wisp-test-store-XXXXXX");
        CHECK(mkdtemp(test_tmpdir), "mkdtemp");
        snprintf(test_url, sizeof test_url, "file://%s/store", test_tmpdir);
    } else {
        if (!endpoint || !bucket) {
            fprintf(stderr, "skip: WISP_TEST_S3_ENDPOINT is not set (tests/s3/rgw-fixture)\n");
            return 77;
        }
        if (strcmp(test_backend, "s3-virtual") == 0) {
            endpoint = getenv("WISP_TEST_S3_VHOST_ENDPOINT");
            CHECK(endpoint, "WISP_TEST_S3_VHOST_ENDPOINT is not set");
        }
        snprintf(test_url, sizeof test_url, "s3://%s/client-%d-%08x?endpoint=%s&style=%s", bucket,
                 (int)getpid(), nonce, endpoint,
                 strcmp(test_backend, "s3-virtual") == 0 ? "virtual" : "path");
    }
    store_options_init(&o);
    o.max_connections = 16;
    CHECK_OK(store_open(test_url, &o, &test_st));
    printf("store %s\n", store_describe(test_st));

    test_put_get(0);
    test_put_get(1);
    test_put_get(4 << 20);
    test_put_get(64 << 20);
    test_ranges();
    test_conditional();
    test_hashed();
    test_delete_and_missing();
    test_bad_keys();
    test_concurrent();
    if (strcmp(test_backend, "s3-virtual") != 0)
        test_many_keys(); /* once per server is enough */
    if (strcmp(test_backend, "s3") == 0) {
        test_wrong_credentials(endpoint, bucket);
        test_missing_bucket(endpoint);
    }
    test_cleanup();
    printf("all passed\n");
    return 0;
}
