/* The agent as an object: the process-wide pointer to it, its references, what modules and
   users may read of it (name, rank, workers, timeouts), and the tables modules fill (handlers,
   codec) and the pool they submit to. Its life (init, shutdown) is agent.c's. */
#include "rpc/agent_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "rpc/pending.h"

/* The one process-wide agent (DESIGN section 3). `agent_lock` guards the pointer and makes init
   and shutdown exclusive; users retain the agent under it. */
static pthread_mutex_t agent_lock = PTHREAD_MUTEX_INITIALIZER;
static ferry__agent *current;

#define NOT_INITIALIZED "RPC has not been initialized. Call ferry_init_rpc first."

ferry__agent *ferry__agent_get(void)
{
    pthread_mutex_lock(&agent_lock);
    ferry__agent *a = current;
    if (a)
        ferry__ref_inc(&a->ref);
    pthread_mutex_unlock(&agent_lock);
    if (!a)
        ferry_set_error(FERRY_ESHUTDOWN, NOT_INITIALIZED);
    return a;
}

void ferry__agent_free(ferry__agent *a)
{
    for (int i = 0; a->workers && i < a->world_size; i++)
        ferry__free(a->workers[i].name);
    ferry__free(a->workers);
    ferry__device_maps_free(&a->device_maps);
    ferry__free(a->device_names);
    ferry__pending_free_table(a);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->later_lock);
    pthread_mutex_destroy(&a->pool_lock);
    pthread_rwlock_destroy(&a->net_lock);
    ferry__free(a->name);
    ferry__free(a);
}

ferry__agent *ferry__agent_retain(ferry__agent *a)
{
    if (a)
        ferry__ref_inc(&a->ref);
    return a;
}

void ferry__agent_release(ferry__agent *a)
{
    if (a && ferry__ref_dec(&a->ref))
        ferry__agent_free(a);
}

const char *ferry__agent_name(const ferry__agent *a)
{
    return a->name;
}

int ferry__agent_rank(const ferry__agent *a)
{
    return a->rank;
}

int ferry__agent_world_size(const ferry__agent *a)
{
    return a->world_size;
}

const char *ferry__agent_worker_name(const ferry__agent *a, int rank)
{
    return rank >= 0 && rank < a->world_size ? a->workers[rank].name : NULL;
}

void ferry__agent_drive_begin(ferry__agent *a)
{
    pthread_rwlock_rdlock(&a->net_lock);
    if (a->net)
        ferry__net_drive_begin(a->net);
}

bool ferry__agent_drive_poll(ferry__agent *a)
{
    return a->net && ferry__net_drive_poll(a->net) > 0;
}

void ferry__agent_drive_end(ferry__agent *a)
{
    if (a->net)
        ferry__net_drive_end(a->net);
    pthread_rwlock_unlock(&a->net_lock);
}

ferry_status ferry__agent_submit(ferry__agent *a, void (*fn)(void *), void *arg)
{
    ferry_status rc = FERRY_ESHUTDOWN;
    pthread_mutex_lock(&a->pool_lock);
    if (a->pool_open)
        rc = ferry__pool_submit(a->pool, fn, arg);
    pthread_mutex_unlock(&a->pool_lock);
    return rc;
}

void ferry__agent_set_rref_codec(ferry__agent *a, const ferry__wire_rref_hooks *hooks)
{
    a->codec.rref = *hooks;
}

void ferry__agent_set_handler(ferry__agent *a, ferry__msg_type type, ferry__msg_handler fn,
                              void *ctx)
{
    if (type > FERRY__MSG_INVALID && type < FERRY__MSG_TYPE_COUNT) {
        a->handlers[type].fn = fn;
        a->handlers[type].ctx = ctx;
    }
}

void ferry__agent_set_inline_handler(ferry__agent *a, ferry__msg_type type,
                                     ferry__msg_handler fn, void *ctx)
{
    if (type > FERRY__MSG_INVALID && type < FERRY__MSG_TYPE_COUNT) {
        a->inline_handlers[type].fn = fn;
        a->inline_handlers[type].ctx = ctx;
    }
}

/* "#<rank>" (no name has a '#'): the rank itself, or -1 when it is not one of the world's. */
static int rank_by_number(ferry__agent *a, const char *name)
{
    char *end;
    errno = 0;
    long r = strtol(name + 1, &end, 10);
    if (name[1] >= '0' && name[1] <= '9' && !*end && !errno && r >= 0 && r < a->world_size)
        return (int)r;
    ferry_set_error(FERRY_EUNKNOWN_WORKER, "worker '%s': there is no rank %s in this world of "
                    "%d (ranks 0 to %d)", a->name, name + 1, a->world_size, a->world_size - 1);
    return -1;
}

