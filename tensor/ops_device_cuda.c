/* The bridge from ops to the CUDA kernels (tensor/cuda_kernels.h) for tensors on real GPUs:
   when an op takes its kernel path, strided geometries for the elementwise and copy kernels,
   and matrix products through cuBLAS, which is opened with dlopen at the first product so
   libferry loads on machines without it. Only built with FERRY_WITH_CUDA. */
#include "tensor/ops_internal.h"

#ifdef FERRY_WITH_CUDA

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/error.h"
#include "tensor/cuda_kernels.h"
#include "tensor/device.h"
#include "tensor/device_cuda.h"

bool ferry__use_kernels_any(size_t n, ferry_tensor *const *ts)
{
    for (size_t i = 0; i < n; i++) {
        const ferry_tensor *t = ts[i];
        if (t != NULL && t->device.type == FERRY_CUDA && !ferry__device_host_accessible(t->device))
            return !ferry__ops_staging_forced();
    }
    return false;
}

void *ferry__kdata(const ferry_tensor *t)
{
    return (char *)t->storage->data + (size_t)t->offset * ferry_dtype_size(t->dtype);
}

void ferry__kgeom_init(ferry__kgeom *g, int ndim, const int64_t *sizes)
{
    memset(g, 0, sizeof *g);
    g->ndim = ndim;
    g->numel = ferry__shape_numel(ndim, sizes);
    if (ndim > 0)
        memcpy(g->sizes, sizes, (size_t)ndim * sizeof(int64_t));
}

void ferry__kgeom_operand(ferry__kgeom *g, int k, const ferry_tensor *t)
{
    for (int i = 0; i < g->ndim; i++) {
        int j = i - (g->ndim - t->ndim);
        g->strides[k][i] = (j < 0 || (t->sizes[j] == 1 && g->sizes[i] != 1)) ? 0 : t->strides[j];
    }
}

ferry_status ferry__kern_copy(ferry_tensor *dst, const ferry_tensor *src)
{
    ferry__kgeom g;
    ferry__kgeom_init(&g, dst->ndim, dst->sizes);
    ferry__kgeom_operand(&g, 0, dst);
    ferry__kgeom_operand(&g, 1, src);
    return ferry__k_copy(dst->device.index, ferry__kdata(dst), dst->dtype, ferry__kdata(src),
                         src->dtype, &g);
}

ferry_status ferry__kern_binary(int op, ferry_tensor *out, ferry_tensor *a, ferry_tensor *b,
                                double alpha)
{
    ferry__kgeom g;
    ferry__kgeom_init(&g, out->ndim, out->sizes);
    ferry__kgeom_operand(&g, 0, out);
    double bval = 0;
    const void *bp = NULL;
    if (b->device.type == FERRY_CPU) /* a CPU scalar: its value rides along */
        bval = ferry_tensor_item(b);
    else
        bp = ferry__kdata(b);
    ferry__kgeom_operand(&g, 2, b);
    /* a CPU scalar on the left goes over first (one element) */
    ferry_tensor *da = a->device.type == FERRY_CPU ? ferry_tensor_to(a, out->device)
                                                   : ferry_tensor_retain(a);
    if (da == NULL)
        return ferry_last_status();
    ferry__kgeom_operand(&g, 1, da);
    ferry_status rc = ferry__k_binary(out->device.index, op, out->dtype, ferry__kdata(out),
                                      ferry__kdata(da), bp, bval, alpha, &g);
    ferry_tensor_release(da);
    return rc;
}

ferry_status ferry__device_fill(ferry_tensor *t, double value)
{
    if (!ferry__use_kernels(1, &t) || !ferry_tensor_is_contiguous(t))
        return FERRY_ENOTSUP;
    return ferry__k_fill(t->device.index, ferry__kdata(t), t->dtype, ferry_tensor_numel(t), value);
}

/* ---- cuBLAS, opened at the first product ---- */

