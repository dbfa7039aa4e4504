/* Futures: a mutex and condition variable around a result that is written once, plus an atomic
   done flag so the hot paths (ferry_future_done, the spin before blocking, reading the result
   after completion) never take the lock. Callbacks are detached under the lock and run after it
   is dropped: internal on_done callbacks inline on the completing thread, then-callbacks as
   tasks on the future's pool, so user code never runs on the thread that completed the future
   (the fabric's progress thread, usually) nor with a ferry lock held. Done-callbacks
   (add_done_callback) are then-callbacks without a child. collect_all and wait_all
   (core/future_all.c) are built on the inline callbacks. */
#include "core/future_impl.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "core/carry.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/refcount.h"
#include "core/value_impl.h"
#include "core/value_shared.h"

/* How long a wait spins on the done flag before it sleeps on the condition variable: a reply
   that arrives within this window costs no wake-up (a futex round trip is several µs). */
#define WAIT_SPIN_NS 30000LL
/* A waiter with a driver polls the fabric itself until this long passes with nothing to
   do, then sleeps: long enough for a round trip to a peer that answers at once, short enough
   that a wait for a computing peer leaves the CPU to it. Training steps of 3-4 processes on 2
   cores ran 1.5-2.3x faster with 200 µs than with 2 ms of driving (the spinning waiters starved
   the workers doing the compute), at no cost to a lone round trip. Traffic that keeps coming
   (a callee calling back while its caller waits) keeps the waiter driving, up to
   DRIVE_MAX_NS in all, so those calls run on the waiting thread without wake-ups.
   -DDRIVE_SPIN_NS=... overrides the idle window for experiments. */
#ifndef DRIVE_SPIN_NS
#define DRIVE_SPIN_NS 200000LL
#endif
#define DRIVE_MAX_NS 2000000LL

typedef struct future_cb {
    struct future_cb *next;
    bool is_then;
    /* on_done: runs inline */
    ferry__future_cb inline_fn;
    void *arg;
    /* then: runs on the pool and completes `child`; a done-callback (done_fn, no child) only
       runs */
    ferry_then_fn then_fn;
    ferry_done_fn done_fn;
    void *user;
    ferry_future *child;  /* owned reference; NULL for a done-callback */
    ferry_future *parent; /* owned reference, taken when the task is queued */
    ferry__carried carried; /* the registering thread's state, installed around the call */
} future_cb;

