/* Object group tests: a Counter class constructed on every member of a group or on the first
   only, its methods called under every dispatch and collect policy, failing and unknown methods,
   failed constructions surfacing on the first call, and the objects destroyed on their owners
   once the group (and any call still holding it) is gone. On tcp and shm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/object.h"
#include "ferry/ops.h"
#include "group_util.h"

/* Counter(start): a value; add(x) adds an int (or the ints of a list) and returns the new value,
   get() returns it, times(t) returns t * value, whoami() the worker, fail() fails. A start of
   the string "explode" makes the constructor fail. */
typedef struct {
    int64_t value;
} counter;

static ferry_status counter_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                                void *user)
{
    const ferry_value *start = ferry_list_get(args, 0);
    if (ferry_value_kind(start) == FERRY_VALUE_STRING)
        return ferry_set_error(FERRY_EINVAL, "Counter cannot start at '%s'",
                               ferry_value_as_string(start));
    counter *c = malloc(sizeof *c);
    if (!c)
        return ferry_set_error(FERRY_ENOMEM, "no memory for a Counter");
    c->value = ferry_value_as_int(start);
    *obj = c;
    return FERRY_OK;
}

static void counter_free(void *obj, void *user)
{
    free(obj);
}

static ferry_status counter_add(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    counter *c = obj;
    const ferry_value *x = ferry_list_get(args, 0);
    if (ferry_value_kind(x) == FERRY_VALUE_LIST) {
        for (size_t i = 0; i < ferry_list_len(x); i++)
            c->value += ferry_value_as_int(ferry_list_get(x, i));
    } else {
        c->value += ferry_value_as_int(x);
    }
    *result = ferry_int(c->value);
    return FERRY_OK;
}

static ferry_status counter_get(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    *result = ferry_int(((counter *)obj)->value);
    return FERRY_OK;
}

static ferry_status counter_times(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result, void *user)
{
    ferry_tensor *t = ferry_mul_scalar(ferry_value_as_tensor(ferry_list_get(args, 0)),
                                       (double)((counter *)obj)->value);
    *result = group_test_tv(t);
    return *result ? FERRY_OK : ferry_last_status();
}

static ferry_status counter_whoami(void *obj, const ferry_value *args,
                                   const ferry_value *kwargs, ferry_value **result, void *user)
{
    *result = ferry_string(group_test_name());
    return FERRY_OK;
}

static ferry_status counter_fail(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    return ferry_set_error(FERRY_EINVAL, "Counter refuses on %s", group_test_name());
}

static ferry_status whoami_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    *result = ferry_string(group_test_name());
    return FERRY_OK;
}

/* {"alive": a, "destroyed": d} of this worker's objects (a dict: FLATTEN would concatenate
   lists). */
static ferry_value *counts_of(int64_t alive, int64_t destroyed)
{
    ferry_value *d = ferry_dict_new(), *a = ferry_int(alive), *x = ferry_int(destroyed);
    if (ferry_dict_set(d, "alive", a) != FERRY_OK ||
        ferry_dict_set(d, "destroyed", x) != FERRY_OK) {
        ferry_value_release(d);
        d = NULL;
    }
    ferry_value_release(a);
    ferry_value_release(x);
    return d;
}

static ferry_status object_counts_fn(const ferry_value *args, const ferry_value *kwargs,
                                     ferry_value **result, void *user)
{
    ferry_object_counts n;
    ferry_object_debug_counts(&n);
    *result = counts_of(n.alive, n.destroyed);
    return *result ? FERRY_OK : ferry_last_status();
}

