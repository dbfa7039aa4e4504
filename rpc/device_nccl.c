/* The NCCL channel's library and communicators. libnccl.so.2 is opened with dlopen at the first
   use, so libferry loads on machines without it. One communicator per pair of workers and
   direction (device_nccl.h says why), made lazily: the higher rank asks the lower one (an
   internal function, over ferry's own messages) for the ncclUniqueId; the lower rank makes the
   id the first time either side needs it, and both call ncclCommInitRankConfig (non-blocking,
   so the wait for the other side has a deadline). Each side
   binds a communicator to the device of its first transfer on it; tensors on another device go
   through a copy there (device_nccl_channel.c).

   A receive that times out aborts the communicator (ncclCommAbort, never the process) and tells
   the peer, whose side aborts too; the next use makes a new one. Pieces lost with the old one
   are failed, not waited for: the new open exchanges the sender's count of seqs handed out,
   and both sides start past it. */
#include "rpc/device_nccl.h"

#if defined(FERRY_WITH_CUDA) && defined(FERRY_HAVE_NCCL)

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/value.h"

#define CONTROL_FN "ferry.nccl"

enum { OP_OPEN = 1, OP_CANCEL = 2, OP_ABORT = 3 };

static const ferry__agent_module nccl_module;

/* ---- the library ---- */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static ferry__nccl_lib lib;     /* filled once, under lib_once */
static bool lib_ok;
static char lib_why[256];

static void *sym(void *h, const char *name)
{
    void *p = dlsym(h, name);
    if (!p && !lib_why[0])
        snprintf(lib_why, sizeof lib_why, "libnccl.so.2 has no %s", name);
    return p;
}

static void open_lib(void)
{
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(lib_why, sizeof lib_why, "NCCL could not be loaded: %s", e ? e : "?");
        return;
    }
    *(void **)&lib.get_unique_id = sym(h, "ncclGetUniqueId");
    *(void **)&lib.comm_init_rank_config = sym(h, "ncclCommInitRankConfig");
    *(void **)&lib.comm_abort = sym(h, "ncclCommAbort");
    *(void **)&lib.comm_get_async_error = sym(h, "ncclCommGetAsyncError");
    *(void **)&lib.send = sym(h, "ncclSend");
    *(void **)&lib.recv = sym(h, "ncclRecv");
    *(void **)&lib.error_string = sym(h, "ncclGetErrorString");
    lib_ok = !lib_why[0]; /* the handle stays open for the life of the process */
}

const ferry__nccl_lib *ferry__nccl_lib_get(void)
{
    pthread_once(&lib_once, open_lib);
    return lib_ok ? &lib : NULL;
}

const char *ferry__nccl_lib_why(void)
{
    pthread_once(&lib_once, open_lib);
    return lib_why;
}

ferry_status ferry__nccl_fail(ferry__agent *agent, ncclResult_t r, int peer, int device,
                              const char *what)
{
    const char *name = ferry__agent_worker_name(agent, peer);
    ferry_status rc = r == ncclSystemError || r == ncclRemoteError ? FERRY_ETRANSPORT
                                                                   : FERRY_EDEVICE;
    const char *text = lib_ok ? lib.error_string(r) : "?";
    if (text && strstr(text, "memory"))
        rc = FERRY_ENOMEM;
    return ferry__fail(rc, "nccl: %s toward worker '%s' on cuda:%d failed: %s", what,
                       name ? name : "?", device, text ? text : "?");
}

ferry__nccl_state *ferry__nccl_state_of(ferry__agent *agent)
{
    return agent ? ferry__agent_module_state(agent, &nccl_module) : NULL;
}

