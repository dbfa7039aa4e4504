/* The class registry: names to private copies of class definitions. Process-wide, like the
   function registry, so classes can be registered before ferry_init_rpc. Lookups take a read
   lock; a class is refcounted so a lookup's reference outlives a replacement. */
#include <pthread.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/rpc.h"
#include "rref/object/object_impl.h"

typedef struct {
    pthread_rwlock_t lock;
    ferry__class **items;
    size_t len, cap;
} class_table;

static class_table classes = {.lock = PTHREAD_RWLOCK_INITIALIZER};

ferry__class *ferry__class_retain(ferry__class *c)
{
    if (c)
        ferry__ref_inc(&c->ref);
    return c;
}

static void class_free(ferry__class *c)
{
    for (size_t i = 0; c->methods && i < c->def.n_methods; i++)
        ferry__free((char *)c->methods[i].name);
    ferry__free(c->methods);
    ferry__free(c->name);
    ferry__free(c);
}

void ferry__class_release(ferry__class *c)
{
    if (c && ferry__ref_dec(&c->ref))
        class_free(c);
}

static bool valid_name(const char *name)
{
    return name && *name && strlen(name) < FERRY_MAX_NAME_LEN;
}

static ferry_status check_def(const char *name, const ferry_class_def *def)
{
    if (!valid_name(name))
        return ferry__fail(FERRY_EINVAL, "a class name is non-empty and shorter than %d bytes",
                           FERRY_MAX_NAME_LEN);
    if (!def || !def->construct)
        return ferry__fail(FERRY_EINVAL, "class '%s' needs a constructor", name);
    if (def->n_methods && !def->methods)
        return ferry__fail(FERRY_EINVAL, "class '%s' declares %zu methods but no table", name,
                           def->n_methods);
    for (size_t i = 0; i < def->n_methods; i++) {
        const ferry_method_def *m = &def->methods[i];
        if (!valid_name(m->name) || !m->fn)
            return ferry__fail(FERRY_EINVAL, "method %zu of class '%s' needs a name (shorter "
                               "than %d bytes) and a function", i, name, FERRY_MAX_NAME_LEN);
        for (size_t j = 0; j < i; j++)
            if (strcmp(def->methods[j].name, m->name) == 0)
                return ferry__fail(FERRY_EINVAL, "class '%s' has two methods named '%s'", name,
                                   m->name);
    }
    return FERRY_OK;
}

static ferry__class *class_copy(const char *name, const ferry_class_def *def)
{
    ferry__class *c = ferry__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    ferry__ref_init(&c->ref);
    c->def = *def;
    c->name = ferry__strdup(name);
    c->methods = def->n_methods ? ferry__calloc(def->n_methods, sizeof *c->methods) : NULL;
    bool ok = c->name && (c->methods || !def->n_methods);
    for (size_t i = 0; ok && i < def->n_methods; i++) {
        c->methods[i] = def->methods[i];
        c->methods[i].name = ferry__strdup(def->methods[i].name);
        ok = c->methods[i].name != NULL;
    }
    c->def.methods = c->methods;
    if (!ok) {
        c->def.n_methods = def->n_methods; /* class_free walks every slot (NULL names are fine) */
        class_free(c);
        return NULL;
    }
    return c;
}

/* The slot of `name`, or the table's length when absent. Lock held. */
static size_t slot_of(const char *name)
{
    for (size_t i = 0; i < classes.len; i++)
        if (strcmp(classes.items[i]->name, name) == 0)
            return i;
    return classes.len;
}

ferry_status ferry_register_class(const char *name, const ferry_class_def *def)
{
    ferry_status rc = check_def(name, def);
    if (rc != FERRY_OK)
        return rc;
    ferry__class *c = class_copy(name, def);
    if (!c)
        return ferry__fail(FERRY_ENOMEM, "out of memory registering class '%s'", name);
    ferry__class *old = NULL;
    pthread_rwlock_wrlock(&classes.lock);
    size_t i = slot_of(name);
    if (i == classes.len && classes.len == classes.cap) {
        size_t cap = classes.cap ? classes.cap * 2 : 16;
        ferry__class **items = ferry__realloc(classes.items, cap * sizeof *items);
        if (!items) {
            pthread_rwlock_unlock(&classes.lock);
            class_free(c);
            return ferry__fail(FERRY_ENOMEM, "out of memory registering class '%s'", name);
        }
        classes.items = items;
        classes.cap = cap;
    }
    if (i < classes.len)
        old = classes.items[i];
    else
        classes.len++;
    classes.items[i] = c;
    pthread_rwlock_unlock(&classes.lock);
    ferry__class_release(old); /* objects made from it keep their own references */
    return FERRY_OK;
}

ferry__class *ferry__class_find(const char *name)
{
    ferry__class *c = NULL;
    pthread_rwlock_rdlock(&classes.lock);
    size_t i = slot_of(name);
    if (i < classes.len)
        c = ferry__class_retain(classes.items[i]);
    pthread_rwlock_unlock(&classes.lock);
    if (!c)
        ferry__fail(FERRY_EUNKNOWN_FUNCTION, "no class named '%s' is registered", name);
    return c;
}

const ferry_method_def *ferry__class_method(const ferry__class *c, const char *name)
{
    for (size_t i = 0; i < c->def.n_methods; i++)
        if (strcmp(c->methods[i].name, name) == 0)
            return &c->methods[i];
    return NULL;
}
