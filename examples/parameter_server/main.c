/* A batch-updating parameter server, after torch's tutorial "Implementing Batch RPC Processing
   Using Asynchronous Executions". One process, "ps", holds the model (Linear 16->32, ReLU,
   Linear 32->4, float64) in an object of the registered class BatchUpdateParameterServer,
   built with ferry_remote_object and reached through an RRef. Three trainers ("trainer1" ..
   "trainer3") each hold a fixed batch of a regression problem. Every round a trainer computes
   the loss and the gradients of the model it holds with local autograd and sends them to the
   server with update_and_fetch_model, which answers only once all three trainers of the round
   have reported: the server then averages the three gradients, takes one SGD step (momentum
   0.9, as the tutorial's optimizer) and answers every waiting trainer with the new model.

   Why update_and_fetch_model is a registered async function and not a method: calls on one
   object run one at a time, so a method that waited for the other trainers' calls would wait
   forever. torch has the same problem and solves it with @rpc.functions.async_execution; ferry's
   counterpart is ferry_register_async_function. The function takes the server's RRef (as
   torch's static method takes ps_rref), finds the object with ferry_rref_local_value, records
   the trainer's gradients and returns the round's future at once, so no thread waits; the last
   trainer of the round completes that future, and every trainer's reply goes out with it. (A
   concurrent method could not do this: a method returns a value, not a future.) Because such
   calls run beside the object's methods, the object has a lock, as torch's server has, and
   get_model takes it too. The gradients are added in trainer-rank order, not in the order
   they arrive, so every run gives the same numbers.

   The master is the server's process: it builds the server, starts each trainer's loop with
   rpc_async (as the tutorial's run_ps does), and prints per round the mean of the trainers'
   losses, `step <i> loss <mean>`, then a summary. It exits non-zero unless the loss fell.
     --steps N          train N rounds (default 30)
     --weights-out FILE write the initial model and every trainer's batch to a safetensors file
                        (fc1.weight, fc1.bias, fc2.weight, fc2.bias, data.x.<r>, data.y.<r> for
                        trainer r), which reference.py --weights FILE reads
     --bench N          3 untimed rounds, then N timed ones; the last line is `step_ms <ms>`
   Without RANK in the environment it starts its four ranks itself on 127.0.0.1 (a free port, a
   fresh FERRY_AUTH_TOKEN); `build/bin/ferryrun -n 4 build/examples/parameter_server` works too. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/ferry.h"
#include "examples/launch.h"

#define N_IN 16
#define N_HIDDEN 32
#define N_OUT 4
#define N_PARAMS 4 /* fc1.weight, fc1.bias, fc2.weight, fc2.bias */
#define BATCH 32   /* rows of each trainer's batch */
#define N_TRAINERS 3
#define WORLD (N_TRAINERS + 1)
#define STEPS 30
#define WARMUP 3
#define LR 0.05
#define MOMENTUM 0.9
#define MODEL_SEED 5
#define DATA_SEED 11
#define DEADLINE_S 120.0 /* the whole run, ASan builds included; stragglers are killed */

static const char *const param_names[N_PARAMS] = {"fc1.weight", "fc1.bias", "fc2.weight",
                                                  "fc2.bias"};

typedef struct {
    int steps, bench;
    const char *weights_out;
} options;

/* The server's state. `lock` guards everything below it: update_and_fetch_model runs on any
   pool thread, beside other such calls and beside the methods. */
typedef struct {
    int n_trainers;
    pthread_mutex_t lock;
    ferry_tensor *params[N_PARAMS]; /* the model: leaves the optimizer updates in place */
    ferry_optimizer *opt;
    ferry_tensor *grads[N_TRAINERS][N_PARAMS]; /* this round's, by trainer rank - 1 */
    int reported;                              /* trainers heard from this round */
    ferry_future *round;                       /* completed with the model after the round */
} batch_ps;

