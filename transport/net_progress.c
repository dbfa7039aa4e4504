/* The fabric layer's completion side: completion of each op and of aggregates (a large
   message's parts), and the progress thread that reads every completion queue, posts what
   waits in the queues (net_queue.c), spins briefly when idle and then blocks on the CQ wait
   fds, the shm doorbell and an eventfd (or lets a waiting thread drive). What the bytes mean
   (eager and large messages, source ranks, bulk transfers) is net_message.c's. Every callback
   runs on the progress thread (or, for ops still pending, on the thread closing the net) with
   no lock of ours held. */
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

/* How long the progress thread keeps polling after its last completion before it blocks. A
   caller waiting for its reply drives the fabric itself meanwhile (core/future.c), so the
   thread need not stay awake for replies; spinning longer only took the CPU from the pool
   threads running the calls: with 10 µs instead of 50 µs a tiny tcp round trip fell from 2.05x
   to 1.40x of fi_pingpong, and a distributed training step from 3.56x to 2.27x of the local
   one, on 2 cores. -DSPIN_NS=... overrides it for experiments. */
#ifndef SPIN_NS
#define SPIN_NS 10000LL
#endif
/* While another thread drives the fabric, the progress thread checks back this often. */
#define DRIVEN_NAP_US 100
/* While a transfer on a CQ without a wait fd is under way the thread naps this long at most:
   shm moves large messages in steps that need both sides' progress and signal nobody. */
#define NAP_NS 100000LL
/* ... but once nothing has completed for IDLE_NS (a peer that stopped, a transfer it never
   takes), up to LONG_NAP_NS: the wait then costs a few percent of a core, not a fifth. */
#define IDLE_NS 20000000LL
#define LONG_NAP_NS 2000000LL
#define CLOSE_DRAIN_NS 200000000LL
#define CQ_BATCH 16

/* ---- completion ---- */

void ferry__net_peer_failed(ferry__net *net, int peer, ferry_status rc, const char *why)
{
    if (rc == FERRY_ETRANSPORT && ferry__net_mark_dead(net, peer) && net->h.on_peer_error)
        net->h.on_peer_error(net->h.ctx, peer, rc, why);
}

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
        if (rc == FERRY_OK) {
            ferry__net_deliver(net, parent->peer, parent->owned, parent->len);
        } else if (rc == FERRY_ETIMEDOUT) {
            ferry__log_warn(MOD, "a %zu-byte message from rank %d did not arrive whole within "
                            "%lld ms: dropped", parent->len, parent->peer,
                            net->recv_timeout_ns / 1000000);
        } else {
            ferry__net_peer_failed(net, parent->peer, rc, why ? why : "large message lost");
        }
        ferry__net_op_free(parent);
        return;
    }
    ferry__net_finish_op(net, parent, rc, why);
}

/* The op is unlinked; runs its callback (or its aggregate's) and frees it. A transport failure
   reaches the peer-error handler first, with the provider's detail, so the one report of it
   (the agent's "worker ... is unreachable") says what went wrong; done only gets the code. */
void ferry__net_finish_op(ferry__net *net, ferry__net_op *op, ferry_status rc, const char *why)
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

