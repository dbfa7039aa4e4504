/* The node rendezvous: several ferryruns, one per node, agree on one job before any process
   starts. Node 0 serves ferry's own store on the endpoint, with the job's token; every node
   (node 0 included) connects to it, claims its node rank with the number of processes it will
   start, and waits until every node did. Node 0 also publishes where rank 0's store will listen
   (MASTER_ADDR and a port it picked). Each node then reads every claim: the world size is their
   sum, and its first rank the sum of the nodes before it, so nodes may start different numbers
   of processes. While waiting a node says every few seconds where it waits and for whom; past
   the rendezvous timeout it names the nodes that never came.

   Keys: "node/<R>" = "<nproc> <nnodes> <nonce>" (claimed once: a second node with the same rank
   is refused), "master" = "<port> <addr>", "read" counts the nodes that read everything and
   "read/done" is set by the last, so node 0 knows when its store may stop. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "ferry/error.h"
#include "tools/ferryrun/ferryrun.h"
#include "transport/store.h"

#define REPORT_EVERY_S 5.0
#define OP_TIMEOUT_S 10.0
/* How long node 0 keeps its store up, after its processes ended, for a node still reading. */
#define FINISH_WAIT_S 5.0
#define LIST_MAX 8
#define KEY_LEN 32

struct ferryrun_nodes {
    ferry__store_server *server; /* node 0 only */
    ferry__store *store;         /* closed on other nodes once they read everything */
};

/* Where and since when this node waits, for the lines it prints. */
typedef struct {
    const ferryrun_options *o;
    const ferryrun_plan *p;
    char endpoint[FERRYRUN_HOST_MAX + 16];
    double started_s, deadline_s, next_report_s;
} waiter;

/* How long the next attempt may block: until the next report is due or the deadline. */
static double slice_s(const waiter *w)
{
    double now = ferry__now_s(), until = w->next_report_s < w->deadline_s ? w->next_report_s
                                                                         : w->deadline_s;
    return until - now > 0.01 ? until - now : 0.01;
}

static bool is_past_deadline(const waiter *w)
{
    return ferry__now_s() >= w->deadline_s;
}

