/* Unit tests for the device layer's front on emulated devices: device count and backend, names,
   the current device, ferry_tensor_to, out of device memory, bad indices, and no devices.
   Criterion runs every test in a process of its own, so each sets FERRY_EMULATE_DEVICES (read
   once per process, at the first device call) at the top of its body. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "ferry/device.h"
#include "tensor/device.h"

static void emulate(const char *n)
{
    setenv("FERRY_EMULATE_DEVICES", n, 1);
}

Test(device, counts_emulated_devices_when_env_set, .timeout = 10)
{
    emulate("2");
    cr_assert_eq(ferry_cuda_device_count(), 2);
    cr_assert(ferry_cuda_is_available());
    cr_assert_str_eq(ferry_device_backend(), "emulated");
}

/* A second count in another test proves the variable is read afresh in each test's process. */
Test(device, reads_env_in_each_test_process_when_count_differs, .timeout = 10)
{
    emulate("3");
    cr_assert_eq(ferry_cuda_device_count(), 3);
    setenv("FERRY_EMULATE_DEVICES", "1", 1); /* read once: later changes do nothing */
    cr_assert_eq(ferry_cuda_device_count(), 3);
}

Test(device, has_no_devices_when_env_unset, .timeout = 10)
{
    unsetenv("FERRY_EMULATE_DEVICES");
    if (ferry_cuda_device_count() > 0)
        cr_skip_test("this machine has a real GPU");
    cr_assert_eq(ferry_cuda_device_count(), 0);
    cr_assert_not(ferry_cuda_is_available());
    cr_assert_str_eq(ferry_device_backend(), "none");
    int64_t n = 4;
    cr_assert_null(ferry_tensor_empty(1, &n, FERRY_FLOAT32, FERRY_DEVICE_CUDA(0)));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP);
#ifdef FERRY_WITH_CUDA
    cr_assert_str_eq(ferry_last_error(), "cuda:0: no CUDA device is present (torch.cuda."
                     "is_available() would be False: no GPU or no driver)");
#else
    cr_assert_str_eq(ferry_last_error(), "cuda:0: ferry was built without CUDA (rebuild with the "
                     "CUDA Toolkit, or set FERRY_EMULATE_DEVICES=N to emulate devices)");
#endif
    ferry_assert_status(ferry_cuda_set_device(0), FERRY_ENOTSUP);
    ferry_assert_status(ferry_cuda_synchronize(0), FERRY_ENOTSUP);
}

Test(device, warns_and_has_none_when_env_not_a_count, .timeout = 10)
{
    emulate("two");
    cr_assert_eq(ferry_cuda_device_count(), 0);
    cr_assert_str_eq(ferry_device_backend(), "none");
}

Test(device, formats_and_parses_names_like_torch, .timeout = 10)
{
    emulate("2");
    char buf[32];
    cr_assert_eq(ferry_device_format(FERRY_DEVICE_CPU, buf, sizeof buf), 3);
    cr_assert_str_eq(buf, "cpu");
    cr_assert_eq(ferry_device_format(FERRY_DEVICE_CUDA(1), buf, sizeof buf), 6);
    cr_assert_str_eq(buf, "cuda:1");
    cr_assert_eq(ferry_device_format(FERRY_DEVICE_CUDA(12), buf, 4), 7); /* needed, truncated */
    cr_assert_str_eq(buf, "cud");
    ferry_device d;
    ferry_assert_ok(ferry_device_parse("cuda:1", &d));
    cr_assert(d.type == FERRY_CUDA && d.index == 1);
    ferry_assert_ok(ferry_device_parse("cpu", &d));
    cr_assert(d.type == FERRY_CPU);
    ferry_assert_ok(ferry_cuda_set_device(1));
    ferry_assert_ok(ferry_device_parse("cuda", &d));
    cr_assert(d.type == FERRY_CUDA && d.index == 1);
    const char *bad[] = {"cuda:", "cuda:-1", "cuda:1x", "gpu:0", "CUDA:0", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ferry_assert_status(ferry_device_parse(bad[i], &d), FERRY_EINVAL);
        char want[128];
        snprintf(want, sizeof want, "Invalid device string: '%s' (expected \"cpu\", \"cuda\" or "
                 "\"cuda:<index>\")", bad[i]);
        cr_assert_str_eq(ferry_last_error(), want);
    }
}

