/* The update rules that scale each element by its own history: Adagrad (sum of squares),
   RMSprop (running mean of squares, centered, momentum), Adadelta (running means of squares
   and of updates) and Rprop (sign-driven step sizes), each as torch 1.13's
   _single_tensor_<name> computes it, one element at a time in torch's order of operations. */
#include "optim/optim_impl.h"

#include <math.h>

#include "core/error.h"

static void *slot(ferry__optim_state *s, int k, const ferry__optim_elems *e, double value)
{
    if (s->bufs[k] == NULL && (s->bufs[k] = ferry__optim_new_buf(e, value)) == NULL)
        return NULL;
    return ferry_tensor_data(s->bufs[k]);
}

static double decayed_grad(bool f32, const ferry_optim_options *o, double g, double p)
{
    if (o->maximize)
        g = -g;
    if (o->weight_decay != 0)
        g = ferry__axpy(f32, g, o->weight_decay, p); /* grad.add(param, alpha=weight_decay) */
    return g;
}

ferry_status ferry__optim_adagrad_init(const ferry_optim_options *o, ferry__optim_state *s,
                                       int ndim, const int64_t *sizes, ferry_dtype dtype,
                                       ferry_device device)
{
    /* As torch's constructor: step = tensor(0.), sum = full_like(p, initial_accumulator_value) */
    ferry__optim_elems e = {.dtype = dtype, .ndim = ndim, .sizes = sizes, .device = device};
    if (s->bufs[0] == NULL && (s->bufs[0] = ferry__optim_new_buf(&e, o->initial_accumulator_value)) == NULL)
        return ferry_last_status();
    s->has_state = true;
    s->step = 0;
    return FERRY_OK;
}

ferry_status ferry__optim_adagrad(const ferry_optim_options *o, ferry__optim_state *s,
                                  const ferry__optim_elems *e)
{
    bool f32 = e->dtype == FERRY_FLOAT32;
    void *sum = slot(s, 0, e, o->initial_accumulator_value);
    if (sum == NULL)
        return ferry_last_status();
    s->has_state = true;
    s->step = (double)(float)(s->step + 1);
    double clr = o->lr / (1 + (s->step - 1) * o->lr_decay);
    double eps = ferry__rd(f32, o->eps);
    for (int64_t i = 0; i < e->n; i++) {
        double p = ferry__ld(e->p, f32, i);
        double g = decayed_grad(f32, o, ferry__ld(e->g, f32, i), p);
        double si = ferry__addcmul(f32, ferry__ld(sum, f32, i), 1, g, g); /* addcmul_(g, g, value=1) */
        ferry__st(sum, f32, i, si);
        double std = ferry__rd(f32, ferry__rd(f32, sqrt(si)) + eps); /* state_sum.sqrt().add_(eps) */
        ferry__st(e->p, f32, i, ferry__addcdiv(f32, p, -clr, g, std));
    }
    return FERRY_OK;
}

ferry_status ferry__optim_rmsprop(const ferry_optim_options *o, ferry__optim_state *s,
                                  const ferry__optim_elems *e)
{
    bool f32 = e->dtype == FERRY_FLOAT32;
    bool has_momentum = o->momentum > 0;
    void *sq = slot(s, 0, e, 0.0);
    void *buf = sq && has_momentum ? slot(s, 1, e, 0.0) : NULL;
    void *ga = sq && o->centered ? slot(s, 2, e, 0.0) : NULL;
    if (sq == NULL || (has_momentum && buf == NULL) || (o->centered && ga == NULL))
        return ferry_last_status();
    s->has_state = true;
    s->step += 1;
    double ka = ferry__rd(f32, o->alpha), km = ferry__rd(f32, o->momentum);
    double eps = ferry__rd(f32, o->eps);
    for (int64_t i = 0; i < e->n; i++) {
        double p = ferry__ld(e->p, f32, i);
        double g = decayed_grad(f32, o, ferry__ld(e->g, f32, i), p);
        /* square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha) */
        double si = ferry__addcmul(f32, ferry__rd(f32, ferry__ld(sq, f32, i) * ka), 1 - o->alpha, g, g);
        ferry__st(sq, f32, i, si);
        double avg;
        if (o->centered) {
            /* grad_avg.mul_(alpha).add_(grad, alpha=1 - alpha);
               avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_() */
            double gi = ferry__axpy(f32, ferry__rd(f32, ferry__ld(ga, f32, i) * ka), 1 - o->alpha, g);
            ferry__st(ga, f32, i, gi);
            avg = ferry__rd(f32, sqrt(ferry__addcmul(f32, si, -1, gi, gi)));
        } else {
            avg = ferry__rd(f32, sqrt(si));
        }
        avg = ferry__rd(f32, avg + eps);
        if (has_momentum) {
            /* buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr) */
            double bi = ferry__addcdiv(f32, ferry__rd(f32, ferry__ld(buf, f32, i) * km), 1, g, avg);
            ferry__st(buf, f32, i, bi);
            p = ferry__axpy(f32, p, -o->lr, bi);
        } else {
            p = ferry__addcdiv(f32, p, -o->lr, g, avg);
        }
        ferry__st(e->p, f32, i, p);
    }
    return FERRY_OK;
}

