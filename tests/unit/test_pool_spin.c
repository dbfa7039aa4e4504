/* Unit tests for the pool's spinner: an idle thread lent to a poll function runs the task that
   function hands it, a submit during a spin is run by the spinner without a wake, tasks queued
   while it spins are spread over the other threads, and removing the spinner or freeing the
   pool ends the spin. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/pool.h"
#include "test_util.h"

typedef struct {
    atomic_int begins, ends, polls;
    atomic_int active;      /* begin seen without its end */
    atomic_int handed;      /* tasks poll has handed over */
    atomic_int to_hand;     /* tasks poll should still hand over */
    atomic_int ran;         /* hand_task ran */
    atomic_int overlap;     /* two threads were inside begin/end at once */
    bool moving;            /* poll says it moved something: the spin never idles out, and a
                               preempted thread keeps spinning (a loaded test machine) */
} spin_probe;

static void probe_begin(void *ctx)
{
    spin_probe *p = ctx;
    atomic_fetch_add(&p->begins, 1);
    if (atomic_fetch_add(&p->active, 1) != 0)
        atomic_store(&p->overlap, 1);
}

static void probe_end(void *ctx)
{
    spin_probe *p = ctx;
    atomic_fetch_add(&p->ends, 1);
    atomic_fetch_sub(&p->active, 1);
}

static void hand_task(void *arg)
{
    atomic_fetch_add(&((spin_probe *)arg)->ran, 1);
}

static int probe_poll(void *ctx, ferry__task_fn *fn, void **arg)
{
    spin_probe *p = ctx;
    atomic_fetch_add(&p->polls, 1);
    int left = atomic_load(&p->to_hand);
    if (left > 0 && atomic_compare_exchange_strong(&p->to_hand, &left, left - 1)) {
        atomic_fetch_add(&p->handed, 1);
        *fn = hand_task;
        *arg = p;
        return 2;
    }
    return p->moving ? 1 : 0;
}

static const ferry__pool_spinner probe = {probe_begin, probe_poll, probe_end};

static void wait_for(atomic_int *v, int want, double limit_s)
{
    long long end = ferry__now_ns() + (long long)(limit_s * 1e9);
    while (atomic_load(v) < want && ferry__now_ns() < end)
        usleep(100);
}

Test(pool_spin, runs_each_task_the_spinner_hands_over_exactly_once, .timeout = 20)
{
    spin_probe p = {.moving = true};
    ferry__pool *pool = ferry__pool_new(2, 64, "spin");
    cr_assert_not_null(pool);
    ferry__pool_set_spinner(pool, &probe, &p, 5 * 1000000LL);
    /* Each handed task ends the spin; the thread runs it and spins again (or another does). */
    for (int round = 0; round < 50; round++) {
        atomic_fetch_add(&p.to_hand, 1);
        cr_assert_eq(ferry__pool_submit(pool, hand_task, &p), FERRY_OK); /* wakes a thread */
        wait_for(&p.ran, 2 * (round + 1), 5);
    }
    ferry__pool_free(pool);
    cr_expect_eq(atomic_load(&p.handed), 50);
    cr_expect_eq(atomic_load(&p.ran), 100);
    cr_expect_eq(atomic_load(&p.begins), atomic_load(&p.ends));
    cr_expect_eq(atomic_load(&p.overlap), 0, "one thread at a time spins");
}

Test(pool_spin, runs_a_task_submitted_while_a_thread_spins, .timeout = 20)
{
    spin_probe p = {.moving = true};
    ferry__pool *pool = ferry__pool_new(1, 64, "spin");
    cr_assert_not_null(pool);
    ferry__pool_set_spinner(pool, &probe, &p, 2000 * 1000000LL);
    /* Let the thread settle into its spin, then submit: nothing wakes it, it sees the queue. */
    wait_for(&p.polls, 1000, 5);
    cr_assert_geq(atomic_load(&p.polls), 1000, "the idle thread polls");
    long long t0 = ferry__now_ns();
    cr_assert_eq(ferry__pool_submit(pool, hand_task, &p), FERRY_OK);
    wait_for(&p.ran, 1, 5);
    long long dt = ferry__now_ns() - t0;
    cr_expect_eq(atomic_load(&p.ran), 1);
    cr_expect_lt(dt, 1000 * 1000000LL, "taken well before the 2 s idle window ends (%lld ns)", dt);
    ferry__pool_free(pool);
    cr_expect_eq(atomic_load(&p.begins), atomic_load(&p.ends));
}

