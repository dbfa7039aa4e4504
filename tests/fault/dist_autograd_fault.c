/* Distributed backward passes that fail or would hang: torch's invalid arguments and unknown or
   ended contexts; RPC results the loss does not use (torch hangs); a node four hops away whose
   backward fails (torch's SimulateBackwardError) makes 50 passes fail with every hop named, and
   the same context then runs passes that succeed; a context ended while its pass runs; a worker
   SIGKILLed while its part of a pass runs fails the pass on the initiator within 3 s, naming it;
   an initiator SIGKILLed mid-pass leaves no part of the pass running on the survivors; the
   survivors release and shut down. On tcp and shm.

   The failing node is a custom node of the local engine (autograd/engine.h), the way send and
   recv nodes are made: there is no public API for custom functions. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "autograd/engine.h"
#include "ferry/dist_autograd.h"
#include "ferry/ops.h"
#include "integration/dist_util.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define RANK_LEAK_CHECK() __lsan_do_recoverable_leak_check()
#else
#define RANK_LEAK_CHECK() 0
#endif

#define F64 FERRY_FLOAT64

static atomic_bool simulate_error;
/* Set in the test process before the ranks fork: the backward of the node sleeps this long. */
static double backward_sleep_s;

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static ferry_status flaky_backward(void *ctx, size_t n_out, ferry_tensor *const *grad_outputs,
                                   size_t n_in, ferry_tensor **grad_inputs)
{
    if (backward_sleep_s > 0)
        sleep_s(backward_sleep_s);
    if (atomic_load(&simulate_error))
        return ferry_set_error(FERRY_EINVAL, "Simulate error on backward pass");
    grad_inputs[0] = ferry_tensor_retain(grad_outputs[0]);
    return FERRY_OK;
}

/* The identity, through a node whose backward may fail or sleep. */
static ferry_tensor *flaky(ferry_tensor *x)
{
    ferry__node *node = ferry__node_new_custom("SimulateBackwardError", 1, 1, &x, flaky_backward,
                                               NULL, NULL);
    ferry_tensor *out = node ? ferry_detach(x) : NULL;
    if (out && ferry__node_attach_output(node, 0, out) != FERRY_OK) {
        ferry_tensor_release(out);
        out = NULL;
    }
    ferry__node_release(node);
    return out;
}

