/* Shared by the op families in tensor/ops_*.c and by autograd/: the list of differentiable ops,
   the record an op hands to autograd, the hook table autograd installs (tensor/ never includes
   autograd/), and helpers for dims, broadcasting, type promotion and dtype conversion. */
#ifndef FERRY_TENSOR_OPS_INTERNAL_H
#define FERRY_TENSOR_OPS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/ops.h"
#include "tensor/tensor_impl.h"

/* Every op that records a graph node. autograd/ keeps one backward formula per entry. */
typedef enum {
    FERRY__OP_ADD, /* scalars[0] = alpha */
    FERRY__OP_SUB, /* scalars[0] = alpha */
    FERRY__OP_MUL,
    FERRY__OP_DIV,
    FERRY__OP_ADD_SCALAR,
    FERRY__OP_SUB_SCALAR,
    FERRY__OP_MUL_SCALAR, /* scalars[0] = the factor */
    FERRY__OP_DIV_SCALAR, /* scalars[0] = the divisor */
    FERRY__OP_POW,        /* scalars[0] = the exponent */
    FERRY__OP_NEG,
    FERRY__OP_ABS,
    FERRY__OP_RELU,
    FERRY__OP_EXP,
    FERRY__OP_LOG,
    FERRY__OP_SQRT,
    FERRY__OP_SIGMOID,
    FERRY__OP_TANH,
    FERRY__OP_GELU,
    FERRY__OP_MATMUL,
    FERRY__OP_SUM,      /* ints: the reduced dims (wrapped), then keepdim last */
    FERRY__OP_MEAN,     /* same as SUM */
    FERRY__OP_MAX,      /* all-reduce; saved: input, result */
    FERRY__OP_MAX_DIM,  /* ints[0] = dim, ints[1] = keepdim; saved: indices */
    FERRY__OP_SOFTMAX,  /* ints[0] = dim; saved: result */
    FERRY__OP_LOG_SOFTMAX,
    FERRY__OP_MSE_LOSS, /* ints[0] = reduction; saved: input, target */
    FERRY__OP_NLL_LOSS, /* ints[0] = reduction; saved: target */
    FERRY__OP_EMBEDDING, /* saved: indices */
    FERRY__OP_DROPOUT,   /* saved: the scaled mask */
    FERRY__OP_CAT,       /* ints[0] = dim */
    FERRY__OP_STACK,     /* ints[0] = dim */
    FERRY__OP_RESHAPE,
    FERRY__OP_TRANSPOSE, /* ints[0], ints[1] = the dims */
    FERRY__OP_NARROW,    /* ints[0] = dim, ints[1] = start */
    FERRY__OP_UNSQUEEZE, /* ints[0] = dim */
    FERRY__OP_SQUEEZE,
    FERRY__OP_INDEX_SELECT, /* ints[0] = dim; saved: index */
    FERRY__OP_CLONE,
    FERRY__OP_TO, /* ints[0], ints[1] = the source device's type and index */
    FERRY__OP_COUNT
} ferry__op;

#define FERRY__OP_MAX_SAVED 3
#define FERRY__OP_MAX_INTS (FERRY_MAX_DIMS + 2)

/* What an op tells autograd about one call. Everything is borrowed for the call; autograd keeps
   detached aliases of the saved tensors (so a saved output never points back at its node). */
typedef struct {
    ferry__op op;
    size_t n_inputs;
    ferry_tensor *const *inputs; /* the differentiable inputs, in the formula's order */
    int n_saved;
    ferry_tensor *saved[FERRY__OP_MAX_SAVED];
    double scalars[2];
    int n_ints;
    int64_t ints[FERRY__OP_MAX_INTS];
} ferry__op_record;

/* Installed by autograd/ the first time a tensor is made to require grad (no tensor can need a
   graph before that, so ops never miss a node). Set once, read-only afterwards. */
