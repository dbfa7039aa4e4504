/* Every differentiable op's backward against central differences in float64. */
#include "test_ops_util.h"

#define F64 FERRY_FLOAT64
#define I64 FERRY_INT64

typedef ferry_tensor *(*unary_fn)(ferry_tensor *);
typedef ferry_tensor *(*binary_fn)(ferry_tensor *, ferry_tensor *);

static ferry_tensor *call_unary(ferry_tensor **in, void *user)
{
    return ((unary_fn)user)(in[0]);
}

static ferry_tensor *call_binary(ferry_tensor **in, void *user)
{
    return ((binary_fn)user)(in[0], in[1]);
}

/* Positive inputs keep log, sqrt and pow away from their poles; no zeros for abs/relu. */
static ferry_tensor *positive_input(void)
{
    return leaf(MK(F64, S(2, 3), 0.3, 1.2, 2.5, 0.7, 1.9, 0.45));
}

static ferry_tensor *mixed_input(void)
{
    return leaf(MK(F64, S(2, 3), -1.3, 0.4, 2.1, -0.6, 0.9, -2.2));
}

Test(gradcheck, unary_ops_match_finite_differences_when_float64, .timeout = 20)
{
    unary_fn mixed[] = {ferry_neg, ferry_abs, ferry_relu, ferry_exp, ferry_sigmoid, ferry_tanh,
                        ferry_gelu, ferry_clone, ferry_sum, ferry_mean, ferry_max};
    unary_fn positive[] = {ferry_log, ferry_sqrt};
    for (size_t k = 0; k < sizeof mixed / sizeof *mixed; k++) {
        ferry_tensor *x = mixed_input();
        gradcheck(call_unary, &x, 1, (void *)mixed[k]);
        ferry_tensor_release(x);
    }
    for (size_t k = 0; k < sizeof positive / sizeof *positive; k++) {
        ferry_tensor *x = positive_input();
        gradcheck(call_unary, &x, 1, (void *)positive[k]);
        ferry_tensor_release(x);
    }
}

Test(gradcheck, binary_ops_match_finite_differences_when_broadcasting, .timeout = 20)
{
    binary_fn fns[] = {ferry_add, ferry_sub, ferry_mul, ferry_div, ferry_matmul};
    for (size_t k = 0; k < sizeof fns / sizeof *fns; k++) {
        ferry_tensor *in[2] = {mixed_input(), leaf(MK(F64, S(3), 0.5, -1.5, 2.0))};
        gradcheck(call_binary, in, 2, (void *)fns[k]);
        ferry_tensor_release(in[0]);
        ferry_tensor_release(in[1]);
    }
}

static ferry_tensor *scalar_forms(ferry_tensor **in, void *user)
{
    ferry_tensor *a = ferry_add_scalar(in[0], 1.5), *b = ferry_mul_scalar(a, -2.0);
    ferry_tensor *c = ferry_div_scalar(b, 3.0), *d = ferry_sub_scalar(c, 0.5);
    ferry_tensor *e = ferry_pow(d, 3.0), *f = ferry_add_alpha(e, in[0], -0.5);
    ferry_tensor *r[] = {a, b, c, d, e};
    for (size_t k = 0; k < sizeof r / sizeof *r; k++)
        ferry_tensor_release(r[k]);
    return f;
}

Test(gradcheck, scalar_forms_and_pow_match_finite_differences_when_chained, .timeout = 20)
{
    ferry_tensor *x = mixed_input();
    gradcheck(scalar_forms, &x, 1, NULL);
    ferry_tensor *p = positive_input();
    ferry_tensor *y = ferry_pow(p, 0.5), *z = ferry_pow(p, 0.5);
    cr_assert(ferry_allclose(y, z, 0, 0));
    ferry_tensor_release(y);
    ferry_tensor_release(z);
    ferry_tensor_release(p);
    ferry_tensor_release(x);
}

static ferry_tensor *batched_matmul(ferry_tensor **in, void *user)
{
    return ferry_matmul(in[0], in[1]);
}

Test(gradcheck, matmul_matches_finite_differences_for_every_shape_case, .timeout = 20)
{
    int64_t shapes[][2][4] = {
        /* ndim a, a sizes..., then b */
        {{1, 3}, {1, 3}},       {{2, 2, 3}, {1, 3}},     {{1, 3}, {2, 3, 2}},
        {{2, 2, 3}, {2, 3, 4}}, {{3, 2, 2, 3}, {2, 3, 2}}, {{3, 2, 1, 3}, {3, 2, 3, 2}},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        ferry_tensor *in[2];
        for (int j = 0; j < 2; j++) {
            int nd = (int)shapes[k][j][0];
            ferry_generator *g = ferry_generator_new(k * 2 + (uint64_t)j);
            in[j] = leaf(ferry_randn(nd, &shapes[k][j][1], F64, g));
            ferry_generator_free(g);
        }
        gradcheck(batched_matmul, in, 2, NULL);
        ferry_tensor_release(in[0]);
        ferry_tensor_release(in[1]);
    }
}

