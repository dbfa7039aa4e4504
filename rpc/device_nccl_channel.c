/* The NCCL channel's hooks (rpc/device_channel.h): usable between two workers that both use the
   CUDA backend (not the emulation) once NCCL loaded; sends and receives with ncclSend/ncclRecv
   on the communicator's own stream (device_nccl.c).

   Order. NCCL matches the k-th send toward a peer with the k-th receive posted from it, while
   ferry's sends, cancels and receives come in any order from any thread. So each side puts them
   in sequence order itself: the sender issues seq k only once k-1 was issued or cancelled (a
   send whose turn has not come waits in a list, and the thread that supplies the missing seq
   issues everything that follows); the receiver posts the receive of seq k only once k-1 was
   posted or is known to be cancelled. The sender tells the receiver about a cancelled seq with
   a control message (a marker on the communicator would not do: the receiver does not know a
   cancelled piece's size, so could not post a matching receive); both sides skip it. A seq
   whose receive is never asked for and never cancelled (its message was lost) stalls the pair
   until a receive times out, which aborts the communicator; the next one starts past it.
   0-byte pieces take no NCCL call on either side (both know the size).

   Streams. A send records an event on ferry__device_stream of the tensor's device when it is
   called, and the communicator's stream waits for it before ncclSend reads: work queued before
   the send is what is sent. A receive returns once the communicator's stream passed the
   ncclRecv (an event, polled with the receive's deadline), so any work queued afterwards sees
   the bytes. A tensor on another device than the communicator's goes through a buffer there
   (cudaMallocAsync and a device-to-device copy on the same stream). */
#include "rpc/device_nccl.h"

#if defined(FERRY_WITH_CUDA) && defined(FERRY_HAVE_NCCL)

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/device.h"
#include "tensor/device_cuda.h"

#define CHANNEL_ID 1

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *name_of(ferry__agent *agent, int rank)
{
    const char *n = ferry__agent_worker_name(agent, rank);
    return n ? n : "?";
}

static ferry_status cuda_check(cudaError_t err, int device, const char *what)
{
    return ferry__cuda_fail((int)err, device, what);
}

/* ---- items and lists ---- */

void ferry__nccl_item_free(ferry__nccl_item *it)
{
    if (!it)
        return;
    if (it->ready)
        cudaEventDestroy(it->ready);
    if (it->done)
        cudaEventDestroy(it->done);
    ferry_tensor_release(it->t);
    ferry__free(it);
}

static ferry__nccl_item *take(ferry__nccl_item **list, uint64_t seq)
{
    for (ferry__nccl_item **at = list; *at; at = &(*at)->next) {
        if ((*at)->seq == seq) {
            ferry__nccl_item *it = *at;
            *at = it->next;
            it->next = NULL;
            return it;
        }
    }
    return NULL;
}

static void unlink_item(ferry__nccl_item **list, ferry__nccl_item *it)
{
    for (ferry__nccl_item **at = list; *at; at = &(*at)->next) {
        if (*at == it) {
            *at = it->next;
            it->next = NULL;
            return;
        }
    }
}

void ferry__nccl_reap(ferry__nccl_peer *p, bool wait)
{
    for (ferry__nccl_item **at = &p->inflight; *at;) {
        ferry__nccl_item *it = *at;
        if (wait && it->done)
            cudaEventSynchronize(it->done); /* after an abort too: its kernels were stopped */
        bool done = !it->done || cudaEventQuery(it->done) != cudaErrorNotReady;
        if (done) {
            *at = it->next;
            ferry__nccl_item_free(it);
        } else {
            at = &it->next;
        }
    }
}

void ferry__nccl_drop_sends(ferry__nccl_peer *p, uint64_t own_next_seq)
{
    for (ferry__nccl_item **at = &p->sends; *at;) {
        ferry__nccl_item *it = *at;
        if (it->seq < own_next_seq) {
            *at = it->next;
            ferry__nccl_item_free(it);
        } else {
            at = &it->next;
        }
    }
    if (own_next_seq > p->send_next)
        p->send_next = own_next_seq;
}

void ferry__nccl_skip_recvs(ferry__nccl_peer *p, uint64_t peer_next_seq)
{
    for (ferry__nccl_item **at = &p->recvs; *at;) {
        ferry__nccl_item *it = *at;
        if (it->seq < peer_next_seq && it->cancelled) {
            *at = it->next;
            ferry__nccl_item_free(it);
            continue;
        }
        if (it->seq < peer_next_seq && !it->failed)
            it->failed = FERRY_ETRANSPORT;
        at = &it->next;
    }
    if (peer_next_seq > p->recv_next) {
        snprintf(p->why, sizeof p->why, "its bytes were lost with an aborted communicator");
        p->recv_next = peer_next_seq;
    }
    pthread_cond_broadcast(&p->changed);
}

