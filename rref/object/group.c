/* Worker groups (ferry/object.h, "groups"): a fixed list of workers, or of RRefs to objects on
   them, and calls that fan out to every member at once and fold the members' results into one
   future. A call shares its arguments out (group_policy.c) before it sends anything, so a bad
   argument costs no message; then every member's call goes out as an ordinary ferry_rpc_async
   or ferry_rref_call_async. Each member's future counts itself done with an inline callback (a
   decrement, nothing more: it runs on the progress thread); the last one completes an internal
   future whose then-callback folds the results on a pool thread, where a collect function, user
   code, may run. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/refcount.h"
#include "ferry/object.h"
#include "rpc/module.h"
#include "rref/object/group_impl.h"

struct ferry_group {
    ferry__ref ref;
    size_t n;
    char **names;       /* n copies of the members' worker names */
    ferry_rref **rrefs; /* n owned references (object groups), or NULL (worker groups) */
    pthread_mutex_t mu; /* guards the three below, which calls copy when they start */
    ferry_dispatch_fn dispatch;
    ferry_collect_fn collect;
    void *user;
};

/* One call in flight. The members' futures and the internal `all` future are owned here; the
   then-callback on `all` frees the call, exactly once. */
typedef struct {
    ferry_group *g; /* retained: member names for messages, and the RRefs stay alive */
    char *target;   /* the function or method name, for messages */
    const char *kind; /* "function" or "method" */
    ferry_collect how;
    ferry_collect_fn collect;
    void *user;
    ferry_future *all;      /* completed (with none) once every member finished */
    ferry_future **members; /* n, NULL past a send that failed */
    atomic_size_t left;     /* members not finished, plus one while the call is launching */
    bool abandoned;         /* a send failed: the caller got NULL and nobody wants the result */
} group_call;

/* What a call sends: a registered function by name, or a method on the members' objects. */
typedef enum { CALL_FUNCTION, CALL_METHOD } call_kind;

static ferry_value *collect_done(ferry_future *all, void *arg);

/* ---- the group object ---- */

static void group_free(ferry_group *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++) {
        if (g->names)
            ferry__free(g->names[i]);
        if (g->rrefs)
            ferry_rref_release(g->rrefs[i]);
    }
    ferry__free(g->names);
    ferry__free(g->rrefs);
    pthread_mutex_destroy(&g->mu);
    ferry__free(g);
}

/* A group of n members with no names yet (and room for n RRefs when `with_rrefs`). */
static ferry_group *group_alloc(size_t n, bool with_rrefs)
{
    ferry_group *g = ferry__calloc(1, sizeof *g);
    if (!g)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a group of %zu members", n);
    ferry__ref_init(&g->ref);
    pthread_mutex_init(&g->mu, NULL);
    g->n = n;
    g->names = ferry__calloc(n, sizeof *g->names);
    g->rrefs = with_rrefs ? ferry__calloc(n, sizeof *g->rrefs) : NULL;
    if (!g->names || (with_rrefs && !g->rrefs)) {
        group_free(g);
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a group of %zu members", n);
    }
    return g;
}

static ferry_status group_set_name(ferry_group *g, size_t i, const char *name)
{
    g->names[i] = ferry__strdup(name);
    if (!g->names[i])
        return ferry__fail(FERRY_ENOMEM, "no memory for the name of group member %zu", i);
    return FERRY_OK;
}

ferry_group *ferry_group_new(const char *const *names, size_t n)
{
    if (!names || n == 0)
        return ferry__fail_null(FERRY_EINVAL, "a group needs at least one member");
    for (size_t i = 0; i < n; i++)
        if (!names[i])
            return ferry__fail_null(FERRY_EINVAL, "group member %zu has a NULL worker name", i);
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return NULL;
    ferry_group *g = group_alloc(n, false);
    for (size_t i = 0; g && i < n; i++) {
        ferry_status rc = ferry__agent_rank_of(a, names[i]) < 0
                              ? ferry__fail(FERRY_EUNKNOWN_WORKER, "group member %zu: %s", i,
                                            ferry_last_error())
                              : group_set_name(g, i, names[i]);
        if (rc != FERRY_OK) {
            group_free(g);
            g = NULL;
        }
    }
    ferry__agent_release(a);
    return g;
}

ferry_group *ferry_group_range(int first, int count)
{
    if (count <= 0)
        return ferry__fail_null(FERRY_EINVAL, "a group needs at least one member, not %d",
                                count);
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return NULL;
    int world = ferry__agent_world_size(a);
    ferry_group *g = NULL;
    if (first < 0 || first > world - count)
        ferry__fail(FERRY_EINVAL, "ranks %d .. %lld are outside the world of %d workers", first,
                    (long long)first + count - 1, world);
    else
        g = group_alloc((size_t)count, false);
    for (int i = 0; g && i < count; i++) {
        if (group_set_name(g, (size_t)i, ferry__agent_worker_name(a, first + i)) != FERRY_OK) {
            group_free(g);
            g = NULL;
        }
    }
    ferry__agent_release(a);
    return g;
}

