/* Internal to distributed autograd: the per-agent state, the contexts it keeps, and the calls
   the module's files make of each other. docs/dist_autograd.md tells the whole story: what is
   recorded when a call is sent and received (record.c), how a backward pass runs across
   workers (pass.c, backward.c) and how contexts are released everywhere (context.c,
   cleanup.c).

   Locking: the state's table lock guards the table of contexts only; each context's lock
   guards its gradients and the passes running in it with their graph tasks, and its record
   lock (taken inside the context lock, never around it) its send and recv records and known
   workers, so that recording a call never waits for a backward pass running user code.
   Nothing is sent, and no future completed, while a context lock is held: work that must go
   out is gathered in an outbox and flushed after unlocking. */
#ifndef FERRY_AUTOGRAD_DIST_IMPL_H
#define FERRY_AUTOGRAD_DIST_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "autograd/engine.h"
#include "core/refcount.h"
#include "ferry/dist_autograd.h"
#include "rpc/module.h"

/* Keys of the per-message slot (ferry__msg.ext) this module fills. */
enum {
    DIST_EXT_CONTEXT = 0xDA01, /* a call made inside a context: its id */
    DIST_EXT_MESSAGE = 0xDA02, /* tensors that require grad went: the send node's message id */
    DIST_EXT_PASS = 0xDA03,    /* AUTOGRAD_BACKWARD: the backward pass it belongs to */
    DIST_EXT_OP = 0xDA04,      /* AUTOGRAD_BACKWARD: what it asks (ferry__dist_op) */
};

/* What an AUTOGRAD_BACKWARD request asks of its receiver. */
typedef enum {
    DIST_OP_GRAD = 0,  /* the gradients (args) for the receiver's send node autograd_message */
    DIST_OP_JOIN = 1,  /* take part in the pass; args: the ids of the sender's send nodes whose
                          recv nodes should be here; the answer lists those that are not */
    DIST_OP_ABORT = 2, /* the pass failed; args: [reason] */
} ferry__dist_op;

#define DIST_RPC_NAME "dist_autograd.backward"
#define DIST_CLEANUP_NAME "dist_autograd.release"
#define DIST_RREF_BACKWARD_FN "dist_autograd.rref_backward"

/* One recorded message: a send node (peer = where it went) or a recv node (peer = where it
   came from), retained. */
typedef struct {
    int64_t msg;
    int peer;
    ferry__node *node;
} ferry__dist_rec;

typedef struct {
    ferry_tensor *tensor; /* retained: the key, by identity */
    ferry_tensor *grad;
} ferry__dist_grad;

typedef struct ferry__dist_pass ferry__dist_pass;

/* A pass that ended in a context here: error NULL when it finished, else why it failed. */
typedef struct {
    int64_t id;
    char *error;
} ferry__dist_ended;
typedef struct ferry__dist_state ferry__dist_state;

typedef struct ferry__dist_ctx {
    ferry__ref ref;
    int64_t id;
    ferry__dist_state *st;
    pthread_mutex_t mu;
    pthread_mutex_t rec_mu; /* sends, recvs, known */
    ferry__dist_rec *sends;
    size_t n_sends, cap_sends;
    ferry__dist_rec *recvs;
    size_t n_recvs, cap_recvs;
    ferry__dist_grad *grads;
    size_t n_grads, cap_grads;
    bool *known;        /* world_size entries: workers this context's calls went to */
    ferry__dist_pass *passes;  /* running here */
    ferry__dist_ended *ended; /* passes that ended here, for late messages */
    size_t n_ended, cap_ended;
    struct ferry__dist_ctx *next; /* in its table bucket */
} ferry__dist_ctx;

#define DIST_BUCKETS 256

struct ferry__dist_state {
    ferry__ref ref;      /* the agent's and one per context */
    ferry__agent *agent; /* borrowed: valid while the agent runs */
    int rank, world;
    pthread_mutex_t mu; /* the table */
    ferry__dist_ctx *buckets[DIST_BUCKETS];
    int64_t n_contexts;
    atomic_int_fast64_t next_ctx, next_msg, next_pass;
    atomic_int_fast64_t n_passes, n_sends, n_recvs, cleanups_pending;
};

/* ---- context.c ---- */

