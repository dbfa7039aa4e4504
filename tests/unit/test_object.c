/* Unit tests for objects in one process, without RPC: class registration and the definitions it
   refuses, construction and its failures, method calls and their errors, the object kind and
   identity equality, destructors on the last release (from containers and other threads too),
   re-registration, and the one-call-at-a-time rule next to methods marked concurrent. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/object.h"
#include "object_probe.h"
#include "test_util.h"

#define MAGIC_LIVE 0x0b1ec7u
#define MAGIC_DEAD 0xdead0bu

/* What one registration of a class sees: its objects' births and deaths. */
typedef struct {
    atomic_long made, destroyed, bad_destroy;
    atomic_long wrong_user;
    pthread_t dtor_thread; /* the last destructor's thread; read after joining it */
    int tag;               /* what method "which" returns, to tell registrations apart */
} class_state;

/* A counter, with the bookkeeping the serialisation tests read. */
typedef struct {
    ferry_test_probe probe; /* first: the probe's methods take the object */
    unsigned magic;
    int64_t value;
    class_state *cls;
} counter;

/* ---- the class ---- */

static ferry_status counter_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                                void *user)
{
    class_state *cls = user;
    counter *c = calloc(1, sizeof *c);
    if (!c)
        return ferry_set_error(FERRY_ENOMEM, "counter: out of memory");
    c->magic = MAGIC_LIVE;
    c->cls = cls;
    if (ferry_list_len(args) > 0)
        c->value = ferry_value_as_int(ferry_list_get(args, 0));
    else if (ferry_dict_len(kwargs) > 0)
        c->value = ferry_value_as_int(ferry_dict_get(kwargs, "start"));
    ferry_test_probe_init(&c->probe);
    atomic_fetch_add(&cls->made, 1);
    *obj = c;
    return FERRY_OK;
}

static void counter_free(void *obj, void *user)
{
    class_state *cls = user;
    counter *c = obj;
    if (c->cls != cls)
        atomic_fetch_add(&cls->wrong_user, 1);
    if (c->magic != MAGIC_LIVE) {
        atomic_fetch_add(&cls->bad_destroy, 1);
        return;
    }
    c->magic = MAGIC_DEAD;
    cls->dtor_thread = pthread_self();
    ferry_test_probe_destroy(&c->probe);
    free(c);
    atomic_fetch_add(&cls->destroyed, 1);
}

static ferry_status m_get(void *obj, const ferry_value *args, const ferry_value *kwargs,
                          ferry_value **result, void *user)
{
    *result = ferry_int(((counter *)obj)->value);
    return FERRY_OK;
}

static ferry_status m_add(void *obj, const ferry_value *args, const ferry_value *kwargs,
                          ferry_value **result, void *user)
{
    counter *c = obj;
    c->value += ferry_value_as_int(ferry_list_get(args, 0));
    *result = ferry_int(c->value);
    return FERRY_OK;
}

static ferry_status m_fail(void *obj, const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    return ferry_set_error(FERRY_ENOTSUP, "method said no");
}

static ferry_status m_nothing(void *obj, const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    *result = NULL;
    return FERRY_OK;
}

static ferry_status m_which(void *obj, const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    class_state *cls = user;
    *result = ferry_int(cls->tag);
    return FERRY_OK;
}

static const ferry_method_def COUNTER_METHODS[] = {
    {"get", m_get, false},         {"add", m_add, false},     {"fail", m_fail, false},
    {"nothing", m_nothing, false}, {"which", m_which, false}, FERRY_TEST_PROBE_METHODS,
};

static void register_counter(const char *name, class_state *cls)
{
    ferry_class_def def = {.construct = counter_new,
                           .destroy = counter_free,
                           .methods = COUNTER_METHODS,
                           .n_methods = sizeof COUNTER_METHODS / sizeof COUNTER_METHODS[0],
                           .user = cls};
    ferry_assert_ok(ferry_register_class(name, &def));
}

static ferry_status broken_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                               void *user)
{
    return ferry_set_error(FERRY_ENOTSUP, "constructor refused: %d", 7);
}

/* ---- helpers ---- */

