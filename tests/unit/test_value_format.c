/* Unit tests for ferry_value_format: every kind written as Python's repr writes it (the
   expected strings are what Python 3 prints for the same values), tensors as torch prints
   them, and snprintf's contract on short buffers. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ferry/ferry.h"
#include "test_util.h"

static void expect_format(ferry_value *v, const char *want)
{
    char buf[256];
    size_t n = ferry_value_format(v, buf, sizeof buf);
    cr_expect_str_eq(buf, want);
    cr_expect_eq(n, strlen(want), "length of %s", want);
    ferry_value_release(v);
}

Test(value_format, writes_scalars_as_python_repr, .timeout = 5)
{
    expect_format(ferry_none(), "None");
    expect_format(ferry_bool(true), "True");
    expect_format(ferry_bool(false), "False");
    expect_format(ferry_int(0), "0");
    expect_format(ferry_int(-7), "-7");
    expect_format(ferry_int(INT64_C(4611686018427387904)), "4611686018427387904");
}

Test(value_format, writes_doubles_with_the_fewest_digits_python_uses, .timeout = 5)
{
    expect_format(ferry_double(0.1), "0.1");
    expect_format(ferry_double(1.0), "1.0");
    expect_format(ferry_double(-0.0), "-0.0");
    expect_format(ferry_double(1e16), "1e+16");
    expect_format(ferry_double(1e15), "1000000000000000.0");
    expect_format(ferry_double(123456.789), "123456.789");
    expect_format(ferry_double(1.5e-05), "1.5e-05");
    expect_format(ferry_double(0.0001), "0.0001");
    expect_format(ferry_double(1.0 / 3.0), "0.3333333333333333");
    expect_format(ferry_double(2.5e-300), "2.5e-300");
    expect_format(ferry_double(INFINITY), "inf");
    expect_format(ferry_double(-INFINITY), "-inf");
    expect_format(ferry_double(NAN), "nan");
}

Test(value_format, quotes_strings_and_bytes_as_python_does, .timeout = 5)
{
    expect_format(ferry_string("it's"), "\"it's\"");
    expect_format(ferry_string("say \"hi\""), "'say \"hi\"'");
    expect_format(ferry_string("both ' and \""), "'both \\' and \"'");
    expect_format(ferry_string("tab\there\n"), "'tab\\there\\n'");
    expect_format(ferry_string("caf\xc3\xa9"), "'caf\xc3\xa9'");
    expect_format(ferry_bytes("\x00" "ab\xff", 4), "b'\\x00ab\\xff'");
}

Test(value_format, writes_containers_and_tensors_nested, .timeout = 5)
{
    expect_format(ferry_list_of(2, ferry_int(1), ferry_list_of(2, ferry_double(2.5),
                                                               ferry_string("x"))),
                  "[1, [2.5, 'x']]");
    ferry_value *d = ferry_dict_new();
    cr_assert_eq(ferry_dict_set(d, "a", ferry_int(1)), FERRY_OK);
    cr_assert_eq(ferry_dict_set(d, "b", ferry_list_of(1, ferry_none())), FERRY_OK);
    expect_format(d, "{'a': 1, 'b': [None]}");
    expect_format(ferry_list_of(0), "[]");
    expect_format(ferry_dict_new(), "{}");
    int64_t two = 2;
    ferry_tensor *t = ferry_ones(1, &two, FERRY_FLOAT32);
    char tbuf[64];
    ferry_tensor_format(t, tbuf, sizeof tbuf);
    char want[96];
    snprintf(want, sizeof want, "[%s, None]", tbuf);
    expect_format(ferry_list_of(2, ferry_tensor_value(t), ferry_none()), want);
    ferry_tensor_release(t);
    expect_format(NULL, "NULL");
}

Test(value_format, cuts_short_buffers_and_says_the_length_needed, .timeout = 5)
{
    ferry_value *v = ferry_list_of(3, ferry_string("abc"), ferry_int(12345), ferry_double(0.5));
    const char *whole = "['abc', 12345, 0.5]";
    char small[8];
    cr_expect_eq(ferry_value_format(v, small, sizeof small), strlen(whole));
    cr_expect_str_eq(small, "['abc',");
    cr_expect_eq(ferry_value_format(v, NULL, 0), strlen(whole));
    int64_t n = 3;
    ferry_tensor *t = ferry_zeros(1, &n, FERRY_FLOAT64);
    ferry_value *tv = ferry_list_of(1, ferry_tensor_value(t));
    char full[128], cut[10];
    size_t need = ferry_value_format(tv, full, sizeof full);
    cr_expect_eq(ferry_value_format(tv, cut, sizeof cut), need);
    cr_expect_eq(strncmp(cut, full, sizeof cut - 1), 0, "a cut tensor keeps its first bytes");
    cr_expect_eq(cut[sizeof cut - 1], '\0');
    ferry_value_release(tv);
    ferry_tensor_release(t);
    ferry_value_release(v);
}
