/* Distributed autograd contexts: the per-agent table of them, the thread's current one, the
   gradients a context accumulates for this worker's leaves, and the module that plugs it all
   into rpc/ (registered from a constructor, as every module above rpc). */
#include <stdio.h>
#include <string.h>

#include "autograd/dist/dist_impl.h"
#include "core/alloc.h"
#include "core/carry.h"
#include "core/error.h"
#include "core/value_impl.h"

static const ferry__agent_module ferry__dist_module;

static _Thread_local int64_t current = -1;

int64_t ferry__dist_current(void)
{
    return current;
}

int64_t ferry__dist_set_current(int64_t id)
{
    int64_t prev = current;
    current = id;
    return prev;
}

/* ---- the state and its table ---- */

ferry__dist_state *ferry__dist_state_get(ferry__agent **agent)
{
    ferry__agent *a = ferry__agent_get();
    if (a == NULL)
        return NULL;
    ferry__dist_state *st = ferry__agent_module_state(a, &ferry__dist_module);
    if (st == NULL) {
        ferry__agent_release(a);
        return ferry__fail_null(FERRY_ESHUTDOWN, "distributed autograd is not running");
    }
    *agent = a;
    return st;
}

ferry_status ferry__dist_no_context(int64_t id)
{
    return ferry_set_error(FERRY_EINVAL, "Could not find autograd context with id: %lld",
                           (long long)id);
}

/* The agent holds one reference on the state and every context one, so a context a thread
   still holds when the agent stops keeps the counters it updates. */
static void state_release(ferry__dist_state *st)
{
    if (!ferry__ref_dec(&st->ref))
        return;
    pthread_mutex_destroy(&st->mu);
    ferry__free(st);
}

static size_t bucket_of(int64_t id)
{
    return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 56) % DIST_BUCKETS;
}

ferry__dist_ctx *ferry__dist_ctx_retain(ferry__dist_ctx *ctx)
{
    ferry__ref_inc(&ctx->ref);
    return ctx;
}

static void release_recs(ferry__dist_rec *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ferry__node_release(recs[i].node);
    ferry__free(recs);
}

void ferry__dist_ctx_release(ferry__dist_ctx *ctx)
{
    if (ctx == NULL || !ferry__ref_dec(&ctx->ref))
        return;
    ferry__dist_state *st = ctx->st;
    atomic_fetch_sub(&st->n_sends, (int64_t)ctx->n_sends);
    atomic_fetch_sub(&st->n_recvs, (int64_t)ctx->n_recvs);
    release_recs(ctx->sends, ctx->n_sends);
    release_recs(ctx->recvs, ctx->n_recvs);
    for (size_t i = 0; i < ctx->n_grads; i++) {
        ferry_tensor_release(ctx->grads[i].tensor);
        ferry_tensor_release(ctx->grads[i].grad);
    }
    ferry__free(ctx->grads);
    ferry__free(ctx->known);
    for (size_t i = 0; i < ctx->n_ended; i++)
        ferry__free(ctx->ended[i].error);
    ferry__free(ctx->ended);
    pthread_mutex_destroy(&ctx->mu);
    pthread_mutex_destroy(&ctx->rec_mu);
    ferry__free(ctx);
    state_release(st);
}

