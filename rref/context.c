/* The RRef context: one per agent, plugged into rpc/ as an agent module (a constructor registers
   it, so linking libferry brings RRef support). It owns the owner table, the pending-children
   table, the list of live users and the queues of deletions (deletes.c), counts what graceful
   shutdown must wait for, and on shutdown deletes the users still held, as torch's
   delAllUsersAndUnforkedOwners does. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "rref/rref_impl.h"

static const ferry__agent_module rref_module;

ferry__rref_ctx *ferry__rref_ctx_retain(ferry__rref_ctx *ctx)
{
    if (ctx)
        ferry__ref_inc(&ctx->ref);
    return ctx;
}

void ferry__rref_ctx_release(ferry__rref_ctx *ctx)
{
    if (!ctx || !ferry__ref_dec(&ctx->ref))
        return;
    for (int i = 0; ctx->names && i < ctx->world_size; i++)
        ferry__free(ctx->names[i]);
    ferry__free(ctx->names);
    ferry__gid_map_free(&ctx->owners);
    ferry__gid_map_free(&ctx->children);
    for (int i = 0; ctx->dels && i < ctx->world_size; i++)
        ferry__free(ctx->dels[i].items);
    ferry__free(ctx->dels);
    pthread_cond_destroy(&ctx->idle_cv);
    pthread_mutex_destroy(&ctx->lock);
    ferry__free(ctx);
}

ferry__rref_ctx *ferry__rref_ctx_current(void)
{
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return NULL;
    ferry__rref_ctx *ctx = ferry__rref_ctx_retain(ferry__agent_module_state(a, &rref_module));
    ferry__agent_release(a);
    if (!ctx)
        ferry_set_error(FERRY_ESHUTDOWN, "RRef support is not running in this agent");
    return ctx;
}

ferry__gid ferry__rref_next_id(ferry__rref_ctx *ctx)
{
    return (ferry__gid){ctx->rank, atomic_fetch_add(&ctx->next_local, 1)};
}

ferry__agent *ferry__rref_ctx_agent(ferry__rref_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    ferry__agent *a = ctx->agent;
    ferry__agent_retain(a);
    pthread_mutex_unlock(&ctx->lock);
    if (!a)
        ferry_set_error(FERRY_ESHUTDOWN, "RPC has not been initialized. Call ferry_init_rpc first.");
    return a;
}

ferry_status ferry__rref_submit(ferry__rref_ctx *ctx, void (*fn)(void *), void *arg)
{
    ferry__agent *a = ferry__rref_ctx_agent(ctx);
    if (!a)
        return FERRY_ESHUTDOWN;
    ferry_status rc = ferry__agent_submit(a, fn, arg);
    ferry__agent_release(a);
    if (rc == FERRY_EAGAIN) { /* queue full: sending inline beats dropping a protocol message */
        fn(arg);
        rc = FERRY_OK;
    }
    return rc;
}

void ferry__rref_ctx_signal(ferry__rref_ctx *ctx)
{
    pthread_cond_broadcast(&ctx->idle_cv);
}

void ferry__rref_describe(const ferry_rref *r, char *buf, size_t len)
{
    if (r->is_owner)
        snprintf(buf, len, "OwnerRRef(GloballyUniqueId(created_on=%d, local_id=%lld))",
                 (int)r->id.worker, (long long)r->id.local);
    else
        snprintf(buf, len,
                 "UserRRef(rref_id=GloballyUniqueId(created_on=%d, local_id=%lld), "
                 "fork_id=GloballyUniqueId(created_on=%d, local_id=%lld))",
                 (int)r->id.worker, (long long)r->id.local, (int)r->fork.worker,
                 (long long)r->fork.local);
}

static int64_t busy_locked(ferry__rref_ctx *ctx)
{
    return ctx->n_pending_users + (int64_t)ctx->children.len + ctx->n_messages;
}

/* ---- the agent module ---- */