static int fail(const char *what)
{
    fprintf(stderr, "%s failed: %s: %s\n", what, ferry_strerror(ferry_last_status()),
            ferry_last_error());
    return 1;
}

/* ---- the server ---- */

static void ps_free(void *obj, void *user)
{
    batch_ps *p = obj;
    /* A round cut short (a trainer failed) must not leave the others waiting for ever. */
    if (p->round && !ferry_future_done(p->round))
        ferry_future_set_error(p->round, FERRY_ECANCELED, "the parameter server was destroyed");
    ferry_future_release(p->round);
    for (int r = 0; r < N_TRAINERS; r++)
        for (int i = 0; i < N_PARAMS; i++)
            ferry_tensor_release(p->grads[r][i]);
    ferry_optimizer_free(p->opt);
    for (int i = 0; i < N_PARAMS; i++)
        ferry_tensor_release(p->params[i]);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* BatchUpdateParameterServer(n_trainers, seed, lr): the model from nn.Linear's initialization
   with a seeded generator, and torch.optim.SGD(lr, momentum=0.9) over it. */
static ferry_status ps_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                           void *user)
{
    int64_t n = ferry_value_as_int(ferry_list_get(args, 0));
    int64_t seed = ferry_value_as_int(ferry_list_get(args, 1));
    double lr = ferry_value_as_double(ferry_list_get(args, 2));
    if (ferry_list_len(args) != 3 || n < 1 || n > N_TRAINERS)
        return ferry_set_error(FERRY_EINVAL, "BatchUpdateParameterServer(n_trainers, seed, lr) "
                                             "takes 1 to %d trainers",
                               N_TRAINERS);
    batch_ps *p = calloc(1, sizeof *p);
    if (!p)
        return ferry_set_error(FERRY_ENOMEM, "BatchUpdateParameterServer: out of memory");
    pthread_mutex_init(&p->lock, NULL);
    p->n_trainers = (int)n;
    ferry_generator *gen = ferry_generator_new((uint64_t)seed);
    ferry_status rc = gen ? ferry_linear_init(N_IN, N_HIDDEN, true, FERRY_FLOAT64, gen,
                                              &p->params[0], &p->params[1])
                          : ferry_last_status();
    if (rc == FERRY_OK)
        rc = ferry_linear_init(N_HIDDEN, N_OUT, true, FERRY_FLOAT64, gen, &p->params[2],
                               &p->params[3]);
    ferry_generator_free(gen);
    if (rc == FERRY_OK) {
        ferry_optim_options o;
        ferry_optim_options_init(&o, FERRY_SGD);
        o.lr = lr;
        o.momentum = MOMENTUM;
        p->opt = ferry_optimizer_new(FERRY_SGD, &o, p->params, N_PARAMS);
        rc = p->opt ? FERRY_OK : ferry_last_status();
    }
    if (rc == FERRY_OK && !(p->round = ferry_future_new()))
        rc = ferry_last_status();
    if (rc != FERRY_OK) {
        ps_free(p, user);
        return rc;
    }
    *obj = p;
    return FERRY_OK;
}

/* A copy of the model, as a list of detached tensors. The parameters change in place at the
   end of every round, while a reply may still be on its way: what goes out is a snapshot.
   Called with the lock held. */
static ferry_value *ps_snapshot(batch_ps *p)
{
    ferry_value *items[N_PARAMS] = {0};
    for (int i = 0; i < N_PARAMS; i++) {
        ferry_tensor *t = ferry_tensor_clone_data(p->params[i]);
        items[i] = t ? ferry_tensor_value(t) : NULL;
        ferry_tensor_release(t);
    }
    return ferry_list_of(N_PARAMS, items[0], items[1], items[2], items[3]);
}

/* get_model() -> [fc1.weight, fc1.bias, fc2.weight, fc2.bias]. */
static ferry_status ps_get_model(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    batch_ps *p = obj;
    pthread_mutex_lock(&p->lock);
    *result = ps_snapshot(p);
    pthread_mutex_unlock(&p->lock);
    return *result ? FERRY_OK : ferry_last_status();
}

