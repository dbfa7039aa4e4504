/* Views and copies: view/reshape (torch's rules for when strides can express a new shape),
   transpose, slice, narrow, and the element copies behind contiguous, clone_data, copy_ and
   to_dtype. Views only rewrite geometry over the same storage. Copies walk both tensors with a
   strided iterator that first merges dimensions that are contiguous with each other in both
   operands and drops size-1 dimensions, so a copy between two contiguous tensors is a single
   memcpy and a transposed copy is a tight loop over runs of its innermost dimension. */
#include "tensor/ops_internal.h"

#include <string.h>

#include "core/error.h"
#include "tensor/device.h"

/* Iterates two strided geometries of one shape together, as runs along the innermost merged
   dimension: each run has `inner` elements at off[k] + j * inner_stride[k]. */
typedef struct {
    int ndim; /* outer dims after merging; the run dimension is kept separately */
    int64_t sizes[FERRY_MAX_DIMS];
    int64_t strides[2][FERRY_MAX_DIMS];
    int64_t index[FERRY_MAX_DIMS];
    int64_t inner, inner_stride[2];
    int64_t off[2];
    bool started, done;
} pair_iter;

static void iter_init(pair_iter *it, int ndim, const int64_t *sizes, const int64_t *s0,
                      const int64_t *s1, int64_t off0, int64_t off1)
{
    int64_t sz[FERRY_MAX_DIMS], st[2][FERRY_MAX_DIMS];
    int n = 0;
    memset(it, 0, sizeof *it);
    for (int d = 0; d < ndim; d++) {
        if (sizes[d] == 1)
            continue;
        /* merge into the previous (outer) dim when it steps exactly over this one in both */
        if (n > 0 && st[0][n - 1] == s0[d] * sizes[d] && st[1][n - 1] == s1[d] * sizes[d]) {
            sz[n - 1] *= sizes[d];
            st[0][n - 1] = s0[d];
            st[1][n - 1] = s1[d];
            continue;
        }
        sz[n] = sizes[d];
        st[0][n] = s0[d];
        st[1][n] = s1[d];
        n++;
    }
    it->off[0] = off0;
    it->off[1] = off1;
    it->done = ferry__shape_numel(ndim, sizes) == 0;
    if (n == 0) { /* a single element */
        it->inner = 1;
        return;
    }
    it->inner = sz[n - 1];
    it->inner_stride[0] = st[0][n - 1];
    it->inner_stride[1] = st[1][n - 1];
    it->ndim = n - 1;
    for (int d = 0; d < n - 1; d++) {
        it->sizes[d] = sz[d];
        it->strides[0][d] = st[0][d];
        it->strides[1][d] = st[1][d];
    }
}

/* Moves to the next run (the first call yields the first run); false when there is none. */
static bool iter_next(pair_iter *it)
{
    if (it->done)
        return false;
    if (!it->started) {
        it->started = true;
        return true;
    }
    for (int d = it->ndim - 1; d >= 0; d--) {
        it->off[0] += it->strides[0][d];
        it->off[1] += it->strides[1][d];
        if (++it->index[d] < it->sizes[d])
            return true;
        it->off[0] -= it->strides[0][d] * it->sizes[d];
        it->off[1] -= it->strides[1][d] * it->sizes[d];
        it->index[d] = 0;
    }
    it->done = true;
    return false;
}

static bool is_integral(ferry_dtype dtype)
{
    return dtype == FERRY_INT64 || dtype == FERRY_INT32 || dtype == FERRY_UINT8 ||
           dtype == FERRY_BOOL;
}

static int64_t load_int(const void *p, ferry_dtype dtype)
{
    switch (dtype) {
    case FERRY_INT64: return *(const int64_t *)p;
    case FERRY_INT32: return *(const int32_t *)p;
    default: return *(const uint8_t *)p; /* uint8 and bool */
    }
}

static void store_int(void *p, ferry_dtype dtype, int64_t v)
{
    switch (dtype) {
    case FERRY_INT64: *(int64_t *)p = v; break;
    case FERRY_INT32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v; break;
    case FERRY_BOOL: *(uint8_t *)p = v != 0; break;
    default: *(uint8_t *)p = (uint8_t)(uint64_t)v; break;
    }
}

