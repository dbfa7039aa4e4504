/* Tensor operations named like torch's, with torch's broadcasting and type promotion over
   float32, float64 and int64. Every op borrows its arguments and returns a new tensor (new
   reference) or NULL with the reason in ferry_last_error(): FERRY_EINVAL for a NULL tensor and
   for shapes, dims or dtypes torch rejects (messages follow torch's wording), FERRY_ENOTSUP for
   a dtype (float16, bfloat16, int32, uint8, bool) ferry does not compute on, FERRY_ENOMEM. Ops
   run on the device of their operands (CPU or CUDA, see ferry/device.h) and put the result
   there; operands on two devices fail with FERRY_EINVAL and torch's "Expected all tensors to be
   on the same device, but found at least two devices, cuda:0 and cpu!" (a 0-dim CPU tensor may
   join a device op, as torch's CPU scalars do). When grad mode is on (see ferry/autograd.h) and an
   input requires grad, the result records how to differentiate it. Ops are thread-safe as long
   as no other thread writes the tensors they read. In-place ops (names ending in `_`) return a
   status (FERRY_OK or one of the codes above) and modify their first argument. */
#ifndef FERRY_OPS_H
#define FERRY_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* torch's `reduction=` argument of the losses, in torch's own order. */
typedef enum { FERRY_REDUCTION_NONE, FERRY_REDUCTION_MEAN, FERRY_REDUCTION_SUM } ferry_reduction;

/* Binary arithmetic with broadcasting (torch.add, sub, mul, div). The result dtype follows
   torch.result_type: float64 beats float32 beats int64, and a 0-dim tensor only raises the
   category (an int64 tensor with a 0-dim float64 gives float64, a float32 tensor with a 0-dim
   float64 stays float32). ferry_div is true division: int64 / int64 gives float32. Mismatched
   shapes fail with "The size of tensor a (3) must match the size of tensor b (4) at
   non-singleton dimension 1". */
FERRY_API ferry_tensor *ferry_add(ferry_tensor *a, ferry_tensor *b);
FERRY_API ferry_tensor *ferry_sub(ferry_tensor *a, ferry_tensor *b);
FERRY_API ferry_tensor *ferry_mul(ferry_tensor *a, ferry_tensor *b);
FERRY_API ferry_tensor *ferry_div(ferry_tensor *a, ferry_tensor *b);
/* a + alpha * b (torch.add(a, b, alpha=alpha)). */
FERRY_API ferry_tensor *ferry_add_alpha(ferry_tensor *a, ferry_tensor *b, double alpha);

/* The same with a Python float on the right (`t + 2.5`): an int64 tensor gives float32. */
FERRY_API ferry_tensor *ferry_add_scalar(ferry_tensor *a, double b);
FERRY_API ferry_tensor *ferry_sub_scalar(ferry_tensor *a, double b);
FERRY_API ferry_tensor *ferry_mul_scalar(ferry_tensor *a, double b);
FERRY_API ferry_tensor *ferry_div_scalar(ferry_tensor *a, double b);
/* t ** exponent with a Python float exponent (int64 input gives float32). */
FERRY_API ferry_tensor *ferry_pow(ferry_tensor *t, double exponent);

/* Elementwise unary ops. neg, abs and relu keep int64; exp, log, sqrt, sigmoid, tanh and gelu
   turn int64 into float32 as torch does. gelu is the exact erf form (torch's default). */
