/* The policies of group calls (ferry/object.h, "groups"), as pure functions of values so they
   can be tested without RPC: how a call's arguments are shared among the members (slicing) and
   how the members' results become one (collecting). group.c sends and waits; group_policy.c
   decides what is sent and what comes back. */
#ifndef FERRY_RREF_OBJECT_GROUP_IMPL_H
#define FERRY_RREF_OBJECT_GROUP_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "ferry/object.h"

/* torch.chunk(x, n) along a length `len`: chunks of ceil(len / n) items; member `index` gets
   [*start, *start + *count), empty (count 0, start clamped to len) when past the end. n > 0. */
void ferry__group_chunk(int64_t len, size_t n, size_t index, int64_t *start, int64_t *count);

/* Member `index` of n's share of a call under FERRY_DISPATCH_SLICE: every item of `args` (a
   list or NULL) and every value of `kwargs` (a dict or NULL) sliced along its first dimension
   (tensors of one dim or more with ferry_narrow, lists by items), every other value whole.
   Sets *member_args to a new list and *member_kwargs to a new dict (NULL when kwargs is NULL).
   FERRY_OK, FERRY_EINVAL (args not a list, kwargs not a dict), FERRY_ENOMEM; on failure both
   are left NULL. */
ferry_status ferry__group_slice(const ferry_value *args, const ferry_value *kwargs, size_t n,
                                size_t index, ferry_value **member_args,
                                ferry_value **member_kwargs);

/* Member `index` (worker `name`, for messages) of n's share of a call by `how`: ALL retains
   args and kwargs as they are (either may be NULL), SLICE is ferry__group_slice, FUNCTION asks
   `fn` (with `user`; empty arguments in place of NULL ones) and checks it gave a list and a dict
   or NULL. FERRY_OK, FERRY_EINVAL (no dispatch function, a share of the wrong kinds, as
   ferry__group_slice), FERRY_ENOMEM, or the dispatch function's own error (its code, with a
   message naming the member). On failure both are left NULL. */
ferry_status ferry__group_share(ferry_dispatch how, ferry_dispatch_fn fn, void *user,
                                const ferry_value *args, const ferry_value *kwargs, size_t n,
                                size_t index, const char *name, ferry_value **member_args,
                                ferry_value **member_kwargs);

/* Folds the n results (borrowed, in member order; n > 0) of a group call by `how` into *out (a
   new reference). `names` (n entries, borrowed) name the members' workers in messages; `fn` and
   `user` are the group's collect function for FERRY_COLLECT_FUNCTION. FERRY_OK, FERRY_EINVAL
   (results SUM or MEAN cannot add, naming the member, its worker and where in the result; a
   FLATTEN of tensors whose shapes do not cat; no collect function), FERRY_ENOMEM, or the collect
   function's own error. On failure *out is NULL. */
ferry_status ferry__group_collect(ferry_collect how, ferry_value *const *results, size_t n,
                                  const char *const *names, ferry_collect_fn fn, void *user,
                                  ferry_value **out);

/* The policy's name for messages ("ALL", "SUM", ...; "unknown" out of range). */
const char *ferry__group_dispatch_name(ferry_dispatch how);
const char *ferry__group_collect_name(ferry_collect how);

#endif
