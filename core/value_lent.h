/* Values lent for reading. The public calls that only read their arguments (ferry_rpc_sync,
   ferry_remote, ...) take `const ferry_value *`, so a registered function can pass on the const
   arguments it receives. Inside, such a value travels in structs of plain pointers (a message,
   an argument list) and may be retained while a call holds it: its reference count is the one
   mutable part of a value, and the library never changes a lent value otherwise. */
#ifndef FERRY_CORE_VALUE_LENT_H
#define FERRY_CORE_VALUE_LENT_H

#include "ferry/value.h"

/* The library's one cast from a lent value to the pointer its internals carry. */
static inline ferry_value *ferry__value_lent(const ferry_value *v)
{
    return (ferry_value *)v;
}

#endif
