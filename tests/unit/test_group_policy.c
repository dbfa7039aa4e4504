/* Unit tests for the group call policies without RPC: torch.chunk's split of lengths, slicing of
   tensors, lists and keyword values (0-dim tensors and other values whole), the dispatch
   function's checks, and every collect fold (FLATTEN, SUM, MEAN, FIRST, NONE, FUNCTION) with its
   errors naming the member's worker, plus out-of-memory unwinding of slicing and folding. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "ferry/ops.h"
#include "rref/object/group_impl.h"
#include "test_util.h"

static const char *const names4[] = {"w0", "w1", "w2", "w3"};

/* A float64 tensor [rows, cols] holding 0, 1, 2, ... (new reference). */
static ferry_tensor *counting(int64_t rows, int64_t cols)
{
    ferry_tensor *r = ferry_assert_ptr(ferry_arange(0, (double)(rows * cols), 1, FERRY_FLOAT64));
    int64_t sizes[2] = {rows, cols};
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_reshape(r, 2, sizes));
    ferry_tensor_release(r);
    return t;
}

static ferry_value *int_list(size_t n, int64_t first)
{
    ferry_value *items[16];
    cr_assert(n <= 16);
    for (size_t i = 0; i < n; i++)
        items[i] = ferry_assert_ptr(ferry_int(first + (int64_t)i));
    ferry_value *l = ferry_assert_ptr(ferry_list_from(items, n));
    for (size_t i = 0; i < n; i++)
        ferry_value_release(items[i]);
    return l;
}

static void expect_chunk(int64_t len, size_t n, size_t i, int64_t start, int64_t count)
{
    int64_t s = -1, c = -1;
    ferry__group_chunk(len, n, i, &s, &c);
    cr_assert(s == start && c == count, "chunk(%lld, %zu)[%zu]: got [%lld, +%lld), want "
              "[%lld, +%lld)", (long long)len, n, i, (long long)s, (long long)c,
              (long long)start, (long long)count);
}

Test(group_policy, chunks_follow_torch_chunk_when_lengths_do_not_divide, .timeout = 5)
{
    /* 5 rows on 4: chunks of 2, then 1, then nothing. */
    expect_chunk(5, 4, 0, 0, 2);
    expect_chunk(5, 4, 1, 2, 2);
    expect_chunk(5, 4, 2, 4, 1);
    expect_chunk(5, 4, 3, 5, 0);
    for (size_t i = 0; i < 4; i++)
        expect_chunk(8, 4, i, (int64_t)i * 2, 2);
    expect_chunk(3, 4, 2, 2, 1);
    expect_chunk(3, 4, 3, 3, 0);
    expect_chunk(7, 3, 2, 6, 1);
    expect_chunk(0, 4, 0, 0, 0);
    expect_chunk(0, 4, 3, 0, 0);
    expect_chunk(1, 1, 0, 0, 1);
    expect_chunk(INT64_MAX, 2, 1, INT64_MAX / 2 + 1, INT64_MAX / 2);
}

