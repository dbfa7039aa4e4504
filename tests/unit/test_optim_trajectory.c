/* Every optimizer and option combination against torch 1.13: each case of
   tests/data/optim/optim_cases.h is replayed for 12 steps with the loss computed by ferry's
   autograd, and every step must match torch's parameters to 1e-9 relative in float64 (1e-5 in
   float32). Also parameter groups with their own lr, parameters that never get a gradient, and
   non-contiguous parameters. */
#include "test_optim_util.h"

/* Replays every float64 single-group case of `kind` that uses both parameters. */
static void replay_kind(ferry_optim_kind kind)
{
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(OPTIM_DATA));
    int n = 0;
    for (size_t i = 0; i < OPTIM_CASE_COUNT; i++) {
        const optim_case *c = &optim_cases[i];
        if (c->kind != kind || c->is_f32 || !c->uses_b || c->b_lr >= 0)
            continue;
        optim_replay(c, st, false);
        n++;
    }
    cr_assert(n >= 4, "only %d cases for %s", n, ferry_optim_kind_name(kind));
    ferry_safetensors_free(st);
}

Test(optim_trajectory, sgd_matches_torch_for_every_option, .timeout = 30)
{
    replay_kind(FERRY_SGD);
}

Test(optim_trajectory, adam_matches_torch_for_every_option, .timeout = 30)
{
    replay_kind(FERRY_ADAM);
}

Test(optim_trajectory, adamw_matches_torch_for_every_option, .timeout = 30)
{
    replay_kind(FERRY_ADAMW);
}

Test(optim_trajectory, adagrad_matches_torch_for_every_option, .timeout = 30)
{
    replay_kind(FERRY_ADAGRAD);
}

Test(optim_trajectory, rmsprop_matches_torch_for_every_option, .timeout = 30)
{
    replay_kind(FERRY_RMSPROP);
}

Test(optim_trajectory, adadelta_matches_torch_for_every_option, .timeout = 30)
{
    replay_kind(FERRY_ADADELTA);
}

Test(optim_trajectory, adamax_matches_torch_for_every_option, .timeout = 30)
{
    replay_kind(FERRY_ADAMAX);
}

Test(optim_trajectory, rprop_matches_torch_for_every_option, .timeout = 30)
{
    replay_kind(FERRY_RPROP);
}

/* Cases selected by a predicate on the table. */
static int replay_where(bool (*pick)(const optim_case *), bool transposed)
{
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(OPTIM_DATA));
    int n = 0;
    for (size_t i = 0; i < OPTIM_CASE_COUNT; i++) {
        if (!pick(&optim_cases[i]))
            continue;
        optim_replay(&optim_cases[i], st, transposed);
        n++;
    }
    ferry_safetensors_free(st);
    return n;
}

static bool is_grouped(const optim_case *c) { return c->b_lr >= 0; }
static bool is_nograd(const optim_case *c) { return !c->uses_b; }
static bool is_f32(const optim_case *c) { return c->is_f32; }
static bool is_plain_f64(const optim_case *c) { return !c->is_f32 && c->uses_b && c->b_lr < 0; }

Test(optim_trajectory, groups_step_with_their_own_lr_when_added, .timeout = 30)
{
    cr_assert(replay_where(is_grouped, false) == 3);
}

Test(optim_trajectory, parameter_without_gradient_is_left_alone_when_stepping, .timeout = 30)
{
    cr_assert(replay_where(is_nograd, false) == 4);
}

Test(optim_trajectory, float32_matches_torch_when_parameters_are_float32, .timeout = 30)
{
    cr_assert(replay_where(is_f32, false) == 8);
}

Test(optim_trajectory, noncontiguous_parameter_matches_torch_when_stepped_in_place, .timeout = 60)
{
    cr_assert(replay_where(is_plain_f64, true) >= 40);
}

Test(optim_trajectory, table_covers_every_kind_when_generated, .timeout = 10)
{
    int seen[FERRY_OPTIM_KIND_COUNT] = {0};
    for (size_t i = 0; i < OPTIM_CASE_COUNT; i++)
        seen[optim_cases[i].kind]++;
    for (int k = 0; k < FERRY_OPTIM_KIND_COUNT; k++)
        cr_assert(seen[k] >= 5, "%s has %d cases", ferry_optim_kind_name((ferry_optim_kind)k), seen[k]);
    ferry_safetensors *st = ferry_assert_ptr(ferry_safetensors_load(OPTIM_DATA));
    cr_assert_str_eq(ferry_safetensors_metadata(st, "steps"), "12");
    cr_assert_eq(ferry_safetensors_count(st), OPTIM_CASE_COUNT + 3);
    ferry_safetensors_free(st);
}
