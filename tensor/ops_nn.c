/* Neural-network functions: the losses (mse_loss, nll_loss, cross_entropy) and dropout. Their
   forwards are built from the elementwise and reduction kernels on detached aliases, so each
   records a single node with torch's formula instead of one node per step. */
#include "tensor/ops_internal.h"

#include <math.h>
#include <string.h>

#include "core/error.h"
#include "tensor/device.h"

static ferry_status check_reduction(ferry_reduction r)
{
    if (r != FERRY_REDUCTION_NONE && r != FERRY_REDUCTION_MEAN && r != FERRY_REDUCTION_SUM)
        return ferry__fail(FERRY_EINVAL, "%d is not a valid value for reduction", (int)r);
    return FERRY_OK;
}

static ferry_tensor *reduce_as(ferry_tensor *t, ferry_reduction r)
{
    if (r == FERRY_REDUCTION_NONE)
        return ferry_tensor_retain(t);
    return r == FERRY_REDUCTION_MEAN ? ferry_mean(t) : ferry_sum(t);
}

ferry_tensor *ferry_mse_loss(ferry_tensor *input, ferry_tensor *target, ferry_reduction reduction)
{
    if (ferry__check_dtype(input, "mse_loss") != FERRY_OK ||
        ferry__check_dtype(target, "mse_loss") != FERRY_OK ||
        check_reduction(reduction) != FERRY_OK)
        return NULL;
    if (!ferry__is_floating(input->dtype) && !ferry__is_floating(target->dtype))
        return ferry__fail_null(FERRY_EINVAL, "\"mse_cpu\" not implemented for 'Long'");
    ferry_tensor *a = ferry__alias(input), *b = ferry__alias(target);
    ferry_tensor *d = a && b ? ferry_sub(a, b) : NULL;
    ferry_tensor *sq = d ? ferry_mul(d, d) : NULL;
    ferry_tensor *out = sq ? reduce_as(sq, reduction) : NULL;
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    ferry_tensor_release(d);
    ferry_tensor_release(sq);
    ferry_tensor *inputs[2] = {input, target};
    ferry__op_record rec = {.op = FERRY__OP_MSE_LOSS, .n_inputs = 2, .inputs = inputs, .n_saved = 2,
                            .saved = {input, target}, .n_ints = 1, .ints = {reduction}};
    return ferry__ops_record(out, &rec);
}

/* Checks nll_loss's shapes; *n and *c receive the batch and class counts. */
static ferry_status nll_check(const ferry_tensor *input, const ferry_tensor *target, int64_t *n,
                              int64_t *c)
{
    if (input->ndim != 1 && input->ndim != 2)
        return ferry__fail(FERRY_EINVAL, "nll_loss: expected 1-D or 2-D input (got %dD)", input->ndim);
    if (!ferry__is_floating(input->dtype))
        return ferry__fail(FERRY_EINVAL, "\"nll_loss_forward_reduce_cuda_kernel_2d_index\" not "
                                         "implemented for 'Long'");
    if (target->dtype != FERRY_INT64)
        return ferry__fail(FERRY_EINVAL, "expected scalar type Long but found %s",
                           ferry_dtype_name(target->dtype));
    *n = input->ndim == 2 ? input->sizes[0] : 1;
    *c = input->sizes[input->ndim - 1];
    if (target->ndim != input->ndim - 1)
        return ferry__fail(FERRY_EINVAL, "0D or 1D target tensor expected, multi-target not supported");
    if (input->ndim == 2 && target->sizes[0] != *n)
        return ferry__fail(FERRY_EINVAL, "Expected input batch_size (%lld) to match target "
                                         "batch_size (%lld).",
                           (long long)*n, (long long)target->sizes[0]);
    return FERRY_OK;
}

#define NLL_IGNORE_INDEX (-100) /* torch's default ignore_index */

#ifdef FERRY_WITH_CUDA
/* nll_forward on a real GPU: the kernel's sequential pass, then its three statistics read
   back to pick the result (or the error) as the CPU does. */
