/* Method calls: the mailbox of each object and the calls waiting for an object still being
   constructed. A call that is not concurrent joins its object's mailbox; one pool thread at a
   time drains a mailbox, so the object's calls never interleave and run in the order they were
   posted. Remote calls are posted where their requests are read (the internal call function is
   a non-blocking async one), so that order is the order the owner received them, and a call
   never waits inside the object for one that arrived before it. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/carry.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/pool.h"
#include "core/value_lent.h"
#include "core/value_shared.h"
#include "rpc/module.h"
#include "rref/object/object_impl.h"

struct ferry__call {
    ferry__call *next;
    char *method;
    ferry_value *args, *kwargs;
    const ferry_method_def *m; /* set when posted to its object */
    ferry__object *target;     /* a concurrent call's object while it waits for a thread */
    ferry_future *result;
    ferry__carried carried;
    bool remote;
};

/* The object whose call this thread runs, so a method calling its own object runs the inner
   call at once instead of waiting for itself. */
static _Thread_local ferry__object *running;

ferry__call *ferry__call_new(const char *method, const ferry_value *args,
                             const ferry_value *kwargs, bool remote, ferry_future **result)
{
    ferry__call *c = ferry__calloc(1, sizeof *c);
    if (c) {
        c->method = ferry__strdup(method);
        c->result = ferry_future_new();
    }
    if (!c || !c->method || !c->result) {
        if (c) {
            ferry__free(c->method);
            ferry_future_release(c->result);
        }
        ferry__free(c);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory for a call of '%s'", method);
    }
    c->args = ferry_value_retain(ferry__value_lent(args));
    c->kwargs = ferry_value_retain(ferry__value_lent(kwargs));
    c->remote = remote;
    ferry__carry_capture(&c->carried);
    *result = ferry_future_retain(c->result);
    return c;
}

static void call_free(ferry__call *c)
{
    ferry_value_release(c->args);
    ferry_value_release(c->kwargs);
    ferry_future_release(c->result);
    ferry__free(c->method);
    ferry__free(c);
}

/* Ends c with a failure: a remote call's status is FERRY_EREMOTE (rpc names worker and
   function around the message), a local one keeps its own. */
static void call_fail(ferry__call *c, ferry_status rc, const char *why)
{
    ferry_future_set_error(c->result, c->remote ? FERRY_EREMOTE : rc, why);
    call_free(c);
}

/* Runs c's method on o here, with c's carried state, and completes c. */
static void call_run(ferry__object *o, ferry__call *c)
{
    ferry__carried saved;
    ferry__carry_enter(&c->carried, &saved);
    ferry__object *outer = running;
    running = o;
    ferry_value *result = NULL;
    ferry_clear_error();
    ferry_status rc = c->m->fn(o->ptr, c->args, c->kwargs, &result, o->cls->def.user);
    running = outer;
    if (rc == FERRY_OK) {
        ferry__future_complete_steal(c->result, result ? result : ferry__value_shared_none());
        call_free(c);
    } else {
        ferry_value_release(result);
        char why[1024];
        snprintf(why, sizeof why, "method '%s.%s' failed: %s", o->cls->name, c->m->name,
                 ferry_last_status() == rc ? ferry_last_error() : ferry_strerror(rc));
        call_fail(c, rc, why);
    }
    ferry__carry_leave(&saved);
}

/* Runs fn(arg) on the agent's pool, or on the process's default pool when there is no agent
   (local objects) or its pool stopped taking work. Keeps this thread's last error. */
static ferry_status submit(void (*fn)(void *), void *arg)
{
    ferry__error_state saved;
    ferry__error_save(&saved);
    ferry__agent *a = ferry__agent_get();
    ferry_status rc = a ? ferry__agent_submit(a, fn, arg) : FERRY_ESHUTDOWN;
    ferry__agent_release(a);
    if (rc != FERRY_OK)
        rc = ferry__pool_submit(ferry__pool_default(), fn, arg);
    ferry__error_restore(&saved);
    return rc;
}

/* Pool task: runs the mailbox's calls until it is empty. Holds a reference to the object. */
static void drain(void *arg)
{
    ferry__object *o = arg;
    for (;;) {
        pthread_mutex_lock(&o->lock);
        ferry__call *c = o->head;
        if (c) {
            o->head = c->next;
            if (!o->head)
                o->tail = NULL;
        } else {
            o->draining = false;
        }
        pthread_mutex_unlock(&o->lock);
        if (!c)
            break;
        call_run(o, c);
    }
    ferry__object_release(o);
}

/* Starts a drainer for o (its `draining` is set already); when no pool takes it, fails every
   queued call instead. */
static void start_drain(ferry__object *o)
{
    if (submit(drain, ferry__object_retain(o)) == FERRY_OK)
        return;
    pthread_mutex_lock(&o->lock);
    ferry__call *c = o->head;
    o->head = o->tail = NULL;
    o->draining = false;
    pthread_mutex_unlock(&o->lock);
    while (c) {
        ferry__call *next = c->next;
        call_fail(c, FERRY_ESHUTDOWN, "no thread is left to run the call");
        c = next;
    }
    ferry__object_release(o);
}

static void concurrent_task(void *arg)
{
    ferry__call *c = arg;
    ferry__object *o = c->target; /* retained by post */
    call_run(o, c);
    ferry__object_release(o);
}

/* Posts c to o: a concurrent method runs on a pool thread of its own, any other joins the
   mailbox. */
