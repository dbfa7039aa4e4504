/* The agent's life: ferry_init_rpc (options, rendezvous, fabric, peers, modules) and
   ferry_shutdown with torch's graceful protocol. agent_access.c holds the agent as an object. */
#include "rpc/agent_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/log.h"
#include "rpc/pending.h"
#include "rpc/registry.h"
#include "rpc/serve.h"
#include "transport/launcher.h"

/* Init and shutdown are exclusive of each other. */
static pthread_mutex_t lifecycle_lock = PTHREAD_MUTEX_INITIALIZER;

void ferry_rpc_options_init(ferry_rpc_options *o)
{
    if (!o)
        return;
    o->num_worker_threads = 16;
    o->rpc_timeout = 60.0;
    o->init_method = NULL;
    o->transport = NULL;
    o->heartbeat_period_s = 1.0;
    o->heartbeat_misses = 3;
    o->max_spare_threads = -1;
    o->builtin_max_bytes = 8LL << 30;
    o->n_device_maps = 0;
    o->n_devices = 0;
}

static ferry_status check_options(const ferry_rpc_options *o)
{
    if (o->num_worker_threads < 1)
        return ferry__fail(FERRY_EINVAL, "num_worker_threads must be at least 1, got %d",
                           o->num_worker_threads);
    if (!(o->rpc_timeout >= 0))
        return ferry__fail(FERRY_EINVAL, "RPC Timeout must be non-negative");
    if (o->max_spare_threads < -1)
        return ferry__fail(FERRY_EINVAL, "max_spare_threads must be -1 (4 x num_worker_threads) "
                           "or at least 0, got %d", o->max_spare_threads);
    if (o->builtin_max_bytes < 0)
        return ferry__fail(FERRY_EINVAL, "builtin_max_bytes must be 0 (no cap) or positive, got "
                           "%lld", o->builtin_max_bytes);
    return FERRY_OK;
}

/* Identifies this host and pid namespace: peers with the same key can check each other's
   liveness by pid. FNV-1a over the boot id, the host name and the pid namespace. */
static uint64_t host_key(void)
{
    char buf[512] = "";
    size_t n = 0;
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        n = fread(buf, 1, 64, f);
        fclose(f);
    }
    gethostname(buf + n, 128);
    n = strlen(buf);
    ssize_t l = readlink("/proc/self/ns/pid", buf + n, sizeof buf - n - 1);
    n += l > 0 ? (size_t)l : 0;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)buf[i]) * 1099511628211ull;
    return h;
}

#define BLOB_HEAD 16 /* u32 pid, u64 host key, u32 length of the device record after it */

/* The address a worker publishes: pid and host key (for the liveness check of same-host
   peers), its device record (device count, devices list, device maps: rpc/device_map.h), then
   the fabric layer's own blob. */
static ferry_status publish_blob(ferry__agent *a, const ferry_rpc_options *o, void **out,
                                 size_t *len)
{
    const void *net_blob;
    size_t net_len;
    ferry_status rc = ferry__net_local_address(a->net, &net_blob, &net_len);
    if (rc != FERRY_OK)
        return rc;
    uint8_t *dev = NULL;
    size_t dev_len = 0;
    if ((rc = ferry__device_info_encode(o, &dev, &dev_len)) != FERRY_OK)
        return rc;
    uint8_t *b = ferry__malloc(BLOB_HEAD + dev_len + net_len);
    if (!b) {
        ferry__free(dev);
        return ferry__fail(FERRY_ENOMEM, "out of memory building the address record");
    }
    uint32_t pid = (uint32_t)getpid(), dlen = (uint32_t)dev_len;
    uint64_t key = host_key();
    memcpy(b, &pid, 4);
    memcpy(b + 4, &key, 8);
    memcpy(b + 12, &dlen, 4);
    memcpy(b + BLOB_HEAD, dev, dev_len);
    memcpy(b + BLOB_HEAD + dev_len, net_blob, net_len);
    ferry__free(dev);
    *out = b;
    *len = BLOB_HEAD + dev_len + net_len;
    return FERRY_OK;
}

static ferry_status map_device(void *ctx, int32_t dst, bool reverse, ferry_device from,
                               ferry_device *to)
{
    ferry__agent *a = ctx;
    return ferry__device_maps_lookup(&a->device_maps, dst, reverse, from, to);
}

/* Reads every worker's device record (`recs`) and checks all maps, the same way on every
   worker, so that all of them fail together with the same error. */
