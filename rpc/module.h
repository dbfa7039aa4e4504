/* The interface modules above rpc (rref/, autograd/dist/, rref/object/, bindings) plug into.
   It is the only rpc header they include: the agent is opaque to them, and everything they may
   do with it is here. docs/architecture.md draws a call passing these hooks.

   A module is a static table registered once per process from a constructor (the static library
   is one prelinked object, so a module in it is always linked). Each agent started afterwards
   gives every module a state slot and calls its hooks; every hook may be NULL.

   Threads (the contract every hook relies on):
   - start, quiesce and stop run on the thread calling ferry_init_rpc / ferry_shutdown.
   - on_send runs on the thread sending the message: any user thread (requests), a pool thread
     or the thread that ran a function (responses).
   - on_receive runs where a message is read: the progress thread, or a user thread that waits
     on a future and drives the fabric meanwhile (see below).
   - before_request / after_request run on the thread that handles the request, immediately
     around the function or handler: a pool thread, the progress thread (non-blocking functions
     and inline handlers), or a waiting user thread that read the request while driving the
     fabric. In the last case the thread is borrowed: its own thread-local state (a current
     autograd context, the last error) belongs to the user code that is waiting. A module that
     keeps thread-local call state must install the callee's in before_request and restore the
     borrowed thread's in after_request; rpc itself saves and restores the thread's last error
     around every request it runs on a borrowed or progress thread.
   - peer_lost runs on the progress or liveness thread and must not block.
   - tick runs on the progress thread and must not block.
   - Handlers run on the pool; inline handlers on the progress or a driving thread, and must
     not block. */
#ifndef FERRY_RPC_MODULE_H
#define FERRY_RPC_MODULE_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/future.h"
#include "ferry/rpc.h"
#include "rpc/registry.h"
#include "rpc/wire.h"

typedef struct ferry__agent ferry__agent;

#define FERRY__MAX_MODULES 8

typedef struct ferry__agent_module {
    const char *name;
    /* After the peers are known, before the init barrier: set *state, install handlers and
       value codecs. An error fails ferry_init_rpc (stop is then called for modules started). */
    ferry_status (*start)(ferry__agent *agent, void **state);
    /* Work that graceful shutdown must wait for on this worker (e.g. RRef messages in flight). */
    int64_t (*busy)(ferry__agent *agent, void *state);
    /* Graceful shutdown, once every worker is idle, before the final barrier (e.g. release the
       user references still held, so owners can free their values). */
    ferry_status (*quiesce)(ferry__agent *agent, void *state, double timeout_s);
    /* After the pool drained and the fabric closed: free the state. */
    void (*stop)(ferry__agent *agent, void *state);

    /* Every outgoing request and response, before it is encoded. `request` is the request a
       response answers (NULL for a request). The hook may add entries to m->ext (a per-call
       slot the peer's on_receive reads: distributed autograd carries its context and message
       ids there). An error fails the send with that status. */
    ferry_status (*on_send)(ferry__agent *agent, void *state, int dst, ferry__msg *m,
                            const ferry__msg *request);
    /* Every incoming message once whole, before it is dispatched (requests) or completes its
       call (responses). An error rejects it: a request is answered with that error, a response
       fails its call. */
    ferry_status (*on_receive)(ferry__agent *agent, void *state, int src, ferry__msg *m);
    /* A request may only run once this future completes (e.g. every RRef in its arguments is
       confirmed by its owner), or NULL to run now. Called on the handling thread; it may be
       asked again and must not have side effects beyond creating the future. */
    ferry_future *(*before_call)(ferry__agent *agent, void *state, int src, ferry__msg *m);
    /* Around the handling of every incoming request, on the thread that handles it (a request
       an inline handler declines is handled again on the pool: the pair runs once for each
       try). *slot is the module's per-call slot (NULL on entry), handed back to after_request;
       the request itself may be gone by then (its reply sent, an async function's completion
       on another thread), so the slot keeps whatever after_request needs. */
    void (*before_request)(ferry__agent *agent, void *state, int src, const ferry__msg *m,
                           void **slot);
    void (*after_request)(ferry__agent *agent, void *state, void *slot);
    /* A peer became unreachable, after the calls waiting on it failed: `gone` when for good
       (its process is gone or the fabric failed), else it only missed its heartbeats and may
       come back. `why` names it and the cause. Runs on the progress or liveness thread: it must
       not block (hand work to the pool). It may run more than once for one peer. */
    void (*peer_lost)(ferry__agent *agent, void *state, int rank, bool gone, const char *why);
    /* About every 10 ms while the fabric runs (the progress thread's tick), for work a module
       put off (e.g. RRef deletions waiting for a message to ride along with). It may send
       requests; it must not block. */
    void (*tick)(ferry__agent *agent, void *state, long long now_ns);
} ferry__agent_module;

/* Registers a module for every agent started afterwards. Not thread-safe: constructors only. */
void ferry__agent_register_module(const ferry__agent_module *module);
/* The state the module's start hook set in this agent (NULL if none). */
void *ferry__agent_module_state(ferry__agent *agent, const ferry__agent_module *module);

