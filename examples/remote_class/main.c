/* Data parallelism with remote objects: the remote-class pattern. A "Trainer" object holds a
   copy of a small linear model (Linear 16->4, float64) and computes the squared error of a
   slice of a batch and its gradients. The master builds one Trainer on each of three workers
   through a group, and every step sends each Trainer its slice of the batch
   (FERRY_DISPATCH_SLICE), adds their gradients up (FERRY_COLLECT_SUM), applies SGD to its own
   copy of the parameters and pushes that to every Trainer (FERRY_DISPATCH_ALL).

   The same class also runs in the master's process on the whole batch, with a second copy of
   the parameters: both runs must train the same model, so the example prints both losses and
   fails when they differ by more than 1e-5 relative. Trainers return sums over their slice,
   not means, so that the slices add up to what the whole batch gives; the master divides by
   the batch size once. float64 keeps the different order of those sums far below the check.

   Run `build/examples/remote_class`: without RANK in the environment it starts its four ranks
   itself on 127.0.0.1 (a free port, a fresh FERRY_AUTH_TOKEN, FERRY_TRANSPORT tcp unless set).
   `build/bin/ferryrun -n 4 build/examples/remote_class` works too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry/ferry.h"
#include "examples/launch.h"

#define N_IN 16
#define N_OUT 4
#define BATCH 64 /* over 3 workers: slices of 22, 22 and 20 rows */
#define STEPS 30
#define LR 0.05
#define SEED 7
#define WORLD 4
#define REL_TOL 1e-5
#define DEADLINE_S 120.0 /* the whole run, ASan builds included; stragglers are killed */

typedef struct {
    ferry_tensor *w, *b; /* leaves that require grad */
} trainer;

/* What the master trains: its own copy of the parameters, and where its Trainers are (a group
   of them on the workers, or one in this process). */
typedef struct {
    ferry_tensor *w, *b;
    ferry_group *group;
    ferry_value *local;
} run;

static int fail(const char *what)
{
    fprintf(stderr, "%s failed: %s: %s\n", what, ferry_strerror(ferry_last_status()),
            ferry_last_error());
    return 1;
}

/* nn.Linear(N_IN, N_OUT) from its own seeded generator: every process that makes it with the
   same seed holds the same model. */
static ferry_status linear_params(int64_t seed, ferry_tensor **w, ferry_tensor **b)
{
    ferry_generator *gen = ferry_generator_new((uint64_t)seed);
    ferry_status rc = gen ? ferry_linear_init(N_IN, N_OUT, true, FERRY_FLOAT64, gen, w, b)
                          : ferry_last_status();
    ferry_generator_free(gen);
    return rc;
}

/* Trainer(seed). */
static ferry_status trainer_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                                void *user)
{
    trainer *t = calloc(1, sizeof *t);
    if (!t)
        return ferry_set_error(FERRY_ENOMEM, "Trainer: out of memory");
    ferry_status rc = linear_params(ferry_value_as_int(ferry_list_get(args, 0)), &t->w, &t->b);
    if (rc != FERRY_OK)
        free(t);
    else
        *obj = t;
    return rc;
}

/* Runs on the owner once the last RRef to the object is gone. */
static void trainer_free(void *obj, void *user)
{
    trainer *t = obj;
    ferry_tensor_release(t->w);
    ferry_tensor_release(t->b);
    free(t);
}

/* grad(x, y) -> [sum of squared errors, dW, db], each summed over the rows of x. The .grad
   fields are dropped after reading, so every call starts from nothing; that is safe because
   calls on one object run one at a time (grad is not marked concurrent). */
static ferry_status trainer_grad(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    trainer *t = obj;
    ferry_tensor *x = ferry_value_as_tensor(ferry_list_get(args, 0));
    ferry_tensor *y = ferry_value_as_tensor(ferry_list_get(args, 1));
    if (!x || !y)
        return ferry_set_error(FERRY_ETYPE, "Trainer.grad(x, y) needs two tensors");
    ferry_tensor *out = ferry_linear(x, t->w, t->b);
    ferry_tensor *loss = out ? ferry_mse_loss(out, y, FERRY_REDUCTION_SUM) : NULL;
    ferry_status rc = loss ? ferry_backward(loss, NULL, false) : ferry_last_status();
    ferry_tensor *dw = ferry_tensor_grad(t->w), *db = ferry_tensor_grad(t->b);
    if (rc == FERRY_OK && (!dw || !db))
        rc = ferry_set_error(FERRY_EINVAL, "Trainer.grad: backward left no gradient");
    if (rc == FERRY_OK) {
        *result = ferry_list_of(3, ferry_double(ferry_tensor_item(loss)), ferry_tensor_value(dw),
                                ferry_tensor_value(db));
        rc = *result ? FERRY_OK : ferry_last_status();
    }
    ferry_tensor_zero_grad(t->w);
    ferry_tensor_zero_grad(t->b);
    ferry_tensor_release(dw);
    ferry_tensor_release(db);
    ferry_tensor_release(loss);
    ferry_tensor_release(out);
    return rc;
}

