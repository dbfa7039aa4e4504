/* Serving requests. A call runs on the agent's pool (or right where it was read for functions
   registered as non-blocking); other message types go to their module's handler on the pool,
   unless the module's inline handler answers them where they were read. The modules' request
   hooks run around whatever handles a request, on that thread. The result or error goes back as
   a response carrying the request's id. Async functions reply when their future completes, and
   so do handlers that answer later (ferry__agent_reply_later: an RRef fetch of a value not
   there yet): such a request holds no thread while it waits, only a record on the agent's list
   with its deadline, and the agent answers every one left with FERRY_ESHUTDOWN when it stops. */
#include "rpc/serve.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "core/value_shared.h"
#include "rpc/registry.h"

typedef struct {
    ferry__agent *agent;
    int src;
    ferry__msg *m;
    ferry__fn_entry entry;
    /* Set by ferry__agent_reply_later from the job's handler. */
    ferry_future *later;
    bool later_value;
    double later_timeout_s;
} job;

/* A request answered when its future completes, its deadline passes or the agent stops,
   whichever comes first (`answered` decides). The future's callback holds the one lasting
   reference (a future is always completed before its last release here: rref fails the values
   it still owns when it stops); whoever takes a record off the agent's list holds another while
   it answers. The list holds none: a record leaves it (under later_lock) before its callback's
   reference goes. */
struct ferry__later {
    struct ferry__later *prev, *next, *taken_next;
    atomic_int refs;
    atomic_bool answered;
    bool linked; /* on agent->later, guarded by later_lock */
    long long deadline_ns; /* 0 = none */
    job *j;
    ferry_future *f;
    bool with_value;
};

/* The job whose handler runs on this thread, for ferry__agent_reply_later. */
static _Thread_local job *handling;

/* An idle pool thread lent to the fabric (ferry__serve_start): while its poll pass runs,
   `agent` is set, and the first request it reads that must run on the pool is left in `j`
   for this same thread to run as soon as the pass is over, so the call starts without waking
   anyone (the progress thread keeps out of the queues while a pool thread polls them). */
static _Thread_local struct {
    ferry__agent *agent;
    job *j;
} spin_slot;

/* Jobs are made and dropped once per request: kept for reuse (core/cache.h). */
static ferry__cache job_cache = FERRY__CACHE_INIT("job", sizeof(job), NULL, NULL, 16);

static void job_free(job *j)
{
    ferry_future_release(j->later);
    ferry__msg_free(j->m);
    ferry__agent_release(j->agent);
    ferry__cache_put(&job_cache, j);
}

static void send_response(ferry__agent *a, int src, ferry__msg *resp, const ferry__msg *request)
{
    resp->type = FERRY__MSG_RESPONSE;
    resp->id = request->id;
    ferry_status rc = ferry__agent_send_msg(a, src, resp, request);
    if (rc != FERRY_OK && resp->is_error == false) {
        /* The result itself could not be sent (e.g. a value the wire cannot carry): tell the
           caller why instead of leaving it to time out. */
        char why[512];
        snprintf(why, sizeof why, "worker '%s' could not send the result: %s", a->name,
                 ferry_last_error());
        ferry__serve_reply_error(a, src, request, rc, why);
    } else if (rc != FERRY_OK) {
        ferry__log_warn("rpc", "could not send a response to rank %d: %s", src, ferry_last_error());
    }
}

/* An error reply; `remote` is the code behind a FERRY_EREMOTE (FERRY_OK: not known). */
static void reply_error_remote(ferry__agent *a, int src, const ferry__msg *request,
                               ferry_status code, ferry_status remote, const char *message)
{
    ferry__msg resp = {.is_error = true, .err_code = code};
    resp.err_remote = code == FERRY_EREMOTE ? remote : FERRY_OK;
    resp.err_message = (char *)message;
    resp.err_worker = a->name;
    send_response(a, src, &resp, request);
}

void ferry__serve_reply_error(ferry__agent *a, int src, const ferry__msg *request,
                              ferry_status code, const char *message)
{
    /* A stored remote failure passed on (an RRef's value) keeps the code behind it. */
    ferry_status remote = ferry_last_status() == FERRY_EREMOTE ? ferry_last_remote_status()
                                                                 : FERRY_OK;
    reply_error_remote(a, src, request, code, remote, message);
}

