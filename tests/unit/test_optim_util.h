/* Helpers for the optimizer tests: the cases torch ran (tests/data/optim/optim_cases.h) and
   their trajectories (tests/data/optim/trajectories.safetensors, both written by
   tests/data/optim/make_trajectories.py), the loss those runs differentiate, computed with
   ferry's autograd, and a replay that steps a ferry optimizer and compares every step. */
#ifndef FERRY_TEST_OPTIM_UTIL_H
#define FERRY_TEST_OPTIM_UTIL_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/test_util.h"
#include "ferry/optim.h"

#define OPTIM_DATA "tests/data/optim/trajectories.safetensors"

typedef struct {
    const char *key;
    double v[2];
} optim_set;

typedef struct {
    const char *name;
    ferry_optim_kind kind;
    int is_f32;
    int uses_b;  /* 0: the loss leaves b out, so b never gets a gradient */
    double b_lr; /* >= 0: b sits in a second group with this lr */
    int n_set;
    optim_set set[6];
} optim_case;

#include "data/optim/optim_cases.h"

#define OPTIM_CASE_COUNT (sizeof optim_cases / sizeof optim_cases[0])

/* Sets the option called `key` (torch's kwarg name) in o. */
static inline void optim_set_option(ferry_optim_options *o, const char *key, const double v[2])
{
    struct { const char *key; double *d; bool *b; int n; } fields[] = {
        {"lr", &o->lr, NULL, 1}, {"momentum", &o->momentum, NULL, 1},
        {"dampening", &o->dampening, NULL, 1}, {"weight_decay", &o->weight_decay, NULL, 1},
        {"nesterov", NULL, &o->nesterov, 1}, {"maximize", NULL, &o->maximize, 1},
        {"betas", o->betas, NULL, 2}, {"eps", &o->eps, NULL, 1},
        {"amsgrad", NULL, &o->amsgrad, 1}, {"lr_decay", &o->lr_decay, NULL, 1},
        {"initial_accumulator_value", &o->initial_accumulator_value, NULL, 1},
        {"alpha", &o->alpha, NULL, 1}, {"centered", NULL, &o->centered, 1},
        {"rho", &o->rho, NULL, 1}, {"etas", o->etas, NULL, 2},
        {"step_sizes", o->step_sizes, NULL, 2},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strcmp(fields[i].key, key) != 0)
            continue;
        if (fields[i].b != NULL)
            *fields[i].b = v[0] != 0;
        else
            for (int k = 0; k < fields[i].n; k++)
                fields[i].d[k] = v[k];
        return;
    }
    cr_assert_fail("unknown option %s", key);
}

static inline ferry_optim_options optim_case_options(const optim_case *c)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, c->kind);
    for (int i = 0; i < c->n_set; i++)
        optim_set_option(&o, c->set[i].key, c->set[i].v);
    return o;
}

static inline const optim_case *optim_find_case(const char *name)
{
    for (size_t i = 0; i < OPTIM_CASE_COUNT; i++)
        if (strcmp(optim_cases[i].name, name) == 0)
            return &optim_cases[i];
    cr_assert_fail("no case %s", name);
    return NULL;
}

/* A tensor of the file, converted to dtype (new reference). */
static inline ferry_tensor *optim_data(ferry_safetensors *st, const char *name, ferry_dtype dtype)
{
    ferry_tensor *t = ferry_assert_ptr(ferry_safetensors_get(st, name));
    ferry_tensor *c = ferry_assert_ptr(ferry_tensor_to_dtype(t, dtype));
    ferry_tensor_release(t);
    return c;
}

/* The model of the runs: W [3, 4], b [3] (leaves requiring grad) and x [4]. With `transposed`
   W is a non-contiguous view (the transpose of a [4, 3] tensor) holding the same values. */
typedef struct {
    ferry_tensor *w, *b, *x;
} optim_model;

static inline optim_model optim_model_new(ferry_safetensors *st, ferry_dtype dtype, bool transposed)
{
    optim_model m;
    m.w = optim_data(st, "init.W", dtype);
    m.b = optim_data(st, "init.b", dtype);
    m.x = optim_data(st, "x", dtype);
    if (transposed) {
        ferry_tensor *wt = ferry_assert_ptr(ferry_tensor_transpose(m.w, 0, 1));
        ferry_tensor *store = ferry_assert_ptr(ferry_tensor_clone_data(wt)); /* [4, 3] */
        ferry_tensor *view = ferry_assert_ptr(ferry_tensor_transpose(store, 0, 1));
        cr_assert(!ferry_tensor_is_contiguous(view));
        ferry_tensor_release(wt);
        ferry_tensor_release(store);
        ferry_tensor_release(m.w);
        m.w = view;
    }
    ferry_assert_ok(ferry_tensor_set_requires_grad(m.w, true));
    ferry_assert_ok(ferry_tensor_set_requires_grad(m.b, true));
    return m;
}

