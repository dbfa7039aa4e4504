/* The layout of ferry_tensor and its storage, shared by tensor/, autograd/ and the codec. */
#ifndef FERRY_TENSOR_IMPL_H
#define FERRY_TENSOR_IMPL_H

#include "core/refcount.h"
#include "ferry/tensor.h"

typedef struct ferry_storage {
    ferry__ref ref;
    void *data;       /* 64-byte aligned when ferry allocated it */
    size_t nbytes;
    ferry_device device;
    void (*deleter)(void *data, void *ctx); /* NULL: ferry__free_aligned(data) */
    void *deleter_ctx;
    bool is_foreign;  /* deleter owns data (possibly nothing to do) */
} ferry_storage;

struct ferry_tensor {
    ferry__ref ref;
    ferry_storage *storage;
    int64_t offset; /* elements */
    int ndim;
    int64_t sizes[FERRY_MAX_DIMS];
    int64_t strides[FERRY_MAX_DIMS]; /* elements */
    ferry_dtype dtype;
    ferry_device device;
    /* Autograd state, owned by autograd/ (requires_grad, grad, grad_fn). NULL for plain tensors.
       Freed through the hook below when the tensor goes. */
    void *autograd;
};

/* autograd/ (above tensor) registers how to free its per-tensor state, and how to read and set
   requires_grad, so modules beside it (the wire codec) can carry the flag without depending on
   autograd. Set once at start-up, read-only after. */
typedef struct {
    void (*free)(void *autograd);
    bool (*requires_grad)(const ferry_tensor *t);
    ferry_status (*set_requires_grad)(ferry_tensor *t, bool requires_grad);
} ferry__tensor_autograd_ops;
void ferry__tensor_set_autograd_ops(const ferry__tensor_autograd_ops *ops);
/* t.requires_grad (false without autograd state); t.requires_grad_(flag) through the ops
   (FERRY_ENOTSUP when autograd is not linked in, else its status). */
bool ferry__tensor_requires_grad(const ferry_tensor *t);
ferry_status ferry__tensor_set_requires_grad(ferry_tensor *t, bool requires_grad);

/* Storage with one reference: a new one of nbytes (64-byte aligned, uninitialized), or one
   wrapping foreign memory whose `deleter` (NULL: none) runs on the last release. NULL on
   failure: FERRY_ENOTSUP for a CUDA device, FERRY_EINVAL for an unknown device or NULL data,
   FERRY_ENOMEM; a failed wrap leaves `data` with the caller. */
ferry_storage *ferry__storage_new(size_t nbytes, ferry_device device);
ferry_storage *ferry__storage_wrap(void *data, size_t nbytes, ferry_device device,
                                   void (*deleter)(void *, void *), void *ctx);
void ferry__storage_retain(ferry_storage *s);
void ferry__storage_release(ferry_storage *s);

/* A new tensor (one reference) over `storage`, which it retains (the caller keeps its own
   reference), with the given geometry; strides NULL = contiguous. NULL with FERRY_EINVAL when
   the view does not fit inside the storage, FERRY_ENOMEM. */
ferry_tensor *ferry__tensor_make(ferry_storage *storage, int64_t offset, int ndim,
                                 const int64_t *sizes, const int64_t *strides, ferry_dtype dtype);

/* numel of a shape, or -1 on overflow of int64 / negative sizes. */
int64_t ferry__shape_numel(int ndim, const int64_t *sizes);
/* Fills contiguous (row-major) strides. */
void ferry__contiguous_strides(int ndim, const int64_t *sizes, int64_t *strides);
/* Formats a shape as "[2, 3]" into buf. */
const char *ferry__shape_str(int ndim, const int64_t *sizes, char *buf, size_t cap);
/* Element i as double / store a double into element i, for any dtype (slow path helpers). */
double ferry__load_as_double(const void *p, ferry_dtype dtype);
void ferry__store_from_double(void *p, ferry_dtype dtype, double v);
/* Half and bfloat16 conversions. */
float ferry__half_to_float(uint16_t h);
uint16_t ferry__float_to_half(float f);
float ferry__bf16_to_float(uint16_t b);
uint16_t ferry__float_to_bf16(float f);

#endif
