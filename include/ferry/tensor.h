/* Tensors: refcounted, strided views over refcounted storage, as torch's. CPU storage is aligned
   to 64 bytes; device storage lives on a CUDA device (ferry/device.h). All calls are thread-safe as far as the
   objects they touch are not being written by another thread at the same time. */
#ifndef FERRY_TENSOR_H
#define FERRY_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/value.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_MAX_DIMS 16

typedef enum {
    FERRY_FLOAT32,
    FERRY_FLOAT64,
    FERRY_INT64,
    FERRY_INT32,
    FERRY_UINT8,
    FERRY_BOOL,
    FERRY_FLOAT16,
    FERRY_BFLOAT16
} ferry_dtype;
#define FERRY_DTYPE_COUNT 8

/* The kinds of device, at file scope so C++ names them as C does (FERRY_CPU, not
   ferry_device::FERRY_CPU). */
typedef enum { FERRY_CPU, FERRY_CUDA } ferry_device_type;

typedef struct {
    ferry_device_type type;
    int index;
} ferry_device;

/* The CPU, and CUDA device `index`, as values of either language. */
#ifdef __cplusplus
#define FERRY_DEVICE_CPU (ferry_device{FERRY_CPU, 0})
#define FERRY_DEVICE_CUDA(index) (ferry_device{FERRY_CUDA, (index)})
#else
#define FERRY_DEVICE_CPU ((ferry_device){FERRY_CPU, 0})
#define FERRY_DEVICE_CUDA(index) ((ferry_device){FERRY_CUDA, (index)})
#endif

/* Bytes per element (0 for an invalid dtype) and torch's name ("float32", "int64", ...). */
FERRY_API size_t ferry_dtype_size(ferry_dtype dtype);
FERRY_API const char *ferry_dtype_name(ferry_dtype dtype);

/* A seeded random generator (torch.Generator). Not thread-safe: one thread at a time.
   ferry_generator_new returns a generator the caller owns (free it with ferry_generator_free,
   which accepts NULL), or NULL with FERRY_ENOMEM. */
typedef struct ferry_generator ferry_generator;
FERRY_API ferry_generator *ferry_generator_new(uint64_t seed);
FERRY_API void ferry_generator_free(ferry_generator *gen);
/* Reseeds the process-wide default generator used when a NULL generator is passed
   (torch.manual_seed). The default generator is guarded by a lock. */
FERRY_API void ferry_manual_seed(uint64_t seed);

/* Creation. Every call returns a new contiguous tensor (new reference) or NULL with FERRY_EINVAL
   (ndim outside 0..FERRY_MAX_DIMS, NULL sizes with ndim > 0, a negative size, more bytes than
   memory can address, a bad dtype, an unknown device type, a device index this process lacks),
   FERRY_ENOTSUP (a CUDA device where there are none) or FERRY_ENOMEM. Zero-size tensors are valid. `sizes` is borrowed (copied)
   and may be NULL when ndim is 0 (a scalar). */
FERRY_API ferry_tensor *ferry_tensor_empty(int ndim, const int64_t *sizes, ferry_dtype dtype,
                                           ferry_device device);
/* Copies numel * dtype_size bytes from `data` (borrowed, row-major; NULL only when numel is 0,
   else FERRY_EINVAL). */
FERRY_API ferry_tensor *ferry_tensor_from_data(const void *data, int ndim, const int64_t *sizes,
                                               ferry_dtype dtype);
/* Wraps foreign CPU memory without copying; `deleter(data, ctx)` runs on the last release of the
   storage (it may be NULL), so `data` must stay valid until then. On failure the deleter is not
   run and the caller still owns `data`. `strides` (in elements, not negative; FERRY_EINVAL
   otherwise) NULL means contiguous. */
FERRY_API ferry_tensor *ferry_tensor_from_blob(void *data, int ndim, const int64_t *sizes,
                                               const int64_t *strides, ferry_dtype dtype,
                                               void (*deleter)(void *data, void *ctx), void *ctx);
FERRY_API ferry_tensor *ferry_zeros(int ndim, const int64_t *sizes, ferry_dtype dtype);
FERRY_API ferry_tensor *ferry_ones(int ndim, const int64_t *sizes, ferry_dtype dtype);
FERRY_API ferry_tensor *ferry_full(int ndim, const int64_t *sizes, double value, ferry_dtype dtype);
/* torch.arange(start, end, step): ceil((end - start) / step) elements; FERRY_EINVAL for step 0,
   a non-finite argument, or a step whose sign does not lead from start to end. */
FERRY_API ferry_tensor *ferry_arange(double start, double end, double step, ferry_dtype dtype);
/* Normal(0, 1) and uniform [0, 1) samples for floating dtypes (FERRY_EINVAL for others); gen
   NULL = the default generator (locked, so any thread may use it). */
FERRY_API ferry_tensor *ferry_randn(int ndim, const int64_t *sizes, ferry_dtype dtype,
                                    ferry_generator *gen);
FERRY_API ferry_tensor *ferry_rand(int ndim, const int64_t *sizes, ferry_dtype dtype,
                                   ferry_generator *gen);

/* Scalar tensor helpers (ndim 0). */
FERRY_API ferry_tensor *ferry_scalar_tensor(double value, ferry_dtype dtype);

/* Accessors (borrowed results, valid as long as the tensor). ferry_tensor_data points at the
   first element (storage offset applied). A NULL tensor gives NULL/0/false/float32/CPU without
   recording an error, except where a line below says otherwise. */
