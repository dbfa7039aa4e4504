/* Distributed autograd gradients: computations spread over two and three workers (round trips by
   rpc_sync, rpc_async and remote, a call to self, chains through sync and async functions, a
   nested call back to the caller, a tensor sent to two workers, parameters behind RRefs, tensors
   inside lists and dicts, float32 mixed with float64, several roots) give the gradients the
   local engine gives for the same computation done in one process. On tcp and shm.

   Every computation is written once. The reference runs it on the rank's own thread with
   tl_local set, where call() runs the function right there (nested calls too) instead of on a
   remote worker; the distributed run is the same code with tl_local clear. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ferry/dist_autograd.h"
#include "ferry/ops.h"
#include "ferry/rref.h"
#include "dist_util.h"

#define F32 FERRY_FLOAT32
#define F64 FERRY_FLOAT64

typedef enum { VIA_SYNC, VIA_ASYNC, VIA_REMOTE } via;
static const char *const VIA_NAME[] = {"rpc_sync", "rpc_async", "remote"};

static _Thread_local bool tl_local;

static ferry_value *call(const char *to, const char *fn, ferry_value *args, via v);

/* ---- functions the tests call (and the reference runs in place) ---- */

/* The builtins' arithmetic, for the reference only (the real ones are the library's). */
static ferry_status local_add(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    return da_put_tensor(result, ferry_add(da_arg(args, 0), da_arg(args, 1)));
}

static ferry_status local_mul(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    return da_put_tensor(result, ferry_mul(da_arg(args, 0), da_arg(args, 1)));
}

/* linear(x, w): tanh(x @ w) */
static ferry_status linear_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    ferry_tensor *m = ferry_matmul(da_arg(args, 0), da_arg(args, 1));
    ferry_tensor *t = m ? ferry_tanh(m) : NULL;
    ferry_tensor_release(m);
    return da_put_tensor(result, t);
}

/* chain(x, w, to): y = x * w; returns linear(y, w) computed on `to`, plus y. */
static ferry_status chain_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry_tensor *w = da_arg(args, 1);
    ferry_tensor *y = ferry_mul(da_arg(args, 0), w);
    if (!y)
        return ferry_last_status();
    ferry_value *a = ferry_args(2, ferry_tensor_value(y), ferry_tensor_value(w));
    ferry_value *z = a ? call(ferry_value_as_string(ferry_list_get(args, 2)), "da_linear", a,
                              VIA_SYNC)
                       : NULL;
    ferry_value_release(a);
    ferry_tensor *out = z ? ferry_add(ferry_value_as_tensor(z), y) : NULL;
    ferry_value_release(z);
    ferry_tensor_release(y);
    return da_put_tensor(result, out);
}

/* back(x, to): squares sigmoid(x) on `to` (the caller, nested) and multiplies by x. */
static ferry_status back_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    ferry_tensor *x = da_arg(args, 0);
    ferry_tensor *y = ferry_sigmoid(x);
    if (!y)
        return ferry_last_status();
    ferry_value *a = ferry_args(1, ferry_tensor_value(y));
    ferry_value *z = a ? call(ferry_value_as_string(ferry_list_get(args, 1)), "da_square", a,
                              VIA_SYNC)
                       : NULL;
    ferry_value_release(a);
    ferry_tensor *out = z ? ferry_mul(ferry_value_as_tensor(z), x) : NULL;
    ferry_value_release(z);
    ferry_tensor_release(y);
    return da_put_tensor(result, out);
}

/* containers([a, b], {"c": c}) -> {"s": a * b, "l": [b * c, a]}: `a` goes back as it came. */
static ferry_status containers_fn(const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result, void *user)
{
    ferry_value *l = ferry_list_get(args, 0);
    ferry_tensor *a = ferry_value_as_tensor(ferry_list_get(l, 0));
    ferry_tensor *b = ferry_value_as_tensor(ferry_list_get(l, 1));
    ferry_tensor *c = ferry_value_as_tensor(ferry_dict_get(ferry_list_get(args, 1), "c"));
    ferry_tensor *s = ferry_mul(a, b), *bc = ferry_mul(b, c);
    ferry_value *d = ferry_dict_new();
    ferry_value *sv = s ? ferry_tensor_value(s) : NULL;
    ferry_value *lv = bc ? ferry_list_of(2, ferry_tensor_value(bc), ferry_tensor_value(a)) : NULL;
    ferry_tensor_release(s);
    ferry_tensor_release(bc);
    ferry_status rc = d && sv && lv ? FERRY_OK : FERRY_ENOMEM;
    if (rc == FERRY_OK)
        rc = ferry_dict_set(d, "s", sv);
    if (rc == FERRY_OK)
        rc = ferry_dict_set(d, "l", lv);
    ferry_value_release(sv);
    ferry_value_release(lv);
    if (rc != FERRY_OK) {
        ferry_value_release(d);
        return ferry_set_error(rc, "containers: could not build the result");
    }
    *result = d;
    return FERRY_OK;
}