static ferry_status check_device_maps(ferry__agent *a, const uint8_t *const *recs,
                                      const uint32_t *lens)
{
    ferry__device_maps *m = &a->device_maps;
    a->device_names = ferry__calloc((size_t)a->world_size, sizeof *a->device_names);
    m->infos = ferry__calloc((size_t)a->world_size, sizeof *m->infos);
    if (!a->device_names || !m->infos)
        return ferry__fail(FERRY_ENOMEM, "out of memory for the device maps");
    m->world_size = a->world_size;
    m->rank = a->rank;
    m->names = a->device_names;
    for (int i = 0; i < a->world_size; i++) {
        size_t used = 0;
        a->device_names[i] = a->workers[i].name;
        ferry_status rc = ferry__device_info_decode(recs[i], lens[i], a->workers[i].name,
                                                    &m->infos[i], &used);
        if (rc == FERRY_OK && used != lens[i])
            rc = ferry__fail(FERRY_EPROTO, "the device record of worker %s is malformed",
                             a->workers[i].name);
        if (rc != FERRY_OK)
            return rc;
    }
    ferry_status rc = ferry__device_maps_check(m);
    if (rc == FERRY_OK)
        a->codec.device = (ferry__wire_device_hooks){map_device, a, m->any_cpu_map, a};
    return rc;
}

/* A worker known dead ends the graceful-shutdown rounds instead of hanging them; pinging the
   peers on other hosts meanwhile is how a dead one becomes known. */
static bool peer_dead(void *ctx, char *why, size_t cap)
{
    ferry__agent *a = ctx;
    ferry__agent_ping_peers(a, ferry__now_ns(), true);
    for (int i = 0; i < a->world_size; i++) {
        if (ferry__agent_peer_unreachable(a, i)) {
            snprintf(why, cap, "worker '%s' (rank %d%s) is gone", a->workers[i].name, i,
                     ferry__agent_peer_role(a, i));
            return true;
        }
    }
    return false;
}

/* "same host over shm (3 peers), other hosts over tcp;ofi_rxm (4 peers)": the provider each
   kind of peer is reached over, for the lifecycle line. */
static void describe_transports(const ferry__agent *a, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int kind = 1; kind >= 0; kind--) {
        const char *seen[4];
        int n_seen = 0;
        for (int i = 0; i < a->world_size; i++) {
            if (i == a->rank || a->workers[i].same_host != kind)
                continue;
            const char *prov = ferry__net_peer_provider(a->net, i);
            int j = 0;
            while (j < n_seen && strcmp(seen[j], prov))
                j++;
            if (j < n_seen || n_seen == 4)
                continue;
            seen[n_seen++] = prov;
            int count = 0;
            for (int k = 0; k < a->world_size; k++)
                count += k != a->rank && a->workers[k].same_host == kind &&
                         !strcmp(ferry__net_peer_provider(a->net, k), prov);
            if (len < cap)
                len += (size_t)snprintf(buf + len, cap - len, "%s%s over %s (%d peer%s)",
                                        len ? ", " : "", kind ? "same host" : "other hosts",
                                        prov, count, count == 1 ? "" : "s");
        }
    }
    if (!len)
        snprintf(buf, cap, "no peers");
}

