/* make bench: what remote objects and groups cost beside the plain calls they stand for.
   (a) Two workers: a method call on a remote object (ferry_rref_call_sync of a method that
   returns its argument) beside ferry_rpc_sync of a registered function that does the same, with
   a tiny payload (one int) and a 64 KiB tensor; the goal is a method call within 10% of
   rpc_sync. (b) Five workers: one ferry_group_call to the four others (FERRY_DISPATCH_ALL,
   FERRY_COLLECT_NONE) beside four ferry_rpc_async and a wait on each. Both over tcp, then shm.
   Each pair is timed after a warm-up in alternating blocks of 50 and reported as the median
   block, so a straggling block moves neither side; the machines are shared and noisy, so
   compare the ratios, not absolute numbers across runs.

   `object_bench [ITERS]` times ITERS calls (or rounds) of each kind (3000 by default). */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry/ferry.h"
#include "bench/bench_util.h"

#define BLOCK 50 /* calls of one kind in a row */
#define MAX_WORLD 5
#define GROUP_WORKERS 4
#define TENSOR_BYTES 65536
#define DEADLINE_S 30.0 /* one job; stragglers are killed */

typedef struct {
    double method_us[2], rpc_us[2]; /* [0] one int, [1] a 64 KiB tensor */
    double group_us, async_us;
} figures;

/* One timed operation: returns 0, or -1 after printing why. */
typedef int (*op_fn)(void *ctx);

typedef struct {
    ferry_rref *obj;
    ferry_value *args;
    ferry_group *group;
} bench_ctx;

static int report(const char *what)
{
    fprintf(stderr, "object_bench: %s failed: %s: %s\n", what,
            ferry_strerror(ferry_last_status()), ferry_last_error());
    return -1;
}

/* The registered function and the method: both hand back their first argument (none when
   called without). */
static ferry_status echo_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    *result = ferry_list_len(args) ? ferry_value_retain(ferry_list_get(args, 0)) : NULL;
    return FERRY_OK;
}

static ferry_status echo_method(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    return echo_fn(args, kwargs, result, user);
}

/* The object holds nothing: what is measured is reaching it. */
static ferry_status echo_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                             void *user)
{
    static int the_object;
    *obj = &the_object;
    return FERRY_OK;
}

static const ferry_method_def echo_methods[] = {{.name = "echo", .fn = echo_method}};

