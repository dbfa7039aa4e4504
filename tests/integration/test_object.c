/* Remote object tests: construction on 2-4 workers and calls three ways (rpc_sync, rpc_async,
   remote), results kept on the owner and chained into later calls, an object on the caller
   itself, the destructor running exactly once on the owner (after a fork to a third worker and
   at shutdown), and the one-call-at-a-time rule across callers next to concurrent methods. By
   value refusals, errors, the value proxies and distributed autograd are in test_object_more.c.
   On tcp and shm. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/object.h"
#include "ferry/rref.h"
#include "object_probe.h"
#include "rpc_harness.h"

#define MAGIC_LIVE 0x0b1ec7u
#define MAGIC_DEAD 0xdead0bu

typedef enum { VIA_SYNC, VIA_ASYNC, VIA_REMOTE } via;

/* This process's Counter objects, births and deaths; `cv` signals each death. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t made, destroyed, bad_destroy;
} class_state;

typedef struct {
    class_state cls;
    pthread_mutex_t kept_mu;
    ferry_rref *kept; /* an RRef a worker was asked to hold ("keep") */
} test_state;

/* A counter with the bookkeeping the serialisation checks read. */
typedef struct {
    ferry_test_probe probe; /* first: the probe's methods take the object */
    unsigned magic;
    int64_t value;
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
    if (ferry_list_len(args) > 0)
        c->value = ferry_value_as_int(ferry_list_get(args, 0));
    else if (ferry_dict_len(kwargs) > 0)
        c->value = ferry_value_as_int(ferry_dict_get(kwargs, "start"));
    ferry_test_probe_init(&c->probe);
    pthread_mutex_lock(&cls->mu);
    cls->made++;
    pthread_mutex_unlock(&cls->mu);
    *obj = c;
    return FERRY_OK;
}

static void counter_free(void *obj, void *user)
{
    class_state *cls = user;
    counter *c = obj;
    bool live = c->magic == MAGIC_LIVE;
    if (live) {
        c->magic = MAGIC_DEAD;
        ferry_test_probe_destroy(&c->probe);
        free(c);
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
    *result = ferry_int(((counter *)obj)->value);
    return FERRY_OK;
}

/* add(n): a read-modify-write with no lock of its own; the one-at-a-time rule keeps it exact. */
static ferry_status m_add(void *obj, const ferry_value *args, const ferry_value *kwargs,
                          ferry_value **result, void *user)
{
    counter *c = obj;
    int64_t v = c->value;
    v += ferry_list_len(args) ? ferry_value_as_int(ferry_list_get(args, 0)) : 1;
    c->value = v;
    *result = ferry_int(v);
    return FERRY_OK;
}

/* add_from(rref): adds the int an RRef owned here holds (a result an earlier call kept). */
static ferry_status m_add_from(void *obj, const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    counter *c = obj;
    ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, 0));
    if (!r)
        return ferry_last_status();
    if (!ferry_rref_is_owner(r))
        return ferry_set_error(FERRY_EINVAL, "add_from: expected an RRef owned here");
    ferry_value *v = ferry_rref_local_value(r);
    if (!v)
        return ferry_last_status();
    c->value += ferry_value_as_int(v);
    ferry_value_release(v);
    *result = ferry_int(c->value);
    return FERRY_OK;
}

static const ferry_method_def COUNTER_METHODS[] = {
    {"get", m_get, false},
    {"add", m_add, false},
    {"add_from", m_add_from, false},
    FERRY_TEST_PROBE_METHODS,
};

/* This process's class counts and ferry_object_debug_counts, read once they agree (every
   object here is a Counter): the library counts a death just after the destructor returns and a
   birth just after the constructor, so a reader may see one side first. Nothing signals the
   library's counters, so this polls, for 2 s at most. */
