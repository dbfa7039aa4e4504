/* Unit tests for futures of many futures, in the cases torch's tests of collect_all and wait_all
   check: all succeed (one completed later by another thread), one fails, errors inside the
   collected list, empty input, inputs already completed, fail-fast exits that leave a blocked
   input pending, waits that run out, bad arguments, and many threads completing and waiting. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/future_impl.h"
#include "test_util.h"

static ferry_future *done_with_int(int64_t i)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_value *v = ferry_assert_ptr(ferry_int(i));
    ferry_assert_ok(ferry_future_set_value(f, v));
    ferry_value_release(v);
    return f;
}

static ferry_future *failed_with(ferry_status rc, const char *msg)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_assert_ok(ferry_future_set_error(f, rc, msg));
    return f;
}

static void release_all(ferry_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ferry_future_release(fs[i]);
}

typedef struct {
    ferry_future *f;
    int64_t value;
    long delay_ms;
} set_later;

static void *set_later_main(void *arg)
{
    set_later *s = arg;
    nanosleep(&(struct timespec){0, s->delay_ms * 1000000L}, NULL);
    ferry_value *v = ferry_int(s->value);
    ferry_future_set_value(s->f, v);
    ferry_value_release(v);
    return NULL;
}

/* The i-th item of a collect_all list: its future, checked to be input `want`. */
static ferry_future *item_future(ferry_value *list, size_t i, ferry_future *want)
{
    ferry_value *item = ferry_assert_ptr(ferry_list_get(list, i));
    cr_assert_eq(ferry_value_kind(item), FERRY_VALUE_FUTURE);
    ferry_future *f = ferry_assert_ptr(ferry_value_as_future(item));
    cr_assert_eq(f, want, "item %zu is the input future itself", i);
    return f;
}

/* ---- collect_all ---- */

Test(future_collect_all, lists_the_input_futures_when_one_completes_later_on_a_thread,
     .timeout = 5)
{
    ferry_future *fs[2] = {ferry_assert_ptr(ferry_future_new()),
                           ferry_assert_ptr(ferry_future_new())};
    ferry_future *all = ferry_assert_ptr(ferry_future_collect_all(fs, 2));
    set_later s = {fs[0], 1, 40};
    pthread_t th;
    ferry_value *v2 = ferry_int(2);
    ferry_assert_ok(ferry_future_set_value(fs[1], v2));
    ferry_value_release(v2);
    cr_assert_eq(pthread_create(&th, NULL, set_later_main, &s), 0);
    cr_assert_not(ferry_future_done(all));
    ferry_value *list = ferry_assert_ptr(ferry_future_value(all));
    cr_assert_eq(ferry_list_len(list), 2);
    for (size_t i = 0; i < 2; i++) {
        ferry_value *got = ferry_assert_ptr(ferry_future_value(item_future(list, i, fs[i])));
        cr_assert_eq(ferry_value_as_int(got), (int64_t)i + 1);
        ferry_value_release(got);
    }
    pthread_join(th, NULL);
    ferry_value_release(list);
    ferry_future_release(all);
    release_all(fs, 2);
}

Test(future_collect_all, succeeds_with_the_error_inside_the_list_when_an_input_fails,
     .timeout = 5)
{
    ferry_future *fs[3] = {ferry_assert_ptr(ferry_future_new()),
                           ferry_assert_ptr(ferry_future_new()),
                           ferry_assert_ptr(ferry_future_new())};
    ferry_future *all = ferry_assert_ptr(ferry_future_collect_all(fs, 3));
    ferry_assert_ok(ferry_future_set_error(fs[1], FERRY_EREMOTE, "worker1: Expected error"));
    cr_assert_not(ferry_future_done(all), "a failed input does not complete it early");
    ferry_assert_ok(ferry_future_set_value(fs[2], NULL));
    cr_assert_not(ferry_future_done(all));
    ferry_assert_ok(ferry_future_set_error(fs[0], FERRY_ETIMEDOUT, "call timed out"));
    cr_assert(ferry_future_done(all));
    ferry_assert_ok(ferry_future_wait(all, 1));
    cr_assert_eq(ferry_future_status(all), FERRY_OK);
    cr_assert_null(ferry_future_error(all));
    ferry_value *list = ferry_assert_ptr(ferry_future_value(all));
    cr_assert_eq(ferry_list_len(list), 3);
    ferry_assert_status(ferry_future_wait(item_future(list, 0, fs[0]), 0), FERRY_ETIMEDOUT);
    ferry_assert_status(ferry_future_wait(item_future(list, 1, fs[1]), 0), FERRY_EREMOTE);
    cr_assert_str_eq(ferry_last_error(), "worker1: Expected error");
    ferry_value *none = ferry_assert_ptr(ferry_future_value(item_future(list, 2, fs[2])));
    cr_assert_eq(ferry_value_kind(none), FERRY_VALUE_NONE);
    ferry_value_release(none);
    /* The list holds the futures: they outlive the caller's references. */
    release_all(fs, 3);
    cr_assert_eq(ferry_future_status(ferry_value_as_future(ferry_list_get(list, 1))),
                 FERRY_EREMOTE);
    ferry_value_release(list);
    ferry_future_release(all);
}

