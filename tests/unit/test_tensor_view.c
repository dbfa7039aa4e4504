/* Unit tests for views (view, reshape, transpose, slice, narrow) and copies (contiguous, clone,
   copy_, to_dtype): geometry, shared storage, values and errors. */
#include <math.h>
#include <string.h>

#include "tensor/tensor_impl.h"
#include "common/test_util.h"

/* arange(0, n) as float32 with the given shape. */
static ferry_tensor *iota(int ndim, const int64_t *sizes)
{
    ferry_tensor *flat = ferry_assert_ptr(ferry_arange(0, (double)ferry__shape_numel(ndim, sizes), 1,
                                                       FERRY_FLOAT32));
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_view(flat, ndim, sizes));
    ferry_tensor_release(flat);
    return t;
}

static void assert_values(const ferry_tensor *t, const double *want, int64_t n)
{
    cr_assert_eq(ferry_tensor_numel(t), n);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(ferry_tensor_item_at(t, i), want[i], "element %lld: %g != %g", (long long)i,
                     ferry_tensor_item_at(t, i), want[i]);
}

Test(tensor_view, shares_storage_when_viewed, .timeout = 10)
{
    const int64_t s23[] = {2, 3}, s32[] = {3, 2};
    ferry_tensor *t = iota(2, s23);
    ferry_tensor *v = ferry_assert_ptr(ferry_tensor_view(t, 2, s32));
    cr_assert(ferry_tensor_shares_storage(t, v));
    cr_assert_eq(ferry_tensor_data(t), ferry_tensor_data(v));
    ((float *)ferry_tensor_data(v))[5] = 42.0f; /* writes through the view show in t */
    cr_assert_eq(ferry_tensor_item_at(t, 5), 42.0);
    ferry_tensor_release(t); /* the view keeps the storage alive */
    cr_assert_eq(ferry_tensor_item_at(v, 5), 42.0);
    cr_assert_eq(ferry_tensor_item_at(v, 0), 0.0);
    ferry_tensor_release(v);
}

Test(tensor_view, infers_size_when_minus_one, .timeout = 10)
{
    const int64_t s[] = {2, 3, 4}, want[] = {4, -1};
    ferry_tensor *t = iota(3, s);
    ferry_tensor *v = ferry_assert_ptr(ferry_tensor_view(t, 2, want));
    cr_assert_eq(ferry_tensor_size(v, 1), 6);
    ferry_tensor_release(v);
    const int64_t two[] = {-1, -1};
    cr_assert_null(ferry_tensor_view(t, 2, two));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    const int64_t bad[] = {5, -1};
    cr_assert_null(ferry_tensor_view(t, 2, bad));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "[5, -1]") != NULL, "%s", ferry_last_error());
    cr_assert(strstr(ferry_last_error(), "24") != NULL, "%s", ferry_last_error());
    ferry_tensor_release(t);
}

Test(tensor_view, fails_when_strides_cannot_express_shape_and_reshape_copies, .timeout = 10)
{
    const int64_t s[] = {2, 3}, flat[] = {6};
    ferry_tensor *t = iota(2, s);
    ferry_tensor *tt = ferry_assert_ptr(ferry_tensor_transpose(t, 0, 1));
    cr_assert_null(ferry_tensor_view(tt, 1, flat));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "[6]") != NULL, "%s", ferry_last_error());
    cr_assert(strstr(ferry_last_error(), "[3, 2]") != NULL, "%s", ferry_last_error());
    cr_assert(strstr(ferry_last_error(), "reshape") != NULL, "%s", ferry_last_error());
    ferry_tensor *r = ferry_assert_ptr(ferry_tensor_reshape(tt, 1, flat));
    cr_assert_not(ferry_tensor_shares_storage(r, t));
    const double want[] = {0, 3, 1, 4, 2, 5};
    assert_values(r, want, 6);
    ferry_tensor *r2 = ferry_assert_ptr(ferry_tensor_reshape(t, 1, flat));
    cr_assert(ferry_tensor_shares_storage(r2, t)); /* viewable: no copy */
    ferry_tensor_release(r);
    ferry_tensor_release(r2);
    ferry_tensor_release(tt);
    ferry_tensor_release(t);
}