/* ---- the agent ---- */

/* The process-wide agent, retained, or NULL with FERRY_ESHUTDOWN "RPC has not been
   initialized...". */
ferry__agent *ferry__agent_get(void);
ferry__agent *ferry__agent_retain(ferry__agent *agent);
void ferry__agent_release(ferry__agent *agent);

/* This worker's name (borrowed, lives as long as the agent), rank and the world size. */
const char *ferry__agent_name(const ferry__agent *agent);
int ferry__agent_rank(const ferry__agent *agent);
int ferry__agent_world_size(const ferry__agent *agent);
/* The name of the worker of that rank (borrowed), or NULL when out of range. */
const char *ferry__agent_worker_name(const ferry__agent *agent, int rank);
/* Rank of a worker name (NULL = self; "#<rank>" a rank); -1 + FERRY_EUNKNOWN_WORKER with
   torch's message and the names there are, or FERRY_EINVAL for a name no worker can have. */
int ferry__agent_rank_of(ferry__agent *agent, const char *name);
/* `timeout`, or the agent's default when it is FERRY_TIMEOUT_DEFAULT (negative). */
double ferry__agent_effective_timeout(ferry__agent *agent, double timeout);

/* Runs fn(arg) on the agent's pool. FERRY_OK; FERRY_ESHUTDOWN once the pool drains (fn does
   not run); FERRY_EAGAIN when its queue is full (fn does not run). */
ferry_status ferry__agent_submit(ferry__agent *agent, void (*fn)(void *), void *arg);

/* ---- messages ---- */

/* Sends a request of any type to `dst` and returns the future of its response. `m`'s values
   are borrowed; id, src and timeout are filled here. timeout as in ferry_rpc_async. NULL with
   FERRY_ESHUTDOWN, FERRY_ETRANSPORT (the peer is known dead, or the send failed), the
   encoder's FERRY_EINVAL, FERRY_ENOMEM, or an on_send hook's error. */
ferry_future *ferry__agent_request(ferry__agent *agent, int dst, ferry__msg *m, double timeout);

/* A module's handler for its own message types. It owns nothing of `m` but may steal its
   values (set them NULL), and returns the response: FERRY_OK with *result (or NULL for none),
   or an error status with the thread's last error as the message. Requests sent with no_reply
   get no response. */
typedef ferry_status (*ferry__msg_handler)(ferry__agent *agent, int src, ferry__msg *m,
                                           ferry_value **result, void *ctx);

/* Installs the pool handler for a message type (from the module's start hook). */
void ferry__agent_set_handler(ferry__agent *agent, ferry__msg_type type, ferry__msg_handler fn,
                              void *ctx);
/* Installs a handler tried first, right where the request was read, so a cheap answer costs no
   hand-off to the pool. It must not block (no waiting on futures or locks held across blocking
   work); FERRY_EAGAIN means "cannot answer without blocking" and leaves `m` untouched, and the
   request then goes to the pool handler (which must be installed too). */
void ferry__agent_set_inline_handler(ferry__agent *agent, ferry__msg_type type,
                                     ferry__msg_handler fn, void *ctx);

/* Called by a handler (pool or inline) for the request it is handling, when the answer is a
   future's outcome that is not there yet: the handler then returns FERRY_OK with no result,
   and the answer goes when `f` (retained) completes: its value when `with_value` (its error if
   it fails), else an empty response whatever its outcome. No thread waits meanwhile. After
   timeout_s (0: none) the request is answered with FERRY_ETIMEDOUT instead, and when the agent
   stops, with FERRY_ESHUTDOWN. FERRY_OK, or FERRY_EINVAL when not called from a handler, called
   twice, or f is NULL. */
ferry_status ferry__agent_reply_later(ferry__agent *agent, ferry_future *f, bool with_value,
                                      double timeout_s);

/* How values of a module-owned kind (RRefs) become descriptors on the wire and back, for this
   agent's messages only; the hooks' ctx is the module's. From the start hook. */
void ferry__agent_set_rref_codec(ferry__agent *agent, const ferry__wire_rref_hooks *hooks);

/* ---- running registered functions ---- */

/* The outcome of running a function: a synchronous one fills rc and (on FERRY_OK) value, a new
   reference or NULL for none; an async one leaves its future (new reference) in `pending`, or
   fails with rc. On failure the thread's last error holds the function's own message. */
typedef struct {
    ferry_status rc;
    ferry_value *value;
    ferry_future *pending;
} ferry__fn_result;

/* Runs the registered function `entry` (or m->fn looked up now when NULL) on this thread with
   m's args and kwargs, as a call to it would: absent arguments are empty, FERRY_EUNKNOWN_FUNCTION
   when there is none by that name. */
void ferry__agent_run_function(ferry__agent *agent, const ferry__msg *m,
                               const ferry__fn_entry *entry, ferry__fn_result *out);
/* Formats torch's wording of a failed function into buf: "function 'fn' on worker 'name'
   failed: <the thread's last error or rc's name>". */
void ferry__agent_function_error(const ferry__agent *agent, const char *fn, ferry_status rc,
                                 char *buf, size_t cap);

#endif
