/* The optimizer API around the update rules: torch's defaults, torch's option checks and their
   exact messages (numbers formatted as Python prints floats), parameter lists and groups,
   step_grads with missing gradients or the wrong count, zero_grad's torch 1.13 default, and
   that a step records no autograd history and leaves the gradients alone. */
#include "test_optim_util.h"

#include "optim/optim_impl.h"

static ferry_tensor *leaf(int ndim, const int64_t *sizes, double start, ferry_dtype dtype)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= sizes[i];
    ferry_tensor *r = ferry_assert_ptr(ferry_arange(start, start + (double)n, 1.0, FERRY_FLOAT64));
    ferry_tensor *v = ferry_assert_ptr(ferry_tensor_reshape(r, ndim, sizes));
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_to_dtype(v, dtype));
    ferry_tensor_release(r);
    ferry_tensor_release(v);
    ferry_assert_ok(ferry_tensor_set_requires_grad(t, true));
    return t;
}

#define S(...) ((int64_t[]){__VA_ARGS__})

/* ferry_optimizer_new must fail with `code` and exactly `message`. */
static void expect_refused(ferry_optim_kind kind, const ferry_optim_options *o, ferry_status code,
                           const char *message)
{
    ferry_tensor *p = leaf(1, S(2), 0.5, FERRY_FLOAT64);
    ferry_clear_error();
    ferry_optimizer *opt = ferry_optimizer_new(kind, o, &p, 1);
    cr_assert_null(opt, "%s accepted options it should refuse (%s)", ferry_optim_kind_name(kind), message);
    cr_assert_eq(ferry_last_status(), code, "%s", ferry_last_error());
    cr_assert_str_eq(ferry_last_error(), message);
    ferry_tensor_release(p);
}

Test(optim_options, defaults_are_torch_optims_when_initialized, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    cr_assert(isnan(o.lr) && o.momentum == 0 && o.dampening == 0 && o.weight_decay == 0);
    cr_assert(!o.nesterov && !o.maximize);
    ferry_optim_options_init(&o, FERRY_ADAM);
    cr_assert(o.lr == 1e-3 && o.betas[0] == 0.9 && o.betas[1] == 0.999 && o.eps == 1e-8);
    cr_assert(o.weight_decay == 0 && !o.amsgrad);
    ferry_optim_options_init(&o, FERRY_ADAMW);
    cr_assert(o.lr == 1e-3 && o.weight_decay == 1e-2);
    ferry_optim_options_init(&o, FERRY_ADAGRAD);
    cr_assert(o.lr == 1e-2 && o.lr_decay == 0 && o.initial_accumulator_value == 0 && o.eps == 1e-10);
    ferry_optim_options_init(&o, FERRY_RMSPROP);
    cr_assert(o.lr == 1e-2 && o.alpha == 0.99 && o.eps == 1e-8 && o.momentum == 0 && !o.centered);
    ferry_optim_options_init(&o, FERRY_ADADELTA);
    cr_assert(o.lr == 1.0 && o.rho == 0.9 && o.eps == 1e-6);
    ferry_optim_options_init(&o, FERRY_ADAMAX);
    cr_assert(o.lr == 2e-3 && o.betas[0] == 0.9 && o.eps == 1e-8);
    ferry_optim_options_init(&o, FERRY_RPROP);
    cr_assert(o.lr == 1e-2 && o.etas[0] == 0.5 && o.etas[1] == 1.2);
    cr_assert(o.step_sizes[0] == 1e-6 && o.step_sizes[1] == 50);
    cr_assert_str_eq(ferry_optim_kind_name(FERRY_RMSPROP), "RMSprop");
    cr_assert_null(ferry_optim_kind_name((ferry_optim_kind)99));
}

Test(optim_options, sgd_needs_an_lr_when_left_at_default, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    expect_refused(FERRY_SGD, &o, FERRY_EINVAL,
                   "parameter group didn't specify a value of required optimization parameter lr");
}

typedef struct {
    ferry_optim_kind kind;
    const char *field;
    double v[2];
    const char *message;
} bad_option;

