// ferry's CUDA kernels behind tensor/cuda_kernels.h: fill, strided copy with dtype conversion,
// broadcast binary and unary maths, sum / max over [outer, n, inner], the softmax family, the
// nll_loss passes and index_select / index_add. Every launcher runs on the device's ferry
// stream and checks the launch through ferry__cuda_fail. The element formulas follow the CPU
// kernels in tensor/ops_*.c.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "tensor/cuda_kernels.h"
#include "tensor/device_cuda.h"

namespace {

const int kThreads = 256;

// Grid size for n work items, capped (the kernels stride over the rest).
unsigned blocks_for(int64_t n)
{
    int64_t b = (n + kThreads - 1) / kThreads;
    return (unsigned)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

// The device becomes current for the launch; the caller's current device comes back after.
struct on_device {
    int prev = -1;
    explicit on_device(int dev)
    {
        if (cudaGetDevice(&prev) != cudaSuccess)
            prev = -1;
        if (prev != dev)
            cudaSetDevice(dev);
    }
    ~on_device()
    {
        int now = -1;
        if (prev >= 0 && cudaGetDevice(&now) == cudaSuccess && now != prev)
            cudaSetDevice(prev);
    }
};

cudaStream_t stream_of(int dev)
{
    return (cudaStream_t)ferry__cuda_stream(dev);
}

ferry_status launched(int dev, const char *what)
{
    return ferry__cuda_fail((int)cudaGetLastError(), dev, what);
}

#define FOR_EACH(i, n)                                                                    \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);               \
         i += (int64_t)blockDim.x * gridDim.x)

// Offsets of element i of the shape in operands 0..k-1.
template <int K>
__device__ void offsets(const ferry__kgeom &g, int64_t i, int64_t *off)
{
    for (int k = 0; k < K; k++)
        off[k] = 0;
    for (int d = g.ndim - 1; d >= 0; d--) {
        int64_t idx = i % g.sizes[d];
        i /= g.sizes[d];
        for (int k = 0; k < K; k++)
            off[k] += idx * g.strides[k][d];
    }
}

__device__ double load(const void *p, ferry_dtype dt, int64_t i)
{
    switch (dt) {
    case FERRY_FLOAT32: return ((const float *)p)[i];
    case FERRY_FLOAT64: return ((const double *)p)[i];
    default: return (double)((const int64_t *)p)[i];
    }
}

__device__ void store(void *p, ferry_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case FERRY_FLOAT32: ((float *)p)[i] = (float)v; break;
    case FERRY_FLOAT64: ((double *)p)[i] = v; break;
    default: ((int64_t *)p)[i] = (int64_t)v; break;
    }
}

template <typename T>
__global__ void fill_kernel(T *dst, int64_t n, T v)
{
    FOR_EACH(i, n) dst[i] = v;
}

__global__ void copy_kernel(char *dst, ferry_dtype ddt, const char *src, ferry_dtype sdt,
                            ferry__kgeom g)
{
    FOR_EACH(i, g.numel) {
        int64_t off[2];
        offsets<2>(g, i, off);
        if (ddt == FERRY_INT64 && sdt == FERRY_INT64) // exact past 2^53
            ((int64_t *)dst)[off[0]] = ((const int64_t *)src)[off[1]];
        else
            store(dst, ddt, off[0], load(src, sdt, off[1]));
    }
}

template <typename T>
__device__ T binop(int op, T x, T y, T alpha)
{
    switch (op) {
    case FERRY__K_ADD: return x + y;
    case FERRY__K_SUB: return x - y;
    case FERRY__K_MUL: return x * y;
    case FERRY__K_DIV: return x / y;
    default: return x + alpha * y;
    }
}

