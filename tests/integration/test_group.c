/* Worker group tests: every dispatch policy with every collect policy on four workers, checked
   against what one worker computes alone; uneven slices; groups by names and by rank range;
   dispatch and collect functions; a failing member and a member that times out (the call fails
   only once every member finished, naming the member); bad inputs with their codes. Object
   groups are in test_group_objects.c. On tcp and shm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/object.h"
#include "ferry/ops.h"
#include "group_util.h"


/* ---- functions the members run ---- */

static ferry_value *doubled(const ferry_value *v)
{
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_INT:
        return ferry_int(2 * ferry_value_as_int(v));
    case FERRY_VALUE_DOUBLE:
        return ferry_double(2 * ferry_value_as_double(v));
    case FERRY_VALUE_TENSOR: {
        ferry_tensor *t = ferry_mul_scalar(ferry_value_as_tensor(v), 2);
        ferry_value *r = t ? ferry_tensor_value(t) : NULL;
        ferry_tensor_release(t);
        return r;
    }
    case FERRY_VALUE_LIST: {
        ferry_value *items[64];
        size_t n = ferry_list_len(v);
        if (n > 64)
            return NULL;
        for (size_t i = 0; i < n; i++)
            items[i] = doubled(ferry_list_get(v, i));
        ferry_value *r = ferry_list_from(items, n);
        for (size_t i = 0; i < n; i++)
            ferry_value_release(items[i]);
        return r;
    }
    default:
        ferry_set_error(FERRY_ETYPE, "cannot double a %s", ferry_kind_name(ferry_value_kind(v)));
        return NULL;
    }
}

/* dbl(x) or dbl(x=...): twice x. */
static ferry_status dbl_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    const ferry_value *x = ferry_list_len(args) ? ferry_list_get(args, 0)
                                                : ferry_dict_get(kwargs, "x");
    *result = x ? doubled(x) : NULL;
    return *result ? FERRY_OK : ferry_set_error(FERRY_EINVAL, "dbl: %s", ferry_last_error());
}

/* total(x): {"n": rows or items, "sum": the sum (a 0-dim tensor for tensors, an int for lists)}. */
static ferry_status total_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    const ferry_value *x = ferry_list_get(args, 0);
    ferry_value *n = NULL, *sum = NULL;
    if (ferry_value_kind(x) == FERRY_VALUE_TENSOR) {
        ferry_tensor *t = ferry_value_as_tensor(x);
        ferry_tensor *s = ferry_sum(t);
        n = ferry_int(ferry_tensor_size(t, 0));
        sum = s ? ferry_tensor_value(s) : NULL;
        ferry_tensor_release(s);
    } else {
        int64_t s = 0;
        for (size_t i = 0; i < ferry_list_len(x); i++)
            s += ferry_value_as_int(ferry_list_get(x, i));
        n = ferry_int((int64_t)ferry_list_len(x));
        sum = ferry_int(s);
    }
    ferry_value *d = ferry_dict_new();
    ferry_status rc = n && sum && d ? ferry_dict_set(d, "n", n) : FERRY_ENOMEM;
    if (rc == FERRY_OK)
        rc = ferry_dict_set(d, "sum", sum);
    ferry_value_release(n);
    ferry_value_release(sum);
    if (rc != FERRY_OK) {
        ferry_value_release(d);
        return ferry_set_error(rc, "total: no result");
    }
    *result = d;
    return FERRY_OK;
}

/* rows(x) or rows(x=...): the rows of a tensor or the items of a list. */
static ferry_status rows_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    const ferry_value *x = ferry_list_len(args) ? ferry_list_get(args, 0)
                                                : ferry_dict_get(kwargs, "x");
    int64_t n = ferry_value_kind(x) == FERRY_VALUE_TENSOR
                    ? ferry_tensor_size(ferry_value_as_tensor(x), 0)
                    : (int64_t)ferry_list_len(x);
    *result = ferry_int(n);
    return FERRY_OK;
}

static ferry_status whoami_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    *result = ferry_string(group_test_name());
    return FERRY_OK;
}

/* fail_on(victims, message, sleep_s): the workers named in `victims` fail at once with the
   message; the others sleep sleep_s and return their name. */