static const ferry_method_def ps_methods[] = {
    {.name = "get_model", .fn = ps_get_model},
};

/* The round is full: the mean of the trainers' gradients, added in rank order, then one SGD
   step. Called with the lock held; the round's gradients are dropped either way. */
static ferry_status ps_apply(batch_ps *p)
{
    ferry_tensor *mean[N_PARAMS] = {0};
    ferry_status rc = FERRY_OK;
    for (int i = 0; i < N_PARAMS && rc == FERRY_OK; i++) {
        ferry_tensor *sum = ferry_tensor_clone_data(p->grads[0][i]);
        rc = sum ? FERRY_OK : ferry_last_status();
        for (int r = 1; r < p->n_trainers && rc == FERRY_OK; r++)
            rc = ferry_add_(sum, p->grads[r][i]);
        if (rc == FERRY_OK && !(mean[i] = ferry_div_scalar(sum, p->n_trainers)))
            rc = ferry_last_status();
        ferry_tensor_release(sum);
    }
    if (rc == FERRY_OK)
        rc = ferry_optimizer_step_grads(p->opt, mean, N_PARAMS);
    for (int i = 0; i < N_PARAMS; i++)
        ferry_tensor_release(mean[i]);
    for (int r = 0; r < p->n_trainers; r++)
        for (int i = 0; i < N_PARAMS; i++) {
            ferry_tensor_release(p->grads[r][i]);
            p->grads[r][i] = NULL;
        }
    p->reported = 0;
    return rc;
}

/* Checks update_and_fetch_model's arguments [ps_rref, rank, grads]; the server comes back in
   *p (the object value that holds it in *holder, a new reference). */
static ferry_status update_args(const ferry_value *args, ferry_value **holder, batch_ps **p,
                                int *rank, const ferry_value **grads)
{
    ferry_rref *ps = ferry_value_as_rref(ferry_list_get(args, 0));
    *rank = (int)ferry_value_as_int(ferry_list_get(args, 1));
    *grads = ferry_list_get(args, 2);
    if (!ps || ferry_list_len(*grads) != N_PARAMS)
        return ferry_set_error(FERRY_EINVAL, "update_and_fetch_model(ps_rref, rank, grads) "
                                             "needs the server's RRef and %d gradients",
                               N_PARAMS);
    for (int i = 0; i < N_PARAMS; i++)
        if (!ferry_value_as_tensor(ferry_list_get(*grads, (size_t)i)))
            return ferry_set_error(FERRY_ETYPE, "update_and_fetch_model: gradient %d is not a "
                                                "tensor", i);
    /* torch's ps_rref.local_value(): the server lives here, the caller passed its RRef. */
    *holder = ferry_rref_local_value(ps);
    if (!*holder)
        return ferry_last_status();
    *p = ferry_object_ptr(*holder);
    if (!*p || strcmp(ferry_object_class(*holder), "BatchUpdateParameterServer") != 0)
        return ferry_set_error(FERRY_ETYPE, "update_and_fetch_model: the RRef does not hold a "
                                            "BatchUpdateParameterServer");
    if (*rank < 1 || *rank > (*p)->n_trainers)
        return ferry_set_error(FERRY_EINVAL, "update_and_fetch_model: trainer rank %d is not "
                                             "in 1..%d", *rank, (*p)->n_trainers);
    return FERRY_OK;
}

/* update_and_fetch_model(ps_rref, rank, grads) -> the model after this round. Returns the
   round's future at once; the last trainer to report completes it. */