Test(optim_options, out_of_range_options_fail_with_torch_messages_when_constructing, .timeout = 10)
{
    static const bad_option cases[] = {
        {FERRY_SGD, "lr", {-1.0, 0}, "Invalid learning rate: -1.0"},
        {FERRY_SGD, "momentum", {-0.5, 0}, "Invalid momentum value: -0.5"},
        {FERRY_SGD, "weight_decay", {-1e-4, 0}, "Invalid weight_decay value: -0.0001"},
        {FERRY_SGD, "nesterov", {1, 0}, "Nesterov momentum requires a momentum and zero dampening"},
        {FERRY_ADAM, "lr", {NAN, 0}, "Invalid learning rate: nan"},
        {FERRY_ADAM, "eps", {-1e-8, 0}, "Invalid epsilon value: -1e-08"},
        {FERRY_ADAM, "betas", {1.0, 0.9}, "Invalid beta parameter at index 0: 1.0"},
        {FERRY_ADAM, "betas", {0.9, -0.1}, "Invalid beta parameter at index 1: -0.1"},
        {FERRY_ADAM, "weight_decay", {-0.01, 0}, "Invalid weight_decay value: -0.01"},
        {FERRY_ADAMW, "lr", {-1e20, 0}, "Invalid learning rate: -1e+20"},
        {FERRY_ADAMW, "betas", {0.9, 1.0}, "Invalid beta parameter at index 1: 1.0"},
        {FERRY_ADAGRAD, "lr_decay", {-1.0, 0}, "Invalid lr_decay value: -1.0"},
        {FERRY_ADAGRAD, "initial_accumulator_value", {-0.1, 0},
         "Invalid initial_accumulator_value value: -0.1"},
        {FERRY_ADAGRAD, "eps", {-1.0, 0}, "Invalid epsilon value: -1.0"},
        {FERRY_ADAGRAD, "weight_decay", {-2.5, 0}, "Invalid weight_decay value: -2.5"},
        {FERRY_RMSPROP, "alpha", {-0.5, 0}, "Invalid alpha value: -0.5"},
        {FERRY_RMSPROP, "momentum", {-1.0, 0}, "Invalid momentum value: -1.0"},
        {FERRY_RMSPROP, "eps", {-1e-5, 0}, "Invalid epsilon value: -1e-05"},
        {FERRY_ADADELTA, "rho", {1.5, 0}, "Invalid rho value: 1.5"},
        {FERRY_ADADELTA, "lr", {-0.001, 0}, "Invalid learning rate: -0.001"},
        {FERRY_ADAMAX, "betas", {-0.5, 0.9}, "Invalid beta parameter at index 0: -0.5"},
        {FERRY_ADAMAX, "eps", {-3e-7, 0}, "Invalid epsilon value: -3e-07"},
        {FERRY_RPROP, "etas", {1.5, 2.0}, "Invalid eta values: 1.5, 2.0"},
        {FERRY_RPROP, "etas", {0.5, 1.0}, "Invalid eta values: 0.5, 1.0"},
        {FERRY_RPROP, "lr", {-1.0, 0}, "Invalid learning rate: -1.0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ferry_optim_options o;
        ferry_optim_options_init(&o, cases[i].kind);
        if (cases[i].kind == FERRY_SGD)
            o.lr = 0.1;
        optim_set_option(&o, cases[i].field, cases[i].v);
        expect_refused(cases[i].kind, &o, FERRY_EINVAL, cases[i].message);
    }
}

Test(optim_options, nesterov_with_dampening_is_refused_when_constructing, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = 0.1;
    o.momentum = 0.9;
    o.dampening = 0.1;
    o.nesterov = true;
    expect_refused(FERRY_SGD, &o, FERRY_EINVAL, "Nesterov momentum requires a momentum and zero dampening");
}

Test(optim_options, numbers_print_as_python_floats_when_formatted, .timeout = 10)
{
    static const struct { double v; const char *text; } cases[] = {
        {-1.0, "-1.0"}, {1e-8, "1e-08"}, {0.001, "0.001"}, {1e-4, "0.0001"}, {1e-5, "1e-05"},
        {0.1, "0.1"}, {50, "50.0"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"},
        {123.456, "123.456"}, {-0.0, "-0.0"}, {0.0, "0.0"}, {INFINITY, "inf"},
        {-INFINITY, "-inf"}, {NAN, "nan"}, {5e-324, "5e-324"}, {1.0 / 3, "0.3333333333333333"},
        {1.7976931348623157e308, "1.7976931348623157e+308"}, {2.5e-7, "2.5e-07"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[40];
        cr_assert_str_eq(ferry__py_float(cases[i].v, buf, sizeof buf), cases[i].text);
    }
}

Test(optim_params, empty_or_bad_parameter_lists_are_refused_when_constructing, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_ADAM);
    ferry_tensor *p = leaf(1, S(3), 0, FERRY_FLOAT64);
    ferry_assert_status(ferry_optimizer_new(FERRY_ADAM, &o, &p, 0) ? FERRY_OK : ferry_last_status(),
                        FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "optimizer got an empty parameter list");
    cr_assert_null(ferry_optimizer_new(FERRY_ADAM, NULL, &p, 1));
    cr_assert_null(ferry_optimizer_new((ferry_optim_kind)42, &o, &p, 1));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_optimizer_new(FERRY_ADAM, &o, (ferry_tensor *[]){p, NULL}, 2));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_optimizer_new(FERRY_ADAM, &o, (ferry_tensor *[]){p, p}, 2));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);

    ferry_tensor *y = ferry_assert_ptr(ferry_mul_scalar(p, 2.0)); /* has a grad_fn */
    cr_assert_null(ferry_optimizer_new(FERRY_ADAM, &o, &y, 1));
    cr_assert_str_eq(ferry_last_error(), "can't optimize a non-leaf Tensor");
    ferry_tensor *ints = ferry_assert_ptr(ferry_arange(0, 3, 1, FERRY_INT64));
    cr_assert_null(ferry_optimizer_new(FERRY_ADAM, &o, &ints, 1));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP);
    ferry_tensor_release(ints);
    ferry_tensor_release(y);
    ferry_tensor_release(p);
}

