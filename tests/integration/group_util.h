/* Helpers shared by the group tests (test_group.c, test_group_objects.c): value builders and
   comparisons that print both sides, a call that waits for its collected value, and the group
   functions the tests set (a dispatch that reverses the chunks, a collect that keeps the last
   result). */
#ifndef FERRY_TEST_GROUP_UTIL_H
#define FERRY_TEST_GROUP_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/object.h"
#include "rpc_harness.h"

/* This worker's name ("?" when RPC is not running). */
const char *group_test_name(void);

/* Compares and releases both; prints them (and the last error) when they differ. */
bool group_test_same(ferry_value *got, ferry_value *want, const char *what);
#define CHECK_VALUE(got, want, what) RANK_CHECK(group_test_same((got), (want), (what)))

/* The collected value of a group call with the default timeout (new reference), or NULL with
   the call's error. */
ferry_value *group_test_run(ferry_group *g, const char *fn, ferry_value *args,
                            ferry_value *kwargs, ferry_dispatch d, ferry_collect c);

/* Lists of ints and doubles (new references). */
ferry_value *group_test_ints(size_t n, const int64_t *v);
ferry_value *group_test_doubles(size_t n, const double *v);
#define INTS(...)                                                                        \
    group_test_ints(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), (int64_t[]){__VA_ARGS__})
#define DOUBLES(...)                                                                     \
    group_test_doubles(sizeof((double[]){__VA_ARGS__}) / sizeof(double), (double[]){__VA_ARGS__})

/* A float64 tensor [rows, cols] holding 0, 1, 2, ... (new reference). */
ferry_tensor *group_test_counting(int64_t rows, int64_t cols);
/* A value of a float64 tensor [rows, cols] of `data`. */
ferry_value *group_test_tensor_of(int64_t rows, int64_t cols, const double *data);
/* A value of t; steals t (NULL gives NULL). */
ferry_value *group_test_tv(ferry_tensor *t);

/* Dispatch: member i gets chunk n-1-i of every tensor and list argument (inputs divide
   evenly), other arguments whole, so results come back in reverse chunk order. */
ferry_status group_test_reverse_dispatch(size_t n, size_t index, const ferry_value *args,
                                         const ferry_value *kwargs, ferry_value **member_args,
                                         ferry_value **member_kwargs, void *user);
/* Collect: [n, the last member's result]. */
ferry_status group_test_last_collect(ferry_value *const *results, size_t n, ferry_value **out,
                                     void *user);

/* A pair of Criterion tests running body on `world` ranks, one on tcp and one on shm, after
   `setup` registered what the ranks run. */
#define GROUP_BOTH(suite, name, world, setup, body, secs)                                 \
    Test(suite##_tcp, name, .timeout = secs)                                              \
    {                                                                                     \
        setup();                                                                          \
        rpc_case_run("tcp", world, body, NULL, secs - 5);                                 \
    }                                                                                     \
    Test(suite##_shm, name, .timeout = secs)                                              \
    {                                                                                     \
        setup();                                                                          \
        rpc_case_run("shm", world, body, NULL, secs - 5);                                 \
    }

#endif
