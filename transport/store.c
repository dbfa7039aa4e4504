/* The rendezvous store over TCP: a poll()-driven server thread (rank 0 runs it) and a blocking
   client. Frames are a 4-byte big-endian body length followed by the body; the first body byte is
   the operation. The server trusts nothing a client sends: lengths are checked against fixed caps
   before any allocation, an unauthenticated peer can make it buffer at most one MAC, and any
   malformed frame closes that connection without touching the others. Blocking gets and waits are
   parked on the server (the frame stays in the connection's input buffer) and retried whenever a
   key changes, so a waiting client costs nothing but its socket. The ferry__store_* calls check
   their arguments once here and forward to a backend: this TCP client or the file store. */
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
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/sha256.h"

#define KEY_MAX 4096u
#define VALUE_MAX (16u << 20)
/* The largest body: compare_set carries a key and two values, plus small fields. */
#define BODY_MAX (2 * VALUE_MAX + KEY_MAX + 64)
#define KEYS_MAX 65536u
#define HELLO_MAGIC 0x46525931u /* "FRY1" */
#define NONCE_LEN 32

enum { OP_SET = 1, OP_GET, OP_ADD, OP_WAIT, OP_CAS, OP_CHECK };
enum { REPLY_OK = 0, REPLY_TIMEOUT = 1, REPLY_NOT_INT = 2 };
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
    uint8_t nonce[NONCE_LEN];
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

struct ferry__store {
    const ferry__store_backend *backend;
    void *impl;
};

/* A bounded reader over one frame body; any overrun marks it bad instead of reading on. */
typedef struct {
    const uint8_t *p;
    size_t left;
    bool is_bad;
} reader;

typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool is_oom;
} writer;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t timeout_to_ms(double timeout_s)
{
    if (timeout_s <= 0)
        return 0;
    if (timeout_s > 1e9)
        return (uint64_t)1e12;
    uint64_t ms = (uint64_t)(timeout_s * 1000.0);
    return ms ? ms : 1;
}

/* ---- byte helpers ---------------------------------------------------------------------- */