Test(tensor_view, keeps_view_when_non_contiguous_but_chunks_fit, .timeout = 10)
{
    /* t[:, 0:2] of a 4x3x2 tensor keeps dims 1..2 as one chunk: [4, 2, 2] -> [4, 4] is a view */
    const int64_t s[] = {4, 3, 2}, to[] = {4, 4}, split[] = {2, 2, 2, 2};
    ferry_tensor *t = iota(3, s);
    ferry_tensor *sl = ferry_assert_ptr(ferry_tensor_slice(t, 1, 0, 2, 1));
    cr_assert_not(ferry_tensor_is_contiguous(sl));
    ferry_tensor *v = ferry_assert_ptr(ferry_tensor_view(sl, 2, to));
    cr_assert(ferry_tensor_shares_storage(v, t));
    cr_assert_eq(ferry_tensor_strides(v)[0], 6);
    cr_assert_eq(ferry_tensor_strides(v)[1], 1);
    cr_assert_eq(ferry_tensor_item_at(v, 4), 6.0);
    ferry_tensor *v2 = ferry_assert_ptr(ferry_tensor_view(sl, 4, split));
    cr_assert_eq(ferry_tensor_item_at(v2, 5), 7.0); /* sl[1][0][1] */
    ferry_tensor_release(v2);
    ferry_tensor_release(v);
    ferry_tensor_release(sl);
    ferry_tensor_release(t);
}

Test(tensor_view, gives_scalar_when_one_element_viewed_as_ndim_zero, .timeout = 10)
{
    const int64_t s[] = {1, 1};
    ferry_tensor *t = ferry_assert_ptr(ferry_full(2, s, 7.0, FERRY_INT64));
    ferry_tensor *v = ferry_assert_ptr(ferry_tensor_view(t, 0, NULL));
    cr_assert_eq(ferry_tensor_ndim(v), 0);
    cr_assert_eq(ferry_tensor_item(v), 7.0);
    ferry_tensor_release(v);
    ferry_tensor_release(t);
}

Test(tensor_transpose, swaps_sizes_and_strides_when_transposed, .timeout = 10)
{
    const int64_t s[] = {2, 3, 4};
    ferry_tensor *t = iota(3, s);
    ferry_tensor *tt = ferry_assert_ptr(ferry_tensor_transpose(t, 0, -1));
    cr_assert_eq(ferry_tensor_size(tt, 0), 4);
    cr_assert_eq(ferry_tensor_size(tt, 2), 2);
    cr_assert_eq(ferry_tensor_strides(tt)[0], 1);
    cr_assert_eq(ferry_tensor_strides(tt)[2], 12);
    cr_assert_not(ferry_tensor_is_contiguous(tt));
    cr_assert(ferry_tensor_shares_storage(t, tt));
    /* tt[1][2][1] == t[1][2][1] == 1*12 + 2*4 + 1 */
    cr_assert_eq(ferry_tensor_item_at(tt, 1 * 6 + 2 * 2 + 1), 21.0);
    cr_assert_null(ferry_tensor_transpose(t, 0, 3));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "out of range") != NULL, "%s", ferry_last_error());
    ferry_tensor_release(tt);
    ferry_tensor_release(t);
}