/* The op was unlinked (by poll_ep, with the rest of its batch). */
static void on_completion(ferry__net *net, ferry__net_ep *e, const struct fi_cq_tagged_entry *ent,
                          fi_addr_t src)
{
    ferry__net_op *op = ent->op_context;
    if (op->kind == FERRY__OP_RECV)
        ferry__net_on_receive(net, e, op, ent, src);
    else
        ferry__net_finish_op(net, op, FERRY_OK, NULL);
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
    ferry__net_unlink(net, op);
    bool is_cancelled = op->is_cancelling && err.err == FI_ECANCELED;
    pthread_mutex_unlock(&net->lock);
    const char *detail = fi_cq_strerror(e->cq, err.prov_errno, err.err_data, NULL, 0);
    char why[256];
    snprintf(why, sizeof why, "%s on %s: %s", fi_strerror(err.err), e->prov_name,
             detail ? detail : "");
    ferry_status rc = ferry__net_status_from_fi(-err.err);
    if (rc != FERRY_ESHUTDOWN)
        rc = FERRY_ETRANSPORT;
    if (is_cancelled) {
        /* We cancelled it: its peer is down, or it expired (net_queue.c). */
        rc = op->cancel_rc;
        if (rc == FERRY_ETIMEDOUT) {
            atomic_fetch_add(&net->expired, 1);
            snprintf(why, sizeof why, "a %zu-byte receive from rank %d expired after %lld ms",
                     op->len, op->peer, net->recv_timeout_ns / 1000000);
        } else {
            snprintf(why, sizeof why, "rank %d is down", op->peer);
        }
    }
    if (op->kind == FERRY__OP_RECV) {
        /* An oversized eager message costs only itself. Members never send one (they announce
           large messages), so it is counted as a stranger's and logged at debug: a stranger
           must not be able to fill the log. */
        atomic_fetch_add(&net->dropped_auth, 1);
        ferry__log_debug(MOD, "dropped an untagged message that failed to land: %s", why);
        if (rc == FERRY_ESHUTDOWN || ferry__net_submit(net, op, true) != FERRY_OK)
            ferry__net_op_free(op);
        return;
    }
    /* Reported once, by whoever owns the op's callback or the peer (the agent): not here. */
    ferry__log_debug(MOD, "transfer with rank %d failed: %s", op->peer, why);
    ferry__net_finish_op(net, op, rc, why);
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
    /* One lock for the whole batch: every op it completed leaves the books first. */
    if (n > 0) {
        pthread_mutex_lock(&net->lock);
        for (ssize_t i = 0; i < n; i++)
            ferry__net_unlink(net, ents[i].op_context);
        pthread_mutex_unlock(&net->lock);
    }
    for (ssize_t i = 0; i < n; i++)
        on_completion(net, e, &ents[i], e->has_source ? srcs[i] : FI_ADDR_NOTAVAIL);
    return (int)n;
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
static int sleep_once(ferry__net *net, long long timeout_ns, long long idle_ns)
{
    long long nap = idle_ns > IDLE_NS ? LONG_NAP_NS : NAP_NS;
    set_sleeping(net, true);
    int n = locked_progress(net);
    timeout_ns = ferry__net_sleep_limit(net, timeout_ns);
    for (int i = 0; i < net->n_eps; i++) {
        /* shm moves large messages in steps that need both sides' progress and signal nobody. */
        ferry__net_ep *e = &net->eps[i];
        pthread_mutex_lock(&net->lock);
        bool is_busy = e->n_active > 0;
        pthread_mutex_unlock(&net->lock);
        if (e->wait_fd < 0 && (is_busy || net->bell.fd < 0 || !e->is_shm) && timeout_ns > nap)
            timeout_ns = nap;
    }
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
        n += ferry__net_drain(net);
    return n;
}

void ferry__net_drive_begin(ferry__net *net)
{
    atomic_fetch_add(&net->drivers, 1);
}

int ferry__net_drive_poll(ferry__net *net)
{
    int n = 0;
    if (pthread_mutex_trylock(&net->poll_lock) == 0) {
        n = progress_once(net);
        pthread_mutex_unlock(&net->poll_lock);
        atomic_store_explicit(&net->driven_ns, ferry__now_ns(), memory_order_relaxed);
    }
    return n;
}

void ferry__net_drive_end(ferry__net *net)
{
    atomic_fetch_sub(&net->drivers, 1);
}

/* One pass of the progress thread: nothing while another thread drives (it polls) or drove a
   moment ago (a caller keeping calls in flight polls once per call it starts), else the
   completion queues. */
static int progress_turn(ferry__net *net)
{
    long long driven = atomic_load_explicit(&net->driven_ns, memory_order_relaxed);
    if (atomic_load(&net->drivers) > 0 || ferry__now_ns() - driven < DRIVEN_NAP_US * 1000LL) {
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
    long long worked_at = busy_at; /* the last pass that moved anything */
    while (!atomic_load(&net->stop)) {
        int n = progress_turn(net);
        long long t = ferry__now_ns();
        if (atomic_exchange(&net->wake_pending, false))
            next_tick = t;
        if (t >= next_tick) {
            if (net->h.on_tick)
                net->h.on_tick(net->h.ctx, t);
            ferry__net_maintain(net, t);
            next_tick = t + tick_ns;
        }
        if (n > 0) {
            busy_at = worked_at = t;
        } else if (t - busy_at >= SPIN_NS) {
            if (sleep_once(net, next_tick - t, t - worked_at) > 0)
                worked_at = ferry__now_ns();
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
