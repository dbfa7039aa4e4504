/* Deep equality of values, without recursion, through the kind ops for objects. */
#include "core/value_impl.h"

#include <stdint.h>
#include <string.h>

#include "core/alloc.h"

/* Objects are equal when identical or when their kind's ops say so (tensors by dtype, shape and
   contents, rrefs by the identity of what they reference). */
static bool object_equal(const ferry_value *a, const ferry_value *b)
{
    if (a->u.obj == b->u.obj)
        return true;
    const ferry__value_kind_ops *ops = ferry__value_kind_ops_of(a->kind);
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
        return ferry__value_holds_object(a->kind) && object_equal(a, b);
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
