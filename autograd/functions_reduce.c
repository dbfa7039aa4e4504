/* Backward formulas of the reductions, the softmax family and the losses. Gradients of a
   reduction are the output gradient put back on the reduced dims (kept as size 1) and broadcast
   over them; max sends it to the winning positions (split evenly among ties for the full max,
   as torch 1.13). */
#include "autograd/engine.h"

#include <string.h>

#include "core/error.h"

/* g reshaped to the input's rank with reduced dims of size 1, then broadcast to the input. */
static ferry_tensor *unreduce(ferry__node *node, ferry_tensor *g)
{
    const ferry__input_meta *im = &node->meta[0];
    int64_t kept[FERRY_MAX_DIMS];
    memcpy(kept, im->sizes, sizeof kept);
    for (int i = 0; i < node->n_ints - 1; i++)
        kept[node->ints[i]] = 1;
    ferry_tensor *r = ferry_tensor_reshape(g, im->ndim, kept);
    ferry_tensor *e = r ? ferry__expand(r, im->ndim, im->sizes) : NULL;
    ferry_tensor *out = e ? ferry_tensor_contiguous(e) : NULL;
    ferry_tensor_release(r);
    ferry_tensor_release(e);
    return out;
}

static ferry_status sum_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = unreduce(node, grads[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status mean_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    int64_t count = 1;
    for (int i = 0; i < node->n_ints - 1; i++)
        count *= node->meta[0].sizes[node->ints[i]];
    ferry_tensor *u = unreduce(node, grads[0]);
    out[0] = u ? ferry_div_scalar(u, (double)count) : NULL;
    ferry_tensor_release(u);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status max_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    /* Computed on a host copy (a device's gradient goes back there at the end). */
    ferry_tensor *hx = ferry_tensor_to(node->saved[0], FERRY_DEVICE_CPU);
    ferry_tensor *x = hx ? ferry_tensor_to_dtype(hx, FERRY_FLOAT64) : NULL;
    ferry_tensor_release(hx);
    double best = ferry_tensor_item(node->saved[1]), g = ferry_tensor_item(grads[0]);
    if (x == NULL)
        return ferry_last_status();
    double *p = ferry_tensor_data(x);
    int64_t n = ferry_tensor_numel(x), ties = 0;
    for (int64_t i = 0; i < n; i++)
        ties += p[i] == best || (p[i] != p[i] && best != best);
    for (int64_t i = 0; i < n; i++)
        p[i] = p[i] == best || (p[i] != p[i] && best != best) ? g / (double)ties : 0.0;
    out[0] = ferry__stage_out(ferry__to_dtype_ref(x, node->meta[0].dtype), node->meta[0].device);
    ferry_tensor_release(x);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status max_dim_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    const ferry__input_meta *im = &node->meta[0];
    int d = (int)node->ints[0];
    int64_t outer = 1, n = im->ndim > 0 ? im->sizes[d] : 1, inner = 1;
    for (int i = 0; i < im->ndim; i++) {
        if (i < d)
            outer *= im->sizes[i];
        else if (i > d)
            inner *= im->sizes[i];
    }
    /* Scattered on the host; the result goes to the input's device. */
    ferry_tensor *gi = ferry_zeros(im->ndim, im->sizes, FERRY_FLOAT64);
    ferry_tensor *hg = gi ? ferry_tensor_to(grads[0], FERRY_DEVICE_CPU) : NULL;
    ferry_tensor *g = hg ? ferry__contig_dtype(hg, FERRY_FLOAT64) : NULL;
    ferry_tensor *hidx = g ? ferry_tensor_to(node->saved[0], FERRY_DEVICE_CPU) : NULL;
    ferry_tensor *idx = hidx ? ferry_tensor_contiguous(hidx) : NULL;
    ferry_tensor_release(hg);
    ferry_tensor_release(hidx);
    if (idx != NULL) {
        double *gp = ferry_tensor_data(gi);
        const double *src = ferry_tensor_data(g);
        const int64_t *ip = ferry_tensor_data(idx);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < inner; j++)
                gp[(o * n + ip[o * inner + j]) * inner + j] = src[o * inner + j];
        out[0] = ferry__stage_out(ferry__to_dtype_ref(gi, im->dtype), im->device);
    }
    ferry_tensor_release(gi);
    ferry_tensor_release(g);
    ferry_tensor_release(idx);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status softmax_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry__softmax_backward(grads[0], node->saved[0], (int)node->ints[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status log_softmax_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry__log_softmax_backward(grads[0], node->saved[0], (int)node->ints[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status mse_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    ferry_tensor *d = ferry_sub(node->saved[0], node->saved[1]);
    double scale = 2.0;
    if (d != NULL && node->ints[0] == FERRY_REDUCTION_MEAN)
        scale /= (double)ferry_tensor_numel(d);
    ferry_tensor *sd = d ? ferry_mul_scalar(d, scale) : NULL;
    ferry_tensor *gi = sd ? ferry_mul(sd, grads[0]) : NULL;
    ferry_tensor_release(d);
    ferry_tensor_release(sd);
    if (gi == NULL)
        return ferry_last_status();
    if (ferry__needs_grad(node, 1) && (out[1] = ferry_neg(gi)) == NULL) {
        ferry_tensor_release(gi);
        return ferry_last_status();
    }
    out[0] = gi;
    return FERRY_OK;
}

static ferry_status nll_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    const ferry__input_meta *im = &node->meta[0];
    out[0] = ferry__nll_loss_backward(grads[0], node->saved[0], im->ndim, im->sizes, im->dtype,
                                      (ferry_reduction)node->ints[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static const ferry__formula formulas[FERRY__OP_COUNT] = {
    [FERRY__OP_SUM] = {"SumBackward1", false, sum_backward},
    [FERRY__OP_MEAN] = {"MeanBackward1", false, mean_backward},
    [FERRY__OP_MAX] = {"MaxBackward1", true, max_backward},
    [FERRY__OP_MAX_DIM] = {"MaxBackward0", true, max_dim_backward},
    [FERRY__OP_SOFTMAX] = {"SoftmaxBackward0", true, softmax_backward},
    [FERRY__OP_LOG_SOFTMAX] = {"LogSoftmaxBackward0", true, log_softmax_backward},
    [FERRY__OP_MSE_LOSS] = {"MseLossBackward0", true, mse_backward},
    [FERRY__OP_NLL_LOSS] = {"NllLossBackward0", true, nll_backward},
};

const ferry__formula *ferry__formulas_reduce(int op)
{
    if (op < 0 || op >= FERRY__OP_COUNT || formulas[op].name == NULL)
        return NULL;
    return &formulas[op];
}
