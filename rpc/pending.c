/* The agent's table of calls waiting for a response: a chained hash on the request id plus a
   min-heap on deadlines, both under agent->lock. */
#include "rpc/pending.h"

#include <stdint.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "core/error.h"

/* Global; guards itself (core/cache.h). */
static ferry__cache pending_cache =
    FERRY__CACHE_INIT("pending call", sizeof(ferry__pending), NULL, NULL, 16);

ferry__pending *ferry__pending_new(void)
{
    return ferry__cache_get(&pending_cache);
}

void ferry__pending_free(ferry__pending *p)
{
    ferry__cache_put(&pending_cache, p);
}

static size_t bucket(const ferry__agent *a, uint64_t id)
{
    return (size_t)(id * 0x9E3779B97F4A7C15ull >> 20) & (a->pending_cap - 1);
}

static ferry_status table_grow(ferry__agent *a)
{
    size_t cap = a->pending_cap ? a->pending_cap * 2 : 256;
    ferry__pending **b = ferry__calloc(cap, sizeof *b);
    if (!b)
        return ferry__fail(FERRY_ENOMEM, "out of memory growing the pending-call table");
    ferry__pending **old = a->pending;
    size_t old_cap = a->pending_cap;
    a->pending = b;
    a->pending_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        for (ferry__pending *p = old[i], *next; p; p = next) {
            next = p->next;
            size_t j = bucket(a, p->id);
            p->next = b[j];
            b[j] = p;
        }
    }
    ferry__free(old);
    return FERRY_OK;
}

static void heap_swap(ferry__agent *a, size_t i, size_t j)
{
    ferry__pending *t = a->heap[i];
    a->heap[i] = a->heap[j];
    a->heap[j] = t;
    a->heap[i]->heap_idx = i;
    a->heap[j]->heap_idx = j;
}

static void heap_up(ferry__agent *a, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (a->heap[parent]->deadline_ns <= a->heap[i]->deadline_ns)
            break;
        heap_swap(a, i, parent);
        i = parent;
    }
}

static void heap_down(ferry__agent *a, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < a->heap_len && a->heap[l]->deadline_ns < a->heap[m]->deadline_ns)
            m = l;
        if (r < a->heap_len && a->heap[r]->deadline_ns < a->heap[m]->deadline_ns)
            m = r;
        if (m == i)
            return;
        heap_swap(a, i, m);
        i = m;
    }
}

static void heap_remove(ferry__agent *a, ferry__pending *p)
{
    size_t i = p->heap_idx;
    if (i == SIZE_MAX)
        return;
    a->heap_len--;
    if (i != a->heap_len) {
        a->heap[i] = a->heap[a->heap_len];
        a->heap[i]->heap_idx = i;
        heap_down(a, i);
        heap_up(a, i);
    }
    p->heap_idx = SIZE_MAX;
}

ferry_status ferry__pending_insert(ferry__agent *a, ferry__pending *p)
{
    if ((a->pending_len + 1) > a->pending_cap && table_grow(a) != FERRY_OK)
        return FERRY_ENOMEM;
    p->heap_idx = SIZE_MAX;
    if (p->deadline_ns) {
        if (a->heap_len == a->heap_cap) {
            size_t cap = a->heap_cap ? a->heap_cap * 2 : 256;
            ferry__pending **h = ferry__realloc(a->heap, cap * sizeof *h);
            if (!h)
                return ferry__fail(FERRY_ENOMEM, "out of memory growing the timeout heap");
            a->heap = h;
            a->heap_cap = cap;
        }
        p->heap_idx = a->heap_len;
        a->heap[a->heap_len++] = p;
        heap_up(a, p->heap_idx);
    }
    size_t j = bucket(a, p->id);
    p->next = a->pending[j];
    a->pending[j] = p;
    a->pending_len++;
    return FERRY_OK;
}

ferry__pending *ferry__pending_take(ferry__agent *a, uint64_t id)
{
    if (!a->pending_cap)
        return NULL;
    for (ferry__pending **pp = &a->pending[bucket(a, id)]; *pp; pp = &(*pp)->next) {
        ferry__pending *p = *pp;
        if (p->id == id) {
            *pp = p->next;
            a->pending_len--;
            heap_remove(a, p);
            return p;
        }
    }
    return NULL;
}

ferry__pending *ferry__pending_take_from(ferry__agent *a, uint64_t id, int src, bool *is_foreign)
{
    *is_foreign = false;
    if (!a->pending_cap)
        return NULL;
    for (ferry__pending *p = a->pending[bucket(a, id)]; p; p = p->next) {
        if (p->id == id) {
            *is_foreign = p->dst != src;
            return *is_foreign ? NULL : ferry__pending_take(a, id);
        }
    }
    return NULL;
}

const ferry__pending *ferry__pending_find(const ferry__agent *a, uint64_t id)
{
    if (!a->pending_cap)
        return NULL;
    for (const ferry__pending *p = a->pending[bucket(a, id)]; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

ferry__pending *ferry__pending_take_expired(ferry__agent *a, long long now_ns)
{
    if (a->heap_len == 0 || a->heap[0]->deadline_ns > now_ns)
        return NULL;
    return ferry__pending_take(a, a->heap[0]->id);
}

ferry__pending *ferry__pending_take_any(ferry__agent *a, int dst)
{
    for (size_t i = 0; i < a->pending_cap; i++)
        for (ferry__pending *p = a->pending[i]; p; p = p->next)
            if (dst < 0 || p->dst == dst)
                return ferry__pending_take(a, p->id);
    return NULL;
}

void ferry__pending_free_table(ferry__agent *a)
{
    ferry__free(a->pending);
    ferry__free(a->heap);
    a->pending = NULL;
    a->heap = NULL;
    a->pending_cap = a->pending_len = a->heap_len = a->heap_cap = 0;
}
