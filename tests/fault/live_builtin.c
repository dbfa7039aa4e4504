/* A long builtin causes no false death (finding 5 of issue 9): torch.ones of hundreds of MiB
   runs for longer than the heartbeat's whole miss window (period 0.2 s, 3 misses), and the
   caller, whose call waits all that time and so pings the callee, must not take the callee for
   unreachable: builtins run on the pool, and pings are answered where they are read. Also: a
   builtin past builtin_max_bytes fails with FERRY_EINVAL naming the cap, before allocating.
   Both ranks share this host, whose peers are watched by pid rather than pinged, so the caller
   treats the callee as a peer on another host (a test hook on the agent's worker table, set
   before any call) to put the heartbeat to work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/rref.h"
#include "integration/rpc_harness.h"
#include "rpc/agent_impl.h"

#define PERIOD_S 0.2
#define MISSES 3

static int join(int rank, int world, const rpc_case *c)
{
    char buf[32], name[32];
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", c->port);
    setenv("MASTER_PORT", buf, 1);
    snprintf(buf, sizeof buf, "%d", rank);
    setenv("RANK", buf, 1);
    snprintf(buf, sizeof buf, "%d", world);
    setenv("WORLD_SIZE", buf, 1);
    setenv("FERRY_TRANSPORT", c->transport, 1);
    snprintf(name, sizeof name, "worker%d", rank);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.rpc_timeout = 60;
    o.heartbeat_period_s = PERIOD_S;
    o.heartbeat_misses = MISSES;
    o.builtin_max_bytes = 4LL << 30;
    ferry_status rc = ferry_init_rpc(name, -1, 0, &o);
    if (rc != FERRY_OK)
        fprintf(stderr, "rank %d: init failed: %s\n", rank, ferry_last_error());
    return rc == FERRY_OK ? 0 : 1;
}

/* remote() keeps the tensor on its owner, so only the callee pays for the size; the sum proves
   the value is there. Returns the seconds the creation took, or -1. */
static double make_ones(int64_t n)
{
    ferry_value *dims = ferry_list_of(1, ferry_int(n));
    ferry_value *kwargs = ferry_dict_new();
    ferry_value *dt = ferry_string("float64");
    ferry_dict_set(kwargs, "dtype", dt);
    ferry_value_release(dt);
    ferry_value *a = ferry_list_of(1, dims);
    double t0 = rpc_test_now_s();
    ferry_rref *r = ferry_remote("worker1", "torch.ones", a, kwargs, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(a);
    ferry_value_release(kwargs);
    if (!r)
        return -1;
    ferry_value *sum = ferry_rref_rpc_sync(r, "torch.sum", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    double took = rpc_test_now_s() - t0;
    bool ok = sum && ferry_rref_confirmed_by_owner(r) &&
              ferry_tensor_item(ferry_value_as_tensor(sum)) == (double)n;
    if (!ok)
        fprintf(stderr, "live_builtin: torch.ones(%lld) failed: %s\n", (long long)n,
                ferry_last_error());
    ferry_value_release(sum);
    ferry_rref_release(r);
    return ok ? took : -1;
}

static int body(int rank, int world, void *arg)
{
    const rpc_case *c = arg;
    if (join(rank, world, c) != 0)
        return 1;
    if (rank == 0) {
        ferry__agent *a = ferry__agent_get();
        RANK_CHECK(a);
        a->workers[1].same_host = false;
        ferry__agent_release(a);
        /* A call is pinged once it has waited a period; its peer is unreachable a miss window
           after that ping. */
        double window = PERIOD_S * MISSES, took = 0, needed = PERIOD_S + window;
        /* Double the size until one creation outlasts that twice over (machines differ); 2 GiB
           at most. */
        for (int64_t n = 32LL << 20; n <= 256LL << 20 && took < 2 * needed; n *= 2) {
            took = make_ones(n);
            RANK_CHECK(took > 0);
            fprintf(stderr, "live_builtin: torch.ones(%lld) float64 (%lld MiB) took %.2f s with "
                    "a %.1f s miss window; no false death\n", (long long)n,
                    (long long)(n * 8 >> 20), took, window);
        }
        RANK_CHECK(took > needed);
        /* And the worker still answers plain calls. Dropping gigabytes can stall the callee's
           whole process for longer than this short miss window on a loaded machine (munmap
           holds the address space): it may be silent for a moment, never dead. */
        ferry_value *one = ferry_args(1, ferry_int(7));
        ferry_value *v = NULL;
        for (double end = rpc_test_now_s() + 10; !v && rpc_test_now_s() < end;) {
            v = ferry_rpc_sync("worker1", "echo", one, NULL, FERRY_TIMEOUT_DEFAULT);
            RANK_CHECK(v || ferry_last_status() == FERRY_ETRANSPORT);
            if (!v)
                nanosleep(&(struct timespec){0, 20000000}, NULL); /* polling for the recovery */
        }
        RANK_CHECK(v && ferry_value_as_int(v) == 7);
        a = ferry__agent_get();
        RANK_CHECK(a && !atomic_load(&a->workers[1].dead));
        ferry__agent_release(a);
        ferry_value_release(v);
        ferry_value_release(one);
        /* Past the cap: refused before anything is allocated. */
        ferry_value *big = ferry_args(2, ferry_int(1 << 20), ferry_int(1 << 20));
        v = ferry_rpc_sync("worker1", "torch.zeros", big, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(!v && ferry_last_status() == FERRY_EREMOTE);
        RANK_CHECK(strstr(ferry_last_error(), "builtin_max_bytes"));
        ferry_value_release(big);
        /* Broadcasting counts too: (1<<17, 1) + (1, 1<<17) is 64 GiB of float32. */
        int64_t col[2] = {1 << 17, 1}, row[2] = {1, 1 << 17};
        ferry_tensor *tc = ferry_ones(2, col, FERRY_FLOAT32);
        ferry_tensor *tr = ferry_ones(2, row, FERRY_FLOAT32);
        ferry_value *ab = ferry_args(2, ferry_tensor_value(tc), ferry_tensor_value(tr));
        ferry_tensor_release(tc);
        ferry_tensor_release(tr);
        v = ferry_rpc_sync("worker1", "torch.add", ab, NULL, FERRY_TIMEOUT_DEFAULT);
        RANK_CHECK(!v && strstr(ferry_last_error(), "builtin_max_bytes"));
        ferry_value_release(ab);
    }
    ferry_status rc = ferry_shutdown(true, 30);
    RANK_CHECK(rc == FERRY_OK);
    return 0;
}

static void run(const char *transport)
{
    setenv("FERRY_AUTH_TOKEN", "live-builtin-test", 1);
    ferry_register_function("echo", rpc_test_echo, NULL);
    rpc_case c = {.transport = transport, .port = ferry_test_free_port()};
    ferry_test_run_ranks(2, body, &c, 100);
}

Test(live_builtin, long_torch_ones_causes_no_false_death_when_period_is_short_shm, .timeout = 110)
{
    run("shm");
}

Test(live_builtin, long_torch_ones_causes_no_false_death_when_period_is_short_tcp, .timeout = 110)
{
    run("tcp");
}
