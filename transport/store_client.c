/* The rendezvous store's TCP client, and the ferry__store_* calls every backend shares. The
   client is blocking: one request at a time per connection (a mutex lets threads share it), and a
   connection that broke stays broken so a half-read reply is never mistaken for the next one.
   Every request has a deadline: the caller's timeout for the plain operations, and for get and
   wait the caller's timeout (which the server enforces) plus FERRY__STORE_REPLY_GRACE_MS for the
   reply to arrive. A server that misses it is taken for stopped or unreachable: the call fails
   with FERRY_ETIMEDOUT and the connection is closed. The sockets use TCP keepalive and
   TCP_USER_TIMEOUT, so a vanished server breaks even a call without a deadline. The
   ferry__store_* calls check their arguments once here and forward to a backend: this client or
   the file store (store_file.c). */
#include "transport/store.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/sha256.h"
#include "transport/store_wire.h"

struct ferry__store {
    const ferry__store_backend *backend;
    void *impl;
};

typedef struct {
    int fd; /* -1 once the connection broke: every later call fails */
    char where[300];
    char lost_why[300]; /* why it broke */
    char host[160];     /* the worker serving it, in words ("rank 0" until told its name) */
    pthread_mutex_t lock;
} tcp_client;

static const ferry__store_backend tcp_backend;

/* ---- sockets ---------------------------------------------------------------------------- */

double ferry__store_env_double(const char *name, double def)
{
    const char *text = getenv(name);
    char *end;
    if (!text)
        return def;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v > 0) || !isfinite(v) || v > 1e9) {
        ferry__log_warn("store", "%s='%s' is not a positive number; using %g", name, text, def);
        return def;
    }
    return v;
}

void ferry__store_tune_socket(int fd)
{
    int one = 1;
    int idle_s = (int)ceil(ferry__store_env_double("FERRY_STORE_KEEPALIVE_S", 5));
    int interval_s = 1, probes = 5;
    unsigned user_ms = (unsigned)(ferry__store_env_double("FERRY_STORE_USER_TIMEOUT_S", 10) * 1000);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof interval_s);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof user_ms);
}

/* timeout_s as wire milliseconds: 0 = none, at least 1 otherwise, clamped to the longest wait
   the server honours. */
static uint64_t timeout_to_ms(double timeout_s)
{
    if (!(timeout_s > 0))
        return 0;
    if (timeout_s * 1000.0 >= (double)FERRY__STORE_WAIT_MAX_MS)
        return FERRY__STORE_WAIT_MAX_MS;
    uint64_t ms = (uint64_t)(timeout_s * 1000.0);
    return ms ? ms : 1;
}

/* The absolute deadline (ms, 0 = none) of a call with timeout_s, plus grace_ms. */
static int64_t deadline_after(double timeout_s, int64_t grace_ms)
{
    uint64_t ms = timeout_to_ms(timeout_s);
    return ms ? ferry__now_ms() + (int64_t)ms + grace_ms : 0;
}

/* How long a wait may still poll before deadline_ms (0 = none: -1, forever). Once the deadline
   has passed, one last look without waiting is allowed (*looked records it) before -2 says the
   time is up: a process that was stopped past its deadline (SIGSTOP, a long page-in) finds the
   answer that arrived meanwhile instead of calling a live store dead. */
static int poll_budget_ms(int64_t deadline_ms, bool *looked)
{
    if (!deadline_ms)
        return -1;
    int64_t left = deadline_ms - ferry__now_ms();
    if (left > 0)
        return left > 1000000 ? 1000000 : (int)left;
    if (*looked)
        return -2;
    *looked = true;
    return 0;
}

