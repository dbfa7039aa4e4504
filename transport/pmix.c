/* PMIx client session and collectives (see pmix.h). The fences run non-blocking so a wait can
   stop when the agent learns a peer is gone: the completion callback's state is shared by the
   caller and the callback and freed by whichever is last, since a wait that gives up leaves the
   fence running inside the PMIx library. */
#include "transport/pmix.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

bool ferry__pmix_env_present(void)
{
    extern char **environ;
    if (!getenv("PMIX_RANK") || !getenv("PMIX_NAMESPACE"))
        return false;
    for (char **e = environ; e && *e; e++)
        if (!strncmp(*e, "PMIX_SERVER_URI", 15))
            return true;
    return false;
}

#ifndef FERRY_HAVE_PMIX

bool ferry__pmix_built(void)
{
    return false;
}

static ferry_status not_built(void)
{
    return ferry__fail(FERRY_EINVAL,
                       "init_method pmix:// needs PMIx, but ferry was built without it (install "
                       "libpmix-dev and rebuild), or use env:// with MASTER_ADDR and MASTER_PORT");
}

ferry_status ferry__pmix_identity_get(ferry__pmix_identity *id)
{
    (void)id;
    return not_built();
}

ferry_status ferry__pmix_allgather(const char *key, const void *data, size_t len, void ***out,
                                   size_t **lens, double timeout_s, ferry__pmix_abort_fn abort_fn,
                                   void *abort_ctx)
{
    (void)key, (void)data, (void)len, (void)out, (void)lens, (void)timeout_s, (void)abort_fn;
    (void)abort_ctx;
    return not_built();
}

ferry_status ferry__pmix_barrier(const char *what, double timeout_s, ferry__pmix_abort_fn abort_fn,
                                 void *abort_ctx)
{
    (void)what, (void)timeout_s, (void)abort_fn, (void)abort_ctx;
    return not_built();
}

#else /* FERRY_HAVE_PMIX */

#include <pmix.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#define SLICE_S 0.25

static pthread_mutex_t session_lock = PTHREAD_MUTEX_INITIALIZER;
static bool session_open;
static pmix_proc_t self;
static ferry__pmix_identity identity;

bool ferry__pmix_built(void)
{
    return true;
}

static void session_close(void)
{
    pthread_mutex_lock(&session_lock);
    if (session_open)
        PMIx_Finalize(NULL, 0);
    session_open = false;
    pthread_mutex_unlock(&session_lock);
}

/* A uint-typed value of key for proc, or -1. */
static int get_int(const pmix_proc_t *proc, const char *key)
{
    pmix_value_t *v = NULL;
    if (PMIx_Get(proc, key, NULL, 0, &v) != PMIX_SUCCESS || !v)
        return -1;
    long n = -1;
    switch (v->type) {
    case PMIX_UINT32: n = (long)v->data.uint32; break;
    case PMIX_UINT16: n = (long)v->data.uint16; break;
    case PMIX_INT: n = v->data.integer; break;
    case PMIX_UINT: n = (long)v->data.uint; break;
    case PMIX_PROC_RANK: n = (long)v->data.rank; break;
    default: break;
    }
    PMIX_VALUE_RELEASE(v);
    return n >= 0 && n <= 0x7fffffff ? (int)n : -1;
}

/* Called with session_lock held. */
static ferry_status session_start(void)
{
    if (session_open)
        return FERRY_OK;
    if (!ferry__pmix_env_present())
        return ferry__fail(FERRY_EINVAL,
                           "init_method pmix:// needs a PMIx launcher (mpirun, srun --mpi=pmix), "
                           "but PMIX_RANK, PMIX_NAMESPACE or PMIX_SERVER_URI is not set");
    pmix_status_t st = PMIx_Init(&self, NULL, 0);
    if (st != PMIX_SUCCESS)
        return ferry__fail(FERRY_ETRANSPORT, "the PMIx server did not answer PMIx_Init: %s",
                           PMIx_Error_string(st));
    pmix_proc_t wild;
    PMIX_LOAD_PROCID(&wild, self.nspace, PMIX_RANK_WILDCARD);
    identity = (ferry__pmix_identity){
        .rank = (int)self.rank,
        .world_size = get_int(&wild, PMIX_JOB_SIZE),
        .local_rank = get_int(&self, PMIX_LOCAL_RANK),
        .local_size = get_int(&wild, PMIX_LOCAL_SIZE),
        .node_id = get_int(&self, PMIX_NODEID),
        .nnodes = get_int(&wild, PMIX_NUM_NODES),
    };
    snprintf(identity.nspace, sizeof identity.nspace, "%s", self.nspace);
    if (identity.world_size <= 0 || identity.rank >= identity.world_size) {
        PMIx_Finalize(NULL, 0);
        return ferry__fail(FERRY_EPROTO, "the PMIx server gave rank %d but no valid job size",
                           identity.rank);
    }
    session_open = true;
    atexit(session_close);
    ferry__log_debug("pmix", "rank %d of %d in namespace %s", identity.rank, identity.world_size,
                     identity.nspace);
    return FERRY_OK;
}

