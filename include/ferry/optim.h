/* Local optimizers with torch 1.13's update rules (torch.optim's single-tensor path, foreach
   off): SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta, Adamax and Rprop, with parameter groups
   and a state file in torch's state_dict layout. An optimizer updates its parameters in place:
   they are the caller's own tensors (a model's weights), retained, never copied. One optimizer is
   used by one thread at a time; different optimizers are independent.

   Choices where torch leaves room:
   - SGD has no default learning rate in torch.optim (lr is required). ferry_optim_options_init
     leaves SGD's lr NaN, meaning "not given", and ferry_optimizer_new then fails with torch's
     "parameter group didn't specify a value of required optimization parameter lr". (The
     functional SGD behind torch's DistributedOptimizer uses 1e-2; set it explicitly.) For every
     other kind a NaN lr fails the range check ("Invalid learning rate: nan"), as in torch.
   - torch checks the options only in the constructor; ferry checks them in
     ferry_optimizer_add_param_group too, with the same messages.
   - A parameter listed twice (in one group or in two) is refused; torch refuses the second case
     and only warns about the first.
   - Arithmetic follows torch's order of operations element by element, in double precision;
     float32 parameters and state are rounded to float32 when stored, so float32 results agree
     with torch to float32 rounding rather than bit for bit. float64 follows torch's formulas
     exactly (differences of an ulp can come from torch fusing a multiply-add). */
#ifndef FERRY_OPTIM_H
#define FERRY_OPTIM_H

#include <stdbool.h>
#include <stddef.h>

#include <stdint.h>

#include "ferry/error.h"
#include "ferry/rref.h"
#include "ferry/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FERRY_SGD,
    FERRY_ADAM,
    FERRY_ADAMW,
    FERRY_ADAGRAD,
    FERRY_RMSPROP,
    FERRY_ADADELTA,
    FERRY_ADAMAX,
    FERRY_RPROP
} ferry_optim_kind;
#define FERRY_OPTIM_KIND_COUNT 8

/* The keyword arguments of torch.optim's constructors, under torch's names. Each kind reads the
   fields its torch class takes and ignores the others:
   SGD      lr, momentum, dampening, weight_decay, nesterov, maximize
   Adam     lr, betas, eps, weight_decay, amsgrad, maximize (AdamW the same)
   Adagrad  lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize
   RMSprop  lr, alpha, eps, weight_decay, momentum, centered, maximize
   Adadelta lr, rho, eps, weight_decay, maximize
   Adamax   lr, betas, eps, weight_decay, maximize
   Rprop    lr, etas, step_sizes, maximize
   Always fill one with ferry_optim_options_init first, so fields added later get defaults. */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    bool nesterov, maximize;
    double betas[2], eps;
    bool amsgrad;
    double lr_decay, initial_accumulator_value, alpha;
    bool centered;
    double rho, etas[2], step_sizes[2];
} ferry_optim_options;

/* torch's class name for a kind ("SGD", "Adam", "AdamW", ...), or NULL for an unknown kind. The
   string is static. */
FERRY_API const char *ferry_optim_kind_name(ferry_optim_kind kind);

/* Fills `o` with torch.optim's defaults for `kind` (SGD's lr NaN: see above; Adamax's lr 2e-3,
   torch.optim's, not the functional 1e-3; AdamW's weight_decay 1e-2). Fields the kind does not
   read get the values other kinds default to. An unknown kind gets SGD's defaults. */
FERRY_API void ferry_optim_options_init(ferry_optim_options *o, ferry_optim_kind kind);

typedef struct ferry_optimizer ferry_optimizer;

/* torch.optim.<Kind>(params, **options): one parameter group holding the n tensors of `params`
   (the array is borrowed, the tensors retained). Parameters must be float32 or float64
   leaves, on the CPU or a device (their state lives beside them). Adagrad creates its state
   (step 0, sum filled with initial_accumulator_value) at once, as torch does; the others on a
   parameter's first gradient. Returns a new optimizer
   (ferry_optimizer_free), or NULL with FERRY_EINVAL: an unknown kind, NULL o or params, n == 0
   ("optimizer got an empty parameter list"), a NULL parameter, "can't optimize a non-leaf
   Tensor", a parameter listed twice, an option out of range (torch's messages, e.g. "Invalid
   learning rate: -1.0", "Invalid beta parameter at index 0: 1.0", "Nesterov momentum requires a
   momentum and zero dampening"), SGD without lr; FERRY_ENOTSUP (a dtype other than float32 and
   float64); FERRY_ENOMEM. */
FERRY_API ferry_optimizer *ferry_optimizer_new(ferry_optim_kind kind, const ferry_optim_options *o,
                                               ferry_tensor **params, size_t n);

/* optimizer.add_param_group({"params": params, **options}): a new group with its own options
   (of the optimizer's kind). Parameters are numbered across groups in the order they were added
   (group 0's first, then group 1's), as torch's state_dict numbers them. FERRY_OK; FERRY_EINVAL
   as ferry_optimizer_new (a parameter already in a group: "some parameters appear in more than
   one parameter group"), also for a NULL opt; FERRY_ENOTSUP; FERRY_ENOMEM. On failure the
   optimizer is unchanged. */
FERRY_API ferry_status ferry_optimizer_add_param_group(ferry_optimizer *opt,
                                                       const ferry_optim_options *o,
                                                       ferry_tensor **params, size_t n);

