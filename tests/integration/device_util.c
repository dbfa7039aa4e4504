/* The helpers of device_util.h. */
#include "device_util.h"

#include <stdio.h>
#include <string.h>

ferry_tensor *device_test_counting(int64_t n, ferry_device device)
{
    ferry_tensor *c = ferry_arange(0, (double)n, 1, FERRY_FLOAT32);
    if (!c || device.type == FERRY_CPU)
        return c;
    ferry_tensor *t = ferry_tensor_to(c, device);
    ferry_tensor_release(c);
    return t;
}

bool device_test_counts_on(ferry_tensor *t, ferry_device device)
{
    ferry_device d = ferry_tensor_device(t);
    if (!t || d.type != device.type || (d.type == FERRY_CUDA && d.index != device.index))
        return false;
    ferry_tensor *c = ferry_tensor_to(t, FERRY_DEVICE_CPU);
    ferry_tensor *k = c ? ferry_tensor_contiguous(c) : NULL;
    bool ok = k != NULL;
    for (int64_t i = 0; ok && i < ferry_tensor_numel(k); i++)
        ok = ferry_tensor_item_at(k, i) == (double)i;
    ferry_tensor_release(k);
    ferry_tensor_release(c);
    return ok;
}

ferry_status device_test_make_on(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    int index = (int)ferry_value_as_int(ferry_list_get(args, 0));
    ferry_tensor *t = device_test_counting(ferry_value_as_int(ferry_list_get(args, 1)),
                                           FERRY_DEVICE_CUDA(index));
    if (!t)
        return ferry_last_status();
    *result = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return FERRY_OK;
}

ferry_future *device_test_async_make_on(const ferry_value *args, const ferry_value *kwargs,
                                        void *user)
{
    ferry_value *v = NULL;
    ferry_future *f = ferry_future_new();
    if (device_test_make_on(args, kwargs, &v, user) == FERRY_OK)
        ferry_future_set_value(f, v);
    else
        ferry_future_set_error(f, ferry_last_status(), ferry_last_error());
    ferry_value_release(v);
    return f;
}

ferry_value *device_test_call(const char *fn, ferry_value *args)
{
    ferry_value *v = ferry_rpc_sync("worker1", fn, args, NULL, 20);
    ferry_value_release(args);
    return v;
}

bool device_test_says(const char *want)
{
    if (!strcmp(ferry_last_error(), want))
        return true;
    fprintf(stderr, "got  '%s'\nwant '%s'\n", ferry_last_error(), want);
    return false;
}
