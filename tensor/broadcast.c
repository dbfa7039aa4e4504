/* The rules every op shares: torch's broadcasting and type promotion, dim wrapping, dtype
   conversion on the way into a kernel, and the hook table through which ops reach autograd
   without tensor/ depending on autograd/. */
#include "tensor/ops_internal.h"

#include <stdatomic.h>
#include <string.h>

#include "core/error.h"
#include "tensor/device.h"

/* Set once by autograd/ and only read afterwards (atomic: it may be set while another thread
   runs an op on tensors that do not require grad). */
static _Atomic(const ferry__autograd_hooks *) autograd_hooks;

void ferry__ops_set_autograd_hooks(const ferry__autograd_hooks *hooks)
{
    atomic_store(&autograd_hooks, hooks);
}

bool ferry__ops_should_record(size_t n, ferry_tensor *const *inputs)
{
    bool any_state = false;
    /* Plain tensors carry no autograd state: skip the hook call on the common path. */
    for (size_t i = 0; i < n; i++)
        any_state |= inputs[i] != NULL && inputs[i]->autograd != NULL;
    if (!any_state)
        return false;
    const ferry__autograd_hooks *h = atomic_load_explicit(&autograd_hooks, memory_order_acquire);
    return h != NULL && h->should_record(n, inputs);
}

ferry_tensor *ferry__ops_record(ferry_tensor *out, const ferry__op_record *rec)
{
    if (out == NULL || !ferry__ops_should_record(rec->n_inputs, rec->inputs))
        return out;
    for (size_t i = 0; i < rec->n_inputs; i++) {
        if (rec->inputs[i] == out) { /* a view call handed back its input: record on a new handle */
            ferry_tensor *alias = ferry__alias(out);
            ferry_tensor_release(out);
            if (alias == NULL)
                return NULL;
            out = alias;
            break;
        }
    }
    const ferry__autograd_hooks *h = atomic_load_explicit(&autograd_hooks, memory_order_acquire);
    if (h->record(rec, out) != FERRY_OK) {
        ferry_tensor_release(out);
        return NULL;
    }
    return out;
}

ferry_status ferry__ops_check_inplace(ferry_tensor *t, size_t n, ferry_tensor *const *others)
{
    const ferry__autograd_hooks *h = atomic_load_explicit(&autograd_hooks, memory_order_acquire);
    if (h == NULL)
        return FERRY_OK;
    return h->check_inplace(t, n, others);
}

ferry_status ferry__check_compute(const ferry_tensor *t, const char *op)
{
    if (t != NULL && t->device.type == FERRY_CPU &&
        (t->dtype == FERRY_FLOAT32 || t->dtype == FERRY_FLOAT64 || t->dtype == FERRY_INT64))
        return FERRY_OK; /* the common case, without a call */
    if (ferry__check_dtype(t, op) != FERRY_OK)
        return ferry_last_status();
    if (ferry__needs_staging(1, (ferry_tensor *const *)&t)) {
        char dev[32];
        ferry_device_format(t->device, dev, sizeof dev);
        return ferry__fail(FERRY_ENOTSUP, "%s: the host cannot read a tensor on %s", op, dev);
    }
    return ferry__device_sync(t->device.index);
}

ferry_status ferry__check_dtype(const ferry_tensor *t, const char *op)
{
    if (t == NULL)
        return ferry__fail(FERRY_EINVAL, "%s: tensor argument is NULL", op);
    if (t->dtype != FERRY_FLOAT32 && t->dtype != FERRY_FLOAT64 && t->dtype != FERRY_INT64)
        return ferry__fail(FERRY_ENOTSUP, "%s: dtype %s is not supported (float32, float64, int64)",
                           op, ferry_dtype_name(t->dtype));
    return FERRY_OK;
}

ferry_dtype ferry__promote(ferry_dtype a, ferry_dtype b)
{
    if (a == FERRY_FLOAT64 || b == FERRY_FLOAT64)
        return FERRY_FLOAT64;
    if (a == FERRY_FLOAT32 || b == FERRY_FLOAT32)
        return FERRY_FLOAT32;
    return FERRY_INT64;
}

/* torch's combine_categories: the higher-priority dtype wins unless the lower one is of a
   higher category (floating over integral). -1 stands for "no operand of this priority". */
static int combine_categories(int higher, int lower)
{
    if (higher < 0)
        return lower;
    if (ferry__is_floating((ferry_dtype)higher))
        return higher;
    if (lower >= 0 && ferry__is_floating((ferry_dtype)lower))
        return (int)ferry__promote((ferry_dtype)higher, (ferry_dtype)lower);
    return higher;
}

ferry_dtype ferry__result_type(const ferry_tensor *a, const ferry_tensor *b)
{
    int dim_result = -1, zero_result = -1;
    const ferry_tensor *ops[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        int *slot = ops[i]->ndim > 0 ? &dim_result : &zero_result;
        *slot = *slot < 0 ? (int)ops[i]->dtype : (int)ferry__promote(*slot, ops[i]->dtype);
    }
    return (ferry_dtype)combine_categories(dim_result, zero_result);
}

