/* The builtins' argument helpers (builtins_impl.h): binding a call's positional and keyword
   arguments to parameters as Python does, reading each as the type torch expects, and the
   builtin_max_bytes cap. Their errors read as Python's TypeError and torch's argument checks
   read, with the function's name first. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "rpc/agent_impl.h"
#include "rpc/builtins_impl.h"

/* "'a'", "'a' and 'b'", "'a', 'b' and 'c'": Python's list of missing names. */
static void name_list(const char *const *names, int n, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && len < cap; i++) {
        const char *sep = i == 0 ? "" : i == n - 1 ? (n > 2 ? ", and " : " and ") : ", ";
        int w = snprintf(buf + len, cap - len, "%s'%s'", sep, names[i]);
        len += w > 0 ? (size_t)w : 0;
    }
}

static int param_index(const ferry__bi_sig *s, const char *key)
{
    for (int i = 0; s->names[i]; i++)
        if (!strcmp(s->names[i], key))
            return i;
    return -1;
}

static ferry_status too_many(const ferry__bi_sig *s, size_t n)
{
    if (s->nreq == s->npos)
        return ferry__fail(FERRY_EINVAL, "%s() takes %d positional argument%s but %zu %s given",
                           s->fn, s->npos, s->npos == 1 ? "" : "s", n, n == 1 ? "was" : "were");
    return ferry__fail(FERRY_EINVAL, "%s() takes from %d to %d positional arguments but %zu "
                       "were given", s->fn, s->nreq, s->npos, n);
}

ferry_status ferry__bi_bind(const ferry__bi_sig *s, const ferry_value *args,
                            const ferry_value *kwargs, const ferry_value **out)
{
    size_t n = args ? ferry_list_len(args) : 0;
    int nparams = 0;
    while (s->names[nparams])
        nparams++;
    for (int i = 0; i < nparams; i++)
        out[i] = NULL;
    if (n > (size_t)s->npos)
        return too_many(s, n);
    for (size_t i = 0; i < n; i++)
        out[i] = ferry_list_get(args, i);
    for (size_t i = 0; kwargs && i < ferry_dict_len(kwargs); i++) {
        const char *key = ferry_dict_key_at(kwargs, i);
        int at = param_index(s, key);
        if (at < 0)
            return ferry__fail(FERRY_EINVAL, "%s() got an unexpected keyword argument '%s'",
                               s->fn, key);
        if (out[at])
            return ferry__fail(FERRY_EINVAL, "%s() got multiple values for argument '%s'",
                               s->fn, key);
        out[at] = ferry_dict_value_at(kwargs, i);
    }
    const char *missing[FERRY__BI_MAX_PARAMS];
    int nmissing = 0;
    for (int i = 0; i < s->nreq; i++)
        if (!out[i])
            missing[nmissing++] = s->names[i];
    if (nmissing > 0) {
        char names[256];
        name_list(missing, nmissing, names, sizeof names);
        return ferry__fail(FERRY_EINVAL, "%s() missing %d required positional argument%s: %s",
                           s->fn, nmissing, nmissing == 1 ? "" : "s", names);
    }
    return FERRY_OK;
}

const char *ferry__bi_type(const ferry_value *v)
{
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_NONE: return "NoneType";
    case FERRY_VALUE_BOOL: return "bool";
    case FERRY_VALUE_INT: return "int";
    case FERRY_VALUE_DOUBLE: return "float";
    case FERRY_VALUE_STRING: return "str";
    case FERRY_VALUE_BYTES: return "bytes";
    case FERRY_VALUE_TENSOR: return "Tensor";
    case FERRY_VALUE_LIST: return "list";
    case FERRY_VALUE_DICT: return "dict";
    case FERRY_VALUE_RREF: return "RRef";
    default: return "object";
    }
}

bool ferry__bi_is_number(const ferry_value *v)
{
    ferry_kind k = ferry_value_kind(v);
    return k == FERRY_VALUE_INT || k == FERRY_VALUE_DOUBLE || k == FERRY_VALUE_BOOL;
}

static ferry_status wrong_type(const char *fn, const char *param, const char *want,
                               const ferry_value *v)
{
    return ferry__fail(FERRY_EINVAL, "%s(): argument '%s' must be %s, not %s", fn, param, want,
                       ferry__bi_type(v));
}

