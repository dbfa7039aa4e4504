/* The dispatch and collect policies of group calls: what each member is sent (its share of the
   call's arguments) and how the members' results fold into the call's result. Pure functions of
   values, run on the caller's thread (dispatch) and on a pool thread (collect); group.c does the
   sending and the waiting. The slicing rule is torch.chunk's, the folds are Python's sum() and
   torch.cat over the members' results in member order. */
#include "rref/object/group_impl.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/value_impl.h"
#include "core/value_lent.h"
#include "ferry/ops.h"
#include "ferry/tensor.h"

/* Where in a result a fold failed, for messages: "result[2]['loss']". */
#define PATH_CAP 160

typedef struct {
    char s[PATH_CAP];
    size_t len;
} fold_path;

/* ---- slicing ---- */

void ferry__group_chunk(int64_t len, size_t n, size_t index, int64_t *start, int64_t *count)
{
    int64_t parts = (int64_t)n;
    int64_t chunk = len / parts + (len % parts != 0);
    *start = len;
    *count = 0;
    if (chunk == 0 || (int64_t)index > (len - 1) / chunk)
        return;
    *start = (int64_t)index * chunk;
    *count = len - *start < chunk ? len - *start : chunk;
}

static ferry_value *slice_tensor(ferry_tensor *t, size_t n, size_t index)
{
    int64_t start, count;
    ferry__group_chunk(ferry_tensor_size(t, 0), n, index, &start, &count);
    ferry_tensor *part = ferry_narrow(t, 0, start, count);
    if (!part)
        return NULL;
    ferry_value *v = ferry_tensor_value(part);
    ferry_tensor_release(part);
    return v;
}

static ferry_value *slice_list(const ferry_value *list, size_t n, size_t index)
{
    int64_t start, count;
    ferry__group_chunk((int64_t)ferry_list_len(list), n, index, &start, &count);
    ferry_value *part = ferry__list_new((size_t)count);
    if (!part)
        return NULL;
    for (int64_t k = 0; k < count; k++) {
        ferry_value *item = ferry_list_get(list, (size_t)(start + k));
        ferry__list_set(part, (size_t)k, ferry_value_retain(item));
    }
    return part;
}

/* Member `index`'s share of one argument (new reference). A 0-dim tensor has no first
   dimension, so it goes whole, as any other value. */
static ferry_value *slice_value(ferry_value *v, size_t n, size_t index)
{
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_TENSOR: {
        ferry_tensor *t = ferry_value_as_tensor(v);
        if (ferry_tensor_ndim(t) > 0)
            return slice_tensor(t, n, index);
        return ferry_value_retain(v);
    }
    case FERRY_VALUE_LIST:
        return slice_list(v, n, index);
    default:
        return ferry_value_retain(v);
    }
}

static ferry_value *slice_args(const ferry_value *args, size_t n, size_t index)
{
    size_t len = ferry_list_len(args);
    ferry_value *out = ferry__list_new(len);
    for (size_t k = 0; out && k < len; k++) {
        ferry_value *part = slice_value(ferry_list_get(args, k), n, index);
        if (!part) {
            ferry_value_release(out);
            return ferry__fail_null(ferry_last_status(), "slicing argument %zu for member %zu: %s",
                                    k, index, ferry_last_error());
        }
        ferry__list_set(out, k, part);
    }
    return out;
}

static ferry_value *slice_kwargs(const ferry_value *kwargs, size_t n, size_t index)
{
    ferry_value *out = ferry_dict_new();
    for (size_t k = 0; out && k < ferry_dict_len(kwargs); k++) {
        const char *key = ferry_dict_key_at(kwargs, k);
        ferry_value *part = slice_value(ferry_dict_value_at(kwargs, k), n, index);
        ferry_status rc = part ? ferry_dict_set(out, key, part) : ferry_last_status();
        ferry_value_release(part);
        if (rc != FERRY_OK) {
            ferry_value_release(out);
            return ferry__fail_null(rc, "slicing keyword '%s' for member %zu: %s", key, index,
                                    ferry_last_error());
        }
    }
    return out;
}

