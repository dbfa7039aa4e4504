/* Ops on device tensors through the emulation backend (two emulated devices): every op family
   on cuda:0 gives the CPU's values, bit for bit, and leaves its result on cuda:0; mixing devices
   fails with torch's text; a 0-dim CPU tensor joins a device op. The "staged" suite runs the
   same ops through the path real GPUs take when the host cannot read device memory. */
#include <stdlib.h>

#include "ferry/device.h"
#include "test_ops_util.h"
#include "tensor/ops_internal.h"

#define DEV0 FERRY_DEVICE_CUDA(0)
#define DEV1 FERRY_DEVICE_CUDA(1)

static ferry_tensor *on(ferry_tensor *t, ferry_device d)
{
    ferry_tensor *out = ferry_assert_ptr(ferry_tensor_to(t, d));
    return out;
}

static void expect_on(ferry_tensor *t, ferry_device d)
{
    cr_assert_not_null(t, "op failed: %s", ferry_last_error());
    ferry_device got = ferry_tensor_device(t);
    cr_assert(got.type == d.type && got.index == d.index, "result on %d:%d", got.type, got.index);
}

/* got (on dev) equals want (on the CPU): same dtype, shape and values. */
static void expect_same_at(int line, ferry_tensor *got, ferry_tensor *want, ferry_device dev)
{
    expect_on(got, dev);
    cr_assert_not_null(want, "line %d: cpu op failed: %s", line, ferry_last_error());
    cr_assert(ferry_tensor_equal(got, want), "line %d: device result differs from the CPU's", line);
    ferry_tensor_release(got);
    ferry_tensor_release(want);
}

#define expect_same(got, want, dev) expect_same_at(__LINE__, (got), (want), (dev))

typedef ferry_tensor *(*bin_fn)(ferry_tensor *, ferry_tensor *);
typedef ferry_tensor *(*un_fn)(ferry_tensor *);

