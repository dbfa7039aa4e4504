/* Comparing and printing tensors: torch.equal, torch.allclose and a repr close to torch's
   ("tensor([1., 2.])", "tensor([[1, 2],\n        [3, 4]], dtype=torch.int32)"). Both comparisons
   read from contiguous forms of their operands, so the element loops are flat; a non-contiguous
   operand costs one copy. The printer follows torch's choices of number style: integer-valued
   floats print as "1.", others with four decimals, and a wide range switches to scientific
   notation; large tensors are summarized with "...". */
#include "tensor/ops_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

#define SUMMARIZE_OVER 1000 /* torch's print threshold */
#define EDGE_ITEMS 3

static bool is_floating(ferry_dtype dtype)
{
    return dtype == FERRY_FLOAT32 || dtype == FERRY_FLOAT64 || dtype == FERRY_FLOAT16 ||
           dtype == FERRY_BFLOAT16;
}

/* A contiguous host copy of t (a new reference; t itself when it is one already). */
static ferry_tensor *host_contiguous(const ferry_tensor *t)
{
    ferry_tensor *c = ferry_tensor_contiguous((ferry_tensor *)t);
    if (c == NULL || c->device.type == FERRY_CPU)
        return c;
    ferry_tensor *h = ferry_tensor_to(c, FERRY_DEVICE_CPU);
    ferry_tensor_release(c);
    return h;
}

/* Contiguous host forms of a and b (new references) or false with the error recorded. Tensors
   on devices are compared by value, wherever they are. */
static bool contiguous_pair(const ferry_tensor *a, const ferry_tensor *b, ferry_tensor **ca,
                            ferry_tensor **cb)
{
    *ca = host_contiguous(a);
    *cb = *ca ? host_contiguous(b) : NULL;
    if (*cb)
        return true;
    ferry_tensor_release(*ca);
    return false;
}

bool ferry_tensor_equal(const ferry_tensor *a, const ferry_tensor *b)
{
    if (!a || !b || a->dtype != b->dtype || !ferry__same_shape(a, b))
        return false;
    ferry_tensor *ca, *cb;
    if (!contiguous_pair(a, b, &ca, &cb))
        return false;
    bool eq = true;
    const char *pa = ferry_tensor_data(ca), *pb = ferry_tensor_data(cb);
    int64_t n = ferry_tensor_numel(ca);
    size_t elem = ferry_dtype_size(a->dtype);
    if (!is_floating(a->dtype) && a->dtype != FERRY_BOOL) {
        eq = memcmp(pa, pb, (size_t)n * elem) == 0; /* integers: equal values, equal bytes */
    } else {
        /* floats compare by value (NaN != NaN, -0 == 0); bools by truth, whatever the byte */
        for (int64_t i = 0; i < n && eq; i++)
            eq = ferry__load_as_double(pa + (size_t)i * elem, a->dtype) ==
                 ferry__load_as_double(pb + (size_t)i * elem, b->dtype);
    }
    ferry_tensor_release(ca);
    ferry_tensor_release(cb);
    return eq;
}

static bool close_enough(double x, double y, double rtol, double atol)
{
    if (x == y) /* also equal infinities */
        return true;
    if (!isfinite(x) || !isfinite(y))
        return false; /* NaN, or an infinity against anything else */
    return fabs(x - y) <= atol + rtol * fabs(y);
}

bool ferry_allclose(const ferry_tensor *a, const ferry_tensor *b, double rtol, double atol)
{
    if (!a || !b || !ferry__same_shape(a, b))
        return false;
    ferry_tensor *ca, *cb;
    if (!contiguous_pair(a, b, &ca, &cb))
        return false;
    const char *pa = ferry_tensor_data(ca), *pb = ferry_tensor_data(cb);
    size_t ea = ferry_dtype_size(a->dtype), eb = ferry_dtype_size(b->dtype);
    int64_t n = ferry_tensor_numel(ca);
    bool close = true;
    for (int64_t i = 0; i < n && close; i++)
        close = close_enough(ferry__load_as_double(pa + (size_t)i * ea, a->dtype),
                             ferry__load_as_double(pb + (size_t)i * eb, b->dtype), rtol, atol);
    ferry_tensor_release(ca);
    ferry_tensor_release(cb);
    return close;
}

/* An snprintf-like sink: counts everything, stores what fits. */
typedef struct {
    char *buf;
    size_t cap, len;
} sink;

static void put(sink *s, const char *fmt, ...) FERRY_PRINTF(2, 3);
static void put(sink *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = s->len < s->cap ? s->cap - s->len : 0;
    int n = vsnprintf(room ? s->buf + s->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        s->len += (size_t)n;
}

typedef enum { STYLE_INT, STYLE_BOOL, STYLE_FLOAT_INT, STYLE_FIXED, STYLE_SCI } num_style;

typedef struct {
    const ferry_tensor *t;
    num_style style;
    int width;
    bool summarize;
} printer;

/* Formats one value in the chosen style, unpadded. */
static int format_value(const printer *p, double v, char *out, size_t cap)
{
    if (p->style == STYLE_BOOL)
        return snprintf(out, cap, "%s", v != 0 ? "True" : "False");
    if (p->style == STYLE_INT)
        return snprintf(out, cap, "%.0f", v);
    if (isnan(v))
        return snprintf(out, cap, "nan");
    if (isinf(v))
        return snprintf(out, cap, "%sinf", v < 0 ? "-" : "");
    if (p->style == STYLE_FLOAT_INT)
        return snprintf(out, cap, "%.0f.", v);
    if (p->style == STYLE_FIXED)
        return snprintf(out, cap, "%.4f", v);
    return snprintf(out, cap, "%.4e", v);
}

/* Visits the printed elements (the edges only when summarizing) for the style scan. */
static bool printed_index(const printer *p, int64_t i)
{
    if (!p->summarize)
        return true;
    const ferry_tensor *t = p->t;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t k = i % t->sizes[d];
        if (t->sizes[d] > 2 * EDGE_ITEMS && k >= EDGE_ITEMS && k < t->sizes[d] - EDGE_ITEMS)
            return false;
        i /= t->sizes[d];
    }
    return true;
}

