/* Serving requests. A call runs on the agent's pool (or right on the progress thread for
   functions registered as non-blocking); other message types go to their module's handler on
   the pool, unless the module's inline handler answers them on the progress thread first. The
   result or error goes back as a response carrying the request's id. Async functions reply when
   their future completes. */
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

static void send_response(ferry__agent *a, int src, ferry__msg *resp)
{
    resp->type = FERRY__MSG_RESPONSE;
    ferry_status rc = ferry__agent_send_msg(a, src, resp);
    if (rc != FERRY_OK && resp->is_error == false) {
        /* The result itself could not be sent (e.g. a value the wire cannot carry): tell the
           caller why instead of leaving it to time out. */
        char why[512];
        snprintf(why, sizeof why, "worker '%s' could not send the result: %s", a->name,
                 ferry_last_error());
        ferry__serve_reply_error(a, src, resp->id, rc, why);
    } else if (rc != FERRY_OK) {
        ferry__log_warn("rpc", "could not send a response to rank %d: %s", src, ferry_last_error());
    }
}

void ferry__serve_reply_error(ferry__agent *a, int src, uint64_t id, ferry_status code,
                              const char *message)
{
    ferry__msg resp = {.id = id, .is_error = true, .err_code = code};
    resp.err_message = (char *)message;
    resp.err_worker = a->name;
    send_response(a, src, &resp);
}

static void reply_value(ferry__agent *a, int src, uint64_t id, ferry_value *v)
{
    ferry__msg resp = {.id = id, .value = v};
    send_response(a, src, &resp);
}

/* The text of failure `rc`: the thread's last error when that is the one, else the code's name. */
static const char *error_text(ferry_status rc)
{
    return ferry_last_status() == rc && ferry_last_error()[0] ? ferry_last_error()
                                                              : ferry_strerror(rc);
}

/* A failing function's message names the worker and the function (DESIGN section 3). */
static void reply_failure(ferry__agent *a, int src, const ferry__msg *m, ferry_status rc)
{
    char why[1024];
    snprintf(why, sizeof why, "function '%s' on worker '%s' failed: %s", m->fn, a->name,
             error_text(rc));
    ferry__serve_reply_error(a, src, m->id, FERRY_EREMOTE, why);
}

static void server_done(ferry__agent *a)
{
    atomic_fetch_sub(&a->server_active, 1);
}

