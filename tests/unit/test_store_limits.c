/* The rendezvous store's bounds: the client's side of the handshake and its deadlines against
   fake stores (one that cannot prove the token, one that never greets, one that goes mute),
   and the server's limits (handshake deadline, pending cap, paused listener, output bound,
   clamped timeouts). test_store.c has the operations themselves. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "test_store_util.h"
#include "transport/store_wire.h"

/* ---- fake stores: the client's side of the handshake and its deadlines --------------------- */

enum { FAKE_SILENT, FAKE_BAD_PROOF, FAKE_MUTE_AFTER_AUTH };

typedef struct {
    int listen_fd, port, mode;
    const char *token;
    pthread_t thread;
} fake_store;

static bool read_n(int fd, void *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = recv(fd, (uint8_t *)buf + got, n - got, 0);
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

/* Serves one connection after another, as its mode says, until the listener is shut down. */
static void *fake_main(void *p)
{
    fake_store *f = p;
    for (;;) {
        int fd = accept(f->listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        uint8_t hello[5 + FERRY__STORE_NONCE_LEN], proof[FERRY__STORE_PROOF_LEN];
        uint8_t reply[1 + FERRY_SHA256_LEN] = {1}, sink[256];
        ferry__store_put_be32(hello, FERRY__STORE_HELLO_MAGIC);
        hello[4] = 1;
        getrandom(hello + 5, FERRY__STORE_NONCE_LEN, 0);
        if (f->mode != FAKE_SILENT && send(fd, hello, sizeof hello, MSG_NOSIGNAL) > 0 &&
            read_n(fd, proof, sizeof proof)) {
            if (f->mode == FAKE_MUTE_AFTER_AUTH) /* knows the token: proves it right */
                ferry__store_auth_mac(f->token, true, hello + 5, proof, reply + 1);
            send(fd, reply, sizeof reply, MSG_NOSIGNAL); /* BAD_PROOF: a MAC of zeros */
        }
        while (recv(fd, sink, sizeof sink, 0) > 0)
            ; /* never answers a request */
        close(fd);
    }
}

static void fake_start(fake_store *f, int mode, const char *token)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    f->mode = mode;
    f->token = token;
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(bind(f->listen_fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(listen(f->listen_fd, 16) == 0);
    cr_assert(getsockname(f->listen_fd, (struct sockaddr *)&a, &alen) == 0);
    f->port = ntohs(a.sin_port);
    pthread_create(&f->thread, NULL, fake_main, f);
}

static void fake_stop(fake_store *f)
{
    shutdown(f->listen_fd, SHUT_RDWR);
    pthread_join(f->thread, NULL);
    close(f->listen_fd);
}

Test(transport_store, connect_fails_with_eauth_when_the_store_cannot_prove_the_token, .timeout = 10)
{
    fake_store f;
    fake_start(&f, FAKE_BAD_PROOF, NULL);
    cr_assert_null(ferry__store_connect("127.0.0.1", f.port, "tok", 5));
    cr_assert_eq(ferry_last_status(), FERRY_EAUTH, "%s", ferry_last_error());
    cr_assert(strstr(ferry_last_error(), "could not prove it knows the auth token"), "%s",
              ferry_last_error());
    fake_stop(&f);
}

Test(transport_store, connect_fails_with_etimedout_when_the_server_never_greets, .timeout = 10)
{
    fake_store f;
    fake_start(&f, FAKE_SILENT, NULL);
    double t0 = ferry__now_s();
    cr_assert_null(ferry__store_connect("127.0.0.1", f.port, "tok", 0.5));
    double took = ferry__now_s() - t0;
    cr_assert_eq(ferry_last_status(), FERRY_ETIMEDOUT, "%s", ferry_last_error());
    cr_assert(took >= 0.45 && took < 1.5, "took %.2f s", took);
    fake_stop(&f);
}

Test(transport_store, every_op_fails_with_etimedout_within_its_deadline_when_server_is_mute,
     .timeout = 15)
{
    fake_store f;
    fake_start(&f, FAKE_MUTE_AFTER_AUTH, "tok");
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", f.port, "tok", 5));
    double t0 = ferry__now_s();
    ferry_assert_status(ferry__store_add(st, "k", 1, NULL, 0.3), FERRY_ETIMEDOUT);
    double took = ferry__now_s() - t0;
    cr_assert(took >= 0.29 && took < 0.8, "add took %.2f s", took);
    cr_assert(strstr(ferry_last_error(), "did not answer within") &&
                  strstr(ferry_last_error(), "rank 0"),
              "%s", ferry_last_error());
    /* The connection is given up: later calls fail at once, saying why. */
    t0 = ferry__now_s();
    ferry_assert_status(ferry__store_set(st, "k", "v", 1, 5), FERRY_ETRANSPORT);
    cr_assert(ferry__now_s() - t0 < 0.1);
    cr_assert(strstr(ferry_last_error(), "did not answer"), "%s", ferry_last_error());
    cr_assert(!ferry__store_is_connected(st));
    ferry__store_close(st);

    /* A get: the server's wait plus the reply grace, no more. */
    st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", f.port, "tok", 5));
    void *val = NULL;
    size_t len;
    t0 = ferry__now_s();
    ferry_assert_status(ferry__store_get(st, "k", 0.2, &val, &len), FERRY_ETIMEDOUT);
    took = ferry__now_s() - t0;
    cr_assert(took >= 0.2 && took < 0.2 + FERRY__STORE_REPLY_GRACE_MS / 1000.0 + 0.3,
              "get took %.2f s", took);
    ferry__store_close(st);
    fake_stop(&f);
}

/* ---- the server's limits ------------------------------------------------------------------- */

static ferry__store_server *start_limited(const char *token, const ferry__store_server_options *o,
                                          int *port)
{
    return ferry_assert_ptr(ferry__store_server_start("127.0.0.1", 0, token, o, port));
}

/* Waits (bounded) until cond(stats) holds; the server thread updates the counters once a loop. */
static ferry__store_server_stats wait_stats(ferry__store_server *srv,
                                            bool (*cond)(const ferry__store_server_stats *),
                                            double timeout_s)
{
    ferry__store_server_stats st;
    double end = ferry__now_s() + timeout_s;
    do {
        ferry__store_server_get_stats(srv, &st);
        if (cond(&st))
            return st;
        ferry__sleep_us(2000);
    } while (ferry__now_s() < end);
    return st;
}

static bool one_handshake_timeout(const ferry__store_server_stats *st)
{
    return st->handshake_timeouts >= 1;
}

Test(transport_store, server_closes_a_connection_when_it_does_not_finish_the_handshake,
     .timeout = 10)
{
    ferry__store_server_options o;
    ferry__store_server_options_init(&o);
    o.handshake_timeout_s = 0.2;
    int port;
    ferry__store_server *srv = start_limited("tok", &o, &port);
    int fd = raw_connect(port, true);
    double t0 = ferry__now_s();
    uint8_t sink[8];
    cr_assert_eq(recv(fd, sink, sizeof sink, 0), 0, "the server should hang up");
    double took = ferry__now_s() - t0;
    cr_assert(took >= 0.15 && took < 2, "closed after %.2f s", took);
    ferry__store_server_stats st = wait_stats(srv, one_handshake_timeout, 2);
    cr_assert_eq(st.handshake_timeouts, 1);
    close(fd);
    ferry__store_server_stop(srv);
}

Test(transport_store, server_evicts_the_oldest_pending_when_idle_connections_pile_up,
     .timeout = 15)
{
    ferry__store_server_options o;
    ferry__store_server_options_init(&o);
    o.max_pending = 4;
    int port, fds[20];
    ferry__store_server *srv = start_limited("tok", &o, &port);
    for (int i = 0; i < 20; i++)
        fds[i] = raw_connect(port, true); /* each read its hello: the server accepted it */
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, "tok", 5));
    ferry_assert_ok(ferry__store_set(st, "k", "v", 1, 5));
    ferry__store_server_stats stats;
    ferry__store_server_get_stats(srv, &stats);
    cr_assert(stats.pending <= 4, "pending %llu", (unsigned long long)stats.pending);
    cr_assert(stats.evicted >= 16, "evicted %llu", (unsigned long long)stats.evicted);
    /* The first ones were closed. */
    uint8_t sink[8];
    cr_assert_eq(recv(fds[0], sink, sizeof sink, 0), 0);
    for (int i = 0; i < 20; i++)
        close(fds[i]);
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

static bool accept_failed(const ferry__store_server_stats *st)
{
    return st->accept_failures >= 1;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(transport_store, server_rests_the_listener_when_accept_runs_out_of_fds, .timeout = 15)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    /* Use up every fd (under a low limit), then connect: the connection waits in the backlog
       while accept fails. */
    struct rlimit rl, low;
    cr_assert(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    low = rl;
    low.rlim_cur = 512;
    cr_assert(setrlimit(RLIMIT_NOFILE, &low) == 0);
    int spare[4096], n_spare = 0;
    while (n_spare < 4096 && (spare[n_spare] = dup(0)) >= 0)
        n_spare++;
    cr_assert(n_spare < 4096, "could not exhaust the fds");
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    ferry__store_server_stats st = wait_stats(srv, accept_failed, 5);
    cr_assert(st.accept_failures >= 1);
    double cpu0 = cpu_s(), t0 = ferry__now_s();
    ferry__sleep_us(500000); /* measuring, not synchronizing: a spinning listener burns a core */
    double cpu = cpu_s() - cpu0, wall = ferry__now_s() - t0;
    ferry__store_server_get_stats(srv, &st);
    for (int i = 0; i < n_spare; i++)
        close(spare[i]);
    setrlimit(RLIMIT_NOFILE, &rl);
    cr_assert(cpu < 0.25 * wall, "the server used %.2f s of CPU in %.2f s", cpu, wall);
    cr_assert(st.accept_failures < 50, "accept retried %llu times",
              (unsigned long long)st.accept_failures);
    /* With fds back, the waiting connection is served. */
    uint8_t hello[5];
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 3000), 1, "no hello once fds were free");
    cr_assert_eq(recv(fd, hello, sizeof hello, MSG_WAITALL), 5);
    close(fd);
    ferry__store_server_stop(srv);
}

static bool reading_paused(const ferry__store_server_stats *st)
{
    return st->read_pauses >= 1;
}

Test(transport_store, server_stops_reading_when_a_client_leaves_replies_unread, .timeout = 20)
{
    ferry__store_server_options o;
    ferry__store_server_options_init(&o);
    o.output_limit_bytes = 1 << 20;
    int port;
    ferry__store_server *srv = start_limited("tok", &o, &port);
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, "tok", 5));
    size_t big = 1 << 20;
    uint8_t *val = ferry__calloc(1, big);
    ferry_assert_ok(ferry__store_set(st, "big", val, big, 5));
    ferry__free(val);
    /* 400 pipelined gets of 1 MiB each (400 MiB of replies), never read. */
    int fd = ferry__store_dial("127.0.0.1", port, "tok", 5);
    cr_assert(fd >= 0, "%s", ferry_last_error());
    ferry__store_writer w = {0};
    for (int i = 0; i < 400; i++) {
        size_t at = w.len;
        ferry__store_wr_u32(&w, 0);
        ferry__store_wr_u8(&w, FERRY__STORE_OP_GET);
        ferry__store_wr_u64(&w, 1000);
        ferry__store_wr_blob(&w, "big", 3);
        ferry__store_put_be32(w.p + at, (uint32_t)(w.len - at - 4));
    }
    cr_assert_eq(send(fd, w.p, w.len, MSG_NOSIGNAL), (ssize_t)w.len);
    ferry__free(w.p);
    ferry__store_server_stats stats = wait_stats(srv, reading_paused, 5);
    cr_assert(stats.read_pauses >= 1);
    /* Others are still served while it sits there, and its queue stays near the bound. */
    ferry_assert_ok(ferry__store_set(st, "k", "v", 1, 5));
    expect_value(st, "k", "v");
    ferry__store_server_get_stats(srv, &stats);
    cr_assert(stats.out_bytes_max < (4u << 20), "%llu bytes queued",
              (unsigned long long)stats.out_bytes_max);
    cr_assert(stats.requests < 100, "%llu requests run", (unsigned long long)stats.requests);
    close(fd);
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}

Test(transport_store, get_waits_when_the_client_asks_for_a_huge_timeout, .timeout = 10)
{
    int port;
    ferry__store_server *srv = start_server(NULL, &port);
    int fd = raw_connect(port, false);
    /* get "k" with a timeout of 2^64 - 1 ms: must park, not time out at once (overflow). */
    const uint8_t frame[] = {0, 0, 0, 14, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                             0, 0, 0, 1, 'k'};
    cr_assert_eq(send(fd, frame, sizeof frame - 2, MSG_NOSIGNAL), (ssize_t)sizeof frame - 2);
    cr_assert_eq(send(fd, frame + sizeof frame - 2, 2, MSG_NOSIGNAL), 2);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 200), 0, "answered at once: the deadline overflowed");
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", port, NULL, 5));
    ferry_assert_ok(ferry__store_set(st, "k", "v", 1, 5));
    uint8_t reply[6];
    cr_assert_eq(recv(fd, reply, sizeof reply, MSG_WAITALL), 6);
    cr_assert(reply[3] == 2 && reply[4] == FERRY__STORE_REPLY_OK && reply[5] == 'v');
    close(fd);
    ferry__store_close(st);
    ferry__store_server_stop(srv);
}
