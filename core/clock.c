/* The monotonic clock and its conversions (see clock.h): one place that calls clock_gettime for
   measuring time, so every timeout in ferry runs on the same clock. */
#include "core/clock.h"

#include <errno.h>

long long ferry__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t ferry__now_ms(void)
{
    return (int64_t)(ferry__now_ns() / 1000000LL);
}

double ferry__now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

long long ferry__deadline_ns(long long now_ns, double timeout_s)
{
    if (!(timeout_s > 0) || timeout_s >= 1e9)
        return 0;
    long long deadline = now_ns + (long long)(timeout_s * 1e9);
    return deadline > now_ns ? deadline : now_ns + 1;
}

struct timespec ferry__timespec_from_ns(long long ns)
{
    if (ns < 0)
        ns = 0;
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000LL),
                             .tv_nsec = (long)(ns % 1000000000LL)};
}

int ferry__cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

void ferry__sleep_us(long long us)
{
    if (us <= 0)
        return;
    struct timespec left = ferry__timespec_from_ns(us * 1000LL);
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}
