/* Unit tests for values: every kind round trips, nesting, dict order and sharing rules, kind
   mismatches, the stealing builders, deep release, equality and out-of-memory unwinding.
   Tensor-valued cases live in test_value_tensor.c. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/value_impl.h"
#include "test_util.h"

Test(value_scalar, round_trips_when_built_from_each_kind, .timeout = 5)
{
    ferry_value *n = ferry_assert_ptr(ferry_none());
    ferry_value *b = ferry_assert_ptr(ferry_bool(true));
    ferry_value *i = ferry_assert_ptr(ferry_int(INT64_MIN));
    ferry_value *d = ferry_assert_ptr(ferry_double(-2.5));
    cr_assert_eq(ferry_value_kind(n), FERRY_VALUE_NONE);
    cr_assert_eq(ferry_value_kind(b), FERRY_VALUE_BOOL);
    cr_assert(ferry_value_as_bool(b));
    cr_assert_eq(ferry_value_as_int(i), INT64_MIN);
    cr_assert_eq(ferry_value_as_double(d), -2.5);
    ferry_value *seven = ferry_assert_ptr(ferry_int(7));
    cr_assert_eq(ferry_value_as_double(seven), 7.0, "as_double accepts an int");
    cr_assert_str_eq(ferry_kind_name(ferry_value_kind(d)), "double");
    ferry_value *values[] = {n, b, i, d, seven};
    for (size_t k = 0; k < 5; k++)
        ferry_value_release(values[k]);
}

Test(value_string, keeps_length_when_data_has_embedded_nul, .timeout = 5)
{
    ferry_value *s = ferry_assert_ptr(ferry_string("héllo"));
    cr_assert_str_eq(ferry_value_as_string(s), "héllo");
    cr_assert_eq(ferry_value_len(s), strlen("héllo"));

    ferry_value *sn = ferry_assert_ptr(ferry_string_n("a\0b", 3));
    cr_assert_eq(ferry_value_len(sn), 3);
    cr_assert_eq(memcmp(ferry_value_as_string(sn), "a\0b", 4), 0, "copy is NUL-terminated");

    const unsigned char raw[] = {0, 1, 0, 255};
    size_t len = 0;
    ferry_value *by = ferry_assert_ptr(ferry_bytes(raw, sizeof raw));
    const void *p = ferry_value_as_bytes(by, &len);
    cr_assert_eq(len, sizeof raw);
    cr_assert_eq(memcmp(p, raw, sizeof raw), 0);

    ferry_value *empty = ferry_assert_ptr(ferry_bytes(NULL, 0));
    cr_assert_eq(ferry_value_len(empty), 0);
    cr_assert_null(ferry_string(NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_bytes(NULL, 3));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_value_release(s);
    ferry_value_release(sn);
    ferry_value_release(by);
    ferry_value_release(empty);
}

Test(value_accessor, fails_with_etype_when_kind_mismatches, .timeout = 5)
{
    ferry_value *s = ferry_assert_ptr(ferry_string("x"));
    ferry_value *i = ferry_assert_ptr(ferry_int(3));
    ferry_clear_error();
    cr_assert_eq(ferry_value_as_int(s), 0);
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    cr_assert(strstr(ferry_last_error(), "string") != NULL, "message names the kind: %s",
              ferry_last_error());
    ferry_clear_error();
    cr_assert_not(ferry_value_as_bool(i));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_eq(ferry_value_as_double(s), 0.0);
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_null(ferry_value_as_string(i));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    size_t len = 99;
    cr_assert_null(ferry_value_as_bytes(s, &len));
    cr_assert_eq(len, 0);
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_eq(ferry_value_len(i), 0);
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_null(ferry_value_as_tensor(i));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_null(ferry_value_as_rref(i));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_eq(ferry_list_len(i), 0);
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_null(ferry_list_get(s, 0));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_eq(ferry_dict_len(s), 0);
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_null(ferry_dict_get(i, "k"));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_assert_status(ferry_dict_set(i, "k", s), FERRY_ETYPE);
    ferry_clear_error();
    cr_assert_eq(ferry_value_as_int(NULL), 0);
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_value_release(s);
    ferry_value_release(i);
}

Test(value_list, nests_when_built_with_list_of_and_args, .timeout = 5)
{
    ferry_value *inner = ferry_assert_ptr(ferry_list_of(2, ferry_int(1), ferry_string("two")));
    ferry_value *args = ferry_assert_ptr(ferry_args(3, ferry_none(), inner, ferry_list_of(0)));
    cr_assert_eq(ferry_list_len(args), 3);
    cr_assert_eq(ferry_value_kind(ferry_list_get(args, 0)), FERRY_VALUE_NONE);
    ferry_value *got = ferry_list_get(args, 1);
    cr_assert_eq(got, inner, "the item is stolen, not copied");
    cr_assert_eq(ferry_value_as_int(ferry_list_get(got, 0)), 1);
    cr_assert_str_eq(ferry_value_as_string(ferry_list_get(got, 1)), "two");
    cr_assert_eq(ferry_list_len(ferry_list_get(args, 2)), 0);
    ferry_clear_error();
    cr_assert_null(ferry_list_get(args, 3));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_value_release(args);
}

Test(value_list, borrows_items_when_built_with_list_from, .timeout = 5)
{
    ferry_value *a = ferry_assert_ptr(ferry_int(1));
    ferry_value *b = ferry_assert_ptr(ferry_int(2));
    ferry_value *items[] = {a, b};
    ferry_value *list = ferry_assert_ptr(ferry_list_from(items, 2));
    ferry_value_release(a);
    ferry_value_release(b);
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 1)), 2, "items were retained");
    ferry_value *holey[] = {list, NULL};
    cr_assert_null(ferry_list_from(holey, 2));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_value_release(list);
}

Test(value_list, releases_other_items_when_an_item_is_null, .timeout = 5)
{
    ferry_clear_error();
    cr_assert_null(ferry_list_of(3, ferry_int(1), NULL, ferry_string("leaks if kept")));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "1") != NULL, "names the index: %s",
              ferry_last_error());

    /* A failed constructor inside the call keeps its own error. */
    ferry_clear_error();
    cr_assert_null(ferry_args(2, ferry_int(5), ferry_string(NULL)));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "NULL string") != NULL, "%s", ferry_last_error());
    ferry_clear_error();
    ferry__alloc_fail_after(2, 0); /* the string's copy */
    cr_assert_null(ferry_args(2, ferry_int(5), ferry_string("x")));
    ferry__alloc_fail_after(0, 0);
    cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
}

