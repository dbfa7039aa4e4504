/* Remote objects: construction with remote() and method calls through RRefs. Both are ordinary
   calls of two internal functions, so they pass every hook a call passes (distributed autograd
   records through a method call as through any function):
     ferry.object.new  [class, args]          -> the new object (kept on the owner by remote())
     ferry.object.call [target, method, args] -> the method's result
   where target names the RRef as rref/target.h says: by id when the caller's RRef is confirmed,
   so a call costs no fork. The object never leaves its owner: the wire refuses it by value.
   The call function only posts to the object's mailbox (mailbox.c), where its request is read. */
#include <string.h>

#include "core/error.h"
#include "core/value_impl.h"
#include "core/value_lent.h"
#include "rpc/module.h"
#include "rref/object/object_impl.h"
#include "rref/target.h"

#define NEW_FN "ferry.object.new"
#define CALL_FN "ferry.object.call"

/* On the owner: [class name, args list] -> the object. */
static ferry_status new_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    const char *cls = ferry_value_as_string(ferry_list_get(args, 0));
    ferry_value *inner = ferry_list_get(args, 1);
    if (ferry_list_len(args) != 2 || !cls || ferry_value_kind(inner) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "%s takes [class, args]", NEW_FN);
    *result = ferry__object_make(cls, inner, kwargs);
    return *result ? FERRY_OK : ferry_last_status();
}

/* On the owner, where the request was read: [target, method, args list] -> a future of the
   method's result. It only posts the call (to the object's mailbox, or behind its construction),
   so calls join the mailbox in the order the requests arrived. */
static ferry_future *call_fn(const ferry_value *args, const ferry_value *kwargs, void *user)
{
    const char *method = ferry_value_as_string(ferry_list_get(args, 1));
    ferry_value *inner = ferry_list_get(args, 2);
    if (ferry_list_len(args) != 3 || !method || ferry_value_kind(inner) != FERRY_VALUE_LIST)
        return ferry__fail_null(FERRY_EINVAL, "%s takes [rref, method, args]", CALL_FN);
    ferry_future *vf = ferry__rref_target_value(ferry_list_get(args, 0));
    if (!vf)
        return NULL;
    ferry_future *result = NULL;
    ferry__call *c = ferry__call_new(method, inner, kwargs, true, &result);
    if (c)
        ferry__call_post_when_ready(vf, c);
    ferry_future_release(vf);
    return result;
}

static ferry_status object_start(ferry__agent *agent, void **state)
{
    ferry_status rc = ferry__register_module_function(NEW_FN, new_fn, NULL);
    return rc != FERRY_OK ? rc : ferry__register_nonblocking_async(CALL_FN, call_fn, NULL);
}

static const ferry__agent_module object_module = {
    .name = "object",
    .start = object_start,
};

__attribute__((constructor)) static void object_module_register(void)
{
    ferry__agent_register_module(&object_module);
}

/* ---- the caller's side ---- */

static ferry_status check_call(const char *what, const char *name, const ferry_value *args,
                               const ferry_value *kwargs)
{
    if (!name || !*name)
        return ferry__fail(FERRY_EINVAL, "%s needs a name", what);
    if (strlen(name) >= FERRY_MAX_NAME_LEN)
        return ferry__fail(FERRY_EINVAL, "%s: name '%.32s...' is too long", what, name);
    if (args && ferry_value_kind(args) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "%s: args must be a list, got %s", what,
                           ferry_kind_name(ferry_value_kind(args)));
    if (kwargs && ferry_value_kind(kwargs) != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_EINVAL, "%s: kwargs must be a dict, got %s", what,
                           ferry_kind_name(ferry_value_kind(kwargs)));
    return FERRY_OK;
}

/* [name, args] with empty args for NULL; NULL + FERRY_ENOMEM. */
static ferry_value *name_and_args(const char *name, const ferry_value *args)
{
    return ferry_args(2, ferry_string(name),
                      args ? ferry_value_retain(ferry__value_lent(args)) : ferry_list_of(0));
}

ferry_rref *ferry_remote_object(const char *to, const char *cls, const ferry_value *args,
                                const ferry_value *kwargs, double timeout)
{
    if (check_call("ferry_remote_object", cls, args, kwargs) != FERRY_OK)
        return NULL;
    ferry_value *a = name_and_args(cls, args);
    if (!a)
        return NULL;
    ferry_rref *r = ferry_remote(to, NEW_FN, a, kwargs, timeout);
    ferry_value_release(a);
    return r;
}

static bool method_ok(ferry_rref *r, const char *method, const ferry_value *args,
                      const ferry_value *kwargs)
{
    if (!r)
        return ferry__fail(FERRY_EINVAL, "a method call needs an RRef"), false;
    return check_call("a method call", method, args, kwargs) == FERRY_OK;
}

ferry_future *ferry_rref_call_async(ferry_rref *r, const char *method, const ferry_value *args,
                                    const ferry_value *kwargs, double timeout)
{
    if (!method_ok(r, method, args, kwargs))
        return NULL;
    return ferry__rref_call_owner(r, CALL_FN, method, args, kwargs, timeout);
}

ferry_value *ferry_rref_call_sync(ferry_rref *r, const char *method, const ferry_value *args,
                                  const ferry_value *kwargs, double timeout)
{
    ferry_future *f = ferry_rref_call_async(r, method, args, kwargs, timeout);
    if (!f)
        return NULL;
    ferry_value *v = ferry_future_value(f);
    ferry_future_release(f);
    return v;
}

ferry_rref *ferry_rref_call_remote(ferry_rref *r, const char *method, const ferry_value *args,
                                   const ferry_value *kwargs, double timeout)
{
    if (!method_ok(r, method, args, kwargs))
        return NULL;
    return ferry__rref_remote_owner(r, CALL_FN, method, args, kwargs, timeout);
}
