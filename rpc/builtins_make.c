/* The builtins that make tensors: torch.ones, zeros, full, arange, eye, rand, randn and tensor
   (from a nested list of numbers), with torch's dtype inference (float32 by default; full, arange
   and tensor infer int64 from ints and bool from bools). Every size is the caller's choice, so
   each result is refused past builtin_max_bytes before anything is allocated. rand and randn
   draw from this worker's default generator: their values are not torch's stream. */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/ops.h"
#include "rpc/builtins_impl.h"

static const char *const SIZE_DTYPE[] = {"size", "dtype", NULL};

typedef enum { MAKE_ONES, MAKE_ZEROS, MAKE_RAND, MAKE_RANDN } make_kind;

static const struct {
    const char *name;
} make_names[] = {{"torch.ones"}, {"torch.zeros"}, {"torch.rand"}, {"torch.randn"}};

/* torch.ones(*size, dtype=None) and its kin: sizes by position (or one list), or size=. */
static ferry_status make_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    make_kind kind = (make_kind)(intptr_t)user;
    const char *fn = make_names[kind].name;
    ferry__bi_sig sig = {fn, SIZE_DTYPE, 0, 0};
    const ferry_value *v[2];
    int64_t sizes[FERRY_MAX_DIMS];
    int n = 0;
    ferry_dtype dtype = FERRY_FLOAT32;
    ferry_status rc = ferry__bi_bind(&sig, NULL, kwargs, v);
    if (rc == FERRY_OK)
        rc = ferry__bi_sizes(fn, args, v[0], sizes, &n);
    if (rc == FERRY_OK)
        rc = ferry__bi_dtype(fn, v[1], FERRY_FLOAT32, &dtype);
    if (rc == FERRY_OK)
        rc = ferry__bi_check_cap(fn, n, sizes, dtype);
    if (rc != FERRY_OK)
        return rc;
    ferry_tensor *t = kind == MAKE_ONES    ? ferry_ones(n, sizes, dtype)
                      : kind == MAKE_ZEROS ? ferry_zeros(n, sizes, dtype)
                      : kind == MAKE_RAND  ? ferry_rand(n, sizes, dtype, NULL)
                                           : ferry_randn(n, sizes, dtype, NULL);
    return ferry__bi_tensor_result(t, result);
}

/* torch's dtype for a Python number: bool, int64 for ints, float32 (the default) for floats. */
static ferry_dtype number_dtype(const ferry_value *v)
{
    ferry_kind k = ferry_value_kind(v);
    return k == FERRY_VALUE_BOOL ? FERRY_BOOL : k == FERRY_VALUE_INT ? FERRY_INT64 : FERRY_FLOAT32;
}

static ferry_status full_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    static const char *const names[] = {"size", "fill_value", "dtype", NULL};
    const char *fn = "torch.full";
    ferry__bi_sig sig = {fn, names, 2, 2};
    const ferry_value *v[3];
    int64_t sizes[FERRY_MAX_DIMS];
    int n = 0;
    double fill = 0;
    ferry_dtype dtype = FERRY_FLOAT32;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = ferry__bi_int_list(fn, "size", v[0], sizes, &n);
    if (rc == FERRY_OK)
        rc = ferry__bi_number(fn, "fill_value", v[1], &fill);
    if (rc == FERRY_OK)
        rc = ferry__bi_dtype(fn, v[2], number_dtype(v[1]), &dtype);
    if (rc == FERRY_OK)
        rc = ferry__bi_check_cap(fn, n, sizes, dtype);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(ferry_full(n, sizes, fill, dtype), result);
}

/* torch.arange(end), arange(start, end) or arange(start, end, step). */
static ferry_status arange_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    static const char *const names[] = {"start", "end", "step", "dtype", NULL};
    const char *fn = "torch.arange";
    ferry__bi_sig sig = {fn, names, 3, 1};
    const ferry_value *v[4];
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc != FERRY_OK)
        return rc;
    if (!v[1]) { /* one bound: it is the end */
        v[1] = v[0];
        v[0] = NULL;
    }
    double x[3] = {0, 0, 1};
    static const char *const params[] = {"start", "end", "step"};
    bool any_float = false;
    for (int i = 0; i < 3 && rc == FERRY_OK; i++)
        if (v[i]) {
            rc = ferry__bi_number(fn, params[i], v[i], &x[i]);
            any_float = any_float || ferry_value_kind(v[i]) == FERRY_VALUE_DOUBLE;
        }
    ferry_dtype dtype = FERRY_FLOAT32;
    if (rc == FERRY_OK)
        rc = ferry__bi_dtype(fn, v[3], any_float ? FERRY_FLOAT32 : FERRY_INT64, &dtype);
    if (rc != FERRY_OK)
        return rc;
    double len = x[2] != 0 ? ceil((x[1] - x[0]) / x[2]) : 0;
    if (isfinite(len) && len > 0) {
        int64_t n = len < 0x1p62 ? (int64_t)len : INT64_MAX;
        if ((rc = ferry__bi_check_cap(fn, 1, &n, dtype)) != FERRY_OK)
            return rc;
    }
    return ferry__bi_tensor_result(ferry_arange(x[0], x[1], x[2], dtype), result);
}

