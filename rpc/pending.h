/* The pending-call table of an agent; every function but _new and _free is called with
   agent->lock held. */
#ifndef FERRY_RPC_PENDING_H
#define FERRY_RPC_PENDING_H

#include "rpc/agent_impl.h"

/* A record for a call (its fields are the caller's to set), from a cache: a call makes and
   drops one. NULL out of memory (no error recorded). Any thread, no lock needed. */
ferry__pending *ferry__pending_new(void);
/* Gives a record taken off the table back (NULL: nothing); its future reference is the
   caller's to have released. Any thread, no lock needed. */
void ferry__pending_free(ferry__pending *p);

/* Adds p (and its deadline, if any). FERRY_ENOMEM. */
ferry_status ferry__pending_insert(ferry__agent *a, ferry__pending *p);
/* Removes and returns the call with this id, or NULL (already completed or timed out). */
ferry__pending *ferry__pending_take(ferry__agent *a, uint64_t id);
/* The same for a response from rank `src`: a call to another worker is left in place and
   *is_foreign set (one member answering another's call). */
ferry__pending *ferry__pending_take_from(ferry__agent *a, uint64_t id, int src, bool *is_foreign);
/* The call with this id, left in place (NULL: none); borrowed while agent->lock is held. */
const ferry__pending *ferry__pending_find(const ferry__agent *a, uint64_t id);
/* Removes and returns one call whose deadline is <= now, or NULL. */
ferry__pending *ferry__pending_take_expired(ferry__agent *a, long long now_ns);
/* Removes and returns any call to `dst` (-1: to anyone), or NULL. */
ferry__pending *ferry__pending_take_any(ferry__agent *a, int dst);
void ferry__pending_free_table(ferry__agent *a);

#endif
