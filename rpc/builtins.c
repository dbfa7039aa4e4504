/* Builtin functions every worker serves under torch's names (DESIGN section 3): torch.add, sub,
   mul, div, matmul, ones, zeros, sum, cat and Python's min and max. Python numbers on the right of
   an arithmetic op follow torch's promotion: an int behaves like a 0-dim int64 tensor, a float
   like torch's Python-float scalar.

   Every builtin that makes a tensor runs on the pool, never where its request is read: its size
   is the caller's choice (torch.ones of 8 GiB takes seconds), and the thread that reads requests
   also answers heartbeats, which must not wait behind it. Results a caller can size at will
   (torch.ones/zeros, broadcasting arithmetic, matmul) are refused past the agent's
   builtin_max_bytes before anything is allocated. Only min and max (numbers) run inline. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "ferry/ops.h"
#include "rpc/agent_impl.h"
#include "rpc/registry.h"

typedef ferry_tensor *(*tensor_op)(ferry_tensor *, ferry_tensor *);
typedef ferry_tensor *(*scalar_op)(ferry_tensor *, double);

typedef struct {
    const char *name;
    tensor_op op;
    scalar_op op_scalar;
    bool commutes;
} binary_spec;

static const binary_spec binaries[] = {
    {"torch.add", ferry_add, ferry_add_scalar, true},
    {"torch.sub", ferry_sub, ferry_sub_scalar, false},
    {"torch.mul", ferry_mul, ferry_mul_scalar, true},
    {"torch.div", ferry_div, ferry_div_scalar, false},
};

static bool is_number(const ferry_value *v)
{
    ferry_kind k = ferry_value_kind(v);
    return k == FERRY_VALUE_INT || k == FERRY_VALUE_DOUBLE || k == FERRY_VALUE_BOOL;
}

/* Python's words for a call with the wrong number of positional arguments: "takes 2
   positional arguments but 3 were given", "missing 1 required positional argument: 'other'".
   names: the parameters in order (at least hi of them). */
static ferry_status want_args(const char *fn, const ferry_value *args, size_t lo, size_t hi,
                              const char *const *names)
{
    size_t n = ferry_list_len(args);
    if (n > hi && lo == hi)
        return ferry_set_error(FERRY_EINVAL, "%s() takes %zu positional argument%s but %zu %s "
                               "given", fn, hi, hi == 1 ? "" : "s", n, n == 1 ? "was" : "were");
    if (n > hi)
        return ferry_set_error(FERRY_EINVAL, "%s() takes from %zu to %zu positional arguments "
                               "but %zu were given", fn, lo, hi, n);
    if (n < lo)
        return ferry_set_error(FERRY_EINVAL, "%s() missing %zu required positional argument%s: "
                               "'%s'%s", fn, lo - n, lo - n == 1 ? "" : "s", names[n],
                               lo - n > 1 ? " and more" : "");
    return FERRY_OK;
}

/* Every keyword must be one of `allowed` (NULL-terminated): else Python's "got an unexpected
   keyword argument 'x'". */
static ferry_status want_kwargs(const char *fn, const ferry_value *kwargs,
                                const char *const *allowed)
{
    for (size_t i = 0; i < ferry_dict_len(kwargs); i++) {
        const char *k = ferry_dict_key_at(kwargs, i);
        bool ok = false;
        for (size_t j = 0; allowed && allowed[j] && !ok; j++)
            ok = !strcmp(k, allowed[j]);
        if (!ok)
            return ferry_set_error(FERRY_EINVAL, "%s() got an unexpected keyword argument '%s'",
                                   fn, k);
    }
    return FERRY_OK;
}

static const char *const INPUT_OTHER[] = {"input", "other"};
static const char *const INPUT_DIM[] = {"input", "dim"};
static const char *const TENSORS_DIM[] = {"tensors", "dim"};

/* The result's bytes (numel x element size, saturating), for the cap. A negative size is left
   for the op itself to refuse. */
