/* Objects: what a class's constructor made, held by a value of kind FERRY_VALUE_OBJECT. The
   object is refcounted apart from its values (a value retains it through the kind ops), and its
   destructor runs with the last reference. Calls go through the object's mailbox (mailbox.c). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/value_impl.h"
#include "core/value_lent.h"
#include "core/value_shared.h"
#include "rref/object/object_impl.h"

static atomic_int_fast64_t n_alive, n_destroyed;

ferry__object *ferry__object_retain(ferry__object *o)
{
    ferry__ref_inc(&o->ref);
    return o;
}

void ferry__object_release(ferry__object *o)
{
    if (!o || !ferry__ref_dec(&o->ref))
        return;
    if (o->cls->def.destroy)
        o->cls->def.destroy(o->ptr, o->cls->def.user);
    atomic_fetch_sub(&n_alive, 1);
    atomic_fetch_add(&n_destroyed, 1);
    ferry__class_release(o->cls);
    pthread_mutex_destroy(&o->lock);
    ferry__free(o);
}

static void *kind_retain(void *p)
{
    return ferry__object_retain(p);
}

static void kind_release(void *p)
{
    ferry__object_release(p);
}

static void kind_describe(const void *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "an object of class '%s'", ((const ferry__object *)p)->cls->name);
}

/* Objects are equal only to themselves (core compares identical pointers first). */
static const ferry__value_kind_ops object_ops = {
    .retain = kind_retain,
    .release = kind_release,
    .describe = kind_describe,
};

__attribute__((constructor)) static void object_register(void)
{
    ferry__value_register_kind(FERRY_VALUE_OBJECT, &object_ops);
}

ferry__object *ferry__object_of(const ferry_value *v)
{
    return v && v->kind == FERRY_VALUE_OBJECT ? v->u.obj : NULL;
}

ferry_value *ferry__object_make(const char *cls, const ferry_value *args,
                                const ferry_value *kwargs)
{
    ferry__class *c = ferry__class_find(cls);
    if (!c)
        return NULL;
    ferry__object *o = ferry__calloc(1, sizeof *o);
    if (!o) {
        ferry__class_release(c);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory for an object of class '%s'", cls);
    }
    ferry_clear_error();
    ferry_status rc = c->def.construct(args, kwargs, &o->ptr, c->def.user);
    if (rc != FERRY_OK) {
        if (ferry_last_status() != rc)
            ferry_set_error(rc, "%s", ferry_strerror(rc));
        ferry_set_error(rc, "constructing '%s' failed: %s", cls, ferry_last_error());
        ferry__class_release(c);
        ferry__free(o);
        return NULL;
    }
    ferry__ref_init(&o->ref);
    o->cls = c;
    pthread_mutex_init(&o->lock, NULL);
    atomic_fetch_add(&n_alive, 1);
    ferry_value *v = ferry__value_of_object(FERRY_VALUE_OBJECT, o);
    ferry__object_release(o); /* the value holds it now; without a value, this destroys it */
    return v;
}

/* ---- the public calls on local objects ---- */

static ferry_status check_args(const ferry_value *args, const ferry_value *kwargs)
{
    if (args && ferry_value_kind(args) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "args must be a list, got %s",
                           ferry_kind_name(ferry_value_kind(args)));
    if (kwargs && ferry_value_kind(kwargs) != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_EINVAL, "kwargs must be a dict, got %s",
                           ferry_kind_name(ferry_value_kind(kwargs)));
    return FERRY_OK;
}

ferry_value *ferry_object_new(const char *cls, const ferry_value *args, const ferry_value *kwargs)
{
    if (!cls)
        return ferry__fail_null(FERRY_EINVAL, "NULL class name");
    if (check_args(args, kwargs) != FERRY_OK)
        return NULL;
    ferry_value *a = args ? ferry_value_retain(ferry__value_lent(args))
                          : ferry__value_shared_empty_list();
    ferry_value *k = kwargs ? ferry_value_retain(ferry__value_lent(kwargs))
                            : ferry__value_shared_empty_dict();
    ferry_value *v = ferry__object_make(cls, a, k);
    ferry_value_release(a);
    ferry_value_release(k);
    return v;
}

ferry_value *ferry_object_call(ferry_value *obj, const char *method,
                               const ferry_value *args, const ferry_value *kwargs)
{
    ferry__object *o = ferry__object_of(obj);
    if (!o)
        return ferry__fail_null(FERRY_ETYPE, "ferry_object_call needs an object, not a %s",
                                ferry_kind_name(ferry_value_kind(obj)));
    if (!method)
        return ferry__fail_null(FERRY_EINVAL, "NULL method name");
    if (check_args(args, kwargs) != FERRY_OK)
        return NULL;
    ferry_value *a = args ? ferry_value_retain(ferry__value_lent(args))
                          : ferry__value_shared_empty_list();
    ferry_value *k = kwargs ? ferry_value_retain(ferry__value_lent(kwargs))
                            : ferry__value_shared_empty_dict();
    ferry_value *result = ferry__object_call_here(o, method, a, k);
    ferry_value_release(a);
    ferry_value_release(k);
    return result;
}

const char *ferry_object_class(const ferry_value *obj)
{
    ferry__object *o = ferry__object_of(obj);
    if (!o)
        return ferry__fail_null(FERRY_ETYPE, "not an object: a %s",
                                ferry_kind_name(ferry_value_kind(obj)));
    return o->cls->name;
}

void *ferry_object_ptr(const ferry_value *obj)
{
    ferry__object *o = ferry__object_of(obj);
    if (!o)
        return ferry__fail_null(FERRY_ETYPE, "not an object: a %s",
                                ferry_kind_name(ferry_value_kind(obj)));
    return o->ptr;
}

void ferry_object_debug_counts(ferry_object_counts *out)
{
    if (!out)
        return;
    out->alive = atomic_load(&n_alive);
    out->destroyed = atomic_load(&n_destroyed);
}