typedef int ferry__cublas_status;
typedef void *ferry__cublas_handle;
typedef ferry__cublas_status (*create_fn)(ferry__cublas_handle *);
typedef ferry__cublas_status (*set_stream_fn)(ferry__cublas_handle, void *);
typedef ferry__cublas_status (*sgemm_fn)(ferry__cublas_handle, int, int, int, int, int,
                                         const float *, const float *, int, long long,
                                         const float *, int, long long, const float *, float *,
                                         int, long long, int);
typedef ferry__cublas_status (*dgemm_fn)(ferry__cublas_handle, int, int, int, int, int,
                                         const double *, const double *, int, long long,
                                         const double *, int, long long, const double *,
                                         double *, int, long long, int);

#define MAX_GPUS 64

static struct {
    pthread_once_t once;
    void *lib;
    create_fn create;
    set_stream_fn set_stream;
    sgemm_fn sgemm;
    dgemm_fn dgemm;
    char why[256];
    pthread_mutex_t lock; /* one handle per device, used under the lock */
    ferry__cublas_handle handles[MAX_GPUS];
} blas = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

static void blas_open(void)
{
    blas.lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
    if (blas.lib == NULL) {
        const char *e = dlerror();
        snprintf(blas.why, sizeof blas.why, "%s", e ? e : "not found");
        return;
    }
    blas.create = (create_fn)dlsym(blas.lib, "cublasCreate_v2");
    blas.set_stream = (set_stream_fn)dlsym(blas.lib, "cublasSetStream_v2");
    blas.sgemm = (sgemm_fn)dlsym(blas.lib, "cublasSgemmStridedBatched");
    blas.dgemm = (dgemm_fn)dlsym(blas.lib, "cublasDgemmStridedBatched");
    if (!blas.create || !blas.set_stream || !blas.sgemm || !blas.dgemm) {
        snprintf(blas.why, sizeof blas.why, "libcublas.so.13 lacks a gemm entry point");
        dlclose(blas.lib);
        blas.lib = NULL;
    }
}

ferry_status ferry__kern_gemm(int dev, ferry_dtype dtype, int64_t m, int64_t n, int64_t k,
                              const void *a, const void *b, void *c, int64_t batch)
{
    pthread_once(&blas.once, blas_open);
    if (blas.lib == NULL)
        return ferry__fail(FERRY_ENOTSUP, "matmul on cuda:%d: cuBLAS could not be loaded (%s)",
                           dev, blas.why);
    if (dev < 0 || dev >= MAX_GPUS || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX ||
        batch > INT32_MAX)
        return ferry__fail(FERRY_EINVAL, "matmul on cuda:%d: sizes beyond cuBLAS's int range",
                           dev);
    void *stream = ferry__cuda_stream(dev);
    if (stream == NULL)
        return ferry_last_status();
    pthread_mutex_lock(&blas.lock);
    ferry__cublas_status st = 0;
    if (blas.handles[dev] == NULL)
        st = blas.create(&blas.handles[dev]);
    if (st == 0)
        st = blas.set_stream(blas.handles[dev], stream);
    /* Row-major C[m, n] = A[m, k] B[k, n] is column-major C^T = B^T A^T: no transposes. */
    if (st == 0 && dtype == FERRY_FLOAT32) {
        const float one = 1.0f, zero = 0.0f;
        st = blas.sgemm(blas.handles[dev], 0, 0, (int)n, (int)m, (int)k, &one, b, (int)n,
                        (long long)(k * n), a, (int)k, (long long)(m * k), &zero, c, (int)n,
                        (long long)(m * n), (int)batch);
    } else if (st == 0) {
        const double one = 1.0, zero = 0.0;
        st = blas.dgemm(blas.handles[dev], 0, 0, (int)n, (int)m, (int)k, &one, b, (int)n,
                        (long long)(k * n), a, (int)k, (long long)(m * k), &zero, c, (int)n,
                        (long long)(m * n), (int)batch);
    }
    pthread_mutex_unlock(&blas.lock);
    if (st != 0)
        return ferry__fail(FERRY_EDEVICE, "matmul on cuda:%d: cuBLAS failed with status %d", dev,
                           st);
    return FERRY_OK;
}

#endif