static ferry_status connect_peers(ferry__agent *a)
{
    int n = 0;
    const ferry__peer_entry *peers = ferry__rendezvous_peers(a->rdv, &n);
    if (n != a->world_size)
        return ferry__fail(FERRY_EPROTO, "rendezvous returned %d workers, expected %d", n,
                           a->world_size);
    const void **blobs = ferry__calloc((size_t)n, sizeof *blobs);
    size_t *lens = ferry__calloc((size_t)n, sizeof *lens);
    a->workers = ferry__calloc((size_t)n, sizeof *a->workers);
    if (!blobs || !lens || !a->workers) {
        ferry__free(blobs);
        ferry__free(lens);
        return ferry__fail(FERRY_ENOMEM, "out of memory for the worker table");
    }
    const uint8_t **recs = ferry__calloc((size_t)n, sizeof *recs);
    uint32_t *rec_lens = ferry__calloc((size_t)n, sizeof *rec_lens);
    ferry_status rc = recs && rec_lens ? FERRY_OK
                                       : ferry__fail(FERRY_ENOMEM, "out of memory for the "
                                                     "worker table");
    uint64_t our_key = host_key();
    for (int i = 0; i < n && rc == FERRY_OK; i++) {
        const ferry__peer_entry *p = &peers[i];
        uint32_t pid, dlen = 0;
        if (p->addr_len >= BLOB_HEAD)
            memcpy(&dlen, (const uint8_t *)p->addr + 12, 4);
        if (p->rank != i || p->addr_len < BLOB_HEAD || p->addr_len - BLOB_HEAD < dlen) {
            rc = ferry__fail(FERRY_EPROTO, "rendezvous record %d is malformed", i);
            break;
        }
        uint64_t key;
        memcpy(&pid, p->addr, 4);
        memcpy(&key, (const uint8_t *)p->addr + 4, 8);
        recs[i] = (const uint8_t *)p->addr + BLOB_HEAD;
        rec_lens[i] = dlen;
        a->workers[i].name = ferry__strdup(p->name);
        a->workers[i].pid = (int)pid;
        a->workers[i].same_host = key == our_key && i != a->rank;
        atomic_init(&a->workers[i].dead, false);
        if (!a->workers[i].name)
            rc = ferry__fail(FERRY_ENOMEM, "out of memory for the worker table");
        blobs[i] = (const uint8_t *)p->addr + BLOB_HEAD + dlen;
        lens[i] = p->addr_len - BLOB_HEAD - dlen;
    }
    if (rc == FERRY_OK)
        rc = check_device_maps(a, recs, rec_lens);
    ferry__free(recs);
    ferry__free(rec_lens);
    if (rc == FERRY_OK)
        rc = ferry__net_set_peers(a->net, a->rank, n, blobs, lens);
    for (int i = 0; rc == FERRY_OK && i < n; i++)
        ferry__log_debug("rpc", "worker '%s' (rank %d) is reached over %s", a->workers[i].name, i,
                         ferry__net_peer_provider(a->net, i));
    if (rc == FERRY_OK && ferry__log_on(FERRY_LOG_INFO)) {
        char how[512];
        describe_transports(a, how, sizeof how);
        ferry__log_info("rpc", "rendezvous done: world size %d; %s", n, how);
    }
    ferry__free(blobs);
    ferry__free(lens);
    return rc;
}

static ferry__agent *agent_new(const char *name, int rank, int world_size,
                               const ferry_rpc_options *o)
{
    ferry__agent *a = ferry__calloc(1, sizeof *a);
    if (!a)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory creating the agent");
    ferry__ref_init(&a->ref);
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->later_lock, NULL);
    pthread_mutex_init(&a->pool_lock, NULL);
    pthread_rwlock_init(&a->net_lock, NULL);
    a->rank = rank;
    a->world_size = world_size;
    atomic_init(&a->default_timeout_s, o->rpc_timeout);
    atomic_init(&a->next_id, 1);
    atomic_init(&a->state, FERRY__AGENT_STARTING);
    ferry__wire_limits_default(&a->codec.limits);
    a->builtin_max_bytes = o->builtin_max_bytes;
    a->name = ferry__strdup(name);
    if (!a->name) {
        ferry__agent_free(a);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory creating the agent");
    }
    if (ferry__agent_liveness_init(a, o) != FERRY_OK) {
        ferry__agent_free(a);
        return NULL;
    }
    return a;
}

/* Tears down whatever parts exist, in the order that keeps every callback's target alive:
   stop accepting work, fail waiters, drain the pool (its tasks may still send), close the fabric,
   then leave the rendezvous. Nothing here waits on a peer: every call still waiting fails first
   (so pool tasks blocked on calls to dead or stopped peers return), requests answered later are
   answered with FERRY_ESHUTDOWN, and no wait in a pool task is without a deadline, so the drain
   ends however the other workers are. */