/* set_params(w, b): copies the master's parameters into the object's own tensors (the
   arguments are the caller's tensors in-process and a message's buffers remotely: keep
   neither). No-grad, as torch's optimizers update parameters. */
static ferry_status trainer_set_params(void *obj, const ferry_value *args,
                                       const ferry_value *kwargs, ferry_value **result, void *user)
{
    trainer *t = obj;
    ferry_tensor *w = ferry_value_as_tensor(ferry_list_get(args, 0));
    ferry_tensor *b = ferry_value_as_tensor(ferry_list_get(args, 1));
    if (!w || !b)
        return ferry_set_error(FERRY_ETYPE, "Trainer.set_params(w, b) needs two tensors");
    ferry_no_grad_enter();
    ferry_status rc = ferry_tensor_copy_(t->w, w);
    if (rc == FERRY_OK)
        rc = ferry_tensor_copy_(t->b, b);
    ferry_no_grad_exit();
    *result = NULL;
    return rc;
}

static const ferry_method_def trainer_methods[] = {
    {.name = "grad", .fn = trainer_grad},
    {.name = "set_params", .fn = trainer_set_params},
};

/* Runs `method` where this run's Trainers are: on every member of the group, each with its
   share of args and the results folded by `collect`, or on the in-process object with the
   whole of args. Takes `args` (a fresh list, or NULL after a failed build). */
static ferry_value *call(run *r, const char *method, ferry_value *args, ferry_dispatch dispatch,
                         ferry_collect collect)
{
    ferry_value *v = NULL;
    if (args && r->group) {
        ferry_future *f = ferry_group_call_method(r->group, method, args, NULL, dispatch, collect,
                                                  FERRY_TIMEOUT_DEFAULT);
        v = f ? ferry_future_value(f) : NULL;
        ferry_future_release(f);
    } else if (args) {
        v = ferry_object_call(r->local, method, args, NULL);
    }
    ferry_value_release(args);
    return v;
}

/* One step: the batch's gradients, SGD on the master's copy with their mean over the batch,
   then the new parameters to every Trainer. The batch's mean loss (before the update) goes to
   *loss. */
static int step(run *r, ferry_tensor *x, ferry_tensor *y, double *loss)
{
    ferry_value *g = call(r, "grad", ferry_args(2, ferry_tensor_value(x), ferry_tensor_value(y)),
                          FERRY_DISPATCH_SLICE, FERRY_COLLECT_SUM);
    if (!g)
        return fail(r->group ? "group grad" : "in-process grad");
    ferry_no_grad_enter();
    int ok = ferry_add_scaled_(r->w, ferry_value_as_tensor(ferry_list_get(g, 1)), -LR / BATCH) ==
                 FERRY_OK &&
             ferry_add_scaled_(r->b, ferry_value_as_tensor(ferry_list_get(g, 2)), -LR / BATCH) ==
                 FERRY_OK;
    ferry_no_grad_exit();
    *loss = ferry_value_as_double(ferry_list_get(g, 0)) / BATCH;
    ferry_value_release(g);
    if (!ok)
        return fail("sgd update");
    ferry_value *done = call(r, "set_params",
                             ferry_args(2, ferry_tensor_value(r->w), ferry_tensor_value(r->b)),
                             FERRY_DISPATCH_ALL, FERRY_COLLECT_NONE);
    ferry_value_release(done);
    return done ? 0 : fail(r->group ? "group set_params" : "in-process set_params");
}

/* A batch of a fixed regression problem: x ~ N(0, 1), y = x A^T + c + 0.1 noise. */
static int make_batch(ferry_generator *gen, ferry_tensor *a, ferry_tensor *c, ferry_tensor **x,
                      ferry_tensor **y)
{
    int64_t xs[2] = {BATCH, N_IN}, ys[2] = {BATCH, N_OUT};
    *x = ferry_randn(2, xs, FERRY_FLOAT64, gen);
    ferry_tensor *noise = ferry_randn(2, ys, FERRY_FLOAT64, gen);
    ferry_tensor *clean = *x ? ferry_linear(*x, a, c) : NULL;
    *y = clean && noise ? ferry_add_alpha(clean, noise, 0.1) : NULL;
    ferry_tensor_release(noise);
    ferry_tensor_release(clean);
    return *x && *y ? 0 : fail("making a batch");
}

