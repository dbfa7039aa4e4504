/* Unit tests for the function registry: a name is taken once (the same function again is a
   no-op, another is refused, builtins included), the replace calls swap what a name runs,
   unregistering frees a name without losing any other, however the names collide in the table,
   and ferry_builtins lists exactly the builtins registered, each with its row in
   docs/builtins.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/registry.h"
#include "test_util.h"

static ferry_status fn_a(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                         void *user)
{
    *result = NULL;
    return FERRY_OK;
}

static ferry_status fn_b(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                         void *user)
{
    *result = NULL;
    return FERRY_OK;
}

Test(registry, takes_a_name_once_when_another_function_asks_for_it, .timeout = 5)
{
    cr_assert_eq(ferry_register_function("reg_once", fn_a, NULL), FERRY_OK);
    cr_expect_eq(ferry_register_function("reg_once", fn_a, NULL), FERRY_EINVAL, "the same again");
    cr_expect(strstr(ferry_last_error(), "'reg_once' is already registered (by an earlier call "
                                         "with this same function)"),
              "%s", ferry_last_error());
    cr_expect_eq(ferry_register_function("reg_once", fn_b, NULL), FERRY_EINVAL);
    cr_expect(strstr(ferry_last_error(), "'reg_once' is already registered with another"), "%s",
              ferry_last_error());
    cr_expect(strstr(ferry_last_error(), "ferry_unregister_function"), "%s", ferry_last_error());
    cr_expect_eq(ferry_register_function("reg_once", fn_a, (void *)1), FERRY_EINVAL,
                 "another user pointer is another function");
    cr_expect_eq(ferry_register_nonblocking_function("reg_once", fn_a, NULL), FERRY_EINVAL,
                 "another kind too");
    ferry__fn_entry e;
    cr_assert(ferry__registry_lookup("reg_once", &e));
    cr_expect(e.fn == fn_a && e.kind == FERRY__FN_SYNC, "the first registration stands");
}

/* ferry's own modules register at every start: for them the same function again is a no-op. */
Test(registry, lets_a_module_register_its_function_at_every_start, .timeout = 5)
{
    cr_assert_eq(ferry__register_module_function("reg_module", fn_a, NULL), FERRY_OK);
    cr_expect_eq(ferry__register_module_function("reg_module", fn_a, NULL), FERRY_OK);
    cr_expect_eq(ferry__register_module_function("reg_module", fn_b, NULL), FERRY_EINVAL);
    cr_expect_eq(ferry_register_function("reg_module", fn_a, NULL), FERRY_EINVAL);
    cr_expect_eq(ferry_replace_function("reg_module", fn_b, NULL), FERRY_OK);
    ferry__fn_entry e;
    cr_assert(ferry__registry_lookup("reg_module", &e));
    cr_expect(e.fn == fn_b);
}

Test(registry, refuses_a_builtins_name_until_it_is_unregistered, .timeout = 5)
{
    cr_expect_eq(ferry_register_function("torch.add", fn_a, NULL), FERRY_EINVAL);
    cr_expect(strstr(ferry_last_error(), "(it is a builtin)"), "%s", ferry_last_error());
    cr_expect_eq(ferry_register_nonblocking_function("min", fn_a, NULL), FERRY_EINVAL);
    cr_assert_eq(ferry_unregister_function("torch.add"), FERRY_OK);
    ferry__fn_entry e;
    cr_expect_not(ferry__registry_lookup("torch.add", &e));
    cr_assert_eq(ferry_register_function("torch.add", fn_b, NULL), FERRY_OK);
    cr_assert(ferry__registry_lookup("torch.add", &e));
    cr_expect(e.fn == fn_b);
}

Test(registry, keeps_every_other_name_when_one_is_unregistered, .timeout = 10)
{
    enum { N = 500 };
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "many_%d", i);
        cr_assert_eq(ferry_register_function(name, fn_a, (void *)(intptr_t)i), FERRY_OK);
    }
    /* Drop every third name, then check each one's presence and entry. */
    for (int i = 0; i < N; i += 3) {
        snprintf(name, sizeof name, "many_%d", i);
        cr_assert_eq(ferry_unregister_function(name), FERRY_OK);
    }
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "many_%d", i);
        ferry__fn_entry e;
        bool found = ferry__registry_lookup(name, &e);
        cr_assert_eq(found, i % 3 != 0, "%s", name);
        if (found)
            cr_assert_eq(e.user, (void *)(intptr_t)i, "%s keeps its own entry", name);
    }
    cr_expect_eq(ferry_unregister_function("many_0"), FERRY_EINVAL, "gone already");
    cr_expect(strstr(ferry_last_error(), "no function named 'many_0'"), "%s", ferry_last_error());
    cr_expect_eq(ferry_unregister_function(NULL), FERRY_EINVAL);
}

static ferry_future *async_a(const ferry_value *args, const ferry_value *kwargs, void *user)
{
    return NULL;
}

