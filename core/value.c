/* Values: torch's IValue for C. Every value is one refcounted heap object whose layout
   (core/value_impl.h) the wire codec also builds in place. Values are immutable once shared:
   a dict may only change while its builder holds the sole reference, which also rules out
   reference cycles, so plain refcounting frees everything. Releasing is iterative (containers
   that die are chained through their dead refcount word) so that a list nested a hundred
   thousand deep, as a hostile message may carry, frees without deep recursion and without
   allocating. Tensors and RRefs live above core: values hold them as opaque objects through the
   kind ops their modules register (core/value_impl.h), so core includes neither module. */
#include "core/value_impl.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/value_shared.h"

/* The kind ops, one slot per kind (only object kinds are ever set). Each slot is written by the
   owning module's constructor before main and only read afterwards; it is atomic so that a
   registration made later (a test, a library loaded late) publishes the whole ops struct it
   points to (release store, acquire load). */
static _Atomic(const ferry__value_kind_ops *) kind_ops[FERRY_VALUE_OBJECT + 1];

/* The kinds whose values hold a module's object in `u.obj`. */
static bool is_object_kind(ferry_kind kind)
{
    return kind == FERRY_VALUE_TENSOR || kind == FERRY_VALUE_RREF || kind == FERRY_VALUE_OBJECT;
}

ferry_status ferry__value_register_kind(ferry_kind kind, const ferry__value_kind_ops *ops)
{
    if (!is_object_kind(kind))
        return ferry__fail(FERRY_EINVAL, "%s values hold no object, so they take no kind ops",
                           ferry_kind_name(kind));
    if (ops && (!ops->retain || !ops->release))
        return ferry__fail(FERRY_EINVAL, "kind ops for %s values need retain and release",
                           ferry_kind_name(kind));
    atomic_store_explicit(&kind_ops[kind], ops, memory_order_release);
    return FERRY_OK;
}

/* The ops of an object kind, or NULL when its module registered none. */
static const ferry__value_kind_ops *ops_of(ferry_kind kind)
{
    return atomic_load_explicit(&kind_ops[kind], memory_order_acquire);
}

static ferry_value *value_alloc(ferry_kind kind)
{
    ferry_value *v = ferry__malloc(sizeof *v); /* malloc + a store beats calloc's slow path */
    if (!v)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a %s value", ferry_kind_name(kind));
    memset(&v->u, 0, sizeof v->u);
    ferry__ref_init(&v->ref);
    v->kind = kind;
    return v;
}

ferry_value *ferry_none(void)
{
    return value_alloc(FERRY_VALUE_NONE);
}

ferry_value *ferry_bool(bool b)
{
    ferry_value *v = value_alloc(FERRY_VALUE_BOOL);
    if (v)
        v->u.b = b;
    return v;
}

ferry_value *ferry_int(int64_t i)
{
    ferry_value *v = value_alloc(FERRY_VALUE_INT);
    if (v)
        v->u.i = i;
    return v;
}

ferry_value *ferry_double(double d)
{
    ferry_value *v = value_alloc(FERRY_VALUE_DOUBLE);
    if (v)
        v->u.d = d;
    return v;
}

/* STRING and BYTES: a copy of len bytes plus a NUL terminator, so strings read as C strings. */
static ferry_value *bytes_value(ferry_kind kind, const void *data, size_t len)
{
    if (!data && len > 0)
        return ferry__fail_null(FERRY_EINVAL, "NULL data for a %s of %zu bytes",
                                ferry_kind_name(kind), len);
    if (len == SIZE_MAX)
        return ferry__fail_null(FERRY_EINVAL, "%s too long", ferry_kind_name(kind));
    char *copy = ferry__malloc(len + 1);
    if (!copy)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a %s of %zu bytes",
                                ferry_kind_name(kind), len);
    if (len > 0)
        memcpy(copy, data, len);
    copy[len] = '\0';
    ferry_value *v = value_alloc(kind);
    if (!v) {
        ferry__free(copy);
        return NULL;
    }
    v->u.str.data = copy;
    v->u.str.len = len;
    return v;
}

ferry_value *ferry_string(const char *s)
{
    if (!s)
        return ferry__fail_null(FERRY_EINVAL, "NULL string");
    return bytes_value(FERRY_VALUE_STRING, s, strlen(s));
}

ferry_value *ferry_string_n(const char *s, size_t len)
{
    return bytes_value(FERRY_VALUE_STRING, s, len);
}

ferry_value *ferry_bytes(const void *data, size_t len)
{
    return bytes_value(FERRY_VALUE_BYTES, data, len);
}

