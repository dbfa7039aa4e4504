/* ferry_init_rpc's ways in: env://, tcp://, file://, torchrun- and Slurm-style environments,
   and its refusals: bad names, duplicate names, missing variables, double init. Then 32 workers
   on this machine that each call every other and shut down gracefully. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc_harness.h"

typedef struct {
    const char *mode; /* "env", "tcp", "file", "slurm" */
    int port;
    char path[128];
} init_case;

static ferry_status whoami(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_worker_info me;
    ferry_status rc = ferry_get_worker_info(NULL, &me);
    if (rc == FERRY_OK)
        *result = ferry_int(me.id);
    return rc;
}

static int init_rank(int rank, int world, void *arg)
{
    init_case *ic = arg;
    char buf[256], name[32];
    snprintf(name, sizeof name, "w%d", rank);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.rpc_timeout = 20;
    setenv("FERRY_TRANSPORT", "tcp", 1);
    unsetenv("RANK");
    unsetenv("WORLD_SIZE");
    int r = rank, w = world;
    if (!strcmp(ic->mode, "env") || !strcmp(ic->mode, "slurm")) {
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        snprintf(buf, sizeof buf, "%d", ic->port);
        setenv("MASTER_PORT", buf, 1);
        snprintf(buf, sizeof buf, "%d", rank);
        setenv(!strcmp(ic->mode, "env") ? "RANK" : "SLURM_PROCID", buf, 1);
        snprintf(buf, sizeof buf, "%d", world);
        setenv(!strcmp(ic->mode, "env") ? "WORLD_SIZE" : "SLURM_NTASKS", buf, 1);
        r = -1;
        w = 0;
    } else if (!strcmp(ic->mode, "tcp")) {
        snprintf(buf, sizeof buf, "tcp://127.0.0.1:%d", ic->port);
        o.init_method = buf;
    } else {
        snprintf(buf, sizeof buf, "file://%s", ic->path);
        o.init_method = buf;
    }
    if (ferry_init_rpc(name, r, w, &o) != FERRY_OK) {
        fprintf(stderr, "rank %d init: %s\n", rank, ferry_last_error());
        return 1;
    }
    /* A second init fails while the first is running. */
    RANK_CHECK(ferry_init_rpc(name, r, w, &o) == FERRY_EINVAL);
    RANK_CHECK(strstr(ferry_last_error(), "RPC is already initialized"));
    ferry_worker_info all[8];
    size_t n = 0;
    RANK_CHECK(ferry_get_worker_infos(all, 8, &n) == FERRY_OK && n == (size_t)world);
    snprintf(name, sizeof name, "w%d", (rank + 1) % world);
    RANK_CHECK(!strcmp(all[(rank + 1) % world].name, name));
    ferry_value *none = ferry_list_of(0);
    ferry_value *v = ferry_rpc_sync(name, "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == (rank + 1) % world);
    ferry_value_release(v);
    ferry_value_release(none);
    RANK_CHECK(ferry_shutdown(true, 0) == FERRY_OK);
    return 0;
}

static void run_mode(const char *mode, int world)
{
    ferry_register_function("whoami", whoami, NULL);
    init_case ic = {.mode = mode, .port = ferry_test_free_port()};
    rpc_test_set_token();
    snprintf(ic.path, sizeof ic.path, "/tmp/ferry_init_test_%d", (int)getpid());
    unlink(ic.path);
    ferry_test_run_ranks(world, init_rank, &ic, 40);
    unlink(ic.path);
}

Test(rpc_init, workers_meet_when_env_method, .timeout = 45) { run_mode("env", 3); }
Test(rpc_init, workers_meet_when_tcp_method, .timeout = 45) { run_mode("tcp", 3); }
Test(rpc_init, workers_meet_when_file_method, .timeout = 45) { run_mode("file", 3); }
Test(rpc_init, workers_meet_when_slurm_environment, .timeout = 45) { run_mode("slurm", 2); }

Test(rpc_init, fails_with_einval_when_name_is_bad, .timeout = 10)
{
    char long_name[200];
    memset(long_name, 'a', 128);
    long_name[128] = '\0';
    cr_assert_eq(ferry_init_rpc(long_name, 0, 1, NULL), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "shorter than 128"));
    cr_assert_eq(ferry_init_rpc("has space", 0, 1, NULL), FERRY_EINVAL);
    cr_assert_eq(ferry_init_rpc("", 0, 1, NULL), FERRY_EINVAL);
}

Test(rpc_init, names_the_variable_when_environment_is_incomplete, .timeout = 10)
{
    unsetenv("MASTER_ADDR");
    setenv("MASTER_PORT", "29500", 1);
    cr_assert_eq(ferry_init_rpc("w0", 0, 1, NULL), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "MASTER_ADDR"), "%s", ferry_last_error());
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    unsetenv("MASTER_PORT");
    cr_assert_eq(ferry_init_rpc("w0", 0, 1, NULL), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "MASTER_PORT"), "%s", ferry_last_error());
    setenv("MASTER_PORT", "29500", 1);
    unsetenv("RANK");
    unsetenv("SLURM_PROCID");
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("PMI_RANK");
    cr_assert_eq(ferry_init_rpc("w0", -1, 1, NULL), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "RANK"), "%s", ferry_last_error());
}