int ferry__nccl_use_device(int device)
{
    int before = 0;
    cudaGetDevice(&before);
    if (device >= 0 && device != before)
        cudaSetDevice(device);
    return before;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- opening a communicator ---- */

/* Without p->lock (it blocks until the other side joins, or the deadline): a communicator of
   rank `me` (0 or 1) of the pair on `device`, and its stream. */
static ferry_status init_comm(ferry__agent *agent, int peer, ncclUniqueId id, int me, int device,
                              double deadline, ncclComm_t *comm, cudaStream_t *stream)
{
    int before = ferry__nccl_use_device(device);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = lib.comm_init_rank_config(comm, 2, id, me, &config);
    ncclResult_t state = r;
    while (r == ncclSuccess || r == ncclInProgress) {
        r = lib.comm_get_async_error(*comm, &state);
        if (r != ncclSuccess || state != ncclInProgress)
            break;
        if (now_s() > deadline) {
            lib.comm_abort(*comm);
            ferry__nccl_use_device(before);
            const char *name = ferry__agent_worker_name(agent, peer);
            return ferry__fail(FERRY_ETIMEDOUT, "nccl: worker '%s' did not join the "
                               "communicator on cuda:%d in time", name ? name : "?", device);
        }
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    ferry_status rc = FERRY_OK;
    if (r != ncclSuccess || state != ncclSuccess) {
        rc = ferry__nccl_fail(agent, r != ncclSuccess ? r : state, peer, device,
                              "ncclCommInitRankConfig");
        if (r == ncclSuccess)
            lib.comm_abort(*comm);
    } else if (cudaStreamCreateWithFlags(stream, cudaStreamNonBlocking) != cudaSuccess) {
        rc = ferry__fail(FERRY_EDEVICE, "nccl: no stream for the communicator on cuda:%d",
                         device);
        lib.comm_abort(*comm);
    }
    ferry__nccl_use_device(before);
    return rc;
}

/* Under p->lock, with the link OPENING: opens this side and publishes the outcome. */
static ferry_status open_side(ferry__agent *agent, int peer, ferry__nccl_peer *p, int dir,
                              double deadline)
{
    ferry__nccl_link *l = &p->link[dir];
    ncclUniqueId id = l->id;
    int device = l->device;
    uint64_t gen = l->gen;
    int me = ferry__agent_rank(agent) < peer ? 0 : 1; /* the lower rank is 0 in every pair */
    ncclComm_t comm = NULL;
    cudaStream_t stream = NULL;
    pthread_mutex_unlock(&p->lock);
    ferry_status rc = init_comm(agent, peer, id, me, device, deadline, &comm, &stream);
    pthread_mutex_lock(&p->lock);
    if (rc == FERRY_OK && (l->gen != gen || l->state != FERRY__COMM_OPENING)) {
        lib.comm_abort(comm); /* aborted meanwhile by the peer's notice */
        cudaStreamDestroy(stream);
        rc = ferry__fail(FERRY_ETRANSPORT, "nccl: the communicator with worker '%s' was "
                         "aborted while it opened", ferry__agent_worker_name(agent, peer));
    } else if (rc == FERRY_OK) {
        l->comm = comm;
        l->stream = stream;
        l->state = FERRY__COMM_READY;
        ferry__nccl_issue(agent, peer, p);
    } else if (l->gen == gen) {
        snprintf(p->why, sizeof p->why, "%s", ferry_last_error());
        l->state = FERRY__COMM_NONE;
    }
    pthread_cond_broadcast(&p->changed);
    return rc;
}

/* The lower rank's side: a new id and generation (under p->lock, the link NONE). */
static ferry_status make_id(ferry__agent *agent, int peer, ferry__nccl_link *l, int device)
{
    ncclResult_t r = lib.get_unique_id(&l->id);
    if (r != ncclSuccess)
        return ferry__nccl_fail(agent, r, peer, device, "ncclGetUniqueId");
    l->gen++;
    l->device = l->device < 0 ? device : l->device;
    l->state = FERRY__COMM_OPENING;
    return FERRY_OK;
}

/* After a direction's communicator was made again: its sender drops what it handed out
   before, its receiver skips what the sender handed out before. */
static void restart(ferry__nccl_peer *p, int dir, uint64_t own_next, uint64_t peer_next)
{
    if (dir == FERRY__NCCL_OUT)
        ferry__nccl_drop_sends(p, own_next);
    else
        ferry__nccl_skip_recvs(p, peer_next);
}

/* The higher rank's side: asks the lower one for the id of direction `dir` (as seen here) and
   its count of seqs handed out (p->lock released while the request is out). */
static ferry_status ask_id(ferry__agent *agent, int peer, ferry__nccl_peer *p, int dir,
                           double timeout_s)
{
    uint64_t own_next = atomic_load(&p->next_seq);
    ferry_value *args = ferry_args(4, ferry_int(OP_OPEN), ferry_int(ferry__agent_rank(agent)),
                                   ferry_int((int64_t)own_next), ferry_int(dir));
    if (!args)
        return ferry_last_status();
    pthread_mutex_unlock(&p->lock);
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = (char *)CONTROL_FN, .args = args};
    ferry_future *f = ferry__agent_request(agent, peer, &m, timeout_s > 0 ? timeout_s : 0);
    ferry_value_release(args);
    ferry_value *v = f ? ferry_future_value(f) : NULL;
    ferry_future_release(f);
    pthread_mutex_lock(&p->lock);
    if (!v)
        return ferry_set_error(ferry_last_status(), "nccl: worker '%s' gave no communicator "
                               "id: %s", ferry__agent_worker_name(agent, peer),
                               ferry_last_error());
    const void *bytes = NULL;
    size_t len = 0;
    int64_t gen = 0, peer_next = 0;
    ferry__nccl_link *l = &p->link[dir];
    ferry_status rc = FERRY_OK;
    if (ferry_list_len(v) != 3 ||
        ferry_value_get_bytes(ferry_list_get(v, 0), &bytes, &len) != FERRY_OK ||
        len != sizeof l->id || ferry_value_get_int(ferry_list_get(v, 1), &gen) != FERRY_OK ||
        ferry_value_get_int(ferry_list_get(v, 2), &peer_next) != FERRY_OK) {
        rc = ferry__fail(FERRY_EPROTO, "nccl: worker '%s' answered the open with a malformed id",
                         ferry__agent_worker_name(agent, peer));
    } else {
        memcpy(&l->id, bytes, sizeof l->id);
        l->gen = (uint64_t)gen;
        if (gen > 1)
            restart(p, dir, own_next, (uint64_t)peer_next);
    }
    ferry_value_release(v);
    return rc;
}

/* Under p->lock: waits while the link is OPENING (10 ms at a time, for the deadline and a lost
   peer). FERRY_OK once it is READY or NONE. */
static ferry_status wait_opening(ferry__agent *agent, int peer, ferry__nccl_peer *p,
                                 ferry__nccl_link *l, double deadline, double timeout_s)
{
    while (l->state == FERRY__COMM_OPENING) {
        if (atomic_load(&p->gone))
            return ferry__fail(FERRY_ETRANSPORT, "nccl: worker '%s' is gone",
                               ferry__agent_worker_name(agent, peer));
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 10000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->changed, &p->lock, &until);
        if (now_s() > deadline)
            return ferry__fail(FERRY_ETIMEDOUT, "nccl: the communicator with worker '%s' did "
                               "not open within %.3g s", ferry__agent_worker_name(agent, peer),
                               timeout_s);
    }
    return FERRY_OK;
}

