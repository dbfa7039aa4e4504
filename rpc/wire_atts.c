/* Attachment lists of a message (rpc/wire.h): freeing them, with the tensors, staging buffers
   and failures they hold, and landing the staged device tensors once their bytes arrived. */
#include "rpc/wire.h"

#include <stdint.h>

#include "core/alloc.h"
#include "core/error.h"
#include "rpc/device_stage.h"
#include "tensor/device.h"

void ferry__wire_atts_free(ferry__att *atts, size_t n)
{
    if (!atts)
        return;
    for (size_t i = 0; i < n; i++) {
        ferry_tensor_release(atts[i].tensor);
        ferry__stage_buffer_put(atts[i].staging);
        ferry__free(atts[i].failure);
    }
    ferry__free(atts);
}

ferry_status ferry__wire_atts_land(ferry__att *atts, size_t n)
{
    const ferry__device_ops *ops = NULL;
    uint64_t used = 0; /* devices copied to, below 64 */
    ferry_status rc = FERRY_OK;
    for (size_t i = 0; i < n; i++)
        if (atts[i].failure)
            return ferry_set_error(atts[i].failure_rc, "%s", atts[i].failure);
    for (size_t i = 0; i < n && rc == FERRY_OK; i++) {
        ferry__att *a = &atts[i];
        if (!a->device_data)
            continue;
        ops = ops ? ops : ferry__device_ops_get();
        ferry__stream *stream = ferry__device_stream(a->device_index);
        rc = ops && stream ? ops->copy(stream, a->device_data, a->data, a->len, FERRY__COPY_H2D)
                           : ferry_last_status();
        if (a->device_index < 64)
            used |= (uint64_t)1 << a->device_index;
    }
    for (int d = 0; d < 64 && used; d++) {
        if (!(used & ((uint64_t)1 << d)))
            continue;
        used &= ~((uint64_t)1 << d);
        ferry_status src = ferry__device_sync(d);
        if (rc == FERRY_OK)
            rc = src;
    }
    return rc;
}