static ferry_status rref_start(ferry__agent *a, void **state)
{
    ferry__rref_ctx *ctx = ferry__calloc(1, sizeof *ctx);
    if (!ctx)
        return ferry__fail(FERRY_ENOMEM, "out of memory for the RRef context");
    ferry__ref_init(&ctx->ref);
    pthread_mutex_init(&ctx->lock, NULL);
    ferry__cond_init_monotonic(&ctx->idle_cv);
    ctx->rank = ferry__agent_rank(a);
    ctx->world_size = ferry__agent_world_size(a);
    atomic_init(&ctx->next_local, 0);
    atomic_init(&ctx->n_queued, 0);
    ctx->dels = ferry__calloc((size_t)ctx->world_size, sizeof *ctx->dels);
    ctx->names = ferry__calloc((size_t)ctx->world_size, sizeof *ctx->names);
    for (int i = 0; ctx->names && i < ctx->world_size; i++)
        if (!(ctx->names[i] = ferry__strdup(ferry__agent_worker_name(a, i))))
            break;
    if (!ctx->dels || !ctx->names || !ctx->names[ctx->world_size - 1]) {
        ferry__rref_ctx_release(ctx);
        return ferry__fail(FERRY_ENOMEM, "out of memory for the RRef context");
    }
    ferry_status rc = ferry__rref_register_proxy();
    if (rc != FERRY_OK) {
        ferry__rref_ctx_release(ctx);
        return rc;
    }
    ctx->agent = a;
    ferry__rref_install_handlers(a, ctx);
    ferry__rref_install_wire_hooks(a, ctx);
    *state = ctx;
    return FERRY_OK;
}

static int64_t rref_busy(ferry__agent *a, void *state)
{
    ferry__rref_ctx *ctx = state;
    ferry__rref_flush_deletes(ctx, true); /* no later request will carry them */
    pthread_mutex_lock(&ctx->lock);
    int64_t n = busy_locked(ctx);
    pthread_mutex_unlock(&ctx->lock);
    return n;
}

/* torch's delAllUsersAndUnforkedOwners: once no worker has a fork or a message pending, every
   UserRRef the program still holds is deleted on its owner (the handle stays valid; using it
   later says it "has been deleted"). The deletions are messages the next round of the agent's
   join waits for, so owners free their values before the workers stop. */
static ferry_status rref_quiesce(ferry__agent *a, void *state, double timeout_s)
{
    ferry__rref_ctx *ctx = state;
    typedef struct {
        int32_t owner;
        ferry__gid id, fork;
    } del;
    pthread_mutex_lock(&ctx->lock);
    size_t n = 0, cap = (size_t)ctx->n_users;
    del *dels = cap ? ferry__malloc(cap * sizeof *dels) : NULL;
    for (ferry_rref *u = ctx->users; u && dels && n < cap; u = u->next) {
        if (u->deleted)
            continue;
        u->deleted = true;
        dels[n++] = (del){u->owner, u->id, u->fork};
    }
    pthread_mutex_unlock(&ctx->lock);
    if (cap && !dels)
        return ferry__fail(FERRY_ENOMEM, "out of memory deleting user RRefs at shutdown");
    for (size_t i = 0; i < n; i++)
        ferry__rref_send_delete(ctx, dels[i].owner, dels[i].id, dels[i].fork);
    ferry__free(dels);
    if (n)
        ferry__log_debug("rref", "shutdown deleted %zu user RRefs still held", n);
    return FERRY_OK;
}

/* The agent's pool has drained and the fabric is closed: drop the tables (owners free their
   values) and detach from the agent. RRef handles the program still holds stay valid. A value
   that never came (an RRef whose creation never arrived) fails with FERRY_ESHUTDOWN, so whatever
   waits on it (a fetch answered later) ends. */