ferry_status ferry__group_slice(const ferry_value *args, const ferry_value *kwargs, size_t n,
                                size_t index, ferry_value **member_args,
                                ferry_value **member_kwargs)
{
    *member_args = *member_kwargs = NULL;
    if (args && ferry_value_kind(args) != FERRY_VALUE_LIST)
        return ferry__fail(FERRY_EINVAL, "a group call's args must be a list, not a %s",
                           ferry_kind_name(ferry_value_kind(args)));
    if (kwargs && ferry_value_kind(kwargs) != FERRY_VALUE_DICT)
        return ferry__fail(FERRY_EINVAL, "a group call's kwargs must be a dict, not a %s",
                           ferry_kind_name(ferry_value_kind(kwargs)));
    if (n == 0 || index >= n)
        return ferry__fail(FERRY_EINVAL, "member %zu of a group of %zu", index, n);
    ferry_value *a = args ? slice_args(args, n, index) : ferry__list_new(0);
    if (!a)
        return ferry_last_status();
    ferry_value *k = NULL;
    if (kwargs && !(k = slice_kwargs(kwargs, n, index))) {
        ferry_value_release(a);
        return ferry_last_status();
    }
    *member_args = a;
    *member_kwargs = k;
    return FERRY_OK;
}

/* ---- folding: paths and messages ---- */

static size_t path_push_index(fold_path *p, size_t i)
{
    size_t at = p->len;
    int k = snprintf(p->s + at, PATH_CAP - at, "[%zu]", i);
    p->len = k < 0 || (size_t)k >= PATH_CAP - at ? PATH_CAP - 1 : at + (size_t)k;
    return at;
}

static size_t path_push_key(fold_path *p, const char *key)
{
    size_t at = p->len;
    int k = snprintf(p->s + at, PATH_CAP - at, "['%s']", key);
    p->len = k < 0 || (size_t)k >= PATH_CAP - at ? PATH_CAP - 1 : at + (size_t)k;
    return at;
}

static void path_pop(fold_path *p, size_t at)
{
    p->len = at;
    p->s[at] = '\0';
}

static void path_init(fold_path *p)
{
    strcpy(p->s, "result");
    p->len = strlen(p->s);
}

static bool is_number(const ferry_value *v)
{
    ferry_kind k = ferry_value_kind(v);
    return k == FERRY_VALUE_INT || k == FERRY_VALUE_DOUBLE;
}

/* ---- SUM ---- */

/* Checks that v is something SUM can add: numbers, tensors, lists and dicts of them. */
static ferry_status check_summable(const ferry_value *v, fold_path *p)
{
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_INT:
    case FERRY_VALUE_DOUBLE:
    case FERRY_VALUE_TENSOR:
        return FERRY_OK;
    case FERRY_VALUE_LIST:
        for (size_t i = 0; i < ferry_list_len(v); i++) {
            size_t at = path_push_index(p, i);
            ferry_status rc = check_summable(ferry_list_get(v, i), p);
            path_pop(p, at);
            if (rc != FERRY_OK)
                return rc;
        }
        return FERRY_OK;
    case FERRY_VALUE_DICT:
        for (size_t i = 0; i < ferry_dict_len(v); i++) {
            size_t at = path_push_key(p, ferry_dict_key_at(v, i));
            ferry_status rc = check_summable(ferry_dict_value_at(v, i), p);
            path_pop(p, at);
            if (rc != FERRY_OK)
                return rc;
        }
        return FERRY_OK;
    default:
        return ferry__fail(FERRY_EINVAL, "%s: a %s cannot be summed", p->s,
                           ferry_kind_name(ferry_value_kind(v)));
    }
}

static ferry_value *add_values(ferry_value *a, ferry_value *b, fold_path *p);

static ferry_value *add_numbers(ferry_value *a, ferry_value *b, fold_path *p)
{
    if (ferry_value_kind(a) == FERRY_VALUE_INT && ferry_value_kind(b) == FERRY_VALUE_INT) {
        int64_t s;
        if (__builtin_add_overflow(ferry_value_as_int(a), ferry_value_as_int(b), &s))
            return ferry__fail_null(FERRY_EINVAL, "%s: the int sum overflows", p->s);
        return ferry_int(s);
    }
    return ferry_double(ferry_value_as_double(a) + ferry_value_as_double(b));
}