ferry_dtype ferry__result_type_float_scalar(const ferry_tensor *a)
{
    /* A Python float is a "wrapped number" of torch's default dtype, float32. */
    return (ferry_dtype)combine_categories((int)a->dtype, FERRY_FLOAT32);
}

ferry_status ferry__wrap_dim(int dim, int ndim, int *out)
{
    int n = ndim > 0 ? ndim : 1;
    if (dim < -n || dim >= n)
        return ferry__fail(FERRY_EINVAL,
                           "Dimension out of range (expected to be in range of [%d, %d], but got %d)",
                           -n, n - 1, dim);
    *out = dim < 0 ? dim + n : dim;
    return FERRY_OK;
}

ferry_status ferry__broadcast_shape(int nda, const int64_t *sa, int ndb, const int64_t *sb,
                                    int *nd_out, int64_t *out)
{
    int nd = nda > ndb ? nda : ndb;
    for (int i = nd - 1; i >= 0; i--) {
        int ia = i - (nd - nda), ib = i - (nd - ndb);
        int64_t x = ia >= 0 ? sa[ia] : 1, y = ib >= 0 ? sb[ib] : 1;
        if (x != y && x != 1 && y != 1)
            return ferry__fail(FERRY_EINVAL,
                               "The size of tensor a (%lld) must match the size of tensor b (%lld) "
                               "at non-singleton dimension %d",
                               (long long)x, (long long)y, i);
        out[i] = x == 1 ? y : x;
    }
    *nd_out = nd;
    return FERRY_OK;
}

ferry_tensor *ferry__to_dtype_ref(ferry_tensor *t, ferry_dtype dtype)
{
    if (t->dtype == dtype)
        return ferry_tensor_retain(t);
    return ferry_tensor_to_dtype(t, dtype);
}

ferry_tensor *ferry__contig_dtype(ferry_tensor *t, ferry_dtype dtype)
{
    if (t->dtype == dtype)
        return ferry_tensor_contiguous(t);
    return ferry_tensor_to_dtype(t, dtype);
}

ferry_tensor *ferry__alias(ferry_tensor *t)
{
    return ferry__tensor_make(t->storage, t->offset, t->ndim, t->sizes, t->strides, t->dtype);
}

ferry_tensor *ferry__expand(ferry_tensor *t, int ndim, const int64_t *sizes)
{
    int64_t strides[FERRY_MAX_DIMS];
    char sa[128], sb[128];
    if (ndim < t->ndim)
        goto bad;
    for (int i = ndim - 1; i >= 0; i--) {
        int j = i - (ndim - t->ndim);
        if (j < 0 || (t->sizes[j] == 1 && sizes[i] != 1)) {
            strides[i] = 0;
        } else if (t->sizes[j] == sizes[i]) {
            strides[i] = t->strides[j];
        } else {
            goto bad;
        }
    }
    return ferry__tensor_make(t->storage, t->offset, ndim, sizes, strides, t->dtype);
bad:
    return ferry__fail_null(FERRY_EINVAL, "cannot expand a tensor of shape %s to %s",
                            ferry__shape_str(t->ndim, t->sizes, sa, sizeof sa),
                            ferry__shape_str(ndim, sizes, sb, sizeof sb));
}

ferry_tensor *ferry__sum_to(ferry_tensor *t, int ndim, const int64_t *sizes)
{
    int dims[FERRY_MAX_DIMS], nd = 0, lead = t->ndim - ndim;
    char sa[128], sb[128];
    if (lead < 0)
        goto bad;
    for (int i = 0; i < t->ndim; i++) {
        if (i < lead) {
            dims[nd++] = i;
        } else if (sizes[i - lead] == 1 && t->sizes[i] != 1) {
            dims[nd++] = i;
        } else if (sizes[i - lead] != t->sizes[i]) {
            goto bad;
        }
    }
    if (nd == 0)
        return ferry_tensor_reshape(t, ndim, sizes);
    ferry_tensor *s = ferry__sum_dims_raw(t, nd, dims, true);
    if (s == NULL)
        return NULL;
    ferry_tensor *out = ferry_tensor_reshape(s, ndim, sizes);
    ferry_tensor_release(s);
    return out;
bad:
    return ferry__fail_null(FERRY_EINVAL, "cannot sum a tensor of shape %s to %s",
                            ferry__shape_str(t->ndim, t->sizes, sa, sizeof sa),
                            ferry__shape_str(ndim, sizes, sb, sizeof sb));
}

bool ferry__same_shape(const ferry_tensor *a, const ferry_tensor *b)
{
    return a->ndim == b->ndim && memcmp(a->sizes, b->sizes, (size_t)a->ndim * sizeof(int64_t)) == 0;
}
