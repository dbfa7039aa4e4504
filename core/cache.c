/* Object caches (cache.h): per-thread magazine pairs in front of a locked depot per cache, in
   the manner of slab allocators' magazine layer. A thread's get and put touch only its own two
   magazines until both are empty (get) or full (put); then one trip to the depot swaps a whole
   magazine. Each thread's magazines live in a block found through a thread-local pointer and a
   pthread key, whose destructor hands them to the depots when the thread exits; a thread that
   uses a cache after that (from another key's destructor) bypasses it. */
#include "core/cache.h"

#include <stdbool.h>
#include <stdlib.h>

#include "core/alloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define CACHE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CACHE_ASAN 1
#endif
#endif
#ifdef CACHE_ASAN
#include <sanitizer/asan_interface.h>
/* A cached object is poisoned, so a use after its put is still caught under AddressSanitizer. */
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Caches a process may have; one past this bypasses the magazines (malloc and free). */
#define MAX_CACHES 16

struct ferry__cache_mag {
    ferry__cache_mag *next;
    int n;
    void *objs[FERRY__CACHE_MAG];
};

typedef struct {
    ferry__cache_mag *loaded, *prev;
} thread_slot;

typedef struct {
    thread_slot slots[MAX_CACHES];
} thread_cache;

/* The registered caches by slot: written once each, under registry_lock, before the slot is
   published through the cache's own atomic slot field. */
static ferry__cache *registry[MAX_CACHES];
static int n_registered;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static _Thread_local thread_cache *this_thread;
static _Thread_local bool this_thread_gone;

static int slot_of(ferry__cache *c)
{
    int s = atomic_load_explicit(&c->slot, memory_order_acquire);
    if (s > 0)
        return s - 1;
    pthread_mutex_lock(&registry_lock);
    s = atomic_load_explicit(&c->slot, memory_order_relaxed);
    if (s == 0 && n_registered < MAX_CACHES) {
        registry[n_registered] = c;
        s = ++n_registered;
        atomic_store_explicit(&c->slot, s, memory_order_release);
    }
    pthread_mutex_unlock(&registry_lock);
    return s > 0 ? s - 1 : -1;
}

/* Frees a magazine's objects and the magazine. */
static void mag_free(ferry__cache *c, ferry__cache_mag *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n; i++) {
        UNPOISON(m->objs[i], c->size);
        if (c->fini)
            c->fini(m->objs[i]);
        free(m->objs[i]);
    }
    atomic_fetch_add_explicit(&c->n_freed, m->n, memory_order_relaxed);
    free(m);
}

/* Hands a magazine to the depot (full list when it holds objects), or frees it past the bound. */
static void depot_give_locked(ferry__cache *c, ferry__cache_mag *m, ferry__cache_mag **spill)
{
    if (!m)
        return;
    if (m->n > 0 ? c->n_full < c->depot_max : c->n_empty < c->depot_max) {
        ferry__cache_mag **list = m->n > 0 ? &c->full : &c->empty;
        m->next = *list;
        *list = m;
        if (m->n > 0)
            c->n_full++;
        else
            c->n_empty++;
    } else {
        *spill = m;
    }
}

/* For a get that found both magazines empty: a full one from the depot in exchange for `give`
   (empty or NULL), or NULL with `give` left to the caller. */
static ferry__cache_mag *depot_take_full(ferry__cache *c, ferry__cache_mag *give)
{
    ferry__cache_mag *got = NULL, *spill = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->full) {
        got = c->full;
        c->full = got->next;
        c->n_full--;
        depot_give_locked(c, give, &spill);
    }
    pthread_mutex_unlock(&c->lock);
    mag_free(c, spill);
    return got;
}

/* For a put that found both magazines full: `give` (full or NULL) goes to the depot, or is
   freed past its bound; returns an empty magazine, or NULL when none is left (nor memory). */
static ferry__cache_mag *depot_take_empty(ferry__cache *c, ferry__cache_mag *give)
{
    ferry__cache_mag *got = NULL, *spill = NULL;
    pthread_mutex_lock(&c->lock);
    depot_give_locked(c, give, &spill);
    if (c->empty) {
        got = c->empty;
        c->empty = got->next;
        c->n_empty--;
    }
    pthread_mutex_unlock(&c->lock);
    mag_free(c, spill);
    if (!got && (got = malloc(sizeof *got)) != NULL)
        got->n = 0;
    return got;
}