struct ferry_future {
    ferry__ref ref;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool done; /* set (release) after the result below is final */
    int waiters;      /* threads in cv, guarded by mu */
    ferry_status status;
    ferry_status remote; /* behind a FERRY_EREMOTE status: the callee's own code */
    ferry_value *value;
    char *error;        /* NULL: use ferry_strerror(status) */
    ferry__pool *pool;  /* then-callbacks run here; NULL = the default pool */
    future_cb *cb_head; /* pending callbacks in registration order, guarded by mu */
    future_cb *cb_tail;
    const ferry__future_driver *driver; /* guarded by mu; cleared on completion */
    void *driver_ctx;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static bool is_done(const ferry_future *f)
{
    return atomic_load_explicit(&((ferry_future *)f)->done, memory_order_acquire);
}

/* Futures and callback records are kept for reuse (core/cache.h): a call makes and drops one
   future, and its mutex and condition variable are set up once per object, not per call. */
static void future_obj_init(void *obj)
{
    ferry_future *f = obj;
    pthread_mutex_init(&f->mu, NULL);
    ferry__cond_init_monotonic(&f->cv);
}

static void future_obj_fini(void *obj)
{
    ferry_future *f = obj;
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

/* Global caches; each guards itself (cache.h). */
static ferry__cache future_cache =
    FERRY__CACHE_INIT("future", sizeof(struct ferry_future), future_obj_init, future_obj_fini, 64);
static ferry__cache cb_cache =
    FERRY__CACHE_INIT("future callback", sizeof(future_cb), NULL, NULL, 16);

static future_cb *cb_new(void)
{
    future_cb *cb = ferry__cache_get(&cb_cache);
    if (cb)
        memset(cb, 0, sizeof *cb);
    return cb;
}

static void cb_free(future_cb *cb)
{
    ferry__cache_put(&cb_cache, cb);
}

/* A future from the cache is indistinguishable from a new one: every field but the mutex and
   condition variable (idle, as the last release left them) is set here. */
ferry_future *ferry_future_new(void)
{
    ferry_future *f = ferry__cache_get(&future_cache);
    if (!f)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a future");
    ferry__ref_init(&f->ref);
    atomic_init(&f->done, false);
    f->waiters = 0;
    f->value = NULL;
    f->error = NULL;
    f->pool = NULL;
    f->cb_head = f->cb_tail = NULL;
    f->driver = NULL;
    f->driver_ctx = NULL;
    f->status = FERRY_EAGAIN;
    f->remote = FERRY_EREMOTE;
    return f;
}

void ferry__future_set_pool(ferry_future *f, ferry__pool *pool)
{
    if (f)
        f->pool = pool;
}

static const char *error_text(const ferry_future *f)
{
    return f->error ? f->error : ferry_strerror(f->status);
}

/* Runs one then-callback on a pool thread and completes its child with the result; a
   done-callback just runs, and what it leaves as the last error goes with it. */
static void then_task(void *arg)
{
    future_cb *cb = arg;
    /* A stale error left on this pool thread by an earlier task must not fail this child. */
    ferry_clear_error();
    ferry__carried saved;
    ferry__carry_enter(&cb->carried, &saved);
    if (cb->done_fn) {
        cb->done_fn(cb->parent, cb->user);
        ferry__carry_leave(&saved);
        ferry_clear_error();
        ferry_future_release(cb->parent);
        cb_free(cb);
        return;
    }
    ferry_value *v = cb->then_fn(cb->parent, cb->user);
    ferry__carry_leave(&saved);
    ferry_status st = ferry_last_status();
    if (v) {
        ferry__future_complete_steal(cb->child, v);
    } else if (st != FERRY_OK) {
        /* EAGAIN means "pending" on a future; a callback whose own wait ran out failed on
           time, which is what ETIMEDOUT says. */
        ferry__future_set_error_remote(cb->child, st == FERRY_EAGAIN ? FERRY_ETIMEDOUT : st,
                                       ferry_last_remote_status(), ferry_last_error());
    } else {
        ferry_future_set_error(cb->child, FERRY_EINVAL,
                               "then callback returned NULL without setting an error");
    }
    ferry_future_release(cb->parent);
    ferry_future_release(cb->child);
    cb_free(cb);
}

/* Queues a then-callback of the completed future `f` on its pool. A full queue is waited out;
   if no pool can take it (out of memory, shutting down) it runs here rather than never, since
   the caller of ferry_future_then was promised exactly one run. */
static void dispatch_then(ferry_future *f, future_cb *cb)
{
    cb->parent = ferry_future_retain(f);
    ferry__pool *pool = f->pool ? f->pool : ferry__pool_default();
    ferry_status rc = pool ? ferry__pool_submit(pool, then_task, cb) : FERRY_ENOMEM;
    if (rc == FERRY_EAGAIN)
        rc = ferry__pool_submit_wait(pool, then_task, cb);
    if (rc != FERRY_OK) {
        ferry__log_warn("future", "running a then-callback on the completing thread: %s",
                        ferry_last_error());
        then_task(cb);
    }
}

static void run_callbacks(ferry_future *f, future_cb *cb)
{
    while (cb) {
        future_cb *next = cb->next;
        if (cb->is_then) {
            dispatch_then(f, cb);
        } else {
            cb->inline_fn(f, cb->arg);
            cb_free(cb);
        }
        cb = next;
    }
}

/* The one place a future completes. Steals `value` and `error`. */
static ferry_status complete(ferry_future *f, ferry_status status, ferry_status remote,
                             ferry_value *value, char *error)
{
    pthread_mutex_lock(&f->mu);
    if (is_done(f)) {
        pthread_mutex_unlock(&f->mu);
        ferry_value_release(value);
        ferry__free(error);
        return ferry__fail(FERRY_EINVAL, "Future can only be marked completed once");
    }
    f->status = status;
    f->remote = status == FERRY_EREMOTE ? remote : status;
    f->value = value;
    f->error = error;
    future_cb *cbs = f->cb_head;
    f->cb_head = f->cb_tail = NULL;
    const ferry__future_driver *driver = f->driver;
    void *driver_ctx = f->driver_ctx;
    f->driver = NULL;
    atomic_store_explicit(&f->done, true, memory_order_release);
    if (f->waiters > 0)
        pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    if (driver)
        driver->release(driver_ctx);
    run_callbacks(f, cbs);
    return FERRY_OK;
}

ferry_status ferry__future_complete_steal(ferry_future *f, ferry_value *v)
{
    if (!f) {
        ferry_value_release(v);
        return ferry__fail(FERRY_EINVAL, "NULL future");
    }
    return complete(f, FERRY_OK, FERRY_OK, v, NULL);
}

ferry_status ferry_future_set_value(ferry_future *f, ferry_value *v)
{
    if (!f)
        return ferry__fail(FERRY_EINVAL, "NULL future");
    return complete(f, FERRY_OK, FERRY_OK, ferry_value_retain(v), NULL);
}

ferry_status ferry_future_set_error(ferry_future *f, ferry_status status, const char *message)
{
    return ferry__future_set_error_remote(f, status, FERRY_EREMOTE, message);
}

ferry_status ferry__future_set_error_remote(ferry_future *f, ferry_status status,
                                            ferry_status remote, const char *message)
{
    if (!f)
        return ferry__fail(FERRY_EINVAL, "NULL future");
    if (status == FERRY_OK || status == FERRY_EAGAIN || (unsigned)status >= FERRY__STATUS_COUNT)
        return ferry__fail(FERRY_EINVAL, "a future cannot fail with status %d (%s)", (int)status,
                           ferry_strerror(status));
    /* Without memory for the message the future still fails, with the code's own text. */
    char *copy = message ? ferry__strdup(message) : NULL;
    if (remote <= FERRY_OK || remote >= FERRY__STATUS_COUNT)
        remote = FERRY_EREMOTE; /* not known */
    return complete(f, status, remote, NULL, copy);
}

/* Drives the future's fabric until it completes, DRIVE_SPIN_NS pass with nothing moving, or
   `cap` (then the caller blocks as usual). */
static bool drive(ferry_future *f, long long cap)
{
    pthread_mutex_lock(&f->mu);
    const ferry__future_driver *d = f->driver;
    void *ctx = d ? d->retain(f->driver_ctx) : NULL;
    pthread_mutex_unlock(&f->mu);
    if (!d)
        return false;
    d->begin(ctx);
    long long now = ferry__now_ns(), idle_end = now + DRIVE_SPIN_NS;
    while (!is_done(f) && now < idle_end && now < cap) {
        bool moved = d->poll(ctx);
        now = ferry__now_ns();
        if (moved)
            idle_end = now + DRIVE_SPIN_NS;
    }
    d->end(ctx);
    d->release(ctx);
    return true;
}

/* The blocking part of a wait, after the spin: the pool is told so a nested wait on a pool
   thread never starves it. deadline_ns 0 = none. */
static void wait_blocking(ferry_future *f, long long deadline_ns)
{
    struct timespec ts = ferry__timespec_from_ns(deadline_ns); /* f->cv runs on this clock */
    ferry__pool_blocking_begin();
    pthread_mutex_lock(&f->mu);
    f->waiters++;
    while (!is_done(f)) {
        if (!deadline_ns) {
            pthread_cond_wait(&f->cv, &f->mu);
        } else if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    f->waiters--;
    pthread_mutex_unlock(&f->mu);
    ferry__pool_blocking_end();
}

ferry_status ferry_future_wait(ferry_future *f, double timeout)
{
    if (!f)
        return ferry__fail(FERRY_EINVAL, "NULL future");
    if (!is_done(f)) {
        long long start = ferry__now_ns();
        long long deadline = ferry__deadline_ns(start, timeout); /* 0: no limit */
        long long drive_end = start + DRIVE_MAX_NS, spin_end = start + WAIT_SPIN_NS;
        if (deadline && deadline < drive_end)
            drive_end = deadline;
        if (deadline && deadline < spin_end)
            spin_end = deadline;
        if (!drive(f, drive_end))
            while (!is_done(f) && ferry__now_ns() < spin_end)
                cpu_relax();
        if (!is_done(f) && (!deadline || ferry__now_ns() < deadline))
            wait_blocking(f, deadline);
        if (!is_done(f))
            return ferry__fail(FERRY_EAGAIN, "the wait ran out after %g s; the future is "
                               "still pending", timeout);
    }
    return ferry__future_report(f);
}

ferry_status ferry__future_report(const ferry_future *f)
{
    if (f->status == FERRY_EREMOTE)
        return ferry__set_remote_error(f->remote, "%s", error_text(f));
    if (f->status != FERRY_OK)
        return ferry_set_error(f->status, "%s", error_text(f));
    return FERRY_OK;
}

ferry_value *ferry_future_value(ferry_future *f)
{
    if (ferry_future_wait(f, 0) != FERRY_OK)
        return NULL;
    return f->value ? ferry_value_retain(f->value) : ferry__value_shared_none();
}

bool ferry_future_done(const ferry_future *f)
{
    return f && is_done(f);
}

const char *ferry_future_error(const ferry_future *f)
{
    if (!f || !is_done(f) || f->status == FERRY_OK)
        return NULL;
    return error_text(f);
}

ferry_status ferry_future_status(const ferry_future *f)
{
    if (!f)
        return FERRY_EINVAL;
    return is_done(f) ? f->status : FERRY_EAGAIN;
}

ferry_status ferry_future_remote_status(const ferry_future *f)
{
    if (!f)
        return FERRY_EINVAL;
    return is_done(f) ? f->remote : FERRY_EAGAIN;
}

/* Adds a callback record, or returns false (record untouched) when f is already done. */
static bool append_cb(ferry_future *f, future_cb *cb)
{
    pthread_mutex_lock(&f->mu);
    bool pending = !is_done(f);
    if (pending) {
        if (f->cb_tail)
            f->cb_tail->next = cb;
        else
            f->cb_head = cb;
        f->cb_tail = cb;
    }
    pthread_mutex_unlock(&f->mu);
    return pending;
}

ferry_status ferry__future_on_done(ferry_future *f, ferry__future_cb fn, void *arg)
{
    if (!f || !fn)
        return ferry__fail(FERRY_EINVAL, "on_done needs a future and a function");
    if (!is_done(f)) {
        future_cb *cb = cb_new();
        if (!cb)
            return ferry__fail(FERRY_ENOMEM, "no memory for a future callback");
        cb->inline_fn = fn;
        cb->arg = arg;
        if (append_cb(f, cb))
            return FERRY_OK;
        cb_free(cb);
    }
    fn(f, arg);
    return FERRY_OK;
}

ferry_future *ferry_future_then(ferry_future *f, ferry_then_fn fn, void *user)
{
    if (!f || !fn)
        return ferry__fail_null(FERRY_EINVAL, "ferry_future_then needs a future and a function");
    future_cb *cb = cb_new();
    if (!cb)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a then-callback");
    ferry_future *child = ferry_future_new();
    if (!child) {
        cb_free(cb);
        return NULL;
    }
    child->pool = f->pool;
    cb->is_then = true;
    cb->then_fn = fn;
    cb->user = user;
    ferry__carry_capture(&cb->carried);
    cb->child = ferry_future_retain(child);
    if (!append_cb(f, cb))
        dispatch_then(f, cb);
    return child;
}

ferry_status ferry_future_add_done_callback(ferry_future *f, ferry_done_fn fn, void *user)
{
    if (!f || !fn)
        return ferry__fail(FERRY_EINVAL, "ferry_future_add_done_callback needs a future and a "
                           "function");
    future_cb *cb = cb_new();
    if (!cb)
        return ferry__fail(FERRY_ENOMEM, "no memory for a done-callback");
    cb->is_then = true;
    cb->done_fn = fn;
    cb->user = user;
    ferry__carry_capture(&cb->carried);
    if (!append_cb(f, cb))
        dispatch_then(f, cb);
    return FERRY_OK;
}

ferry_future *ferry_future_retain(ferry_future *f)
{
    if (f)
        ferry__ref_inc(&f->ref);
    return f;
}

/* Callbacks still pending when the last reference goes can never run: nothing can complete
   the future any more. Children of then-callbacks fail so their waiters wake. */
static void drop_pending(future_cb *cb)
{
    while (cb) {
        future_cb *next = cb->next;
        if (cb->is_then && cb->child && !ferry_future_done(cb->child)) {
            ferry_future_set_error(cb->child, FERRY_ECANCELED,
                                   "the future was released before it completed");
        }
        if (cb->is_then)
            ferry_future_release(cb->child);
        cb_free(cb);
        cb = next;
    }
}

void ferry__future_set_driver(ferry_future *f, const ferry__future_driver *driver, void *ctx)
{
    const ferry__future_driver *old = NULL;
    void *old_ctx = NULL;
    if (driver)
        ctx = driver->retain(ctx);
    pthread_mutex_lock(&f->mu);
    if (!is_done(f)) {
        old = f->driver;
        old_ctx = f->driver_ctx;
        f->driver = driver;
        f->driver_ctx = ctx;
        driver = NULL;
    }
    pthread_mutex_unlock(&f->mu);
    if (old)
        old->release(old_ctx);
    if (driver) /* completed meanwhile: nobody will drive it */
        driver->release(ctx);
}

void ferry__future_lend_driver(ferry_future *to, ferry_future *from)
{
    pthread_mutex_lock(&from->mu);
    const ferry__future_driver *d = from->driver;
    void *ctx = d ? d->retain(from->driver_ctx) : NULL;
    pthread_mutex_unlock(&from->mu);
    if (!d)
        return;
    ferry__future_set_driver(to, d, ctx);
    d->release(ctx);
}

void ferry__future_init_driver(ferry_future *f, const ferry__future_driver *driver, void *ctx)
{
    if (f->driver || f->cb_head || is_done(f)) { /* not new after all: the general way */
        ferry__future_set_driver(f, driver, ctx);
        return;
    }
    f->driver = driver;
    f->driver_ctx = driver ? driver->retain(ctx) : NULL;
}

void ferry_future_release(ferry_future *f)
{
    if (!f || !ferry__ref_dec(&f->ref))
        return;
    if (f->driver)
        f->driver->release(f->driver_ctx);
    drop_pending(f->cb_head);
    ferry_value_release(f->value);
    ferry__free(f->error);
    ferry__cache_put(&future_cache, f);
}