static void settled_counts(class_state *cls, int64_t *made, int64_t *destroyed, int64_t *bad,
                           ferry_object_counts *n)
{
    double until = rpc_test_now_s() + 2.0;
    for (;;) {
        pthread_mutex_lock(&cls->mu);
        *made = cls->made;
        *destroyed = cls->destroyed;
        *bad = cls->bad_destroy;
        pthread_mutex_unlock(&cls->mu);
        ferry_object_debug_counts(n);
        if ((n->alive == *made - *destroyed && n->destroyed == *destroyed) ||
            rpc_test_now_s() > until)
            return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

/* ---- functions the tests call ---- */

/* obj_counts(want) -> [made, destroyed, bad destroys, debug alive, debug destroyed] of this
   process, once `want` Counters died (waiting up to 10 s for the destructors). */
static ferry_status obj_counts_fn(const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result, void *user)
{
    class_state *cls = user;
    int64_t want = ferry_value_as_int(ferry_list_get(args, 0));
    pthread_mutex_lock(&cls->mu);
    ferry_test_wait_until(&cls->cv, &cls->mu, &cls->destroyed, want, 10.0);
    pthread_mutex_unlock(&cls->mu);
    int64_t made, destroyed, bad;
    ferry_object_counts n;
    settled_counts(cls, &made, &destroyed, &bad, &n);
    *result = ferry_list_of(5, ferry_int(made), ferry_int(destroyed), ferry_int(bad),
                            ferry_int(n.alive), ferry_int(n.destroyed));
    return *result ? FERRY_OK : ferry_last_status();
}

/* keep(rref): holds the RRef here until drop_kept. */
static ferry_status keep_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    test_state *st = user;
    ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, 0));
    if (!r)
        return ferry_last_status();
    pthread_mutex_lock(&st->kept_mu);
    ferry_rref *old = st->kept;
    st->kept = ferry_rref_retain(r);
    pthread_mutex_unlock(&st->kept_mu);
    ferry_rref_release(old);
    return FERRY_OK;
}

/* use_kept(n): add(n) on the kept RRef's object. */
static ferry_status use_kept_fn(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    test_state *st = user;
    pthread_mutex_lock(&st->kept_mu);
    ferry_rref *r = ferry_rref_retain(st->kept);
    pthread_mutex_unlock(&st->kept_mu);
    if (!r)
        return ferry_set_error(FERRY_EINVAL, "use_kept: nothing kept");
    *result = ferry_rref_call_sync(r, "add", args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_rref_release(r);
    return *result ? FERRY_OK : ferry_last_status();
}

/* drop_kept(): releases the kept RRef and waits until the deletion reached its owner. */
static ferry_status drop_kept_fn(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    test_state *st = user;
    pthread_mutex_lock(&st->kept_mu);
    ferry_rref *r = st->kept;
    st->kept = NULL;
    pthread_mutex_unlock(&st->kept_mu);
    if (!r)
        return ferry_set_error(FERRY_EINVAL, "drop_kept: nothing kept");
    ferry_rref_release(r);
    return ferry_debug_rref_wait_idle(20);
}

/* drive(rref, method, n) -> the list of the n results of method(1) called on the object. */
static ferry_status drive_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, 0));
    const char *method = ferry_value_as_string(ferry_list_get(args, 1));
    int64_t n = ferry_value_as_int(ferry_list_get(args, 2));
    if (!r || !method || n < 1 || n > 64)
        return ferry_set_error(FERRY_EINVAL, "drive: bad arguments");
    ferry_value *items[64];
    ferry_value *one = ferry_args(1, ferry_int(1));
    int64_t done = 0;
    for (; done < n; done++) {
        items[done] = ferry_rref_call_sync(r, method, one, NULL, FERRY_TIMEOUT_DEFAULT);
        if (!items[done])
            break;
    }
    ferry_status rc = done == n ? FERRY_OK : ferry_last_status();
    if (rc == FERRY_OK)
        *result = ferry_list_from(items, (size_t)n);
    for (int64_t i = 0; i < done; i++)
        ferry_value_release(items[i]);
    ferry_value_release(one);
    return rc;
}

static void register_all(test_state *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_init(&st->cls.mu, NULL);
    pthread_cond_init(&st->cls.cv, NULL);
    pthread_mutex_init(&st->kept_mu, NULL);
    ferry_class_def def = {.construct = counter_new,
                           .destroy = counter_free,
                           .methods = COUNTER_METHODS,
                           .n_methods = sizeof COUNTER_METHODS / sizeof COUNTER_METHODS[0],
                           .user = &st->cls};
    cr_assert(ferry_register_class("Counter", &def) == FERRY_OK);
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("obj_counts", obj_counts_fn, &st->cls) == FERRY_OK);
    cr_assert(ferry_register_function("keep", keep_fn, st) == FERRY_OK);
    cr_assert(ferry_register_function("use_kept", use_kept_fn, st) == FERRY_OK);
    cr_assert(ferry_register_function("drop_kept", drop_kept_fn, st) == FERRY_OK);
    cr_assert(ferry_register_function("drive", drive_fn, NULL) == FERRY_OK);
}

