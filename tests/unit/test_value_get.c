/* Unit tests for telling a real zero from a kind mismatch: every accessor sets the last status
   to FERRY_OK when it succeeds (even over an older failure) and records FERRY_ETYPE with a
   message naming the function and both kinds when it does not; the status-returning forms
   (ferry_value_get_*, ferry_list_at, ferry_dict_lookup) leave *out alone on failure. */
#include <stdio.h>
#include <string.h>

#include "core/value_impl.h"
#include "test_util.h"

/* A failure left over from earlier work on this thread, which a success must not look like. */
static void stale_failure(void)
{
    ferry_set_error(FERRY_ETIMEDOUT, "an older failure");
}

/* Runs `check` (an assertion on an accessor's result) after an older failure, then checks the
   accessor left FERRY_OK. */
#define ASSERT_OK_OVER_STALE(check)                                                       \
    do {                                                                                  \
        stale_failure();                                                                  \
        check;                                                                            \
        cr_assert_eq(ferry_last_status(), FERRY_OK, "%s left %s: %s", #check,            \
                     ferry_strerror(ferry_last_status()), ferry_last_error());            \
    } while (0)

/* Runs `check`, then checks the accessor in it recorded `code` and exactly `text`. */
#define ASSERT_FAILS(check, code, text)                                                   \
    do {                                                                                  \
        ferry_clear_error();                                                              \
        check;                                                                            \
        cr_assert_eq(ferry_last_status(), (code), "%s: %s", #check, ferry_last_error()); \
        cr_assert_str_eq(ferry_last_error(), (text));                                     \
    } while (0)

/* Stand-ins for the rref and object modules' objects (each test runs in its own process, so
   the kind ops installed here replace the real ones only there). */
struct ferry_rref {
    int refs;
};

static void *fake_retain(void *p)
{
    ((struct ferry_rref *)p)->refs++;
    return p;
}

static void fake_release(void *p)
{
    ((struct ferry_rref *)p)->refs--;
}

static void fake_describe(const void *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "an object of class '%s'", "Net");
}

static const ferry__value_kind_ops fake_rref_ops = {fake_retain, fake_release, NULL, NULL, NULL};
static const ferry__value_kind_ops fake_object_ops = {fake_retain, fake_release, NULL,
                                                      fake_describe, NULL};

Test(value_get, clears_last_status_when_a_real_zero_is_read, .timeout = 5)
{
    ferry_value *zero = ferry_assert_ptr(ferry_int(0));
    ferry_value *no = ferry_assert_ptr(ferry_bool(false));
    ferry_value *dzero = ferry_assert_ptr(ferry_double(0.0));
    ferry_value *empty_s = ferry_assert_ptr(ferry_string(""));
    ferry_value *empty_b = ferry_assert_ptr(ferry_bytes(NULL, 0));
    ferry_value *list = ferry_assert_ptr(ferry_list_of(1, ferry_int(0)));
    ferry_value *dict = ferry_assert_ptr(ferry_dict_new());
    ferry_assert_ok(ferry_dict_set(dict, "k", zero));

    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_value_as_int(zero), 0));
    ASSERT_OK_OVER_STALE(cr_assert_not(ferry_value_as_bool(no)));
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_value_as_double(dzero), 0.0));
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_value_as_double(zero), 0.0));
    ASSERT_OK_OVER_STALE(cr_assert_str_eq(ferry_value_as_string(empty_s), ""));
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_value_len(empty_s), 0));
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_value_len(empty_b), 0));
    size_t len = 99;
    ASSERT_OK_OVER_STALE(cr_assert_not_null(ferry_value_as_bytes(empty_b, &len)));
    cr_assert_eq(len, 0);
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_list_len(list), 1));
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 0)), 0));
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_dict_len(dict), 1));
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_dict_get(dict, "k"), zero));
    ASSERT_OK_OVER_STALE(cr_assert_str_eq(ferry_dict_key_at(dict, 0), "k"));
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_dict_value_at(dict, 0), zero));

    /* The message of the older failure stays (only the status is cleared), as value.h says. */
    stale_failure();
    cr_assert_eq(ferry_value_as_int(zero), 0);
    cr_assert_eq(ferry_last_status(), FERRY_OK);
    cr_assert_str_eq(ferry_last_error(), "an older failure");

    /* Calls outside the accessors leave the last error alone. */
    stale_failure();
    cr_assert_eq(ferry_value_kind(zero), FERRY_VALUE_INT);
    cr_assert(ferry_value_equal(zero, zero));
    cr_assert_eq(ferry_last_status(), FERRY_ETIMEDOUT);

    ferry_value *all[] = {zero, no, dzero, empty_s, empty_b, list, dict};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ferry_value_release(all[i]);
}