Test(group_policy, slice_splits_tensors_lists_and_kwargs_when_others_go_whole, .timeout = 5)
{
    ferry_tensor *t = counting(5, 2);
    ferry_tensor *scalar = ferry_assert_ptr(ferry_scalar_tensor(9, FERRY_INT64));
    ferry_value *args = ferry_assert_ptr(
        ferry_args(5, ferry_tensor_value(t), int_list(5, 10), ferry_int(7),
                   ferry_tensor_value(scalar), ferry_string("whole")));
    ferry_value *kwargs = ferry_assert_ptr(ferry_dict_new());
    ferry_value *kl = int_list(3, 100), *ks = ferry_assert_ptr(ferry_string("s"));
    ferry_assert_ok(ferry_dict_set(kwargs, "l", kl));
    ferry_assert_ok(ferry_dict_set(kwargs, "s", ks));
    const int64_t rows[4] = {2, 2, 1, 0}, klen[4] = {1, 1, 1, 0};
    for (size_t i = 0; i < 4; i++) {
        ferry_value *a = NULL, *k = NULL;
        ferry_assert_ok(ferry__group_slice(args, kwargs, 4, i, &a, &k));
        cr_assert_eq(ferry_list_len(a), 5);
        ferry_tensor *part = ferry_value_as_tensor(ferry_list_get(a, 0));
        cr_assert_eq(ferry_tensor_ndim(part), 2);
        cr_assert_eq(ferry_tensor_size(part, 0), rows[i], "member %zu", i);
        cr_assert_eq(ferry_tensor_size(part, 1), 2);
        for (int64_t e = 0; e < ferry_tensor_numel(part); e++)
            cr_assert_eq(ferry_tensor_item_at(part, e), (double)(4 * (int64_t)i + e));
        ferry_value *l = ferry_list_get(a, 1);
        cr_assert_eq((int64_t)ferry_list_len(l), rows[i]);
        for (size_t e = 0; e < ferry_list_len(l); e++)
            cr_assert_eq(ferry_value_as_int(ferry_list_get(l, e)),
                         10 + 2 * (int64_t)i + (int64_t)e);
        cr_assert_eq(ferry_value_as_int(ferry_list_get(a, 2)), 7);
        cr_assert_eq(ferry_list_get(a, 3), ferry_list_get(args, 3), "a 0-dim tensor goes whole");
        cr_assert_str_eq(ferry_value_as_string(ferry_list_get(a, 4)), "whole");
        cr_assert_eq(ferry_dict_len(k), 2);
        cr_assert_eq((int64_t)ferry_list_len(ferry_dict_get(k, "l")), klen[i]);
        if (klen[i])
            cr_assert_eq(ferry_value_as_int(ferry_list_get(ferry_dict_get(k, "l"), 0)),
                         100 + (int64_t)i);
        cr_assert_eq(ferry_dict_get(k, "s"), ks);
        ferry_value_release(a);
        ferry_value_release(k);
    }
    ferry_value *a = NULL, *k = NULL;
    ferry_assert_ok(ferry__group_slice(NULL, NULL, 4, 0, &a, &k));
    cr_assert_eq(ferry_list_len(a), 0, "no args: an empty list");
    cr_assert_null(k, "no kwargs: none");
    ferry_value_release(a);
    ferry_value_release(kl);
    ferry_value_release(ks);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    ferry_tensor_release(t);
    ferry_tensor_release(scalar);
}

Test(group_policy, slice_fails_with_einval_when_args_or_kwargs_have_wrong_kinds, .timeout = 5)
{
    ferry_value *i = ferry_assert_ptr(ferry_int(1));
    ferry_value *a = NULL, *k = NULL;
    ferry_assert_status(ferry__group_slice(i, NULL, 2, 0, &a, &k), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "args must be a list"), "%s", ferry_last_error());
    ferry_assert_status(ferry__group_slice(NULL, i, 2, 0, &a, &k), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "kwargs must be a dict"), "%s", ferry_last_error());
    cr_assert(!a && !k);
    ferry_value_release(i);
}

/* Dispatch function: member i gets [i * 10] and {"of": n}; member 2 fails; member 3 of a group
   of 5 gets a string instead of a list. */
static ferry_status test_dispatch(size_t n, size_t index, const ferry_value *args,
                                  const ferry_value *kwargs, ferry_value **member_args,
                                  ferry_value **member_kwargs, void *user)
{
    int *seen_empty = user;
    if (ferry_value_kind(args) == FERRY_VALUE_LIST && ferry_list_len(args) == 0 &&
        ferry_value_kind(kwargs) == FERRY_VALUE_DICT)
        (*seen_empty)++;
    if (n == 4 && index == 2)
        return ferry_set_error(FERRY_ENOTSUP, "member two is not served");
    if (n == 5 && index == 3) {
        *member_args = ferry_string("not a list");
        return FERRY_OK;
    }
    *member_args = ferry_args(1, ferry_int((int64_t)index * 10));
    *member_kwargs = ferry_dict_new();
    ferry_value *of = ferry_int((int64_t)n);
    ferry_dict_set(*member_kwargs, "of", of);
    ferry_value_release(of);
    return FERRY_OK;
}

