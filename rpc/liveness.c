/* Liveness of peers: how a dead worker becomes known, and what its death does. Same-host peers
   are checked by pid a few times a second (shm sends to a dead process do not fail). For a
   process on another host that dies, nothing tells us: its calls would wait until their timeout
   (the tcp transport keeps trying to reconnect rather than failing sends). So while calls wait
   (and during the graceful shutdown rounds) each live remote peer gets a small ping about once a
   second. Pings are answered where they are read, never queued behind the peer's pool, so a live
   peer answers in milliseconds however busy its functions are; a peer that does not answer
   within PING_TIMEOUT_S is taken for dead. A dead peer's waiting calls fail at once, and later
   calls to it fail immediately. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>

#include "core/alloc.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "rpc/agent_impl.h"

#define LIVENESS_PERIOD_NS 250000000LL

#define PING_PERIOD_NS 1000000000LL
#define PING_TIMEOUT_S 3.0

typedef struct {
    ferry__agent *agent;
    int peer;
} ping_ctx;

static void ping_done(ferry_future *f, void *arg)
{
    ping_ctx *p = arg;
    ferry__agent *a = p->agent;
    if (ferry_future_status(f) == FERRY_ETIMEDOUT)
        ferry__agent_on_peer_error(a, p->peer, FERRY_ETRANSPORT,
                                   "it did not answer a heartbeat within 3 s");
    atomic_fetch_sub(&a->pings_in_flight, 1);
    ferry__agent_release(a);
    ferry__free(p);
}

static void ping(ferry__agent *a, int peer)
{
    ping_ctx *p = ferry__malloc(sizeof *p);
    if (!p)
        return;
    ferry__msg m = {.type = FERRY__MSG_PING};
    atomic_fetch_add(&a->pings_in_flight, 1);
    ferry_future *f = ferry__agent_request(a, peer, &m, PING_TIMEOUT_S);
    if (!f) {
        atomic_fetch_sub(&a->pings_in_flight, 1);
        ferry__free(p);
        return;
    }
    ferry__ref_inc(&a->ref);
    *p = (ping_ctx){a, peer};
    if (ferry__future_on_done(f, ping_done, p) != FERRY_OK)
        ping_done(f, p);
    ferry_future_release(f);
}

void ferry__agent_ping_peers(ferry__agent *a, long long now_ns, bool all)
{
    if (atomic_load(&a->state) != FERRY__AGENT_RUNNING)
        return;
    if (!all) {
        pthread_mutex_lock(&a->lock);
        size_t waiting = a->pending_len;
        pthread_mutex_unlock(&a->lock);
        if (waiting <= (size_t)atomic_load(&a->pings_in_flight))
            return; /* nothing but pings is waiting */
    }
    for (int i = 0; i < a->world_size; i++) {
        ferry__worker *w = &a->workers[i];
        if (i == a->rank || w->same_host || atomic_load(&w->dead))
            continue;
        long long last = atomic_load(&w->last_ping_ns);
        if (now_ns - last < PING_PERIOD_NS ||
            !atomic_compare_exchange_strong(&w->last_ping_ns, &last, now_ns))
            continue;
        ping(a, i);
    }
}

ferry_status ferry__agent_ping_handler(ferry__agent *a, int src, ferry__msg *m,
                                       ferry_value **result, void *ctx)
{
    *result = NULL;
    return FERRY_OK;
}

/* Same-host peers are checked by pid a few times a second: a worker that died fails the calls
   waiting on it at once instead of at their timeout. */
static void check_pids(ferry__agent *a, long long now_ns)
{
    if (now_ns - a->last_liveness_ns < LIVENESS_PERIOD_NS)
        return;
    a->last_liveness_ns = now_ns;
    for (int i = 0; i < a->world_size; i++) {
        ferry__worker *w = &a->workers[i];
        if (w->same_host && !atomic_load(&w->dead) && kill(w->pid, 0) != 0 && errno == ESRCH)
            ferry__agent_on_peer_error(a, i, FERRY_ETRANSPORT, "its process exited");
    }
}

void ferry__agent_on_tick(void *ctx, long long now_ns)
{
    ferry__agent *a = ctx;
    check_pids(a, now_ns);
    ferry__agent_ping_peers(a, now_ns, false);
    ferry__agent_expire_calls(a, now_ns);
}

void ferry__agent_on_peer_error(void *ctx, int peer, ferry_status rc, const char *why)
{
    ferry__agent *a = ctx;
    if (peer < 0 || peer >= a->world_size)
        return;
    char msg[512];
    snprintf(msg, sizeof msg, "worker '%s' (rank %d) is unreachable: %s", a->workers[peer].name,
             peer, why);
    if (!atomic_exchange(&a->workers[peer].dead, true))
        ferry__log_warn("rpc", "%s", msg);
    ferry__agent_fail_calls_to(a, peer, rc == FERRY_ESHUTDOWN ? FERRY_ESHUTDOWN : FERRY_ETRANSPORT,
                               msg);
}
