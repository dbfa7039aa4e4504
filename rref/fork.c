/* RRefs as values on the wire: the codec hooks that fork an RRef when it is sent and make the
   receiver's RRef when it arrives, and the before-call hook that holds a call back until every
   RRef in its arguments is confirmed by its owner (torch's waitForThreadLocalPendingRRefs).
   Sending forks with torch's rules: the owner registers the new fork at once ("early fork
   registration"); a user keeps its own reference alive as a pending child until the receiver is
   accepted (G2). Receiving: the owner gets its own OwnerRRef back; another worker gets a new
   UserRRef, confirmed at once when the owner sent it, else after a fork request. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "core/value_impl.h"
#include "rref/rref_impl.h"

static ferry_status refuse_fork(ferry_rref *r)
{
    char d[256];
    ferry__rref_describe(r, d, sizeof d);
    if (r->deleted)
        return ferry__fail(FERRY_ESHUTDOWN,
                           "%s has been deleted. Cannot call fork an UserRRef after deletion.", d);
    /* A user whose creation or fork failed is poisoned: say why, as torch does on pickling. */
    return ferry__fail(ferry_future_status(r->confirmed), "%s", ferry_future_error(r->confirmed));
}

static ferry_status hook_encode(void *unused, ferry_rref *r, int32_t dst, ferry__rref_desc *out)
{
    ferry__rref_ctx *ctx = r->ctx;
    ferry_status rc = FERRY_OK;
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->agent) {
        rc = ferry__fail(FERRY_ESHUTDOWN, "cannot send an RRef: RPC is not running");
    } else if (!r->is_owner && (r->deleted || (ferry_future_done(r->confirmed) &&
                                               ferry_future_status(r->confirmed) != FERRY_OK))) {
        rc = refuse_fork(r);
    }
    ferry__gid fork = ferry__rref_next_id(ctx);
    if (rc == FERRY_OK && r->is_owner) {
        rc = ferry__owner_table(r);
        if (rc == FERRY_OK)
            rc = ferry__owner_add_fork(r, fork);
    } else if (rc == FERRY_OK) {
        rc = ferry__gid_map_put(&ctx->children, fork, ferry_rref_retain(r));
        if (rc != FERRY_OK)
            ferry__ref_dec(&r->ref); /* not the last: the value being encoded holds one */
    }
    pthread_mutex_unlock(&ctx->lock);
    if (rc != FERRY_OK)
        return rc;
    ferry__log_debug("rref", "RRef %d:%lld sent to '%s' (rank %d) as fork %d:%lld: %s",
                     (int)r->id.worker, (long long)r->id.local, ctx->names[dst], (int)dst,
                     (int)fork.worker, (long long)fork.local,
                     r->is_owner ? "the owner registers it at once"
                                 : "held here as a pending child until it is accepted");
    *out = (ferry__rref_desc){.owner = r->owner, .rref_worker = r->id.worker,
                              .rref_local = r->id.local, .fork_worker = fork.worker,
                              .fork_local = fork.local, .parent = ctx->rank};
    return FERRY_OK;
}