Test(group_policy, share_checks_the_dispatch_function_when_it_fails_or_gives_bad_kinds,
     .timeout = 5)
{
    int seen_empty = 0;
    ferry_value *a = NULL, *k = NULL;
    ferry_value *args = ferry_assert_ptr(ferry_args(1, ferry_int(3)));
    ferry_assert_ok(ferry__group_share(FERRY_DISPATCH_ALL, NULL, NULL, args, NULL, 4, 1, "w1",
                                       &a, &k));
    cr_assert_eq(a, args, "ALL sends the arguments themselves");
    cr_assert_null(k);
    ferry_value_release(a);

    ferry_assert_ok(ferry__group_share(FERRY_DISPATCH_FUNCTION, test_dispatch, &seen_empty,
                                       NULL, NULL, 4, 1, "w1", &a, &k));
    cr_assert_eq(seen_empty, 1, "the function sees empty arguments, not NULL");
    cr_assert_eq(ferry_value_as_int(ferry_list_get(a, 0)), 10);
    cr_assert_eq(ferry_value_as_int(ferry_dict_get(k, "of")), 4);
    ferry_value_release(a);
    ferry_value_release(k);

    ferry_assert_status(ferry__group_share(FERRY_DISPATCH_FUNCTION, test_dispatch, &seen_empty,
                                           args, NULL, 4, 2, "w2", &a, &k),
                        FERRY_ENOTSUP);
    cr_assert(strstr(ferry_last_error(), "member 2 (worker 'w2')") &&
              strstr(ferry_last_error(), "member two is not served"), "%s", ferry_last_error());
    ferry_assert_status(ferry__group_share(FERRY_DISPATCH_FUNCTION, test_dispatch, &seen_empty,
                                           args, NULL, 5, 3, "w3", &a, &k),
                        FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "worker 'w3'") && strstr(ferry_last_error(), "string"),
              "%s", ferry_last_error());
    ferry_assert_status(ferry__group_share(FERRY_DISPATCH_FUNCTION, NULL, NULL, args, NULL, 4, 0,
                                           "w0", &a, &k),
                        FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "no dispatch function"), "%s", ferry_last_error());
    cr_assert(!a && !k);
    ferry_value_release(args);
}

static ferry_value *collect(ferry_collect how, ferry_value *const *results, size_t n)
{
    ferry_value *out = NULL;
    ferry_status rc = ferry__group_collect(how, results, n, names4, NULL, NULL, &out);
    if (rc != FERRY_OK)
        cr_assert_null(out);
    return out;
}

static void release_all(ferry_value **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ferry_value_release(v[i]);
}

