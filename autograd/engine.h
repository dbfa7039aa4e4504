/* The local autograd engine, for the rest of autograd/ (the backward formulas and, later,
   distributed autograd). A graph is made of refcounted nodes; a tensor that requires grad and is
   not a leaf names its node and which of the node's outputs it is. Each node has one edge per
   differentiable input: to the node that made that input, to a leaf that requires grad (whose
   gradient is accumulated), or to nothing.

   Hooks for distributed autograd:
   - ferry__node_new_custom makes a node whose backward is a callback (torch's SendRpcBackward
     and RecvRpcBackward are two such nodes): it has n_outputs gradients coming in and one edge
     per tensor in `inputs` going out.
   - ferry__node_attach_output makes a tensor an output of such a node (a tensor received over RPC
     gets a recv node as its grad_fn).
   - ferry__engine_run runs the engine from (node, output_nr, grad) roots; a `sink` may take the
     leaves' gradients instead of .grad (a distributed context keeps its own). */
#ifndef FERRY_AUTOGRAD_ENGINE_H
#define FERRY_AUTOGRAD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/refcount.h"
#include "ferry/autograd.h"
#include "tensor/ops_internal.h"

typedef struct ferry__node ferry__node;

/* A custom node's backward. grad_outputs has n_grad_outputs entries, NULL where no gradient
   reached that output; the callback stores a new reference (or leaves NULL for "no gradient")
   in each of the n_grad_inputs slots of grad_inputs, one per input given at creation. It runs
   on the thread that runs the engine, with grad mode off; a non-OK status (recorded with
   ferry_set_error) stops the engine and is what ferry__engine_run returns. */
typedef ferry_status (*ferry__node_backward_fn)(void *ctx, size_t n_grad_outputs,
                                                ferry_tensor *const *grad_outputs,
                                                size_t n_grad_inputs, ferry_tensor **grad_inputs);

/* A node whose backward is `fn(ctx, ...)`. `name` must outlive the node (a string literal).
   Entries of `inputs` that do not require grad (or are NULL) get no edge and their gradient is
   dropped. ctx_free(ctx), when given, runs when the node goes. Returns a new reference or NULL
   (FERRY_ENOMEM, FERRY_EINVAL). Thread-safe. */
ferry__node *ferry__node_new_custom(const char *name, size_t n_outputs, size_t n_inputs,
                                    ferry_tensor *const *inputs, ferry__node_backward_fn fn,
                                    void *ctx, void (*ctx_free)(void *ctx));
/* Makes `t` output `output_nr` of `node`: t then requires grad, is no leaf, and backward through
   t reaches the node. FERRY_EINVAL for an output_nr out of range or a t that is a leaf requiring
   grad (its gradient would be lost). The node is retained by t. */
ferry_status ferry__node_attach_output(ferry__node *node, size_t output_nr, ferry_tensor *t);
/* t's grad_fn (new reference) and output index, or NULL for a leaf. */
ferry__node *ferry__tensor_grad_fn(const ferry_tensor *t, size_t *output_nr);
ferry__node *ferry__node_retain(ferry__node *node);
void ferry__node_release(ferry__node *node);
const char *ferry__node_name(const ferry__node *node);

/* Where gradients for leaves go: NULL sink = accumulate into .grad (torch's AccumulateGrad). */
typedef ferry_status (*ferry__leaf_sink_fn)(void *user, ferry_tensor *leaf, ferry_tensor *grad);

typedef struct {
    ferry__node *node;
    size_t output_nr;
    ferry_tensor *grad; /* borrowed; must have the output's shape */
} ferry__engine_root;

/* Runs every node reachable from the roots once, in dependency order (a node runs when all the
   reachable nodes feeding it ran; among ready nodes the most recently created first, as torch),
   summing the gradients that meet at a node. Without retain_graph, each node drops its saved
   tensors after it ran, and running it again fails with torch's "Trying to backward through the
   graph a second time ..." (FERRY_EINVAL). Grad mode is off while it runs. One run at a time
   per graph. */
