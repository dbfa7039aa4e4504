/* Backward formulas of the elementwise ops (torch's derivatives.yaml, written out). They run
   with grad mode off, so the ops they call record nothing; the engine then sums each gradient
   down to its input's shape and casts it to its dtype, so the formulas may return broadcast
   shapes and promoted dtypes. */
#include "autograd/engine.h"

#include <math.h>

#include "core/error.h"

/* f applied to every element of x, computed in double, returned in x's dtype on x's device.
   Only backward uses it, where clarity beats speed; a tensor the host cannot read is mapped on
   a host copy. */
static ferry_tensor *map(ferry_tensor *x, double (*f)(double), int kernel_op)
{
    ferry_tensor *h = NULL;
    ferry_device dev;
#ifdef FERRY_WITH_CUDA
    if (ferry__use_kernels(1, &x)) { /* the same slope in float64 on the GPU */
        ferry_tensor *d = ferry_tensor_to_dtype(x, FERRY_FLOAT64);
        ferry_tensor *o = d ? ferry_tensor_empty(x->ndim, x->sizes, FERRY_FLOAT64, x->device)
                            : NULL;
        ferry_tensor *out = NULL;
        if (o != NULL && ferry__k_unary(x->device.index, kernel_op, FERRY_FLOAT64,
                                        ferry__kdata(o), ferry__kdata(d), ferry_tensor_numel(o),
                                        0.0) == FERRY_OK)
            out = ferry__to_dtype_ref(o, x->dtype);
        ferry_tensor_release(d);
        ferry_tensor_release(o);
        return out;
    }
#else
    (void)kernel_op;
#endif
    if (ferry__needs_staging(1, &x)) {
        if (ferry__stage_in(1, &x, &h, &dev) != FERRY_OK)
            return NULL;
        ferry_tensor *out = ferry__stage_out(map(h, f, kernel_op), dev);
        ferry_tensor_release(h);
        return out;
    }
    ferry_tensor *d = ferry_tensor_to_dtype(x, FERRY_FLOAT64);
    if (d == NULL || ferry__check_compute(d, "backward") != FERRY_OK) {
        ferry_tensor_release(d);
        return NULL;
    }
    double *p = ferry_tensor_data(d);
    int64_t n = ferry_tensor_numel(d);
    for (int64_t i = 0; i < n; i++)
        p[i] = f(p[i]);
    ferry_tensor *out = ferry__to_dtype_ref(d, x->dtype);
    ferry_tensor_release(d);
    return out;
}

/* g * map(x, f): the common shape of a unary derivative. */
static ferry_tensor *times_map(ferry_tensor *g, ferry_tensor *x, double (*f)(double),
                               int kernel_op)
{
    ferry_tensor *m = map(x, f, kernel_op);
    ferry_tensor *out = m ? ferry_mul(g, m) : NULL;
    ferry_tensor_release(m);
    return out;
}

static double sign_of(double v) { return (double)((v > 0) - (v < 0)); }
static double positive(double v) { return v > 0 ? 1.0 : 0.0; }
static double sigmoid_slope(double y) { return y * (1.0 - y); }
static double tanh_slope(double y) { return 1.0 - y * y; }
static double half_over(double y) { return 0.5 / y; }

#define G (grads[0])

/* OK when every gradient that was asked for was made. */
static ferry_status done(const ferry__node *node, ferry_tensor **out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (out[i] == NULL && ferry__needs_grad(node, i))
            return ferry_last_status();
    return FERRY_OK;
}

static ferry_status add_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    double alpha = node->scalars[0];
    if (ferry__needs_grad(node, 0))
        out[0] = ferry_tensor_retain(G);
    if (ferry__needs_grad(node, 1))
        out[1] = alpha == 1.0 ? ferry_tensor_retain(G) : ferry_mul_scalar(G, alpha);
    return done(node, out, 2);
}

static ferry_status sub_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    if (ferry__needs_grad(node, 0))
        out[0] = ferry_tensor_retain(G);
    if (ferry__needs_grad(node, 1))
        out[1] = ferry_mul_scalar(G, -node->scalars[0]);
    return done(node, out, 2);
}

static ferry_status mul_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    if (ferry__needs_grad(node, 0))
        out[0] = ferry_mul(G, node->saved[1]);
    if (ferry__needs_grad(node, 1))
        out[1] = ferry_mul(G, node->saved[0]);
    return done(node, out, 2);
}

