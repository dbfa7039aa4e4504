/* make bench: RPC latency and bandwidth beside the fabric's own limit. For each transport (tcp,
   shm) it runs fi_pingpong for the same provider and sizes, then two ferry workers on loopback,
   and prints each ferry figure beside an anchor from the same run with the ratio: fi_pingpong's
   figure, or for the tail row the median of the same calls and for the RRef row ferry's own
   rpc_sync. The machines are shared and noisy, so compare ratios, not absolute numbers across
   runs.

   `ferry_bench tiny N [tcp|shm] [user]` runs only the tiny rpc_sync round trip (of an ordinary
   function with `user`), N calls after a fixed warm-up, and prints "client PID" and "server
   PID" on stdout and each process's context switches on stderr: bench/callgrind_tiny.sh runs
   it under callgrind twice with different N to get instructions per call for each process.

   `ferry_bench calls [tcp|shm]` runs only the tiny round trip and the rpc_async rate and prints
   them as "key value" lines (with the number of calls kept in flight), for scripts that put
   ferry beside other libraries (bench/mercury_compare.sh). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/ferry.h"
#include "bench/bench_util.h"

#define N_SIZES 4
#define ASYNC_WINDOW 128 /* rpc_async calls kept in flight */
#define ASYNC_CALLS 50000
static const size_t echo_bytes[N_SIZES] = {4096, 65536, 1 << 20, 16 << 20};

typedef struct {
    double rt_us;          /* tiny rpc_sync round trip (a non-blocking function: runs where read) */
    double p50_us, p99_us; /* median and 99th percentile of those calls */
    double user_rt_us;     /* the same with an ordinary function (the pool runs it) */
    double remote_us;      /* remote() + to_here() + release of a tiny value */
    double async_per_s;    /* rpc_async throughput */
    double echo_mbps[N_SIZES];
} ferry_figures;

typedef struct {
    double rt_us, mbps;
} fi_figure;

/* Runs fi_pingpong server and client for one provider and size; parses usec/xfer (one way)
   and MB/sec (both directions counted). */
static fi_figure run_pingpong(const char *prov, size_t bytes, int iters)
{
    fi_figure f = {0, 0};
    int port = free_port();
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "(timeout 60 fi_pingpong -p '%s' -e rdm -I %d -S %zu -B %d >/dev/null 2>&1 &) ; "
             "sleep 0.3; timeout 60 fi_pingpong -p '%s' -e rdm -I %d -S %zu -P %d 127.0.0.1 2>/dev/null",
             prov, iters, bytes, port, prov, iters, bytes, port);
    FILE *p = popen(cmd, "r");
    if (!p)
        return f;
    char line[512];
    while (fgets(line, sizeof line, p)) {
        char b[32], sent[32], ack[32], total[32], time_s[32];
        double mbps, usec;
        if (sscanf(line, "%31s %31s %31s %31s %31s %lf %lf", b, sent, ack, total, time_s, &mbps,
                   &usec) == 7) {
            f.rt_us = 2 * usec;
            f.mbps = mbps;
        }
    }
    pclose(p);
    return f;
}

static ferry_status noop(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                         void *user)
{
    *result = NULL;
    return FERRY_OK;
}

