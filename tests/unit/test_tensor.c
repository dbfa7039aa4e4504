/* Unit tests for tensor creation, dtypes, lifetimes, random numbers, comparison and printing. */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "tensor/tensor_impl.h"
#include "common/test_util.h"

static const ferry_dtype all_dtypes[FERRY_DTYPE_COUNT] = {
    FERRY_FLOAT32, FERRY_FLOAT64, FERRY_INT64, FERRY_INT32,
    FERRY_UINT8,   FERRY_BOOL,    FERRY_FLOAT16, FERRY_BFLOAT16,
};

Test(tensor_create, has_shape_and_aligned_data_when_any_dtype, .timeout = 10)
{
    const int64_t sizes[] = {2, 3};
    for (int i = 0; i < FERRY_DTYPE_COUNT; i++) {
        ferry_dtype dt = all_dtypes[i];
        ferry_tensor *t = ferry_assert_ptr(ferry_tensor_empty(2, sizes, dt, FERRY_DEVICE_CPU));
        cr_assert_eq(ferry_tensor_ndim(t), 2);
        cr_assert_eq(ferry_tensor_size(t, 0), 2);
        cr_assert_eq(ferry_tensor_size(t, -1), 3);
        cr_assert_eq(ferry_tensor_numel(t), 6);
        cr_assert_eq(ferry_tensor_nbytes(t), 6 * ferry_dtype_size(dt));
        cr_assert_eq(ferry_tensor_dtype(t), dt);
        cr_assert_eq(ferry_tensor_device(t).type, FERRY_CPU);
        cr_assert_eq(ferry_tensor_strides(t)[0], 3);
        cr_assert_eq(ferry_tensor_strides(t)[1], 1);
        cr_assert(ferry_tensor_is_contiguous(t));
        cr_assert_eq((uintptr_t)ferry_tensor_data(t) % 64, 0, "%s not aligned", ferry_dtype_name(dt));
        ferry_tensor_release(t);
    }
}

Test(tensor_create, names_and_sizes_match_torch_when_dtype_queried, .timeout = 10)
{
    cr_assert_str_eq(ferry_dtype_name(FERRY_FLOAT32), "float32");
    cr_assert_str_eq(ferry_dtype_name(FERRY_BFLOAT16), "bfloat16");
    cr_assert_eq(ferry_dtype_size(FERRY_FLOAT16), 2);
    cr_assert_eq(ferry_dtype_size(FERRY_INT64), 8);
    cr_assert_eq(ferry_dtype_size(FERRY_BOOL), 1);
    cr_assert_eq(ferry_dtype_size((ferry_dtype)99), 0);
}

Test(tensor_create, fills_values_when_zeros_ones_full, .timeout = 10)
{
    const int64_t sizes[] = {5};
    for (int i = 0; i < FERRY_DTYPE_COUNT; i++) {
        ferry_dtype dt = all_dtypes[i];
        ferry_tensor *z = ferry_assert_ptr(ferry_zeros(1, sizes, dt));
        ferry_tensor *o = ferry_assert_ptr(ferry_ones(1, sizes, dt));
        ferry_tensor *f = ferry_assert_ptr(ferry_full(1, sizes, 3.0, dt));
        for (int64_t k = 0; k < 5; k++) {
            cr_assert_eq(ferry_tensor_item_at(z, k), 0.0);
            cr_assert_eq(ferry_tensor_item_at(o, k), 1.0);
            cr_assert_eq(ferry_tensor_item_at(f, k), dt == FERRY_BOOL ? 1.0 : 3.0);
        }
        ferry_tensor_release(z);
        ferry_tensor_release(o);
        ferry_tensor_release(f);
    }
}

