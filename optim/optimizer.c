/* The local optimizer object: parameter groups with their own options, per-parameter state, and
   step / step_grads / zero_grad, which hand each parameter with a gradient to its kind's rule
   (rules_momentum.c, rules_adaptive.c). Parameters are updated through their own memory, so the
   caller's tensors (a model's weights) change in place and no graph is recorded. */
#include "optim/optim_impl.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/autograd.h"
#include "ferry/device.h"
#include "ferry/ops.h"
#include "tensor/device.h"
#include "tensor/ops_internal.h"

static const ferry__optim_rule rules[FERRY_OPTIM_KIND_COUNT] = {
    [FERRY_SGD] = ferry__optim_sgd,         [FERRY_ADAM] = ferry__optim_adam,
    [FERRY_ADAMW] = ferry__optim_adamw,     [FERRY_ADAGRAD] = ferry__optim_adagrad,
    [FERRY_RMSPROP] = ferry__optim_rmsprop, [FERRY_ADADELTA] = ferry__optim_adadelta,
    [FERRY_ADAMAX] = ferry__optim_adamax,   [FERRY_RPROP] = ferry__optim_rprop,
};

ferry_tensor *ferry__optim_new_buf(const ferry__optim_elems *e, double value)
{
    return ferry__full_on(e->ndim, e->sizes, value, e->dtype, e->device);
}

void ferry__optim_state_clear(ferry__optim_state *s)
{
    for (int k = 0; k < FERRY__OPTIM_MAX_BUFS; k++)
        ferry_tensor_release(s->bufs[k]);
    memset(s, 0, sizeof *s);
}

/* A parameter the optimizer can take: a float32/float64 leaf, not already held, not repeated. */
static ferry_status check_param(const ferry_optimizer *opt, ferry_tensor *const *params, size_t j)
{
    ferry_tensor *p = params[j];
    if (p == NULL)
        return ferry__fail(FERRY_EINVAL, "optimizer parameter %zu is NULL", j);
    if (!ferry_tensor_is_leaf(p))
        return ferry__fail(FERRY_EINVAL, "can't optimize a non-leaf Tensor");
    ferry_dtype dt = ferry_tensor_dtype(p);
    if (dt != FERRY_FLOAT32 && dt != FERRY_FLOAT64)
        return ferry__fail(FERRY_ENOTSUP, "optimizers update float32 and float64 tensors, not %s",
                           ferry_dtype_name(dt));
    for (size_t i = 0; i < j; i++)
        if (params[i] == p)
            return ferry__fail(FERRY_EINVAL, "optimizer parameter %zu appears twice in one "
                                             "parameter group", j);
    for (size_t i = 0; opt != NULL && i < opt->n_params; i++)
        if (opt->params[i] == p)
            return ferry__fail(FERRY_EINVAL, "some parameters appear in more than one parameter group");
    return FERRY_OK;
}