ferry_status ferry__engine_run(size_t n_roots, const ferry__engine_root *roots, bool retain_graph,
                               ferry__leaf_sink_fn sink, void *sink_user);

/* A run that also waits for gradients from outside (distributed autograd's send nodes, whose
   gradients come back from other workers). It is made of the nodes reachable from the roots
   and from the `pending` nodes; a pending node runs only once its gradients were delivered and
   every reachable node feeding it ran. ferry__graph_task_run runs whatever is ready and returns;
   the task is finished when every node of it ran. Not thread-safe: one thread at a time (the
   caller's lock). After an error the task runs nothing more and every run returns it. */
typedef struct ferry__graph_task ferry__graph_task;
ferry__graph_task *ferry__graph_task_new(size_t n_roots, const ferry__engine_root *roots,
                                         size_t n_pending, ferry__node *const *pending,
                                         bool retain_graph, ferry__leaf_sink_fn sink,
                                         void *sink_user);
/* The gradients for a pending node's outputs (n <= its outputs; NULL entries: none), borrowed.
   FERRY_EINVAL when the node is not pending in this task or was delivered already. */
ferry_status ferry__graph_task_deliver(ferry__graph_task *task, ferry__node *node, size_t n,
                                       ferry_tensor *const *grads);
ferry_status ferry__graph_task_run(ferry__graph_task *task);
bool ferry__graph_task_finished(const ferry__graph_task *task);
/* Whether the node is part of the task (reachable from its roots or pending nodes). */
bool ferry__graph_task_reaches(ferry__graph_task *task, const ferry__node *node);
void ferry__graph_task_free(ferry__graph_task *task);

/* Adds grad into leaf.grad (a copy the first time), as torch's AccumulateGrad. */
ferry_status ferry__accumulate_grad(ferry_tensor *leaf, ferry_tensor *grad);

/* ---- for the backward formulas in autograd/functions_*.c ---- */

typedef struct {
    ferry__node *node;    /* the next node (retained), or NULL */
    size_t output_nr;     /* which output of `node` */
    ferry_tensor *leaf;   /* a leaf that requires grad (retained), or NULL */
} ferry__edge;

typedef struct {
    int ndim;
    int64_t sizes[FERRY_MAX_DIMS];
    ferry_dtype dtype;
    ferry_device device; /* where its gradient must arrive */
} ferry__input_meta;

/* A builtin formula: grad_outputs[0] is never NULL when it runs; it fills grad_inputs[i] (new
   references, NULL for none) for the inputs with needs_grad(node, i). */
typedef ferry_status (*ferry__formula_fn)(ferry__node *node, ferry_tensor *const *grad_outputs,
                                          ferry_tensor **grad_inputs);

typedef struct {
    const char *name;      /* torch's node name */
    bool frees_saved;      /* a second run without retain_graph is an error, as torch */
    ferry__formula_fn backward;
} ferry__formula;

struct ferry__node {
    ferry__ref ref;
    const char *name;
    uint64_t seq; /* creation order */
    int op;       /* ferry__op, or -1 for a custom node */
    ferry__node_backward_fn custom_fn;
    void *custom_ctx;
    void (*custom_ctx_free)(void *ctx);
    size_t n_outputs;
    size_t n_inputs;
    ferry__edge *edges;
    ferry__input_meta *meta;
    int n_saved;
    ferry_tensor *saved[FERRY__OP_MAX_SAVED]; /* detached aliases */
    bool frees_saved;
    bool released; /* saved state dropped by a run without retain_graph */
    double scalars[2];
    int n_ints;
    int64_t ints[FERRY__OP_MAX_INTS];
    ferry__node *free_next; /* used while freeing a chain of nodes without recursion */
};

static inline bool ferry__needs_grad(const ferry__node *node, size_t i)
{
    return node->edges[i].node != NULL || node->edges[i].leaf != NULL;
}

/* The formula tables of each family (NULL entries belong to another family). */
const ferry__formula *ferry__formula_for(int op);
const ferry__formula *ferry__formulas_elementwise(int op);
const ferry__formula *ferry__formulas_reduce(int op);
const ferry__formula *ferry__formulas_shape(int op);

#endif
