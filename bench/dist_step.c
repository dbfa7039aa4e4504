/* make bench: what distributed autograd costs for one training step, beside the same step in
   one process. The model is an MLP 64 -> 256 -> 256 -> 10 (ReLU between layers, float32,
   batch 32, cross-entropy loss) split in two stages: Linear 64->256 + ReLU on "worker1",
   Linear 256->256 + ReLU + Linear 256->10 on "worker2", each behind an RRef made by remote().
   A distributed step is what examples/model_parallel_sgd does minus the update: a new context,
   the forward pass through both RRef proxies, the loss on the master, the distributed backward
   pass, the context's end. The local step runs the same stages (same parameters, same code) in
   the master's process: forward, ferry_backward, and dropping .grad so it does not pile up.
   Both are timed in the same run, over tcp and over shm, so compare the ratios: the machines
   are shared and noisy.

   `dist_step [STEPS]` times STEPS steps of each (200 by default) after a warm-up. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/ferry.h"
#include "bench/bench_util.h"

#define N_IN 64
#define N_HIDDEN 256
#define N_CLASSES 10
#define BATCH 32
#define WARMUP 20
#define WORLD 3
#define DEADLINE_S 60.0 /* one transport's run; stragglers are killed */
#define MAX_LAYERS 4

typedef struct {
    double dist_us, local_us;
    double pending_s; /* how long the contexts' release took to reach both workers after */
} step_figures;

/* A stage is a list [w0, b0, w1, b1, ...] of nn.Linear parameters; ReLU follows every layer
   but the last, and the last too when relu_last. */
static ferry_value *stage_new(const int64_t *dims, int n_dims, bool relu_last, uint64_t seed)
{
    ferry_generator *gen = ferry_generator_new(seed);
    ferry_value *items[2 * MAX_LAYERS] = {NULL};
    int n = 0, ok = gen != NULL;
    for (int l = 0; ok && l + 1 < n_dims && l < MAX_LAYERS; l++) {
        ferry_tensor *w = NULL, *b = NULL;
        ok = ferry_linear_init(dims[l], dims[l + 1], true, FERRY_FLOAT32, gen, &w, &b) ==
             FERRY_OK;
        if (ok) {
            items[n++] = ferry_tensor_value(w);
            items[n++] = ferry_tensor_value(b);
            ok = items[n - 2] && items[n - 1];
        }
        ferry_tensor_release(w);
        ferry_tensor_release(b);
    }
    ferry_generator_free(gen);
    ferry_value *params = NULL, *stage = NULL;
    if (ok)
        params = ferry_list_from(items, (size_t)n);
    for (int i = 0; i < n; i++)
        ferry_value_release(items[i]);
    if (params)
        stage = ferry_list_of(2, params, ferry_bool(relu_last));
    return stage;
}

static ferry_tensor *stage_forward(const ferry_value *stage, ferry_tensor *x)
{
    const ferry_value *params = ferry_list_get(stage, 0);
    bool relu_last = ferry_value_as_bool(ferry_list_get(stage, 1));
    size_t layers = ferry_list_len(params) / 2;
    ferry_tensor *h = ferry_tensor_retain(x);
    for (size_t l = 0; h && l < layers; l++) {
        ferry_tensor *w = ferry_value_as_tensor(ferry_list_get(params, 2 * l));
        ferry_tensor *b = ferry_value_as_tensor(ferry_list_get(params, 2 * l + 1));
        ferry_tensor *y = ferry_linear(h, w, b);
        ferry_tensor_release(h);
        h = y;
        if (h && (l + 1 < layers || relu_last)) {
            y = ferry_relu(h);
            ferry_tensor_release(h);
            h = y;
        }
    }
    return h;
}

/* remote() target: make_stage([dims...], relu_last, seed). */
static ferry_status make_stage(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    const ferry_value *dl = ferry_list_get(args, 0);
    int64_t dims[MAX_LAYERS + 1];
    int n = (int)ferry_list_len(dl);
    if (n < 2 || n > MAX_LAYERS + 1)
        return ferry_set_error(FERRY_EINVAL, "make_stage: 2 to %d sizes", MAX_LAYERS + 1);
    for (int i = 0; i < n; i++)
        dims[i] = ferry_value_as_int(ferry_list_get(dl, (size_t)i));
    *result = stage_new(dims, n, ferry_value_as_bool(ferry_list_get(args, 1)),
                        (uint64_t)ferry_value_as_int(ferry_list_get(args, 2)));
    return *result ? FERRY_OK : ferry_last_status();
}

/* Proxy target: forward(stage, x), recorded in the caller's context. */
static ferry_status forward(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    ferry_tensor *x = ferry_value_as_tensor(ferry_list_get(args, 1));
    if (!x)
        return ferry_set_error(FERRY_ETYPE, "forward(stage, x) needs a tensor x");
    ferry_tensor *y = stage_forward(ferry_list_get(args, 0), x);
    if (!y)
        return ferry_last_status();
    *result = ferry_tensor_value(y);
    ferry_tensor_release(y);
    return *result ? FERRY_OK : ferry_last_status();
}