static ferry_status fail_on_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    const ferry_value *victims = ferry_list_get(args, 0);
    for (size_t i = 0; i < ferry_list_len(victims); i++)
        if (!strcmp(ferry_value_as_string(ferry_list_get(victims, i)), group_test_name()))
            return ferry_set_error(FERRY_EINVAL, "%s refuses: %s", group_test_name(),
                                   ferry_value_as_string(ferry_list_get(args, 1)));
    ferry_value *sleep_args = ferry_args(1, ferry_value_retain(ferry_list_get(args, 2)));
    ferry_value *slept = NULL;
    rpc_test_sleep(sleep_args, kwargs, &slept, NULL);
    ferry_value_release(sleep_args);
    ferry_value_release(slept);
    *result = ferry_string(group_test_name());
    return FERRY_OK;
}

/* sleep_on(name, seconds): that worker sleeps; every one returns 1. */
static ferry_status sleep_on_fn(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    if (!strcmp(ferry_value_as_string(ferry_list_get(args, 0)), group_test_name())) {
        ferry_value *sleep_args = ferry_args(1, ferry_value_retain(ferry_list_get(args, 1)));
        ferry_value *slept = NULL;
        rpc_test_sleep(sleep_args, kwargs, &slept, NULL);
        ferry_value_release(sleep_args);
        ferry_value_release(slept);
    }
    *result = ferry_int(1);
    return FERRY_OK;
}

static void register_functions(void)
{
    cr_assert(ferry_register_function("dbl", dbl_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("total", total_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("rows", rows_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("whoami", whoami_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("fail_on", fail_on_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("sleep_on", sleep_on_fn, NULL) == FERRY_OK);
}

/* ---- every dispatch with every collect ---- */

typedef struct {
    ferry_dispatch d;
    ferry_collect c;
    ferry_value *want; /* owned */
} combo;

static const char *combo_name(const combo *k, const char *input, char *buf, size_t cap)
{
    static const char *ds[] = {"ALL", "SLICE", "FUNCTION"};
    static const char *cs[] = {"NONE", "FIRST", "FLATTEN", "SUM", "MEAN", "FUNCTION"};
    snprintf(buf, cap, "%s input, %s dispatch, %s collect", input, ds[k->d], cs[k->c]);
    return buf;
}

/* Runs dbl(x) on the group under every combination and compares with `want`. */
static int run_combos(ferry_group *g, ferry_value *x, const char *input, combo *ks, size_t n)
{
    ferry_value *args = ferry_args(1, ferry_value_retain(x));
    RANK_CHECK(args);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        char what[128];
        ferry_value *got = group_test_run(g, "dbl", args, NULL, ks[i].d, ks[i].c);
        const char *name = combo_name(&ks[i], input, what, sizeof what);
        if (!group_test_same(got, ferry_value_retain(ks[i].want), name))
            bad++;
    }
    ferry_value_release(args);
    RANK_CHECK(bad == 0);
    return 0;
}

/* x = a [8, 2] float64 tensor; D = dbl(x) as worker0 alone computes it; D0..D3 its quarters. */
static int combos_tensor(ferry_group *g)
{
    ferry_tensor *x = group_test_counting(8, 2);
    ferry_value *xv = ferry_tensor_value(x);
    ferry_value *args = ferry_args(1, ferry_value_retain(xv));
    ferry_value *dv = ferry_rpc_sync("worker0", "dbl", args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    RANK_CHECK(dv);
    ferry_tensor *d = ferry_value_as_tensor(dv);
    RANK_CHECK(ferry_tensor_item_at(d, 15) == 30.0);
    ferry_tensor *q[4];
    for (int i = 0; i < 4; i++)
        q[i] = ferry_narrow(d, 0, 2 * i, 2);
    ferry_tensor *four[4] = {d, d, d, d}, *rev[4] = {q[3], q[2], q[1], q[0]};
    /* Sums of the quarters, by hand: rows 2k + r summed over k. */
    const double qsum[4] = {48, 56, 64, 72}, qmean[4] = {12, 14, 16, 18};
    combo ks[] = {
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_NONE, ferry_none()},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_FIRST, ferry_value_retain(dv)},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_FLATTEN, group_test_tv(ferry_cat(four, 4, 0))},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_SUM, group_test_tv(ferry_mul_scalar(d, 4))},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_MEAN, ferry_value_retain(dv)},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_FUNCTION,
         ferry_list_of(2, ferry_int(4), ferry_value_retain(dv))},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_NONE, ferry_none()},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_FIRST, ferry_tensor_value(q[0])},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN, ferry_value_retain(dv)},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_SUM, group_test_tensor_of(2, 2, qsum)},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_MEAN, group_test_tensor_of(2, 2, qmean)},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_FUNCTION,
         ferry_list_of(2, ferry_int(4), ferry_tensor_value(q[3]))},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_NONE, ferry_none()},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_FIRST, ferry_tensor_value(q[3])},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_FLATTEN, group_test_tv(ferry_cat(rev, 4, 0))},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_SUM, group_test_tensor_of(2, 2, qsum)},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_MEAN, group_test_tensor_of(2, 2, qmean)},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_FUNCTION,
         ferry_list_of(2, ferry_int(4), ferry_tensor_value(q[0]))},
    };
    size_t n = sizeof ks / sizeof ks[0];
    int rc = run_combos(g, xv, "tensor", ks, n);
    for (size_t i = 0; i < n; i++)
        ferry_value_release(ks[i].want);
    for (int i = 0; i < 4; i++)
        ferry_tensor_release(q[i]);
    ferry_value_release(dv);
    ferry_value_release(xv);
    ferry_tensor_release(x);
    return rc;
}

