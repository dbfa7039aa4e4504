/* Graceful shutdown's store rounds while one worker is still busy: rank 1's call to a slow
   function on rank 0 timed out, so rank 0 keeps reporting work in flight and the rounds repeat
   until the function returns. They used to repeat as fast as the store answered and never
   delete a key (+2.3 MB/s). Now they back off (1 ms to 50 ms) and the last arriver of each round
   deletes the round before, so the request rate stays low and the key count flat; a thread on
   rank 1 samples the store's counters throughout. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "store_fault_util.h"
#include "transport/store.h"

#define SLOW_S 2.0
#define MAX_SAMPLES 2000

typedef struct {
    int port;
    atomic_bool stop;
    int n;
    double t[MAX_SAMPLES];
    uint64_t keys[MAX_SAMPLES], requests[MAX_SAMPLES];
} sampler;

static void *sample_main(void *p)
{
    sampler *s = p;
    ferry__store *st = ferry__store_connect("127.0.0.1", s->port, getenv("FERRY_AUTH_TOKEN"), 5);
    while (st && !atomic_load(&s->stop) && s->n < MAX_SAMPLES) {
        if (ferry__store_stats(st, &s->keys[s->n], &s->requests[s->n], 1) != FERRY_OK)
            break; /* rank 0 stopped the store */
        s->t[s->n++] = ferry__now_s();
        ferry__sleep_us(20000);
    }
    ferry__store_close(st);
    return NULL;
}

static int rounds_body(int rank, int world, const rpc_case *c)
{
    if (rank == 0)
        return 0; /* shuts down at once (the harness), while the slow call runs */
    ferry_value *args = ferry_list_of(1, ferry_double(SLOW_S));
    ferry_value *v = ferry_rpc_sync("worker0", "slow", args, NULL, 0.3);
    ferry_value_release(args);
    RANK_CHECK(!v && ferry_last_status() == FERRY_ETIMEDOUT);
    sampler *s = calloc(1, sizeof *s);
    s->port = c->port;
    pthread_t th;
    pthread_create(&th, NULL, sample_main, s);
    double t0 = ferry__now_s();
    RANK_CHECK(ferry_shutdown(true, 30) == FERRY_OK);
    double took = ferry__now_s() - t0;
    atomic_store(&s->stop, true);
    pthread_join(th, NULL);
    RANK_CHECK(s->n >= 10);
    uint64_t max_keys = 0;
    for (int i = 0; i < s->n; i++)
        max_keys = s->keys[i] > max_keys ? s->keys[i] : max_keys;
    double span = s->t[s->n - 1] - s->t[0];
    double rate = (double)(s->requests[s->n - 1] - s->requests[0]) / span;
    fprintf(stderr, "shutdown took %.2f s; over %.2f s the store answered %.0f requests/s and "
                    "held at most %llu keys\n",
            took, span, rate, (unsigned long long)max_keys);
    RANK_CHECK(took > 1.0); /* the rounds really waited for the slow call */
    RANK_CHECK(rate < 600);
    RANK_CHECK(max_keys < 60);
    free(s);
    return 0;
}

Test(fault_store, shutdown_rounds_back_off_and_delete_keys_when_one_rank_is_slow, .timeout = 60)
{
    ferry_register_function("slow", rpc_test_sleep, NULL);
    rpc_case_run("tcp", 2, rounds_body, NULL, 50);
}
