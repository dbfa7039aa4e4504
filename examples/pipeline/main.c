/* Pipeline parallelism over RPC, after torch's "Distributed Pipeline Parallelism Using RPC"
   tutorial, with a small MLP classifier in place of its ResNet (float64 throughout). The model
   is cut in two stages, each a remote object living on its own worker:

     Stage1 on "worker1": Linear 32->64, ReLU, Linear 64->64, ReLU
     Stage2 on "worker2": Linear 64->32, ReLU, Linear 32->10

   The master holds neither. Every step it cuts the batch of 64 rows into 4 micro-batches of 16
   and, for each in turn, wraps it in an RRef, asks Stage1 to run it with the result kept on
   worker1 (ferry_rref_call_remote: torch's stage1.remote().forward(x_rref)) and at once asks
   Stage2 to run that result (ferry_rref_call_async with the RRef: stage2.rpc_async()...). No
   call waits for the one before it, so while Stage2 works on micro-batch m, Stage1 is already
   on m + 1. Each stage fetches its input with ferry_rref_to_here, as the tutorial's stages call
   x_rref.to_here(): Stage1 from the master, Stage2 straight from worker1, so activations never
   pass through the master between the stages. The master waits for the 4 futures, concatenates
   the outputs, takes the cross-entropy loss against the batch's labels, runs the distributed
   backward pass (it goes back through every call and fetch recorded in the context, to both
   stages' parameters) and steps a DistributedOptimizer (SGD) over the RRefs of both stages'
   parameters. On the first step it also checks that both stages received non-zero gradients.

   torch's tutorial takes a lock in each stage's forward, because its RPC threads may run two
   calls on one module at once. ferry runs the calls on one object one at a time, in the order
   its owner received them, so the forward methods here need none: micro-batches go through
   each stage in order.

   The data is synthetic: x ~ N(0, 1) and the label of each row is the argmax of a fixed random
   linear map of it, one fresh batch per step from a seeded generator; each stage makes its
   weights from its own seed (nn.Linear's initialization). reference.py is the same in PyTorch.

   Usage: pipeline [--steps N] [--weights-out FILE] [--bench N]
     (none)             train STEPS steps, printing "step <i> loss <loss>"; exits non-zero
                        unless the last loss is below the first
     --steps N          train N steps
     --weights-out FILE write the initial weights and every step's data (stage1.0.weight, ...,
                        data.x.<i>, data.y.<i>) to a safetensors file before training, for
                        `reference.py --weights FILE`
     --bench N          3 untimed warm-up steps, then N timed ones; the last line is
                        "step_ms <milliseconds per step>"
   Without RANK in the environment it starts its three ranks itself on 127.0.0.1 (a free port, a
   fresh FERRY_AUTH_TOKEN, FERRY_TRANSPORT tcp unless set); `build/bin/ferryrun -n 3
   build/examples/pipeline` works too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/ferry.h"
#include "examples/launch.h"

#define N_IN 32
#define N_HIDDEN 64
#define N_MID 32
#define N_CLASSES 10
#define BATCH 64
#define N_MICRO 4 /* micro-batches of BATCH / N_MICRO rows */
#define STEPS 30
#define WARMUP 3
#define LR 0.5
#define STAGE1_SEED 11
#define STAGE2_SEED 12
#define DATA_SEED 1
#define WORLD 3
#define DEADLINE_S 120.0 /* plus 2 s a step; ASan builds included; stragglers are killed */

/* What the command line asks for. */
typedef struct {
    int steps;       /* steps to train (the timed ones with --bench) */
    int bench;       /* --bench N: N (then steps == N, with WARMUP steps first), else 0 */
    const char *weights_out;
} options;

/* A stage's shape: two Linear layers with a ReLU after the first, and one after the second
   when relu_last; the class's user pointer. */
typedef struct {
    const char *name;
    int64_t in, hidden, out;
    int relu_last;
} stage_shape;

static const stage_shape stage1_shape = {"Stage1", N_IN, N_HIDDEN, N_HIDDEN, 1};
static const stage_shape stage2_shape = {"Stage2", N_HIDDEN, N_MID, N_CLASSES, 0};

/* A stage object: the parameters of layers 0 and 2 of its nn.Sequential, in torch's
   parameters() order (0.weight, 0.bias, 2.weight, 2.bias). */
