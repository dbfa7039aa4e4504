/* How the bytes of a device tensor in a message cross (docs/cuda.md, "Transfer paths"):
   direct, where the fabric reads and writes the device memory itself (the emulation's devices
   are host memory; real GPUs only where the provider offers FI_HMEM, which tcp and shm do not),
   or staged through pinned host memory from a pool kept for reuse: the copy to the host is
   queued on the device's stream, so it reads what work queued before the send wrote, and the
   copy back into fresh device memory on the receiver is done before the values are used.
   FERRY_DEVICE_PATH=staged|direct|auto (auto by default) in the environment forces one. */
#ifndef FERRY_RPC_DEVICE_STAGE_H
#define FERRY_RPC_DEVICE_STAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/error.h"
#include "ferry/tensor.h"
#include "rpc/wire.h"

/* True when the bytes of a tensor on `device` go straight between the fabric and device
   memory; false: staged. */
bool ferry__device_path_direct(ferry_device device);

/* Sender: the bytes [data, data + len) of device tensor `t`, made readable for the fabric in
   att->data (direct: the device memory once its stream passed the queued work; staged: a pool
   buffer holding a copy, in att->staging). FERRY_OK, or the device's error naming it. */
ferry_status ferry__device_stage_out(const ferry_tensor *t, void *data, size_t len,
                                     ferry__att *att);
/* Receiver: where the bytes for `storage` (on `device`) land: its memory (direct), or a pool
   buffer (att->staging) that ferry__wire_atts_land copies into it. */
ferry_status ferry__device_stage_in(ferry_device device, void *storage_data, size_t len,
                                    ferry__att *att);

/* A pinned buffer of at least n bytes from the pool (NULL after ferry_set_error), and back. */
void *ferry__stage_buffer_get(size_t n);
void ferry__stage_buffer_put(void *p);

#endif
