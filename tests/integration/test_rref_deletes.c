/* RRef deletions that ride along with later requests (rref/deletes.c): many threads on every
   worker doing remote() + to_here() + release against every other worker get each value right
   and leave every table empty; a deletion no request picks up still reaches its owner soon (the
   tick, or the pool once many wait); a remote() inside a distributed autograd context carries a
   deletion beside the context's own slots. On tcp and shm. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/autograd.h"
#include "ferry/dist_autograd.h"
#include "ferry/ops.h"
#include "ferry/rref.h"
#include "rpc_harness.h"
#include "rref_util.h"

/* ---- functions the tests call ---- */

/* make_rref(v): an RRef owned here holding v (the caller gets a confirmed user at once). */
static ferry_status make_rref_fn(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    ferry_rref *r = ferry_rref_new(ferry_list_get(args, 0));
    if (!r)
        return ferry_last_status();
    *result = ferry_rref_value(r);
    ferry_rref_release(r);
    return FERRY_OK;
}

/* owners_drain(seconds): waits until this worker owns no RRef another worker refers to; returns
   how long that took, or -1 when it did not within `seconds`. */
static ferry_status owners_drain_fn(const ferry_value *args, const ferry_value *kwargs,
                                    ferry_value **result, void *user)
{
    double limit = ferry_value_as_double(ferry_list_get(args, 0));
    double t0 = rpc_test_now_s();
    ferry_rref_debug_counts n;
    for (;;) {
        if (ferry_debug_rref_counts(&n) != FERRY_OK)
            return ferry_last_status();
        double dt = rpc_test_now_s() - t0;
        if (n.owners == 0 || dt > limit) {
            *result = ferry_double(n.owners == 0 ? dt : -1);
            return FERRY_OK;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static rref_test_barrier_state the_barrier;

static void register_all(int world)
{
    rref_test_barrier_register(&the_barrier, world);
    cr_assert(ferry_register_function("echo", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_nonblocking_function("echo_nb", rpc_test_echo, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("make_rref", make_rref_fn, NULL) == FERRY_OK);
    cr_assert(ferry_register_function("owners_drain", owners_drain_fn, NULL) == FERRY_OK);
}

/* ---- many threads, every peer ---- */

#define THREADS 6
#define ITERS 300

typedef struct {
    int rank, world, thread;
    int failures;
    char why[256];
} worker_job;

static void job_fail(worker_job *j, int i, const char *what)
{
    if (!j->failures++)
        snprintf(j->why, sizeof j->why, "thread %d iteration %d: %s (%s)", j->thread, i, what,
                 ferry_last_error());
}

/* Each iteration: remote() to the next peer in turn, of a non-blocking or a pool function, of
   an int or a small tensor; then to_here (none, once or twice) and release. */
static void *worker_thread(void *arg)
{
    worker_job *j = arg;
    for (int i = 0; i < ITERS; i++) {
        char to[32];
        int peer = (j->rank + 1 + (i + j->thread) % (j->world - 1)) % j->world;
        snprintf(to, sizeof to, "worker%d", peer);
        int64_t want = ((int64_t)j->rank << 32) | ((int64_t)j->thread << 16) | i;
        bool tensor = i % 5 == 0;
        ferry_value *x;
        if (tensor) {
            int64_t n = 3;
            ferry_tensor *t = ferry_full(1, &n, (double)(want & 0xffffff), FERRY_FLOAT64);
            x = ferry_tensor_value(t);
            ferry_tensor_release(t);
        } else {
            x = ferry_int(want);
        }
        ferry_value *a = ferry_args(1, x);
        ferry_rref *r = ferry_remote(to, i % 2 ? "echo" : "echo_nb", a, NULL,
                                     FERRY_TIMEOUT_DEFAULT);
        if (!r) {
            job_fail(j, i, "remote failed");
            ferry_value_release(a);
            continue;
        }
        int fetches = i % 7 == 3 ? 0 : i % 7 == 5 ? 2 : 1;
        for (int k = 0; k < fetches; k++) {
            ferry_value *v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
            if (!v)
                job_fail(j, i, "to_here failed");
            else if (!ferry_value_equal(v, ferry_list_get(a, 0)))
                job_fail(j, i, "to_here returned another value");
            ferry_value_release(v);
        }
        ferry_rref_release(r);
        ferry_value_release(a);
    }
    return NULL;
}

static int body_threads_against_every_peer(int rank, int world, const rpc_case *c)
{
    pthread_t th[THREADS];
    worker_job jobs[THREADS];
    for (int t = 0; t < THREADS; t++) {
        jobs[t] = (worker_job){.rank = rank, .world = world, .thread = t};
        RANK_CHECK(pthread_create(&th[t], NULL, worker_thread, &jobs[t]) == 0);
    }
    int failures = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        if (jobs[t].failures)
            fprintf(stderr, "rank %d: %d failures, first: %s\n", rank, jobs[t].failures,
                    jobs[t].why);
        failures += jobs[t].failures;
    }
    RANK_CHECK(failures == 0);
    return rref_test_check_counts_zero();
}

/* ---- deletions no request carries ---- */

/* Worker0 drops RRefs and then sends only plain calls: worker1's table must still empty by
   itself, for one RRef (the tick sends it) and for many (the pool sends them). */
static int body_deletions_reach_owner_without_requests(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        int counts[2] = {1, 200};
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < counts[k]; i++) {
                ferry_value *a = ferry_args(1, ferry_int(i));
                ferry_value *rv = ferry_rpc_sync("worker1", "make_rref", a, NULL,
                                                 FERRY_TIMEOUT_DEFAULT);
                ferry_value_release(a);
                RANK_CHECK(rv && ferry_value_kind(rv) == FERRY_VALUE_RREF);
                ferry_value_release(rv); /* the user goes: its deletion waits for a carrier */
            }
            ferry_value *a = ferry_args(1, ferry_double(5.0));
            ferry_value *dt = ferry_rpc_sync("worker1", "owners_drain", a, NULL,
                                             FERRY_TIMEOUT_DEFAULT);
            ferry_value_release(a);
            RANK_CHECK(dt && ferry_value_as_double(dt) >= 0);
            RANK_CHECK(ferry_value_as_double(dt) < 2.0);
            ferry_value_release(dt);
        }
        /* A remote() whose value is never fetched: its deletion too. */
        ferry_value *a = ferry_args(1, ferry_int(1));
        ferry_rref *r = ferry_remote("worker1", "echo_nb", a, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(a);
        RANK_CHECK(r);
        ferry_rref_release(r);
        a = ferry_args(1, ferry_double(5.0));
        ferry_value *dt = ferry_rpc_sync("worker1", "owners_drain", a, NULL,
                                         FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(a);
        RANK_CHECK(dt && ferry_value_as_double(dt) >= 0);
        ferry_value_release(dt);
    }
    return rref_test_check_counts_zero();
}

/* ---- inside a distributed autograd context ---- */

/* remote() and to_here() in a context: the requests carry the context (and, for a tensor that
   requires grad, the send's message id) beside a deletion. */
static int body_deletions_ride_with_autograd_slots(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        int64_t ctx = ferry_dist_autograd_context_begin();
        RANK_CHECK(ctx >= 0);
        for (int i = 0; i < 100; i++) {
            int64_t n = 2;
            ferry_tensor *t = ferry_full(1, &n, (double)i, FERRY_FLOAT32);
            RANK_CHECK(ferry_tensor_set_requires_grad(t, true) == FERRY_OK);
            bool tensor = i % 4 < 2;
            ferry_value *a = ferry_args(1, tensor ? ferry_tensor_value(t) : ferry_int(i));
            ferry_rref *r = ferry_remote("worker1", i % 2 ? "echo" : "echo_nb", a, NULL,
                                         FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(r);
            ferry_value *v = ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(v);
            if (tensor)
                RANK_CHECK(ferry_tensor_numel(ferry_value_as_tensor(v)) == 2);
            else
                RANK_CHECK(ferry_value_as_int(v) == i);
            ferry_value_release(v);
            ferry_rref_release(r);
            ferry_value_release(a);
            ferry_tensor_release(t);
        }
        RANK_CHECK(ferry_dist_autograd_context_end(ctx) == FERRY_OK);
    }
    return rref_test_check_counts_zero();
}

#define BOTH(name, world, body, secs)                                                     \
    Test(rref_deletes_tcp, name, .timeout = secs)                                         \
    {                                                                                     \
        register_all(world);                                                              \
        rpc_case_run("tcp", world, body, NULL, secs - 5);                                 \
    }                                                                                     \
    Test(rref_deletes_shm, name, .timeout = secs)                                         \
    {                                                                                     \
        register_all(world);                                                              \
        rpc_case_run("shm", world, body, NULL, secs - 5);                                 \
    }

BOTH(every_value_right_and_tables_empty_when_threads_hit_every_peer, 4,
     body_threads_against_every_peer, 120)
BOTH(owner_table_empties_when_no_request_follows_the_drop, 2,
     body_deletions_reach_owner_without_requests, 40)
BOTH(remote_works_when_a_deletion_rides_beside_autograd_slots, 2,
     body_deletions_ride_with_autograd_slots, 40)