Test(tensor_dtype, round_trips_when_half_and_bfloat16_values_representable, .timeout = 10)
{
    const float half_ok[] = {0.0f, -0.0f, 1.0f, -2.5f, 0.099975586f, 65504.0f, 0x1p-24f, 0x1p-14f,
                             1000.5f};
    for (size_t i = 0; i < sizeof half_ok / sizeof *half_ok; i++)
        cr_assert_eq(ferry__half_to_float(ferry__float_to_half(half_ok[i])), half_ok[i],
                     "half %g", half_ok[i]);
    const float bf_ok[] = {0.0f, 1.0f, -3.0f, 0.15625f, 0x1.fep127f, 0x1p-126f, 256.0f, -0x1p100f};
    for (size_t i = 0; i < sizeof bf_ok / sizeof *bf_ok; i++)
        cr_assert_eq(ferry__bf16_to_float(ferry__float_to_bf16(bf_ok[i])), bf_ok[i], "bf16 %g",
                     bf_ok[i]);
    cr_assert_eq(ferry__float_to_half(1.0f), 0x3c00);
    cr_assert_eq(ferry__float_to_bf16(1.0f), 0x3f80);
}

Test(tensor_dtype, rounds_and_saturates_when_values_not_representable, .timeout = 10)
{
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even gives 1 */
    cr_assert_eq(ferry__half_to_float(ferry__float_to_half(1.0f + 0x1p-11f)), 1.0f);
    cr_assert_eq(ferry__half_to_float(ferry__float_to_half(1.0f + 0x1p-11f + 0x1p-20f)),
                 1.0f + 0x1p-10f);
    cr_assert(isinf(ferry__half_to_float(ferry__float_to_half(70000.0f))));
    cr_assert(isnan(ferry__half_to_float(ferry__float_to_half(NAN))));
    cr_assert(isnan(ferry__bf16_to_float(ferry__float_to_bf16(NAN))));
    cr_assert_eq(ferry__half_to_float(ferry__float_to_half(0x1p-26f)), 0.0f);
    cr_assert_eq(ferry__bf16_to_float(ferry__float_to_bf16(1.0f + 0x1p-8f)), 1.0f);
    uint8_t u;
    ferry__store_from_double(&u, FERRY_UINT8, -1.0);
    cr_assert_eq(u, 255);
    int64_t i64;
    ferry__store_from_double(&i64, FERRY_INT64, 1e300);
    cr_assert_eq(i64, INT64_MAX);
    ferry__store_from_double(&i64, FERRY_INT64, NAN);
    cr_assert_eq(i64, 0);
}

Test(tensor_create, is_valid_when_zero_size_or_scalar, .timeout = 10)
{
    const int64_t sizes[] = {3, 0, 2};
    ferry_tensor *e = ferry_assert_ptr(ferry_zeros(3, sizes, FERRY_FLOAT32));
    cr_assert_eq(ferry_tensor_numel(e), 0);
    cr_assert_eq(ferry_tensor_nbytes(e), 0);
    cr_assert_not_null(ferry_tensor_data(e));
    cr_assert(ferry_tensor_is_contiguous(e));
    ferry_tensor_release(e);

    ferry_tensor *s = ferry_assert_ptr(ferry_scalar_tensor(2.5, FERRY_FLOAT64));
    cr_assert_eq(ferry_tensor_ndim(s), 0);
    cr_assert_eq(ferry_tensor_numel(s), 1);
    cr_assert_eq(ferry_tensor_item(s), 2.5);
    ferry_tensor_release(s);

    ferry_tensor *s2 = ferry_assert_ptr(ferry_tensor_empty(0, NULL, FERRY_INT32, FERRY_DEVICE_CPU));
    cr_assert_eq(ferry_tensor_numel(s2), 1);
    ferry_tensor_release(s2);
}

Test(tensor_create, copies_caller_data_when_from_data, .timeout = 10)
{
    int32_t data[] = {1, 2, 3, 4, 5, 6};
    const int64_t sizes[] = {2, 3};
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_from_data(data, 2, sizes, FERRY_INT32));
    cr_assert_neq(ferry_tensor_data(t), (void *)data);
    data[0] = 100;
    cr_assert_eq(ferry_tensor_item_at(t, 0), 1.0);
    cr_assert_eq(ferry_tensor_item_at(t, 5), 6.0);
    ferry_tensor_release(t);
}

