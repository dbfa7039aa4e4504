/* Releasing a context everywhere it went: the worker that ends it tells every worker its calls
   reached, each of those forgets its own context of that id and tells the workers its calls
   reached in turn (torch's CLEANUP_AUTOGRAD_CONTEXT_REQ). A release that fails to go is tried
   again, up to DIST_CLEANUP_TRIES times; graceful shutdown waits for those in flight. */
#include <stdio.h>
#include <string.h>

#include "autograd/dist/dist_impl.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"

#define DIST_CLEANUP_TRIES 20

typedef struct {
    ferry__dist_state *st;
    int64_t id;
    int dst;
    int tries;
} cleanup_job;

static void cleanup_go(cleanup_job *j);

static void cleanup_retry(void *arg)
{
    cleanup_go(arg);
}

static void cleanup_answered(ferry_future *f, void *arg)
{
    cleanup_job *j = arg;
    ferry_status rc = ferry_future_status(f);
    ferry_future_release(f);
    /* A peer without the context has nothing to release (an error we may ignore); a worker
       that is shutting down or gone does not need telling again. */
    if (rc == FERRY_OK || rc == FERRY_EINVAL || rc == FERRY_ESHUTDOWN || rc == FERRY_ETRANSPORT ||
        ++j->tries >= DIST_CLEANUP_TRIES ||
        ferry__agent_submit(j->st->agent, cleanup_retry, j) != FERRY_OK) {
        if (rc != FERRY_OK && rc != FERRY_EINVAL)
            ferry__log_warn("dist_autograd", "could not release autograd context %lld on rank "
                            "%d: %s", (long long)j->id, j->dst, ferry_strerror(rc));
        atomic_fetch_sub(&j->st->cleanups_pending, 1);
        ferry__free(j);
    }
}

static void cleanup_go(cleanup_job *j)
{
    ferry__msg m = {.type = FERRY__MSG_AUTOGRAD_CLEANUP, .fn = DIST_CLEANUP_NAME,
                    .autograd_context = j->id};
    ferry_future *f = ferry__agent_request(j->st->agent, j->dst, &m, FERRY_TIMEOUT_DEFAULT);
    if (f == NULL) {
        f = ferry_future_new();
        if (f == NULL) {
            atomic_fetch_sub(&j->st->cleanups_pending, 1);
            ferry__free(j);
            return;
        }
        ferry_future_set_error(f, ferry_last_status(), ferry_last_error());
    }
    if (ferry__future_on_done(f, cleanup_answered, j) != FERRY_OK) {
        ferry_future_release(f);
        atomic_fetch_sub(&j->st->cleanups_pending, 1);
        ferry__free(j);
    }
}

void ferry__dist_cleanup_send(ferry__dist_state *st, int64_t id, const bool *known, int except)
{
    for (int r = 0; r < st->world; r++) {
        if (!known[r] || r == st->rank || r == except)
            continue;
        cleanup_job *j = ferry__calloc(1, sizeof *j);
        if (j == NULL)
            continue;
        *j = (cleanup_job){st, id, r, 0};
        atomic_fetch_add(&st->cleanups_pending, 1);
        cleanup_go(j);
    }
}

/* Releases this worker's context and sends the release on; the running passes in it fail. */
void ferry__dist_ctx_release_everywhere(ferry__dist_state *st, ferry__dist_ctx *c, int except)
{
    ferry__dist_pass_abort_all(c, "the autograd context was released");
    pthread_mutex_lock(&c->rec_mu);
    bool *known = ferry__calloc((size_t)st->world, sizeof *known);
    if (known)
        memcpy(known, c->known, (size_t)st->world * sizeof *known);
    pthread_mutex_unlock(&c->rec_mu);
    if (known)
        ferry__dist_cleanup_send(st, c->id, known, except);
    ferry__free(known);
}

ferry_status ferry__dist_cleanup_handle(ferry__agent *agent, int src, ferry__msg *m,
                                        ferry_value **result, void *state)
{
    ferry__dist_state *st = state;
    ferry__dist_ctx *c = ferry__dist_ctx_remove(st, m->autograd_context);
    if (c == NULL)
        return ferry__dist_no_context(m->autograd_context);
    ferry__dist_ctx_release_everywhere(st, c, src);
    ferry__dist_ctx_release(c);
    return FERRY_OK;
}
