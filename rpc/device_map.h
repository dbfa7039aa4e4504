/* Device maps across the group (torch's device_maps, devices and reverse device maps): what each
   worker publishes with its address (device count, devices list, map entries), the checks every
   worker runs over all of them at init so that all fail together with the same error, and the
   per-tensor lookups the codec makes when a device tensor is sent. */
#ifndef FERRY_RPC_DEVICE_MAP_H
#define FERRY_RPC_DEVICE_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/rpc.h"
#include "rpc/module.h"

/* One worker's device facts, as it published them. */
typedef struct {
    int count;                      /* its CUDA devices (emulated ones included) */
    char backend[16];               /* "cuda", "emulated" or "none" (ferry_device_backend) */
    int n_devices;                  /* its devices list (0: none set) */
    ferry_device devices[FERRY_MAX_RPC_DEVICES];
    int n_maps;
    ferry_device_map_entry maps[FERRY_MAX_DEVICE_MAPS];
} ferry__device_info;

/* The whole group's: infos[rank], names[rank]; built at init, read-only afterwards. */
typedef struct {
    int world_size, rank;
    const char *const *names;       /* borrowed from the agent's worker table */
    ferry__device_info *infos;      /* owned */
    bool any_cpu_map;               /* a map toward or from this worker names the CPU */
} ferry__device_maps;

/* This process's record: count from the device layer, devices and maps from the options.
   *out is owned (ferry__free). FERRY_ENOMEM. */
ferry_status ferry__device_info_encode(const ferry_rpc_options *opts, uint8_t **out,
                                       size_t *len);
/* Reads a record from p[0, len): *used = its length. FERRY_EPROTO naming `worker` when it is
   malformed. */
ferry_status ferry__device_info_decode(const void *p, size_t len, const char *worker,
                                       ferry__device_info *out, size_t *used);

/* torch's checks of every worker's devices and maps against the others' names and device
   counts, in rank order: the first failure is FERRY_EINVAL with torch's text ("Node worker0
   has invalid target node names in its device maps", "... has source devices with invalid
   indices in its device map for worker1", ...). Sets maps->any_cpu_map. */
ferry_status ferry__device_maps_check(ferry__device_maps *maps);

/* Where a tensor on `from` here lands on `dst`. reverse = false: a request, through this
   worker's map toward dst (a CPU tensor without an entry stays on the CPU; a device tensor
   without one fails with torch's "Request device mapping is not available ..." text).
   reverse = true: an answer to dst (a response, gradients of dst's forward), through the
   inverse of dst's map toward this worker ("Response device mapping is not available ...").
   FERRY_OK or FERRY_EINVAL. */
ferry_status ferry__device_maps_lookup(const ferry__device_maps *maps, int32_t dst, bool reverse,
                                       ferry_device from, ferry_device *to);

void ferry__device_maps_free(ferry__device_maps *maps);

/* What worker `peer` (this one included) published at init: its device count (0 when it has
   none) and its device backend ("cuda", "emulated", "none"); 0 and "none" before init is done
   or for a rank outside the group. For the side channels (rpc/device_channel.h), which need
   both ends to have what they use. */
int ferry__agent_peer_device_count(ferry__agent *agent, int peer);
const char *ferry__agent_peer_device_backend(ferry__agent *agent, int peer);

#endif