static ferry_status add_group(ferry_optimizer *opt, const ferry_optim_options *o,
                              ferry_tensor **params, size_t n)
{
    if (o == NULL || (params == NULL && n > 0))
        return ferry__fail(FERRY_EINVAL, "optimizer options or parameters are NULL");
    if (n == 0)
        return ferry__fail(FERRY_EINVAL, "optimizer got an empty parameter list");
    ferry_status rc = ferry__optim_check(opt->kind, o);
    for (size_t j = 0; rc == FERRY_OK && j < n; j++)
        rc = check_param(opt, params, j);
    if (rc != FERRY_OK)
        return rc;
    if (opt->n_params + n > opt->cap_params) {
        size_t cap = (opt->n_params + n) * 2;
        ferry_tensor **np = ferry__realloc(opt->params, cap * sizeof *np);
        if (np == NULL)
            return ferry__fail(FERRY_ENOMEM, "no memory for optimizer parameters");
        opt->params = np;
        ferry__optim_state *ns = ferry__realloc(opt->states, cap * sizeof *ns);
        if (ns == NULL)
            return ferry__fail(FERRY_ENOMEM, "no memory for optimizer state");
        opt->states = ns;
        opt->cap_params = cap;
    }
    if (opt->n_groups == opt->cap_groups) {
        size_t cap = opt->cap_groups ? opt->cap_groups * 2 : 2;
        ferry__optim_group *ng = ferry__realloc(opt->groups, cap * sizeof *ng);
        if (ng == NULL)
            return ferry__fail(FERRY_ENOMEM, "no memory for optimizer parameter groups");
        opt->groups = ng;
        opt->cap_groups = cap;
    }
    size_t first = opt->n_params;
    memset(opt->states + first, 0, n * sizeof *opt->states);
    if (opt->kind == FERRY_ADAGRAD) {
        for (size_t j = 0; j < n; j++) {
            ferry_tensor *p = params[j];
            rc = ferry__optim_adagrad_init(o, &opt->states[first + j], ferry_tensor_ndim(p),
                                           ferry_tensor_sizes(p), ferry_tensor_dtype(p),
                                           ferry_tensor_device(p));
            if (rc != FERRY_OK) {
                for (size_t k = 0; k <= j; k++)
                    ferry__optim_state_clear(&opt->states[first + k]);
                return rc;
            }
        }
    }
    for (size_t j = 0; j < n; j++)
        opt->params[first + j] = ferry_tensor_retain(params[j]);
    opt->groups[opt->n_groups++] = (ferry__optim_group){.o = *o, .first = first, .count = n};
    opt->n_params += n;
    return FERRY_OK;
}

ferry_optimizer *ferry_optimizer_new(ferry_optim_kind kind, const ferry_optim_options *o,
                                     ferry_tensor **params, size_t n)
{
    if (ferry_optim_kind_name(kind) == NULL)
        return ferry__fail_null(FERRY_EINVAL, "unknown optimizer kind %d", (int)kind);
    ferry_optimizer *opt = ferry__calloc(1, sizeof *opt);
    if (opt == NULL)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for an optimizer");
    opt->kind = kind;
    if (add_group(opt, o, params, n) != FERRY_OK) {
        ferry_optimizer_free(opt);
        return NULL;
    }
    return opt;
}

ferry_status ferry_optimizer_add_param_group(ferry_optimizer *opt, const ferry_optim_options *o,
                                             ferry_tensor **params, size_t n)
{
    if (opt == NULL)
        return ferry__fail(FERRY_EINVAL, "optimizer is NULL");
    return add_group(opt, o, params, n);
}

size_t ferry_optimizer_param_count(const ferry_optimizer *opt)
{
    return opt ? opt->n_params : 0;
}

size_t ferry_optimizer_group_count(const ferry_optimizer *opt)
{
    return opt ? opt->n_groups : 0;
}

void ferry_optimizer_free(ferry_optimizer *opt)
{
    if (opt == NULL)
        return;
    for (size_t i = 0; i < opt->n_params; i++) {
        ferry__optim_state_clear(&opt->states[i]);
        ferry_tensor_release(opt->params[i]);
    }
    ferry__free(opt->params);
    ferry__free(opt->states);
    ferry__free(opt->groups);
    ferry__free(opt);
}

/* A gradient must match its parameter's shape and dtype (torch's in-place update would refuse
   anything else). */
static ferry_status check_grad(const ferry_optimizer *opt, size_t i, const ferry_tensor *g)
{
    const ferry_tensor *p = opt->params[i];
    int nd = ferry_tensor_ndim(p);
    if (ferry_tensor_ndim(g) != nd ||
        memcmp(ferry_tensor_sizes(g), ferry_tensor_sizes(p), (size_t)nd * sizeof(int64_t)) != 0)
        return ferry__fail(FERRY_EINVAL, "the gradient of optimizer parameter %zu has another "
                                         "shape than the parameter", i);
    ferry_device gd = ferry_tensor_device(g), pd = ferry_tensor_device(p);
    if (gd.type != pd.type || (gd.type != FERRY_CPU && gd.index != pd.index)) {
        char a[32], b[32];
        ferry_device_format(gd, a, sizeof a);
        ferry_device_format(pd, b, sizeof b);
        return ferry__fail(FERRY_EINVAL, "the gradient of optimizer parameter %zu is on %s, the "
                                         "parameter on %s", i, a, b);
    }
    if (ferry_tensor_dtype(g) != ferry_tensor_dtype(p))
        return ferry__fail(FERRY_EINVAL, "the gradient of optimizer parameter %zu is %s, the "
                                         "parameter %s", i, ferry_dtype_name(ferry_tensor_dtype(g)),
                           ferry_dtype_name(ferry_tensor_dtype(p)));
    return FERRY_OK;
}

