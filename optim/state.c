/* Saving and loading an optimizer's state as one safetensors file in torch's state_dict layout:
   tensors "state.<param index>.<key>" and metadata "optimizer" (torch's class name) and
   "param_groups" (state_json.c). A load builds the whole new state aside and swaps it in only
   when every check passed, so a bad file leaves the optimizer as it was. */
#include "optim/optim_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/safetensors.h"

#define NAME_CAP 64

/* The tensors to write: names (owned) and tensors (owned references). */
typedef struct {
    char **names;
    ferry_tensor **tensors;
    size_t n, cap;
} entries;

static void entries_free(entries *es)
{
    for (size_t i = 0; i < es->n; i++) {
        ferry__free(es->names[i]);
        ferry_tensor_release(es->tensors[i]);
    }
    ferry__free(es->names);
    ferry__free(es->tensors);
}

/* Adds `t` (a new reference, taken over even on failure) under state.<i>.<key>. */
static ferry_status entries_add(entries *es, size_t i, const char *key, ferry_tensor *t)
{
    if (t == NULL)
        return ferry_last_status();
    if (es->n == es->cap) {
        size_t cap = es->cap ? es->cap * 2 : 16;
        char **nn = ferry__realloc(es->names, cap * sizeof *nn);
        if (nn != NULL)
            es->names = nn;
        ferry_tensor **nt = nn ? ferry__realloc(es->tensors, cap * sizeof *nt) : NULL;
        if (nt == NULL) {
            ferry_tensor_release(t);
            return ferry__fail(FERRY_ENOMEM, "no memory for the state file's entries");
        }
        es->tensors = nt;
        es->cap = cap;
    }
    char name[NAME_CAP];
    snprintf(name, sizeof name, "state.%zu.%s", i, key);
    if ((es->names[es->n] = ferry__strdup(name)) == NULL) {
        ferry_tensor_release(t);
        return ferry__fail(FERRY_ENOMEM, "no memory for the state file's entries");
    }
    es->tensors[es->n++] = t;
    return FERRY_OK;
}

static ferry_tensor *step_tensor(ferry__step_kind kind, double step)
{
    if (kind == FERRY__STEP_TENSOR)
        return ferry_scalar_tensor(step, FERRY_FLOAT32);
    int64_t v = (int64_t)step;
    return ferry_tensor_from_data(&v, 0, NULL, FERRY_INT64);
}

ferry_status ferry_optimizer_save(const ferry_optimizer *opt, const char *path)
{
    if (opt == NULL || path == NULL)
        return ferry__fail(FERRY_EINVAL, "optimizer or path is NULL");
    size_t n_keys;
    ferry__step_kind step_kind;
    const char *const *keys = ferry__optim_state_keys(opt->kind, &n_keys, &step_kind);
    entries es = {0};
    ferry_status rc = FERRY_OK;
    for (size_t i = 0; i < opt->n_params && rc == FERRY_OK; i++) {
        const ferry__optim_state *s = &opt->states[i];
        if (!s->has_state)
            continue;
        if (step_kind != FERRY__STEP_NONE)
            rc = entries_add(&es, i, "step", step_tensor(step_kind, s->step));
        for (size_t k = 0; k < n_keys && rc == FERRY_OK; k++)
            if (s->bufs[k] != NULL)
                rc = entries_add(&es, i, keys[k], ferry_tensor_retain(s->bufs[k]));
    }
    char *groups = rc == FERRY_OK ? ferry__optim_groups_json(opt) : NULL;
    if (rc == FERRY_OK && groups == NULL)
        rc = ferry_last_status();
    if (rc == FERRY_OK) {
        const char *meta_keys[] = {"optimizer", "param_groups"};
        const char *meta_values[] = {ferry_optim_kind_name(opt->kind), groups};
        rc = ferry_safetensors_save_with_metadata(path, (const char *const *)es.names, es.tensors,
                                                  es.n, meta_keys, meta_values, 2);
    }
    ferry__free(groups);
    entries_free(&es);
    return rc;
}

/* ---- loading ---- */

/* Splits "state.<id>.<key>"; false when the name has another form. */
static bool split_name(const char *name, int64_t *id, const char **key)
{
    if (strncmp(name, "state.", 6) != 0 || name[6] < '0' || name[6] > '9')
        return false;
    char *end;
    long long v = strtoll(name + 6, &end, 10);
    if (*end != '.' || end[1] == '\0' || v < 0)
        return false;
    *id = v;
    *key = end + 1;
    return true;
}

