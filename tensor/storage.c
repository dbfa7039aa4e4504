/* Storage: the refcounted block of bytes that tensors view. Every view of one tensor holds a
   reference to the same storage, so memory lives until the last view goes. Memory ferry
   allocates is 64-byte aligned (vector loads, and registration with the fabric); foreign memory
   is wrapped with the owner's deleter, which runs exactly once, on the last release. Device
   storage comes from the device layer's caching allocator (ferry__device_alloc, which keeps
   freed blocks per device) and goes back to it. Big host
   blocks are kept in a small cache when freed: a fresh block of megabytes costs a page fault
   (and zeroing) per page on first touch, which dominates moving a large tensor over RPC, where
   every received tensor is new memory. */
#include "tensor/tensor_impl.h"

#include <pthread.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/error.h"
#include "tensor/device.h"

#if defined(__SANITIZE_ADDRESS__)
#define CACHE_SLOTS 0 /* reuse would hide a use after free from the sanitizer */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CACHE_SLOTS 0
#endif
#endif
#ifndef CACHE_SLOTS
#define CACHE_SLOTS 4
#endif
#define CACHE_MIN_BYTES ((size_t)1 << 20)
#define CACHE_MAX_BYTES ((size_t)128 << 20)

typedef struct {
    void *data;
    size_t nbytes;
    uint64_t age; /* cache_clock when it was put: the smallest is the oldest */
} cached_block;

/* Process-wide, guarded by cache_lock: blocks of at least CACHE_MIN_BYTES, reused only for
   the exact same size, CACHE_MAX_BYTES at most in all. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static cached_block cache[CACHE_SLOTS + 1];
static size_t cache_bytes;
static uint64_t cache_clock;

static void *cache_take(size_t nbytes)
{
    void *data = NULL;
    if (CACHE_SLOTS == 0 || nbytes < CACHE_MIN_BYTES)
        return NULL;
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < CACHE_SLOTS && !data; i++) {
        if (cache[i].data && cache[i].nbytes == nbytes) {
            data = cache[i].data;
            cache[i].data = NULL;
            cache_bytes -= nbytes;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return data;
}

/* True when the cache kept the block. A full cache makes room by dropping its oldest blocks, so
   blocks of a size no longer in use (the first few of a program) cannot keep newer ones out. */
static bool cache_put(void *data, size_t nbytes)
{
    void *evicted[CACHE_SLOTS + 1];
    int n_evicted = 0;
    if (CACHE_SLOTS == 0 || nbytes < CACHE_MIN_BYTES || nbytes > CACHE_MAX_BYTES)
        return false;
    pthread_mutex_lock(&cache_lock);
    int slot = -1;
    for (int i = 0; i < CACHE_SLOTS && slot < 0; i++)
        if (!cache[i].data)
            slot = i;
    while (slot < 0 || cache_bytes + nbytes > CACHE_MAX_BYTES) {
        int oldest = -1;
        for (int i = 0; i < CACHE_SLOTS; i++)
            if (cache[i].data && (oldest < 0 || cache[i].age < cache[oldest].age))
                oldest = i;
        evicted[n_evicted++] = cache[oldest].data;
        cache_bytes -= cache[oldest].nbytes;
        cache[oldest].data = NULL;
        if (slot < 0)
            slot = oldest;
    }
    cache[slot] = (cached_block){data, nbytes, ++cache_clock};
    cache_bytes += nbytes;
    pthread_mutex_unlock(&cache_lock);
    for (int i = 0; i < n_evicted; i++)
        ferry__free_aligned(evicted[i]);
    return true;
}

/* Device memory for a new storage on `device` (resolved), or NULL with the device's error. */
static void *device_alloc(size_t nbytes, ferry_device device)
{
    void *data = NULL;
    if (ferry__device_alloc(device.index, nbytes, &data) != FERRY_OK)
        return NULL;
    return data;
}

ferry_storage *ferry__storage_new(size_t nbytes, ferry_device device)
{
    if (ferry__device_resolve(device, &device) != FERRY_OK)
        return NULL;
    ferry_storage *s = ferry__malloc(sizeof *s);
    if (!s)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory allocating tensor storage");
    if (device.type == FERRY_CUDA) {
        s->data = device_alloc(nbytes, device);
        if (!s->data) {
            ferry__free(s);
            return NULL;
        }
    } else {
        /* a zero-byte storage still gets a real (dummy) block so data pointers are never NULL */
        s->data = cache_take(nbytes);
        if (!s->data)
            s->data = ferry__malloc_aligned(nbytes);
    }
    if (!s->data) {
        ferry__free(s);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory allocating %zu bytes of tensor storage",
                                nbytes);
    }
    ferry__ref_init(&s->ref);
    s->nbytes = nbytes;
    s->device = device;
    s->deleter = NULL;
    s->deleter_ctx = NULL;
    s->is_foreign = false;
    return s;
}

ferry_storage *ferry__storage_wrap(void *data, size_t nbytes, ferry_device device,
                                   void (*deleter)(void *, void *), void *ctx)
{
    if (ferry__device_resolve(device, &device) != FERRY_OK)
        return NULL;
    if (!data && nbytes > 0)
        return ferry__fail_null(FERRY_EINVAL, "cannot wrap NULL data of %zu bytes", nbytes);
    ferry_storage *s = ferry__malloc(sizeof *s);
    if (!s)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory wrapping tensor storage");
    ferry__ref_init(&s->ref);
    s->data = data;
    s->nbytes = nbytes;
    s->device = device;
    s->deleter = deleter;
    s->deleter_ctx = ctx;
    s->is_foreign = true;
    return s;
}

void ferry__storage_retain(ferry_storage *s)
{
    if (s)
        ferry__ref_inc(&s->ref);
}

void ferry__storage_release(ferry_storage *s)
{
    if (!s || !ferry__ref_dec(&s->ref))
        return;
    if (s->is_foreign) {
        if (s->deleter)
            s->deleter(s->data, s->deleter_ctx);
    } else if (s->device.type == FERRY_CUDA) {
        ferry__device_free(s->device.index, s->data, s->nbytes);
    } else if (!cache_put(s->data, s->nbytes)) {
        ferry__free_aligned(s->data);
    }
    ferry__free(s);
}
