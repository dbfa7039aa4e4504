/* The fabric layer between forked processes on this host, over tcp;ofi_rxm and shm: small
   ping-pong, large messages delivered whole, bulk transfers with either side first, gathered
   sends, sending to self, concurrent senders, messages from strangers, close, stale shm
   regions and the tag hash. Ranks swap
   address blobs through a shared anonymous mapping made before fork and meet at a
   process-shared barrier; no store is involved. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/test_util.h"
#include "core/alloc.h"
#include "transport/net.h"
#include "transport/net_internal.h"

#define MAX_RANKS 4
#define BLOB_MAX 2048
#define WAIT_S 20

/* Shared by the forked ranks of one test (MAP_SHARED, made in the test before fork). */
typedef struct {
    pthread_barrier_t barrier;
    const char *transport; /* a string literal: same address in every child */
    size_t len[MAX_RANKS];
    unsigned char blob[MAX_RANKS][BLOB_MAX];
} world;

/* What one rank saw, guarded by mu. */
typedef struct {
    ferry__net *net;
    int rank, n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long msgs, done_ok, done_err, done_shutdown, peer_errors;
    long from[MAX_RANKS][8];  /* threads test: messages per (source, sending thread) */
    int last_src;
    unsigned char *last;
    size_t last_len;
    bool echo, keep_last, bad;
} rank_ctx;

#define CHECK(c)                                                                         \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fprintf(stderr, "check failed at line %d: %s (%s)\n", __LINE__, #c,          \
                    ferry_last_error());                                                 \
            _exit(1);                                                                    \
        }                                                                                \
    } while (0)

static world *world_new(int n, const char *transport)
{
    world *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(w != MAP_FAILED);
    pthread_barrierattr_t a;
    pthread_barrierattr_init(&a);
    pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&w->barrier, &a, (unsigned)n);
    w->transport = transport;
    return w;
}

static void world_free(world *w)
{
    pthread_barrier_destroy(&w->barrier);
    munmap(w, sizeof *w);
}

/* ---- callbacks (progress thread) ---- */

static void free_done(void *arg, ferry_status rc)
{
    ferry__free(arg);
}

static void on_message(void *vctx, int src, const void *buf, size_t len)
{
    rank_ctx *c = vctx;
    if (c->echo) {
        void *copy = ferry__malloc(len ? len : 1);
        memcpy(copy, buf, len);
        struct iovec iov = {copy, len};
        if (ferry__net_send(c->net, src, &iov, 1, free_done, copy) != FERRY_OK)
            c->bad = true;
    }
    pthread_mutex_lock(&c->mu);
    c->msgs++;
    c->last_src = src;
    if (len >= 2 && ((const unsigned char *)buf)[0] == 'T') {
        const unsigned char *b = buf;
        c->from[src][b[1] & 7]++;
    }
    if (c->keep_last) {
        ferry__free(c->last);
        c->last = ferry__malloc(len ? len : 1);
        memcpy(c->last, buf, len);
        c->last_len = len;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_peer_error(void *vctx, int peer, ferry_status rc, const char *why)
{
    rank_ctx *c = vctx;
    pthread_mutex_lock(&c->mu);
    c->peer_errors++;
    pthread_mutex_unlock(&c->mu);
    fprintf(stderr, "rank %d: peer %d error: %s\n", c->rank, peer, why);
}

static void count_done(void *arg, ferry_status rc)
{
    rank_ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    if (rc == FERRY_OK)
        c->done_ok++;
    else if (rc == FERRY_ESHUTDOWN)
        c->done_shutdown++;
    else
        c->done_err++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Waits until *counter >= want (under mu); false after WAIT_S. */
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
    if (!ok)
        fprintf(stderr, "rank %d: waited for %ld, have %ld\n", c->rank, want, *counter);
    return ok;
}

/* ---- joining a world ---- */

static ferry__net *open_net(rank_ctx *c, const char *transport)
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    ferry__net_handlers h = {.on_message = on_message, .on_peer_error = on_peer_error, .ctx = c};
    ferry__net_options o = {.transport = transport, .master_addr = "127.0.0.1", .tick_ms = 5};
    ferry__net *net = ferry__net_open(&o, &h);
    CHECK(net != NULL);
    c->net = net;
    return net;
}

/* Opens, publishes, waits for everyone, installs the peers listed in `members` (world ranks,
   in the order that gives their rank in this net) and starts. */
static void join_as(rank_ctx *c, world *w, int slot, const int *members, int n, int self)
{
    ferry__net *net = open_net(c, w->transport);
    const void *blob;
    size_t len;
    CHECK(ferry__net_local_address(net, &blob, &len) == FERRY_OK && len <= BLOB_MAX);
    memcpy(w->blob[slot], blob, len);
    w->len[slot] = len;
    pthread_barrier_wait(&w->barrier);
    const void *blobs[MAX_RANKS];
    size_t lens[MAX_RANKS];
    for (int r = 0; r < n; r++) {
        blobs[r] = w->blob[members[r]];
        lens[r] = w->len[members[r]];
    }
    CHECK(ferry__net_set_peers(net, self, n, blobs, lens) == FERRY_OK);
    CHECK(ferry__net_start(net) == FERRY_OK);
    c->rank = self;
    c->n = n;
}

static void join(rank_ctx *c, world *w, int rank, int n)
{
    const int members[MAX_RANKS] = {0, 1, 2, 3};
    join_as(c, w, rank, members, n, rank);
}

static int leave(rank_ctx *c, world *w)
{
    pthread_barrier_wait(&w->barrier);
    ferry__net_close(c->net);
    ferry__free(c->last);
    return c->bad || c->done_err || c->peer_errors ? 1 : 0;
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 131 + seed + (i >> 12));
}

