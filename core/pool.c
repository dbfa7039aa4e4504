/* The worker pool: a fixed number of threads taking tasks from one bounded ring under one mutex.
   Its one twist is blocking accounting. A pool thread about to block (a future wait, a full
   queue) says so, and the pool starts a spare thread whenever the runnable threads (alive minus
   blocked) would drop below the configured size while work is queued, so a task waiting on a
   result that another queued task produces does not starve the pool. Spares are capped
   (max_spares on top of the configured size): past the cap queued work waits until a blocked
   task resumes, so a flood of tasks that all block (a thousand waits on values that never come)
   costs a bounded number of threads, not one each. Surplus threads leave after idling
   SPARE_IDLE_NS. Every thread is joined: exited spares are reaped on the next spawn and the rest
   in ferry__pool_free, which first runs everything still queued. */
#include "core/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

/* How long a surplus thread idles before it exits. */
#define SPARE_IDLE_NS 2000000000LL
/* An empty poll that took this long means the spinner was preempted: other threads want the
   CPU, so it stops and leaves the fabric to the progress thread, which sleeps until woken. */
#ifndef SPIN_PREEMPTED_NS
#define SPIN_PREEMPTED_NS 20000LL
#endif

typedef struct {
    ferry__task_fn fn;
    void *arg;
} pool_task;

typedef struct pool_thread {
    pthread_t tid;
    struct pool_thread *next;
} pool_thread;

struct ferry__pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* idle threads wait here for tasks */
    pthread_cond_t room_cv; /* submit_wait waits here for queue room */
    pthread_cond_t exit_cv; /* ferry__pool_free waits here for the last thread */
    pool_task *ring;
    size_t cap, head, count;
    int size;       /* configured number of runnable threads */
    int threads;    /* alive */
    int idle;       /* waiting in work_cv */
    int blocked;    /* inside blocking_begin/end */
    int spawned;    /* ever started, for thread names */
    int max_spares; /* threads beyond `size` lent to blocked tasks, at most */
    bool warned_cap;
    bool stopping;
    /* The spinner (ferry__pool_set_spinner) and the one thread lent to it at a time. `queued`
       and `is_stopping` mirror count and stopping for it to read without the mutex. */
    const ferry__pool_spinner *spinner;
    void *spin_ctx;
    long long spin_ns;
    bool is_spinning;
    atomic_bool spin_cancel;         /* set_spinner ends the running spin */
    pthread_cond_t spin_cv;          /* the spin ended (set_spinner waits for it) */
    atomic_size_t queued;
    atomic_bool is_stopping;
    pool_thread *live;   /* every started thread not yet reaped */
    pool_thread *exited; /* spares that left; joined on the next spawn or in free */
    char name[12];
};

/* The pool the calling thread works for (NULL off pool threads), and how deep it is inside
   blocking_begin/end (only the outermost pair counts). */
static _Thread_local ferry__pool *current_pool;
static _Thread_local int blocking_depth;

/* The default pool. Creation is guarded by default_lock so that a failed attempt (out of memory)
   can be retried; once set the pointer never changes and the pool lives until exit. This is the
   one process-wide object besides the default agent pointer. */
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static ferry__pool *_Atomic default_pool;

static void *pool_main(void *arg);

static void unlink_thread(pool_thread **list, pool_thread *t)
{
    for (pool_thread **p = list; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            return;
        }
    }
}

/* Joins the threads in `list` (which have left pool_main or are about to) and frees them. */
static void join_threads(pool_thread *list)
{
    while (list) {
        pool_thread *next = list->next;
        pthread_join(list->tid, NULL);
        ferry__free(list);
        list = next;
    }
}

/* Starts one thread; the caller holds pool->mu. */
static ferry_status spawn_locked(ferry__pool *pool)
{
    pool_thread *t = ferry__calloc(1, sizeof *t);
    if (!t)
        return ferry__fail(FERRY_ENOMEM, "pool %s: no memory for a thread", pool->name);
    int err = pthread_create(&t->tid, NULL, pool_main, pool);
    if (err) {
        ferry__free(t);
        return ferry__fail(ferry__status_from_errno(err), "pool %s: pthread_create: %s",
                           pool->name, strerror(err));
    }
    char tname[16];
    snprintf(tname, sizeof tname, "%s-%u", pool->name, (unsigned)pool->spawned++ % 1000u);
    pthread_setname_np(t->tid, tname);
    t->next = pool->live;
    pool->live = t;
    pool->threads++;
    return FERRY_OK;
}

/* Called with pool->mu held whenever work is queued: keeps `size` runnable threads. An idle
   thread is woken if there is one; otherwise a spare starts if too few threads are runnable.
   Threads that are running a task will come back for the queue by themselves. */