/* ---- issuing, in sequence order ---- */

/* A non-blocking communicator may answer ncclInProgress: the call is done once its state says
   so. */
static ncclResult_t settle(const ferry__nccl_lib *lib, ncclComm_t comm, ncclResult_t r)
{
    while (r == ncclInProgress) {
        ncclResult_t state = ncclSuccess;
        ncclResult_t q = lib->comm_get_async_error(comm, &state);
        if (q != ncclSuccess)
            return q;
        r = state;
        if (r == ncclInProgress)
            sched_yield();
    }
    return r;
}

static ferry_status issue_one(ferry__agent *agent, int peer, ferry__nccl_link *l,
                              ferry__nccl_item *it, bool is_send)
{
    const ferry__nccl_lib *lib = ferry__nccl_lib_get();
    int other = ferry__agent_rank(agent) < peer ? 1 : 0; /* the peer's rank in the pair */
    int before = ferry__nccl_use_device(l->device);
    void *tmp = NULL, *buf = it->data;
    ferry_status rc = FERRY_OK;
    if (is_send)
        rc = cuda_check(cudaStreamWaitEvent(l->stream, it->ready, 0), l->device,
                        "cudaStreamWaitEvent");
    if (rc == FERRY_OK && it->device != l->device) {
        rc = cuda_check(cudaMallocAsync(&tmp, it->nbytes, l->stream), l->device,
                        "cudaMallocAsync");
        if (rc == FERRY_OK && is_send)
            rc = cuda_check(cudaMemcpyAsync(tmp, it->data, it->nbytes, cudaMemcpyDefault,
                                            l->stream), l->device, "cudaMemcpyAsync");
        buf = tmp;
    }
    if (rc == FERRY_OK) {
        ncclResult_t r = is_send ? lib->send(buf, it->nbytes, ncclUint8, other, l->comm, l->stream)
                                 : lib->recv(buf, it->nbytes, ncclUint8, other, l->comm, l->stream);
        r = settle(lib, l->comm, r);
        if (r != ncclSuccess)
            rc = ferry__nccl_fail(agent, r, peer, l->device, is_send ? "ncclSend" : "ncclRecv");
    }
    if (rc == FERRY_OK && tmp && !is_send)
        rc = cuda_check(cudaMemcpyAsync(it->data, tmp, it->nbytes, cudaMemcpyDefault, l->stream),
                        l->device, "cudaMemcpyAsync");
    if (tmp)
        cudaFreeAsync(tmp, l->stream);
    if (rc == FERRY_OK)
        rc = cuda_check(cudaEventCreateWithFlags(&it->done, cudaEventDisableTiming), l->device,
                        "cudaEventCreate");
    if (rc == FERRY_OK)
        rc = cuda_check(cudaEventRecord(it->done, l->stream), l->device, "cudaEventRecord");
    ferry__nccl_use_device(before);
    return rc;
}

void ferry__nccl_issue(ferry__agent *agent, int peer, ferry__nccl_peer *p)
{
    ferry__nccl_link *out = &p->link[FERRY__NCCL_OUT], *in = &p->link[FERRY__NCCL_IN];
    ferry__nccl_item *it;
    while (out->state == FERRY__COMM_READY && (it = take(&p->sends, p->send_next))) {
        p->send_next++;
        if (it->cancelled || it->nbytes == 0) {
            ferry__nccl_item_free(it);
            continue;
        }
        ferry_status rc = issue_one(agent, peer, out, it, true);
        it->next = p->inflight;
        p->inflight = it;
        if (rc != FERRY_OK)
            ferry__nccl_abort(agent, peer, p, FERRY__NCCL_OUT, true);
    }
    while (in->state == FERRY__COMM_READY && (it = take(&p->recvs, p->recv_next))) {
        p->recv_next++;
        if (it->cancelled) {
            ferry__nccl_item_free(it);
            continue;
        }
        it->issued = true;
        it->next = p->active;
        p->active = it;
        if (it->nbytes > 0 && issue_one(agent, peer, in, it, false) != FERRY_OK)
            ferry__nccl_abort(agent, peer, p, FERRY__NCCL_IN, true); /* fails `it` too */
    }
    pthread_cond_broadcast(&p->changed);
}

/* ---- the channel ---- */

