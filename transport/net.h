/* The fabric layer: libfabric RDM endpoints (tcp;ofi_rxm to other hosts, shm to this host), one
   progress thread that drives every completion queue and blocks on the fabric's wait object when
   idle, whole-message delivery of any size, and tagged bulk transfers straight into/out of tensor
   storage. Peers are ranks. Every message is authenticated (docs/wire.md, "Frame header"): each
   process draws a secret at open and publishes it in its address blob, which travels only
   through the rendezvous store, so a process that never joined cannot make a message or a
   tagged transfer that a member accepts; such messages are dropped and counted and mark nobody
   dead. Members can impersonate each other: they are trusted alike. Nothing is encrypted.
   Sends and tagged receives are queued per peer behind a window of posted ops, so a stalled
   peer holds up only its own traffic; a peer found dead has its queues failed.

   Threads: ferry__net_send / _send_bulk / _recv_bulk may be called from any thread. Every
   callback (on_message, on_tick, on_peer_error, done) runs on the progress thread, or on a
   thread driving the fabric (ferry__net_drive_*), one at a time; it must not block, and must not
   call ferry__net_close. */
#ifndef FERRY_TRANSPORT_NET_H
#define FERRY_TRANSPORT_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "ferry/error.h"

typedef struct ferry__net ferry__net;

typedef struct {
    /* A whole message from rank `src` (envelope + inline bytes, exactly as sent). `buf` is valid
       only during the call. */
    void (*on_message)(void *ctx, int src, const void *buf, size_t len);
    /* At least every tick_ms while running, and soon after ferry__net_wake: expire timeouts. */
    void (*on_tick)(void *ctx, long long now_ns);
    /* Rank `peer` failed (a send or receive to it errored, or it went silent): fail its calls. */
    void (*on_peer_error)(void *ctx, int peer, ferry_status rc, const char *why);
    /* Optional: whether the owner has declared `peer` dead (a pid check, a missed heartbeat).
       Asked on the progress thread about peers holding ops, about ten times a second; a dead
       peer's queued ops fail with FERRY_ETRANSPORT and its posted receives are cancelled. */
    bool (*is_peer_dead)(void *ctx, int peer);
    void *ctx;
} ferry__net_handlers;

typedef struct {
    const char *transport;   /* NULL = auto; "tcp", "shm" or a libfabric provider name */
    const char *iface;       /* interface for tcp (FERRY_IFACE); NULL = the one reaching master_addr */
    const char *master_addr; /* used to pick the interface; may be NULL */
    int tick_ms;             /* on_tick period; default 10 */
    /* Limits; 0 picks the default. */
    uint64_t max_message_bytes; /* largest message sent or announced to us; 1 GiB */
    size_t queue_max;        /* ops waiting for one peer and direction; 65536 */
    long long recv_timeout_ms; /* a tagged receive not complete by then is cancelled; 60000;
                                  negative: never */
    /* Every rank runs on this host (the launcher says so): with transport auto only shm is
       opened, and tcp only when shm cannot be. */
    bool peers_all_local;
} ferry__net_options;

/* Opens the endpoints (not yet running). NULL + FERRY_ETRANSPORT naming the provider and cause. */
ferry__net *ferry__net_open(const ferry__net_options *opts, const ferry__net_handlers *handlers);

/* The blob this process publishes at rendezvous: host identity (hostname + boot id) and one
   address per open endpoint. Borrowed; lives as long as the net. */
ferry_status ferry__net_local_address(ferry__net *net, const void **blob, size_t *len);

/* Installs every peer (blobs indexed by rank; blobs[self] is ours), choosing per peer the endpoint
   both sides have: shm for same-host peers, tcp otherwise, or the forced transport. FERRY_EINVAL
   for a malformed blob, FERRY_ETRANSPORT when no common transport exists (names the peer). */
ferry_status ferry__net_set_peers(ferry__net *net, int self_rank, int world_size,
                                  const void *const *blobs, const size_t *lens);

/* Posts the eager receive buffers and starts the progress thread. FERRY_EINVAL (peers not set,
   or already started), FERRY_ENOMEM, or the code of a failed post or thread start. */
