/* Private to the fabric layer (net.c opens endpoints and peers; net_progress.c posts ops and
   drives completions; net_message.c turns messages into ops and back; net_doorbell.h wakes shm
   peers).

   Wire conventions, shared by these files:
   - Every untagged message carries 32 bits of remote CQ data: bits 31..30 the kind (eager
     message or large-message announcement), bits 29..0 the sender's rank. When the provider
     offers FI_SOURCE the rank is also checked against the source address, and a message from an
     address that never joined is dropped and counted.
   - Eager messages (total <= FERRY__NET_EAGER_MAX) land in a ring of posted receive buffers.
   - Larger messages: an announcement (total length, sequence number, part lengths) followed by
     one tagged send per part of at most iov_limit iovecs. Tag layout for those parts:
     bit 63 set (FERRY__NET_TAG_INTERNAL), bits 62..6 the sender's sequence number, bits 5..0 the
     part index. Users' bulk tags have bit 63 clear; matching by peer uses FI_DIRECTED_RECV, so
     no rank bits are taken from the tag. */
#ifndef FERRY_TRANSPORT_NET_INTERNAL_H
#define FERRY_TRANSPORT_NET_INTERNAL_H

#include <pthread.h>
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <stdatomic.h>

#include "transport/net.h"
#include "transport/net_doorbell.h"

#define FERRY__NET_MAX_EPS 2
#define FERRY__NET_EAGER_MAX ((size_t)64 * 1024)
#define FERRY__NET_RX_BUFS 32
#define FERRY__NET_TAG_INTERNAL (UINT64_C(1) << 63)
#define FERRY__NET_MAX_PARTS 64
#define FERRY__NET_PART_BITS 6
#define FERRY__NET_INLINE_IOV 4

/* Remote CQ data. */
#define FERRY__NET_KIND_EAGER 0u
#define FERRY__NET_KIND_LARGE 1u
#define FERRY__NET_DATA(kind, rank) (((uint64_t)(kind) << 30) | ((uint64_t)(rank) & 0x3fffffffu))
#define FERRY__NET_DATA_KIND(d) ((unsigned)(((d) >> 30) & 3u))
#define FERRY__NET_DATA_RANK(d) ((int)((d) & 0x3fffffffu))

typedef enum {
    FERRY__OP_SEND,       /* untagged send (eager message or announcement) */
    FERRY__OP_TSEND,      /* tagged send (bulk, or a part of a large message) */
    FERRY__OP_RECV,       /* one of the posted eager receive buffers */
    FERRY__OP_TRECV,      /* tagged receive (bulk, or a part of a large message) */
    FERRY__OP_AGGREGATE,  /* a large send or receive: completes when all its parts have */
} ferry__op_kind;

typedef struct ferry__net_ep ferry__net_ep;

/* One operation handed to the provider. fi_context2 comes first: it is the context we pass, so
   a completion's op_context is the op itself (and providers that ask for FI_CONTEXT storage
   get it). */
typedef struct ferry__net_op {
    struct fi_context2 fi_ctx;
    ferry__op_kind kind;
    bool is_linked;                 /* on net->ops (every op the provider may still complete) */
    struct ferry__net_op *prev, *next;
    struct ferry__net_op *qnext;    /* pending-post queue of its endpoint */
    ferry__net_ep *ep;
    int peer;                       /* rank, or -1 for the eager receive buffers */
    fi_addr_t addr;
    uint64_t tag;
    uint64_t data;                  /* remote CQ data for FERRY__OP_SEND */
    size_t n_iov;
    struct iovec *iov;              /* iov_inline or allocated */
    struct iovec iov_inline[FERRY__NET_INLINE_IOV];
    void *owned;                    /* bounce, receive or reassembly buffer freed with the op */
    size_t len;
    ferry__net_done done;           /* user callback (sends, bulk) or NULL */
    void *arg;
    struct ferry__net_op *parent;   /* aggregate this op is a part of */
    atomic_size_t remaining;        /* aggregate: parts not yet complete */
    _Atomic int agg_rc;             /* aggregate: first failure among its parts */
    ferry_status fail_rc;           /* set when the op sits on net->failed */
    bool is_recv;                   /* aggregate: a large receive (deliver) or a large send */
} ferry__net_op;

/* One open provider: fabric, domain, address vector, completion queue, endpoint. */
struct ferry__net_ep {
    char *prov_name;
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_av *av;
    struct fid_cq *cq;
    struct fid_ep *ep;
    int wait_fd;                    /* the CQ's wait fd, or -1 when the CQ has none */
    bool has_source;                /* FI_SOURCE: completions name the sender's address */
    size_t iov_limit;
    bool is_shm;
    /* Serializes every post and CQ read on this endpoint (the domain is FI_THREAD_DOMAIN): shm
       in libfabric 1.17 loses a tagged match when a receive is posted while another thread
       progresses the endpoint, even in FI_THREAD_SAFE mode. */
    pthread_mutex_t fi_lock;
    bool has_lock;
    size_t n_active;                /* linked ops other than the receive ring (net->lock) */
    unsigned char name[256];
    size_t name_len;
    int *addr_rank;                 /* av index -> rank (world_size entries; -1 none) */
    fi_addr_t *rank_addr;           /* rank -> av index (FI_ADDR_NOTAVAIL none) */
    /* Posts that met -FI_EAGAIN, guarded by net->lock: [0] receives, [1] sends. Receives never
       wait behind sends: on shm a peer's sends can only drain once our receives are posted. */
    ferry__net_op *queue_head[2], *queue_tail[2];
};

