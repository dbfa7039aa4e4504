/* Correctness of the call path under load, where idle pool threads read the fabric and run the
   calls they read: many threads on every worker calling every other (and themselves) with
   ordinary functions, some that block, some that call a third worker, and async windows, all
   checked value by value, so a lost, duplicated or misrouted reply fails the test; and a
   function that blocks for a long time on the thread that read it holds up nothing else. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rpc_harness.h"

#define THREADS 6
#define ROUNDS 120
#define WINDOW 16

/* tag(a, b, c) returns a * 1000000 + b * 1000 + c, after sleeping d microseconds if given. */
static ferry_status tag_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    int64_t a = ferry_value_as_int(ferry_list_get(args, 0));
    int64_t b = ferry_value_as_int(ferry_list_get(args, 1));
    int64_t c = ferry_value_as_int(ferry_list_get(args, 2));
    if (ferry_list_len(args) > 3)
        usleep((useconds_t)ferry_value_as_int(ferry_list_get(args, 3)));
    *result = ferry_int(a * 1000000 + b * 1000 + c);
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

/* relay(to, a, b, c) calls tag(a, b, c) on worker `to` from inside a function and returns it. */
static ferry_status relay_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    char to[32];
    snprintf(to, sizeof to, "worker%d", (int)ferry_value_as_int(ferry_list_get(args, 0)));
    ferry_value *inner = ferry_args(3, ferry_value_retain(ferry_list_get(args, 1)),
                                    ferry_value_retain(ferry_list_get(args, 2)),
                                    ferry_value_retain(ferry_list_get(args, 3)));
    *result = ferry_rpc_sync(to, "tag", inner, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(inner);
    return *result ? FERRY_OK : ferry_last_status();
}

static void register_load(void)
{
    cr_assert(ferry_register_function("tag", tag_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("relay", relay_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("sleep", rpc_test_sleep, NULL) == FERRY_OK);
}

typedef struct {
    int rank, world, thread;
    int failures;
    char why[160];
} load_arg;

static int64_t expect_of(int a, int b, int c)
{
    return (int64_t)a * 1000000 + (int64_t)b * 1000 + c;
}

static void fail(load_arg *l, const char *what, int i, int64_t want, const ferry_value *got)
{
    if (l->failures++ == 0)
        snprintf(l->why, sizeof l->why, "%s %d: want %lld, got %lld (%s)", what, i,
                 (long long)want, got ? (long long)ferry_value_as_int(got) : -1LL,
                 got ? "value" : ferry_last_error());
}

static void *load_main(void *p)
{
    load_arg *l = p;
    int me = l->rank * 10 + l->thread;
    char to[32];
    for (int i = 0; i < ROUNDS; i++) {
        int dst = (l->rank + i) % l->world; /* every worker, this one included */
        snprintf(to, sizeof to, "worker%d", dst);
        /* A plain call, and one that blocks briefly on the callee. */
        ferry_value *a = i % 3 == 0 ? ferry_args(4, ferry_int(me), ferry_int(i), ferry_int(dst),
                                                 ferry_int(200 * (i % 5)))
                                    : ferry_args(3, ferry_int(me), ferry_int(i), ferry_int(dst));
        ferry_value *v = ferry_rpc_sync(to, "tag", a, NULL, FERRY_TIMEOUT_DEFAULT);
        if (!v || ferry_value_as_int(v) != expect_of(me, i, dst))
            fail(l, "tag", i, expect_of(me, i, dst), v);
        ferry_value_release(v);
        ferry_value_release(a);
        /* A function that calls a third worker from inside. */
        int third = (dst + 1) % l->world;
        a = ferry_args(4, ferry_int(third), ferry_int(me), ferry_int(i), ferry_int(-third));
        v = ferry_rpc_sync(to, "relay", a, NULL, FERRY_TIMEOUT_DEFAULT);
        if (!v || ferry_value_as_int(v) != expect_of(me, i, -third))
            fail(l, "relay", i, expect_of(me, i, -third), v);
        ferry_value_release(v);
        ferry_value_release(a);
        /* A window of async calls spread over the workers, completed out of order. */
        if (i % 10 == 0) {
            ferry_future *fs[WINDOW];
            for (int k = 0; k < WINDOW; k++) {
                snprintf(to, sizeof to, "worker%d", (dst + k) % l->world);
                a = ferry_args(4, ferry_int(me), ferry_int(i), ferry_int(k),
                               ferry_int(k % 4 == 0 ? 1000 : 0));
                fs[k] = ferry_rpc_async(to, "tag", a, NULL, FERRY_TIMEOUT_DEFAULT);
                ferry_value_release(a);
            }
            for (int k = WINDOW - 1; k >= 0; k--) {
                v = fs[k] ? ferry_future_value(fs[k]) : NULL;
                if (!v || ferry_value_as_int(v) != expect_of(me, i, k))
                    fail(l, "async tag", i * 100 + k, expect_of(me, i, k), v);
                ferry_value_release(v);
                ferry_future_release(fs[k]);
            }
        }
    }
    return NULL;
}

static int body_load(int rank, int world, const rpc_case *c)
{
    pthread_t th[THREADS];
    load_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (load_arg){.rank = rank, .world = world, .thread = i};
        RANK_CHECK(pthread_create(&th[i], NULL, load_main, &args[i]) == 0);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (args[i].failures)
            fprintf(stderr, "rank %d thread %d: %d failures, first: %s\n", rank, i,
                    args[i].failures, args[i].why);
        failures += args[i].failures;
    }
    RANK_CHECK(failures == 0);
    return 0;
}

/* worker0 starts a call that sleeps 1.5 s on worker1, then makes 200 quick calls to worker1:
   whichever thread read the sleeping call runs it, and the others still answer at once. */
static int body_blocker(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_value *slow = ferry_args(1, ferry_double(1.5));
    ferry_future *f = ferry_rpc_async("worker1", "sleep", slow, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(slow);
    RANK_CHECK(f);
    usleep(50000);
    double t0 = rpc_test_now_s();
    for (int i = 0; i < 200; i++) {
        ferry_value *a = ferry_args(3, ferry_int(7), ferry_int(i), ferry_int(1));
        ferry_value *v = ferry_rpc_sync("worker1", "tag", a, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v && ferry_value_as_int(v) == expect_of(7, i, 1));
        ferry_value_release(v);
        ferry_value_release(a);
    }
    double dt = rpc_test_now_s() - t0;
    RANK_CHECK(!ferry_future_done(f)); /* the quick calls did not wait behind the sleeper */
    RANK_CHECK(dt < 1.4);
    RANK_CHECK(ferry_future_wait(f, 0) == FERRY_OK);
    ferry_future_release(f);
    return 0;
}

#define BOTH(name, world, body, secs)                                                     \
    Test(serve_load_tcp, name, .timeout = secs)                                           \
    {                                                                                     \
        register_load();                                                                  \
        rpc_case_run("tcp", world, body, NULL, secs - 5);                                 \
    }                                                                                     \
    Test(serve_load_shm, name, .timeout = secs)                                           \
    {                                                                                     \
        register_load();                                                                  \
        rpc_case_run("shm", world, body, NULL, secs - 5);                                 \
    }

BOTH(every_reply_reaches_its_caller_when_4_workers_x_6_threads_mix_calls, 4, body_load, 120)
BOTH(quick_calls_answer_while_a_function_blocks_the_thread_that_read_it, 2, body_blocker, 40)
