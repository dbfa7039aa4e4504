/* Internal future hooks for the agent: completion callbacks that run inline (cheap internal
   bookkeeping, never user code) and the pool that runs a future's then-callbacks. */
#ifndef FERRY_CORE_FUTURE_IMPL_H
#define FERRY_CORE_FUTURE_IMPL_H

/* clock.h for ferry__now_ns, which files including this header used to find here. */
#include "core/clock.h"
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

/* The non-blocking future ferry_future_wait_all waits on (core/future_all.c): completed with the
   list of the n values once all succeeded, or failed with the first failure's code and message
   as soon as one fails. Arguments, references and errors as ferry_future_collect_all's. */
ferry_future *ferry__future_all_of(ferry_future **futures, size_t n);

/* A completed future's outcome as this thread's last error, as ferry_future_wait reports it:
   FERRY_OK for success, else its code (the callee's own code kept behind a FERRY_EREMOTE). */
ferry_status ferry__future_report(const ferry_future *f);

/* ferry_future_set_error, and when `status` is FERRY_EREMOTE, `remote` is the callee's own code
   that ferry_future_remote_status reads (FERRY_OK or out of range: not known, FERRY_EREMOTE). */
ferry_status ferry__future_set_error_remote(ferry_future *f, ferry_status status,
                                            ferry_status remote, const char *message);


/* A driver lets a thread that waits on a pending future make progress itself (poll the fabric)
   instead of sleeping until another thread completes it, so a reply wakes nobody. The wait
   drives for a while, then falls back to blocking. ctx is retained while a thread drives and
   released when the future completes or goes. */
typedef struct {
    void *(*retain)(void *ctx);
    void (*release)(void *ctx);
    void (*begin)(void *ctx); /* a thread starts driving */
    bool (*poll)(void *ctx);  /* one quick pass; true when it moved something */
    void (*end)(void *ctx);   /* it stops */
} ferry__future_driver;

/* Attaches a driver (ctx is retained; any earlier one is released). No-op once completed. */
void ferry__future_set_driver(ferry_future *f, const ferry__future_driver *driver, void *ctx);
/* Gives `to` the driver `from` has now, if any (a future of many calls waits by driving the
   fabric of one of them). */
void ferry__future_lend_driver(ferry_future *to, ferry_future *from);
/* The same as set_driver for a new future no other thread can reach yet (no lock taken): a
   call's. */
void ferry__future_init_driver(ferry_future *f, const ferry__future_driver *driver, void *ctx);

#endif