/* Reads exactly n bytes before deadline_ms (0 = none). 1 done, 0 closed or failed, -1 timeout. */
static int recv_all(int fd, void *buf, size_t n, int64_t deadline_ms)
{
    uint8_t *p = buf;
    bool looked = false;
    while (n > 0) {
        int wait_ms = poll_budget_ms(deadline_ms, &looked);
        if (wait_ms == -2)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, wait_ms);
        if (rc < 0 && errno != EINTR)
            return 0;
        if (rc <= 0)
            continue;
        ssize_t got = recv(fd, p, n, MSG_DONTWAIT);
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (got <= 0)
            return 0;
        p += got;
        n -= (size_t)got;
    }
    return 1;
}

/* Writes all n bytes before deadline_ms (0 = none). 1 done, 0 failed, -1 timeout. */
static int send_all(int fd, const void *buf, size_t n, int64_t deadline_ms)
{
    const uint8_t *p = buf;
    bool looked = false;
    while (n > 0) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int wait_ms = poll_budget_ms(deadline_ms, &looked);
            if (wait_ms == -2)
                return -1;
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, wait_ms) < 0 && errno != EINTR)
                return 0;
            continue;
        }
        if (sent <= 0)
            return 0;
        p += sent;
        n -= (size_t)sent;
    }
    return 1;
}

/* One TCP connect attempt, bounded by deadline_ms (5 s at most). */
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
            int64_t left = deadline_ms ? deadline_ms - ferry__now_ms() : 5000;
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
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ferry__store_tune_socket(fd);
    }
    return fd;
}

/* ---- the handshake ---------------------------------------------------------------------- */

/* With a token: sends our nonce and MAC, reads the verdict and checks the server's MAC. */
static ferry_status prove_token(int fd, const char *where, const char *token, int64_t deadline)
{
    uint8_t server_nonce[FERRY__STORE_NONCE_LEN], proof[FERRY__STORE_PROOF_LEN];
    uint8_t verdict[1 + FERRY_SHA256_LEN], want[FERRY_SHA256_LEN];
    if (recv_all(fd, server_nonce, sizeof server_nonce, deadline) != 1)
        return FERRY_EAGAIN;
    if (getrandom(proof, FERRY__STORE_NONCE_LEN, 0) != FERRY__STORE_NONCE_LEN)
        return ferry__fail(FERRY_ETRANSPORT, "getrandom failed: %s", strerror(errno));
    ferry__store_auth_mac(token, false, server_nonce, proof, proof + FERRY__STORE_NONCE_LEN);
    if (send_all(fd, proof, sizeof proof, deadline) != 1)
        return FERRY_EAGAIN;
    int got = recv_all(fd, verdict, 1, deadline);
    if (got == 1 && verdict[0] != 1)
        return ferry__fail(FERRY_EAUTH,
                           "store at %s refused the auth token (FERRY_AUTH_TOKEN differs?)", where);
    /* Closed before a verdict: evicted while the server was crowded, or not up yet. */
    if (got != 1 || recv_all(fd, verdict + 1, FERRY_SHA256_LEN, deadline) != 1)
        return FERRY_EAGAIN;
    ferry__store_auth_mac(token, true, server_nonce, proof, want);
    explicit_bzero(proof, sizeof proof);
    if (!ferry__ct_equal(want, verdict + 1, FERRY_SHA256_LEN))
        return ferry__fail(FERRY_EAUTH,
                           "the store at %s could not prove it knows the auth token: not this "
                           "job's store (FERRY_AUTH_TOKEN differs, or something else took the "
                           "port); refusing it",
                           where);
    return FERRY_OK;
}

/* Reads the hello and runs the token exchange. FERRY_EAGAIN when the peer closed or stayed
   silent before a verdict (not up yet, or crowded: retry); FERRY_EAUTH; FERRY_ETRANSPORT. */
