/* The distributed optimizer (torch.distributed.optim.DistributedOptimizer) on three workers:
   worker0 trains, the parameters live on worker1 and worker2 behind RRefs (each made there by
   remote() of dop_param, so the owner's value is the very tensor its forward uses). Every kind
   gives, step after step, what the local optimizer gives for the same computation done in one
   process; a parameter that gets no gradient keeps its values and its state; failures on an
   owner come back naming it; two trainers stepping one owner lose no update; freeing the
   optimizer frees the owners' optimizers. On tcp and shm. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ferry/autograd.h"
#include "ferry/dist_autograd.h"
#include "ferry/object.h"
#include "ferry/ops.h"
#include "ferry/optim.h"
#include "ferry/rref.h"
#include "dist_util.h"

#define F64 FERRY_FLOAT64
#define STEPS 5

/* ---- functions the owners run (the trainer runs the same ones for its reference) ---- */

/* A float64 leaf that requires grad with Normal(0, 1) values from `seed`; on_grid rounds them
   to multiples of 1/64, so sums of a few multiples of 1/8 stay exact. */
static ferry_tensor *make_param(uint64_t seed, int64_t rows, int64_t cols, bool on_grid)
{
    ferry_generator *g = ferry_generator_new(seed);
    ferry_tensor *t = g ? ferry_randn(SHAPE(rows, cols), F64, g) : NULL;
    ferry_generator_free(g);
    if (t && on_grid) {
        double *d = ferry_tensor_data(t);
        for (int64_t i = 0; i < ferry_tensor_numel(t); i++)
            d[i] = round(d[i] * 64) / 64;
    }
    if (t && ferry_tensor_set_requires_grad(t, true) != FERRY_OK) {
        ferry_tensor_release(t);
        return NULL;
    }
    return t;
}

/* param(seed, rows, cols, on_grid) */
static ferry_status param_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    int64_t v[3];
    for (size_t i = 0; i < 3; i++)
        v[i] = ferry_value_as_int(ferry_list_get(args, i));
    bool on_grid = ferry_value_as_bool(ferry_list_get(args, 3));
    return da_put_tensor(result, make_param((uint64_t)v[0], v[1], v[2], on_grid));
}

/* mul(p, x) = p * x, the owner's value first as the proxies pass it. */
static ferry_status mul_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    return da_put_tensor(result, ferry_mul(da_arg(args, 0), da_arg(args, 1)));
}

/* forward(p, x) = tanh(p * x) */
static ferry_status forward_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    ferry_tensor *m = ferry_mul(da_arg(args, 0), da_arg(args, 1));
    ferry_tensor *t = m ? ferry_tanh(m) : NULL;
    ferry_tensor_release(m);
    return da_put_tensor(result, t);
}

/* text() -> a string, for an RRef whose value is no tensor. */
static ferry_status text_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    *result = ferry_string("not a tensor");
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

/* counts(alive) -> [objects alive, destroyed] here, once `alive` objects are alive (polled for
   2 s at most: the library counts a death just after the destructor returns, and nothing
   signals it). */
static ferry_status counts_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    int64_t want = ferry_value_as_int(ferry_list_get(args, 0));
    double until = rpc_test_now_s() + 2.0;
    ferry_object_counts n;
    for (;;) {
        ferry_object_debug_counts(&n);
        if (n.alive == want || rpc_test_now_s() > until)
            break;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    *result = ferry_list_of(2, ferry_int(n.alive), ferry_int(n.destroyed));
    return *result ? FERRY_OK : ferry_last_status();
}

static int train_sgd(ferry_rref *p, int64_t steps, double lr, ferry_tensor *c);

/* train(rref, steps, lr, c): this worker trains the parameter too (test 4). */
static ferry_status train_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry_rref *p = ferry_value_as_rref(ferry_list_get(args, 0));
    int64_t steps = ferry_value_as_int(ferry_list_get(args, 1));
    double lr = ferry_value_as_double(ferry_list_get(args, 2));
    if (!p || train_sgd(p, steps, lr, da_arg(args, 3)) != 0)
        return ferry_set_error(FERRY_EINVAL, "the second trainer failed (see its stderr)");
    *result = ferry_int(steps);
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

typedef struct {
    const char *name;
    ferry_fn fn;
} named_fn;

