/* Deletions (G1) without messages of their own where possible. Releasing the last reference to
   a user queues its deletion by owner; the next to_here() or remote() (one without tensors, see
   may_carry) to that owner carries it in its ext (two entries: the RRef id and the fork id,
   each with its worker in the key), and the owner's on_receive hook applies it before the
   request itself is handled. What no request picks up goes on its own, in user-delete messages
   of up to three: from the progress thread's tick (about every 10 ms), from the pool once a
   queue grows long, or when shutdown or a test asks whether this worker is idle. A queued or
   carried deletion counts in n_messages until the carrier's reply (or the user-delete's
   acknowledgement) says the owner has it, so graceful shutdown still waits for every one.
   docs/performance.md has the figures that chose this. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "rref/rref_impl.h"

/* Ext keys: the tag in the top byte, the id's worker in the low 24 bits; the value is the
   id's local part. A deletion is an ID entry followed by its FORK entry. */
#define EXT_DEL_ID 0xE1000000u
#define EXT_DEL_FORK 0xE2000000u
#define EXT_TAG_MASK 0xFF000000u
#define EXT_WORKER_MASK 0x00FFFFFFu

/* A queue this long is sent from the pool at once instead of waiting for the tick. */
#define FLUSH_AT 64

bool ferry__rref_queue_delete_locked(ferry__rref_ctx *ctx, int32_t owner, ferry__gid id,
                                     ferry__gid fork, bool *flush)
{
    if (!ctx->dels || owner < 0 || owner >= ctx->world_size)
        return false;
    ferry__rref_del_queue *q = &ctx->dels[owner];
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        ferry__rref_del *items = ferry__realloc(q->items, cap * sizeof *items);
        if (!items)
            return false;
        q->items = items;
        q->cap = cap;
    }
    q->items[q->len++] = (ferry__rref_del){id, fork};
    atomic_fetch_add(&ctx->n_queued, 1);
    ctx->n_messages++;
    if (q->len >= FLUSH_AT && !ctx->flush_scheduled)
        *flush = ctx->flush_scheduled = true;
    return true;
}

static void flush_task(void *arg)
{
    ferry__rref_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->lock);
    ctx->flush_scheduled = false;
    pthread_mutex_unlock(&ctx->lock);
    ferry__rref_flush_deletes(ctx, false); /* a pool thread holds nothing a send takes */
    ferry__rref_ctx_release(ctx);
}

void ferry__rref_schedule_flush(ferry__rref_ctx *ctx)
{
    ferry__rref_ctx_retain(ctx);
    if (ferry__rref_submit(ctx, flush_task, ctx) != FERRY_OK) {
        pthread_mutex_lock(&ctx->lock);
        ctx->flush_scheduled = false; /* stopping: the queue goes with the context */
        pthread_mutex_unlock(&ctx->lock);
        ferry__rref_ctx_release(ctx);
    }
}

void ferry__rref_dels_to_ext(ferry__msg *m, const ferry__rref_del *d, int n)
{
    for (int i = 0; i < n; i++) {
        m->ext[m->n_ext++] = (ferry__msg_ext){EXT_DEL_ID | (uint32_t)d[i].id.worker,
                                              d[i].id.local};
        m->ext[m->n_ext++] = (ferry__msg_ext){EXT_DEL_FORK | (uint32_t)d[i].fork.worker,
                                              d[i].fork.local};
    }
}

/* Takes up to max deletions queued for dst into out; ctx->lock held. */
static int take_locked(ferry__rref_ctx *ctx, int32_t dst, ferry__rref_del *out, int max)
{
    ferry__rref_del_queue *q = &ctx->dels[dst];
    int n = 0;
    while (n < max && q->len)
        out[n++] = q->items[--q->len];
    if (n)
        atomic_fetch_sub(&ctx->n_queued, (size_t)n);
    return n;
}

/* True when v holds a tensor (or is nested too deep to tell cheaply). */
static bool has_tensor(const ferry_value *v, int depth)
{
    if (!v)
        return false;
    if (depth > 8)
        return true;
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_TENSOR:
        return true;
    case FERRY_VALUE_LIST:
        for (size_t i = 0; i < ferry_list_len(v); i++)
            if (has_tensor(ferry_list_get(v, i), depth + 1))
                return true;
        return false;
    case FERRY_VALUE_DICT:
        for (size_t i = 0; i < ferry_dict_len(v); i++)
            if (has_tensor(ferry_dict_value_at(v, i), depth + 1))
                return true;
        return false;
    default:
        return false;
    }
}

/* A request may carry deletions when the owner reads it whole once it was sent: a fetch, or a
   remote() without tensors. Tensor data sent apart can stall and the request then be dropped
   there with an error that reads like a timeout, which would lose what it carried. */
static bool may_carry(const ferry__rref_ctx *ctx, const ferry__msg *m)
{
    if (ctx->world_size > (int)EXT_WORKER_MASK)
        return false;
    if (m->type == FERRY__MSG_RREF_FETCH)
        return true;
    return m->type == FERRY__MSG_REMOTE_CALL && !has_tensor(m->args, 0) &&
           !has_tensor(m->kwargs, 0);
}