Test(tensor_create, fails_with_einval_when_arguments_bad, .timeout = 10)
{
    const int64_t neg[] = {2, -1};
    cr_assert_null(ferry_tensor_empty(2, neg, FERRY_FLOAT32, FERRY_DEVICE_CPU));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "negative size") != NULL, "%s", ferry_last_error());
    cr_assert(strstr(ferry_last_error(), "[2, -1]") != NULL, "%s", ferry_last_error());

    const int64_t huge[] = {INT64_C(1) << 40, INT64_C(1) << 40};
    cr_assert_null(ferry_zeros(2, huge, FERRY_FLOAT32));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "too many elements") != NULL, "%s", ferry_last_error());

    int64_t many[FERRY_MAX_DIMS + 1];
    for (int i = 0; i <= FERRY_MAX_DIMS; i++)
        many[i] = 1;
    cr_assert_null(ferry_ones(FERRY_MAX_DIMS + 1, many, FERRY_FLOAT32));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_ones(-1, many, FERRY_FLOAT32));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_ones(1, many, (ferry_dtype)42));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_tensor_from_data(NULL, 1, many, FERRY_FLOAT32));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_tensor *t = ferry_assert_ptr(ferry_ones(FERRY_MAX_DIMS, many, FERRY_FLOAT32));
    cr_assert_eq(ferry_tensor_size(t, FERRY_MAX_DIMS), -1);
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(isnan(ferry_tensor_item_at(t, 1)));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_tensor_release(t);
}

Test(tensor_create, fails_with_enotsup_when_there_is_no_cuda_device, .timeout = 10)
{
    if (ferry_cuda_device_count() > 0)
        cr_skip_test("this process has CUDA devices (%s)", ferry_device_backend());
    const int64_t sizes[] = {2};
    ferry_device cuda = {FERRY_CUDA, 0};
    cr_assert_null(ferry_tensor_empty(1, sizes, FERRY_FLOAT32, cuda));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP);
#ifdef FERRY_WITH_CUDA
    cr_assert(strstr(ferry_last_error(), "no CUDA device is present") != NULL, "%s",
              ferry_last_error());
#else
    cr_assert(strstr(ferry_last_error(), "built without CUDA") != NULL, "%s", ferry_last_error());
#endif
}

Test(tensor_create, item_fails_when_more_than_one_element, .timeout = 10)
{
    const int64_t sizes[] = {2};
    ferry_tensor *t = ferry_assert_ptr(ferry_ones(1, sizes, FERRY_FLOAT32));
    cr_assert(isnan(ferry_tensor_item(t)));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_tensor_release(t);
}

typedef struct {
    int calls;
    void *seen;
} deleter_log;

static void count_deleter(void *data, void *ctx)
{
    deleter_log *log = ctx;
    log->calls++;
    log->seen = data;
}

Test(tensor_blob, runs_deleter_once_when_last_reference_released, .timeout = 10)
{
    float buf[6] = {1, 2, 3, 4, 5, 6};
    deleter_log log = {0, NULL};
    const int64_t sizes[] = {2, 3};
    ferry_tensor *t = ferry_assert_ptr(
        ferry_tensor_from_blob(buf, 2, sizes, NULL, FERRY_FLOAT32, count_deleter, &log));
    cr_assert_eq(ferry_tensor_data(t), (void *)buf);
    buf[4] = 50; /* no copy: the tensor sees the caller's memory */
    cr_assert_eq(ferry_tensor_item_at(t, 4), 50.0);
    ferry_tensor_retain(t);
    ferry_tensor_release(t);
    cr_assert_eq(log.calls, 0);
    ferry_tensor_release(t);
    cr_assert_eq(log.calls, 1);
    cr_assert_eq(log.seen, (void *)buf);
}

