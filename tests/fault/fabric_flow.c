/* Flow control on the fabric, end to end (issue 9, findings 2 and 3):
   - one call carrying 5,000 tensors of 32 KiB (a model's parameters) is echoed back whole on
     tcp and shm, and a small call after it still works: bulk parts follow their envelope, so
     the receiver can match them however many there are;
   - with one peer stopped (SIGSTOP) and flooded with calls, and another killed while calls to
     it are in flight, calls to a healthy third worker keep completing, the killed one's fail
     with FERRY_ETRANSPORT, the stopped one's time out, and the caller does not spin. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "integration/rpc_harness.h"

#define N_ATTS 5000
#define ATT_FLOATS 8192 /* 32 KiB of float32 */

static void set_token(void)
{
    char token[64];
    snprintf(token, sizeof token, "fabric-flow-%d", (int)getpid());
    setenv("FERRY_AUTH_TOKEN", token, 1);
}

static ferry_value *numbered_tensors(int n)
{
    ferry_value **items = calloc((size_t)n, sizeof *items);
    int64_t len = ATT_FLOATS;
    for (int i = 0; i < n; i++) {
        ferry_tensor *t = ferry_full(1, &len, (double)i, FERRY_FLOAT32);
        items[i] = ferry_tensor_value(t);
        ferry_tensor_release(t);
    }
    ferry_value *list = ferry_list_from(items, (size_t)n);
    for (int i = 0; i < n; i++)
        ferry_value_release(items[i]);
    free(items);
    return list;
}

static int many_attachments_body(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_value *list = numbered_tensors(N_ATTS);
    RANK_CHECK(list != NULL);
    double t0 = rpc_test_now_s();
    ferry_value *v = ferry_rpc_sync("worker1", "echo", ferry_args(1, list), NULL, 120);
    RANK_CHECK(v != NULL);
    fprintf(stderr, "%s: %d x 32 KiB echoed in %.2f s\n", c->transport, N_ATTS,
            rpc_test_now_s() - t0);
    RANK_CHECK(ferry_list_len(v) == N_ATTS);
    for (int i = 0; i < N_ATTS; i++) {
        const ferry_tensor *t = ferry_value_as_tensor(ferry_list_get(v, (size_t)i));
        RANK_CHECK(t && ferry_tensor_numel(t) == ATT_FLOATS);
        RANK_CHECK(ferry_tensor_item_at(t, 0) == i && ferry_tensor_item_at(t, ATT_FLOATS / 2) == i &&
                   ferry_tensor_item_at(t, ATT_FLOATS - 1) == i);
    }
    ferry_value_release(v);
    ferry_value *small = ferry_rpc_sync("worker1", "echo", ferry_args(1, ferry_int(7)), NULL, 10);
    RANK_CHECK(small && ferry_value_as_int(small) == 7);
    ferry_value_release(small);
    return 0;
}

static void run_many(const char *transport)
{
    set_token();
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    rpc_case_run(transport, 2, many_attachments_body, NULL, 170);
}

Test(fault_fabric, five_thousand_attachments_echo_whole_when_tcp, .timeout = 180)
{
    run_many("tcp");
}

Test(fault_fabric, five_thousand_attachments_echo_whole_when_shm, .timeout = 180)
{
    run_many("shm");
}

/* ---- a stalled peer and a dead peer beside a healthy one ---- */

#define HEALTHY 1
#define STALLED 2
#define KILLED 3
#define FLOOD_CALLS 100
#define FLOOD_TENSORS 10
#define DOOMED_CALLS 20
#define HEALTHY_CALLS 200

/* Shared by the forked ranks (MAP_SHARED, made before fork). */
typedef struct {
    const char *transport;
    int port;
    pid_t pid[4];
    pthread_barrier_t joined; /* all four, after joining */
    pthread_barrier_t done;   /* ranks 0, 1, 2 */
} stall_world;

static int join_world(stall_world *w, int rank)
{
    rpc_case c = {.transport = w->transport, .port = w->port};
    if (rpc_case_join(&c, rank, 4) != 0)
        return 1;
    w->pid[rank] = getpid();
    pthread_barrier_wait(&w->joined);
    return 0;
}

