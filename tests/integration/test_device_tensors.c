/* Tensors on (emulated) devices over RPC: through the caller's device map to the mapped device
   of the callee, and back through the inverse of the caller's map, in arguments and results,
   nested in lists and dicts, as views; through remote() and to_here, RRef arguments and async
   functions; on the staged and the direct path (FERRY_DEVICE_PATH). A tensor with no map entry
   fails at once with torch's text, a result with no inverse entry fails its call, out of device
   memory on the receiver fails its call; after each the next call works.

   Maps: worker0 -> worker1 {cuda:0: cuda:1}, worker1 -> worker0 {cuda:1: cuda:0}; both
   workers have two emulated devices (worker0's hold 3 MiB each, worker1's 1 MiB). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device_util.h"
#include "rpc_harness.h"

#include "ferry/device.h"
#include "ferry/rref.h"

typedef struct {
    const char *path; /* FERRY_DEVICE_PATH */
    int port;
} dev_case;

static void describe_into(const ferry_value *v, char *buf, size_t cap)
{
    size_t len = strlen(buf);
    if (ferry_value_kind(v) == FERRY_VALUE_TENSOR) {
        ferry_device_format(ferry_tensor_device(ferry_value_as_tensor(v)), buf + len, cap - len);
    } else if (ferry_value_kind(v) == FERRY_VALUE_LIST) {
        for (size_t i = 0; i < ferry_list_len(v); i++) {
            describe_into(ferry_list_get(v, i), buf, cap);
            len = strlen(buf);
            snprintf(buf + len, cap - len, " ");
        }
    } else if (ferry_value_kind(v) == FERRY_VALUE_DICT) {
        for (size_t i = 0; i < ferry_dict_len(v); i++) {
            len = strlen(buf);
            snprintf(buf + len, cap - len, "%s=", ferry_dict_key_at(v, i));
            describe_into(ferry_dict_value_at(v, i), buf, cap);
        }
    } else {
        snprintf(buf + len, cap - len, "-");
    }
}