static inline void optim_model_free(optim_model *m)
{
    ferry_tensor_release(m->w);
    ferry_tensor_release(m->b);
    ferry_tensor_release(m->x);
}

/* sum(tanh(W @ x + b) ** 2), b left out unless uses_b; backward fills W.grad (and b.grad). */
static inline void optim_backward(const optim_model *m, bool uses_b)
{
    ferry_tensor *y = ferry_assert_ptr(ferry_matmul(m->w, m->x));
    if (uses_b) {
        ferry_tensor *z = ferry_assert_ptr(ferry_add(y, m->b));
        ferry_tensor_release(y);
        y = z;
    }
    ferry_tensor *t = ferry_assert_ptr(ferry_tanh(y));
    ferry_tensor *sq = ferry_assert_ptr(ferry_pow(t, 2.0));
    ferry_tensor *loss = ferry_assert_ptr(ferry_sum(sq));
    ferry_assert_ok(ferry_backward(loss, NULL, false));
    ferry_tensor_release(loss);
    ferry_tensor_release(sq);
    ferry_tensor_release(t);
    ferry_tensor_release(y);
}

/* The optimizer a case describes over the model: one group, or b in a second one. */
static inline ferry_optimizer *optim_case_optimizer(const optim_case *c, const optim_model *m)
{
    ferry_optim_options o = optim_case_options(c);
    if (c->b_lr < 0)
        return ferry_assert_ptr(ferry_optimizer_new(c->kind, &o, (ferry_tensor *[]){m->w, m->b}, 2));
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(c->kind, &o, (ferry_tensor *[]){m->w}, 1));
    o.lr = c->b_lr;
    ferry_assert_ok(ferry_optimizer_add_param_group(opt, &o, (ferry_tensor *[]){m->b}, 1));
    return opt;
}

/* Largest relative difference between the model's parameters and row `step` of `traj`
   (differences below `floor` count as equal, for values torch and ferry both leave near 0). */
static inline double optim_row_error(const optim_model *m, ferry_tensor *traj, int step, double floor)
{
    double worst = 0;
    for (int64_t i = 0; i < 15; i++) {
        double got = i < 12 ? ferry_tensor_item_at(m->w, i) : ferry_tensor_item_at(m->b, i - 12);
        double want = ferry_tensor_item_at(traj, step * 15 + i);
        double diff = fabs(got - want);
        if (diff <= floor)
            continue;
        double rel = diff / fmax(fabs(want), 1e-300);
        worst = rel > worst ? rel : worst;
    }
    return worst;
}

/* Replays steps [from, to) of case c with `opt` over `m` and checks each against torch's. */
static inline void optim_replay_steps(const optim_case *c, ferry_safetensors *st, optim_model *m,
                                      ferry_optimizer *opt, int from, int to, double rtol)
{
    char name[96];
    snprintf(name, sizeof name, "case.%s", c->name);
    ferry_tensor *traj = optim_data(st, name, FERRY_FLOAT64);
    for (int s = from; s < to; s++) {
        ferry_assert_ok(ferry_optimizer_zero_grad(opt));
        optim_backward(m, c->uses_b);
        ferry_assert_ok(ferry_optimizer_step(opt));
        double err = optim_row_error(m, traj, s, c->is_f32 ? 1e-7 : 1e-15);
        cr_assert(err <= rtol, "%s: step %d differs from torch by %.3g relative (limit %.3g)",
                  c->name, s + 1, err, rtol);
    }
    ferry_tensor_release(traj);
}

/* The whole trajectory of case c, from fresh parameters. */
static inline void optim_replay(const optim_case *c, ferry_safetensors *st, bool transposed)
{
    ferry_dtype dtype = c->is_f32 ? FERRY_FLOAT32 : FERRY_FLOAT64;
    optim_model m = optim_model_new(st, dtype, transposed);
    ferry_optimizer *opt = optim_case_optimizer(c, &m);
    optim_replay_steps(c, st, &m, opt, 0, OPTIM_STEPS, c->is_f32 ? 1e-5 : 1e-9);
    ferry_optimizer_free(opt);
    optim_model_free(&m);
}

#endif