static const named_fn FNS[] = {
    {"dop_param", param_fn}, {"dop_mul", mul_fn},       {"dop_forward", forward_fn},
    {"dop_text", text_fn},   {"dop_counts", counts_fn}, {"dop_train", train_fn},
};

static void register_all(void)
{
    for (size_t i = 0; i < sizeof FNS / sizeof FNS[0]; i++)
        cr_assert(ferry_register_function(FNS[i].name, FNS[i].fn, NULL) == FERRY_OK);
}

#define DOP_BOTH(name, body, secs)                                                        \
    Test(dist_optim_tcp, name, .timeout = secs)                                           \
    {                                                                                     \
        register_all();                                                                   \
        rpc_case_run("tcp", 3, body, NULL, secs - 5);                                     \
    }                                                                                     \
    Test(dist_optim_shm, name, .timeout = secs)                                           \
    {                                                                                     \
        register_all();                                                                   \
        rpc_case_run("shm", 3, body, NULL, secs - 5);                                     \
    }

/* ---- the trainer's helpers ---- */

/* A parameter made on `owner` by dop_param. */
static ferry_rref *remote_param(const char *owner, uint64_t seed, int64_t rows, int64_t cols,
                                bool on_grid)
{
    ferry_value *a = ferry_args(4, ferry_int((int64_t)seed), ferry_int(rows), ferry_int(cols),
                                ferry_bool(on_grid));
    ferry_rref *r = a ? ferry_remote(owner, "dop_param", a, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(a);
    return r;
}

/* The owner's current values (a copy), or NULL. */
static ferry_tensor *fetch(ferry_rref *r)
{
    ferry_value *v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
    ferry_tensor *t = ferry_tensor_retain(ferry_value_as_tensor(v));
    ferry_value_release(v);
    return t;
}

/* fn(p, x) run by p's owner through the rpc_sync proxy. */
static ferry_tensor *remote_call(ferry_rref *p, const char *fn, ferry_tensor *x)
{
    ferry_value *a = ferry_args(1, ferry_tensor_value(x));
    ferry_value *v = a ? ferry_rref_rpc_sync(p, fn, a, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(a);
    ferry_tensor *t = ferry_tensor_retain(ferry_value_as_tensor(v));
    ferry_value_release(v);
    return t;
}

/* fn(p, x) run here, for the reference. */
static ferry_tensor *local_call(ferry_fn fn, ferry_tensor *p, ferry_tensor *x)
{
    ferry_value *a = ferry_args(2, ferry_tensor_value(p), ferry_tensor_value(x));
    ferry_value *kw = ferry_dict_new(), *v = NULL;
    if (a && kw && fn(a, kw, &v, NULL) != FERRY_OK)
        v = NULL;
    ferry_value_release(a);
    ferry_value_release(kw);
    ferry_tensor *t = ferry_tensor_retain(ferry_value_as_tensor(v));
    ferry_value_release(v);
    return t;
}

static ferry_tensor *input(uint64_t seed)
{
    ferry_generator *g = ferry_generator_new(seed);
    ferry_tensor *t = g ? ferry_randn(SHAPE(2, 3), F64, g) : NULL;
    ferry_generator_free(g);
    return t;
}

/* sum(h1 * h2) + sum(h1 * h1) */
static ferry_tensor *loss_of(ferry_tensor *h1, ferry_tensor *h2)
{
    ferry_tensor *a = ferry_mul(h1, h2), *b = ferry_mul(h1, h1);
    ferry_tensor *sa = a ? ferry_sum(a) : NULL, *sb = b ? ferry_sum(b) : NULL;
    ferry_tensor *loss = sa && sb ? ferry_add(sa, sb) : NULL;
    ferry_tensor *tmp[] = {a, b, sa, sb};
    da_release_all(tmp, 4);
    return loss;
}

/* loss + sum(h) */
static ferry_tensor *plus_sum(ferry_tensor *loss, ferry_tensor *h)
{
    ferry_tensor *s = ferry_sum(h);
    ferry_tensor *out = s ? ferry_add(loss, s) : NULL;
    ferry_tensor_release(s);
    return out;
}

/* Equal to 1e-12 relative, same dtype; says what differs if not. */
static bool values_match(const char *what, int step, ferry_tensor *got, ferry_tensor *want)
{
    bool ok = got && want && ferry_tensor_dtype(got) == ferry_tensor_dtype(want) &&
              ferry_allclose(got, want, 1e-12, 0);
    if (!ok) {
        char a[512], b[512];
        ferry_tensor_format(got, a, sizeof a);
        ferry_tensor_format(want, b, sizeof b);
        fprintf(stderr, "%s, after step %d: the owner holds %s, the local optimizer gives %s\n",
                what, step, a, b);
    }
    return ok;
}

/* Whether the last status is `code` and its message holds every one of the n texts (prints
   what it got if not). */
static bool error_is(ferry_status code, size_t n, const char *const *texts)
{
    bool ok = ferry_last_status() == code;
    for (size_t i = 0; ok && i < n; i++)
        ok = strstr(ferry_last_error(), texts[i]) != NULL;
    if (!ok) {
        fprintf(stderr, "expected %s with", ferry_strerror(code));
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " \"%s\"", texts[i]);
        fprintf(stderr, ", got %s: \"%s\"\n", ferry_strerror(ferry_last_status()),
                ferry_last_error());
    }
    return ok;
}
/* A failure on an owner: FERRY_EREMOTE with all the texts. */
#define REMOTE_ERROR_IS(...)                                                              \
    error_is(FERRY_EREMOTE, sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *), \
             (const char *[]){__VA_ARGS__})

