/* RRef tests: remote() and to_here for every value kind and large tensors, remote to self, forks
   between three workers, nested RRefs, RRefs inside containers, proxies, creation failures,
   timeouts, owner-only calls, a 10,000-RRef fork-and-drop stress with counters back to zero, and
   graceful shutdown right after dropping many RRefs. On tcp and shm. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/ops.h"
#include "ferry/rref.h"
#include "rpc_harness.h"
#include "rref_util.h"

/* ---- functions the tests call ---- */

static ferry_status fail_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    return ferry_set_error(FERRY_EINVAL, "Expected error");
}

/* fetch(rref): the RRef is confirmed before this runs; returns its to_here. */
static ferry_status fetch_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, 0));
    if (!r)
        return ferry_last_status();
    if (!ferry_rref_confirmed_by_owner(r))
        return ferry_set_error(FERRY_EINVAL, "RRef argument not confirmed before the call ran");
    *result = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
    return *result ? FERRY_OK : ferry_last_status();
}

/* relay(rref, to): checks the value here, then asks `to` to fetch it; returns both values. */
static ferry_status relay_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry_value *here = NULL;
    if (fetch_fn(args, kwargs, &here, user) != FERRY_OK)
        return ferry_last_status();
    ferry_value *a = ferry_args(1, ferry_value_retain(ferry_list_get(args, 0)));
    ferry_value *there = ferry_rpc_sync(ferry_value_as_string(ferry_list_get(args, 1)),
                                        "owner_check", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    if (!there) {
        ferry_value_release(here);
        return ferry_last_status();
    }
    *result = ferry_list_of(2, here, there);
    return FERRY_OK;
}

/* owner_check(rref): must arrive as the owner's own RRef; returns its local value. */
static ferry_status owner_check_fn(const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, 0));
    if (!r || !ferry_rref_is_owner(r))
        return ferry_set_error(FERRY_EINVAL, "expected the owner's RRef");
    *result = ferry_rref_local_value(r);
    return *result ? FERRY_OK : ferry_last_status();
}

/* make_rref(v): an RRef owned here holding v. */
static ferry_status make_rref_fn(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    ferry_rref *r = ferry_rref_new(ferry_list_get(args, 0));
    if (!r)
        return ferry_last_status();
    *result = ferry_rref_value(r);
    ferry_rref_release(r);
    return FERRY_OK;
}

/* sum_rrefs(x): the sum of to_here of every RRef in x (lists and dicts walked), as an int. */
static int64_t sum_rrefs(const ferry_value *v, bool *ok)
{
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_RREF: {
        ferry_value *x = ferry_rref_to_here(ferry_value_as_rref(v), FERRY_TIMEOUT_DEFAULT);
        *ok = *ok && x && ferry_rref_confirmed_by_owner(ferry_value_as_rref(v));
        int64_t n = x ? ferry_value_as_int(x) : 0;
        ferry_value_release(x);
        return n;
    }
    case FERRY_VALUE_LIST: {
        int64_t s = 0;
        for (size_t i = 0; i < ferry_list_len(v); i++)
            s += sum_rrefs(ferry_list_get(v, i), ok);
        return s;
    }
    case FERRY_VALUE_DICT: {
        int64_t s = 0;
        for (size_t i = 0; i < ferry_dict_len(v); i++)
            s += sum_rrefs(ferry_dict_value_at(v, i), ok);
        return s;
    }
    default:
        return 0;
    }
}

static ferry_status sum_rrefs_fn(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    bool ok = true;
    int64_t s = sum_rrefs(args, &ok) + sum_rrefs(kwargs, &ok);
    if (!ok)
        return ferry_set_error(FERRY_EINVAL, "an RRef could not be fetched or was unconfirmed");
    *result = ferry_int(s);
    return FERRY_OK;
}

/* add(value, x): ints or doubles, for proxies. */
static ferry_status add_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    const ferry_value *v = ferry_list_get(args, 0);
    if (ferry_value_kind(v) != FERRY_VALUE_INT)
        return ferry_set_error(FERRY_ETYPE, "add expects an int value, got %s",
                               ferry_kind_name(ferry_value_kind(v)));
    *result = ferry_int(ferry_value_as_int(v) + ferry_value_as_int(ferry_list_get(args, 1)));
    return FERRY_OK;
}