ferry_status ferry__bi_tensor(const char *fn, const char *param, const ferry_value *v,
                              ferry_tensor **out)
{
    if (ferry_value_kind(v) != FERRY_VALUE_TENSOR)
        return wrong_type(fn, param, "Tensor", v);
    *out = ferry_value_as_tensor(v);
    return FERRY_OK;
}

ferry_status ferry__bi_int(const char *fn, const char *param, const ferry_value *v, int64_t dflt,
                           int64_t *out)
{
    if (!v || ferry_value_kind(v) == FERRY_VALUE_NONE) {
        *out = dflt;
        return FERRY_OK;
    }
    if (ferry_value_kind(v) != FERRY_VALUE_INT)
        return wrong_type(fn, param, "int", v);
    *out = ferry_value_as_int(v);
    return FERRY_OK;
}

ferry_status ferry__bi_bool(const char *fn, const char *param, const ferry_value *v, bool dflt,
                            bool *out)
{
    if (!v) {
        *out = dflt;
        return FERRY_OK;
    }
    if (ferry_value_kind(v) != FERRY_VALUE_BOOL)
        return wrong_type(fn, param, "bool", v);
    *out = ferry_value_as_bool(v);
    return FERRY_OK;
}

ferry_status ferry__bi_number(const char *fn, const char *param, const ferry_value *v,
                              double *out)
{
    if (!ferry__bi_is_number(v))
        return wrong_type(fn, param, "Number", v);
    *out = ferry_value_kind(v) == FERRY_VALUE_BOOL ? (double)ferry_value_as_bool(v)
                                                    : ferry_value_as_double(v);
    return FERRY_OK;
}

/* torch's other names for its dtypes (torch.float is torch.float32, ...). */
static const struct {
    const char *alias;
    ferry_dtype dtype;
} dtype_aliases[] = {
    {"float", FERRY_FLOAT32}, {"double", FERRY_FLOAT64}, {"long", FERRY_INT64},
    {"int", FERRY_INT32},     {"half", FERRY_FLOAT16},   {"uint8", FERRY_UINT8},
};

ferry_status ferry__bi_dtype(const char *fn, const ferry_value *v, ferry_dtype dflt,
                             ferry_dtype *out)
{
    *out = dflt;
    if (!v || ferry_value_kind(v) == FERRY_VALUE_NONE)
        return FERRY_OK;
    const char *s = ferry_value_as_string(v);
    if (!s)
        return ferry__fail(FERRY_EINVAL, "%s(): argument 'dtype' must be torch.dtype (a name "
                           "such as \"float32\"), not %s", fn, ferry__bi_type(v));
    const char *name = strncmp(s, "torch.", 6) ? s : s + 6;
    for (int i = 0; i < FERRY_DTYPE_COUNT; i++)
        if (!strcmp(name, ferry_dtype_name((ferry_dtype)i))) {
            *out = (ferry_dtype)i;
            return FERRY_OK;
        }
    for (size_t i = 0; i < sizeof dtype_aliases / sizeof dtype_aliases[0]; i++)
        if (!strcmp(name, dtype_aliases[i].alias)) {
            *out = dtype_aliases[i].dtype;
            return FERRY_OK;
        }
    return ferry__fail(FERRY_EINVAL, "%s(): unknown dtype '%s' (torch's names: float32, "
                       "float64, int64, int32, uint8, bool, float16, bfloat16)", fn, s);
}

ferry_status ferry__bi_int_list(const char *fn, const char *param, const ferry_value *v,
                                int64_t *out, int *n)
{
    if (ferry_value_kind(v) == FERRY_VALUE_INT) {
        out[0] = ferry_value_as_int(v);
        *n = 1;
        return FERRY_OK;
    }
    if (ferry_value_kind(v) != FERRY_VALUE_LIST)
        return wrong_type(fn, param, "tuple of ints", v);
    size_t len = ferry_list_len(v);
    if (len > FERRY_MAX_DIMS)
        return ferry__fail(FERRY_EINVAL, "%s(): argument '%s' has %zu entries, more than the "
                           "%d dims a tensor may have", fn, param, len, FERRY_MAX_DIMS);
    for (size_t i = 0; i < len; i++) {
        const ferry_value *x = ferry_list_get(v, i);
        if (ferry_value_kind(x) != FERRY_VALUE_INT)
            return ferry__fail(FERRY_EINVAL, "%s(): argument '%s' must be tuple of ints, but "
                               "found element of type %s at pos %zu", fn, param,
                               ferry__bi_type(x), i);
        out[i] = ferry_value_as_int(x);
    }
    *n = (int)len;
    return FERRY_OK;
}