static bool check_fill(const unsigned char *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != (unsigned char)(i * 131 + seed + (i >> 12)))
            return false;
    return true;
}

static void send_wait(rank_ctx *c, int dst, const struct iovec *iov, size_t n)
{
    long want = c->done_ok + 1;
    CHECK(ferry__net_send(c->net, dst, iov, n, count_done, c) == FERRY_OK);
    CHECK(wait_for(c, &c->done_ok, want));
}

/* ---- scenarios (each runs in every forked rank) ---- */

static int pingpong_rank(int rank, int n, void *arg)
{
    rank_ctx c = {0};
    world *w = arg;
    c.echo = rank == 1;
    c.keep_last = rank == 0;
    join(&c, w, rank, n);
    if (rank == 0) {
        for (long i = 0; i < 500; i++) {
            char msg[32];
            int len = snprintf(msg, sizeof msg, "ping %ld", i);
            struct iovec iov = {msg, (size_t)len};
            CHECK(ferry__net_send(c.net, 1, &iov, 1, count_done, &c) == FERRY_OK);
            CHECK(wait_for(&c, &c.msgs, i + 1));
            CHECK(c.last_src == 1 && c.last_len == (size_t)len && !memcmp(c.last, msg, len));
        }
        CHECK(wait_for(&c, &c.done_ok, 500));
        ferry__net_stats st;
        ferry__net_get_stats(c.net, &st);
        CHECK(st.messages_out == 500 && st.messages_in == 500 && st.dropped_unknown_source == 0);
    }
    return leave(&c, w);
}

static int large_rank(int rank, int n, void *arg)
{
    rank_ctx c = {0};
    world *w = arg;
    c.keep_last = true;
    join(&c, w, rank, n);
    /* 64 KiB less the 16-byte frame header is the largest eager message; around it. */
    const size_t sizes[] = {(size_t)1 << 20, (size_t)64 << 20, 65536 - 16, 65536 - 15};
    if (rank == 0) {
        for (int k = 0; k < 4; k++) {
            unsigned char *buf = ferry__malloc(sizes[k]);
            fill(buf, sizes[k], (unsigned)k);
            /* Two pieces, split off-centre, so the receiver must join them. */
            struct iovec iov[2] = {{buf, 1000}, {buf + 1000, sizes[k] - 1000}};
            send_wait(&c, 1, iov, 2);
            CHECK(wait_for(&c, &c.msgs, k + 1)); /* the ack */
            ferry__free(buf);
        }
    } else {
        for (int k = 0; k < 4; k++) {
            CHECK(wait_for(&c, &c.msgs, k + 1));
            CHECK(c.last_src == 0 && c.last_len == sizes[k] && check_fill(c.last, sizes[k], k));
            struct iovec ack = {"ack", 3};
            send_wait(&c, 0, &ack, 1);
        }
    }
    return leave(&c, w);
}

