/* RRef control messages: user-delete (user -> owner), fork-request (new user -> owner) and
   child-accept (new user or owner -> the parent that forked). Each is a request acknowledged by
   the ordinary response, sent from the agent's pool (never from the thread that released an RRef
   or decoded a message: it may hold locks a send takes) or from the progress thread's tick, and
   retried on failure with torch's schedule (5 retries, 1 s x 1.5^k). A user-delete carries up to
   two more deletions to the same owner in its ext (deletes.c). Their handlers are idempotent and
   assume no ordering between peers: a deletion or fork request may reach the owner before the
   remote() that creates the RRef, which then finds it waiting. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "core/pool.h"
#include "rref/rref_impl.h"

#define CTL_MAX_RETRIES 5
#define CTL_FIRST_DELAY_S 1.0
#define CTL_BACKOFF 1.5

typedef struct {
    ferry__rref_ctx *ctx; /* retained */
    ferry__msg_type type;
    int32_t dst;
    ferry__msg_gid rref, fork; /* the request's operands (which ones: see ferry__msg) */
    int attempt;
    ferry_rref *child; /* fork request: the new user (its pending reference) */
    int32_t parent;    /* fork request: who forked it */
    int n_extra;       /* user-delete: more deletions to the same owner, in the ext */
    ferry__rref_del extra[2];
} ctl;

static const char *ctl_name(ferry__msg_type t)
{
    switch (t) {
    case FERRY__MSG_RREF_USER_DELETE:
        return "rref.user_delete";
    case FERRY__MSG_RREF_FORK_REQUEST:
        return "rref.fork_request";
    default:
        return "rref.child_accept";
    }
}

static void ctl_task(void *arg);

static void ctl_finish(ctl *c, ferry_status rc, const char *why)
{
    ferry__rref_ctx *ctx = c->ctx;
    if (c->type == FERRY__MSG_RREF_FORK_REQUEST) {
        char msg[768];
        if (rc != FERRY_OK)
            snprintf(msg, sizeof msg, "the owner '%s' of the RRef could not confirm it: %s",
                     ctx->names[c->dst], why ? why : ferry_strerror(rc));
        /* The parent may let go either way: a failed child is poisoned, not waited for. */
        ferry__rref_send_child_accept(ctx, c->parent, c->child->fork);
        ferry__rref_confirm(c->child, rc, rc == FERRY_OK ? NULL : msg);
    } else if (rc != FERRY_OK && rc != FERRY_ESHUTDOWN) {
        ferry__log_warn("rref", "%s to worker '%s' failed: %s", ctl_name(c->type),
                        ctx->names[c->dst], why ? why : ferry_strerror(rc));
    }
    pthread_mutex_lock(&ctx->lock);
    ctx->n_messages -= 1 + c->n_extra;
    ferry__rref_ctx_signal(ctx);
    pthread_mutex_unlock(&ctx->lock);
    ferry__free(c);
    ferry__rref_ctx_release(ctx);
}

static bool retryable(ferry_status rc)
{
    return rc == FERRY_ETRANSPORT || rc == FERRY_ETIMEDOUT || rc == FERRY_ENOMEM ||
           rc == FERRY_EAGAIN;
}

/* True while the context's agent is still the running one: ferry_shutdown takes it out of the
   process-wide pointer before it stops, so a retry waiting out its delay sees that at once. */
static bool agent_running(ferry__rref_ctx *ctx)
{
    ferry__error_state saved;
    ferry__error_save(&saved);
    ferry__agent *cur = ferry__agent_get();
    pthread_mutex_lock(&ctx->lock);
    bool same = cur && cur == ctx->agent;
    pthread_mutex_unlock(&ctx->lock);
    ferry__agent_release(cur);
    ferry__error_restore(&saved);
    return same;
}

/* Waits out the backoff in short slices, so a stopping agent's pool drains at once instead of
   after the delay (up to 5 s). */