/* Options joining through the tcp:// store of `ic` on loopback, with the given timeout. `buf`
   holds the init method and must outlive the options. */
static void tcp_options(const init_case *ic, char *buf, size_t cap, double timeout,
                        ferry_rpc_options *o)
{
    snprintf(buf, cap, "tcp://127.0.0.1:%d", ic->port);
    ferry_rpc_options_init(o);
    o->init_method = buf;
    o->rpc_timeout = timeout;
}

static int dup_rank(int rank, int world, void *arg)
{
    init_case *ic = arg;
    char buf[64];
    ferry_rpc_options o;
    tcp_options(ic, buf, sizeof buf, 10, &o);
    setenv("FERRY_TRANSPORT", "tcp", 1);
    RANK_CHECK(ferry_init_rpc("same", rank, world, &o) == FERRY_EINVAL);
    RANK_CHECK(strstr(ferry_last_error(), "is not unique"));
    return 0;
}

Test(rpc_init, fails_on_every_worker_when_names_repeat, .timeout = 30)
{
    init_case ic = {.mode = "tcp", .port = ferry_test_free_port()};
    rpc_test_set_token();
    ferry_test_run_ranks(2, dup_rank, &ic, 25);
}

static int late_rank(int rank, int world, void *arg)
{
    init_case *ic = arg;
    if (rank == 2)
        return 0; /* never joins */
    char buf[64], name[16];
    snprintf(name, sizeof name, "w%d", rank);
    ferry_rpc_options o;
    tcp_options(ic, buf, sizeof buf, 1, &o);
    setenv("FERRY_TRANSPORT", "tcp", 1);
    RANK_CHECK(ferry_init_rpc(name, rank, world, &o) == FERRY_ETIMEDOUT);
    RANK_CHECK(rank != 0 || strstr(ferry_last_error(), "rank 2 never arrived"));
    return 0;
}

Test(rpc_init, names_missing_ranks_when_init_times_out, .timeout = 30)
{
    init_case ic = {.mode = "tcp", .port = ferry_test_free_port()};
    rpc_test_set_token();
    ferry_test_run_ranks(3, late_rank, &ic, 25);
}

/* 32 workers: each calls every other once, then all shut down gracefully. */
static int many_rank(int rank, int world, void *arg)
{
    init_case *ic = arg;
    char buf[64], name[16];
    snprintf(name, sizeof name, "w%d", rank);
    ferry_rpc_options o;
    tcp_options(ic, buf, sizeof buf, 60, &o);
    o.num_worker_threads = 2;
    RANK_CHECK(ferry_init_rpc(name, rank, world, &o) == FERRY_OK);
    ferry_value *none = ferry_list_of(0);
    ferry_future *fs[64];
    for (int i = 0; i < world; i++) {
        snprintf(name, sizeof name, "w%d", i);
        RANK_CHECK(fs[i] = ferry_rpc_async(name, "whoami", none, NULL, FERRY_TIMEOUT_DEFAULT));
    }
    for (int i = 0; i < world; i++) {
        ferry_value *v = ferry_future_value(fs[i]);
        RANK_CHECK(v && ferry_value_as_int(v) == i);
        ferry_value_release(v);
        ferry_future_release(fs[i]);
    }
    ferry_value_release(none);
    RANK_CHECK(ferry_shutdown(true, 0) == FERRY_OK);
    return 0;
}

Test(rpc_init, thirty_two_workers_call_each_other_when_on_one_host, .timeout = 120)
{
    ferry_register_function("whoami", whoami, NULL);
    init_case ic = {.mode = "tcp", .port = ferry_test_free_port()};
    rpc_test_set_token();
    ferry_test_run_ranks(32, many_rank, &ic, 110);
}

Test(rpc_init, refuses_a_negative_rank_or_world_size_other_than_from_the_environment,
     .timeout = 10)
{
    cr_expect_eq(ferry_init_rpc("w", -2, 2, NULL), FERRY_EINVAL);
    cr_expect(strstr(ferry_last_error(), "rank -2: a rank is 0 or more, or -1"), "%s",
              ferry_last_error());
    cr_expect_eq(ferry_init_rpc("w", 0, -1, NULL), FERRY_EINVAL);
    cr_expect(strstr(ferry_last_error(), "world size -1: a world size is 1 or more, or 0"), "%s",
              ferry_last_error());
    cr_expect_eq(ferry_init_rpc("w", 3, 2, NULL), FERRY_EINVAL, "a rank past the world");
}