static void agent_stop(ferry__agent *a, const char *why, long long deadline_ns)
{
    atomic_store(&a->state, FERRY__AGENT_STOPPING);
    ferry__agent_fail_all_pending(a, FERRY_ESHUTDOWN, why);
    ferry__agent_fail_later(a, FERRY_ESHUTDOWN, why);
    pthread_mutex_lock(&a->pool_lock);
    a->pool_open = false;
    pthread_mutex_unlock(&a->pool_lock);
    ferry__pool_free(a->pool);
    a->pool = NULL;
    pthread_rwlock_wrlock(&a->net_lock);
    ferry__net *net = a->net;
    a->net = NULL;
    pthread_rwlock_unlock(&a->net_lock);
    ferry__net_close(net);
    ferry__agent_liveness_free(a);
    ferry__agent_fail_all_pending(a, FERRY_ESHUTDOWN, why);
    for (int i = ferry__agent_module_count() - 1; i >= 0; i--) {
        const ferry__agent_module *m = ferry__agent_module_at(i);
        if (a->module_started[i] && m->stop)
            m->stop(a, a->module_state[i]);
        a->module_started[i] = false;
    }
    /* Rank 0 serves the store the others leave through; it waits for them no longer than the
       caller's deadline allows (a stopped peer would otherwise hold it the whole linger). */
    double linger_s = deadline_ns ? (deadline_ns - ferry__now_ns()) / 1e9 : -1;
    ferry__rendezvous_free_within(a->rdv, linger_s < 0 && deadline_ns ? 0 : linger_s);
    a->rdv = NULL;
    atomic_store(&a->state, FERRY__AGENT_STOPPED);
}

static ferry_status modules_start(ferry__agent *a)
{
    for (int i = 0; i < ferry__agent_module_count(); i++) {
        const ferry__agent_module *m = ferry__agent_module_at(i);
        if (m->start) {
            ferry_status rc = m->start(a, &a->module_state[i]);
            if (rc != FERRY_OK)
                return rc;
        }
        a->module_started[i] = true;
    }
    return FERRY_OK;
}

static int64_t modules_busy(ferry__agent *a)
{
    int64_t busy = 0;
    for (int i = 0; i < ferry__agent_module_count(); i++) {
        const ferry__agent_module *m = ferry__agent_module_at(i);
        if (a->module_started[i] && m->busy)
            busy += m->busy(a, a->module_state[i]);
    }
    return busy;
}

static ferry_status modules_quiesce(ferry__agent *a, double timeout_s)
{
    for (int i = 0; i < ferry__agent_module_count(); i++) {
        const ferry__agent_module *m = ferry__agent_module_at(i);
        if (a->module_started[i] && m->quiesce) {
            ferry_status rc = m->quiesce(a, a->module_state[i], timeout_s);
            if (rc != FERRY_OK)
                return rc;
        }
    }
    return FERRY_OK;
}

/* The net asks, for peers holding fabric operations, whether we declared them dead (pid check,
   missed heartbeat, failed send): their queued operations are then failed, not kept. */
static bool peer_is_dead(void *ctx, int peer)
{
    ferry__agent *a = ctx;
    return peer >= 0 && peer < a->world_size && a->workers &&
           atomic_load(&a->workers[peer].dead);
}

/* A positive number from the environment, or `otherwise`. */
static double env_number(const char *name, double otherwise)
{
    const char *v = getenv(name);
    char *end = NULL;
    double d = v && *v ? strtod(v, &end) : 0;
    if (!v || !*v)
        return otherwise;
    if (*end || !(d > 0)) {
        ferry__log_warn("rpc", "ignoring %s=%s (not a positive number)", name, v);
        return otherwise;
    }
    return d;
}