#define N_PARAMS 4
typedef struct {
    const stage_shape *shape;
    ferry_tensor *p[N_PARAMS];
} stage;

static int fail(const char *what)
{
    fprintf(stderr, "%s failed: %s: %s\n", what, ferry_strerror(ferry_last_status()),
            ferry_last_error());
    return 1;
}

/* ---- the stages (run on worker1 and worker2) ---- */

static void stage_free(void *obj, void *user)
{
    stage *s = obj;
    for (int i = 0; i < N_PARAMS; i++)
        ferry_tensor_release(s->p[i]);
    free(s);
}

/* Stage1(seed) / Stage2(seed): both layers from one seeded generator, so every run (and
   reference.py, through --weights-out) starts from the same weights. */
static ferry_status stage_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                              void *user)
{
    const stage_shape *sh = user;
    const ferry_value *seed = ferry_list_len(args) == 1 ? ferry_list_get(args, 0) : NULL;
    if (ferry_value_kind(seed) != FERRY_VALUE_INT)
        return ferry_set_error(FERRY_ETYPE, "%s(seed) needs one int", sh->name);
    stage *s = calloc(1, sizeof *s);
    if (!s)
        return ferry_set_error(FERRY_ENOMEM, "%s: out of memory", sh->name);
    s->shape = sh;
    ferry_generator *gen = ferry_generator_new((uint64_t)ferry_value_as_int(seed));
    ferry_status rc = gen ? ferry_linear_init(sh->in, sh->hidden, true, FERRY_FLOAT64, gen,
                                              &s->p[0], &s->p[1])
                          : ferry_last_status();
    if (rc == FERRY_OK)
        rc = ferry_linear_init(sh->hidden, sh->out, true, FERRY_FLOAT64, gen, &s->p[2], &s->p[3]);
    ferry_generator_free(gen);
    if (rc != FERRY_OK)
        stage_free(s, user);
    else
        *obj = s;
    return rc;
}

/* The input of a forward call: a tensor, or an RRef to one. An RRef held elsewhere is fetched
   (x_rref.to_here() in the tutorial); inside the caller's distributed autograd context the
   fetch is recorded, so the backward pass sends the input's gradient back to its owner. One
   this worker owns is read in place. New reference, or NULL with the error set. */
static ferry_tensor *stage_input(const ferry_value *arg, const char *who)
{
    ferry_value *v = NULL;
    if (ferry_value_kind(arg) == FERRY_VALUE_TENSOR)
        return ferry_tensor_retain(ferry_value_as_tensor(arg));
    if (ferry_value_kind(arg) != FERRY_VALUE_RREF) {
        ferry_set_error(FERRY_ETYPE, "%s.forward(x) needs a tensor or an RRef to one", who);
        return NULL;
    }
    ferry_rref *r = ferry_value_as_rref(arg);
    v = ferry_rref_is_owner(r) ? ferry_rref_local_value(r)
                               : ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
    ferry_tensor *t = ferry_tensor_retain(ferry_value_as_tensor(v));
    if (v && !t)
        ferry_set_error(FERRY_ETYPE, "%s.forward(x): the RRef holds no tensor", who);
    ferry_value_release(v);
    return t;
}

/* forward(x) -> the stage's output for x. No lock: see the top of the file. */
static ferry_status stage_forward(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result, void *user)
{
    stage *s = obj;
    ferry_tensor *x = stage_input(ferry_list_get(args, 0), s->shape->name);
    if (!x)
        return ferry_last_status();
    ferry_tensor *t = x;
    for (int layer = 0; layer < 2 && t; layer++) {
        ferry_tensor *pre = ferry_linear(t, s->p[2 * layer], s->p[2 * layer + 1]);
        ferry_tensor_release(t);
        t = pre;
        if (t && (layer == 0 || s->shape->relu_last)) {
            ferry_tensor *act = ferry_relu(t);
            ferry_tensor_release(t);
            t = act;
        }
    }
    if (!t)
        return ferry_last_status();
    *result = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return *result ? FERRY_OK : ferry_last_status();
}

/* parameter_rrefs() -> [RRef(param) for param in parameters()]: RRefs to the stage's very
   tensors, which the DistributedOptimizer updates in place on this worker. */
