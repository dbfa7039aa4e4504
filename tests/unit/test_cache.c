/* Unit tests for the object caches: reuse on one thread, the bound on what a cache keeps,
   objects got on one thread and put on another (under load, each object owned by one thread at
   a time), magazines handed on when a thread exits, draining, and the out-of-memory hook. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "test_util.h"

#define OBJ_BYTES 64

static atomic_long n_init, n_fini;

static void obj_init(void *p)
{
    atomic_fetch_add(&n_init, 1);
    memset(p, 0xA5, OBJ_BYTES);
}

static void obj_fini(void *p)
{
    atomic_fetch_add(&n_fini, 1);
}

static ferry__cache cache = FERRY__CACHE_INIT("test", OBJ_BYTES, obj_init, obj_fini, 4);

Test(cache_reuse, gives_back_the_object_put_when_one_thread_gets_again, .timeout = 5)
{
    void *a = ferry_assert_ptr(ferry__cache_get(&cache));
    ferry__cache_put(&cache, a);
    void *b = ferry_assert_ptr(ferry__cache_get(&cache));
    cr_assert_eq(a, b, "the cached object was not reused");
    cr_assert_eq(atomic_load(&n_init), 1, "init ran %ld times", atomic_load(&n_init));
    ferry__cache_put(&cache, b);
    ferry__cache_put(&cache, NULL); /* nothing */
    ferry__cache_drain(&cache);
    cr_assert_eq(ferry__cache_outstanding(&cache), 0);
    cr_assert_eq(atomic_load(&n_fini), 1);
}

Test(cache_bound, keeps_at_most_its_depot_and_two_magazines_when_5000_are_put, .timeout = 10)
{
    enum { N = 5000 };
    static void *objs[N];
    for (int i = 0; i < N; i++)
        objs[i] = ferry_assert_ptr(ferry__cache_get(&cache));
    cr_assert_eq(ferry__cache_outstanding(&cache), N);
    for (int i = 0; i < N; i++)
        ferry__cache_put(&cache, objs[i]);
    long kept = ferry__cache_outstanding(&cache);
    cr_assert_leq(kept, (long)(cache.depot_max + 2) * FERRY__CACHE_MAG, "kept %ld", kept);
    cr_assert_gt(kept, 0);
    ferry__cache_drain(&cache);
    cr_assert_eq(ferry__cache_outstanding(&cache), 0);
    cr_assert_eq(atomic_load(&n_init), atomic_load(&n_fini));
}

/* A one-slot-per-entry ring from a producer that gets to a consumer that puts. */
#define RING 256
typedef struct {
    _Atomic(void *) slot[RING];
    int n;
    atomic_int failures;
} ring;

static void *producer_main(void *arg)
{
    ring *r = arg;
    for (int i = 0; i < r->n; i++) {
        uint64_t *o = ferry__cache_get(&cache);
        if (!o) {
            atomic_fetch_add(&r->failures, 1);
            o = NULL;
        } else {
            for (int k = 0; k < OBJ_BYTES / 8; k++)
                o[k] = (uint64_t)i;
        }
        while (atomic_load(&r->slot[i % RING]) != NULL)
            sched_yield();
        atomic_store(&r->slot[i % RING], o ? (void *)o : (void *)&r->n);
    }
    return NULL;
}

static void *consumer_main(void *arg)
{
    ring *r = arg;
    for (int i = 0; i < r->n; i++) {
        void *p;
        while ((p = atomic_load(&r->slot[i % RING])) == NULL)
            sched_yield();
        atomic_store(&r->slot[i % RING], NULL);
        if (p == (void *)&r->n)
            continue;
        uint64_t *o = p;
        for (int k = 0; k < OBJ_BYTES / 8; k++)
            if (o[k] != (uint64_t)i)
                atomic_fetch_add(&r->failures, 1);
        ferry__cache_put(&cache, o);
    }
    return NULL;
}

