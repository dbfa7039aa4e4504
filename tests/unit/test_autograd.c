/* The local autograd engine through the public API: accumulation, retain_graph, the torch
   errors, no-grad scopes, graphs with shared parts, and requires_grad rules. */
#include <pthread.h>

#include "test_ops_util.h"

#define F32 FERRY_FLOAT32
#define F64 FERRY_FLOAT64
#define I64 FERRY_INT64

static void release_all(ferry_tensor **ts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ferry_tensor_release(ts[i]);
}

Test(autograd_engine, accumulates_into_grad_when_backward_runs_twice_with_retain_graph, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F32, S(3), 1, 2, 3));
    ferry_tensor *sq = ferry_mul(x, x), *y = ferry_sum(sq);
    ferry_assert_ok(ferry_backward(y, NULL, true));
    ferry_tensor *g1 = ferry_tensor_grad(x);
    EXPECT(g1, F32, S(3), 0, 2, 4, 6);
    ferry_assert_ok(ferry_backward(y, NULL, false));
    ferry_tensor *g2 = ferry_tensor_grad(x);
    EXPECT(g2, F32, S(3), 0, 4, 8, 12);
    ferry_assert_status(ferry_backward(y, NULL, false), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "Trying to backward through the graph a second time (or "
                                         "directly access saved tensors after they have already "
                                         "been freed).") == ferry_last_error());
    ferry_tensor_zero_grad(x);
    cr_assert_null(ferry_tensor_grad(x));
    release_all((ferry_tensor *[]){x, sq, y, g1, g2}, 5);
}

Test(autograd_engine, fails_like_torch_when_root_is_not_scalar_or_not_in_graph, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F64, S(2), 1, 2)), *plain = MK(F64, S(1), 3);
    ferry_tensor *y = ferry_mul_scalar(x, 3.0);
    ferry_assert_status(ferry_backward(y, NULL, false), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "grad can be implicitly created only for scalar outputs");
    ferry_assert_status(ferry_backward(plain, NULL, false), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(),
                     "element 0 of tensors does not require grad and does not have a grad_fn");
    ferry_tensor *bad = MK(F64, S(3), 1, 1, 1), *seed = MK(F64, S(2), 1, -2);
    ferry_assert_status(ferry_backward(y, bad, false), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "Mismatch in shape"));
    ferry_assert_ok(ferry_backward(y, seed, false));
    ferry_tensor *g = ferry_tensor_grad(x);
    EXPECT(g, F64, S(2), 0, 3, -6);
    release_all((ferry_tensor *[]){x, plain, y, bad, seed, g}, 6);
}

Test(autograd_engine, sums_all_paths_when_graph_has_diamonds_and_reused_leaves, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F64, S(2), 0.5, -1.0)), *w = leaf(MK(F64, S(2), 2.0, 3.0));
    /* diamond: y = (2x) * exp(x); reused leaf: x*x*x; shared subexpression s = x*w used twice */
    ferry_tensor *a = ferry_mul_scalar(x, 2.0), *b = ferry_exp(x), *d = ferry_mul(a, b);
    ferry_tensor *x2 = ferry_mul(x, x), *x3 = ferry_mul(x2, x);
    ferry_tensor *s = ferry_mul(x, w), *ss = ferry_mul(s, s), *t = ferry_add(s, ss);
    ferry_tensor *u = ferry_add(d, x3), *v = ferry_add(u, t), *loss = ferry_sum(v);
    ferry_assert_ok(ferry_backward(loss, NULL, false));
    ferry_tensor *gx = ferry_tensor_grad(x), *gw = ferry_tensor_grad(w);
    /* d/dx: 2e^x(1+x) + 3x^2 + w(1 + 2xw); d/dw: x(1 + 2xw) */
    double want_x[2], want_w[2];
    const double xv[2] = {0.5, -1.0}, wv[2] = {2.0, 3.0};
    for (int i = 0; i < 2; i++) {
        want_x[i] = 2 * exp(xv[i]) * (1 + xv[i]) + 3 * xv[i] * xv[i] + wv[i] * (1 + 2 * xv[i] * wv[i]);
        want_w[i] = xv[i] * (1 + 2 * xv[i] * wv[i]);
    }
    expect_values(gx, F64, 1, S(2), want_x, 1e-12);
    expect_values(gw, F64, 1, S(2), want_w, 1e-12);
    release_all((ferry_tensor *[]){x, w, a, b, d, x2, x3, s, ss, t, u, v, loss, gx, gw}, 15);
}

