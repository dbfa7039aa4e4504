/* Unit tests for the caching allocator of device memory, on emulated devices: rounding, reuse on
   the same device only, the bound on cached bytes, turning it off, emptying the cache when an
   allocation fails, and reuse only after the stream passed the work queued before the free. */
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "tensor/device.h"

static ferry__device_alloc_counters stats(int index)
{
    ferry__device_alloc_counters c;
    ferry__device_alloc_stats(index, &c);
    return c;
}

/* Sanitizer builds cache nothing (a reused block would hide a use after free). */
static void setup(const char *devices, const char *cache_bytes)
{
    setenv("FERRY_EMULATE_DEVICES", devices, 1);
    if (cache_bytes)
        setenv("FERRY_DEVICE_CACHE_BYTES", cache_bytes, 1);
    cr_assert_eq(ferry_cuda_device_count(), atoi(devices));
    if (cache_bytes && strcmp(cache_bytes, "0") != 0 && stats(0).cache_limit == 0)
        cr_skip_test("the device cache is off in sanitizer builds");
    if (!cache_bytes && stats(0).cache_limit == 0)
        cr_skip_test("the device cache is off in sanitizer builds");
}

static void *alloc(int index, size_t n)
{
    void *p = NULL;
    ferry_assert_ok(ferry__device_alloc(index, n, &p));
    cr_assert_not_null(p);
    return p;
}

Test(device_alloc, reuses_block_of_same_rounded_size_when_freed, .timeout = 10)
{
    setup("1", NULL);
    cr_assert_eq(stats(0).cache_limit, (size_t)1 << 30, "1 GiB by default");
    void *a = alloc(0, 1000);
    cr_assert_eq(stats(0).allocated, 1024, "512-byte granules below 1 MiB");
    ferry__device_free(0, a, 1000);
    cr_assert_eq(stats(0).allocated, 0);
    cr_assert_eq(stats(0).cached, 1024);
    void *b = alloc(0, 700);
    cr_assert_eq(b, a, "700 bytes round to the same 1024-byte block");
    ferry__device_alloc_counters c = stats(0);
    cr_assert_eq(c.driver_allocs, 1);
    cr_assert_eq(c.reuses, 1);
    cr_assert_eq(c.cached, 0);
    void *other = alloc(0, 1100); /* 1536: another size, a new block */
    cr_assert_neq(other, a);
    cr_assert_eq(stats(0).driver_allocs, 2);
    ferry__device_free(0, other, 1100);
    ferry__device_free(0, b, 700);
    cr_assert_eq(stats(0).driver_frees, 0, "both kept for reuse");
    cr_assert_eq(stats(0).cached, 1024 + 1536);
}

Test(device_alloc, rounds_to_2mib_when_a_mib_or_more, .timeout = 10)
{
    setup("1", NULL);
    void *a = alloc(0, ((size_t)1 << 20) + 1);
    cr_assert_eq(stats(0).allocated, (size_t)2 << 20);
    ferry__device_free(0, a, ((size_t)1 << 20) + 1);
    void *b = alloc(0, (size_t)2 << 20);
    cr_assert_eq(b, a);
    ferry__device_free(0, b, (size_t)2 << 20);
    void *z = alloc(0, 0); /* a zero-byte tensor still gets a real block */
    cr_assert_eq(stats(0).allocated, 512);
    ferry__device_free(0, z, 0);
}

Test(device_alloc, reuses_only_on_the_same_device, .timeout = 10)
{
    setup("2", NULL);
    void *a = alloc(0, 4096);
    ferry__device_free(0, a, 4096);
    void *b = alloc(1, 4096);
    cr_assert_neq(b, a);
    cr_assert_eq(stats(1).driver_allocs, 1);
    cr_assert_eq(stats(1).reuses, 0);
    cr_assert_eq(stats(0).cached, 4096, "cuda:0's block stays in cuda:0's cache");
    ferry__device_free(1, b, 4096);
}

