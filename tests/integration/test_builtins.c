/* Every builtin against torch: each case of tests/data/builtins_reference.h (written by
   tests/data/make_builtins_data.py from torch's and Python's own results) is called through
   ferry_rpc_sync on another worker, and what comes back must be torch's value: same kinds, same
   dtypes and shapes, the same numbers (float32 within a few ulps, everything else exactly). The
   reference's error cases must fail with Python's or torch's text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/builtins_reference.h"
#include "ferry/ops.h"
#include "rpc_harness.h"

/* ---- the reference's literal syntax (see make_builtins_data.py) ---- */

static void skip_space(const char **p)
{
    while (**p == ' ' || **p == ',')
        (*p)++;
}

static bool eat(const char **p, const char *word)
{
    skip_space(p);
    size_t n = strlen(word);
    if (strncmp(*p, word, n))
        return false;
    *p += n;
    return true;
}

static ferry_value *parse(const char **p);

/* [a, b, ...] as a ferry list. */
static ferry_value *parse_list(const char **p)
{
    ferry_value *items[256];
    size_t n = 0;
    bool ok = true;
    while (ok && !eat(p, "]")) {
        ok = n < 256 && (items[n] = parse(p)) != NULL;
        n += ok;
    }
    ferry_value *list = ok ? ferry_list_from(items, n) : NULL;
    for (size_t i = 0; i < n; i++)
        ferry_value_release(items[i]);
    return list;
}

static ferry_value *parse_dict(const char **p)
{
    ferry_value *d = ferry_dict_new();
    while (d && !eat(p, "}")) {
        ferry_value *k = parse(p);
        ferry_value *v = eat(p, ":") ? parse(p) : NULL;
        if (!k || !v || ferry_dict_set(d, ferry_value_as_string(k), v) != FERRY_OK) {
            ferry_value_release(d);
            d = NULL;
        }
        ferry_value_release(k);
        ferry_value_release(v);
    }
    return d;
}

static bool parse_dtype(const char **p, ferry_dtype *out)
{
    skip_space(p);
    for (int i = 0; i < FERRY_DTYPE_COUNT; i++) {
        const char *name = ferry_dtype_name((ferry_dtype)i);
        size_t n = strlen(name);
        if (!strncmp(*p, name, n) && (*p)[n] == ',') {
            *out = (ferry_dtype)i;
            *p += n;
            return true;
        }
    }
    return false;
}

/* T(dtype, [sizes], [values]): an empty value list gives zeros (random results). */
static ferry_value *parse_tensor(const char **p)
{
    ferry_dtype dtype;
    int64_t sizes[FERRY_MAX_DIMS];
    int ndim = 0;
    if (!parse_dtype(p, &dtype) || !eat(p, "["))
        return NULL;
    while (!eat(p, "]") && ndim < FERRY_MAX_DIMS)
        sizes[ndim++] = strtoll(*p, (char **)p, 10);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= sizes[i];
    if (!eat(p, "["))
        return NULL;
    ferry_tensor *t = ferry_zeros(ndim, sizes, dtype);
    char *data = ferry_tensor_data(t);
    int64_t n = 0;
    while (t && !eat(p, "]")) {
        skip_space(p);
        const char *before = *p;
        double d = !strncmp(*p, "nan", 3) ? (*p += 3, NAN)
                   : !strncmp(*p, "inf", 3) ? (*p += 3, INFINITY)
                   : !strncmp(*p, "-inf", 4) ? (*p += 4, -INFINITY)
                                              : 0;
        long long i = 0;
        if (d == 0 && (dtype == FERRY_INT64 || dtype == FERRY_BOOL))
            i = strtoll(*p, (char **)p, 10);
        else if (d == 0)
            d = strtod(*p, (char **)p);
        if (n >= numel || *p == before)
            break;
        if (dtype == FERRY_FLOAT32)
            ((float *)data)[n] = (float)d;
        else if (dtype == FERRY_FLOAT64)
            ((double *)data)[n] = d;
        else if (dtype == FERRY_INT64)
            ((int64_t *)data)[n] = i;
        else
            ((unsigned char *)data)[n] = (unsigned char)i;
        n++;
    }
    ferry_value *v = t && eat(p, ")") && (n == numel || n == 0) ? ferry_tensor_value(t) : NULL;
    ferry_tensor_release(t);
    return v;
}

static ferry_value *parse_quoted(const char **p, bool is_bytes)
{
    const char *end = strchr(*p, '\'');
    if (!end)
        return NULL;
    ferry_value *v = is_bytes ? ferry_bytes(*p, (size_t)(end - *p))
                              : ferry_string_n(*p, (size_t)(end - *p));
    *p = end + 1;
    return v;
}

