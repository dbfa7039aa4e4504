/* The module interface above rpc (rpc/module.h), seen from a small probe module of the test
   binary: its hooks run on every path a message takes (pool, progress thread, a waiting
   caller's thread that drives the fabric, remote()), the per-call slot on the wire reaches the
   peer, and thread-local call state follows the request, not the thread that happens to run it.

   The probe carries a thread's "current context" (a stand-in for distributed autograd's) in the
   message ext on send, installs the request's context around its handling and puts the
   thread's own back afterwards. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/value_impl.h"
#include "ferry/rref.h"
#include "rpc/module.h"
#include "rpc_harness.h"

#define PROBE_KEY 0x7e57u
#define NO_CTX (-1)
#define BOUNCE_CALLS 200

static _Thread_local int64_t probe_ctx = NO_CTX;
static atomic_long requests_seen, responses_seen;

static const ferry__msg_ext *find_ext(const ferry__msg *m)
{
    for (size_t i = 0; i < m->n_ext; i++)
        if (m->ext[i].key == PROBE_KEY)
            return &m->ext[i];
    return NULL;
}

static ferry_status add_ext(ferry__msg *m, int64_t v)
{
    if (m->n_ext == FERRY__MSG_MAX_EXT)
        return ferry_set_error(FERRY_EINVAL, "no room for the probe's ext");
    m->ext[m->n_ext++] = (ferry__msg_ext){PROBE_KEY, v};
    return FERRY_OK;
}

/* Requests carry the sending thread's context; a response carries its request's. */
static ferry_status probe_on_send(ferry__agent *a, void *state, int dst, ferry__msg *m,
                                  const ferry__msg *request)
{
    if (request) {
        const ferry__msg_ext *e = find_ext(request);
        return e ? add_ext(m, e->value) : FERRY_OK;
    }
    return probe_ctx == NO_CTX ? FERRY_OK : add_ext(m, probe_ctx);
}

static ferry_status probe_on_receive(ferry__agent *a, void *state, int src, ferry__msg *m)
{
    if (find_ext(m))
        atomic_fetch_add(m->type == FERRY__MSG_RESPONSE ? &responses_seen : &requests_seen, 1);
    return FERRY_OK;
}

static void probe_before(ferry__agent *a, void *state, int src, const ferry__msg *m, void **slot)
{
    const ferry__msg_ext *e = find_ext(m);
    *slot = (void *)(intptr_t)(probe_ctx + 2); /* the borrowed thread's own, kept aside */
    probe_ctx = e ? e->value : NO_CTX;
}

static void probe_after(ferry__agent *a, void *state, void *slot)
{
    probe_ctx = (int64_t)(intptr_t)slot - 2;
}

static const ferry__agent_module probe_module = {
    .name = "test-probe",
    .on_send = probe_on_send,
    .on_receive = probe_on_receive,
    .before_request = probe_before,
    .after_request = probe_after,
};

__attribute__((constructor)) static void probe_register(void)
{
    ferry__agent_register_module(&probe_module);
}

static long thread_id(void)
{
    return (long)syscall(SYS_gettid);
}

/* ---- functions ---- */

/* Non-blocking: [the context it runs in, the thread it runs on]. It scribbles on the thread's
   last error, which a borrowed thread's caller must not see. */