/* mixed(x32, w64) -> [x32 * w64 (float64), x32 * x32 (float32)] */
static ferry_status mixed_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry_tensor *x = da_arg(args, 0);
    ferry_tensor *p = ferry_mul(x, da_arg(args, 1)), *q = ferry_mul(x, x);
    *result = p && q ? ferry_list_of(2, ferry_tensor_value(p), ferry_tensor_value(q)) : NULL;
    ferry_tensor_release(p);
    ferry_tensor_release(q);
    return *result ? FERRY_OK : ferry_last_status();
}

/* param(data): a leaf of this worker that requires grad, for an RRef to hold. */
static ferry_status param_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry_tensor *p = ferry_tensor_clone_data(da_arg(args, 0));
    if (p && ferry_tensor_set_requires_grad(p, true) != FERRY_OK) {
        ferry_tensor_release(p);
        return ferry_last_status();
    }
    return da_put_tensor(result, p);
}

/* use_param(param, x): tanh(x @ param), the owner's value first as the proxies pass it. */
static ferry_status use_param_fn(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    ferry_tensor *m = ferry_matmul(da_arg(args, 1), da_arg(args, 0));
    ferry_tensor *t = m ? ferry_tanh(m) : NULL;
    ferry_tensor_release(m);
    return da_put_tensor(result, t);
}

/* param_grad(rref, ctx) -> [the owner's context gradient of its value or none, whether .grad
   was set]. */
static ferry_status param_grad_fn(const ferry_value *args, const ferry_value *kwargs,
                                  ferry_value **result, void *user)
{
    ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, 0));
    if (!r || !ferry_rref_is_owner(r))
        return ferry_set_error(FERRY_EINVAL, "param_grad: expected the owner's RRef");
    ferry_value *v = ferry_rref_local_value(r);
    if (!v)
        return ferry_last_status();
    ferry_tensor *p = ferry_value_as_tensor(v);
    ferry_clear_error();
    int64_t ctx = ferry_value_as_int(ferry_list_get(args, 1));
    ferry_tensor *g = ferry_dist_autograd_get_gradient(ctx, p);
    ferry_tensor *dot_grad = ferry_tensor_grad(p);
    if (!g && ferry_last_status() != FERRY_OK) {
        ferry_value_release(v);
        return ferry_last_status();
    }
    *result = ferry_list_of(2, g ? ferry_tensor_value(g) : ferry_none(),
                            ferry_bool(dot_grad != NULL));
    ferry_tensor_release(g);
    ferry_tensor_release(dot_grad);
    ferry_value_release(v);
    return *result ? FERRY_OK : ferry_last_status();
}

/* A then-callback: the call's tensor plus `user`, a tensor it takes over. */
static ferry_value *add_saved_then(ferry_future *done, void *user)
{
    ferry_tensor *y = user;
    ferry_value *z = ferry_future_value(done);
    ferry_tensor *out = z ? ferry_add(ferry_value_as_tensor(z), y) : NULL;
    ferry_value_release(z);
    ferry_tensor_release(y);
    ferry_value *r = out ? ferry_tensor_value(out) : NULL;
    ferry_tensor_release(out);
    return r;
}

/* async_chain(x, w, to), an async function: y = x * x; answers with linear(y, w) computed on
   `to`, plus y, from a then-callback of that call. */