static ferry_value *parse(const char **p)
{
    skip_space(p);
    if (eat(p, "None"))
        return ferry_none();
    if (eat(p, "True"))
        return ferry_bool(true);
    if (eat(p, "False"))
        return ferry_bool(false);
    if (eat(p, "nan"))
        return ferry_double(NAN);
    if (eat(p, "inf"))
        return ferry_double(INFINITY);
    if (eat(p, "-inf"))
        return ferry_double(-INFINITY);
    if (eat(p, "["))
        return parse_list(p);
    if (eat(p, "{"))
        return parse_dict(p);
    if (eat(p, "T("))
        return parse_tensor(p);
    if (eat(p, "b'"))
        return parse_quoted(p, true);
    if (eat(p, "'"))
        return parse_quoted(p, false);
    const char *start = *p;
    size_t len = strspn(start, "+-0123456789.e");
    bool is_float = memchr(start, '.', len) || memchr(start, 'e', len);
    if (len == 0)
        return NULL;
    ferry_value *v = is_float ? ferry_double(strtod(start, NULL))
                              : ferry_int(strtoll(start, NULL, 10));
    *p += len;
    return v;
}

static ferry_value *parse_text(const char *text)
{
    const char *p = text;
    ferry_value *v = parse(&p);
    if (!v)
        fprintf(stderr, "cannot read the reference's \"%s\"\n", text);
    return v;
}

/* ---- comparison ---- */