__device__ int64_t binop_i64(int op, int64_t x, int64_t y, int64_t alpha)
{
    uint64_t a = (uint64_t)x, b = (uint64_t)y; // wrap-around as torch's int64
    switch (op) {
    case FERRY__K_ADD: return (int64_t)(a + b);
    case FERRY__K_SUB: return (int64_t)(a - b);
    case FERRY__K_MUL: return (int64_t)(a * b);
    default: return (int64_t)(a + (uint64_t)alpha * b);
    }
}

template <typename T>
__global__ void binary_kernel(int op, T *out, const T *a, const T *b, T bval, T alpha,
                              ferry__kgeom g)
{
    FOR_EACH(i, g.numel) {
        int64_t off[3];
        offsets<3>(g, i, off);
        T y = b ? b[off[2]] : bval;
        out[off[0]] = binop<T>(op, a[off[1]], y, alpha);
    }
}

__global__ void binary_i64_kernel(int op, int64_t *out, const int64_t *a, const int64_t *b,
                                  int64_t bval, int64_t alpha, ferry__kgeom g)
{
    FOR_EACH(i, g.numel) {
        int64_t off[3];
        offsets<3>(g, i, off);
        int64_t y = b ? b[off[2]] : bval;
        out[off[0]] = binop_i64(op, a[off[1]], y, alpha);
    }
}

__device__ float un_f32(int op, float x, float e)
{
    switch (op) {
    case FERRY__K_NEG: return -x;
    case FERRY__K_ABS: return fabsf(x);
    case FERRY__K_RELU: return x > 0.0f ? x : (x != x ? x : 0.0f);
    case FERRY__K_EXP: return expf(x);
    case FERRY__K_LOG: return logf(x);
    case FERRY__K_SQRT: return sqrtf(x);
    case FERRY__K_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case FERRY__K_TANH: return tanhf(x);
    case FERRY__K_GELU: return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    case FERRY__K_GELU_SLOPE:
        return 0.5f * (1.0f + erff(x * (float)M_SQRT1_2)) +
               x * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2) * expf(-0.5f * x * x);
    default: return e == 2.0f ? x * x : e == 0.5f ? sqrtf(x) : powf(x, e);
    }
}

__device__ double un_f64(int op, double x, double e)
{
    switch (op) {
    case FERRY__K_NEG: return -x;
    case FERRY__K_ABS: return fabs(x);
    case FERRY__K_RELU: return x > 0.0 ? x : (x != x ? x : 0.0);
    case FERRY__K_EXP: return exp(x);
    case FERRY__K_LOG: return log(x);
    case FERRY__K_SQRT: return sqrt(x);
    case FERRY__K_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case FERRY__K_TANH: return tanh(x);
    case FERRY__K_GELU: return 0.5 * x * (1.0 + erf(x * M_SQRT1_2));
    case FERRY__K_SIGN: return (double)((x > 0) - (x < 0));
    case FERRY__K_POSITIVE: return x > 0 ? 1.0 : 0.0;
    case FERRY__K_SIGMOID_SLOPE: return x * (1.0 - x);
    case FERRY__K_TANH_SLOPE: return 1.0 - x * x;
    case FERRY__K_HALF_OVER: return 0.5 / x;
    case FERRY__K_GELU_SLOPE:
        return 0.5 * (1.0 + erf(x * M_SQRT1_2)) + x * (0.5 * M_2_SQRTPI * M_SQRT1_2) * exp(-0.5 * x * x);
    default: return e == 2.0 ? x * x : e == 0.5 ? sqrt(x) : pow(x, e);
    }
}

__device__ int64_t un_i64(int op, int64_t x)
{
    switch (op) {
    case FERRY__K_NEG: return (int64_t)(0 - (uint64_t)x);
    case FERRY__K_ABS: return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
    default: return x > 0 ? x : 0; // relu; the others compute in float32
    }
}

__global__ void unary_kernel(int op, ferry_dtype dt, void *out, const void *x, int64_t n,
                             double e)
{
    FOR_EACH(i, n) {
        if (dt == FERRY_FLOAT32)
            ((float *)out)[i] = un_f32(op, ((const float *)x)[i], (float)e);
        else if (dt == FERRY_FLOAT64)
            ((double *)out)[i] = un_f64(op, ((const double *)x)[i], e);
        else
            ((int64_t *)out)[i] = un_i64(op, ((const int64_t *)x)[i]);
    }
}

