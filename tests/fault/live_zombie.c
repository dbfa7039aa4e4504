/* A zombie peer (finding 7 of issue 9): a rank that exited while its parent has not reaped it
   yet still has a pid, so kill(pid, 0) calls it alive and calls to it (over shm, whose sends to
   a dead process do not fail) waited their full timeout. The ranks here are children of the
   test process, which reaps the dying rank only after the survivor is done: the survivor's call
   must fail within about a second while the peer is a zombie. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "integration/rpc_harness.h"

static ferry_status die(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                        void *user)
{
    _exit(0);
}

/* The state letter /proc gives pid, or '?' */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' ? paren[2] : '?';
}

static int survivor(const rpc_case *c, pid_t doomed)
{
    if (rpc_case_join(c, 0, 2) != 0)
        return 1;
    ferry_value *none = ferry_list_of(0);
    double t0 = rpc_test_now_s();
    ferry_future *f = ferry_rpc_async("worker1", "die", none, NULL, 30);
    RANK_CHECK(f);
    RANK_CHECK(ferry_future_wait(f, 10) == FERRY_ETRANSPORT);
    double took = rpc_test_now_s() - t0;
    char state = proc_state(doomed);
    fprintf(stderr, "live_zombie: call to the dead rank failed after %.2f s (%s; it is in state "
            "%c)\n", took, c->transport, state);
    RANK_CHECK(state == 'Z'); /* the scenario held: nobody had reaped it */
    RANK_CHECK(took < 1.5);
    ferry_future_release(f);
    RANK_CHECK(!ferry_rpc_sync("worker1", "die", none, NULL, 30));
    RANK_CHECK(ferry_last_status() == FERRY_ETRANSPORT);
    ferry_value_release(none);
    t0 = rpc_test_now_s();
    RANK_CHECK(ferry_shutdown(true, 5) == FERRY_ETRANSPORT);
    RANK_CHECK(rpc_test_now_s() - t0 < 6);
    return 0;
}

static void run(const char *transport)
{
    setenv("FERRY_AUTH_TOKEN", "live-zombie-test", 1);
    ferry_register_function("die", die, NULL);
    rpc_case c = {.transport = transport, .port = ferry_test_free_port()};
    fflush(stdout);
    fflush(stderr);
    pid_t doomed = fork();
    cr_assert(doomed >= 0);
    if (doomed == 0) {
        if (rpc_case_join(&c, 1, 2) != 0)
            _exit(1);
        pause(); /* serves until "die" ends it */
        _exit(1);
    }
    pid_t surv = fork();
    if (surv == 0)
        _exit(survivor(&c, doomed));
    /* Reap the survivor first (against a deadline); the doomed rank stays a zombie meanwhile. */
    int st = 0;
    double end = rpc_test_now_s() + 25;
    pid_t got = 0;
    while ((got = waitpid(surv, &st, WNOHANG)) == 0 && rpc_test_now_s() < end) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (got != surv) {
        kill(surv, SIGKILL);
        waitpid(surv, &st, 0);
    }
    int st_doomed = 0;
    if (waitpid(doomed, &st_doomed, WNOHANG) != doomed) {
        kill(doomed, SIGKILL);
        waitpid(doomed, &st_doomed, 0);
    }
    cr_assert(got == surv, "the survivor did not finish within 25 s");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the survivor failed (status %d)", st);
}

Test(live_zombie, calls_fail_within_a_second_when_the_peer_is_a_zombie_shm, .timeout = 30)
{
    run("shm");
}

Test(live_zombie, calls_fail_within_a_second_when_the_peer_is_a_zombie_tcp, .timeout = 30)
{
    run("tcp");
}