/* [alive, destroyed] objects on `worker`, once `alive` are (see counts_fn). */
static int owner_counts(const char *worker, int64_t alive, int64_t *got_alive,
                        int64_t *got_destroyed)
{
    ferry_value *a = ferry_args(1, ferry_int(alive));
    ferry_value *v = a ? ferry_rpc_sync(worker, "dop_counts", a, NULL, FERRY_TIMEOUT_DEFAULT)
                       : NULL;
    ferry_value_release(a);
    RANK_CHECK(v && ferry_list_len(v) == 2);
    *got_alive = ferry_value_as_int(ferry_list_get(v, 0));
    *got_destroyed = ferry_value_as_int(ferry_list_get(v, 1));
    ferry_value_release(v);
    return 0;
}

/* ---- 1. every kind equals the local optimizer ---- */

typedef struct {
    const char *name;
    ferry_optim_kind kind;
} optim_case;

static const optim_case CASES[] = {
    {"SGD momentum nesterov", FERRY_SGD},
    {"SGD weight_decay", FERRY_SGD},
    {"Adam amsgrad", FERRY_ADAM},
    {"AdamW", FERRY_ADAMW},
    {"Adagrad", FERRY_ADAGRAD},
    {"RMSprop centered momentum", FERRY_RMSPROP},
    {"Adadelta", FERRY_ADADELTA},
    {"Adamax", FERRY_ADAMAX},
    {"Rprop", FERRY_RPROP},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

/* Case i's options: torch's defaults with what the case's name says, and a few more set away
   from their defaults. */
static void case_options(size_t i, ferry_optim_options *o)
{
    ferry_optim_options_init(o, CASES[i].kind);
    switch (i) {
    case 0:
        o->lr = 0.1;
        o->momentum = 0.9;
        o->nesterov = true;
        break;
    case 1:
        o->lr = 0.05;
        o->momentum = 0.5;
        o->weight_decay = 0.1;
        break;
    case 2:
        o->lr = 0.05;
        o->amsgrad = true;
        o->weight_decay = 0.01;
        break;
    case 3:
        o->lr = 0.05;
        o->betas[0] = 0.8;
        break;
    case 4:
        o->lr = 0.1;
        o->lr_decay = 0.01;
        o->initial_accumulator_value = 0.1;
        break;
    case 5:
        o->lr = 0.01;
        o->centered = true;
        o->momentum = 0.5;
        break;
    case 6:
        o->rho = 0.8; /* lr 1.0, torch's default */
        break;
    case 7:
        o->lr = 0.02;
        break;
    default:
        o->lr = 0.02;
        o->etas[0] = 0.4;
        break;
    }
}

/* The reference: one step of the same computation on the local copies. */
static int local_step(ferry_optimizer *opt, ferry_tensor *l1, ferry_tensor *l2, ferry_tensor *x)
{
    ferry_tensor *h1 = local_call(forward_fn, l1, x), *h2 = local_call(forward_fn, l2, x);
    ferry_tensor *loss = h1 && h2 ? loss_of(h1, h2) : NULL;
    RANK_CHECK(loss && ferry_backward(loss, NULL, false) == FERRY_OK);
    ferry_tensor *g = ferry_tensor_grad(l2);
    RANK_CHECK(g != NULL);
    ferry_tensor_release(g);
    RANK_CHECK(ferry_optimizer_step(opt) == FERRY_OK);
    RANK_CHECK(ferry_optimizer_zero_grad(opt) == FERRY_OK);
    ferry_tensor *tmp[] = {h1, h2, loss};
    da_release_all(tmp, 3);
    return 0;
}

/* The distributed step: forward through the proxies in a fresh context, backward, step. */
static int dist_step(ferry_dist_optimizer *opt, ferry_rref *p1, ferry_rref *p2, ferry_tensor *x)
{
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0);
    ferry_tensor *h1 = remote_call(p1, "dop_forward", x), *h2 = remote_call(p2, "dop_forward", x);
    RANK_CHECK(h1 && h2 && ferry_tensor_requires_grad(h1) && ferry_tensor_requires_grad(h2));
    ferry_tensor *loss = loss_of(h1, h2);
    RANK_CHECK(loss && ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    RANK_CHECK(ferry_dist_optimizer_step(opt, ctx) == FERRY_OK);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor *tmp[] = {h1, h2, loss};
    da_release_all(tmp, 3);
    return 0;
}

static int check_case(size_t i)
{
    const char *what = CASES[i].name;
    ferry_optim_kind kind = CASES[i].kind;
    ferry_optim_options o;
    case_options(i, &o);
    ferry_rref *p[2] = {remote_param("worker1", 100 + i, 2, 3, false),
                        remote_param("worker2", 200 + i, 2, 3, false)};
    RANK_CHECK(p[0] && p[1]);
    /* The owners hold dop_param's values; the reference starts from copies of them. */
    ferry_tensor *l[2];
    for (int k = 0; k < 2; k++) {
        ferry_tensor *got = fetch(p[k]), *want = make_param(k ? 200 + i : 100 + i, 2, 3, false);
        RANK_CHECK(got && want && ferry_tensor_equal(got, want));
        RANK_CHECK(l[k] = da_leaf_copy(got));
        ferry_tensor_release(got);
        ferry_tensor_release(want);
    }
    ferry_dist_optimizer *dopt = ferry_dist_optimizer_new(kind, &o, p, 2);
    ferry_optimizer *lopt = ferry_optimizer_new(kind, &o, l, 2);
    RANK_CHECK(dopt && lopt);
    for (int step = 1; step <= STEPS; step++) {
        ferry_tensor *x = input(1000 + step);
        ferry_tensor *before[2] = {fetch(p[0]), fetch(p[1])};
        RANK_CHECK(x && before[0] && before[1]);
        RANK_CHECK(local_step(lopt, l[0], l[1], x) == 0);
        RANK_CHECK(dist_step(dopt, p[0], p[1], x) == 0);
        for (int k = 0; k < 2; k++) {
            ferry_tensor *got = fetch(p[k]);
            RANK_CHECK(values_match(what, step, got, l[k]));
            RANK_CHECK(!ferry_tensor_equal(got, before[k])); /* the step really moved it */
            ferry_tensor_release(got);
        }
        da_release_all(before, 2);
        ferry_tensor_release(x);
    }
    ferry_dist_optimizer_free(dopt);
    ferry_optimizer_free(lopt);
    da_release_all(l, 2);
    ferry_rref_release(p[0]);
    ferry_rref_release(p[1]);
    return 0;
}

static int body_every_kind(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    for (size_t i = 0; i < N_CASES; i++)
        if (check_case(i) != 0) {
            fprintf(stderr, "case %s failed\n", CASES[i].name);
            return 1;
        }
    return 0;
}

/* ---- 2. a parameter without gradients is untouched ---- */

/* Adam over p1 (worker1), p2 and p3 (both worker2); the loss uses p3 only in the last step.
   Until then p3 keeps its exact values; in the last step it moves as a fresh Adam's first step
   moves it, so its state was still empty (a state with steps counted would bias-correct
   differently). */
static int body_no_grad(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    const int unused_steps = 8;
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_ADAM);
    o.lr = 0.05;
    ferry_rref *p[3] = {remote_param("worker1", 31, 2, 3, false),
                        remote_param("worker2", 32, 2, 3, false),
                        remote_param("worker2", 33, 2, 3, false)};
    ferry_tensor *l[3];
    for (int k = 0; k < 3; k++) {
        ferry_tensor *got = fetch(p[k]);
        RANK_CHECK(got && (l[k] = da_leaf_copy(got)));
        ferry_tensor_release(got);
    }
    ferry_dist_optimizer *dopt = ferry_dist_optimizer_new(FERRY_ADAM, &o, p, 3);
    ferry_optimizer *lopt = ferry_optimizer_new(FERRY_ADAM, &o, l, 2);
    ferry_optimizer *fresh = ferry_optimizer_new(FERRY_ADAM, &o, &l[2], 1);
    RANK_CHECK(dopt && lopt && fresh);
    for (int step = 1; step <= unused_steps; step++) {
        ferry_tensor *x = input(300 + step);
        RANK_CHECK(local_step(lopt, l[0], l[1], x) == 0);
        RANK_CHECK(dist_step(dopt, p[0], p[1], x) == 0);
        RANK_CHECK(ferry_tensor_grad(l[2]) == NULL);
        for (int k = 0; k < 3; k++) {
            ferry_tensor *got = fetch(p[k]);
            RANK_CHECK(values_match("Adam, p3 unused", step, got, l[k]));
            if (k == 2)
                RANK_CHECK(ferry_tensor_equal(got, l[2]));
            ferry_tensor_release(got);
        }
        ferry_tensor_release(x);
    }
    /* The last step: loss(h1, h2) + sum(forward(p3, x)). */
    ferry_tensor *x = input(399);
    ferry_tensor *h[3], *loss, *total;
    for (int k = 0; k < 3; k++)
        RANK_CHECK(h[k] = local_call(forward_fn, l[k], x));
    RANK_CHECK((loss = loss_of(h[0], h[1])) && (total = plus_sum(loss, h[2])));
    RANK_CHECK(ferry_backward(total, NULL, false) == FERRY_OK);
    RANK_CHECK(ferry_optimizer_step(lopt) == FERRY_OK && ferry_optimizer_step(fresh) == FERRY_OK);
    ferry_tensor *tmp[] = {h[0], h[1], h[2], loss, total};
    da_release_all(tmp, 5);

    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0);
    for (int k = 0; k < 3; k++)
        RANK_CHECK(h[k] = remote_call(p[k], "dop_forward", x));
    RANK_CHECK((loss = loss_of(h[0], h[1])) && (total = plus_sum(loss, h[2])));
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &total, 1, false) == FERRY_OK);
    RANK_CHECK(ferry_dist_optimizer_step(dopt, ctx) == FERRY_OK);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor *tmp2[] = {h[0], h[1], h[2], loss, total};
    da_release_all(tmp2, 5);
    for (int k = 0; k < 3; k++) {
        ferry_tensor *got = fetch(p[k]);
        RANK_CHECK(values_match(k == 2 ? "Adam, p3 first used" : "Adam", unused_steps + 1, got,
                                l[k]));
        ferry_tensor_release(got);
    }
    ferry_tensor_release(x);
    ferry_dist_optimizer_free(dopt);
    ferry_optimizer_free(lopt);
    ferry_optimizer_free(fresh);
    da_release_all(l, 3);
    for (int k = 0; k < 3; k++)
        ferry_rref_release(p[k]);
    return 0;
}

