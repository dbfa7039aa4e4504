/* The fabric layer's setup: choosing and opening libfabric providers (shm for this host,
   tcp;ofi_rxm elsewhere, or one forced by FERRY_TRANSPORT) bound to the interface that reaches
   the master, the address blob a process publishes at rendezvous (with the shm doorbell's name,
   net_doorbell.c), installing peers, and the lifecycle (start, wake, close). Operations and the
   progress thread live in net_progress.c, the send entry points and message handling in
   net_message.c; the wire conventions in net_internal.h. */
#include "transport/net.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/net_fi_init.h"
#include "transport/net_iface.h"
#include "transport/net_internal.h"

#define BELL_ENTRY "bell"
#define AUTH_ENTRY "auth"
#define BLOB_MAGIC "FRYN"
#define BLOB_VERSION 1
#define FI_VERSION_USED FI_VERSION(1, 17)

static const char *const MOD = "net";

ferry_status ferry__net_status_from_fi(int fi_rc)
{
    switch (fi_rc < 0 ? -fi_rc : fi_rc) {
    case 0:
        return FERRY_OK;
    case FI_ENOMEM:
        return FERRY_ENOMEM;
    case FI_EAGAIN:
        return FERRY_EAGAIN;
    case FI_ECANCELED:
    case FI_ESHUTDOWN:
        return FERRY_ESHUTDOWN;
    case FI_ETIMEDOUT:
        return FERRY_ETIMEDOUT;
    case FI_ENOSYS:
    case FI_EOPNOTSUPP:
        return FERRY_ENOTSUP;
    default:
        return FERRY_ETRANSPORT;
    }
}

ferry_status ferry__net_fail_fi(const ferry__net_ep *ep, int fi_rc, const char *what)
{
    ferry_status rc = ferry__net_status_from_fi(fi_rc);
    /* Anything that is not plainly memory is reported as a transport failure to callers. */
    if (rc != FERRY_ENOMEM && rc != FERRY_ESHUTDOWN)
        rc = FERRY_ETRANSPORT;
    return ferry__fail(rc, "%s on %s: %s", what, ep && ep->prov_name ? ep->prov_name : "fabric",
                       fi_strerror(fi_rc < 0 ? -fi_rc : fi_rc));
}

/* ---- host identity ---- */

static char *read_host_id(void)
{
    char host[256] = "", boot[64] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        snprintf(host, sizeof host, "unknown");
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof boot, f))
            boot[0] = '\0';
        fclose(f);
    }
    boot[strcspn(boot, "\n")] = '\0';
    size_t n = strlen(host) + strlen(boot) + 2;
    char *id = ferry__malloc(n);
    if (id)
        snprintf(id, n, "%s/%s", host, boot);
    return id;
}

/* ---- opening one provider ---- */

static struct fi_info *make_hints(const char *prov, bool want_source)
{
    struct fi_info *hints = fi_allocinfo();
    if (!hints)
        return NULL;
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_MSG | FI_TAGGED | FI_DIRECTED_RECV | (want_source ? FI_SOURCE : 0);
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->domain_attr->threading = FI_THREAD_DOMAIN;
    hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    hints->tx_attr->op_flags = FI_COMPLETION;
    hints->rx_attr->op_flags = FI_COMPLETION;
    hints->fabric_attr->prov_name = ferry__strdup(prov);
    if (!hints->fabric_attr->prov_name) {
        fi_freeinfo(hints);
        return NULL;
    }
    return hints;
}

/* Binds tcp-like providers to the chosen interface (net_iface.h): a named one, or the one
   reaching master. */
static ferry_status set_interface(struct fi_info *hints, const ferry__net_options *opts)
{
    const char *iface = opts->iface ? opts->iface : getenv("FERRY_IFACE");
    ferry__iface_choice choice;
    ferry__net_iface_pick(iface, opts->master_addr, &choice);
    if (choice.how == FERRY__IFACE_NAMED) {
        hints->domain_attr->name = ferry__strdup(iface);
        return hints->domain_attr->name ? FERRY_OK : ferry__fail(FERRY_ENOMEM, "no memory");
    }
    if (choice.how == FERRY__IFACE_NO_ROUTE) {
        ferry__log_warn(MOD, "no route to master %s; letting the provider pick an interface",
                        opts->master_addr);
        return FERRY_OK;
    }
    if (choice.how != FERRY__IFACE_ROUTE)
        return FERRY_OK;
    hints->src_addr = ferry__malloc(choice.src_len);
    if (!hints->src_addr)
        return ferry__fail(FERRY_ENOMEM, "no memory");
    memcpy(hints->src_addr, &choice.src, choice.src_len);
    hints->src_addrlen = choice.src_len;
    hints->addr_format = choice.src.ss_family == AF_INET6 ? FI_SOCKADDR_IN6 : FI_SOCKADDR_IN;
    return FERRY_OK;
}

