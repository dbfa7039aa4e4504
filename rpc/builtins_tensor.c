/* The reduction and shape builtins: torch.sum, mean, max, min, argmax, argmin, softmax,
   log_softmax, cat, stack, reshape, flatten, transpose, t, squeeze, unsqueeze, narrow,
   index_select and clone, with torch's parameter names and defaults. torch.max and torch.min
   with a dim return [values, indices], the list form of torch's namedtuple. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/ops.h"
#include "rpc/builtins_impl.h"

static const char *const INPUT[] = {"input", NULL};
static const char *const INPUT_DIM[] = {"input", "dim", NULL};
static const char *const INPUT_DIM_KEEPDIM[] = {"input", "dim", "keepdim", NULL};
static const char *const REDUCE[] = {"input", "dim", "keepdim", "dtype", NULL};
static const char *const SOFTMAX[] = {"input", "dim", "dtype", NULL};
static const char *const TENSORS_DIM[] = {"tensors", "dim", NULL};

/* Binds and reads the input tensor, which every builtin here takes first. */
static ferry_status bind_input(const ferry__bi_sig *s, const ferry_value *args,
                               const ferry_value *kwargs, const ferry_value **v, ferry_tensor **t)
{
    ferry_status rc = ferry__bi_bind(s, args, kwargs, v);
    return rc != FERRY_OK ? rc : ferry__bi_tensor(s->fn, s->names[0], v[0], t);
}

static ferry_status dim_arg(const char *fn, const ferry_value *v, int64_t dflt, int *out)
{
    int64_t d;
    ferry_status rc = ferry__bi_int(fn, "dim", v, dflt, &d);
    if (rc == FERRY_OK && (d < -FERRY_MAX_DIMS - 1 || d > FERRY_MAX_DIMS))
        rc = ferry__fail(FERRY_EINVAL, "%s(): Dimension out of range (got %lld)", fn,
                         (long long)d);
    *out = (int)d;
    return rc;
}

/* sum and mean (user non-NULL): input converted to dtype= first, as torch does. */
static ferry_status reduce_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    bool is_mean = user != NULL;
    ferry__bi_sig sig = {is_mean ? "torch.mean" : "torch.sum", REDUCE, 3, 1};
    const ferry_value *v[4];
    ferry_tensor *t = NULL;
    int64_t dims64[FERRY_MAX_DIMS];
    int ndims = 0;
    bool keepdim = false;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc == FERRY_OK && v[1] && ferry_value_kind(v[1]) != FERRY_VALUE_NONE)
        rc = ferry__bi_int_list(sig.fn, "dim", v[1], dims64, &ndims);
    if (rc == FERRY_OK)
        rc = ferry__bi_bool(sig.fn, "keepdim", v[2], false, &keepdim);
    ferry_dtype dtype = ferry_tensor_dtype(t);
    if (rc == FERRY_OK)
        rc = ferry__bi_dtype(sig.fn, v[3], dtype, &dtype);
    if (rc != FERRY_OK)
        return rc;
    int dims[FERRY_MAX_DIMS];
    for (int i = 0; i < ndims; i++)
        dims[i] = (int)dims64[i];
    ferry_tensor *x = dtype == ferry_tensor_dtype(t) ? ferry_tensor_retain(t)
                                                     : ferry_tensor_to_dtype(t, dtype);
    if (!x)
        return ferry_last_status();
    ferry_tensor *r = is_mean ? ferry_mean_dim(x, ndims, dims, keepdim)
                              : ferry_sum_dim(x, ndims, dims, keepdim);
    ferry_tensor_release(x);
    return ferry__bi_tensor_result(r, result);
}

/* The order-reversing map min and argmin reduce through: -x for floats, -1 - x (bitwise not,
   which no int64 overflows) for int64. It is its own inverse. */
static ferry_tensor *flip(ferry_tensor *t)
{
    if (ferry_tensor_dtype(t) != FERRY_INT64)
        return ferry_neg(t);
    int64_t minus_one = -1;
    ferry_tensor *m = ferry_tensor_from_data(&minus_one, 0, NULL, FERRY_INT64);
    ferry_tensor *r = m ? ferry_sub(m, t) : NULL;
    ferry_tensor_release(m);
    return r;
}

typedef struct {
    const char *name;
    bool is_min;
    bool is_arg;
} extreme_spec;

static const extreme_spec MAX = {"torch.max", false, false}, MIN = {"torch.min", true, false},
                          ARGMAX = {"torch.argmax", false, true},
                          ARGMIN = {"torch.argmin", true, true};

