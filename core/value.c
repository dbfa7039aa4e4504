/* Values: torch's IValue for C. Every value is one refcounted heap object whose layout
   (core/value_impl.h) the wire codec also builds in place. Values are immutable once shared:
   a dict may only change while its builder holds the sole reference, which also rules out
   reference cycles, so plain refcounting frees everything. Releasing is iterative (containers
   that die are chained through their dead refcount word) so that a list nested a hundred
   thousand deep, as a hostile message may carry, frees without deep recursion and without
   allocating. Tensors and RRefs live above core: values hold them as opaque objects through the
   kind ops their modules register (core/value_impl.h), so core includes neither module.
   This file holds the kind registry and kind names, the scalar and object constructors, the
   shared empties and the lifetime; lists, dicts, accessors and equality have files of their
   own (core/value_list.c, value_dict.c, value_access.c, value_equal.c). */
#include "core/value_impl.h"

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
static _Atomic(const ferry__value_kind_ops *) kind_ops[FERRY_VALUE_FUTURE + 1];

/* The kinds whose values hold a module's object in `u.obj`: tensors, and the kinds from rref on. */
static bool is_object_kind(ferry_kind kind)
{
    return kind == FERRY_VALUE_TENSOR || (kind >= FERRY_VALUE_RREF && kind <= FERRY_VALUE_FUTURE);
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

ferry_value *ferry__value_alloc(ferry_kind kind)
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
    return ferry__value_alloc(FERRY_VALUE_NONE);
}

ferry_value *ferry_bool(bool b)
{
    ferry_value *v = ferry__value_alloc(FERRY_VALUE_BOOL);
    if (v)
        v->u.b = b;
    return v;
}

ferry_value *ferry_int(int64_t i)
{
    ferry_value *v = ferry__value_alloc(FERRY_VALUE_INT);
    if (v)
        v->u.i = i;
    return v;
}

ferry_value *ferry_double(double d)
{
    ferry_value *v = ferry__value_alloc(FERRY_VALUE_DOUBLE);
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
    ferry_value *v = ferry__value_alloc(kind);
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
    ferry_value *v = ferry__value_alloc(kind);
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

bool ferry__value_holds_object(ferry_kind kind)
{
    return is_object_kind(kind);
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

/* ---- kinds ---- */

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
        [FERRY_VALUE_OBJECT] = "object", [FERRY_VALUE_FUTURE] = "future",
    };
    if ((unsigned)k >= sizeof names / sizeof names[0])
        return "unknown";
    return names[k];
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