/* ---- 3. failures name their worker ---- */

/* Options out of range, SGD without lr, an RRef that holds no tensor: no optimizer, and the
   error names the owner and the cause. The owner that did make its optimizer frees it again. */
static int check_creation_errors(ferry_rref *p1, ferry_rref *p2)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_ADAM);
    o.lr = -1;
    ferry_clear_error();
    RANK_CHECK(ferry_dist_optimizer_new(FERRY_ADAM, &o, &p1, 1) == NULL);
    RANK_CHECK(
        REMOTE_ERROR_IS("Error creating optimizer", "worker1", "Invalid learning rate: -1.0"));
    o.lr = 1e-3;
    o.betas[1] = 1.0;
    RANK_CHECK(ferry_dist_optimizer_new(FERRY_ADAM, &o, &p2, 1) == NULL);
    RANK_CHECK(REMOTE_ERROR_IS("Error creating optimizer", "worker2",
                         "Invalid beta parameter at index 1: 1.0"));
    RANK_CHECK(ferry_dist_optimizer_new(FERRY_SGD, NULL, &p2, 1) == NULL);
    RANK_CHECK(REMOTE_ERROR_IS("Error creating optimizer", "worker2",
                         "required optimization parameter lr"));

    int64_t alive0, dead0, alive, dead;
    RANK_CHECK(owner_counts("worker1", 0, &alive0, &dead0) == 0);
    ferry_rref *text = ferry_remote("worker2", "dop_text", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(text);
    ferry_rref *mixed[] = {p1, text};
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = 0.1;
    RANK_CHECK(ferry_dist_optimizer_new(FERRY_SGD, &o, mixed, 2) == NULL);
    RANK_CHECK(REMOTE_ERROR_IS("Error creating optimizer", "worker2", "holds no tensor"));
    RANK_CHECK(ferry_debug_rref_wait_idle(10) == FERRY_OK);
    RANK_CHECK(owner_counts("worker1", alive0, &alive, &dead) == 0);
    RANK_CHECK(alive == alive0 && dead == dead0 + 1);
    ferry_rref_release(text);
    return 0;
}

