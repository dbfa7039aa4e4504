/* Two hosts over a bad link (issue 9): run.sh adds 20 ms of delay and 1% loss (tc netem) on
   the link between the namespaces. 200 echo calls with tensors of 1 to 16 Ki floats, ten in
   flight at a time, all come back with their values, and the heartbeat takes nobody for
   unreachable (a false death would fail calls with FERRY_ETRANSPORT). Exit status 0 on
   success. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ferry/ferry.h"

#define NETNS_PROG "netem_echo"
#include "tests/netns/netns_util.h"

#define CALLS 200
#define WINDOW 10

static ferry_tensor *make(int i)
{
    static const int64_t sizes[] = {1, 100, 1000, 16384};
    int64_t n = sizes[i % 4];
    ferry_tensor *t = ferry_tensor_empty(1, &n, FERRY_FLOAT32, (ferry_device){0});
    float *d = t ? ferry_tensor_data(t) : NULL;
    for (int64_t k = 0; d && k < n; k++)
        d[k] = (float)(i * 100003 + k);
    return t;
}

static bool same(const ferry_tensor *a, ferry_value *v)
{
    const ferry_tensor *b = ferry_value_as_tensor(v);
    if (!b || ferry_tensor_numel(a) != ferry_tensor_numel(b))
        return false;
    const float *x = ferry_tensor_data_const(a), *y = ferry_tensor_data_const(b);
    for (int64_t k = 0; k < ferry_tensor_numel(a); k++)
        if (x[k] != y[k])
            return false;
    return true;
}

static int caller(void)
{
    double t0 = now_s();
    for (int base = 0; base < CALLS; base += WINDOW) {
        ferry_tensor *ts[WINDOW];
        ferry_future *fs[WINDOW];
        for (int j = 0; j < WINDOW; j++) {
            ts[j] = make(base + j);
            CHECK(ts[j]);
            ferry_value *args = ferry_args(1, ferry_tensor_value(ts[j]));
            fs[j] = ferry_rpc_async("echoer", "echo", args, NULL, 60);
            ferry_value_release(args);
            CHECK(fs[j]);
        }
        for (int j = 0; j < WINDOW; j++) {
            ferry_value *v = ferry_future_value(fs[j]);
            CHECK(v && same(ts[j], v));
            ferry_value_release(v);
            ferry_future_release(fs[j]);
            ferry_tensor_release(ts[j]);
        }
    }
    printf("netem_echo: %d echo calls correct in %.1f s, no false death\n", CALLS,
           now_s() - t0);
    return 0;
}

int main(void)
{
    int rank = atoi(getenv("RANK") ? getenv("RANK") : "0");
    CHECK(ferry_register_function("echo", echo, NULL) == FERRY_OK);
    CHECK(ferry_init_rpc(rank ? "echoer" : "caller", -1, 0, NULL) == FERRY_OK);
    int rc = rank == 0 ? caller() : 0;
    ferry_status st = ferry_shutdown(true, 60);
    if (st != FERRY_OK)
        fprintf(stderr, "netem_echo: shutdown: %s\n", ferry_last_error());
    return rc ? rc : st != FERRY_OK;
}