static const ferry_optim_options *options_of(const ferry_optimizer *opt, size_t i)
{
    for (size_t k = 0; k < opt->n_groups; k++)
        if (i < opt->groups[k].first + opt->groups[k].count)
            return &opt->groups[k].o;
    return &opt->groups[opt->n_groups - 1].o;
}

/* Runs the rule on p (parameter i, or its host copy) with gradient grad and state s, all in
   memory the host can read. A non-contiguous parameter (or gradient) is updated through a
   contiguous copy written back afterwards. */
static ferry_status run_rule(ferry_optimizer *opt, size_t i, ferry__optim_state *s,
                             ferry_tensor *p, ferry_tensor *grad)
{
    ferry_tensor *g = ferry_tensor_contiguous(grad);
    ferry_tensor *work = g == NULL ? NULL
                         : ferry_tensor_is_contiguous(p) ? ferry_tensor_retain(p)
                                                         : ferry_tensor_clone_data(p);
    ferry_status rc = FERRY_ENOMEM;
    if (work != NULL) {
        ferry__optim_elems e = {
            .p = ferry_tensor_data(work),
            .g = ferry_tensor_data(g),
            .n = ferry_tensor_numel(work),
            .dtype = ferry_tensor_dtype(work),
            .ndim = ferry_tensor_ndim(work),
            .sizes = ferry_tensor_sizes(work),
            .device = ferry_tensor_device(work),
        };
        rc = rules[opt->kind](options_of(opt, i), s, &e);
        if (rc == FERRY_OK && work != p)
            rc = ferry_tensor_copy_(p, work);
    } else {
        rc = ferry_last_status();
    }
    ferry_tensor_release(work);
    ferry_tensor_release(g);
    return rc;
}

/* A parameter on a device the host cannot read (a real GPU) takes a staged step: parameter,
   gradient and state come to host memory, the rule runs there, and the results go back. The
   rules stay one element loop in torch's order for every device (docs/architecture.md). */
static ferry_status update_staged(ferry_optimizer *opt, size_t i, ferry_tensor *grad)
{
    ferry_tensor *p = opt->params[i];
    ferry__optim_state hs = opt->states[i], back = {.has_state = false};
    ferry_tensor *hp = ferry_tensor_to(p, FERRY_DEVICE_CPU);
    ferry_tensor *hg = hp ? ferry_tensor_to(grad, FERRY_DEVICE_CPU) : NULL;
    ferry_status rc = hg ? FERRY_OK : ferry_last_status();
    for (int k = 0; k < FERRY__OPTIM_MAX_BUFS; k++) {
        hs.bufs[k] = rc == FERRY_OK && opt->states[i].bufs[k]
                         ? ferry_tensor_to(opt->states[i].bufs[k], FERRY_DEVICE_CPU)
                         : NULL;
        if (rc == FERRY_OK && opt->states[i].bufs[k] && !hs.bufs[k])
            rc = ferry_last_status();
    }
    if (rc == FERRY_OK)
        rc = run_rule(opt, i, &hs, hp, hg);
    for (int k = 0; rc == FERRY_OK && k < FERRY__OPTIM_MAX_BUFS; k++)
        if (hs.bufs[k] && (back.bufs[k] = ferry_tensor_to(hs.bufs[k], p->device)) == NULL)
            rc = ferry_last_status();
    if (rc == FERRY_OK)
        rc = ferry__stage_back(p, hp);
    if (rc == FERRY_OK) { /* commit: the device state takes the new values */
        for (int k = 0; k < FERRY__OPTIM_MAX_BUFS; k++) {
            ferry_tensor_release(opt->states[i].bufs[k]);
            opt->states[i].bufs[k] = back.bufs[k];
            back.bufs[k] = NULL;
        }
        opt->states[i].step = hs.step;
        opt->states[i].has_state = hs.has_state;
    }
    for (int k = 0; k < FERRY__OPTIM_MAX_BUFS; k++) {
        ferry_tensor_release(hs.bufs[k]);
        ferry_tensor_release(back.bufs[k]);
    }
    ferry_tensor_release(hp);
    ferry_tensor_release(hg);
    return rc;
}