/* One run of same-dtype elements: memcpy when both sides are dense, typed loops otherwise. */
#define COPY_RUN(type)                                                                   \
    do {                                                                                 \
        type *dp = (type *)d;                                                            \
        const type *sp = (const type *)s;                                                \
        for (int64_t j = 0; j < n; j++)                                                  \
            dp[j * ds] = sp[j * ss];                                                     \
    } while (0)

static void copy_run_same(char *d, const char *s, int64_t n, int64_t ds, int64_t ss, size_t elem)
{
    if (ds == 1 && ss == 1) {
        memcpy(d, s, (size_t)n * elem);
        return;
    }
    switch (elem) {
    case 1: COPY_RUN(uint8_t); break;
    case 2: COPY_RUN(uint16_t); break;
    case 4: COPY_RUN(uint32_t); break;
    default: COPY_RUN(uint64_t); break;
    }
}

static void copy_run_convert(char *d, ferry_dtype ddt, const char *s, ferry_dtype sdt, int64_t n,
                             int64_t ds, int64_t ss)
{
    size_t de = ferry_dtype_size(ddt), se = ferry_dtype_size(sdt);
    bool ints = is_integral(ddt) && is_integral(sdt); /* exact for int64 past 2^53 */
    for (int64_t j = 0; j < n; j++) {
        char *dp = d + (size_t)(j * ds) * de;
        const char *sp = s + (size_t)(j * ss) * se;
        if (ints)
            store_int(dp, ddt, load_int(sp, sdt));
        else
            ferry__store_from_double(dp, ddt, ferry__load_as_double(sp, sdt));
    }
}

/* Copies src's elements into dst's (same shape, possibly different dtypes and strides). The two
   must not overlap in memory unless they are the same geometry. */
static void copy_elements(ferry_tensor *dst, const ferry_tensor *src)
{
    size_t de = ferry_dtype_size(dst->dtype), se = ferry_dtype_size(src->dtype);
    char *dbase = dst->storage->data;
    const char *sbase = src->storage->data;
    pair_iter it;
    iter_init(&it, dst->ndim, dst->sizes, dst->strides, src->strides, dst->offset, src->offset);
    while (iter_next(&it)) {
        char *d = dbase + (size_t)it.off[0] * de;
        const char *s = sbase + (size_t)it.off[1] * se;
        if (dst->dtype == src->dtype)
            copy_run_same(d, s, it.inner, it.inner_stride[0], it.inner_stride[1], de);
        else
            copy_run_convert(d, dst->dtype, s, src->dtype, it.inner, it.inner_stride[0],
                             it.inner_stride[1]);
    }
}

/* A new contiguous tensor of t's shape in `dtype` on t's device, holding t's values. */
static ferry_tensor *copy_as(const ferry_tensor *t, ferry_dtype dtype)
{
    ferry_tensor *in = (ferry_tensor *)t;
#ifdef FERRY_WITH_CUDA
    if (ferry__use_kernels(1, &in)) {
        ferry_tensor *k = ferry_tensor_empty(t->ndim, t->sizes, dtype, t->device);
        if (k != NULL && ferry__kern_copy(k, t) != FERRY_OK) {
            ferry_tensor_release(k);
            return NULL;
        }
        return k;
    }
#endif
    FERRY__STAGE(1, &in, h, copy_as(h[0], dtype));
    if (t->device.type != FERRY_CPU && ferry__device_sync(t->device.index) != FERRY_OK)
        return NULL;
    ferry_tensor *out = ferry_tensor_empty(t->ndim, t->sizes, dtype, t->device);
    if (out)
        copy_elements(out, t);
    return out;
}

ferry_tensor *ferry_tensor_clone_data(const ferry_tensor *t)
{
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "clone: tensor is NULL");
    return copy_as(t, t->dtype);
}

ferry_tensor *ferry_tensor_to_dtype(const ferry_tensor *t, ferry_dtype dtype)
{
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "to_dtype: tensor is NULL");
    if (ferry_dtype_size(dtype) == 0)
        return ferry__fail_null(FERRY_EINVAL, "to_dtype: invalid dtype %d", (int)dtype);
    return copy_as(t, dtype);
}

