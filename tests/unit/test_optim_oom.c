/* Allocation failures anywhere in an optimizer's life (construction, groups, steps on contiguous
   and non-contiguous parameters, save, load): each call either succeeds or fails with
   FERRY_ENOMEM, never crashing or leaking (the sanitizer build checks the latter). */
#include "core/alloc.h"
#include "test_optim_util.h"

#include <unistd.h>

typedef struct {
    ferry_tensor *w, *b, *gw, *gb;
} oom_model;

/* new, add_param_group, two steps, save, load into a second optimizer, step it. */
static ferry_status scenario(ferry_optim_kind kind, const ferry_optim_options *o, oom_model *m,
                             const char *path)
{
    ferry_optimizer *opt = ferry_optimizer_new(kind, o, &m->w, 1), *again = NULL;
    ferry_status rc = opt ? ferry_optimizer_add_param_group(opt, o, &m->b, 1) : ferry_last_status();
    ferry_tensor *grads[] = {m->gw, m->gb};
    for (int s = 0; s < 2 && rc == FERRY_OK; s++)
        rc = ferry_optimizer_step_grads(opt, grads, 2);
    if (rc == FERRY_OK)
        rc = ferry_optimizer_save(opt, path);
    if (rc == FERRY_OK && (again = ferry_optimizer_new(kind, o, &m->w, 1)) == NULL)
        rc = ferry_last_status();
    if (rc == FERRY_OK)
        rc = ferry_optimizer_add_param_group(again, o, &m->b, 1);
    if (rc == FERRY_OK)
        rc = ferry_optimizer_load(again, path);
    if (rc == FERRY_OK)
        rc = ferry_optimizer_step_grads(again, grads, 2);
    ferry_optimizer_free(again);
    ferry_optimizer_free(opt);
    return rc;
}

static void sweep(ferry_optim_kind kind, const ferry_optim_options *o)
{
    char dir[256], path[300];
    ferry_test_mkdtemp(dir, sizeof dir, "ferry-optim-oom");
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    oom_model m;
    ferry_tensor *store = ferry_assert_ptr(ferry_rand(2, (int64_t[]){4, 3}, FERRY_FLOAT64, NULL));
    m.w = ferry_assert_ptr(ferry_tensor_transpose(store, 0, 1)); /* non-contiguous [3, 4] */
    m.b = ferry_assert_ptr(ferry_rand(1, (int64_t[]){3}, FERRY_FLOAT32, NULL));
    m.gw = ferry_assert_ptr(ferry_rand(2, (int64_t[]){3, 4}, FERRY_FLOAT64, NULL));
    m.gb = ferry_assert_ptr(ferry_rand(1, (int64_t[]){3}, FERRY_FLOAT32, NULL));
    bool succeeded = false;
    for (long nth = 1; nth < 2000 && !succeeded; nth++) {
        ferry__alloc_fail_after(nth, 1);
        ferry_status rc = scenario(kind, o, &m, path);
        ferry__alloc_fail_after(0, 0);
        cr_assert(rc == FERRY_OK || rc == FERRY_ENOMEM, "%s, allocation %ld: %s: %s",
                  ferry_optim_kind_name(kind), nth, ferry_strerror(rc), ferry_last_error());
        succeeded = rc == FERRY_OK;
        unlink(path);
    }
    cr_assert(succeeded, "%s never got through", ferry_optim_kind_name(kind));
    cr_assert(rmdir(dir) == 0);
    ferry_tensor *all[] = {store, m.w, m.b, m.gw, m.gb};
    for (size_t k = 0; k < 5; k++)
        ferry_tensor_release(all[k]);
}

Test(optim_oom, every_kind_fails_cleanly_when_any_allocation_fails, .timeout = 60)
{
    for (int k = 0; k < FERRY_OPTIM_KIND_COUNT; k++) {
        ferry_optim_options o;
        ferry_optim_options_init(&o, (ferry_optim_kind)k);
        o.lr = 0.01;
        o.momentum = 0.5;
        o.amsgrad = true;
        o.centered = true;
        sweep((ferry_optim_kind)k, &o);
    }
}
