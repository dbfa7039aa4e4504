/* Model parallelism with distributed autograd, as torch's RPC tutorial does it: a two-stage
   regression model split over two workers and trained by a master that holds neither stage.
   Stage 1 (Linear 8->16 + ReLU) lives on "worker1", stage 2 (Linear 16->1) on "worker2"; each
   is built there by remote() and stays there, behind an RRef. Every step the master runs the
   forward pass through both RRefs inside a distributed autograd context, computes the MSE loss
   itself, runs the backward pass across the three processes, and asks each owner to apply SGD
   to its own parameters with the gradients its part of the context holds. The data never
   leaves the master, the parameters never leave their worker: only activations and their
   gradients cross.

   Run it with `build/examples/model_parallel_sgd`: without RANK in the environment it starts
   its three ranks itself on 127.0.0.1 (a free port, a fresh FERRY_AUTH_TOKEN). Under a launcher,
   `build/bin/ferryrun -n 3 build/examples/model_parallel_sgd` works too. It prints the loss of
   every step and exits non-zero unless the last loss is below the first. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry/ferry.h"
#include "examples/launch.h"

#define N_IN 8
#define N_HIDDEN 16
#define BATCH 64
#define STEPS 30
#define LR 0.1
#define WORLD 3
#define DEADLINE_S 120.0 /* the whole run, ASan builds included; stragglers are killed */

static int fail(const char *what)
{
    fprintf(stderr, "%s failed: %s: %s\n", what, ferry_strerror(ferry_last_status()),
            ferry_last_error());
    return 1;
}

/* remote() target on a worker: linear_params(in, out, seed) makes nn.Linear(in, out)'s
   parameters from their own seeded generator (so every run trains the same model) and returns
   them as the list [weight, bias]; the OwnerRRef keeps this very list, so later calls see, and
   update, these tensors. */
static ferry_status linear_params(const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result, void *user)
{
    int64_t in = ferry_value_as_int(ferry_list_get(args, 0));
    int64_t out = ferry_value_as_int(ferry_list_get(args, 1));
    int64_t seed = ferry_value_as_int(ferry_list_get(args, 2));
    ferry_generator *gen = ferry_generator_new((uint64_t)seed);
    if (!gen)
        return ferry_last_status();
    ferry_tensor *w = NULL, *b = NULL;
    ferry_status rc = ferry_linear_init(in, out, true, FERRY_FLOAT32, gen, &w, &b);
    ferry_generator_free(gen);
    if (rc != FERRY_OK)
        return rc;
    *result = ferry_list_of(2, ferry_tensor_value(w), ferry_tensor_value(b));
    ferry_tensor_release(w);
    ferry_tensor_release(b);
    return *result ? FERRY_OK : ferry_last_status();
}

/* The proxies prepend the owner's value: every stage function gets [params, ...]. */
static ferry_status stage_args(const ferry_value *args, ferry_tensor **w, ferry_tensor **b,
                               const char *fn)
{
    const ferry_value *params = ferry_list_get(args, 0);
    *w = ferry_value_as_tensor(ferry_list_get(params, 0));
    *b = ferry_value_as_tensor(ferry_list_get(params, 1));
    if (!*w || !*b)
        return ferry_set_error(FERRY_ETYPE, "%s: the RRef must hold [weight, bias]", fn);
    return FERRY_OK;
}

static ferry_status tensor_result(ferry_tensor *t, ferry_value **result)
{
    if (!t)
        return ferry_last_status();
    *result = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return *result ? FERRY_OK : ferry_last_status();
}

/* Run inside the master's context (the call carries its id), so the ops below are recorded
   there and the backward pass comes back through them. */
static ferry_status stage1_forward(const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    ferry_tensor *w, *b;
    ferry_tensor *x = ferry_value_as_tensor(ferry_list_get(args, 1));
    if (stage_args(args, &w, &b, "stage1_forward") != FERRY_OK)
        return ferry_last_status();
    if (!x)
        return ferry_set_error(FERRY_ETYPE, "stage1_forward(params, x) needs a tensor x");
    ferry_tensor *pre = ferry_linear(x, w, b);
    if (!pre)
        return ferry_last_status();
    ferry_tensor *h = ferry_relu(pre);
    ferry_tensor_release(pre);
    return tensor_result(h, result);
}