Test(tensor_blob, runs_deleter_after_view_when_view_outlives_original, .timeout = 10)
{
    double buf[4] = {1, 2, 3, 4};
    deleter_log log = {0, NULL};
    const int64_t sizes[] = {2, 2};
    ferry_tensor *t = ferry_assert_ptr(
        ferry_tensor_from_blob(buf, 2, sizes, NULL, FERRY_FLOAT64, count_deleter, &log));
    ferry_tensor *v = ferry_assert_ptr(ferry_tensor_transpose(t, 0, 1));
    ferry_tensor_release(t);
    cr_assert_eq(log.calls, 0);
    cr_assert_eq(ferry_tensor_item_at(v, 1), 3.0);
    ferry_tensor_release(v);
    cr_assert_eq(log.calls, 1);
}

Test(tensor_blob, wraps_strided_memory_when_strides_given, .timeout = 10)
{
    int64_t buf[6] = {0, 1, 2, 3, 4, 5};
    const int64_t sizes[] = {3}, strides[] = {2};
    ferry_tensor *t = ferry_assert_ptr(
        ferry_tensor_from_blob(buf, 1, sizes, strides, FERRY_INT64, NULL, NULL));
    cr_assert_not(ferry_tensor_is_contiguous(t));
    cr_assert_eq(ferry_tensor_item_at(t, 2), 4.0);
    ferry_tensor_release(t);
    const int64_t bad[] = {-1};
    cr_assert_null(ferry_tensor_from_blob(buf, 1, sizes, bad, FERRY_INT64, NULL, NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
}

Test(tensor_blob, never_runs_deleter_when_creation_fails, .timeout = 10)
{
    float buf[2];
    deleter_log log = {0, NULL};
    const int64_t sizes[] = {2};
    ferry__alloc_fail_after(2, 0); /* the storage succeeds, the tensor handle fails */
    cr_assert_null(ferry_tensor_from_blob(buf, 1, sizes, NULL, FERRY_FLOAT32, count_deleter, &log));
    cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
    cr_assert_eq(log.calls, 0);
}

Test(tensor_arange, has_torch_length_when_steps_vary, .timeout = 10)
{
    struct {
        double start, end, step;
        int64_t len;
    } cases[] = {{0, 5, 1, 5}, {0, 5, 2, 3}, {1, 2.5, 0.5, 3}, {5, 0, -1, 5},
                 {5, 0, -2, 3}, {0, 0, 1, 0}, {0, 1, 0.3, 4}, {-1, -3, -0.5, 4}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ferry_tensor *t = ferry_assert_ptr(
            ferry_arange(cases[i].start, cases[i].end, cases[i].step, FERRY_FLOAT64));
        cr_assert_eq(ferry_tensor_numel(t), cases[i].len, "case %zu", i);
        if (cases[i].len > 1)
            cr_assert_float_eq(ferry_tensor_item_at(t, 1), cases[i].start + cases[i].step, 1e-12);
        ferry_tensor_release(t);
    }
    ferry_tensor *d = ferry_assert_ptr(ferry_arange(5, 0, -2, FERRY_INT64));
    cr_assert_eq(ferry_tensor_item_at(d, 0), 5.0);
    cr_assert_eq(ferry_tensor_item_at(d, 2), 1.0);
    ferry_tensor_release(d);
}

Test(tensor_arange, fails_with_einval_when_step_zero_or_wrong_sign, .timeout = 10)
{
    cr_assert_null(ferry_arange(0, 5, 0, FERRY_FLOAT32));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_arange(0, 5, -1, FERRY_FLOAT32));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "step") != NULL, "%s", ferry_last_error());
    cr_assert_null(ferry_arange(5, 0, 1, FERRY_INT64));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
}

