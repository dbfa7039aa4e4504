/* Helpers for the op and autograd tests: building tensors from literal values, comparing them
   with torch's numbers, and a central-difference gradient check in float64. */
#ifndef FERRY_TEST_OPS_UTIL_H
#define FERRY_TEST_OPS_UTIL_H

#include <math.h>
#include <string.h>

#include "common/test_util.h"
#include "ferry/autograd.h"
#include "ferry/ops.h"

/* A tensor of `dtype` and shape `sizes` holding `vals` (row-major). */
static inline ferry_tensor *mk(ferry_dtype dtype, int ndim, const int64_t *sizes, const double *vals)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= sizes[i];
    ferry_tensor *d = ferry_assert_ptr(ferry_tensor_from_data(vals, ndim, sizes, FERRY_FLOAT64));
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_to_dtype(d, dtype));
    ferry_tensor_release(d);
    (void)n;
    return t;
}

/* S(2, 3) is a shape; MK(FERRY_FLOAT32, S(2, 3), 1, 2, 3, 4, 5, 6) a tensor. */
#define S(...) ((int64_t[]){__VA_ARGS__})
#define NDIM(shape) ((int)(sizeof(shape) / sizeof(int64_t)))
#define MK(dtype, shape, ...) mk((dtype), NDIM(shape), (shape), (double[]){__VA_ARGS__})

/* Asserts t has `dtype`, shape `sizes` and values within tol (NaN matches NaN). */
static inline void expect_values(ferry_tensor *t, ferry_dtype dtype, int ndim, const int64_t *sizes,
                                 const double *vals, double tol)
{
    cr_assert_not_null(t, "op failed: %s", ferry_last_error());
    cr_assert_eq(ferry_tensor_dtype(t), dtype, "dtype %s, expected %s",
                 ferry_dtype_name(ferry_tensor_dtype(t)), ferry_dtype_name(dtype));
    cr_assert_eq(ferry_tensor_ndim(t), ndim, "ndim %d, expected %d", ferry_tensor_ndim(t), ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        cr_assert_eq(ferry_tensor_sizes(t)[i], sizes[i], "size %d is %lld, expected %lld", i,
                     (long long)ferry_tensor_sizes(t)[i], (long long)sizes[i]);
        n *= sizes[i];
    }
    for (int64_t i = 0; i < n; i++) {
        double got = ferry_tensor_item_at(t, i), want = vals[i];
        if (isnan(want)) {
            cr_assert(isnan(got), "element %lld: got %.9g, expected nan", (long long)i, got);
        } else if (isinf(want)) {
            cr_assert(got == want, "element %lld: got %.9g, expected %g", (long long)i, got, want);
        } else {
            cr_assert(fabs(got - want) <= tol * (1.0 + fabs(want)),
                      "element %lld: got %.9g, expected %.9g", (long long)i, got, want);
        }
    }
}

#define EXPECT(t, dtype, shape, tol, ...)                                                        \
    expect_values((t), (dtype), NDIM(shape), (shape), (double[]){__VA_ARGS__}, (tol))
/* Like EXPECT, with the expected values in a `ref` array (tests/data/ops_reference.h, torch's
   numbers); also asserts the array holds exactly one value per element of `shape`, so a stale
   header cannot pass by checking a prefix. */
