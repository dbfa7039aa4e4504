/* Calls to an RRef's owner that name the RRef instead of forking it: the one rref/ interface
   for the modules above it (rref/object). Sending an RRef as an argument forks it, and a fork
   from a user to its owner costs the owner an acknowledgement message back (the child accept).
   A call that holds its RRef until the reply needs none of that: while the caller's confirmed
   UserRRef is alive the owner keeps its OwnerRRef in its table, so the call may name it by id
   and the owner finds it there. */
#ifndef FERRY_RREF_TARGET_H
#define FERRY_RREF_TARGET_H

#include <stddef.h>

#include "ferry/future.h"
#include "ferry/rref.h"
#include "ferry/value.h"

/* Calls the registered function fn([target, name, args], kwargs) on r's owner, where target
   names r (its id, an int, when r is a user its owner confirmed and shutdown has not deleted,
   else the RRef itself, forked as any RRef argument, which also reports a failed or deleted
   user), and holds r until the call ends. `name` is what fn is to run there (a function, a
   method); args (a list, NULL for none), kwargs and timeout as ferry_rpc_async. The call's
   future, or NULL with ferry_rpc_async's errors (FERRY_EINVAL for a NULL r or name, args that
   are not a list). */
ferry_future *ferry__rref_call_owner(ferry_rref *r, const char *fn, const char *name,
                                     const ferry_value *args, const ferry_value *kwargs,
                                     double timeout);
/* The same call made by ferry_remote: its result stays on the owner; r is held until the
   result's creation ends. */
ferry_rref *ferry__rref_remote_owner(ferry_rref *r, const char *fn, const char *name,
                                     const ferry_value *args, const ferry_value *kwargs,
                                     double timeout);

/* On the owner, in the function the call runs: the future of the value a target names (new
   reference; it completes when the value's creation ends), or NULL with FERRY_EINVAL (not a
   target, or an id this worker owns nothing under), FERRY_ENOTOWNER (an RRef this worker does
   not own) or FERRY_ESHUTDOWN. */
ferry_future *ferry__rref_target_value(const ferry_value *target);

#endif