/* Our shm region's name (see remove_stale_regions). */
#define SHM_PREFIX "fi_shm://"

static ferry_status name_shm_region(struct fi_info *hints)
{
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
        nonce = (uint64_t)ferry__now_ns();
    char name[128];
    int n = snprintf(name, sizeof name, SHM_PREFIX "ferry.%llu.%d.%016llx", ferry__net_pidns(),
                     (int)getpid(), (unsigned long long)nonce);
    hints->src_addr = ferry__malloc((size_t)n + 1);
    if (!hints->src_addr)
        return ferry__fail(FERRY_ENOMEM, "no memory");
    memcpy(hints->src_addr, name, (size_t)n + 1);
    hints->src_addrlen = (size_t)n + 1;
    hints->addr_format = FI_ADDR_STR;
    return FERRY_OK;
}

static struct fi_info *get_info(const char *prov, const ferry__net_options *opts, bool want_source,
                                int *fi_rc)
{
    struct fi_info *hints = make_hints(prov, want_source), *info = NULL;
    if (!hints) {
        *fi_rc = -FI_ENOMEM;
        return NULL;
    }
    ferry_status st = FERRY_OK;
    if (strstr(prov, "tcp"))
        st = set_interface(hints, opts);
    else if (strcmp(prov, "shm") == 0)
        st = name_shm_region(hints);
    if (st != FERRY_OK) {
        fi_freeinfo(hints);
        *fi_rc = -FI_ENOMEM;
        return NULL;
    }
    *fi_rc = fi_getinfo(FI_VERSION_USED, NULL, NULL, 0, hints, &info);
    const char *iface = hints->domain_attr->name;
    if (*fi_rc == 0 && iface) {
        /* tcp;ofi_rxm ignores the domain-name hint: pick the named interface ourselves. */
        struct fi_info *it = info;
        while (it && (!it->domain_attr->name || strcmp(it->domain_attr->name, iface) != 0))
            it = it->next;
        struct fi_info *one = it ? fi_dupinfo(it) : NULL;
        fi_freeinfo(info);
        info = one;
        *fi_rc = one ? 0 : -FI_ENODATA;
    }
    fi_freeinfo(hints);
    return *fi_rc == 0 ? info : NULL;
}

static ferry_status open_cq(ferry__net *net, ferry__net_ep *e)
{
    struct fi_cq_attr attr = {.format = FI_CQ_FORMAT_TAGGED, .size = 4096,
                              .wait_obj = FI_WAIT_FD};
    int rc = fi_cq_open(e->domain, &attr, &e->cq, NULL);
    if (rc != 0) {
        /* Providers without an fd-backed CQ are polled, with a short block on the eventfd. */
        attr.wait_obj = FI_WAIT_NONE;
        rc = fi_cq_open(e->domain, &attr, &e->cq, NULL);
        if (rc != 0)
            return ferry__net_fail_fi(e, rc, "fi_cq_open");
        return FERRY_OK;
    }
    if (fi_control(&e->cq->fid, FI_GETWAIT, &e->wait_fd) != 0)
        e->wait_fd = -1;
    if (e->wait_fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = e};
        if (epoll_ctl(net->epoll_fd, EPOLL_CTL_ADD, e->wait_fd, &ev) != 0)
            e->wait_fd = -1;
    }
    return FERRY_OK;
}

/* The shm provider names its region in /dev/shm after the address it is given (by default
   "<pid>:<ep>:<domain>") and refuses to start (EBUSY) when that name exists. Ours are named
   "ferry.<pid namespace>.<pid>.<random>" (src_addr), so no leftover or process in another pid
   namespace sharing /dev/shm can collide with us, and leftovers are recognised: a region of
   our namespace whose process is gone (killed without closing) is removed. Regions of other
   namespaces, and names we did not make, are never touched: a pid from another namespace says
   nothing about a process here (net_doorbell.h). */
