/* Python's builtins that make sense on values: min, max, sum, abs and len, with Python's
   results (ints stay ints, bools count as ints) and its TypeError and ValueError texts.
   Integers are int64 here: a sum or abs that would leave int64 fails instead of growing as
   Python's ints do. sum and abs also take tensors (0 + t1 + t2 ..., torch.abs), as Python does
   with torch's, and sum concatenates lists given a list start; min, max and len never touch
   tensor data and run where their request is read. */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/ops.h"
#include "rpc/builtins_impl.h"

static ferry_status no_kwargs(const char *fn, const ferry_value *kwargs)
{
    return ferry_dict_len(kwargs) ? ferry__fail(FERRY_EINVAL, "%s() takes no keyword arguments",
                                                fn)
                                  : FERRY_OK;
}

static ferry_status one_arg(const char *fn, const ferry_value *args, const ferry_value *kwargs)
{
    size_t n = ferry_list_len(args);
    if (n != 1)
        return ferry__fail(FERRY_EINVAL, "%s() takes exactly one argument (%zu given)", fn, n);
    return no_kwargs(fn, kwargs);
}

/* Python's a < b (or a > b when `greater`) for numbers or strings; else its TypeError. */
static ferry_status py_less(const ferry_value *a, const ferry_value *b, bool greater, bool *out)
{
    bool na = ferry__bi_is_number(a), nb = ferry__bi_is_number(b);
    ferry_kind ka = ferry_value_kind(a), kb = ferry_value_kind(b);
    if (na && nb) {
        if (ka != FERRY_VALUE_DOUBLE && kb != FERRY_VALUE_DOUBLE) {
            int64_t x = ka == FERRY_VALUE_INT ? ferry_value_as_int(a) : ferry_value_as_bool(a);
            int64_t y = kb == FERRY_VALUE_INT ? ferry_value_as_int(b) : ferry_value_as_bool(b);
            *out = greater ? x > y : x < y;
        } else {
            double x = ka == FERRY_VALUE_BOOL ? ferry_value_as_bool(a) : ferry_value_as_double(a);
            double y = kb == FERRY_VALUE_BOOL ? ferry_value_as_bool(b) : ferry_value_as_double(b);
            *out = greater ? x > y : x < y;
        }
        return FERRY_OK;
    }
    if (ka == FERRY_VALUE_STRING && kb == FERRY_VALUE_STRING) {
        int c = strcmp(ferry_value_as_string(a), ferry_value_as_string(b));
        *out = greater ? c > 0 : c < 0;
        return FERRY_OK;
    }
    return ferry__fail(FERRY_EINVAL, "'%s' not supported between instances of '%s' and '%s'",
                       greater ? ">" : "<", ferry__bi_type(a), ferry__bi_type(b));
}

/* min(a, b, ...), min(list) and min(list, default=x); max alike (user non-NULL). */
static ferry_status extreme_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    bool is_max = user != NULL;
    const char *fn = is_max ? "max" : "min";
    size_t nargs = ferry_list_len(args);
    const ferry_value *dflt = NULL;
    for (size_t i = 0; i < ferry_dict_len(kwargs); i++) {
        if (strcmp(ferry_dict_key_at(kwargs, i), "default"))
            return ferry__fail(FERRY_EINVAL, "%s() got an unexpected keyword argument '%s'", fn,
                               ferry_dict_key_at(kwargs, i));
        dflt = ferry_dict_value_at(kwargs, i);
    }
    if (nargs == 0)
        return ferry__fail(FERRY_EINVAL, "%s expected at least 1 argument, got 0", fn);
    if (dflt && nargs > 1)
        return ferry__fail(FERRY_EINVAL, "Cannot specify a default for %s() with multiple "
                           "positional arguments", fn);
    const ferry_value *items = args;
    if (nargs == 1) {
        items = ferry_list_get(args, 0);
        ferry_kind k = ferry_value_kind(items);
        if (k == FERRY_VALUE_STRING || k == FERRY_VALUE_BYTES || k == FERRY_VALUE_DICT ||
            k == FERRY_VALUE_TENSOR)
            return ferry__fail(FERRY_EINVAL, "%s(): ferry iterates over a list only, not a %s",
                               fn, ferry__bi_type(items));
        if (k != FERRY_VALUE_LIST)
            return ferry__fail(FERRY_EINVAL, "'%s' object is not iterable",
                               ferry__bi_type(items));
    }
    size_t n = ferry_list_len(items);
    if (n == 0 && !dflt)
        return ferry__fail(FERRY_EINVAL, "%s() arg is an empty sequence", fn);
    const ferry_value *best = n ? ferry_list_get(items, 0) : dflt;
    for (size_t i = 1; i < n; i++) {
        const ferry_value *v = ferry_list_get(items, i);
        bool better = false;
        ferry_status rc = py_less(v, best, is_max, &better);
        if (rc != FERRY_OK)
            return rc;
        if (better)
            best = v;
    }
    *result = ferry_value_retain((ferry_value *)best);
    return FERRY_OK;
}

