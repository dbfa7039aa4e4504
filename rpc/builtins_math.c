/* The arithmetic builtins: torch.add, sub, mul, div and pow, the elementwise unary functions
   and the matrix products, under torch's names and parameter names.

   A Python number on either side of a binary op follows torch's promotion: an int (or bool)
   behaves as a 0-dim int64 tensor, a float as a 0-dim tensor that keeps a floating tensor's
   dtype and makes an int64 one float32 (torch's default dtype). Results a caller can size at
   will (broadcasting, matmul) are refused past builtin_max_bytes before anything is made. */
#include <string.h>

#include "core/error.h"
#include "ferry/ops.h"
#include "rpc/builtins_impl.h"

typedef ferry_tensor *(*tensor_op)(ferry_tensor *, ferry_tensor *);
typedef ferry_tensor *(*unary_op)(ferry_tensor *);

typedef struct {
    const char *name;
    tensor_op op;
    bool has_alpha; /* add and sub: input + alpha * other, input - alpha * other */
    bool is_sub;
} binary_spec;

static const binary_spec ADD = {"torch.add", ferry_add, true, false};
static const binary_spec SUB = {"torch.sub", ferry_sub, true, true};
static const binary_spec MUL = {"torch.mul", ferry_mul, false, false};
static const binary_spec DIV = {"torch.div", ferry_div, false, false};

static bool is_floating(ferry_dtype d)
{
    return d == FERRY_FLOAT32 || d == FERRY_FLOAT64 || d == FERRY_FLOAT16 || d == FERRY_BFLOAT16;
}

/* A Python number as the 0-dim tensor torch's promotion treats it as, next to `other`. */
static ferry_tensor *number_tensor(const ferry_value *v, const ferry_tensor *other)
{
    if (ferry_value_kind(v) == FERRY_VALUE_DOUBLE)
        return ferry_scalar_tensor(ferry_value_as_double(v),
                                   is_floating(ferry_tensor_dtype(other)) ? FERRY_FLOAT64
                                                                          : FERRY_FLOAT32);
    int64_t i = ferry_value_kind(v) == FERRY_VALUE_INT ? ferry_value_as_int(v)
                                                       : ferry_value_as_bool(v);
    return ferry_tensor_from_data(&i, 0, NULL, FERRY_INT64);
}

/* Both operands as tensors (new references): Python numbers become 0-dim tensors. At least one
   must be a tensor. */
static ferry_status operands(const char *fn, const char *name_b, const ferry_value *va,
                             const ferry_value *vb, ferry_tensor **a, ferry_tensor **b)
{
    bool ta = ferry_value_kind(va) == FERRY_VALUE_TENSOR;
    bool tb = ferry_value_kind(vb) == FERRY_VALUE_TENSOR;
    if (!ta && !(tb && ferry__bi_is_number(va)))
        return ferry__fail(FERRY_EINVAL, "%s(): argument 'input' must be Tensor, not %s", fn,
                           ferry__bi_type(va));
    if (!tb && !ferry__bi_is_number(vb))
        return ferry__fail(FERRY_EINVAL, "%s(): argument '%s' must be Tensor or Number, not %s",
                           fn, name_b, ferry__bi_type(vb));
    *a = ta ? ferry_tensor_retain(ferry_value_as_tensor(va))
            : number_tensor(va, ferry_value_as_tensor(vb));
    *b = tb ? ferry_tensor_retain(ferry_value_as_tensor(vb))
            : (*a ? number_tensor(vb, *a) : NULL);
    if (*a && *b)
        return FERRY_OK;
    ferry_tensor_release(*a);
    ferry_tensor_release(*b);
    return ferry_last_status();
}

static ferry_status check_binary_cap(const char *fn, ferry_tensor *a, ferry_tensor *b)
{
    int64_t shape[FERRY_MAX_DIMS];
    int n = ferry__bi_broadcast(a, b, 0, shape);
    ferry_dtype da = ferry_tensor_dtype(a), db = ferry_tensor_dtype(b);
    ferry_dtype dt = ferry_dtype_size(da) >= ferry_dtype_size(db) ? da : db;
    return n < 0 ? FERRY_OK : ferry__bi_check_cap(fn, n, shape, dt);
}

