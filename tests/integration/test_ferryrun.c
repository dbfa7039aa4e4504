/* The ferryrun launcher, run as a program: output prefixes and exit statuses, torchrun's flag
   spellings and the values it refuses, the environment each process gets, the token rules,
   several nodes meeting at an endpoint on this machine (shell children and a real ferry
   program), the waiting line and the rendezvous timeout, and --check. Each test points HOME at
   a fresh directory, so tokens derived from the per-user secret never touch the real one. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#define ARGS_MAX 32
#define CAPTURE_BYTES 16384

/* One ferryrun started by a test, with what it wrote so far. */
typedef struct {
    pid_t pid;      /* 0 once reaped */
    int fds[2];     /* stdout and stderr read ends; -1 at EOF */
    char text[2][CAPTURE_BYTES];
    size_t len[2];
    int status;     /* exit status once reaped; 128 + signal when killed */
} proc;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A program built beside this binary's tests/ directory ("bin/ferryrun", "examples/x"). */
static bool built_path(const char *rel, char *out, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return false;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return false;
    *slash = '\0';
    snprintf(out, len, "%s/../%s", self, rel);
    return access(out, X_OK) == 0;
}

/* HOME (where the per-user secret lives) in a fresh directory; no token inherited. */
static void fresh_home(void)
{
    char dir[PATH_MAX];
    ferry_test_mkdtemp(dir, sizeof dir, "ferryrun-home");
    setenv("HOME", dir, 1);
    unsetenv("FERRY_SECRET_FILE");
    unsetenv("FERRY_AUTH_TOKEN");
}

/* Starts ferryrun with args; envp NULL = this process's environment. */
static void proc_start(proc *p, const char *const *args, char *const *envp)
{
    char path[PATH_MAX + 32];
    if (!built_path("bin/ferryrun", path, sizeof path))
        cr_skip_test("ferryrun is not built next to the tests");
    int out[2], err[2];
    cr_assert(pipe(out) == 0 && pipe(err) == 0);
    memset(p, 0, sizeof *p);
    p->pid = fork();
    cr_assert(p->pid >= 0);
    if (p->pid == 0) {
        const char *argv[ARGS_MAX + 2] = {path};
        for (int i = 0; args[i] && i < ARGS_MAX; i++)
            argv[i + 1] = args[i];
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(err[0]);
        if (envp)
            execve(path, (char *const *)argv, envp);
        else
            execv(path, (char *const *)argv);
        _exit(126);
    }
    close(out[1]);
    close(err[1]);
    p->fds[0] = out[0];
    p->fds[1] = err[0];
}

/* Reads whatever the procs wrote, waiting up to wait_ms for something; reaps those that
   exited. */
