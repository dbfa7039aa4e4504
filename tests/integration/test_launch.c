/* Launcher environments: Slurm host lists and derived stores, the per-user secret and the job
   tokens made from it, ferry_launch_detect for each launcher's variables (and the incomplete
   ones), pmix:// without a PMIx launcher, and a job that meets with no name, no token and no
   MASTER_ADDR set by hand, as under srun. The real launchers run in tests/launchers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry/launch.h"
#include "rpc_harness.h"
#include "core/alloc.h"
#include "transport/init_method.h"
#include "transport/launcher.h"
#include "transport/net_iface.h"

static void clear_launcher_env(void)
{
    static const char *const vars[] = {
        "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
        "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "FERRY_LAUNCHER", "SLURM_JOB_ID",
        "SLURM_JOBID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_PROCID", "SLURM_NTASKS",
        "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NNODES", "SLURM_STEP_NUM_NODES",
        "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_STEP_NODELIST",
        "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_LAUNCH_NODE_IPADDR",
        "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_RANK", "PMIX_NAMESPACE", "PMIX_SERVER_URI41",
        "PMIX_SERVER_URI4", "PMIX_SERVER_URI3", "PMIX_SERVER_URI2", "PMIX_SERVER_URI21",
        "PMI_RANK", "PMI_SIZE", "FERRY_AUTH_TOKEN", "FERRY_INSECURE", "FERRY_SECRET_FILE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
}

/* A fresh HOME, so the secret made there is this test's alone. */
static void fresh_home(char *dir, size_t cap)
{
    ferry_test_mkdtemp(dir, cap, "ferry_launch_home");
    setenv("HOME", dir, 1);
}

static void slurm_env(const char *job, const char *step, int procid, int ntasks)
{
    char text[16];
    setenv("SLURM_JOB_ID", job, 1);
    setenv("SLURM_STEP_ID", step, 1);
    snprintf(text, sizeof text, "%d", procid);
    setenv("SLURM_PROCID", text, 1);
    snprintf(text, sizeof text, "%d", ntasks);
    setenv("SLURM_NTASKS", text, 1);
}

/* ---- Slurm host lists and stores --------------------------------------------------------- */

Test(transport_launch, first_host_takes_the_first_of_every_slurm_list_form, .timeout = 10)
{
    static const char *const cases[][2] = {
        {"node[01-04,07],gpu5", "node01"}, {"n1,n2", "n1"}, {"gpu5", "gpu5"},
        {"rack[3-4]-n[009-012]", "rack3-n009"}, {"10.0.0.7", "10.0.0.7"}, {"c[7]", "c7"}};
    char out[64];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cr_assert(ferry__launch_first_host(cases[i][0], out, sizeof out), "%s", cases[i][0]);
        cr_assert_str_eq(out, cases[i][1]);
    }
    static const char *const bad[] = {"", "node[", "node[]", "]x", "n[1-2", "n[a]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert(!ferry__launch_first_host(bad[i], out, sizeof out), "'%s' accepted", bad[i]);
    cr_assert(!ferry__launch_first_host("averylongnodename", out, 8), "overflow accepted");
}

Test(transport_launch, slurm_store_is_the_first_node_and_a_port_from_the_job, .timeout = 10)
{
    clear_launcher_env();
    char *host = (char *)"untouched";
    int port = 0;
    ferry_assert_ok(ferry__launch_slurm_store(&host, &port));
    cr_assert_null(host, "not under Slurm: no store");
    slurm_env("1234", "2", 0, 4);
    setenv("SLURM_JOB_NODELIST", "other[1-9]", 1);
    setenv("SLURM_STEP_NODELIST", "c[7-9]", 1);
    ferry_assert_ok(ferry__launch_slurm_store(&host, &port));
    cr_assert_str_eq(host, "c7", "the step's list comes first");
    cr_assert_eq(port, 12000 + (1234 * 16 + 2) % 20000);
    ferry__free(host);
    setenv("SLURM_STEP_ID", "3", 1);
    int next = 0;
    ferry_assert_ok(ferry__launch_slurm_store(&host, &next));
    cr_assert_neq(next, port, "another step of the job gets another port");
    ferry__free(host);
    setenv("SLURM_STEP_NODELIST", "c[7-", 1);
    ferry_assert_status(ferry__launch_slurm_store(&host, &port), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "SLURM_STEP_NODELIST"), "%s", ferry_last_error());
    unsetenv("SLURM_STEP_NODELIST");
    unsetenv("SLURM_JOB_NODELIST");
    setenv("SLURM_LAUNCH_NODE_IPADDR", "10.3.0.9", 1);
    ferry_assert_ok(ferry__launch_slurm_store(&host, &port));
    cr_assert_str_eq(host, "10.3.0.9");
    ferry__free(host);
    unsetenv("SLURM_LAUNCH_NODE_IPADDR");
    ferry_assert_status(ferry__launch_slurm_store(&host, &port), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "MASTER_ADDR"), "%s", ferry_last_error());
}

