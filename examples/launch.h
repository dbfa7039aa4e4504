/* How the example programs start their ranks. Under a launcher (ferryrun, torchrun's
   environment, srun, mpirun: whatever ferry_launch_detect recognizes) a program runs the one
   rank the launcher gave it, and refuses a job of another size than its own. Started by hand, it
   is its own launcher: it sets the environment env:// reads (MASTER_ADDR 127.0.0.1, a free MASTER_PORT,
   WORLD_SIZE and a fresh FERRY_AUTH_TOKEN unless one is set), forks every rank, waits for them
   against a deadline, kills the ones still running then and says which failed. Also the small
   helper the examples' options need; the clock and the port rule are bench/bench_util.h's,
   shared with the benchmarks. Everything is static: each example is one program built from its
   own main.c. */
#ifndef FERRY_EXAMPLES_LAUNCH_H
#define FERRY_EXAMPLES_LAUNCH_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/ferry.h"
#include "ferry/launch.h"
#include "bench/bench_util.h" /* now_s, free_port: one port rule for benchmarks and examples */

#define EXAMPLE_MAX_WORLD 64

/* Runs rank `rank` of the job (after the environment is set) and returns its exit status. */
typedef int (*example_rank_fn)(int rank, void *user);

typedef struct {
    const char *name;      /* goes into the FERRY_AUTH_TOKEN made here */
    int world;             /* ranks to start, at most EXAMPLE_MAX_WORLD */
    double deadline_s;     /* for the whole run; ranks still running then are killed */
    const char *transport; /* FERRY_TRANSPORT for the ranks started here unless set; NULL: none */
} example_job;

/* Ends a rank whose status so far is `rc`: a graceful shutdown (the workers serve until every
   rank is done and the RRefs are gone), then a check that no object outlived it, since every
   object dies with its last RRef or at shutdown. Returns the rank's final status, saying on
   stderr what failed, with the worker's name. */
static inline int example_shutdown(const char *worker, int rc)
{
    if (ferry_shutdown(true, 0) != FERRY_OK && rc == 0) {
        fprintf(stderr, "%s: shutdown failed: %s: %s\n", worker,
                ferry_strerror(ferry_last_status()), ferry_last_error());
        rc = 1;
    }
    ferry_object_counts n;
    ferry_object_debug_counts(&n);
    if (n.alive != 0 && rc == 0) {
        fprintf(stderr, "%s: %lld objects alive after shutdown\n", worker, (long long)n.alive);
        rc = 1;
    }
    return rc;
}

/* The value of a count option such as `--steps N`: a whole number from 1 to 1000000. NULL
   (the flag came last) or anything else is refused with a message naming the flag. */
static inline int example_parse_count(const char *flag, const char *value, int *out)
{
    char *end = NULL;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || *end != '\0' || v < 1 || v > 1000000) {
        fprintf(stderr, "%s needs a whole number from 1 to 1000000\n", flag);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Waits for the n ranks in pids until deadline_s has passed, kills those still running and
   returns 0 only if every rank exited with status 0. */
static inline int example_wait(const pid_t *pids, int n, double deadline_s)
{
    int status[EXAMPLE_MAX_WORLD], done[EXAMPLE_MAX_WORLD] = {0}, left = n, rc = 0;
    double end = now_s() + deadline_s;
    while (left > 0 && now_s() < end) {
        for (int r = 0; r < n; r++)
            if (!done[r] && waitpid(pids[r], &status[r], WNOHANG) == pids[r]) {
                done[r] = 1;
                left--;
            }
        if (left > 0)
            usleep(10000);
    }
    for (int r = 0; r < n; r++) {
        if (!done[r]) {
            fprintf(stderr, "rank %d did not finish within %.0f s; killed\n", r, deadline_s);
            kill(pids[r], SIGKILL);
            waitpid(pids[r], &status[r], 0);
            rc = 1;
        } else if (!WIFEXITED(status[r]) || WEXITSTATUS(status[r]) != 0) {
            if (WIFSIGNALED(status[r]))
                fprintf(stderr, "rank %d died from signal %d\n", r, WTERMSIG(status[r]));
            rc = 1;
        }
    }
    return rc;
}

/* Under a launcher, runs the rank it gave: fn(rank, user), once its environment is complete and
   its world is job->world ranks (else says why on stderr and returns 1). Without one, starts
   job->world ranks here as described at the top of this file, each running fn(rank, user), and
   returns 0 only if all of them exited with 0 within job->deadline_s. */
static inline int example_main(const example_job *job, example_rank_fn fn, void *user)
{
    ferry_launch_info info;
    ferry_status detected = ferry_launch_detect(&info);
    if (info.launcher != FERRY_LAUNCHER_NONE) {
        if (detected != FERRY_OK) {
            fprintf(stderr, "%s: started by %s, but %s\n", job->name, info.launcher_name,
                    info.problem);
            return 1;
        }
        if (info.world_size != job->world) {
            fprintf(stderr, "%s: runs as exactly %d ranks, but %s started a job of %d\n",
                    job->name, job->world, info.launcher_name, info.world_size);
            return 1;
        }
        return fn(info.rank, user);
    }
    if (job->world < 1 || job->world > EXAMPLE_MAX_WORLD) {
        fprintf(stderr, "%s: cannot start %d ranks\n", job->name, job->world);
        return 1;
    }
    char buf[64];
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", free_port());
    setenv("MASTER_PORT", buf, 1);
    snprintf(buf, sizeof buf, "%d", job->world);
    setenv("WORLD_SIZE", buf, 1);
    if (job->transport)
        setenv("FERRY_TRANSPORT", job->transport, 0);
    /* The store refuses to run without a token; the ranks inherit this one. */
    snprintf(buf, sizeof buf, "%s-%d-%ld", job->name, (int)getpid(), (long)time(NULL));
    setenv("FERRY_AUTH_TOKEN", buf, 0);
    fflush(stdout); /* or the children print what is still buffered here again */
    fflush(stderr);
    pid_t pids[EXAMPLE_MAX_WORLD];
    for (int r = 0; r < job->world; r++) {
        if ((pids[r] = fork()) < 0) {
            perror("fork");
            for (int k = 0; k < r; k++)
                kill(pids[k], SIGKILL);
            for (int k = 0; k < r; k++)
                waitpid(pids[k], NULL, 0);
            return 1;
        }
        if (pids[r] == 0) {
            snprintf(buf, sizeof buf, "%d", r);
            setenv("RANK", buf, 1);
            exit(fn(r, user)); /* exit, not _exit: LeakSanitizer checks each rank at exit */
        }
    }
    return example_wait(pids, job->world, job->deadline_s);
}

#endif
