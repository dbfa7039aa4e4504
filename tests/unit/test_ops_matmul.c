/* matmul and linear against values computed with torch 1.13 (tests/data/ops_reference.h, written
   by tests/data/make_ops_data.py), including transposed operands read in place and broadcast
   batch dims. */
#include "data/ops_reference.h"
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
    EXPECT_REF(mm, F32, S(2, 4), 1e-7, ref_mm_mat_mat);
    EXPECT_REF(mv, F32, S(2), 0, ref_mm_mat_vec);
    EXPECT_REF(vm, F32, S(3), 0, ref_mm_vec_mat);
    EXPECT0(dot, F32, 0, ref_mm_dot);
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
    EXPECT_REF(y, F64, S(2, 3, 5), 1e-12, ref_mm_batched);
    /* (b^T)^T through two transposed views equals b: same product */
    ferry_tensor *bt = ferry_transpose(b, 0, 1), *btc = ferry_tensor_contiguous(bt);
    ferry_tensor *btt = ferry_transpose(btc, 0, 1), *y2 = ferry_matmul(a, btt);
    cr_assert(ferry_allclose(y, y2, 0, 1e-12));
    ferry_tensor *r[] = {a0, a1, a, b0, b, y, bt, btc, btt, y2};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_matmul, broadcasts_batch_dims_of_both_operands_when_they_differ, .timeout = 10)
{
    ferry_tensor *a0 = ferry_arange(0, 12, 1, F64), *a1 = ferry_reshape(a0, 4, S(2, 1, 2, 3));
    ferry_tensor *a = ferry_mul_scalar(a1, 0.5);
    ferry_tensor *b0 = ferry_arange(0, 18, 1, F64), *b1 = ferry_reshape(b0, 3, S(3, 3, 2));
    ferry_tensor *b = ferry_sub_scalar(b1, 4);
    ferry_tensor *y = ferry_matmul(a, b); /* [2, 1] and [3] batch dims give [2, 3] */
    EXPECT_REF(y, F64, S(2, 3, 2, 2), 1e-12, ref_mm_batch_broadcast);
    ferry_tensor *r[] = {a0, a1, a, b0, b1, b, y};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_matmul, linear_matches_torch_when_given_bias, .timeout = 10)
{
    ferry_tensor *x = MK(F32, S(2, 3), 0, 1, 2, 3, 4, 5);
    ferry_tensor *w = MK(F32, S(2, 3), 1, 0, -1, 2, 1, 0), *bias = MK(F32, S(2), 0.5, -0.5);
    ferry_tensor *y = ferry_linear(x, w, bias), *yn = ferry_linear(x, w, NULL);
    EXPECT_REF(y, F32, S(2, 2), 0, ref_mm_linear_bias);
    EXPECT_REF(yn, F32, S(2, 2), 0, ref_mm_linear_no_bias);
    ferry_tensor *x30 = ferry_arange(0, 12, 1, F32), *x31 = ferry_reshape(x30, 3, S(2, 2, 3));
    ferry_tensor *x3 = ferry_sub_scalar(x31, 5), *y3 = ferry_linear(x3, w, bias);
    EXPECT_REF(y3, F32, S(2, 2, 2), 0, ref_mm_linear_3d); /* leading dims pass through */
    ferry_tensor *i1 = MK(I64, S(1, 3), 1, 2, 3), *i2 = MK(I64, S(3, 1), 1, 2, 3);
    ferry_tensor *ii = ferry_matmul(i1, i2);
    EXPECT_REF(ii, I64, S(1, 1), 0, ref_mm_int64);
    ferry_tensor *r[] = {x, w, bias, y, yn, x30, x31, x3, y3, i1, i2, ii};
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
