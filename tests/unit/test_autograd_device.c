/* Autograd on emulated devices: ferry_to moves values to another device and the gradient
   back; gradient seeds and accumulation stay on the tensor's device; a gradient on the wrong
   device is refused. */
#include <stdlib.h>

#include "ferry/device.h"
#include "test_ops_util.h"
#include "tensor/ops_internal.h"

static void run_to(void)
{
    ferry_tensor *x = MK(FERRY_FLOAT32, S(3), 1, -2, 3);
    ferry_assert_ok(ferry_tensor_set_requires_grad(x, true));
    ferry_tensor *d = ferry_assert_ptr(ferry_to(x, FERRY_DEVICE_CUDA(1)));
    cr_assert(ferry_test_on_device(d, FERRY_DEVICE_CUDA(1)));
    cr_assert_str_eq(ferry_tensor_grad_fn_name(d), "ToCopyBackward0");
    ferry_tensor *same = ferry_assert_ptr(ferry_to(d, FERRY_DEVICE_CUDA(1)));
    cr_assert_eq(same, d, "to() of the device it is on returns the tensor itself");
    ferry_tensor_release(same);
    ferry_tensor *y = ferry_assert_ptr(ferry_mul(d, d));
    ferry_tensor *s = ferry_assert_ptr(ferry_sum(y));
    cr_assert(ferry_test_on_device(s, FERRY_DEVICE_CUDA(1)));
    ferry_assert_ok(ferry_backward(s, NULL, false)); /* the seed is made on cuda:1 */
    ferry_tensor *g = ferry_tensor_grad(x);
    cr_assert(ferry_test_on_device(g, FERRY_DEVICE_CPU));
    EXPECT(g, FERRY_FLOAT32, S(3), 0, 2, -4, 6);
    ferry_tensor_release(g);
    /* and back again: cuda:1 -> cuda:0 -> loss; the gradient accumulates on cuda:1 */
    ferry_tensor *leaf = ferry_assert_ptr(ferry_tensor_to(x, FERRY_DEVICE_CUDA(1)));
    ferry_assert_ok(ferry_tensor_set_requires_grad(leaf, true));
    for (int k = 0; k < 2; k++) {
        ferry_tensor *o = ferry_assert_ptr(ferry_to(leaf, FERRY_DEVICE_CUDA(0)));
        ferry_tensor *l = ferry_assert_ptr(ferry_sum(o));
        ferry_assert_ok(ferry_backward(l, NULL, false));
        ferry_tensor_release(o);
        ferry_tensor_release(l);
    }
    ferry_tensor *lg = ferry_tensor_grad(leaf);
    cr_assert(ferry_test_on_device(lg, FERRY_DEVICE_CUDA(1)));
    EXPECT(lg, FERRY_FLOAT32, S(3), 0, 2, 2, 2);
    ferry_tensor_release(lg);
    /* a root gradient on another device is refused */
    ferry_tensor *o = ferry_assert_ptr(ferry_to(leaf, FERRY_DEVICE_CUDA(0)));
    ferry_tensor *cg = ferry_assert_ptr(ferry_ones(1, S(3), FERRY_FLOAT32));
    cr_assert_eq(ferry_backward(o, cg, false), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "invalid gradient at index 0 - expected device cuda:0 "
                                         "but got cpu");
    ferry_tensor *rel[] = {o, cg, leaf, x, d, y, s};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++)
        ferry_tensor_release(rel[i]);
}

Test(autograd_device, gradient_returns_to_the_source_when_to_moves_a_tensor, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    run_to();
}

Test(autograd_device, gradient_returns_to_the_source_when_ops_are_staged, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    ferry__ops_force_staging(true);
    run_to();
}

Test(autograd_device, set_grad_fails_when_the_grad_is_on_another_device, .timeout = 30)
{
    ferry_test_emulate_devices(2);
    ferry_tensor *c = MK(FERRY_FLOAT32, S(2), 1, 2);
    ferry_tensor *d = ferry_assert_ptr(ferry_tensor_to(c, FERRY_DEVICE_CUDA(0)));
    ferry_tensor *e = ferry_assert_ptr(ferry_tensor_to(c, FERRY_DEVICE_CUDA(1)));
    cr_assert_eq(ferry_tensor_set_grad(d, c), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "assigned grad has data located on a different device");
    cr_assert_eq(ferry_tensor_set_grad(d, e), FERRY_EINVAL);
    ferry_assert_ok(ferry_tensor_set_grad(d, d));
    ferry_tensor_release(c);
    ferry_tensor_release(d);
    ferry_tensor_release(e);
}
