/* Unit tests for futures: completion and waiting, errors, wait timeouts, then-callbacks (chains,
   failures, already-completed parents, many completing threads), inline on_done callbacks,
   nested waits on a one-thread pool, and out-of-memory paths. collect_all and wait_all are
   tested in test_future_all.c, add_done_callback in test_future_done.c. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "test_util.h"
#include "test_future_util.h"

Test(future_basic, gives_value_when_set, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    cr_assert_not(ferry_future_done(f));
    cr_assert_eq(ferry_future_status(f), FERRY_EAGAIN);
    cr_assert_null(ferry_future_error(f));
    ferry_value *v = ferry_assert_ptr(ferry_int(42));
    ferry_assert_ok(ferry_future_set_value(f, v));
    ferry_value_release(v); /* set_value borrowed it */
    cr_assert(ferry_future_done(f));
    ferry_assert_ok(ferry_future_wait(f, 1.0));
    ferry_value *got = ferry_assert_ptr(ferry_future_value(f));
    cr_assert_eq(ferry_value_as_int(got), 42);
    cr_assert_null(ferry_future_error(f));
    ferry_value_release(got);
    ferry_future_release(f);
}

Test(future_basic, gives_none_when_set_without_value, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_set_value(f, NULL));
    ferry_value *got = ferry_assert_ptr(ferry_future_value(f));
    cr_assert_eq(ferry_value_kind(got), FERRY_VALUE_NONE);
    ferry_value_release(got);
    ferry_future_release(f);
}

Test(future_basic, reports_error_when_failed, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_set_error(f, FERRY_EREMOTE, "worker1: bad shape 3"));
    ferry_clear_error();
    ferry_assert_status(ferry_future_wait(f, 0), FERRY_EREMOTE);
    cr_assert_str_eq(ferry_last_error(), "worker1: bad shape 3");
    cr_assert_str_eq(ferry_future_error(f), "worker1: bad shape 3");
    cr_assert_eq(ferry_future_status(f), FERRY_EREMOTE);
    ferry_clear_error();
    cr_assert_null(ferry_future_value(f));
    cr_assert_eq(ferry_last_status(), FERRY_EREMOTE);

    ferry_future *g = ferry_assert_ptr(ferry_future_new());
    ferry_assert_status(ferry_future_set_error(g, FERRY_OK, "no"), FERRY_EINVAL);
    ferry_assert_ok(ferry_future_set_error(g, FERRY_ETIMEDOUT, NULL));
    cr_assert_str_eq(ferry_future_error(g), ferry_strerror(FERRY_ETIMEDOUT));
    ferry_future_release(f);
    ferry_future_release(g);
}

Test(future_basic, refuses_completion_when_completed_twice, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_set_value(f, NULL));
    ferry_value *v = ferry_assert_ptr(ferry_int(1));
    ferry_assert_status(ferry_future_set_value(f, v), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "Future can only be marked completed once");
    ferry_assert_status(ferry_future_set_error(f, FERRY_EREMOTE, "x"), FERRY_EINVAL);
    ferry_assert_status(ferry__future_complete_steal(f, v), FERRY_EINVAL); /* releases v */
    ferry_assert_ok(ferry_future_wait(f, 0));
    ferry_future_release(f);
}

static void *complete_later(void *arg)
{
    ferry_future *f = arg;
    ferry_value *v = ferry_int(7);
    ferry_future_set_value(f, v);
    ferry_value_release(v);
    return NULL;
}

Test(future_wait, returns_eagain_when_wait_runs_out_then_completes_later, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    long long t0 = ferry__now_ns();
    ferry_assert_status(ferry_future_wait(f, 0.02), FERRY_EAGAIN);
    cr_assert_geq(ferry__now_ns() - t0, 20000000LL, "the wait lasted its timeout");
    cr_assert_not(ferry_future_done(f));
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, complete_later, f), 0);
    ferry_assert_ok(ferry_future_wait(f, 5.0));
    ferry_value *v = ferry_assert_ptr(ferry_future_value(f));
    cr_assert_eq(ferry_value_as_int(v), 7);
    pthread_join(th, NULL);
    ferry_value_release(v);
    ferry_future_release(f);
}

static ferry_value *add_one(ferry_future *done, void *user)
{
    /* Criterion asserts belong on the test's own thread: report through the future. */
    if (!ferry__pool_on_pool_thread())
        return ferry__fail_null(FERRY_EINVAL, "then-callback ran off the pool");
    ferry_value *v = ferry_future_value(done);
    if (!v)
        return NULL;
    ferry_value *r = ferry_int(ferry_value_as_int(v) + 1);
    ferry_value_release(v);
    return r;
}

