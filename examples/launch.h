/* How the example programs start their ranks. Under a launcher (ferryrun, torchrun-style: RANK
   in the environment) a program runs the one rank it was given. Started by hand, it is its own
   launcher: it sets the environment env:// reads (MASTER_ADDR 127.0.0.1, a free MASTER_PORT,
   WORLD_SIZE and a fresh FERRY_AUTH_TOKEN unless one is set), forks every rank, waits for them
   against a deadline, kills the ones still running then and says which failed. Also the small
   helpers the examples' options and timings need. Everything is static: each example is one
   program built from its own main.c. */
#ifndef FERRY_EXAMPLES_LAUNCH_H
#define FERRY_EXAMPLES_LAUNCH_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXAMPLE_MAX_WORLD 64

/* Runs rank `rank` of the job (after the environment is set) and returns its exit status. */
typedef int (*example_rank_fn)(int rank, void *user);

typedef struct {
    const char *name;      /* goes into the FERRY_AUTH_TOKEN made here */
    int world;             /* ranks to start, at most EXAMPLE_MAX_WORLD */
    double deadline_s;     /* for the whole run; ranks still running then are killed */
    const char *transport; /* FERRY_TRANSPORT for the ranks started here unless set; NULL: none */
} example_job;

static inline double example_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A free loopback port below the kernel's ephemeral range: every rank's fabric binds ephemeral
   ports while it starts, and one of them could take a port picked from that range before the
   master's rendezvous store listens on it. */
static inline int example_free_port(void)
{
    int low = 32768, high = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &low, &high) != 2)
            low = 32768;
        fclose(f);
    }
    unsigned seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int i = 0; low > 20000 && i < 200; i++) {
        int port = 20000 + (int)(rand_r(&seed) % (unsigned)(low - 20000));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                .sin_port = htons((uint16_t)port)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return port;
    }
    return 29500;
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
    double end = example_now_s() + deadline_s;
    while (left > 0 && example_now_s() < end) {
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

/* With RANK in the environment, runs that rank: fn(RANK, user). Without it, starts job->world
   ranks here as described at the top of this file, each running fn(rank, user), and returns 0
   only if all of them exited with 0 within job->deadline_s. */
static inline int example_main(const example_job *job, example_rank_fn fn, void *user)
{
    const char *rank = getenv("RANK");
    if (rank)
        return fn(atoi(rank), user);
    if (job->world < 1 || job->world > EXAMPLE_MAX_WORLD) {
        fprintf(stderr, "%s: cannot start %d ranks\n", job->name, job->world);
        return 1;
    }
    char buf[64];
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", example_free_port());
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
