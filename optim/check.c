/* torch.optim's defaults and constructor checks for each kind, with torch's messages and its
   comparisons (SGD's `x < 0` lets NaN through where the others' `not 0 <= x` do not), the state
   keys each kind keeps, and Python's float formatting the messages and the state file use. */
#include "optim/optim_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

const char *ferry_optim_kind_name(ferry_optim_kind kind)
{
    static const char *const names[FERRY_OPTIM_KIND_COUNT] = {
        "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax", "Rprop"};
    return (unsigned)kind < FERRY_OPTIM_KIND_COUNT ? names[kind] : NULL;
}

void ferry_optim_options_init(ferry_optim_options *o, ferry_optim_kind kind)
{
    if (o == NULL)
        return;
    *o = (ferry_optim_options){
        .lr = NAN,
        .betas = {0.9, 0.999},
        .eps = 1e-8,
        .alpha = 0.99,
        .rho = 0.9,
        .etas = {0.5, 1.2},
        .step_sizes = {1e-6, 50.0},
    };
    switch (kind) {
    case FERRY_ADAM: o->lr = 1e-3; break;
    case FERRY_ADAMW: o->lr = 1e-3; o->weight_decay = 1e-2; break;
    case FERRY_ADAGRAD: o->lr = 1e-2; o->eps = 1e-10; break;
    case FERRY_RMSPROP: o->lr = 1e-2; break;
    case FERRY_ADADELTA: o->lr = 1.0; o->eps = 1e-6; break;
    case FERRY_ADAMAX: o->lr = 2e-3; break;
    case FERRY_RPROP: o->lr = 1e-2; break;
    default: break; /* SGD: lr stays NaN, "required" */
    }
}

const char *ferry__py_float(double v, char *buf, size_t cap)
{
    if (isnan(v)) {
        snprintf(buf, cap, "nan");
        return buf;
    }
    if (isinf(v)) {
        snprintf(buf, cap, v < 0 ? "-inf" : "inf");
        return buf;
    }
    if (v == 0) {
        snprintf(buf, cap, signbit(v) ? "-0.0" : "0.0");
        return buf;
    }
    /* The shortest digit string that reads back as v, as Python's repr picks it. */
    char e[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, v);
        if (strtod(e, NULL) == v)
            break;
    }
    char digits[24];
    size_t nd = 0;
    const char *s = e;
    bool neg = *s == '-';
    if (neg)
        s++;
    for (; *s != 'e'; s++)
        if (*s != '.')
            digits[nd++] = *s;
    digits[nd] = '\0';
    int exp10 = atoi(s + 1);
    int decpt = exp10 + 1;
    char out[64];
    size_t k = 0;
    if (neg)
        out[k++] = '-';
    if (decpt <= -4 || decpt > 16) {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            memcpy(out + k, digits + 1, nd - 1);
            k += nd - 1;
        }
        k += (size_t)snprintf(out + k, sizeof out - k, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (decpt <= 0) {
        out[k++] = '0';
        out[k++] = '.';
        for (int i = 0; i < -decpt; i++)
            out[k++] = '0';
        memcpy(out + k, digits, nd);
        k += nd;
    } else if ((size_t)decpt >= nd) {
        memcpy(out + k, digits, nd);
        k += nd;
        for (size_t i = nd; i < (size_t)decpt; i++)
            out[k++] = '0';
        out[k++] = '.';
        out[k++] = '0';
    } else {
        memcpy(out + k, digits, (size_t)decpt);
        k += (size_t)decpt;
        out[k++] = '.';
        memcpy(out + k, digits + decpt, nd - (size_t)decpt);
        k += nd - (size_t)decpt;
    }
    out[k] = '\0';
    snprintf(buf, cap, "%s", out);
    return buf;
}

/* "Invalid <what>: <value>" in torch's words. */
static ferry_status invalid(const char *what, double v)
{
    char b[40];
    return ferry__fail(FERRY_EINVAL, "Invalid %s: %s", what, ferry__py_float(v, b, sizeof b));
}

static bool nonneg(double v) { return 0.0 <= v; } /* torch's `0.0 <= v`: false for NaN */

static ferry_status check_betas(const ferry_optim_options *o)
{
    char b[40];
    for (int i = 0; i < 2; i++)
        if (!(0.0 <= o->betas[i] && o->betas[i] < 1.0))
            return ferry__fail(FERRY_EINVAL, "Invalid beta parameter at index %d: %s", i,
                               ferry__py_float(o->betas[i], b, sizeof b));
    return FERRY_OK;
}

static ferry_status check_sgd(const ferry_optim_options *o)
{
    if (o->lr < 0.0)
        return invalid("learning rate", o->lr);
    if (o->momentum < 0.0)
        return invalid("momentum value", o->momentum);
    if (o->weight_decay < 0.0)
        return invalid("weight_decay value", o->weight_decay);
    if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
        return ferry__fail(FERRY_EINVAL, "Nesterov momentum requires a momentum and zero dampening");
    /* torch.optim.SGD's lr=required, checked when the group is added. */
    if (isnan(o->lr))
        return ferry__fail(FERRY_EINVAL, "parameter group didn't specify a value of required "
                                         "optimization parameter lr");
    return FERRY_OK;
}

