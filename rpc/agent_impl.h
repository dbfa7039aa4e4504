/* The RPC agent object, private to rpc/: one per ferry_init_rpc. Everything the torch-style
   calls touch lives here (no other hidden globals), so a test could run two agents in one
   process. Modules above rpc see it only through rpc/module.h.

   Threads: the net's progress thread decodes incoming messages, completes response futures and
   expires timeouts; the agent's pool runs incoming calls and then-callbacks; any user thread may
   start calls. `lock` guards the pending-call table and the timeout heap; counters are atomic. */
#ifndef FERRY_RPC_AGENT_IMPL_H
#define FERRY_RPC_AGENT_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/pool.h"
#include "core/refcount.h"
#include "ferry/rpc.h"
#include "rpc/device_map.h"
#include "rpc/module.h"
#include "rpc/wire.h"
#include "transport/net.h"
#include "transport/rendezvous.h"

/* A call waiting for its response. */
typedef struct ferry__pending {
    struct ferry__pending *next; /* hash chain */
    size_t heap_idx;             /* position in the timeout heap, SIZE_MAX when not in it */
    uint64_t id;
    int dst;
    long long deadline_ns; /* 0 = none */
    long long start_ns;    /* when it was sent: the heartbeat pings peers with old calls */
    double timeout_s;
    ferry_future *future;
    char fn[FERRY_MAX_NAME_LEN];
} ferry__pending;

/* What a worker knows of a peer (its rank is its index in agent->workers). */
typedef struct {
    char *name;
    int pid;          /* for the liveness check of same-host peers */
    bool same_host;
    atomic_bool dead;   /* gone for good: a send failed, or its process exited */
    atomic_bool silent; /* missed its heartbeats; cleared when it answers again */
    atomic_llong silent_since_ns;
    atomic_llong last_ping_ns;     /* liveness.c: when we last pinged it */
    atomic_llong answered_sent_ns; /* when the newest ping it answered was sent */
    int pidfd;                 /* liveness.c (progress thread): -1 = none, use /proc */
    bool pidfd_tried;
    long long stopped_since_ns; /* same host: /proc showed it stopped since (progress thread) */
} ferry__worker;

typedef struct {
    ferry__msg_handler fn;
    void *ctx;
} ferry__handler_slot;

struct ferry__agent {
    ferry__ref ref;
    char *name;
    int rank, world_size;
    ferry__worker *workers;
    _Atomic double default_timeout_s;

    pthread_mutex_t pool_lock; /* guards pool_open: no submit after the pool starts draining */
    bool pool_open;
    ferry__pool *pool;
    pthread_rwlock_t net_lock; /* senders hold it shared; shutdown takes it to clear `net` */
    ferry__net *net;
    ferry__rendezvous *rdv;
    bool rank0_hosts_store; /* rank 0 serves a TCP rendezvous store (set at init) */
    ferry__wire_codec codec; /* limits, and the RRef hooks a module sets when it starts */
    ferry__device_maps device_maps; /* every worker's devices and maps (set at init) */
    const char **device_names;      /* device_maps.names: the worker table's names */

    pthread_mutex_t lock; /* guards pending, heap, state transitions */
    ferry__pending **pending; /* hash buckets keyed by id, chained */
    size_t pending_cap, pending_len;
    ferry__pending **heap;    /* min-heap on deadline_ns of the calls that have one */
    size_t heap_len, heap_cap;

    atomic_uint_fast64_t next_id;
    atomic_int client_active;  /* calls sent, response not yet received */
    atomic_int server_active;  /* calls received, response not yet sent */
    atomic_int state;          /* ferry__agent_state */
    atomic_uint_fast64_t dropped_late_responses;
    atomic_uint_fast64_t dropped_foreign_responses; /* answers from a worker not called */
    long long last_liveness_ns; /* progress thread only */
    long long last_tick_ns;     /* progress thread only */
    long long last_ping_scan_ns; /* progress thread only */
    atomic_llong stall_end_ns;  /* when this process last resumed from a stall (SIGSTOP) */
    atomic_int pings_in_flight;
    /* Options fixed at init (liveness.c, builtins.c). */
    long long heartbeat_period_ns; /* 0 = no heartbeat */
    int heartbeat_misses;
    long long builtin_max_bytes; /* 0 = no cap */

    /* Requests answered later, when a future completes (serve.c: fetches of values not there
       yet), with their deadlines; closed (and failed) when the agent stops. */
    pthread_mutex_t later_lock;
    struct ferry__later *later;
    bool later_closed;
    long long later_next_ns; /* earliest deadline among them, 0 = none */

    ferry__handler_slot handlers[FERRY__MSG_TYPE_COUNT];
    ferry__handler_slot inline_handlers[FERRY__MSG_TYPE_COUNT];
    void *module_state[FERRY__MAX_MODULES];
    bool module_started[FERRY__MAX_MODULES];
    /* The started modules that have each hook, in registration order, so the hot paths walk
       only the hooks that exist. Set before the fabric starts; read-only after. */
    struct {
        int on_send[FERRY__MAX_MODULES], on_receive[FERRY__MAX_MODULES],
            before_call[FERRY__MAX_MODULES], around[FERRY__MAX_MODULES],
            tick[FERRY__MAX_MODULES];
        int n_on_send, n_on_receive, n_before_call, n_around, n_tick;
    } hooks;
};

