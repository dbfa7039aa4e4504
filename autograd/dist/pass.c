/* Backward passes across workers. A pass has an id (its initiator's rank << 48 | a counter) and,
   on every worker it reaches, a graph task over that worker's part of the context's graph: the
   initiator's roots plus every send node of the context, each send node waiting for the
   gradients its peer's recv node sends back. Every recv node of the context answers exactly
   once per pass: with its gradients when the task runs it, or at once with none when the task
   cannot reach it. So every send node hears exactly once, and a pass never waits for a
   gradient nobody will send (where torch's FAST mode hangs). A worker learns of a pass from
   its first message for it (a gradient, or a JOIN its sends' peers get so that they answer
   those sends); it answers that first message when its own part is finished (its task ran
   every node and every message it sent was answered), and every later message at once. The
   initiator's pass therefore ends after every worker's has. An error anywhere ends the pass
   there, is answered up the chain of first messages ("Error on Node R: " per hop) and aborts
   the pass on every peer; a lost peer fails the passes that involve it at once. */
#include <stdio.h>
#include <string.h>

#include "autograd/dist/dist_impl.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "core/value_impl.h"

struct ferry__dist_pass {
    int64_t id;
    ferry__dist_ctx *ctx; /* borrowed: every user of the pass holds a reference on its context */
    ferry__graph_task *task;
    bool initiator, retain_graph, ended;
    int refs;        /* the context's list, each unanswered message, the initiator */
    int outstanding; /* messages sent and not answered */
    ferry_future *done;        /* completes when the pass ended here */
    ferry_value *first_answer; /* a pass a JOIN started answers it with this */
    bool *peers;               /* workers whose loss fails the pass */
    ferry__dist_pass *next;
};

/* What must happen once the context lock is let go. */
typedef struct {
    int dst;
    ferry__dist_op op;
    int64_t msg;
    int64_t pass_id;
    bool retain_graph;
    ferry_value *args;
    ferry__dist_pass *pass; /* GRAD and JOIN: referenced for the answer; NULL for ABORT */
    bool as_request;        /* GRAD: device placement as for a request (wire.h) */
} out_msg;

typedef struct {
    ferry__dist_state *st;
    ferry__dist_ctx *ctx;
    out_msg *msgs;
    size_t n, cap;
    ferry_future *ended; /* a pass's done future to complete, with: */
    ferry_status ended_rc;
    char *ended_error;
    ferry_value *ended_value;
} outbox;

/* The outbox of the pass whose task runs on this thread, for recv nodes. */
static _Thread_local outbox *running_box;
static _Thread_local ferry__dist_pass *running_pass;

static void pass_end(outbox *ob, ferry__dist_pass *p, ferry_status rc, const char *error,
                     int except);

static void pass_unref(ferry__dist_pass *p)
{
    if (--p->refs > 0)
        return;
    ferry__graph_task_free(p->task);
    ferry_future_release(p->done);
    ferry_value_release(p->first_answer);
    ferry__free(p->peers);
    ferry__free(p);
}