/* max/min over the flipped (min) or plain tensor x: all of it without a dim. */
static ferry_status extreme_of(const extreme_spec *s, ferry_tensor *x, const ferry_value *dim,
                               bool keepdim, ferry_value **result)
{
    bool has_dim = dim && ferry_value_kind(dim) != FERRY_VALUE_NONE;
    int d = 0;
    ferry_status rc = has_dim ? dim_arg(s->name, dim, 0, &d) : FERRY_OK;
    if (rc != FERRY_OK)
        return rc;
    if (!has_dim && !s->is_arg) {
        if (keepdim)
            return ferry__fail(FERRY_EINVAL, "%s(): keepdim needs a dim", s->name);
        ferry_tensor *m = ferry_max(x);
        ferry_tensor *r = m && s->is_min ? flip(m) : ferry_tensor_retain(m);
        ferry_tensor_release(m);
        return ferry__bi_tensor_result(r, result);
    }
    ferry_tensor *flat = NULL;
    if (!has_dim) { /* argmax without a dim: the position in the flattened tensor */
        int64_t all = -1;
        if (!(flat = ferry_reshape(x, 1, &all)))
            return ferry_last_status();
        x = flat;
    }
    ferry_tensor *idx = NULL;
    ferry_tensor *vals = ferry_max_dim(x, d, keepdim, &idx);
    ferry_tensor_release(flat);
    if (!vals)
        return ferry_last_status();
    if (s->is_arg) {
        ferry_tensor_release(vals);
        return ferry__bi_tensor_result(idx, result);
    }
    ferry_tensor *out = s->is_min ? flip(vals) : ferry_tensor_retain(vals);
    ferry_tensor_release(vals);
    if (out)
        *result = ferry_list_of(2, ferry_tensor_value(out), ferry_tensor_value(idx));
    ferry_tensor_release(out);
    ferry_tensor_release(idx);
    return out && *result ? FERRY_OK : ferry_last_status();
}

static ferry_status extreme_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    const extreme_spec *s = user;
    ferry__bi_sig sig = {s->name, INPUT_DIM_KEEPDIM, 3, 1};
    const ferry_value *v[3];
    ferry_tensor *t = NULL;
    bool keepdim = false;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc == FERRY_OK)
        rc = ferry__bi_bool(s->name, "keepdim", v[2], false, &keepdim);
    if (rc != FERRY_OK)
        return rc;
    ferry_tensor *x = s->is_min ? flip(t) : ferry_tensor_retain(t);
    if (!x)
        return ferry_last_status();
    rc = extreme_of(s, x, v[1], keepdim, result);
    ferry_tensor_release(x);
    return rc;
}

static ferry_status softmax_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    bool is_log = user != NULL;
    ferry__bi_sig sig = {is_log ? "torch.log_softmax" : "torch.softmax", SOFTMAX, 3, 2};
    const ferry_value *v[3];
    ferry_tensor *t = NULL;
    int d = 0;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc == FERRY_OK)
        rc = dim_arg(sig.fn, v[1], 0, &d);
    ferry_dtype dtype = ferry_tensor_dtype(t);
    if (rc == FERRY_OK)
        rc = ferry__bi_dtype(sig.fn, v[2], dtype, &dtype);
    if (rc != FERRY_OK)
        return rc;
    ferry_tensor *x = dtype == ferry_tensor_dtype(t) ? ferry_tensor_retain(t)
                                                     : ferry_tensor_to_dtype(t, dtype);
    ferry_tensor *r = !x ? NULL : is_log ? ferry_log_softmax(x, d) : ferry_softmax(x, d);
    ferry_tensor_release(x);
    return ferry__bi_tensor_result(r, result);
}

/* cat and stack (user non-NULL). */
static ferry_status join_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    bool is_stack = user != NULL;
    ferry__bi_sig sig = {is_stack ? "torch.stack" : "torch.cat", TENSORS_DIM, 2, 1};
    const ferry_value *v[2];
    int d = 0;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = dim_arg(sig.fn, v[1], 0, &d);
    ferry_tensor **ts = NULL;
    size_t n = 0;
    if (rc == FERRY_OK)
        rc = ferry__bi_tensor_list(sig.fn, "tensors", v[0], &ts, &n);
    if (rc != FERRY_OK)
        return rc;
    ferry_tensor *r = is_stack ? ferry_stack(ts, n, d) : ferry_cat(ts, n, d);
    ferry__free(ts);
    return ferry__bi_tensor_result(r, result);
}

static ferry_status reshape_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "shape", NULL};
    ferry__bi_sig sig = {"torch.reshape", names, 2, 2};
    const ferry_value *v[2];
    ferry_tensor *t = NULL;
    int64_t sizes[FERRY_MAX_DIMS];
    int n = 0;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc == FERRY_OK)
        rc = ferry__bi_int_list(sig.fn, "shape", v[1], sizes, &n);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(ferry_reshape(t, n, sizes), result);
}