/* The running total of sum(): an exact int64 until the first float, then a double; a tensor
   once one is added (start + t1 + ...). */
typedef struct {
    ferry_kind kind; /* INT, DOUBLE or TENSOR */
    int64_t i;
    double d;
    ferry_tensor *t; /* owned */
} total;

static const char *total_type(const total *acc)
{
    return acc->kind == FERRY_VALUE_INT ? "int" : acc->kind == FERRY_VALUE_DOUBLE ? "float"
                                                                                  : "Tensor";
}

static ferry_tensor *as_tensor(const total *acc)
{
    if (acc->kind == FERRY_VALUE_INT)
        return ferry_tensor_from_data(&acc->i, 0, NULL, FERRY_INT64);
    return ferry_scalar_tensor(acc->d, FERRY_FLOAT64);
}

static ferry_status add_to(total *acc, const ferry_value *v)
{
    ferry_kind k = ferry_value_kind(v);
    if (k == FERRY_VALUE_TENSOR || (acc->kind == FERRY_VALUE_TENSOR && ferry__bi_is_number(v))) {
        ferry_tensor *x = k == FERRY_VALUE_TENSOR ? ferry_tensor_retain(ferry_value_as_tensor(v))
                          : k == FERRY_VALUE_DOUBLE
                              ? ferry_scalar_tensor(ferry_value_as_double(v), FERRY_FLOAT64)
                              : NULL;
        if (!x && k != FERRY_VALUE_DOUBLE) {
            int64_t i = k == FERRY_VALUE_INT ? ferry_value_as_int(v) : ferry_value_as_bool(v);
            x = ferry_tensor_from_data(&i, 0, NULL, FERRY_INT64);
        }
        ferry_tensor *left = acc->kind == FERRY_VALUE_TENSOR ? acc->t : as_tensor(acc);
        ferry_tensor *r = x && left ? ferry_add(left, x) : NULL;
        ferry_tensor_release(left);
        ferry_tensor_release(x);
        acc->t = r;
        acc->kind = FERRY_VALUE_TENSOR;
        return r ? FERRY_OK : ferry_last_status();
    }
    if (!ferry__bi_is_number(v))
        return ferry__fail(FERRY_EINVAL, "unsupported operand type(s) for +: '%s' and '%s'",
                           total_type(acc), ferry__bi_type(v));
    if (acc->kind == FERRY_VALUE_INT && k != FERRY_VALUE_DOUBLE) {
        int64_t i = k == FERRY_VALUE_INT ? ferry_value_as_int(v) : ferry_value_as_bool(v);
        if (__builtin_add_overflow(acc->i, i, &acc->i))
            return ferry__fail(FERRY_EINVAL, "sum(): the total passes the int64 range (Python's "
                               "ints would grow; ferry's are int64)");
        return FERRY_OK;
    }
    if (acc->kind == FERRY_VALUE_INT) {
        acc->d = (double)acc->i;
        acc->kind = FERRY_VALUE_DOUBLE;
    }
    acc->d += k == FERRY_VALUE_BOOL ? ferry_value_as_bool(v) : ferry_value_as_double(v);
    return FERRY_OK;
}