static ferry__dist_pass *pass_find(ferry__dist_ctx *c, int64_t id)
{
    for (ferry__dist_pass *p = c->passes; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

/* How a pass that is not running here ended here: NULL when it never ran here, else its
   record (error NULL: it finished). */
static const ferry__dist_ended *ended_as(const ferry__dist_ctx *c, int64_t id)
{
    for (size_t i = 0; i < c->n_ended; i++)
        if (c->ended[i].id == id)
            return &c->ended[i];
    return NULL;
}

/* Remembers how a pass ended here (a failure with its error: the first one kept), so that a
   late message for it is answered for what it was instead of starting the pass again. */
static void remember_end(ferry__dist_ctx *c, int64_t id, const char *error)
{
    ferry__dist_ended *e = (ferry__dist_ended *)ended_as(c, id);
    if (e == NULL) {
        if (c->n_ended == c->cap_ended) {
            size_t bigger = c->cap_ended ? c->cap_ended * 2 : 4;
            ferry__dist_ended *grown = ferry__realloc(c->ended, bigger * sizeof *grown);
            if (grown == NULL)
                return; /* then a late message starts the pass again, which fails on its JOINs */
            c->ended = grown;
            c->cap_ended = bigger;
        }
        e = &c->ended[c->n_ended++];
        *e = (ferry__dist_ended){id, NULL};
    }
    if (error != NULL && e->error == NULL)
        e->error = ferry__strdup(error); /* out of memory leaves it "finished": refused anyway */
}

/* Queues a message of the pass (lock held). GRAD and JOIN count as outstanding until
   answered. Steals args. */
static void queue(outbox *ob, ferry__dist_pass *p, int dst, ferry__dist_op op, int64_t msg,
                  ferry_value *args)
{
    if (ob->n == ob->cap) {
        size_t bigger = ob->cap ? ob->cap * 2 : 8;
        out_msg *grown = ferry__realloc(ob->msgs, bigger * sizeof *grown);
        if (grown == NULL) {
            ferry_value_release(args);
            if (op != DIST_OP_ABORT)
                pass_end(ob, p, FERRY_ENOMEM, "out of memory sending a backward message", -1);
            return;
        }
        ob->msgs = grown;
        ob->cap = bigger;
    }
    bool answered = op != DIST_OP_ABORT;
    ob->msgs[ob->n++] = (out_msg){dst, op, msg, p->id, p->retain_graph, args,
                                  answered ? p : NULL, false};
    if (answered) {
        p->outstanding++;
        p->refs++;
    }
}

/* Ends the pass here (lock held): out of the context's list, its task freed, its outcome put
   in the outbox; a failure is remembered and sent on to every peer but `except`. */
static void pass_end(outbox *ob, ferry__dist_pass *p, ferry_status rc, const char *error,
                     int except)
{
    if (p->ended)
        return;
    p->ended = true;
    ferry__dist_ctx *c = p->ctx;
    for (ferry__dist_pass **q = &c->passes; *q; q = &(*q)->next) {
        if (*q == p) {
            *q = p->next;
            break;
        }
    }
    atomic_fetch_sub(&ob->st->n_passes, 1);
    ferry__graph_task_free(p->task);
    p->task = NULL;
    remember_end(c, p->id, rc != FERRY_OK ? (error ? error : ferry_strerror(rc)) : NULL);
    if (rc != FERRY_OK) {
        for (int r = 0; r < ob->st->world; r++)
            if (p->peers[r] && r != ob->st->rank && r != except)
                queue(ob, p, r, DIST_OP_ABORT, 0, ferry_list_of(1, ferry_string(error)));
    }
    FERRY_ASSERT(ob->ended == NULL); /* one pass per outbox */
    ob->ended = ferry_future_retain(p->done);
    ob->ended_rc = rc;
    ob->ended_error = rc != FERRY_OK ? ferry__strdup(error ? error : ferry_strerror(rc)) : NULL;
    ob->ended_value = p->first_answer; /* a failed pass answers with its error instead */
    p->first_answer = NULL;
    if (rc != FERRY_OK) {
        ferry_value_release(ob->ended_value);
        ob->ended_value = NULL;
    }
    pass_unref(p); /* the context's list */
}

static void pass_fail_here(outbox *ob, ferry__dist_pass *p, ferry_status rc, const char *why,
                           int except)
{
    char text[1024];
    snprintf(text, sizeof text, "Error on Node %d: %s", ob->st->rank, why);
    pass_end(ob, p, rc, text, except);
}

/* Runs whatever is ready and ends the pass when nothing is left for it here (lock held). */
static void pass_advance(outbox *ob, ferry__dist_pass *p)
{
    if (p->ended)
        return;
    outbox *outer_box = running_box;
    ferry__dist_pass *outer_pass = running_pass;
    running_box = ob;
    running_pass = p;
    ferry_status rc = ferry__graph_task_run(p->task);
    running_box = outer_box;
    running_pass = outer_pass;
    if (p->ended) /* a recv node's message could not be queued */
        return;
    if (rc != FERRY_OK)
        pass_fail_here(ob, p, rc, ferry_last_error(), -1);
    else if (ferry__graph_task_finished(p->task) && p->outstanding == 0)
        pass_end(ob, p, FERRY_OK, NULL, -1);
}

ferry_status ferry__dist_pass_recv_backward(int64_t msg, int src, bool from_response, size_t n,
                                            ferry_tensor *const *grads)
{
    if (running_box == NULL)
        return ferry_set_error(FERRY_EINVAL, "RecvRpcBackward can only run in a distributed "
                               "backward pass (ferry_dist_autograd_backward)");
    ferry_value *args = ferry__list_new(n);
    for (size_t i = 0; args && i < n; i++) {
        ferry_value *g = grads[i] ? ferry_tensor_value(grads[i]) : ferry_none();
        if (g == NULL) {
            ferry_value_release(args);
            args = NULL;
            break;
        }
        ferry__list_set(args, i, g);
    }
    if (args == NULL)
        return ferry_set_error(FERRY_ENOMEM, "out of memory sending gradients");
    size_t at = running_box->n;
    queue(running_box, running_pass, src, DIST_OP_GRAD, msg, args);
    if (running_box->n > at)
        running_box->msgs[at].as_request = from_response;
    return FERRY_OK;
}

/* A new pass here (lock held): a task over the roots and every send node, and the messages
   that start it: none for each recv node the task cannot reach, a JOIN to each send's peer. */
static ferry__dist_pass *pass_new(outbox *ob, ferry__dist_ctx *c, int64_t id, bool initiator,
                                  bool retain, size_t n_roots, const ferry__engine_root *roots,
                                  int first_src)
{
    ferry__dist_state *st = ob->st;
    ferry__dist_pass *p = ferry__calloc(1, sizeof *p);
    bool *peers = p ? ferry__calloc((size_t)st->world, sizeof *peers) : NULL;
    pthread_mutex_lock(&c->rec_mu);
    ferry__node **pending = peers ? ferry__calloc(c->n_sends + 1, sizeof *pending) : NULL;
    ferry_future *done = pending ? ferry_future_new() : NULL;
    if (done == NULL) {
        pthread_mutex_unlock(&c->rec_mu);
        ferry__free(pending);
        ferry__free(peers);
        ferry__free(p);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory starting a backward pass");
    }
    for (size_t i = 0; i < c->n_sends; i++)
        pending[i] = c->sends[i].node;
    p->task = ferry__graph_task_new(n_roots, roots, c->n_sends, pending, retain,
                                    ferry__dist_ctx_accumulate, c);
    ferry__free(pending);
    if (p->task == NULL) {
        pthread_mutex_unlock(&c->rec_mu);
        ferry_future_release(done);
        ferry__free(peers);
        ferry__free(p);
        return NULL;
    }
    p->id = id;
    p->ctx = c;
    p->initiator = initiator;
    p->retain_graph = retain;
    p->done = done;
    p->peers = peers;
    p->refs = 1;
    p->next = c->passes;
    c->passes = p;
    atomic_fetch_add(&st->n_passes, 1);
    if (first_src >= 0)
        peers[first_src] = true;
    for (size_t i = 0; i < c->n_recvs; i++) {
        peers[c->recvs[i].peer] = true;
        if (!ferry__graph_task_reaches(p->task, c->recvs[i].node))
            queue(ob, p, c->recvs[i].peer, DIST_OP_GRAD, c->recvs[i].msg, ferry__list_new(0));
    }
    for (size_t i = 0; i < c->n_sends; i++)
        peers[c->sends[i].peer] = true;
    for (int r = 0; r < st->world; r++) {
        size_t k = 0;
        for (size_t i = 0; i < c->n_sends; i++)
            k += c->sends[i].peer == r;
        if (k == 0)
            continue;
        ferry_value *ids = ferry__list_new(k);
        for (size_t i = 0, j = 0; ids && i < c->n_sends; i++) {
            if (c->sends[i].peer != r)
                continue;
            ferry_value *v = ferry_int(c->sends[i].msg);
            if (v == NULL) {
                ferry_value_release(ids);
                ids = NULL;
                break;
            }
            ferry__list_set(ids, j++, v);
        }
        if (ids == NULL) {
            pass_end(ob, p, FERRY_ENOMEM, "out of memory starting a backward pass", -1);
            break;
        }
        queue(ob, p, r, DIST_OP_JOIN, 0, ids);
    }
    pthread_mutex_unlock(&c->rec_mu);
    return p;
}

/* ---- sending and answers ---- */

typedef struct {
    ferry__dist_state *st;
    ferry__dist_ctx *ctx;
    ferry__dist_pass *pass;
    ferry__dist_op op;
    int dst;
    ferry_future *f;
} answer_job;

static void flush(outbox *ob);

/* Delivers none to each send node the peer says has no recv node there (lock held). */
static void deliver_unknown(outbox *ob, ferry__dist_pass *p, int dst, const ferry_value *ids)
{
    for (size_t i = 0; !p->ended && ids && i < ferry_list_len(ids); i++) {
        int64_t msg = ferry_value_as_int(ferry_list_get(ids, i));
        ferry__node *s = ferry__dist_ctx_rec_node(p->ctx, true, msg, dst);
        ferry_status rc = s ? ferry__graph_task_deliver(p->task, s, 0, NULL)
                            : ferry_set_error(FERRY_EPROTO, "worker %d named an unknown message "
                                              "%lld", dst, (long long)msg);
        ferry__node_release(s);
        if (rc != FERRY_OK)
            pass_fail_here(ob, p, rc, ferry_last_error(), -1);
    }
}

static void answer_task(void *arg)
{
    answer_job *j = arg;
    outbox ob = {.st = j->st, .ctx = j->ctx};
    ferry__dist_ctx *c = j->ctx;
    pthread_mutex_lock(&c->mu);
    ferry__dist_pass *p = j->pass;
    p->outstanding--;
    if (!p->ended) {
        if (ferry_future_status(j->f) != FERRY_OK) {
            pass_fail_here(&ob, p, ferry_future_status(j->f), ferry_future_error(j->f), -1);
        } else {
            if (j->op == DIST_OP_JOIN) {
                ferry_value *ids = ferry_future_value(j->f);
                deliver_unknown(&ob, p, j->dst, ids);
                ferry_value_release(ids);
            }
            pass_advance(&ob, p);
        }
    }
    pass_unref(p);
    pthread_mutex_unlock(&c->mu);
    flush(&ob);
    ferry_future_release(j->f);
    ferry__dist_ctx_release(c);
    ferry__free(j);
}

static void answer_arrived(ferry_future *f, void *arg)
{
    answer_job *j = arg;
    /* The answer comes on the thread that read it; running the graph is the pool's work. */
    if (ferry__agent_submit(j->st->agent, answer_task, j) != FERRY_OK)
        answer_task(j);
}

static ferry_future *send_one(ferry__dist_state *st, ferry__dist_ctx *c, const out_msg *o)
{
    ferry__msg m = {.type = FERRY__MSG_AUTOGRAD_BACKWARD,
                    .fn = DIST_RPC_NAME,
                    .args = o->args,
                    .autograd_context = c->id,
                    .autograd_message = o->msg,
                    .retain_graph = o->retain_graph,
                    .device_as_request = o->as_request};
    m.ext[m.n_ext++] = (ferry__msg_ext){DIST_EXT_PASS, o->pass_id};
    m.ext[m.n_ext++] = (ferry__msg_ext){DIST_EXT_OP, o->op};
    return ferry__agent_request(st->agent, o->dst, &m, FERRY_TIMEOUT_DEFAULT);
}

/* Sends what the outbox holds and completes the ended pass's future, with no lock held; a
   message that cannot go fails its pass (which may queue aborts: sent in turn). */
static void flush(outbox *ob)
{
    for (size_t i = 0; i < ob->n; i++) {
        out_msg o = ob->msgs[i];
        ferry_future *f = send_one(ob->st, ob->ctx, &o);
        if (o.op == DIST_OP_ABORT) {
            /* Best effort: a peer that misses it fails on its own messages or its JOINs. */
            ferry_future_release(f);
            ferry_value_release(o.args);
            continue;
        }
        ferry_value_release(o.args);
        answer_job *j = f ? ferry__calloc(1, sizeof *j) : NULL;
        if (j != NULL) {
            *j = (answer_job){ob->st, ferry__dist_ctx_retain(ob->ctx), o.pass, o.op, o.dst, f};
            if (ferry__future_on_done(f, answer_arrived, j) == FERRY_OK)
                continue;
            ferry__dist_ctx_release(ob->ctx);
            ferry__free(j);
        }
        char why[768];
        snprintf(why, sizeof why, "%s", f ? "out of memory" : ferry_last_error());
        ferry_status rc = f ? FERRY_ENOMEM : ferry_last_status();
        ferry_future_release(f);
        outbox more = {.st = ob->st, .ctx = ob->ctx};
        pthread_mutex_lock(&ob->ctx->mu);
        o.pass->outstanding--;
        pass_fail_here(&more, o.pass, rc ? rc : FERRY_ETRANSPORT, why, -1);
        pass_unref(o.pass);
        pthread_mutex_unlock(&ob->ctx->mu);
        flush(&more);
    }
    ferry__free(ob->msgs);
    ob->msgs = NULL;
    ob->n = ob->cap = 0;
    if (ob->ended) {
        if (ob->ended_rc == FERRY_OK)
            ferry__future_complete_steal(ob->ended, ob->ended_value);
        else
            ferry_future_set_error(ob->ended, ob->ended_rc, ob->ended_error);
        ferry_future_release(ob->ended);
        ferry__free(ob->ended_error);
        ob->ended = NULL;
    }
}

/* ---- the initiator ---- */

ferry_status ferry__dist_pass_run(ferry__dist_state *st, ferry__dist_ctx *c, ferry_tensor **roots,
                                  size_t n, bool retain_graph)
{
    ferry__engine_root *er = ferry__calloc(n, sizeof *er);
    if (er == NULL)
        return ferry__fail(FERRY_ENOMEM, "out of memory starting a backward pass");
    ferry_status rc = FERRY_OK;
    for (size_t i = 0; i < n; i++) {
        er[i].node = ferry__tensor_grad_fn(roots[i], &er[i].output_nr);
        er[i].grad = ferry_ones(ferry_tensor_ndim(roots[i]), ferry_tensor_sizes(roots[i]),
                                ferry_tensor_dtype(roots[i]));
        ferry_device d = ferry_tensor_device(roots[i]);
        if (er[i].grad && d.type != FERRY_CPU) { /* the seed lives where its root does */
            ferry_tensor *on = ferry_tensor_to(er[i].grad, d);
            ferry_tensor_release(er[i].grad);
            er[i].grad = on;
        }
        if (er[i].grad == NULL)
            rc = ferry_last_status();
    }
    ferry_future *done = NULL;
    ferry__dist_pass *p = NULL;
    outbox ob = {.st = st, .ctx = c};
    if (rc == FERRY_OK) {
        int64_t n_pass = atomic_fetch_add(&st->next_pass, 1);
        int64_t id = ((int64_t)st->rank << 48) | (n_pass & (((int64_t)1 << 48) - 1));
        pthread_mutex_lock(&c->mu);
        p = pass_new(&ob, c, id, true, retain_graph, n, er, -1);
        if (p == NULL) {
            rc = ferry_last_status();
        } else {
            p->refs++; /* ours, while we wait */
            done = ferry_future_retain(p->done);
            pass_advance(&ob, p);
        }
        pthread_mutex_unlock(&c->mu);
        flush(&ob);
    }
    for (size_t i = 0; i < n; i++) {
        ferry__node_release(er[i].node);
        ferry_tensor_release(er[i].grad);
    }
    ferry__free(er);
    if (done != NULL) {
        rc = ferry_future_wait(done, 0);
        ferry_future_release(done);
        pthread_mutex_lock(&c->mu);
        pass_unref(p);
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

/* ---- messages from other workers ---- */

/* The gradients of a GRAD message, checked: a list of tensors and Nones. */
static ferry_status grads_of(const ferry_value *args, ferry_tensor ***out, size_t *n)
{
    *n = args ? ferry_list_len(args) : 0;
    *out = ferry__calloc(*n + 1, sizeof **out);
    if (*out == NULL)
        return ferry__fail(FERRY_ENOMEM, "out of memory receiving gradients");
    for (size_t i = 0; i < *n; i++) {
        const ferry_value *v = ferry_list_get(args, i);
        if (ferry_value_kind(v) == FERRY_VALUE_TENSOR)
            (*out)[i] = ferry_value_as_tensor(v);
        else if (ferry_value_kind(v) != FERRY_VALUE_NONE)
            return ferry__fail(FERRY_EPROTO, "gradient %zu is a %s, not a tensor", i,
                               ferry_kind_name(ferry_value_kind(v)));
    }
    return FERRY_OK;
}

static ferry_status handle_grad(outbox *ob, ferry__dist_pass *p, int src, const ferry__msg *m)
{
    ferry__node *s = ferry__dist_ctx_rec_node(p->ctx, true, m->autograd_message, src);
    if (s == NULL)
        return ferry_set_error(FERRY_EINVAL, "Could not find send function for autograd message "
                               "id: %lld", (long long)m->autograd_message);
    ferry_tensor **grads;
    size_t n;
    ferry_status rc = grads_of(m->args, &grads, &n);
    if (rc == FERRY_OK)
        rc = ferry__graph_task_deliver(p->task, s, n, grads);
    ferry__free(grads);
    ferry__node_release(s);
    return rc;
}

/* The ids of the sender's send nodes that have no recv node here. */
static ferry_value *unknown_ids(ferry__dist_ctx *c, int src, const ferry_value *ids)
{
    size_t n = ids ? ferry_list_len(ids) : 0, k = 0;
    ferry_value **items = ferry__calloc(n + 1, sizeof *items);
    if (items == NULL)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory answering a JOIN");
    for (size_t i = 0; i < n; i++) {
        int64_t msg = ferry_value_as_int(ferry_list_get(ids, i));
        ferry__node *r = ferry__dist_ctx_rec_node(c, false, msg, src);
        if (r == NULL)
            items[k++] = ferry_int(msg);
        ferry__node_release(r);
    }
    ferry_value *list = ferry__list_new(k);
    for (size_t i = 0; i < k; i++) {
        if (list && items[i])
            ferry__list_set(list, i, items[i]);
        else
            ferry_value_release(items[i]);
    }
    ferry__free(items);
    return list;
}

ferry_status ferry__dist_pass_handle(ferry__agent *agent, int src, ferry__msg *m,
                                     ferry_value **result, void *state)
{
    ferry__dist_state *st = state;
    int64_t op = DIST_OP_GRAD, pass_id = 0;
    ferry__dist_msg_ext(m, DIST_EXT_OP, &op);
    if (!ferry__dist_msg_ext(m, DIST_EXT_PASS, &pass_id) || op < DIST_OP_GRAD || op > DIST_OP_ABORT)
        return ferry__fail(FERRY_EPROTO, "a backward message without its pass or with an "
                           "unknown request %lld", (long long)op);
    ferry__dist_ctx *c = ferry__dist_ctx_find(st, m->autograd_context);
    if (c == NULL)
        return op == DIST_OP_ABORT ? FERRY_OK : ferry__dist_no_context(m->autograd_context);
    outbox ob = {.st = st, .ctx = c};
    ferry_status rc = FERRY_OK;
    ferry_future *first = NULL;
    pthread_mutex_lock(&c->mu);
    ferry__dist_pass *p = pass_find(c, pass_id);
    if (op == DIST_OP_ABORT) {
        const char *why = m->args && ferry_list_len(m->args) == 1
                              ? ferry_value_as_string(ferry_list_get(m->args, 0))
                              : NULL;
        if (p) {
            char text[1024];
            /* The reason is the failure itself, so the chain reads as if it had come back
               through this worker: "Error on Node <here>: Error on Node <there>: ...". */
            snprintf(text, sizeof text, "Error on Node %d: %s", st->rank,
                     why ? why : "the backward pass was aborted");
            pass_end(&ob, p, FERRY_ECANCELED, text, src);
        }
        remember_end(c, pass_id, why ? why : "aborted");
        pthread_mutex_unlock(&c->mu);
        flush(&ob);
        ferry__dist_ctx_release(c);
        ferry_clear_error();
        return FERRY_OK;
    }
    const ferry__dist_ended *ended = p == NULL ? ended_as(c, pass_id) : NULL;
    if (ended && ended->error) {
        /* Answer with the failure itself, so the initiator learns the cause whichever way the
           news reaches it first. */
        rc = ferry_set_error(FERRY_ECANCELED, "%s", ended->error);
    } else if (ended && op == DIST_OP_JOIN) {
        /* This worker's part finished before the JOIN came (its sends were answered first). */
        *result = unknown_ids(c, src, m->args);
        if (*result == NULL)
            rc = ferry_last_status();
    } else if (ended) {
        rc = ferry_set_error(FERRY_EPROTO, "Error on Node %d: gradients for backward pass %lld, "
                             "which already finished here", st->rank, (long long)pass_id);
    } else if (p == NULL) {
        p = pass_new(&ob, c, pass_id, false, m->retain_graph, 0, NULL, src);
        if (p == NULL)
            rc = ferry_last_status();
        else
            first = ferry_future_retain(p->done);
    }
    if (p != NULL && !p->ended) {
        p->refs++;
        if (op == DIST_OP_GRAD) {
            rc = handle_grad(&ob, p, src, m);
        } else {
            ferry_value *answer = unknown_ids(c, src, m->args);
            if (answer == NULL)
                rc = ferry_last_status();
            else if (first)
                p->first_answer = answer;
            else
                *result = answer;
        }
        if (rc != FERRY_OK)
            pass_fail_here(&ob, p, rc, ferry_last_error(), -1);
        else
            pass_advance(&ob, p);
        pass_unref(p);
    }
    pthread_mutex_unlock(&c->mu);
    flush(&ob);
    ferry__dist_ctx_release(c);
    if (first == NULL)
        return rc;
    /* The first message of the pass here is answered when the pass ended here. */
    ferry_value_release(*result);
    *result = NULL;
    rc = ferry__agent_reply_later(agent, first, true, 0);
    ferry_future_release(first);
    return rc;
}

/* ---- failures from outside ---- */

typedef struct {
    ferry__dist_state *st;
    int rank;
    bool gone;
    char why[512];
} lost_job;

static void lost_task(void *arg)
{
    lost_job *j = arg;
    size_t n = 0;
    ferry__dist_ctx **all = ferry__dist_ctx_all(j->st, &n);
    for (size_t i = 0; all && i < n; i++) {
        ferry__dist_ctx *c = all[i];
        for (;;) {
            outbox ob = {.st = j->st, .ctx = c};
            pthread_mutex_lock(&c->mu);
            ferry__dist_pass *p = c->passes;
            while (p && !p->peers[j->rank])
                p = p->next;
            if (p)
                pass_fail_here(&ob, p, FERRY_ETRANSPORT, j->why, j->rank);
            pthread_mutex_unlock(&c->mu);
            flush(&ob);
            if (!p)
                break;
        }
        if (j->gone && c->id >> 48 == j->rank) {
            ferry__dist_ctx *mine = ferry__dist_ctx_remove(j->st, c->id);
            ferry__dist_pass_abort_all(c, "the worker that made the autograd context is gone");
            ferry__dist_ctx_release(mine);
        }
        ferry__dist_ctx_release(c);
    }
    ferry__free(all);
    ferry__free(j);
}

void ferry__dist_pass_peer_lost(ferry__dist_state *st, int rank, bool gone, const char *why)
{
    if ((atomic_load(&st->n_passes) == 0 && !gone) || rank < 0 || rank >= st->world)
        return;
    lost_job *j = ferry__calloc(1, sizeof *j);
    if (j == NULL)
        return;
    j->st = st;
    j->rank = rank;
    j->gone = gone;
    snprintf(j->why, sizeof j->why, "%s", why ? why : "the worker is unreachable");
    if (ferry__agent_submit(st->agent, lost_task, j) != FERRY_OK) {
        ferry__log_warn("dist_autograd", "could not fail the backward passes waiting on rank %d",
                        rank);
        ferry__free(j);
    }
}

void ferry__dist_pass_abort_all(ferry__dist_ctx *c, const char *why)
{
    /* Released from inside a backward formula of its own pass (this thread holds the lock):
       the pass runs on; the context is out of the table already and goes when it ends. */
    if (running_pass != NULL && running_pass->ctx == c)
        return;
    for (;;) {
        outbox ob = {.st = c->st, .ctx = c};
        pthread_mutex_lock(&c->mu);
        ferry__dist_pass *p = c->passes;
        if (p)
            pass_fail_here(&ob, p, FERRY_ECANCELED, why, -1);
        pthread_mutex_unlock(&c->mu);
        flush(&ob);
        if (!p)
            break;
    }
}