static ferry_value *add_tensors(ferry_value *a, ferry_value *b, fold_path *p)
{
    ferry_tensor *t = ferry_add(ferry_value_as_tensor(a), ferry_value_as_tensor(b));
    if (!t)
        return ferry__fail_null(ferry_last_status(), "%s: %s", p->s, ferry_last_error());
    ferry_value *v = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return v;
}

static ferry_value *add_lists(ferry_value *a, ferry_value *b, fold_path *p)
{
    size_t n = ferry_list_len(a);
    if (ferry_list_len(b) != n)
        return ferry__fail_null(FERRY_EINVAL, "%s: a list of %zu items, where the first "
                                              "member's has %zu",
                                p->s, ferry_list_len(b), n);
    ferry_value *out = ferry__list_new(n);
    for (size_t i = 0; out && i < n; i++) {
        size_t at = path_push_index(p, i);
        ferry_value *s = add_values(ferry_list_get(a, i), ferry_list_get(b, i), p);
        path_pop(p, at);
        if (!s) {
            ferry_value_release(out);
            return NULL;
        }
        ferry__list_set(out, i, s);
    }
    return out;
}

static ferry_value *add_dicts(ferry_value *a, ferry_value *b, fold_path *p)
{
    size_t n = ferry_dict_len(a);
    for (size_t i = 0; i < ferry_dict_len(b); i++) {
        const char *key = ferry_dict_key_at(b, i);
        if (!ferry_dict_get(a, key))
            return ferry__fail_null(FERRY_EINVAL, "%s: key '%s' is not in the first member's "
                                                  "dict",
                                    p->s, key);
    }
    ferry_value *out = ferry_dict_new();
    for (size_t i = 0; out && i < n; i++) {
        const char *key = ferry_dict_key_at(a, i);
        ferry_value *other = ferry_dict_get(b, key);
        if (!other) {
            ferry_value_release(out);
            return ferry__fail_null(FERRY_EINVAL, "%s: key '%s' of the first member's dict is "
                                                  "missing",
                                    p->s, key);
        }
        size_t at = path_push_key(p, key);
        ferry_value *s = add_values(ferry_dict_value_at(a, i), other, p);
        path_pop(p, at);
        ferry_status rc = s ? ferry_dict_set(out, key, s) : ferry_last_status();
        ferry_value_release(s);
        if (rc != FERRY_OK) {
            ferry_value_release(out);
            return NULL;
        }
    }
    return out;
}

/* a + b elementwise (new reference), or NULL with the reason and where. */
static ferry_value *add_values(ferry_value *a, ferry_value *b, fold_path *p)
{
    ferry_kind ka = ferry_value_kind(a), kb = ferry_value_kind(b);
    if (is_number(a) && is_number(b))
        return add_numbers(a, b, p);
    if (ka == kb && ka == FERRY_VALUE_TENSOR)
        return add_tensors(a, b, p);
    if (ka == kb && ka == FERRY_VALUE_LIST)
        return add_lists(a, b, p);
    if (ka == kb && ka == FERRY_VALUE_DICT)
        return add_dicts(a, b, p);
    return ferry__fail_null(FERRY_EINVAL, "%s: cannot add a %s to a %s", p->s,
                            ferry_kind_name(kb), ferry_kind_name(ka));
}

static ferry_status fail_member(const char *policy, size_t i, const char *const *names)
{
    return ferry__fail(ferry_last_status(), "%s collect: member %zu (worker '%s'): %s", policy, i,
                       names[i], ferry_last_error());
}

static ferry_status collect_sum(ferry_value *const *results, size_t n, const char *policy,
                                const char *const *names, ferry_value **out)
{
    fold_path p;
    path_init(&p);
    if (check_summable(results[0], &p) != FERRY_OK)
        return fail_member(policy, 0, names);
    ferry_value *acc = ferry_value_retain(results[0]);
    for (size_t i = 1; i < n; i++) {
        ferry_value *next = add_values(acc, results[i], &p);
        ferry_value_release(acc);
        if (!next)
            return fail_member(policy, i, names);
        acc = next;
    }
    *out = acc;
    return FERRY_OK;
}

/* ---- MEAN ---- */

/* v / n elementwise (new reference): numbers become doubles, tensors ferry_div_scalar (an int64
   tensor gives float32, as torch's true division). */
