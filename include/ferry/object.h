/* Remote objects and worker groups.

   Objects: torch's rpc.remote(worker, Class, args) followed by rref.rpc_sync().method(...). A
   class is a named table (a constructor, a destructor, methods) registered in every process
   that may hold its objects. An object lives on the worker that constructed it, inside a value
   of kind FERRY_VALUE_OBJECT, and never crosses the wire by value: other workers reach it
   through an RRef, and a method runs where the object is. Objects die with their last reference:
   the destructor runs once, on the owner, when the last RRef anywhere is gone (or at shutdown).

   Calls on one object run one at a time, in the order the owner received them, unless a method
   is marked concurrent: such a method may run while any other call on the object runs. (A call
   whose arguments hold RRefs the owner has not confirmed yet takes its place once they are.)
   A method that calls its own object through ferry_object_call runs that call at once, inside
   its own; a method that waits for a later call on its own object waits forever.

   Groups: one call to many workers (the remote-class pattern). A group is a fixed list of
   workers, or of RRefs to objects on them; a group call sends each member its share of the
   arguments (dispatch) and folds the members' results into one (collect). */
#ifndef FERRY_OBJECT_H
#define FERRY_OBJECT_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/error.h"
#include "ferry/future.h"
#include "ferry/rref.h"
#include "ferry/value.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- classes ---- */

/* Makes a new object from args (a list) and kwargs (a dict), both borrowed and never NULL: sets
   *obj and returns FERRY_OK, or returns ferry_set_error(code, ...) (*obj is then ignored). */
typedef ferry_status (*ferry_ctor_fn)(const ferry_value *args, const ferry_value *kwargs,
                                      void **obj, void *user);
/* Frees an object the constructor made. Runs once per object, on the thread that drops its
   last reference (a pool or progress thread of the owner, or the one calling ferry_shutdown):
   keep it short, and never make RPC calls or wait from it. */
typedef void (*ferry_dtor_fn)(void *obj, void *user);
/* A method: as ferry_fn, with the object first. A result it stores in *result is a new
   reference the library releases; NULL means none. It runs on a pool thread of the owner and
   may make calls of its own (ferry_rpc_sync, method calls on other objects). */
typedef ferry_status (*ferry_method_fn)(void *obj, const ferry_value *args,
                                        const ferry_value *kwargs, ferry_value **result,
                                        void *user);

typedef struct {
    const char *name;      /* unique within the class, shorter than FERRY_MAX_NAME_LEN */
    ferry_method_fn fn;
    bool concurrent;       /* may run alongside other calls on the same object */
} ferry_method_def;

typedef struct {
    ferry_ctor_fn construct;
    ferry_dtor_fn destroy;             /* may be NULL */
    const ferry_method_def *methods;   /* n_methods entries */
    size_t n_methods;
    void *user;                        /* passed to every callback; must outlive the class */
} ferry_class_def;

/* Registers class `name` in this process (before or after ferry_init_rpc; every worker that
   constructs objects of the class must register it). The definition, the method table and the
   names are copied. Registering a name again replaces the class for objects made afterwards;
   objects alive keep the class they were made with. FERRY_OK, FERRY_EINVAL (a bad or too long
   name, no constructor, a method without a name or function, two methods of one name),
   FERRY_ENOMEM. */
FERRY_API ferry_status ferry_register_class(const char *name, const ferry_class_def *def);

/* ---- objects in this process ---- */

/* Constructs an object of class `cls` here (no RPC needed): a new reference to a value of kind
   FERRY_VALUE_OBJECT, or NULL with FERRY_EINVAL (NULL class, args not a list, kwargs not a
   dict), FERRY_EUNKNOWN_FUNCTION (no such class), the constructor's own error, FERRY_ENOMEM. */
FERRY_API ferry_value *ferry_object_new(const char *cls, const ferry_value *args,
                                        const ferry_value *kwargs);
/* Runs `method` on a local object with the same one-at-a-time rule as remote calls. The result
   (new reference; a none value for none) or NULL with FERRY_ETYPE (not an object),
   FERRY_EUNKNOWN_FUNCTION (no such method: the message names class and method), FERRY_EINVAL,
   or the method's own error. */
FERRY_API ferry_value *ferry_object_call(ferry_value *obj, const char *method,
                                         const ferry_value *args, const ferry_value *kwargs);
/* The object's class name and its pointer (what the constructor made), borrowed; NULL with
   FERRY_ETYPE when `obj` is not an object. */
FERRY_API const char *ferry_object_class(const ferry_value *obj);
FERRY_API void *ferry_object_ptr(const ferry_value *obj);

/* ---- remote objects ---- */