Test(group_policy, flatten_concatenates_lists_and_cats_tensors_when_results_match, .timeout = 5)
{
    ferry_value *lists[3] = {int_list(2, 0), int_list(0, 0), int_list(3, 2)};
    ferry_value *flat = ferry_assert_ptr(collect(FERRY_COLLECT_FLATTEN, lists, 3));
    ferry_value *want = int_list(5, 0);
    cr_assert(ferry_value_equal(flat, want));
    ferry_value_release(flat);
    ferry_value_release(want);

    ferry_tensor *whole = counting(5, 3);
    ferry_value *parts[4];
    const int64_t starts[4] = {0, 2, 4, 5}, lens[4] = {2, 2, 1, 0};
    for (size_t i = 0; i < 4; i++) {
        ferry_tensor *p = ferry_assert_ptr(ferry_narrow(whole, 0, starts[i], lens[i]));
        parts[i] = ferry_assert_ptr(ferry_tensor_value(p));
        ferry_tensor_release(p);
    }
    flat = ferry_assert_ptr(collect(FERRY_COLLECT_FLATTEN, parts, 4));
    cr_assert(ferry_tensor_equal(ferry_value_as_tensor(flat), whole), "cat gives back the whole");
    ferry_value_release(flat);

    /* Mixed kinds and 0-dim tensors are other results: the list of them. */
    ferry_tensor *s = ferry_assert_ptr(ferry_scalar_tensor(2, FERRY_FLOAT32));
    ferry_value *mixed[3] = {ferry_int(1), lists[0], ferry_tensor_value(s)};
    flat = ferry_assert_ptr(collect(FERRY_COLLECT_FLATTEN, mixed, 3));
    cr_assert_eq(ferry_list_len(flat), 3);
    cr_assert_eq(ferry_list_get(flat, 1), lists[0]);
    ferry_value_release(flat);
    ferry_value *scalars[2] = {mixed[2], mixed[2]};
    flat = ferry_assert_ptr(collect(FERRY_COLLECT_FLATTEN, scalars, 2));
    cr_assert_eq(ferry_list_len(flat), 2, "0-dim tensors do not cat");
    ferry_value_release(flat);

    /* Shapes that do not cat: the member is named. */
    ferry_tensor *other = counting(2, 4);
    ferry_value *bad[3] = {parts[0], parts[1], ferry_tensor_value(other)};
    cr_assert_null(collect(FERRY_COLLECT_FLATTEN, bad, 3));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "member 2 (worker 'w2')"), "%s", ferry_last_error());

    ferry_value_release(bad[2]);
    ferry_value_release(mixed[0]);
    ferry_value_release(mixed[2]);
    release_all(parts, 4);
    release_all(lists, 3);
    ferry_tensor_release(whole);
    ferry_tensor_release(other);
    ferry_tensor_release(s);
}

Test(group_policy, sum_keeps_ints_and_promotes_mixed_numbers_when_adding, .timeout = 5)
{
    ferry_value *ints[4] = {ferry_int(1), ferry_int(2), ferry_int(3), ferry_int(4)};
    ferry_value *s = ferry_assert_ptr(collect(FERRY_COLLECT_SUM, ints, 4));
    cr_assert_eq(ferry_value_kind(s), FERRY_VALUE_INT);
    cr_assert_eq(ferry_value_as_int(s), 10);
    ferry_value_release(s);
    ferry_value *m = ferry_assert_ptr(collect(FERRY_COLLECT_MEAN, ints, 4));
    cr_assert_eq(ferry_value_kind(m), FERRY_VALUE_DOUBLE);
    cr_assert_eq(ferry_value_as_double(m), 2.5);
    ferry_value_release(m);
    m = ferry_assert_ptr(collect(FERRY_COLLECT_MEAN, ints, 1));
    cr_assert_eq(ferry_value_kind(m), FERRY_VALUE_DOUBLE, "a mean is a double even of one");
    ferry_value_release(m);

    ferry_value *mixed[3] = {ferry_int(1), ferry_double(0.5), ferry_int(2)};
    s = ferry_assert_ptr(collect(FERRY_COLLECT_SUM, mixed, 3));
    cr_assert_eq(ferry_value_kind(s), FERRY_VALUE_DOUBLE);
    cr_assert_eq(ferry_value_as_double(s), 3.5);
    ferry_value_release(s);

    ferry_value *big[2] = {ferry_int(INT64_MAX), ferry_int(1)};
    cr_assert_null(collect(FERRY_COLLECT_SUM, big, 2));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "overflows") && strstr(ferry_last_error(), "'w1'"),
              "%s", ferry_last_error());
    release_all(big, 2);
    release_all(mixed, 3);
    release_all(ints, 4);
}

