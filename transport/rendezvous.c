/* Rendezvous over the store. Joining costs each non-zero rank a fixed number of store operations:
   claim its record key with compare_set, block on the table key, then count itself as having
   fetched it. Rank 0 alone waits for all record keys, checks them (unique names, agreeing world
   sizes) and publishes either the table or the error every worker must report, so all ranks fail
   the same way with the same message. (torch has every rank read every other rank's key, which is
   what makes its rendezvous slow past a few dozen workers.) The collectives are in
   rendezvous_rounds.c. Per-rank presence keys cost one set each and let a timeout name exactly
   which ranks never came. Every store operation carries
   what is left of the caller's deadline; a wait whose store stopped answering ends at once with
   the store's error instead of running on. Parsing init_method, the environment and the token
   policy is init_method.c's. */
#include "transport/rendezvous_impl.h"

#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/init_method.h"
#include "transport/launcher.h"

#define ADDR_MAX (64u << 10)
/* How long rank 0 keeps the store up for the others after a failed join or at free. */
#define LINGER_MAX_S 5.0
#define LEAVE_TIMEOUT_S 1.0

/* A growable byte buffer for records and the table. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool is_oom;
} buf;

typedef struct {
    const uint8_t *p;
    size_t left;
    bool is_bad;
} cursor;

/* ---- encoding --------------------------------------------------------------------------- */

