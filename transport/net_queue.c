/* The fabric layer's posting side: operations, and how they reach the provider. An op to or
   from a peer is posted straight from the calling thread when that peer's queue in its
   direction is empty and fewer than FERRY__NET_WINDOW of its ops are with the provider;
   otherwise it waits in the peer's own queue (bounded by queue_max), so one slow or stalled
   peer never holds up another's traffic. After -FI_EAGAIN a peer's queue is retried after a
   pause that doubles (FERRY__NET_BACKOFF_*), not in a spin. A peer found dead (a transfer
   failed, or the owner says so) has its queued ops failed with FERRY_ETRANSPORT and its posted
   receives cancelled; tagged receives not complete within recv_timeout are cancelled and fail
   with FERRY_ETIMEDOUT. Completions are net_progress.c's. */
#include "transport/net.h"

#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/net_internal.h"

static const char *const MOD = "net";

/* How often the progress thread asks about dead peers and looks for expired receives. */
#define MAINTAIN_NS 100000000LL

/* ---- operations ---- */

/* Every message is one op or more, each made and freed once: they come from a cache (global;
   guards itself, core/cache.h). */
static ferry__cache op_cache =
    FERRY__CACHE_INIT("fabric op", sizeof(ferry__net_op), NULL, NULL, 32);

ferry__net_op *ferry__net_op_new(ferry__op_kind kind, ferry__net_ep *ep, int peer)
{
    ferry__net_op *op = ferry__cache_get(&op_cache);
    if (!op)
        return NULL;
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->ep = ep;
    op->peer = peer;
    op->addr = FI_ADDR_UNSPEC;
    op->iov = op->iov_inline;
    return op;
}

void ferry__net_op_free(ferry__net_op *op)
{
    if (!op)
        return;
    if (op->iov != op->iov_inline)
        ferry__free(op->iov);
    ferry__free(op->owned);
    ferry__cache_put(&op_cache, op);
}

static bool is_send(const ferry__net_op *op)
{
    return op->kind == FERRY__OP_SEND || op->kind == FERRY__OP_TSEND;
}

/* ---- queues, windows, the active list (all under net->lock) ---- */

static void queue_push(ferry__net_queue *q, ferry__net_op *op)
{
    op->qnext = NULL;
    if (q->tail)
        q->tail->qnext = op;
    else
        q->head = op;
    q->tail = op;
    q->len++;
}

static void queue_push_front(ferry__net_queue *q, ferry__net_op *op)
{
    op->qnext = q->head;
    q->head = op;
    if (!q->tail)
        q->tail = op;
    q->len++;
}

static ferry__net_op *queue_pop(ferry__net_queue *q)
{
    ferry__net_op *op = q->head;
    if (op) {
        q->head = op->qnext;
        if (!q->head)
            q->tail = NULL;
        q->len--;
    }
    return op;
}

/* Puts a peer whose queue may drain on the active list (once). */
static void activate(ferry__net *net, int peer)
{
    ferry__net_peer *p = &net->peers[peer];
    if (p->is_active)
        return;
    p->is_active = true;
    p->next_active = -1;
    if (net->active_tail >= 0)
        net->peers[net->active_tail].next_active = peer;
    else
        net->active_head = peer;
    net->active_tail = peer;
}

static void link_op(ferry__net *net, ferry__net_op *op)
{
    op->prev = NULL;
    op->next = net->ops;
    if (net->ops)
        net->ops->prev = op;
    net->ops = op;
    op->is_linked = true;
    net->n_sends += is_send(op);
    net->n_trecv += op->kind == FERRY__OP_TRECV;
    op->ep->n_active += op->kind != FERRY__OP_RECV;
    if (op->peer >= 0)
        net->peers[op->peer].n_linked++;
}

static void set_posted(ferry__net *net, ferry__net_op *op, bool is_posted)
{
    if (op->peer < 0 || op->is_posted == is_posted)
        return;
    op->is_posted = is_posted;
    ferry__net_peer *p = &net->peers[op->peer];
    int d = is_send(op);
    p->posted[d] += is_posted ? 1u : (unsigned)-1;
    if (!is_posted && p->queue[d].head)
        activate(net, op->peer); /* its window has room again */
}