/* Bulk with the receiver first (tags 1, 3) and the sender first (tags 2, 4), small and large. */
static int bulk_rank(int rank, int n, void *arg)
{
    rank_ctx c = {0};
    world *w = arg;
    join(&c, w, rank, n);
    const size_t sizes[] = {100, (size_t)4 << 20};
    unsigned char *bufs[4];
    for (int k = 0; k < 4; k++) {
        bufs[k] = ferry__calloc(1, sizes[k & 1]);
        if (rank == 0)
            fill(bufs[k], sizes[k & 1], (unsigned)k + 7);
    }
    if (rank == 1) {
        CHECK(ferry__net_recv_bulk(c.net, 0, 1, bufs[0], sizes[0], count_done, &c) == FERRY_OK);
        CHECK(ferry__net_recv_bulk(c.net, 0, 3, bufs[1], sizes[1], count_done, &c) == FERRY_OK);
    } else {
        CHECK(ferry__net_send_bulk(c.net, 1, 2, bufs[2], sizes[0], count_done, &c) == FERRY_OK);
        CHECK(ferry__net_send_bulk(c.net, 1, 4, bufs[3], sizes[1], count_done, &c) == FERRY_OK);
    }
    pthread_barrier_wait(&w->barrier);
    if (rank == 0) {
        CHECK(ferry__net_send_bulk(c.net, 1, 1, bufs[0], sizes[0], count_done, &c) == FERRY_OK);
        CHECK(ferry__net_send_bulk(c.net, 1, 3, bufs[1], sizes[1], count_done, &c) == FERRY_OK);
    } else {
        CHECK(ferry__net_recv_bulk(c.net, 0, 2, bufs[2], sizes[0], count_done, &c) == FERRY_OK);
        CHECK(ferry__net_recv_bulk(c.net, 0, 4, bufs[3], sizes[1], count_done, &c) == FERRY_OK);
    }
    CHECK(wait_for(&c, &c.done_ok, 4));
    for (int k = 0; k < 4; k++) {
        CHECK(check_fill(bufs[k], sizes[k & 1], (unsigned)k + 7));
        ferry__free(bufs[k]);
    }
    return leave(&c, w);
}

/* Gathered sends: fewer and more pieces than the provider's iov_limit, small and large, and
   more pieces than a large message has parts (copied into one). */
static int gather_rank(int rank, int n, void *arg)
{
    rank_ctx c = {0};
    world *w = arg;
    c.keep_last = true;
    join(&c, w, rank, n);
    const size_t counts[] = {1, 3, 7, 9, 300}, totals[] = {500, 3000, 60000, 5 << 20, 3 << 20};
    for (int k = 0; k < 5; k++) {
        if (rank == 0) {
            unsigned char *buf = ferry__malloc(totals[k]);
            fill(buf, totals[k], (unsigned)k);
            struct iovec iov[300];
            size_t piece = totals[k] / counts[k];
            for (size_t i = 0; i < counts[k]; i++)
                iov[i] = (struct iovec){buf + i * piece,
                                        i + 1 == counts[k] ? totals[k] - i * piece : piece};
            send_wait(&c, 1, iov, counts[k]);
            CHECK(wait_for(&c, &c.msgs, k + 1));
            ferry__free(buf);
        } else {
            CHECK(wait_for(&c, &c.msgs, k + 1));
            CHECK(c.last_len == totals[k] && check_fill(c.last, totals[k], (unsigned)k));
            struct iovec ack = {"ok", 2};
            send_wait(&c, 0, &ack, 1);
        }
    }
    return leave(&c, w);
}