/* torch.eye(n, m=None, dtype=None): ones on the diagonal of an n x m matrix. */
static ferry_status eye_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    static const char *const names[] = {"n", "m", "dtype", NULL};
    const char *fn = "torch.eye";
    ferry__bi_sig sig = {fn, names, 2, 1};
    const ferry_value *v[3];
    int64_t size[2] = {0, 0};
    ferry_dtype dtype = FERRY_FLOAT32;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(fn, "n", v[0], 0, &size[0]);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(fn, "m", v[1], size[0], &size[1]);
    if (rc == FERRY_OK && (size[0] < 0 || size[1] < 0))
        rc = ferry__fail(FERRY_EINVAL, "%s(): %s must be greater or equal to 0, got %lld", fn,
                         size[0] < 0 ? "n" : "m", (long long)(size[0] < 0 ? size[0] : size[1]));
    if (rc == FERRY_OK)
        rc = ferry__bi_dtype(fn, v[2], FERRY_FLOAT32, &dtype);
    if (rc == FERRY_OK)
        rc = ferry__bi_check_cap(fn, 2, size, dtype);
    if (rc != FERRY_OK)
        return rc;
    /* The dtype's own bytes for 1 (float16 and bfloat16 included) copied onto the diagonal. */
    ferry_tensor *one = ferry_ones(0, NULL, dtype);
    ferry_tensor *t = one ? ferry_zeros(2, size, dtype) : NULL;
    if (t) {
        size_t es = ferry_dtype_size(dtype);
        char *p = ferry_tensor_data(t);
        int64_t k = size[0] < size[1] ? size[0] : size[1];
        for (int64_t i = 0; i < k; i++)
            memcpy(p + (size_t)(i * size[1] + i) * es, ferry_tensor_data(one), es);
    }
    ferry_tensor_release(one);
    return ferry__bi_tensor_result(t, result);
}

/* The data of torch.tensor(data): its shape, then its numbers in row-major order. */
typedef struct {
    int ndim;
    int64_t sizes[FERRY_MAX_DIMS];
    bool any_float, any_int;
    double *vals;
    int64_t *ints;
    int64_t n;
} nested;

