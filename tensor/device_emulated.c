/* The emulation backend: FERRY_EMULATE_DEVICES=N pretends this process has N CUDA devices whose
   memory is host memory. Each device counts what it holds against a capacity
   (FERRY_EMULATE_DEVICE_MEMORY bytes, 4 GiB by default), so running out of device memory is an
   error tests can reach. Streams and events exist as objects; work on them is done when it is
   queued. */
#include "tensor/device.h"

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

struct ferry__stream {
    int index;
};

struct ferry__event {
    int index;
};

static int n_devices;
static size_t capacity;
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

static void emu_free(int index, void *ptr)
{
    if (!ptr)
        return;
    uint8_t *p = (uint8_t *)ptr - HEAD;
    size_t nbytes;
    memcpy(&nbytes, p, sizeof nbytes);
    atomic_fetch_sub(&in_use[index], nbytes);
    ferry__free_aligned(p);
}

static ferry_status emu_host_alloc(size_t nbytes, void **out)
{
    *out = ferry__malloc_aligned(nbytes ? nbytes : 1);
    return *out ? FERRY_OK
                : ferry__fail(FERRY_ENOMEM, "out of memory for %zu bytes of pinned host memory",
                              nbytes);
}

static void emu_host_free(void *ptr)
{
    ferry__free_aligned(ptr);
}

static ferry_status emu_copy(ferry__stream *s, void *dst, const void *src, size_t nbytes,
                             ferry__copy_kind kind)
{
    memmove(dst, src, nbytes);
    return FERRY_OK;
}

static ferry_status emu_memset(ferry__stream *s, void *dst, int byte, size_t nbytes)
{
    memset(dst, byte, nbytes);
    return FERRY_OK;
}

static ferry_status emu_stream_new(int index, ferry__stream **out)
{
    ferry__stream *s = ferry__malloc(sizeof *s);
    if (!s)
        return ferry__fail(FERRY_ENOMEM, "out of memory for a stream on cuda:%d", index);
    s->index = index;
    *out = s;
    return FERRY_OK;
}

static void emu_stream_free(ferry__stream *s)
{
    ferry__free(s);
}

static ferry_status emu_stream_sync(ferry__stream *s)
{
    return FERRY_OK;
}

static ferry_status emu_event_new(int index, ferry__event **out)
{
    ferry__event *e = ferry__malloc(sizeof *e);
    if (!e)
        return ferry__fail(FERRY_ENOMEM, "out of memory for an event on cuda:%d", index);
    e->index = index;
    *out = e;
    return FERRY_OK;
}

static void emu_event_free(ferry__event *e)
{
    ferry__free(e);
}

static ferry_status emu_event_record(ferry__event *e, ferry__stream *s)
{
    return FERRY_OK;
}

static ferry_status emu_stream_wait(ferry__stream *s, ferry__event *e)
{
    return FERRY_OK;
}

static ferry_status emu_event_sync(ferry__event *e)
{
    return FERRY_OK;
}

static ferry_status emu_event_query(ferry__event *e, bool *done)
{
    *done = true;
    return FERRY_OK;
}

static const ferry__device_ops emulated_ops = {
    .name = "emulated",
    .host_accessible = true,
    .count = emu_count,
    .alloc = emu_alloc,
    .free = emu_free,
    .host_alloc = emu_host_alloc,
    .host_free = emu_host_free,
    .copy = emu_copy,
    .memset = emu_memset,
    .stream_new = emu_stream_new,
    .stream_free = emu_stream_free,
    .stream_sync = emu_stream_sync,
    .event_new = emu_event_new,
    .event_free = emu_event_free,
    .event_record = emu_event_record,
    .stream_wait = emu_stream_wait,
    .event_sync = emu_event_sync,
    .event_query = emu_event_query,
};

const ferry__device_ops *ferry__device_emulated_ops(void)
{
    return &emulated_ops;
}
