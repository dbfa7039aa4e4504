/* The torch.nn.functional builtins over ferry's nn ops: linear, embedding, mse_loss, nll_loss
   and cross_entropy, with torch's full parameter lists. Parameters ferry's ops have no form of
   (a class weight, max_norm, label smoothing) are taken at their default value only, and any
   other value is refused naming the parameter; the legacy size_average and reduce must be None,
   as torch would warn for anything else. */
#include <string.h>

#include "core/error.h"
#include "ferry/ops.h"
#include "rpc/builtins_impl.h"

static bool is_none(const ferry_value *v)
{
    return !v || ferry_value_kind(v) == FERRY_VALUE_NONE;
}

static ferry_status none_only(const char *fn, const char *const *names, const ferry_value **v,
                              int from, int to)
{
    for (int i = from; i < to; i++)
        if (names[i] && !is_none(v[i]))
            return ferry__fail(FERRY_EINVAL, "%s(): ferry takes %s=None only, not a %s", fn,
                               names[i], ferry__bi_type(v[i]));
    return FERRY_OK;
}

static ferry_status reduction_arg(const char *fn, const ferry_value *v, ferry_reduction *out)
{
    *out = FERRY_REDUCTION_MEAN;
    if (!v)
        return FERRY_OK;
    const char *s = ferry_value_as_string(v);
    if (!s)
        return ferry__fail(FERRY_EINVAL, "%s(): argument 'reduction' must be str, not %s", fn,
                           ferry__bi_type(v));
    if (!strcmp(s, "mean") || !strcmp(s, "sum") || !strcmp(s, "none")) {
        *out = !strcmp(s, "mean") ? FERRY_REDUCTION_MEAN
               : !strcmp(s, "sum") ? FERRY_REDUCTION_SUM
                                   : FERRY_REDUCTION_NONE;
        return FERRY_OK;
    }
    return ferry__fail(FERRY_EINVAL, "%s(): %s is not a valid value for reduction", fn, s);
}

static ferry_status two_tensors(const ferry__bi_sig *sig, const ferry_value **v,
                                ferry_tensor **a, ferry_tensor **b)
{
    ferry_status rc = ferry__bi_tensor(sig->fn, sig->names[0], v[0], a);
    return rc != FERRY_OK ? rc : ferry__bi_tensor(sig->fn, sig->names[1], v[1], b);
}

static ferry_status linear_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "weight", "bias", NULL};
    ferry__bi_sig sig = {"torch.nn.functional.linear", names, 3, 2};
    const ferry_value *v[3];
    ferry_tensor *x = NULL, *w = NULL, *bias = NULL;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = two_tensors(&sig, v, &x, &w);
    if (rc == FERRY_OK && !is_none(v[2]))
        rc = ferry__bi_tensor(sig.fn, "bias", v[2], &bias);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(ferry_linear(x, w, bias), result);
}

/* F.embedding(input, weight, ...): rows of weight at the int64 indices `input`. max_norm
   renormalizes weight in place, which a call on a sent copy cannot mean; padding_idx,
   norm_type, scale_grad_by_freq and sparse change only gradients, so any value is taken. */
static ferry_status embedding_fn(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "weight", "padding_idx", "max_norm",
                                        "norm_type", "scale_grad_by_freq", "sparse", NULL};
    ferry__bi_sig sig = {"torch.nn.functional.embedding", names, 7, 2};
    const ferry_value *v[7];
    ferry_tensor *idx = NULL, *w = NULL;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = two_tensors(&sig, v, &idx, &w);
    if (rc == FERRY_OK)
        rc = none_only(sig.fn, names, v, 3, 4);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(ferry_embedding(w, idx), result);
}

static ferry_status mse_loss_fn(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    static const char *const names[] = {"input", "target", "size_average", "reduce",
                                        "reduction", NULL};
    ferry__bi_sig sig = {"torch.nn.functional.mse_loss", names, 5, 2};
    const ferry_value *v[5];
    ferry_tensor *x = NULL, *y = NULL;
    ferry_reduction red;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = two_tensors(&sig, v, &x, &y);
    if (rc == FERRY_OK)
        rc = none_only(sig.fn, names, v, 2, 4);
    if (rc == FERRY_OK)
        rc = reduction_arg(sig.fn, v[4], &red);
    return rc != FERRY_OK ? rc : ferry__bi_tensor_result(ferry_mse_loss(x, y, red), result);
}