static ferry_value *new_counter(const char *cls, int64_t start)
{
    ferry_value *args = ferry_assert_ptr(ferry_args(1, ferry_int(start)));
    ferry_value *kwargs = ferry_assert_ptr(ferry_dict_new());
    ferry_value *obj = ferry_object_new(cls, args, kwargs);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    return obj;
}

/* ferry_object_call with an empty dict of keywords; args may be NULL for none (steals it). */
static ferry_value *call(ferry_value *obj, const char *method, ferry_value *args)
{
    if (!args)
        args = ferry_assert_ptr(ferry_list_of(0));
    ferry_value *kwargs = ferry_assert_ptr(ferry_dict_new());
    ferry_value *r = ferry_object_call(obj, method, args, kwargs);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    return r;
}

static int64_t call_int(ferry_value *obj, const char *method, ferry_value *args)
{
    ferry_value *r = call(obj, method, args);
    cr_assert(r && ferry_value_kind(r) == FERRY_VALUE_INT, "%s: %s: %s", method,
              ferry_strerror(ferry_last_status()), ferry_last_error());
    int64_t n = ferry_value_as_int(r);
    ferry_value_release(r);
    return n;
}

static ferry_object_counts counts(void)
{
    ferry_object_counts n = {-1, -1};
    ferry_object_debug_counts(&n);
    cr_assert(n.alive >= 0 && n.destroyed >= 0);
    return n;
}

/* ---- registration ---- */

