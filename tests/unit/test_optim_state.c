/* The optimizer state file: saving in torch's state_dict layout, loading it back so that a run
   continues exactly as an uninterrupted one (against torch's trajectory), loads that must fail
   and leave the optimizer as it was, and a round trip through torch's own load_state_dict
   (skipped when /usr/bin/python3 cannot import torch). */
#include "test_optim_util.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char dir[256];
} tmp_dir;

static void tmp_init(tmp_dir *t)
{
    ferry_test_mkdtemp(t->dir, sizeof t->dir, "ferry-optim");
}

static const char *tmp_path(tmp_dir *t, const char *name, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/%s", t->dir, name);
    cr_assert(n > 0 && (size_t)n < cap, "path of %s too long", name);
    return buf;
}

static void tmp_done(tmp_dir *t)
{
    char cmd[sizeof t->dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    cr_assert(system(cmd) == 0);
}

static bool same_file(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *da = ferry_test_read_file(a, &na), *db = ferry_test_read_file(b, &nb);
    bool same = na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

/* An optimizer of c's kind and group layout over m, with the kind's defaults (and lr 0.5 where
   torch has no default), so only a load can give it c's options. */
static ferry_optimizer *default_optimizer(const optim_case *c, const optim_model *m)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, c->kind);
    if (c->kind == FERRY_SGD)
        o.lr = 0.5;
    if (c->b_lr < 0)
        return ferry_assert_ptr(ferry_optimizer_new(c->kind, &o, (ferry_tensor *[]){m->w, m->b}, 2));
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(c->kind, &o, (ferry_tensor *[]){m->w}, 1));
    ferry_assert_ok(ferry_optimizer_add_param_group(opt, &o, (ferry_tensor *[]){m->b}, 1));
    return opt;
}

/* Five steps, save, a fresh optimizer loads the file, seven more steps: each step as torch's. */
static void resume_case(const char *name, ferry_safetensors *st, tmp_dir *t)
{
    const optim_case *c = optim_find_case(name);
    char path[sizeof ((tmp_dir *)0)->dir + 64];
    tmp_path(t, "state.safetensors", path, sizeof path);
    optim_model m = optim_model_new(st, c->is_f32 ? FERRY_FLOAT32 : FERRY_FLOAT64, false);
    double rtol = c->is_f32 ? 1e-5 : 1e-9;
    ferry_optimizer *opt = optim_case_optimizer(c, &m);
    optim_replay_steps(c, st, &m, opt, 0, 5, rtol);
    ferry_assert_ok(ferry_optimizer_save(opt, path));
    ferry_optimizer_free(opt);
    opt = default_optimizer(c, &m);
    ferry_assert_ok(ferry_optimizer_load(opt, path));
    optim_replay_steps(c, st, &m, opt, 5, OPTIM_STEPS, rtol);
    ferry_optimizer_free(opt);
    optim_model_free(&m);
    unlink(path);
}

Test(optim_state, loaded_run_continues_like_an_uninterrupted_one_when_resumed, .timeout = 60)
{
    static const char *const cases[] = {
        "sgd_all", "sgd_momentum", "adam_all", "adamw_amsgrad", "adagrad_lr_decay",
        "rmsprop_centered_momentum", "adadelta_eps_lr", "adamax_betas_eps", "rprop_step_sizes",
        "sgd_groups", "rmsprop_groups", "adam_nograd_b", "adagrad_nograd_b", "adam_amsgrad_f32",
        "rprop_f32",
    };
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(OPTIM_DATA));
    tmp_dir t;
    tmp_init(&t);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        resume_case(cases[i], st, &t);
    tmp_done(&t);
    ferry_safetensors_free(st);
}