Test(tensor_slice, picks_every_step_when_sliced_with_step, .timeout = 10)
{
    const int64_t s[] = {3, 10};
    ferry_tensor *t = iota(2, s);
    ferry_tensor *sl = ferry_assert_ptr(ferry_tensor_slice(t, 1, 1, 8, 3)); /* t[:, 1:8:3] */
    cr_assert_eq(ferry_tensor_size(sl, 1), 3);
    cr_assert_eq(ferry_tensor_strides(sl)[1], 3);
    cr_assert_eq(ferry_tensor_storage_offset(sl), 1);
    cr_assert(ferry_tensor_shares_storage(t, sl));
    const double want[] = {1, 4, 7, 11, 14, 17, 21, 24, 27};
    assert_values(sl, want, 9);
    ferry_tensor_release(sl);

    /* Python clamping and negative indices: t[-2:100] along dim 0, t[:, -3:-1] */
    ferry_tensor *a = ferry_assert_ptr(ferry_tensor_slice(t, 0, -2, 100, 1));
    cr_assert_eq(ferry_tensor_size(a, 0), 2);
    cr_assert_eq(ferry_tensor_item_at(a, 0), 10.0);
    ferry_tensor *b = ferry_assert_ptr(ferry_tensor_slice(t, -1, -3, -1, 1));
    const double wb[] = {7, 8, 17, 18, 27, 28};
    assert_values(b, wb, 6);
    ferry_tensor *e = ferry_assert_ptr(ferry_tensor_slice(t, 1, 5, 2, 1));
    cr_assert_eq(ferry_tensor_numel(e), 0);
    ferry_tensor *h = ferry_assert_ptr(ferry_tensor_slice(t, 1, 0, INT64_MAX, INT64_MAX));
    cr_assert_eq(ferry_tensor_size(h, 1), 1);
    cr_assert_null(ferry_tensor_slice(t, 1, 0, 5, 0));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_tensor *ts[] = {a, b, e, h, t};
    for (int i = 0; i < 5; i++)
        ferry_tensor_release(ts[i]);
}

Test(tensor_narrow, restricts_dim_when_narrowed, .timeout = 10)
{
    const int64_t s[] = {4, 3};
    ferry_tensor *t = iota(2, s);
    ferry_tensor *n = ferry_assert_ptr(ferry_tensor_narrow(t, 0, 1, 2));
    cr_assert(ferry_tensor_is_contiguous(n)); /* whole rows stay contiguous */
    cr_assert_eq(ferry_tensor_storage_offset(n), 3);
    const double want[] = {3, 4, 5, 6, 7, 8};
    assert_values(n, want, 6);
    ferry_tensor *c = ferry_assert_ptr(ferry_tensor_narrow(t, 1, -2, 2));
    cr_assert_not(ferry_tensor_is_contiguous(c));
    const double wc[] = {1, 2, 4, 5, 7, 8, 10, 11};
    assert_values(c, wc, 8);
    cr_assert_null(ferry_tensor_narrow(t, 0, 3, 2));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "exceeds") != NULL, "%s", ferry_last_error());
    ferry_tensor *sc = ferry_assert_ptr(ferry_scalar_tensor(1, FERRY_FLOAT32));
    cr_assert_null(ferry_tensor_narrow(sc, 0, 0, 1));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_tensor_release(sc);
    ferry_tensor_release(c);
    ferry_tensor_release(n);
    ferry_tensor_release(t);
}

Test(tensor_contiguous, returns_same_tensor_when_already_contiguous, .timeout = 10)
{
    const int64_t s[] = {3, 4};
    ferry_tensor *t = iota(2, s);
    ferry_tensor *c = ferry_assert_ptr(ferry_tensor_contiguous(t));
    cr_assert_eq(c, t);
    ferry_tensor_release(c);
    ferry_tensor *tt = ferry_assert_ptr(ferry_tensor_transpose(t, 0, 1));
    ferry_tensor *ct = ferry_assert_ptr(ferry_tensor_contiguous(tt));
    cr_assert_neq(ct, tt);
    cr_assert(ferry_tensor_is_contiguous(ct));
    cr_assert_not(ferry_tensor_shares_storage(ct, t));
    cr_assert(ferry_tensor_equal(ct, tt));
    const double want[] = {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
    assert_values(ct, want, 12);
    ferry_tensor_release(ct);
    ferry_tensor_release(tt);
    ferry_tensor_release(t);
}

Test(tensor_copy, converts_dtype_when_copying_into_view, .timeout = 10)
{
    const int64_t s[] = {2, 3}, st[] = {3, 2};
    ferry_tensor *src = iota(2, s);
    ferry_tensor *dst_base = ferry_assert_ptr(ferry_zeros(2, st, FERRY_INT64));
    ferry_tensor *dst = ferry_assert_ptr(ferry_tensor_transpose(dst_base, 0, 1));
    ferry_assert_ok(ferry_tensor_copy_(dst, src));
    const double want[] = {0, 3, 1, 4, 2, 5}; /* dst_base = src transposed */
    assert_values(dst_base, want, 6);
    ferry_tensor *wrong = ferry_assert_ptr(ferry_zeros(2, s, FERRY_FLOAT32));
    ferry_tensor *flat = ferry_assert_ptr(ferry_tensor_reshape(wrong, 1, (int64_t[]){6}));
    ferry_assert_status(ferry_tensor_copy_(flat, src), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "[6]") != NULL, "%s", ferry_last_error());
    ferry_tensor *ts[] = {src, dst_base, dst, wrong, flat};
    for (int i = 0; i < 5; i++)
        ferry_tensor_release(ts[i]);
}