ferry_tensor *ferry_tensor_contiguous(ferry_tensor *t)
{
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "contiguous: tensor is NULL");
    if (ferry_tensor_is_contiguous(t))
        return ferry_tensor_retain(t);
    return copy_as(t, t->dtype);
}

ferry_status ferry_tensor_copy_(ferry_tensor *dst, const ferry_tensor *src)
{
    char a[256], b[256];
    if (!dst || !src)
        return ferry__fail(FERRY_EINVAL, "copy_: tensor is NULL");
    if (!ferry__same_shape(dst, src))
        return ferry__fail(FERRY_EINVAL, "copy_: shape %s does not match destination shape %s",
                           ferry__shape_str(src->ndim, src->sizes, a, sizeof a),
                           ferry__shape_str(dst->ndim, dst->sizes, b, sizeof b));
    bool same_geometry = dst->offset == src->offset && dst->dtype == src->dtype &&
                         !memcmp(dst->strides, src->strides, (size_t)dst->ndim * sizeof(int64_t));
    if (dst->storage == src->storage && same_geometry)
        return FERRY_OK; /* copying a tensor onto itself */
    if (dst->device.type != src->device.type ||
        (dst->device.type != FERRY_CPU && dst->device.index != src->device.index)) {
        /* torch's copy_ across devices: move the values over, then copy there */
        ferry_tensor *moved = ferry_tensor_to((ferry_tensor *)src, dst->device);
        if (!moved)
            return ferry_last_status();
        ferry_status rc = ferry_tensor_copy_(dst, moved);
        ferry_tensor_release(moved);
        return rc;
    }
    ferry_tensor *ins[2] = {dst, (ferry_tensor *)src};
#ifdef FERRY_WITH_CUDA
    if (ferry__use_kernels(2, ins)) {
        if (dst->storage != src->storage)
            return ferry__kern_copy(dst, src);
        ferry_tensor *snap = ferry_tensor_clone_data(src); /* they may overlap */
        ferry_status rc = snap ? ferry__kern_copy(dst, snap) : ferry_last_status();
        ferry_tensor_release(snap);
        return rc;
    }
#endif
    if (ferry__needs_staging(2, ins)) { /* a device the host cannot write: copy on host copies */
        ferry_tensor *h[2];
        ferry_device dev;
        if (ferry__stage_in(2, ins, h, &dev) != FERRY_OK)
            return ferry_last_status();
        ferry_status rc = ferry_tensor_copy_(h[0], h[1]);
        if (rc == FERRY_OK)
            rc = ferry__stage_back(dst, h[0]);
        ferry__stage_release(2, h);
        return rc;
    }
    if (dst->device.type != FERRY_CPU && ferry__device_sync(dst->device.index) != FERRY_OK)
        return ferry_last_status();
    if (dst->storage == src->storage) {
        /* the two may overlap (x.copy_(x.t())): read from a snapshot of src */
        ferry_tensor *tmp = ferry_tensor_clone_data(src);
        if (!tmp)
            return ferry_last_status();
        copy_elements(dst, tmp);
        ferry_tensor_release(tmp);
        return FERRY_OK;
    }
    copy_elements(dst, src);
    return FERRY_OK;
}

/* Replaces one -1 in `sizes` by the size that makes numel match; records the error on failure. */
static ferry_status infer_size(const ferry_tensor *t, int ndim, const int64_t *sizes, int64_t *out)
{
    char shape[256];
    int infer = -1;
    int64_t known = 1;
    int64_t numel = ferry_tensor_numel(t);
    if (ndim < 0 || ndim > FERRY_MAX_DIMS || (ndim > 0 && !sizes))
        return ferry__fail(FERRY_EINVAL, "view: bad ndim %d", ndim);
    for (int i = 0; i < ndim; i++) {
        out[i] = sizes[i];
        if (sizes[i] == -1 && infer < 0) {
            infer = i;
            continue;
        }
        if (sizes[i] < 0 || __builtin_mul_overflow(known, sizes[i], &known))
            return ferry__fail(FERRY_EINVAL, "shape '%s' is invalid for input of size %lld",
                               ferry__shape_str(ndim, sizes, shape, sizeof shape), (long long)numel);
    }
    if (infer >= 0 && known != 0 && numel % known == 0) {
        out[infer] = numel / known;
        return FERRY_OK;
    }
    if (infer < 0 && known == numel)
        return FERRY_OK;
    if (infer >= 0 && known == 0)
        return ferry__fail(FERRY_EINVAL,
                           "cannot reshape tensor of %lld elements into shape %s because the "
                           "unspecified dimension size -1 can be any value",
                           (long long)numel, ferry__shape_str(ndim, sizes, shape, sizeof shape));
    return ferry__fail(FERRY_EINVAL, "shape '%s' is invalid for input of size %lld",
                       ferry__shape_str(ndim, sizes, shape, sizeof shape), (long long)numel);
}