static ferry_status stage_parameter_rrefs(void *obj, const ferry_value *args,
                                          const ferry_value *kwargs, ferry_value **result,
                                          void *user)
{
    stage *s = obj;
    ferry_value *items[N_PARAMS] = {0};
    ferry_status rc = FERRY_OK;
    for (int i = 0; i < N_PARAMS && rc == FERRY_OK; i++) {
        ferry_value *tv = ferry_tensor_value(s->p[i]);
        ferry_rref *r = tv ? ferry_rref_new(tv) : NULL;
        items[i] = r ? ferry_rref_value(r) : NULL;
        ferry_rref_release(r);
        ferry_value_release(tv);
        if (!items[i])
            rc = ferry_last_status();
    }
    if (rc == FERRY_OK) {
        *result = ferry_list_from(items, N_PARAMS);
        rc = *result ? FERRY_OK : ferry_last_status();
    }
    for (int i = 0; i < N_PARAMS; i++)
        ferry_value_release(items[i]);
    return rc;
}

/* grad_norm(ctx) -> the L2 norm of the gradients distributed autograd context ctx holds for
   this stage's parameters; fails when one of them got none. */
static ferry_status stage_grad_norm(void *obj, const ferry_value *args,
                                    const ferry_value *kwargs, ferry_value **result, void *user)
{
    stage *s = obj;
    int64_t ctx = ferry_value_as_int(ferry_list_get(args, 0));
    double sq = 0;
    for (int i = 0; i < N_PARAMS; i++) {
        ferry_clear_error();
        ferry_tensor *g = ferry_dist_autograd_get_gradient(ctx, s->p[i]);
        if (!g)
            return ferry_last_status() != FERRY_OK
                       ? ferry_last_status()
                       : ferry_set_error(FERRY_EINVAL, "%s: parameter %d got no gradient",
                                         s->shape->name, i);
        for (int64_t k = 0; k < ferry_tensor_numel(g); k++)
            sq += ferry_tensor_item_at(g, k) * ferry_tensor_item_at(g, k);
        ferry_tensor_release(g);
    }
    *result = ferry_double(sqrt(sq));
    return *result ? FERRY_OK : ferry_last_status();
}

static const ferry_method_def stage_methods[] = {
    {.name = "forward", .fn = stage_forward},
    {.name = "parameter_rrefs", .fn = stage_parameter_rrefs},
    {.name = "grad_norm", .fn = stage_grad_norm},
};

/* ---- the master ---- */

typedef struct {
    ferry_rref *stage[2];
    ferry_rref *params[2 * N_PARAMS]; /* stage 1's, then stage 2's */
    ferry_dist_optimizer *opt;
} pipeline;

/* The tutorial's DistributedModel.forward: every micro-batch goes into the pipeline without
   waiting for the previous one; the outputs come back as futures and are joined in order. The
   master's RRefs to the micro-batches and to Stage1's results can go at once: the calls in
   flight hold their own. Returns the [BATCH, N_CLASSES] output (new reference) or NULL. */
static ferry_tensor *pipeline_forward(pipeline *p, ferry_tensor *x)
{
    const int64_t rows = BATCH / N_MICRO;
    ferry_future *outs[N_MICRO] = {0};
    int sent = 0;
    for (; sent < N_MICRO; sent++) {
        ferry_tensor *xm = ferry_tensor_narrow(x, 0, sent * rows, rows);
        ferry_value *xv = xm ? ferry_tensor_value(xm) : NULL;
        ferry_rref *x_rref = xv ? ferry_rref_new(xv) : NULL; /* RRef(x) */
        ferry_value *args = x_rref ? ferry_args(1, ferry_rref_value(x_rref)) : NULL;
        ferry_rref *h_rref = args ? ferry_rref_call_remote(p->stage[0], "forward", args, NULL,
                                                           FERRY_TIMEOUT_DEFAULT)
                                  : NULL;
        ferry_value_release(args);
        args = h_rref ? ferry_args(1, ferry_rref_value(h_rref)) : NULL;
        outs[sent] = args ? ferry_rref_call_async(p->stage[1], "forward", args, NULL,
                                                  FERRY_TIMEOUT_DEFAULT)
                          : NULL;
        ferry_value_release(args);
        ferry_rref_release(h_rref);
        ferry_rref_release(x_rref);
        ferry_value_release(xv);
        ferry_tensor_release(xm);
        if (!outs[sent])
            break;
    }
    ferry_tensor *out = NULL;
    if (sent < N_MICRO) {
        fail("sending a micro-batch");
    } else {
        ferry_value *list = ferry_future_wait_all(outs, N_MICRO, 0); /* torch.futures.wait_all */
        ferry_tensor *parts[N_MICRO];
        for (int m = 0; list && m < N_MICRO; m++)
            parts[m] = ferry_value_as_tensor(ferry_list_get(list, m));
        out = list ? ferry_cat(parts, N_MICRO, 0) : NULL;
        if (!out)
            fail("the pipeline's forward pass");
        ferry_value_release(list);
    }
    /* Outputs not waited for (after a failed send) still arrive; their futures just go. */
    for (int m = 0; m < sent; m++)
        ferry_future_release(outs[m]);
    return out;
}