size_t ferry_group_size(const ferry_group *g)
{
    if (!g) {
        ferry__fail(FERRY_EINVAL, "NULL group");
        return 0;
    }
    return g->n;
}

const char *ferry_group_member(const ferry_group *g, size_t i)
{
    if (!g || i >= g->n)
        return ferry__fail_null(FERRY_EINVAL, "no member %zu in a group of %zu", i,
                                g ? g->n : 0);
    return g->names[i];
}

ferry_rref *ferry_group_rref(const ferry_group *g, size_t i)
{
    if (!g || i >= g->n)
        return ferry__fail_null(FERRY_EINVAL, "no member %zu in a group of %zu", i,
                                g ? g->n : 0);
    if (!g->rrefs)
        return ferry__fail_null(FERRY_EINVAL, "a group of workers holds no RRefs");
    return g->rrefs[i];
}

ferry_status ferry_group_set_functions(ferry_group *g, ferry_dispatch_fn dispatch,
                                       ferry_collect_fn collect, void *user)
{
    if (!g)
        return ferry__fail(FERRY_EINVAL, "NULL group");
    pthread_mutex_lock(&g->mu);
    g->dispatch = dispatch;
    g->collect = collect;
    g->user = user;
    pthread_mutex_unlock(&g->mu);
    return FERRY_OK;
}

ferry_group *ferry_group_retain(ferry_group *g)
{
    if (g)
        ferry__ref_inc(&g->ref);
    return g;
}

void ferry_group_release(ferry_group *g)
{
    if (g && ferry__ref_dec(&g->ref))
        group_free(g);
}

/* ---- object groups ---- */

ferry_group *ferry_group_remote_object(ferry_group *g, const char *cls,
                                       const ferry_value *args, const ferry_value *kwargs,
                                       ferry_construct construct)
{
    if (!g || !cls)
        return ferry__fail_null(FERRY_EINVAL, "an object group needs a group and a class name");
    if (construct != FERRY_CONSTRUCT_ALL && construct != FERRY_CONSTRUCT_FIRST)
        return ferry__fail_null(FERRY_EINVAL, "unknown construct policy %d", (int)construct);
    size_t n = construct == FERRY_CONSTRUCT_ALL ? g->n : 1;
    ferry_group *og = group_alloc(n, true);
    if (!og)
        return NULL;
    pthread_mutex_lock(&g->mu);
    og->dispatch = g->dispatch;
    og->collect = g->collect;
    og->user = g->user;
    pthread_mutex_unlock(&g->mu);
    for (size_t i = 0; i < n; i++) {
        if (group_set_name(og, i, g->names[i]) != FERRY_OK)
            goto fail;
        og->rrefs[i] = ferry_remote_object(g->names[i], cls, args, kwargs,
                                           FERRY_TIMEOUT_DEFAULT);
        if (!og->rrefs[i]) {
            ferry__fail(ferry_last_status(), "constructing a '%s' on group member %zu (worker "
                                             "'%s'): %s",
                        cls, i, g->names[i], ferry_last_error());
            goto fail;
        }
    }
    return og;
fail:
    group_free(og);
    return NULL;
}

/* ---- calls ---- */

static void call_free(group_call *c)
{
    for (size_t i = 0; c->members && i < c->g->n; i++)
        ferry_future_release(c->members[i]);
    ferry__free(c->members);
    ferry_future_release(c->all);
    ferry__free(c->target);
    ferry_group_release(c->g);
    ferry__free(c);
}

/* A member finished. Inline on the completing thread: only the count. */
static void member_done(ferry_future *f, void *arg)
{
    group_call *c = arg;
    if (atomic_fetch_sub_explicit(&c->left, 1, memory_order_acq_rel) == 1)
        ferry_future_set_value(c->all, NULL);
}

/* A call with its internal future and the then-callback that will fold it; NULL with
   FERRY_ENOMEM. The callback owns the call from here on. */
static group_call *call_new(ferry_group *g, const char *target, call_kind kind,
                            ferry_collect how, ferry_collect_fn collect, void *user,
                            ferry_future **out)
{
    group_call *c = ferry__calloc(1, sizeof *c);
    if (!c)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a group call");
    c->g = ferry_group_retain(g);
    c->kind = kind == CALL_METHOD ? "method" : "function";
    c->how = how;
    c->collect = collect;
    c->user = user;
    atomic_init(&c->left, g->n + 1);
    c->target = ferry__strdup(target);
    c->members = ferry__calloc(g->n, sizeof *c->members);
    c->all = c->target && c->members ? ferry_future_new() : NULL;
    *out = c->all ? ferry_future_then(c->all, collect_done, c) : NULL;
    if (!*out) {
        call_free(c);
        return ferry__fail_null(FERRY_ENOMEM, "no memory for a group call of %zu members", g->n);
    }
    return c;
}