static ferry_status div_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    ferry_tensor *a = node->saved[0], *b = node->saved[1];
    if (ferry__needs_grad(node, 0))
        out[0] = ferry_div(G, b);
    if (ferry__needs_grad(node, 1)) { /* -grad * ((a / b) / b), torch's order of operations */
        ferry_tensor *q = ferry_div(a, b);
        ferry_tensor *q2 = q ? ferry_div(q, b) : NULL;
        ferry_tensor *ng = q2 ? ferry_neg(G) : NULL;
        out[1] = ng ? ferry_mul(ng, q2) : NULL;
        ferry_tensor_release(q);
        ferry_tensor_release(q2);
        ferry_tensor_release(ng);
    }
    return done(node, out, 2);
}

static ferry_status identity_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_tensor_retain(G);
    return FERRY_OK;
}

static ferry_status mul_scalar_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_mul_scalar(G, node->scalars[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status div_scalar_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_div_scalar(G, node->scalars[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status neg_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_neg(G);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status pow_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    double e = node->scalars[0];
    ferry_tensor *x = node->saved[0];
    if (e == 0.0) { /* torch: exactly zero, even where x ** -1 would be inf */
        out[0] = ferry__zeros_on(x->ndim, x->sizes, G->dtype, x->device);
        return out[0] ? FERRY_OK : ferry_last_status();
    }
    ferry_tensor *p = ferry_pow(x, e - 1.0);
    ferry_tensor *ep = p ? ferry_mul_scalar(p, e) : NULL;
    out[0] = ep ? ferry_mul(G, ep) : NULL;
    ferry_tensor_release(p);
    ferry_tensor_release(ep);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status abs_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = times_map(G, node->saved[0], sign_of, FERRY__K_SIGN);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status relu_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = times_map(G, node->saved[0], positive, FERRY__K_POSITIVE);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status exp_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_mul(G, node->saved[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status log_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_div(G, node->saved[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status sqrt_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = times_map(G, node->saved[0], half_over, FERRY__K_HALF_OVER);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status sigmoid_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = times_map(G, node->saved[0], sigmoid_slope, FERRY__K_SIGMOID_SLOPE);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status tanh_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = times_map(G, node->saved[0], tanh_slope, FERRY__K_TANH_SLOPE);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status gelu_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry__gelu_backward(G, node->saved[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static ferry_status dropout_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_mul(G, node->saved[0]);
    return out[0] ? FERRY_OK : ferry_last_status();
}

/* The gradient of t.to(device) goes back to t's device. */
static ferry_status to_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    ferry_device src = {(ferry_device_type)node->ints[0], (int)node->ints[1]};
    out[0] = ferry_to(G, src);
    return out[0] ? FERRY_OK : ferry_last_status();
}

static const ferry__formula formulas[FERRY__OP_COUNT] = {
    [FERRY__OP_ADD] = {"AddBackward0", false, add_backward},
    [FERRY__OP_SUB] = {"SubBackward0", false, sub_backward},
    [FERRY__OP_MUL] = {"MulBackward0", true, mul_backward},
    [FERRY__OP_DIV] = {"DivBackward0", true, div_backward},
    [FERRY__OP_ADD_SCALAR] = {"AddBackward1", false, identity_backward},
    [FERRY__OP_SUB_SCALAR] = {"SubBackward1", false, identity_backward},
    [FERRY__OP_MUL_SCALAR] = {"MulBackward0", true, mul_scalar_backward},
    [FERRY__OP_DIV_SCALAR] = {"DivBackward0", true, div_scalar_backward},
    [FERRY__OP_POW] = {"PowBackward0", true, pow_backward},
    [FERRY__OP_NEG] = {"NegBackward0", false, neg_backward},
    [FERRY__OP_ABS] = {"AbsBackward0", true, abs_backward},
    [FERRY__OP_RELU] = {"ReluBackward0", true, relu_backward},
    [FERRY__OP_EXP] = {"ExpBackward0", true, exp_backward},
    [FERRY__OP_LOG] = {"LogBackward0", true, log_backward},
    [FERRY__OP_SQRT] = {"SqrtBackward0", true, sqrt_backward},
    [FERRY__OP_SIGMOID] = {"SigmoidBackward0", true, sigmoid_backward},
    [FERRY__OP_TANH] = {"TanhBackward0", true, tanh_backward},
    [FERRY__OP_GELU] = {"GeluBackward0", true, gelu_backward},
    [FERRY__OP_DROPOUT] = {"NativeDropoutBackward0", true, dropout_backward},
    [FERRY__OP_CLONE] = {"CloneBackward0", false, identity_backward},
    [FERRY__OP_TO] = {"ToCopyBackward0", false, to_backward},
};

const ferry__formula *ferry__formulas_elementwise(int op)
{
    if (op < 0 || op >= FERRY__OP_COUNT || formulas[op].name == NULL)
        return NULL;
    return &formulas[op];
}