/* Both runs step on the same batches; the group's loss must track the in-process one. */
static int train(run *dist, run *local, ferry_generator *gen, ferry_tensor *a, ferry_tensor *c)
{
    double first = NAN, last = NAN;
    for (int s = 0; s < STEPS; s++) {
        ferry_tensor *x = NULL, *y = NULL;
        double dist_loss = NAN, local_loss = NAN;
        int rc = make_batch(gen, a, c, &x, &y);
        if (rc == 0)
            rc = step(dist, x, y, &dist_loss);
        if (rc == 0)
            rc = step(local, x, y, &local_loss);
        ferry_tensor_release(x);
        ferry_tensor_release(y);
        if (rc != 0)
            return rc;
        double rel = fabs(dist_loss - local_loss) / fmax(fabs(local_loss), 1e-300);
        if (s % 5 == 0 || s == STEPS - 1 || !(rel <= REL_TOL))
            printf("step %2d  group loss %.6f  in-process loss %.6f  (relative difference "
                   "%.1e)\n", s, dist_loss, local_loss, rel);
        if (!(rel <= REL_TOL)) {
            fprintf(stderr, "step %d: the group's loss is off the in-process loss by more than "
                            "%.0e relative\n", s, REL_TOL);
            return 1;
        }
        first = s == 0 ? dist_loss : first;
        last = dist_loss;
    }
    if (!(last < first)) {
        fprintf(stderr, "the loss did not fall: %.6f -> %.6f\n", first, last);
        return 1;
    }
    printf("loss %.2f -> %.2f in %d steps; group and in-process agree\n", first, last, STEPS);
    return 0;
}

static int run_master(void)
{
    run dist = {0}, local = {0};
    ferry_tensor *a = NULL, *c = NULL;
    ferry_generator *gen = ferry_generator_new(99); /* the data's own stream */
    ferry_group *workers = ferry_group_range(1, WORLD - 1);
    ferry_value *ctor = ferry_args(1, ferry_int(SEED));
    int rc = 0;
    if (!gen || !workers || !ctor ||
        ferry_linear_init(N_IN, N_OUT, true, FERRY_FLOAT64, gen, &a, &c) != FERRY_OK)
        rc = fail("setting up");
    /* One Trainer on each worker; a failed construction would surface on the first call. */
    if (rc == 0 && !(dist.group = ferry_group_remote_object(workers, "Trainer", ctor, NULL,
                                                            FERRY_CONSTRUCT_ALL)))
        rc = fail("group_remote_object(Trainer)");
    if (rc == 0 && !(local.local = ferry_object_new("Trainer", ctor, NULL)))
        rc = fail("object_new(Trainer)");
    if (rc == 0 && (linear_params(SEED, &dist.w, &dist.b) != FERRY_OK ||
                    linear_params(SEED, &local.w, &local.b) != FERRY_OK))
        rc = fail("making the master's parameters");
    if (rc == 0)
        rc = train(&dist, &local, gen, a, c);
    /* The object group holds the RRefs: releasing it lets each worker destroy its Trainer. */
    ferry_group_release(dist.group);
    ferry_group_release(workers);
    ferry_value_release(local.local);
    ferry_value_release(ctor);
    ferry_tensor *tensors[] = {a, c, dist.w, dist.b, local.w, local.b};
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++)
        ferry_tensor_release(tensors[i]);
    ferry_generator_free(gen);
    return rc;
}

static int run_rank(int rank, void *user)
{
    const char *ws = getenv("WORLD_SIZE");
    if (rank < 0 || rank >= WORLD || (ws && atoi(ws) != WORLD)) {
        fprintf(stderr, "remote_class runs as exactly %d ranks\n", WORLD);
        return 1;
    }
    ferry_class_def def = {.construct = trainer_new, .destroy = trainer_free,
                           .methods = trainer_methods,
                           .n_methods = sizeof trainer_methods / sizeof trainer_methods[0]};
    /* Before init, so no peer can ask for a class that is not there yet; the master needs it
       too, for its in-process Trainer. */
    if (ferry_register_class("Trainer", &def) != FERRY_OK)
        return fail("register_class");
    char name[32];
    snprintf(name, sizeof name, rank ? "worker%d" : "master", rank);
    if (ferry_init_rpc(name, rank, WORLD, NULL) != FERRY_OK)
        return fail("init_rpc");
    int rc = rank == 0 ? run_master() : 0;
    return example_shutdown(name, rc);
}

int main(void)
{
    example_job job = {.name = "remote-class", .world = WORLD, .deadline_s = DEADLINE_S,
                       .transport = "tcp"};
    return example_main(&job, run_rank, NULL);
}
