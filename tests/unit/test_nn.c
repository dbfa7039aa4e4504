/* Tests for the nn building blocks: the LSTM cell's outputs and gradients against torch's numbers
   (tests/data/nn_reference.h, made by tests/data/make_nn_data.py from the same deterministic
   tensors), and the initializers' distributions, bounds and reproducibility. */
#include <math.h>
#include <string.h>

#include "common/test_util.h"
#include "data/nn_reference.h"
#include "ferry/autograd.h"
#include "ferry/nn.h"
#include "ferry/ops.h"

/* make_nn_data.py's value(k, offset): exact in float32 and float64. */
static double lstm_value(int64_t k, int offset)
{
    return (double)((7 * k + offset) % 17 - 8) / 16.0;
}

static ferry_tensor *det_tensor(int ndim, const int64_t *sizes, int offset, ferry_dtype dtype,
                                bool requires_grad)
{
    double buf[64];
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= sizes[d];
    cr_assert(n <= 64);
    for (int64_t k = 0; k < n; k++)
        buf[k] = lstm_value(k, offset);
    ferry_tensor *t64 = ferry_assert_ptr(ferry_tensor_from_data(buf, ndim, sizes, FERRY_FLOAT64));
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_to_dtype(t64, dtype));
    ferry_tensor_release(t64);
    if (requires_grad)
        ferry_assert_ok(ferry_tensor_set_requires_grad(t, true));
    return t;
}

static void assert_close(ferry_tensor *t, const double *want, int64_t n, double tol,
                         const char *what)
{
    cr_assert_not_null(t, "%s: missing", what);
    cr_assert_eq(ferry_tensor_numel(t), n, "%s: numel", what);
    for (int64_t i = 0; i < n; i++) {
        double got = ferry_tensor_item_at(t, i);
        cr_assert(fabs(got - want[i]) <= tol * (1.0 + fabs(want[i])),
                  "%s[%lld]: got %.17g, torch %.17g", what, (long long)i, got, want[i]);
    }
}

static void assert_grad(ferry_tensor *t, const double *want, int64_t n, double tol,
                        const char *what)
{
    ferry_tensor *g = ferry_tensor_grad(t);
    assert_close(g, want, n, tol, what);
    ferry_tensor_release(g);
}

/* sum(a * w) with w a deterministic tensor of a's shape. */
static ferry_tensor *weighted_sum(ferry_tensor *a, int offset)
{
    ferry_tensor *w = det_tensor(ferry_tensor_ndim(a), ferry_tensor_sizes(a), offset,
                                 ferry_tensor_dtype(a), false);
    ferry_tensor *m = ferry_assert_ptr(ferry_mul(a, w));
    ferry_tensor *s = ferry_assert_ptr(ferry_sum(m));
    ferry_tensor_release(m);
    ferry_tensor_release(w);
    return s;
}