static void ctl_retry_task(void *arg)
{
    ctl *c = arg;
    double delay = CTL_FIRST_DELAY_S * pow(CTL_BACKOFF, c->attempt - 1);
    long long end = ferry__now_ns() + (long long)(delay * 1e9);
    ferry__pool_blocking_begin();
    for (long long now = ferry__now_ns(); now < end && agent_running(c->ctx);
         now = ferry__now_ns()) {
        long long slice = end - now < 50000000LL ? end - now : 50000000LL;
        struct timespec ts = {0, (long)slice};
        nanosleep(&ts, NULL);
    }
    ferry__pool_blocking_end();
    ctl_task(c);
}

static void ctl_failed(ctl *c, ferry_status rc, const char *why)
{
    if (retryable(rc) && c->attempt < CTL_MAX_RETRIES) {
        c->attempt++;
        ferry__log_info("rref", "%s to worker '%s' failed (%s); retry %d", ctl_name(c->type),
                        c->ctx->names[c->dst], why, c->attempt);
        if (ferry__rref_submit(c->ctx, ctl_retry_task, c) == FERRY_OK)
            return;
        rc = FERRY_ESHUTDOWN;
    }
    ctl_finish(c, rc, why);
}

static void ctl_done(ferry_future *f, void *arg)
{
    ferry_status rc = ferry_future_status(f);
    if (rc == FERRY_OK)
        ctl_finish(arg, FERRY_OK, NULL);
    else
        ctl_failed(arg, rc, ferry_future_error(f));
    ferry_future_release(f);
}

static void ctl_task(void *arg)
{
    ctl *c = arg;
    ferry__agent *a = ferry__rref_ctx_agent(c->ctx);
    if (!a) {
        ctl_finish(c, FERRY_ESHUTDOWN, "RPC is shutting down");
        return;
    }
    ferry__msg m = {.type = c->type, .fn = (char *)ctl_name(c->type), .rref = c->rref,
                    .fork = c->fork};
    ferry__rref_dels_to_ext(&m, c->extra, c->n_extra);
    /* No timeout: a lost peer fails the request through the transport, and a slow owner is
       still an owner. */
    ferry_future *f = ferry__agent_request(a, c->dst, &m, FERRY_TIMEOUT_NONE);
    ferry__agent_release(a);
    if (!f) {
        ferry_status rc = ferry_last_status();
        char why[512];
        snprintf(why, sizeof why, "%s", ferry_last_error());
        ctl_failed(c, rc, why);
        return;
    }
    if (ferry__future_on_done(f, ctl_done, c) != FERRY_OK) {
        ferry_future_release(f);
        ctl_finish(c, FERRY_ENOMEM, "out of memory waiting for an acknowledgement");
    }
}

/* Starts a control message: from the pool, or (from_pool false) on this thread. `counted`:
   its n_messages counts (1 + n_extra) are taken already. */
static void ctl_start_ex(ferry__rref_ctx *ctx, ferry__msg_type type, int32_t dst,
                         ferry__gid rref, ferry__gid fork, ferry_rref *child, int32_t parent,
                         const ferry__rref_del *extra, int n_extra, bool counted,
                         bool from_pool)
{
    ctl *c = ferry__calloc(1, sizeof *c);
    if (!c) {
        ferry__log_error("rref", "out of memory sending %s", ctl_name(type));
        if (child)
            ferry__rref_confirm(child, FERRY_ENOMEM, "out of memory confirming the RRef");
        if (counted) {
            pthread_mutex_lock(&ctx->lock);
            ctx->n_messages -= 1 + n_extra;
            ferry__rref_ctx_signal(ctx);
            pthread_mutex_unlock(&ctx->lock);
        }
        return;
    }
    *c = (ctl){.ctx = ferry__rref_ctx_retain(ctx), .type = type, .dst = dst,
               .rref = {rref.worker, rref.local}, .fork = {fork.worker, fork.local},
               .child = child, .parent = parent, .n_extra = n_extra};
    for (int i = 0; i < n_extra; i++)
        c->extra[i] = extra[i];
    if (!counted) {
        pthread_mutex_lock(&ctx->lock);
        ctx->n_messages += 1 + n_extra;
        pthread_mutex_unlock(&ctx->lock);
    }
    if (!from_pool)
        ctl_task(c);
    else if (ferry__rref_submit(ctx, ctl_task, c) != FERRY_OK)
        ctl_finish(c, FERRY_ESHUTDOWN, "RPC is shutting down");
}

