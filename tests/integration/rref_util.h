/* What the RRef tests share: a barrier served by worker0 and the check that a worker's RRef
   tables are empty. */
#ifndef FERRY_TEST_RREF_UTIL_H
#define FERRY_TEST_RREF_UTIL_H

#include <pthread.h>
#include <stdbool.h>

#include "ferry/ferry.h"

/* A barrier on worker0: its async function "arrive"(ok) completes when `world` workers arrived,
   with the number of them that were not ok. */
typedef struct {
    pthread_mutex_t mu;
    int arrived, world, not_ok;
    ferry_future *waiting[8];
} rref_test_barrier_state;

/* Resets b for `world` workers and registers "arrive" with it (every rank registers it; only
   worker0's is called). */
void rref_test_barrier_register(rref_test_barrier_state *b, int world);
/* Arrives at worker0's barrier; how many workers were not ok, or -1. */
int rref_test_barrier(bool ok);
/* Whether this worker's RRef counters (owners, forks, users, pending ones, messages) are all
   zero; fills *n. */
bool rref_test_counts_zero(ferry_rref_debug_counts *n);
/* In a rank: waits until every worker's counters are zero (rounds of the barrier repeat, as a
   callee drops its arguments just after replying). 0, or 1 after saying which are not. */
int rref_test_check_counts_zero(void);

#endif
