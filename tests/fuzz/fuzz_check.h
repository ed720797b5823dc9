/* fuzz_check.h: contract checks inside the fuzz harnesses.
 *
 * A broken promise of a header (a field left NULL, a result out of range) is as much a bug as a
 * crash, so it aborts: libFuzzer then saves the input like any other crash. */
#ifndef WISP_FUZZ_CHECK_H
#define WISP_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: contract broken: %s\n", __FILE__, __LINE__, #cond);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
