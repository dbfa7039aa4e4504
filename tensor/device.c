/* The device layer's front: which backend this process uses (chosen once, at the first call),
   the thread's current device, one stream per device for ferry's own work, device names, and
   copies between any two places. The backends themselves fill the table in tensor/device.h. */
#include "tensor/device.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define MAX_DEVICES 64

const ferry__device_ops *ferry__device_emulated_ops(void); /* device_emulated.c */

static const ferry__device_ops *registered; /* set by constructors, before main */
static const ferry__device_ops *chosen;
static int chosen_count;
static pthread_once_t choose_once = PTHREAD_ONCE_INIT;

/* Streams are made on first use and kept for the life of the process. */
static pthread_mutex_t stream_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(ferry__stream *) streams[MAX_DEVICES];

static _Thread_local int current_device;

void ferry__device_register_backend(const ferry__device_ops *ops)
{
    registered = ops;
}

static void choose(void)
{
    const char *emu = getenv("FERRY_EMULATE_DEVICES");
    if (emu && *emu) {
        chosen = ferry__device_emulated_ops();
    } else if (registered) {
        chosen = registered;
    }
    int n = chosen ? chosen->count() : 0;
    if (n <= 0)
        chosen = NULL;
    chosen_count = n < 0 ? 0 : n > MAX_DEVICES ? MAX_DEVICES : n;
}

const ferry__device_ops *ferry__device_ops_get(void)
{
    pthread_once(&choose_once, choose);
    return chosen;
}

int ferry_cuda_device_count(void)
{
    pthread_once(&choose_once, choose);
    return chosen_count;
}

bool ferry_cuda_is_available(void)
{
    return ferry_cuda_device_count() > 0;
}

const char *ferry_device_backend(void)
{
    const ferry__device_ops *ops = ferry__device_ops_get();
    return ops ? ops->name : "none";
}

static ferry_status no_device(int index)
{
#ifdef FERRY_WITH_CUDA
    return ferry__fail(FERRY_ENOTSUP, "cuda:%d: no CUDA device is present (torch.cuda."
                       "is_available() would be False: no GPU or no driver)", index);
#else
    return ferry__fail(FERRY_ENOTSUP, "cuda:%d: ferry was built without CUDA (rebuild with the "
                       "CUDA Toolkit, or set FERRY_EMULATE_DEVICES=N to emulate devices)", index);
#endif
}

ferry_status ferry__device_resolve(ferry_device device, ferry_device *resolved)
{
    if (device.type == FERRY_CPU) {
        *resolved = FERRY_DEVICE_CPU;
        return FERRY_OK;
    }
    if (device.type != FERRY_CUDA)
        return ferry__fail(FERRY_EINVAL, "unknown device type %d", (int)device.type);
    int index = device.index == -1 ? current_device : device.index;
    if (index < 0)
        return ferry__fail(FERRY_EINVAL, "cuda:%d: Device index must not be negative", index);
    int n = ferry_cuda_device_count();
    if (n == 0)
        return no_device(index);
    if (index >= n)
        return ferry__fail(FERRY_EINVAL, "cuda:%d: invalid device ordinal: this process has %d "
                           "CUDA device%s (cuda:0..cuda:%d)", index, n, n == 1 ? "" : "s", n - 1);
    *resolved = FERRY_DEVICE_CUDA(index);
    return FERRY_OK;
}

bool ferry__device_host_accessible(ferry_device device)
{
    const ferry__device_ops *ops = ferry__device_ops_get();
    return device.type == FERRY_CUDA && ops && ops->host_accessible;
}

ferry_status ferry_cuda_set_device(int index)
{
    ferry_device d = FERRY_DEVICE_CPU;
    if (index < 0) /* -1 is not "the current device" here */
        return ferry__fail(FERRY_EINVAL, "cuda:%d: Device index must not be negative", index);
    ferry_status rc = ferry__device_resolve(FERRY_DEVICE_CUDA(index), &d);
    if (rc != FERRY_OK)
        return rc;
    current_device = d.index;
    return FERRY_OK;
}