Test(future_then, chains_when_twenty_deep, .timeout = 10)
{
    ferry_future *root = ferry_assert_ptr(ferry_future_new());
    ferry_future *cur = ferry_future_retain(root);
    for (int i = 0; i < 20; i++) {
        ferry_future *next = ferry_assert_ptr(ferry_future_then(cur, add_one, NULL));
        ferry_future_release(cur); /* the chain keeps itself alive until it ran */
        cur = next;
    }
    ferry_value *zero = ferry_assert_ptr(ferry_int(0));
    ferry_assert_ok(ferry_future_set_value(root, zero));
    ferry_value_release(zero);
    ferry_value *v = ferry_assert_ptr(ferry_future_value(cur));
    cr_assert_eq(ferry_value_as_int(v), 20);
    ferry_value_release(v);
    ferry_future_release(cur);
    ferry_future_release(root);
}

Test(future_then, runs_when_parent_already_completed, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_value *v = ferry_assert_ptr(ferry_int(41));
    ferry_assert_ok(ferry_future_set_value(f, v));
    ferry_value_release(v);
    ferry_future *g = ferry_assert_ptr(ferry_future_then(f, add_one, NULL));
    ferry_future_release(f);
    ferry_value *got = ferry_assert_ptr(ferry_future_value(g));
    cr_assert_eq(ferry_value_as_int(got), 42);
    ferry_value_release(got);
    ferry_future_release(g);
    cr_assert_null(ferry_future_then(NULL, add_one, NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
}

static ferry_value *fail_bad_shape(ferry_future *done, void *user)
{
    ferry_set_error(FERRY_ENOTSUP, "bad shape %d", 3);
    return NULL;
}

static ferry_value *fail_silently(ferry_future *done, void *user)
{
    return NULL;
}

Test(future_then, fails_child_when_callback_returns_null, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_future *a = ferry_assert_ptr(ferry_future_then(f, fail_bad_shape, NULL));
    ferry_future *b = ferry_assert_ptr(ferry_future_then(f, fail_silently, NULL));
    ferry_future *c = ferry_assert_ptr(ferry_future_then(f, add_one, NULL));
    ferry_assert_ok(ferry_future_set_error(f, FERRY_EREMOTE, "parent failed"));
    ferry_assert_status(ferry_future_wait(a, 5), FERRY_ENOTSUP);
    cr_assert_str_eq(ferry_future_error(a), "bad shape 3");
    ferry_assert_status(ferry_future_wait(b, 5), FERRY_EINVAL);
    cr_assert_not_null(ferry_future_error(b));
    /* add_one sees the parent's failure through ferry_future_value and passes it on. */
    ferry_assert_status(ferry_future_wait(c, 5), FERRY_EREMOTE);
    cr_assert_str_eq(ferry_future_error(c), "parent failed");
    ferry_future_release(f);
    ferry_future_release(a);
    ferry_future_release(b);
    ferry_future_release(c);
}

static ferry_value *count_call(ferry_future *done, void *user)
{
    atomic_fetch_add((atomic_int *)user, 1);
    return ferry_none();
}

Test(future_then, runs_each_callback_once_when_8_threads_complete_1000, .timeout = 20)
{
    enum { N = 1000, THREADS = 8 };
    static ferry_future *futures[N], *children[N];
    atomic_int calls = 0;
    for (int i = 0; i < N; i++) {
        futures[i] = ferry_assert_ptr(ferry_future_new());
        children[i] = ferry_assert_ptr(ferry_future_then(futures[i], count_call, &calls));
    }
    pthread_t th[THREADS];
    complete_range ranges[THREADS];
    for (int t = 0; t < THREADS; t++) {
        ranges[t] = (complete_range){futures, t * N / THREADS, (t + 1) * N / THREADS};
        cr_assert_eq(pthread_create(&th[t], NULL, complete_range_main, &ranges[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    ferry_value *values = ferry_assert_ptr(ferry_future_wait_all(children, N, 15));
    cr_assert_eq(atomic_load(&calls), N);
    cr_assert_eq(ferry_list_len(values), N);
    ferry_value_release(values);
    for (int i = 0; i < N; i++) {
        ferry_future_release(futures[i]);
        ferry_future_release(children[i]);
    }
}

static ferry_value *on_my_pool(ferry_future *done, void *user)
{
    return ferry_bool(ferry__pool_on_pool_thread());
}

Test(future_then, runs_on_named_pool_when_pool_set, .timeout = 5)
{
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(1, 8, "test"));
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry__future_set_pool(f, pool);
    ferry_future *g = ferry_assert_ptr(ferry_future_then(f, on_my_pool, NULL));
    ferry_assert_ok(ferry_future_set_value(f, NULL));
    ferry_value *v = ferry_assert_ptr(ferry_future_value(g));
    cr_assert(ferry_value_as_bool(v));
    ferry_value_release(v);
    ferry_future_release(f);
    ferry_future_release(g);
    ferry__pool_free(pool);
}

typedef struct {
    pthread_t completer;
    int calls;
    bool reentered;
} inline_probe;

static void note_reentry(ferry_future *f, void *arg)
{
    ((inline_probe *)arg)->reentered = true;
}

static void on_done_probe(ferry_future *f, void *arg)
{
    inline_probe *p = arg;
    p->calls++;
    cr_assert(pthread_equal(p->completer, pthread_self()), "runs on the completing thread");
    /* Registering again takes the future's lock: this would hang if the lock were held. */
    ferry_assert_ok(ferry__future_on_done(f, note_reentry, p));
}

Test(future_on_done, runs_inline_without_lock_when_completed, .timeout = 5)
{
    inline_probe p = {.completer = pthread_self()};
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry__future_on_done(f, on_done_probe, &p));
    cr_assert_eq(p.calls, 0);
    ferry_assert_ok(ferry_future_set_value(f, NULL));
    cr_assert_eq(p.calls, 1);
    cr_assert(p.reentered);
    ferry_assert_ok(ferry__future_on_done(f, on_done_probe, &p)); /* already done: runs now */
    cr_assert_eq(p.calls, 2);
    ferry_future_release(f);
}

typedef struct {
    ferry_future *gate; /* completed by the second task */
    ferry_future *done; /* completed by the first task once the gate opened */
} nested_wait;

static void wait_for_gate(void *arg)
{
    nested_wait *n = arg;
    ferry_status rc = ferry_future_wait(n->gate, 0);
    if (rc == FERRY_OK)
        ferry_future_set_value(n->done, NULL);
    else
        ferry_future_set_error(n->done, rc, ferry_last_error());
}

static void open_gate(void *arg)
{
    ferry_future_set_value(((nested_wait *)arg)->gate, NULL);
}

Test(future_wait, does_not_deadlock_when_pool_thread_waits_on_queued_task, .timeout = 10)
{
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(1, 8, "nest"));
    nested_wait n = {ferry_assert_ptr(ferry_future_new()), ferry_assert_ptr(ferry_future_new())};
    ferry_assert_ok(ferry__pool_submit(pool, wait_for_gate, &n));
    ferry_assert_ok(ferry__pool_submit(pool, open_gate, &n));
    ferry_assert_ok(ferry_future_wait(n.done, 8));
    ferry__pool_free(pool);
    ferry_future_release(n.gate);
    ferry_future_release(n.done);
}

Test(future_alloc, returns_enomem_when_allocation_fails, .timeout = 5)
{
    ferry__alloc_fail_after(1, 0);
    cr_assert_null(ferry_future_new());
    cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);

    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    for (long nth = 1; nth <= 2; nth++) {
        ferry__alloc_fail_after(nth, 1);
        ferry_clear_error();
        cr_assert_null(ferry_future_then(f, add_one, NULL));
        ferry__alloc_fail_after(0, 0);
        cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
    }
    ferry_future *fs[3] = {f, f, f};
    /* collect_all makes the list (2), its state and a value per future (4) at the call. */
    for (long nth = 1; nth <= 6; nth++) {
        ferry__alloc_fail_after(nth, 1);
        ferry_clear_error();
        cr_assert_null(ferry_future_collect_all(fs, 3));
        ferry__alloc_fail_after(0, 0);
        cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
    }
    ferry__alloc_fail_after(1, 1); /* the all-of future's state (or the future itself) */
    ferry_clear_error();
    cr_assert_null(ferry__future_all_of(fs, 3));
    cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
    ferry_clear_error();
    cr_assert_null(ferry_future_wait_all(fs, 3, 1));
    ferry__alloc_fail_after(0, 0);
    cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
    ferry__alloc_fail_after(1, 0);
    ferry_assert_status(ferry__future_on_done(f, NULL, NULL), FERRY_EINVAL);
    ferry_assert_ok(ferry_future_set_value(f, NULL)); /* callbacks left from the failures run */
    ferry__alloc_fail_after(0, 0);
    ferry_future_release(f);
}
