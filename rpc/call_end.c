/* Ending calls that get no response: a deadline passed, the peer died, the agent is shutting
   down, or the request could not be sent. Each completes its call's future with the reason,
   naming the function and the worker, and takes it out of the pending table. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>

#include "core/alloc.h"
#include "core/future_impl.h"
#include "rpc/agent_impl.h"
#include "rpc/pending.h"

/* torch's wording, plus what was called where. */
static void fail_timeout(ferry__agent *a, ferry__pending *p)
{
    char why[512];
    snprintf(why, sizeof why,
             "RPC ran for more than set timeout (%lld ms) and will now be marked with an error "
             "(call to '%s' on worker '%s')",
             (long long)llround(p->timeout_s * 1000), p->fn, a->workers[p->dst].name);
    ferry_future_set_error(p->future, FERRY_ETIMEDOUT, why);
}

void ferry__agent_finish_failed(ferry__agent *a, ferry__pending *p, ferry_status rc,
                                const char *why)
{
    char msg[768];
    atomic_fetch_sub(&a->client_active, 1);
    if (rc == FERRY_ETIMEDOUT) {
        fail_timeout(a, p);
    } else {
        snprintf(msg, sizeof msg, "call to '%s' on worker '%s' failed: %s", p->fn,
                 a->workers[p->dst].name, why);
        ferry_future_set_error(p->future, rc, msg);
    }
    ferry_future_release(p->future);
    ferry__pending_free(p);
}

void ferry__agent_expire_calls(ferry__agent *a, long long now_ns)
{
    for (;;) {
        pthread_mutex_lock(&a->lock);
        ferry__pending *p = ferry__pending_take_expired(a, now_ns);
        pthread_mutex_unlock(&a->lock);
        if (!p)
            break;
        ferry__agent_finish_failed(a, p, FERRY_ETIMEDOUT, NULL);
    }
}

void ferry__agent_fail_calls_to(ferry__agent *a, int dst, ferry_status rc, const char *why)
{
    for (;;) {
        pthread_mutex_lock(&a->lock);
        ferry__pending *p = ferry__pending_take_any(a, dst);
        pthread_mutex_unlock(&a->lock);
        if (!p)
            break;
        ferry__agent_finish_failed(a, p, rc, why);
    }
}

void ferry__agent_fail_all_pending(ferry__agent *a, ferry_status rc, const char *why)
{
    ferry__agent_fail_calls_to(a, -1, rc, why);
}

