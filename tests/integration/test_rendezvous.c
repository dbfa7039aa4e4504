/* Rendezvous with forked workers over every init_method and launcher environment (torchrun,
   Slurm, mpirun), its error messages, 32 workers at once, and the collectives. The ferryrun
   launcher has its own tests (test_ferryrun.c). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "test_util.h"
#include "transport/rendezvous.h"

typedef struct {
    const char *init_method; /* NULL = env:// from the environment */
    const char *env_style;   /* "torchrun", "slurm", "args", "ompi" */
    int port;
    int world_size;          /* the world the workers are told about */
    const char *token;
    double timeout_s;
    int dup_a, dup_b;        /* ranks that share a name (dup_a == dup_b: none) */
} scenario;

static void set_int(const char *name, int v)
{
    char text[16];
    snprintf(text, sizeof text, "%d", v);
    setenv(name, text, 1);
}

static void set_env(const scenario *s, int rank)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", port, 1);
    if (!strcmp(s->env_style, "torchrun")) {
        set_int("RANK", rank);
        set_int("WORLD_SIZE", s->world_size);
        set_int("LOCAL_RANK", rank);
        set_int("LOCAL_WORLD_SIZE", s->world_size);
    } else if (!strcmp(s->env_style, "slurm")) {
        unsetenv("RANK");
        unsetenv("WORLD_SIZE");
        set_int("SLURM_PROCID", rank);
        set_int("SLURM_NTASKS", s->world_size);
    } else if (!strcmp(s->env_style, "ompi")) {
        unsetenv("RANK");
        unsetenv("WORLD_SIZE");
        set_int("OMPI_COMM_WORLD_RANK", rank);
        set_int("OMPI_COMM_WORLD_SIZE", s->world_size);
    }
}

static void name_of(const scenario *s, int rank, char *out, size_t len)
{
    if (s->dup_a != s->dup_b && (rank == s->dup_a || rank == s->dup_b))
        snprintf(out, len, "dup");
    else
        snprintf(out, len, "worker:%d", rank);
}

static ferry__rendezvous *join(const scenario *s, int rank)
{
    char name[32], addr[32];
    set_env(s, rank);
    name_of(s, rank, name, sizeof name);
    int len = snprintf(addr, sizeof addr, "fabric-address-of-%d", rank);
    bool from_env = strcmp(s->env_style, "args") != 0;
    return ferry__rendezvous_join(s->init_method, from_env ? -1 : rank,
                                  from_env ? 0 : s->world_size, name, addr, (size_t)len,
                                  s->timeout_s ? s->timeout_s : 20,
                                  s->token ? s->token : "rendezvous-test-token");
}

/* Checks the table, then a barrier and an all-reduce. 0 = all good. */
static int full_join(int rank, int world_size, void *arg)
{
    const scenario *s = arg;
    ferry__rendezvous *rdv = join(s, rank);
    if (!rdv) {
        fprintf(stderr, "rank %d: join failed: %s\n", rank, ferry_last_error());
        return 1;
    }
    int n = 0;
    const ferry__peer_entry *peers = ferry__rendezvous_peers(rdv, &n);
    if (n != world_size)
        return 2;
    for (int r = 0; r < n; r++) {
        char name[32], addr[32];
        name_of(s, r, name, sizeof name);
        int len = snprintf(addr, sizeof addr, "fabric-address-of-%d", r);
        if (peers[r].rank != r || strcmp(peers[r].name, name) || peers[r].addr_len != (size_t)len ||
            memcmp(peers[r].addr, addr, (size_t)len))
            return 3;
    }
    int64_t sum = 0;
    if (ferry__rendezvous_barrier(rdv, "after-join", 20) != FERRY_OK ||
        ferry__rendezvous_allreduce_sum(rdv, "ranks", rank + 1, &sum, 20) != FERRY_OK ||
        sum != (int64_t)world_size * (world_size + 1) / 2) {
        fprintf(stderr, "rank %d: collective failed: %s\n", rank, ferry_last_error());
        return 4;
    }
    ferry__rendezvous_free(rdv);
    return 0;
}

Test(transport_rendezvous, four_workers_join_when_init_method_is_env, .timeout = 30)
{
    scenario s = {.init_method = "env://", .env_style = "args", .port = ferry_test_free_port(),
                  .world_size = 4};
    ferry_test_run_ranks(4, full_join, &s, 25);
}