static void rref_stop(ferry__agent *a, void *state)
{
    ferry__rref_ctx *ctx = state;
    pthread_mutex_lock(&ctx->lock);
    ctx->agent = NULL;
    ferry__gid_map owners = ctx->owners, children = ctx->children;
    ctx->owners = (ferry__gid_map){0};
    ctx->children = (ferry__gid_map){0};
    if (owners.len || children.len)
        ferry__log_debug("rref", "stopping with %zu owner RRefs and %zu pending forks",
                         owners.len, children.len);
    ctx->n_forks = 0;
    ctx->n_pending_users = 0;
    ctx->n_messages = 0;
    ferry__rref_drop_deletes_locked(ctx);
    ferry__rref_ctx_signal(ctx);
    pthread_mutex_unlock(&ctx->lock);
    ferry_rref *r;
    while ((r = ferry__gid_map_pop(&owners))) {
        pthread_mutex_lock(&ctx->lock);
        r->in_table = false;
        pthread_mutex_unlock(&ctx->lock);
        if (r->value && !ferry_future_done(r->value))
            ferry_future_set_error(r->value, FERRY_ESHUTDOWN,
                                   "RPC is shutting down: the RRef's value never came");
        ferry_rref_release(r);
    }
    while ((r = ferry__gid_map_pop(&children)))
        ferry_rref_release(r);
    ferry__gid_map_free(&owners);
    ferry__gid_map_free(&children);
    ferry__rref_ctx_release(ctx);
}

static const ferry__agent_module rref_module = {
    .name = "rref",
    .start = rref_start,
    .busy = rref_busy,
    .quiesce = rref_quiesce,
    .stop = rref_stop,
    .before_call = ferry__rref_before_call,
    .on_receive = ferry__rref_on_receive,
    .tick = ferry__rref_tick,
};

__attribute__((constructor)) static void rref_register(void)
{
    ferry__agent_register_module(&rref_module);
}

/* ---- debug API ---- */

ferry_status ferry_debug_rref_counts(ferry_rref_debug_counts *out)
{
    if (!out)
        return ferry__fail(FERRY_EINVAL, "out is NULL");
    ferry__rref_ctx *ctx = ferry__rref_ctx_current();
    if (!ctx)
        return FERRY_ESHUTDOWN;
    pthread_mutex_lock(&ctx->lock);
    *out = (ferry_rref_debug_counts){
        .owners = (int64_t)ctx->owners.len,
        .forks = ctx->n_forks,
        .users = ctx->n_users,
        .pending_users = ctx->n_pending_users,
        .pending_children = (int64_t)ctx->children.len,
        .messages = ctx->n_messages,
    };
    pthread_mutex_unlock(&ctx->lock);
    ferry__rref_ctx_release(ctx);
    return FERRY_OK;
}

ferry_status ferry_debug_rref_wait_idle(double timeout)
{
    ferry__rref_ctx *ctx = ferry__rref_ctx_current();
    if (!ctx)
        return FERRY_ESHUTDOWN;
    ferry__rref_flush_deletes(ctx, true); /* queued deletions go now, not at the next tick */
    struct timespec ts = ferry__timespec_from_ns(ferry__deadline_ns(ferry__now_ns(), timeout));
    ferry_status rc = FERRY_OK;
    pthread_mutex_lock(&ctx->lock);
    while (busy_locked(ctx) > 0 && ctx->agent) {
        if (timeout <= 0) {
            pthread_cond_wait(&ctx->idle_cv, &ctx->lock);
        } else if (pthread_cond_timedwait(&ctx->idle_cv, &ctx->lock, &ts) != 0) {
            if (busy_locked(ctx) > 0)
                rc = FERRY_EAGAIN;
            break;
        }
    }
    int64_t left = busy_locked(ctx);
    pthread_mutex_unlock(&ctx->lock);
    ferry__rref_ctx_release(ctx);
    if (rc != FERRY_OK)
        return ferry__fail(rc, "RRef messages still pending after %g s (%lld)", timeout,
                           (long long)left);
    return FERRY_OK;
}
