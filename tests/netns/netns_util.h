/* What the two-host programs share: a check that names the program and the failed condition,
   a monotonic clock and an echo function. Define NETNS_PROG (the program's name) first. */
#ifndef FERRY_TEST_NETNS_UTIL_H
#define FERRY_TEST_NETNS_UTIL_H

#include <stdio.h>
#include <time.h>

#include "ferry/ferry.h"

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, NETNS_PROG ": %s failed (%s)\n", #cond, ferry_last_error());   \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* echo(x) returns x. */
static inline ferry_status echo(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    *result = ferry_value_retain(ferry_list_get(args, 0));
    return FERRY_OK;
}

#endif
