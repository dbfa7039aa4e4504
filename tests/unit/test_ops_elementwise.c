/* Elementwise ops against values computed with torch 1.13 (tests/data/ops_reference.h, written
   by tests/data/make_ops_data.py): broadcasting, type promotion, the unary maths, the
   Python-float forms and the in-place ops. */
#include "data/ops_reference.h"
#include "test_ops_util.h"

#define F32 FERRY_FLOAT32
#define F64 FERRY_FLOAT64
#define I64 FERRY_INT64

Test(ops_elementwise, add_broadcasts_row_and_column_when_shapes_differ, .timeout = 10)
{
    ferry_tensor *a = MK(F32, S(2, 1), 1, 2);
    ferry_tensor *b = MK(F32, S(3), 10, 20, 30);
    ferry_tensor *y = ferry_add(a, b);
    EXPECT_REF(y, F32, S(2, 3), 0, ref_ew_bcast_add);
    ferry_tensor *z = ferry_sub(b, a);
    EXPECT_REF(z, F32, S(2, 3), 0, ref_ew_bcast_sub);
    ferry_tensor *m = ferry_mul(a, b);
    EXPECT_REF(m, F32, S(2, 3), 0, ref_ew_bcast_mul);
    ferry_tensor *d = ferry_div(b, a);
    EXPECT_REF(d, F32, S(2, 3), 1e-7, ref_ew_bcast_div);
    ferry_tensor *aa = ferry_add_alpha(a, b, -0.5);
    EXPECT_REF(aa, F32, S(2, 3), 0, ref_ew_bcast_add_alpha);
    ferry_tensor *r[] = {a, b, y, z, m, d, aa};
    for (size_t i = 0; i < sizeof r / sizeof *r; i++)
        ferry_tensor_release(r[i]);
}

Test(ops_elementwise, add_handles_transposed_operands_when_not_contiguous, .timeout = 10)
{
    ferry_tensor *a = MK(F64, S(2, 3), 0, 1, 2, 3, 4, 5);
    ferry_tensor *at = ferry_transpose(a, 0, 1);
    ferry_tensor *b = MK(F64, S(3, 2), 10, 20, 30, 40, 50, 60);
    ferry_tensor *y = ferry_add(at, b);
    EXPECT_REF(y, F64, S(3, 2), 0, ref_ew_strided_add);
    ferry_tensor_release(a);
    ferry_tensor_release(at);
    ferry_tensor_release(b);
    ferry_tensor_release(y);
}

Test(ops_elementwise, fails_naming_both_sizes_when_shapes_do_not_broadcast, .timeout = 10)
{
    ferry_tensor *a = ferry_ones(2, S(2, 3), F32), *b = ferry_ones(2, S(2, 4), F32);
    EXPECT_ERROR(ferry_add(a, b), FERRY_EINVAL,
                 "The size of tensor a (3) must match the size of tensor b (4) at non-singleton "
                 "dimension 1");
    ferry_tensor_release(a);
    ferry_tensor_release(b);
}

Test(ops_elementwise, promotes_like_torch_when_dtypes_differ, .timeout = 10)
{
    ferry_tensor *i = MK(I64, S(2), 1, 2);
    ferry_tensor *f = MK(F32, S(2), 0.5, 0.25);
    ferry_tensor *d0 = ferry_scalar_tensor(1.5, F64);
    ferry_tensor *i0 = ferry_scalar_tensor(3, I64);
    ferry_tensor *r1 = ferry_add(i, f); /* int64 + float32 -> float32 */
    EXPECT_REF(r1, F32, S(2), 0, ref_ew_promote_i64_add_f32);
    ferry_tensor *r2 = ferry_add(i, d0); /* 0-dim float64 raises the category: float64 */
    EXPECT_REF(r2, F64, S(2), 0, ref_ew_promote_i64_add_f64_0dim);
    ferry_tensor *r3 = ferry_add(f, d0); /* same category: the dimensioned float32 wins */
    EXPECT_REF(r3, F32, S(2), 0, ref_ew_promote_f32_add_f64_0dim);
    ferry_tensor *r4 = ferry_div(i, i); /* true division */
    EXPECT_REF(r4, F32, S(2), 0, ref_ew_promote_i64_div_i64);
    ferry_tensor *r5 = ferry_add_scalar(i, 2.5); /* Python float with int64 -> float32 */
    EXPECT_REF(r5, F32, S(2), 0, ref_ew_promote_i64_add_scalar);
    ferry_tensor *r6 = ferry_mul(i, i0);
    EXPECT_REF(r6, I64, S(2), 0, ref_ew_promote_i64_mul_i64_0dim);
    ferry_tensor *r7 = ferry_pow(i, 2.0);
    EXPECT_REF(r7, F32, S(2), 0, ref_ew_promote_i64_pow);
    ferry_tensor *r8 = ferry_neg(i);
    EXPECT_REF(r8, I64, S(2), 0, ref_ew_promote_i64_neg);
    ferry_tensor *r9 = ferry_exp(i);
    EXPECT_REF(r9, F32, S(2), 1e-6, ref_ew_promote_i64_exp);
    ferry_tensor *r[] = {i, f, d0, i0, r1, r2, r3, r4, r5, r6, r7, r8, r9};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_elementwise, scalar_forms_match_torch_when_applied_to_floats, .timeout = 10)
{
    ferry_tensor *x = MK(F64, S(3), 1, -2, 4);
    ferry_tensor *a = ferry_add_scalar(x, 1.5), *s = ferry_sub_scalar(x, 1.0);
    ferry_tensor *m = ferry_mul_scalar(x, -2.0), *d = ferry_div_scalar(x, 4.0);
    EXPECT_REF(a, F64, S(3), 0, ref_ew_scalar_add);
    EXPECT_REF(s, F64, S(3), 0, ref_ew_scalar_sub);
    EXPECT_REF(m, F64, S(3), 0, ref_ew_scalar_mul);
    EXPECT_REF(d, F64, S(3), 0, ref_ew_scalar_div);
    ferry_tensor *r[] = {x, a, s, m, d};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_elementwise, unary_ops_match_torch_when_float32, .timeout = 10)
{
    ferry_tensor *x = MK(F32, S(2, 3), -1.5, 0.0, 2.0, 0.5, -0.25, 3.0);
    const double tol = 2e-7;
    struct {
        ferry_tensor *(*fn)(ferry_tensor *);
        const double *want;
        size_t n;
    } cases[] = {
#define UNARY(fn, ref) {fn, ref, sizeof ref / sizeof *ref}
        UNARY(ferry_exp, ref_ew_unary_exp),   UNARY(ferry_log, ref_ew_unary_log),
        UNARY(ferry_sqrt, ref_ew_unary_sqrt), UNARY(ferry_abs, ref_ew_unary_abs),
        UNARY(ferry_relu, ref_ew_unary_relu), UNARY(ferry_sigmoid, ref_ew_unary_sigmoid),
        UNARY(ferry_tanh, ref_ew_unary_tanh), UNARY(ferry_gelu, ref_ew_unary_gelu),
        UNARY(ferry_neg, ref_ew_unary_neg),
#undef UNARY
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        cr_assert_eq(cases[k].n, 6, "case %zu: %zu reference values", k, cases[k].n);
        ferry_tensor *y = cases[k].fn(x);
        expect_values(y, F32, 2, S(2, 3), cases[k].want, tol);
        ferry_tensor_release(y);
    }
    ferry_tensor *p3 = ferry_pow(x, 3.0);
    EXPECT_REF(p3, F32, S(2, 3), tol, ref_ew_unary_pow3);
    ferry_tensor_release(p3);
    ferry_tensor_release(x);
}