static ferry_tensor *nll_forward_kernel(ferry_tensor *input, ferry_tensor *target,
                                        ferry_reduction reduction, int64_t n, int64_t c)
{
    int dev = input->device.index;
    ferry_tensor *x = ferry__contig_dtype(input, FERRY_FLOAT64);
    ferry_tensor *tg = x ? ferry_tensor_contiguous(target) : NULL;
    ferry_tensor *per = tg ? ferry_tensor_empty(target->ndim, target->sizes, FERRY_FLOAT64,
                                                input->device)
                           : NULL;
    ferry_tensor *stats = per ? ferry_tensor_empty(1, (int64_t[]){3}, FERRY_FLOAT64,
                                                   input->device)
                              : NULL;
    ferry_tensor *out = NULL;
    double st[3];
    if (stats != NULL &&
        ferry__k_nll(dev, ferry__kdata(x), ferry__kdata(tg), ferry__kdata(per),
                     ferry__kdata(stats), n, c, NLL_IGNORE_INDEX) == FERRY_OK &&
        ferry__device_copy_sync(st, FERRY_DEVICE_CPU, ferry__kdata(stats), input->device,
                                sizeof st) == FERRY_OK) {
        if (!isnan(st[2]))
            ferry__fail(FERRY_EINVAL, "Target %lld is out of bounds.", (long long)st[2]);
        else if (reduction == FERRY_REDUCTION_NONE)
            out = ferry__to_dtype_ref(per, input->dtype);
        else
            out = ferry__full_on(0, NULL, reduction == FERRY_REDUCTION_SUM ? st[0] : st[0] / st[1],
                                 input->dtype, input->device);
    }
    ferry_tensor_release(x);
    ferry_tensor_release(tg);
    ferry_tensor_release(per);
    ferry_tensor_release(stats);
    return out;
}
#endif

static ferry_tensor *nll_forward(ferry_tensor *input, ferry_tensor *target, ferry_reduction reduction)
{
    int64_t n = 0, c = 0;
    ferry_tensor *ins[2] = {input, target};
    ferry_device dev;
    if (ferry__check_devices(2, ins, &dev) != FERRY_OK)
        return NULL;
    bool k = ferry__use_kernels(2, ins);
    if (!k)
        FERRY__STAGE(2, ins, h, nll_forward(h[0], h[1], reduction));
    if (nll_check(input, target, &n, &c) != FERRY_OK ||
        ferry__check_operand(input, "nll_loss", k) != FERRY_OK ||
        ferry__check_operand(target, "nll_loss", k) != FERRY_OK)
        return NULL;
#ifdef FERRY_WITH_CUDA
    if (k)
        return nll_forward_kernel(input, target, reduction, n, c);
#endif
    ferry_tensor *x = ferry__contig_dtype(input, FERRY_FLOAT64);
    ferry_tensor *tg = x ? ferry_tensor_contiguous(target) : NULL;
    ferry_tensor *per = tg ? ferry_tensor_empty(target->ndim, target->sizes, FERRY_FLOAT64, dev)
                           : NULL;
    ferry_tensor *out = NULL;
    if (per != NULL) {
        const double *xp = ferry_tensor_data(x);
        const int64_t *tp = ferry_tensor_data(tg);
        double *pp = ferry_tensor_data(per), total = 0.0;
        int64_t counted = 0;
        for (int64_t i = 0; i < n; i++) {
            if (tp[i] == NLL_IGNORE_INDEX) {
                pp[i] = 0.0;
                continue;
            }
            if (tp[i] < 0 || tp[i] >= c) {
                ferry__fail(FERRY_EINVAL, "Target %lld is out of bounds.", (long long)tp[i]);
                goto done;
            }
            pp[i] = -xp[i * c + tp[i]];
            total += pp[i];
            counted++;
        }
        if (reduction == FERRY_REDUCTION_NONE)
            out = ferry__to_dtype_ref(per, input->dtype);
        else
            out = ferry__full_on(0, NULL,
                                 reduction == FERRY_REDUCTION_SUM ? total : total / (double)counted,
                                 input->dtype, dev);
    }
done:
    ferry_tensor_release(x);
    ferry_tensor_release(tg);
    ferry_tensor_release(per);
    return out;
}

ferry_tensor *ferry_nll_loss(ferry_tensor *input, ferry_tensor *target, ferry_reduction reduction)
{
    if (ferry__check_dtype(input, "nll_loss") != FERRY_OK || target == NULL ||
        check_reduction(reduction) != FERRY_OK)
        return target ? NULL : ferry__fail_null(FERRY_EINVAL, "nll_loss: target is NULL");
    ferry__op_record rec = {.op = FERRY__OP_NLL_LOSS, .n_inputs = 1, .inputs = &input, .n_saved = 1,
                            .saved = {target}, .n_ints = 1, .ints = {reduction}};
    return ferry__ops_record(nll_forward(input, target, reduction), &rec);
}

