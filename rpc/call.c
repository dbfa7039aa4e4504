/* Starting calls: resolve the worker, register the pending call with its deadline, send the
   request. Completing them on failure paths: timeouts, peer errors and shutdown. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "rpc/agent.h"
#include "rpc/pending.h"

#define LIVENESS_PERIOD_NS 250000000LL

double ferry__agent_effective_timeout(ferry__agent *a, double timeout)
{
    if (timeout < 0)
        return atomic_load(&a->default_timeout_s);
    return timeout;
}

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

static void finish_failed(ferry__agent *a, ferry__pending *p, ferry_status rc, const char *why)
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
    ferry__free(p);
}

/* Same-host peers are checked by pid a few times a second: a worker that died fails the calls
   waiting on it at once instead of at their timeout (shm sends to a dead peer do not fail). */
static void check_liveness(ferry__agent *a, long long now_ns)
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
    check_liveness(a, now_ns);
    ferry__agent_ping_peers(a, now_ns, false);
    for (;;) {
        pthread_mutex_lock(&a->lock);
        ferry__pending *p = ferry__pending_take_expired(a, now_ns);
        pthread_mutex_unlock(&a->lock);
        if (!p)
            break;
        finish_failed(a, p, FERRY_ETIMEDOUT, NULL);
    }
}

static void fail_pending_of(ferry__agent *a, int dst, ferry_status rc, const char *why)
{
    for (;;) {
        pthread_mutex_lock(&a->lock);
        ferry__pending *p = ferry__pending_take_any(a, dst);
        pthread_mutex_unlock(&a->lock);
        if (!p)
            break;
        finish_failed(a, p, rc, why);
    }
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
    fail_pending_of(a, peer, rc == FERRY_ESHUTDOWN ? FERRY_ESHUTDOWN : FERRY_ETRANSPORT, msg);
}

void ferry__agent_fail_all_pending(ferry__agent *a, ferry_status rc, const char *why)
{
    fail_pending_of(a, -1, rc, why);
}

/* A thread waiting on a call's future polls the fabric itself (DESIGN section 4): the reply
   is then read by the thread that wants it, and no other thread has to wake. The net is held
   alive by net_lock for the length of the drive. */
static void *driver_retain(void *ctx)
{
    ferry__ref_inc(&((ferry__agent *)ctx)->ref);
    return ctx;
}

static void driver_release(void *ctx)
{
    ferry__agent_release(ctx);
}

static void driver_begin(void *ctx)
{
    ferry__agent *a = ctx;
    pthread_rwlock_rdlock(&a->net_lock);
    if (a->net)
        ferry__net_drive_begin(a->net);
}

static void driver_poll(void *ctx)
{
    ferry__agent *a = ctx;
    if (a->net)
        ferry__net_drive_poll(a->net);
}

static void driver_end(void *ctx)
{
    ferry__agent *a = ctx;
    if (a->net)
        ferry__net_drive_end(a->net);
    pthread_rwlock_unlock(&a->net_lock);
}

static const ferry__future_driver call_driver = {driver_retain, driver_release, driver_begin,
                                                 driver_poll, driver_end};

