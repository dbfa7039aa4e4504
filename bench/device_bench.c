/* Device-to-device tensor echo over ferry RPC: a tensor on the client's cuda:0 goes to the
   server's device through the device map, the server returns it, and it lands back on cuda:0.
   One row per size (1, 16, 256 MiB) and transfer path (FERRY_DEVICE_PATH staged, direct, and
   channel: the first usable side channel, NCCL on GPUs or the emulated peer-to-peer one), in
   GB/s counting both directions (2 x bytes / round trip). Beside them, measured in the same run
   between the same two ranks: raw ncclSend/ncclRecv echo, as nccl-tests counts it (bytes / time),
   on real GPUs. With the emulation (FERRY_EMULATE_DEVICES) it runs the ferry rows and says the
   NCCL anchor needs GPUs; with no devices at all it says so and succeeds.

   `device_bench hooks [transport]` measures the side channel itself, through its hooks (pick,
   next_seq, send, recv) without the wire: the client sends a device tensor on the channel, the
   server receives it and sends it back, beside a CPU tensor of the same size echoed in ferry
   messages in the same run.

   Usage: device_bench [hooks] [transport] (shm by default). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "ferry/ferry.h"
#include "rpc/device_channel.h"

#if defined(FERRY_WITH_CUDA) && defined(FERRY_HAVE_NCCL)
#include "rpc/device_nccl.h"
#define HAVE_NCCL_ANCHOR 1
#endif

#define N_SIZES 3
static const size_t sizes[N_SIZES] = {1u << 20, 16u << 20, 256u << 20};
static const int iters[N_SIZES] = {20, 10, 3};

#define N_PATHS 3
static const char *paths[N_PATHS] = {"staged", "direct", "channel"};

typedef struct {
    double gbps[N_SIZES]; /* 0: the row did not run */
    char why[256];        /* why the first row that failed failed */
} figures;

static ferry_status echo(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                         void *user)
{
    *result = ferry_value_retain(ferry_list_get(args, 0));
    return FERRY_OK;
}

static int server_device(void)
{
    return ferry_cuda_device_count() >= 2 ? 1 : 0;
}

static int join(const char *transport, int port, int rank)
{
    bench_join_env(transport, port, rank);
    ferry_register_function("echo", echo, NULL);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    ferry_device mine = FERRY_DEVICE_CUDA(rank ? server_device() : 0);
    ferry_device theirs = FERRY_DEVICE_CUDA(rank ? 0 : server_device());
    if (ferry_rpc_options_set_device_map(&o, rank ? "client" : "server", mine, theirs) !=
        FERRY_OK) {
        fprintf(stderr, "device_bench: device map: %s\n", ferry_last_error());
        return -1;
    }
    if (ferry_init_rpc(rank ? "server" : "client", -1, 0, &o) != FERRY_OK) {
        fprintf(stderr, "device_bench: init failed: %s\n", ferry_last_error());
        return -1;
    }
    return 0;
}

/* Client: the echo rows; stops at the first failure, keeping its message. */
static void measure(figures *f)
{
    for (int i = 0; i < N_SIZES; i++) {
        int64_t n = (int64_t)sizes[i];
        ferry_tensor *t = ferry_tensor_empty(1, &n, FERRY_UINT8, FERRY_DEVICE_CUDA(0));
        ferry_value *args = t ? ferry_args(1, ferry_tensor_value(t)) : NULL;
        ferry_tensor_release(t);
        if (!args) {
            snprintf(f->why, sizeof f->why, "%s", ferry_last_error());
            return;
        }
        double t0 = 0;
        for (int k = 0; k <= iters[i]; k++) {
            if (k == 1)
                t0 = now_s(); /* the first round trip warms up (pools, communicators) */
            ferry_value *v = ferry_rpc_sync("server", "echo", args, NULL, 120);
            if (!v) {
                snprintf(f->why, sizeof f->why, "%s", ferry_last_error());
                ferry_value_release(args);
                return;
            }
            ferry_value_release(v);
        }
        double rt = (now_s() - t0) / iters[i];
        f->gbps[i] = 2.0 * (double)sizes[i] / rt / 1e9;
        ferry_value_release(args);
    }
}