static void ensure_worker_locked(ferry__pool *pool)
{
    if (pool->count == 0 || pool->is_spinning)
        return; /* the spinner comes back for it */
    if (pool->idle > 0) {
        pthread_cond_signal(&pool->work_cv);
        return;
    }
    if (pool->threads - pool->blocked >= pool->size)
        return;
    if (pool->threads >= pool->size + pool->max_spares) {
        if (!pool->warned_cap && pool->blocked == pool->threads) {
            pool->warned_cap = true;
            ferry__log_warn("pool", "pool %s: all %d threads are blocked (%d spares lent, the "
                            "cap); queued tasks wait for a blocked one to resume", pool->name,
                            pool->threads, pool->max_spares);
        }
        return;
    }
    /* Join spares that left before starting another; they no longer touch the pool. */
    pool_thread *exited = pool->exited;
    pool->exited = NULL;
    if (exited) {
        pthread_mutex_unlock(&pool->mu);
        join_threads(exited);
        pthread_mutex_lock(&pool->mu);
    }
    if (pool->count > 0 && pool->idle == 0 && pool->threads - pool->blocked < pool->size &&
        pool->threads < pool->size + pool->max_spares && spawn_locked(pool) != FERRY_OK)
        ferry__log_warn("pool", "pool %s: cannot start a spare thread (%s); queued tasks wait "
                        "for a blocked thread", pool->name, ferry_last_error());
}

/* Lends the calling thread to the spinner until a task is queued, the pool stops, spin_ns
   pass with nothing moving, or an empty poll shows the thread was preempted; pool->mu is
   dropped meanwhile. True when the spinner handed over a
   task of its own (in *out). */
static bool spin_locked(ferry__pool *pool, pool_task *out)
{
    const ferry__pool_spinner *s = pool->spinner;
    void *ctx = pool->spin_ctx;
    long long spin_ns = pool->spin_ns;
    pool->is_spinning = true;
    pthread_mutex_unlock(&pool->mu);
    if (s->begin)
        s->begin(ctx);
    bool got = false;
    long long moved_at = ferry__now_ns(), polled_at = moved_at;
    while (atomic_load_explicit(&pool->queued, memory_order_relaxed) == 0 &&
           !atomic_load_explicit(&pool->is_stopping, memory_order_relaxed) &&
           !atomic_load_explicit(&pool->spin_cancel, memory_order_relaxed)) {
        int r = s->poll(ctx, &out->fn, &out->arg);
        if (r == 2) {
            got = true;
            break;
        }
        long long now = ferry__now_ns();
        if (r == 1)
            moved_at = now;
        else if (now - moved_at >= spin_ns || now - polled_at >= SPIN_PREEMPTED_NS)
            break;
        polled_at = now;
    }
    if (s->end)
        s->end(ctx);
    pthread_mutex_lock(&pool->mu);
    pool->is_spinning = false;
    pthread_cond_broadcast(&pool->spin_cv);
    /* Submits skipped the wake while we spun: whatever queued meanwhile, beyond the one task
       this thread takes next, needs threads. */
    size_t mine = got ? 0 : 1;
    for (int i = 0; (size_t)i + mine < pool->count && i < pool->idle; i++)
        pthread_cond_signal(&pool->work_cv);
    if (pool->count > mine && pool->idle == 0)
        ensure_worker_locked(pool);
    return got;
}

/* Waits for a task; false when the thread should exit (stopping and drained, or surplus). */
static bool next_task_locked(ferry__pool *pool, pool_task *out)
{
    bool has_spun = false;
    while (pool->count == 0) {
        if (pool->stopping)
            return false;
        /* Only while no other thread of the pool runs a task: a busy pool leaves the fabric
           to the progress thread rather than take a CPU from its own work. */
        bool others_run = pool->threads - pool->idle - pool->blocked > 1;
        if (pool->spinner && !pool->is_spinning && !others_run &&
            !has_spun) {
            has_spun = true; /* once per wait: after an idle window the thread sleeps */
            if (spin_locked(pool, out))
                return true;
            continue;
        }
        pool->idle++;
        int err = 0;
        bool surplus = pool->threads - pool->blocked > pool->size;
        if (surplus) {
            /* work_cv runs on the monotonic clock (see ferry__pool_new). */
            struct timespec deadline = ferry__timespec_from_ns(ferry__now_ns() + SPARE_IDLE_NS);
            err = pthread_cond_timedwait(&pool->work_cv, &pool->mu, &deadline);
        } else {
            pthread_cond_wait(&pool->work_cv, &pool->mu);
        }
        pool->idle--;
        if (err == ETIMEDOUT && pool->count == 0 && pool->threads - pool->blocked > pool->size)
            return false;
    }
    *out = pool->ring[pool->head];
    pool->head = (pool->head + 1) % pool->cap;
    pool->count--;
    atomic_store_explicit(&pool->queued, pool->count, memory_order_relaxed);
    pthread_cond_signal(&pool->room_cv);
    return true;
}

