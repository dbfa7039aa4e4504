/* Elementwise arithmetic: add/sub/mul/div with broadcasting, their Python-float forms, pow and
   the unary maths. Operands are brought to the result dtype first (a copy only when the dtype
   differs), then a strided loop walks all dims but the innermost, and the innermost row runs one
   of four typed loops: all unit strides, or one operand broadcast (stride 0), or the general
   strided case. The unit-stride loops have restrict pointers and no calls, so the compiler
   vectorizes them; the dims are coalesced first so a contiguous tensor is a single row. */
#include "tensor/ops_internal.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

typedef enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV, BIN_ADD_ALPHA } binop;

typedef enum {
    UN_NEG, UN_ABS, UN_RELU, UN_EXP, UN_LOG, UN_SQRT, UN_SIGMOID, UN_TANH, UN_GELU, UN_POW
} unop;

/* Geometry of out = f(a, b): one shared shape and per-operand strides (0 where broadcast). */
typedef struct {
    int nd;
    int64_t sizes[FERRY_MAX_DIMS];
    int64_t st[3][FERRY_MAX_DIMS];
} loop3;

/* The loop skeleton for one row, instantiated per dtype so each copy is a plain typed loop. */
#define BINARY_ROW(T, EXPR)                                                                  \
    do {                                                                                     \
        if (so == 1 && sa == 1 && sb == 1) {                                                 \
            for (int64_t i = 0; i < n; i++) {                                                \
                T x = a[i], y = b[i];                                                        \
                o[i] = (EXPR);                                                               \
            }                                                                                \
        } else if (so == 1 && sa == 1 && sb == 0) {                                          \
            const T y = b[0];                                                                \
            for (int64_t i = 0; i < n; i++) {                                                \
                T x = a[i];                                                                  \
                o[i] = (EXPR);                                                               \
            }                                                                                \
        } else if (so == 1 && sa == 0 && sb == 1) {                                          \
            const T x = a[0];                                                                \
            for (int64_t i = 0; i < n; i++) {                                                \
                T y = b[i];                                                                  \
                o[i] = (EXPR);                                                               \
            }                                                                                \
        } else {                                                                             \
            for (int64_t i = 0; i < n; i++) {                                                \
                T x = a[i * sa], y = b[i * sb];                                              \
                o[i * so] = (EXPR);                                                          \
            }                                                                                \
        }                                                                                    \
    } while (0)

static void row_f32(binop op, int64_t n, float *restrict o, int64_t so, const float *restrict a,
                    int64_t sa, const float *restrict b, int64_t sb, float alpha)
{
    switch (op) {
    case BIN_ADD: BINARY_ROW(float, x + y); break;
    case BIN_SUB: BINARY_ROW(float, x - y); break;
    case BIN_MUL: BINARY_ROW(float, x * y); break;
    case BIN_DIV: BINARY_ROW(float, x / y); break;
    case BIN_ADD_ALPHA: BINARY_ROW(float, x + alpha * y); break;
    }
}

static void row_f64(binop op, int64_t n, double *restrict o, int64_t so, const double *restrict a,
                    int64_t sa, const double *restrict b, int64_t sb, double alpha)
{
    switch (op) {
    case BIN_ADD: BINARY_ROW(double, x + y); break;
    case BIN_SUB: BINARY_ROW(double, x - y); break;
    case BIN_MUL: BINARY_ROW(double, x * y); break;
    case BIN_DIV: BINARY_ROW(double, x / y); break;
    case BIN_ADD_ALPHA: BINARY_ROW(double, x + alpha * y); break;
    }
}