static ferry_status agent_start(ferry__agent *a, const char *init_method,
                                const ferry_rpc_options *o, const char *master_addr)
{
    ferry_status rc;
    a->pool = ferry__pool_new(o->num_worker_threads, 1 << 16, "rpc");
    if (!a->pool)
        return ferry_last_status();
    ferry__pool_set_max_spares(a->pool, o->max_spare_threads < 0 ? 4 * o->num_worker_threads
                                                                 : o->max_spare_threads);
    a->pool_open = true;
    /* The store first: rank 0 serves it before its fabric is open, so the others reach it
       while everyone's fabric comes up instead of being refused and backing off. */
    double t = o->rpc_timeout > 0 ? o->rpc_timeout : 1e9;
    a->rdv = ferry__rendezvous_open(init_method, a->rank, a->world_size, t,
                                    getenv("FERRY_AUTH_TOKEN"));
    if (!a->rdv)
        return ferry_last_status();
    const char *env_transport = getenv("FERRY_TRANSPORT");
    /* A message's bulk parts must all arrive within the receive timeout: the call's own
       timeout when longer than a minute, else a minute (FERRY_RECV_TIMEOUT_S). */
    double recv_s = env_number("FERRY_RECV_TIMEOUT_S", o->rpc_timeout > 60 ? o->rpc_timeout : 60);
    ferry__net_options nopts = {
        .transport = env_transport && *env_transport ? env_transport : o->transport,
        .iface = getenv("FERRY_IFACE"),
        .master_addr = master_addr,
        .tick_ms = 10,
        .max_message_bytes = a->codec.limits.max_message_bytes,
        .queue_max = (size_t)env_number("FERRY_NET_QUEUE_MAX", 0),
        .recv_timeout_ms = (long long)(recv_s * 1000),
        /* The launcher's own count of the ranks on this host, when we joined its job. */
        .peers_all_local = (!strncmp(init_method, "env://", 6) ||
                            !strncmp(init_method, "pmix://", 7)) &&
                           ferry__launch_local_world_size() == a->world_size,
    };
    ferry__net_handlers h = {.on_message = ferry__agent_on_message,
                             .on_tick = ferry__agent_on_tick,
                             .on_peer_error = ferry__agent_on_peer_error,
                             .is_peer_dead = peer_is_dead,
                             .ctx = a};
    a->net = ferry__net_open(&nopts, &h);
    if (!a->net)
        return ferry_last_status();
    void *blob = NULL;
    size_t blob_len = 0;
    if ((rc = publish_blob(a, o, &blob, &blob_len)) != FERRY_OK)
        return rc;
    rc = ferry__rendezvous_publish(a->rdv, a->name, blob, blob_len, t);
    ferry__free(blob);
    if (rc != FERRY_OK) {
        a->rdv = NULL; /* publish freed it */
        return rc;
    }
    if ((rc = connect_peers(a)) != FERRY_OK)
        return rc;
    ferry__rendezvous_set_abort_check(a->rdv, peer_dead, a);
    a->rank0_hosts_store = ferry__store_has_host(ferry__rendezvous_store(a->rdv));
    if (a->rank != 0) /* the store's errors name the worker that serves it */
        ferry__store_set_host(ferry__rendezvous_store(a->rdv), a->workers[0].name, 0);
    ferry__agent_set_handler(a, FERRY__MSG_PING, ferry__agent_ping_handler, NULL);
    if ((rc = modules_start(a)) != FERRY_OK)
        return rc;
    ferry__agent_index_hooks(a);
    atomic_store(&a->state, FERRY__AGENT_RUNNING);
    if ((rc = ferry__net_start(a->net)) != FERRY_OK)
        return rc;
    ferry__serve_start(a);
    /* Peers may call as soon as they pass the barrier below, before it returns here: functions
       they run must already find this agent. */
    if (!ferry__agent_publish(a))
        return ferry__fail(FERRY_EINVAL, "RPC is already initialized");
    /* Everyone is listening before anyone calls (torch ends init with a barrier too). */
    return ferry__rendezvous_barrier(a->rdv, "ferry/init", t);
}

ferry_status ferry_init_rpc(const char *name, int rank, int world_size,
                            const ferry_rpc_options *opts)
{
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    if (opts)
        o = *opts;
    ferry_status rc = check_options(&o);
    if (rc != FERRY_OK)
        return rc;
    if (rank < -1)
        return ferry__fail(FERRY_EINVAL, "rank %d: a rank is 0 or more, or -1 to read it from "
                           "the environment", rank);
    if (world_size < 0)
        return ferry__fail(FERRY_EINVAL, "world size %d: a world size is 1 or more, or 0 to read "
                           "it from the environment", world_size);
    if (name && (rc = ferry__rendezvous_check_name(name)) != FERRY_OK)
        return rc;
    ferry__builtins_register();

    pthread_mutex_lock(&lifecycle_lock);
    if (ferry__agent_running()) {
        pthread_mutex_unlock(&lifecycle_lock);
        return ferry__fail(FERRY_EINVAL, "RPC is already initialized");
    }
    char *host = NULL, *path = NULL;
    int port = 0;
    /* NULL: the launcher's rendezvous (PMIx when its server answers, else env://). */
    if (!o.init_method || !*o.init_method)
        o.init_method = ferry__launch_default_method();
    rc = ferry__rendezvous_resolve_env(o.init_method, &rank, &world_size, &host, &port, &path);
    char default_name[32];
    if (rc == FERRY_OK && !name) {
        snprintf(default_name, sizeof default_name, "worker%d", rank);
        name = default_name;
    }
    ferry__agent *a = rc == FERRY_OK ? agent_new(name, rank, world_size, &o) : NULL;
    if (a) {
        ferry__log_set_worker(name, rank);
        ferry__log_info("rpc", "init of worker '%s' (rank %d of %d) starts, init_method %s", name,
                        rank, world_size, o.init_method);
        rc = agent_start(a, o.init_method, &o, host);
        if (rc != FERRY_OK) {
            char why[1024];
            snprintf(why, sizeof why, "%s", ferry_last_error());
            ferry__agent_unpublish(a);
            agent_stop(a, "init failed", 0);
            ferry__agent_release(a);
            ferry__log_info("rpc", "init failed: %s", why);
            ferry__log_set_worker(NULL, -1);
            ferry_set_error(rc, "%s", why);
        } else {
            ferry__agent_release(a); /* current holds its own reference */
            ferry__log_info("rpc", "worker '%s' is rank %d of %d: connected, ready for calls",
                            name, rank, world_size);
        }
    } else if (rc == FERRY_OK) {
        rc = ferry_last_status();
    }
    ferry__free(host);
    ferry__free(path);
    pthread_mutex_unlock(&lifecycle_lock);
    return rc;
}