/* {"n": n, "v": [t, x]} with a [2] tensor t of value x. */
static ferry_value *stats(int64_t n, double x)
{
    ferry_tensor *t = ferry_assert_ptr(ferry_full(1, (int64_t[]){2}, x, FERRY_FLOAT32));
    ferry_value *d = ferry_assert_ptr(ferry_dict_new());
    ferry_value *nv = ferry_int(n);
    ferry_value *v = ferry_assert_ptr(ferry_list_of(2, ferry_tensor_value(t), ferry_double(x)));
    ferry_assert_ok(ferry_dict_set(d, "n", nv));
    ferry_assert_ok(ferry_dict_set(d, "v", v));
    ferry_value_release(nv);
    ferry_value_release(v);
    ferry_tensor_release(t);
    return d;
}

Test(group_policy, sum_and_mean_go_elementwise_when_results_are_lists_and_dicts, .timeout = 5)
{
    ferry_value *r[4] = {stats(1, 1), stats(2, 2), stats(3, 3), stats(4, 4)};
    ferry_value *s = ferry_assert_ptr(collect(FERRY_COLLECT_SUM, r, 4));
    cr_assert_eq(ferry_value_as_int(ferry_dict_get(s, "n")), 10);
    ferry_value *v = ferry_dict_get(s, "v");
    ferry_tensor *t = ferry_value_as_tensor(ferry_list_get(v, 0));
    cr_assert_eq(ferry_tensor_dtype(t), FERRY_FLOAT32);
    cr_assert_eq(ferry_tensor_item_at(t, 0), 10.0);
    cr_assert_eq(ferry_tensor_item_at(t, 1), 10.0);
    cr_assert_eq(ferry_value_as_double(ferry_list_get(v, 1)), 10.0);
    ferry_value_release(s);

    ferry_value *m = ferry_assert_ptr(collect(FERRY_COLLECT_MEAN, r, 4));
    cr_assert_eq(ferry_value_kind(ferry_dict_get(m, "n")), FERRY_VALUE_DOUBLE);
    cr_assert_eq(ferry_value_as_double(ferry_dict_get(m, "n")), 2.5);
    v = ferry_dict_get(m, "v");
    cr_assert_eq(ferry_tensor_item_at(ferry_value_as_tensor(ferry_list_get(v, 0)), 1), 2.5);
    cr_assert_eq(ferry_value_as_double(ferry_list_get(v, 1)), 2.5);
    ferry_value_release(m);

    /* An int64 tensor's mean is float32, as torch's true division. */
    ferry_tensor *it = ferry_assert_ptr(ferry_full(1, (int64_t[]){3}, 3, FERRY_INT64));
    ferry_value *its[2] = {ferry_tensor_value(it), ferry_tensor_value(it)};
    s = ferry_assert_ptr(collect(FERRY_COLLECT_SUM, its, 2));
    cr_assert_eq(ferry_tensor_dtype(ferry_value_as_tensor(s)), FERRY_INT64);
    cr_assert_eq(ferry_tensor_item_at(ferry_value_as_tensor(s), 2), 6.0);
    ferry_value_release(s);
    m = ferry_assert_ptr(collect(FERRY_COLLECT_MEAN, its, 2));
    cr_assert_eq(ferry_tensor_dtype(ferry_value_as_tensor(m)), FERRY_FLOAT32);
    cr_assert_eq(ferry_tensor_item_at(ferry_value_as_tensor(m), 0), 3.0);
    ferry_value_release(m);
    release_all(its, 2);
    ferry_tensor_release(it);
    release_all(r, 4);
}

