/* The fabric layer's limits and tag keying, between forked processes (issue 9, findings 1, 4
   and the bounds of the flow control):
   - an announcement from a member of a message larger than max_message_bytes (8 GiB, and
     just over a small configured limit) is refused before any memory is reserved, is counted,
     marks nobody dead, and later messages still arrive;
   - a tagged receive whose data never comes is cancelled after recv_timeout_ms and fails with
     FERRY_ETIMEDOUT, counted, without marking the peer dead;
   - a peer's queue refuses past queue_max with an error naming the bound and the peer;
   - an outsider claiming rank 0 cannot complete a receive posted for a tag it knows: tags on
     the wire are keyed with the pair's secret.
   Ranks swap address blobs through a shared mapping made before fork, as test_net.c does. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/test_util.h"
#include "core/alloc.h"
#include "transport/net_internal.h"

#define BLOB_MAX 2048
#define WAIT_S 20

typedef struct {
    pthread_barrier_t barrier;
    const char *transport;
    size_t len[3];
    unsigned char blob[3][BLOB_MAX];
} world;

typedef struct {
    ferry__net *net;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long msgs, ok, timed_out, shut, failed, peer_errors;
} rank_ctx;

#define CHECK(c)                                                                         \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fprintf(stderr, "check failed at line %d: %s (%s)\n", __LINE__, #c,          \
                    ferry_last_error());                                                 \
            return 1;                                                                    \
        }                                                                                \
    } while (0)

static void on_message(void *vctx, int src, const void *buf, size_t len)
{
    rank_ctx *c = vctx;
    pthread_mutex_lock(&c->mu);
    c->msgs++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_peer_error(void *vctx, int peer, ferry_status rc, const char *why)
{
    rank_ctx *c = vctx;
    pthread_mutex_lock(&c->mu);
    c->peer_errors++;
    pthread_mutex_unlock(&c->mu);
    fprintf(stderr, "peer %d error: %s\n", peer, why);
}

static void on_done(void *arg, ferry_status rc)
{
    rank_ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    if (rc == FERRY_OK)
        c->ok++;
    else if (rc == FERRY_ETIMEDOUT)
        c->timed_out++;
    else if (rc == FERRY_ESHUTDOWN)
        c->shut++;
    else
        c->failed++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static bool wait_for(rank_ctx *c, const long *counter, long want)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_S;
    pthread_mutex_lock(&c->mu);
    int err = 0;
    while (*counter < want && err == 0)
        err = pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    bool ok = *counter >= want;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

/* Opens with `o`, publishes in slot `slot`, waits for the others, installs the peers of
   `members` (slots, in rank order) with us as `self`, and starts. */
static int join_as(rank_ctx *c, world *w, ferry__net_options o, int slot, const int *members,
                   int n, int self)
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    ferry__net_handlers h = {.on_message = on_message, .on_peer_error = on_peer_error, .ctx = c};
    o.transport = w->transport;
    o.master_addr = "127.0.0.1";
    c->net = ferry__net_open(&o, &h);
    CHECK(c->net != NULL);
    const void *blob;
    size_t len;
    CHECK(ferry__net_local_address(c->net, &blob, &len) == FERRY_OK && len <= BLOB_MAX);
    memcpy(w->blob[slot], blob, len);
    w->len[slot] = len;
    pthread_barrier_wait(&w->barrier);
    const void *blobs[3];
    size_t lens[3];
    for (int r = 0; r < n; r++) {
        blobs[r] = w->blob[members[r]];
        lens[r] = w->len[members[r]];
    }
    CHECK(ferry__net_set_peers(c->net, self, n, blobs, lens) == FERRY_OK);
    CHECK(ferry__net_start(c->net) == FERRY_OK);
    return 0;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

/* A member's announcement as its net would frame it (its real cookie), of `total` bytes. */
static int announce(rank_ctx *c, int dst, uint64_t total)
{
    ferry__net_peer *p = &c->net->peers[dst];
    ferry__net_op *op = ferry__net_op_new(FERRY__OP_SEND, p->ep, dst);
    CHECK(op != NULL);
    unsigned char *b = ferry__malloc(FERRY__NET_FRAME_BYTES + 32);
    memcpy(b, p->cookie_out, FERRY__NET_FRAME_BYTES);
    put_u64(b + 16, total);
    put_u64(b + 24, 99);
    put_u64(b + 32, 1);
    put_u64(b + 40, total);
    op->owned = b;
    op->addr = p->addr;
    op->data = FERRY__NET_DATA(FERRY__NET_KIND_LARGE, c->net->self_rank);
    op->iov_inline[0] = (struct iovec){b, FERRY__NET_FRAME_BYTES + 32};
    op->n_iov = 1;
    op->done = on_done;
    op->arg = c;
    CHECK(ferry__net_submit(c->net, op, false) == FERRY_OK);
    return 0;
}