/* Asks both stages for the norm of their gradients in ctx: both must be above zero, or the
   backward pass did not come back through the calls. */
static int check_gradients(pipeline *p, int64_t ctx)
{
    for (int s = 0; s < 2; s++) {
        ferry_value *args = ferry_args(1, ferry_int(ctx));
        ferry_value *norm = args ? ferry_rref_call_sync(p->stage[s], "grad_norm", args, NULL,
                                                        FERRY_TIMEOUT_DEFAULT)
                                 : NULL;
        ferry_value_release(args);
        if (!norm)
            return fail("grad_norm");
        double n = ferry_value_as_double(norm);
        ferry_value_release(norm);
        if (!(n > 0)) {
            fprintf(stderr, "stage %d's gradients are zero after the backward pass\n", s + 1);
            return 1;
        }
    }
    return 0;
}

/* One training step in its own distributed autograd context; the loss goes to *loss_out. Any
   failure ends the context, so every worker drops what it recorded. */
static int train_step(pipeline *p, ferry_tensor *x, ferry_tensor *y, int check, double *loss_out)
{
    int64_t ctx = ferry_dist_autograd_context_begin();
    if (ctx < 0)
        return fail("dist_autograd_context_begin");
    int rc = 1;
    ferry_tensor *loss = NULL, *out = pipeline_forward(p, x);
    if (out && !(loss = ferry_cross_entropy(out, y, FERRY_REDUCTION_MEAN)))
        fail("cross_entropy");
    else if (loss && ferry_dist_autograd_backward(ctx, &loss, 1, false) != FERRY_OK)
        fail("dist_autograd_backward");
    else if (loss && (!check || check_gradients(p, ctx) == 0)) {
        if (ferry_dist_optimizer_step(p->opt, ctx) != FERRY_OK)
            fail("dist_optimizer_step");
        else
            rc = 0;
    }
    if (loss)
        *loss_out = ferry_tensor_item(loss);
    ferry_tensor_release(loss);
    ferry_tensor_release(out);
    if (ferry_dist_autograd_context_end(ctx) != FERRY_OK && rc == 0)
        rc = fail("dist_autograd_context_end");
    return rc;
}

/* One batch: x ~ N(0, 1) [BATCH, N_IN], y[i] = argmax_j (x[i] . teacher[j]) as int64. */
static int make_batch(ferry_generator *gen, ferry_tensor *teacher, ferry_tensor **x,
                      ferry_tensor **y)
{
    int64_t xs[2] = {BATCH, N_IN}, ys[1] = {BATCH};
    *x = ferry_randn(2, xs, FERRY_FLOAT64, gen);
    *y = ferry_zeros(1, ys, FERRY_INT64);
    if (!*x || !*y)
        return fail("making a batch");
    const double *xd = ferry_tensor_data(*x), *td = ferry_tensor_data(teacher);
    int64_t *yd = ferry_tensor_data(*y);
    for (int i = 0; i < BATCH; i++) {
        double best = -INFINITY;
        for (int j = 0; j < N_CLASSES; j++) {
            double dot = 0;
            for (int k = 0; k < N_IN; k++)
                dot += xd[i * N_IN + k] * td[j * N_IN + k];
            if (dot > best) {
                best = dot;
                yd[i] = j;
            }
        }
    }
    return 0;
}

static int make_data(int n, ferry_tensor **xs, ferry_tensor **ys)
{
    int64_t ts[2] = {N_CLASSES, N_IN};
    ferry_generator *gen = ferry_generator_new(DATA_SEED);
    ferry_tensor *teacher = gen ? ferry_randn(2, ts, FERRY_FLOAT64, gen) : NULL;
    int rc = teacher ? 0 : fail("making the data");
    for (int i = 0; i < n && rc == 0; i++)
        rc = make_batch(gen, teacher, &xs[i], &ys[i]);
    ferry_tensor_release(teacher);
    ferry_generator_free(gen);
    return rc;
}

