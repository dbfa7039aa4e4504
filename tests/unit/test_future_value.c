/* Unit tests for futures as values (FERRY_VALUE_FUTURE): building and reading them, the
   reference a value holds, equality by identity, the format torch prints, errors for bad
   arguments, and the wire refusing to carry one wherever it sits in a message. */
#include <stdio.h>
#include <string.h>

#include "rpc/wire.h"
#include "test_util.h"

Test(future_value, holds_the_future_and_keeps_it_alive, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_value *v = ferry_assert_ptr(ferry_value_of_future(f));
    cr_assert_eq(ferry_value_kind(v), FERRY_VALUE_FUTURE);
    cr_assert_str_eq(ferry_kind_name(FERRY_VALUE_FUTURE), "future");
    cr_assert_eq(ferry_value_as_future(v), f);
    ferry_future_release(f); /* the value's reference keeps it */
    ferry_value *i = ferry_assert_ptr(ferry_int(9));
    ferry_assert_ok(ferry_future_set_value(ferry_value_as_future(v), i));
    ferry_value *got = ferry_assert_ptr(ferry_future_value(ferry_value_as_future(v)));
    cr_assert_eq(ferry_value_as_int(got), 9);
    ferry_value_release(got);
    ferry_value_release(i);
    ferry_value_release(v);
}

Test(future_value, equals_only_a_value_of_the_same_future, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_future *g = ferry_assert_ptr(ferry_future_new());
    ferry_value *a = ferry_assert_ptr(ferry_value_of_future(f));
    ferry_value *b = ferry_assert_ptr(ferry_value_of_future(f));
    ferry_value *c = ferry_assert_ptr(ferry_value_of_future(g));
    cr_assert(ferry_value_equal(a, b));
    cr_assert_not(ferry_value_equal(a, c));
    ferry_value *la = ferry_list_of(2, ferry_value_retain(a), ferry_int(1));
    ferry_value *lb = ferry_list_of(2, ferry_value_retain(b), ferry_int(1));
    ferry_value *lc = ferry_list_of(2, ferry_value_retain(c), ferry_int(1));
    cr_assert(ferry_value_equal(la, lb));
    cr_assert_not(ferry_value_equal(la, lc));
    ferry_value_release(la);
    ferry_value_release(lb);
    ferry_value_release(lc);
    ferry_value_release(a);
    ferry_value_release(b);
    ferry_value_release(c);
    ferry_future_release(f);
    ferry_future_release(g);
}

Test(future_value, formats_as_torch_prints_a_future, .timeout = 5)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_value *v = ferry_list_of(2, ferry_value_of_future(f), ferry_int(3));
    char want[96], got[96];
    snprintf(want, sizeof want, "[<torch.jit.Future object at %p>, 3]", (void *)f);
    size_t n = ferry_value_format(v, got, sizeof got);
    cr_assert_str_eq(got, want);
    cr_assert_eq(n, strlen(want));
    cr_assert_eq(ferry_value_format(v, NULL, 0), strlen(want));
    char small[8];
    ferry_value_format(v, small, sizeof small); /* truncated, still terminated */
    cr_assert_eq(strlen(small), sizeof small - 1);
    ferry_value_release(v);
    ferry_future_release(f);
}

Test(future_value, refuses_null_and_other_kinds, .timeout = 5)
{
    cr_assert_null(ferry_value_of_future(NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "NULL future");
    ferry_value *i = ferry_assert_ptr(ferry_int(1));
    cr_assert_null(ferry_value_as_future(i));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    cr_assert_str_eq(ferry_last_error(), "ferry_value_as_future: expected a future value, got int");
    cr_assert_null(ferry_value_as_future(NULL));
    cr_assert_str_eq(ferry_last_error(), "ferry_value_as_future: expected a future value, got NULL");
    ferry_value_release(i);
}

Test(future_value, is_refused_by_the_wire_wherever_it_sits, .timeout = 10)
{
    ferry_future *f = ferry_assert_ptr(ferry_future_new());
    ferry_value *fv = ferry_assert_ptr(ferry_value_of_future(f));
    ferry_value *nested = ferry_list_of(2, ferry_int(1), ferry_list_of(1, ferry_value_retain(fv)));
    ferry_value *kw = ferry_assert_ptr(ferry_dict_new());
    ferry_assert_ok(ferry_dict_set(kw, "fut", fv));
    ferry__msg msgs[] = {
        {.type = FERRY__MSG_CALL, .id = 1, .fn = "f", .args = nested},
        {.type = FERRY__MSG_CALL, .id = 2, .fn = "f", .kwargs = kw},
        {.type = FERRY__MSG_RESPONSE, .id = 3, .value = fv},
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        ferry__wire_out out;
        ferry_assert_status(ferry__wire_encode(&msgs[i], NULL, &out), FERRY_EINVAL);
        cr_assert(strstr(ferry_last_error(), ": cannot send a future (Can not pickle "
                                             "torch.futures.Future): it stays on the worker "
                                             "that made it; send its value"),
                  "%s", ferry_last_error());
    }
    ferry_value_release(nested);
    ferry_value_release(kw);
    ferry_value_release(fv);
    ferry_future_release(f);
}
