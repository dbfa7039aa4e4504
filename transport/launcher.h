/* Launcher environments (launch.h's detection) and the secrets derived for them. A job started
   by a launcher that hands out no secret (srun without PMIx, torchrun, several ferryrun nodes)
   still needs a FERRY_AUTH_TOKEN every member shares and strangers cannot guess: it is derived
   from a per-user secret file (~/.ferry/secret, mode 0600, made on first use) and the job's
   identity, so the same user's processes of one job agree on it without anyone setting a
   variable, on every node that shares the home directory. */
#ifndef FERRY_TRANSPORT_LAUNCHER_H
#define FERRY_TRANSPORT_LAUNCHER_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/error.h"
#include "ferry/launch.h"

#define FERRY__TOKEN_HEX_LEN 64

/* out (FERRY__TOKEN_HEX_LEN + 1 bytes) = hex HMAC-SHA256(user secret, "ferry/job-token/" scope).
   The secret is $FERRY_SECRET_FILE, else $HOME/.ferry/secret; it is created (32 random bytes,
   hex, 0600, in a 0700 directory) when missing, racing processes agreeing on one. A file that
   is a symlink, not the caller's, or readable by others is refused. FERRY_OK; FERRY_EAUTH naming
   the file and what is wrong with it; FERRY_EINVAL for an empty scope. */
ferry_status ferry__launch_secret_token(const char *scope, char *out);

/* The job a derived token is scoped to, for the launcher found in the environment: Slurm (job
   and step id) or torchrun (TORCHELASTIC_RUN_ID with MASTER_ADDR and MASTER_PORT). true with
   scope (cap bytes) filled and *from (may be NULL; a static string) naming its source in words;
   false when no launcher names a job. Reads the environment only. */
bool ferry__launch_job_scope(char *scope, size_t cap, const char **from);

/* Whether torchrun's agent serves its own store on MASTER_PORT and says so
   (TORCHELASTIC_USE_AGENT_STORE true): ferry's store then takes the next port. */
bool ferry__launch_agent_holds_master_port(void);

/* The token a rendezvous store uses when FERRY_AUTH_TOKEN is unset, for the launcher found in
   the environment: Slurm (job and step id), torchrun (TORCHELASTIC_RUN_ID with MASTER_ADDR and
   MASTER_PORT). FERRY_OK with *is_derived set and out filled; FERRY_OK with *is_derived false
   when no launcher identity is known (the caller's token rule applies); the secret's errors. */
ferry_status ferry__launch_job_token(char *out, bool *is_derived);

/* The init_method a NULL one means: "pmix://" when PMIx variables are set and the server
   answers, else "env://". */
const char *ferry__launch_default_method(void);

/* How many ranks the launcher says run on this host (LOCAL_WORLD_SIZE under torchrun and
   ferryrun, the step's tasks on this node under Slurm, OMPI_COMM_WORLD_LOCAL_SIZE under
   mpirun), or -1 when it does not say. */
int ferry__launch_local_world_size(void);

/* Slurm's store when MASTER_ADDR / MASTER_PORT are unset: the first host of SLURM_STEP_NODELIST
   (else SLURM_JOB_NODELIST, else SLURM_LAUNCH_NODE_IPADDR) and a port derived from the job and
   step ids. FERRY_OK with *host ferry__malloc'd (NULL when not under Slurm: the caller's own
   error applies); FERRY_EINVAL for a malformed node list; FERRY_ENOMEM. */
ferry_status ferry__launch_slurm_store(char **host, int *port);

/* The first host name of a Slurm host list ("node[01-04,7],gpu1" -> "node01") into out.
   false when the list is malformed or the name does not fit. */
bool ferry__launch_first_host(const char *list, char *out, size_t cap);

#endif