Test(tensor_random, repeats_when_seed_repeats, .timeout = 10)
{
    const int64_t sizes[] = {64};
    ferry_generator *g1 = ferry_assert_ptr(ferry_generator_new(42));
    ferry_generator *g2 = ferry_assert_ptr(ferry_generator_new(42));
    ferry_generator *g3 = ferry_assert_ptr(ferry_generator_new(43));
    ferry_tensor *a = ferry_assert_ptr(ferry_randn(1, sizes, FERRY_FLOAT32, g1));
    ferry_tensor *b = ferry_assert_ptr(ferry_randn(1, sizes, FERRY_FLOAT32, g2));
    ferry_tensor *c = ferry_assert_ptr(ferry_randn(1, sizes, FERRY_FLOAT32, g3));
    cr_assert(ferry_tensor_equal(a, b));
    cr_assert_not(ferry_tensor_equal(a, c));
    ferry_manual_seed(7);
    ferry_tensor *d = ferry_assert_ptr(ferry_randn(1, sizes, FERRY_FLOAT64, NULL));
    ferry_manual_seed(7);
    ferry_tensor *e = ferry_assert_ptr(ferry_randn(1, sizes, FERRY_FLOAT64, NULL));
    cr_assert(ferry_tensor_equal(d, e));
    ferry_tensor *tensors[] = {a, b, c, d, e};
    for (int i = 0; i < 5; i++)
        ferry_tensor_release(tensors[i]);
    ferry_generator_free(g1);
    ferry_generator_free(g2);
    ferry_generator_free(g3);
}

Test(tensor_random, has_normal_moments_when_randn, .timeout = 10)
{
    const int64_t sizes[] = {100001}; /* odd: the last Box-Muller pair is cut */
    ferry_generator *g = ferry_assert_ptr(ferry_generator_new(1234));
    ferry_tensor *t = ferry_assert_ptr(ferry_randn(1, sizes, FERRY_FLOAT64, g));
    const double *p = ferry_tensor_data(t);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < sizes[0]; i++) {
        sum += p[i];
        sq += p[i] * p[i];
    }
    double mean = sum / sizes[0], std = sqrt(sq / sizes[0] - mean * mean);
    cr_assert(fabs(mean) < 0.02, "mean %g", mean);
    cr_assert(fabs(std - 1.0) < 0.02, "std %g", std);
    ferry_tensor_release(t);
    ferry_generator_free(g);
}

Test(tensor_random, stays_in_unit_interval_when_rand, .timeout = 10)
{
    const int64_t sizes[] = {20000};
    const ferry_dtype dts[] = {FERRY_FLOAT32, FERRY_FLOAT64, FERRY_FLOAT16, FERRY_BFLOAT16};
    ferry_generator *g = ferry_assert_ptr(ferry_generator_new(9));
    for (int k = 0; k < 4; k++) {
        ferry_tensor *t = ferry_assert_ptr(ferry_rand(1, sizes, dts[k], g));
        double sum = 0;
        for (int64_t i = 0; i < sizes[0]; i++) {
            double v = ferry_tensor_item_at(t, i);
            cr_assert(v >= 0.0 && v < 1.0, "%s value %g", ferry_dtype_name(dts[k]), v);
            sum += v;
        }
        cr_assert(fabs(sum / sizes[0] - 0.5) < 0.02);
        ferry_tensor_release(t);
    }
    ferry_generator_free(g);
}

Test(tensor_random, fails_with_einval_when_dtype_integral, .timeout = 10)
{
    const int64_t sizes[] = {3};
    cr_assert_null(ferry_randn(1, sizes, FERRY_INT64, NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "int64") != NULL, "%s", ferry_last_error());
}