static size_t linked_trecv(ferry__net *net)
{
    pthread_mutex_lock(&net->lock);
    size_t n = net->n_trecv;
    pthread_mutex_unlock(&net->lock);
    return n;
}

/* ---- scenarios ---- */

static int huge_announcement_rank(int rank, int n, void *arg)
{
    world *w = arg;
    rank_ctx c = {0};
    ferry__net_options o = {.max_message_bytes = (uint64_t)1 << 20};
    const int members[2] = {0, 1};
    if (join_as(&c, w, o, rank, members, 2, rank) != 0)
        return 1;
    if (rank == 0) {
        CHECK(announce(&c, 1, (uint64_t)8 << 30) == 0);
        CHECK(announce(&c, 1, ((uint64_t)1 << 20) + 1) == 0);
        CHECK(wait_for(&c, &c.ok, 2));
        /* Sending past the limit is refused here already. */
        static char big[(1 << 20) + 1];
        struct iovec iov = {big, sizeof big};
        CHECK(ferry__net_send(c.net, 1, &iov, 1, on_done, &c) == FERRY_EINVAL);
        CHECK(strstr(ferry_last_error(), "max_message_bytes") != NULL);
    }
    pthread_barrier_wait(&w->barrier); /* both announcements have left */
    if (rank == 0) {
        struct iovec iov = {"after", 5};
        CHECK(ferry__net_send(c.net, 1, &iov, 1, on_done, &c) == FERRY_OK);
        CHECK(wait_for(&c, &c.ok, 3));
    } else {
        CHECK(wait_for(&c, &c.msgs, 1)); /* the message after arrives (ordered behind them) */
        ferry__net_stats st;
        ferry__net_get_stats(c.net, &st);
        CHECK(st.dropped_refused == 2 && st.messages_in == 1);
        CHECK(linked_trecv(c.net) == 0); /* nothing posted, nothing reserved */
    }
    pthread_barrier_wait(&w->barrier);
    CHECK(c.peer_errors == 0 && c.failed == 0);
    ferry__net_close(c.net);
    return 0;
}

static int expiry_rank(int rank, int n, void *arg)
{
    world *w = arg;
    rank_ctx c = {0};
    ferry__net_options o = {.recv_timeout_ms = 300};
    const int members[2] = {0, 1};
    if (join_as(&c, w, o, rank, members, 2, rank) != 0)
        return 1;
    if (rank == 1) {
        char buf[4096];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CHECK(ferry__net_recv_bulk(c.net, 0, 77, buf, sizeof buf, on_done, &c) == FERRY_OK);
        CHECK(wait_for(&c, &c.timed_out, 1));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        fprintf(stderr, "%s: a receive that never completes failed after %.2f s\n",
                w->transport, s);
        CHECK(s >= 0.25 && s < 5);
        ferry__net_stats st;
        ferry__net_get_stats(c.net, &st);
        CHECK(st.expired_receives == 1 && linked_trecv(c.net) == 0);
        /* The peer is not taken for dead: a transfer with it still works. */
        char in[16] = "";
        CHECK(ferry__net_recv_bulk(c.net, 0, 78, in, 5, on_done, &c) == FERRY_OK);
        pthread_barrier_wait(&w->barrier);
        CHECK(wait_for(&c, &c.ok, 1) && memcmp(in, "fresh", 5) == 0);
    } else {
        pthread_barrier_wait(&w->barrier);
        CHECK(ferry__net_send_bulk(c.net, 1, 78, "fresh", 5, on_done, &c) == FERRY_OK);
        CHECK(wait_for(&c, &c.ok, 1));
    }
    pthread_barrier_wait(&w->barrier);
    CHECK(c.peer_errors == 0 && c.failed == 0);
    ferry__net_close(c.net);
    return 0;
}

