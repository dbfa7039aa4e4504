/* Unit tests for the CUDA backend on a machine without a GPU or driver: the library loads, sees
   no device, says so as an error (never an abort or a print), and maps CUDA's error codes in
   one place. They run only in a CUDA build with no device present; elsewhere they skip. */
#include <stdlib.h>

#include "common/test_util.h"
#include "tensor/device.h"
#ifdef FERRY_WITH_CUDA
#include <cuda_runtime_api.h>

#include "tensor/device_cuda.h"
#endif

static void require_cuda_without_devices(void)
{
    unsetenv("FERRY_EMULATE_DEVICES");
#ifndef FERRY_WITH_CUDA
    cr_skip_test("built without CUDA (FERRY_WITH_CUDA=0)");
#else
    if (ferry_cuda_device_count() > 0)
        cr_skip_test("this machine has a CUDA device");
#endif
}

Test(device_cuda, has_no_devices_and_says_so_when_no_driver, .timeout = 20)
{
    require_cuda_without_devices();
    cr_assert_eq(ferry_cuda_device_count(), 0);
    cr_assert_not(ferry_cuda_is_available());
    cr_assert_str_eq(ferry_device_backend(), "none");
    int64_t n = 8;
    cr_assert_null(ferry_tensor_empty(1, &n, FERRY_FLOAT32, FERRY_DEVICE_CUDA(0)));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP);
    cr_assert_str_eq(ferry_last_error(), "cuda:0: no CUDA device is present (torch.cuda."
                     "is_available() would be False: no GPU or no driver)");
    ferry_tensor *cpu = ferry_assert_ptr(ferry_zeros(1, &n, FERRY_FLOAT32));
    cr_assert_null(ferry_tensor_to(cpu, FERRY_DEVICE_CUDA(0)));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP);
    ferry_tensor_release(cpu);
}

#ifdef FERRY_WITH_CUDA
Test(device_cuda, maps_cuda_errors_to_ferry_codes_naming_the_device, .timeout = 20)
{
    require_cuda_without_devices();
    cr_assert_eq(ferry__cuda_fail(cudaSuccess, 0, "cudaMalloc"), FERRY_OK);
    cr_assert_eq(ferry__cuda_fail(cudaErrorMemoryAllocation, 1, "cudaMalloc"), FERRY_ENOMEM);
    cr_assert_str_eq(ferry_last_error(), "cuda:1: cudaMalloc failed: out of memory "
                     "(cudaErrorMemoryAllocation)");
    cr_assert_eq(ferry__cuda_fail(cudaErrorNoDevice, -1, "cudaGetDeviceCount"), FERRY_ENOTSUP);
    cr_assert_str_eq(ferry_last_error(), "CUDA: cudaGetDeviceCount failed: no CUDA-capable "
                     "device is detected (cudaErrorNoDevice)");
    cr_assert_eq(ferry__cuda_fail(cudaErrorInsufficientDriver, 0, "x"), FERRY_ENOTSUP);
    cr_assert_eq(ferry__cuda_fail(cudaErrorLaunchFailure, 2, "cudaStreamSynchronize"),
                 FERRY_EDEVICE);
}

Test(device_cuda, has_no_stream_when_no_device, .timeout = 20)
{
    require_cuda_without_devices();
    cr_assert_null(ferry__cuda_stream(0));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP);
}

Test(device_cuda, has_no_cuda_stream_when_devices_emulated, .timeout = 20)
{
    setenv("FERRY_EMULATE_DEVICES", "1", 1);
    cr_assert_null(ferry__cuda_stream(0));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP);
    cr_assert_str_eq(ferry_last_error(), "cuda:0: the devices are emulated, not CUDA: there is "
                     "no CUDA stream");
}
#endif
