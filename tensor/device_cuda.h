/* What the CUDA pieces of ferry share (the backend in device_cuda.c, the kernels in tensor/cuda,
   the NCCL channel): the raw stream of a device and the one place CUDA's error codes become
   ferry's. Only built with FERRY_WITH_CUDA; plain C types, so C and CUDA C++ both include it. */
#ifndef FERRY_TENSOR_DEVICE_CUDA_H
#define FERRY_TENSOR_DEVICE_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

#include "ferry/error.h"

/* The cudaStream_t (as a pointer) of the stream ferry orders its work on for device `index`
   (ferry__device_stream), or NULL with the error recorded. */
void *ferry__cuda_stream(int index);

/* Records a failure of the CUDA call `what` on cuda:`device` (-1: none in particular) with the
   runtime's own text and returns its ferry code: FERRY_ENOMEM for cudaErrorMemoryAllocation,
   FERRY_ENOTSUP when there is no device or driver, else FERRY_EDEVICE. `cuda_error` is a
   cudaError_t. FERRY_OK (nothing recorded) for cudaSuccess. */
ferry_status ferry__cuda_fail(int cuda_error, int device, const char *what);

#ifdef __cplusplus
}
#endif
#endif
