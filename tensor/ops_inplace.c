/* In-place ops for optimizers and initializers: zero_, fill_, add_, mul_, add_scaled_ and the
   scalar and addcmul_/addcdiv_ forms. A contiguous target is updated by one flat loop against an
   operand already expanded and converted to its dtype; other targets go through an out-of-place
   result copied back. They never record a graph node (ferry__ops_check_inplace refuses the
   cases where torch would have to). */
#include "tensor/ops_internal.h"

#include <string.h>

#include "core/error.h"
#include "tensor/device.h"

typedef enum { IP_ADD, IP_MUL } ipop;

static void ip_f32(ipop op, int64_t n, float *restrict t, const float *restrict b, int64_t sb, float alpha)
{
    if (op == IP_ADD && sb == 1)
        for (int64_t i = 0; i < n; i++) t[i] += alpha * b[i];
    else if (op == IP_ADD)
        for (int64_t i = 0; i < n; i++) t[i] += alpha * b[0];
    else if (sb == 1)
        for (int64_t i = 0; i < n; i++) t[i] *= b[i];
    else
        for (int64_t i = 0; i < n; i++) t[i] *= b[0];
}

static void ip_f64(ipop op, int64_t n, double *restrict t, const double *restrict b, int64_t sb, double alpha)
{
    if (op == IP_ADD && sb == 1)
        for (int64_t i = 0; i < n; i++) t[i] += alpha * b[i];
    else if (op == IP_ADD)
        for (int64_t i = 0; i < n; i++) t[i] += alpha * b[0];
    else if (sb == 1)
        for (int64_t i = 0; i < n; i++) t[i] *= b[i];
    else
        for (int64_t i = 0; i < n; i++) t[i] *= b[0];
}

static void ip_i64(ipop op, int64_t n, int64_t *restrict t, const int64_t *restrict b, int64_t sb, int64_t alpha)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t y = (uint64_t)b[sb ? i : 0];
        t[i] = op == IP_ADD ? (int64_t)((uint64_t)t[i] + (uint64_t)alpha * y)
                            : (int64_t)((uint64_t)t[i] * y);
    }
}

/* The operand as t's dtype, contiguous and of t's shape (or a single element). */
static ferry_tensor *operand_for(ferry_tensor *t, ferry_tensor *other, int64_t *stride)
{
    if (ferry__check_compute(other, "in-place op") != FERRY_OK)
        return NULL;
    if (ferry__is_floating(other->dtype) && !ferry__is_floating(t->dtype))
        return ferry__fail_null(FERRY_EINVAL, "result type %s can't be cast to the desired output "
                                              "type Long",
                                ferry__torch_type_name(other->dtype));
    int nd;
    int64_t sizes[FERRY_MAX_DIMS];
    char sa[128], sb[128];
    if (ferry__broadcast_shape(t->ndim, t->sizes, other->ndim, other->sizes, &nd, sizes) != FERRY_OK)
        return NULL;
    if (nd != t->ndim || memcmp(sizes, t->sizes, sizeof(int64_t) * (size_t)nd) != 0)
        return ferry__fail_null(FERRY_EINVAL, "output with shape %s doesn't match the broadcast shape %s",
                                ferry__shape_str(t->ndim, t->sizes, sa, sizeof sa),
                                ferry__shape_str(nd, sizes, sb, sizeof sb));
    *stride = ferry_tensor_numel(other) == 1 && ferry_tensor_numel(t) != 1 ? 0 : 1;
    ferry_tensor *conv = ferry__to_dtype_ref(other, t->dtype);
    if (conv == NULL || *stride == 0)
        return conv;
    /* A fresh contiguous copy when other shares t's memory, so the restrict loop is sound. */
    ferry_tensor *exp = ferry__expand(conv, t->ndim, t->sizes);
    ferry_tensor_release(conv);
    if (exp == NULL)
        return NULL;
    ferry_tensor *out = ferry_tensor_shares_storage(exp, t) || !ferry_tensor_is_contiguous(exp)
                            ? ferry_tensor_clone_data(exp)
                            : ferry_tensor_retain(exp);
    ferry_tensor_release(exp);
    return out;
}

#ifdef FERRY_WITH_CUDA
/* t op= other on a real GPU: the broadcast kernel writing over t (other converted to t's dtype,
   copied first when it shares t's memory). */