void ferry__net_unlink(ferry__net *net, ferry__net_op *op)
{
    if (!op->is_linked)
        return;
    set_posted(net, op, false);
    if (op->prev)
        op->prev->next = op->next;
    else
        net->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->is_linked = false;
    net->n_sends -= is_send(op);
    net->n_trecv -= op->kind == FERRY__OP_TRECV;
    op->ep->n_active -= op->kind != FERRY__OP_RECV;
    if (op->peer >= 0)
        net->peers[op->peer].n_linked--;
}

static void enqueue(ferry__net *net, ferry__net_queue *q, ferry__net_op *op)
{
    atomic_fetch_add(&net->n_waiting, 1);
    queue_push(q, op);
    if (op->peer >= 0)
        activate(net, op->peer);
}

/* -FI_EAGAIN from a post to this peer: retry after a pause that doubles. */
static void back_off(ferry__net_peer *p, long long now)
{
    p->backoff_ns = p->backoff_ns ? p->backoff_ns * 2 : FERRY__NET_BACKOFF_MIN_NS;
    if (p->backoff_ns > FERRY__NET_BACKOFF_MAX_NS)
        p->backoff_ns = FERRY__NET_BACKOFF_MAX_NS;
    p->retry_ns = now + p->backoff_ns;
}

/* ---- posting ---- */

static int post_unlocked(ferry__net_op *op)
{
    struct fid_ep *ep = op->ep->ep;
    switch (op->kind) {
    case FERRY__OP_SEND: {
        struct fi_msg m = {.msg_iov = op->iov, .iov_count = op->n_iov, .addr = op->addr,
                           .context = &op->fi_ctx, .data = op->data};
        return (int)fi_sendmsg(ep, &m, FI_COMPLETION | FI_REMOTE_CQ_DATA);
    }
    case FERRY__OP_TSEND: {
        struct fi_msg_tagged m = {.msg_iov = op->iov, .iov_count = op->n_iov, .addr = op->addr,
                                  .tag = op->tag, .context = &op->fi_ctx};
        return (int)fi_tsendmsg(ep, &m, FI_COMPLETION);
    }
    case FERRY__OP_RECV:
        return (int)fi_recv(ep, op->owned, op->len, NULL, FI_ADDR_UNSPEC, &op->fi_ctx);
    case FERRY__OP_TRECV:
        return (int)fi_trecv(ep, op->iov[0].iov_base, op->iov[0].iov_len, NULL, op->addr, op->tag,
                             0, &op->fi_ctx);
    default:
        return -FI_EINVAL;
    }
}

static int post(ferry__net_op *op)
{
    pthread_mutex_lock(&op->ep->fi_lock);
    int rc = post_unlocked(op);
    pthread_mutex_unlock(&op->ep->fi_lock);
    return rc;
}

/* After a post to `peer` (-1: a receive buffer, nobody to wake). */
static void ring(ferry__net *net, int peer)
{
    if (peer >= 0 && net->peers)
        ferry__net_bell_ring(&net->bell, &net->peers[peer].bell, peer);
}

static const char *direction(int d)
{
    return d ? "send" : "receive";
}

/* Under net->lock: whether op must wait (the queue it would wait in in *q), or an error. */
static ferry_status must_wait(ferry__net *net, ferry__net_op *op, bool is_internal,
                              ferry__net_queue **q, bool *wait)
{
    if (op->peer < 0) {
        *q = &op->ep->ring_queue;
        *wait = (*q)->head || !op->ep->ep;
        return FERRY_OK;
    }
    ferry__net_peer *p = &net->peers[op->peer];
    int d = is_send(op);
    *q = &p->queue[d];
    if (atomic_load(&p->is_dead))
        return ferry__fail(FERRY_ETRANSPORT, "rank %d is down: its %s queue is closed", op->peer,
                           direction(d));
    *wait = (*q)->head || (*q)->is_busy || p->posted[d] >= FERRY__NET_WINDOW || !op->ep->ep;
    if (*wait && !is_internal && (*q)->len >= net->queue_max) {
        atomic_fetch_add(&net->queue_full, 1);
        return ferry__fail(FERRY_ENOMEM,
                           "the %s queue of rank %d is full: %zu operations wait for it "
                           "(FERRY_NET_QUEUE_MAX)", direction(d), op->peer, (*q)->len);
    }
    return FERRY_OK;
}