static void ctl_start(ferry__rref_ctx *ctx, ferry__msg_type type, int32_t dst,
                      ferry__gid rref, ferry__gid fork, ferry_rref *child, int32_t parent)
{
    ctl_start_ex(ctx, type, dst, rref, fork, child, parent, NULL, 0, false, true);
}

void ferry__rref_send_delete(ferry__rref_ctx *ctx, int32_t owner, ferry__gid id, ferry__gid fork)
{
    ctl_start(ctx, FERRY__MSG_RREF_USER_DELETE, owner, id, fork, NULL, -1);
}

void ferry__rref_send_deletes(ferry__rref_ctx *ctx, int32_t owner, const ferry__rref_del *dels,
                              int n, bool from_pool)
{
    ctl_start_ex(ctx, FERRY__MSG_RREF_USER_DELETE, owner, dels[0].id, dels[0].fork, NULL, -1,
                 dels + 1, n - 1, true, from_pool);
}

void ferry__rref_send_fork_request(ferry_rref *child, int32_t parent)
{
    ctl_start(child->ctx, FERRY__MSG_RREF_FORK_REQUEST, child->owner, child->id, child->fork,
              child, parent);
}

void ferry__rref_send_child_accept(ferry__rref_ctx *ctx, int32_t parent, ferry__gid fork)
{
    ctl_start(ctx, FERRY__MSG_RREF_CHILD_ACCEPT, parent, (ferry__gid){0, 0}, fork, NULL, -1);
}

/* ---- handlers (progress thread: they only touch the tables, never block) ---- */

ferry_status ferry__rref_read_ids(ferry__rref_ctx *ctx, const ferry__msg *m, ferry__gid *rref,
                                 ferry__gid *fork)
{
    const ferry__msg_gid *ids[2] = {rref ? &m->rref : NULL, fork ? &m->fork : NULL};
    for (int i = 0; i < 2; i++)
        if (ids[i] && (ids[i]->worker < 0 || ids[i]->worker >= ctx->world_size))
            return ferry__fail(FERRY_EPROTO, "RRef id names worker %lld of %d",
                               (long long)ids[i]->worker, ctx->world_size);
    if (rref)
        *rref = (ferry__gid){m->rref.worker, m->rref.local};
    if (fork)
        *fork = (ferry__gid){m->fork.worker, m->fork.local};
    return FERRY_OK;
}

/* G1: a user is gone. Unknown forks become tombstones, cancelled when their fork arrives. */
ferry_status ferry__rref_delete_fork(ferry__rref_ctx *ctx, ferry__gid id, ferry__gid fork)
{
    pthread_mutex_lock(&ctx->lock);
    ferry_rref *o = ferry__owner_find_or_create(ctx, id);
    bool drop = false;
    if (o) {
        ferry__owner_del_fork(o, fork);
        drop = ferry__owner_maybe_untable(o);
    }
    pthread_mutex_unlock(&ctx->lock);
    if (!o)
        return ferry_last_status();
    if (drop)
        ferry_rref_release(o); /* may free the value: outside the lock */
    return FERRY_OK;
}

/* The deletions in the ext were read by the on_receive hook already (deletes.c). */
static ferry_status handle_delete(ferry__agent *a, int src, ferry__msg *m, ferry_value **result,
                                  void *arg)
{
    ferry__rref_ctx *ctx = arg;
    ferry__gid id, fork;
    ferry_status rc = ferry__rref_read_ids(ctx, m, &id, &fork);
    if (rc != FERRY_OK)
        return rc;
    ferry__log_debug("rref", "user delete of RRef %d:%lld (fork %d:%lld) from '%s' (rank %d)",
                     (int)id.worker, (long long)id.local, (int)fork.worker,
                     (long long)fork.local, ctx->names[src], src);
    return ferry__rref_delete_fork(ctx, id, fork);
}

