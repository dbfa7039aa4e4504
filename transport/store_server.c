/* The rendezvous store's server: one poll()-driven thread (rank 0 runs it) in front of the table
   (store_table.c, which parses and answers the frames). What it guards against, since anyone
   who reaches the port can connect: a connection must finish the handshake within
   handshake_timeout_s; at most max_pending connections may be in the handshake at once (one more
   evicts the oldest, so idle connections cannot crowd out the workers); an unauthenticated peer
   can make it buffer at most one proof; when accept fails (out of fds) the listener rests instead
   of spinning; and a client that sends requests without reading the replies stops being read once
   output_limit_bytes are queued for it, so its memory stays bounded. Any malformed frame closes
   that connection without touching the others. Blocking gets and waits are parked (the frame
   stays in the connection's input buffer) and retried whenever a key changes, so a waiting
   client costs nothing but its socket. */
#include "transport/store.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/sha256.h"
#include "transport/net_iface.h"
#include "transport/store_table.h"
#include "transport/store_wire.h"

#define READ_CHUNK 65536

typedef struct {
    int fd;
    bool is_ready;   /* past the auth check */
    bool is_pending; /* counts against max_pending: not authenticated yet (or, without a token,
                        no request yet) */
    int64_t accepted_ms;
    uint8_t nonce[FERRY__STORE_NONCE_LEN];
    ferry__store_stream stream;
    uint8_t *in;
    size_t in_len, in_cap;
    ferry__store_writer out;
} conn;

/* Counters other threads read; written by the server thread only. */
typedef struct {
    atomic_uint_fast64_t keys, requests, connections, pending, evicted, handshake_timeouts,
        accept_failures, read_pauses, out_bytes_max;
} stats;

struct ferry__store_server {
    int listen_fd, wake_rd, wake_wr;
    pthread_t thread;
    atomic_bool stopping;
    atomic_int n_ready;
    char *token;
    ferry__store_table *table;
    ferry__store_server_options opts;
    int max_pending;
    int64_t listen_paused_until_ms;
    bool is_accept_failing; /* warned about the current run of accept failures */
    conn **conns;
    size_t n_conns, cap_conns, n_pending;
    uint64_t requests;
    stats st;
};

/* ---- options ---------------------------------------------------------------------------- */

void ferry__store_server_options_init(ferry__store_server_options *o)
{
    o->handshake_timeout_s = ferry__store_env_double("FERRY_STORE_HANDSHAKE_TIMEOUT_S", 5);
    o->max_pending = (int)ferry__store_env_double("FERRY_STORE_MAX_PENDING", 64);
    o->output_limit_bytes =
        (size_t)(ferry__store_env_double("FERRY_STORE_OUTPUT_LIMIT_MB", 4) * (1 << 20));
    o->accept_pause_s = 0.1;
}

/* max_pending, but never more than a quarter of the fds this process may open, so a flood of
   half-open connections cannot take the fds the fabric and the workers' own connections need. */
static int pending_cap(int want)
{
    struct rlimit rl;
    int cap = want > 0 ? want : 1;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur / 4 < (rlim_t)cap)
        cap = rl.rlim_cur / 4 > 0 ? (int)(rl.rlim_cur / 4) : 1;
    return cap;
}

static void stat_max(atomic_uint_fast64_t *v, uint64_t x)
{
    if (atomic_load(v) < x)
        atomic_store(v, x);
}

/* ---- connections ------------------------------------------------------------------------ */

static void set_pending(ferry__store_server *srv, conn *c, bool is_pending)
{
    if (c->is_pending == is_pending)
        return;
    c->is_pending = is_pending;
    srv->n_pending += is_pending ? 1 : (size_t)-1;
}

/* Closes the socket now; the conn itself goes in reap_closed. */
static void conn_close(ferry__store_server *srv, conn *c)
{
    if (c->fd < 0)
        return;
    set_pending(srv, c, false);
    close(c->fd);
    c->fd = -1;
}

static void conn_free(ferry__store_server *srv, conn *c)
{
    conn_close(srv, c);
    if (c->is_ready)
        atomic_fetch_sub(&srv->n_ready, 1);
    ferry__free(c->in);
    ferry__free(c->out.p);
    ferry__free(c);
}

