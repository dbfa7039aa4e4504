/* What the device RPC tests share: tensors counting 0, 1, 2, ... made on a device and the check
   that one arrived intact where it should, the functions that make them on the callee, and a
   call to worker1 with the exact-text check of its error. */
#ifndef FERRY_TEST_DEVICE_UTIL_H
#define FERRY_TEST_DEVICE_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/ferry.h"

/* 0, 1, ..., n-1 as float32 on `device` (new reference), or NULL with the error. */
ferry_tensor *device_test_counting(int64_t n, ferry_device device);
/* True when t is on `device` and holds 0, 1, 2, ... in logical order (NULL: false). */
bool device_test_counts_on(ferry_tensor *t, ferry_device device);
/* make_on(index, n): a counting tensor of n elements on this worker's cuda:index; and the
   same as an async function whose future the function completes. */
ferry_status device_test_make_on(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user);
ferry_future *device_test_async_make_on(const ferry_value *args, const ferry_value *kwargs,
                                        void *user);
/* rpc_sync to worker1 with a 20 s timeout; `args` is stolen. */
ferry_value *device_test_call(const char *fn, ferry_value *args);
/* True when the last error is exactly `want` (else both go to stderr). */
bool device_test_says(const char *want);

#endif