enum ferry__agent_state { FERRY__AGENT_STARTING, FERRY__AGENT_RUNNING, FERRY__AGENT_STOPPING,
                          FERRY__AGENT_STOPPED };

/* Heartbeat (liveness.c). A peer with a call waiting for a period or more, every silent peer
   (to see it come back) and, while `all` (the graceful shutdown rounds), every peer gets a ping
   at most once a period. */
void ferry__agent_ping_peers(ferry__agent *agent, long long now_ns, bool all);
/* True when calls to `peer` fail at once: it is dead or silent. */
bool ferry__agent_peer_unreachable(ferry__agent *agent, int peer);
/* ", which hosts the rendezvous store" for rank 0 when it serves a TCP store (seen from the
   others), else "": what messages about a peer add after its rank. */
const char *ferry__agent_peer_role(const ferry__agent *agent, int peer);
/* Reads the heartbeat options (and FERRY_HEARTBEAT_* overrides) into the agent. FERRY_OK or
   FERRY_EINVAL naming the bad value. */
ferry_status ferry__agent_liveness_init(ferry__agent *agent, const ferry_rpc_options *opts);
/* Closes what the liveness checks hold (pidfds); after the progress thread stopped. */
void ferry__agent_liveness_free(ferry__agent *agent);

/* Requests answered later (serve.c): those whose deadline passed are answered with
   FERRY_ETIMEDOUT (progress thread tick); at stop all are answered with `rc` and no more are
   taken. */
void ferry__agent_expire_later(ferry__agent *agent, long long now_ns);
void ferry__agent_fail_later(ferry__agent *agent, ferry_status rc, const char *why);
ferry_status ferry__agent_ping_handler(ferry__agent *agent, int src, ferry__msg *m,
                                       ferry_value **result, void *ctx);

/* Internal pieces of the agent shared between its files. */
/* agent_access.c: frees an agent whose last reference went (agent.c stops it first); makes it
   the process-wide agent (false if there is one already); clears that pointer if it is `a`
   (true then, and its reference is dropped); whether there is one. */
void ferry__agent_free(ferry__agent *agent);
bool ferry__agent_publish(ferry__agent *agent);
bool ferry__agent_unpublish(ferry__agent *agent);
bool ferry__agent_running(void);
int ferry__agent_module_count(void);
const ferry__agent_module *ferry__agent_module_at(int i);
/* Fills agent->hooks from the started modules (module.c). */
void ferry__agent_index_hooks(ferry__agent *agent);
/* Runs every on_send hook over an outgoing message (`request`: what a response answers). */
ferry_status ferry__agent_hooks_send(ferry__agent *agent, int dst, ferry__msg *m,
                                     const ferry__msg *request);
ferry_status ferry__agent_hooks_receive(ferry__agent *agent, int src, ferry__msg *m);
/* before_request of every module (slots: FERRY__MAX_MODULES entries), and after_request in
   reverse order. */
void ferry__agent_hooks_begin(ferry__agent *agent, int src, const ferry__msg *m, void **slots);
void ferry__agent_hooks_end(ferry__agent *agent, void **slots);
/* Tells every started module that a peer is unreachable (module.c). */
void ferry__agent_hooks_peer_lost(ferry__agent *agent, int rank, bool gone, const char *why);
/* Every module's tick (progress thread, from the agent's tick). */
void ferry__agent_hooks_tick(ferry__agent *agent, long long now_ns);
/* Encodes and sends `m` (its values borrowed; src and dst are filled here) after the modules'
   on_send hooks (`request`: the request a response answers, else NULL). The encoded form holds
   its own tensor references until the fabric is done with them. FERRY_OK once every part is
   handed to the fabric; else the encoder's FERRY_EINVAL/FERRY_ENOMEM, FERRY_EINVAL for a message
   too large to frame, FERRY_ESHUTDOWN, or the transport's code. */
ferry_status ferry__agent_send_msg(ferry__agent *agent, int dst, ferry__msg *m,
                                   const ferry__msg *request);
/* A thread drives the fabric itself (a caller waiting for its reply, an idle pool thread):
   begin holds the net alive (net_lock shared) until end; poll is one pass, true when it moved
   something. */
void ferry__agent_drive_begin(ferry__agent *agent);
bool ferry__agent_drive_poll(ferry__agent *agent);
void ferry__agent_drive_end(ferry__agent *agent);
/* The net's handlers (ctx is the agent): progress thread or a thread driving the fabric. */
void ferry__agent_on_message(void *ctx, int src, const void *buf, size_t len);
void ferry__agent_on_tick(void *ctx, long long now_ns);
void ferry__agent_on_peer_error(void *ctx, int peer, ferry_status rc, const char *why);
/* call_end.c: completes a call that got no response (its pending entry, taken out of the table;
   freed here) with rc and `why` (borrowed; unused for FERRY_ETIMEDOUT, which says torch's
   words); every call to `dst` (-1: to anyone); every call whose deadline is <= now. */
void ferry__agent_finish_failed(ferry__agent *agent, ferry__pending *p, ferry_status rc,
                                const char *why);
void ferry__agent_fail_calls_to(ferry__agent *agent, int dst, ferry_status rc, const char *why);
void ferry__agent_fail_all_pending(ferry__agent *agent, ferry_status rc, const char *why);
void ferry__agent_expire_calls(ferry__agent *agent, long long now_ns);

#endif