/* The saved ids of every group, in group order, mapped to this optimizer's parameter indices. */
static ferry_status find_param(const ferry__optim_saved_group *gs, size_t n_groups, int64_t id,
                               size_t *index)
{
    size_t at = 0;
    for (size_t g = 0; g < n_groups; g++)
        for (size_t j = 0; j < gs[g].n_ids; j++, at++)
            if (gs[g].ids[j] == id) {
                *index = at;
                return FERRY_OK;
            }
    return ferry__fail(FERRY_EINVAL, "the state file holds state for parameter id %" PRId64
                                     ", which no parameter group lists", id);
}

/* Checks the groups against the optimizer (torch's messages) and their options. */
static ferry_status check_groups(const ferry_optimizer *opt, const ferry__optim_saved_group *gs,
                                 size_t n)
{
    if (n != opt->n_groups)
        return ferry__fail(FERRY_EINVAL, "loaded state dict has a different number of parameter "
                                         "groups");
    for (size_t g = 0; g < n; g++)
        if (gs[g].n_ids != opt->groups[g].count)
            return ferry__fail(FERRY_EINVAL, "loaded state dict contains a parameter group that "
                                             "doesn't match the size of optimizer's group");
    for (size_t g = 0; g < n; g++) {
        for (size_t j = 0; j < gs[g].n_ids; j++) {
            size_t first;
            find_param(gs, n, gs[g].ids[j], &first);
            if (first != opt->groups[g].first + j)
                return ferry__fail(FERRY_EPROTO, "param_groups lists parameter id %" PRId64
                                                 " twice", gs[g].ids[j]);
        }
        ferry_status rc = ferry__optim_check(opt->kind, &gs[g].o);
        if (rc != FERRY_OK)
            return ferry__fail(rc, "parameter group %zu of the state file: %s", g, ferry_last_error());
    }
    return FERRY_OK;
}

/* Puts one file tensor into the new state of parameter i. */
static ferry_status take_tensor(const ferry_optimizer *opt, ferry__optim_state *states, size_t i,
                                const char *name, const char *key, const ferry_tensor *t)
{
    size_t n_keys;
    ferry__step_kind step_kind;
    const char *const *keys = ferry__optim_state_keys(opt->kind, &n_keys, &step_kind);
    ferry__optim_state *s = &states[i];
    if (strcmp(key, "step") == 0 && step_kind != FERRY__STEP_NONE) {
        if (ferry_tensor_numel(t) != 1)
            return ferry__fail(FERRY_EINVAL, "%s holds %" PRId64 " elements, not one", name,
                               ferry_tensor_numel(t));
        s->step = ferry_tensor_item(t);
        s->has_state = true;
        return FERRY_OK;
    }
    size_t k = 0;
    while (k < n_keys && strcmp(keys[k], key) != 0)
        k++;
    if (k == n_keys)
        return ferry__fail(FERRY_EINVAL, "%s: %s keeps no state called \"%s\"", name,
                           ferry_optim_kind_name(opt->kind), key);
    const ferry_tensor *p = opt->params[i];
    int nd = ferry_tensor_ndim(p);
    if (ferry_tensor_ndim(t) != nd ||
        memcmp(ferry_tensor_sizes(t), ferry_tensor_sizes(p), (size_t)nd * sizeof(int64_t)) != 0)
        return ferry__fail(FERRY_EINVAL, "%s does not have the shape of parameter %zu", name, i);
    ferry_dtype dt = ferry_tensor_dtype(t);
    if (dt != FERRY_FLOAT32 && dt != FERRY_FLOAT64 && dt != FERRY_FLOAT16 && dt != FERRY_BFLOAT16)
        return ferry__fail(FERRY_EINVAL, "%s is %s, not a floating dtype", name, ferry_dtype_name(dt));
    /* As torch's load_state_dict: floating state takes the parameter's dtype. */
    ferry_tensor *d = ferry_tensor_to_dtype(t, ferry_tensor_dtype(p));
    /* ... and the parameter's device */
    ferry_tensor *c = d ? ferry_tensor_to(d, ferry_tensor_device(p)) : NULL;
    ferry_tensor_release(d);
    if (c == NULL)
        return ferry_last_status();
    ferry_tensor_release(s->bufs[k]);
    s->bufs[k] = c;
    s->has_state = true;
    return FERRY_OK;
}