static void run_families(ferry_device dev)
{
    ferry_tensor *a = MK(FERRY_FLOAT32, S(2, 3), 0.5, -1, 2, 3.25, -0.75, 1.5);
    ferry_tensor *b = MK(FERRY_FLOAT32, S(3), 1, 2, -4);
    ferry_tensor *m = MK(FERRY_FLOAT64, S(3, 2), 1, 2, 3, 4, 5, 6);
    ferry_tensor *md = MK(FERRY_FLOAT64, S(2, 3), 1, -2, 0.5, 4, 5, -6);
    ferry_tensor *idx = MK(FERRY_INT64, S(3), 2, 0, 1);
    ferry_tensor *tgt = MK(FERRY_INT64, S(2), 2, 0);
    ferry_tensor *da = on(a, dev), *db = on(b, dev), *dm = on(m, dev), *dmd = on(md, dev);
    ferry_tensor *didx = on(idx, dev), *dtgt = on(tgt, dev);

    bin_fn bins[] = {ferry_add, ferry_sub, ferry_mul, ferry_div};
    for (size_t i = 0; i < sizeof bins / sizeof *bins; i++)
        expect_same(bins[i](da, db), bins[i](a, b), dev);
    expect_same(ferry_sqrt(dm), ferry_sqrt(m), dev); /* NaN never equals: positive input */
    expect_same(ferry_log(dm), ferry_log(m), dev);
    un_fn uns[] = {ferry_neg, ferry_abs, ferry_relu, ferry_exp, ferry_sigmoid,
                   ferry_tanh, ferry_gelu, ferry_sum, ferry_mean, ferry_max, ferry_clone};
    for (size_t i = 0; i < sizeof uns / sizeof *uns; i++)
        expect_same(uns[i](da), uns[i](a), dev);
    expect_same(ferry_add_scalar(da, 2.5), ferry_add_scalar(a, 2.5), dev);
    expect_same(ferry_mul_scalar(da, -3), ferry_mul_scalar(a, -3), dev);
    expect_same(ferry_div_scalar(da, 7), ferry_div_scalar(a, 7), dev);
    expect_same(ferry_pow(da, 2), ferry_pow(a, 2), dev);
    expect_same(ferry_add_alpha(da, db, 0.5), ferry_add_alpha(a, b, 0.5), dev);
    int dims[1] = {1};
    expect_same(ferry_sum_dim(da, 1, dims, true), ferry_sum_dim(a, 1, dims, true), dev);
    expect_same(ferry_mean_dim(da, 1, dims, false), ferry_mean_dim(a, 1, dims, false), dev);
    ferry_tensor *di = NULL, *ci = NULL;
    expect_same(ferry_max_dim(da, 1, false, &di), ferry_max_dim(a, 1, false, &ci), dev);
    expect_same(di, ci, dev);
    expect_same(ferry_softmax(da, 1), ferry_softmax(a, 1), dev);
    expect_same(ferry_log_softmax(dmd, 0), ferry_log_softmax(md, 0), dev);
    expect_same(ferry_matmul(dmd, dm), ferry_matmul(md, m), dev);
    ferry_tensor *dt = ferry_assert_ptr(ferry_transpose(dm, 0, 1));
    ferry_tensor *ct = ferry_assert_ptr(ferry_transpose(m, 0, 1));
    expect_same(ferry_matmul(dt, dm), ferry_matmul(ct, m), dev); /* strided operand */
    expect_same(ferry_tensor_contiguous(dt), ferry_tensor_contiguous(ct), dev);
    expect_same(ferry_tensor_to_dtype(dt, FERRY_FLOAT32), ferry_tensor_to_dtype(ct, FERRY_FLOAT32),
                dev);
    expect_same(ferry_add(dt, dt), ferry_add(ct, ct), dev);
    ferry_tensor_release(dt);
    ferry_tensor_release(ct);
    ferry_tensor *da64 = ferry_assert_ptr(ferry_tensor_to_dtype(da, FERRY_FLOAT64));
    ferry_tensor *a64 = ferry_assert_ptr(ferry_tensor_to_dtype(a, FERRY_FLOAT64));
    expect_same(ferry_mse_loss(da64, dmd, FERRY_REDUCTION_MEAN),
                ferry_mse_loss(a64, md, FERRY_REDUCTION_MEAN), dev);
    ferry_tensor_release(da64);
    ferry_tensor_release(a64);
    expect_same(ferry_nll_loss(dmd, dtgt, FERRY_REDUCTION_SUM),
                ferry_nll_loss(md, tgt, FERRY_REDUCTION_SUM), dev);
    expect_same(ferry_cross_entropy(dmd, dtgt, FERRY_REDUCTION_NONE),
                ferry_cross_entropy(md, tgt, FERRY_REDUCTION_NONE), dev);
    expect_same(ferry_index_select(da, 1, didx), ferry_index_select(a, 1, idx), dev);
    expect_same(ferry_embedding(dm, didx), ferry_embedding(m, idx), dev);
    ferry_tensor *dpair[2] = {da, da}, *cpair[2] = {a, a};
    expect_same(ferry_cat(dpair, 2, 0), ferry_cat(cpair, 2, 0), dev);
    expect_same(ferry_stack(dpair, 2, 1), ferry_stack(cpair, 2, 1), dev);
    expect_same(ferry_reshape(da, 1, S(6)), ferry_reshape(a, 1, S(6)), dev);
    expect_same(ferry_narrow(da, 1, 1, 2), ferry_narrow(a, 1, 1, 2), dev);
    expect_same(ferry_unsqueeze(da, 0), ferry_unsqueeze(a, 0), dev);
    ferry_generator *g1 = ferry_generator_new(7), *g2 = ferry_generator_new(7);
    expect_same(ferry_dropout(da, 0.5, true, g1), ferry_dropout(a, 0.5, true, g2), dev);
    ferry_generator_free(g1);
    ferry_generator_free(g2);

    /* in place, also through a strided view */
    ferry_tensor *x = ferry_assert_ptr(ferry_tensor_clone_data(a));
    ferry_tensor *dx = on(x, dev);
    ferry_tensor *xv = ferry_assert_ptr(ferry_narrow(x, 1, 1, 2));
    ferry_tensor *dxv = ferry_assert_ptr(ferry_narrow(dx, 1, 1, 2));
    ferry_assert_ok(ferry_add_(dx, db));
    ferry_assert_ok(ferry_add_(x, b));
    ferry_assert_ok(ferry_mul_scalar_(dxv, 3));
    ferry_assert_ok(ferry_mul_scalar_(xv, 3));
    ferry_assert_ok(ferry_addcmul_(dx, da, da, 0.25));
    ferry_assert_ok(ferry_addcmul_(x, a, a, 0.25));
    ferry_assert_ok(ferry_addcdiv_(dxv, dxv, dxv, 2));
    ferry_assert_ok(ferry_addcdiv_(xv, xv, xv, 2));
    cr_assert(ferry_tensor_equal(dx, x));
    ferry_assert_ok(ferry_fill_(dxv, 9));
    ferry_assert_ok(ferry_fill_(xv, 9));
    cr_assert(ferry_tensor_equal(dx, x));
    ferry_assert_ok(ferry_zero_(dx));
    cr_assert_eq(ferry_tensor_item_at(dx, 4), 0.0);
    ferry_assert_ok(ferry_tensor_copy_(dx, a)); /* copy_ from the CPU */
    cr_assert(ferry_tensor_equal(dx, a));
    expect_on(dx, dev);
    ferry_tensor *tv[] = {xv, dxv, x, dx, da, db, dm, dmd, didx, dtgt, a, b, m, md, idx, tgt};
    for (size_t i = 0; i < sizeof tv / sizeof *tv; i++)
        ferry_tensor_release(tv[i]);
}