static const uint8_t *rd_take(reader *r, size_t n)
{
    if (r->is_bad || r->left < n) {
        r->is_bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint64_t rd_u64(reader *r)
{
    const uint8_t *p = rd_take(r, 8);
    uint64_t v = 0;
    for (int i = 0; p && i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint32_t rd_u32(reader *r)
{
    const uint8_t *p = rd_take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

static uint8_t rd_u8(reader *r)
{
    const uint8_t *p = rd_take(r, 1);
    return p ? p[0] : 0;
}

/* A length-prefixed byte string of at most `max` bytes. */
static const uint8_t *rd_blob(reader *r, size_t max, size_t *len)
{
    uint32_t n = rd_u32(r);
    if (n > max)
        r->is_bad = true;
    *len = n;
    return r->is_bad ? NULL : rd_take(r, n);
}

static void wr_raw(writer *w, const void *data, size_t n)
{
    if (w->is_oom)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *p = ferry__realloc(w->p, cap);
        if (!p) {
            w->is_oom = true;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    if (n)
        memcpy(w->p + w->len, data, n);
    w->len += n;
}

static void wr_u64(writer *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    wr_raw(w, b, 8);
}

static void wr_u32(writer *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    wr_raw(w, b, 4);
}

static void wr_u8(writer *w, uint8_t v)
{
    wr_raw(w, &v, 1);
}

static void wr_blob(writer *w, const void *data, size_t n)
{
    wr_u32(w, (uint32_t)n);
    wr_raw(w, data, n);
}

/* Reserves the 4-byte length that wr_end fills in. */
static void wr_begin(writer *w)
{
    w->len = 0;
    wr_u32(w, 0);
}

static void wr_end(writer *w)
{
    uint32_t body = (uint32_t)(w->len - 4);
    if (w->is_oom)
        return;
    w->p[0] = (uint8_t)(body >> 24);
    w->p[1] = (uint8_t)(body >> 16);
    w->p[2] = (uint8_t)(body >> 8);
    w->p[3] = (uint8_t)body;
}

/* ---- server: the table ------------------------------------------------------------------ */

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

/* ---- server: connections ---------------------------------------------------------------- */

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
    uint32_t body = (uint32_t)(len + 1);
    head[0] = (uint8_t)(body >> 24);
    head[1] = (uint8_t)(body >> 16);
    head[2] = (uint8_t)(body >> 8);
    head[3] = (uint8_t)body;
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
        c->deadline_ms = timeout_ms ? now_ms() + (int64_t)timeout_ms : 0;
    }
    return PARKED;
}

static int op_get(ferry__store_server *srv, conn *c, reader *r)
{
    size_t klen;
    uint64_t timeout_ms = rd_u64(r);
    const uint8_t *key = rd_blob(r, KEY_MAX, &klen);
    if (r->is_bad || r->left)
        return BAD;
    entry *e = table_find(srv, key, klen);
    if (!e)
        return park(c, timeout_ms);
    return conn_reply(c, REPLY_OK, e->val, e->val_len) ? DONE : BAD;
}

/* wait (all keys must exist) and check (which exist) share the key list. */
static int op_keys(ferry__store_server *srv, conn *c, reader *r, bool is_wait)
{
    uint64_t timeout_ms = is_wait ? rd_u64(r) : 0;
    uint32_t n = rd_u32(r);
    if (r->is_bad || n > KEYS_MAX || n > r->left / 4)
        return BAD;
    uint8_t *present = ferry__malloc(n);
    if (!present)
        return BAD;
    bool all = true;
    for (uint32_t i = 0; i < n; i++) {
        size_t klen;
        const uint8_t *key = rd_blob(r, KEY_MAX, &klen);
        present[i] = key && table_find(srv, key, klen);
        all = all && present[i];
    }
    int rc = DONE;
    if (r->is_bad || r->left)
        rc = BAD;
    else if (is_wait && !all)
        rc = park(c, timeout_ms);
    else if (!conn_reply(c, REPLY_OK, present, is_wait ? 0 : n))
        rc = BAD;
    ferry__free(present);
    return rc;
}

static int op_add(ferry__store_server *srv, conn *c, reader *r)
{
    size_t klen;
    int64_t delta = (int64_t)rd_u64(r), cur = 0, sum;
    const uint8_t *key = rd_blob(r, KEY_MAX, &klen);
    if (r->is_bad || r->left)
        return BAD;
    entry *e = table_find(srv, key, klen);
    if ((e && !parse_i64(e->val, e->val_len, &cur)) || __builtin_add_overflow(cur, delta, &sum))
        return conn_reply(c, REPLY_NOT_INT, NULL, 0) ? DONE : BAD;
    char text[32];
    int n = snprintf(text, sizeof text, "%" PRId64, sum);
    if (!table_put(srv, key, klen, text, (size_t)n))
        return BAD;
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)((uint64_t)sum >> (56 - 8 * i));
    return conn_reply(c, REPLY_OK, be, sizeof be) ? DONE : BAD;
}

/* torch's compare_set: set when the current value is `expected` (or absent and nothing is
   expected); reply with the value now stored, or `expected` when the key is absent. */
static int op_cas(ferry__store_server *srv, conn *c, reader *r)
{
    size_t klen, elen, dlen;
    const uint8_t *key = rd_blob(r, KEY_MAX, &klen);
    uint8_t expect_present = rd_u8(r);
    const uint8_t *expected = rd_blob(r, VALUE_MAX, &elen);
    const uint8_t *desired = rd_blob(r, VALUE_MAX, &dlen);
    if (r->is_bad || r->left || expect_present > 1)
        return BAD;
    entry *e = table_find(srv, key, klen);
    bool matches = e ? expect_present && e->val_len == elen && !memcmp(e->val, expected, elen)
                     : !expect_present;
    if (matches && !table_put(srv, key, klen, desired, dlen))
        return BAD;
    if (!e && !matches)
        return conn_reply(c, REPLY_OK, expected, elen) ? DONE : BAD;
    e = table_find(srv, key, klen);
    return conn_reply(c, REPLY_OK, e->val, e->val_len) ? DONE : BAD;
}

static int handle_frame(ferry__store_server *srv, conn *c, const uint8_t *body, size_t len)
{
    reader r = {.p = body, .left = len};
    size_t klen, vlen;
    switch (rd_u8(&r)) {
    case OP_SET: {
        const uint8_t *key = rd_blob(&r, KEY_MAX, &klen);
        const uint8_t *val = rd_blob(&r, VALUE_MAX, &vlen);
        if (r.is_bad || r.left || !table_put(srv, key, klen, val, vlen))
            return BAD;
        return conn_reply(c, REPLY_OK, NULL, 0) ? DONE : BAD;
    }
    case OP_GET:
        return op_get(srv, c, &r);
    case OP_ADD:
        return op_add(srv, c, &r);
    case OP_WAIT:
        return op_keys(srv, c, &r, true);
    case OP_CAS:
        return op_cas(srv, c, &r);
    case OP_CHECK:
        return op_keys(srv, c, &r, false);
    default:
        return BAD;
    }
}

/* Runs every complete frame in the input buffer (stopping at a parked one). false = close. */
static bool conn_process(ferry__store_server *srv, conn *c)
{
    while (c->in_len >= 4) {
        uint32_t body = (uint32_t)c->in[0] << 24 | (uint32_t)c->in[1] << 16 |
                        (uint32_t)c->in[2] << 8 | c->in[3];
        if (body == 0 || body > BODY_MAX)
            return false;
        if (c->in_len < 4 + (size_t)body)
            return true;
        int rc = handle_frame(srv, c, c->in + 4, body);
        if (rc == BAD)
            return false;
        if (rc == PARKED) {
            if (c->deadline_ms && now_ms() >= c->deadline_ms)
                rc = conn_reply(c, REPLY_TIMEOUT, NULL, 0) ? DONE : BAD;
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
    ferry__hmac_sha256(srv->token, strlen(srv->token), c->nonce, NONCE_LEN, want);
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
            uint32_t body = (uint32_t)c->in[0] << 24 | (uint32_t)c->in[1] << 16 |
                            (uint32_t)c->in[2] << 8 | c->in[3];
            if (body == 0 || body > BODY_MAX)
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

/* ---- server: the loop ------------------------------------------------------------------- */

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
        writer w = {0};
        wr_u32(&w, HELLO_MAGIC);
        wr_u8(&w, srv->token != NULL);
        if (srv->token && getrandom(c->nonce, NONCE_LEN, 0) != NONCE_LEN)
            w.is_oom = true; /* no nonce, no connection */
        if (srv->token)
            wr_raw(&w, c->nonce, NONCE_LEN);
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
    int64_t now = now_ms(), best = -1;
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

/* ---- server: start and stop ------------------------------------------------------------- */

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

/* ---- client ----------------------------------------------------------------------------- */

typedef struct {
    int fd; /* -1 once the connection broke: every later call fails */
    char where[300];
    pthread_mutex_t lock;
    writer w;
} tcp_client;

/* Reads exactly n bytes before deadline_ms (0 = none). 1 done, 0 closed or failed, -1 timeout. */
static int recv_all(int fd, void *buf, size_t n, int64_t deadline_ms)
{
    uint8_t *p = buf;
    while (n > 0) {
        int wait_ms = -1;
        if (deadline_ms) {
            int64_t left = deadline_ms - now_ms();
            if (left <= 0)
                return -1;
            wait_ms = left > 1000000 ? 1000000 : (int)left;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, wait_ms);
        if (rc < 0 && errno != EINTR)
            return 0;
        if (rc <= 0)
            continue;
        ssize_t got = recv(fd, p, n, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0)
            return 0;
        p += got;
        n -= (size_t)got;
    }
    return 1;
}

static bool send_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0)
            return false;
        p += sent;
        n -= (size_t)sent;
    }
    return true;
}

/* One TCP connect attempt, bounded by deadline_ms. The fd is blocking on return. */
static int connect_once(const char *host, int port, int64_t deadline_ms, int *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    if (getaddrinfo(host, port_text, &hints, &res) != 0) {
        *err = EHOSTUNREACH;
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        *err = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
        if (*err == EINPROGRESS) {
            int64_t left = deadline_ms ? deadline_ms - now_ms() : 5000;
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            socklen_t len = sizeof *err;
            *err = ETIMEDOUT;
            if (poll(&pfd, 1, left > 5000 ? 5000 : left < 1 ? 1 : (int)left) == 1)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len);
        }
        if (*err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* Reads the hello and proves the token. FERRY_EAGAIN when the peer closed before saying hello
   (not up yet: retry); FERRY_EAUTH; FERRY_ETRANSPORT. */
static ferry_status handshake(int fd, const char *where, const char *token, int64_t deadline_ms)
{
    uint8_t hello[5], nonce[NONCE_LEN], mac[FERRY_SHA256_LEN], verdict = 0;
    int64_t io_deadline = now_ms() + 10000;
    if (deadline_ms && deadline_ms > now_ms() && deadline_ms < io_deadline)
        io_deadline = deadline_ms;
    if (recv_all(fd, hello, sizeof hello, io_deadline) != 1)
        return FERRY_EAGAIN;
    uint32_t magic = (uint32_t)hello[0] << 24 | (uint32_t)hello[1] << 16 |
                     (uint32_t)hello[2] << 8 | hello[3];
    if (magic != HELLO_MAGIC || hello[4] > 1)
        return ferry__fail(FERRY_ETRANSPORT, "%s is not a ferry store (wrong greeting)", where);
    if (!hello[4] && token)
        return ferry__fail(FERRY_EAUTH,
                           "store at %s runs without an auth token but this worker has one "
                           "(FERRY_AUTH_TOKEN differs?)",
                           where);
    if (hello[4] && !token)
        return ferry__fail(FERRY_EAUTH,
                           "store at %s requires an auth token (FERRY_AUTH_TOKEN not set here?)",
                           where);
    if (!hello[4])
        return FERRY_OK;
    if (recv_all(fd, nonce, sizeof nonce, io_deadline) != 1)
        return ferry__fail(FERRY_ETRANSPORT, "store at %s closed the connection during auth",
                           where);
    ferry__hmac_sha256(token, strlen(token), nonce, sizeof nonce, mac);
    if (!send_all(fd, mac, sizeof mac) || recv_all(fd, &verdict, 1, io_deadline) != 1 ||
        verdict != 1)
        return ferry__fail(FERRY_EAUTH,
                           "store at %s refused the auth token (FERRY_AUTH_TOKEN differs?)", where);
    return FERRY_OK;
}

static const ferry__store_backend tcp_backend;

ferry__store *ferry__store_connect(const char *host, int port, const char *token, double timeout_s)
{
    if (!host || !*host || port <= 0 || port > 65535)
        return ferry__fail_null(FERRY_EINVAL, "store address %s:%d is invalid", host ? host : "",
                                port);
    uint64_t timeout_ms = timeout_to_ms(timeout_s);
    int64_t deadline = timeout_ms ? now_ms() + (int64_t)timeout_ms : 0, backoff_ms = 10;
    char where[300];
    snprintf(where, sizeof where, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    for (;;) {
        int err = 0, fd = connect_once(host, port, deadline, &err);
        if (fd >= 0) {
            ferry_status rc = handshake(fd, where, token, deadline);
            if (rc == FERRY_OK) {
                tcp_client *cl = ferry__calloc(1, sizeof *cl);
                if (!cl) {
                    close(fd);
                    return ferry__fail_null(FERRY_ENOMEM, "out of memory connecting to store");
                }
                cl->fd = fd;
                snprintf(cl->where, sizeof cl->where, "%s", where);
                pthread_mutex_init(&cl->lock, NULL);
                return ferry__store_wrap(&tcp_backend, cl);
            }
            close(fd);
            if (rc != FERRY_EAGAIN)
                return NULL;
            err = ECONNRESET;
        }
        int64_t left = deadline ? deadline - now_ms() : backoff_ms;
        if (left <= 0)
            return ferry__fail_null(FERRY_ETIMEDOUT, "could not reach the store at %s within %g s: %s",
                                    where, timeout_s, strerror(err));
        struct timespec ts = {0, (long)(backoff_ms < left ? backoff_ms : left) * 1000000L};
        nanosleep(&ts, NULL);
        backoff_ms = backoff_ms * 2 > 250 ? 250 : backoff_ms * 2;
    }
}

/* Sends one request and reads the reply body (status byte first) into *body (caller frees).
   A broken connection stays broken: later calls fail at once. */
static ferry_status tcp_call(tcp_client *cl, writer *w, double timeout_s, uint8_t **body,
                             size_t *len)
{
    uint64_t timeout_ms = timeout_to_ms(timeout_s);
    /* The server answers a timed-out wait itself; the grace covers a slow network. */
    int64_t deadline = timeout_ms ? now_ms() + (int64_t)timeout_ms + 30000 : 0;
    uint8_t head[4];
    ferry_status rc = FERRY_OK;
    wr_end(w);
    if (w->is_oom)
        return ferry__fail(FERRY_ENOMEM, "out of memory building a store request");
    pthread_mutex_lock(&cl->lock);
    *body = NULL;
    if (cl->fd < 0) {
        rc = ferry__fail(FERRY_ETRANSPORT, "the connection to the store at %s was lost", cl->where);
    } else if (!send_all(cl->fd, w->p, w->len) || recv_all(cl->fd, head, 4, deadline) != 1) {
        rc = ferry__fail(FERRY_ETRANSPORT, "store at %s closed the connection", cl->where);
    } else {
        *len = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
        *body = *len >= 1 && *len <= BODY_MAX ? ferry__malloc(*len) : NULL;
        if (!*body)
            rc = *len >= 1 && *len <= BODY_MAX
                     ? ferry__fail(FERRY_ENOMEM, "out of memory reading a store reply")
                     : ferry__fail(FERRY_EPROTO, "store at %s sent a malformed reply", cl->where);
        else if (recv_all(cl->fd, *body, *len, deadline) != 1)
            rc = ferry__fail(FERRY_ETRANSPORT, "store at %s closed the connection", cl->where);
    }
    if (rc != FERRY_OK && cl->fd >= 0) {
        close(cl->fd);
        cl->fd = -1;
    }
    pthread_mutex_unlock(&cl->lock);
    if (rc != FERRY_OK) {
        ferry__free(*body);
        *body = NULL;
    }
    ferry__free(w->p);
    return rc;
}

/* A reply must have status OK and exactly `want` payload bytes (SIZE_MAX: any). */
static ferry_status expect_ok(tcp_client *cl, const uint8_t *body, size_t len, size_t want)
{
    if (body[0] != REPLY_OK || (want != SIZE_MAX && len - 1 != want))
        return ferry__fail(FERRY_EPROTO, "store at %s sent a malformed reply", cl->where);
    return FERRY_OK;
}

static ferry_status tcp_set(void *impl, const char *key, const void *val, size_t len)
{
    tcp_client *cl = impl;
    writer w = {0};
    uint8_t *body;
    size_t blen;
    wr_begin(&w);
    wr_u8(&w, OP_SET);
    wr_blob(&w, key, strlen(key));
    wr_blob(&w, val, len);
    ferry_status rc = tcp_call(cl, &w, 0, &body, &blen);
    if (rc == FERRY_OK)
        rc = expect_ok(cl, body, blen, 0);
    ferry__free(body);
    return rc;
}

/* Moves the payload to the front of body and hands body out as the value. */
static void take_payload(uint8_t *body, size_t len, void **val, size_t *val_len)
{
    memmove(body, body + 1, len - 1);
    *val = body;
    *val_len = len - 1;
}

static ferry_status tcp_get(void *impl, const char *key, double timeout_s, void **val,
                            size_t *len)
{
    tcp_client *cl = impl;
    writer w = {0};
    uint8_t *body;
    size_t blen;
    wr_begin(&w);
    wr_u8(&w, OP_GET);
    wr_u64(&w, timeout_to_ms(timeout_s));
    wr_blob(&w, key, strlen(key));
    ferry_status rc = tcp_call(cl, &w, timeout_s, &body, &blen);
    if (rc != FERRY_OK)
        return rc;
    if (body[0] == REPLY_TIMEOUT && blen == 1)
        rc = ferry__fail(FERRY_ETIMEDOUT, "store get of key '%s' timed out after %g s", key,
                         timeout_s);
    else
        rc = expect_ok(cl, body, blen, SIZE_MAX);
    if (rc != FERRY_OK) {
        ferry__free(body);
        return rc;
    }
    take_payload(body, blen, val, len);
    return FERRY_OK;
}

static ferry_status tcp_add(void *impl, const char *key, int64_t delta, int64_t *out)
{
    tcp_client *cl = impl;
    writer w = {0};
    uint8_t *body;
    size_t blen;
    wr_begin(&w);
    wr_u8(&w, OP_ADD);
    wr_u64(&w, (uint64_t)delta);
    wr_blob(&w, key, strlen(key));
    ferry_status rc = tcp_call(cl, &w, 0, &body, &blen);
    if (rc != FERRY_OK)
        return rc;
    if (body[0] == REPLY_NOT_INT && blen == 1)
        rc = ferry__fail(FERRY_EINVAL, "store key '%s' does not hold an integer (or the sum overflows)",
                         key);
    else
        rc = expect_ok(cl, body, blen, 8);
    if (rc == FERRY_OK) {
        reader r = {.p = body + 1, .left = 8};
        *out = (int64_t)rd_u64(&r);
    }
    ferry__free(body);
    return rc;
}

static void wr_keys(writer *w, const char *const *keys, size_t n)
{
    wr_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        wr_blob(w, keys[i], strlen(keys[i]));
}

static ferry_status tcp_wait(void *impl, const char *const *keys, size_t n, double timeout_s)
{
    tcp_client *cl = impl;
    writer w = {0};
    uint8_t *body;
    size_t blen;
    wr_begin(&w);
    wr_u8(&w, OP_WAIT);
    wr_u64(&w, timeout_to_ms(timeout_s));
    wr_keys(&w, keys, n);
    ferry_status rc = tcp_call(cl, &w, timeout_s, &body, &blen);
    if (rc != FERRY_OK)
        return rc;
    if (body[0] == REPLY_TIMEOUT && blen == 1)
        rc = ferry__fail(FERRY_ETIMEDOUT, "store wait for %zu key%s timed out after %g s", n,
                         n == 1 ? "" : "s", timeout_s);
    else
        rc = expect_ok(cl, body, blen, 0);
    ferry__free(body);
    return rc;
}

static ferry_status tcp_cas(void *impl, const char *key, const void *expected,
                            size_t expected_len, const void *desired, size_t desired_len,
                            void **actual, size_t *actual_len)
{
    tcp_client *cl = impl;
    writer w = {0};
    uint8_t *body;
    size_t blen;
    wr_begin(&w);
    wr_u8(&w, OP_CAS);
    wr_blob(&w, key, strlen(key));
    wr_u8(&w, expected != NULL || expected_len > 0);
    wr_blob(&w, expected, expected_len);
    wr_blob(&w, desired, desired_len);
    ferry_status rc = tcp_call(cl, &w, 0, &body, &blen);
    if (rc == FERRY_OK)
        rc = expect_ok(cl, body, blen, SIZE_MAX);
    if (rc != FERRY_OK) {
        ferry__free(body);
        return rc;
    }
    take_payload(body, blen, actual, actual_len);
    return FERRY_OK;
}

static ferry_status tcp_check(void *impl, const char *const *keys, size_t n, bool *present)
{
    tcp_client *cl = impl;
    writer w = {0};
    uint8_t *body;
    size_t blen;
    wr_begin(&w);
    wr_u8(&w, OP_CHECK);
    wr_keys(&w, keys, n);
    ferry_status rc = tcp_call(cl, &w, 0, &body, &blen);
    if (rc == FERRY_OK)
        rc = expect_ok(cl, body, blen, n);
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        present[i] = body[1 + i] != 0;
    ferry__free(body);
    return rc;
}

static void tcp_close(void *impl)
{
    tcp_client *cl = impl;
    if (cl->fd >= 0)
        close(cl->fd);
    pthread_mutex_destroy(&cl->lock);
    ferry__free(cl);
}

static const ferry__store_backend tcp_backend = {
    .set = tcp_set,
    .get = tcp_get,
    .add = tcp_add,
    .wait = tcp_wait,
    .compare_set = tcp_cas,
    .check = tcp_check,
    .close = tcp_close,
};

/* ---- the calls every backend shares ----------------------------------------------------- */

ferry__store *ferry__store_wrap(const ferry__store_backend *backend, void *impl)
{
    ferry__store *st = ferry__calloc(1, sizeof *st);
    if (!st) {
        backend->close(impl);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory opening the store");
    }
    st->backend = backend;
    st->impl = impl;
    return st;
}

void ferry__store_close(ferry__store *st)
{
    if (!st)
        return;
    st->backend->close(st->impl);
    ferry__free(st);
}

static ferry_status check_key(const ferry__store *st, const char *key)
{
    if (!st || !key)
        return ferry__fail(FERRY_EINVAL, "store call with a NULL %s", st ? "key" : "store");
    if (strlen(key) > KEY_MAX)
        return ferry__fail(FERRY_EINVAL, "store key of %zu bytes exceeds the %u-byte limit",
                           strlen(key), KEY_MAX);
    return FERRY_OK;
}

static ferry_status check_value(const char *key, const void *val, size_t len)
{
    if (!val && len)
        return ferry__fail(FERRY_EINVAL, "store value for key '%s' is NULL", key);
    if (len > VALUE_MAX)
        return ferry__fail(FERRY_EINVAL, "store value for key '%s' is %zu bytes; the limit is %u",
                           key, len, VALUE_MAX);
    return FERRY_OK;
}

static ferry_status check_keys(const ferry__store *st, const char *const *keys, size_t n)
{
    if (!keys && n)
        return ferry__fail(FERRY_EINVAL, "store call with a NULL key list");
    if (n > KEYS_MAX)
        return ferry__fail(FERRY_EINVAL, "store call with %zu keys; the limit is %u", n, KEYS_MAX);
    ferry_status rc = check_key(st, ""); /* the NULL-store check */
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        rc = check_key(st, keys[i]);
    return rc;
}

ferry_status ferry__store_set(ferry__store *st, const char *key, const void *val, size_t len)
{
    ferry_status rc = check_key(st, key);
    if (rc == FERRY_OK)
        rc = check_value(key, val, len);
    return rc == FERRY_OK ? st->backend->set(st->impl, key, val, len) : rc;
}

ferry_status ferry__store_get(ferry__store *st, const char *key, double timeout_s, void **val,
                              size_t *len)
{
    ferry_status rc = check_key(st, key);
    if (rc == FERRY_OK && (!val || !len))
        rc = ferry__fail(FERRY_EINVAL, "store get with a NULL output");
    return rc == FERRY_OK ? st->backend->get(st->impl, key, timeout_s, val, len) : rc;
}

ferry_status ferry__store_add(ferry__store *st, const char *key, int64_t delta, int64_t *out)
{
    int64_t ignored;
    ferry_status rc = check_key(st, key);
    return rc == FERRY_OK ? st->backend->add(st->impl, key, delta, out ? out : &ignored) : rc;
}

ferry_status ferry__store_wait(ferry__store *st, const char *const *keys, size_t n, double timeout_s)
{
    ferry_status rc = check_keys(st, keys, n);
    return rc == FERRY_OK ? st->backend->wait(st->impl, keys, n, timeout_s) : rc;
}

ferry_status ferry__store_compare_set(ferry__store *st, const char *key, const void *expected,
                                      size_t expected_len, const void *desired, size_t desired_len,
                                      void **actual, size_t *actual_len)
{
    ferry_status rc = check_key(st, key);
    if (rc == FERRY_OK)
        rc = check_value(key, expected, expected_len);
    if (rc == FERRY_OK)
        rc = check_value(key, desired, desired_len);
    if (rc == FERRY_OK && (!actual || !actual_len))
        rc = ferry__fail(FERRY_EINVAL, "store compare_set with a NULL output");
    return rc == FERRY_OK ? st->backend->compare_set(st->impl, key, expected, expected_len, desired,
                                                     desired_len, actual, actual_len)
                          : rc;
}

ferry_status ferry__store_check(ferry__store *st, const char *const *keys, size_t n,
                                bool *present)
{
    ferry_status rc = check_keys(st, keys, n);
    if (rc == FERRY_OK && n && !present)
        rc = ferry__fail(FERRY_EINVAL, "store check with a NULL output");
    return rc == FERRY_OK ? st->backend->check(st->impl, keys, n, present) : rc;
}
