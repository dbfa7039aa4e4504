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

/* An object: what the constructor made, the class it was made with, and its mailbox. Calls
   not marked concurrent queue in the mailbox and run one at a time, in the order they were
   posted, on one pool thread at a time (`draining` says one is at it). */
typedef struct ferry__call ferry__call;
typedef struct ferry__object {
    ferry__ref ref;
    ferry__class *cls; /* retained */
    void *ptr;
    pthread_mutex_t lock;      /* guards the mailbox */
    ferry__call *head, *tail;  /* queued calls */
    bool draining;
} ferry__object;

/* ---- object.c ---- */
/* Constructs an object of class `cls` (a value of kind FERRY_VALUE_OBJECT, new reference), or
   NULL with the error (FERRY_EUNKNOWN_FUNCTION when there is no such class, the constructor's
   own status otherwise). args and kwargs are never NULL. */
ferry_value *ferry__object_make(const char *cls, const ferry_value *args,
                                const ferry_value *kwargs);
ferry__object *ferry__object_retain(ferry__object *o);
void ferry__object_release(ferry__object *o);
/* The object a value holds, or NULL when it is not an object (no error set). */
ferry__object *ferry__object_of(const ferry_value *v);

/* ---- mailbox.c ---- */
/* A call of `method` with args and kwargs (retained); *result gets the future its outcome
   completes (new reference). A `remote` call fails with FERRY_EREMOTE, a local one with the
   failure's own status. It carries this thread's carried state (core/carry.h) to the thread
   that runs it. NULL + FERRY_ENOMEM. */
ferry__call *ferry__call_new(const char *method, const ferry_value *args,
                             const ferry_value *kwargs, bool remote, ferry_future **result);
/* Posts c (stolen) to the object the value of `vf` will hold, once vf completes; calls posted
   for one future keep their order. A value that is no object, or a failed vf, fails c. */
void ferry__call_post_when_ready(ferry_future *vf, ferry__call *c);
/* A local call on a local object: runs on this thread when the object is idle (or when this
   thread is inside a call on the same object already), else queues and waits. The result (new
   reference, none for none) or NULL with the error. */
ferry_value *ferry__object_call_here(ferry__object *o, const char *method,
                                     const ferry_value *args, const ferry_value *kwargs);

#endif
