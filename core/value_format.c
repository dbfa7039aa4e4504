/* ferry_value_format: a value written the way Python's repr writes the IValue torch would hand
   back (None, True, 1, 0.5, 'text', b'\x00', [1, 2], {'k': v}), tensors as ferry_tensor_format
   writes them, through the kind ops of the module that owns each object kind. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/value_impl.h"

/* Output so far: bytes go to buf while they fit, `len` counts all of them (snprintf's rule). */
typedef struct {
    char *buf;
    size_t cap, len;
} out_t;

static void put_n(out_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, o->len++)
        if (o->len + 1 < o->cap)
            o->buf[o->len] = s[i];
}

static void put(out_t *o, const char *s)
{
    put_n(o, s, strlen(s));
}

static void putf(out_t *o, const char *fmt, ...) FERRY_PRINTF(2, 3);
static void putf(out_t *o, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put_n(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Python's float repr: the fewest digits that read back as the same double, in positional
   notation for decimal exponents -4..15 and scientific otherwise ("1e+16", "1.5e-05"). */
static void put_double(out_t *o, double d)
{
    if (isnan(d)) {
        put(o, "nan");
        return;
    }
    if (isinf(d)) {
        put(o, d < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int prec = 0; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, d);
        if (strtod(e, NULL) == d)
            break;
    }
    /* e is [-]D[.DDD]e[+-]XX: split it into sign, digits and exponent. */
    const char *p = e;
    bool neg = *p == '-';
    if (neg)
        p++;
    char digits[24];
    size_t nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.' && nd < sizeof digits - 1)
            digits[nd++] = *p;
    digits[nd] = '\0';
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') /* "%.0e" of 100 is "1e+02": no trailing zeros */
        digits[--nd] = '\0';
    if (neg)
        put(o, "-");
    if (exp10 >= 16 || exp10 < -4) {
        put_n(o, digits, 1);
        if (nd > 1) {
            put(o, ".");
            put_n(o, digits + 1, nd - 1);
        }
        putf(o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        put(o, "0.");
        for (int i = 0; i < -exp10 - 1; i++)
            put(o, "0");
        put_n(o, digits, nd);
    } else {
        size_t whole = (size_t)exp10 + 1;
        put_n(o, digits, nd < whole ? nd : whole);
        for (size_t i = nd; i < whole; i++)
            put(o, "0");
        put(o, ".");
        if (nd > whole)
            put_n(o, digits + whole, nd - whole);
        else
            put(o, "0");
    }
}

/* Python's quoting: single quotes unless the text holds one and no double quote; control
   characters (and, in bytes, everything outside printable ASCII) as escapes. */
static void put_quoted(out_t *o, const unsigned char *s, size_t n, bool is_bytes)
{
    bool has_single = memchr(s, '\'', n) != NULL, has_double = memchr(s, '"', n) != NULL;
    char q = has_single && !has_double ? '"' : '\'';
    if (is_bytes)
        put(o, "b");
    put_n(o, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '\\' || c == (unsigned char)q) {
            char esc[2] = {'\\', (char)c};
            put_n(o, esc, 2);
        } else if (c == '\n') {
            put(o, "\\n");
        } else if (c == '\r') {
            put(o, "\\r");
        } else if (c == '\t') {
            put(o, "\\t");
        } else if (c < 0x20 || c == 0x7f || (is_bytes && c >= 0x80)) {
            putf(o, "\\x%02x", c);
        } else {
            put_n(o, (const char *)&c, 1);
        }
    }
    put_n(o, &q, 1);
}

static void put_value(out_t *o, const ferry_value *v);

static void put_object(out_t *o, const ferry_value *v)
{
    const ferry__value_kind_ops *ops = ferry__value_kind_ops_of(v->kind);
    if (ops && ops->format) {
        size_t room = o->len + 1 < o->cap ? o->cap - o->len : 0;
        size_t n = ops->format(v->u.obj, room ? o->buf + o->len : NULL, room);
        /* The object wrote its own bytes (NUL-terminated within room); keep the count. */
        o->len += n;
        return;
    }
    char phrase[160];
    ferry__value_describe(v, phrase, sizeof phrase);
    put(o, "<");
    put(o, phrase);
    put(o, ">");
}

static void put_value(out_t *o, const ferry_value *v)
{
    if (!v) {
        put(o, "NULL");
        return;
    }
    switch (v->kind) {
    case FERRY_VALUE_NONE:
        put(o, "None");
        break;
    case FERRY_VALUE_BOOL:
        put(o, v->u.b ? "True" : "False");
        break;
    case FERRY_VALUE_INT:
        putf(o, "%lld", (long long)v->u.i);
        break;
    case FERRY_VALUE_DOUBLE:
        put_double(o, v->u.d);
        break;
    case FERRY_VALUE_STRING:
    case FERRY_VALUE_BYTES:
        put_quoted(o, (const unsigned char *)v->u.str.data, v->u.str.len,
                   v->kind == FERRY_VALUE_BYTES);
        break;
    case FERRY_VALUE_LIST:
        put(o, "[");
        for (size_t i = 0; i < v->u.list.len; i++) {
            if (i)
                put(o, ", ");
            put_value(o, v->u.list.items[i]);
        }
        put(o, "]");
        break;
    case FERRY_VALUE_DICT:
        put(o, "{");
        for (size_t i = 0; i < v->u.dict.len; i++) {
            if (i)
                put(o, ", ");
            const char *k = v->u.dict.keys[i];
            put_quoted(o, (const unsigned char *)k, strlen(k), false);
            put(o, ": ");
            put_value(o, v->u.dict.values[i]);
        }
        put(o, "}");
        break;
    default:
        put_object(o, v);
        break;
    }
}

size_t ferry_value_format(const ferry_value *v, char *buf, size_t cap)
{
    out_t o = {.buf = buf, .cap = buf ? cap : 0, .len = 0};
    put_value(&o, v);
    if (o.cap)
        o.buf[o.len < o.cap ? o.len : o.cap - 1] = '\0';
    return o.len;
}
