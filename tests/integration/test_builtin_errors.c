/* Builtins called with the wrong arguments say so in Python's words, through the remote error:
   a missing argument by name, too many by count, an unknown keyword by name. */
#include <stdio.h>
#include <string.h>

#include "rpc_harness.h"

static bool fails_with(const char *fn, ferry_value *args, ferry_value *kwargs, const char *want)
{
    ferry_value *v = ferry_rpc_sync("worker1", fn, args, kwargs, FERRY_TIMEOUT_DEFAULT);
    bool ok = !v && ferry_last_status() == FERRY_EREMOTE && strstr(ferry_last_error(), want);
    if (!ok)
        fprintf(stderr, "%s: want '%s', got %s\n", fn, want, v ? "a value" : ferry_last_error());
    ferry_value_release(v);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    return ok;
}

static ferry_value *kw(const char *key, ferry_value *v)
{
    ferry_value *d = ferry_dict_new();
    ferry_dict_set(d, key, v);
    return d;
}

static int body_errors(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    int64_t two = 2;
    ferry_tensor *t = ferry_ones(1, &two, FERRY_FLOAT32);
#define T ferry_tensor_value(t)
    RANK_CHECK(fails_with("torch.add", ferry_args(1, T), NULL,
                          "torch.add() missing 1 required positional argument: 'other'"));
    RANK_CHECK(fails_with("torch.add", ferry_args(4, T, ferry_int(1), ferry_int(2), ferry_int(3)),
                          NULL, "torch.add() takes 2 positional arguments but 4 were given"));
    RANK_CHECK(fails_with("torch.add", ferry_args(2, T, ferry_int(1)), kw("beta", ferry_int(2)),
                          "torch.add() got an unexpected keyword argument 'beta'"));
    RANK_CHECK(fails_with("torch.mul", ferry_args(2, T, ferry_int(1)), kw("alpha", ferry_int(2)),
                          "torch.mul() got an unexpected keyword argument 'alpha'"));
    RANK_CHECK(fails_with("torch.sum", ferry_args(4, T, ferry_int(0), ferry_bool(true), ferry_int(1)),
                          NULL, "torch.sum() takes from 1 to 3 positional arguments but 4 were given"));
    RANK_CHECK(fails_with("torch.ones", ferry_args(1, ferry_int(2)), kw("dtyp", ferry_int(1)),
                          "torch.ones() got an unexpected keyword argument 'dtyp'"));
    RANK_CHECK(fails_with("torch.matmul", ferry_args(1, T), NULL,
                          "torch.matmul() missing 1 required positional argument: 'other'"));
    RANK_CHECK(fails_with("min", ferry_args(2, ferry_int(1), ferry_int(2)),
                          kw("key", ferry_int(0)), "min() got an unexpected keyword argument 'key'"));
#undef T
    /* The right call still works. */
    ferry_value *args = ferry_args(2, ferry_tensor_value(t), ferry_int(1));
    ferry_value *kwargs = kw("alpha", ferry_int(3));
    ferry_value *ok = ferry_rpc_sync("worker1", "torch.add", args, kwargs, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(ok && ferry_tensor_item_at(ferry_value_as_tensor(ok), 0) == 4.0);
    ferry_value_release(ok);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    ferry_tensor_release(t);
    return 0;
}

Test(builtin_errors, wrong_arguments_are_named_as_python_names_them, .timeout = 40)
{
    rpc_case_run("shm", 2, body_errors, NULL, 35);
}
