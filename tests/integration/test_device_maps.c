/* Device maps checked at ferry_init_rpc against every worker's devices, as torch checks them:
   each worker publishes its device count, devices list and maps, and all workers run the same
   checks, so every one of them fails with the same error and no agent is left running; what a
   worker published (device count, backend) is what every other one reads back. Devices
   are emulated (FERRY_EMULATE_DEVICES, set in each rank before its first device call). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_harness.h"

#include "ferry/device.h"
#include "rpc/device_map.h"

typedef struct {
    int devices[2];   /* emulated device count per rank */
    void (*setup)(int rank, ferry_rpc_options *o);
    const char *error; /* NULL: init succeeds; else the exact message every rank gets */
    int port;
} maps_case;

static void map(ferry_rpc_options *o, const char *worker, int from, int to)
{
    ferry_device f = from < 0 ? FERRY_DEVICE_CPU : FERRY_DEVICE_CUDA(from);
    ferry_device t = to < 0 ? FERRY_DEVICE_CPU : FERRY_DEVICE_CUDA(to);
    if (ferry_rpc_options_set_device_map(o, worker, f, t) != FERRY_OK) {
        fprintf(stderr, "set_device_map: %s\n", ferry_last_error());
        abort();
    }
}

static int maps_rank(int rank, int world, void *arg)
{
    maps_case *mc = arg;
    char buf[32], name[32];
    snprintf(buf, sizeof buf, "%d", mc->devices[rank]);
    setenv("FERRY_EMULATE_DEVICES", buf, 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", mc->port);
    setenv("MASTER_PORT", buf, 1);
    setenv("FERRY_TRANSPORT", "tcp", 1);
    snprintf(name, sizeof name, "worker%d", rank);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.rpc_timeout = 20;
    mc->setup(rank, &o);
    ferry_status rc = ferry_init_rpc(name, rank, world, &o);
    if (!mc->error) {
        if (rc != FERRY_OK) {
            fprintf(stderr, "rank %d: init failed: %s\n", rank, ferry_last_error());
            return 1;
        }
        /* What every worker published, as the side channels read it. */
        ferry__agent *a = ferry__agent_get();
        RANK_CHECK(a);
        for (int p = 0; p < 2; p++) {
            RANK_CHECK(ferry__agent_peer_device_count(a, p) == mc->devices[p]);
            RANK_CHECK(!strcmp(ferry__agent_peer_device_backend(a, p),
                               mc->devices[p] ? "emulated" : "none"));
        }
        RANK_CHECK(ferry__agent_peer_device_count(a, 2) == 0);
        ferry__agent_release(a);
        RANK_CHECK(ferry_shutdown(true, 30) == FERRY_OK);
        return 0;
    }
    RANK_CHECK(rc == FERRY_EINVAL);
    if (strcmp(ferry_last_error(), mc->error)) {
        fprintf(stderr, "rank %d: got  '%s'\n        want '%s'\n", rank, ferry_last_error(),
                mc->error);
        return 1;
    }
    /* Not left running: no worker info, and shutdown says so. */
    ferry_worker_info me;
    RANK_CHECK(ferry_get_worker_info(NULL, &me) == FERRY_ESHUTDOWN);
    RANK_CHECK(ferry_shutdown(true, 0) == FERRY_ESHUTDOWN);
    return 0;
}

static void run_case(int dev0, int dev1, void (*setup)(int, ferry_rpc_options *),
                     const char *error)
{
    rpc_test_set_token();
    maps_case mc = {{dev0, dev1}, setup, error, ferry_test_free_port()};
    ferry_test_run_ranks(2, maps_rank, &mc, 60);
}

static void good(int rank, ferry_rpc_options *o)
{
    if (rank == 0) {
        map(o, "worker1", 0, 1);
        map(o, "worker1", 1, 0);
    } else {
        map(o, "worker0", 0, 0);
    }
}

Test(device_maps, good_maps_pass, .timeout = 60)
{
    run_case(2, 2, good, NULL);
}

static void with_cpu(int rank, ferry_rpc_options *o)
{
    if (rank == 0)
        map(o, "worker1", -1, 0);
}

Test(device_maps, a_cpu_entry_passes, .timeout = 60)
{
    run_case(0, 1, with_cpu, NULL);
}

static void unknown_worker(int rank, ferry_rpc_options *o)
{
    if (rank == 0)
        map(o, "worker9", 0, 0);
}

Test(device_maps, unknown_target_worker, .timeout = 60)
{
    run_case(1, 1, unknown_worker,
             "Node worker0 has invalid target node names in its device maps (worker9 is not a "
             "worker of this group)");
}

static void bad_source(int rank, ferry_rpc_options *o)
{
    if (rank == 0)
        map(o, "worker1", 2, 0);
}

Test(device_maps, source_index_past_the_local_count, .timeout = 60)
{
    run_case(2, 2, bad_source,
             "Node worker0 has source devices with invalid indices in its device map for "
             "worker1 (device map = {cuda:2: cuda:0}; device count = 2)");
}

static void bad_target(int rank, ferry_rpc_options *o)
{
    if (rank == 0)
        map(o, "worker1", 1, 1);
}

Test(device_maps, target_index_past_the_remote_count, .timeout = 60)
{
    run_case(2, 1, bad_target,
             "Node worker0 has target devices with invalid indices in its device map for "
             "worker1 (device map = {cuda:1: cuda:1}; device count of worker1 = 1)");
}

static void many_to_one(int rank, ferry_rpc_options *o)
{
    if (rank == 1) {
        map(o, "worker0", 0, 1);
        map(o, "worker0", 1, 1);
    }
}

Test(device_maps, duplicated_targets_are_not_one_to_one, .timeout = 60)
{
    run_case(2, 2, many_to_one,
             "Node worker1 has duplicated target devices in its device map for worker0 (device "
             "map = {cuda:0: cuda:1, cuda:1: cuda:1})");
}

static void source_outside_devices(int rank, ferry_rpc_options *o)
{
    if (rank == 0) {
        ferry_device d = FERRY_DEVICE_CUDA(1);
        ferry_rpc_options_set_devices(o, &d, 1);
        map(o, "worker1", 0, 0);
    }
}

Test(device_maps, source_outside_the_devices_list, .timeout = 60)
{
    run_case(2, 2, source_outside_devices,
             "Node worker0 has unexpected source devices in its device map for worker1 (device "
             "map = {cuda:0: cuda:0}; its devices list has 1)");
}

static void target_outside_devices(int rank, ferry_rpc_options *o)
{
    ferry_device d = FERRY_DEVICE_CUDA(1);
    if (rank == 0)
        map(o, "worker1", 0, 0);
    else
        ferry_rpc_options_set_devices(o, &d, 1);
}

Test(device_maps, target_outside_the_peer_devices_list, .timeout = 60)
{
    run_case(2, 2, target_outside_devices,
             "Node worker0 has unexpected target devices in its device map for worker1 (device "
             "map = {cuda:0: cuda:0}; the devices list of worker1 has 1)");
}

static void cuda_without_devices(int rank, ferry_rpc_options *o)
{
    if (rank == 0)
        map(o, "worker1", 0, 0);
}

Test(device_maps, cuda_maps_on_a_worker_without_devices, .timeout = 60)
{
    run_case(0, 1, cuda_without_devices,
             "Node worker0 has source devices with invalid indices in its device map for "
             "worker1 (device map = {cuda:0: cuda:0}; device count = 0)");
}

static void devices_past_count(int rank, ferry_rpc_options *o)
{
    ferry_device d[2] = {FERRY_DEVICE_CUDA(0), FERRY_DEVICE_CUDA(3)};
    if (rank == 1)
        ferry_rpc_options_set_devices(o, d, 2);
}

Test(device_maps, a_devices_list_past_the_count, .timeout = 60)
{
    run_case(2, 2, devices_past_count,
             "Node worker1 has devices with invalid indices (cuda:3; device count = 2)");
}

/* The 1-to-1 rule for one source is enforced when the map is set (torch does the same). */
Test(device_maps, one_to_many_is_refused_when_set, .timeout = 10)
{
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    cr_assert_eq(ferry_rpc_options_set_device_map(&o, "worker1", FERRY_DEVICE_CUDA(0),
                                                  FERRY_DEVICE_CUDA(1)), FERRY_OK);
    cr_assert_eq(ferry_rpc_options_set_device_map(&o, "worker1", FERRY_DEVICE_CUDA(0),
                                                  FERRY_DEVICE_CUDA(2)), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "`set_device_map` only supports 1-to-1 mapping, trying "
                     "to map cuda:0 to cuda:2 and cuda:1 (for worker worker1)");
}
