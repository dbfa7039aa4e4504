/* Accessors: read a value of the kind the caller expects. Two forms share one set of rules:
   ferry_value_as_* return the content (0/false/NULL on a mismatch) and ferry_value_get_* return
   a status and write the content through `out`. Both record the failure as the thread's last
   error, and both set the last status to FERRY_OK on success (one thread-local store), so that
   a real 0 and a mismatch can be told apart after the fact too. Results are borrowed. */
#include "core/value_impl.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

/* What each kind is called in "expected X, got Y" (an article where English wants one). */
static const char *kind_phrase(ferry_kind k)
{
    static const char *const phrases[] = {
        [FERRY_VALUE_NONE] = "None",       [FERRY_VALUE_BOOL] = "a bool",
        [FERRY_VALUE_INT] = "an int",      [FERRY_VALUE_DOUBLE] = "a double",
        [FERRY_VALUE_STRING] = "a string", [FERRY_VALUE_BYTES] = "bytes",
        [FERRY_VALUE_TENSOR] = "a tensor", [FERRY_VALUE_LIST] = "a list",
        [FERRY_VALUE_DICT] = "a dict",     [FERRY_VALUE_RREF] = "an rref",
        [FERRY_VALUE_OBJECT] = "an object",
    };
    return (unsigned)k < sizeof phrases / sizeof phrases[0] ? phrases[k] : NULL;
}

/* The phrase for what was found: an object kind's own description when its module gives one
   ("an object of class 'Net'"), else the kind's phrase ("a kind" for a kind without one). */
static void found_phrase(const ferry_value *v, char *buf, size_t cap)
{
    const ferry__value_kind_ops *ops = v ? ferry__value_kind_ops_of(v->kind) : NULL;
    if (!v)
        snprintf(buf, cap, "NULL");
    else if (ops && ops->describe)
        ferry__value_describe(v, buf, cap);
    else if (kind_phrase(v->kind))
        snprintf(buf, cap, "%s", kind_phrase(v->kind));
    else
        snprintf(buf, cap, "a %s", ferry_kind_name(v->kind));
}

/* Records FERRY_ETYPE: `fn` wanted `expected` and found v. Off the fast path. */
static __attribute__((noinline, cold)) ferry_status mismatch(const ferry_value *v, const char *fn,
                                                             const char *expected)
{
    char found[192];
    found_phrase(v, found, sizeof found);
    return ferry__fail(FERRY_ETYPE, "%s: expected %s, got %s", fn, expected, found);
}

static __attribute__((noinline, cold)) ferry_status null_out(const char *fn)
{
    return ferry__fail(FERRY_EINVAL, "%s: NULL out", fn);
}

static __attribute__((noinline, cold)) ferry_status past_end(const char *fn, const char *what,
                                                             size_t i, size_t len)
{
    return ferry__fail(FERRY_EINVAL, "%s: %s index %zu out of range (length %zu)", fn, what, i,
                       len);
}

/* True when v has kind k (the last status is then FERRY_OK); else records the mismatch. */
static inline bool want(const ferry_value *v, ferry_kind k, const char *fn)
{
    if (v && v->kind == k) {
        ferry__status_clear();
        return true;
    }
    mismatch(v, fn, kind_phrase(k));
    return false;
}

/* A double accessor takes an int too, and converts it. */
static inline bool want_number(const ferry_value *v, const char *fn)
{
    if (v && (v->kind == FERRY_VALUE_DOUBLE || v->kind == FERRY_VALUE_INT)) {
        ferry__status_clear();
        return true;
    }
    mismatch(v, fn, "a double or an int");
    return false;
}

static inline double number_of(const ferry_value *v)
{
    return v->kind == FERRY_VALUE_INT ? (double)v->u.i : v->u.d;
}

/* Dict entry `key` of a dict (checked by the caller), or NULL with FERRY_EINVAL. */
static ferry_value *dict_entry(const ferry_value *dict, const char *key, const char *fn)
{
    if (!key)
        return ferry__fail_null(FERRY_EINVAL, "%s: NULL key", fn);
    size_t at = ferry__dict_find(dict, key, strlen(key));
    if (at == SIZE_MAX)
        return ferry__fail_null(FERRY_EINVAL, "%s: key '%s' not in dict", fn, key);
    return dict->u.dict.values[at];
}

/* ---- content or 0/NULL ---- */

bool ferry_value_as_bool(const ferry_value *v)
{
    return want(v, FERRY_VALUE_BOOL, "ferry_value_as_bool") ? v->u.b : false;
}

int64_t ferry_value_as_int(const ferry_value *v)
{
    return want(v, FERRY_VALUE_INT, "ferry_value_as_int") ? v->u.i : 0;
}

double ferry_value_as_double(const ferry_value *v)
{
    return want_number(v, "ferry_value_as_double") ? number_of(v) : 0.0;
}

const char *ferry_value_as_string(const ferry_value *v)
{
    return want(v, FERRY_VALUE_STRING, "ferry_value_as_string") ? v->u.str.data : NULL;
}

size_t ferry_value_len(const ferry_value *v)
{
    if (v && (v->kind == FERRY_VALUE_STRING || v->kind == FERRY_VALUE_BYTES)) {
        ferry__status_clear();
        return v->u.str.len;
    }
    mismatch(v, "ferry_value_len", "a string or bytes");
    return 0;
}

const void *ferry_value_as_bytes(const ferry_value *v, size_t *len)
{
    bool ok = want(v, FERRY_VALUE_BYTES, "ferry_value_as_bytes");
    if (len)
        *len = ok ? v->u.str.len : 0;
    return ok ? v->u.str.data : NULL;
}

