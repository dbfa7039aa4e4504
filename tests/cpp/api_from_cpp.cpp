// The C API used from C++ as a C++ program would: the device constants by their plain names,
// values built, formatted and released, a tensor on a named device, and a registered function
// that passes its const arguments on to the calls that send them, with no cast (g++ refuses a
// conversion that drops const, so compiling this is half the test; a one-worker run is the
// other). Built with g++ -Werror and run by `make check-cpp` (part of `make test`); it exits
// non-zero on the first mismatch.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "ferry/ferry.h"

static int failures = 0;

static void expect(bool ok, const char *what)
{
    if (!ok) {
        std::fprintf(stderr, "api_from_cpp: %s (last error: %s)\n", what, ferry_last_error());
        failures++;
    }
}

static ferry_status echo(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                         void *user)
{
    (void)kwargs;
    (void)user;
    *result = ferry_value_retain(ferry_list_get(args, 0));
    return *result ? FERRY_OK : ferry_last_status();
}

// Forwards its own (const) args and kwargs through every kind of call that sends arguments,
// and keeps them in a dict and an RRef, then answers with what the plain call gave.
static ferry_status forward(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    (void)user;
    ferry_future *f = ferry_rpc_async("cpp0", "echo", args, kwargs, FERRY_TIMEOUT_DEFAULT);
    ferry_value *via_async = f ? ferry_future_value(f) : nullptr;
    ferry_future_release(f);
    ferry_rref *r = ferry_remote("cpp0", "echo", args, kwargs, FERRY_TIMEOUT_DEFAULT);
    ferry_value *via_remote = r ? ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT) : nullptr;
    ferry_rref *held = ferry_rref_new(args);
    ferry_value *d = ferry_dict_new();
    ferry_status kept = ferry_dict_set(d, "args", args);
    bool all = via_async && via_remote && held && kept == FERRY_OK &&
               ferry_value_equal(via_async, via_remote);
    ferry_value_release(via_async);
    ferry_value_release(via_remote);
    ferry_rref_release(r);
    ferry_rref_release(held);
    ferry_value_release(d);
    if (!all)
        return ferry_set_error(FERRY_EINVAL, "a forwarded call failed: %s", ferry_last_error());
    *result = ferry_rpc_sync("cpp0", "echo", args, kwargs, FERRY_TIMEOUT_DEFAULT);
    return *result ? FERRY_OK : ferry_last_status();
}

// One worker calls itself: forward(41) passes 41 on to echo and back.
static void forwarding_const_arguments()
{
    const char *tmp = std::getenv("TMPDIR");
    char path[512];
    std::snprintf(path, sizeof path, "%s/ferry-cpp-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    expect(fd >= 0, "a rendezvous file is made");
    if (fd < 0)
        return;
    close(fd);
    unlink(path);
    char method[sizeof path + 16];
    std::snprintf(method, sizeof method, "file://%s", path);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.init_method = method;
    o.transport = "tcp";
    expect(ferry_register_function("echo", echo, nullptr) == FERRY_OK, "echo registers");
    expect(ferry_register_function("forward", forward, nullptr) == FERRY_OK, "forward registers");
    if (ferry_init_rpc("cpp0", 0, 1, &o) != FERRY_OK) {
        expect(false, "a one-worker agent starts");
        return;
    }
    ferry_value *args = ferry_args(1, ferry_int(41));
    ferry_value *v = ferry_rpc_sync("cpp0", "forward", args, nullptr, FERRY_TIMEOUT_DEFAULT);
    expect(v && ferry_value_as_int(v) == 41, "forward passes its const arguments on");
    ferry_value_release(v);
    ferry_value_release(args);
    expect(ferry_shutdown(true, 10) == FERRY_OK, "the agent shuts down");
    unlink(path);
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
    forwarding_const_arguments();
    if (failures == 0)
        std::printf("api_from_cpp: the C API works from C++\n");
    return failures == 0 ? 0 : 1;
}