static void thread_exit(void *arg)
{
    thread_cache *t = arg;
    pthread_mutex_lock(&registry_lock);
    int n = n_registered;
    pthread_mutex_unlock(&registry_lock);
    for (int i = 0; i < n; i++) {
        ferry__cache *c = registry[i];
        ferry__cache_mag *m[2] = {t->slots[i].loaded, t->slots[i].prev}, *spill[2] = {NULL, NULL};
        pthread_mutex_lock(&c->lock);
        for (int k = 0; k < 2; k++)
            depot_give_locked(c, m[k], &spill[k]);
        pthread_mutex_unlock(&c->lock);
        mag_free(c, spill[0]);
        mag_free(c, spill[1]);
    }
    this_thread = NULL;
    this_thread_gone = true;
    free(t);
}

static void make_key(void)
{
    if (pthread_key_create(&thread_key, thread_exit) != 0)
        thread_key = (pthread_key_t)-1;
}

/* my_slot's first use of a cache or of a thread. */
static __attribute__((noinline)) thread_slot *my_slot_slow(ferry__cache *c)
{
    int s = slot_of(c);
    if (s < 0)
        return NULL;
    thread_cache *t = this_thread;
    if (!t) {
        if (this_thread_gone)
            return NULL;
        pthread_once(&thread_key_once, make_key);
        if (thread_key == (pthread_key_t)-1 || !(t = calloc(1, sizeof *t)))
            return NULL;
        if (pthread_setspecific(thread_key, t) != 0) {
            free(t);
            return NULL;
        }
        this_thread = t;
    }
    return &t->slots[s];
}

/* The calling thread's slot for cache c, or NULL (cache bypassed). */
static inline thread_slot *my_slot(ferry__cache *c)
{
    int s = atomic_load_explicit(&c->slot, memory_order_acquire);
    thread_cache *t = this_thread;
    if (__builtin_expect(s > 0 && t != NULL, 1))
        return &t->slots[s - 1];
    return my_slot_slow(c);
}

static void swap_mags(thread_slot *ts)
{
    ferry__cache_mag *m = ts->loaded;
    ts->loaded = ts->prev;
    ts->prev = m;
}

void *ferry__cache_get(ferry__cache *c)
{
    /* Counts as an allocation for the out-of-memory tests, hit or miss. */
    if (ferry__alloc_fail_now())
        return NULL;
    thread_slot *ts = my_slot(c);
    if (ts) {
        if (!ts->loaded || ts->loaded->n == 0) {
            if (ts->prev && ts->prev->n > 0) {
                swap_mags(ts);
            } else if (atomic_load_explicit(&c->n_full, memory_order_relaxed) > 0) {
                ferry__cache_mag *m = depot_take_full(c, ts->prev);
                if (m) {
                    ts->prev = ts->loaded;
                    ts->loaded = m;
                }
            }
        }
        ferry__cache_mag *l = ts->loaded;
        if (l && l->n > 0) {
            void *obj = l->objs[--l->n];
            UNPOISON(obj, c->size);
            return obj;
        }
    }
    void *obj = malloc(c->size);
    if (!obj)
        return NULL;
    atomic_fetch_add_explicit(&c->n_made, 1, memory_order_relaxed);
    if (c->init)
        c->init(obj);
    return obj;
}

void ferry__cache_put(ferry__cache *c, void *obj)
{
    if (!obj)
        return;
    thread_slot *ts = my_slot(c);
    if (ts && (!ts->loaded || ts->loaded->n == FERRY__CACHE_MAG)) {
        if (ts->prev && ts->prev->n < FERRY__CACHE_MAG) {
            swap_mags(ts);
        } else {
            ferry__cache_mag *fresh = depot_take_empty(c, ts->prev);
            ts->prev = ts->loaded;
            ts->loaded = fresh;
        }
    }
    if (ts && ts->loaded) {
        ts->loaded->objs[ts->loaded->n++] = obj;
        POISON(obj, c->size);
        return;
    }
    if (c->fini)
        c->fini(obj);
    free(obj);
    atomic_fetch_add_explicit(&c->n_freed, 1, memory_order_relaxed);
}

void ferry__cache_drain(ferry__cache *c)
{
    int s = atomic_load_explicit(&c->slot, memory_order_acquire);
    if (s > 0 && this_thread) {
        thread_slot *ts = &this_thread->slots[s - 1];
        mag_free(c, ts->loaded);
        mag_free(c, ts->prev);
        ts->loaded = ts->prev = NULL;
    }
    pthread_mutex_lock(&c->lock);
    ferry__cache_mag *full = c->full, *empty = c->empty;
    c->full = c->empty = NULL;
    atomic_store(&c->n_full, 0);
    c->n_empty = 0;
    pthread_mutex_unlock(&c->lock);
    for (ferry__cache_mag *next; full; full = next) {
        next = full->next;
        mag_free(c, full);
    }
    for (ferry__cache_mag *next; empty; empty = next) {
        next = empty->next;
        mag_free(c, empty);
    }
}

long ferry__cache_outstanding(ferry__cache *c)
{
    return atomic_load(&c->n_made) - atomic_load(&c->n_freed);
}