static void reply_value(ferry__agent *a, int src, const ferry__msg *request, ferry_value *v)
{
    ferry__msg resp = {.value = v};
    send_response(a, src, &resp, request);
}

/* The text of failure `rc`: the thread's last error when that is the one, else the code's name. */
static const char *error_text(ferry_status rc)
{
    return ferry_last_status() == rc && ferry_last_error()[0] ? ferry_last_error()
                                                              : ferry_strerror(rc);
}

void ferry__agent_function_error(const ferry__agent *a, const char *fn, ferry_status rc,
                                 char *buf, size_t cap)
{
    snprintf(buf, cap, "function '%s' on worker '%s' failed: %s", fn, a->name, error_text(rc));
}

/* A failing function's message names the worker and the function (DESIGN section 3), and the
   reply carries the function's own code: when that is a FERRY_EREMOTE passed up from a call of
   its own, the code behind it, so the innermost cause reaches the first caller. */
static void reply_failure(ferry__agent *a, int src, const ferry__msg *m, ferry_status rc)
{
    char why[1024];
    ferry__agent_function_error(a, m->fn, rc, why, sizeof why);
    ferry_status remote = rc;
    if (rc == FERRY_EREMOTE && ferry_last_status() == FERRY_EREMOTE)
        remote = ferry_last_remote_status();
    reply_error_remote(a, src, m, FERRY_EREMOTE, remote, why);
}

static void server_done(ferry__agent *a)
{
    atomic_fetch_sub(&a->server_active, 1);
}

void ferry__agent_run_function(ferry__agent *a, const ferry__msg *m,
                               const ferry__fn_entry *entry, ferry__fn_result *out)
{
    ferry__fn_entry e;
    *out = (ferry__fn_result){FERRY_OK, NULL, NULL};
    if (!entry) {
        if (!m->fn || !ferry__registry_lookup(m->fn, &e)) {
            out->rc = ferry_set_error(FERRY_EUNKNOWN_FUNCTION,
                                      "worker '%s' has no function named '%s'", a->name,
                                      m->fn ? m->fn : "");
            return;
        }
        entry = &e;
    }
    /* Functions never see NULL; absent arguments are the shared empties (const to them, and
       refused by ferry_dict_set as shared), which cost no allocation. */
    ferry_value *args = m->args, *kwargs = m->kwargs, *empty_args = NULL, *empty_kwargs = NULL;
    if (!args)
        args = empty_args = ferry__value_shared_empty_list();
    if (!kwargs)
        kwargs = empty_kwargs = ferry__value_shared_empty_dict();
    ferry_clear_error();
    if (!args || !kwargs) {
        out->rc = ferry_set_error(FERRY_ENOMEM, "out of memory for the arguments");
    } else if (ferry__fn_is_async(entry->kind)) {
        out->pending = entry->async_fn(args, kwargs, entry->user);
        if (!out->pending)
            out->rc = ferry_last_status() != FERRY_OK
                          ? ferry_last_status()
                          : ferry_set_error(FERRY_EINVAL,
                                            "an async function must return a future, got NULL");
    } else {
        out->rc = entry->fn(args, kwargs, &out->value, entry->user);
        if (out->rc != FERRY_OK) {
            ferry_value_release(out->value);
            out->value = NULL;
        }
    }
    ferry_value_release(empty_args);
    ferry_value_release(empty_kwargs);
}

static void async_done(ferry_future *f, void *arg)
{
    job *j = arg;
    if (ferry_future_status(f) == FERRY_OK) {
        ferry_value *v = ferry_future_value(f);
        reply_value(j->agent, j->src, j->m, v);
        ferry_value_release(v);
    } else {
        reply_failure(j->agent, j->src, j->m, ferry__future_report(f));
    }
    server_done(j->agent);
    ferry_future_release(f);
    job_free(j);
}

static void run_call(job *j)
{
    ferry__agent *a = j->agent;
    ferry__fn_result r;
    ferry__agent_run_function(a, j->m, &j->entry, &r);
    if (r.pending) {
        if (ferry__future_on_done(r.pending, async_done, j) == FERRY_OK)
            return; /* async_done replies and frees the job */
        ferry_future_release(r.pending);
        r.rc = ferry_set_error(FERRY_ENOMEM, "out of memory waiting on the async result");
    }
    if (r.rc == FERRY_OK)
        reply_value(a, j->src, j->m, r.value);
    else
        reply_failure(a, j->src, j->m, r.rc);
    ferry_value_release(r.value);
    server_done(a);
    job_free(j);
}