__global__ void sum_kernel(ferry_dtype dt, const void *x, void *out, int64_t outer, int64_t n,
                           int64_t inner)
{
    FOR_EACH(t, outer * inner) {
        int64_t o = t / inner, j = t % inner, base = o * n * inner + j;
        if (dt == FERRY_INT64) {
            uint64_t s = 0;
            for (int64_t k = 0; k < n; k++)
                s += (uint64_t)((const int64_t *)x)[base + k * inner];
            ((int64_t *)out)[t] = (int64_t)s;
        } else {
            double s = 0.0;
            for (int64_t k = 0; k < n; k++)
                s += load(x, dt, base + k * inner);
            store(out, dt, t, s);
        }
    }
}

// True when element i beats element j for max (NaN wins, as torch propagates it).
__device__ bool beats(const void *p, ferry_dtype dt, int64_t i, int64_t j)
{
    if (dt == FERRY_INT64)
        return ((const int64_t *)p)[i] > ((const int64_t *)p)[j];
    double x = load(p, dt, i), y = load(p, dt, j);
    return (x > y || isnan(x)) && !isnan(y);
}

__global__ void max_kernel(ferry_dtype dt, const void *x, void *vals, int64_t *idx,
                           int64_t outer, int64_t n, int64_t inner)
{
    FOR_EACH(t, outer * inner) {
        int64_t o = t / inner, j = t % inner, base = o * n * inner + j, best = 0;
        for (int64_t k = 1; k < n; k++)
            if (beats(x, dt, base + k * inner, base + best * inner))
                best = k;
        if (dt == FERRY_INT64)
            ((int64_t *)vals)[t] = ((const int64_t *)x)[base + best * inner];
        else
            store(vals, dt, t, load(x, dt, base + best * inner));
        if (idx)
            idx[t] = best;
    }
}

__global__ void softmax_kernel(int kind, const double *x, const double *g, double *o,
                               int64_t outer, int64_t n, int64_t st)
{
    FOR_EACH(t, outer * st) {
        int64_t base = (t / st) * n * st + t % st;
        const double *xl = x + base;
        double *ol = o + base;
        if (kind == FERRY__K_SOFTMAX || kind == FERRY__K_LOG_SOFTMAX) {
            double m = -INFINITY, s = 0.0;
            for (int64_t k = 0; k < n; k++)
                m = xl[k * st] > m || isnan(xl[k * st]) ? xl[k * st] : m;
            if (isinf(m) && m < 0)
                m = 0.0;
            for (int64_t k = 0; k < n; k++)
                s += exp(xl[k * st] - m);
            double ls = log(s);
            for (int64_t k = 0; k < n; k++)
                ol[k * st] = kind == FERRY__K_SOFTMAX ? exp(xl[k * st] - m) / s
                                                      : xl[k * st] - m - ls;
            continue;
        }
        const double *gl = g + base;
        double s = 0.0;
        for (int64_t k = 0; k < n; k++)
            s += kind == FERRY__K_SOFTMAX_BACK ? gl[k * st] * xl[k * st] : gl[k * st];
        for (int64_t k = 0; k < n; k++)
            ol[k * st] = kind == FERRY__K_SOFTMAX_BACK ? xl[k * st] * (gl[k * st] - s)
                                                       : gl[k * st] - exp(xl[k * st]) * s;
    }
}

