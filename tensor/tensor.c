/* Tensors: the handle (geometry over a shared storage), its lifetime, the creation calls
   (empty, from_data, from_blob, zeros, ones, full, arange, scalars) and the accessors. Every
   creation call validates its shape the same way before touching memory: ndim in
   0..FERRY_MAX_DIMS, no negative size, and a byte count that fits in int64 and size_t, so the
   later index arithmetic in views and kernels can never overflow. */
#include "tensor/tensor_impl.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "tensor/device.h"
#include "tensor/ops_internal.h"

/* Set once by autograd/ at start-up and only read afterwards; atomic so a late registration
   racing a release on another thread is still well defined. */
static _Atomic(const ferry__tensor_autograd_ops *) autograd_ops;

void ferry__tensor_set_autograd_ops(const ferry__tensor_autograd_ops *ops)
{
    atomic_store(&autograd_ops, ops);
}

bool ferry__tensor_requires_grad(const ferry_tensor *t)
{
    const ferry__tensor_autograd_ops *ops = atomic_load(&autograd_ops);
    return t->autograd && ops && ops->requires_grad && ops->requires_grad(t);
}

ferry_status ferry__tensor_set_requires_grad(ferry_tensor *t, bool requires_grad)
{
    const ferry__tensor_autograd_ops *ops = atomic_load(&autograd_ops);
    if (!ops || !ops->set_requires_grad)
        return ferry__fail(FERRY_ENOTSUP, "autograd is not part of this build");
    return ops->set_requires_grad(t, requires_grad);
}

int64_t ferry__shape_numel(int ndim, const int64_t *sizes)
{
    bool has_zero = false;
    for (int i = 0; i < ndim; i++) {
        if (sizes[i] < 0)
            return -1;
        if (sizes[i] == 0)
            has_zero = true;
    }
    if (has_zero) /* zero elements however large the other sizes are, as torch */
        return 0;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, sizes[i], &n))
            return -1;
    return n;
}

void ferry__contiguous_strides(int ndim, const int64_t *sizes, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        /* size 0 or 1 dims: keep the running stride meaningful (torch uses max(size, 1)) */
        s *= sizes[i] > 1 ? sizes[i] : 1;
    }
}

const char *ferry__shape_str(int ndim, const int64_t *sizes, char *buf, size_t cap)
{
    size_t len = 0;
    if (cap == 0)
        return buf;
    buf[0] = '\0';
    len += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "",
                                (long long)sizes[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
    return buf;
}

/* Validates a creation shape; returns numel, or -1 with the error recorded. */
static int64_t check_shape(int ndim, const int64_t *sizes, ferry_dtype dtype)
{
    char shape[256];
    if (ndim < 0 || ndim > FERRY_MAX_DIMS)
        return ferry__fail(FERRY_EINVAL, "ndim %d is outside 0..%d", ndim, FERRY_MAX_DIMS), -1;
    if (ndim > 0 && !sizes)
        return ferry__fail(FERRY_EINVAL, "sizes is NULL for ndim %d", ndim), -1;
    if (ferry_dtype_size(dtype) == 0)
        return ferry__fail(FERRY_EINVAL, "invalid dtype %d", (int)dtype), -1;
    for (int i = 0; i < ndim; i++)
        if (sizes[i] < 0)
            return ferry__fail(FERRY_EINVAL, "negative size %lld in dimension %d of shape %s",
                               (long long)sizes[i], i, ferry__shape_str(ndim, sizes, shape, sizeof shape)),
                   -1;
    int64_t numel = ferry__shape_numel(ndim, sizes);
    int64_t nbytes;
    if (numel < 0 || __builtin_mul_overflow(numel, (int64_t)ferry_dtype_size(dtype), &nbytes) ||
        (uint64_t)nbytes > SIZE_MAX)
        return ferry__fail(FERRY_EINVAL, "shape %s of %s has too many elements",
                           ferry__shape_str(ndim, sizes, shape, sizeof shape), ferry_dtype_name(dtype)),
               -1;
    return numel;
}

/* Checks that every element of the geometry lies inside the storage. */
static ferry_status check_extent(const ferry_storage *storage, int64_t offset, int ndim,
                                 const int64_t *sizes, const int64_t *strides, size_t elem)
{
    if (offset < 0)
        return ferry__fail(FERRY_EINVAL, "negative storage offset %lld", (long long)offset);
    for (int i = 0; i < ndim; i++)
        if (strides[i] < 0)
            return ferry__fail(FERRY_EINVAL, "negative stride %lld in dimension %d",
                               (long long)strides[i], i);
    if (ferry__shape_numel(ndim, sizes) == 0)
        return FERRY_OK;
    int64_t last = offset, step, bytes;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(sizes[i] - 1, strides[i], &step) ||
            __builtin_add_overflow(last, step, &last))
            return ferry__fail(FERRY_EINVAL, "tensor geometry overflows int64");
    if (__builtin_add_overflow(last, 1, &last) ||
        __builtin_mul_overflow(last, (int64_t)elem, &bytes) || (uint64_t)bytes > storage->nbytes)
        return ferry__fail(FERRY_EINVAL,
                           "tensor geometry reaches element %lld past a storage of %zu bytes",
                           (long long)(last - 1), storage->nbytes);
    return FERRY_OK;
}

