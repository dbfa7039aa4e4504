/* torch.distributed.optim.DistributedOptimizer: one local optimizer per owner of the
   parameters, made with remote() over the owner's very tensors (an OwnerRRef's value is the
   tensor its model uses, so a step updates the model in place), stepped all at once with the
   gradients a distributed autograd context holds on each owner. The remote optimizers are
   objects of an internal class (ferry/object.h). Steps take turns process-wide (torch's local
   optimizers share one lock), so trainers whose optimizers cover the same owner's tensors
   never update them at once. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/pool.h"
#include "ferry/dist_autograd.h"
#include "ferry/object.h"
#include "ferry/optim.h"
#include "ferry/rref.h"

#define LOCAL_CLASS "ferry.optim.LocalOptimizer"

struct ferry_dist_optimizer {
    size_t n_owners;
    ferry_rref **remotes; /* one remote optimizer per owner */
};

/* ---- the options as a value (torch's names), so they travel in a call ---- */

typedef struct {
    const char *name;
    size_t offset;
    bool is_bool;
} option_field;

#define D(f) {#f, offsetof(ferry_optim_options, f), false}
#define B(f) {#f, offsetof(ferry_optim_options, f), true}
static const option_field fields[] = {
    D(lr), D(momentum), D(dampening), D(weight_decay), B(nesterov), B(maximize), D(eps),
    B(amsgrad), D(lr_decay), D(initial_accumulator_value), D(alpha), B(centered), D(rho),
};
static const option_field pairs[] = {
    {"betas", offsetof(ferry_optim_options, betas), false},
    {"etas", offsetof(ferry_optim_options, etas), false},
    {"step_sizes", offsetof(ferry_optim_options, step_sizes), false},
};

static ferry_value *options_value(const ferry_optim_options *o)
{
    ferry_value *d = ferry_dict_new();
    ferry_status rc = d ? FERRY_OK : FERRY_ENOMEM;
    const char *base = (const char *)o;
    for (size_t i = 0; rc == FERRY_OK && i < sizeof fields / sizeof fields[0]; i++) {
        ferry_value *v = fields[i].is_bool ? ferry_bool(*(const bool *)(base + fields[i].offset))
                                           : ferry_double(*(const double *)(base + fields[i].offset));
        rc = v ? ferry_dict_set(d, fields[i].name, v) : FERRY_ENOMEM;
        ferry_value_release(v);
    }
    for (size_t i = 0; rc == FERRY_OK && i < sizeof pairs / sizeof pairs[0]; i++) {
        const double *p = (const double *)(base + pairs[i].offset);
        ferry_value *v = ferry_list_of(2, ferry_double(p[0]), ferry_double(p[1]));
        rc = v ? ferry_dict_set(d, pairs[i].name, v) : FERRY_ENOMEM;
        ferry_value_release(v);
    }
    if (rc != FERRY_OK) {
        ferry_value_release(d);
        return ferry__fail_null(FERRY_ENOMEM, "out of memory sending optimizer options");
    }
    return d;
}

static ferry_status options_from(const ferry_value *d, ferry_optim_kind kind,
                                 ferry_optim_options *o)
{
    ferry_optim_options_init(o, kind);
    char *base = (char *)o;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        ferry_value *v = ferry_dict_get(d, fields[i].name);
        if (!v)
            return ferry__fail(FERRY_EINVAL, "optimizer options lack '%s'", fields[i].name);
        if (fields[i].is_bool)
            *(bool *)(base + fields[i].offset) = ferry_value_as_bool(v);
        else
            *(double *)(base + fields[i].offset) = ferry_value_as_double(v);
    }
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        ferry_value *v = ferry_dict_get(d, pairs[i].name);
        if (ferry_list_len(v) != 2)
            return ferry__fail(FERRY_EINVAL, "optimizer option '%s' is a pair", pairs[i].name);
        double *p = (double *)(base + pairs[i].offset);
        p[0] = ferry_value_as_double(ferry_list_get(v, 0));
        p[1] = ferry_value_as_double(ferry_list_get(v, 1));
    }
    ferry_clear_error();
    return FERRY_OK;
}

