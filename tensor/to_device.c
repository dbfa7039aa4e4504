/* Moving tensors between the CPU and devices (torch's Tensor.to(device)): a copy with the same
   dtype, shape and values on the other device, done when the call returns. A contiguous tensor
   moves exactly its bytes and arrives contiguous; a strided view moves the span of storage it
   reaches and keeps its strides, as the wire does. The graph-aware form is ferry_to (ops.h). */
#include "tensor/tensor_impl.h"

#include "core/error.h"
#include "tensor/device.h"

ferry_tensor *ferry_tensor_to(ferry_tensor *t, ferry_device device)
{
    if (!t)
        return ferry__fail_null(FERRY_EINVAL, "ferry_tensor_to: tensor is NULL");
    if (ferry__device_resolve(device, &device) != FERRY_OK)
        return NULL;
    if (device.type == t->device.type && device.index == t->device.index)
        return ferry_tensor_retain(t); /* torch: .to() of the device it is on returns self */
    size_t esize = ferry_dtype_size(t->dtype);
    int64_t numel = ferry__shape_numel(t->ndim, t->sizes);
    int64_t lo = 0, span = 0;
    if (numel > 0 && ferry_tensor_is_contiguous(t)) {
        lo = t->offset;
        span = numel;
    } else if (numel > 0) {
        int64_t hi = 0;
        lo = t->offset;
        for (int d = 0; d < t->ndim; d++)
            hi += (t->sizes[d] - 1) * t->strides[d]; /* strides are never negative */
        span = hi + 1;
    }
    ferry_storage *s = ferry__storage_new((size_t)span * esize, device);
    if (!s)
        return NULL;
    const char *src = (const char *)t->storage->data + lo * (int64_t)esize;
    ferry_status rc = ferry__device_copy_sync(s->data, device, src, t->device,
                                              (size_t)span * esize);
    ferry_tensor *out = NULL;
    if (rc == FERRY_OK)
        out = ferry__tensor_make(s, 0, t->ndim, t->sizes, t->strides, t->dtype);
    ferry__storage_release(s);
    return out;
}
