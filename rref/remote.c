/* remote() and to_here(). remote() makes the caller's RRef at once (a pending UserRRef, or the
   OwnerRRef itself when the owner is this worker) and sends a remote-call request; the owner
   finds or makes its OwnerRRef, runs the function into it and replies, which confirms the user.
   to_here() on a user fetches a copy from the owner. A value still being computed (or an RRef
   not even created yet: messages are not ordered between peers) is not waited for by a thread:
   the owner answers when the value completes (ferry__agent_reply_later), or with an error at
   the fetch's deadline or when it stops, so fetches of RRefs that never come cost no threads.
   remote() is answered the same way once its value exists. Fetches and non-blocking functions
   are served on the progress thread where they were read; other functions on the pool. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "core/value_lent.h"
#include "rpc/module.h"
#include "rref/rref_impl.h"

#define CREATION_TIMED_OUT                                                                    \
    "RRef creation via rpc.remote() timed out, and it is possible that the RRef on the owner " \
    "node does not exist."

static ferry_status check_remote_args(const char *to, const char *fn, const ferry_value *args,
                                      const ferry_value *kwargs, double timeout)
{
    if (!to || !fn || !*fn)
        return ferry__fail(FERRY_EINVAL, "the destination and the function name must be given");
    if (strlen(fn) >= FERRY_MAX_NAME_LEN)
        return ferry__fail(FERRY_EINVAL, "function name '%.32s...' is too long", fn);
    if (args && ferry_value_kind(args) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "args must be a list");
    if (kwargs && ferry_value_kind(kwargs) != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_EINVAL, "kwargs must be a dict");
    if (isnan(timeout) || (timeout < 0 && timeout != FERRY_TIMEOUT_DEFAULT))
        return ferry__fail(FERRY_EINVAL, "timeout must be >= 0 or FERRY_TIMEOUT_DEFAULT");
    return FERRY_OK;
}

/* Ends a self-remote's "self fork" (torch's addSelfAsFork), which kept the OwnerRRef in the
   table while its creation was in flight. */
static void end_self_fork(ferry_rref *o)
{
    pthread_mutex_lock(&o->ctx->lock);
    ferry__owner_del_fork(o, o->id);
    bool drop = ferry__owner_maybe_untable(o);
    pthread_mutex_unlock(&o->ctx->lock);
    if (drop)
        ferry_rref_release(o);
}

/* What remote_done needs to word a timeout: the RRef, and what ran where for how long. */
typedef struct {
    ferry_rref *r;
    long long timeout_ms;
    char fn[];
} remote_wait;

static remote_wait *remote_wait_new(ferry_rref *r, const char *fn, double timeout_s)
{
    size_t n = strlen(fn) + 1;
    remote_wait *w = ferry__malloc(sizeof *w + n);
    if (!w)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory starting remote() of '%s'", fn);
    w->r = r;
    w->timeout_ms = llround(timeout_s * 1000);
    memcpy(w->fn, fn, n);
    return w;
}

/* torch's words for a creation that timed out, then what was run where. */
static void creation_timeout_text(const remote_wait *w, char *buf, size_t cap)
{
    ferry_rref *r = w->r;
    snprintf(buf, cap, CREATION_TIMED_OUT " (remote() of '%s' on worker '%s' did not finish "
             "within %lld ms)", w->fn, r->ctx->names[r->owner], w->timeout_ms);
}

static void remote_done(ferry_future *f, void *arg)
{
    remote_wait *w = arg;
    ferry_rref *r = w->r;
    ferry_status rc = ferry_future_status(f);
    char why[1024] = "";
    if (rc == FERRY_ETIMEDOUT)
        creation_timeout_text(w, why, sizeof why);
    else if (rc != FERRY_OK)
        snprintf(why, sizeof why, "RRef creation via rpc.remote() failed: %s",
                 ferry_future_error(f));
    if (r->is_owner) {
        if (rc != FERRY_OK && !ferry_future_done(r->value))
            ferry_future_set_error(r->value, rc, why); /* loses harmlessly to a late value */
        end_self_fork(r);
        ferry_rref_release(r);
    } else {
        ferry__rref_carry_settle(r->ctx, &r->carry, rc);
        ferry__rref_confirm(r, rc, why); /* drops the pending reference */
    }
    ferry__free(w);
    ferry_future_release(f);
}