static ferry_status inplace_kernel(ipop op, ferry_tensor *t, ferry_tensor *other, double alpha)
{
    int nd;
    int64_t sizes[FERRY_MAX_DIMS];
    char sa[128], sb[128];
    if (ferry__check_dtype(t, "in-place op") != FERRY_OK ||
        ferry__check_dtype(other, "in-place op") != FERRY_OK)
        return ferry_last_status();
    if (ferry__is_floating(other->dtype) && !ferry__is_floating(t->dtype))
        return ferry__fail(FERRY_EINVAL, "result type %s can't be cast to the desired output "
                                         "type Long", ferry__torch_type_name(other->dtype));
    if (ferry__broadcast_shape(t->ndim, t->sizes, other->ndim, other->sizes, &nd, sizes) != FERRY_OK)
        return ferry_last_status();
    if (nd != t->ndim || memcmp(sizes, t->sizes, sizeof(int64_t) * (size_t)nd) != 0)
        return ferry__fail(FERRY_EINVAL, "output with shape %s doesn't match the broadcast shape %s",
                           ferry__shape_str(t->ndim, t->sizes, sa, sizeof sa),
                           ferry__shape_str(nd, sizes, sb, sizeof sb));
    ferry_tensor *conv = ferry__to_dtype_ref(other, t->dtype);
    if (conv != NULL && ferry_tensor_shares_storage(conv, t)) {
        ferry_tensor *snap = ferry_tensor_clone_data(conv);
        ferry_tensor_release(conv);
        conv = snap;
    }
    if (conv == NULL)
        return ferry_last_status();
    ferry_status rc = ferry__kern_binary(op == IP_ADD ? FERRY__K_ADD_ALPHA : FERRY__K_MUL, t, t,
                                         conv, alpha);
    ferry_tensor_release(conv);
    return rc;
}
#endif

static ferry_status inplace(ipop op, ferry_tensor *t, ferry_tensor *other, double alpha)
{
    int64_t sb = 1;
    ferry_tensor *ins[2] = {t, other};
    ferry_device dev;
    if (t == NULL || other == NULL)
        return ferry__check_compute(t ? other : t, "in-place op");
    if (ferry__check_devices(2, ins, &dev) != FERRY_OK ||
        ferry__ops_check_inplace(t, 1, &other) != FERRY_OK)
        return ferry_last_status();
#ifdef FERRY_WITH_CUDA
    if (ferry__use_kernels(2, ins))
        return inplace_kernel(op, t, other, alpha);
#endif
    if (ferry__needs_staging(2, ins)) { /* the host cannot write t: run on copies, write back */
        ferry_tensor *h[2];
        if (ferry__stage_in(2, ins, h, &dev) != FERRY_OK)
            return ferry_last_status();
        ferry_status rc = inplace(op, h[0], h[1], alpha);
        if (rc == FERRY_OK)
            rc = ferry__stage_back(t, h[0]);
        ferry__stage_release(2, h);
        return rc;
    }
    if (ferry__check_compute(t, "in-place op") != FERRY_OK)
        return ferry_last_status();
    ferry_tensor *b = operand_for(t, other, &sb);
    if (b == NULL)
        return ferry_last_status();
    ferry_status rc = FERRY_OK;
    ferry_tensor *ct = ferry_tensor_is_contiguous(t) ? ferry_tensor_retain(t) : ferry_tensor_clone_data(t);
    if (ct == NULL) {
        rc = ferry_last_status();
    } else {
        int64_t n = ferry_tensor_numel(t);
        if (t->dtype == FERRY_FLOAT32)
            ip_f32(op, n, ferry_tensor_data(ct), ferry_tensor_data(b), sb, (float)alpha);
        else if (t->dtype == FERRY_FLOAT64)
            ip_f64(op, n, ferry_tensor_data(ct), ferry_tensor_data(b), sb, alpha);
        else
            ip_i64(op, n, ferry_tensor_data(ct), ferry_tensor_data(b), sb, (int64_t)alpha);
        if (ct != t) /* a strided target: write the result back through its view */
            rc = ferry_tensor_copy_(t, ct);
    }
    ferry_tensor_release(ct);
    ferry_tensor_release(b);
    return rc;
}