/* Integer division never reaches here: torch's div is true division, promoted to float. */
static void row_i64(binop op, int64_t n, int64_t *restrict o, int64_t so, const int64_t *restrict a,
                    int64_t sa, const int64_t *restrict b, int64_t sb, int64_t alpha)
{
    /* Wrap-around like torch's int64 arithmetic: compute in unsigned to stay defined. */
    switch (op) {
    case BIN_ADD: BINARY_ROW(int64_t, (int64_t)((uint64_t)x + (uint64_t)y)); break;
    case BIN_SUB: BINARY_ROW(int64_t, (int64_t)((uint64_t)x - (uint64_t)y)); break;
    case BIN_MUL: BINARY_ROW(int64_t, (int64_t)((uint64_t)x * (uint64_t)y)); break;
    case BIN_DIV: break;
    case BIN_ADD_ALPHA:
        BINARY_ROW(int64_t, (int64_t)((uint64_t)x + (uint64_t)alpha * (uint64_t)y));
        break;
    }
}

static void run_row(binop op, ferry_dtype dt, int64_t n, char *o, int64_t so, const char *a,
                    int64_t sa, const char *b, int64_t sb, double alpha)
{
    switch (dt) {
    case FERRY_FLOAT32:
        row_f32(op, n, (float *)o, so, (const float *)a, sa, (const float *)b, sb, (float)alpha);
        break;
    case FERRY_FLOAT64:
        row_f64(op, n, (double *)o, so, (const double *)a, sa, (const double *)b, sb, alpha);
        break;
    default:
        row_i64(op, n, (int64_t *)o, so, (const int64_t *)a, sa, (const int64_t *)b, sb,
                (int64_t)alpha);
        break;
    }
}

/* Merges dims that are laid out back to back in every operand, and drops size-1 dims, so that
   the innermost row is as long as it can be. */
static void coalesce(loop3 *l)
{
    int nd = 0;
    for (int d = 0; d < l->nd; d++) {
        if (l->sizes[d] == 1)
            continue;
        if (nd > 0) {
            bool merge = true;
            for (int k = 0; k < 3; k++)
                merge &= l->st[k][nd - 1] == l->st[k][d] * l->sizes[d];
            if (merge) {
                l->sizes[nd - 1] *= l->sizes[d];
                for (int k = 0; k < 3; k++)
                    l->st[k][nd - 1] = l->st[k][d];
                continue;
            }
        }
        l->sizes[nd] = l->sizes[d];
        for (int k = 0; k < 3; k++)
            l->st[k][nd] = l->st[k][d];
        nd++;
    }
    if (nd == 0) { /* a single element */
        l->sizes[0] = 1;
        for (int k = 0; k < 3; k++)
            l->st[k][0] = 1;
        nd = 1;
    }
    l->nd = nd;
}

static void run_loop(binop op, ferry_dtype dt, loop3 *l, char *o, const char *a, const char *b,
                     double alpha)
{
    int64_t idx[FERRY_MAX_DIMS] = {0};
    int64_t es = (int64_t)ferry_dtype_size(dt), inner = l->nd - 1, n = l->sizes[inner];
    int64_t off[3] = {0, 0, 0};
    for (;;) {
        run_row(op, dt, n, o + off[0] * es, l->st[0][inner], a + off[1] * es, l->st[1][inner],
                b + off[2] * es, l->st[2][inner], alpha);
        int d = (int)inner - 1;
        for (; d >= 0; d--) {
            for (int k = 0; k < 3; k++)
                off[k] += l->st[k][d];
            if (++idx[d] < l->sizes[d])
                break;
            for (int k = 0; k < 3; k++)
                off[k] -= l->st[k][d] * l->sizes[d];
            idx[d] = 0;
        }
        if (d < 0)
            return;
    }
}

/* Strides of `t` seen through the broadcast shape (nd, sizes): 0 where t is broadcast. */
static void broadcast_strides(const ferry_tensor *t, int nd, const int64_t *sizes, int64_t *st)
{
    for (int i = 0; i < nd; i++) {
        int j = i - (nd - t->ndim);
        st[i] = (j < 0 || (t->sizes[j] == 1 && sizes[i] != 1)) ? 0 : t->strides[j];
    }
}

