/* Unit tests for recycled futures: a future made from one that was completed (with an error, a
   driver, callbacks and a pool) and released is indistinguishable from a new one, and futures
   recycled between threads keep working when waiters block on their condition variables. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "test_util.h"

typedef struct {
    atomic_int retains, releases, polls;
} probe;

static void *probe_retain(void *ctx)
{
    atomic_fetch_add(&((probe *)ctx)->retains, 1);
    return ctx;
}

static void probe_release(void *ctx)
{
    atomic_fetch_add(&((probe *)ctx)->releases, 1);
}

static void probe_begin(void *ctx)
{
}

static bool probe_poll(void *ctx)
{
    atomic_fetch_add(&((probe *)ctx)->polls, 1);
    return false;
}

static void probe_end(void *ctx)
{
}

static const ferry__future_driver probe_driver = {probe_retain, probe_release, probe_begin,
                                                  probe_poll, probe_end};

static atomic_int then_runs;

static ferry_value *count_then(ferry_future *parent, void *user)
{
    atomic_fetch_add(&then_runs, 1);
    return ferry_int(7);
}

static void on_done_count(ferry_future *f, void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

Test(future_reuse, is_like_new_when_made_from_a_failed_future_with_driver_and_callbacks,
     .timeout = 10)
{
    probe pr = {0};
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(1, 8, "reuse"));
    atomic_int done_calls = 0;
    ferry_future *old = ferry_assert_ptr(ferry_future_new());
    ferry__future_set_pool(old, pool);
    ferry__future_init_driver(old, &probe_driver, &pr);
    ferry_assert_ok(ferry__future_on_done(old, on_done_count, &done_calls));
    ferry_future *child = ferry_assert_ptr(ferry_future_then(old, count_then, NULL));
    ferry_assert_ok(ferry_future_set_error(old, FERRY_EREMOTE, "the old future's error"));
    ferry_assert_ok(ferry_future_wait(child, 5)); /* then-callbacks run on failure too */
    ferry_future_release(child);
    cr_assert_eq(atomic_load(&then_runs), 1);
    ferry_future_release(old);
    cr_assert_eq(atomic_load(&done_calls), 1);

    /* The then-task's reference to `old` may go last on the pool thread; this one goes here,
       so the object comes straight back from this thread's magazine. */
    ferry_future *old2 = ferry_assert_ptr(ferry_future_new());
    ferry__future_set_pool(old2, pool);
    ferry__future_init_driver(old2, &probe_driver, &pr);
    ferry_assert_ok(ferry__future_on_done(old2, on_done_count, &done_calls));
    ferry_assert_ok(ferry_future_set_error(old2, FERRY_EREMOTE, "the old future's error"));
    ferry_future_release(old2);
    cr_assert_eq(atomic_load(&done_calls), 2);
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    cr_assert_eq(f, old2, "the released future was not recycled");
    cr_assert_not(ferry_future_done(f));
    cr_assert_eq(ferry_future_status(f), FERRY_EAGAIN);
    cr_assert_null(ferry_future_error(f));
    int polls = atomic_load(&pr.polls);
    ferry_assert_status(ferry_future_wait(f, 0.005), FERRY_EAGAIN);
    cr_assert_eq(atomic_load(&pr.polls), polls, "a stale driver was polled");
    /* Its callbacks start empty and its then-callbacks run on the default pool. */
    ferry_future *g = ferry_assert_ptr(ferry_future_then(f, count_then, NULL));
    ferry_value *v = ferry_assert_ptr(ferry_int(3));
    ferry_assert_ok(ferry_future_set_value(f, v));
    ferry_value_release(v);
    ferry_value *got = ferry_assert_ptr(ferry_future_value(f));
    cr_assert_eq(ferry_value_as_int(got), 3);
    ferry_value_release(got);
    got = ferry_assert_ptr(ferry_future_value(g));
    cr_assert_eq(ferry_value_as_int(got), 7);
    ferry_value_release(got);
    cr_assert_eq(atomic_load(&then_runs), 2, "an old then-callback ran again");
    cr_assert_eq(atomic_load(&done_calls), 2, "an old on_done callback ran again");
    /* One reference: a retain and two releases free it (no double use after). */
    ferry_future_retain(f);
    ferry_future_release(f);
    ferry_future_release(f);
    ferry_future_release(g);
    ferry__pool_free(pool);
    cr_assert_eq(atomic_load(&pr.retains), atomic_load(&pr.releases), "driver ctx leaked");
}

Test(future_reuse, keeps_the_error_of_its_own_when_failed_without_text_after_reuse,
     .timeout = 5)
{
    ferry_future *old = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_set_error(old, FERRY_EREMOTE, "a long and specific message"));
    ferry_future_release(old);
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_set_error(f, FERRY_ETIMEDOUT, NULL));
    cr_assert_str_eq(ferry_future_error(f), ferry_strerror(FERRY_ETIMEDOUT));
    ferry_future_release(f);
}

/* Pairs of threads: a waiter makes a future, hands it over and blocks on it (past the spin,
   on the condition variable); the completer completes it. Both release, so the object goes
   back to a cache on either thread and comes out again on the other. */
typedef struct {
    _Atomic(ferry_future *) handoff;
    int rounds;
    atomic_int bad;
} pair;

static void *waiter_main(void *arg)
{
    pair *p = arg;
    for (int i = 0; i < p->rounds; i++) {
        ferry_future *f = ferry_future_new();
        if (!f) {
            atomic_fetch_add(&p->bad, 1);
            break;
        }
        ferry_future_retain(f); /* the completer's */
        atomic_store(&p->handoff, f);
        ferry_value *v = ferry_future_value(f);
        if (!v || ferry_value_as_int(v) != i)
            atomic_fetch_add(&p->bad, 1);
        ferry_value_release(v);
        ferry_future_release(f);
    }
    atomic_store(&p->handoff, (ferry_future *)NULL);
    return NULL;
}

static void *completer_main(void *arg)
{
    pair *p = arg;
    for (int i = 0; i < p->rounds; i++) {
        ferry_future *f;
        while ((f = atomic_exchange(&p->handoff, (ferry_future *)NULL)) == NULL)
            sched_yield();
        if (i % 3 == 0)
            ferry__sleep_us(40); /* past the waiter's spin: it blocks on the condvar */
        ferry_value *v = ferry_int(i);
        if (ferry__future_complete_steal(f, v) != FERRY_OK)
            atomic_fetch_add(&p->bad, 1);
        ferry_future_release(f);
    }
    return NULL;
}

Test(future_reuse, completes_every_wait_when_4_pairs_of_threads_recycle_20k_futures,
     .timeout = 120)
{
    enum { PAIRS = 4 };
    static pair pairs[PAIRS];
    pthread_t th[2 * PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        pairs[i].rounds = 5000;
        cr_assert_eq(pthread_create(&th[2 * i], NULL, waiter_main, &pairs[i]), 0);
        cr_assert_eq(pthread_create(&th[2 * i + 1], NULL, completer_main, &pairs[i]), 0);
    }
    for (int i = 0; i < 2 * PAIRS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < PAIRS; i++)
        cr_assert_eq(atomic_load(&pairs[i].bad), 0, "pair %d: %d waits went wrong", i,
                     atomic_load(&pairs[i].bad));
}
