/* The function registry: names a peer may call. Process-wide so functions can be registered
   before ferry_init_rpc; guarded by its own rwlock. Only registered names run: there is no way to
   ship code. */
#ifndef FERRY_RPC_REGISTRY_H
#define FERRY_RPC_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/rpc.h"

/* NONBLOCKING functions and ASYNC_NONBLOCKING ones (async functions that return their future
   without blocking) may run where their request is read, in the order requests arrive. */
typedef enum {
    FERRY__FN_SYNC,
    FERRY__FN_ASYNC,
    FERRY__FN_NONBLOCKING,
    FERRY__FN_ASYNC_NONBLOCKING
} ferry__fn_kind;

static inline bool ferry__fn_is_async(ferry__fn_kind k)
{
    return k == FERRY__FN_ASYNC || k == FERRY__FN_ASYNC_NONBLOCKING;
}

static inline bool ferry__fn_runs_inline(ferry__fn_kind k)
{
    return k == FERRY__FN_NONBLOCKING || k == FERRY__FN_ASYNC_NONBLOCKING;
}

typedef struct {
    ferry__fn_kind kind;
    ferry_fn fn;
    ferry_async_fn async_fn;
    void *user;
} ferry__fn_entry;

/* Registers an async function that never blocks before returning its future, for modules
   that must see their requests in arrival order (method calls on one object). As
   ferry_register_async_function otherwise, but the same function again is a no-op, as for
   ferry__register_module_function. */
ferry_status ferry__register_nonblocking_async(const char *name, ferry_async_fn fn, void *user);
/* ferry_register_function for ferry's own modules, which register at every start: the same
   function under its name again is a no-op (another one is refused as for users). */
ferry_status ferry__register_module_function(const char *name, ferry_fn fn, void *user);
/* Copies the entry for `name` into *out; false if there is none. */
bool ferry__registry_lookup(const char *name, ferry__fn_entry *out);
/* True when `name` is registered as ferry's own builtin (not replaced or unregistered since). */
bool ferry__registry_is_builtin(const char *name);
/* How many names are registered as builtins now. */
size_t ferry__registry_builtin_count(void);
/* Registers the builtins (torch.add, min, ...) once per process; every registration does it
   first, so their names are taken before a user's. */
void ferry__builtins_register(void);
/* Brackets the builtins' own registrations (builtins.c), which mark their names as builtins. */
void ferry__registry_builtins_begin(bool is_begin);

#endif