Test(future_collect_all, completes_at_once_when_empty_or_inputs_already_done, .timeout = 5)
{
    ferry_future *all = ferry_assert_ptr(ferry_future_collect_all(NULL, 0));
    cr_assert(ferry_future_done(all));
    ferry_value *list = ferry_assert_ptr(ferry_future_value(all));
    cr_assert_eq(ferry_value_kind(list), FERRY_VALUE_LIST);
    cr_assert_eq(ferry_list_len(list), 0);
    ferry_value_release(list);
    ferry_future_release(all);

    ferry_future *fs[2] = {done_with_int(5), failed_with(FERRY_EREMOTE, "bad")};
    all = ferry_assert_ptr(ferry_future_collect_all(fs, 2));
    cr_assert(ferry_future_done(all));
    cr_assert_eq(ferry_future_status(all), FERRY_OK);
    list = ferry_assert_ptr(ferry_future_value(all));
    item_future(list, 0, fs[0]);
    cr_assert_eq(ferry_future_status(item_future(list, 1, fs[1])), FERRY_EREMOTE);
    ferry_value_release(list);
    ferry_future_release(all);
    release_all(fs, 2);
}

Test(future_collect_all, refuses_bad_arguments_naming_the_entry, .timeout = 5)
{
    ferry_future *ok = done_with_int(1);
    ferry_future *bad[2] = {ok, NULL};
    cr_assert_null(ferry_future_collect_all(bad, 2));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "collect_all: future 1 is NULL");
    cr_assert_null(ferry_future_collect_all(NULL, 3));
    cr_assert_str_eq(ferry_last_error(), "collect_all: NULL array of 3 futures");
    ferry_future_release(ok);
}

Test(future_collect_all, frees_everything_when_released_before_inputs_complete, .timeout = 5)
{
    ferry_future *fs[2] = {ferry_assert_ptr(ferry_future_new()),
                           ferry_assert_ptr(ferry_future_new())};
    ferry_future *all = ferry_assert_ptr(ferry_future_collect_all(fs, 2));
    ferry_future_release(all);
    ferry_assert_ok(ferry_future_set_value(fs[0], NULL));
    ferry_assert_ok(ferry_future_set_error(fs[1], FERRY_EREMOTE, "late"));
    release_all(fs, 2);
    /* An input released pending: its callback never runs, and collect_all's state goes with
       it (leak checks in the sanitizer build). */
    ferry_future *p = ferry_assert_ptr(ferry_future_new());
    all = ferry_assert_ptr(ferry_future_collect_all(&p, 1));
    ferry_future_release(all);
    ferry_future_release(p);
}

typedef struct {
    ferry_future **futures;
    int from, to;
} complete_range;

static void *complete_range_main(void *arg)
{
    complete_range *r = arg;
    for (int i = r->from; i < r->to; i++) {
        if (i % 7 == 3)
            ferry_future_set_error(r->futures[i], FERRY_EREMOTE, "seventh");
        else
            ferry_future_set_value(r->futures[i], NULL);
    }
    return NULL;
}

enum { MANY = 1000, THREADS = 8 };

