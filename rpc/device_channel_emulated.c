/* The emulated peer-to-peer channel: what stands in for NCCL between two workers that both run
   the device emulation (FERRY_EMULATE_DEVICES), so the side-channel path of the wire code is
   tested on machines without GPUs. A send copies the tensor's bytes off its device (after the
   work queued on the device's stream, as NCCL would read them) and sends them to the peer in a
   call of an internal function of their own, keyed by (sender, seq). The receiver keeps each
   arrival until a recv asks for it; a recv that comes first waits for it (with its timeout),
   then copies the bytes into device memory through the ops table and waits for the copy.

   Order: none is needed (each piece names its seq), so sends, cancels and recvs may come in any
   order; a cancelled seq is simply never sent nor asked for. A recv that timed out leaves a
   mark, so the bytes that come later are dropped instead of kept for nobody. When a peer is gone
   its waiting recvs fail with FERRY_ETRANSPORT naming it, what it had sent is dropped, and later
   recvs from it fail at once. All state is per agent (the module's slot) and freed at stop. */
#include "rpc/device_channel.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/device.h"
#include "ferry/value.h"
#include "tensor/device.h"

#define CHANNEL_ID 2
#define ARRIVE_FN "ferry.device_p2p"

typedef struct piece {
    struct piece *next;
    uint64_t seq;
    ferry_tensor *bytes; /* CPU uint8; NULL: a mark left by a recv that timed out */
} piece;

typedef struct {
    _Atomic uint64_t next_seq; /* toward this peer */
    piece *pieces;             /* from this peer, under lock */
    bool gone;
    char why[256];
} peer_state;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t arrived; /* broadcast on every arrival, peer loss and stop */
    int waiters;
    bool stopping;
    int world;
    peer_state *peers;
} channel_state;

static const ferry__agent_module emulated_module;

static channel_state *state_of(ferry__agent *agent)
{
    return agent ? ferry__agent_module_state(agent, &emulated_module) : NULL;
}

static const char *worker_name(ferry__agent *agent, int rank)
{
    const char *n = ferry__agent_worker_name(agent, rank);
    return n ? n : "?";
}

static piece **find(peer_state *p, uint64_t seq)
{
    piece **at = &p->pieces;
    while (*at && (*at)->seq != seq)
        at = &(*at)->next;
    return at;
}

static void drop_pieces(peer_state *p)
{
    while (p->pieces) {
        piece *x = p->pieces;
        p->pieces = x->next;
        ferry_tensor_release(x->bytes);
        ferry__free(x);
    }
}

/* ---- the channel ---- */

static bool emu_usable(ferry__agent *agent, int peer, ferry_device local, ferry_device remote)
{
    channel_state *s = state_of(agent);
    if (!s || peer < 0 || peer >= s->world || local.type != FERRY_CUDA ||
        remote.type != FERRY_CUDA || strcmp(ferry_device_backend(), "emulated") != 0 ||
        strcmp(ferry__agent_peer_device_backend(agent, peer), "emulated") != 0)
        return false;
    return local.index >= 0 && local.index < ferry_cuda_device_count() && remote.index >= 0 &&
           remote.index < ferry__agent_peer_device_count(agent, peer);
}

static uint64_t emu_next_seq(ferry__agent *agent, int peer)
{
    channel_state *s = state_of(agent);
    if (!s || peer < 0 || peer >= s->world)
        return 0;
    return atomic_fetch_add(&s->peers[peer].next_seq, 1);
}

static void emu_cancel(ferry__agent *agent, int peer, uint64_t seq)
{
    /* Nothing was sent under seq and the receiver never asks for it: no order to keep. */
}

static ferry_status emu_send(ferry__agent *agent, int peer, uint64_t seq, ferry_tensor *t,
                             const void *data, size_t nbytes)
{
    channel_state *s = state_of(agent);
    if (!s || peer < 0 || peer >= s->world)
        return ferry__fail(FERRY_EINVAL, "emulated-p2p: no worker of rank %d", peer);
    ferry_device dev = ferry_tensor_device(t);
    int64_t n = (int64_t)nbytes;
    ferry_tensor *host = ferry_tensor_empty(1, &n, FERRY_UINT8, FERRY_DEVICE_CPU);
    if (!host)
        return ferry_last_status();
    /* Queued on the device's stream and waited for: what was queued before is what we read. */
    ferry_status rc =
        ferry__device_copy_sync(ferry_tensor_data(host), FERRY_DEVICE_CPU, data, dev, nbytes);
    if (rc != FERRY_OK) {
        ferry_tensor_release(host);
        return rc;
    }
    ferry_value *args = ferry_args(3, ferry_int(ferry__agent_rank(agent)), ferry_int((int64_t)seq),
                                   ferry_tensor_value(host));
    ferry_tensor_release(host);
    if (!args)
        return ferry__fail(FERRY_ENOMEM, "emulated-p2p: out of memory sending %zu bytes to "
                           "worker '%s'", nbytes, worker_name(agent, peer));
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = (char *)ARRIVE_FN, .args = args};
    ferry_future *f = ferry__agent_request(agent, peer, &m, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    if (!f)
        return ferry_set_error(ferry_last_status(), "emulated-p2p: sending seq %llu (%zu bytes) "
                               "to worker '%s' failed: %s", (unsigned long long)seq, nbytes,
                               worker_name(agent, peer), ferry_last_error());
    ferry_future_release(f); /* the call completes without anyone waiting for it */
    return FERRY_OK;
}

