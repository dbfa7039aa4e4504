/* Soak: resident memory of a caller and a callee over many calls, to show that nothing grows
   with the number of calls. For each transport (tcp, shm) two forked workers run N tiny
   rpc_sync calls, then M calls echoing a 64 KiB tensor; the caller prints its own resident
   set and the callee's (asked over RPC) at the start of each run (after a warm-up), half way
   and at the end.

   usage: soak [N_TINY (default 1000000)] [N_TENSOR (default 100000)] [tcp|shm|both] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ferry/ferry.h"
#include "bench/bench_util.h"

#define TENSOR_BYTES (64 << 10)

/* Resident set of this process in MiB (/proc/self/statm counts pages). */
static double rss_mib(void)
{
    long pages_total = 0, pages_resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2)
        pages_resident = -1;
    fclose(f);
    return pages_resident < 0 ? -1 : pages_resident * (double)sysconf(_SC_PAGESIZE) / (1 << 20);
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

static ferry_status rss(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                        void *user)
{
    *result = ferry_double(rss_mib());
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

static int join(const char *transport, int port, int rank)
{
    bench_join_env(transport, port, rank);
    ferry_register_nonblocking_function("noop", noop, NULL);
    ferry_register_nonblocking_function("echo", echo, NULL);
    ferry_register_nonblocking_function("rss", rss, NULL);
    if (ferry_init_rpc(rank ? "callee" : "caller", -1, 0, NULL) != FERRY_OK) {
        fprintf(stderr, "soak: init failed: %s\n", ferry_last_error());
        return -1;
    }
    return 0;
}

static void report(const char *transport, const char *what, const char *phase, long done)
{
    ferry_value *v = ferry_rpc_sync("callee", "rss", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    printf("| %s | %s | %s (%ld calls) | %.1f | %.1f |\n", transport, what, phase, done, rss_mib(),
           v ? ferry_value_as_double(v) : -1.0);
    fflush(stdout);
    ferry_value_release(v);
}

/* n calls of fn(args), reporting at the start, half way and at the end. */
static int run_calls(const char *transport, const char *what, const char *fn, ferry_value *args,
                     long n)
{
    for (long i = 0; i < n / 100 + 10; i++) /* warm-up: pools and caches settle first */
        ferry_value_release(ferry_rpc_sync("callee", fn, args, NULL, FERRY_TIMEOUT_DEFAULT));
    report(transport, what, "start", 0);
    for (long i = 0; i < n; i++) {
        ferry_value *v = ferry_rpc_sync("callee", fn, args, NULL, FERRY_TIMEOUT_DEFAULT);
        if (!v) {
            fprintf(stderr, "soak: call %ld failed: %s\n", i, ferry_last_error());
            return 1;
        }
        ferry_value_release(v);
        if (i + 1 == n / 2)
            report(transport, what, "middle", i + 1);
    }
    report(transport, what, "end", n);
    return 0;
}

static int caller(const char *transport, long n_tiny, long n_tensor)
{
    ferry_value *none = ferry_list_of(0);
    int rc = run_calls(transport, "tiny rpc_sync", "noop", none, n_tiny);
    ferry_value_release(none);
    int64_t sizes[] = {TENSOR_BYTES / 4};
    ferry_tensor *t = ferry_ones(1, sizes, FERRY_FLOAT32);
    ferry_value *args = t ? ferry_args(1, ferry_tensor_value(t)) : NULL;
    ferry_tensor_release(t);
    if (rc == 0 && args)
        rc = run_calls(transport, "64 KiB tensor echo", "echo", args, n_tensor);
    ferry_value_release(args);
    return rc;
}

static int soak(const char *transport, long n_tiny, long n_tensor)
{
    int port = free_port();
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            if (join(transport, port, r) != 0)
                _exit(1);
            int rc = r == 0 ? caller(transport, n_tiny, n_tensor) : 0;
            _exit(ferry_shutdown(true, 0) == FERRY_OK && rc == 0 ? 0 : 1);
        }
    }
    int ok = 1;
    for (int r = 0; r < 2; r++) {
        int st;
        waitpid(pids[r], &st, 0);
        ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    long n_tiny = argc > 1 ? atol(argv[1]) : 1000000;
    long n_tensor = argc > 2 ? atol(argv[2]) : 100000;
    const char *which = argc > 3 ? argv[3] : "both";
    char token[64];
    snprintf(token, sizeof token, "soak-%d-%ld", (int)getpid(), (long)time(NULL));
    setenv("FERRY_AUTH_TOKEN", token, 0); /* every rank of a run shares it */
    printf("\nsoak: resident memory (MiB) of the caller and the callee\n\n");
    printf("| net | calls | when | caller RSS | callee RSS |\n|---|---|---|---|---|\n");
    fflush(stdout);
    int rc = 0;
    if (strcmp(which, "shm") != 0)
        rc |= soak("tcp", n_tiny, n_tensor);
    if (strcmp(which, "tcp") != 0)
        rc |= soak("shm", n_tiny, n_tensor);
    return rc;
}