/* x = [1 .. 8]; dbl alone gives [2 .. 16]. */
static int combos_list(ferry_group *g)
{
    ferry_value *x = INTS(1, 2, 3, 4, 5, 6, 7, 8);
    ferry_value *args = ferry_args(1, ferry_value_retain(x));
    ferry_value *dl = ferry_rpc_sync("worker0", "dbl", args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    CHECK_VALUE(ferry_value_retain(dl), INTS(2, 4, 6, 8, 10, 12, 14, 16), "one worker");
    int64_t four[32];
    for (int i = 0; i < 32; i++)
        four[i] = 2 * (i % 8 + 1);
    combo ks[] = {
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_NONE, ferry_none()},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_FIRST, ferry_value_retain(dl)},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_FLATTEN, group_test_ints(32, four)},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_SUM, INTS(8, 16, 24, 32, 40, 48, 56, 64)},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_MEAN, DOUBLES(2, 4, 6, 8, 10, 12, 14, 16)},
        {FERRY_DISPATCH_ALL, FERRY_COLLECT_FUNCTION,
         ferry_list_of(2, ferry_int(4), ferry_value_retain(dl))},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_NONE, ferry_none()},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_FIRST, INTS(2, 4)},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN, ferry_value_retain(dl)},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_SUM, INTS(32, 40)},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_MEAN, DOUBLES(8, 10)},
        {FERRY_DISPATCH_SLICE, FERRY_COLLECT_FUNCTION, ferry_list_of(2, ferry_int(4),
                                                                     INTS(14, 16))},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_NONE, ferry_none()},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_FIRST, INTS(14, 16)},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_FLATTEN, INTS(14, 16, 10, 12, 6, 8, 2, 4)},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_SUM, INTS(32, 40)},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_MEAN, DOUBLES(8, 10)},
        {FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_FUNCTION, ferry_list_of(2, ferry_int(4),
                                                                        INTS(2, 4))},
    };
    size_t n = sizeof ks / sizeof ks[0];
    int rc = run_combos(g, x, "list", ks, n);
    for (size_t i = 0; i < n; i++)
        ferry_value_release(ks[i].want);
    ferry_value_release(dl);
    ferry_value_release(x);
    return rc;
}

/* x = 3: a number goes whole under every dispatch; dbl alone gives 6. */
static int combos_number(ferry_group *g)
{
    ferry_value *x = ferry_int(3);
    ferry_value *args = ferry_args(1, ferry_value_retain(x));
    CHECK_VALUE(ferry_rpc_sync("worker0", "dbl", args, NULL, FERRY_TIMEOUT_DEFAULT),
                ferry_int(6), "one worker");
    ferry_value_release(args);
    combo ks[18];
    ferry_dispatch ds[3] = {FERRY_DISPATCH_ALL, FERRY_DISPATCH_SLICE, FERRY_DISPATCH_FUNCTION};
    for (size_t i = 0; i < 3; i++) {
        ks[6 * i + 0] = (combo){ds[i], FERRY_COLLECT_NONE, ferry_none()};
        ks[6 * i + 1] = (combo){ds[i], FERRY_COLLECT_FIRST, ferry_int(6)};
        ks[6 * i + 2] = (combo){ds[i], FERRY_COLLECT_FLATTEN, INTS(6, 6, 6, 6)};
        ks[6 * i + 3] = (combo){ds[i], FERRY_COLLECT_SUM, ferry_int(24)};
        ks[6 * i + 4] = (combo){ds[i], FERRY_COLLECT_MEAN, ferry_double(6.0)};
        ks[6 * i + 5] = (combo){ds[i], FERRY_COLLECT_FUNCTION,
                                ferry_list_of(2, ferry_int(4), ferry_int(6))};
    }
    int rc = run_combos(g, x, "number", ks, 18);
    for (size_t i = 0; i < 18; i++)
        ferry_value_release(ks[i].want);
    ferry_value_release(x);
    return rc;
}