/* Makes the caller's RRef: the OwnerRRef (with its self fork) or a pending UserRRef. */
static ferry_rref *make_caller_rref(ferry__rref_ctx *ctx, int dst, ferry__gid *fork)
{
    ferry__gid id = ferry__rref_next_id(ctx);
    if (dst != ctx->rank) {
        *fork = ferry__rref_next_id(ctx);
        return ferry__rref_user_new(ctx, dst, id, *fork, true);
    }
    *fork = id;
    ferry_rref *o = ferry__rref_owner_new(ctx, id);
    if (!o)
        return NULL;
    pthread_mutex_lock(&ctx->lock);
    ferry_status rc = ferry__owner_table(o);
    if (rc == FERRY_OK)
        rc = ferry__owner_add_fork(o, id);
    pthread_mutex_unlock(&ctx->lock);
    if (rc != FERRY_OK) {
        end_self_fork(o);
        ferry_rref_release(o);
        return NULL;
    }
    return o;
}

/* The request was never sent: undo without telling the owner. */
static void unmake_caller_rref(ferry_rref *r, ferry_status rc, const char *why)
{
    if (r->is_owner) {
        end_self_fork(r);
    } else {
        pthread_mutex_lock(&r->ctx->lock);
        r->deleted = true;
        pthread_mutex_unlock(&r->ctx->lock);
        ferry__rref_confirm(r, rc, why);
    }
    ferry_rref_release(r);
}

ferry_rref *ferry_remote(const char *to, const char *fn, const ferry_value *args,
                         const ferry_value *kwargs, double timeout)
{
    if (check_remote_args(to, fn, args, kwargs, timeout) != FERRY_OK)
        return NULL;
    ferry__rref_ctx *ctx = ferry__rref_ctx_current();
    if (!ctx)
        return NULL;
    ferry__agent *a = ferry__rref_ctx_agent(ctx);
    int dst = a ? ferry__agent_rank_of(a, to) : -1;
    ferry_rref *r = NULL;
    ferry__gid fork;
    remote_wait *w = NULL;
    if (dst >= 0)
        r = make_caller_rref(ctx, dst, &fork);
    if (r && !(w = remote_wait_new(r, fn, ferry__agent_effective_timeout(a, timeout)))) {
        char why[256];
        snprintf(why, sizeof why, "%s", ferry_last_error());
        unmake_caller_rref(r, FERRY_ENOMEM, why);
        ferry_set_error(FERRY_ENOMEM, "%s", why);
        r = NULL;
    }
    if (r) {
        ferry__msg m = {.type = FERRY__MSG_REMOTE_CALL, .fn = (char *)fn,
                        .args = ferry__value_lent(args), .kwargs = ferry__value_lent(kwargs),
                        .rref = {r->id.worker, r->id.local}, .fork = {fork.worker, fork.local}};
        if (!r->is_owner) /* an earlier user's deletion rides along (deletes.c) */
            ferry__rref_carry_take(ctx, dst, &m, &r->carry);
        ferry_future *f = ferry__agent_request(a, dst, &m, timeout);
        if (!f) {
            ferry_status rc = ferry_last_status();
            char why[768];
            snprintf(why, sizeof why, "%s", ferry_last_error());
            if (!r->is_owner)
                ferry__rref_carry_put_back(ctx, &r->carry);
            unmake_caller_rref(r, rc, why);
            ferry_set_error(rc, "%s", why);
            ferry__free(w);
            r = NULL;
        } else {
            r->created = ferry_future_retain(f);
            ferry__log_debug("rref", "remote() of '%s' on '%s' (rank %d): %s %d:%lld (fork "
                             "%d:%lld) made, request %llu", fn, to, dst,
                             r->is_owner ? "OwnerRRef" : "UserRRef", (int)r->id.worker,
                             (long long)r->id.local, (int)fork.worker, (long long)fork.local,
                             (unsigned long long)m.id);
            if (r->is_owner)
                ferry_rref_retain(r); /* the callback's; a user's pending one serves */
            if (ferry__future_on_done(f, remote_done, w) != FERRY_OK)
                remote_done(f, w); /* out of memory: treat as done now (fails the RRef) */
        }
    }
    ferry__agent_release(a);
    ferry__rref_ctx_release(ctx);
    return r;
}

/* ---- the creation future ---- */

/* torch's creation future is the remote() request's: the owner answers it once the value exists,
   with an empty reply even when the function failed (the OwnerRRef then holds the error, which
   to_here gives), so it fails only when the request itself does (a timeout, in the RPC-timeout
   wording, an unreachable owner, shutdown). An RRef made otherwise answers from its confirmation
   (an owner's is a given). The caller gets a future of its own, which cannot complete the RRef's,
   and one released pending is dropped with its callback. */
static ferry_value *creation_outcome(ferry_future *done, void *user)
{
    ferry_status rc = ferry_future_status(done);
    if (rc != FERRY_OK)
        return ferry__fail_null(rc, "%s", ferry_future_error(done));
    return ferry_none();
}