ferry_status ferry__pmix_identity_get(ferry__pmix_identity *id)
{
    pthread_mutex_lock(&session_lock);
    ferry_status rc = session_start();
    if (rc == FERRY_OK)
        *id = identity;
    pthread_mutex_unlock(&session_lock);
    return rc;
}

/* ---- fences ------------------------------------------------------------------------------ */

typedef struct {
    atomic_int refs; /* the waiter and the callback */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    pmix_status_t status;
} fence_wait;

static void fence_release(fence_wait *w)
{
    if (atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    ferry__free(w);
}

static void fence_done(pmix_status_t status, void *cbdata)
{
    fence_wait *w = cbdata;
    pthread_mutex_lock(&w->lock);
    w->status = status;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    fence_release(w);
}

/* Waits for the fence in slices, asking abort_fn between them. */
static ferry_status fence_await(fence_wait *w, const char *what, double timeout_s,
                                ferry__pmix_abort_fn abort_fn, void *abort_ctx)
{
    double deadline = timeout_s > 0 ? ferry__now_s() + timeout_s : 0;
    char why[512] = "";
    pthread_mutex_lock(&w->lock);
    while (!w->done) {
        if (deadline && ferry__now_s() >= deadline)
            break;
        double until = ferry__now_s() + SLICE_S;
        if (deadline && until > deadline)
            until = deadline;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double wait_s = until - ferry__now_s();
        long long ns = ts.tv_nsec + (long long)((wait_s > 0 ? wait_s : 0) * 1e9);
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
        if (!w->done && abort_fn) {
            pthread_mutex_unlock(&w->lock);
            bool is_abort = abort_fn(abort_ctx, why, sizeof why);
            pthread_mutex_lock(&w->lock);
            if (is_abort && !w->done)
                break;
        }
    }
    bool done = w->done;
    pmix_status_t st = w->status;
    pthread_mutex_unlock(&w->lock);
    fence_release(w);
    if (!done && *why)
        return ferry__fail(FERRY_ETRANSPORT, "PMIx fence '%s' given up: %s", what, why);
    if (!done)
        return ferry__fail(FERRY_ETIMEDOUT,
                           "PMIx fence '%s' timed out after %.0f s: not every rank reached it",
                           what, timeout_s);
    if (st != PMIX_SUCCESS)
        return ferry__fail(st == PMIX_ERR_TIMEOUT ? FERRY_ETIMEDOUT : FERRY_ETRANSPORT,
                           "PMIx fence '%s' failed: %s", what, PMIx_Error_string(st));
    return FERRY_OK;
}

static ferry_status fence(const char *what, bool collect, double timeout_s,
                          ferry__pmix_abort_fn abort_fn, void *abort_ctx)
{
    fence_wait *w = ferry__calloc(1, sizeof *w);
    if (!w)
        return ferry__fail(FERRY_ENOMEM, "out of memory for a PMIx fence");
    atomic_init(&w->refs, 2);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    pmix_info_t info[2];
    size_t ninfo = 0;
    bool flag = true;
    int secs = timeout_s > 0 ? (int)(timeout_s + 1) : 0;
    PMIx_Info_load(&info[ninfo++], PMIX_COLLECT_DATA, &flag, PMIX_BOOL);
    if (secs > 0)
        PMIx_Info_load(&info[ninfo++], PMIX_TIMEOUT, &secs, PMIX_INT);
    pmix_proc_t wild;
    PMIX_LOAD_PROCID(&wild, self.nspace, PMIX_RANK_WILDCARD);
    pmix_status_t st = PMIx_Fence_nb(&wild, 1, collect ? info : info + 1,
                                     collect ? ninfo : ninfo - 1, fence_done, w);
    for (size_t i = 0; i < ninfo; i++)
        PMIX_INFO_DESTRUCT(&info[i]);
    if (st == PMIX_OPERATION_SUCCEEDED) {
        fence_release(w); /* no callback comes */
        fence_release(w);
        return FERRY_OK;
    }
    if (st != PMIX_SUCCESS) {
        fence_release(w);
        fence_release(w);
        return ferry__fail(FERRY_ETRANSPORT, "PMIx fence '%s' could not start: %s", what,
                           PMIx_Error_string(st));
    }
    return fence_await(w, what, timeout_s, abort_fn, abort_ctx);
}

static ferry_status need_session(void)
{
    pthread_mutex_lock(&session_lock);
    ferry_status rc = session_start();
    pthread_mutex_unlock(&session_lock);
    return rc;
}

ferry_status ferry__pmix_barrier(const char *what, double timeout_s, ferry__pmix_abort_fn abort_fn,
                                 void *abort_ctx)
{
    ferry_status rc = need_session();
    return rc == FERRY_OK ? fence(what, false, timeout_s, abort_fn, abort_ctx) : rc;
}

static void free_gathered(void **out, size_t n)
{
    for (size_t i = 0; out && i < n; i++)
        ferry__free(out[i]);
    ferry__free(out);
}

ferry_status ferry__pmix_allgather(const char *key, const void *data, size_t len, void ***out,
                                   size_t **lens, double timeout_s, ferry__pmix_abort_fn abort_fn,
                                   void *abort_ctx)
{
    ferry_status rc = need_session();
    if (rc != FERRY_OK)
        return rc;
    if (strlen(key) >= PMIX_MAX_KEYLEN)
        return ferry__fail(FERRY_EINVAL, "PMIx key '%s' is longer than %d bytes", key,
                           PMIX_MAX_KEYLEN - 1);
    pmix_value_t v = {.type = PMIX_BYTE_OBJECT};
    v.data.bo.bytes = (char *)data;
    v.data.bo.size = len;
    pmix_status_t st = PMIx_Put(PMIX_GLOBAL, key, &v);
    if (st == PMIX_SUCCESS)
        st = PMIx_Commit();
    if (st != PMIX_SUCCESS)
        return ferry__fail(FERRY_ETRANSPORT, "PMIx_Put of '%s' failed: %s", key,
                           PMIx_Error_string(st));
    if ((rc = fence(key, true, timeout_s, abort_fn, abort_ctx)) != FERRY_OK)
        return rc;
    size_t n = (size_t)identity.world_size;
    void **vals = ferry__calloc(n, sizeof *vals);
    size_t *sizes = ferry__calloc(n, sizeof *sizes);
    if (!vals || !sizes) {
        ferry__free(vals);
        ferry__free(sizes);
        return ferry__fail(FERRY_ENOMEM, "out of memory reading PMIx values");
    }
    for (size_t r = 0; r < n && rc == FERRY_OK; r++) {
        pmix_proc_t peer;
        PMIX_LOAD_PROCID(&peer, self.nspace, (pmix_rank_t)r);
        pmix_value_t *got = NULL;
        st = PMIx_Get(&peer, key, NULL, 0, &got);
        if (st != PMIX_SUCCESS || !got || got->type != PMIX_BYTE_OBJECT) {
            rc = ferry__fail(FERRY_EPROTO, "rank %zu published no '%s' through PMIx: %s", r, key,
                             st != PMIX_SUCCESS ? PMIx_Error_string(st) : "not bytes");
        } else {
            sizes[r] = got->data.bo.size;
            vals[r] = ferry__malloc(sizes[r] ? sizes[r] : 1);
            if (!vals[r])
                rc = ferry__fail(FERRY_ENOMEM, "out of memory reading PMIx values");
            else if (sizes[r])
                memcpy(vals[r], got->data.bo.bytes, sizes[r]);
        }
        if (got)
            PMIX_VALUE_RELEASE(got);
    }
    if (rc != FERRY_OK) {
        free_gathered(vals, n);
        ferry__free(sizes);
        return rc;
    }
    *out = vals;
    *lens = sizes;
    return FERRY_OK;
}

#endif /* FERRY_HAVE_PMIX */
