/* Private to the fabric layer (net.c opens endpoints and peers; net_queue.c posts ops, per peer,
   behind windows and queues; net_progress.c drives completions; net_message.c turns messages
   into ops and back; net_auth.c derives the per-pair secrets; net_doorbell.h wakes shm peers).

   Wire conventions, shared by these files (docs/wire.md, "Frame header"):
   - Every untagged message carries 32 bits of remote CQ data: bits 31..30 the kind (eager
     message or large-message announcement), bits 29..0 the sender's rank, and starts with a
     16-byte frame header: the sender's cookie for this receiver, a value derived once from the
     sender's secret (published only through the authenticated store) and the receiver's rank.
     A receiver checks the claimed rank against the source address (when the provider offers
     FI_SOURCE) and the cookie against the one it derived for that rank, in constant time,
     before it looks at anything else; a message failing either is dropped and counted, and
     marks nobody dead.
   - Eager messages (frame + payload <= FERRY__NET_EAGER_MAX) land in a ring of posted receive
     buffers.
   - Larger messages: an announcement (frame, total length, sequence number, part lengths)
     followed by one tagged send per part of at most iov_limit iovecs. Tag layout for those
     parts before keying: bit 63 set (FERRY__NET_TAG_INTERNAL), bits 62..6 the sender's sequence
     number, bits 5..0 the part index. Users' bulk tags have bit 63 clear.
   - Every tag on the wire is keyed: bits 62..0 of the tag are replaced by SipHash-2-4 of the
     whole tag under the pair's tag key (sender -> receiver), bit 63 kept, so nobody without
     the sender's secret can aim a tagged send at a posted receive. Matching by peer uses
     FI_DIRECTED_RECV, so no rank bits are taken from the tag. */
#ifndef FERRY_TRANSPORT_NET_INTERNAL_H
#define FERRY_TRANSPORT_NET_INTERNAL_H

#include <pthread.h>
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <stdatomic.h>
#include <string.h>

#include "transport/net.h"
#include "transport/net_doorbell.h"

#define FERRY__NET_MAX_EPS 2
#define FERRY__NET_EAGER_MAX ((size_t)64 * 1024) /* an eager receive buffer: frame + payload */
#define FERRY__NET_RX_BUFS 32
#define FERRY__NET_TAG_INTERNAL (UINT64_C(1) << 63)
#define FERRY__NET_MAX_PARTS 64
#define FERRY__NET_PART_BITS 6
#define FERRY__NET_INLINE_IOV 4

/* Authentication. */
#define FERRY__NET_SECRET_BYTES 16
#define FERRY__NET_FRAME_BYTES 16 /* the frame header: the sender's cookie */
#define FERRY__NET_FRAME_MERGE 48 /* a first iovec this small travels in the header's buffer */

/* Flow control. At most this many ops per peer and direction are with the provider at once, so
   a stalled peer holds a bounded share of the endpoint's transmit and receive slots; the rest
   wait in the peer's own queue, bounded by queue_max (FERRY_NET_QUEUE_MAX). */
#define FERRY__NET_WINDOW 256
#define FERRY__NET_QUEUE_MAX_DEFAULT ((size_t)1 << 16)
#define FERRY__NET_MAX_MESSAGE_DEFAULT ((uint64_t)1 << 30)
#define FERRY__NET_RECV_TIMEOUT_DEFAULT_MS 60000
/* After -FI_EAGAIN a peer's queue is retried after a pause that doubles up to the maximum. */
#define FERRY__NET_BACKOFF_MIN_NS 20000LL
#define FERRY__NET_BACKOFF_MAX_NS 2000000LL

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
    bool is_posted;                 /* with the provider: counted in its peer's window */
    bool is_cancelling;             /* fi_cancel asked; the completion carries cancel_rc */
    bool is_recv;                   /* aggregate: a large receive (deliver) or a large send */
    struct ferry__net_op *prev, *next;
    struct ferry__net_op *qnext;    /* the queue it waits in */
    ferry__net_ep *ep;
    int peer;                       /* rank, or -1 for the eager receive buffers */
    fi_addr_t addr;
    uint64_t tag;                   /* keyed (as on the wire) */
    uint64_t data;                  /* remote CQ data for FERRY__OP_SEND */
    size_t n_iov;
    struct iovec *iov;              /* iov_inline or allocated */
    struct iovec iov_inline[FERRY__NET_INLINE_IOV];
    void *owned;                    /* bounce, receive or reassembly buffer freed with the op */
    size_t len;
    long long deadline_ns;          /* tagged receives: expired (cancelled) after this */
    ferry__net_done done;           /* user callback (sends, bulk) or NULL */
    void *arg;
    struct ferry__net_op *parent;   /* aggregate this op is a part of */
    atomic_size_t remaining;        /* aggregate: parts not yet complete */
    _Atomic int agg_rc;             /* aggregate: first failure among its parts */
    ferry_status fail_rc;           /* set when the op sits on net->failed */
    ferry_status cancel_rc;         /* what a cancelled op completes with */
    unsigned char frame[FERRY__NET_FRAME_BYTES + FERRY__NET_FRAME_MERGE]; /* untagged sends */
} ferry__net_op;