/* The usual case, an op its queue need not hold back, is posted with net->lock held (net->lock
   before fi_lock, as cancel_locked takes them): two locks per op, and a close waits for it
   through net->lock alone. */
ferry_status ferry__net_submit(ferry__net *net, ferry__net_op *op, bool is_internal)
{
    ferry__net_ep *e = op->ep;
    if (op->kind == FERRY__OP_TRECV && net->recv_timeout_ns > 0)
        op->deadline_ns = ferry__now_ns() + net->recv_timeout_ns;
    pthread_mutex_lock(&net->lock);
    if (net->is_closing && !is_internal) {
        pthread_mutex_unlock(&net->lock);
        return ferry__fail(FERRY_ESHUTDOWN, "the fabric layer is closing");
    }
    ferry__net_queue *q = NULL;
    bool wait = false;
    ferry_status st = must_wait(net, op, is_internal, &q, &wait);
    if (st != FERRY_OK) {
        pthread_mutex_unlock(&net->lock);
        return st;
    }
    link_op(net, op);
    if (wait) {
        enqueue(net, q, op);
        pthread_mutex_unlock(&net->lock);
        ferry__net_kick(net);
        return FERRY_OK;
    }
    set_posted(net, op, true);
    int peer = op->peer; /* op may complete and be freed as soon as net->lock goes */
    int rc = post(op);
    if (rc == -FI_EAGAIN) {
        set_posted(net, op, false);
        enqueue(net, q, op);
        if (peer >= 0)
            back_off(&net->peers[peer], ferry__now_ns());
    } else if (rc != 0) {
        ferry__net_unlink(net, op);
    }
    pthread_mutex_unlock(&net->lock);
    if (rc == 0)
        ring(net, peer);
    else if (rc == -FI_EAGAIN)
        ferry__net_kick(net);
    return rc == 0 || rc == -FI_EAGAIN ? FERRY_OK : ferry__net_fail_fi(e, rc, "posting");
}

void ferry__net_fail_later(ferry__net *net, ferry__net_op *op, ferry_status rc)
{
    op->fail_rc = rc;
    pthread_mutex_lock(&net->lock);
    op->qnext = net->failed;
    net->failed = op;
    atomic_fetch_add(&net->n_waiting, 1);
    pthread_mutex_unlock(&net->lock);
    ferry__net_kick(net);
}

/* ---- draining ---- */

/* Finishes every op queued for a dead peer. */
static int drop_queues(ferry__net *net, int peer)
{
    ferry__net_op *list = NULL, *op;
    pthread_mutex_lock(&net->lock);
    for (int d = 0; d < 2; d++) {
        while ((op = queue_pop(&net->peers[peer].queue[d])) != NULL) {
            ferry__net_unlink(net, op);
            atomic_fetch_sub(&net->n_waiting, 1);
            op->qnext = list;
            list = op;
        }
    }
    pthread_mutex_unlock(&net->lock);
    int n = 0;
    for (ferry__net_op *next; list; list = next, n++) {
        next = list->qnext;
        ferry__net_finish_op(net, list, FERRY_ETRANSPORT, "its peer is down");
    }
    if (n)
        ferry__log_debug(MOD, "dropped %d queued operations of rank %d, which is down", n, peer);
    return n;
}

/* A post from a queue failed outright (not -FI_EAGAIN). */
static void post_failed(ferry__net *net, ferry__net_op *op, int rc)
{
    ferry__net_fail_fi(op->ep, rc, "posting");
    ferry__net_finish_op(net, op,
                         ferry__net_status_from_fi(rc) == FERRY_ESHUTDOWN ? FERRY_ESHUTDOWN
                                                                           : FERRY_ETRANSPORT,
                         ferry_last_error());
}

