/* Remote references: torch.distributed.rpc's RRef for C. An RRef names a value that lives on one
   worker, its owner. The owner holds an OwnerRRef with the value itself (not a copy); every other
   worker that was handed the RRef holds a UserRRef. The owner keeps the value alive while any
   UserRRef (or a fork on its way to a new user) still refers to it, and frees it after the last
   one is released (torch's Remote Reference Protocol; docs/rref.md tells how ferry implements it).

   RRefs are refcounted handles, safe to use, retain and release from any thread. They travel as
   values (ferry_rref_value) in the arguments and results of any call, inside lists and dicts, and
   an RRef may hold another RRef. Passing one to another worker forks it: the receiver gets its
   own UserRRef, and the callee's function only runs once every RRef in its arguments is
   confirmed by its owner (as torch). */
#ifndef FERRY_RREF_H
#define FERRY_RREF_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/future.h"
#include "ferry/rpc.h"
#include "ferry/value.h"

#ifdef __cplusplus
extern "C" {
#endif

/* torch's rpc.remote(): asks worker `to` to run the registered function `fn` (sync or async)
   and keep its result there; returns at once a new reference to a UserRRef (an OwnerRRef when
   `to` is this worker). args (a list) and kwargs (a dict) are borrowed and may be NULL.
   `timeout` bounds the creation (the function's run included); FERRY_TIMEOUT_DEFAULT is the
   agent's default, 0 none. A creation that fails (the function failed, is not registered, or
   the timeout passed: torch's "RRef creation via rpc.remote() timed out ...") is reported
   later, by ferry_rref_to_here and by passing the RRef on (a timeout or an unreachable owner
   also by the creation future, ferry_rref_get_future). Returns NULL only for errors found
   before sending: FERRY_EINVAL (NULL or bad arguments), FERRY_EUNKNOWN_WORKER, FERRY_ESHUTDOWN
   (RPC not running), FERRY_ETRANSPORT (the request could not be sent), FERRY_ENOMEM. */
FERRY_API ferry_rref *ferry_remote(const char *to, const char *fn, const ferry_value *args,
                                   const ferry_value *kwargs, double timeout);

/* torch's RRef._get_future(): a new future (new reference, the caller's own) of the RRef's
   creation. For an RRef made by ferry_remote (to another worker or to this one) it completes
   with none once the owner answers the remote() request, which it does once the value exists,
   and also when the function failed (as torch: the error is the value's, given by
   ferry_rref_to_here); it fails only when the request did: FERRY_ETIMEDOUT past remote()'s
   timeout, in torch's RPC-timeout wording ("RPC ran for more than set timeout (100 ms) ..."),
   FERRY_ETRANSPORT, FERRY_ESHUTDOWN. Torch keeps no such future for other RRefs; ferry gives
   theirs the same meaning: an OwnerRRef made by ferry_rref_new or by another worker's remote()
   is complete at once, a UserRRef received from another worker completes once its owner
   acknowledged it (ferry_rref_confirmed_by_owner). A creation already known gives a future
   completed already. NULL with FERRY_EINVAL (NULL rref) or FERRY_ENOMEM. */
FERRY_API ferry_future *ferry_rref_get_future(ferry_rref *rref);

/* torch's RRef(value): a local OwnerRRef holding `value` itself (borrowed, retained; not
   copied). Needs a running agent. New reference, or NULL with FERRY_EINVAL (NULL value),
   FERRY_ESHUTDOWN (RPC not initialized), FERRY_ENOMEM. */
FERRY_API ferry_rref *ferry_rref_new(const ferry_value *value);

/* Fetches the value. On a user it asks the owner (which waits for the value if it is still being
   computed) and returns a copy; `timeout` bounds the fetch (torch's RPC-timeout wording). On the
   owner it waits for the value (no timeout applies, as torch) and returns the value itself.
   New reference, or NULL with: FERRY_ETIMEDOUT (the fetch ran out, or the creation timed out:
   "RRef creation via rpc.remote() timed out ..."), FERRY_EREMOTE (the function that creates the
   value failed; the message names worker, function and cause), FERRY_EUNKNOWN_FUNCTION,
   FERRY_ETRANSPORT (owner unreachable), FERRY_ESHUTDOWN (the UserRRef "has been deleted" by
   shutdown, or RPC not running), FERRY_EINVAL (NULL). Thread-safe. */
FERRY_API ferry_value *ferry_rref_to_here(ferry_rref *rref, double timeout);

/* The owner's value itself (new reference), waiting for it while it is being created. Owner
   only: FERRY_ENOTOWNER on a user, with torch's "can't call localValue() on user ..." message.
   Also the creation's error codes as ferry_rref_to_here, and FERRY_EINVAL for NULL. */
FERRY_API ferry_value *ferry_rref_local_value(ferry_rref *rref);

/* True on the owner's RRef. False for NULL. */
FERRY_API bool ferry_rref_is_owner(const ferry_rref *rref);
/* True once the owner knows of this reference: always for an OwnerRRef; for a UserRRef once the
   owner acknowledged it (remote()'s reply, or the fork request's acknowledgement). */
FERRY_API bool ferry_rref_confirmed_by_owner(const ferry_rref *rref);
/* The owner's worker info. The name is borrowed from the RRef and lives as long as it.
   FERRY_OK or FERRY_EINVAL (NULL argument). */
FERRY_API ferry_status ferry_rref_owner(const ferry_rref *rref, ferry_worker_info *out);
/* The owner's name (borrowed, lives as long as the RRef), NULL + FERRY_EINVAL for NULL. */
FERRY_API const char *ferry_rref_owner_name(const ferry_rref *rref);

/* Proxies: torch's rref.rpc_sync().fn(*args), rref.rpc_async().fn(*args) and
   rref.remote().fn(*args). They run the registered function `fn` on the owner with the owner's
   value prepended to args: fn([value, *args], kwargs). args/kwargs are borrowed and may be NULL.
   Results and errors as ferry_rpc_sync / ferry_rpc_async / ferry_remote; a function that does
   not accept the value's kind fails with its own error (FERRY_EREMOTE naming it, e.g.
   "wrong value kind"). The owner waits for the value first; `timeout` covers that wait too. */
FERRY_API ferry_value *ferry_rref_rpc_sync(ferry_rref *rref, const char *fn,
                                           const ferry_value *args, const ferry_value *kwargs,
                                           double timeout);
FERRY_API ferry_future *ferry_rref_rpc_async(ferry_rref *rref, const char *fn,
                                             const ferry_value *args, const ferry_value *kwargs,
                                             double timeout);
FERRY_API ferry_rref *ferry_rref_remote(ferry_rref *rref, const char *fn, const ferry_value *args,
                                        const ferry_value *kwargs, double timeout);

/* Reference counting. Releasing the last reference to a UserRRef tells its owner (in the
   background: release never blocks). Both accept NULL. */
FERRY_API ferry_rref *ferry_rref_retain(ferry_rref *rref);
FERRY_API void ferry_rref_release(ferry_rref *rref);

/* What this worker's RRef context holds, for tests and leak checks (torch's
   _rref_context_get_debug_info, plus message counts). */
typedef struct {
    int64_t owners;           /* OwnerRRefs other workers may refer to (torch num_owner_rrefs) */
    int64_t forks;            /* UserRRefs of those, as known to this owner (torch num_forks) */
    int64_t users;            /* UserRRef objects alive on this worker */
    int64_t pending_users;    /* UserRRefs not yet confirmed by their owner (num_pending_users) */
    int64_t pending_children; /* RRefs this worker forked whose receiver is not yet accepted */
    int64_t messages;         /* RRef control messages sent and not yet acknowledged, and
                                 deletions not yet known to have reached their owner */
} ferry_rref_debug_counts;

/* Fills *out. FERRY_OK, FERRY_EINVAL (NULL), FERRY_ESHUTDOWN (RPC not running). */
FERRY_API ferry_status ferry_debug_rref_counts(ferry_rref_debug_counts *out);

/* Waits until this worker has no pending user, no pending child and no RRef control message in
   flight (so every deletion it started has reached its owner). For tests. FERRY_OK,
   FERRY_EAGAIN (the wait ran out), FERRY_ESHUTDOWN. timeout 0 = no limit. */
FERRY_API ferry_status ferry_debug_rref_wait_idle(double timeout);

#ifdef __cplusplus
}
#endif
#endif
