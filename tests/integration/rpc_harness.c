/* Multi-worker RPC test harness (see rpc_harness.h). */
#include "rpc_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

ferry_status rpc_test_echo(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                           void *user)
{
    *result = ferry_list_len(args) == 1 ? ferry_value_retain(ferry_list_get(args, 0))
                                        : ferry_value_retain((ferry_value *)args);
    return FERRY_OK;
}

ferry_status rpc_test_whoami(const ferry_value *args, const ferry_value *kwargs,
                             ferry_value **result, void *user)
{
    ferry_worker_info me;
    ferry_status rc = ferry_get_worker_info(NULL, &me);
    if (rc != FERRY_OK)
        return rc;
    *result = ferry_string(me.name);
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

ferry_status rpc_test_sleep(const ferry_value *args, const ferry_value *kwargs,
                            ferry_value **result, void *user)
{
    double s = ferry_value_as_double(ferry_list_get(args, 0));
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
    *result = ferry_string("slept");
    return FERRY_OK;
}

double rpc_test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int rpc_case_join(const rpc_case *c, int rank, int world)
{
    char buf[32], name[32];
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", c->port);
    setenv("MASTER_PORT", buf, 1);
    snprintf(buf, sizeof buf, "%d", rank);
    setenv("RANK", buf, 1);
    snprintf(buf, sizeof buf, "%d", world);
    setenv("WORLD_SIZE", buf, 1);
    if (c->transport)
        setenv("FERRY_TRANSPORT", c->transport, 1);
    snprintf(name, sizeof name, "worker%d", rank);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.rpc_timeout = 20;
    if (ferry_init_rpc(name, -1, 0, &o) != FERRY_OK) {
        fprintf(stderr, "rank %d: init failed: %s\n", rank, ferry_last_error());
        return 1;
    }
    return 0;
}

typedef struct {
    rpc_case c;
    rpc_body body;
} run_arg;

static int run_rank(int rank, int world, void *arg)
{
    run_arg *ra = arg;
    if (rpc_case_join(&ra->c, rank, world) != 0)
        return 1;
    int rc = ra->body(rank, world, &ra->c);
    ferry_worker_info me;
    if (ferry_get_worker_info(NULL, &me) == FERRY_ESHUTDOWN)
        return rc; /* the body shut down itself */
    if (ferry_shutdown(true, 30) != FERRY_OK) {
        fprintf(stderr, "rank %d: shutdown failed: %s\n", rank, ferry_last_error());
        return rc ? rc : 1;
    }
    return rc;
}

void rpc_test_set_token(void)
{
    /* Different per test case (ranks of one case share it: set before they fork). */
    char token[64];
    snprintf(token, sizeof token, "test-%d-%.0f", (int)getpid(), rpc_test_now_s() * 1e6);
    setenv("FERRY_AUTH_TOKEN", token, 1);
}

void rpc_case_run(const char *transport, int world, rpc_body body, void *user, double deadline_s)
{
    rpc_test_set_token();
    run_arg ra = {.c = {.transport = transport, .port = ferry_test_free_port(), .user = user},
                  .body = body};
    ferry_test_run_ranks(world, run_rank, &ra, deadline_s);
}
