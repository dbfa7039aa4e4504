/* Reductions and the softmax family against values computed with torch 1.13. */
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
    EXPECT0(s, F32, 1e-7, 3.75);
    EXPECT0(m, F32, 1e-7, 0.625);
    ferry_tensor *s0 = ferry_sum_dim(x, 1, (int[]){0}, false);
    EXPECT(s0, F32, S(3), 1e-7, -1.0, -0.25, 5.0);
    ferry_tensor *m1 = ferry_mean_dim(x, 1, (int[]){-1}, true);
    EXPECT(m1, F32, S(2, 1), 1e-7, 0.1666666716337204, 1.0833333730697632);
    ferry_tensor *y = ferry_arange(0, 24, 1, F64), *y3 = ferry_reshape(y, 3, S(2, 3, 4));
    ferry_tensor *s02 = ferry_sum_dim(y3, 2, (int[]){0, 2}, false);
    EXPECT(s02, F64, S(3), 0, 60, 92, 124);
    ferry_tensor *m12 = ferry_mean_dim(y3, 2, (int[]){1, 2}, true);
    EXPECT(m12, F64, S(2, 1, 1), 0, 5.5, 17.5);
    ferry_tensor *yi = ferry_arange(0, 5, 1, I64), *si = ferry_sum(yi);
    EXPECT0(si, I64, 0, 10);
    EXPECT_ERROR(ferry_mean(yi), FERRY_EINVAL, "mean(): could not infer output dtype");
    EXPECT_ERROR(ferry_sum_dim(x, 1, (int[]){5}, false), FERRY_EINVAL,
                 "Dimension out of range (expected to be in range of [-2, 1], but got 5)");
    ferry_tensor *r[] = {x, s, m, s0, m1, y, y3, s02, m12, yi, si};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_reduce, max_returns_values_and_int64_indices_when_given_a_dim, .timeout = 10)
{
    ferry_tensor *x = sample(), *idx = NULL, *idx0 = NULL;
    ferry_tensor *v = ferry_max_dim(x, 1, false, &idx);
    EXPECT(v, F32, S(2), 0, 2.0, 3.0);
    EXPECT(idx, I64, S(2), 0, 2, 2);
    ferry_tensor *v0 = ferry_max_dim(x, 0, true, &idx0);
    EXPECT(v0, F32, S(1, 3), 0, 0.5, 0.0, 3.0);
    EXPECT(idx0, I64, S(1, 3), 0, 1, 0, 1);
    ferry_tensor *all = ferry_max(x);
    EXPECT0(all, F32, 0, 3.0);
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
    EXPECT(s1, F32, S(2, 3), 1e-6, 0.025908654555678368, 0.1161145344376564, 0.8579767942428589,
           0.07323399931192398, 0.03459329158067703, 0.8921727538108826);
    EXPECT(s0, F32, S(2, 3), 1e-6, 0.11920291930437088, 0.562176525592804, 0.2689414322376251,
           0.8807970285415649, 0.43782350420951843, 0.7310585975646973);
    EXPECT(l1, F32, S(2, 3), 1e-6, -3.6531782150268555, -2.1531782150268555, -0.15317824482917786,
           -2.614095449447632, -3.364095449447632, -0.11409548670053482);
    ferry_tensor *r[] = {x, s1, s0, l1};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}
