/* Side channels (rpc/device_channel.h) seen from two workers on emulated devices, through the
   channel's own hooks (pick, next_seq, send, recv, cancel), independent of the wire code that
   calls them: bytes land on the receiver's device, sends and recvs in any order, a cancelled
   seq, stream order at the send, a recv that times out (and the bytes that come after it), a
   piece of the wrong size, a peer that dies while recvs wait, FERRY_DEVICE_PATH, and the NCCL
   channel declining without GPUs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry/device.h"
#include "rpc/device_channel.h"
#include "rpc_harness.h"
#include "tensor/device.h"

#define NCCL_ID 1
#define N_FLOATS 4096

/* A float32 tensor of N_FLOATS on `dev` holding base, base + 1, ... */
static ferry_tensor *filled(ferry_device dev, double base)
{
    ferry_tensor *cpu = ferry_arange(base, base + N_FLOATS, 1, FERRY_FLOAT32);
    if (!cpu)
        return NULL;
    ferry_tensor *t = ferry_tensor_to(cpu, dev);
    ferry_tensor_release(cpu);
    return t;
}

/* True when the device tensor holds what filled(_, base) made. */
static bool holds(ferry_tensor *t, double base)
{
    ferry_tensor *cpu = ferry_tensor_to(t, FERRY_DEVICE_CPU);
    bool ok = cpu != NULL;
    for (int64_t i = 0; ok && i < N_FLOATS; i++)
        ok = ferry_tensor_item_at(cpu, i) == base + (double)i;
    ferry_tensor_release(cpu);
    return ok;
}

static ferry_tensor *empty_on(int index)
{
    int64_t n = N_FLOATS;
    return ferry_tensor_empty(1, &n, FERRY_FLOAT32, FERRY_DEVICE_CUDA(index));
}

static void pause_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Two emulated devices per worker whose queued operations are held back 2 ms (so a read that
   does not wait for its stream sees stale bytes), and the transfer path `path` (NULL: unset). */
static void emulate(const char *path)
{
    setenv("FERRY_EMULATE_DEVICES", "2", 1);
    setenv("FERRY_EMULATE_DEVICE_DELAY_US", "2000", 1);
    if (path)
        setenv("FERRY_DEVICE_PATH", path, 1);
    else
        unsetenv("FERRY_DEVICE_PATH");
}

/* worker0 sends cuda:0 -> cuda:1 under seqs 0..3: 1 before 0, 2 cancelled, 3 last; worker1
   asks for them in yet another order, and for the cancelled one, which times out. */
static int body_moves(int rank, int world, const rpc_case *c)
{
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    const ferry__device_channel *ch =
        ferry__device_channel_pick(a, 1 - rank, FERRY_DEVICE_CUDA(rank), FERRY_DEVICE_CUDA(1));
    RANK_CHECK(ch && strcmp(ch->name, "emulated-p2p") == 0 && ferry_last_status() == FERRY_OK);
    RANK_CHECK(ferry__device_channel_by_id(ch->id) == ch);
    if (rank == 0) {
        uint64_t seq[4];
        ferry_tensor *t[4];
        for (int i = 0; i < 4; i++) {
            seq[i] = ch->next_seq(a, 1);
            RANK_CHECK(seq[i] == (uint64_t)i);
            RANK_CHECK(t[i] = filled(FERRY_DEVICE_CUDA(0), 100.0 * i));
        }
        size_t nb = ferry_tensor_nbytes(t[0]);
        RANK_CHECK(ch->send(a, 1, 1, t[1], ferry_tensor_data(t[1]), nb) == FERRY_OK);
        pause_s(0.2); /* worker1 waits for seq 0 meanwhile */
        RANK_CHECK(ch->send(a, 1, 0, t[0], ferry_tensor_data(t[0]), nb) == FERRY_OK);
        ch->cancel(a, 1, 2);
        RANK_CHECK(ch->send(a, 1, 3, t[3], ferry_tensor_data(t[3]), nb) == FERRY_OK);
        for (int i = 0; i < 4; i++)
            ferry_tensor_release(t[i]);
    } else {
        ferry_tensor *t0 = empty_on(1), *t1 = empty_on(1), *t3 = empty_on(1), *t2 = empty_on(1);
        RANK_CHECK(t0 && t1 && t2 && t3);
        size_t nb = ferry_tensor_nbytes(t0);
        RANK_CHECK(ch->recv(a, 0, 0, ferry_tensor_data(t0), nb, 1, 20) == FERRY_OK);
        RANK_CHECK(ch->recv(a, 0, 3, ferry_tensor_data(t3), nb, 1, 20) == FERRY_OK);
        RANK_CHECK(ch->recv(a, 0, 1, ferry_tensor_data(t1), nb, 1, 20) == FERRY_OK);
        RANK_CHECK(holds(t0, 0) && holds(t1, 100) && holds(t3, 300));
        double t_start = rpc_test_now_s();
        RANK_CHECK(ch->recv(a, 0, 2, ferry_tensor_data(t2), nb, 1, 0.3) == FERRY_ETIMEDOUT);
        RANK_CHECK(rpc_test_now_s() - t_start >= 0.29);
        RANK_CHECK(strcmp(ferry_last_error(), "emulated-p2p: the bytes of seq 2 for cuda:1 from "
                                              "worker 'worker0' did not come within 0.3 s") == 0);
        ferry_tensor_release(t0);
        ferry_tensor_release(t1);
        ferry_tensor_release(t2);
        ferry_tensor_release(t3);
    }
    ferry__agent_release(a);
    return 0;
}

