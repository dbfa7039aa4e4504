/* The public backward calls: ferry_dist_autograd_backward checks its roots with torch's texts
   and runs a pass (pass.c); ferry_rref_backward runs one from the scalar an RRef holds, on its
   owner. */
#include <stdio.h>

#include "autograd/dist/dist_impl.h"
#include "core/error.h"

static ferry_status check_roots(ferry_tensor **roots, size_t n)
{
    if (n == 0)
        return ferry_set_error(FERRY_EINVAL, "No tensors provided for gradient computation.");
    if (roots == NULL)
        return ferry_set_error(FERRY_EINVAL, "backward: roots is NULL for %zu roots", n);
    for (size_t i = 0; i < n; i++) {
        if (roots[i] == NULL)
            return ferry_set_error(FERRY_EINVAL, "backward: root %zu is NULL", i);
        if (!ferry_tensor_requires_grad(roots[i]))
            return ferry_set_error(FERRY_EINVAL, "requires_grad not set on root %zu", i);
        if (ferry_tensor_numel(roots[i]) != 1)
            return ferry_set_error(FERRY_EINVAL, "root %zu is not a scalar, all roots need to be "
                                   "scalar", i);
        if (ferry_tensor_is_leaf(roots[i]))
            return ferry_set_error(FERRY_EINVAL, "root %zu does not have a valid gradient "
                                   "function.", i);
    }
    return FERRY_OK;
}

ferry_status ferry_dist_autograd_backward(int64_t id, ferry_tensor **roots, size_t n,
                                          bool retain_graph)
{
    ferry__agent *a;
    ferry__dist_state *st = ferry__dist_state_get(&a);
    if (st == NULL)
        return ferry_last_status();
    ferry_status rc;
    ferry__dist_ctx *c = ferry__dist_ctx_find(st, id);
    if (c == NULL)
        rc = ferry__dist_no_context(id);
    else if ((rc = check_roots(roots, n)) == FERRY_OK)
        rc = ferry__dist_pass_run(st, c, roots, n, retain_graph);
    ferry__dist_ctx_release(c);
    ferry__agent_release(a);
    return rc;
}

static ferry_status tensor_of(const ferry_value *v, ferry_tensor **out)
{
    *out = v && ferry_value_kind(v) == FERRY_VALUE_TENSOR ? ferry_value_as_tensor(v) : NULL;
    if (*out == NULL)
        return ferry_set_error(FERRY_EINVAL, "RRef should contain a tensor for .backward()");
    return FERRY_OK;
}

/* On the owner, through the RRef proxy: args are (the owner's value, ctx, retain_graph). */
static ferry_status rref_backward_fn(const ferry_value *args, const ferry_value *kwargs,
                                     ferry_value **result, void *user)
{
    ferry_tensor *t;
    if (ferry_list_len(args) != 3 || tensor_of(ferry_list_get(args, 0), &t) != FERRY_OK)
        return ferry_last_status() ? ferry_last_status()
                                   : ferry_set_error(FERRY_EINVAL, "RRef should contain a tensor "
                                                     "for .backward()");
    int64_t id = ferry_value_as_int(ferry_list_get(args, 1));
    bool retain = ferry_value_as_bool(ferry_list_get(args, 2));
    return ferry_dist_autograd_backward(id, &t, 1, retain);
}

ferry_status ferry__dist_register_functions(void)
{
    return ferry__register_module_function(DIST_RREF_BACKWARD_FN, rref_backward_fn, NULL);
}

ferry_status ferry_rref_backward(ferry_rref *rref, int64_t ctx, bool retain_graph)
{
    if (rref == NULL)
        return ferry_set_error(FERRY_EINVAL, "ferry_rref_backward: the RRef is NULL");
    if (ferry_rref_is_owner(rref)) {
        ferry_value *v = ferry_rref_local_value(rref);
        if (v == NULL)
            return ferry_last_status();
        ferry_tensor *t;
        ferry_status rc = tensor_of(v, &t);
        if (rc == FERRY_OK)
            rc = ctx == -1 ? ferry_backward(t, NULL, retain_graph)
                           : ferry_dist_autograd_backward(ctx, &t, 1, retain_graph);
        ferry_value_release(v);
        return rc;
    }
    if (ctx == -1)
        return ferry_set_error(FERRY_EINVAL, "User RRefs require 'dist_autograd_ctx_id' to be "
                               "specified");
    ferry_value *args = ferry_args(2, ferry_int(ctx), ferry_bool(retain_graph));
    if (args == NULL)
        return ferry_set_error(FERRY_ENOMEM, "out of memory calling the RRef's owner");
    ferry_value *r = ferry_rref_rpc_sync(rref, DIST_RREF_BACKWARD_FN, args, NULL,
                                         FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    if (r == NULL)
        return ferry_last_status();
    ferry_value_release(r);
    return FERRY_OK;
}
