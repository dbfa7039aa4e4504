/* Unit tests for ferry_future_add_done_callback (torch's add_done_callback): it runs once with
   the future, on a pool thread and not on the completing one, also when the future is already
   done or failed, in registration order with then-callbacks, without its last error reaching
   the next task, never for a future released pending, and once each when many threads complete
   many futures. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/future_impl.h"
#include "test_util.h"
#include "test_future_util.h"

typedef struct {
    atomic_int calls;
    ferry_future *seen;
    ferry_status seen_status;
    bool on_pool;
    pthread_t completer;
    bool on_completer;
    ferry_future *signal; /* completed by the callback */
} probe;

static void record(ferry_future *done, void *user)
{
    probe *p = user;
    p->seen = done;
    p->seen_status = ferry_future_status(done);
    p->on_pool = ferry__pool_on_pool_thread();
    p->on_completer = pthread_equal(p->completer, pthread_self());
    atomic_fetch_add(&p->calls, 1);
    ferry_future_set_value(p->signal, NULL);
}

static void probe_init(probe *p)
{
    memset(p, 0, sizeof *p);
    p->completer = pthread_self();
    p->signal = ferry_assert_ptr(ferry_future_new());
}

Test(future_done_callback, runs_once_on_a_pool_thread_with_the_future_when_completed,
     .timeout = 5)
{
    probe p;
    probe_init(&p);
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_add_done_callback(f, record, &p));
    cr_assert_eq(atomic_load(&p.calls), 0);
    ferry_assert_ok(ferry_future_set_value(f, NULL));
    ferry_assert_ok(ferry_future_wait(p.signal, 4));
    cr_assert_eq(p.seen, f);
    cr_assert_eq(p.seen_status, FERRY_OK);
    cr_assert(p.on_pool);
    cr_assert_not(p.on_completer);
    ferry_future_release(f);
    ferry_future_release(p.signal);
    cr_assert_eq(atomic_load(&p.calls), 1);
}

Test(future_done_callback, runs_when_the_future_is_already_done_or_failed, .timeout = 5)
{
    probe p;
    probe_init(&p);
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_set_error(f, FERRY_EREMOTE, "worker1: Expected error"));
    ferry_assert_ok(ferry_future_add_done_callback(f, record, &p));
    ferry_assert_ok(ferry_future_wait(p.signal, 4));
    cr_assert_eq(p.seen_status, FERRY_EREMOTE);
    cr_assert(p.on_pool);
    cr_assert_str_eq(ferry_future_error(f), "worker1: Expected error");
    ferry_future_release(f);
    ferry_future_release(p.signal);
    cr_assert_eq(atomic_load(&p.calls), 1);
}

/* Order probes on a one-thread pool: each appends its tag. */
typedef struct {
    pthread_mutex_t mu;
    char order[16];
    size_t len;
} order_log;

static order_log olog = {PTHREAD_MUTEX_INITIALIZER, {0}, 0};

static void log_tag(char tag)
{
    pthread_mutex_lock(&olog.mu);
    if (olog.len + 1 < sizeof olog.order)
        olog.order[olog.len++] = tag;
    pthread_mutex_unlock(&olog.mu);
}

static void done_tag(ferry_future *done, void *user)
{
    log_tag(*(const char *)user);
}

static ferry_value *then_tag(ferry_future *done, void *user)
{
    log_tag(*(const char *)user);
    return ferry_none();
}

Test(future_done_callback, keeps_registration_order_with_then_callbacks, .timeout = 5)
{
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(1, 16, "order"));
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry__future_set_pool(f, pool);
    static const char a = 'a', b = 'b', c = 'c', d = 'd';
    ferry_assert_ok(ferry_future_add_done_callback(f, done_tag, (void *)&a));
    ferry_future *child = ferry_assert_ptr(ferry_future_then(f, then_tag, (void *)&b));
    ferry_assert_ok(ferry_future_add_done_callback(f, done_tag, (void *)&c));
    ferry_assert_ok(ferry_future_set_value(f, NULL));
    ferry_assert_ok(ferry_future_add_done_callback(f, done_tag, (void *)&d)); /* after: last */
    ferry_assert_ok(ferry_future_wait(child, 4));
    ferry__pool_free(pool); /* drains the queue */
    cr_assert_str_eq(olog.order, "abcd");
    ferry_future_release(child);
    ferry_future_release(f);
}