/* Waits for every future: how many ended with `want`, and the last time one ended. */
static int count_status(ferry_future **f, int n, ferry_status want, double wait_s)
{
    int got = 0;
    for (int i = 0; i < n; i++) {
        ferry_status rc = ferry_future_wait(f[i], wait_s);
        if (rc == want)
            got++;
        else
            fprintf(stderr, "future %d: %s (%s)\n", i, ferry_strerror(rc),
                    ferry_future_error(f[i]) ? ferry_future_error(f[i]) : "");
        ferry_future_release(f[i]);
    }
    return got;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int caller(stall_world *w)
{
    int64_t len = 64 * 1024; /* 256 KiB of float32: bulk on both transports */
    ferry_tensor *big[FLOOD_TENSORS];
    for (int i = 0; i < FLOOD_TENSORS; i++)
        big[i] = ferry_full(1, &len, (double)i, FERRY_FLOAT32);

    /* Stop one peer and flood it: far more than its provider takes, so our side queues. */
    RANK_CHECK(kill(w->pid[STALLED], SIGSTOP) == 0);
    ferry_future *flood[FLOOD_CALLS], *doomed[DOOMED_CALLS];
    for (int i = 0; i < FLOOD_CALLS; i++) {
        ferry_value *items[FLOOD_TENSORS];
        for (int k = 0; k < FLOOD_TENSORS; k++)
            items[k] = ferry_tensor_value(big[k]);
        ferry_value *args = ferry_list_from(items, FLOOD_TENSORS);
        for (int k = 0; k < FLOOD_TENSORS; k++)
            ferry_value_release(items[k]);
        flood[i] = ferry_rpc_async("worker2", "echo", args, NULL, 3);
        ferry_value_release(args);
        RANK_CHECK(flood[i] != NULL);
    }
    /* Calls in flight to a peer that is then killed. */
    for (int i = 0; i < DOOMED_CALLS; i++) {
        ferry_value *args = ferry_args(1, ferry_tensor_value(big[i % FLOOD_TENSORS]));
        doomed[i] = ferry_rpc_async("worker3", "sleep_then_echo", args, NULL, 30);
        ferry_value_release(args);
        RANK_CHECK(doomed[i] != NULL);
    }
    double killed_at = rpc_test_now_s();
    RANK_CHECK(kill(w->pid[KILLED], SIGKILL) == 0);

    /* The healthy worker keeps answering, small calls and bulk ones. */
    double t0 = rpc_test_now_s(), worst = 0;
    int ok = 0;
    for (int i = 0; i < HEALTHY_CALLS; i++) {
        double s = rpc_test_now_s();
        ferry_value *arg = i % 10 ? ferry_int(i) : ferry_tensor_value(big[0]);
        ferry_value *v = ferry_rpc_sync("worker1", "echo", ferry_args(1, arg), NULL, 5);
        ok += v != NULL;
        if (!v)
            fprintf(stderr, "healthy call %d: %s\n", i, ferry_last_error());
        ferry_value_release(v);
        worst = rpc_test_now_s() - s > worst ? rpc_test_now_s() - s : worst;
    }
    fprintf(stderr, "%s: %d/%d calls to the healthy worker in %.2f s (slowest %.1f ms)\n",
            w->transport, ok, HEALTHY_CALLS, rpc_test_now_s() - t0, worst * 1e3);
    RANK_CHECK(ok == HEALTHY_CALLS);

    int failed = count_status(doomed, DOOMED_CALLS, FERRY_ETRANSPORT, 20);
    fprintf(stderr, "%s: %d/%d calls to the killed worker failed with FERRY_ETRANSPORT within "
            "%.2f s of the kill\n", w->transport, failed, DOOMED_CALLS,
            rpc_test_now_s() - killed_at);
    RANK_CHECK(failed == DOOMED_CALLS);
    ferry_future *later = ferry_rpc_async("worker3", "echo", ferry_args(1, ferry_int(1)), NULL, 5);
    RANK_CHECK(later == NULL && ferry_last_status() == FERRY_ETRANSPORT);

    /* The stopped worker's calls end by their own deadline; waiting on them costs little CPU. */
    double c0 = cpu_s(), w0 = rpc_test_now_s();
    int timed_out = count_status(flood, FLOOD_CALLS, FERRY_ETIMEDOUT, 20);
    double cpu = cpu_s() - c0, wall = rpc_test_now_s() - w0;
    fprintf(stderr, "%s: %d/%d calls to the stopped worker timed out; %.2f s CPU over %.2f s\n",
            w->transport, timed_out, FLOOD_CALLS, cpu, wall);
    RANK_CHECK(timed_out == FLOOD_CALLS);
    RANK_CHECK(wall < 0.2 || cpu < 0.5 * wall);
    for (int i = 0; i < FLOOD_TENSORS; i++)
        ferry_tensor_release(big[i]);
    RANK_CHECK(kill(w->pid[STALLED], SIGCONT) == 0);
    return 0;
}

static ferry_status sleep_then_echo(const ferry_value *args, const ferry_value *kwargs,
                                    ferry_value **result, void *user)
{
    struct timespec ts = {10, 0}; /* the caller kills us meanwhile */
    nanosleep(&ts, NULL);
    return rpc_test_echo(args, kwargs, result, user);
}

/* The rank that gets killed runs in a grandchild, so the test's own child exits normally. */
static int killed_rank(stall_world *w)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (join_world(w, KILLED) != 0)
            _exit(1);
        for (;;)
            pause(); /* until the caller's SIGKILL */
    }
    RANK_CHECK(pid > 0);
    int st = 0;
    double end = rpc_test_now_s() + 100;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (rpc_test_now_s() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fprintf(stderr, "rank 3 was never killed\n");
            return 1;
        }
        usleep(10000); /* reaping a child by pid against a deadline */
    }
    RANK_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    return 0;
}

static int stall_rank(int rank, int n, void *arg)
{
    stall_world *w = arg;
    if (rank == KILLED)
        return killed_rank(w);
    if (join_world(w, rank) != 0)
        return 1;
    int rc = rank == 0 ? caller(w) : 0;
    pthread_barrier_wait(&w->done);
    ferry_shutdown(false, 0);
    return rc;
}

static void run_stall(const char *transport)
{
    set_token();
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("sleep_then_echo", sleep_then_echo, NULL) == FERRY_OK);
    stall_world *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                          -1, 0);
    cr_assert(w != MAP_FAILED);
    w->transport = transport;
    w->port = ferry_test_free_port();
    pthread_barrierattr_t a;
    pthread_barrierattr_init(&a);
    pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&w->joined, &a, 4);
    pthread_barrier_init(&w->done, &a, 3);
    ferry_test_run_ranks(4, stall_rank, w, 110);
    pthread_barrier_destroy(&w->joined);
    pthread_barrier_destroy(&w->done);
    munmap(w, sizeof *w);
}

Test(fault_fabric, healthy_peer_keeps_answering_when_one_stalls_and_one_dies_on_tcp,
     .timeout = 120)
{
    run_stall("tcp");
}

Test(fault_fabric, healthy_peer_keeps_answering_when_one_stalls_and_one_dies_on_shm,
     .timeout = 120)
{
    run_stall("shm");
}