/* A value holding `obj` (borrowed), retained through its kind's ops. */
static ferry_value *object_value(ferry_kind kind, void *obj)
{
    const char *name = ferry_kind_name(kind);
    if (!obj)
        return ferry__fail_null(FERRY_EINVAL, "NULL %s", name);
    const ferry__value_kind_ops *ops = ops_of(kind);
    if (!ops)
        return ferry__fail_null(FERRY_EINVAL, "%s values need the %s module initialized", name,
                                name);
    ferry_value *v = value_alloc(kind);
    if (v)
        v->u.obj = ops->retain(obj);
    return v;
}

ferry_value *ferry_tensor_value(ferry_tensor *t)
{
    return object_value(FERRY_VALUE_TENSOR, t);
}

ferry_value *ferry_rref_value(ferry_rref *r)
{
    return object_value(FERRY_VALUE_RREF, r);
}

ferry_value *ferry__value_of_object(ferry_kind kind, void *obj)
{
    if (!is_object_kind(kind))
        return ferry__fail_null(FERRY_EINVAL, "%s values hold no object", ferry_kind_name(kind));
    return object_value(kind, obj);
}

const ferry__value_kind_ops *ferry__value_kind_ops_of(ferry_kind kind)
{
    return is_object_kind(kind) ? ops_of(kind) : NULL;
}

void ferry__value_describe(const ferry_value *v, char *buf, size_t cap)
{
    const ferry__value_kind_ops *ops = v && is_object_kind(v->kind) ? ops_of(v->kind) : NULL;
    if (ops && ops->describe)
        ops->describe(v->u.obj, buf, cap);
    else
        snprintf(buf, cap, "a %s", ferry_kind_name(ferry_value_kind(v)));
}

/* ---- shared empties ---- */

/* None and the empty list hold nothing and can never change (a list's items are only set by
   builders, within its length), and a shared dict refuses ferry_dict_set (its count is above
   one), so one immortal copy of each serves every caller that would otherwise allocate them
   per call (no arguments, no result). Their counts start far above anything the references
   handed out could reach, so they never reach zero and are never freed. */
#define IMMORTAL_REFS ((int_fast64_t)1 << 62)
static ferry_value shared_none = {.ref = {IMMORTAL_REFS}, .kind = FERRY_VALUE_NONE};
static ferry_value shared_empty_list = {.ref = {IMMORTAL_REFS}, .kind = FERRY_VALUE_LIST};
static ferry_value shared_empty_dict = {.ref = {IMMORTAL_REFS}, .kind = FERRY_VALUE_DICT};

ferry_value *ferry__value_shared_none(void)
{
    return ferry_value_retain(&shared_none);
}

ferry_value *ferry__value_shared_empty_list(void)
{
    return ferry_value_retain(&shared_empty_list);
}

ferry_value *ferry__value_shared_empty_dict(void)
{
    return ferry_value_retain(&shared_empty_dict);
}

/* ---- lists ---- */

ferry_value *ferry__list_new(size_t n)
{
    if (n > SIZE_MAX / sizeof(ferry_value *))
        return ferry__fail_null(FERRY_EINVAL, "list of %zu items is too long", n);
    ferry_value **items = NULL;
    if (n > 0) {
        items = ferry__calloc(n, sizeof *items);
        if (!items)
            return ferry__fail_null(FERRY_ENOMEM, "no memory for a list of %zu items", n);
    }
    ferry_value *v = value_alloc(FERRY_VALUE_LIST);
    if (!v) {
        ferry__free(items);
        return NULL;
    }
    v->u.list.items = items;
    v->u.list.len = n;
    return v;
}

void ferry__list_set(ferry_value *list, size_t i, ferry_value *item)
{
    if (!list || list->kind != FERRY_VALUE_LIST || i >= list->u.list.len) {
        ferry_value_release(item);
        return;
    }
    ferry_value_release(list->u.list.items[i]);
    list->u.list.items[i] = item;
}

/* Takes the n stolen items of a builder call; on any NULL all are released. */
static ferry_value *list_of_va(size_t n, va_list ap)
{
    ferry_value *list = ferry__list_new(n);
    size_t null_at = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        ferry_value *item = va_arg(ap, ferry_value *);
        if (!item && null_at == SIZE_MAX)
            null_at = i;
        if (list)
            list->u.list.items[i] = item;
        else
            ferry_value_release(item);
    }
    if (!list)
        return NULL; /* ferry__list_new recorded why */
    if (null_at != SIZE_MAX) {
        ferry_value_release(list);
        /* The NULL usually comes from a failed constructor in the argument list: keep its
           error, which says more than ours would. */
        if (ferry_last_status() == FERRY_OK)
            ferry__fail(FERRY_EINVAL, "list item %zu is NULL", null_at);
        return NULL;
    }
    return list;
}