static ferry_status probe_read(const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    int64_t ctx = probe_ctx;
    ferry_set_error(FERRY_ENOTSUP, "callee scribble");
    *result = ferry_args(2, ferry_int(ctx), ferry_int(thread_id()));
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

/* On the pool, in the caller's context: calls probe_read back on the caller with contexts of
   its own. Returns [context it ran in, mismatches, thread ids probe_read ran on...]. */
static ferry_status bounce(const ferry_value *args, const ferry_value *kwargs,
                           ferry_value **result, void *user)
{
    const char *back = ferry_value_as_string(ferry_list_get(args, 0));
    int64_t mine = probe_ctx, mismatches = 0;
    ferry_value *out = ferry__list_new(2 + BOUNCE_CALLS);
    if (!out)
        return ferry_last_status();
    ferry_status rc = FERRY_OK;
    for (int i = 0; i < BOUNCE_CALLS && rc == FERRY_OK; i++) {
        probe_ctx = 5000 + i;
        ferry_value *r = ferry_rpc_sync(back, "probe_read", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
        if (!r) {
            rc = ferry_last_status();
            break;
        }
        mismatches += ferry_value_as_int(ferry_list_get(r, 0)) != 5000 + i;
        ferry__list_set(out, 2 + (size_t)i, ferry_int(ferry_value_as_int(ferry_list_get(r, 1))));
        ferry_value_release(r);
    }
    probe_ctx = mine;
    if (rc != FERRY_OK) {
        ferry_value_release(out); /* items not set yet are NULL, which release skips */
        return rc;
    }
    ferry__list_set(out, 0, ferry_int(mine));
    ferry__list_set(out, 1, ferry_int(mismatches));
    *result = out;
    return FERRY_OK;
}

static void register_fns(void)
{
    ferry_register_nonblocking_function("probe_read", probe_read, NULL);
    ferry_register_function("bounce", bounce, NULL);
}

static void read_bounce(const ferry_value *v, int64_t *mine, int64_t *mismatches, long tid,
                        int *on_tid, int *total)
{
    *mine = ferry_value_as_int(ferry_list_get(v, 0));
    *mismatches = ferry_value_as_int(ferry_list_get(v, 1));
    for (size_t i = 2; i < ferry_list_len(v); i++) {
        *on_tid += ferry_value_as_int(ferry_list_get(v, i)) == tid;
        (*total)++;
    }
}

/* ---- tests ---- */

static int contract_body(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    long me = thread_id();
    int on_me = 0;
    /* A waiting caller drives the fabric until it has been idle a fraction of a millisecond
       (longer while calls keep coming): on a busy machine the callee's first calls may all
       come later than that, so try until some ran here. */
    for (int attempt = 0; attempt < 50 && on_me == 0; attempt++) {
        probe_ctx = 1000 + attempt;
        ferry_set_error(FERRY_EINVAL, "caller's own error");
        ferry_value *args = ferry_args(1, ferry_string("worker0"));
        ferry_future *f = ferry_rpc_async("worker1", "bounce", args, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(args);
        RANK_CHECK(f != NULL);
        RANK_CHECK(ferry_future_wait(f, 0) == FERRY_OK);
        /* Whatever ran on this thread while it waited left no trace of its own state. */
        RANK_CHECK(probe_ctx == 1000 + attempt);
        RANK_CHECK(strstr(ferry_last_error(), "callee scribble") == NULL);
        ferry_value *v = ferry_future_value(f);
        ferry_future_release(f);
        RANK_CHECK(v != NULL);
        int64_t mine = 0, mismatches = -1;
        int total = 0;
        read_bounce(v, &mine, &mismatches, me, &on_me, &total);
        ferry_value_release(v);
        RANK_CHECK(mine == 1000 + attempt); /* the pool function ran in the caller's context */
        RANK_CHECK(mismatches == 0);        /* every probe_read saw its own caller's context */
        RANK_CHECK(total == BOUNCE_CALLS);
    }
    RANK_CHECK(on_me > 0); /* some ran on this very thread while it waited */
    probe_ctx = NO_CTX;
    return 0;
}

static int remote_body(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    probe_ctx = 77;
    ferry_rref *r = ferry_remote("worker1", "probe_read", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(r != NULL);
    ferry_value *v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v != NULL);
    RANK_CHECK(ferry_value_as_int(ferry_list_get(v, 0)) == 77);
    ferry_value_release(v);
    ferry_rref_release(r);
    /* Plain calls without a context carry none. */
    probe_ctx = NO_CTX;
    v = ferry_rpc_sync("worker1", "probe_read", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v != NULL && ferry_value_as_int(ferry_list_get(v, 0)) == NO_CTX);
    ferry_value_release(v);
    /* Every request with the probe's ext got its response with it back: 1 remote() and the
       fetch of to_here were sent with context 77; both answers came back carrying it. */
    RANK_CHECK(atomic_load(&responses_seen) >= 2);
    return 0;
}

static void run(const char *transport, rpc_body body)
{
    register_fns();
    rpc_case_run(transport, 2, body, NULL, 60);
}

Test(module_shm, waiting_callers_thread_runs_requests_in_their_own_context, .timeout = 90)
{
    run("shm", contract_body);
}

Test(module_tcp, waiting_callers_thread_runs_requests_in_their_own_context, .timeout = 90)
{
    run("tcp", contract_body);
}

Test(module_shm, remote_and_fetch_carry_the_callers_context, .timeout = 60)
{
    run("shm", remote_body);
}

Test(module_tcp, remote_and_fetch_carry_the_callers_context, .timeout = 60)
{
    run("tcp", remote_body);
}
