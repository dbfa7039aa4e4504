/* Remote objects, continued: objects refused by value (in arguments, results and to_here), the
   errors of construction and calls (unknown class or method, failing constructor or method, an
   RRef to a plain value), the value proxies still working, and distributed autograd through
   method calls giving the gradients of the same computation done by a registered function.
   On tcp and shm. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/autograd.h"
#include "ferry/dist_autograd.h"
#include "ferry/object.h"
#include "ferry/ops.h"
#include "ferry/rref.h"
#include "rpc_harness.h"

#define MAGIC_LIVE 0x0b1ec7u
#define MAGIC_DEAD 0xdead0bu

typedef enum { VIA_SYNC, VIA_ASYNC, VIA_REMOTE } via;
static const char *const VIA_NAME[] = {"rpc_sync", "rpc_async", "remote"};

/* Like RANK_CHECK, but counts the failure in `n` and goes on, so one wrong code does not hide
   the checks after it; the body fails at its end when n is not 0. */
#define SOFT_CHECK(n, cond)                                                               \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
            (n)++;                                                                        \
        }                                                                                 \
    } while (0)

/* Births and deaths of this process's objects, every class together; `cv` signals deaths. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t made, destroyed, bad_destroy;
} class_state;

/* A Box holds an int; a Scaler holds a parameter that requires grad. */
typedef struct {
    unsigned magic;
    int64_t value;
    ferry_tensor *param;
} thing;

/* ---- the classes ---- */

static ferry_status born(class_state *cls, thing *t, void **obj)
{
    t->magic = MAGIC_LIVE;
    pthread_mutex_lock(&cls->mu);
    cls->made++;
    pthread_mutex_unlock(&cls->mu);
    *obj = t;
    return FERRY_OK;
}

static ferry_status box_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                            void *user)
{
    thing *t = calloc(1, sizeof *t);
    if (!t)
        return ferry_set_error(FERRY_ENOMEM, "box: out of memory");
    t->value = ferry_value_as_int(ferry_list_get(args, 0));
    return born(user, t, obj);
}

/* Scaler(w): a parameter of this worker with w's values. */
static ferry_status scaler_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                               void *user)
{
    ferry_tensor *w = ferry_value_as_tensor(ferry_list_get(args, 0));
    if (!w)
        return ferry_set_error(FERRY_ETYPE, "Scaler takes a tensor");
    thing *t = calloc(1, sizeof *t);
    if (!t)
        return ferry_set_error(FERRY_ENOMEM, "scaler: out of memory");
    t->param = ferry_tensor_clone_data(w);
    if (!t->param || ferry_tensor_set_requires_grad(t->param, true) != FERRY_OK) {
        ferry_tensor_release(t->param);
        free(t);
        return ferry_last_status();
    }
    return born(user, t, obj);
}

static ferry_status broken_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                               void *user)
{
    return ferry_set_error(FERRY_ENOTSUP, "constructor refused: %d", 7);
}

static void thing_free(void *obj, void *user)
{
    class_state *cls = user;
    thing *t = obj;
    bool live = t->magic == MAGIC_LIVE;
    if (live) {
        t->magic = MAGIC_DEAD;
        ferry_tensor_release(t->param);
        free(t);
    }
    pthread_mutex_lock(&cls->mu);
    if (live)
        cls->destroyed++;
    else
        cls->bad_destroy++;
    pthread_cond_broadcast(&cls->cv);
    pthread_mutex_unlock(&cls->mu);
}

static ferry_status m_get(void *obj, const ferry_value *args, const ferry_value *kwargs,
                          ferry_value **result, void *user)
{
    *result = ferry_int(((thing *)obj)->value);
    return FERRY_OK;
}

static ferry_status m_fail(void *obj, const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    return ferry_set_error(FERRY_ENOTSUP, "method said no");
}

/* spawn() -> a new Box with this one's value: an object as a method's result. */
static ferry_status m_spawn(void *obj, const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    ferry_value *a = ferry_args(1, ferry_int(((thing *)obj)->value));
    *result = a ? ferry_object_new("Box", a, NULL) : NULL;
    ferry_value_release(a);
    return *result ? FERRY_OK : ferry_last_status();
}

