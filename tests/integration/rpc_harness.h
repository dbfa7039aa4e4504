/* Helpers for multi-worker RPC tests: each rank is a forked process that joins through env://
   on a free loopback port with the transport under test. */
#ifndef FERRY_TEST_RPC_HARNESS_H
#define FERRY_TEST_RPC_HARNESS_H

#include "test_util.h"

typedef struct {
    const char *transport; /* "tcp" or "shm" */
    int port;
    void *user;
} rpc_case;

/* Sets the env:// variables for `rank` of `world` and joins as "worker<rank>". 0 on success. */
int rpc_case_join(const rpc_case *c, int rank, int world);
/* Runs body(rank, world, c) on `world` forked ranks with a fresh port; each rank joins first
   and shuts down gracefully after body returns 0. */
typedef int (*rpc_body)(int rank, int world, const rpc_case *c);
void rpc_case_run(const char *transport, int world, rpc_body body, void *user, double deadline_s);

/* Functions several test files register: echo(x) returns x (or the whole argument list when it
   is not one item); sleep(seconds) sleeps and returns "slept"; whoami() names the worker. */
ferry_status rpc_test_echo(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                           void *user);
ferry_status rpc_test_sleep(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user);
/* whoami() returns the name of the worker it runs on. */
ferry_status rpc_test_whoami(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user);
/* Sets FERRY_AUTH_TOKEN to a value of this test case's own; call before forking the ranks
   (rpc_case_run does). */
void rpc_test_set_token(void);
/* Monotonic seconds. */
double rpc_test_now_s(void);

/* In a rank: prints where a check failed and makes the rank exit non-zero. */
#define RANK_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s: %s)\n", __FILE__,   \
                    __LINE__, #cond, ferry_strerror(ferry_last_status()),                 \
                    ferry_last_error());                                                  \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

#endif