static int body_combos(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_group *g = ferry_group_range(0, world);
    RANK_CHECK(g && ferry_group_size(g) == 4);
    RANK_CHECK(ferry_group_set_functions(g, group_test_reverse_dispatch, group_test_last_collect,
                                         NULL) == FERRY_OK);
    int rc = combos_tensor(g) || combos_list(g) || combos_number(g);
    ferry_group_release(g);
    return rc;
}

/* ---- uneven slices, per-slice totals and keyword slices ---- */

static int body_uneven(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_group *g = ferry_group_range(0, world);
    RANK_CHECK(g);
    ferry_tensor *x = group_test_counting(5, 3);
    ferry_value *xv = ferry_tensor_value(x);
    ferry_value *args = ferry_args(1, ferry_value_retain(xv));
    CHECK_VALUE(group_test_run(g, "rows", args, NULL, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN),
                INTS(2, 2, 1, 0), "5 rows on 4 members");
    ferry_value *whole = ferry_rpc_sync("worker1", "dbl", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(whole);
    CHECK_VALUE(group_test_run(g, "dbl", args, NULL, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN),
                ferry_value_retain(whole), "5 rows doubled in slices, the empty one included");
    /* The per-slice totals add up to the total of the whole. */
    ferry_value *total = ferry_rpc_sync("worker2", "total", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(total && ferry_value_as_int(ferry_dict_get(total, "n")) == 5);
    RANK_CHECK(ferry_tensor_item(ferry_value_as_tensor(ferry_dict_get(total, "sum"))) == 105.0);
    CHECK_VALUE(group_test_run(g, "total", args, NULL, FERRY_DISPATCH_SLICE, FERRY_COLLECT_SUM),
                total, "the sum of the slices' totals");
    ferry_value_release(args);

    /* Lists: 3 items on 4 members; and keyword values slice the same way. */
    ferry_value *l = INTS(7, 8, 9);
    args = ferry_args(1, ferry_value_retain(l));
    CHECK_VALUE(group_test_run(g, "rows", args, NULL, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN),
                INTS(1, 1, 1, 0), "3 items on 4 members");
    CHECK_VALUE(group_test_run(g, "total", args, NULL, FERRY_DISPATCH_SLICE, FERRY_COLLECT_SUM),
                ferry_rpc_sync("worker3", "total", args, NULL, FERRY_TIMEOUT_DEFAULT),
                "the sum of the list slices' totals");
    ferry_value_release(args);
    ferry_value *kw = ferry_dict_new();
    RANK_CHECK(ferry_dict_set(kw, "x", xv) == FERRY_OK);
    CHECK_VALUE(group_test_run(g, "rows", NULL, kw, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN),
                INTS(2, 2, 1, 0), "a keyword tensor sliced");
    CHECK_VALUE(group_test_run(g, "dbl", NULL, kw, FERRY_DISPATCH_SLICE, FERRY_COLLECT_FLATTEN),
                whole, "a keyword tensor doubled in slices");
    CHECK_VALUE(group_test_run(g, "rows", NULL, kw, FERRY_DISPATCH_ALL, FERRY_COLLECT_SUM),
                ferry_int(20), "ALL sends the whole keyword value");
    ferry_value_release(kw);
    ferry_value_release(l);
    ferry_value_release(xv);
    ferry_tensor_release(x);
    ferry_group_release(g);
    return 0;
}

/* ---- groups by names and by ranks ---- */

static int body_names_and_ranges(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_group *r = ferry_group_range(1, 3);
    RANK_CHECK(r && ferry_group_size(r) == 3);
    RANK_CHECK(!strcmp(ferry_group_member(r, 0), "worker1"));
    RANK_CHECK(!strcmp(ferry_group_member(r, 2), "worker3"));
    RANK_CHECK(!ferry_group_member(r, 3) && ferry_last_status() == FERRY_EINVAL);
    RANK_CHECK(!ferry_group_rref(r, 0) && ferry_last_status() == FERRY_EINVAL);
    RANK_CHECK(strstr(ferry_last_error(), "holds no RRefs"));
    ferry_value *who = group_test_run(r, "whoami", NULL, NULL, FERRY_DISPATCH_ALL,
                                      FERRY_COLLECT_FLATTEN);
    RANK_CHECK(who && ferry_list_len(who) == 3);
    for (size_t i = 0; i < 3; i++)
        RANK_CHECK(!strcmp(ferry_value_as_string(ferry_list_get(who, i)),
                           ferry_group_member(r, i)));
    ferry_value_release(who);

    /* Names in any order, repeats allowed; the names are copied. */
    char buf[3][16] = {"worker3", "worker0", "worker3"};
    const char *names[3] = {buf[0], buf[1], buf[2]};
    ferry_group *g = ferry_group_new(names, 3);
    RANK_CHECK(g && ferry_group_size(g) == 3);
    memset(buf, 0, sizeof buf);
    RANK_CHECK(!strcmp(ferry_group_member(g, 0), "worker3"));
    RANK_CHECK(!strcmp(ferry_group_member(g, 1), "worker0"));
    who = group_test_run(g, "whoami", NULL, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_FLATTEN);
    RANK_CHECK(who && ferry_list_len(who) == 3);
    RANK_CHECK(!strcmp(ferry_value_as_string(ferry_list_get(who, 0)), "worker3"));
    RANK_CHECK(!strcmp(ferry_value_as_string(ferry_list_get(who, 1)), "worker0"));
    RANK_CHECK(!strcmp(ferry_value_as_string(ferry_list_get(who, 2)), "worker3"));
    ferry_value_release(who);
    CHECK_VALUE(group_test_run(g, "whoami", NULL, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_FIRST),
                ferry_string("worker3"), "FIRST is member 0's");

    /* A group outlives a reference taken on it; a call keeps its group alive. */
    ferry_group *extra = ferry_group_retain(g);
    RANK_CHECK(extra == g);
    ferry_value *args = ferry_args(1, INTS(1, 2, 3, 4, 5, 6));
    ferry_future *f = ferry_group_call(g, "dbl", args, NULL, FERRY_DISPATCH_SLICE,
                                       FERRY_COLLECT_FLATTEN, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    RANK_CHECK(f);
    ferry_group_release(extra);
    ferry_group_release(g);
    CHECK_VALUE(ferry_future_value(f), INTS(2, 4, 6, 8, 10, 12), "after the group was released");
    ferry_future_release(f);
    ferry_group_release(r);
    return 0;
}

/* ---- a failing member, a member that times out ---- */

static int body_member_fails(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_group *g = ferry_group_range(0, world);
    RANK_CHECK(g);
    /* worker2 fails at once; the others take 2 s: the call fails only after them. */
    ferry_value *args = ferry_args(3, ferry_list_of(1, ferry_string("worker2")),
                                   ferry_string("bad input 7"), ferry_double(2.0));
    double t0 = rpc_test_now_s();
    ferry_future *f = ferry_group_call(g, "fail_on", args, NULL, FERRY_DISPATCH_ALL,
                                       FERRY_COLLECT_FLATTEN, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    RANK_CHECK(f);
    RANK_CHECK(ferry_future_wait(f, 0.3) == FERRY_EAGAIN);
    RANK_CHECK(!ferry_future_done(f));
    RANK_CHECK(ferry_future_wait(f, 0) == FERRY_EREMOTE);
    double took = rpc_test_now_s() - t0;
    RANK_CHECK(took >= 1.95);
    const char *why = ferry_future_error(f);
    RANK_CHECK(why && strstr(why, "member 2 of 4 (worker 'worker2')"));
    RANK_CHECK(strstr(why, "worker2 refuses: bad input 7") && strstr(why, "'fail_on'"));
    RANK_CHECK(!strstr(why, "first of several"));
    RANK_CHECK(!ferry_future_value(f) && ferry_last_status() == FERRY_EREMOTE);
    ferry_future_release(f);

    /* Two fail: the first in member order is named. */
    args = ferry_args(3, ferry_list_of(2, ferry_string("worker3"), ferry_string("worker1")),
                      ferry_string("no"), ferry_double(0.05));
    f = ferry_group_call(g, "fail_on", args, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_SUM,
                         FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_EREMOTE);
    why = ferry_future_error(f);
    RANK_CHECK(why && strstr(why, "member 1 of 4 (worker 'worker1')"));
    RANK_CHECK(strstr(why, "first of several") && strstr(why, "worker1 refuses: no"));
    ferry_future_release(f);

    /* An unknown function fails on every member with the code of one. */
    f = ferry_group_call(g, "no_such_fn", NULL, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_NONE,
                         FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_EUNKNOWN_FUNCTION);
    RANK_CHECK(strstr(ferry_future_error(f), "member 0 of 4 (worker 'worker0')"));
    RANK_CHECK(strstr(ferry_future_error(f), "no_such_fn"));
    ferry_future_release(f);

    /* The group still works after failures. */
    CHECK_VALUE(group_test_run(g, "whoami", NULL, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_FIRST),
                ferry_string("worker0"), "after failures");
    ferry_group_release(g);
    return 0;
}

static int body_member_times_out(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_group *g = ferry_group_range(0, world);
    RANK_CHECK(g);
    ferry_value *args = ferry_args(2, ferry_string("worker3"), ferry_double(2.5));
    double t0 = rpc_test_now_s();
    ferry_future *f = ferry_group_call(g, "sleep_on", args, NULL, FERRY_DISPATCH_ALL,
                                       FERRY_COLLECT_SUM, 0.5);
    ferry_value_release(args);
    RANK_CHECK(f);
    RANK_CHECK(ferry_future_wait(f, 0) == FERRY_ETIMEDOUT);
    double took = rpc_test_now_s() - t0;
    RANK_CHECK(took >= 0.45 && took < 2.0);
    const char *why = ferry_future_error(f);
    RANK_CHECK(why && strstr(why, "member 3 of 4 (worker 'worker3')") && strstr(why, "timeout"));
    ferry_future_release(f);

    /* The same call with room for the sleep succeeds. */
    args = ferry_args(2, ferry_string("worker3"), ferry_double(0.2));
    f = ferry_group_call(g, "sleep_on", args, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_SUM, 10);
    ferry_value_release(args);
    RANK_CHECK(f);
    CHECK_VALUE(ferry_future_value(f), ferry_int(4), "every member answered");
    ferry_future_release(f);
    ferry_group_release(g);
    return 0;
}

/* ---- dispatch and collect functions ---- */

/* Member i gets [i] (an int) for even i and [i + 0.5] (a double) for odd i; fails for member 1
   of a call whose first argument is the string "fail"; gives member 2 a non-list for "bad". */
static ferry_status mixed_dispatch(size_t n, size_t index, const ferry_value *args,
                                   const ferry_value *kwargs, ferry_value **member_args,
                                   ferry_value **member_kwargs, void *user)
{
    const char *mode = ferry_value_as_string(ferry_list_get(args, 0));
    ferry_clear_error();
    if (mode && !strcmp(mode, "fail") && index == 1)
        return ferry_set_error(FERRY_ENOTSUP, "member one is not served");
    if (mode && !strcmp(mode, "bad") && index == 2) {
        *member_args = ferry_int(2);
        return FERRY_OK;
    }
    if (mode && !strcmp(mode, "deep") && index == 1) {
        /* Too deep to send (the wire's limit is 64): member 0 is sent, member 1's send fails. */
        ferry_value *v = ferry_int(0);
        for (int i = 0; i < 70 && v; i++)
            v = ferry_list_of(1, v);
        *member_args = ferry_args(1, v);
        return *member_args ? FERRY_OK : ferry_last_status();
    }
    *member_args = index % 2 ? ferry_args(1, ferry_double((double)index + 0.5))
                             : ferry_args(1, ferry_int((int64_t)index));
    return FERRY_OK;
}

/* Sums the ints of the results as an int, or fails when asked to (user points at a flag). */
static ferry_status strict_collect(ferry_value *const *results, size_t n, ferry_value **out,
                                   void *user)
{
    if (*(int *)user)
        return ferry_set_error(FERRY_EPROTO, "collect refuses %zu results", n);
    int64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += (int64_t)ferry_value_as_double(results[i]);
    *out = ferry_int(s);
    return FERRY_OK;
}

static int body_functions(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_group *g = ferry_group_range(0, world);
    int refuse = 0;
    RANK_CHECK(g);
    RANK_CHECK(ferry_group_set_functions(g, mixed_dispatch, strict_collect, &refuse) == FERRY_OK);
    ferry_value *args = ferry_args(1, ferry_string("ok"));
    /* dbl of 0, 1.5, 2, 3.5: ints stay ints, a mix of ints and doubles sums to a double. */
    CHECK_VALUE(group_test_run(g, "dbl", args, NULL, FERRY_DISPATCH_FUNCTION,
                               FERRY_COLLECT_FLATTEN),
                ferry_list_of(4, ferry_int(0), ferry_double(3.0), ferry_int(4), ferry_double(7.0)),
                "function dispatch");
    CHECK_VALUE(group_test_run(g, "dbl", args, NULL, FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_SUM),
                ferry_double(14.0), "a mixed sum");
    CHECK_VALUE(group_test_run(g, "dbl", args, NULL, FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_MEAN),
                ferry_double(3.5), "a mixed mean");
    CHECK_VALUE(group_test_run(g, "dbl", args, NULL, FERRY_DISPATCH_FUNCTION,
                               FERRY_COLLECT_FUNCTION),
                ferry_int(14), "function collect");
    ferry_value_release(args);

    /* The dispatch function fails: nothing is sent, the call returns NULL with its error. */
    args = ferry_args(1, ferry_string("fail"));
    RANK_CHECK(!ferry_group_call(g, "dbl", args, NULL, FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_SUM,
                                 FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_ENOTSUP);
    RANK_CHECK(strstr(ferry_last_error(), "member 1 (worker 'worker1')") &&
               strstr(ferry_last_error(), "member one is not served"));
    ferry_value_release(args);
    args = ferry_args(1, ferry_string("bad"));
    RANK_CHECK(!ferry_group_call(g, "dbl", args, NULL, FERRY_DISPATCH_FUNCTION, FERRY_COLLECT_SUM,
                                 FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
    RANK_CHECK(strstr(ferry_last_error(), "worker 'worker2'") &&
               strstr(ferry_last_error(), "not a list"));
    ferry_value_release(args);
    /* A send fails after member 0 went out: NULL naming member 1; member 0 still completes. */
    args = ferry_args(1, ferry_string("deep"));
    RANK_CHECK(!ferry_group_call(g, "rows", args, NULL, FERRY_DISPATCH_FUNCTION,
                                 FERRY_COLLECT_SUM, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
    RANK_CHECK(strstr(ferry_last_error(), "sending to member 1 (worker 'worker1') failed") &&
               strstr(ferry_last_error(), "deeper"));
    ferry_value_release(args);

    /* The collect function fails: the future fails with its code and message. */
    refuse = 1;
    args = ferry_args(1, ferry_string("ok"));
    ferry_future *f = ferry_group_call(g, "dbl", args, NULL, FERRY_DISPATCH_FUNCTION,
                                       FERRY_COLLECT_FUNCTION, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_EPROTO);
    RANK_CHECK(strstr(ferry_future_error(f), "collect refuses 4 results") &&
               strstr(ferry_future_error(f), "'dbl'"));
    ferry_future_release(f);

    /* Results SUM cannot add: the future fails with FERRY_EINVAL naming the member. */
    ferry_value *pair = ferry_args(3, ferry_list_of(1, ferry_string("nobody")), ferry_string("-"),
                                   ferry_double(0));
    f = ferry_group_call(g, "fail_on", pair, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_SUM,
                         FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_EINVAL);
    RANK_CHECK(strstr(ferry_future_error(f), "SUM collect: member 0 (worker 'worker0')") &&
               strstr(ferry_future_error(f), "string cannot be summed"));
    ferry_future_release(f);
    ferry_value_release(pair);
    ferry_value_release(args);

    /* Functions can be replaced and removed. */
    RANK_CHECK(ferry_group_set_functions(g, NULL, NULL, NULL) == FERRY_OK);
    RANK_CHECK(!ferry_group_call(g, "dbl", NULL, NULL, FERRY_DISPATCH_FUNCTION,
                                 FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
    ferry_group_release(g);
    return 0;
}

/* ---- bad inputs ---- */

static int body_bad_inputs(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        const char *names[2] = {"worker1", "nobody"};
        RANK_CHECK(!ferry_group_new(names, 2) && ferry_last_status() == FERRY_EUNKNOWN_WORKER);
        RANK_CHECK(strstr(ferry_last_error(), "member 1") && strstr(ferry_last_error(), "nobody"));
        const char *with_null[2] = {"worker1", NULL};
        RANK_CHECK(!ferry_group_new(with_null, 2) && ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(!ferry_group_new(names, 0) && ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(!ferry_group_new(NULL, 1) && ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(!ferry_group_range(1, 2) && ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(strstr(ferry_last_error(), "outside the world of 2 workers"));
        RANK_CHECK(!ferry_group_range(-1, 1) && ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(!ferry_group_range(0, 0) && ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(!ferry_group_range(2, 1) && ferry_last_status() == FERRY_EINVAL);

        RANK_CHECK(!ferry_group_call(NULL, "dbl", NULL, NULL, FERRY_DISPATCH_ALL,
                                     FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL && strstr(ferry_last_error(), "NULL"));
        RANK_CHECK(ferry_group_size(NULL) == 0 && ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(!ferry_group_member(NULL, 0) && ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(ferry_group_set_functions(NULL, NULL, NULL, NULL) == FERRY_EINVAL);
        ferry_group_release(NULL);
        RANK_CHECK(!ferry_group_retain(NULL));

        ferry_group *g = ferry_group_range(0, 2);
        RANK_CHECK(g);
        RANK_CHECK(!ferry_group_call(g, NULL, NULL, NULL, FERRY_DISPATCH_ALL, FERRY_COLLECT_NONE,
                                     FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(!ferry_group_call(g, "dbl", NULL, NULL, FERRY_DISPATCH_FUNCTION,
                                     FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL &&
                   strstr(ferry_last_error(), "dispatch function"));
        RANK_CHECK(!ferry_group_call(g, "dbl", NULL, NULL, FERRY_DISPATCH_SLICE,
                                     FERRY_COLLECT_FUNCTION, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL &&
                   strstr(ferry_last_error(), "collect function"));
        RANK_CHECK(!ferry_group_call(g, "dbl", NULL, NULL, (ferry_dispatch)7, FERRY_COLLECT_NONE,
                                     FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
        ferry_value *three = ferry_int(3);
        RANK_CHECK(!ferry_group_call(g, "dbl", three, NULL, FERRY_DISPATCH_SLICE,
                                     FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL && strstr(ferry_last_error(), "list"));
        RANK_CHECK(!ferry_group_call(g, "dbl", NULL, three, FERRY_DISPATCH_ALL,
                                     FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL && strstr(ferry_last_error(), "dict"));
        ferry_value_release(three);
        RANK_CHECK(!ferry_group_call(g, "dbl", NULL, NULL, FERRY_DISPATCH_ALL,
                                     FERRY_COLLECT_NONE, -5));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL &&
                   strstr(ferry_last_error(), "sending to member 0 (worker 'worker0')"));
        RANK_CHECK(!ferry_group_call_method(g, "add", NULL, NULL, FERRY_DISPATCH_ALL,
                                            FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL &&
                   strstr(ferry_last_error(), "group of workers"));
        RANK_CHECK(!ferry_group_remote_object(NULL, "Counter", NULL, NULL, FERRY_CONSTRUCT_ALL));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
        RANK_CHECK(!ferry_group_remote_object(g, NULL, NULL, NULL, FERRY_CONSTRUCT_ALL));
        RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
        /* After shutdown the group is still a group, but calls fail. */
        RANK_CHECK(ferry_shutdown(true, 30) == FERRY_OK);
        RANK_CHECK(ferry_group_size(g) == 2);
        RANK_CHECK(!ferry_group_call(g, "dbl", NULL, NULL, FERRY_DISPATCH_ALL,
                                     FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_ESHUTDOWN);
        RANK_CHECK(!ferry_group_range(0, 1) && ferry_last_status() == FERRY_ESHUTDOWN);
        ferry_group_release(g);
        return 0;
    }
    RANK_CHECK(ferry_shutdown(true, 30) == FERRY_OK);
    return 0;
}

GROUP_BOTH(group, results_match_one_worker_when_every_dispatch_meets_every_collect, 4,
           register_functions, body_combos, 60)
GROUP_BOTH(group, slices_are_uneven_when_rows_do_not_divide_by_members, 4, register_functions,
           body_uneven, 40)
GROUP_BOTH(group, members_follow_the_order_given_when_made_by_names_or_ranks, 4,
           register_functions, body_names_and_ranges, 40)
GROUP_BOTH(group, call_fails_after_all_finished_naming_the_member_when_one_fails, 4,
           register_functions, body_member_fails, 40)
GROUP_BOTH(group, call_fails_naming_the_member_when_one_times_out, 4, register_functions,
           body_member_times_out, 40)
GROUP_BOTH(group, function_policies_shape_the_call_when_the_group_has_them, 4,
           register_functions, body_functions, 40)
GROUP_BOTH(group, bad_inputs_fail_with_their_codes_when_groups_are_misused, 2,
           register_functions, body_bad_inputs, 40)

Test(group_api, group_new_fails_with_eshutdown_when_rpc_not_initialized, .timeout = 10)
{
    const char *names[1] = {"worker0"};
    cr_assert_null(ferry_group_new(names, 1));
    cr_assert_eq(ferry_last_status(), FERRY_ESHUTDOWN);
    cr_assert_null(ferry_group_range(0, 1));
    cr_assert_eq(ferry_last_status(), FERRY_ESHUTDOWN);
    cr_assert_null(ferry_group_call(NULL, "f", NULL, NULL, FERRY_DISPATCH_ALL,
                                    FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
}