static void complete_on_threads(ferry_future **fs)
{
    pthread_t th[THREADS];
    complete_range ranges[THREADS];
    for (int t = 0; t < THREADS; t++) {
        ranges[t] = (complete_range){fs, t * MANY / THREADS, (t + 1) * MANY / THREADS};
        cr_assert_eq(pthread_create(&th[t], NULL, complete_range_main, &ranges[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
}

Test(future_collect_all, completes_once_when_8_threads_complete_1000_inputs, .timeout = 20)
{
    static ferry_future *fs[MANY];
    for (int i = 0; i < MANY; i++)
        fs[i] = ferry_assert_ptr(ferry_future_new());
    ferry_future *all = ferry_assert_ptr(ferry_future_collect_all(fs, MANY));
    complete_on_threads(fs);
    ferry_value *list = ferry_assert_ptr(ferry_future_value(all));
    cr_assert_eq(ferry_list_len(list), MANY);
    for (int i = 0; i < MANY; i++) {
        ferry_future *f = item_future(list, (size_t)i, fs[i]);
        cr_assert_eq(ferry_future_status(f), i % 7 == 3 ? FERRY_EREMOTE : FERRY_OK);
    }
    ferry_value_release(list);
    ferry_future_release(all);
    release_all(fs, MANY);
}

/* ---- wait_all ---- */

Test(future_wait_all, returns_values_in_order_when_all_succeed, .timeout = 5)
{
    ferry_future *fs[3] = {done_with_int(1), done_with_int(2), ferry_assert_ptr(ferry_future_new())};
    ferry_assert_ok(ferry_future_set_value(fs[2], NULL));
    ferry_value *list = ferry_assert_ptr(ferry_future_wait_all(fs, 3, 0));
    cr_assert_eq(ferry_list_len(list), 3);
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 0)), 1);
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 1)), 2);
    cr_assert_eq(ferry_value_kind(ferry_list_get(list, 2)), FERRY_VALUE_NONE);
    ferry_value_release(list);
    release_all(fs, 3);

    list = ferry_assert_ptr(ferry_future_wait_all(NULL, 0, 0));
    cr_assert_eq(ferry_list_len(list), 0);
    ferry_value_release(list);
}

Test(future_wait_all, returns_values_when_inputs_complete_later_on_a_thread, .timeout = 5)
{
    ferry_future *fs[2] = {ferry_assert_ptr(ferry_future_new()), done_with_int(2)};
    set_later s = {fs[0], 1, 40};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, set_later_main, &s), 0);
    ferry_value *list = ferry_assert_ptr(ferry_future_wait_all(fs, 2, 4));
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 0)), 1);
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 1)), 2);
    pthread_join(th, NULL);
    ferry_value_release(list);
    release_all(fs, 2);
}

static ferry_value *raise_in_callback(ferry_future *done, void *user)
{
    ferry_set_error(FERRY_EREMOTE, "Expected error");
    return NULL;
}

Test(future_wait_all, fails_with_the_error_when_a_then_callback_raised, .timeout = 5)
{
    ferry_future *f1 = done_with_int(1), *f2 = done_with_int(2);
    ferry_future *f3 = ferry_assert_ptr(ferry_future_then(f1, raise_in_callback, NULL));
    ferry_future *fs[2] = {f3, f2};
    ferry_clear_error();
    cr_assert_null(ferry_future_wait_all(fs, 2, 0));
    cr_assert_eq(ferry_last_status(), FERRY_EREMOTE);
    cr_assert_str_eq(ferry_last_error(), "Expected error");
    ferry_future_release(f1);
    ferry_future_release(f2);
    ferry_future_release(f3);
}

Test(future_wait_all, exits_early_without_waiting_for_a_blocked_input, .timeout = 5)
{
    ferry_future *blocked = ferry_assert_ptr(ferry_future_new());
    ferry_future *fs[3] = {blocked, ferry_assert_ptr(ferry_future_new()),
                           failed_with(FERRY_EREMOTE, "second failure")};
    ferry_assert_ok(ferry_future_set_error(fs[1], FERRY_EREMOTE, "size of tensor a (2) must "
                                           "match the size of tensor b (3)"));
    long long t0 = ferry__now_ns();
    cr_assert_null(ferry_future_wait_all(fs, 3, 0));
    cr_assert_lt(ferry__now_ns() - t0, 1000000000LL, "returned at once");
    cr_assert_eq(ferry_last_status(), FERRY_EREMOTE);
    cr_assert_str_eq(ferry_last_error(), "size of tensor a (2) must match the size of tensor b "
                                         "(3)");
    cr_assert_not(ferry_future_done(blocked));
    ferry_assert_ok(ferry_future_set_value(blocked, NULL)); /* finishes cleanly afterwards */
    release_all(fs, 3);
}

static void *fail_later_main(void *arg)
{
    nanosleep(&(struct timespec){0, 30 * 1000000L}, NULL);
    ferry_future_set_error(arg, FERRY_ETIMEDOUT, "call to worker1 timed out");
    return NULL;
}