/* Writes what the socket takes now. false when the peer is gone. */
static bool conn_flush(conn *c)
{
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + off, c->out.len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0)
            return false;
        off += (size_t)n;
    }
    memmove(c->out.p, c->out.p + off, c->out.len - off);
    c->out.len -= off;
    return true;
}

static bool is_paused(const ferry__store_server *srv, const conn *c)
{
    return c->out.len >= srv->opts.output_limit_bytes;
}

/* Runs the complete frames in the input buffer, stopping at a parked one or when the output is
   over the limit. false = close. */
static bool conn_process(ferry__store_server *srv, conn *c)
{
    size_t used = 0;
    bool was_paused = is_paused(srv, c);
    bool is_ok = ferry__store_table_run(srv->table, &c->stream, c->in, c->in_len, &used, &c->out,
                                        srv->opts.output_limit_bytes, ferry__now_ms(),
                                        &srv->requests);
    if (used) {
        c->in_len -= used;
        memmove(c->in, c->in + used, c->in_len);
    }
    if (!srv->token && (c->stream.requests || c->stream.is_parked))
        set_pending(srv, c, false);
    if (!was_paused && is_paused(srv, c))
        atomic_fetch_add(&srv->st.read_pauses, 1);
    stat_max(&srv->st.out_bytes_max, c->out.len);
    return is_ok && !c->out.is_oom;
}

/* Checks the client's proof: its nonce and MAC over both nonces. A wrong one gets a 0 byte and
   the connection closes; a right one gets a 1 byte and the server's own MAC. */
static bool conn_auth(ferry__store_server *srv, conn *c)
{
    uint8_t want[FERRY_SHA256_LEN], reply[1 + FERRY_SHA256_LEN];
    const uint8_t *client_nonce = c->in;
    ferry__store_auth_mac(srv->token, false, c->nonce, client_nonce, want);
    bool is_ok = ferry__ct_equal(want, c->in + FERRY__STORE_NONCE_LEN, FERRY_SHA256_LEN);
    reply[0] = is_ok;
    if (!is_ok) {
        ferry__log_warn("store", "a client failed the auth check; closing it");
        (void)send(c->fd, reply, 1, MSG_NOSIGNAL);
        c->in_len = 0;
        return false;
    }
    ferry__store_auth_mac(srv->token, true, c->nonce, client_nonce, reply + 1);
    c->in_len = 0;
    c->is_ready = true;
    atomic_fetch_add(&srv->n_ready, 1);
    set_pending(srv, c, false);
    ferry__store_wr_raw(&c->out, reply, sizeof reply);
    return !c->out.is_oom;
}

/* How much to read next: before auth only the rest of the proof, so an unauthenticated peer
   cannot make the server buffer more than FERRY__STORE_PROOF_LEN bytes; after it, up to one
   frame (or a chunk of small ones). 0 = stop reading (malformed frame: *is_bad). */
static size_t read_want(const conn *c, bool *is_bad)
{
    size_t frame = 0;
    *is_bad = false;
    if (!c->is_ready)
        return FERRY__STORE_PROOF_LEN - c->in_len;
    if (!ferry__store_frame_len(c->in, c->in_len, &frame)) {
        *is_bad = true;
        return 0;
    }
    return frame > c->in_len ? frame - c->in_len : READ_CHUNK;
}

/* Reads what is there, and runs what came in, until the socket is drained, a request parks or
   the output is over the limit. */
static bool conn_read(ferry__store_server *srv, conn *c)
{
    while (!c->stream.is_parked && !is_paused(srv, c)) {
        bool is_bad;
        size_t want = read_want(c, &is_bad);
        if (is_bad)
            return false;
        if (c->in_len + want > c->in_cap) {
            uint8_t *p = ferry__realloc(c->in, c->in_len + want);
            if (!p)
                return false;
            c->in = p;
            c->in_cap = c->in_len + want;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0)
            return false;
        c->in_len += (size_t)n;
        if (!c->is_ready && c->in_len == FERRY__STORE_PROOF_LEN && !conn_auth(srv, c))
            return false;
        if (c->is_ready && !conn_process(srv, c))
            return false;
    }
    return true;
}

/* ---- accepting -------------------------------------------------------------------------- */

/* Closes the pending connection that has waited longest; false when there is none. */
static bool evict_oldest_pending(ferry__store_server *srv)
{
    conn *oldest = NULL;
    for (size_t i = 0; i < srv->n_conns; i++) {
        conn *c = srv->conns[i];
        if (c->fd >= 0 && c->is_pending && (!oldest || c->accepted_ms < oldest->accepted_ms))
            oldest = c;
    }
    if (!oldest)
        return false;
    conn_close(srv, oldest);
    atomic_fetch_add(&srv->st.evicted, 1);
    return true;
}

