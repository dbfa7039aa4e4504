/* Distributed autograd, as torch.distributed.autograd: a context that records every call made
   inside it, so a backward pass started on one worker runs through the graphs of every worker
   the forward pass went through, with the gradients of each worker's leaves kept in that
   worker's context (never in .grad). docs/dist_autograd.md explains recording, the backward
   pass and cleanup.

   A context id is (worker rank << 48) | counter. A thread has at most one current context; every
   call it makes while one is current (rpc_sync, rpc_async, remote, to_here, the RRef proxies)
   carries the id, the callee runs inside a context of the same id on its worker, and so does
   whatever it calls in turn and the then-callbacks of futures created inside. All calls need
   a running agent. */
#ifndef FERRY_DIST_AUTOGRAD_H
#define FERRY_DIST_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/rref.h"
#include "ferry/tensor.h"
#include "ferry/value.h"

#ifdef __cplusplus
extern "C" {
#endif

/* `with dist_autograd.context() as ctx`: a new context made current on this thread. Returns
   its id, or -1: FERRY_EINVAL "Already have an autograd context id for this thread." when one
   is current, FERRY_ESHUTDOWN when RPC is not running, FERRY_ENOMEM. */
FERRY_API int64_t ferry_dist_autograd_context_begin(void);
/* Leaves and releases the context: here at once, and on every worker it reached (transitively,
   retried when a message fails) shortly after. It stops being this thread's current context
   when it was. FERRY_OK; FERRY_EINVAL "Could not find autograd context with id: N" when this
   worker has no such context. */
FERRY_API ferry_status ferry_dist_autograd_context_end(int64_t ctx);
/* This thread's current context id, or -1 when none. */
FERRY_API int64_t ferry_dist_autograd_current_context(void);

/* dist_autograd.backward(ctx, roots, retain_graph): runs the backward pass from the n
   one-element tensors `roots` (the array and the tensors borrowed; each seeded with ones)
   through every worker the context's calls reached, and returns when it finished everywhere. Gradients of leaves add up in the context
   of the worker that holds them. A recorded call whose result the roots do not reach gets no
   gradient (torch hangs there; ferry does not). Without retain_graph, the graph's saved tensors
   go as the pass runs them, and a second pass fails. Errors: FERRY_EINVAL with torch's texts
   ("No tensors provided for gradient computation.", "requires_grad not set on root",
   "<node> is not a scalar, all roots need to be scalar", "<name> does not have a valid gradient
   function.", "Could not find autograd context with id: N"); the first error of any worker,
   prefixed "Error on Node R: " once per worker it went through (a worker that died during the
   pass is named, within the failure-detection time). A failed pass leaves the context
   usable. */
FERRY_API ferry_status ferry_dist_autograd_backward(int64_t ctx, ferry_tensor **roots, size_t n,
                                                    bool retain_graph);
/* The gradient accumulated for `tensor` (this worker's, borrowed) in the context: a new
   reference to the context's own tensor, or NULL: FERRY_EINVAL when the context does not
   exist, FERRY_ESHUTDOWN without a running agent, and FERRY_OK as the last status when the
   tensor has no gradient there. */
FERRY_API ferry_tensor *ferry_dist_autograd_get_gradient(int64_t ctx, ferry_tensor *tensor);
/* dist_autograd.get_gradients(ctx): a new reference to a list of [tensor, gradient] pairs, one
   per tensor of this worker that received a gradient in the context, in the order they first
   did (the gradients are the context's own tensors, not copies). NULL with FERRY_EINVAL when
   there is no such context, FERRY_ESHUTDOWN without a running agent, FERRY_ENOMEM. */
FERRY_API ferry_value *ferry_dist_autograd_get_gradients(int64_t ctx);

/* rref.backward(ctx, retain_graph): a distributed backward from the one-element tensor an RRef
   (borrowed) holds, run by its owner in context `ctx` (for an OwnerRRef, ctx -1 means a local
   backward into .grad, as torch). Returns when it finished. FERRY_OK; the errors of
   ferry_dist_autograd_backward; FERRY_EINVAL "User RRefs require 'dist_autograd_ctx_id' to be
   specified" and "RRef should contain a tensor for .backward()"; for a UserRRef, the errors of
   the call to its owner (FERRY_EREMOTE, FERRY_ETRANSPORT, FERRY_ETIMEDOUT, ...). */
FERRY_API ferry_status ferry_rref_backward(ferry_rref *rref, int64_t ctx, bool retain_graph);

/* What distributed autograd holds on this worker, for tests and debugging (torch's
   _get_debug_info). All zero without a running agent. */
typedef struct {
    int64_t contexts;        /* contexts alive */
    int64_t backward_passes; /* passes running here */
    int64_t send_nodes;      /* recorded, in live contexts */
    int64_t recv_nodes;
    int64_t cleanups_pending; /* release messages not yet answered */
} ferry_dist_autograd_counts;
FERRY_API ferry_dist_autograd_counts ferry_dist_autograd_debug_counts(void);

#ifdef __cplusplus
}
#endif
#endif
