/* Reductions and the softmax family against values computed with torch 1.13
   (tests/data/ops_reference.h, written by tests/data/make_ops_data.py). */
#include "data/ops_reference.h"
#include "test_ops_util.h"

#define F32 FERRY_FLOAT32
#define F64 FERRY_FLOAT64
#define I64 FERRY_INT64

static ferry_tensor *sample(void)
{
    return MK(F32, S(2, 3), -1.5, 0.0, 2.0, 0.5, -0.25, 3.0);
}

Test(ops_reduce, sum_and_mean_match_torch_when_reducing_all_or_some_dims, .timeout = 10)
{
    ferry_tensor *x = sample();
    ferry_tensor *s = ferry_sum(x), *m = ferry_mean(x);
    EXPECT0(s, F32, 1e-7, ref_red_sum);
    EXPECT0(m, F32, 1e-7, ref_red_mean);
    ferry_tensor *s0 = ferry_sum_dim(x, 1, (int[]){0}, false);
    EXPECT_REF(s0, F32, S(3), 1e-7, ref_red_sum_dim0);
    ferry_tensor *m1 = ferry_mean_dim(x, 1, (int[]){-1}, true);
    EXPECT_REF(m1, F32, S(2, 1), 1e-7, ref_red_mean_dim_last_keep);
    ferry_tensor *s1 = ferry_sum_dim(x, 1, (int[]){1}, true);
    EXPECT_REF(s1, F32, S(2, 1), 1e-7, ref_red_sum_dim1_keep);
    ferry_tensor *m0 = ferry_mean_dim(x, 1, (int[]){0}, false);
    EXPECT_REF(m0, F32, S(3), 1e-7, ref_red_mean_dim0);
    ferry_tensor *sa = ferry_sum_dim(x, 0, NULL, true); /* no dims listed: all, as torch's [] */
    EXPECT_REF(sa, F32, S(1, 1), 1e-7, ref_red_sum_nodims_keep);
    ferry_tensor *y = ferry_arange(0, 24, 1, F64), *y3 = ferry_reshape(y, 3, S(2, 3, 4));
    ferry_tensor *s02 = ferry_sum_dim(y3, 2, (int[]){0, 2}, false);
    EXPECT_REF(s02, F64, S(3), 0, ref_red_sum_dims02);
    ferry_tensor *m12 = ferry_mean_dim(y3, 2, (int[]){1, 2}, true);
    EXPECT_REF(m12, F64, S(2, 1, 1), 0, ref_red_mean_dims12_keep);
    ferry_tensor *yi = ferry_arange(0, 5, 1, I64), *si = ferry_sum(yi);
    EXPECT0(si, I64, 0, ref_red_sum_int64);
    EXPECT_ERROR(ferry_mean(yi), FERRY_EINVAL, "mean(): could not infer output dtype");
    EXPECT_ERROR(ferry_sum_dim(x, 1, (int[]){5}, false), FERRY_EINVAL,
                 "Dimension out of range (expected to be in range of [-2, 1], but got 5)");
    ferry_tensor *r[] = {x, s, m, s0, m1, s1, m0, sa, y, y3, s02, m12, yi, si};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_reduce, max_returns_values_and_int64_indices_when_given_a_dim, .timeout = 10)
{
    ferry_tensor *x = sample(), *idx = NULL, *idx0 = NULL;
    ferry_tensor *v = ferry_max_dim(x, 1, false, &idx);
    EXPECT_REF(v, F32, S(2), 0, ref_red_max_dim1);
    EXPECT_REF(idx, I64, S(2), 0, ref_red_max_dim1_idx);
    ferry_tensor *v0 = ferry_max_dim(x, 0, true, &idx0);
    EXPECT_REF(v0, F32, S(1, 3), 0, ref_red_max_dim0_keep);
    EXPECT_REF(idx0, I64, S(1, 3), 0, ref_red_max_dim0_keep_idx);
    ferry_tensor *all = ferry_max(x);
    EXPECT0(all, F32, 0, ref_red_max);
    ferry_tensor *e = ferry_zeros(1, S(0), F32);
    EXPECT_ERROR(ferry_max(e), FERRY_EINVAL, "Expected reduction dim to be specified");
    ferry_tensor *r[] = {x, idx, idx0, v, v0, all, e};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_reduce, softmax_family_matches_torch_when_along_either_dim, .timeout = 10)
{
    ferry_tensor *x = sample();
    ferry_tensor *s1 = ferry_softmax(x, 1), *s0 = ferry_softmax(x, 0), *l1 = ferry_log_softmax(x, -1);
    EXPECT_REF(s1, F32, S(2, 3), 1e-6, ref_red_softmax1);
    EXPECT_REF(s0, F32, S(2, 3), 1e-6, ref_red_softmax0);
    EXPECT_REF(l1, F32, S(2, 3), 1e-6, ref_red_log_softmax_last);
    ferry_tensor *l0 = ferry_log_softmax(x, 0);
    EXPECT_REF(l0, F32, S(2, 3), 1e-6, ref_red_log_softmax0);
    ferry_tensor *r[] = {x, s1, s0, l1, l0};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}
