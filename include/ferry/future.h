/* Futures: torch.futures.Future for C. Completed exactly once with a value or an error; any
   number of threads may wait. Callbacks given to ferry_future_then run on a pool thread, never on
   the thread that drives the fabric and never with a ferry lock held. */
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
   NULL after ferry_set_error to fail it. `done` is borrowed; the callback may release its own
   references to it. */
typedef ferry_value *(*ferry_then_fn)(ferry_future *done, void *user);

/* A new, pending future (new reference), or NULL with FERRY_ENOMEM. */
FERRY_API ferry_future *ferry_future_new(void);

/* Completes the future. set_value borrows `v` (retains it; NULL means none). Returns FERRY_OK,
   or FERRY_EINVAL if it was already completed ("Future can only be marked completed once").
   set_error takes a status other than FERRY_OK and copies `message` (NULL = ferry_strerror). */
FERRY_API ferry_status ferry_future_set_value(ferry_future *f, ferry_value *v);
FERRY_API ferry_status ferry_future_set_error(ferry_future *f, ferry_status status,
                                              const char *message);

/* Waits until the future completes or `timeout` seconds pass (0 or negative = no limit).
   Returns the future's own status (FERRY_OK, or its error code, also set as this thread's last
   error), or FERRY_EAGAIN when this wait ran out first (the future is still pending). */
FERRY_API ferry_status ferry_future_wait(ferry_future *f, double timeout);

/* Waits, then returns the value (new reference), or NULL with the future's error set as the last
   error. A future completed with no value gives ferry_none(). */
FERRY_API ferry_value *ferry_future_value(ferry_future *f);

FERRY_API bool ferry_future_done(const ferry_future *f);
/* The error message (borrowed, lives as long as f) or NULL if pending or succeeded. */
FERRY_API const char *ferry_future_error(const ferry_future *f);
/* FERRY_OK for success, the error code, or FERRY_EAGAIN while pending. */
FERRY_API ferry_status ferry_future_status(const ferry_future *f);

/* A future completed with fn's result once `f` completes (fn runs on a pool thread, exactly
   once, even if f failed: fn inspects it). NULL + FERRY_EINVAL for a NULL fn. */
FERRY_API ferry_future *ferry_future_then(ferry_future *f, ferry_then_fn fn, void *user);

/* A future completed when all n futures have completed; its value is a list of the n values
   in order. If any failed, it fails with the first failure's code and message as soon as that
   failure is known (torch.futures.wait_all). n may be 0 (an empty list). */
FERRY_API ferry_future *ferry_future_collect_all(ferry_future **futures, size_t n);

FERRY_API ferry_future *ferry_future_retain(ferry_future *f);
FERRY_API void ferry_future_release(ferry_future *f);

#ifdef __cplusplus
}
#endif
#endif