static void remove_stale_regions(void)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        unsigned long long ns = 0, nonce = 0;
        int pid = 0, ep = 0, dom = 0, end = 0;
        if (sscanf(de->d_name, "ferry.%llu.%d.%llx:%d:%d%n", &ns, &pid, &nonce, &ep, &dom,
                   &end) != 5 || de->d_name[end] || !ferry__net_is_stale(ns, pid))
            continue;
        char path[300];
        snprintf(path, sizeof path, "/%s", de->d_name);
        shm_unlink(path);
    }
    closedir(d);
}

static ferry_status open_objects(ferry__net *net, ferry__net_ep *e)
{
    int rc;
    if ((rc = fi_fabric(e->info->fabric_attr, &e->fabric, NULL)) != 0)
        return ferry__net_fail_fi(e, rc, "fi_fabric");
    if ((rc = fi_domain(e->fabric, e->info, &e->domain, NULL)) != 0)
        return ferry__net_fail_fi(e, rc, "fi_domain");
    struct fi_av_attr av_attr = {.type = FI_AV_TABLE};
    if ((rc = fi_av_open(e->domain, &av_attr, &e->av, NULL)) != 0)
        return ferry__net_fail_fi(e, rc, "fi_av_open");
    ferry_status st = open_cq(net, e);
    if (st != FERRY_OK)
        return st;
    if ((rc = fi_endpoint(e->domain, e->info, &e->ep, NULL)) != 0)
        return ferry__net_fail_fi(e, rc, "fi_endpoint");
    if ((rc = fi_ep_bind(e->ep, &e->av->fid, 0)) != 0)
        return ferry__net_fail_fi(e, rc, "fi_ep_bind(av)");
    if ((rc = fi_ep_bind(e->ep, &e->cq->fid, FI_TRANSMIT | FI_RECV)) != 0)
        return ferry__net_fail_fi(e, rc, "fi_ep_bind(cq)");
    if (e->is_shm)
        remove_stale_regions();
    if ((rc = fi_enable(e->ep)) != 0)
        return ferry__net_fail_fi(e, rc, "fi_enable");
    e->name_len = sizeof e->name;
    if ((rc = fi_getname(&e->ep->fid, e->name, &e->name_len)) != 0)
        return ferry__net_fail_fi(e, rc, "fi_getname");
    return FERRY_OK;
}

static ferry_status open_ep(ferry__net *net, ferry__net_ep *e, const char *prov,
                            const ferry__net_options *opts)
{
    int rc;
    e->wait_fd = -1;
    pthread_mutex_init(&e->fi_lock, NULL);
    e->has_lock = true;
    e->prov_name = ferry__strdup(prov);
    if (!e->prov_name)
        return ferry__fail(FERRY_ENOMEM, "no memory");
    e->info = get_info(prov, opts, true, &rc);
    if (!e->info)
        e->info = get_info(prov, opts, false, &rc);
    if (!e->info) {
        const char *iface = opts->iface ? opts->iface : getenv("FERRY_IFACE");
        char what[160];
        snprintf(what, sizeof what, "fi_getinfo (RDM, tagged, directed receive%s%s)",
                 iface && strstr(prov, "tcp") ? ", interface " : "",
                 iface && strstr(prov, "tcp") ? iface : "");
        return ferry__net_fail_fi(e, rc, what);
    }
    if (e->info->domain_attr->cq_data_size < 4) {
        return ferry__fail(FERRY_ETRANSPORT, "provider %s carries %zu bytes of CQ data; 4 needed",
                           prov, e->info->domain_attr->cq_data_size);
    }
    e->has_source = (e->info->caps & FI_SOURCE) != 0;
    e->is_shm = strcmp(e->info->fabric_attr->prov_name, "shm") == 0;
    e->iov_limit = e->info->tx_attr->iov_limit ? e->info->tx_attr->iov_limit : 1;
    if (e->iov_limit > FERRY__NET_INLINE_IOV)
        e->iov_limit = FERRY__NET_INLINE_IOV;
    ferry_status rc2 = open_objects(net, e);
    ferry__log_info(MOD, "opened %s (domain %s, FI_SOURCE %s, iov_limit %zu, CQ %s)", prov,
                    e->info->domain_attr->name, e->has_source ? "yes" : "no", e->iov_limit,
                    e->wait_fd >= 0 ? "blocks on its fd" : "is polled");
    return rc2;
}

