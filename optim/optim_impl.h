/* The optimizer object shared by optim/'s files: groups, per-parameter state, the option checks
   (check.c), the update rules (rules_*.c) and the state file (state.c, state_json.c). */
#ifndef FERRY_OPTIM_IMPL_H
#define FERRY_OPTIM_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>

#include "ferry/optim.h"

/* The most state tensors a kind keeps per parameter (Adam: exp_avg, exp_avg_sq,
   max_exp_avg_sq; RMSprop: square_avg, momentum_buffer, grad_avg). */
#define FERRY__OPTIM_MAX_BUFS 3

/* How torch 1.13 keeps state['step']: not at all (SGD), as a float32 0-dim tensor (Adam, AdamW,
   Adagrad, Adamax) or as a Python int (RMSprop, Adadelta, Rprop). */
typedef enum { FERRY__STEP_NONE, FERRY__STEP_TENSOR, FERRY__STEP_INT } ferry__step_kind;

/* One parameter's state (torch's optimizer.state[p]). bufs[k] is the tensor under the kind's k-th
   key (ferry__optim_state_keys), NULL while absent; contiguous, the parameter's shape and dtype.
   has_state tells torch's "len(state) != 0" (SGD without momentum has state but no tensor). */
typedef struct {
    bool has_state;
    double step;
    ferry_tensor *bufs[FERRY__OPTIM_MAX_BUFS];
} ferry__optim_state;

typedef struct {
    ferry_optim_options o;
    size_t first, count; /* parameters [first, first + count) */
} ferry__optim_group;

struct ferry_optimizer {
    ferry_optim_kind kind;
    ferry_tensor **params; /* retained */
    ferry__optim_state *states;
    size_t n_params, cap_params;
    ferry__optim_group *groups;
    size_t n_groups, cap_groups;
};

/* What a rule updates: n elements of one parameter (contiguous, written in place) and its
   gradient (contiguous, read only), both of `dtype` (float32 or float64), with the shape the
   rule's new state tensors take. */
typedef struct {
    void *p;
    const void *g;
    int64_t n;
    ferry_dtype dtype;
    int ndim;
    const int64_t *sizes;
    ferry_device device; /* where the rule's new state tensors go: the parameter's */
} ferry__optim_elems;

typedef ferry_status (*ferry__optim_rule)(const ferry_optim_options *o, ferry__optim_state *s,
                                          const ferry__optim_elems *e);

/* The update rules (torch 1.13's _single_tensor_<name>), one per kind. Each creates the state it
   needs on first use, advances the step and updates p in place. FERRY_OK or FERRY_ENOMEM. */
ferry_status ferry__optim_sgd(const ferry_optim_options *o, ferry__optim_state *s,
                              const ferry__optim_elems *e);
ferry_status ferry__optim_adam(const ferry_optim_options *o, ferry__optim_state *s,
                               const ferry__optim_elems *e);
ferry_status ferry__optim_adamw(const ferry_optim_options *o, ferry__optim_state *s,
                                const ferry__optim_elems *e);
ferry_status ferry__optim_adamax(const ferry_optim_options *o, ferry__optim_state *s,
                                 const ferry__optim_elems *e);
ferry_status ferry__optim_adagrad(const ferry_optim_options *o, ferry__optim_state *s,
                                  const ferry__optim_elems *e);
ferry_status ferry__optim_rmsprop(const ferry_optim_options *o, ferry__optim_state *s,
                                  const ferry__optim_elems *e);
ferry_status ferry__optim_adadelta(const ferry_optim_options *o, ferry__optim_state *s,
                                   const ferry__optim_elems *e);
ferry_status ferry__optim_rprop(const ferry_optim_options *o, ferry__optim_state *s,
                                const ferry__optim_elems *e);

/* Adagrad's eager state: step 0 and sum full of initial_accumulator_value, for a parameter of
   the given shape and dtype, on the parameter's device. FERRY_OK or FERRY_ENOMEM. */
ferry_status ferry__optim_adagrad_init(const ferry_optim_options *o, ferry__optim_state *s,
                                       int ndim, const int64_t *sizes, ferry_dtype dtype,
                                       ferry_device device);

