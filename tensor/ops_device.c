/* Ops on device tensors: which device an op computes on (torch's rule for mixing devices), the
   staged path that runs an op's CPU kernel on host copies when the host cannot read the device,
   and ferry_to, the graph-aware move between devices. On host-readable devices (the emulation)
   the CPU kernels read device memory directly once its stream is synchronized. */
#include "tensor/ops_internal.h"

#include <stdatomic.h>
#include <string.h>

#include "core/error.h"
#include "tensor/device.h"

static atomic_bool force_staging;

void ferry__ops_force_staging(bool on)
{
    atomic_store(&force_staging, on);
}

bool ferry__ops_staging_forced(void)
{
    return atomic_load_explicit(&force_staging, memory_order_relaxed);
}

static bool same_device(ferry_device a, ferry_device b)
{
    return a.type == b.type && (a.type == FERRY_CPU || a.index == b.index);
}

ferry_status ferry__check_devices_any(size_t n, ferry_tensor *const *ts, ferry_device *device)
{
    ferry_device common = FERRY_DEVICE_CPU;
    for (size_t i = 0; i < n; i++) {
        if (ts[i] != NULL && ts[i]->device.type != FERRY_CPU) {
            common = ts[i]->device;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const ferry_tensor *t = ts[i];
        if (t == NULL || same_device(t->device, common))
            continue;
        if (t->device.type == FERRY_CPU && t->ndim == 0)
            continue; /* a CPU scalar joins a device op */
        char a[32], b[32];
        ferry_device_format(common, a, sizeof a);
        ferry_device_format(t->device, b, sizeof b);
        return ferry__fail(FERRY_EINVAL,
                           "Expected all tensors to be on the same device, but found at least "
                           "two devices, %s and %s!", a, b);
    }
    *device = common;
    return FERRY_OK;
}

bool ferry__needs_staging_any(size_t n, ferry_tensor *const *ts)
{
    for (size_t i = 0; i < n; i++) {
        const ferry_tensor *t = ts[i];
        if (t == NULL || t->device.type == FERRY_CPU)
            continue;
        if (atomic_load_explicit(&force_staging, memory_order_relaxed) ||
            !ferry__device_host_accessible(t->device))
            return true;
    }
    return false;
}

void ferry__stage_release(size_t n, ferry_tensor **host)
{
    for (size_t i = 0; i < n; i++) {
        ferry_tensor_release(host[i]);
        host[i] = NULL;
    }
}

ferry_status ferry__stage_in(size_t n, ferry_tensor *const *ts, ferry_tensor **host,
                             ferry_device *device)
{
    for (size_t i = 0; i < n; i++)
        host[i] = NULL;
    if (ferry__check_devices(n, ts, device) != FERRY_OK)
        return ferry_last_status();
    for (size_t i = 0; i < n; i++) {
        if (ts[i] == NULL)
            continue;
        host[i] = ferry_tensor_to(ts[i], FERRY_DEVICE_CPU);
        if (host[i] == NULL) {
            ferry__stage_release(i, host);
            return ferry_last_status();
        }
    }
    return FERRY_OK;
}

ferry_tensor *ferry__stage_out(ferry_tensor *out, ferry_device device)
{
    if (out == NULL || out->device.type == device.type)
        return out;
    ferry_tensor *moved = ferry_tensor_to(out, device);
    ferry_tensor_release(out);
    return moved;
}

ferry_status ferry__stage_back(ferry_tensor *dst, ferry_tensor *host)
{
    /* ferry_tensor_to kept dst's strides over the span of storage dst reaches, from offset 0:
       that span goes back byte for byte. */
    int64_t numel = ferry_tensor_numel(dst), span = 1;
    if (numel == 0)
        return FERRY_OK;
    for (int d = 0; d < dst->ndim; d++)
        span += (dst->sizes[d] - 1) * dst->strides[d];
    size_t es = ferry_dtype_size(dst->dtype);
    return ferry__device_copy_sync((char *)dst->storage->data + (size_t)dst->offset * es,
                                   dst->device, (const char *)host->storage->data +
                                   (size_t)host->offset * es, FERRY_DEVICE_CPU, (size_t)span * es);
}

ferry_tensor *ferry_to(ferry_tensor *t, ferry_device device)
{
    if (t == NULL)
        return ferry__fail_null(FERRY_EINVAL, "to: tensor is NULL");
    ferry_device src = t->device;
    ferry_tensor *out = ferry_tensor_to(t, device);
    if (out == NULL || out == t)
        return out; /* already there: t itself, no node (torch: x.to(x.device) is x) */
    ferry__op_record rec = {.op = FERRY__OP_TO, .n_inputs = 1, .inputs = &t, .n_ints = 2,
                            .ints = {src.type, src.index}};
    return ferry__ops_record(out, &rec);
}

#ifndef FERRY_WITH_CUDA
ferry_status ferry__device_fill(ferry_tensor *t, double value)
{
    /* no kernels in this build: ferry__full_on fills a host copy instead */
    (void)t;
    (void)value;
    return FERRY_ENOTSUP;
}
#endif
