/* The device options of ferry_init_rpc: device maps and the devices list, as torch's
   TensorPipeRpcBackendOptions.set_device_map and set_devices check them when they are set. What
   needs the other workers (their names and devices) is checked at init. */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "ferry/device.h"
#include "ferry/rpc.h"

static ferry_status check_index(const char *what, ferry_device d)
{
    if (d.type != FERRY_CPU && d.type != FERRY_CUDA)
        return ferry__fail(FERRY_EINVAL, "%s: unknown device type %d", what, (int)d.type);
    if (d.type == FERRY_CUDA && d.index < 0)
        return ferry__fail(FERRY_EINVAL, "%s: Device index must not be negative (cuda:%d)", what,
                           d.index);
    return FERRY_OK;
}

static bool same(ferry_device a, ferry_device b)
{
    return a.type == b.type && (a.type == FERRY_CPU || a.index == b.index);
}

ferry_status ferry_rpc_options_set_device_map(ferry_rpc_options *opts, const char *worker,
                                              ferry_device from, ferry_device to)
{
    static const char what[] = "ferry_rpc_options_set_device_map";
    if (!opts || !worker)
        return ferry__fail(FERRY_EINVAL, "%s: NULL %s", what, opts ? "worker name" : "options");
    size_t len = strlen(worker);
    if (len == 0 || len >= FERRY_MAX_NAME_LEN)
        return ferry__fail(FERRY_EINVAL, "%s: worker name '%.*s' must have 1 to %d characters",
                           what, 64, worker, FERRY_MAX_NAME_LEN - 1);
    ferry_status rc = check_index(what, from);
    if (rc == FERRY_OK)
        rc = check_index(what, to);
    if (rc != FERRY_OK)
        return rc;
    if (opts->n_device_maps < 0 || opts->n_device_maps > FERRY_MAX_DEVICE_MAPS)
        return ferry__fail(FERRY_EINVAL, "%s: n_device_maps is %d (options not initialized with "
                           "ferry_rpc_options_init?)", what, opts->n_device_maps);
    for (int i = 0; i < opts->n_device_maps; i++) {
        const ferry_device_map_entry *e = &opts->device_maps[i];
        if (strcmp(e->worker, worker) || !same(e->from, from))
            continue;
        if (same(e->to, to))
            return FERRY_OK;
        char f[32], t_old[32], t_new[32];
        ferry_device_format(from, f, sizeof f);
        ferry_device_format(e->to, t_old, sizeof t_old);
        ferry_device_format(to, t_new, sizeof t_new);
        return ferry__fail(FERRY_EINVAL, "`set_device_map` only supports 1-to-1 mapping, trying "
                           "to map %s to %s and %s (for worker %s)", f, t_new, t_old, worker);
    }
    if (opts->n_device_maps == FERRY_MAX_DEVICE_MAPS)
        return ferry__fail(FERRY_EINVAL, "%s: more than %d device map entries", what,
                           FERRY_MAX_DEVICE_MAPS);
    ferry_device_map_entry *e = &opts->device_maps[opts->n_device_maps++];
    memcpy(e->worker, worker, len + 1);
    e->from = from.type == FERRY_CPU ? FERRY_DEVICE_CPU : from;
    e->to = to.type == FERRY_CPU ? FERRY_DEVICE_CPU : to;
    return FERRY_OK;
}

ferry_status ferry_rpc_options_set_devices(ferry_rpc_options *opts, const ferry_device *devices,
                                           int n)
{
    static const char what[] = "ferry_rpc_options_set_devices";
    if (!opts || (n > 0 && !devices))
        return ferry__fail(FERRY_EINVAL, "%s: NULL %s", what, opts ? "devices" : "options");
    if (n < 0 || n > FERRY_MAX_RPC_DEVICES)
        return ferry__fail(FERRY_EINVAL, "%s: %d devices (0 to %d)", what, n,
                           FERRY_MAX_RPC_DEVICES);
    for (int i = 0; i < n; i++) {
        if (devices[i].type != FERRY_CUDA)
            return ferry__fail(FERRY_EINVAL, "`set_devices` expect a list of CUDA devices, but got "
                               "device type %s.", devices[i].type == FERRY_CPU ? "cpu" : "unknown");
        ferry_status rc = check_index(what, devices[i]);
        if (rc != FERRY_OK)
            return rc;
    }
    for (int i = 0; i < n; i++)
        opts->devices[i] = devices[i];
    opts->n_devices = n;
    return FERRY_OK;
}
