/* Two-host check of a distributed backward pass whose peer dies: rank 1 (on the other "host")
   ends its process while it runs its part of the pass; rank 0's backward must fail within a few
   seconds (the heartbeat finds it: pids cannot be checked across hosts), naming the worker, and
   its graceful shutdown must end instead of hanging. Exit status 0 on success. Run by
   tests/netns/run.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "autograd/engine.h"
#include "ferry/ferry.h"

#define NETNS_PROG "dist_peer_death"
#include "tests/netns/netns_util.h"

/* A backward that ends the process: the worker dies in the middle of its part of the pass. */
static ferry_status die_backward(void *ctx, size_t n_out, ferry_tensor *const *grads, size_t n_in,
                                 ferry_tensor **grad_inputs)
{
    _exit(0);
}

/* doomed(x): x * 2, whose gradient on the way back kills this worker. */
static ferry_status doomed(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_tensor *x = ferry_value_as_tensor(ferry_list_get(args, 0));
    ferry_tensor *y = x ? ferry_mul_scalar(x, 2) : NULL;
    ferry__node *node = y ? ferry__node_new_custom("DieBackward", 1, 1, &x, die_backward, NULL,
                                                   NULL)
                          : NULL;
    ferry_tensor *out = node ? ferry_tensor_clone_data(y) : NULL;
    ferry_status rc = out ? ferry__node_attach_output(node, 0, out) : ferry_last_status();
    ferry__node_release(node);
    ferry_tensor_release(y);
    if (rc == FERRY_OK)
        *result = ferry_tensor_value(out);
    ferry_tensor_release(out);
    return rc;
}

int main(void)
{
    int rank = atoi(getenv("RANK") ? getenv("RANK") : "0");
    CHECK(ferry_register_function("doomed", doomed, NULL) == FERRY_OK);
    CHECK(ferry_init_rpc(rank ? "doomed_worker" : "master", -1, 0, NULL) == FERRY_OK);
    if (rank == 1) {
        pause(); /* serves until the backward pass ends the process */
        return 1;
    }
    int64_t sizes[1] = {4};
    ferry_tensor *x = ferry_ones(1, sizes, FERRY_FLOAT64);
    CHECK(x && ferry_tensor_set_requires_grad(x, true) == FERRY_OK);
    int64_t ctx = ferry_dist_autograd_context_begin();
    CHECK(ctx >= 0);
    ferry_value *args = ferry_args(1, ferry_tensor_value(x));
    ferry_value *y = args ? ferry_rpc_sync("doomed_worker", "doomed", args, NULL, 60) : NULL;
    ferry_value_release(args);
    CHECK(y != NULL);
    ferry_tensor *loss = ferry_sum(ferry_value_as_tensor(y));
    CHECK(loss != NULL);
    double t0 = now_s();
    CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) != FERRY_OK);
    double took = now_s() - t0;
    CHECK(strstr(ferry_last_error(), "Error on Node 0") != NULL);
    CHECK(strstr(ferry_last_error(), "doomed_worker") != NULL);
    CHECK(took < 10);
    ferry_dist_autograd_counts k = ferry_dist_autograd_debug_counts();
    CHECK(k.backward_passes == 0);
    CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor_release(loss);
    ferry_value_release(y);
    ferry_tensor_release(x);
    ferry_shutdown(true, 10);
    printf("dist_peer_death: backward failed after %.1f s naming the dead worker; shutdown "
           "ended\n", took);
    return 0;
}