static void proc_pump(proc *ps, int n, int wait_ms)
{
    struct pollfd pfd[16];
    int owner[16], which[16], k = 0;
    for (int i = 0; i < n; i++)
        for (int s = 0; s < 2; s++)
            if (ps[i].fds[s] >= 0 && k < 16) {
                pfd[k] = (struct pollfd){.fd = ps[i].fds[s], .events = POLLIN};
                owner[k] = i;
                which[k++] = s;
            }
    if (k > 0 && poll(pfd, (nfds_t)k, wait_ms) > 0)
        for (int j = 0; j < k; j++) {
            if (!pfd[j].revents)
                continue;
            proc *p = &ps[owner[j]];
            int s = which[j];
            char buf[4096];
            ssize_t got = read(p->fds[s], buf, sizeof buf);
            if (got <= 0) {
                close(p->fds[s]);
                p->fds[s] = -1;
                continue;
            }
            size_t room = CAPTURE_BYTES - 1 - p->len[s], take = (size_t)got < room ? (size_t)got : room;
            memcpy(p->text[s] + p->len[s], buf, take);
            p->len[s] += take;
            p->text[s][p->len[s]] = '\0';
        }
    else if (k == 0 && wait_ms > 0)
        usleep(10000);
    for (int i = 0; i < n; i++) {
        int status;
        if (ps[i].pid > 0 && ps[i].fds[0] < 0 && ps[i].fds[1] < 0 &&
            waitpid(ps[i].pid, &status, WNOHANG) == ps[i].pid) {
            ps[i].pid = 0;
            ps[i].status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
    }
}

/* Pumps until ps[idx]'s stderr holds text; false when timeout_s passed first. */
static bool proc_wait_for(proc *ps, int n, int idx, const char *text, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    while (!strstr(ps[idx].text[1], text)) {
        if (now_s() >= deadline)
            return false;
        proc_pump(ps, n, 50);
    }
    return true;
}

/* Pumps until every proc exited; kills (by pid) and fails on those still running after
   timeout_s. */
static void proc_finish(proc *ps, int n, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    for (;;) {
        bool is_running = false;
        for (int i = 0; i < n; i++)
            is_running |= ps[i].pid > 0;
        if (!is_running)
            return;
        if (now_s() >= deadline) {
            for (int i = 0; i < n; i++)
                if (ps[i].pid > 0) {
                    kill(ps[i].pid, SIGKILL);
                    waitpid(ps[i].pid, NULL, 0);
                }
            cr_assert_fail("ferryrun still running after %g s; stderr:\n%s\n%s", timeout_s,
                           ps[0].text[1], n > 1 ? ps[1].text[1] : "");
        }
        proc_pump(ps, n, 50);
    }
}

/* Runs one ferryrun to its end: its exit status; stdout and stderr stay in *p. */
static int run(proc *p, const char *const *args, char *const *envp)
{
    proc_start(p, args, envp);
    proc_finish(p, 1, 25);
    return p->status;
}

static void assert_has(const char *text, const char *want)
{
    cr_assert(strstr(text, want), "missing '%s' in:\n%s", want, text);
}

/* The 64 hex digits after prefix in text, into out (65 bytes). */
static void token_after(const char *text, const char *prefix, char *out)
{
    const char *p = strstr(text, prefix);
    cr_assert(p, "missing '%s' in:\n%s", prefix, text);
    p += strlen(prefix);
    for (int i = 0; i < 64; i++)
        cr_assert(isxdigit((unsigned char)p[i]), "not a 64-hex-digit token after '%s':\n%s",
                  prefix, text);
    cr_assert(!isxdigit((unsigned char)p[64]), "token longer than 64 digits:\n%s", text);
    memcpy(out, p, 64);
    out[64] = '\0';
}

/* ---- one node ---------------------------------------------------------------------------- */

Test(tools_ferryrun, prefixes_each_line_with_its_rank_when_all_succeed, .timeout = 30)
{
    proc p;
    fresh_home();
    const char *args[] = {"-n", "3", "sh", "-c",
                          "echo \"$RANK/$WORLD_SIZE/$LOCAL_RANK ${#FERRY_AUTH_TOKEN} "
                          "$MASTER_ADDR\"; printf tail",
                          NULL};
    cr_assert_eq(run(&p, args, NULL), 0, "%s", p.text[1]);
    for (int r = 0; r < 3; r++) {
        char want[64];
        snprintf(want, sizeof want, "[%d] %d/3/%d 64 127.0.0.1\n", r, r, r);
        assert_has(p.text[0], want);
        snprintf(want, sizeof want, "[%d] tail\n", r);
        assert_has(p.text[0], want);
    }
}

Test(tools_ferryrun, runs_each_program_on_its_ranks_when_given_mpiruns_colon_syntax, .timeout = 30)
{
    proc p;
    fresh_home();
    const char *args[] = {"-n", "1", "sh", "-c", "echo \"master $RANK/$WORLD_SIZE\"", ":",
                          "-n", "2", "sh", "-c", "echo \"worker $RANK/$WORLD_SIZE $LOCAL_RANK\"",
                          NULL};
    cr_assert_eq(run(&p, args, NULL), 0, "%s", p.text[1]);
    assert_has(p.text[0], "[0] master 0/3\n");
    assert_has(p.text[0], "[1] worker 1/3 1\n");
    assert_has(p.text[0], "[2] worker 2/3 2\n");
    cr_assert(!strstr(p.text[0], "[0] worker") && !strstr(p.text[0], "master 1"), "%s",
              p.text[0]);
    const char *no_n[] = {"-n", "1", "true", ":", "true", NULL};
    cr_assert_eq(run(&p, no_n, NULL), 2);
    assert_has(p.text[1], "needs its own -n N");
    const char *empty[] = {"-n", "1", "true", ":", NULL};
    cr_assert_eq(run(&p, empty, NULL), 2);
    assert_has(p.text[1], "needs a program on each side");
    const char *other[] = {"-n", "1", "true", ":", "--nnodes", "2", "true", NULL};
    cr_assert_eq(run(&p, other, NULL), 2);
    assert_has(p.text[1], "only -n N");
}

Test(tools_ferryrun, exits_with_the_failing_status_when_one_rank_fails, .timeout = 30)
{
    proc p;
    fresh_home();
    /* Rank 1 fails; the others would sleep far past the test's timeout if not stopped. */
    const char *args[] = {"-n", "3", "sh", "-c", "if [ $RANK = 1 ]; then exit 7; fi; sleep 60",
                          NULL};
    cr_assert_eq(run(&p, args, NULL), 7);
    assert_has(p.text[1], "rank 1 exited with status 7");
    const char *killed[] = {"-n", "2", "sh", "-c", "if [ $RANK = 0 ]; then kill -9 $$; fi; sleep 60",
                            NULL};
    cr_assert_eq(run(&p, killed, NULL), 128 + 9);
}

Test(tools_ferryrun, sets_torchruns_environment_when_it_starts_a_process, .timeout = 30)
{
    proc p;
    fresh_home();
    const char *args[] = {
        "-n", "2", "--rdzv-id", "job7", "sh", "-c",
        "echo \"R=$RANK W=$WORLD_SIZE L=$LOCAL_RANK LW=$LOCAL_WORLD_SIZE G=$GROUP_RANK "
        "GW=$GROUP_WORLD_SIZE RR=$ROLE_RANK RW=$ROLE_WORLD_SIZE RN=$ROLE_NAME "
        "ID=$TORCHELASTIC_RUN_ID RC=$TORCHELASTIC_RESTART_COUNT MR=$TORCHELASTIC_MAX_RESTARTS "
        "FL=$FERRY_LAUNCHER MA=$MASTER_ADDR MP=${MASTER_PORT:+set}\"",
        NULL};
    cr_assert_eq(run(&p, args, NULL), 0, "%s", p.text[1]);
    for (int r = 0; r < 2; r++) {
        char want[400];
        snprintf(want, sizeof want,
                 "[%d] R=%d W=2 L=%d LW=2 G=0 GW=1 RR=%d RW=2 RN=default ID=job7 RC=0 MR=0 "
                 "FL=ferryrun MA=127.0.0.1 MP=set\n",
                 r, r, r, r);
        assert_has(p.text[0], want);
    }
    const char *plain[] = {"-n", "1", "sh", "-c", "echo ID=$TORCHELASTIC_RUN_ID", NULL};
    cr_assert_eq(run(&p, plain, NULL), 0);
    assert_has(p.text[0], "[0] ID=none\n");
}

Test(tools_ferryrun, reads_torchruns_spellings_when_flags_use_underscores_or_equals, .timeout = 30)
{
    proc p;
    fresh_home();
    char port[16];
    snprintf(port, sizeof port, "%d", ferry_test_free_port());
    const char *args[] = {"--nproc_per_node=2", "--nnodes=1:1", "--node_rank", "0",
                          "--master_addr=127.0.0.1", "--master_port", port, "--max_restarts=0",
                          "--rdzv_backend=c10d", "--rdzv_id", "spelled", "--rdzv-timeout=30",
                          "--no_python", "--",
                          "sh", "-c", "echo $RANK/$WORLD_SIZE $MASTER_ADDR:$MASTER_PORT "
                                      "$TORCHELASTIC_RUN_ID",
                          NULL};
    cr_assert_eq(run(&p, args, NULL), 0, "%s", p.text[1]);
    char want[96];
    for (int r = 0; r < 2; r++) {
        snprintf(want, sizeof want, "[%d] %d/2 127.0.0.1:%s spelled\n", r, r, port);
        assert_has(p.text[0], want);
    }
    /* auto and cpu: one process per online CPU. */
    const char *cpus[] = {"--nproc-per-node", "cpu", "sh", "-c", "echo W=$LOCAL_WORLD_SIZE", NULL};
    cr_assert_eq(run(&p, cpus, NULL), 0, "%s", p.text[1]);
    snprintf(want, sizeof want, "[0] W=%ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    assert_has(p.text[0], want);
    const char *autos[] = {"-n", "auto", "sh", "-c", "echo W=$LOCAL_WORLD_SIZE", NULL};
    cr_assert_eq(run(&p, autos, NULL), 0, "%s", p.text[1]);
    assert_has(p.text[0], want);
}

Test(tools_ferryrun, refuses_with_status_2_and_names_the_flag_when_a_value_is_bad, .timeout = 30)
{
    static const struct {
        const char *args[8];
        const char *says;
    } cases[] = {
        {{"-n", "gpu", "true"}, "-n gpu: ferry runs on CPUs"},
        {{"--nproc-per-node", "0", "true"}, "--nproc-per-node 0:"},
        {{"--max-restarts", "3", "-n", "1", "true"}, "--max-restarts 3: ferryrun does not restart"},
        {{"--max_restarts=1", "-n", "1", "true"}, "--max-restarts 1: ferryrun does not restart"},
        {{"--nnodes", "1:4", "-n", "1", "true"}, "--nnodes 1:4: elastic node counts are not"},
        {{"--nnodes", "x", "-n", "1", "true"}, "--nnodes x:"},
        {{"--rdzv-backend", "etcd", "-n", "1", "true"}, "--rdzv-backend etcd: ferryrun supports"},
        {{"--rdzv-endpoint", "::1:5", "-n", "1", "true"}, "--rdzv-endpoint ::1:5: an IPv6"},
        {{"--rdzv-endpoint", "h:0", "-n", "1", "true"}, "--rdzv-endpoint h:0: needs a port"},
        {{"--rdzv-endpoint", "[::1", "-n", "1", "true"}, "--rdzv-endpoint [::1:"},
        {{"--rdzv-timeout", "0", "-n", "1", "true"}, "--rdzv-timeout 0:"},
        {{"--master-port", "70000", "-n", "1", "true"}, "--master-port 70000:"},
        {{"--nnodes", "2", "--node-rank", "2", "-n", "1", "true"}, "--node-rank 2 must be below"},
        {{"--standalone", "--nnodes", "2", "-n", "1", "true"}, "--standalone: runs one node"},
        {{"--standalone=yes", "-n", "1", "true"}, "--standalone yes: takes no value"},
        {{"--nnodes", "2", "-n", "1", "true"}, "several nodes need --rdzv-endpoint"},
        {{"--frobnicate", "-n", "1", "true"}, "unknown option --frobnicate"},
        {{"-n", "2"}, "no program given"},
        {{"true"}, "-n: the number of processes is required"},
        {{"-n"}, "-n: needs a value"},
        {{"--check", "true"}, "--check: takes no program"},
    };
    fresh_home();
    unsetenv("MASTER_PORT");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proc p;
        cr_assert_eq(run(&p, cases[i].args, NULL), 2, "case %zu: %s", i, p.text[1]);
        assert_has(p.text[1], cases[i].says);
        cr_assert_eq(p.len[0], 0, "case %zu started something: %s", i, p.text[0]);
    }
    proc p;
    setenv("FERRY_AUTH_TOKEN", "", 1);
    const char *one[] = {"-n", "1", "true", NULL};
    cr_assert_eq(run(&p, one, NULL), 2, "an empty token is refused up front");
    assert_has(p.text[1], "FERRY_AUTH_TOKEN is empty");
}

Test(tools_ferryrun, takes_a_free_port_and_a_fresh_token_when_standalone, .timeout = 30)
{
    proc p;
    fresh_home();
    setenv("MASTER_PORT", "1", 1);
    setenv("FERRY_AUTH_TOKEN", "inherited", 1);
    const char *args[] = {"--standalone", "-n", "1", "sh", "-c",
                          "echo port=$MASTER_PORT token=$FERRY_AUTH_TOKEN", NULL};
    cr_assert_eq(run(&p, args, NULL), 0, "%s", p.text[1]);
    char token[65];
    token_after(p.text[0], "token=", token);
    cr_assert(!strstr(p.text[0], "port=1 "), "%s", p.text[0]);
    /* Without --standalone the surrounding job's values are kept. */
    const char *plain[] = {"-n", "1", "sh", "-c", "echo port=$MASTER_PORT token=$FERRY_AUTH_TOKEN",
                           NULL};
    cr_assert_eq(run(&p, plain, NULL), 0, "%s", p.text[1]);
    assert_has(p.text[0], "[0] port=1 token=inherited\n");
    unsetenv("MASTER_PORT");
}

/* ---- several nodes ------------------------------------------------------------------------ */

Test(tools_ferryrun, derives_one_token_for_fixed_ranks_when_none_is_set, .timeout = 30)
{
    proc p;
    fresh_home();
    const char *args[] = {"-n", "2", "--nnodes", "3", "--node-rank", "1", "--master-port", "29999",
                          "sh", "-c", "echo $RANK/$WORLD_SIZE $MASTER_PORT $FERRY_AUTH_TOKEN", NULL};
    setenv("FERRY_AUTH_TOKEN", "shared-token", 1);
    cr_assert_eq(run(&p, args, NULL), 0, "%s", p.text[1]);
    assert_has(p.text[0], "[2] 2/6 29999 shared-token\n");
    assert_has(p.text[0], "[3] 3/6 29999 shared-token\n");
    /* Unset: derived from the per-user secret, the same on every node of the job. */
    unsetenv("FERRY_AUTH_TOKEN");
    char first[65], again[65], other_node[65], other_job[65];
    cr_assert_eq(run(&p, args, NULL), 0, "%s", p.text[1]);
    token_after(p.text[0], "[2] 2/6 29999 ", first);
    cr_assert_eq(run(&p, args, NULL), 0, "%s", p.text[1]);
    token_after(p.text[0], "[3] 3/6 29999 ", again);
    cr_assert_str_eq(first, again);
    const char *node0[] = {"-n", "2", "--nnodes", "3", "--node_rank=0", "--master_port=29999",
                           "sh", "-c", "echo $RANK/$WORLD_SIZE $MASTER_PORT $FERRY_AUTH_TOKEN",
                           NULL};
    cr_assert_eq(run(&p, node0, NULL), 0, "%s", p.text[1]);
    token_after(p.text[0], "[0] 0/6 29999 ", other_node);
    cr_assert_str_eq(first, other_node, "nodes of one job share the token");
    const char *job2[] = {"-n", "1", "--nnodes", "3", "--master-port", "29999", "--rdzv-id", "b",
                          "sh", "-c", "echo $FERRY_AUTH_TOKEN", NULL};
    cr_assert_eq(run(&p, job2, NULL), 0, "%s", p.text[1]);
    token_after(p.text[0], "[0] ", other_job);
    cr_assert_str_neq(first, other_job, "another --rdzv-id is another job");
}

/* Starts node `rank` of a job at 127.0.0.1:port with n processes running cmd. */
static void start_node(proc *p, int port, int nnodes, int rank, const char *n, const char *timeout_s,
                       const char *cmd, const char *prog)
{
    char endpoint[32], nodes[16], rank_text[16];
    snprintf(endpoint, sizeof endpoint, "127.0.0.1:%d", port);
    snprintf(nodes, sizeof nodes, "%d", nnodes);
    snprintf(rank_text, sizeof rank_text, "%d", rank);
    const char *args[] = {"--nnodes", nodes, "--node-rank", rank_text, "--rdzv-endpoint", endpoint,
                          "--rdzv-timeout", timeout_s, "-n", n,
                          prog ? prog : "sh", prog ? NULL : "-c", cmd, NULL};
    proc_start(p, args, NULL);
}

#define NODE_CMD "echo \"$RANK/$WORLD_SIZE $LOCAL_RANK $GROUP_RANK/$GROUP_WORLD_SIZE " \
                 "$MASTER_ADDR:$MASTER_PORT $FERRY_AUTH_TOKEN\""

Test(tools_ferryrun, forms_one_job_when_two_nodes_meet_at_an_endpoint, .timeout = 30)
{
    proc ps[2];
    fresh_home();
    int port = ferry_test_free_port();
    /* Different -n per node: a world of 3, ranks in node order. */
    start_node(&ps[0], port, 2, 0, "2", "20", NODE_CMD, NULL);
    start_node(&ps[1], port, 2, 1, "1", "20", NODE_CMD, NULL);
    proc_finish(ps, 2, 25);
    cr_assert_eq(ps[0].status, 0, "node 0: %s", ps[0].text[1]);
    cr_assert_eq(ps[1].status, 0, "node 1: %s", ps[1].text[1]);
    char master[64], token[65], want[256];
    const char *line = strstr(ps[1].text[0], "[2] 2/3 0 1/2 127.0.0.1:");
    cr_assert(line, "%s", ps[1].text[0]);
    sscanf(line + strlen("[2] 2/3 0 1/2 "), "%63s", master);
    cr_assert(strcmp(master, "127.0.0.1:") != 0, "%s", ps[1].text[0]);
    snprintf(want, sizeof want, "[2] 2/3 0 1/2 %s ", master);
    token_after(ps[1].text[0], want, token);
    for (int r = 0; r < 2; r++) {
        snprintf(want, sizeof want, "[%d] %d/3 %d 0/2 %s %s\n", r, r, r, master, token);
        assert_has(ps[0].text[0], want);
    }
    char endpoint[32];
    snprintf(endpoint, sizeof endpoint, "127.0.0.1:%d", port);
    cr_assert(!strstr(master, endpoint), "rank 0's store needs a port of its own: %s", master);
}

Test(tools_ferryrun, runs_a_ferry_program_when_its_ranks_are_on_two_nodes, .timeout = 60)
{
    char prog[PATH_MAX + 32];
    if (!built_path("examples/master_worker", prog, sizeof prog))
        cr_skip_test("examples/master_worker is not built next to the tests");
    proc ps[2];
    fresh_home();
    int port = ferry_test_free_port();
    start_node(&ps[1], port, 2, 1, "1", "30", NULL, prog);
    start_node(&ps[0], port, 2, 0, "1", "30", NULL, prog);
    proc_finish(ps, 2, 50);
    cr_assert_eq(ps[0].status, 0, "node 0 (master):\n%s\n%s", ps[0].text[0], ps[0].text[1]);
    cr_assert_eq(ps[1].status, 0, "node 1 (worker):\n%s\n%s", ps[1].text[0], ps[1].text[1]);
    assert_has(ps[1].text[0], "[1] torch.add(torch.ones(2), 3) = tensor([4., 4.])\n");
    assert_has(ps[1].text[0], "[1] greet(\"worker\", [1, 2, 3.5]) = (\"hello, worker\", 6.5)\n");
}

Test(tools_ferryrun, says_whom_it_waits_for_when_a_node_comes_late, .timeout = 30)
{
    proc ps[2];
    fresh_home();
    int port = ferry_test_free_port();
    char want[160];
    start_node(&ps[0], port, 2, 0, "1", "20", NODE_CMD, NULL);
    snprintf(want, sizeof want,
             "ferryrun: node 0 of 2 serving 127.0.0.1:%d, waiting for node 1 (5 s so far)\n", port);
    cr_assert(proc_wait_for(ps, 1, 0, want, 10), "no waiting line on node 0:\n%s", ps[0].text[1]);
    cr_assert(ps[0].len[0] == 0, "node 0 started before node 1 came: %s", ps[0].text[0]);
    start_node(&ps[1], port, 2, 1, "1", "20", NODE_CMD, NULL);
    proc_finish(ps, 2, 20);
    cr_assert_eq(ps[0].status, 0, "%s", ps[0].text[1]);
    cr_assert_eq(ps[1].status, 0, "%s", ps[1].text[1]);
    assert_has(ps[0].text[0], "[0] 0/2 0 0/2 ");
    assert_has(ps[1].text[0], "[1] 1/2 0 1/2 ");
}

Test(tools_ferryrun, names_the_node_that_never_came_when_the_rdzv_timeout_passes, .timeout = 30)
{
    proc p;
    fresh_home();
    int port = ferry_test_free_port();
    char want[200];
    /* Node 1 alone: nothing serves the endpoint. */
    double started = now_s();
    start_node(&p, port, 2, 1, "1", "5.5", "echo started", NULL);
    proc_finish(&p, 1, 15);
    cr_assert_eq(p.status, 1, "%s", p.text[1]);
    cr_assert(now_s() - started < 9, "took %.1f s", now_s() - started);
    snprintf(want, sizeof want, "ferryrun: node 1 of 2 waiting at 127.0.0.1:%d for node 0 (5 s so far)\n",
             port);
    assert_has(p.text[1], want);
    snprintf(want, sizeof want, "ferryrun: the nodes did not meet at 127.0.0.1:%d within 5.5 s: "
                                "node 0 never came (nothing answered there",
             port);
    assert_has(p.text[1], want);
    cr_assert_eq(p.len[0], 0, "%s", p.text[0]);
    /* Node 0 alone of three. */
    start_node(&p, port, 3, 0, "1", "1", "echo started", NULL);
    proc_finish(&p, 1, 15);
    cr_assert_eq(p.status, 1, "%s", p.text[1]);
    snprintf(want, sizeof want, "within 1 s: nodes 1, 2 never came\n");
    assert_has(p.text[1], want);
    cr_assert_eq(p.len[0], 0, "%s", p.text[0]);
}

Test(tools_ferryrun, refuses_a_node_when_its_token_differs, .timeout = 30)
{
    proc ps[2];
    fresh_home();
    int port = ferry_test_free_port();
    start_node(&ps[0], port, 2, 0, "1", "3", "echo started", NULL);
    setenv("FERRY_AUTH_TOKEN", "not-the-jobs", 1);
    start_node(&ps[1], port, 2, 1, "1", "3", "echo started", NULL);
    proc_finish(ps, 2, 15);
    cr_assert_eq(ps[1].status, 1, "%s", ps[1].text[1]);
    assert_has(ps[1].text[1], "refused the auth token");
    cr_assert_eq(ps[0].status, 1, "node 0 still waits for a node 1 that knows the token: %s",
                 ps[0].text[1]);
    assert_has(ps[0].text[1], "node 1 never came");
}

/* ---- --check ----------------------------------------------------------------------------- */

Test(tools_ferryrun, check_finds_the_rendezvous_when_torchruns_environment_is_set, .timeout = 30)
{
    proc p;
    char home[PATH_MAX + 8];
    fresh_home();
    snprintf(home, sizeof home, "HOME=%s", getenv("HOME"));
    char *env[] = {home, "PATH=/usr/bin:/bin", "RANK=1", "WORLD_SIZE=2", "LOCAL_RANK=1",
                   "LOCAL_WORLD_SIZE=2", "GROUP_RANK=0", "GROUP_WORLD_SIZE=1",
                   "MASTER_ADDR=127.0.0.1", "MASTER_PORT=29500", "TORCHELASTIC_RUN_ID=check",
                   "FERRY_AUTH_TOKEN=check-token", NULL};
    const char *args[] = {"--check", NULL};
    cr_assert_eq(run(&p, args, env), 0, "%s\n%s", p.text[0], p.text[1]);
    assert_has(p.text[0], "shm ");
    assert_has(p.text[0], "tcp;ofi_rxm ");
    assert_has(p.text[0], "yes (peers on this host)");
    assert_has(p.text[0], "tcp interface: lo, address 127.0.0.1 (the route to the master "
                          "127.0.0.1)\n");
    assert_has(p.text[0], "launcher: torchrun, rank 1 of 2, local rank 1 of 2");
    assert_has(p.text[0], "rendezvous: init_method env://, store 127.0.0.1:29500\n");
    assert_has(p.text[0], "auth token: FERRY_AUTH_TOKEN is set\n");
    assert_has(p.text[0], "verdict: a rendezvous can be found\n");
    cr_assert(!strstr(p.text[0], "check-token"), "the token itself is never printed");
    /* A named interface that does not exist is said so. */
    char *named[] = {home, "PATH=/usr/bin:/bin", "RANK=0", "WORLD_SIZE=1",
                     "MASTER_ADDR=127.0.0.1", "MASTER_PORT=29500", "FERRY_AUTH_TOKEN=t",
                     "FERRY_IFACE=nosuch9", NULL};
    run(&p, args, named);
    assert_has(p.text[0], "tcp interface: nosuch9 (named by FERRY_IFACE), but no interface here "
                          "has that name\n");
}

Test(tools_ferryrun, check_fails_saying_what_is_missing_when_the_environment_is_empty,
     .timeout = 30)
{
    proc p;
    char home[PATH_MAX + 8];
    fresh_home();
    snprintf(home, sizeof home, "HOME=%s", getenv("HOME"));
    char *env[] = {home, "PATH=/usr/bin:/bin", NULL};
    const char *args[] = {"--check", NULL};
    cr_assert_eq(run(&p, args, env), 1, "%s\n%s", p.text[0], p.text[1]);
    assert_has(p.text[0], "fabric providers");
    assert_has(p.text[0], "launcher: none");
    assert_has(p.text[0], "tcp interface: the provider's choice (no master address known");
    assert_has(p.text[0], "  problem: ");
    assert_has(p.text[0], "verdict: no rendezvous can be found");
}
