/* The device layer: one small table of operations every device backend fills (memory, copies,
   streams, events), and the calls the rest of ferry uses, which pick the backend once per
   process. Backends: CUDA (tensor/device_cuda.c, built with the CUDA Toolkit) and the
   emulation (tensor/device_emulated.c, FERRY_EMULATE_DEVICES=N), whose devices are host memory
   with their own streams, so everything above this table runs and is tested without a GPU.

   Streams: each device has one stream ferry orders its own work on (ferry__device_stream). Work
   on a stream runs in the order it was queued; a copy or kernel queued there returns before it
   ran. Whoever reads device memory on the host, or hands it to another stream or to the fabric,
   first waits for the stream (an event recorded after the last write, then event_sync or
   stream_wait). Every operation returns FERRY_OK or a status whose message names the device and
   the cause (FERRY_ENOMEM for out of device memory, FERRY_EDEVICE for a device failure). */
#ifndef FERRY_TENSOR_DEVICE_H
#define FERRY_TENSOR_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/device.h"
#include "ferry/error.h"
#include "ferry/tensor.h"

typedef struct ferry__stream ferry__stream;
typedef struct ferry__event ferry__event;

typedef enum { FERRY__COPY_H2D, FERRY__COPY_D2H, FERRY__COPY_D2D } ferry__copy_kind;

typedef struct {
    const char *name;      /* "cuda", "emulated" */
    bool host_accessible;  /* device memory is plain host memory (the emulation): CPU kernels
                              may run on it once its stream is synchronized */
    /* Devices present (0 when none, never an error). */
    int (*count)(void);
    /* Raw device memory; the caching allocator (ferry__device_alloc) sits above these. free is
       ordered after the work queued on the device's stream (ferry__device_stream) so far, as
       cudaFreeAsync is: the memory may be handed out again only once that stream passed it. */
    ferry_status (*alloc)(int index, size_t nbytes, void **out);
    void (*free)(int index, void *ptr);
    /* Page-locked host memory the device copies to and from at full speed. */
    ferry_status (*host_alloc)(size_t nbytes, void **out);
    void (*host_free)(void *ptr);
    /* Queues a copy of nbytes on `stream` (of the device that owns the device side; for D2D
       both devices may differ). The host side of H2D/D2H must be page-locked or stay untouched
       until the stream passed the copy. */
    ferry_status (*copy)(ferry__stream *stream, void *dst, const void *src, size_t nbytes,
                         ferry__copy_kind kind);
    ferry_status (*memset)(ferry__stream *stream, void *dst, int byte, size_t nbytes);
    ferry_status (*stream_new)(int index, ferry__stream **out);
    void (*stream_free)(ferry__stream *stream);
    ferry_status (*stream_sync)(ferry__stream *stream);
    ferry_status (*event_new)(int index, ferry__event **out);
    void (*event_free)(ferry__event *event);
    /* The event completes once the stream passed everything queued before the record. */
    ferry_status (*event_record)(ferry__event *event, ferry__stream *stream);
    /* Work queued on `stream` after this waits for the event; the host does not wait. */
    ferry_status (*stream_wait)(ferry__stream *stream, ferry__event *event);
    ferry_status (*event_sync)(ferry__event *event);
    /* *done = the event completed, without waiting. */
    ferry_status (*event_query)(ferry__event *event, bool *done);
} ferry__device_ops;

/* A backend offers itself (from a constructor: the CUDA one when built). The emulation is
   chosen instead when FERRY_EMULATE_DEVICES is set. */
void ferry__device_register_backend(const ferry__device_ops *ops);
/* The backend in use, or NULL when this process has no devices. */
const ferry__device_ops *ferry__device_ops_get(void);

/* FERRY_OK when `device` can hold tensors here: the CPU, or a CUDA index below the device count
   (index -1 becomes the thread's current device in *resolved). Else FERRY_EINVAL (unknown type,
   negative index) or FERRY_ENOTSUP (no devices: "no CUDA device: ..." says why), naming the
   device. */
ferry_status ferry__device_resolve(ferry_device device, ferry_device *resolved);
/* The stream ferry orders work on for device `index` (created with the first use, lives until
   the process ends), or NULL with the backend's error. */
ferry__stream *ferry__device_stream(int index);
/* Synchronizes the device's stream: host code may then read and write its memory (the
   emulation). */
ferry_status ferry__device_sync(int index);
/* True for a device tensor whose memory the host can read after ferry__device_sync (the
   emulation); false for the CPU and for real GPUs. */
bool ferry__device_host_accessible(ferry_device device);

/* A copy of nbytes between any two places (CPU or device), done when it returns: queued on the
   device's stream, then that stream is synchronized. */
ferry_status ferry__device_copy_sync(void *dst, ferry_device dst_device, const void *src,
                                     ferry_device src_device, size_t nbytes);

/* The caching allocator for device memory (tensor/device_alloc.c), between storage and the
   backend's alloc/free, so steady-state work does not call the driver per tensor. Sizes round
   up to 512-byte granules below 1 MiB and to 2 MiB granules above; a freed block goes on its
   device's free list for its rounded size and is handed out again only on the same device,
   once the device's stream passed the work queued before the free. Each device caches at most
   FERRY_DEVICE_CACHE_BYTES (read once; default 1 GiB, 0 turns caching off, and so do sanitizer
   builds); on an allocation failure the device's cache is emptied, its stream synchronized and
   the allocation retried once before FERRY_ENOMEM. `index` is a resolved device index. */
ferry_status ferry__device_alloc(int index, size_t nbytes, void **out);
/* Gives back a block from ferry__device_alloc; nbytes as asked for. NULL is ignored. */
void ferry__device_free(int index, void *ptr, size_t nbytes);
/* Gives every cached block of device `index` (-1: all devices) back to the backend. */
void ferry__device_cache_empty(int index);

typedef struct {
    size_t allocated;      /* bytes in blocks handed out and not given back (rounded sizes) */
    size_t cached;         /* bytes in free blocks kept for reuse */
    size_t cache_limit;    /* FERRY_DEVICE_CACHE_BYTES: the most `cached` may reach */
    uint64_t driver_allocs; /* calls to the backend's alloc (failed ones too) */
    uint64_t driver_frees;  /* calls to the backend's free */
    uint64_t reuses;        /* allocations served from the cache */
} ferry__device_alloc_counters;
/* The counters of device `index` (all zero for an index with no devices). */
void ferry__device_alloc_stats(int index, ferry__device_alloc_counters *out);

#endif
