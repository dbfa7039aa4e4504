/* The fabric layer's engine: operations and how they are posted (straight from the calling
   thread; behind a per-endpoint queue when the provider says -FI_EAGAIN), completion of each op
   and of aggregates (a large message's parts), and the progress thread that reads every
   completion queue, spins briefly when idle and then blocks on the CQ wait fds, the shm doorbell
   and an eventfd (or lets a waiting thread drive). What the bytes mean (eager and large
   messages, source ranks, bulk transfers) is net_message.c's. Every callback runs on the
   progress thread (or, for ops still pending, on the thread closing the net) with no lock of
   ours held. */
#include "transport/net.h"

#include <poll.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/net_internal.h"

static const char *const MOD = "net";

/* How long the progress thread keeps polling after its last completion before it blocks: a
   round trip on shm or loopback tcp is well inside this, so a reply finds the thread awake. */
#define SPIN_NS 50000LL
/* While another thread drives the fabric, the progress thread checks back this often. */
#define DRIVEN_NAP_US 100
/* While a transfer on a CQ without a wait fd is under way the thread naps this long at most:
   shm moves large messages in steps that need both sides' progress and signal nobody. */
#define NAP_NS 100000LL
#define CLOSE_DRAIN_NS 200000000LL
#define CQ_BATCH 16

/* ---- operations ---- */

ferry__net_op *ferry__net_op_new(ferry__op_kind kind, ferry__net_ep *ep, int peer)
{
    ferry__net_op *op = ferry__calloc(1, sizeof *op);
    if (!op)
        return NULL;
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
    ferry__free(op);
}

static bool is_send(const ferry__net_op *op)
{
    return op->kind == FERRY__OP_SEND || op->kind == FERRY__OP_TSEND;
}

/* Both under net->lock. */
static void link_op(ferry__net *net, ferry__net_op *op)
{
    op->prev = NULL;
    op->next = net->ops;
    if (net->ops)
        net->ops->prev = op;
    net->ops = op;
    op->is_linked = true;
    net->n_sends += is_send(op);
    op->ep->n_active += op->kind != FERRY__OP_RECV;
}

static void unlink_op(ferry__net *net, ferry__net_op *op)
{
    if (!op->is_linked)
        return;
    if (op->prev)
        op->prev->next = op->next;
    else
        net->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->is_linked = false;
    net->n_sends -= is_send(op);
    op->ep->n_active -= op->kind != FERRY__OP_RECV;
}

static void enqueue(ferry__net *net, ferry__net_ep *e, ferry__net_op *op)
{
    int q = is_send(op);
    atomic_fetch_add(&net->n_waiting, 1);
    op->qnext = NULL;
    if (e->queue_tail[q])
        e->queue_tail[q]->qnext = op;
    else
        e->queue_head[q] = op;
    e->queue_tail[q] = op;
}

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

