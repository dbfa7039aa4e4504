/* Internal types of rref/object/: registered classes and the objects made from them. */
#ifndef FERRY_RREF_OBJECT_IMPL_H
#define FERRY_RREF_OBJECT_IMPL_H

#include <pthread.h>
#include <stdint.h>

#include "core/refcount.h"
#include "ferry/object.h"

/* A registered class: a private copy of its definition, shared by the registry and every object
   made from it, so re-registering a name never changes an object's class under it. */
typedef struct ferry__class {
    ferry__ref ref;
    char *name;
    ferry_class_def def;       /* def.methods points at `methods` */
    ferry_method_def *methods; /* names copied */
} ferry__class;

/* ---- class.c ---- */
/* The class registered under `name` (new reference), or NULL with FERRY_EUNKNOWN_FUNCTION. */
ferry__class *ferry__class_find(const char *name);
ferry__class *ferry__class_retain(ferry__class *c);
void ferry__class_release(ferry__class *c);
/* The method `name` of c, or NULL. */
const ferry_method_def *ferry__class_method(const ferry__class *c, const char *name);

/* ---- object.c ---- */
/* Runs `method` on the object a value of kind FERRY_VALUE_OBJECT holds, serialised with the
   object's other calls unless the method is concurrent. *result is a new reference (NULL for
   none). The status, with the last error naming class and method on failure. */
ferry_status ferry__object_invoke(const ferry_value *obj, const char *method,
                                  const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result);
/* Constructs an object of class `cls` (a value of kind FERRY_VALUE_OBJECT, new reference), or
   NULL with the error (FERRY_EUNKNOWN_FUNCTION when there is no such class, the constructor's
   own status otherwise). args and kwargs are never NULL. */
ferry_value *ferry__object_make(const char *cls, const ferry_value *args,
                                const ferry_value *kwargs);

#endif
