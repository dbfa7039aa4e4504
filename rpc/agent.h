/* The RPC agent object: one per ferry_init_rpc. Everything the torch-style calls touch lives
   here (no other hidden globals), so a test could run two agents in one process.

   Threads: the net's progress thread decodes incoming messages, completes response futures and
   expires timeouts; the agent's pool runs incoming calls and then-callbacks; any user thread may
   start calls. `lock` guards the pending-call table and the timeout heap; counters are atomic. */
#ifndef FERRY_RPC_AGENT_H
#define FERRY_RPC_AGENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/pool.h"
#include "core/refcount.h"
#include "ferry/rpc.h"
#include "rpc/wire.h"
#include "transport/net.h"
#include "transport/rendezvous.h"

typedef struct ferry__agent ferry__agent;

/* A call waiting for its response. */
typedef struct ferry__pending {
    struct ferry__pending *next; /* hash chain */
    size_t heap_idx;             /* position in the timeout heap, SIZE_MAX when not in it */
    uint64_t id;
    int dst;
    long long deadline_ns; /* 0 = none */
    double timeout_s;
    ferry_future *future;
    char fn[FERRY_MAX_NAME_LEN];
} ferry__pending;

/* What a worker knows of a peer (its rank is its index in agent->workers). */
typedef struct {
    char *name;
    int pid;          /* for the liveness check of same-host peers */
    bool same_host;
    atomic_bool dead;
    atomic_llong last_ping_ns; /* heartbeat.c: when we last pinged it */
} ferry__worker;

/* Higher modules (rref/, autograd/) handle their own message types through this table. The
   handler runs on a pool thread (an inline one, below, where the request was read), owns
   nothing of `m` but may steal its values (set them NULL), and returns the response: FERRY_OK
   with *result (or NULL for none), or an error status with the thread's last error as the
   message. reply=false messages get no response. */
typedef ferry_status (*ferry__msg_handler)(ferry__agent *agent, int src, ferry__msg *m,
                                           ferry_value **result, void *ctx);

/* Modules above rpc (rref/, autograd/) plug into every agent through this table. They register
   once per process from a constructor (the static library is one prelinked object, so a module
   in it is always linked) and get a state slot in each agent. Every hook may be NULL. */
typedef struct ferry__agent_module {
    const char *name;
    /* After the peers are known, before the init barrier: set *state, install handlers. */
    ferry_status (*start)(ferry__agent *agent, void **state);
    /* Work that graceful shutdown must wait for on this worker (e.g. RRef messages in flight). */
    int64_t (*busy)(ferry__agent *agent, void *state);
    /* Graceful shutdown, once every worker is idle, before the final barrier (e.g. release
       the user references still held, so owners can free their values). */
    ferry_status (*quiesce)(ferry__agent *agent, void *state, double timeout_s);
    /* After the pool drained and the fabric closed: free the state. */
    void (*stop)(ferry__agent *agent, void *state);
    /* Pool thread, before a call runs: a future that completes when the call may run (e.g. every
       RRef in its arguments is confirmed by its owner), or NULL to run now. */
    ferry_future *(*before_call)(ferry__agent *agent, void *state, int src, ferry__msg *m);
} ferry__agent_module;

#define FERRY__MAX_MODULES 8

/* Registers a module for every agent started afterwards. Not thread-safe: constructors only. */
void ferry__agent_register_module(const ferry__agent_module *module);
/* The state the module's start hook set in this agent (NULL if none). */
void *ferry__agent_module_state(ferry__agent *agent, const ferry__agent_module *module);

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
    ferry__wire_codec codec; /* limits, and the RRef hooks rref/ sets when it starts */

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
    long long last_liveness_ns; /* progress thread only */
    atomic_int pings_in_flight;

    struct {
        ferry__msg_handler fn;
        void *ctx;
    } handlers[FERRY__MSG_TYPE_COUNT];
    struct {
        ferry__msg_handler fn;
        void *ctx;
    } inline_handlers[FERRY__MSG_TYPE_COUNT];
    void *module_state[FERRY__MAX_MODULES];
    bool module_started[FERRY__MAX_MODULES];
};

enum ferry__agent_state { FERRY__AGENT_STARTING, FERRY__AGENT_RUNNING, FERRY__AGENT_STOPPING,
                          FERRY__AGENT_STOPPED };

/* The process-wide agent, retained (release with ferry__agent_release), or NULL with
   FERRY_ESHUTDOWN "RPC has not been initialized...". */
ferry__agent *ferry__agent_get(void);
void ferry__agent_release(ferry__agent *agent);

/* Rank of a worker name (NULL = self); -1 + FERRY_EUNKNOWN_WORKER with torch's message. */
int ferry__agent_rank_of(ferry__agent *agent, const char *name);

/* Sends a request of any type to `dst` and returns the future of its response. `m`'s values
   are borrowed; id, src and timeout are filled here. timeout as in ferry_rpc_async. */
ferry_future *ferry__agent_request(ferry__agent *agent, int dst, ferry__msg *m, double timeout);

/* Installs a handler for a message type (before init completes, from the module's setup). */
void ferry__agent_set_handler(ferry__agent *agent, ferry__msg_type type, ferry__msg_handler fn,
                              void *ctx);

/* Installs a handler tried first, on the progress thread right where the request was read, so
   a cheap answer costs no hand-off to the pool. It must not block (no waiting on futures or
   locks held across blocking work); FERRY_EAGAIN means "cannot answer without blocking" and
   leaves `m` untouched, and the request then goes to the ordinary handler on the pool (which must
   be installed too). Any other status is the response, as for an ordinary handler. */
void ferry__agent_set_inline_handler(ferry__agent *agent, ferry__msg_type type,
                                     ferry__msg_handler fn, void *ctx);

/* Liveness of peers on other hosts (heartbeat.c). While calls are waiting, or while `all` (the
   graceful shutdown rounds), every live peer on another host gets a ping at most once a
   second: a ping to a dead process fails in the transport, which fails its calls at once. */
void ferry__agent_ping_peers(ferry__agent *agent, long long now_ns, bool all);
ferry_status ferry__agent_ping_handler(ferry__agent *agent, int src, ferry__msg *m,
                                       ferry_value **result, void *ctx);

/* Internal pieces of the agent shared between its files. */
int ferry__agent_module_count(void);
const ferry__agent_module *ferry__agent_module_at(int i);
/* Encodes and sends `m` (its values borrowed; src and dst are filled here). The encoded form holds
   its own tensor references until the fabric is done with them. FERRY_OK once every part is
   handed to the fabric; else the encoder's FERRY_EINVAL/FERRY_ENOMEM, FERRY_EINVAL for a message
   too large to frame, FERRY_ESHUTDOWN, or the transport's code. */
ferry_status ferry__agent_send_msg(ferry__agent *agent, int dst, ferry__msg *m);
/* The net's handlers (ctx is the agent): progress thread or a thread driving the fabric. */
void ferry__agent_on_message(void *ctx, int src, const void *buf, size_t len);
void ferry__agent_on_tick(void *ctx, long long now_ns);
void ferry__agent_on_peer_error(void *ctx, int peer, ferry_status rc, const char *why);
/* Completes every waiting call's future with rc and `why` (borrowed). */
void ferry__agent_fail_all_pending(ferry__agent *agent, ferry_status rc, const char *why);
/* `timeout`, or the agent's default when it is FERRY_TIMEOUT_DEFAULT (negative). */
double ferry__agent_effective_timeout(ferry__agent *agent, double timeout);

#endif