/* Two forked workers with FERRY_DEVICE_PATH = path; the client's figures come through a pipe. */
static int run_ferry(const char *transport, const char *path, figures *out)
{
    int port = free_port(), fds[2];
    if (pipe(fds))
        return -1;
    setenv("FERRY_DEVICE_PATH", strcmp(path, "channel") == 0 ? "auto" : path, 1);
    if (!getenv("FERRY_AUTH_TOKEN"))
        setenv("FERRY_AUTH_TOKEN", "ferry-device-bench-token", 1);
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            close(fds[0]);
            if (join(transport, port, r) != 0)
                _exit(1);
            if (r == 0) {
                figures f;
                memset(&f, 0, sizeof f);
                measure(&f);
                if (write(fds[1], &f, sizeof f) != sizeof f)
                    _exit(1);
            }
            _exit(ferry_shutdown(true, 0) == FERRY_OK ? 0 : 1);
        }
    }
    close(fds[1]);
    ssize_t got = read(fds[0], out, sizeof *out);
    close(fds[0]);
    for (int r = 0; r < 2; r++) {
        int st;
        waitpid(pids[r], &st, 0);
    }
    return got == (ssize_t)sizeof *out ? 0 : -1;
}

#ifdef HAVE_NCCL_ANCHOR
/* One rank of the raw NCCL echo: rank 0 makes the id and hands it over the pipe. */
static int nccl_rank(int rank, int id_fds[2], figures *f)
{
    const ferry__nccl_lib *lib = ferry__nccl_lib_get();
    if (!lib) {
        snprintf(f->why, sizeof f->why, "%s", ferry__nccl_lib_why());
        return -1;
    }
    int device = rank ? server_device() : 0;
    ncclUniqueId id;
    if (rank == 0) {
        ncclResult_t r = lib->get_unique_id(&id);
        if (r != ncclSuccess || write(id_fds[1], &id, sizeof id) != sizeof id) {
            snprintf(f->why, sizeof f->why, "ncclGetUniqueId: %s", lib->error_string(r));
            return -1;
        }
    } else if (read(id_fds[0], &id, sizeof id) != sizeof id) {
        return -1;
    }
    cudaSetDevice(device);
    ncclComm_t comm;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 1;
    ncclResult_t r = lib->comm_init_rank_config(&comm, 2, id, rank, &config);
    if (r != ncclSuccess) {
        snprintf(f->why, sizeof f->why, "ncclCommInitRankConfig: %s", lib->error_string(r));
        return -1;
    }
    cudaStream_t s;
    cudaStreamCreate(&s);
    for (int i = 0; i < N_SIZES; i++) {
        void *buf = NULL;
        if (cudaMalloc(&buf, sizes[i]) != cudaSuccess) {
            snprintf(f->why, sizeof f->why, "cudaMalloc of %zu bytes failed", sizes[i]);
            break;
        }
        double t0 = 0;
        for (int k = 0; k <= iters[i]; k++) {
            if (k == 1) {
                cudaStreamSynchronize(s);
                t0 = now_s();
            }
            if (rank == 0) {
                lib->send(buf, sizes[i], ncclUint8, 1, comm, s);
                lib->recv(buf, sizes[i], ncclUint8, 1, comm, s);
            } else {
                lib->recv(buf, sizes[i], ncclUint8, 0, comm, s);
                lib->send(buf, sizes[i], ncclUint8, 0, comm, s);
            }
        }
        cudaStreamSynchronize(s);
        double rt = (now_s() - t0) / iters[i];
        f->gbps[i] = 2.0 * (double)sizes[i] / rt / 1e9;
        cudaFree(buf);
    }
    cudaStreamDestroy(s);
    lib->comm_abort(comm);
    return 0;
}

static int run_nccl(figures *out)
{
    int id_fds[2], res_fds[2];
    if (pipe(id_fds) || pipe(res_fds))
        return -1;
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            figures f;
            memset(&f, 0, sizeof f);
            int rc = nccl_rank(r, id_fds, &f);
            if (r == 0 && write(res_fds[1], &f, sizeof f) != sizeof f)
                _exit(1);
            _exit(rc == 0 ? 0 : 1);
        }
    }
    close(res_fds[1]);
    ssize_t got = read(res_fds[0], out, sizeof *out);
    close(res_fds[0]);
    close(id_fds[0]);
    close(id_fds[1]);
    for (int r = 0; r < 2; r++) {
        int st;
        waitpid(pids[r], &st, 0);
    }
    return got == (ssize_t)sizeof *out ? 0 : -1;
}
#endif

