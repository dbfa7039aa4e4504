/* Serving requests. A call runs on the agent's pool (or right where it was read for functions
   registered as non-blocking); other message types go to their module's handler on the pool,
   unless the module's inline handler answers them where they were read. The modules' request
   hooks run around whatever handles a request, on that thread. The result or error goes back as
   a response carrying the request's id. Async functions reply when their future completes. */
#include "rpc/serve.h"

#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
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
} job;

static void job_free(job *j)
{
    ferry__msg_clear(j->m);
    ferry__free(j->m);
    ferry__agent_release(j->agent);
    ferry__free(j);
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

void ferry__serve_reply_error(ferry__agent *a, int src, const ferry__msg *request,
                              ferry_status code, const char *message)
{
    ferry__msg resp = {.is_error = true, .err_code = code};
    resp.err_message = (char *)message;
    resp.err_worker = a->name;
    send_response(a, src, &resp, request);
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

/* A failing function's message names the worker and the function (DESIGN section 3). */
static void reply_failure(ferry__agent *a, int src, const ferry__msg *m, ferry_status rc)
{
    char why[1024];
    ferry__agent_function_error(a, m->fn, rc, why, sizeof why);
    ferry__serve_reply_error(a, src, m, FERRY_EREMOTE, why);
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
    } else if (entry->kind == FERRY__FN_ASYNC) {
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
        ferry_set_error(ferry_future_status(f), "%s", ferry_future_error(f));
        reply_failure(j->agent, j->src, j->m, ferry_future_status(f));
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

/* Sends a handler's answer (unless none is wanted) and ends the job. */
static void finish_handler(job *j, ferry_status rc, ferry_value *result)
{
    ferry__agent *a = j->agent;
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
    ferry_status rc = a->handlers[j->m->type].fn(a, j->src, j->m, &result,
                                                 a->handlers[j->m->type].ctx);
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
    ferry_status rc = a->inline_handlers[t].fn(a, j->src, j->m, &result,
                                               a->inline_handlers[t].ctx);
    if (rc == FERRY_EAGAIN) {
        ferry_value_release(result);
        return false;
    }
    finish_handler(j, rc, result);
    return true;
}

/* Modules may hold a call back until it can run (torch: a callee waits until every RRef in the
   arguments is confirmed by its owner). Waiting here is fine: a blocked pool thread lends a
   spare one. */
static ferry_status wait_modules(job *j)
{
    ferry__agent *a = j->agent;
    for (int k = 0; k < a->hooks.n_before_call; k++) {
        int i = a->hooks.before_call[k];
        ferry_future *f = ferry__agent_module_at(i)->before_call(a, a->module_state[i], j->src,
                                                                 j->m);
        if (!f)
            continue;
        ferry_status rc = ferry_future_wait(f, 0);
        ferry_future_release(f);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
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
    ferry_status rc = wait_modules(j);
    if (rc != FERRY_OK) {
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
    job *j = ferry__malloc(sizeof *j); /* filled in whole below */
    if (!j) {
        ferry__serve_reply_error(a, src, m, FERRY_ENOMEM, "out of memory on the callee");
        ferry__msg_clear(m);
        ferry__free(m);
        return;
    }
    *j = (job){.agent = ferry__agent_retain(a), .src = src, .m = m};
    if (refuse_unknown(a, src, j))
        return;
    atomic_fetch_add(&a->server_active, 1);
    bool is_call = m->type == FERRY__MSG_CALL;
    /* Heartbeats are answered here, never queued behind busy functions. */
    if (m->type == FERRY__MSG_PING ||
        (is_call && j->entry.kind == FERRY__FN_NONBLOCKING && modules_ready(j)) ||
        (!is_call && a->inline_handlers[m->type].fn)) {
        if (run_here(a, j, is_call))
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
