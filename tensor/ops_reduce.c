/* Reductions (sum, mean, max) and the softmax family. Every kernel sees its input as a
   contiguous [outer, n, inner] block, n being the reduced extent: runs of adjacent reduced dims
   collapse into one n, so a full reduction is a single pass. Floating sums accumulate in double
   (torch accumulates float32 in a wider or pairwise way too); softmax computes in double and
   stores in the input's dtype. */
#include "tensor/ops_internal.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

/* The [outer, n, inner] split of a contiguous shape around dims [d0, d1). */
static void split3(const ferry_tensor *t, int d0, int d1, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = *n = *inner = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (i < d0)
            *outer *= t->sizes[i];
        else if (i < d1)
            *n *= t->sizes[i];
        else
            *inner *= t->sizes[i];
    }
}

static void sum_pass_typed(ferry_dtype dt, const void *src, void *dst, int64_t outer, int64_t n,
                           int64_t inner, double *acc)
{
    for (int64_t o = 0; o < outer; o++) {
        if (dt == FERRY_INT64) {
            const int64_t *x = (const int64_t *)src + o * n * inner;
            int64_t *y = (int64_t *)dst + o * inner;
            for (int64_t j = 0; j < inner; j++)
                y[j] = 0;
            for (int64_t k = 0; k < n; k++)
                for (int64_t j = 0; j < inner; j++)
                    y[j] = (int64_t)((uint64_t)y[j] + (uint64_t)x[k * inner + j]);
            continue;
        }
        for (int64_t j = 0; j < inner; j++)
            acc[j] = 0.0;
        if (dt == FERRY_FLOAT32) {
            const float *x = (const float *)src + o * n * inner;
            for (int64_t k = 0; k < n; k++)
                for (int64_t j = 0; j < inner; j++)
                    acc[j] += x[k * inner + j];
            for (int64_t j = 0; j < inner; j++)
                ((float *)dst)[o * inner + j] = (float)acc[j];
        } else {
            const double *x = (const double *)src + o * n * inner;
            for (int64_t k = 0; k < n; k++)
                for (int64_t j = 0; j < inner; j++)
                    acc[j] += x[k * inner + j];
            for (int64_t j = 0; j < inner; j++)
                ((double *)dst)[o * inner + j] = acc[j];
        }
    }
}

/* Sums the contiguous `x` over dims [d0, d1) keeping them as size 1; a new tensor. */
static ferry_tensor *sum_pass(ferry_tensor *x, int d0, int d1)
{
    int64_t outer, n, inner, sizes[FERRY_MAX_DIMS];
    split3(x, d0, d1, &outer, &n, &inner);
    memcpy(sizes, x->sizes, sizeof sizes);
    for (int i = d0; i < d1; i++)
        sizes[i] = 1;
    ferry_tensor *out = ferry_tensor_empty(x->ndim, sizes, x->dtype, x->device);
#ifdef FERRY_WITH_CUDA
    if (out != NULL && ferry__use_kernels(1, &x)) {
        if (ferry__k_sum(x->device.index, x->dtype, ferry__kdata(x), ferry__kdata(out), outer, n,
                         inner) != FERRY_OK) {
            ferry_tensor_release(out);
            return NULL;
        }
        return out;
    }
#endif
    double *acc = out ? ferry__malloc((size_t)(inner > 0 ? inner : 1) * sizeof(double)) : NULL;
    if (out != NULL && acc == NULL) {
        ferry_tensor_release(out);
        return ferry__fail_null(FERRY_ENOMEM, "sum: out of memory");
    }
    if (out != NULL)
        sum_pass_typed(x->dtype, ferry_tensor_data(x), ferry_tensor_data(out), outer, n, inner, acc);
    ferry__free(acc);
    return out;
}

/* Marks the dims to reduce (all when ndims is 0); FERRY_EINVAL for bad or repeated dims. */
static ferry_status reduced_mask(const ferry_tensor *t, int ndims, const int *dims, bool *mask)
{
    memset(mask, 0, FERRY_MAX_DIMS * sizeof(bool));
    if (ndims == 0 || dims == NULL) {
        for (int i = 0; i < t->ndim; i++)
            mask[i] = true;
        return FERRY_OK;
    }
    for (int i = 0; i < ndims; i++) {
        int d;
        if (ferry__wrap_dim(dims[i], t->ndim, &d) != FERRY_OK)
            return FERRY_EINVAL;
        if (t->ndim == 0)
            continue;
        if (mask[d])
            return ferry__fail(FERRY_EINVAL, "dim %d appears multiple times in the list of dims", d);
        mask[d] = true;
    }
    return FERRY_OK;
}