ferry_future *ferry_rref_get_future(ferry_rref *r)
{
    if (!r)
        return ferry__fail_null(FERRY_EINVAL, "ferry_rref_get_future: NULL rref");
    ferry_future *from = r->created ? r->created : r->is_owner ? NULL : r->confirmed;
    if (from && !ferry_future_done(from))
        return ferry_future_then(from, creation_outcome, NULL);
    ferry_future *f = ferry_future_new(); /* the answer is known now */
    if (f && (!from || ferry_future_status(from) == FERRY_OK))
        ferry_future_set_value(f, NULL);
    else if (f)
        ferry_future_set_error(f, ferry_future_status(from), ferry_future_error(from));
    return f;
}

/* ---- the owner's side of remote() ---- */

/* An async function's outcome into the value, its failure worded as a synchronous one's. */
typedef struct {
    ferry_rref *o; /* retained */
    char *fn;
} async_into;

static void async_value_done(ferry_future *f, void *arg)
{
    async_into *in = arg;
    ferry_rref *o = in->o;
    ferry_status rc = ferry_future_status(f);
    if (rc == FERRY_OK) {
        ferry_value *v = ferry_future_value(f);
        ferry_future_set_value(o->value, v);
        ferry_value_release(v);
    } else {
        char why[1024];
        snprintf(why, sizeof why, "function '%s' on worker '%s' failed: %s", in->fn,
                 o->ctx->names[o->ctx->rank], ferry_future_error(f));
        ferry__future_set_error_remote(o->value,
                                       rc == FERRY_EUNKNOWN_FUNCTION ? rc : FERRY_EREMOTE,
                                       ferry_future_remote_status(f), why);
    }
    ferry_future_release(f);
    ferry_rref_release(o);
    ferry__free(in->fn);
    ferry__free(in);
}

static void fail_value(ferry__agent *a, ferry_rref *o, ferry_status rc, const char *fn)
{
    char why[1024];
    ferry__agent_function_error(a, fn, rc, why, sizeof why);
    /* The function's own code goes with it; a FERRY_EREMOTE it passed up, the one behind. */
    ferry_status remote = rc == FERRY_EREMOTE && ferry_last_status() == FERRY_EREMOTE
                              ? ferry_last_remote_status()
                              : rc;
    ferry__future_set_error_remote(o->value, rc == FERRY_EUNKNOWN_FUNCTION ? rc : FERRY_EREMOTE,
                                   remote, why);
}

/* How long the owner waits on a requester's behalf: the request's timeout (remote() carries
   it; a fetch does not), else the agent's default, plus a second so the requester's own timeout
   fires first with torch's wording; 60 s when neither has one. Nothing on the owner waits
   without a deadline. */
static double owner_wait_s(ferry__agent *a, const ferry__msg *m)
{
    double t = m->timeout_s > 0 ? m->timeout_s
                                : ferry__agent_effective_timeout(a, FERRY_TIMEOUT_DEFAULT);
    return t > 0 ? t + 1.0 : 60.0;
}

/* Waits (with a deadline) until every RRef in the arguments is confirmed by its owner. */
static ferry_status wait_args_confirmed(ferry__agent *a, ferry__rref_ctx *ctx, ferry__msg *m)
{
    ferry__msg call = {.type = FERRY__MSG_CALL, .args = m->args, .kwargs = m->kwargs};
    ferry_future *f = ferry__rref_before_call(a, ctx, -1, &call);
    if (!f)
        return FERRY_OK;
    double limit = owner_wait_s(a, m);
    ferry_status rc = ferry_future_wait(f, limit);
    ferry_future_release(f);
    if (rc == FERRY_EAGAIN)
        rc = ferry__fail(FERRY_ETIMEDOUT, "the RRefs in the arguments were not confirmed within "
                         "%.1f s", limit);
    return rc;
}

/* Runs the function into the OwnerRRef's value: on a pool thread, or (`known` given: a
   non-blocking function whose arguments are all confirmed) where the request was read. */
