/* Rank 0 serves the store; when it is stopped (SIGSTOP) while the others shut down gracefully,
   their ferry_shutdown(true, T) must return within T + 1 s with an error naming the store and
   rank 0, rather than hang (it took 70 s before store calls had deadlines). Two moments: the
   parent stops rank 0 before the others' first store call of the shutdown (the call itself must
   time out), and rank 0 stops itself while they wait in a shutdown round (the wait must notice
   the store is gone). Either way only after every rank finished init. */
#include <string.h>

#include "store_fault_util.h"
#include "transport/store.h"

#define SHUTDOWN_T 3.0
#define WORLD 3

typedef struct {
    rpc_case c;
    bool stop_mid_round; /* rank 0 stops itself once the others wait in round 0 */
    int ready[2];        /* ranks 1.. write a byte once their init is done */
    int go[2];           /* the parent writes WORLD - 1 bytes: the others may shut down */
    int release[2];      /* the parent writes a byte once rank 0 was continued */
} stop_case;

/* Rank 0: waits (on its own store connection) until ranks 1.. wait in the first shutdown
   round, then stops itself. */
static void wait_for_round(const stop_case *sc)
{
    ferry__store *st = ferry__store_connect("127.0.0.1", sc->c.port, getenv("FERRY_AUTH_TOKEN"), 10);
    const char *keys[WORLD - 1];
    char names[WORLD - 1][96];
    for (int r = 1; r < WORLD; r++) {
        snprintf(names[r - 1], sizeof names[r - 1], "ferry/allreduce/ferry/shutdown/0#0/r/%d", r);
        keys[r - 1] = names[r - 1];
    }
    if (!st || ferry__store_wait(st, keys, WORLD - 1, 10) != FERRY_OK)
        fprintf(stderr, "rank 0: never saw the others in the round: %s\n", ferry_last_error());
    ferry__store_close(st);
}

static int stop_rank(int rank, void *arg)
{
    stop_case *sc = arg;
    if (rpc_case_join(&sc->c, rank, WORLD) != 0)
        return 1;
    char byte;
    if (rank == 0) {
        /* Stopped by the parent while it waits here, or by itself mid-round. */
        if (sc->stop_mid_round) {
            wait_for_round(sc);
            raise(SIGSTOP);
        }
        RANK_CHECK(read(sc->release[0], &byte, 1) == 1);
        /* Continued once the others returned: leave without them. */
        ferry_shutdown(false, 1);
        return 0;
    }
    RANK_CHECK(write(sc->ready[1], "r", 1) == 1);
    RANK_CHECK(read(sc->go[0], &byte, 1) == 1);
    double t0 = ferry__now_s();
    ferry_status rc = ferry_shutdown(true, SHUTDOWN_T);
    double took = ferry__now_s() - t0;
    fprintf(stderr, "rank %d: shutdown returned %s after %.2f s (T = %.0f s): %s\n", rank,
            ferry_strerror(rc), took, SHUTDOWN_T, ferry_last_error());
    RANK_CHECK(rc == FERRY_ETIMEDOUT || rc == FERRY_ETRANSPORT);
    RANK_CHECK(strstr(ferry_last_error(), "store") && strstr(ferry_last_error(), "rank 0"));
    RANK_CHECK(took <= SHUTDOWN_T + 1.0);
    return 0;
}

static void run_stopped(bool stop_mid_round)
{
    rpc_test_set_token();
    stop_case sc = {.c = {.transport = "tcp", .port = ferry_test_free_port()},
                    .stop_mid_round = stop_mid_round};
    cr_assert(pipe(sc.ready) == 0 && pipe(sc.go) == 0 && pipe(sc.release) == 0);
    pid_t pids[WORLD];
    for (int r = 0; r < WORLD; r++)
        pids[r] = fault_fork(stop_rank, r, &sc);
    /* Everyone is past init (whose barrier rank 0's store answers) before rank 0 stops. */
    char bytes[WORLD];
    for (int got = 0; got < WORLD - 1;) {
        ssize_t n = read(sc.ready[0], bytes, sizeof bytes);
        cr_assert(n > 0, "a rank died before finishing init");
        got += (int)n;
    }
    if (!stop_mid_round) {
        kill(pids[0], SIGSTOP);
        cr_assert(fault_wait_stopped(pids[0]), "rank 0 ended before it stopped");
    }
    cr_assert(write(sc.go[1], "gg", WORLD - 1) == WORLD - 1);
    if (stop_mid_round)
        cr_assert(fault_wait_stopped(pids[0]), "rank 0 ended before it stopped");
    int rc[WORLD];
    for (int r = 1; r < WORLD; r++)
        rc[r] = fault_reap(pids[r], SHUTDOWN_T + 15);
    kill(pids[0], SIGCONT);
    cr_assert(write(sc.release[1], "x", 1) == 1);
    rc[0] = fault_reap(pids[0], 20);
    for (int r = 0; r < WORLD; r++)
        cr_assert_eq(rc[r], 0, "rank %d exited with %d", r, rc[r]);
}

Test(fault_store, shutdown_returns_within_timeout_when_rank0_stops_before_it, .timeout = 60)
{
    run_stopped(false);
}

Test(fault_store, shutdown_returns_within_timeout_when_rank0_stops_mid_round, .timeout = 60)
{
    run_stopped(true);
}
