/* Helpers shared by the group tests (see group_util.h). */
#include "group_util.h"

#include <stdio.h>
#include <string.h>

#include "ferry/ops.h"

const char *group_test_name(void)
{
    ferry_worker_info me;
    return ferry_get_worker_info(NULL, &me) == FERRY_OK ? me.name : "?";
}

static void describe(const ferry_value *v)
{
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_INT:
        fprintf(stderr, "%lld", (long long)ferry_value_as_int(v));
        break;
    case FERRY_VALUE_DOUBLE:
        fprintf(stderr, "%g (double)", ferry_value_as_double(v));
        break;
    case FERRY_VALUE_STRING:
        fprintf(stderr, "'%s'", ferry_value_as_string(v));
        break;
    case FERRY_VALUE_TENSOR: {
        char buf[512];
        ferry_tensor_format(ferry_value_as_tensor(v), buf, sizeof buf);
        fprintf(stderr, "%s", buf);
        break;
    }
    case FERRY_VALUE_LIST:
        fprintf(stderr, "[");
        for (size_t i = 0; i < ferry_list_len(v); i++) {
            fprintf(stderr, i ? ", " : "");
            describe(ferry_list_get(v, i));
        }
        fprintf(stderr, "]");
        break;
    case FERRY_VALUE_DICT:
        fprintf(stderr, "{");
        for (size_t i = 0; i < ferry_dict_len(v); i++) {
            fprintf(stderr, "%s'%s': ", i ? ", " : "", ferry_dict_key_at(v, i));
            describe(ferry_dict_value_at(v, i));
        }
        fprintf(stderr, "}");
        break;
    default:
        fprintf(stderr, "<%s>", v ? ferry_kind_name(ferry_value_kind(v)) : "NULL");
    }
}

bool group_test_same(ferry_value *got, ferry_value *want, const char *what)
{
    bool ok = got && want && ferry_value_equal(got, want);
    if (!ok) {
        fprintf(stderr, "%s: got ", what);
        describe(got);
        fprintf(stderr, ", want ");
        describe(want);
        fprintf(stderr, " (last error: %s: %s)\n", ferry_strerror(ferry_last_status()),
                ferry_last_error());
    }
    ferry_value_release(got);
    ferry_value_release(want);
    return ok;
}

ferry_value *group_test_run(ferry_group *g, const char *fn, ferry_value *args,
                            ferry_value *kwargs, ferry_dispatch d, ferry_collect c)
{
    ferry_future *f = ferry_group_call(g, fn, args, kwargs, d, c, FERRY_TIMEOUT_DEFAULT);
    if (!f)
        return NULL;
    ferry_value *v = ferry_future_value(f);
    ferry_future_release(f);
    return v;
}

ferry_value *group_test_ints(size_t n, const int64_t *v)
{
    ferry_value *items[64] = {NULL};
    if (n > 64)
        return NULL;
    for (size_t i = 0; i < n; i++)
        items[i] = ferry_int(v[i]);
    ferry_value *l = ferry_list_from(items, n);
    for (size_t i = 0; i < n; i++)
        ferry_value_release(items[i]);
    return l;
}

ferry_value *group_test_doubles(size_t n, const double *v)
{
    ferry_value *items[64] = {NULL};
    if (n > 64)
        return NULL;
    for (size_t i = 0; i < n; i++)
        items[i] = ferry_double(v[i]);
    ferry_value *l = ferry_list_from(items, n);
    for (size_t i = 0; i < n; i++)
        ferry_value_release(items[i]);
    return l;
}

ferry_tensor *group_test_counting(int64_t rows, int64_t cols)
{
    ferry_tensor *r = ferry_arange(0, (double)(rows * cols), 1, FERRY_FLOAT64);
    int64_t sizes[2] = {rows, cols};
    ferry_tensor *t = r ? ferry_tensor_reshape(r, 2, sizes) : NULL;
    ferry_tensor_release(r);
    return t;
}

ferry_value *group_test_tensor_of(int64_t rows, int64_t cols, const double *data)
{
    int64_t sizes[2] = {rows, cols};
    ferry_tensor *t = ferry_tensor_from_data(data, 2, sizes, FERRY_FLOAT64);
    ferry_value *v = t ? ferry_tensor_value(t) : NULL;
    ferry_tensor_release(t);
    return v;
}

ferry_value *group_test_tv(ferry_tensor *t)
{
    ferry_value *v = t ? ferry_tensor_value(t) : NULL;
    ferry_tensor_release(t);
    return v;
}

ferry_status group_test_reverse_dispatch(size_t n, size_t index, const ferry_value *args,
                                         const ferry_value *kwargs, ferry_value **member_args,
                                         ferry_value **member_kwargs, void *user)
{
    size_t k = n - 1 - index, len = ferry_list_len(args);
    ferry_value *items[8];
    if (len > 8)
        return ferry_set_error(FERRY_EINVAL, "reverse dispatch: too many arguments");
    for (size_t i = 0; i < len; i++) {
        ferry_value *a = ferry_list_get(args, i);
        if (ferry_value_kind(a) == FERRY_VALUE_TENSOR) {
            ferry_tensor *t = ferry_value_as_tensor(a);
            int64_t chunk = ferry_tensor_size(t, 0) / (int64_t)n;
            items[i] = group_test_tv(ferry_narrow(t, 0, (int64_t)k * chunk, chunk));
        } else if (ferry_value_kind(a) == FERRY_VALUE_LIST) {
            size_t chunk = ferry_list_len(a) / n;
            ferry_value *part[64];
            if (chunk > 64)
                chunk = 0; /* the tests never send more; an empty share shows up at once */
            for (size_t j = 0; j < chunk; j++)
                part[j] = ferry_list_get(a, k * chunk + j);
            items[i] = ferry_list_from(part, chunk);
        } else {
            items[i] = ferry_value_retain(a);
        }
    }
    *member_args = ferry_list_from(items, len);
    for (size_t i = 0; i < len; i++)
        ferry_value_release(items[i]);
    *member_kwargs = NULL;
    return *member_args ? FERRY_OK : ferry_last_status();
}

ferry_status group_test_last_collect(ferry_value *const *results, size_t n, ferry_value **out,
                                     void *user)
{
    *out = ferry_list_of(2, ferry_int((int64_t)n), ferry_value_retain(results[n - 1]));
    return *out ? FERRY_OK : ferry_last_status();
}