Test(ops_elementwise, inplace_ops_update_the_target_when_called_for_optimizers, .timeout = 10)
{
    ferry_tensor *p = MK(F32, S(2, 2), 1, 2, 3, 4);
    ferry_tensor *g = MK(F32, S(2, 2), 0.5, 0.5, 1, 1);
    ferry_tensor *row = MK(F32, S(2), 10, 100);
    ferry_assert_ok(ferry_add_scaled_(p, g, -2.0));
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_add_scaled);
    ferry_assert_ok(ferry_mul_(p, row)); /* broadcast over rows */
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_mul_row);
    ferry_assert_ok(ferry_add_(p, p)); /* aliasing operand */
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_add_self);
    ferry_assert_ok(ferry_mul_scalar_(p, 0.5));
    ferry_assert_ok(ferry_add_scalar_(p, 1.0));
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_mul_add_scalar);
    ferry_assert_ok(ferry_addcmul_(p, g, g, 4.0));
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_addcmul);
    ferry_assert_ok(ferry_addcdiv_(p, g, g, -1.0));
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_addcdiv);
    ferry_assert_ok(ferry_fill_(p, 7.0));
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_fill);
    ferry_tensor *pt = ferry_transpose(p, 0, 1); /* strided target */
    ferry_assert_ok(ferry_add_(pt, g));
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_add_transposed);
    ferry_assert_ok(ferry_zero_(p));
    EXPECT_REF(p, F32, S(2, 2), 0, ref_ew_inplace_zero);
    ferry_tensor *big = MK(F32, S(3), 1, 2, 3);
    ferry_assert_status(ferry_add_(p, big), FERRY_EINVAL);
    ferry_tensor *i = MK(I64, S(2), 1, 2);
    ferry_assert_status(ferry_add_scalar_(i, 0.5), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "can't be cast to the desired output type Long"));
    ferry_tensor *r[] = {p, g, row, pt, big, i};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
}

Test(ops_elementwise, inplace_fails_like_torch_when_target_is_a_leaf_requiring_grad, .timeout = 10)
{
    ferry_tensor *p = leaf(MK(F32, S(2), 1, 2));
    ferry_assert_status(ferry_add_scalar_(p, 1.0), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(),
                     "a leaf Variable that requires grad is being used in an in-place operation.");
    ferry_no_grad_enter();
    ferry_assert_ok(ferry_add_scalar_(p, 1.0));
    ferry_no_grad_exit();
    EXPECT_REF(p, F32, S(2), 0, ref_ew_leaf_add_scalar_no_grad);
    ferry_tensor_release(p);
}

Test(ops_elementwise, large_contiguous_add_is_exact_when_vectorized, .timeout = 10)
{
    int64_t n = 1 << 16;
    ferry_tensor *a = ferry_arange(0, (double)n, 1, F32), *b = ferry_full(1, &n, 0.5, F32);
    ferry_tensor *y = ferry_assert_ptr(ferry_add(a, b));
    const float *p = ferry_tensor_data(y);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(p[i], (float)i + 0.5f);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    ferry_tensor_release(y);
}