static uint64_t result_bytes(int n, const int64_t *sizes, ferry_dtype dtype)
{
    uint64_t bytes = ferry_dtype_size(dtype);
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0)
            return 0;
        if (__builtin_mul_overflow(bytes, (uint64_t)sizes[i], &bytes))
            return UINT64_MAX;
    }
    return bytes;
}

/* FERRY_EINVAL naming the cap when a result of that shape would pass builtin_max_bytes. */
static ferry_status check_cap(const char *fn, int n, const int64_t *sizes, ferry_dtype dtype)
{
    ferry__agent *a = ferry__agent_get();
    long long cap = a ? a->builtin_max_bytes : 0;
    ferry__agent_release(a);
    ferry_clear_error();
    uint64_t bytes = result_bytes(n, sizes, dtype);
    if (cap > 0 && bytes > (uint64_t)cap)
        return ferry_set_error(FERRY_EINVAL, "%s(): the result would take %llu bytes, more than "
                               "this worker's builtin_max_bytes (%lld) allows", fn,
                               (unsigned long long)bytes, cap);
    return FERRY_OK;
}

/* The broadcast shape of a and b's last dims (ranks aligned from the right), into out (at most
   FERRY_MAX_DIMS); `skip` trailing dims of each are left out (matmul's matrix dims). Returns the
   rank, or -1 when the shapes do not broadcast (the op itself then says why). */
static int broadcast_shape(const ferry_tensor *a, const ferry_tensor *b, int skip, int64_t *out)
{
    int na = ferry_tensor_ndim(a) - skip, nb = ferry_tensor_ndim(b) - skip;
    na = na < 0 ? 0 : na;
    nb = nb < 0 ? 0 : nb;
    int n = na > nb ? na : nb;
    if (n > FERRY_MAX_DIMS)
        return -1;
    const int64_t *sa = ferry_tensor_sizes(a), *sb = ferry_tensor_sizes(b);
    for (int i = 0; i < n; i++) {
        int64_t x = i < n - na ? 1 : sa[i - (n - na)];
        int64_t y = i < n - nb ? 1 : sb[i - (n - nb)];
        if (x != y && x != 1 && y != 1)
            return -1;
        out[i] = x == 1 ? y : x;
    }
    return n;
}

static ferry_status check_binary_cap(const char *fn, const ferry_value *a, const ferry_value *b)
{
    ferry_tensor *ta = ferry_value_as_tensor(a), *tb = ferry_value_as_tensor(b);
    if (!ta || !tb) /* a tensor and a number: the result is the tensor's size */
        return FERRY_OK;
    int64_t shape[FERRY_MAX_DIMS];
    int n = broadcast_shape(ta, tb, 0, shape);
    ferry_dtype da = ferry_tensor_dtype(ta), db = ferry_tensor_dtype(tb);
    ferry_dtype dt = ferry_dtype_size(da) >= ferry_dtype_size(db) ? da : db;
    return n < 0 ? FERRY_OK : check_cap(fn, n, shape, dt);
}

static ferry_status tensor_result(ferry_tensor *t, ferry_value **result)
{
    if (!t)
        return ferry_last_status();
    *result = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return *result ? FERRY_OK : ferry_last_status();
}