Test(ops_device, results_match_the_cpu_when_operands_are_on_a_device, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    run_families(DEV0);
    run_families(DEV1);
}

Test(ops_device, results_match_the_cpu_when_ops_are_staged, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    ferry__ops_force_staging(true);
    run_families(DEV0);
}

static void expect_mix_error(ferry_tensor *r, const char *text)
{
    cr_assert_null(r);
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), text);
}

static void run_mixing(void)
{
    ferry_tensor *c = MK(FERRY_FLOAT32, S(2), 1, 2);
    ferry_tensor *d0 = on(c, DEV0), *d1 = on(c, DEV1);
    expect_mix_error(ferry_add(d0, c), "Expected all tensors to be on the same device, but found "
                                       "at least two devices, cuda:0 and cpu!");
    expect_mix_error(ferry_add(c, d0), "Expected all tensors to be on the same device, but found "
                                       "at least two devices, cuda:0 and cpu!");
    expect_mix_error(ferry_mul(d0, d1), "Expected all tensors to be on the same device, but "
                                        "found at least two devices, cuda:0 and cuda:1!");
    expect_mix_error(ferry_matmul(d1, d0), "Expected all tensors to be on the same device, but "
                                           "found at least two devices, cuda:1 and cuda:0!");
    ferry_tensor *pair[2] = {d0, c};
    expect_mix_error(ferry_cat(pair, 2, 0), "Expected all tensors to be on the same device, but "
                                            "found at least two devices, cuda:0 and cpu!");
    cr_assert_eq(ferry_add_(d0, d1), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "Expected all tensors to be on the same device, but "
                                         "found at least two devices, cuda:0 and cuda:1!");
    /* a 0-dim CPU tensor joins a device op, as torch's CPU scalars */
    ferry_tensor *s = ferry_assert_ptr(ferry_scalar_tensor(3, FERRY_FLOAT32));
    ferry_tensor *r = ferry_add(d1, s), *want = ferry_add(c, s);
    expect_same(r, want, DEV1);
    ferry_assert_ok(ferry_mul_(d1, s));
    ferry_tensor_release(s);
    ferry_tensor_release(c);
    ferry_tensor_release(d0);
    ferry_tensor_release(d1);
}

Test(ops_device, op_fails_with_torch_text_when_operands_mix_devices, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    run_mixing();
}

Test(ops_device, op_fails_with_torch_text_when_staged_operands_mix_devices, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    ferry__ops_force_staging(true);
    run_mixing();
}

static void run_empty(void)
{
    ferry_tensor *e = ferry_assert_ptr(ferry_zeros(2, S(0, 3), FERRY_FLOAT64));
    ferry_tensor *de = on(e, DEV0);
    expect_same(ferry_add(de, de), ferry_add(e, e), DEV0);
    expect_same(ferry_sum(de), ferry_sum(e), DEV0);
    ferry_tensor *dt = ferry_assert_ptr(ferry_transpose(de, 0, 1));
    ferry_tensor *ct = ferry_assert_ptr(ferry_transpose(e, 0, 1));
    expect_same(ferry_matmul(dt, de), ferry_matmul(ct, e), DEV0); /* zeros [3, 3] */
    expect_same(ferry_exp(de), ferry_exp(e), DEV0);
    ferry_assert_ok(ferry_fill_(de, 1));
    ferry_tensor_release(dt);
    ferry_tensor_release(ct);
    ferry_tensor_release(de);
    ferry_tensor_release(e);
}

Test(ops_device, results_stay_on_the_device_when_inputs_are_empty, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    run_empty();
    ferry__ops_force_staging(true);
    run_empty();
}
