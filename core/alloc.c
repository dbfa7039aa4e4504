/* Allocation wrappers with a failure-injection counter for out-of-memory tests. */
#include "core/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Failure injection state: process-wide test hook, atomics only. */
static atomic_long fail_countdown;
static atomic_int fail_sticky;

static int should_fail(void)
{
    long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (n <= 0)
        return 0;
    n = atomic_fetch_sub(&fail_countdown, 1);
    if (n == 1) {
        if (atomic_load(&fail_sticky))
            atomic_store(&fail_countdown, 1);
        return 1;
    }
    return 0;
}

bool ferry__alloc_fail_now(void)
{
    return should_fail() != 0;
}

void ferry__alloc_fail_after(long nth, int sticky)
{
    atomic_store(&fail_sticky, sticky);
    atomic_store(&fail_countdown, nth);
}

void *ferry__malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *ferry__calloc(size_t count, size_t n)
{
    if (should_fail())
        return NULL;
    return calloc(count ? count : 1, n ? n : 1);
}

void *ferry__realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void ferry__free(void *p)
{
    free(p);
}

char *ferry__strndup(const char *s, size_t n)
{
    char *d = ferry__malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *ferry__strdup(const char *s)
{
    return ferry__strndup(s, strlen(s));
}

void *ferry__malloc_aligned(size_t n)
{
    if (should_fail())
        return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0)
        return NULL;
    return p;
}

void ferry__free_aligned(void *p)
{
    free(p);
}
