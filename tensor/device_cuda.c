/* The CUDA backend: the device ops table over the CUDA runtime API, built with the CUDA Toolkit
   (FERRY_WITH_CUDA) and offered to the device layer from a constructor. Nothing here touches
   the driver at load time, so libferry loads on a machine without a GPU or a driver; the first
   device call asks cudaGetDeviceCount, whose failure (no driver, no device) means 0 devices.

   Memory comes from cudaMallocAsync/cudaFreeAsync on the device's stream (the stream-ordered
   allocator: a free is ordered after the work queued before it), or from cudaMalloc/cudaFree
   on devices without memory pools. Streams are non-blocking (they never wait for the legacy
   default stream), events carry no timing. Calls that depend on the current device set it and
   put the thread's previous one back, so user code that chose a device keeps it. */
#ifdef FERRY_WITH_CUDA
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "core/alloc.h"
#include "core/error.h"
#include "tensor/device.h"
#include "tensor/device_cuda.h"

#define MAX_CUDA 64

struct ferry__stream {
    int index;
    cudaStream_t stream;
};

struct ferry__event {
    int index;
    cudaEvent_t event;
};

/* Per device: 0 = not asked yet, 1 = has memory pools, 2 = has none. */
static atomic_int pools[MAX_CUDA];

ferry_status ferry__cuda_fail(int cuda_error, int device, const char *what)
{
    cudaError_t err = (cudaError_t)cuda_error;
    if (err == cudaSuccess)
        return FERRY_OK;
    cudaGetLastError(); /* the failure is reported here: later calls must not see it again */
    ferry_status rc = FERRY_EDEVICE;
    if (err == cudaErrorMemoryAllocation)
        rc = FERRY_ENOMEM;
    else if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver)
        rc = FERRY_ENOTSUP;
    char where[32] = "CUDA";
    if (device >= 0)
        snprintf(where, sizeof where, "cuda:%d", device);
    const char *name = cudaGetErrorName(err);
    const char *text = cudaGetErrorString(err);
    return ferry__fail(rc, "%s: %s failed: %s (%s)", where, what, text ? text : "unknown error",
                       name ? name : "?");
}

/* Makes `index` the thread's device; *saved gets the one to put back. */
static ferry_status enter(int index, int *saved)
{
    cudaError_t err = cudaGetDevice(saved);
    if (err != cudaSuccess)
        return ferry__cuda_fail(err, index, "cudaGetDevice");
    if (*saved == index)
        return FERRY_OK;
    err = cudaSetDevice(index);
    return ferry__cuda_fail(err, index, "cudaSetDevice");
}

static void leave(int index, int saved)
{
    if (saved != index)
        cudaSetDevice(saved);
}

static int cuda_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: 0 devices, nothing kept */
        return 0;
    }
    return n;
}

static bool has_pools(int index)
{
    if (index < 0 || index >= MAX_CUDA)
        return false;
    int known = atomic_load(&pools[index]);
    if (known == 0) {
        int v = 0;
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryPoolsSupported, index) != cudaSuccess) {
            cudaGetLastError();
            v = 0;
        }
        known = v ? 1 : 2;
        atomic_store(&pools[index], known);
    }
    return known == 1;
}

static cudaStream_t raw_stream(int index)
{
    ferry__stream *s = ferry__device_stream(index);
    return s ? s->stream : NULL;
}

static ferry_status cuda_alloc(int index, size_t nbytes, void **out)
{
    int saved = 0;
    ferry_status rc = enter(index, &saved);
    if (rc != FERRY_OK)
        return rc;
    cudaError_t err;
    const char *what;
    if (has_pools(index)) {
        ferry__stream *s = ferry__device_stream(index);
        if (!s) {
            leave(index, saved);
            return ferry_last_status();
        }
        what = "cudaMallocAsync";
        err = cudaMallocAsync(out, nbytes, s->stream);
    } else {
        what = "cudaMalloc";
        err = cudaMalloc(out, nbytes);
    }
    leave(index, saved);
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return ferry__fail(FERRY_ENOMEM, "CUDA out of memory on cuda:%d: tried to allocate %zu "
                           "bytes (%s)", index, nbytes, what);
    }
    return ferry__cuda_fail(err, index, what);
}

static void cuda_free(int index, void *ptr)
{
    if (!ptr)
        return;
    int saved = 0;
    if (enter(index, &saved) != FERRY_OK)
        return;
    cudaStream_t s = has_pools(index) ? raw_stream(index) : NULL;
    if (s)
        cudaFreeAsync(ptr, s);
    else
        cudaFree(ptr);
    leave(index, saved);
}

static ferry_status cuda_host_alloc(size_t nbytes, void **out)
{
    cudaError_t err = cudaMallocHost(out, nbytes ? nbytes : 1);
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return ferry__fail(FERRY_ENOMEM, "out of memory for %zu bytes of pinned host memory "
                           "(cudaMallocHost)", nbytes);
    }
    return ferry__cuda_fail(err, -1, "cudaMallocHost");
}

static void cuda_host_free(void *ptr)
{
    if (ptr)
        cudaFreeHost(ptr);
}

