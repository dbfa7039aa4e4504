/* Shared test helpers: free ports and forked ranks reaped by pid against a deadline. */
#include "test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define RANK_LEAK_CHECK() __lsan_do_recoverable_leak_check()
#else
#define RANK_LEAK_CHECK() 0
#endif

/* The kernel's ephemeral ports start here (net.ipv4.ip_local_port_range); ports below it are
   never handed out to a socket that binds port 0. */
static int ephemeral_low(void)
{
    int low = 32768, high = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &low, &high) != 2)
            low = 32768;
        fclose(f);
    }
    return low;
}

static bool port_is_free(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* A free port below the ephemeral range: the fabric's own sockets bind ephemeral ports while a
   rank starts, and one of them could take a port chosen from that range before rank 0's store
   listens on it. */
int ferry_test_free_port(void)
{
    int low = ephemeral_low(), span = low > 20000 ? low - 20000 : 0;
    unsigned seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int i = 0; span > 0 && i < 200; i++) {
        int port = 20000 + (int)(rand_r(&seed) % (unsigned)span);
        if (port_is_free(port))
            return port;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void ferry_test_run_ranks(int n, ferry_test_rank_fn fn, void *arg, double deadline_s)
{
    pid_t pids[256];
    int status[256];
    bool done[256] = {0};
    cr_assert(n > 0 && n <= 256);
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < n; r++) {
        pids[r] = fork();
        cr_assert(pids[r] >= 0, "fork failed");
        if (pids[r] == 0) {
            int rc = fn(r, n, arg);
            /* Ranks leave with _exit (no atexit handlers of the test runner), so under ASan
               they check for leaks themselves; a leak fails the rank. */
            if (RANK_LEAK_CHECK() && rc == 0)
                rc = 99;
            fflush(stdout);
            fflush(stderr);
            _exit(rc);
        }
    }
    double end = now_s() + deadline_s;
    int left = n;
    while (left > 0 && now_s() < end) {
        for (int r = 0; r < n; r++) {
            if (done[r])
                continue;
            pid_t p = waitpid(pids[r], &status[r], WNOHANG);
            if (p == pids[r]) {
                done[r] = true;
                left--;
            }
        }
        if (left > 0)
            usleep(2000);
    }
    for (int r = 0; r < n; r++) {
        if (!done[r]) {
            kill(pids[r], SIGKILL);
            waitpid(pids[r], &status[r], 0);
        }
    }
    for (int r = 0; r < n; r++) {
        cr_assert(done[r], "rank %d did not finish within %.0f s", r, deadline_s);
        cr_assert(WIFEXITED(status[r]), "rank %d died from signal %d", r,
                  WIFSIGNALED(status[r]) ? WTERMSIG(status[r]) : 0);
        cr_assert(WEXITSTATUS(status[r]) == 0, "rank %d exited with %d", r,
                  WEXITSTATUS(status[r]));
    }
}

void ferry_test_mkdtemp(char *buf, size_t cap, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(buf, cap, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    cr_assert(n > 0 && (size_t)n < cap, "temporary directory name too long for %zu bytes", cap);
    cr_assert(mkdtemp(buf) != NULL, "mkdtemp %s: %s", buf, strerror(errno));
}

unsigned char *ferry_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "cannot open %s", path);
    cr_assert(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    cr_assert(n >= 0 && fseek(f, 0, SEEK_SET) == 0);
    unsigned char *buf = malloc((size_t)n + 1);
    cr_assert(buf != NULL);
    cr_assert(fread(buf, 1, (size_t)n, f) == (size_t)n, "short read of %s", path);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

void ferry_test_emulate_devices(int n)
{
    char buf[16];
    snprintf(buf, sizeof buf, "%d", n);
    setenv("FERRY_EMULATE_DEVICES", buf, 1);
    cr_assert_eq(ferry_cuda_device_count(), n, "the device layer was chosen before the test set "
                 "FERRY_EMULATE_DEVICES (backend %s)", ferry_device_backend());
}

bool ferry_test_on_device(const ferry_tensor *t, ferry_device d)
{
    ferry_device g = ferry_tensor_device(t);
    return g.type == d.type && (g.type == FERRY_CPU || g.index == d.index);
}