Test(registry, swaps_the_function_when_asked_to_replace_it, .timeout = 5)
{
    ferry__fn_entry e;
    cr_assert_eq(ferry_register_function("swap_me", fn_a, NULL), FERRY_OK);
    cr_expect_eq(ferry_register_function("swap_me", fn_b, NULL), FERRY_EINVAL,
                 "plain register still refuses a taken name");
    cr_expect(strstr(ferry_last_error(), "ferry_replace_function(\"swap_me\", ...) replaces it"),
              "%s", ferry_last_error());
    cr_assert_eq(ferry_replace_function("swap_me", fn_b, (void *)2), FERRY_OK);
    cr_assert(ferry__registry_lookup("swap_me", &e));
    cr_expect(e.fn == fn_b && e.user == (void *)2 && e.kind == FERRY__FN_SYNC);
    cr_assert_eq(ferry_replace_nonblocking_function("swap_me", fn_a, NULL), FERRY_OK);
    cr_assert(ferry__registry_lookup("swap_me", &e));
    cr_expect(e.fn == fn_a && e.kind == FERRY__FN_NONBLOCKING);
    cr_assert_eq(ferry_replace_async_function("swap_me", async_a, NULL), FERRY_OK);
    cr_assert(ferry__registry_lookup("swap_me", &e));
    cr_expect(e.async_fn == async_a && e.kind == FERRY__FN_ASYNC);
    /* A free name is simply registered; bad arguments are refused as by register. */
    cr_expect_eq(ferry_replace_function("swap_new", fn_a, NULL), FERRY_OK);
    cr_expect(ferry__registry_lookup("swap_new", &e) && e.fn == fn_a);
    cr_expect_eq(ferry_replace_function("swap_new", NULL, NULL), FERRY_EINVAL);
    cr_expect_eq(ferry_replace_function("", fn_a, NULL), FERRY_EINVAL);
    cr_expect_eq(ferry_replace_async_function("swap_new", NULL, NULL), FERRY_EINVAL);
    cr_expect(ferry__registry_lookup("swap_new", &e) && e.fn == fn_a, "a refusal changes nothing");
}

Test(registry, lists_exactly_the_registered_builtins_when_asked, .timeout = 5)
{
    size_t n = 0;
    cr_assert_eq(ferry_builtins(NULL, 0, &n), FERRY_OK);
    cr_assert_gt(n, 40);
    cr_expect_eq(n, ferry__registry_builtin_count());
    ferry_builtin_info *all = calloc(n, sizeof *all);
    size_t again = 0;
    cr_assert_eq(ferry_builtins(all, n, &again), FERRY_OK);
    cr_expect_eq(again, n);
    for (size_t i = 0; i < n; i++) {
        ferry__fn_entry e;
        cr_expect(ferry__registry_lookup(all[i].name, &e) && ferry__registry_is_builtin(all[i].name),
                  "%s", all[i].name);
        cr_expect(!strncmp(all[i].signature, all[i].name, strlen(all[i].name)) &&
                      all[i].signature[strlen(all[i].name)] == '(',
                  "the signature starts with the name: %s", all[i].signature);
        cr_expect(all[i].summary && *all[i].summary, "%s", all[i].name);
    }
    cr_expect_eq(ferry_builtins(NULL, 1, NULL), FERRY_EINVAL);
    /* A replaced builtin is the program's own: no longer listed, one builtin fewer. */
    cr_assert_eq(ferry_replace_function("torch.sub", fn_a, NULL), FERRY_OK);
    size_t after = 0;
    cr_assert_eq(ferry_builtins(all, n, &after), FERRY_OK);
    cr_expect_eq(after, n - 1);
    cr_expect_eq(ferry__registry_builtin_count(), n - 1);
    for (size_t i = 0; i < after; i++)
        cr_expect(strcmp(all[i].name, "torch.sub"), "torch.sub is listed after its replacement");
    free(all);
}

Test(registry, has_a_docs_row_for_every_builtin_and_no_other, .timeout = 5)
{
    size_t len = 0;
    char *doc = (char *)ferry_test_read_file("docs/builtins.md", &len);
    doc[len] = '\0'; /* the spare byte */
    size_t n = 0;
    ferry_builtins(NULL, 0, &n);
    ferry_builtin_info *all = calloc(n, sizeof *all);
    ferry_builtins(all, n, NULL);
    char row[256];
    for (size_t i = 0; i < n; i++) {
        snprintf(row, sizeof row, "\n| `%s` |", all[i].signature);
        cr_expect(strstr(doc, row), "docs/builtins.md has no row for %s", all[i].signature);
    }
    size_t rows = 0;
    for (const char *p = doc; (p = strstr(p, "\n| `")); p++)
        rows++;
    cr_expect_eq(rows, n, "docs/builtins.md has %zu builtin rows, ferry_builtins %zu", rows, n);
    free(all);
    free(doc);
}