typedef struct {
    ferry_value *a, *b;
    bool equal_self, equal_deeper;
} deep_pair;

/* Runs on a thread with a small stack: recursion 100k deep would overflow it. */
static void *compare_and_release(void *arg)
{
    deep_pair *p = arg;
    ferry_value *wrapped = ferry_list_of(1, ferry_value_retain(p->a));
    p->equal_self = ferry_value_equal(p->a, p->a);
    p->equal_deeper = ferry_value_equal(p->a, wrapped);
    ferry_value_release(wrapped); /* only the wrapper dies: a still holds the chain */
    ferry_value_release(p->a);
    ferry_value_release(p->b);
    return NULL;
}

Test(value_list, frees_without_deep_recursion_when_nested_100k_deep, .timeout = 20)
{
    enum { DEPTH = 100000 };
    deep_pair p = {.a = ferry_assert_ptr(ferry_string("leaf")),
                   .b = ferry_assert_ptr(ferry_string("leaf"))};
    for (int i = 0; i < DEPTH; i++) {
        p.a = ferry_assert_ptr(ferry_list_of(1, p.a));
        p.b = ferry_assert_ptr(ferry_list_of(2, ferry_int(i), p.b));
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, &attr, compare_and_release, &p), 0);
    pthread_join(th, NULL);
    pthread_attr_destroy(&attr);
    cr_assert(p.equal_self);
    cr_assert_not(p.equal_deeper, "depths differ by one");
}

