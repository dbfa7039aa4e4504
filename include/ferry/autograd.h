/* Local autograd, as torch.autograd: tensors that require grad, the graph ops record while grad
   mode is on, backward through it with gradients accumulated into leaves' .grad, and the no-grad
   scope. A graph may be used from one thread at a time; grad mode is per thread. */
#ifndef FERRY_AUTOGRAD_H
#define FERRY_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* t.requires_grad_(flag). Only leaves can change it (asking a non-leaf for true is a no-op);
   floating dtypes only. FERRY_OK; FERRY_EINVAL (NULL t, or torch's messages: "only Tensors of
   floating point dtype can require gradients", "you can only change requires_grad flags of leaf
   variables."); FERRY_ENOMEM. */
FERRY_API ferry_status ferry_tensor_set_requires_grad(ferry_tensor *t, bool requires_grad);
/* True for a leaf marked so and for every tensor made by a recorded op; false for NULL. */
FERRY_API bool ferry_tensor_requires_grad(const ferry_tensor *t);
/* A leaf is a tensor without grad_fn: every tensor that does not require grad, and those the user
   marked with set_requires_grad. NULL counts as a leaf. */
FERRY_API bool ferry_tensor_is_leaf(const ferry_tensor *t);
/* t.grad: a new reference, or NULL when no gradient was accumulated (not an error). */
FERRY_API ferry_tensor *ferry_tensor_grad(ferry_tensor *t);
/* Replaces t.grad (borrowed; retained) or clears it with NULL. FERRY_OK; FERRY_EINVAL for a NULL
   t or when the shape, dtype or device differ from t's ("assigned grad has data of a different
   size" / "... type" / "assigned grad has data located on a different device"); FERRY_ENOMEM. */
FERRY_API ferry_status ferry_tensor_set_grad(ferry_tensor *t, ferry_tensor *grad);
/* Drops t.grad (torch's zero_grad(set_to_none=True)). NULL is fine. */
FERRY_API void ferry_tensor_zero_grad(ferry_tensor *t);
/* The name of the node that made `t` ("MulBackward0", torch's names), or NULL for a leaf. The
   string is static. */
FERRY_API const char *ferry_tensor_grad_fn_name(const ferry_tensor *t);

/* root.backward(grad, retain_graph): runs the graph behind `root` and accumulates gradients into
   the .grad of every leaf that requires grad. grad NULL means ones for a one-element root (else
   FERRY_EINVAL "grad can be implicitly created only for scalar outputs"); a given grad must have
   root's shape (it is converted to root's dtype). Both borrowed. Returns FERRY_OK; FERRY_EINVAL
   for a NULL root, "element 0 of tensors does not require grad and does not have a grad_fn"
   when root is out of the graph, and "Trying to backward through the graph a second time ..."
   when a part of the graph that saved tensors already ran without retain_graph; FERRY_ENOMEM or
   any error of the ops the backward formulas run. On failure leaves may hold partial
   gradients. */
FERRY_API ferry_status ferry_backward(ferry_tensor *root, ferry_tensor *grad, bool retain_graph);

/* torch.no_grad(): while entered, ops record nothing. Nestable (each enter needs its exit) and
   per thread (a thread starts with grad mode on); an exit without an enter is ignored.
   ferry_is_grad_enabled tells whether this thread records. */
FERRY_API void ferry_no_grad_enter(void);
FERRY_API void ferry_no_grad_exit(void);
FERRY_API bool ferry_is_grad_enabled(void);

#ifdef __cplusplus
}
#endif
#endif