/* placement(...): where each tensor of the arguments landed, as "cuda:1 cpu ...". */
static ferry_status placement(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    char buf[256] = "";
    describe_into(args, buf, sizeof buf);
    *result = ferry_string(buf);
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

/* fetch_placement(rref): fetches the RRef's value here and says where it landed. */
static ferry_status fetch_placement(const ferry_value *args, const ferry_value *kwargs,
                                    ferry_value **result, void *user)
{
    ferry_value *v = ferry_rref_to_here(ferry_value_as_rref(ferry_list_get(args, 0)), 20);
    if (!v)
        return ferry_last_status();
    ferry_status rc = placement(v, NULL, result, user);
    ferry_value_release(v);
    return rc;
}

static int rank0(void)
{
    ferry_device cuda0 = FERRY_DEVICE_CUDA(0), cuda1 = FERRY_DEVICE_CUDA(1);
    /* An argument lands on the mapped device; the echo comes back through the inverse. */
    ferry_tensor *t = device_test_counting(1000, cuda0); /* above the inline threshold: a bulk part */
    ferry_tensor *s = device_test_counting(6, cuda0);
    RANK_CHECK(t && s);
    ferry_value *v = device_test_call("placement", ferry_list_of(1, ferry_tensor_value(t)));
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1 "));
    ferry_value_release(v);
    v = device_test_call("echo", ferry_list_of(1, ferry_tensor_value(t)));
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);

    /* Nested in lists and dicts, with a CPU tensor (stays on the CPU) and a transposed view. */
    int64_t shape[2] = {2, 3};
    ferry_tensor *m = ferry_tensor_view(s, 2, shape);
    ferry_tensor *mt = m ? ferry_tensor_transpose(m, 0, 1) : NULL;
    ferry_tensor *c = device_test_counting(4, FERRY_DEVICE_CPU);
    ferry_value *d = ferry_dict_new();
    RANK_CHECK(mt && c && d);
    ferry_value *tv = ferry_tensor_value(mt);
    RANK_CHECK(ferry_dict_set(d, "view", tv) == FERRY_OK);
    ferry_value_release(tv);
    ferry_value *nested = ferry_list_of(3, ferry_tensor_value(s),
                                        ferry_list_of(2, ferry_tensor_value(c), d),
                                        ferry_tensor_value(t));
    RANK_CHECK(nested);
    v = ferry_rpc_sync("worker1", "placement", nested, NULL, 20);
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1 cpu view=cuda:1  cuda:1 "));
    ferry_value_release(v);
    v = ferry_rpc_sync("worker1", "echo", nested, NULL, 20);
    RANK_CHECK(v && ferry_list_len(v) == 3);
    RANK_CHECK(device_test_counts_on(ferry_value_as_tensor(ferry_list_get(v, 0)), cuda0));
    ferry_value *inner = ferry_list_get(v, 1);
    RANK_CHECK(device_test_counts_on(ferry_value_as_tensor(ferry_list_get(inner, 0)), FERRY_DEVICE_CPU));
    ferry_tensor *back = ferry_value_as_tensor(ferry_dict_get(ferry_list_get(inner, 1), "view"));
    ferry_tensor *want = ferry_tensor_to(mt, FERRY_DEVICE_CPU);
    ferry_tensor *got = ferry_tensor_to(back, FERRY_DEVICE_CPU);
    RANK_CHECK(ferry_tensor_device(back).index == 0 && ferry_tensor_equal(got, want));
    RANK_CHECK(ferry_tensor_strides(back)[0] == 1); /* still a transposed view */
    ferry_tensor_release(got);
    ferry_tensor_release(want);
    ferry_value_release(v);
    ferry_value_release(nested);
    ferry_tensor_release(c);
    ferry_tensor_release(mt);
    ferry_tensor_release(m);

    /* No map entry for cuda:1: fails at once, every time, and the agent keeps serving. */
    ferry_tensor *u = device_test_counting(4, cuda1);
    for (int i = 0; i < 3; i++) {
        double t0 = rpc_test_now_s();
        v = device_test_call("echo", ferry_list_of(1, ferry_tensor_value(u)));
        RANK_CHECK(!v && ferry_last_status() == FERRY_EINVAL && rpc_test_now_s() - t0 < 5);
        RANK_CHECK(device_test_says("message to worker 'worker1': TensorPipe RPC backend only supports CPU "
                        "tensors by default, please move your tensors to CPU before sending "
                        "them over RPC, or call `ferry_rpc_options_set_device_map` on "
                        "`ferry_rpc_options` to explicitly configure device mapping. Request "
                        "device mapping is not available for destination worker1 for device "
                        "cuda:1 but received a tensor on that device."));
    }
    ferry_tensor_release(u);
    v = device_test_call("placement", ferry_list_of(1, ferry_tensor_value(s)));
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1 "));
    ferry_value_release(v);

    /* Results: worker1's cuda:1 comes back on cuda:0; its cuda:0 has no inverse entry. */
    v = device_test_call("make_on", ferry_list_of(2, ferry_int(1), ferry_int(5000)));
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);
    v = device_test_call("make_on", ferry_list_of(2, ferry_int(0), ferry_int(5)));
    RANK_CHECK(!v && ferry_last_status() == FERRY_EINVAL);
    RANK_CHECK(device_test_says("worker 'worker1' could not send the result: message to worker 'worker0': "
                    "Response device mapping is not available for worker0 for device cuda:0"));
    v = device_test_call("async_make_on", ferry_list_of(2, ferry_int(1), ferry_int(300)));
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);

    /* remote() keeps the result on worker1's cuda:1; to_here brings it to cuda:0. */
    ferry_value *args = ferry_list_of(1, ferry_tensor_value(t));
    ferry_rref *r = ferry_remote("worker1", "echo", args, NULL, 20);
    ferry_value_release(args);
    RANK_CHECK(r);
    v = ferry_rref_to_here(r, 20);
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);
    ferry_rref_release(r);
    args = ferry_list_of(2, ferry_int(0), ferry_int(5));
    r = ferry_remote("worker1", "make_on", args, NULL, 20);
    ferry_value_release(args);
    RANK_CHECK(r);
    v = ferry_rref_to_here(r, 20);
    RANK_CHECK(!v && strstr(ferry_last_error(), "Response device mapping is not available for "
                            "worker0 for device cuda:0"));
    ferry_rref_release(r);

    /* An RRef argument: worker1 fetches this worker's cuda:0 value through its own map. */
    ferry_value *tvv = ferry_tensor_value(t);
    ferry_rref *mine = ferry_rref_new(tvv);
    ferry_value_release(tvv);
    RANK_CHECK(mine);
    v = device_test_call("fetch_placement", ferry_list_of(1, ferry_rref_value(mine)));
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1"));
    ferry_value_release(v);
    ferry_rref_release(mine);

    /* Out of device memory here (3 MiB devices) for a result: that call fails, naming both. */
    ferry_tensor *hog = device_test_counting(512 << 10, cuda0);  /* 2 MiB */
    ferry_tensor *hog2 = device_test_counting(128 << 10, cuda0); /* 512 KiB: under 800000 bytes left */
    RANK_CHECK(hog && hog2);
    v = device_test_call("make_on", ferry_list_of(2, ferry_int(1), ferry_int(200000)));
    RANK_CHECK(!v && ferry_last_status() == FERRY_ENOMEM);
    RANK_CHECK(strstr(ferry_last_error(), "worker 'worker0' could not place the tensors of a "
                      "response from worker 'worker1': CUDA out of memory on cuda:0"));
    ferry_tensor_release(hog);
    ferry_tensor_release(hog2);
    /* worker1 lets go of the failed result's 800000 bytes once its send completed, which may
       come just after this side had them all: the next call of that size works by then. */
    double until = rpc_test_now_s() + 5;
    do {
        v = device_test_call("make_on", ferry_list_of(2, ferry_int(1), ferry_int(200000)));
        if (!v)
            usleep(10000);
    } while (!v && rpc_test_now_s() < until);
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);

    /* Out of device memory on worker1 (1 MiB devices): the call fails naming the device. */
    ferry_tensor *big = device_test_counting(1 << 19, cuda0); /* 2 MiB */
    RANK_CHECK(big);
    v = device_test_call("placement", ferry_list_of(1, ferry_tensor_value(big)));
    RANK_CHECK(!v && ferry_last_status() == FERRY_ENOMEM);
    RANK_CHECK(device_test_says("worker 'worker1' could not place the tensors of a call from worker "
                    "'worker0': CUDA out of memory on cuda:1: tried to allocate 2097152 bytes "
                    "with 0 of 1048576 in use"));
    ferry_tensor_release(big);
    v = device_test_call("placement", ferry_list_of(1, ferry_tensor_value(s)));
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1 "));
    ferry_value_release(v);

    ferry_tensor_release(s);
    ferry_tensor_release(t);
    return 0;
}