static int method_call(void *arg)
{
    bench_ctx *c = arg;
    ferry_value *v = ferry_rref_call_sync(c->obj, "echo", c->args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(v);
    return v ? 0 : report("rref_call_sync");
}

static int rpc_call(void *arg)
{
    bench_ctx *c = arg;
    ferry_value *v = ferry_rpc_sync("worker1", "echo", c->args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(v);
    return v ? 0 : report("rpc_sync");
}

static int group_round(void *arg)
{
    bench_ctx *c = arg;
    ferry_future *f = ferry_group_call(c->group, "echo", c->args, NULL, FERRY_DISPATCH_ALL,
                                       FERRY_COLLECT_NONE, FERRY_TIMEOUT_DEFAULT);
    int rc = f && ferry_future_wait(f, 0) == FERRY_OK ? 0 : report("group_call");
    ferry_future_release(f);
    return rc;
}

static int async_round(void *arg)
{
    bench_ctx *c = arg;
    ferry_future *f[GROUP_WORKERS] = {NULL};
    int rc = 0;
    for (int i = 0; i < GROUP_WORKERS && rc == 0; i++) {
        char to[16];
        snprintf(to, sizeof to, "worker%d", i + 1);
        f[i] = ferry_rpc_async(to, "echo", c->args, NULL, FERRY_TIMEOUT_DEFAULT);
        rc = f[i] ? 0 : report("rpc_async");
    }
    for (int i = 0; i < GROUP_WORKERS; i++) {
        if (f[i] && ferry_future_wait(f[i], 0) != FERRY_OK && rc == 0)
            rc = report("rpc_async wait");
        ferry_future_release(f[i]);
    }
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A warm-up of each op, then `iters` of each in alternating blocks of BLOCK; the median
   block's time per op goes to *a_us and *b_us. Short blocks put both ops in the same phase of
   whatever else the machine runs. */
static int time_pair(op_fn a, op_fn b, void *ctx, int iters, double *a_us, double *b_us)
{
    op_fn ops[2] = {a, b};
    int blocks = iters / BLOCK > 0 ? iters / BLOCK : 1;
    double *per = calloc(2 * (size_t)blocks, sizeof *per);
    if (!per)
        return -1;
    int rc = 0;
    for (int i = 0; i < iters / 10 && rc == 0; i++)
        rc = a(ctx) != 0 || b(ctx) != 0 ? -1 : 0;
    for (int r = 0; r < blocks && rc == 0; r++)
        for (int k = 0; k < 2 && rc == 0; k++) {
            double t0 = now_s();
            for (int i = 0; i < BLOCK && rc == 0; i++)
                rc = ops[k](ctx);
            per[k * blocks + r] = (now_s() - t0) / BLOCK * 1e6;
        }
    if (rc == 0) {
        *a_us = median(per, blocks);
        *b_us = median(per + blocks, blocks);
    }
    free(per);
    return rc;
}

/* (a): an Echo object on worker1, and the same payloads through both paths. */
static int measure_calls(int iters, figures *f)
{
    int64_t n = TENSOR_BYTES / 4;
    ferry_tensor *t = ferry_ones(1, &n, FERRY_FLOAT32);
    ferry_value *payloads[2] = {ferry_args(1, ferry_int(7)),
                                t ? ferry_args(1, ferry_tensor_value(t)) : NULL};
    bench_ctx c = {.obj = ferry_remote_object("worker1", "Echo", NULL, NULL,
                                              FERRY_TIMEOUT_DEFAULT)};
    int rc = c.obj && payloads[0] && payloads[1] ? 0 : report("setting up (a)");
    for (int p = 0; p < 2 && rc == 0; p++) {
        c.args = payloads[p];
        rc = time_pair(method_call, rpc_call, &c, iters, &f->method_us[p], &f->rpc_us[p]);
    }
    ferry_rref_release(c.obj);
    ferry_value_release(payloads[0]);
    ferry_value_release(payloads[1]);
    ferry_tensor_release(t);
    return rc;
}

/* (b): the four workers as one group, one int each. */
static int measure_group(int iters, figures *f)
{
    bench_ctx c = {.args = ferry_args(1, ferry_int(7)),
                   .group = ferry_group_range(1, GROUP_WORKERS)};
    int rc = c.args && c.group ? time_pair(group_round, async_round, &c, iters, &f->group_us,
                                           &f->async_us)
                               : report("setting up (b)");
    ferry_group_release(c.group);
    ferry_value_release(c.args);
    return rc;
}

static int rank_main(const char *transport, int port, int world, int rank, int iters, int fd)
{
    char buf[32];
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", port);
    setenv("MASTER_PORT", buf, 1);
    setenv("FERRY_TRANSPORT", transport, 1);
    ferry_class_def def = {.construct = echo_new, .methods = echo_methods, .n_methods = 1};
    /* Pool functions both: a method runs on the owner's pool, so the baseline does too. */
    if (ferry_register_function("echo", echo_fn, NULL) != FERRY_OK ||
        ferry_register_class("Echo", &def) != FERRY_OK) {
        report("registering");
        return 1;
    }
    snprintf(buf, sizeof buf, rank ? "worker%d" : "master", rank);
    if (ferry_init_rpc(buf, rank, world, NULL) != FERRY_OK) {
        report("init_rpc");
        return 1;
    }
    int rc = 0;
    if (rank == 0) {
        figures f = {0};
        rc = (world == 2 ? measure_calls(iters, &f) : measure_group(iters, &f)) == 0 &&
                     write(fd, &f, sizeof f) == (ssize_t)sizeof f
                 ? 0
                 : 1;
    }
    if (ferry_shutdown(true, 0) != FERRY_OK && rc == 0) {
        report("shutdown");
        rc = 1;
    }
    return rc;
}

/* Forks `world` ranks; rank 0 measures and writes its figures into a pipe. Nothing comes from
   a rank that hangs, so every wait is bounded and what is left at the deadline is killed. */
static int run_job(const char *transport, int world, int iters, figures *out)
{
    int port = free_port(), fds[2];
    if (pipe(fds))
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pids[MAX_WORLD];
    int status[MAX_WORLD], done[MAX_WORLD] = {0}, started = 0;
    for (; started < world; started++) {
        if ((pids[started] = fork()) < 0)
            break;
        if (pids[started] == 0) {
            close(fds[0]);
            exit(rank_main(transport, port, world, started, iters, fds[1]));
        }
    }
    close(fds[1]);
    double end = now_s() + DEADLINE_S;
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    ssize_t got = started == world && poll(&pfd, 1, (int)(DEADLINE_S * 1000)) == 1
                      ? read(fds[0], out, sizeof *out)
                      : 0;
    close(fds[0]);
    int ok = got == (ssize_t)sizeof *out && started == world, left = started;
    while (left > 0 && now_s() < end) {
        for (int r = 0; r < started; r++)
            if (!done[r] && waitpid(pids[r], &status[r], WNOHANG) == pids[r]) {
                done[r] = 1;
                left--;
            }
        if (left > 0)
            usleep(5000);
    }
    for (int r = 0; r < started; r++) {
        if (!done[r]) {
            fprintf(stderr, "object_bench: %s rank %d of %d did not finish within %.0f s; "
                            "killed\n", transport, r, world, DEADLINE_S);
            kill(pids[r], SIGKILL);
            waitpid(pids[r], &status[r], 0);
            ok = 0;
        } else {
            ok = ok && WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == 0;
        }
    }
    return ok ? 0 : -1;
}

static void row(const char *net, const char *test, double ours, double base, const char *note)
{
    printf("%-4s %-28s %11.1f us %11.1f us %7.2fx  (%s)\n", net, test, ours, base,
           base > 0 ? ours / base : 0, note);
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 3000;
    if (iters < BLOCK) {
        fprintf(stderr, "usage: object_bench [ITERS >= %d]\n", BLOCK);
        return 2;
    }
    /* Every rank forks from here and shares it; the store refuses to run without one. */
    if (!getenv("FERRY_AUTH_TOKEN"))
        setenv("FERRY_AUTH_TOKEN", "ferry-bench-token", 1);
    printf("object_bench: workers on 127.0.0.1, %d calls of each after a warm-up, median of "
           "alternating blocks of %d\n", iters, BLOCK);
    printf("%-4s %-28s %14s %14s %8s\n", "net", "test", "object/group", "plain call", "ratio");
    const char *transports[2] = {"tcp", "shm"};
    int status = 0;
    for (int t = 0; t < 2; t++) {
        const char *net = transports[t];
        figures f;
        if (run_job(net, 2, iters, &f) != 0) {
            printf("%-4s method calls: run failed\n", net);
            status = 1;
        } else {
            row(net, "method call, one int", f.method_us[0], f.rpc_us[0],
                "rref_call_sync vs rpc_sync; goal <= 1.10x");
            row(net, "method call, 64 KiB tensor", f.method_us[1], f.rpc_us[1],
                "rref_call_sync vs rpc_sync; goal <= 1.10x");
        }
        fflush(stdout);
        if (run_job(net, 1 + GROUP_WORKERS, iters, &f) != 0) {
            printf("%-4s group calls: run failed\n", net);
            status = 1;
        } else {
            row(net, "group call to 4 workers", f.group_us, f.async_us,
                "per round: group_call ALL/NONE vs 4 rpc_async + wait all");
        }
        fflush(stdout);
    }
    return status;
}