static ferry__nccl_peer *peer_of(ferry__agent *agent, int peer)
{
    ferry__nccl_state *s = ferry__nccl_state_of(agent);
    if (!s || peer < 0 || peer >= s->world || peer == s->rank)
        return NULL;
    return &s->peers[peer];
}

static bool nccl_usable(ferry__agent *agent, int peer, ferry_device local, ferry_device remote)
{
    ferry__nccl_peer *p = peer_of(agent, peer);
    if (!p || atomic_load(&p->gone) || local.type != FERRY_CUDA || remote.type != FERRY_CUDA ||
        strcmp(ferry_device_backend(), "cuda") != 0 ||
        strcmp(ferry__agent_peer_device_backend(agent, peer), "cuda") != 0)
        return false;
    return local.index >= 0 && local.index < ferry_cuda_device_count() && remote.index >= 0 &&
           remote.index < ferry__agent_peer_device_count(agent, peer) &&
           ferry__nccl_lib_get() != NULL;
}

static uint64_t nccl_next_seq(ferry__agent *agent, int peer)
{
    ferry__nccl_peer *p = peer_of(agent, peer);
    return p ? atomic_fetch_add(&p->next_seq, 1) : 0;
}

static void nccl_cancel(ferry__agent *agent, int peer, uint64_t seq)
{
    ferry__nccl_peer *p = peer_of(agent, peer);
    if (!p)
        return;
    ferry__nccl_item *it = ferry__calloc(1, sizeof *it);
    pthread_mutex_lock(&p->lock);
    if (it && seq >= p->send_next) { /* without it, the pair stalls until a receive times out */
        it->seq = seq;
        it->cancelled = true;
        it->next = p->sends;
        p->sends = it;
        it = NULL;
        ferry__nccl_issue(agent, peer, p);
    }
    pthread_mutex_unlock(&p->lock);
    ferry__nccl_item_free(it);
    ferry__nccl_notify_cancel(agent, peer, seq);
}

static ferry_status nccl_send(ferry__agent *agent, int peer, uint64_t seq, ferry_tensor *t,
                              const void *data, size_t nbytes)
{
    ferry__nccl_peer *p = peer_of(agent, peer);
    int device = ferry_tensor_device(t).index;
    if (!p)
        return ferry__fail(FERRY_EINVAL, "nccl: no peer of rank %d", peer);
    ferry__nccl_item *it = ferry__calloc(1, sizeof *it);
    if (!it)
        return ferry__fail(FERRY_ENOMEM, "nccl: out of memory sending to worker '%s'",
                           name_of(agent, peer));
    it->seq = seq;
    it->t = ferry_tensor_retain(t);
    it->data = (void *)data;
    it->nbytes = nbytes;
    it->device = device;
    int before = ferry__nccl_use_device(device);
    ferry_status rc = cuda_check(cudaEventCreateWithFlags(&it->ready, cudaEventDisableTiming),
                                 device, "cudaEventCreate");
    if (rc == FERRY_OK)
        rc = cuda_check(cudaEventRecord(it->ready, (cudaStream_t)ferry__cuda_stream(device)),
                        device, "cudaEventRecord");
    ferry__nccl_use_device(before);
    if (rc != FERRY_OK) {
        ferry__nccl_item_free(it);
        return rc;
    }
    pthread_mutex_lock(&p->lock);
    if (seq < p->send_next) {
        rc = ferry__fail(FERRY_ETRANSPORT, "nccl: seq %llu toward worker '%s' was passed when "
                         "the communicator was made again", (unsigned long long)seq,
                         name_of(agent, peer));
    } else {
        it->next = p->sends;
        p->sends = it;
        it = NULL;
        rc = ferry__nccl_ensure(agent, peer, p, FERRY__NCCL_OUT, device,
                                ferry__agent_effective_timeout(agent, FERRY_TIMEOUT_DEFAULT));
        ferry__nccl_issue(agent, peer, p);
    }
    pthread_mutex_unlock(&p->lock);
    ferry__nccl_item_free(it);
    return rc;
}

