/* RRef proxies: torch's rref.rpc_sync().f(*args), rref.rpc_async().f(*args) and
   rref.remote().f(*args). C has no methods, so f is a registered function called on the owner
   with the owner's value first: f([value, *args], kwargs). The call travels as an ordinary call
   of the internal function below with the RRef as an argument, which the owner decodes back into
   its own OwnerRRef; so proxies need nothing from rpc/ beyond what any call uses. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/value_impl.h"
#include "rpc/module.h"
#include "rref/rref_impl.h"

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
    if (e.kind != FERRY__FN_ASYNC)
        return e.fn(args, kwargs, result, e.user);
    ferry_future *f = e.async_fn(args, kwargs, e.user);
    if (!f)
        return ferry_last_status() ? ferry_last_status()
                                   : ferry__fail(FERRY_EINVAL, "'%s' returned no future", fn);
    *result = ferry_future_value(f); /* a pool thread: waiting lends a spare one */
    ferry_future_release(f);
    return *result ? FERRY_OK : ferry_last_status();
}

/* On the owner: args = [rref, fn name, args list]. */
static ferry_status proxy_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    if (ferry_list_len(args) != 3)
        return ferry__fail(FERRY_EINVAL, "a proxy call takes [rref, name, args]");
    ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, 0));
    const char *fn = ferry_value_as_string(ferry_list_get(args, 1));
    ferry_value *inner = ferry_list_get(args, 2);
    if (!r || !fn || !inner || ferry_value_kind(inner) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "a proxy call takes [rref, name, args]");
    if (!r->is_owner)
        return ferry__fail(FERRY_ENOTOWNER, "a proxy call reached a worker that does not own "
                                            "its RRef");
    ferry_value *value = ferry_future_value(r->value); /* waits while it is being created */
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
    return ferry_register_function(PROXY_FN, proxy_fn, NULL);
}

static ferry_value *proxy_args(ferry_rref *r, const char *fn, ferry_value *args)
{
    if (!r || !fn || !*fn)
        return ferry__fail_null(FERRY_EINVAL, "a proxy needs an RRef and a function name");
    if (args && ferry_value_kind(args) != FERRY_VALUE_LIST)
        return ferry__fail_null(FERRY_EINVAL, "args must be a list");
    return ferry_args(3, ferry_rref_value(r), ferry_string(fn),
                      args ? ferry_value_retain(args) : ferry_list_of(0));
}

ferry_future *ferry_rref_rpc_async(ferry_rref *r, const char *fn, ferry_value *args,
                                   ferry_value *kwargs, double timeout)
{
    ferry_value *pa = proxy_args(r, fn, args);
    if (!pa)
        return NULL;
    ferry_future *f = ferry_rpc_async(ferry_rref_owner_name(r), PROXY_FN, pa, kwargs, timeout);
    ferry_value_release(pa);
    return f;
}

ferry_value *ferry_rref_rpc_sync(ferry_rref *r, const char *fn, ferry_value *args,
                                 ferry_value *kwargs, double timeout)
{
    ferry_future *f = ferry_rref_rpc_async(r, fn, args, kwargs, timeout);
    if (!f)
        return NULL;
    ferry_value *v = ferry_future_value(f);
    ferry_future_release(f);
    return v;
}

ferry_rref *ferry_rref_remote(ferry_rref *r, const char *fn, ferry_value *args,
                              ferry_value *kwargs, double timeout)
{
    ferry_value *pa = proxy_args(r, fn, args);
    if (!pa)
        return NULL;
    ferry_rref *out = ferry_remote(ferry_rref_owner_name(r), PROXY_FN, pa, kwargs, timeout);
    ferry_value_release(pa);
    return out;
}
