/* Recording: the module's hooks around every call. A request sent while the thread has a
   current context carries its id (always, as torch forces it for user calls); when tensors in
   a request or a response require grad, the sender adds a send node whose edges lead to them
   and the receiver a recv node that becomes their grad_fn, tied by a message id. The callee
   runs with the request's context as its current one, so what it calls carries it on. */
#include <stdint.h>
#include <stdlib.h>

#include "autograd/dist/dist_impl.h"
#include "core/alloc.h"
#include "core/error.h"

/* The encoder refuses values nested deeper than its limit: so do we, without recursing more. */
#define WALK_MAX_DEPTH 64

bool ferry__dist_msg_ext(const ferry__msg *m, uint32_t key, int64_t *value)
{
    for (size_t i = 0; i < m->n_ext; i++) {
        if (m->ext[i].key == key) {
            *value = m->ext[i].value;
            return true;
        }
    }
    return false;
}

ferry_status ferry__dist_msg_add_ext(ferry__msg *m, uint32_t key, int64_t value)
{
    if (m->n_ext >= FERRY__MSG_MAX_EXT)
        return ferry__fail(FERRY_EINVAL, "a message carries at most %d module slots",
                           FERRY__MSG_MAX_EXT);
    m->ext[m->n_ext++] = (ferry__msg_ext){key, value};
    return FERRY_OK;
}

typedef struct {
    ferry_tensor **t;
    size_t n, cap;
} tensor_list;

static ferry_status push(tensor_list *l, ferry_tensor *t)
{
    if (l->n == l->cap) {
        size_t bigger = l->cap ? l->cap * 2 : 8;
        ferry_tensor **grown = ferry__realloc(l->t, bigger * sizeof *grown);
        if (grown == NULL)
            return ferry__fail(FERRY_ENOMEM, "out of memory recording a call's tensors");
        l->t = grown;
        l->cap = bigger;
    }
    l->t[l->n++] = t;
    return FERRY_OK;
}

/* The tensors that require grad in v, in the pre-order the wire sends them: sender and
   receiver list the same tensors in the same order. */
static ferry_status collect(const ferry_value *v, int depth, tensor_list *out)
{
    if (v == NULL || depth > WALK_MAX_DEPTH)
        return FERRY_OK;
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_TENSOR: {
        ferry_tensor *t = ferry_value_as_tensor(v);
        return ferry_tensor_requires_grad(t) ? push(out, t) : FERRY_OK;
    }
    case FERRY_VALUE_LIST:
        for (size_t i = 0; i < ferry_list_len(v); i++) {
            ferry_status rc = collect(ferry_list_get(v, i), depth + 1, out);
            if (rc != FERRY_OK)
                return rc;
        }
        return FERRY_OK;
    case FERRY_VALUE_DICT:
        for (size_t i = 0; i < ferry_dict_len(v); i++) {
            ferry_status rc = collect(ferry_dict_value_at(v, i), depth + 1, out);
            if (rc != FERRY_OK)
                return rc;
        }
        return FERRY_OK;
    default:
        return FERRY_OK;
    }
}

static ferry_status collect_msg(const ferry__msg *m, tensor_list *out)
{
    if (m->type == FERRY__MSG_RESPONSE)
        return collect(m->value, 0, out);
    ferry_status rc = collect(m->args, 0, out);
    return rc == FERRY_OK ? collect(m->kwargs, 0, out) : rc;
}

static bool is_call(ferry__msg_type t)
{
    return t == FERRY__MSG_CALL || t == FERRY__MSG_REMOTE_CALL || t == FERRY__MSG_RREF_FETCH;
}

/* SendRpcBackward: the gradients delivered from the peer go on to the tensors that were sent. */
static ferry_status send_backward(void *ctx, size_t n_out, ferry_tensor *const *grads, size_t n_in,
                                  ferry_tensor **grad_inputs)
{
    for (size_t i = 0; i < n_in && i < n_out; i++)
        grad_inputs[i] = grads[i] ? ferry_tensor_retain(grads[i]) : NULL;
    return FERRY_OK;
}

typedef struct {
    int64_t msg;
    int src;
    bool from_response; /* the tensors came in a response: the gradients go as a request */
} recv_info;

/* RecvRpcBackward: the gradients of the received tensors go back to the sender. */
static ferry_status recv_backward(void *ctx, size_t n_out, ferry_tensor *const *grads, size_t n_in,
                                  ferry_tensor **grad_inputs)
{
    const recv_info *ri = ctx;
    return ferry__dist_pass_recv_backward(ri->msg, ri->src, ri->from_response, n_out, grads);
}

static int64_t new_message_id(ferry__dist_state *st)
{
    int64_t n = atomic_fetch_add(&st->next_msg, 1);
    return ((int64_t)st->rank << 48) | (n & (((int64_t)1 << 48) - 1));
}