Test(nn_lstm_cell, matches_torch_outputs_and_gradients_when_batched, .timeout = 10)
{
    const int64_t s_x[2] = {2, 3}, s_h[2] = {2, 2}, s_wih[2] = {8, 3}, s_whh[2] = {8, 2};
    const int64_t s_b[1] = {8};
    const ferry_dtype d = FERRY_FLOAT64;
    ferry_tensor *x = det_tensor(2, s_x, 1, d, true), *h = det_tensor(2, s_h, 2, d, true);
    ferry_tensor *c = det_tensor(2, s_h, 3, d, true);
    ferry_tensor *w_ih = det_tensor(2, s_wih, 4, d, true), *w_hh = det_tensor(2, s_whh, 5, d, true);
    ferry_tensor *b_ih = det_tensor(1, s_b, 6, d, true), *b_hh = det_tensor(1, s_b, 7, d, true);
    ferry_tensor *h1 = NULL, *c1 = NULL;
    ferry_assert_ok(ferry_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, &h1, &c1));
    assert_close(h1, lstm_b_h_out, 4, 1e-12, "h'");
    assert_close(c1, lstm_b_c_out, 4, 1e-12, "c'");
    cr_assert(ferry_tensor_requires_grad(h1) && !ferry_tensor_is_leaf(h1));

    ferry_tensor *lh = weighted_sum(h1, 8), *lc = weighted_sum(c1, 9);
    ferry_tensor *loss = ferry_assert_ptr(ferry_add(lh, lc));
    ferry_assert_ok(ferry_backward(loss, NULL, false));
    assert_grad(x, lstm_b_grad_input, 6, 1e-12, "input.grad");
    assert_grad(h, lstm_b_grad_h, 4, 1e-12, "h.grad");
    assert_grad(c, lstm_b_grad_c, 4, 1e-12, "c.grad");
    assert_grad(w_ih, lstm_b_grad_w_ih, 24, 1e-12, "w_ih.grad");
    assert_grad(w_hh, lstm_b_grad_w_hh, 16, 1e-12, "w_hh.grad");
    assert_grad(b_ih, lstm_b_grad_b_ih, 8, 1e-12, "b_ih.grad");
    assert_grad(b_hh, lstm_b_grad_b_hh, 8, 1e-12, "b_hh.grad");
    ferry_tensor *all[] = {x, h, c, w_ih, w_hh, b_ih, b_hh, h1, c1, lh, lc, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ferry_tensor_release(all[i]);
}

Test(nn_lstm_cell, matches_torch_when_unbatched_without_state_or_bias, .timeout = 10)
{
    const int64_t s_x[1] = {3}, s_wih[2] = {8, 3}, s_whh[2] = {8, 2};
    const ferry_dtype d = FERRY_FLOAT32;
    ferry_tensor *x = det_tensor(1, s_x, 10, d, true);
    ferry_tensor *w_ih = det_tensor(2, s_wih, 4, d, true), *w_hh = det_tensor(2, s_whh, 5, d, true);
    ferry_tensor *h1 = NULL, *c1 = NULL;
    ferry_assert_ok(ferry_lstm_cell(x, NULL, NULL, w_ih, w_hh, NULL, NULL, &h1, &c1));
    cr_assert_eq(ferry_tensor_ndim(h1), 1);
    cr_assert_eq(ferry_tensor_dtype(h1), FERRY_FLOAT32);
    assert_close(h1, lstm_u_h_out, 2, 1e-6, "h'");
    assert_close(c1, lstm_u_c_out, 2, 1e-6, "c'");
    ferry_tensor *sh = ferry_assert_ptr(ferry_sum(h1)), *sc = ferry_assert_ptr(ferry_sum(c1));
    ferry_tensor *loss = ferry_assert_ptr(ferry_add(sh, sc));
    ferry_assert_ok(ferry_backward(loss, NULL, false));
    assert_grad(x, lstm_u_grad_input, 3, 1e-6, "input.grad");
    assert_grad(w_ih, lstm_u_grad_w_ih, 24, 1e-6, "w_ih.grad");
    assert_grad(w_hh, lstm_u_grad_w_hh, 16, 1e-6, "w_hh.grad");
    ferry_tensor *all[] = {x, w_ih, w_hh, h1, c1, sh, sc, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ferry_tensor_release(all[i]);
}

Test(nn_lstm_cell, fails_with_torch_messages_when_shapes_disagree, .timeout = 10)
{
    const int64_t s_x[2] = {2, 5}, s_x3[3] = {1, 2, 3}, s_ok[2] = {2, 3}, s_h[2] = {3, 2};
    const int64_t s_wih[2] = {8, 3}, s_whh[2] = {8, 2}, s_bad[2] = {6, 2};
    const ferry_dtype d = FERRY_FLOAT32;
    ferry_tensor *x = det_tensor(2, s_x, 1, d, false), *x3 = det_tensor(3, s_x3, 1, d, false);
    ferry_tensor *ok = det_tensor(2, s_ok, 1, d, false), *h = det_tensor(2, s_h, 1, d, false);
    ferry_tensor *w_ih = det_tensor(2, s_wih, 4, d, false), *w_hh = det_tensor(2, s_whh, 5, d, false);
    ferry_tensor *bad = det_tensor(2, s_bad, 5, d, false);
    ferry_tensor *h1 = NULL, *c1 = NULL;
    ferry_assert_status(ferry_lstm_cell(x, NULL, NULL, w_ih, w_hh, NULL, NULL, &h1, &c1),
                        FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "input has inconsistent input_size: got 5 expected 3");
    ferry_assert_status(ferry_lstm_cell(x3, NULL, NULL, w_ih, w_hh, NULL, NULL, &h1, &c1),
                        FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "1-D or 2-D") != NULL);
    ferry_assert_status(ferry_lstm_cell(ok, h, NULL, w_ih, w_hh, NULL, NULL, &h1, &c1),
                        FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "batch size") != NULL, "%s", ferry_last_error());
    ferry_assert_status(ferry_lstm_cell(ok, NULL, NULL, w_ih, bad, NULL, NULL, &h1, &c1),
                        FERRY_EINVAL);
    ferry_assert_status(ferry_lstm_cell(ok, NULL, NULL, NULL, w_hh, NULL, NULL, &h1, &c1),
                        FERRY_EINVAL);
    cr_assert(h1 == NULL && c1 == NULL);
    ferry_tensor *all[] = {x, x3, ok, h, w_ih, w_hh, bad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ferry_tensor_release(all[i]);
}