Test(value_get, names_function_and_both_kinds_when_kind_mismatches, .timeout = 5)
{
    ferry_value *s = ferry_assert_ptr(ferry_string("x"));
    ferry_value *i = ferry_assert_ptr(ferry_int(3));
    ferry_value *b = ferry_assert_ptr(ferry_bool(true));
    ferry_value *by = ferry_assert_ptr(ferry_bytes("y", 1));
    ferry_value *n = ferry_assert_ptr(ferry_none());
    ferry_value *l = ferry_assert_ptr(ferry_list_of(0));
    ferry_value *d = ferry_assert_ptr(ferry_dict_new());

    ASSERT_FAILS(cr_assert_eq(ferry_value_as_int(s), 0), FERRY_ETYPE,
                 "ferry_value_as_int: expected an int, got a string");
    ASSERT_FAILS(cr_assert_eq(ferry_value_as_int(b), 0), FERRY_ETYPE,
                 "ferry_value_as_int: expected an int, got a bool");
    ASSERT_FAILS(cr_assert_not(ferry_value_as_bool(i)), FERRY_ETYPE,
                 "ferry_value_as_bool: expected a bool, got an int");
    ASSERT_FAILS(cr_assert_eq(ferry_value_as_double(b), 0.0), FERRY_ETYPE,
                 "ferry_value_as_double: expected a double or an int, got a bool");
    ASSERT_FAILS(cr_assert_null(ferry_value_as_string(by)), FERRY_ETYPE,
                 "ferry_value_as_string: expected a string, got bytes");
    ASSERT_FAILS(cr_assert_eq(ferry_value_len(n), 0), FERRY_ETYPE,
                 "ferry_value_len: expected a string or bytes, got None");
    size_t len = 99;
    ASSERT_FAILS(cr_assert_null(ferry_value_as_bytes(s, &len)), FERRY_ETYPE,
                 "ferry_value_as_bytes: expected bytes, got a string");
    cr_assert_eq(len, 0);
    ASSERT_FAILS(cr_assert_null(ferry_value_as_tensor(l)), FERRY_ETYPE,
                 "ferry_value_as_tensor: expected a tensor, got a list");
    ASSERT_FAILS(cr_assert_null(ferry_value_as_rref(d)), FERRY_ETYPE,
                 "ferry_value_as_rref: expected an rref, got a dict");
    ASSERT_FAILS(cr_assert_eq(ferry_list_len(d), 0), FERRY_ETYPE,
                 "ferry_list_len: expected a list, got a dict");
    ASSERT_FAILS(cr_assert_null(ferry_list_get(i, 0)), FERRY_ETYPE,
                 "ferry_list_get: expected a list, got an int");
    ASSERT_FAILS(cr_assert_null(ferry_list_get(l, 0)), FERRY_EINVAL,
                 "ferry_list_get: list index 0 out of range (length 0)");
    ASSERT_FAILS(cr_assert_eq(ferry_dict_len(l), 0), FERRY_ETYPE,
                 "ferry_dict_len: expected a dict, got a list");
    ASSERT_FAILS(cr_assert_null(ferry_dict_get(s, "k")), FERRY_ETYPE,
                 "ferry_dict_get: expected a dict, got a string");
    ASSERT_FAILS(cr_assert_null(ferry_dict_get(d, "k")), FERRY_EINVAL,
                 "ferry_dict_get: key 'k' not in dict");
    ASSERT_FAILS(cr_assert_null(ferry_dict_get(d, NULL)), FERRY_EINVAL,
                 "ferry_dict_get: NULL key");
    ASSERT_FAILS(cr_assert_null(ferry_dict_key_at(d, 2)), FERRY_EINVAL,
                 "ferry_dict_key_at: dict index 2 out of range (length 0)");
    ASSERT_FAILS(cr_assert_null(ferry_dict_value_at(n, 0)), FERRY_ETYPE,
                 "ferry_dict_value_at: expected a dict, got None");
    ASSERT_FAILS(cr_assert_eq(ferry_value_as_int(NULL), 0), FERRY_ETYPE,
                 "ferry_value_as_int: expected an int, got NULL");

    ferry_value *all[] = {s, i, b, by, n, l, d};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        ferry_value_release(all[k]);
}