/* NULL and empty lists, a NULL RRef, an unknown kind, a NULL optimizer. */
static int check_argument_errors(ferry_rref *p1)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = 0.1;
    ferry_rref *with_null[] = {p1, NULL};
    RANK_CHECK(ferry_dist_optimizer_new(FERRY_SGD, &o, NULL, 0) == NULL);
    RANK_CHECK(da_error_is(ferry_last_status(), "optimizer got an empty parameter list"));
    RANK_CHECK(ferry_dist_optimizer_new(FERRY_SGD, &o, NULL, 2) == NULL);
    RANK_CHECK(da_error_is(ferry_last_status(), "optimizer got an empty parameter list"));
    RANK_CHECK(ferry_dist_optimizer_new(FERRY_SGD, &o, &p1, 0) == NULL);
    RANK_CHECK(da_error_is(ferry_last_status(), "optimizer got an empty parameter list"));
    RANK_CHECK(ferry_dist_optimizer_new(FERRY_SGD, &o, with_null, 2) == NULL);
    RANK_CHECK(da_error_is(ferry_last_status(), "NULL"));
    RANK_CHECK(ferry_dist_optimizer_new((ferry_optim_kind)FERRY_OPTIM_KIND_COUNT, &o, &p1, 1) ==
               NULL);
    RANK_CHECK(da_error_is(ferry_last_status(), "unknown optimizer kind"));
    RANK_CHECK(da_error_is(ferry_dist_optimizer_step(NULL, 1), "NULL"));
    ferry_dist_optimizer_free(NULL);
    return 0;
}