Test(device_alloc, gives_oldest_back_when_bound_reached, .timeout = 10)
{
    setup("1", "4096");
    void *p[3];
    for (int i = 0; i < 3; i++)
        p[i] = alloc(0, 2048);
    for (int i = 0; i < 3; i++)
        ferry__device_free(0, p[i], 2048);
    ferry__device_alloc_counters c = stats(0);
    cr_assert_eq(c.cache_limit, 4096);
    cr_assert_eq(c.cached, 4096);
    cr_assert_eq(c.driver_frees, 1);
    void *q = alloc(0, 2048);
    cr_assert(q == p[1] || q == p[2], "the oldest, p[0], went back to the device");
    ferry__device_free(0, q, 2048);
    void *big = alloc(0, 8192); /* larger than the bound: never cached */
    ferry__device_free(0, big, 8192);
    cr_assert_eq(stats(0).driver_frees, 2);
    cr_assert_eq(stats(0).cached, 4096);
}

Test(device_alloc, calls_the_driver_every_time_when_cache_is_zero, .timeout = 10)
{
    setup("1", "0");
    cr_assert_eq(stats(0).cache_limit, 0);
    for (int i = 0; i < 4; i++) {
        void *p = alloc(0, 1000);
        ferry__device_free(0, p, 1000);
    }
    ferry__device_alloc_counters c = stats(0);
    cr_assert_eq(c.driver_allocs, 4);
    cr_assert_eq(c.driver_frees, 4);
    cr_assert_eq(c.cached, 0);
    cr_assert_eq(c.reuses, 0);
}

Test(device_alloc, empties_cache_and_retries_when_device_is_full, .timeout = 10)
{
    setenv("FERRY_EMULATE_DEVICE_MEMORY", "4194304", 1); /* 4 MiB */
    setup("1", NULL);
    void *a = alloc(0, (size_t)2 << 20);
    ferry__device_free(0, a, (size_t)2 << 20); /* cached: the device still counts it in use */
    cr_assert_eq(stats(0).cached, (size_t)2 << 20);
    void *b = alloc(0, (size_t)3 << 20); /* 4 MiB rounded: fits only once the cache is gone */
    ferry__device_alloc_counters c = stats(0);
    cr_assert_eq(c.cached, 0);
    cr_assert_eq(c.driver_frees, 1);
    cr_assert_eq(c.driver_allocs, 3, "the first, the failed one, and the retry");
    cr_assert_eq(c.allocated, (size_t)4 << 20);
    void *none = NULL;
    ferry_assert_status(ferry__device_alloc(0, 1, &none), FERRY_ENOMEM);
    cr_assert_str_eq(ferry_last_error(), "CUDA out of memory on cuda:0: tried to allocate 512 "
                     "bytes with 4194304 of 4194304 in use");
    ferry__device_free(0, b, (size_t)3 << 20);
    void *again = alloc(0, 1);
    ferry__device_free(0, again, 1);
}

Test(device_alloc, reuses_block_only_after_stream_passed_queued_work, .timeout = 10)
{
    setenv("FERRY_EMULATE_DEVICE_DELAY_US", "100000", 1);
    setup("1", NULL);
    const ferry__device_ops *ops = ferry__device_ops_get();
    unsigned char *a = alloc(0, 256);
    ferry_assert_ok(ops->memset(ferry__device_stream(0), a, 0x5a, 256)); /* runs 0.1 s later */
    ferry__device_free(0, a, 256);
    unsigned char *b = alloc(0, 256);
    cr_assert_eq(b, a, "the only block of its size, reused once its event completed");
    for (int i = 0; i < 256; i++)
        cr_assert_eq(b[i], 0x5a, "byte %d: handed out before the queued memset ran", i);
    ferry__device_free(0, b, 256);
}

Test(device_alloc, caches_tensor_storage_when_tensors_released, .timeout = 10)
{
    setup("1", NULL);
    const int64_t n = 1000;
    for (int i = 0; i < 10; i++) {
        ferry_tensor *t = ferry_assert_ptr(ferry_tensor_empty(1, &n, FERRY_FLOAT32,
                                                              FERRY_DEVICE_CUDA(0)));
        ferry_tensor_release(t);
    }
    cr_assert_eq(stats(0).driver_allocs, 1, "one driver call for ten tensors of one size");
    cr_assert_eq(stats(0).reuses, 9);
    ferry__device_cache_empty(-1);
    cr_assert_eq(stats(0).cached, 0);
    cr_assert_eq(stats(0).driver_frees, 1);
}