/* torch's rpc.remote(to, Class, args, kwargs): constructs an object of class `cls` on worker
   `to` and returns an RRef to it at once (an OwnerRRef when `to` is this worker). Failures of
   the construction (no such class there, the constructor failed, the timeout passed) surface on
   first use of the RRef, as with ferry_remote. NULL only for errors found before sending, as
   ferry_remote. */
FERRY_API ferry_rref *ferry_remote_object(const char *to, const char *cls,
                                          const ferry_value *args, const ferry_value *kwargs,
                                          double timeout);

/* Runs `method` of the object an RRef refers to, on its owner: rref.rpc_sync().method(*args),
   rref.rpc_async().method(*args) and rref.remote().method(*args). The _remote form keeps the
   result on the owner and returns an RRef to it (nothing is fetched; the RRef may be passed to
   later calls on that owner, where a method reads it with ferry_rref_local_value). The owner
   waits for the object while it is being constructed; `timeout` covers that wait. Errors as the
   rpc calls: whatever fails on the owner (no such method, the RRef holds no object, the method
   or the construction failed) is FERRY_EREMOTE with a message naming the worker, the class and
   the method ("method 'Class.m' failed: ..."). ferry_rref_to_here on an RRef whose construction
   failed gives FERRY_EREMOTE too, or FERRY_EUNKNOWN_FUNCTION when the owner has no such class;
   on a constructed object it fails with FERRY_EINVAL, since the object cannot be sent. The
   existing proxies (ferry_rref_rpc_sync, ...) keep working on RRefs to values. */
FERRY_API ferry_value *ferry_rref_call_sync(ferry_rref *rref, const char *method,
                                            const ferry_value *args, const ferry_value *kwargs,
                                            double timeout);
FERRY_API ferry_future *ferry_rref_call_async(ferry_rref *rref, const char *method,
                                              const ferry_value *args, const ferry_value *kwargs,
                                              double timeout);
FERRY_API ferry_rref *ferry_rref_call_remote(ferry_rref *rref, const char *method,
                                             const ferry_value *args, const ferry_value *kwargs,
                                             double timeout);

/* What this process holds, for tests and leak checks: objects alive (made and not yet
   destroyed) and destructors run since the process started. The library counts a destruction
   just after the destructor returns. Works without RPC. */
typedef struct {
    int64_t alive;
    int64_t destroyed;
} ferry_object_counts;
/* Fills *out (a NULL out is ignored; nothing is returned and no error is set). */
FERRY_API void ferry_object_debug_counts(ferry_object_counts *out);

/* ---- groups ---- */

/* Groups are refcounted and, but for their dispatch and collect functions, immutable: every
   call below is thread-safe. */
typedef struct ferry_group ferry_group;

/* How a group call shares its arguments among the n members. */
typedef enum {
    FERRY_DISPATCH_ALL,      /* every member gets the whole arguments */
    FERRY_DISPATCH_SLICE,    /* each list and tensor argument (and keyword value) is split along
                                its first dimension as torch.chunk(x, n) does: member i gets
                                items [i * c, min((i + 1) * c, len)) with c = ceil(len / n), so
                                the last ones get fewer or none (5 rows on 4 members: 2, 2, 1,
                                0). Tensors are narrowed (views, not copies); a 0-dim tensor and
                                every other value go whole to every member */
    FERRY_DISPATCH_FUNCTION  /* the group's dispatch function says (ferry_group_set_functions) */
} ferry_dispatch;

/* How the members' results become the call's result (in member order, once all succeeded). */
typedef enum {
    FERRY_COLLECT_NONE,      /* a none value */
    FERRY_COLLECT_FIRST,     /* member 0's result */
    FERRY_COLLECT_FLATTEN,   /* all lists: concatenated; all tensors of one dim or more: cat
                                along dim 0 (as if one worker had run the whole call); anything
                                else (a mix, numbers, 0-dim tensors): the list of the results */
    FERRY_COLLECT_SUM,       /* the sum: tensors with ferry_add, ints stay ints, ints with
                                doubles give a double; lists (of one length) and dicts (of the
                                same keys) of those elementwise */
    FERRY_COLLECT_MEAN,      /* the sum divided by the member count: numbers become doubles,
                                tensors ferry_div_scalar (an int64 tensor gives float32) */
    FERRY_COLLECT_FUNCTION   /* the group's collect function folds them */
} ferry_collect;

/* FERRY_DISPATCH_FUNCTION: the arguments of member `index` of `n` from the call's (borrowed;
   never NULL: empty when the call passed none). Stores new references in *member_args (a
   list) and *member_kwargs (a dict or NULL) and returns FERRY_OK, or fails the call with
   ferry_set_error. Runs on the thread making the call, once per member, before anything is
   sent. */
typedef ferry_status (*ferry_dispatch_fn)(size_t n, size_t index, const ferry_value *args,
                                          const ferry_value *kwargs, ferry_value **member_args,
                                          ferry_value **member_kwargs, void *user);