static ferry_status handshake(int fd, const char *where, const char *token, int64_t deadline_ms)
{
    uint8_t hello[5];
    int64_t io_deadline = ferry__now_ms() + 10000;
    if (deadline_ms && deadline_ms < io_deadline)
        io_deadline = deadline_ms;
    if (recv_all(fd, hello, sizeof hello, io_deadline) != 1)
        return FERRY_EAGAIN;
    uint32_t magic = ferry__store_load_be32(hello);
    if (magic != FERRY__STORE_HELLO_MAGIC || hello[4] > 1)
        return ferry__fail(FERRY_ETRANSPORT,
                           "%s is not a ferry store of this version (wrong greeting)", where);
    if (!hello[4] && token)
        return ferry__fail(FERRY_EAUTH,
                           "store at %s runs without an auth token but this worker has one "
                           "(FERRY_AUTH_TOKEN differs?); refusing it",
                           where);
    if (hello[4] && !token)
        return ferry__fail(FERRY_EAUTH,
                           "store at %s requires an auth token (FERRY_AUTH_TOKEN not set here?)",
                           where);
    return hello[4] ? prove_token(fd, where, token, io_deadline) : FERRY_OK;
}

static void format_where(char *where, size_t cap, const char *host, int port)
{
    snprintf(where, cap, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

int ferry__store_dial(const char *host, int port, const char *token, double timeout_s)
{
    if (!host || !*host || port <= 0 || port > 65535)
        return ferry__fail(FERRY_EINVAL, "store address %s:%d is invalid", host ? host : "", port),
               -1;
    int64_t deadline = deadline_after(timeout_s, 0);
    int64_t backoff_ms = 10;
    char where[300];
    format_where(where, sizeof where, host, port);
    for (;;) {
        int err = 0, fd = connect_once(host, port, deadline, &err);
        if (fd >= 0) {
            ferry_status rc = handshake(fd, where, token, deadline);
            if (rc == FERRY_OK) {
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
                return fd;
            }
            close(fd);
            if (rc != FERRY_EAGAIN)
                return -1;
            err = ECONNRESET;
        }
        int64_t left = deadline ? deadline - ferry__now_ms() : backoff_ms;
        if (left <= 0)
            return ferry__fail(FERRY_ETIMEDOUT,
                               "could not reach the store at %s within %g s: %s", where,
                               timeout_s, err == ECONNRESET ? "no greeting (is the server "
                                                              "stopped or crowded?)"
                                                            : strerror(err)),
                   -1;
        ferry__sleep_us((backoff_ms < left ? backoff_ms : left) * 1000);
        backoff_ms = backoff_ms * 2 > 250 ? 250 : backoff_ms * 2;
    }
}

ferry__store *ferry__store_connect(const char *host, int port, const char *token, double timeout_s)
{
    int fd = ferry__store_dial(host, port, token, timeout_s);
    if (fd < 0)
        return NULL;
    tcp_client *cl = ferry__calloc(1, sizeof *cl);
    if (!cl) {
        close(fd);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory connecting to store");
    }
    cl->fd = fd;
    format_where(cl->where, sizeof cl->where, host, port);
    snprintf(cl->host, sizeof cl->host, "rank 0");
    pthread_mutex_init(&cl->lock, NULL);
    return ferry__store_wrap(&tcp_backend, cl);
}

/* ---- requests --------------------------------------------------------------------------- */

/* Closes a broken connection, remembering why for the calls that come later. */
static ferry_status lose(tcp_client *cl, ferry_status rc, const char *why)
{
    snprintf(cl->lost_why, sizeof cl->lost_why, "%s", why);
    close(cl->fd);
    cl->fd = -1;
    return ferry__fail(rc, "store at %s %s", cl->where, why);
}

/* Sends the request and reads the reply body (status byte first) into *body, under cl->lock. */
static ferry_status exchange(tcp_client *cl, const ferry__store_writer *w, int64_t deadline,
                             double waited_s, uint8_t **body, size_t *len)
{
    uint8_t head[4];
    char why[280];
    if (cl->fd < 0)
        return ferry__fail(FERRY_ETRANSPORT, "the connection to the store at %s was lost: it %s",
                           cl->where, cl->lost_why);
    int rc = send_all(cl->fd, w->p, w->len, deadline);
    if (rc == 1)
        rc = recv_all(cl->fd, head, 4, deadline);
    if (rc == 1) {
        *len = ferry__store_load_be32(head);
        if (*len < 1 || *len > FERRY__STORE_BODY_MAX)
            return lose(cl, FERRY_EPROTO, "sent a malformed reply");
        if (!(*body = ferry__malloc(*len)))
            return lose(cl, FERRY_ENOMEM, "reply could not be read: out of memory");
        rc = recv_all(cl->fd, *body, *len, deadline);
    }
    if (rc == 1)
        return FERRY_OK;
    if (rc == 0) {
        /* After the handshake only a server that stops closes a connection. */
        snprintf(why, sizeof why, "closed the connection: %s, which serves it, has exited "
                 "(it died, or shut down)", cl->host);
        return lose(cl, FERRY_ETRANSPORT, why);
    }
    snprintf(why, sizeof why,
             "did not answer within %.3g s (%s serves it: is it stopped or unreachable?)",
             waited_s, cl->host);
    return lose(cl, FERRY_ETIMEDOUT, why);
}

/* Sends the request in w (whose buffer is freed here, sent or not) and reads the reply body,
   status byte first, into *body (caller frees; NULL on failure). timeout_s is the caller's; a
   blocking op (get, wait: the server waits that long itself) gets the reply grace on top.
   FERRY_ENOMEM,
   FERRY_ETIMEDOUT (no answer in time), FERRY_ETRANSPORT, FERRY_EPROTO. */
static ferry_status tcp_call(tcp_client *cl, ferry__store_writer *w, double timeout_s,
                             bool is_blocking, uint8_t **body, size_t *len)
{
    int64_t deadline = deadline_after(timeout_s, is_blocking ? FERRY__STORE_REPLY_GRACE_MS : 0);
    ferry_status rc;
    *body = NULL;
    ferry__store_wr_end(w);
    if (w->is_oom) {
        ferry__free(w->p);
        return ferry__fail(FERRY_ENOMEM, "out of memory building a store request");
    }
    pthread_mutex_lock(&cl->lock);
    rc = exchange(cl, w, deadline,
                  timeout_s + (is_blocking ? FERRY__STORE_REPLY_GRACE_MS / 1000.0 : 0), body, len);
    pthread_mutex_unlock(&cl->lock);
    if (rc != FERRY_OK) {
        ferry__free(*body);
        *body = NULL;
    }
    ferry__free(w->p);
    return rc;
}

static void begin_request(ferry__store_writer *w, uint8_t op)
{
    ferry__store_wr_begin(w);
    ferry__store_wr_u8(w, op);
}

/* tcp_call, then checks the reply: FERRY_OK when it is status OK with exactly `want` payload
   bytes (SIZE_MAX: any), or the bare status `other` (the op's own refusal, which the caller
   reports; 0: none). On FERRY_OK *body holds the reply, status byte first (caller frees); on
   failure it is NULL. FERRY_EPROTO for any other reply, or tcp_call's codes. */
static ferry_status tcp_request(tcp_client *cl, ferry__store_writer *w, double timeout_s,
                                bool is_blocking, size_t want, uint8_t other, uint8_t **body,
                                size_t *len)
{
    ferry_status rc = tcp_call(cl, w, timeout_s, is_blocking, body, len);
    if (rc != FERRY_OK || (other && (*body)[0] == other && *len == 1))
        return rc;
    if ((*body)[0] != FERRY__STORE_REPLY_OK || (want != SIZE_MAX && *len - 1 != want)) {
        ferry__free(*body);
        *body = NULL;
        return ferry__fail(FERRY_EPROTO, "store at %s sent a malformed reply", cl->where);
    }
    return FERRY_OK;
}

static ferry_status tcp_set(void *impl, const char *key, const void *val, size_t len,
                            double timeout_s)
{
    ferry__store_writer w = {0};
    uint8_t *body;
    size_t blen;
    begin_request(&w, FERRY__STORE_OP_SET);
    ferry__store_wr_blob(&w, key, strlen(key));
    ferry__store_wr_blob(&w, val, len);
    ferry_status rc = tcp_request(impl, &w, timeout_s, false, 0, 0, &body, &blen);
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
    ferry__store_writer w = {0};
    uint8_t *body;
    size_t blen;
    begin_request(&w, FERRY__STORE_OP_GET);
    ferry__store_wr_u64(&w, timeout_to_ms(timeout_s));
    ferry__store_wr_blob(&w, key, strlen(key));
    ferry_status rc = tcp_request(impl, &w, timeout_s, true, SIZE_MAX, FERRY__STORE_REPLY_TIMEOUT,
                                  &body, &blen);
    if (rc != FERRY_OK)
        return rc;
    if (body[0] == FERRY__STORE_REPLY_TIMEOUT) {
        ferry__free(body);
        return ferry__fail(FERRY_ETIMEDOUT, "store get of key '%s' timed out after %g s", key,
                           timeout_s);
    }
    take_payload(body, blen, val, len);
    return FERRY_OK;
}

static ferry_status tcp_add(void *impl, const char *key, int64_t delta, int64_t *out,
                            double timeout_s)
{
    ferry__store_writer w = {0};
    uint8_t *body;
    size_t blen;
    begin_request(&w, FERRY__STORE_OP_ADD);
    ferry__store_wr_u64(&w, (uint64_t)delta);
    ferry__store_wr_blob(&w, key, strlen(key));
    ferry_status rc =
        tcp_request(impl, &w, timeout_s, false, 8, FERRY__STORE_REPLY_NOT_INT, &body, &blen);
    if (rc == FERRY_OK && body[0] == FERRY__STORE_REPLY_NOT_INT) {
        rc = ferry__fail(FERRY_EINVAL, "store key '%s' does not hold an integer (or the sum overflows)",
                         key);
    } else if (rc == FERRY_OK) {
        ferry__store_reader r = {.p = body + 1, .left = 8};
        *out = (int64_t)ferry__store_rd_u64(&r);
    }
    ferry__free(body);
    return rc;
}

static void wr_keys(ferry__store_writer *w, const char *const *keys, size_t n)
{
    ferry__store_wr_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        ferry__store_wr_blob(w, keys[i], strlen(keys[i]));
}

static ferry_status tcp_wait(void *impl, const char *const *keys, size_t n, double timeout_s)
{
    ferry__store_writer w = {0};
    uint8_t *body;
    size_t blen;
    begin_request(&w, FERRY__STORE_OP_WAIT);
    ferry__store_wr_u64(&w, timeout_to_ms(timeout_s));
    wr_keys(&w, keys, n);
    ferry_status rc =
        tcp_request(impl, &w, timeout_s, true, 0, FERRY__STORE_REPLY_TIMEOUT, &body, &blen);
    if (rc == FERRY_OK && body[0] == FERRY__STORE_REPLY_TIMEOUT)
        rc = ferry__fail(FERRY_ETIMEDOUT, "store wait for %zu key%s timed out after %g s", n,
                         n == 1 ? "" : "s", timeout_s);
    ferry__free(body);
    return rc;
}

static ferry_status tcp_cas(void *impl, const char *key, const void *expected,
                            size_t expected_len, const void *desired, size_t desired_len,
                            void **actual, size_t *actual_len, double timeout_s)
{
    ferry__store_writer w = {0};
    uint8_t *body;
    size_t blen;
    begin_request(&w, FERRY__STORE_OP_CAS);
    ferry__store_wr_blob(&w, key, strlen(key));
    ferry__store_wr_u8(&w, expected != NULL || expected_len > 0);
    ferry__store_wr_blob(&w, expected, expected_len);
    ferry__store_wr_blob(&w, desired, desired_len);
    ferry_status rc = tcp_request(impl, &w, timeout_s, false, SIZE_MAX, 0, &body, &blen);
    if (rc == FERRY_OK)
        take_payload(body, blen, actual, actual_len);
    return rc;
}

static ferry_status tcp_check(void *impl, const char *const *keys, size_t n, bool *present,
                              double timeout_s)
{
    ferry__store_writer w = {0};
    uint8_t *body;
    size_t blen;
    begin_request(&w, FERRY__STORE_OP_CHECK);
    wr_keys(&w, keys, n);
    ferry_status rc = tcp_request(impl, &w, timeout_s, false, n, 0, &body, &blen);
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        present[i] = body[1 + i] != 0;
    ferry__free(body);
    return rc;
}

static ferry_status tcp_delete(void *impl, const char *const *keys, size_t n, size_t *deleted,
                               double timeout_s)
{
    ferry__store_writer w = {0};
    uint8_t *body;
    size_t blen;
    begin_request(&w, FERRY__STORE_OP_DELETE);
    wr_keys(&w, keys, n);
    ferry_status rc = tcp_request(impl, &w, timeout_s, false, 8, 0, &body, &blen);
    if (rc == FERRY_OK) {
        ferry__store_reader r = {.p = body + 1, .left = 8};
        *deleted = (size_t)ferry__store_rd_u64(&r);
    }
    ferry__free(body);
    return rc;
}

static ferry_status tcp_stats(void *impl, uint64_t *keys, uint64_t *requests, double timeout_s)
{
    ferry__store_writer w = {0};
    uint8_t *body;
    size_t blen;
    begin_request(&w, FERRY__STORE_OP_STATS);
    ferry_status rc = tcp_request(impl, &w, timeout_s, false, 16, 0, &body, &blen);
    if (rc == FERRY_OK) {
        ferry__store_reader r = {.p = body + 1, .left = 16};
        *keys = ferry__store_rd_u64(&r);
        *requests = ferry__store_rd_u64(&r);
    }
    ferry__free(body);
    return rc;
}

static bool tcp_is_connected(void *impl)
{
    tcp_client *cl = impl;
    pthread_mutex_lock(&cl->lock);
    bool is_up = cl->fd >= 0;
    pthread_mutex_unlock(&cl->lock);
    return is_up;
}

static bool tcp_has_host(void *impl)
{
    return true;
}

static void tcp_set_host(void *impl, const char *name, int rank)
{
    tcp_client *cl = impl;
    pthread_mutex_lock(&cl->lock);
    snprintf(cl->host, sizeof cl->host, "worker '%.128s' (rank %d)", name, rank);
    pthread_mutex_unlock(&cl->lock);
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
    .del = tcp_delete,
    .stats = tcp_stats,
    .is_connected = tcp_is_connected,
    .has_host = tcp_has_host,
    .set_host = tcp_set_host,
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
    if (strlen(key) > FERRY__STORE_KEY_MAX)
        return ferry__fail(FERRY_EINVAL, "store key of %zu bytes exceeds the %u-byte limit",
                           strlen(key), FERRY__STORE_KEY_MAX);
    return FERRY_OK;
}

static ferry_status check_value(const char *key, const void *val, size_t len)
{
    if (!val && len)
        return ferry__fail(FERRY_EINVAL, "store value for key '%s' is NULL", key);
    if (len > FERRY__STORE_VALUE_MAX)
        return ferry__fail(FERRY_EINVAL, "store value for key '%s' is %zu bytes; the limit is %u",
                           key, len, FERRY__STORE_VALUE_MAX);
    return FERRY_OK;
}

static ferry_status check_keys(const ferry__store *st, const char *const *keys, size_t n)
{
    if (!keys && n)
        return ferry__fail(FERRY_EINVAL, "store call with a NULL key list");
    if (n > FERRY__STORE_KEYS_MAX)
        return ferry__fail(FERRY_EINVAL, "store call with %zu keys; the limit is %u", n,
                           FERRY__STORE_KEYS_MAX);
    ferry_status rc = check_key(st, ""); /* the NULL-store check */
    for (size_t i = 0; rc == FERRY_OK && i < n; i++)
        rc = check_key(st, keys[i]);
    return rc;
}

ferry_status ferry__store_set(ferry__store *st, const char *key, const void *val, size_t len,
                              double timeout_s)
{
    ferry_status rc = check_key(st, key);
    if (rc == FERRY_OK)
        rc = check_value(key, val, len);
    return rc == FERRY_OK ? st->backend->set(st->impl, key, val, len, timeout_s) : rc;
}

ferry_status ferry__store_get(ferry__store *st, const char *key, double timeout_s, void **val,
                              size_t *len)
{
    ferry_status rc = check_key(st, key);
    if (rc == FERRY_OK && (!val || !len))
        rc = ferry__fail(FERRY_EINVAL, "store get with a NULL output");
    return rc == FERRY_OK ? st->backend->get(st->impl, key, timeout_s, val, len) : rc;
}

ferry_status ferry__store_add(ferry__store *st, const char *key, int64_t delta, int64_t *out,
                              double timeout_s)
{
    int64_t ignored;
    ferry_status rc = check_key(st, key);
    return rc == FERRY_OK ? st->backend->add(st->impl, key, delta, out ? out : &ignored, timeout_s)
                          : rc;
}

ferry_status ferry__store_wait(ferry__store *st, const char *const *keys, size_t n, double timeout_s)
{
    ferry_status rc = check_keys(st, keys, n);
    return rc == FERRY_OK ? st->backend->wait(st->impl, keys, n, timeout_s) : rc;
}

ferry_status ferry__store_compare_set(ferry__store *st, const char *key, const void *expected,
                                      size_t expected_len, const void *desired, size_t desired_len,
                                      void **actual, size_t *actual_len, double timeout_s)
{
    ferry_status rc = check_key(st, key);
    if (rc == FERRY_OK)
        rc = check_value(key, expected, expected_len);
    if (rc == FERRY_OK)
        rc = check_value(key, desired, desired_len);
    if (rc == FERRY_OK && (!actual || !actual_len))
        rc = ferry__fail(FERRY_EINVAL, "store compare_set with a NULL output");
    return rc == FERRY_OK ? st->backend->compare_set(st->impl, key, expected, expected_len, desired,
                                                     desired_len, actual, actual_len, timeout_s)
                          : rc;
}

ferry_status ferry__store_check(ferry__store *st, const char *const *keys, size_t n,
                                bool *present, double timeout_s)
{
    ferry_status rc = check_keys(st, keys, n);
    if (rc == FERRY_OK && n && !present)
        rc = ferry__fail(FERRY_EINVAL, "store check with a NULL output");
    return rc == FERRY_OK ? st->backend->check(st->impl, keys, n, present, timeout_s) : rc;
}

ferry_status ferry__store_delete(ferry__store *st, const char *const *keys, size_t n,
                                 size_t *deleted, double timeout_s)
{
    size_t ignored;
    ferry_status rc = check_keys(st, keys, n);
    return rc == FERRY_OK
               ? st->backend->del(st->impl, keys, n, deleted ? deleted : &ignored, timeout_s)
               : rc;
}

ferry_status ferry__store_stats(ferry__store *st, uint64_t *keys, uint64_t *requests,
                                double timeout_s)
{
    uint64_t k, r;
    if (!st)
        return ferry__fail(FERRY_EINVAL, "store call with a NULL store");
    return st->backend->stats(st->impl, keys ? keys : &k, requests ? requests : &r, timeout_s);
}

bool ferry__store_is_connected(const ferry__store *st)
{
    return st && st->backend->is_connected(st->impl);
}

bool ferry__store_has_host(const ferry__store *st)
{
    return st && st->backend->has_host && st->backend->has_host(st->impl);
}

void ferry__store_set_host(ferry__store *st, const char *name, int rank)
{
    if (st && name && st->backend->set_host)
        st->backend->set_host(st->impl, name, rank);
}