static bool close_to(double got, double want, ferry_dtype dtype)
{
    if (isnan(want) || isnan(got))
        return isnan(want) && isnan(got);
    if (dtype != FERRY_FLOAT32 && dtype != FERRY_FLOAT64)
        return got == want;
    double rtol = dtype == FERRY_FLOAT32 ? 2e-6 : 1e-12, atol = dtype == FERRY_FLOAT32 ? 1e-7 : 1e-14;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

static bool same_tensor(ferry_tensor *got, ferry_tensor *want, bool values)
{
    if (ferry_tensor_dtype(got) != ferry_tensor_dtype(want) ||
        ferry_tensor_ndim(got) != ferry_tensor_ndim(want))
        return false;
    for (int i = 0; i < ferry_tensor_ndim(got); i++)
        if (ferry_tensor_sizes(got)[i] != ferry_tensor_sizes(want)[i])
            return false;
    for (int64_t i = 0; values && i < ferry_tensor_numel(got); i++)
        if (!close_to(ferry_tensor_item_at(got, i), ferry_tensor_item_at(want, i),
                      ferry_tensor_dtype(want)))
            return false;
    return true;
}

/* torch's value: kinds equal, numbers and tensors as above (random tensors: dtype and shape). */
static bool same_value(const ferry_value *got, const ferry_value *want, bool values)
{
    ferry_kind k = ferry_value_kind(want);
    if (ferry_value_kind(got) != k)
        return false;
    switch (k) {
    case FERRY_VALUE_DOUBLE:
        return close_to(ferry_value_as_double(got), ferry_value_as_double(want), FERRY_INT64);
    case FERRY_VALUE_TENSOR:
        return same_tensor(ferry_value_as_tensor(got), ferry_value_as_tensor(want), values);
    case FERRY_VALUE_LIST:
        if (ferry_list_len(got) != ferry_list_len(want))
            return false;
        for (size_t i = 0; i < ferry_list_len(want); i++)
            if (!same_value(ferry_list_get(got, i), ferry_list_get(want, i), values))
                return false;
        return true;
    default:
        return ferry_value_equal(got, want);
    }
}

static void show(const char *what, const ferry_value *v)
{
    char buf[1024];
    ferry_value_format(v, buf, sizeof buf);
    fprintf(stderr, "  %s %s", what, buf);
    if (ferry_value_kind(v) == FERRY_VALUE_TENSOR)
        fprintf(stderr, " (%s)", ferry_dtype_name(ferry_tensor_dtype(ferry_value_as_tensor(v))));
    fprintf(stderr, "\n");
}

/* ---- the cases ---- */

/* Calls one reference case on worker1; true when the result is torch's. */
static bool run_case(const builtin_ref *c)
{
    ferry_value *args = parse_text(c->args), *kwargs = parse_text(c->kwargs);
    ferry_value *want = parse_text(c->want);
    ferry_value *got = args && kwargs && want
                           ? ferry_rpc_sync("worker1", c->fn, args, kwargs, FERRY_TIMEOUT_DEFAULT)
                           : NULL;
    bool ok = got && same_value(got, want, !c->is_random);
    if (ok && c->is_random && !strcmp(c->fn, "torch.rand")) { /* uniform: in [0, 1) */
        ferry_tensor *t = ferry_value_as_tensor(got);
        for (int64_t i = 0; i < ferry_tensor_numel(t); i++)
            ok = ok && ferry_tensor_item_at(t, i) >= 0 && ferry_tensor_item_at(t, i) < 1;
    }
    if (!ok) {
        fprintf(stderr, "%s(*%s, **%s):\n", c->fn, c->args, c->kwargs);
        if (got)
            show("ferry:", got);
        else
            fprintf(stderr, "  ferry failed: %s\n", ferry_last_error());
        fprintf(stderr, "  torch: %s\n", c->want);
    }
    ferry_value_release(got);
    ferry_value_release(want);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    return ok;
}

static int body_reference(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    size_t n = sizeof builtin_refs / sizeof builtin_refs[0], failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += !run_case(&builtin_refs[i]);
    if (failed)
        fprintf(stderr, "%zu of %zu builtin calls differ from torch\n", failed, n);
    RANK_CHECK(failed == 0);
    return 0;
}

Test(builtins, return_torchs_results_when_called_through_rpc_sync, .timeout = 60)
{
    rpc_case_run("shm", 2, body_reference, NULL, 55);
}

/* Fails with `message` through the remote error, which also names the worker and function. */
static bool fails_with(const char *fn, const char *args_text, const char *kwargs_text,
                       const char *message)
{
    ferry_value *args = parse_text(args_text), *kwargs = parse_text(kwargs_text);
    ferry_value *got = args && kwargs
                           ? ferry_rpc_sync("worker1", fn, args, kwargs, FERRY_TIMEOUT_DEFAULT)
                           : NULL;
    const char *err = ferry_last_error();
    bool ok = !got && ferry_last_status() == FERRY_EREMOTE && strstr(err, message) &&
              strstr(err, "worker1") && strstr(err, fn);
    if (!ok)
        fprintf(stderr, "%s(*%s, **%s): want \"%s\", got %s\n", fn, args_text, kwargs_text,
                message, got ? "a value" : err);
    ferry_value_release(got);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    return ok;
}

/* Calls torch's parser words otherwise (ferry's follow Python's for a def with torch's
   parameter names), and refusals of what ferry does not compute. */
static const builtin_ref_error ferry_errors[] = {
    {"torch.add", "[T(float32, [1], [1.0])]", "{}",
     "torch.add() missing 1 required positional argument: 'other'"},
    {"torch.add", "[]", "{}",
     "torch.add() missing 2 required positional arguments: 'input' and 'other'"},
    {"torch.narrow", "[]", "{}", "torch.narrow() missing 4 required positional arguments: "
                                 "'input', 'dim', 'start', and 'length'"},
    {"torch.sum", "[T(float32, [1], [1.0]), 0]", "{'dim': 0}",
     "torch.sum() got multiple values for argument 'dim'"},
    {"torch.sum", "[T(float32, [1], [1.0])]", "{'axis': 0}",
     "torch.sum() got an unexpected keyword argument 'axis'"},
    {"torch.sum", "[T(float32, [1], [1.0])]", "{'keepdim': 1}",
     "torch.sum(): argument 'keepdim' must be bool, not int"},
    {"torch.softmax", "[T(float32, [1], [1.0])]", "{}",
     "torch.softmax() missing 1 required positional argument: 'dim'"},
    {"torch.transpose", "[T(float32, [1], [1.0]), 0, 1, 2]", "{}",
     "torch.transpose() takes 3 positional arguments but 4 were given"},
    {"torch.max", "[T(float32, [1], [1.0]), 0, False, 1]", "{}",
     "torch.max() takes from 1 to 3 positional arguments but 4 were given"},
    {"torch.max", "[T(float32, [1], [1.0]), T(float32, [1], [1.0])]", "{}",
     "torch.max(): argument 'dim' must be int, not Tensor"},
    {"torch.add", "['a', T(float32, [1], [1.0])]", "{}",
     "torch.add(): argument 'input' must be Tensor, not str"},
    {"torch.mul", "[T(float32, [1], [1.0]), None]", "{}",
     "torch.mul(): argument 'other' must be Tensor or Number, not NoneType"},
    {"torch.mul", "[T(float32, [1], [1.0]), 2]", "{'alpha': 2}",
     "torch.mul() got an unexpected keyword argument 'alpha'"},
    {"torch.add", "[T(float32, [1], [1.0]), 2]", "{'alpha': 'x'}",
     "torch.add(): argument 'alpha' must be Number, not str"},
    {"torch.ones", "[2]", "{'dtype': 'float33'}", "torch.ones(): unknown dtype 'float33'"},
    {"torch.ones", "[2]", "{'dtype': 3}", "torch.ones(): argument 'dtype' must be torch.dtype"},
    {"torch.ones", "[2, 'a']", "{}", "torch.ones(): argument 'size' must be tuple of ints, but "
                                    "found element of type str at pos 1"},
    {"torch.ones", "[2]", "{'size': [2]}", "torch.ones() got multiple values for argument 'size'"},
    {"torch.ones", "[]", "{}", "torch.ones() missing 1 required positional argument: 'size'"},
    {"torch.cat", "[[T(float32, [1], [1.0]), 2]]", "{}",
     "torch.cat(): argument 'tensors' must be tuple of Tensors, but found element of type int at "
     "pos 1"},
    {"torch.cat", "[T(float32, [1], [1.0])]", "{}",
     "torch.cat(): argument 'tensors' must be tuple of Tensors, not Tensor"},
    {"torch.pow", "[T(float32, [1], [1.0]), T(float32, [1], [1.0])]", "{}",
     "torch.pow(): argument 'exponent' must be Number, not Tensor"},
    {"torch.nn.functional.gelu", "[T(float32, [1], [1.0])]", "{'approximate': 'tanh'}",
     "approximate must be 'none'"},
    {"torch.tensor", "[[1, [2]]]", "{}", "torch.tensor(): expected a number at dim 1 (got a list)"},
    {"torch.tensor", "[[[1], [2, 3]]]", "{}",
     "torch.tensor(): expected sequence of length 1 at dim 1 (got 2)"},
    {"torch.div", "[T(float32, [1], [1.0]), 2]", "{'rounding_mode': 'floor'}",
     "torch.div(): ferry divides truly only (rounding_mode=None), not rounding_mode='floor'"},
    {"torch.tensor", "[['a']]", "{}",
     "torch.tensor(): data must be a number or a nested list of numbers, not str"},
    {"torch.eye", "[-1]", "{}", "torch.eye(): n must be greater or equal to 0, got -1"},
    {"torch.nn.functional.embedding", "[T(int64, [1], [0]), T(float32, [1, 1], [1.0])]",
     "{'max_norm': 1.0}", "torch.nn.functional.embedding(): ferry takes max_norm=None only"},
    {"torch.nn.functional.nll_loss", "[T(float32, [1, 2], [-1.0, -1.0]), T(int64, [1], [0])]",
     "{'ignore_index': 0}", "ferry takes ignore_index=-100 only, not 0"},
    {"torch.nn.functional.cross_entropy", "[T(float32, [1, 2], [1.0, 1.0]), T(int64, [1], [0])]",
     "{'label_smoothing': 0.1}", "ferry takes label_smoothing=0.0 only, not 0.1"},
    {"torch.nn.functional.cross_entropy", "[T(float32, [1, 2], [1.0, 1.0]), T(int64, [1], [0])]",
     "{'weight': T(float32, [2], [1.0, 1.0])}", "ferry takes weight=None only, not a Tensor"},
    {"min", "[1, 2]", "{'key': 0}", "min() got an unexpected keyword argument 'key'"},
    {"min", "['ab']", "{}", "min(): ferry iterates over a list only, not a str"},
    {"sum", "[[9223372036854775807, 1]]", "{}", "sum(): the total passes the int64 range"},
    {"abs", "[-9223372036854775807]", "{'x': 1}", "abs() takes no keyword arguments"},
};

static int body_errors(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    size_t failed = 0, n = sizeof builtin_ref_errors / sizeof builtin_ref_errors[0];
    for (size_t i = 0; i < n; i++) {
        const builtin_ref_error *e = &builtin_ref_errors[i];
        failed += !fails_with(e->fn, e->args, e->kwargs, e->message);
    }
    for (size_t i = 0; i < sizeof ferry_errors / sizeof ferry_errors[0]; i++) {
        const builtin_ref_error *e = &ferry_errors[i];
        failed += !fails_with(e->fn, e->args, e->kwargs, e->message);
    }
    RANK_CHECK(failed == 0);
    return 0;
}

Test(builtins, fail_with_pythons_and_torchs_words_when_called_wrongly, .timeout = 40)
{
    rpc_case_run("shm", 2, body_errors, NULL, 35);
}