/* out = a op b for operands already converted to the result dtype. */
static ferry_tensor *binary_kernel(binop op, ferry_tensor *a, ferry_tensor *b, double alpha)
{
    loop3 l;
    if (ferry__broadcast_shape(a->ndim, a->sizes, b->ndim, b->sizes, &l.nd, l.sizes) != FERRY_OK)
        return NULL;
    ferry_tensor *out = ferry_tensor_empty(l.nd, l.sizes, a->dtype, ferry__device2(a, b));
    if (out == NULL || ferry_tensor_numel(out) == 0)
        return out;
#ifdef FERRY_WITH_CUDA
    ferry_tensor *ins[2] = {a, b};
    if (ferry__use_kernels(2, ins)) { /* binop's order is the kernels' */
        if (ferry__kern_binary((int)op, out, a, b, alpha) != FERRY_OK) {
            ferry_tensor_release(out);
            return NULL;
        }
        return out;
    }
#endif
    broadcast_strides(out, l.nd, l.sizes, l.st[0]);
    broadcast_strides(a, l.nd, l.sizes, l.st[1]);
    broadcast_strides(b, l.nd, l.sizes, l.st[2]);
    coalesce(&l);
    run_loop(op, a->dtype, &l, ferry_tensor_data(out), ferry_tensor_data(a), ferry_tensor_data(b),
             alpha);
    return out;
}

static const char *const binop_names[] = {"add", "sub", "mul", "div", "add"};

/* Converts both operands to the result dtype and runs the kernel; records nothing. */
static ferry_tensor *binary_raw(binop op, ferry_tensor *a, ferry_tensor *b, double alpha)
{
    ferry_tensor *ins[2] = {a, b};
    ferry_device dev;
    bool k = ferry__use_kernels(2, ins);
    if (!k)
        FERRY__STAGE(2, ins, h, binary_raw(op, h[0], h[1], alpha));
    if (ferry__check_devices(2, ins, &dev) != FERRY_OK ||
        ferry__check_operand(a, binop_names[op], k) != FERRY_OK ||
        ferry__check_operand(b, binop_names[op], k) != FERRY_OK)
        return NULL;
    ferry_dtype dt = ferry__result_type(a, b);
    if (op == BIN_DIV && dt == FERRY_INT64)
        dt = FERRY_FLOAT32; /* true division in the default dtype */
    ferry_tensor *ca = ferry__to_dtype_ref(a, dt);
    ferry_tensor *cb = ca ? ferry__to_dtype_ref(b, dt) : NULL;
    ferry_tensor *out = cb ? binary_kernel(op, ca, cb, alpha) : NULL;
    ferry_tensor_release(ca);
    ferry_tensor_release(cb);
    return out;
}

static ferry_tensor *binary_op(binop op, ferry__op rop, ferry_tensor *a, ferry_tensor *b,
                               double alpha, bool save)
{
    ferry_tensor *out = binary_raw(op, a, b, alpha);
    ferry_tensor *inputs[2] = {a, b};
    ferry__op_record rec = {.op = rop, .n_inputs = 2, .inputs = inputs, .scalars = {alpha}};
    if (save) {
        rec.n_saved = 2;
        rec.saved[0] = a;
        rec.saved[1] = b;
    }
    return ferry__ops_record(out, &rec);
}

ferry_tensor *ferry_add(ferry_tensor *a, ferry_tensor *b)
{
    return binary_op(BIN_ADD, FERRY__OP_ADD, a, b, 1.0, false);
}

ferry_tensor *ferry_add_alpha(ferry_tensor *a, ferry_tensor *b, double alpha)
{
    return binary_op(alpha == 1.0 ? BIN_ADD : BIN_ADD_ALPHA, FERRY__OP_ADD, a, b, alpha, false);
}

ferry_tensor *ferry_sub(ferry_tensor *a, ferry_tensor *b)
{
    return binary_op(BIN_SUB, FERRY__OP_SUB, a, b, 1.0, false);
}

ferry_tensor *ferry_mul(ferry_tensor *a, ferry_tensor *b)
{
    return binary_op(BIN_MUL, FERRY__OP_MUL, a, b, 1.0, true);
}

ferry_tensor *ferry_div(ferry_tensor *a, ferry_tensor *b)
{
    return binary_op(BIN_DIV, FERRY__OP_DIV, a, b, 1.0, true);
}

