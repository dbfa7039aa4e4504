/* Naming an RRef by id in a call to its owner (rref/target.h). */
#include "rref/target.h"

#include "core/error.h"
#include "core/future_impl.h"
#include "core/value_impl.h"
#include "core/value_lent.h"
#include "core/value_shared.h"
#include "rref/rref_impl.h"

/* True when r's owner keeps its OwnerRRef in its table for as long as r lives: a user the owner
   confirmed (remote()'s reply, or the fork's acknowledgement) that shutdown has not deleted. */
static bool named_by_id(ferry_rref *r)
{
    if (r->is_owner || !ferry_future_done(r->confirmed) ||
        ferry_future_status(r->confirmed) != FERRY_OK)
        return false;
    pthread_mutex_lock(&r->ctx->lock);
    bool live = !r->deleted && r->ctx->agent != NULL;
    pthread_mutex_unlock(&r->ctx->lock);
    return live;
}

/* An id travels as one int: the worker in the top 16 bits (below the sign), the local counter
   in the low 47. An id that does not fit goes as the RRef itself. */
#define ID_LOCAL_BITS 47
static bool id_fits(ferry__gid id)
{
    return id.worker >= 0 && id.worker < (1 << 16) && id.local >= 0 &&
           id.local < ((int64_t)1 << ID_LOCAL_BITS);
}

static int64_t id_pack(ferry__gid id)
{
    return (int64_t)id.worker << ID_LOCAL_BITS | id.local;
}

/* The list [target, name, args] (new reference). */
static ferry_value *target_args(ferry_rref *r, const char *name, const ferry_value *args)
{
    if (!r || !name || !*name)
        return ferry__fail_null(FERRY_EINVAL, "a call to an RRef's owner needs an RRef and a name");
    if (args && ferry_value_kind(args) != FERRY_VALUE_LIST)
        return ferry__fail_null(FERRY_EINVAL, "args must be a list, got %s",
                                ferry_kind_name(ferry_value_kind(args)));
    ferry_value *target = named_by_id(r) && id_fits(r->id) ? ferry_int(id_pack(r->id))
                                                            : ferry_rref_value(r);
    return ferry_args(3, target, ferry_string(name),
                      args ? ferry_value_retain(ferry__value_lent(args))
                           : ferry__value_shared_empty_list());
}

static void release_held(ferry_future *f, void *arg)
{
    ferry_rref_release(arg);
}

/* Keeps r alive until f completes; when no memory is left for that, waits for f instead. */
static void hold_until(ferry_rref *r, ferry_future *f)
{
    ferry_rref_retain(r);
    if (ferry__future_on_done(f, release_held, r) != FERRY_OK) {
        ferry_future_wait(f, 0);
        ferry_rref_release(r);
    }
}

ferry_future *ferry__rref_call_owner(ferry_rref *r, const char *fn, const char *name,
                                     const ferry_value *args, const ferry_value *kwargs,
                                     double timeout)
{
    ferry_value *call = target_args(r, name, args);
    if (!call)
        return NULL;
    ferry_future *f = ferry_rpc_async(ferry_rref_owner_name(r), fn, call, kwargs, timeout);
    ferry_value_release(call);
    if (f)
        hold_until(r, f);
    return f;
}

ferry_rref *ferry__rref_remote_owner(ferry_rref *r, const char *fn, const char *name,
                                     const ferry_value *args, const ferry_value *kwargs,
                                     double timeout)
{
    ferry_value *call = target_args(r, name, args);
    if (!call)
        return NULL;
    ferry_rref *out = ferry_remote(ferry_rref_owner_name(r), fn, call, kwargs, timeout);
    ferry_value_release(call);
    /* The owner's reply to remote() ends the creation and confirms a user result. */
    if (out && !out->is_owner)
        hold_until(r, out->confirmed);
    return out;
}

static ferry_future *owned_by_id(int64_t packed)
{
    if (packed < 0)
        return ferry__fail_null(FERRY_EINVAL, "an RRef target id is never negative");
    int64_t worker = packed >> ID_LOCAL_BITS;
    int64_t local = packed & (((int64_t)1 << ID_LOCAL_BITS) - 1);
    ferry__rref_ctx *ctx = ferry__rref_ctx_current();
    if (!ctx)
        return NULL;
    ferry_future *value = NULL;
    pthread_mutex_lock(&ctx->lock);
    ferry_rref *o = worker >= 0 && worker < ctx->world_size
                        ? ferry__gid_map_get(&ctx->owners, (ferry__gid){(int32_t)worker, local})
                        : NULL;
    if (o && o->value)
        value = ferry_future_retain(o->value);
    int rank = ctx->rank;
    const char *name = ctx->names[rank];
    pthread_mutex_unlock(&ctx->lock);
    if (!value)
        ferry__fail(FERRY_EINVAL, "worker '%s' owns no RRef with id GloballyUniqueId(created_on=%lld, "
                    "local_id=%lld): it was deleted, or never made here", name,
                    (long long)worker, (long long)local);
    ferry__rref_ctx_release(ctx);
    return value;
}

ferry_future *ferry__rref_target_value(const ferry_value *target)
{
    if (ferry_value_kind(target) == FERRY_VALUE_INT)
        return owned_by_id(ferry_value_as_int(target));
    ferry_rref *r = ferry_value_kind(target) == FERRY_VALUE_RREF ? ferry_value_as_rref(target)
                                                                 : NULL;
    if (!r)
        return ferry__fail_null(FERRY_EINVAL, "an RRef target is an RRef or its id");
    if (!r->is_owner)
        return ferry__fail_null(FERRY_ENOTOWNER, "a call for an RRef's owner reached worker "
                                "'%s', which does not own it", r->ctx->names[r->ctx->rank]);
    return ferry_future_retain(r->value);
}