ferry_status ferry__net_submit(ferry__net *net, ferry__net_op *op, bool is_internal)
{
    ferry__net_ep *e = op->ep;
    pthread_mutex_lock(&net->lock);
    if (net->is_closing && !is_internal) {
        pthread_mutex_unlock(&net->lock);
        return ferry__fail(FERRY_ESHUTDOWN, "the fabric layer is closing");
    }
    link_op(net, op);
    if (e->queue_head[is_send(op)] || !e->ep) {
        /* Keep this thread's order behind what already waits for the provider. */
        enqueue(net, e, op);
        pthread_mutex_unlock(&net->lock);
        ferry__net_kick(net);
        return FERRY_OK;
    }
    net->n_posting++;
    pthread_mutex_unlock(&net->lock);

    int peer = op->peer; /* op may complete and be freed as soon as it is posted */
    int rc = post(op);

    pthread_mutex_lock(&net->lock);
    if (rc == -FI_EAGAIN)
        enqueue(net, e, op);
    else if (rc != 0)
        unlink_op(net, op);
    if (--net->n_posting == 0 && net->is_closing)
        pthread_cond_broadcast(&net->posted_cond);
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

/* ---- completion ---- */

void ferry__net_peer_failed(ferry__net *net, int peer, ferry_status rc, const char *why)
{
    if (rc == FERRY_ETRANSPORT && peer >= 0 && net->h.on_peer_error)
        net->h.on_peer_error(net->h.ctx, peer, rc, why);
}

static void finish_op(ferry__net *net, ferry__net_op *op, ferry_status rc, const char *why);

void ferry__net_part_done(ferry__net *net, ferry__net_op *parent, ferry_status rc,
                          const char *why)
{
    int expected = FERRY_OK;
    if (rc != FERRY_OK)
        atomic_compare_exchange_strong(&parent->agg_rc, &expected, (int)rc);
    if (atomic_fetch_sub(&parent->remaining, 1) != 1)
        return;
    rc = (ferry_status)atomic_load(&parent->agg_rc);
    if (parent->is_recv) {
        if (rc == FERRY_OK)
            ferry__net_deliver(net, parent->peer, parent->owned, parent->len);
        else
            ferry__net_peer_failed(net, parent->peer, rc, why ? why : "large message lost");
        ferry__net_op_free(parent);
        return;
    }
    finish_op(net, parent, rc, why);
}

/* The op is unlinked; runs its callback (or its aggregate's) and frees it. A transport failure
   reaches the peer-error handler first, with the provider's detail, so the one report of it
   (the agent's "worker ... is unreachable") says what went wrong; done only gets the code. */
static void finish_op(ferry__net *net, ferry__net_op *op, ferry_status rc, const char *why)
{
    if (op->parent) {
        ferry__net_op *parent = op->parent;
        ferry__net_op_free(op);
        ferry__net_part_done(net, parent, rc, why);
        return;
    }
    if (rc == FERRY_OK) {
        bool is_message = op->kind == FERRY__OP_AGGREGATE || op->kind == FERRY__OP_SEND;
        bool is_in = op->kind == FERRY__OP_TRECV;
        atomic_fetch_add(is_in ? &net->bytes_in : &net->bytes_out, op->len);
        if (is_message)
            atomic_fetch_add(&net->messages_out, 1);
    }
    ferry__net_done done = op->done;
    void *arg = op->arg;
    int peer = op->peer;
    ferry__net_op_free(op);
    ferry__net_peer_failed(net, peer, rc, why ? why : "transfer failed");
    if (done)
        done(arg, rc);
}

static void on_completion(ferry__net *net, ferry__net_ep *e, const struct fi_cq_tagged_entry *ent,
                          fi_addr_t src)
{
    ferry__net_op *op = ent->op_context;
    pthread_mutex_lock(&net->lock);
    unlink_op(net, op);
    pthread_mutex_unlock(&net->lock);
    if (op->kind == FERRY__OP_RECV)
        ferry__net_on_receive(net, e, op, ent, src);
    else
        finish_op(net, op, FERRY_OK, NULL);
}

static void on_error(ferry__net *net, ferry__net_ep *e)
{
    struct fi_cq_err_entry err = {0};
    pthread_mutex_lock(&e->fi_lock);
    ssize_t got = fi_cq_readerr(e->cq, &err, 0);
    pthread_mutex_unlock(&e->fi_lock);
    if (got != 1 || !err.op_context)
        return;
    ferry__net_op *op = err.op_context;
    pthread_mutex_lock(&net->lock);
    unlink_op(net, op);
    pthread_mutex_unlock(&net->lock);
    const char *detail = fi_cq_strerror(e->cq, err.prov_errno, err.err_data, NULL, 0);
    char why[256];
    snprintf(why, sizeof why, "%s on %s: %s", fi_strerror(err.err), e->prov_name,
             detail ? detail : "");
    ferry_status rc = ferry__net_status_from_fi(-err.err);
    if (rc != FERRY_ESHUTDOWN)
        rc = FERRY_ETRANSPORT;
    if (op->kind == FERRY__OP_RECV) {
        /* An oversized eager message (a confused or hostile sender) costs only itself. */
        ferry__log_warn(MOD, "receive failed: %s", why);
        if (rc == FERRY_ESHUTDOWN || ferry__net_submit(net, op, true) != FERRY_OK)
            ferry__net_op_free(op);
        return;
    }
    /* Reported once, by whoever owns the op's callback or the peer (the agent): not here. */
    ferry__log_debug(MOD, "transfer with rank %d failed: %s", op->peer, why);
    finish_op(net, op, rc, why);
}

static int poll_ep(ferry__net *net, ferry__net_ep *e)
{
    struct fi_cq_tagged_entry ents[CQ_BATCH];
    fi_addr_t srcs[CQ_BATCH];
    pthread_mutex_lock(&e->fi_lock);
    ssize_t n = e->has_source ? fi_cq_readfrom(e->cq, ents, CQ_BATCH, srcs)
                              : fi_cq_read(e->cq, ents, CQ_BATCH);
    pthread_mutex_unlock(&e->fi_lock);
    if (n == -FI_EAGAIN)
        return 0;
    if (n == -FI_EAVAIL) {
        on_error(net, e);
        return 1;
    }
    if (n < 0) {
        ferry__log_error(MOD, "fi_cq_read on %s: %s", e->prov_name, fi_strerror((int)-n));
        return 0;
    }
    for (ssize_t i = 0; i < n; i++)
        on_completion(net, e, &ents[i], e->has_source ? srcs[i] : FI_ADDR_NOTAVAIL);
    return (int)n;
}

/* Retries one queue's posts in order; stops at the first the provider still refuses. */
static int drain_queue(ferry__net *net, ferry__net_ep *e, int q)
{
    int done = 0;
    for (;;) {
        pthread_mutex_lock(&net->lock);
        ferry__net_op *op = e->queue_head[q];
        if (op) {
            e->queue_head[q] = op->qnext;
            if (!e->queue_head[q])
                e->queue_tail[q] = NULL;
            atomic_fetch_sub(&net->n_waiting, 1);
        }
        pthread_mutex_unlock(&net->lock);
        if (!op)
            break;
        int peer = op->peer;
        int rc = post(op);
        if (rc == -FI_EAGAIN) {
            pthread_mutex_lock(&net->lock);
            op->qnext = e->queue_head[q];
            e->queue_head[q] = op;
            if (!e->queue_tail[q])
                e->queue_tail[q] = op;
            atomic_fetch_add(&net->n_waiting, 1);
            pthread_mutex_unlock(&net->lock);
            break;
        }
        done++;
        if (rc == 0) {
            ring(net, peer);
        } else {
            pthread_mutex_lock(&net->lock);
            unlink_op(net, op);
            pthread_mutex_unlock(&net->lock);
            ferry__net_fail_fi(e, rc, "posting");
            finish_op(net, op, ferry__net_status_from_fi(rc) == FERRY_ESHUTDOWN
                                   ? FERRY_ESHUTDOWN : FERRY_ETRANSPORT, ferry_last_error());
        }
    }
    return done;
}

static int drain_queues(ferry__net *net)
{
    int done = 0;
    for (int i = 0; i < net->n_eps; i++)
        done += drain_queue(net, &net->eps[i], 0) + drain_queue(net, &net->eps[i], 1);
    return done;
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
        finish_op(net, op, op->fail_rc, "could not post");
    }
    return n;
}

