/* Op benchmark: how close ferry's kernels come to their limits on this machine.
   - matmul: ferry_matmul on float32 1024x1024 operands against cblas_sgemm called directly on
     the same buffers (ferry adds dispatch, checks and the output allocation); target >= 0.9.
   - add: 16M-element float32 adds against memcpy of one 16M-float (64 MiB) buffer. Bytes are
     counted as read plus written: an add reads 2 x 64 MiB and writes 64 MiB (192 MiB), memcpy
     reads 64 MiB and writes 64 MiB (128 MiB); the ratio compares the two bandwidths (target
     >= 0.5). ferry_add_ (in place) measures the kernel alone. ferry_add allocates its 64 MiB
     result on every call; freed blocks of a megabyte or more are kept for reuse by the tensor
     storage, so after the first call its result lands in memory already mapped. The first touch
     of fresh pages costs several times the arithmetic, which the last row shows for scale.
   Each figure is the best of several runs. Prints a table on stdout. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/ops.h"
#include "ferry/tensor.h"
#include "bench/bench_util.h"

static int bench_matmul(double *ferry_s, double *blas_s)
{
    const int64_t n = 1024, sizes[2] = {n, n};
    ferry_generator *g = ferry_generator_new(1);
    ferry_tensor *a = ferry_randn(2, sizes, FERRY_FLOAT32, g), *b = ferry_randn(2, sizes, FERRY_FLOAT32, g);
    ferry_tensor *c = ferry_tensor_empty(2, sizes, FERRY_FLOAT32, FERRY_DEVICE_CPU);
    ferry_generator_free(g);
    if (a == NULL || b == NULL || c == NULL)
        return 1;
    *ferry_s = *blas_s = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f,
                    ferry_tensor_data(a), (int)n, ferry_tensor_data(b), (int)n, 0.0f,
                    ferry_tensor_data(c), (int)n);
        double t1 = now_s();
        ferry_tensor *y = ferry_matmul(a, b);
        double t2 = now_s();
        if (y == NULL)
            return 1;
        ferry_tensor_release(y);
        if (rep > 0) { /* the first round warms BLAS's threads and buffers */
            *blas_s = t1 - t0 < *blas_s ? t1 - t0 : *blas_s;
            *ferry_s = t2 - t1 < *ferry_s ? t2 - t1 : *ferry_s;
        }
    }
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    ferry_tensor_release(c);
    return 0;
}

typedef struct {
    double add_s, inplace_s, copy_s, fresh_copy_s;
} add_times;

static double best(double cur, double t)
{
    return t < cur ? t : cur;
}

static int bench_add(add_times *t)
{
    int64_t n = 16 << 20;
    size_t bytes = (size_t)n * sizeof(float);
    ferry_tensor *a = ferry_full(1, &n, 1.0, FERRY_FLOAT32), *b = ferry_full(1, &n, 2.0, FERRY_FLOAT32);
    float *src = malloc(bytes), *dst = malloc(bytes);
    if (a == NULL || b == NULL || src == NULL || dst == NULL)
        return 1;
    memset(src, 1, bytes);
    memset(dst, 0, bytes);
    t->add_s = t->inplace_s = t->copy_s = t->fresh_copy_s = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        double t0 = now_s();
        memcpy(dst, src, bytes);
        double t1 = now_s();
        float *fresh = malloc(bytes); /* pays first-touch page faults, as a new tensor does */
        if (fresh == NULL)
            return 1;
        memcpy(fresh, src, bytes);
        double t2 = now_s();
        ferry_tensor *y = ferry_add(a, b);
        double t3 = now_s();
        if (y == NULL || ferry_add_(a, b) != FERRY_OK)
            return 1;
        double t4 = now_s();
        dst[rep] = fresh[rep]; /* keep the copies observable */
        free(fresh);
        ferry_tensor_release(y);
        t->copy_s = best(t->copy_s, t1 - t0);
        t->fresh_copy_s = best(t->fresh_copy_s, t2 - t1);
        t->add_s = best(t->add_s, t3 - t2);
        t->inplace_s = best(t->inplace_s, t4 - t3);
    }
    free(src);
    free(dst);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    return 0;
}

int main(void)
{
    double fm, bm;
    add_times at;
    if (bench_matmul(&fm, &bm) != 0 || bench_add(&at) != 0) {
        fprintf(stderr, "ops_bench: %s\n", ferry_last_error());
        return 1;
    }
    const double flop = 2.0 * 1024 * 1024 * 1024, mib = 1024.0 * 1024.0;
    const double add_bytes = 3.0 * 64 * mib, copy_bytes = 2.0 * 64 * mib;
    double copy_bw = copy_bytes / at.copy_s, fresh_bw = copy_bytes / at.fresh_copy_s;
    printf("%-44s %14s %14s %7s %7s\n", "benchmark", "ferry", "reference", "ratio", "target");
    printf("%-44s %11.1f GF %11.1f GF %7.2f %7s\n", "matmul f32 1024^3 vs cblas_sgemm", flop / fm * 1e-9,
           flop / bm * 1e-9, bm / fm, ">=0.90");
    printf("%-44s %9.2f GB/s %9.2f GB/s %7.2f %7s\n", "add_ f32 16M in place vs memcpy",
           add_bytes / at.inplace_s * 1e-9, copy_bw * 1e-9, add_bytes / at.inplace_s / copy_bw,
           ">=0.50");
    printf("%-44s %9.2f GB/s %9.2f GB/s %7.2f %7s\n", "add f32 16M new result vs memcpy",
           add_bytes / at.add_s * 1e-9, copy_bw * 1e-9, add_bytes / at.add_s / copy_bw, ">=0.50");
    printf("%-44s %9.2f GB/s %9.2f GB/s %7.2f %7s\n", "(memcpy into a fresh malloc, for scale)",
           fresh_bw * 1e-9, copy_bw * 1e-9, fresh_bw / copy_bw, "-");
    printf("bytes counted as read + written: add 192 MiB (two inputs, one output), memcpy 128 MiB\n");
    printf("times (best of 6): matmul %.2f / %.2f ms, add_ %.2f ms, add %.2f ms, memcpy %.2f ms, "
           "memcpy to new buffer %.2f ms\n",
           fm * 1e3, bm * 1e3, at.inplace_s * 1e3, at.add_s * 1e3, at.copy_s * 1e3,
           at.fresh_copy_s * 1e3);
    return 0;
}
