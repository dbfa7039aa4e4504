/* Helpers shared by the Criterion tests. */
#ifndef FERRY_TEST_UTIL_H
#define FERRY_TEST_UTIL_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <sys/types.h>

#include "ferry/ferry.h"

/* Asserts a status is FERRY_OK, printing the code's text and ferry_last_error() otherwise. */
#define ferry_assert_ok(expr)                                                            \
    do {                                                                                 \
        ferry_status rc__ = (expr);                                                      \
        cr_assert(rc__ == FERRY_OK, "%s failed: %s: %s", #expr, ferry_strerror(rc__),    \
                  ferry_last_error());                                                   \
    } while (0)

/* Asserts a pointer is non-NULL, printing the last error otherwise. */
#define ferry_assert_ptr(expr)                                                           \
    ({                                                                                   \
        __typeof__(expr) p__ = (expr);                                                   \
        cr_assert(p__ != NULL, "%s returned NULL: %s: %s", #expr,                        \
                  ferry_strerror(ferry_last_status()), ferry_last_error());              \
        p__;                                                                             \
    })

/* Asserts that `expr` failed with `code`. */
#define ferry_assert_status(expr, code)                                                  \
    do {                                                                                 \
        ferry_status rc__ = (expr);                                                      \
        cr_assert(rc__ == (code), "%s: expected %s, got %s: %s", #expr,                  \
                  ferry_strerror(code), ferry_strerror(rc__), ferry_last_error());       \
    } while (0)

/* Makes a fresh, empty directory under $TMPDIR (/tmp when unset) whose name starts with `tag`
   and writes its path into buf (cap bytes); fails the test when it cannot. */
void ferry_test_mkdtemp(char *buf, size_t cap, const char *tag);
/* The whole file at `path` in a buffer the caller frees (one spare byte past the end), its
   length in *len; fails the test when the file cannot be read. */
unsigned char *ferry_test_read_file(const char *path, size_t *len);

/* Makes this process emulate n devices (FERRY_EMULATE_DEVICES, read at the first device call:
   call it first in the test body) and asserts that it does. */
void ferry_test_emulate_devices(int n);
/* True when t is on device d (the CPU: any index). */
bool ferry_test_on_device(const ferry_tensor *t, ferry_device d);

/* A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read, close). */
int ferry_test_free_port(void);

/* Forks n children, each running fn(rank, n, arg) and exiting with its return value. Waits for
   all of them until deadline_s; kills the stragglers (by pid) and fails the test if any timed
   out or exited non-zero. Call before any ferry initialization in the parent. */
typedef int (*ferry_test_rank_fn)(int rank, int world_size, void *arg);
void ferry_test_run_ranks(int n, ferry_test_rank_fn fn, void *arg, double deadline_s);

#endif