Test(optim_params, groups_are_numbered_in_order_and_checked_when_added, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_RMSPROP);
    ferry_tensor *a = leaf(1, S(2), 0, FERRY_FLOAT64), *b = leaf(2, S(2, 2), 1, FERRY_FLOAT64);
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(FERRY_RMSPROP, &o, &a, 1));
    ferry_assert_status(ferry_optimizer_add_param_group(opt, &o, &a, 1), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "some parameters appear in more than one parameter group");
    ferry_assert_status(ferry_optimizer_add_param_group(opt, &o, &b, 0), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "optimizer got an empty parameter list");
    ferry_optim_options bad = o;
    bad.alpha = -1;
    ferry_assert_status(ferry_optimizer_add_param_group(opt, &bad, &b, 1), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "Invalid alpha value: -1.0");
    ferry_assert_status(ferry_optimizer_add_param_group(NULL, &o, &b, 1), FERRY_EINVAL);
    cr_assert_eq(ferry_optimizer_param_count(opt), 1);
    cr_assert_eq(ferry_optimizer_group_count(opt), 1);
    ferry_assert_ok(ferry_optimizer_add_param_group(opt, &o, &b, 1));
    cr_assert_eq(ferry_optimizer_param_count(opt), 2);
    cr_assert_eq(ferry_optimizer_group_count(opt), 2);
    cr_assert_eq(ferry_optimizer_param_count(NULL), 0);
    ferry_optimizer_free(opt);
    ferry_optimizer_free(NULL);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
}

/* Two identical models: one steps with .grad, the other with step_grads. */
Test(optim_step, step_grads_skips_null_entries_and_matches_step_when_given_grads, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_ADAM);
    o.lr = 0.1;
    ferry_tensor *a1 = leaf(1, S(3), 0.5, FERRY_FLOAT64), *b1 = leaf(1, S(2), -1, FERRY_FLOAT64);
    ferry_tensor *a2 = leaf(1, S(3), 0.5, FERRY_FLOAT64), *b2 = leaf(1, S(2), -1, FERRY_FLOAT64);
    ferry_tensor *b_before = ferry_assert_ptr(ferry_tensor_clone_data(b2));
    ferry_optimizer *o1 = ferry_assert_ptr(ferry_optimizer_new(FERRY_ADAM, &o, (ferry_tensor *[]){a1, b1}, 2));
    ferry_optimizer *o2 = ferry_assert_ptr(ferry_optimizer_new(FERRY_ADAM, &o, (ferry_tensor *[]){a2, b2}, 2));
    ferry_tensor *g = ferry_assert_ptr(ferry_arange(-1, 2, 1, FERRY_FLOAT64));
    ferry_assert_ok(ferry_tensor_set_grad(a1, g));
    for (int s = 0; s < 3; s++) {
        ferry_assert_ok(ferry_optimizer_step(o1));
        ferry_assert_ok(ferry_optimizer_step_grads(o2, (ferry_tensor *[]){g, NULL}, 2));
    }
    cr_assert(ferry_tensor_equal(a1, a2));
    cr_assert(ferry_tensor_equal(b1, b_before) && ferry_tensor_equal(b2, b_before));
    cr_assert(!ferry_tensor_equal(a2, b_before) && ferry_tensor_grad(b2) == NULL);

    ferry_assert_status(ferry_optimizer_step_grads(o2, &g, 1), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "the gradients passed in does not equal to the size of "
                                         "the parameters!Params length: 2. Gradients length: 1");
    ferry_assert_status(ferry_optimizer_step_grads(o2, NULL, 0), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "the gradients passed in does not equal to the size of "
                                         "the parameters!Params length: 2. Gradients length: 0");
    ferry_assert_status(ferry_optimizer_step_grads(o2, NULL, 2), FERRY_EINVAL);
    ferry_assert_status(ferry_optimizer_step(NULL), FERRY_EINVAL);
    ferry_optimizer_free(o1);
    ferry_optimizer_free(o2);
    ferry_tensor_release(g);
    ferry_tensor_release(b_before);
    ferry_tensor_release(a1);
    ferry_tensor_release(b1);
    ferry_tensor_release(a2);
    ferry_tensor_release(b2);
}

