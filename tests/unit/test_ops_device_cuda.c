/* Ops on a real GPU: the CUDA kernels (elementwise, copies, reductions, softmax, losses,
   index_select / embedding and their backward, cuBLAS products) against the CPU's values, and
   an MLP trained on cuda:0. These need a GPU and skip, saying why, without one. */
#include <stdlib.h>
#include <string.h>

#include "ferry/device.h"
#include "ferry/nn.h"
#include "ferry/optim.h"
#include "test_ops_util.h"

static void need_gpu(void)
{
    unsetenv("FERRY_EMULATE_DEVICES");
    if (strcmp(ferry_device_backend(), "cuda") != 0 || ferry_cuda_device_count() < 1)
        cr_skip_test("needs a CUDA GPU (device backend here: %s)", ferry_device_backend());
}

#define GPU FERRY_DEVICE_CUDA(0)

/* got (on the GPU) is close to want (CPU), and on the GPU. */
static void close_at(int line, ferry_tensor *got, ferry_tensor *want)
{
    cr_assert_not_null(got, "line %d: %s", line, ferry_last_error());
    cr_assert_not_null(want, "line %d: %s", line, ferry_last_error());
    ferry_device d = ferry_tensor_device(got);
    cr_assert(d.type == FERRY_CUDA && d.index == 0, "line %d: result not on cuda:0", line);
    cr_assert(ferry_allclose(got, want, 1e-5, 1e-6), "line %d: GPU result differs", line);
    ferry_tensor_release(got);
    ferry_tensor_release(want);
}
#define CLOSE(got, want) close_at(__LINE__, (got), (want))

Test(ops_device_cuda, kernels_match_the_cpu_when_a_gpu_is_present, .timeout = 60)
{
    need_gpu();
    ferry_tensor *a = MK(FERRY_FLOAT32, S(2, 3), 0.5, -1, 2, 3.25, -0.75, 1.5);
    ferry_tensor *b = MK(FERRY_FLOAT32, S(3), 1, 2, -4);
    ferry_tensor *m = MK(FERRY_FLOAT64, S(3, 2), 1, 2, 3, 4, 5, 6);
    ferry_tensor *md = MK(FERRY_FLOAT64, S(2, 3), 1, -2, 0.5, 4, 5, -6);
    ferry_tensor *idx = MK(FERRY_INT64, S(3), 2, 0, 1);
    ferry_tensor *tgt = MK(FERRY_INT64, S(2), 2, 0);
    ferry_tensor *ga = ferry_assert_ptr(ferry_tensor_to(a, GPU));
    ferry_tensor *gb = ferry_assert_ptr(ferry_tensor_to(b, GPU));
    ferry_tensor *gm = ferry_assert_ptr(ferry_tensor_to(m, GPU));
    ferry_tensor *gmd = ferry_assert_ptr(ferry_tensor_to(md, GPU));
    ferry_tensor *gidx = ferry_assert_ptr(ferry_tensor_to(idx, GPU));
    ferry_tensor *gtgt = ferry_assert_ptr(ferry_tensor_to(tgt, GPU));
    CLOSE(ferry_add(ga, gb), ferry_add(a, b));
    CLOSE(ferry_div(ga, gb), ferry_div(a, b));
    CLOSE(ferry_mul_scalar(ga, 3), ferry_mul_scalar(a, 3));
    CLOSE(ferry_tanh(ga), ferry_tanh(a));
    CLOSE(ferry_gelu(ga), ferry_gelu(a));
    int dims[1] = {1};
    CLOSE(ferry_sum_dim(ga, 1, dims, false), ferry_sum_dim(a, 1, dims, false));
    CLOSE(ferry_mean(ga), ferry_mean(a));
    CLOSE(ferry_max(ga), ferry_max(a));
    CLOSE(ferry_softmax(ga, 1), ferry_softmax(a, 1));
    CLOSE(ferry_log_softmax(gmd, 1), ferry_log_softmax(md, 1));
    CLOSE(ferry_matmul(gmd, gm), ferry_matmul(md, m));
    ferry_tensor *gt = ferry_assert_ptr(ferry_transpose(gm, 0, 1));
    ferry_tensor *ct = ferry_assert_ptr(ferry_transpose(m, 0, 1));
    CLOSE(ferry_tensor_contiguous(gt), ferry_tensor_contiguous(ct));
    CLOSE(ferry_matmul(gt, gm), ferry_matmul(ct, m));
    ferry_tensor_release(gt);
    ferry_tensor_release(ct);
    CLOSE(ferry_cross_entropy(gmd, gtgt, FERRY_REDUCTION_MEAN),
          ferry_cross_entropy(md, tgt, FERRY_REDUCTION_MEAN));
    CLOSE(ferry_index_select(ga, 1, gidx), ferry_index_select(a, 1, idx));
    CLOSE(ferry_embedding(gm, gidx), ferry_embedding(m, idx));
    ferry_assert_ok(ferry_add_(ga, gb));
    ferry_assert_ok(ferry_add_(a, b));
    CLOSE(ferry_tensor_clone_data(ga), ferry_tensor_clone_data(a));
    ferry_tensor *rel[] = {a, b, m, md, idx, tgt, ga, gb, gm, gmd, gidx, gtgt};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++)
        ferry_tensor_release(rel[i]);
}

Test(ops_device_cuda, loss_falls_when_a_model_trains_on_the_gpu, .timeout = 60)
{
    need_gpu();
    ferry_generator *gen = ferry_generator_new(3);
    ferry_tensor *w, *bias;
    ferry_assert_ok(ferry_linear_init(4, 3, true, FERRY_FLOAT32, gen, &w, &bias));
    ferry_tensor *p[2] = {ferry_assert_ptr(ferry_tensor_to(w, GPU)),
                          ferry_assert_ptr(ferry_tensor_to(bias, GPU))};
    for (int i = 0; i < 2; i++)
        ferry_assert_ok(ferry_tensor_set_requires_grad(p[i], true));
    ferry_tensor *xc = ferry_assert_ptr(ferry_randn(2, S(6, 4), FERRY_FLOAT32, gen));
    ferry_tensor *tc = MK(FERRY_INT64, S(6), 0, 1, 2, 0, 1, 2);
    ferry_tensor *x = ferry_assert_ptr(ferry_tensor_to(xc, GPU));
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_to(tc, GPU));
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_ADAM);
    o.lr = 0.1;
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(FERRY_ADAM, &o, p, 2));
    double first = 0, last = 0;
    for (int s = 0; s < 20; s++) {
        ferry_assert_ok(ferry_optimizer_zero_grad(opt));
        ferry_tensor *y = ferry_assert_ptr(ferry_linear(x, p[0], p[1]));
        ferry_tensor *l = ferry_assert_ptr(ferry_cross_entropy(y, t, FERRY_REDUCTION_MEAN));
        ferry_assert_ok(ferry_backward(l, NULL, false));
        ferry_assert_ok(ferry_optimizer_step(opt));
        last = ferry_tensor_item(l);
        if (s == 0)
            first = last;
        ferry_tensor_release(y);
        ferry_tensor_release(l);
    }
    cr_assert(last < first, "loss %g after 20 steps, %g at first", last, first);
    ferry_optimizer_free(opt);
    ferry_generator_free(gen);
    ferry_tensor *rel[] = {w, bias, p[0], p[1], xc, tc, x, t};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++)
        ferry_tensor_release(rel[i]);
}
