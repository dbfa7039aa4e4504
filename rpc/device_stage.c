/* Transfer paths of device tensors and the pinned staging pool (see device_stage.h). */
#include "rpc/device_stage.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tensor/device.h"
#include "tensor/tensor_impl.h"

/* ---- the path ---- */

enum { PATH_AUTO, PATH_STAGED, PATH_DIRECT };
static int path_mode;
static pthread_once_t path_once = PTHREAD_ONCE_INIT;

static void read_path(void)
{
    const char *v = getenv("FERRY_DEVICE_PATH");
    path_mode = v && !strcmp(v, "staged")   ? PATH_STAGED
                : v && !strcmp(v, "direct") ? PATH_DIRECT
                                            : PATH_AUTO;
}

bool ferry__device_path_direct(ferry_device device)
{
    pthread_once(&path_once, read_path);
    /* Device memory the fabric can address: the emulation's. The transport registers no CUDA
       memory with the provider (FI_HMEM), so real GPU memory is always staged, whatever was
       asked. */
    return path_mode != PATH_STAGED && ferry__device_host_accessible(device);
}

/* ---- the pool ---- */

/* Buffers come in power-of-two classes from 4 KiB; each keeps its class in a header in front.
   Up to KEEP buffers a class wait for reuse; the rest go back to the device layer. */
#define MIN_SHIFT 12
#define N_CLASSES 28
#define KEEP 8
#define HEAD 64

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static void *pool_free[N_CLASSES][KEEP];
static int pool_len[N_CLASSES];

void *ferry__stage_buffer_get(size_t n)
{
    const ferry__device_ops *ops = ferry__device_ops_get();
    if (!ops)
        return ferry__fail_null(FERRY_ENOTSUP, "no device backend to stage %zu bytes with", n);
    int c = 0;
    while (c < N_CLASSES - 1 && ((size_t)1 << (MIN_SHIFT + c)) < n)
        c++;
    size_t size = (size_t)1 << (MIN_SHIFT + c);
    if (size < n)
        return ferry__fail_null(FERRY_ENOMEM, "%zu bytes are too many to stage at once", n);
    pthread_mutex_lock(&pool_lock);
    void *p = pool_len[c] ? pool_free[c][--pool_len[c]] : NULL;
    pthread_mutex_unlock(&pool_lock);
    if (!p) {
        ferry_status rc = ops->host_alloc(size + HEAD, &p);
        if (rc != FERRY_OK)
            return NULL;
        *(int *)p = c;
    }
    return (uint8_t *)p + HEAD;
}

void ferry__stage_buffer_put(void *buf)
{
    if (!buf)
        return;
    void *p = (uint8_t *)buf - HEAD;
    int c = *(int *)p;
    pthread_mutex_lock(&pool_lock);
    bool kept = pool_len[c] < KEEP;
    if (kept)
        pool_free[c][pool_len[c]++] = p;
    pthread_mutex_unlock(&pool_lock);
    if (!kept)
        ferry__device_ops_get()->host_free(p);
}

/* ---- sender and receiver ---- */

ferry_status ferry__device_stage_out(const ferry_tensor *t, void *data, size_t len,
                                     ferry__att *att)
{
    int index = t->device.index;
    att->data = data;
    if (len == 0)
        return FERRY_OK;
    if (ferry__device_path_direct(t->device))
        return ferry__device_sync(index);
    const ferry__device_ops *ops = ferry__device_ops_get();
    ferry__stream *stream = ferry__device_stream(index);
    if (!ops || !stream)
        return ferry_last_status();
    void *buf = ferry__stage_buffer_get(len);
    if (!buf)
        return ferry_last_status();
    /* On the device's own stream: after every write queued there before this send. */
    ferry_status rc = ops->copy(stream, buf, data, len, FERRY__COPY_D2H);
    if (rc == FERRY_OK)
        rc = ops->stream_sync(stream);
    if (rc != FERRY_OK) {
        ferry__stage_buffer_put(buf);
        return rc;
    }
    att->data = buf;
    att->staging = buf;
    return FERRY_OK;
}

ferry_status ferry__device_stage_in(ferry_device device, void *storage_data, size_t len,
                                    ferry__att *att)
{
    att->data = storage_data;
    if (len == 0)
        return FERRY_OK;
    if (ferry__device_path_direct(device)) /* the fabric writes it: nothing queued may touch it */
        return ferry__device_sync(device.index);
    void *buf = ferry__stage_buffer_get(len);
    if (!buf)
        return ferry_last_status();
    att->data = buf;
    att->staging = buf;
    att->device_data = storage_data;
    att->device_index = device.index;
    return FERRY_OK;
}