static ferry_status read_states(const ferry_optimizer *opt, const ferry_safetensors *st,
                                const ferry__optim_saved_group *gs, size_t n_groups,
                                ferry__optim_state *states)
{
    size_t n_keys;
    ferry__step_kind step_kind;
    ferry__optim_state_keys(opt->kind, &n_keys, &step_kind);
    bool *has_step = ferry__calloc(opt->n_params ? opt->n_params : 1, sizeof *has_step);
    if (has_step == NULL)
        return ferry__fail(FERRY_ENOMEM, "no memory to load optimizer state");
    ferry_status rc = FERRY_OK;
    for (size_t e = 0; e < ferry_safetensors_count(st) && rc == FERRY_OK; e++) {
        const char *name = ferry_safetensors_name(st, e), *key;
        int64_t id;
        size_t i;
        if (!split_name(name, &id, &key)) {
            rc = ferry__fail(FERRY_EINVAL, "the state file holds \"%s\", not a state.<id>.<key> "
                                           "tensor", name);
            break;
        }
        if ((rc = find_param(gs, n_groups, id, &i)) != FERRY_OK)
            break;
        ferry_tensor *t = ferry_safetensors_get(st, name);
        rc = t ? take_tensor(opt, states, i, name, key, t) : ferry_last_status();
        ferry_tensor_release(t);
        if (rc == FERRY_OK && strcmp(key, "step") == 0)
            has_step[i] = true;
    }
    for (size_t i = 0; i < opt->n_params && rc == FERRY_OK; i++)
        if (states[i].has_state && step_kind != FERRY__STEP_NONE && !has_step[i])
            rc = ferry__fail(FERRY_EINVAL, "the state of parameter %zu has no step", i);
    ferry__free(has_step);
    return rc;
}

ferry_status ferry_optimizer_load(ferry_optimizer *opt, const char *path)
{
    if (opt == NULL || path == NULL)
        return ferry__fail(FERRY_EINVAL, "optimizer or path is NULL");
    ferry_safetensors *st = ferry_safetensors_load(path);
    if (st == NULL)
        return ferry_last_status();
    ferry__optim_saved_group *gs = NULL;
    size_t n_groups = 0;
    ferry__optim_state *states = NULL;
    const char *kind = ferry_safetensors_metadata(st, "optimizer");
    const char *groups = ferry_safetensors_metadata(st, "param_groups");
    ferry_status rc = FERRY_OK;
    if (kind == NULL || groups == NULL)
        rc = ferry__fail(FERRY_EINVAL, "%s is not an optimizer state file (no \"optimizer\" and "
                                       "\"param_groups\" metadata)", path);
    else if (strcmp(kind, ferry_optim_kind_name(opt->kind)) != 0)
        rc = ferry__fail(FERRY_EINVAL, "%s holds %s state, not %s state", path, kind,
                         ferry_optim_kind_name(opt->kind));
    if (rc == FERRY_OK)
        rc = ferry__optim_groups_parse(opt->kind, groups, &gs, &n_groups);
    if (rc == FERRY_OK)
        rc = check_groups(opt, gs, n_groups);
    if (rc == FERRY_OK && (states = ferry__calloc(opt->n_params, sizeof *states)) == NULL)
        rc = ferry__fail(FERRY_ENOMEM, "no memory to load optimizer state");
    if (rc == FERRY_OK)
        rc = read_states(opt, st, gs, n_groups, states);
    if (rc == FERRY_OK) {
        for (size_t i = 0; i < opt->n_params; i++) {
            ferry__optim_state_clear(&opt->states[i]);
            opt->states[i] = states[i];
        }
        for (size_t g = 0; g < n_groups; g++)
            opt->groups[g].o = gs[g].o;
    } else if (states != NULL) {
        for (size_t i = 0; i < opt->n_params; i++)
            ferry__optim_state_clear(&states[i]);
    }
    ferry__free(states);
    ferry__optim_saved_groups_free(gs, n_groups);
    ferry_safetensors_free(st);
    return rc;
}