/* ---- helpers ---- */

typedef struct {
    int64_t made, destroyed, bad, alive, debug_destroyed;
} owner_counts;

/* The Counter counts of worker `to` once `want_destroyed` of its Counters died. */
static int counts_of(const char *to, int64_t want_destroyed, owner_counts *out)
{
    ferry_value *a = ferry_args(1, ferry_int(want_destroyed));
    ferry_value *v = ferry_rpc_sync(to, "obj_counts", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    RANK_CHECK(v && ferry_list_len(v) == 5);
    int64_t n[5];
    for (size_t i = 0; i < 5; i++)
        n[i] = ferry_value_as_int(ferry_list_get(v, i));
    ferry_value_release(v);
    *out = (owner_counts){n[0], n[1], n[2], n[3], n[4]};
    return 0;
}

/* Once every RRef this worker dropped reached its owner, `to` destroyed exactly `died` more
   Counters than in `base` and holds none of the ones made since. */
static int check_died(const char *to, const owner_counts *base, int64_t made, int64_t died)
{
    RANK_CHECK(ferry_debug_rref_wait_idle(20) == FERRY_OK);
    owner_counts now;
    RANK_CHECK(counts_of(to, base->destroyed + died, &now) == 0);
    if (now.made != base->made + made || now.destroyed != base->destroyed + died || now.bad ||
        now.alive != base->alive + made - died ||
        now.debug_destroyed != base->debug_destroyed + died) {
        fprintf(stderr, "%s: made %lld destroyed %lld bad %lld alive %lld debug destroyed %lld; "
                        "expected %lld made and %lld destroyed since made %lld destroyed %lld "
                        "alive %lld\n",
                to, (long long)now.made, (long long)now.destroyed, (long long)now.bad,
                (long long)now.alive, (long long)now.debug_destroyed, (long long)made,
                (long long)died, (long long)base->made, (long long)base->destroyed,
                (long long)base->alive);
        RANK_CHECK(!"the owner's object counts are off");
    }
    return 0;
}

/* A method call made one of three ways; the result fetched. */
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

/* Whether method(n) called `v` gives the int `want`. */
static int check_int_call(ferry_rref *r, const char *method, int64_t n, via v, int64_t want)
{
    ferry_value *a = ferry_args(1, ferry_int(n));
    ferry_value *x = call_via(r, method, a, v);
    ferry_value_release(a);
    RANK_CHECK(x && ferry_value_kind(x) == FERRY_VALUE_INT);
    if (ferry_value_as_int(x) != want)
        fprintf(stderr, "%s(%lld): got %lld, want %lld\n", method, (long long)n,
                (long long)ferry_value_as_int(x), (long long)want);
    RANK_CHECK(ferry_value_as_int(x) == want);
    ferry_value_release(x);
    return 0;
}

static int check_int_rref(ferry_rref *r, const char *owner, int64_t want)
{
    RANK_CHECK(r && strcmp(ferry_rref_owner_name(r), owner) == 0);
    ferry_value *x = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(x && ferry_value_as_int(x) == want);
    ferry_value_release(x);
    return 0;
}

/* This process's Counter counts against what a rank expects; prints them when they differ. */
static int check_local(const char *when, test_state *st, int64_t made, int64_t destroyed)
{
    ferry_object_counts n;
    int64_t m, d, bad;
    settled_counts(&st->cls, &m, &d, &bad, &n);
    if (m != made || d != destroyed || bad || n.alive != made - destroyed ||
        n.destroyed != destroyed)
        fprintf(stderr, "%s: made %lld destroyed %lld bad %lld, debug alive %lld destroyed %lld;"
                        " expected %lld made, %lld destroyed\n",
                when, (long long)m, (long long)d, (long long)bad, (long long)n.alive,
                (long long)n.destroyed, (long long)made, (long long)destroyed);
    RANK_CHECK(m == made && d == destroyed && bad == 0);
    RANK_CHECK(n.alive == made - destroyed && n.destroyed == destroyed);
    return 0;
}

/* ---- bodies ---- */

/* Every rank makes two Counters on the next rank, calls them three ways, chains kept results
   into later calls, and drops everything: the owner destroyed exactly those two. */
static int body_calls(int rank, int world, const rpc_case *c)
{
    char owner[32];
    snprintf(owner, sizeof owner, "worker%d", (rank + 1) % world);
    owner_counts base;
    RANK_CHECK(counts_of(owner, 0, &base) == 0);
    int64_t s = 100 * (rank + 1);

    ferry_value *kw = ferry_dict_new();
    ferry_value *start = ferry_int(s);
    RANK_CHECK(kw && start && ferry_dict_set(kw, "start", start) == FERRY_OK);
    ferry_rref *a = ferry_remote_object(owner, "Counter", NULL, kw, FERRY_TIMEOUT_DEFAULT);
    ferry_value *pos = ferry_args(1, ferry_int(7));
    ferry_rref *b = ferry_remote_object(owner, "Counter", pos, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(a && b && !ferry_rref_is_owner(a));
    RANK_CHECK(strcmp(ferry_rref_owner_name(a), owner) == 0);

    RANK_CHECK(check_int_call(a, "add", 5, VIA_SYNC, s + 5) == 0);
    RANK_CHECK(check_int_call(a, "add", 1, VIA_ASYNC, s + 6) == 0);
    RANK_CHECK(check_int_call(a, "add", 2, VIA_REMOTE, s + 8) == 0);
    RANK_CHECK(check_int_call(b, "get", 0, VIA_SYNC, 7) == 0);
    RANK_CHECK(check_int_call(b, "add", 3, VIA_ASYNC, 10) == 0);

    /* Results kept on the owner, passed into later calls on it. */
    ferry_value *ten = ferry_args(1, ferry_int(10));
    ferry_rref *k1 = ferry_rref_call_remote(a, "add", ten, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(k1 && !ferry_rref_is_owner(k1));
    ferry_value *ka = ferry_args(1, ferry_rref_value(k1));
    ferry_rref *k2 = ferry_rref_call_remote(a, "add_from", ka, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(k2);
    ferry_value *kb = ferry_args(1, ferry_rref_value(k2));
    ferry_value *v = ferry_rref_call_sync(a, "add_from", kb, NULL, FERRY_TIMEOUT_DEFAULT);
    /* a: s+8 -> s+18 (k1) -> 2s+36 (k2) -> 4s+72 */
    RANK_CHECK(v && ferry_value_as_int(v) == 4 * s + 72);
    ferry_value_release(v);
    RANK_CHECK(check_int_rref(k1, owner, s + 18) == 0);
    RANK_CHECK(check_int_rref(k2, owner, 2 * s + 36) == 0);
    /* b is an object of its own. */
    v = ferry_rref_call_sync(b, "add_from", ka, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_as_int(v) == 10 + s + 18);
    ferry_value_release(v);

    /* Calls from one caller run in the order they were sent. */
    ferry_future *fs[10];
    for (int i = 0; i < 10; i++)
        RANK_CHECK(fs[i] = ferry_rref_call_async(b, "add", NULL, NULL, FERRY_TIMEOUT_DEFAULT));
    char seen[256];
    size_t len = 0;
    bool in_order = true;
    for (int i = 0; i < 10; i++) {
        ferry_value *x = ferry_future_value(fs[i]);
        RANK_CHECK(x && ferry_value_kind(x) == FERRY_VALUE_INT);
        int64_t step = ferry_value_as_int(x) - (10 + s + 18);
        in_order = in_order && step == i + 1;
        len += (size_t)snprintf(seen + len, sizeof seen - len, " %lld", (long long)step);
        ferry_value_release(x);
        ferry_future_release(fs[i]);
    }
    if (!in_order)
        fprintf(stderr, "%s: 10 async add(1) calls sent in order ran as steps%s\n", owner, seen);
    RANK_CHECK(in_order);

    ferry_value *vals[] = {kw, start, pos, ten, ka, kb};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        ferry_value_release(vals[i]);
    ferry_rref_release(k1);
    ferry_rref_release(k2);
    ferry_rref_release(a);
    ferry_rref_release(b);
    return check_died(owner, &base, 2, 2);
}

/* Waits (bounded) until this process destroyed `want` Counters. */
static int64_t local_destroyed(class_state *cls, int64_t want)
{
    pthread_mutex_lock(&cls->mu);
    ferry_test_wait_until(&cls->cv, &cls->mu, &cls->destroyed, want, 10.0);
    int64_t n = cls->destroyed;
    pthread_mutex_unlock(&cls->mu);
    return n;
}

/* A remote object on the caller itself: an OwnerRRef whose local value is the object, callable
   here and by another worker. */
static int body_self(int rank, int world, const rpc_case *c)
{
    test_state *st = c->user;
    if (rank != 0)
        return 0;
    RANK_CHECK(check_local("worker0 before", st, 0, 0) == 0);
    ferry_value *three = ferry_args(1, ferry_int(3));
    ferry_rref *r = ferry_remote_object("worker0", "Counter", three, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r && ferry_rref_is_owner(r) && ferry_rref_confirmed_by_owner(r));
    ferry_value *obj = ferry_rref_local_value(r);
    RANK_CHECK(obj && ferry_value_kind(obj) == FERRY_VALUE_OBJECT);
    RANK_CHECK(ferry_object_class(obj) && strcmp(ferry_object_class(obj), "Counter") == 0);
    counter *raw = ferry_object_ptr(obj);
    RANK_CHECK(raw && raw->magic == MAGIC_LIVE && raw->value == 3);
    RANK_CHECK(check_local("worker0 with the object", st, 1, 0) == 0);

    RANK_CHECK(check_int_call(r, "add", 2, VIA_SYNC, 5) == 0);
    RANK_CHECK(check_int_call(r, "add", 1, VIA_ASYNC, 6) == 0);
    ferry_value *none = ferry_list_of(0), *kw = ferry_dict_new();
    ferry_value *got = ferry_object_call(obj, "get", none, kw);
    RANK_CHECK(got && ferry_value_as_int(got) == 6);
    ferry_value_release(got);
    ferry_rref *kept = ferry_rref_call_remote(r, "get", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(kept && ferry_rref_is_owner(kept));
    got = ferry_rref_local_value(kept);
    RANK_CHECK(got && ferry_value_as_int(got) == 6);
    ferry_value_release(got);
    got = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(got && ferry_value_equal(got, obj)); /* the owner's value itself */
    ferry_value_release(got);

    /* Another worker calls it through its fork. */
    ferry_value *da = ferry_args(3, ferry_rref_value(r), ferry_string("add"), ferry_int(3));
    ferry_value *res = ferry_rpc_sync("worker1", "drive", da, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(res && ferry_list_len(res) == 3);
    for (size_t i = 0; i < 3; i++)
        RANK_CHECK(ferry_value_as_int(ferry_list_get(res, i)) == 7 + (int64_t)i);
    RANK_CHECK(check_int_call(r, "get", 0, VIA_SYNC, 9) == 0);
    ferry_value_release(res);
    ferry_value_release(da);

    ferry_value_release(obj);
    ferry_value_release(none);
    ferry_value_release(kw);
    ferry_value_release(three);
    ferry_rref_release(kept);
    ferry_rref_release(r);
    RANK_CHECK(local_destroyed(&st->cls, 1) == 1);
    return check_local("worker0 after releasing everything", st, 1, 1);
}

/* worker1 makes an object on worker0, forks its RRef to worker2 and drops its own: the object
   lives on until worker2 drops its fork too. Once after creation was confirmed, once while the
   creation and the fork are still in flight. */
static int body_fork_third(int rank, int world, const rpc_case *c)
{
    if (rank != 1)
        return 0;
    owner_counts base, mid;
    RANK_CHECK(counts_of("worker0", 0, &base) == 0);
    for (int round = 0; round < 2; round++) {
        ferry_value *one = ferry_args(1, ferry_int(1));
        ferry_rref *r = ferry_remote_object("worker0", "Counter", one, NULL,
                                            FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(r);
        if (round == 0)
            RANK_CHECK(check_int_call(r, "add", 1, VIA_SYNC, 2) == 0);
        ferry_value *ka = ferry_args(1, ferry_rref_value(r));
        ferry_value *none = ferry_rpc_sync("worker2", "keep", ka, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(none);
        ferry_value_release(none);
        ferry_value_release(ka);
        ferry_rref_release(r);
        RANK_CHECK(ferry_debug_rref_wait_idle(20) == FERRY_OK);

        RANK_CHECK(counts_of("worker0", 0, &mid) == 0);
        RANK_CHECK(mid.made == base.made + round + 1);
        RANK_CHECK(mid.destroyed == base.destroyed + round); /* worker2 still holds it */
        ferry_value *ten = ferry_args(1, ferry_int(10));
        ferry_value *v = ferry_rpc_sync("worker2", "use_kept", ten, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v && ferry_value_as_int(v) == (round == 0 ? 12 : 11));
        ferry_value_release(v);
        ferry_value_release(ten);
        v = ferry_rpc_sync("worker2", "drop_kept", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v);
        ferry_value_release(v);
        ferry_value_release(one);
        RANK_CHECK(check_died("worker0", &base, round + 1, round + 1) == 0);
    }
    return 0;
}

/* Objects that other workers still reference when RPC shuts down are destroyed by the
   shutdown, once: worker1's object behind worker0's UserRRef, and worker0's object behind
   worker1's fork only. An object whose OwnerRRef the owner's program still holds stays until
   the program lets it go, and then dies once. */
static int body_shutdown(int rank, int world, const rpc_case *c)
{
    test_state *st = c->user;
    ferry_rref *other = NULL, *held = NULL;
    if (rank == 0) {
        ferry_value *a = ferry_args(1, ferry_int(1));
        other = ferry_remote_object("worker1", "Counter", a, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_rref *forked = ferry_remote_object("worker0", "Counter", a, NULL,
                                                 FERRY_TIMEOUT_DEFAULT);
        held = ferry_remote_object("worker0", "Counter", a, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(other && forked && held);
        RANK_CHECK(check_int_call(other, "add", 1, VIA_SYNC, 2) == 0);
        RANK_CHECK(check_int_call(forked, "add", 2, VIA_SYNC, 3) == 0);
        RANK_CHECK(check_int_call(held, "add", 3, VIA_SYNC, 4) == 0);
        ferry_value *ka = ferry_args(1, ferry_rref_value(forked));
        ferry_value *none = ferry_rpc_sync("worker1", "keep", ka, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(none);
        ferry_value_release(none);
        ferry_value_release(ka);
        ferry_value_release(a);
        ferry_rref_release(forked);
        RANK_CHECK(ferry_debug_rref_wait_idle(20) == FERRY_OK);
        RANK_CHECK(check_local("worker0 before shutdown", st, 2, 0) == 0);
    }
    RANK_CHECK(ferry_shutdown(true, 30) == FERRY_OK);
    if (rank == 1) {
        RANK_CHECK(check_local("worker1 after shutdown", st, 1, 1) == 0);
        ferry_rref_release(st->kept); /* deleted by the shutdown: no second destruction */
        st->kept = NULL;
        return check_local("worker1 after releasing its fork", st, 1, 1);
    }
    RANK_CHECK(check_local("worker0 after shutdown", st, 2, 1) == 0);
    ferry_rref_release(other);
    RANK_CHECK(check_local("worker0 after releasing its user", st, 2, 1) == 0);
    ferry_rref_release(held);
    return check_local("worker0 after releasing its owner RRef", st, 2, 2);
}

/* Runs drive(r, method, n) on worker1 and worker2 at once; each list must hold n results that
   are all `want` (a bool) or, with check_bool false, just n results. */
static int drive_both(ferry_rref *r, const char *method, int n, bool check_bool)
{
    ferry_future *f[2];
    for (int i = 0; i < 2; i++) {
        ferry_value *a = ferry_args(3, ferry_rref_value(r), ferry_string(method), ferry_int(n));
        f[i] = ferry_rpc_async(i ? "worker2" : "worker1", "drive", a, NULL,
                               FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(a);
        RANK_CHECK(f[i]);
    }
    for (int i = 0; i < 2; i++) {
        ferry_value *v = ferry_future_value(f[i]);
        RANK_CHECK(v && ferry_list_len(v) == (size_t)n);
        for (int k = 0; check_bool && k < n; k++) {
            ferry_value *x = ferry_list_get(v, (size_t)k);
            if (!ferry_value_as_bool(x))
                fprintf(stderr, "%s on worker%d: call %d says false\n", method, i + 1, k);
            RANK_CHECK(ferry_value_as_bool(x));
        }
        ferry_value_release(v);
        ferry_future_release(f[i]);
    }
    return 0;
}

/* Two workers call one object at once: a plain method never has two calls inside; a
   concurrent one has both inside together, even beside a plain call that holds the object. */
static int body_serial(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    owner_counts base;
    RANK_CHECK(counts_of("worker0", 0, &base) == 0);
    ferry_value *zero = ferry_args(1, ferry_int(0));
    for (int kind = 0; kind < 3; kind++) {
        ferry_rref *r = ferry_remote_object("worker0", "Counter", zero, NULL,
                                            FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(r);
        if (kind == 0) {
            RANK_CHECK(drive_both(r, "critical", 4, false) == 0);
            ferry_value *rep = ferry_rref_call_sync(r, "report", NULL, NULL,
                                                    FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(rep && ferry_list_len(rep) == 3);
            const char *log = ferry_value_as_string(ferry_list_get(rep, 2));
            fprintf(stderr, "critical: enters %lld, at most %lld inside, log %s\n",
                    (long long)ferry_value_as_int(ferry_list_get(rep, 0)),
                    (long long)ferry_value_as_int(ferry_list_get(rep, 1)), log ? log : "?");
            RANK_CHECK(ferry_value_as_int(ferry_list_get(rep, 0)) == 8);
            RANK_CHECK(ferry_value_as_int(ferry_list_get(rep, 1)) == 1);
            RANK_CHECK(log && strcmp(log, "ELELELELELELELEL") == 0);
            ferry_value_release(rep);
            /* 100 unlocked increments from two callers lose none. */
            RANK_CHECK(drive_both(r, "add", 50, false) == 0);
            RANK_CHECK(check_int_call(r, "get", 0, VIA_SYNC, 100) == 0);
        } else if (kind == 1) {
            RANK_CHECK(drive_both(r, "meet", 1, true) == 0);
        } else {
            ferry_future *f[2];
            for (int i = 0; i < 2; i++) {
                ferry_value *a = ferry_args(3, ferry_rref_value(r),
                                            ferry_string(i ? "peek" : "hold"), ferry_int(1));
                f[i] = ferry_rpc_async(i ? "worker2" : "worker1", "drive", a, NULL,
                                       FERRY_TIMEOUT_DEFAULT);
                ferry_value_release(a);
                RANK_CHECK(f[i]);
            }
            for (int i = 0; i < 2; i++) {
                ferry_value *v = ferry_future_value(f[i]);
                RANK_CHECK(v && ferry_list_len(v) == 1);
                if (!ferry_value_as_bool(ferry_list_get(v, 0)))
                    fprintf(stderr, "%s says false\n", i ? "peek" : "hold");
                RANK_CHECK(ferry_value_as_bool(ferry_list_get(v, 0)));
                ferry_value_release(v);
                ferry_future_release(f[i]);
            }
        }
        ferry_rref_release(r);
    }
    ferry_value_release(zero);
    return check_died("worker0", &base, 3, 3);
}

#define BOTH(name, world, body, secs)                                                     \
    Test(object_tcp, name, .timeout = secs)                                               \
    {                                                                                     \
        test_state st;                                                                    \
        register_all(&st);                                                                \
        rpc_case_run("tcp", world, body, &st, secs - 5);                                  \
    }                                                                                     \
    Test(object_shm, name, .timeout = secs)                                               \
    {                                                                                     \
        test_state st;                                                                    \
        register_all(&st);                                                                \
        rpc_case_run("shm", world, body, &st, secs - 5);                                  \
    }

BOTH(methods_run_on_owner_when_called_three_ways_and_chained_on_four_workers, 4, body_calls, 60)
BOTH(object_on_self_is_an_owner_rref_when_constructed_locally, 2, body_self, 40)
BOTH(destructor_runs_once_on_owner_when_a_fork_to_a_third_worker_goes_too, 3, body_fork_third,
     40)
BOTH(objects_other_workers_reference_are_destroyed_once_when_rpc_shuts_down, 2, body_shutdown, 40)
BOTH(calls_from_two_workers_never_interleave_unless_the_method_is_concurrent, 3, body_serial,
     60)
