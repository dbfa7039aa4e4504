/* ferryrun: starts the processes of one ferry job on this node, the way torchrun does for
   PyTorch; several ferryruns, one per node, form one job. This file turns the options into a
   plan (who gets which ranks, where rank 0's store listens, the auth token) for each of the
   three ways to run: one node; several nodes meeting at a rendezvous endpoint that node 0
   serves; several nodes with fixed ranks (static). */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ferry/error.h"
#include "tools/ferryrun/ferryrun.h"
#include "transport/launcher.h"

static bool random_token(char *hex, size_t len)
{
    unsigned char raw[32];
    if (len < 2 * sizeof raw + 1 || getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return false;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    return true;
}

static bool bound_port_of(const struct addrinfo *ai, char *out, size_t cap)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof ss;
    bool is_ok = fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
                 getsockname(fd, (struct sockaddr *)&ss, &ss_len) == 0;
    if (fd >= 0)
        close(fd);
    if (!is_ok)
        return false;
    int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(out, cap, "%d", port);
    return true;
}

bool ferryrun_pick_free_port(const char *addr, char *out, size_t cap)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    bool is_ok = false;
    if (getaddrinfo(addr, "0", &hints, &res) == 0) {
        for (const struct addrinfo *ai = res; ai && !is_ok; ai = ai->ai_next)
            is_ok = bound_port_of(ai, out, cap);
        freeaddrinfo(res);
    }
    if (is_ok || !addr)
        return is_ok;
    /* Not an address of this host (a name behind NAT, say): the store will listen on every
       interface, so any free port will do. */
    return ferryrun_pick_free_port(NULL, out, cap);
}

/* FERRY_AUTH_TOKEN when set, else the token derived from the per-user secret for scope (the
   same on every node sharing the home directory), else (scope NULL) a fresh random one.
   0; 2 for an unusable FERRY_AUTH_TOKEN, 1 when no token could be made, after printing why. */
static int pick_token(const char *scope, char *out, size_t cap)
{
    const char *env = getenv("FERRY_AUTH_TOKEN");
    if (env && !*env)
        return fprintf(stderr, "ferryrun: FERRY_AUTH_TOKEN is empty; unset it (ferryrun then "
                               "makes one) or set it to a shared secret\n"),
               2;
    if (env && strlen(env) >= cap)
        return fprintf(stderr, "ferryrun: FERRY_AUTH_TOKEN is longer than %zu bytes\n", cap - 1),
               2;
    if (env) {
        snprintf(out, cap, "%s", env);
        return 0;
    }
    if (!scope) {
        if (random_token(out, cap))
            return 0;
        return fprintf(stderr, "ferryrun: getrandom failed: %s\n", strerror(errno)), 1;
    }
    char derived[FERRY__TOKEN_HEX_LEN + 1];
    if (ferry__launch_secret_token(scope, derived) != FERRY_OK)
        return fprintf(stderr, "ferryrun: cannot derive the job's token (set FERRY_AUTH_TOKEN "
                               "to the same secret on every node instead): %s\n",
                       ferry_last_error()),
               1;
    snprintf(out, cap, "%s", derived);
    return 0;
}

/* One node: rank 0's store on the master address, a free port unless one is given. With
   --standalone, nothing is inherited from a surrounding job: a free port and a fresh token. */
static int plan_one_node(const ferryrun_options *o, ferryrun_plan *p)
{
    const char *addr = o->master_addr, *port = o->master_port;
    if (!addr && !o->is_standalone)
        addr = getenv("MASTER_ADDR");
    if (!port && !o->is_standalone)
        port = getenv("MASTER_PORT");
    snprintf(p->master_addr, sizeof p->master_addr, "%s", addr && *addr ? addr : "127.0.0.1");
    if (port)
        snprintf(p->master_port, sizeof p->master_port, "%s", port);
    else if (!ferryrun_pick_free_port(p->master_addr, p->master_port, sizeof p->master_port))
        return fprintf(stderr, "ferryrun: no free port on %s\n", p->master_addr), 2;
    p->world_size = p->nproc;
    if (o->is_standalone)
        return random_token(p->token, sizeof p->token)
                   ? 0
                   : (fprintf(stderr, "ferryrun: getrandom failed: %s\n", strerror(errno)), 1);
    return pick_token(NULL, p->token, sizeof p->token);
}

/* Fixed ranks: every node has the same -n and knows rank 0's address and port. */
static int plan_static(const ferryrun_options *o, ferryrun_plan *p)
{
    const char *addr = o->master_addr, *port = o->master_port;
    char endpoint_port[16];
    snprintf(endpoint_port, sizeof endpoint_port, "%d", o->endpoint_port);
    if (!addr)
        addr = o->has_endpoint ? o->endpoint_host : getenv("MASTER_ADDR");
    if (!port)
        port = o->has_endpoint ? endpoint_port : getenv("MASTER_PORT");
    if (!port)
        return fprintf(stderr, "ferryrun: --nnodes %d with fixed ranks needs --master-port (or "
                               "MASTER_PORT, or --rdzv-endpoint)\n",
                       o->nnodes),
               2;
    snprintf(p->master_addr, sizeof p->master_addr, "%s", addr && *addr ? addr : "127.0.0.1");
    snprintf(p->master_port, sizeof p->master_port, "%s", port);
    p->rank_offset = o->node_rank * o->nproc;
    p->world_size = o->nnodes * o->nproc;
    char store[FERRYRUN_HOST_MAX + 16], scope[FERRYRUN_HOST_MAX + 200];
    ferryrun_host_port(p->master_addr, atoi(p->master_port), store, sizeof store);
    snprintf(scope, sizeof scope, "ferryrun/static/%s/%s", store, o->run_id);
    return pick_token(scope, p->token, sizeof p->token);
}

static int run_nodes(const ferryrun_options *o, ferryrun_plan *p)
{
    char endpoint[FERRYRUN_HOST_MAX + 16], scope[FERRYRUN_HOST_MAX + 200];
    ferryrun_host_port(o->endpoint_host, o->endpoint_port, endpoint, sizeof endpoint);
    snprintf(scope, sizeof scope, "ferryrun/%s/%s", o->run_id, endpoint);
    int rc = pick_token(scope, p->token, sizeof p->token);
    if (rc != 0)
        return rc;
    ferryrun_nodes *nodes = ferryrun_nodes_join(o, p);
    if (!nodes)
        return 1;
    rc = ferryrun_run_children(p);
    ferryrun_nodes_finish(nodes);
    return rc;
}

int main(int argc, char **argv)
{
    ferryrun_options o;
    int rc = ferryrun_parse_args(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (o.is_check)
        return ferryrun_check();
    ferryrun_plan p = {.nproc = o.nproc, .node_rank = o.node_rank, .nnodes = o.nnodes,
                       .run_id = o.run_id, .apps = o.apps, .n_apps = o.n_apps};
    if (o.nnodes > 1 && o.has_endpoint && !o.is_static_backend)
        return run_nodes(&o, &p);
    rc = o.nnodes > 1 ? plan_static(&o, &p) : plan_one_node(&o, &p);
    if (rc != 0)
        return rc;
    return ferryrun_run_children(&p);
}
