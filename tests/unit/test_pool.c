/* Unit tests for the worker pool: exact counts under load from many submitters, a full queue,
   draining on free, spare threads for blocked workers (and their exit), and the default pool. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "core/future_impl.h"
#include "core/pool.h"
#include "test_util.h"

static void count_task(void *arg)
{
    atomic_fetch_add_explicit((atomic_long *)arg, 1, memory_order_relaxed);
}

typedef struct {
    ferry__pool *pool;
    atomic_long *counter;
    int tasks;
    int failures;
} submitter;

static void *submitter_main(void *arg)
{
    submitter *s = arg;
    for (int i = 0; i < s->tasks; i++) {
        if (ferry__pool_submit_wait(s->pool, count_task, s->counter) != FERRY_OK)
            s->failures++;
    }
    return NULL;
}

Test(pool_submit, runs_every_task_once_when_8_threads_submit_10k_each, .timeout = 30)
{
    enum { SUBMITTERS = 8, TASKS = 10000 };
    atomic_long counter = 0;
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(4, 256, "load"));
    pthread_t th[SUBMITTERS];
    submitter subs[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        subs[i] = (submitter){pool, &counter, TASKS, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, submitter_main, &subs[i]), 0);
    }
    for (int i = 0; i < SUBMITTERS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(subs[i].failures, 0);
    }
    ferry__pool_free(pool);
    cr_assert_eq(atomic_load(&counter), (long)SUBMITTERS * TASKS);
}

/* A task that holds its thread until the test opens the gate (a plain condition variable, so
   the pool does not see the thread as blocked and lend a spare). */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, open;
} gate;

#define GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false}

static void gate_task(void *arg)
{
    gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->started = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_await_start(gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->started)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

Test(pool_submit, returns_eagain_when_queue_full, .timeout = 10)
{
    gate g = GATE_INIT;
    atomic_long counter = 0;
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(1, 2, "full"));
    ferry_assert_ok(ferry__pool_submit(pool, gate_task, &g));
    gate_await_start(&g); /* the only thread is busy and the queue is empty */
    ferry_assert_ok(ferry__pool_submit(pool, count_task, &counter));
    ferry_assert_ok(ferry__pool_submit(pool, count_task, &counter));
    ferry_assert_status(ferry__pool_submit(pool, count_task, &counter), FERRY_EAGAIN);
    ferry__pool_stats st;
    ferry__pool_get_stats(pool, &st);
    cr_assert_eq(st.queued, 2);
    cr_assert_eq(st.threads, 1);
    gate_open(&g);
    ferry__pool_free(pool);
    cr_assert_eq(atomic_load(&counter), 2);
}

Test(pool_free, runs_queued_tasks_when_freed, .timeout = 10)
{
    gate g = GATE_INIT;
    atomic_long counter = 0;
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(1, 64, "drain"));
    ferry_assert_ok(ferry__pool_submit(pool, gate_task, &g));
    gate_await_start(&g);
    for (int i = 0; i < 50; i++)
        ferry_assert_ok(ferry__pool_submit(pool, count_task, &counter));
    ferry__pool_stats st;
    ferry__pool_get_stats(pool, &st);
    cr_assert_eq(st.queued, 50);
    gate_open(&g);
    ferry__pool_free(pool);
    cr_assert_eq(atomic_load(&counter), 50);
    ferry__pool_free(NULL);
}

Test(pool_new, fails_with_einval_when_sizes_are_zero, .timeout = 5)
{
    cr_assert_null(ferry__pool_new(0, 4, "bad"));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry__pool_new(1, 0, "bad"));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
}

typedef struct {
    ferry_future *release; /* completed by the test */
    ferry_future *blocked; /* completed by the task right before it blocks */
} blocker;

static void blocking_task(void *arg)
{
    blocker *b = arg;
    ferry_future_set_value(b->blocked, NULL);
    ferry_future_wait(b->release, 0);
}

static bool wait_for_threads(ferry__pool *pool, int want, double limit_s)
{
    long long end = ferry__now_ns() + (long long)(limit_s * 1e9);
    ferry__pool_stats st;
    do {
        ferry__pool_get_stats(pool, &st);
        if (st.threads == want)
            return true;
        nanosleep(&(struct timespec){0, 10000000}, NULL); /* polling a count, not a handshake */
    } while (ferry__now_ns() < end);
    return false;
}