FERRY_API ferry_tensor *ferry_neg(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_abs(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_relu(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_exp(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_log(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_sqrt(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_sigmoid(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_tanh(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_gelu(ferry_tensor *t);

/* torch.matmul: 1-D x 1-D is a dot product (0-dim), 2-D x 1-D and 1-D x 2-D are matrix-vector
   products, and anything with more dims is a batched product whose batch dims broadcast. Both
   operands must have the same dtype ("expected scalar type Float but found Double"); shapes that
   do not fit fail with "mat1 and mat2 shapes cannot be multiplied (2x3 and 2x4)". Float products
   run on BLAS, reading transposed operands in place. */
FERRY_API ferry_tensor *ferry_matmul(ferry_tensor *a, ferry_tensor *b);
/* torch.nn.functional.linear: x @ weight^T + bias; x is [..., in], weight [out, in], bias [out]
   or NULL. */
FERRY_API ferry_tensor *ferry_linear(ferry_tensor *x, ferry_tensor *weight, ferry_tensor *bias);

/* Reductions. ferry_sum/ferry_mean/ferry_max reduce everything to a 0-dim tensor. The _dim forms
   reduce the `ndims` listed dims (negative counts from the end; ndims 0 means all dims, as
   torch's dim=[]), keeping them as size 1 when `keepdim`. sum keeps int64; mean needs a floating
   dtype ("mean(): could not infer output dtype ..."). ferry_max of an empty tensor fails. */
FERRY_API ferry_tensor *ferry_sum(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_sum_dim(ferry_tensor *t, int ndims, const int *dims, bool keepdim);
FERRY_API ferry_tensor *ferry_mean(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_mean_dim(ferry_tensor *t, int ndims, const int *dims, bool keepdim);
FERRY_API ferry_tensor *ferry_max(ferry_tensor *t);
/* torch.max(t, dim, keepdim): returns the values; when `indices` is not NULL it receives the
   int64 positions of the maxima (the first one on ties; new reference). On failure *indices is
   left untouched. FERRY_EINVAL when the reduced dim has size 0. */
FERRY_API ferry_tensor *ferry_max_dim(ferry_tensor *t, int dim, bool keepdim,
                                      ferry_tensor **indices);

/* Softmax and log-softmax along `dim` (floating dtypes only). */
FERRY_API ferry_tensor *ferry_softmax(ferry_tensor *t, int dim);
FERRY_API ferry_tensor *ferry_log_softmax(ferry_tensor *t, int dim);

/* Losses (torch.nn.functional). mse_loss: input and target of one shape. nll_loss: input of
   log-probabilities [N, C] (or [C] with a 0-dim target), int64 targets [N] in [0, C); a target of
   -100 (torch's default ignore_index) is skipped and not counted by the mean. cross_entropy is
   log_softmax along dim 1 (0 for 1-D input) followed by nll_loss. */
FERRY_API ferry_tensor *ferry_mse_loss(ferry_tensor *input, ferry_tensor *target,
                                       ferry_reduction reduction);
FERRY_API ferry_tensor *ferry_nll_loss(ferry_tensor *input, ferry_tensor *target,
                                       ferry_reduction reduction);
FERRY_API ferry_tensor *ferry_cross_entropy(ferry_tensor *input, ferry_tensor *target,
                                            ferry_reduction reduction);

/* torch.embedding(weight, indices) (note the order: F.embedding takes indices first): rows of
   weight [num, dim] picked by int64 indices of any shape; the result is indices.shape + [dim]. */
FERRY_API ferry_tensor *ferry_embedding(ferry_tensor *weight, ferry_tensor *indices);
/* F.dropout: when training and p > 0, zeroes each element with probability p and scales the
   rest by 1 / (1 - p), drawing from `gen` (NULL: the default generator). Not training or p == 0
   returns `t` itself (retained), as torch does. FERRY_EINVAL unless 0 <= p <= 1, and for a
   non-floating t that would be dropped. */
FERRY_API ferry_tensor *ferry_dropout(ferry_tensor *t, double p, bool training,
                                      ferry_generator *gen);

/* torch.cat / torch.stack of n tensors along `dim`; dtypes are promoted like the arithmetic ops.
   cat: sizes must match except along dim ("Sizes of tensors must match except in dimension 0.
   Expected size 3 but got size 4 for tensor number 1 in the list."); stack: all shapes equal. */
FERRY_API ferry_tensor *ferry_cat(ferry_tensor *const *tensors, size_t n, int dim);
FERRY_API ferry_tensor *ferry_stack(ferry_tensor *const *tensors, size_t n, int dim);

/* Shape ops. reshape returns a view when the strides allow, else a copy (one size may be -1);
   transpose and narrow always return views sharing storage with `t`. */
FERRY_API ferry_tensor *ferry_reshape(ferry_tensor *t, int ndim, const int64_t *sizes);
FERRY_API ferry_tensor *ferry_transpose(ferry_tensor *t, int dim0, int dim1);
FERRY_API ferry_tensor *ferry_narrow(ferry_tensor *t, int dim, int64_t start, int64_t length);
/* torch.unsqueeze / torch.squeeze(t, dim) (the latter a no-op when that size is not 1). */
FERRY_API ferry_tensor *ferry_unsqueeze(ferry_tensor *t, int dim);
FERRY_API ferry_tensor *ferry_squeeze_dim(ferry_tensor *t, int dim);
/* torch.index_select: the entries of `t` along `dim` at the int64 1-D `index`. */
FERRY_API ferry_tensor *ferry_index_select(ferry_tensor *t, int dim, ferry_tensor *index);

/* torch.clone: a contiguous copy that stays in the graph. torch.detach: a view of the same data
   that is out of the graph (requires_grad false). */
FERRY_API ferry_tensor *ferry_clone(ferry_tensor *t);
FERRY_API ferry_tensor *ferry_detach(ferry_tensor *t);
/* torch's t.to(device) inside the graph: the values on `device`, and the gradient of the result
   flows back to t's device (ToCopyBackward0), so a model can move activations between devices.
   t itself (retained, no new node) when it is there already. Failures as ferry_tensor_to
   (tensor.h). */
FERRY_API ferry_tensor *ferry_to(ferry_tensor *t, ferry_device device);

/* In-place ops. They refuse (FERRY_EINVAL, torch's "a leaf Variable that requires grad is being
   used in an in-place operation.") to modify a leaf that requires grad while grad mode is on, and
   ferry does not record in-place ops in the graph (FERRY_ENOTSUP when `t` or `other` would need
   it): optimizers and initializers run them under ferry_no_grad_enter(). `other` must broadcast
   to t's shape and its dtype must convert to t's (no float into int64, as torch). */
FERRY_API ferry_status ferry_zero_(ferry_tensor *t);
FERRY_API ferry_status ferry_fill_(ferry_tensor *t, double value);
FERRY_API ferry_status ferry_add_(ferry_tensor *t, ferry_tensor *other);
FERRY_API ferry_status ferry_mul_(ferry_tensor *t, ferry_tensor *other);
/* t += alpha * other (torch's t.add_(other, alpha=alpha)). */
FERRY_API ferry_status ferry_add_scaled_(ferry_tensor *t, ferry_tensor *other, double alpha);
FERRY_API ferry_status ferry_add_scalar_(ferry_tensor *t, double value);
FERRY_API ferry_status ferry_mul_scalar_(ferry_tensor *t, double value);
/* t += value * a * b and t += value * a / b (torch's addcmul_ / addcdiv_, for optimizers). */
FERRY_API ferry_status ferry_addcmul_(ferry_tensor *t, ferry_tensor *a, ferry_tensor *b,
                                      double value);
FERRY_API ferry_status ferry_addcdiv_(ferry_tensor *t, ferry_tensor *a, ferry_tensor *b,
                                      double value);

#ifdef __cplusplus
}
#endif
#endif