ferry_tensor *ferry__nll_loss_backward(ferry_tensor *grad, ferry_tensor *target, int ndim,
                                       const int64_t *input_sizes, ferry_dtype dtype,
                                       ferry_reduction reduction)
{
    int64_t n = ndim == 2 ? input_sizes[0] : 1, c = input_sizes[ndim - 1], counted = 0;
    ferry_tensor *ins[2] = {grad, target};
    ferry_device dev;
    bool k = ferry__use_kernels(2, ins);
    if (!k)
        FERRY__STAGE(2, ins, h, ferry__nll_loss_backward(h[0], h[1], ndim, input_sizes, dtype,
                                                         reduction));
    if (ferry__check_devices(2, ins, &dev) != FERRY_OK ||
        ferry__check_operand(grad, "nll_loss_backward", k) != FERRY_OK ||
        ferry__check_operand(target, "nll_loss_backward", k) != FERRY_OK)
        return NULL;
    ferry_tensor *gi = ferry__zeros_on(ndim, input_sizes, FERRY_FLOAT64, dev);
    ferry_tensor *g = gi ? ferry__contig_dtype(grad, FERRY_FLOAT64) : NULL;
    ferry_tensor *tg = g ? ferry_tensor_contiguous(target) : NULL;
    ferry_tensor *out = NULL;
#ifdef FERRY_WITH_CUDA
    if (tg != NULL && k) {
        if (ferry__k_nll_backward(dev.index, ferry__kdata(g), ferry__kdata(tg), ferry__kdata(gi),
                                  n, c, (int)reduction, NLL_IGNORE_INDEX) == FERRY_OK)
            out = ferry__to_dtype_ref(gi, dtype);
        ferry_tensor_release(gi);
        ferry_tensor_release(g);
        ferry_tensor_release(tg);
        return out;
    }
#endif
    if (tg != NULL) {
        const int64_t *tp = ferry_tensor_data(tg);
        const double *gp = ferry_tensor_data(g);
        double *op = ferry_tensor_data(gi);
        for (int64_t i = 0; i < n; i++)
            counted += tp[i] != NLL_IGNORE_INDEX;
        for (int64_t i = 0; i < n; i++) {
            if (tp[i] == NLL_IGNORE_INDEX || tp[i] < 0 || tp[i] >= c)
                continue;
            double gv = reduction == FERRY_REDUCTION_NONE ? gp[i]
                        : reduction == FERRY_REDUCTION_SUM ? gp[0]
                                                           : gp[0] / (double)counted;
            op[i * c + tp[i]] = -gv;
        }
        out = ferry__to_dtype_ref(gi, dtype);
    }
    ferry_tensor_release(gi);
    ferry_tensor_release(g);
    ferry_tensor_release(tg);
    return out;
}

ferry_tensor *ferry_cross_entropy(ferry_tensor *input, ferry_tensor *target, ferry_reduction reduction)
{
    if (input == NULL)
        return ferry__fail_null(FERRY_EINVAL, "cross_entropy: input is NULL");
    ferry_tensor *lsm = ferry_log_softmax(input, input->ndim == 1 ? 0 : 1);
    ferry_tensor *out = lsm ? ferry_nll_loss(lsm, target, reduction) : NULL;
    ferry_tensor_release(lsm);
    return out;
}

/* The mask of kept elements, already scaled by 1 / (1 - p). */
static ferry_tensor *dropout_mask(ferry_tensor *t, double p, ferry_generator *gen)
{
    ferry_tensor *u = ferry_rand(t->ndim, t->sizes, FERRY_FLOAT64, gen);
    if (u == NULL)
        return NULL;
    double *up = ferry_tensor_data(u), scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
    int64_t n = ferry_tensor_numel(u);
    for (int64_t i = 0; i < n; i++)
        up[i] = up[i] < 1.0 - p ? scale : 0.0;
    ferry_tensor *mask = ferry__to_dtype_ref(u, t->dtype);
    ferry_tensor_release(u);
    /* drawn on the host from ferry's generator, so a device gives the CPU's numbers */
    ferry_tensor *moved = mask ? ferry_tensor_to(mask, t->device) : NULL;
    ferry_tensor_release(mask);
    return moved;
}

ferry_tensor *ferry_dropout(ferry_tensor *t, double p, bool training, ferry_generator *gen)
{
    if (ferry__check_dtype(t, "dropout") != FERRY_OK)
        return NULL;
    if (!(p >= 0.0 && p <= 1.0))
        return ferry__fail_null(FERRY_EINVAL,
                                "dropout probability has to be between 0 and 1, but got %g", p);
    if (!training || p == 0.0)
        return ferry_tensor_retain(t);
    if (!ferry__is_floating(t->dtype))
        return ferry__fail_null(FERRY_EINVAL, "dropout: expected a floating point tensor");
    ferry_tensor *mask = dropout_mask(t, p, gen);
    ferry_tensor *plain = mask ? ferry__alias(t) : NULL;
    ferry_tensor *out = plain ? ferry_mul(plain, mask) : NULL;
    ferry_tensor_release(plain);
    ferry__op_record rec = {.op = FERRY__OP_DROPOUT, .n_inputs = 1, .inputs = &t, .n_saved = 1,
                            .saved = {mask}};
    out = ferry__ops_record(out, &rec);
    ferry_tensor_release(mask);
    return out;
}
