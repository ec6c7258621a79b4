/* CHECK / CHECK_STATUS for the C ABI tests: count failures and say where, with the status name
 * and the last error message; each test returns non-zero when `failures` is not 0. */
#ifndef MEDREGION_TEST_CHECK_H
#define MEDREGION_TEST_CHECK_H

#include <stdio.h>

#include "medregion.h"

static int failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

#define CHECK_STATUS(expr, want)                                                          \
    do {                                                                                  \
        mr_status s_ = (expr);                                                            \
        if (s_ != (want)) {                                                               \
            fprintf(stderr, "%s:%d: %s returned %s (%u), expected %s; last error: %s\n", \
                    __FILE__, __LINE__, #expr, mr_status_name(s_), (unsigned)s_, #want,   \
                    mr_last_error_message());                                             \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

#endif