static ferry_status handle_fork_request(ferry__agent *a, int src, ferry__msg *m,
                                        ferry_value **result, void *arg)
{
    ferry__rref_ctx *ctx = arg;
    ferry__gid id, fork;
    ferry_status rc = ferry__rref_read_ids(ctx, m, &id, &fork);
    if (rc != FERRY_OK)
        return rc;
    pthread_mutex_lock(&ctx->lock);
    ferry_rref *o = ferry__owner_find_or_create(ctx, id);
    rc = o ? ferry__owner_add_fork(o, fork) : ferry_last_status();
    pthread_mutex_unlock(&ctx->lock);
    ferry__log_debug("rref", "fork request from '%s' (rank %d): fork %d:%lld of RRef %d:%lld %s",
                     ctx->names[src], src, (int)fork.worker, (long long)fork.local,
                     (int)id.worker, (long long)id.local,
                     rc == FERRY_OK ? "registered" : "not registered");
    return rc;
}

/* G2 ends: the child is known to the owner, so the parent's reference may go. */
static ferry_status handle_child_accept(ferry__agent *a, int src, ferry__msg *m,
                                        ferry_value **result, void *arg)
{
    ferry__rref_ctx *ctx = arg;
    ferry__gid fork;
    ferry_status rc = ferry__rref_read_ids(ctx, m, NULL, &fork);
    if (rc != FERRY_OK)
        return rc;
    pthread_mutex_lock(&ctx->lock);
    ferry_rref *parent = ferry__gid_map_take(&ctx->children, fork);
    ferry__rref_ctx_signal(ctx);
    pthread_mutex_unlock(&ctx->lock);
    ferry__log_debug("rref", "child accept from '%s' (rank %d): fork %d:%lld is known to its "
                     "owner%s", ctx->names[src], src, (int)fork.worker, (long long)fork.local,
                     parent ? "; the parent's reference goes" : " (already accepted)");
    ferry_rref_release(parent); /* NULL for a retried message */
    return FERRY_OK;
}

void ferry__rref_install_handlers(ferry__agent *a, ferry__rref_ctx *ctx)
{
    ferry__agent_set_handler(a, FERRY__MSG_RREF_USER_DELETE, handle_delete, ctx);
    ferry__agent_set_handler(a, FERRY__MSG_RREF_FORK_REQUEST, handle_fork_request, ctx);
    ferry__agent_set_handler(a, FERRY__MSG_RREF_CHILD_ACCEPT, handle_child_accept, ctx);
    ferry__agent_set_handler(a, FERRY__MSG_RREF_FETCH, ferry__rref_handle_fetch, ctx);
    ferry__agent_set_handler(a, FERRY__MSG_REMOTE_CALL, ferry__rref_handle_remote, ctx);
    /* The table updates never block, and fetches of ready values and non-blocking remote()s
       need not: answered where they are read, they save a pool hand-off each. */
    ferry__agent_set_inline_handler(a, FERRY__MSG_RREF_USER_DELETE, handle_delete, ctx);
    ferry__agent_set_inline_handler(a, FERRY__MSG_RREF_FORK_REQUEST, handle_fork_request, ctx);
    ferry__agent_set_inline_handler(a, FERRY__MSG_RREF_CHILD_ACCEPT, handle_child_accept, ctx);
    ferry__agent_set_inline_handler(a, FERRY__MSG_RREF_FETCH, ferry__rref_handle_fetch_inline, ctx);
    ferry__agent_set_inline_handler(a, FERRY__MSG_REMOTE_CALL, ferry__rref_handle_remote_inline,
                                    ctx);
}