/* t op s for a Python float s: the scalar becomes a one-element operand with stride 0. */
static ferry_tensor *scalar_raw(binop op, ferry_tensor *t, double s)
{
    bool k = ferry__use_kernels(1, &t);
    if (!k)
        FERRY__STAGE(1, &t, h, scalar_raw(op, h[0], s));
    if (ferry__check_operand(t, binop_names[op], k) != FERRY_OK)
        return NULL;
    ferry_dtype dt = ferry__result_type_float_scalar(t);
    ferry_tensor *st = ferry_scalar_tensor(s, dt); /* a CPU scalar joins t's device */
    ferry_tensor *ct = st ? ferry__to_dtype_ref(t, dt) : NULL;
    ferry_tensor *out = ct ? binary_kernel(op, ct, st, 1.0) : NULL;
    ferry_tensor_release(st);
    ferry_tensor_release(ct);
    return out;
}

static ferry_tensor *scalar_op(binop op, ferry__op rop, ferry_tensor *t, double s)
{
    ferry_tensor *out = scalar_raw(op, t, s);
    ferry__op_record rec = {.op = rop, .n_inputs = 1, .inputs = &t, .scalars = {s}};
    return ferry__ops_record(out, &rec);
}

ferry_tensor *ferry_add_scalar(ferry_tensor *a, double b)
{
    return scalar_op(BIN_ADD, FERRY__OP_ADD_SCALAR, a, b);
}

ferry_tensor *ferry_sub_scalar(ferry_tensor *a, double b)
{
    return scalar_op(BIN_SUB, FERRY__OP_SUB_SCALAR, a, b);
}

ferry_tensor *ferry_mul_scalar(ferry_tensor *a, double b)
{
    return scalar_op(BIN_MUL, FERRY__OP_MUL_SCALAR, a, b);
}

ferry_tensor *ferry_div_scalar(ferry_tensor *a, double b)
{
    return scalar_op(BIN_DIV, FERRY__OP_DIV_SCALAR, a, b);
}

/* ---- unary ---- */

static float gelu_f32(float x)
{
    return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
}

static double gelu_f64(double x)
{
    return 0.5 * x * (1.0 + erf(x * M_SQRT1_2));
}