/* forward(x) -> x * param */
static ferry_status m_forward(void *obj, const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    ferry_tensor *x = ferry_value_as_tensor(ferry_list_get(args, 0));
    ferry_tensor *y = x ? ferry_mul(x, ((thing *)obj)->param) : NULL;
    if (!y)
        return ferry_last_status();
    *result = ferry_tensor_value(y);
    ferry_tensor_release(y);
    return *result ? FERRY_OK : ferry_last_status();
}

/* param_grad(ctx) -> [the parameter's gradient in ctx or none, whether its .grad is set] */
static ferry_status m_param_grad(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    ferry_tensor *p = ((thing *)obj)->param;
    ferry_clear_error();
    ferry_tensor *g = ferry_dist_autograd_get_gradient(ferry_value_as_int(ferry_list_get(args, 0)),
                                                       p);
    if (!g && ferry_last_status() != FERRY_OK)
        return ferry_last_status();
    ferry_tensor *dot_grad = ferry_tensor_grad(p);
    *result = ferry_list_of(2, g ? ferry_tensor_value(g) : ferry_none(),
                            ferry_bool(dot_grad != NULL));
    ferry_tensor_release(g);
    ferry_tensor_release(dot_grad);
    return *result ? FERRY_OK : ferry_last_status();
}

static const ferry_method_def BOX_METHODS[] = {
    {"get", m_get, false}, {"fail", m_fail, false}, {"spawn", m_spawn, false}};
static const ferry_method_def SCALER_METHODS[] = {{"forward", m_forward, false},
                                                  {"param_grad", m_param_grad, true}};

/* ---- functions the tests call ---- */

/* give_object() -> a Box: refused on the way back. */
static ferry_status give_object_fn(const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    ferry_value *a = ferry_args(1, ferry_int(1));
    *result = a ? ferry_object_new("Box", a, NULL) : NULL;
    ferry_value_release(a);
    return *result ? FERRY_OK : ferry_last_status();
}

/* add_int(value, x): for the value proxies. */
static ferry_status add_int_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    const ferry_value *v = ferry_list_get(args, 0);
    if (ferry_value_kind(v) != FERRY_VALUE_INT)
        return ferry_set_error(FERRY_ETYPE, "add_int expects an int, got %s",
                               ferry_kind_name(ferry_value_kind(v)));
    *result = ferry_int(ferry_value_as_int(v) + ferry_value_as_int(ferry_list_get(args, 1)));
    return FERRY_OK;
}

static ferry_future *async_add_int_fn(const ferry_value *args, const ferry_value *kwargs,
                                      void *user)
{
    ferry_value *r = NULL;
    if (add_int_fn(args, kwargs, &r, user) != FERRY_OK)
        return NULL;
    ferry_future *f = ferry_future_new();
    if (f)
        ferry_future_set_value(f, r);
    ferry_value_release(r);
    return f;
}

/* mul(x, w) -> x * w: the function a Scaler's forward is equivalent to. */
static ferry_status mul_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_tensor *y = ferry_mul(ferry_value_as_tensor(ferry_list_get(args, 0)),
                                ferry_value_as_tensor(ferry_list_get(args, 1)));
    if (!y)
        return ferry_last_status();
    *result = ferry_tensor_value(y);
    ferry_tensor_release(y);
    return *result ? FERRY_OK : ferry_last_status();
}

/* The class counts and ferry_object_debug_counts of this process, once they agree (the library
   counts a death just after the destructor returns; nothing signals that, so this polls for
   2 s at most). */