static void close_ep(ferry__net_ep *e)
{
    if (e->ep)
        fi_close(&e->ep->fid);
    if (e->av)
        fi_close(&e->av->fid);
    if (e->cq)
        fi_close(&e->cq->fid);
    if (e->domain)
        fi_close(&e->domain->fid);
    if (e->fabric)
        fi_close(&e->fabric->fid);
    if (e->info)
        fi_freeinfo(e->info);
    ferry__free(e->addr_rank);
    ferry__free(e->rank_addr);
    ferry__free(e->prov_name);
    if (e->has_lock)
        pthread_mutex_destroy(&e->fi_lock);
    memset(e, 0, sizeof *e);
}

/* ---- the address blob: "FRYN", version, n_eps, host id, then (provider, address) pairs ----
   Besides providers the pairs name the shm doorbell ("bell") and carry this process's fabric
   secret ("auth", 16 bytes). The blob travels only through the rendezvous store, which is
   what keeps the secret from processes that never joined. */

static unsigned char *put_entry(unsigned char *p, const char *name, const void *val, size_t len)
{
    size_t nl = strlen(name);
    *p++ = (unsigned char)nl;
    memcpy(p, name, nl);
    p += nl;
    *p++ = (unsigned char)(len & 0xff);
    *p++ = (unsigned char)(len >> 8);
    memcpy(p, val, len);
    return p + len;
}

static ferry_status build_blob(ferry__net *net)
{
    size_t host_len = strlen(net->host_id), n = 8 + host_len;
    size_t bell_len = net->bell.fd >= 0 ? strlen(net->bell.name) : 0;
    for (int i = 0; i < net->n_eps; i++)
        n += 1 + strlen(net->eps[i].prov_name) + 2 + net->eps[i].name_len;
    if (bell_len)
        n += 1 + strlen(BELL_ENTRY) + 2 + bell_len;
    n += 1 + strlen(AUTH_ENTRY) + 2 + sizeof net->secret;
    unsigned char *b = ferry__malloc(n), *p = b;
    if (!b)
        return ferry__fail(FERRY_ENOMEM, "no memory for the address blob");
    memcpy(p, BLOB_MAGIC, 4);
    p[4] = BLOB_VERSION;
    p[5] = (unsigned char)(net->n_eps + (bell_len > 0) + 1);
    p[6] = (unsigned char)(host_len & 0xff);
    p[7] = (unsigned char)(host_len >> 8);
    p += 8;
    memcpy(p, net->host_id, host_len);
    p += host_len;
    for (int i = 0; i < net->n_eps; i++)
        p = put_entry(p, net->eps[i].prov_name, net->eps[i].name, net->eps[i].name_len);
    if (bell_len)
        p = put_entry(p, BELL_ENTRY, net->bell.name, bell_len);
    put_entry(p, AUTH_ENTRY, net->secret, sizeof net->secret);
    net->blob = b;
    net->blob_len = n;
    return FERRY_OK;
}

typedef struct {
    const unsigned char *host;
    size_t host_len;
    int n;
    const unsigned char *prov[FERRY__NET_MAX_EPS * 4], *addr[FERRY__NET_MAX_EPS * 4];
    size_t prov_len[FERRY__NET_MAX_EPS * 4], addr_len[FERRY__NET_MAX_EPS * 4];
} parsed_blob;

