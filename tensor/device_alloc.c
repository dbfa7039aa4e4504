/* The caching allocator for device memory: freed blocks are kept per device, by rounded size,
   and handed out again instead of calling the driver (cudaMallocAsync costs microseconds and
   may synchronize; a training step allocates and frees the same sizes every iteration).

   Reuse and stream order: a block freed while work queued on the device's stream may still use
   it gets an event recorded on that stream at the free; it is handed out again only once the
   event completed (a block whose event is still pending is taken only when no ready block of
   its size exists, after waiting for the event). An event rather than a stream synchronize at
   free keeps free from blocking the host; the wait, when there is one, falls on the allocation
   that needs that very block, and is no longer than the work that was queued before the free.

   The bound: each device caches at most FERRY_DEVICE_CACHE_BYTES; a free that would pass it
   gives the oldest cached blocks back to the backend first (and a block larger than the bound
   goes straight back). Sanitizer builds cache nothing, so a use after free stays visible. */
#include "tensor/device.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#define MAX_DEVICES 64
#define BUCKETS 64
#define SMALL_LIMIT ((size_t)1 << 20)
#define SMALL_GRANULE ((size_t)512)
#define LARGE_GRANULE ((size_t)2 << 20)
#define DEFAULT_LIMIT ((size_t)1 << 30)

#if defined(__SANITIZE_ADDRESS__)
#define CACHE_ALLOWED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CACHE_ALLOWED 0
#endif
#endif
#ifndef CACHE_ALLOWED
#define CACHE_ALLOWED 1
#endif

typedef struct block {
    struct block *prev, *next;         /* in its bucket (newest first) */
    struct block *older, *newer;       /* in the device's age order */
    void *ptr;
    size_t size;                       /* rounded */
    ferry__event *freed;               /* recorded on the device's stream at the free */
} block;

typedef struct {
    pthread_mutex_t lock; /* guards everything below */
    block *buckets[BUCKETS];
    block *oldest, *newest;
    block *spare; /* records (and their events) not holding a block, chained by next */
    ferry__device_alloc_counters c;
} device_cache;

static device_cache caches[MAX_DEVICES];
static size_t limit_bytes;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init(void)
{
    for (int i = 0; i < MAX_DEVICES; i++)
        pthread_mutex_init(&caches[i].lock, NULL);
    limit_bytes = DEFAULT_LIMIT;
    const char *v = getenv("FERRY_DEVICE_CACHE_BYTES");
    if (v && *v) {
        char *end = NULL;
        unsigned long long n = strtoull(v, &end, 10);
        if (*end || *v == '-')
            ferry__log_warn("device", "FERRY_DEVICE_CACHE_BYTES='%s' is not a byte count: "
                            "caching up to %zu bytes per device", v, limit_bytes);
        else
            limit_bytes = (size_t)n;
    }
    if (!CACHE_ALLOWED)
        limit_bytes = 0;
    for (int i = 0; i < MAX_DEVICES; i++)
        caches[i].c.cache_limit = limit_bytes;
}

static size_t round_size(size_t nbytes)
{
    size_t g = nbytes < SMALL_LIMIT ? SMALL_GRANULE : LARGE_GRANULE;
    if (nbytes == 0)
        return g;
    if (nbytes > SIZE_MAX - g)
        return nbytes; /* the backend will refuse it */
    return (nbytes + g - 1) / g * g;
}

static int bucket_of(size_t size)
{
    size_t g = size < SMALL_LIMIT ? SMALL_GRANULE : LARGE_GRANULE;
    return (int)((size / g) % BUCKETS);
}

/* Takes b off its bucket and the age order; lock held. */
static void unlink_block(device_cache *dc, block *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        dc->buckets[bucket_of(b->size)] = b->next;
    if (b->next)
        b->next->prev = b->prev;
    if (b->older)
        b->older->newer = b->newer;
    else
        dc->oldest = b->newer;
    if (b->newer)
        b->newer->older = b->older;
    else
        dc->newest = b->older;
    dc->c.cached -= b->size;
}

static void spare_put(device_cache *dc, block *b)
{
    b->ptr = NULL;
    b->next = dc->spare;
    dc->spare = b;
}

/* A cached block of exactly `size` on device `index`, ready for new work, or NULL. */
static void *cache_take(int index, size_t size)
{
    const ferry__device_ops *ops = ferry__device_ops_get();
    device_cache *dc = &caches[index];
    block *pick = NULL;
    bool ready = false;
    pthread_mutex_lock(&dc->lock);
    for (block *b = dc->buckets[bucket_of(size)]; b && !ready; b = b->next) {
        if (b->size != size)
            continue;
        bool done = true;
        if (b->freed && ops->event_query(b->freed, &done) != FERRY_OK)
            done = false;
        pick = b; /* the chain is newest first: the last match is the oldest */
        ready = done;
    }
    if (pick) {
        unlink_block(dc, pick);
        dc->c.allocated += size;
        dc->c.reuses++;
    }
    pthread_mutex_unlock(&dc->lock);
    if (!pick)
        return NULL;
    void *ptr = pick->ptr;
    if (!ready && ops->event_sync(pick->freed) != FERRY_OK) {
        /* the device failed: fall back to its whole stream, which reports it again later */
        ferry__device_sync(index);
    }
    pthread_mutex_lock(&dc->lock);
    spare_put(dc, pick);
    pthread_mutex_unlock(&dc->lock);
    return ptr;
}