Test(object_class, register_fails_with_einval_when_definition_is_bad, .timeout = 5)
{
    class_state cls = {0};
    ferry_method_def no_name[] = {{"get", m_get, false}, {NULL, m_add, false}};
    ferry_method_def no_fn[] = {{"get", m_get, false}, {"add", NULL, false}};
    ferry_method_def twice[] = {{"get", m_get, false}, {"add", m_add, false}, {"get", m_add, true}};
    ferry_class_def good = {.construct = counter_new, .destroy = counter_free,
                            .methods = COUNTER_METHODS, .n_methods = 1, .user = &cls};
    char long_name[4096];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';

    ferry_assert_status(ferry_register_class(NULL, &good), FERRY_EINVAL);
    ferry_assert_status(ferry_register_class("", &good), FERRY_EINVAL);
    ferry_assert_status(ferry_register_class(long_name, &good), FERRY_EINVAL);
    ferry_class_def d = good;
    d.construct = NULL;
    ferry_assert_status(ferry_register_class("Refused", &d), FERRY_EINVAL);
    d = good;
    d.methods = no_name;
    d.n_methods = 2;
    ferry_assert_status(ferry_register_class("Refused", &d), FERRY_EINVAL);
    d.methods = no_fn;
    ferry_assert_status(ferry_register_class("Refused", &d), FERRY_EINVAL);
    d.methods = twice;
    d.n_methods = 3;
    ferry_assert_status(ferry_register_class("Refused", &d), FERRY_EINVAL);

    /* Nothing refused was registered half-way. */
    ferry_value *empty = ferry_assert_ptr(ferry_list_of(0));
    ferry_value *kw = ferry_assert_ptr(ferry_dict_new());
    cr_assert_null(ferry_object_new("Refused", empty, kw));
    cr_assert_eq(ferry_last_status(), FERRY_EUNKNOWN_FUNCTION);

    /* No destructor and no methods are fine. */
    d = good;
    d.destroy = NULL;
    d.methods = NULL;
    d.n_methods = 0;
    ferry_assert_ok(ferry_register_class("Bare", &d));
    ferry_object_counts before = counts();
    ferry_value *bare = ferry_assert_ptr(ferry_object_new("Bare", empty, kw));
    cr_assert_eq(counts().alive, before.alive + 1);
    cr_assert_null(call(bare, "get", NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EUNKNOWN_FUNCTION);
    /* The object was made by counter_new: free it ourselves, since the class has no
       destructor. */
    counter *c = ferry_object_ptr(bare);
    cr_assert(c && c->magic == MAGIC_LIVE);
    ferry_value_release(bare);
    cr_assert_eq(counts().alive, before.alive, "an object without a destructor still dies");
    cr_assert_eq(atomic_load(&cls.destroyed), 0);
    ferry_test_probe_destroy(&c->probe);
    free(c);
    ferry_value_release(empty);
    ferry_value_release(kw);
}

Test(object_class, keeps_its_own_copy_when_caller_buffers_change, .timeout = 5)
{
    class_state cls = {.tag = 3};
    char name[16] = "Scratch";
    char method[16] = "which";
    ferry_method_def methods[] = {{method, m_which, false}};
    ferry_class_def def = {.construct = counter_new, .destroy = counter_free,
                           .methods = methods, .n_methods = 1, .user = &cls};
    ferry_assert_ok(ferry_register_class(name, &def));
    memset(name, 'x', sizeof name - 1);
    memset(method, 'y', sizeof method - 1);
    methods[0].fn = m_fail;
    memset(&def, 0, sizeof def);

    ferry_value *obj = ferry_assert_ptr(new_counter("Scratch", 0));
    cr_assert_str_eq(ferry_object_class(obj), "Scratch");
    cr_assert_eq(call_int(obj, "which", NULL), 3);
    ferry_value_release(obj);
    cr_assert_eq(atomic_load(&cls.destroyed), 1);
}

Test(object_class, reregistering_replaces_class_for_new_objects_only, .timeout = 5)
{
    class_state v1 = {.tag = 1}, v2 = {.tag = 2};
    register_counter("Counter", &v1);
    ferry_value *a = ferry_assert_ptr(new_counter("Counter", 10));
    const ferry_method_def fewer[] = {{"which", m_which, false}, {"get", m_get, false}};
    ferry_class_def def = {.construct = counter_new, .destroy = counter_free, .methods = fewer,
                           .n_methods = 2, .user = &v2};
    ferry_assert_ok(ferry_register_class("Counter", &def));
    ferry_value *b = ferry_assert_ptr(new_counter("Counter", 20));

    cr_assert_eq(call_int(a, "which", NULL), 1, "a live object keeps the class it was made with");
    cr_assert_eq(call_int(b, "which", NULL), 2);
    cr_assert_eq(call_int(a, "add", ferry_args(1, ferry_int(1))), 11);
    cr_assert_null(call(b, "add", ferry_args(1, ferry_int(1))));
    cr_assert_eq(ferry_last_status(), FERRY_EUNKNOWN_FUNCTION);
    cr_assert_eq(call_int(b, "get", NULL), 20);
    cr_assert_eq(atomic_load(&v1.made), 1);
    cr_assert_eq(atomic_load(&v2.made), 1);

    ferry_value_release(a);
    cr_assert_eq(atomic_load(&v1.destroyed), 1, "a's destructor is the first class's");
    cr_assert_eq(atomic_load(&v2.destroyed), 0);
    ferry_value_release(b);
    cr_assert_eq(atomic_load(&v2.destroyed), 1);
    cr_assert_eq(atomic_load(&v1.wrong_user) + atomic_load(&v2.wrong_user), 0);
}

/* ---- construction ---- */

Test(object_new, fails_when_class_is_unknown_or_arguments_are_bad, .timeout = 5)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_object_counts before = counts();
    ferry_value *args = ferry_assert_ptr(ferry_list_of(0));
    ferry_value *kw = ferry_assert_ptr(ferry_dict_new());
    ferry_value *not_list = ferry_assert_ptr(ferry_int(1));

    cr_assert_null(ferry_object_new("NoSuchClass", args, kw));
    cr_assert_eq(ferry_last_status(), FERRY_EUNKNOWN_FUNCTION, "%s", ferry_last_error());
    cr_assert(strstr(ferry_last_error(), "NoSuchClass"), "%s", ferry_last_error());
    cr_assert_null(ferry_object_new(NULL, args, kw));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_object_new("Counter", not_list, kw));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);
    cr_assert_null(ferry_object_new("Counter", args, args));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL);

    cr_assert_eq(atomic_load(&cls.made), 0, "the constructor never ran");
    cr_assert_eq(counts().alive, before.alive);
    ferry_value_release(args);
    ferry_value_release(kw);
    ferry_value_release(not_list);
}