/* FERRY_COLLECT_FUNCTION: folds the n results (borrowed, in member order) into *out (a new
   reference; NULL means none), or fails the call with ferry_set_error. Runs on a pool thread
   once every member succeeded. */
typedef ferry_status (*ferry_collect_fn)(ferry_value *const *results, size_t n,
                                         ferry_value **out, void *user);

/* A group of the named workers (copied; in this order, repeats allowed) or of the `count`
   workers with ranks first .. first+count-1. RPC must be running; the names must be workers of
   it. New reference, or NULL with FERRY_EINVAL (no members, a NULL name, a range outside the
   world), FERRY_EUNKNOWN_WORKER (naming the member), FERRY_ESHUTDOWN, FERRY_ENOMEM. */
FERRY_API ferry_group *ferry_group_new(const char *const *names, size_t n);
FERRY_API ferry_group *ferry_group_range(int first, int count);

/* The member count (0 with FERRY_EINVAL for NULL), member i's worker name and (object groups)
   member i's RRef, borrowed and living as long as the group; NULL with FERRY_EINVAL past the
   end (the RRef also on a worker group). */
FERRY_API size_t ferry_group_size(const ferry_group *g);
FERRY_API const char *ferry_group_member(const ferry_group *g, size_t i);
FERRY_API ferry_rref *ferry_group_rref(const ferry_group *g, size_t i);

/* The functions FERRY_DISPATCH_FUNCTION and FERRY_COLLECT_FUNCTION use on this group (either
   may be NULL when that policy is not used), with `user` passed to both. A call uses those set
   when it starts. FERRY_OK or FERRY_EINVAL (NULL group). */
FERRY_API ferry_status ferry_group_set_functions(ferry_group *g, ferry_dispatch_fn dispatch,
                                                 ferry_collect_fn collect, void *user);

/* Calls the registered function `fn` on every member's worker (an object group's too) with its
   share of args/kwargs (borrowed, may be NULL) and returns a future of the collected result
   (new reference). Every share is made before anything is sent; then every member's call is in
   flight at once, and the future completes when all have finished. When members fail (an
   error, the timeout), it fails after every member finished, with the status of the failing
   member first in member order and a message naming that member, its worker and its error
   ("member 2 of 4 (worker 'w2') failed: ..."). Results the collect policy cannot fold fail it
   with FERRY_EINVAL naming the member and where in its result; a collect function's error
   fails it with that function's code. NULL only for errors found before sending: FERRY_EINVAL
   (NULL group or function name, an unknown policy, a policy without its function, args not a
   list, kwargs not a dict), the dispatch function's error (naming the member), FERRY_ESHUTDOWN,
   FERRY_ENOMEM, or a member's send failure (naming it; the members sent before it still run,
   and their results are dropped). */
FERRY_API ferry_future *ferry_group_call(ferry_group *g, const char *fn, const ferry_value *args,
                                         const ferry_value *kwargs, ferry_dispatch dispatch,
                                         ferry_collect collect, double timeout);

/* Where ferry_group_remote_object constructs. */
typedef enum {
    FERRY_CONSTRUCT_ALL,   /* one object on every member */
    FERRY_CONSTRUCT_FIRST  /* one object, on the first member only */
} ferry_construct;

/* Constructs an object of class `cls` (args and kwargs as ferry_remote_object, the same for
   every member) on the workers of `g` (any group) and returns a group of the RRefs (new
   reference), one per member constructed, in g's order, with g's dispatch and collect
   functions. Uses the agent's default timeout. Construction errors surface on the first method
   call, as ferry_remote_object's. NULL with FERRY_EINVAL (NULL group or class, an unknown
   construct policy) and the errors of ferry_remote_object (naming the member); the objects made
   before the failure are released. */
FERRY_API ferry_group *ferry_group_remote_object(ferry_group *g, const char *cls,
                                                 const ferry_value *args, const ferry_value *kwargs,
                                                 ferry_construct construct);

/* Runs `method` on every member's object (ferry_rref_call_async on each RRef) with the same
   policies, failure rule and errors as ferry_group_call; a method that fails or does not exist
   fails the future with FERRY_EREMOTE. FERRY_EINVAL on a worker group. */
FERRY_API ferry_future *ferry_group_call_method(ferry_group *g, const char *method,
                                                const ferry_value *args, const ferry_value *kwargs,
                                                ferry_dispatch dispatch, ferry_collect collect,
                                                double timeout);

/* Reference counting; both accept NULL. A group holds its RRefs, and a call in flight holds its
   group: releasing the last reference to an object group releases its RRefs (the objects die
   with their last RRef). */
FERRY_API ferry_group *ferry_group_retain(ferry_group *g);
FERRY_API void ferry_group_release(ferry_group *g);

#ifdef __cplusplus
}
#endif
#endif
