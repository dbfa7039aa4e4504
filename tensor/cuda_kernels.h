/* The C interface of ferry's CUDA kernels (tensor/cuda/kernels.cu): plain pointers to device
   memory, element geometries and dtypes, so C and CUDA C++ both include it. Each launcher runs
   on device `dev`'s ferry stream (ferry__cuda_stream), returns before the kernel ran, and
   returns FERRY_OK or the launch error through ferry__cuda_fail. Only built with
   FERRY_WITH_CUDA; tensor/ops_device_cuda.c turns ferry tensors into these calls. */
#ifndef FERRY_TENSOR_CUDA_KERNELS_H
#define FERRY_TENSOR_CUDA_KERNELS_H

#include <stdint.h>

#include "ferry/error.h"
#include "ferry/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A strided walk over one shape: element i (row-major over sizes) of operand k sits at
   offset[k] + sum(index[d] * strides[k][d]) elements from its base. */
typedef struct {
    int ndim;
    int64_t numel;
    int64_t sizes[FERRY_MAX_DIMS];
    int64_t strides[3][FERRY_MAX_DIMS];
} ferry__kgeom;

/* Binary ops of the elementwise family (ops_elementwise.c's order). */
enum { FERRY__K_ADD, FERRY__K_SUB, FERRY__K_MUL, FERRY__K_DIV, FERRY__K_ADD_ALPHA };
/* Unary ops (ops_elementwise.c's order), then the slopes backward formulas multiply by: sign(x),
   x > 0, y * (1 - y), 1 - y * y, 0.5 / y (float64 only) and gelu's derivative. */
enum {
    FERRY__K_NEG, FERRY__K_ABS, FERRY__K_RELU, FERRY__K_EXP, FERRY__K_LOG, FERRY__K_SQRT,
    FERRY__K_SIGMOID, FERRY__K_TANH, FERRY__K_GELU, FERRY__K_POW,
    FERRY__K_SIGN, FERRY__K_POSITIVE, FERRY__K_SIGMOID_SLOPE, FERRY__K_TANH_SLOPE,
    FERRY__K_HALF_OVER, FERRY__K_GELU_SLOPE
};
/* Softmax family (ops_reduce.c's order). */
enum { FERRY__K_SOFTMAX, FERRY__K_LOG_SOFTMAX, FERRY__K_SOFTMAX_BACK, FERRY__K_LOG_SOFTMAX_BACK };

/* n elements of `dtype` at dst set to value. */
ferry_status ferry__k_fill(int dev, void *dst, ferry_dtype dtype, int64_t n, double value);
/* dst[g, strides 0] = src[g, strides 1], converting sdtype to ddtype. */
ferry_status ferry__k_copy(int dev, void *dst, ferry_dtype ddtype, const void *src,
                           ferry_dtype sdtype, const ferry__kgeom *g);
/* out[strides 0] = a[strides 1] op b[strides 2] (b NULL: the scalar bval), all of dtype. */
ferry_status ferry__k_binary(int dev, int op, ferry_dtype dtype, void *out, const void *a,
                             const void *b, double bval, double alpha, const ferry__kgeom *g);
/* out[i] = op(x[i]) for n contiguous elements; e is pow's exponent. */
ferry_status ferry__k_unary(int dev, int op, ferry_dtype dtype, void *out, const void *x,
                            int64_t n, double e);
/* Contiguous x viewed as [outer, n, inner]: out[o, j] = sum over k (float sums in double). */
ferry_status ferry__k_sum(int dev, ferry_dtype dtype, const void *x, void *out, int64_t outer,
                          int64_t n, int64_t inner);
/* The same for max: values and (idx non-NULL) the first position of each maximum, NaN wins. */
ferry_status ferry__k_max(int dev, ferry_dtype dtype, const void *x, void *vals, int64_t *idx,
                          int64_t outer, int64_t n, int64_t inner);
/* Softmax-family lines of float64 [outer, n, inner]: forward from x, backward from (g, y=x). */
ferry_status ferry__k_softmax(int dev, int kind, const double *x, const double *g, double *out,
                              int64_t outer, int64_t n, int64_t inner);
/* nll_loss forward over float64 log-probabilities x [n, c]: per[i], and in stats[0] the total,
   stats[1] the count of targets not ignored, stats[2] the first bad target (as a double) or
   NaN when none. One sequential pass, the CPU's order. */
ferry_status ferry__k_nll(int dev, const double *x, const int64_t *target, double *per,
                          double *stats, int64_t n, int64_t c, int64_t ignore_index);
/* nll_loss backward into zeroed float64 gi [n, c] from float64 g (n values for reduction none,
   else one), counting targets not ignored. reduction: 0 none, 1 mean, 2 sum. */
ferry_status ferry__k_nll_backward(int dev, const double *g, const int64_t *target, double *gi,
                                   int64_t n, int64_t c, int reduction, int64_t ignore_index);
/* Rows of `row` bytes: out[o, k] = x[o, idx[k]] for contiguous x [outer, n, row] (negative
   indices count from the end); *bad (device memory) is set to 1 for an index out of range. */
ferry_status ferry__k_index_select(int dev, size_t row, const void *x, const int64_t *idx,
                                   void *out, int64_t outer, int64_t n, int64_t len,
                                   int32_t *bad);
/* out[o, idx[k], j] += src[o, k, j] (atomic) for float32 / float64 contiguous operands. */
ferry_status ferry__k_index_add(int dev, ferry_dtype dtype, void *out, const int64_t *idx,
                                const void *src, int64_t outer, int64_t n, int64_t len,
                                int64_t inner);

#ifdef __cplusplus
}
#endif
#endif
