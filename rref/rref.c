/* RRef objects: owners (the value itself, or a pending future of it) and users (a handle the
   owner counts as one fork), their reference counts, the owner's table membership and fork
   sets, and the accessors of the public API. Releasing the last reference to a user tells its
   owner in the background (G1 of torch's protocol: queued for a later request to carry, see
   deletes.c); a pending user is kept alive by the protocol until the owner confirmed it, so a
   deletion never overtakes its own creation. */
#include <string.h>
#include <sys/types.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "core/value_impl.h"
#include "core/value_lent.h"
#include "rref/rref_impl.h"

static ferry_rref *rref_alloc(ferry__rref_ctx *ctx, bool is_owner, int32_t owner, ferry__gid id,
                              ferry__gid fork)
{
    ferry_rref *r = ferry__calloc(1, sizeof *r);
    ferry_future *f = ferry_future_new();
    if (!r || !f) {
        ferry__free(r);
        ferry_future_release(f);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory creating an RRef");
    }
    ferry__ref_init(&r->ref);
    r->ctx = ferry__rref_ctx_retain(ctx);
    r->is_owner = is_owner;
    r->owner = owner;
    r->id = id;
    r->fork = fork;
    if (is_owner)
        r->value = f;
    else
        r->confirmed = f;
    return r;
}

ferry_rref *ferry__rref_owner_new(ferry__rref_ctx *ctx, ferry__gid id)
{
    return rref_alloc(ctx, true, ctx->rank, id, id);
}

ferry_rref *ferry__rref_user_new(ferry__rref_ctx *ctx, int32_t owner, ferry__gid id,
                                 ferry__gid fork, bool pending)
{
    ferry_rref *u = rref_alloc(ctx, false, owner, id, fork);
    if (!u)
        return NULL;
    if (!pending)
        ferry_future_set_value(u->confirmed, NULL);
    else
        ferry__ref_inc(&u->ref); /* the protocol's, until the owner confirms */
    pthread_mutex_lock(&ctx->lock);
    u->next = ctx->users;
    if (ctx->users)
        ctx->users->prev = u;
    ctx->users = u;
    ctx->n_users++;
    ctx->n_pending_users += pending;
    pthread_mutex_unlock(&ctx->lock);
    return u;
}

void ferry__rref_confirm(ferry_rref *u, ferry_status rc, const char *why)
{
    if (rc == FERRY_OK)
        ferry__log_debug("rref", "RRef %d:%lld (fork %d:%lld) confirmed by its owner '%s' "
                         "(rank %d)", (int)u->id.worker, (long long)u->id.local,
                         (int)u->fork.worker, (long long)u->fork.local, u->ctx->names[u->owner],
                         (int)u->owner);
    else
        ferry__log_debug("rref", "RRef %d:%lld (fork %d:%lld) of owner '%s' (rank %d) failed: %s",
                         (int)u->id.worker, (long long)u->id.local, (int)u->fork.worker,
                         (long long)u->fork.local, u->ctx->names[u->owner], (int)u->owner,
                         why ? why : ferry_strerror(rc));
    if (rc == FERRY_OK)
        ferry_future_set_value(u->confirmed, NULL);
    else
        ferry_future_set_error(u->confirmed, rc, why);
    pthread_mutex_lock(&u->ctx->lock);
    if (u->ctx->n_pending_users > 0)
        u->ctx->n_pending_users--;
    ferry__rref_ctx_signal(u->ctx);
    pthread_mutex_unlock(&u->ctx->lock);
    ferry_rref_release(u);
}

/* ---- fork sets and the owner table (ctx->lock held) ---- */

static ssize_t set_find(const ferry__gid_set *s, ferry__gid g)
{
    for (size_t i = 0; i < s->len; i++)
        if (ferry__gid_eq(s->ids[i], g))
            return (ssize_t)i;
    return -1;
}