/* Ops waiting to be posted, in order (net->lock). */
typedef struct {
    ferry__net_op *head, *tail;
    size_t len;
    bool is_busy;                   /* a drainer is posting the op it took off the head */
} ferry__net_queue;

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
    ferry__net_queue ring_queue;    /* eager receive buffers whose repost met -FI_EAGAIN */
};

/* What we know of one rank. The keys are derived once in ferry__net_set_peers (net_auth.c);
   the queues, windows and backoff are guarded by net->lock. */
typedef struct {
    ferry__net_ep *ep;              /* NULL before ferry__net_set_peers */
    fi_addr_t addr;
    ferry__net_peer_bell bell;      /* shm peers: ring it after posting while it sleeps */
    unsigned char cookie_out[FERRY__NET_FRAME_BYTES]; /* our frames to it carry this */
    unsigned char cookie_in[FERRY__NET_FRAME_BYTES];  /* its frames to us must carry this */
    uint64_t tag_out[2], tag_in[2]; /* SipHash keys of tags we send it / it sends us */
    ferry__net_queue queue[2];      /* [0] tagged receives from it, [1] sends to it */
    unsigned posted[2];             /* ops of each direction with the provider */
    size_t n_linked;                /* its ops on net->ops */
    long long retry_ns;             /* after -FI_EAGAIN: when to post again (0: now) */
    long long backoff_ns;
    bool is_active;                 /* on net's active list: a queue may drain */
    int next_active;
    atomic_bool is_dead;            /* its queues are dropped and new ops refused */
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
    unsigned char secret[FERRY__NET_SECRET_BYTES]; /* ours, fresh per open; in the blob */

    /* Limits (ferry__net_options). */
    uint64_t max_message_bytes;
    size_t queue_max;
    long long recv_timeout_ns;      /* 0: receives never expire */

    pthread_mutex_t lock;           /* guards ops, failed, the queues, is_closing, n_posting */
    pthread_cond_t posted_cond;     /* n_posting dropped to 0 (close waits for it) */
    ferry__net_op *ops;
    ferry__net_op *failed;          /* ops that failed off the progress thread, to finish on it */
    int active_head, active_tail;   /* peers whose queues may drain (-1: none) */
    bool is_closing;
    int n_posting;                  /* threads inside a provider post call right now */
    size_t n_sends;                 /* linked send ops (close lets them drain briefly) */
    size_t n_trecv;                 /* linked tagged receives (the expiry scan skips at 0) */
    long long next_maintain_ns;     /* progress thread: next dead-peer and expiry scan */
    atomic_uint_fast64_t seq;       /* large-message sequence numbers */
    atomic_int n_waiting;           /* ops on a queue or on failed: polls skip draining at 0 */

    pthread_t thread;
    bool is_started;
    atomic_bool stop;
    atomic_bool wake_pending;       /* ferry__net_wake asked for an on_tick */
    atomic_bool is_sleeping;        /* the progress thread is (about to be) in epoll_wait */
    int wake_fd;                    /* eventfd: ferry__net_wake and close */
    ferry__net_bell bell;
    int epoll_fd;
    atomic_uint_fast64_t messages_in, messages_out, bytes_in, bytes_out;
    atomic_uint_fast64_t dropped, dropped_auth, dropped_refused, expired, queue_full;

    /* Waiting threads may drive the fabric themselves (ferry__net_drive_*): whoever polls the
       completion queues holds poll_lock, and while `drivers` > 0 the progress thread stays out
       of them (it only runs ticks), so two threads never spin on one process's queues. */
    pthread_mutex_t poll_lock;
    atomic_int drivers;
    _Atomic long long driven_ns;    /* when a driving thread last polled */
};

/* The one place libfabric's codes become ferry's (-FI_E* or 0 in; never logs). */
ferry_status ferry__net_status_from_fi(int fi_rc);
/* Records "<what> on <provider>: <fi_strerror>" and returns the mapped status. */
ferry_status ferry__net_fail_fi(const ferry__net_ep *ep, int fi_rc, const char *what);

/* Authentication (net_auth.c). A fresh secret for this process; FERRY_ETRANSPORT when the
   kernel gives no randomness. */