ferry_value *ferry_list_of(size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    ferry_value *list = list_of_va(n, ap);
    va_end(ap);
    return list;
}

ferry_value *ferry_args(size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    ferry_value *list = list_of_va(n, ap);
    va_end(ap);
    return list;
}

ferry_value *ferry_list_from(ferry_value *const *items, size_t n)
{
    if (n > 0 && !items)
        return ferry__fail_null(FERRY_EINVAL, "NULL items for a list of %zu", n);
    for (size_t i = 0; i < n; i++) {
        if (!items[i])
            return ferry__fail_null(FERRY_EINVAL, "list item %zu is NULL", i);
    }
    ferry_value *list = ferry__list_new(n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++)
        list->u.list.items[i] = ferry_value_retain(items[i]);
    return list;
}

/* ---- dicts ---- */

ferry_value *ferry_dict_new(void)
{
    return value_alloc(FERRY_VALUE_DICT);
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
static size_t dict_find(const ferry_value *dict, const char *key, size_t key_len)
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
    size_t at = dict_find(dict, key, key_len);
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

/* ---- accessors ---- */

ferry_kind ferry_value_kind(const ferry_value *v)
{
    return v ? v->kind : FERRY_VALUE_NONE;
}

const char *ferry_kind_name(ferry_kind k)
{
    static const char *const names[] = {
        [FERRY_VALUE_NONE] = "none",     [FERRY_VALUE_BOOL] = "bool",
        [FERRY_VALUE_INT] = "int",       [FERRY_VALUE_DOUBLE] = "double",
        [FERRY_VALUE_STRING] = "string", [FERRY_VALUE_BYTES] = "bytes",
        [FERRY_VALUE_TENSOR] = "tensor", [FERRY_VALUE_LIST] = "list",
        [FERRY_VALUE_DICT] = "dict",     [FERRY_VALUE_RREF] = "rref",
        [FERRY_VALUE_OBJECT] = "object",
    };
    if ((unsigned)k >= sizeof names / sizeof names[0])
        return "unknown";
    return names[k];
}

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
    size_t at = dict_find(dict, key, strlen(key));
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

/* ---- equality ---- */

/* Objects are equal when identical or when their kind's ops say so (tensors by dtype, shape and
   contents, rrefs by the identity of what they reference). */
static bool object_equal(const ferry_value *a, const ferry_value *b)
{
    if (a->u.obj == b->u.obj)
        return true;
    const ferry__value_kind_ops *ops = ops_of(a->kind);
    return ops && ops->equal && ops->equal(a->u.obj, b->u.obj);
}

static bool leaf_equal(const ferry_value *a, const ferry_value *b)
{
    switch (a->kind) {
    case FERRY_VALUE_NONE:
        return true;
    case FERRY_VALUE_BOOL:
        return a->u.b == b->u.b;
    case FERRY_VALUE_INT:
        return a->u.i == b->u.i;
    case FERRY_VALUE_DOUBLE:
        return a->u.d == b->u.d;
    case FERRY_VALUE_STRING:
    case FERRY_VALUE_BYTES:
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.data, b->u.str.data, a->u.str.len) == 0;
    default:
        return is_object_kind(a->kind) && object_equal(a, b);
    }
}

/* Equality walks both trees at once with an explicit stack of the containers it is inside (no
   recursion, so a value nested a million deep compares without touching the C stack), and
   memory in proportion to the depth only. */
typedef struct {
    const ferry_value *a, *b;
    size_t next; /* the child to compare next */
} eq_frame;

#define EQ_LOCAL_FRAMES 32

static size_t child_count(const ferry_value *v)
{
    return v->kind == FERRY_VALUE_LIST ? v->u.list.len : v->u.dict.len;
}

static const ferry_value *child_at(const ferry_value *v, size_t i)
{
    return v->kind == FERRY_VALUE_LIST ? v->u.list.items[i] : v->u.dict.values[i];
}

/* The shallow part of comparing two containers of one kind: lengths and (dicts) keys in the
   same order, as the wire keeps order. */
static bool same_shape(const ferry_value *a, const ferry_value *b)
{
    if (child_count(a) != child_count(b))
        return false;
    for (size_t i = 0; a->kind == FERRY_VALUE_DICT && i < a->u.dict.len; i++)
        if (strcmp(a->u.dict.keys[i], b->u.dict.keys[i]) != 0)
            return false;
    return true;
}