static ferry_future *update_and_fetch_model(const ferry_value *args, const ferry_value *kwargs,
                                            void *user)
{
    ferry_value *holder = NULL;
    batch_ps *p = NULL;
    const ferry_value *grads = NULL;
    int rank = 0;
    if (update_args(args, &holder, &p, &rank, &grads) != FERRY_OK) {
        ferry_value_release(holder);
        return NULL;
    }
    ferry_future *round = NULL, *done = NULL, *next = NULL;
    ferry_value *model = NULL;
    ferry_status rc = FERRY_OK;
    pthread_mutex_lock(&p->lock);
    if (p->grads[rank - 1][0])
        rc = ferry_set_error(FERRY_EINVAL, "update_and_fetch_model: trainer %d already reported "
                                           "this round", rank);
    for (int i = 0; i < N_PARAMS && rc == FERRY_OK; i++)
        p->grads[rank - 1][i] = ferry_tensor_retain(
            ferry_value_as_tensor(ferry_list_get(grads, (size_t)i)));
    if (rc == FERRY_OK) {
        round = ferry_future_retain(p->round);
        if (++p->reported == p->n_trainers) {
            /* The last of the round: step, then hand the new model to everyone waiting and
               start the next round with a fresh future. */
            next = ferry_future_new();
            rc = next ? ps_apply(p) : ferry_last_status();
            if (rc == FERRY_OK && !(model = ps_snapshot(p)))
                rc = ferry_last_status();
            done = p->round;
            p->round = next ? next : ferry_future_retain(done); /* a failed round stays failed */
        }
    }
    pthread_mutex_unlock(&p->lock);
    /* Completed outside the lock: the replies go out from its callbacks. */
    if (done && rc == FERRY_OK)
        ferry_future_set_value(done, model);
    else if (done)
        ferry_future_set_error(done, rc, ferry_last_error());
    ferry_future_release(done);
    ferry_value_release(model);
    ferry_value_release(holder);
    return round; /* NULL only when rc says why */
}

/* ---- the trainers ---- */

static ferry_status tensor_result(ferry_tensor *t, ferry_tensor **out)
{
    *out = t;
    return t ? FERRY_OK : ferry_last_status();
}

/* The loss of `model` (the list get_model returns, received here: this trainer's own copy) on
   the batch and its gradients, by local autograd: *grads gets the list of the four. */
static ferry_status local_grads(ferry_value *model, ferry_tensor *x, ferry_tensor *y,
                                double *loss_out, ferry_value **grads)
{
    ferry_tensor *p[N_PARAMS], *h = NULL, *a = NULL, *out = NULL, *loss = NULL;
    ferry_status rc = ferry_list_len(model) == N_PARAMS
                          ? FERRY_OK
                          : ferry_set_error(FERRY_EINVAL, "the model must be %d tensors",
                                            N_PARAMS);
    for (int i = 0; i < N_PARAMS && rc == FERRY_OK; i++) {
        p[i] = ferry_value_as_tensor(ferry_list_get(model, (size_t)i));
        rc = p[i] ? ferry_tensor_set_requires_grad(p[i], true) : ferry_last_status();
    }
    if (rc == FERRY_OK)
        rc = tensor_result(ferry_linear(x, p[0], p[1]), &h);
    if (rc == FERRY_OK)
        rc = tensor_result(ferry_relu(h), &a);
    if (rc == FERRY_OK)
        rc = tensor_result(ferry_linear(a, p[2], p[3]), &out);
    if (rc == FERRY_OK)
        rc = tensor_result(ferry_mse_loss(out, y, FERRY_REDUCTION_MEAN), &loss);
    if (rc == FERRY_OK)
        rc = ferry_backward(loss, NULL, false);
    if (rc == FERRY_OK) {
        ferry_value *g[N_PARAMS];
        for (int i = 0; i < N_PARAMS; i++) {
            ferry_tensor *gi = ferry_tensor_grad(p[i]);
            g[i] = gi ? ferry_tensor_value(gi) : NULL;
            ferry_tensor_release(gi);
        }
        *grads = ferry_list_of(N_PARAMS, g[0], g[1], g[2], g[3]);
        rc = *grads ? FERRY_OK : ferry_last_status();
        *loss_out = ferry_tensor_item(loss);
    }
    ferry_tensor_release(loss);
    ferry_tensor_release(out);
    ferry_tensor_release(a);
    ferry_tensor_release(h);
    return rc;
}