static void run_into(ferry__agent *a, ferry__rref_ctx *ctx, ferry_rref *o, ferry__msg *m,
                     const ferry__fn_entry *known)
{
    ferry_clear_error();
    if (!known && wait_args_confirmed(a, ctx, m) != FERRY_OK) {
        fail_value(a, o, ferry_last_status(), m->fn);
        return;
    }
    ferry__fn_result r;
    ferry__agent_run_function(a, m, known, &r);
    if (r.pending) {
        async_into *in = ferry__malloc(sizeof *in);
        char *fn = ferry__strdup(m->fn);
        if (in && fn) {
            *in = (async_into){ferry_rref_retain(o), fn};
            if (ferry__future_on_done(r.pending, async_value_done, in) == FERRY_OK)
                return;
            ferry_rref_release(o);
        }
        ferry__free(in);
        ferry__free(fn);
        ferry_future_release(r.pending);
        r.rc = ferry_set_error(FERRY_ENOMEM, "out of memory waiting on the async result");
    }
    if (r.rc == FERRY_OK)
        ferry_future_set_value(o->value, r.value);
    else
        fail_value(a, o, r.rc, m->fn);
    ferry_value_release(r.value);
}

static ferry_status serve_remote(ferry__agent *a, ferry__msg *m, ferry__rref_ctx *ctx,
                                 const ferry__fn_entry *known)
{
    ferry__gid id, fork;
    ferry_status rc = ferry__rref_read_ids(ctx, m, &id, &fork);
    if (rc != FERRY_OK)
        return rc;
    if (!m->fn)
        return ferry__fail(FERRY_EPROTO, "remote() request without a function name");
    pthread_mutex_lock(&ctx->lock);
    ferry_rref *o = ferry__owner_find_or_create(ctx, id);
    if (o) {
        ferry_rref_retain(o);
        o->expect_create = false;
        if (!ferry__gid_eq(fork, id)) /* a self-remote's fork is its own id, already there */
            rc = ferry__owner_add_fork(o, fork);
    }
    pthread_mutex_unlock(&ctx->lock);
    if (!o)
        return ferry_last_status();
    ferry__log_debug("rref", "remote call %llu from '%s' (rank %d): OwnerRRef %d:%lld (fork "
                     "%d:%lld) holds the value of '%s'", (unsigned long long)m->id,
                     ctx->names[m->src], (int)m->src, (int)id.worker, (long long)id.local,
                     (int)fork.worker, (long long)fork.local, m->fn);
    if (rc == FERRY_OK) {
        run_into(a, ctx, o, m, known);
        /* torch replies once the value exists, so remote()'s timeout covers the function; an
           async function's value is answered when it completes, without a thread waiting.
           (Inline, a non-blocking function has set it already.) */
        if (!ferry_future_done(o->value))
            rc = ferry__agent_reply_later(a, o->value, false, owner_wait_s(a, m));
    }
    pthread_mutex_lock(&ctx->lock);
    bool drop = ferry__owner_maybe_untable(o);
    pthread_mutex_unlock(&ctx->lock);
    if (drop)
        ferry_rref_release(o);
    ferry_rref_release(o);
    ferry_clear_error();
    return rc;
}

ferry_status ferry__rref_handle_remote(ferry__agent *a, int src, ferry__msg *m,
                                       ferry_value **result, void *arg)
{
    return serve_remote(a, m, arg, NULL);
}

/* A non-blocking function (or a non-blocking async one) runs right where the request was read,
   as a plain call to it does, once nothing in its arguments waits for confirmation; the rest
   goes to the pool. */
ferry_status ferry__rref_handle_remote_inline(ferry__agent *a, int src, ferry__msg *m,
                                              ferry_value **result, void *arg)
{
    ferry__fn_entry e;
    if (!m->fn || !ferry__registry_lookup(m->fn, &e) || !ferry__fn_runs_inline(e.kind) ||
        !ferry__rref_all_confirmed(m->args) || !ferry__rref_all_confirmed(m->kwargs))
        return FERRY_EAGAIN;
    return serve_remote(a, m, arg, &e);
}

/* ---- to_here ---- */

/* Answers a fetch where it was read, never blocking: a value that is there (the usual case:
   the remote() ran before) at once, FERRY_OK with *result (a new reference) or the creation's
   error; one still being computed, or an RRef not created yet (made pending here, as torch's
   getOwnerRRef does), when its value completes, past this worker's default timeout (a fetch
   does not carry the requester's) or when this worker stops. Else read_ids' or
   find_or_create's error. */