/* True when a member failed, with the call's error set from the first failing member in member
   order (its status, a message naming it and its own error). */
static bool members_failed(group_call *c)
{
    size_t first = c->g->n, failed = 0;
    for (size_t i = 0; i < c->g->n; i++) {
        if (ferry_future_status(c->members[i]) != FERRY_OK) {
            failed++;
            if (first == c->g->n)
                first = i;
        }
    }
    if (!failed)
        return false;
    ferry_future *f = c->members[first];
    ferry_status rc = ferry_future_status(f);
    const char *why = ferry_future_error(f);
    ferry_set_error(rc, "group call of %s '%s': member %zu of %zu (worker '%s') failed%s: %s",
                    c->kind, c->target, first, c->g->n, c->g->names[first],
                    failed > 1 ? " (the first of several)" : "", why ? why : ferry_strerror(rc));
    return true;
}

/* The then-callback on `all`: every member has finished. Returns the call's result, or NULL
   with its error set. Runs on a pool thread, so a collect function may block; frees the call. */
static ferry_value *collect_done(ferry_future *all, void *arg)
{
    group_call *c = arg;
    ferry_value *out = NULL;
    if (c->abandoned || members_failed(c)) {
        out = c->abandoned ? ferry_none() : NULL;
        call_free(c);
        return out;
    }
    size_t n = c->g->n;
    ferry_value **results = ferry__calloc(n, sizeof *results);
    ferry_status rc = results ? FERRY_OK
                              : ferry__fail(FERRY_ENOMEM, "no memory for %zu results", n);
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        if (!(results[i] = ferry_future_value(c->members[i])))
            rc = ferry_last_status();
    if (rc == FERRY_OK)
        rc = ferry__group_collect(c->how, results, n, (const char *const *)c->g->names,
                                  c->collect, c->user, &out);
    if (rc != FERRY_OK)
        ferry_set_error(rc, "group call of %s '%s': %s", c->kind, c->target,
                        ferry_last_error());
    for (size_t i = 0; results && i < n; i++)
        ferry_value_release(results[i]);
    ferry__free(results);
    call_free(c);
    return out;
}

static ferry_status check_call(const ferry_group *g, const char *target, call_kind kind,
                               const ferry_value *args, const ferry_value *kwargs,
                               ferry_dispatch dispatch, ferry_collect collect,
                               ferry_dispatch_fn dispatch_fn, ferry_collect_fn collect_fn)
{
    const char *what = kind == CALL_METHOD ? "method" : "function";
    if (!g)
        return ferry__fail(FERRY_EINVAL, "a group call needs a group (got NULL)");
    if (!target || !*target)
        return ferry__fail(FERRY_EINVAL, "a group call needs a %s name", what);
    if (kind == CALL_METHOD && !g->rrefs)
        return ferry__fail(FERRY_EINVAL, "method '%s' called on a group of workers: methods need "
                                         "a group of objects (ferry_group_remote_object)",
                           target);
    if (args && ferry_value_kind(args) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "a group call's args must be a list, not a %s",
                           ferry_kind_name(ferry_value_kind(args)));
    if (kwargs && ferry_value_kind(kwargs) != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_EINVAL, "a group call's kwargs must be a dict, not a %s",
                           ferry_kind_name(ferry_value_kind(kwargs)));
    if ((unsigned)dispatch > FERRY_DISPATCH_FUNCTION)
        return ferry__fail(FERRY_EINVAL, "unknown dispatch policy %d", (int)dispatch);
    if ((unsigned)collect > FERRY_COLLECT_FUNCTION)
        return ferry__fail(FERRY_EINVAL, "unknown collect policy %d", (int)collect);
    if (dispatch == FERRY_DISPATCH_FUNCTION && !dispatch_fn)
        return ferry__fail(FERRY_EINVAL, "FUNCTION dispatch of %s '%s' needs the group's "
                                         "dispatch function (ferry_group_set_functions)",
                           what, target);
    if (collect == FERRY_COLLECT_FUNCTION && !collect_fn)
        return ferry__fail(FERRY_EINVAL, "FUNCTION collect of %s '%s' needs the group's collect "
                                         "function (ferry_group_set_functions)",
                           what, target);
    return FERRY_OK;
}

/* Every member's share (shares[2i] its args, shares[2i + 1] its kwargs), before anything is
   sent, so a share that cannot be made costs no message. */