/* ---- the remote optimizer: an object on the owner ---- */

typedef struct {
    ferry_optimizer *opt;
    ferry_tensor **params; /* the owner's tensors, in the order given */
    size_t n;
} local_opt;

static void local_free(void *p, void *user)
{
    local_opt *l = p;
    ferry_optimizer_free(l->opt);
    for (size_t i = 0; i < l->n; i++)
        ferry_tensor_release(l->params[i]);
    ferry__free(l->params);
    ferry__free(l);
}

/* [kind, options, rref...] on the owner of every rref. */
static ferry_status local_new(const ferry_value *args, const ferry_value *kwargs, void **out,
                              void *user)
{
    size_t n = ferry_list_len(args);
    if (n < 3)
        return ferry__fail(FERRY_EINVAL, "a remote optimizer takes [kind, options, params...]");
    int64_t kind = ferry_value_as_int(ferry_list_get(args, 0));
    if (ferry_value_kind(ferry_list_get(args, 0)) != FERRY_VALUE_INT || kind < 0 ||
        kind >= FERRY_OPTIM_KIND_COUNT)
        return ferry__fail(FERRY_EINVAL, "unknown optimizer kind %lld", (long long)kind);
    ferry_optim_options o;
    ferry_status rc = options_from(ferry_list_get(args, 1), (ferry_optim_kind)kind, &o);
    if (rc != FERRY_OK)
        return rc;
    local_opt *l = ferry__calloc(1, sizeof *l);
    if (l)
        l->params = ferry__calloc(n - 2, sizeof *l->params);
    if (!l || !l->params) {
        ferry__free(l);
        return ferry__fail(FERRY_ENOMEM, "out of memory for a remote optimizer");
    }
    for (size_t i = 2; rc == FERRY_OK && i < n; i++) {
        ferry_rref *r = ferry_value_as_rref(ferry_list_get(args, i));
        ferry_value *v = r ? ferry_rref_local_value(r) : NULL;
        ferry_tensor *t = v ? ferry_value_as_tensor(v) : NULL;
        if (!r || !v || !t)
            rc = ferry_set_error(ferry_last_status() ? ferry_last_status() : FERRY_EINVAL,
                                 "parameter %zu: %s", i - 2,
                                 v ? "the RRef holds no tensor" : ferry_last_error());
        else
            l->params[l->n++] = ferry_tensor_retain(t);
        ferry_value_release(v);
    }
    if (rc == FERRY_OK && !(l->opt = ferry_optimizer_new((ferry_optim_kind)kind, &o, l->params,
                                                         l->n)))
        rc = ferry_last_status();
    if (rc != FERRY_OK) {
        local_free(l, NULL);
        return rc;
    }
    *out = l;
    return FERRY_OK;
}

static pthread_mutex_t step_lock = PTHREAD_MUTEX_INITIALIZER;

/* step([ctx]): the context's gradients on this worker, NULL where a parameter got none. */
static ferry_status local_step(void *p, const ferry_value *args, const ferry_value *kwargs,
                               ferry_value **result, void *user)
{
    local_opt *l = p;
    ferry_value *c = ferry_list_get(args, 0);
    if (ferry_value_kind(c) != FERRY_VALUE_INT)
        return ferry__fail(FERRY_EINVAL, "step takes [context id]");
    int64_t ctx = ferry_value_as_int(c);
    ferry_tensor **grads = ferry__calloc(l->n ? l->n : 1, sizeof *grads);
    if (!grads)
        return ferry__fail(FERRY_ENOMEM, "out of memory for the gradients");
    ferry_status rc = FERRY_OK;
    for (size_t i = 0; rc == FERRY_OK && i < l->n; i++) {
        ferry_clear_error();
        grads[i] = ferry_dist_autograd_get_gradient(ctx, l->params[i]);
        if (!grads[i] && ferry_last_status() != FERRY_OK)
            rc = ferry_last_status();
    }
    if (rc == FERRY_OK) {
        /* Steps of every remote optimizer in this process take turns, as torch's local
           optimizers share one lock: two trainers' optimizers over one owner's tensors must
           never update them at once. */
        if (pthread_mutex_trylock(&step_lock) != 0) {
            ferry__pool_blocking_begin();
            pthread_mutex_lock(&step_lock);
            ferry__pool_blocking_end();
        }
        rc = ferry_optimizer_step_grads(l->opt, grads, l->n);
        pthread_mutex_unlock(&step_lock);
    }
    for (size_t i = 0; i < l->n; i++)
        ferry_tensor_release(grads[i]);
    ferry__free(grads);
    return rc;
}