/* A step with a context the owners never saw fails naming the first owner and leaves the
   parameters alone; the optimizer still steps afterwards. */
static int check_step_errors(ferry_rref *p1, ferry_rref *p2)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = 0.1;
    ferry_rref *p[] = {p1, p2};
    ferry_dist_optimizer *opt = ferry_dist_optimizer_new(FERRY_SGD, &o, p, 2);
    RANK_CHECK(opt);
    ferry_tensor *before[2] = {fetch(p1), fetch(p2)};
    RANK_CHECK(before[0] && before[1]);
    /* A context of this worker that made no call: while current, the step's own calls would
       carry it to the owners, so it is ended first. */
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0 && ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_status rc = ferry_dist_optimizer_step(opt, ctx);
    RANK_CHECK(rc == FERRY_EREMOTE && REMOTE_ERROR_IS("Error running optimizer", "worker1",
                                                      "Could not find autograd context"));
    /* An id no worker ever made (rank 7 of a world of 3). */
    rc = ferry_dist_optimizer_step(opt, ((int64_t)7 << 48) | 12345);
    RANK_CHECK(rc == FERRY_EREMOTE && REMOTE_ERROR_IS("Error running optimizer", "worker1",
                                                      "Could not find autograd context"));
    for (int k = 0; k < 2; k++) {
        ferry_tensor *got = fetch(p[k]);
        RANK_CHECK(got && ferry_tensor_equal(got, before[k]));
        ferry_tensor_release(got);
    }
    /* Still usable: a good step moves both by -lr * grad. */
    ferry_tensor *x = input(77);
    RANK_CHECK(x && dist_step(opt, p1, p2, x) == 0);
    for (int k = 0; k < 2; k++) {
        ferry_tensor *got = fetch(p[k]);
        RANK_CHECK(got && !ferry_tensor_equal(got, before[k]));
        ferry_tensor_release(got);
    }
    ferry_tensor_release(x);
    da_release_all(before, 2);
    ferry_dist_optimizer_free(opt);
    return 0;
}

