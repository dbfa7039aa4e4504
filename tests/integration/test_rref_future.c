/* The creation future of an RRef (torch's RRef._get_future()): none once the owner answers a
   remote() to another worker or to this one, also when the function failed or is not
   registered (to_here gives that error, as torch); the RPC-timeout error past remote()'s
   timeout; complete at once for ferry_rref_new and already confirmed RRefs, and for a UserRRef
   received as an argument; a future of the caller's own on every call. Also: a future value in the arguments of any call fails at the call, as torch's
   "Can not pickle torch.futures.Future". On tcp and shm, counters back to zero after. */
#include <stdio.h>
#include <string.h>

#include "ferry/rref.h"
#include "rpc_harness.h"
#include "rref_util.h"

static ferry_status fail_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    return ferry_set_error(FERRY_EINVAL, "Expected error");
}

/* creation_status(rref): [the status the received RRef's creation future completes with,
   whether this worker owns it]. */
static ferry_status creation_status_fn(const ferry_value *args, const ferry_value *kwargs,
                                       ferry_value **result, void *user)
{
    ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, 0));
    if (!r)
        return ferry_last_status();
    ferry_future *f = ferry_rref_get_future(r);
    if (!f)
        return ferry_last_status();
    ferry_status rc = ferry_future_wait(f, 10);
    ferry_future_release(f);
    *result = ferry_list_of(2, ferry_int(rc), ferry_bool(ferry_rref_is_owner(r)));
    return *result ? FERRY_OK : ferry_last_status();
}

static rref_test_barrier_state barrier;

