/* Futures of many futures, as torch.futures has them: collect_all (a future of the list of the
   inputs, which never fails itself), wait_all (blocks for the list of values and fails fast),
   and the non-blocking "all of" future wait_all waits on, which the RRef code also uses to wait
   for the confirmations a call's arguments need. All three are built on the inline completion
   callbacks (core/future_impl.h), so no thread waits on an input. */
#include <stdatomic.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "core/value_impl.h"
#include "core/value_shared.h"

/* The arguments every one of these takes; `what` names the caller in the message. */
static ferry_status check_inputs(const char *what, ferry_future **futures, size_t n,
                                 size_t state_size)
{
    if (n > 0 && !futures)
        return ferry__fail(FERRY_EINVAL, "%s: NULL array of %zu futures", what, n);
    for (size_t i = 0; i < n; i++) {
        if (!futures[i])
            return ferry__fail(FERRY_EINVAL, "%s: future %zu is NULL", what, i);
    }
    if (n > (SIZE_MAX - state_size) / sizeof(ferry_future *))
        return ferry__fail(FERRY_EINVAL, "%s: too many futures (%zu)", what, n);
    return FERRY_OK;
}

/* A thread that waits on a future of many calls drives the fabric as a wait on one call does
   (core/future.c): with the driver of the first input still pending, a reply is read by the
   waiting thread itself, which then finds the result complete, instead of the progress thread
   reading it and waking the waiter once per input (docs/performance.md, "Waiting on many
   calls"). */
static void lend_first_driver(ferry_future *result, ferry_future **futures, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!ferry_future_done(futures[i])) {
            ferry__future_lend_driver(result, futures[i]);
            return;
        }
    }
}

/* ---- collect_all ---- */

/* The list of future values is made at the call, so completing the result allocates nothing
   and cannot fail. `remaining` counts the inputs not yet completed plus one for the builder;
   whoever takes it to zero completes the result and frees the state. */
typedef struct {
    atomic_size_t remaining;
    ferry_future *result; /* owned reference */
    ferry_value *list;    /* stolen by the result */
} collect_state;

static void collect_one(ferry_future *f, void *arg)
{
    collect_state *st = arg;
    if (atomic_fetch_sub_explicit(&st->remaining, 1, memory_order_acq_rel) != 1)
        return;
    ferry__future_complete_steal(st->result, st->list);
    ferry_future_release(st->result);
    ferry__free(st);
}

ferry_future *ferry_future_collect_all(ferry_future **futures, size_t n)
{
    if (check_inputs("collect_all", futures, n, sizeof(collect_state)) != FERRY_OK)
        return NULL;
    ferry_value *list = n ? ferry__list_new(n) : ferry__value_shared_empty_list();
    ferry_future *result = list ? ferry_future_new() : NULL;
    collect_state *st = result ? ferry__malloc(sizeof *st) : NULL;
    for (size_t i = 0; st && i < n; i++) {
        ferry_value *item = ferry_value_of_future(futures[i]);
        if (!item) {
            ferry__free(st);
            st = NULL;
        }
        ferry__list_set(list, i, item);
    }
    if (!st) {
        ferry_value_release(list);
        ferry_future_release(result);
        return ferry__fail_null(FERRY_ENOMEM, "no memory for collect_all of %zu futures", n);
    }
    atomic_init(&st->remaining, n + 1);
    st->result = ferry_future_retain(result);
    st->list = list;
    for (size_t i = 0; i < n; i++) {
        if (ferry__future_on_done(futures[i], collect_one, st) != FERRY_OK) {
            /* The callbacks registered still run; the builder gives up the share of the
               others with its own, and the result, which nobody gets, completes with them. */
            atomic_fetch_sub(&st->remaining, n - i);
            collect_one(NULL, st);
            ferry_future_release(result);
            return NULL;
        }
    }
    lend_first_driver(result, futures, n);
    collect_one(NULL, st); /* the builder's share: completes now when every input is done */
    return result;
}

/* ---- all of: the values, failing fast ---- */

/* One inline callback per input. The state holds the inputs (so their values can be read at
   the end) and the result; it goes when the last callback has run, which may be after the
   result already failed fast. */
typedef struct {
    atomic_size_t refs;      /* the builder plus one per registered callback */
    atomic_size_t remaining; /* inputs not yet succeeded */
    atomic_bool settled;     /* the result has been (or is being) completed */
    ferry_future *result;
    size_t n;
    ferry_future *inputs[];
} all_state;

