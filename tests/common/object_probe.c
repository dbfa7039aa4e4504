/* The recording methods of tests/common/object_probe.h. */
#include "object_probe.h"

#include <time.h>

void ferry_test_probe_init(ferry_test_probe *p)
{
    *p = (ferry_test_probe){0};
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
}

void ferry_test_probe_destroy(ferry_test_probe *p)
{
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

bool ferry_test_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, const int64_t *field,
                           int64_t want, double secs)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)secs;
    until.tv_nsec += (long)((secs - (time_t)secs) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (*field < want)
        if (pthread_cond_timedwait(cv, mu, &until) != 0)
            break;
    return *field >= want;
}

static bool wait_probe(ferry_test_probe *p, const int64_t *field, int64_t want, double secs)
{
    return ferry_test_wait_until(&p->cv, &p->mu, field, want, secs);
}

static void log_event(ferry_test_probe *p, char e)
{
    if (p->log_len + 1 < sizeof p->log)
        p->log[p->log_len++] = e;
}

ferry_status ferry_test_probe_critical(void *obj, const ferry_value *args,
                                       const ferry_value *kwargs, ferry_value **result,
                                       void *user)
{
    ferry_test_probe *p = obj;
    pthread_mutex_lock(&p->mu);
    p->inside++;
    p->enters++;
    if (p->inside > p->max_inside)
        p->max_inside = p->inside;
    log_event(p, 'E');
    pthread_cond_broadcast(&p->cv);
    wait_probe(p, &p->inside, 2, 0.05);
    p->inside--;
    log_event(p, 'L');
    pthread_mutex_unlock(&p->mu);
    *result = NULL;
    return FERRY_OK;
}

ferry_status ferry_test_probe_meet(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    ferry_test_probe *p = obj;
    pthread_mutex_lock(&p->mu);
    p->meet_arrived++;
    pthread_cond_broadcast(&p->cv);
    bool met = wait_probe(p, &p->meet_arrived, 2, 5.0);
    pthread_mutex_unlock(&p->mu);
    *result = ferry_bool(met);
    return FERRY_OK;
}

ferry_status ferry_test_probe_hold(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    ferry_test_probe *p = obj;
    pthread_mutex_lock(&p->mu);
    p->holding = 1;
    pthread_cond_broadcast(&p->cv);
    bool peeked = wait_probe(p, &p->peeked, 1, 5.0);
    pthread_mutex_unlock(&p->mu);
    *result = ferry_bool(peeked);
    return FERRY_OK;
}

ferry_status ferry_test_probe_peek(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    ferry_test_probe *p = obj;
    pthread_mutex_lock(&p->mu);
    bool held = wait_probe(p, &p->holding, 1, 5.0);
    p->peeked = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    *result = ferry_bool(held);
    return FERRY_OK;
}

ferry_status ferry_test_probe_report(void *obj, const ferry_value *args,
                                     const ferry_value *kwargs, ferry_value **result, void *user)
{
    ferry_test_probe *p = obj;
    pthread_mutex_lock(&p->mu);
    *result = ferry_list_of(3, ferry_int(p->enters), ferry_int(p->max_inside),
                            ferry_string_n(p->log, p->log_len));
    pthread_mutex_unlock(&p->mu);
    return *result ? FERRY_OK : ferry_last_status();
}