Test(value_dict, keeps_insertion_order_when_a_key_is_replaced, .timeout = 5)
{
    ferry_value *d = ferry_assert_ptr(ferry_dict_new());
    const char *keys[] = {"zeta", "alpha", "mid", "b"};
    for (int i = 0; i < 4; i++) {
        ferry_value *v = ferry_assert_ptr(ferry_int(i));
        ferry_assert_ok(ferry_dict_set(d, keys[i], v));
        ferry_value_release(v);
    }
    ferry_value *repl = ferry_assert_ptr(ferry_string("new"));
    ferry_assert_ok(ferry_dict_set(d, "alpha", repl));
    ferry_value_release(repl);
    cr_assert_eq(ferry_dict_len(d), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_str_eq(ferry_dict_key_at(d, (size_t)i), keys[i]);
    cr_assert_str_eq(ferry_value_as_string(ferry_dict_get(d, "alpha")), "new");
    cr_assert_str_eq(ferry_value_as_string(ferry_dict_value_at(d, 1)), "new");
    cr_assert_eq(ferry_value_as_int(ferry_dict_get(d, "b")), 3);
    ferry_clear_error();
    cr_assert_null(ferry_dict_get(d, "absent"));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_dict_key_at(d, 4));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_value_release(d);
}

Test(value_dict, refuses_set_when_shared, .timeout = 5)
{
    ferry_value *d = ferry_assert_ptr(ferry_dict_new());
    ferry_value *v = ferry_assert_ptr(ferry_int(1));
    ferry_assert_ok(ferry_dict_set(d, "k", v));
    ferry_value *other = ferry_value_retain(d);
    ferry_assert_status(ferry_dict_set(d, "k2", v), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "dict is shared") != NULL, "%s", ferry_last_error());
    ferry_value_release(other);
    ferry_assert_status(ferry_dict_set(d, "self", d), FERRY_EINVAL);
    ferry_assert_status(ferry_dict_set(d, NULL, v), FERRY_EINVAL);
    ferry_assert_status(ferry_dict_set(d, "k", NULL), FERRY_EINVAL);
    cr_assert_eq(ferry_dict_len(d), 1);
    ferry_value_release(v);
    ferry_value_release(d);
}

Test(value_dict, steals_value_and_takes_key_length_when_set_internally, .timeout = 5)
{
    ferry_value *d = ferry_assert_ptr(ferry_dict_new());
    ferry_assert_ok(ferry__dict_set_n(d, "keyTRAILING", 3, ferry_int(9)));
    cr_assert_eq(ferry_value_as_int(ferry_dict_get(d, "key")), 9);
    ferry_assert_status(ferry__dict_set_n(d, "a\0b", 3, ferry_int(1)), FERRY_EINVAL);
    ferry_value *list = ferry_assert_ptr(ferry__list_new(2));
    ferry__list_set(list, 0, ferry_int(4));
    ferry__list_set(list, 1, d);
    cr_assert_eq(ferry_value_as_int(ferry_list_get(list, 0)), 4);
    ferry_value_release(list);
}

Test(value_equal, compares_deeply_when_kinds_and_contents_match, .timeout = 5)
{
    ferry_value *a = ferry_assert_ptr(ferry_dict_new());
    ferry_value *b = ferry_assert_ptr(ferry_dict_new());
    ferry_value *l1 = ferry_assert_ptr(ferry_list_of(3, ferry_int(1), ferry_double(0.5),
                                                     ferry_bytes("\0x", 2)));
    ferry_value *l2 = ferry_assert_ptr(ferry_list_of(3, ferry_int(1), ferry_double(0.5),
                                                     ferry_bytes("\0x", 2)));
    ferry_assert_ok(ferry_dict_set(a, "l", l1));
    ferry_assert_ok(ferry_dict_set(b, "l", l2));
    cr_assert(ferry_value_equal(a, b));
    cr_assert(ferry_value_equal(l1, l2));

    ferry_value *i1 = ferry_assert_ptr(ferry_int(1));
    ferry_value *d1 = ferry_assert_ptr(ferry_double(1.0));
    ferry_value *s = ferry_assert_ptr(ferry_string_n("\0x", 2));
    ferry_value *by = ferry_assert_ptr(ferry_bytes("\0x", 2));
    ferry_value *by2 = ferry_assert_ptr(ferry_bytes("\0y", 2));
    cr_assert_not(ferry_value_equal(i1, d1), "int and double are different kinds");
    cr_assert_not(ferry_value_equal(s, by), "string and bytes are different kinds");
    cr_assert_not(ferry_value_equal(by, by2), "embedded NUL does not end the comparison");
    ferry_assert_ok(ferry_dict_set(b, "extra", i1));
    cr_assert_not(ferry_value_equal(a, b));
    cr_assert_not(ferry_value_equal(a, NULL));
    ferry_value *vs[] = {a, b, l1, l2, i1, d1, s, by, by2};
    for (size_t k = 0; k < sizeof vs / sizeof vs[0]; k++)
        ferry_value_release(vs[k]);
}

