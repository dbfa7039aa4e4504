/* Distributed autograd beyond plain gradients: 20 threads on each of three workers with contexts
   of their own against one worker, repeated and concurrent backward passes with retain_graph on
   one context, the send and recv nodes recorded, contexts released on every worker they
   reached, the context seen by callees and then-callbacks, a callee returning its own leaf, and
   RRef.backward. On tcp and shm. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ferry/dist_autograd.h"
#include "ferry/ops.h"
#include "ferry/rref.h"
#include "dist_util.h"

#define F64 FERRY_FLOAT64

/* ---- the computations, as functions and for the local reference ---- */

static ferry_tensor *linear(ferry_tensor *x, ferry_tensor *w)
{
    ferry_tensor *m = ferry_matmul(x, w);
    ferry_tensor *t = m ? ferry_tanh(m) : NULL;
    ferry_tensor_release(m);
    return t;
}

static ferry_tensor *tanh_times(ferry_tensor *x)
{
    ferry_tensor *t = ferry_tanh(x);
    ferry_tensor *m = t ? ferry_mul(t, x) : NULL;
    ferry_tensor *s = m ? ferry_sum(m) : NULL;
    ferry_tensor_release(t);
    ferry_tensor_release(m);
    return s;
}

static ferry_status linear_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    return da_put_tensor(result, linear(da_arg(args, 0), da_arg(args, 1)));
}

/* loss(x): the scalar sum(tanh(x) * x), kept where it is computed when called by remote(). */
static ferry_status loss_fn(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    return da_put_tensor(result, tanh_times(da_arg(args, 0)));
}

/* counts() -> [contexts, backward_passes, send_nodes, recv_nodes, cleanups_pending] here. */
static ferry_value *counts_value(void)
{
    ferry_dist_autograd_counts n = ferry_dist_autograd_debug_counts();
    return ferry_list_of(5, ferry_int(n.contexts), ferry_int(n.backward_passes),
                         ferry_int(n.send_nodes), ferry_int(n.recv_nodes),
                         ferry_int(n.cleanups_pending));
}

static ferry_status counts_fn(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    *result = counts_value();
    return *result ? FERRY_OK : ferry_last_status();
}

static const char *next_worker(char *buf, size_t cap)
{
    ferry_worker_info me;
    size_t world = 0;
    ferry_get_worker_info(NULL, &me);
    ferry_get_worker_infos(NULL, 0, &world);
    snprintf(buf, cap, "worker%d", (me.id + 1) % (int)world);
    return buf;
}

/* hop(x, ttl): y = 2x; at ttl 0 returns tanh(y), else the next worker's hop(y, ttl - 1) + x. */
static ferry_status hop_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    ferry_tensor *x = da_arg(args, 0);
    int64_t ttl = ferry_value_as_int(ferry_list_get(args, 1));
    ferry_tensor *y = ferry_mul_scalar(x, 2.0);
    if (!y)
        return ferry_last_status();
    if (ttl == 0) {
        ferry_tensor *t = ferry_tanh(y);
        ferry_tensor_release(y);
        return da_put_tensor(result, t);
    }
    char next[32];
    ferry_value *a = ferry_args(2, ferry_tensor_value(y), ferry_int(ttl - 1));
    ferry_tensor_release(y);
    ferry_value *r = a ? ferry_rpc_sync(next_worker(next, sizeof next), "da_hop", a, NULL,
                                        FERRY_TIMEOUT_DEFAULT)
                       : NULL;
    ferry_value_release(a);
    ferry_tensor *out = r ? ferry_add(ferry_value_as_tensor(r), x) : NULL;
    ferry_value_release(r);
    return da_put_tensor(result, out);
}

static ferry_tensor *hop_local(ferry_tensor *x, int ttl)
{
    ferry_tensor *y = ferry_mul_scalar(x, 2.0);
    if (ttl == 0 || !y) {
        ferry_tensor *t = y ? ferry_tanh(y) : NULL;
        ferry_tensor_release(y);
        return t;
    }
    ferry_tensor *r = hop_local(y, ttl - 1);
    ferry_tensor *out = r ? ferry_add(r, x) : NULL;
    ferry_tensor_release(r);
    ferry_tensor_release(y);
    return out;
}