static ferry_status set_add(ferry__gid_set *s, ferry__gid g)
{
    if (s->len == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 2;
        ferry__gid *ids = ferry__realloc(s->ids, cap * sizeof *ids);
        if (!ids)
            return ferry__fail(FERRY_ENOMEM, "out of memory recording an RRef fork");
        s->ids = ids;
        s->cap = cap;
    }
    s->ids[s->len++] = g;
    return FERRY_OK;
}

static void set_remove_at(ferry__gid_set *s, size_t i)
{
    s->ids[i] = s->ids[--s->len];
}

ferry_status ferry__owner_table(ferry_rref *o)
{
    if (o->in_table)
        return FERRY_OK;
    ferry_status rc = ferry__gid_map_put(&o->ctx->owners, o->id, o);
    if (rc == FERRY_OK) {
        o->in_table = true;
        ferry__ref_inc(&o->ref);
    }
    return rc;
}

ferry_rref *ferry__owner_find_or_create(ferry__rref_ctx *ctx, ferry__gid id)
{
    ferry_rref *o = ferry__gid_map_get(&ctx->owners, id);
    if (o)
        return o;
    if (id.worker < 0 || id.worker >= ctx->world_size)
        return ferry__fail_null(FERRY_EPROTO, "RRef id names worker %d of %d", (int)id.worker,
                                ctx->world_size);
    o = ferry__rref_owner_new(ctx, id);
    if (!o)
        return NULL;
    o->expect_create = true;
    if (ferry__owner_table(o) != FERRY_OK) {
        ferry__rref_ctx_release(o->ctx); /* not the last: the caller's ctx reference remains */
        ferry_future_release(o->value);
        ferry__free(o);
        return NULL;
    }
    ferry__ref_dec(&o->ref); /* the table's reference is now the only one */
    return o;
}

ferry_status ferry__owner_add_fork(ferry_rref *o, ferry__gid fork)
{
    ssize_t t = set_find(&o->tombs, fork);
    if (t >= 0) { /* its deletion came first: the fork is already over */
        set_remove_at(&o->tombs, (size_t)t);
        return FERRY_OK;
    }
    if (set_find(&o->forks, fork) >= 0)
        return FERRY_OK; /* a retried message */
    ferry_status rc = set_add(&o->forks, fork);
    if (rc == FERRY_OK)
        o->ctx->n_forks++;
    return rc;
}

void ferry__owner_del_fork(ferry_rref *o, ferry__gid fork)
{
    ssize_t i = set_find(&o->forks, fork);
    if (i >= 0) {
        set_remove_at(&o->forks, (size_t)i);
        o->ctx->n_forks--;
    } else if (set_add(&o->tombs, fork) != FERRY_OK) {
        ferry__log_warn("rref", "out of memory recording an early RRef deletion");
    }
}

bool ferry__owner_maybe_untable(ferry_rref *o)
{
    if (!o->in_table || o->forks.len || o->tombs.len || o->expect_create)
        return false;
    ferry__gid_map_take(&o->ctx->owners, o->id);
    o->in_table = false;
    ferry__log_debug("rref", "OwnerRRef %d:%lld has no forks left: it leaves the owner table "
                     "(deleted once no local reference holds it)", (int)o->id.worker,
                     (long long)o->id.local);
    return true;
}

/* ---- lifetime ---- */

