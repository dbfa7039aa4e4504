/* What the RRef tests share (see rref_util.h). */
#include "rref_util.h"

#include <stdio.h>
#include <string.h>

#include "rpc_harness.h"
#include "test_util.h"

static ferry_future *arrive_fn(const ferry_value *args, const ferry_value *kwargs, void *user)
{
    rref_test_barrier_state *b = user;
    ferry_future *f = ferry_future_new();
    ferry_future *done[8];
    int n = 0, not_ok = 0;
    pthread_mutex_lock(&b->mu);
    b->waiting[b->arrived++] = ferry_future_retain(f);
    b->not_ok += !ferry_value_as_bool(ferry_list_get(args, 0));
    if (b->arrived == b->world) {
        n = b->arrived;
        not_ok = b->not_ok;
        memcpy(done, b->waiting, sizeof done);
        b->arrived = b->not_ok = 0;
    }
    pthread_mutex_unlock(&b->mu);
    ferry_value *v = ferry_int(not_ok);
    for (int i = 0; i < n; i++) {
        ferry_future_set_value(done[i], v);
        ferry_future_release(done[i]);
    }
    ferry_value_release(v);
    return f;
}

void rref_test_barrier_register(rref_test_barrier_state *b, int world)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    b->world = world;
    cr_assert(ferry_register_async_function("arrive", arrive_fn, b) == FERRY_OK);
}

int rref_test_barrier(bool ok)
{
    ferry_value *a = ferry_args(1, ferry_bool(ok));
    ferry_value *v = ferry_rpc_sync("worker0", "arrive", a, NULL, FERRY_TIMEOUT_DEFAULT);
    int not_ok = v ? (int)ferry_value_as_int(v) : -1;
    ferry_value_release(v);
    ferry_value_release(a);
    return not_ok;
}

bool rref_test_counts_zero(ferry_rref_debug_counts *n)
{
    return ferry_debug_rref_counts(n) == FERRY_OK && !n->owners && !n->forks && !n->users &&
           !n->pending_users && !n->pending_children && !n->messages;
}

int rref_test_check_counts_zero(void)
{
    ferry_rref_debug_counts n;
    for (int round = 0; round < 50; round++) {
        RANK_CHECK(ferry_debug_rref_wait_idle(20) == FERRY_OK);
        int not_ok = rref_test_barrier(rref_test_counts_zero(&n));
        RANK_CHECK(not_ok >= 0);
        if (not_ok == 0)
            return 0;
    }
    fprintf(stderr, "counts: owners %lld forks %lld users %lld pending %lld children %lld "
                    "messages %lld\n",
            (long long)n.owners, (long long)n.forks, (long long)n.users,
            (long long)n.pending_users, (long long)n.pending_children, (long long)n.messages);
    RANK_CHECK(!"RRef counters did not return to zero");
    return 1;
}
