/* The rendezvous store's server: one poll()-driven thread (rank 0 runs it) holding the key-value
   table. It trusts nothing a client sends: lengths are checked against the caps in store_wire.h
   before any allocation, an unauthenticated peer can make it buffer at most one MAC, and any
   malformed frame closes that connection without touching the others. Blocking gets and waits
   are parked (the frame stays in the connection's input buffer) and retried whenever a key
   changes, so a waiting client costs nothing but its socket. */
#include "transport/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/sha256.h"
#include "transport/store_wire.h"

/* What handling one request frame came to: answered, parked until its keys exist, or a
   malformed request that closes the connection. */
enum { DONE, PARKED, BAD };

typedef struct entry {
    struct entry *next;
    char *key;
    size_t key_len;
    uint8_t *val;
    size_t val_len;
} entry;

typedef struct {
    int fd;
    bool is_ready;  /* past the auth check */
    bool is_parked; /* the first frame in `in` waits for keys */
    int64_t deadline_ms;
    uint8_t nonce[FERRY__STORE_NONCE_LEN];
    uint8_t *in, *out;
    size_t in_len, in_cap, out_len, out_cap;
} conn;

struct ferry__store_server {
    int listen_fd, wake_rd, wake_wr;
    pthread_t thread;
    atomic_bool stopping;
    atomic_int n_ready;
    char *token;
    entry **buckets;
    size_t n_buckets;
    conn **conns;
    size_t n_conns, cap_conns;
    bool changed; /* a key was written: retry parked requests */
};

/* ---- the table -------------------------------------------------------------------------- */

static size_t hash_key(const uint8_t *key, size_t len, size_t n_buckets)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ key[i]) * 1099511628211ull;
    return (size_t)(h % n_buckets);
}

static entry *table_find(ferry__store_server *srv, const uint8_t *key, size_t len)
{
    for (entry *e = srv->buckets[hash_key(key, len, srv->n_buckets)]; e; e = e->next)
        if (e->key_len == len && !memcmp(e->key, key, len))
            return e;
    return NULL;
}

/* Stores a copy of val under key. false on out-of-memory (the old value stays). */
static bool table_put(ferry__store_server *srv, const uint8_t *key, size_t key_len,
                      const void *val, size_t val_len)
{
    uint8_t *copy = ferry__malloc(val_len);
    if (!copy)
        return false;
    if (val_len)
        memcpy(copy, val, val_len);
    entry *e = table_find(srv, key, key_len);
    if (!e) {
        e = ferry__calloc(1, sizeof *e);
        char *k = ferry__strndup((const char *)key, key_len);
        if (!e || !k) {
            ferry__free(e);
            ferry__free(k);
            ferry__free(copy);
            return false;
        }
        e->key = k;
        e->key_len = key_len;
        size_t b = hash_key(key, key_len, srv->n_buckets);
        e->next = srv->buckets[b];
        srv->buckets[b] = e;
    }
    ferry__free(e->val);
    e->val = copy;
    e->val_len = val_len;
    srv->changed = true;
    return true;
}

/* Parses a whole decimal int64 (what add stores); false for anything else. */
static bool parse_i64(const uint8_t *s, size_t len, int64_t *out)
{
    char buf[32];
    char *end;
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* ---- connections ------------------------------------------------------------------------ */

static bool conn_queue(conn *c, const void *data, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 512;
        while (cap < c->out_len + n)
            cap *= 2;
        uint8_t *p = ferry__realloc(c->out, cap);
        if (!p)
            return false;
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
    return true;
}

/* Writes what the socket takes now. false when the peer is gone. */
static bool conn_flush(conn *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0)
            return false;
        off += (size_t)n;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    return true;
}

/* Queues one reply frame: status byte then payload. */
static bool conn_reply(conn *c, uint8_t status, const void *payload, size_t len)
{
    uint8_t head[5] = {0, 0, 0, 0, status};
    ferry__store_put_be32(head, (uint32_t)(len + 1));
    return conn_queue(c, head, sizeof head) && (len == 0 || conn_queue(c, payload, len));
}

static void conn_free(ferry__store_server *srv, conn *c)
{
    if (c->is_ready)
        atomic_fetch_sub(&srv->n_ready, 1);
    if (c->fd >= 0)
        close(c->fd);
    ferry__free(c->in);
    ferry__free(c->out);
    ferry__free(c);
}