static ferry_future *async_add_fn(const ferry_value *args, const ferry_value *kwargs, void *user)
{
    ferry_value *r = NULL;
    if (add_fn(args, kwargs, &r, user) != FERRY_OK)
        return NULL;
    ferry_future *f = ferry_future_new();
    ferry_future_set_value(f, r);
    ferry_value_release(r);
    return f;
}

/* Values that count their own release: `freed_live` only while RPC still runs (so a value
   freed by the protocol counts, one freed by shutdown's teardown does not). */
typedef struct {
    atomic_long made, freed_live;
} tracked;

static void tracked_free(void *data, void *ctx)
{
    tracked *t = ctx;
    ferry_worker_info me;
    if (ferry_get_worker_info(NULL, &me) == FERRY_OK)
        atomic_fetch_add(&t->freed_live, 1);
    free(data);
}

static ferry_status make_tracked_fn(const ferry_value *args, const ferry_value *kwargs,
                                    ferry_value **result, void *user)
{
    tracked *t = user;
    int64_t n = 4;
    float *data = calloc(4, sizeof *data);
    ferry_tensor *x = ferry_tensor_from_blob(data, 1, &n, NULL, FERRY_FLOAT32, tracked_free, t);
    if (!x)
        return ferry_last_status();
    atomic_fetch_add(&t->made, 1);
    *result = ferry_tensor_value(x);
    ferry_tensor_release(x);
    return FERRY_OK;
}

typedef struct {
    tracked track;
    rref_test_barrier_state barrier;
} test_state;