#define EXPECT_REF(t, dtype, shape, tol, ref)                                                    \
    do {                                                                                         \
        int64_t n_ = 1;                                                                          \
        for (int k_ = 0; k_ < NDIM(shape); k_++)                                                 \
            n_ *= (shape)[k_];                                                                   \
        cr_assert_eq(n_, (int64_t)(sizeof(ref) / sizeof((ref)[0])), "%s has %zu values for %lld " \
                     "elements", #ref, sizeof(ref) / sizeof((ref)[0]), (long long)n_);           \
        expect_values((t), (dtype), NDIM(shape), (shape), (ref), (tol));                         \
    } while (0)
/* A 0-dim result. */
#define EXPECT0(t, dtype, tol, val) expect_values((t), (dtype), 0, NULL, (double[]){(val)}, (tol))

/* Asserts the last call failed with `code` and a message containing `text`. */
#define EXPECT_ERROR(ptr, code, text)                                                            \
    do {                                                                                         \
        cr_assert_null((ptr));                                                                   \
        cr_assert_eq(ferry_last_status(), (code), "status %s", ferry_strerror(ferry_last_status())); \
        cr_assert(strstr(ferry_last_error(), (text)) != NULL, "message \"%s\" lacks \"%s\"",     \
                  ferry_last_error(), (text));                                                   \
    } while (0)

/* A function of n float64 inputs returning a tensor (any shape); NULL on failure. */
typedef ferry_tensor *(*gc_fn)(ferry_tensor **inputs, void *user);

/* sum(f(inputs) * w) for fixed weights w 1, 2, 3, ... (mod 7, minus 3) so every output element
   contributes a different amount. */
static inline ferry_tensor *gc_loss(gc_fn f, ferry_tensor **inputs, void *user)
{
    ferry_tensor *y = f(inputs, user);
    if (y == NULL)
        return NULL;
    int64_t n = ferry_tensor_numel(y);
    ferry_tensor *w = ferry_tensor_empty(ferry_tensor_ndim(y), ferry_tensor_sizes(y),
                                         ferry_tensor_dtype(y), FERRY_DEVICE_CPU);
    double *wp = ferry_tensor_data(w);
    for (int64_t i = 0; i < n; i++)
        wp[i] = (double)(i % 7) - 2.5;
    ferry_tensor *yw = ferry_mul(y, w);
    ferry_tensor *loss = ferry_sum(yw);
    ferry_tensor_release(y);
    ferry_tensor_release(w);
    ferry_tensor_release(yw);
    return loss;
}

/* Checks the gradients backward gives for every float64 input that requires grad against
   central differences (eps 1e-6, tolerance atol 1e-5 + rtol 1e-4). */
static inline void gradcheck(gc_fn f, ferry_tensor **inputs, int n, void *user)
{
    for (int k = 0; k < n; k++)
        ferry_tensor_zero_grad(inputs[k]);
    ferry_tensor *loss = ferry_assert_ptr(gc_loss(f, inputs, user));
    ferry_assert_ok(ferry_backward(loss, NULL, false));
    ferry_tensor_release(loss);
    const double eps = 1e-6;
    ferry_no_grad_enter();
    for (int k = 0; k < n; k++) {
        if (!ferry_tensor_requires_grad(inputs[k]))
            continue;
        ferry_tensor *g = ferry_tensor_grad(inputs[k]); /* NULL: unused, so all zeros */
        double *x = ferry_tensor_data(inputs[k]);
        for (int64_t i = 0; i < ferry_tensor_numel(inputs[k]); i++) {
            double keep = x[i];
            x[i] = keep + eps;
            ferry_tensor *lp = ferry_assert_ptr(gc_loss(f, inputs, user));
            x[i] = keep - eps;
            ferry_tensor *lm = ferry_assert_ptr(gc_loss(f, inputs, user));
            x[i] = keep;
            double num = (ferry_tensor_item(lp) - ferry_tensor_item(lm)) / (2 * eps);
            double ana = g ? ferry_tensor_item_at(g, i) : 0.0;
            cr_assert(fabs(num - ana) <= 1e-5 + 1e-4 * fabs(num),
                      "input %d element %lld: analytic %.9g, numeric %.9g", k, (long long)i, ana, num);
            ferry_tensor_release(lp);
            ferry_tensor_release(lm);
        }
        ferry_tensor_release(g);
    }
    ferry_no_grad_exit();
}

/* A float64 leaf that requires grad. */
static inline ferry_tensor *leaf(ferry_tensor *t)
{
    ferry_assert_ok(ferry_tensor_set_requires_grad(t, true));
    return t;
}

#endif