/* The hello: magic, whether a token is needed, our nonce. */
static bool send_hello(ferry__store_server *srv, conn *c)
{
    ferry__store_wr_u32(&c->out, FERRY__STORE_HELLO_MAGIC);
    ferry__store_wr_u8(&c->out, srv->token != NULL);
    if (srv->token) {
        if (getrandom(c->nonce, FERRY__STORE_NONCE_LEN, 0) != FERRY__STORE_NONCE_LEN)
            return false; /* no nonce, no connection */
        ferry__store_wr_raw(&c->out, c->nonce, FERRY__STORE_NONCE_LEN);
    }
    return !c->out.is_oom && conn_flush(c);
}

static void add_conn(ferry__store_server *srv, int fd)
{
    conn *c = ferry__calloc(1, sizeof *c);
    if (c && srv->n_conns == srv->cap_conns) {
        size_t cap = srv->cap_conns ? srv->cap_conns * 2 : 16;
        conn **p = ferry__realloc(srv->conns, cap * sizeof *p);
        if (p) {
            srv->conns = p;
            srv->cap_conns = cap;
        }
    }
    if (!c || srv->n_conns == srv->cap_conns) {
        ferry__free(c);
        close(fd);
        return;
    }
    c->fd = fd;
    c->accepted_ms = ferry__now_ms();
    srv->conns[srv->n_conns++] = c;
    set_pending(srv, c, true);
    c->is_ready = srv->token == NULL;
    if (c->is_ready)
        atomic_fetch_add(&srv->n_ready, 1);
    if (!send_hello(srv, c))
        conn_close(srv, c);
}

static void accept_new(ferry__store_server *srv)
{
    for (;;) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED || errno == EPROTO))
            continue;
        if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (fd < 0) {
            /* Out of fds or memory: free one by dropping the oldest half-open connection, or
               rest the listener a while instead of polling it again at once. */
            int err = errno;
            atomic_fetch_add(&srv->st.accept_failures, 1);
            if (evict_oldest_pending(srv))
                continue;
            if (!srv->is_accept_failing)
                ferry__log_warn("store", "accept failed (%s); the listener rests %.0f ms at a "
                                "time until it works again",
                                strerror(err), srv->opts.accept_pause_s * 1000);
            srv->is_accept_failing = true;
            srv->listen_paused_until_ms = ferry__now_ms() + (int64_t)(srv->opts.accept_pause_s * 1000);
            return;
        }
        int one = 1;
        srv->is_accept_failing = false;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ferry__store_tune_socket(fd);
        if (srv->n_pending >= (size_t)srv->max_pending)
            evict_oldest_pending(srv);
        add_conn(srv, fd);
    }
}

/* ---- the loop --------------------------------------------------------------------------- */

/* Retries parked requests after a write, answers those whose deadline passed, and closes
   connections that did not finish the handshake in time. */
static void serve_timers(ferry__store_server *srv)
{
    int64_t handshake_ms = (int64_t)(srv->opts.handshake_timeout_s * 1000);
    bool again = true;
    while (again) {
        again = false;
        int64_t now = ferry__now_ms();
        for (size_t i = 0; i < srv->n_conns; i++) {
            conn *c = srv->conns[i];
            if (c->fd >= 0 && c->is_pending && now - c->accepted_ms >= handshake_ms) {
                atomic_fetch_add(&srv->st.handshake_timeouts, 1);
                conn_close(srv, c);
            }
            /* Only authenticated input is ever run: before auth `in` holds part of a proof. */
            if (c->fd < 0 || !c->is_ready ||
                (!c->stream.is_parked && (is_paused(srv, c) || !c->in_len)))
                continue;
            /* Parked, or frames left unrun while the output was over the limit. */
            if (!conn_process(srv, c) || !conn_flush(c))
                conn_close(srv, c);
        }
        again = ferry__store_table_take_changed(srv->table);
    }
}

