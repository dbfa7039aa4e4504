/* The update rules built on running moments: SGD (momentum, dampening, nesterov), Adam and
   AdamW (bias-corrected first and second moments, amsgrad) and Adamax (infinity norm), each as
   torch 1.13's _single_tensor_<name> computes it, one element at a time in torch's order of
   operations. Comments give the torch line each statement mirrors. */
#include "optim/optim_impl.h"

#include <math.h>

#include "core/error.h"

/* The tensor in slot k, created (filled with `value`) when absent; its data, or NULL with
   FERRY_ENOMEM. *created tells whether it is new. */
static void *slot(ferry__optim_state *s, int k, const ferry__optim_elems *e, double value,
                  bool *created)
{
    if (created != NULL)
        *created = s->bufs[k] == NULL;
    if (s->bufs[k] == NULL && (s->bufs[k] = ferry__optim_new_buf(e, value)) == NULL)
        return NULL;
    return ferry_tensor_data(s->bufs[k]);
}

/* grad, or -grad with maximize, then grad.add(param, alpha=weight_decay). */
static double decayed_grad(bool f32, const ferry_optim_options *o, double g, double p)
{
    if (o->maximize)
        g = -g;
    if (o->weight_decay != 0)
        g = ferry__axpy(f32, g, o->weight_decay, p);
    return g;
}

ferry_status ferry__optim_sgd(const ferry_optim_options *o, ferry__optim_state *s,
                              const ferry__optim_elems *e)
{
    bool f32 = e->dtype == FERRY_FLOAT32, first = false;
    double mu = o->momentum;
    void *buf = NULL;
    if (mu != 0 && (buf = slot(s, 0, e, 0.0, &first)) == NULL)
        return ferry_last_status();
    s->has_state = true;
    for (int64_t i = 0; i < e->n; i++) {
        double p = ferry__ld(e->p, f32, i);
        double d = decayed_grad(f32, o, ferry__ld(e->g, f32, i), p);
        if (mu != 0) {
            double b = first ? d /* buf = torch.clone(d_p) */
                             : ferry__axpy(f32, ferry__rd(f32, ferry__ld(buf, f32, i) * ferry__rd(f32, mu)),
                                           1 - o->dampening, d);
            ferry__st(buf, f32, i, b);
            d = o->nesterov ? ferry__axpy(f32, d, mu, b) : b;
        }
        ferry__st(e->p, f32, i, ferry__axpy(f32, p, -o->lr, d)); /* param.add_(d_p, alpha=-lr) */
    }
    return FERRY_OK;
}

/* Adam and AdamW share everything but where weight decay enters. */
static ferry_status adam_like(const ferry_optim_options *o, ferry__optim_state *s,
                              const ferry__optim_elems *e, bool decoupled)
{
    bool f32 = e->dtype == FERRY_FLOAT32;
    void *m = slot(s, 0, e, 0.0, NULL), *v = m ? slot(s, 1, e, 0.0, NULL) : NULL;
    void *vmax = v && o->amsgrad ? slot(s, 2, e, 0.0, NULL) : NULL;
    if (m == NULL || v == NULL || (o->amsgrad && vmax == NULL))
        return ferry_last_status();
    s->has_state = true;
    /* step_t += 1 on a float32 tensor, then step = step_t.item() */
    s->step = (double)(float)(s->step + 1);
    double b1 = o->betas[0], b2 = o->betas[1];
    double bc1 = 1 - pow(b1, s->step), bc2 = 1 - pow(b2, s->step);
    double step_size = o->lr / bc1, bc2_sqrt = ferry__rd(f32, sqrt(bc2));
    double shrink = ferry__rd(f32, 1 - o->lr * o->weight_decay);
    double k1 = ferry__rd(f32, b1), k2 = ferry__rd(f32, b2), eps = ferry__rd(f32, o->eps);
    for (int64_t i = 0; i < e->n; i++) {
        double p = ferry__ld(e->p, f32, i), g = ferry__ld(e->g, f32, i);
        if (decoupled) {
            if (o->maximize)
                g = -g;
            p = ferry__rd(f32, p * shrink); /* param.mul_(1 - lr * weight_decay) */
        } else {
            g = decayed_grad(f32, o, g, p);
        }
        /* exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1) */
        double mi = ferry__axpy(f32, ferry__rd(f32, ferry__ld(m, f32, i) * k1), 1 - b1, g);
        /* exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2) */
        double vi = ferry__addcmul(f32, ferry__rd(f32, ferry__ld(v, f32, i) * k2), 1 - b2, g, g);
        ferry__st(m, f32, i, mi);
        ferry__st(v, f32, i, vi);
        double root = vi;
        if (o->amsgrad) {
            root = ferry__maximum(ferry__ld(vmax, f32, i), vi);
            ferry__st(vmax, f32, i, root);
        }
        /* denom = (sq.sqrt() / bias_correction2_sqrt).add_(eps) */
        double denom = ferry__rd(f32, ferry__rd(f32, ferry__rd(f32, sqrt(root)) / bc2_sqrt) + eps);
        ferry__st(e->p, f32, i, ferry__addcdiv(f32, p, -step_size, mi, denom));
    }
    return FERRY_OK;
}

ferry_status ferry__optim_adam(const ferry_optim_options *o, ferry__optim_state *s,
                               const ferry__optim_elems *e)
{
    return adam_like(o, s, e, false);
}

ferry_status ferry__optim_adamw(const ferry_optim_options *o, ferry__optim_state *s,
                                const ferry__optim_elems *e)
{
    return adam_like(o, s, e, true);
}

ferry_status ferry__optim_adamax(const ferry_optim_options *o, ferry__optim_state *s,
                                 const ferry__optim_elems *e)
{
    bool f32 = e->dtype == FERRY_FLOAT32;
    void *m = slot(s, 0, e, 0.0, NULL), *u = m ? slot(s, 1, e, 0.0, NULL) : NULL;
    if (m == NULL || u == NULL)
        return ferry_last_status();
    s->has_state = true;
    s->step = (double)(float)(s->step + 1);
    double b1 = o->betas[0];
    double k1 = ferry__rd(f32, b1), k2 = ferry__rd(f32, o->betas[1]), eps = ferry__rd(f32, o->eps);
    double clr = o->lr / (1 - pow(b1, s->step));
    for (int64_t i = 0; i < e->n; i++) {
        double p = ferry__ld(e->p, f32, i);
        double g = decayed_grad(f32, o, ferry__ld(e->g, f32, i), p);
        double mi = ferry__axpy(f32, ferry__rd(f32, ferry__ld(m, f32, i) * k1), 1 - b1, g);
        /* amax(cat([exp_inf.mul_(beta2), grad.abs().add_(eps)])) */
        double ui = ferry__maximum(ferry__rd(f32, ferry__ld(u, f32, i) * k2),
                                   ferry__rd(f32, fabs(g) + eps));
        ferry__st(m, f32, i, mi);
        ferry__st(u, f32, i, ui);
        ferry__st(e->p, f32, i, ferry__addcdiv(f32, p, -clr, mi, ui));
    }
    return FERRY_OK;
}
