/* The emulation backend: FERRY_EMULATE_DEVICES=N pretends this process has N CUDA devices whose
   memory is host memory. Each device counts what it holds against a capacity
   (FERRY_EMULATE_DEVICE_MEMORY bytes, 4 GiB by default), so running out of device memory is an
   error tests can reach; FERRY_EMULATE_DEVICE_DELAY_US=N holds every queued operation back N
   microseconds, so a missing stream wait shows up as stale data. Streams and events are in device_emulated_stream.c: real queues, each
   drained by its own thread. */
#include "tensor/device_emulated.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#define MAX_EMULATED 16
#define DEFAULT_CAPACITY ((size_t)4 << 30)

static int n_devices;
static size_t capacity;
static unsigned delay_us;
static atomic_size_t in_use[MAX_EMULATED];
static pthread_once_t read_once = PTHREAD_ONCE_INIT;

static void read_env(void)
{
    const char *v = getenv("FERRY_EMULATE_DEVICES");
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || n < 0 || n > MAX_EMULATED) {
        ferry__log_warn("device", "FERRY_EMULATE_DEVICES='%s' is not a device count 0..%d: no "
                        "devices emulated", v ? v : "", MAX_EMULATED);
        n = 0;
    }
    n_devices = (int)n;
    capacity = DEFAULT_CAPACITY;
    const char *c = getenv("FERRY_EMULATE_DEVICE_MEMORY");
    if (c && *c) {
        unsigned long long bytes = strtoull(c, &end, 10);
        if (*end || bytes == 0)
            ferry__log_warn("device", "FERRY_EMULATE_DEVICE_MEMORY='%s' is not a byte count: "
                            "%zu bytes per device", c, capacity);
        else
            capacity = (size_t)bytes;
    }
    const char *d = getenv("FERRY_EMULATE_DEVICE_DELAY_US");
    if (d && *d) {
        unsigned long us = strtoul(d, &end, 10);
        if (*end || us > 10000000ul)
            ferry__log_warn("device", "FERRY_EMULATE_DEVICE_DELAY_US='%s' is not a count of "
                            "microseconds up to 10 s: no delay", d);
        else
            delay_us = (unsigned)us;
    }
}

static int emu_count(void)
{
    pthread_once(&read_once, read_env);
    return n_devices;
}

/* Every block starts with its size, so free can give the bytes back to the device's count. */
#define HEAD 64

static ferry_status emu_alloc(int index, size_t nbytes, void **out)
{
    size_t before = atomic_fetch_add(&in_use[index], nbytes);
    if (before + nbytes > capacity || before + nbytes < before) {
        atomic_fetch_sub(&in_use[index], nbytes);
        return ferry__fail(FERRY_ENOMEM, "CUDA out of memory on cuda:%d: tried to allocate %zu "
                           "bytes with %zu of %zu in use", index, nbytes, before, capacity);
    }
    uint8_t *p = nbytes > SIZE_MAX - HEAD ? NULL : ferry__malloc_aligned(HEAD + nbytes);
    if (!p) {
        atomic_fetch_sub(&in_use[index], nbytes);
        return ferry__fail(FERRY_ENOMEM, "out of host memory emulating %zu bytes on cuda:%d",
                           nbytes, index);
    }
    memcpy(p, &nbytes, sizeof nbytes);
    *out = p + HEAD;
    return FERRY_OK;
}

void ferry__emu_release(int index, void *ptr)
{
    uint8_t *p = (uint8_t *)ptr - HEAD;
    size_t nbytes;
    memcpy(&nbytes, p, sizeof nbytes);
    atomic_fetch_sub(&in_use[index], nbytes);
    ferry__free_aligned(p);
}

/* The bytes go back once the device's stream passed the work queued before the free, as
   cudaFreeAsync on that stream does; without a stream (exit, no memory) at once. */
static void emu_free(int index, void *ptr)
{
    if (!ptr)
        return;
    ferry__stream *s = ferry__device_stream(index);
    if (s) {
        ferry__emu_free_on(s, index, ptr);
    } else {
        ferry__emu_release(index, ptr);
    }
}

/* Page-locked host memory: plain aligned memory, listed so an H2D copy can tell it from
   pageable memory (read at run time rather than snapshotted). Guarded by pinned_lock. */
typedef struct {
    const uint8_t *base;
    size_t nbytes;
} pinned_block;
static pthread_mutex_t pinned_lock = PTHREAD_MUTEX_INITIALIZER;
static pinned_block *pinned;
static size_t n_pinned, cap_pinned;

static ferry_status emu_host_alloc(size_t nbytes, void **out)
{
    void *p = ferry__malloc_aligned(nbytes ? nbytes : 1);
    if (!p)
        return ferry__fail(FERRY_ENOMEM, "out of memory for %zu bytes of pinned host memory",
                           nbytes);
    pthread_mutex_lock(&pinned_lock);
    if (n_pinned == cap_pinned) {
        size_t cap = cap_pinned ? 2 * cap_pinned : 16;
        pinned_block *grown = ferry__realloc(pinned, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&pinned_lock);
            ferry__free_aligned(p);
            return ferry__fail(FERRY_ENOMEM, "out of memory listing pinned host memory");
        }
        pinned = grown;
        cap_pinned = cap;
    }
    pinned[n_pinned++] = (pinned_block){p, nbytes ? nbytes : 1};
    pthread_mutex_unlock(&pinned_lock);
    *out = p;
    return FERRY_OK;
}

static void emu_host_free(void *ptr)
{
    if (!ptr)
        return;
    pthread_mutex_lock(&pinned_lock);
    for (size_t i = 0; i < n_pinned; i++) {
        if (pinned[i].base == ptr) {
            pinned[i] = pinned[--n_pinned];
            break;
        }
    }
    pthread_mutex_unlock(&pinned_lock);
    ferry__free_aligned(ptr);
}

bool ferry__emu_is_pinned(const void *p, size_t n)
{
    const uint8_t *b = p;
    bool found = false;
    pthread_mutex_lock(&pinned_lock);
    for (size_t i = 0; i < n_pinned && !found; i++)
        found = b >= pinned[i].base && n <= pinned[i].nbytes &&
                (size_t)(b - pinned[i].base) <= pinned[i].nbytes - n;
    pthread_mutex_unlock(&pinned_lock);
    return found;
}

unsigned ferry__emu_delay_us(void)
{
    return delay_us;
}

static const ferry__device_ops emulated_ops = {
    .name = "emulated",
    .host_accessible = true,
    .count = emu_count,
    .alloc = emu_alloc,
    .free = emu_free,
    .host_alloc = emu_host_alloc,
    .host_free = emu_host_free,
    .copy = ferry__emu_copy,
    .memset = ferry__emu_memset,
    .stream_new = ferry__emu_stream_new,
    .stream_free = ferry__emu_stream_free,
    .stream_sync = ferry__emu_stream_sync,
    .event_new = ferry__emu_event_new,
    .event_free = ferry__emu_event_free,
    .event_record = ferry__emu_event_record,
    .stream_wait = ferry__emu_stream_wait,
    .event_sync = ferry__emu_event_sync,
    .event_query = ferry__emu_event_query,
};

const ferry__device_ops *ferry__device_emulated_ops(void)
{
    return &emulated_ops;
}