typedef struct {
    ferry__net_ep *ep;              /* NULL before ferry__net_set_peers */
    fi_addr_t addr;
    ferry__net_peer_bell bell;      /* shm peers: ring it after posting while it sleeps */
} ferry__net_peer;

struct ferry__net {
    ferry__net_handlers h;
    int tick_ms;
    char *host_id;                  /* hostname + "/" + boot id */
    ferry__net_ep eps[FERRY__NET_MAX_EPS];
    int n_eps;
    unsigned char *blob;
    size_t blob_len;
    int self_rank, world_size;
    ferry__net_peer *peers;

    pthread_mutex_t lock;           /* guards ops, failed, every ep queue, is_closing, n_posting */
    pthread_cond_t posted_cond;     /* n_posting dropped to 0 (close waits for it) */
    ferry__net_op *ops;
    ferry__net_op *failed;          /* ops that failed off the progress thread, to finish on it */
    bool is_closing;
    int n_posting;                  /* threads inside a provider post call right now */
    size_t n_sends;                 /* linked send ops (close lets them drain briefly) */
    atomic_uint_fast64_t seq;       /* large-message sequence numbers */
    atomic_int n_waiting;           /* ops on the ep queues or on failed: polls skip both at 0 */

    pthread_t thread;
    bool is_started;
    atomic_bool stop;
    atomic_bool wake_pending;       /* ferry__net_wake asked for an on_tick */
    atomic_bool is_sleeping;        /* the progress thread is (about to be) in epoll_wait */
    int wake_fd;                    /* eventfd: ferry__net_wake and close */
    ferry__net_bell bell;
    int epoll_fd;
    atomic_uint_fast64_t messages_in, messages_out, bytes_in, bytes_out, dropped;

    /* Waiting threads may drive the fabric themselves (ferry__net_drive_*): whoever polls the
       completion queues holds poll_lock, and while `drivers` > 0 the progress thread stays out
       of them (it only runs ticks), so two threads never spin on one process's queues. */
    pthread_mutex_t poll_lock;
    atomic_int drivers;
};

/* The one place libfabric's codes become ferry's (-FI_E* or 0 in; never logs). */
ferry_status ferry__net_status_from_fi(int fi_rc);
/* Records "<what> on <provider>: <fi_strerror>" and returns the mapped status. */
ferry_status ferry__net_fail_fi(const ferry__net_ep *ep, int fi_rc, const char *what);

/* Operations (net_progress.c). */
ferry__net_op *ferry__net_op_new(ferry__op_kind kind, ferry__net_ep *ep, int peer);
void ferry__net_op_free(ferry__net_op *op);
/* Posts op (any thread). OK also when it was queued behind -FI_EAGAIN; an error means op was
   neither posted nor kept (the caller frees it). Internal ops pass is_internal to be accepted
   while closing. */
ferry_status ferry__net_submit(ferry__net *net, ferry__net_op *op, bool is_internal);
/* Lets the progress thread finish op with rc (op was not posted; any thread). */
void ferry__net_fail_later(ferry__net *net, ferry__net_op *op, ferry_status rc);
/* Wakes the progress thread if it sleeps (no on_tick implied). */
void ferry__net_kick(ferry__net *net);
/* Completion (net_progress.c). Reports rank `peer` failed to the agent when rc is
   FERRY_ETRANSPORT (the why is the one report of the failure). */
void ferry__net_peer_failed(ferry__net *net, int peer, ferry_status rc, const char *why);
/* One part of an aggregate finished with rc; the last one completes the aggregate (delivers a
   large receive, or finishes a large send). */
void ferry__net_part_done(ferry__net *net, ferry__net_op *parent, ferry_status rc,
                          const char *why);
/* Messages (net_message.c). A whole message from `src` goes to on_message (counted). */
void ferry__net_deliver(ferry__net *net, int src, const void *buf, size_t len);
/* One of the eager receive buffers completed: checks the sender, delivers or starts a large
   receive, and reposts the buffer. */
void ferry__net_on_receive(ferry__net *net, ferry__net_ep *e, ferry__net_op *op,
                           const struct fi_cq_tagged_entry *ent, fi_addr_t src);
/* Posts the eager receive ring of every endpoint. */
ferry_status ferry__net_post_receives(ferry__net *net);
void *ferry__net_progress_main(void *arg);
/* After the thread stopped: completes every op still owned with FERRY_ESHUTDOWN and frees it. */
void ferry__net_fail_all(ferry__net *net);

#endif
