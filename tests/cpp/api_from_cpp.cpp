// The C API used from C++ as a C++ program would: the device constants by their plain names,
// values built, formatted and released, a tensor on a named device. Built with g++ -Werror
// and run by `make check-cpp` (part of `make test`); it exits non-zero on the first mismatch.
#include <cstdio>
#include <cstring>

#include "ferry/ferry.h"

static int failures = 0;

static void expect(bool ok, const char *what)
{
    if (!ok) {
        std::fprintf(stderr, "api_from_cpp: %s (last error: %s)\n", what, ferry_last_error());
        failures++;
    }
}

int main()
{
    ferry_device cpu = FERRY_DEVICE_CPU;
    ferry_device gpu = FERRY_DEVICE_CUDA(1);
    expect(cpu.type == FERRY_CPU && cpu.index == 0, "FERRY_DEVICE_CPU is the CPU");
    expect(gpu.type == FERRY_CUDA && gpu.index == 1, "FERRY_DEVICE_CUDA(1) is CUDA device 1");
    ferry_device_type kinds[] = {FERRY_CPU, FERRY_CUDA};
    expect(kinds[0] != kinds[1], "the device types are distinct constants");

    int64_t shape[] = {2, 3};
    ferry_tensor *t = ferry_zeros(2, shape, FERRY_FLOAT32);
    expect(t != nullptr, "a tensor is made");
    expect(t && ferry_tensor_device(t).type == FERRY_CPU, "it lives on the CPU");

    ferry_value *v = ferry_list_of(3, ferry_int(1), ferry_string("two"), ferry_tensor_value(t));
    char buf[256];
    size_t n = ferry_value_format(v, buf, sizeof buf);
    expect(n == std::strlen(buf), "ferry_value_format says its length");
    expect(std::strncmp(buf, "[1, 'two', tensor(", 18) == 0, "the list formats as Python's");
    ferry_value_release(v);
    ferry_tensor_release(t);
    if (failures == 0)
        std::printf("api_from_cpp: the C API works from C++\n");
    return failures == 0 ? 0 : 1;
}
