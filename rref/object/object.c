/* Objects: what a class's constructor made, held by a value of kind FERRY_VALUE_OBJECT. The
   object is refcounted apart from its values (a value retains it through the kind ops), and its
   destructor runs with the last reference. Calls on one object take a ticket and run when it is
   served, so they never interleave and run in the order they took their tickets; a method
   marked concurrent takes none. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/pool.h"
#include "core/value_impl.h"
#include "core/value_shared.h"
#include "rref/object/object_impl.h"

typedef struct {
    ferry__ref ref;
    ferry__class *cls; /* retained: the class it was made with */
    void *ptr;
    pthread_mutex_t lock;
    pthread_cond_t turn;
    uint64_t next_ticket, serving; /* guarded by lock */
} object;

static atomic_int_fast64_t n_alive, n_destroyed;

static void *object_retain(void *p)
{
    ferry__ref_inc(&((object *)p)->ref);
    return p;
}

static void object_release(void *p)
{
    object *o = p;
    if (!ferry__ref_dec(&o->ref))
        return;
    if (o->cls->def.destroy)
        o->cls->def.destroy(o->ptr, o->cls->def.user);
    atomic_fetch_sub(&n_alive, 1);
    atomic_fetch_add(&n_destroyed, 1);
    ferry__class_release(o->cls);
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->turn);
    ferry__free(o);
}

static void object_describe(const void *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "an object of class '%s'", ((const object *)p)->cls->name);
}

/* Objects are equal only to themselves (core compares identical pointers first). */
static const ferry__value_kind_ops object_ops = {
    .retain = object_retain,
    .release = object_release,
    .describe = object_describe,
};

__attribute__((constructor)) static void object_register(void)
{
    ferry__value_register_kind(FERRY_VALUE_OBJECT, &object_ops);
}

ferry_value *ferry__object_make(const char *cls, const ferry_value *args,
                                const ferry_value *kwargs)
{
    ferry__class *c = ferry__class_find(cls);
    if (!c)
        return NULL;
    object *o = ferry__calloc(1, sizeof *o);
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
    pthread_cond_init(&o->turn, NULL);
    atomic_fetch_add(&n_alive, 1);
    ferry_value *v = ferry__value_of_object(FERRY_VALUE_OBJECT, o);
    object_release(o); /* the value's reference is the only one; without it, this frees o */
    return v;
}

/* Waits for this call's turn on o and returns its ticket. */
static uint64_t take_turn(object *o)
{
    pthread_mutex_lock(&o->lock);
    uint64_t ticket = o->next_ticket++;
    if (o->serving != ticket) {
        ferry__pool_blocking_begin(); /* a pool thread lends its place while it waits */
        while (o->serving != ticket)
            pthread_cond_wait(&o->turn, &o->lock);
        ferry__pool_blocking_end();
    }
    pthread_mutex_unlock(&o->lock);
    return ticket;
}

static void end_turn(object *o)
{
    pthread_mutex_lock(&o->lock);
    o->serving++;
    pthread_cond_broadcast(&o->turn);
    pthread_mutex_unlock(&o->lock);
}

ferry_status ferry__object_invoke(const ferry_value *obj, const char *method,
                                  const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result)
{
    *result = NULL;
    if (ferry_value_kind(obj) != FERRY_VALUE_OBJECT)
        return ferry__fail(FERRY_ETYPE, "a method call needs an object, not a %s",
                           ferry_kind_name(ferry_value_kind(obj)));
    object *o = obj->u.obj;
    const ferry_method_def *m = method ? ferry__class_method(o->cls, method) : NULL;
    if (!m)
        return ferry__fail(FERRY_EUNKNOWN_FUNCTION, "class '%s' has no method '%s'",
                           o->cls->name, method ? method : "(null)");
    if (!m->concurrent)
        take_turn(o);
    ferry_clear_error();
    ferry_status rc = m->fn(o->ptr, args, kwargs, result, o->cls->def.user);
    if (!m->concurrent)
        end_turn(o);
    if (rc != FERRY_OK) {
        ferry_value_release(*result);
        *result = NULL;
        if (ferry_last_status() != rc)
            ferry_set_error(rc, "%s", ferry_strerror(rc));
        return ferry_set_error(rc, "method '%s.%s' failed: %s", o->cls->name, m->name,
                               ferry_last_error());
    }
    return FERRY_OK;
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

ferry_value *ferry_object_new(const char *cls, ferry_value *args, ferry_value *kwargs)
{
    if (!cls)
        return ferry__fail_null(FERRY_EINVAL, "NULL class name");
    if (check_args(args, kwargs) != FERRY_OK)
        return NULL;
    ferry_value *a = args ? ferry_value_retain(args) : ferry__value_shared_empty_list();
    ferry_value *k = kwargs ? ferry_value_retain(kwargs) : ferry__value_shared_empty_dict();
    ferry_value *v = ferry__object_make(cls, a, k);
    ferry_value_release(a);
    ferry_value_release(k);
    return v;
}

ferry_value *ferry_object_call(ferry_value *obj, const char *method, ferry_value *args,
                               ferry_value *kwargs)
{
    if (ferry_value_kind(obj) != FERRY_VALUE_OBJECT)
        return ferry__fail_null(FERRY_ETYPE, "ferry_object_call needs an object, not a %s",
                                ferry_kind_name(ferry_value_kind(obj)));
    if (!method)
        return ferry__fail_null(FERRY_EINVAL, "NULL method name");
    if (check_args(args, kwargs) != FERRY_OK)
        return NULL;
    ferry_value *a = args ? ferry_value_retain(args) : ferry__value_shared_empty_list();
    ferry_value *k = kwargs ? ferry_value_retain(kwargs) : ferry__value_shared_empty_dict();
    ferry_value *result = NULL;
    ferry_status rc = ferry__object_invoke(obj, method, a, k, &result);
    ferry_value_release(a);
    ferry_value_release(k);
    if (rc != FERRY_OK)
        return NULL;
    return result ? result : ferry_none();
}

const char *ferry_object_class(const ferry_value *obj)
{
    if (ferry_value_kind(obj) != FERRY_VALUE_OBJECT)
        return ferry__fail_null(FERRY_ETYPE, "not an object: a %s",
                                ferry_kind_name(ferry_value_kind(obj)));
    return ((const object *)obj->u.obj)->cls->name;
}

void *ferry_object_ptr(const ferry_value *obj)
{
    if (ferry_value_kind(obj) != FERRY_VALUE_OBJECT)
        return ferry__fail_null(FERRY_ETYPE, "not an object: a %s",
                                ferry_kind_name(ferry_value_kind(obj)));
    return ((const object *)obj->u.obj)->ptr;
}

void ferry_object_debug_counts(ferry_object_counts *out)
{
    if (!out)
        return;
    out->alive = atomic_load(&n_alive);
    out->destroyed = atomic_load(&n_destroyed);
}