Test(tensor_compare, equal_needs_shape_dtype_and_values_when_compared, .timeout = 10)
{
    const int64_t s3[] = {3}, s13[] = {1, 3};
    float fa[] = {1, 2, 3}, fb[] = {1, 2, 4};
    ferry_tensor *a = ferry_assert_ptr(ferry_tensor_from_data(fa, 1, s3, FERRY_FLOAT32));
    ferry_tensor *a2 = ferry_assert_ptr(ferry_tensor_from_data(fa, 1, s3, FERRY_FLOAT32));
    ferry_tensor *b = ferry_assert_ptr(ferry_tensor_from_data(fb, 1, s3, FERRY_FLOAT32));
    ferry_tensor *a13 = ferry_assert_ptr(ferry_tensor_from_data(fa, 2, s13, FERRY_FLOAT32));
    ferry_tensor *ad = ferry_assert_ptr(ferry_tensor_to_dtype(a, FERRY_FLOAT64));
    cr_assert(ferry_tensor_equal(a, a2));
    cr_assert_not(ferry_tensor_equal(a, b));
    cr_assert_not(ferry_tensor_equal(a, a13));
    cr_assert_not(ferry_tensor_equal(a, ad));
    float fn[] = {1, NAN, 3};
    ferry_tensor *n = ferry_assert_ptr(ferry_tensor_from_data(fn, 1, s3, FERRY_FLOAT32));
    cr_assert_not(ferry_tensor_equal(n, n));
    ferry_tensor *ts[] = {a, a2, b, a13, ad, n};
    for (int i = 0; i < 6; i++)
        ferry_tensor_release(ts[i]);
}

Test(tensor_compare, allclose_uses_tolerances_when_values_differ, .timeout = 10)
{
    const int64_t s3[] = {3}, s2[] = {2};
    double da[] = {1.0, 2.0, INFINITY}, db[] = {1.0 + 1e-9, 2.0, INFINITY};
    double dc[] = {1.1, 2.0, INFINITY}, dn[] = {NAN, 2.0, INFINITY};
    ferry_tensor *a = ferry_assert_ptr(ferry_tensor_from_data(da, 1, s3, FERRY_FLOAT64));
    ferry_tensor *b = ferry_assert_ptr(ferry_tensor_from_data(db, 1, s3, FERRY_FLOAT64));
    ferry_tensor *c = ferry_assert_ptr(ferry_tensor_from_data(dc, 1, s3, FERRY_FLOAT64));
    ferry_tensor *n = ferry_assert_ptr(ferry_tensor_from_data(dn, 1, s3, FERRY_FLOAT64));
    ferry_tensor *s = ferry_assert_ptr(ferry_tensor_from_data(da, 1, s2, FERRY_FLOAT64));
    ferry_tensor *af = ferry_assert_ptr(ferry_tensor_to_dtype(a, FERRY_FLOAT16));
    cr_assert(ferry_allclose(a, b, 1e-5, 1e-8));
    cr_assert_not(ferry_allclose(a, c, 1e-5, 1e-8));
    cr_assert(ferry_allclose(a, c, 0.0, 0.2));
    cr_assert_not(ferry_allclose(n, n, 1e-5, 1e-8));
    cr_assert_not(ferry_allclose(a, s, 1e-5, 1e-8));
    cr_assert(ferry_allclose(af, a, 1e-3, 0.0)); /* any dtypes */
    ferry_tensor *ts[] = {a, b, c, n, s, af};
    for (int i = 0; i < 6; i++)
        ferry_tensor_release(ts[i]);
}