static ferry_status stage2_forward(const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    ferry_tensor *w, *b;
    ferry_tensor *h = ferry_value_as_tensor(ferry_list_get(args, 1));
    if (stage_args(args, &w, &b, "stage2_forward") != FERRY_OK)
        return ferry_last_status();
    if (!h)
        return ferry_set_error(FERRY_ETYPE, "stage2_forward(params, h) needs a tensor h");
    return tensor_result(ferry_linear(h, w, b), result);
}

/* sgd_step(params, ctx, lr) on the owner: the gradients of this worker's parameters are kept
   in its part of context ctx, never in .grad, so only the owner can apply them. The update
   runs under no-grad, as torch's optimizers do: it must not be recorded, and an in-place op
   on a leaf that requires grad is refused otherwise. */
static ferry_status sgd_step(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    const ferry_value *params = ferry_list_get(args, 0);
    int64_t ctx = ferry_value_as_int(ferry_list_get(args, 1));
    double lr = ferry_value_as_double(ferry_list_get(args, 2));
    if (ferry_value_kind(params) != FERRY_VALUE_LIST)
        return ferry_set_error(FERRY_ETYPE, "sgd_step: the RRef must hold a list of parameters");
    ferry_status rc = FERRY_OK;
    ferry_no_grad_enter();
    for (size_t i = 0; i < ferry_list_len(params) && rc == FERRY_OK; i++) {
        ferry_tensor *p = ferry_value_as_tensor(ferry_list_get(params, i));
        ferry_clear_error();
        ferry_tensor *g = ferry_dist_autograd_get_gradient(ctx, p);
        if (!g) /* with FERRY_OK, the backward pass did not reach p: a bug in this model */
            rc = ferry_last_status() != FERRY_OK
                     ? ferry_last_status()
                     : ferry_set_error(FERRY_EINVAL, "sgd_step: parameter %zu got no gradient", i);
        else
            rc = ferry_add_scaled_(p, g, -lr);
        ferry_tensor_release(g);
    }
    ferry_no_grad_exit();
    *result = NULL;
    return rc;
}

/* A fixed regression problem: x ~ N(0, 1) from a seeded generator, y = sum_j sin(x_j). */
static int make_data(ferry_tensor **x, ferry_tensor **y)
{
    int64_t xs[2] = {BATCH, N_IN}, ys[2] = {BATCH, 1};
    ferry_generator *gen = ferry_generator_new(1);
    *x = gen ? ferry_randn(2, xs, FERRY_FLOAT32, gen) : NULL;
    *y = ferry_zeros(2, ys, FERRY_FLOAT32);
    ferry_generator_free(gen);
    if (!*x || !*y)
        return -1;
    const float *xd = ferry_tensor_data(*x);
    float *yd = ferry_tensor_data(*y);
    for (int i = 0; i < BATCH; i++) {
        double s = 0;
        for (int j = 0; j < N_IN; j++)
            s += sin(xd[i * N_IN + j]);
        yd[i] = (float)s;
    }
    return 0;
}

/* One step inside its own context; the loss goes to *loss. Any failure ends the context, so
   the workers drop what it recorded. */
static int train_step(ferry_rref *stage1, ferry_rref *stage2, ferry_tensor *x, ferry_tensor *y,
                      double *loss_out)
{
    int64_t ctx = ferry_dist_autograd_context_begin();
    if (ctx < 0)
        return fail("dist_autograd_context_begin");
    int rc = 1;
    ferry_value *h = NULL, *out = NULL;
    ferry_tensor *loss = NULL;
    ferry_value *args = ferry_args(1, ferry_tensor_value(x));
    h = args ? ferry_rref_rpc_sync(stage1, "stage1_forward", args, NULL, FERRY_TIMEOUT_DEFAULT)
             : NULL;
    ferry_value_release(args);
    if (!h) {
        fail("stage1_forward");
        goto done;
    }
    args = ferry_args(1, ferry_value_retain(h));
    out = args ? ferry_rref_rpc_sync(stage2, "stage2_forward", args, NULL, FERRY_TIMEOUT_DEFAULT)
               : NULL;
    ferry_value_release(args);
    if (!out) {
        fail("stage2_forward");
        goto done;
    }
    loss = ferry_mse_loss(ferry_value_as_tensor(out), y, FERRY_REDUCTION_MEAN);
    if (!loss) {
        fail("mse_loss");
        goto done;
    }
    *loss_out = ferry_tensor_item(loss);
    if (ferry_dist_autograd_backward(ctx, &loss, 1, false) != FERRY_OK) {
        fail("dist_autograd_backward");
        goto done;
    }
    ferry_rref *stages[2] = {stage1, stage2};
    for (int s = 0; s < 2; s++) {
        args = ferry_args(2, ferry_int(ctx), ferry_double(LR));
        ferry_value *r = args ? ferry_rref_rpc_sync(stages[s], "sgd_step", args, NULL,
                                                    FERRY_TIMEOUT_DEFAULT)
                              : NULL;
        ferry_value_release(args);
        if (!r) {
            fail("sgd_step");
            goto done;
        }
        ferry_value_release(r);
    }
    rc = 0;
done:
    ferry_tensor_release(loss);
    ferry_value_release(out);
    ferry_value_release(h);
    if (ferry_dist_autograd_context_end(ctx) != FERRY_OK && rc == 0)
        rc = fail("dist_autograd_context_end");
    return rc;
}