ferry_status ferry__dist_on_send(ferry__agent *agent, void *state, int dst, ferry__msg *m,
                                 const ferry__msg *request)
{
    ferry__dist_state *st = state;
    int64_t id = -1;
    if (is_call(m->type) && request == NULL)
        id = ferry__dist_current();
    else if (m->type == FERRY__MSG_RESPONSE && request && !m->is_error)
        ferry__dist_msg_ext(request, DIST_EXT_CONTEXT, &id);
    if (id < 0)
        return FERRY_OK;
    bool is_request = request == NULL;
    tensor_list tl = {0};
    ferry_status rc = collect_msg(m, &tl);
    if (rc == FERRY_OK && is_request)
        rc = ferry__dist_msg_add_ext(m, DIST_EXT_CONTEXT, id);
    ferry__dist_ctx *c = rc == FERRY_OK ? ferry__dist_ctx_find(st, id) : NULL;
    if (rc == FERRY_OK && c == NULL) {
        /* A response whose context was released meanwhile goes unrecorded, as a plain value. */
        ferry__free(tl.t);
        return is_request ? ferry__dist_no_context(id) : FERRY_OK;
    }
    ferry__node *node = NULL;
    if (rc == FERRY_OK && tl.n > 0) {
        node = ferry__node_new_custom("SendRpcBackward", tl.n, tl.n, tl.t, send_backward, NULL,
                                      NULL);
        if (node == NULL)
            rc = ferry_last_status();
    }
    ferry__free(tl.t);
    if (rc == FERRY_OK) {
        int64_t msg = node ? new_message_id(st) : 0;
        pthread_mutex_lock(&c->rec_mu);
        if (is_request)
            c->known[dst] = true;
        if (node && (rc = ferry__dist_ctx_add_rec(&c->sends, &c->n_sends, &c->cap_sends, msg, dst,
                                           node)) == FERRY_OK)
            atomic_fetch_add(&st->n_sends, 1);
        pthread_mutex_unlock(&c->rec_mu);
        if (node && rc == FERRY_OK)
            rc = ferry__dist_msg_add_ext(m, DIST_EXT_MESSAGE, msg);
        if (node && !is_request && rc == FERRY_OK)
            rc = ferry__dist_msg_add_ext(m, DIST_EXT_CONTEXT, id);
    }
    ferry__node_release(node);
    ferry__dist_ctx_release(c);
    return rc;
}

ferry_status ferry__dist_on_receive(ferry__agent *agent, void *state, int src, ferry__msg *m)
{
    ferry__dist_state *st = state;
    int64_t id, msg;
    bool is_request = is_call(m->type);
    if ((!is_request && m->type != FERRY__MSG_RESPONSE) ||
        !ferry__dist_msg_ext(m, DIST_EXT_MESSAGE, &msg))
        return FERRY_OK;
    if (!ferry__dist_msg_ext(m, DIST_EXT_CONTEXT, &id) || id < 0)
        return ferry__fail(FERRY_EPROTO, "an autograd message id without its context");
    tensor_list tl = {0};
    ferry_status rc = collect_msg(m, &tl);
    if (rc != FERRY_OK || tl.n == 0) { /* nothing to attach: the sender's JOIN learns so */
        ferry__free(tl.t);
        return rc;
    }
    ferry__dist_ctx *c = is_request ? ferry__dist_ctx_find_or_create(st, id)
                                    : ferry__dist_ctx_find(st, id);
    recv_info *ri = c ? ferry__malloc(sizeof *ri) : NULL;
    ferry__node *node = NULL;
    if (c == NULL) {
        rc = is_request ? ferry_last_status() : ferry__dist_no_context(id);
    } else if (ri == NULL) {
        rc = ferry__fail(FERRY_ENOMEM, "out of memory recording a received call");
    } else {
        *ri = (recv_info){msg, src, !is_request};
        node = ferry__node_new_custom("RecvRpcBackward", tl.n, 0, NULL, recv_backward, ri,
                                      ferry__free);
        if (node == NULL) {
            ferry__free(ri);
            rc = ferry_last_status();
        }
    }
    for (size_t i = 0; rc == FERRY_OK && i < tl.n; i++) {
        rc = ferry_tensor_set_requires_grad(tl.t[i], false);
        if (rc == FERRY_OK)
            rc = ferry__node_attach_output(node, i, tl.t[i]);
    }
    if (rc == FERRY_OK) {
        pthread_mutex_lock(&c->rec_mu);
        rc = ferry__dist_ctx_add_rec(&c->recvs, &c->n_recvs, &c->cap_recvs, msg, src, node);
        pthread_mutex_unlock(&c->rec_mu);
        if (rc == FERRY_OK)
            atomic_fetch_add(&st->n_recvs, 1);
    }
    ferry__free(tl.t);
    ferry__node_release(node);
    ferry__dist_ctx_release(c);
    return rc;
}

/* The slot keeps the handling thread's own context (+2, so that "none" is not NULL). */
void ferry__dist_before_request(ferry__agent *agent, void *state, int src, const ferry__msg *m,
                                void **slot)
{
    int64_t id = -1;
    if (is_call(m->type))
        ferry__dist_msg_ext(m, DIST_EXT_CONTEXT, &id);
    if (id < 0 && ferry__dist_current() < 0)
        return;
    if (id >= 0) /* the callee has the context even when no tensor came (torch's getOrCreate) */
        ferry__dist_ctx_release(ferry__dist_ctx_find_or_create(state, id));
    *slot = (void *)(intptr_t)(ferry__dist_set_current(id) + 2);
}

void ferry__dist_after_request(ferry__agent *agent, void *state, void *slot)
{
    if (slot != NULL)
        ferry__dist_set_current((int64_t)(intptr_t)slot - 2);
}
