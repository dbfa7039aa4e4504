/* A stopped same-host peer (issue 9, finding 5): rank 1 has itself SIGSTOPped for 2 s. Same-host
   peers are not pinged; /proc showing the peer stopped for the miss window (0.2 s x 3 here)
   makes it unreachable, so the call in flight fails, and once it runs again calls to it work:
   a stop is not a death. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "integration/rpc_harness.h"

#define STOP_S 2.0

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Stops this process for STOP_S from a grandchild (nobody has to reap it), 0.1 s from now. */
static ferry_status stop_me(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    pid_t self = getpid(), child = fork();
    if (child == 0) {
        if (fork() == 0) {
            sleep_s(0.1);
            kill(self, SIGSTOP);
            sleep_s(STOP_S);
            kill(self, SIGCONT);
        }
        _exit(0);
    }
    if (child > 0)
        waitpid(child, NULL, 0);
    *result = ferry_string("stopping");
    return FERRY_OK;
}

static int body(int rank, int world, void *arg)
{
    const rpc_case *c = arg;
    setenv("FERRY_HEARTBEAT_PERIOD_S", "0.2", 1);
    setenv("FERRY_HEARTBEAT_MISSES", "3", 1);
    if (rpc_case_join(c, rank, world) != 0)
        return 1;
    if (rank == 0) {
        ferry_value *none = ferry_list_of(0), *one = ferry_args(1, ferry_int(1));
        ferry_value *v = ferry_rpc_sync("worker1", "stop_me", none, NULL, 20);
        RANK_CHECK(v);
        ferry_value_release(v);
        double t_stop = rpc_test_now_s() + 0.1;
        sleep_s(0.3); /* the injected failure's timing, not a handshake */
        ferry_future *f = ferry_rpc_async("worker1", "echo", one, NULL, 20);
        RANK_CHECK(f);
        RANK_CHECK(ferry_future_wait(f, 0) == FERRY_ETRANSPORT);
        double detected = rpc_test_now_s() - t_stop;
        ferry_future_release(f);
        RANK_CHECK(detected < STOP_S);
        double end = rpc_test_now_s() + 10;
        bool back = false;
        while (!back && rpc_test_now_s() < end) {
            v = ferry_rpc_sync("worker1", "echo", one, NULL, 5);
            back = v && ferry_value_as_int(v) == 1;
            ferry_value_release(v);
            if (!back)
                sleep_s(0.02); /* polling for the recovery being measured */
        }
        RANK_CHECK(back);
        double after = rpc_test_now_s() - (t_stop + STOP_S);
        fprintf(stderr, "live_stop: %s: a stopped same-host peer was detected %.2f s into the "
                "stop; calls work again within %.2f s of SIGCONT\n", c->transport, detected,
                after > 0 ? after : 0.0);
        ferry_value_release(none);
        ferry_value_release(one);
    }
    ferry_status rc = ferry_shutdown(true, 20);
    RANK_CHECK(rc == FERRY_OK);
    return 0;
}

static void run(const char *transport)
{
    setenv("FERRY_AUTH_TOKEN", "live-stop-test", 1);
    ferry_register_function("stop_me", stop_me, NULL);
    ferry_register_function("echo", rpc_test_echo, NULL);
    rpc_case c = {.transport = transport, .port = ferry_test_free_port()};
    ferry_test_run_ranks(2, body, &c, 40);
}

Test(live_stop, stopped_peer_is_unreachable_then_back_when_continued_shm, .timeout = 45)
{
    run("shm");
}

Test(live_stop, stopped_peer_is_unreachable_then_back_when_continued_tcp, .timeout = 45)
{
    run("tcp");
}
