/* Device tensors on a side channel through the codec: between workers that all emulate devices
   the emulated peer-to-peer channel carries them, forced (FERRY_DEVICE_PATH=p2p, where a tensor
   it could not carry would fail instead of taking another path) and by default (auto, where the
   out-of-memory text below, the channel's own, shows the channel was taken). Arguments and
   results both ways through the maps, nested in lists and dicts and as views; remote() and
   to_here, RRef arguments, async functions; distributed autograd's gradients back to the source
   device; every queued device operation held back (FERRY_EMULATE_DEVICE_DELAY_US) so what the
   sender wrote before the send is what arrives; out of device memory on the receiver of a call
   and of a response fails that call, and the next call works; a third worker's tensors to the
   same callee at the same time. In one process: a side-channel descriptor naming an unknown
   channel, or a byte count its geometry does not give, is FERRY_EPROTO.

   Maps: worker0 -> worker1 {cuda:0: cuda:1}, worker1 -> worker0 {cuda:1: cuda:0}, worker2 ->
   worker1 {cuda:0: cuda:0}. Every worker has two emulated devices (worker0's hold 3 MiB each,
   worker1's 1 MiB, worker2's 3 MiB). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc/device_channel.h"
#include "rpc/wire_internal.h"
#include "device_util.h"
#include "rpc_harness.h"

#include "ferry/device.h"
#include "ferry/dist_autograd.h"
#include "ferry/ops.h"
#include "ferry/rref.h"

typedef struct {
    const char *path;  /* FERRY_DEVICE_PATH */
    const char *delay; /* FERRY_EMULATE_DEVICE_DELAY_US, NULL: none */
    int port;
} p2p_case;

/* where(x): x's device, as "cuda:1", after checking it counts (else "wrong"). */
static ferry_status where(const ferry_value *args, const ferry_value *kwargs,
                          ferry_value **result, void *user)
{
    ferry_tensor *t = ferry_value_as_tensor(ferry_list_get(args, 0));
    char buf[32] = "wrong";
    if (device_test_counts_on(t, ferry_tensor_device(t)))
        ferry_device_format(ferry_tensor_device(t), buf, sizeof buf);
    *result = ferry_string(buf);
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

/* fetch_where(rref): fetches the RRef's value here and says where it landed. */
static ferry_status fetch_where(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    ferry_value *v = ferry_rref_to_here(ferry_value_as_rref(ferry_list_get(args, 0)), 20);
    if (!v)
        return ferry_last_status();
    ferry_value *wrapped = ferry_list_of(1, v);
    ferry_status rc = wrapped ? where(wrapped, NULL, result, user) : ferry_last_status();
    ferry_value_release(wrapped);
    return rc;
}

/* square(x): x * x where x lives. */
static ferry_status square(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_tensor *x = ferry_value_as_tensor(ferry_list_get(args, 0));
    ferry_tensor *y = ferry_mul(x, x);
    if (!y)
        return ferry_last_status();
    *result = ferry_tensor_value(y);
    ferry_tensor_release(y);
    return FERRY_OK;
}

static int round_trips(void)
{
    ferry_device cuda0 = FERRY_DEVICE_CUDA(0);
    ferry_tensor *t = device_test_counting(100000, cuda0); /* written by a queued copy just before */
    ferry_tensor *s = device_test_counting(6, cuda0);
    RANK_CHECK(t && s);
    ferry_value *v = device_test_call("where", ferry_list_of(1, ferry_tensor_value(t)));
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1"));
    ferry_value_release(v);
    v = device_test_call("echo", ferry_list_of(1, ferry_tensor_value(t)));
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);

    /* Nested, with a CPU tensor and a transposed view (which stays one). */
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
    v = ferry_rpc_sync("worker1", "echo", nested, NULL, 20);
    RANK_CHECK(v && ferry_list_len(v) == 3);
    RANK_CHECK(device_test_counts_on(ferry_value_as_tensor(ferry_list_get(v, 0)), cuda0));
    RANK_CHECK(device_test_counts_on(ferry_value_as_tensor(ferry_list_get(v, 2)), cuda0));
    ferry_value *inner = ferry_list_get(v, 1);
    RANK_CHECK(device_test_counts_on(ferry_value_as_tensor(ferry_list_get(inner, 0)), FERRY_DEVICE_CPU));
    ferry_tensor *back = ferry_value_as_tensor(ferry_dict_get(ferry_list_get(inner, 1), "view"));
    ferry_tensor *want = ferry_tensor_to(mt, FERRY_DEVICE_CPU);
    ferry_tensor *got = ferry_tensor_to(back, FERRY_DEVICE_CPU);
    RANK_CHECK(ferry_tensor_device(back).index == 0 && ferry_tensor_equal(got, want));
    RANK_CHECK(ferry_tensor_strides(back)[0] == 1);
    ferry_tensor_release(got);
    ferry_tensor_release(want);
    ferry_value_release(v);
    ferry_value_release(nested);
    ferry_tensor_release(c);
    ferry_tensor_release(mt);
    ferry_tensor_release(m);

    /* Results from worker1's cuda:1, plain and async. */
    v = device_test_call("make_on", ferry_list_of(2, ferry_int(1), ferry_int(50000)));
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);
    v = device_test_call("async_make_on", ferry_list_of(2, ferry_int(1), ferry_int(300)));
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);

    /* remote() keeps it on worker1's cuda:1; to_here brings it to cuda:0. */
    ferry_value *args = ferry_list_of(1, ferry_tensor_value(t));
    ferry_rref *r = ferry_remote("worker1", "echo", args, NULL, 20);
    ferry_value_release(args);
    RANK_CHECK(r);
    v = ferry_rref_to_here(r, 20);
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);
    ferry_rref_release(r);

    /* An RRef argument: worker1 fetches this worker's cuda:0 value through its own map. */
    ferry_value *tvv = ferry_tensor_value(t);
    ferry_rref *mine = ferry_rref_new(tvv);
    ferry_value_release(tvv);
    RANK_CHECK(mine);
    v = device_test_call("fetch_where", ferry_list_of(1, ferry_rref_value(mine)));
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1"));
    ferry_value_release(v);
    ferry_rref_release(mine);
    ferry_tensor_release(s);
    ferry_tensor_release(t);
    return 0;
}