static void sleep_task(void *arg)
{
    usleep(100000);
    atomic_fetch_add((atomic_int *)arg, 1);
}

Test(pool_spin, spreads_tasks_queued_during_a_spin_over_idle_threads, .timeout = 20)
{
    spin_probe p = {.moving = true};
    atomic_int done = 0;
    ferry__pool *pool = ferry__pool_new(4, 64, "spin");
    cr_assert_not_null(pool);
    ferry__pool_set_spinner(pool, &probe, &p, 2000 * 1000000LL);
    wait_for(&p.polls, 100, 5);
    /* Four 100 ms tasks at once: run one after another on the spinner they would take 400 ms. */
    long long t0 = ferry__now_ns();
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ferry__pool_submit(pool, sleep_task, &done), FERRY_OK);
    wait_for(&done, 4, 5);
    long long dt = ferry__now_ns() - t0;
    cr_expect_eq(atomic_load(&done), 4);
    cr_expect_lt(dt, 350 * 1000000LL, "the queued tasks ran side by side (%lld ms)",
                 dt / 1000000);
    ferry__pool_free(pool);
}

Test(pool_spin, stops_polling_once_the_spinner_is_removed, .timeout = 20)
{
    spin_probe p = {.moving = true};
    ferry__pool *pool = ferry__pool_new(2, 64, "spin");
    cr_assert_not_null(pool);
    ferry__pool_set_spinner(pool, &probe, &p, 2000 * 1000000LL);
    wait_for(&p.polls, 100, 5);
    ferry__pool_set_spinner(pool, NULL, NULL, 0);
    int polls = atomic_load(&p.polls);
    cr_expect_eq(atomic_load(&p.active), 0, "the spin has ended when set_spinner returns");
    /* Work still runs, with no more polls. */
    cr_assert_eq(ferry__pool_submit(pool, hand_task, &p), FERRY_OK);
    wait_for(&p.ran, 1, 5);
    usleep(20000);
    cr_expect_eq(atomic_load(&p.ran), 1);
    cr_expect_eq(atomic_load(&p.polls), polls);
    ferry__pool_free(pool);
}

Test(pool_spin, frees_promptly_while_a_thread_spins, .timeout = 20)
{
    spin_probe p = {.moving = true};
    ferry__pool *pool = ferry__pool_new(3, 64, "spin");
    cr_assert_not_null(pool);
    ferry__pool_set_spinner(pool, &probe, &p, 60 * 1000000000LL);
    wait_for(&p.polls, 100, 5);
    long long t0 = ferry__now_ns();
    ferry__pool_free(pool);
    long long dt = ferry__now_ns() - t0;
    cr_expect_lt(dt, 1000 * 1000000LL, "free does not wait out the 60 s window (%lld ms)",
                 dt / 1000000);
    cr_expect_eq(atomic_load(&p.begins), atomic_load(&p.ends));
}

Test(pool_spin, sleeps_after_an_idle_window_and_spins_again_after_work, .timeout = 20)
{
    spin_probe p = {0};
    ferry__pool *pool = ferry__pool_new(1, 64, "spin");
    cr_assert_not_null(pool);
    ferry__pool_set_spinner(pool, &probe, &p, 2 * 1000000LL);
    wait_for(&p.ends, 1, 5);
    usleep(50000);
    int polls = atomic_load(&p.polls);
    usleep(50000);
    cr_expect_eq(atomic_load(&p.polls), polls, "no polling once the window passed");
    cr_assert_eq(ferry__pool_submit(pool, hand_task, &p), FERRY_OK);
    wait_for(&p.ends, 2, 5);
    cr_expect_eq(atomic_load(&p.ran), 1);
    cr_expect_geq(atomic_load(&p.begins), 2, "the thread spun again after its task");
    ferry__pool_free(pool);
}
