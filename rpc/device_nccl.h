/* What the two halves of the NCCL channel share: the library (opened with dlopen at first use,
   so libferry loads without it), the per-peer state, and the communicators' life (made lazily
   per pair of workers and direction, aborted on a timeout, made again at the next use) in
   device_nccl.c; the ordering of sends and receives on them in device_nccl_channel.c. Only
   built with CUDA and the NCCL headers. */
#ifndef FERRY_RPC_DEVICE_NCCL_H
#define FERRY_RPC_DEVICE_NCCL_H

#if defined(FERRY_WITH_CUDA) && defined(FERRY_HAVE_NCCL)

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "rpc/device_channel.h"

/* The few NCCL entry points ferry uses, found in libnccl.so.2. */
typedef struct {
    ncclResult_t (*get_unique_id)(ncclUniqueId *id);
    ncclResult_t (*comm_init_rank_config)(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank,
                                          ncclConfig_t *config);
    ncclResult_t (*comm_abort)(ncclComm_t comm);
    ncclResult_t (*comm_get_async_error)(ncclComm_t comm, ncclResult_t *error);
    ncclResult_t (*send)(const void *buf, size_t count, ncclDataType_t type, int peer,
                         ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*recv)(void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                         cudaStream_t stream);
    const char *(*error_string)(ncclResult_t result);
} ferry__nccl_lib;

/* The library, or NULL when it cannot be opened (ferry__nccl_lib_why says why). Thread-safe;
   the first call opens it. */
const ferry__nccl_lib *ferry__nccl_lib_get(void);
const char *ferry__nccl_lib_why(void);

/* A piece waiting for its turn on the communicator (a send: t retained until the device read
   it; a cancel mark when `cancelled`), or a receive asked for by recv (a cancel notice from the
   sender when `cancelled`). */
typedef struct ferry__nccl_item {
    struct ferry__nccl_item *next;
    uint64_t seq;
    bool cancelled;
    bool issued;             /* recv: on the stream; its owner waits for `done` */
    ferry_status failed;     /* recv: FERRY_OK, or why it cannot complete (owner reads it) */
    ferry_tensor *t;         /* send */
    void *data;              /* the device memory read (send) or filled (recv) */
    size_t nbytes;
    int device;              /* where `data` lives */
    cudaEvent_t ready;       /* send: recorded on the device's stream at send() */
    cudaEvent_t done;        /* recorded on the communicator's stream after the transfer */
} ferry__nccl_item;

typedef enum { FERRY__COMM_NONE, FERRY__COMM_OPENING, FERRY__COMM_READY } ferry__comm_state;

/* The directions of a pair, from this side: each has a communicator of its own, so a stream
   only ever carries sends, or only receives, in sequence order. With one communicator for both,
   two workers sending to each other at once would each queue their send before the receive of
   the other's, and each send would wait for a receive queued behind the other side's send. */
enum { FERRY__NCCL_OUT = 0, FERRY__NCCL_IN = 1 };

/* One direction's communicator (guarded by its peer's lock). */
typedef struct {
    ferry__comm_state state;
    ncclComm_t comm;
    cudaStream_t stream;     /* its own, on `device` */
    int device;              /* this side's device of it (-1 before the first transfer) */
    uint64_t gen;            /* which communicator of the direction this is (aborts name it) */
    ncclUniqueId id;
} ferry__nccl_link;

/* One peer, guarded by `lock`; `changed` is broadcast on every change of state or lists. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    ferry__nccl_link link[2]; /* FERRY__NCCL_OUT, FERRY__NCCL_IN */
    char why[512];           /* why the last transfer or open failed */
    atomic_bool gone;        /* set without the lock (peer_lost must not block); waiters
                                re-check it at least every 10 ms */
    _Atomic uint64_t next_seq;
    uint64_t send_next;      /* the next seq to issue toward the peer */
    ferry__nccl_item *sends; /* waiting for their turn */
    ferry__nccl_item *inflight; /* issued sends until their `done` completes */
    uint64_t recv_next;      /* the next seq to receive from the peer */
    ferry__nccl_item *recvs; /* asked (or cancelled) and not yet issued */
    ferry__nccl_item *active; /* issued receives whose owner still waits */
    int waiters;             /* receives in progress (stop waits for them to leave) */
} ferry__nccl_peer;

typedef struct {
    int rank, world;
    ferry__nccl_peer *peers;
} ferry__nccl_state;

/* The agent's NCCL state (NULL before start or when the agent has none). */
ferry__nccl_state *ferry__nccl_state_of(ferry__agent *agent);

/* Records a failed NCCL call `what` toward worker `peer` on cuda:`device` with NCCL's own text
   and returns its ferry code (FERRY_ENOMEM for host or device memory, FERRY_ETRANSPORT for a
   peer or network failure, else FERRY_EDEVICE). The one place NCCL's codes become ferry's. */
ferry_status ferry__nccl_fail(ferry__agent *agent, ncclResult_t r, int peer, int device,
                              const char *what);

/* Under p->lock: returns once the communicator of direction `dir` is ready, opening it when
   there is none (this side's device of it is `device`), or with the error after timeout_s. */
ferry_status ferry__nccl_ensure(ferry__agent *agent, int peer, ferry__nccl_peer *p, int dir,
                                int device, double timeout_s);
/* Under p->lock: aborts direction `dir`'s communicator (its transfers fail: owners of active
   receives see `failed`, and p->why says why, from the thread's last error), and tells the
   peer when `tell_peer`. The next use opens a new one. */
void ferry__nccl_abort(ferry__agent *agent, int peer, ferry__nccl_peer *p, int dir,
                       bool tell_peer);
/* Tells the peer's side that seq `seq` toward it was cancelled (a control message). */
ferry_status ferry__nccl_notify_cancel(ferry__agent *agent, int peer, uint64_t seq);
/* Under p->lock, when a direction's communicator is made again (not for its first): both sides
   start past every seq handed out before it, so nothing lost with the old one can stall the new
   one. The sender drops its sends below own_next_seq (its count when the open was exchanged);
   the receiver fails its receives below peer_next_seq (the sender's count). */
void ferry__nccl_drop_sends(ferry__nccl_peer *p, uint64_t own_next_seq);
void ferry__nccl_skip_recvs(ferry__nccl_peer *p, uint64_t peer_next_seq);
/* Under p->lock: issues every send and receive whose turn has come (nothing in a direction
   whose communicator is not ready). A failure aborts that communicator. */
void ferry__nccl_issue(ferry__agent *agent, int peer, ferry__nccl_peer *p);
/* Frees an item (its events, its tensor). */
void ferry__nccl_item_free(ferry__nccl_item *it);
/* Under p->lock: releases the sends whose transfer completed; with `wait`, waits for all. */
void ferry__nccl_reap(ferry__nccl_peer *p, bool wait);

/* Makes device `device` current for the calling thread's CUDA calls; returns the one before. */
int ferry__nccl_use_device(int device);

#endif
#endif
