/* Distributed autograd on (emulated) device tensors: the gradients of a forward send travel
   back so that they land on the device the forward tensors came from. Maps are one-sided on
   purpose: worker0 -> worker1 {cuda:0: cuda:1} and nothing back, so worker1's result reaches
   worker0 through the inverse of worker0's map, and the gradient of that result goes to worker1
   through worker0's own map (torch's reverse of the map the forward message used). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rpc_harness.h"

#include "ferry/device.h"
#include "ferry/dist_autograd.h"
#include "ferry/ops.h"

static bool on(const ferry_tensor *t, int index)
{
    ferry_device d = ferry_tensor_device(t);
    return t && d.type == FERRY_CUDA && d.index == index;
}

/* square(x): x * x where x lives; says where that was in its second result. */
static ferry_status square(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_tensor *x = ferry_value_as_tensor(ferry_list_get(args, 0));
    ferry_tensor *y = ferry_mul(x, x);
    if (!y)
        return ferry_last_status();
    char where[32];
    ferry_device_format(ferry_tensor_device(x), where, sizeof where);
    *result = ferry_list_of(2, ferry_tensor_value(y), ferry_string(where));
    ferry_tensor_release(y);
    return *result ? FERRY_OK : ferry_last_status();
}

static int rank0(void)
{
    ferry_tensor *c = ferry_arange(0, 1000, 1, FERRY_FLOAT32);
    ferry_tensor *x = c ? ferry_tensor_to(c, FERRY_DEVICE_CUDA(0)) : NULL;
    RANK_CHECK(x && ferry_tensor_set_requires_grad(x, true) == FERRY_OK);
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0);
    ferry_value *args = ferry_list_of(1, ferry_tensor_value(x));
    ferry_value *v = ferry_rpc_sync("worker1", "square", args, NULL, 20);
    ferry_value_release(args);
    RANK_CHECK(v && !strcmp(ferry_value_as_string(ferry_list_get(v, 1)), "cuda:1"));
    ferry_tensor *y = ferry_value_as_tensor(ferry_list_get(v, 0));
    RANK_CHECK(on(y, 0));
    ferry_tensor *loss = ferry_sum(y);
    RANK_CHECK(on(loss, 0));
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    ferry_tensor *g = ferry_dist_autograd_get_gradient(ctx, x);
    RANK_CHECK(on(g, 0)); /* back on the source device */
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
    ferry_tensor_release(c);
    return 0;
}

typedef struct {
    int port;
} ag_case;

static int ag_rank(int rank, int world, void *arg)
{
    ag_case *ac = arg;
    char buf[32], name[32];
    setenv("FERRY_EMULATE_DEVICES", "2", 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", ac->port);
    setenv("MASTER_PORT", buf, 1);
    setenv("FERRY_TRANSPORT", "tcp", 1);
    ferry_register_function("square", square, NULL);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.rpc_timeout = 20;
    if (rank == 0)
        ferry_rpc_options_set_device_map(&o, "worker1", FERRY_DEVICE_CUDA(0),
                                         FERRY_DEVICE_CUDA(1));
    snprintf(name, sizeof name, "worker%d", rank);
    if (ferry_init_rpc(name, rank, world, &o) != FERRY_OK) {
        fprintf(stderr, "rank %d: init failed: %s\n", rank, ferry_last_error());
        return 1;
    }
    int rc = rank == 0 ? rank0() : 0;
    if (ferry_shutdown(true, 30) != FERRY_OK) {
        fprintf(stderr, "rank %d: shutdown: %s\n", rank, ferry_last_error());
        return rc ? rc : 1;
    }
    return rc;
}

Test(device_autograd, gradients_land_on_the_source_device, .timeout = 60)
{
    rpc_test_set_token();
    ag_case ac = {ferry_test_free_port()};
    ferry_test_run_ranks(2, ag_rank, &ac, 60);
}