static int gradients(void)
{
    ferry_tensor *x = device_test_counting(1000, FERRY_DEVICE_CUDA(0));
    RANK_CHECK(x);
    ferry_tensor *probe = ferry_mul(x, x);
    ferry_tensor_release(probe);
    if (!probe) { /* as test_device_autograd.c: no ops on device tensors in this build yet */
        fprintf(stderr, "device_p2p: gradients skipped: %s\n", ferry_last_error());
        ferry_tensor_release(x);
        return 0;
    }
    RANK_CHECK(ferry_tensor_set_requires_grad(x, true) == FERRY_OK);
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0);
    ferry_value *v = device_test_call("square", ferry_list_of(1, ferry_tensor_value(x)));
    RANK_CHECK(v);
    ferry_tensor *loss = ferry_sum(ferry_value_as_tensor(v));
    RANK_CHECK(loss && ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    ferry_tensor *g = ferry_dist_autograd_get_gradient(ctx, x);
    RANK_CHECK(g && ferry_tensor_device(g).type == FERRY_CUDA && ferry_tensor_device(g).index == 0);
    ferry_tensor *gc = ferry_tensor_to(g, FERRY_DEVICE_CPU);
    RANK_CHECK(gc);
    for (int64_t i = 0; i < 1000; i++)
        RANK_CHECK(ferry_tensor_item_at(gc, i) == 2.0 * (double)i);
    ferry_tensor_release(gc);
    ferry_tensor_release(g);
    ferry_tensor_release(loss);
    ferry_value_release(v);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor_release(x);
    return 0;
}