typedef struct {
    /* True when grad mode is on for this thread and some input requires grad. */
    bool (*should_record)(size_t n, ferry_tensor *const *inputs);
    /* Makes `output` the result of a new node for `rec`. */
    ferry_status (*record)(const ferry__op_record *rec, ferry_tensor *output);
    /* FERRY_OK when `t` may be modified in place given the other operands. */
    ferry_status (*check_inplace)(ferry_tensor *t, size_t n, ferry_tensor *const *others);
} ferry__autograd_hooks;

void ferry__ops_set_autograd_hooks(const ferry__autograd_hooks *hooks);
bool ferry__ops_should_record(size_t n, ferry_tensor *const *inputs);
/* Records `rec` on `out` when needed; returns `out`, or NULL (out released) on failure. */
ferry_tensor *ferry__ops_record(ferry_tensor *out, const ferry__op_record *rec);
ferry_status ferry__ops_check_inplace(ferry_tensor *t, size_t n, ferry_tensor *const *others);

/* dtypes ferry computes on: float32, float64, int64. FERRY_ENOTSUP naming `op` otherwise, and
   for tensors on a device the host cannot read (those go through a CUDA kernel or staging
   first). A tensor on a host-readable device (the emulation) has its stream synchronized, so the
   CPU kernel may read and write it. */
ferry_status ferry__check_compute(const ferry_tensor *t, const char *op);
/* The same without the host access: a NULL tensor or a dtype ferry does not compute on. */
ferry_status ferry__check_dtype(const ferry_tensor *t, const char *op);

/* ---- devices (tensor/ops_device.c) ----
   Every op computes on the device its operands share and puts its result there. A 0-dim CPU
   tensor may join tensors on a device (torch's CPU scalar); anything else on two devices fails
   with torch's "Expected all tensors to be on the same device, but found at least two devices,
   cuda:0 and cpu!" (the first device that is not the CPU, then the first operand elsewhere). */

/* The device the n tensors (NULL entries skipped) compute on, in *device; FERRY_EINVAL with the
   text above when they mix devices. */
ferry_status ferry__check_devices_any(size_t n, ferry_tensor *const *ts, ferry_device *device);
/* True when some of the n tensors (NULL skipped) is not on the CPU: the one test an op on CPU
   tensors pays for devices, inline. */
static inline bool ferry__any_device(size_t n, ferry_tensor *const *ts)
{
    for (size_t i = 0; i < n; i++)
        if (ts[i] != NULL && ts[i]->device.type != FERRY_CPU)
            return true;
    return false;
}
static inline ferry_status ferry__check_devices(size_t n, ferry_tensor *const *ts,
                                                ferry_device *device)
{
    if (!ferry__any_device(n, ts)) {
        *device = FERRY_DEVICE_CPU;
        return FERRY_OK;
    }
    return ferry__check_devices_any(n, ts, device);
}
/* The device of out = f(a, b): a's unless a is on the CPU. */
static inline ferry_device ferry__device2(const ferry_tensor *a, const ferry_tensor *b)
{
    return a->device.type != FERRY_CPU || b == NULL ? a->device : b->device;
}
/* True when some of the n tensors (NULL skipped) lives on a device the host cannot read (a real
   GPU) and the op has to stage them: copies in host memory, the CPU kernel, the result copied
   back. */
bool ferry__needs_staging_any(size_t n, ferry_tensor *const *ts);
static inline bool ferry__needs_staging(size_t n, ferry_tensor *const *ts)
{
    return ferry__any_device(n, ts) && ferry__needs_staging_any(n, ts);
}
/* Host copies of the n tensors in host[] (NULL stays NULL; CPU tensors are retained) and the
   device the op computes on in *device. On failure nothing is held. */
ferry_status ferry__stage_in(size_t n, ferry_tensor *const *ts, ferry_tensor **host,
                             ferry_device *device);