/* nll_loss and cross_entropy (user non-NULL; it also has label_smoothing). */
static ferry_status nll_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    bool is_ce = user != NULL;
    static const char *const names[] = {"input", "target", "weight", "size_average",
                                        "ignore_index", "reduce", "reduction", "label_smoothing",
                                        NULL};
    static const char *const nll_names[] = {"input", "target", "weight", "size_average",
                                            "ignore_index", "reduce", "reduction", NULL};
    ferry__bi_sig sig = {is_ce ? "torch.nn.functional.cross_entropy"
                               : "torch.nn.functional.nll_loss",
                         is_ce ? names : nll_names, is_ce ? 8 : 7, 2};
    const ferry_value *v[8] = {0};
    ferry_tensor *x = NULL, *y = NULL;
    ferry_reduction red;
    int64_t ignore = -100;
    double smoothing = 0;
    ferry_status rc = ferry__bi_bind(&sig, args, kwargs, v);
    if (rc == FERRY_OK)
        rc = two_tensors(&sig, v, &x, &y);
    if (rc == FERRY_OK)
        rc = none_only(sig.fn, names, v, 2, 4);
    if (rc == FERRY_OK)
        rc = none_only(sig.fn, names, v, 5, 6);
    if (rc == FERRY_OK)
        rc = ferry__bi_int(sig.fn, "ignore_index", v[4], -100, &ignore);
    if (rc == FERRY_OK && ignore != -100)
        rc = ferry__fail(FERRY_EINVAL, "%s(): ferry takes ignore_index=-100 only, not %lld",
                         sig.fn, (long long)ignore);
    if (rc == FERRY_OK)
        rc = reduction_arg(sig.fn, v[6], &red);
    if (rc == FERRY_OK && v[7])
        rc = ferry__bi_number(sig.fn, "label_smoothing", v[7], &smoothing);
    if (rc == FERRY_OK && smoothing != 0)
        rc = ferry__fail(FERRY_EINVAL, "%s(): ferry takes label_smoothing=0.0 only, not %g",
                         sig.fn, smoothing);
    if (rc != FERRY_OK)
        return rc;
    return ferry__bi_tensor_result(is_ce ? ferry_cross_entropy(x, y, red)
                                         : ferry_nll_loss(x, y, red),
                                   result);
}

const ferry__builtin ferry__builtins_nn[] = {
    {{"torch.nn.functional.linear", "torch.nn.functional.linear(input, weight, bias=None)",
      "input @ weight^T + bias"},
     linear_fn, NULL, false},
    {{"torch.nn.functional.embedding",
      "torch.nn.functional.embedding(input, weight, padding_idx=None, max_norm=None, "
      "norm_type=2.0, scale_grad_by_freq=False, sparse=False)",
      "the rows of weight at the int64 indices input"},
     embedding_fn, NULL, false},
    {{"torch.nn.functional.mse_loss",
      "torch.nn.functional.mse_loss(input, target, size_average=None, reduce=None, "
      "reduction='mean')",
      "mean (or sum, or each) of (input - target) ** 2"},
     mse_loss_fn, NULL, false},
    {{"torch.nn.functional.nll_loss",
      "torch.nn.functional.nll_loss(input, target, weight=None, size_average=None, "
      "ignore_index=-100, reduce=None, reduction='mean')",
      "negative log-likelihood of int64 targets under log-probabilities input"},
     nll_fn, NULL, false},
    {{"torch.nn.functional.cross_entropy",
      "torch.nn.functional.cross_entropy(input, target, weight=None, size_average=None, "
      "ignore_index=-100, reduce=None, reduction='mean', label_smoothing=0.0)",
      "log_softmax then nll_loss"},
     nll_fn, (void *)1, false},
};
const size_t ferry__builtins_nn_len = sizeof ferry__builtins_nn / sizeof ferry__builtins_nn[0];
