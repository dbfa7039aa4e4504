/* Where the store is and who this worker is, before anyone is contacted: init_method URLs
   (env://, tcp://host:port, file:///path, with torch's ?rank=&world_size= query, and pmix://),
   the variables launchers set (torchrun's MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE, then
   Slurm, Open MPI and PMI), and the worker-name rule. Parsing only, but for pmix://, whose rank
   and size come from the local PMIx server: nothing here touches a peer or the store, so
   rendezvous and the agent can check their arguments up front. */
#ifndef FERRY_TRANSPORT_INIT_METHOD_H
#define FERRY_TRANSPORT_INIT_METHOD_H

#include <stdbool.h>

#include "ferry/error.h"

/* Worker names are shorter than this many bytes (torch's limit). */
#define FERRY__WORKER_NAME_MAX 128

/* Worker names are non-empty, shorter than FERRY__WORKER_NAME_MAX bytes and made of
   [A-Za-z0-9_:-] (torch's rule). FERRY_OK or FERRY_EINVAL with torch's message. */
ferry_status ferry__rendezvous_check_name(const char *name);

/* Whether init_method (NULL or "" = ferry__launch_default_method()) is pmix://. */
bool ferry__rendezvous_is_pmix(const char *init_method);

/* Parses init_method (NULL or "" = ferry__launch_default_method()) into where the store is and who this worker is.
   env:// reads MASTER_ADDR and MASTER_PORT; rank < 0 / world_size <= 0 are read from RANK /
   WORLD_SIZE, then SLURM_PROCID / SLURM_NTASKS, OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE,
   PMI_RANK / PMI_SIZE; under Slurm, MASTER_ADDR and MASTER_PORT that are unset come from
   ferry__launch_slurm_store. pmix:// takes both from the PMIx server (given ones must agree)
   and sets no store. tcp://host:port and file:///path take rank and world size from the
   arguments, then a "?rank=R&world_size=W" query, then the same variables. Outputs may be NULL;
   *store_host (tcp) or *file_path (file) is ferry__malloc'd and the other one is set to NULL.
   FERRY_EINVAL naming the missing or malformed variable ("environment variable MASTER_ADDR
   expected, but not set"), a malformed init_method, or a rank out of range; FERRY_ENOMEM. */
ferry_status ferry__rendezvous_resolve_env(const char *init_method, int *rank, int *world_size,
                                           char **store_host, int *store_port, char **file_path);

/* The auth token rule for rendezvous. token is FERRY_AUTH_TOKEN (NULL = not set), insecure
   FERRY_INSECURE's value (NULL = not set), is_file whether the store is a file (which the token
   does not protect: its owner and mode do, so none is needed there). *out is the token to use,
   or NULL to run without authentication, which only FERRY_INSECURE=1 (or a file store) allows.
   FERRY_OK; FERRY_EINVAL "FERRY_AUTH_TOKEN is empty" (set but ""), whatever else is set;
   FERRY_EAUTH when no token is set and FERRY_INSECURE is not 1, saying how to fix it. */
ferry_status ferry__rendezvous_token_policy(const char *token, const char *insecure, bool is_file,
                                            const char **out);

#endif