static ferry_status share_all(const ferry_group *g, ferry_dispatch dispatch,
                              ferry_dispatch_fn fn, void *user, const ferry_value *args,
                              const ferry_value *kwargs, ferry_value **shares)
{
    for (size_t i = 0; i < g->n; i++) {
        ferry_status rc = ferry__group_share(dispatch, fn, user, args, kwargs, g->n, i,
                                             g->names[i], &shares[2 * i], &shares[2 * i + 1]);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

static ferry_future *send_member(const ferry_group *g, size_t i, call_kind kind,
                                 const char *target, ferry_value *args, ferry_value *kwargs,
                                 double timeout)
{
    if (kind == CALL_METHOD)
        return ferry_rref_call_async(g->rrefs[i], target, args, kwargs, timeout);
    return ferry_rpc_async(g->names[i], target, args, kwargs, timeout);
}

/* Sends every member its share; FERRY_OK, or the first send's failure (members before it are in
   flight and counted, later ones never sent). */
static ferry_status send_all(group_call *c, call_kind kind, ferry_value **shares, double timeout,
                             size_t *sent)
{
    ferry_group *g = c->g;
    for (*sent = 0; *sent < g->n; (*sent)++) {
        size_t i = *sent;
        ferry_future *f = send_member(g, i, kind, c->target, shares[2 * i], shares[2 * i + 1],
                                      timeout);
        if (!f)
            return ferry__fail(ferry_last_status(), "group call of %s '%s': sending to member "
                                                    "%zu (worker '%s') failed: %s",
                               c->kind, c->target, i, g->names[i], ferry_last_error());
        c->members[i] = f;
        if (ferry__future_on_done(f, member_done, c) != FERRY_OK) {
            /* No memory to be told: wait for this member here rather than lose count. */
            ferry_future_wait(f, 0);
            member_done(f, c);
        }
    }
    return FERRY_OK;
}

static void release_shares(ferry_value **shares, size_t n)
{
    for (size_t i = 0; shares && i < 2 * n; i++)
        ferry_value_release(shares[i]);
    ferry__free(shares);
}

static ferry_future *group_launch(ferry_group *g, const char *target, call_kind kind,
                                  const ferry_value *args, const ferry_value *kwargs,
                                  ferry_dispatch dispatch, ferry_collect collect, double timeout)
{
    ferry_dispatch_fn dispatch_fn = NULL;
    ferry_collect_fn collect_fn = NULL;
    void *user = NULL;
    if (g) {
        pthread_mutex_lock(&g->mu);
        dispatch_fn = g->dispatch;
        collect_fn = g->collect;
        user = g->user;
        pthread_mutex_unlock(&g->mu);
    }
    if (check_call(g, target, kind, args, kwargs, dispatch, collect, dispatch_fn, collect_fn) !=
        FERRY_OK)
        return NULL;
    ferry__agent *a = ferry__agent_get(); /* not running: fail before sharing anything */
    if (!a)
        return NULL;
    ferry__agent_release(a);
    ferry_value **shares = ferry__calloc(2 * g->n, sizeof *shares);
    if (!shares)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for the shares of %zu members", g->n);
    ferry_future *out = NULL;
    group_call *c = NULL;
    if (share_all(g, dispatch, dispatch_fn, user, args, kwargs, shares) != FERRY_OK ||
        !(c = call_new(g, target, kind, collect, collect_fn, user, &out))) {
        release_shares(shares, g->n);
        return NULL;
    }
    size_t sent = 0;
    ferry_status rc = send_all(c, kind, shares, timeout, &sent);
    release_shares(shares, g->n);
    if (rc == FERRY_OK) {
        member_done(NULL, c); /* launched: the last member to finish completes the call */
        return out;
    }
    /* The members sent finish on their own and the callback then frees the call; nobody reads
       its result. Whatever runs meanwhile on this thread keeps the send's error intact. */
    ferry__error_state saved;
    ferry__error_save(&saved);
    c->abandoned = true;
    size_t unsent = g->n - sent + 1;
    if (atomic_fetch_sub_explicit(&c->left, unsent, memory_order_acq_rel) == unsent)
        ferry_future_set_value(c->all, NULL);
    ferry_future_release(out);
    ferry__error_restore(&saved);
    return NULL;
}

ferry_future *ferry_group_call(ferry_group *g, const char *fn, const ferry_value *args,
                               const ferry_value *kwargs, ferry_dispatch dispatch,
                               ferry_collect collect, double timeout)
{
    return group_launch(g, fn, CALL_FUNCTION, args, kwargs, dispatch, collect, timeout);
}

ferry_future *ferry_group_call_method(ferry_group *g, const char *method,
                                      const ferry_value *args, const ferry_value *kwargs,
                                      ferry_dispatch dispatch, ferry_collect collect,
                                      double timeout)
{
    return group_launch(g, method, CALL_METHOD, args, kwargs, dispatch, collect, timeout);
}