/* Posts from one queue in order while the window allows; *again is set on -FI_EAGAIN. */
static int drain_queue(ferry__net *net, ferry__net_queue *q, int peer, int d, bool *again)
{
    ferry__net_peer *p = peer >= 0 ? &net->peers[peer] : NULL;
    int done = 0;
    for (;;) {
        pthread_mutex_lock(&net->lock);
        ferry__net_op *op = NULL;
        if (!q->is_busy && (!p || p->posted[d] < FERRY__NET_WINDOW))
            op = queue_pop(q);
        if (op) {
            atomic_fetch_sub(&net->n_waiting, 1);
            q->is_busy = true;
            set_posted(net, op, true);
        }
        pthread_mutex_unlock(&net->lock);
        if (!op)
            break;
        bool is_expired = op->deadline_ns && ferry__now_ns() >= op->deadline_ns;
        int rc = is_expired ? 0 : post(op);
        pthread_mutex_lock(&net->lock);
        q->is_busy = false;
        if (rc == -FI_EAGAIN) {
            set_posted(net, op, false);
            queue_push_front(q, op);
            atomic_fetch_add(&net->n_waiting, 1);
        } else if (rc != 0 || is_expired) {
            ferry__net_unlink(net, op);
        }
        pthread_mutex_unlock(&net->lock);
        if (rc == -FI_EAGAIN) {
            *again = true;
            break;
        }
        done++;
        if (is_expired) {
            atomic_fetch_add(&net->expired, 1);
            ferry__net_finish_op(net, op, FERRY_ETIMEDOUT, "the receive expired");
        } else if (rc != 0) {
            post_failed(net, op, rc);
        } else {
            ring(net, peer);
        }
    }
    return done;
}

/* One peer off the active list: drop its queues if it is dead, else post what its windows and
   backoff allow. Stays active while something still waits for a retry. */
static int drain_peer(ferry__net *net, int peer, long long now)
{
    ferry__net_peer *p = &net->peers[peer];
    if (atomic_load(&p->is_dead))
        return drop_queues(net, peer);
    if (p->retry_ns > now) {
        pthread_mutex_lock(&net->lock);
        activate(net, peer);
        pthread_mutex_unlock(&net->lock);
        return 0;
    }
    bool again = false;
    int n = drain_queue(net, &p->queue[0], peer, 0, &again) +
            drain_queue(net, &p->queue[1], peer, 1, &again);
    pthread_mutex_lock(&net->lock);
    if (again) {
        back_off(p, now);
        activate(net, peer);
    } else {
        p->backoff_ns = p->retry_ns = 0;
    }
    pthread_mutex_unlock(&net->lock);
    return n;
}

static int drain_failed(ferry__net *net)
{
    pthread_mutex_lock(&net->lock);
    ferry__net_op *op = net->failed;
    net->failed = NULL;
    pthread_mutex_unlock(&net->lock);
    int n = 0;
    for (ferry__net_op *next; op; op = next, n++) {
        next = op->qnext;
        atomic_fetch_sub(&net->n_waiting, 1);
        ferry__net_finish_op(net, op, op->fail_rc, "could not post");
    }
    return n;
}

int ferry__net_drain(ferry__net *net)
{
    int n = 0;
    bool again = false;
    for (int i = 0; i < net->n_eps; i++)
        if (net->eps[i].ring_queue.head)
            n += drain_queue(net, &net->eps[i].ring_queue, -1, 0, &again);
    long long now = ferry__now_ns();
    pthread_mutex_lock(&net->lock);
    int peer = net->active_head;
    net->active_head = net->active_tail = -1;
    pthread_mutex_unlock(&net->lock);
    /* Walk the list taken; peers re-activated meanwhile go on the new one. */
    while (peer >= 0) {
        pthread_mutex_lock(&net->lock);
        int next = net->peers[peer].next_active;
        net->peers[peer].is_active = false;
        pthread_mutex_unlock(&net->lock);
        n += drain_peer(net, peer, now);
        peer = next;
    }
    return n + drain_failed(net);
}