Test(transport_launch, env_method_under_slurm_needs_no_master_variables, .timeout = 10)
{
    clear_launcher_env();
    slurm_env("77", "0", 2, 3);
    setenv("SLURM_STEP_NODELIST", "n[4-6]", 1);
    int rank = -1, world = 0, port = 0;
    char *host = NULL;
    ferry_assert_ok(ferry__rendezvous_resolve_env(NULL, &rank, &world, &host, &port, NULL));
    cr_assert(rank == 2 && world == 3 && port == 12000 + 77 * 16, "%d %d %d", rank, world, port);
    cr_assert_str_eq(host, "n4");
    ferry__free(host);
    setenv("MASTER_PORT", "23456", 1); /* either variable set by hand wins */
    ferry_assert_ok(ferry__rendezvous_resolve_env("env://", &rank, &world, &host, &port, NULL));
    cr_assert(port == 23456);
    cr_assert_str_eq(host, "n4");
    ferry__free(host);
    setenv("MASTER_ADDR", "10.9.9.9", 1);
    ferry_assert_ok(ferry__rendezvous_resolve_env("env://", &rank, &world, &host, &port, NULL));
    cr_assert_str_eq(host, "10.9.9.9");
    ferry__free(host);
}

Test(transport_launch, only_a_name_that_is_loopback_here_counts_as_local, .timeout = 10)
{
    cr_assert(!ferry__net_host_is_local_name("localhost"), "localhost is meant literally");
    cr_assert(!ferry__net_host_is_local_name("127.0.1.1"), "a numeric address too");
    cr_assert(!ferry__net_host_is_local_name("::1"));
    cr_assert(!ferry__net_host_is_local_name(""));
    cr_assert(!ferry__net_host_is_local_name(NULL));
    cr_assert(!ferry__net_host_is_local_name("no-such-host.invalid"));
    ferry__iface_choice c;
    ferry__net_iface_pick(NULL, "127.0.0.1", &c);
    cr_assert_eq(c.how, FERRY__IFACE_ROUTE, "loopback asked for by number is used");
}

/* ---- the per-user secret ----------------------------------------------------------------- */