/* run_trainer(ps_rref, rank, x, y, steps) on a trainer: the tutorial's Trainer.train. Fetches
   the model, then every round sends its gradients and gets the next model back. Returns the
   loss of every round as a float64 tensor [steps]. */
static ferry_status run_trainer(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    ferry_rref *ps = ferry_value_as_rref(ferry_list_get(args, 0));
    int64_t rank = ferry_value_as_int(ferry_list_get(args, 1));
    ferry_tensor *x = ferry_value_as_tensor(ferry_list_get(args, 2));
    ferry_tensor *y = ferry_value_as_tensor(ferry_list_get(args, 3));
    int64_t steps = ferry_value_as_int(ferry_list_get(args, 4));
    if (!ps || !x || !y || steps < 1)
        return ferry_set_error(FERRY_EINVAL, "run_trainer(ps_rref, rank, x, y, steps) needs the "
                                             "server's RRef, two tensors and steps >= 1");
    ferry_tensor *losses = ferry_zeros(1, &steps, FERRY_FLOAT64);
    if (!losses)
        return ferry_last_status();
    double *loss = ferry_tensor_data(losses);
    ferry_value *model = ferry_rref_call_sync(ps, "get_model", NULL, NULL,
                                              FERRY_TIMEOUT_DEFAULT);
    ferry_status rc = model ? FERRY_OK : ferry_last_status();
    for (int64_t s = 0; s < steps && rc == FERRY_OK; s++) {
        ferry_value *grads = NULL;
        rc = local_grads(model, x, y, &loss[s], &grads);
        ferry_value_release(model);
        model = NULL;
        if (rc != FERRY_OK)
            break;
        ferry_value *a = ferry_args(3, ferry_rref_value(ps), ferry_int(rank), grads);
        model = a ? ferry_rpc_sync(ferry_rref_owner_name(ps), "update_and_fetch_model", a, NULL,
                                   FERRY_TIMEOUT_DEFAULT)
                  : NULL;
        ferry_value_release(a);
        rc = model ? FERRY_OK : ferry_last_status();
    }
    ferry_value_release(model);
    *result = rc == FERRY_OK ? ferry_tensor_value(losses) : NULL;
    ferry_tensor_release(losses);
    return rc != FERRY_OK ? rc : *result ? FERRY_OK : ferry_last_status();
}

/* ---- the master ---- */

/* Trainer r's fixed batch: x ~ N(0, 1) [BATCH, N_IN], y = tanh(2 (x A^T + c)) [BATCH, N_OUT]
   with one A, c for everyone. */
static int make_data(ferry_tensor **xs, ferry_tensor **ys)
{
    ferry_generator *gen = ferry_generator_new(DATA_SEED);
    ferry_tensor *a = NULL, *c = NULL;
    int rc = gen && ferry_linear_init(N_IN, N_OUT, true, FERRY_FLOAT64, gen, &a, &c) == FERRY_OK
                 ? 0
                 : 1;
    ferry_no_grad_enter();
    int64_t sizes[2] = {BATCH, N_IN};
    for (int r = 0; r < N_TRAINERS && rc == 0; r++) {
        ferry_tensor *lin = NULL, *twice = NULL;
        xs[r] = ferry_randn(2, sizes, FERRY_FLOAT64, gen);
        lin = xs[r] ? ferry_linear(xs[r], a, c) : NULL;
        twice = lin ? ferry_mul_scalar(lin, 2.0) : NULL;
        ys[r] = twice ? ferry_tanh(twice) : NULL;
        rc = ys[r] ? 0 : 1;
        ferry_tensor_release(twice);
        ferry_tensor_release(lin);
    }
    ferry_no_grad_exit();
    ferry_tensor_release(a);
    ferry_tensor_release(c);
    ferry_generator_free(gen);
    return rc ? fail("making the data") : 0;
}