Test(group_policy, sum_fails_naming_the_member_when_results_do_not_match, .timeout = 5)
{
    ferry_value *lists[4] = {int_list(2, 0), int_list(2, 0), int_list(3, 0), int_list(2, 0)};
    cr_assert_null(collect(FERRY_COLLECT_SUM, lists, 4));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "SUM collect: member 2 (worker 'w2')") &&
              strstr(ferry_last_error(), "3 items"), "%s", ferry_last_error());
    cr_assert_null(collect(FERRY_COLLECT_MEAN, lists, 4));
    cr_assert(strstr(ferry_last_error(), "MEAN collect: member 2"), "%s", ferry_last_error());

    ferry_value *d1 = stats(1, 1), *d2 = ferry_assert_ptr(ferry_dict_new());
    ferry_value *one = ferry_int(1);
    ferry_assert_ok(ferry_dict_set(d2, "n", one));
    ferry_assert_ok(ferry_dict_set(d2, "w", one));
    ferry_value *dicts[2] = {d1, d2};
    cr_assert_null(collect(FERRY_COLLECT_SUM, dicts, 2));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "'w1'") && strstr(ferry_last_error(), "key 'w'"), "%s",
              ferry_last_error());

    /* Deep inside: the path says where. */
    ferry_value *d3 = stats(1, 1), *d4 = ferry_assert_ptr(ferry_dict_new());
    ferry_value *bad_v = ferry_assert_ptr(ferry_list_of(2, ferry_int(1), ferry_string("x")));
    ferry_assert_ok(ferry_dict_set(d4, "n", one));
    ferry_assert_ok(ferry_dict_set(d4, "v", bad_v));
    ferry_value *deep[2] = {d3, d4};
    cr_assert_null(collect(FERRY_COLLECT_SUM, deep, 2));
    cr_assert(strstr(ferry_last_error(), "result['v'][0]"), "%s", ferry_last_error());

    ferry_value *strs[2] = {ferry_string("a"), ferry_string("b")};
    cr_assert_null(collect(FERRY_COLLECT_SUM, strs, 2));
    cr_assert(strstr(ferry_last_error(), "member 0 (worker 'w0')") &&
              strstr(ferry_last_error(), "string cannot be summed"), "%s", ferry_last_error());
    cr_assert_null(collect(FERRY_COLLECT_SUM, strs, 1), "checked even when alone");

    ferry_tensor *a = counting(2, 2), *b = counting(3, 2);
    ferry_value *ts[2] = {ferry_tensor_value(a), ferry_tensor_value(b)};
    cr_assert_null(collect(FERRY_COLLECT_SUM, ts, 2));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "'w1'") && strstr(ferry_last_error(), "must match"),
              "%s", ferry_last_error());
    release_all(ts, 2);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    release_all(strs, 2);
    ferry_value_release(bad_v);
    ferry_value_release(one);
    release_all(deep, 2);
    release_all(dicts, 2);
    release_all(lists, 4);
}

/* Collect function: [n, last result]; fails when the first result is the int 13. */
static ferry_status test_collect(ferry_value *const *results, size_t n, ferry_value **out,
                                 void *user)
{
    if (ferry_value_kind(results[0]) == FERRY_VALUE_INT && ferry_value_as_int(results[0]) == 13)
        return ferry_set_error(FERRY_ENOTSUP, "unlucky");
    *out = ferry_list_of(2, ferry_int((int64_t)n), ferry_value_retain(results[n - 1]));
    return *out ? FERRY_OK : ferry_last_status();
}