/* ctx() -> the callee's current context id (any arguments ignored, so proxies may call it). */
static ferry_status ctx_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    *result = ferry_int(ferry_dist_autograd_current_context());
    return *result ? FERRY_OK : ferry_last_status();
}

/* ctx_via(to) -> [ours, that of `to` called from here] */
static ferry_status ctx_via_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    int64_t mine = ferry_dist_autograd_current_context();
    ferry_value *none = ferry_list_of(0);
    ferry_value *theirs = ferry_rpc_sync(ferry_value_as_string(ferry_list_get(args, 0)), "da_ctx",
                                         none, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(none);
    if (!theirs)
        return ferry_last_status();
    *result = ferry_list_of(2, ferry_int(mine), theirs);
    return *result ? FERRY_OK : ferry_last_status();
}

/* A then-callback: [the value it got, the context it runs in]. */
static ferry_value *ctx_then(ferry_future *done, void *user)
{
    ferry_value *v = ferry_future_value(done);
    if (!v)
        return NULL;
    return ferry_list_of(2, v, ferry_int(ferry_dist_autograd_current_context()));
}

/* async_ctx(to): answers with ctx_then of a call to `to`'s ctx made here. */
static ferry_future *async_ctx_fn(const ferry_value *args, const ferry_value *kwargs, void *user)
{
    ferry_value *none = ferry_list_of(0);
    ferry_future *f = ferry_rpc_async(ferry_value_as_string(ferry_list_get(args, 0)), "da_ctx",
                                      none, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(none);
    if (!f)
        return NULL;
    ferry_future *g = ferry_future_then(f, ctx_then, NULL);
    ferry_future_release(f);
    return g;
}

/* This worker's own leaf, returned as it is (torch's ret_requires_grad). */
static pthread_mutex_t own_mu = PTHREAD_MUTEX_INITIALIZER;
static ferry_tensor *own_leaf;

static ferry_status own_leaf_fn(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    pthread_mutex_lock(&own_mu);
    if (!own_leaf) {
        static const double v[] = {1, 2, 3, 4, 5, 6};
        own_leaf = ferry_tensor_from_data(v, SHAPE(2, 3), F64);
        if (own_leaf)
            ferry_tensor_set_requires_grad(own_leaf, true);
    }
    ferry_tensor *t = ferry_tensor_retain(own_leaf);
    pthread_mutex_unlock(&own_mu);
    return da_put_tensor(result, t);
}

/* grads(ctx): this worker's get_gradients(ctx). */
static ferry_status grads_fn(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    *result = ferry_dist_autograd_get_gradients(ferry_value_as_int(ferry_list_get(args, 0)));
    return *result ? FERRY_OK : ferry_last_status();
}

static void register_all(void)
{
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_own_leaf", own_leaf_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_grads", grads_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_linear", linear_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_square", da_square_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_loss", loss_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_counts", counts_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_hop", hop_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_ctx", ctx_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_ctx_via", ctx_via_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_async_function("da_async_ctx", async_ctx_fn, NULL) == FERRY_OK);
}

/* ---- helpers ---- */

static ferry_tensor *data(int ndim, const int64_t *sizes, uint64_t seed)
{
    ferry_generator *g = ferry_generator_new(seed);
    ferry_tensor *t = g ? ferry_randn(ndim, sizes, F64, g) : NULL;
    ferry_generator_free(g);
    return t;
}

static ferry_tensor *fresh_leaf(int ndim, const int64_t *sizes, uint64_t seed)
{
    ferry_tensor *v = data(ndim, sizes, seed);
    ferry_tensor *t = v ? da_leaf_copy(v) : NULL;
    ferry_tensor_release(v);
    return t;
}

static ferry_tensor *call_t(const char *to, const char *fn, ferry_tensor *a, ferry_tensor *b)
{
    ferry_value *args = b ? ferry_args(2, ferry_tensor_value(a), ferry_tensor_value(b))
                          : ferry_args(1, ferry_tensor_value(a));
    ferry_value *r = args ? ferry_rpc_sync(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(args);
    ferry_tensor *t = r ? ferry_tensor_retain(ferry_value_as_tensor(r)) : NULL;
    ferry_value_release(r);
    return t;
}

static bool grads_match(const char *what, ferry_tensor *got, ferry_tensor *want)
{
    bool ok = got && want && ferry_tensor_dtype(got) == ferry_tensor_dtype(want) &&
              ferry_allclose(got, want, 1e-12, 0);
    if (!ok) {
        char a[512], b[512];
        ferry_tensor_format(got, a, sizeof a);
        ferry_tensor_format(want, b, sizeof b);
        fprintf(stderr, "%s: gradient is %s, want %s\n", what, a, b);
    }
    return ok;
}

static ferry_tensor *ctx_grad(int64_t ctx, ferry_tensor *t)
{
    return ferry_dist_autograd_get_gradient(ctx, t);
}

/* ---- concurrency ---- */

#define THREADS 20
#define ROUNDS 4

typedef struct {
    int rank, id, rc;
    const char *transport;
} thread_arg;

/* A context per round; values differ per thread and round, so a gradient from another thread's
   context would not match. */
static int thread_body(thread_arg *t)
{
    for (int round = 0; round < ROUNDS; round++) {
        uint64_t seed = 1000 + (uint64_t)t->rank * 100000 + (uint64_t)t->id * 100 + round;
        ferry_tensor *xv = data(SHAPE(2, 3), seed), *wv = data(SHAPE(3, 2), seed + 50000);
        RANK_CHECK(xv && wv);
        ferry_tensor *x = da_leaf_copy(xv), *w = da_leaf_copy(wv);
        ferry_tensor *h = linear(x, w), *q = h ? ferry_mul(h, h) : NULL;
        ferry_tensor *loss = q ? ferry_sum(q) : NULL;
        RANK_CHECK(loss && ferry_backward(loss, NULL, false) == FERRY_OK);
        ferry_tensor *want[2] = {ferry_tensor_grad(x), ferry_tensor_grad(w)};
        ferry_tensor *ref[] = {x, w, h, q, loss};
        da_release_all(ref, 5);

        x = da_leaf_copy(xv);
        w = da_leaf_copy(wv);
        int64_t ctx = ferry_dist_autograd_context_begin();
        RANK_CHECK(ctx >= 0 && ctx >> 48 == t->rank);
        h = call_t("worker0", "da_linear", x, w);
        RANK_CHECK(h);
        q = call_t("worker0", "da_square", h, NULL);
        RANK_CHECK(q);
        loss = ferry_sum(q);
        RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
        ferry_tensor *gx = ctx_grad(ctx, x), *gw = ctx_grad(ctx, w);
        char what[96];
        snprintf(what, sizeof what, "worker%d thread %d round %d: x", t->rank, t->id, round);
        RANK_CHECK(grads_match(what, gx, want[0]));
        snprintf(what, sizeof what, "worker%d thread %d round %d: w", t->rank, t->id, round);
        RANK_CHECK(grads_match(what, gw, want[1]));
        RANK_CHECK(ferry_dist_autograd_current_context() == ctx);
        RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
        ferry_tensor *done[] = {x, w, h, q, loss, gx, gw, xv, wv, want[0], want[1]};
        da_release_all(done, 11);
    }
    return 0;
}

static void *thread_main(void *arg)
{
    thread_arg *t = arg;
    t->rc = thread_body(t);
    return NULL;
}

static int body_concurrent(int rank, int world, const rpc_case *c)
{
    if (rank == 0)
        return 0; /* the one worker every thread calls */
    pthread_t th[THREADS];
    thread_arg ta[THREADS];
    double t0 = rpc_test_now_s();
    for (int i = 0; i < THREADS; i++) {
        ta[i] = (thread_arg){.rank = rank, .id = i, .transport = c->transport};
        RANK_CHECK(pthread_create(&th[i], NULL, thread_main, &ta[i]) == 0);
    }
    int failed = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        failed += ta[i].rc != 0;
    }
    fprintf(stderr, "dist_autograd: worker%d ran %d threads x %d contexts in %.2f s (%s)\n", rank,
            THREADS, ROUNDS, rpc_test_now_s() - t0, c->transport);
    RANK_CHECK(failed == 0);
    return 0;
}

/* ---- retain_graph ---- */

#define REPEATS 1000
#define PASS_THREADS 4
#define PASSES_EACH 25

typedef struct {
    int64_t ctx;
    ferry_tensor *loss;
    int failed;
} passes_arg;

static void *passes_main(void *arg)
{
    passes_arg *p = arg;
    for (int i = 0; i < PASSES_EACH; i++)
        p->failed += ferry_dist_autograd_backward(p->ctx, &p->loss, 1, true) != FERRY_OK;
    return NULL;
}

/* Two passes with retain_graph give twice the gradient, a thousand a thousand times (the
   reference adds up the same way), and passes from four threads at once on the same context
   add up as well; a pass without retain_graph frees the graph and the next fails. */
static int body_retain(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *xv = data(SHAPE(3), 31), *wv = data(SHAPE(3), 32);
    ferry_tensor *x = da_leaf_copy(xv), *w = da_leaf_copy(wv);
    ferry_tensor *q = ferry_mul(x, x), *m = ferry_mul(q, w), *loss = ferry_sum(m);
    RANK_CHECK(loss);
    ferry_tensor *want2[2] = {NULL, NULL}, *want[2] = {NULL, NULL};
    for (int i = 0; i < REPEATS + PASS_THREADS * PASSES_EACH; i++) {
        RANK_CHECK(ferry_backward(loss, NULL, true) == FERRY_OK);
        ferry_tensor **keep = i == 1 ? want2 : i == REPEATS - 1 ? want : NULL;
        if (keep) {
            keep[0] = ferry_tensor_clone_data(ferry_tensor_grad(x));
            keep[1] = ferry_tensor_clone_data(ferry_tensor_grad(w));
        }
    }
    ferry_tensor *want_all[2] = {ferry_tensor_grad(x), ferry_tensor_grad(w)};
    ferry_tensor *ref[] = {x, w, q, m, loss};
    da_release_all(ref, 5);

    x = da_leaf_copy(xv);
    w = da_leaf_copy(wv);
    int64_t ctx = ferry_dist_autograd_context_begin();
    q = call_t("worker1", "da_square", x, NULL);
    RANK_CHECK(q);
    m = call_t("worker1", "torch.mul", q, w);
    RANK_CHECK(m);
    loss = ferry_sum(m);
    double t0 = rpc_test_now_s();
    for (int i = 0; i < REPEATS; i++) {
        if (ferry_dist_autograd_backward(ctx, &loss, 1, true) != FERRY_OK) {
            fprintf(stderr, "pass %d of %d failed\n", i + 1, REPEATS);
            RANK_CHECK(!"backward with retain_graph failed");
        }
        if (i == 1) {
            ferry_tensor *gx = ctx_grad(ctx, x), *gw = ctx_grad(ctx, w);
            RANK_CHECK(grads_match("x after two passes", gx, want2[0]));
            RANK_CHECK(grads_match("w after two passes", gw, want2[1]));
            ferry_tensor_release(gx);
            ferry_tensor_release(gw);
        }
    }
    fprintf(stderr, "dist_autograd: %d passes with retain_graph took %.2f s (%s)\n", REPEATS,
            rpc_test_now_s() - t0, c->transport);
    ferry_tensor *gx = ctx_grad(ctx, x), *gw = ctx_grad(ctx, w);
    RANK_CHECK(grads_match("x after 1000 passes", gx, want[0]));
    RANK_CHECK(grads_match("w after 1000 passes", gw, want[1]));
    pthread_t th[PASS_THREADS];
    passes_arg pa[PASS_THREADS];
    for (int i = 0; i < PASS_THREADS; i++) {
        pa[i] = (passes_arg){ctx, loss, 0};
        RANK_CHECK(pthread_create(&th[i], NULL, passes_main, &pa[i]) == 0);
    }
    int failed = 0;
    for (int i = 0; i < PASS_THREADS; i++) {
        pthread_join(th[i], NULL);
        failed += pa[i].failed;
    }
    RANK_CHECK(failed == 0);
    ferry_tensor_release(gx);
    ferry_tensor_release(gw);
    gx = ctx_grad(ctx, x);
    gw = ctx_grad(ctx, w);
    RANK_CHECK(grads_match("x after 100 more passes from four threads", gx, want_all[0]));
    RANK_CHECK(grads_match("w after 100 more passes from four threads", gw, want_all[1]));
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) != FERRY_OK);
    RANK_CHECK(strstr(ferry_last_error(), "backward through the graph a second time"));
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor *done[] = {x, w, q, m, loss, gx, gw, xv, wv, want[0], want[1], want2[0], want2[1],
                            want_all[0], want_all[1]};
    da_release_all(done, 15);
    return 0;
}