static void register_all(int world)
{
    rref_test_barrier_register(&barrier, world);
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("fail", fail_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("sleep", rpc_test_sleep, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("creation_status", creation_status_fn, NULL) == FERRY_OK);
}

/* Waits for r's creation future: its status, with the last error set by the wait. */
static ferry_status creation_of(ferry_rref *r)
{
    ferry_future *f = ferry_rref_get_future(r);
    if (!f)
        return ferry_last_status();
    ferry_status rc = ferry_future_wait(f, 10);
    if (rc == FERRY_OK) {
        ferry_value *v = ferry_future_value(f);
        if (ferry_value_kind(v) != FERRY_VALUE_NONE)
            rc = ferry_set_error(FERRY_EINVAL, "creation future holds a %s, not none",
                                 ferry_kind_name(ferry_value_kind(v)));
        ferry_value_release(v);
    }
    ferry_future_release(f);
    return rc;
}

/* Sends r to worker1, whose creation future of what it received must succeed; 0 or 1. */
static int received_creation(ferry_rref *r, bool owner_there)
{
    ferry_value *pa = ferry_args(1, ferry_rref_value(r));
    ferry_value *st = ferry_rpc_sync("worker1", "creation_status", pa, NULL,
                                     FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(pa);
    RANK_CHECK(st && ferry_value_as_int(ferry_list_get(st, 0)) == FERRY_OK);
    RANK_CHECK(ferry_value_as_bool(ferry_list_get(st, 1)) == owner_there);
    ferry_value_release(st);
    return 0;
}

static int body_creation(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return rref_test_check_counts_zero();
    /* A remote() to another worker: none once the owner confirmed it. */
    ferry_value *a = ferry_args(1, ferry_int(40));
    ferry_rref *r = ferry_remote("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r);
    ferry_future *f1 = ferry_rref_get_future(r), *f2 = ferry_rref_get_future(r);
    RANK_CHECK(f1 && f2 && f1 != f2);
    RANK_CHECK(ferry_future_wait(f1, 10) == FERRY_OK && ferry_future_wait(f2, 10) == FERRY_OK);
    RANK_CHECK(ferry_rref_confirmed_by_owner(r));
    ferry_future_release(f1);
    ferry_future_release(f2);
    RANK_CHECK(creation_of(r) == FERRY_OK); /* confirmed already: known at once */
    f1 = ferry_rref_get_future(r);
    RANK_CHECK(f1 && ferry_future_done(f1));
    ferry_future_release(f1);
    /* Passed to its owner, which holds the OwnerRRef a peer's remote() made: created. */
    RANK_CHECK(received_creation(r, true) == 0);
    ferry_rref_release(r);
    /* An RRef(value) of this worker passed to a peer: the peer's UserRRef, once confirmed. */
    r = ferry_rref_new(a);
    RANK_CHECK(received_creation(r, false) == 0);
    ferry_rref_release(r);

    /* To this worker: the OwnerRRef's creation, once its value exists. */
    r = ferry_remote("worker0", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r && ferry_rref_is_owner(r));
    RANK_CHECK(creation_of(r) == FERRY_OK);
    ferry_rref_release(r);
    /* RRef(value): created with the value, so complete at once. */
    r = ferry_rref_new(a);
    f1 = ferry_rref_get_future(r);
    RANK_CHECK(f1 && ferry_future_done(f1) && ferry_future_status(f1) == FERRY_OK);
    ferry_future_release(f1);
    ferry_rref_release(r);
    ferry_value_release(a);

    /* The function failed, or is not registered: the owner still answers (as torch), so the
       creation succeeds and the error is the value's, given by to_here. */
    const char *owners[] = {"worker1", "worker0"};
    for (int i = 0; i < 2; i++) {
        ferry_rref *bad = ferry_remote(owners[i], "fail", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(bad);
        RANK_CHECK(creation_of(bad) == FERRY_OK);
        RANK_CHECK(!ferry_rref_to_here(bad, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EREMOTE);
        RANK_CHECK(strstr(ferry_last_error(), "function 'fail' on worker '") &&
                   strstr(ferry_last_error(), owners[i]) &&
                   strstr(ferry_last_error(), "Expected error"));
        ferry_rref_release(bad);
    }
    ferry_rref *bad = ferry_remote("worker1", "no_such_fn", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(creation_of(bad) == FERRY_OK);
    RANK_CHECK(!ferry_rref_to_here(bad, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EUNKNOWN_FUNCTION);
    ferry_rref_release(bad);
    /* Past remote()'s timeout the creation fails, in the RPC-timeout wording; to_here then says
       the creation timed out (torch's test_rref_timeout). */
    a = ferry_args(1, ferry_double(1.0));
    for (int i = 0; i < 2; i++) {
        bad = ferry_remote(owners[i], "sleep", a, NULL, 0.1);
        RANK_CHECK(bad);
        RANK_CHECK(creation_of(bad) == FERRY_ETIMEDOUT);
        const char *rpc_timeout = "RPC ran for more than set timeout (100 ms) and will now be "
                                  "marked with an error";
        RANK_CHECK(strncmp(ferry_last_error(), rpc_timeout, strlen(rpc_timeout)) == 0);
        if (!ferry_rref_is_owner(bad)) { /* an owner's to_here waits for its value (torch) */
            RANK_CHECK(!ferry_rref_to_here(bad, FERRY_TIMEOUT_DEFAULT));
            RANK_CHECK(strcmp(ferry_last_error(), "RRef creation via rpc.remote() timed out, and "
                              "it is possible that the RRef on the owner node does not "
                              "exist. (remote() of 'sleep' on worker 'worker1' did not finish "
                              "within 100 ms)") == 0);
        }
        ferry_rref_release(bad);
    }
    ferry_value_release(a);

    RANK_CHECK(!ferry_rref_get_future(NULL) && ferry_last_status() == FERRY_EINVAL);
    return rref_test_check_counts_zero();
}

/* torch's test_pickle_future: a future in the arguments fails at the call, every way. */
static int body_future_argument(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return rref_test_check_counts_zero();
    ferry_future *f = ferry_future_new();
    ferry_value *a = ferry_args(1, ferry_value_of_future(f));
    RANK_CHECK(f && a);
    const char *want = "cannot send a future (Can not pickle torch.futures.Future)";
    RANK_CHECK(!ferry_rpc_sync("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EINVAL && strstr(ferry_last_error(), want));
    ferry_future *g = ferry_rpc_async("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_status rc = g ? ferry_future_wait(g, 10) : ferry_last_status();
    RANK_CHECK(rc == FERRY_EINVAL && strstr(ferry_last_error(), want));
    ferry_future_release(g);
    RANK_CHECK(!ferry_remote("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EINVAL && strstr(ferry_last_error(), want));
    /* The future is untouched and still usable here. */
    RANK_CHECK(!ferry_future_done(f) && ferry_future_set_value(f, NULL) == FERRY_OK);
    ferry_value_release(a);
    ferry_future_release(f);
    return rref_test_check_counts_zero();
}

#define BOTH(name, world, body, secs)                                                     \
    Test(rref_future_tcp, name, .timeout = secs)                                          \
    {                                                                                     \
        register_all(world);                                                              \
        rpc_case_run("tcp", world, body, NULL, secs - 5);                                 \
    }                                                                                     \
    Test(rref_future_shm, name, .timeout = secs)                                          \
    {                                                                                     \
        register_all(world);                                                              \
        rpc_case_run("shm", world, body, NULL, secs - 5);                                 \
    }

BOTH(completes_with_creation_or_its_error_when_remote_runs_anywhere, 2, body_creation, 40)
BOTH(call_fails_at_once_when_an_argument_is_a_future, 2, body_future_argument, 30)