Test(value_get, returns_ok_and_content_when_kind_matches, .timeout = 5)
{
    ferry_value *zero = ferry_assert_ptr(ferry_int(0));
    ferry_value *big = ferry_assert_ptr(ferry_int(INT64_MIN));
    ferry_value *no = ferry_assert_ptr(ferry_bool(false));
    ferry_value *half = ferry_assert_ptr(ferry_double(-0.5));
    ferry_value *s = ferry_assert_ptr(ferry_string_n("a\0b", 3));
    const unsigned char raw[] = {0, 255};
    ferry_value *by = ferry_assert_ptr(ferry_bytes(raw, sizeof raw));

    int64_t iv = 5;
    stale_failure();
    ferry_assert_ok(ferry_value_get_int(zero, &iv));
    cr_assert_eq(iv, 0);
    cr_assert_eq(ferry_last_status(), FERRY_OK, "a success clears the last status");
    ferry_assert_ok(ferry_value_get_int(big, &iv));
    cr_assert_eq(iv, INT64_MIN);
    bool bv = true;
    ferry_assert_ok(ferry_value_get_bool(no, &bv));
    cr_assert_not(bv);
    double dv = 1;
    ferry_assert_ok(ferry_value_get_double(half, &dv));
    cr_assert_eq(dv, -0.5);
    ferry_assert_ok(ferry_value_get_double(zero, &dv));
    cr_assert_eq(dv, 0.0, "an int reads as a double");
    const char *sv = NULL;
    ferry_assert_ok(ferry_value_get_string(s, &sv));
    cr_assert_eq(sv, ferry_value_as_string(s), "borrowed, not copied");
    cr_assert_eq(memcmp(sv, "a\0b", 4), 0);
    const void *bp = NULL;
    size_t len = 0;
    ferry_assert_ok(ferry_value_get_bytes(by, &bp, &len));
    cr_assert_eq(len, sizeof raw);
    cr_assert_eq(memcmp(bp, raw, sizeof raw), 0);
    bp = NULL;
    ferry_assert_ok(ferry_value_get_bytes(by, &bp, NULL));
    cr_assert_not_null(bp, "len is optional");

    ferry_value *all[] = {zero, big, no, half, s, by};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        ferry_value_release(all[k]);
}

