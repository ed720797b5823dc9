/* unit_check.h: the non-fatal CHECK of the VM layer's unit tests (no QEMU, no fixture).
 *
 * A failed CHECK prints where and why and counts; the test goes on, so that one run shows every
 * failure, and main() ends with unit_check_result(). */
#ifndef WISP_TEST_VM_UNIT_CHECK_H
#define WISP_TEST_VM_UNIT_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* Prints "ok" or "FAILED" and returns main()'s exit status. */
static inline int unit_check_result(void)
{
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}

#endif