static ferry__dist_ctx *lookup(ferry__dist_state *st, int64_t id)
{
    for (ferry__dist_ctx *c = st->buckets[bucket_of(id)]; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

ferry__dist_ctx *ferry__dist_ctx_find(ferry__dist_state *st, int64_t id)
{
    pthread_mutex_lock(&st->mu);
    ferry__dist_ctx *c = lookup(st, id);
    if (c)
        ferry__dist_ctx_retain(c);
    pthread_mutex_unlock(&st->mu);
    return c;
}

static ferry__dist_ctx *ctx_new(ferry__dist_state *st, int64_t id)
{
    ferry__dist_ctx *c = ferry__calloc(1, sizeof *c);
    bool *known = c ? ferry__calloc((size_t)st->world, sizeof *known) : NULL;
    if (known == NULL) {
        ferry__free(c);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory for an autograd context");
    }
    ferry__ref_init(&c->ref);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->rec_mu, NULL);
    c->id = id;
    c->st = st;
    ferry__ref_inc(&st->ref);
    c->known = known;
    return c;
}

ferry__dist_ctx *ferry__dist_ctx_find_or_create(ferry__dist_state *st, int64_t id)
{
    ferry__dist_ctx *c = ferry__dist_ctx_find(st, id);
    if (c)
        return c;
    ferry__dist_ctx *fresh = ctx_new(st, id);
    if (fresh == NULL)
        return NULL;
    pthread_mutex_lock(&st->mu);
    c = lookup(st, id);
    if (c == NULL) { /* the table keeps the first reference */
        c = fresh;
        fresh = NULL;
        size_t b = bucket_of(id);
        c->next = st->buckets[b];
        st->buckets[b] = c;
        st->n_contexts++;
    }
    ferry__dist_ctx_retain(c);
    pthread_mutex_unlock(&st->mu);
    ferry__dist_ctx_release(fresh);
    return c;
}

ferry__dist_ctx *ferry__dist_ctx_remove(ferry__dist_state *st, int64_t id)
{
    pthread_mutex_lock(&st->mu);
    ferry__dist_ctx **p = &st->buckets[bucket_of(id)];
    while (*p && (*p)->id != id)
        p = &(*p)->next;
    ferry__dist_ctx *c = *p;
    if (c) {
        *p = c->next;
        c->next = NULL;
        st->n_contexts--;
    }
    pthread_mutex_unlock(&st->mu);
    return c;
}

ferry__dist_ctx **ferry__dist_ctx_all(ferry__dist_state *st, size_t *n)
{
    pthread_mutex_lock(&st->mu);
    ferry__dist_ctx **all = ferry__calloc((size_t)st->n_contexts + 1, sizeof *all);
    size_t k = 0;
    for (size_t b = 0; all && b < DIST_BUCKETS; b++)
        for (ferry__dist_ctx *c = st->buckets[b]; c; c = c->next)
            all[k++] = ferry__dist_ctx_retain(c);
    pthread_mutex_unlock(&st->mu);
    *n = k;
    return all;
}

/* ---- records and gradients (context lock held) ---- */

ferry_status ferry__dist_ctx_add_rec(ferry__dist_rec **recs, size_t *n, size_t *cap, int64_t msg,
                                     int peer, ferry__node *node)
{
    if (*n == *cap) {
        size_t bigger = *cap ? *cap * 2 : 8;
        ferry__dist_rec *r = ferry__realloc(*recs, bigger * sizeof *r);
        if (r == NULL)
            return ferry__fail(FERRY_ENOMEM, "out of memory recording an autograd message");
        *recs = r;
        *cap = bigger;
    }
    (*recs)[(*n)++] = (ferry__dist_rec){msg, peer, ferry__node_retain(node)};
    return FERRY_OK;
}

static ferry__dist_rec *find_rec(ferry__dist_rec *recs, size_t n, int64_t msg, int peer)
{
    for (size_t i = n; i-- > 0;) /* the latest first: a backward answers recent messages */
        if (recs[i].msg == msg && (peer < 0 || recs[i].peer == peer))
            return &recs[i];
    return NULL;
}

ferry__node *ferry__dist_ctx_rec_node(ferry__dist_ctx *c, bool send, int64_t msg, int peer)
{
    pthread_mutex_lock(&c->rec_mu);
    ferry__dist_rec *r = send ? find_rec(c->sends, c->n_sends, msg, peer)
                       : find_rec(c->recvs, c->n_recvs, msg, peer);
    ferry__node *node = r ? ferry__node_retain(r->node) : NULL;
    pthread_mutex_unlock(&c->rec_mu);
    return node;
}

static ferry__dist_grad *find_grad(ferry__dist_ctx *c, const ferry_tensor *t)
{
    for (size_t i = 0; i < c->n_grads; i++)
        if (c->grads[i].tensor == t)
            return &c->grads[i];
    return NULL;
}

ferry_status ferry__dist_ctx_accumulate(void *user, ferry_tensor *leaf, ferry_tensor *grad)
{
    ferry__dist_ctx *c = user;
    ferry__dist_grad *g = find_grad(c, leaf);
    if (g != NULL) { /* in place, as torch's context does with grad mode off */
        ferry_no_grad_enter();
        ferry_status rc = ferry_add_(g->grad, grad);
        ferry_no_grad_exit();
        return rc;
    }
    if (c->n_grads == c->cap_grads) {
        size_t bigger = c->cap_grads ? c->cap_grads * 2 : 8;
        ferry__dist_grad *grads = ferry__realloc(c->grads, bigger * sizeof *grads);
        if (grads == NULL)
            return ferry__fail(FERRY_ENOMEM, "out of memory for a gradient");
        c->grads = grads;
        c->cap_grads = bigger;
    }
    /* A private copy: the engine's gradient may be shared with other edges. */
    ferry_tensor *copy = ferry_tensor_clone_data(grad);
    if (copy == NULL)
        return ferry_last_status();
    c->grads[c->n_grads++] = (ferry__dist_grad){ferry_tensor_retain(leaf), copy};
    return FERRY_OK;
}

/* ---- the public calls ---- */

int64_t ferry_dist_autograd_context_begin(void)
{
    ferry__agent *a;
    ferry__dist_state *st = ferry__dist_state_get(&a);
    if (st == NULL)
        return -1;
    int64_t id = -1;
    if (current != -1) {
        ferry_set_error(FERRY_EINVAL, "Already have an autograd context id for this thread.");
    } else {
        int64_t n = atomic_fetch_add(&st->next_ctx, 1);
        int64_t candidate = ((int64_t)st->rank << 48) | (n & (((int64_t)1 << 48) - 1));
        ferry__dist_ctx *c = ferry__dist_ctx_find_or_create(st, candidate);
        if (c != NULL) {
            ferry__dist_ctx_release(c);
            id = current = candidate;
        }
    }
    ferry__agent_release(a);
    return id;
}

ferry_status ferry_dist_autograd_context_end(int64_t id)
{
    ferry__agent *a;
    ferry__dist_state *st = ferry__dist_state_get(&a);
    if (st == NULL)
        return ferry_last_status();
    ferry__dist_ctx *c = ferry__dist_ctx_remove(st, id);
    if (current == id)
        current = -1;
    ferry_status rc = FERRY_OK;
    if (c == NULL) {
        rc = ferry__dist_no_context(id);
    } else {
        ferry__dist_ctx_release_everywhere(st, c, -1);
        ferry__dist_ctx_release(c);
    }
    ferry__agent_release(a);
    return rc;
}

int64_t ferry_dist_autograd_current_context(void)
{
    return current;
}

ferry_tensor *ferry_dist_autograd_get_gradient(int64_t id, ferry_tensor *tensor)
{
    ferry__agent *a;
    ferry__dist_state *st = ferry__dist_state_get(&a);
    if (st == NULL)
        return NULL;
    ferry_tensor *grad = NULL;
    ferry__dist_ctx *c = ferry__dist_ctx_find(st, id);
    if (c == NULL) {
        ferry__dist_no_context(id);
    } else {
        ferry_clear_error();
        pthread_mutex_lock(&c->mu);
        ferry__dist_grad *g = tensor ? find_grad(c, tensor) : NULL;
        if (g)
            grad = ferry_tensor_retain(g->grad);
        pthread_mutex_unlock(&c->mu);
        ferry__dist_ctx_release(c);
    }
    ferry__agent_release(a);
    return grad;
}

ferry_value *ferry_dist_autograd_get_gradients(int64_t id)
{
    ferry__agent *a;
    ferry__dist_state *st = ferry__dist_state_get(&a);
    if (st == NULL)
        return NULL;
    ferry_value *list = NULL;
    ferry__dist_ctx *c = ferry__dist_ctx_find(st, id);
    if (c == NULL) {
        ferry__dist_no_context(id);
    } else {
        pthread_mutex_lock(&c->mu);
        list = ferry__list_new(c->n_grads);
        for (size_t i = 0; list && i < c->n_grads; i++) {
            ferry_value *pair = ferry_list_of(2, ferry_tensor_value(c->grads[i].tensor),
                                              ferry_tensor_value(c->grads[i].grad));
            if (pair == NULL) {
                ferry_value_release(list);
                list = NULL;
                break;
            }
            ferry__list_set(list, i, pair);
        }
        pthread_mutex_unlock(&c->mu);
        if (list == NULL)
            ferry_set_error(FERRY_ENOMEM, "out of memory listing gradients");
        ferry__dist_ctx_release(c);
    }
    ferry__agent_release(a);
    return list;
}

ferry_dist_autograd_counts ferry_dist_autograd_debug_counts(void)
{
    ferry_dist_autograd_counts counts = {0};
    ferry__agent *a = ferry__agent_get();
    ferry_clear_error();
    if (a == NULL)
        return counts;
    ferry__dist_state *st = ferry__agent_module_state(a, &ferry__dist_module);
    if (st != NULL) {
        pthread_mutex_lock(&st->mu);
        counts.contexts = st->n_contexts;
        pthread_mutex_unlock(&st->mu);
        counts.backward_passes = atomic_load(&st->n_passes);
        counts.send_nodes = atomic_load(&st->n_sends);
        counts.recv_nodes = atomic_load(&st->n_recvs);
        counts.cleanups_pending = atomic_load(&st->cleanups_pending);
    }
    ferry__agent_release(a);
    return counts;
}

/* ---- the module ---- */

static ferry_status ferry__dist_start(ferry__agent *a, void **state)
{
    ferry__dist_state *st = ferry__calloc(1, sizeof *st);
    if (st == NULL)
        return ferry__fail(FERRY_ENOMEM, "out of memory for distributed autograd");
    st->agent = a;
    st->rank = ferry__agent_rank(a);
    st->world = ferry__agent_world_size(a);
    ferry__ref_init(&st->ref);
    pthread_mutex_init(&st->mu, NULL);
    atomic_init(&st->next_ctx, 0);
    atomic_init(&st->next_msg, 1);
    atomic_init(&st->next_pass, 1);
    ferry_status rc = ferry__dist_register_functions();
    if (rc != FERRY_OK) {
        state_release(st);
        return rc;
    }
    ferry__agent_set_handler(a, FERRY__MSG_AUTOGRAD_BACKWARD, ferry__dist_pass_handle, st);
    ferry__agent_set_handler(a, FERRY__MSG_AUTOGRAD_CLEANUP, ferry__dist_cleanup_handle, st);
    *state = st;
    return FERRY_OK;
}

static int64_t ferry__dist_busy(ferry__agent *a, void *state)
{
    ferry__dist_state *st = state;
    return atomic_load(&st->cleanups_pending);
}

static void ferry__dist_peer_lost(ferry__agent *a, void *state, int rank, bool gone,
                                  const char *why)
{
    ferry__dist_pass_peer_lost(state, rank, gone, why);
}

/* The agent is gone: the contexts still in the table go with it. A context something still
   holds (a thread inside a pass) stays until that reference goes, and the state with it. */
static void ferry__dist_stop(ferry__agent *a, void *state)
{
    ferry__dist_state *st = state;
    size_t n = 0;
    ferry__dist_ctx **all = ferry__dist_ctx_all(st, &n);
    for (size_t i = 0; i < n; i++) {
        ferry__dist_ctx *c = ferry__dist_ctx_remove(st, all[i]->id);
        ferry__dist_ctx_release(c);
        ferry__dist_ctx_release(all[i]);
    }
    ferry__free(all);
    state_release(st);
}

/* The carrier that makes then-callbacks run in their creator's context. */
static int64_t carry_capture(void)
{
    return current;
}

static int64_t carry_install(int64_t id)
{
    return ferry__dist_set_current(id);
}

static void carry_restore(int64_t prev)
{
    current = prev;
}

static const ferry__carrier ferry__dist_carrier = {carry_capture, carry_install, carry_restore};

static const ferry__agent_module ferry__dist_module = {
    .name = "dist_autograd",
    .start = ferry__dist_start,
    .busy = ferry__dist_busy,
    .stop = ferry__dist_stop,
    .on_send = ferry__dist_on_send,
    .on_receive = ferry__dist_on_receive,
    .before_request = ferry__dist_before_request,
    .after_request = ferry__dist_after_request,
    .peer_lost = ferry__dist_peer_lost,
};

__attribute__((constructor)) static void ferry__dist_register(void)
{
    ferry__agent_register_module(&ferry__dist_module);
    ferry__carrier_register(&ferry__dist_carrier);
}
