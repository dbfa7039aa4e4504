/* RPC agent tests: builtins, user functions with every value kind, tensors, errors, timeouts,
   self-calls, nested chains, async functions, concurrency and shutdown, on tcp and shm. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry/ops.h"
#include "rpc_harness.h"

/* ---- functions the tests call ---- */

static ferry_status fail_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    return ferry_set_error(FERRY_EINVAL, "Expected error: bad shape %d", 7);
}

/* hop(ttl, path...): calls the next worker with ttl-1, appending its own name; at 0 returns. */
static ferry_status hop(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                        void *user)
{
    int64_t ttl = ferry_value_as_int(ferry_list_get(args, 0));
    const char *path = ferry_value_as_string(ferry_list_get(args, 1));
    ferry_worker_info me;
    size_t world = 0;
    ferry_get_worker_info(NULL, &me);
    ferry_get_worker_infos(NULL, 0, &world);
    char next_path[512];
    snprintf(next_path, sizeof next_path, "%s>%s", path, me.name);
    if (ttl == 0) {
        *result = ferry_string(next_path);
        return FERRY_OK;
    }
    char next[32];
    snprintf(next, sizeof next, "worker%d", (me.id + 1) % (int)world);
    ferry_value *a = ferry_args(2, ferry_int(ttl - 1), ferry_string(next_path));
    *result = ferry_rpc_sync(next, "hop", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    return *result ? FERRY_OK : ferry_last_status();
}

static ferry_value *plus_one_then(ferry_future *done, void *user)
{
    ferry_value *v = ferry_future_value(done);
    if (!v)
        return NULL;
    ferry_value *r = ferry_int(ferry_value_as_int(v) + 1);
    ferry_value_release(v);
    return r;
}

/* An async function: forwards min(a, b) to the next worker and answers when that completes. */
static ferry_future *async_min(const ferry_value *args, const ferry_value *kwargs, void *user)
{
    ferry_worker_info me;
    size_t world = 0;
    ferry_get_worker_info(NULL, &me);
    ferry_get_worker_infos(NULL, 0, &world);
    char next[32];
    snprintf(next, sizeof next, "worker%d", (me.id + 1) % (int)world);
    ferry_future *f = ferry_rpc_async(next, "min", args, NULL, FERRY_TIMEOUT_DEFAULT);
    if (!f)
        return NULL;
    ferry_future *g = ferry_future_then(f, plus_one_then, NULL);
    ferry_future_release(f);
    return g;
}

static ferry_status die_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    _exit(0);
}

