/* torch's parameter-server pattern over RRefs (without autograd yet). Rank 0, "ps", holds a
   parameter tensor behind an RRef: the OwnerRRef holds the tensor itself, so updates sent to the
   owner change it in place. Every other rank is a trainer: it gets a UserRRef from the ps, reads
   the parameter with to_here, computes a gradient of a quadratic loss towards a target, and sends
   the update with a proxy call (rref.rpc_sync().apply_update(grad, lr)). After training the ps
   prints the parameter, which has moved to the target. Run with
   `ferryrun -n 3 param_server` (any launcher and any number of ranks from 2 will do). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/ferry.h"
#include "ferry/rref.h"

#define DIM 4
#define STEPS 20
#define LR 0.2

typedef struct {
    pthread_mutex_t lock; /* guards param; one update at a time on the ps */
    ferry_tensor *w;      /* the parameter */
    ferry_rref *param;    /* the ps's OwnerRRef of w, made on first request */
} ps_state;

/* On the ps: get_param_rref() returns the parameter's RRef (forked to the caller). */
static ferry_status get_param_rref(const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    ps_state *ps = user;
    pthread_mutex_lock(&ps->lock);
    if (!ps->param) {
        ferry_value *wv = ferry_tensor_value(ps->w);
        ps->param = ferry_rref_new(wv); /* holds the tensor itself: updates land in w */
        ferry_value_release(wv);
    }
    *result = ps->param ? ferry_rref_value(ps->param) : NULL;
    pthread_mutex_unlock(&ps->lock);
    return *result ? FERRY_OK : ferry_last_status();
}

/* Proxy target on the owner: apply_update(param, grad, lr) does param -= lr * grad in place. */
static ferry_status apply_update(const ferry_value *args, const ferry_value *kwargs,
                                 ferry_value **result, void *user)
{
    ps_state *ps = user;
    ferry_tensor *param = ferry_value_as_tensor(ferry_list_get(args, 0));
    ferry_tensor *grad = ferry_value_as_tensor(ferry_list_get(args, 1));
    double lr = ferry_value_as_double(ferry_list_get(args, 2));
    if (!param || !grad)
        return ferry_set_error(FERRY_ETYPE, "apply_update(param, grad, lr) needs tensors");
    pthread_mutex_lock(&ps->lock);
    ferry_status rc = ferry_add_scaled_(param, grad, -lr);
    pthread_mutex_unlock(&ps->lock);
    *result = NULL;
    return rc;
}

static int fail(const char *what)
{
    fprintf(stderr, "%s failed: %s: %s\n", what, ferry_strerror(ferry_last_status()),
            ferry_last_error());
    return 1;
}

/* grad of 0.5 * |param - target|^2 is param - target. */
static int train(int rank)
{
    ferry_value *p = ferry_rpc_sync("ps", "get_param_rref", NULL, NULL, FERRY_TIMEOUT_DEFAULT);
    if (!p)
        return fail("get_param_rref");
    ferry_rref *param = ferry_value_as_rref(p);
    int64_t dim = DIM;
    ferry_tensor *target = ferry_full(1, &dim, 1.0, FERRY_FLOAT32);
    for (int step = 0; step < STEPS; step++) {
        ferry_value *now = ferry_rref_to_here(param, FERRY_TIMEOUT_DEFAULT);
        if (!now)
            return fail("to_here");
        ferry_tensor *grad = ferry_sub(ferry_value_as_tensor(now), target);
        ferry_value *args = ferry_args(2, ferry_tensor_value(grad), ferry_double(LR));
        ferry_value *r = ferry_rref_rpc_sync(param, "apply_update", args, NULL,
                                             FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(args);
        ferry_tensor_release(grad);
        ferry_value_release(now);
        if (!r)
            return fail("apply_update");
        ferry_value_release(r);
    }
    ferry_value *last = ferry_rref_to_here(param, FERRY_TIMEOUT_DEFAULT);
    char buf[256];
    ferry_tensor_format(ferry_value_as_tensor(last), buf, sizeof buf);
    printf("trainer %d read the parameter from '%s': %s\n", rank, ferry_rref_owner_name(param),
           buf);
    ferry_value_release(last);
    ferry_tensor_release(target);
    ferry_value_release(p);
    return 0;
}

int main(void)
{
    /* The launcher's rank, whichever launcher it is (0 without one: init then says what is
       missing). */
    ferry_launch_info launch;
    ferry_launch_detect(&launch);
    int rank = launch.rank > 0 ? launch.rank : 0;
    int64_t dim = DIM;
    ps_state ps = {.lock = PTHREAD_MUTEX_INITIALIZER, .w = ferry_zeros(1, &dim, FERRY_FLOAT32)};
    ferry_register_function("get_param_rref", get_param_rref, &ps);
    ferry_register_function("apply_update", apply_update, &ps);
    char name[32];
    if (rank == 0)
        snprintf(name, sizeof name, "ps");
    else
        snprintf(name, sizeof name, "trainer%d", rank);
    if (ferry_init_rpc(name, -1, 0, NULL) != FERRY_OK)
        return fail("init_rpc");
    int rc = rank == 0 ? 0 : train(rank);
    /* Graceful shutdown waits until every trainer is done with the parameter. */
    if (ferry_shutdown(true, 0) != FERRY_OK)
        rc = fail("shutdown");
    if (rank == 0) {
        char buf[256];
        ferry_tensor_format(ps.w, buf, sizeof buf);
        printf("ps: parameter after training = %s (target 1)\n", buf);
        ferry_rref_release(ps.param);
    }
    ferry_tensor_release(ps.w);
    return rc;
}