static void settled_counts(class_state *cls, int64_t out[3], ferry_object_counts *n)
{
    double until = rpc_test_now_s() + 2.0;
    for (;;) {
        pthread_mutex_lock(&cls->mu);
        out[0] = cls->made;
        out[1] = cls->destroyed;
        out[2] = cls->bad_destroy;
        pthread_mutex_unlock(&cls->mu);
        ferry_object_debug_counts(n);
        if ((n->alive == out[0] - out[1] && n->destroyed == out[1]) || rpc_test_now_s() > until)
            return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

/* obj_counts(want) -> [made, destroyed, bad destroys, debug alive, debug destroyed], once
   `want` objects died here (waiting up to 10 s). */
static ferry_status obj_counts_fn(const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result, void *user)
{
    class_state *cls = user;
    int64_t want = ferry_value_as_int(ferry_list_get(args, 0));
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&cls->mu);
    while (cls->destroyed < want)
        if (pthread_cond_timedwait(&cls->cv, &cls->mu, &until) != 0)
            break;
    pthread_mutex_unlock(&cls->mu);
    int64_t c[3];
    ferry_object_counts n;
    settled_counts(cls, c, &n);
    *result = ferry_list_of(5, ferry_int(c[0]), ferry_int(c[1]), ferry_int(c[2]),
                            ferry_int(n.alive), ferry_int(n.destroyed));
    return *result ? FERRY_OK : ferry_last_status();
}

static void register_all(class_state *cls)
{
    memset(cls, 0, sizeof *cls);
    pthread_mutex_init(&cls->mu, NULL);
    pthread_cond_init(&cls->cv, NULL);
    ferry_class_def box = {.construct = box_new, .destroy = thing_free, .methods = BOX_METHODS,
                           .n_methods = 3, .user = cls};
    ferry_class_def scaler = {.construct = scaler_new, .destroy = thing_free,
                              .methods = SCALER_METHODS, .n_methods = 2, .user = cls};
    ferry_class_def broken = {.construct = broken_new, .destroy = thing_free, .user = cls};
    cr_assert(ferry_register_class("Box", &box) == FERRY_OK);
    cr_assert(ferry_register_class("Scaler", &scaler) == FERRY_OK);
    cr_assert(ferry_register_class("Broken", &broken) == FERRY_OK);
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("give_object", give_object_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("add_int", add_int_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_async_function("async_add_int", async_add_int_fn, NULL) ==
              FERRY_OK);
    cr_assert(ferry_register_function("mul", mul_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("obj_counts", obj_counts_fn, cls) == FERRY_OK);
}

/* ---- helpers ---- */

/* Whether the last error is `code` with every given text in its message (NULL ends the list);
   code FERRY_OK accepts any failure. Says what it got when not. */
static bool failed_with(ferry_status code, const char *t1, const char *t2, const char *t3)
{
    ferry_status got = ferry_last_status();
    const char *msg = ferry_last_error();
    bool ok = got != FERRY_OK && (code == FERRY_OK || got == code) && (!t1 || strstr(msg, t1)) &&
              (!t2 || strstr(msg, t2)) && (!t3 || strstr(msg, t3));
    if (!ok)
        fprintf(stderr, "expected %s with \"%s\" \"%s\" \"%s\", got %s: \"%s\"\n",
                code == FERRY_OK ? "a failure" : ferry_strerror(code), t1 ? t1 : "",
                t2 ? t2 : "", t3 ? t3 : "", ferry_strerror(got), msg);
    return ok;
}

/* A future's failure as the last error, for failed_with. */
static void future_failure(ferry_future *f)
{
    ferry_status rc = ferry_future_wait(f, 0);
    if (rc == FERRY_OK)
        ferry_clear_error();
    else
        ferry_set_error(rc, "%s", ferry_future_error(f) ? ferry_future_error(f) : "");
}

static ferry_value *call_via(ferry_rref *r, const char *method, ferry_value *args, via v)
{
    if (v == VIA_SYNC)
        return ferry_rref_call_sync(r, method, args, NULL, FERRY_TIMEOUT_DEFAULT);
    if (v == VIA_ASYNC) {
        ferry_future *f = ferry_rref_call_async(r, method, args, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *x = f ? ferry_future_value(f) : NULL;
        ferry_future_release(f);
        return x;
    }
    ferry_rref *res = ferry_rref_call_remote(r, method, args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value *x = res ? ferry_rref_to_here(res, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_rref_release(res);
    return x;
}

static ferry_value *rpc_via(const char *to, const char *fn, ferry_value *args, via v)
{
    if (v == VIA_SYNC)
        return ferry_rpc_sync(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
    if (v == VIA_ASYNC) {
        ferry_future *f = ferry_rpc_async(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *x = f ? ferry_future_value(f) : NULL;
        ferry_future_release(f);
        return x;
    }
    ferry_rref *res = ferry_remote(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value *x = res ? ferry_rref_to_here(res, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_rref_release(res);
    return x;
}

/* Once this worker's RRef deletions reached their owners, `to` made and destroyed exactly
   `n` objects, none twice, and holds none. */
static int check_all_died(const char *to, int64_t n)
{
    RANK_CHECK(ferry_debug_rref_wait_idle(20) == FERRY_OK);
    ferry_value *a = ferry_args(1, ferry_int(n));
    ferry_value *v = ferry_rpc_sync(to, "obj_counts", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    RANK_CHECK(v && ferry_list_len(v) == 5);
    int64_t c[5];
    for (size_t i = 0; i < 5; i++)
        c[i] = ferry_value_as_int(ferry_list_get(v, i));
    ferry_value_release(v);
    if (c[0] != n || c[1] != n || c[2] || c[3] || c[4] != n)
        fprintf(stderr, "%s: made %lld destroyed %lld bad %lld alive %lld debug destroyed %lld;"
                        " expected %lld made and destroyed\n",
                to, (long long)c[0], (long long)c[1], (long long)c[2], (long long)c[3],
                (long long)c[4], (long long)n);
    RANK_CHECK(c[0] == n && c[1] == n && c[2] == 0 && c[3] == 0 && c[4] == n);
    return 0;
}

/* ---- bodies ---- */

/* An object never travels by value: not as an argument (the send is refused here, naming the
   class and the destination), not as a result (of a function, a method or to_here); a result
   a _remote call keeps on the owner is an RRef like any other. */
static int body_by_value(int rank, int world, const rpc_case *c)
{
    class_state *cls = c->user;
    if (rank != 0)
        return 0;
    RANK_CHECK(!ferry_rpc_sync("worker1", "give_object", NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_OK, "object of class 'Box'", NULL, NULL));

    ferry_value *one = ferry_args(1, ferry_int(1));
    ferry_value *obj = ferry_object_new("Box", one, NULL);
    RANK_CHECK(obj);
    ferry_value *in_args = ferry_args(1, ferry_value_retain(obj));
    ferry_value *nested = ferry_args(1, ferry_list_of(2, ferry_int(1), ferry_value_retain(obj)));
    ferry_value *kw = ferry_dict_new();
    RANK_CHECK(in_args && nested && kw && ferry_dict_set(kw, "o", obj) == FERRY_OK);
    RANK_CHECK(!ferry_rpc_sync("worker1", "echo", in_args, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_EINVAL, "object of class 'Box'", "worker1", NULL));
    RANK_CHECK(!ferry_rpc_async("worker1", "echo", in_args, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_EINVAL, "object of class 'Box'", "worker1", NULL));
    RANK_CHECK(!ferry_rpc_sync("worker1", "echo", nested, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_EINVAL, "object of class 'Box'", "worker1", NULL));
    RANK_CHECK(!ferry_rpc_sync("worker1", "echo", NULL, kw, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_EINVAL, "object of class 'Box'", "worker1", NULL));
    RANK_CHECK(!ferry_remote("worker1", "echo", in_args, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_EINVAL, "object of class 'Box'", "worker1", NULL));
    RANK_CHECK(!ferry_remote_object("worker1", "Box", in_args, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_EINVAL, "object of class 'Box'", "worker1", NULL));

    ferry_value *four = ferry_args(1, ferry_int(4));
    ferry_rref *b = ferry_remote_object("worker1", "Box", four, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(b);
    ferry_value *v = ferry_rref_call_sync(b, "get", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == 4);
    ferry_value_release(v);
    RANK_CHECK(!ferry_rref_call_sync(b, "get", in_args, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_EINVAL, "object of class 'Box'", "worker1", NULL));
    RANK_CHECK(!ferry_rref_to_here(b, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_EINVAL, "object of class 'Box'", NULL, NULL));
    RANK_CHECK(!ferry_rref_call_sync(b, "spawn", NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    RANK_CHECK(failed_with(FERRY_OK, "object of class 'Box'", NULL, NULL));
    ferry_rref *kept = ferry_rref_call_remote(b, "spawn", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(kept && strcmp(ferry_rref_owner_name(kept), "worker1") == 0);
    v = ferry_rref_call_sync(kept, "get", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == 4);
    ferry_value_release(v);

    ferry_rref_release(kept);
    ferry_rref_release(b);
    ferry_value *vals[] = {one, obj, in_args, nested, kw, four};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        ferry_value_release(vals[i]);
    int64_t here[3];
    ferry_object_counts n;
    settled_counts(cls, here, &n);
    RANK_CHECK(here[0] == 1 && here[1] == 1 && here[2] == 0 && n.alive == 0);
    /* worker1: give_object's, b, the refused spawn's and the kept one. */
    return check_all_died("worker1", 4);
}

/* No such class on the owner: to_here says so (FERRY_EUNKNOWN_FUNCTION, as ferry_remote of an
   unknown function), and the first call fails as the construction did (FERRY_EREMOTE). */
static int body_unknown_class(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    int soft = 0;
    ferry_rref *nc = ferry_remote_object("worker1", "NoSuchClass", NULL, NULL,
                                         FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(nc);
    RANK_CHECK(!ferry_rref_to_here(nc, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft,
               failed_with(FERRY_EUNKNOWN_FUNCTION, "no class named 'NoSuchClass'", NULL, NULL));
    ferry_rref_release(nc);
    for (via w = VIA_SYNC; w <= VIA_REMOTE; w++) {
        nc = ferry_remote_object("worker1", "NoSuchClass", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(nc);
        RANK_CHECK(!call_via(nc, "get", NULL, w));
        SOFT_CHECK(soft, failed_with(FERRY_EREMOTE, "no class named 'NoSuchClass'", NULL, NULL) ||
                             !fprintf(stderr, "(the first call, by %s)\n", VIA_NAME[w]));
        ferry_rref_release(nc);
    }
    RANK_CHECK(soft == 0);
    return check_all_died("worker1", 0);
}

/* Construction and call failures: what surfaces where, with which code and text. */
static int body_errors(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    int soft = 0;
    /* A failing constructor: its message, on to_here and on the first call. */
    ferry_rref *br = ferry_remote_object("worker1", "Broken", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(br);
    RANK_CHECK(!ferry_rref_call_sync(br, "get", NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft, failed_with(FERRY_EREMOTE, "constructor refused: 7", NULL, NULL));
    RANK_CHECK(!ferry_rref_to_here(br, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft, failed_with(FERRY_EREMOTE, "constructor refused: 7", NULL, NULL));
    ferry_rref_release(br);

    /* Unknown and failing methods, three ways; the object stays usable. */
    ferry_value *one = ferry_args(1, ferry_int(1));
    ferry_rref *b = ferry_remote_object("worker1", "Box", one, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(b);
    for (via w = VIA_SYNC; w <= VIA_REMOTE; w++) {
        RANK_CHECK(!call_via(b, "nope", NULL, w));
        SOFT_CHECK(soft, failed_with(FERRY_EREMOTE, "has no method 'nope'", "Box", NULL) ||
                             !fprintf(stderr, "(calling 'nope' by %s)\n", VIA_NAME[w]));
        RANK_CHECK(!call_via(b, "fail", NULL, w));
        SOFT_CHECK(soft, failed_with(FERRY_EREMOTE, "Box.fail", "method said no", "worker1") ||
                             !fprintf(stderr, "(calling 'fail' by %s)\n", VIA_NAME[w]));
    }
    ferry_future *f = ferry_rref_call_async(b, "fail", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(f);
    future_failure(f);
    SOFT_CHECK(soft, failed_with(FERRY_EREMOTE, "Box.fail", "method said no", NULL));
    ferry_future_release(f);
    ferry_value *v = ferry_rref_call_sync(b, "get", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == 1);
    ferry_value_release(v);

    /* Arguments refused before sending. */
    RANK_CHECK(!ferry_rref_call_sync(NULL, "get", NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft, failed_with(FERRY_EINVAL, NULL, NULL, NULL));
    RANK_CHECK(!ferry_rref_call_async(b, NULL, NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft, failed_with(FERRY_EINVAL, NULL, NULL, NULL));
    RANK_CHECK(!ferry_rref_call_remote(b, "get", one, one, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft, failed_with(FERRY_EINVAL, NULL, NULL, NULL));
    RANK_CHECK(!ferry_remote_object("worker1", NULL, NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft, failed_with(FERRY_EINVAL, NULL, NULL, NULL));
    RANK_CHECK(!ferry_remote_object("worker9", "Box", one, NULL, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft, failed_with(FERRY_EUNKNOWN_WORKER, NULL, NULL, NULL));

    /* RRefs to plain values: method calls fail, the value proxies work, here and there. */
    ferry_value *three = ferry_args(1, ferry_int(3));
    ferry_value *n3 = ferry_int(3);
    ferry_rref *vals[2] = {ferry_remote("worker1", "echo", three, NULL, FERRY_TIMEOUT_DEFAULT),
                           ferry_rref_new(n3)};
    ferry_value *four = ferry_args(1, ferry_int(4));
    for (int k = 0; k < 2; k++) {
        RANK_CHECK(vals[k]);
        RANK_CHECK(!ferry_rref_call_sync(vals[k], "get", NULL, NULL, FERRY_TIMEOUT_DEFAULT));
        SOFT_CHECK(soft,
                   failed_with(k ? FERRY_OK : FERRY_EREMOTE, "not an object", NULL, NULL));
        v = ferry_rref_rpc_sync(vals[k], "add_int", four, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v && ferry_value_as_int(v) == 7);
        ferry_value_release(v);
        f = ferry_rref_rpc_async(vals[k], "async_add_int", four, NULL, FERRY_TIMEOUT_DEFAULT);
        v = f ? ferry_future_value(f) : NULL;
        RANK_CHECK(v && ferry_value_as_int(v) == 7);
        ferry_value_release(v);
        ferry_future_release(f);
        ferry_rref *r3 = ferry_rref_remote(vals[k], "add_int", four, NULL,
                                           FERRY_TIMEOUT_DEFAULT);
        v = r3 ? ferry_rref_to_here(r3, FERRY_TIMEOUT_DEFAULT) : NULL;
        RANK_CHECK(v && ferry_value_as_int(v) == 7);
        ferry_value_release(v);
        ferry_rref_release(r3);
    }
    /* ...and the proxies give a function the object RRef's value: an object, refused by
       add_int as a wrong kind, by its own error. */
    RANK_CHECK(!ferry_rref_rpc_sync(b, "add_int", four, NULL, FERRY_TIMEOUT_DEFAULT));
    SOFT_CHECK(soft,
               failed_with(FERRY_EREMOTE, "add_int expects an int, got object", NULL, NULL));

    ferry_rref_release(vals[0]);
    ferry_rref_release(vals[1]);
    ferry_rref_release(b);
    ferry_value_release(one);
    ferry_value_release(three);
    ferry_value_release(n3);
    ferry_value_release(four);
    RANK_CHECK(soft == 0);
    return check_all_died("worker1", 1);
}

static ferry_tensor *randn(int64_t n, uint64_t seed)
{
    ferry_generator *g = ferry_generator_new(seed);
    ferry_tensor *t = g ? ferry_randn(1, &n, FERRY_FLOAT64, g) : NULL;
    ferry_generator_free(g);
    return t;
}

static ferry_tensor *leaf(ferry_tensor *values)
{
    ferry_tensor *t = ferry_tensor_clone_data(values);
    if (t && ferry_tensor_set_requires_grad(t, true) != FERRY_OK) {
        ferry_tensor_release(t);
        return NULL;
    }
    return t;
}

/* sum(y * y) */
static ferry_tensor *loss_of(ferry_value *y)
{
    ferry_tensor *t = ferry_value_as_tensor(y);
    ferry_tensor *sq = t ? ferry_mul(t, t) : NULL;
    ferry_tensor *l = sq ? ferry_sum(sq) : NULL;
    ferry_tensor_release(sq);
    return l;
}

static bool close_to(const char *what, via w, ferry_tensor *got, ferry_tensor *want)
{
    bool ok = got && want && ferry_allclose(got, want, 1e-12, 0);
    if (!ok) {
        char a[256] = "NULL", b[256] = "NULL";
        if (got)
            ferry_tensor_format(got, a, sizeof a);
        if (want)
            ferry_tensor_format(want, b, sizeof b);
        fprintf(stderr, "%s (%s): got %s, the function gives %s\n", what, VIA_NAME[w], a, b);
    }
    return ok;
}

/* loss = sum((x * p)^2) with p a Scaler's parameter on worker1, through forward() called each
   way, gives x and p the gradients the same loss gets through mul(x, w) with w a leaf here; the
   parameter's lands in the owner's context, never in its .grad. */
static int body_autograd(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *xv = randn(5, 21), *pv = randn(5, 22);
    RANK_CHECK(xv && pv);
    ferry_value *pa = ferry_args(1, ferry_tensor_value(pv));
    ferry_rref *s = ferry_remote_object("worker1", "Scaler", pa, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(pa);
    RANK_CHECK(s);
    for (via w = VIA_SYNC; w <= VIA_REMOTE; w++) {
        /* The registered function. */
        ferry_tensor *x0 = leaf(xv), *w0 = leaf(pv);
        RANK_CHECK(x0 && w0);
        int64_t ctx0 = ferry_dist_autograd_context_begin();
        RANK_CHECK(ctx0 >= 0);
        ferry_value *a = ferry_args(2, ferry_tensor_value(x0), ferry_tensor_value(w0));
        ferry_value *y0 = rpc_via("worker1", "mul", a, w);
        ferry_value_release(a);
        ferry_tensor *l0 = y0 ? loss_of(y0) : NULL;
        RANK_CHECK(l0 && ferry_dist_autograd_backward(ctx0, &l0, 1, false) == FERRY_OK);
        ferry_tensor *gx0 = ferry_dist_autograd_get_gradient(ctx0, x0);
        ferry_tensor *gw0 = ferry_dist_autograd_get_gradient(ctx0, w0);
        RANK_CHECK(gx0 && gw0);
        RANK_CHECK(ferry_dist_autograd_context_end(ctx0) == FERRY_OK);

        /* The method. */
        ferry_tensor *x1 = leaf(xv);
        int64_t ctx1 = ferry_dist_autograd_context_begin();
        RANK_CHECK(x1 && ctx1 >= 0);
        a = ferry_args(1, ferry_tensor_value(x1));
        ferry_value *y1 = call_via(s, "forward", a, w);
        ferry_value_release(a);
        RANK_CHECK(y1 && ferry_tensor_requires_grad(ferry_value_as_tensor(y1)));
        ferry_tensor *l1 = loss_of(y1);
        RANK_CHECK(l1 && ferry_tensor_item(l1) == ferry_tensor_item(l0));
        RANK_CHECK(ferry_dist_autograd_backward(ctx1, &l1, 1, false) == FERRY_OK);
        ferry_tensor *gx1 = ferry_dist_autograd_get_gradient(ctx1, x1);
        RANK_CHECK(close_to("gradient of the input", w, gx1, gx0));
        a = ferry_args(1, ferry_int(ctx1));
        ferry_value *pg = ferry_rref_call_sync(s, "param_grad", a, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(a);
        RANK_CHECK(pg && ferry_list_len(pg) == 2);
        RANK_CHECK(close_to("gradient of the parameter", w,
                            ferry_value_as_tensor(ferry_list_get(pg, 0)), gw0));
        RANK_CHECK(!ferry_value_as_bool(ferry_list_get(pg, 1)));
        RANK_CHECK(!ferry_tensor_grad(x1));
        RANK_CHECK(ferry_dist_autograd_context_end(ctx1) == FERRY_OK);

        ferry_value_release(pg);
        ferry_value_release(y0);
        ferry_value_release(y1);
        ferry_tensor *ts[] = {x0, w0, l0, gx0, gw0, x1, l1, gx1};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            ferry_tensor_release(ts[i]);
    }
    ferry_rref_release(s);
    ferry_tensor_release(xv);
    ferry_tensor_release(pv);
    return check_all_died("worker1", 1);
}

#define BOTH(name, world, body, secs)                                                     \
    Test(object_tcp, name, .timeout = secs)                                               \
    {                                                                                     \
        class_state cls;                                                                  \
        register_all(&cls);                                                               \
        rpc_case_run("tcp", world, body, &cls, secs - 5);                                 \
    }                                                                                     \
    Test(object_shm, name, .timeout = secs)                                               \
    {                                                                                     \
        class_state cls;                                                                  \
        register_all(&cls);                                                               \
        rpc_case_run("shm", world, body, &cls, secs - 5);                                 \
    }

BOTH(objects_are_refused_by_value_when_sent_returned_or_fetched, 2, body_by_value, 40)
BOTH(first_use_says_no_class_when_the_owner_has_no_such_class, 2, body_unknown_class, 40)
BOTH(failures_surface_with_class_and_method_when_construction_or_a_call_fails, 2, body_errors,
     40)
BOTH(gradients_through_a_method_match_an_equivalent_function_when_called_three_ways, 2,
     body_autograd, 40)