/* a (op) b where at least one side is a tensor. */
static ferry_tensor *apply_binary(const binary_spec *s, const ferry_value *a, const ferry_value *b,
                                  double alpha)
{
    if (ferry_value_kind(a) != FERRY_VALUE_TENSOR) {
        if (!s->commutes || ferry_value_kind(b) != FERRY_VALUE_TENSOR)
            return ferry__fail_null(FERRY_EINVAL,
                                    "%s(): argument 'input' must be Tensor, not %s", s->name,
                                    ferry_kind_name(ferry_value_kind(a)));
        const ferry_value *t = a;
        a = b;
        b = t;
    }
    ferry_tensor *ta = ferry_value_as_tensor(a);
    if (ferry_value_kind(b) == FERRY_VALUE_DOUBLE)
        return s->op_scalar(ta, ferry_value_as_double(b) * alpha);
    if (ferry_value_kind(b) == FERRY_VALUE_INT || ferry_value_kind(b) == FERRY_VALUE_BOOL) {
        int64_t i = ferry_value_kind(b) == FERRY_VALUE_INT ? ferry_value_as_int(b)
                                                           : ferry_value_as_bool(b);
        i = (int64_t)((double)i * alpha);
        ferry_tensor *tb = ferry_tensor_from_data(&i, 0, NULL, FERRY_INT64);
        ferry_tensor *r = tb ? s->op(ta, tb) : NULL;
        ferry_tensor_release(tb);
        return r;
    }
    if (ferry_value_kind(b) != FERRY_VALUE_TENSOR)
        return ferry__fail_null(FERRY_EINVAL, "%s(): argument 'other' must be Tensor or Number, not %s",
                                s->name, ferry_kind_name(ferry_value_kind(b)));
    if (alpha != 1.0 && s->op == ferry_add)
        return ferry_add_alpha(ta, ferry_value_as_tensor(b), alpha);
    if (alpha != 1.0)
        return ferry_add_alpha(ta, ferry_value_as_tensor(b), -alpha);
    return s->op(ta, ferry_value_as_tensor(b));
}

static ferry_status binary_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    const binary_spec *s = user;
    static const char *const with_alpha[] = {"alpha", NULL};
    ferry_status rc = want_args(s->name, args, 2, 2, INPUT_OTHER);
    if (rc == FERRY_OK)
        rc = want_kwargs(s->name, kwargs,
                         s->op == ferry_add || s->op == ferry_sub ? with_alpha : NULL);
    if (rc != FERRY_OK)
        return rc;
    double alpha = 1.0;
    if (ferry_dict_len(kwargs) > 0) {
        ferry_value *al = ferry_dict_get(kwargs, "alpha");
        if (!is_number(al))
            return ferry_set_error(FERRY_EINVAL, "%s(): argument 'alpha' must be Number, not %s",
                                   s->name, ferry_kind_name(ferry_value_kind(al)));
        alpha = ferry_value_as_double(al);
    }
    rc = check_binary_cap(s->name, ferry_list_get(args, 0), ferry_list_get(args, 1));
    if (rc != FERRY_OK)
        return rc;
    return tensor_result(apply_binary(s, ferry_list_get(args, 0), ferry_list_get(args, 1), alpha),
                         result);
}

static ferry_status matmul_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    ferry_status rc = want_args("torch.matmul", args, 2, 2, INPUT_OTHER);
    if (rc == FERRY_OK)
        rc = want_kwargs("torch.matmul", kwargs, NULL);
    if (rc != FERRY_OK)
        return rc;
    ferry_tensor *a = ferry_value_as_tensor(ferry_list_get(args, 0));
    ferry_tensor *b = ferry_value_as_tensor(ferry_list_get(args, 1));
    if (!a || !b)
        return ferry_set_error(FERRY_EINVAL, "torch.matmul() expects two tensors");
    /* (batch..., n, k) @ (batch..., k, m): the broadcast batch, then n x m. */
    int na = ferry_tensor_ndim(a), nb = ferry_tensor_ndim(b);
    int64_t shape[FERRY_MAX_DIMS + 2];
    int n = broadcast_shape(a, b, 2, shape);
    if (n >= 0 && na >= 1 && nb >= 1) {
        if (na >= 2)
            shape[n++] = ferry_tensor_sizes(a)[na - 2];
        if (nb >= 2)
            shape[n++] = ferry_tensor_sizes(b)[nb - 1];
        rc = check_cap("torch.matmul", n, shape, ferry_tensor_dtype(a));
        if (rc != FERRY_OK)
            return rc;
    }
    return tensor_result(ferry_matmul(a, b), result);
}