/* Stream order: worker0 queues a memset on its device's stream and sends at once, without
   waiting; what arrives is the memset's bytes, never the tensor's earlier values (each queued
   operation is held back 2 ms where the emulation can delay them). */
static int body_stream_order(int rank, int world, const rpc_case *c)
{
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    const ferry__device_channel *ch = ferry__device_channel_by_id(2);
    RANK_CHECK(ch);
    if (rank == 0) {
        ferry_tensor *t = filled(FERRY_DEVICE_CUDA(0), 1);
        RANK_CHECK(t);
        const ferry__device_ops *ops = ferry__device_ops_get();
        RANK_CHECK(ops && ops->memset(ferry__device_stream(0), ferry_tensor_data(t), 0x5a,
                                      ferry_tensor_nbytes(t)) == FERRY_OK);
        RANK_CHECK(ch->send(a, 1, ch->next_seq(a, 1), t, ferry_tensor_data(t),
                            ferry_tensor_nbytes(t)) == FERRY_OK);
        ferry_tensor_release(t);
    } else {
        ferry_tensor *t = empty_on(0);
        RANK_CHECK(t);
        RANK_CHECK(ch->recv(a, 0, 0, ferry_tensor_data(t), ferry_tensor_nbytes(t), 0, 20) ==
                   FERRY_OK);
        ferry_tensor *cpu = ferry_tensor_to(t, FERRY_DEVICE_CPU);
        RANK_CHECK(cpu);
        const unsigned char *b = ferry_tensor_data(cpu);
        size_t bad = 0;
        for (size_t i = 0; i < ferry_tensor_nbytes(cpu); i++)
            bad += b[i] != 0x5a;
        RANK_CHECK(bad == 0);
        ferry_tensor_release(cpu);
        ferry_tensor_release(t);
    }
    ferry__agent_release(a);
    return 0;
}

/* On worker0, when worker1 asks: seqs 0 and 1 toward worker1 (its first ones), from cuda:0. */
static ferry_status send_late(const ferry_value *args, const ferry_value *kwargs,
                              ferry_value **result, void *user)
{
    ferry__agent *a = ferry__agent_get();
    if (!a)
        return ferry_last_status();
    const ferry__device_channel *ch = ferry__device_channel_by_id(2);
    ferry_tensor *t = filled(FERRY_DEVICE_CUDA(0), 7);
    ferry_status rc = t ? FERRY_OK : ferry_last_status();
    for (uint64_t i = 0; rc == FERRY_OK && i < 2; i++) {
        uint64_t seq = ch->next_seq(a, 1);
        rc = seq == i ? ch->send(a, 1, seq, t, ferry_tensor_data(t), ferry_tensor_nbytes(t))
                      : ferry_set_error(FERRY_EINVAL, "seq %llu, not %llu",
                                        (unsigned long long)seq, (unsigned long long)i);
    }
    ferry_tensor_release(t);
    ferry__agent_release(a);
    *result = NULL;
    return rc;
}

/* Bytes that come after their receive gave up are dropped, not kept for a later receive of the
   same seq; a piece whose size is not what its receive expects is refused. */