/* ---- cleanup ---- */

static int get_counts(const char *to, int64_t out[5])
{
    ferry_value *v;
    if (to) {
        ferry_value *none = ferry_list_of(0);
        v = ferry_rpc_sync(to, "da_counts", none, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(none);
    } else {
        v = counts_value();
    }
    RANK_CHECK(v && ferry_list_len(v) == 5);
    for (size_t i = 0; i < 5; i++)
        out[i] = ferry_value_as_int(ferry_list_get(v, i));
    ferry_value_release(v);
    return 0;
}

/* Polls every worker's counters until all are zero, for up to 10 s. */
static int wait_all_released(int world, const char *after)
{
    double t0 = rpc_test_now_s();
    int64_t n[5] = {0};
    int who = 0;
    for (;;) {
        bool zero = true;
        for (who = 0; who < world && zero; who++) {
            char name[32];
            snprintf(name, sizeof name, "worker%d", who);
            RANK_CHECK(get_counts(who ? name : NULL, n) == 0);
            for (int k = 0; k < 5; k++)
                zero = zero && n[k] == 0;
        }
        if (zero)
            break;
        if (rpc_test_now_s() - t0 > 10) {
            fprintf(stderr, "%s: worker%d still has contexts %lld, passes %lld, send %lld, recv "
                    "%lld, cleanups %lld after 10 s\n", after, who - 1, (long long)n[0],
                    (long long)n[1], (long long)n[2], (long long)n[3], (long long)n[4]);
            RANK_CHECK(!"contexts not released within 10 s");
        }
        nanosleep(&(struct timespec){0, 20000000}, NULL); /* polling the release being measured */
    }
    fprintf(stderr, "dist_autograd: every worker released the context %.2f s after %s\n",
            rpc_test_now_s() - t0, after);
    return 0;
}

static int body_release(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    int64_t n[5];
    RANK_CHECK(wait_all_released(world, "start") == 0);

    /* A call without tensors still makes a context on the callee, with no send or recv. */
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0);
    RANK_CHECK(get_counts("worker1", n) == 0);
    RANK_CHECK(n[0] == 1 && n[2] == 0 && n[3] == 0);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    RANK_CHECK(wait_all_released(world, "a call without tensors") == 0);

    /* Tensors that do not require grad record nothing; one round trip with a tensor that does
       records a send and a recv node on each side (torch's test_graph_for_builtin_call). */
    ferry_tensor *x = fresh_leaf(SHAPE(4), 41), *k = data(SHAPE(4), 42);
    ctx = ferry_dist_autograd_context_begin();
    ferry_tensor *kk = call_t("worker1", "torch.mul", k, k);
    RANK_CHECK(kk && !ferry_tensor_requires_grad(kk));
    RANK_CHECK(get_counts(NULL, n) == 0 && n[2] == 0 && n[3] == 0);
    RANK_CHECK(get_counts("worker1", n) == 0 && n[2] == 0 && n[3] == 0);
    ferry_tensor *xk = call_t("worker1", "torch.mul", x, k);
    RANK_CHECK(xk && ferry_tensor_requires_grad(xk));
    RANK_CHECK(get_counts(NULL, n) == 0 && n[2] == 1 && n[3] == 1);
    RANK_CHECK(get_counts("worker1", n) == 0 && n[2] == 1 && n[3] == 1);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    RANK_CHECK(wait_all_released(world, "one round trip") == 0);

    /* worker0 -> worker1 -> worker2 -> worker0 -> worker1: the context reaches worker2 only
       through worker1, and comes back here. */
    ctx = ferry_dist_autograd_context_begin();
    ferry_value *a = ferry_args(2, ferry_tensor_value(x), ferry_int(3));
    ferry_value *r = ferry_rpc_sync("worker1", "da_hop", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    RANK_CHECK(r);
    RANK_CHECK(get_counts(NULL, n) == 0);
    RANK_CHECK(n[0] == 1 && n[2] >= 2 && n[3] >= 2);
    RANK_CHECK(get_counts("worker2", n) == 0);
    RANK_CHECK(n[0] == 1 && n[2] >= 2 && n[3] >= 2);
    ferry_tensor *loss = ferry_sum(ferry_value_as_tensor(r));
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    ferry_tensor *g = ctx_grad(ctx, x);
    ferry_tensor *xl = da_leaf_copy(x), *hl = hop_local(xl, 3), *ll = hl ? ferry_sum(hl) : NULL;
    RANK_CHECK(ll && ferry_backward(ll, NULL, false) == FERRY_OK);
    ferry_tensor *want = ferry_tensor_grad(xl);
    RANK_CHECK(grads_match("four hops", g, want));
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    RANK_CHECK(wait_all_released(world, "nested hops") == 0);

    /* One context reaching every worker without tensors, one with a backward never run. */
    ctx = ferry_dist_autograd_context_begin();
    for (int who = 1; who < world; who++) {
        char name[32];
        snprintf(name, sizeof name, "worker%d", who);
        RANK_CHECK(get_counts(name, n) == 0 && n[0] == 1);
    }
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ctx = ferry_dist_autograd_context_begin();
    ferry_tensor *sq = call_t("worker2", "da_square", x, NULL);
    RANK_CHECK(sq);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    RANK_CHECK(wait_all_released(world, "contexts without backward") == 0);
    ferry_tensor *done[] = {x, loss, g, xl, hl, ll, want, sq, k, kk, xk};
    da_release_all(done, 11);
    ferry_value_release(r);
    return 0;
}

/* ---- contexts seen by callees and callbacks ---- */

static ferry_value *int_then(ferry_future *done, void *user)
{
    return ferry_int(ferry_dist_autograd_current_context());
}

static int64_t int_of(ferry_value *v)
{
    int64_t n = v ? ferry_value_as_int(v) : -2;
    ferry_value_release(v);
    return n;
}

static int check_contexts_from(int rank, const char *a, const char *b)
{
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0 && ctx >> 48 == rank);
    ferry_value *none = ferry_list_of(0);
    RANK_CHECK(int_of(ferry_rpc_sync(a, "da_ctx", none, NULL, FERRY_TIMEOUT_DEFAULT)) == ctx);
    ferry_rref *r = ferry_remote(a, "da_ctx", none, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r && int_of(ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT)) == ctx);
    RANK_CHECK(int_of(ferry_rref_rpc_sync(r, "da_ctx", none, NULL, FERRY_TIMEOUT_DEFAULT)) == ctx);
    ferry_rref_release(r);
    /* Nested: a callee's own call carries the id on. */
    ferry_value *to_b = ferry_args(1, ferry_string(b));
    ferry_value *pair = ferry_rpc_sync(a, "da_ctx_via", to_b, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(pair && ferry_value_as_int(ferry_list_get(pair, 0)) == ctx);
    RANK_CHECK(ferry_value_as_int(ferry_list_get(pair, 1)) == ctx);
    ferry_value_release(pair);
    /* A callee's then-callback runs inside the context too. */
    pair = ferry_rpc_sync(a, "da_async_ctx", to_b, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(pair && ferry_value_as_int(ferry_list_get(pair, 0)) == ctx);
    RANK_CHECK(ferry_value_as_int(ferry_list_get(pair, 1)) == ctx);
    ferry_value_release(pair);
    /* Our own then-callbacks: of an RPC's future and of a plain future made here. */
    ferry_future *f = ferry_rpc_async(a, "da_ctx", none, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_future *g = f ? ferry_future_then(f, int_then, NULL) : NULL;
    RANK_CHECK(g && int_of(ferry_future_value(g)) == ctx);
    ferry_future_release(f);
    ferry_future_release(g);
    f = ferry_future_new();
    g = ferry_future_then(f, int_then, NULL);
    RANK_CHECK(ferry_future_set_value(f, NULL) == FERRY_OK);
    RANK_CHECK(g && int_of(ferry_future_value(g)) == ctx);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_future_release(f);
    ferry_future_release(g);
    /* Outside a context, callees and callbacks have none. */
    RANK_CHECK(int_of(ferry_rpc_sync(a, "da_ctx", none, NULL, FERRY_TIMEOUT_DEFAULT)) == -1);
    f = ferry_rpc_async(a, "da_ctx", none, NULL, FERRY_TIMEOUT_DEFAULT);
    g = f ? ferry_future_then(f, int_then, NULL) : NULL;
    RANK_CHECK(g && int_of(ferry_future_value(g)) == -1);
    ferry_future_release(f);
    ferry_future_release(g);
    ferry_value_release(to_b);
    ferry_value_release(none);
    return 0;
}

static int body_context_flow(int rank, int world, const rpc_case *c)
{
    if (rank == 0)
        return check_contexts_from(0, "worker1", "worker2");
    if (rank == 1)
        return check_contexts_from(1, "worker2", "worker0");
    return 0;
}

/* ---- a callee's own leaf ---- */

/* The callee returns its own leaf: the gradient (ones) is in its context, none in ours. */
static int body_callee_leaf(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0);
    ferry_value *none = ferry_list_of(0);
    ferry_value *r = ferry_rpc_sync("worker1", "da_own_leaf", none, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(none);
    ferry_tensor *t = ferry_value_as_tensor(r);
    RANK_CHECK(t && ferry_tensor_requires_grad(t));
    ferry_tensor *loss = ferry_sum(t);
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    ferry_value *mine = ferry_dist_autograd_get_gradients(ctx);
    RANK_CHECK(mine && ferry_list_len(mine) == 0);
    ferry_value *a = ferry_args(1, ferry_int(ctx));
    ferry_value *theirs = ferry_rpc_sync("worker1", "da_grads", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    RANK_CHECK(theirs && ferry_list_len(theirs) == 1);
    ferry_value *pair = ferry_list_get(theirs, 0);
    RANK_CHECK(ferry_tensor_equal(ferry_value_as_tensor(ferry_list_get(pair, 0)), t));
    ferry_tensor *ones = ferry_ones(SHAPE(2, 3), F64);
    RANK_CHECK(grads_match("callee's own leaf", ferry_value_as_tensor(ferry_list_get(pair, 1)),
                           ones));
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor_release(ones);
    ferry_value_release(theirs);
    ferry_value_release(mine);
    ferry_tensor_release(loss);
    ferry_value_release(r);
    return 0;
}

/* ---- RRef.backward ---- */

static int body_rref_backward(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *xv = data(SHAPE(4), 61);
    ferry_tensor *xl = da_leaf_copy(xv), *ll = tanh_times(xl);
    RANK_CHECK(ll && ferry_backward(ll, NULL, false) == FERRY_OK);
    ferry_tensor *want = ferry_tensor_grad(xl);

    ferry_tensor *x = da_leaf_copy(xv);
    int64_t ctx = ferry_dist_autograd_context_begin();
    ferry_value *a = ferry_args(1, ferry_tensor_value(x));
    ferry_rref *r = ferry_remote("worker1", "da_loss", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    RANK_CHECK(r);
    RANK_CHECK(da_error_is(ferry_rref_backward(r, -1, false),
                        "User RRefs require 'dist_autograd_ctx_id' to be specified"));
    RANK_CHECK(ferry_rref_backward(r, ctx, false) == FERRY_OK);
    ferry_tensor *g = ctx_grad(ctx, x);
    RANK_CHECK(grads_match("RRef.backward on the owner", g, want));
    ferry_tensor *dot_grad = ferry_tensor_grad(x);
    RANK_CHECK(!dot_grad);

    a = ferry_args(1, ferry_int(3));
    ferry_rref *not_tensor = ferry_remote("worker1", "echo", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    ferry_status rc = ferry_rref_backward(not_tensor, ctx, false);
    RANK_CHECK(rc != FERRY_OK && strstr(ferry_last_error(), "RRef should contain a tensor for "
                                                            ".backward()"));
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);

    /* An OwnerRRef: ctx -1 is a local backward into .grad. */
    ferry_tensor *xo = da_leaf_copy(xv), *lo = tanh_times(xo);
    ferry_value *lv = ferry_tensor_value(lo);
    ferry_rref *own = ferry_rref_new(lv);
    RANK_CHECK(own && ferry_rref_backward(own, -1, false) == FERRY_OK);
    ferry_tensor *go = ferry_tensor_grad(xo);
    RANK_CHECK(grads_match("RRef.backward into .grad", go, want));

    /* An OwnerRRef with a context runs a distributed pass from here. That context is left open:
       shutdown must free it on both workers (the ranks check for leaks). */
    int64_t open_ctx = ferry_dist_autograd_context_begin();
    a = ferry_args(1, ferry_tensor_value(x));
    ferry_value *lr = ferry_rpc_sync("worker1", "da_loss", a, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_rref *own2 = lr ? ferry_rref_new(lr) : NULL;
    RANK_CHECK(own2 && ferry_rref_backward(own2, open_ctx, true) == FERRY_OK);
    ferry_tensor *g2 = ctx_grad(open_ctx, x);
    RANK_CHECK(grads_match("OwnerRRef.backward in a context", g2, want));
    ferry_value_release(a);
    ferry_value_release(lr);
    ferry_rref_release(own2);
    ferry_tensor *done[] = {xv, xl, ll, want, x, g, xo, lo, go, g2};
    da_release_all(done, 10);
    ferry_value_release(lv);
    ferry_rref_release(own);
    ferry_rref_release(not_tensor);
    ferry_rref_release(r);
    return 0;
}

DA_BOTH(gradients_never_mix_when_20_threads_on_3_workers_run_contexts_against_one, 4,
     body_concurrent, 60)
DA_BOTH(gradients_add_up_when_backward_repeats_with_retain_graph_or_runs_from_4_threads, 2,
     body_retain, 60)
DA_BOTH(every_worker_releases_the_context_when_it_ends_after_nested_hops_or_no_tensors, 3,
     body_release, 50)
DA_BOTH(callees_and_then_callbacks_see_the_callers_context_when_one_is_current, 3,
     body_context_flow, 40)
DA_BOTH(only_the_callee_context_gets_a_gradient_when_it_returns_its_own_leaf, 2, body_callee_leaf,
     40)
DA_BOTH(rref_backward_runs_on_the_owner_when_it_holds_the_loss_or_here_for_an_owner_rref, 2,
     body_rref_backward, 40)
