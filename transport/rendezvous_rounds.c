/* The rendezvous collectives (barrier, all-reduce of a sum): one counter per round; the last
   arriver sets a "done" key the others block on, and deletes the keys of the round before it
   (every rank has left that one, since all arrived at this one), so repeated rounds keep the
   store at a constant size. Per-rank presence keys let a timeout name the ranks that never
   came. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/rendezvous_impl.h"

/* The key prefix of the next round called `name` of this kind: "ferry/<kind>/<name>#<gen>". */
static ferry_status next_round(ferry__rendezvous *rdv, const char *kind, const char *name,
                               char *prefix)
{
    if (!rdv || !name || strlen(name) > ROUND_NAME_MAX)
        return ferry__fail(FERRY_EINVAL, "%s round needs a name of at most %d bytes", kind,
                           ROUND_NAME_MAX);
    char full[ROUND_NAME_MAX + 32];
    snprintf(full, sizeof full, "%s/%s", kind, name);
    round_count *rc = rdv->rounds;
    while (rc && strcmp(rc->name, full))
        rc = rc->next;
    if (!rc) {
        rc = ferry__calloc(1, sizeof *rc);
        if (!rc || !(rc->name = ferry__strdup(full))) {
            ferry__free(rc);
            return ferry__fail(FERRY_ENOMEM, "out of memory starting a %s round", kind);
        }
        rc->next = rdv->rounds;
        rdv->rounds = rc;
    }
    snprintf(prefix, PREFIX_LEN, "ferry/%s#%" PRId64, full, rc->generation++);
    return FERRY_OK;
}

/* ---- collectives ------------------------------------------------------------------------ */

static ferry_status round_timeout(ferry__rendezvous *rdv, const char *kind, const char *name,
                                  const char *prefix, double timeout_s)
{
    char missing[900] = "";
    int n_missing = ferry__rdv_missing_ranks(rdv->store, prefix, rdv->world_size, missing,
                                             sizeof missing);
    if (n_missing < 0)
        return ferry__fail(ferry_last_status(), "%s '%s' failed: %s", kind, name,
                           ferry_last_error());
    if (n_missing == 0)
        snprintf(missing, sizeof missing, "every rank arrived, but the round never completed");
    return ferry__fail(FERRY_ETIMEDOUT, "%s '%s' timed out after %g s: %s", kind, name, timeout_s,
                       missing);
}

/* Marks this rank present and counts it in; *is_last for the rank that completes the round. */
static ferry_status arrive(ferry__rendezvous *rdv, const char *prefix, bool *is_last,
                           double deadline)
{
    char key[KEY_LEN];
    int64_t n = 0;
    rank_key(key, prefix, rdv->rank);
    ferry_status rc = ferry__store_set(rdv->store, key, "", 0, left_s(deadline));
    snprintf(key, sizeof key, "%s/n", prefix);
    if (rc == FERRY_OK)
        rc = ferry__store_add(rdv->store, key, 1, &n, left_s(deadline));
    *is_last = n == rdv->world_size;
    return rc;
}

/* The last arriver of a round: every rank has left the round before it, so its keys can go.
   Best effort: a failure only leaves keys behind. */
static void delete_round(ferry__rendezvous *rdv, const char *prefix, double deadline)
{
    size_t n = (size_t)rdv->world_size + 3;
    char **keys = ferry__calloc(n, sizeof *keys);
    bool is_ok = keys != NULL && *prefix;
    for (size_t i = 0; is_ok && i < n; i++) {
        keys[i] = ferry__malloc(KEY_LEN);
        is_ok = keys[i] != NULL;
        if (is_ok && i < (size_t)rdv->world_size)
            rank_key(keys[i], prefix, (int)i);
        else if (is_ok)
            snprintf(keys[i], KEY_LEN, "%s/%s", prefix,
                     i == n - 3 ? "n" : i == n - 2 ? "sum" : "done");
    }
    if (is_ok && ferry__store_delete(rdv->store, (const char *const *)keys, n, NULL,
                                     left_s(deadline)) != FERRY_OK)
        ferry__log_debug("rendezvous", "could not delete the keys of %s: %s", prefix,
                         ferry_last_error());
    for (size_t i = 0; keys && i < n; i++)
        ferry__free(keys[i]);
    ferry__free(keys);
}

/* A round completed here: the last arriver says so and clears the round before; everyone
   remembers this one as the round before the next. */
static ferry_status finish_round(ferry__rendezvous *rdv, const char *prefix, bool is_last,
                                 const char *result, double deadline)
{
    char key[KEY_LEN];
    ferry_status rc = FERRY_OK;
    if (is_last) {
        snprintf(key, sizeof key, "%s/done", prefix);
        rc = ferry__store_set(rdv->store, key, result, strlen(result), left_s(deadline));
        if (rc == FERRY_OK)
            delete_round(rdv, rdv->prev_round, deadline);
    }
    if (rc == FERRY_OK)
        snprintf(rdv->prev_round, sizeof rdv->prev_round, "%s", prefix);
    return rc;
}