ferry_tensor *ferry_value_as_tensor(const ferry_value *v)
{
    return want(v, FERRY_VALUE_TENSOR, "ferry_value_as_tensor") ? v->u.obj : NULL;
}

ferry_rref *ferry_value_as_rref(const ferry_value *v)
{
    return want(v, FERRY_VALUE_RREF, "ferry_value_as_rref") ? v->u.obj : NULL;
}

size_t ferry_list_len(const ferry_value *list)
{
    return want(list, FERRY_VALUE_LIST, "ferry_list_len") ? list->u.list.len : 0;
}

ferry_value *ferry_list_get(const ferry_value *list, size_t i)
{
    if (!want(list, FERRY_VALUE_LIST, "ferry_list_get"))
        return NULL;
    if (i >= list->u.list.len) {
        past_end("ferry_list_get", "list", i, list->u.list.len);
        return NULL;
    }
    return list->u.list.items[i];
}

size_t ferry_dict_len(const ferry_value *dict)
{
    return want(dict, FERRY_VALUE_DICT, "ferry_dict_len") ? dict->u.dict.len : 0;
}

ferry_value *ferry_dict_get(const ferry_value *dict, const char *key)
{
    if (!want(dict, FERRY_VALUE_DICT, "ferry_dict_get"))
        return NULL;
    return dict_entry(dict, key, "ferry_dict_get");
}

const char *ferry_dict_key_at(const ferry_value *dict, size_t i)
{
    if (!want(dict, FERRY_VALUE_DICT, "ferry_dict_key_at"))
        return NULL;
    if (i >= dict->u.dict.len) {
        past_end("ferry_dict_key_at", "dict", i, dict->u.dict.len);
        return NULL;
    }
    return dict->u.dict.keys[i];
}

ferry_value *ferry_dict_value_at(const ferry_value *dict, size_t i)
{
    if (!want(dict, FERRY_VALUE_DICT, "ferry_dict_value_at"))
        return NULL;
    if (i >= dict->u.dict.len) {
        past_end("ferry_dict_value_at", "dict", i, dict->u.dict.len);
        return NULL;
    }
    return dict->u.dict.values[i];
}

/* ---- status and content through `out` (left alone on failure) ---- */

ferry_status ferry_value_get_bool(const ferry_value *v, bool *out)
{
    if (!out)
        return null_out("ferry_value_get_bool");
    if (!want(v, FERRY_VALUE_BOOL, "ferry_value_get_bool"))
        return FERRY_ETYPE;
    *out = v->u.b;
    return FERRY_OK;
}

ferry_status ferry_value_get_int(const ferry_value *v, int64_t *out)
{
    if (!out)
        return null_out("ferry_value_get_int");
    if (!want(v, FERRY_VALUE_INT, "ferry_value_get_int"))
        return FERRY_ETYPE;
    *out = v->u.i;
    return FERRY_OK;
}

ferry_status ferry_value_get_double(const ferry_value *v, double *out)
{
    if (!out)
        return null_out("ferry_value_get_double");
    if (!want_number(v, "ferry_value_get_double"))
        return FERRY_ETYPE;
    *out = number_of(v);
    return FERRY_OK;
}

ferry_status ferry_value_get_string(const ferry_value *v, const char **out)
{
    if (!out)
        return null_out("ferry_value_get_string");
    if (!want(v, FERRY_VALUE_STRING, "ferry_value_get_string"))
        return FERRY_ETYPE;
    *out = v->u.str.data;
    return FERRY_OK;
}

ferry_status ferry_value_get_bytes(const ferry_value *v, const void **out, size_t *len)
{
    if (!out)
        return null_out("ferry_value_get_bytes");
    if (!want(v, FERRY_VALUE_BYTES, "ferry_value_get_bytes"))
        return FERRY_ETYPE;
    *out = v->u.str.data;
    if (len)
        *len = v->u.str.len;
    return FERRY_OK;
}

ferry_status ferry_value_get_tensor(const ferry_value *v, ferry_tensor **out)
{
    if (!out)
        return null_out("ferry_value_get_tensor");
    if (!want(v, FERRY_VALUE_TENSOR, "ferry_value_get_tensor"))
        return FERRY_ETYPE;
    *out = v->u.tensor;
    return FERRY_OK;
}

ferry_status ferry_value_get_rref(const ferry_value *v, ferry_rref **out)
{
    if (!out)
        return null_out("ferry_value_get_rref");
    if (!want(v, FERRY_VALUE_RREF, "ferry_value_get_rref"))
        return FERRY_ETYPE;
    *out = v->u.rref;
    return FERRY_OK;
}

ferry_status ferry_list_at(const ferry_value *list, size_t i, ferry_value **out)
{
    if (!out)
        return null_out("ferry_list_at");
    if (!want(list, FERRY_VALUE_LIST, "ferry_list_at"))
        return FERRY_ETYPE;
    if (i >= list->u.list.len)
        return past_end("ferry_list_at", "list", i, list->u.list.len);
    *out = list->u.list.items[i];
    return FERRY_OK;
}

ferry_status ferry_dict_lookup(const ferry_value *dict, const char *key, ferry_value **out)
{
    if (!out)
        return null_out("ferry_dict_lookup");
    if (!want(dict, FERRY_VALUE_DICT, "ferry_dict_lookup"))
        return FERRY_ETYPE;
    ferry_value *v = dict_entry(dict, key, "ferry_dict_lookup");
    if (!v)
        return FERRY_EINVAL;
    *out = v;
    return FERRY_OK;
}