ferry_status ferry__net_start(ferry__net *net);

/* Name of the provider used to reach `peer` ("shm", "tcp;ofi_rxm", ...), for logs and bench. */
const char *ferry__net_peer_provider(ferry__net *net, int peer);

/* Largest message to `peer` that its provider moves by plain copy (shm's inject protocol);
   bigger ones take a slower protocol (shm: a cross-process read plus a reply the sender must
   see), so callers may prefer several small messages. 0 when the provider has no such step. */
size_t ferry__net_peer_copy_max(ferry__net *net, int peer);

/* How many ops may wait for one peer (queue_max): a message needing more is refused. */
size_t ferry__net_queue_max(const ferry__net *net);

/* done(arg, rc) runs exactly once on the progress thread when FERRY_OK was returned; never when an
   error is returned. rc is FERRY_OK, FERRY_ETRANSPORT (failed, or the peer is dead),
   FERRY_ETIMEDOUT (a tagged receive expired: recv_timeout_ms) or FERRY_ESHUTDOWN (closing). */
typedef void (*ferry__net_done)(void *arg, ferry_status rc);

/* Sends one message gathered from iov (the bytes are not copied: they must stay valid until done
   runs). Any total size up to max_message_bytes: the receiver's on_message gets it whole.
   Sending to self works. FERRY_EINVAL (bad rank, too large), FERRY_ETRANSPORT (the peer is
   dead), FERRY_ESHUTDOWN, FERRY_ENOMEM (no memory, or the peer's send queue is full: the
   message names the bound). */
ferry_status ferry__net_send(ferry__net *net, int dst, const struct iovec *iov, size_t n_iov,
                             ferry__net_done done, void *arg);

/* Bulk transfer of `len` bytes matched by (peer, tag): the sender's bytes land directly in the
   buffer the receiver posted. Tags are chosen by the caller, unique among the pair's transfers
   in flight; the top bit is reserved. On the wire they are keyed with the pair's secret, so
   an outsider cannot match them. Either side may start first; a receive not complete within
   recv_timeout_ms fails with FERRY_ETIMEDOUT. Codes as ferry__net_send. */
ferry_status ferry__net_send_bulk(ferry__net *net, int dst, uint64_t tag, const void *data,
                                  size_t len, ferry__net_done done, void *arg);
ferry_status ferry__net_recv_bulk(ferry__net *net, int src, uint64_t tag, void *buf, size_t len,
                                  ferry__net_done done, void *arg);

/* Makes the progress thread call on_tick soon (a new, earlier deadline exists). Any thread. */
void ferry__net_wake(ferry__net *net);

/* A thread waiting for a reply may poll the fabric itself, so the reply wakes nobody (DESIGN
   section 4): between begin and end, poll runs one pass over the completion queues on the
   calling thread (callbacks then run on it too) and the progress thread keeps out of them; it
   resumes within a fraction of a millisecond after the last driver ends. Any thread but the
   progress thread; begin/end pair up. poll returns how many completions its pass handled (0
   when another driver was polling). */
void ferry__net_drive_begin(ferry__net *net);
int ferry__net_drive_poll(ferry__net *net);
void ferry__net_drive_end(ferry__net *net);

/* Counters. Drops are also logged at debug (FERRY_LOG=debug). */
typedef struct {
    uint64_t messages_in, messages_out, bytes_in, bytes_out;
    uint64_t dropped_unknown_source;  /* claimed rank not a member, or not the source address */
    uint64_t dropped_unauthenticated; /* no frame header, or not the claimed sender's cookie */
    uint64_t dropped_refused;         /* authentic but refused: a malformed or oversized
                                         announcement, or no memory for it */
    uint64_t expired_receives;        /* tagged receives cancelled after recv_timeout_ms */
    uint64_t queue_full;              /* ops refused because a peer's queue was full */
} ferry__net_stats;
void ferry__net_get_stats(ferry__net *net, ferry__net_stats *out);

/* Stops the progress thread and closes the endpoints; every pending operation's done runs with
   FERRY_ESHUTDOWN first. Not from the progress thread. NULL is fine. */
void ferry__net_close(ferry__net *net);

#endif