static void post(ferry__object *o, ferry__call *c)
{
    c->m = ferry__class_method(o->cls, c->method);
    if (!c->m) {
        char why[512];
        snprintf(why, sizeof why, "class '%s' has no method '%s'", o->cls->name, c->method);
        call_fail(c, FERRY_EUNKNOWN_FUNCTION, why);
        return;
    }
    if (c->m->concurrent) {
        c->target = ferry__object_retain(o);
        if (submit(concurrent_task, c) != FERRY_OK) {
            ferry__object_release(o);
            call_fail(c, FERRY_ESHUTDOWN, "no thread is left to run the call");
        }
        return;
    }
    pthread_mutex_lock(&o->lock);
    c->next = NULL;
    if (o->tail)
        o->tail->next = c;
    else
        o->head = c;
    o->tail = c;
    bool start = !o->draining;
    o->draining = true;
    pthread_mutex_unlock(&o->lock);
    if (start)
        start_drain(o);
}

/* ---- calls on an object still being constructed ---- */

/* The calls waiting for one value future, in the order they were posted. */
typedef struct waiting {
    struct waiting *next;
    ferry_future *vf; /* retained */
    ferry__call *head, *tail;
} waiting;

static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static waiting *waits; /* guarded by wait_lock; few: one per object under construction */

/* Posts c to the object vf holds (vf is done), or fails it. wait_lock held, so calls for one
   future reach its mailbox in order whichever thread posts them. */
static void post_ready(ferry_future *vf, ferry__call *c)
{
    char why[1024];
    if (ferry_future_status(vf) != FERRY_OK) {
        snprintf(why, sizeof why, "calling '%s': the object could not be made: %s", c->method,
                 ferry_future_error(vf));
        call_fail(c, ferry_future_status(vf), why);
        return;
    }
    ferry_value *v = ferry_future_value(vf);
    ferry__object *o = ferry__object_of(v);
    if (o) {
        post(o, c);
    } else {
        snprintf(why, sizeof why, "calling '%s': the RRef holds a %s, not an object", c->method,
                 ferry_kind_name(ferry_value_kind(v)));
        call_fail(c, FERRY_ETYPE, why);
    }
    ferry_value_release(v); /* the OwnerRRef keeps the object; a posted call holds it too */
}

static void flush(ferry_future *vf, void *arg)
{
    waiting *w = arg;
    pthread_mutex_lock(&wait_lock);
    for (waiting **p = &waits; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    for (ferry__call *c = w->head, *next; c; c = next) {
        next = c->next;
        post_ready(vf, c);
    }
    pthread_mutex_unlock(&wait_lock);
    ferry_future_release(w->vf);
    ferry__free(w);
}

void ferry__call_post_when_ready(ferry_future *vf, ferry__call *c)
{
    c->next = NULL;
    pthread_mutex_lock(&wait_lock);
    waiting *w = waits;
    while (w && w->vf != vf)
        w = w->next;
    if (w) { /* behind calls that came first */
        w->tail->next = c;
        w->tail = c;
        pthread_mutex_unlock(&wait_lock);
        return;
    }
    if (ferry_future_done(vf)) {
        post_ready(vf, c);
        pthread_mutex_unlock(&wait_lock);
        return;
    }
    w = ferry__calloc(1, sizeof *w);
    if (!w) {
        pthread_mutex_unlock(&wait_lock);
        call_fail(c, FERRY_ENOMEM, "out of memory queueing a call behind a construction");
        return;
    }
    *w = (waiting){.next = waits, .vf = ferry_future_retain(vf), .head = c, .tail = c};
    waits = w;
    pthread_mutex_unlock(&wait_lock);
    if (ferry__future_on_done(vf, flush, w) != FERRY_OK) {
        ferry_future_wait(vf, 0); /* no memory to be told: the construction ends soon enough */
        flush(vf, w);
    }
}

/* ---- local calls ---- */

/* Ends this thread's turn as o's drainer: what queued meanwhile goes to a pool thread. */
static void end_turn(ferry__object *o)
{
    pthread_mutex_lock(&o->lock);
    bool more = o->head != NULL;
    if (!more)
        o->draining = false;
    pthread_mutex_unlock(&o->lock);
    if (more)
        start_drain(o);
}

ferry_value *ferry__object_call_here(ferry__object *o, const char *method,
                                     const ferry_value *args, const ferry_value *kwargs)
{
    const ferry_method_def *m = ferry__class_method(o->cls, method);
    if (!m)
        return ferry__fail_null(FERRY_EUNKNOWN_FUNCTION, "class '%s' has no method '%s'",
                                o->cls->name, method);
    ferry_future *f = NULL;
    ferry__call *c = ferry__call_new(method, args, kwargs, false, &f);
    if (!c)
        return NULL;
    c->m = m;
    if (m->concurrent || running == o) {
        call_run(o, c);
    } else {
        pthread_mutex_lock(&o->lock);
        bool idle = !o->draining;
        if (idle) {
            o->draining = true; /* this thread drains for the length of its own call */
        } else {
            c->next = NULL;
            if (o->tail)
                o->tail->next = c;
            else
                o->head = c;
            o->tail = c;
        }
        pthread_mutex_unlock(&o->lock);
        if (idle) {
            call_run(o, c);
            end_turn(o);
        }
    }
    ferry_value *v = ferry_future_value(f); /* waits while queued behind other calls */
    ferry_future_release(f);
    return v;
}