/* Parks a get/wait until its keys exist or its deadline passes. */
static int park(conn *c, uint64_t timeout_ms)
{
    if (!c->is_parked) {
        c->is_parked = true;
        c->deadline_ms = timeout_ms ? ferry__now_ms() + (int64_t)timeout_ms : 0;
    }
    return PARKED;
}

static int op_get(ferry__store_server *srv, conn *c, ferry__store_reader *r)
{
    size_t klen;
    uint64_t timeout_ms = ferry__store_rd_u64(r);
    const uint8_t *key = ferry__store_rd_blob(r, FERRY__STORE_KEY_MAX, &klen);
    if (r->is_bad || r->left)
        return BAD;
    entry *e = table_find(srv, key, klen);
    if (!e)
        return park(c, timeout_ms);
    return conn_reply(c, FERRY__STORE_REPLY_OK, e->val, e->val_len) ? DONE : BAD;
}

/* wait (all keys must exist) and check (which exist) share the key list. */
static int op_keys(ferry__store_server *srv, conn *c, ferry__store_reader *r, bool is_wait)
{
    uint64_t timeout_ms = is_wait ? ferry__store_rd_u64(r) : 0;
    uint32_t n = ferry__store_rd_u32(r);
    if (r->is_bad || n > FERRY__STORE_KEYS_MAX || n > r->left / 4)
        return BAD;
    uint8_t *present = ferry__malloc(n);
    if (!present)
        return BAD;
    bool all = true;
    for (uint32_t i = 0; i < n; i++) {
        size_t klen;
        const uint8_t *key = ferry__store_rd_blob(r, FERRY__STORE_KEY_MAX, &klen);
        present[i] = key && table_find(srv, key, klen);
        all = all && present[i];
    }
    int rc = DONE;
    if (r->is_bad || r->left)
        rc = BAD;
    else if (is_wait && !all)
        rc = park(c, timeout_ms);
    else if (!conn_reply(c, FERRY__STORE_REPLY_OK, present, is_wait ? 0 : n))
        rc = BAD;
    ferry__free(present);
    return rc;
}

static int op_add(ferry__store_server *srv, conn *c, ferry__store_reader *r)
{
    size_t klen;
    int64_t delta = (int64_t)ferry__store_rd_u64(r), cur = 0, sum;
    const uint8_t *key = ferry__store_rd_blob(r, FERRY__STORE_KEY_MAX, &klen);
    if (r->is_bad || r->left)
        return BAD;
    entry *e = table_find(srv, key, klen);
    if ((e && !parse_i64(e->val, e->val_len, &cur)) || __builtin_add_overflow(cur, delta, &sum))
        return conn_reply(c, FERRY__STORE_REPLY_NOT_INT, NULL, 0) ? DONE : BAD;
    char text[32];
    int n = snprintf(text, sizeof text, "%" PRId64, sum);
    if (!table_put(srv, key, klen, text, (size_t)n))
        return BAD;
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)((uint64_t)sum >> (56 - 8 * i));
    return conn_reply(c, FERRY__STORE_REPLY_OK, be, sizeof be) ? DONE : BAD;
}

/* torch's compare_set: set when the current value is `expected` (or absent and nothing is
   expected); reply with the value now stored, or `expected` when the key is absent. */
static int op_cas(ferry__store_server *srv, conn *c, ferry__store_reader *r)
{
    size_t klen, elen, dlen;
    const uint8_t *key = ferry__store_rd_blob(r, FERRY__STORE_KEY_MAX, &klen);
    uint8_t expect_present = ferry__store_rd_u8(r);
    const uint8_t *expected = ferry__store_rd_blob(r, FERRY__STORE_VALUE_MAX, &elen);
    const uint8_t *desired = ferry__store_rd_blob(r, FERRY__STORE_VALUE_MAX, &dlen);
    if (r->is_bad || r->left || expect_present > 1)
        return BAD;
    entry *e = table_find(srv, key, klen);
    bool matches = e ? expect_present && e->val_len == elen && !memcmp(e->val, expected, elen)
                     : !expect_present;
    if (matches && !table_put(srv, key, klen, desired, dlen))
        return BAD;
    if (!e && !matches)
        return conn_reply(c, FERRY__STORE_REPLY_OK, expected, elen) ? DONE : BAD;
    e = table_find(srv, key, klen);
    return conn_reply(c, FERRY__STORE_REPLY_OK, e->val, e->val_len) ? DONE : BAD;
}