static ferry_status check_adam(const ferry_optim_options *o)
{
    if (!nonneg(o->lr))
        return invalid("learning rate", o->lr);
    if (!nonneg(o->eps))
        return invalid("epsilon value", o->eps);
    ferry_status rc = check_betas(o);
    if (rc != FERRY_OK)
        return rc;
    if (!nonneg(o->weight_decay))
        return invalid("weight_decay value", o->weight_decay);
    return FERRY_OK;
}

static ferry_status check_adagrad(const ferry_optim_options *o)
{
    if (!nonneg(o->lr))
        return invalid("learning rate", o->lr);
    if (!nonneg(o->lr_decay))
        return invalid("lr_decay value", o->lr_decay);
    if (!nonneg(o->weight_decay))
        return invalid("weight_decay value", o->weight_decay);
    if (!nonneg(o->initial_accumulator_value))
        return invalid("initial_accumulator_value value", o->initial_accumulator_value);
    if (!nonneg(o->eps))
        return invalid("epsilon value", o->eps);
    return FERRY_OK;
}

static ferry_status check_rmsprop(const ferry_optim_options *o)
{
    if (!nonneg(o->lr))
        return invalid("learning rate", o->lr);
    if (!nonneg(o->eps))
        return invalid("epsilon value", o->eps);
    if (!nonneg(o->momentum))
        return invalid("momentum value", o->momentum);
    if (!nonneg(o->weight_decay))
        return invalid("weight_decay value", o->weight_decay);
    if (!nonneg(o->alpha))
        return invalid("alpha value", o->alpha);
    return FERRY_OK;
}

static ferry_status check_adadelta(const ferry_optim_options *o)
{
    if (!nonneg(o->lr))
        return invalid("learning rate", o->lr);
    if (!(0.0 <= o->rho && o->rho <= 1.0))
        return invalid("rho value", o->rho);
    if (!nonneg(o->eps))
        return invalid("epsilon value", o->eps);
    if (!nonneg(o->weight_decay))
        return invalid("weight_decay value", o->weight_decay);
    return FERRY_OK;
}

static ferry_status check_rprop(const ferry_optim_options *o)
{
    if (!nonneg(o->lr))
        return invalid("learning rate", o->lr);
    if (!(0.0 < o->etas[0] && o->etas[0] < 1.0 && 1.0 < o->etas[1])) {
        char a[40], b[40];
        return ferry__fail(FERRY_EINVAL, "Invalid eta values: %s, %s",
                           ferry__py_float(o->etas[0], a, sizeof a),
                           ferry__py_float(o->etas[1], b, sizeof b));
    }
    return FERRY_OK;
}

ferry_status ferry__optim_check(ferry_optim_kind kind, const ferry_optim_options *o)
{
    if (o == NULL)
        return ferry__fail(FERRY_EINVAL, "optimizer options are NULL");
    switch (kind) {
    case FERRY_SGD: return check_sgd(o);
    case FERRY_ADAM:
    case FERRY_ADAMW:
    case FERRY_ADAMAX: return check_adam(o); /* Adamax checks the same, in the same order */
    case FERRY_ADAGRAD: return check_adagrad(o);
    case FERRY_RMSPROP: return check_rmsprop(o);
    case FERRY_ADADELTA: return check_adadelta(o);
    case FERRY_RPROP: return check_rprop(o);
    }
    return ferry__fail(FERRY_EINVAL, "unknown optimizer kind %d", (int)kind);
}

const char *const *ferry__optim_state_keys(ferry_optim_kind kind, size_t *n,
                                           ferry__step_kind *step_kind)
{
    static const char *const sgd[] = {"momentum_buffer"};
    static const char *const adam[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    static const char *const adagrad[] = {"sum"};
    static const char *const rmsprop[] = {"square_avg", "momentum_buffer", "grad_avg"};
    static const char *const adadelta[] = {"square_avg", "acc_delta"};
    static const char *const adamax[] = {"exp_avg", "exp_inf"};
    static const char *const rprop[] = {"prev", "step_size"};
    switch (kind) {
    case FERRY_SGD: *n = 1; *step_kind = FERRY__STEP_NONE; return sgd;
    case FERRY_ADAM:
    case FERRY_ADAMW: *n = 3; *step_kind = FERRY__STEP_TENSOR; return adam;
    case FERRY_ADAGRAD: *n = 1; *step_kind = FERRY__STEP_TENSOR; return adagrad;
    case FERRY_RMSPROP: *n = 3; *step_kind = FERRY__STEP_INT; return rmsprop;
    case FERRY_ADADELTA: *n = 2; *step_kind = FERRY__STEP_INT; return adadelta;
    case FERRY_ADAMAX: *n = 2; *step_kind = FERRY__STEP_TENSOR; return adamax;
    case FERRY_RPROP: *n = 2; *step_kind = FERRY__STEP_INT; return rprop;
    }
    *n = 0;
    *step_kind = FERRY__STEP_NONE;
    return NULL;
}
