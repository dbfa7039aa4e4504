/* Store floods while the job is still forming. (a) Hundreds of idle connections that never say a
   word, against a rank 0 limited to 64 fds: before the pending cap 1,100 of them kept rank 1
   from joining; now the oldest are evicted and the listener never spins. (b) A client with the
   token that pipelines gets of a 1 MiB value and never reads the replies: before the output
   bound rank 0 grew by 640 MiB; now it stops reading that connection and stays small. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "store_fault_util.h"
#include "transport/store.h"
#include "transport/store_wire.h"

#define IDLE_CONNS 200
#define FLOOD_GETS 1000

typedef struct {
    rpc_case c;
    bool low_fds;
    long rss_growth_kib; /* rank 0 writes it to the pipe */
    int report[2];
} flood_case;

static long rss_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    if (f)
        fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int flood_rank(int rank, void *arg)
{
    flood_case *fc = arg;
    if (rank == 0 && fc->low_fds) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = 64;
        RANK_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
    long before = rss_kib();
    if (rpc_case_join(&fc->c, rank, 2) != 0)
        return 1;
    long growth = rss_kib() - before;
    if (rank == 0)
        RANK_CHECK(write(fc->report[1], &growth, sizeof growth) == sizeof growth);
    RANK_CHECK(ferry_shutdown(true, 20) == FERRY_OK);
    return 0;
}

/* A connection to the store port that never sends anything; -1 while nobody listens. */
static int idle_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Retries until rank 0's store accepts connections. */
static int first_connect(int port)
{
    double end = ferry__now_s() + 20;
    int fd;
    while ((fd = idle_connect(port)) < 0 && ferry__now_s() < end)
        ferry__sleep_us(5000);
    cr_assert(fd >= 0, "rank 0's store never came up");
    return fd;
}

Test(fault_store, job_joins_when_idle_connections_flood_a_rank0_with_64_fds, .timeout = 60)
{
    rpc_test_set_token();
    flood_case fc = {.c = {.transport = "tcp", .port = ferry_test_free_port()}, .low_fds = true};
    cr_assert(pipe(fc.report) == 0);
    pid_t p0 = fault_fork(flood_rank, 0, &fc);
    int idle[IDLE_CONNS];
    idle[0] = first_connect(fc.c.port);
    for (int i = 1; i < IDLE_CONNS; i++)
        idle[i] = idle_connect(fc.c.port);
    pid_t p1 = fault_fork(flood_rank, 1, &fc);
    int rc1 = fault_reap(p1, 40), rc0 = fault_reap(p0, 20);
    for (int i = 0; i < IDLE_CONNS; i++)
        if (idle[i] >= 0)
            close(idle[i]);
    cr_assert_eq(rc0, 0, "rank 0 exited with %d", rc0);
    cr_assert_eq(rc1, 0, "rank 1 exited with %d", rc1);
}

static bool store_stats(ferry__store *st, uint64_t *requests)
{
    uint64_t keys;
    return ferry__store_stats(st, &keys, requests, 5) == FERRY_OK;
}

Test(fault_store, rank0_stays_small_when_a_client_never_reads_its_replies, .timeout = 60)
{
    rpc_test_set_token();
    const char *token = getenv("FERRY_AUTH_TOKEN");
    flood_case fc = {.c = {.transport = "tcp", .port = ferry_test_free_port()}};
    cr_assert(pipe(fc.report) == 0);
    pid_t p0 = fault_fork(flood_rank, 0, &fc);
    close(first_connect(fc.c.port));
    ferry__store *st = ferry_assert_ptr(ferry__store_connect("127.0.0.1", fc.c.port, token, 10));
    size_t big = 1 << 20;
    uint8_t *val = ferry__calloc(1, big);
    ferry_assert_ok(ferry__store_set(st, "flood/big", val, big, 5));
    ferry__free(val);
    int fd = ferry__store_dial("127.0.0.1", fc.c.port, token, 10);
    cr_assert(fd >= 0, "%s", ferry_last_error());
    ferry__store_writer w = {0};
    for (int i = 0; i < FLOOD_GETS; i++) { /* 1 GiB of replies, never read */
        size_t at = w.len;
        ferry__store_wr_u32(&w, 0);
        ferry__store_wr_u8(&w, FERRY__STORE_OP_GET);
        ferry__store_wr_u64(&w, 1000);
        ferry__store_wr_blob(&w, "flood/big", 9);
        ferry__store_put_be32(w.p + at, (uint32_t)(w.len - at - 4));
    }
    cr_assert_eq(send(fd, w.p, w.len, MSG_NOSIGNAL), (ssize_t)w.len);
    ferry__free(w.p);
    /* Wait until the server ran some of them (then it paused that connection), then let rank 1
       join while the flood sits there. */
    uint64_t requests = 0;
    double end = ferry__now_s() + 10;
    while (store_stats(st, &requests) && requests < 4 && ferry__now_s() < end)
        ferry__sleep_us(5000);
    pid_t p1 = fault_fork(flood_rank, 1, &fc);
    long growth = -1;
    cr_assert_eq(read(fc.report[0], &growth, sizeof growth), (ssize_t)sizeof growth);
    cr_assert(store_stats(st, &requests));
    int rc1 = fault_reap(p1, 40);
    close(fd);
    ferry__store_close(st);
    int rc0 = fault_reap(p0, 20);
    cr_assert_eq(rc0, 0, "rank 0 exited with %d", rc0);
    cr_assert_eq(rc1, 0, "rank 1 exited with %d", rc1);
    fprintf(stderr, "rank 0 grew by %ld KiB while %d unread gets waited; %llu requests run\n",
            growth, FLOOD_GETS, (unsigned long long)requests);
    cr_assert(requests < 200, "the server ran %llu requests", (unsigned long long)requests);
    cr_assert(growth < 128 * 1024, "rank 0 grew by %ld KiB", growth);
}