/* ready(): answers once the constructor has run, so a creation failure surfaces here. */
static ferry_status local_ready(void *p, const ferry_value *args, const ferry_value *kwargs,
                                ferry_value **result, void *user)
{
    *result = ferry_int((int64_t)((local_opt *)p)->n);
    return *result ? FERRY_OK : FERRY_ENOMEM;
}

static const ferry_method_def local_methods[] = {
    {"step", local_step, false},
    {"ready", local_ready, true},
};

__attribute__((constructor)) static void register_local_class(void)
{
    static const ferry_class_def def = {
        .construct = local_new,
        .destroy = local_free,
        .methods = local_methods,
        .n_methods = sizeof local_methods / sizeof local_methods[0],
    };
    (void)ferry_register_class(LOCAL_CLASS, &def);
}

/* ---- the trainer's side ---- */

void ferry_dist_optimizer_free(ferry_dist_optimizer *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_owners; i++)
        ferry_rref_release(d->remotes[i]);
    ferry__free(d->remotes);
    ferry__free(d);
}

/* Waits for every future (all of them, whatever fails) and returns the first failure, worded
   `what`; releases them. */
static ferry_status wait_all(ferry_future **fs, size_t n, const char *what)
{
    ferry_status first = FERRY_OK;
    char why[1024] = "";
    for (size_t i = 0; i < n; i++) {
        ferry_status rc = fs[i] ? ferry_future_wait(fs[i], 0) : FERRY_ENOMEM;
        if (rc == FERRY_OK && fs[i])
            rc = ferry_future_status(fs[i]);
        if (rc != FERRY_OK && first == FERRY_OK) {
            first = rc;
            snprintf(why, sizeof why, "%s", fs[i] ? ferry_future_error(fs[i]) : ferry_last_error());
        }
        ferry_future_release(fs[i]);
    }
    return first == FERRY_OK ? FERRY_OK : ferry_set_error(first, "%s: %s", what, why);
}

/* Calls `method` on every remote optimizer at once and waits for all. */
static ferry_status call_all(ferry_dist_optimizer *d, const char *method, ferry_value *args,
                             const char *what)
{
    ferry_future **fs = ferry__calloc(d->n_owners, sizeof *fs);
    if (!fs)
        return ferry__fail(FERRY_ENOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < d->n_owners; i++)
        fs[i] = ferry_rref_call_async(d->remotes[i], method, args, NULL, FERRY_TIMEOUT_DEFAULT);
    ferry_status rc = wait_all(fs, d->n_owners, what);
    ferry__free(fs);
    return rc;
}

/* The index of `name` among the first n owners, or n. */
static size_t owner_index(const char *const *owners, size_t n, const char *name)
{
    size_t i = 0;
    while (i < n && strcmp(owners[i], name) != 0)
        i++;
    return i;
}

