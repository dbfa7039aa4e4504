/* The PMIx client: what a PMIx launcher (mpirun, srun --mpi=pmix, prterun) tells a process and
   the exchange it runs for the job. One session per process, opened on first use and kept until
   exit, because the server connection is the launcher's and some servers do not take a client
   back after PMIx_Finalize; ferry_init_rpc after ferry_shutdown reuses it. Built when libpmix is
   found (FERRY_HAVE_PMIX); without it every call but ferry__pmix_env_present fails with
   FERRY_EINVAL saying ferry was built without PMIx.

   Threads: the calls are serialized by a lock of their own; collectives are blocking. */
#ifndef FERRY_TRANSPORT_PMIX_H
#define FERRY_TRANSPORT_PMIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"

/* The facts the server gives this process. -1 where it does not say. */
typedef struct {
    int rank, world_size;
    int local_rank, local_size;
    int node_id, nnodes;
    char nspace[256];
} ferry__pmix_identity;

/* Whether this process was started by a PMIx launcher (PMIX_RANK, PMIX_NAMESPACE and a server
   URI in the environment); says nothing about whether the server answers. */
bool ferry__pmix_env_present(void);

/* Whether ferry was built with PMIx. */
bool ferry__pmix_built(void);

/* Opens the session (first call) and fills *id. FERRY_OK; FERRY_EINVAL when built without PMIx
   or the launcher variables are missing; FERRY_ETRANSPORT when the server does not answer
   (PMIx's own words in the message). */
ferry_status ferry__pmix_identity_get(ferry__pmix_identity *id);

/* Asked every quarter second while a collective waits; true (with why) ends the wait with
   FERRY_ETRANSPORT. May be NULL. */
typedef bool (*ferry__pmix_abort_fn)(void *ctx, char *why, size_t cap);

/* Publishes data under key (PMIX_GLOBAL), commits, fences the whole job collecting data, then
   reads every rank's value of key: out[r] (ferry__malloc'd, lens[r] bytes) for r in
   0..world_size-1; free each with ferry__free, then the arrays. Every rank calls it with the
   same key. FERRY_OK; FERRY_ETIMEDOUT after timeout_s (<= 0: none); FERRY_ETRANSPORT (the
   server's error or abort's why); FERRY_EPROTO when a peer's value is missing or not bytes;
   FERRY_ENOMEM. */
ferry_status ferry__pmix_allgather(const char *key, const void *data, size_t len,
                                   void ***out, size_t **lens, double timeout_s,
                                   ferry__pmix_abort_fn abort_fn, void *abort_ctx);

/* A fence over the whole job with no data: a barrier. what names it in errors. Same codes. */
ferry_status ferry__pmix_barrier(const char *what, double timeout_s, ferry__pmix_abort_fn abort_fn,
                                 void *abort_ctx);

#endif
