/* Starting calls: resolve the worker, register the pending call with its deadline, send the
   request, and let a thread that waits on the call drive the fabric. call_end.c completes calls
   that get no response; liveness.c finds dead peers. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "core/value_lent.h"
#include "rpc/agent_impl.h"
#include "rpc/pending.h"

double ferry__agent_effective_timeout(ferry__agent *a, double timeout)
{
    if (timeout < 0)
        return atomic_load(&a->default_timeout_s);
    return timeout;
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
    ferry__agent_drive_begin(ctx);
}

static bool driver_poll(void *ctx)
{
    return ferry__agent_drive_poll(ctx);
}

static void driver_end(void *ctx)
{
    ferry__agent_drive_end(ctx);
}

static const ferry__future_driver call_driver = {driver_retain, driver_release, driver_begin,
                                                 driver_poll, driver_end};

ferry_future *ferry__agent_request(ferry__agent *a, int dst, ferry__msg *m, double timeout)
{
    if (atomic_load(&a->state) != FERRY__AGENT_RUNNING)
        return ferry__fail_null(FERRY_ESHUTDOWN, "RPC is shutting down on worker '%s'", a->name);
    ferry__worker *w = &a->workers[dst];
    bool dead = atomic_load(&w->dead);
    /* A silent peer still gets its pings: they are how it comes back. */
    if (dead || (m->type != FERRY__MSG_PING && atomic_load(&w->silent)))
        return ferry__fail_null(FERRY_ETRANSPORT, "call to '%s' on worker '%s' failed: worker '%s' "
                                "(rank %d%s) is unreachable%s", m->fn ? m->fn : "(internal)",
                                w->name, w->name, dst, ferry__agent_peer_role(a, dst),
                                dead ? "" : ": it has not answered its heartbeats lately");
    ferry__pending *p = ferry__pending_new(); /* each field is set below or on insert */
    ferry_future *f = ferry_future_new();
    if (!p || !f) {
        ferry__pending_free(p);
        ferry_future_release(f);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory starting a call");
    }
    ferry__future_set_pool(f, a->pool);
    ferry__future_init_driver(f, &call_driver, a); /* f is not shared yet */
    timeout = ferry__agent_effective_timeout(a, timeout);
    p->id = atomic_fetch_add(&a->next_id, 1);
    p->dst = dst;
    p->timeout_s = timeout;
    p->start_ns = ferry__now_ns();
    p->deadline_ns = timeout > 0 ? p->start_ns + (long long)(timeout * 1e9) : 0;
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
        ferry__pending_free(p);
        ferry_future_release(f);
        return NULL;
    }
    atomic_fetch_add(&a->client_active, 1);
    rc = ferry__agent_send_msg(a, dst, m, NULL);
    if (rc != FERRY_OK) {
        /* Not sent: the call fails now, with the reason on the future and on this thread. */
        char why[512];
        snprintf(why, sizeof why, "%s", ferry_last_error());
        pthread_mutex_lock(&a->lock);
        p = ferry__pending_take(a, m->id);
        pthread_mutex_unlock(&a->lock);
        if (p)
            ferry__agent_finish_failed(a, p, rc, why);
        ferry_future_release(f);
        ferry_set_error(rc, "%s", why);
        return NULL;
    }
    if (timeout > 0 && timeout < 0.02)
        ferry__net_wake(a->net);
    return f;
}

static ferry_status check_call_args(const char *to, const char *fn, const ferry_value *args,
                                    const ferry_value *kwargs, double timeout)
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

ferry_future *ferry_rpc_async(const char *to, const char *fn, const ferry_value *args,
                              const ferry_value *kwargs, double timeout)
{
    if (check_call_args(to, fn, args, kwargs, timeout) != FERRY_OK)
        return NULL;
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return NULL;
    ferry_future *f = NULL;
    int dst = ferry__agent_rank_of(a, to);
    if (dst >= 0) {
        ferry__msg m = {.type = FERRY__MSG_CALL, .fn = (char *)fn, .args = ferry__value_lent(args),
                        .kwargs = ferry__value_lent(kwargs)};
        f = ferry__agent_request(a, dst, &m, timeout);
    }
    /* A caller that keeps calls in flight reads their replies itself, one pass per call it
       starts, and the progress thread backs off meanwhile: on a machine with few cores the
       replies are then read by a thread that runs anyway, not by one more that spins. */
    if (f && atomic_load(&a->client_active) > 1) {
        ferry__agent_drive_begin(a);
        ferry__agent_drive_poll(a);
        ferry__agent_drive_end(a);
    }
    ferry__agent_release(a);
    return f;
}

ferry_value *ferry_rpc_sync(const char *to, const char *fn, const ferry_value *args,
                            const ferry_value *kwargs, double timeout)
{
    ferry_future *f = ferry_rpc_async(to, fn, args, kwargs, timeout);
    if (!f)
        return NULL;
    ferry_value *v = ferry_future_value(f);
    ferry_future_release(f);
    return v;
}