ferry_status ferry_add_(ferry_tensor *t, ferry_tensor *other)
{
    return inplace(IP_ADD, t, other, 1.0);
}

ferry_status ferry_add_scaled_(ferry_tensor *t, ferry_tensor *other, double alpha)
{
    return inplace(IP_ADD, t, other, alpha);
}

ferry_status ferry_mul_(ferry_tensor *t, ferry_tensor *other)
{
    return inplace(IP_MUL, t, other, 1.0);
}

/* A Python float operand: a float into an int64 tensor fails as torch. */
static ferry_status inplace_scalar(ipop op, ferry_tensor *t, double value)
{
    if (t == NULL)
        return ferry__check_compute(t, "in-place op");
    /* An integral value stays int64 for an int64 tensor; a fractional one is torch's Float. */
    ferry_dtype dt = t->dtype != FERRY_INT64 ? FERRY_FLOAT64
                     : value == (double)(int64_t)value ? FERRY_INT64 : FERRY_FLOAT32;
    ferry_tensor *s = ferry_scalar_tensor(value, dt);
    if (s == NULL)
        return ferry_last_status();
    ferry_status rc = inplace(op, t, s, 1.0);
    ferry_tensor_release(s);
    return rc;
}

ferry_status ferry_add_scalar_(ferry_tensor *t, double value)
{
    return inplace_scalar(IP_ADD, t, value);
}

ferry_status ferry_mul_scalar_(ferry_tensor *t, double value)
{
    return inplace_scalar(IP_MUL, t, value);
}

static ferry_status addc(ferry_tensor *t, ferry_tensor *a, ferry_tensor *b, double value, bool div)
{
    if (t == NULL)
        return ferry__check_compute(t, div ? "addcdiv_" : "addcmul_");
    ferry_tensor *others[2] = {a, b};
    if (ferry__ops_check_inplace(t, 2, others) != FERRY_OK)
        return ferry_last_status();
    /* Detached aliases: the product is a temporary and must not record. */
    ferry_tensor *pa = a ? ferry__alias(a) : NULL, *pb = b ? ferry__alias(b) : NULL;
    ferry_tensor *prod = pa && pb ? (div ? ferry_div(pa, pb) : ferry_mul(pa, pb)) : NULL;
    ferry_status rc = prod ? inplace(IP_ADD, t, prod, value)
                           : (a && b ? ferry_last_status()
                                     : ferry__fail(FERRY_EINVAL, "addcmul_/addcdiv_: NULL operand"));
    ferry_tensor_release(pa);
    ferry_tensor_release(pb);
    ferry_tensor_release(prod);
    return rc;
}

ferry_status ferry_addcmul_(ferry_tensor *t, ferry_tensor *a, ferry_tensor *b, double value)
{
    return addc(t, a, b, value, false);
}

ferry_status ferry_addcdiv_(ferry_tensor *t, ferry_tensor *a, ferry_tensor *b, double value)
{
    return addc(t, a, b, value, true);
}

ferry_status ferry_fill_(ferry_tensor *t, double value)
{
    if (t == NULL)
        return ferry__fail(FERRY_EINVAL, "fill_: tensor is NULL");
    if (ferry__ops_check_inplace(t, 0, NULL) != FERRY_OK)
        return ferry_last_status();
    ferry_tensor *full = ferry__full_on(t->ndim, t->sizes, value, t->dtype, t->device);
    if (full == NULL)
        return ferry_last_status();
    ferry_status rc = ferry_tensor_copy_(t, full);
    ferry_tensor_release(full);
    return rc;
}

ferry_status ferry_zero_(ferry_tensor *t)
{
    if (t == NULL)
        return ferry__fail(FERRY_EINVAL, "zero_: tensor is NULL");
    if (ferry__ops_check_inplace(t, 0, NULL) != FERRY_OK)
        return ferry_last_status();
    if (ferry_tensor_is_contiguous(t) && !ferry__needs_staging(1, &t)) {
        if (t->device.type != FERRY_CPU && ferry__device_sync(t->device.index) != FERRY_OK)
            return ferry_last_status();
        memset(ferry_tensor_data(t), 0, ferry_tensor_nbytes(t));
        return FERRY_OK;
    }
    return ferry_fill_(t, 0.0);
}
