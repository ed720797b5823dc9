/* check.h: the one assertion macro of the parser tests.
 *
 * CHECK() reports and counts a failure but carries on, so one run shows every broken case;
 * check_exit_code() turns the count into the exit status meson expects. */
#ifndef WISP_TEST_CHECK_H
#define WISP_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

static inline int check_exit_code(void)
{
    if (check_failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", check_failures);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}

#endif