Test(value_get, leaves_out_alone_when_kind_mismatches, .timeout = 5)
{
    ferry_value *s = ferry_assert_ptr(ferry_string("x"));
    ferry_value *i = ferry_assert_ptr(ferry_int(0));
    ferry_value *b = ferry_assert_ptr(ferry_bool(false));

    int64_t iv = 10;
    ferry_assert_status(ferry_value_get_int(s, &iv), FERRY_ETYPE);
    cr_assert_eq(iv, 10, "the default set beforehand survives");
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_int: expected an int, got a string");
    ferry_assert_status(ferry_value_get_int(b, &iv), FERRY_ETYPE);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_int: expected an int, got a bool");
    ferry_assert_status(ferry_value_get_int(NULL, &iv), FERRY_ETYPE);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_int: expected an int, got NULL");
    cr_assert_eq(iv, 10);

    bool bv = true;
    ferry_assert_status(ferry_value_get_bool(i, &bv), FERRY_ETYPE);
    cr_assert(bv);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_bool: expected a bool, got an int");
    double dv = 2.5;
    ferry_assert_status(ferry_value_get_double(s, &dv), FERRY_ETYPE);
    cr_assert_eq(dv, 2.5);
    cr_assert_str_eq(ferry_last_error(),
                     "ferry_value_get_double: expected a double or an int, got a string");
    const char *sv = "default";
    ferry_assert_status(ferry_value_get_string(i, &sv), FERRY_ETYPE);
    cr_assert_str_eq(sv, "default");
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_string: expected a string, got an int");
    const void *bp = &dv;
    size_t len = 7;
    ferry_assert_status(ferry_value_get_bytes(s, &bp, &len), FERRY_ETYPE);
    cr_assert_eq(bp, &dv);
    cr_assert_eq(len, 7);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_bytes: expected bytes, got a string");
    ferry_tensor *tv = (ferry_tensor *)&dv;
    ferry_assert_status(ferry_value_get_tensor(i, &tv), FERRY_ETYPE);
    cr_assert_eq(tv, (ferry_tensor *)&dv);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_tensor: expected a tensor, got an int");
    ferry_rref *rv = (ferry_rref *)&dv;
    ferry_assert_status(ferry_value_get_rref(s, &rv), FERRY_ETYPE);
    cr_assert_eq(rv, (ferry_rref *)&dv);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_rref: expected an rref, got a string");

    ferry_value_release(s);
    ferry_value_release(i);
    ferry_value_release(b);
}

