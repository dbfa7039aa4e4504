/* Which launcher started this process, and what it says about the job: the facts
   ferry_init_rpc reads when init_method is left NULL, for programs that want their rank before
   they pick a worker name, and for `ferryrun --check`. Reading them never contacts a peer; under
   a PMIx launcher it asks the local PMIx server (that is where the world size is). */
#ifndef FERRY_LAUNCH_H
#define FERRY_LAUNCH_H

#include "ferry/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FERRY_LAUNCHER_NONE = 0, /* started by hand: no launcher variables */
    FERRY_LAUNCHER_TORCHRUN, /* torchrun's RANK, WORLD_SIZE, MASTER_ADDR (also Kubernetes
                                operators that set them) */
    FERRY_LAUNCHER_FERRYRUN, /* ferryrun (torchrun's variables plus FERRY_LAUNCHER=ferryrun) */
    FERRY_LAUNCHER_SLURM,    /* srun: SLURM_PROCID, SLURM_NTASKS (with or without --mpi=pmix) */
    FERRY_LAUNCHER_OPENMPI,  /* mpirun: OMPI_COMM_WORLD_RANK, PMIx */
    FERRY_LAUNCHER_PMIX,     /* another PMIx launcher (prterun, ...): PMIX_RANK only */
    FERRY_LAUNCHER_PMI,      /* PMI_RANK, PMI_SIZE (MPICH's hydra) */
} ferry_launcher;

typedef struct {
    ferry_launcher launcher;
    const char *launcher_name; /* "none", "torchrun", "ferryrun", "slurm", "openmpi", "pmix",
                                  "pmi": a static string */
    int rank, world_size;      /* -1 when the environment does not say */
    int local_rank, local_world_size; /* on this node; -1 when unknown */
    int node_rank, nnodes;     /* -1 when unknown */
    /* The rendezvous ferry_init_rpc picks when init_method is NULL: "env://" (a TCP store) or
       "pmix://" (PMIx_Put / PMIx_Fence, no store). */
    char init_method[16];
    char store[288];  /* "host:port" of the store env:// would use; "" for pmix:// or unknown */
    char source[256]; /* where rank, size and store come from, in words */
    char problem[512]; /* "" or what is missing or malformed, so that init would fail */
} ferry_launch_info;

/* Fills *info from the environment (and the PMIx server when one is reachable). Returns
   FERRY_OK, launcher NONE included (problem then says what env:// needs); FERRY_EINVAL when a
   launcher was found but its environment is incomplete or malformed (info->problem and the last
   error say what), or info is NULL. */
FERRY_API ferry_status ferry_launch_detect(ferry_launch_info *info);

/* "none", "torchrun", ... for a launcher value; "unknown" for anything else. */
FERRY_API const char *ferry_launcher_name(ferry_launcher launcher);

#ifdef __cplusplus
}
#endif

#endif
