/* Fabric membership and authentication, end to end (issue 9, findings 1 and 4):
   - an outsider (it never joined and has no token, but knows a worker's address, here handed
     over by the test as if read off the store) opens its own endpoint on the same provider and
     sends forged messages claiming rank 0: a call to a registered function, a ping, a 32-byte
     large-message announcement of 8 GiB with and without a frame header, an empty message,
     and a call claiming the victim's own rank. Nothing runs, nobody is marked dead, and the
     victim's counters show every drop; a member's call to the same function then runs.
   - a member answering a call that another member was asked (a response carrying the id of a
     call rank 0 made to rank 2, sent by rank 1) is dropped and counted, and the call still
     gets its genuine answer. */
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "integration/rpc_harness.h"
#include "rpc/agent_impl.h"
#include "transport/net_internal.h"

#define BLOB_MAX 2048
#define N_FORGED 6

static void set_token(void)
{
    char token[64];
    snprintf(token, sizeof token, "fabric-auth-%d", (int)getpid());
    setenv("FERRY_AUTH_TOKEN", token, 1);
}

static void *shared_new(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(p != MAP_FAILED);
    return p;
}

static void barrier_init(pthread_barrier_t *b, unsigned n)
{
    pthread_barrierattr_t a;
    pthread_barrierattr_init(&a);
    pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(b, &a, n);
}

