/* Helpers the distributed autograd tests share (dist_util.h). */
#include "dist_util.h"

#include <stdio.h>
#include <string.h>

#include "ferry/autograd.h"

ferry_tensor *da_arg(const ferry_value *args, size_t i)
{
    return ferry_value_as_tensor(ferry_list_get(args, i));
}

ferry_status da_put_tensor(ferry_value **result, ferry_tensor *t)
{
    if (!t)
        return ferry_last_status();
    *result = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return *result ? FERRY_OK : ferry_last_status();
}

ferry_tensor *da_leaf_copy(ferry_tensor *values)
{
    ferry_tensor *t = ferry_tensor_clone_data(values);
    if (t && ferry_tensor_set_requires_grad(t, true) != FERRY_OK) {
        ferry_tensor_release(t);
        return NULL;
    }
    return t;
}

void da_release_all(ferry_tensor **t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ferry_tensor_release(t[i]);
}

bool da_error_is(ferry_status rc, const char *text)
{
    bool ok = rc == FERRY_EINVAL && strstr(ferry_last_error(), text);
    if (!ok)
        fprintf(stderr, "expected EINVAL \"%s\", got %s \"%s\"\n", text, ferry_strerror(rc),
                ferry_last_error());
    return ok;
}

ferry_status da_square_fn(const ferry_value *args, const ferry_value *kwargs,
                          ferry_value **result, void *user)
{
    return da_put_tensor(result, ferry_mul(da_arg(args, 0), da_arg(args, 0)));
}
