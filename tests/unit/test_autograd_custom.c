/* The engine's hooks for distributed autograd: nodes with a callback backward attached to
   tensors, and runs started from (node, grad) pairs with a sink for leaf gradients. */
#include "autograd/engine.h"
#include "test_ops_util.h"

#define F64 FERRY_FLOAT64

typedef struct {
    int calls;
    double factor;
} scale_ctx;

/* Passes every incoming gradient on multiplied by ctx->factor (a stand-in for send/recv). */
static ferry_status scale_backward(void *ctx, size_t n_out, ferry_tensor *const *grad_outputs,
                                   size_t n_in, ferry_tensor **grad_inputs)
{
    scale_ctx *c = ctx;
    c->calls++;
    for (size_t i = 0; i < n_in && i < n_out; i++)
        if (grad_outputs[i] != NULL)
            grad_inputs[i] = ferry_mul_scalar(grad_outputs[i], c->factor);
    return FERRY_OK;
}

Test(autograd_custom, runs_callback_when_backward_reaches_attached_output, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F64, S(2), 1, 2));
    ferry_tensor *sq = ferry_mul(x, x);
    scale_ctx ctx = {0, 10.0};
    ferry__node *node = ferry_assert_ptr(
        ferry__node_new_custom("RecvRpcBackward", 1, 1, &sq, scale_backward, &ctx, NULL));
    /* "received" tensor: same values, its grad_fn the custom node */
    ferry_tensor *recv = ferry_detach(sq);
    ferry_assert_ok(ferry__node_attach_output(node, 0, recv));
    cr_assert_str_eq(ferry_tensor_grad_fn_name(recv), "RecvRpcBackward");
    ferry_tensor *loss = ferry_sum(recv);
    ferry_assert_ok(ferry_backward(loss, NULL, false));
    cr_assert_eq(ctx.calls, 1);
    ferry_tensor *g = ferry_tensor_grad(x);
    EXPECT(g, F64, S(2), 0, 20, 40);
    ferry_assert_status(ferry__node_attach_output(node, 1, recv), FERRY_EINVAL);
    ferry__node_release(node);
    ferry_tensor *r[] = {x, sq, recv, loss, g};
    for (size_t k = 0; k < 5; k++)
        ferry_tensor_release(r[k]);
}

typedef struct {
    ferry_tensor *leaf;
    ferry_tensor *grad;
} sink_ctx;

static ferry_status keep_grad(void *user, ferry_tensor *leaf_t, ferry_tensor *grad)
{
    sink_ctx *s = user;
    s->leaf = leaf_t;
    s->grad = ferry_tensor_retain(grad);
    return FERRY_OK;
}

Test(autograd_custom, engine_runs_from_node_grad_pairs_when_given_a_sink, .timeout = 10)
{
    ferry_tensor *x = leaf(MK(F64, S(2), 3, -1));
    ferry_tensor *y = ferry_mul_scalar(x, 2.0);
    scale_ctx ctx = {0, 1.0};
    /* a send node: two gradients come in from "the network" for its one input */
    ferry__node *send = ferry_assert_ptr(
        ferry__node_new_custom("SendRpcBackward", 1, 1, &y, scale_backward, &ctx, NULL));
    ferry_tensor *g = MK(F64, S(2), 1, 0.5);
    ferry__engine_root roots[2] = {{send, 0, g}, {send, 0, g}};
    sink_ctx sink = {0};
    ferry_assert_ok(ferry__engine_run(2, roots, true, keep_grad, &sink));
    cr_assert_eq(sink.leaf, x);
    EXPECT(sink.grad, F64, S(2), 0, 4, 2); /* (g + g) * 2 */
    cr_assert_null(ferry_tensor_grad(x), "the sink took the gradient, not .grad");
    size_t nr = 9;
    ferry__node *fn = ferry__tensor_grad_fn(y, &nr);
    cr_assert_str_eq(ferry__node_name(fn), "MulBackward0");
    cr_assert_eq(nr, 0);
    ferry__node_release(fn);
    ferry__node_release(send);
    ferry_tensor *r[] = {x, y, g, sink.grad};
    for (size_t k = 0; k < 4; k++)
        ferry_tensor_release(r[k]);
}