Test(object_new, gives_constructor_error_when_constructor_fails, .timeout = 5)
{
    class_state cls = {0};
    ferry_class_def def = {.construct = broken_new, .destroy = counter_free, .user = &cls};
    ferry_assert_ok(ferry_register_class("Broken", &def));
    ferry_object_counts before = counts();
    ferry_value *args = ferry_assert_ptr(ferry_list_of(0));
    ferry_value *kw = ferry_assert_ptr(ferry_dict_new());
    cr_assert_null(ferry_object_new("Broken", args, kw));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP, "got %s: %s",
                 ferry_strerror(ferry_last_status()), ferry_last_error());
    cr_assert(strstr(ferry_last_error(), "constructor refused: 7"), "%s", ferry_last_error());
    ferry_object_counts after = counts();
    cr_assert_eq(after.alive, before.alive);
    cr_assert_eq(after.destroyed, before.destroyed, "no destructor for an object never made");
    cr_assert_eq(atomic_load(&cls.bad_destroy) + atomic_load(&cls.destroyed), 0);
    ferry_value_release(args);
    ferry_value_release(kw);
}

Test(object_value, has_object_kind_class_and_pointer_when_constructed, .timeout = 5)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_value *a = ferry_assert_ptr(new_counter("Counter", 5));
    ferry_value *none = ferry_assert_ptr(ferry_list_of(0));
    ferry_value *kw = ferry_assert_ptr(ferry_dict_new());
    ferry_value *nine = ferry_assert_ptr(ferry_int(9));
    ferry_assert_ok(ferry_dict_set(kw, "start", nine));
    ferry_value *b = ferry_assert_ptr(ferry_object_new("Counter", none, kw));

    cr_assert_eq(ferry_value_kind(a), FERRY_VALUE_OBJECT);
    cr_assert_str_eq(ferry_kind_name(ferry_value_kind(a)), "object");
    cr_assert_str_eq(ferry_kind_name(FERRY_VALUE_OBJECT), "object");
    cr_assert_str_eq(ferry_object_class(a), "Counter");
    counter *pa = ferry_object_ptr(a), *pb = ferry_object_ptr(b);
    cr_assert(pa && pb && pa != pb);
    cr_assert_eq(pa->magic, MAGIC_LIVE);
    cr_assert_eq(pa->value, 5, "positional arguments reach the constructor");
    cr_assert_eq(pb->value, 9, "keyword arguments reach the constructor");
    cr_assert_eq(pa->cls, &cls, "the constructor gets the class's user pointer");

    cr_assert_null(ferry_object_class(nine));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    cr_assert_null(ferry_object_ptr(nine));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    /* The value accessors of other kinds refuse an object. */
    cr_assert_eq(ferry_value_as_int(a), 0);
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);

    ferry_value_release(a);
    ferry_value_release(b);
    ferry_value_release(none);
    ferry_value_release(kw);
    ferry_value_release(nine);
    cr_assert_eq(atomic_load(&cls.destroyed), 2);
}

Test(object_value, equals_only_itself_when_compared, .timeout = 5)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_value *a = ferry_assert_ptr(new_counter("Counter", 1));
    ferry_value *b = ferry_assert_ptr(new_counter("Counter", 1));
    cr_assert(ferry_value_equal(a, a));
    cr_assert_not(ferry_value_equal(a, b), "same class and state, yet two objects");
    ferry_value *again = ferry_value_retain(a);
    cr_assert(ferry_value_equal(a, again));
    ferry_value *la = ferry_assert_ptr(ferry_list_of(1, ferry_value_retain(a)));
    ferry_value *la2 = ferry_assert_ptr(ferry_list_of(1, ferry_value_retain(a)));
    ferry_value *lb = ferry_assert_ptr(ferry_list_of(1, ferry_value_retain(b)));
    cr_assert(ferry_value_equal(la, la2));
    cr_assert_not(ferry_value_equal(la, lb));
    ferry_value *one = ferry_assert_ptr(ferry_int(1));
    cr_assert_not(ferry_value_equal(a, one));
    cr_assert_not(ferry_value_equal(a, NULL));
    ferry_value *vals[] = {a, b, again, la, la2, lb, one};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        ferry_value_release(vals[i]);
    cr_assert_eq(atomic_load(&cls.destroyed), 2);
}

/* ---- calls ---- */