Test(device, keeps_current_device_per_thread_when_set, .timeout = 10)
{
    emulate("2");
    cr_assert_eq(ferry_cuda_current_device(), 0);
    ferry_assert_ok(ferry_cuda_set_device(1));
    cr_assert_eq(ferry_cuda_current_device(), 1);
    int64_t n = 3;
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_empty(1, &n, FERRY_FLOAT32,
                                                          FERRY_DEVICE_CUDA(-1)));
    cr_assert_eq(ferry_tensor_device(t).index, 1, "cuda(-1) is the current device");
    ferry_tensor_release(t);
    ferry_assert_ok(ferry_cuda_synchronize(-1));
}

Test(device, names_the_index_and_devices_when_index_invalid, .timeout = 10)
{
    emulate("2");
    ferry_assert_status(ferry_cuda_set_device(2), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "cuda:2: invalid device ordinal: this process has 2 "
                     "CUDA devices (cuda:0..cuda:1)");
    ferry_assert_status(ferry_cuda_set_device(-1), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "cuda:-1: Device index must not be negative");
    cr_assert_eq(ferry_cuda_current_device(), 0, "a failed set keeps the device");
    int64_t n = 3;
    cr_assert_null(ferry_tensor_empty(1, &n, FERRY_FLOAT32, FERRY_DEVICE_CUDA(7)));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "cuda:7: invalid device ordinal: this process has 2 "
                     "CUDA devices (cuda:0..cuda:1)");
    ferry_assert_status(ferry_cuda_synchronize(5), FERRY_EINVAL);
    ferry_device odd = {(ferry_device_type)7, 0};
    cr_assert_null(ferry_tensor_empty(1, &n, FERRY_FLOAT32, odd));
    cr_assert_str_eq(ferry_last_error(), "unknown device type 7");
}

Test(device, says_one_device_when_only_one, .timeout = 10)
{
    emulate("1");
    ferry_assert_status(ferry_cuda_set_device(1), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "cuda:1: invalid device ordinal: this process has 1 "
                     "CUDA device (cuda:0..cuda:0)");
}

static ferry_tensor *iota(int64_t rows, int64_t cols)
{
    const int64_t sizes[] = {rows, cols};
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_empty(2, sizes, FERRY_FLOAT32,
                                                          FERRY_DEVICE_CPU));
    float *p = ferry_tensor_data(t);
    for (int64_t i = 0; i < rows * cols; i++)
        p[i] = (float)i + 0.5f;
    return t;
}

Test(device_to, moves_values_to_device_and_back_when_contiguous, .timeout = 10)
{
    emulate("2");
    setenv("FERRY_EMULATE_DEVICE_DELAY_US", "2000", 1); /* the copies must still be complete */
    ferry_tensor *cpu = iota(3, 4);
    ferry_tensor *dev = ferry_assert_ptr(ferry_tensor_to(cpu, FERRY_DEVICE_CUDA(1)));
    cr_assert(ferry_tensor_device(dev).type == FERRY_CUDA && ferry_tensor_device(dev).index == 1);
    cr_assert_neq(ferry_tensor_data(dev), ferry_tensor_data(cpu));
    cr_assert_eq(ferry_tensor_size(dev, 0), 3);
    cr_assert_eq(ferry_tensor_size(dev, 1), 4);
    cr_assert_eq(ferry_tensor_dtype(dev), FERRY_FLOAT32);
    ferry_tensor *back = ferry_assert_ptr(ferry_tensor_to(dev, FERRY_DEVICE_CPU));
    cr_assert(ferry_tensor_device(back).type == FERRY_CPU);
    cr_assert_eq(memcmp(ferry_tensor_data(back), ferry_tensor_data(cpu), 12 * sizeof(float)), 0);
    ferry_tensor_release(back);
    ferry_tensor_release(dev);
    ferry_tensor_release(cpu);
}

Test(device_to, copies_between_devices_when_indices_differ, .timeout = 10)
{
    emulate("3");
    setenv("FERRY_EMULATE_DEVICE_DELAY_US", "2000", 1);
    ferry_tensor *cpu = iota(2, 5);
    ferry_tensor *d0 = ferry_assert_ptr(ferry_tensor_to(cpu, FERRY_DEVICE_CUDA(0)));
    ferry_tensor *d2 = ferry_assert_ptr(ferry_tensor_to(d0, FERRY_DEVICE_CUDA(2)));
    cr_assert_eq(ferry_tensor_device(d2).index, 2);
    cr_assert_not(ferry_tensor_shares_storage(d0, d2));
    ferry_tensor *back = ferry_assert_ptr(ferry_tensor_to(d2, FERRY_DEVICE_CPU));
    const float *p = ferry_tensor_data(back);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(p[i], (float)i + 0.5f);
    ferry_tensor_release(back);
    ferry_tensor_release(d2);
    ferry_tensor_release(d0);
    ferry_tensor_release(cpu);
}