// One thread walks the batch in order, as the CPU does, so the sum is the CPU's.
__global__ void nll_kernel(const double *x, const int64_t *tp, double *per, double *stats,
                           int64_t n, int64_t c, int64_t ignore)
{
    if (blockIdx.x != 0 || threadIdx.x != 0)
        return;
    double total = 0.0, counted = 0.0;
    stats[2] = NAN;
    for (int64_t i = 0; i < n; i++) {
        if (tp[i] == ignore) {
            per[i] = 0.0;
            continue;
        }
        if (tp[i] < 0 || tp[i] >= c) {
            stats[2] = (double)tp[i];
            break;
        }
        per[i] = -x[i * c + tp[i]];
        total += per[i];
        counted += 1.0;
    }
    stats[0] = total;
    stats[1] = counted;
}

__global__ void nll_backward_kernel(const double *g, const int64_t *tp, double *gi, int64_t n,
                                    int64_t c, int reduction, int64_t ignore)
{
    if (blockIdx.x != 0 || threadIdx.x != 0)
        return;
    int64_t counted = 0;
    for (int64_t i = 0; i < n; i++)
        counted += tp[i] != ignore;
    for (int64_t i = 0; i < n; i++) {
        if (tp[i] == ignore || tp[i] < 0 || tp[i] >= c)
            continue;
        double gv = reduction == 0 ? g[i] : reduction == 2 ? g[0] : g[0] / (double)counted;
        gi[i * c + tp[i]] = -gv;
    }
}

__global__ void index_select_kernel(size_t row, const char *x, const int64_t *idx, char *out,
                                    int64_t outer, int64_t n, int64_t len, int32_t *bad)
{
    FOR_EACH(t, outer * len * (int64_t)row) {
        int64_t b = t % (int64_t)row, ok = t / (int64_t)row, k = ok % len, o = ok / len;
        int64_t at = idx[k] < 0 ? idx[k] + n : idx[k];
        if (at < 0 || at >= n) {
            *bad = 1;
            continue;
        }
        out[t] = x[(o * n + at) * (int64_t)row + b];
    }
}

template <typename T>
__global__ void index_add_kernel(T *out, const int64_t *idx, const T *src, int64_t outer,
                                 int64_t n, int64_t len, int64_t inner)
{
    FOR_EACH(t, outer * len * inner) {
        int64_t j = t % inner, ok = t / inner, k = ok % len, o = ok / len;
        atomicAdd(&out[(o * n + idx[k]) * inner + j], src[t]);
    }
}

} // namespace