/* The state keys of a kind in slot order (static strings), how many, and how step is kept. */
const char *const *ferry__optim_state_keys(ferry_optim_kind kind, size_t *n,
                                           ferry__step_kind *step_kind);

/* Checks `o` for `kind` as torch's constructor does, recording torch's message. FERRY_OK or
   FERRY_EINVAL. */
ferry_status ferry__optim_check(ferry_optim_kind kind, const ferry_optim_options *o);

/* Formats v as Python's repr(float) does ("-1.0", "1e-08", "0.001", "inf", "nan") into buf
   (at least 32 bytes); returns buf. */
const char *ferry__py_float(double v, char *buf, size_t cap);

/* Releases a state's tensors and clears it. */
void ferry__optim_state_clear(ferry__optim_state *s);

/* A zero-filled (or `value`-filled) contiguous tensor for a state slot. NULL with FERRY_ENOMEM. */
ferry_tensor *ferry__optim_new_buf(const ferry__optim_elems *e, double value);

/* Element access and torch's elementwise arithmetic for float32 / float64 data. Values travel as
   double; with `f32` every result is rounded to float32 as torch's float kernels round it (for
   + - * / and sqrt, rounding the exact double result gives the float result), and scalars are
   rounded before use as torch casts a Python float to the tensor's type. torch's CPU kernels
   fuse the multiply-add of add_(x, alpha=a) and of addcmul_ (x86 builds with AVX2, which the
   reference data comes from); ferry__fma reproduces that, addcdiv_ has no fused step. */
static inline double ferry__ld(const void *data, bool f32, int64_t i)
{
    return f32 ? (double)((const float *)data)[i] : ((const double *)data)[i];
}

static inline void ferry__st(void *data, bool f32, int64_t i, double v)
{
    if (f32)
        ((float *)data)[i] = (float)v;
    else
        ((double *)data)[i] = v;
}

static inline double ferry__rd(bool f32, double v) { return f32 ? (double)(float)v : v; }

/* a * b + c rounded once (torch's add_(b, alpha=a) is fma(b, alpha, self)). */
static inline double ferry__fma(bool f32, double a, double b, double c)
{
    return f32 ? (double)fmaf((float)a, (float)b, (float)c) : fma(a, b, c);
}

/* self.add_(other, alpha=alpha) */
static inline double ferry__axpy(bool f32, double self, double alpha, double other)
{
    return ferry__fma(f32, other, ferry__rd(f32, alpha), self);
}

/* self.addcmul_(t1, t2, value=v): self + (v * t1) * t2, the last two fused. */
static inline double ferry__addcmul(bool f32, double self, double v, double t1, double t2)
{
    return ferry__fma(f32, ferry__rd(f32, ferry__rd(f32, v) * t1), t2, self);
}

/* self.addcdiv_(t1, t2, value=v): self + (v * t1) / t2. */
static inline double ferry__addcdiv(bool f32, double self, double v, double t1, double t2)
{
    double q = ferry__rd(f32, ferry__rd(f32, ferry__rd(f32, v) * t1) / t2);
    return ferry__rd(f32, self + q);
}

/* torch.maximum: NaN wins. */
static inline double ferry__maximum(double a, double b)
{
    if (isnan(a) || isnan(b))
        return NAN;
    return a > b ? a : b;
}

/* The param_groups JSON text of an optimizer (torch's keys and order), new memory the caller
   frees with ferry__free; NULL with FERRY_ENOMEM. */
char *ferry__optim_groups_json(const ferry_optimizer *opt);

/* One group as read back from param_groups: its options (starting from `kind`'s defaults, every
   key the kind reads required) and the saved parameter ids. */
typedef struct {
    ferry_optim_options o;
    int64_t *ids;
    size_t n_ids;
} ferry__optim_saved_group;

/* Parses param_groups text for `kind` into *groups (new array, *n entries); free with
   ferry__optim_saved_groups_free. FERRY_OK; FERRY_EPROTO (malformed text, a missing or
   mistyped key: the message says which); FERRY_ENOMEM. */
ferry_status ferry__optim_groups_parse(ferry_optim_kind kind, const char *text,
                                       ferry__optim_saved_group **groups, size_t *n);
void ferry__optim_saved_groups_free(ferry__optim_saved_group *groups, size_t n);

#endif
