/* A request of a kind this build does not know (finding 8 of issue 9) is answered with
   FERRY_ENOTSUP instead of being dropped, so its caller does not wait out its timeout. The
   test crafts one by hand: rank 0 starts a slow call, then sends rank 1 a message carrying
   that call's id whose body is field 18 (no such kind); rank 1's refusal completes the call
   long before the slow function would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integration/rpc_harness.h"
#include "rpc/agent_impl.h"
#include "rpc/wire.h"

static void sent(void *arg, ferry_status rc)
{
    ferry_future_set_value(arg, NULL);
}

/* The ping envelope of `m` with its body (field 15, empty) renumbered 18. */
static size_t craft(const ferry__msg *m, uint8_t *buf, size_t cap)
{
    ferry__wire_out out;
    if (ferry__wire_encode(m, NULL, &out) != FERRY_OK)
        return 0;
    size_t n = 4;
    const uint8_t *h = out.header;
    for (size_t i = 0; i < out.header_len && n + 3 < cap; i++) {
        if (h[i] == (15 << 3 | 2) && i + 1 < out.header_len && h[i + 1] == 0) {
            buf[n++] = (uint8_t)(18 << 3 | 2 | 0x80); /* tag 18, length-delimited */
            buf[n++] = 0x01;
        } else {
            buf[n++] = h[i];
        }
    }
    uint32_t hl = (uint32_t)(n - 4);
    for (int i = 0; i < 4; i++)
        buf[i] = (uint8_t)(hl >> (8 * i));
    ferry__wire_out_free(&out);
    return n;
}

static int body(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    /* Connected first, so connection set-up is not timed below. */
    ferry_value *one = ferry_args(1, ferry_int(1));
    ferry_value *v = ferry_rpc_sync("worker1", "echo", one, NULL, 20);
    RANK_CHECK(v);
    ferry_value_release(v);
    ferry_value_release(one);
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    ferry_value *slow = ferry_args(1, ferry_double(6.0));
    ferry__msg call = {.type = FERRY__MSG_CALL, .fn = "sleep", .args = slow};
    double t0 = rpc_test_now_s();
    ferry_future *f = ferry__agent_request(a, 1, &call, 20);
    RANK_CHECK(f);
    ferry_value_release(slow);
    ferry__msg odd = {.type = FERRY__MSG_PING, .id = call.id, .src = 0};
    static uint8_t buf[256];
    size_t len = craft(&odd, buf, sizeof buf);
    RANK_CHECK(len > 4);
    ferry_future *done = ferry_future_new();
    struct iovec iov = {buf, len};
    pthread_rwlock_rdlock(&a->net_lock);
    ferry_status rc = ferry__net_send(a->net, 1, &iov, 1, sent, done);
    pthread_rwlock_unlock(&a->net_lock);
    RANK_CHECK(rc == FERRY_OK);
    RANK_CHECK(ferry_future_wait(done, 5) == FERRY_OK);
    RANK_CHECK(ferry_future_wait(f, 10) == FERRY_ENOTSUP);
    double took = rpc_test_now_s() - t0;
    fprintf(stderr, "live_unknown: answered %s after %.2f s: %s\n", c->transport, took,
            ferry_future_error(f));
    RANK_CHECK(took < 3.0); /* the sleep would answer after 6 s */
    ferry_future_release(f);
    ferry_future_release(done);
    ferry__agent_release(a);
    return 0;
}

Test(live_unknown, unknown_kind_is_answered_with_enotsup_when_received, .timeout = 40)
{
    setenv("FERRY_AUTH_TOKEN", "live-unknown-test", 1);
    ferry_register_function("sleep", rpc_test_sleep, NULL);
    ferry_register_function("echo", rpc_test_echo, NULL);
    rpc_case_run("tcp", 2, body, NULL, 35);
}