int ferry__agent_rank_of(ferry__agent *a, const char *name)
{
    if (!name)
        return a->rank;
    if (name[0] == '#')
        return rank_by_number(a, name);
    for (int i = 0; i < a->world_size; i++)
        if (strcmp(a->workers[i].name, name) == 0)
            return i;
    if (ferry__rendezvous_check_name(name) != FERRY_OK) {
        size_t len = strlen(name);
        ferry_set_error(FERRY_EINVAL, "worker '%s': '%.*s%s' is not a valid worker name (names "
                        "match [A-Za-z0-9_:-]+ and are shorter than %d characters; \"#<rank>\" "
                        "names a worker by rank)", a->name, 160, name, len > 160 ? "..." : "",
                        FERRY_MAX_NAME_LEN);
        return -1;
    }
    /* torch's words, then the names there are (the first few of a large world). */
    char known[512];
    size_t at = 0;
    int shown = a->world_size <= 8 ? a->world_size : 6;
    for (int i = 0; i < shown && at < sizeof known; i++)
        at += (size_t)snprintf(known + at, sizeof known - at, "%s'%s'",
                               i == 0 ? "" : i == a->world_size - 1 ? " and " : ", ",
                               a->workers[i].name);
    if (shown < a->world_size && at < sizeof known)
        snprintf(known + at, sizeof known - at, ", ... '%s' (%d workers)",
                 a->workers[a->world_size - 1].name, a->world_size);
    ferry_set_error(FERRY_EUNKNOWN_WORKER, "name:%s,rank:%d could not find destination name %s; "
                    "the workers are %s", a->name, a->rank, name, known);
    return -1;
}

bool ferry__agent_publish(ferry__agent *a)
{
    pthread_mutex_lock(&agent_lock);
    bool ok = current == NULL;
    if (ok)
        current = ferry__agent_retain(a); /* the process-wide pointer's reference */
    pthread_mutex_unlock(&agent_lock);
    return ok;
}

bool ferry__agent_unpublish(ferry__agent *a)
{
    pthread_mutex_lock(&agent_lock);
    bool was = current == a;
    if (was)
        current = NULL;
    pthread_mutex_unlock(&agent_lock);
    if (was)
        ferry__agent_release(a);
    return was;
}

bool ferry__agent_running(void)
{
    pthread_mutex_lock(&agent_lock);
    bool running = current != NULL;
    pthread_mutex_unlock(&agent_lock);
    return running;
}

ferry_status ferry_get_worker_info(const char *name, ferry_worker_info *out)
{
    if (!out)
        return ferry__fail(FERRY_EINVAL, "out is NULL");
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return FERRY_ESHUTDOWN;
    int r = ferry__agent_rank_of(a, name);
    ferry_status rc = r >= 0 ? FERRY_OK : ferry_last_status();
    if (r >= 0)
        *out = (ferry_worker_info){a->workers[r].name, r};
    ferry__agent_release(a);
    return rc;
}

ferry_status ferry_get_worker_info_by_rank(int rank, ferry_worker_info *out)
{
    if (!out)
        return ferry__fail(FERRY_EINVAL, "out is NULL");
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return FERRY_ESHUTDOWN;
    ferry_status rc = FERRY_OK;
    if (rank >= 0 && rank < a->world_size)
        *out = (ferry_worker_info){a->workers[rank].name, rank};
    else
        rc = ferry_set_error(FERRY_EUNKNOWN_WORKER, "worker '%s': there is no rank %d in this "
                             "world of %d (ranks 0 to %d)", a->name, rank, a->world_size,
                             a->world_size - 1);
    ferry__agent_release(a);
    return rc;
}

ferry_status ferry_get_all_worker_infos(ferry_worker_info *out, size_t cap, size_t *n)
{
    return ferry_get_worker_infos(out, cap, n);
}

ferry_status ferry_get_worker_infos(ferry_worker_info *out, size_t cap, size_t *n)
{
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return FERRY_ESHUTDOWN;
    for (int i = 0; i < a->world_size && (size_t)i < cap; i++)
        out[i] = (ferry_worker_info){a->workers[i].name, i};
    if (n)
        *n = (size_t)a->world_size;
    ferry__agent_release(a);
    return FERRY_OK;
}

double ferry_get_rpc_timeout(void)
{
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return 60.0;
    double t = atomic_load(&a->default_timeout_s);
    ferry__agent_release(a);
    return t;
}

ferry_status ferry_set_rpc_timeout(double timeout)
{
    if (!(timeout >= 0))
        return ferry__fail(FERRY_EINVAL, "RPC Timeout must be non-negative");
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return FERRY_ESHUTDOWN;
    atomic_store(&a->default_timeout_s, timeout);
    ferry__agent_release(a);
    return FERRY_OK;
}
