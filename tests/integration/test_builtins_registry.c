/* Builtins as a worker serves them: a replaced builtin answers with the new function at once,
   every builtin that makes a tensor of the caller's size refuses one past the worker's
   builtin_max_bytes before making it, and every builtin answers any mix of argument kinds with
   a value or an error message (run under the sanitizers, nothing crashes or leaks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/ops.h"
#include "rpc_harness.h"
#include "rpc/registry.h"

static ferry_status mine(const ferry_value *args, const ferry_value *kwargs, ferry_value **result,
                         void *user)
{
    *result = ferry_string(user);
    return *result ? FERRY_OK : ferry_last_status();
}

/* replace_add(): takes torch.add over on the worker it runs on. */
static ferry_status replace_add(const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    *result = NULL;
    return ferry_replace_function("torch.add", mine, "replaced");
}

static ferry_value *add_on_worker1(void)
{
    int64_t two = 2;
    ferry_tensor *t = ferry_ones(1, &two, FERRY_FLOAT32);
    ferry_value *args = ferry_args(2, ferry_tensor_value(t), ferry_int(1));
    ferry_value *v = ferry_rpc_sync("worker1", "torch.add", args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_value_release(args);
    ferry_tensor_release(t);
    return v;
}

static int body_replace(int rank, int world, const rpc_case *c)
{
    if (rank != 0)
        return 0;
    ferry_value *v = add_on_worker1();
    RANK_CHECK(v && ferry_tensor_item_at(ferry_value_as_tensor(v), 0) == 2.0);
    ferry_value_release(v);
    ferry_value *none = ferry_rpc_sync("worker1", "replace_add", NULL, NULL,
                                       FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(none && ferry_value_kind(none) == FERRY_VALUE_NONE);
    ferry_value_release(none);
    v = add_on_worker1();
    RANK_CHECK(v && ferry_value_as_string(v) && !strcmp(ferry_value_as_string(v), "replaced"));
    ferry_value_release(v);
    /* This worker's own torch.add is still the builtin. */
    int64_t two = 2;
    ferry_tensor *t = ferry_ones(1, &two, FERRY_FLOAT32);
    ferry_value *args = ferry_args(2, ferry_tensor_value(t), ferry_int(1));
    v = ferry_rpc_sync("worker0", "torch.add", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_value_kind(v) == FERRY_VALUE_TENSOR);
    ferry_value_release(v);
    ferry_value_release(args);
    ferry_tensor_release(t);
    return 0;
}

Test(builtins_registry, serve_the_new_function_when_a_builtin_is_replaced, .timeout = 40)
{
    cr_assert_eq(ferry_register_function("replace_add", replace_add, NULL), FERRY_OK);
    rpc_case_run("shm", 2, body_replace, NULL, 35);
}

/* Each call must fail naming the cap. */
static const struct {
    const char *fn;
    const char *what;
} capped[] = {
    {"torch.ones", "ones(2048)"},          {"torch.zeros", "zeros(2048)"},
    {"torch.rand", "rand(2048)"},          {"torch.randn", "randn(2048)"},
    {"torch.full", "full([2048], 1.0)"},   {"torch.arange", "arange(2048)"},
    {"torch.eye", "eye(64)"},              {"torch.add", "[64, 1] + [1, 64]"},
    {"torch.matmul", "[64, 1] @ [1, 64]"},
};

static ferry_value *capped_args(size_t i, ferry_tensor *col, ferry_tensor *row)
{
    switch (i) {
    case 4: return ferry_args(2, ferry_list_of(1, ferry_int(2048)), ferry_double(1.0));
    case 6: return ferry_args(1, ferry_int(64));
    case 7:
    case 8: return ferry_args(2, ferry_tensor_value(col), ferry_tensor_value(row));
    default: return ferry_args(1, ferry_int(2048));
    }
}

static int rank_cap(int rank, int world, void *arg)
{
    char port[16];
    snprintf(port, sizeof port, "%d", *(int *)arg);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", port, 1);
    setenv("RANK", "0", 1);
    setenv("WORLD_SIZE", "1", 1);
    ferry_rpc_options o;
    ferry_rpc_options_init(&o);
    o.builtin_max_bytes = 4096;
    RANK_CHECK(ferry_init_rpc("worker0", -1, 0, &o) == FERRY_OK);
    int64_t col_sizes[2] = {64, 1}, row_sizes[2] = {1, 64};
    ferry_tensor *col = ferry_ones(2, col_sizes, FERRY_FLOAT32);
    ferry_tensor *row = ferry_ones(2, row_sizes, FERRY_FLOAT32);
    int failed = 0;
    for (size_t i = 0; i < sizeof capped / sizeof capped[0]; i++) {
        ferry_value *args = capped_args(i, col, row);
        ferry_value *v = ferry_rpc_sync("worker0", capped[i].fn, args, NULL,
                                        FERRY_TIMEOUT_DEFAULT);
        if (v || !strstr(ferry_last_error(), "more than this worker's builtin_max_bytes (4096)")) {
            fprintf(stderr, "%s: want the cap, got %s\n", capped[i].what,
                    v ? "a value" : ferry_last_error());
            failed++;
        }
        ferry_value_release(v);
        ferry_value_release(args);
    }
    /* Below the cap the same calls work. */
    ferry_value *args = ferry_args(1, ferry_int(512)); /* int64: 4096 bytes */
    ferry_value *v = ferry_rpc_sync("worker0", "torch.arange", args, NULL, FERRY_TIMEOUT_DEFAULT);
    RANK_CHECK(v && ferry_tensor_numel(ferry_value_as_tensor(v)) == 512);
    ferry_value_release(v);
    ferry_value_release(args);
    ferry_tensor_release(col);
    ferry_tensor_release(row);
    RANK_CHECK(failed == 0);
    RANK_CHECK(ferry_shutdown(true, 10) == FERRY_OK);
    return 0;
}

Test(builtins_registry, refuse_results_past_builtin_max_bytes_when_the_caller_sizes_them,
     .timeout = 30)
{
    rpc_test_set_token();
    int port = ferry_test_free_port();
    ferry_test_run_ranks(1, rank_cap, &port, 25);
}

/* One of a few values of every kind a caller might send, new reference. */
static ferry_value *sample(int i)
{
    int64_t sizes[2] = {2, 3}, empty = 0;
    ferry_tensor *t = i == 6    ? ferry_ones(2, sizes, FERRY_FLOAT32)
                      : i == 7  ? ferry_ones(1, sizes, FERRY_INT64)
                      : i == 9  ? ferry_ones(0, NULL, FERRY_FLOAT64)
                      : i == 11 ? ferry_zeros(1, &empty, FERRY_FLOAT32)
                      : i == 12 ? ferry_ones(1, sizes, FERRY_INT32)
                                : NULL;
    ferry_value *v;
    switch (i) {
    case 0: return ferry_none();
    case 1: return ferry_int(2);
    case 2: return ferry_int(-1);
    case 3: return ferry_double(1.5);
    case 4: return ferry_string("float64");
    case 5: return ferry_list_of(2, ferry_int(2), ferry_int(3));
    case 8: return ferry_list_of(0);
    case 10: return ferry_bool(true);
    case 13: return ferry_list_of(2, sample(6), sample(6));
    default:
        v = ferry_tensor_value(t);
        ferry_tensor_release(t);
        return v;
    }
}
#define NSAMPLES 14

/* Calls builtin `e` directly with `na` samples picked by `pick` and one keyword (or none). */
static bool call_is_clean(const ferry_builtin_info *b, const ferry__fn_entry *e, int na, int pick,
                          const char *key, int kv)
{
    ferry_value *items[2] = {NULL, NULL};
    for (int k = 0; k < na; k++, pick /= NSAMPLES)
        items[k] = sample(pick % NSAMPLES);
    ferry_value *args = ferry_list_from(items, (size_t)na);
    for (int k = 0; k < na; k++)
        ferry_value_release(items[k]);
    ferry_value *kwargs = ferry_dict_new();
    if (key) {
        ferry_value *v = sample(kv);
        ferry_dict_set(kwargs, key, v);
        ferry_value_release(v);
    }
    ferry_value *r = NULL;
    ferry_clear_error();
    ferry_status rc = e->fn(args, kwargs, &r, e->user);
    bool clean = rc == FERRY_OK ? r != NULL : !r && *ferry_last_error();
    if (!clean)
        fprintf(stderr, "%s with %d args (pick %d) and %s: rc %d, %s\n", b->name, na, pick,
                key ? key : "no keyword", rc, r ? "a result" : "no message");
    ferry_value_release(r);
    ferry_value_release(args);
    ferry_value_release(kwargs);
    return clean;
}

Test(builtins_registry, answer_any_mix_of_arguments_with_a_value_or_a_message, .timeout = 60)
{
    size_t n = 0;
    ferry_builtins(NULL, 0, &n);
    ferry_builtin_info *all = calloc(n, sizeof *all);
    ferry_builtins(all, n, NULL);
    static const char *const keys[] = {"dim", "dtype", "keepdim", "alpha", "start", "default",
                                       "size"};
    size_t unclean = 0;
    for (size_t b = 0; b < n; b++) {
        ferry__fn_entry e;
        cr_assert(ferry__registry_lookup(all[b].name, &e), "%s", all[b].name);
        for (int pick = 0; pick < NSAMPLES * NSAMPLES; pick++)
            unclean += !call_is_clean(&all[b], &e, 2, pick, NULL, 0);
        for (int pick = 0; pick < NSAMPLES; pick++)
            for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
                for (int kv = 0; kv < NSAMPLES; kv++)
                    unclean += !call_is_clean(&all[b], &e, 1, pick, keys[k], kv);
        unclean += !call_is_clean(&all[b], &e, 0, 0, NULL, 0);
    }
    cr_expect_eq(unclean, 0);
    free(all);
}