/* Releases what ferry__stage_in gave. */
void ferry__stage_release(size_t n, ferry_tensor **host);
/* `out` (a host result, consumed; NULL passes through) moved to `device`. */
ferry_tensor *ferry__stage_out(ferry_tensor *out, ferry_device device);
/* Writes the values of `host` (a staged copy of dst, modified in place) back into dst. */
ferry_status ferry__stage_back(ferry_tensor *dst, ferry_tensor *host);
/* In a raw op (one that records nothing) over the n operands `ins`: when one of them lives where
   the host cannot read, runs `expr` -- the same op on the host copies h[0..n-1] -- and returns its
   result moved to the operands' device. */
#define FERRY__STAGE(n, ins, h, expr)                                                        \
    do {                                                                                     \
        if (ferry__needs_staging((n), (ins))) {                                              \
            ferry_tensor *h[(n)];                                                            \
            ferry_device stage_dev_;                                                         \
            if (ferry__stage_in((n), (ins), h, &stage_dev_) != FERRY_OK)                     \
                return NULL;                                                                 \
            ferry_tensor *stage_out_ = (expr);                                               \
            ferry__stage_release((n), h);                                                    \
            return ferry__stage_out(stage_out_, stage_dev_);                                 \
        }                                                                                    \
    } while (0)
/* The CUDA kernel for filling `t` (a device the host cannot write) with value; FERRY_ENOTSUP
   where there is none (no CUDA in this build, or a host-readable device). */
ferry_status ferry__device_fill(ferry_tensor *t, double value);
/* Tests only: makes every device tensor take the staged path, as on a real GPU. */
void ferry__ops_force_staging(bool on);
bool ferry__ops_staging_forced(void);

/* ---- CUDA kernels (tensor/ops_device_cuda.c, tensor/cuda/) ----
   ferry__use_kernels: some of the n tensors is on a real GPU and the op runs its CUDA kernel
   there (false in builds without CUDA, where nothing is on a real GPU). The calls below take
   tensors already checked to share one device and put their work on its stream. */
#include "tensor/cuda_kernels.h" /* the kernels' op numbers; their launchers need CUDA */
#ifdef FERRY_WITH_CUDA
bool ferry__use_kernels_any(size_t n, ferry_tensor *const *ts);
static inline bool ferry__use_kernels(size_t n, ferry_tensor *const *ts)
{
    return ferry__any_device(n, ts) && ferry__use_kernels_any(n, ts);
}
/* The device pointer of t's first element. */
void *ferry__kdata(const ferry_tensor *t);
/* A kernel geometry over (ndim, sizes) and operand k's strides through it (0 where broadcast). */
void ferry__kgeom_init(ferry__kgeom *g, int ndim, const int64_t *sizes);
void ferry__kgeom_operand(ferry__kgeom *g, int k, const ferry_tensor *t);
/* dst = src (same shape, any strides and dtypes). */
ferry_status ferry__kern_copy(ferry_tensor *dst, const ferry_tensor *src);
/* out = a op b with broadcasting (op a FERRY__K_ binary op; all of out's dtype); b may be a
   0-dim CPU tensor. out may be a itself (in-place). */
ferry_status ferry__kern_binary(int op, ferry_tensor *out, ferry_tensor *a, ferry_tensor *b,
                                double alpha);
/* batch row-major products C[m, n] = A[m, k] B[k, n] of contiguous float32/float64 blocks. */
ferry_status ferry__kern_gemm(int dev, ferry_dtype dtype, int64_t m, int64_t n, int64_t k,
                              const void *a, const void *b, void *c, int64_t batch);
#else
static inline bool ferry__use_kernels(size_t n, ferry_tensor *const *ts)
{
    (void)n;
    (void)ts;
    return false;
}
#endif
/* The operand check of an op: the dtype only on its kernel path, else also host access. */
static inline ferry_status ferry__check_operand(const ferry_tensor *t, const char *op,
                                                bool kernels)
{
    return kernels ? ferry__check_dtype(t, op) : ferry__check_compute(t, op);
}

/* A new tensor of the shape filled with `value`, on `device` (any device). */
ferry_tensor *ferry__full_on(int ndim, const int64_t *sizes, double value, ferry_dtype dtype,
                             ferry_device device);