Test(future_wait_all, fails_as_soon_as_a_pending_input_fails_while_another_stays_blocked,
     .timeout = 5)
{
    ferry_future *fs[2] = {ferry_assert_ptr(ferry_future_new()),
                           ferry_assert_ptr(ferry_future_new())};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, fail_later_main, fs[1]), 0);
    cr_assert_null(ferry_future_wait_all(fs, 2, 0));
    cr_assert_eq(ferry_last_status(), FERRY_ETIMEDOUT);
    cr_assert_str_eq(ferry_last_error(), "call to worker1 timed out");
    cr_assert_not(ferry_future_done(fs[0]));
    pthread_join(th, NULL);
    release_all(fs, 2);
}

Test(future_wait_all, fails_again_on_every_wait_when_20_inputs_failed, .timeout = 5)
{
    enum { N = 20 };
    ferry_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = failed_with(FERRY_EREMOTE, "ValueError: Expected error");
    for (int round = 0; round < 2; round++) {
        cr_assert_null(ferry_future_wait_all(fs, N, 0));
        cr_assert_eq(ferry_last_status(), FERRY_EREMOTE);
        cr_assert_str_eq(ferry_last_error(), "ValueError: Expected error");
    }
    for (int i = 0; i < N; i++) {
        ferry_assert_status(ferry_future_wait(fs[i], 0), FERRY_EREMOTE);
        ferry_assert_status(ferry_future_wait(fs[i], 0), FERRY_EREMOTE);
    }
    release_all(fs, N);
}

Test(future_wait_all, says_how_many_are_pending_when_the_wait_runs_out, .timeout = 5)
{
    ferry_future *fs[3] = {done_with_int(1), ferry_assert_ptr(ferry_future_new()),
                           ferry_assert_ptr(ferry_future_new())};
    cr_assert_null(ferry_future_wait_all(fs, 3, 0.05));
    cr_assert_eq(ferry_last_status(), FERRY_EAGAIN);
    cr_assert_str_eq(ferry_last_error(), "wait_all: the wait ran out after 0.05 s with 2 of 3 "
                                         "futures still pending");
    ferry_assert_ok(ferry_future_set_value(fs[1], NULL));
    ferry_assert_ok(ferry_future_set_value(fs[2], NULL));
    ferry_value *list = ferry_assert_ptr(ferry_future_wait_all(fs, 3, 0.05)); /* again: fine */
    cr_assert_eq(ferry_list_len(list), 3);
    ferry_value_release(list);
    release_all(fs, 3);
}

Test(future_wait_all, refuses_bad_arguments_naming_the_entry, .timeout = 5)
{
    ferry_future *ok = done_with_int(1);
    ferry_future *bad[2] = {NULL, ok};
    cr_assert_null(ferry_future_wait_all(bad, 2, 0));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "wait_all: future 0 is NULL");
    cr_assert_null(ferry_future_wait_all(NULL, 1, 0));
    cr_assert_str_eq(ferry_last_error(), "wait_all: NULL array of 1 futures");
    ferry_future_release(ok);
}

typedef struct {
    ferry_future **fs;
    size_t n;
    ferry_status rc;
    size_t len;
} waiter;

static void *wait_all_main(void *arg)
{
    waiter *w = arg;
    ferry_value *list = ferry_future_wait_all(w->fs, w->n, 10);
    w->rc = list ? FERRY_OK : ferry_last_status();
    w->len = ferry_list_len(list);
    ferry_value_release(list);
    return NULL;
}

Test(future_wait_all, every_waiter_sees_the_outcome_when_8_threads_wait_on_1000, .timeout = 20)
{
    static ferry_future *fs[MANY];
    for (int i = 0; i < MANY; i++)
        fs[i] = ferry_assert_ptr(ferry_future_new());
    waiter ok[THREADS], failing[THREADS];
    pthread_t th[2 * THREADS];
    for (int t = 0; t < THREADS; t++) {
        ok[t] = (waiter){fs, 3, FERRY_EAGAIN, 0};        /* 0..2 all succeed */
        failing[t] = (waiter){fs, MANY, FERRY_EAGAIN, 0}; /* 3 fails */
        cr_assert_eq(pthread_create(&th[t], NULL, wait_all_main, &ok[t]), 0);
        cr_assert_eq(pthread_create(&th[THREADS + t], NULL, wait_all_main, &failing[t]), 0);
    }
    complete_on_threads(fs);
    for (int t = 0; t < 2 * THREADS; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < THREADS; t++) {
        cr_assert_eq(ok[t].rc, FERRY_OK);
        cr_assert_eq(ok[t].len, 3);
        cr_assert_eq(failing[t].rc, FERRY_EREMOTE);
    }
    release_all(fs, MANY);
}

/* ---- the internal all-of future (what wait_all waits on; the RRef code's) ---- */