/* sum(lists, start=list): Python's + of lists is their concatenation. */
static ferry_status concat_lists(const ferry_value *start, const ferry_value *items,
                                 ferry_value **result)
{
    size_t count = ferry_list_len(start), n = ferry_list_len(items);
    for (size_t i = 0; i < n; i++) {
        const ferry_value *v = ferry_list_get(items, i);
        if (ferry_value_kind(v) != FERRY_VALUE_LIST)
            return ferry__fail(FERRY_EINVAL, "can only concatenate list (not \"%s\") to list",
                               ferry__bi_type(v));
        count += ferry_list_len(v);
    }
    ferry_value **all = ferry__malloc((count ? count : 1) * sizeof *all);
    if (!all)
        return ferry__fail(FERRY_ENOMEM, "sum(): out of memory for %zu items", count);
    size_t k = 0;
    for (size_t j = 0; j < ferry_list_len(start); j++)
        all[k++] = ferry_list_get(start, j);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < ferry_list_len(ferry_list_get(items, i)); j++)
            all[k++] = ferry_list_get(ferry_list_get(items, i), j);
    *result = ferry_list_from(all, count);
    ferry__free(all);
    return *result ? FERRY_OK : ferry_last_status();
}

/* Python's sum(iterable, /, start=0). */
static ferry_status sum_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    size_t nargs = ferry_list_len(args), given = nargs;
    const ferry_value *start = nargs == 2 ? ferry_list_get(args, 1) : NULL;
    for (size_t i = 0; i < ferry_dict_len(kwargs); i++) {
        const char *key = ferry_dict_key_at(kwargs, i);
        if (strcmp(key, "start"))
            return ferry__fail(FERRY_EINVAL, "sum() got an unexpected keyword argument '%s'", key);
        start = ferry_dict_value_at(kwargs, i);
        given++;
    }
    if (nargs == 0)
        return ferry__fail(FERRY_EINVAL, "sum() takes at least 1 positional argument (0 given)");
    if (given > 2)
        return ferry__fail(FERRY_EINVAL, "sum() takes at most 2 arguments (%zu given)", given);
    ferry_kind sk = ferry_value_kind(start);
    if (sk == FERRY_VALUE_STRING || sk == FERRY_VALUE_BYTES)
        return ferry__fail(FERRY_EINVAL, "sum() can't sum %s [use %s''.join(seq) instead]",
                           sk == FERRY_VALUE_STRING ? "strings" : "bytes",
                           sk == FERRY_VALUE_STRING ? "" : "b");
    const ferry_value *items = ferry_list_get(args, 0);
    if (ferry_value_kind(items) == FERRY_VALUE_STRING && ferry_value_len(items) > 0)
        return ferry__fail(FERRY_EINVAL, "unsupported operand type(s) for +: '%s' and 'str'",
                           start ? ferry__bi_type(start) : "int");
    if (ferry_value_kind(items) != FERRY_VALUE_LIST &&
        ferry_value_kind(items) != FERRY_VALUE_STRING)
        return ferry__fail(FERRY_EINVAL, "'%s' object is not iterable", ferry__bi_type(items));
    size_t n = ferry_value_kind(items) == FERRY_VALUE_LIST ? ferry_list_len(items) : 0;
    if (n == 0 && start) { /* nothing is added: start comes back whatever it is */
        *result = ferry_value_retain((ferry_value *)start);
        return FERRY_OK;
    }
    if (sk == FERRY_VALUE_LIST)
        return concat_lists(start, items, result);
    total acc = {FERRY_VALUE_INT, 0, 0, NULL};
    ferry_status rc = FERRY_OK;
    if (start && !ferry__bi_is_number(start) && sk != FERRY_VALUE_TENSOR)
        rc = ferry__fail(FERRY_EINVAL, "unsupported operand type(s) for +: '%s' and '%s'",
                         ferry__bi_type(start),
                         ferry_list_len(items) ? ferry__bi_type(ferry_list_get(items, 0)) : "int");
    else if (start)
        rc = add_to(&acc, start);
    for (size_t i = 0; i < n && rc == FERRY_OK; i++)
        rc = add_to(&acc, ferry_list_get(items, i));
    if (rc == FERRY_OK) {
        *result = acc.kind == FERRY_VALUE_INT      ? ferry_int(acc.i)
                  : acc.kind == FERRY_VALUE_DOUBLE ? ferry_double(acc.d)
                                                   : ferry_tensor_value(acc.t);
        rc = *result ? FERRY_OK : ferry_last_status();
    }
    ferry_tensor_release(acc.t);
    return rc;
}