Test(autograd_engine, casts_gradients_to_leaf_dtype_when_ops_promote, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F32, S(2), 1, 2)), *k = MK(F64, S(2), 0.5, 4);
    ferry_tensor *y = ferry_mul(x, k), *loss = ferry_sum(y);
    cr_assert_eq(ferry_tensor_dtype(y), F64);
    ferry_assert_ok(ferry_backward(loss, NULL, false));
    ferry_tensor *g = ferry_tensor_grad(x);
    EXPECT(g, F32, S(2), 0, 0.5, 4);
    release_all((ferry_tensor *[]){x, k, y, loss, g}, 5);
}

static void *grad_mode_of_new_thread(void *arg)
{
    *(bool *)arg = ferry_is_grad_enabled();
    return NULL;
}

Test(autograd_engine, records_nothing_when_inside_no_grad_on_this_thread, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F32, S(2), 1, 2));
    cr_assert(ferry_is_grad_enabled());
    ferry_no_grad_enter();
    ferry_no_grad_enter();
    ferry_no_grad_exit();
    cr_assert(!ferry_is_grad_enabled(), "nested scopes");
    bool other = false;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, grad_mode_of_new_thread, &other), 0);
    pthread_join(th, NULL);
    cr_assert(other, "grad mode is per thread");
    ferry_tensor *y = ferry_mul(x, x);
    ferry_no_grad_exit();
    cr_assert(ferry_is_grad_enabled());
    cr_assert(!ferry_tensor_requires_grad(y) && ferry_tensor_grad_fn_name(y) == NULL);
    ferry_tensor *z = ferry_mul(x, x);
    cr_assert(ferry_tensor_requires_grad(z) && !ferry_tensor_is_leaf(z));
    cr_assert_str_eq(ferry_tensor_grad_fn_name(z), "MulBackward0");
    ferry_tensor *dz = ferry_detach(z);
    cr_assert(!ferry_tensor_requires_grad(dz) && ferry_tensor_is_leaf(dz));
    release_all((ferry_tensor *[]){x, y, z, dz}, 4);
}

Test(autograd_engine, refuses_like_torch_when_requires_grad_cannot_change, .timeout = 10)
{
    ferry_tensor *i = MK(I64, S(2), 1, 2), *x = leaf(MK(F32, S(2), 1, 2));
    ferry_assert_status(ferry_tensor_set_requires_grad(i, true), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "only Tensors of floating point dtype can require gradients");
    ferry_tensor *y = ferry_relu(x);
    ferry_assert_status(ferry_tensor_set_requires_grad(y, false), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "you can only change requires_grad flags of leaf variables."));
    cr_assert(ferry_tensor_is_leaf(x) && ferry_tensor_grad_fn_name(x) == NULL);
    ferry_tensor *g = MK(F32, S(2), 5, 6), *bad = MK(F32, S(3), 1, 2, 3);
    ferry_assert_ok(ferry_tensor_set_grad(x, g));
    ferry_assert_status(ferry_tensor_set_grad(x, bad), FERRY_EINVAL);
    ferry_tensor *got = ferry_tensor_grad(x);
    cr_assert_eq(got, g);
    release_all((ferry_tensor *[]){i, x, y, g, bad, got}, 6);
}

Test(autograd_engine, frees_long_chains_without_recursing_when_released, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F64, S(1), 1.0));
    ferry_tensor *cur = ferry_tensor_retain(x);
    for (int i = 0; i < 200000; i++) {
        ferry_tensor *next = ferry_add_scalar(cur, 1e-6);
        ferry_tensor_release(cur);
        cur = next;
    }
    ferry_assert_ok(ferry_backward(cur, NULL, true));
    ferry_tensor *g = ferry_tensor_grad(x);
    EXPECT(g, F64, S(1), 0, 1.0);
    release_all((ferry_tensor *[]){cur, x, g}, 3); /* frees 200000 nodes in a loop */
}

Test(autograd_engine, backward_of_a_leaf_root_sets_its_grad_when_called_directly, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F32, S(1), 4));
    ferry_assert_ok(ferry_backward(x, NULL, false));
    ferry_tensor *g = ferry_tensor_grad(x);
    EXPECT(g, F32, S(1), 0, 1);
    release_all((ferry_tensor *[]){x, g}, 2);
}

Test(autograd_engine, splits_max_gradient_evenly_when_maxima_tie, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F32, S(3), 1, 3, 3));
    ferry_tensor *m = ferry_max(x);
    cr_assert_str_eq(ferry_tensor_grad_fn_name(m), "MaxBackward1");
    ferry_assert_ok(ferry_backward(m, NULL, false));
    ferry_tensor *g = ferry_tensor_grad(x);
    EXPECT(g, F32, S(3), 0, 0, 0.5, 0.5); /* torch 1.13's evenly_distribute_backward */
    release_all((ferry_tensor *[]){x, m, g}, 3);
}
