/* torch.nn building blocks for the examples: parameter initializers with torch's distributions
   (nn.Linear's kaiming_uniform_(a=sqrt(5)), which comes down to U(-1/sqrt(fan_in), 1/sqrt(fan_in));
   nn.Embedding's N(0, 1); nn.LSTMCell's U(-1/sqrt(hidden), 1/sqrt(hidden))) and the LSTM cell's
   forward written with ops, so autograd records it like any other expression and no hand-written
   backward is needed. */
#include "ferry/nn.h"

#include <math.h>

#include "core/error.h"
#include "ferry/autograd.h"
#include "ferry/ops.h"
#include "tensor/ops_internal.h"

/* Intermediate results of one forward, released together at the end. */
typedef struct {
    ferry_tensor *t[24];
    int n;
} scratch;

static ferry_tensor *keep(scratch *s, ferry_tensor *t)
{
    FERRY_ASSERT(s->n < (int)(sizeof s->t / sizeof s->t[0])); /* sized for one cell step */
    if (t)
        s->t[s->n++] = t;
    return t;
}

static void scratch_release(scratch *s)
{
    for (int i = 0; i < s->n; i++)
        ferry_tensor_release(s->t[i]);
    s->n = 0;
}

static ferry_status check_param_dtype(ferry_dtype dtype, const char *who)
{
    if (dtype == FERRY_FLOAT32 || dtype == FERRY_FLOAT64)
        return FERRY_OK;
    if (dtype == FERRY_FLOAT16 || dtype == FERRY_BFLOAT16)
        return ferry__fail(FERRY_ENOTSUP, "%s: ferry computes in float32 and float64, not %s",
                           who, ferry_dtype_name(dtype));
    return ferry__fail(FERRY_EINVAL, "%s: parameters need a floating dtype, not %s", who,
                       ferry_dtype_name(dtype));
}

/* A leaf requiring grad filled from U(-bound, bound), as torch's uniform_(-bound, bound). */
static ferry_tensor *uniform_param(int ndim, const int64_t *sizes, double bound,
                                   ferry_dtype dtype, ferry_generator *gen)
{
    ferry_tensor *t = ferry_rand(ndim, sizes, dtype, gen); /* [0, 1) */
    if (!t)
        return NULL;
    /* The tensor does not require grad yet, so these in-place ops are plain arithmetic. */
    if (ferry_mul_scalar_(t, 2.0 * bound) != FERRY_OK || ferry_add_scalar_(t, -bound) != FERRY_OK ||
        ferry_tensor_set_requires_grad(t, true) != FERRY_OK) {
        ferry_tensor_release(t);
        return NULL;
    }
    return t;
}

ferry_status ferry_linear_init(int64_t in_features, int64_t out_features, bool bias,
                               ferry_dtype dtype, ferry_generator *gen, ferry_tensor **weight,
                               ferry_tensor **bias_out)
{
    ferry_status rc;
    if (!weight || (bias && !bias_out))
        return ferry__fail(FERRY_EINVAL, "linear_init: NULL output");
    *weight = NULL;
    if (bias_out)
        *bias_out = NULL;
    if (in_features < 1 || out_features < 1)
        return ferry__fail(FERRY_EINVAL, "linear_init: in_features (%lld) and out_features "
                           "(%lld) must be positive", (long long)in_features,
                           (long long)out_features);
    if ((rc = check_param_dtype(dtype, "linear_init")) != FERRY_OK)
        return rc;
    /* kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound sqrt(3) * gain / sqrt(fan_in),
       which is 1 / sqrt(fan_in); torch gives the bias the same bound. */
    double bound = 1.0 / sqrt((double)in_features);
    const int64_t wsizes[2] = {out_features, in_features};
    ferry_tensor *w = uniform_param(2, wsizes, bound, dtype, gen), *b = NULL;
    if (!w)
        return ferry_last_status();
    if (bias && !(b = uniform_param(1, &out_features, bound, dtype, gen))) {
        ferry_tensor_release(w);
        return ferry_last_status();
    }
    *weight = w;
    if (bias_out)
        *bias_out = b;
    return FERRY_OK;
}