Test(object_call, returns_results_when_methods_run, .timeout = 5)
{
    class_state cls = {.tag = 42};
    register_counter("Counter", &cls);
    ferry_value *obj = ferry_assert_ptr(new_counter("Counter", 5));
    cr_assert_eq(call_int(obj, "add", ferry_args(1, ferry_int(3))), 8);
    cr_assert_eq(call_int(obj, "add", ferry_args(1, ferry_int(-10))), -2);
    cr_assert_eq(call_int(obj, "get", NULL), -2);
    cr_assert_eq(call_int(obj, "which", NULL), 42, "methods get the class's user pointer");
    ferry_value *n = ferry_assert_ptr(call(obj, "nothing", NULL));
    cr_assert_eq(ferry_value_kind(n), FERRY_VALUE_NONE, "a method's NULL result is none");
    ferry_value_release(n);
    ferry_value_release(obj);
}

Test(object_call, fails_with_its_own_codes_when_method_is_unknown_failing_or_not_an_object,
     .timeout = 5)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_value *obj = ferry_assert_ptr(new_counter("Counter", 5));

    cr_assert_null(call(obj, "nope", NULL));
    cr_assert_eq(ferry_last_status(), FERRY_EUNKNOWN_FUNCTION, "got %s",
                 ferry_strerror(ferry_last_status()));
    cr_assert(strstr(ferry_last_error(), "Counter") && strstr(ferry_last_error(), "nope"),
              "the message names class and method: %s", ferry_last_error());

    cr_assert_null(call(obj, "fail", NULL));
    cr_assert_eq(ferry_last_status(), FERRY_ENOTSUP, "the method's code passes through, got %s",
                 ferry_strerror(ferry_last_status()));
    cr_assert(strstr(ferry_last_error(), "method said no"), "%s", ferry_last_error());

    ferry_value *seven = ferry_assert_ptr(ferry_int(7));
    cr_assert_null(call(seven, "get", NULL));
    cr_assert_eq(ferry_last_status(), FERRY_ETYPE);
    ferry_value *kw = ferry_assert_ptr(ferry_dict_new());
    cr_assert_null(ferry_object_call(obj, "get", seven, kw));
    cr_assert_eq(ferry_last_status(), FERRY_EINVAL, "args must be a list");
    ferry_value_release(kw);

    cr_assert_eq(call_int(obj, "get", NULL), 5, "failed calls leave the object usable");
    ferry_value_release(seven);
    ferry_value_release(obj);
    cr_assert_eq(atomic_load(&cls.destroyed), 1);
}

/* ---- lifetime ---- */

Test(object_lifetime, destructor_runs_once_when_last_reference_is_released, .timeout = 5)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_object_counts before = counts();
    ferry_value *obj = ferry_assert_ptr(new_counter("Counter", 1));
    ferry_object_counts made = counts();
    cr_assert_eq(made.alive, before.alive + 1);
    cr_assert_eq(made.destroyed, before.destroyed);

    ferry_value *extra = ferry_value_retain(obj);
    ferry_value_release(obj);
    cr_assert_eq(atomic_load(&cls.destroyed), 0, "a reference is still held");
    cr_assert_eq(counts().alive, before.alive + 1);
    cr_assert_eq(call_int(extra, "get", NULL), 1);
    ferry_value_release(extra);

    ferry_object_counts after = counts();
    cr_assert_eq(atomic_load(&cls.destroyed), 1);
    cr_assert_eq(atomic_load(&cls.bad_destroy), 0);
    cr_assert_eq(atomic_load(&cls.wrong_user), 0, "the destructor gets the class's user pointer");
    cr_assert_eq(after.alive, before.alive);
    cr_assert_eq(after.destroyed, before.destroyed + 1);
}

static void *release_on_thread(void *v)
{
    ferry_value_release(v);
    return NULL;
}

Test(object_lifetime, destructor_runs_on_the_thread_that_drops_the_last_reference, .timeout = 5)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_value *obj = ferry_assert_ptr(new_counter("Counter", 1));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, release_on_thread, obj), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&cls.destroyed), 1);
    cr_assert(pthread_equal(cls.dtor_thread, t));
}