/* Picks torch's number style from the finite printed values, then the common width. */
static void choose_style(printer *p)
{
    const ferry_tensor *t = p->t;
    int64_t n = ferry_tensor_numel(t);
    double max_abs = 0, min_abs = INFINITY;
    bool all_int = true, any_finite = false;
    p->style = t->dtype == FERRY_BOOL ? STYLE_BOOL : is_floating(t->dtype) ? STYLE_FIXED : STYLE_INT;
    for (int64_t i = 0; i < n && p->style == STYLE_FIXED; i++) {
        double v = ferry_tensor_item_at(t, i);
        if (!printed_index(p, i) || !isfinite(v))
            continue;
        any_finite = true;
        all_int = all_int && v == nearbyint(v);
        max_abs = fmax(max_abs, fabs(v));
        if (v != 0)
            min_abs = fmin(min_abs, fabs(v));
    }
    if (p->style == STYLE_FIXED && any_finite) {
        if (all_int)
            p->style = max_abs > 1e8 ? STYLE_SCI : STYLE_FLOAT_INT;
        else if (max_abs > 1e8 || (min_abs < 1e-4) ||
                 (isfinite(min_abs) && max_abs / min_abs > 1000.0))
            p->style = STYLE_SCI;
    }
    p->width = 1;
    char tmp[64];
    for (int64_t i = 0; i < n; i++)
        if (printed_index(p, i)) {
            int w = format_value(p, ferry_tensor_item_at(t, i), tmp, sizeof tmp);
            p->width = w > p->width ? w : p->width;
        }
}

static void put_value(sink *s, const printer *p, int64_t flat)
{
    char tmp[64];
    format_value(p, ferry_tensor_item_at(p->t, flat), tmp, sizeof tmp);
    put(s, "%*s", p->width, tmp);
}

/* Prints dimension `d` of the block starting at row-major index `flat`; `indent` is the column
   of this dimension's opening bracket. */
static void put_dim(sink *s, const printer *p, int d, int64_t flat, int indent)
{
    const ferry_tensor *t = p->t;
    int64_t size = t->sizes[d], block = 1;
    for (int k = d + 1; k < t->ndim; k++)
        block *= t->sizes[k];
    bool cut = p->summarize && size > 2 * EDGE_ITEMS;
    put(s, "[");
    for (int64_t i = 0; i < size; i++) {
        if (cut && i == EDGE_ITEMS) {
            i = size - EDGE_ITEMS; /* print "..." in place of the middle */
            if (d == t->ndim - 1)
                put(s, "..., ");
            else
                put(s, "...,\n%*s", indent + 1, "");
        }
        if (d == t->ndim - 1)
            put_value(s, p, flat + i);
        else
            put_dim(s, p, d + 1, flat + i * block, indent + 1);
        if (i + 1 < size) {
            put(s, ",");
            if (d == t->ndim - 1)
                put(s, " ");
            else /* blank lines between blocks of 3 or more dims, as torch */
                put(s, "%.*s%*s", t->ndim - d - 1, "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
                    indent + 1, "");
        }
    }
    put(s, "]");
}

/* Suffixes torch adds: the dtype when it is not the default for its kind, the size when
   the tensor is empty but not 1-d. */
static void put_suffix(sink *s, const ferry_tensor *t)
{
    int64_t n = ferry_tensor_numel(t);
    if (n == 0 && t->ndim != 1) {
        put(s, ", size=(");
        for (int i = 0; i < t->ndim; i++)
            put(s, "%s%lld", i ? ", " : "", (long long)t->sizes[i]);
        put(s, t->ndim == 1 ? ",)" : ")");
    }
    bool default_dtype = t->dtype == FERRY_FLOAT32 || t->dtype == FERRY_BOOL ||
                         (t->dtype == FERRY_INT64 && n > 0);
    if (!default_dtype)
        put(s, ", dtype=torch.%s", ferry_dtype_name(t->dtype));
}

size_t ferry_tensor_format(const ferry_tensor *t, char *buf, size_t cap)
{
    sink s = {buf, cap, 0};
    if (cap > 0)
        buf[0] = '\0';
    if (!t) {
        put(&s, "tensor(NULL)");
        return s.len;
    }
    printer p = {t, STYLE_INT, 1, ferry_tensor_numel(t) > SUMMARIZE_OVER};
    put(&s, "tensor(");
    if (ferry_tensor_numel(t) == 0) {
        put(&s, "[]");
    } else {
        choose_style(&p);
        if (t->ndim == 0) {
            p.width = 0;
            put_value(&s, &p, 0);
        } else {
            put_dim(&s, &p, 0, 0, (int)strlen("tensor("));
        }
    }
    put_suffix(&s, t);
    put(&s, ")");
    return s.len;
}