static int run_master(void)
{
    ferry_tensor *x = NULL, *y = NULL;
    if (make_data(&x, &y) != 0)
        return fail("making the data");
    /* Each stage is built where it will live; the seeds make the run reproducible. */
    ferry_value *a1 = ferry_args(3, ferry_int(N_IN), ferry_int(N_HIDDEN), ferry_int(11));
    ferry_value *a2 = ferry_args(3, ferry_int(N_HIDDEN), ferry_int(1), ferry_int(12));
    ferry_rref *stage1 = a1 ? ferry_remote("worker1", "linear_params", a1, NULL,
                                           FERRY_TIMEOUT_DEFAULT)
                            : NULL;
    ferry_rref *stage2 = a2 ? ferry_remote("worker2", "linear_params", a2, NULL,
                                           FERRY_TIMEOUT_DEFAULT)
                            : NULL;
    ferry_value_release(a1);
    ferry_value_release(a2);
    int rc = stage1 && stage2 ? 0 : fail("remote(linear_params)");
    double first = NAN, last = NAN;
    for (int step = 0; step < STEPS && rc == 0; step++) {
        double loss = NAN;
        rc = train_step(stage1, stage2, x, y, &loss);
        if (rc == 0) {
            printf("step %d loss %.6f\n", step, loss);
            fflush(stdout);
            if (step == 0)
                first = loss;
            last = loss;
        }
    }
    if (rc == 0 && !(last < first)) {
        fprintf(stderr, "the loss did not fall: first %.6f, last %.6f\n", first, last);
        rc = 1;
    } else if (rc == 0) {
        printf("loss fell from %.6f to %.6f in %d steps\n", first, last, STEPS);
    }
    ferry_rref_release(stage1);
    ferry_rref_release(stage2);
    ferry_tensor_release(x);
    ferry_tensor_release(y);
    return rc;
}

static int run_rank(int rank, void *user)
{
    static const char *const names[WORLD] = {"master", "worker1", "worker2"};
    if (rank < 0 || rank >= WORLD) {
        fprintf(stderr, "model_parallel_sgd needs exactly %d ranks (got rank %d)\n", WORLD, rank);
        return 1;
    }
    const char *ws = getenv("WORLD_SIZE");
    if (ws && atoi(ws) != WORLD) {
        fprintf(stderr, "model_parallel_sgd needs WORLD_SIZE=%d (got %s)\n", WORLD, ws);
        return 1;
    }
    /* Before init, so no peer can call a name that is not there yet. */
    if (ferry_register_function("linear_params", linear_params, NULL) != FERRY_OK ||
        ferry_register_function("stage1_forward", stage1_forward, NULL) != FERRY_OK ||
        ferry_register_function("stage2_forward", stage2_forward, NULL) != FERRY_OK ||
        ferry_register_function("sgd_step", sgd_step, NULL) != FERRY_OK)
        return fail("register_function");
    if (ferry_init_rpc(names[rank], rank, WORLD, NULL) != FERRY_OK)
        return fail("init_rpc");
    int rc = rank == 0 ? run_master() : 0;
    /* Graceful: the workers serve until the master is done, and the RRefs' owners see their
       last users go before anyone stops. */
    if (ferry_shutdown(true, 0) != FERRY_OK && rc == 0)
        rc = fail("shutdown");
    return rc;
}

int main(void)
{
    example_job job = {.name = "model-parallel", .world = WORLD, .deadline_s = DEADLINE_S};
    return example_main(&job, run_rank, NULL);
}