Test(object_lifetime, destructor_runs_when_the_last_container_holding_it_goes, .timeout = 5)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_object_counts before = counts();
    ferry_value *obj = ferry_assert_ptr(new_counter("Counter", 1));
    ferry_value *list = ferry_assert_ptr(ferry_list_of(2, ferry_value_retain(obj), ferry_int(2)));
    ferry_value *dict = ferry_assert_ptr(ferry_dict_new());
    ferry_value *inner = ferry_assert_ptr(ferry_list_of(1, ferry_value_retain(obj)));
    ferry_assert_ok(ferry_dict_set(dict, "obj", inner));
    ferry_value_release(inner);
    cr_assert_eq(ferry_value_kind(ferry_list_get(list, 0)), FERRY_VALUE_OBJECT);
    cr_assert(ferry_value_equal(ferry_list_get(list, 0), obj));

    ferry_value_release(obj);
    ferry_value_release(list);
    cr_assert_eq(atomic_load(&cls.destroyed), 0, "the dict still holds it");
    ferry_value *held = ferry_list_get(ferry_dict_get(dict, "obj"), 0);
    cr_assert_eq(call_int(held, "get", NULL), 1);
    ferry_value_release(dict);
    cr_assert_eq(atomic_load(&cls.destroyed), 1);
    cr_assert_eq(atomic_load(&cls.bad_destroy), 0);
    cr_assert_eq(counts().alive, before.alive);
}

/* ---- one call at a time ---- */

typedef struct {
    ferry_value *obj;
    const char *method;
    int calls;
    pthread_barrier_t *start;
    int ok, true_results;
} caller;

static void *call_on_thread(void *v)
{
    caller *c = v;
    pthread_barrier_wait(c->start);
    for (int i = 0; i < c->calls; i++) {
        ferry_value *r = call(c->obj, c->method, NULL);
        c->ok += r != NULL;
        c->true_results += ferry_value_kind(r) == FERRY_VALUE_BOOL && ferry_value_as_bool(r);
        ferry_value_release(r);
    }
    return NULL;
}

/* Runs two threads calling m0 and m1 `calls` times each, released together. */
static void run_two(ferry_value *obj, const char *m0, const char *m1, int calls, caller out[2])
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    pthread_t t[2];
    const char *m[2] = {m0, m1};
    for (int i = 0; i < 2; i++) {
        out[i] = (caller){.obj = obj, .method = m[i], .calls = calls, .start = &start};
        cr_assert_eq(pthread_create(&t[i], NULL, call_on_thread, &out[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(out[i].ok, calls, "%s failed: %s", m[i], ferry_last_error());
}

Test(object_serial, calls_never_interleave_when_method_is_not_concurrent, .timeout = 10)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_value *obj = ferry_assert_ptr(new_counter("Counter", 0));
    caller out[2];
    run_two(obj, "critical", "critical", 5, out);
    counter *c = ferry_object_ptr(obj);
    cr_assert_eq(c->probe.enters, 10);
    cr_assert_eq(c->probe.max_inside, 1, "two calls were inside at once");
    cr_assert_eq(c->probe.log_len, 20);
    for (size_t i = 0; i < c->probe.log_len; i++)
        cr_assert_eq(c->probe.log[i], i % 2 ? 'L' : 'E', "enter/leave interleaved: %.*s",
                     (int)c->probe.log_len, c->probe.log);
    ferry_value_release(obj);
}

Test(object_serial, concurrent_method_overlaps_when_two_threads_call_it, .timeout = 15)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_value *obj = ferry_assert_ptr(new_counter("Counter", 0));
    caller out[2];
    run_two(obj, "meet", "meet", 1, out);
    cr_assert_eq(out[0].true_results + out[1].true_results, 2,
                 "each call of a concurrent method saw the other inside");
    ferry_value_release(obj);
}

Test(object_serial, concurrent_method_runs_while_another_call_holds_the_object, .timeout = 15)
{
    class_state cls = {0};
    register_counter("Counter", &cls);
    ferry_value *obj = ferry_assert_ptr(new_counter("Counter", 0));
    caller out[2];
    run_two(obj, "hold", "peek", 1, out);
    cr_assert_eq(out[0].true_results, 1, "hold never saw the peek come in");
    cr_assert_eq(out[1].true_results, 1, "peek did not run while hold was inside");
    ferry_value_release(obj);
}