/* A stand-in rref for the kind ops: rref/ is above core, so the test brings its own. */
struct ferry_rref {
    int refs;
    int id;
};

static void *fake_rref_retain(void *p)
{
    ferry_rref *r = p;
    r->refs++;
    return r;
}

static void fake_rref_release(void *p)
{
    ferry_rref *r = p;
    r->refs--;
}

static bool fake_rref_equal(const void *pa, const void *pb)
{
    const ferry_rref *a = pa, *b = pb;
    return a->id == b->id;
}

Test(value_rref, retains_through_kind_ops_when_wrapped, .timeout = 5)
{
    ferry_rref r = {.refs = 1, .id = 7}, same = {.refs = 1, .id = 7};
    /* rref/ installs its own ops from a constructor */
    ferry_assert_ok(ferry__value_register_kind(FERRY_VALUE_RREF, NULL));
    cr_assert_null(ferry_rref_value(&r), "no kind ops");
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(), "rref values need the rref module initialized");
    cr_assert_eq(r.refs, 1);
    static const ferry__value_kind_ops ops = {fake_rref_retain, fake_rref_release,
                                              fake_rref_equal, NULL, NULL};
    ferry_assert_ok(ferry__value_register_kind(FERRY_VALUE_RREF, &ops));
    ferry_value *v = ferry_assert_ptr(ferry_rref_value(&r));
    ferry_value *w = ferry_assert_ptr(ferry_rref_value(&same));
    cr_assert_eq(r.refs, 2);
    cr_assert_eq(ferry_value_as_rref(v), &r);
    cr_assert(ferry_value_equal(v, w));
    ferry_value *list = ferry_assert_ptr(ferry_list_of(2, v, w));
    ferry_value_release(list);
    cr_assert_eq(r.refs, 1);
    cr_assert_eq(same.refs, 1);
    cr_assert_null(ferry_rref_value(NULL));
    cr_assert_str_eq(ferry_last_error(), "NULL rref");
}

Test(value_rref, compares_by_identity_when_ops_have_no_equal, .timeout = 5)
{
    ferry_rref r = {.refs = 1, .id = 7}, same = {.refs = 1, .id = 7};
    static const ferry__value_kind_ops ops = {fake_rref_retain, fake_rref_release, NULL, NULL, NULL};
    ferry_assert_ok(ferry__value_register_kind(FERRY_VALUE_RREF, &ops));
    ferry_value *v = ferry_assert_ptr(ferry_rref_value(&r));
    ferry_value *v2 = ferry_assert_ptr(ferry_rref_value(&r));
    ferry_value *w = ferry_assert_ptr(ferry_rref_value(&same));
    cr_assert(ferry_value_equal(v, v2), "the same object");
    cr_assert_not(ferry_value_equal(v, w), "an equal id, but no equal op");
    ferry_value_release(v);
    ferry_value_release(v2);
    ferry_value_release(w);
    cr_assert_eq(r.refs, 1);
}

Test(value_kind, refuses_registration_when_kind_or_ops_are_wrong, .timeout = 5)
{
    static const ferry__value_kind_ops ops = {fake_rref_retain, fake_rref_release, NULL, NULL, NULL};
    static const ferry__value_kind_ops no_release = {fake_rref_retain, NULL, NULL, NULL, NULL};
    ferry_assert_status(ferry__value_register_kind(FERRY_VALUE_INT, &ops), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "int values hold no object"), "%s", ferry_last_error());
    ferry_assert_status(ferry__value_register_kind(FERRY_VALUE_LIST, NULL), FERRY_EINVAL);
    ferry_assert_status(ferry__value_register_kind((ferry_kind)99, &ops), FERRY_EINVAL);
    ferry_assert_status(ferry__value_register_kind((ferry_kind)-1, &ops), FERRY_EINVAL);
    ferry_assert_status(ferry__value_register_kind(FERRY_VALUE_RREF, &no_release), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "need retain and release"), "%s", ferry_last_error());
}