static ferry_status parse_blob(const void *blob, size_t len, int rank, parsed_blob *out)
{
    const unsigned char *p = blob, *end = p + len;
    if (!blob || len < 8 || memcmp(p, BLOB_MAGIC, 4) != 0 || p[4] != BLOB_VERSION)
        return ferry__fail(FERRY_EINVAL, "address blob of rank %d is not a ferry address", rank);
    out->n = p[5];
    out->host_len = (size_t)p[6] | (size_t)p[7] << 8;
    p += 8;
    if (out->n > FERRY__NET_MAX_EPS * 4 || (size_t)(end - p) < out->host_len)
        return ferry__fail(FERRY_EINVAL, "address blob of rank %d is malformed", rank);
    out->host = p;
    p += out->host_len;
    for (int i = 0; i < out->n; i++) {
        if (end - p < 1 || (size_t)(end - p) < 1u + p[0] + 2)
            return ferry__fail(FERRY_EINVAL, "address blob of rank %d is truncated", rank);
        out->prov_len[i] = p[0];
        out->prov[i] = p + 1;
        p += 1 + out->prov_len[i];
        out->addr_len[i] = (size_t)p[0] | (size_t)p[1] << 8;
        p += 2;
        if ((size_t)(end - p) < out->addr_len[i] || out->addr_len[i] == 0)
            return ferry__fail(FERRY_EINVAL, "address blob of rank %d is truncated", rank);
        out->addr[i] = p;
        p += out->addr_len[i];
    }
    if (p != end)
        return ferry__fail(FERRY_EINVAL, "address blob of rank %d has trailing bytes", rank);
    return FERRY_OK;
}

/* Index of the peer's address for provider `prov`, or -1. */
static int blob_find(const parsed_blob *pb, const char *prov)
{
    size_t n = strlen(prov);
    for (int i = 0; i < pb->n; i++)
        if (pb->prov_len[i] == n && memcmp(pb->prov[i], prov, n) == 0)
            return i;
    return -1;
}

/* ---- open / peers / start / close ---- */

static const char *canonical_provider(const char *t)
{
    return strcmp(t, "tcp") == 0 ? "tcp;ofi_rxm" : t;
}

static ferry_status open_providers(ferry__net *net, const ferry__net_options *opts)
{
    const char *forced = opts->transport ? opts->transport : getenv("FERRY_TRANSPORT");
    if (forced && *forced && strcmp(forced, "auto") != 0) {
        net->n_eps = 1;
        return open_ep(net, &net->eps[0], canonical_provider(forced), opts);
    }
    /* Opening tcp;ofi_rxm costs every process 10 ms of CPU and 17 MB it zeroes (rxm's receive
       pool): not worth it when no peer can need it. */
    const char *const order[] = {"shm", "tcp;ofi_rxm"};
    char why[512] = "";
    for (int i = 0; i < 2; i++) {
        if (i == 1 && opts->peers_all_local && net->n_eps == 1)
            break;
        ferry__net_ep *e = &net->eps[net->n_eps];
        if (open_ep(net, e, order[i], opts) == FERRY_OK) {
            net->n_eps++;
            continue;
        }
        snprintf(why + strlen(why), sizeof why - strlen(why), "%s%s", *why ? "; " : "",
                 ferry_last_error());
        ferry__log_info(MOD, "provider %s unavailable: %s", order[i], ferry_last_error());
        close_ep(e);
    }
    if (net->n_eps == 0)
        return ferry__fail(FERRY_ETRANSPORT, "no fabric provider could be opened: %s", why);
    return FERRY_OK;
}