/* Everyone but the last arriver blocks on prefix/done; its value comes back in *val. The wait
   goes in slices so the abort check (a peer known dead) can end it early. */
static ferry_status await_done(ferry__rendezvous *rdv, const char *kind, const char *name,
                               const char *prefix, double timeout_s, void **val, size_t *len)
{
    char key[KEY_LEN], why[512];
    snprintf(key, sizeof key, "%s/done", prefix);
    double end = timeout_s > 0 ? ferry__now_s() + timeout_s : 0;
    for (;;) {
        double slice = ABORT_CHECK_SLICE_S;
        if (end && end - ferry__now_s() < slice)
            slice = end - ferry__now_s();
        ferry_status rc = slice > 0 ? ferry__store_get(rdv->store, key, slice, val, len)
                                    : FERRY_ETIMEDOUT;
        if (rc != FERRY_ETIMEDOUT)
            return rc;
        if (!ferry__store_is_connected(rdv->store))
            return ferry__fail(rc, "%s '%s' abandoned: %s", kind, name, ferry_last_error());
        if (end && ferry__now_s() >= end)
            return round_timeout(rdv, kind, name, prefix, timeout_s);
        if (rdv->should_abort && rdv->should_abort(rdv->abort_ctx, why, sizeof why))
            return ferry__fail(FERRY_ETRANSPORT, "%s '%s' abandoned: %s", kind, name, why);
    }
}

void ferry__rendezvous_set_abort_check(ferry__rendezvous *rdv,
                                       bool (*should_abort)(void *ctx, char *why, size_t cap),
                                       void *ctx)
{
    rdv->should_abort = should_abort;
    rdv->abort_ctx = ctx;
}

ferry_status ferry__rendezvous_barrier(ferry__rendezvous *rdv, const char *name, double timeout_s)
{
    if (rdv->is_pmix)
        return ferry__rdv_pmix_barrier(rdv, name, timeout_s);
    char prefix[PREFIX_LEN];
    bool is_last = false;
    void *val = NULL;
    size_t len;
    double deadline = timeout_s > 0 ? ferry__now_s() + timeout_s : 0;
    ferry_status rc = next_round(rdv, "barrier", name, prefix);
    if (rc == FERRY_OK)
        rc = arrive(rdv, prefix, &is_last, deadline);
    if (rc == FERRY_OK && !is_last)
        rc = await_done(rdv, "barrier", name, prefix, timeout_s, &val, &len);
    if (rc == FERRY_OK)
        rc = finish_round(rdv, prefix, is_last, "1", deadline);
    ferry__free(val);
    return rc;
}

ferry_status ferry__rendezvous_allreduce_sum(ferry__rendezvous *rdv, const char *name,
                                             int64_t value, int64_t *sum, double timeout_s)
{
    if (rdv->is_pmix && sum)
        return ferry__rdv_pmix_allreduce_sum(rdv, name, value, sum, timeout_s);
    char prefix[PREFIX_LEN], sum_key[KEY_LEN], text[32];
    bool is_last = false;
    void *val = NULL;
    size_t len = 0;
    double deadline = timeout_s > 0 ? ferry__now_s() + timeout_s : 0;
    ferry_status rc = next_round(rdv, "allreduce", name, prefix);
    if (rc == FERRY_OK && !sum)
        rc = ferry__fail(FERRY_EINVAL, "allreduce_sum needs an output");
    if (rc != FERRY_OK)
        return rc;
    snprintf(sum_key, sizeof sum_key, "%s/sum", prefix);
    /* The sum is added before the count, so the rank that completes the count sees every term. */
    rc = ferry__store_add(rdv->store, sum_key, value, sum, left_s(deadline));
    if (rc == FERRY_OK)
        rc = arrive(rdv, prefix, &is_last, deadline);
    if (rc == FERRY_OK && is_last) {
        rc = ferry__store_add(rdv->store, sum_key, 0, sum, left_s(deadline));
        snprintf(text, sizeof text, "%" PRId64, *sum);
        return rc == FERRY_OK ? finish_round(rdv, prefix, true, text, deadline) : rc;
    }
    if (rc == FERRY_OK)
        rc = await_done(rdv, "allreduce", name, prefix, timeout_s, &val, &len);
    if (rc == FERRY_OK) {
        snprintf(text, sizeof text, "%.*s", len < sizeof text ? (int)len : 0, (const char *)val);
        char *end;
        errno = 0;
        *sum = strtoll(text, &end, 10);
        if (errno || !*text || *end)
            rc = ferry__fail(FERRY_EPROTO, "allreduce '%s' result is malformed", name);
    }
    if (rc == FERRY_OK)
        rc = finish_round(rdv, prefix, false, text, deadline);
    ferry__free(val);
    return rc;
}