static ferry_future *async_chain_fn(const ferry_value *args, const ferry_value *kwargs, void *user)
{
    ferry_tensor *y = ferry_mul(da_arg(args, 0), da_arg(args, 0));
    ferry_value *a = y ? ferry_args(2, ferry_tensor_value(y),
                                    ferry_value_retain(ferry_list_get(args, 1)))
                       : NULL;
    ferry_future *f = NULL;
    if (a && tl_local) {
        ferry_value *z = call("", "da_linear", a, VIA_SYNC);
        f = ferry_future_new();
        if (f && z)
            ferry_future_set_value(f, z);
        else if (f)
            ferry_future_set_error(f, ferry_last_status(), ferry_last_error());
        ferry_value_release(z);
    } else if (a) {
        f = ferry_rpc_async(ferry_value_as_string(ferry_list_get(args, 2)), "da_linear", a, NULL,
                            FERRY_TIMEOUT_DEFAULT);
    }
    ferry_value_release(a);
    ferry_future *g = f ? ferry_future_then(f, add_saved_then, y) : NULL;
    ferry_future_release(f);
    if (!g)
        ferry_tensor_release(y);
    return g;
}

typedef struct {
    const char *name;
    ferry_fn fn;
    ferry_async_fn async_fn;
} named_fn;

#define SYNC_FN(name, f) {name, f, NULL}
static const named_fn FNS[] = {
    SYNC_FN("torch.add", local_add),         SYNC_FN("torch.mul", local_mul),
    SYNC_FN("da_linear", linear_fn),         SYNC_FN("da_square", da_square_fn),
    SYNC_FN("da_chain", chain_fn),           SYNC_FN("da_back", back_fn),
    SYNC_FN("da_containers", containers_fn), SYNC_FN("da_mixed", mixed_fn),
    SYNC_FN("da_param", param_fn),           SYNC_FN("da_use_param", use_param_fn),
    SYNC_FN("da_param_grad", param_grad_fn), {"da_async_chain", NULL, async_chain_fn},
};

static void register_all(void)
{
    for (size_t i = 0; i < sizeof FNS / sizeof FNS[0]; i++)
        if (FNS[i].async_fn)
            cr_assert(ferry_register_async_function(FNS[i].name, FNS[i].async_fn, NULL) ==
                      FERRY_OK);
        else if (strncmp(FNS[i].name, "torch.", 6) != 0)
            cr_assert(ferry_register_function(FNS[i].name, FNS[i].fn, NULL) == FERRY_OK);
}

/* ---- calls, leaves and comparisons ---- */

