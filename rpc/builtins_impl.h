/* Shared by the builtins' files (builtins*.c): the table entry each file lists its builtins in,
   and the argument helpers (builtins_args.c) that bind a call's args and kwargs to parameters
   the way Python does and word their errors as Python and torch do. */
#ifndef FERRY_RPC_BUILTINS_IMPL_H
#define FERRY_RPC_BUILTINS_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/rpc.h"
#include "ferry/tensor.h"

/* One builtin: its public description, its function and the `user` it is registered with.
   is_inline: it never blocks and costs little whatever the caller sends (registered
   nonblocking); every other builtin runs on the pool. */
typedef struct {
    ferry_builtin_info info;
    ferry_fn fn;
    const void *user;
    bool is_inline;
} ferry__builtin;

/* Each file's table and its length (builtins.c registers them all, in this order). */
extern const ferry__builtin ferry__builtins_math[];
extern const size_t ferry__builtins_math_len;
extern const ferry__builtin ferry__builtins_tensor[];
extern const size_t ferry__builtins_tensor_len;
extern const ferry__builtin ferry__builtins_make[];
extern const size_t ferry__builtins_make_len;
extern const ferry__builtin ferry__builtins_nn[];
extern const size_t ferry__builtins_nn_len;
extern const ferry__builtin ferry__builtins_python[];
extern const size_t ferry__builtins_python_len;

#define FERRY__BI_MAX_PARAMS 8

/* A Python signature: `names` lists the parameters that may come by position first (npos of
   them, the first nreq required), then the keyword-only ones; NULL-terminated. */
typedef struct {
    const char *fn;
    const char *const *names;
    int npos;
    int nreq;
} ferry__bi_sig;

/* Binds args and kwargs to s's parameters: out[i] is the value of names[i] (borrowed) or NULL
   when it was not passed. FERRY_EINVAL in Python's words: "f() takes 2 positional arguments but
   3 were given", "f() missing 1 required positional argument: 'other'", "f() got an unexpected
   keyword argument 'x'", "f() got multiple values for argument 'dim'". */
ferry_status ferry__bi_bind(const ferry__bi_sig *s, const ferry_value *args,
                            const ferry_value *kwargs, const ferry_value **out);

/* Python's name of v's type, for messages: int, float, bool, str, bytes, list, dict, NoneType,
   Tensor, RRef, object. */
const char *ferry__bi_type(const ferry_value *v);
bool ferry__bi_is_number(const ferry_value *v);

/* Readers of one bound argument `v` of parameter `param`. Each fails with FERRY_EINVAL
   "fn(): argument 'param' must be T, not U". An absent (NULL) v gives the default where there is
   one. */
ferry_status ferry__bi_tensor(const char *fn, const char *param, const ferry_value *v,
                              ferry_tensor **out);
ferry_status ferry__bi_int(const char *fn, const char *param, const ferry_value *v, int64_t dflt,
                           int64_t *out);
ferry_status ferry__bi_bool(const char *fn, const char *param, const ferry_value *v, bool dflt,
                            bool *out);
ferry_status ferry__bi_number(const char *fn, const char *param, const ferry_value *v,
                              double *out);
/* A dtype given by torch's name ("float32", "torch.float64", "float", "long", ...); None or
   absent gives `dflt`. */
ferry_status ferry__bi_dtype(const char *fn, const ferry_value *v, ferry_dtype dflt,
                             ferry_dtype *out);
/* An int or a list of ints (dims or sizes), at most FERRY_MAX_DIMS of them. */
ferry_status ferry__bi_int_list(const char *fn, const char *param, const ferry_value *v,
                                int64_t *out, int *n);
/* The sizes of a creation call: torch.ones(2, 3), torch.ones([2, 3]) or torch.ones(size=[2, 3]).
   `args` are the positional ones; `size` the keyword's value or NULL. */
ferry_status ferry__bi_sizes(const char *fn, const ferry_value *args, const ferry_value *size,
                             int64_t *out, int *n);
/* A list of tensors: *out is a new array (ferry__free it; NULL for an empty list) of borrowed
   tensors. */
ferry_status ferry__bi_tensor_list(const char *fn, const char *param, const ferry_value *v,
                                   ferry_tensor ***out, size_t *n);

/* FERRY_EINVAL naming the agent's builtin_max_bytes when a result of this shape and dtype
   would pass it (no agent: no cap). */
ferry_status ferry__bi_check_cap(const char *fn, int n, const int64_t *sizes, ferry_dtype dtype);
/* The broadcast shape of a and b (their last `skip` dims left out) into out; the rank, or -1
   when they do not broadcast (the op then says why). */
int ferry__bi_broadcast(const ferry_tensor *a, const ferry_tensor *b, int skip, int64_t *out);

/* *result = a value holding t, which it releases; t NULL passes the op's error up. */
ferry_status ferry__bi_tensor_result(ferry_tensor *t, ferry_value **result);

#endif