static void later_start(job *j);

/* Sends a handler's answer (unless none is wanted) and ends the job. */
static void finish_handler(job *j, ferry_status rc, ferry_value *result)
{
    ferry__agent *a = j->agent;
    if (j->later && rc == FERRY_OK && !j->m->no_reply) {
        ferry_value_release(result);
        later_start(j);
        return;
    }
    if (!j->m->no_reply) {
        if (rc == FERRY_OK)
            reply_value(a, j->src, j->m, result);
        else
            ferry__serve_reply_error(a, j->src, j->m, rc, error_text(rc));
    }
    ferry_value_release(result);
    server_done(a);
    job_free(j);
}

static void run_handler(job *j)
{
    ferry__agent *a = j->agent;
    ferry_value *result = NULL;
    ferry_clear_error();
    job *outer = handling;
    handling = j;
    ferry_status rc = a->handlers[j->m->type].fn(a, j->src, j->m, &result,
                                                 a->handlers[j->m->type].ctx);
    handling = outer;
    finish_handler(j, rc, result);
}

/* A module's inline handler answers where the request was read when it can do so without
   blocking (a value already there, a table update): no pool hand-off, whose thread wake costs
   more than the work. False when it declined (FERRY_EAGAIN): the pool handler takes the job. */
static bool try_inline_handler(job *j)
{
    ferry__agent *a = j->agent;
    ferry__msg_type t = j->m->type;
    ferry_value *result = NULL;
    ferry_clear_error();
    job *outer = handling;
    handling = j;
    ferry_status rc = a->inline_handlers[t].fn(a, j->src, j->m, &result,
                                               a->inline_handlers[t].ctx);
    handling = outer;
    if (rc == FERRY_EAGAIN) {
        ferry_value_release(result);
        ferry_future_release(j->later);
        j->later = NULL;
        return false;
    }
    finish_handler(j, rc, result);
    return true;
}

/* How long the callee waits on the caller's behalf before a request runs: the request's own
   timeout, else the agent's default, else 60 s; never without a deadline, so a pool thread is
   not held forever by a confirmation that never comes (its RRef's creator died). */
static double callee_wait_s(ferry__agent *a, const ferry__msg *m)
{
    double t = m->timeout_s > 0 ? m->timeout_s : atomic_load(&a->default_timeout_s);
    return t > 0 ? t : 60.0;
}

/* Modules may hold a call back until it can run (torch: a callee waits until every RRef in the
   arguments is confirmed by its owner). Waiting here is fine: a blocked pool thread lends a
   spare one (up to the pool's cap), and the wait has a deadline. */