ferry_status ferry__optim_adadelta(const ferry_optim_options *o, ferry__optim_state *s,
                                   const ferry__optim_elems *e)
{
    bool f32 = e->dtype == FERRY_FLOAT32;
    void *sq = slot(s, 0, e, 0.0), *acc = sq ? slot(s, 1, e, 0.0) : NULL;
    if (sq == NULL || acc == NULL)
        return ferry_last_status();
    s->has_state = true;
    s->step += 1;
    double kr = ferry__rd(f32, o->rho), eps = ferry__rd(f32, o->eps);
    for (int64_t i = 0; i < e->n; i++) {
        double p = ferry__ld(e->p, f32, i);
        double g = decayed_grad(f32, o, ferry__ld(e->g, f32, i), p);
        /* square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho) */
        double si = ferry__addcmul(f32, ferry__rd(f32, ferry__ld(sq, f32, i) * kr), 1 - o->rho, g, g);
        ferry__st(sq, f32, i, si);
        double std = ferry__rd(f32, sqrt(ferry__rd(f32, si + eps))); /* square_avg.add(eps).sqrt_() */
        /* delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad) */
        double ai = ferry__ld(acc, f32, i);
        double delta = ferry__rd(f32, sqrt(ferry__rd(f32, ai + eps)));
        delta = ferry__rd(f32, ferry__rd(f32, delta / std) * g);
        /* acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho) */
        ferry__st(acc, f32, i, ferry__addcmul(f32, ferry__rd(f32, ai * kr), 1 - o->rho, delta, delta));
        ferry__st(e->p, f32, i, ferry__axpy(f32, p, -o->lr, delta)); /* param.add_(delta, alpha=-lr) */
    }
    return FERRY_OK;
}

/* clamp_(lo, hi) as torch: NaN stays NaN. */
static double clamp(double x, double lo, double hi)
{
    if (isnan(x))
        return x;
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

ferry_status ferry__optim_rprop(const ferry_optim_options *o, ferry__optim_state *s,
                                const ferry__optim_elems *e)
{
    bool f32 = e->dtype == FERRY_FLOAT32;
    void *prev = slot(s, 0, e, 0.0), *size = prev ? slot(s, 1, e, o->lr) : NULL;
    if (prev == NULL || size == NULL)
        return ferry_last_status();
    s->has_state = true;
    s->step += 1;
    double eta_minus = ferry__rd(f32, o->etas[0]), eta_plus = ferry__rd(f32, o->etas[1]);
    double lo = ferry__rd(f32, o->step_sizes[0]), hi = ferry__rd(f32, o->step_sizes[1]);
    for (int64_t i = 0; i < e->n; i++) {
        double p = ferry__ld(e->p, f32, i), g = ferry__ld(e->g, f32, i);
        if (o->maximize)
            g = -g;
        /* sign = grad.mul(prev).sign(), then >0 -> etaplus, <0 -> etaminus, ==0 -> 1 */
        double prod = ferry__rd(f32, g * ferry__ld(prev, f32, i));
        bool is_minus = prod < 0;
        double factor = prod > 0 ? eta_plus : is_minus ? eta_minus : prod == 0 ? 1.0 : prod;
        /* step_size.mul_(sign).clamp_(step_size_min, step_size_max) */
        double si = clamp(ferry__rd(f32, ferry__ld(size, f32, i) * factor), lo, hi);
        ferry__st(size, f32, i, si);
        if (is_minus)
            g = 0; /* grad[sign.eq(etaminus)] = 0 */
        double sg = g > 0 ? 1.0 : g < 0 ? -1.0 : g == 0 ? 0.0 : g;
        ferry__st(e->p, f32, i, ferry__addcmul(f32, p, -1, sg, si)); /* addcmul_(grad.sign(), step_size, value=-1) */
        ferry__st(prev, f32, i, g);
    }
    return FERRY_OK;
}