static void register_all(void)
{
    cr_assert(ferry_register_function("die", die_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("fail", fail_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("sleep", rpc_test_sleep, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("whoami", rpc_test_whoami, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("hop", hop, NULL) == FERRY_OK);
    cr_assert(ferry_register_async_function("async_min", async_min, NULL) == FERRY_OK);
}

/* ---- bodies ---- */

static int body_builtins(int rank, int world, const rpc_case *c)
{
    if (rank != 1)
        return 0;
    int64_t two = 2;
    ferry_tensor *ones = ferry_ones(1, &two, FERRY_FLOAT32);
    ferry_value *args = ferry_args(2, ferry_tensor_value(ones), ferry_int(3));
    ferry_value *v = ferry_rpc_sync("worker0", "torch.add", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v);
    ferry_tensor *t = ferry_value_as_tensor(v);
    RANK_CHECK(t && ferry_tensor_numel(t) == 2 && ferry_tensor_dtype(t) == FERRY_FLOAT32);
    RANK_CHECK(ferry_tensor_item_at(t, 0) == 4.0 && ferry_tensor_item_at(t, 1) == 4.0);
    ferry_value_release(v);
    ferry_value_release(args);

    args = ferry_args(2, ferry_int(1), ferry_int(2));
    v = ferry_rpc_sync("worker0", "min", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_kind(v) == FERRY_VALUE_INT && ferry_value_as_int(v) == 1);
    ferry_value_release(v);
    v = ferry_rpc_sync("worker0", "max", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == 2);
    ferry_value_release(v);
    ferry_value_release(args);

    const char *ops[] = {"torch.sub", "torch.mul", "torch.div"};
    const double want[] = {-2.0, 3.0, 1.0 / 3.0};
    args = ferry_args(2, ferry_tensor_value(ones), ferry_int(3));
    for (int i = 0; i < 3; i++) {
        v = ferry_rpc_sync("worker0", ops[i], args, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v);
        double got = ferry_tensor_item_at(ferry_value_as_tensor(v), 1);
        RANK_CHECK(got > want[i] - 1e-6 && got < want[i] + 1e-6);
        ferry_value_release(v);
    }
    ferry_value_release(args);

    args = ferry_args(2, ferry_int(2), ferry_int(3));
    v = ferry_rpc_sync("worker0", "torch.zeros", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_tensor_numel(ferry_value_as_tensor(v)) == 6);
    ferry_value_release(v);
    v = ferry_rpc_sync("worker0", "torch.ones", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v);
    ferry_value *sargs = ferry_args(1, ferry_value_retain(v));
    ferry_value *s = ferry_rpc_sync("worker0", "torch.sum", sargs, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(s && ferry_tensor_item(ferry_value_as_tensor(s)) == 6.0);
    /* torch.matmul of [2,3] x [3,2] ones gives 3s; torch.cat of two [2,3] gives [4,3]. */
    int64_t sz32[2] = {3, 2};
    ferry_tensor *b = ferry_ones(2, sz32, FERRY_FLOAT32);
    ferry_value *mm_args = ferry_args(2, ferry_value_retain(v), ferry_tensor_value(b));
    ferry_value *mm = ferry_rpc_sync("worker0", "torch.matmul", mm_args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(mm && ferry_tensor_numel(ferry_value_as_tensor(mm)) == 4);
    RANK_CHECK(ferry_tensor_item_at(ferry_value_as_tensor(mm), 3) == 3.0);
    ferry_value *cat_args = ferry_args(1, ferry_list_of(2, ferry_value_retain(v), ferry_value_retain(v)));
    ferry_value *cat = ferry_rpc_sync("worker0", "torch.cat", cat_args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(cat && ferry_tensor_sizes(ferry_value_as_tensor(cat))[0] == 4);
    ferry_value_release(cat);
    ferry_value_release(cat_args);
    ferry_value_release(mm);
    ferry_value_release(mm_args);
    ferry_tensor_release(b);
    ferry_value_release(s);
    ferry_value_release(sargs);
    ferry_value_release(v);
    ferry_value_release(args);
    ferry_tensor_release(ones);
    return 0;
}

/* Every value kind round-trips through a user function. */
static int body_kinds(int rank, int world, const rpc_case *c)
{
    int64_t sz[2] = {3, 4};
    ferry_tensor *t = ferry_arange(0, 12, 1, FERRY_FLOAT64);
    ferry_tensor *t2 = ferry_tensor_view(t, 2, sz);
    ferry_tensor *tt = ferry_tensor_transpose(t2, 0, 1); /* non-contiguous */
    ferry_value *d = ferry_dict_new();
    ferry_dict_set(d, "x", ferry_int(5));
    ferry_value *inner = ferry_list_of(2, ferry_string("nested"), ferry_none());
    ferry_dict_set(d, "inner", inner);
    ferry_value_release(inner);
    const char raw[] = {'a', 0, 'b'};
    ferry_value *all = ferry_list_of(9, ferry_none(), ferry_bool(true), ferry_int(-42),
                                     ferry_double(2.5), ferry_string("héllo"),
                                     ferry_bytes(raw, sizeof raw), ferry_tensor_value(t2),
                                     ferry_tensor_value(tt), d);
    char to[32];
    snprintf(to, sizeof to, "worker%d", (rank + 1) % world);
    ferry_value *args = ferry_args(1, ferry_value_retain(all));
    ferry_value *v = ferry_rpc_sync(to, "echo", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v);
    RANK_CHECK(ferry_value_equal(v, all));
    ferry_tensor *back = ferry_value_as_tensor(ferry_list_get(v, 7));
    RANK_CHECK(!ferry_tensor_is_contiguous(back));
    RANK_CHECK(ferry_tensor_strides(back)[0] == 1 && ferry_tensor_strides(back)[1] == 4);
    size_t blen = 0;
    const char *b = ferry_value_as_bytes(ferry_list_get(v, 5), &blen);
    RANK_CHECK(blen == 3 && b[1] == 0 && b[2] == 'b');
    /* kwargs reach the callee: echo of no positional args returns the (empty) args list. */
    ferry_value *kw = ferry_dict_new();
    ferry_dict_set(kw, "k", ferry_int(1));
    ferry_value *none_args = ferry_list_of(0);
    ferry_value *e = ferry_rpc_sync(to, "echo", none_args, kw, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(e && ferry_value_kind(e) == FERRY_VALUE_LIST && ferry_list_len(e) == 0);
    ferry_value_release(e);
    ferry_value_release(none_args);
    ferry_value_release(kw);
    ferry_value_release(v);
    ferry_value_release(args);
    ferry_value_release(all);
    ferry_tensor_release(tt);
    ferry_tensor_release(t2);
    ferry_tensor_release(t);
    return 0;
}

/* Tensors from 0 bytes to 64 MiB come back equal. */
static int body_tensor_sizes(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    const int64_t counts[] = {0, 1, 1000, 4096, 16384, 262144, 4 << 20, 16 << 20};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        ferry_tensor *t = ferry_randn(1, &counts[i], FERRY_FLOAT32, NULL);
        ferry_value *args = ferry_args(1, ferry_tensor_value(t));
        ferry_value *v = ferry_rpc_sync("worker1", "echo", args, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v);
        RANK_CHECK(ferry_tensor_equal(ferry_value_as_tensor(v), t));
        ferry_value_release(v);
        ferry_value_release(args);
        ferry_tensor_release(t);
    }
    return 0;
}

static int body_errors(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_value *args = ferry_list_of(0);
    RANK_CHECK(!ferry_rpc_sync("worker1", "fail", args, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EREMOTE);
    RANK_CHECK(strstr(ferry_last_error(), "worker1") && strstr(ferry_last_error(), "'fail'"));
    RANK_CHECK(strstr(ferry_last_error(), "Expected error: bad shape 7"));

    RANK_CHECK(!ferry_rpc_sync("worker1", "no_such_fn", args, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EUNKNOWN_FUNCTION);
    RANK_CHECK(strstr(ferry_last_error(), "no_such_fn"));

    RANK_CHECK(!ferry_rpc_async("nobody", "echo", args, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EUNKNOWN_WORKER);
    RANK_CHECK(strstr(ferry_last_error(), "could not find destination name nobody"));

    ferry_worker_info info;
    RANK_CHECK(ferry_get_worker_info("nobody", &info) == FERRY_EUNKNOWN_WORKER);
    RANK_CHECK(ferry_get_worker_info("worker1", &info) == FERRY_OK && info.id == 1);

    ferry_value *notalist = ferry_int(3);
    RANK_CHECK(!ferry_rpc_async("worker1", "echo", notalist, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
    ferry_value_release(notalist);

    /* A failed future fails again on every wait. */
    ferry_future *f = ferry_rpc_async("worker1", "fail", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f);
    RANK_CHECK(ferry_future_wait(f, 0) == FERRY_EREMOTE);
    RANK_CHECK(ferry_future_wait(f, 0) == FERRY_EREMOTE && ferry_future_done(f));
    RANK_CHECK(ferry_future_error(f) && strstr(ferry_future_error(f), "Expected error"));
    ferry_future_release(f);
    ferry_value_release(args);
    return 0;
}

static int body_timeouts(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_value *slow = ferry_args(1, ferry_double(0.5));
    RANK_CHECK(!ferry_rpc_sync("worker1", "sleep", slow, NULL, 0.1));
    RANK_CHECK(ferry_last_status() == FERRY_ETIMEDOUT);
    RANK_CHECK(strstr(ferry_last_error(), "RPC ran for more than set timeout (100 ms)"));
    /* The late response to that call arrives and is dropped; the next call is unaffected. */
    ferry_value *v = ferry_rpc_sync("worker1", "sleep", slow, NULL, 5);
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "slept"));
    ferry_value_release(v);
    /* The default applies to calls made afterwards; 0 means no timeout. */
    RANK_CHECK(ferry_set_rpc_timeout(0.05) == FERRY_OK);
    RANK_CHECK(ferry_get_rpc_timeout() == 0.05);
    ferry_future *f = ferry_rpc_async("worker1", "sleep", slow, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_ETIMEDOUT);
    ferry_future_release(f);
    RANK_CHECK(ferry_set_rpc_timeout(0) == FERRY_OK);
    v = ferry_rpc_sync("worker1", "sleep", slow, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v);
    ferry_value_release(v);
    RANK_CHECK(ferry_set_rpc_timeout(20) == FERRY_OK);
    /* A wait that runs out is not a timeout of the call. */
    f = ferry_rpc_async("worker1", "sleep", slow, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0.01) == FERRY_EAGAIN);
    RANK_CHECK(ferry_future_wait(f, 0) == FERRY_OK);
    ferry_future_release(f);
    ferry_value_release(slow);
    return 0;
}

static int body_self_and_nested(int rank, int world, const rpc_case *c)
{
    char me[32];
    snprintf(me, sizeof me, "worker%d", rank);
    ferry_value *none = ferry_list_of(0);
    ferry_value *v = ferry_rpc_sync(me, "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), me));
    ferry_value_release(v);
    ferry_value_release(none);
    if (rank == 0) {
        /* worker0 -> 1 -> 2 -> 0 -> 1 ... 9 hops, through every worker more than once. */
        ferry_value *a = ferry_args(2, ferry_int(9), ferry_string("start"));
        v = ferry_rpc_sync("worker1", "hop", a, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v);
        RANK_CHECK(!strcmp(ferry_value_as_string(v),
                           "start>worker1>worker2>worker0>worker1>worker2>worker0>worker1>worker2"
                           ">worker0>worker1"));
        ferry_value_release(v);
        ferry_value_release(a);
        /* async function: worker1 forwards min to worker2 and adds one. */
        a = ferry_args(2, ferry_int(7), ferry_int(4));
        v = ferry_rpc_sync("worker1", "async_min", a, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v && ferry_value_as_int(v) == 5);
        ferry_value_release(v);
        /* then-chains on an rpc future. */
        ferry_future *f = ferry_rpc_async("worker2", "min", a, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_future *g = f ? ferry_future_then(f, plus_one_then, NULL) : NULL;
        ferry_future *h = g ? ferry_future_then(g, plus_one_then, NULL) : NULL;
        RANK_CHECK(h);
        v = ferry_future_value(h);
        RANK_CHECK(v && ferry_value_as_int(v) == 6);
        ferry_value_release(v);
        ferry_future_release(f);
        ferry_future_release(g);
        ferry_future_release(h);
        ferry_value_release(a);
    }
    return 0;
}

typedef struct {
    int rank, world, failures;
} hammer_arg;

static void *hammer(void *p)
{
    hammer_arg *h = p;
    char to[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(to, sizeof to, "worker%d", (h->rank + 1 + i) % h->world);
        ferry_value *a = ferry_args(1, ferry_int(i));
        ferry_value *v = ferry_rpc_sync(to, "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
        if (!v || ferry_value_as_int(v) != i)
            h->failures++;
        ferry_value_release(v);
        ferry_value_release(a);
    }
    return NULL;
}

static int body_concurrent(int rank, int world, const rpc_case *c)
{
    pthread_t th[8];
    hammer_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (hammer_arg){rank, world, 0};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    int failures = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        failures += args[i].failures;
    }
    RANK_CHECK(failures == 0);
    return 0;
}

/* Graceful shutdown waits for calls in flight: worker0 starts slow calls and shuts down at once;
   every future still completes. */
static int body_graceful_inflight(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_value *slow = ferry_args(1, ferry_double(0.2));
    ferry_future *fs[10];
    for (int i = 0; i < 10; i++)
        RANK_CHECK(fs[i] = ferry_rpc_async("worker1", "sleep", slow, NULL, FERRY_TIMEOUT_DEFAULT));
    ferry_value_release(slow);
    RANK_CHECK(ferry_shutdown(true, 30) == FERRY_OK);
    for (int i = 0; i < 10; i++) {
        RANK_CHECK(ferry_future_wait(fs[i], 0) == FERRY_OK);
        ferry_future_release(fs[i]);
    }
    /* After shutdown, calls fail with FERRY_ESHUTDOWN (the harness skips its own shutdown). */
    ferry_value *none = ferry_list_of(0);
    RANK_CHECK(!ferry_rpc_sync("worker1", "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_ESHUTDOWN);
    RANK_CHECK(strstr(ferry_last_error(), "RPC has not been initialized"));
    ferry_value_release(none);
    return 0;
}

/* worker1 dies in the middle of a call: the caller learns within about a second (not at the
   60 s timeout), and the survivors' graceful shutdown ends with an error instead of hanging. */
static int body_dead_peer(int rank, int world, const rpc_case *c)
{
    if (rank == 1)
        return 0; /* serves until the call to "die" ends it */
    ferry_value *none = ferry_list_of(0);
    if (rank == 0) {
        double t0 = rpc_test_now_s();
        ferry_future *f = ferry_rpc_async("worker1", "die", none, NULL, 60);
        RANK_CHECK(f);
        RANK_CHECK(ferry_future_wait(f, 0) == FERRY_ETRANSPORT);
        RANK_CHECK(rpc_test_now_s() - t0 < 5);
        RANK_CHECK(strstr(ferry_future_error(f), "worker1"));
        ferry_future_release(f);
        /* Later calls to it fail at once. */
        RANK_CHECK(!ferry_rpc_sync("worker1", "whoami", none, NULL, 60));
        RANK_CHECK(ferry_last_status() == FERRY_ETRANSPORT);
    }
    ferry_value_release(none);
    double t0 = rpc_test_now_s();
    RANK_CHECK(ferry_shutdown(true, 0) == FERRY_ETRANSPORT);
    RANK_CHECK(rpc_test_now_s() - t0 < 10);
    RANK_CHECK(strstr(ferry_last_error(), "worker1"));
    return 0;
}

/* Not graceful: worker0 stops at once; its calls still in flight fail with FERRY_ESHUTDOWN and
   later calls say RPC is not initialized. worker1 finishes its slow calls and leaves alone. */
static int body_not_graceful(int rank, int world, const rpc_case *c)
{
    if (rank == 1) {
        /* worker0 is gone without the graceful rounds, so leave without them too. */
        struct timespec ts = {0, 600 * 1000000L};
        nanosleep(&ts, NULL);
        RANK_CHECK(ferry_shutdown(false, 0) == FERRY_OK);
        return 0;
    }
    ferry_value *slow = ferry_args(1, ferry_double(0.3));
    ferry_future *fs[4];
    for (int i = 0; i < 4; i++)
        RANK_CHECK(fs[i] = ferry_rpc_async("worker1", "sleep", slow, NULL, FERRY_TIMEOUT_DEFAULT));
    ferry_value_release(slow);
    RANK_CHECK(ferry_shutdown(false, 0) == FERRY_OK);
    for (int i = 0; i < 4; i++) {
        RANK_CHECK(ferry_future_wait(fs[i], 0) == FERRY_ESHUTDOWN);
        RANK_CHECK(strstr(ferry_future_error(fs[i]), "shutting down"));
        ferry_future_release(fs[i]);
    }
    ferry_value *none = ferry_list_of(0);
    RANK_CHECK(!ferry_rpc_async("worker1", "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_ESHUTDOWN);
    ferry_value_release(none);
    return 0;
}

#define BOTH(name, world, body, secs)                                                     \
    Test(rpc_tcp, name, .timeout = secs)                                                  \
    {                                                                                     \
        register_all();                                                                   \
        rpc_case_run("tcp", world, body, NULL, secs - 5);                                 \
    }                                                                                     \
    Test(rpc_shm, name, .timeout = secs)                                                  \
    {                                                                                     \
        register_all();                                                                   \
        rpc_case_run("shm", world, body, NULL, secs - 5);                                 \
    }

BOTH(builtins_match_torch_when_called_remotely, 2, body_builtins, 40)
BOTH(every_value_kind_round_trips_when_echoed, 2, body_kinds, 40)
BOTH(tensors_round_trip_when_0_to_64_mib, 2, body_tensor_sizes, 60)
BOTH(errors_name_worker_and_function_when_calls_fail, 2, body_errors, 40)
BOTH(calls_fail_with_etimedout_when_deadline_passes, 2, body_timeouts, 40)
BOTH(self_nested_and_async_calls_complete_when_chained, 3, body_self_and_nested, 40)
BOTH(eight_threads_complete_8000_calls_when_concurrent, 3, body_concurrent, 90)
BOTH(graceful_shutdown_completes_calls_when_in_flight, 2, body_graceful_inflight, 40)
BOTH(calls_fail_fast_and_shutdown_ends_when_a_peer_dies, 3, body_dead_peer, 40)
BOTH(pending_calls_fail_with_eshutdown_when_not_graceful, 2, body_not_graceful, 40)

Test(rpc_api, calls_fail_with_eshutdown_when_not_initialized, .timeout = 10)
{
    ferry_value *none = ferry_list_of(0);
    cr_assert_null(ferry_rpc_sync("worker1", "echo", none, NULL, FERRY_TIMEOUT_DEFAULT));
    cr_assert_eq(ferry_last_status(), FERRY_ESHUTDOWN);
    cr_assert(strstr(ferry_last_error(), "RPC has not been initialized"));
    cr_assert_eq(ferry_shutdown(true, 0), FERRY_ESHUTDOWN);
    ferry_worker_info info;
    cr_assert_eq(ferry_get_worker_info(NULL, &info), FERRY_ESHUTDOWN);
    ferry_value_release(none);
}
