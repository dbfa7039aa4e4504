/* Unit tests for tensor-kind values: the value holds its own reference to the tensor, and
   equality compares tensors by dtype, shape and contents. */
#include "core/value_impl.h"
#include "test_util.h"

static ferry_tensor *vec3(float a, float b, float c)
{
    const float data[3] = {a, b, c};
    const int64_t sizes[1] = {3};
    return ferry_tensor_from_data(data, 1, sizes, FERRY_FLOAT32);
}

Test(value_tensor, retains_tensor_when_wrapped, .timeout = 5)
{
    ferry_tensor *t = ferry_assert_ptr(vec3(1, 2, 3));
    ferry_value *v = ferry_assert_ptr(ferry_tensor_value(t));
    ferry_tensor_release(t); /* the value keeps it alive */
    cr_assert_eq(ferry_value_kind(v), FERRY_VALUE_TENSOR);
    ferry_tensor *got = ferry_value_as_tensor(v);
    cr_assert_eq(got, t);
    cr_assert_eq(ferry_tensor_numel(got), 3);
    cr_assert_eq(((const float *)ferry_tensor_data(got))[2], 3.0f);
    ferry_value *list = ferry_assert_ptr(ferry_list_of(2, v, ferry_int(1)));
    ferry_value_release(list);
    cr_assert_null(ferry_tensor_value(NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
}

Test(value_tensor, compares_contents_when_tensors_differ_in_identity, .timeout = 5)
{
    ferry_tensor *a = ferry_assert_ptr(vec3(1, 2, 3));
    ferry_tensor *b = ferry_assert_ptr(vec3(1, 2, 3));
    ferry_tensor *c = ferry_assert_ptr(vec3(1, 2, 4));
    ferry_value *va = ferry_assert_ptr(ferry_list_of(1, ferry_tensor_value(a)));
    ferry_value *vb = ferry_assert_ptr(ferry_list_of(1, ferry_tensor_value(b)));
    ferry_value *vc = ferry_assert_ptr(ferry_list_of(1, ferry_tensor_value(c)));
    cr_assert(ferry_value_equal(va, vb));
    cr_assert_not(ferry_value_equal(va, vc));
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    ferry_tensor_release(c);
    ferry_value_release(va);
    ferry_value_release(vb);
    ferry_value_release(vc);
}

Test(value_tensor, fails_with_einval_when_the_kind_has_no_ops, .timeout = 5)
{
    ferry_tensor *t = ferry_assert_ptr(vec3(1, 2, 3));
    /* tensor/ installs its ops from a constructor; a process without them refuses cleanly */
    ferry_assert_ok(ferry__value_register_kind(FERRY_VALUE_TENSOR, NULL));
    cr_assert_null(ferry_tensor_value(t));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "tensor values need the tensor module initialized");
    cr_assert_null(ferry_tensor_value(NULL));
    cr_assert_str_eq(ferry_last_error(), "NULL tensor");
    ferry_tensor_release(t); /* the failed call took no reference */
}
