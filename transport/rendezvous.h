/* Rendezvous: how workers find each other before the fabric is up (DESIGN section 6). init_method
   names the store as torch does (env://, tcp://host:port, file:///path; parsed in
   init_method.h, which this header brings along for the agent). Rank 0 serves the TCP
   store in a thread; every worker publishes (name, rank, fabric address blob) and gets back the
   whole table. Each non-zero rank does O(1) store operations however large the world, so joins of
   hundreds of workers stay cheap. The same object then runs the small collectives the agent needs
   (barrier, integer all-reduce for graceful shutdown) and keeps rank 0's store alive until free.

   Threads: one rendezvous object is used by one thread at a time. Timeouts are seconds; <= 0 means
   no deadline (torch's convention). */
#ifndef FERRY_TRANSPORT_RENDEZVOUS_H
#define FERRY_TRANSPORT_RENDEZVOUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "transport/init_method.h"
#include "transport/store.h"

typedef struct {
    int rank;
    int world_size;
    char *name;
    void *addr;
    size_t addr_len;
} ferry__peer_entry;

/* Holds the store client (and the server on rank 0) and the peer table. */
typedef struct ferry__rendezvous ferry__rendezvous;

/* The two halves of a join, so a worker can serve and reach the store before its fabric is
   open (and so before it has an address to publish): open resolves init_method, applies the
   token rule, starts rank 0's store and connects to it; publish puts this worker's record and
   waits for the whole table. Same errors as ferry__rendezvous_join, each where it arises. A
   failed publish frees rdv. With pmix:// open contacts nobody and publish runs the exchange. */
ferry__rendezvous *ferry__rendezvous_open(const char *init_method, int rank, int world_size,
                                          double timeout_s, const char *token);
ferry_status ferry__rendezvous_publish(ferry__rendezvous *rdv, const char *name, const void *addr,
                                       size_t addr_len, double timeout_s);

/* Joins (open, then publish): checks the name (before contacting anyone), resolves init_method, starts the store on
   rank 0 (on the store port, on the store host's interface or every interface), publishes this
   worker's record and waits until all world_size workers did. addr is copied. token is
   FERRY_AUTH_TOKEN as the caller read it (NULL = not set); the policy is
   ferry__rendezvous_token_policy's: a TCP store needs one unless FERRY_INSECURE=1 (then it runs
   without auth and warns once), and client and server each prove they know it.
   NULL and the last error: FERRY_EINVAL (bad name or init_method, "RPC worker name X is not
   unique. Workers 0 and 3 share the same name." on every worker, a rank claimed twice,
   mismatched world sizes, "FERRY_AUTH_TOKEN is empty"), FERRY_ETIMEDOUT ("rendezvous timed out
   after N s: ranks 3, 5 never arrived", or the store did not answer), FERRY_EAUTH (no token, a
   wrong one, or a store that cannot prove it knows it), FERRY_ETRANSPORT (store unreachable or
   lost), FERRY_ENOMEM. */
ferry__rendezvous *ferry__rendezvous_join(const char *init_method, int rank, int world_size,
                                          const char *name, const void *addr, size_t addr_len,
                                          double timeout_s, const char *token);

/* Every worker calls it with the same name; returns when all world_size did. Names may repeat:
   each call with a given name is a new round. O(1) store operations per worker; the keys of the
   round before are deleted once this one completes. Returns within timeout_s (plus at most
   FERRY__STORE_REPLY_GRACE_MS) even when the store stops answering.
   FERRY_OK, FERRY_ETIMEDOUT (naming the ranks that never arrived, or the store that did not
   answer), FERRY_ETRANSPORT, FERRY_EINVAL (NULL or overlong name). */
ferry_status ferry__rendezvous_barrier(ferry__rendezvous *rdv, const char *name, double timeout_s);

/* Sum of every worker's value, returned to all of them; a barrier too. The agent's graceful
   shutdown loops on it over active-call counts, as torch does. Same codes as the barrier, plus
   FERRY_EINVAL when the sum overflows. */
ferry_status ferry__rendezvous_allreduce_sum(ferry__rendezvous *rdv, const char *name,
                                             int64_t value, int64_t *sum, double timeout_s);

/* While a barrier or all-reduce waits, it asks should_abort every quarter second; when it says
   true (and writes why), the wait ends with FERRY_ETRANSPORT. The agent uses it so a worker
   known dead ends the graceful-shutdown rounds instead of hanging them. NULL clears it. */
void ferry__rendezvous_set_abort_check(ferry__rendezvous *rdv,
                                       bool (*should_abort)(void *ctx, char *why, size_t cap),
                                       void *ctx);

/* The table, indexed by rank; borrowed, lives as long as rdv. */
const ferry__peer_entry *ferry__rendezvous_peers(ferry__rendezvous *rdv, int *n);

/* This worker's rank, and the store client (borrowed) for callers that need more keys. */
int ferry__rendezvous_rank(const ferry__rendezvous *rdv);
ferry__store *ferry__rendezvous_store(ferry__rendezvous *rdv);
/* The store server rank 0 runs (borrowed; NULL elsewhere and for file stores): its counters. */
ferry__store_server *ferry__rendezvous_server(ferry__rendezvous *rdv);

/* Leaves. Rank 0 first waits (at most a few seconds) until every other worker left or
   disconnected, so nobody loses the store mid-operation; then it stops the server. With a file
   store the last worker out removes the file. NULL is fine. */
void ferry__rendezvous_free(ferry__rendezvous *rdv);
/* The same, with rank 0 keeping the store up for the others at most linger_s (at most the 5 s
   that ferry__rendezvous_free allows): a shutdown with a deadline leaves by it. */
void ferry__rendezvous_free_within(ferry__rendezvous *rdv, double linger_s);

#endif