static int write_weights(ferry_rref *ps, ferry_tensor **xs, ferry_tensor **ys, const char *path)
{
    ferry_value *model = ferry_rref_call_sync(ps, "get_model", NULL, NULL,
                                              FERRY_TIMEOUT_DEFAULT);
    if (!model)
        return fail("get_model");
    enum { N = N_PARAMS + 2 * N_TRAINERS };
    char names[N][32];
    const char *name_ptrs[N];
    ferry_tensor *tensors[N];
    for (int i = 0; i < N_PARAMS; i++) {
        snprintf(names[i], sizeof names[i], "%s", param_names[i]);
        tensors[i] = ferry_value_as_tensor(ferry_list_get(model, (size_t)i));
    }
    for (int r = 0; r < N_TRAINERS; r++) {
        snprintf(names[N_PARAMS + 2 * r], sizeof names[0], "data.x.%d", r + 1);
        snprintf(names[N_PARAMS + 2 * r + 1], sizeof names[0], "data.y.%d", r + 1);
        tensors[N_PARAMS + 2 * r] = xs[r];
        tensors[N_PARAMS + 2 * r + 1] = ys[r];
    }
    for (int i = 0; i < N; i++)
        name_ptrs[i] = names[i];
    int rc = ferry_safetensors_save(path, name_ptrs, tensors, N) == FERRY_OK ? 0
                                                                            : fail("saving");
    ferry_value_release(model);
    return rc;
}

/* `n` rounds, numbered from `first`: each trainer's loop at once (the tutorial's run_ps), then
   the mean loss of every round, in trainer order, is printed. */
