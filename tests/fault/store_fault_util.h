/* Helpers of the store fault tests: forked ranks that must be stopped, continued and reaped by
   pid, and the store's counters. */
#ifndef FERRY_TEST_STORE_FAULT_UTIL_H
#define FERRY_TEST_STORE_FAULT_UTIL_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "integration/rpc_harness.h"

/* Forks a rank running fn(rank, arg) and _exit-ing with its result. */
static inline pid_t fault_fork(int (*fn)(int rank, void *arg), int rank, void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        int rc = fn(rank, arg);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    return pid;
}

/* Waits for pid until timeout_s, then kills it (by pid). Returns its exit status, or -1 when it
   had to be killed or died from a signal. */
static inline int fault_reap(pid_t pid, double timeout_s)
{
    int status = 0;
    double end = ferry__now_s() + timeout_s;
    while (ferry__now_s() < end) {
        pid_t p = waitpid(pid, &status, WNOHANG);
        if (p == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        ferry__sleep_us(2000);
    }
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Blocks until pid stopped (SIGSTOP); false when it exited instead. */
static inline bool fault_wait_stopped(pid_t pid)
{
    int status = 0;
    return waitpid(pid, &status, WUNTRACED) == pid && WIFSTOPPED(status);
}

#endif
