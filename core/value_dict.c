/* Dicts: string keys in insertion order, searched linearly while small and through a hash
   index once large; changed only while the builder holds the sole reference. */
#include "core/value_impl.h"

#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

ferry_value *ferry_dict_new(void)
{
    return ferry__value_alloc(FERRY_VALUE_DICT);
}

static bool key_matches(const char *stored, const char *key, size_t key_len)
{
    return strncmp(stored, key, key_len) == 0 && stored[key_len] == '\0';
}

/* Dicts of up to this many entries are searched linearly (keyword arguments, small records);
   larger ones get a hash index, so building one of n keys costs O(n), not O(n^2). */
#define DICT_INDEX_MIN 16

static uint64_t key_hash(const char *key, size_t key_len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void index_put(uint32_t *index, size_t cap, uint64_t hash, size_t at)
{
    size_t i = (size_t)hash & (cap - 1);
    while (index[i])
        i = (i + 1) & (cap - 1);
    index[i] = (uint32_t)(at + 1);
}

/* Rebuilds the index with room for twice the entries (a quarter full at most after it). On
   failure the dict just goes without an index. */
void ferry__dict_reindex(ferry_value *dict)
{
    size_t len = dict->u.dict.len, cap = DICT_INDEX_MIN * 4;
    if (len < DICT_INDEX_MIN)
        return;
    while (cap < len * 4 && cap < ((size_t)1 << 40))
        cap *= 2;
    ferry__free(dict->u.dict.index);
    dict->u.dict.index = len < UINT32_MAX ? ferry__calloc(cap, sizeof(uint32_t)) : NULL;
    dict->u.dict.index_cap = dict->u.dict.index ? cap : 0;
    for (size_t i = 0; dict->u.dict.index && i < len; i++) {
        const char *k = dict->u.dict.keys[i];
        index_put(dict->u.dict.index, cap, key_hash(k, strlen(k)), i);
    }
}

/* Keeps the index in step with an entry just appended at position len - 1. */
static void dict_index_added(ferry_value *dict, const char *key, size_t key_len)
{
    size_t len = dict->u.dict.len;
    if (len < DICT_INDEX_MIN)
        return;
    if (!dict->u.dict.index || len * 2 > dict->u.dict.index_cap)
        ferry__dict_reindex(dict);
    else
        index_put(dict->u.dict.index, dict->u.dict.index_cap, key_hash(key, key_len), len - 1);
}

/* Position of `key` or SIZE_MAX. */
size_t ferry__dict_find(const ferry_value *dict, const char *key, size_t key_len)
{
    const uint32_t *index = dict->u.dict.index;
    if (!index) {
        for (size_t i = 0; i < dict->u.dict.len; i++) {
            if (key_matches(dict->u.dict.keys[i], key, key_len))
                return i;
        }
        return SIZE_MAX;
    }
    size_t mask = dict->u.dict.index_cap - 1;
    for (size_t i = (size_t)key_hash(key, key_len) & mask; index[i]; i = (i + 1) & mask) {
        size_t at = index[i] - 1;
        if (key_matches(dict->u.dict.keys[at], key, key_len))
            return at;
    }
    return SIZE_MAX;
}

static ferry_status dict_grow(ferry_value *dict)
{
    size_t cap = dict->u.dict.cap ? dict->u.dict.cap * 2 : 4;
    if (cap > SIZE_MAX / sizeof(void *) / 2)
        return ferry__fail(FERRY_ENOMEM, "dict too large");
    char **keys = ferry__realloc(dict->u.dict.keys, cap * sizeof *keys);
    if (!keys)
        return ferry__fail(FERRY_ENOMEM, "no memory to grow a dict to %zu entries", cap);
    dict->u.dict.keys = keys;
    ferry_value **values = ferry__realloc(dict->u.dict.values, cap * sizeof *values);
    if (!values)
        return ferry__fail(FERRY_ENOMEM, "no memory to grow a dict to %zu entries", cap);
    dict->u.dict.values = values;
    dict->u.dict.cap = cap;
    return FERRY_OK;
}

/* Stores `v` (stolen) under `key`; on failure `v` is released. */
static ferry_status dict_put(ferry_value *dict, const char *key, size_t key_len, ferry_value *v)
{
    size_t at = ferry__dict_find(dict, key, key_len);
    if (at != SIZE_MAX) {
        /* As a Python dict: replacing keeps the key's first position. */
        ferry_value_release(dict->u.dict.values[at]);
        dict->u.dict.values[at] = v;
        return FERRY_OK;
    }
    ferry_status rc = FERRY_OK;
    char *copy = NULL;
    if (dict->u.dict.len == dict->u.dict.cap)
        rc = dict_grow(dict);
    if (rc == FERRY_OK && !(copy = ferry__strndup(key, key_len)))
        rc = ferry__fail(FERRY_ENOMEM, "no memory for a dict key");
    if (rc != FERRY_OK) {
        ferry_value_release(v);
        return rc;
    }
    dict->u.dict.keys[dict->u.dict.len] = copy;
    dict->u.dict.values[dict->u.dict.len] = v;
    dict->u.dict.len++;
    dict_index_added(dict, key, key_len);
    return FERRY_OK;
}

/* Checks shared by both setters; `v` is not consumed here. */
static ferry_status dict_check(const ferry_value *dict, const char *key, const ferry_value *v,
                               int64_t max_refs)
{
    if (!dict || dict->kind != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_ETYPE, "dict_set on a %s value",
                           dict ? ferry_kind_name(dict->kind) : "NULL");
    if (!key || !v)
        return ferry__fail(FERRY_EINVAL, "dict_set needs a key and a value");
    if (v == dict)
        return ferry__fail(FERRY_EINVAL, "a dict cannot contain itself");
    if (ferry__ref_count(&dict->ref) > max_refs)
        return ferry__fail(FERRY_EINVAL, "dict is shared: it can only be changed while the "
                           "caller holds its only reference");
    return FERRY_OK;
}

ferry_status ferry_dict_set(ferry_value *dict, const char *key, const ferry_value *v)
{
    ferry_status rc = dict_check(dict, key, v, 1);
    if (rc != FERRY_OK)
        return rc;
    return dict_put(dict, key, strlen(key), ferry_value_retain(ferry__value_lent(v)));
}

ferry_status ferry__dict_set_n(ferry_value *dict, const char *key, size_t key_len, ferry_value *v)
{
    ferry_status rc = dict_check(dict, key, v, 1);
    if (rc == FERRY_OK && memchr(key, '\0', key_len))
        rc = ferry__fail(FERRY_EINVAL, "dict key holds a NUL byte");
    if (rc != FERRY_OK) {
        ferry_value_release(v);
        return rc;
    }
    return dict_put(dict, key, key_len, v);
}
