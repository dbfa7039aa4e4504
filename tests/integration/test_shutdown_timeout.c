/* A graceful shutdown keeps its timeout while a peer is slow to shut down, on the rank that
   hosts the store and on any other, and the slow peer's own shutdown then ends with an error
   that says the others left, not that a socket closed. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rpc_harness.h"

#define SLOW_S 3.0
#define TIMEOUT_S 1.0

/* The rank in c->user is slow: it shuts down SLOW_S after the others, which give up after
   TIMEOUT_S. */
static int body_slow(int rank, int world, const rpc_case *c)
{
    int slow = (int)(intptr_t)c->user;
    double t0 = rpc_test_now_s();
    if (rank == slow) {
        usleep((useconds_t)(SLOW_S * 1e6));
        ferry_status rc = ferry_shutdown(true, 2.0);
        double dt = rpc_test_now_s() - t0 - SLOW_S;
        fprintf(stderr, "slow rank %d: %s after %.2f s: %s\n", rank, ferry_strerror(rc), dt,
                ferry_last_error());
        RANK_CHECK(rc != FERRY_OK);
        RANK_CHECK(dt < 2.0 + 1.0);
        RANK_CHECK(!strstr(ferry_last_error(), "closed the connection"));
        RANK_CHECK(strstr(ferry_last_error(), "left") || strstr(ferry_last_error(), "shut down"));
        return 0;
    }
    ferry_status rc = ferry_shutdown(true, TIMEOUT_S);
    double dt = rpc_test_now_s() - t0;
    fprintf(stderr, "rank %d: %s after %.2f s: %s\n", rank, ferry_strerror(rc), dt,
            ferry_last_error());
    RANK_CHECK(rc == FERRY_ETIMEDOUT);
    RANK_CHECK(dt < TIMEOUT_S + 0.5);
    return 0;
}

Test(shutdown_timeout, holds_on_the_store_host_when_another_rank_is_slow, .timeout = 40)
{
    rpc_case_run("shm", 3, body_slow, (void *)(intptr_t)2, 30);
}

Test(shutdown_timeout, holds_on_other_ranks_when_the_store_host_is_slow, .timeout = 40)
{
    rpc_case_run("shm", 3, body_slow, (void *)(intptr_t)0, 30);
}