Test(pool_blocking, lends_spare_then_retires_it_when_worker_blocks, .timeout = 15)
{
    atomic_long counter = 0;
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(1, 16, "spare"));
    blocker b = {ferry_assert_ptr(ferry_future_new()), ferry_assert_ptr(ferry_future_new())};
    ferry_assert_ok(ferry__pool_submit(pool, blocking_task, &b));
    ferry_assert_ok(ferry_future_wait(b.blocked, 5));
    /* The only configured thread is (about to be) blocked: queued work still runs. */
    for (int i = 0; i < 10; i++)
        ferry_assert_ok(ferry__pool_submit(pool, count_task, &counter));
    cr_assert(wait_for_threads(pool, 2, 5), "a spare joined the blocked thread");
    ferry_assert_ok(ferry_future_set_value(b.release, NULL));
    cr_assert(wait_for_threads(pool, 1, 8), "the surplus thread retired after idling");
    ferry__pool_free(pool);
    cr_assert_eq(atomic_load(&counter), 10);
    ferry_future_release(b.release);
    ferry_future_release(b.blocked);
}

static void note_pool_thread(void *arg)
{
    atomic_store((atomic_bool *)arg, ferry__pool_on_pool_thread());
}

Test(pool_default, is_one_shared_pool_when_asked_twice, .timeout = 5)
{
    ferry__pool *a = ferry_assert_ptr(ferry__pool_default());
    cr_assert_eq(ferry__pool_default(), a);
    ferry__pool_stats st;
    ferry__pool_get_stats(a, &st);
    cr_assert_eq(st.threads, 4);
    cr_assert_not(ferry__pool_on_pool_thread());
    ferry__pool_blocking_begin(); /* no-op off a pool thread */
    ferry__pool_blocking_end();
    ferry__pool_get_stats(a, &st);
    cr_assert_eq(st.blocked, 0);
    atomic_bool on_pool = false;
    ferry__pool *p = ferry_assert_ptr(ferry__pool_new(1, 4, "probe"));
    ferry_assert_ok(ferry__pool_submit(p, note_pool_thread, &on_pool));
    ferry__pool_free(p);
    cr_assert(atomic_load(&on_pool));
}

/* Blocking tasks past the spare cap queue instead of pulling in a thread each: 40 tasks that all
   block on one future cost 2 + 3 threads; once it completes every task runs. */
typedef struct {
    ferry_future *release;
    atomic_long *ran;
} capped;

static void capped_task(void *arg)
{
    capped *c = arg;
    ferry_future_wait(c->release, 0);
    atomic_fetch_add(c->ran, 1);
}

Test(pool_blocking, spares_stop_at_the_cap_when_every_task_blocks, .timeout = 15)
{
    atomic_long ran = 0;
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(2, 64, "cap"));
    ferry__pool_set_max_spares(pool, 3);
    capped c = {ferry_assert_ptr(ferry_future_new()), &ran};
    for (int i = 0; i < 40; i++)
        ferry_assert_ok(ferry__pool_submit(pool, capped_task, &c));
    cr_assert(wait_for_threads(pool, 5, 5), "blocked tasks pulled in spares up to the cap");
    nanosleep(&(struct timespec){0, 100000000}, NULL); /* give a wrong pool time to overshoot */
    ferry__pool_stats st;
    ferry__pool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 5);
    cr_assert_eq(st.blocked, 5);
    cr_assert_eq(st.queued, 35);
    ferry_assert_ok(ferry_future_set_value(c.release, NULL));
    ferry__pool_free(pool);
    cr_assert_eq(atomic_load(&ran), 40);
    ferry_future_release(c.release);
}

/* A chain of tasks, each submitting the next and waiting for it (nested rpc_sync on one worker),
   completes while its depth fits in size + spares. */
typedef struct chain {
    ferry__pool *pool;
    int depth;
    ferry_future *done;
} chain;

static void chain_task(void *arg)
{
    chain *c = arg;
    if (c->depth > 0) {
        chain next = {c->pool, c->depth - 1, ferry_future_new()};
        if (next.done && ferry__pool_submit(c->pool, chain_task, &next) == FERRY_OK)
            ferry_future_wait(next.done, 10);
        ferry_future_release(next.done);
    }
    ferry_future_set_value(c->done, NULL);
}

Test(pool_blocking, nested_chain_completes_when_depth_fits_under_the_cap, .timeout = 15)
{
    ferry__pool *pool = ferry_assert_ptr(ferry__pool_new(2, 64, "chain"));
    ferry__pool_set_max_spares(pool, 8);
    chain top = {pool, 9, ferry_assert_ptr(ferry_future_new())}; /* 10 tasks: 2 + 8 threads */
    ferry_assert_ok(ferry__pool_submit(pool, chain_task, &top));
    ferry_assert_ok(ferry_future_wait(top.done, 10));
    ferry_future_release(top.done);
    ferry__pool_free(pool);
}