static ferry_status walk(const char *fn, const ferry_value *v, int depth, nested *d, bool fill)
{
    if (ferry_value_kind(v) != FERRY_VALUE_LIST) {
        if (!ferry__bi_is_number(v))
            return ferry__fail(FERRY_EINVAL, "%s(): data must be a number or a nested list of "
                               "numbers, not %s", fn, ferry__bi_type(v));
        if (depth != d->ndim)
            return ferry__fail(FERRY_EINVAL, "%s(): expected a sequence at dim %d (got %s)", fn,
                               depth, ferry__bi_type(v));
        if (fill) {
            d->ints[d->n] = ferry_value_kind(v) == FERRY_VALUE_INT ? ferry_value_as_int(v) : 0;
            d->vals[d->n++] = ferry_value_kind(v) == FERRY_VALUE_BOOL ? ferry_value_as_bool(v)
                                                                       : ferry_value_as_double(v);
        }
        d->any_float = d->any_float || ferry_value_kind(v) == FERRY_VALUE_DOUBLE;
        d->any_int = d->any_int || ferry_value_kind(v) == FERRY_VALUE_INT;
        return FERRY_OK;
    }
    size_t len = ferry_list_len(v);
    if (depth >= d->ndim)
        return ferry__fail(FERRY_EINVAL, "%s(): expected a number at dim %d (got a list)", fn,
                           depth);
    if ((int64_t)len != d->sizes[depth])
        return ferry__fail(FERRY_EINVAL, "%s(): expected sequence of length %lld at dim %d "
                           "(got %zu)", fn, (long long)d->sizes[depth], depth, len);
    for (size_t i = 0; i < len; i++) {
        ferry_status rc = walk(fn, ferry_list_get(v, i), depth + 1, d, fill);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

/* The tensor of data's numbers in `dtype`, or their inferred one. */
static ferry_tensor *from_nested(nested *d, const ferry_value *dtype_v, ferry_dtype inferred)
{
    ferry_dtype dtype;
    if (ferry__bi_dtype("torch.tensor", dtype_v, inferred, &dtype) != FERRY_OK)
        return NULL;
    int64_t numel = d->n;
    bool exact_ints = d->any_int && !d->any_float;
    ferry_tensor *raw = exact_ints
                            ? ferry_tensor_from_data(numel ? (void *)d->ints : NULL, d->ndim,
                                                     d->sizes, FERRY_INT64)
                            : ferry_tensor_from_data(numel ? (void *)d->vals : NULL, d->ndim,
                                                     d->sizes, FERRY_FLOAT64);
    ferry_tensor *t = raw && ferry_tensor_dtype(raw) != dtype ? ferry_tensor_to_dtype(raw, dtype)
                                                               : ferry_tensor_retain(raw);
    ferry_tensor_release(raw);
    return t;
}

static ferry_status tensor_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    static const char *const names[] = {"data", "dtype", NULL};
    const char *fn = "torch.tensor";
    ferry__bi_sig sig = {fn, names, 1, 1};
    const ferry_value *v[2];
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc != FERRY_OK)
        return rc;
    nested d = {0};
    int64_t numel = 1;
    for (const ferry_value *x = v[0]; ferry_value_kind(x) == FERRY_VALUE_LIST;) {
        if (d.ndim == FERRY_MAX_DIMS)
            return ferry__fail(FERRY_EINVAL, "%s(): more than %d nested lists", fn,
                               FERRY_MAX_DIMS);
        d.sizes[d.ndim++] = (int64_t)ferry_list_len(x);
        numel *= d.sizes[d.ndim - 1];
        x = ferry_list_len(x) ? ferry_list_get(x, 0) : NULL;
    }
    if ((rc = walk(fn, v[0], 0, &d, false)) != FERRY_OK)
        return rc;
    d.vals = ferry__malloc((size_t)(numel ? numel : 1) * sizeof *d.vals);
    d.ints = ferry__malloc((size_t)(numel ? numel : 1) * sizeof *d.ints);
    if (!d.vals || !d.ints)
        rc = ferry__fail(FERRY_ENOMEM, "%s(): out of memory for %lld numbers", fn,
                         (long long)numel);
    if (rc == FERRY_OK)
        walk(fn, v[0], 0, &d, true);
    ferry_dtype inferred = d.any_float ? FERRY_FLOAT32 : d.any_int ? FERRY_INT64
                           : numel > 0 ? FERRY_BOOL : FERRY_FLOAT32;
    ferry_tensor *t = rc == FERRY_OK ? from_nested(&d, v[1], inferred) : NULL;
    ferry__free(d.vals);
    ferry__free(d.ints);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(t, result);
}

const ferry__builtin ferry__builtins_make[] = {
    {{"torch.ones", "torch.ones(*size, dtype=None)", "a tensor of ones (float32 by default)"},
     make_fn, (void *)MAKE_ONES, false},
    {{"torch.zeros", "torch.zeros(*size, dtype=None)", "a tensor of zeros (float32 by default)"},
     make_fn, (void *)MAKE_ZEROS, false},
    {{"torch.full", "torch.full(size, fill_value, *, dtype=None)",
      "a tensor filled with fill_value (dtype inferred from it)"},
     full_fn, NULL, false},
    {{"torch.arange", "torch.arange(start=0, end, step=1, *, dtype=None)",
      "start, start + step, ... below end (int64 from ints, else float32)"},
     arange_fn, NULL, false},
    {{"torch.eye", "torch.eye(n, m=None, *, dtype=None)", "an n x m matrix with ones on the diagonal"},
     eye_fn, NULL, false},
    {{"torch.rand", "torch.rand(*size, dtype=None)",
      "uniform samples in [0, 1) (floating dtypes; not torch's random stream)"},
     make_fn, (void *)MAKE_RAND, false},
    {{"torch.randn", "torch.randn(*size, dtype=None)",
      "standard normal samples (floating dtypes; not torch's random stream)"},
     make_fn, (void *)MAKE_RANDN, false},
    {{"torch.tensor", "torch.tensor(data, *, dtype=None)",
      "a tensor of a number or nested list of numbers (int64, float32 or bool inferred)"},
     tensor_fn, NULL, false},
};
const size_t ferry__builtins_make_len = sizeof ferry__builtins_make / sizeof ferry__builtins_make[0];