/* Reads a dtype name ("float32", "torch.float64", ...) from kwargs["dtype"]. */
static ferry_status dtype_kwarg(const ferry_value *kwargs, ferry_dtype *out)
{
    *out = FERRY_FLOAT32;
    ferry_value *d = ferry_dict_len(kwargs) ? ferry_dict_get(kwargs, "dtype") : NULL;
    if (!d)
        return FERRY_OK;
    const char *s = ferry_value_as_string(d);
    if (!s)
        return ferry_set_error(FERRY_EINVAL, "dtype must be a string such as \"float32\"");
    if (!strncmp(s, "torch.", 6))
        s += 6;
    for (int i = 0; i < FERRY_DTYPE_COUNT; i++)
        if (!strcmp(s, ferry_dtype_name((ferry_dtype)i))) {
            *out = (ferry_dtype)i;
            return FERRY_OK;
        }
    return ferry_set_error(FERRY_EINVAL, "unknown dtype '%s'", s);
}

/* torch.ones(2, 3) or torch.ones([2, 3]). */
static ferry_status fill_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    const char *name = user ? "torch.ones" : "torch.zeros";
    static const char *const with_dtype[] = {"dtype", NULL};
    ferry_status krc = want_kwargs(name, kwargs, with_dtype);
    if (krc != FERRY_OK)
        return krc;
    const ferry_value *dims = args;
    if (ferry_list_len(args) == 1 && ferry_value_kind(ferry_list_get(args, 0)) == FERRY_VALUE_LIST)
        dims = ferry_list_get(args, 0);
    size_t n = ferry_list_len(dims);
    if (n > FERRY_MAX_DIMS)
        return ferry_set_error(FERRY_EINVAL, "%s(): too many dimensions (%zu)", name, n);
    int64_t sizes[FERRY_MAX_DIMS];
    for (size_t i = 0; i < n; i++) {
        ferry_value *v = ferry_list_get(dims, i);
        if (ferry_value_kind(v) != FERRY_VALUE_INT)
            return ferry_set_error(FERRY_EINVAL, "%s(): size %zu must be an int, not %s", name, i,
                                   ferry_kind_name(ferry_value_kind(v)));
        sizes[i] = ferry_value_as_int(v);
    }
    ferry_dtype dtype;
    ferry_status rc = dtype_kwarg(kwargs, &dtype);
    if (rc != FERRY_OK)
        return rc;
    if ((rc = check_cap(name, (int)n, sizes, dtype)) != FERRY_OK)
        return rc;
    ferry_tensor *t = user ? ferry_ones((int)n, sizes, dtype) : ferry_zeros((int)n, sizes, dtype);
    return tensor_result(t, result);
}

static ferry_status sum_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    static const char *const sum_kwargs[] = {"dim", "keepdim", NULL};
    ferry_status rc = want_args("torch.sum", args, 1, 2, INPUT_DIM);
    if (rc == FERRY_OK)
        rc = want_kwargs("torch.sum", kwargs, sum_kwargs);
    if (rc != FERRY_OK)
        return rc;
    ferry_tensor *t = ferry_value_as_tensor(ferry_list_get(args, 0));
    if (!t)
        return ferry_set_error(FERRY_EINVAL, "torch.sum(): argument 'input' must be Tensor");
    ferry_value *dim = ferry_list_len(args) == 2 ? ferry_list_get(args, 1)
                       : ferry_dict_len(kwargs) ? ferry_dict_get(kwargs, "dim") : NULL;
    ferry_clear_error();
    if (!dim)
        return tensor_result(ferry_sum(t), result);
    if (ferry_value_kind(dim) != FERRY_VALUE_INT)
        return ferry_set_error(FERRY_EINVAL, "torch.sum(): dim must be an int");
    int d = (int)ferry_value_as_int(dim);
    ferry_value *kd = ferry_dict_len(kwargs) ? ferry_dict_get(kwargs, "keepdim") : NULL;
    return tensor_result(ferry_sum_dim(t, 1, &d, kd && ferry_value_as_bool(kd)), result);
}

