/* ferryrun's parts: the command line (options.c), the node rendezvous that joins several
   ferryruns into one job (nodes.c), the children and their output (children.c), the
   diagnostics of --check (check.c), and main.c, which turns options into a plan and runs it. */
#ifndef FERRYRUN_H
#define FERRYRUN_H

#include <stdbool.h>
#include <stddef.h>

#define FERRYRUN_HOST_MAX 256
#define FERRYRUN_TOKEN_MAX 512
#define FERRYRUN_DEFAULT_RDZV_PORT 29400 /* torchrun's, for an endpoint without a port */
#define FERRYRUN_DEFAULT_RDZV_TIMEOUT_S 600.0

#define FERRYRUN_APPS_MAX 16

/* One program and how many local ranks run it (mpirun's colon syntax: "-n 1 ./master : -n 2
   ./worker" gives rank 0 the master and ranks 1 and 2 the worker). argv is NULL-terminated. */
typedef struct {
    int nproc;
    char **argv;
} ferryrun_app;

/* The command line as given. */
typedef struct {
    int nproc;                         /* -n (all programs together); 0 = not given */
    int nnodes;                        /* 1 unless given */
    int node_rank;                     /* 0 unless given */
    const char *master_addr, *master_port; /* NULL = not given */
    bool has_endpoint;                 /* --rdzv-endpoint */
    char endpoint_host[FERRYRUN_HOST_MAX]; /* without brackets */
    int endpoint_port;
    const char *run_id;                /* --rdzv-id, "none" unless given */
    bool is_static_backend;            /* --rdzv-backend static */
    double rdzv_timeout_s;
    bool is_standalone, is_check;
    char **argv;                       /* the first program and its arguments; NULL with --check */
    ferryrun_app apps[FERRYRUN_APPS_MAX]; /* the programs in rank order (one without ':') */
    int n_apps;
} ferryrun_options;

/* What this node starts: local ranks 0..nproc-1 become ranks rank_offset + local. */
typedef struct {
    int nproc, rank_offset, world_size;
    int node_rank, nnodes;
    char master_addr[FERRYRUN_HOST_MAX];
    char master_port[16];
    char token[FERRYRUN_TOKEN_MAX];
    const char *run_id;
    const ferryrun_app *apps;          /* local ranks run these in order, apps[i].nproc each */
    int n_apps;
} ferryrun_plan;

/* Parses argv. 0: ready; 1: help printed (exit 0); -1: bad usage, a message naming the flag
   printed (exit 2). */
int ferryrun_parse_args(int argc, char **argv, ferryrun_options *o);

/* "host:port" for messages and token scopes: brackets around an IPv6 host. */
void ferryrun_host_port(const char *host, int port, char *out, size_t cap);

/* A port that was free on addr a moment ago (the kernel picks it); an address that is not this
   host's falls back to every interface. */
bool ferryrun_pick_free_port(const char *addr, char *out, size_t cap);

/* The node rendezvous: node 0's store (served on the endpoint) and this node's client. */
typedef struct ferryrun_nodes ferryrun_nodes;

/* Joins the node rendezvous at the endpoint (node 0 serves it) and fills plan's rank offset,
   world size and master address; plan's nproc, nnodes, node rank and token are set on entry.
   NULL after printing why (timed out, refused, nodes that disagree). Node 0's store stays up
   until ferryrun_nodes_finish, which the caller runs once this node's processes ended, since
   other nodes may still be reading. */
ferryrun_nodes *ferryrun_nodes_join(const ferryrun_options *o, ferryrun_plan *plan);
void ferryrun_nodes_finish(ferryrun_nodes *nodes);

/* Starts the plan's processes and supervises them until every one exited and its output was
   passed on. Returns ferryrun's exit status. */
int ferryrun_run_children(const ferryrun_plan *plan);

/* Prints what a job started here would find; 0 when a rendezvous can be found, else 1. */
int ferryrun_check(void);

#endif
