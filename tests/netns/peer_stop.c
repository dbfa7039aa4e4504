/* Two-host check that a stopped peer comes back (issue 9, finding 5): rank 1 (on the other
   "host") has itself stopped with SIGSTOP for 3 s. Rank 0's call in flight meanwhile fails
   once the heartbeat misses (FERRY_HEARTBEAT_PERIOD_S x FERRY_HEARTBEAT_MISSES, set by run.sh
   to 0.5 s x 3), and after SIGCONT rank 1 answers again: calls to it work, and both ranks shut
   down gracefully. Prints the detection and recovery times. Exit status 0 on success. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/ferry.h"

#define NETNS_PROG "peer_stop"
#include "tests/netns/netns_util.h"

#define STOP_DELAY_S 0.2
#define STOP_S 3.0

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Stops this process for STOP_S, starting STOP_DELAY_S from now (after the reply has left),
   from a grandchild so nobody has to reap it. */
static ferry_status stop_me(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    pid_t self = getpid(), child = fork();
    if (child == 0) {
        if (fork() == 0) {
            sleep_s(STOP_DELAY_S);
            kill(self, SIGSTOP);
            sleep_s(STOP_S);
            kill(self, SIGCONT);
        }
        _exit(0);
    }
    if (child > 0)
        waitpid(child, NULL, 0);
    *result = ferry_string("stopping");
    return child > 0 ? FERRY_OK : ferry_set_error(FERRY_EINVAL, "fork failed");
}

static int caller(void)
{
    ferry_value *none = ferry_list_of(0), *one = ferry_args(1, ferry_int(1));
    ferry_value *v = ferry_rpc_sync("stopped", "stop_me", none, NULL, 30);
    CHECK(v);
    ferry_value_release(v);
    double t_stop = now_s() + STOP_DELAY_S; /* about when the SIGSTOP lands */
    sleep_s(STOP_DELAY_S + 0.3);            /* the failure being injected, not a handshake */
    double t0 = now_s();
    ferry_future *f = ferry_rpc_async("stopped", "echo", one, NULL, 30);
    CHECK(f);
    ferry_status rc = ferry_future_wait(f, 0);
    double detected = now_s();
    ferry_future_release(f);
    /* Detected while it was stopped (or, if the miss window were longer than the stop, just
       slow): either way not dead for good. */
    CHECK(rc == FERRY_ETRANSPORT || rc == FERRY_OK);
    if (rc == FERRY_ETRANSPORT)
        printf("peer_stop: the stopped peer was detected %.1f s into the stop (the call failed "
               "after %.1f s)\n", detected - t_stop, detected - t0);
    else
        printf("peer_stop: the call waited out the stop (%.1f s)\n", detected - t0);
    /* Calls work again once it runs: retry until one succeeds (each attempt fails fast while
       it is still taken for unreachable). */
    double t_cont = t_stop + STOP_S, end = now_s() + 15;
    bool back = false;
    while (!back && now_s() < end) {
        v = ferry_rpc_sync("stopped", "echo", one, NULL, 5);
        back = v && ferry_value_as_int(v) == 1;
        ferry_value_release(v);
        if (!back)
            sleep_s(0.05); /* polling for the recovery being measured */
    }
    CHECK(back);
    double after = now_s() - t_cont; /* SIGCONT's time is known to about 10 ms */
    printf("peer_stop: calls work again within %.2f s of SIGCONT\n", after > 0 ? after : 0.0);
    for (int i = 0; i < 20; i++) {
        v = ferry_rpc_sync("stopped", "echo", one, NULL, 10);
        CHECK(v && ferry_value_as_int(v) == 1);
        ferry_value_release(v);
    }
    ferry_value_release(none);
    ferry_value_release(one);
    return 0;
}

int main(void)
{
    int rank = atoi(getenv("RANK") ? getenv("RANK") : "0");
    CHECK(ferry_register_function("stop_me", stop_me, NULL) == FERRY_OK);
    CHECK(ferry_register_function("echo", echo, NULL) == FERRY_OK);
    CHECK(ferry_init_rpc(rank ? "stopped" : "caller", -1, 0, NULL) == FERRY_OK);
    int rc = rank == 0 ? caller() : 0;
    ferry_status st = ferry_shutdown(true, 30);
    if (st != FERRY_OK)
        fprintf(stderr, "peer_stop: shutdown: %s\n", ferry_last_error());
    return rc ? rc : st != FERRY_OK;
}