ferry_tensor *ferry__tensor_make(ferry_storage *storage, int64_t offset, int ndim,
                                 const int64_t *sizes, const int64_t *strides, ferry_dtype dtype)
{
    if (check_shape(ndim, sizes, dtype) < 0)
        return NULL;
    int64_t contiguous[FERRY_MAX_DIMS];
    if (!strides) {
        ferry__contiguous_strides(ndim, sizes, contiguous);
        strides = contiguous;
    }
    if (check_extent(storage, offset, ndim, sizes, strides, ferry_dtype_size(dtype)) != FERRY_OK)
        return NULL;
    ferry_tensor *t = ferry__malloc(sizeof *t);
    if (!t)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory allocating a tensor");
    memset(t, 0, sizeof *t);
    ferry__ref_init(&t->ref);
    ferry__storage_retain(storage);
    t->storage = storage;
    t->offset = offset;
    t->ndim = ndim;
    if (ndim > 0) {
        memcpy(t->sizes, sizes, (size_t)ndim * sizeof *sizes);
        memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
    }
    t->dtype = dtype;
    t->device = storage->device;
    t->autograd = NULL;
    return t;
}

ferry_tensor *ferry_tensor_empty(int ndim, const int64_t *sizes, ferry_dtype dtype,
                                 ferry_device device)
{
    int64_t numel = check_shape(ndim, sizes, dtype);
    if (numel < 0)
        return NULL;
    ferry_storage *s = ferry__storage_new((size_t)numel * ferry_dtype_size(dtype), device);
    if (!s)
        return NULL;
    ferry_tensor *t = ferry__tensor_make(s, 0, ndim, sizes, NULL, dtype);
    ferry__storage_release(s); /* the tensor holds its own reference, or the storage goes */
    return t;
}

ferry_tensor *ferry_tensor_from_data(const void *data, int ndim, const int64_t *sizes,
                                     ferry_dtype dtype)
{
    int64_t numel = check_shape(ndim, sizes, dtype);
    if (numel < 0)
        return NULL;
    if (!data && numel > 0)
        return ferry__fail_null(FERRY_EINVAL, "from_data: data is NULL");
    ferry_tensor *t = ferry_tensor_empty(ndim, sizes, dtype, FERRY_DEVICE_CPU);
    if (t && numel > 0)
        memcpy(ferry_tensor_data(t), data, ferry_tensor_nbytes(t));
    return t;
}

ferry_tensor *ferry_tensor_from_blob(void *data, int ndim, const int64_t *sizes,
                                     const int64_t *strides, ferry_dtype dtype,
                                     void (*deleter)(void *data, void *ctx), void *ctx)
{
    int64_t numel = check_shape(ndim, sizes, dtype);
    if (numel < 0)
        return NULL;
    if (!data && numel > 0)
        return ferry__fail_null(FERRY_EINVAL, "from_blob: data is NULL");
    int64_t contiguous[FERRY_MAX_DIMS];
    if (!strides) {
        ferry__contiguous_strides(ndim, sizes, contiguous);
        strides = contiguous;
    }
    /* the blob must hold exactly the elements the strides reach: size it from them */
    int64_t extent = 0;
    for (int i = 0; i < ndim && numel > 0; i++) {
        if (strides[i] < 0)
            return ferry__fail_null(FERRY_EINVAL, "from_blob: negative stride %lld in dimension %d",
                                    (long long)strides[i], i);
        int64_t step;
        if (__builtin_mul_overflow(sizes[i] - 1, strides[i], &step) ||
            __builtin_add_overflow(extent, step, &extent))
            return ferry__fail_null(FERRY_EINVAL, "from_blob: strides overflow int64");
    }
    int64_t nbytes = 0;
    if (numel > 0 && (__builtin_add_overflow(extent, 1, &extent) ||
                      __builtin_mul_overflow(extent, (int64_t)ferry_dtype_size(dtype), &nbytes)))
        return ferry__fail_null(FERRY_EINVAL, "from_blob: strides overflow int64");
    ferry_storage *s = ferry__storage_wrap(data, (size_t)nbytes, FERRY_DEVICE_CPU, deleter, ctx);
    if (!s)
        return NULL;
    ferry_tensor *t = ferry__tensor_make(s, 0, ndim, sizes, strides, dtype);
    if (!t)
        s->deleter = NULL; /* a failed call never runs the caller's deleter: they still own it */
    ferry__storage_release(s);
    return t;
}