/* The output shape of a reduction: keepdim keeps 1s, otherwise the reduced dims go. */
static int reduced_shape(const ferry_tensor *t, const bool *mask, bool keepdim, int64_t *sizes)
{
    int nd = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (!mask[i])
            sizes[nd++] = t->sizes[i];
        else if (keepdim)
            sizes[nd++] = 1;
    }
    return nd;
}

ferry_tensor *ferry__sum_dims_raw(ferry_tensor *t, int ndims, const int *dims, bool keepdim)
{
    bool mask[FERRY_MAX_DIMS];
    int64_t sizes[FERRY_MAX_DIMS];
    bool k = ferry__use_kernels(1, &t);
    if (!k)
        FERRY__STAGE(1, &t, h, ferry__sum_dims_raw(h[0], ndims, dims, keepdim));
    if (ferry__check_operand(t, "sum", k) != FERRY_OK ||
        reduced_mask(t, ndims, dims, mask) != FERRY_OK)
        return NULL;
    ferry_tensor *cur = ferry_tensor_contiguous(t);
    for (int d = 0; cur != NULL && d < t->ndim;) {
        if (!mask[d]) {
            d++;
            continue;
        }
        int e = d;
        while (e < t->ndim && mask[e])
            e++;
        ferry_tensor *next = sum_pass(cur, d, e);
        ferry_tensor_release(cur);
        cur = next;
        d = e;
    }
    if (cur == t) { /* nothing reduced (a 0-dim input): still a new tensor, as torch */
        ferry_tensor_release(cur);
        cur = ferry_tensor_clone_data(t);
    }
    if (cur == NULL)
        return NULL;
    int nd = reduced_shape(t, mask, keepdim, sizes);
    ferry_tensor *out = ferry_tensor_reshape(cur, nd, sizes);
    ferry_tensor_release(cur);
    return out;
}

static ferry_tensor *record_reduce(ferry_tensor *out, ferry__op op, ferry_tensor *t, int ndims,
                                   const int *dims, bool keepdim)
{
    bool mask[FERRY_MAX_DIMS];
    if (out == NULL)
        return NULL;
    ferry__op_record rec = {.op = op, .n_inputs = 1, .inputs = &t};
    reduced_mask(t, ndims, dims, mask); /* already validated by the kernel */
    for (int i = 0; i < t->ndim; i++)
        if (mask[i])
            rec.ints[rec.n_ints++] = i;
    rec.ints[rec.n_ints++] = keepdim;
    return ferry__ops_record(out, &rec);
}

ferry_tensor *ferry_sum_dim(ferry_tensor *t, int ndims, const int *dims, bool keepdim)
{
    return record_reduce(ferry__sum_dims_raw(t, ndims, dims, keepdim), FERRY__OP_SUM, t, ndims,
                         dims, keepdim);
}

ferry_tensor *ferry_sum(ferry_tensor *t)
{
    return ferry_sum_dim(t, 0, NULL, false);
}

static ferry_tensor *mean_raw(ferry_tensor *t, int ndims, const int *dims, bool keepdim)
{
    bool mask[FERRY_MAX_DIMS];
    bool k = ferry__use_kernels(1, &t);
    if (!k)
        FERRY__STAGE(1, &t, h, mean_raw(h[0], ndims, dims, keepdim));
    if (ferry__check_operand(t, "mean", k) != FERRY_OK ||
        reduced_mask(t, ndims, dims, mask) != FERRY_OK)
        return NULL;
    if (!ferry__is_floating(t->dtype))
        return ferry__fail_null(FERRY_EINVAL,
                                "mean(): could not infer output dtype. Input dtype must be either "
                                "a floating point or complex dtype. Got: Long");
    int64_t count = 1;
    for (int i = 0; i < t->ndim; i++)
        if (mask[i])
            count *= t->sizes[i];
    ferry_tensor *s = ferry__sum_dims_raw(t, ndims, dims, keepdim);
    if (s == NULL)
        return NULL;
    int64_t n = ferry_tensor_numel(s);
#ifdef FERRY_WITH_CUDA
    if (k) { /* s /= count on the device, in s's dtype as below */
        ferry_tensor *c = ferry_scalar_tensor((double)count, s->dtype);
        ferry_status rc = c ? ferry__kern_binary(FERRY__K_DIV, s, s, c, 1.0) : ferry_last_status();
        ferry_tensor_release(c);
        if (rc != FERRY_OK) {
            ferry_tensor_release(s);
            return NULL;
        }
        return s;
    }
#endif
    /* torch divides by the count; 0/0 gives NaN for an empty reduction, as torch. */
    if (s->dtype == FERRY_FLOAT32)
        for (int64_t i = 0; i < n; i++)
            ((float *)ferry_tensor_data(s))[i] /= (float)count;
    else
        for (int64_t i = 0; i < n; i++)
            ((double *)ferry_tensor_data(s))[i] /= (double)count;
    return s;
}

