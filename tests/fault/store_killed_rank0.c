/* Rank 0 hosts the rendezvous store. When it dies outside shutdown (SIGKILL, after every rank
   finished init), the survivors' errors say that rank 0 died, naming it, rather than what a
   socket saw: a call to it in flight, a call made afterwards, and their own graceful shutdown,
   whose rounds need the store. Over tcp (the store's socket and the fabric's both break) and
   shm (the fabric has no socket: the pid says it). And the store client alone: a server that
   goes away is named by the worker that served it. */
#include <string.h>

#include "store_fault_util.h"
#include "transport/store.h"

#define WORLD 3
#define SHUTDOWN_T 5.0

typedef struct {
    rpc_case c;
    int ready[2]; /* ranks 1.. write a byte once their init is done and a call is in flight */
    int go[2];    /* the parent writes WORLD - 1 bytes once rank 0 is gone */
} kill_case;

#define GONE "worker 'worker0' (rank 0, which hosts the rendezvous store) is unreachable"

/* msg is want, or (with `prefix`) begins with it. */
static bool says(const char *what, const char *msg, const char *want, bool prefix)
{
    bool ok = prefix ? strncmp(msg, want, strlen(want)) == 0 : strcmp(msg, want) == 0;
    if (!ok)
        fprintf(stderr, "%s: want%s '%s'\n got '%s'\n", what, prefix ? " a start of" : "", want,
                msg);
    return ok;
}

static int kill_rank(int rank, void *arg)
{
    kill_case *kc = arg;
    setenv("FERRY_HEARTBEAT_PERIOD_S", "0.2", 1);
    if (rpc_case_join(&kc->c, rank, WORLD) != 0)
        return 1;
    if (rank == 0) {
        pause(); /* killed by the parent */
        return 1;
    }
    /* A call in flight when rank 0 dies fails with the news. */
    ferry_value *a = ferry_args(1, ferry_double(30.0));
    ferry_future *f = ferry_rpc_async("worker0", "sleep", a, NULL, 60);
    ferry_value_release(a);
    RANK_CHECK(f);
    char byte;
    RANK_CHECK(write(kc->ready[1], "r", 1) == 1);
    RANK_CHECK(read(kc->go[0], &byte, 1) == 1);
    double t0 = ferry__now_s();
    RANK_CHECK(ferry_future_wait(f, 20) == FERRY_ETRANSPORT);
    RANK_CHECK(ferry__now_s() - t0 < 5.0);
    /* (the cause after the colon is whichever evidence came first: the pid, or a send) */
    RANK_CHECK(says("in flight", ferry_future_error(f),
                    "call to 'sleep' on worker 'worker0' failed: " GONE ": ", true));
    ferry_future_release(f);
    /* So does a call made afterwards. */
    ferry_value *v = ferry_rpc_sync("worker0", "sleep", NULL, NULL, 20);
    RANK_CHECK(!v && ferry_last_status() == FERRY_ETRANSPORT);
    RANK_CHECK(says("after", ferry_last_error(),
                    "call to 'sleep' on worker 'worker0' failed: " GONE, false));
    /* The graceful shutdown needs the store: it fails within its timeout, saying why. */
    t0 = ferry__now_s();
    ferry_status rc = ferry_shutdown(true, SHUTDOWN_T);
    double took = ferry__now_s() - t0;
    RANK_CHECK(rc != FERRY_OK);
    RANK_CHECK(took <= SHUTDOWN_T + 1.0);
    char want[512];
    snprintf(want, sizeof want, "graceful shutdown of 'worker%d' failed: " GONE ", and the rounds "
             "that end a shutdown run through its store: its process exited or a send to it "
             "failed (it died, or left without this worker)", rank);
    RANK_CHECK(says("shutdown", ferry_last_error(), want, false));
    return 0;
}

static void run_killed(const char *transport)
{
    rpc_test_set_token();
    kill_case kc = {.c = {.transport = transport, .port = ferry_test_free_port()}};
    cr_assert(pipe(kc.ready) == 0 && pipe(kc.go) == 0);
    ferry_register_function("sleep", rpc_test_sleep, NULL);
    pid_t pids[WORLD];
    for (int r = 0; r < WORLD; r++)
        pids[r] = fault_fork(kill_rank, r, &kc);
    char bytes[WORLD];
    for (int got = 0; got < WORLD - 1;) {
        ssize_t n = read(kc.ready[0], bytes, sizeof bytes);
        cr_assert(n > 0, "a rank died before finishing init");
        got += (int)n;
    }
    kill(pids[0], SIGKILL);
    fault_reap(pids[0], 10);
    cr_assert(write(kc.go[1], "gg", WORLD - 1) == WORLD - 1);
    for (int r = 1; r < WORLD; r++) {
        int rc = fault_reap(pids[r], SHUTDOWN_T + 30);
        cr_assert_eq(rc, 0, "rank %d exited with %d", r, rc);
    }
}

Test(fault_store, survivors_say_rank0_died_when_it_is_killed_tcp, .timeout = 90)
{
    run_killed("tcp");
}

Test(fault_store, survivors_say_rank0_died_when_it_is_killed_shm, .timeout = 90)
{
    run_killed("shm");
}

Test(fault_store, a_lost_store_names_the_worker_that_served_it, .timeout = 30)
{
    int port = 0;
    ferry__store_server *srv = ferry__store_server_start("127.0.0.1", 0, NULL, NULL, &port);
    cr_assert(srv, "%s", ferry_last_error());
    ferry__store *st = ferry__store_connect("127.0.0.1", port, NULL, 10);
    cr_assert(st, "%s", ferry_last_error());
    cr_assert(ferry__store_has_host(st));
    ferry__store_set_host(st, "worker0", 0);
    cr_assert_eq(ferry__store_set(st, "k", "v", 1, 5), FERRY_OK, "%s", ferry_last_error());
    ferry__store_server_stop(srv);
    char want[512];
    snprintf(want, sizeof want, "store at 127.0.0.1:%d closed the connection: worker 'worker0' "
             "(rank 0), which serves it, has exited (it died, or shut down)", port);
    cr_assert_eq(ferry__store_set(st, "k", "w", 1, 5), FERRY_ETRANSPORT);
    cr_assert_str_eq(ferry_last_error(), want);
    cr_assert_not(ferry__store_is_connected(st));
    snprintf(want, sizeof want, "the connection to the store at 127.0.0.1:%d was lost: it closed "
             "the connection: worker 'worker0' (rank 0), which serves it, has exited (it died, "
             "or shut down)", port);
    cr_assert_eq(ferry__store_set(st, "k", "w", 1, 5), FERRY_ETRANSPORT);
    cr_assert_str_eq(ferry_last_error(), want);
    ferry__store_close(st);
    /* A file store has no host. */
    cr_assert_not(ferry__store_has_host(NULL));
}