static int body_late(int rank, int world, const rpc_case *c)
{
    if (rank == 0)
        return 0; /* serves send_late */
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    const ferry__device_channel *ch = ferry__device_channel_by_id(2);
    ferry_tensor *t = empty_on(1);
    RANK_CHECK(ch && t);
    size_t nb = ferry_tensor_nbytes(t);
    RANK_CHECK(ch->recv(a, 0, 0, ferry_tensor_data(t), nb, 1, 0.2) == FERRY_ETIMEDOUT);
    ferry_value *none = ferry_list_of(0);
    ferry_future *f = ferry_rpc_async("worker0", "send_late", none, NULL, 20);
    ferry_value_release(none);
    RANK_CHECK(f && ferry_future_wait(f, 0) == FERRY_OK);
    ferry_future_release(f);
    pause_s(0.5); /* both pieces are in by now */
    RANK_CHECK(ch->recv(a, 0, 0, ferry_tensor_data(t), nb, 1, 0.1) == FERRY_ETIMEDOUT);
    RANK_CHECK(ch->recv(a, 0, 1, ferry_tensor_data(t), nb / 2, 1, 5) == FERRY_EPROTO);
    char want[256];
    snprintf(want, sizeof want, "emulated-p2p: seq 1 from worker 'worker0' carried %zu bytes "
             "where its message declared %zu for cuda:1", nb, nb / 2);
    RANK_CHECK(strcmp(ferry_last_error(), want) == 0);
    ferry_tensor_release(t);
    ferry__agent_release(a);
    return 0;
}

/* worker0 dies while worker1 waits for two pieces with a long timeout: both fail soon with
   FERRY_ETRANSPORT naming it, and so does a later recv from it. */
static int body_peer_dies(int rank, int world, const rpc_case *c)
{
    if (rank == 0) {
        pause_s(0.5);
        _exit(0);
    }
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    const ferry__device_channel *ch = ferry__device_channel_by_id(2);
    RANK_CHECK(ch && strcmp(ch->name, "emulated-p2p") == 0);
    ferry_tensor *t = empty_on(0);
    RANK_CHECK(t);
    size_t nb = ferry_tensor_nbytes(t);
    double t_start = rpc_test_now_s();
    RANK_CHECK(ch->recv(a, 0, 0, ferry_tensor_data(t), nb, 0, 60) == FERRY_ETRANSPORT);
    RANK_CHECK(rpc_test_now_s() - t_start < 10);
    RANK_CHECK(strstr(ferry_last_error(), "emulated-p2p: receiving seq 0 for cuda:0 from worker "
                                          "'worker0' failed: "));
    RANK_CHECK(strstr(ferry_last_error(), "worker0") != NULL);
    RANK_CHECK(ch->recv(a, 0, 1, ferry_tensor_data(t), nb, 0, 60) == FERRY_ETRANSPORT);
    ferry_tensor_release(t);
    ferry__agent_release(a);
    RANK_CHECK(ferry_shutdown(true, 0) == FERRY_ETRANSPORT);
    return 0;
}

/* FERRY_DEVICE_PATH=staged: no channel, status OK. */
static int body_path_staged(int rank, int world, const rpc_case *c)
{
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    ferry_set_error(FERRY_EINVAL, "before");
    RANK_CHECK(!ferry__device_channel_pick(a, 1 - rank, FERRY_DEVICE_CUDA(0),
                                           FERRY_DEVICE_CUDA(1)));
    RANK_CHECK(ferry_last_status() == FERRY_OK);
    ferry__agent_release(a);
    return 0;
}

/* FERRY_DEVICE_PATH=p2p: the emulated channel where it can go, an error where it cannot (a
   device the peer lacks); a CPU side never takes a channel. */
