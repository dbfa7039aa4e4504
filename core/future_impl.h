/* Internal future hooks for the agent: completion callbacks that run inline (cheap internal
   bookkeeping, never user code) and the pool that runs a future's then-callbacks. */
#ifndef FERRY_CORE_FUTURE_IMPL_H
#define FERRY_CORE_FUTURE_IMPL_H

#include "core/pool.h"
#include "ferry/future.h"

/* Runs fn(f, arg) on the completing thread right after completion (or now, if done). For internal
   callbacks that must not block and take no user-visible lock. FERRY_OK or FERRY_ENOMEM. */
typedef void (*ferry__future_cb)(ferry_future *f, void *arg);
ferry_status ferry__future_on_done(ferry_future *f, ferry__future_cb fn, void *arg);

/* The pool that runs then-callbacks of this future (NULL = ferry__pool_default()). Set before
   the future is shared. */
void ferry__future_set_pool(ferry_future *f, ferry__pool *pool);

/* Completes with a value it steals (NULL = none). FERRY_EINVAL if already completed (the value
   is released). */
ferry_status ferry__future_complete_steal(ferry_future *f, ferry_value *v);


/* Monotonic clock in nanoseconds. */
long long ferry__now_ns(void);

#endif