/* hop(x, ttl): y = 2x; at ttl 0 returns flaky(y), else the next worker's hop(y, ttl - 1). */
static ferry_status hop_fn(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    int64_t ttl = ferry_value_as_int(ferry_list_get(args, 1));
    ferry_tensor *y = ferry_mul_scalar(ferry_value_as_tensor(ferry_list_get(args, 0)), 2.0);
    if (!y)
        return ferry_last_status();
    if (ttl == 0) {
        ferry_tensor *out = flaky(y);
        ferry_tensor_release(y);
        *result = out ? ferry_tensor_value(out) : NULL;
        ferry_tensor_release(out);
        return *result ? FERRY_OK : ferry_last_status();
    }
    ferry_worker_info me;
    size_t world = 0;
    ferry_get_worker_info(NULL, &me);
    ferry_get_worker_infos(NULL, 0, &world);
    char next[32];
    snprintf(next, sizeof next, "worker%d", (me.id + 1) % (int)world);
    ferry_value *a = ferry_args(2, ferry_tensor_value(y), ferry_int(ttl - 1));
    ferry_tensor_release(y);
    *result = a ? ferry_rpc_sync(next, "da_hop", a, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(a);
    return *result ? FERRY_OK : ferry_last_status();
}

static ferry_status set_error_fn(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    atomic_store(&simulate_error, ferry_value_as_bool(ferry_list_get(args, 0)));
    *result = ferry_none();
    return FERRY_OK;
}

static atomic_bool released;

static ferry_status release_fn(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    atomic_store(&released, true);
    *result = ferry_none();
    return FERRY_OK;
}

static ferry_status counts_zero_fn(const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user);

static void register_all(void)
{
    cr_assert(ferry_register_function("da_hop", hop_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_set_error", set_error_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_release", release_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("da_counts_zero", counts_zero_fn, NULL) == FERRY_OK);
}

static ferry_tensor *arange_leaf(int64_t n)
{
    ferry_tensor *x = ferry_arange(1, (double)n + 1, 1, F64);
    if (x && ferry_tensor_set_requires_grad(x, true) != FERRY_OK) {
        ferry_tensor_release(x);
        return NULL;
    }
    return x;
}

/* hop(x, ttl) called from here: x * 2^(ttl + 1), through the flaky node. */
static ferry_tensor *hops(const char *to, ferry_tensor *x, int ttl)
{
    ferry_value *a = ferry_args(2, ferry_tensor_value(x), ferry_int(ttl));
    ferry_value *r = a ? ferry_rpc_sync(to, "da_hop", a, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(a);
    ferry_tensor *t = r ? ferry_tensor_retain(ferry_value_as_tensor(r)) : NULL;
    ferry_value_release(r);
    return t;
}

static int set_error_everywhere(int world, bool on)
{
    ferry_value *a = ferry_args(1, ferry_bool(on));
    for (int k = 0; k < world; k++) {
        char name[32];
        snprintf(name, sizeof name, "worker%d", k);
        ferry_value *v = ferry_rpc_sync(name, "da_set_error", a, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v);
        ferry_value_release(v);
    }
    ferry_value_release(a);
    return 0;
}

/* ---- invalid arguments and contexts ---- */

/* torch's test_backward_invalid_args, and unknown or ended contexts. */
static int body_invalid(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    int64_t ctx = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx >= 0 && ctx >> 48 == 0);
    RANK_CHECK(ferry_dist_autograd_current_context() == ctx);
    RANK_CHECK(ferry_dist_autograd_context_begin() == -1);
    RANK_CHECK(da_error_is(ferry_last_status(), "Already have an autograd context id for this "
                                             "thread."));
    RANK_CHECK(ferry_dist_autograd_current_context() == ctx);

    RANK_CHECK(ferry_dist_autograd_backward(ctx, NULL, 1, false) == FERRY_EINVAL);
    ferry_tensor *roots[1] = {NULL};
    RANK_CHECK(da_error_is(ferry_dist_autograd_backward(ctx, roots, 0, false),
                        "No tensors provided for gradient computation."));
    ferry_tensor *plain = ferry_scalar_tensor(1.0, F64);
    roots[0] = plain;
    RANK_CHECK(da_error_is(ferry_dist_autograd_backward(ctx, roots, 1, false),
                        "requires_grad not set on root"));
    ferry_tensor *x = arange_leaf(3);
    ferry_tensor *t = hops("worker1", x, 0);
    RANK_CHECK(t);
    roots[0] = t;
    RANK_CHECK(da_error_is(ferry_dist_autograd_backward(ctx, roots, 1, false),
                        "is not a scalar, all roots need to be scalar"));
    ferry_tensor *leaf = ferry_scalar_tensor(1.0, F64);
    RANK_CHECK(ferry_tensor_set_requires_grad(leaf, true) == FERRY_OK);
    roots[0] = leaf;
    RANK_CHECK(da_error_is(ferry_dist_autograd_backward(ctx, roots, 1, false),
                        "does not have a valid gradient function."));

    /* No gradient yet: NULL without an error. */
    ferry_clear_error();
    RANK_CHECK(!ferry_dist_autograd_get_gradient(ctx, x) && ferry_last_status() == FERRY_OK);
    ferry_value *none = ferry_dist_autograd_get_gradients(ctx);
    RANK_CHECK(none && ferry_list_len(none) == 0);
    ferry_value_release(none);

    /* The checks left the context usable. */
    ferry_tensor *loss = ferry_sum(t);
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    ferry_tensor *g = ferry_dist_autograd_get_gradient(ctx, x);
    ferry_tensor *want = ferry_full(1, (int64_t[]){3}, 2.0, F64);
    RANK_CHECK(g && ferry_allclose(g, want, 1e-12, 0));

    char msg[96];
    int64_t bogus = ctx + 12345;
    snprintf(msg, sizeof msg, "Could not find autograd context with id: %lld", (long long)bogus);
    RANK_CHECK(da_error_is(ferry_dist_autograd_backward(bogus, &loss, 1, false), msg));
    RANK_CHECK(!ferry_dist_autograd_get_gradient(bogus, x));
    RANK_CHECK(da_error_is(ferry_last_status(), msg));
    RANK_CHECK(!ferry_dist_autograd_get_gradients(bogus));
    RANK_CHECK(da_error_is(ferry_last_status(), msg));
    RANK_CHECK(da_error_is(ferry_dist_autograd_context_end(bogus), msg));
    RANK_CHECK(ferry_dist_autograd_current_context() == ctx);

    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    RANK_CHECK(ferry_dist_autograd_current_context() == -1);
    snprintf(msg, sizeof msg, "Could not find autograd context with id: %lld", (long long)ctx);
    RANK_CHECK(da_error_is(ferry_dist_autograd_backward(ctx, &loss, 1, false), msg));
    RANK_CHECK(!ferry_dist_autograd_get_gradient(ctx, x));
    RANK_CHECK(da_error_is(ferry_last_status(), msg));
    RANK_CHECK(da_error_is(ferry_dist_autograd_context_end(ctx), msg));
    /* A new context has a new id. */
    int64_t ctx2 = ferry_dist_autograd_context_begin();
    RANK_CHECK(ctx2 >= 0 && ctx2 != ctx);
    RANK_CHECK(ferry_dist_autograd_context_end(ctx2) == FERRY_OK);
    ferry_tensor *done[] = {plain, x, t, leaf, loss, g, want};
    for (size_t i = 0; i < 7; i++)
        ferry_tensor_release(done[i]);
    return 0;
}

Test(dist_autograd_tcp, backward_fails_with_torch_messages_when_arguments_or_context_are_invalid,
     .timeout = 40)
{
    register_all();
    rpc_case_run("tcp", 2, body_invalid, NULL, 35);
}

Test(dist_autograd_shm, backward_fails_with_torch_messages_when_arguments_or_context_are_invalid,
     .timeout = 40)
{
    register_all();
    rpc_case_run("shm", 2, body_invalid, NULL, 35);
}

Test(dist_autograd_api, calls_fail_with_eshutdown_and_counts_are_zero_when_rpc_not_running,
     .timeout = 10)
{
    cr_assert_eq(ferry_dist_autograd_context_begin(), -1);
    cr_assert_eq(ferry_last_status(), FERRY_ESHUTDOWN);
    cr_assert_eq(ferry_dist_autograd_current_context(), -1);
    ferry_dist_autograd_counts n = ferry_dist_autograd_debug_counts();
    cr_assert(!n.contexts && !n.backward_passes && !n.send_nodes && !n.recv_nodes &&
              !n.cleanups_pending);
}

/* ---- a node four hops away fails ---- */

#define FAILING 50
#define SUCCEEDING 3

/* worker0 -> worker1 -> worker2 -> worker0 -> worker1, where the node is: r = 16 x, and
   loss = sum(r * r) gives 512 x exactly. */
static int body_errors(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    RANK_CHECK(set_error_everywhere(world, true) == 0);
    ferry_tensor *x = arange_leaf(4);
    int64_t ctx = ferry_dist_autograd_context_begin();
    ferry_tensor *r = hops("worker1", x, 3);
    RANK_CHECK(r);
    ferry_tensor *sq = ferry_mul(r, r), *loss = sq ? ferry_sum(sq) : NULL;
    RANK_CHECK(loss);
    double t0 = rpc_test_now_s();
    for (int i = 0; i < FAILING; i++) {
        ferry_status rc = ferry_dist_autograd_backward(ctx, &loss, 1, true);
        const char *msg = ferry_last_error();
        if (rc == FERRY_OK || !strstr(msg, "Simulate error on backward pass") ||
            !strstr(msg, "Error on Node")) {
            fprintf(stderr, "failing pass %d: %s: %s\n", i, ferry_strerror(rc),
                    rc == FERRY_OK ? "" : msg);
            RANK_CHECK(!"the pass did not fail with the node's error");
        }
        if (i == 0)
            fprintf(stderr, "dist_autograd_fault: the failing pass says: %s\n", msg);
    }
    fprintf(stderr, "dist_autograd_fault: %d failing passes took %.2f s (%s)\n", FAILING,
            rpc_test_now_s() - t0, c->transport);
    /* Nothing reached x: its only path goes through the failing node. */
    ferry_clear_error();
    ferry_tensor *g = ferry_dist_autograd_get_gradient(ctx, x);
    RANK_CHECK(!g && ferry_last_status() == FERRY_OK);

    RANK_CHECK(set_error_everywhere(world, false) == 0);
    for (int i = 0; i < SUCCEEDING; i++)
        RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, true) == FERRY_OK);
    g = ferry_dist_autograd_get_gradient(ctx, x);
    ferry_tensor *want = ferry_mul_scalar(x, 512.0 * SUCCEEDING);
    RANK_CHECK(g && ferry_allclose(g, want, 1e-12, 0));
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor *done[] = {x, r, sq, loss, g, want};
    for (size_t i = 0; i < 6; i++)
        ferry_tensor_release(done[i]);
    return 0;
}

