/* The builtins every worker serves under torch's and Python's names (DESIGN section 3;
   docs/builtins.md lists them): this file registers the tables of builtins_math.c (arithmetic,
   unary, matrix products), builtins_tensor.c (reductions, shape), builtins_make.c (creation),
   builtins_nn.c (torch.nn.functional's linear, embedding and losses) and builtins_python.c
   (min, max, sum, abs, len), and answers ferry_builtins.

   Every builtin that makes or reads a tensor runs on the pool, never where its request is read:
   its size is the caller's choice (torch.ones of 8 GiB takes seconds), and the thread that reads
   requests also answers heartbeats, which must not wait behind it. Results a caller can size at
   will are refused past the agent's builtin_max_bytes before anything is allocated. Only min,
   max and len, which look at no tensor data, run inline. */
#include <pthread.h>
#include <string.h>

#include "core/error.h"
#include "rpc/builtins_impl.h"
#include "rpc/registry.h"

static const struct {
    const ferry__builtin *table;
    const size_t *len;
} tables[] = {
    {ferry__builtins_math, &ferry__builtins_math_len},
    {ferry__builtins_tensor, &ferry__builtins_tensor_len},
    {ferry__builtins_make, &ferry__builtins_make_len},
    {ferry__builtins_nn, &ferry__builtins_nn_len},
    {ferry__builtins_python, &ferry__builtins_python_len},
};
#define NTABLES (sizeof tables / sizeof tables[0])

static void register_all(void)
{
    ferry__registry_builtins_begin(true);
    for (size_t t = 0; t < NTABLES; t++)
        for (size_t i = 0; i < *tables[t].len; i++) {
            const ferry__builtin *b = &tables[t].table[i];
            if (b->is_inline)
                ferry_register_nonblocking_function(b->info.name, b->fn, (void *)b->user);
            else
                ferry_register_function(b->info.name, b->fn, (void *)b->user);
        }
    ferry__registry_builtins_begin(false);
}

void ferry__builtins_register(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_all);
}

ferry_status ferry_builtins(ferry_builtin_info *out, size_t cap, size_t *n)
{
    if (!out && cap > 0)
        return ferry__fail(FERRY_EINVAL, "ferry_builtins: out is NULL but cap is %zu", cap);
    ferry__builtins_register();
    size_t count = 0;
    for (size_t t = 0; t < NTABLES; t++)
        for (size_t i = 0; i < *tables[t].len; i++) {
            const ferry__builtin *b = &tables[t].table[i];
            if (!ferry__registry_is_builtin(b->info.name))
                continue;
            if (count < cap)
                out[count] = b->info;
            count++;
        }
    if (n)
        *n = count;
    return FERRY_OK;
}