static int wrap(int64_t d, int ndim)
{
    int n = ndim > 0 ? ndim : 1;
    return (int)(d < 0 ? d + n : d);
}

static ferry_status flatten_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "start_dim", "end_dim", NULL};
    ferry__bi_sig sig = {"torch.flatten", names, 3, 1};
    const ferry_value *v[3];
    ferry_tensor *t = NULL;
    int64_t start = 0, end = -1;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(sig.fn, "start_dim", v[1], 0, &start);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(sig.fn, "end_dim", v[2], -1, &end);
    if (rc != FERRY_OK)
        return rc;
    int nd = ferry_tensor_ndim(t), s = wrap(start, nd), e = wrap(end, nd);
    if (s < 0 || e < 0 || s >= (nd ? nd : 1) || e >= (nd ? nd : 1))
        return ferry__fail(FERRY_EINVAL, "torch.flatten(): Dimension out of range (expected to "
                           "be in range of [%d, %d], but got %lld)", nd ? -nd : -1,
                           nd ? nd - 1 : 0, (long long)(s < 0 || s >= (nd ? nd : 1) ? start : end));
    if (s > e)
        return ferry__fail(FERRY_EINVAL, "torch.flatten(): flatten() has invalid args: start_dim "
                           "cannot come after end_dim");
    int64_t sizes[FERRY_MAX_DIMS];
    int n = 0;
    const int64_t *in = ferry_tensor_sizes(t);
    for (int i = 0; i < s; i++)
        sizes[n++] = in[i];
    int64_t merged = 1;
    for (int i = s; i <= e && i < nd; i++)
        merged *= in[i];
    sizes[n++] = merged;
    for (int i = e + 1; i < nd; i++)
        sizes[n++] = in[i];
    return ferry__bi_tensor_result(ferry_reshape(t, n, sizes), result);
}

static ferry_status transpose_fn(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "dim0", "dim1", NULL};
    ferry__bi_sig sig = {"torch.transpose", names, 3, 3};
    const ferry_value *v[3];
    ferry_tensor *t = NULL;
    int64_t d0 = 0, d1 = 0;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(sig.fn, "dim0", v[1], 0, &d0);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(sig.fn, "dim1", v[2], 0, &d1);
    return rc != FERRY_OK ? rc
                          : ferry__bi_tensor_result(ferry_transpose(t, (int)d0, (int)d1), result);
}

/* torch.t: transposes a matrix; a vector or scalar comes back as it is. */
static ferry_status t_fn(const ferry_value *args, const ferry_value *kwargs,
                         ferry_value **result, void *user)
{
    ferry__bi_sig sig = {"torch.t", INPUT, 1, 1};
    const ferry_value *v[1];
    ferry_tensor *t = NULL;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc != FERRY_OK)
        return rc;
    int nd = ferry_tensor_ndim(t);
    if (nd > 2)
        return ferry__fail(FERRY_EINVAL, "torch.t(): t() expects a tensor with <= 2 dimensions, "
                           "but self is %dD", nd);
    return ferry__bi_tensor_result(nd < 2 ? ferry_tensor_retain(t) : ferry_transpose(t, 0, 1),
                                   result);
}

/* squeeze (user non-NULL; dim optional: None drops every size-1 dim) and unsqueeze. */
static ferry_status squeeze_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    bool is_squeeze = user != NULL;
    ferry__bi_sig sig = {is_squeeze ? "torch.squeeze" : "torch.unsqueeze", INPUT_DIM, 2,
                         is_squeeze ? 1 : 2};
    const ferry_value *v[2];
    ferry_tensor *t = NULL;
    int d = 0;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    bool all = is_squeeze && (!v[1] || ferry_value_kind(v[1]) == FERRY_VALUE_NONE);
    if (rc == FERRY_OK && !all)
        rc = dim_arg(sig.fn, v[1], 0, &d);
    if (rc != FERRY_OK)
        return rc;
    if (!is_squeeze)
        return ferry__bi_tensor_result(ferry_unsqueeze(t, d), result);
    if (!all)
        return ferry__bi_tensor_result(ferry_squeeze_dim(t, d), result);
    int64_t sizes[FERRY_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < ferry_tensor_ndim(t); i++)
        if (ferry_tensor_sizes(t)[i] != 1)
            sizes[n++] = ferry_tensor_sizes(t)[i];
    return ferry__bi_tensor_result(ferry_reshape(t, n, sizes), result);
}