static ferry_tensor *linear_fn(ferry_tensor **in, void *user)
{
    return ferry_linear(in[0], in[1], in[2]);
}

Test(gradcheck, linear_matches_finite_differences_when_biased, .timeout = 20)
{
    ferry_generator *g = ferry_generator_new(3);
    ferry_tensor *in[3] = {leaf(ferry_randn(2, S(4, 3), F64, g)), leaf(ferry_randn(2, S(2, 3), F64, g)),
                           leaf(ferry_randn(1, S(2), F64, g))};
    gradcheck(linear_fn, in, 3, NULL);
    for (int k = 0; k < 3; k++)
        ferry_tensor_release(in[k]);
    ferry_generator_free(g);
}

static ferry_tensor *reductions(ferry_tensor **in, void *user)
{
    int which = *(int *)user;
    ferry_tensor *idx = NULL, *out = NULL;
    switch (which) {
    case 0: out = ferry_sum_dim(in[0], 1, (int[]){1}, false); break;
    case 1: out = ferry_mean_dim(in[0], 2, (int[]){0, 1}, true); break;
    case 2: out = ferry_max_dim(in[0], 0, false, &idx); break;
    case 3: out = ferry_softmax(in[0], 1); break;
    case 4: out = ferry_log_softmax(in[0], 0); break;
    case 5: out = ferry_sum_dim(in[0], 1, (int[]){0}, true); break;
    }
    ferry_tensor_release(idx);
    return out;
}

Test(gradcheck, reductions_and_softmax_match_finite_differences_when_along_dims, .timeout = 20)
{
    for (int which = 0; which < 6; which++) {
        ferry_tensor *x = mixed_input();
        gradcheck(reductions, &x, 1, &which);
        ferry_tensor_release(x);
    }
}

static ferry_tensor *losses(ferry_tensor **in, void *user)
{
    int which = *(int *)user;
    ferry_tensor *tg = MK(I64, S(2), 2, 0), *ign = MK(I64, S(2), -100, 1), *out = NULL;
    ferry_reduction red = (ferry_reduction)(which % 3);
    if (which < 3)
        out = ferry_cross_entropy(in[0], tg, red);
    else if (which < 6)
        out = ferry_mse_loss(in[0], in[1], red);
    else if (which < 9)
        out = ferry_nll_loss(in[0], tg, red);
    else
        out = ferry_cross_entropy(in[0], ign, FERRY_REDUCTION_MEAN);
    ferry_tensor_release(tg);
    ferry_tensor_release(ign);
    return out;
}

Test(gradcheck, losses_match_finite_differences_for_each_reduction, .timeout = 20)
{
    for (int which = 0; which < 10; which++) {
        ferry_tensor *in[2] = {mixed_input(), positive_input()};
        gradcheck(losses, in, 2, &which);
        ferry_tensor_release(in[0]);
        ferry_tensor_release(in[1]);
    }
}

static ferry_tensor *shapes_fn(ferry_tensor **in, void *user)
{
    int which = *(int *)user;
    ferry_tensor *idx = MK(I64, S(4), 2, 0, 2, 1), *e = MK(I64, S(2, 2), 1, 1, 0, 1), *out = NULL;
    ferry_tensor *two[2] = {in[0], in[1]};
    switch (which) {
    case 0: out = ferry_reshape(in[0], 2, S(3, 2)); break;
    case 1: out = ferry_transpose(in[0], 0, 1); break;
    case 2: out = ferry_narrow(in[0], 1, 1, 2); break;
    case 3: out = ferry_cat(two, 2, 0); break;
    case 4: out = ferry_stack(two, 2, 2); break;
    case 5: out = ferry_index_select(in[0], 1, idx); break;
    case 6: out = ferry_embedding(in[1], e); break;
    case 7: out = ferry_unsqueeze(in[0], 1); break;
    case 8: out = ferry_cat(two, 2, 1); break;
    }
    ferry_tensor_release(idx);
    ferry_tensor_release(e);
    return out;
}

Test(gradcheck, shape_ops_match_finite_differences_when_reshaping_and_picking, .timeout = 20)
{
    for (int which = 0; which < 9; which++) {
        ferry_tensor *in[2] = {mixed_input(), positive_input()};
        gradcheck(shapes_fn, in, 2, &which);
        ferry_tensor_release(in[0]);
        ferry_tensor_release(in[1]);
    }
}

static ferry_tensor *dropout_fn(ferry_tensor **in, void *user)
{
    ferry_generator *g = ferry_generator_new(11); /* the same mask on every evaluation */
    ferry_tensor *out = ferry_dropout(in[0], 0.4, true, g);
    ferry_generator_free(g);
    return out;
}

Test(gradcheck, dropout_matches_finite_differences_when_the_mask_is_fixed, .timeout = 20)
{
    ferry_tensor *x = mixed_input();
    gradcheck(dropout_fn, &x, 1, NULL);
    ferry_tensor_release(x);
}