/* Fills n elements at p with v converted to dtype, replicating the first element's bytes. */
static void fill_value(void *p, int64_t n, size_t elem, ferry_dtype dtype, double v)
{
    if (n <= 0)
        return;
    ferry__store_from_double(p, dtype, v);
    size_t total = (size_t)n * elem, done = elem;
    while (done < total) { /* doubling copies: log(n) memcpy calls */
        size_t chunk = done < total - done ? done : total - done;
        memcpy((char *)p + done, p, chunk);
        done += chunk;
    }
}

ferry_tensor *ferry_full(int ndim, const int64_t *sizes, double value, ferry_dtype dtype)
{
    ferry_tensor *t = ferry_tensor_empty(ndim, sizes, dtype, FERRY_DEVICE_CPU);
    if (t)
        fill_value(ferry_tensor_data(t), ferry_tensor_numel(t), ferry_dtype_size(dtype), dtype,
                   value);
    return t;
}

ferry_tensor *ferry__full_on(int ndim, const int64_t *sizes, double value, ferry_dtype dtype,
                             ferry_device device)
{
    if (device.type == FERRY_CPU)
        return ferry_full(ndim, sizes, value, dtype);
    ferry_tensor *t = ferry_tensor_empty(ndim, sizes, dtype, device);
    if (t == NULL || ferry_tensor_numel(t) == 0)
        return t;
    ferry_status rc;
    if (!ferry__needs_staging(1, &t) && (rc = ferry__device_sync(device.index)) == FERRY_OK) {
        fill_value(ferry_tensor_data(t), ferry_tensor_numel(t), ferry_dtype_size(dtype), dtype,
                   value);
    } else if (!ferry__needs_staging(1, &t)) {
        ferry_tensor_release(t);
        return NULL;
    } else {
        /* a device the host cannot write: fill on the device, or fill a host copy and send it */
        rc = ferry__device_fill(t, value);
        if (rc == FERRY_ENOTSUP) {
            ferry_tensor *h = ferry_full(ndim, sizes, value, dtype);
            rc = h ? ferry__device_copy_sync(t->storage->data, device, h->storage->data,
                                             FERRY_DEVICE_CPU, ferry_tensor_nbytes(t))
                   : ferry_last_status();
            ferry_tensor_release(h);
        }
        if (rc != FERRY_OK) {
            ferry_tensor_release(t);
            return NULL;
        }
    }
    return t;
}

ferry_tensor *ferry_zeros(int ndim, const int64_t *sizes, ferry_dtype dtype)
{
    ferry_tensor *t = ferry_tensor_empty(ndim, sizes, dtype, FERRY_DEVICE_CPU);
    if (t) /* all-zero bytes are 0 in every dtype */
        memset(ferry_tensor_data(t), 0, ferry_tensor_nbytes(t));
    return t;
}

ferry_tensor *ferry_ones(int ndim, const int64_t *sizes, ferry_dtype dtype)
{
    return ferry_full(ndim, sizes, 1.0, dtype);
}

ferry_tensor *ferry_scalar_tensor(double value, ferry_dtype dtype)
{
    return ferry_full(0, NULL, value, dtype);
}

ferry_tensor *ferry_arange(double start, double end, double step, ferry_dtype dtype)
{
    if (!isfinite(start) || !isfinite(end) || !isfinite(step))
        return ferry__fail_null(FERRY_EINVAL, "arange: start, end and step must be finite");
    if (step == 0.0)
        return ferry__fail_null(FERRY_EINVAL, "arange: step must be nonzero");
    if ((step > 0 && end < start) || (step < 0 && end > start))
        return ferry__fail_null(FERRY_EINVAL,
                                "arange: upper bound and larger bound inconsistent with step sign "
                                "(start %g, end %g, step %g)", start, end, step);
    double len_d = ceil((end - start) / step);
    if (!(len_d < 0x1p62))
        return ferry__fail_null(FERRY_EINVAL, "arange: %g elements are too many", len_d);
    int64_t len = (int64_t)len_d;
    ferry_tensor *t = ferry_tensor_empty(1, &len, dtype, FERRY_DEVICE_CPU);
    if (!t)
        return NULL;
    char *p = ferry_tensor_data(t);
    size_t elem = ferry_dtype_size(dtype);
    for (int64_t i = 0; i < len; i++) /* start + i * step, not a running sum: no drift */
        ferry__store_from_double(p + (size_t)i * elem, dtype, start + (double)i * step);
    return t;
}