/* Saves case `name` after `steps` steps and returns the loaded file. */
static ferry_safetensors *saved_after(const char *name, int steps, tmp_dir *t)
{
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(OPTIM_DATA));
    const optim_case *c = optim_find_case(name);
    optim_model m = optim_model_new(st, c->is_f32 ? FERRY_FLOAT32 : FERRY_FLOAT64, false);
    ferry_optimizer *opt = optim_case_optimizer(c, &m);
    if (steps > 0)
        optim_replay_steps(c, st, &m, opt, 0, steps, 1e-5);
    char path[sizeof ((tmp_dir *)0)->dir + 64];
    ferry_assert_ok(ferry_optimizer_save(opt, tmp_path(t, "layout.safetensors", path, sizeof path)));
    ferry_safetensors *out = ferry_assert_ptr(ferry_safetensors_load(path));
    unlink(path);
    ferry_optimizer_free(opt);
    optim_model_free(&m);
    ferry_safetensors_free(st);
    return out;
}

static void expect_tensor(ferry_safetensors *f, const char *name, ferry_dtype dtype, int ndim)
{
    ferry_tensor *t = ferry_safetensors_get(f, name);
    cr_assert_not_null(t, "no %s in the state file", name);
    cr_assert_eq(ferry_tensor_dtype(t), dtype, "%s is %s", name, ferry_dtype_name(ferry_tensor_dtype(t)));
    cr_assert_eq(ferry_tensor_ndim(t), ndim, "%s has %d dims", name, ferry_tensor_ndim(t));
    ferry_tensor_release(t);
}

static double item(ferry_safetensors *f, const char *name)
{
    ferry_tensor *t = ferry_assert_ptr(ferry_safetensors_get(f, name));
    double v = ferry_tensor_item(t);
    ferry_tensor_release(t);
    return v;
}

Test(optim_state, file_follows_torch_state_dict_layout_when_saved, .timeout = 30)
{
    tmp_dir t;
    tmp_init(&t);
    ferry_safetensors *f = saved_after("adam_default", 3, &t);
    cr_assert_eq(ferry_safetensors_count(f), 6);
    expect_tensor(f, "state.0.step", FERRY_FLOAT32, 0);
    cr_assert(item(f, "state.0.step") == 3.0);
    expect_tensor(f, "state.0.exp_avg", FERRY_FLOAT64, 2);
    expect_tensor(f, "state.0.exp_avg_sq", FERRY_FLOAT64, 2);
    expect_tensor(f, "state.1.exp_avg", FERRY_FLOAT64, 1);
    cr_assert_str_eq(ferry_safetensors_metadata(f, "optimizer"), "Adam");
    cr_assert_str_eq(ferry_safetensors_metadata(f, "param_groups"),
                     "[{\"lr\": 0.001, \"betas\": [0.9, 0.999], \"eps\": 1e-08, \"weight_decay\": 0.0, "
                     "\"amsgrad\": false, \"maximize\": false, \"foreach\": null, \"capturable\": false, "
                     "\"differentiable\": false, \"fused\": false, \"params\": [0, 1]}]");
    ferry_safetensors_free(f);

    f = saved_after("rmsprop_centered_momentum", 2, &t);
    expect_tensor(f, "state.1.step", FERRY_INT64, 0); /* torch keeps a Python int */
    cr_assert(item(f, "state.1.step") == 2.0);
    expect_tensor(f, "state.1.square_avg", FERRY_FLOAT64, 1);
    expect_tensor(f, "state.1.momentum_buffer", FERRY_FLOAT64, 1);
    expect_tensor(f, "state.1.grad_avg", FERRY_FLOAT64, 1);
    ferry_safetensors_free(f);

    f = saved_after("sgd_groups", 1, &t);
    cr_assert_eq(ferry_safetensors_count(f), 2);
    expect_tensor(f, "state.0.momentum_buffer", FERRY_FLOAT64, 2);
    expect_tensor(f, "state.1.momentum_buffer", FERRY_FLOAT64, 1);
    cr_assert_str_eq(ferry_safetensors_metadata(f, "param_groups"),
                     "[{\"lr\": 0.1, \"momentum\": 0.9, \"dampening\": 0.0, \"weight_decay\": 0.0, "
                     "\"nesterov\": false, \"maximize\": false, \"foreach\": null, "
                     "\"differentiable\": false, \"params\": [0]}, {\"lr\": 0.01, \"momentum\": 0.9, "
                     "\"dampening\": 0.0, \"weight_decay\": 0.0, \"nesterov\": false, \"maximize\": "
                     "false, \"foreach\": null, \"differentiable\": false, \"params\": [1]}]");
    ferry_safetensors_free(f);

    f = saved_after("adam_nograd_b", 2, &t); /* b never had a gradient: no state */
    cr_assert_eq(ferry_safetensors_count(f), 3);
    cr_assert_null(ferry_safetensors_get(f, "state.1.step"));
    ferry_safetensors_free(f);

    f = saved_after("adagrad_initial_accumulator", 0, &t); /* Adagrad's state exists at once */
    expect_tensor(f, "state.1.sum", FERRY_FLOAT64, 1);
    cr_assert(item(f, "state.1.step") == 0.0);
    ferry_tensor *sum = ferry_assert_ptr(ferry_safetensors_get(f, "state.1.sum"));
    cr_assert(ferry_tensor_item_at(sum, 2) == 0.5);
    ferry_tensor_release(sum);
    ferry_safetensors_free(f);

    f = saved_after("sgd_plain", 2, &t); /* no momentum: nothing to keep */
    cr_assert_eq(ferry_safetensors_count(f), 0);
    ferry_safetensors_free(f);
    tmp_done(&t);
}