static const int64_t stage1_dims[2] = {N_IN, N_HIDDEN};
static const int64_t stage2_dims[3] = {N_HIDDEN, N_HIDDEN, N_CLASSES};

static ferry_value *dims_value(const int64_t *dims, int n)
{
    ferry_value *items[MAX_LAYERS + 1] = {NULL};
    for (int i = 0; i < n; i++)
        items[i] = ferry_int(dims[i]);
    ferry_value *v = ferry_list_from(items, (size_t)n);
    for (int i = 0; i < n; i++)
        ferry_value_release(items[i]);
    return v;
}

static int report(const char *what)
{
    fprintf(stderr, "dist_step: %s failed: %s: %s\n", what, ferry_strerror(ferry_last_status()),
            ferry_last_error());
    return -1;
}

static int dist_step(ferry_rref *s1, ferry_rref *s2, ferry_tensor *x, ferry_tensor *target)
{
    int64_t ctx = ferry_dist_autograd_context_begin();
    if (ctx < 0)
        return report("context_begin");
    int rc = -1;
    ferry_value *args = ferry_args(1, ferry_tensor_value(x));
    ferry_value *h = args ? ferry_rref_rpc_sync(s1, "forward", args, NULL, FERRY_TIMEOUT_DEFAULT)
                          : NULL;
    ferry_value_release(args);
    ferry_value *out = NULL;
    ferry_tensor *loss = NULL;
    if (!h) {
        report("stage 1 forward");
        goto done;
    }
    args = ferry_args(1, ferry_value_retain(h));
    out = args ? ferry_rref_rpc_sync(s2, "forward", args, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(args);
    if (!out) {
        report("stage 2 forward");
        goto done;
    }
    loss = ferry_cross_entropy(ferry_value_as_tensor(out), target, FERRY_REDUCTION_MEAN);
    if (!loss) {
        report("cross_entropy");
        goto done;
    }
    if (ferry_dist_autograd_backward(ctx, &loss, 1, false) != FERRY_OK) {
        report("dist_autograd_backward");
        goto done;
    }
    rc = 0;
done:
    ferry_tensor_release(loss);
    ferry_value_release(out);
    ferry_value_release(h);
    if (ferry_dist_autograd_context_end(ctx) != FERRY_OK && rc == 0)
        rc = report("context_end");
    return rc;
}

static int local_step(ferry_value *const stages[2], ferry_tensor *x, ferry_tensor *target)
{
    ferry_tensor *h = stage_forward(stages[0], x);
    ferry_tensor *out = h ? stage_forward(stages[1], h) : NULL;
    ferry_tensor *loss = out ? ferry_cross_entropy(out, target, FERRY_REDUCTION_MEAN) : NULL;
    int rc = loss && ferry_backward(loss, NULL, false) == FERRY_OK ? 0 : report("local step");
    for (int s = 0; s < 2; s++) {
        const ferry_value *params = ferry_list_get(stages[s], 0);
        for (size_t i = 0; i < ferry_list_len(params); i++)
            ferry_tensor_zero_grad(ferry_value_as_tensor(ferry_list_get(params, i)));
    }
    ferry_tensor_release(loss);
    ferry_tensor_release(out);
    ferry_tensor_release(h);
    return rc;
}

/* Warm-up, then `steps` timed steps; -1 when any step failed. */
static double time_steps(int steps, int (*step)(void *), void *arg)
{
    double t0 = 0;
    for (int i = -WARMUP; i < steps; i++) {
        if (i == 0)
            t0 = now_s();
        if (step(arg) != 0)
            return -1;
    }
    return (now_s() - t0) / steps * 1e6;
}

typedef struct {
    ferry_rref *s1, *s2;
    ferry_value *local[2];
    ferry_tensor *x, *target;
} bench_state;

static int run_dist(void *arg)
{
    bench_state *b = arg;
    return dist_step(b->s1, b->s2, b->x, b->target);
}

static int run_local(void *arg)
{
    bench_state *b = arg;
    return local_step(b->local, b->x, b->target);
}

static int master(int steps, step_figures *f)
{
    bench_state b = {0};
    int64_t xs[2] = {BATCH, N_IN};
    ferry_generator *gen = ferry_generator_new(7);
    b.x = gen ? ferry_randn(2, xs, FERRY_FLOAT32, gen) : NULL;
    ferry_generator_free(gen);
    int64_t labels[BATCH], n = BATCH;
    for (int i = 0; i < BATCH; i++)
        labels[i] = (i * 7) % N_CLASSES;
    b.target = ferry_tensor_from_data(labels, 1, &n, FERRY_INT64);
    ferry_value *a1 = ferry_args(3, dims_value(stage1_dims, 2), ferry_bool(true), ferry_int(11));
    ferry_value *a2 = ferry_args(3, dims_value(stage2_dims, 3), ferry_bool(false), ferry_int(12));
    b.s1 = a1 ? ferry_remote("worker1", "make_stage", a1, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    b.s2 = a2 ? ferry_remote("worker2", "make_stage", a2, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(a1);
    ferry_value_release(a2);
    b.local[0] = stage_new(stage1_dims, 2, true, 11);
    b.local[1] = stage_new(stage2_dims, 3, false, 12);
    int rc = -1;
    if (!b.x || !b.target || !b.s1 || !b.s2 || !b.local[0] || !b.local[1]) {
        report("setting up");
        goto done;
    }
    f->dist_us = time_steps(steps, run_dist, &b);
    if (f->dist_us < 0)
        goto done;
    /* Ending a context releases it on the workers in the background; let that finish before
       the local steps run, and say how long it took. */
    double t0 = now_s();
    while (ferry_dist_autograd_debug_counts().cleanups_pending > 0 && now_s() - t0 < 10)
        usleep(1000);
    f->pending_s = now_s() - t0;
    if (ferry_dist_autograd_debug_counts().cleanups_pending > 0) {
        fprintf(stderr, "dist_step: context releases still pending after 10 s\n");
        goto done;
    }
    f->local_us = time_steps(steps, run_local, &b);
    rc = f->local_us < 0 ? -1 : 0;
done:
    ferry_rref_release(b.s1);
    ferry_rref_release(b.s2);
    ferry_value_release(b.local[0]);
    ferry_value_release(b.local[1]);
    ferry_tensor_release(b.x);
    ferry_tensor_release(b.target);
    return rc;
}

static int rank_main(const char *transport, int port, int rank, int steps, int fd)
{
    static const char *const names[WORLD] = {"master", "worker1", "worker2"};
    char buf[32];
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", port);
    setenv("MASTER_PORT", buf, 1);
    setenv("FERRY_TRANSPORT", transport, 1);
    ferry_register_function("make_stage", make_stage, NULL);
    ferry_register_function("forward", forward, NULL);
    if (ferry_init_rpc(names[rank], rank, WORLD, NULL) != FERRY_OK) {
        report("init_rpc");
        return 1;
    }
    int rc = 0;
    if (rank == 0) {
        step_figures f = {0};
        rc = master(steps, &f) == 0 && write(fd, &f, sizeof f) == (ssize_t)sizeof f ? 0 : 1;
    }
    if (ferry_shutdown(true, 0) != FERRY_OK && rc == 0) {
        report("shutdown");
        rc = 1;
    }
    return rc;
}

/* Forks the three ranks for one transport; the master writes its figures into a pipe. */
static int run_transport(const char *transport, int steps, step_figures *out)
{
    int port = free_port(), fds[2];
    if (pipe(fds))
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pids[WORLD];
    int status[WORLD], done[WORLD] = {0}, started = 0;
    for (; started < WORLD; started++) {
        pids[started] = fork();
        if (pids[started] < 0)
            break;
        if (pids[started] == 0) {
            close(fds[0]);
            int rc = rank_main(transport, port, started, steps, fds[1]);
            fflush(stdout);
            fflush(stderr);
            _exit(rc);
        }
    }
    close(fds[1]);
    /* The figures come when the master wrote them; the pipe reads empty early when every rank
       is gone, and nothing comes from a rank that hangs, so the wait is bounded. */
    double end = now_s() + DEADLINE_S;
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    ssize_t got = started == WORLD && poll(&pfd, 1, (int)(DEADLINE_S * 1000)) == 1
                      ? read(fds[0], out, sizeof *out)
                      : 0;
    close(fds[0]);
    int ok = got == (ssize_t)sizeof *out;
    int left = started;
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
            fprintf(stderr, "dist_step: %s rank %d did not finish within %.0f s; killed\n",
                    transport, r, DEADLINE_S);
            kill(pids[r], SIGKILL);
            waitpid(pids[r], &status[r], 0);
            ok = 0;
        } else {
            ok = ok && WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == 0;
        }
    }
    return ok && started == WORLD ? 0 : -1;
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 200;
    if (steps < 1) {
        fprintf(stderr, "usage: dist_step [STEPS >= 1]\n");
        return 2;
    }
    /* Every rank forks from here and shares it; the store refuses to run without one. */
    if (!getenv("FERRY_AUTH_TOKEN"))
        setenv("FERRY_AUTH_TOKEN", "ferry-bench-token", 1);
    printf("dist_step: MLP %d-%d-%d-%d, batch %d, float32; stage 1 on worker1, stage 2 on "
           "worker2, driven by the master; %d steps after %d warm-up, local step in the "
           "master's process\n",
           N_IN, N_HIDDEN, N_HIDDEN, N_CLASSES, BATCH, steps, WARMUP);
    const char *transports[2] = {"tcp", "shm"};
    int status = 0;
    for (int t = 0; t < 2; t++) {
        step_figures f;
        if (run_transport(transports[t], steps, &f) != 0) {
            printf("dist step (%s): run failed\n", transports[t]);
            status = 1;
            continue;
        }
        printf("dist step (%s): 2 workers %9.1f us/step   local: %7.1f us/step   ratio %.2fx"
               "  (forward + backward + context end; context release done %.3f s after)\n",
               transports[t], f.dist_us, f.local_us, f.local_us > 0 ? f.dist_us / f.local_us : 0,
               f.pending_s);
        fflush(stdout);
    }
    return status;
}
