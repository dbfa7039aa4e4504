/* Futures: torch.futures.Future for C. Completed exactly once with a value or an error; any
   number of threads may wait. Every call here is thread-safe. Callbacks given to
   ferry_future_then and ferry_future_add_done_callback run on a pool thread, not on the thread
   that drives the fabric, and never with a ferry lock held (the one exception, told under
   ferry_future_then, holds for both). */
#ifndef FERRY_FUTURE_H
#define FERRY_FUTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/error.h"
#include "ferry/value.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ferry_future ferry_future;

/* A then-callback: returns the value of the new future (a new reference the library takes), or
   NULL after ferry_set_error to fail it with that code (FERRY_EAGAIN, a wait of its own that ran
   out, becomes FERRY_ETIMEDOUT; NULL without an error fails it with FERRY_EINVAL). `done` is
   borrowed; the callback may release its own references to it. */
typedef ferry_value *(*ferry_then_fn)(ferry_future *done, void *user);

/* A new, pending future (new reference), or NULL with FERRY_ENOMEM. */
FERRY_API ferry_future *ferry_future_new(void);

/* Completes the future and runs or queues its callbacks. set_value borrows `v` (retains it; NULL
   means none). set_error takes a failure code (not FERRY_OK, not FERRY_EAGAIN) and copies
   `message` (NULL = ferry_strerror). Returns FERRY_OK, or FERRY_EINVAL for a NULL future, a bad
   status, or a future already completed ("Future can only be marked completed once"; of racing
   completers exactly one wins). Out of memory for the message, the error keeps its code and
   reads as ferry_strerror(status). */
FERRY_API ferry_status ferry_future_set_value(ferry_future *f, ferry_value *v);
FERRY_API ferry_status ferry_future_set_error(ferry_future *f, ferry_status status,
                                              const char *message);

/* Waits until the future completes or `timeout` seconds pass (0, negative or beyond 1e9 = no
   limit). `f` is borrowed. Returns the future's own status (FERRY_OK, or its error code, also set
   as this thread's last error), FERRY_EAGAIN when this wait ran out first (the future is still
   pending), or FERRY_EINVAL for a NULL future. */
FERRY_API ferry_status ferry_future_wait(ferry_future *f, double timeout);

/* Waits with no limit, then returns the value (new reference), or NULL with the future's error
   set as the last error (FERRY_EINVAL for a NULL future). A future completed with no value gives
   a none value. */
FERRY_API ferry_value *ferry_future_value(ferry_future *f);

/* Non-blocking queries; none records an error. done: false for NULL. */
FERRY_API bool ferry_future_done(const ferry_future *f);
/* The error message (borrowed, lives as long as f) or NULL if pending, succeeded or f is NULL. */
FERRY_API const char *ferry_future_error(const ferry_future *f);
/* FERRY_OK for success, the error code, FERRY_EAGAIN while pending, FERRY_EINVAL for NULL. */
FERRY_API ferry_status ferry_future_status(const ferry_future *f);
/* For a future failed with FERRY_EREMOTE (a remote function failed): the code that function
   itself failed with, the innermost one through nested calls (as ferry_last_remote_status), or
   FERRY_EREMOTE when not known (a peer that does not send it, ferry_future_set_error). Otherwise
   the same as ferry_future_status. */
FERRY_API ferry_status ferry_future_remote_status(const ferry_future *f);

/* A new future (new reference) completed with fn's result once `f` (borrowed) completes. fn runs
   exactly once, even if f failed (fn inspects it), on a pool thread; only when no pool can take
   it (out of memory, shutting down) does it run on the thread that completed f. If the last
   reference to a pending f goes, fn never runs and the new future fails with FERRY_ECANCELED.
   NULL with FERRY_EINVAL (NULL f or fn) or FERRY_ENOMEM. */
FERRY_API ferry_future *ferry_future_then(ferry_future *f, ferry_then_fn fn, void *user);

/* torch's add_done_callback: fn(f, user) runs exactly once after `f` (borrowed) completes, with
   success or an error (fn inspects it; what fn leaves as the last error is ignored). It runs
   where ferry_future_then's callbacks run, in registration order with them: on a pool thread, and
   at once (queued) when f is already done; the registering thread's carried state (distributed
   autograd's context) is installed around it. If the last reference to a pending f goes, fn
   never runs. FERRY_OK, FERRY_EINVAL (NULL f or fn), FERRY_ENOMEM. */
typedef void (*ferry_done_fn)(ferry_future *done, void *user);
FERRY_API ferry_status ferry_future_add_done_callback(ferry_future *f, ferry_done_fn fn,
                                                      void *user);

/* torch.futures.collect_all: a new future (new reference) completed once all n futures have
   completed, whatever their outcome. It never fails: its value is a list of the n input futures
   (values of kind FERRY_VALUE_FUTURE, in order, see ferry_value_as_future), each holding its own
   value or error. The array is borrowed and the futures are retained. n may be 0 (completed at
   once with an empty list). NULL only at the call: FERRY_EINVAL (a NULL array with n > 0 or a
   NULL entry) or FERRY_ENOMEM. */
FERRY_API ferry_future *ferry_future_collect_all(ferry_future **futures, size_t n);

/* torch.futures.wait_all: waits until all n futures have succeeded and returns the list of their
   values in order (new reference; a future completed with no value gives none). Fails fast: as
   soon as one of them fails it returns NULL with that failure's code and message, without
   waiting for the others. `timeout` as ferry_future_wait's (0 = no limit); when it runs out first,
   NULL with FERRY_EAGAIN (the futures are still pending and may be waited on again). The array
   and the futures are borrowed. n may be 0 (an empty list). Also NULL with FERRY_EINVAL (a NULL
   array with n > 0 or a NULL entry) or FERRY_ENOMEM. */
FERRY_API ferry_value *ferry_future_wait_all(ferry_future **futures, size_t n, double timeout);

/* Futures as values (kind FERRY_VALUE_FUTURE), as collect_all's list holds them. A future value
   stays on this worker: sending one (in arguments or a result) fails with FERRY_EINVAL. Two
   future values are equal when they hold the same future; ferry_value_format writes one as torch
   prints a Future ("<torch.jit.Future object at 0x...>"). ferry_value_of_future retains `f`
   and returns a new reference, or NULL with FERRY_EINVAL (NULL f) or FERRY_ENOMEM.
   ferry_value_as_future returns the future (borrowed, lives as long as v), or NULL with
   FERRY_ETYPE when v is not a future value. */
FERRY_API ferry_value *ferry_value_of_future(ferry_future *f);
FERRY_API ferry_future *ferry_value_as_future(const ferry_value *v);

/* retain returns `f` with one more reference; release drops one. Both accept NULL. */
FERRY_API ferry_future *ferry_future_retain(ferry_future *f);
FERRY_API void ferry_future_release(ferry_future *f);

#ifdef __cplusplus
}
#endif
#endif