/* How many parameters (all groups) and groups the optimizer holds; 0 for NULL. */
FERRY_API size_t ferry_optimizer_param_count(const ferry_optimizer *opt);
FERRY_API size_t ferry_optimizer_group_count(const ferry_optimizer *opt);

/* optimizer.step(): updates every parameter that has a .grad (ferry_tensor_grad) with its
   group's options; a parameter without a gradient is left alone and its state untouched. Runs
   no autograd: the update records nothing and the gradients are only read. FERRY_OK;
   FERRY_EINVAL (NULL opt, a gradient whose shape or dtype differs from its parameter's: checked
   for every parameter before any is updated); FERRY_ENOMEM (then parameters before the failing
   one may already be updated). */
FERRY_API ferry_status ferry_optimizer_step(ferry_optimizer *opt);

/* The functional optimizers' step(gradients): grads[i] (borrowed; NULL = no gradient) is used
   for parameter i instead of its .grad. n must be the parameter count, else FERRY_EINVAL with
   torch's "the gradients passed in does not equal to the size of the parameters!Params length:
   N. Gradients length: M". Otherwise as ferry_optimizer_step (grads may be NULL when n is 0). */
FERRY_API ferry_status ferry_optimizer_step_grads(ferry_optimizer *opt, ferry_tensor *const *grads,
                                                  size_t n);

/* optimizer.zero_grad() with torch 1.13's default set_to_none=False: every existing .grad is
   zeroed in place (and stops requiring grad), parameters without one are left without one.
   FERRY_OK; FERRY_EINVAL for NULL opt. */
FERRY_API ferry_status ferry_optimizer_zero_grad(ferry_optimizer *opt);

/* Writes the optimizer's state to one safetensors file, in torch's state_dict layout: tensors
   "state.<param index>.<key>" (Adam's "state.0.exp_avg", SGD's "state.0.momentum_buffer"; a
   float32 0-dim "state.<i>.step" for Adam, AdamW, Adagrad and Adamax, whose torch state keeps
   step as such a tensor, an int64 0-dim one for RMSprop, Adadelta and Rprop, where torch keeps a
   Python int), and metadata "optimizer" (the kind's torch name) and "param_groups" (JSON text of
   torch's param_groups list, with torch's keys in torch's order). docs/optim.md shows how to
   load it into torch. FERRY_OK; FERRY_EINVAL (NULL argument, a file that cannot be written);
   FERRY_ENOMEM. */
FERRY_API ferry_status ferry_optimizer_save(const ferry_optimizer *opt, const char *path);

/* optimizer.load_state_dict(...) from such a file: replaces every group's options and every
   parameter's state. As torch, saved parameter ids are matched to this optimizer's parameters in
   group order, and floating state is converted to the parameter's dtype. FERRY_OK; FERRY_EINVAL
   (NULL argument, a file that cannot be read, another optimizer kind, "loaded state dict has a
   different number of parameter groups", "loaded state dict contains a parameter group that
   doesn't match the size of optimizer's group", a state tensor of the wrong shape or dtype or an
   unknown key, options out of range); FERRY_EPROTO (a malformed file or param_groups text);
   FERRY_ENOMEM. On failure the optimizer is unchanged. */
FERRY_API ferry_status ferry_optimizer_load(ferry_optimizer *opt, const char *path);

/* Releases the parameters and frees the state. NULL is fine. */
FERRY_API void ferry_optimizer_free(ferry_optimizer *opt);

/* ---- torch.distributed.optim.DistributedOptimizer ---- */

typedef struct ferry_dist_optimizer ferry_dist_optimizer;

/* DistributedOptimizer(<kind>, params, **options): groups the parameter RRefs by owner and
   makes one local optimizer of `kind` on each owner over the owner's very tensors (the values
   the OwnerRRefs hold, which the owner's model uses), in the order the RRefs are given. Every
   RRef must hold a float32 or float64 leaf tensor on its owner; o may be NULL for the kind's
   defaults (ferry_optim_options_init: SGD then needs lr set). Waits until every owner has made
   its optimizer. A new optimizer (ferry_dist_optimizer_free), or NULL: FERRY_EINVAL (an unknown
   kind, no parameters: "optimizer got an empty parameter list", a NULL RRef), or the first
   owner's failure as "Error creating optimizer: ..." naming the worker and the cause (the
   options out of range, an RRef that holds no tensor), FERRY_ESHUTDOWN, FERRY_ENOMEM. */
FERRY_API ferry_dist_optimizer *ferry_dist_optimizer_new(ferry_optim_kind kind,
                                                         const ferry_optim_options *o,
                                                         ferry_rref **params, size_t n);

/* Steps every owner's optimizer at once with the gradients distributed autograd context `ctx`
   holds on that owner (a parameter that got none is left alone) and waits for all of them.
   Steps of several trainers on one owner take turns (every remote optimizer of a process
   steps under one lock, as torch's do), so no update is lost.
   FERRY_OK, or the first failing owner's status with "Error running optimizer: ..." naming the
   worker and the cause (e.g. no such context there), after every owner finished; FERRY_EINVAL
   for NULL. */
FERRY_API ferry_status ferry_dist_optimizer_step(ferry_dist_optimizer *opt, int64_t ctx);

/* Releases the remote optimizers (each is freed on its owner once this RRef is gone). NULL is
   fine. */
FERRY_API void ferry_dist_optimizer_free(ferry_dist_optimizer *opt);

#ifdef __cplusplus
}
#endif
#endif