static void assert_format(ferry_tensor *t, const char *want)
{
    char buf[256];
    size_t need = ferry_tensor_format(t, buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    cr_assert_eq(need, strlen(want));
    ferry_tensor_release(t);
}

Test(tensor_format, looks_like_torch_repr_when_small, .timeout = 10)
{
    const int64_t s3[] = {3}, s22[] = {2, 2}, s0[] = {0};
    float f[] = {1, 2, 3}, g[] = {1.5f, -2.25f, 3};
    int32_t i4[] = {1, -20, 3, 4};
    assert_format(ferry_tensor_from_data(f, 1, s3, FERRY_FLOAT32), "tensor([1., 2., 3.])");
    assert_format(ferry_tensor_from_data(g, 1, s3, FERRY_FLOAT32),
                  "tensor([ 1.5000, -2.2500,  3.0000])");
    assert_format(ferry_tensor_from_data(i4, 2, s22, FERRY_INT32),
                  "tensor([[  1, -20],\n        [  3,   4]], dtype=torch.int32)");
    assert_format(ferry_arange(0, 3, 1, FERRY_INT64), "tensor([0, 1, 2])");
    assert_format(ferry_arange(0, 2, 1, FERRY_FLOAT64), "tensor([0., 1.], dtype=torch.float64)");
    assert_format(ferry_scalar_tensor(2.0, FERRY_FLOAT32), "tensor(2.)");
    assert_format(ferry_zeros(1, s0, FERRY_FLOAT32), "tensor([])");
    assert_format(ferry_ones(1, s3, FERRY_BOOL), "tensor([True, True, True])");
}

Test(tensor_format, returns_needed_length_when_buffer_small, .timeout = 10)
{
    const int64_t s[] = {2000};
    ferry_tensor *t = ferry_assert_ptr(ferry_zeros(1, s, FERRY_FLOAT32));
    char small[8];
    size_t need = ferry_tensor_format(t, small, sizeof small);
    cr_assert_str_eq(small, "tensor(");
    char big[256];
    cr_assert_eq(ferry_tensor_format(t, big, sizeof big), need);
    cr_assert_str_eq(big, "tensor([0., 0., 0., ..., 0., 0., 0.])");
    ferry_tensor_release(t);
}

static void count_autograd_free(void *p)
{
    (*(int *)p)++;
}

Test(tensor_lifetime, calls_autograd_hook_when_tensor_freed, .timeout = 10)
{
    int freed = 0;
    static const ferry__tensor_autograd_ops counting = {.free = count_autograd_free};
    ferry__tensor_set_autograd_ops(&counting);
    const int64_t s[] = {1};
    ferry_tensor *t = ferry_assert_ptr(ferry_zeros(1, s, FERRY_FLOAT32));
    ferry_tensor *v = ferry_assert_ptr(ferry_tensor_view(t, 0, NULL));
    t->autograd = &freed;
    ferry_tensor_release(v); /* the view has no autograd state of its own */
    cr_assert_eq(freed, 0);
    ferry_tensor_release(t);
    cr_assert_eq(freed, 1);
}

/* Each allocation a call makes, failed in turn, must give NULL + FERRY_ENOMEM and leak nothing
   (the ASan build checks the leaks). */
Test(tensor_alloc, fails_with_enomem_when_any_allocation_fails, .timeout = 10)
{
    const int64_t s[] = {4, 3};
    ferry_tensor *base = ferry_assert_ptr(ferry_ones(2, s, FERRY_FLOAT32));
    ferry_tensor *tr = ferry_assert_ptr(ferry_tensor_transpose(base, 0, 1));
    const int64_t flat[] = {12};
    for (long nth = 1; nth <= 4; nth++) {
        ferry__alloc_fail_after(nth, 0);
        ferry_tensor *t = ferry_zeros(2, s, FERRY_FLOAT64);
        ferry__alloc_fail_after(0, 0);
        if (nth <= 3) { /* storage struct, its memory, the tensor handle */
            cr_assert_null(t, "allocation %ld", nth);
            cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
        }
        ferry_tensor_release(t);
        for (int which = 0; which < 4; which++) {
            ferry__alloc_fail_after(nth, 0);
            ferry_tensor *r = which == 0   ? ferry_tensor_reshape(tr, 1, flat)
                              : which == 1 ? ferry_tensor_contiguous(tr)
                              : which == 2 ? ferry_tensor_to_dtype(tr, FERRY_INT32)
                                           : ferry_randn(2, s, FERRY_FLOAT32, NULL);
            ferry__alloc_fail_after(0, 0);
            if (nth <= 3 || which == 0) {
                cr_assert_null(r, "call %d survived failing allocation %ld", which, nth);
                cr_assert_eq(ferry_last_status(), FERRY_ENOMEM, "%d/%ld", which, nth);
            } else {
                cr_assert_not_null(r);
            }
            ferry_tensor_release(r);
        }
    }
    ferry_generator *g;
    ferry__alloc_fail_after(1, 0);
    g = ferry_generator_new(1);
    cr_assert_null(g);
    cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
    ferry_tensor_release(tr);
    ferry_tensor_release(base);
}
