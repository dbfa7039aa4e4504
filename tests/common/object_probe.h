/* What the one-call-at-a-time tests of remote and local objects record inside an object, and
   the methods that record it. A test class's object starts with a ferry_test_probe, so these
   methods take the object as its class's own methods do. */
#ifndef FERRY_TEST_OBJECT_PROBE_H
#define FERRY_TEST_OBJECT_PROBE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry.h"

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t inside, max_inside, enters; /* calls of `critical` */
    char log[64];                       /* 'E' and 'L' per enter and leave */
    size_t log_len;
    int64_t meet_arrived, holding, peeked;
} ferry_test_probe;

void ferry_test_probe_init(ferry_test_probe *p);
void ferry_test_probe_destroy(ferry_test_probe *p);

/* Waits on cv (mu held) until *field >= want or `secs` pass; true when it got there. */
bool ferry_test_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, const int64_t *field,
                           int64_t want, double secs);

/* critical (not concurrent): records entering and leaving, and gives a second caller 50 ms to
   get in alongside, which only a broken one-at-a-time rule lets it do.
   meet (concurrent): true only when a second call arrived while this one was inside.
   hold (not concurrent): holds the object until a concurrent peek came in; true if one did.
   peek (concurrent): true when it ran while a hold was inside.
   report: [enters, max_inside, the enter/leave log]. Waits are bounded (5 s). */
ferry_status ferry_test_probe_critical(void *obj, const ferry_value *args,
                                       const ferry_value *kwargs, ferry_value **result,
                                       void *user);
ferry_status ferry_test_probe_meet(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user);
ferry_status ferry_test_probe_hold(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user);
ferry_status ferry_test_probe_peek(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user);
ferry_status ferry_test_probe_report(void *obj, const ferry_value *args,
                                     const ferry_value *kwargs, ferry_value **result, void *user);

/* The five as method table entries, with their concurrency. */
#define FERRY_TEST_PROBE_METHODS                                                           \
    {"critical", ferry_test_probe_critical, false}, {"meet", ferry_test_probe_meet, true}, \
        {"hold", ferry_test_probe_hold, false}, {"peek", ferry_test_probe_peek, true},     \
        {"report", ferry_test_probe_report, false}

#endif
