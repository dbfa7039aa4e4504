/* Rendezvous through PMIx (init_method pmix://): no store and no token. Each worker puts its
   record (name and fabric address blob) with PMIx_Put, one fence collects them, and every worker
   reads the whole table from its local PMIx server; the server only serves processes of this
   job, which is what the store's token stands for elsewhere. Barriers are fences; the integer
   all-reduce is a put, a collecting fence and a read of every rank's term. Every worker runs the
   same sequence of collectives, so a sequence number (and a per-process join count, for
   init_rpc after shutdown) keeps each round's keys apart. */
#include "transport/rendezvous_impl.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/pmix.h"

#define PMIX_KEY_MAX 256

static atomic_int joins;

static void round_key(ferry__rendezvous *rdv, char *key, const char *kind, const char *name)
{
    snprintf(key, PMIX_KEY_MAX, "ferry.%d.%d.%s.%.*s", rdv->pmix_join, rdv->pmix_round++, kind,
             PMIX_KEY_MAX / 2, name ? name : "");
}

static void free_values(void **vals, size_t *lens, int n)
{
    for (int i = 0; vals && i < n; i++)
        ferry__free(vals[i]);
    ferry__free(vals);
    ferry__free(lens);
}

ferry_status ferry__rdv_pmix_join(ferry__rendezvous *rdv, const char *name, const void *addr,
                                  size_t addr_len, double timeout_s)
{
    rdv->pmix_join = atomic_fetch_add(&joins, 1);
    size_t name_len = strlen(name), len = name_len + 1 + addr_len;
    uint8_t *rec = ferry__malloc(len);
    if (!rec)
        return ferry__fail(FERRY_ENOMEM, "out of memory in rendezvous");
    memcpy(rec, name, name_len + 1);
    if (addr_len)
        memcpy(rec + name_len + 1, addr, addr_len);
    char key[PMIX_KEY_MAX];
    round_key(rdv, key, "peer", "");
    void **vals = NULL;
    size_t *lens = NULL;
    ferry_status rc = ferry__pmix_allgather(key, rec, len, &vals, &lens, timeout_s,
                                            rdv->should_abort, rdv->abort_ctx);
    ferry__free(rec);
    if (rc != FERRY_OK)
        return rc;
    rdv->peers = ferry__calloc((size_t)rdv->world_size, sizeof *rdv->peers);
    if (!rdv->peers)
        rc = ferry__fail(FERRY_ENOMEM, "out of memory for the worker table");
    for (int r = 0; rc == FERRY_OK && r < rdv->world_size; r++) {
        const uint8_t *p = vals[r];
        const uint8_t *nul = memchr(p, '\0', lens[r]);
        if (!nul || nul == p || (size_t)(nul - p) >= FERRY__WORKER_NAME_MAX) {
            rc = ferry__fail(FERRY_EPROTO, "rank %d published a malformed record through PMIx", r);
            break;
        }
        ferry__peer_entry *e = &rdv->peers[r];
        size_t n = (size_t)(nul - p), alen = lens[r] - n - 1;
        e->rank = r;
        e->world_size = rdv->world_size;
        e->name = ferry__strndup((const char *)p, n);
        e->addr = ferry__malloc(alen ? alen : 1);
        e->addr_len = alen;
        if (!e->name || !e->addr)
            rc = ferry__fail(FERRY_ENOMEM, "out of memory for the worker table");
        else if (alen)
            memcpy(e->addr, nul + 1, alen);
    }
    free_values(vals, lens, rdv->world_size);
    if (rc == FERRY_OK)
        rc = ferry__rdv_check_table(rdv, rdv->peers);
    if (rc == FERRY_OK)
        ferry__log_debug("rendezvous", "rank %d of %d joined through PMIx as %s", rdv->rank,
                         rdv->world_size, name);
    return rc;
}

ferry_status ferry__rdv_pmix_barrier(ferry__rendezvous *rdv, const char *name, double timeout_s)
{
    char key[PMIX_KEY_MAX];
    round_key(rdv, key, "barrier", name);
    return ferry__pmix_barrier(key, timeout_s, rdv->should_abort, rdv->abort_ctx);
}

ferry_status ferry__rdv_pmix_allreduce_sum(ferry__rendezvous *rdv, const char *name,
                                           int64_t value, int64_t *sum, double timeout_s)
{
    char key[PMIX_KEY_MAX];
    round_key(rdv, key, "sum", name);
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)((uint64_t)value >> (56 - 8 * i));
    void **vals = NULL;
    size_t *lens = NULL;
    ferry_status rc = ferry__pmix_allgather(key, be, sizeof be, &vals, &lens, timeout_s,
                                            rdv->should_abort, rdv->abort_ctx);
    if (rc != FERRY_OK)
        return rc;
    int64_t total = 0;
    for (int r = 0; r < rdv->world_size && rc == FERRY_OK; r++) {
        uint64_t u = 0;
        if (lens[r] != 8) {
            rc = ferry__fail(FERRY_EPROTO, "rank %d sent a malformed term for '%s'", r, name);
            break;
        }
        for (int i = 0; i < 8; i++)
            u = u << 8 | ((const uint8_t *)vals[r])[i];
        if (__builtin_add_overflow(total, (int64_t)u, &total))
            rc = ferry__fail(FERRY_EINVAL, "allreduce '%s' overflowed", name);
    }
    free_values(vals, lens, rdv->world_size);
    if (rc == FERRY_OK)
        *sum = total;
    return rc;
}