ferry__net *ferry__net_open(const ferry__net_options *opts, const ferry__net_handlers *handlers)
{
    ferry__net_options defaults = {0};
    if (!opts)
        opts = &defaults;
    ferry__net *net = ferry__calloc(1, sizeof *net);
    if (!net)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for the fabric layer");
    if (handlers)
        net->h = *handlers;
    net->tick_ms = opts->tick_ms > 0 ? opts->tick_ms : 10;
    net->max_message_bytes =
        opts->max_message_bytes ? opts->max_message_bytes : FERRY__NET_MAX_MESSAGE_DEFAULT;
    net->queue_max = opts->queue_max ? opts->queue_max : FERRY__NET_QUEUE_MAX_DEFAULT;
    long long recv_ms = opts->recv_timeout_ms ? opts->recv_timeout_ms
                                              : FERRY__NET_RECV_TIMEOUT_DEFAULT_MS;
    net->recv_timeout_ns = recv_ms > 0 ? recv_ms * 1000000LL : 0;
    net->active_head = net->active_tail = -1;
    net->self_rank = -1;
    net->bell.fd = -1;
    net->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    net->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    pthread_mutex_init(&net->lock, NULL);
    pthread_cond_init(&net->posted_cond, NULL);
    pthread_mutex_init(&net->poll_lock, NULL);
    if (net->wake_fd < 0 || net->epoll_fd < 0) {
        ferry__fail(ferry__status_from_errno(errno), "eventfd/epoll: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(net->epoll_fd, EPOLL_CTL_ADD, net->wake_fd, &ev) != 0) {
        ferry__fail(FERRY_ETRANSPORT, "epoll_ctl: %s", strerror(errno));
        goto fail;
    }
    net->host_id = read_host_id();
    if (!net->host_id) {
        ferry__fail(FERRY_ENOMEM, "no memory");
        goto fail;
    }
    if (ferry__net_auth_init(net) != FERRY_OK)
        goto fail;
    ferry__net_fi_init();
    if (open_providers(net, opts) != FERRY_OK)
        goto fail;
    for (int i = 0; i < net->n_eps; i++)
        if (net->eps[i].is_shm && net->bell.fd < 0)
            ferry__net_bell_open(&net->bell, net->epoll_fd);
    if (build_blob(net) != FERRY_OK)
        goto fail;
    return net;
fail:;
    ferry_status rc = ferry_last_status();
    char msg[512];
    snprintf(msg, sizeof msg, "%s", ferry_last_error());
    ferry__net_close(net);
    ferry_set_error(rc, "%s", msg);
    return NULL;
}

ferry_status ferry__net_local_address(ferry__net *net, const void **blob, size_t *len)
{
    if (!net || !blob || !len)
        return ferry__fail(FERRY_EINVAL, "ferry__net_local_address: NULL argument");
    *blob = net->blob;
    *len = net->blob_len;
    return FERRY_OK;
}

/* Which of our endpoints reaches a peer: the forced one, shm on the same host, else tcp. */
static bool is_same_host(const ferry__net *net, const parsed_blob *pb)
{
    return pb->host_len == strlen(net->host_id) &&
           memcmp(pb->host, net->host_id, pb->host_len) == 0;
}

static ferry__net_ep *choose_ep(ferry__net *net, const parsed_blob *pb, int *idx)
{
    bool same_host = is_same_host(net, pb);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < net->n_eps; i++) {
            ferry__net_ep *e = &net->eps[i];
            if (net->n_eps > 1 && pass == 0 && e->is_shm != same_host)
                continue;
            if (e->is_shm && !same_host)
                continue;
            if ((*idx = blob_find(pb, e->prov_name)) >= 0)
                return e;
        }
    }
    return NULL;
}

static ferry_status insert_peer(ferry__net *net, int rank, const parsed_blob *pb)
{
    for (int i = 0; i < net->n_eps; i++) {
        ferry__net_ep *e = &net->eps[i];
        int k = blob_find(pb, e->prov_name);
        if (k < 0)
            continue;
        fi_addr_t fa = FI_ADDR_NOTAVAIL;
        int rc = fi_av_insert(e->av, pb->addr[k], 1, &fa, 0, NULL);
        if (rc != 1)
            return ferry__net_fail_fi(e, rc < 0 ? rc : -FI_EINVAL, "fi_av_insert");
        if (fa < (fi_addr_t)net->world_size)
            e->addr_rank[fa] = rank;
        e->rank_addr[rank] = fa;
        if (net->peers[rank].ep == e)
            net->peers[rank].addr = fa;
    }
    return FERRY_OK;
}

/* A shm peer's doorbell; ours for self (a user thread may post to self while we sleep). */
static void attach_bell(ferry__net *net, int rank, bool is_self, const parsed_blob *pb)
{
    int k = blob_find(pb, BELL_ENTRY);
    if (k >= 0)
        ferry__net_bell_attach(&net->peers[rank].bell, &net->bell, pb->addr[k], pb->addr_len[k],
                               is_self);
}

static void detach_bells(ferry__net *net)
{
    for (int r = 0; net->peers && r < net->world_size; r++)
        ferry__net_bell_detach(&net->peers[r].bell, &net->bell);
}