static int self_rank(int rank, int n, void *arg)
{
    rank_ctx c = {0};
    world *w = arg;
    c.keep_last = true;
    join(&c, w, rank, n);
    CHECK(ferry__net_send(c.net, rank, NULL, 0, count_done, &c) == FERRY_OK); /* empty */
    CHECK(wait_for(&c, &c.msgs, 1) && c.last_len == 0 && c.last_src == rank);
    CHECK(wait_for(&c, &c.done_ok, 1));
    const size_t sizes[] = {17, (size_t)2 << 20};
    for (int k = 0; k < 2; k++) {
        unsigned char *buf = ferry__malloc(sizes[k]);
        fill(buf, sizes[k], 3);
        struct iovec iov = {buf, sizes[k]};
        send_wait(&c, rank, &iov, 1);
        CHECK(wait_for(&c, &c.msgs, k + 2));
        CHECK(c.last_src == rank && c.last_len == sizes[k] && check_fill(c.last, sizes[k], 3));
        unsigned char *in = ferry__calloc(1, sizes[k]);
        long want = c.done_ok + 2;
        CHECK(ferry__net_send_bulk(c.net, rank, 9, buf, sizes[k], count_done, &c) == FERRY_OK);
        CHECK(ferry__net_recv_bulk(c.net, rank, 9, in, sizes[k], count_done, &c) == FERRY_OK);
        CHECK(wait_for(&c, &c.done_ok, want));
        CHECK(check_fill(in, sizes[k], 3));
        ferry__free(in);
        ferry__free(buf);
    }
    return leave(&c, w);
}

#define THREADS 4
#define PER_THREAD 400

typedef struct {
    rank_ctx *c;
    int index;
} sender_arg;

static void *sender_main(void *varg)
{
    sender_arg *a = varg;
    rank_ctx *c = a->c;
    for (int i = 0; i < PER_THREAD; i++) {
        for (int dst = 0; dst < c->n; dst++) {
            /* Every fifth message is large, so both paths race with each other. */
            size_t len = i % 5 == 4 && getenv("BIGLEN") ? (size_t)atoi(getenv("BIGLEN")) : 8 + (size_t)(i % 50);
            unsigned char *msg = ferry__calloc(1, len);
            msg[0] = 'T';
            msg[1] = (unsigned char)a->index;
            struct iovec iov = {msg, len};
            CHECK(ferry__net_send(c->net, dst, &iov, 1, free_done, msg) == FERRY_OK);
        }
    }
    return NULL;
}