static void async_done(ferry_future *f, void *arg)
{
    job *j = arg;
    if (ferry_future_status(f) == FERRY_OK) {
        ferry_value *v = ferry_future_value(f);
        reply_value(j->agent, j->src, j->m->id, v);
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
    ferry__msg *m = j->m;
    ferry_value *args = m->args, *kwargs = m->kwargs, *empty_args = NULL, *empty_kwargs = NULL;
    /* Functions never see NULL; absent arguments are the shared empties (const to them, and
       refused by ferry_dict_set as shared), which cost no allocation. */
    if (!args)
        args = empty_args = ferry__value_shared_empty_list();
    if (!kwargs)
        kwargs = empty_kwargs = ferry__value_shared_empty_dict();
    ferry_clear_error();
    if (!args || !kwargs) {
        reply_failure(a, j->src, m, FERRY_ENOMEM);
    } else if (j->entry.kind == FERRY__FN_ASYNC) {
        ferry_future *f = j->entry.async_fn(args, kwargs, j->entry.user);
        ferry_value_release(empty_args);
        ferry_value_release(empty_kwargs);
        if (f && ferry__future_on_done(f, async_done, j) == FERRY_OK)
            return; /* async_done replies and frees the job */
        if (f) {
            ferry_future_release(f);
            ferry_set_error(FERRY_ENOMEM, "out of memory waiting on the async result");
        } else if (ferry_last_status() == FERRY_OK) {
            ferry_set_error(FERRY_EINVAL, "an async function must return a future, got NULL");
        }
        reply_failure(a, j->src, m, ferry_last_status());
        server_done(a);
        job_free(j);
        return;
    } else {
        ferry_value *result = NULL;
        ferry_status rc = j->entry.fn(args, kwargs, &result, j->entry.user);
        if (rc == FERRY_OK) {
            reply_value(a, j->src, m->id, result);
        } else {
            reply_failure(a, j->src, m, rc);
        }
        ferry_value_release(result);
    }
    ferry_value_release(empty_args);
    ferry_value_release(empty_kwargs);
    server_done(a);
    job_free(j);
}

/* Sends a handler's answer (unless none is wanted) and ends the job. */
static void finish_handler(job *j, ferry_status rc, ferry_value *result)
{
    ferry__agent *a = j->agent;
    if (!j->m->no_reply) {
        if (rc == FERRY_OK)
            reply_value(a, j->src, j->m->id, result);
        else
            ferry__serve_reply_error(a, j->src, j->m->id, rc, error_text(rc));
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
    if (!a->inline_handlers[t].fn)
        return false;
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
    for (int i = 0; i < ferry__agent_module_count(); i++) {
        const ferry__agent_module *mod = ferry__agent_module_at(i);
        if (!j->agent->module_started[i] || !mod->before_call)
            continue;
        ferry_future *f = mod->before_call(j->agent, j->agent->module_state[i], j->src, j->m);
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
    for (int i = 0; i < ferry__agent_module_count(); i++) {
        const ferry__agent_module *mod = ferry__agent_module_at(i);
        if (!j->agent->module_started[i] || !mod->before_call)
            continue;
        ferry_future *f = mod->before_call(j->agent, j->agent->module_state[i], j->src, j->m);
        bool ready = !f || (ferry_future_done(f) && ferry_future_status(f) == FERRY_OK);
        ferry_future_release(f);
        if (!ready)
            return false;
    }
    return true;
}

static void job_task(void *arg)
{
    job *j = arg;
    ferry_status rc = wait_modules(j);
    if (rc != FERRY_OK) {
        reply_failure(j->agent, j->src, j->m, rc);
        server_done(j->agent);
        job_free(j);
    } else if (j->m->type == FERRY__MSG_CALL)
        run_call(j);
    else
        run_handler(j);
}

void ferry__serve_request(ferry__agent *a, int src, ferry__msg *m)
{
    char why[512];
    job *j = ferry__malloc(sizeof *j); /* filled in whole below */
    if (!j) {
        ferry__serve_reply_error(a, src, m->id, FERRY_ENOMEM, "out of memory on the callee");
        ferry__msg_clear(m);
        ferry__free(m);
        return;
    }
    ferry__ref_inc(&a->ref);
    *j = (job){.agent = a, .src = src, .m = m};
    if (m->type == FERRY__MSG_CALL) {
        if (!m->fn || !ferry__registry_lookup(m->fn, &j->entry)) {
            snprintf(why, sizeof why, "worker '%s' has no function named '%s'", a->name,
                     m->fn ? m->fn : "");
            ferry__serve_reply_error(a, src, m->id, FERRY_EUNKNOWN_FUNCTION, why);
            job_free(j);
            return;
        }
    } else if (m->type >= FERRY__MSG_TYPE_COUNT || !a->handlers[m->type].fn) {
        snprintf(why, sizeof why, "worker '%s' does not handle messages of type %d", a->name,
                 (int)m->type);
        ferry__serve_reply_error(a, src, m->id, FERRY_ENOTSUP, why);
        job_free(j);
        return;
    }
    atomic_fetch_add(&a->server_active, 1);
    if (m->type == FERRY__MSG_PING) {
        run_handler(j); /* heartbeats: answered here, never queued behind busy functions */
        return;
    }
    if (m->type == FERRY__MSG_CALL && j->entry.kind == FERRY__FN_NONBLOCKING && modules_ready(j)) {
        run_call(j);
        return;
    }
    if (m->type != FERRY__MSG_CALL && try_inline_handler(j))
        return;
    ferry_status rc = FERRY_ESHUTDOWN;
    pthread_mutex_lock(&a->pool_lock);
    if (a->pool_open)
        rc = ferry__pool_submit(a->pool, job_task, j);
    pthread_mutex_unlock(&a->pool_lock);
    if (rc != FERRY_OK) {
        server_done(a);
        ferry__serve_reply_error(a, src, m->id, rc,
                                 rc == FERRY_ESHUTDOWN ? "the callee is shutting down"
                                                       : "the callee's work queue is full");
        job_free(j);
    }
}