static void rref_free(ferry_rref *r)
{
    ferry__rref_ctx *ctx = r->ctx;
    if (!r->is_owner) {
        pthread_mutex_lock(&ctx->lock);
        if (r->prev)
            r->prev->next = r->next;
        else
            ctx->users = r->next;
        if (r->next)
            r->next->prev = r->prev;
        ctx->n_users--;
        bool tell_owner = !r->deleted && ctx->agent, flush = false, owes_delete = tell_owner;
        /* Queued for the next request to the owner to carry (deletes.c): no message and no
           pool hand-off of its own, and never a send from this thread, which may hold locks a
           send takes. */
        if (tell_owner &&
            ferry__rref_queue_delete_locked(ctx, r->owner, r->id, r->fork, &flush))
            tell_owner = false;
        pthread_mutex_unlock(&ctx->lock);
        ferry__log_debug("rref", "RRef %d:%lld (fork %d:%lld) released: %s owner '%s' (rank %d)",
                         (int)r->id.worker, (long long)r->id.local, (int)r->fork.worker,
                         (long long)r->fork.local,
                         !owes_delete ? "nothing to tell its"
                         : tell_owner ? "user delete sent on its own to its"
                                      : "user delete queued for its",
                         ctx->names[r->owner], (int)r->owner);
        if (tell_owner)
            ferry__rref_send_delete(ctx, r->owner, r->id, r->fork);
        if (flush)
            ferry__rref_schedule_flush(ctx);
    }
    ferry_future_release(r->value); /* the owner's value goes here */
    ferry_future_release(r->confirmed);
    ferry_future_release(r->created);
    ferry__free(r->forks.ids);
    ferry__free(r->tombs.ids);
    ferry__free(r);
    ferry__rref_ctx_release(ctx);
}

ferry_rref *ferry_rref_retain(ferry_rref *r)
{
    if (r)
        ferry__ref_inc(&r->ref);
    return r;
}

void ferry_rref_release(ferry_rref *r)
{
    if (r && ferry__ref_dec(&r->ref))
        rref_free(r);
}

ferry_rref *ferry_rref_new(const ferry_value *value)
{
    if (!value)
        return ferry__fail_null(FERRY_EINVAL, "NULL value");
    ferry__rref_ctx *ctx = ferry__rref_ctx_current();
    if (!ctx)
        return ferry__fail_null(FERRY_ESHUTDOWN,
                                "Current RPC agent is not set! Did you initialize the RPC "
                                "framework (e.g. by calling ferry_init_rpc)?");
    /* Not in the owner table until first forked (torch: num_owner_rrefs stays 0). */
    ferry_rref *o = ferry__rref_owner_new(ctx, ferry__rref_next_id(ctx));
    if (o) {
        ferry_future_set_value(o->value, ferry__value_lent(value));
        ferry__log_debug("rref", "OwnerRRef %d:%lld created here", (int)o->id.worker,
                         (long long)o->id.local);
    }
    ferry__rref_ctx_release(ctx);
    return o;
}

bool ferry_rref_is_owner(const ferry_rref *r)
{
    return r && r->is_owner;
}

bool ferry_rref_confirmed_by_owner(const ferry_rref *r)
{
    if (!r)
        return false;
    return r->is_owner || ferry_future_status(r->confirmed) == FERRY_OK;
}

ferry_status ferry_rref_owner(const ferry_rref *r, ferry_worker_info *out)
{
    if (!r || !out)
        return ferry__fail(FERRY_EINVAL, "NULL argument");
    *out = (ferry_worker_info){r->ctx->names[r->owner], r->owner};
    return FERRY_OK;
}

const char *ferry_rref_owner_name(const ferry_rref *r)
{
    if (!r)
        return ferry__fail_null(FERRY_EINVAL, "NULL rref");
    return r->ctx->names[r->owner];
}

/* ---- kind ops: values hold RRefs through these ---- */

static void *kind_retain(void *r)
{
    return ferry_rref_retain(r);
}

static void kind_release(void *r)
{
    ferry_rref_release(r);
}

/* Identity of the referenced object: the owner and the RRef id, whichever fork this is. */
static bool kind_equal(const void *pa, const void *pb)
{
    const ferry_rref *a = pa, *b = pb;
    return a->owner == b->owner && ferry__gid_eq(a->id, b->id);
}

__attribute__((constructor)) static void rref_value_kind(void)
{
    static const ferry__value_kind_ops ops = {
        .retain = kind_retain,
        .release = kind_release,
        .equal = kind_equal,
    };
    (void)ferry__value_register_kind(FERRY_VALUE_RREF, &ops); /* cannot fail for this kind */
}
