/* Optimizers on emulated devices: a small MLP (ferry_linear_init) on cuda:1 trains with
   backward and every optimizer kind to the very numbers the CPU gives, on the host-readable path
   and on the staged path real GPUs take; a gradient on another device than its parameter is
   refused. */
#include <stdlib.h>

#include "ferry/device.h"
#include "ferry/nn.h"
#include "ferry/optim.h"
#include "test_ops_util.h"
#include "tensor/ops_internal.h"

/* A 4-8-3 MLP with relu and cross-entropy, trained `steps` times on `dev` with `kind`; returns
   the final loss and leaves the parameters (moved back to the CPU) in out[0..3]. */
static double train(ferry_device dev, ferry_optim_kind kind, int steps, ferry_tensor **out)
{
    ferry_generator *gen = ferry_generator_new(11);
    ferry_tensor *w1, *b1, *w2, *b2;
    ferry_assert_ok(ferry_linear_init(4, 8, true, FERRY_FLOAT32, gen, &w1, &b1));
    ferry_assert_ok(ferry_linear_init(8, 3, true, FERRY_FLOAT32, gen, &w2, &b2));
    ferry_tensor *cpu[4] = {w1, b1, w2, b2}, *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = ferry_assert_ptr(ferry_tensor_to(cpu[i], dev));
        if (p[i] != cpu[i])
            ferry_assert_ok(ferry_tensor_set_requires_grad(p[i], true));
        ferry_tensor_release(cpu[i]);
    }
    ferry_tensor *xc = ferry_assert_ptr(ferry_randn(2, S(5, 4), FERRY_FLOAT32, gen));
    ferry_tensor *tc = MK(FERRY_INT64, S(5), 0, 2, 1, 2, 0);
    ferry_tensor *x = ferry_assert_ptr(ferry_tensor_to(xc, dev));
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_to(tc, dev));
    ferry_optim_options o;
    ferry_optim_options_init(&o, kind);
    o.lr = 0.05;
    o.momentum = kind == FERRY_SGD ? 0.9 : o.momentum;
    ferry_optimizer *opt = ferry_optimizer_new(kind, &o, p, 4);
    cr_assert_not_null(opt, "%s", ferry_last_error());
    double loss = 0;
    for (int s = 0; s < steps; s++) {
        ferry_assert_ok(ferry_optimizer_zero_grad(opt));
        ferry_tensor *h = ferry_assert_ptr(ferry_linear(x, p[0], p[1]));
        ferry_tensor *r = ferry_assert_ptr(ferry_relu(h));
        ferry_tensor *y = ferry_assert_ptr(ferry_linear(r, p[2], p[3]));
        ferry_tensor *l = ferry_assert_ptr(ferry_cross_entropy(y, t, FERRY_REDUCTION_MEAN));
        cr_assert(ferry_test_on_device(l, dev));
        ferry_assert_ok(ferry_backward(l, NULL, false));
        for (int i = 0; i < 4; i++) {
            ferry_tensor *g = ferry_tensor_grad(p[i]);
            cr_assert(ferry_test_on_device(g, dev));
            ferry_tensor_release(g);
        }
        ferry_assert_ok(ferry_optimizer_step(opt));
        loss = ferry_tensor_item(l);
        ferry_tensor *rel[] = {h, r, y, l};
        for (size_t i = 0; i < 4; i++)
            ferry_tensor_release(rel[i]);
    }
    for (int i = 0; i < 4; i++) {
        cr_assert(ferry_test_on_device(p[i], dev));
        out[i] = ferry_assert_ptr(ferry_tensor_to(p[i], FERRY_DEVICE_CPU));
        ferry_tensor_release(p[i]);
    }
    ferry_optimizer_free(opt);
    ferry_generator_free(gen);
    ferry_tensor *rel[] = {xc, tc, x, t};
    for (size_t i = 0; i < 4; i++)
        ferry_tensor_release(rel[i]);
    return loss;
}

static void same_training(ferry_optim_kind kind)
{
    ferry_tensor *a[4], *b[4];
    double la = train(FERRY_DEVICE_CPU, kind, 5, a);
    double lb = train(FERRY_DEVICE_CUDA(1), kind, 5, b);
    cr_assert_eq(la, lb, "loss %.9g on the CPU, %.9g on cuda:1", la, lb);
    for (int i = 0; i < 4; i++) {
        cr_assert(ferry_tensor_equal(a[i], b[i]), "parameter %d differs", i);
        ferry_tensor_release(a[i]);
        ferry_tensor_release(b[i]);
    }
}

Test(optim_device, training_matches_the_cpu_when_the_model_is_on_cuda1, .timeout = 60)
{
    ferry_test_emulate_devices(2);
    ferry_optim_kind kinds[] = {FERRY_SGD, FERRY_ADAM, FERRY_ADAMW, FERRY_ADAGRAD, FERRY_RMSPROP,
                                FERRY_ADADELTA, FERRY_ADAMAX, FERRY_RPROP};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        same_training(kinds[i]);
}

Test(optim_device, training_matches_the_cpu_when_steps_are_staged, .timeout = 60)
{
    ferry_test_emulate_devices(2);
    ferry__ops_force_staging(true);
    same_training(FERRY_SGD);
    same_training(FERRY_ADAM);
    same_training(FERRY_ADAGRAD);
}

Test(optim_device, step_fails_when_a_gradient_is_on_another_device, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    ferry_tensor *c = MK(FERRY_FLOAT32, S(2), 1, 2);
    ferry_tensor *p = ferry_assert_ptr(ferry_tensor_to(c, FERRY_DEVICE_CUDA(0)));
    ferry_assert_ok(ferry_tensor_set_requires_grad(p, true));
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = 0.1;
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(FERRY_SGD, &o, &p, 1));
    cr_assert_eq(ferry_optimizer_step_grads(opt, &c, 1), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "the gradient of optimizer parameter 0 is on cpu, the "
                                         "parameter on cuda:0");
    ferry_optimizer_free(opt);
    ferry_tensor_release(p);
    ferry_tensor_release(c);
}