FERRY_API void *ferry_tensor_data(ferry_tensor *t);
FERRY_API const void *ferry_tensor_data_const(const ferry_tensor *t);
FERRY_API int ferry_tensor_ndim(const ferry_tensor *t);
FERRY_API const int64_t *ferry_tensor_sizes(const ferry_tensor *t);
FERRY_API const int64_t *ferry_tensor_strides(const ferry_tensor *t); /* in elements */
/* Size of one dim (negative dims count from the end); -1 with FERRY_EINVAL for a bad dim or t. */
FERRY_API int64_t ferry_tensor_size(const ferry_tensor *t, int dim);
FERRY_API int64_t ferry_tensor_storage_offset(const ferry_tensor *t); /* in elements */
FERRY_API int64_t ferry_tensor_numel(const ferry_tensor *t);
FERRY_API size_t ferry_tensor_nbytes(const ferry_tensor *t); /* numel * element size */
FERRY_API ferry_dtype ferry_tensor_dtype(const ferry_tensor *t);
FERRY_API ferry_device ferry_tensor_device(const ferry_tensor *t);
FERRY_API bool ferry_tensor_is_contiguous(const ferry_tensor *t);
/* True when a and b share one storage (views of each other). */
FERRY_API bool ferry_tensor_shares_storage(const ferry_tensor *a, const ferry_tensor *b);
/* Element i (row-major logical index) converted to double; NaN with FERRY_EINVAL past the end
   or for a NULL t. */
FERRY_API double ferry_tensor_item_at(const ferry_tensor *t, int64_t i);
/* The single element of a one-element tensor, as double (torch's .item()); NaN with FERRY_EINVAL
   for any other element count. */
FERRY_API double ferry_tensor_item(const ferry_tensor *t);

/* Tensor-level shape calls; they do not record autograd (ferry/ops.h has the graph-aware ones).
   `t` and `sizes` are borrowed. Views share storage with `t` and return a new reference; NULL +
   FERRY_EINVAL on a NULL t or bad dims or shapes (the message names the shapes), FERRY_ENOMEM.
   ferry_tensor_view fails when the strides cannot express the shape; ferry_tensor_reshape copies
   then (torch.reshape). One size may be -1. */
FERRY_API ferry_tensor *ferry_tensor_view(ferry_tensor *t, int ndim, const int64_t *sizes);
FERRY_API ferry_tensor *ferry_tensor_reshape(ferry_tensor *t, int ndim, const int64_t *sizes);
FERRY_API ferry_tensor *ferry_tensor_transpose(ferry_tensor *t, int dim0, int dim1);
/* Python's t[start:end:step] along `dim`, with clamping of start/end like Python; step > 0
   (FERRY_EINVAL otherwise, and for a 0-dim t). */
FERRY_API ferry_tensor *ferry_tensor_slice(ferry_tensor *t, int dim, int64_t start, int64_t end,
                                           int64_t step);
FERRY_API ferry_tensor *ferry_tensor_narrow(ferry_tensor *t, int dim, int64_t start, int64_t length);
/* Copies: a new reference, or NULL with FERRY_EINVAL (NULL t, bad dtype) or FERRY_ENOMEM.
   ferry_tensor_contiguous returns `t` itself (retained) when already contiguous, else a
   contiguous copy. */
FERRY_API ferry_tensor *ferry_tensor_contiguous(ferry_tensor *t);
/* A contiguous copy with its own storage. */
FERRY_API ferry_tensor *ferry_tensor_clone_data(const ferry_tensor *t);
/* Copies src's values into dst (same shape; dtype converted; the two may overlap). FERRY_OK,
   FERRY_EINVAL (NULL or shape mismatch), FERRY_ENOMEM (overlapping copy). Both borrowed. */
FERRY_API ferry_status ferry_tensor_copy_(ferry_tensor *dst, const ferry_tensor *src);
/* A contiguous copy converted to `dtype`. */
FERRY_API ferry_tensor *ferry_tensor_to_dtype(const ferry_tensor *t, ferry_dtype dtype);
/* torch's t.to(device): `t` itself (retained) when it is on `device` already, else a copy with
   the same dtype, shape, strides and values there, complete when the call returns (the source
   device's queued work is waited for). FERRY_DEVICE_CUDA(-1) is the thread's current device.
   NULL with FERRY_EINVAL (NULL t, unknown device type, negative or missing index: the message
   names the devices there are), FERRY_ENOTSUP (no CUDA devices, saying why), FERRY_ENOMEM
   (device or host memory), FERRY_EDEVICE. No autograd record (ferry_to in ops.h has one). */
FERRY_API ferry_tensor *ferry_tensor_to(ferry_tensor *t, ferry_device device);

/* torch.equal: same shape, dtype and elements. ferry_allclose: same shape and
   |a - b| <= atol + rtol * |b| everywhere (NaNs unequal), any dtypes. Both borrow their
   arguments and answer false for NULL (and, with FERRY_ENOMEM recorded, when a non-contiguous
   operand cannot be copied). */
FERRY_API bool ferry_tensor_equal(const ferry_tensor *a, const ferry_tensor *b);
FERRY_API bool ferry_allclose(const ferry_tensor *a, const ferry_tensor *b, double rtol, double atol);

/* Writes torch's short human form ("tensor([1., 2.])", "tensor([1, 2], dtype=torch.int32)";
   "tensor(NULL)" for NULL) into buf (NUL-terminated when cap > 0; buf may be NULL when cap is
   0); returns the length it needed, like snprintf. */
FERRY_API size_t ferry_tensor_format(const ferry_tensor *t, char *buf, size_t cap);

/* retain returns `t` with one more reference; release drops one and frees the tensor (and its
   storage reference) with the last. Both accept NULL and are safe from any thread. */
FERRY_API ferry_tensor *ferry_tensor_retain(ferry_tensor *t);
FERRY_API void ferry_tensor_release(ferry_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