static int progress_once(ferry__net *net);

/* progress_once for the progress thread: under poll_lock, as a driving thread may poll too. */
static int locked_progress(ferry__net *net)
{
    pthread_mutex_lock(&net->poll_lock);
    int n = progress_once(net);
    pthread_mutex_unlock(&net->poll_lock);
    return n;
}

/* How long the thread may sleep: 0 while posts wait for the provider; a nap while a transfer
   is under way on a CQ nobody signals (or one without a doorbell); else until the tick. */
static long long sleep_limit(ferry__net *net, long long timeout_ns)
{
    pthread_mutex_lock(&net->lock);
    bool queued = net->failed != NULL;
    for (int i = 0; i < net->n_eps; i++) {
        ferry__net_ep *e = &net->eps[i];
        queued = queued || e->queue_head[0] || e->queue_head[1];
        if (e->wait_fd < 0 && (e->n_active > 0 || net->bell.fd < 0 || !e->is_shm))
            timeout_ns = timeout_ns < NAP_NS ? timeout_ns : NAP_NS;
    }
    pthread_mutex_unlock(&net->lock);
    return queued ? 0 : timeout_ns;
}

static void drain_wake_fd(int fd)
{
    uint64_t count;
    for (int i = 0; i < 64; i++)
        if (read(fd, &count, sizeof count) < 0)
            break;
}

static void set_sleeping(ferry__net *net, bool is_sleeping)
{
    atomic_store(&net->is_sleeping, is_sleeping);
    ferry__net_bell_set_sleeping(&net->bell, is_sleeping);
}

/* Blocks until a CQ has something, the doorbell, ferry__net_wake/close, or the timeout. The
   flags are raised first and the queues read once more after, so a sender either sees us asleep
   (and rings) or we see its message. */