Test(transport_rendezvous, four_workers_join_when_environment_is_torchrun_style, .timeout = 30)
{
    scenario s = {.env_style = "torchrun", .port = ferry_test_free_port(), .world_size = 4,
                  .token = "0123abcd"};
    ferry_test_run_ranks(4, full_join, &s, 25);
}

Test(transport_rendezvous, four_workers_join_when_environment_is_slurm_style, .timeout = 30)
{
    scenario s = {.env_style = "slurm", .port = ferry_test_free_port(), .world_size = 4};
    ferry_test_run_ranks(4, full_join, &s, 25);
}

Test(transport_rendezvous, four_workers_join_when_environment_is_mpirun_style, .timeout = 30)
{
    scenario s = {.env_style = "ompi", .port = ferry_test_free_port(), .world_size = 4};
    ferry_test_run_ranks(4, full_join, &s, 25);
}

Test(transport_rendezvous, four_workers_join_when_init_method_is_tcp, .timeout = 30)
{
    char method[64];
    scenario s = {.init_method = method, .env_style = "args", .port = ferry_test_free_port(),
                  .world_size = 4, .token = "secret"};
    snprintf(method, sizeof method, "tcp://127.0.0.1:%d", s.port);
    ferry_test_run_ranks(4, full_join, &s, 25);
}

Test(transport_rendezvous, four_workers_join_and_file_is_removed_when_init_method_is_file,
     .timeout = 30)
{
    char dir[] = "/tmp/ferry-rdv-XXXXXX", method[96], path[64];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/store", dir);
    snprintf(method, sizeof method, "file://%s", path);
    scenario s = {.init_method = method, .env_style = "args", .world_size = 4};
    ferry_test_run_ranks(4, full_join, &s, 25);
    struct stat sb;
    cr_assert(stat(path, &sb) != 0, "the last worker out should remove the store file");
    rmdir(dir);
}

Test(transport_rendezvous, thirty_two_workers_all_see_the_full_table_when_joining, .timeout = 60)
{
    scenario s = {.env_style = "torchrun", .port = ferry_test_free_port(), .world_size = 32,
                  .token = "tok"};
    ferry_test_run_ranks(32, full_join, &s, 55);
}

static int expect_duplicate(int rank, int world_size, void *arg)
{
    ferry__rendezvous *rdv = join(arg, rank);
    if (rdv || ferry_last_status() != FERRY_EINVAL ||
        strcmp(ferry_last_error(),
               "RPC worker name dup is not unique. Workers 0 and 3 share the same name.")) {
        fprintf(stderr, "rank %d: %s\n", rank, ferry_last_error());
        return 1;
    }
    return 0;
}

Test(transport_rendezvous, every_worker_fails_with_einval_when_two_share_a_name, .timeout = 30)
{
    scenario s = {.env_style = "torchrun", .port = ferry_test_free_port(), .world_size = 4,
                  .dup_a = 0, .dup_b = 3};
    ferry_test_run_ranks(4, expect_duplicate, &s, 25);
}

static int expect_timeout(int rank, int world_size, void *arg)
{
    ferry__rendezvous *rdv = join(arg, rank);
    if (rdv || ferry_last_status() != FERRY_ETIMEDOUT ||
        strcmp(ferry_last_error(), "rendezvous timed out after 1 s: rank 2 never arrived")) {
        fprintf(stderr, "rank %d: %s\n", rank, ferry_last_error());
        return 1;
    }
    return 0;
}

Test(transport_rendezvous, join_names_the_missing_rank_when_one_never_starts, .timeout = 20)
{
    scenario s = {.env_style = "torchrun", .port = ferry_test_free_port(), .world_size = 3,
                  .timeout_s = 1};
    ferry_test_run_ranks(2, expect_timeout, &s, 15); /* ranks 0 and 1 of 3 */
}

static int expect_auth_failure(int rank, int world_size, void *arg)
{
    scenario s = *(const scenario *)arg;
    s.token = rank == 0 ? "right" : "wrong";
    ferry__rendezvous *rdv = join(&s, rank);
    ferry_status want = rank == 0 ? FERRY_ETIMEDOUT : FERRY_EAUTH;
    if (rdv || ferry_last_status() != want) {
        fprintf(stderr, "rank %d: %s\n", rank, ferry_last_error());
        return 1;
    }
    return 0;
}