ferry_tensor *ferry_mean_dim(ferry_tensor *t, int ndims, const int *dims, bool keepdim)
{
    return record_reduce(mean_raw(t, ndims, dims, keepdim), FERRY__OP_MEAN, t, ndims, dims,
                         keepdim);
}

ferry_tensor *ferry_mean(ferry_tensor *t)
{
    return ferry_mean_dim(t, 0, NULL, false);
}

/* True when element i beats element j for max (NaN wins, as torch propagates it). */
static bool beats(const char *p, ferry_dtype dt, int64_t i, int64_t j)
{
    if (dt == FERRY_INT64)
        return ((const int64_t *)p)[i] > ((const int64_t *)p)[j];
    double x = dt == FERRY_FLOAT32 ? ((const float *)p)[i] : ((const double *)p)[i];
    double y = dt == FERRY_FLOAT32 ? ((const float *)p)[j] : ((const double *)p)[j];
    return (x > y || isnan(x)) && !isnan(y);
}

/* Values and positions of the maxima over the middle extent of [outer, n, inner]. */
static void max_pass(const char *x, ferry_dtype dt, int64_t outer, int64_t n, int64_t inner,
                     char *vals, int64_t *idx)
{
    size_t es = ferry_dtype_size(dt);
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t j = 0; j < inner; j++) {
            int64_t base = o * n * inner + j, best = 0;
            for (int64_t k = 1; k < n; k++)
                if (beats(x, dt, base + k * inner, base + best * inner))
                    best = k;
            memcpy(vals + (size_t)(o * inner + j) * es, x + (size_t)(base + best * inner) * es, es);
            if (idx != NULL)
                idx[o * inner + j] = best;
        }
    }
}

static ferry_tensor *max_raw(ferry_tensor *t)
{
    bool k = ferry__use_kernels(1, &t);
    if (!k)
        FERRY__STAGE(1, &t, h, max_raw(h[0]));
    if (ferry__check_operand(t, "max", k) != FERRY_OK)
        return NULL;
    if (ferry_tensor_numel(t) == 0)
        return ferry__fail_null(FERRY_EINVAL,
                                "max(): Expected reduction dim to be specified for input.numel() "
                                "== 0. Specify the reduction dim with the 'dim' argument.");
    ferry_tensor *x = ferry_tensor_contiguous(t);
    ferry_tensor *out = x ? ferry_tensor_empty(0, NULL, t->dtype, t->device) : NULL;
#ifdef FERRY_WITH_CUDA
    if (out != NULL && k) {
        if (ferry__k_max(t->device.index, t->dtype, ferry__kdata(x), ferry__kdata(out), NULL, 1,
                         ferry_tensor_numel(t), 1) != FERRY_OK) {
            ferry_tensor_release(out);
            out = NULL;
        }
        ferry_tensor_release(x);
        return out;
    }
#endif
    if (out != NULL)
        max_pass(ferry_tensor_data(x), t->dtype, 1, ferry_tensor_numel(t), 1,
                 ferry_tensor_data(out), NULL);
    ferry_tensor_release(x);
    return out;
}

ferry_tensor *ferry_max(ferry_tensor *t)
{
    ferry_tensor *out = max_raw(t);
    if (out == NULL)
        return NULL;
    ferry__op_record rec = {.op = FERRY__OP_MAX, .n_inputs = 1, .inputs = &t, .n_saved = 2,
                            .saved = {t, out}};
    return ferry__ops_record(out, &rec);
}