static ferry_status abs_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_status rc = one_arg("abs", args, kwargs);
    if (rc != FERRY_OK)
        return rc;
    const ferry_value *v = ferry_list_get(args, 0);
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_BOOL:
        *result = ferry_int(ferry_value_as_bool(v));
        break;
    case FERRY_VALUE_INT:
        if (ferry_value_as_int(v) == INT64_MIN)
            return ferry__fail(FERRY_EINVAL, "abs(%lld): the result passes the int64 range "
                               "(Python's ints would grow; ferry's are int64)",
                               (long long)INT64_MIN);
        *result = ferry_int(ferry_value_as_int(v) < 0 ? -ferry_value_as_int(v)
                                                      : ferry_value_as_int(v));
        break;
    case FERRY_VALUE_DOUBLE:
        *result = ferry_double(fabs(ferry_value_as_double(v)));
        break;
    case FERRY_VALUE_TENSOR:
        return ferry__bi_tensor_result(ferry_abs(ferry_value_as_tensor(v)), result);
    default:
        return ferry__fail(FERRY_EINVAL, "bad operand type for abs(): '%s'", ferry__bi_type(v));
    }
    return *result ? FERRY_OK : ferry_last_status();
}

/* The code points of a UTF-8 string: every byte but continuation bytes. */
static int64_t code_points(const char *s, size_t len)
{
    int64_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static ferry_status len_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_status rc = one_arg("len", args, kwargs);
    if (rc != FERRY_OK)
        return rc;
    const ferry_value *v = ferry_list_get(args, 0);
    int64_t n;
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_STRING:
        n = code_points(ferry_value_as_string(v), ferry_value_len(v));
        break;
    case FERRY_VALUE_BYTES:
        n = (int64_t)ferry_value_len(v);
        break;
    case FERRY_VALUE_LIST:
        n = (int64_t)ferry_list_len(v);
        break;
    case FERRY_VALUE_DICT:
        n = (int64_t)ferry_dict_len(v);
        break;
    case FERRY_VALUE_TENSOR:
        if (ferry_tensor_ndim(ferry_value_as_tensor(v)) == 0)
            return ferry__fail(FERRY_EINVAL, "len() of a 0-d tensor");
        n = ferry_tensor_sizes(ferry_value_as_tensor(v))[0];
        break;
    default:
        return ferry__fail(FERRY_EINVAL, "object of type '%s' has no len()", ferry__bi_type(v));
    }
    *result = ferry_int(n);
    return *result ? FERRY_OK : ferry_last_status();
}

const ferry__builtin ferry__builtins_python[] = {
    {{"min", "min(*values, default=<none>)",
      "the smallest of the values, or of one list of them (numbers or strings)"},
     extreme_fn, NULL, true},
    {{"max", "max(*values, default=<none>)",
      "the largest of the values, or of one list of them (numbers or strings)"},
     extreme_fn, (void *)1, true},
    {{"sum", "sum(iterable, /, start=0)",
      "start plus every item of a list of numbers or tensors; ints stay ints"},
     sum_fn, NULL, false},
    {{"abs", "abs(x)", "|x| of a number (bool gives int) or a tensor"}, abs_fn, NULL, false},
    {{"len", "len(obj)",
      "the length of a string (code points), bytes, list, dict or tensor (first dim)"},
     len_fn, NULL, true},
};
const size_t ferry__builtins_python_len =
    sizeof ferry__builtins_python / sizeof ferry__builtins_python[0];