Test(device_to, keeps_strides_of_a_view_when_moved, .timeout = 10)
{
    emulate("1");
    ferry_tensor *cpu = iota(3, 4);
    ferry_tensor *tr = ferry_assert_ptr(ferry_tensor_transpose(cpu, 0, 1)); /* 4x3, strides 1,4 */
    ferry_tensor *col = ferry_assert_ptr(ferry_tensor_narrow(tr, 0, 1, 2));  /* offset 1 */
    ferry_tensor *dev = ferry_assert_ptr(ferry_tensor_to(col, FERRY_DEVICE_CUDA(0)));
    cr_assert_eq(ferry_tensor_strides(dev)[0], 1);
    cr_assert_eq(ferry_tensor_strides(dev)[1], 4);
    cr_assert_eq(ferry_tensor_storage_offset(dev), 0, "only the span it reaches moves");
    ferry_tensor *back = ferry_assert_ptr(ferry_tensor_to(dev, FERRY_DEVICE_CPU));
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 3; j++)
            cr_assert_eq(ferry_tensor_item_at(back, i * 3 + j), (double)(j * 4 + i + 1) + 0.5,
                         "[%d][%d]", (int)i, (int)j);
    ferry_tensor_release(back);
    ferry_tensor_release(dev);
    ferry_tensor_release(col);
    ferry_tensor_release(tr);
    ferry_tensor_release(cpu);
}

Test(device_to, returns_the_same_tensor_when_already_there, .timeout = 10)
{
    emulate("2");
    ferry_tensor *cpu = iota(2, 2);
    ferry_tensor *same = ferry_assert_ptr(ferry_tensor_to(cpu, FERRY_DEVICE_CPU));
    cr_assert_eq(same, cpu);
    ferry_tensor *dev = ferry_assert_ptr(ferry_tensor_to(cpu, FERRY_DEVICE_CUDA(1)));
    ferry_assert_ok(ferry_cuda_set_device(1));
    ferry_tensor *again = ferry_assert_ptr(ferry_tensor_to(dev, FERRY_DEVICE_CUDA(-1)));
    cr_assert_eq(again, dev, "cuda(-1) is the current device, cuda:1");
    ferry_tensor_release(again);
    ferry_tensor_release(dev);
    ferry_tensor_release(same);
    ferry_tensor_release(cpu);
}

Test(device_to, fails_naming_the_device_when_index_invalid, .timeout = 10)
{
    emulate("1");
    ferry_tensor *cpu = iota(1, 1);
    cr_assert_null(ferry_tensor_to(cpu, FERRY_DEVICE_CUDA(3)));
    cr_assert_str_eq(ferry_last_error(), "cuda:3: invalid device ordinal: this process has 1 "
                     "CUDA device (cuda:0..cuda:0)");
    cr_assert_null(ferry_tensor_to(NULL, FERRY_DEVICE_CUDA(0)));
    cr_assert_str_eq(ferry_last_error(), "ferry_tensor_to: tensor is NULL");
    ferry_tensor_release(cpu);
}

Test(device_memory, is_enomem_naming_the_device_then_next_works, .timeout = 10)
{
    emulate("2");
    setenv("FERRY_EMULATE_DEVICE_MEMORY", "1048576", 1);
    const int64_t big = 1 << 19; /* 2 MiB of float32: more than the device has */
    cr_assert_null(ferry_tensor_empty(1, &big, FERRY_FLOAT32, FERRY_DEVICE_CUDA(1)));
    cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
    cr_assert_str_eq(ferry_last_error(), "CUDA out of memory on cuda:1: tried to allocate "
                     "2097152 bytes with 0 of 1048576 in use");
    const int64_t small = 1024;
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_empty(1, &small, FERRY_FLOAT32,
                                                          FERRY_DEVICE_CUDA(1)));
    ferry_tensor_release(t);
    /* the whole device, freed and allocated again, many times: frees give the bytes back */
    const int64_t most = (1 << 18) - 1024;
    for (int i = 0; i < 20; i++) {
        t = ferry_assert_ptr(ferry_tensor_empty(1, &most, FERRY_FLOAT32, FERRY_DEVICE_CUDA(1)));
        ferry_tensor_release(t);
    }
}