ferry_status ferry__nccl_ensure(ferry__agent *agent, int peer, ferry__nccl_peer *p, int dir,
                                int device, double timeout_s)
{
    double deadline = now_s() + (timeout_s > 0 ? timeout_s : 1e9);
    ferry__nccl_link *l = &p->link[dir];
    ferry_status rc = wait_opening(agent, peer, p, l, deadline, timeout_s);
    if (rc != FERRY_OK)
        return rc;
    if (atomic_load(&p->gone))
        return ferry__fail(FERRY_ETRANSPORT, "nccl: worker '%s' is gone",
                           ferry__agent_worker_name(agent, peer));
    if (l->state == FERRY__COMM_READY)
        return FERRY_OK;
    if (ferry__agent_rank(agent) < peer) {
        rc = make_id(agent, peer, l, device);
    } else {
        l->state = FERRY__COMM_OPENING;
        l->device = l->device < 0 ? device : l->device;
        rc = ask_id(agent, peer, p, dir, timeout_s);
    }
    if (rc != FERRY_OK) {
        l->state = FERRY__COMM_NONE;
        pthread_cond_broadcast(&p->changed);
        return rc;
    }
    return open_side(agent, peer, p, dir, deadline);
}

/* ---- aborting ---- */

static void send_control(ferry__agent *agent, int peer, int op, uint64_t value, int dir)
{
    ferry_value *args = ferry_args(4, ferry_int(op), ferry_int(ferry__agent_rank(agent)),
                                   ferry_int((int64_t)value), ferry_int(dir));
    if (!args)
        return;
    ferry__msg m = {.type = FERRY__MSG_CALL, .fn = (char *)CONTROL_FN, .args = args};
    ferry_future *f = ferry__agent_request(agent, peer, &m, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    ferry_future_release(f); /* nobody waits: a lost notice ends as the peer's own timeout */
}

void ferry__nccl_abort(ferry__agent *agent, int peer, ferry__nccl_peer *p, int dir,
                       bool tell_peer)
{
    ferry__nccl_link *l = &p->link[dir];
    char why[512];
    snprintf(why, sizeof why, "nccl: the communicator with worker '%s' was aborted (%s)",
             ferry__agent_worker_name(agent, peer), ferry_last_error());
    if (l->state == FERRY__COMM_READY) {
        lib.comm_abort(l->comm);
        if (dir == FERRY__NCCL_OUT)
            ferry__nccl_reap(p, true); /* its kernels were stopped: the events complete */
        cudaStreamDestroy(l->stream);
        l->comm = NULL;
        l->stream = NULL;
    }
    for (ferry__nccl_item *it = p->active; dir == FERRY__NCCL_IN && it; it = it->next)
        if (!it->failed)
            it->failed = FERRY_ETRANSPORT;
    l->state = FERRY__COMM_NONE;
    snprintf(p->why, sizeof p->why, "%s", why);
    pthread_cond_broadcast(&p->changed);
    if (tell_peer)
        send_control(agent, peer, OP_ABORT, l->gen, dir);
}

ferry_status ferry__nccl_notify_cancel(ferry__agent *agent, int peer, uint64_t seq)
{
    send_control(agent, peer, OP_CANCEL, seq, FERRY__NCCL_OUT);
    return FERRY_OK;
}

/* ---- the control function: [op, sender rank, value, the sender's direction] ---- */

typedef struct {
    ferry__agent *agent;
    int peer, dir;
} open_job;

/* On the pool: the lower rank's side of an open the higher rank asked for. */
static void open_lower(void *arg)
{
    open_job *j = arg;
    ferry__nccl_peer *p = &ferry__nccl_state_of(j->agent)->peers[j->peer];
    pthread_mutex_lock(&p->lock);
    if (p->link[j->dir].state == FERRY__COMM_OPENING)
        open_side(j->agent, j->peer, p, j->dir,
                  now_s() + ferry__agent_effective_timeout(j->agent, FERRY_TIMEOUT_DEFAULT));
    pthread_mutex_unlock(&p->lock);
    ferry__agent_release(j->agent);
    ferry__free(j);
}

/* The higher rank asks for the id of its direction `dir`: here it is the other one. */
static ferry_status on_open(ferry__agent *agent, int peer, ferry__nccl_peer *p, int dir,
                            uint64_t peer_next, ferry_value **result)
{
    ferry__nccl_link *l = &p->link[dir];
    ferry_status rc = FERRY_OK;
    bool start = false;
    if (l->state == FERRY__COMM_READY) { /* the peer lost it: this side's is stale */
        ferry_set_error(FERRY_ETRANSPORT, "worker '%s' opened a new one",
                        ferry__agent_worker_name(agent, peer));
        ferry__nccl_abort(agent, peer, p, dir, false);
    }
    if (l->state == FERRY__COMM_NONE) {
        rc = make_id(agent, peer, l, l->device < 0 ? 0 : l->device);
        start = rc == FERRY_OK;
    }
    if (rc != FERRY_OK)
        return rc;
    uint64_t own_next = atomic_load(&p->next_seq);
    if (l->gen > 1)
        restart(p, dir, own_next, peer_next);
    *result = ferry_list_of(3, ferry_bytes(&l->id, sizeof l->id), ferry_int((int64_t)l->gen),
                            ferry_int((int64_t)own_next));
    if (!*result)
        return ferry_last_status();
    open_job *j = start ? ferry__calloc(1, sizeof *j) : NULL;
    if (j) {
        j->agent = ferry__agent_retain(agent);
        j->peer = peer;
        j->dir = dir;
    }
    if (start && (!j || ferry__agent_submit(agent, open_lower, j) != FERRY_OK)) {
        if (j)
            ferry__agent_release(j->agent);
        ferry__free(j);
        l->state = FERRY__COMM_NONE;
        ferry_value_release(*result);
        *result = NULL;
        return ferry__fail(FERRY_ENOMEM, "nccl: cannot open the communicator with worker '%s'",
                           ferry__agent_worker_name(agent, peer));
    }
    return FERRY_OK;
}

static ferry_status on_control(ferry__agent *agent, ferry__nccl_state *s, const ferry_value *args,
                               ferry_value **result)
{
    int64_t op = 0, src = -1, value = 0, dir = -1;
    if (ferry_list_len(args) != 4 ||
        ferry_value_get_int(ferry_list_get(args, 0), &op) != FERRY_OK ||
        ferry_value_get_int(ferry_list_get(args, 1), &src) != FERRY_OK ||
        ferry_value_get_int(ferry_list_get(args, 2), &value) != FERRY_OK ||
        ferry_value_get_int(ferry_list_get(args, 3), &dir) != FERRY_OK || src < 0 ||
        src >= s->world || src == s->rank || (dir != FERRY__NCCL_OUT && dir != FERRY__NCCL_IN))
        return ferry__fail(FERRY_EPROTO, "nccl: a malformed control message on worker '%s'",
                           ferry__agent_name(agent));
    int peer = (int)src, mine = 1 - (int)dir; /* the sender's out is this side's in */
    ferry__nccl_peer *p = &s->peers[peer];
    ferry_status rc = FERRY_OK;
    pthread_mutex_lock(&p->lock);
    if (op == OP_OPEN && ferry__agent_rank(agent) < peer) {
        rc = on_open(agent, peer, p, mine, (uint64_t)value, result);
    } else if (op == OP_CANCEL) {
        ferry__nccl_item *it = (uint64_t)value >= p->recv_next ? ferry__calloc(1, sizeof *it)
                                                               : NULL;
        if (it) { /* without it, the seq's turn stalls until a receive times out */
            it->seq = (uint64_t)value;
            it->cancelled = true;
            it->next = p->recvs;
            p->recvs = it;
            ferry__nccl_issue(agent, peer, p);
        }
    } else if (op == OP_ABORT) {
        ferry__nccl_link *l = &p->link[mine];
        if ((uint64_t)value == l->gen && l->state != FERRY__COMM_NONE) {
            ferry_set_error(FERRY_ETRANSPORT, "worker '%s' aborted it",
                            ferry__agent_worker_name(agent, peer));
            ferry__nccl_abort(agent, peer, p, mine, false);
        }
    } else {
        rc = ferry__fail(FERRY_EPROTO, "nccl: unexpected control operation %lld from worker "
                         "'%s'", (long long)op, ferry__agent_worker_name(agent, peer));
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static ferry_status control_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    ferry__agent *agent = ferry__agent_get();
    if (!agent)
        return ferry_last_status();
    ferry__nccl_state *s = ferry__nccl_state_of(agent);
    *result = NULL;
    ferry_status rc = s ? on_control(agent, s, args, result)
                        : ferry__fail(FERRY_ENOTSUP, "nccl: the channel is not running on "
                                      "worker '%s'", ferry__agent_name(agent));
    ferry__agent_release(agent);
    return rc;
}

/* ---- the module ---- */

static ferry_status nccl_start(ferry__agent *agent, void **state)
{
    ferry_status rc = ferry__register_module_function(CONTROL_FN, control_fn, NULL);
    if (rc != FERRY_OK)
        return rc;
    int world = ferry__agent_world_size(agent);
    ferry__nccl_state *s = ferry__calloc(1, sizeof *s);
    ferry__nccl_peer *peers = world > 0 ? ferry__calloc((size_t)world, sizeof *peers) : NULL;
    if (!s || !peers) {
        ferry__free(s);
        ferry__free(peers);
        return ferry__fail(FERRY_ENOMEM, "out of memory starting the nccl channel");
    }
    for (int i = 0; i < world; i++) {
        pthread_mutex_init(&peers[i].lock, NULL);
        pthread_cond_init(&peers[i].changed, NULL);
        peers[i].link[FERRY__NCCL_OUT].device = -1;
        peers[i].link[FERRY__NCCL_IN].device = -1;
    }
    s->rank = ferry__agent_rank(agent);
    s->world = world;
    s->peers = peers;
    *state = s;
    return FERRY_OK;
}

static void free_list(ferry__nccl_item **list)
{
    while (*list) {
        ferry__nccl_item *it = *list;
        *list = it->next;
        ferry__nccl_item_free(it);
    }
}

static void nccl_stop(ferry__agent *agent, void *state)
{
    ferry__nccl_state *s = state;
    if (!s)
        return;
    for (int i = 0; i < s->world; i++) {
        ferry__nccl_peer *p = &s->peers[i];
        pthread_mutex_lock(&p->lock);
        ferry_set_error(FERRY_ESHUTDOWN, "RPC stopped");
        for (int dir = 0; dir < 2; dir++)
            if (p->link[dir].state == FERRY__COMM_READY)
                ferry__nccl_abort(agent, i, p, dir, false);
        atomic_store(&p->gone, true);
        pthread_cond_broadcast(&p->changed);
        while (p->waiters > 0) /* they see `gone`, fail and free their own items */
            pthread_cond_wait(&p->changed, &p->lock);
        free_list(&p->sends);
        free_list(&p->recvs); /* cancel marks */
        ferry__nccl_reap(p, true);
        pthread_mutex_unlock(&p->lock);
        pthread_cond_destroy(&p->changed);
        pthread_mutex_destroy(&p->lock);
    }
    ferry__free(s->peers);
    ferry__free(s);
}

/* Releases the tensors of completed sends; never waits for a lock another thread holds. */
static void nccl_tick(ferry__agent *agent, void *state, long long now_ns)
{
    ferry__nccl_state *s = state;
    for (int i = 0; s && i < s->world; i++) {
        ferry__nccl_peer *p = &s->peers[i];
        if (pthread_mutex_trylock(&p->lock) == 0) {
            ferry__nccl_reap(p, false);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

/* Must not block: marks the peer gone without taking its lock; its waiting receives see it
   within 10 ms and fail. The communicator itself is aborted at stop. */
static void nccl_peer_lost(ferry__agent *agent, void *state, int rank, bool gone, const char *why)
{
    ferry__nccl_state *s = state;
    if (!s || !gone || rank < 0 || rank >= s->world)
        return;
    atomic_store(&s->peers[rank].gone, true);
}

static const ferry__agent_module nccl_module = {
    .name = "device-nccl",
    .start = nccl_start,
    .stop = nccl_stop,
    .tick = nccl_tick,
    .peer_lost = nccl_peer_lost,
};

__attribute__((constructor)) static void nccl_register_module(void)
{
    ferry__agent_register_module(&nccl_module);
}

#else
typedef int ferry__device_nccl_absent; /* built without CUDA or NCCL: no channel */
#endif