ferry_tensor *ferry_embedding_init(int64_t num_embeddings, int64_t embedding_dim,
                                   ferry_dtype dtype, ferry_generator *gen)
{
    if (num_embeddings < 1 || embedding_dim < 1)
        return ferry__fail_null(FERRY_EINVAL, "embedding_init: num_embeddings (%lld) and "
                                "embedding_dim (%lld) must be positive",
                                (long long)num_embeddings, (long long)embedding_dim);
    if (check_param_dtype(dtype, "embedding_init") != FERRY_OK)
        return NULL;
    const int64_t sizes[2] = {num_embeddings, embedding_dim};
    ferry_tensor *w = ferry_randn(2, sizes, dtype, gen);
    if (w && ferry_tensor_set_requires_grad(w, true) != FERRY_OK) {
        ferry_tensor_release(w);
        return NULL;
    }
    return w;
}

ferry_status ferry_lstm_cell_init(int64_t input_size, int64_t hidden_size, bool bias,
                                  ferry_dtype dtype, ferry_generator *gen, ferry_tensor **w_ih,
                                  ferry_tensor **w_hh, ferry_tensor **b_ih, ferry_tensor **b_hh)
{
    ferry_status rc;
    ferry_tensor *p[4] = {NULL, NULL, NULL, NULL};
    if (!w_ih || !w_hh || (bias && (!b_ih || !b_hh)))
        return ferry__fail(FERRY_EINVAL, "lstm_cell_init: NULL output");
    *w_ih = *w_hh = NULL;
    if (b_ih)
        *b_ih = NULL;
    if (b_hh)
        *b_hh = NULL;
    if (input_size < 1 || hidden_size < 1 || hidden_size > INT64_MAX / 4)
        return ferry__fail(FERRY_EINVAL, "lstm_cell_init: input_size (%lld) and hidden_size "
                           "(%lld) must be positive", (long long)input_size,
                           (long long)hidden_size);
    if ((rc = check_param_dtype(dtype, "lstm_cell_init")) != FERRY_OK)
        return rc;
    double bound = 1.0 / sqrt((double)hidden_size); /* torch's LSTMCell.reset_parameters */
    const int64_t gates = 4 * hidden_size;
    const int64_t sizes[2][2] = {{gates, input_size}, {gates, hidden_size}};
    for (int k = 0; k < (bias ? 4 : 2); k++) {
        p[k] = k < 2 ? uniform_param(2, sizes[k], bound, dtype, gen)
                     : uniform_param(1, &gates, bound, dtype, gen);
        if (!p[k]) {
            for (int j = 0; j < k; j++)
                ferry_tensor_release(p[j]);
            return ferry_last_status();
        }
    }
    *w_ih = p[0];
    *w_hh = p[1];
    if (bias) {
        *b_ih = p[2];
        *b_hh = p[3];
    }
    return FERRY_OK;
}

/* torch's checks in LSTMCell.forward, with its messages. */
static ferry_status check_cell_shapes(ferry_tensor *input, ferry_tensor *h, ferry_tensor *c,
                                      ferry_tensor *w_ih, ferry_tensor *w_hh, int64_t *hidden)
{
    int nd = ferry_tensor_ndim(input);
    if (nd != 1 && nd != 2)
        return ferry__fail(FERRY_EINVAL, "LSTMCell: Expected input to be 1-D or 2-D but "
                           "received %d-D tensor", nd);
    if (ferry_tensor_ndim(w_ih) != 2 || ferry_tensor_ndim(w_hh) != 2 ||
        ferry_tensor_size(w_hh, 0) != 4 * ferry_tensor_size(w_hh, 1) ||
        ferry_tensor_size(w_ih, 0) != ferry_tensor_size(w_hh, 0))
        return ferry__fail(FERRY_EINVAL, "LSTMCell: weights must be w_ih [4*hidden, input_size] "
                           "and w_hh [4*hidden, hidden]");
    *hidden = ferry_tensor_size(w_hh, 1);
    if (ferry_tensor_size(input, -1) != ferry_tensor_size(w_ih, 1))
        return ferry__fail(FERRY_EINVAL, "input has inconsistent input_size: got %lld expected "
                           "%lld", (long long)ferry_tensor_size(input, -1),
                           (long long)ferry_tensor_size(w_ih, 1));
    for (int k = 0; k < 2; k++) {
        ferry_tensor *hx = k ? c : h;
        if (!hx)
            continue;
        if (ferry_tensor_ndim(hx) != nd ||
            (nd == 2 && ferry_tensor_size(hx, 0) != ferry_tensor_size(input, 0)))
            return ferry__fail(FERRY_EINVAL, "Input batch size %lld doesn't match hidden%d batch "
                               "size %lld", (long long)(nd == 2 ? ferry_tensor_size(input, 0) : 1),
                               k, (long long)(ferry_tensor_ndim(hx) == 2 ? ferry_tensor_size(hx, 0)
                                                                          : 1));
        if (ferry_tensor_size(hx, -1) != *hidden)
            return ferry__fail(FERRY_EINVAL, "hidden%d has inconsistent hidden_size: got %lld, "
                               "expected %lld", k, (long long)ferry_tensor_size(hx, -1),
                               (long long)*hidden);
    }
    return FERRY_OK;
}