static int threads_rank(int rank, int n, void *arg)
{
    rank_ctx c = {0};
    world *w = arg;
    join(&c, w, rank, n);
    pthread_t th[THREADS];
    sender_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (sender_arg){&c, t};
        CHECK(pthread_create(&th[t], NULL, sender_main, &args[t]) == 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    CHECK(wait_for(&c, &c.msgs, (long)n * THREADS * PER_THREAD));
    for (int src = 0; src < n; src++)
        for (int t = 0; t < THREADS; t++)
            CHECK(c.from[src][t] == PER_THREAD);
    ferry__net_stats st;
    ferry__net_get_stats(c.net, &st);
    CHECK(st.messages_in == (uint64_t)n * THREADS * PER_THREAD);
    return leave(&c, w);
}

/* Ranks 0 and 1 form a world; rank 2 believes it is rank 1 of a world with rank 0, so its
   messages come from an address rank 0 never installed: they must be dropped and counted. */
static int stranger_rank(int rank, int n, void *arg)
{
    rank_ctx c = {0};
    world *w = arg;
    if (rank < 2) {
        join_as(&c, w, rank, (const int[]){0, 1}, 2, rank);
    } else {
        join_as(&c, w, rank, (const int[]){0, 2}, 2, 1);
        struct iovec iov = {"intruder", 8};
        send_wait(&c, 0, &iov, 1);
    }
    pthread_barrier_wait(&w->barrier); /* the stranger's send completed */
    if (rank == 1) {
        struct iovec iov = {"member", 6};
        send_wait(&c, 0, &iov, 1);
    }
    if (rank == 0) {
        c.keep_last = true;
        CHECK(wait_for(&c, &c.msgs, 1));
        ferry__net_stats st;
        for (int i = 0; i < 2000; i++) {
            ferry__net_get_stats(c.net, &st);
            if (st.dropped_unknown_source > 0)
                break;
            struct timespec ts = {0, 1000000}; /* polling a counter, not synchronizing */
            nanosleep(&ts, NULL);
        }
        CHECK(st.dropped_unknown_source == 1);
        CHECK(c.msgs == 1 && c.last_src == 1);
    }
    return leave(&c, w);
}

static int auto_rank(int rank, int n, void *arg)
{
    rank_ctx c = {0};
    world *w = arg;
    c.echo = rank == 1;
    join(&c, w, rank, n);
    CHECK(strcmp(ferry__net_peer_provider(c.net, 1 - rank), "shm") == 0);
    if (rank == 0) {
        struct iovec iov = {"hello", 5};
        send_wait(&c, 1, &iov, 1);
        CHECK(wait_for(&c, &c.msgs, 1));
    }
    return leave(&c, w);
}

static void run(int n, const char *transport, ferry_test_rank_fn fn)
{
    world *w = world_new(n, transport);
    ferry_test_run_ranks(n, fn, w, 60);
    world_free(w);
}

#define BOTH(name, n, fn)                                                                \
    Test(transport_net, name##_when_tcp, .timeout = 90) { run(n, "tcp", fn); }            \
    Test(transport_net, name##_when_shm, .timeout = 90) { run(n, "shm", fn); }

BOTH(small_messages_round_trip, 2, pingpong_rank)
BOTH(large_messages_arrive_whole, 2, large_rank)
BOTH(bulk_lands_in_posted_buffer_with_either_side_first, 2, bulk_rank)
BOTH(gathered_iovecs_arrive_as_one_message, 2, gather_rank)
BOTH(sending_to_self_delivers, 1, self_rank)
BOTH(concurrent_senders_deliver_every_message, 3, threads_rank)
BOTH(messages_from_strangers_are_dropped, 3, stranger_rank)

Test(transport_net, same_host_peers_use_shm_when_auto, .timeout = 60)
{
    run(2, NULL, auto_rank);
}

/* ---- single-process checks ---- */

static void close_done(void *arg, ferry_status rc)
{
    int *out = arg;
    *out = rc == FERRY_ESHUTDOWN ? 1 : 2;
}

static ferry__net *solo(const char *transport)
{
    ferry__net_options o = {.transport = transport, .master_addr = "127.0.0.1"};
    ferry__net *net = ferry_assert_ptr(ferry__net_open(&o, NULL));
    const void *blob;
    size_t len;
    ferry_assert_ok(ferry__net_local_address(net, &blob, &len));
    ferry_assert_ok(ferry__net_set_peers(net, 0, 1, &blob, &len));
    ferry_assert_ok(ferry__net_start(net));
    return net;
}

Test(transport_net, close_finishes_pending_ops_when_unmatched, .timeout = 30)
{
    ferry__net *net = solo("shm");
    int got = 0;
    char buf[64];
    ferry_assert_ok(ferry__net_recv_bulk(net, 0, 42, buf, sizeof buf, close_done, &got));
    ferry__net_close(net);
    cr_assert_eq(got, 1, "done ran with %d (1 = FERRY_ESHUTDOWN)", got);
}

Test(transport_net, bad_arguments_are_rejected_when_invalid, .timeout = 30)
{
    ferry__net *net = solo("tcp");
    char buf[8] = "x";
    struct iovec iov = {buf, 1};
    ferry_assert_status(ferry__net_send(net, 1, &iov, 1, NULL, NULL), FERRY_EINVAL);
    ferry_assert_status(ferry__net_send(net, -1, &iov, 1, NULL, NULL), FERRY_EINVAL);
    ferry_assert_status(ferry__net_send_bulk(net, 0, UINT64_C(1) << 63, buf, 1, NULL, NULL),
                        FERRY_EINVAL);
    ferry_assert_status(ferry__net_recv_bulk(net, 0, UINT64_C(1) << 63, buf, 1, NULL, NULL),
                        FERRY_EINVAL);
    cr_assert_str_eq(ferry__net_peer_provider(net, 0), "tcp;ofi_rxm");
    ferry__net_close(net);
}

Test(transport_net, malformed_blob_is_rejected_when_set_peers, .timeout = 30)
{
    ferry__net_options o = {.transport = "shm"};
    ferry__net *net = ferry_assert_ptr(ferry__net_open(&o, NULL));
    const void *blobs[2];
    size_t lens[2];
    ferry_assert_ok(ferry__net_local_address(net, &blobs[0], &lens[0]));
    blobs[1] = "FRYNgarbage";
    lens[1] = 11;
    ferry_assert_status(ferry__net_set_peers(net, 0, 2, blobs, lens), FERRY_EINVAL);
    cr_assert(strstr(ferry_last_error(), "rank 1") != NULL, "%s", ferry_last_error());
    ferry__net_close(net);
}

Test(transport_net, open_names_the_provider_when_unknown, .timeout = 30)
{
    ferry__net_options o = {.transport = "no_such_provider"};
    cr_assert_null(ferry__net_open(&o, NULL));
    cr_assert_eq(ferry_last_status(), FERRY_ETRANSPORT);
    cr_assert(strstr(ferry_last_error(), "no_such_provider") != NULL, "%s", ferry_last_error());
}

Test(transport_net, open_names_the_interface_when_unknown, .timeout = 30)
{
    ferry__net_options o = {.transport = "tcp", .iface = "nosuchif0"};
    cr_assert_null(ferry__net_open(&o, NULL));
    cr_assert_eq(ferry_last_status(), FERRY_ETRANSPORT);
    cr_assert(strstr(ferry_last_error(), "nosuchif0") != NULL, "%s", ferry_last_error());
}

/* A process killed without closing leaves its shm region behind. Ours are named after the pid
   namespace, the pid and a random part, so nothing left over can block a later open; a leftover
   of our namespace whose process is gone is removed, while one from another pid namespace
   (a container sharing /dev/shm) and names we did not make are left alone. */
Test(transport_net, shm_removes_only_its_own_namespaces_stale_regions, .timeout = 30)
{
    pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0)
        _exit(0);
    cr_assert(waitpid(child, NULL, 0) == child); /* a pid that no longer exists */
    struct stat st;
    cr_assert(stat("/proc/self/ns/pid", &st) == 0);
    char stale[128], other_ns[128], foreign[64];
    snprintf(stale, sizeof stale, "/dev/shm/ferry.%llu.%d.0123456789abcdef:0:0",
             (unsigned long long)st.st_ino, (int)child);
    snprintf(other_ns, sizeof other_ns, "/dev/shm/ferry.%llu.%d.0123456789abcdef:0:0",
             (unsigned long long)st.st_ino + 1, (int)child);
    snprintf(foreign, sizeof foreign, "/dev/shm/%d:0:0", (int)getpid());
    const char *paths[] = {stale, other_ns, foreign};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(paths[i], "w");
        cr_assert(f != NULL, "%s", paths[i]);
        fclose(f);
    }
    ferry__net_options o = {.transport = "shm"};
    ferry__net *net = ferry_assert_ptr(ferry__net_open(&o, NULL));
    ferry__net_close(net);
    bool stale_gone = access(stale, F_OK) != 0, other_kept = access(other_ns, F_OK) == 0,
         foreign_kept = access(foreign, F_OK) == 0;
    unlink(other_ns);
    unlink(foreign);
    cr_assert(stale_gone, "the stale region of our namespace is still there");
    cr_assert(other_kept, "a region of another pid namespace was removed");
    cr_assert(foreign_kept, "a region ferry did not name was removed");
}

/* The tag keying is SipHash-2-4: the reference vector for key 00..0f, message 00..07. */
Test(transport_net, tag_hash_matches_siphash_reference_vector, .timeout = 10)
{
    const uint64_t key[2] = {UINT64_C(0x0706050403020100), UINT64_C(0x0f0e0d0c0b0a0908)};
    cr_assert_eq(ferry__net_siphash_u64(key, UINT64_C(0x0706050403020100)),
                 UINT64_C(0x93f5f5799a932462));
    uint64_t t = ferry__net_keyed_tag(key, UINT64_C(1) << 63 | 5);
    cr_assert(t >> 63 == 1, "the internal bit is kept");
    cr_assert((ferry__net_keyed_tag(key, 5) >> 63) == 0, "a user tag stays a user tag");
}