long long ferry__net_sleep_limit(ferry__net *net, long long timeout_ns)
{
    long long now = ferry__now_ns();
    pthread_mutex_lock(&net->lock);
    bool now_please = net->failed != NULL;
    for (int i = 0; i < net->n_eps; i++) {
        ferry__net_ep *e = &net->eps[i];
        if (e->ring_queue.head && timeout_ns > FERRY__NET_BACKOFF_MAX_NS)
            timeout_ns = FERRY__NET_BACKOFF_MAX_NS;
    }
    /* An active peer goes now (a completion freed its window, or an op was queued), or when
       its backoff ends. */
    for (int peer = net->active_head; peer >= 0 && !now_please;
         peer = net->peers[peer].next_active) {
        long long left = net->peers[peer].retry_ns - now;
        now_please = left <= 0;
        timeout_ns = left < timeout_ns ? left : timeout_ns;
    }
    pthread_mutex_unlock(&net->lock);
    return now_please ? 0 : timeout_ns;
}

/* ---- dead peers and expired receives ---- */

/* Under net->lock: asks the provider to cancel one posted tagged receive. */
static void cancel_locked(ferry__net_op *op, ferry_status rc)
{
    op->is_cancelling = true;
    op->cancel_rc = rc;
    pthread_mutex_lock(&op->ep->fi_lock);
    ssize_t r = fi_cancel(&op->ep->ep->fid, &op->fi_ctx);
    pthread_mutex_unlock(&op->ep->fi_lock);
    if (r != 0)
        op->is_cancelling = false; /* completing already; try again later if still here */
}

bool ferry__net_mark_dead(ferry__net *net, int peer)
{
    if (peer < 0 || peer >= net->world_size || peer == net->self_rank ||
        atomic_exchange(&net->peers[peer].is_dead, true))
        return false;
    pthread_mutex_lock(&net->lock);
    for (ferry__net_op *op = net->ops; op; op = op->next)
        if (op->peer == peer && op->kind == FERRY__OP_TRECV && op->is_posted &&
            !op->is_cancelling && op->ep->ep)
            cancel_locked(op, FERRY_ETRANSPORT);
    activate(net, peer); /* the next drain drops its queues */
    pthread_mutex_unlock(&net->lock);
    ferry__net_kick(net);
    return true;
}

static void expire_receives(ferry__net *net, long long now)
{
    int n = 0;
    pthread_mutex_lock(&net->lock);
    for (ferry__net_op *op = net->ops; op && net->n_trecv; op = op->next) {
        if (op->kind == FERRY__OP_TRECV && op->is_posted && !op->is_cancelling &&
            op->deadline_ns && op->deadline_ns <= now && op->ep->ep) {
            cancel_locked(op, FERRY_ETIMEDOUT);
            n += op->is_cancelling;
        }
    }
    pthread_mutex_unlock(&net->lock);
    if (n)
        ferry__log_debug(MOD, "cancelling %d tagged receives not complete after %lld ms", n,
                         net->recv_timeout_ns / 1000000);
}

void ferry__net_maintain(ferry__net *net, long long now_ns)
{
    if (now_ns < net->next_maintain_ns || !net->peers)
        return;
    net->next_maintain_ns = now_ns + MAINTAIN_NS;
    for (int r = 0; net->h.is_peer_dead && r < net->world_size; r++) {
        ferry__net_peer *p = &net->peers[r];
        pthread_mutex_lock(&net->lock);
        bool busy = p->n_linked > 0;
        pthread_mutex_unlock(&net->lock);
        if (busy && r != net->self_rank && !atomic_load(&p->is_dead) &&
            net->h.is_peer_dead(net->h.ctx, r) && ferry__net_mark_dead(net, r))
            ferry__log_debug(MOD, "rank %d was declared dead: failing its queued operations", r);
    }
    pthread_mutex_lock(&net->lock);
    bool has_trecv = net->n_trecv > 0;
    pthread_mutex_unlock(&net->lock);
    if (has_trecv && net->recv_timeout_ns > 0)
        expire_receives(net, now_ns);
}

void ferry__net_fail_all(ferry__net *net)
{
    for (int i = 0; i < net->n_eps; i++)
        net->eps[i].ring_queue = (ferry__net_queue){0};
    for (int r = 0; net->peers && r < net->world_size; r++)
        net->peers[r].queue[0] = net->peers[r].queue[1] = (ferry__net_queue){0};
    drain_failed(net);
    atomic_store(&net->n_waiting, 0);
    while (net->ops) {
        ferry__net_op *op = net->ops;
        ferry__net_unlink(net, op);
        ferry__net_finish_op(net, op, FERRY_ESHUTDOWN, "closing");
    }
}