ferry_status ferry__net_auth_init(ferry__net *net);
/* Derives the cookies and tag keys between us (self) and `rank`, whose secret is given. */
void ferry__net_auth_pair(ferry__net *net, int self, int rank,
                          const unsigned char peer_secret[FERRY__NET_SECRET_BYTES]);
/* A tag as it goes on the wire: bit 63 kept, bits 62..0 SipHash-2-4(key, tag). */
uint64_t ferry__net_keyed_tag(const uint64_t key[2], uint64_t tag);
/* SipHash-2-4 of one little-endian 64-bit word (exposed for its test vector). */
uint64_t ferry__net_siphash_u64(const uint64_t key[2], uint64_t word);
/* Frame header check: constant time in the bytes compared. */
static inline bool ferry__net_cookie_ok(const unsigned char *got, const unsigned char *want)
{
    uint64_t a[2], b[2];
    memcpy(a, got, sizeof a);
    memcpy(b, want, sizeof b);
    return ((a[0] ^ b[0]) | (a[1] ^ b[1])) == 0;
}
/* The checks of an incoming untagged message, apart from any fabric call so a fuzzer can drive
   them (net_message.c). check_sender: the rank that sent it, or -1 (dropped and counted): the
   claimed rank must be a member, be the source address where the provider reports one, and the
   frame carry that rank's cookie for us. parse_announcement: a large-message announcement's
   total, sequence and parts, all checked (false: malformed, or too_large past the cap). */
int ferry__net_check_sender(ferry__net *net, ferry__net_ep *e, const struct fi_cq_tagged_entry *ent,
                            fi_addr_t src, const unsigned char *frame);
typedef struct {
    uint64_t total, seq;
    size_t n_parts;
    uint64_t parts[FERRY__NET_MAX_PARTS];
    bool too_large;
} ferry__net_announcement;
bool ferry__net_parse_announcement(const unsigned char *c, size_t len, size_t max_message_bytes,
                                   ferry__net_announcement *out);
/* Wipes every secret the net holds (close). */
void ferry__net_auth_wipe(ferry__net *net);

/* Operations (net_queue.c). */
ferry__net_op *ferry__net_op_new(ferry__op_kind kind, ferry__net_ep *ep, int peer);
void ferry__net_op_free(ferry__net_op *op);
/* Posts op (any thread), or queues it behind its peer's queue, window or -FI_EAGAIN. OK also
   when queued; an error means op was neither posted nor kept (the caller frees it):
   FERRY_ETRANSPORT (the peer is down), FERRY_ENOMEM (its queue is full; names the bound and
   the peer), FERRY_ESHUTDOWN, or a failed post. Internal ops pass is_internal to be accepted
   while closing and past the queue bound. */
ferry_status ferry__net_submit(ferry__net *net, ferry__net_op *op, bool is_internal);
/* Lets the progress thread finish op with rc (op was not posted; any thread). */
void ferry__net_fail_later(ferry__net *net, ferry__net_op *op, ferry_status rc);
/* Wakes the progress thread if it sleeps (no on_tick implied). */
void ferry__net_kick(ferry__net *net);
/* Under net->lock: takes a completed op off net->ops and out of its peer's window. */
void ferry__net_unlink(ferry__net *net, ferry__net_op *op);
/* Posts what waits in queues (peers' whose window and backoff allow, the receive ring) and
   finishes ops failed off the progress thread; returns how many ops moved. */
int ferry__net_drain(ferry__net *net);
/* How long the progress thread may sleep, given the tick's timeout. */
long long ferry__net_sleep_limit(ferry__net *net, long long timeout_ns);
/* Marks `peer` down: its queued ops finish with FERRY_ETRANSPORT on the next drain, its posted
   tagged receives are cancelled, and later ops to it are refused. True the first time. */
bool ferry__net_mark_dead(ferry__net *net, int peer);
/* Progress thread, every tick: asks the agent which peers holding ops are dead and cancels
   tagged receives past their deadline (about ten times a second). */
void ferry__net_maintain(ferry__net *net, long long now_ns);
/* After the thread stopped: completes every op still owned with FERRY_ESHUTDOWN and frees it. */
void ferry__net_fail_all(ferry__net *net);

/* Completion (net_progress.c). */
/* Runs op's callback (or its aggregate's) with rc and frees it; op is unlinked. */
void ferry__net_finish_op(ferry__net *net, ferry__net_op *op, ferry_status rc, const char *why);
/* Reports rank `peer` failed to the agent when rc is FERRY_ETRANSPORT, the first time only
   (the why is the one report of the failure), and marks it down. */
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

#endif