static ferry_status wait_modules(job *j)
{
    ferry__agent *a = j->agent;
    for (int k = 0; k < a->hooks.n_before_call; k++) {
        int i = a->hooks.before_call[k];
        ferry_future *f = ferry__agent_module_at(i)->before_call(a, a->module_state[i], j->src,
                                                                 j->m);
        if (!f)
            continue;
        double limit = callee_wait_s(a, j->m);
        ferry_status rc = ferry_future_wait(f, limit);
        ferry_future_release(f);
        if (rc == FERRY_EAGAIN)
            rc = ferry__fail(FERRY_ETIMEDOUT, "worker '%s' waited %.1f s for the RRefs in the "
                             "arguments to be confirmed", a->name, limit);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

/* The device tensors whose bytes follow on side channels, before anything uses the values; here
   on the pool, where waiting for them holds no one's fabric. Within the request's timeout. */
static ferry_status receive_sides(job *j)
{
    ferry__agent *a = j->agent;
    ferry__msg *m = j->m;
    if (!m->n_sides)
        return FERRY_OK;
    ferry_status rc = ferry__wire_sides_recv(a, m, callee_wait_s(a, m));
    if (rc != FERRY_OK)
        ferry_set_error(rc, "worker '%s' could not receive the tensors of %s%s%s from worker "
                        "'%s': %s", a->name, m->type == FERRY__MSG_CALL ? "call '" : "a request",
                        m->type == FERRY__MSG_CALL && m->fn ? m->fn : "",
                        m->type == FERRY__MSG_CALL ? "'" : "", a->workers[j->src].name,
                        ferry_last_error());
    return rc;
}

/* True when no module holds the call back right now (checked without blocking, so a
   non-blocking function may run where its request was read). */
static bool modules_ready(job *j)
{
    ferry__agent *a = j->agent;
    for (int k = 0; k < a->hooks.n_before_call; k++) {
        int i = a->hooks.before_call[k];
        ferry_future *f = ferry__agent_module_at(i)->before_call(a, a->module_state[i], j->src,
                                                                 j->m);
        bool ready = !f || (ferry_future_done(f) && ferry_future_status(f) == FERRY_OK);
        ferry_future_release(f);
        if (!ready)
            return false;
    }
    return true;
}

/* Pool thread: the job's own thread, no state of anyone else's to keep. The job is gone once
   it has been answered, so the end hooks get only their slots. */
static void job_task(void *arg)
{
    job *j = arg;
    ferry__agent *a = ferry__agent_retain(j->agent);
    void *slots[FERRY__MAX_MODULES];
    if (a->hooks.n_around)
        ferry__agent_hooks_begin(a, j->src, j->m, slots);
    ferry_status rc = receive_sides(j);
    if (rc != FERRY_OK) { /* as a staged tensor that could not be placed: the callee's error */
        char why[1024];
        snprintf(why, sizeof why, "%s", ferry_last_error());
        ferry__serve_reply_error(a, j->src, j->m, rc, why);
        server_done(a);
        job_free(j);
    } else if ((rc = wait_modules(j)) != FERRY_OK) {
        reply_failure(a, j->src, j->m, rc);
        server_done(a);
        job_free(j);
    } else if (j->m->type == FERRY__MSG_CALL) {
        run_call(j);
    } else {
        run_handler(j);
    }
    if (a->hooks.n_around)
        ferry__agent_hooks_end(a, slots);
    ferry__agent_release(a);
}

/* Runs a request where it was read: on the progress thread, or on a thread that waits on a
   future and drives the fabric meanwhile. That thread's last error belongs to its own caller
   and is put back afterwards (DESIGN section 4; rpc/module.h says what modules must do with
   their own thread-local state). False when an inline handler declined: the job is untouched
   and goes to the pool. `a` is the caller's (alive for the length of the call; the job's own
   reference may go with the job). */
static bool run_here(ferry__agent *a, job *j, bool is_call)
{
    ferry__error_state saved;
    ferry__error_save(&saved);
    void *slots[FERRY__MAX_MODULES];
    if (a->hooks.n_around)
        ferry__agent_hooks_begin(a, j->src, j->m, slots);
    bool done = true;
    if (is_call)
        run_call(j);
    else if (j->m->type == FERRY__MSG_PING)
        run_handler(j);
    else
        done = try_inline_handler(j);
    if (a->hooks.n_around)
        ferry__agent_hooks_end(a, slots);
    ferry__error_restore(&saved);
    return done;
}

static bool refuse_unknown(ferry__agent *a, int src, job *j)
{
    char why[512];
    ferry__msg *m = j->m;
    if (m->type == FERRY__MSG_CALL) {
        if (m->fn && ferry__registry_lookup(m->fn, &j->entry))
            return false;
        snprintf(why, sizeof why, "worker '%s' has no function named '%s'", a->name,
                 m->fn ? m->fn : "");
        ferry__serve_reply_error(a, src, m, FERRY_EUNKNOWN_FUNCTION, why);
    } else if (m->type <= FERRY__MSG_INVALID || m->type >= FERRY__MSG_TYPE_COUNT ||
               m->type == FERRY__MSG_RESPONSE || !a->handlers[m->type].fn) {
        snprintf(why, sizeof why, "worker '%s' does not handle messages of type %d", a->name,
                 (int)m->type);
        ferry__serve_reply_error(a, src, m, FERRY_ENOTSUP, why);
    } else {
        return false;
    }
    job_free(j);
    return true;
}

void ferry__serve_request(ferry__agent *a, int src, ferry__msg *m)
{
    job *j = ferry__cache_get(&job_cache); /* filled in whole below */
    if (!j) {
        ferry__serve_reply_error(a, src, m, FERRY_ENOMEM, "out of memory on the callee");
        ferry__msg_free(m);
        return;
    }
    *j = (job){.agent = ferry__agent_retain(a), .src = src, .m = m};
    if (refuse_unknown(a, src, j))
        return;
    atomic_fetch_add(&a->server_active, 1);
    bool is_call = m->type == FERRY__MSG_CALL;
    /* Heartbeats are answered here, never queued behind busy functions. */
    if (m->type == FERRY__MSG_PING ||
        (!m->n_sides && is_call && ferry__fn_runs_inline(j->entry.kind) && modules_ready(j)) ||
        (!m->n_sides && !is_call && a->inline_handlers[m->type].fn)) {
        if (run_here(a, j, is_call))
            return;
    }
    if (spin_slot.agent == a && !spin_slot.j) {
        spin_slot.j = j; /* this pool thread runs it right after its poll pass */
        return;
    }
    ferry_status rc = ferry__agent_submit(a, job_task, j);
    if (rc != FERRY_OK) {
        server_done(a);
        ferry__serve_reply_error(a, src, m, rc,
                                 rc == FERRY_ESHUTDOWN ? "the callee is shutting down"
                                                       : "the callee's work queue is full");
        job_free(j);
    }
}

/* ---- pool threads reading the fabric ---- */

/* How long an idle pool thread keeps polling the fabric after the last thing it moved before
   it sleeps. -DPOOL_SPIN_NS=... overrides it for experiments. */
#ifndef POOL_SPIN_NS
#define POOL_SPIN_NS 50000LL
#endif

static void spin_begin(void *ctx)
{
    ferry__agent_drive_begin(ctx);
}

static int spin_poll(void *ctx, ferry__task_fn *fn, void **arg)
{
    ferry__agent *a = ctx;
    spin_slot.agent = a;
    bool moved = ferry__agent_drive_poll(a);
    spin_slot.agent = NULL;
    job *j = spin_slot.j;
    if (!j)
        return moved ? 1 : 0;
    spin_slot.j = NULL;
    *fn = job_task;
    *arg = j;
    return 2;
}

static void spin_end(void *ctx)
{
    ferry__agent_drive_end(ctx);
}

static const ferry__pool_spinner pool_spinner = {spin_begin, spin_poll, spin_end};

void ferry__serve_start(ferry__agent *a)
{
    ferry__pool_set_spinner(a->pool, &pool_spinner, a, POOL_SPIN_NS);
}

/* ---- requests answered later ---- */

ferry_status ferry__agent_reply_later(ferry__agent *a, ferry_future *f, bool with_value,
                                      double timeout_s)
{
    job *j = handling;
    if (!j || j->agent != a || j->later || !f)
        return ferry__fail(FERRY_EINVAL, "reply_later needs a future and is called once, from "
                           "the handler of a request");
    j->later = ferry_future_retain(f);
    j->later_value = with_value;
    j->later_timeout_s = timeout_s > 0 ? timeout_s : 0;
    return FERRY_OK;
}

static void later_put(struct ferry__later *l)
{
    if (atomic_fetch_sub(&l->refs, 1) == 1) {
        ferry_future_release(l->f);
        ferry__free(l);
    }
}

/* Takes l off the agent's list (if still there); later_lock held. */
static void later_unlink_locked(ferry__agent *a, struct ferry__later *l)
{
    if (!l->linked)
        return;
    l->linked = false;
    if (l->prev)
        l->prev->next = l->next;
    else
        a->later = l->next;
    if (l->next)
        l->next->prev = l->prev;
}

/* Answers the request once, whoever gets here first: rc FERRY_OK sends the future's value (or
   nothing), anything else that error. */
static void later_answer(struct ferry__later *l, ferry_status rc, const char *why)
{
    if (atomic_exchange(&l->answered, true))
        return;
    job *j = l->j;
    ferry__agent *a = j->agent;
    pthread_mutex_lock(&a->later_lock);
    later_unlink_locked(a, l);
    pthread_mutex_unlock(&a->later_lock);
    if (rc != FERRY_OK) {
        reply_error_remote(a, j->src, j->m, rc, ferry_future_remote_status(l->f), why);
    } else {
        ferry_value *v = l->with_value ? ferry_future_value(l->f) : NULL;
        reply_value(a, j->src, j->m, v);
        ferry_value_release(v);
    }
    l->j = NULL;
    server_done(a);
    job_free(j);
}

static void later_done(ferry_future *f, void *arg)
{
    struct ferry__later *l = arg;
    ferry_status rc = ferry_future_status(f);
    if (rc == FERRY_OK || !l->with_value)
        later_answer(l, FERRY_OK, NULL);
    else
        later_answer(l, rc, ferry_future_error(f));
    later_put(l);
}

/* The handler asked to answer later: file the request on the agent's list and wait on its
   future without a thread. Takes over the job. */
static void later_start(job *j)
{
    ferry__agent *a = j->agent;
    struct ferry__later *l = ferry__calloc(1, sizeof *l);
    if (!l) {
        ferry__serve_reply_error(a, j->src, j->m, FERRY_ENOMEM, "out of memory on the callee");
        server_done(a);
        job_free(j);
        return;
    }
    atomic_init(&l->refs, 1);
    atomic_init(&l->answered, false);
    l->j = j;
    l->f = j->later;
    l->with_value = j->later_value;
    j->later = NULL;
    l->deadline_ns = j->later_timeout_s > 0
                         ? ferry__now_ns() + (long long)(j->later_timeout_s * 1e9)
                         : 0;
    pthread_mutex_lock(&a->later_lock);
    bool closed = a->later_closed;
    if (!closed) {
        l->next = a->later;
        if (a->later)
            a->later->prev = l;
        a->later = l;
        l->linked = true;
        if (l->deadline_ns && (!a->later_next_ns || l->deadline_ns < a->later_next_ns))
            a->later_next_ns = l->deadline_ns;
    }
    pthread_mutex_unlock(&a->later_lock);
    if (closed)
        later_answer(l, FERRY_ESHUTDOWN, "the callee is shutting down");
    if (ferry__future_on_done(l->f, later_done, l) != FERRY_OK) {
        later_answer(l, FERRY_ENOMEM, "out of memory on the callee");
        later_put(l);
    }
}

/* Takes every record that `all` or whose deadline passed off the list (each with a reference
   for the caller) and recomputes the earliest deadline; later_lock held. */
static struct ferry__later *later_take_locked(ferry__agent *a, long long now_ns, bool all)
{
    struct ferry__later *taken = NULL;
    long long next = 0;
    for (struct ferry__later *l = a->later, *nx; l; l = nx) {
        nx = l->next;
        if (all || (l->deadline_ns && l->deadline_ns <= now_ns)) {
            later_unlink_locked(a, l);
            atomic_fetch_add(&l->refs, 1);
            l->taken_next = taken;
            taken = l;
        } else if (l->deadline_ns && (!next || l->deadline_ns < next)) {
            next = l->deadline_ns;
        }
    }
    a->later_next_ns = next;
    return taken;
}

static void later_answer_taken(struct ferry__later *taken, ferry_status rc, const char *why)
{
    while (taken) {
        struct ferry__later *nx = taken->taken_next;
        later_answer(taken, rc, why);
        later_put(taken); /* the taker's */
        taken = nx;
    }
}

void ferry__agent_expire_later(ferry__agent *a, long long now_ns)
{
    pthread_mutex_lock(&a->later_lock);
    struct ferry__later *taken = NULL;
    if (a->later_next_ns && a->later_next_ns <= now_ns)
        taken = later_take_locked(a, now_ns, false);
    pthread_mutex_unlock(&a->later_lock);
    if (!taken)
        return;
    char why[256];
    snprintf(why, sizeof why, "worker '%s' gave up waiting for the answer (its deadline passed)",
             a->name);
    later_answer_taken(taken, FERRY_ETIMEDOUT, why);
}

void ferry__agent_fail_later(ferry__agent *a, ferry_status rc, const char *why)
{
    pthread_mutex_lock(&a->later_lock);
    a->later_closed = true;
    struct ferry__later *taken = later_take_locked(a, 0, true);
    pthread_mutex_unlock(&a->later_lock);
    later_answer_taken(taken, rc, why);
}
