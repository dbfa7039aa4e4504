/* matmul and linear against values computed with torch 1.13, including transposed operands
   read in place and broadcast batch dims. */
#include "test_ops_util.h"

#define F32 FERRY_FLOAT32
#define F64 FERRY_FLOAT64
#define I64 FERRY_INT64

Test(ops_matmul, matches_torch_when_operands_are_vectors_or_matrices, .timeout = 10)
{
    ferry_tensor *a = MK(F32, S(2, 3), 0, 1, 2, 3, 4, 5);
    ferry_tensor *b = MK(F32, S(3, 4), 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5);
    ferry_tensor *v3 = MK(F32, S(3), 1, 2, 3), *v2 = MK(F32, S(2), 1, -1);
    ferry_tensor *mm = ferry_matmul(a, b), *mv = ferry_matmul(a, v3), *vm = ferry_matmul(v2, a);
    ferry_tensor *dot = ferry_matmul(v3, v3);
    EXPECT(mm, F32, S(2, 4), 1e-7, 10.0, 11.5, 13.0, 14.5, 28.0, 34.0, 40.0, 46.0);
    EXPECT(mv, F32, S(2), 0, 8, 26);
    EXPECT(vm, F32, S(3), 0, -3, -3, -3);
    EXPECT0(dot, F32, 0, 14);
    ferry_tensor *r[] = {a, b, v3, v2, mm, mv, vm, dot};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_matmul, broadcasts_batches_and_reads_transposed_views_when_batched, .timeout = 10)
{
    ferry_tensor *a0 = ferry_arange(0, 24, 1, F64), *a1 = ferry_reshape(a0, 3, S(2, 3, 4));
    ferry_tensor *a = ferry_mul_scalar(a1, 0.1);
    ferry_tensor *b0 = ferry_arange(0, 20, 1, F64), *b = ferry_reshape(b0, 2, S(4, 5));
    ferry_tensor *y = ferry_matmul(a, b);
    EXPECT(y, F64, S(2, 3, 5), 1e-12, 7.0, 7.6, 8.2, 8.8, 9.4, 19.0, 21.2, 23.4, 25.6, 27.8, 31.0,
           34.8, 38.6, 42.4, 46.2, 43.0, 48.4, 53.8, 59.2, 64.6, 55.0, 62.0, 69.0, 76.0, 83.0, 67.0,
           75.6, 84.2, 92.8, 101.4);
    /* (b^T)^T through two transposed views equals b: same product */
    ferry_tensor *bt = ferry_transpose(b, 0, 1), *btc = ferry_tensor_contiguous(bt);
    ferry_tensor *btt = ferry_transpose(btc, 0, 1), *y2 = ferry_matmul(a, btt);
    cr_assert(ferry_allclose(y, y2, 0, 1e-12));
    ferry_tensor *r[] = {a0, a1, a, b0, b, y, bt, btc, btt, y2};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_matmul, linear_matches_torch_when_given_bias, .timeout = 10)
{
    ferry_tensor *x = MK(F32, S(2, 3), 0, 1, 2, 3, 4, 5);
    ferry_tensor *w = MK(F32, S(2, 3), 1, 0, -1, 2, 1, 0), *bias = MK(F32, S(2), 0.5, -0.5);
    ferry_tensor *y = ferry_linear(x, w, bias), *yn = ferry_linear(x, w, NULL);
    EXPECT(y, F32, S(2, 2), 0, -1.5, 0.5, -1.5, 9.5);
    EXPECT(yn, F32, S(2, 2), 0, -2, 1, -2, 10);
    ferry_tensor *i1 = MK(I64, S(1, 3), 1, 2, 3), *i2 = MK(I64, S(3, 1), 1, 2, 3);
    ferry_tensor *ii = ferry_matmul(i1, i2);
    EXPECT(ii, I64, S(1, 1), 0, 14);
    ferry_tensor *r[] = {x, w, bias, y, yn, i1, i2, ii};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_matmul, fails_like_torch_when_shapes_or_dtypes_disagree, .timeout = 10)
{
    ferry_tensor *a = ferry_ones(2, S(2, 3), F32), *b = ferry_ones(2, S(2, 4), F32);
    ferry_tensor *d = ferry_ones(2, S(3, 4), F64);
    ferry_tensor *v3 = ferry_ones(1, S(3), F32), *v4 = ferry_ones(1, S(4), F32);
    EXPECT_ERROR(ferry_matmul(a, b), FERRY_EINVAL,
                 "mat1 and mat2 shapes cannot be multiplied (2x3 and 2x4)");
    EXPECT_ERROR(ferry_matmul(a, d), FERRY_EINVAL, "expected scalar type Float but found Double");
    EXPECT_ERROR(ferry_matmul(v3, v4), FERRY_EINVAL,
                 "inconsistent tensor size, expected tensor [3] and src [4]");
    ferry_tensor *r[] = {a, b, d, v3, v4};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}