ferry_status ferry__net_set_peers(ferry__net *net, int self_rank, int world_size,
                                  const void *const *blobs, const size_t *lens)
{
    if (!net || world_size <= 0 || world_size > 0x3fffffff || self_rank < 0 ||
        self_rank >= world_size || !blobs || !lens)
        return ferry__fail(FERRY_EINVAL, "ferry__net_set_peers: bad rank %d of %d", self_rank,
                           world_size);
    if (net->peers)
        return ferry__fail(FERRY_EINVAL, "ferry__net_set_peers: peers already set");
    parsed_blob *pbs = ferry__calloc((size_t)world_size, sizeof *pbs);
    net->peers = ferry__calloc((size_t)world_size, sizeof *net->peers);
    ferry_status rc = pbs && net->peers ? FERRY_OK : ferry__fail(FERRY_ENOMEM, "no memory");
    for (int i = 0; i < net->n_eps && rc == FERRY_OK; i++) {
        ferry__net_ep *e = &net->eps[i];
        e->addr_rank = ferry__malloc((size_t)world_size * sizeof *e->addr_rank);
        e->rank_addr = ferry__malloc((size_t)world_size * sizeof *e->rank_addr);
        if (!e->addr_rank || !e->rank_addr)
            rc = ferry__fail(FERRY_ENOMEM, "no memory");
        for (int r = 0; rc == FERRY_OK && r < world_size; r++) {
            e->addr_rank[r] = -1;
            e->rank_addr[r] = FI_ADDR_NOTAVAIL;
        }
    }
    net->world_size = world_size;
    for (int r = 0; r < world_size && rc == FERRY_OK; r++) {
        int k;
        if ((rc = parse_blob(blobs[r], lens[r], r, &pbs[r])) != FERRY_OK)
            break;
        int a = blob_find(&pbs[r], AUTH_ENTRY);
        if (a < 0 || pbs[r].addr_len[a] != FERRY__NET_SECRET_BYTES) {
            rc = ferry__fail(FERRY_EINVAL, "address blob of rank %d carries no fabric secret", r);
            break;
        }
        ferry__net_auth_pair(net, self_rank, r, pbs[r].addr[a]);
        net->peers[r].next_active = -1;
        net->peers[r].ep = choose_ep(net, &pbs[r], &k);
        if (!net->peers[r].ep && net->n_eps == 1 && net->eps[0].is_shm &&
            !is_same_host(net, &pbs[r]))
            rc = ferry__fail(FERRY_ETRANSPORT,
                             "rank %d is on another host (%.*s) and only shm is open here "
                             "(FERRY_TRANSPORT=shm, or the launcher counted every rank on this "
                             "host); FERRY_TRANSPORT=tcp reaches it",
                             r, (int)pbs[r].host_len, (const char *)pbs[r].host);
        else if (!net->peers[r].ep)
            rc = ferry__fail(FERRY_ETRANSPORT, "rank %d shares no fabric provider with us", r);
    }
    for (int r = 0; r < world_size && rc == FERRY_OK; r++) {
        rc = insert_peer(net, r, &pbs[r]);
        if (rc == FERRY_OK && net->peers[r].ep->is_shm)
            attach_bell(net, r, r == self_rank, &pbs[r]);
    }
    ferry__free(pbs);
    if (rc != FERRY_OK) {
        detach_bells(net);
        ferry__net_auth_wipe(net);
        ferry__free(net->peers);
        net->peers = NULL;
        return rc;
    }
    net->self_rank = self_rank;
    return FERRY_OK;
}

ferry_status ferry__net_post_receives(ferry__net *net)
{
    for (int i = 0; i < net->n_eps; i++) {
        for (int k = 0; k < FERRY__NET_RX_BUFS; k++) {
            ferry__net_op *op = ferry__net_op_new(FERRY__OP_RECV, &net->eps[i], -1);
            void *buf = op ? ferry__malloc(FERRY__NET_EAGER_MAX) : NULL;
            if (!buf) {
                ferry__net_op_free(op);
                return ferry__fail(FERRY_ENOMEM, "no memory for receive buffers");
            }
            op->owned = buf;
            op->len = FERRY__NET_EAGER_MAX;
            ferry_status rc = ferry__net_submit(net, op, true);
            if (rc != FERRY_OK) {
                ferry__net_op_free(op);
                return rc;
            }
        }
    }
    return FERRY_OK;
}