static int body_errors(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_rref *p1 = remote_param("worker1", 41, 2, 3, false);
    ferry_rref *p2 = remote_param("worker2", 42, 2, 3, false);
    RANK_CHECK(p1 && p2);
    RANK_CHECK(check_creation_errors(p1, p2) == 0);
    RANK_CHECK(check_argument_errors(p1) == 0);
    RANK_CHECK(check_step_errors(p1, p2) == 0);
    ferry_rref_release(p1);
    ferry_rref_release(p2);
    return 0;
}

/* ---- 4. two trainers on one owner ---- */

#define TRAIN_STEPS 20
#define TRAIN_LR 0.5
#define TRAIN_ROWS 256
#define TRAIN_COLS 1024

/* `steps` SGD steps of loss = sum(p * c) through an optimizer of this worker's own: each
   subtracts exactly lr * c. */
static int train_sgd(ferry_rref *p, int64_t steps, double lr, ferry_tensor *c)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = lr;
    ferry_dist_optimizer *opt = ferry_dist_optimizer_new(FERRY_SGD, &o, &p, 1);
    RANK_CHECK(opt && c);
    for (int64_t i = 0; i < steps; i++) {
        int64_t ctx = ferry_dist_autograd_context_begin();
        RANK_CHECK(ctx >= 0);
        ferry_tensor *h = remote_call(p, "dop_mul", c);
        ferry_tensor *loss = h ? ferry_sum(h) : NULL;
        RANK_CHECK(loss && ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
        RANK_CHECK(ferry_dist_optimizer_step(opt, ctx) == FERRY_OK);
        RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
        ferry_tensor_release(h);
        ferry_tensor_release(loss);
    }
    ferry_dist_optimizer_free(opt);
    return 0;
}

/* c = 0.25, 0.5, 0.75, 1, 0.25, ...: with p on the 1/64 grid every partial sum is exact. */
static ferry_tensor *train_c(void)
{
    ferry_tensor *c = ferry_zeros(SHAPE(TRAIN_ROWS, TRAIN_COLS), F64);
    double *d = ferry_tensor_data(c);
    for (int64_t i = 0; c && i < ferry_tensor_numel(c); i++)
        d[i] = 0.25 * (double)(i % 4 + 1);
    return c;
}

/* worker0 hands the parameter RRef (owned by worker1) to worker2, which trains it with its own
   optimizer while worker0 trains it with another: 2 * K steps land, none lost or torn. The
   parameter is large so that the two trainers' steps on worker1 overlap in time; steps that are
   not taking turns then lose an update on most runs (not on every run: two steps must write one
   element at the same moment). */
static int body_two_trainers(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_rref *p = remote_param("worker1", 51, TRAIN_ROWS, TRAIN_COLS, true);
    ferry_tensor *k = train_c(), *init = p ? fetch(p) : NULL;
    RANK_CHECK(k && init);
    ferry_tensor *want = make_param(51, TRAIN_ROWS, TRAIN_COLS, true);
    RANK_CHECK(want && ferry_tensor_equal(init, want));
    ferry_value *a = ferry_args(4, ferry_rref_value(p), ferry_int(TRAIN_STEPS),
                                ferry_double(TRAIN_LR), ferry_tensor_value(k));
    ferry_future *other = a ? ferry_rpc_async("worker2", "dop_train", a, NULL, 120) : NULL;
    ferry_value_release(a);
    RANK_CHECK(other);
    RANK_CHECK(train_sgd(p, TRAIN_STEPS, TRAIN_LR, k) == 0);
    ferry_value *done = ferry_future_value(other);
    RANK_CHECK(done && ferry_value_as_int(done) == TRAIN_STEPS);
    ferry_value_release(done);
    ferry_future_release(other);

    /* want = init - 2 K lr c, computed at once (exact on the grid). */
    double *w = ferry_tensor_data(want);
    const double *kd = ferry_tensor_data(k);
    for (int64_t i = 0; i < ferry_tensor_numel(want); i++)
        w[i] -= 2 * TRAIN_STEPS * TRAIN_LR * kd[i];
    ferry_tensor *got = fetch(p);
    RANK_CHECK(got);
    int64_t wrong = 0, first = -1;
    const double *g = ferry_tensor_data(got);
    for (int64_t i = 0; i < ferry_tensor_numel(got); i++)
        if (g[i] != w[i] && wrong++ == 0)
            first = i;
    if (wrong)
        fprintf(stderr, "two trainers: %lld of %lld elements lost updates; element %lld is %.17g, "
                        "want %.17g (initial %.17g, step %g)\n",
                (long long)wrong, (long long)ferry_tensor_numel(got), (long long)first, g[first],
                w[first], ferry_tensor_item_at(init, first), TRAIN_LR * kd[first]);
    ferry_tensor *tmp[] = {k, init, want, got};
    da_release_all(tmp, 4);
    ferry_rref_release(p);
    RANK_CHECK(wrong == 0);
    return 0;
}