static ferry_status serve_fetch(ferry__agent *a, ferry__msg *m, ferry__rref_ctx *ctx,
                                ferry_value **result)
{
    ferry__gid id;
    ferry_status rc = ferry__rref_read_ids(ctx, m, &id, NULL);
    if (rc != FERRY_OK)
        return rc;
    pthread_mutex_lock(&ctx->lock);
    ferry_rref *o = ferry__owner_find_or_create(ctx, id);
    if (o)
        ferry_rref_retain(o);
    pthread_mutex_unlock(&ctx->lock);
    if (!o)
        return ferry_last_status();
    bool is_ready = ferry_future_done(o->value);
    if (is_ready) {
        rc = ferry_future_wait(o->value, 0); /* done: returns at once, with the error if any */
        if (rc == FERRY_OK)
            *result = ferry_future_value(o->value);
    } else {
        rc = ferry__agent_reply_later(a, o->value, true, owner_wait_s(a, m));
    }
    ferry__log_debug("rref", "fetch %llu of RRef %d:%lld from '%s' (rank %d) served: %s",
                     (unsigned long long)m->id, (int)id.worker, (long long)id.local,
                     ctx->names[m->src], (int)m->src,
                     !is_ready ? "answered when the value completes"
                     : rc == FERRY_OK ? "value sent" : "the creation's error sent");
    ferry_rref_release(o);
    return rc;
}

ferry_status ferry__rref_handle_fetch(ferry__agent *a, int src, ferry__msg *m,
                                      ferry_value **result, void *arg)
{
    return serve_fetch(a, m, arg, result);
}

ferry_status ferry__rref_handle_fetch_inline(ferry__agent *a, int src, ferry__msg *m,
                                             ferry_value **result, void *arg)
{
    return serve_fetch(a, m, arg, result);
}

static bool creation_failed(ferry_rref *u)
{
    return ferry_future_done(u->confirmed) && ferry_future_status(u->confirmed) != FERRY_OK;
}

static ferry_value *creation_error(ferry_rref *u)
{
    return ferry__fail_null(ferry_future_status(u->confirmed), "%s",
                            ferry_future_error(u->confirmed));
}

ferry_value *ferry_rref_to_here(ferry_rref *r, double timeout)
{
    if (!r)
        return ferry__fail_null(FERRY_EINVAL, "NULL rref");
    if (isnan(timeout) || (timeout < 0 && timeout != FERRY_TIMEOUT_DEFAULT))
        return ferry__fail_null(FERRY_EINVAL, "timeout must be >= 0 or FERRY_TIMEOUT_DEFAULT");
    if (r->is_owner)
        return ferry_future_value(r->value); /* torch: the local value, no timeout */
    pthread_mutex_lock(&r->ctx->lock);
    bool deleted = r->deleted;
    pthread_mutex_unlock(&r->ctx->lock);
    if (deleted) {
        char d[256];
        ferry__rref_describe(r, d, sizeof d);
        return ferry__fail_null(FERRY_ESHUTDOWN,
                                "%s has been deleted. Cannot call to_here() on it after deletion.",
                                d);
    }
    if (creation_failed(r))
        return creation_error(r);
    ferry__agent *a = ferry__rref_ctx_agent(r->ctx);
    if (!a)
        return NULL;
    ferry__msg m = {.type = FERRY__MSG_RREF_FETCH, .fn = "rref.to_here",
                    .rref = {r->id.worker, r->id.local}};
    ferry__rref_carry carry;
    ferry__rref_carry_take(r->ctx, r->owner, &m, &carry);
    ferry_future *f = ferry__agent_request(a, r->owner, &m, timeout);
    ferry__agent_release(a);
    ferry_value *v = f ? ferry_future_value(f) : NULL;
    if (carry.n) { /* settling may send; the fetch's error is the caller's */
        ferry__error_state saved;
        ferry__error_save(&saved);
        if (f)
            ferry__rref_carry_settle(r->ctx, &carry, ferry_future_status(f));
        else
            ferry__rref_carry_put_back(r->ctx, &carry);
        ferry__error_restore(&saved);
    }
    ferry__log_debug("rref", "to_here of RRef %d:%lld from its owner '%s' (rank %d): %s",
                     (int)r->id.worker, (long long)r->id.local, r->ctx->names[r->owner],
                     (int)r->owner, v ? "value fetched" : ferry_last_error());
    ferry_future_release(f);
    if (creation_failed(r)) { /* a failed creation poisons the RRef, whatever the fetch got */
        ferry_value_release(v);
        return creation_error(r);
    }
    return v;
}

ferry_value *ferry_rref_local_value(ferry_rref *r)
{
    if (!r)
        return ferry__fail_null(FERRY_EINVAL, "NULL rref");
    if (!r->is_owner) {
        char d[256];
        ferry__rref_describe(r, d, sizeof d);
        return ferry__fail_null(FERRY_ENOTOWNER,
                                "For %s, can't call localValue() on user WorkerInfo(id=%d, "
                                "name=%s). Call it on owner WorkerInfo(id=%d, name=%s)",
                                d, r->ctx->rank, r->ctx->names[r->ctx->rank], (int)r->owner,
                                r->ctx->names[r->owner]);
    }
    return ferry_future_value(r->value);
}