ferry_status ferry__net_start(ferry__net *net)
{
    if (!net || !net->peers || net->is_started)
        return ferry__fail(FERRY_EINVAL, "ferry__net_start: %s",
                           !net ? "NULL net" : !net->peers ? "peers not set" : "already started");
    ferry_status rc = ferry__net_post_receives(net);
    if (rc != FERRY_OK)
        return rc;
    int err = pthread_create(&net->thread, NULL, ferry__net_progress_main, net);
    if (err != 0)
        return ferry__fail(ferry__status_from_errno(err), "progress thread: %s", strerror(err));
    net->is_started = true;
    return FERRY_OK;
}

const char *ferry__net_peer_provider(ferry__net *net, int peer)
{
    if (!net || !net->peers || peer < 0 || peer >= net->world_size || !net->peers[peer].ep)
        return "none";
    return net->peers[peer].ep->prov_name;
}

size_t ferry__net_queue_max(const ferry__net *net)
{
    return net ? net->queue_max : FERRY__NET_QUEUE_MAX_DEFAULT;
}

size_t ferry__net_peer_copy_max(ferry__net *net, int peer)
{
    if (!net || !net->peers || peer < 0 || peer >= net->world_size || !net->peers[peer].ep)
        return 0;
    const ferry__net_ep *e = net->peers[peer].ep;
    return e->is_shm ? e->info->tx_attr->inject_size : 0;
}

void ferry__net_kick(ferry__net *net)
{
    /* Pairs with the progress thread's store of is_sleeping before its last look at the flags:
       either it sees our change or we see it asleep (both sequentially consistent). */
    uint64_t one = 1;
    if (atomic_load(&net->is_sleeping) && write(net->wake_fd, &one, sizeof one) < 0 &&
        errno != EAGAIN)
        ferry__log_debug(MOD, "wake: %s", strerror(errno));
}

void ferry__net_wake(ferry__net *net)
{
    if (!net)
        return;
    atomic_store(&net->wake_pending, true);
    ferry__net_kick(net);
}

void ferry__net_get_stats(ferry__net *net, ferry__net_stats *out)
{
    if (!net || !out)
        return;
    out->messages_in = atomic_load(&net->messages_in);
    out->messages_out = atomic_load(&net->messages_out);
    out->bytes_in = atomic_load(&net->bytes_in);
    out->bytes_out = atomic_load(&net->bytes_out);
    out->dropped_unknown_source = atomic_load(&net->dropped);
    out->dropped_unauthenticated = atomic_load(&net->dropped_auth);
    out->dropped_refused = atomic_load(&net->dropped_refused);
    out->expired_receives = atomic_load(&net->expired);
    out->queue_full = atomic_load(&net->queue_full);
}

void ferry__net_close(ferry__net *net)
{
    if (!net)
        return;
    /* After this no new op is accepted; wait out threads still inside a post call. */
    pthread_mutex_lock(&net->lock);
    net->is_closing = true;
    while (net->n_posting > 0)
        pthread_cond_wait(&net->posted_cond, &net->lock);
    pthread_mutex_unlock(&net->lock);
    if (net->is_started) {
        atomic_store(&net->stop, true);
        ferry__net_kick(net);
        pthread_join(net->thread, NULL);
    }
    /* Closing an endpoint discards what was posted on it; the ops are ours to finish after. */
    for (int i = 0; i < net->n_eps; i++) {
        if (net->eps[i].ep)
            fi_close(&net->eps[i].ep->fid);
        net->eps[i].ep = NULL;
    }
    ferry__net_fail_all(net);
    for (int i = 0; i < FERRY__NET_MAX_EPS; i++)
        close_ep(&net->eps[i]);
    if (net->wake_fd >= 0)
        close(net->wake_fd);
    if (net->epoll_fd >= 0)
        close(net->epoll_fd);
    pthread_cond_destroy(&net->posted_cond);
    pthread_mutex_destroy(&net->lock);
    pthread_mutex_destroy(&net->poll_lock);
    detach_bells(net);
    ferry__net_bell_close(&net->bell);
    ferry__net_auth_wipe(net);
    ferry__free(net->peers);
    if (net->blob)
        explicit_bzero(net->blob, net->blob_len);
    ferry__free(net->blob);
    ferry__free(net->host_id);
    ferry__free(net);
}
