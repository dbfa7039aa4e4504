/* The function registry: names a peer may call. Process-wide so functions can be registered
   before ferry_init_rpc; guarded by its own rwlock. Only registered names run: there is no way to
   ship code. */
#ifndef FERRY_RPC_REGISTRY_H
#define FERRY_RPC_REGISTRY_H

#include <stdbool.h>

#include "ferry/rpc.h"

typedef enum { FERRY__FN_SYNC, FERRY__FN_ASYNC, FERRY__FN_NONBLOCKING } ferry__fn_kind;

typedef struct {
    ferry__fn_kind kind;
    ferry_fn fn;
    ferry_async_fn async_fn;
    void *user;
} ferry__fn_entry;

/* Copies the entry for `name` into *out; false if there is none. */
bool ferry__registry_lookup(const char *name, ferry__fn_entry *out);
/* Registers the builtins (torch.add, min, ...) once per process. */
void ferry__builtins_register(void);

#endif
