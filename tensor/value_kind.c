/* Tensors in values: the kind ops through which core's values retain, release, compare and
   format the tensors they hold, installed from a constructor so that core never includes tensor/. */
#include "core/value_impl.h"
#include "ferry/tensor.h"

static void *tensor_kind_retain(void *t)
{
    return ferry_tensor_retain(t);
}

static void tensor_kind_release(void *t)
{
    ferry_tensor_release(t);
}

/* ferry_value_equal's contract for tensors: same dtype, shape and values. */
static bool tensor_kind_equal(const void *a, const void *b)
{
    return ferry_tensor_equal(a, b);
}

/* ferry_value_format shows a tensor as torch prints it. */
static size_t tensor_kind_format(const void *t, char *buf, size_t cap)
{
    return ferry_tensor_format(t, buf, cap);
}

__attribute__((constructor)) static void tensor_value_kind(void)
{
    static const ferry__value_kind_ops ops = {
        .retain = tensor_kind_retain,
        .release = tensor_kind_release,
        .equal = tensor_kind_equal,
        .format = tensor_kind_format,
    };
    (void)ferry__value_register_kind(FERRY_VALUE_TENSOR, &ops); /* cannot fail for this kind */
}