static int poll_timeout(ferry__store_server *srv)
{
    int64_t now = ferry__now_ms(), best = -1;
    int64_t handshake_ms = (int64_t)(srv->opts.handshake_timeout_s * 1000);
    for (size_t i = 0; i < srv->n_conns; i++) {
        conn *c = srv->conns[i];
        int64_t at = -1;
        if (c->fd >= 0 && c->stream.is_parked && c->stream.deadline_ms)
            at = c->stream.deadline_ms;
        if (c->fd >= 0 && c->is_pending && (at < 0 || c->accepted_ms + handshake_ms < at))
            at = c->accepted_ms + handshake_ms;
        if (at >= 0 && (best < 0 || at - now < best))
            best = at > now ? at - now : 0;
    }
    if (srv->listen_paused_until_ms) {
        int64_t left = srv->listen_paused_until_ms - now;
        if (left <= 0)
            srv->listen_paused_until_ms = 0;
        else if (best < 0 || left < best)
            best = left;
    }
    return best > 1000000 ? 1000000 : (int)best;
}

static short conn_events(const ferry__store_server *srv, const conn *c)
{
    short ev = c->stream.is_parked || is_paused(srv, c) ? POLLRDHUP : POLLIN;
    return (short)(ev | (c->out.len ? POLLOUT : 0));
}

static void handle_events(ferry__store_server *srv, const struct pollfd *pfd, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        conn *c = srv->conns[i];
        short ev = pfd[i + 2].revents;
        bool is_ok = true;
        if (c->fd < 0 || !ev)
            continue;
        if (ev & POLLIN)
            is_ok = conn_read(srv, c);
        else if (ev & (POLLHUP | POLLERR | POLLRDHUP))
            is_ok = false; /* a parked or paused client went away */
        if (is_ok && c->out.len)
            is_ok = conn_flush(c);
        if (!is_ok)
            conn_close(srv, c);
    }
}

/* Drops connections closed during this round (their fd is -1). */
static void reap_closed(ferry__store_server *srv)
{
    size_t kept = 0;
    for (size_t i = 0; i < srv->n_conns; i++) {
        if (srv->conns[i]->fd >= 0)
            srv->conns[kept++] = srv->conns[i];
        else
            conn_free(srv, srv->conns[i]);
    }
    srv->n_conns = kept;
    atomic_store(&srv->st.connections, kept);
    atomic_store(&srv->st.pending, srv->n_pending);
    atomic_store(&srv->st.keys, ferry__store_table_keys(srv->table));
    atomic_store(&srv->st.requests, srv->requests);
}

static void *server_main(void *arg)
{
    ferry__store_server *srv = arg;
    struct pollfd *pfd = NULL;
    size_t pfd_cap = 0;
    while (!atomic_load(&srv->stopping)) {
        size_t n = srv->n_conns;
        if (n + 2 > pfd_cap) {
            struct pollfd *p = ferry__realloc(pfd, (n + 2) * 2 * sizeof *p);
            if (!p) {
                ferry__log_error("store", "server out of memory; stopping");
                break;
            }
            pfd = p;
            pfd_cap = (n + 2) * 2;
        }
        int timeout_ms = poll_timeout(srv);
        pfd[0] = (struct pollfd){.fd = srv->wake_rd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = srv->listen_paused_until_ms ? -1 : srv->listen_fd,
                                 .events = POLLIN};
        for (size_t i = 0; i < n; i++)
            pfd[i + 2] = (struct pollfd){.fd = srv->conns[i]->fd,
                                         .events = conn_events(srv, srv->conns[i])};
        if (poll(pfd, n + 2, timeout_ms) < 0 && errno != EINTR)
            break;
        handle_events(srv, pfd, n);
        if (pfd[1].revents & POLLIN)
            accept_new(srv);
        serve_timers(srv);
        reap_closed(srv);
    }
    ferry__free(pfd);
    return NULL;
}

/* ---- start and stop --------------------------------------------------------------------- */

static int bind_listen(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
        return fd;
    int err = errno;
    close(fd);
    errno = err;
    return -1;
}

/* Listens on host's interface; a host that is not local (a name behind NAT, say) falls back to
   every interface, since clients only need to reach the port. So does this host's own name when
   it resolves to loopback here (127.0.1.1 on Debian): the other hosts resolve it to an address
   of the real network. */