static ferry_value *divide(ferry_value *v, double n, fold_path *p)
{
    switch (ferry_value_kind(v)) {
    case FERRY_VALUE_INT:
    case FERRY_VALUE_DOUBLE:
        return ferry_double(ferry_value_as_double(v) / n);
    case FERRY_VALUE_TENSOR: {
        ferry_tensor *t = ferry_div_scalar(ferry_value_as_tensor(v), n);
        if (!t)
            return ferry__fail_null(ferry_last_status(), "%s: %s", p->s, ferry_last_error());
        ferry_value *r = ferry_tensor_value(t);
        ferry_tensor_release(t);
        return r;
    }
    case FERRY_VALUE_LIST: {
        ferry_value *out = ferry__list_new(ferry_list_len(v));
        for (size_t i = 0; out && i < ferry_list_len(v); i++) {
            size_t at = path_push_index(p, i);
            ferry_value *d = divide(ferry_list_get(v, i), n, p);
            path_pop(p, at);
            if (!d) {
                ferry_value_release(out);
                return NULL;
            }
            ferry__list_set(out, i, d);
        }
        return out;
    }
    case FERRY_VALUE_DICT: {
        ferry_value *out = ferry_dict_new();
        for (size_t i = 0; out && i < ferry_dict_len(v); i++) {
            const char *key = ferry_dict_key_at(v, i);
            size_t at = path_push_key(p, key);
            ferry_value *d = divide(ferry_dict_value_at(v, i), n, p);
            path_pop(p, at);
            ferry_status rc = d ? ferry_dict_set(out, key, d) : ferry_last_status();
            ferry_value_release(d);
            if (rc != FERRY_OK) {
                ferry_value_release(out);
                return NULL;
            }
        }
        return out;
    }
    default:
        return ferry__fail_null(FERRY_EINVAL, "%s: a %s has no mean", p->s,
                                ferry_kind_name(ferry_value_kind(v)));
    }
}

static ferry_status collect_mean(ferry_value *const *results, size_t n, const char *const *names,
                                 ferry_value **out)
{
    ferry_value *sum = NULL;
    ferry_status rc = collect_sum(results, n, "MEAN", names, &sum);
    if (rc != FERRY_OK)
        return rc;
    fold_path p;
    path_init(&p);
    ferry_value *mean = divide(sum, (double)n, &p);
    ferry_value_release(sum);
    if (!mean)
        return ferry__fail(ferry_last_status(), "MEAN collect: %s", ferry_last_error());
    *out = mean;
    return FERRY_OK;
}

/* ---- FLATTEN ---- */

static bool all_of_kind(ferry_value *const *results, size_t n, ferry_kind kind)
{
    for (size_t i = 0; i < n; i++)
        if (ferry_value_kind(results[i]) != kind)
            return false;
    return true;
}

static ferry_status concat_lists(ferry_value *const *results, size_t n, ferry_value **out)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += ferry_list_len(results[i]);
    ferry_value *l = ferry__list_new(total);
    if (!l)
        return ferry_last_status();
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < ferry_list_len(results[i]); k++)
            ferry__list_set(l, at++, ferry_value_retain(ferry_list_get(results[i], k)));
    *out = l;
    return FERRY_OK;
}

/* A 1-D empty tensor cats with anything (torch's legacy rule), so it is not compared. */
static bool cat_ignores(const ferry_tensor *t)
{
    return ferry_tensor_ndim(t) == 1 && ferry_tensor_size(t, 0) == 0;
}

/* Names the first member whose tensor does not cat along dim 0 with the others, before ferry_cat
   would only give its position. */
static ferry_status check_cat(ferry_tensor *const *ts, size_t n, const char *const *names)
{
    size_t ref = 0;
    while (ref < n && cat_ignores(ts[ref]))
        ref++;
    for (size_t i = ref + 1; i < n; i++) {
        if (cat_ignores(ts[i]))
            continue;
        bool same = ferry_tensor_ndim(ts[i]) == ferry_tensor_ndim(ts[ref]);
        for (int d = 1; same && d < ferry_tensor_ndim(ts[i]); d++)
            same = ferry_tensor_size(ts[i], d) == ferry_tensor_size(ts[ref], d);
        if (!same)
            return ferry__fail(FERRY_EINVAL, "FLATTEN collect: member %zu (worker '%s') returned "
                                             "a tensor of %d dims whose sizes past dim 0 differ "
                                             "from member %zu's (worker '%s'): they cannot be "
                                             "concatenated",
                               i, names[i], ferry_tensor_ndim(ts[i]), ref, names[ref]);
    }
    return FERRY_OK;
}