static void run_errors(const char *transport)
{
    register_all();
    rpc_case_run(transport, 3, body_errors, NULL, 55);
}

Test(dist_autograd_fault, passes_fail_with_each_hop_then_recover_when_a_node_4_hops_away_fails_tcp,
     .timeout = 60)
{
    run_errors("tcp");
}

Test(dist_autograd_fault, passes_fail_with_each_hop_then_recover_when_a_node_4_hops_away_fails_shm,
     .timeout = 60)
{
    run_errors("shm");
}

/* ---- an unused result (torch hangs there: pytorch#38513) ---- */

static ferry_tensor *builtin(const char *to, const char *fn, ferry_tensor *a, ferry_tensor *b)
{
    ferry_value *args = ferry_args(2, ferry_tensor_value(a), ferry_tensor_value(b));
    ferry_value *r = args ? ferry_rpc_sync(to, fn, args, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(args);
    ferry_tensor *t = r ? ferry_tensor_retain(ferry_value_as_tensor(r)) : NULL;
    ferry_value_release(r);
    return t;
}

static bool all_equal(const char *what, ferry_tensor *g, double v)
{
    bool ok = g != NULL;
    for (int64_t i = 0; ok && i < ferry_tensor_numel(g); i++)
        ok = ferry_tensor_item_at(g, i) == v;
    if (!ok) {
        char buf[256];
        ferry_tensor_format(g, buf, sizeof buf);
        fprintf(stderr, "%s: gradient %s, want all %g\n", what, buf, v);
    }
    return ok;
}

/* Results nobody uses (on a worker the loss never reaches, and next to a used one) give no
   gradient and do not hold backward up; nor does a call a purely local loss ignores. */
static int body_unused(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *x = arange_leaf(3), *y = arange_leaf(3);
    int64_t ctx = ferry_dist_autograd_context_begin();
    ferry_tensor *unused2 = builtin("worker2", "torch.mul", x, x);
    ferry_tensor *used = builtin("worker1", "torch.add", x, y);
    ferry_tensor *unused1 = hops("worker1", y, 0);
    RANK_CHECK(x && y && unused1 && unused2 && used);
    ferry_tensor *loss = ferry_sum(used);
    double t0 = rpc_test_now_s();
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    double took = rpc_test_now_s() - t0;
    fprintf(stderr, "dist_autograd: backward with two unused results took %.3f s (%s)\n", took,
            c->transport);
    RANK_CHECK(took < 2);
    ferry_tensor *gx = ferry_dist_autograd_get_gradient(ctx, x);
    ferry_tensor *gy = ferry_dist_autograd_get_gradient(ctx, y);
    RANK_CHECK(all_equal("x beside unused results", gx, 1));
    RANK_CHECK(all_equal("y beside an unused result", gy, 1));
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor *done[] = {unused1, unused2, used, loss, gx, gy};
    for (size_t i = 0; i < 6; i++)
        ferry_tensor_release(done[i]);

    ctx = ferry_dist_autograd_context_begin();
    ferry_tensor *ignored = hops("worker1", x, 0), *x3 = ferry_mul_scalar(x, 3.0);
    loss = ferry_sum(x3);
    RANK_CHECK(ignored && loss);
    t0 = rpc_test_now_s();
    RANK_CHECK(ferry_dist_autograd_backward(ctx, &loss, 1, false) == FERRY_OK);
    RANK_CHECK(rpc_test_now_s() - t0 < 2);
    gx = ferry_dist_autograd_get_gradient(ctx, x);
    RANK_CHECK(all_equal("a local loss beside an unused call", gx, 3));
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    ferry_tensor *rest[] = {ignored, x3, loss, gx, x, y};
    for (size_t i = 0; i < 6; i++)
        ferry_tensor_release(rest[i]);
    return 0;
}

Test(dist_autograd_tcp, unused_results_give_no_gradient_and_no_hang_when_the_loss_ignores_them,
     .timeout = 40)
{
    register_all();
    rpc_case_run("tcp", 3, body_unused, NULL, 35);
}

Test(dist_autograd_shm, unused_results_give_no_gradient_and_no_hang_when_the_loss_ignores_them,
     .timeout = 40)
{
    register_all();
    rpc_case_run("shm", 3, body_unused, NULL, 35);
}

/* ---- a context ended while its pass runs ---- */

typedef struct {
    int64_t ctx;
    ferry_tensor *loss;
    ferry_status rc;
    double at;
    char msg[1024];
} pass_arg;

static void *pass_main(void *arg)
{
    pass_arg *p = arg;
    p->rc = ferry_dist_autograd_backward(p->ctx, &p->loss, 1, false);
    p->at = rpc_test_now_s();
    snprintf(p->msg, sizeof p->msg, "%s", p->rc == FERRY_OK ? "" : ferry_last_error());
    return NULL;
}

static bool counts_zero(void)
{
    ferry_dist_autograd_counts n = ferry_dist_autograd_debug_counts();
    return !n.contexts && !n.backward_passes && !n.send_nodes && !n.recv_nodes &&
           !n.cleanups_pending;
}

static ferry_status counts_zero_fn(const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    *result = ferry_bool(counts_zero());
    return *result ? FERRY_OK : ferry_last_status();
}

/* worker1's node sleeps in backward when the context ends: the pass fails here at once, and
   worker1 lets go of everything once its node is done. */
static int body_end_mid_pass(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_tensor *x = arange_leaf(3);
    int64_t ctx = ferry_dist_autograd_context_begin();
    ferry_tensor *r = hops("worker1", x, 0);
    RANK_CHECK(r);
    pass_arg pa = {.ctx = ctx, .loss = ferry_sum(r)};
    pthread_t th;
    RANK_CHECK(pthread_create(&th, NULL, pass_main, &pa) == 0);
    sleep_s(0.3); /* the pass is then waiting on worker1's sleeping node */
    double ended_at = rpc_test_now_s();
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    pthread_join(th, NULL);
    fprintf(stderr, "dist_autograd_fault: backward returned %s %.2f s after its context ended "
            "(%s): %s\n", ferry_strerror(pa.rc), pa.at - ended_at, c->transport, pa.msg);
    RANK_CHECK(pa.rc != FERRY_OK && pa.at - ended_at < 1);
    RANK_CHECK(ferry_dist_autograd_current_context() == -1);
    ferry_value *none = ferry_list_of(0), *v = NULL;
    bool zero = false;
    for (double end = rpc_test_now_s() + 10; !zero && rpc_test_now_s() < end;) {
        ferry_value_release(v);
        v = ferry_rpc_sync("worker1", "da_counts_zero", none, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v);
        zero = ferry_value_as_bool(v) && counts_zero();
        if (!zero)
            sleep_s(0.02); /* polling the release being measured */
    }
    fprintf(stderr, "dist_autograd_fault: both workers released the context %.2f s after it "
            "ended\n", rpc_test_now_s() - ended_at);
    RANK_CHECK(zero);
    ferry_value_release(v);
    ferry_value_release(none);
    ferry_tensor_release(x);
    ferry_tensor_release(r);
    ferry_tensor_release(pa.loss);
    return 0;
}

static void run_end_mid_pass(const char *transport)
{
    register_all();
    backward_sleep_s = 2.0; /* inherited by the ranks */
    rpc_case_run(transport, 2, body_end_mid_pass, NULL, 35);
}

Test(dist_autograd_fault, pass_fails_at_once_and_workers_let_go_when_its_context_ends_mid_pass_tcp,
     .timeout = 40)
{
    run_end_mid_pass("tcp");
}

Test(dist_autograd_fault, pass_fails_at_once_and_workers_let_go_when_its_context_ends_mid_pass_shm,
     .timeout = 40)
{
    run_end_mid_pass("shm");
}

/* ---- a worker killed mid-backward ---- */

#define KILL_AFTER_S 0.5
#define SLEEP_S 5.0

static pid_t victim;

typedef struct {
    double killed_at;
} killer_arg;

static void *killer(void *arg)
{
    killer_arg *k = arg;
    sleep_s(KILL_AFTER_S);
    k->killed_at = rpc_test_now_s();
    kill(victim, SIGKILL);
    return NULL;
}

/* Nothing of the context is left here (releases towards the dead worker aside), within 5 s. */
static int check_released(const char *who)
{
    double end = rpc_test_now_s() + 5;
    ferry_dist_autograd_counts n;
    for (;;) {
        n = ferry_dist_autograd_debug_counts();
        if (!n.contexts && !n.backward_passes && !n.send_nodes && !n.recv_nodes)
            break;
        if (rpc_test_now_s() > end) {
            fprintf(stderr, "%s: contexts %lld, passes %lld, send %lld, recv %lld after 5 s\n",
                    who, (long long)n.contexts, (long long)n.backward_passes,
                    (long long)n.send_nodes, (long long)n.recv_nodes);
            RANK_CHECK(!"the context was not released");
        }
        sleep_s(0.01); /* polling the release being measured */
    }
    fprintf(stderr, "dist_autograd_fault: %s released everything (%lld releases pending)\n", who,
            (long long)n.cleanups_pending);
    return 0;
}

/* A shutdown with a dead peer: graceful rounds cannot complete, but it ends in bounded time. */
static int shutdown_bounded(const char *who)
{
    double t0 = rpc_test_now_s();
    ferry_status rc = ferry_shutdown(true, 5);
    double took = rpc_test_now_s() - t0;
    fprintf(stderr, "dist_autograd_fault: %s shut down with %s after %.2f s\n", who,
            ferry_strerror(rc), took);
    RANK_CHECK(rc == FERRY_OK || rc == FERRY_ETRANSPORT);
    RANK_CHECK(took < 11);
    return 0;
}

/* worker0 -> worker1 -> worker2: worker2's node sleeps in backward and is killed meanwhile. */
static int initiator(const rpc_case *c)
{
    if (rpc_case_join(c, 0, 3) != 0)
        return 1;
    ferry_tensor *x = arange_leaf(3);
    int64_t ctx = ferry_dist_autograd_context_begin();
    ferry_tensor *r = hops("worker1", x, 1);
    RANK_CHECK(r);
    ferry_tensor *loss = ferry_sum(r);
    killer_arg k = {0};
    pthread_t th;
    RANK_CHECK(pthread_create(&th, NULL, killer, &k) == 0);
    ferry_status rc = ferry_dist_autograd_backward(ctx, &loss, 1, false);
    double failed_at = rpc_test_now_s();
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", rc == FERRY_OK ? "" : ferry_last_error());
    pthread_join(th, NULL);
    fprintf(stderr, "dist_autograd_fault: backward returned %s %.2f s after the kill (%s): %s\n",
            ferry_strerror(rc), failed_at - k.killed_at, c->transport, msg);
    RANK_CHECK(rc != FERRY_OK);
    RANK_CHECK(strstr(msg, "worker2"));
    RANK_CHECK(failed_at >= k.killed_at);
    RANK_CHECK(failed_at - k.killed_at < 3);
    double t0 = rpc_test_now_s();
    RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    RANK_CHECK(rpc_test_now_s() - t0 < 3);
    RANK_CHECK(check_released("worker0") == 0);
    ferry_value *none = ferry_list_of(0);
    ferry_value *v = ferry_rpc_sync("worker1", "da_release", none, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v);
    ferry_value_release(v);
    ferry_value_release(none);
    ferry_tensor_release(x);
    ferry_tensor_release(r);
    ferry_tensor_release(loss);
    return shutdown_bounded("worker0");
}

/* Serves until worker0 is done with it, so that worker0's pass sees worker2's death, not ours. */
static int relay(const rpc_case *c)
{
    if (rpc_case_join(c, 1, 3) != 0)
        return 1;
    double end = rpc_test_now_s() + 30;
    while (!atomic_load(&released) && rpc_test_now_s() < end)
        sleep_s(0.01);
    RANK_CHECK(atomic_load(&released));
    RANK_CHECK(check_released("worker1") == 0);
    return shutdown_bounded("worker1");
}

static int body_kill_worker(const rpc_case *c, int rank)
{
    if (rank == 0)
        return initiator(c);
    if (rank == 1)
        return relay(c);
    if (rpc_case_join(c, 2, 3) != 0)
        return 1;
    for (;;)
        pause(); /* serves until killed */
}

/* The state letter /proc gives pid, or '?' when it is gone. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' ? paren[2] : '?';
}

static void *kill_self(void *arg)
{
    sleep_s(KILL_AFTER_S);
    kill(getpid(), SIGKILL);
    return NULL;
}

/* worker2 starts a pass through worker0 -> worker1, whose node sleeps in backward, and is
   killed while it runs. */
static int doomed_initiator(const rpc_case *c)
{
    if (rpc_case_join(c, 2, 3) != 0)
        return 1;
    ferry_tensor *x = arange_leaf(3);
    int64_t ctx = ferry_dist_autograd_context_begin();
    ferry_tensor *r = hops("worker0", x, 1);
    RANK_CHECK(r);
    ferry_tensor *loss = ferry_sum(r);
    pthread_t th;
    RANK_CHECK(pthread_create(&th, NULL, kill_self, NULL) == 0);
    ferry_dist_autograd_backward(ctx, &loss, 1, false);
    for (;;)
        pause(); /* the pass cannot end before the kill: worker1's node still sleeps */
}

/* A survivor's part of the pass ends by itself once the initiator is dead: worker0's, which
   hears from the initiator, within 3 s; worker1's, which only hears from worker0, within 3 s
   of its node waking. */
static int survivor(const rpc_case *c, int rank)
{
    if (rpc_case_join(c, rank, 3) != 0)
        return 1;
    double end = rpc_test_now_s() + 10;
    while (ferry_dist_autograd_debug_counts().backward_passes == 0 && rpc_test_now_s() < end)
        sleep_s(0.005);
    RANK_CHECK(ferry_dist_autograd_debug_counts().backward_passes > 0);
    while (proc_state(victim) != 'Z' && proc_state(victim) != '?' && rpc_test_now_s() < end)
        sleep_s(0.005);
    double dead_at = rpc_test_now_s(), limit = rank == 0 ? 3 : backward_sleep_s + 3;
    RANK_CHECK(dead_at < end);
    while (ferry_dist_autograd_debug_counts().backward_passes > 0 &&
           rpc_test_now_s() < dead_at + limit + 1)
        sleep_s(0.005);
    double took = rpc_test_now_s() - dead_at;
    ferry_dist_autograd_counts n = ferry_dist_autograd_debug_counts();
    fprintf(stderr, "dist_autograd_fault: worker%d's part of the dead initiator's pass ended "
            "%.2f s after its death (%s; %lld contexts left)\n", rank, took, c->transport,
            (long long)n.contexts);
    RANK_CHECK(n.backward_passes == 0 && took < limit);
    /* Nobody is left to end the dead worker's context: each survivor lets go of it itself. */
    while (ferry_dist_autograd_debug_counts().contexts > 0 && rpc_test_now_s() < dead_at + limit)
        sleep_s(0.005);
    RANK_CHECK(ferry_dist_autograd_debug_counts().contexts == 0);
    if (rank == 1) {
        ferry_value *none = ferry_list_of(0);
        ferry_value *v = ferry_rpc_sync("worker0", "da_release", none, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(v);
        ferry_value_release(v);
        ferry_value_release(none);
    } else {
        while (!atomic_load(&released) && rpc_test_now_s() < dead_at + 20)
            sleep_s(0.01);
        RANK_CHECK(atomic_load(&released));
    }
    return shutdown_bounded(rank ? "worker1" : "worker0");
}

static int body_kill_initiator(const rpc_case *c, int rank)
{
    return rank == 2 ? doomed_initiator(c) : survivor(c, rank);
}

typedef int (*rank_body)(const rpc_case *c, int rank);

static pid_t fork_rank(rank_body body, const rpc_case *c, int rank)
{
    pid_t p = fork();
    if (p == 0) {
        int rc = body(c, rank);
        if (RANK_LEAK_CHECK() && rc == 0)
            rc = 99;
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    return p;
}

/* Three ranks, children of the test process: worker2 (forked first, so the others know its pid)
   must die from SIGKILL, the others succeed. */
static void run_with_victim(const char *transport, rank_body body, double node_sleep_s)
{
    register_all();
    rpc_test_set_token();
    rpc_case c = {.transport = transport, .port = ferry_test_free_port()};
    backward_sleep_s = node_sleep_s;
    fflush(stdout);
    fflush(stderr);
    victim = fork_rank(body, &c, 2);
    cr_assert(victim > 0);
    pid_t ranks[2] = {fork_rank(body, &c, 0), fork_rank(body, &c, 1)};
    int st[2] = {0, 0};
    bool done[2] = {false, false};
    double end = rpc_test_now_s() + 40;
    while ((!done[0] || !done[1]) && rpc_test_now_s() < end) {
        for (int i = 0; i < 2; i++)
            if (!done[i] && ranks[i] > 0 && waitpid(ranks[i], &st[i], WNOHANG) == ranks[i])
                done[i] = true;
        sleep_s(0.005);
    }
    for (int i = 0; i < 2; i++)
        if (!done[i] && ranks[i] > 0) {
            kill(ranks[i], SIGKILL);
            waitpid(ranks[i], &st[i], 0);
        }
    int vst = 0;
    if (waitpid(victim, &vst, WNOHANG) != victim) {
        kill(victim, SIGKILL);
        waitpid(victim, &vst, 0);
    }
    for (int i = 0; i < 2; i++) {
        cr_assert(ranks[i] > 0, "fork failed");
        cr_assert(done[i], "worker%d did not finish within 40 s", i);
        cr_assert(WIFEXITED(st[i]) && WEXITSTATUS(st[i]) == 0, "worker%d failed (status %d)", i,
                  st[i]);
    }
    cr_assert(WIFSIGNALED(vst) && WTERMSIG(vst) == SIGKILL, "worker2 was not the one killed");
}

Test(dist_autograd_fault, backward_fails_naming_the_worker_when_it_is_killed_mid_backward_tcp,
     .timeout = 50)
{
    run_with_victim("tcp", body_kill_worker, SLEEP_S);
}

Test(dist_autograd_fault, backward_fails_naming_the_worker_when_it_is_killed_mid_backward_shm,
     .timeout = 50)
{
    run_with_victim("shm", body_kill_worker, SLEEP_S);
}

Test(dist_autograd_fault, survivors_end_their_part_when_the_initiator_is_killed_mid_backward_tcp,
     .timeout = 50)
{
    run_with_victim("tcp", body_kill_initiator, 2.0);
}

Test(dist_autograd_fault, survivors_end_their_part_when_the_initiator_is_killed_mid_backward_shm,
     .timeout = 50)
{
    run_with_victim("shm", body_kill_initiator, 2.0);
}