Test(optim_step, mismatched_gradient_changes_nothing_when_stepping, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = 0.5;
    ferry_tensor *a = leaf(1, S(3), 0.5, FERRY_FLOAT64), *b = leaf(1, S(2), -1, FERRY_FLOAT64);
    ferry_tensor *a_before = ferry_assert_ptr(ferry_tensor_clone_data(a));
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(FERRY_SGD, &o, (ferry_tensor *[]){a, b}, 2));
    ferry_tensor *ga = ferry_assert_ptr(ferry_ones(1, S(3), FERRY_FLOAT64));
    ferry_tensor *wrong_shape = ferry_assert_ptr(ferry_ones(1, S(3), FERRY_FLOAT64));
    ferry_tensor *wrong_type = ferry_assert_ptr(ferry_ones(1, S(2), FERRY_FLOAT32));
    ferry_assert_status(ferry_optimizer_step_grads(opt, (ferry_tensor *[]){ga, wrong_shape}, 2), FERRY_EINVAL);
    ferry_assert_status(ferry_optimizer_step_grads(opt, (ferry_tensor *[]){ga, wrong_type}, 2), FERRY_EINVAL);
    cr_assert(ferry_tensor_equal(a, a_before));
    ferry_optimizer_free(opt);
    ferry_tensor_release(ga);
    ferry_tensor_release(wrong_shape);
    ferry_tensor_release(wrong_type);
    ferry_tensor_release(a_before);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
}

Test(optim_step, step_records_nothing_and_keeps_grads_when_run_in_grad_mode, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_RMSPROP);
    o.momentum = 0.5;
    o.weight_decay = 0.1;
    ferry_tensor *a = leaf(2, S(2, 2), 0.5, FERRY_FLOAT32);
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(FERRY_RMSPROP, &o, &a, 1));
    ferry_tensor *y = ferry_assert_ptr(ferry_mul(a, a));
    ferry_tensor *loss = ferry_assert_ptr(ferry_sum(y));
    ferry_assert_ok(ferry_backward(loss, NULL, false));
    ferry_tensor *g = ferry_assert_ptr(ferry_tensor_grad(a));
    ferry_tensor *g_before = ferry_assert_ptr(ferry_tensor_clone_data(g));
    ferry_tensor *a_before = ferry_assert_ptr(ferry_tensor_clone_data(a));
    cr_assert(ferry_is_grad_enabled());
    ferry_assert_ok(ferry_optimizer_step(opt));
    cr_assert(!ferry_tensor_equal(a, a_before));
    cr_assert(ferry_tensor_is_leaf(a) && ferry_tensor_requires_grad(a));
    cr_assert_null(ferry_tensor_grad_fn_name(a));
    cr_assert(ferry_tensor_equal(g, g_before));
    ferry_optimizer_free(opt);
    ferry_tensor_release(g);
    ferry_tensor_release(g_before);
    ferry_tensor_release(a_before);
    ferry_tensor_release(loss);
    ferry_tensor_release(y);
    ferry_tensor_release(a);
}

Test(optim_step, zero_grad_zeroes_existing_grads_in_place_when_called, .timeout = 10)
{
    ferry_optim_options o;
    ferry_optim_options_init(&o, FERRY_SGD);
    o.lr = 0.1;
    ferry_tensor *a = leaf(1, S(3), 0.5, FERRY_FLOAT64), *b = leaf(1, S(2), -1, FERRY_FLOAT64);
    ferry_optimizer *opt = ferry_assert_ptr(ferry_optimizer_new(FERRY_SGD, &o, (ferry_tensor *[]){a, b}, 2));
    ferry_tensor *g = ferry_assert_ptr(ferry_full(1, S(3), 2.0, FERRY_FLOAT64));
    ferry_assert_ok(ferry_tensor_set_grad(a, g));
    ferry_assert_ok(ferry_optimizer_zero_grad(opt));
    ferry_tensor *after = ferry_assert_ptr(ferry_tensor_grad(a));
    cr_assert_eq(after, g, "torch 1.13's zero_grad keeps the grad tensor (set_to_none=False)");
    for (int i = 0; i < 3; i++)
        cr_assert(ferry_tensor_item_at(after, i) == 0.0);
    cr_assert_null(ferry_tensor_grad(b));
    ferry_assert_status(ferry_optimizer_zero_grad(NULL), FERRY_EINVAL);
    ferry_optimizer_free(opt);
    ferry_tensor_release(after);
    ferry_tensor_release(g);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
}