static int run_rounds(ferry_rref *ps, ferry_tensor **xs, ferry_tensor **ys, int first, int n,
                      double *first_loss, double *last_loss)
{
    ferry_future *futs[N_TRAINERS] = {0};
    int rc = 0;
    for (int r = 0; r < N_TRAINERS && rc == 0; r++) {
        char name[32];
        snprintf(name, sizeof name, "trainer%d", r + 1);
        ferry_value *a = ferry_args(5, ferry_rref_value(ps), ferry_int(r + 1),
                                    ferry_tensor_value(xs[r]), ferry_tensor_value(ys[r]),
                                    ferry_int(n));
        futs[r] = a ? ferry_rpc_async(name, "run_trainer", a, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
        ferry_value_release(a);
        rc = futs[r] ? 0 : fail("rpc_async(run_trainer)");
    }
    /* Even after a failed send, wait for the loops already started. */
    ferry_value *losses[N_TRAINERS] = {0};
    for (int r = 0; r < N_TRAINERS; r++) {
        losses[r] = futs[r] ? ferry_future_value(futs[r]) : NULL;
        if (futs[r] && !losses[r] && rc == 0)
            rc = fail("run_trainer");
        ferry_future_release(futs[r]);
    }
    for (int s = 0; s < n && rc == 0; s++) {
        double sum = 0;
        for (int r = 0; r < N_TRAINERS; r++)
            sum += ferry_tensor_item_at(ferry_value_as_tensor(losses[r]), s);
        double mean = sum / N_TRAINERS;
        printf("step %d loss %.9f\n", first + s, mean);
        if (first + s == 0)
            *first_loss = mean;
        *last_loss = mean;
    }
    fflush(stdout);
    for (int r = 0; r < N_TRAINERS; r++)
        ferry_value_release(losses[r]);
    return rc;
}

static int run_master(const options *opt)
{
    ferry_tensor *xs[N_TRAINERS] = {0}, *ys[N_TRAINERS] = {0};
    int rc = make_data(xs, ys);
    /* The server is built in this process, as the tutorial's run_ps builds it: remote() to
       itself gives an OwnerRRef. */
    ferry_value *ctor = ferry_args(3, ferry_int(N_TRAINERS), ferry_int(MODEL_SEED),
                                   ferry_double(LR));
    ferry_rref *ps = rc == 0 && ctor ? ferry_remote_object("ps", "BatchUpdateParameterServer",
                                                           ctor, NULL, FERRY_TIMEOUT_DEFAULT)
                                     : NULL;
    ferry_value_release(ctor);
    if (rc == 0 && !ps)
        rc = fail("remote_object(BatchUpdateParameterServer)");
    if (rc == 0 && opt->weights_out)
        rc = write_weights(ps, xs, ys, opt->weights_out);
    double first = NAN, last = NAN, t0 = 0, t1 = 0;
    int total = opt->bench ? WARMUP + opt->bench : opt->steps;
    if (rc == 0 && opt->bench)
        rc = run_rounds(ps, xs, ys, 0, WARMUP, &first, &last);
    t0 = now_s();
    if (rc == 0)
        rc = run_rounds(ps, xs, ys, total - (opt->bench ? opt->bench : opt->steps),
                        opt->bench ? opt->bench : opt->steps, &first, &last);
    t1 = now_s();
    if (rc == 0 && !(last < first)) {
        fprintf(stderr, "the loss did not fall: first %.9f, last %.9f\n", first, last);
        rc = 1;
    } else if (rc == 0) {
        printf("loss fell from %.9f to %.9f in %d rounds of %d trainers\n", first, last, total,
               N_TRAINERS);
    }
    if (rc == 0 && opt->bench)
        printf("step_ms %.3f\n", (t1 - t0) * 1e3 / opt->bench);
    ferry_rref_release(ps);
    for (int r = 0; r < N_TRAINERS; r++) {
        ferry_tensor_release(xs[r]);
        ferry_tensor_release(ys[r]);
    }
    return rc;
}

static int run_rank(int rank, void *user)
{
    const options *opt = user;
    const char *ws = getenv("WORLD_SIZE");
    if (rank < 0 || rank >= WORLD || (ws && atoi(ws) != WORLD)) {
        fprintf(stderr, "parameter_server runs as exactly %d ranks\n", WORLD);
        return 1;
    }
    ferry_class_def def = {.construct = ps_new, .destroy = ps_free, .methods = ps_methods,
                           .n_methods = sizeof ps_methods / sizeof ps_methods[0]};
    /* Before init, so no peer can call a name that is not there yet. */
    if (ferry_register_class("BatchUpdateParameterServer", &def) != FERRY_OK ||
        ferry_register_async_function("update_and_fetch_model", update_and_fetch_model,
                                      NULL) != FERRY_OK ||
        ferry_register_function("run_trainer", run_trainer, NULL) != FERRY_OK)
        return fail("registering");
    char name[32];
    snprintf(name, sizeof name, rank ? "trainer%d" : "ps", rank);
    if (ferry_init_rpc(name, rank, WORLD, NULL) != FERRY_OK)
        return fail("init_rpc");
    int rc = rank == 0 ? run_master(opt) : 0;
    return example_shutdown(name, rc);
}

static int parse_args(int argc, char **argv, options *opt)
{
    *opt = (options){.steps = STEPS};
    for (int i = 1; i < argc; i += 2) { /* every flag takes one value */
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--steps")) {
            if (example_parse_count("--steps", next, &opt->steps))
                return 1;
        } else if (!strcmp(argv[i], "--bench")) {
            if (example_parse_count("--bench", next, &opt->bench))
                return 1;
        } else if (!strcmp(argv[i], "--weights-out") && next) {
            opt->weights_out = next;
        } else {
            fprintf(stderr, "usage: %s [--steps N] [--weights-out FILE] [--bench N]\n", argv[0]);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    options opt;
    if (parse_args(argc, argv, &opt))
        return 2;
    example_job job = {.name = "parameter-server", .world = WORLD, .deadline_s = DEADLINE_S};
    return example_main(&job, run_rank, &opt);
}