static ferry_value *call(const char *to, const char *fn, ferry_value *args, via v)
{
    if (tl_local) {
        for (size_t i = 0; i < sizeof FNS / sizeof FNS[0]; i++) {
            if (strcmp(FNS[i].name, fn) != 0)
                continue;
            ferry_value *kw = ferry_dict_new(), *res = NULL;
            if (FNS[i].async_fn) {
                ferry_future *f = FNS[i].async_fn(args, kw, NULL);
                res = f ? ferry_future_value(f) : NULL;
                ferry_future_release(f);
            } else if (FNS[i].fn(args, kw, &res, NULL) != FERRY_OK) {
                res = NULL;
            }
            ferry_value_release(kw);
            return res;
        }
        ferry_set_error(FERRY_EUNKNOWN_FUNCTION, "no local %s", fn);
        return NULL;
    }
    if (v == VIA_SYNC)
        return ferry_rpc_sync(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
    if (v == VIA_ASYNC) {
        ferry_future *f = ferry_rpc_async(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value *r = f ? ferry_future_value(f) : NULL;
        ferry_future_release(f);
        return r;
    }
    ferry_rref *r = ferry_remote(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value *x = r ? ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_rref_release(r);
    return x;
}

/* call() with n tensor arguments and a tensor result. */
static ferry_tensor *call_t(const char *to, const char *fn, via v, size_t n, ...)
{
    ferry_value *items[8];
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        items[i] = ferry_tensor_value(va_arg(ap, ferry_tensor *));
    va_end(ap);
    ferry_value *args = ferry_list_from(items, n);
    for (size_t i = 0; i < n; i++)
        ferry_value_release(items[i]);
    ferry_value *r = args ? call(to, fn, args, v) : NULL;
    ferry_value_release(args);
    ferry_tensor *t = r ? ferry_tensor_retain(ferry_value_as_tensor(r)) : NULL;
    ferry_value_release(r);
    return t;
}

static ferry_tensor *data(int ndim, const int64_t *sizes, ferry_dtype dt, uint64_t seed)
{
    ferry_generator *g = ferry_generator_new(seed);
    ferry_tensor *t = g ? ferry_randn(ndim, sizes, dt, g) : NULL;
    ferry_generator_free(g);
    return t;
}

/* Equal to 1e-12 relative in float64 (1e-6 in float32), with the same dtype and shape; NULL only
   where the reference has none. */
static bool grads_match(const char *what, size_t i, ferry_tensor *got, ferry_tensor *want)
{
    bool ok = !got || !want ? got == want
                            : ferry_tensor_dtype(got) == ferry_tensor_dtype(want) &&
                                  ferry_allclose(got, want,
                                                 ferry_tensor_dtype(want) == F32 ? 1e-6 : 1e-12, 0);
    if (!ok) {
        char a[512], b[512];
        ferry_tensor_format(got, a, sizeof a);
        ferry_tensor_format(want, b, sizeof b);
        fprintf(stderr, "%s: gradient %zu is %s (%s), the local engine gives %s (%s)\n", what, i,
                a, ferry_dtype_name(ferry_tensor_dtype(got)), b,
                ferry_dtype_name(ferry_tensor_dtype(want)));
    }
    return ok;
}

/* ---- computations ---- */

typedef struct {
    via v;
    size_t n_leaves, n_roots;
    ferry_tensor *leaves[6];
    ferry_tensor *roots[4];
} run_state;

typedef int (*computation)(run_state *s);

/* Runs `comp` on leaves with the values `values`, once as the reference and once inside a
   context, and compares every leaf's gradient; the distributed leaves' .grad stay empty. */
static int check_against_local(const char *what, computation comp, via v, size_t n,
                               ferry_tensor *const *values)
{
    run_state loc = {.v = v, .n_leaves = n}, dist = {.v = v, .n_leaves = n};
    for (size_t i = 0; i < n; i++) {
        RANK_CHECK(loc.leaves[i] = da_leaf_copy(values[i]));
        RANK_CHECK(dist.leaves[i] = da_leaf_copy(values[i]));
    }
    tl_local = true;
    int rc = comp(&loc);
    tl_local = false;
    RANK_CHECK(rc == 0 && loc.n_roots > 0);
    for (size_t r = 0; r < loc.n_roots; r++)
        RANK_CHECK(ferry_backward(loc.roots[r], NULL, true) == FERRY_OK);

    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0);
    RANK_CHECK(comp(&dist) == 0);
    RANK_CHECK(dist.n_roots == loc.n_roots);
    if (ferry_dist_autograd_backward(ctx, dist.roots, dist.n_roots, false) != FERRY_OK) {
        fprintf(stderr, "%s (%s): backward failed\n", what, VIA_NAME[v]);
        RANK_CHECK(!"distributed backward failed");
    }
    size_t with_grad = 0;
    for (size_t i = 0; i < n; i++) {
        ferry_tensor *want = ferry_tensor_grad(loc.leaves[i]);
        ferry_clear_error();
        ferry_tensor *got = ferry_dist_autograd_get_gradient(ctx, dist.leaves[i]);
        RANK_CHECK(got || ferry_last_status() == FERRY_OK);
        char label[128];
        snprintf(label, sizeof label, "%s (%s)", what, VIA_NAME[v]);
        RANK_CHECK(grads_match(label, i, got, want));
        ferry_tensor *dot_grad = ferry_tensor_grad(dist.leaves[i]);
        RANK_CHECK(!dot_grad);
        with_grad += want != NULL;
        ferry_tensor_release(want);
        ferry_tensor_release(got);
    }
    /* get_gradients lists exactly those leaves, as [tensor, grad] pairs. */
    ferry_value *all = ferry_dist_autograd_get_gradients(ctx);
    RANK_CHECK(all && ferry_list_len(all) == with_grad);
    for (size_t k = 0; k < with_grad; k++) {
        ferry_value *pair = ferry_list_get(all, k);
        RANK_CHECK(ferry_list_len(pair) == 2);
        ferry_tensor *t = ferry_value_as_tensor(ferry_list_get(pair, 0));
        bool mine = false;
        for (size_t i = 0; i < n; i++)
            mine = mine || t == dist.leaves[i];
        RANK_CHECK(mine);
    }
    ferry_value_release(all);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    RANK_CHECK(ferry_dist_autograd_current_context() == -1);
    for (size_t i = 0; i < n; i++) {
        ferry_tensor_release(loc.leaves[i]);
        ferry_tensor_release(dist.leaves[i]);
    }
    for (size_t r = 0; r < loc.n_roots; r++) {
        ferry_tensor_release(loc.roots[r]);
        ferry_tensor_release(dist.roots[r]);
    }
    return 0;
}

static int add_root_sum(run_state *s, ferry_tensor *t)
{
    RANK_CHECK(t && ferry_tensor_requires_grad(t));
    RANK_CHECK(s->roots[s->n_roots++] = ferry_sum(t));
    return 0;
}

/* Three round trips: a builtin on the leaf, a user function, a builtin again; a tensor that
   does not require grad still does not when it comes back. */
static int comp_round_trips(run_state *s)
{
    ferry_tensor *x = s->leaves[0], *w = s->leaves[1], *b = s->leaves[2];
    ferry_tensor *a = call_t("worker1", "torch.mul", s->v, 2, x, x);
    RANK_CHECK(a && ferry_tensor_requires_grad(a));
    ferry_tensor *h = call_t("worker1", "da_linear", s->v, 2, a, w);
    RANK_CHECK(h && ferry_tensor_requires_grad(h));
    ferry_tensor *d = call_t("worker1", "torch.add", s->v, 2, h, b);
    ferry_tensor *k = ferry_full(SHAPE(2, 2), 1.5, F64);
    ferry_tensor *k2 = call_t("worker1", "torch.mul", s->v, 2, k, k);
    RANK_CHECK(k2 && !ferry_tensor_requires_grad(k2));
    ferry_tensor *dk = ferry_mul(d, k2);
    int rc = add_root_sum(s, dk);
    ferry_tensor *tmp[] = {a, h, d, k, k2, dk};
    for (size_t i = 0; i < 6; i++)
        ferry_tensor_release(tmp[i]);
    return rc;
}

/* Calls with local ops between them, and one to this worker itself. */
static int comp_interleaved(run_state *s)
{
    ferry_tensor *x = s->leaves[0], *w = s->leaves[1];
    ferry_tensor *y = call_t("worker1", "da_square", s->v, 1, x);
    RANK_CHECK(y);
    ferry_tensor *ty = ferry_tanh(y);
    ferry_tensor *z = ferry_mul(ty, x);
    ferry_tensor *u = call_t("worker1", "da_linear", s->v, 2, z, w);
    RANK_CHECK(u);
    ferry_tensor *q = call_t("worker0", "da_square", s->v, 1, u);
    RANK_CHECK(q);
    ferry_tensor *qu = ferry_mul(q, u);
    int rc = add_root_sum(s, qu);
    ferry_tensor *tmp[] = {y, ty, z, u, q, qu};
    for (size_t i = 0; i < 6; i++)
        ferry_tensor_release(tmp[i]);
    return rc;
}

static int comp_containers(run_state *s)
{
    ferry_value *d = ferry_dict_new();
    ferry_value *cv = ferry_tensor_value(s->leaves[2]);
    RANK_CHECK(d && cv && ferry_dict_set(d, "c", cv) == FERRY_OK);
    ferry_value_release(cv);
    ferry_value *args =
        ferry_args(2, ferry_list_of(2, ferry_tensor_value(s->leaves[0]),
                                    ferry_tensor_value(s->leaves[1])), d);
    RANK_CHECK(args);
    ferry_value *r = call("worker1", "da_containers", args, s->v);
    ferry_value_release(args);
    RANK_CHECK(r && ferry_value_kind(r) == FERRY_VALUE_DICT);
    ferry_tensor *sum = ferry_value_as_tensor(ferry_dict_get(r, "s"));
    ferry_value *l = ferry_dict_get(r, "l");
    ferry_tensor *l0 = ferry_value_as_tensor(ferry_list_get(l, 0));
    ferry_tensor *l1 = ferry_value_as_tensor(ferry_list_get(l, 1));
    RANK_CHECK(sum && l0 && l1);
    RANK_CHECK(ferry_tensor_requires_grad(sum) && ferry_tensor_requires_grad(l0) &&
               ferry_tensor_requires_grad(l1));
    ferry_tensor *s0 = ferry_sum(sum), *p = ferry_mul(l0, l1);
    ferry_tensor *s1 = p ? ferry_sum(p) : NULL;
    RANK_CHECK(s0 && s1);
    RANK_CHECK(s->roots[s->n_roots++] = ferry_add(s0, s1));
    ferry_tensor_release(s0);
    ferry_tensor_release(s1);
    ferry_tensor_release(p);
    ferry_value_release(r);
    return 0;
}

static int comp_mixed(run_state *s)
{
    ferry_value *args =
        ferry_args(2, ferry_tensor_value(s->leaves[0]), ferry_tensor_value(s->leaves[1]));
    ferry_value *r = args ? call("worker1", "da_mixed", args, s->v) : NULL;
    ferry_value_release(args);
    RANK_CHECK(r && ferry_list_len(r) == 2);
    ferry_tensor *p = ferry_value_as_tensor(ferry_list_get(r, 0));
    ferry_tensor *q = ferry_value_as_tensor(ferry_list_get(r, 1));
    RANK_CHECK(ferry_tensor_dtype(p) == F64 && ferry_tensor_dtype(q) == F32);
    ferry_tensor *sp = ferry_sum(p), *sq = ferry_sum(q);
    RANK_CHECK(sp && sq);
    RANK_CHECK(s->roots[s->n_roots++] = ferry_add(sp, sq));
    ferry_tensor_release(sp);
    ferry_tensor_release(sq);
    ferry_value_release(r);
    return 0;
}

/* A -> B -> C: worker1 computes part and has worker2 compute the rest. */
static int comp_chain(run_state *s)
{
    ferry_value *args = ferry_args(3, ferry_tensor_value(s->leaves[0]),
                                   ferry_tensor_value(s->leaves[1]), ferry_string("worker2"));
    ferry_value *r = args ? call("worker1", "da_chain", args, s->v) : NULL;
    ferry_value_release(args);
    RANK_CHECK(r);
    int rc = add_root_sum(s, ferry_value_as_tensor(r));
    ferry_value_release(r);
    return rc;
}

/* The same through an async function, whose answer a then-callback makes. */
static int comp_async_chain(run_state *s)
{
    ferry_value *args = ferry_args(3, ferry_tensor_value(s->leaves[0]),
                                   ferry_tensor_value(s->leaves[1]), ferry_string("worker2"));
    ferry_value *r = args ? call("worker1", "da_async_chain", args, s->v) : NULL;
    ferry_value_release(args);
    RANK_CHECK(r);
    int rc = add_root_sum(s, ferry_value_as_tensor(r));
    ferry_value_release(r);
    return rc;
}

/* A -> B -> A: worker1 calls back into this worker while our call waits. */
static int comp_nested_back(run_state *s)
{
    ferry_value *args = ferry_args(2, ferry_tensor_value(s->leaves[0]), ferry_string("worker0"));
    ferry_value *r = args ? call("worker1", "da_back", args, s->v) : NULL;
    ferry_value_release(args);
    RANK_CHECK(r);
    ferry_tensor *m = ferry_mul(ferry_value_as_tensor(r), s->leaves[0]);
    int rc = add_root_sum(s, m);
    ferry_tensor_release(m);
    ferry_value_release(r);
    return rc;
}

/* One tensor sent to two workers; both results meet in the loss. */
static int comp_two_workers(run_state *s)
{
    ferry_tensor *x = s->leaves[0];
    ferry_tensor *r1 = call_t("worker1", "da_square", s->v, 1, x);
    ferry_tensor *r2 = call_t("worker2", "da_linear", s->v, 2, x, s->leaves[1]);
    RANK_CHECK(r1 && r2);
    ferry_tensor *m = ferry_mul(r1, r2);
    int rc = add_root_sum(s, m);
    ferry_tensor_release(m);
    ferry_tensor_release(r1);
    ferry_tensor_release(r2);
    return rc;
}

static int comp_several_roots(run_state *s)
{
    ferry_tensor *x = s->leaves[0];
    ferry_tensor *r1 = call_t("worker1", "da_square", s->v, 1, x);
    ferry_tensor *r2 = call_t("worker2", "da_linear", s->v, 2, x, s->leaves[1]);
    RANK_CHECK(r1 && r2);
    ferry_tensor *m = ferry_mul(r1, x);
    int rc = add_root_sum(s, r1) || add_root_sum(s, r2) || add_root_sum(s, m);
    ferry_tensor_release(m);
    ferry_tensor_release(r1);
    ferry_tensor_release(r2);
    return rc;
}

/* ---- bodies ---- */

static int body_round_trips(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *v[] = {data(SHAPE(2, 3), F64, 1), data(SHAPE(3, 2), F64, 2),
                         data(SHAPE(2, 2), F64, 3)};
    for (int k = 0; k < 3; k++)
        RANK_CHECK(v[k]);
    for (via w = VIA_SYNC; w <= VIA_REMOTE; w++) {
        RANK_CHECK(check_against_local("round trips", comp_round_trips, w, 3, v) == 0);
        RANK_CHECK(check_against_local("interleaved with a self call", comp_interleaved, w, 2,
                                       v) == 0);
    }
    da_release_all(v, 3);
    return 0;
}

static int body_containers_and_dtypes(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *v[] = {data(SHAPE(3), F64, 4), data(SHAPE(3), F64, 5), data(SHAPE(3), F64, 6)};
    ferry_tensor *m[] = {data(SHAPE(4), F32, 7), data(SHAPE(4), F64, 8)};
    for (via w = VIA_SYNC; w <= VIA_REMOTE; w++) {
        RANK_CHECK(check_against_local("lists and dicts", comp_containers, w, 3, v) == 0);
        RANK_CHECK(check_against_local("float32 with float64", comp_mixed, w, 2, m) == 0);
    }
    da_release_all(v, 3);
    da_release_all(m, 2);
    return 0;
}

static int body_chains(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *v[] = {data(SHAPE(2, 2), F64, 9), data(SHAPE(2, 2), F64, 10)};
    for (via w = VIA_SYNC; w <= VIA_REMOTE; w++) {
        RANK_CHECK(check_against_local("A -> B -> C", comp_chain, w, 2, v) == 0);
        RANK_CHECK(check_against_local("A -> B (async) -> C", comp_async_chain, w, 2, v) == 0);
        RANK_CHECK(check_against_local("A -> B -> A", comp_nested_back, w, 1, v) == 0);
    }
    da_release_all(v, 2);
    return 0;
}

static int body_fan_out(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *v[] = {data(SHAPE(2, 2), F64, 11), data(SHAPE(2, 2), F64, 12)};
    for (via w = VIA_SYNC; w <= VIA_REMOTE; w++) {
        RANK_CHECK(check_against_local("one tensor to two workers", comp_two_workers, w, 2, v) ==
                   0);
        RANK_CHECK(check_against_local("three roots", comp_several_roots, w, 2, v) == 0);
    }
    da_release_all(v, 2);
    return 0;
}

/* Asks the owner of `r` for its value's gradient in ctx and checks it; .grad stays empty. */
static int check_owner_grad(ferry_rref *r, int64_t ctx, ferry_tensor *want, const char *what)
{
    ferry_value *a = ferry_args(2, ferry_rref_value(r), ferry_int(ctx));
    ferry_value *got = ferry_rpc_sync(ferry_rref_owner_name(r), "da_param_grad", a, NULL,
                                      FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    RANK_CHECK(got && ferry_list_len(got) == 2);
    RANK_CHECK(grads_match(what, 0, ferry_value_as_tensor(ferry_list_get(got, 0)), want));
    RANK_CHECK(!ferry_value_as_bool(ferry_list_get(got, 1)));
    ferry_value_release(got);
    return 0;
}

/* sum(h) + sum(p * p) */
static ferry_tensor *params_loss(ferry_tensor *h, ferry_tensor *p)
{
    ferry_tensor *pp = ferry_mul(p, p), *a = ferry_sum(h), *b = pp ? ferry_sum(pp) : NULL;
    ferry_tensor *loss = a && b ? ferry_add(a, b) : NULL;
    ferry_tensor_release(pp);
    ferry_tensor_release(a);
    ferry_tensor_release(b);
    return loss;
}

/* Parameters on worker1 and worker2 behind RRefs, used through the three proxies (p1 twice),
   and p2 fetched by to_here. */
static int body_rref_params(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *xv = data(SHAPE(2, 3), F64, 13);
    ferry_tensor *pv[2] = {data(SHAPE(3, 3), F64, 14), data(SHAPE(3, 3), F64, 15)};

    /* The reference: the same ops on local leaves. */
    ferry_tensor *x = da_leaf_copy(xv), *p1 = da_leaf_copy(pv[0]), *p2 = da_leaf_copy(pv[1]);
    tl_local = true;
    ferry_tensor *h1 = call_t("", "da_use_param", VIA_SYNC, 2, p1, x);
    ferry_tensor *h2 = call_t("", "da_use_param", VIA_SYNC, 2, p2, h1);
    ferry_tensor *h3 = call_t("", "da_use_param", VIA_SYNC, 2, p1, h2);
    tl_local = false;
    ferry_tensor *loss = params_loss(h3, p2);
    RANK_CHECK(loss && ferry_backward(loss, NULL, false) == FERRY_OK);
    ferry_tensor *want[3] = {ferry_tensor_grad(x), ferry_tensor_grad(p1), ferry_tensor_grad(p2)};
    RANK_CHECK(want[0] && want[1] && want[2]);
    ferry_tensor *ref[] = {x, p1, p2, h1, h2, h3, loss};
    da_release_all(ref, 7);

    /* Created before the context, as a model's parameters are. */
    ferry_rref *rr[2];
    for (int k = 0; k < 2; k++) {
        ferry_value *a = ferry_args(1, ferry_tensor_value(pv[k]));
        rr[k] = ferry_remote(k ? "worker2" : "worker1", "da_param", a, NULL,
                             FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(a);
        RANK_CHECK(rr[k]);
    }
    x = da_leaf_copy(xv);
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0);
    ferry_value *a = ferry_args(1, ferry_tensor_value(x));
    ferry_value *v1 = ferry_rref_rpc_sync(rr[0], "da_use_param", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    RANK_CHECK(v1 && ferry_tensor_requires_grad(ferry_value_as_tensor(v1)));
    a = ferry_args(1, ferry_value_retain(v1));
    ferry_future *f = ferry_rref_rpc_async(rr[1], "da_use_param", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    ferry_value *v2 = f ? ferry_future_value(f) : NULL;
    ferry_future_release(f);
    RANK_CHECK(v2);
    a = ferry_args(1, ferry_value_retain(v2));
    ferry_rref *r3 = ferry_rref_remote(rr[0], "da_use_param", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    ferry_value *v3 = r3 ? ferry_rref_to_here(r3, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value *v4 = ferry_rref_to_here(rr[1], FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v3 && v4 && ferry_tensor_requires_grad(ferry_value_as_tensor(v4)));
    loss = params_loss(ferry_value_as_tensor(v3), ferry_value_as_tensor(v4));
    RANK_CHECK(loss);
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    ferry_tensor *g = ferry_dist_autograd_get_gradient(ctx, x);
    RANK_CHECK(grads_match("input of RRef proxies", 0, g, want[0]));
    RANK_CHECK(check_owner_grad(rr[0], ctx, want[1], "parameter on worker1 (used twice)") == 0);
    RANK_CHECK(check_owner_grad(rr[1], ctx, want[2], "parameter on worker2 (and fetched)") == 0);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor_release(g);
    ferry_tensor_release(loss);
    ferry_value_release(v1);
    ferry_value_release(v2);
    ferry_value_release(v3);
    ferry_value_release(v4);
    ferry_rref_release(r3);
    ferry_rref_release(rr[0]);
    ferry_rref_release(rr[1]);
    ferry_tensor_release(x);
    da_release_all(want, 3);
    da_release_all(pv, 2);
    ferry_tensor_release(xv);
    return 0;
}

DA_BOTH(gradients_match_local_when_round_trips_use_rpc_sync_async_or_remote, 2, body_round_trips,
        40)
DA_BOTH(gradients_match_local_when_tensors_ride_in_containers_or_mix_dtypes, 2,
     body_containers_and_dtypes, 40)
DA_BOTH(gradients_match_local_when_calls_chain_or_nest_back_to_the_caller, 3, body_chains, 40)
DA_BOTH(gradients_match_local_when_a_tensor_goes_to_two_workers_or_roots_are_several, 3,
     body_fan_out, 40)
DA_BOTH(parameter_gradients_land_on_owners_when_used_through_rref_proxies, 3, body_rref_params, 40)