static int listen_on(const char *host, int port, int *bound_port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    char port_text[16];
    bool any = !host || !*host || ferry__net_host_is_local_name(host);
    snprintf(port_text, sizeof port_text, "%d", port);
    hints.ai_family = any ? AF_INET : AF_UNSPEC;
    int gai = getaddrinfo(any ? NULL : host, port_text, &hints, &res);
    if (gai != 0)
        return ferry__fail(FERRY_ETRANSPORT, "store cannot resolve %s: %s", host, gai_strerror(gai)),
               -1;
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = bind_listen(ai);
        err = errno;
    }
    freeaddrinfo(res);
    if (fd < 0 && !any && err == EADDRNOTAVAIL) {
        ferry__log_info("store", "%s is not a local address; listening on every interface", host);
        return listen_on(NULL, port, bound_port);
    }
    if (fd < 0)
        return ferry__fail(FERRY_ETRANSPORT, "store cannot listen on %s:%d: %s",
                           any ? "0.0.0.0" : host, port, strerror(err)),
               -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void server_free(ferry__store_server *srv)
{
    for (size_t i = 0; i < srv->n_conns; i++)
        conn_free(srv, srv->conns[i]);
    ferry__store_table_free(srv->table);
    if (srv->token)
        explicit_bzero(srv->token, strlen(srv->token));
    ferry__free(srv->token);
    ferry__free(srv->conns);
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->wake_rd >= 0)
        close(srv->wake_rd);
    if (srv->wake_wr >= 0)
        close(srv->wake_wr);
    ferry__free(srv);
}

ferry__store_server *ferry__store_server_start(const char *host, int port, const char *token,
                                               const ferry__store_server_options *opts,
                                               int *bound_port)
{
    int fds[2], bound = 0;
    if (port < 0 || port > 65535)
        return ferry__fail_null(FERRY_EINVAL, "store port %d is out of range", port);
    ferry__store_server *srv = ferry__calloc(1, sizeof *srv);
    if (!srv)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory starting the store");
    srv->listen_fd = srv->wake_rd = srv->wake_wr = -1;
    if (opts)
        srv->opts = *opts;
    else
        ferry__store_server_options_init(&srv->opts);
    srv->max_pending = pending_cap(srv->opts.max_pending);
    srv->table = ferry__store_table_new();
    srv->token = token ? ferry__strdup(token) : NULL;
    if (!srv->table || (token && !srv->token)) {
        ferry__fail(FERRY_ENOMEM, "out of memory starting the store");
        goto fail;
    }
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        ferry__fail(ferry__status_from_errno(errno), "store: pipe: %s", strerror(errno));
        goto fail;
    }
    srv->wake_rd = fds[0];
    srv->wake_wr = fds[1];
    srv->listen_fd = listen_on(host, port, &bound);
    if (srv->listen_fd < 0)
        goto fail;
    int err = pthread_create(&srv->thread, NULL, server_main, srv);
    if (err) {
        ferry__fail(ferry__status_from_errno(err), "store: cannot start thread: %s", strerror(err));
        goto fail;
    }
    if (bound_port)
        *bound_port = bound;
    ferry__log_debug("store", "serving on %s:%d%s (handshake %.1f s, %d pending at most, %zu-byte "
                     "output limit)",
                     host && *host ? host : "0.0.0.0", bound, token ? " with auth" : "",
                     srv->opts.handshake_timeout_s, srv->max_pending,
                     srv->opts.output_limit_bytes);
    return srv;
fail:
    server_free(srv);
    return NULL;
}

void ferry__store_server_stop(ferry__store_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stopping, true);
    uint8_t byte = 1;
    while (write(srv->wake_wr, &byte, 1) < 0 && errno == EINTR)
        ;
    pthread_join(srv->thread, NULL);
    server_free(srv);
}

int ferry__store_server_clients(ferry__store_server *srv)
{
    return srv ? atomic_load(&srv->n_ready) : 0;
}

void ferry__store_server_get_stats(ferry__store_server *srv, ferry__store_server_stats *out)
{
    *out = (ferry__store_server_stats){
        .keys = atomic_load(&srv->st.keys),
        .requests = atomic_load(&srv->st.requests),
        .connections = atomic_load(&srv->st.connections),
        .pending = atomic_load(&srv->st.pending),
        .evicted = atomic_load(&srv->st.evicted),
        .handshake_timeouts = atomic_load(&srv->st.handshake_timeouts),
        .accept_failures = atomic_load(&srv->st.accept_failures),
        .read_pauses = atomic_load(&srv->st.read_pauses),
        .out_bytes_max = atomic_load(&srv->st.out_bytes_max),
    };
}