Test(tensor_copy, reads_a_snapshot_when_source_overlaps_destination, .timeout = 10)
{
    const int64_t s[] = {3, 3};
    ferry_tensor *t = iota(2, s);
    ferry_tensor *tt = ferry_assert_ptr(ferry_tensor_transpose(t, 0, 1));
    ferry_assert_ok(ferry_tensor_copy_(t, tt));
    const double want[] = {0, 3, 6, 1, 4, 7, 2, 5, 8};
    assert_values(t, want, 9);
    ferry_tensor_release(tt);
    ferry_tensor_release(t);
}

Test(tensor_copy, keeps_exact_values_when_converting_dtypes, .timeout = 10)
{
    int64_t big[] = {(INT64_C(1) << 60) + 1, -5};
    ferry_tensor *a = ferry_assert_ptr(ferry_tensor_from_data(big, 1, (int64_t[]){2}, FERRY_INT64));
    ferry_tensor *b = ferry_assert_ptr(ferry_tensor_to_dtype(a, FERRY_INT64));
    cr_assert_eq(((int64_t *)ferry_tensor_data(b))[0], big[0]);
    ferry_tensor *u = ferry_assert_ptr(ferry_tensor_to_dtype(a, FERRY_UINT8));
    cr_assert_eq(((uint8_t *)ferry_tensor_data(u))[1], 251); /* wraps, as torch */
    ferry_tensor *bl = ferry_assert_ptr(ferry_tensor_to_dtype(a, FERRY_BOOL));
    cr_assert_eq(((uint8_t *)ferry_tensor_data(bl))[0], 1);
    float f[] = {0.5f, -1.25f, 3.0f};
    ferry_tensor *ff = ferry_assert_ptr(ferry_tensor_from_data(f, 1, (int64_t[]){3}, FERRY_FLOAT32));
    const ferry_dtype fdt[] = {FERRY_FLOAT64, FERRY_FLOAT16, FERRY_BFLOAT16};
    for (int i = 0; i < 3; i++) {
        ferry_tensor *c = ferry_assert_ptr(ferry_tensor_to_dtype(ff, fdt[i]));
        ferry_tensor *back = ferry_assert_ptr(ferry_tensor_to_dtype(c, FERRY_FLOAT32));
        cr_assert(ferry_tensor_equal(back, ff), "%s", ferry_dtype_name(fdt[i]));
        ferry_tensor_release(back);
        ferry_tensor_release(c);
    }
    ferry_tensor *ii = ferry_assert_ptr(ferry_tensor_to_dtype(ff, FERRY_INT32));
    const double wi[] = {0, -1, 3}; /* truncation toward zero */
    assert_values(ii, wi, 3);
    ferry_tensor *ts[] = {a, b, u, bl, ff, ii};
    for (int i = 0; i < 6; i++)
        ferry_tensor_release(ts[i]);
}

Test(tensor_copy, clones_own_storage_when_clone_data, .timeout = 10)
{
    const int64_t s[] = {2, 2};
    ferry_tensor *t = iota(2, s);
    ferry_tensor *c = ferry_assert_ptr(ferry_tensor_clone_data(t));
    cr_assert_not(ferry_tensor_shares_storage(c, t));
    ((float *)ferry_tensor_data(c))[0] = 9.0f;
    cr_assert_eq(ferry_tensor_item_at(t, 0), 0.0);
    ferry_tensor_release(c);
    ferry_tensor_release(t);
}