Test(future_all_of, gives_values_in_order_or_fails_fast, .timeout = 5)
{
    ferry_future *fs[3];
    for (int i = 0; i < 3; i++)
        fs[i] = ferry_assert_ptr(ferry_future_new());
    ferry_future *all = ferry_assert_ptr(ferry__future_all_of(fs, 3));
    for (int i = 2; i >= 0; i--) {
        ferry_value *v = ferry_assert_ptr(ferry_int(i * 10));
        cr_assert_not(ferry_future_done(all));
        ferry_assert_ok(ferry_future_set_value(fs[i], i == 1 ? NULL : v));
        ferry_value_release(v);
    }
    ferry_value *list = ferry_assert_ptr(ferry_future_value(all));
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 0)), 0);
    cr_assert_eq(ferry_value_kind(ferry_list_get(list, 1)), FERRY_VALUE_NONE);
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 2)), 20);
    ferry_value_release(list);
    ferry_future_release(all);
    release_all(fs, 3);

    ferry_future *gs[2] = {ferry_assert_ptr(ferry_future_new()),
                           ferry_assert_ptr(ferry_future_new())};
    all = ferry_assert_ptr(ferry__future_all_of(gs, 2));
    ferry_assert_ok(ferry_future_set_error(gs[1], FERRY_ETIMEDOUT, "call to w1 timed out"));
    ferry_assert_status(ferry_future_wait(all, 5), FERRY_ETIMEDOUT);
    cr_assert_str_eq(ferry_future_error(all), "call to w1 timed out");
    ferry_future_release(all); /* the pending input still finishes cleanly afterwards */
    ferry_assert_ok(ferry_future_set_value(gs[0], NULL));
    release_all(gs, 2);
}

/* ---- waiting drives the fabric of a pending input ---- */

/* A driver whose poll "reads the reply": it completes the input it belongs to. Nothing else
   completes it, so a wait that did not drive would never return. */
typedef struct {
    ferry_future *input;
    atomic_int polls, refs;
    pthread_t waiter;
    bool polled_elsewhere;
} fake_fabric;

static void *fake_retain(void *ctx)
{
    atomic_fetch_add(&((fake_fabric *)ctx)->refs, 1);
    return ctx;
}

static void fake_release(void *ctx)
{
    atomic_fetch_sub(&((fake_fabric *)ctx)->refs, 1);
}

static void fake_edge(void *ctx)
{
}

static bool fake_poll(void *ctx)
{
    fake_fabric *fab = ctx;
    if (!pthread_equal(fab->waiter, pthread_self()))
        fab->polled_elsewhere = true;
    if (atomic_fetch_add(&fab->polls, 1) == 3) {
        ferry_value *v = ferry_int(77);
        ferry_future_set_value(fab->input, v);
        ferry_value_release(v);
    }
    return false;
}

static const ferry__future_driver fake_driver = {fake_retain, fake_release, fake_edge, fake_poll,
                                                 fake_edge};

Test(future_wait_all, drives_the_fabric_of_a_pending_input_when_it_waits, .timeout = 5)
{
    fake_fabric fab = {.waiter = pthread_self()};
    ferry_future *fs[2] = {done_with_int(1), ferry_assert_ptr(ferry_future_new())};
    fab.input = fs[1];
    ferry__future_set_driver(fs[1], &fake_driver, &fab);
    ferry_value *list = ferry_assert_ptr(ferry_future_wait_all(fs, 2, 3));
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 1)), 77);
    cr_assert_geq(atomic_load(&fab.polls), 4);
    cr_assert_not(fab.polled_elsewhere);
    cr_assert_eq(atomic_load(&fab.refs), 0, "every reference to the driver was given back");
    ferry_value_release(list);
    release_all(fs, 2);
}

Test(future_collect_all, a_wait_on_it_drives_the_fabric_of_a_pending_input, .timeout = 5)
{
    fake_fabric fab = {.waiter = pthread_self()};
    ferry_future *in = ferry_assert_ptr(ferry_future_new());
    fab.input = in;
    ferry__future_set_driver(in, &fake_driver, &fab);
    ferry_future *all = ferry_assert_ptr(ferry_future_collect_all(&in, 1));
    ferry_assert_ok(ferry_future_wait(all, 3));
    cr_assert_eq(ferry_future_status(in), FERRY_OK);
    cr_assert_not(fab.polled_elsewhere);
    ferry_future_release(all);
    ferry_future_release(in);
    cr_assert_eq(atomic_load(&fab.refs), 0);
}