static ferry_status binary_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    const binary_spec *s = user;
    static const char *const plain[] = {"input", "other", NULL};
    static const char *const with_alpha[] = {"input", "other", "alpha", NULL};
    static const char *const with_rounding[] = {"input", "other", "rounding_mode", NULL};
    bool is_div = s == &DIV;
    ferry__bi_sig sig = {s->name, s->has_alpha ? with_alpha : is_div ? with_rounding : plain, 2, 2};
    const ferry_value *v[3];
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK && is_div && v[2] && ferry_value_kind(v[2]) != FERRY_VALUE_NONE) {
        const char *mode = ferry_value_as_string(v[2]);
        rc = ferry__fail(FERRY_EINVAL, "torch.div(): ferry divides truly only "
                         "(rounding_mode=None), not rounding_mode=%s%s%s", mode ? "'" : "",
                         mode ? mode : ferry__bi_type(v[2]), mode ? "'" : "");
    }
    double alpha = 1.0;
    if (rc == FERRY_OK && s->has_alpha && v[2])
        rc = ferry__bi_number(s->name, "alpha", v[2], &alpha);
    ferry_tensor *a = NULL, *b = NULL;
    if (rc == FERRY_OK)
        rc = operands(s->name, "other", v[0], v[1], &a, &b);
    if (rc != FERRY_OK)
        return rc;
    if (s->has_alpha && ferry_value_kind(v[2]) == FERRY_VALUE_DOUBLE &&
        !is_floating(ferry_tensor_dtype(a)) && !is_floating(ferry_tensor_dtype(b)))
        rc = ferry__fail(FERRY_EINVAL, "%s(): For integral input tensors, argument alpha must "
                         "not be a floating point number.", s->name);
    if (rc == FERRY_OK)
        rc = check_binary_cap(s->name, a, b);
    ferry_tensor *r = NULL;
    if (rc == FERRY_OK && s->has_alpha && v[2])
        r = ferry_add_alpha(a, b, s->is_sub ? -alpha : alpha);
    else if (rc == FERRY_OK)
        r = s->op(a, b);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(r, result);
}

/* An int64 tensor to a non-negative int power stays int64 (torch): square and multiply. */
static ferry_tensor *int_pow(ferry_tensor *t, int64_t e)
{
    ferry_tensor *acc = ferry_ones(ferry_tensor_ndim(t), ferry_tensor_sizes(t), FERRY_INT64);
    ferry_tensor *base = ferry_tensor_retain(t);
    bool ok = acc && base;
    while (ok && e > 0) {
        if (e & 1) {
            ferry_tensor *next = ferry_mul(acc, base);
            ferry_tensor_release(acc);
            ok = (acc = next) != NULL;
        }
        e >>= 1;
        if (ok && e > 0) {
            ferry_tensor *sq = ferry_mul(base, base);
            ferry_tensor_release(base);
            ok = (base = sq) != NULL;
        }
    }
    ferry_tensor_release(base);
    if (!ok) {
        ferry_tensor_release(acc);
        return NULL;
    }
    return acc;
}

static ferry_status pow_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "exponent", NULL};
    ferry__bi_sig sig = {"torch.pow", names, 2, 2};
    const ferry_value *v[2];
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    ferry_tensor *t = NULL;
    if (rc == FERRY_OK)
        rc = ferry__bi_tensor("torch.pow", "input", v[0], &t);
    if (rc == FERRY_OK && !ferry__bi_is_number(v[1]))
        rc = ferry__fail(FERRY_EINVAL, "torch.pow(): argument 'exponent' must be Number, not %s "
                         "(ferry raises tensors to Number powers only)", ferry__bi_type(v[1]));
    if (rc != FERRY_OK)
        return rc;
    if (ferry_tensor_dtype(t) == FERRY_INT64 && ferry_value_kind(v[1]) != FERRY_VALUE_DOUBLE) {
        int64_t e = ferry_value_kind(v[1]) == FERRY_VALUE_INT ? ferry_value_as_int(v[1])
                                                              : ferry_value_as_bool(v[1]);
        if (e < 0)
            return ferry__fail(FERRY_EINVAL, "torch.pow(): Integers to negative integer powers "
                               "are not allowed.");
        return ferry__bi_tensor_result(int_pow(t, e), result);
    }
    double e;
    ferry__bi_number("torch.pow", "exponent", v[1], &e);
    return ferry__bi_tensor_result(ferry_pow(t, e), result);
}

typedef struct {
    const char *name;
    unary_op op;
} unary_spec;

static const unary_spec NEG = {"torch.neg", ferry_neg}, ABS = {"torch.abs", ferry_abs},
                        RELU = {"torch.relu", ferry_relu}, EXP = {"torch.exp", ferry_exp},
                        LOG = {"torch.log", ferry_log}, SQRT = {"torch.sqrt", ferry_sqrt},
                        SIGMOID = {"torch.sigmoid", ferry_sigmoid},
                        TANH = {"torch.tanh", ferry_tanh};

static ferry_status unary_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    const unary_spec *s = user;
    static const char *const names[] = {"input", NULL};
    ferry__bi_sig sig = {s->name, names, 1, 1};
    const ferry_value *v[1];
    ferry_tensor *t = NULL;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = ferry__bi_tensor(s->name, "input", v[0], &t);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(s->op(t), result);
}

