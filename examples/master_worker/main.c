/* The classic torch.distributed.rpc example in C: rank 0 is "master", rank 1 is "worker". The
   worker calls torch.add(ones(2), 3), min(1, 2) and a function the master registered, all with
   rpc_async, waits on the futures and prints the results. Run it with
   `ferryrun -n 2 master_worker` (make demo does), under any other launcher with two ranks
   (srun -n 2, mpirun -np 2, ...), or alone: it then starts its two ranks itself
   (examples/launch.h). */
#include <stdio.h>
#include <stdlib.h>

#include "ferry/ferry.h"
#include "examples/launch.h"

/* Registered on every worker, called on master: returns "hello, <name>" and the sum of a list. */
static ferry_status greet(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                          void *user)
{
    (void)kwargs;
    (void)user;
    const char *who = ferry_value_as_string(ferry_list_get(args, 0));
    const ferry_value *nums = ferry_list_get(args, 1);
    if (!who || !nums || ferry_value_kind(nums) != FERRY_VALUE_LIST)
        return ferry_set_error(FERRY_EINVAL, "greet(name, [numbers]) got bad arguments");
    double sum = 0;
    for (size_t i = 0; i < ferry_list_len(nums); i++)
        sum += ferry_value_as_double(ferry_list_get(nums, i));
    char text[256];
    snprintf(text, sizeof text, "hello, %s", who);
    *result = ferry_list_of(2, ferry_string(text), ferry_double(sum));
    return *result ? FERRY_OK : ferry_last_status();
}

static int fail(const char *what)
{
    fprintf(stderr, "%s failed: %s: %s\n", what, ferry_strerror(ferry_last_status()),
            ferry_last_error());
    return 1;
}

static void print_tensor(const char *label, ferry_value *v)
{
    char buf[256];
    ferry_tensor_format(ferry_value_as_tensor(v), buf, sizeof buf);
    printf("%s = %s\n", label, buf);
}

static int run_worker(void)
{
    int64_t two = 2;
    ferry_tensor *ones = ferry_ones(1, &two, FERRY_FLOAT32);
    ferry_future *futs[3];
    /* ferry_args takes the values it is given (ferry_tensor_value retains the tensor); the calls
       borrow the argument lists, which are released once sent. */
    ferry_value *args[3] = {
        ferry_args(2, ferry_tensor_value(ones), ferry_int(3)),
        ferry_args(2, ferry_int(1), ferry_int(2)),
        ferry_args(2, ferry_string("worker"),
                   ferry_list_of(3, ferry_int(1), ferry_int(2), ferry_double(3.5))),
    };
    ferry_tensor_release(ones);
    const char *fns[3] = {"torch.add", "min", "greet"};
    for (int i = 0; i < 3; i++) {
        futs[i] = ferry_rpc_async("master", fns[i], args[i], NULL, FERRY_TIMEOUT_DEFAULT);
        ferry_value_release(args[i]);
    }
    for (int i = 0; i < 3; i++)
        if (!futs[i])
            return fail("rpc_async");
    ferry_value *add = ferry_future_value(futs[0]);
    ferry_value *mn = ferry_future_value(futs[1]);
    ferry_value *gr = ferry_future_value(futs[2]);
    if (!add || !mn || !gr)
        return fail("waiting on the futures");
    print_tensor("torch.add(torch.ones(2), 3)", add);
    printf("min(1, 2) = %lld\n", (long long)ferry_value_as_int(mn));
    printf("greet(\"worker\", [1, 2, 3.5]) = (\"%s\", %g)\n",
           ferry_value_as_string(ferry_list_get(gr, 0)),
           ferry_value_as_double(ferry_list_get(gr, 1)));
    ferry_value_release(add);
    ferry_value_release(mn);
    ferry_value_release(gr);
    for (int i = 0; i < 3; i++)
        ferry_future_release(futs[i]);
    return 0;
}

static int run_rank(int rank, void *user)
{
    (void)user;
    const char *name = rank == 0 ? "master" : "worker";
    if (ferry_register_function("greet", greet, NULL) != FERRY_OK)
        return fail("register_function");
    if (ferry_init_rpc(name, rank, 2, NULL) != FERRY_OK)
        return fail("init_rpc");
    int rc = rank == 1 ? run_worker() : 0;
    return example_shutdown(name, rc);
}

int main(void)
{
    example_job job = {.name = "master-worker", .world = 2, .deadline_s = 60};
    return example_main(&job, run_rank, NULL);
}