static ferry_status narrow_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "dim", "start", "length", NULL};
    ferry__bi_sig sig = {"torch.narrow", names, 4, 4};
    const ferry_value *v[4];
    ferry_tensor *t = NULL;
    int d = 0;
    int64_t start = 0, length = 0;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc == FERRY_OK)
        rc = dim_arg(sig.fn, v[1], 0, &d);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(sig.fn, "start", v[2], 0, &start);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(sig.fn, "length", v[3], 0, &length);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(ferry_narrow(t, d, start, length), result);
}

static ferry_status index_select_fn(const ferry_value *args, const ferry_value *kwargs,
                                    ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "dim", "index", NULL};
    ferry__bi_sig sig = {"torch.index_select", names, 3, 3};
    const ferry_value *v[3];
    ferry_tensor *t = NULL, *index = NULL;
    int d = 0;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    if (rc == FERRY_OK)
        rc = dim_arg(sig.fn, v[1], 0, &d);
    if (rc == FERRY_OK)
        rc = ferry__bi_tensor(sig.fn, "index", v[2], &index);
    return rc != FERRY_OK ? rc
                          : ferry__bi_tensor_result(ferry_index_select(t, d, index), result);
}

static ferry_status clone_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry__bi_sig sig = {"torch.clone", INPUT, 1, 1};
    const ferry_value *v[1];
    ferry_tensor *t = NULL;
    ferry_status rc = bind_input(&sig, args, kwargs, v, &t);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(ferry_clone(t), result);
}

const ferry__builtin ferry__builtins_tensor[] = {
    {{"torch.sum", "torch.sum(input, dim=None, keepdim=False, *, dtype=None)",
      "sum over every dim, or over dim (an int or a list of ints); int64 stays int64"},
     reduce_fn, NULL, false},
    {{"torch.mean", "torch.mean(input, dim=None, keepdim=False, *, dtype=None)",
      "mean over every dim, or over dim; floating input (or dtype=) only"},
     reduce_fn, (void *)1, false},
    {{"torch.max", "torch.max(input, dim=None, keepdim=False)",
      "the largest element (0-dim), or [values, indices] along dim"},
     extreme_fn, &MAX, false},
    {{"torch.min", "torch.min(input, dim=None, keepdim=False)",
      "the smallest element (0-dim), or [values, indices] along dim"},
     extreme_fn, &MIN, false},
    {{"torch.argmax", "torch.argmax(input, dim=None, keepdim=False)",
      "int64 position of the largest element (of the flattened input without dim)"},
     extreme_fn, &ARGMAX, false},
    {{"torch.argmin", "torch.argmin(input, dim=None, keepdim=False)",
      "int64 position of the smallest element (of the flattened input without dim)"},
     extreme_fn, &ARGMIN, false},
    {{"torch.softmax", "torch.softmax(input, dim, dtype=None)", "softmax along dim"}, softmax_fn,
     NULL, false},
    {{"torch.log_softmax", "torch.log_softmax(input, dim, dtype=None)",
      "log of softmax along dim"},
     softmax_fn, (void *)1, false},
    {{"torch.cat", "torch.cat(tensors, dim=0)", "tensors joined along an existing dim"}, join_fn,
     NULL, false},
    {{"torch.stack", "torch.stack(tensors, dim=0)", "tensors joined along a new dim"}, join_fn,
     (void *)1, false},
    {{"torch.reshape", "torch.reshape(input, shape)",
      "input with a new shape (one size may be -1)"},
     reshape_fn, NULL, false},
    {{"torch.flatten", "torch.flatten(input, start_dim=0, end_dim=-1)",
      "input with dims start_dim..end_dim merged into one"},
     flatten_fn, NULL, false},
    {{"torch.transpose", "torch.transpose(input, dim0, dim1)", "input with two dims swapped"},
     transpose_fn, NULL, false},
    {{"torch.t", "torch.t(input)", "a matrix transposed (<= 2-D input)"}, t_fn, NULL, false},
    {{"torch.squeeze", "torch.squeeze(input, dim=None)",
      "input without its size-1 dims (or without dim when its size is 1)"},
     squeeze_fn, (void *)1, false},
    {{"torch.unsqueeze", "torch.unsqueeze(input, dim)", "input with a size-1 dim inserted at dim"},
     squeeze_fn, NULL, false},
    {{"torch.narrow", "torch.narrow(input, dim, start, length)",
      "length entries of input along dim from start"},
     narrow_fn, NULL, false},
    {{"torch.index_select", "torch.index_select(input, dim, index)",
      "the entries of input along dim at the int64 1-D index"},
     index_select_fn, NULL, false},
    {{"torch.clone", "torch.clone(input)", "a contiguous copy of input"}, clone_fn, NULL, false},
};
const size_t ferry__builtins_tensor_len =
    sizeof ferry__builtins_tensor / sizeof ferry__builtins_tensor[0];