/* "node 1" or "nodes 1, 3, 4" (the first LIST_MAX, then how many more). */
static void format_nodes(const int *ranks, int n, char *out, size_t cap)
{
    size_t used = (size_t)snprintf(out, cap, "node%s", n == 1 ? "" : "s");
    for (int i = 0; i < n && i < LIST_MAX && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s %d", i ? "," : "", ranks[i]);
    if (n > LIST_MAX && used < cap)
        snprintf(out + used, cap - used, " and %d more", n - LIST_MAX);
}

/* Prints the waiting line once it is due. */
static void report(waiter *w, const char *whom)
{
    double now = ferry__now_s();
    if (now < w->next_report_s)
        return;
    if (w->p->node_rank == 0)
        fprintf(stderr, "ferryrun: node 0 of %d serving %s, waiting for %s (%.0f s so far)\n",
                w->p->nnodes, w->endpoint, whom, now - w->started_s);
    else
        fprintf(stderr, "ferryrun: node %d of %d waiting at %s for %s (%.0f s so far)\n",
                w->p->node_rank, w->p->nnodes, w->endpoint, whom, now - w->started_s);
    while (w->next_report_s <= now)
        w->next_report_s += REPORT_EVERY_S;
}

static void fail_timeout(const waiter *w, const char *whom, const char *detail)
{
    fprintf(stderr, "ferryrun: the nodes did not meet at %s within %g s: %s never came%s%s\n",
            w->endpoint, w->o->rdzv_timeout_s, whom, detail ? " " : "", detail ? detail : "");
}

static void node_key(char *key, int node)
{
    snprintf(key, KEY_LEN, "node/%d", node);
}

/* Connects to the endpoint, retrying (node 0 may not be up yet) until the deadline. */
static int connect_store(ferryrun_nodes *n, waiter *w)
{
    for (;;) {
        n->store = ferry__store_connect(w->o->endpoint_host, w->o->endpoint_port, w->p->token,
                                        slice_s(w));
        if (n->store)
            return 0;
        if (ferry_last_status() == FERRY_EAUTH) {
            fprintf(stderr, "ferryrun: node %d: %s. Every node needs the same FERRY_AUTH_TOKEN, "
                            "or, with it unset, the same --rdzv-id and --rdzv-endpoint and a "
                            "shared home directory (the token is derived from ~/.ferry/secret)\n",
                    w->p->node_rank, ferry_last_error());
            return 1;
        }
        if (ferry_last_status() != FERRY_ETIMEDOUT) {
            fprintf(stderr, "ferryrun: node %d cannot reach the node rendezvous at %s: %s\n",
                    w->p->node_rank, w->endpoint, ferry_last_error());
            return 1;
        }
        if (is_past_deadline(w)) {
            /* The store's message ends with the cause ("Connection refused", ...). */
            const char *cause = strrchr(ferry_last_error(), ':');
            char why[600];
            snprintf(why, sizeof why, "(nothing answered there: %s)",
                     cause && cause[1] == ' ' ? cause + 2 : ferry_last_error());
            return fail_timeout(w, "node 0", why), 1;
        }
        report(w, "node 0");
    }
}

/* Claims node/<rank>; refuses when another node holds it. */
static int claim(ferryrun_nodes *n, const waiter *w)
{
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
        nonce = (uint64_t)ferry__now_ns();
    char key[KEY_LEN], mine[96];
    node_key(key, w->p->node_rank);
    int len = snprintf(mine, sizeof mine, "%d %d %016" PRIx64, w->p->nproc, w->p->nnodes, nonce);
    void *actual = NULL;
    size_t actual_len = 0;
    ferry_status rc = ferry__store_compare_set(n->store, key, NULL, 0, mine, (size_t)len, &actual,
                                               &actual_len, OP_TIMEOUT_S);
    bool is_taken = rc == FERRY_OK && (actual_len != (size_t)len || memcmp(actual, mine, actual_len));
    ferry__free(actual);
    if (rc != FERRY_OK)
        return fprintf(stderr, "ferryrun: node %d cannot join the node rendezvous at %s: %s\n",
                       w->p->node_rank, w->endpoint, ferry_last_error()),
               1;
    if (is_taken)
        return fprintf(stderr, "ferryrun: node rank %d is already taken at %s: give each node its "
                               "own --node-rank (or another job uses this endpoint and "
                               "--rdzv-id)\n",
                       w->p->node_rank, w->endpoint),
               1;
    return 0;
}

/* Node 0: where rank 0's store will listen, for every node's MASTER_ADDR and MASTER_PORT. */
static int publish_master(ferryrun_nodes *n, const waiter *w, ferryrun_plan *p)
{
    const ferryrun_options *o = w->o;
    snprintf(p->master_addr, sizeof p->master_addr, "%s",
             o->master_addr ? o->master_addr : o->endpoint_host);
    if (o->master_port)
        snprintf(p->master_port, sizeof p->master_port, "%s", o->master_port);
    else if (!ferryrun_pick_free_port(p->master_addr, p->master_port, sizeof p->master_port))
        return fprintf(stderr, "ferryrun: no free port on %s\n", p->master_addr), 1;
    char text[FERRYRUN_HOST_MAX + 32];
    int len = snprintf(text, sizeof text, "%s %s", p->master_port, p->master_addr);
    if (ferry__store_set(n->store, "master", text, (size_t)len, OP_TIMEOUT_S) != FERRY_OK)
        return fprintf(stderr, "ferryrun: node 0 cannot publish the master address: %s\n",
                       ferry_last_error()),
               1;
    return 0;
}

/* Which nodes have not claimed their rank yet (node 0 also until it published "master"). */
static int missing_nodes(ferryrun_nodes *n, int nnodes, int *out)
{
    int count = 0;
    char(*keys)[KEY_LEN] = ferry__calloc((size_t)nnodes + 1, KEY_LEN);
    const char **list = ferry__calloc((size_t)nnodes + 1, sizeof *list);
    bool *present = ferry__calloc((size_t)nnodes + 1, sizeof *present);
    if (keys && list && present) {
        for (int i = 0; i < nnodes; i++) {
            node_key(keys[i], i);
            list[i] = keys[i];
        }
        list[nnodes] = "master";
        if (ferry__store_check(n->store, list, (size_t)nnodes + 1, present, OP_TIMEOUT_S) ==
            FERRY_OK)
            for (int i = 0; i < nnodes; i++)
                if (!present[i] || (i == 0 && !present[nnodes]))
                    out[count++] = i;
    }
    ferry__free(keys);
    ferry__free(list);
    ferry__free(present);
    return count;
}

/* Waits until every node claimed its rank and node 0 published the master address. */
static int wait_for_all(ferryrun_nodes *n, waiter *w)
{
    int nnodes = w->p->nnodes, rc = 1;
    char(*keys)[KEY_LEN] = ferry__calloc((size_t)nnodes + 1, KEY_LEN);
    const char **list = ferry__calloc((size_t)nnodes + 1, sizeof *list);
    int *missing = ferry__calloc((size_t)nnodes, sizeof *missing);
    if (!keys || !list || !missing) {
        fprintf(stderr, "ferryrun: out of memory\n");
        goto done;
    }
    for (int i = 0; i < nnodes; i++) {
        node_key(keys[i], i);
        list[i] = keys[i];
    }
    list[nnodes] = "master";
    for (;;) {
        ferry_status st = ferry__store_wait(n->store, list, (size_t)nnodes + 1, slice_s(w));
        if (st == FERRY_OK) {
            rc = 0;
            break;
        }
        if (st != FERRY_ETIMEDOUT || !ferry__store_is_connected(n->store)) {
            fprintf(stderr, "ferryrun: node %d lost the node rendezvous at %s: %s\n",
                    w->p->node_rank, w->endpoint, ferry_last_error());
            break;
        }
        char whom[256];
        format_nodes(missing, missing_nodes(n, nnodes, missing), whom, sizeof whom);
        if (is_past_deadline(w)) {
            fail_timeout(w, whom, NULL);
            break;
        }
        report(w, whom);
    }
done:
    ferry__free(keys);
    ferry__free(list);
    ferry__free(missing);
    return rc;
}

/* Reads every claim and the master address into the plan. */
static int read_plan(ferryrun_nodes *n, const waiter *w, ferryrun_plan *p)
{
    int world = 0, offset = 0;
    for (int i = 0; i < p->nnodes; i++) {
        char key[KEY_LEN], text[96] = "";
        void *val = NULL;
        size_t len = 0;
        int nproc = 0, nnodes = 0;
        node_key(key, i);
        if (ferry__store_get(n->store, key, OP_TIMEOUT_S, &val, &len) != FERRY_OK)
            return fprintf(stderr, "ferryrun: node %d cannot read %s: %s\n", p->node_rank, key,
                           ferry_last_error()),
                   1;
        memcpy(text, val, len < sizeof text - 1 ? len : sizeof text - 1);
        ferry__free(val);
        if (sscanf(text, "%d %d", &nproc, &nnodes) != 2 || nproc < 1)
            return fprintf(stderr, "ferryrun: node %d's claim at %s is malformed\n", i,
                           w->endpoint),
                   1;
        if (nnodes != p->nnodes)
            return fprintf(stderr, "ferryrun: node %d was started with --nnodes %d, node %d with "
                                   "--nnodes %d: every node needs the same\n",
                           i, nnodes, p->node_rank, p->nnodes),
                   1;
        if (i < p->node_rank)
            offset += nproc;
        if (world > 1000000 - nproc)
            return fprintf(stderr, "ferryrun: the nodes' processes add up to too many ranks\n"), 1;
        world += nproc;
    }
    p->rank_offset = offset;
    p->world_size = world;
    if (p->node_rank == 0)
        return 0; /* it published master itself */
    void *val = NULL;
    size_t len = 0;
    char text[FERRYRUN_HOST_MAX + 32] = "";
    if (ferry__store_get(n->store, "master", OP_TIMEOUT_S, &val, &len) != FERRY_OK)
        return fprintf(stderr, "ferryrun: node %d cannot read the master address: %s\n",
                       p->node_rank, ferry_last_error()),
               1;
    memcpy(text, val, len < sizeof text - 1 ? len : sizeof text - 1);
    ferry__free(val);
    char *space = strchr(text, ' ');
    if (!space || space == text || (size_t)(space - text) >= sizeof p->master_port || !space[1])
        return fprintf(stderr, "ferryrun: the master address node 0 published is malformed\n"), 1;
    *space = '\0';
    memcpy(p->master_port, text, (size_t)(space - text) + 1); /* checked to fit above */
    snprintf(p->master_addr, sizeof p->master_addr, "%s", space + 1);
    return 0;
}

/* Counts this node as done reading; the last one tells node 0 its store may stop. */
static void count_read(ferryrun_nodes *n, int nnodes)
{
    int64_t count = 0;
    if (ferry__store_add(n->store, "read", 1, &count, OP_TIMEOUT_S) == FERRY_OK && count == nnodes)
        ferry__store_set(n->store, "read/done", "1", 1, OP_TIMEOUT_S);
}

static void nodes_free(ferryrun_nodes *n)
{
    if (!n)
        return;
    ferry__store_close(n->store);
    ferry__store_server_stop(n->server);
    ferry__free(n);
}

ferryrun_nodes *ferryrun_nodes_join(const ferryrun_options *o, ferryrun_plan *p)
{
    double now = ferry__now_s();
    waiter w = {.o = o, .p = p, .started_s = now, .deadline_s = now + o->rdzv_timeout_s,
                .next_report_s = now + REPORT_EVERY_S};
    ferryrun_host_port(o->endpoint_host, o->endpoint_port, w.endpoint, sizeof w.endpoint);
    ferryrun_nodes *n = ferry__calloc(1, sizeof *n);
    if (!n)
        return fprintf(stderr, "ferryrun: out of memory\n"), NULL;
    if (p->node_rank == 0) {
        /* Every IPv4 interface, as the other nodes only need to reach the port: a host name
           that resolves here to a loopback address (Debian's 127.0.1.1) must not hide the
           store from them. An IPv6 endpoint is served on its own address. */
        const char *bind_host = strchr(o->endpoint_host, ':') ? o->endpoint_host : NULL;
        n->server = ferry__store_server_start(bind_host, o->endpoint_port, p->token, NULL, NULL);
        if (!n->server) {
            fprintf(stderr, "ferryrun: node 0 cannot serve the node rendezvous on %s: %s\n",
                    w.endpoint, ferry_last_error());
            goto fail;
        }
    }
    if (connect_store(n, &w) != 0 || claim(n, &w) != 0)
        goto fail;
    if (p->node_rank == 0 && publish_master(n, &w, p) != 0)
        goto fail;
    if (wait_for_all(n, &w) != 0 || read_plan(n, &w, p) != 0)
        goto fail;
    count_read(n, p->nnodes);
    if (!n->server) {
        ferry__store_close(n->store);
        n->store = NULL;
    }
    return n;
fail:
    nodes_free(n);
    return NULL;
}

void ferryrun_nodes_finish(ferryrun_nodes *n)
{
    if (n && n->server && n->store) {
        void *val = NULL;
        size_t len = 0;
        if (ferry__store_get(n->store, "read/done", FINISH_WAIT_S, &val, &len) == FERRY_OK)
            ferry__free(val);
    }
    nodes_free(n);
}