/* The arguments of owner k's remote optimizer: [kind, options, its RRefs in the order given]. */
static ferry_value *owner_args(ferry_optim_kind kind, ferry_value *opts, ferry_rref **params,
                               const size_t *owner_of, size_t n, size_t k)
{
    size_t m = 2;
    for (size_t i = 0; i < n; i++)
        m += owner_of[i] == k;
    ferry_value **items = ferry__calloc(m, sizeof *items);
    if (!items)
        return NULL;
    items[0] = ferry_int(kind);
    items[1] = ferry_value_retain(opts);
    bool ok = items[0] != NULL;
    for (size_t i = 0, j = 2; i < n; i++)
        if (owner_of[i] == k)
            ok &= (items[j++] = ferry_rref_value(params[i])) != NULL;
    ferry_value *l = ok ? ferry_list_from(items, m) : NULL;
    for (size_t j = 0; j < m; j++)
        ferry_value_release(items[j]);
    ferry__free(items);
    return l;
}

ferry_dist_optimizer *ferry_dist_optimizer_new(ferry_optim_kind kind, const ferry_optim_options *o,
                                               ferry_rref **params, size_t n)
{
    if (!ferry_optim_kind_name(kind))
        return ferry__fail_null(FERRY_EINVAL, "unknown optimizer kind %d", (int)kind);
    if (!params || n == 0)
        return ferry__fail_null(FERRY_EINVAL, "optimizer got an empty parameter list");
    for (size_t i = 0; i < n; i++)
        if (!params[i])
            return ferry__fail_null(FERRY_EINVAL, "parameter RRef %zu is NULL", i);
    ferry_optim_options defaults;
    if (!o) {
        ferry_optim_options_init(&defaults, kind);
        o = &defaults;
    }
    ferry_dist_optimizer *d = ferry__calloc(1, sizeof *d);
    const char **owners = ferry__calloc(n, sizeof *owners);
    size_t *owner_of = ferry__calloc(n, sizeof *owner_of);
    ferry_value *opts = options_value(o);
    if (d)
        d->remotes = ferry__calloc(n, sizeof *d->remotes);
    ferry_status rc = d && d->remotes && owners && owner_of && opts
                          ? FERRY_OK
                          : ferry__fail(FERRY_ENOMEM, "out of memory for a distributed optimizer");
    /* Owners in the order they first appear; each gets one remote optimizer over its RRefs. */
    size_t n_owners = 0;
    for (size_t i = 0; rc == FERRY_OK && i < n; i++) {
        const char *owner = ferry_rref_owner_name(params[i]);
        owner_of[i] = owner_index(owners, n_owners, owner);
        if (owner_of[i] == n_owners)
            owners[n_owners++] = owner;
    }
    for (size_t k = 0; rc == FERRY_OK && k < n_owners; k++) {
        ferry_value *args = owner_args(kind, opts, params, owner_of, n, k);
        d->remotes[k] = args ? ferry_remote_object(owners[k], LOCAL_CLASS, args, NULL,
                                                   FERRY_TIMEOUT_DEFAULT)
                             : NULL;
        if (!d->remotes[k])
            rc = ferry_set_error(args ? ferry_last_status() : FERRY_ENOMEM,
                                 "Error creating optimizer on worker '%s': %s", owners[k],
                                 args ? ferry_last_error() : "out of memory");
        else
            d->n_owners++;
        ferry_value_release(args);
    }
    ferry__free(owners);
    ferry__free(owner_of);
    ferry_value_release(opts);
    /* torch waits for every remote optimizer before the constructor returns. */
    if (rc == FERRY_OK)
        rc = call_all(d, "ready", NULL, "Error creating optimizer");
    if (rc != FERRY_OK) {
        ferry_dist_optimizer_free(d);
        return NULL;
    }
    return d;
}

ferry_status ferry_dist_optimizer_step(ferry_dist_optimizer *d, int64_t ctx)
{
    if (!d)
        return ferry__fail(FERRY_EINVAL, "NULL distributed optimizer");
    ferry_value *args = ferry_list_of(1, ferry_int(ctx));
    if (!args)
        return FERRY_ENOMEM;
    ferry_status rc = call_all(d, "step", args, "Error running optimizer");
    ferry_value_release(args);
    return rc;
}