ferry_status ferry__bi_sizes(const char *fn, const ferry_value *args, const ferry_value *size,
                             int64_t *out, int *n)
{
    size_t nargs = ferry_list_len(args);
    if (size && nargs > 0)
        return ferry__fail(FERRY_EINVAL, "%s() got multiple values for argument 'size'", fn);
    if (size)
        return ferry__bi_int_list(fn, "size", size, out, n);
    if (nargs == 0) /* torch.ones() is refused; torch.ones([]) is a 0-dim tensor */
        return ferry__fail(FERRY_EINVAL, "%s() missing 1 required positional argument: 'size'",
                           fn);
    if (nargs == 1 && ferry_value_kind(ferry_list_get(args, 0)) == FERRY_VALUE_LIST)
        return ferry__bi_int_list(fn, "size", ferry_list_get(args, 0), out, n);
    return ferry__bi_int_list(fn, "size", args, out, n);
}

ferry_status ferry__bi_tensor_list(const char *fn, const char *param, const ferry_value *v,
                                   ferry_tensor ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (ferry_value_kind(v) != FERRY_VALUE_LIST)
        return wrong_type(fn, param, "tuple of Tensors", v);
    size_t len = ferry_list_len(v);
    if (len == 0)
        return FERRY_OK;
    ferry_tensor **ts = ferry__malloc(len * sizeof *ts);
    if (!ts)
        return ferry__fail(FERRY_ENOMEM, "%s(): out of memory for %zu tensors", fn, len);
    for (size_t i = 0; i < len; i++) {
        const ferry_value *x = ferry_list_get(v, i);
        if (ferry_value_kind(x) != FERRY_VALUE_TENSOR) {
            ferry__free(ts);
            return ferry__fail(FERRY_EINVAL, "%s(): argument '%s' must be tuple of Tensors, but "
                               "found element of type %s at pos %zu", fn, param,
                               ferry__bi_type(x), i);
        }
        ts[i] = ferry_value_as_tensor(x);
    }
    *out = ts;
    *n = len;
    return FERRY_OK;
}

/* The result's bytes (numel x element size, saturating). A negative size is left for the op
   itself to refuse. */
static uint64_t result_bytes(int n, const int64_t *sizes, ferry_dtype dtype)
{
    uint64_t bytes = ferry_dtype_size(dtype);
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0)
            return 0;
        if (__builtin_mul_overflow(bytes, (uint64_t)sizes[i], &bytes))
            return UINT64_MAX;
    }
    return bytes;
}

ferry_status ferry__bi_check_cap(const char *fn, int n, const int64_t *sizes, ferry_dtype dtype)
{
    ferry__agent *a = ferry__agent_get();
    long long cap = a ? a->builtin_max_bytes : 0;
    ferry__agent_release(a);
    ferry_clear_error();
    uint64_t bytes = result_bytes(n, sizes, dtype);
    if (cap > 0 && bytes > (uint64_t)cap)
        return ferry__fail(FERRY_EINVAL, "%s(): the result would take %llu bytes, more than "
                           "this worker's builtin_max_bytes (%lld) allows", fn,
                           (unsigned long long)bytes, cap);
    return FERRY_OK;
}

int ferry__bi_broadcast(const ferry_tensor *a, const ferry_tensor *b, int skip, int64_t *out)
{
    int na = ferry_tensor_ndim(a) - skip, nb = ferry_tensor_ndim(b) - skip;
    na = na < 0 ? 0 : na;
    nb = nb < 0 ? 0 : nb;
    int n = na > nb ? na : nb;
    if (n > FERRY_MAX_DIMS)
        return -1;
    const int64_t *sa = ferry_tensor_sizes(a), *sb = ferry_tensor_sizes(b);
    for (int i = 0; i < n; i++) {
        int64_t x = i < n - na ? 1 : sa[i - (n - na)];
        int64_t y = i < n - nb ? 1 : sb[i - (n - nb)];
        if (x != y && x != 1 && y != 1)
            return -1;
        out[i] = x == 1 ? y : x;
    }
    return n;
}

ferry_status ferry__bi_tensor_result(ferry_tensor *t, ferry_value **result)
{
    if (!t)
        return ferry_last_status();
    *result = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return *result ? FERRY_OK : ferry_last_status();
}