static void register_all(test_state *st, int world)
{
    memset(st, 0, sizeof *st);
    rref_test_barrier_register(&st->barrier, world);
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("fail", fail_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("sleep", rpc_test_sleep, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("fetch", fetch_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("relay", relay_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("owner_check", owner_check_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("make_rref", make_rref_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("sum_rrefs", sum_rrefs_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("add", add_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_async_function("async_add", async_add_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("make_tracked", make_tracked_fn, &st->track) == FERRY_OK);
}

static ferry_value *remote_here(const char *to, const char *fn, ferry_value *args)
{
    ferry_rref *r = ferry_remote(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value *v = r ? ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_rref_release(r);
    return v;
}

/* ---- bodies ---- */

static int body_kinds_and_tensors(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        ferry_value *d = ferry_dict_new();
        ferry_dict_set(d, "x", ferry_int(5));
        const char raw[] = {'a', 0, 'b'};
        int64_t sz[2] = {3, 4};
        ferry_tensor *t = ferry_ones(2, sz, FERRY_FLOAT64);
        ferry_value *kinds = ferry_list_of(9, ferry_none(), ferry_bool(true), ferry_int(-42),
                                           ferry_double(2.5), ferry_string("héllo"),
                                           ferry_bytes(raw, sizeof raw), ferry_tensor_value(t),
                                           ferry_list_of(2, ferry_int(1), ferry_string("two")), d);
        ferry_tensor_release(t);
        for (size_t i = 0; i < ferry_list_len(kinds); i++) {
            ferry_value *a = ferry_args(1, ferry_value_retain(ferry_list_get(kinds, i)));
            ferry_value *v = remote_here("worker1", "echo", a);
            RANK_CHECK(v && ferry_value_equal(v, ferry_list_get(kinds, i)));
            ferry_value_release(v);
            ferry_value_release(a);
        }
        ferry_value_release(kinds);
        const int64_t sizes[] = {0, 256, 1 << 18, 16 << 20}; /* floats: up to 64 MiB */
        for (int i = 0; i < 4; i++) {
            ferry_tensor *x = ferry_arange(0, (double)sizes[i], 1, FERRY_FLOAT32);
            ferry_value *a = ferry_args(1, ferry_tensor_value(x));
            ferry_rref *r = ferry_remote("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(r && !ferry_rref_is_owner(r));
            RANK_CHECK(strcmp(ferry_rref_owner_name(r), "worker1") == 0);
            ferry_value *v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(v && ferry_tensor_numel(ferry_value_as_tensor(v)) == sizes[i]);
            RANK_CHECK(ferry_value_equal(v, ferry_list_get(a, 0)));
            RANK_CHECK(ferry_debug_rref_wait_idle(20) == FERRY_OK);
            RANK_CHECK(ferry_rref_confirmed_by_owner(r));
            ferry_value_release(v);
            ferry_value_release(a);
            ferry_rref_release(r);
            ferry_tensor_release(x);
        }
    }
    return rref_test_check_counts_zero();
}

static int body_self_and_errors(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        /* remote() to self gives the owner's RRef; local_value is the value itself. */
        ferry_value *a = ferry_args(1, ferry_int(40));
        ferry_rref *r = ferry_remote("worker0", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(r && ferry_rref_is_owner(r) && ferry_rref_confirmed_by_owner(r));
        ferry_value *v = ferry_rref_local_value(r);
        RANK_CHECK(v && ferry_value_as_int(v) == 40);
        ferry_value_release(v);
        ferry_worker_info info;
        RANK_CHECK(ferry_rref_owner(r, &info) == FERRY_OK && info.id == 0);
        ferry_rref_release(r);
        /* RRef(value) holds the value itself. */
        r = ferry_rref_new(a);
        v = ferry_rref_local_value(r);
        RANK_CHECK(v == a && ferry_rref_is_owner(r));
        ferry_value_release(v);
        v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v == a);
        ferry_value_release(v);
        ferry_rref_release(r);
        ferry_value_release(a);

        /* Creation failures surface on to_here. */
        ferry_rref *bad = ferry_remote("worker1", "fail", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(bad);
        RANK_CHECK(!ferry_rref_to_here(bad, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EREMOTE);
        RANK_CHECK(strstr(ferry_last_error(), "Expected error"));
        RANK_CHECK(strstr(ferry_last_error(), "worker1"));
        ferry_rref_release(bad);
        bad = ferry_remote("worker1", "no_such_fn", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(!ferry_rref_to_here(bad, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EUNKNOWN_FUNCTION);
        ferry_rref_release(bad);
        a = ferry_args(1, ferry_double(1.0));
        bad = ferry_remote("worker1", "sleep", a, NULL, 0.1);
        RANK_CHECK(!ferry_rref_to_here(bad, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_ETIMEDOUT);
        RANK_CHECK(strstr(ferry_last_error(), "RRef creation via rpc.remote() timed out"));
        /* Passing a poisoned RRef on fails the same way. */
        ferry_value *pa = ferry_args(1, ferry_rref_value(bad));
        RANK_CHECK(!ferry_rpc_sync("worker1", "fetch", pa, NULL, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(strstr(ferry_last_error(), "RRef creation"));
        ferry_value_release(pa);
        ferry_rref_release(bad);

        /* to_here's own timeout uses torch's RPC-timeout wording; a later fetch succeeds. */
        ferry_rref *slow = ferry_remote("worker1", "sleep", a, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(!ferry_rref_to_here(slow, 0.1));
        RANK_CHECK(ferry_last_status() == FERRY_ETIMEDOUT);
        RANK_CHECK(strstr(ferry_last_error(), "RPC ran for more than set timeout (100 ms)"));
        v = ferry_rref_to_here(slow, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v && strcmp(ferry_value_as_string(v), "slept") == 0);
        ferry_value_release(v);

        /* local_value on a user: torch's message. */
        RANK_CHECK(!ferry_rref_local_value(slow));
        RANK_CHECK(ferry_last_status() == FERRY_ENOTOWNER);
        RANK_CHECK(strstr(ferry_last_error(), "can't call localValue() on user WorkerInfo(id=0, "
                                              "name=worker0). Call it on owner WorkerInfo(id=1, "
                                              "name=worker1)"));
        ferry_rref_release(slow);
        ferry_value_release(a);
    }
    return rref_test_check_counts_zero();
}

/* A owns, B forks to C, C sends it back to A; values checked at every hop. */
static int body_three_hops(int rank, int world, const rpc_case *c)
{
    if (rank == 1) {
        ferry_value *a = ferry_args(1, ferry_int(7));
        ferry_rref *r = ferry_remote("worker0", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v && ferry_value_as_int(v) == 7);
        ferry_value *ra = ferry_args(2, ferry_rref_value(r), ferry_string("worker0"));
        ferry_value *both = ferry_rpc_sync("worker2", "relay", ra, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(both && ferry_value_as_int(ferry_list_get(both, 0)) == 7);
        RANK_CHECK(ferry_value_as_int(ferry_list_get(both, 1)) == 7);
        /* The owner passes its own RRef on too (owner -> user fork). */
        ferry_value *ma = ferry_args(1, ferry_int(9));
        ferry_rref *mine = ferry_remote("worker0", "make_rref", ma, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *inner = ferry_rref_to_here(mine, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(inner && ferry_value_kind(inner) == FERRY_VALUE_RREF);
        ferry_value *fa = ferry_args(1, ferry_value_retain(inner));
        ferry_value *nine = ferry_rpc_sync("worker2", "fetch", fa, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(nine && ferry_value_as_int(nine) == 9);
        ferry_value_release(nine);
        ferry_value_release(fa);
        ferry_value_release(inner);
        ferry_value_release(ma);
        ferry_rref_release(mine);
        ferry_value_release(both);
        ferry_value_release(ra);
        ferry_value_release(v);
        ferry_rref_release(r);
        ferry_value_release(a);
    }
    return rref_test_check_counts_zero();
}

/* Nested RRefs and RRefs inside lists and dicts, in arguments and results. */
static int body_nested_and_containers(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        ferry_value *a = ferry_args(1, ferry_int(5));
        ferry_rref *outer = ferry_remote("worker1", "make_rref", a, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *iv = ferry_rref_to_here(outer, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(iv && ferry_value_kind(iv) == FERRY_VALUE_RREF);
        ferry_rref *inner = ferry_value_as_rref(iv);
        RANK_CHECK(!ferry_rref_is_owner(inner));
        RANK_CHECK(strcmp(ferry_rref_owner_name(inner), "worker1") == 0);
        ferry_value *five = ferry_rref_to_here(inner, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(five && ferry_value_as_int(five) == 5);
        /* An RRef holding an RRef owned elsewhere: worker2 keeps our user of worker1's. */
        ferry_value *na = ferry_args(1, ferry_value_retain(iv));
        ferry_rref *wrap = ferry_remote("worker2", "echo", na, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *w = ferry_rref_to_here(wrap, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(w && ferry_value_kind(w) == FERRY_VALUE_RREF);
        ferry_value *again = ferry_rref_to_here(ferry_value_as_rref(w), FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(again && ferry_value_as_int(again) == 5);

        ferry_value *one = ferry_args(1, ferry_int(1));
        ferry_rref *r1 = ferry_remote("worker1", "echo", one, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *two = ferry_int(2);
        ferry_rref *r2 = ferry_rref_new(two);
        ferry_value *d = ferry_dict_new();
        ferry_value *rv2 = ferry_rref_value(r2);
        ferry_dict_set(d, "b", rv2); /* retains it */
        ferry_value_release(rv2);
        ferry_value *sa = ferry_args(3, ferry_list_of(2, ferry_rref_value(r1), d),
                                     ferry_value_retain(iv), ferry_rref_value(wrap));
        ferry_value *sum = ferry_rpc_sync("worker2", "sum_rrefs", sa, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(sum && ferry_value_kind(sum) == FERRY_VALUE_INT);
        /* 1 + 2 + 5; the wrapped RRef's value is an RRef, which sums as 0 */
        RANK_CHECK(ferry_value_as_int(sum) == 8);
        /* Results: a list of RRefs comes back usable. */
        ferry_value *ea = ferry_args(1, ferry_list_of(2, ferry_rref_value(r1), ferry_rref_value(r2)));
        ferry_value *back = ferry_rpc_sync("worker2", "echo", ea, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(back && ferry_list_len(back) == 2);
        ferry_rref *b2 = ferry_value_as_rref(ferry_list_get(back, 1));
        RANK_CHECK(b2 == r2); /* back at its owner: the owner's own RRef */
        ferry_value *b1 = ferry_rref_to_here(ferry_value_as_rref(ferry_list_get(back, 0)), 10);
        RANK_CHECK(b1 && ferry_value_as_int(b1) == 1);
        ferry_value_release(b1);
        ferry_value_release(back);
        ferry_value_release(ea);
        ferry_value_release(sum);
        ferry_value_release(sa);
        ferry_value_release(two);
        ferry_rref_release(r1);
        ferry_rref_release(r2);
        ferry_value_release(one);
        ferry_value_release(again);
        ferry_value_release(w);
        ferry_rref_release(wrap);
        ferry_value_release(na);
        ferry_value_release(five);
        ferry_value_release(iv);
        ferry_rref_release(outer);
        ferry_value_release(a);
    }
    return rref_test_check_counts_zero();
}

static int body_proxies(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        ferry_value *a = ferry_args(1, ferry_int(10));
        for (int self = 0; self < 2; self++) {
            ferry_rref *r = ferry_remote(self ? "worker0" : "worker1", "echo", a, NULL,
                                         FERRY_TIMEOUT_DEFAULT);
            ferry_value *x = ferry_args(1, ferry_int(5));
            ferry_value *v = ferry_rref_rpc_sync(r, "add", x, NULL, FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(v && ferry_value_as_int(v) == 15);
            ferry_value_release(v);
            ferry_future *f = ferry_rref_rpc_async(r, "async_add", x, NULL, FERRY_TIMEOUT_DEFAULT);
            v = f ? ferry_future_value(f) : NULL;
            RANK_CHECK(v && ferry_value_as_int(v) == 15);
            ferry_value_release(v);
            ferry_future_release(f);
            ferry_rref *r3 = ferry_rref_remote(r, "add", x, NULL, FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(r3 && strcmp(ferry_rref_owner_name(r3), ferry_rref_owner_name(r)) == 0);
            v = ferry_rref_to_here(r3, FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(v && ferry_value_as_int(v) == 15);
            ferry_value_release(v);
            ferry_rref_release(r3);
            ferry_value_release(x);
            ferry_rref_release(r);
        }
        /* A value of the wrong kind: the function's own error comes back. */
        ferry_value *s = ferry_args(1, ferry_string("text"));
        ferry_rref *r = ferry_remote("worker1", "echo", s, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *x = ferry_args(1, ferry_int(1));
        RANK_CHECK(!ferry_rref_rpc_sync(r, "add", x, NULL, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EREMOTE);
        RANK_CHECK(strstr(ferry_last_error(), "add expects an int value, got string"));
        ferry_rref *bad = ferry_rref_remote(r, "add", x, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(!ferry_rref_to_here(bad, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(strstr(ferry_last_error(), "add expects an int value"));
        ferry_rref_release(bad);
        ferry_value_release(x);
        ferry_rref_release(r);
        ferry_value_release(s);
        ferry_value_release(a);
    }
    return rref_test_check_counts_zero();
}

/* 4 workers: 2,500 RRefs each (10,000), owned by the next worker, forked in batches to the
   worker after it (user -> user) and back to their owner (user -> owner), then dropped. */
#define STRESS_PER_RANK 2500
#define STRESS_BATCH 250
static int body_stress(int rank, int world, const rpc_case *c)
{
    char owner[32], third[32];
    snprintf(owner, sizeof owner, "worker%d", (rank + 1) % world);
    snprintf(third, sizeof third, "worker%d", (rank + 2) % world);
    ferry_value *items[STRESS_BATCH];
    for (int b = 0; b < STRESS_PER_RANK / STRESS_BATCH; b++) {
        int64_t want = 0;
        for (int i = 0; i < STRESS_BATCH; i++) {
            ferry_value *a = ferry_args(1, ferry_int(i));
            ferry_rref *r = ferry_remote(owner, "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(r);
            items[i] = ferry_rref_value(r);
            ferry_rref_release(r);
            ferry_value_release(a);
            want += i;
        }
        ferry_value *batch = ferry_list_from(items, STRESS_BATCH);
        for (int i = 0; i < STRESS_BATCH; i++)
            ferry_value_release(items[i]);
        ferry_value *args = ferry_args(1, batch);
        ferry_future *f1 = ferry_rpc_async(third, "sum_rrefs", args, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_future *f2 = ferry_rpc_async(owner, "sum_rrefs", args, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(args);
        ferry_value *s1 = ferry_future_value(f1), *s2 = ferry_future_value(f2);
        RANK_CHECK(s1 && ferry_value_as_int(s1) == want);
        RANK_CHECK(s2 && ferry_value_as_int(s2) == want);
        ferry_value_release(s1);
        ferry_value_release(s2);
        ferry_future_release(f1);
        ferry_future_release(f2);
    }
    return rref_test_check_counts_zero();
}

/* Drop many RRefs and shut down at once: every owner's values are freed by the protocol
   (deletions reached them) before RPC stops, not by the teardown. */
static int body_shutdown_after_drop(int rank, int world, const rpc_case *c)
{
    test_state *st = c->user;
    char owner[32], third[32];
    snprintf(owner, sizeof owner, "worker%d", (rank + 1) % world);
    snprintf(third, sizeof third, "worker%d", (rank + 2) % world);
    ferry_value *items[200];
    for (int i = 0; i < 200; i++) {
        ferry_rref *r = ferry_remote(owner, "make_tracked", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(r);
        items[i] = ferry_rref_value(r);
        ferry_rref_release(r);
    }
    ferry_value *args = ferry_args(1, ferry_list_from(items, 200));
    for (int i = 0; i < 200; i++)
        ferry_value_release(items[i]);
    /* Forks in flight while we drop everything and shut down. */
    ferry_future *f = ferry_rpc_async(third, "echo", args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    ferry_future_release(f);
    RANK_CHECK(ferry_shutdown(true, 30) == FERRY_OK);
    RANK_CHECK(atomic_load(&st->track.made) == 200);
    RANK_CHECK(atomic_load(&st->track.freed_live) == 200);
    return 0;
}

/* After graceful shutdown a UserRRef the program still holds "has been deleted". */
static int body_use_after_shutdown(int rank, int world, const rpc_case *c)
{
    ferry_rref *r = NULL;
    if (rank == 0) {
        ferry_value *a = ferry_args(1, ferry_int(3));
        r = ferry_remote("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(a);
        RANK_CHECK(r);
    }
    RANK_CHECK(ferry_shutdown(true, 30) == FERRY_OK);
    if (rank == 0) {
        RANK_CHECK(!ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_ESHUTDOWN);
        RANK_CHECK(strstr(ferry_last_error(), "has been deleted. Cannot call to_here() on it "
                                              "after deletion."));
        ferry_value *a = ferry_args(1, ferry_rref_value(r));
        RANK_CHECK(!ferry_rpc_sync("worker1", "fetch", a, NULL, FERRY_TIMEOUT_DEFAULT));
        ferry_value_release(a);
        ferry_rref_release(r);
    }
    return 0;
}

#define BOTH(name, world, body, secs)                                                     \
    Test(rref_tcp, name, .timeout = secs)                                                 \
    {                                                                                     \
        test_state st;                                                                    \
        register_all(&st, world);                                                         \
        rpc_case_run("tcp", world, body, &st, secs - 5);                                  \
    }                                                                                     \
    Test(rref_shm, name, .timeout = secs)                                                 \
    {                                                                                     \
        test_state st;                                                                    \
        register_all(&st, world);                                                         \
        rpc_case_run("shm", world, body, &st, secs - 5);                                  \
    }

BOTH(to_here_returns_value_when_any_kind_or_tensor_up_to_64_mib, 2, body_kinds_and_tensors, 60)
BOTH(errors_surface_on_to_here_when_creation_fails_or_times_out, 2, body_self_and_errors, 40)
BOTH(values_match_at_every_hop_when_forked_across_three_workers, 3, body_three_hops, 40)
BOTH(rrefs_work_when_nested_or_inside_lists_and_dicts, 3, body_nested_and_containers, 40)
BOTH(proxies_run_on_owner_value_when_called_three_ways, 2, body_proxies, 40)
BOTH(counters_return_to_zero_when_10000_rrefs_forked_and_dropped, 4, body_stress, 120)
BOTH(no_deletion_lost_when_shutdown_follows_drops, 3, body_shutdown_after_drop, 60)
BOTH(user_rref_says_deleted_when_used_after_shutdown, 2, body_use_after_shutdown, 40)

Test(rref_api, rref_new_fails_with_eshutdown_when_rpc_not_initialized, .timeout = 10)
{
    ferry_value *v = ferry_int(1);
    cr_assert_null(ferry_rref_new(v));
    cr_assert_eq(ferry_last_status(), FERRY_ESHUTDOWN);
    cr_assert(strstr(ferry_last_error(), "Current RPC agent is not set"));
    cr_assert_null(ferry_remote("worker1", "echo", NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    cr_assert_eq(ferry_last_status(), FERRY_ESHUTDOWN);
    ferry_rref_debug_counts n;
    cr_assert_eq(ferry_debug_rref_counts(&n), FERRY_ESHUTDOWN);
    cr_assert_null(ferry_rref_to_here(NULL, FERRY_TIMEOUT_DEFAULT));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_value_release(v);
}
