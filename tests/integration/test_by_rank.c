/* Workers addressed by rank: "#<rank>" wherever a call takes a worker's name (rpc_sync,
   rpc_async, remote), ferry_get_worker_info_by_rank and ferry_get_all_worker_infos, and the
   errors for ranks the world does not have, for unknown names (which list the workers) and for
   names no worker can have. */
#include <stdio.h>
#include <string.h>

#include "rpc_harness.h"

static int body_by_rank(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_value *none = ferry_list_of(0);
    ferry_value *v = ferry_rpc_sync("#1", "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "worker1"));
    ferry_value_release(v);
    ferry_future *f = ferry_rpc_async("#0", "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT);
    v = f ? ferry_future_value(f) : NULL;
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "worker0"));
    ferry_value_release(v);
    ferry_future_release(f);
    ferry_rref *r = ferry_remote("#2", "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r);
    v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && !strcmp(ferry_value_as_string(v), "worker2"));
    ferry_value_release(v);
    ferry_rref_release(r);

    const char *bad[] = {"#3", "#-1", "#1x", "#", "# 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        RANK_CHECK(!ferry_rpc_sync(bad[i], "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT));
        RANK_CHECK(ferry_last_status() == FERRY_EUNKNOWN_WORKER);
        RANK_CHECK(strstr(ferry_last_error(), "ranks 0 to 2"));
    }
    /* An unknown name lists the workers there are; a name no worker can have says so. */
    RANK_CHECK(!ferry_rpc_sync("nobody", "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EUNKNOWN_WORKER);
    RANK_CHECK(strstr(ferry_last_error(), "could not find destination name nobody"));
    RANK_CHECK(strstr(ferry_last_error(), "the workers are 'worker0', 'worker1' and 'worker2'"));
    RANK_CHECK(!ferry_rpc_sync("bad name!", "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(ferry_last_status() == FERRY_EINVAL);
    RANK_CHECK(strstr(ferry_last_error(), "'bad name!' is not a valid worker name"));
    ferry_value_release(none);

    ferry_worker_info info;
    RANK_CHECK(ferry_get_worker_info("bad name!", &info) == FERRY_EINVAL);
    RANK_CHECK(ferry_get_worker_info_by_rank(2, &info) == FERRY_OK);
    RANK_CHECK(!strcmp(info.name, "worker2") && info.id == 2);
    RANK_CHECK(ferry_get_worker_info("#1", &info) == FERRY_OK && info.id == 1);
    RANK_CHECK(ferry_get_worker_info_by_rank(3, &info) == FERRY_EUNKNOWN_WORKER);
    RANK_CHECK(strstr(ferry_last_error(), "no rank 3"));
    RANK_CHECK(ferry_get_worker_info_by_rank(0, NULL) == FERRY_EINVAL);
    ferry_worker_info all[4];
    size_t n = 0;
    RANK_CHECK(ferry_get_all_worker_infos(all, 4, &n) == FERRY_OK && n == 3);
    for (int i = 0; i < 3; i++)
        RANK_CHECK(all[i].id == i);
    return 0;
}

Test(rpc_by_rank, calls_and_worker_infos_take_a_rank_when_given_as_hash_n, .timeout = 40)
{
    cr_assert(ferry_register_function("whoami", rpc_test_whoami, NULL) == FERRY_OK);
    rpc_case_run("shm", 3, body_by_rank, NULL, 35);
}

Test(rpc_by_rank, worker_info_by_rank_says_shutdown_when_not_initialized, .timeout = 10)
{
    ferry_worker_info info;
    cr_expect_eq(ferry_get_worker_info_by_rank(0, &info), FERRY_ESHUTDOWN);
}