static int out_of_memory(void)
{
    ferry_device cuda0 = FERRY_DEVICE_CUDA(0);
    /* worker1's devices hold 1 MiB: a 2 MiB argument fails that call, naming the device. */
    ferry_tensor *big = device_test_counting(1 << 19, cuda0);
    ferry_tensor *s = device_test_counting(6, cuda0);
    RANK_CHECK(big && s);
    ferry_value *v = device_test_call("where", ferry_list_of(1, ferry_tensor_value(big)));
    RANK_CHECK(!v && ferry_last_status() == FERRY_ENOMEM);
    RANK_CHECK(device_test_says("worker 'worker1' could not receive the tensors of call 'where' from "
                    "worker 'worker0': CUDA out of memory on cuda:1: tried to allocate 2097152 "
                    "bytes with 0 of 1048576 in use"));
    v = device_test_call("where", ferry_list_of(1, ferry_tensor_value(s)));
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1"));
    ferry_value_release(v);
    ferry_tensor_release(big);

    /* Out of device memory here (3 MiB) for a result: that call fails, the next one works. */
    ferry_tensor *hog = device_test_counting(512 << 10, cuda0);  /* 2 MiB */
    ferry_tensor *hog2 = device_test_counting(128 << 10, cuda0); /* 512 KiB: under 800000 bytes left */
    RANK_CHECK(hog && hog2);
    v = device_test_call("make_on", ferry_list_of(2, ferry_int(1), ferry_int(200000)));
    RANK_CHECK(!v && ferry_last_status() == FERRY_ENOMEM);
    RANK_CHECK(strstr(ferry_last_error(), "the response from worker 'worker1' could not be "
                      "received: CUDA out of memory on cuda:0"));
    ferry_tensor_release(hog);
    ferry_tensor_release(hog2);
    /* worker1 lets go of the failed result once its channel send is done, which may be just
       after this side failed the call: the next call of that size works by then. */
    double until = rpc_test_now_s() + 5;
    do {
        v = device_test_call("make_on", ferry_list_of(2, ferry_int(1), ferry_int(200000)));
        if (!v)
            usleep(10000);
    } while (!v && rpc_test_now_s() < until);
    RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), cuda0));
    ferry_value_release(v);
    v = device_test_call("where", ferry_list_of(1, ferry_tensor_value(s)));
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "cuda:1"));
    ferry_value_release(v);
    ferry_tensor_release(s);
    return 0;
}

/* worker2: its own tensors to worker1 while worker0's go there, each under its own numbers. */
static int rank2(void)
{
    for (int i = 0; i < 20; i++) {
        ferry_tensor *t = device_test_counting(5000 + i, FERRY_DEVICE_CUDA(0));
        RANK_CHECK(t);
        ferry_value *v = device_test_call("echo", ferry_list_of(1, ferry_tensor_value(t)));
        RANK_CHECK(v && device_test_counts_on(ferry_value_as_tensor(v), FERRY_DEVICE_CUDA(0)));
        RANK_CHECK(ferry_tensor_numel(ferry_value_as_tensor(v)) == 5000 + i);
        ferry_value_release(v);
        ferry_tensor_release(t);
    }
    return 0;
}

/* worker1 calls worker0 too: its cuda:1 goes to worker0's cuda:0 through its own map. */
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