/* Builds a small tree of every container; NULL on failure. */
static ferry_value *build_tree(void)
{
    ferry_value *d = ferry_dict_new();
    if (!d)
        return NULL;
    ferry_value *l = ferry_list_of(3, ferry_string("abc"), ferry_bytes("xy", 2),
                                   ferry_list_of(1, ferry_double(1.5)));
    ferry_status rc = l ? ferry_dict_set(d, "list", l) : ferry_last_status();
    ferry_value_release(l);
    ferry_value *two = rc == FERRY_OK ? ferry_int(2) : NULL;
    if (rc == FERRY_OK)
        rc = two ? ferry__dict_set_n(d, "k2", 2, two) : ferry_last_status();
    for (int i = 0; rc == FERRY_OK && i < 6; i++) {
        char key[8] = {'k', 'e', 'y', (char)('0' + i), 0};
        ferry_value *v = ferry_bool(i % 2);
        rc = v ? ferry_dict_set(d, key, v) : ferry_last_status();
        ferry_value_release(v);
    }
    if (rc != FERRY_OK) {
        ferry_value_release(d);
        return NULL;
    }
    return d;
}

Test(value_alloc, returns_enomem_and_leaks_nothing_when_allocation_fails, .timeout = 10)
{
    int failures = 0;
    for (long nth = 1; nth < 64; nth++) {
        ferry_clear_error();
        ferry__alloc_fail_after(nth, 1);
        ferry_value *t = build_tree();
        ferry__alloc_fail_after(0, 0);
        if (t) {
            cr_assert_eq(ferry_dict_len(t), 8);
            ferry_value_release(t);
            break;
        }
        failures++;
        cr_assert_eq(ferry_last_status(), FERRY_ENOMEM, "allocation %ld: got %s: %s", nth,
                     ferry_strerror(ferry_last_status()), ferry_last_error());
    }
    cr_assert_gt(failures, 10, "every allocation along the way was tried");
    ferry__alloc_fail_after(1, 0);
    cr_assert_null(ferry_int(1));
    cr_assert_eq(ferry_last_status(), FERRY_ENOMEM);
}

/* Many keys: every key lands once, in insertion order, replacing keeps the position, and
   building and reading 200,000 keys stays linear (quadratic lookups took 11 s for 100,000). */
Test(value_dict, finds_every_key_when_it_holds_200k_entries, .timeout = 30)
{
    enum { N = 200000 };
    ferry_value *d = ferry_assert_ptr(ferry_dict_new());
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ferry_value *v = ferry_int(i);
        ferry_assert_ok(ferry_dict_set(d, key, v));
        ferry_value_release(v);
    }
    ferry_value *again = ferry_int(-7);
    ferry_assert_ok(ferry_dict_set(d, "k123", again)); /* replace: same position */
    ferry_value_release(again);
    cr_assert_eq(ferry_dict_len(d), (size_t)N);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ferry_value *v = ferry_dict_get(d, key);
        cr_assert(v, "key %s missing", key);
        cr_assert_eq(ferry_value_as_int(v), i == 123 ? -7 : i);
        cr_assert_str_eq(ferry_dict_key_at(d, (size_t)i), key);
    }
    cr_assert_null(ferry_dict_get(d, "k200000"));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    ferry_value_release(d);
}

/* [[[... , 0], 0], 0] nested a million deep in the first item: the old equality recursed there
   and overflowed the stack. */
static ferry_value *deep_first(int depth, int64_t leaf)
{
    ferry_value *v = ferry_int(leaf);
    for (int i = 0; i < depth && v; i++)
        v = ferry_list_of(2, v, ferry_int(i));
    return v;
}

Test(value_equal, compares_without_recursion_when_nested_a_million_deep, .timeout = 60)
{
    ferry_value *a = ferry_assert_ptr(deep_first(1000000, 1));
    ferry_value *b = ferry_assert_ptr(deep_first(1000000, 1));
    ferry_value *c = ferry_assert_ptr(deep_first(1000000, 2));
    cr_assert(ferry_value_equal(a, b));
    cr_assert_not(ferry_value_equal(a, c)); /* differs only at the very bottom */
    ferry_value_release(a);
    ferry_value_release(b);
    ferry_value_release(c);
}