static inline ferry_tensor *ferry__zeros_on(int ndim, const int64_t *sizes, ferry_dtype dtype,
                                            ferry_device device)
{
    return ferry__full_on(ndim, sizes, 0.0, dtype, device);
}
static inline bool ferry__is_floating(ferry_dtype d)
{
    return d == FERRY_FLOAT32 || d == FERRY_FLOAT64;
}
/* torch.result_type of two tensors, and of a tensor with a Python float. */
ferry_dtype ferry__result_type(const ferry_tensor *a, const ferry_tensor *b);
ferry_dtype ferry__result_type_float_scalar(const ferry_tensor *a);
/* Promotes a set of dtypes (cat/stack: no 0-dim special case). */
ferry_dtype ferry__promote(ferry_dtype a, ferry_dtype b);

/* Wraps a possibly negative dim into [0, ndim) (ndim 0 counts as 1, as torch); FERRY_EINVAL with
   "Dimension out of range (expected to be in range of [-2, 1], but got 5)". */
ferry_status ferry__wrap_dim(int dim, int ndim, int *out);

/* The broadcast shape of a and b, or FERRY_EINVAL with torch's message. */
ferry_status ferry__broadcast_shape(int nda, const int64_t *sa, int ndb, const int64_t *sb,
                                    int *nd_out, int64_t *out);

/* A new reference to `t` when it already has `dtype`, else a contiguous converted copy. */
ferry_tensor *ferry__to_dtype_ref(ferry_tensor *t, ferry_dtype dtype);
/* A new reference to `t` when contiguous with `dtype`, else a contiguous converted copy. */
ferry_tensor *ferry__contig_dtype(ferry_tensor *t, ferry_dtype dtype);
/* A new tensor handle over t's data with t's geometry and no autograd state. */
ferry_tensor *ferry__alias(ferry_tensor *t);
/* A view of `t` broadcast (stride 0) to the given shape; FERRY_EINVAL when it does not expand. */
ferry_tensor *ferry__expand(ferry_tensor *t, int ndim, const int64_t *sizes);
/* Sums `t` down to the given shape (the inverse of broadcasting), without recording. */
ferry_tensor *ferry__sum_to(ferry_tensor *t, int ndim, const int64_t *sizes);
/* Same shape test. */
bool ferry__same_shape(const ferry_tensor *a, const ferry_tensor *b);
/* torch's name for a compute dtype (float32, float64, int64) in its type-mismatch messages. */
static inline const char *ferry__torch_type_name(ferry_dtype dt)
{
    return dt == FERRY_FLOAT32 ? "Float" : dt == FERRY_FLOAT64 ? "Double" : "Long";
}

/* Kernels shared between files, none of which record. */
ferry_tensor *ferry__sum_dims_raw(ferry_tensor *t, int ndims, const int *dims, bool keepdim);
ferry_tensor *ferry__matmul_raw(ferry_tensor *a, ferry_tensor *b);
/* out[..., idx[k], ...] += src[..., k, ...] along dim (index_add_ on a contiguous `out`). */
ferry_status ferry__index_add_raw(ferry_tensor *out, int dim, ferry_tensor *index,
                                  ferry_tensor *src);
/* Softmax-family backward helpers (no recording). */
ferry_tensor *ferry__softmax_backward(ferry_tensor *grad, ferry_tensor *result, int dim);
ferry_tensor *ferry__log_softmax_backward(ferry_tensor *grad, ferry_tensor *result, int dim);
/* nll_loss backward: the gradient for `input_shape` given the output grad. */
ferry_tensor *ferry__nll_loss_backward(ferry_tensor *grad, ferry_tensor *target, int ndim,
                                       const int64_t *input_sizes, ferry_dtype dtype,
                                       ferry_reduction reduction);
/* gelu backward: grad * gelu'(x). */
ferry_tensor *ferry__gelu_backward(ferry_tensor *grad, ferry_tensor *x);

#endif