static int p2p_rank(int rank, int world, void *arg)
{
    p2p_case *pc = arg;
    char buf[32], name[32];
    setenv("FERRY_EMULATE_DEVICES", "2", 1);
    setenv("FERRY_EMULATE_DEVICE_MEMORY", rank == 1 ? "1048576" : "3145728", 1);
    if (pc->delay)
        setenv("FERRY_EMULATE_DEVICE_DELAY_US", pc->delay, 1);
    setenv("FERRY_DEVICE_PATH", pc->path, 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", pc->port);
    setenv("MASTER_PORT", buf, 1);
    setenv("FERRY_TRANSPORT", "tcp", 1);
    ferry_register_function("echo", rpc_test_echo, NULL);
    ferry_register_function("where", where, NULL);
    ferry_register_function("make_on", device_test_make_on, NULL);
    ferry_register_function("fetch_where", fetch_where, NULL);
    ferry_register_function("square", square, NULL);
    ferry_register_async_function("async_make_on", device_test_async_make_on, NULL);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.rpc_timeout = 20;
    snprintf(name, sizeof name, "worker%d", rank);
    if (rank == 0)
        ferry_rpc_options_set_device_map(&o, "worker1", FERRY_DEVICE_CUDA(0),
                                         FERRY_DEVICE_CUDA(1));
    else if (rank == 1)
        ferry_rpc_options_set_device_map(&o, "worker0", FERRY_DEVICE_CUDA(1),
                                         FERRY_DEVICE_CUDA(0));
    else
        ferry_rpc_options_set_device_map(&o, "worker1", FERRY_DEVICE_CUDA(0),
                                         FERRY_DEVICE_CUDA(0));
    if (ferry_init_rpc(name, rank, world, &o) != FERRY_OK) {
        fprintf(stderr, "rank %d: init failed: %s\n", rank, ferry_last_error());
        return 1;
    }
    int rc = rank == 0 ? round_trips() || gradients() || out_of_memory()
             : rank == 1 ? rank1()
                         : rank2();
    if (ferry_shutdown(true, 30) != FERRY_OK) {
        fprintf(stderr, "rank %d: shutdown: %s\n", rank, ferry_last_error());
        return rc ? rc : 1;
    }
    return rc;
}

static void run(const char *path, const char *delay)
{
    rpc_test_set_token();
    p2p_case pc = {path, delay, ferry_test_free_port()};
    ferry_test_run_ranks(3, p2p_rank, &pc, 120);
}

Test(device_p2p, forced, .timeout = 120)
{
    run("p2p", NULL);
}

Test(device_p2p, by_default, .timeout = 120)
{
    run("auto", NULL);
}

Test(device_p2p, queued_writes_arrive, .timeout = 120)
{
    run("p2p", "200");
}

/* A call whose one argument is a float32 tensor of 6 elements on cuda:0, on channel `id` with
   `nbytes` (strided: a transposed 2 x 3 view), decoded here. */
static ferry_status decode_side(uint32_t id, uint64_t nbytes, bool strided, ferry__msg *m)
{
    int64_t flat[1] = {6}, sizes[2] = {2, 3}, strides[2] = {1, 2};
    Ferry__Wire__TensorDesc td = FERRY__WIRE__TENSOR_DESC__INIT;
    td.dtype = FERRY_FLOAT32;
    td.n_sizes = strided ? 2 : 1;
    td.sizes = strided ? sizes : flat;
    if (strided) {
        td.n_strides = 2;
        td.strides = strides;
    }
    td.device_type = FERRY_CUDA;
    td.channel = id;
    td.seq = 7;
    td.nbytes = nbytes;
    Ferry__Wire__Node list = FERRY__WIRE__NODE__INIT, tensor = FERRY__WIRE__NODE__INIT;
    list.kind = FERRY__WIRE__KIND__KIND_LIST;
    list.count = 1;
    tensor.kind = FERRY__WIRE__KIND__KIND_TENSOR;
    tensor.tensor = &td;
    Ferry__Wire__Node *nodes[2] = {&list, &tensor};
    Ferry__Wire__Call c = FERRY__WIRE__CALL__INIT;
    c.fn = "f";
    c.n_args = 2;
    c.args = nodes;
    Ferry__Wire__Envelope env = FERRY__WIRE__ENVELOPE__INIT;
    env.version = FERRY__WIRE_VERSION;
    env.id = 1;
    env.body_case = FERRY__WIRE__ENVELOPE__BODY_CALL;
    env.call = &c;
    uint8_t buf[256];
    size_t len = ferry__wire__envelope__pack(&env, buf);
    ferry__att *atts = NULL;
    size_t n_atts = 0;
    ferry_status rc = ferry__wire_decode(buf, len, NULL, m, &atts, &n_atts);
    ferry__wire_atts_free(atts, n_atts);
    return rc;
}

Test(device_p2p, malformed_descriptors)
{
    setenv("FERRY_EMULATE_DEVICES", "1", 1);
    ferry__msg m;
    /* Well formed: the tensor is on cuda:0 and its bytes are due on the emulated channel. */
    cr_assert_eq(decode_side(2, 24, false, &m), FERRY_OK, "%s", ferry_last_error());
    cr_assert_eq(m.n_sides, 1);
    cr_assert_eq(m.sides[0].seq, 7);
    cr_assert_eq(m.sides[0].nbytes, 24);
    ferry_tensor *t = ferry_value_as_tensor(ferry_list_get(m.args, 0));
    cr_assert(ferry_tensor_device(t).type == FERRY_CUDA);
    ferry__msg_clear(&m);
    cr_assert_eq(decode_side(2, 24, true, &m), FERRY_OK, "%s", ferry_last_error());
    ferry__msg_clear(&m);

    cr_assert_eq(decode_side(5, 24, false, &m), FERRY_EPROTO);
    cr_assert_str_eq(ferry_last_error(), "tensor 0: side channel 5 is not known "
                     "here");
    cr_assert_eq(decode_side(2, 28, false, &m), FERRY_EPROTO);
    cr_assert_str_eq(ferry_last_error(), "tensor 0: 28 bytes on the emulated-p2p "
                     "channel do not match its geometry (24 bytes)");
    cr_assert_eq(decode_side(2, 20, true, &m), FERRY_EPROTO);
    cr_assert_eq(decode_side(2, 0, false, &m), FERRY_EPROTO);
}