/* torch.nn.functional.gelu(input, approximate='none'): the exact erf form. */
static ferry_status gelu_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "approximate", NULL};
    const char *fn = "torch.nn.functional.gelu";
    ferry__bi_sig sig = {fn, names, 2, 1};
    const ferry_value *v[2];
    ferry_tensor *t = NULL;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = ferry__bi_tensor(fn, "input", v[0], &t);
    const char *approx = v[1] ? ferry_value_as_string(v[1]) : "none";
    if (rc == FERRY_OK && (!approx || strcmp(approx, "none")))
        rc = ferry__fail(FERRY_EINVAL, "%s(): approximate must be 'none' (ferry computes the "
                         "exact erf form only), got %s", fn, approx ? approx : ferry__bi_type(v[1]));
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(ferry_gelu(t), result);
}

/* matmul (user NULL) and mm (user non-NULL: both operands must be 2-D). */
static ferry_status matmul_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    bool is_mm = user != NULL;
    const char *fn = is_mm ? "torch.mm" : "torch.matmul";
    static const char *const mm_names[] = {"input", "mat2", NULL};
    static const char *const matmul_names[] = {"input", "other", NULL};
    ferry__bi_sig sig = {fn, is_mm ? mm_names : matmul_names, 2, 2};
    const ferry_value *v[2];
    ferry_tensor *a = NULL, *b = NULL;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = ferry__bi_tensor(fn, "input", v[0], &a);
    if (rc == FERRY_OK)
        rc = ferry__bi_tensor(fn, sig.names[1], v[1], &b);
    if (rc == FERRY_OK && is_mm && (ferry_tensor_ndim(a) != 2 || ferry_tensor_ndim(b) != 2))
        rc = ferry__fail(FERRY_EINVAL, "torch.mm(): %s must be a matrix",
                         ferry_tensor_ndim(a) != 2 ? "self" : "mat2");
    if (rc != FERRY_OK)
        return rc;
    /* (batch..., n, k) @ (batch..., k, m): the broadcast batch, then n x m. */
    int na = ferry_tensor_ndim(a), nb = ferry_tensor_ndim(b);
    int64_t shape[FERRY_MAX_DIMS + 2];
    int n = ferry__bi_broadcast(a, b, 2, shape);
    if (n >= 0 && na >= 1 && nb >= 1) {
        if (na >= 2)
            shape[n++] = ferry_tensor_sizes(a)[na - 2];
        if (nb >= 2)
            shape[n++] = ferry_tensor_sizes(b)[nb - 1];
        if ((rc = ferry__bi_check_cap(fn, n, shape, ferry_tensor_dtype(a))) != FERRY_OK)
            return rc;
    }
    return ferry__bi_tensor_result(ferry_matmul(a, b), result);
}

const ferry__builtin ferry__builtins_math[] = {
    {{"torch.add", "torch.add(input, other, *, alpha=1)",
      "input + alpha * other, broadcast; either operand may be a Python number"},
     binary_fn, &ADD, false},
    {{"torch.sub", "torch.sub(input, other, *, alpha=1)",
      "input - alpha * other, broadcast; either operand may be a Python number"},
     binary_fn, &SUB, false},
    {{"torch.mul", "torch.mul(input, other)",
      "input * other, broadcast; either operand may be a Python number"},
     binary_fn, &MUL, false},
    {{"torch.div", "torch.div(input, other, *, rounding_mode=None)",
      "true division input / other, broadcast (int64 / int64 gives float32)"},
     binary_fn, &DIV, false},
    {{"torch.pow", "torch.pow(input, exponent)",
      "input ** exponent for a Number exponent (int64 ** int stays int64)"},
     pow_fn, NULL, false},
    {{"torch.neg", "torch.neg(input)", "-input"}, unary_fn, &NEG, false},
    {{"torch.abs", "torch.abs(input)", "|input|"}, unary_fn, &ABS, false},
    {{"torch.relu", "torch.relu(input)", "max(input, 0)"}, unary_fn, &RELU, false},
    {{"torch.exp", "torch.exp(input)", "e ** input (int64 gives float32)"}, unary_fn, &EXP, false},
    {{"torch.log", "torch.log(input)", "natural log (int64 gives float32)"}, unary_fn, &LOG, false},
    {{"torch.sqrt", "torch.sqrt(input)", "square root (int64 gives float32)"}, unary_fn, &SQRT,
     false},
    {{"torch.sigmoid", "torch.sigmoid(input)", "1 / (1 + e ** -input)"}, unary_fn, &SIGMOID,
     false},
    {{"torch.tanh", "torch.tanh(input)", "hyperbolic tangent"}, unary_fn, &TANH, false},
    {{"torch.nn.functional.gelu", "torch.nn.functional.gelu(input, approximate='none')",
      "x * Phi(x), the exact erf form"},
     gelu_fn, NULL, false},
    {{"torch.matmul", "torch.matmul(input, other)",
      "matrix product: dot, matrix-vector or batched with broadcast batch dims"},
     matmul_fn, NULL, false},
    {{"torch.mm", "torch.mm(input, mat2)", "product of two matrices (2-D only)"}, matmul_fn,
     (void *)1, false},
};
const size_t ferry__builtins_math_len = sizeof ferry__builtins_math / sizeof ferry__builtins_math[0];