/* Writes a crafted state file for a one-parameter ([3, 4]) Adam optimizer. */
static void write_crafted(const char *path, const char *kind, const char *groups, const char *name,
                          ferry_tensor *t)
{
    const char *keys[] = {"optimizer", "param_groups"};
    const char *values[] = {kind, groups};
    size_t n_meta = kind ? 2 : 0;
    ferry_assert_ok(ferry_safetensors_save_with_metadata(path, name ? &name : NULL, name ? &t : NULL,
                                                         name ? 1 : 0, keys, values, n_meta));
}

#define ADAM_GROUP(lr, ids)                                                                   \
    "[{\"lr\": " lr ", \"betas\": [0.9, 0.999], \"eps\": 1e-08, \"weight_decay\": 0, "         \
    "\"amsgrad\": false, \"maximize\": false, \"params\": " ids "}]"

typedef struct {
    const char *kind, *groups, *name;
    int64_t sizes[2];
    int ndim;
    ferry_dtype dtype;
    ferry_status code;
    const char *message_part;
} bad_file;

Test(optim_state, bad_files_fail_and_change_nothing_when_loaded, .timeout = 30)
{
    static const bad_file cases[] = {
        {"SGD", ADAM_GROUP("0.1", "[0]"), NULL, {0}, 0, FERRY_FLOAT64, FERRY_EINVAL,
         "holds SGD state, not Adam state"},
        {"Adam", "[]", NULL, {0}, 0, FERRY_FLOAT64, FERRY_EINVAL,
         "loaded state dict has a different number of parameter groups"},
        {"Adam", ADAM_GROUP("0.1", "[0, 1]"), NULL, {0}, 0, FERRY_FLOAT64, FERRY_EINVAL,
         "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"},
        {"Adam", ADAM_GROUP("0.1", "[0]"), "state.0.exp_avg", {4, 3}, 2, FERRY_FLOAT64, FERRY_EINVAL,
         "state.0.exp_avg does not have the shape of parameter 0"},
        {"Adam", ADAM_GROUP("0.1", "[0]"), "state.0.exp_avg", {3, 4}, 2, FERRY_INT64, FERRY_EINVAL,
         "not a floating dtype"},
        {"Adam", ADAM_GROUP("0.1", "[0]"), "state.0.momentum_buffer", {3, 4}, 2, FERRY_FLOAT64,
         FERRY_EINVAL, "Adam keeps no state called \"momentum_buffer\""},
        {"Adam", ADAM_GROUP("0.1", "[0]"), "state.7.exp_avg", {3, 4}, 2, FERRY_FLOAT64, FERRY_EINVAL,
         "parameter id 7, which no parameter group lists"},
        {"Adam", ADAM_GROUP("0.1", "[0]"), "weights", {3, 4}, 2, FERRY_FLOAT64, FERRY_EINVAL,
         "not a state.<id>.<key> tensor"},
        {"Adam", ADAM_GROUP("0.1", "[0]"), "state.0.exp_avg", {3, 4}, 2, FERRY_FLOAT64, FERRY_EINVAL,
         "the state of parameter 0 has no step"},
        {"Adam", ADAM_GROUP("-0.1", "[0]"), NULL, {0}, 0, FERRY_FLOAT64, FERRY_EINVAL,
         "parameter group 0 of the state file: Invalid learning rate: -0.1"},
        {"Adam", "[{\"lr\": 0.1, \"params\": [0]}]", NULL, {0}, 0, FERRY_FLOAT64, FERRY_EPROTO,
         "group 0 has no \"betas\""},
        {"Adam", "[{\"lr\": 0.1,", NULL, {0}, 0, FERRY_FLOAT64, FERRY_EPROTO, "param_groups: "},
        {"Adam", ADAM_GROUP("true", "[0]"), NULL, {0}, 0, FERRY_FLOAT64, FERRY_EPROTO, "expected a number"},
        {NULL, NULL, NULL, {0}, 0, FERRY_FLOAT64, FERRY_EINVAL, "is not an optimizer state file"},
    };
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(OPTIM_DATA));
    optim_model m = optim_model_new(st, FERRY_FLOAT64, false);
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_ADAM);
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(FERRY_ADAM, &o, &m.w, 1));
    ferry_tensor *g = ferry_assert_ptr(ferry_ones(2, (int64_t[]){3, 4}, FERRY_FLOAT64));
    ferry_assert_ok(ferry_optimizer_step_grads(opt, &g, 1));
    tmp_dir t;
    tmp_init(&t);
    char before[128], after[128], bad[128];
    ferry_assert_ok(ferry_optimizer_save(opt, tmp_path(&t, "before", before, sizeof before)));
    tmp_path(&t, "bad", bad, sizeof bad);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_file *c = &cases[i];
        ferry_tensor *x = ferry_assert_ptr(ferry_zeros(c->ndim, c->sizes, c->dtype));
        write_crafted(bad, c->kind, c->groups, c->name, x);
        ferry_tensor_release(x);
        ferry_assert_status(ferry_optimizer_load(opt, bad), c->code);
        cr_assert(strstr(ferry_last_error(), c->message_part) != NULL, "case %zu: \"%s\" lacks \"%s\"",
                  i, ferry_last_error(), c->message_part);
        ferry_assert_ok(ferry_optimizer_save(opt, tmp_path(&t, "after", after, sizeof after)));
        cr_assert(same_file(before, after), "case %zu changed the optimizer", i);
    }
    ferry_assert_status(ferry_optimizer_load(opt, "/nonexistent/optim.safetensors"), FERRY_EINVAL);
    ferry_assert_status(ferry_optimizer_load(NULL, before), FERRY_EINVAL);
    ferry_assert_status(ferry_optimizer_save(opt, NULL), FERRY_EINVAL);
    ferry_assert_status(ferry_optimizer_save(opt, "/nonexistent/dir/optim.safetensors"), FERRY_EINVAL);
    ferry_assert_ok(ferry_optimizer_load(opt, before));
    tmp_done(&t);
    ferry_tensor_release(g);
    ferry_optimizer_free(opt);
    optim_model_free(&m);
    ferry_safetensors_free(st);
}