ferry_future *ferry__agent_request(ferry__agent *a, int dst, ferry__msg *m, double timeout)
{
    if (atomic_load(&a->state) != FERRY__AGENT_RUNNING)
        return ferry__fail_null(FERRY_ESHUTDOWN, "RPC is shutting down on worker '%s'", a->name);
    if (atomic_load(&a->workers[dst].dead))
        return ferry__fail_null(FERRY_ETRANSPORT, "call to '%s' on worker '%s' failed: worker '%s' "
                                "(rank %d) is unreachable", m->fn ? m->fn : "(internal)",
                                a->workers[dst].name, a->workers[dst].name, dst);
    ferry__pending *p = ferry__malloc(sizeof *p); /* each field is set below or on insert */
    ferry_future *f = ferry_future_new();
    if (!p || !f) {
        ferry__free(p);
        ferry_future_release(f);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory starting a call");
    }
    ferry__future_set_pool(f, a->pool);
    ferry__future_set_driver(f, &call_driver, a);
    timeout = ferry__agent_effective_timeout(a, timeout);
    p->id = atomic_fetch_add(&a->next_id, 1);
    p->dst = dst;
    p->timeout_s = timeout;
    p->deadline_ns = timeout > 0 ? ferry__now_ns() + (long long)(timeout * 1e9) : 0;
    p->future = ferry_future_retain(f);
    const char *fn = m->fn ? m->fn : "(internal)";
    size_t fn_len = strnlen(fn, sizeof p->fn - 1);
    memcpy(p->fn, fn, fn_len);
    p->fn[fn_len] = '\0';
    m->id = p->id;
    m->timeout_s = timeout;

    pthread_mutex_lock(&a->lock);
    ferry_status rc = ferry__pending_insert(a, p);
    pthread_mutex_unlock(&a->lock);
    if (rc != FERRY_OK) {
        ferry_future_release(p->future);
        ferry__free(p);
        ferry_future_release(f);
        return NULL;
    }
    atomic_fetch_add(&a->client_active, 1);
    rc = ferry__agent_send_msg(a, dst, m);
    if (rc != FERRY_OK) {
        /* Not sent: the call fails now, with the reason on the future and on this thread. */
        char why[512];
        snprintf(why, sizeof why, "%s", ferry_last_error());
        pthread_mutex_lock(&a->lock);
        p = ferry__pending_take(a, m->id);
        pthread_mutex_unlock(&a->lock);
        if (p)
            finish_failed(a, p, rc, why);
        ferry_future_release(f);
        ferry_set_error(rc, "%s", why);
        return NULL;
    }
    if (timeout > 0 && timeout < 0.02)
        ferry__net_wake(a->net);
    return f;
}

static ferry_status check_call_args(const char *to, const char *fn, ferry_value *args,
                                    ferry_value *kwargs, double timeout)
{
    if (!to)
        return ferry__fail(FERRY_EINVAL, "the destination worker name is NULL");
    if (!fn || !*fn)
        return ferry__fail(FERRY_EINVAL, "the function name is empty");
    if (strlen(fn) >= FERRY_MAX_NAME_LEN)
        return ferry__fail(FERRY_EINVAL, "function name '%.32s...' is too long", fn);
    if (args && ferry_value_kind(args) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "args must be a list, got %s",
                           ferry_kind_name(ferry_value_kind(args)));
    if (kwargs && ferry_value_kind(kwargs) != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_EINVAL, "kwargs must be a dict, got %s",
                           ferry_kind_name(ferry_value_kind(kwargs)));
    if (isnan(timeout) || (timeout < 0 && timeout != FERRY_TIMEOUT_DEFAULT))
        return ferry__fail(FERRY_EINVAL, "timeout must be >= 0 or FERRY_TIMEOUT_DEFAULT");
    return FERRY_OK;
}

ferry_future *ferry_rpc_async(const char *to, const char *fn, ferry_value *args,
                              ferry_value *kwargs, double timeout)
{
    if (check_call_args(to, fn, args, kwargs, timeout) != FERRY_OK)
        return NULL;
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return NULL;
    ferry_future *f = NULL;
    int dst = ferry__agent_rank_of(a, to);
    if (dst >= 0) {
        ferry__msg m = {.type = FERRY__MSG_CALL, .fn = (char *)fn, .args = args, .kwargs = kwargs};
        f = ferry__agent_request(a, dst, &m, timeout);
    }
    ferry__agent_release(a);
    return f;
}

ferry_value *ferry_rpc_sync(const char *to, const char *fn, ferry_value *args,
                            ferry_value *kwargs, double timeout)
{
    ferry_future *f = ferry_rpc_async(to, fn, args, kwargs, timeout);
    if (!f)
        return NULL;
    ferry_value *v = ferry_future_value(f);
    ferry_future_release(f);
    return v;
}
