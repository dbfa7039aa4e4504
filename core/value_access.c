/* Accessors: read a value of the kind the caller expects, or record FERRY_ETYPE naming the
   kind wanted and the kind found. Results are borrowed from the value. */
#include "core/value_impl.h"

#include <stdint.h>
#include <string.h>

#include "core/error.h"

/* True when v has kind k; otherwise records FERRY_ETYPE naming what was wanted. */
static bool want(const ferry_value *v, ferry_kind k, const char *what)
{
    if (v && v->kind == k)
        return true;
    ferry__fail(FERRY_ETYPE, "%s: expected a %s value, got %s", what, ferry_kind_name(k),
                v ? ferry_kind_name(v->kind) : "NULL");
    return false;
}

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
    if (v && v->kind == FERRY_VALUE_INT)
        return (double)v->u.i;
    return want(v, FERRY_VALUE_DOUBLE, "ferry_value_as_double") ? v->u.d : 0.0;
}

const char *ferry_value_as_string(const ferry_value *v)
{
    return want(v, FERRY_VALUE_STRING, "ferry_value_as_string") ? v->u.str.data : NULL;
}

size_t ferry_value_len(const ferry_value *v)
{
    if (v && (v->kind == FERRY_VALUE_STRING || v->kind == FERRY_VALUE_BYTES))
        return v->u.str.len;
    ferry__fail(FERRY_ETYPE, "ferry_value_len: expected a string or bytes value, got %s",
                v ? ferry_kind_name(v->kind) : "NULL");
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
    if (i >= list->u.list.len)
        return ferry__fail_null(FERRY_EINVAL, "list index %zu out of range (length %zu)", i,
                                list->u.list.len);
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
    if (!key)
        return ferry__fail_null(FERRY_EINVAL, "ferry_dict_get: NULL key");
    size_t at = ferry__dict_find(dict, key, strlen(key));
    if (at == SIZE_MAX)
        return ferry__fail_null(FERRY_EINVAL, "key '%s' not in dict", key);
    return dict->u.dict.values[at];
}

const char *ferry_dict_key_at(const ferry_value *dict, size_t i)
{
    if (!want(dict, FERRY_VALUE_DICT, "ferry_dict_key_at"))
        return NULL;
    if (i >= dict->u.dict.len)
        return ferry__fail_null(FERRY_EINVAL, "dict index %zu out of range (length %zu)", i,
                                dict->u.dict.len);
    return dict->u.dict.keys[i];
}

ferry_value *ferry_dict_value_at(const ferry_value *dict, size_t i)
{
    if (!want(dict, FERRY_VALUE_DICT, "ferry_dict_value_at"))
        return NULL;
    if (i >= dict->u.dict.len)
        return ferry__fail_null(FERRY_EINVAL, "dict index %zu out of range (length %zu)", i,
                                dict->u.dict.len);
    return dict->u.dict.values[i];
}