static void register_counter(void)
{
    static const ferry_method_def methods[] = {
        {"add", counter_add, false},       {"get", counter_get, false},
        {"times", counter_times, false},   {"whoami", counter_whoami, true},
        {"fail", counter_fail, false},
    };
    ferry_class_def def = {.construct = counter_new,
                           .destroy = counter_free,
                           .methods = methods,
                           .n_methods = sizeof methods / sizeof methods[0]};
    cr_assert(ferry_register_class("Counter", &def) == FERRY_OK);
    cr_assert(ferry_register_function("object_counts", object_counts_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("whoami", whoami_fn, NULL) == FERRY_OK);
}

static ferry_value *method_run(ferry_group *g, const char *method, ferry_value *args,
                               ferry_dispatch d, ferry_collect c)
{
    ferry_future *f = ferry_group_call_method(g, method, args, NULL, d, c, FERRY_TIMEOUT_DEFAULT);
    if (!f)
        return NULL;
    ferry_value *v = ferry_future_value(f);
    ferry_future_release(f);
    return v;
}

/* Every worker of `g` has `alive` objects and has destroyed `destroyed` (after this worker's
   deletions reached their owners). */
static int check_counts(ferry_group *g, int64_t alive, int64_t destroyed)
{
    RANK_CHECK(ferry_debug_rref_wait_idle(20) == FERRY_OK);
    ferry_value *counts = group_test_run(g, "object_counts", NULL, NULL, FERRY_DISPATCH_ALL,
                                         FERRY_COLLECT_FLATTEN);
    RANK_CHECK(counts && ferry_list_len(counts) == ferry_group_size(g));
    int bad = 0;
    for (size_t i = 0; i < ferry_list_len(counts); i++) {
        ferry_value *n = ferry_list_get(counts, i);
        int64_t a = ferry_value_as_int(ferry_dict_get(n, "alive"));
        int64_t d = ferry_value_as_int(ferry_dict_get(n, "destroyed"));
        if (a != alive || d != destroyed) {
            fprintf(stderr, "%s: %lld alive, %lld destroyed; want %lld and %lld\n",
                    ferry_group_member(g, i), (long long)a, (long long)d, (long long)alive,
                    (long long)destroyed);
            bad++;
        }
    }
    ferry_value_release(counts);
    RANK_CHECK(bad == 0);
    return 0;
}

static int object_policies(ferry_group *og)
{
    ferry_value *none = ferry_list_of(0);
    CHECK_VALUE(method_run(og, "get", none, FERRY_DISPATCH_ALL, FERRY_COLLECT_FLATTEN),
                INTS(10, 10, 10, 10), "every member starts at 10");
    CHECK_VALUE(method_run(og, "get", none, FERRY_DISPATCH_ALL, FERRY_COLLECT_SUM),
                ferry_int(40), "ALL + SUM");
    /* SLICE: the members add 1+2, 3+4, 5+6 and 7+8. */
    ferry_value *eight = ferry_args(1, INTS(1, 2, 3, 4, 5, 6, 7, 8));
    CHECK_VALUE(method_run(og, "add", eight, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN),
                INTS(13, 17, 21, 25), "SLICE + FLATTEN");
    CHECK_VALUE(method_run(og, "get", none, FERRY_DISPATCH_ALL, FERRY_COLLECT_SUM),
                ferry_int(76), "the slices added up");
    CHECK_VALUE(method_run(og, "get", none, FERRY_DISPATCH_ALL, FERRY_COLLECT_MEAN),
                ferry_double(19.0), "ALL + MEAN");
    ferry_value *five = ferry_args(1, ferry_int(5));
    CHECK_VALUE(method_run(og, "add", five, FERRY_DISPATCH_ALL, FERRY_COLLECT_FIRST),
                ferry_int(18), "ALL + FIRST");
    /* FUNCTION dispatch in reverse: member i adds chunk 3 - i, which evens them all out. */
    CHECK_VALUE(method_run(og, "add", eight, FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_FLATTEN),
                INTS(33, 33, 33, 33), "FUNCTION dispatch");
    CHECK_VALUE(method_run(og, "get", none, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FUNCTION),
                ferry_list_of(2, ferry_int(4), ferry_int(33)), "FUNCTION collect");
    ferry_value *zero = ferry_args(1, ferry_int(0));
    CHECK_VALUE(method_run(og, "add", zero, FERRY_DISPATCH_ALL, FERRY_COLLECT_NONE),
                ferry_none(), "NONE");
    ferry_tensor *x = group_test_counting(8, 2);
    ferry_value *xs = ferry_args(1, ferry_tensor_value(x));
    CHECK_VALUE(method_run(og, "times", xs, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN),
                group_test_tv(ferry_mul_scalar(x, 33)),
                "a tensor in slices, times 33 on every member");
    CHECK_VALUE(method_run(og, "whoami", none, FERRY_DISPATCH_ALL, FERRY_COLLECT_FLATTEN),
                ferry_list_of(4, ferry_string("worker0"), ferry_string("worker1"),
                              ferry_string("worker2"), ferry_string("worker3")),
                "each object on its own worker");
    ferry_value_release(xs);
    ferry_tensor_release(x);
    ferry_value_release(zero);
    ferry_value_release(five);
    ferry_value_release(eight);
    ferry_value_release(none);
    return 0;
}

static int object_errors(ferry_group *og)
{
    ferry_future *f = ferry_group_call_method(og, "fail", NULL, NULL, FERRY_DISPATCH_ALL,
                                              FERRY_COLLECT_SUM, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_EREMOTE);
    const char *why = ferry_future_error(f);
    RANK_CHECK(why && strstr(why, "member 0 of 4 (worker 'worker0')") &&
               strstr(why, "first of several"));
    RANK_CHECK(strstr(why, "Counter.fail") && strstr(why, "Counter refuses on worker0"));
    RANK_CHECK(strstr(why, "method 'fail'"));
    ferry_future_release(f);
    f = ferry_group_call_method(og, "nope", NULL, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_NONE,
                                FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_EREMOTE);
    RANK_CHECK(strstr(ferry_future_error(f), "has no method") &&
               strstr(ferry_future_error(f), "nope"));
    ferry_future_release(f);
    RANK_CHECK(ferry_group_set_functions(og, NULL, NULL, NULL) == FERRY_OK);
    RANK_CHECK(!ferry_group_call_method(og, "get", NULL, NULL, FERRY_DISPATCH_FUNCTION,
                                        FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT) &&
               ferry_last_status() == FERRY_EINVAL);
    return 0;
}

static int body_objects_all(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_group *g = ferry_group_range(0, world);
    RANK_CHECK(g && check_counts(g, 0, 0) == 0);
    ferry_value *ten = ferry_args(1, ferry_int(10));
    ferry_group *og = ferry_group_remote_object(g, "Counter", ten, NULL, FERRY_CONSTRUCT_ALL);
    ferry_value_release(ten);
    RANK_CHECK(og && ferry_group_size(og) == 4);
    for (size_t i = 0; i < 4; i++) {
        RANK_CHECK(!strcmp(ferry_group_member(og, i), ferry_group_member(g, i)));
        RANK_CHECK(!strcmp(ferry_rref_owner_name(ferry_group_rref(og, i)),
                           ferry_group_member(g, i)));
    }
    RANK_CHECK(!ferry_group_rref(og, 4) && ferry_last_status() == FERRY_EINVAL);
    RANK_CHECK(ferry_group_set_functions(og, group_test_reverse_dispatch, group_test_last_collect,
                                         NULL) == FERRY_OK);
    RANK_CHECK(object_policies(og) == 0);
    RANK_CHECK(object_errors(og) == 0);
    /* Functions reach the members' workers too. */
    CHECK_VALUE(group_test_run(og, "whoami", NULL, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_FIRST),
                ferry_string("worker0"), "a function on an object group");
    RANK_CHECK(check_counts(g, 1, 0) == 0);

    /* A call in flight keeps the objects; releasing the group then destroys them. */
    ferry_future *f = ferry_group_call_method(og, "get", NULL, NULL, FERRY_DISPATCH_ALL,
                                              FERRY_COLLECT_SUM, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f);
    ferry_group_release(og);
    CHECK_VALUE(ferry_future_value(f), ferry_int(4 * 33), "after the group was released");
    ferry_future_release(f);
    RANK_CHECK(check_counts(g, 0, 1) == 0);
    ferry_group_release(g);
    return 0;
}

static int body_objects_first(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    const char *names[2] = {"worker2", "worker1"};
    ferry_group *g = ferry_group_new(names, 2);
    ferry_group *all = ferry_group_range(0, world);
    RANK_CHECK(g && all);
    ferry_value *five = ferry_args(1, ferry_int(5));
    ferry_group *og = ferry_group_remote_object(g, "Counter", five, NULL, FERRY_CONSTRUCT_FIRST);
    RANK_CHECK(og && ferry_group_size(og) == 1);
    RANK_CHECK(!strcmp(ferry_group_member(og, 0), "worker2"));
    RANK_CHECK(!ferry_group_member(og, 1));
    ferry_value *l = ferry_args(1, INTS(1, 2, 3));
    CHECK_VALUE(method_run(og, "add", l, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN),
                INTS(11), "one member gets the whole slice");
    CHECK_VALUE(method_run(og, "add", five, FERRY_DISPATCH_ALL, FERRY_COLLECT_MEAN),
                ferry_double(16.0), "MEAN of one");
    ferry_value *counts = group_test_run(all, "object_counts", NULL, NULL, FERRY_DISPATCH_ALL,
                                         FERRY_COLLECT_FLATTEN);
    CHECK_VALUE(counts, ferry_list_of(4, counts_of(0, 0), counts_of(0, 0), counts_of(1, 0),
                                          counts_of(0, 0)),
                "only worker2 holds an object");

    /* Construction failures surface on the first call, naming the member. */
    ferry_value *bad = ferry_args(1, ferry_string("explode"));
    ferry_group *broken = ferry_group_remote_object(g, "Counter", bad, NULL, FERRY_CONSTRUCT_ALL);
    ferry_value_release(bad);
    RANK_CHECK(broken && ferry_group_size(broken) == 2);
    ferry_future *f = ferry_group_call_method(broken, "get", NULL, NULL, FERRY_DISPATCH_ALL,
                                              FERRY_COLLECT_SUM, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_EREMOTE);
    RANK_CHECK(strstr(ferry_future_error(f), "member 0 of 2 (worker 'worker2')") &&
               strstr(ferry_future_error(f), "Counter cannot start at 'explode'"));
    ferry_future_release(f);
    ferry_group_release(broken);
    ferry_group *unknown = ferry_group_remote_object(g, "Nope", five, NULL, FERRY_CONSTRUCT_FIRST);
    RANK_CHECK(unknown);
    f = ferry_group_call_method(unknown, "get", NULL, NULL, FERRY_DISPATCH_ALL,
                                FERRY_COLLECT_FIRST, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_EREMOTE);
    RANK_CHECK(strstr(ferry_future_error(f), "worker 'worker2'") &&
               strstr(ferry_future_error(f), "Nope"));
    ferry_future_release(f);
    ferry_group_release(unknown);
    RANK_CHECK(!ferry_group_remote_object(g, "Counter", five, NULL, (ferry_construct)9) &&
               ferry_last_status() == FERRY_EINVAL);

    ferry_group_release(og);
    RANK_CHECK(ferry_debug_rref_wait_idle(20) == FERRY_OK);
    counts = group_test_run(all, "object_counts", NULL, NULL, FERRY_DISPATCH_ALL,
                            FERRY_COLLECT_FLATTEN);
    CHECK_VALUE(counts, ferry_list_of(4, counts_of(0, 0), counts_of(0, 0), counts_of(0, 1),
                                          counts_of(0, 0)),
                "worker2's object destroyed with the group");
    ferry_value_release(l);
    ferry_value_release(five);
    ferry_group_release(all);
    ferry_group_release(g);
    return 0;
}

GROUP_BOTH(group_objects, answer_every_policy_and_die_with_the_group_when_on_all, 4,
           register_counter, body_objects_all, 60)
GROUP_BOTH(group_objects, one_is_made_when_constructing_on_the_first_member, 4,
           register_counter, body_objects_first, 40)