/* ---- hooks mode ---- */

/* One echo on the channel: the client sends under its next seq and receives the server's
   answer under the server's; the server the other way round. */
static ferry_status channel_echo(ferry__agent *a, const ferry__device_channel *ch, int peer,
                                 ferry_tensor *t, bool first_send)
{
    void *data = ferry_tensor_data(t);
    size_t nb = ferry_tensor_nbytes(t);
    int device = ferry_tensor_device(t).index;
    static uint64_t recv_seq; /* this process's count of what the peer sent */
    ferry_status rc = FERRY_OK;
    if (first_send)
        rc = ch->send(a, peer, ch->next_seq(a, peer), t, data, nb);
    if (rc == FERRY_OK)
        rc = ch->recv(a, peer, recv_seq++, data, nb, device, 60);
    if (rc == FERRY_OK && !first_send)
        rc = ch->send(a, peer, ch->next_seq(a, peer), t, data, nb);
    return rc;
}

/* Both ranks: the channel rows (client: timed into f->gbps); the client also the CPU echo in
   messages (into cpu->gbps). */
static void hooks_rank(int rank, figures *f, figures *cpu)
{
    ferry__agent *a = ferry__agent_get();
    int peer = 1 - rank;
    ferry_device local = FERRY_DEVICE_CUDA(rank ? server_device() : 0);
    ferry_device remote = FERRY_DEVICE_CUDA(rank ? 0 : server_device());
    const ferry__device_channel *ch = a ? ferry__device_channel_pick(a, peer, local, remote) : NULL;
    if (!ch) {
        snprintf(f->why, sizeof f->why, "no side channel from %s here: %s",
                 rank ? "server" : "client",
                 ferry_last_status() ? ferry_last_error() : "none is usable");
        ferry__agent_release(a);
        return;
    }
    snprintf(f->why, sizeof f->why, "%s", ch->name);
    for (int i = 0; i < N_SIZES; i++) {
        int64_t n = (int64_t)sizes[i];
        ferry_tensor *t = ferry_tensor_empty(1, &n, FERRY_UINT8, local);
        double t0 = 0;
        for (int k = 0; t && k <= iters[i]; k++) {
            if (k == 1)
                t0 = now_s();
            if (channel_echo(a, ch, peer, t, rank == 0) != FERRY_OK) {
                snprintf(f->why, sizeof f->why, "%s: %s", ch->name, ferry_last_error());
                ferry_tensor_release(t);
                ferry__agent_release(a);
                return;
            }
        }
        if (t)
            f->gbps[i] = 2.0 * (double)sizes[i] / ((now_s() - t0) / iters[i]) / 1e9;
        ferry_tensor_release(t);
        if (rank == 0) {
            ferry_tensor *c = ferry_tensor_empty(1, &n, FERRY_UINT8, FERRY_DEVICE_CPU);
            ferry_value *args = c ? ferry_args(1, ferry_tensor_value(c)) : NULL;
            ferry_tensor_release(c);
            for (int k = 0; args && k <= iters[i]; k++) {
                if (k == 1)
                    t0 = now_s();
                ferry_value_release(ferry_rpc_sync("server", "echo", args, NULL, 120));
            }
            if (args)
                cpu->gbps[i] = 2.0 * (double)sizes[i] / ((now_s() - t0) / iters[i]) / 1e9;
            ferry_value_release(args);
        }
    }
    ferry__agent_release(a);
}

