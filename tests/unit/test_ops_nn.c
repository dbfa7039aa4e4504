/* Losses, embedding, dropout and the shape ops against values computed with torch 1.13
   (tests/data/ops_reference.h, written by tests/data/make_ops_data.py). */
#include "data/ops_reference.h"
#include "test_ops_util.h"

#define F32 FERRY_FLOAT32
#define F64 FERRY_FLOAT64
#define I64 FERRY_INT64

Test(ops_nn, losses_match_torch_when_using_each_reduction, .timeout = 10)
{
    ferry_tensor *logits = MK(F32, S(2, 3), 1.0, 2.0, 0.5, 0.1, -1.0, 3.0);
    ferry_tensor *x = MK(F32, S(2, 3), -1.5, 0.0, 2.0, 0.5, -0.25, 3.0);
    ferry_tensor *tg = MK(I64, S(2), 1, 2), *ign = MK(I64, S(2), 1, -100), *bad = MK(I64, S(2), 0, 5);
    ferry_tensor *out[10] = {0};
    out[0] = ferry_cross_entropy(logits, tg, FERRY_REDUCTION_MEAN);
    EXPECT0(out[0], F32, 1e-6, ref_nn_ce_mean);
    out[1] = ferry_cross_entropy(logits, tg, FERRY_REDUCTION_SUM);
    EXPECT0(out[1], F32, 1e-6, ref_nn_ce_sum);
    out[2] = ferry_cross_entropy(logits, tg, FERRY_REDUCTION_NONE);
    EXPECT_REF(out[2], F32, S(2), 1e-6, ref_nn_ce_none);
    out[3] = ferry_nll_loss(logits, tg, FERRY_REDUCTION_MEAN);
    EXPECT0(out[3], F32, 0, ref_nn_nll_mean);
    out[4] = ferry_nll_loss(logits, tg, FERRY_REDUCTION_NONE);
    EXPECT_REF(out[4], F32, S(2), 0, ref_nn_nll_none);
    out[5] = ferry_cross_entropy(logits, ign, FERRY_REDUCTION_MEAN);
    EXPECT0(out[5], F32, 1e-6, ref_nn_ce_ignore_mean);
    out[6] = ferry_mse_loss(logits, x, FERRY_REDUCTION_MEAN);
    EXPECT0(out[6], F32, 1e-6, ref_nn_mse_mean);
    out[7] = ferry_mse_loss(logits, x, FERRY_REDUCTION_SUM);
    EXPECT0(out[7], F32, 1e-6, ref_nn_mse_sum);
    out[8] = ferry_mse_loss(logits, x, FERRY_REDUCTION_NONE);
    EXPECT_REF(out[8], F32, S(2, 3), 1e-6, ref_nn_mse_none);
    out[9] = ferry_nll_loss(logits, tg, FERRY_REDUCTION_SUM);
    EXPECT0(out[9], F32, 0, ref_nn_nll_sum);
    EXPECT_ERROR(ferry_nll_loss(logits, bad, FERRY_REDUCTION_MEAN), FERRY_EINVAL,
                 "Target 5 is out of bounds.");
    for (int k = 0; k < 10; k++)
        ferry_tensor_release(out[k]);
    ferry_tensor *r[] = {logits, x, tg, ign, bad};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_nn, nll_skips_ignored_targets_and_ce_takes_a_row_when_input_is_1d, .timeout = 10)
{
    ferry_tensor *logits = MK(F32, S(2, 3), 1.0, 2.0, 0.5, 0.1, -1.0, 3.0);
    ferry_tensor *ign = MK(I64, S(2), 1, -100);
    ferry_tensor *mean = ferry_nll_loss(logits, ign, FERRY_REDUCTION_MEAN);
    EXPECT0(mean, F32, 0, ref_nn_nll_ignore_mean); /* divided by 1, not 2 */
    ferry_tensor *sum = ferry_nll_loss(logits, ign, FERRY_REDUCTION_SUM);
    EXPECT0(sum, F32, 0, ref_nn_nll_ignore_sum);
    ferry_tensor *row = ferry_assert_ptr(ferry_narrow(logits, 0, 1, 1));
    ferry_tensor *row1 = ferry_squeeze_dim(row, 0), *t0 = ferry_scalar_tensor(2, I64);
    ferry_tensor *ce = ferry_cross_entropy(row1, t0, FERRY_REDUCTION_MEAN);
    EXPECT0(ce, F32, 1e-6, ref_nn_ce_1d);
    ferry_tensor *r[] = {logits, ign, mean, sum, row, row1, t0, ce};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_nn, embedding_picks_rows_when_indices_have_any_shape, .timeout = 10)
{
    ferry_tensor *w = MK(F32, S(3, 2), 0, 1, 10, 11, 20, 21);
    ferry_tensor *idx = MK(I64, S(2, 2), 2, 0, 1, 2), *bad = MK(I64, S(1), 3);
    ferry_tensor *y = ferry_embedding(w, idx);
    EXPECT_REF(y, F32, S(2, 2, 2), 0, ref_nn_embedding);
    EXPECT_ERROR(ferry_embedding(w, bad), FERRY_EINVAL, "index out of range in self");
    ferry_tensor *r[] = {w, idx, bad, y};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_nn, dropout_is_seeded_and_scaled_when_training, .timeout = 10)
{
    int64_t n = 10000;
    ferry_tensor *x = ferry_ones(1, &n, F32);
    ferry_generator *g1 = ferry_generator_new(7), *g2 = ferry_generator_new(7);
    ferry_tensor *a = ferry_assert_ptr(ferry_dropout(x, 0.25, true, g1));
    ferry_tensor *b = ferry_assert_ptr(ferry_dropout(x, 0.25, true, g2));
    cr_assert(ferry_tensor_equal(a, b), "same seed, same mask");
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = ferry_tensor_item_at(a, i);
        cr_assert(v == 0.0 || fabs(v - 1.0 / 0.75) < 1e-6, "value %g", v);
        kept += v != 0.0;
    }
    cr_assert(kept > 7200 && kept < 7800, "kept %lld of 10000", (long long)kept);
    ferry_tensor *same = ferry_dropout(x, 0.25, false, g1);
    cr_assert_eq(same, x, "not training: the input itself");
    EXPECT_ERROR(ferry_dropout(x, 1.5, true, g1), FERRY_EINVAL, "dropout probability");
    ferry_generator_free(g1);
    ferry_generator_free(g2);
    ferry_tensor *r[] = {x, a, b, same};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_shape, cat_stack_and_views_match_torch_when_combining_tensors, .timeout = 10)
{
    ferry_tensor *a = MK(F32, S(2, 2), 1, 2, 3, 4), *b = MK(I64, S(1, 2), 5, 6);
    ferry_tensor *c0 = ferry_cat((ferry_tensor *[]){a, b}, 2, 0);
    EXPECT_REF(c0, F32, S(3, 2), 0, ref_shape_cat0);
    ferry_tensor *c1 = ferry_cat((ferry_tensor *[]){a, a}, 2, -1);
    EXPECT_REF(c1, F32, S(2, 4), 0, ref_shape_cat_last);
    ferry_tensor *st = ferry_stack((ferry_tensor *[]){a, a}, 2, 1);
    EXPECT_REF(st, F32, S(2, 2, 2), 0, ref_shape_stack1);
    ferry_tensor *w = ferry_ones(2, S(2, 3), F32);
    EXPECT_ERROR(ferry_cat((ferry_tensor *[]){a, w}, 2, 0), FERRY_EINVAL,
                 "Sizes of tensors must match except in dimension 0. Expected size 2 but got size 3 "
                 "for tensor number 1 in the list.");
    ferry_tensor *rs = ferry_reshape(c0, 2, S(2, -1));
    EXPECT_REF(rs, F32, S(2, 3), 0, ref_shape_reshape);
    ferry_tensor *tr = ferry_transpose(rs, 0, 1);
    EXPECT_REF(tr, F32, S(3, 2), 0, ref_shape_transpose);
    ferry_tensor *nr = ferry_narrow(rs, 1, 1, 2);
    EXPECT_REF(nr, F32, S(2, 2), 0, ref_shape_narrow);
    ferry_tensor *ix = MK(I64, S(3), 2, 0, 2);
    ferry_tensor *is = ferry_index_select(rs, 1, ix);
    EXPECT_REF(is, F32, S(2, 3), 0, ref_shape_index_select);
    ferry_tensor *cl = ferry_clone(tr);
    cr_assert(!ferry_tensor_shares_storage(cl, tr) && ferry_tensor_is_contiguous(cl));
    ferry_tensor *dt = ferry_detach(tr);
    cr_assert(ferry_tensor_shares_storage(dt, tr));
    ferry_tensor *r[] = {a, b, c0, c1, st, w, rs, tr, nr, ix, is, cl, dt};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_shape, unsqueeze_and_squeeze_are_views_when_reshaping_by_one, .timeout = 10)
{
    ferry_tensor *a = MK(F64, S(2, 3), 1, 2, 3, 4, 5, 6);
    ferry_tensor *u = ferry_unsqueeze(a, -1), *u0 = ferry_unsqueeze(a, 1);
    EXPECT_REF(u, F64, S(2, 3, 1), 0, ref_shape_unsqueeze_last);
    EXPECT_REF(u0, F64, S(2, 1, 3), 0, ref_shape_unsqueeze1);
    ferry_tensor *s = ferry_squeeze_dim(u0, 1), *same = ferry_squeeze_dim(a, 0);
    EXPECT_REF(s, F64, S(2, 3), 0, ref_shape_squeeze1);
    EXPECT_REF(same, F64, S(2, 3), 0, ref_shape_squeeze_noop);
    cr_assert(ferry_tensor_shares_storage(s, a));
    EXPECT_ERROR(ferry_unsqueeze(a, 3), FERRY_EINVAL, "Dimension out of range");
    ferry_tensor *r[] = {a, u, u0, s, same};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}