static ferry_rref *decode_on_owner(ferry__rref_ctx *ctx, ferry__gid id, ferry__gid fork,
                                   int32_t parent)
{
    pthread_mutex_lock(&ctx->lock);
    ferry_rref *o = ferry__owner_find_or_create(ctx, id);
    bool drop = false;
    if (o) {
        ferry_rref_retain(o);
        if (parent == ctx->rank) { /* sent to ourselves: the early-registered fork is over */
            ferry__owner_del_fork(o, fork);
            drop = ferry__owner_maybe_untable(o);
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    if (drop)
        ferry_rref_release(o); /* the table's; ours remains */
    if (o && parent != ctx->rank)
        ferry__rref_send_child_accept(ctx, parent, fork); /* user -> owner: no fork to keep */
    return o;
}

static ferry_rref *hook_decode(void *arg, const ferry__rref_desc *d, int32_t src)
{
    ferry__rref_ctx *ctx = arg; /* the decoding agent's: lives as long as that agent */
    ferry_rref *r = NULL;
    int n = ctx->world_size;
    if (d->owner < 0 || d->owner >= n || d->rref_worker < 0 || d->rref_worker >= n ||
        d->fork_worker < 0 || d->fork_worker >= n || d->parent != src) {
        ferry__fail(FERRY_EPROTO, "malformed RRef descriptor (owner %d, parent %d, from %d)",
                    (int)d->owner, (int)d->parent, (int)src);
    } else {
        ferry__gid id = {d->rref_worker, d->rref_local}, fork = {d->fork_worker, d->fork_local};
        if (d->owner == ctx->rank) {
            ferry__log_debug("rref", "RRef %d:%lld (fork %d:%lld) came back to its owner from "
                             "'%s' (rank %d)", (int)id.worker, (long long)id.local,
                             (int)fork.worker, (long long)fork.local, ctx->names[src], (int)src);
            r = decode_on_owner(ctx, id, fork, d->parent);
        } else {
            bool pending = d->parent != d->owner;
            ferry__log_debug("rref", "RRef %d:%lld (fork %d:%lld) received from '%s' (rank %d): "
                             "a user of owner '%s' (rank %d), %s", (int)id.worker,
                             (long long)id.local, (int)fork.worker, (long long)fork.local,
                             ctx->names[src], (int)src, ctx->names[d->owner], (int)d->owner,
                             pending ? "confirmed after a fork request" : "confirmed at once");
            r = ferry__rref_user_new(ctx, d->owner, id, fork, pending);
            if (r && pending)
                ferry__rref_send_fork_request(r, d->parent);
        }
    }
    return r;
}

static void hook_release(void *unused, ferry_rref *r)
{
    ferry_rref_release(r);
}

void ferry__rref_install_wire_hooks(ferry__agent *agent, ferry__rref_ctx *ctx)
{
    ferry__wire_rref_hooks hooks = {
        .encode = hook_encode,
        .decode = hook_decode,
        .release = hook_release,
        .ctx = ctx,
    };
    ferry__agent_set_rref_codec(agent, &hooks);
}

/* ---- confirmation of the RRefs in a call's arguments ---- */

typedef struct {
    ferry_future **items;
    size_t len, cap;
} future_list;

static ferry_status collect_pending(const ferry_value *v, future_list *out)
{
    if (!v)
        return FERRY_OK;
    switch (v->kind) {
    case FERRY_VALUE_RREF: {
        ferry_rref *r = v->u.rref;
        if (r->is_owner || ferry_future_status(r->confirmed) == FERRY_OK)
            return FERRY_OK;
        if (out->len == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 8;
            ferry_future **items = ferry__realloc(out->items, cap * sizeof *items);
            if (!items)
                return ferry__fail(FERRY_ENOMEM, "out of memory waiting for RRef confirmations");
            out->items = items;
            out->cap = cap;
        }
        out->items[out->len++] = r->confirmed;
        return FERRY_OK;
    }
    case FERRY_VALUE_LIST:
        for (size_t i = 0; i < v->u.list.len; i++)
            if (collect_pending(v->u.list.items[i], out) != FERRY_OK)
                return FERRY_ENOMEM;
        return FERRY_OK;
    case FERRY_VALUE_DICT:
        for (size_t i = 0; i < v->u.dict.len; i++)
            if (collect_pending(v->u.dict.values[i], out) != FERRY_OK)
                return FERRY_ENOMEM;
        return FERRY_OK;
    default:
        return FERRY_OK;
    }
}

ferry_future *ferry__rref_before_call(ferry__agent *agent, void *state, int src, ferry__msg *m)
{
    if (m->type != FERRY__MSG_CALL)
        return NULL; /* remote() waits inside its handler, so its RRef is created either way */
    future_list l = {0};
    ferry_status rc = collect_pending(m->args, &l);
    if (rc == FERRY_OK)
        rc = collect_pending(m->kwargs, &l);
    ferry_future *f = NULL;
    if (rc != FERRY_OK) {
        f = ferry_future_new();
        if (f)
            ferry_future_set_error(f, rc, ferry_last_error());
    } else if (l.len) {
        f = ferry__future_all_of(l.items, l.len); /* fails fast, as the call must */
    }
    ferry__free(l.items);
    return f;
}

ferry_status ferry__rref_wait_confirmed(const ferry_value *v)
{
    future_list l = {0};
    ferry_status rc = collect_pending(v, &l);
    for (size_t i = 0; rc == FERRY_OK && i < l.len; i++)
        rc = ferry_future_wait(l.items[i], 0);
    ferry__free(l.items);
    return rc;
}

bool ferry__rref_all_confirmed(const ferry_value *v)
{
    future_list l = {0};
    ferry_status rc = collect_pending(v, &l);
    ferry__free(l.items);
    return rc == FERRY_OK && l.len == 0;
}