static bool eq_push(eq_frame **stack, size_t *sp, size_t *cap, eq_frame *local,
                    const ferry_value *a, const ferry_value *b)
{
    if (*sp == *cap) {
        size_t cap2 = *cap * 2;
        eq_frame *grown = *stack == local ? ferry__malloc(cap2 * sizeof *grown)
                                          : ferry__realloc(*stack, cap2 * sizeof *grown);
        if (!grown)
            return false;
        if (*stack == local)
            memcpy(grown, local, *sp * sizeof *grown);
        *stack = grown;
        *cap = cap2;
    }
    (*stack)[(*sp)++] = (eq_frame){a, b, 0};
    return true;
}

bool ferry_value_equal(const ferry_value *a, const ferry_value *b)
{
    eq_frame local[EQ_LOCAL_FRAMES], *stack = local;
    size_t sp = 0, cap = EQ_LOCAL_FRAMES;
    bool equal = true;
    for (;;) {
        if (a != b) {
            if (!a || !b || a->kind != b->kind) {
                equal = false;
                break;
            }
            bool container = a->kind == FERRY_VALUE_LIST || a->kind == FERRY_VALUE_DICT;
            if (container && !same_shape(a, b)) {
                equal = false;
                break;
            }
            if (container && child_count(a) && !eq_push(&stack, &sp, &cap, local, a, b)) {
                equal = false;
                ferry_set_error(FERRY_ENOMEM, "out of memory comparing deeply nested values");
                break;
            }
            if (!container && !leaf_equal(a, b)) {
                equal = false;
                break;
            }
        }
        /* The next pair: the next child of the innermost container not yet done. */
        while (sp && stack[sp - 1].next == child_count(stack[sp - 1].a))
            sp--;
        if (!sp)
            break;
        eq_frame *f = &stack[sp - 1];
        a = child_at(f->a, f->next);
        b = child_at(f->b, f->next);
        f->next++;
    }
    if (stack != local)
        ferry__free(stack);
    return equal;
}

/* ---- lifetime ---- */

ferry_value *ferry_value_retain(ferry_value *v)
{
    if (v)
        ferry__ref_inc(&v->ref);
    return v;
}

/* A dead container waits in the release worklist. Its refcount word is free to reuse as the
   link: the count reached zero, so no other thread can look at it any more. */
static void push_dead(ferry_value **stack, ferry_value *v)
{
    atomic_store_explicit(&v->ref.n, (int_fast64_t)(intptr_t)*stack, memory_order_relaxed);
    *stack = v;
}

static ferry_value *pop_dead(ferry_value **stack)
{
    ferry_value *v = *stack;
    *stack = (ferry_value *)(intptr_t)atomic_load_explicit(&v->ref.n, memory_order_relaxed);
    return v;
}

/* Frees a value whose count reached zero; a container only joins the worklist. */
static void dispose(ferry_value *v, ferry_value **stack)
{
    switch (v->kind) {
    case FERRY_VALUE_LIST:
    case FERRY_VALUE_DICT:
        push_dead(stack, v);
        return;
    case FERRY_VALUE_STRING:
    case FERRY_VALUE_BYTES:
        ferry__free(v->u.str.data);
        break;
    default:
        if (is_object_kind(v->kind)) {
            /* The ops built this value, so they are there unless a test removed them since. */
            const ferry__value_kind_ops *ops = ops_of(v->kind);
            if (ops)
                ops->release(v->u.obj);
        }
        break;
    }
    ferry__free(v);
}

static void drop_child(ferry_value *child, ferry_value **stack)
{
    if (child && ferry__ref_dec(&child->ref))
        dispose(child, stack);
}

/* Frees a dead container's children (queueing dead containers among them) and itself. */
static void dispose_container(ferry_value *v, ferry_value **stack)
{
    if (v->kind == FERRY_VALUE_LIST) {
        for (size_t i = 0; i < v->u.list.len; i++)
            drop_child(v->u.list.items[i], stack);
        ferry__free(v->u.list.items);
    } else {
        for (size_t i = 0; i < v->u.dict.len; i++) {
            ferry__free(v->u.dict.keys[i]);
            drop_child(v->u.dict.values[i], stack);
        }
        ferry__free(v->u.dict.keys);
        ferry__free(v->u.dict.values);
        ferry__free(v->u.dict.index);
    }
    ferry__free(v);
}

void ferry_value_release(ferry_value *v)
{
    if (!v || !ferry__ref_dec(&v->ref))
        return;
    ferry_value *stack = NULL;
    dispose(v, &stack);
    while (stack)
        dispose_container(pop_dead(&stack), &stack);
}
