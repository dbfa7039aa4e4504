/* Devices: which CUDA devices this process has, the calling thread's current one, and how
   device names read ("cpu", "cuda:1", as torch prints them). ferry works the same on real GPUs
   and on an emulation that pretends to have N devices in host memory (FERRY_EMULATE_DEVICES=N
   in the environment, read once, at the first device call): everything above the device layer
   (device maps, transfers, stream order, errors) runs the same code either way. Also read once:
   FERRY_EMULATE_DEVICE_MEMORY (bytes per emulated device), FERRY_EMULATE_DEVICE_DELAY_US (each
   queued operation waits that long, so a missing stream wait reads stale data) and
   FERRY_DEVICE_CACHE_BYTES (freed device memory kept per device for reuse; 0 = none).
   docs/cuda.md has the rules. Every call is thread-safe. */
#ifndef FERRY_DEVICE_H
#define FERRY_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/error.h"
#include "ferry/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* torch.cuda.device_count(): the devices this process can use (emulated ones under
   FERRY_EMULATE_DEVICES), 0 without a GPU, a driver, or CUDA in this build. Never fails. */
FERRY_API int ferry_cuda_device_count(void);
/* torch.cuda.is_available(): ferry_cuda_device_count() > 0. */
FERRY_API bool ferry_cuda_is_available(void);
/* What the devices are: "cuda" (real GPUs), "emulated", or "none". A static string. */
FERRY_API const char *ferry_device_backend(void);

/* The calling thread's current device (torch.cuda.set_device / current_device): the one
   ferry_tensor_empty and friends mean by FERRY_DEVICE_CUDA(-1), and whose stream work is ordered
   on. Starts at 0. set: FERRY_OK, or FERRY_EINVAL naming the index and the devices there are. */
FERRY_API ferry_status ferry_cuda_set_device(int index);
FERRY_API int ferry_cuda_current_device(void);

/* torch.cuda.synchronize(index): waits until the work queued on the device's stream (copies,
   kernels) is done. index -1 = the current device. FERRY_OK, FERRY_EINVAL (no such device),
   FERRY_EDEVICE (the device failed; the message says how). */
FERRY_API ferry_status ferry_cuda_synchronize(int index);

/* Writes "cpu" or "cuda:<index>" into buf like snprintf (NUL-terminated when cap > 0) and
   returns the length it needed. Any device, valid or not ("cuda:-1", "device type 7:0"). */
FERRY_API size_t ferry_device_format(ferry_device device, char *buf, size_t cap);
/* Reads "cpu", "cuda" (the current device), or "cuda:<index>" into *out. FERRY_OK or
   FERRY_EINVAL naming the string; it does not check that the device exists. */
FERRY_API ferry_status ferry_device_parse(const char *text, ferry_device *out);

#ifdef __cplusplus
}
#endif
#endif