/* torch's join: every worker waits until its own calls are answered, then all agree that no
   worker has anything in flight; repeat until the sum is zero. Then modules release what they
   still hold (user RRefs), which may start new messages, so agree once more. A round that finds
   work in flight is repeated after a pause that grows from 1 ms to 50 ms, so a long call keeps
   the store at a few rounds a second rather than as many as it can answer. Every store call
   carries what is left of the deadline, so a store that stops answering (rank 0 stopped or cut
   off) ends the join within it. */
#define JOIN_BACKOFF_MIN_US 1000
#define JOIN_BACKOFF_MAX_US 50000

static double join_left_s(long long deadline)
{
    if (!deadline)
        return 1e9;
    double left = (deadline - ferry__now_ns()) / 1e9;
    return left > 1e-3 ? left : 1e-3;
}

/* A join that failed because others are gone says so in words a user can act on (which
   workers left, the store's host among them), not in the socket's; otherwise the cause. */
static ferry_status join_failed(ferry__agent *a, ferry_status rc)
{
    ferry__store *st = a->rdv ? ferry__rendezvous_store(a->rdv) : NULL;
    bool store_gone = a->rank != 0 && st && !ferry__store_is_connected(st);
    /* Without the store's host the rounds cannot run at all, whatever the others did. */
    bool host_dead = a->rank != 0 && a->workers && atomic_load(&a->workers[0].dead);
    if ((store_gone || host_dead) && a->rank0_hosts_store) {
        char cause[768];
        snprintf(cause, sizeof cause, "%s", host_dead ? "its process exited or a send to it "
                 "failed (it died, or left without this worker)" : ferry_last_error());
        return ferry__fail(rc, "graceful shutdown of '%s' failed: worker '%s' (rank 0, which "
                           "hosts the rendezvous store) is unreachable, and the rounds that end "
                           "a shutdown run through its store: %s", a->name, a->workers[0].name,
                           cause);
    }
    char gone[640] = "";
    size_t len = 0;
    int n_gone = 0;
    for (int i = 0; a->workers && i < a->world_size; i++) {
        bool is_gone = atomic_load(&a->workers[i].dead) || (i == 0 && store_gone);
        if (i == a->rank || !is_gone || n_gone++ >= 4 || len >= sizeof gone)
            continue;
        len += (size_t)snprintf(gone + len, sizeof gone - len, "%s'%s' (rank %d%s)",
                                n_gone > 1 ? ", " : "", a->workers[i].name, i,
                                i == 0 ? ", which hosts the rendezvous store" : "");
    }
    if (n_gone > 4 && len < sizeof gone)
        snprintf(gone + len, sizeof gone - len, " and %d more", n_gone - 4);
    if (n_gone > 0)
        return ferry__fail(rc, "graceful shutdown of '%s' failed: %s had already left, so the "
                           "others ended their shutdown without this worker (theirs timed out "
                           "waiting for it, or they exited)", a->name, gone);
    return ferry__fail(rc, "graceful shutdown of '%s' failed: %s", a->name, ferry_last_error());
}