int ferry_cuda_current_device(void)
{
    return current_device;
}

ferry__stream *ferry__device_stream(int index)
{
    ferry_device d = FERRY_DEVICE_CPU;
    if (ferry__device_resolve(FERRY_DEVICE_CUDA(index), &d) != FERRY_OK)
        return NULL;
    ferry__stream *s = atomic_load_explicit(&streams[d.index], memory_order_acquire);
    if (s)
        return s;
    pthread_mutex_lock(&stream_lock);
    s = atomic_load_explicit(&streams[d.index], memory_order_relaxed);
    if (!s && ferry__device_ops_get()->stream_new(d.index, &s) == FERRY_OK)
        atomic_store_explicit(&streams[d.index], s, memory_order_release);
    pthread_mutex_unlock(&stream_lock);
    return s;
}

ferry_status ferry__device_sync(int index)
{
    ferry__stream *s = ferry__device_stream(index);
    return s ? ferry__device_ops_get()->stream_sync(s) : ferry_last_status();
}

ferry_status ferry_cuda_synchronize(int index)
{
    return ferry__device_sync(index);
}

ferry_status ferry__device_copy_sync(void *dst, ferry_device dst_device, const void *src,
                                     ferry_device src_device, size_t nbytes)
{
    if (dst_device.type == FERRY_CPU && src_device.type == FERRY_CPU) {
        memmove(dst, src, nbytes);
        return FERRY_OK;
    }
    const ferry__device_ops *ops = ferry__device_ops_get();
    if (!ops)
        return no_device(dst_device.type == FERRY_CUDA ? dst_device.index : src_device.index);
    ferry__copy_kind kind = dst_device.type == FERRY_CPU   ? FERRY__COPY_D2H
                            : src_device.type == FERRY_CPU ? FERRY__COPY_H2D
                                                           : FERRY__COPY_D2D;
    int index = kind == FERRY__COPY_D2H ? src_device.index : dst_device.index;
    ferry__stream *s = ferry__device_stream(index);
    if (!s)
        return ferry_last_status();
    /* a copy between two devices also waits for the source's own stream */
    if (kind == FERRY__COPY_D2D && src_device.index != dst_device.index) {
        ferry_status rc = ferry__device_sync(src_device.index);
        if (rc != FERRY_OK)
            return rc;
    }
    ferry_status rc = ops->copy(s, dst, src, nbytes, kind);
    return rc != FERRY_OK ? rc : ops->stream_sync(s);
}

size_t ferry_device_format(ferry_device device, char *buf, size_t cap)
{
    int n;
    if (device.type == FERRY_CPU)
        n = snprintf(buf, cap, "cpu");
    else if (device.type == FERRY_CUDA)
        n = snprintf(buf, cap, "cuda:%d", device.index);
    else
        n = snprintf(buf, cap, "device type %d:%d", (int)device.type, device.index);
    return n < 0 ? 0 : (size_t)n;
}

ferry_status ferry_device_parse(const char *text, ferry_device *out)
{
    if (!text || !out)
        return ferry__fail(FERRY_EINVAL, "ferry_device_parse: NULL argument");
    if (!strcmp(text, "cpu")) {
        *out = FERRY_DEVICE_CPU;
        return FERRY_OK;
    }
    if (!strcmp(text, "cuda")) {
        *out = FERRY_DEVICE_CUDA(current_device);
        return FERRY_OK;
    }
    const char *p = text;
    if (!strncmp(p, "cuda:", 5)) {
        p += 5;
        char *end = NULL;
        long v = (*p >= '0' && *p <= '9') ? strtol(p, &end, 10) : -1;
        if (end && !*end && v <= 0x7fffffff) {
            *out = FERRY_DEVICE_CUDA((int)v);
            return FERRY_OK;
        }
    }
    return ferry__fail(FERRY_EINVAL, "Invalid device string: '%s' (expected \"cpu\", \"cuda\" or "
                       "\"cuda:<index>\")", text);
}
