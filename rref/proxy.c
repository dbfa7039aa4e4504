/* RRef proxies: torch's rref.rpc_sync().f(*args), rref.rpc_async().f(*args) and
   rref.remote().f(*args). C has no methods, so f is a registered function called on the owner
   with the owner's value first: f([value, *args], kwargs). The call travels as an ordinary call
   of the internal function below, naming the RRef as a target (rref/target.h: by id when the
   caller's user is confirmed, so no fork and no acknowledgement; else the RRef itself); so
   proxies need nothing from rpc/ beyond what any call uses. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/value_impl.h"
#include "rpc/module.h"
#include "rref/rref_impl.h"
#include "rref/target.h"

#define PROXY_FN "ferry.rref_proxy"

/* The list [value, *args]. */
static ferry_value *prepend(ferry_value *value, const ferry_value *args)
{
    size_t n = ferry_list_len(args);
    ferry_value *l = ferry__list_new(n + 1);
    if (!l)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory building a proxy call");
    ferry__list_set(l, 0, ferry_value_retain(value));
    for (size_t i = 0; i < n; i++)
        ferry__list_set(l, i + 1, ferry_value_retain(ferry_list_get(args, i)));
    return l;
}

static ferry_status run_target(const char *fn, ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result)
{
    ferry__fn_entry e;
    if (!ferry__registry_lookup(fn, &e))
        return ferry__fail(FERRY_EUNKNOWN_FUNCTION, "no function named '%s'", fn);
    if (!ferry__fn_is_async(e.kind))
        return e.fn(args, kwargs, result, e.user);
    ferry_future *f = e.async_fn(args, kwargs, e.user);
    if (!f)
        return ferry_last_status() ? ferry_last_status()
                                   : ferry__fail(FERRY_EINVAL, "'%s' returned no future", fn);
    *result = ferry_future_value(f); /* a pool thread: waiting lends a spare one */
    ferry_future_release(f);
    return *result ? FERRY_OK : ferry_last_status();
}

/* On the owner: args = [target, fn name, args list]. */
static ferry_status proxy_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    if (ferry_list_len(args) != 3)
        return ferry__fail(FERRY_EINVAL, "a proxy call takes [rref, name, args]");
    const char *fn = ferry_value_as_string(ferry_list_get(args, 1));
    ferry_value *inner = ferry_list_get(args, 2);
    if (!fn || !inner || ferry_value_kind(inner) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "a proxy call takes [rref, name, args]");
    ferry_future *vf = ferry__rref_target_value(ferry_list_get(args, 0));
    if (!vf)
        return ferry_last_status();
    ferry_value *value = ferry_future_value(vf); /* waits while it is being created */
    ferry_future_release(vf);
    if (!value)
        return ferry_last_status();
    ferry_value *call_args = prepend(value, inner);
    ferry_value_release(value);
    if (!call_args)
        return FERRY_ENOMEM;
    ferry_status rc = run_target(fn, call_args, kwargs, result);
    ferry_value_release(call_args);
    if (rc != FERRY_OK && ferry_last_status() == rc)
        return ferry_set_error(rc, "'%s' on the RRef's value: %s", fn, ferry_last_error());
    return rc;
}

ferry_status ferry__rref_register_proxy(void)
{
    return ferry__register_module_function(PROXY_FN, proxy_fn, NULL);
}

ferry_future *ferry_rref_rpc_async(ferry_rref *r, const char *fn, const ferry_value *args,
                                   const ferry_value *kwargs, double timeout)
{
    return ferry__rref_call_owner(r, PROXY_FN, fn, args, kwargs, timeout);
}

ferry_value *ferry_rref_rpc_sync(ferry_rref *r, const char *fn, const ferry_value *args,
                                 const ferry_value *kwargs, double timeout)
{
    ferry_future *f = ferry_rref_rpc_async(r, fn, args, kwargs, timeout);
    if (!f)
        return NULL;
    ferry_value *v = ferry_future_value(f);
    ferry_future_release(f);
    return v;
}

ferry_rref *ferry_rref_remote(ferry_rref *r, const char *fn, const ferry_value *args,
                              const ferry_value *kwargs, double timeout)
{
    return ferry__rref_remote_owner(r, PROXY_FN, fn, args, kwargs, timeout);
}