/* --weights-out: the initial parameters (fetched from their owners, under torch's
   state_dict names "stage1.0.weight", ...) and the data of all n steps, in one file. */
static int write_weights(pipeline *p, int n, ferry_tensor **xs, ferry_tensor **ys,
                         const char *path)
{
    static const char *const pnames[N_PARAMS] = {"0.weight", "0.bias", "2.weight", "2.bias"};
    size_t count = 2 * N_PARAMS + 2 * (size_t)n;
    char **names = calloc(count, sizeof *names);
    ferry_tensor **tensors = calloc(count, sizeof *tensors);
    ferry_value **fetched = calloc(2 * N_PARAMS, sizeof *fetched);
    int rc = names && tensors && fetched ? 0 : 1;
    if (rc)
        fprintf(stderr, "--weights-out: out of memory\n");
    for (size_t i = 0; i < 2 * N_PARAMS && rc == 0; i++) {
        fetched[i] = ferry_rref_to_here(p->params[i], FERRY_TIMEOUT_DEFAULT);
        tensors[i] = ferry_value_as_tensor(fetched[i]);
        names[i] = malloc(32);
        if (!tensors[i] || !names[i])
            rc = fail("fetching the initial weights");
        else
            snprintf(names[i], 32, "stage%zu.%s", i / N_PARAMS + 1, pnames[i % N_PARAMS]);
    }
    for (int i = 0; i < n && rc == 0; i++) {
        size_t k = 2 * N_PARAMS + 2 * (size_t)i;
        tensors[k] = xs[i];
        tensors[k + 1] = ys[i];
        names[k] = malloc(32);
        names[k + 1] = malloc(32);
        if (!names[k] || !names[k + 1]) {
            fprintf(stderr, "--weights-out: out of memory\n");
            rc = 1;
        } else {
            snprintf(names[k], 32, "data.x.%d", i);
            snprintf(names[k + 1], 32, "data.y.%d", i);
        }
    }
    if (rc == 0 && ferry_safetensors_save(path, (const char *const *)names, tensors, count) !=
                       FERRY_OK)
        rc = fail("writing --weights-out");
    for (size_t i = 0; names && i < count; i++)
        free(names[i]);
    for (size_t i = 0; fetched && i < 2 * N_PARAMS; i++)
        ferry_value_release(fetched[i]);
    free(names);
    free(tensors);
    free(fetched);
    return rc;
}

/* Builds the stages on their workers and the optimizer over their parameter RRefs. */
static int pipeline_start(pipeline *p)
{
    static const char *const workers[2] = {"worker1", "worker2"};
    static const char *const classes[2] = {"Stage1", "Stage2"};
    static const int64_t seeds[2] = {STAGE1_SEED, STAGE2_SEED};
    for (int s = 0; s < 2; s++) {
        ferry_value *args = ferry_args(1, ferry_int(seeds[s]));
        /* rpc.remote(worker, Stage, args): a failed construction shows on the first call */
        p->stage[s] = args ? ferry_remote_object(workers[s], classes[s], args, NULL,
                                                 FERRY_TIMEOUT_DEFAULT)
                           : NULL;
        ferry_value_release(args);
        if (!p->stage[s])
            return fail("remote_object");
    }
    for (int s = 0; s < 2; s++) {
        ferry_value *list = ferry_rref_call_sync(p->stage[s], "parameter_rrefs", NULL, NULL,
                                                 FERRY_TIMEOUT_DEFAULT);
        if (!list)
            return fail("parameter_rrefs");
        for (int i = 0; i < N_PARAMS; i++)
            p->params[s * N_PARAMS + i] = ferry_rref_retain(
                ferry_value_as_rref(ferry_list_get(list, (size_t)i)));
        ferry_value_release(list);
    }
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = LR;
    p->opt = ferry_dist_optimizer_new(FERRY_SGD, &o, p->params, 2 * N_PARAMS);
    return p->opt ? 0 : fail("dist_optimizer_new");
}

static void pipeline_stop(pipeline *p)
{
    ferry_dist_optimizer_free(p->opt);
    for (int i = 0; i < 2 * N_PARAMS; i++)
        ferry_rref_release(p->params[i]);
    for (int s = 0; s < 2; s++)
        ferry_rref_release(p->stage[s]);
}