static ferry_status cat_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    static const char *const cat_kwargs[] = {"dim", NULL};
    ferry_status rc = want_args("torch.cat", args, 1, 2, TENSORS_DIM);
    if (rc == FERRY_OK)
        rc = want_kwargs("torch.cat", kwargs, cat_kwargs);
    if (rc != FERRY_OK)
        return rc;
    const ferry_value *list = ferry_list_get(args, 0);
    if (ferry_value_kind(list) != FERRY_VALUE_LIST)
        return ferry_set_error(FERRY_EINVAL, "torch.cat(): argument 'tensors' must be a list");
    size_t n = ferry_list_len(list);
    ferry_tensor *stack[64], **ts = n <= 64 ? stack : NULL;
    if (!ts)
        return ferry_set_error(FERRY_EINVAL, "torch.cat(): at most 64 tensors, got %zu", n);
    for (size_t i = 0; i < n; i++)
        if (!(ts[i] = ferry_value_as_tensor(ferry_list_get(list, i))))
            return ferry_set_error(FERRY_EINVAL, "torch.cat(): item %zu is not a tensor", i);
    ferry_value *dim = ferry_list_len(args) == 2 ? ferry_list_get(args, 1)
                       : ferry_dict_len(kwargs) ? ferry_dict_get(kwargs, "dim") : NULL;
    ferry_clear_error();
    return tensor_result(ferry_cat(ts, n, dim ? (int)ferry_value_as_int(dim) : 0), result);
}

/* Python's min/max over numbers: min(1, 2) or min([1, 2]). Ints stay ints. */
static ferry_status extreme_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    bool want_max = user != NULL;
    const char *name = want_max ? "max" : "min";
    ferry_status krc = want_kwargs(name, kwargs, NULL);
    if (krc != FERRY_OK)
        return krc;
    const ferry_value *items = args;
    if (ferry_list_len(args) == 1 && ferry_value_kind(ferry_list_get(args, 0)) == FERRY_VALUE_LIST)
        items = ferry_list_get(args, 0);
    size_t n = ferry_list_len(items);
    if (n == 0)
        return ferry_set_error(FERRY_EINVAL, "%s() arg is an empty sequence", name);
    const ferry_value *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const ferry_value *v = ferry_list_get(items, i);
        if (!is_number(v))
            return ferry_set_error(FERRY_EINVAL, "%s(): '%s' is not a number", name,
                                   ferry_kind_name(ferry_value_kind(v)));
        double x = ferry_value_as_double(v);
        if (!best || (want_max ? x > ferry_value_as_double(best) : x < ferry_value_as_double(best)))
            best = v;
    }
    *result = ferry_value_retain((ferry_value *)best);
    return FERRY_OK;
}

static void register_all(void)
{
    ferry__registry_builtins_begin(true);
    /* Tensor work goes to the pool (see the top of the file); numbers stay inline. */
    for (size_t i = 0; i < sizeof binaries / sizeof binaries[0]; i++)
        ferry_register_function(binaries[i].name, binary_fn, (void *)&binaries[i]);
    ferry_register_function("torch.matmul", matmul_fn, NULL);
    ferry_register_function("torch.ones", fill_fn, (void *)1);
    ferry_register_function("torch.zeros", fill_fn, NULL);
    ferry_register_function("torch.sum", sum_fn, NULL);
    ferry_register_function("torch.cat", cat_fn, NULL);
    ferry_register_nonblocking_function("min", extreme_fn, NULL);
    ferry_register_nonblocking_function("max", extreme_fn, (void *)1);
    ferry__registry_builtins_begin(false);
}

void ferry__builtins_register(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_all);
}