static ferry_status update_one(ferry_optimizer *opt, size_t i, ferry_tensor *grad)
{
    ferry_tensor *p = opt->params[i];
    ferry_tensor *both[2] = {p, grad};
    if (ferry__needs_staging(2, both))
        return update_staged(opt, i, grad);
    ferry_device dev = ferry_tensor_device(p);
    if (dev.type != FERRY_CPU && ferry__device_sync(dev.index) != FERRY_OK)
        return ferry_last_status();
    return run_rule(opt, i, &opt->states[i], p, grad);
}

/* The common step: grads[i] NULL skips parameter i. Every gradient is checked first, so a bad
   one changes nothing. */
static ferry_status step_with(ferry_optimizer *opt, ferry_tensor *const *grads)
{
    for (size_t i = 0; i < opt->n_params; i++) {
        ferry_status rc = grads[i] ? check_grad(opt, i, grads[i]) : FERRY_OK;
        if (rc != FERRY_OK)
            return rc;
    }
    for (size_t i = 0; i < opt->n_params; i++) {
        ferry_status rc = grads[i] ? update_one(opt, i, grads[i]) : FERRY_OK;
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

ferry_status ferry_optimizer_step_grads(ferry_optimizer *opt, ferry_tensor *const *grads, size_t n)
{
    if (opt == NULL)
        return ferry__fail(FERRY_EINVAL, "optimizer is NULL");
    if (n != opt->n_params)
        return ferry__fail(FERRY_EINVAL, "the gradients passed in does not equal to the size of "
                                         "the parameters!Params length: %zu. Gradients length: %zu",
                           opt->n_params, n);
    if (grads == NULL)
        return ferry__fail(FERRY_EINVAL, "the gradient list is NULL");
    return step_with(opt, grads);
}

ferry_status ferry_optimizer_step(ferry_optimizer *opt)
{
    if (opt == NULL)
        return ferry__fail(FERRY_EINVAL, "optimizer is NULL");
    ferry_tensor **grads = ferry__calloc(opt->n_params, sizeof *grads);
    if (grads == NULL)
        return ferry__fail(FERRY_ENOMEM, "no memory for the gradient list");
    for (size_t i = 0; i < opt->n_params; i++)
        grads[i] = ferry_tensor_grad(opt->params[i]);
    ferry_status rc = step_with(opt, grads);
    for (size_t i = 0; i < opt->n_params; i++)
        ferry_tensor_release(grads[i]);
    ferry__free(grads);
    return rc;
}

ferry_status ferry_optimizer_zero_grad(ferry_optimizer *opt)
{
    if (opt == NULL)
        return ferry__fail(FERRY_EINVAL, "optimizer is NULL");
    ferry_status rc = FERRY_OK;
    ferry_no_grad_enter();
    for (size_t i = 0; i < opt->n_params && rc == FERRY_OK; i++) {
        ferry_tensor *g = ferry_tensor_grad(opt->params[i]);
        if (g == NULL)
            continue;
        /* torch: a grad with history is detached, a leaf one stops requiring grad; then zero_() */
        rc = ferry_tensor_set_requires_grad(g, false);
        if (rc != FERRY_OK && ferry_tensor_is_leaf(g)) {
            ferry_tensor_release(g);
            break;
        }
        if (!ferry_tensor_is_leaf(g)) {
            ferry_tensor *d = ferry_detach(g);
            rc = d ? ferry_tensor_set_grad(opt->params[i], d) : ferry_last_status();
            ferry_tensor_release(g);
            g = d;
        }
        if (rc == FERRY_OK)
            rc = ferry_zero_(g);
        ferry_tensor_release(g);
    }
    ferry_no_grad_exit();
    return rc;
}