Test(transport_launch, secret_is_made_private_once_and_tokens_follow_their_scope, .timeout = 10)
{
    clear_launcher_env();
    char home[256], path[512], a[FERRY__TOKEN_HEX_LEN + 1], b[FERRY__TOKEN_HEX_LEN + 1];
    char c[FERRY__TOKEN_HEX_LEN + 1];
    fresh_home(home, sizeof home);
    ferry_assert_ok(ferry__launch_secret_token("job/1", a));
    cr_assert_eq(strlen(a), FERRY__TOKEN_HEX_LEN);
    struct stat st;
    snprintf(path, sizeof path, "%s/.ferry", home);
    cr_assert(stat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
    snprintf(path, sizeof path, "%s/.ferry/secret", home);
    cr_assert(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode %o", st.st_mode);
    ferry_assert_ok(ferry__launch_secret_token("job/1", b));
    cr_assert_str_eq(a, b, "the same scope gives the same token");
    ferry_assert_ok(ferry__launch_secret_token("job/2", c));
    cr_assert_str_neq(a, c, "another scope gives another token");
    ferry_assert_status(ferry__launch_secret_token("", c), FERRY_EINVAL);
}

Test(transport_launch, secret_is_refused_when_others_could_read_or_swap_it, .timeout = 10)
{
    clear_launcher_env();
    char home[256], path[512], link_path[512], out[FERRY__TOKEN_HEX_LEN + 1];
    fresh_home(home, sizeof home);
    ferry_assert_ok(ferry__launch_secret_token("x", out));
    snprintf(path, sizeof path, "%s/.ferry/secret", home);
    cr_assert(chmod(path, 0644) == 0);
    ferry_assert_status(ferry__launch_secret_token("x", out), FERRY_EAUTH);
    cr_assert(strstr(ferry_last_error(), "chmod 600"), "%s", ferry_last_error());
    cr_assert(chmod(path, 0600) == 0);
    snprintf(link_path, sizeof link_path, "%s/link", home);
    cr_assert(symlink(path, link_path) == 0);
    setenv("FERRY_SECRET_FILE", link_path, 1);
    ferry_assert_status(ferry__launch_secret_token("x", out), FERRY_EAUTH);
    cr_assert(strstr(ferry_last_error(), "symbolic link"), "%s", ferry_last_error());
    snprintf(link_path, sizeof link_path, "%s/short", home);
    FILE *f = fopen(link_path, "w");
    cr_assert(f && fputs("abc\n", f) >= 0 && fclose(f) == 0);
    cr_assert(chmod(link_path, 0600) == 0);
    setenv("FERRY_SECRET_FILE", link_path, 1);
    ferry_assert_status(ferry__launch_secret_token("x", out), FERRY_EAUTH);
    cr_assert(strstr(ferry_last_error(), "at least"), "%s", ferry_last_error());
    unsetenv("FERRY_SECRET_FILE");
    snprintf(path, sizeof path, "%s/.ferry", home);
    cr_assert(chmod(path, 0777) == 0);
    ferry_assert_status(ferry__launch_secret_token("x", out), FERRY_EAUTH);
    cr_assert(strstr(ferry_last_error(), "nobody else may write"), "%s", ferry_last_error());
}

Test(transport_launch, processes_racing_to_make_the_secret_agree, .timeout = 20)
{
    clear_launcher_env();
    char home[256], first[FERRY__TOKEN_HEX_LEN + 1];
    fresh_home(home, sizeof home);
    int fds[2];
    cr_assert(pipe(fds) == 0);
    enum { N = 8 };
    for (int i = 0; i < N; i++) {
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            char tok[FERRY__TOKEN_HEX_LEN + 1];
            bool is_ok = ferry__launch_secret_token("race", tok) == FERRY_OK;
            _exit(is_ok && write(fds[1], tok, FERRY__TOKEN_HEX_LEN) == FERRY__TOKEN_HEX_LEN ? 0 : 1);
        }
    }
    close(fds[1]);
    for (int i = 0; i < N; i++) {
        int status;
        cr_assert(wait(&status) > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    char got[FERRY__TOKEN_HEX_LEN + 1] = "";
    for (int i = 0; i < N; i++) {
        size_t n = 0;
        while (n < FERRY__TOKEN_HEX_LEN) {
            ssize_t k = read(fds[0], got + n, FERRY__TOKEN_HEX_LEN - n);
            cr_assert(k > 0);
            n += (size_t)k;
        }
        got[FERRY__TOKEN_HEX_LEN] = '\0';
        if (i == 0)
            memcpy(first, got, sizeof first);
        cr_assert_str_eq(got, first, "process %d derived another token", i);
    }
    close(fds[0]);
}

Test(transport_launch, job_token_is_derived_for_slurm_and_torchrun_only, .timeout = 10)
{
    clear_launcher_env();
    char home[256], a[FERRY__TOKEN_HEX_LEN + 1], b[FERRY__TOKEN_HEX_LEN + 1];
    bool is_derived = true;
    fresh_home(home, sizeof home);
    ferry_assert_ok(ferry__launch_job_token(a, &is_derived));
    cr_assert(!is_derived, "nothing names the job");
    slurm_env("5", "0", 1, 2);
    ferry_assert_ok(ferry__launch_job_token(a, &is_derived));
    cr_assert(is_derived);
    clear_launcher_env();
    setenv("RANK", "0", 1);
    setenv("MASTER_ADDR", "h", 1);
    setenv("MASTER_PORT", "29500", 1);
    setenv("TORCHELASTIC_RUN_ID", "run-1", 1);
    ferry_assert_ok(ferry__launch_job_token(b, &is_derived));
    cr_assert(is_derived);
    cr_assert_str_neq(a, b);
}

/* ---- detection ---------------------------------------------------------------------------- */

Test(transport_launch, detect_reads_each_launchers_variables, .timeout = 10)
{
    clear_launcher_env();
    char home[256];
    fresh_home(home, sizeof home);
    ferry_launch_info li;
    ferry_assert_ok(ferry_launch_detect(&li));
    cr_assert(li.launcher == FERRY_LAUNCHER_NONE && li.rank == -1);
    cr_assert_str_eq(li.launcher_name, "none");
    cr_assert(strstr(li.problem, "RANK"), "%s", li.problem);

    setenv("RANK", "1", 1);
    setenv("WORLD_SIZE", "4", 1);
    setenv("LOCAL_RANK", "1", 1);
    setenv("LOCAL_WORLD_SIZE", "2", 1);
    setenv("GROUP_RANK", "0", 1);
    setenv("MASTER_ADDR", "10.0.0.1", 1);
    setenv("MASTER_PORT", "29500", 1);
    setenv("TORCHELASTIC_RUN_ID", "r", 1);
    ferry_assert_ok(ferry_launch_detect(&li));
    cr_assert(li.launcher == FERRY_LAUNCHER_TORCHRUN && li.rank == 1 && li.world_size == 4);
    cr_assert(li.local_rank == 1 && li.local_world_size == 2 && li.node_rank == 0);
    cr_assert_str_eq(li.init_method, "env://");
    cr_assert_str_eq(li.store, "10.0.0.1:29500");
    cr_assert(strstr(li.source, "TORCHELASTIC_RUN_ID"), "%s", li.source);
    setenv("FERRY_LAUNCHER", "ferryrun", 1);
    ferry_assert_ok(ferry_launch_detect(&li));
    cr_assert(li.launcher == FERRY_LAUNCHER_FERRYRUN);

    clear_launcher_env();
    slurm_env("9", "1", 3, 5);
    setenv("SLURM_LOCALID", "0", 1);
    setenv("SLURM_NODEID", "2", 1);
    setenv("SLURM_NNODES", "3", 1);
    setenv("SLURM_TASKS_PER_NODE", "2(x2),1", 1);
    setenv("SLURM_STEP_NODELIST", "n[1-3]", 1);
    ferry_assert_ok(ferry_launch_detect(&li));
    cr_assert(li.launcher == FERRY_LAUNCHER_SLURM && li.rank == 3 && li.world_size == 5);
    cr_assert(li.node_rank == 2 && li.nnodes == 3 && li.local_world_size == 1,
              "node %d of %d, %d here", li.node_rank, li.nnodes, li.local_world_size);
    cr_assert(strstr(li.store, "n1:"), "%s", li.store);
    cr_assert(strstr(li.source, "Slurm"), "%s", li.source);

    clear_launcher_env();
    setenv("OMPI_COMM_WORLD_RANK", "0", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    ferry_assert_status(ferry_launch_detect(&li), FERRY_EINVAL);
    cr_assert(li.launcher == FERRY_LAUNCHER_OPENMPI);
    cr_assert(strstr(li.problem, "MASTER_ADDR"), "%s", li.problem);
    cr_assert(strstr(ferry_last_error(), "openmpi"), "%s", ferry_last_error());
}

Test(transport_launch, detect_names_what_an_incomplete_environment_lacks, .timeout = 10)
{
    clear_launcher_env();
    ferry_launch_info li;
    setenv("RANK", "0", 1);
    ferry_assert_status(ferry_launch_detect(&li), FERRY_EINVAL);
    cr_assert(strstr(li.problem, "WORLD_SIZE"), "%s", li.problem);
    setenv("WORLD_SIZE", "2", 1);
    setenv("MASTER_ADDR", "h", 1);
    ferry_assert_status(ferry_launch_detect(&li), FERRY_EINVAL);
    cr_assert(strstr(li.problem, "MASTER_PORT"), "%s", li.problem);
    setenv("MASTER_PORT", "1", 1);
    ferry_assert_status(ferry_launch_detect(&li), FERRY_EINVAL);
    cr_assert(strstr(li.problem, "FERRY_AUTH_TOKEN"), "no token and nothing to derive one: %s",
              li.problem);
    clear_launcher_env();
    setenv("SLURM_PROCID", "0", 1);
    ferry_assert_status(ferry_launch_detect(&li), FERRY_EINVAL);
    cr_assert(strstr(li.problem, "SLURM_NTASKS"), "the launcher's own name: %s", li.problem);
    ferry_assert_status(ferry_launch_detect(NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_launcher_name((ferry_launcher)99), "unknown");
}

Test(transport_launch, pmix_method_needs_a_pmix_launcher, .timeout = 20)
{
    clear_launcher_env();
    int rank = -1, world = 0;
    ferry_assert_status(ferry__rendezvous_resolve_env("pmix://", &rank, &world, NULL, NULL, NULL),
                        FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "PMIx"), "%s", ferry_last_error());
    cr_assert(ferry__rendezvous_is_pmix("pmix://") && !ferry__rendezvous_is_pmix("env://"));
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.init_method = "pmix://";
    ferry_assert_status(ferry_init_rpc("w", -1, 0, &o), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "PMIx"), "%s", ferry_last_error());
}

Test(transport_launch, pmix_variables_without_a_server_fall_back_to_env, .timeout = 20)
{
    clear_launcher_env();
    setenv("PMIX_RANK", "0", 1);
    setenv("PMIX_NAMESPACE", "nobody", 1);
    setenv("PMIX_SERVER_URI41", "nobody.0;tcp4://127.0.0.1:1", 1);
    cr_assert_str_eq(ferry__launch_default_method(), "env://");
    ferry_launch_info li;
    ferry_assert_status(ferry_launch_detect(&li), FERRY_EINVAL);
    cr_assert(li.launcher == FERRY_LAUNCHER_PMIX);
    cr_assert_str_eq(li.init_method, "env://");
    cr_assert(strstr(li.problem, "RANK"), "%s", li.problem);
}

/* ---- a job as srun starts it, without srun ------------------------------------------------ */

typedef struct {
    int port;
} slurm_job;

static int slurm_rank(int rank, int world, void *arg)
{
    slurm_job *job = arg;
    char text[32];
    clear_launcher_env();
    slurm_env("4242", "0", rank, world);
    setenv("SLURM_STEP_NODELIST", "127.0.0.1", 1);
    snprintf(text, sizeof text, "%d", job->port);
    setenv("MASTER_PORT", text, 1); /* the derived port may be taken on a shared machine */
    setenv("FERRY_TRANSPORT", "tcp", 1);
    if (ferry_init_rpc(NULL, -1, 0, NULL) != FERRY_OK) {
        fprintf(stderr, "rank %d init: %s\n", rank, ferry_last_error());
        return 1;
    }
    ferry_worker_info me;
    RANK_CHECK(ferry_get_worker_info(NULL, &me) == FERRY_OK && me.id == rank);
    snprintf(text, sizeof text, "worker%d", rank);
    RANK_CHECK(!strcmp(me.name, text));
    snprintf(text, sizeof text, "worker%d", (rank + 1) % world);
    ferry_value *args = ferry_args(2, ferry_int(rank), ferry_int(10));
    ferry_value *v = ferry_rpc_sync(text, "min", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == rank);
    ferry_value_release(v);
    ferry_value_release(args);
    RANK_CHECK(ferry_shutdown(true, 0) == FERRY_OK);
    return 0;
}

Test(transport_launch, slurm_job_meets_with_no_name_token_or_master_set, .timeout = 45)
{
    char home[256];
    fresh_home(home, sizeof home);
    unsetenv("FERRY_AUTH_TOKEN");
    slurm_job job = {.port = ferry_test_free_port()};
    ferry_test_run_ranks(3, slurm_rank, &job, 40);
}