static int run_hooks(const char *transport)
{
    int port = free_port(), fds[2];
    if (ferry_cuda_device_count() == 0 || pipe(fds)) {
        printf("device_bench hooks: no devices here; set FERRY_EMULATE_DEVICES=2\n");
        return 0;
    }
    if (!getenv("FERRY_AUTH_TOKEN"))
        setenv("FERRY_AUTH_TOKEN", "ferry-device-bench-token", 1);
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            close(fds[0]);
            if (join(transport, port, r) != 0)
                _exit(1);
            figures f[2];
            memset(f, 0, sizeof f);
            hooks_rank(r, &f[0], &f[1]);
            if (r == 0 && write(fds[1], f, sizeof f) != sizeof f)
                _exit(1);
            _exit(ferry_shutdown(true, 0) == FERRY_OK ? 0 : 1);
        }
    }
    close(fds[1]);
    figures f[2];
    ssize_t got = read(fds[0], f, sizeof f);
    close(fds[0]);
    for (int r = 0; r < 2; r++) {
        int st;
        waitpid(pids[r], &st, 0);
    }
    if (got != (ssize_t)sizeof f) {
        printf("device_bench hooks: the workers failed\n");
        return 1;
    }
    printf("device_bench hooks: client cuda:0 <-> server cuda:%d on the %s channel (%s devices, "
           "%s), echo GB/s = 2 x bytes / round trip; anchor: a CPU tensor echoed in ferry "
           "messages in the same run\n", server_device(), f[0].why, ferry_device_backend(),
           transport);
    printf("%-8s %12s %12s %8s\n", "size", "channel GB/s", "cpu msg GB/s", "ratio");
    for (int i = 0; i < N_SIZES; i++)
        if (f[0].gbps[i] > 0 && f[1].gbps[i] > 0)
            printf("%4zu MiB %12.2f %12.2f %8.2f\n", sizes[i] >> 20, f[0].gbps[i], f[1].gbps[i],
                   f[0].gbps[i] / f[1].gbps[i]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "hooks") == 0)
        return run_hooks(argc >= 3 ? argv[2] : "shm");
    const char *transport = argc >= 2 ? argv[1] : "shm";
    const char *backend = ferry_device_backend();
    if (ferry_cuda_device_count() == 0) {
        printf("device_bench: no devices here (no GPU, or ferry built without CUDA); set "
               "FERRY_EMULATE_DEVICES=2 to run the ferry rows on emulated devices\n");
        return 0;
    }
    figures anchor;
    memset(&anchor, 0, sizeof anchor);
    bool real = strcmp(backend, "cuda") == 0;
#ifdef HAVE_NCCL_ANCHOR
    if (real && run_nccl(&anchor) != 0 && !anchor.why[0])
        snprintf(anchor.why, sizeof anchor.why, "the NCCL ranks failed");
#else
    snprintf(anchor.why, sizeof anchor.why, "ferry was built without NCCL");
#endif
    if (!real)
        snprintf(anchor.why, sizeof anchor.why, "the NCCL anchor needs GPUs (devices are %s)",
                 backend);
    printf("device_bench: client cuda:0 -> server cuda:%d (%s devices, %s), echo GB/s = 2 x "
           "bytes / round trip; raw NCCL echo measured in the same run\n",
           server_device(), backend, transport);
    printf("%-8s %-8s %12s %12s %8s\n", "path", "size", "ferry GB/s", "nccl GB/s", "ratio");
    int status = 0;
    for (int p = 0; p < N_PATHS; p++) {
        figures f;
        memset(&f, 0, sizeof f);
        if (run_ferry(transport, paths[p], &f) != 0) {
            printf("%-8s the workers failed\n", paths[p]);
            status = 1;
            continue;
        }
        for (int i = 0; i < N_SIZES; i++) {
            char ferry_col[16] = "-", anchor_col[16] = "-", ratio[16] = "-";
            if (f.gbps[i] > 0)
                snprintf(ferry_col, sizeof ferry_col, "%.2f", f.gbps[i]);
            if (anchor.gbps[i] > 0)
                snprintf(anchor_col, sizeof anchor_col, "%.2f", anchor.gbps[i]);
            if (f.gbps[i] > 0 && anchor.gbps[i] > 0)
                snprintf(ratio, sizeof ratio, "%.2f", f.gbps[i] / anchor.gbps[i]);
            printf("%-8s %4zu MiB %12s %12s %8s\n", paths[p], sizes[i] >> 20, ferry_col,
                   anchor_col, ratio);
        }
        if (f.why[0])
            printf("%-8s did not run: %s\n", paths[p], f.why);
    }
    if (anchor.why[0])
        printf("nccl     %s\n", anchor.why);
    return status;
}