static void *pool_main(void *arg)
{
    ferry__pool *pool = arg;
    pool_task task;
    current_pool = pool;
    pthread_mutex_lock(&pool->mu);
    while (next_task_locked(pool, &task)) {
        pthread_mutex_unlock(&pool->mu);
        task.fn(task.arg);
        pthread_mutex_lock(&pool->mu);
    }
    pool->threads--;
    if (!pool->stopping) {
        /* A surplus spare: hand our record to the next spawn to join. */
        pthread_t self = pthread_self();
        for (pool_thread *t = pool->live; t; t = t->next) {
            if (pthread_equal(t->tid, self)) {
                unlink_thread(&pool->live, t);
                t->next = pool->exited;
                pool->exited = t;
                break;
            }
        }
    }
    if (pool->threads == 0)
        pthread_cond_broadcast(&pool->exit_cv);
    pthread_mutex_unlock(&pool->mu);
    current_pool = NULL;
    return NULL;
}

static void pool_destroy(ferry__pool *pool)
{
    pthread_cond_destroy(&pool->spin_cv);
    pthread_cond_destroy(&pool->exit_cv);
    pthread_cond_destroy(&pool->room_cv);
    pthread_cond_destroy(&pool->work_cv);
    pthread_mutex_destroy(&pool->mu);
    ferry__free(pool->ring);
    ferry__free(pool);
}

ferry__pool *ferry__pool_new(int nthreads, size_t queue_cap, const char *name)
{
    if (nthreads < 1 || queue_cap < 1)
        return ferry__fail_null(FERRY_EINVAL, "pool needs at least one thread and one queue "
                                "slot (got %d threads, %zu slots)", nthreads, queue_cap);
    if (queue_cap > SIZE_MAX / sizeof(pool_task))
        return ferry__fail_null(FERRY_EINVAL, "pool queue of %zu slots is too large", queue_cap);
    ferry__pool *pool = ferry__calloc(1, sizeof *pool);
    if (!pool)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a pool");
    pool->ring = ferry__malloc(queue_cap * sizeof(pool_task));
    if (!pool->ring) {
        ferry__free(pool);
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a pool queue of %zu", queue_cap);
    }
    pool->cap = queue_cap;
    pool->size = nthreads;
    pool->max_spares = nthreads > INT32_MAX / 5 ? INT32_MAX - nthreads : 4 * nthreads;
    snprintf(pool->name, sizeof pool->name, "%s", name ? name : "pool");
    pthread_mutex_init(&pool->mu, NULL);
    ferry__cond_init_monotonic(&pool->work_cv);
    ferry__cond_init_monotonic(&pool->room_cv);
    ferry__cond_init_monotonic(&pool->exit_cv);
    ferry__cond_init_monotonic(&pool->spin_cv);
    atomic_init(&pool->queued, 0);
    atomic_init(&pool->is_stopping, false);
    atomic_init(&pool->spin_cancel, false);

    pthread_mutex_lock(&pool->mu);
    ferry_status rc = FERRY_OK;
    for (int i = 0; i < nthreads && rc == FERRY_OK; i++)
        rc = spawn_locked(pool);
    pthread_mutex_unlock(&pool->mu);
    if (rc != FERRY_OK) {
        ferry_status keep = ferry_last_status();
        char msg[256];
        snprintf(msg, sizeof msg, "%s", ferry_last_error());
        ferry__pool_free(pool);
        return ferry__fail_null(keep, "%s", msg);
    }
    return pool;
}

/* Queues a task; the caller holds pool->mu and has checked there is room. */
static void push_locked(ferry__pool *pool, ferry__task_fn fn, void *arg)
{
    pool->ring[(pool->head + pool->count) % pool->cap] = (pool_task){fn, arg};
    pool->count++;
    atomic_store_explicit(&pool->queued, pool->count, memory_order_relaxed);
    ensure_worker_locked(pool);
}

/* While stopping, only the pool's own tasks may still queue work (a callback chain finishing
   during the drain); everyone else is told the pool is going. */
static bool refuses_locked(const ferry__pool *pool)
{
    return pool->stopping && current_pool != pool;
}

ferry_status ferry__pool_submit(ferry__pool *pool, ferry__task_fn fn, void *arg)
{
    if (!pool || !fn)
        return ferry__fail(FERRY_EINVAL, "pool submit needs a pool and a function");
    pthread_mutex_lock(&pool->mu);
    ferry_status rc = FERRY_OK;
    if (refuses_locked(pool))
        rc = ferry__fail(FERRY_ESHUTDOWN, "pool %s is shutting down", pool->name);
    else if (pool->count == pool->cap)
        rc = ferry__fail(FERRY_EAGAIN, "pool %s queue is full (%zu tasks)", pool->name,
                         pool->cap);
    else
        push_locked(pool, fn, arg);
    pthread_mutex_unlock(&pool->mu);
    return rc;
}