static void all_state_release(all_state *st)
{
    if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < st->n; i++)
        ferry_future_release(st->inputs[i]);
    ferry_future_release(st->result);
    ferry__free(st);
}

/* The list of the values of n futures that all succeeded (none for no value), or NULL with
   FERRY_ENOMEM. */
static ferry_value *values_of(ferry_future *const *futures, size_t n)
{
    if (n == 0)
        return ferry__value_shared_empty_list();
    ferry_value *list = ferry__list_new(n);
    if (!list)
        return ferry__fail_null(FERRY_ENOMEM, "no memory for the list of %zu values", n);
    for (size_t i = 0; i < n; i++)
        ferry__list_set(list, i, ferry_future_value(futures[i])); /* done: never blocks */
    return list;
}

static void all_finish(all_state *st)
{
    ferry_value *list = values_of(st->inputs, st->n);
    if (list)
        ferry__future_complete_steal(st->result, list);
    else
        ferry_future_set_error(st->result, FERRY_ENOMEM, ferry_last_error());
}

static void all_one(ferry_future *f, void *arg)
{
    all_state *st = arg;
    ferry_status rc = ferry_future_status(f);
    if (rc != FERRY_OK) {
        if (!atomic_exchange(&st->settled, true))
            ferry__future_set_error_remote(st->result, rc, ferry_future_remote_status(f),
                                           ferry_future_error(f));
    } else if (atomic_fetch_sub(&st->remaining, 1) == 1 && !atomic_exchange(&st->settled, true)) {
        all_finish(st);
    }
    all_state_release(st);
}

static ferry_future *all_of(const char *what, ferry_future **futures, size_t n)
{
    if (check_inputs(what, futures, n, sizeof(all_state)) != FERRY_OK)
        return NULL;
    ferry_future *result = ferry_future_new();
    if (!result)
        return NULL;
    all_state *st = ferry__calloc(1, sizeof *st + n * sizeof(ferry_future *));
    if (!st) {
        ferry_future_release(result);
        return ferry__fail_null(FERRY_ENOMEM, "no memory for %s of %zu futures", what, n);
    }
    atomic_init(&st->refs, 1);
    atomic_init(&st->remaining, n);
    atomic_init(&st->settled, false);
    st->result = ferry_future_retain(result);
    st->n = n;
    for (size_t i = 0; i < n; i++)
        st->inputs[i] = ferry_future_retain(futures[i]);
    if (n == 0 && !atomic_exchange(&st->settled, true))
        all_finish(st);
    for (size_t i = 0; i < n; i++) {
        atomic_fetch_add(&st->refs, 1);
        if (ferry__future_on_done(futures[i], all_one, st) != FERRY_OK) {
            /* Callbacks already registered still run; settling first keeps them quiet. */
            atomic_fetch_sub(&st->refs, 1);
            atomic_store(&st->settled, true);
            all_state_release(st);
            ferry_future_release(result);
            return NULL;
        }
    }
    all_state_release(st);
    return result;
}

ferry_future *ferry__future_all_of(ferry_future **futures, size_t n)
{
    return all_of("all_of", futures, n);
}

/* ---- wait_all ---- */

ferry_value *ferry_future_wait_all(ferry_future **futures, size_t n, double timeout)
{
    if (check_inputs("wait_all", futures, n, sizeof(all_state)) != FERRY_OK)
        return NULL;
    /* Inputs all done already (a loop of calls waited on one by one, say): no state to make. */
    size_t done = 0;
    while (done < n && ferry_future_done(futures[done]))
        done++;
    if (done == n) {
        for (size_t i = 0; i < n; i++) {
            if (ferry__future_report(futures[i]) != FERRY_OK)
                return NULL;
        }
        return values_of(futures, n);
    }
    ferry_future *all = all_of("wait_all", futures, n);
    if (!all)
        return NULL;
    lend_first_driver(all, futures + done, n - done);
    ferry_status rc = ferry_future_wait(all, timeout);
    ferry_value *v = rc == FERRY_OK ? ferry_future_value(all) : NULL;
    if (rc == FERRY_EAGAIN) {
        size_t pending = 0;
        for (size_t i = 0; i < n; i++)
            pending += !ferry_future_done(futures[i]);
        ferry__fail(FERRY_EAGAIN, "wait_all: the wait ran out after %g s with %zu of %zu "
                    "futures still pending", timeout, pending, n);
    }
    ferry_future_release(all);
    return v;
}