/* Strides that express `sizes` over t's memory without copying, as torch decides it: t's dims
   split into chunks that are each contiguous in memory, and every chunk must map onto a run of
   new dims with the same element count. False when no such strides exist. */
static bool view_strides(const ferry_tensor *t, int ndim, const int64_t *sizes, int64_t *out)
{
    if (ferry_tensor_is_contiguous(t) || ferry_tensor_numel(t) == 0) {
        ferry__contiguous_strides(ndim, sizes, out);
        return true;
    }
    int nd = ndim - 1;              /* next new dim to assign, from the innermost */
    int64_t base = t->strides[t->ndim - 1]; /* stride of the current chunk's innermost dim */
    int64_t chunk_numel = 1, new_numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        chunk_numel *= t->sizes[d];
        bool chunk_ends = d == 0 || (t->sizes[d - 1] != 1 &&
                                     t->strides[d - 1] != chunk_numel * base);
        if (!chunk_ends)
            continue;
        while (nd >= 0 && (new_numel < chunk_numel || sizes[nd] == 1)) {
            out[nd] = new_numel * base;
            new_numel *= sizes[nd];
            nd--;
        }
        if (new_numel != chunk_numel)
            return false;
        if (d > 0) {
            base = t->strides[d - 1];
            chunk_numel = new_numel = 1;
        }
    }
    return nd < 0;
}

ferry_tensor *ferry_tensor_view(ferry_tensor *t, int ndim, const int64_t *sizes)
{
    int64_t shape[FERRY_MAX_DIMS], strides[FERRY_MAX_DIMS];
    char a[256], b[256], c[256];
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "view: tensor is NULL");
    if (infer_size(t, ndim, sizes, shape) != FERRY_OK)
        return NULL;
    if (!view_strides(t, ndim, shape, strides))
        return ferry__fail_null(FERRY_EINVAL,
                                "view size %s is not compatible with input tensor's size %s and "
                                "stride %s (at least one dimension spans across two contiguous "
                                "subspaces); use reshape instead",
                                ferry__shape_str(ndim, shape, a, sizeof a),
                                ferry__shape_str(t->ndim, t->sizes, b, sizeof b),
                                ferry__shape_str(t->ndim, t->strides, c, sizeof c));
    return ferry__tensor_make(t->storage, t->offset, ndim, shape, strides, t->dtype);
}

ferry_tensor *ferry_tensor_reshape(ferry_tensor *t, int ndim, const int64_t *sizes)
{
    int64_t shape[FERRY_MAX_DIMS], strides[FERRY_MAX_DIMS];
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "reshape: tensor is NULL");
    if (infer_size(t, ndim, sizes, shape) != FERRY_OK)
        return NULL;
    if (view_strides(t, ndim, shape, strides))
        return ferry__tensor_make(t->storage, t->offset, ndim, shape, strides, t->dtype);
    ferry_tensor *copy = copy_as(t, t->dtype);
    if (!copy)
        return NULL;
    ferry_tensor *out = ferry__tensor_make(copy->storage, 0, ndim, shape, NULL, t->dtype);
    ferry_tensor_release(copy);
    return out;
}