static ferry_status echo(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                         void *user)
{
    *result = ferry_value_retain(ferry_list_get(args, 0));
    return FERRY_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int join(const char *transport, int port, int rank)
{
    bench_join_env(transport, port, rank);
    ferry_register_nonblocking_function("noop", noop, NULL);
    ferry_register_nonblocking_function("echo", echo, NULL);
    ferry_register_function("user_noop", noop, NULL);
    if (ferry_init_rpc(rank ? "server" : "client", -1, 0, NULL) != FERRY_OK) {
        fprintf(stderr, "init failed: %s\n", ferry_last_error());
        return -1;
    }
    return 0;
}

/* Mean round trip of `iters` calls of fn after a tenth as many unmeasured; with p50/p99 also
   the median and 99th percentile of the single calls. */
static double measure_rt_us(const char *fn, int iters, double *p50, double *p99)
{
    ferry_value *args = ferry_list_of(0);
    double *lat = p50 ? calloc((size_t)iters, sizeof *lat) : NULL;
    for (int i = 0; i < iters / 10; i++)
        ferry_value_release(ferry_rpc_sync("server", fn, args, NULL, FERRY_TIMEOUT_DEFAULT));
    double t0 = now_s(), t = t0;
    for (int i = 0; i < iters; i++) {
        ferry_value_release(ferry_rpc_sync("server", fn, args, NULL, FERRY_TIMEOUT_DEFAULT));
        if (lat) {
            double t1 = now_s();
            lat[i] = (t1 - t) * 1e6;
            t = t1;
        }
    }
    double dt = now_s() - t0;
    if (lat) {
        qsort(lat, (size_t)iters, sizeof *lat, cmp_double);
        *p50 = lat[iters / 2];
        *p99 = lat[iters * 99 / 100];
        free(lat);
    }
    ferry_value_release(args);
    return dt / iters * 1e6;
}

/* remote() to the server, to_here() of its (tiny) result, release: the RRef round trip. */
static double measure_remote_us(int iters)
{
    ferry_value *args = ferry_list_of(0);
    double t0 = 0;
    for (int i = -iters / 10; i < iters; i++) {
        if (i == 0)
            t0 = now_s();
        ferry_rref *r = ferry_remote("server", "noop", args, NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(ferry_rref_to_here(r, FERRY_TIMEOUT_DEFAULT));
        ferry_rref_release(r);
    }
    double dt = now_s() - t0;
    ferry_value_release(args);
    return dt / iters * 1e6;
}

static double measure_async(int calls, int window)
{
    ferry_value *args = ferry_list_of(0);
    ferry_future **ring = calloc((size_t)window, sizeof *ring);
    double t0 = now_s();
    for (int i = 0; i < calls; i++) {
        ferry_future **slot = &ring[i % window];
        if (*slot) {
            ferry_future_wait(*slot, 0);
            ferry_future_release(*slot);
        }
        *slot = ferry_rpc_async("server", "noop", args, NULL, FERRY_TIMEOUT_DEFAULT);
    }
    for (int i = 0; i < window; i++) {
        if (ring[i]) {
            ferry_future_wait(ring[i], 0);
            ferry_future_release(ring[i]);
        }
    }
    double dt = now_s() - t0;
    free(ring);
    ferry_value_release(args);
    return calls / dt;
}

static double measure_echo_mbps(size_t bytes)
{
    int64_t n = (int64_t)(bytes / 4);
    ferry_tensor *t = ferry_ones(1, &n, FERRY_FLOAT32);
    ferry_value *args = ferry_args(1, ferry_tensor_value(t));
    int iters = (int)(256.0 * 1024 * 1024 / bytes);
    if (iters < 20)
        iters = 20;
    if (iters > 2000)
        iters = 2000;
    ferry_value_release(ferry_rpc_sync("server", "echo", args, NULL, FERRY_TIMEOUT_DEFAULT));
    double t0 = now_s();
    for (int i = 0; i < iters; i++)
        ferry_value_release(ferry_rpc_sync("server", "echo", args, NULL, FERRY_TIMEOUT_DEFAULT));
    double dt = now_s() - t0;
    ferry_value_release(args);
    ferry_tensor_release(t);
    return 2.0 * bytes * iters / dt / 1e6; /* both directions, as fi_pingpong counts */
}

/* The tiny mode: a fixed warm-up (so two runs differ only in the measured calls), then n calls
   of fn. Each process prints its context switches (all threads) on stderr as it ends. */
static int run_tiny(const char *transport, int n, const char *fn)
{
    int port = free_port();
    if (!getenv("FERRY_AUTH_TOKEN")) /* both ranks fork from here and share it */
        setenv("FERRY_AUTH_TOKEN", "ferry-bench-token", 1);
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            if (join(transport, port, r) != 0)
                _exit(1);
            int ok = 1;
            if (r == 0) {
                ferry_value *args = ferry_list_of(0);
                for (int i = 0; i < 200 + n && ok; i++) {
                    ferry_value *v = ferry_rpc_sync("server", fn, args, NULL,
                                                    FERRY_TIMEOUT_DEFAULT);
                    ok = v != NULL;
                    ferry_value_release(v);
                }
                ferry_value_release(args);
            }
            ok = ferry_shutdown(true, 0) == FERRY_OK && ok;
            struct rusage ru;
            getrusage(RUSAGE_SELF, &ru);
            fprintf(stderr, "%s switches: %ld voluntary, %ld involuntary\n",
                    r ? "server" : "client", ru.ru_nvcsw, ru.ru_nivcsw);
            _exit(ok ? 0 : 1);
        }
    }
    printf("client %d\nserver %d\n", (int)pids[0], (int)pids[1]);
    int ok = 1;
    for (int r = 0; r < 2; r++) {
        int st;
        waitpid(pids[r], &st, 0);
        ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return ok ? 0 : 1;
}

/* Two forked workers; the client writes its figures into a pipe. With calls_only it measures
   the tiny round trip and the async rate alone. */
static int run_ferry(const char *transport, bool calls_only, ferry_figures *out)
{
    int port = free_port(), fds[2];
    if (pipe(fds))
        return -1;
    if (!getenv("FERRY_AUTH_TOKEN")) /* both ranks fork from here and share it */
        setenv("FERRY_AUTH_TOKEN", "ferry-bench-token", 1);
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            close(fds[0]);
            if (join(transport, port, r) != 0)
                _exit(1);
            if (r == 0) {
                ferry_figures f = {0};
                f.rt_us = measure_rt_us("noop", 10000, &f.p50_us, &f.p99_us);
                f.user_rt_us = measure_rt_us("user_noop", 10000, NULL, NULL);
                if (!calls_only)
                    f.remote_us = measure_remote_us(2000);
                f.async_per_s = measure_async(ASYNC_CALLS, ASYNC_WINDOW);
                for (int i = 0; i < N_SIZES && !calls_only; i++)
                    f.echo_mbps[i] = measure_echo_mbps(echo_bytes[i]);
                if (write(fds[1], &f, sizeof f) != sizeof f)
                    _exit(1);
            }
            _exit(ferry_shutdown(true, 0) == FERRY_OK ? 0 : 1);
        }
    }
    close(fds[1]);
    ssize_t got = read(fds[0], out, sizeof *out);
    close(fds[0]);
    int ok = got == (ssize_t)sizeof *out;
    for (int r = 0; r < 2; r++) {
        int st;
        waitpid(pids[r], &st, 0);
        ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return ok ? 0 : -1;
}