/* Largest |x| and the mean of a tensor. */
static void stats(ferry_tensor *t, double *max_abs, double *mean)
{
    double m = 0, s = 0;
    for (int64_t i = 0; i < ferry_tensor_numel(t); i++) {
        double v = ferry_tensor_item_at(t, i);
        m = fmax(m, fabs(v));
        s += v;
    }
    *max_abs = m;
    *mean = s / (double)ferry_tensor_numel(t);
}

Test(nn_linear_init, draws_within_torch_bound_when_initialized, .timeout = 10)
{
    ferry_generator *gen = ferry_generator_new(7);
    ferry_tensor *w = NULL, *b = NULL;
    ferry_assert_ok(ferry_linear_init(64, 50, true, FERRY_FLOAT32, gen, &w, &b));
    cr_assert_eq(ferry_tensor_size(w, 0), 50);
    cr_assert_eq(ferry_tensor_size(w, 1), 64);
    cr_assert_eq(ferry_tensor_numel(b), 50);
    cr_assert(ferry_tensor_requires_grad(w) && ferry_tensor_is_leaf(w));
    cr_assert(ferry_tensor_requires_grad(b) && ferry_tensor_is_leaf(b));
    double bound = 1.0 / 8.0, max_abs, mean;
    stats(w, &max_abs, &mean);
    cr_assert_leq(max_abs, bound);
    cr_assert_gt(max_abs, 0.95 * bound, "3200 uniform draws should come near the bound");
    cr_assert_lt(fabs(mean), 0.01, "mean %g of U(-b, b) draws", mean);
    stats(b, &max_abs, &mean);
    cr_assert_leq(max_abs, bound);
    ferry_tensor_release(w);
    ferry_tensor_release(b);
    ferry_generator_free(gen);
}

Test(nn_linear_init, repeats_the_values_when_the_seed_repeats, .timeout = 10)
{
    ferry_tensor *w[3], *b[3];
    const uint64_t seeds[3] = {42, 42, 43};
    for (int k = 0; k < 3; k++) {
        ferry_generator *gen = ferry_generator_new(seeds[k]);
        ferry_assert_ok(ferry_linear_init(5, 4, true, FERRY_FLOAT64, gen, &w[k], &b[k]));
        ferry_generator_free(gen);
    }
    cr_assert(ferry_tensor_equal(w[0], w[1]) && ferry_tensor_equal(b[0], b[1]));
    cr_assert(!ferry_tensor_equal(w[0], w[2]));
    cr_assert(!ferry_tensor_equal(w[0], b[0]), "the bias comes from further on in the stream");
    for (int k = 0; k < 3; k++) {
        ferry_tensor_release(w[k]);
        ferry_tensor_release(b[k]);
    }
}