extern "C" {

ferry_status ferry__k_fill(int dev, void *dst, ferry_dtype dtype, int64_t n, double value)
{
    if (n <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    if (dtype == FERRY_FLOAT32)
        fill_kernel<float><<<blocks_for(n), kThreads, 0, s>>>((float *)dst, n, (float)value);
    else if (dtype == FERRY_FLOAT64)
        fill_kernel<double><<<blocks_for(n), kThreads, 0, s>>>((double *)dst, n, value);
    else
        fill_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>((int64_t *)dst, n,
                                                                (int64_t)value);
    return launched(dev, "fill kernel");
}

ferry_status ferry__k_copy(int dev, void *dst, ferry_dtype ddtype, const void *src,
                           ferry_dtype sdtype, const ferry__kgeom *g)
{
    if (g->numel <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    copy_kernel<<<blocks_for(g->numel), kThreads, 0, s>>>((char *)dst, ddtype, (const char *)src,
                                                          sdtype, *g);
    return launched(dev, "copy kernel");
}

ferry_status ferry__k_binary(int dev, int op, ferry_dtype dtype, void *out, const void *a,
                             const void *b, double bval, double alpha, const ferry__kgeom *g)
{
    if (g->numel <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    unsigned nb = blocks_for(g->numel);
    if (dtype == FERRY_FLOAT32)
        binary_kernel<float><<<nb, kThreads, 0, s>>>(op, (float *)out, (const float *)a,
                                                     (const float *)b, (float)bval,
                                                     (float)alpha, *g);
    else if (dtype == FERRY_FLOAT64)
        binary_kernel<double><<<nb, kThreads, 0, s>>>(op, (double *)out, (const double *)a,
                                                      (const double *)b, bval, alpha, *g);
    else
        binary_i64_kernel<<<nb, kThreads, 0, s>>>(op, (int64_t *)out, (const int64_t *)a,
                                                  (const int64_t *)b, (int64_t)bval,
                                                  (int64_t)alpha, *g);
    return launched(dev, "elementwise kernel");
}

ferry_status ferry__k_unary(int dev, int op, ferry_dtype dtype, void *out, const void *x,
                            int64_t n, double e)
{
    if (n <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    unary_kernel<<<blocks_for(n), kThreads, 0, s>>>(op, dtype, out, x, n, e);
    return launched(dev, "unary kernel");
}

ferry_status ferry__k_sum(int dev, ferry_dtype dtype, const void *x, void *out, int64_t outer,
                          int64_t n, int64_t inner)
{
    if (outer * inner <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    sum_kernel<<<blocks_for(outer * inner), kThreads, 0, s>>>(dtype, x, out, outer, n, inner);
    return launched(dev, "sum kernel");
}

ferry_status ferry__k_max(int dev, ferry_dtype dtype, const void *x, void *vals, int64_t *idx,
                          int64_t outer, int64_t n, int64_t inner)
{
    if (outer * inner <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    max_kernel<<<blocks_for(outer * inner), kThreads, 0, s>>>(dtype, x, vals, idx, outer, n,
                                                              inner);
    return launched(dev, "max kernel");
}

ferry_status ferry__k_softmax(int dev, int kind, const double *x, const double *g, double *out,
                              int64_t outer, int64_t n, int64_t inner)
{
    if (outer * inner <= 0 || n <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    softmax_kernel<<<blocks_for(outer * inner), kThreads, 0, s>>>(kind, x, g, out, outer, n,
                                                                  inner);
    return launched(dev, "softmax kernel");
}

ferry_status ferry__k_nll(int dev, const double *x, const int64_t *target, double *per,
                          double *stats, int64_t n, int64_t c, int64_t ignore_index)
{
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    nll_kernel<<<1, 1, 0, s>>>(x, target, per, stats, n, c, ignore_index);
    return launched(dev, "nll_loss kernel");
}

ferry_status ferry__k_nll_backward(int dev, const double *g, const int64_t *target, double *gi,
                                   int64_t n, int64_t c, int reduction, int64_t ignore_index)
{
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    nll_backward_kernel<<<1, 1, 0, s>>>(g, target, gi, n, c, reduction, ignore_index);
    return launched(dev, "nll_loss backward kernel");
}

ferry_status ferry__k_index_select(int dev, size_t row, const void *x, const int64_t *idx,
                                   void *out, int64_t outer, int64_t n, int64_t len,
                                   int32_t *bad)
{
    int64_t total = outer * len * (int64_t)row;
    if (total <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    index_select_kernel<<<blocks_for(total), kThreads, 0, s>>>(row, (const char *)x, idx,
                                                               (char *)out, outer, n, len, bad);
    return launched(dev, "index_select kernel");
}

ferry_status ferry__k_index_add(int dev, ferry_dtype dtype, void *out, const int64_t *idx,
                                const void *src, int64_t outer, int64_t n, int64_t len,
                                int64_t inner)
{
    int64_t total = outer * len * inner;
    if (total <= 0)
        return FERRY_OK;
    on_device on(dev);
    cudaStream_t s = stream_of(dev);
    if (!s)
        return ferry_last_status();
    if (dtype == FERRY_FLOAT32)
        index_add_kernel<float><<<blocks_for(total), kThreads, 0, s>>>(
            (float *)out, idx, (const float *)src, outer, n, len, inner);
    else if (dtype == FERRY_FLOAT64) // int64 gradients do not exist: nothing to add, as the CPU
        index_add_kernel<double><<<blocks_for(total), kThreads, 0, s>>>(
            (double *)out, idx, (const double *)src, outer, n, len, inner);
    return launched(dev, "index_add kernel");
}

} // extern "C"
