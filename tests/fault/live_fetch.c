/* Fetches of RRefs that were never created (finding 6 of issue 9): the owner must answer them
   without a thread each, keep its pool within its cap, and still stop within its shutdown
   timeout. The fetches are crafted by hand: rank 0 asks rank 1 for RRef ids rank 1 never saw
   (as if their creator had died before its remote() arrived). The owner is rank 1 because rank
   0 hosts the rendezvous store, which lingers (up to 5 s, transport/rendezvous.c) for workers
   still connected when it leaves. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/rref.h"
#include "rpc/module.h"
#include "integration/rpc_harness.h"

#define N_FETCHES 1000
#define SHUTDOWN_TIMEOUT_S 3.0

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Polls the owner table until every fetch has reached the owner (a count, not a handshake). */
static bool wait_owners(int64_t want, double limit_s)
{
    double end = rpc_test_now_s() + limit_s;
    ferry_rref_debug_counts c;
    do {
        if (ferry_debug_rref_counts(&c) == FERRY_OK && c.owners >= want)
            return true;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    } while (rpc_test_now_s() < end);
    return false;
}

static int body_owner(void)
{
    int before = count_threads();
    RANK_CHECK(wait_owners(N_FETCHES, 20));
    /* Give blocked tasks (if any) the time to pull spares in, then count. */
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    int peak = count_threads();
    fprintf(stderr, "live_fetch: owner threads %d before the fetches, %d with %d waiting\n",
            before, peak, N_FETCHES);
    /* 4 pool threads + 8 spares at most, plus nothing else per fetch. */
    RANK_CHECK(peak - before <= 8);
    double t0 = rpc_test_now_s();
    ferry_status rc = ferry_shutdown(true, SHUTDOWN_TIMEOUT_S);
    double took = rpc_test_now_s() - t0;
    fprintf(stderr, "live_fetch: owner shutdown returned %s after %.2f s (timeout %.1f s)\n",
            ferry_strerror(rc), took, SHUTDOWN_TIMEOUT_S);
    RANK_CHECK(rc != FERRY_OK);
    RANK_CHECK(took < SHUTDOWN_TIMEOUT_S + 1.0);
    return 0;
}

static int body_requester(void)
{
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    static ferry_future *fs[N_FETCHES];
    for (int i = 0; i < N_FETCHES; i++) {
        ferry__msg m = {.type = FERRY__MSG_RREF_FETCH, .fn = "rref.to_here",
                        .rref = {0, 1000000 + i}};
        RANK_CHECK(fs[i] = ferry__agent_request(a, 1, &m, 30));
    }
    ferry__agent_release(a);
    /* The owner stops: every fetch fails (ESHUTDOWN from the owner, or ETRANSPORT once it is
       gone), long before the fetches' own 30 s. */
    double t0 = rpc_test_now_s();
    for (int i = 0; i < N_FETCHES; i++) {
        ferry_status rc = ferry_future_wait(fs[i], 15);
        RANK_CHECK(rc == FERRY_ESHUTDOWN || rc == FERRY_ETRANSPORT);
        ferry_future_release(fs[i]);
    }
    double took = rpc_test_now_s() - t0;
    fprintf(stderr, "live_fetch: the requester's fetches failed within %.2f s\n", took);
    RANK_CHECK(took < SHUTDOWN_TIMEOUT_S + 3.0);
    t0 = rpc_test_now_s();
    ferry_status rc = ferry_shutdown(true, SHUTDOWN_TIMEOUT_S);
    took = rpc_test_now_s() - t0;
    fprintf(stderr, "live_fetch: requester shutdown returned %s after %.2f s\n",
            ferry_strerror(rc), took);
    RANK_CHECK(took < SHUTDOWN_TIMEOUT_S + 1.0);
    return 0;
}

static int body(int rank, int world, const rpc_case *c)
{
    return rank == 1 ? body_owner() : body_requester();
}

static int join_small(int rank, int world, void *arg)
{
    rpc_case *c = arg;
    char buf[32], name[32];
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", c->port);
    setenv("MASTER_PORT", buf, 1);
    snprintf(buf, sizeof buf, "%d", rank);
    setenv("RANK", buf, 1);
    setenv("WORLD_SIZE", "2", 1);
    setenv("FERRY_TRANSPORT", c->transport, 1);
    snprintf(name, sizeof name, "worker%d", rank);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.rpc_timeout = 20;
    o.num_worker_threads = 4;
    o.max_spare_threads = 8;
    if (ferry_init_rpc(name, -1, 0, &o) != FERRY_OK) {
        fprintf(stderr, "rank %d: init failed: %s\n", rank, ferry_last_error());
        return 1;
    }
    return body(rank, world, c);
}

static void run(const char *transport)
{
    setenv("FERRY_AUTH_TOKEN", "live-fetch-test", 1);
    rpc_case c = {.transport = transport, .port = ferry_test_free_port()};
    ferry_test_run_ranks(2, join_small, &c, 40);
}

Test(live_fetch, owner_keeps_threads_and_shutdown_bounded_when_1000_rrefs_never_created_shm,
     .timeout = 50)
{
    run("shm");
}

Test(live_fetch, owner_keeps_threads_and_shutdown_bounded_when_1000_rrefs_never_created_tcp,
     .timeout = 50)
{
    run("tcp");
}
