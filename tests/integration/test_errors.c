/* The callee's own status code reaches the caller behind FERRY_EREMOTE: from a plain call, a
   future, an async function, an RRef's value, and through a nested call (A calls B, which passes
   up C's failure) the innermost code. A remote() whose function does not finish in time names
   the function and the worker. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rpc_harness.h"

#define WORLD 3

static ferry_status fail_einval(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    return ferry_set_error(FERRY_EINVAL, "bad shape %d", 3);
}

static ferry_status fail_enotsup(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    return ferry_set_error(FERRY_ENOTSUP, "no such mode");
}

/* relay(to, fn): calls fn on worker `to` and passes up its failure as it came. */
static ferry_status relay(const ferry_value *args, const ferry_value *kwargs,
                          ferry_value **result, void *user)
{
    const char *to = ferry_value_as_string(ferry_list_get(args, 0));
    const char *fn = ferry_value_as_string(ferry_list_get(args, 1));
    ferry_value *v = ferry_rpc_sync(to, fn, NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    if (!v)
        return ferry_last_status();
    *result = v;
    return FERRY_OK;
}

/* relay_noted(to, fn): the same, adding context to the message on the way up. */
static ferry_status relay_noted(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    if (relay(args, kwargs, result, user) == FERRY_OK)
        return FERRY_OK;
    return ferry_set_error(ferry_last_status(), "while relaying: %s", ferry_last_error());
}

/* An async function whose future fails with FERRY_ETYPE. */
static ferry_future *async_fail(const ferry_value *args, const ferry_value *kwargs, void *user)
{
    ferry_future *f = ferry_future_new();
    if (f)
        ferry_future_set_error(f, FERRY_ETYPE, "expected a tensor");
    return f;
}

static ferry_value *fail_with_parent(ferry_future *done, void *user)
{
    ferry_future_wait(done, 0);
    return NULL;
}

static int check_call(const char *to, const char *fn, ferry_value *args, ferry_status remote,
                      const char *want)
{
    ferry_value *v = ferry_rpc_sync(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(!v);
    RANK_CHECK(ferry_last_status() == FERRY_EREMOTE);
    if (ferry_last_remote_status() != remote || strcmp(ferry_last_error(), want) != 0) {
        fprintf(stderr, "%s: want %s '%s', got %s '%s'\n", fn, ferry_strerror(remote), want,
                ferry_strerror(ferry_last_remote_status()), ferry_last_error());
        return 1;
    }
    return 0;
}

static int body_remote_status(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    RANK_CHECK(check_call("worker1", "fail_einval", NULL, FERRY_EINVAL,
                          "function 'fail_einval' on worker 'worker1' failed: bad shape 3") == 0);
    RANK_CHECK(check_call("worker1", "fail_enotsup", NULL, FERRY_ENOTSUP,
                          "function 'fail_enotsup' on worker 'worker1' failed: no such mode") == 0);
    RANK_CHECK(check_call("worker1", "async_fail", NULL, FERRY_ETYPE,
                          "function 'async_fail' on worker 'worker1' failed: expected a tensor") ==
               0);

    /* A future keeps the code; waiting on it sets it as this thread's. */
    ferry_future *f = ferry_rpc_async("worker2", "fail_einval", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f);
    ferry_clear_error();
    RANK_CHECK(ferry_future_wait(f, 0) == FERRY_EREMOTE);
    RANK_CHECK(ferry_last_remote_status() == FERRY_EINVAL);
    RANK_CHECK(ferry_future_status(f) == FERRY_EREMOTE);
    RANK_CHECK(ferry_future_remote_status(f) == FERRY_EINVAL);
    /* A then-callback that fails with its parent's error passes the code on. */
    ferry_future *child = ferry_future_then(f, fail_with_parent, NULL);
    RANK_CHECK(child && ferry_future_wait(child, 0) == FERRY_EREMOTE);
    RANK_CHECK(ferry_future_remote_status(child) == FERRY_EINVAL);
    ferry_future_release(child);
    /* wait_all passes the failed input's code on, done already or not. */
    ferry_clear_error();
    RANK_CHECK(!ferry_future_wait_all(&f, 1, 0) && ferry_last_status() == FERRY_EREMOTE);
    RANK_CHECK(ferry_last_remote_status() == FERRY_EINVAL);
    ferry_future *two[2] = {
        ferry_rpc_async("worker1", "fail_enotsup", NULL, NULL, FERRY_TIMEOUT_DEFAULT), f};
    RANK_CHECK(two[0]);
    ferry_clear_error();
    RANK_CHECK(!ferry_future_wait_all(two, 2, 0) && ferry_last_status() == FERRY_EREMOTE);
    ferry_status first = ferry_last_remote_status();
    RANK_CHECK(first == FERRY_EINVAL || first == FERRY_ENOTSUP);
    ferry_future_release(two[0]);
    ferry_future_release(f);
    /* A future failed by hand with FERRY_EREMOTE has no known cause. */
    f = ferry_future_new();
    RANK_CHECK(f && ferry_future_set_error(f, FERRY_EREMOTE, "by hand") == FERRY_OK);
    RANK_CHECK(ferry_future_remote_status(f) == FERRY_EREMOTE);
    ferry_future_release(f);
    f = ferry_future_new();
    RANK_CHECK(f && ferry_future_remote_status(f) == FERRY_EAGAIN);
    ferry_future_release(f);
    RANK_CHECK(ferry_future_remote_status(NULL) == FERRY_EINVAL);

    /* Nested: worker0 -> worker1 -> worker2, which fails with EINVAL. */
    ferry_value *args = ferry_args(2, ferry_string("worker2"), ferry_string("fail_einval"));
    RANK_CHECK(check_call("worker1", "relay", args, FERRY_EINVAL,
                          "function 'relay' on worker 'worker1' failed: function 'fail_einval' "
                          "on worker 'worker2' failed: bad shape 3") == 0);
    RANK_CHECK(check_call("worker1", "relay_noted", args, FERRY_EINVAL,
                          "function 'relay_noted' on worker 'worker1' failed: while relaying: "
                          "function 'fail_einval' on worker 'worker2' failed: bad shape 3") == 0);
    ferry_value_release(args);

    /* A code that is not a failure of the callee's function stays as it is. */
    ferry_value *v = ferry_rpc_sync("worker1", "no_such_fn", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(!v && ferry_last_status() == FERRY_EUNKNOWN_FUNCTION);
    RANK_CHECK(ferry_last_remote_status() == FERRY_EUNKNOWN_FUNCTION);
    return 0;
}

/* relay2(): worker2 relays to worker1's relay, which calls worker0's fail_enotsup. */
static ferry_status relay2(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_value *inner = ferry_args(2, ferry_string("worker0"), ferry_string("fail_enotsup"));
    ferry_value *v = ferry_rpc_sync("worker1", "relay", inner, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(inner);
    if (!v)
        return ferry_last_status();
    *result = v;
    return FERRY_OK;
}

static int body_two_levels(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    RANK_CHECK(check_call("worker2", "relay2", NULL, FERRY_ENOTSUP,
                          "function 'relay2' on worker 'worker2' failed: function 'relay' on "
                          "worker 'worker1' failed: function 'fail_enotsup' on worker 'worker0' "
                          "failed: no such mode") == 0);
    return 0;
}

static int body_rref(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    /* The function's failure is stored in the OwnerRRef; to_here brings its code back. */
    ferry_rref *r = ferry_remote("worker1", "fail_einval", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r);
    RANK_CHECK(!ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EREMOTE);
    RANK_CHECK(ferry_last_remote_status() == FERRY_EINVAL);
    RANK_CHECK(strcmp(ferry_last_error(),
                      "function 'fail_einval' on worker 'worker1' failed: bad shape 3") == 0);
    ferry_rref_release(r);
    /* The same through a nested call on the owner, and an async function. */
    ferry_value *args = ferry_args(2, ferry_string("worker2"), ferry_string("fail_enotsup"));
    r = ferry_remote("worker1", "relay", args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    RANK_CHECK(r && !ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EREMOTE);
    RANK_CHECK(ferry_last_remote_status() == FERRY_ENOTSUP);
    ferry_rref_release(r);
    r = ferry_remote("worker1", "async_fail", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r && !ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_remote_status() == FERRY_ETYPE);
    ferry_rref_release(r);
    /* An OwnerRRef of this worker's own: the local value keeps the code too. */
    r = ferry_remote("worker0", "fail_einval", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r && !ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EREMOTE);
    RANK_CHECK(ferry_last_remote_status() == FERRY_EINVAL);
    ferry_rref_release(r);
    return 0;
}

static int check_creation_timeout(const char *to, const char *want)
{
    ferry_value *a = ferry_args(1, ferry_double(1.0));
    ferry_rref *r = ferry_remote(to, "sleep", a, NULL, 0.1);
    ferry_value_release(a);
    RANK_CHECK(r);
    RANK_CHECK(!ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_ETIMEDOUT);
    if (strcmp(ferry_last_error(), want) != 0) {
        fprintf(stderr, "want '%s'\n got '%s'\n", want, ferry_last_error());
        return 1;
    }
    ferry_rref_release(r);
    return 0;
}

static int body_creation_timeout(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    RANK_CHECK(check_creation_timeout(
                   "worker1", "RRef creation via rpc.remote() timed out, and it is possible that "
                              "the RRef on the owner node does not exist. (remote() of 'sleep' on "
                              "worker 'worker1' did not finish within 100 ms)") == 0);
    /* With the default timeout it is the agent's that counts. */
    RANK_CHECK(ferry_set_rpc_timeout(0.2) == FERRY_OK);
    ferry_value *a = ferry_args(1, ferry_double(1.0));
    ferry_rref *r = ferry_remote("worker2", "sleep", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    RANK_CHECK(r && !ferry_rref_to_here(r, 5.0));
    RANK_CHECK(ferry_last_status() == FERRY_ETIMEDOUT);
    RANK_CHECK(strstr(ferry_last_error(), "(remote() of 'sleep' on worker 'worker2' did not "
                                          "finish within 200 ms)"));
    ferry_rref_release(r);
    RANK_CHECK(ferry_set_rpc_timeout(60) == FERRY_OK);
    /* The owner's sleeps end before the shutdown's rounds. */
    usleep(1200000);
    return 0;
}

static void register_all(void)
{
    ferry_register_function("fail_einval", fail_einval, NULL);
    ferry_register_function("fail_enotsup", fail_enotsup, NULL);
    ferry_register_function("relay", relay, NULL);
    ferry_register_function("relay_noted", relay_noted, NULL);
    ferry_register_function("relay2", relay2, NULL);
    ferry_register_function("sleep", rpc_test_sleep, NULL);
    ferry_register_async_function("async_fail", async_fail, NULL);
}

Test(errors, remote_status_survives_behind_eremote, .init = register_all, .timeout = 60)
{
    rpc_case_run("shm", WORLD, body_remote_status, NULL, 55);
}

Test(errors, remote_status_over_tcp_and_two_levels_of_nesting, .init = register_all,
     .timeout = 60)
{
    rpc_case_run("tcp", WORLD, body_two_levels, NULL, 55);
}

Test(errors, rref_values_keep_the_remote_status, .init = register_all, .timeout = 60)
{
    rpc_case_run("shm", WORLD, body_rref, NULL, 55);
}

Test(errors, remote_creation_timeout_names_the_function_and_worker, .init = register_all,
     .timeout = 60)
{
    rpc_case_run("shm", WORLD, body_creation_timeout, NULL, 55);
}