/* Under p->lock: waits until `it` is on the stream, then until the stream passed it. */
static ferry_status wait_recv(ferry__agent *agent, int peer, ferry__nccl_peer *p,
                              ferry__nccl_item *it, double deadline, double timeout_s)
{
    const ferry__nccl_lib *lib = ferry__nccl_lib_get();
    ferry__nccl_link *in = &p->link[FERRY__NCCL_IN];
    long pause_ns = 2000;
    for (;;) {
        if (it->failed)
            return ferry__fail(it->failed, "nccl: receiving seq %llu for cuda:%d from worker "
                               "'%s' failed: %s", (unsigned long long)it->seq, it->device,
                               name_of(agent, peer), p->why);
        if (atomic_load(&p->gone))
            return ferry__fail(FERRY_ETRANSPORT, "nccl: receiving seq %llu for cuda:%d from "
                               "worker '%s' failed: the worker is gone",
                               (unsigned long long)it->seq, it->device, name_of(agent, peer));
        if (it->issued && (!it->done || cudaEventQuery(it->done) != cudaErrorNotReady))
            return FERRY_OK;
        ncclResult_t state = ncclSuccess;
        if (it->issued && in->state == FERRY__COMM_READY &&
            lib->comm_get_async_error(in->comm, &state) == ncclSuccess &&
            state != ncclSuccess && state != ncclInProgress) {
            ferry__nccl_fail(agent, state, peer, in->device, "ncclRecv");
            ferry__nccl_abort(agent, peer, p, FERRY__NCCL_IN, true);
            continue;
        }
        if (!it->issued && in->state == FERRY__COMM_NONE) {
            ferry_status rc = ferry__nccl_ensure(agent, peer, p, FERRY__NCCL_IN, it->device,
                                                 deadline - now_s());
            if (rc != FERRY_OK)
                return rc;
            ferry__nccl_issue(agent, peer, p);
            continue;
        }
        if (now_s() > deadline) {
            ferry_set_error(FERRY_ETIMEDOUT, "a receive timed out");
            ferry__nccl_abort(agent, peer, p, FERRY__NCCL_IN, true);
            return ferry__fail(FERRY_ETIMEDOUT, "nccl: the bytes of seq %llu for cuda:%d from "
                               "worker '%s' did not come within %.3g s (the communicator was "
                               "aborted)", (unsigned long long)it->seq, it->device,
                               name_of(agent, peer), timeout_s);
        }
        pthread_mutex_unlock(&p->lock);
        struct timespec ts = {0, pause_ns};
        nanosleep(&ts, NULL);
        pause_ns = pause_ns < 1000000L ? pause_ns * 2 : pause_ns;
        pthread_mutex_lock(&p->lock);
    }
}

static ferry_status nccl_recv(ferry__agent *agent, int peer, uint64_t seq, void *data,
                              size_t nbytes, int device, double timeout_s)
{
    ferry__nccl_peer *p = peer_of(agent, peer);
    if (!p)
        return ferry__fail(FERRY_EINVAL, "nccl: no peer of rank %d", peer);
    ferry__nccl_item *it = ferry__calloc(1, sizeof *it);
    if (!it)
        return ferry__fail(FERRY_ENOMEM, "nccl: out of memory receiving from worker '%s'",
                           name_of(agent, peer));
    double deadline = now_s() + (timeout_s > 0 ? timeout_s : 1e9);
    it->seq = seq;
    it->data = data;
    it->nbytes = nbytes;
    it->device = device;
    ferry_status rc;
    pthread_mutex_lock(&p->lock);
    if (seq < p->recv_next) {
        rc = ferry__fail(FERRY_ETRANSPORT, "nccl: receiving seq %llu for cuda:%d from worker "
                         "'%s' failed: its bytes were lost with an aborted communicator",
                         (unsigned long long)seq, device, name_of(agent, peer));
    } else {
        it->next = p->recvs;
        p->recvs = it;
        p->waiters++;
        rc = ferry__nccl_ensure(agent, peer, p, FERRY__NCCL_IN, device, timeout_s);
        if (rc == FERRY_OK) {
            ferry__nccl_issue(agent, peer, p);
            rc = wait_recv(agent, peer, p, it, deadline, timeout_s);
        }
        unlink_item(&p->recvs, it);
        unlink_item(&p->active, it);
        p->waiters--;
        pthread_cond_broadcast(&p->changed); /* stop waits for the waiters */
    }
    pthread_mutex_unlock(&p->lock);
    ferry__nccl_item_free(it);
    return rc;
}

static const ferry__device_channel nccl_channel = {
    .name = "nccl",
    .id = CHANNEL_ID,
    .usable = nccl_usable,
    .next_seq = nccl_next_seq,
    .cancel = nccl_cancel,
    .send = nccl_send,
    .recv = nccl_recv,
    .needs = "the CUDA backend (real GPUs, not the emulation) on both workers and libnccl.so.2",
};

__attribute__((constructor)) static void nccl_register_channel(void)
{
    ferry__device_channel_register(&nccl_channel);
}

#else
typedef int ferry__device_nccl_channel_absent; /* built without CUDA or NCCL: no channel */
#endif