static int queue_full_rank(int rank, int n, void *arg)
{
    world *w = arg;
    rank_ctx c = {0};
    ferry__net_options o = {.queue_max = 10};
    const int members[2] = {0, 1};
    if (join_as(&c, w, o, rank, members, 2, rank) != 0)
        return 1;
    if (rank == 1) {
        /* Receives nobody sends for: the window fills, then the queue, then the bound. */
        static char bufs[FERRY__NET_WINDOW + 10][8];
        for (int i = 0; i < FERRY__NET_WINDOW + 10; i++)
            CHECK(ferry__net_recv_bulk(c.net, 0, (uint64_t)i, bufs[i], 8, on_done, &c) == FERRY_OK);
        char one[8];
        CHECK(ferry__net_recv_bulk(c.net, 0, 9999, one, 8, on_done, &c) == FERRY_ENOMEM);
        const char *why = ferry_last_error();
        fprintf(stderr, "%s: %s\n", w->transport, why);
        CHECK(strstr(why, "rank 0") && strstr(why, "FERRY_NET_QUEUE_MAX"));
        ferry__net_stats st;
        ferry__net_get_stats(c.net, &st);
        CHECK(st.queue_full == 1);
    }
    pthread_barrier_wait(&w->barrier);
    ferry__net_close(c.net); /* the receives finish with FERRY_ESHUTDOWN */
    CHECK(c.peer_errors == 0 && c.failed == 0);
    CHECK(c.shut == (rank == 1 ? FERRY__NET_WINDOW + 10 : 0));
    return 0;
}

/* Rank 1 posts a receive from rank 0 for tag 5; the outsider (slot 2, believing it is rank 0
   of {itself, rank 1}) sends tagged data for tag 5 exactly as the receive names it, keyed with
   the only key it can have (its own), and unkeyed. Neither may land; rank 0's send then does. */
static int tag_injection_rank(int rank, int n, void *arg)
{
    world *w = arg;
    rank_ctx c = {0};
    ferry__net_options o = {0};
    if (rank < 2) {
        if (join_as(&c, w, o, rank, (const int[]){0, 1}, 2, rank) != 0)
            return 1;
    } else if (join_as(&c, w, o, 2, (const int[]){2, 1}, 2, 0) != 0) {
        return 1;
    }
    char in[8] = "";
    if (rank == 1)
        CHECK(ferry__net_recv_bulk(c.net, 0, 5, in, sizeof in, on_done, &c) == FERRY_OK);
    pthread_barrier_wait(&w->barrier); /* the receive is posted */
    if (rank == 2) {
        CHECK(ferry__net_send_bulk(c.net, 1, 5, "FORGED1", 8, on_done, &c) == FERRY_OK);
        ferry__net_peer *p = &c.net->peers[1];
        ferry__net_op *op = ferry__net_op_new(FERRY__OP_TSEND, p->ep, 1);
        CHECK(op != NULL);
        op->addr = p->addr;
        op->tag = 5; /* the tag as the caller chose it, unkeyed */
        op->iov_inline[0] = (struct iovec){"FORGED2", 8};
        op->n_iov = 1;
        op->len = 8;
        op->done = on_done;
        op->arg = &c;
        CHECK(ferry__net_submit(c.net, op, false) == FERRY_OK);
        /* (tagged sends with no match may stay pending; closing finishes them) */
    }
    pthread_barrier_wait(&w->barrier); /* the forged sends were posted */
    if (rank == 0) {
        CHECK(ferry__net_send_bulk(c.net, 1, 5, "genuine", 8, on_done, &c) == FERRY_OK);
        CHECK(wait_for(&c, &c.ok, 1));
    }
    if (rank == 1) {
        CHECK(wait_for(&c, &c.ok, 1));
        CHECK(strcmp(in, "genuine") == 0);
    }
    pthread_barrier_wait(&w->barrier);
    ferry__net_close(c.net);
    return rank < 2 && (c.peer_errors || c.failed) ? 1 : 0;
}

static void run(int n, const char *transport, ferry_test_rank_fn fn)
{
    world *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(w != MAP_FAILED);
    pthread_barrierattr_t a;
    pthread_barrierattr_init(&a);
    pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&w->barrier, &a, (unsigned)n);
    w->transport = transport;
    ferry_test_run_ranks(n, fn, w, 50);
    pthread_barrier_destroy(&w->barrier);
    munmap(w, sizeof *w);
}

#define BOTH(name, n, fn)                                                                \
    Test(fault_fabric, name##_when_tcp, .timeout = 60) { run(n, "tcp", fn); }             \
    Test(fault_fabric, name##_when_shm, .timeout = 60) { run(n, "shm", fn); }

BOTH(announcement_over_the_limit_is_refused_unreserved, 2, huge_announcement_rank)
BOTH(receive_expires_without_marking_the_peer_dead, 2, expiry_rank)
BOTH(full_queue_refuses_naming_bound_and_peer, 2, queue_full_rank)
BOTH(outsider_cannot_land_data_on_a_posted_tag, 3, tag_injection_rank)