void *ferry_tensor_data(ferry_tensor *t)
{
    return (void *)ferry_tensor_data_const(t);
}

const void *ferry_tensor_data_const(const ferry_tensor *t)
{
    if (!t)
        return NULL;
    return (const char *)t->storage->data + (size_t)t->offset * ferry_dtype_size(t->dtype);
}

int ferry_tensor_ndim(const ferry_tensor *t)
{
    return t ? t->ndim : 0;
}

const int64_t *ferry_tensor_sizes(const ferry_tensor *t)
{
    return t ? t->sizes : NULL;
}

const int64_t *ferry_tensor_strides(const ferry_tensor *t)
{
    return t ? t->strides : NULL;
}

int64_t ferry_tensor_size(const ferry_tensor *t, int dim)
{
    if (!t)
        return ferry__fail(FERRY_EINVAL, "size: tensor is NULL"), -1;
    int d = dim < 0 ? dim + t->ndim : dim;
    if (d < 0 || d >= t->ndim)
        return ferry__fail(FERRY_EINVAL,
                           "dimension out of range (expected to be in range of [%d, %d], but got %d)",
                           -t->ndim, t->ndim - 1, dim),
               -1;
    return t->sizes[d];
}

int64_t ferry_tensor_storage_offset(const ferry_tensor *t)
{
    return t ? t->offset : 0;
}

int64_t ferry_tensor_numel(const ferry_tensor *t)
{
    return t ? ferry__shape_numel(t->ndim, t->sizes) : 0;
}

size_t ferry_tensor_nbytes(const ferry_tensor *t)
{
    return t ? (size_t)ferry_tensor_numel(t) * ferry_dtype_size(t->dtype) : 0;
}

ferry_dtype ferry_tensor_dtype(const ferry_tensor *t)
{
    return t ? t->dtype : FERRY_FLOAT32;
}

ferry_device ferry_tensor_device(const ferry_tensor *t)
{
    return t ? t->device : FERRY_DEVICE_CPU;
}

bool ferry_tensor_is_contiguous(const ferry_tensor *t)
{
    if (!t)
        return false;
    if (ferry_tensor_numel(t) == 0)
        return true;
    int64_t expected = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->sizes[i] == 1) /* a size-1 dim's stride is never used: any value is fine */
            continue;
        if (t->strides[i] != expected)
            return false;
        expected *= t->sizes[i];
    }
    return true;
}

bool ferry_tensor_shares_storage(const ferry_tensor *a, const ferry_tensor *b)
{
    return a && b && a->storage == b->storage;
}

double ferry_tensor_item_at(const ferry_tensor *t, int64_t i)
{
    if (!t)
        return ferry__fail(FERRY_EINVAL, "item_at: tensor is NULL"), NAN;
    int64_t numel = ferry_tensor_numel(t);
    if (i < 0 || i >= numel)
        return ferry__fail(FERRY_EINVAL, "index %lld is out of bounds for %lld elements",
                           (long long)i, (long long)numel),
               NAN;
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) { /* unravel the row-major index */
        off += (i % t->sizes[d]) * t->strides[d];
        i /= t->sizes[d];
    }
    const char *base = t->storage->data;
    size_t es = ferry_dtype_size(t->dtype);
    if (t->device.type != FERRY_CPU) { /* one element through a device copy */
        unsigned char elem[16];
        if (ferry__device_copy_sync(elem, FERRY_DEVICE_CPU, base + (size_t)off * es, t->device,
                                    es) != FERRY_OK)
            return NAN;
        return ferry__load_as_double(elem, t->dtype);
    }
    return ferry__load_as_double(base + (size_t)off * es, t->dtype);
}

double ferry_tensor_item(const ferry_tensor *t)
{
    if (t && ferry_tensor_numel(t) != 1)
        return ferry__fail(FERRY_EINVAL,
                           "a tensor with %lld elements cannot be converted to a scalar",
                           (long long)ferry_tensor_numel(t)),
               NAN;
    return ferry_tensor_item_at(t, 0);
}

ferry_tensor *ferry_tensor_retain(ferry_tensor *t)
{
    if (t)
        ferry__ref_inc(&t->ref);
    return t;
}

void ferry_tensor_release(ferry_tensor *t)
{
    if (!t || !ferry__ref_dec(&t->ref))
        return;
    if (t->autograd) {
        const ferry__tensor_autograd_ops *ops = atomic_load(&autograd_ops);
        void (*hook)(void *) = ops ? ops->free : NULL;
        if (hook)
            hook(t->autograd);
    }
    ferry__storage_release(t->storage);
    ferry__free(t);
}
