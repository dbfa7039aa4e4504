/* A fixed-size thread pool with a bounded queue. A task that blocks (a pool thread waiting on a
   future) tells the pool, which then lends a spare thread so queued tasks still run: nested
   calls do not starve the pool. Spares are capped (4 x the size unless set): past the cap,
   queued tasks wait for a blocked one to resume. */
#ifndef FERRY_CORE_POOL_H
#define FERRY_CORE_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/error.h"

typedef struct ferry__pool ferry__pool;
typedef void (*ferry__task_fn)(void *arg);

/* nthreads >= 1, queue_cap >= 1. NULL + FERRY_ENOMEM / FERRY_EINVAL. */
ferry__pool *ferry__pool_new(int nthreads, size_t queue_cap, const char *name);
/* Queues fn(arg). FERRY_OK, FERRY_EAGAIN (queue full), FERRY_ESHUTDOWN (pool stopping). The
   task runs exactly once when FERRY_OK is returned. */
ferry_status ferry__pool_submit(ferry__pool *pool, ferry__task_fn fn, void *arg);
/* Same but waits for room instead of failing when the queue is full. */
ferry_status ferry__pool_submit_wait(ferry__pool *pool, ferry__task_fn fn, void *arg);
/* At most `max_spares` threads beyond the configured size are lent to blocked tasks (0: none,
   a fixed pool). Threads already running stay until they idle out. */
void ferry__pool_set_max_spares(ferry__pool *pool, int max_spares);
/* Runs every queued task, stops the threads and frees the pool. Must not be called from one of
   its own threads. NULL is fine. */
void ferry__pool_free(ferry__pool *pool);

/* A pool may lend one idle thread at a time to a spinner: instead of sleeping at once, that
   thread calls poll(ctx, ...) over and over until a task is queued, the pool stops, or spin_ns
   pass without poll moving anything, or it finds it was preempted (an empty poll that took
   20 µs: other threads want the CPU). It spins only while no other thread of the pool runs a
   task. poll returns 0
   (nothing), 1 (it moved something: the window restarts) or 2 (it found a task of its own,
   stored in *fn / *arg, which the thread runs next). begin and end bracket each stretch of polls on that thread (NULL: none). While
   a thread spins, a submit wakes nobody: the spinner sees the queue. rpc uses it to let an
   idle pool thread read the fabric and run the call it reads itself (rpc/serve.c). */
typedef struct {
    void (*begin)(void *ctx);
    int (*poll)(void *ctx, ferry__task_fn *fn, void **arg);
    void (*end)(void *ctx);
} ferry__pool_spinner;
/* Installs (or with NULL removes) the spinner; ctx must outlive the pool or the next call.
   spin_ns <= 0 removes it too. */
void ferry__pool_set_spinner(ferry__pool *pool, const ferry__pool_spinner *spinner, void *ctx,
                             long long spin_ns);

/* Called by code about to block on a pool thread (future waits do it): the pool keeps at least
   its configured number of runnable threads by starting or waking a spare one. No-op off a pool
   thread. Pairs with ferry__pool_blocking_end. */
void ferry__pool_blocking_begin(void);
void ferry__pool_blocking_end(void);
/* True when the calling thread belongs to some pool. */
bool ferry__pool_on_pool_thread(void);

/* Counters for debug info and tests. */
typedef struct {
    int threads;      /* threads alive */
    int idle;         /* waiting for work */
    int blocked;      /* inside blocking_begin/end */
    size_t queued;
} ferry__pool_stats;
void ferry__pool_get_stats(ferry__pool *pool, ferry__pool_stats *out);

/* The process-wide pool that runs ferry_future_then callbacks of futures that name no pool of
   their own (created on first use, 4 threads growing on blocking; lives until exit). */
ferry__pool *ferry__pool_default(void);

#endif