static void leave_error(ferry_future *done, void *user)
{
    ferry_set_error(FERRY_EREMOTE, "left behind by a done-callback");
}

static ferry_value *last_status_then(ferry_future *done, void *user)
{
    return ferry_int((int64_t)ferry_last_status());
}

Test(future_done_callback, leaves_no_error_behind_when_it_sets_one, .timeout = 5)
{
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(1, 8, "stale"));
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry__future_set_pool(f, pool);
    ferry_assert_ok(ferry_future_add_done_callback(f, leave_error, NULL));
    ferry_future *child = ferry_assert_ptr(ferry_future_then(f, last_status_then, NULL));
    ferry_assert_ok(ferry_future_set_value(f, NULL));
    ferry_value *v = ferry_assert_ptr(ferry_future_value(child));
    cr_assert_eq(ferry_value_as_int(v), FERRY_OK);
    cr_assert_eq(ferry_future_status(f), FERRY_OK, "the future itself is untouched");
    ferry_value_release(v);
    ferry_future_release(child);
    ferry_future_release(f);
    ferry__pool_free(pool);
}

static void count_only(ferry_future *done, void *user)
{
    atomic_fetch_add((atomic_int *)user, 1);
}

Test(future_done_callback, never_runs_when_the_future_is_released_pending, .timeout = 5)
{
    atomic_int calls = 0;
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_add_done_callback(f, count_only, &calls));
    ferry_future_release(f);
    cr_assert_eq(atomic_load(&calls), 0);
}

Test(future_done_callback, refuses_bad_arguments_and_reports_enomem, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_status(ferry_future_add_done_callback(NULL, count_only, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(),
                     "ferry_future_add_done_callback needs a future and a function");
    ferry_assert_status(ferry_future_add_done_callback(f, NULL, NULL), FERRY_EINVAL);
    atomic_int calls = 0;
    ferry__alloc_fail_after(1, 1);
    ferry_status rc = ferry_future_add_done_callback(f, count_only, &calls);
    ferry__alloc_fail_after(0, 0);
    /* The record may come from the cache: then there was nothing to fail. */
    cr_assert(rc == FERRY_OK || rc == FERRY_ENOMEM);
    ferry_assert_ok(ferry_future_set_value(f, NULL));
    ferry_future_release(f);
}

typedef struct {
    atomic_int calls;
    ferry_future *all_ran;
    int want;
} counter;

static void count_and_signal(ferry_future *done, void *user)
{
    counter *c = user;
    if (atomic_fetch_add(&c->calls, 1) + 1 == c->want)
        ferry_future_set_value(c->all_ran, NULL);
}

Test(future_done_callback, runs_each_once_when_8_threads_complete_1000, .timeout = 20)
{
    enum { N = 1000, THREADS = 8 };
    static ferry_future *fs[N];
    counter c = {0, ferry_assert_ptr(ferry_future_new()), 2 * N};
    for (int i = 0; i < N; i++) {
        fs[i] = ferry_assert_ptr(ferry_future_new());
        ferry_assert_ok(ferry_future_add_done_callback(fs[i], count_and_signal, &c));
    }
    pthread_t th[THREADS];
    complete_range ranges[THREADS];
    for (int t = 0; t < THREADS; t++) {
        ranges[t] = (complete_range){fs, t * N / THREADS, (t + 1) * N / THREADS};
        cr_assert_eq(pthread_create(&th[t], NULL, complete_range_main, &ranges[t]), 0);
    }
    for (int i = 0; i < N; i++) /* racing the completions: before or after, each runs once */
        ferry_assert_ok(ferry_future_add_done_callback(fs[i], count_and_signal, &c));
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    ferry_assert_ok(ferry_future_wait(c.all_ran, 15));
    cr_assert_eq(atomic_load(&c.calls), 2 * N);
    for (int i = 0; i < N; i++)
        ferry_future_release(fs[i]);
    ferry_future_release(c.all_ran);
}
