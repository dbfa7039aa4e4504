/* Helpers the distributed autograd tests share (test_dist_autograd*.c and
   tests/fault/dist_autograd_fault.c): tensors in and out of argument lists, leaves, and the
   checks every file makes. */
#ifndef FERRY_TEST_DIST_UTIL_H
#define FERRY_TEST_DIST_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/ops.h"
#include "rpc_harness.h"

/* SHAPE(2, 3) expands to the (ndim, sizes) pair of tensor constructors. */
#define SHAPE(...)                                                                        \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]) { __VA_ARGS__ }

/* One test per transport; each file defines register_all() for the functions its ranks need. */
#define DA_BOTH(name, world, body, secs)                                                  \
    Test(dist_autograd_tcp, name, .timeout = secs)                                        \
    {                                                                                     \
        register_all();                                                                   \
        rpc_case_run("tcp", world, body, NULL, secs - 5);                                 \
    }                                                                                     \
    Test(dist_autograd_shm, name, .timeout = secs)                                        \
    {                                                                                     \
        register_all();                                                                   \
        rpc_case_run("shm", world, body, NULL, secs - 5);                                 \
    }

/* Argument i of a call, as a tensor (borrowed). */
ferry_tensor *da_arg(const ferry_value *args, size_t i);
/* A function's tensor result: steals t; fails with the last error when t is NULL. */
ferry_status da_put_tensor(ferry_value **result, ferry_tensor *t);
/* A new leaf that requires grad, with the values of `values`. */
ferry_tensor *da_leaf_copy(ferry_tensor *values);
void da_release_all(ferry_tensor **t, size_t n);
/* Whether rc is FERRY_EINVAL with a message containing `text` (says what it got if not). */
bool da_error_is(ferry_status rc, const char *text);
/* square(x) = x * x, registered by several files. */
ferry_status da_square_fn(const ferry_value *args, const ferry_value *kwargs,
                          ferry_value **result, void *user);

#endif