/* The running agent's state (the agent retained into *agent), or NULL with its error. */
ferry__dist_state *ferry__dist_state_get(ferry__agent **agent);
/* The context of that id here (retained), or NULL; _or_create makes it when absent. */
ferry__dist_ctx *ferry__dist_ctx_find(ferry__dist_state *st, int64_t id);
ferry__dist_ctx *ferry__dist_ctx_find_or_create(ferry__dist_state *st, int64_t id);
ferry__dist_ctx *ferry__dist_ctx_retain(ferry__dist_ctx *ctx);
void ferry__dist_ctx_release(ferry__dist_ctx *ctx);
/* Takes the context out of the table (the table's reference is the caller's), or NULL. */
ferry__dist_ctx *ferry__dist_ctx_remove(ferry__dist_state *st, int64_t id);
/* ferry_set_error with torch's "Could not find autograd context with id: N". */
ferry_status ferry__dist_no_context(int64_t id);
/* Every context alive (retained), for a sweep; *n entries, free the array with ferry__free. */
ferry__dist_ctx **ferry__dist_ctx_all(ferry__dist_state *st, size_t *n);
/* The leaf sink of a pass: adds grad into the context's gradient for leaf (lock held). */
ferry_status ferry__dist_ctx_accumulate(void *ctx, ferry_tensor *leaf, ferry_tensor *grad);
/* Appends a record (lock held). */
ferry_status ferry__dist_ctx_add_rec(ferry__dist_rec **recs, size_t *n, size_t *cap, int64_t msg,
                                     int peer, ferry__node *node);
/* The node of the send (or recv) record of that message and peer, retained, or NULL. */
ferry__node *ferry__dist_ctx_rec_node(ferry__dist_ctx *c, bool send, int64_t msg, int peer);

/* This thread's current context id (-1: none) and setting it (returns the previous). */
int64_t ferry__dist_current(void);
int64_t ferry__dist_set_current(int64_t id);

/* ---- cleanup.c ---- */

/* Sends the release of context `id` to every worker in known[] (not self, not `except`). */
void ferry__dist_cleanup_send(ferry__dist_state *st, int64_t id, const bool *known, int except);
/* Fails the passes running in c and sends its release on (c is out of the table already). */
void ferry__dist_ctx_release_everywhere(ferry__dist_state *st, ferry__dist_ctx *c, int except);
ferry_status ferry__dist_cleanup_handle(ferry__agent *agent, int src, ferry__msg *m,
                                        ferry_value **result, void *state);

/* ---- record.c: the module's call hooks ---- */

ferry_status ferry__dist_on_send(ferry__agent *agent, void *state, int dst, ferry__msg *m,
                                 const ferry__msg *request);
ferry_status ferry__dist_on_receive(ferry__agent *agent, void *state, int src, ferry__msg *m);
void ferry__dist_before_request(ferry__agent *agent, void *state, int src, const ferry__msg *m,
                                void **slot);
void ferry__dist_after_request(ferry__agent *agent, void *state, void *slot);
bool ferry__dist_msg_ext(const ferry__msg *m, uint32_t key, int64_t *value);
ferry_status ferry__dist_msg_add_ext(ferry__msg *m, uint32_t key, int64_t value);

/* ---- backward.c ---- */

/* Registers the functions peers call on this worker (rref backward on its owner). */
ferry_status ferry__dist_register_functions(void);

/* ---- pass.c: backward passes on this worker ---- */

/* Starts a pass from `roots` (borrowed tensors with a grad_fn, seeded with ones) in ctx, as its
   initiator, waits until it ended on every worker it reached and returns its outcome. */
ferry_status ferry__dist_pass_run(ferry__dist_state *st, ferry__dist_ctx *ctx, ferry_tensor **roots,
                                  size_t n, bool retain_graph);
/* The pool handler of AUTOGRAD_BACKWARD requests. */
ferry_status ferry__dist_pass_handle(ferry__agent *agent, int src, ferry__msg *m,
                                     ferry_value **result, void *state);
/* A peer is unreachable: fails every pass here that waits on it; when it is gone for good, also
   releases the contexts it created (nobody else could end them). */
void ferry__dist_pass_peer_lost(ferry__dist_state *st, int rank, bool gone, const char *why);
/* Fails every pass running in ctx (its context is being released). */
void ferry__dist_pass_abort_all(ferry__dist_ctx *ctx, const char *why);
/* Called by a recv node's backward: queues its gradients for the peer's send node.
   from_response: the node's tensors came in a response, so the gradients are placed by this
   worker's own device map toward the peer (else by the inverse of the peer's map), and land on
   the devices the forward tensors came from. */
ferry_status ferry__dist_pass_recv_backward(int64_t msg, int src, bool from_response, size_t n,
                                            ferry_tensor *const *grads);

#endif