Test(cache_threads, hands_objects_on_intact_when_one_thread_gets_and_another_puts_100k,
     .timeout = 60)
{
    static ring r = {.n = 100000};
    pthread_t p, c;
    cr_assert_eq(pthread_create(&p, NULL, producer_main, &r), 0);
    cr_assert_eq(pthread_create(&c, NULL, consumer_main, &r), 0);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    cr_assert_eq(atomic_load(&r.failures), 0, "%d objects lost or changed in passing",
                 atomic_load(&r.failures));
    /* Both threads have exited: what their magazines held went to the depot or to free. */
    long kept = ferry__cache_outstanding(&cache);
    cr_assert_leq(kept, (long)cache.depot_max * FERRY__CACHE_MAG, "kept %ld", kept);
    ferry__cache_drain(&cache);
    cr_assert_eq(ferry__cache_outstanding(&cache), 0);
    cr_assert_eq(atomic_load(&n_init), atomic_load(&n_fini));
}

/* Each thread holds a few objects at a time, stamps them with its id and checks the stamp
   after others ran: an object given to two threads at once would show. */
typedef struct {
    int id;
    int rounds;
    int bad;
} churner;

static void *churn_main(void *arg)
{
    churner *ch = arg;
    enum { HELD = 24 };
    uint64_t *held[HELD];
    for (int r = 0; r < ch->rounds; r++) {
        int n = 1 + r % HELD;
        for (int i = 0; i < n; i++) {
            held[i] = ferry__cache_get(&cache);
            if (!held[i]) {
                ch->bad++;
                n = i;
                break;
            }
            for (int k = 0; k < OBJ_BYTES / 8; k++)
                held[i][k] = (uint64_t)ch->id << 32 | (uint64_t)i;
        }
        sched_yield();
        for (int i = 0; i < n; i++) {
            for (int k = 0; k < OBJ_BYTES / 8; k++)
                ch->bad += held[i][k] != ((uint64_t)ch->id << 32 | (uint64_t)i);
            ferry__cache_put(&cache, held[i]);
        }
    }
    return NULL;
}

Test(cache_threads, never_gives_one_object_to_two_threads_when_8_threads_churn, .timeout = 60)
{
    enum { T = 8 };
    pthread_t th[T];
    churner ch[T];
    for (int i = 0; i < T; i++) {
        ch[i] = (churner){.id = i + 1, .rounds = 4000};
        cr_assert_eq(pthread_create(&th[i], NULL, churn_main, &ch[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(ch[i].bad, 0, "thread %d saw %d foreign stamps", i, ch[i].bad);
    }
    ferry__cache_drain(&cache);
    cr_assert_eq(ferry__cache_outstanding(&cache), 0);
    cr_assert_eq(atomic_load(&n_init), atomic_load(&n_fini));
}

static void *put_ten_main(void *arg)
{
    void **objs = arg;
    for (int i = 0; i < 10; i++)
        ferry__cache_put(&cache, objs[i]);
    return NULL;
}

Test(cache_threads, reuses_what_an_exited_thread_held_when_another_gets, .timeout = 10)
{
    void *objs[10];
    for (int i = 0; i < 10; i++)
        objs[i] = ferry_assert_ptr(ferry__cache_get(&cache));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, put_ten_main, objs), 0);
    pthread_join(t, NULL);
    long made = atomic_load(&cache.n_made);
    for (int i = 0; i < 10; i++)
        objs[i] = ferry_assert_ptr(ferry__cache_get(&cache));
    cr_assert_eq(atomic_load(&cache.n_made), made, "the exited thread's objects were not reused");
    for (int i = 0; i < 10; i++)
        ferry__cache_put(&cache, objs[i]);
    ferry__cache_drain(&cache);
    cr_assert_eq(ferry__cache_outstanding(&cache), 0);
}

Test(cache_alloc, returns_null_when_the_allocation_hook_fails_it, .timeout = 5)
{
    void *a = ferry_assert_ptr(ferry__cache_get(&cache));
    ferry__cache_put(&cache, a);
    ferry__alloc_fail_after(1, 0);
    cr_assert_null(ferry__cache_get(&cache), "a cached object was given despite the hook");
    void *b = ferry_assert_ptr(ferry__cache_get(&cache));
    ferry__cache_put(&cache, b);
    ferry__cache_drain(&cache);
    cr_assert_eq(ferry__cache_outstanding(&cache), 0);
}
