/* meta_test.h: the checks the meta unit tests share.  CHECK counts a failure and goes on;
 * REQUIRE stops the test, after test_cleanup(), which each test file defines. */
#ifndef WISP_META_TEST_H
#define WISP_META_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures;
static void test_cleanup(void);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);             \
            test_cleanup();                                                                        \
            exit(EXIT_FAILURE);                                                                    \
        }                                                                                          \
    } while (0)

#define GiB (UINT64_C(1) << 30)

#endif