/* Writes W and b into a safetensors file for the torch script. */
static void save_params(const char *path, const optim_model *m)
{
    const char *names[] = {"W", "b"};
    ferry_tensor *ts[] = {m->w, m->b};
    ferry_assert_ok(ferry_safetensors_save(path, names, ts, 2));
}

/* Ferry runs 5 steps and saves; torch loads that state with load_state_dict and runs 7 more;
   ferry runs its own 7. The parameters must agree, and the state torch hands back must load into
   ferry and hold what ferry's own state holds. */
static void torch_round_trip(const char *name, ferry_safetensors *st, tmp_dir *t)
{
    const optim_case *c = optim_find_case(name);
    char p_in[128], s_in[128], p_out[128], s_out[128], mine[128], theirs[128], cmd[1024];
    tmp_path(t, "params_in", p_in, sizeof p_in);
    tmp_path(t, "state_in", s_in, sizeof s_in);
    tmp_path(t, "params_out", p_out, sizeof p_out);
    tmp_path(t, "state_out", s_out, sizeof s_out);
    tmp_path(t, "mine", mine, sizeof mine);
    tmp_path(t, "theirs", theirs, sizeof theirs);
    optim_model m = optim_model_new(st, FERRY_FLOAT64, false);
    ferry_optimizer *opt = optim_case_optimizer(c, &m);
    optim_replay_steps(c, st, &m, opt, 0, 5, 1e-9);
    save_params(p_in, &m);
    ferry_assert_ok(ferry_optimizer_save(opt, s_in));
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/data/optim/torch_roundtrip.py %s %s %s 7 %s %s",
             name, p_in, s_in, p_out, s_out);
    cr_assert(system(cmd) == 0, "%s failed", cmd);
    optim_replay_steps(c, st, &m, opt, 5, OPTIM_STEPS, 1e-9);
    ferry_assert_ok(ferry_optimizer_save(opt, mine));

    ferry_safetensors *tp = ferry_assert_ptr(ferry_safetensors_load(p_out));
    ferry_tensor *tw = ferry_assert_ptr(ferry_safetensors_get(tp, "W"));
    ferry_tensor *tb = ferry_assert_ptr(ferry_safetensors_get(tp, "b"));
    cr_assert(ferry_allclose(m.w, tw, 1e-9, 1e-15) && ferry_allclose(m.b, tb, 1e-9, 1e-15),
              "%s: torch's parameters differ after the round trip", name);
    /* torch's state loads into a fresh optimizer and saves back to what ferry's own run holds */
    ferry_optimizer *back = default_optimizer(c, &m);
    ferry_assert_ok(ferry_optimizer_load(back, s_out));
    ferry_assert_ok(ferry_optimizer_save(back, theirs));
    ferry_safetensors *a = ferry_assert_ptr(ferry_safetensors_load(mine));
    ferry_safetensors *b = ferry_assert_ptr(ferry_safetensors_load(theirs));
    cr_assert_eq(ferry_safetensors_count(a), ferry_safetensors_count(b));
    cr_assert_str_eq(ferry_safetensors_metadata(a, "param_groups"),
                     ferry_safetensors_metadata(b, "param_groups"));
    for (size_t i = 0; i < ferry_safetensors_count(a); i++) {
        const char *tn = ferry_safetensors_name(a, i);
        ferry_tensor *x = ferry_assert_ptr(ferry_safetensors_get(a, tn));
        ferry_tensor *y = ferry_safetensors_get(b, tn);
        cr_assert_not_null(y, "%s: torch's state has no %s", name, tn);
        cr_assert_eq(ferry_tensor_dtype(x), ferry_tensor_dtype(y), "%s: %s changed dtype", name, tn);
        cr_assert(ferry_allclose(x, y, 1e-9, 1e-15), "%s: %s differs from torch's", name, tn);
        ferry_tensor_release(x);
        ferry_tensor_release(y);
    }
    ferry_safetensors_free(a);
    ferry_safetensors_free(b);
    ferry_optimizer_free(back);
    ferry_tensor_release(tw);
    ferry_tensor_release(tb);
    ferry_safetensors_free(tp);
    ferry_optimizer_free(opt);
    optim_model_free(&m);
}

Test(optim_state, checkpoint_survives_torch_load_state_dict_when_torch_is_installed, .timeout = 120)
{
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
        cr_skip_test("/usr/bin/python3 cannot import torch (install python3-torch to run the "
                     "round trip through torch's load_state_dict)");
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(OPTIM_DATA));
    tmp_dir t;
    tmp_init(&t);
    torch_round_trip("adam_all", st, &t);
    torch_round_trip("rmsprop_centered_momentum", st, &t);
    torch_round_trip("sgd_groups", st, &t);
    torch_round_trip("rprop_step_sizes", st, &t);
    tmp_done(&t);
    ferry_safetensors_free(st);
}