/* Wraps a possibly negative dim; scalars accept 0 and -1 as torch does. */
static ferry_status wrap_dim(const char *what, int ndim, int dim, int *out)
{
    int n = ndim > 0 ? ndim : 1;
    if (dim < -n || dim >= n)
        return ferry__fail(FERRY_EINVAL,
                           "%s: dimension out of range (expected to be in range of [%d, %d], but "
                           "got %d)", what, -n, n - 1, dim);
    *out = dim < 0 ? dim + n : dim;
    return FERRY_OK;
}

ferry_tensor *ferry_tensor_transpose(ferry_tensor *t, int dim0, int dim1)
{
    int64_t sizes[FERRY_MAX_DIMS], strides[FERRY_MAX_DIMS];
    int d0 = 0, d1 = 0;
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "transpose: tensor is NULL");
    if (wrap_dim("transpose", t->ndim, dim0, &d0) != FERRY_OK ||
        wrap_dim("transpose", t->ndim, dim1, &d1) != FERRY_OK)
        return NULL;
    memcpy(sizes, t->sizes, sizeof sizes);
    memcpy(strides, t->strides, sizeof strides);
    if (t->ndim > 0) {
        sizes[d0] = t->sizes[d1];
        sizes[d1] = t->sizes[d0];
        strides[d0] = t->strides[d1];
        strides[d1] = t->strides[d0];
    }
    return ferry__tensor_make(t->storage, t->offset, t->ndim, sizes, strides, t->dtype);
}

/* Geometry of t with dimension `d` cut to `len` elements from `start`, `step` apart. */
static ferry_tensor *restrict_dim(ferry_tensor *t, int d, int64_t start, int64_t len, int64_t step)
{
    int64_t sizes[FERRY_MAX_DIMS], strides[FERRY_MAX_DIMS];
    memcpy(sizes, t->sizes, sizeof sizes);
    memcpy(strides, t->strides, sizeof strides);
    sizes[d] = len;
    /* with fewer than two elements the stride is never used; keeping it avoids overflow for
       huge steps. Otherwise step < size bounds the product by the existing extent. */
    if (len > 1)
        strides[d] = t->strides[d] * step;
    int64_t offset = t->offset;
    if (len > 0)
        offset += start * t->strides[d];
    return ferry__tensor_make(t->storage, offset, t->ndim, sizes, strides, t->dtype);
}

ferry_tensor *ferry_tensor_slice(ferry_tensor *t, int dim, int64_t start, int64_t end,
                                 int64_t step)
{
    int d = 0;
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "slice: tensor is NULL");
    if (t->ndim == 0)
        return ferry__fail_null(FERRY_EINVAL, "slice: cannot slice a 0-dim tensor");
    if (wrap_dim("slice", t->ndim, dim, &d) != FERRY_OK)
        return NULL;
    if (step <= 0)
        return ferry__fail_null(FERRY_EINVAL, "slice: step must be greater than zero, got %lld",
                                (long long)step);
    int64_t size = t->sizes[d];
    /* Python's clamping: negatives count from the end, then both are clamped to [0, size] */
    if (start < 0)
        start = start < -size ? 0 : start + size;
    if (end < 0)
        end = end < -size ? 0 : end + size;
    start = start > size ? size : start;
    end = end > size ? size : end;
    int64_t len = end > start ? (end - start - 1) / step + 1 : 0;
    return restrict_dim(t, d, start, len, step);
}

ferry_tensor *ferry_tensor_narrow(ferry_tensor *t, int dim, int64_t start, int64_t length)
{
    int d = 0;
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "narrow: tensor is NULL");
    if (t->ndim == 0)
        return ferry__fail_null(FERRY_EINVAL, "narrow: cannot narrow a 0-dim tensor");
    if (wrap_dim("narrow", t->ndim, dim, &d) != FERRY_OK)
        return NULL;
    int64_t size = t->sizes[d];
    if (start < -size || start > size)
        return ferry__fail_null(FERRY_EINVAL,
                                "narrow: start %lld out of range for dimension %d of size %lld",
                                (long long)start, d, (long long)size);
    if (start < 0)
        start += size;
    if (length < 0 || length > size - start)
        return ferry__fail_null(FERRY_EINVAL,
                                "narrow: start (%lld) + length (%lld) exceeds dimension size (%lld)",
                                (long long)start, (long long)length, (long long)size);
    return restrict_dim(t, d, start, length, 1);
}