/* The values of max over dim d, and in *idx their positions. */
static ferry_tensor *max_dim_raw(ferry_tensor *t, int d, bool keepdim, ferry_tensor **idx_out)
{
    int64_t outer, n, inner, sizes[FERRY_MAX_DIMS];
    bool mask[FERRY_MAX_DIMS];
    bool k = ferry__use_kernels(1, &t);
    if (!k && ferry__needs_staging(1, &t)) {
        ferry_tensor *h, *hidx = NULL;
        ferry_device dev;
        if (ferry__stage_in(1, &t, &h, &dev) != FERRY_OK)
            return NULL;
        ferry_tensor *vals = ferry__stage_out(max_dim_raw(h, d, keepdim, &hidx), dev);
        ferry_tensor_release(h);
        *idx_out = vals ? ferry__stage_out(hidx, dev) : (ferry_tensor_release(hidx), NULL);
        if (vals != NULL && *idx_out == NULL) {
            ferry_tensor_release(vals);
            return NULL;
        }
        return vals;
    }
    if (ferry__check_operand(t, "max", k) != FERRY_OK)
        return NULL;
    int nd = t->ndim > 0 ? t->ndim : 0;
    split3(t, d, nd > 0 ? d + 1 : 0, &outer, &n, &inner);
    if (n == 0)
        return ferry__fail_null(FERRY_EINVAL,
                                "max(): Expected reduction dim %d to have non-zero size.", d);
    memset(mask, 0, sizeof mask);
    mask[d] = t->ndim > 0;
    int ond = reduced_shape(t, mask, keepdim, sizes);
    ferry_tensor *x = ferry_tensor_contiguous(t);
    ferry_tensor *vals = x ? ferry_tensor_empty(ond, sizes, t->dtype, t->device) : NULL;
    ferry_tensor *idx = vals ? ferry_tensor_empty(ond, sizes, FERRY_INT64, t->device) : NULL;
#ifdef FERRY_WITH_CUDA
    if (idx != NULL && k &&
        ferry__k_max(t->device.index, t->dtype, ferry__kdata(x), ferry__kdata(vals),
                     ferry__kdata(idx), outer, n, inner) != FERRY_OK) {
        ferry_tensor_release(idx);
        idx = NULL;
    }
    if (!k && idx != NULL)
#else
    if (idx != NULL)
#endif
        max_pass(ferry_tensor_data(x), t->dtype, outer, n, inner, ferry_tensor_data(vals),
                 ferry_tensor_data(idx));
    ferry_tensor_release(x);
    if (idx == NULL) {
        ferry_tensor_release(vals);
        return NULL;
    }
    *idx_out = idx;
    return vals;
}

ferry_tensor *ferry_max_dim(ferry_tensor *t, int dim, bool keepdim, ferry_tensor **indices)
{
    int d;
    ferry_tensor *idx = NULL;
    if (ferry__check_dtype(t, "max") != FERRY_OK || ferry__wrap_dim(dim, t->ndim, &d) != FERRY_OK)
        return NULL;
    ferry_tensor *vals = max_dim_raw(t, d, keepdim, &idx);
    if (vals == NULL)
        return NULL;
    ferry__op_record rec = {.op = FERRY__OP_MAX_DIM, .n_inputs = 1, .inputs = &t, .n_saved = 1,
                            .saved = {idx}, .n_ints = 2, .ints = {d, keepdim}};
    vals = ferry__ops_record(vals, &rec);
    if (vals != NULL && indices != NULL)
        *indices = idx;
    else
        ferry_tensor_release(idx);
    return vals;
}

/* ---- softmax family, computed on a float64 copy ---- */

typedef enum { SM_SOFTMAX, SM_LOG_SOFTMAX, SM_SOFTMAX_BACK, SM_LOG_SOFTMAX_BACK } sm_kind;

/* One [n] line with stride `inner`: forward from x into y, or backward from (g, y) into y's
   gradient written over g's copy `o`. */
static void sm_line(sm_kind kind, int64_t n, int64_t st, const double *x, const double *g, double *o)
{
    if (kind == SM_SOFTMAX || kind == SM_LOG_SOFTMAX) {
        double m = -INFINITY, s = 0.0;
        for (int64_t k = 0; k < n; k++)
            m = x[k * st] > m || isnan(x[k * st]) ? x[k * st] : m;
        if (isinf(m) && m < 0)
            m = 0.0; /* an all -inf line: keep exp(x - m) finite-defined (gives NaN like torch) */
        for (int64_t k = 0; k < n; k++)
            s += exp(x[k * st] - m);
        double ls = log(s);
        for (int64_t k = 0; k < n; k++)
            o[k * st] = kind == SM_SOFTMAX ? exp(x[k * st] - m) / s : x[k * st] - m - ls;
        return;
    }
    double s = 0.0; /* x is the forward result y here */
    for (int64_t k = 0; k < n; k++)
        s += kind == SM_SOFTMAX_BACK ? g[k * st] * x[k * st] : g[k * st];
    for (int64_t k = 0; k < n; k++)
        o[k * st] = kind == SM_SOFTMAX_BACK ? x[k * st] * (g[k * st] - s)
                                            : g[k * st] - exp(x[k * st]) * s;
}

