/* Internal to local autograd: the state autograd keeps on each tensor (tensor->autograd) and
   the calls that create it and record graph nodes. */
#ifndef FERRY_AUTOGRAD_VARIABLE_H
#define FERRY_AUTOGRAD_VARIABLE_H

#include "autograd/engine.h"

typedef struct {
    bool requires_grad;  /* set on leaves by the user, on outputs of nodes by the engine */
    ferry_tensor *grad;  /* accumulated gradient, or NULL */
    ferry__node *grad_fn; /* the node that made this tensor (retained), NULL for a leaf */
    size_t output_nr;
} ferry__tensor_meta;

/* t's state or NULL; ferry__meta_ensure creates it (NULL + FERRY_ENOMEM on failure). */
ferry__tensor_meta *ferry__meta_get(const ferry_tensor *t);
ferry__tensor_meta *ferry__meta_ensure(ferry_tensor *t);

/* Installs the hooks in tensor/ (idempotent, thread-safe). */
void ferry__autograd_install(void);

/* The `record` hook: a new node for rec (retaining the producers of its inputs and aliases of
   rec's saved tensors), made output 0's grad_fn; `output` stays the caller's. FERRY_ENOMEM
   leaves `output` as it was. */
ferry_status ferry__record_node(const ferry__op_record *rec, ferry_tensor *output);

#endif