Test(nn_linear_init, leaves_bias_null_when_bias_is_off_or_arguments_are_bad, .timeout = 10)
{
    ferry_tensor *w = NULL, *b = (ferry_tensor *)1;
    ferry_assert_ok(ferry_linear_init(3, 2, false, FERRY_FLOAT32, NULL, &w, &b));
    cr_assert_null(b);
    ferry_tensor_release(w);
    w = NULL;
    ferry_assert_status(ferry_linear_init(0, 2, true, FERRY_FLOAT32, NULL, &w, &b), FERRY_EINVAL);
    ferry_assert_status(ferry_linear_init(3, 2, true, FERRY_INT64, NULL, &w, &b), FERRY_EINVAL);
    ferry_assert_status(ferry_linear_init(3, 2, true, FERRY_FLOAT16, NULL, &w, &b), FERRY_ENOTSUP);
    ferry_assert_status(ferry_linear_init(3, 2, true, FERRY_FLOAT32, NULL, NULL, &b),
                        FERRY_EINVAL);
    cr_assert(w == NULL && b == NULL);
}

Test(nn_embedding_init, draws_standard_normal_when_initialized, .timeout = 10)
{
    ferry_generator *gen = ferry_generator_new(1);
    ferry_tensor *w = ferry_assert_ptr(ferry_embedding_init(100, 40, FERRY_FLOAT32, gen));
    cr_assert_eq(ferry_tensor_size(w, 0), 100);
    cr_assert_eq(ferry_tensor_size(w, 1), 40);
    cr_assert(ferry_tensor_requires_grad(w));
    double s = 0, s2 = 0;
    int64_t n = ferry_tensor_numel(w);
    for (int64_t i = 0; i < n; i++) {
        double v = ferry_tensor_item_at(w, i);
        s += v;
        s2 += v * v;
    }
    double mean = s / (double)n, var = s2 / (double)n - mean * mean;
    cr_assert_lt(fabs(mean), 0.1, "mean %g", mean);
    cr_assert(var > 0.9 && var < 1.1, "variance %g", var);
    cr_assert_null(ferry_embedding_init(0, 4, FERRY_FLOAT32, gen));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_tensor_release(w);
    ferry_generator_free(gen);
}

Test(nn_lstm_cell_init, makes_torch_shapes_within_bound_when_initialized, .timeout = 10)
{
    ferry_generator *gen = ferry_generator_new(3);
    ferry_tensor *p[4] = {NULL, NULL, NULL, NULL};
    ferry_assert_ok(ferry_lstm_cell_init(10, 16, true, FERRY_FLOAT32, gen, &p[0], &p[1], &p[2],
                                         &p[3]));
    const int64_t rows = 64, cols[4] = {10, 16, 1, 1};
    for (int k = 0; k < 4; k++) {
        double max_abs, mean;
        cr_assert_eq(ferry_tensor_size(p[k], 0), rows);
        cr_assert_eq(ferry_tensor_numel(p[k]), rows * cols[k]);
        cr_assert(ferry_tensor_requires_grad(p[k]));
        stats(p[k], &max_abs, &mean);
        cr_assert_leq(max_abs, 0.25, "U(-1/sqrt(16), 1/sqrt(16))");
        ferry_tensor_release(p[k]);
    }
    ferry_tensor *w_ih, *w_hh, *b_ih = (ferry_tensor *)1, *b_hh = (ferry_tensor *)1;
    ferry_assert_ok(ferry_lstm_cell_init(2, 3, false, FERRY_FLOAT64, gen, &w_ih, &w_hh, &b_ih,
                                         &b_hh));
    cr_assert(b_ih == NULL && b_hh == NULL);
    ferry_tensor_release(w_ih);
    ferry_tensor_release(w_hh);
    ferry_generator_free(gen);
}