static int body_path_p2p(int rank, int world, const rpc_case *c)
{
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    const ferry__device_channel *ch = NULL;
    RANK_CHECK(ferry__device_channel_choose(a, 1 - rank, FERRY_DEVICE_CUDA(0),
                                            FERRY_DEVICE_CUDA(1), &ch) == FERRY_OK);
    RANK_CHECK(ch && strcmp(ch->name, "emulated-p2p") == 0);
    RANK_CHECK(ferry__device_channel_choose(a, 1 - rank, FERRY_DEVICE_CPU, FERRY_DEVICE_CUDA(1),
                                            &ch) == FERRY_OK && !ch);
    RANK_CHECK(ferry__device_channel_choose(a, 1 - rank, FERRY_DEVICE_CUDA(1),
                                            FERRY_DEVICE_CUDA(5), &ch) == FERRY_ENOTSUP && !ch);
    char want[512];
    snprintf(want, sizeof want,
             "FERRY_DEVICE_PATH=p2p: the emulated-p2p channel cannot carry a tensor from cuda:1 "
             "on worker 'worker%d' to cuda:5 on worker 'worker%d' (it needs the device "
             "emulation (FERRY_EMULATE_DEVICES) on both workers, and the remote device among "
             "the peer's)", rank, 1 - rank);
    RANK_CHECK(strcmp(ferry_last_error(), want) == 0);
    RANK_CHECK(!ferry__device_channel_pick(a, 1 - rank, FERRY_DEVICE_CUDA(1),
                                           FERRY_DEVICE_CUDA(5)));
    RANK_CHECK(ferry_last_status() == FERRY_ENOTSUP);
    ferry__agent_release(a);
    return 0;
}

/* FERRY_DEVICE_PATH=nccl without GPUs: the NCCL channel declines (no crash), so the pick fails
   naming the path instead of taking the emulated channel. */
static int body_path_nccl(int rank, int world, const rpc_case *c)
{
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    const ferry__device_channel *nccl = ferry__device_channel_by_id(NCCL_ID);
#if defined(FERRY_WITH_CUDA) && defined(FERRY_HAVE_NCCL)
    RANK_CHECK(nccl && strcmp(nccl->name, "nccl") == 0);
#endif
    if (nccl)
        RANK_CHECK(!nccl->usable(a, 1 - rank, FERRY_DEVICE_CUDA(0), FERRY_DEVICE_CUDA(1)));
    const ferry__device_channel *ch = NULL;
    RANK_CHECK(ferry__device_channel_choose(a, 1 - rank, FERRY_DEVICE_CUDA(0),
                                            FERRY_DEVICE_CUDA(1), &ch) == FERRY_ENOTSUP && !ch);
    char want[256];
    snprintf(want, sizeof want,
             "FERRY_DEVICE_PATH=nccl: the nccl channel cannot carry a tensor from cuda:0 on "
             "worker 'worker%d' to cuda:1 on worker 'worker%d' (it needs ", rank, 1 - rank);
    RANK_CHECK(strncmp(ferry_last_error(), want, strlen(want)) == 0);
    ferry__agent_release(a);
    return 0;
}

/* A value that names no path is refused, naming it and the ones there are. */
static int body_path_bad(int rank, int world, const rpc_case *c)
{
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a);
    const ferry__device_channel *ch = NULL;
    RANK_CHECK(ferry__device_channel_choose(a, 1 - rank, FERRY_DEVICE_CUDA(0),
                                            FERRY_DEVICE_CUDA(1), &ch) == FERRY_EINVAL && !ch);
    RANK_CHECK(strcmp(ferry_last_error(), "FERRY_DEVICE_PATH='carrier-pigeon' names no transfer "
                                          "path (auto, staged, direct, p2p or nccl)") == 0);
    ferry__agent_release(a);
    return 0;
}

#define CHANNEL_TEST(name, transport, path, body, secs)                                   \
    Test(device_channel, name, .timeout = secs)                                           \
    {                                                                                     \
        emulate(path);                                                                    \
        cr_assert(ferry_register_function("send_late", send_late, NULL) == FERRY_OK);     \
        rpc_case_run(transport, 2, body, NULL, secs - 5);                                 \
    }

CHANNEL_TEST(moves_bytes_in_any_order_tcp, "tcp", NULL, body_moves, 40)
CHANNEL_TEST(moves_bytes_in_any_order_shm, "shm", NULL, body_moves, 40)
CHANNEL_TEST(sends_after_the_work_queued_before, "shm", NULL, body_stream_order, 30)
CHANNEL_TEST(late_bytes_are_dropped_and_sizes_checked, "shm", NULL, body_late, 30)
CHANNEL_TEST(peer_death_fails_waiting_recvs, "tcp", NULL, body_peer_dies, 40)
CHANNEL_TEST(path_staged_turns_channels_off, "shm", "staged", body_path_staged, 30)
CHANNEL_TEST(path_p2p_forces_the_emulated_channel, "shm", "p2p", body_path_p2p, 30)
CHANNEL_TEST(path_nccl_without_gpus_fails_clearly, "shm", "nccl", body_path_nccl, 30)
CHANNEL_TEST(path_unknown_is_refused, "shm", "carrier-pigeon", body_path_bad, 30)