static int sleep_once(ferry__net *net, long long timeout_ns)
{
    set_sleeping(net, true);
    int n = locked_progress(net);
    timeout_ns = sleep_limit(net, timeout_ns);
    if (n > 0 || timeout_ns <= 0 || atomic_load(&net->wake_pending) || atomic_load(&net->stop)) {
        set_sleeping(net, false);
        return n;
    }
    for (int i = 0; i < net->n_eps; i++) {
        ferry__net_ep *e = &net->eps[i];
        struct fid *f = &e->cq->fid;
        if (e->wait_fd < 0)
            continue;
        pthread_mutex_lock(&e->fi_lock);
        int rc = fi_trywait(e->fabric, &f, 1);
        pthread_mutex_unlock(&e->fi_lock);
        if (rc != FI_SUCCESS) {
            set_sleeping(net, false);
            return 1;
        }
    }
    struct pollfd pfd = {.fd = net->epoll_fd, .events = POLLIN};
    struct timespec ts = ferry__timespec_from_ns(timeout_ns);
    if (ppoll(&pfd, 1, &ts, NULL) > 0) {
        struct epoll_event evs[FERRY__NET_MAX_EPS + 2];
        int k = epoll_wait(net->epoll_fd, evs, FERRY__NET_MAX_EPS + 2, 0);
        for (int i = 0; i < k; i++) {
            if (!evs[i].data.ptr)
                drain_wake_fd(net->wake_fd);
            else if (evs[i].data.ptr == &net->bell)
                ferry__net_bell_drain(&net->bell);
        }
    }
    set_sleeping(net, false);
    return 0;
}

static int progress_once(ferry__net *net)
{
    int n = 0;
    for (int i = 0; i < net->n_eps; i++)
        n += poll_ep(net, &net->eps[i]);
    if (atomic_load(&net->n_waiting) > 0)
        n += drain_queues(net) + drain_failed(net);
    return n;
}

void ferry__net_drive_begin(ferry__net *net)
{
    atomic_fetch_add(&net->drivers, 1);
}

void ferry__net_drive_poll(ferry__net *net)
{
    if (pthread_mutex_trylock(&net->poll_lock) == 0) {
        progress_once(net);
        pthread_mutex_unlock(&net->poll_lock);
    }
}

void ferry__net_drive_end(ferry__net *net)
{
    atomic_fetch_sub(&net->drivers, 1);
}

/* One pass of the progress thread: nothing while a waiting thread drives (it polls), else the
   completion queues. */
static int progress_turn(ferry__net *net)
{
    if (atomic_load(&net->drivers) > 0) {
        ferry__sleep_us(DRIVEN_NAP_US);
        return 1; /* counts as busy: no sleep on the wait fds right after */
    }
    return locked_progress(net);
}

void *ferry__net_progress_main(void *arg)
{
    ferry__net *net = arg;
    long long tick_ns = (long long)net->tick_ms * 1000000LL;
    long long next_tick = ferry__now_ns() + tick_ns, busy_at = ferry__now_ns();
    while (!atomic_load(&net->stop)) {
        int n = progress_turn(net);
        long long t = ferry__now_ns();
        if (atomic_exchange(&net->wake_pending, false))
            next_tick = t;
        if (t >= next_tick) {
            if (net->h.on_tick)
                net->h.on_tick(net->h.ctx, t);
            next_tick = t + tick_ns;
        }
        if (n > 0) {
            busy_at = t;
        } else if (t - busy_at >= SPIN_NS) {
            sleep_once(net, next_tick - t);
            busy_at = ferry__now_ns();
        }
    }
    /* Closing: give sends already handed to the provider a moment to leave. */
    long long deadline = ferry__now_ns() + CLOSE_DRAIN_NS;
    for (;;) {
        pthread_mutex_lock(&net->lock);
        size_t sends = net->n_sends;
        pthread_mutex_unlock(&net->lock);
        if (sends == 0 || ferry__now_ns() >= deadline)
            break;
        locked_progress(net);
    }
    return NULL;
}

void ferry__net_fail_all(ferry__net *net)
{
    for (int i = 0; i < net->n_eps; i++)
        for (int q = 0; q < 2; q++)
            net->eps[i].queue_head[q] = net->eps[i].queue_tail[q] = NULL;
    drain_failed(net);
    atomic_store(&net->n_waiting, 0);
    while (net->ops) {
        ferry__net_op *op = net->ops;
        unlink_op(net, op);
        finish_op(net, op, FERRY_ESHUTDOWN, "closing");
    }
}
