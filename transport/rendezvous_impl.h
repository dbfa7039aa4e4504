/* Internal to the rendezvous: its state and the helpers joining (rendezvous.c) and the
   collectives (rendezvous_rounds.c) share. */
#ifndef FERRY_TRANSPORT_RENDEZVOUS_IMPL_H
#define FERRY_TRANSPORT_RENDEZVOUS_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <stdio.h>

#include "core/clock.h"
#include "transport/rendezvous.h"

#define ROUND_NAME_MAX 1024
#define KEY_LEN 1200
#define PREFIX_LEN 1100 /* a round prefix; keys add a short suffix to it */
#define ABORT_CHECK_SLICE_S 0.25 /* how often a collective's wait asks whether to give up */
/* Store calls made after a deadline passed (publishing a timeout verdict, naming missing ranks,
   leaving) get this long: enough for a live store, short for a dead one. */
#define AFTER_DEADLINE_S 0.5

typedef struct round_count {
    struct round_count *next;
    char *name;
    int64_t generation;
} round_count;

struct ferry__rendezvous {
    int rank, world_size;
    ferry__store_server *server;
    ferry__store *store;
    char *file_path;
    ferry__peer_entry *peers;
    round_count *rounds;
    char prev_round[PREFIX_LEN]; /* the last collective that completed here; "" = none */
    bool (*should_abort)(void *ctx, char *why, size_t cap);
    void *abort_ctx;
    bool is_pmix;              /* joined through PMIx: no store (rendezvous_pmix.c) */
    int pmix_join, pmix_round; /* which join of this process; collectives run so far */
};

/* Seconds left before deadline (0 = none). Never <= 0 for a real deadline, since 0 would mean
   "wait forever" to the store. */
static inline double left_s(double deadline)
{
    if (deadline <= 0)
        return 0;
    double left = deadline - ferry__now_s();
    return left > 0.001 ? left : 0.001;
}

/* The presence key of `rank` under a round prefix (KEY_LEN bytes). */
static inline void rank_key(char *key, const char *prefix, int rank)
{
    snprintf(key, KEY_LEN, "%s/r/%d", prefix, rank);
}

/* Builds "ranks 3, 5 never arrived" (or "rank 3 ...") from the presence keys under prefix.
   Returns how many were missing; 0 leaves out untouched. -1 when the store could not say (its
   error is then the last error). */
int ferry__rdv_missing_ranks(ferry__store *st, const char *prefix, int world_size, char *out,
                             size_t out_len);

/* Checks a full table for what only the whole of it shows (agreeing world sizes, unique names):
   FERRY_OK or FERRY_EINVAL with the message every worker reports. */
ferry_status ferry__rdv_check_table(const ferry__rendezvous *rdv, const ferry__peer_entry *peers);

/* The PMIx rendezvous (rendezvous_pmix.c): join fills rdv->peers; rdv's rank and world size
   are set. The collectives have the store versions' contracts. */
ferry_status ferry__rdv_pmix_join(ferry__rendezvous *rdv, const char *name, const void *addr,
                                  size_t addr_len, double timeout_s);
ferry_status ferry__rdv_pmix_barrier(ferry__rendezvous *rdv, const char *name, double timeout_s);
ferry_status ferry__rdv_pmix_allreduce_sum(ferry__rendezvous *rdv, const char *name,
                                           int64_t value, int64_t *sum, double timeout_s);

#endif