/* gates = input @ w_ih^T + b_ih + h @ w_hh^T + b_hh */
static ferry_tensor *lstm_gates(scratch *s, ferry_tensor *input, ferry_tensor *h,
                                ferry_tensor *w_ih, ferry_tensor *w_hh, ferry_tensor *b_ih,
                                ferry_tensor *b_hh)
{
    ferry_tensor *x = keep(s, ferry_linear(input, w_ih, b_ih));
    ferry_tensor *hh = x ? keep(s, ferry_linear(h, w_hh, b_hh)) : NULL;
    return hh ? keep(s, ferry_add(x, hh)) : NULL;
}

/* Splits the gates in torch's order (i, f, g, o) and computes the new cell and hidden state. */
static ferry_status lstm_update(scratch *s, ferry_tensor *gates, ferry_tensor *c, int64_t hidden,
                                ferry_tensor **h_out, ferry_tensor **c_out)
{
    int dim = ferry_tensor_ndim(gates) - 1;
    ferry_tensor *part[4];
    for (int k = 0; k < 4; k++)
        if (!(part[k] = keep(s, ferry_narrow(gates, dim, k * hidden, hidden))))
            return ferry_last_status();
    ferry_tensor *i = keep(s, ferry_sigmoid(part[0]));
    ferry_tensor *f = i ? keep(s, ferry_sigmoid(part[1])) : NULL;
    ferry_tensor *g = f ? keep(s, ferry_tanh(part[2])) : NULL;
    ferry_tensor *o = g ? keep(s, ferry_sigmoid(part[3])) : NULL;
    ferry_tensor *fc = o ? keep(s, ferry_mul(f, c)) : NULL;
    ferry_tensor *ig = fc ? keep(s, ferry_mul(i, g)) : NULL;
    ferry_tensor *c_new = ig ? ferry_add(fc, ig) : NULL;
    ferry_tensor *tc = c_new ? keep(s, ferry_tanh(c_new)) : NULL;
    ferry_tensor *h_new = tc ? ferry_mul(o, tc) : NULL;
    if (!h_new) {
        ferry_tensor_release(c_new);
        return ferry_last_status();
    }
    *h_out = h_new;
    *c_out = c_new;
    return FERRY_OK;
}

ferry_status ferry_lstm_cell(ferry_tensor *input, ferry_tensor *h, ferry_tensor *c,
                             ferry_tensor *w_ih, ferry_tensor *w_hh, ferry_tensor *b_ih,
                             ferry_tensor *b_hh, ferry_tensor **h_out, ferry_tensor **c_out)
{
    scratch s = {.n = 0};
    int64_t hidden = 0;
    ferry_status rc;
    if (!h_out || !c_out || !input || !w_ih || !w_hh)
        return ferry__fail(FERRY_EINVAL, "lstm_cell: NULL argument");
    *h_out = *c_out = NULL;
    if ((rc = check_cell_shapes(input, h, c, w_ih, w_hh, &hidden)) != FERRY_OK)
        return rc;
    /* torch's hx=None: zeros of the hidden shape, so b_hh and w_hh still join the graph. */
    int nd = ferry_tensor_ndim(input);
    const int64_t hsizes[2] = {nd == 2 ? ferry_tensor_size(input, 0) : hidden, hidden};
    const int64_t *hshape = nd == 2 ? hsizes : &hidden;
    ferry_dtype dtype = ferry_tensor_dtype(input);
    ferry_device dev = ferry_tensor_device(input);
    if ((!h && !(h = keep(&s, ferry__zeros_on(nd, hshape, dtype, dev)))) ||
        (!c && !(c = keep(&s, ferry__zeros_on(nd, hshape, dtype, dev))))) {
        scratch_release(&s);
        return ferry_last_status();
    }
    ferry_tensor *gates = lstm_gates(&s, input, h, w_ih, w_hh, b_ih, b_hh);
    rc = gates ? lstm_update(&s, gates, c, hidden, h_out, c_out) : ferry_last_status();
    scratch_release(&s);
    return rc;
}