static void size_name(size_t b, char *buf, size_t cap)
{
    if (b >= 1 << 20)
        snprintf(buf, cap, "%zu MiB", b >> 20);
    else
        snprintf(buf, cap, "%zu KiB", b >> 10);
}

/* The calls mode: one line per figure, for scripts to read. */
static int run_calls(const char *transport)
{
    ferry_figures f;
    if (run_ferry(transport, true, &f) != 0) {
        fprintf(stderr, "ferry_bench: ferry run on %s failed\n", transport);
        return 1;
    }
    printf("transport %s\nrt_us %.3f\nuser_rt_us %.3f\np99_us %.3f\nasync_per_s %.0f\nasync_window %d\nasync_calls %d\n",
           transport, f.rt_us, f.user_rt_us, f.p99_us, f.async_per_s, ASYNC_WINDOW, ASYNC_CALLS);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "tiny") == 0)
        return run_tiny(argc >= 4 ? argv[3] : "shm", atoi(argv[2]),
                        argc >= 5 && strcmp(argv[4], "user") == 0 ? "user_noop" : "noop");
    if (argc >= 2 && strcmp(argv[1], "calls") == 0)
        return run_calls(argc >= 3 ? argv[2] : "shm");
    const char *transports[2] = {"tcp", "shm"};
    const char *providers[2] = {"tcp;ofi_rxm", "shm"};
    printf("ferry_bench: two workers on 127.0.0.1; fi_pingpong measured in the same run\n");
    printf("%-4s %-26s %16s %16s %8s\n", "net", "test", "ferry", "anchor", "ratio");
    int status = 0;
    for (int t = 0; t < 2; t++) {
        fi_figure tiny = run_pingpong(providers[t], 64, 10000);
        fi_figure big[N_SIZES];
        for (int i = 0; i < N_SIZES; i++)
            big[i] = run_pingpong(providers[t], echo_bytes[i], echo_bytes[i] >= (1 << 20) ? 200 : 2000);
        ferry_figures f;
        if (run_ferry(transports[t], false, &f) != 0) {
            printf("%-4s ferry run failed\n", transports[t]);
            status = 1;
            continue;
        }
        printf("%-4s %-26s %13.1f us %13.1f us %7.2fx  (round trip; lower is better)\n",
               transports[t], "rpc_sync tiny round trip", f.rt_us, tiny.rt_us,
               tiny.rt_us > 0 ? f.rt_us / tiny.rt_us : 0);
        printf("%-4s %-26s %13.1f us %13.1f us %7.2fx  (an ordinary function: on the pool)\n",
               transports[t], "rpc_sync tiny, user fn", f.user_rt_us, tiny.rt_us,
               tiny.rt_us > 0 ? f.user_rt_us / tiny.rt_us : 0);
        printf("%-4s %-26s %13.1f us %13.1f us %7.2fx  (p99 / median of the tiny calls)\n",
               transports[t], "rpc_sync tiny p99", f.p99_us, f.p50_us,
               f.p50_us > 0 ? f.p99_us / f.p50_us : 0);
        printf("%-4s %-26s %13.1f us %13.1f us %7.2fx  (remote + to_here + release / rpc_sync)\n",
               transports[t], "remote + to_here tiny", f.remote_us, f.rt_us,
               f.rt_us > 0 ? f.remote_us / f.rt_us : 0);
        char async_label[64];
        snprintf(async_label, sizeof async_label, "rpc_async %d in flight", ASYNC_WINDOW);
        printf("%-4s %-26s %11.0f /s %16s %8s\n", transports[t], async_label, f.async_per_s,
               "-", "-");
        for (int i = 0; i < N_SIZES; i++) {
            char label[64], sz[32];
            size_name(echo_bytes[i], sz, sizeof sz);
            snprintf(label, sizeof label, "tensor echo %s", sz);
            printf("%-4s %-26s %11.0f MB/s %11.0f MB/s %7.2fx  (bandwidth; higher is better)\n",
                   transports[t], label, f.echo_mbps[i], big[i].mbps,
                   big[i].mbps > 0 ? f.echo_mbps[i] / big[i].mbps : 0);
        }
    }
    return status;
}
