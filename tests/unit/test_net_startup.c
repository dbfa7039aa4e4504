/* What keeps a process's fabric start cheap. libfabric's start as net_fi_init.c does it: the
   caller's thread keeps every right it had, libfabric still finds its providers, the rxm
   default is set only when the user did not set one. And net.c opens only shm when the
   launcher says every rank is on this host. Each test runs in a process of its own, so each
   sees libfabric start afresh. */
#include <pthread.h>
#include <rdma/fabric.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "transport/launcher.h"
#include "transport/net.h"
#include "transport/net_fi_init.h"

/* The value of a "Name:\tvalue" line of this thread's status, or -1. */
static long thread_status(const char *name)
{
    FILE *f = fopen("/proc/thread-self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    fclose(f);
    return v;
}

static int getinfo_rc(const char *prov)
{
    struct fi_info *hints = fi_allocinfo(), *info = NULL;
    cr_assert_not_null(hints);
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_MSG | FI_TAGGED;
    hints->fabric_attr->prov_name = strdup(prov);
    int rc = fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &info);
    fi_freeinfo(info);
    fi_freeinfo(hints);
    return rc;
}

Test(net_fi_init, caller_thread_keeps_its_rights)
{
    long seccomp = thread_status("Seccomp"), nnp = thread_status("NoNewPrivs");
    ferry__net_fi_init();
    ferry__net_fi_init(); /* once only */
    cr_expect_eq(thread_status("Seccomp"), seccomp);
    cr_expect_eq(thread_status("NoNewPrivs"), nnp);
    if (access("/proc/kallsyms", R_OK) == 0) { /* where the kernel has it, we still read it */
        FILE *f = fopen("/proc/kallsyms", "r");
        cr_expect_not_null(f);
        if (f)
            fclose(f);
    }
}

static void *start_from_thread(void *arg)
{
    (void)arg;
    ferry__net_fi_init();
    return NULL;
}

Test(net_fi_init, providers_found_afterwards)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, start_from_thread, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_expect_eq(getinfo_rc("tcp;ofi_rxm"), 0);
    cr_expect_eq(getinfo_rc("shm"), 0);
}

Test(net_fi_init, user_rxm_setting_kept)
{
    setenv("FI_OFI_RXM_MSG_RX_SIZE", "333", 1);
    ferry__net_fi_init();
    cr_expect_str_eq(getenv("FI_OFI_RXM_MSG_RX_SIZE"), "333");
    cr_expect_eq(getinfo_rc("tcp;ofi_rxm"), 0);
}

Test(net_fi_init, full_init_on_request)
{
    setenv("FERRY_FABRIC_FULL_INIT", "1", 1);
    ferry__net_fi_init();
    cr_expect_eq(getinfo_rc("tcp;ofi_rxm"), 0);
}

/* ---- only shm when the launcher says every rank is here ---- */

static bool blob_names(ferry__net *net, const char *prov)
{
    const void *blob = NULL;
    size_t len = 0;
    cr_assert_eq(ferry__net_local_address(net, &blob, &len), FERRY_OK);
    return memmem(blob, len, prov, strlen(prov)) != NULL;
}

Test(net_open_local, all_local_opens_shm_only)
{
    ferry__net_options o = {.peers_all_local = true};
    ferry__net *net = ferry__net_open(&o, NULL);
    cr_assert_not_null(net, "%s", ferry_last_error());
    cr_expect(blob_names(net, "shm"));
    cr_expect(!blob_names(net, "tcp;ofi_rxm"));
    ferry__net_close(net);
}

Test(net_open_local, otherwise_both)
{
    ferry__net_options o = {.peers_all_local = false};
    ferry__net *net = ferry__net_open(&o, NULL);
    cr_assert_not_null(net, "%s", ferry_last_error());
    cr_expect(blob_names(net, "shm"));
    cr_expect(blob_names(net, "tcp;ofi_rxm"));
    ferry__net_close(net);
}

Test(net_open_local, forced_transport_wins)
{
    ferry__net_options o = {.peers_all_local = true, .transport = "tcp"};
    ferry__net *net = ferry__net_open(&o, NULL);
    cr_assert_not_null(net, "%s", ferry_last_error());
    cr_expect(blob_names(net, "tcp;ofi_rxm"));
    cr_expect(!blob_names(net, "shm"));
    ferry__net_close(net);
}

static void clear_launcher_env(void)
{
    const char *vars[] = {"RANK", "WORLD_SIZE", "MASTER_ADDR", "LOCAL_WORLD_SIZE", "FERRY_LAUNCHER",
                          "SLURM_PROCID", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                          "SLURM_NODEID", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
}

Test(net_open_local, launcher_local_counts)
{
    clear_launcher_env();
    cr_expect_eq(ferry__launch_local_world_size(), -1);
    setenv("RANK", "0", 1);
    setenv("WORLD_SIZE", "8", 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("LOCAL_WORLD_SIZE", "4", 1);
    cr_expect_eq(ferry__launch_local_world_size(), 4);
    clear_launcher_env();
    setenv("SLURM_PROCID", "1", 1);
    setenv("SLURM_NODEID", "0", 1);
    setenv("SLURM_STEP_TASKS_PER_NODE", "3(x2)", 1);
    cr_expect_eq(ferry__launch_local_world_size(), 3);
    clear_launcher_env();
    setenv("OMPI_COMM_WORLD_RANK", "2", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "5", 1);
    cr_expect_eq(ferry__launch_local_world_size(), 5);
}

Test(net_open_local, peer_elsewhere_is_named)
{
    ferry__net_options o = {.peers_all_local = true};
    ferry__net *net = ferry__net_open(&o, NULL);
    cr_assert_not_null(net, "%s", ferry_last_error());
    const void *blob = NULL;
    size_t len = 0;
    cr_assert_eq(ferry__net_local_address(net, &blob, &len), FERRY_OK);
    unsigned char *other = malloc(len);
    cr_assert_not_null(other);
    memcpy(other, blob, len);
    other[8] ^= 1; /* the first byte of the host name: the same blob from another host */
    const void *blobs[2] = {blob, other};
    size_t lens[2] = {len, len};
    cr_expect_eq(ferry__net_set_peers(net, 0, 2, blobs, lens), FERRY_ETRANSPORT);
    cr_expect(strstr(ferry_last_error(), "another host") != NULL, "%s", ferry_last_error());
    cr_expect(strstr(ferry_last_error(), "FERRY_TRANSPORT=tcp") != NULL);
    free(other);
    ferry__net_close(net);
}

/* The one variable ferry sets for libfabric is set when the library loads, before main: by the
   time anything of ferry runs, threads (the store's, the user's) may be reading the
   environment, and a setenv then can crash them. Criterion's runner loaded the library before
   forking this test, and its environment did not set it, so it is ferry's default already; a
   later ferry__net_fi_init leaves it alone. */
Test(net_fi_init, rxm_receive_pool_default_set_before_main)
{
    const char *v = getenv("FI_OFI_RXM_MSG_RX_SIZE");
    cr_assert_not_null(v, "FI_OFI_RXM_MSG_RX_SIZE is not set before any ferry call");
    cr_expect_str_eq(v, "1024");
    unsetenv("FI_OFI_RXM_MSG_RX_SIZE");
    ferry__net_fi_init();
    cr_expect_null(getenv("FI_OFI_RXM_MSG_RX_SIZE"), "ferry_init set the environment again");
}