static void unary_f32(unop op, int64_t n, float *restrict o, const float *restrict x, float e)
{
    switch (op) {
    case UN_NEG: for (int64_t i = 0; i < n; i++) o[i] = -x[i]; break;
    case UN_ABS: for (int64_t i = 0; i < n; i++) o[i] = fabsf(x[i]); break;
    case UN_RELU: for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0.0f ? x[i] : (x[i] != x[i] ? x[i] : 0.0f); break;
    case UN_EXP: for (int64_t i = 0; i < n; i++) o[i] = expf(x[i]); break;
    case UN_LOG: for (int64_t i = 0; i < n; i++) o[i] = logf(x[i]); break;
    case UN_SQRT: for (int64_t i = 0; i < n; i++) o[i] = sqrtf(x[i]); break;
    case UN_SIGMOID: for (int64_t i = 0; i < n; i++) o[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case UN_TANH: for (int64_t i = 0; i < n; i++) o[i] = tanhf(x[i]); break;
    case UN_GELU: for (int64_t i = 0; i < n; i++) o[i] = gelu_f32(x[i]); break;
    case UN_POW:
        if (e == 2.0f)
            for (int64_t i = 0; i < n; i++) o[i] = x[i] * x[i];
        else if (e == 0.5f)
            for (int64_t i = 0; i < n; i++) o[i] = sqrtf(x[i]);
        else
            for (int64_t i = 0; i < n; i++) o[i] = powf(x[i], e);
        break;
    }
}

static void unary_f64(unop op, int64_t n, double *restrict o, const double *restrict x, double e)
{
    switch (op) {
    case UN_NEG: for (int64_t i = 0; i < n; i++) o[i] = -x[i]; break;
    case UN_ABS: for (int64_t i = 0; i < n; i++) o[i] = fabs(x[i]); break;
    case UN_RELU: for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0.0 ? x[i] : (x[i] != x[i] ? x[i] : 0.0); break;
    case UN_EXP: for (int64_t i = 0; i < n; i++) o[i] = exp(x[i]); break;
    case UN_LOG: for (int64_t i = 0; i < n; i++) o[i] = log(x[i]); break;
    case UN_SQRT: for (int64_t i = 0; i < n; i++) o[i] = sqrt(x[i]); break;
    case UN_SIGMOID: for (int64_t i = 0; i < n; i++) o[i] = 1.0 / (1.0 + exp(-x[i])); break;
    case UN_TANH: for (int64_t i = 0; i < n; i++) o[i] = tanh(x[i]); break;
    case UN_GELU: for (int64_t i = 0; i < n; i++) o[i] = gelu_f64(x[i]); break;
    case UN_POW:
        if (e == 2.0)
            for (int64_t i = 0; i < n; i++) o[i] = x[i] * x[i];
        else if (e == 0.5)
            for (int64_t i = 0; i < n; i++) o[i] = sqrt(x[i]);
        else
            for (int64_t i = 0; i < n; i++) o[i] = pow(x[i], e);
        break;
    }
}

static void unary_i64(unop op, int64_t n, int64_t *restrict o, const int64_t *restrict x)
{
    switch (op) {
    case UN_NEG: for (int64_t i = 0; i < n; i++) o[i] = (int64_t)(0 - (uint64_t)x[i]); break;
    case UN_ABS: for (int64_t i = 0; i < n; i++) o[i] = x[i] < 0 ? (int64_t)(0 - (uint64_t)x[i]) : x[i]; break;
    case UN_RELU: for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 ? x[i] : 0; break;
    default: break; /* the others compute in float32 */
    }
}

static const char *const unop_names[] = {"neg", "abs", "relu", "exp", "log",
                                         "sqrt", "sigmoid", "tanh", "gelu", "pow"};

static ferry_tensor *unary_raw(unop op, ferry_tensor *t, double e)
{
    bool k = ferry__use_kernels(1, &t);
    if (!k)
        FERRY__STAGE(1, &t, h, unary_raw(op, h[0], e));
    if (ferry__check_operand(t, unop_names[op], k) != FERRY_OK)
        return NULL;
    bool keeps_int = op == UN_NEG || op == UN_ABS || op == UN_RELU;
    ferry_dtype dt = t->dtype == FERRY_INT64 && !keeps_int ? FERRY_FLOAT32 : t->dtype;
    ferry_tensor *x = ferry__contig_dtype(t, dt);
    ferry_tensor *out = x ? ferry_tensor_empty(t->ndim, t->sizes, dt, t->device) : NULL;
#ifdef FERRY_WITH_CUDA
    if (out != NULL && k) { /* unop's order is the kernels' */
        if (ferry__k_unary(t->device.index, (int)op, dt, ferry__kdata(out), ferry__kdata(x),
                           ferry_tensor_numel(out), e) != FERRY_OK) {
            ferry_tensor_release(out);
            out = NULL;
        }
        ferry_tensor_release(x);
        return out;
    }
#endif
    if (out != NULL) {
        int64_t n = ferry_tensor_numel(out);
        if (dt == FERRY_FLOAT32)
            unary_f32(op, n, ferry_tensor_data(out), ferry_tensor_data(x), (float)e);
        else if (dt == FERRY_FLOAT64)
            unary_f64(op, n, ferry_tensor_data(out), ferry_tensor_data(x), e);
        else
            unary_i64(op, n, ferry_tensor_data(out), ferry_tensor_data(x));
    }
    ferry_tensor_release(x);
    return out;
}

/* Records the unary op; `save_input` / `save_output` say what its formula needs. */
static ferry_tensor *unary_op(unop op, ferry__op rop, ferry_tensor *t, double e, bool save_input,
                              bool save_output)
{
    ferry_tensor *out = unary_raw(op, t, e);
    if (out == NULL)
        return NULL;
    ferry__op_record rec = {.op = rop, .n_inputs = 1, .inputs = &t, .scalars = {e}};
    if (save_input)
        rec.saved[rec.n_saved++] = t;
    if (save_output)
        rec.saved[rec.n_saved++] = out;
    return ferry__ops_record(out, &rec);
}

ferry_tensor *ferry_neg(ferry_tensor *t) { return unary_op(UN_NEG, FERRY__OP_NEG, t, 0, false, false); }
ferry_tensor *ferry_abs(ferry_tensor *t) { return unary_op(UN_ABS, FERRY__OP_ABS, t, 0, true, false); }
ferry_tensor *ferry_relu(ferry_tensor *t) { return unary_op(UN_RELU, FERRY__OP_RELU, t, 0, false, true); }
ferry_tensor *ferry_exp(ferry_tensor *t) { return unary_op(UN_EXP, FERRY__OP_EXP, t, 0, false, true); }
ferry_tensor *ferry_log(ferry_tensor *t) { return unary_op(UN_LOG, FERRY__OP_LOG, t, 0, true, false); }
ferry_tensor *ferry_sqrt(ferry_tensor *t) { return unary_op(UN_SQRT, FERRY__OP_SQRT, t, 0, false, true); }
ferry_tensor *ferry_sigmoid(ferry_tensor *t) { return unary_op(UN_SIGMOID, FERRY__OP_SIGMOID, t, 0, false, true); }
ferry_tensor *ferry_tanh(ferry_tensor *t) { return unary_op(UN_TANH, FERRY__OP_TANH, t, 0, false, true); }
ferry_tensor *ferry_gelu(ferry_tensor *t) { return unary_op(UN_GELU, FERRY__OP_GELU, t, 0, true, false); }

ferry_tensor *ferry_pow(ferry_tensor *t, double exponent)
{
    return unary_op(UN_POW, FERRY__OP_POW, t, exponent, true, false);
}

ferry_tensor *ferry__gelu_backward(ferry_tensor *grad, ferry_tensor *x)
{
    /* d/dx x * Phi(x) = Phi(x) + x * phi(x), computed in x's dtype. */
    ferry_tensor *ins[2] = {grad, x};
    bool kern = ferry__use_kernels(2, ins);
    if (!kern)
        FERRY__STAGE(2, ins, h, ferry__gelu_backward(h[0], h[1]));
    if (ferry__check_operand(x, "gelu_backward", kern) != FERRY_OK)
        return NULL;
    ferry_tensor *cx = ferry__contig_dtype(x, x->dtype);
    ferry_tensor *d = cx ? ferry_tensor_empty(x->ndim, x->sizes, x->dtype, x->device) : NULL;
#ifdef FERRY_WITH_CUDA
    if (d != NULL && kern &&
        ferry__k_unary(x->device.index, FERRY__K_GELU_SLOPE, x->dtype, ferry__kdata(d),
                       ferry__kdata(cx), ferry_tensor_numel(d), 0.0) != FERRY_OK) {
        ferry_tensor_release(d);
        d = NULL;
    }
    if (d != NULL && !kern) {
#else
    if (d != NULL) {
#endif
        int64_t n = ferry_tensor_numel(d);
        const double k = 0.5 * M_2_SQRTPI * M_SQRT1_2; /* 1 / sqrt(2 pi) */
        if (x->dtype == FERRY_FLOAT32) {
            float *o = ferry_tensor_data(d);
            const float *v = ferry_tensor_data(cx);
            for (int64_t i = 0; i < n; i++)
                o[i] = 0.5f * (1.0f + erff(v[i] * (float)M_SQRT1_2)) +
                       v[i] * (float)k * expf(-0.5f * v[i] * v[i]);
        } else {
            double *o = ferry_tensor_data(d);
            const double *v = ferry_tensor_data(cx);
            for (int64_t i = 0; i < n; i++)
                o[i] = 0.5 * (1.0 + erf(v[i] * M_SQRT1_2)) + v[i] * k * exp(-0.5 * v[i] * v[i]);
        }
    }
    ferry_tensor *out = d ? binary_raw(BIN_MUL, grad, d, 1.0) : NULL;
    ferry_tensor_release(cx);
    ferry_tensor_release(d);
    return out;
}