ferry_status ferry__pool_submit_wait(ferry__pool *pool, ferry__task_fn fn, void *arg)
{
    if (!pool || !fn)
        return ferry__fail(FERRY_EINVAL, "pool submit needs a pool and a function");
    pthread_mutex_lock(&pool->mu);
    /* One of our own threads waiting for room counts as blocked, so a spare keeps draining. */
    bool own = current_pool == pool && blocking_depth == 0;
    bool counted = false;
    while (pool->count == pool->cap && !refuses_locked(pool)) {
        if (own && !counted) {
            counted = true;
            pool->blocked++;
            ensure_worker_locked(pool);
            continue; /* ensure_worker may drop the lock: look again */
        }
        pthread_cond_wait(&pool->room_cv, &pool->mu);
    }
    if (counted)
        pool->blocked--;
    ferry_status rc = FERRY_OK;
    if (refuses_locked(pool))
        rc = ferry__fail(FERRY_ESHUTDOWN, "pool %s is shutting down", pool->name);
    else
        push_locked(pool, fn, arg);
    pthread_mutex_unlock(&pool->mu);
    return rc;
}

void ferry__pool_free(ferry__pool *pool)
{
    if (!pool)
        return;
    if (current_pool == pool) {
        ferry__log_error("pool", "pool %s freed from its own thread; leaking it", pool->name);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    atomic_store(&pool->is_stopping, true);
    pthread_cond_broadcast(&pool->work_cv);
    pthread_cond_broadcast(&pool->room_cv);
    /* Queued tasks may all be waiting on a blocked thread: make sure someone drains them. */
    ensure_worker_locked(pool);
    while (pool->threads > 0)
        pthread_cond_wait(&pool->exit_cv, &pool->mu);
    pool_thread *live = pool->live, *exited = pool->exited;
    pool->live = pool->exited = NULL;
    pthread_mutex_unlock(&pool->mu);
    join_threads(live);
    join_threads(exited);
    pool_destroy(pool);
}

void ferry__pool_blocking_begin(void)
{
    ferry__pool *pool = current_pool;
    if (!pool || blocking_depth++ > 0)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->blocked++;
    ensure_worker_locked(pool);
    pthread_mutex_unlock(&pool->mu);
}

void ferry__pool_blocking_end(void)
{
    ferry__pool *pool = current_pool;
    if (!pool || blocking_depth == 0 || --blocking_depth > 0)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->blocked--;
    /* Now there may be a surplus: let an idle thread notice and start its exit timer. */
    if (pool->idle > 0 && pool->threads - pool->blocked > pool->size)
        pthread_cond_signal(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
}

void ferry__pool_set_spinner(ferry__pool *pool, const ferry__pool_spinner *spinner, void *ctx,
                             long long spin_ns)
{
    if (!pool)
        return;
    if (spinner && (!spinner->poll || spin_ns <= 0))
        spinner = NULL;
    pthread_mutex_lock(&pool->mu);
    pool->spinner = NULL;
    atomic_store(&pool->spin_cancel, true);
    while (pool->is_spinning) /* the old ctx may go once this returns */
        pthread_cond_wait(&pool->spin_cv, &pool->mu);
    atomic_store(&pool->spin_cancel, false);
    pool->spinner = spinner;
    pool->spin_ctx = ctx;
    pool->spin_ns = spin_ns;
    if (spinner && pool->idle > 0) /* an idle thread takes it up now, not after its next task */
        pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
}

void ferry__pool_set_max_spares(ferry__pool *pool, int max_spares)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->max_spares = max_spares < 0 ? 0 : max_spares;
    pthread_mutex_unlock(&pool->mu);
}

bool ferry__pool_on_pool_thread(void)
{
    return current_pool != NULL;
}

void ferry__pool_get_stats(ferry__pool *pool, ferry__pool_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    out->threads = pool->threads;
    out->idle = pool->idle;
    out->blocked = pool->blocked;
    out->queued = pool->count;
    pthread_mutex_unlock(&pool->mu);
}

ferry__pool *ferry__pool_default(void)
{
    ferry__pool *pool = atomic_load_explicit(&default_pool, memory_order_acquire);
    if (pool)
        return pool;
    pthread_mutex_lock(&default_lock);
    pool = atomic_load_explicit(&default_pool, memory_order_relaxed);
    if (!pool) {
        pool = ferry__pool_new(4, 65536, "ferry-cb");
        atomic_store_explicit(&default_pool, pool, memory_order_release);
    }
    pthread_mutex_unlock(&default_lock);
    return pool;
}