static ferry_status cuda_copy(ferry__stream *s, void *dst, const void *src, size_t nbytes,
                              ferry__copy_kind kind)
{
    if (nbytes == 0)
        return FERRY_OK;
    enum cudaMemcpyKind k = kind == FERRY__COPY_H2D   ? cudaMemcpyHostToDevice
                            : kind == FERRY__COPY_D2H ? cudaMemcpyDeviceToHost
                                                      : cudaMemcpyDefault; /* any two devices */
    int saved = 0;
    ferry_status rc = enter(s->index, &saved);
    if (rc != FERRY_OK)
        return rc;
    cudaError_t err = cudaMemcpyAsync(dst, src, nbytes, k, s->stream);
    leave(s->index, saved);
    return ferry__cuda_fail(err, s->index, "cudaMemcpyAsync");
}

static ferry_status cuda_memset(ferry__stream *s, void *dst, int byte, size_t nbytes)
{
    if (nbytes == 0)
        return FERRY_OK;
    int saved = 0;
    ferry_status rc = enter(s->index, &saved);
    if (rc != FERRY_OK)
        return rc;
    cudaError_t err = cudaMemsetAsync(dst, byte, nbytes, s->stream);
    leave(s->index, saved);
    return ferry__cuda_fail(err, s->index, "cudaMemsetAsync");
}

static ferry_status cuda_stream_new(int index, ferry__stream **out)
{
    ferry__stream *s = ferry__malloc(sizeof *s);
    if (!s)
        return ferry__fail(FERRY_ENOMEM, "cuda:%d: out of memory for a stream", index);
    s->index = index;
    int saved = 0;
    ferry_status rc = enter(index, &saved);
    if (rc == FERRY_OK) {
        cudaError_t err = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
        leave(index, saved);
        rc = ferry__cuda_fail(err, index, "cudaStreamCreateWithFlags");
    }
    if (rc != FERRY_OK) {
        ferry__free(s);
        return rc;
    }
    *out = s;
    return FERRY_OK;
}

static void cuda_stream_free(ferry__stream *s)
{
    if (!s)
        return;
    cudaStreamDestroy(s->stream); /* queued work still completes */
    ferry__free(s);
}

static ferry_status cuda_stream_sync(ferry__stream *s)
{
    return ferry__cuda_fail(cudaStreamSynchronize(s->stream), s->index, "cudaStreamSynchronize");
}

static ferry_status cuda_event_new(int index, ferry__event **out)
{
    ferry__event *e = ferry__malloc(sizeof *e);
    if (!e)
        return ferry__fail(FERRY_ENOMEM, "cuda:%d: out of memory for an event", index);
    e->index = index;
    int saved = 0;
    ferry_status rc = enter(index, &saved);
    if (rc == FERRY_OK) {
        cudaError_t err = cudaEventCreateWithFlags(&e->event, cudaEventDisableTiming);
        leave(index, saved);
        rc = ferry__cuda_fail(err, index, "cudaEventCreateWithFlags");
    }
    if (rc != FERRY_OK) {
        ferry__free(e);
        return rc;
    }
    *out = e;
    return FERRY_OK;
}

static void cuda_event_free(ferry__event *e)
{
    if (!e)
        return;
    cudaEventDestroy(e->event);
    ferry__free(e);
}

static ferry_status cuda_event_record(ferry__event *e, ferry__stream *s)
{
    int saved = 0;
    ferry_status rc = enter(s->index, &saved);
    if (rc != FERRY_OK)
        return rc;
    cudaError_t err = cudaEventRecord(e->event, s->stream);
    leave(s->index, saved);
    return ferry__cuda_fail(err, s->index, "cudaEventRecord");
}

static ferry_status cuda_stream_wait(ferry__stream *s, ferry__event *e)
{
    return ferry__cuda_fail(cudaStreamWaitEvent(s->stream, e->event, 0), s->index,
                            "cudaStreamWaitEvent");
}

static ferry_status cuda_event_sync(ferry__event *e)
{
    return ferry__cuda_fail(cudaEventSynchronize(e->event), e->index, "cudaEventSynchronize");
}

static ferry_status cuda_event_query(ferry__event *e, bool *done)
{
    cudaError_t err = cudaEventQuery(e->event);
    *done = err == cudaSuccess;
    if (err == cudaErrorNotReady) {
        cudaGetLastError(); /* not an error: the event is still pending */
        return FERRY_OK;
    }
    return ferry__cuda_fail(err, e->index, "cudaEventQuery");
}

static const ferry__device_ops cuda_ops = {
    .name = "cuda",
    .host_accessible = false,
    .count = cuda_count,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .copy = cuda_copy,
    .memset = cuda_memset,
    .stream_new = cuda_stream_new,
    .stream_free = cuda_stream_free,
    .stream_sync = cuda_stream_sync,
    .event_new = cuda_event_new,
    .event_free = cuda_event_free,
    .event_record = cuda_event_record,
    .stream_wait = cuda_stream_wait,
    .event_sync = cuda_event_sync,
    .event_query = cuda_event_query,
};

void *ferry__cuda_stream(int index)
{
    const ferry__device_ops *ops = ferry__device_ops_get();
    if (ops && ops != &cuda_ops) {
        ferry__fail(FERRY_ENOTSUP, "cuda:%d: the devices are %s, not CUDA: there is no CUDA "
                    "stream", index, ops->name);
        return NULL;
    }
    ferry__stream *s = ferry__device_stream(index);
    return s ? (void *)s->stream : NULL;
}

__attribute__((constructor)) static void register_cuda(void)
{
    ferry__device_register_backend(&cuda_ops);
}
#else
/* Built without the CUDA Toolkit: no CUDA backend, and the device layer reports no devices
   (or the emulation's). An ISO C file must not be empty. */
typedef int ferry__no_cuda_backend;
#endif