static void put(buf *b, const void *data, size_t n)
{
    if (b->is_oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = ferry__realloc(b->p, cap);
        if (!p) {
            b->is_oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u32(buf *b, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, be, 4);
}

static void put_blob(buf *b, const void *data, size_t n)
{
    put_u32(b, (uint32_t)n);
    put(b, data, n);
}

static uint32_t get_u32(cursor *c)
{
    if (c->is_bad || c->left < 4) {
        c->is_bad = true;
        return 0;
    }
    uint32_t v = (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 |
                 c->p[3];
    c->p += 4;
    c->left -= 4;
    return v;
}

static const uint8_t *get_blob(cursor *c, size_t *len)
{
    *len = get_u32(c);
    if (c->is_bad || c->left < *len) {
        c->is_bad = true;
        return NULL;
    }
    const uint8_t *p = c->p;
    c->p += *len;
    c->left -= *len;
    return p;
}

/* A record: rank, world size, name, address blob. */
static void put_record(buf *b, int rank, int world_size, const char *name, const void *addr,
                       size_t addr_len)
{
    put_u32(b, (uint32_t)rank);
    put_u32(b, (uint32_t)world_size);
    put_blob(b, name, strlen(name));
    put_blob(b, addr, addr_len);
}

static ferry_status get_record(cursor *c, ferry__peer_entry *out)
{
    size_t name_len, addr_len;
    out->rank = (int)get_u32(c);
    out->world_size = (int)get_u32(c);
    const uint8_t *name = get_blob(c, &name_len);
    const uint8_t *addr = get_blob(c, &addr_len);
    if (c->is_bad || name_len >= FERRY__WORKER_NAME_MAX || addr_len > ADDR_MAX)
        return ferry__fail(FERRY_EPROTO, "malformed worker record in the rendezvous store");
    out->name = ferry__strndup((const char *)name, name_len);
    out->addr = ferry__malloc(addr_len);
    if (!out->name || !out->addr)
        return ferry__fail(FERRY_ENOMEM, "out of memory reading the worker table");
    if (addr_len)
        memcpy(out->addr, addr, addr_len);
    out->addr_len = addr_len;
    return FERRY_OK;
}

static void free_peers(ferry__peer_entry *peers, int n)
{
    for (int i = 0; peers && i < n; i++) {
        ferry__free(peers[i].name);
        ferry__free(peers[i].addr);
    }
    ferry__free(peers);
}

/* ---- keys ------------------------------------------------------------------------------- */

int ferry__rdv_missing_ranks(ferry__store *st, const char *prefix, int world_size, char *out,
                             size_t out_len)
{
    char **keys = ferry__calloc((size_t)world_size, sizeof *keys);
    bool *present = ferry__calloc((size_t)world_size, sizeof *present);
    int n_missing = 0;
    bool is_ok = keys && present;
    for (int r = 0; is_ok && r < world_size; r++) {
        keys[r] = ferry__malloc(KEY_LEN);
        is_ok = keys[r] != NULL;
        if (is_ok)
            rank_key(keys[r], prefix, r);
    }
    if (is_ok && ferry__store_check(st, (const char *const *)keys, (size_t)world_size, present,
                                    AFTER_DEADLINE_S) != FERRY_OK)
        n_missing = -1;
    else if (is_ok) {
        size_t used = 0;
        for (int r = 0; r < world_size; r++)
            n_missing += !present[r];
        used += (size_t)snprintf(out, out_len, "rank%s ", n_missing > 1 ? "s" : "");
        for (int r = 0, listed = 0; r < world_size && used < out_len; r++) {
            if (!present[r])
                used += (size_t)snprintf(out + used, out_len - used, "%s%d", listed++ ? ", " : "",
                                         r);
        }
        if (used < out_len)
            snprintf(out + used, out_len - used, " never arrived");
    }
    for (int r = 0; keys && r < world_size; r++)
        ferry__free(keys[r]);
    ferry__free(keys);
    ferry__free(present);
    return n_missing;
}

/* ---- join ------------------------------------------------------------------------------- */

#define KEY_RECORDS "ferry/rdv"
#define KEY_TABLE "ferry/rdv/table"
#define KEY_FETCHED "ferry/rdv/fetched"
#define KEY_LEFT "ferry/rdv/left"
#define KEY_CLOSED "ferry/rdv/closed"

/* Adds one to key; whoever brings it to `target` sets key/done, which waiters block on. */
static ferry_status count_in(ferry__store *st, const char *key, int64_t target, double timeout_s)
{
    char done[KEY_LEN];
    int64_t n = 0;
    double deadline = ferry__now_s() + timeout_s;
    ferry_status rc = ferry__store_add(st, key, 1, &n, timeout_s);
    snprintf(done, sizeof done, "%s/done", key);
    if (rc == FERRY_OK && n == target)
        rc = ferry__store_set(st, done, "1", 1, left_s(deadline));
    return rc;
}

/* Rank 0 after a failed join: the others are blocked on the table, so keep the store up until
   `fetchers` of them read the verdict (or a short while passes). */
static void linger_for_fetchers(ferry__rendezvous *rdv, uint32_t fetchers, double timeout_s)
{
    void *val = NULL;
    size_t len;
    if (!rdv->server || fetchers == 0)
        return;
    double linger = timeout_s > 0 && timeout_s < LINGER_MAX_S ? timeout_s : LINGER_MAX_S;
    ferry_status saved = ferry_last_status();
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ferry_last_error());
    if (ferry__store_get(rdv->store, KEY_FETCHED "/done", linger, &val, &len) == FERRY_OK)
        ferry__free(val);
    ferry_set_error(saved, "%s", msg);
}

/* The table: u32 status, u32 fetchers, then either the error message or the records. */
static ferry_status publish_verdict(ferry__rendezvous *rdv, ferry_status verdict, uint32_t fetchers,
                                    const ferry__peer_entry *peers, double timeout_s)
{
    buf b = {0};
    put_u32(&b, (uint32_t)verdict);
    put_u32(&b, fetchers);
    if (verdict != FERRY_OK)
        put_blob(&b, ferry_last_error(), strlen(ferry_last_error()));
    for (int r = 0; verdict == FERRY_OK && r < rdv->world_size; r++)
        put_record(&b, peers[r].rank, peers[r].world_size, peers[r].name, peers[r].addr,
                   peers[r].addr_len);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ferry_last_error());
    ferry_status rc = b.is_oom ? ferry__fail(FERRY_ENOMEM, "out of memory building the worker table")
                               : ferry__store_set(rdv->store, KEY_TABLE, b.p, b.len, timeout_s);
    ferry__free(b.p);
    if (rc != FERRY_OK)
        return rc;
    return verdict == FERRY_OK ? FERRY_OK : ferry_set_error(verdict, "%s", msg);
}

/* Rank 0: checks the records for what only the whole table shows. */
ferry_status ferry__rdv_check_table(const ferry__rendezvous *rdv, const ferry__peer_entry *peers)
{
    for (int r = 0; r < rdv->world_size; r++) {
        if (peers[r].rank != r || peers[r].world_size != rdv->world_size)
            return ferry__fail(FERRY_EINVAL,
                               "worker %s (rank %d) was started with world size %d, but rank 0 "
                               "has %d",
                               peers[r].name, r, peers[r].world_size, rdv->world_size);
        for (int q = 0; q < r; q++)
            if (!strcmp(peers[q].name, peers[r].name))
                return ferry__fail(FERRY_EINVAL,
                                   "RPC worker name %s is not unique. Workers %d and %d share the "
                                   "same name.",
                                   peers[r].name, q, r);
    }
    return FERRY_OK;
}

/* Rank 0: reads every record once all exist. */
static ferry_status read_records(ferry__rendezvous *rdv, ferry__peer_entry *peers, double deadline)
{
    char key[KEY_LEN];
    for (int r = 0; r < rdv->world_size; r++) {
        void *val = NULL;
        size_t len = 0;
        rank_key(key, KEY_RECORDS, r);
        ferry_status rc = ferry__store_get(rdv->store, key, left_s(deadline), &val, &len);
        if (rc == FERRY_OK) {
            cursor c = {.p = val, .left = len};
            rc = get_record(&c, &peers[r]);
        }
        ferry__free(val);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

/* Rank 0: waits for every record, then publishes the table or the error all ranks report. */
static ferry_status gather(ferry__rendezvous *rdv, double deadline, double timeout_s)
{
    int n = rdv->world_size;
    char **keys = ferry__calloc((size_t)n, sizeof *keys);
    ferry_status rc = keys ? FERRY_OK : ferry__fail(FERRY_ENOMEM, "out of memory in rendezvous");
    for (int r = 0; rc == FERRY_OK && r < n; r++) {
        keys[r] = ferry__malloc(KEY_LEN);
        if (!keys[r])
            rc = ferry__fail(FERRY_ENOMEM, "out of memory in rendezvous");
        else
            rank_key(keys[r], KEY_RECORDS, r);
    }
    if (rc == FERRY_OK)
        rc = ferry__store_wait(rdv->store, (const char *const *)keys, (size_t)n, left_s(deadline));
    for (int r = 0; keys && r < n; r++)
        ferry__free(keys[r]);
    ferry__free(keys);
    if (rc == FERRY_ETIMEDOUT) {
        char missing[900] = "";
        int n_missing =
            ferry__rdv_missing_ranks(rdv->store, KEY_RECORDS, n, missing, sizeof missing);
        if (n_missing < 0)
            return ferry_last_status();
        ferry__fail(FERRY_ETIMEDOUT, "rendezvous timed out after %g s: %s", timeout_s, missing);
        rc = publish_verdict(rdv, FERRY_ETIMEDOUT, (uint32_t)(n - n_missing - 1), NULL,
                             AFTER_DEADLINE_S);
        linger_for_fetchers(rdv, (uint32_t)(n - n_missing - 1), timeout_s);
        return rc;
    }
    if (rc != FERRY_OK)
        return rc;
    rdv->peers = ferry__calloc((size_t)n, sizeof *rdv->peers);
    if (!rdv->peers)
        return ferry__fail(FERRY_ENOMEM, "out of memory in rendezvous");
    rc = read_records(rdv, rdv->peers, deadline);
    if (rc == FERRY_OK)
        rc = ferry__rdv_check_table(rdv, rdv->peers);
    rc = publish_verdict(rdv, rc, (uint32_t)(n - 1), rdv->peers,
                         left_s(deadline) > AFTER_DEADLINE_S ? left_s(deadline) : AFTER_DEADLINE_S);
    if (rc != FERRY_OK)
        linger_for_fetchers(rdv, (uint32_t)(n - 1), timeout_s);
    return rc;
}

/* Non-zero ranks: reads the verdict rank 0 published, counting itself as having read it. */
static ferry_status decode_table(ferry__rendezvous *rdv, const uint8_t *p, size_t len,
                                 double deadline)
{
    cursor c = {.p = p, .left = len};
    uint32_t verdict = get_u32(&c), fetchers = get_u32(&c);
    if (c.is_bad || verdict >= FERRY__STATUS_COUNT)
        return ferry__fail(FERRY_EPROTO, "malformed worker table in the rendezvous store");
    double ack_s = left_s(deadline) > AFTER_DEADLINE_S ? left_s(deadline) : AFTER_DEADLINE_S;
    if (count_in(rdv->store, KEY_FETCHED, fetchers, ack_s) != FERRY_OK)
        ferry__log_warn("rendezvous", "could not acknowledge the worker table: %s",
                        ferry_last_error());
    if (verdict != FERRY_OK) {
        size_t msg_len;
        const uint8_t *msg = get_blob(&c, &msg_len);
        if (c.is_bad)
            return ferry__fail(FERRY_EPROTO, "malformed worker table in the rendezvous store");
        return ferry_set_error((ferry_status)verdict, "%.*s", (int)msg_len, (const char *)msg);
    }
    rdv->peers = ferry__calloc((size_t)rdv->world_size, sizeof *rdv->peers);
    if (!rdv->peers)
        return ferry__fail(FERRY_ENOMEM, "out of memory reading the worker table");
    for (int r = 0; r < rdv->world_size; r++) {
        ferry_status rc = get_record(&c, &rdv->peers[r]);
        if (rc == FERRY_OK && rdv->peers[r].rank != r)
            rc = ferry__fail(FERRY_EPROTO, "malformed worker table in the rendezvous store");
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

static ferry_status fetch(ferry__rendezvous *rdv, double deadline, double timeout_s)
{
    void *val = NULL;
    size_t len = 0;
    /* A little longer than rank 0 waits, so its verdict (naming the missing ranks) wins. */
    double wait_s = deadline > 0 ? left_s(deadline) + 1.0 : 0;
    ferry_status rc = ferry__store_get(rdv->store, KEY_TABLE, wait_s, &val, &len);
    if (rc == FERRY_ETIMEDOUT && !ferry__store_is_connected(rdv->store))
        return rc; /* the store itself stopped answering: its error says so */
    if (rc == FERRY_ETIMEDOUT) {
        char missing[900] = "";
        int n_missing = ferry__rdv_missing_ranks(rdv->store, KEY_RECORDS, rdv->world_size,
                                                 missing, sizeof missing);
        if (n_missing < 0)
            return ferry_last_status();
        if (n_missing > 0)
            return ferry__fail(FERRY_ETIMEDOUT, "rendezvous timed out after %g s: %s", timeout_s,
                               missing);
        return ferry__fail(FERRY_ETIMEDOUT,
                           "rendezvous timed out after %g s waiting for rank 0 to publish the "
                           "worker table",
                           timeout_s);
    }
    if (rc == FERRY_OK)
        rc = decode_table(rdv, val, len, deadline);
    ferry__free(val);
    return rc;
}

static ferry_status open_store(ferry__rendezvous *rdv, const char *host, int port,
                               const char *token, double deadline, double timeout_s)
{
    if (rdv->file_path) {
        rdv->store = ferry__store_open_file(rdv->file_path);
        return rdv->store ? FERRY_OK : ferry_last_status();
    }
    if (rdv->rank == 0) {
        rdv->server = ferry__store_server_start(host, port, token, NULL, NULL);
        if (!rdv->server)
            return ferry_last_status();
    }
    rdv->store = ferry__store_connect(host, port, token, left_s(deadline));
    if (rdv->store)
        return FERRY_OK;
    if (ferry_last_status() != FERRY_ETIMEDOUT)
        return ferry_last_status();
    char why[900];
    snprintf(why, sizeof why, "%s", ferry_last_error());
    return ferry__fail(FERRY_ETIMEDOUT, "rendezvous timed out after %g s: %s (is rank 0 running?)",
                       timeout_s, why);
}

/* Claims this rank's record key; a second worker with the same rank is refused. */
static ferry_status publish_self(ferry__rendezvous *rdv, const char *name, const void *addr,
                                 size_t addr_len, double deadline)
{
    char key[KEY_LEN];
    buf b = {0};
    void *actual = NULL;
    size_t actual_len = 0;
    put_record(&b, rdv->rank, rdv->world_size, name, addr, addr_len);
    if (b.is_oom)
        return ferry__fail(FERRY_ENOMEM, "out of memory in rendezvous");
    rank_key(key, KEY_RECORDS, rdv->rank);
    ferry_status rc = ferry__store_compare_set(rdv->store, key, NULL, 0, b.p, b.len, &actual,
                                               &actual_len, left_s(deadline));
    if (rc == FERRY_OK && (actual_len != b.len || memcmp(actual, b.p, b.len))) {
        ferry__peer_entry other = {0};
        cursor c = {.p = actual, .left = actual_len};
        bool is_known = get_record(&c, &other) == FERRY_OK;
        rc = ferry__fail(FERRY_EINVAL, "rank %d was claimed twice (by workers %s and %s)%s",
                         rdv->rank, is_known ? other.name : "?", name,
                         rdv->file_path ? "; is the file store left over from an earlier run?" : "");
        ferry__free(other.name);
        ferry__free(other.addr);
    }
    ferry__free(actual);
    ferry__free(b.p);
    return rc;
}

static void teardown(ferry__rendezvous *rdv)
{
    ferry__store_close(rdv->store);
    ferry__store_server_stop(rdv->server);
    free_peers(rdv->peers, rdv->world_size);
    for (round_count *r = rdv->rounds, *next; r; r = next) {
        next = r->next;
        ferry__free(r->name);
        ferry__free(r);
    }
    ferry__free(rdv->file_path);
    ferry__free(rdv);
}

ferry__rendezvous *ferry__rendezvous_open(const char *init_method, int rank, int world_size,
                                          double timeout_s, const char *token)
{
    char *host = NULL, *path = NULL;
    int port = 0;
    if (ferry__rendezvous_resolve_env(init_method, &rank, &world_size, &host, &port, &path) !=
        FERRY_OK)
        return NULL;
    double deadline = timeout_s > 0 ? ferry__now_s() + timeout_s : 0;
    ferry__rendezvous *rdv = ferry__calloc(1, sizeof *rdv);
    if (!rdv) {
        ferry__free(host);
        ferry__free(path);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory in rendezvous");
    }
    rdv->rank = rank;
    rdv->world_size = world_size;
    rdv->file_path = path;
    if (ferry__rendezvous_is_pmix(init_method)) {
        rdv->is_pmix = true;
        ferry__free(host);
        return rdv;
    }
    /* No token set: a launcher that names the job (Slurm, torchrun) gets one derived from the
       user's secret, unless the user chose to run without one. */
    const char *insecure = getenv("FERRY_INSECURE");
    char derived[FERRY__TOKEN_HEX_LEN + 1];
    bool is_derived = false;
    ferry_status rc = FERRY_OK;
    if (!token && !path && !(insecure && !strcmp(insecure, "1")))
        rc = ferry__launch_job_token(derived, &is_derived);
    if (is_derived)
        token = derived;
    if (rc == FERRY_OK)
        rc = ferry__rendezvous_token_policy(token, insecure, path != NULL, &token);
    if (rc == FERRY_OK && !token && !path)
        ferry__log_warn("rendezvous",
                        "FERRY_INSECURE=1: the store at %s:%d runs without an auth token; "
                        "anyone who reaches the port can claim a rank or read the addresses",
                        host, port);
    if (rc == FERRY_OK)
        rc = open_store(rdv, host, port, token, deadline, timeout_s);
    explicit_bzero(derived, sizeof derived);
    ferry__free(host);
    if (rc != FERRY_OK) {
        teardown(rdv);
        return NULL;
    }
    return rdv;
}

/* Publishes by deadline (0 = none); timeout_s is what error messages call the timeout. */
static ferry_status publish_by(ferry__rendezvous *rdv, const char *name, const void *addr,
                               size_t addr_len, double deadline, double timeout_s)
{
    ferry_status rc = ferry__rendezvous_check_name(name);
    if (rc == FERRY_OK && ((!addr && addr_len) || addr_len > ADDR_MAX))
        rc = ferry__fail(FERRY_EINVAL, "rendezvous address blob of %zu bytes is invalid",
                         addr_len);
    if (rc == FERRY_OK && rdv->is_pmix)
        rc = ferry__rdv_pmix_join(rdv, name, addr, addr_len, left_s(deadline));
    else if (rc == FERRY_OK)
        rc = publish_self(rdv, name, addr, addr_len, deadline);
    if (rc == FERRY_OK && !rdv->is_pmix)
        rc = rdv->rank == 0 ? gather(rdv, deadline, timeout_s) : fetch(rdv, deadline, timeout_s);
    if (rc != FERRY_OK) {
        teardown(rdv);
        return rc;
    }
    ferry__log_debug("rendezvous", "rank %d of %d joined as %s", rdv->rank, rdv->world_size,
                     name);
    return FERRY_OK;
}

ferry_status ferry__rendezvous_publish(ferry__rendezvous *rdv, const char *name, const void *addr,
                                       size_t addr_len, double timeout_s)
{
    return publish_by(rdv, name, addr, addr_len, timeout_s > 0 ? ferry__now_s() + timeout_s : 0,
                      timeout_s);
}

ferry__rendezvous *ferry__rendezvous_join(const char *init_method, int rank, int world_size,
                                          const char *name, const void *addr, size_t addr_len,
                                          double timeout_s, const char *token)
{
    if (ferry__rendezvous_check_name(name) != FERRY_OK)
        return NULL;
    if ((!addr && addr_len) || addr_len > ADDR_MAX)
        return ferry__fail_null(FERRY_EINVAL, "rendezvous address blob of %zu bytes is invalid",
                                addr_len);
    double deadline = timeout_s > 0 ? ferry__now_s() + timeout_s : 0;
    ferry__rendezvous *rdv = ferry__rendezvous_open(init_method, rank, world_size, timeout_s, token);
    if (!rdv)
        return NULL;
    return publish_by(rdv, name, addr, addr_len, deadline, timeout_s) == FERRY_OK ? rdv : NULL;
}

/* ---- accessors and leaving -------------------------------------------------------------- */

const ferry__peer_entry *ferry__rendezvous_peers(ferry__rendezvous *rdv, int *n)
{
    if (n)
        *n = rdv ? rdv->world_size : 0;
    return rdv ? rdv->peers : NULL;
}

int ferry__rendezvous_rank(const ferry__rendezvous *rdv)
{
    return rdv ? rdv->rank : -1;
}

ferry__store *ferry__rendezvous_store(ferry__rendezvous *rdv)
{
    return rdv ? rdv->store : NULL;
}

ferry__store_server *ferry__rendezvous_server(ferry__rendezvous *rdv)
{
    return rdv ? rdv->server : NULL;
}

/* Rank 0 keeps serving until the others said they left or hung up, for linger_s at most. */
static void leave(ferry__rendezvous *rdv, double linger_s)
{
    int64_t n = 0;
    if (rdv->file_path) {
        if (ferry__store_add(rdv->store, KEY_CLOSED, 1, &n, LEAVE_TIMEOUT_S) == FERRY_OK &&
            n == rdv->world_size)
            unlink(rdv->file_path);
        return;
    }
    if (rdv->rank != 0) {
        count_in(rdv->store, KEY_LEFT, rdv->world_size - 1, LEAVE_TIMEOUT_S);
        return;
    }
    double deadline = ferry__now_s() + linger_s;
    while (rdv->world_size > 1 && ferry__now_s() < deadline &&
           ferry__store_server_clients(rdv->server) > 1) {
        void *val = NULL;
        size_t len;
        ferry_status rc = ferry__store_get(rdv->store, KEY_LEFT "/done", 0.05, &val, &len);
        ferry__free(val);
        if (rc != FERRY_ETIMEDOUT)
            break;
    }
}

void ferry__rendezvous_free(ferry__rendezvous *rdv)
{
    ferry__rendezvous_free_within(rdv, LINGER_MAX_S);
}

void ferry__rendezvous_free_within(ferry__rendezvous *rdv, double linger_s)
{
    if (!rdv)
        return;
    if (!(linger_s >= 0) || linger_s > LINGER_MAX_S)
        linger_s = LINGER_MAX_S;
    /* Leaving is best effort and must not replace an error the caller is about to report. */
    ferry_status saved = ferry_last_status();
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ferry_last_error());
    if (rdv->store)
        leave(rdv, linger_s);
    teardown(rdv);
    if (saved != FERRY_OK)
        ferry_set_error(saved, "%s", msg);
    else
        ferry_clear_error();
}