static ferry_status graceful_join(ferry__agent *a, double timeout)
{
    long long deadline = timeout > 0 ? ferry__now_ns() + (long long)(timeout * 1e9) : 0;
    long long backoff_us = JOIN_BACKOFF_MIN_US;
    char key[64];
    bool quiesced = false;
    for (int round = 0;; round++) {
        while (atomic_load(&a->client_active) > 0) {
            if (deadline && ferry__now_ns() > deadline)
                return ferry__fail(FERRY_ETIMEDOUT,
                                   "graceful shutdown of '%s' timed out after %.2f s with %d "
                                   "calls still waiting for responses",
                                   a->name, timeout, atomic_load(&a->client_active));
            ferry__sleep_us(200);
        }
        snprintf(key, sizeof key, "ferry/shutdown/%d", round);
        int64_t busy = atomic_load(&a->client_active) + atomic_load(&a->server_active) +
                       modules_busy(a);
        int64_t total = 0;
        ferry_status rc =
            ferry__rendezvous_allreduce_sum(a->rdv, key, busy, &total, join_left_s(deadline));
        if (rc != FERRY_OK) {
            ferry__log_debug("rpc", "shutdown round %d failed: %s", round, ferry_last_error());
            return join_failed(a, rc);
        }
        ferry__log_debug("rpc", "shutdown round %d: %lld in flight here, %lld in all: %s", round,
                         (long long)busy, (long long)total,
                         total        ? "another round after a pause"
                         : quiesced ? "done"
                                    : "modules release what they hold, then one more round");
        if (total == 0 && quiesced)
            break;
        if (total == 0) {
            if ((rc = modules_quiesce(a, join_left_s(deadline))) != FERRY_OK)
                return rc;
            quiesced = true;
            continue;
        }
        long long pause_us = backoff_us;
        if (deadline && (deadline - ferry__now_ns()) / 1000 < pause_us)
            pause_us = (deadline - ferry__now_ns()) / 1000;
        ferry__sleep_us(pause_us);
        backoff_us = backoff_us * 2 > JOIN_BACKOFF_MAX_US ? JOIN_BACKOFF_MAX_US : backoff_us * 2;
    }
    ferry_status rc =
        ferry__rendezvous_barrier(a->rdv, "ferry/shutdown/final", join_left_s(deadline));
    ferry__log_debug("rpc", "shutdown final barrier: %s",
                     rc == FERRY_OK ? "every worker passed" : ferry_last_error());
    return rc == FERRY_OK ? FERRY_OK : join_failed(a, rc);
}

ferry_status ferry_shutdown(bool graceful, double timeout)
{
    pthread_mutex_lock(&lifecycle_lock);
    ferry__agent *a = ferry__agent_get();
    if (!a) {
        pthread_mutex_unlock(&lifecycle_lock);
        return FERRY_ESHUTDOWN;
    }
    ferry_status rc = FERRY_OK;
    char why[1024] = "";
    long long start_ns = ferry__now_ns();
    long long deadline_ns = timeout > 0 ? ferry__deadline_ns(start_ns, timeout) : 0;
    char limit[48] = "no timeout";
    if (timeout > 0)
        snprintf(limit, sizeof limit, "timeout %g s", timeout);
    ferry__log_info("rpc", "shutdown starts (%s, %s)", graceful ? "graceful" : "not graceful",
                    limit);
    if (graceful) {
        rc = graceful_join(a, timeout);
        if (rc != FERRY_OK)
            snprintf(why, sizeof why, "%s", ferry_last_error());
        if (rc == FERRY_OK)
            ferry__log_info("rpc", "graceful shutdown: every worker agreed to stop after %.3f s",
                            (ferry__now_ns() - start_ns) / 1e9);
        else
            ferry__log_info("rpc", "graceful shutdown failed: %s", why);
        /* Everyone agreed to leave and nothing is in flight: a peer whose process exits from
           now on has left, not failed. Without this our liveness check, still running until
           the fabric closes, warned about each peer that was quicker to exit. */
        for (int i = 0; rc == FERRY_OK && a->workers && i < a->world_size; i++)
            if (i != a->rank)
                atomic_store(&a->workers[i].dead, true);
    }
    ferry__agent_unpublish(a); /* drops the process-wide pointer's reference */
    agent_stop(a, "RPC is shutting down", deadline_ns);
    ferry__log_info("rpc", "stopped after %.3f s of shutdown", (ferry__now_ns() - start_ns) / 1e9);
    ferry__log_set_worker(NULL, -1);
    ferry__agent_release(a); /* ours */
    pthread_mutex_unlock(&lifecycle_lock);
    if (rc != FERRY_OK)
        ferry_set_error(rc, "%s", why);
    return rc;
}