Test(transport_rendezvous, join_fails_with_eauth_when_tokens_differ, .timeout = 20)
{
    scenario s = {.env_style = "torchrun", .port = ferry_test_free_port(), .world_size = 2,
                  .timeout_s = 1};
    ferry_test_run_ranks(2, expect_auth_failure, &s, 15);
}

static int repeated_rounds(int rank, int world_size, void *arg)
{
    ferry__rendezvous *rdv = join(arg, rank);
    if (!rdv)
        return 1;
    for (int i = 0; i < 5; i++) {
        char name[32];
        int64_t sum = -1;
        snprintf(name, sizeof name, "shutdown/%d", i);
        /* torch's graceful shutdown: barrier, all-reduce the active counts, stop at 0. */
        if (ferry__rendezvous_barrier(rdv, name, 20) != FERRY_OK ||
            ferry__rendezvous_allreduce_sum(rdv, name, i < 3 ? rank : 0, &sum, 20) != FERRY_OK)
            return 2;
        if (sum != (i < 3 ? world_size * (world_size - 1) / 2 : 0))
            return 3;
        /* The same name again is a new round, not the finished one. */
        if (ferry__rendezvous_allreduce_sum(rdv, "same", 1, &sum, 20) != FERRY_OK ||
            sum != world_size)
            return 4;
        if (ferry__rendezvous_barrier(rdv, "same", 20) != FERRY_OK)
            return 5;
    }
    ferry__rendezvous_free(rdv);
    return 0;
}

Test(transport_rendezvous, collectives_agree_when_rounds_repeat_names, .timeout = 30)
{
    scenario s = {.env_style = "torchrun", .port = ferry_test_free_port(), .world_size = 4};
    ferry_test_run_ranks(4, repeated_rounds, &s, 25);
}

static int barrier_missing_rank(int rank, int world_size, void *arg)
{
    ferry__rendezvous *rdv = join(arg, rank);
    if (!rdv)
        return 1;
    if (rank == 0) {
        if (ferry__rendezvous_barrier(rdv, "early", 0.3) != FERRY_ETIMEDOUT ||
            strcmp(ferry_last_error(), "barrier 'early' timed out after 0.3 s: rank 1 never arrived"))
            return fprintf(stderr, "%s\n", ferry_last_error()), 2;
    }
    if (ferry__rendezvous_barrier(rdv, "late", 20) != FERRY_OK)
        return 3;
    ferry__rendezvous_free(rdv);
    return 0;
}

Test(transport_rendezvous, barrier_names_the_missing_rank_when_it_times_out, .timeout = 30)
{
    scenario s = {.env_style = "torchrun", .port = ferry_test_free_port(), .world_size = 2};
    ferry_test_run_ranks(2, barrier_missing_rank, &s, 25);
}

/* ---- names and the environment (no store needed) ---------------------------------------- */

Test(transport_rendezvous, join_fails_with_einval_before_contacting_anyone_when_name_is_bad,
     .timeout = 10)
{
    char name[130];
    memset(name, 'a', 128);
    name[128] = '\0';
    /* A port nobody serves and a long timeout: only an early check returns at once. */
    char method[64];
    snprintf(method, sizeof method, "tcp://127.0.0.1:%d", ferry_test_free_port());
    const char *bad[] = {name, "", "has space", "slash/name", "dot.name"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_null(ferry__rendezvous_join(method, 1, 2, bad[i], NULL, 0, 600, NULL));
        cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
        char want[300];
        snprintf(want, sizeof want,
                 "Worker name must match ^[A-Za-z0-9-_:]*$, and must be non-empty and shorter "
                 "than 128 chars, but got %s",
                 bad[i]);
        cr_assert_str_eq(ferry_last_error(), want);
    }
}

Test(transport_rendezvous, join_accepts_a_127_byte_name_when_alone, .timeout = 10)
{
    char name[128], method[64];
    memset(name, 'b', 127);
    name[127] = '\0';
    memcpy(name, "Az09_:-", 7);
    snprintf(method, sizeof method, "tcp://127.0.0.1:%d", ferry_test_free_port());
    ferry__rendezvous *rdv = ferry_assert_ptr(ferry__rendezvous_join(method, 0, 1, name, "x", 1, 5, "tok"));
    int n = 0;
    const ferry__peer_entry *peers = ferry__rendezvous_peers(rdv, &n);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(peers[0].name, name);
    ferry__rendezvous_free(rdv);
}

