/* Helpers shared by the future tests. */
#ifndef FERRY_TEST_FUTURE_UTIL_H
#define FERRY_TEST_FUTURE_UTIL_H

#include "ferry/future.h"

/* Futures [from, to) of an array, completed with no value by one thread. */
typedef struct {
    ferry_future **futures;
    int from, to;
} complete_range;

static inline void *complete_range_main(void *arg)
{
    complete_range *r = arg;
    for (int i = r->from; i < r->to; i++)
        ferry_future_set_value(r->futures[i], NULL);
    return NULL;
}

#endif