void ferry__rref_carry_take(ferry__rref_ctx *ctx, int32_t dst, ferry__msg *m,
                            ferry__rref_carry *c)
{
    c->dst = dst;
    c->n = 0;
    /* Distributed autograd may add two ext slots of its own as the request goes. */
    if (!atomic_load(&ctx->n_queued) || dst < 0 || dst >= ctx->world_size ||
        m->n_ext + 2 * FERRY__RREF_CARRY_MAX > FERRY__MSG_MAX_EXT - 2 || !may_carry(ctx, m))
        return;
    pthread_mutex_lock(&ctx->lock);
    if (ctx->dels)
        c->n = take_locked(ctx, dst, c->d, FERRY__RREF_CARRY_MAX);
    pthread_mutex_unlock(&ctx->lock);
    for (int i = 0; i < c->n; i++)
        ferry__log_debug("rref", "user delete of RRef %d:%lld (fork %d:%lld) rides on a request "
                         "to '%s' (rank %d)", (int)c->d[i].id.worker, (long long)c->d[i].id.local,
                         (int)c->d[i].fork.worker, (long long)c->d[i].fork.local,
                         ctx->names[dst], dst);
    ferry__rref_dels_to_ext(m, c->d, c->n);
}

void ferry__rref_carry_put_back(ferry__rref_ctx *ctx, ferry__rref_carry *c)
{
    if (!c->n)
        return;
    bool flush = false;
    int queued = 0;
    pthread_mutex_lock(&ctx->lock);
    for (; queued < c->n; queued++) {
        ctx->n_messages--; /* queueing counts it again */
        if (!ferry__rref_queue_delete_locked(ctx, c->dst, c->d[queued].id, c->d[queued].fork,
                                             &flush)) {
            ctx->n_messages++;
            break;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    if (queued < c->n) /* no memory to queue them: on their own, still counted */
        ferry__rref_send_deletes(ctx, c->dst, c->d + queued, c->n - queued, true);
    if (flush)
        ferry__rref_schedule_flush(ctx);
    c->n = 0;
}

void ferry__rref_carry_settle(ferry__rref_ctx *ctx, ferry__rref_carry *c, ferry_status rc)
{
    if (!c->n)
        return;
    if (rc == FERRY_ETRANSPORT || rc == FERRY_EPROTO || rc == FERRY_ENOMEM) {
        /* The owner was unreachable (a silent one may come back), could not decode the request
           or ran out of memory reading it: they go on their own, and the retries decide. A
           deletion the owner had read after all leaves a tombstone there (docs/rref.md). */
        ferry__rref_send_deletes(ctx, c->dst, c->d, c->n, true);
    } else {
        pthread_mutex_lock(&ctx->lock);
        ctx->n_messages -= c->n;
        ferry__rref_ctx_signal(ctx);
        pthread_mutex_unlock(&ctx->lock);
    }
    c->n = 0;
}

void ferry__rref_flush_deletes(ferry__rref_ctx *ctx, bool from_pool)
{
    int per_message = ctx->world_size > (int)EXT_WORKER_MASK ? 1 : 3;
    for (int32_t dst = 0; dst < ctx->world_size && atomic_load(&ctx->n_queued); dst++) {
        for (;;) {
            ferry__rref_del d[3];
            pthread_mutex_lock(&ctx->lock);
            int n = ctx->dels ? take_locked(ctx, dst, d, per_message) : 0;
            pthread_mutex_unlock(&ctx->lock);
            if (!n)
                break;
            ferry__rref_send_deletes(ctx, dst, d, n, from_pool);
        }
    }
}

/* ---- hooks ---- */

ferry_status ferry__rref_on_receive(ferry__agent *a, void *state, int src, ferry__msg *m)
{
    if (!m->n_ext || m->type == FERRY__MSG_RESPONSE)
        return FERRY_OK;
    ferry__rref_ctx *ctx = state;
    ferry__error_state saved; /* this may be a waiting thread's own, borrowed to read */
    bool any = false;
    for (size_t i = 0; i + 1 < m->n_ext; i++) {
        const ferry__msg_ext *e = &m->ext[i], *f = &m->ext[i + 1];
        if ((e->key & EXT_TAG_MASK) != EXT_DEL_ID)
            continue;
        if (!any)
            ferry__error_save(&saved);
        any = true;
        i++;
        ferry__gid id = {(int32_t)(e->key & EXT_WORKER_MASK), e->value};
        ferry__gid fork = {(int32_t)(f->key & EXT_WORKER_MASK), f->value};
        if ((f->key & EXT_TAG_MASK) != EXT_DEL_FORK || id.worker >= ctx->world_size ||
            fork.worker >= ctx->world_size) {
            ferry__log_warn("rref", "ignoring a malformed RRef deletion from rank %d", src);
            continue;
        }
        ferry__log_debug("rref", "user delete of RRef %d:%lld (fork %d:%lld) from '%s' (rank "
                         "%d), carried by request %llu", (int)id.worker, (long long)id.local,
                         (int)fork.worker, (long long)fork.local, ctx->names[src], src,
                         (unsigned long long)m->id);
        if (ferry__rref_delete_fork(ctx, id, fork) != FERRY_OK)
            ferry__log_warn("rref", "could not apply an RRef deletion from rank %d: %s", src,
                            ferry_last_error());
    }
    if (any)
        ferry__error_restore(&saved);
    return FERRY_OK;
}

void ferry__rref_tick(ferry__agent *a, void *state, long long now_ns)
{
    ferry__rref_ctx *ctx = state;
    if (atomic_load(&ctx->n_queued))
        ferry__rref_flush_deletes(ctx, false);
}

void ferry__rref_drop_deletes_locked(ferry__rref_ctx *ctx)
{
    for (int i = 0; ctx->dels && i < ctx->world_size; i++)
        ctx->dels[i].len = 0;
    atomic_store(&ctx->n_queued, 0);
}