static void clear_env(void)
{
    const char *vars[] = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "SLURM_PROCID",
                          "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                          "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
}

static void expect_missing(const char *var)
{
    int rank = -1, world = 0;
    ferry_assert_status(ferry__rendezvous_resolve_env("env://", &rank, &world, NULL, NULL, NULL),
                        FERRY_EINVAL);
    char want[128];
    snprintf(want, sizeof want, "environment variable %s expected, but not set", var);
    cr_assert_str_eq(ferry_last_error(), want);
}

Test(transport_rendezvous, resolve_names_the_variable_when_one_is_missing, .timeout = 10)
{
    clear_env();
    expect_missing("RANK");
    setenv("RANK", "1", 1);
    expect_missing("WORLD_SIZE");
    setenv("WORLD_SIZE", "2", 1);
    expect_missing("MASTER_ADDR");
    setenv("MASTER_ADDR", "10.1.2.3", 1);
    expect_missing("MASTER_PORT");
    setenv("MASTER_PORT", "29500", 1);
    int rank = -1, world = 0, port = 0;
    char *host = NULL, *path = (char *)"untouched";
    ferry_assert_ok(ferry__rendezvous_resolve_env(NULL, &rank, &world, &host, &port, &path));
    cr_assert(rank == 1 && world == 2 && port == 29500 && path == NULL);
    cr_assert_str_eq(host, "10.1.2.3");
    ferry__free(host);
}

Test(transport_rendezvous, resolve_falls_back_when_launcher_is_pmi_or_slurm, .timeout = 10)
{
    clear_env();
    setenv("PMI_RANK", "3", 1);
    setenv("PMI_SIZE", "8", 1);
    setenv("MASTER_ADDR", "h", 1);
    setenv("MASTER_PORT", "1234", 1);
    int rank = -1, world = 0;
    ferry_assert_ok(ferry__rendezvous_resolve_env("env://", &rank, &world, NULL, NULL, NULL));
    cr_assert(rank == 3 && world == 8);
    setenv("SLURM_PROCID", "5", 1); /* Slurm's names come before PMI's */
    setenv("SLURM_NTASKS", "6", 1);
    rank = -1;
    world = 0;
    ferry_assert_ok(ferry__rendezvous_resolve_env("env://", &rank, &world, NULL, NULL, NULL));
    cr_assert(rank == 5 && world == 6);
}

Test(transport_rendezvous, resolve_fails_with_einval_when_rank_or_method_is_bad, .timeout = 10)
{
    clear_env();
    int rank = 4, world = 4, port = 0;
    char *host = NULL, *path = NULL;
    ferry_assert_status(ferry__rendezvous_resolve_env("tcp://h:1", &rank, &world, NULL, NULL, NULL),
                        FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "rank 4 is out of range for world size 4");
    rank = 0;
    ferry_assert_status(ferry__rendezvous_resolve_env("tcp://nohost", &rank, &world, NULL, NULL, NULL),
                        FERRY_EINVAL);
    ferry_assert_status(ferry__rendezvous_resolve_env("udp://h:1", &rank, &world, NULL, NULL, NULL),
                        FERRY_EINVAL);
    setenv("MASTER_ADDR", "h", 1);
    setenv("MASTER_PORT", "http", 1);
    ferry_assert_status(ferry__rendezvous_resolve_env("env://", &rank, &world, NULL, NULL, NULL),
                        FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "MASTER_PORT"), "%s", ferry_last_error());
    rank = -1;
    world = 0;
    ferry_assert_ok(ferry__rendezvous_resolve_env("tcp://[::1]:4000?rank=2&world_size=3", &rank,
                                                  &world, &host, &port, &path));
    cr_assert(rank == 2 && world == 3 && port == 4000 && path == NULL);
    cr_assert_str_eq(host, "::1");
    ferry__free(host);
    ferry_assert_ok(ferry__rendezvous_resolve_env("file:///tmp/x", &rank, &world, &host, &port,
                                                  &path));
    cr_assert(host == NULL);
    cr_assert_str_eq(path, "/tmp/x");
    ferry__free(path);
}
