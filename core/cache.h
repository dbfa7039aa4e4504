/* Object caches: fixed-size objects that a hot path makes and drops once per call (futures,
   pending calls, send and receive contexts, fabric ops) are kept for reuse instead of going back
   to malloc. Each thread keeps two small magazines per cache and takes nothing but them for most
   gets and puts; full and empty magazines move through the cache's depot, under its lock, once
   per FERRY__CACHE_MAG objects. An object may be put by another thread than the one that got it
   (a reply completed on the progress thread). What a cache holds is bounded (depot_max full
   magazines plus two per thread); beyond that objects go back to free. A thread's magazines go to
   the depot when it exits; ferry__cache_drain empties a depot. */
#ifndef FERRY_CORE_CACHE_H
#define FERRY_CORE_CACHE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* Objects per magazine. */
#define FERRY__CACHE_MAG 16

typedef struct ferry__cache_mag ferry__cache_mag;

/* Define one per object type, with static storage, through FERRY__CACHE_INIT (size: of each
   object; depot_max: full magazines the depot keeps at most). */
typedef struct ferry__cache {
    const char *name;
    size_t size;
    /* Run once on each object made by malloc, and before one goes back to free: an object in
       the cache keeps what init set up (a future's mutex and condition variable). NULL: none. */
    void (*init)(void *obj);
    void (*fini)(void *obj);
    size_t depot_max;          /* full magazines the depot keeps */
    atomic_int slot;           /* this cache's index in each thread's magazines, + 1; 0 unset */
    pthread_mutex_t lock;      /* guards the depot below */
    ferry__cache_mag *full;    /* full magazines */
    ferry__cache_mag *empty;   /* empty ones, at most depot_max */
    atomic_size_t n_full;      /* also read without the lock, as a hint */
    size_t n_empty;
    atomic_long n_made;        /* objects taken from malloc */
    atomic_long n_freed;       /* objects given back to free */
} ferry__cache;

#define FERRY__CACHE_INIT(name_, size_, init_, fini_, depot_max_) \
    {.name = (name_), .size = (size_), .init = (init_), .fini = (fini_), \
     .depot_max = (depot_max_), .lock = PTHREAD_MUTEX_INITIALIZER}

/* An object of c->size bytes (contents as the last put left them, or fresh from malloc and
   init), or NULL out of memory (no error is recorded: the caller says what it was for).
   Thread-safe. */
void *ferry__cache_get(ferry__cache *c);

/* Gives obj (from ferry__cache_get on c, by any thread; NULL: nothing) back. Thread-safe. */
void ferry__cache_put(ferry__cache *c, void *obj);

/* Frees what the depot holds and the calling thread's magazines; objects other threads hold in
   theirs stay there. Thread-safe. */
void ferry__cache_drain(ferry__cache *c);

/* Objects of c taken from malloc and not yet given back to free (held by users or cached). */
long ferry__cache_outstanding(ferry__cache *c);

#endif