Test(value_get, refuses_null_out_with_einval, .timeout = 5)
{
    ferry_value *i = ferry_assert_ptr(ferry_int(1));
    ferry_value *l = ferry_assert_ptr(ferry_list_of(1, ferry_int(1)));
    ferry_value *d = ferry_assert_ptr(ferry_dict_new());
    ferry_assert_status(ferry_value_get_int(i, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_int: NULL out");
    ferry_assert_status(ferry_value_get_bool(i, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_bool: NULL out");
    ferry_assert_status(ferry_value_get_double(i, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_double: NULL out");
    ferry_assert_status(ferry_value_get_string(i, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_string: NULL out");
    ferry_assert_status(ferry_value_get_bytes(i, NULL, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_bytes: NULL out");
    ferry_assert_status(ferry_value_get_tensor(i, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_tensor: NULL out");
    ferry_assert_status(ferry_value_get_rref(i, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_rref: NULL out");
    ferry_assert_status(ferry_list_at(l, 0, NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_list_at: NULL out");
    ferry_assert_status(ferry_dict_lookup(d, "k", NULL), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_dict_lookup: NULL out");
    ferry_value_release(i);
    ferry_value_release(l);
    ferry_value_release(d);
}

Test(value_get, reads_list_and_dict_items_by_status, .timeout = 5)
{
    ferry_value *l = ferry_assert_ptr(ferry_list_of(2, ferry_int(0), ferry_string("b")));
    ferry_value *d = ferry_assert_ptr(ferry_dict_new());
    ferry_value *lr = ferry_assert_ptr(ferry_double(0.1));
    ferry_assert_ok(ferry_dict_set(d, "lr", lr));

    ferry_value *got = NULL;
    stale_failure();
    ferry_assert_ok(ferry_list_at(l, 0, &got));
    cr_assert_eq(ferry_last_status(), FERRY_OK);
    cr_assert_eq(got, ferry_list_get(l, 0), "borrowed");
    ferry_assert_ok(ferry_list_at(l, 1, &got));
    cr_assert_str_eq(ferry_value_as_string(got), "b");
    ferry_value *keep = got;
    ferry_assert_status(ferry_list_at(l, 2, &got), FERRY_EINVAL);
    cr_assert_eq(got, keep, "out left alone");
    cr_assert_str_eq(ferry_last_error(), "ferry_list_at: list index 2 out of range (length 2)");
    ferry_assert_status(ferry_list_at(d, 0, &got), FERRY_ETYPE);
    cr_assert_str_eq(ferry_last_error(), "ferry_list_at: expected a list, got a dict");
    ferry_assert_status(ferry_list_at(NULL, 0, &got), FERRY_ETYPE);
    cr_assert_str_eq(ferry_last_error(), "ferry_list_at: expected a list, got NULL");

    stale_failure();
    ferry_assert_ok(ferry_dict_lookup(d, "lr", &got));
    cr_assert_eq(got, lr);
    cr_assert_eq(ferry_last_status(), FERRY_OK);
    ferry_assert_status(ferry_dict_lookup(d, "momentum", &got), FERRY_EINVAL);
    cr_assert_eq(got, lr, "out left alone");
    cr_assert_str_eq(ferry_last_error(), "ferry_dict_lookup: key 'momentum' not in dict");
    ferry_assert_status(ferry_dict_lookup(d, NULL, &got), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "ferry_dict_lookup: NULL key");
    ferry_assert_status(ferry_dict_lookup(l, "lr", &got), FERRY_ETYPE);
    cr_assert_str_eq(ferry_last_error(), "ferry_dict_lookup: expected a dict, got a list");
    ferry_value_release(l);
    ferry_value_release(d);
    ferry_value_release(lr);
}

Test(value_get, reads_objects_and_describes_them_when_kind_mismatches, .timeout = 5)
{
    struct ferry_rref r = {.refs = 1}, obj = {.refs = 1};
    ferry_assert_ok(ferry__value_register_kind(FERRY_VALUE_RREF, &fake_rref_ops));
    ferry_assert_ok(ferry__value_register_kind(FERRY_VALUE_OBJECT, &fake_object_ops));
    ferry_value *rv = ferry_assert_ptr(ferry_rref_value(&r));
    ferry_value *ov = ferry_assert_ptr(ferry__value_of_object(FERRY_VALUE_OBJECT, &obj));

    ferry_rref *got = NULL;
    stale_failure();
    ferry_assert_ok(ferry_value_get_rref(rv, &got));
    cr_assert_eq(got, &r);
    cr_assert_eq(ferry_last_status(), FERRY_OK);
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_value_as_rref(rv), &r));

    ferry_assert_status(ferry_value_get_rref(ov, &got), FERRY_ETYPE);
    cr_assert_str_eq(ferry_last_error(),
                     "ferry_value_get_rref: expected an rref, got an object of class 'Net'");
    ASSERT_FAILS(cr_assert_eq(ferry_value_as_int(ov), 0), FERRY_ETYPE,
                 "ferry_value_as_int: expected an int, got an object of class 'Net'");
    ASSERT_FAILS(cr_assert_null(ferry_value_as_tensor(rv)), FERRY_ETYPE,
                 "ferry_value_as_tensor: expected a tensor, got an rref");

    ferry_value_release(rv);
    ferry_value_release(ov);
    cr_assert_eq(r.refs, 1);
    cr_assert_eq(obj.refs, 1);
}

Test(value_get, reads_tensors_by_status, .timeout = 5)
{
    const float data[2] = {0, 0};
    const int64_t sizes[1] = {2};
    ferry_tensor *t = ferry_assert_ptr(ferry_tensor_from_data(data, 1, sizes, FERRY_FLOAT32));
    ferry_value *v = ferry_assert_ptr(ferry_tensor_value(t));
    ferry_tensor *got = NULL;
    stale_failure();
    ferry_assert_ok(ferry_value_get_tensor(v, &got));
    cr_assert_eq(got, t, "borrowed: the value's own tensor");
    cr_assert_eq(ferry_last_status(), FERRY_OK);
    ASSERT_OK_OVER_STALE(cr_assert_eq(ferry_value_as_tensor(v), t));
    int64_t iv = 3;
    ferry_assert_status(ferry_value_get_int(v, &iv), FERRY_ETYPE);
    cr_assert_eq(iv, 3);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_get_int: expected an int, got a tensor");
    ferry_value_release(v);
    ferry_tensor_release(t);
}