static ferry_status cat_tensors(ferry_value *const *results, size_t n, const char *const *names,
                                ferry_value **out)
{
    ferry_tensor **ts = ferry__calloc(n, sizeof *ts);
    if (!ts)
        return ferry__fail(FERRY_ENOMEM, "FLATTEN collect: no memory for %zu tensors", n);
    for (size_t i = 0; i < n; i++)
        ts[i] = ferry_value_as_tensor(results[i]);
    ferry_status rc = check_cat(ts, n, names);
    ferry_tensor *t = rc == FERRY_OK ? ferry_cat(ts, n, 0) : NULL;
    ferry__free(ts);
    if (rc != FERRY_OK)
        return rc;
    if (!t)
        return ferry__fail(ferry_last_status(), "FLATTEN collect: %s", ferry_last_error());
    *out = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return *out ? FERRY_OK : ferry_last_status();
}

static bool all_catable(ferry_value *const *results, size_t n)
{
    if (!all_of_kind(results, n, FERRY_VALUE_TENSOR))
        return false;
    for (size_t i = 0; i < n; i++)
        if (ferry_tensor_ndim(ferry_value_as_tensor(results[i])) == 0)
            return false;
    return true;
}

static ferry_status collect_flatten(ferry_value *const *results, size_t n,
                                    const char *const *names, ferry_value **out)
{
    if (all_of_kind(results, n, FERRY_VALUE_LIST))
        return concat_lists(results, n, out);
    if (all_catable(results, n)) {
        if (n == 1) {
            *out = ferry_value_retain(results[0]);
            return FERRY_OK;
        }
        return cat_tensors(results, n, names, out);
    }
    *out = ferry_list_from(results, n);
    return *out ? FERRY_OK : ferry_last_status();
}

/* ---- dispatch ---- */

/* The dispatch function's share for one member, checked: a list and a dict or NULL. The
   function sees empty arguments, never NULL, as a registered function does. */
static ferry_status share_with(ferry_dispatch_fn fn, void *user, const ferry_value *args,
                               const ferry_value *kwargs, size_t n, size_t index,
                               const char *name, ferry_value **member_args,
                               ferry_value **member_kwargs)
{
    if (!fn)
        return ferry__fail(FERRY_EINVAL, "FUNCTION dispatch: the group has no dispatch function "
                                         "(ferry_group_set_functions)");
    ferry_value *empty_args = args ? NULL : ferry__list_new(0);
    ferry_value *empty_kwargs = kwargs ? NULL : ferry_dict_new();
    ferry_value *a = NULL, *k = NULL;
    ferry_status rc = FERRY_ENOMEM;
    if ((args || empty_args) && (kwargs || empty_kwargs)) {
        ferry_clear_error();
        rc = fn(n, index, args ? args : empty_args, kwargs ? kwargs : empty_kwargs, &a, &k, user);
        if (rc != FERRY_OK && ferry_last_status() != rc)
            ferry__fail(rc, "%s", ferry_strerror(rc));
        if (rc != FERRY_OK)
            ferry__fail(rc, "the group's dispatch function failed for member %zu (worker '%s'): "
                            "%s",
                        index, name, ferry_last_error());
        else if (ferry_value_kind(a) != FERRY_VALUE_LIST)
            rc = ferry__fail(FERRY_EINVAL, "the group's dispatch function gave member %zu "
                                           "(worker '%s') %s for its args, not a list",
                             index, name, a ? ferry_kind_name(ferry_value_kind(a)) : "nothing");
        else if (k && ferry_value_kind(k) != FERRY_VALUE_DICT)
            rc = ferry__fail(FERRY_EINVAL, "the group's dispatch function gave member %zu "
                                           "(worker '%s') a %s for its kwargs, not a dict",
                             index, name, ferry_kind_name(ferry_value_kind(k)));
    } else {
        ferry__fail(rc, "FUNCTION dispatch: no memory for empty arguments");
    }
    ferry_value_release(empty_args);
    ferry_value_release(empty_kwargs);
    if (rc != FERRY_OK) {
        ferry_value_release(a);
        ferry_value_release(k);
        return rc;
    }
    *member_args = a;
    *member_kwargs = k;
    return FERRY_OK;
}