static int train(pipeline *p, const options *o, int n, ferry_tensor **xs, ferry_tensor **ys)
{
    double first = NAN, last = NAN, t0 = 0;
    int rc = 0, skip = o->bench ? WARMUP : 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (i == skip)
            t0 = now_s();
        double loss = NAN;
        rc = train_step(p, xs[i], ys[i], i == 0, &loss);
        if (rc == 0) {
            printf("step %d loss %.9f\n", i, loss);
            fflush(stdout);
            first = i == 0 ? loss : first;
            last = loss;
        }
    }
    double ms = (now_s() - t0) * 1e3 / o->steps;
    if (rc == 0 && n >= 2 && !(last < first)) {
        fprintf(stderr, "the loss did not fall: %.9f -> %.9f\n", first, last);
        rc = 1;
    } else if (rc == 0) {
        printf("loss %.9f -> %.9f in %d steps, %d micro-batches of %d rows\n", first, last, n,
               N_MICRO, BATCH / N_MICRO);
    }
    if (rc == 0 && o->bench)
        printf("step_ms %.3f\n", ms);
    return rc;
}

static int run_master(const options *o)
{
    int n = o->steps + (o->bench ? WARMUP : 0);
    pipeline p = {0};
    ferry_tensor **xs = calloc((size_t)n, sizeof *xs), **ys = calloc((size_t)n, sizeof *ys);
    int rc = xs && ys ? make_data(n, xs, ys) : fail("allocating the data");
    if (rc == 0)
        rc = pipeline_start(&p);
    if (rc == 0 && o->weights_out)
        rc = write_weights(&p, n, xs, ys, o->weights_out);
    if (rc == 0)
        rc = train(&p, o, n, xs, ys);
    pipeline_stop(&p);
    for (int i = 0; i < n; i++) {
        ferry_tensor_release(xs ? xs[i] : NULL);
        ferry_tensor_release(ys ? ys[i] : NULL);
    }
    free(xs);
    free(ys);
    return rc;
}

static int run_rank(int rank, void *user)
{
    const options *o = user;
    static const char *const names[WORLD] = {"master", "worker1", "worker2"};
    const char *ws = getenv("WORLD_SIZE");
    if (rank < 0 || rank >= WORLD || (ws && atoi(ws) != WORLD)) {
        fprintf(stderr, "pipeline runs as exactly %d ranks\n", WORLD);
        return 1;
    }
    const stage_shape *shapes[2] = {&stage1_shape, &stage2_shape};
    /* Before init, so no peer can ask for a class that is not there yet. */
    for (int s = 0; s < 2; s++) {
        ferry_class_def def = {.construct = stage_new, .destroy = stage_free,
                               .methods = stage_methods,
                               .n_methods = sizeof stage_methods / sizeof stage_methods[0],
                               .user = (void *)shapes[s]};
        if (ferry_register_class(shapes[s]->name, &def) != FERRY_OK)
            return fail("register_class");
    }
    if (ferry_init_rpc(names[rank], rank, WORLD, NULL) != FERRY_OK)
        return fail("init_rpc");
    int rc = rank == 0 ? run_master(o) : 0;
    return example_shutdown(names[rank], rc);
}

static int parse_options(int argc, char **argv, options *o)
{
    *o = (options){.steps = STEPS};
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--steps") == 0) {
            if (example_parse_count("--steps", next, &o->steps) != 0)
                return -1;
        } else if (strcmp(argv[i], "--bench") == 0) {
            if (example_parse_count("--bench", next, &o->bench) != 0)
                return -1;
        } else if (strcmp(argv[i], "--weights-out") == 0 && next) {
            o->weights_out = next;
        } else {
            fprintf(stderr, "usage: %s [--steps N] [--weights-out FILE] [--bench N]\n", argv[0]);
            return -1;
        }
    }
    if (o->bench) /* --bench N trains WARMUP + N steps, whatever --steps said */
        o->steps = o->bench;
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_options(argc, argv, &o) != 0)
        return 2;
    example_job job = {.name = "pipeline", .world = WORLD,
                       .deadline_s = DEADLINE_S + 2.0 * (o.steps + WARMUP), .transport = "tcp"};
    return example_main(&job, run_rank, &o);
}
