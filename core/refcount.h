/* Atomic reference counts shared by every refcounted object. */
#ifndef FERRY_CORE_REFCOUNT_H
#define FERRY_CORE_REFCOUNT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    atomic_int_fast64_t n;
} ferry__ref;

static inline void ferry__ref_init(ferry__ref *r)
{
    atomic_init(&r->n, 1);
}

static inline void ferry__ref_inc(ferry__ref *r)
{
    atomic_fetch_add_explicit(&r->n, 1, memory_order_relaxed);
}

/* True when this was the last reference: the caller frees the object. */
static inline bool ferry__ref_dec(ferry__ref *r)
{
    /* acq_rel rather than release + fence: same cost here, and ThreadSanitizer understands it. */
    return atomic_fetch_sub_explicit(&r->n, 1, memory_order_acq_rel) == 1;
}

static inline int64_t ferry__ref_count(const ferry__ref *r)
{
    return atomic_load_explicit(&((ferry__ref *)r)->n, memory_order_relaxed);
}

#endif