static ferry_status driver_alloc(int index, size_t size, void **out)
{
    device_cache *dc = &caches[index];
    ferry_status rc = ferry__device_ops_get()->alloc(index, size, out);
    pthread_mutex_lock(&dc->lock);
    dc->c.driver_allocs++;
    if (rc == FERRY_OK)
        dc->c.allocated += size;
    pthread_mutex_unlock(&dc->lock);
    return rc;
}

ferry_status ferry__device_alloc(int index, size_t nbytes, void **out)
{
    pthread_once(&init_once, init);
    if (index < 0 || index >= MAX_DEVICES || !ferry__device_ops_get())
        return ferry__fail(FERRY_EINVAL, "cuda:%d: no such device to allocate on", index);
    size_t size = limit_bytes > 0 ? round_size(nbytes) : nbytes ? nbytes : 1;
    if (limit_bytes > 0) {
        *out = cache_take(index, size);
        if (*out)
            return FERRY_OK;
    }
    ferry_status rc = driver_alloc(index, size, out);
    if (rc != FERRY_ENOMEM)
        return rc;
    /* out of memory: give the cache back, let pending frees land, and try once more */
    ferry__device_cache_empty(index);
    ferry__device_sync(index);
    return driver_alloc(index, size, out);
}

static void driver_free(int index, void *ptr, size_t size)
{
    device_cache *dc = &caches[index];
    ferry__device_ops_get()->free(index, ptr);
    pthread_mutex_lock(&dc->lock);
    dc->c.driver_frees++;
    pthread_mutex_unlock(&dc->lock);
}

/* A record with an event recorded on the device's stream now, or NULL (then no caching). */
static block *record_free(int index)
{
    const ferry__device_ops *ops = ferry__device_ops_get();
    device_cache *dc = &caches[index];
    pthread_mutex_lock(&dc->lock);
    block *b = dc->spare;
    if (b)
        dc->spare = b->next;
    pthread_mutex_unlock(&dc->lock);
    if (!b)
        b = ferry__calloc(1, sizeof *b);
    if (!b)
        return NULL;
    ferry__stream *s = ferry__device_stream(index);
    if (s && !b->freed && ops->event_new(index, &b->freed) != FERRY_OK)
        b->freed = NULL;
    if (!s || !b->freed || ops->event_record(b->freed, s) != FERRY_OK) {
        pthread_mutex_lock(&dc->lock);
        spare_put(dc, b);
        pthread_mutex_unlock(&dc->lock);
        return NULL;
    }
    return b;
}

void ferry__device_free(int index, void *ptr, size_t nbytes)
{
    if (!ptr)
        return;
    pthread_once(&init_once, init);
    device_cache *dc = &caches[index];
    size_t size = limit_bytes > 0 ? round_size(nbytes) : nbytes ? nbytes : 1;
    pthread_mutex_lock(&dc->lock);
    dc->c.allocated -= size;
    pthread_mutex_unlock(&dc->lock);
    block *b = size <= limit_bytes ? record_free(index) : NULL;
    if (!b) {
        driver_free(index, ptr, size);
        return;
    }
    b->ptr = ptr;
    b->size = size;
    block *evicted = NULL;
    pthread_mutex_lock(&dc->lock);
    while (dc->c.cached + size > limit_bytes && dc->oldest) {
        block *old = dc->oldest;
        unlink_block(dc, old);
        old->next = evicted;
        evicted = old;
    }
    int k = bucket_of(size);
    b->prev = NULL;
    b->next = dc->buckets[k];
    if (b->next)
        b->next->prev = b;
    dc->buckets[k] = b;
    b->newer = NULL;
    b->older = dc->newest;
    if (dc->newest)
        dc->newest->newer = b;
    else
        dc->oldest = b;
    dc->newest = b;
    dc->c.cached += size;
    pthread_mutex_unlock(&dc->lock);
    while (evicted) {
        block *next = evicted->next;
        driver_free(index, evicted->ptr, evicted->size); /* ordered on the stream */
        pthread_mutex_lock(&dc->lock);
        spare_put(dc, evicted);
        pthread_mutex_unlock(&dc->lock);
        evicted = next;
    }
}

void ferry__device_cache_empty(int index)
{
    pthread_once(&init_once, init);
    if (index < 0) {
        for (int i = 0; i < MAX_DEVICES; i++)
            ferry__device_cache_empty(i);
        return;
    }
    if (index >= MAX_DEVICES)
        return;
    device_cache *dc = &caches[index];
    block *all = NULL;
    pthread_mutex_lock(&dc->lock);
    while (dc->oldest) {
        block *b = dc->oldest;
        unlink_block(dc, b);
        b->next = all;
        all = b;
    }
    pthread_mutex_unlock(&dc->lock);
    while (all) {
        block *next = all->next;
        driver_free(index, all->ptr, all->size);
        pthread_mutex_lock(&dc->lock);
        spare_put(dc, all);
        pthread_mutex_unlock(&dc->lock);
        all = next;
    }
}

void ferry__device_alloc_stats(int index, ferry__device_alloc_counters *out)
{
    pthread_once(&init_once, init);
    *out = (ferry__device_alloc_counters){0};
    if (index < 0 || index >= MAX_DEVICES)
        return;
    pthread_mutex_lock(&caches[index].lock);
    *out = caches[index].c;
    pthread_mutex_unlock(&caches[index].lock);
}