static int handle_frame(ferry__store_server *srv, conn *c, const uint8_t *body, size_t len)
{
    ferry__store_reader r = {.p = body, .left = len};
    size_t klen, vlen;
    switch (ferry__store_rd_u8(&r)) {
    case FERRY__STORE_OP_SET: {
        const uint8_t *key = ferry__store_rd_blob(&r, FERRY__STORE_KEY_MAX, &klen);
        const uint8_t *val = ferry__store_rd_blob(&r, FERRY__STORE_VALUE_MAX, &vlen);
        if (r.is_bad || r.left || !table_put(srv, key, klen, val, vlen))
            return BAD;
        return conn_reply(c, FERRY__STORE_REPLY_OK, NULL, 0) ? DONE : BAD;
    }
    case FERRY__STORE_OP_GET:
        return op_get(srv, c, &r);
    case FERRY__STORE_OP_ADD:
        return op_add(srv, c, &r);
    case FERRY__STORE_OP_WAIT:
        return op_keys(srv, c, &r, true);
    case FERRY__STORE_OP_CAS:
        return op_cas(srv, c, &r);
    case FERRY__STORE_OP_CHECK:
        return op_keys(srv, c, &r, false);
    default:
        return BAD;
    }
}

/* Runs every complete frame in the input buffer (stopping at a parked one). false = close. */
static bool conn_process(ferry__store_server *srv, conn *c)
{
    while (c->in_len >= 4) {
        uint32_t body = ferry__store_load_be32(c->in);
        if (body == 0 || body > FERRY__STORE_BODY_MAX)
            return false;
        if (c->in_len < 4 + (size_t)body)
            return true;
        int rc = handle_frame(srv, c, c->in + 4, body);
        if (rc == BAD)
            return false;
        if (rc == PARKED) {
            if (c->deadline_ms && ferry__now_ms() >= c->deadline_ms)
                rc = conn_reply(c, FERRY__STORE_REPLY_TIMEOUT, NULL, 0) ? DONE : BAD;
            if (rc != DONE)
                return rc == PARKED;
        }
        c->is_parked = false;
        c->in_len -= 4 + (size_t)body;
        memmove(c->in, c->in + 4 + body, c->in_len);
    }
    return true;
}

/* Checks the client's MAC over our nonce. A wrong one gets a 0 byte and the connection closes. */
static bool conn_auth(ferry__store_server *srv, conn *c)
{
    uint8_t want[FERRY_SHA256_LEN];
    ferry__store_auth_mac(srv->token, c->nonce, want);
    bool is_ok = ferry__ct_equal(want, c->in, FERRY_SHA256_LEN);
    uint8_t verdict = is_ok;
    c->in_len = 0;
    if (!is_ok) {
        ferry__log_warn("store", "a client failed the auth check; closing it");
        (void)send(c->fd, &verdict, 1, MSG_NOSIGNAL);
        return false;
    }
    c->is_ready = true;
    atomic_fetch_add(&srv->n_ready, 1);
    return conn_queue(c, &verdict, 1);
}

/* Reads what is there. Before auth only the MAC is read, so an unauthenticated peer cannot make
   the server buffer more than 32 bytes; after it, the buffer grows to one frame at most. */
static bool conn_read(ferry__store_server *srv, conn *c)
{
    for (;;) {
        size_t want = c->is_ready ? 65536 : FERRY_SHA256_LEN - c->in_len;
        if (c->is_ready && c->in_len >= 4) {
            uint32_t body = ferry__store_load_be32(c->in);
            if (body == 0 || body > FERRY__STORE_BODY_MAX)
                return false;
            if (4 + (size_t)body > c->in_len)
                want = 4 + (size_t)body - c->in_len;
        }
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
        if (!c->is_ready && c->in_len == FERRY_SHA256_LEN && !conn_auth(srv, c))
            return false;
        if (c->is_ready && !c->is_parked && !conn_process(srv, c))
            return false;
        if (c->is_parked)
            return true;
    }
}

/* ---- the loop --------------------------------------------------------------------------- */