/* Runs `kind` along dim of x (and g for backward), returning a tensor of x's dtype. */
static ferry_tensor *sm_run(sm_kind kind, ferry_tensor *x, ferry_tensor *g, int dim, const char *name)
{
    int d;
    int64_t outer, n, inner;
    ferry_tensor *ins[2] = {x, g};
    ferry_device dev;
    bool k = ferry__use_kernels(2, ins);
    if (!k)
        FERRY__STAGE(2, ins, h, sm_run(kind, h[0], h[1], dim, name));
    if (ferry__check_operand(x, name, k) != FERRY_OK ||
        ferry__wrap_dim(dim, x->ndim, &d) != FERRY_OK ||
        (g != NULL && ferry__check_operand(g, name, k) != FERRY_OK) ||
        ferry__check_devices(2, ins, &dev) != FERRY_OK)
        return NULL;
    if (!ferry__is_floating(x->dtype))
        return ferry__fail_null(FERRY_EINVAL, "\"%s\" not implemented for 'Long'", name);
    split3(x, d, x->ndim > 0 ? d + 1 : 0, &outer, &n, &inner);
    ferry_tensor *xd = ferry__contig_dtype(x, FERRY_FLOAT64);
    ferry_tensor *gd = xd && g ? ferry__contig_dtype(g, FERRY_FLOAT64) : NULL;
    ferry_tensor *od = xd && (gd || !g) ? ferry_tensor_empty(x->ndim, x->sizes, FERRY_FLOAT64,
                                                             x->device)
                                        : NULL;
    ferry_tensor *out = NULL;
#ifdef FERRY_WITH_CUDA
    if (od != NULL && k) { /* sm_kind's order is the kernels' */
        if (ferry__k_softmax(x->device.index, (int)kind, ferry__kdata(xd),
                             gd ? ferry__kdata(gd) : NULL, ferry__kdata(od), outer, n,
                             inner) == FERRY_OK)
            out = ferry__to_dtype_ref(od, x->dtype);
        ferry_tensor_release(xd);
        ferry_tensor_release(gd);
        ferry_tensor_release(od);
        return out;
    }
#endif
    if (od != NULL) {
        const double *xp = ferry_tensor_data(xd), *gp = gd ? ferry_tensor_data(gd) : NULL;
        double *op = ferry_tensor_data(od);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < inner; j++) {
                int64_t base = o * n * inner + j;
                sm_line(kind, n, inner, xp + base, gp ? gp + base : NULL, op + base);
            }
        out = ferry__to_dtype_ref(od, x->dtype);
    }
    ferry_tensor_release(xd);
    ferry_tensor_release(gd);
    ferry_tensor_release(od);
    return out;
}

static ferry_tensor *softmax_op(sm_kind kind, ferry__op op, ferry_tensor *t, int dim)
{
    ferry_tensor *out = sm_run(kind, t, NULL, dim, kind == SM_SOFTMAX ? "softmax" : "log_softmax");
    if (out == NULL)
        return NULL;
    int d;
    ferry__wrap_dim(dim, t->ndim, &d);
    ferry__op_record rec = {.op = op, .n_inputs = 1, .inputs = &t, .n_saved = 1, .saved = {out},
                            .n_ints = 1, .ints = {d}};
    return ferry__ops_record(out, &rec);
}

ferry_tensor *ferry_softmax(ferry_tensor *t, int dim)
{
    return softmax_op(SM_SOFTMAX, FERRY__OP_SOFTMAX, t, dim);
}

ferry_tensor *ferry_log_softmax(ferry_tensor *t, int dim)
{
    return softmax_op(SM_LOG_SOFTMAX, FERRY__OP_LOG_SOFTMAX, t, dim);
}

ferry_tensor *ferry__softmax_backward(ferry_tensor *grad, ferry_tensor *result, int dim)
{
    return sm_run(SM_SOFTMAX_BACK, result, grad, dim, "softmax_backward");
}

ferry_tensor *ferry__log_softmax_backward(ferry_tensor *grad, ferry_tensor *result, int dim)
{
    return sm_run(SM_LOG_SOFTMAX_BACK, result, grad, dim, "log_softmax_backward");
}