/* Polls `get` until it reaches `want` or 10 s pass (reading a counter, not synchronizing). */
static uint64_t wait_counter(uint64_t (*get)(ferry__agent *), ferry__agent *a, uint64_t want)
{
    uint64_t v = 0;
    for (int i = 0; i < 10000 && (v = get(a)) < want; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return v;
}

/* ---- an outsider forging messages ---- */

typedef struct {
    const char *transport;
    int port;
    atomic_int touched; /* fabric_touch ran */
    size_t victim_len;
    unsigned char victim_blob[BLOB_MAX];
    pthread_barrier_t step; /* rank 0, rank 1 and the outsider */
} auth_world;

static ferry_status fabric_touch(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    auth_world *w = user;
    atomic_fetch_add(&w->touched, 1);
    *result = ferry_int(1);
    return FERRY_OK;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} outsider_ctx;

static void outsider_done(void *arg, ferry_status rc)
{
    outsider_ctx *o = arg;
    pthread_mutex_lock(&o->mu);
    o->done++;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

/* An untagged message as any libfabric process could send it: CQ data claiming `claimed`, the
   bytes exactly as given (the outsider cannot know a member's cookie). */
static int forge_raw(ferry__net *net, outsider_ctx *o, unsigned kind, int claimed,
                     const void *bytes, size_t len)
{
    ferry__net_peer *p = &net->peers[1];
    ferry__net_op *op = ferry__net_op_new(FERRY__OP_SEND, p->ep, 1);
    RANK_CHECK(op != NULL);
    op->addr = p->addr;
    op->data = FERRY__NET_DATA(kind, claimed);
    op->owned = ferry__malloc(len ? len : 1);
    if (len)
        memcpy(op->owned, bytes, len);
    op->iov_inline[0] = (struct iovec){op->owned, len};
    op->n_iov = 1;
    op->len = len;
    op->done = outsider_done;
    op->arg = o;
    RANK_CHECK(ferry__net_submit(net, op, false) == FERRY_OK);
    return 0;
}

/* A message framed as ferry frames it, with the outsider's own cookie. */
static int forge_msg(ferry__net *net, outsider_ctx *o, ferry__msg *m)
{
    ferry__wire_out out;
    RANK_CHECK(ferry__wire_encode(m, NULL, &out) == FERRY_OK);
    unsigned char *buf = ferry__malloc(4 + out.header_len);
    for (int i = 0; i < 4; i++)
        buf[i] = (unsigned char)(out.header_len >> (8 * i));
    memcpy(buf + 4, out.header, out.header_len);
    struct iovec iov = {buf, 4 + out.header_len};
    pthread_mutex_lock(&o->mu);
    int want = o->done + 1;
    pthread_mutex_unlock(&o->mu);
    RANK_CHECK(ferry__net_send(net, 1, &iov, 1, outsider_done, o) == FERRY_OK);
    ferry__wire_out_free(&out);
    pthread_mutex_lock(&o->mu); /* the send must finish before buf goes */
    while (o->done < want)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
    ferry__free(buf);
    return 0;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

static int outsider(auth_world *w)
{
    pthread_barrier_wait(&w->step); /* the members are up; the victim's blob is here */
    outsider_ctx o = {.done = 0};
    pthread_mutex_init(&o.mu, NULL);
    pthread_cond_init(&o.cv, NULL);
    ferry__net_options opts = {.transport = w->transport, .master_addr = "127.0.0.1"};
    ferry__net *net = ferry__net_open(&opts, NULL);
    RANK_CHECK(net != NULL);
    const void *own;
    size_t own_len;
    RANK_CHECK(ferry__net_local_address(net, &own, &own_len) == FERRY_OK);
    /* It calls itself rank 0, and the victim rank 1. */
    const void *blobs[2] = {own, w->victim_blob};
    size_t lens[2] = {own_len, w->victim_len};
    RANK_CHECK(ferry__net_set_peers(net, 0, 2, blobs, lens) == FERRY_OK);
    RANK_CHECK(ferry__net_start(net) == FERRY_OK);

    ferry__msg call = {.type = FERRY__MSG_CALL, .id = 1, .src = 0, .fn = "fabric_touch"};
    call.args = ferry_args(0);
    RANK_CHECK(forge_msg(net, &o, &call) == 0);
    ferry_value_release(call.args);
    ferry__msg ping = {.type = FERRY__MSG_PING, .id = 2, .src = 0};
    RANK_CHECK(forge_msg(net, &o, &ping) == 0);
    /* The 32-byte announcement of the finding: 8 GiB in one part, bare and behind a header. */
    unsigned char ann[16 + 32];
    memset(ann, 0xa5, 16);
    put_u64(ann + 16, (uint64_t)8 << 30);
    put_u64(ann + 24, 7);
    put_u64(ann + 32, 1);
    put_u64(ann + 40, (uint64_t)8 << 30);
    RANK_CHECK(forge_raw(net, &o, FERRY__NET_KIND_LARGE, 0, ann + 16, 32) == 0);
    RANK_CHECK(forge_raw(net, &o, FERRY__NET_KIND_LARGE, 0, ann, sizeof ann) == 0);
    RANK_CHECK(forge_raw(net, &o, FERRY__NET_KIND_EAGER, 0, "", 0) == 0);
    RANK_CHECK(forge_raw(net, &o, FERRY__NET_KIND_EAGER, 1, ann, sizeof ann) == 0);
    pthread_mutex_lock(&o.mu);
    while (o.done < N_FORGED)
        pthread_cond_wait(&o.cv, &o.mu);
    pthread_mutex_unlock(&o.mu);
    pthread_barrier_wait(&w->step); /* everything forged has left */
    pthread_barrier_wait(&w->step); /* the victim has counted */
    ferry__net_close(net);
    return 0;
}

static uint64_t drops(ferry__agent *a)
{
    ferry__net_stats st;
    ferry__net_get_stats(a->net, &st);
    return st.dropped_unknown_source + st.dropped_unauthenticated;
}

static int member(auth_world *w, int rank)
{
    rpc_case c = {.transport = w->transport, .port = w->port};
    if (rpc_case_join(&c, rank, 2) != 0)
        return 1;
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a != NULL);
    if (rank == 1) {
        const void *blob;
        size_t len;
        RANK_CHECK(ferry__net_local_address(a->net, &blob, &len) == FERRY_OK && len <= BLOB_MAX);
        memcpy(w->victim_blob, blob, len);
        w->victim_len = len;
    }
    pthread_barrier_wait(&w->step);
    pthread_barrier_wait(&w->step); /* the outsider's messages have left */
    int rc = 0;
    if (rank == 1) {
        uint64_t n = wait_counter(drops, a, N_FORGED);
        ferry__net_stats st;
        ferry__net_get_stats(a->net, &st);
        fprintf(stderr, "%s: victim dropped %llu from unknown sources, %llu unauthenticated, "
                "%llu refused\n", w->transport, (unsigned long long)st.dropped_unknown_source,
                (unsigned long long)st.dropped_unauthenticated,
                (unsigned long long)st.dropped_refused);
        RANK_CHECK(n == N_FORGED);
        RANK_CHECK(st.dropped_refused == 0 && st.messages_in == 0);
        RANK_CHECK(atomic_load(&w->touched) == 0);
        for (int i = 0; i < 2; i++)
            RANK_CHECK(!atomic_load(&a->workers[i].dead));
    }
    pthread_barrier_wait(&w->step);
    if (rank == 0) {
        ferry_value *v = ferry_rpc_sync("worker1", "fabric_touch", NULL, NULL, 10);
        RANK_CHECK(v && ferry_value_as_int(v) == 1 && atomic_load(&w->touched) == 1);
        ferry_value_release(v);
        RANK_CHECK(!atomic_load(&a->workers[1].dead));
    }
    ferry__agent_release(a);
    rc = ferry_shutdown(true, 20) == FERRY_OK ? rc : 1;
    return rc;
}

static int auth_rank(int rank, int n, void *arg)
{
    auth_world *w = arg;
    return rank == 2 ? outsider(w) : member(w, rank);
}

static void run_outsider(const char *transport)
{
    set_token();
    auth_world *w = shared_new(sizeof *w);
    w->transport = transport;
    w->port = ferry_test_free_port();
    barrier_init(&w->step, 3);
    cr_assert(ferry_register_function("fabric_touch", fabric_touch, w) == FERRY_OK);
    ferry_test_run_ranks(3, auth_rank, w, 60);
    pthread_barrier_destroy(&w->step);
    munmap(w, sizeof *w);
}

Test(fault_fabric, outsider_messages_are_dropped_when_shm, .timeout = 70)
{
    run_outsider("shm");
}

Test(fault_fabric, outsider_messages_are_dropped_when_tcp, .timeout = 70)
{
    run_outsider("tcp");
}

/* ---- a member answering another member's call ---- */

typedef struct {
    sem_t id_ready, release;
    uint64_t id;
} forge_world;

static ferry_status fabric_wait(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    forge_world *w = user;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    if (sem_timedwait(&w->release, &ts) != 0)
        return ferry_set_error(FERRY_ETIMEDOUT, "never released");
    *result = ferry_string("genuine");
    return FERRY_OK;
}

static uint64_t foreign(ferry__agent *a)
{
    return atomic_load(&a->dropped_foreign_responses);
}

static int forged_response_body(int rank, int world, const rpc_case *c)
{
    forge_world *w = c->user;
    ferry__agent *a = ferry__agent_get();
    RANK_CHECK(a != NULL);
    int rc = 0;
    if (rank == 0) {
        w->id = atomic_load(&a->next_id); /* this thread makes the only calls */
        ferry_future *f = ferry_rpc_async("worker2", "fabric_wait", NULL, NULL, 30);
        RANK_CHECK(f != NULL);
        sem_post(&w->id_ready);
        RANK_CHECK(wait_counter(foreign, a, 1) == 1);
        RANK_CHECK(!ferry_future_done(f));
        sem_post(&w->release);
        ferry_value *v = ferry_future_value(f);
        RANK_CHECK(v && strcmp(ferry_value_as_string(v), "genuine") == 0);
        ferry_value_release(v);
        ferry_future_release(f);
    } else if (rank == 1) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 20;
        RANK_CHECK(sem_timedwait(&w->id_ready, &ts) == 0);
        ferry__msg resp = {.type = FERRY__MSG_RESPONSE, .id = w->id};
        resp.value = ferry_string("forged");
        RANK_CHECK(ferry__agent_send_msg(a, 0, &resp, NULL) == FERRY_OK);
        ferry_value_release(resp.value);
    }
    ferry__agent_release(a);
    return rc;
}

static void run_forged_response(const char *transport)
{
    set_token();
    forge_world *w = shared_new(sizeof *w);
    sem_init(&w->id_ready, 1, 0);
    sem_init(&w->release, 1, 0);
    cr_assert(ferry_register_function("fabric_wait", fabric_wait, w) == FERRY_OK);
    rpc_case_run(transport, 3, forged_response_body, w, 60);
    sem_destroy(&w->id_ready);
    sem_destroy(&w->release);
    munmap(w, sizeof *w);
}

Test(fault_fabric, response_from_a_worker_not_called_is_dropped_when_shm, .timeout = 70)
{
    run_forged_response("shm");
}

Test(fault_fabric, response_from_a_worker_not_called_is_dropped_when_tcp, .timeout = 70)
{
    run_forged_response("tcp");
}