Test(group_policy, first_none_and_function_collect_when_results_are_given, .timeout = 5)
{
    ferry_value *r[3] = {ferry_int(5), ferry_string("b"), ferry_double(1.5)};
    ferry_value *v = ferry_assert_ptr(collect(FERRY_COLLECT_FIRST, r, 3));
    cr_assert_eq(v, r[0]);
    ferry_value_release(v);
    v = ferry_assert_ptr(collect(FERRY_COLLECT_NONE, r, 3));
    cr_assert_eq(ferry_value_kind(v), FERRY_VALUE_NONE);
    ferry_value_release(v);

    ferry_assert_ok(ferry__group_collect(FERRY_COLLECT_FUNCTION, r, 3, names4, test_collect,
                                         NULL, &v));
    cr_assert_eq(ferry_value_as_int(ferry_list_get(v, 0)), 3);
    cr_assert_eq(ferry_list_get(v, 1), r[2]);
    ferry_value_release(v);

    ferry_assert_status(ferry__group_collect(FERRY_COLLECT_FUNCTION, r, 3, names4, NULL, NULL,
                                             &v),
                        FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "no collect function"), "%s", ferry_last_error());
    ferry_value *thirteen = ferry_int(13);
    ferry_assert_status(ferry__group_collect(FERRY_COLLECT_FUNCTION, &thirteen, 1, names4,
                                             test_collect, NULL, &v),
                        FERRY_ENOTSUP);
    cr_assert(strstr(ferry_last_error(), "collect function failed: unlucky"), "%s",
              ferry_last_error());
    cr_assert_null(v);
    ferry_assert_status(ferry__group_collect((ferry_collect)99, r, 3, names4, NULL, NULL, &v),
                        FERRY_EINVAL);
    ferry_assert_status(ferry__group_collect(FERRY_COLLECT_FIRST, r, 0, names4, NULL, NULL, &v),
                        FERRY_EINVAL);
    ferry_value_release(thirteen);
    release_all(r, 3);
}

/* Every allocation of a slice and of the folds fails in turn: each fails with FERRY_ENOMEM
   (or succeeds once the allocations run out) and nothing leaks (ASan checks). */
Test(group_policy, nothing_leaks_when_any_allocation_fails, .timeout = 30)
{
    ferry_tensor *t = counting(5, 2);
    ferry_value *args = ferry_assert_ptr(ferry_args(2, ferry_tensor_value(t), int_list(5, 0)));
    ferry_value *kwargs = ferry_assert_ptr(ferry_dict_new());
    ferry_assert_ok(ferry_dict_set(kwargs, "k", ferry_list_get(args, 1)));
    ferry_value *r[3] = {stats(1, 1), stats(2, 2), stats(3, 3)};
    ferry_value *lists[2] = {int_list(2, 0), int_list(3, 0)};
    ferry_value *ts[2] = {ferry_list_get(args, 0), ferry_list_get(args, 0)};
    int failures = 0;
    for (int step = 0; step < 5; step++) {
        for (long nth = 1; nth < 200; nth++) {
            ferry_value *a = NULL, *k = NULL, *out = NULL;
            ferry_clear_error();
            ferry__alloc_fail_after(nth, 1);
            ferry_status rc;
            if (step == 0)
                rc = ferry__group_slice(args, kwargs, 4, 1, &a, &k);
            else if (step == 1)
                rc = ferry__group_collect(FERRY_COLLECT_SUM, r, 3, names4, NULL, NULL, &out);
            else if (step == 2)
                rc = ferry__group_collect(FERRY_COLLECT_MEAN, r, 3, names4, NULL, NULL, &out);
            else if (step == 3)
                rc = ferry__group_collect(FERRY_COLLECT_FLATTEN, lists, 2, names4, NULL, NULL,
                                          &out);
            else
                rc = ferry__group_collect(FERRY_COLLECT_FLATTEN, ts, 2, names4, NULL, NULL, &out);
            ferry__alloc_fail_after(0, 0);
            ferry_value_release(a);
            ferry_value_release(k);
            ferry_value_release(out);
            if (rc == FERRY_OK)
                break;
            failures++;
            cr_assert_eq(rc, FERRY_ENOMEM, "step %d, allocation %ld: %s: %s", step, nth,
                         ferry_strerror(rc), ferry_last_error());
        }
    }
    cr_assert_gt(failures, 20);
    release_all(lists, 2);
    release_all(r, 3);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    ferry_tensor_release(t);
}