static void accept_new(ferry__store_server *srv)
{
    for (;;) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a transient failure (EMFILE): retried on the next wakeup */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
            continue;
        }
        c->fd = fd;
        ferry__store_writer w = {0};
        ferry__store_wr_u32(&w, FERRY__STORE_HELLO_MAGIC);
        ferry__store_wr_u8(&w, srv->token != NULL);
        if (srv->token && getrandom(c->nonce, FERRY__STORE_NONCE_LEN, 0) != FERRY__STORE_NONCE_LEN)
            w.is_oom = true; /* no nonce, no connection */
        if (srv->token)
            ferry__store_wr_raw(&w, c->nonce, FERRY__STORE_NONCE_LEN);
        if (w.is_oom || !conn_queue(c, w.p, w.len)) {
            ferry__free(w.p);
            conn_free(srv, c);
            continue;
        }
        ferry__free(w.p);
        c->is_ready = srv->token == NULL;
        if (c->is_ready)
            atomic_fetch_add(&srv->n_ready, 1);
        srv->conns[srv->n_conns++] = c;
    }
}

/* Retries parked requests after a write, and answers those whose deadline passed. */
static void serve_parked(ferry__store_server *srv)
{
    do {
        srv->changed = false;
        for (size_t i = 0; i < srv->n_conns; i++) {
            conn *c = srv->conns[i];
            if (c->fd < 0 || !c->is_parked)
                continue;
            if (!conn_process(srv, c) || !conn_flush(c)) {
                close(c->fd);
                c->fd = -1;
            }
        }
    } while (srv->changed);
}

static int poll_timeout(ferry__store_server *srv)
{
    int64_t now = ferry__now_ms(), best = -1;
    for (size_t i = 0; i < srv->n_conns; i++) {
        conn *c = srv->conns[i];
        if (c->is_parked && c->deadline_ms) {
            int64_t left = c->deadline_ms > now ? c->deadline_ms - now : 0;
            if (best < 0 || left < best)
                best = left;
        }
    }
    return best > 1000000 ? 1000000 : (int)best;
}

static void handle_events(ferry__store_server *srv, const struct pollfd *pfd, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        conn *c = srv->conns[i];
        short ev = pfd[i + 2].revents;
        bool is_ok = true;
        if (ev & POLLIN)
            is_ok = conn_read(srv, c);
        else if (ev & (POLLHUP | POLLERR | POLLRDHUP))
            is_ok = false; /* a parked client went away */
        if (is_ok && c->out_len)
            is_ok = conn_flush(c);
        if (!is_ok) {
            close(c->fd);
            c->fd = -1;
        }
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
        pfd[0] = (struct pollfd){.fd = srv->wake_rd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = srv->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < n; i++) {
            conn *c = srv->conns[i];
            short ev = c->is_parked ? POLLRDHUP : POLLIN;
            pfd[i + 2] = (struct pollfd){.fd = c->fd,
                                         .events = (short)(ev | (c->out_len ? POLLOUT : 0))};
        }
        if (poll(pfd, n + 2, poll_timeout(srv)) < 0 && errno != EINTR)
            break;
        handle_events(srv, pfd, n);
        if (pfd[1].revents & POLLIN)
            accept_new(srv);
        serve_parked(srv);
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
   every interface, since clients only need to reach the port. */
static int listen_on(const char *host, int port, int *bound_port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    char port_text[16];
    bool any = !host || !*host;
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
    for (size_t b = 0; srv->buckets && b < srv->n_buckets; b++) {
        for (entry *e = srv->buckets[b], *next; e; e = next) {
            next = e->next;
            ferry__free(e->key);
            ferry__free(e->val);
            ferry__free(e);
        }
    }
    if (srv->token)
        explicit_bzero(srv->token, strlen(srv->token));
    ferry__free(srv->token);
    ferry__free(srv->buckets);
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
                                               int *bound_port)
{
    int fds[2], bound = 0;
    if (port < 0 || port > 65535)
        return ferry__fail_null(FERRY_EINVAL, "store port %d is out of range", port);
    ferry__store_server *srv = ferry__calloc(1, sizeof *srv);
    if (!srv)
        return ferry__fail_null(FERRY_ENOMEM, "out of memory starting the store");
    srv->listen_fd = srv->wake_rd = srv->wake_wr = -1;
    srv->n_buckets = 1024;
    srv->buckets = ferry__calloc(srv->n_buckets, sizeof *srv->buckets);
    srv->token = token ? ferry__strdup(token) : NULL;
    if (!srv->buckets || (token && !srv->token)) {
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
    ferry__log_debug("store", "serving on %s:%d%s", host && *host ? host : "0.0.0.0", bound,
                     token ? " with auth" : "");
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