/* worker1 answers through worker0's map, and its own map sends cuda:1 to worker0's cuda:0. */
static int rank1(void)
{
    ferry_tensor *t = device_test_counting(3000, FERRY_DEVICE_CUDA(1));
    RANK_CHECK(t);
    ferry_value *args = ferry_list_of(1, ferry_tensor_value(t));
    ferry_value *v = ferry_rpc_sync("worker0", "echo", args, NULL, 20);
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), FERRY_DEVICE_CUDA(1)));
    ferry_value_release(v);
    ferry_value_release(args);
    ferry_tensor_release(t);
    return 0;
}

static int dev_rank(int rank, int world, void *arg)
{
    dev_case *dc = arg;
    char buf[32], name[32];
    setenv("FERRY_EMULATE_DEVICES", "2", 1);
    setenv("FERRY_EMULATE_DEVICE_MEMORY", rank == 1 ? "1048576" : "3145728", 1);
    setenv("FERRY_DEVICE_PATH", dc->path, 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", dc->port);
    setenv("MASTER_PORT", buf, 1);
    setenv("FERRY_TRANSPORT", "tcp", 1);
    ferry_register_function("echo", rpc_test_echo, NULL);
    ferry_register_function("placement", placement, NULL);
    ferry_register_function("make_on", device_test_make_on, NULL);
    ferry_register_function("fetch_placement", fetch_placement, NULL);
    ferry_register_async_function("async_make_on", device_test_async_make_on, NULL);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.rpc_timeout = 20;
    snprintf(name, sizeof name, "worker%d", rank);
    if (rank == 0)
        ferry_rpc_options_set_device_map(&o, "worker1", FERRY_DEVICE_CUDA(0),
                                         FERRY_DEVICE_CUDA(1));
    else
        ferry_rpc_options_set_device_map(&o, "worker0", FERRY_DEVICE_CUDA(1),
                                         FERRY_DEVICE_CUDA(0));
    if (ferry_init_rpc(name, rank, world, &o) != FERRY_OK) {
        fprintf(stderr, "rank %d: init failed: %s\n", rank, ferry_last_error());
        return 1;
    }
    int rc = rank == 0 ? rank0() : rank1();
    if (ferry_shutdown(true, 30) != FERRY_OK) {
        fprintf(stderr, "rank %d: shutdown: %s\n", rank, ferry_last_error());
        return rc ? rc : 1;
    }
    return rc;
}

static void run(const char *path)
{
    rpc_test_set_token();
    dev_case dc = {path, ferry_test_free_port()};
    ferry_test_run_ranks(2, dev_rank, &dc, 90);
}

Test(device_tensors, staged, .timeout = 90)
{
    run("staged");
}

Test(device_tensors, direct, .timeout = 90)
{
    run("direct");
}