static struct timespec deadline_after(double timeout_s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double whole = (double)(time_t)timeout_s;
    ts.tv_sec += (time_t)timeout_s;
    ts.tv_nsec += (long)((timeout_s - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Under s->lock: waits until the piece is there (*out, unlinked), the peer is gone, the agent
   stops or the deadline passed. */
static ferry_status wait_piece(ferry__agent *agent, channel_state *s, int peer, uint64_t seq,
                               int device, double timeout_s, ferry_tensor **out)
{
    peer_state *p = &s->peers[peer];
    struct timespec until = deadline_after(timeout_s);
    for (;;) {
        piece **at = find(p, seq);
        if (*at && (*at)->bytes) {
            piece *x = *at;
            *at = x->next;
            *out = x->bytes;
            ferry__free(x);
            return FERRY_OK;
        }
        if (p->gone)
            return ferry__fail(FERRY_ETRANSPORT, "emulated-p2p: receiving seq %llu for cuda:%d "
                               "from worker '%s' failed: %s", (unsigned long long)seq, device,
                               worker_name(agent, peer), p->why);
        if (s->stopping)
            return ferry__fail(FERRY_ESHUTDOWN, "emulated-p2p: RPC stopped while cuda:%d waited "
                               "for seq %llu from worker '%s'", device,
                               (unsigned long long)seq, worker_name(agent, peer));
        int err = timeout_s > 0 ? pthread_cond_timedwait(&s->arrived, &s->lock, &until)
                                : pthread_cond_wait(&s->arrived, &s->lock);
        if (err == ETIMEDOUT) {
            piece *there = *find(p, seq);
            if (there && there->bytes)
                continue; /* it came with the deadline */
            piece *mark = there ? NULL : ferry__calloc(1, sizeof *mark);
            if (mark) { /* without it, late bytes are kept until stop: still freed */
                mark->seq = seq;
                mark->next = p->pieces;
                p->pieces = mark;
            }
            return ferry__fail(FERRY_ETIMEDOUT, "emulated-p2p: the bytes of seq %llu for cuda:%d "
                               "from worker '%s' did not come within %.3g s",
                               (unsigned long long)seq, device, worker_name(agent, peer),
                               timeout_s);
        }
    }
}

static ferry_status emu_recv(ferry__agent *agent, int peer, uint64_t seq, void *data,
                             size_t nbytes, int device, double timeout_s)
{
    channel_state *s = state_of(agent);
    if (!s || peer < 0 || peer >= s->world)
        return ferry__fail(FERRY_EINVAL, "emulated-p2p: no worker of rank %d", peer);
    ferry_tensor *bytes = NULL;
    pthread_mutex_lock(&s->lock);
    s->waiters++;
    ferry_status rc = wait_piece(agent, s, peer, seq, device, timeout_s, &bytes);
    if (--s->waiters == 0 && s->stopping)
        pthread_cond_broadcast(&s->arrived);
    pthread_mutex_unlock(&s->lock);
    if (rc != FERRY_OK)
        return rc;
    if (ferry_tensor_nbytes(bytes) != nbytes) {
        rc = ferry__fail(FERRY_EPROTO, "emulated-p2p: seq %llu from worker '%s' carried %zu "
                         "bytes where its message declared %zu for cuda:%d",
                         (unsigned long long)seq, worker_name(agent, peer),
                         ferry_tensor_nbytes(bytes), nbytes, device);
    } else {
        rc = ferry__device_copy_sync(data, FERRY_DEVICE_CUDA(device), ferry_tensor_data(bytes),
                                     FERRY_DEVICE_CPU, nbytes);
    }
    ferry_tensor_release(bytes);
    return rc;
}

/* ---- the arrival: [sender rank, seq, bytes] ---- */

static ferry_status arrive(ferry__agent *agent, channel_state *s, const ferry_value *args)
{
    int64_t src = -1, seq = -1;
    ferry_tensor *bytes = NULL;
    if (ferry_list_len(args) != 3 ||
        ferry_value_get_int(ferry_list_get(args, 0), &src) != FERRY_OK ||
        ferry_value_get_int(ferry_list_get(args, 1), &seq) != FERRY_OK ||
        ferry_value_get_tensor(ferry_list_get(args, 2), &bytes) != FERRY_OK || src < 0 ||
        src >= s->world || ferry_tensor_device(bytes).type != FERRY_CPU)
        return ferry__fail(FERRY_EPROTO, "emulated-p2p on worker '%s': a piece takes [rank, "
                           "seq, bytes]", ferry__agent_name(agent));
    pthread_mutex_lock(&s->lock);
    peer_state *p = &s->peers[src];
    piece **at = find(p, (uint64_t)seq);
    ferry_status rc = FERRY_OK;
    if (*at && !(*at)->bytes) { /* its recv gave up: drop both */
        piece *mark = *at;
        *at = mark->next;
        ferry__free(mark);
    } else if (*at) {
        rc = ferry__fail(FERRY_EPROTO, "emulated-p2p on worker '%s': seq %lld from worker '%s' "
                         "came twice", ferry__agent_name(agent), (long long)seq,
                         worker_name(agent, (int)src));
    } else if (!p->gone && !s->stopping) {
        piece *x = ferry__calloc(1, sizeof *x);
        if (!x) {
            rc = ferry__fail(FERRY_ENOMEM, "emulated-p2p: out of memory keeping seq %lld from "
                             "worker '%s'", (long long)seq, worker_name(agent, (int)src));
        } else {
            x->seq = (uint64_t)seq;
            x->bytes = ferry_tensor_retain(bytes);
            x->next = p->pieces;
            p->pieces = x;
            pthread_cond_broadcast(&s->arrived);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static ferry_status arrive_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    ferry__agent *agent = ferry__agent_get();
    if (!agent)
        return ferry_last_status();
    channel_state *s = state_of(agent);
    ferry_status rc = s ? arrive(agent, s, args)
                        : ferry__fail(FERRY_ESHUTDOWN, "emulated-p2p: the channel is stopped");
    ferry__agent_release(agent);
    *result = NULL;
    return rc;
}

/* ---- the module ---- */

static ferry_status emu_start(ferry__agent *agent, void **state)
{
    ferry_status rc = ferry__register_module_function(ARRIVE_FN, arrive_fn, NULL);
    if (rc != FERRY_OK)
        return rc;
    int world = ferry__agent_world_size(agent);
    channel_state *s = ferry__calloc(1, sizeof *s);
    peer_state *peers = world > 0 ? ferry__calloc((size_t)world, sizeof *peers) : NULL;
    if (!s || !peers) {
        ferry__free(s);
        ferry__free(peers);
        return ferry__fail(FERRY_ENOMEM, "out of memory starting the emulated-p2p channel");
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->arrived, NULL);
    s->world = world;
    s->peers = peers;
    *state = s;
    return FERRY_OK;
}

static void emu_stop(ferry__agent *agent, void *state)
{
    channel_state *s = state;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->arrived);
    while (s->waiters > 0)
        pthread_cond_wait(&s->arrived, &s->lock);
    for (int i = 0; i < s->world; i++)
        drop_pieces(&s->peers[i]);
    pthread_mutex_unlock(&s->lock);
    pthread_cond_destroy(&s->arrived);
    pthread_mutex_destroy(&s->lock);
    ferry__free(s->peers);
    ferry__free(s);
}

/* Does not block: the lock is only ever held for list work, never across a wait. */
static void emu_peer_lost(ferry__agent *agent, void *state, int rank, bool gone, const char *why)
{
    channel_state *s = state;
    if (!s || !gone || rank < 0 || rank >= s->world)
        return; /* a missed heartbeat: its bytes may still come, and recvs keep their timeouts */
    pthread_mutex_lock(&s->lock);
    peer_state *p = &s->peers[rank];
    if (!p->gone) {
        p->gone = true;
        snprintf(p->why, sizeof p->why, "%s", why ? why : "the worker is gone");
    }
    drop_pieces(p);
    pthread_cond_broadcast(&s->arrived);
    pthread_mutex_unlock(&s->lock);
}

static const ferry__agent_module emulated_module = {
    .name = "device-p2p-emulated",
    .start = emu_start,
    .stop = emu_stop,
    .peer_lost = emu_peer_lost,
};

static const ferry__device_channel emulated_channel = {
    .name = "emulated-p2p",
    .id = CHANNEL_ID,
    .usable = emu_usable,
    .next_seq = emu_next_seq,
    .cancel = emu_cancel,
    .send = emu_send,
    .recv = emu_recv,
    .needs = "the device emulation (FERRY_EMULATE_DEVICES) on both workers, and the remote "
             "device among the peer's",
};

__attribute__((constructor)) static void emu_register(void)
{
    ferry__agent_register_module(&emulated_module);
    ferry__device_channel_register(&emulated_channel);
}