/* ---- 5. freeing releases the remote optimizers ---- */

/* One remote optimizer per owner (not per parameter) while the optimizer lives, and none once
   it is freed; a second optimizer over the same parameters lives on until freed itself. */
static int body_free(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_rref *p[] = {remote_param("worker1", 61, 2, 3, false),
                       remote_param("worker2", 62, 2, 3, false),
                       remote_param("worker1", 63, 2, 3, false)};
    RANK_CHECK(p[0] && p[1] && p[2]);
    const char *owners[] = {"worker1", "worker2"};
    int64_t alive0[2], dead0[2], alive, dead;
    for (int w = 0; w < 2; w++)
        RANK_CHECK(owner_counts(owners[w], 0, &alive0[w], &dead0[w]) == 0);
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_ADAGRAD);
    ferry_dist_optimizer *one = ferry_dist_optimizer_new(FERRY_ADAGRAD, &o, p, 3);
    ferry_dist_optimizer *two = ferry_dist_optimizer_new(FERRY_ADAGRAD, &o, p, 2);
    RANK_CHECK(one && two);
    for (int w = 0; w < 2; w++) {
        RANK_CHECK(owner_counts(owners[w], alive0[w] + 2, &alive, &dead) == 0);
        RANK_CHECK(alive == alive0[w] + 2 && dead == dead0[w]);
    }
    ferry_tensor *x = input(88);
    RANK_CHECK(x && dist_step(one, p[0], p[1], x) == 0);
    ferry_dist_optimizer_free(one);
    RANK_CHECK(ferry_debug_rref_wait_idle(10) == FERRY_OK);
    for (int w = 0; w < 2; w++) {
        RANK_CHECK(owner_counts(owners[w], alive0[w] + 1, &alive, &dead) == 0);
        RANK_CHECK(alive == alive0[w] + 1 && dead == dead0[w] + 1);
    }
    RANK_CHECK(dist_step(two, p[0], p[1], x) == 0);
    ferry_dist_optimizer_free(two);
    RANK_CHECK(ferry_debug_rref_wait_idle(10) == FERRY_OK);
    for (int w = 0; w < 2; w++) {
        RANK_CHECK(owner_counts(owners[w], alive0[w], &alive, &dead) == 0);
        RANK_CHECK(alive == alive0[w] && dead == dead0[w] + 2);
    }
    /* The parameters outlive their optimizers. */
    for (int k = 0; k < 3; k++) {
        ferry_tensor *got = fetch(p[k]);
        RANK_CHECK(got && ferry_tensor_numel(got) == 6);
        ferry_tensor_release(got);
        ferry_rref_release(p[k]);
    }
    ferry_tensor_release(x);
    return 0;
}

DOP_BOTH(params_match_local_optimizer_when_each_kind_steps_in_fresh_contexts, body_every_kind, 60)
DOP_BOTH(param_keeps_values_and_empty_state_when_the_loss_never_uses_it, body_no_grad, 40)
DOP_BOTH(errors_name_the_owner_when_options_values_or_contexts_are_bad, body_errors, 40)
DOP_BOTH(no_update_is_lost_when_two_trainers_step_one_owner_concurrently, body_two_trainers, 60)
DOP_BOTH(owners_free_their_optimizers_when_the_optimizer_is_freed, body_free, 40)
