/* The one clock ferry measures time with: CLOCK_MONOTONIC, which never jumps when the wall clock
   is set, in the units callers keep (nanoseconds for futures and the progress thread,
   milliseconds for the store's wire timeouts, seconds for rendezvous deadlines), plus what timed
   waits need: a deadline from a timeout, a point on that clock as a timespec (absolute deadlines
   for condition variables set to CLOCK_MONOTONIC, or plain durations for ppoll), such condition
   variables, and a short sleep. Log timestamps use the wall clock and are not here. */
#ifndef FERRY_CORE_CLOCK_H
#define FERRY_CORE_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Monotonic clock in nanoseconds. Any thread. */
long long ferry__now_ns(void);

/* The same clock in milliseconds and in seconds. */
int64_t ferry__now_ms(void);
double ferry__now_s(void);

/* The deadline timeout_s seconds after now_ns, on the same clock; 0 (no deadline) when timeout_s
   <= 0 or beyond about 30 years (which would overflow). A positive timeout always gives a
   deadline after now_ns, however small. */
long long ferry__deadline_ns(long long now_ns, double timeout_s);

/* ns as a timespec: a point on the monotonic clock (for pthread_cond_timedwait on a condvar set
   to CLOCK_MONOTONIC) or a duration (for ppoll). Negative ns gives zero. */
struct timespec ferry__timespec_from_ns(long long ns);

/* Initializes cv to time its waits on this clock, so ferry__timespec_from_ns(deadline_ns) is the
   absolute time pthread_cond_timedwait wants. pthread_cond_init's result. */
int ferry__cond_init_monotonic(pthread_cond_t *cv);

/* Sleeps about us microseconds (at least that long unless us <= 0). For backoff and naps, never
   to synchronize. */
void ferry__sleep_us(long long us);

#endif