ferry_status ferry__group_share(ferry_dispatch how, ferry_dispatch_fn fn, void *user,
                                const ferry_value *args, const ferry_value *kwargs, size_t n,
                                size_t index, const char *name, ferry_value **member_args,
                                ferry_value **member_kwargs)
{
    *member_args = *member_kwargs = NULL;
    switch (how) {
    case FERRY_DISPATCH_ALL:
        *member_args = ferry_value_retain(ferry__value_lent(args));
        *member_kwargs = ferry_value_retain(ferry__value_lent(kwargs));
        return FERRY_OK;
    case FERRY_DISPATCH_SLICE:
        return ferry__group_slice(args, kwargs, n, index, member_args, member_kwargs);
    case FERRY_DISPATCH_FUNCTION:
        return share_with(fn, user, args, kwargs, n, index, name, member_args, member_kwargs);
    }
    return ferry__fail(FERRY_EINVAL, "unknown dispatch policy %d", (int)how);
}

/* ---- FUNCTION and the entry point ---- */

static ferry_status collect_with(ferry_collect_fn fn, void *user, ferry_value *const *results,
                                 size_t n, ferry_value **out)
{
    if (!fn)
        return ferry__fail(FERRY_EINVAL, "FUNCTION collect: the group has no collect function "
                                         "(ferry_group_set_functions)");
    ferry_value *v = NULL;
    ferry_clear_error();
    ferry_status rc = fn(results, n, &v, user);
    if (rc != FERRY_OK) {
        ferry_value_release(v);
        if (ferry_last_status() != rc)
            ferry__fail(rc, "%s", ferry_strerror(rc));
        return ferry__fail(rc, "the group's collect function failed: %s", ferry_last_error());
    }
    *out = v ? v : ferry_none();
    return *out ? FERRY_OK : ferry_last_status();
}

ferry_status ferry__group_collect(ferry_collect how, ferry_value *const *results, size_t n,
                                  const char *const *names, ferry_collect_fn fn, void *user,
                                  ferry_value **out)
{
    *out = NULL;
    if (n == 0)
        return ferry__fail(FERRY_EINVAL, "a group call has no results to collect");
    switch (how) {
    case FERRY_COLLECT_NONE:
        *out = ferry_none();
        return *out ? FERRY_OK : ferry_last_status();
    case FERRY_COLLECT_FIRST:
        *out = ferry_value_retain(results[0]);
        return FERRY_OK;
    case FERRY_COLLECT_FLATTEN:
        return collect_flatten(results, n, names, out);
    case FERRY_COLLECT_SUM:
        return collect_sum(results, n, "SUM", names, out);
    case FERRY_COLLECT_MEAN:
        return collect_mean(results, n, names, out);
    case FERRY_COLLECT_FUNCTION:
        return collect_with(fn, user, results, n, out);
    }
    return ferry__fail(FERRY_EINVAL, "unknown collect policy %d", (int)how);
}

const char *ferry__group_dispatch_name(ferry_dispatch how)
{
    switch (how) {
    case FERRY_DISPATCH_ALL:
        return "ALL";
    case FERRY_DISPATCH_SLICE:
        return "SLICE";
    case FERRY_DISPATCH_FUNCTION:
        return "FUNCTION";
    }
    return "unknown";
}

const char *ferry__group_collect_name(ferry_collect how)
{
    switch (how) {
    case FERRY_COLLECT_NONE:
        return "NONE";
    case FERRY_COLLECT_FIRST:
        return "FIRST";
    case FERRY_COLLECT_FLATTEN:
        return "FLATTEN";
    case FERRY_COLLECT_SUM:
        return "SUM";
    case FERRY_COLLECT_MEAN:
        return "MEAN";
    case FERRY_COLLECT_FUNCTION:
        return "FUNCTION";
    }
    return "unknown";
}
